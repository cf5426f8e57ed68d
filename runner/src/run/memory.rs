//! The runner's own memory ceiling (`--max-memory`): a run whose process
//! nears it stops starting iterations and ends gracefully, saying why,
//! rather than being killed by the kernel with its results unwritten.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often the runner's memory is read: often enough that thousands of
/// VUs growing together cannot overshoot far between two looks.
pub const EVERY: Duration = Duration::from_millis(100);

/// Share of the machine's memory used when `--max-memory` is not given.
const DEFAULT_SHARE: f64 = 0.8;

/// The ceiling in force: `given`, or a share of the machine's (or the
/// container's) memory; None when neither is known.
pub fn ceiling(given: Option<u64>) -> Option<u64> {
    given.or_else(|| machine().map(|m| (m as f64 * DEFAULT_SHARE) as u64))
}

/// Gives the heap memory freed so far back to the system. Compiling a big
/// component (CPython: hundreds of MiB for Cranelift) leaves the allocator
/// holding pages it no longer uses, which would otherwise count against
/// `--max-memory` for the whole run.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of glibc's arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The largest [`rss`] read so far.
static PEAK: AtomicU64 = AtomicU64::new(0);

/// The memory this process holds, bytes: its private pages and its
/// file-backed ones (the binary, libraries). Not the copy-on-write memory
/// images the VUs share: every VU maps them, so the kernel's resident size
/// counts them once per VU (6 MiB × VUs for a Python scenario) while they
/// exist once; the pages a VU writes are private and counted.
pub fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    let bytes = (kib("RssAnon:")? + kib("RssFile:")?) * 1024;
    PEAK.fetch_max(bytes, Ordering::Relaxed);
    Some(bytes)
}

/// The most memory this process has held, as [`rss`] counts it, over
/// every reading so far and one now.
pub fn peak_rss() -> Option<u64> {
    rss()?;
    Some(PEAK.load(Ordering::Relaxed))
}

/// Memory the run may count on: the machine's, or its cgroup's limit if
/// lower.
fn machine() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let total = total_kib * 1024;
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    Some(cgroup.map_or(total, |c| c.min(total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_the_machine() {
        let rss = rss().expect("rss");
        assert!(rss > 1 << 20, "{rss}");
        let default = ceiling(None).expect("machine memory");
        assert!(default > rss);
        assert_eq!(ceiling(Some(5)), Some(5));
        assert!(peak_rss().expect("peak") >= rss);
    }
}
