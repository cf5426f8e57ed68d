//! The HTTP client behind the `http` host calls: the keep-alive
//! connections each VU owns, the per-VU cache of parsed URLs, and error
//! mapping.
//!
//! Connecting ([`connect`]) runs in a tokio task of its own, so its deep
//! state never touches a VU's fiber stack. An HTTP/1.1 connection is then
//! driven by the VU itself ([`h1`]); an HTTP/2 one by hyper, from a task.

mod connect;
mod exchange;
pub(crate) mod h1;
mod tls;

use std::error::Error as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http2;

pub(crate) use connect::connect;
pub(crate) use exchange::{send, Answer, Headers};
pub(crate) use h1::Failure;

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
        let tls = |alpn: &[&[u8]]| tls::config(alpn, insecure);
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

/// A connection kept alive between requests.
pub(crate) enum Sender {
    /// Driven by the VU that owns it.
    H1(h1::Conn),
    /// Driven by hyper's task; this end sends requests to it.
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    /// Whether the connection is known to be gone. An idle HTTP/1.1
    /// connection closed by its server is found out when used (and the
    /// request sent again on a new one).
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(_) => false,
            Sender::H2(s) => s.is_closed(),
        }
    }

    pub(crate) fn version(&self) -> Version {
        match self {
            Sender::H1(_) => Version::Http1,
            Sender::H2(_) => Version::Http2,
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

pub(crate) fn io_error(e: &std::io::Error, what: &str) -> Error {
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

/// What a method and URL resolve to; cached per VU, since a scenario
/// requests the same few URLs over and over.
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) method: hyper::Method,
    pub(crate) version: Option<Version>,
    pub(crate) origin: Arc<Origin>,
    /// The request target of HTTP/1.1: the path and query.
    pub(crate) path: String,
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
    // Checked as a URI: the request line must not carry what a URI cannot.
    path_query.parse::<hyper::Uri>().map_err(|e| invalid(&e))?;
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
        path: path_query,
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
