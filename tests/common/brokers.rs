//! Real message brokers for the tests: mosquitto and nats-server (both
//! from Debian, installed by scripts/setup.sh), each started on free
//! loopback ports in a scratch directory and killed when dropped. Their own
//! counters are the ground truth the tests compare the runner against:
//! mosquitto's `$SYS` topics and nats-server's monitoring endpoint.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A self-signed certificate for 127.0.0.1 and localhost, written as
/// `cert.pem` and `key.pem` in `dir`; clients need `--insecure`.
fn self_signed(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let c = rcgen::generate_simple_self_signed(names).expect("make a certificate");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).expect("write cert.pem");
    std::fs::write(&key, c.signing_key.serialize_pem()).expect("write key.pem");
    (cert, key)
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address").port()
}

fn wait_for_port(port: u16, what: &str) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what} did not start listening on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `program` with the hard limit of open files as its soft limit
/// (a broker holding 1,000 connections needs more than the usual 1,024),
/// stdout and stderr appended to `log`.
fn spawn(program: &str, args: &[String], log: &PathBuf) -> Child {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the broker log");
    let err = out.try_clone().expect("clone the log handle");
    let script = format!("ulimit -n \"$(ulimit -Hn)\" 2>/dev/null; exec {program} \"$@\"");
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("start {program} (installed by scripts/setup.sh): {e}"))
}

/// A mosquitto broker on a free loopback port.
pub struct Mosquitto {
    child: Option<Child>,
    /// Its MQTT port.
    pub port: u16,
    /// Where the `$SYS` observer connects: a plain-MQTT port.
    observer_port: u16,
    dir: PathBuf,
    conf: PathBuf,
}

impl Mosquitto {
    /// A broker that lets anyone in.
    pub fn start(test: &str) -> Self {
        Self::start_with(test, "allow_anonymous true\n")
    }

    /// A broker that only accepts `user` with `password`.
    pub fn start_with_password(test: &str, user: &str, password: &str) -> Self {
        let dir = super::scratch(&format!("{test}-auth"));
        let file = dir.join("passwd");
        let ok = Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(&file)
            .args([user, password])
            .status()
            .expect("run mosquitto_passwd");
        assert!(ok.success(), "mosquitto_passwd failed");
        Self::start_with(
            test,
            &format!("allow_anonymous false\npassword_file {}\n", file.display()),
        )
    }

    /// A broker that speaks MQTT over TLS only (`mqtts://`), with a
    /// self-signed certificate.
    pub fn start_tls(test: &str) -> Self {
        let dir = super::scratch(&format!("{test}-certs"));
        let (cert, key) = self_signed(&dir);
        // A plain listener beside it, for the `$SYS` observer.
        let plain = free_port();
        let tls = format!(
            "allow_anonymous true\ncertfile {}\nkeyfile {}\nlistener {plain} 127.0.0.1\n",
            cert.display(),
            key.display()
        );
        let mut m = Self::start_with(test, &tls);
        m.observer_port = plain;
        m
    }

