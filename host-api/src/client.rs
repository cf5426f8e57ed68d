//! The HTTP client behind the `http` host calls: connection set-up (DNS,
//! TCP, TLS, HTTP/1.1 or HTTP/2 handshake), the keep-alive connections each
//! VU owns, the per-VU cache of parsed URLs, and error mapping.
//!
//! Connecting runs in its own tokio task and each connection is driven by
//! another, so a VU's fiber only waits on channels.

use std::error::Error as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::egress::Egress;

use crate::bindings::runner::scenario::http::{Error, Version};
use crate::limits::truncate;

/// Most connections a VU keeps open at once (distinct origins); the oldest
/// is closed to make room.
const MAX_CONNECTIONS_PER_VU: usize = 16;

/// Longest metric name derived from a URL.
pub(crate) const MAX_NAME: usize = crate::limits::sizes::NAME;

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
    tls_plain: Arc<rustls::ClientConfig>,
    /// Source addresses VUs connect from (`--local-addr`); none: the
    /// system's choice.
    local: Arc<[IpAddr]>,
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
            tls_plain: tls(&[]),
            local: Arc::from(Vec::new()),
        }
    }

    /// These settings, with VUs connecting from `addrs` in turn (see
    /// [`crate::source`]).
    pub fn with_local_addrs(mut self, addrs: Vec<IpAddr>) -> Self {
        self.local = Arc::from(addrs);
        self
    }

    /// TLS settings without ALPN, for MQTT and NATS over TLS; honours
    /// `--insecure` like HTTP does.
    pub fn tls_plain(&self) -> Arc<rustls::ClientConfig> {
        self.tls_plain.clone()
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
pub(crate) struct Origin {
    https: bool,
    host: String,
    port: u16,
    version: Option<Version>,
}

impl Origin {
    /// `host:port`, as the summary lists denied destinations.
    pub(crate) fn destination(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

pub(crate) enum Sender {
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

    pub(crate) fn version(&self) -> Version {
        match self {
            Sender::H1(_) => Version::Http1,
            Sender::H2(_) => Version::Http2,
        }
    }

    pub(crate) async fn send(
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
    pub(crate) fn take(&mut self, origin: &Origin) -> Option<Sender> {
        let i = self.open.iter().position(|(o, _)| **o == *origin)?;
        let (_, sender) = self.open.swap_remove(i);
        (!sender.is_closed()).then_some(sender)
    }

    pub(crate) fn put(&mut self, origin: Arc<Origin>, sender: Sender) {
        if self.open.len() >= MAX_CONNECTIONS_PER_VU {
            self.open.remove(0);
        }
        self.open.push((origin, sender));
    }
}

/// Connect-phase timings.
#[derive(Default, Clone, Copy)]
pub(crate) struct ConnectTimes {
    pub(crate) dns: Duration,
    pub(crate) connect: Duration,
    pub(crate) tls: Duration,
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
        Error::Denied(_) => "denied",
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

pub(crate) fn hyper_error(e: &hyper::Error) -> Error {
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

/// A TCP connection to `addr`, from `from` if given. The port is chosen
/// at connect time (`IP_BIND_ADDRESS_NO_PORT`), so one source address
/// serves ~28,000 connections to each target rather than to all of them.
async fn tcp_connect(addr: SocketAddr, from: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(from) = from else {
        return TcpStream::connect(addr).await;
    };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    {
        use std::os::fd::AsRawFd as _;
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads `one` for the size given, on a socket
        // this function owns. A kernel without the option keeps the old
        // behaviour (the port chosen at bind).
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                std::ptr::addr_of!(one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(addr).await
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

/// Opens a connection to `origin`: name lookup, TCP, TLS, the HTTP
/// handshake. The handshake's state (rustls, hyper) is tens of KiB: it is
/// boxed when the connect task first runs, so spawning this future from a
/// VU's fiber moves only its arguments there. Moved whole, it left 48 KiB
/// of every connected VU's fiber stack resident.
pub(crate) async fn connect(
    origin: Arc<Origin>,
    cfg: ClientConfig,
    egress: Arc<Egress>,
    vu: u32,
) -> Result<(Sender, ConnectTimes), Error> {
    Box::pin(open(origin, cfg, egress, vu)).await
}

async fn open(
    origin: Arc<Origin>,
    cfg: ClientConfig,
    egress: Arc<Egress>,
    vu: u32,
) -> Result<(Sender, ConnectTimes), Error> {
    let mut times = ConnectTimes::default();
    let denied = |d: crate::egress::Denied| Error::Denied(d.0);
    let by_name = egress
        .check_name(&origin.host, origin.port)
        .map_err(denied)?;
    let t = Instant::now();
    let addr = resolve(&origin.host, origin.port).await?;
    times.dns = t.elapsed();
    if !by_name {
        egress
            .check_addr(&origin.host, addr.ip(), origin.port)
            .map_err(denied)?;
    }

    let t = Instant::now();
    let from = crate::source::pick(&cfg.local, vu, addr.ip());
    let tcp = tcp_connect(addr, from)
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

/// What a method and URL resolve to; cached per VU, since a scenario
/// requests the same few URLs over and over.
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) method: hyper::Method,
    pub(crate) version: Option<Version>,
    pub(crate) origin: Arc<Origin>,
    pub(crate) uri_h1: hyper::Uri,
    pub(crate) uri_h2: hyper::Uri,
    pub(crate) host_header: String,
    /// The default metric name: method and URL without query.
    pub(crate) name: String,
}

/// Targets a VU remembers.
const TARGET_CACHE: usize = 4;

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
    pub(crate) fn target(
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
