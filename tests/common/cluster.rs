//! Helpers for the tests of distributed runs: a coordinator (`runner run
//! --workers K`) and workers (`runner join`) as real processes, their logs
//! read as they go, and network namespaces for partitions.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::runner;

/// A process whose stderr is collected line by line.
pub struct Proc {
    /// The process.
    pub child: Child,
    log: Arc<Mutex<Vec<String>>>,
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl Proc {
    /// Spawns `cmd` (stdin closed), collecting stdout and stderr.
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let log = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut out = child.stdout.take().expect("stdout");
        let stdout = Some(std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut s);
            s
        }));
        Proc { child, log, stdout }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits up to `limit` for a log line containing `needle`; returns it.
    pub fn wait_line(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `limit` for the process to exit; returns its code and
    /// stdout.
    pub fn wait(&mut self, limit: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "did not exit within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = self
            .stdout
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        (status.code(), out)
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A coordinator and how to join it.
pub struct Coordinator {
    /// The process.
    pub proc: Proc,
    /// `HOST:PORT` to join.
    pub addr: String,
    /// The token.
    pub token: String,
}

impl Coordinator {
    /// `runner run COMPONENT --workers K ... --listen LISTEN`, waiting for
    /// its join line.
    pub fn start(component: &str, listen: &str, args: &[&str]) -> Coordinator {
        let mut cmd = Command::new(runner());
        cmd.args(["run", component, "--listen", listen])
            .args(args)
            .env_remove("RUNNER_SECRET");
        let proc = Proc::spawn(cmd);
        let line = proc.wait_line("runner join --coordinator", Duration::from_secs(30));
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = |flag: &str| {
            let i = words.iter().position(|w| *w == flag)?;
            words.get(i + 1).map(|w| (*w).to_owned())
        };
        Coordinator {
            addr: at("--coordinator").expect("--coordinator in the join line"),
            // None with a CA.
            token: at("--token").unwrap_or_default(),
            proc,
        }
    }
}

/// `runner join` against `addr` with `token`, named `name`.
pub fn worker(addr: &str, token: &str, name: &str, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(runner());
    cmd.args([
        "join",
        "--coordinator",
        addr,
        "--token",
        token,
        "--name",
        name,
    ])
    .args(extra);
    Proc::spawn(cmd)
}

/// A network namespace with a veth link to this one: the namespace side
/// is `10.X.0.2`, this side `10.X.0.1` and `10.X.0.3`. Deleted on drop.
pub struct Netns {
    /// The namespace's name.
    pub name: String,
    host: String,
    /// The octet `X`.
    pub net: u8,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {} failed (the partition tests need root): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// Creates it (as root).
    pub fn create(tag: &str, net: u8) -> Netns {
        let name = format!("rt-{tag}-{}", std::process::id() % 100_000);
        let host = format!("vh{}", std::process::id() % 100_000);
        let peer = format!("vp{}", std::process::id() % 100_000);
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host]).output();
        ip(&["netns", "add", &name]);
        let ns = Netns {
            name: name.clone(),
            host: host.clone(),
            net,
        };
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &name]);
        ip(&["addr", "add", &format!("10.{net}.0.1/24"), "dev", &host]);
        ip(&["addr", "add", &format!("10.{net}.0.3/24"), "dev", &host]);
        ip(&["link", "set", &host, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("10.{net}.0.2/24"),
            "dev",
            &peer,
        ]);
        ip(&["-n", &name, "link", "set", &peer, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ns
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Cuts (or heals) the link between the namespace's `10.X.0.2` and
    /// this side's `addr`, both ways, leaving the rest of the link alone.
    pub fn cut(&self, addr: &str, cut: bool) {
        let verb = if cut { "add" } else { "del" };
        ip(&[
            "-n",
            &self.name,
            "route",
            verb,
            "blackhole",
            &format!("{addr}/32"),
        ]);
        let far = format!("10.{}.0.2/32", self.net);
        let near = format!("{addr}/32");
        ip(&[
            "rule",
            verb,
            "from",
            &near,
            "to",
            &far,
            "blackhole",
            "priority",
            "100",
        ]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let rule = format!("10.{}.0.2/32", self.net);
        let _ = Command::new("ip")
            .args(["rule", "del", "to", &rule, "blackhole", "priority", "100"])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host])
            .output();
    }
}

/// The hello-http component's path, as the coordinator's argument.
pub fn hello() -> String {
    super::component("hello-http")
        .to_str()
        .expect("a UTF-8 path")
        .to_owned()
}

/// Workers `w1`..`wN` joining `coord`, each with `extra` flags.
pub fn workers(coord: &Coordinator, n: usize, extra: &[&str]) -> Vec<Proc> {
    (1..=n)
        .map(|i| worker(&coord.addr, &coord.token, &format!("w{i}"), extra))
        .collect()
}
