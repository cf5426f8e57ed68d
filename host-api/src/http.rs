//! Host side of the `http` interface: an HTTP/1.1 and HTTP/2 client on
//! hyper and rustls.
//!
//! Each VU owns its keep-alive connections ([`Connections`]), one per
//! origin, as a browser would. Connecting (DNS, TCP, TLS, handshake) runs in
//! its own tokio task and each connection is driven by another, so the VU's
//! fiber only waits. The host times every request itself.

use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use wasmtime::component::Resource;

use crate::bindings::runner::scenario::http::{
    Error, Host, HostResponse, Method, Request, Timings, Version,
};
use crate::recorder::HttpOutcome;
use crate::vu::nanos;
use crate::VuState;

/// Most connections a VU keeps open at once (distinct origins); the oldest
/// is closed to make room.
const MAX_CONNECTIONS_PER_VU: usize = 16;

/// Longest metric name derived from a URL.
const MAX_NAME: usize = 256;

/// HTTP client settings shared by all VUs.
#[derive(Clone)]
pub struct ClientConfig {
    /// Timeout of a request that sets none.
    pub default_timeout: Duration,
    /// Largest response body accepted, in bytes.
    pub max_body: u64,
    tls_any: Arc<rustls::ClientConfig>,
    tls_h1: Arc<rustls::ClientConfig>,
    tls_h2: Arc<rustls::ClientConfig>,
}

impl ClientConfig {
    /// Settings with the given timeout and body limit. `insecure` skips
    /// certificate verification (for self-signed test targets).
    pub fn new(default_timeout: Duration, max_body: u64, insecure: bool) -> Self {
        let tls = |alpn: &[&[u8]]| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"));
            let mut cfg = if insecure {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
                    .with_no_client_auth()
            } else {
                let roots = rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                builder.with_root_certificates(roots).with_no_client_auth()
            };
            cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Arc::new(cfg)
        };
        Self {
            default_timeout,
            max_body,
            tls_any: tls(&[b"h2", b"http/1.1"]),
            tls_h1: tls(&[b"http/1.1"]),
            tls_h2: tls(&[b"h2"]),
        }
    }
}

/// Certificate verifier for `--insecure`: accepts any certificate but still
/// checks handshake signatures.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Where a connection goes, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    https: bool,
    host: String,
    port: u16,
    version: Option<Version>,
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    fn version(&self) -> Version {
        match self {
            Sender::H1(_) => Version::Http1,
            Sender::H2(_) => Version::Http2,
        }
    }

    async fn send(
        &mut self,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error> {
        match self {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }
}

/// The keep-alive connections one VU holds. Dropping it closes them.
#[derive(Default)]
pub struct Connections {
    open: Vec<(Arc<Origin>, Sender)>,
    targets: Vec<Arc<Target>>,
}

impl Connections {
    fn take(&mut self, origin: &Origin) -> Option<Sender> {
        let i = self.open.iter().position(|(o, _)| **o == *origin)?;
        let (_, sender) = self.open.swap_remove(i);
        (!sender.is_closed()).then_some(sender)
    }

    fn put(&mut self, origin: Arc<Origin>, sender: Sender) {
        if self.open.len() >= MAX_CONNECTIONS_PER_VU {
            self.open.remove(0);
        }
        self.open.push((origin, sender));
    }
}

/// Connect-phase timings.
#[derive(Default, Clone, Copy)]
struct ConnectTimes {
    dns: Duration,
    connect: Duration,
    tls: Duration,
}

fn method_of(m: &Method) -> Result<hyper::Method, Error> {
    Ok(match m {
        Method::Get => hyper::Method::GET,
        Method::Head => hyper::Method::HEAD,
        Method::Post => hyper::Method::POST,
        Method::Put => hyper::Method::PUT,
        Method::Delete => hyper::Method::DELETE,
        Method::Patch => hyper::Method::PATCH,
        Method::Options => hyper::Method::OPTIONS,
        Method::Other(s) => hyper::Method::from_bytes(s.as_bytes())
            .map_err(|_| Error::InvalidRequest(format!("invalid method {s:?}")))?,
    })
}

/// The short name of an error, as the summary counts it.
pub fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::InvalidRequest(_) => "invalid-request",
        Error::Dns(_) => "dns",
        Error::ConnectionRefused(_) => "connection-refused",
        Error::ConnectionReset(_) => "connection-reset",
        Error::Timeout => "timeout",
        Error::Tls(_) => "tls",
        Error::Protocol(_) => "protocol",
        Error::BodyTooLarge(_) => "body-too-large",
        Error::Io(_) => "io",
    }
}

