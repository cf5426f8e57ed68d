//! Giving back the pages of a VU's fiber stack that a sleeping VU cannot
//! be using.
//!
//! Host calls run on the VU's fiber stack. A request (connect, TLS, the
//! HTTP exchange) reaches a few pages deeper than a sleeping VU's frames,
//! and the kernel keeps every page once touched: 12 of a connected VU's
//! 16 resident KiB of stack. Everything below the current frame is dead
//! while the VU sleeps, so a long sleep hands those pages back
//! (`MADV_DONTNEED`); the next request takes them again as fresh zero
//! pages, a fault each.

/// Sleeps at least this long release the stack: shorter ones would pay a
/// syscall and a few page faults per iteration for memory held briefly.
pub const RELEASE_FROM: std::time::Duration = std::time::Duration::from_millis(50);

/// Bytes below the releasing frame that stay: the `madvise` call's own
/// frame (a return address; glibc's wrapper is a bare syscall) with a
/// wide margin. The frames the VU then suspends with land below it, on a
/// fresh page.
const LIVE_MARGIN: usize = 1 << 10;

/// Bytes released below [`LIVE_MARGIN`]: deeper than any host call goes
/// (the deepest, a TLS handshake, boxes its state on the heap).
///
/// A VU's fiber stack must reach at least `RELEASE_SPAN + LIVE_MARGIN`
/// below any frame that sleeps, or the range would cover the guard page
/// and the top of the next stack in the pool. The engine's stack is 1 MiB;
/// it budgets 512 KiB for the guest (past that, a stack-overflow trap)
/// and 256 KiB for host frames around it, so a sleep is never deeper
/// than 768 KiB; the engine checks this bound at compile time against
/// [`min_stack`].
const RELEASE_SPAN: usize = 128 << 10;

/// Stack a VU's fiber needs below its deepest sleeping frame for
/// [`release`] to stay inside it, bytes.
pub const fn min_stack() -> usize {
    // Rounding the range's top down to a page moves it at most one page
    // lower; 64 KiB covers the largest page size Linux uses.
    RELEASE_SPAN + LIVE_MARGIN + (64 << 10)
}

/// Releases the dead part of the calling thread's stack below this frame.
///
/// Must run on a stack that reaches [`min_stack`] bytes below the caller,
/// as a VU's fiber does (see [`RELEASE_SPAN`]).
#[inline(never)]
pub fn release() {
    let marker = 0u8;
    let here = std::hint::black_box(std::ptr::addr_of!(marker)) as usize;
    let page = page_size();
    let end = here.saturating_sub(LIVE_MARGIN) & !(page - 1);
    let start = end.saturating_sub(RELEASE_SPAN);
    if start == 0 {
        return;
    }
    // SAFETY: [start, end) lies below this frame by LIVE_MARGIN, on the
    // calling stack (the caller's contract), so nothing live is in it: a
    // stack holds only frames above its stack pointer. MADV_DONTNEED on
    // private anonymous memory replaces the pages with zero-fill ones;
    // memory a later frame touches is written before it is read. A
    // failure (an unmapped part) changes nothing and is ignored.
    unsafe {
        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
    }
}

fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(n)
            .ok()
            .filter(|p| p.is_power_of_two())
            .unwrap_or(4096)
    })
}

#[cfg(test)]
mod tests {
    /// Pages of `[start, start + len)` the kernel holds.
    fn resident(start: usize, len: usize) -> usize {
        let page = super::page_size();
        let mut map = vec![0u8; len / page];
        // SAFETY: `map` has one byte per page of the page-aligned range.
        let rc = unsafe { libc::mincore(start as *mut libc::c_void, len, map.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore");
        map.iter().filter(|&&b| b & 1 == 1).count()
    }

    /// Pages a deep call touched are given back; the frame that released
    /// them reads its own locals unchanged.
    #[test]
    fn release_gives_back_dead_pages_only() {
        let handle = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let live = [7u8; 4096];
                let here = std::hint::black_box(std::ptr::addr_of!(live)) as usize;
                let page = super::page_size();
                let (start, len) = ((here & !(page - 1)) - (96 << 10), 64 << 10);
                let pages = len / page;
                deep(100);
                let before = resident(start, len);
                super::release();
                let after = resident(start, len);
                let intact = std::hint::black_box(&live).iter().all(|&b| b == 7);
                (before, after, intact, pages)
            })
            .expect("thread");
        let (before, after, intact, pages) = handle.join().expect("join");
        assert_eq!(before, pages, "the deep call touched the range");
        assert_eq!(after, 0, "released");
        assert!(intact, "live frames kept");
    }

    #[inline(never)]
    fn deep(n: u32) -> u8 {
        let buf = std::hint::black_box([n as u8; 1024]);
        if n == 0 {
            buf[0]
        } else {
            deep(n - 1).wrapping_add(buf[7])
        }
    }
}
