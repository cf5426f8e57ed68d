//! HTTP requests, timed by the host. Each VU keeps its own keep-alive
//! connections, like a real user's browser.
//!
//! ```no_run
//! # fn f() -> guest_sdk::Result {
//! use guest_sdk::http::{self, Request};
//! let r = http::get("http://127.0.0.1:8080/")?;
//! assert_eq!(r.status(), 200);
//! let r = Request::post("http://127.0.0.1:8080/login")
//!     .header("content-type", "application/json")
//!     .body(r#"{"user":"u1"}"#)
//!     .name("login")
//!     .send()?;
//! println!("{} in {:?}", r.status(), r.timings().total);
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::time::Duration;

use crate::__bindings::runner::scenario::http as wit;

pub use wit::Error as ErrorKind;
pub use wit::Method;

/// Why a request got no response.
#[derive(Clone, Debug)]
pub struct Error(wit::Error);

impl Error {
    /// The typed reason.
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }

    /// Whether the request timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self.0, wit::Error::Timeout)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            wit::Error::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            wit::Error::Dns(m) => write!(f, "name resolution failed: {m}"),
            wit::Error::ConnectionRefused(m) => write!(f, "connection refused: {m}"),
            wit::Error::ConnectionReset(m) => write!(f, "connection reset: {m}"),
            wit::Error::Timeout => write!(f, "request timed out"),
            wit::Error::Tls(m) => write!(f, "TLS error: {m}"),
            wit::Error::Protocol(m) => write!(f, "HTTP protocol error: {m}"),
            wit::Error::BodyTooLarge(n) => write!(f, "response body larger than {n} bytes"),
            wit::Error::Io(m) => write!(f, "I/O error: {m}"),
            wit::Error::Denied(m) => write!(f, "denied: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// Where a request's time went, measured by the host.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// Name resolution (new connections only).
    pub dns: Duration,
    /// TCP connect (new connections only).
    pub connect: Duration,
    /// TLS handshake (new TLS connections only).
    pub tls: Duration,
    /// Time to first byte.
    pub wait: Duration,
    /// Reading the body.
    pub receive: Duration,
    /// The whole request.
    pub total: Duration,
}

/// A complete response. It stays in the runner until asked for: reading
/// the status does not copy headers or body into the scenario.
#[derive(Debug)]
pub struct Response {
    inner: wit::Response,
    body: std::cell::OnceCell<Vec<u8>>,
}

impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.inner.status()
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.inner.header(name)
    }

    /// All headers, in order.
    pub fn headers(&self) -> Vec<(String, String)> {
        self.inner.headers()
    }

    /// The body bytes (empty if the request discarded them).
    pub fn body(&self) -> &[u8] {
        self.body.get_or_init(|| self.inner.body())
    }

    /// The body as text, invalid UTF-8 replaced.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.body())
    }

    /// The body length in bytes, also when discarded.
    pub fn body_size(&self) -> u64 {
        self.inner.body_size()
    }

    /// Whether the response came over HTTP/2.
    pub fn is_http2(&self) -> bool {
        matches!(self.inner.version(), wit::Version::Http2)
    }

    /// Host-measured timings.
    pub fn timings(&self) -> Timings {
        let t = self.inner.timings();
        Timings {
            dns: Duration::from_nanos(t.dns),
            connect: Duration::from_nanos(t.connect),
            tls: Duration::from_nanos(t.tls),
            wait: Duration::from_nanos(t.wait),
            receive: Duration::from_nanos(t.receive),
            total: Duration::from_nanos(t.total),
        }
    }
}

/// A request being built; [`Request::send`] sends it.
#[derive(Clone, Debug)]
pub struct Request(wit::Request);

impl Request {
    /// A request with `method` to `url`.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Self(wit::Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
            name: None,
            version: None,
            discard_body: false,
            tags: Vec::new(),
        })
    }

    /// A GET request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }

    /// A POST request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new(Method::Post, url)
    }

    /// A PUT request.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new(Method::Put, url)
    }

    /// A DELETE request.
    pub fn delete(url: impl Into<String>) -> Self {
        Self::new(Method::Delete, url)
    }

    /// A HEAD request.
    pub fn head(url: impl Into<String>) -> Self {
        Self::new(Method::Head, url)
    }

    /// A PATCH request.
    pub fn patch(url: impl Into<String>) -> Self {
        Self::new(Method::Patch, url)
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.0.body = body.into();
        self
    }

    /// Time allowed for the whole request (default: the runner's
    /// `--http-timeout`).
    pub fn timeout(mut self, time: Duration) -> Self {
        self.0.timeout = Some(u64::try_from(time.as_nanos()).unwrap_or(u64::MAX));
        self
    }

    /// The metric name (default: method and URL without the query), so
    /// `/user/1` and `/user/2` can share one line of the summary.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.0.name = Some(name.into());
        self
    }

    /// Uses HTTP/2 (prior knowledge over `http://`; ALPN `h2` over TLS).
    pub fn http2(mut self) -> Self {
        self.0.version = Some(wit::Version::Http2);
        self
    }

    /// Uses HTTP/1.1 only.
    pub fn http1(mut self) -> Self {
        self.0.version = Some(wit::Version::Http1);
        self
    }

    /// Tags this request's metrics with `key=value`; the summary and the
    /// JSON break results down by tag (and thresholds can filter on it:
    /// `http_req_duration{page:home} p(95)<200ms`).
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.tags.push((key.into(), value.into()));
        self
    }

    /// Reads and counts the body without copying it into the scenario.
    pub fn discard_body(mut self) -> Self {
        self.0.discard_body = true;
        self
    }

    /// Sends the request and waits for the whole response; only this VU
    /// waits.
    pub fn send(mut self) -> Result<Response, Error> {
        if let Some(g) = crate::current_group() {
            if !self.0.tags.iter().any(|(k, _)| k == "group") {
                self.0.tags.push(("group".into(), g));
            }
        }
        wit::send(&self.0)
            .map(|inner| Response {
                inner,
                body: std::cell::OnceCell::new(),
            })
            .map_err(Error)
    }
}

/// Sends a GET request.
pub fn get(url: impl Into<String>) -> Result<Response, Error> {
    Request::get(url).send()
}

/// Sends a POST request with `body`.
pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Result<Response, Error> {
    Request::post(url).body(body).send()
}
