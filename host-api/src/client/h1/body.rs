//! Reading a response body as its head frames it: a length, chunks, or
//! up to the end of the stream.

use std::io;

use tokio::io::AsyncReadExt;

use super::head::protocol;
use super::{Failure, Io};
use crate::bindings::runner::scenario::http::Error;
use crate::client::io_error;

/// Longest chunk-size line or trailer line of a chunked body.
const MAX_LINE: usize = 4096;

/// The read buffer's first size; it grows while a head is incomplete.
pub(super) const READ_CHUNK: usize = 4096;

/// The bytes read from a connection and not yet used.
pub(super) struct Reader<'a> {
    pub(super) io: &'a mut Io,
    pub(super) buf: Vec<u8>,
    pub(super) pos: usize,
    /// Bytes read in this exchange so far.
    pub(super) total: u64,
}

impl Reader<'_> {
    pub(super) fn available(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Reads more; `Ok(0)` at the end of the stream.
    pub(super) async fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(self.buf.len().max(READ_CHUNK));
        }
        let n = self.io.read_buf(&mut self.buf).await?;
        self.total += n as u64;
        Ok(n)
    }

    /// Reads more, calling the end of the stream `what`.
    pub(super) async fn more(&mut self, what: &str) -> Result<(), Failure> {
        match self.fill().await {
            Ok(0) => Err(Failure::Failed(Error::ConnectionReset(format!(
                "the server closed the connection {what}"
            )))),
            Ok(_) => Ok(()),
            Err(e) => Err(Failure::Failed(io_error(&e, "connection"))),
        }
    }
}

/// Where a body's bytes go: kept for the guest or only counted.
pub(super) struct Sink<'a> {
    pub(super) body: &'a mut Vec<u8>,
    pub(super) size: u64,
    pub(super) keep: bool,
    pub(super) max: u64,
}

impl Sink<'_> {
    pub(super) fn take(&mut self, data: &[u8]) -> Result<(), Failure> {
        self.size += data.len() as u64;
        if self.size > self.max {
            return Err(Failure::Failed(Error::BodyTooLarge(self.max)));
        }
        if self.keep {
            self.body.extend_from_slice(data);
        }
        Ok(())
    }
}
pub(super) async fn read_length(
    rd: &mut Reader<'_>,
    sink: &mut Sink<'_>,
    n: u64,
) -> Result<(), Failure> {
    if n > sink.max {
        return Err(Failure::Failed(Error::BodyTooLarge(sink.max)));
    }
    if sink.keep {
        // The body's final size is known (and bounded): one allocation.
        sink.body.reserve_exact(usize::try_from(n).unwrap_or(0));
    }
    let mut left = n;
    loop {
        let have = rd.available();
        let take = have.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if take > 0 {
            let (data, _) = have.split_at(take);
            sink.take(data)?;
            rd.consume(take);
            left -= take as u64;
        }
        if left == 0 {
            return Ok(());
        }
        rd.more("in the middle of the body").await?;
    }
}

pub(super) async fn read_to_end(rd: &mut Reader<'_>, sink: &mut Sink<'_>) -> Result<(), Failure> {
    loop {
        let n = rd.available().len();
        if n > 0 {
            let (data, _) = rd.available().split_at(n);
            sink.take(data)?;
            rd.consume(n);
        }
        match rd.fill().await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            // A TLS server that ends such a body without close_notify:
            // browsers and hyper take the bytes that came, so do we.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(Failure::Failed(io_error(&e, "connection"))),
        }
    }
}

/// The position of the first CRLF-ended line in `buf`, and its length
/// with the CRLF.
fn line(buf: &[u8]) -> Option<(usize, usize)> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    Some((end, end + 2))
}

/// Reads one CRLF-ended line and returns its content's length and the
/// whole line's; the bytes stay in the reader until consumed.
async fn next_line(rd: &mut Reader<'_>) -> Result<(usize, usize), Failure> {
    loop {
        if let Some(l) = line(rd.available()) {
            return Ok(l);
        }
        if rd.available().len() > MAX_LINE {
            return Err(Failure::Failed(protocol("a chunk line too long")));
        }
        rd.more("in the middle of a chunked body").await?;
    }
}

fn chunk_size(line: &[u8]) -> Result<u64, Failure> {
    // Extensions (after `;`) carry nothing a load test reads.
    let hex = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let bad = || Failure::Failed(protocol("a chunk size that is not hexadecimal"));
    if hex.is_empty() || hex.len() > 15 {
        return Err(bad());
    }
    let text = std::str::from_utf8(hex).map_err(|_| bad())?;
    u64::from_str_radix(text, 16).map_err(|_| bad())
}

pub(super) async fn read_chunked(rd: &mut Reader<'_>, sink: &mut Sink<'_>) -> Result<(), Failure> {
    loop {
        let (end, len) = next_line(rd).await?;
        let size = chunk_size(&rd.available()[..end])?;
        rd.consume(len);
        if size == 0 {
            // Trailers, if any, up to the empty line.
            loop {
                let (end, len) = next_line(rd).await?;
                rd.consume(len);
                if end == 0 {
                    return Ok(());
                }
            }
        }
        if sink.size.saturating_add(size) > sink.max {
            return Err(Failure::Failed(Error::BodyTooLarge(sink.max)));
        }
        read_length(rd, sink, size).await?;
        let (end, len) = next_line(rd).await?;
        if end != 0 {
            return Err(Failure::Failed(protocol("a chunk longer than its size")));
        }
        rd.consume(len);
    }
}
