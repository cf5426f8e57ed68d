//! One run spread over processes of this machine (`runner run
//! --processes`): real child processes joined over loopback QUIC, against
//! the built-in target, whose own count is the ground truth. The runner
//! runs under a lowered open-files limit, so one process could not hold
//! the VUs' connections.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::Proc;
use common::*;

/// The open-files limit the runner under test gets: 1,000 connected VUs
/// need three processes under it.
const FILES: u64 = 600;

/// `runner run hello-http ARGS` under the lowered limit, marked with `mark`
/// in its environment (which its processes inherit) so the test can find
/// them.
fn runner_under_limit(args: &[&str], mark: &str) -> Command {
    let mut cmd = Command::new(runner());
    cmd.arg("run")
        .arg(component("hello-http"))
        .args(args)
        .env("RUNNER_TEST_MARK", mark)
        // Its own process group, as a shell gives a job: a signal to the
        // group is what Ctrl-C in a terminal sends.
        .process_group(0);
    // SAFETY: setrlimit between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: FILES,
                rlim_max: FILES,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Pids of the processes whose environment holds `mark`.
fn marked(mark: &str) -> Vec<u32> {
    let needle = format!("RUNNER_TEST_MARK={mark}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .collect()
}

/// Waits up to `limit` until no process holds `mark`; returns those left.
fn wait_gone(mark: &str, limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let left = marked(mark);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn mark(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

#[test]
fn vus_past_the_open_files_limit_run_in_processes_and_add_up_to_the_targets_count() {
    let target = Target::start();
    let base = format!("BASE_URL={}", target.url);
    let mark = mark("limit");
    let common = [
        "--vus",
        "1000",
        "-d",
        "3s",
        "--ramp-up",
        "0s",
        "-e",
        &base,
        "-e",
        "THINK_MS=200",
    ];

    // One process cannot: the error names the way out.
    let mut alone = Proc::spawn(runner_under_limit(&common, &mark));
    let (code, _) = alone.wait(Duration::from_secs(60));
    assert_eq!(code, Some(1), "{}", alone.log());
    assert!(
        alone.log().contains("--processes 3"),
        "the error suggests the processes that fit: {}",
        alone.log()
    );
    assert_eq!(target.requests(), 0, "nothing ran");

    let out = scratch("processes-limit").join("r.json");
    let json = format!("json={}", out.display());
    let mut args = common.to_vec();
    args.extend(["--processes", "auto", "--quiet", "--out", &json]);
    let mut run = Proc::spawn(runner_under_limit(&args, &mark));
    let (code, _) = run.wait(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{}", run.log());
    let s = summary(&out);
    let total = total_requests(&s);
    // 1,000 VUs, one request each 200 ms, for 3 s.
    assert!(total > 5_000, "{total}");
    assert_eq!(total, target.requests(), "the merged count is the target's");
    let ws = s["meta"]["workers"].as_array().expect("workers");
    assert_eq!(ws.len(), 3, "{ws:?}");
    for w in ws {
        let vus = w["vus"].as_u64().expect("vus");
        assert!(
            (333..=334).contains(&vus),
            "each process holds a third: {w}"
        );
        assert!(
            w["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("process-")),
            "{w}"
        );
    }
    assert_eq!(s["iterations"]["failed"].as_u64(), Some(0), "{}", run.log());
    assert_eq!(
        wait_gone(&mark, Duration::from_secs(5)),
        Vec::<u32>::new(),
        "the processes left with the run"
    );
}

#[test]
fn ctrl_c_stops_a_run_in_processes_in_order_and_a_killed_runner_takes_them_along() {
    let target = Target::start();
    let base = format!("BASE_URL={}", target.url);
    let mark = mark("signals");
    let out = scratch("processes-signals").join("r.json");
    let json = format!("json={}", out.display());
    let args = [
        "--vus",
        "20",
        "-d",
        "60s",
        "--ramp-up",
        "0s",
        "-e",
        &base,
        "-e",
        "THINK_MS=20",
        "--processes",
        "2",
        "--quiet",
        "--out",
        &json,
    ];

    // Ctrl-C in a terminal signals the whole group: the processes are out
    // of it, so the coordinator alone stops the run and gets every last
    // snapshot.
    let mut run = Proc::spawn(runner_under_limit(&args, &mark));
    run.wait_line("starting 2 worker(s)", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: a signal to the group of the process we started.
    unsafe { libc::kill(-(run.child.id() as i32), libc::SIGINT) };
    let (code, _) = run.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{}", run.log());
    let s = summary(&out);
    let total = total_requests(&s);
    assert!(total > 500, "{total}");
    assert_eq!(
        total,
        target.requests(),
        "no process's last results were lost"
    );
    assert_eq!(wait_gone(&mark, Duration::from_secs(5)), Vec::<u32>::new());

    // A runner killed outright leaves no process making load.
    let mut run = Proc::spawn(runner_under_limit(&args, &mark));
    run.wait_line("starting 2 worker(s)", Duration::from_secs(60));
    assert_eq!(marked(&mark).len(), 3, "the runner and its two processes");
    run.signal(libc::SIGKILL);
    let _ = run.wait(Duration::from_secs(10));
    assert_eq!(
        wait_gone(&mark, Duration::from_secs(10)),
        Vec::<u32>::new(),
        "the processes died with the runner"
    );
    let after = target.requests();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(target.requests(), after, "nothing makes load any more");
}
