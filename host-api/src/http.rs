//! Host side of the `http` interface: `send` and the `response` resource.
//!
//! Each VU owns its keep-alive connections, one per origin, as a browser
//! would (see [`crate::client`]). The host times every request itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::component::Resource;

use crate::bindings::runner::scenario::http::{
    Error, Host, HostResponse, Method, Request, Timings, Version,
};
use crate::client::{
    self, connect, error_kind, Answer, ConnectTimes, Connections, Failure, Headers, Target,
    MAX_NAME,
};
use crate::limits::truncate;
use crate::recorder::HttpOutcome;
use crate::vu::nanos;
use crate::VuState;

pub use crate::client::ClientConfig;

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

/// What one request produced, before conversion to the WIT response.
struct Exchange {
    version: Version,
    answer: Answer,
    times: ConnectTimes,
}

/// Most responses a VU may hold at once; more means the guest leaks them.
const MAX_LIVE_RESPONSES: usize = 1024;

/// A response held by the host for the guest (the WIT `response`
/// resource). Headers stay as they came until the guest asks for them.
pub struct ResponseData {
    status: u16,
    version: Version,
    headers: Headers,
    body: Vec<u8>,
    body_size: u64,
    timings: Timings,
}

/// A parsed, validated request ready to send.
struct Prepared {
    target: Arc<Target>,
    headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    body: Bytes,
    name: Option<String>,
    tags: Vec<(String, String)>,
}

impl Prepared {
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.target.name)
    }

    /// The metric key: the name, with the request's tags if it has any.
    fn key(&self) -> std::borrow::Cow<'_, str> {
        if self.tags.is_empty() {
            std::borrow::Cow::Borrowed(self.name())
        } else {
            std::borrow::Cow::Owned(crate::recorder::tagged_key(self.name(), &self.tags))
        }
    }
}

/// Refuses a request over the sizes the host takes: its URL, its
/// headers, and a body larger than `max_body` (`--max-body`).
fn check_sizes(req: &Request, max_body: u64) -> Result<(), Error> {
    use crate::limits::sizes;
    let bad = |m: String| Err(Error::InvalidRequest(m));
    if req.url.len() > sizes::URL {
        return bad(format!(
            "the URL is {} bytes, over the {} a request may have",
            req.url.len(),
            sizes::URL
        ));
    }
    if req.headers.len() > sizes::HEADERS {
        return bad(format!(
            "{} headers, over the {} a request may have",
            req.headers.len(),
            sizes::HEADERS
        ));
    }
    let header_bytes: usize = req.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if header_bytes > sizes::HEADER_BYTES {
        return bad(format!(
            "the headers take {header_bytes} bytes, over the {} a request may have",
            sizes::HEADER_BYTES
        ));
    }
    if req.body.len() as u64 > max_body {
        return bad(format!(
            "the body is {} bytes, over --max-body ({max_body})",
            req.body.len()
        ));
    }
    Ok(())
}

fn prepare(req: Request, conns: &mut Connections, max_body: u64) -> Result<Prepared, Error> {
    check_sizes(&req, max_body)?;
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
        tags: crate::recorder::clean_tags(req.tags),
    })
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
                    let task = tokio::spawn(connect(
                        p.target.origin.clone(),
                        cfg.clone(),
                        self.run.egress.clone(),
                        self.vu_id,
                    ));
                    let (s, t) = task
                        .await
                        .map_err(|e| Error::Io(format!("connect task: {e}")))??;
                    (s, t, true)
                }
            };
            let version = sender.version();
            let answer = match client::send(
                &mut sender,
                &p.target,
                &p.headers,
                &p.body,
                cfg.max_body,
                discard,
            )
            .await
            {
                Ok(a) => a,
                // A kept-alive connection the server closed while idle:
                // retry once on a new one, as browsers do.
                Err(Failure::Closed(_)) if !fresh && attempt == 1 => continue,
                Err(e) => return Err(e.into_error()),
            };
            if answer.reusable {
                self.http.put(p.target.origin.clone(), sender);
            }
            return Ok((
                Exchange {
                    version,
                    answer,
                    times,
                },
                fresh,
            ));
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
        let prepared = match prepare(request, &mut self.http, self.run.http.max_body) {
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
                let a = ex.answer;
                let outcome = HttpOutcome::Response {
                    status: a.status,
                    total_us: micros(total),
                    wait_us: micros(a.wait),
                    corrected_us: self.lag.map(|lag| micros(total + lag)),
                    received: a.body_size,
                };
                recorder.http(&prepared.key(), sent, fresh, outcome);
                if self.live_responses >= MAX_LIVE_RESPONSES {
                    return Err(crate::limits::HandlesExceeded(format!(
                        "the VU holds {MAX_LIVE_RESPONSES} HTTP responses without dropping them"
                    ))
                    .into());
                }
                let data = ResponseData {
                    status: a.status,
                    version: ex.version,
                    headers: a.headers,
                    body: a.body,
                    body_size: a.body_size,
                    timings: Timings {
                        dns: nanos(ex.times.dns),
                        connect: nanos(ex.times.connect),
                        tls: nanos(ex.times.tls),
                        wait: nanos(a.wait),
                        receive: nanos(a.receive),
                        total: nanos(total),
                    },
                };
                let handle = self.table.push(data)?;
                self.live_responses += 1;
                Ok(Ok(handle))
            }
            Err(e) => {
                let sent = if let Error::Denied(_) = &e {
                    recorder.denied(&prepared.target.origin.destination());
                    0
                } else {
                    sent
                };
                recorder.http(
                    &prepared.key(),
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
        Ok(self.table.get(&r)?.headers.get(&name))
    }

    async fn headers(
        &mut self,
        r: Resource<ResponseData>,
    ) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.table.get(&r)?.headers.all())
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
