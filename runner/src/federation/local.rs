//! Worker processes on this machine (`runner run --processes N`): the
//! coordinator starts N copies of this binary as `runner join --local`,
//! each with its own open-files limit and its own scheduler, and they
//! join it over loopback QUIC like any worker. Their log lines are
//! forwarded with the process's name in front; they leave when the run
//! is over, and die with the coordinator (`PR_SET_PDEATHSIG`).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::token::Token;

/// How long the processes may take to leave once the run is over.
const LEAVE: Duration = Duration::from_secs(5);

/// How long a process asked to stop (SIGTERM) has before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// The worker processes started for a run.
pub struct LocalWorkers {
    /// Why each process exited, as they exit.
    exits: mpsc::UnboundedReceiver<Exit>,
    /// Still running.
    running: usize,
    /// Asks every process to stop.
    stop: CancellationToken,
}

/// A process that exited.
#[derive(Debug)]
pub struct Exit {
    /// Its name (`process-N`).
    pub name: String,
    /// How it exited, with its last log line when it failed.
    pub why: String,
    /// Whether it exited with status 0.
    pub clean: bool,
}

/// How the processes are started.
pub struct Launch {
    /// Processes to start.
    pub count: usize,
    /// The coordinator's address on loopback.
    pub coordinator: SocketAddr,
    /// The token they join with.
    pub token: Token,
}

impl LocalWorkers {
    /// Starts the processes.
    pub fn spawn(launch: &Launch) -> Result<Self> {
        let exe = std::env::current_exe().context("cannot find the runner's own binary")?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Each process gets its share of the cores, so N processes do not
        // run N times the threads the machine has.
        let threads = (cores / launch.count).max(1);
        let log = std::env::var("RUNNER_LOG")
            .unwrap_or_else(|_| "warn,guest=trace,quinn_udp=error,quinn=warn".into());
        let (tx, exits) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        for i in 1..=launch.count {
            let name = format!("process-{i}");
            let mut cmd = tokio::process::Command::new(&exe);
            cmd.arg("--no-color")
                .args(["join", "--local", "--capacity", "1", "--name", &name])
                .arg("--coordinator")
                .arg(launch.coordinator.to_string())
                .env("RUNNER_JOIN_TOKEN", launch.token.to_string())
                .env("RUNNER_LOG", &log)
                .env("TOKIO_WORKER_THREADS", threads.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            // SAFETY: between fork and exec only async-signal-safe calls:
            // prctl and setpgid.
            unsafe {
                cmd.pre_exec(|| {
                    // Die with the coordinator, whatever kills it.
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // Out of the terminal's process group: Ctrl-C reaches
                    // the coordinator alone, which stops the run in order
                    // (a worker stopped by the signal directly would drop
                    // its last snapshots).
                    if libc::setpgid(0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let mut child = cmd
                .spawn()
                .with_context(|| format!("cannot start {name} ({})", exe.display()))?;
            let last = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
            if let Some(out) = child.stdout.take() {
                tokio::spawn(forward(out, name.clone(), None));
            }
            if let Some(err) = child.stderr.take() {
                tokio::spawn(forward(err, name.clone(), Some(last.clone())));
            }
            tokio::spawn(watch(child, name, last, stop.clone(), tx.clone()));
        }
        Ok(Self {
            exits,
            running: launch.count,
            stop,
        })
    }

    /// The next process to exit (pending forever once all have).
    pub async fn next_exit(&mut self) -> Exit {
        if self.running > 0 {
            if let Some(e) = self.exits.recv().await {
                self.running -= 1;
                return e;
            }
        }
        std::future::pending().await
    }

    /// Waits for the processes to leave after the run, then stops those
    /// that have not; returns the exits that were not clean.
    pub async fn finish(mut self) -> Vec<Exit> {
        let mut failed = Vec::new();
        let deadline = tokio::time::Instant::now() + LEAVE;
        while self.running > 0 {
            match tokio::time::timeout_at(deadline, self.next_exit()).await {
                Ok(e) if !e.clean => failed.push(e),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if self.running > 0 {
            self.stop.cancel();
            while self.running > 0 {
                let e = self.next_exit().await;
                if !e.clean {
                    failed.push(e);
                }
            }
        }
        failed
    }
}

impl Drop for LocalWorkers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Waits for `child` to exit (asking it to stop when `stop` fires) and
/// reports how.
async fn watch(
    mut child: tokio::process::Child,
    name: String,
    last: std::sync::Arc<std::sync::Mutex<String>>,
    stop: CancellationToken,
    tx: mpsc::UnboundedSender<Exit>,
) {
    let status = tokio::select! {
        s = child.wait() => s,
        _ = stop.cancelled() => {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill sends a signal to the process we started.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            match tokio::time::timeout(TERM_GRACE, child.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            }
        }
    };
    let (clean, why) = match status {
        Ok(s) if s.success() => (true, "exited".to_owned()),
        Ok(s) => {
            let line = last.lock().map(|l| l.clone()).unwrap_or_default();
            let how = match s.code() {
                Some(c) => format!("exited with status {c}"),
                None => format!("was killed ({s})"),
            };
            if line.is_empty() {
                (false, how)
            } else {
                (false, format!("{how}: {line}"))
            }
        }
        Err(e) => (false, format!("could not be waited for: {e}")),
    };
    let _ = tx.send(Exit { name, why, clean });
}

/// Copies a process's output to this one's stderr, line by line, with its
/// name in front; keeps the last line in `last`.
async fn forward(
    from: impl AsyncRead + Unpin,
    name: String,
    last: Option<std::sync::Arc<std::sync::Mutex<String>>>,
) {
    let mut lines = BufReader::new(from).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("{name}: {line}");
        if let Some(last) = &last {
            if let Ok(mut l) = last.lock() {
                line.trim().clone_into(&mut l);
            }
        }
    }
}
