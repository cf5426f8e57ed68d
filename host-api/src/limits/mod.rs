//! Per-VU limits: memory, tables and instances ([`Limiter`]); the CPU time
//! an iteration may spend, in guest code and host calls ([`CpuBudget`]);
//! the sizes of what the host takes from a guest ([`sizes`]).

mod budget;
mod clock;

pub use budget::CpuBudget;

use wasmtime::ResourceLimiter;

/// The error a guest's memory growth past its cap traps with; the runner
/// reports such a trap as `memory-limit`.
#[derive(Debug)]
pub struct MemoryCapExceeded {
    /// The cap in bytes.
    pub cap: usize,
    /// The size the guest asked for.
    pub desired: usize,
}

impl std::fmt::Display for MemoryCapExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "memory cap of {} KiB exceeded (the guest asked for {} KiB)",
            self.cap / 1024,
            self.desired / 1024
        )
    }
}

impl std::error::Error for MemoryCapExceeded {}

/// The error a VU traps with when it holds more resource handles than
/// [`sizes::HANDLES`] (or HTTP responses than it may keep); the runner
/// reports it as `resource-limit`.
#[derive(Debug)]
pub struct HandlesExceeded(pub String);

impl std::fmt::Display for HandlesExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HandlesExceeded {}

/// Caps on what one VU's instance may allocate.
#[derive(Clone, Copy, Debug)]
pub struct Limiter {
    /// Bytes of linear memory, per memory.
    pub memory: usize,
    /// Elements per table.
    pub table_elements: usize,
    /// Instances, tables and memories per store.
    pub instances: usize,
    /// Tables per store.
    pub tables: usize,
    /// Memories per store.
    pub memories: usize,
    /// Linear memory the store holds now, bytes (memories only grow).
    pub held: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            // Trap rather than fail the grow: a Rust guest would abort on the
            // failed allocation anyway, and a trap with this error tells the
            // runner why.
            return Err(wasmtime::Error::new(MemoryCapExceeded {
                cap: self.memory,
                desired,
            }));
        }
        self.held += desired.saturating_sub(current);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        self.memories
    }
}

/// The largest values the host takes from a guest. Longer names, tags,
/// log lines and messages are cut, ending in [`sizes::CUT`]; requests over
/// their limits are refused as invalid.
pub mod sizes {
    /// Request, check, metric and connection names, bytes.
    pub const NAME: usize = 256;
    /// Tag keys and values, bytes.
    pub const TAG: usize = 64;
    /// Tags on one measurement.
    pub const TAGS: usize = 8;
    /// One log line, bytes.
    pub const LOG_LINE: usize = 4096;
    /// Lines of one `log` call.
    pub const LOG_LINES: usize = 100;
    /// A panic or iteration error message, bytes.
    pub const MESSAGE: usize = 1024;
    /// Resource handles (responses, connections, subscriptions, WASI
    /// streams) one VU may hold at once; past it the VU ends as
    /// `resource-limit`.
    pub const HANDLES: usize = 10_000;
    /// NATS connections one VU may hold at once.
    pub const NATS_CONNECTIONS: usize = 256;
    /// NATS subscriptions one VU may hold at once.
    pub const SUBSCRIPTIONS: usize = 1_024;
    /// A request URL, bytes.
    pub const URL: usize = 8192;
    /// Headers of one request.
    pub const HEADERS: usize = 100;
    /// All of one request's header names and values, bytes.
    pub const HEADER_BYTES: usize = 64 << 10;
    /// What ends a value that was cut.
    pub const CUT: &str = "…";
}

/// `s` cut to at most `max` bytes, on a character boundary, ending in
/// [`sizes::CUT`] when cut.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max.saturating_sub(sizes::CUT.len());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str(sizes::CUT);
    }
    s
}

/// Public for the runner's own guest-made strings (iteration errors).
pub fn cut(s: String, max: usize) -> String {
    truncate(s, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_values_end_in_the_marker_and_stay_within_the_limit() {
        assert_eq!(truncate("short".into(), 10), "short");
        let t = truncate("x".repeat(300), sizes::NAME);
        assert_eq!(t.len(), sizes::NAME);
        assert!(t.ends_with(sizes::CUT));
        // A multi-byte character is never split.
        let t = truncate("é".repeat(200), 11);
        assert!(t.len() <= 11 && t.ends_with(sizes::CUT), "{t}");
    }
}
