//! One request on one connection, whichever HTTP version it speaks: the
//! answer's status, headers and body (kept or only counted), and its
//! timings.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};

use super::h1::{self, Failure};
use super::{hyper_error, Sender, Target};
use crate::bindings::runner::scenario::http::Error;

/// A response's headers, as each protocol hands them over.
pub(crate) enum Headers {
    /// The bytes of an HTTP/1.1 head, parsed again only if the guest asks.
    H1(h1::RawHeaders),
    /// hyper's map, for HTTP/2.
    H2(hyper::HeaderMap),
}

impl Headers {
    /// The first value of header `name` (any case).
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        match self {
            Headers::H1(h) => h.get(name),
            Headers::H2(m) => m
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        }
    }

    /// Every header, names in lower case.
    pub(crate) fn all(&self) -> Vec<(String, String)> {
        match self {
            Headers::H1(h) => h.all(),
            Headers::H2(m) => m
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        }
    }
}

/// What one request brought back.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: Headers,
    pub(crate) body: Vec<u8>,
    pub(crate) body_size: u64,
    /// From sending to the response head.
    pub(crate) wait: Duration,
    /// Reading the body.
    pub(crate) receive: Duration,
    /// The connection may carry the next request.
    pub(crate) reusable: bool,
}

/// Sends a request for `target` on `sender` and reads the answer; the
/// body is kept unless `discard`, and refused past `max_body` bytes.
pub(crate) async fn send(
    sender: &mut Sender,
    target: &Target,
    headers: &[(HeaderName, HeaderValue)],
    body: &Bytes,
    max_body: u64,
    discard: bool,
) -> Result<Answer, Failure> {
    match sender {
        Sender::H1(conn) => {
            let enc = h1::encode_head(
                target.method.as_str(),
                &target.path,
                &target.host_header,
                headers,
                body.len(),
            )
            .map_err(Failure::Failed)?;
            let out = h1::Outgoing {
                head: enc.head,
                body,
                chunked: enc.chunked,
                head_only: target.method == hyper::Method::HEAD,
                close: enc.close,
            };
            let r = conn.exchange(&out, max_body, discard).await?;
            Ok(Answer {
                status: r.status,
                headers: Headers::H1(r.headers),
                body: r.body,
                body_size: r.body_size,
                wait: r.wait,
                receive: r.receive,
                reusable: r.reusable,
            })
        }
        Sender::H2(s) => h2(s, target, headers, body, max_body, discard).await,
    }
}

async fn h2(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    target: &Target,
    headers: &[(HeaderName, HeaderValue)],
    body: &Bytes,
    max_body: u64,
    discard: bool,
) -> Result<Answer, Failure> {
    let mut b = hyper::Request::builder()
        .method(target.method.clone())
        .uri(target.uri_h2.clone())
        .version(hyper::Version::HTTP_2);
    for (k, v) in headers {
        b = b.header(k, v);
    }
    let req = b
        .body(Full::new(body.clone()))
        .map_err(|e| Failure::Failed(Error::InvalidRequest(e.to_string())))?;
    let sent_at = Instant::now();
    let sent = match sender.ready().await {
        Ok(()) => sender.send_request(req).await,
        Err(e) => Err(e),
    };
    let head = sent.map_err(|e| {
        // A connection the server closed while it was idle: nothing of
        // this request was answered, it may go again on a new one.
        if e.is_canceled() || e.is_closed() || e.is_incomplete_message() {
            Failure::Closed(hyper_error(&e))
        } else {
            Failure::Failed(hyper_error(&e))
        }
    })?;
    let wait = sent_at.elapsed();
    let status = head.status().as_u16();
    let (parts, mut incoming) = head.into_parts();
    let mut kept = Vec::new();
    let mut body_size = 0u64;
    let body_at = Instant::now();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| Failure::Failed(hyper_error(&e)))?;
        if let Ok(data) = frame.into_data() {
            body_size += data.len() as u64;
            if body_size > max_body {
                return Err(Failure::Failed(Error::BodyTooLarge(max_body)));
            }
            if !discard {
                kept.extend_from_slice(&data);
            }
        }
    }
    Ok(Answer {
        status,
        headers: Headers::H2(parts.headers),
        body: kept,
        body_size,
        wait,
        receive: body_at.elapsed(),
        reusable: true,
    })
}
