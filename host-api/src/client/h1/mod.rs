//! A lean HTTP/1.1 client connection, driven by the VU that owns it.
//!
//! hyper's client drives each connection from a task of its own, which
//! keeps an 8 KiB read buffer (often 16 KiB while a keep-alive read is
//! pending), an 8 KiB write buffer and a request channel for as long as the
//! connection lives: about 33 KiB per connected VU, and three task
//! wake-ups per request. Here the VU writes its request and reads the
//! answer itself, with buffers that live for one exchange, so an idle
//! keep-alive connection holds nothing but its socket. Response heads are
//! parsed by `httparse` (hyper's own parser); the framing (length,
//! chunked, until close, none) follows RFC 9112 section 6.

mod body;
mod head;
#[cfg(test)]
mod tests;

use std::io;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::bindings::runner::scenario::http::Error;
use body::{read_chunked, read_length, read_to_end, Reader, Sink, READ_CHUNK};
pub(crate) use head::{encode_head, RawHeaders};
use head::{parse_head, protocol, Framing, Parsed, MAX_HEAD};

/// Bodies at most this long go out in the same write as the head.
const COALESCE: usize = 16 * 1024;

pub(crate) use crate::stream::Io;

/// One keep-alive HTTP/1.1 connection.
pub(crate) struct Conn {
    io: Io,
}

/// A request ready to write: its head, encoded, and its body.
pub(crate) struct Outgoing<'a> {
    /// The request line and headers, ending in the empty line.
    pub(crate) head: Vec<u8>,
    /// The body as the scenario gave it (chunk-encoded here if the
    /// scenario asked for `transfer-encoding: chunked`).
    pub(crate) body: &'a [u8],
    /// Whether the body goes out as one chunk and a terminator.
    pub(crate) chunked: bool,
    /// A `HEAD` request: its response has no body, whatever it says.
    pub(crate) head_only: bool,
    /// The scenario asked for `connection: close`.
    pub(crate) close: bool,
}
/// What an exchange brought back.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: RawHeaders,
    pub(crate) body: Vec<u8>,
    pub(crate) body_size: u64,
    /// From the first byte written to the response head read.
    pub(crate) wait: Duration,
    /// Reading the body.
    pub(crate) receive: Duration,
    /// The connection may carry the next request.
    pub(crate) reusable: bool,
}

/// Why an exchange failed.
pub(crate) enum Failure {
    /// The connection was closed before any byte of the answer came: on a
    /// connection kept alive from earlier, the server had closed it while
    /// idle, and the request may go again on a new one.
    Closed(Error),
    /// Anything else.
    Failed(Error),
}

impl Failure {
    /// The error to report.
    pub(crate) fn into_error(self) -> Error {
        match self {
            Failure::Closed(e) | Failure::Failed(e) => e,
        }
    }
}
impl Conn {
    /// A connection over `io`, on which nothing has been sent yet.
    pub(crate) fn new(io: Io) -> Self {
        Self { io }
    }

    /// Sends `req` and reads its response: the body is kept unless
    /// `discard`, and refused past `max_body` bytes.
    pub(crate) async fn exchange(
        &mut self,
        req: &Outgoing<'_>,
        max_body: u64,
        discard: bool,
    ) -> Result<Response, Failure> {
        let sent_at = Instant::now();
        self.write(req).await?;
        let mut rd = Reader {
            io: &mut self.io,
            buf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            total: 0,
        };
        let parsed = read_response_head(&mut rd, req.head_only).await?;
        let wait = sent_at.elapsed();
        let headers = RawHeaders {
            head: rd.available()[..parsed.len].into(),
        };
        rd.consume(parsed.len);
        let body_at = Instant::now();
        let mut body = Vec::new();
        let mut sink = Sink {
            body: &mut body,
            size: 0,
            keep: !discard,
            max: max_body,
        };
        match parsed.framing {
            Framing::None => {}
            Framing::Length(n) => read_length(&mut rd, &mut sink, n).await?,
            Framing::Chunked => read_chunked(&mut rd, &mut sink).await?,
            Framing::UntilClose => read_to_end(&mut rd, &mut sink).await?,
        }
        let body_size = sink.size;
        // Bytes past the answer: the server does not speak HTTP/1.1 as we
        // do, and the next answer could not be told apart.
        let leftover = !rd.available().is_empty();
        Ok(Response {
            status: parsed.status,
            headers,
            body,
            body_size,
            wait,
            receive: body_at.elapsed(),
            reusable: parsed.keep_alive && !req.close && !leftover,
        })
    }

    async fn write(&mut self, req: &Outgoing<'_>) -> Result<(), Failure> {
        // A write that fails on a connection kept from earlier means the
        // server had closed it: nothing of the answer has come.
        let closed = |e: io::Error| Failure::Closed(crate::client::io_error(&e, "connection"));
        if req.chunked {
            let mut out = req.head.clone();
            if !req.body.is_empty() {
                out.extend_from_slice(format!("{:x}\r\n", req.body.len()).as_bytes());
                out.extend_from_slice(req.body);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            self.io.write_all(&out).await.map_err(closed)?;
        } else if req.body.len() <= COALESCE {
            if req.body.is_empty() {
                self.io.write_all(&req.head).await.map_err(closed)?;
            } else {
                let mut out = Vec::with_capacity(req.head.len() + req.body.len());
                out.extend_from_slice(&req.head);
                out.extend_from_slice(req.body);
                self.io.write_all(&out).await.map_err(closed)?;
            }
        } else {
            self.io.write_all(&req.head).await.map_err(closed)?;
            self.io.write_all(req.body).await.map_err(closed)?;
        }
        self.io.flush().await.map_err(closed)
    }
}
/// Reads heads until a final one (skipping `100 Continue` and other
/// interim answers).
async fn read_response_head(rd: &mut Reader<'_>, head_only: bool) -> Result<Parsed, Failure> {
    loop {
        let parsed = loop {
            if let Some(p) = parse_head(rd.available(), head_only).map_err(Failure::Failed)? {
                break p;
            }
            if rd.available().len() >= MAX_HEAD {
                return Err(Failure::Failed(protocol(format_args!(
                    "a head over {} KiB",
                    MAX_HEAD / 1024
                ))));
            }
            match rd.fill().await {
                Ok(0) if rd.total == 0 => {
                    return Err(Failure::Closed(Error::ConnectionReset(
                        "the server closed the connection without answering".into(),
                    )))
                }
                Ok(0) => {
                    return Err(Failure::Failed(Error::ConnectionReset(
                        "the server closed the connection in the middle of its answer's head"
                            .into(),
                    )))
                }
                Ok(_) => {}
                Err(e) if rd.total == 0 => {
                    return Err(Failure::Closed(crate::client::io_error(&e, "connection")))
                }
                Err(e) => return Err(Failure::Failed(crate::client::io_error(&e, "connection"))),
            }
        };
        if (100..200).contains(&parsed.status) && parsed.status != 101 {
            rd.consume(parsed.len);
            continue;
        }
        return Ok(parsed);
    }
}