fn io_error(e: &std::io::Error, what: &str) -> Error {
    use std::io::ErrorKind as K;
    let text = format!("{what}: {e}");
    match e.kind() {
        K::ConnectionRefused => Error::ConnectionRefused(text),
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            Error::ConnectionReset(text)
        }
        K::TimedOut => Error::Timeout,
        _ => {
            // rustls reports handshake failures as io errors wrapping its own.
            if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
                Error::Tls(text)
            } else {
                Error::Io(text)
            }
        }
    }
}

fn hyper_error(e: &hyper::Error) -> Error {
    // Look for an io::Error underneath first: it names the cause best.
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io_error(io, "connection");
        }
        source = s.source();
    }
    if e.is_timeout() {
        Error::Timeout
    } else if e.is_closed() || e.is_incomplete_message() || e.is_canceled() {
        Error::ConnectionReset(e.to_string())
    } else if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        Error::Protocol(e.to_string())
    } else {
        Error::Io(e.to_string())
    }
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, Error> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| Error::Dns(format!("{host}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| Error::Dns(format!("{host}: no addresses")))
}

async fn handshake<S>(io: S, h2: bool) -> Result<Sender, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(io)
            .await
            .map_err(|e| hyper_error(&e))?;
        tokio::spawn(conn);
        Ok(Sender::H2(sender))
    } else {
        let (sender, conn) = http1::handshake(io).await.map_err(|e| hyper_error(&e))?;
        tokio::spawn(conn);
        Ok(Sender::H1(sender))
    }
}

async fn connect(origin: Arc<Origin>, cfg: ClientConfig) -> Result<(Sender, ConnectTimes), Error> {
    let mut times = ConnectTimes::default();
    let t = Instant::now();
    let addr = resolve(&origin.host, origin.port).await?;
    times.dns = t.elapsed();

    let t = Instant::now();
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| io_error(&e, &format!("connect to {addr}")))?;
    // Requests are small and latency-bound; never wait for Nagle.
    let _ = tcp.set_nodelay(true);
    times.connect = t.elapsed();

    if !origin.https {
        let sender = handshake(tcp, origin.version == Some(Version::Http2)).await?;
        return Ok((sender, times));
    }

    let t = Instant::now();
    let tls_cfg = match origin.version {
        None => cfg.tls_any,
        Some(Version::Http1) => cfg.tls_h1,
        Some(Version::Http2) => cfg.tls_h2,
    };
    let bare = origin
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let name = ServerName::try_from(bare)
        .map_err(|e| Error::InvalidRequest(format!("host {}: {e}", origin.host)))?;
    let tls = tokio_rustls::TlsConnector::from(tls_cfg)
        .connect(name, tcp)
        .await
        .map_err(
            |e| match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(r) => Error::Tls(format!("{}: {r}", origin.host)),
                None => io_error(&e, "TLS handshake"),
            },
        )?;
    times.tls = t.elapsed();
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let sender = handshake(tls, h2).await?;
    Ok((sender, times))
}

/// What one request produced, before conversion to the WIT response.
struct Exchange {
    status: u16,
    version: Version,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
    body_size: u64,
    times: ConnectTimes,
    wait: Duration,
    receive: Duration,
}

/// Most responses a VU may hold at once; more means the guest leaks them.
const MAX_LIVE_RESPONSES: usize = 1024;

/// A response held by the host for the guest (the WIT `response`
/// resource). Headers stay in hyper's map until the guest asks for them.
pub struct ResponseData {
    status: u16,
    version: Version,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
    body_size: u64,
    timings: Timings,
}

/// What a method and URL resolve to; cached per VU, since a scenario
/// requests the same few URLs over and over.
struct Target {
    url: String,
    method: hyper::Method,
    version: Option<Version>,
    origin: Arc<Origin>,
    uri_h1: hyper::Uri,
    uri_h2: hyper::Uri,
    host_header: String,
    /// The default metric name: method and URL without query.
    name: String,
}

/// Targets a VU remembers.
const TARGET_CACHE: usize = 4;

/// A parsed, validated request ready to send.
struct Prepared {
    target: Arc<Target>,
    headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    body: Bytes,
    name: Option<String>,
}

impl Prepared {
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.target.name)
    }
}