    fn start_with(test: &str, auth: &str) -> Self {
        let dir = super::scratch(&format!("{test}-mosquitto"));
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        // $SYS every second; no persistence, so a restart starts from zero.
        let text = format!(
            "listener {port} 127.0.0.1\n{auth}sys_interval 1\nmax_connections -1\npersistence false\nlog_type error\nlog_type warning\nlog_type notice\nconnection_messages true\n"
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let mut m = Self {
            child: None,
            port,
            observer_port: port,
            dir,
            conf,
        };
        m.restart();
        m
    }

    /// `mqtt://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Kills the broker at once (SIGKILL): clients see their connections
    /// drop, with no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker (again) on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let args = vec!["-c".to_owned(), self.conf.display().to_string()];
        self.child = Some(spawn("mosquitto", &args, &self.dir.join("log")));
        wait_for_port(self.port, "mosquitto");
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Reads `$SYS/broker/...` counters (names relative to
    /// `$SYS/broker/`): the last value the broker publishes while an
    /// observer listens for 2.5 s, so at least two `sys_interval` ticks
    /// after now (the retained value an observer gets first can be older).
    /// The observer is itself a client: `clients/connected` may count it;
    /// `publish/messages/sent` is given without what it sent the observer.
    pub fn sys(&self, names: &[&str]) -> HashMap<String, u64> {
        let id = format!("observer-{}", std::process::id());
        let opts = rumqttc::MqttOptions::new(id, "127.0.0.1", self.observer_port);
        let (client, mut conn) = rumqttc::Client::new(opts, 10);
        for n in names {
            client
                .subscribe(format!("$SYS/broker/{n}"), rumqttc::QoS::AtMostOnce)
                .expect("subscribe to $SYS");
        }
        let mut found = HashMap::new();
        let mut seen = 0u64;
        let listen = Instant::now() + Duration::from_millis(2_500);
        let give_up = Instant::now() + Duration::from_secs(10);
        while (Instant::now() < listen || found.len() < names.len()) && Instant::now() < give_up {
            match conn.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) => {
                    let name = p.topic.trim_start_matches("$SYS/broker/").to_owned();
                    let text = String::from_utf8_lossy(&p.payload);
                    if let Ok(mut v) = text.trim().parse::<u64>() {
                        if name == "publish/messages/sent" {
                            // Leave out the $SYS messages sent to this
                            // observer before this value was taken.
                            v = v.saturating_sub(seen);
                        }
                        found.insert(name, v);
                    }
                    seen += 1;
                }
                Ok(Err(e)) => panic!("observer connection to mosquitto failed: {e}"),
                _ => {}
            }
        }
        let _ = client.disconnect();
        assert_eq!(
            found.len(),
            names.len(),
            "mosquitto did not publish all of {names:?}: {found:?}"
        );
        found
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A nats-server on free loopback ports, with its monitoring endpoint.
pub struct Nats {
    child: Option<Child>,
    /// Its client port.
    pub port: u16,
    /// Its HTTP monitoring port.
    pub monitor: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl Nats {
    /// A server that lets anyone in.
    pub fn start(test: &str) -> Self {
        Self::start_with(test, &[])
    }

    /// A server with JetStream enabled (storage in the scratch directory).
    pub fn start_jetstream(test: &str) -> Self {
        let dir = super::scratch(&format!("{test}-js"));
        Self::start_with(
            test,
            &["-js".into(), "-sd".into(), dir.display().to_string()],
        )
    }

    /// A server that requires TLS, with a self-signed certificate.
    pub fn start_tls(test: &str) -> Self {
        let dir = super::scratch(&format!("{test}-certs"));
        let (cert, key) = self_signed(&dir);
        let args = [
            "--tls".to_owned(),
            "--tlscert".to_owned(),
            cert.display().to_string(),
            "--tlskey".to_owned(),
            key.display().to_string(),
        ];
        Self::start_with(test, &args)
    }

    /// A server that only accepts `user` with `password`.
    pub fn start_with_password(test: &str, user: &str, password: &str) -> Self {
        Self::start_with(
            test,
            &[
                "--user".into(),
                user.into(),
                "--pass".into(),
                password.into(),
            ],
        )
    }

    fn start_with(test: &str, extra: &[String]) -> Self {
        let dir = super::scratch(&format!("{test}-nats"));
        let port = free_port();
        let monitor = free_port();
        let mut args: Vec<String> = [
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            &monitor.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend_from_slice(extra);
        let mut n = Self {
            child: None,
            port,
            monitor,
            dir,
            args,
        };
        n.restart();
        n
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server (again) on the same ports.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Some(spawn("nats-server", &self.args, &self.dir.join("log")));
        wait_for_port(self.port, "nats-server");
        wait_for_port(self.monitor, "nats-server monitoring");
    }

    /// A monitoring endpoint (`varz`, `connz`, `jsz?streams=true`) as JSON.
    pub fn monitoring(&self, path: &str) -> serde_json::Value {
        let mut s = TcpStream::connect(("127.0.0.1", self.monitor)).expect("connect to monitoring");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(
            s,
            "GET /{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read");
        let body = text.split_once("\r\n\r\n").expect("HTTP body").1;
        // The body may be chunked; the JSON object is between the outer braces.
        let start = body.find('{').expect("JSON start");
        let end = body.rfind('}').expect("JSON end");
        serde_json::from_str(&body[start..=end]).expect("monitoring JSON")
    }

    /// A counter from `/varz` (`in_msgs`, `out_msgs`, `connections`, ...).
    pub fn varz(&self, key: &str) -> u64 {
        self.monitoring("varz")[key]
            .as_u64()
            .unwrap_or_else(|| panic!("varz has no {key}"))
    }

    /// Sends one request over the plain NATS protocol (for setting up
    /// JetStream streams) and returns the reply's payload.
    pub fn request(&self, subject: &str, payload: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to nats");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(
            s,
            "CONNECT {{\"verbose\":false}}\r\nSUB _INBOX.setup 1\r\nPUB {subject} _INBOX.setup {}\r\n{payload}\r\nPING\r\n",
            payload.len()
        )
        .expect("write");
        // Read until one whole `MSG <subject> <sid> <len>\r\n<payload>\r\n`
        // frame is in; INFO, PONG and +OK may come before or after it.
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(payload) = reply_payload(&data) {
                return payload;
            }
            let text = || String::from_utf8_lossy(&data).into_owned();
            assert!(
                Instant::now() < deadline,
                "no reply to {subject}: {}",
                text()
            );
            let n = s.read(&mut buf).expect("read from nats");
            assert!(n > 0, "nats closed the connection: {}", text());
            data.extend_from_slice(&buf[..n]);
        }
    }
}

/// The payload of the first complete `MSG _INBOX.setup` frame in `data`.
fn reply_payload(data: &[u8]) -> Option<String> {
    let find = |from: usize, what: &[u8]| {
        data.get(from..)?
            .windows(what.len())
            .position(|w| w == what)
            .map(|i| from + i)
    };
    let start = find(0, b"MSG _INBOX.setup ")?;
    let header_end = find(start, b"\r\n")?;
    let header = std::str::from_utf8(&data[start..header_end]).ok()?;
    let len: usize = header.split_whitespace().last()?.parse().ok()?;
    let payload = data.get(header_end + 2..header_end + 2 + len)?;
    Some(String::from_utf8_lossy(payload).trim().to_owned())
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}
