//! Checks what the operating system allows against what a run needs,
//! before any VU starts, so a run fails at once with the setting to change
//! instead of half-way with ENOMEM or EMFILE.

use anyhow::{bail, Result};

use crate::engine::EngineSettings;

/// File descriptors the runner keeps for itself (logs, outputs, runtime).
const FD_RESERVE: u64 = 256;

/// What a run will need of the OS.
#[derive(Clone, Copy, Debug)]
pub struct Needs {
    /// The engine's pools.
    pub engine: EngineSettings,
    /// VUs that may hold network connections (0 if the scenario imports no
    /// networking interface).
    pub connecting_vus: u64,
}

/// Raises the soft open-file limit to the hard limit, then checks the
/// kernel's map count, the open-file limit and the address-space limit.
pub fn check(needs: &Needs) -> Result<()> {
    check_map_count(needs.engine.map_count_needed())?;
    check_files(needs.connecting_vus)?;
    check_address_space(needs.engine.address_space_needed())?;
    Ok(())
}

/// Whether `ulimit -v` (if set) leaves room for `needed` bytes of address
/// space.
pub fn address_space_allows(needed: u64) -> bool {
    rlimit(libc::RLIMIT_AS)
        .is_none_or(|l| l.rlim_cur == libc::RLIM_INFINITY || l.rlim_cur >= needed)
}

fn check_map_count(needed: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string("/proc/sys/vm/max_map_count") else {
        return Ok(()); // Not Linux, or no procfs: nothing to check.
    };
    let Ok(have) = text.trim().parse::<u64>() else {
        return Ok(());
    };
    map_count_fits(needed, have)
}

/// Whether `needed` mappings fit a kernel limit of `have`, with the
/// setting to change when they do not.
fn map_count_fits(needed: u64, have: u64) -> Result<()> {
    if have < needed {
        let suggest = needed.next_power_of_two().max(1 << 20);
        bail!(
            "this many VUs need about {needed} kernel memory mappings but vm.max_map_count is {have}; \
             raise it with `sudo sysctl -w vm.max_map_count={suggest}` or run fewer VUs per runner"
        );
    }
    Ok(())
}

fn rlimit(resource: libc::__rlimit_resource_t) -> Option<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    (unsafe { libc::getrlimit(resource, &mut lim) } == 0).then_some(lim)
}

/// Raises the soft open-file limit to the hard one; returns the limit in
/// force (soft, hard), or None when it is unlimited or cannot be read.
fn open_files() -> Option<(u64, u64)> {
    let mut lim = rlimit(libc::RLIMIT_NOFILE)?;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    (lim.rlim_cur != libc::RLIM_INFINITY).then_some((lim.rlim_cur, lim.rlim_max))
}

/// The files one process of this machine may open (None: no limit).
pub fn open_file_limit() -> Option<u64> {
    open_files().map(|(soft, _)| soft)
}

/// VUs holding a connection each that one process of this machine can
/// run under its open-files limit (None: no limit).
pub fn connections_per_process() -> Option<u64> {
    open_file_limit().map(connections_within)
}

/// VUs holding a connection each that a limit of `files` leaves room for.
fn connections_within(files: u64) -> u64 {
    files.saturating_sub(FD_RESERVE).max(1)
}

/// Processes needed for `connecting_vus` under the open-files limit (1
/// when there is no limit).
pub fn processes_for(connecting_vus: u64) -> u64 {
    connections_per_process().map_or(1, |per| connecting_vus.div_ceil(per).max(1))
}

fn check_files(connecting_vus: u64) -> Result<()> {
    let Some((soft, hard)) = open_files() else {
        return Ok(());
    };
    let needed = connecting_vus + FD_RESERVE;
    if soft < needed {
        let processes = connecting_vus.div_ceil(connections_within(soft));
        bail!(
            "{connecting_vus} VUs that may each hold a connection need about {needed} open files, but this process \
             may open only {soft} (hard limit {hard}); run them in several processes with `--processes {processes}` \
             (or `--processes auto`), or raise the limit with `ulimit -n {needed}` (as root, or in \
             /etc/security/limits.conf)"
        );
    }
    Ok(())
}

fn check_address_space(needed: u64) -> Result<()> {
    let Some(lim) = rlimit(libc::RLIMIT_AS) else {
        return Ok(());
    };
    if lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < needed {
        bail!(
            "this many VUs reserve about {} GiB of address space but `ulimit -v` allows {} GiB; \
             run `ulimit -v unlimited`, lower --memory-limit, or run fewer VUs",
            needed >> 30,
            lim.rlim_cur >> 30
        );
    }
    // x86-64 user space is 128 TiB; leave room for everything else.
    const USER_SPACE: u64 = 100 << 40;
    if needed > USER_SPACE {
        bail!(
            "this many VUs would reserve {} TiB of address space, more than the machine has; \
             lower --memory-limit or run fewer VUs",
            needed >> 40
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_few_mappings_name_the_sysctl_to_raise() {
        // The integration test can only reach this on a kernel whose limit
        // is low; here it is reached whatever the machine's setting.
        assert!(map_count_fits(1_000, 1_000).is_ok());
        let e = map_count_fits(5_000_000, 65_530)
            .expect_err("too many")
            .to_string();
        assert!(e.contains("about 5000000 kernel memory mappings"), "{e}");
        assert!(e.contains("vm.max_map_count is 65530"), "{e}");
        assert!(e.contains("sudo sysctl -w vm.max_map_count=8388608"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}