fn parse_target(
    raw: &str,
    method: hyper::Method,
    version: Option<Version>,
) -> Result<Target, Error> {
    let invalid = |e: &dyn std::fmt::Display| Error::InvalidRequest(format!("URL {raw:?}: {e}"));
    let url = url::Url::parse(raw).map_err(|e| invalid(&e))?;
    let https = match url.scheme() {
        "http" => false,
        "https" => true,
        other => return Err(invalid(&format!("scheme {other:?} is not http or https"))),
    };
    let host = url
        .host_str()
        .ok_or_else(|| invalid(&"no host"))?
        .to_owned();
    let port = url
        .port_or_known_default()
        .unwrap_or(if https { 443 } else { 80 });
    let host_header = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let path_query = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let uri_h1: hyper::Uri = path_query.parse().map_err(|e| invalid(&e))?;
    let uri_h2: hyper::Uri = format!("{}://{host_header}{path_query}", url.scheme())
        .parse()
        .map_err(|e| invalid(&e))?;
    let mut bare = url.clone();
    bare.set_query(None);
    bare.set_fragment(None);
    let name = truncate(format!("{method} {bare}"), MAX_NAME);
    Ok(Target {
        url: raw.to_owned(),
        method,
        version,
        origin: Arc::new(Origin {
            https,
            host,
            port,
            version,
        }),
        uri_h1,
        uri_h2,
        host_header,
        name,
    })
}

impl Connections {
    fn target(
        &mut self,
        raw: &str,
        method: hyper::Method,
        version: Option<Version>,
    ) -> Result<Arc<Target>, Error> {
        if let Some(t) = self
            .targets
            .iter()
            .find(|t| t.url == raw && t.method == method && t.version == version)
        {
            return Ok(t.clone());
        }
        let t = Arc::new(parse_target(raw, method, version)?);
        if self.targets.len() >= TARGET_CACHE {
            self.targets.remove(0);
        }
        self.targets.push(t.clone());
        Ok(t)
    }
}

fn prepare(req: Request, conns: &mut Connections) -> Result<Prepared, Error> {
    let method = method_of(&req.method)?;
    let target = conns.target(&req.url, method, req.version)?;
    let mut headers = Vec::with_capacity(req.headers.len());
    for (k, v) in &req.headers {
        let name = hyper::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| Error::InvalidRequest(format!("invalid header name {k:?}")))?;
        let value = hyper::header::HeaderValue::from_str(v)
            .map_err(|_| Error::InvalidRequest(format!("invalid value for header {k:?}")))?;
        headers.push((name, value));
    }
    Ok(Prepared {
        target,
        headers,
        body: Bytes::from(req.body),
        name: req.name.map(|n| truncate(n, MAX_NAME)),
    })
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn build(p: &Prepared, version: Version) -> Result<hyper::Request<Full<Bytes>>, Error> {
    let t = &p.target;
    let mut b = hyper::Request::builder().method(t.method.clone());
    b = match version {
        Version::Http1 => {
            let has_host = p.headers.iter().any(|(k, _)| k == hyper::header::HOST);
            let b = b.uri(t.uri_h1.clone()).version(hyper::Version::HTTP_11);
            if has_host {
                b
            } else {
                b.header(hyper::header::HOST, t.host_header.as_str())
            }
        }
        Version::Http2 => b.uri(t.uri_h2.clone()).version(hyper::Version::HTTP_2),
    };
    for (k, v) in &p.headers {
        b = b.header(k, v);
    }
    b.body(Full::new(p.body.clone()))
        .map_err(|e| Error::InvalidRequest(e.to_string()))
}

impl VuState {
    async fn exchange(&mut self, p: &Prepared, discard: bool) -> Result<(Exchange, bool), Error> {
        let cfg = &self.run.http;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (mut sender, times, fresh) = match self.http.take(&p.target.origin) {
                Some(s) => (s, ConnectTimes::default(), false),
                None => {
                    let task = tokio::spawn(connect(p.target.origin.clone(), cfg.clone()));
                    let (s, t) = task
                        .await
                        .map_err(|e| Error::Io(format!("connect task: {e}")))??;
                    (s, t, true)
                }
            };
            let version = sender.version();
            let req = build(p, version)?;
            let sent_at = Instant::now();
            let head = match sender.send(req).await {
                Ok(r) => r,
                // A kept-alive connection the server closed while idle:
                // retry once on a new one, as browsers do.
                Err(e)
                    if !fresh
                        && attempt == 1
                        && (e.is_canceled() || e.is_closed() || e.is_incomplete_message()) =>
                {
                    continue
                }
                Err(e) => return Err(hyper_error(&e)),
            };
            let wait = sent_at.elapsed();
            let status = head.status().as_u16();
            let (parts, mut incoming) = head.into_parts();
            let headers = parts.headers;
            let mut body = Vec::new();
            let mut body_size = 0u64;
            let body_at = Instant::now();
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|e| hyper_error(&e))?;
                if let Ok(data) = frame.into_data() {
                    body_size += data.len() as u64;
                    if body_size > cfg.max_body {
                        return Err(Error::BodyTooLarge(cfg.max_body));
                    }
                    if !discard {
                        body.extend_from_slice(&data);
                    }
                }
            }
            let receive = body_at.elapsed();
            self.http.put(p.target.origin.clone(), sender);
            let ex = Exchange {
                status,
                version,
                headers,
                body,
                body_size,
                times,
                wait,
                receive,
            };
            return Ok((ex, fresh));
        }
    }
}

