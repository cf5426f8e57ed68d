//! Guest output: stdout and stderr of a VU become log lines prefixed with
//! the VU id, through a shared rate limit so thousands of VUs cannot flood
//! the runner's output.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use crate::bindings::runner::scenario::types::Level;

/// Longest line kept; longer output is split.
const MAX_LINE: usize = crate::limits::sizes::LOG_LINE;

/// A shared budget of guest log lines per second; lines over it are counted
/// and reported as suppressed.
#[derive(Debug)]
pub struct LogLimit {
    per_second: u64,
    epoch: Instant,
    window: AtomicU64,
    used: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimit {
    /// Allows `per_second` guest log lines per second across all VUs.
    pub fn new(per_second: u64) -> Self {
        Self {
            per_second,
            epoch: Instant::now(),
            window: AtomicU64::new(0),
            used: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Lines suppressed so far.
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }

    fn admit(&self) -> bool {
        let second = self.epoch.elapsed().as_secs();
        if self.window.swap(second, Ordering::Relaxed) != second {
            self.used.store(0, Ordering::Relaxed);
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < self.per_second {
            true
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Writes one guest log line if the budget allows.
    pub fn emit(&self, vu: u32, level: Level, line: &str) {
        if !self.admit() {
            return;
        }
        match level {
            Level::Trace => tracing::trace!(target: "guest", "vu {vu}: {line}"),
            Level::Debug => tracing::debug!(target: "guest", "vu {vu}: {line}"),
            Level::Info => tracing::info!(target: "guest", "vu {vu}: {line}"),
            Level::Warn => tracing::warn!(target: "guest", "vu {vu}: {line}"),
            Level::Error => tracing::error!(target: "guest", "vu {vu}: {line}"),
        }
    }
}

/// Which standard stream a [`LogStream`] stands for.
#[derive(Clone, Copy, Debug)]
pub enum Which {
    /// stdout: logged at info level.
    Stdout,
    /// stderr: logged at warn level.
    Stderr,
}

/// A WASI output stream that turns a VU's output into log lines.
#[derive(Clone)]
pub struct LogStream {
    vu: u32,
    which: Which,
    limit: Arc<LogLimit>,
    // Shared by every writer the guest opens on this stream, so a line
    // written in pieces stays one line.
    pending: Arc<Mutex<Vec<u8>>>,
}

impl LogStream {
    /// The stream `which` of VU `vu`.
    pub fn new(vu: u32, which: Which, limit: Arc<LogLimit>) -> Self {
        Self {
            vu,
            which,
            limit,
            pending: Arc::default(),
        }
    }

    fn write(&self, buf: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for &b in buf {
            if b == b'\n' || pending.len() >= MAX_LINE {
                self.flush_line(&pending);
                pending.clear();
                if b == b'\n' {
                    continue;
                }
            }
            pending.push(b);
        }
    }

    fn flush_line(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let level = match self.which {
            Which::Stdout => Level::Info,
            Which::Stderr => Level::Warn,
        };
        self.limit.emit(self.vu, level, text.trim_end_matches('\r'));
    }
}

impl Drop for LogStream {
    fn drop(&mut self) {
        // The last clone flushes an unterminated last line.
        if Arc::strong_count(&self.pending) == 1 {
            let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if !pending.is_empty() {
                self.flush_line(&pending);
            }
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
