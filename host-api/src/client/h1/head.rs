//! Response heads (parsed with `httparse`, framing per RFC 9112 section
//! 6) and request heads (encoded here).

use crate::bindings::runner::scenario::http::Error;

/// Largest response head (status line and headers) accepted.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// Most headers a response may carry (hyper's default is 100).
pub(crate) const MAX_HEADERS: usize = 128;

/// Headers parsed on the stack before the parser is given room for
/// [`MAX_HEADERS`] on the heap: most responses carry a dozen.
const STACK_HEADERS: usize = 24;

/// The headers of an HTTP/1.1 response, kept as the bytes that came: most
/// scenarios never read them, so they are parsed again only when asked.
pub(crate) struct RawHeaders {
    pub(super) head: Box<[u8]>,
}

impl RawHeaders {
    fn parse<R>(&self, f: impl FnOnce(&[httparse::Header<'_>]) -> R) -> R {
        let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut r = httparse::Response::new(&mut headers);
        // The bytes parsed once already; a failure here leaves no headers.
        match r.parse(&self.head) {
            Ok(_) => f(r.headers),
            Err(_) => f(&[]),
        }
    }

    /// The first value of header `name` (any case), as text.
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        self.parse(|hs| {
            hs.iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        })
    }

    /// Every header in the order received, names in lower case.
    pub(crate) fn all(&self) -> Vec<(String, String)> {
        self.parse(|hs| {
            hs.iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect()
        })
    }
}
/// How a response's body is delimited (RFC 9112, 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// What the parser found in a complete head.
#[derive(Debug)]
pub(super) struct Parsed {
    pub(super) len: usize,
    pub(super) status: u16,
    pub(super) framing: Framing,
    pub(super) keep_alive: bool,
}

pub(super) fn protocol(what: impl std::fmt::Display) -> Error {
    Error::Protocol(format!("the server's HTTP/1.1 answer: {what}"))
}

/// Parses a response head at the start of `buf`: `None` while incomplete.
pub(super) fn parse_head(buf: &[u8], head_only: bool) -> Result<Option<Parsed>, Error> {
    let mut small = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut r = httparse::Response::new(&mut small);
    match r.parse(buf) {
        Ok(httparse::Status::Complete(len)) => read_head(&r, len, head_only).map(Some),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            let mut big = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut r = httparse::Response::new(&mut big);
            match r.parse(buf) {
                Ok(httparse::Status::Complete(len)) => read_head(&r, len, head_only).map(Some),
                Ok(httparse::Status::Partial) => Ok(None),
                Err(httparse::Error::TooManyHeaders) => {
                    Err(protocol(format_args!("more than {MAX_HEADERS} headers")))
                }
                Err(e) => Err(protocol(e)),
            }
        }
        Err(e) => Err(protocol(e)),
    }
}

/// Whether a comma-separated header value holds `token` (any case).
pub(super) fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

fn read_head(r: &httparse::Response<'_, '_>, len: usize, head_only: bool) -> Result<Parsed, Error> {
    let status = r.code.ok_or_else(|| protocol("no status"))?;
    let http10 = r.version == Some(0);
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut close = http10;
    for h in r.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            for v in h.value.split(|&b| b == b',') {
                let v = std::str::from_utf8(v.trim_ascii())
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| protocol("a content-length that is not a number"))?;
                if length.is_some_and(|l| l != v) {
                    return Err(protocol("two different content-lengths"));
                }
                length = Some(v);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding says whether the body is chunked.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            if has_token(h.value, "close") {
                close = true;
            } else if http10 && has_token(h.value, "keep-alive") {
                close = false;
            }
        }
    }
    let no_body = head_only || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = if no_body {
        Framing::None
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    // A body framed both ways may hide a second response (smuggling):
    // the connection is not used again (RFC 9112, 6.1).
    if chunked.is_some() && length.is_some() {
        close = true;
    }
    Ok(Parsed {
        len,
        status,
        framing,
        keep_alive: !close && framing != Framing::UntilClose && status != 101,
    })
}
/// What the request's head says of its body and connection.
pub(crate) struct Encoded {
    pub(crate) head: Vec<u8>,
    pub(crate) chunked: bool,
    pub(crate) close: bool,
}

/// Encodes a request head: the request line, `host` unless the scenario
/// set one, its headers, and the body's length. A `content-length` of the
/// scenario's own must match the body; `transfer-encoding` may only be
/// `chunked` (the body then goes out as one chunk).
pub(crate) fn encode_head(
    method: &str,
    target: &str,
    host: &str,
    headers: &[(hyper::header::HeaderName, hyper::header::HeaderValue)],
    body_len: usize,
) -> Result<Encoded, Error> {
    use hyper::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
    let invalid = |m: String| Error::InvalidRequest(m);
    let size: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let mut head = Vec::with_capacity(method.len() + target.len() + host.len() + size + 64);
    head.extend_from_slice(method.as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    let (mut has_host, mut length, mut chunked, mut close) = (false, None, false, false);
    for (k, v) in headers {
        if k == HOST {
            has_host = true;
        } else if k == CONTENT_LENGTH {
            let n = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| invalid(format!("content-length {v:?} is not a number")))?;
            if n != body_len {
                return Err(invalid(format!(
                    "content-length {n} does not match the body's {body_len} bytes (leave the header out: the runner sets it)"
                )));
            }
            length = Some(n);
        } else if k == TRANSFER_ENCODING {
            if !v.as_bytes().eq_ignore_ascii_case(b"chunked") {
                return Err(invalid(format!(
                    "transfer-encoding {v:?}: only chunked is supported"
                )));
            }
            chunked = true;
        } else if k == CONNECTION && has_token(v.as_bytes(), "close") {
            close = true;
        }
    }
    if chunked && length.is_some() {
        return Err(invalid(
            "both content-length and transfer-encoding are set; keep one".into(),
        ));
    }
    if !has_host {
        head.extend_from_slice(b"host: ");
        head.extend_from_slice(host.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    for (k, v) in headers {
        head.extend_from_slice(k.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(v.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let payload = matches!(method, "POST" | "PUT" | "PATCH");
    if !chunked && length.is_none() && (body_len > 0 || payload) {
        head.extend_from_slice(b"content-length: ");
        head.extend_from_slice(body_len.to_string().as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    Ok(Encoded {
        head,
        chunked,
        close,
    })
}