impl Host for VuState {
    async fn send(
        &mut self,
        request: Request,
    ) -> wasmtime::Result<Result<Resource<ResponseData>, Error>> {
        let started = Instant::now();
        let timeout = request
            .timeout
            .map(Duration::from_nanos)
            .unwrap_or(self.run.http.default_timeout);
        let discard = request.discard_body;
        let prepared = match prepare(request, &mut self.http) {
            Ok(p) => p,
            Err(e) => {
                self.run
                    .recorder
                    .http("invalid", 0, false, HttpOutcome::Error(error_kind(&e)));
                return Ok(Err(e));
            }
        };
        let result = tokio::time::timeout(timeout, self.exchange(&prepared, discard)).await;
        self.resumed();
        let total = started.elapsed();
        let sent = prepared.body.len() as u64;
        let recorder = &self.run.recorder;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout),
        };
        match result {
            Ok((ex, fresh)) => {
                let outcome = HttpOutcome::Response {
                    status: ex.status,
                    total_us: micros(total),
                    wait_us: micros(ex.wait),
                    received: ex.body_size,
                };
                recorder.http(prepared.name(), sent, fresh, outcome);
                if self.live_responses >= MAX_LIVE_RESPONSES {
                    wasmtime::bail!(
                        "the VU holds {MAX_LIVE_RESPONSES} HTTP responses without dropping them"
                    );
                }
                let data = ResponseData {
                    status: ex.status,
                    version: ex.version,
                    headers: ex.headers,
                    body: ex.body,
                    body_size: ex.body_size,
                    timings: Timings {
                        dns: nanos(ex.times.dns),
                        connect: nanos(ex.times.connect),
                        tls: nanos(ex.times.tls),
                        wait: nanos(ex.wait),
                        receive: nanos(ex.receive),
                        total: nanos(total),
                    },
                };
                let handle = self.table.push(data)?;
                self.live_responses += 1;
                Ok(Ok(handle))
            }
            Err(e) => {
                recorder.http(
                    prepared.name(),
                    sent,
                    false,
                    HttpOutcome::Error(error_kind(&e)),
                );
                Ok(Err(e))
            }
        }
    }
}

impl HostResponse for VuState {
    async fn status(&mut self, r: Resource<ResponseData>) -> wasmtime::Result<u16> {
        Ok(self.table.get(&r)?.status)
    }

    async fn version(&mut self, r: Resource<ResponseData>) -> wasmtime::Result<Version> {
        Ok(self.table.get(&r)?.version)
    }

    async fn header(
        &mut self,
        r: Resource<ResponseData>,
        name: String,
    ) -> wasmtime::Result<Option<String>> {
        let data = self.table.get(&r)?;
        Ok(data
            .headers
            .get(name.as_str())
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()))
    }

    async fn headers(
        &mut self,
        r: Resource<ResponseData>,
    ) -> wasmtime::Result<Vec<(String, String)>> {
        let data = self.table.get(&r)?;
        Ok(data
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect())
    }

    async fn body(&mut self, r: Resource<ResponseData>) -> wasmtime::Result<Vec<u8>> {
        // Moved out on first read: a body is read once, and keeping a copy
        // would double its memory.
        Ok(std::mem::take(&mut self.table.get_mut(&r)?.body))
    }

    async fn body_size(&mut self, r: Resource<ResponseData>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&r)?.body_size)
    }

    async fn timings(&mut self, r: Resource<ResponseData>) -> wasmtime::Result<Timings> {
        Ok(self.table.get(&r)?.timings)
    }

    async fn drop(&mut self, r: Resource<ResponseData>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        self.live_responses = self.live_responses.saturating_sub(1);
        Ok(())
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
