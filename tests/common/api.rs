//! Helpers for the tests of the HTTP API: a real `runner serve` process,
//! requests with their status and JSON, multipart uploads, and a reader of
//! the Server-Sent Events stream on a thread of its own.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::runner;

/// A `runner serve` process on a free loopback port.
pub struct Agent {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Agent {
    /// Starts `runner serve --listen 127.0.0.1:0` plus `extra`.
    pub fn start(extra: &[&str]) -> Agent {
        Self::start_on("127.0.0.1:0", extra)
    }

    /// Starts `runner serve --listen ADDR` plus `extra`.
    pub fn start_on(addr: &str, extra: &[&str]) -> Agent {
        let mut child = Command::new(runner())
            .args(["serve", "--listen", addr])
            .args(extra)
            .env_remove("RUNNER_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start runner serve");
        let mut err = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the agent's address");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("no address line from runner serve: {line:?}"))
            .replace("0.0.0.0", "127.0.0.1");
        Agent {
            child,
            url,
            stderr: Some(stderr),
        }
    }

    /// Stops the agent with SIGTERM and returns its log.
    pub fn stop(mut self) -> (Option<i32>, String) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let code = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s.code();
            }
            assert!(Instant::now() < deadline, "runner serve ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = self
            .stderr
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        (code, log)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An answer: status, body, and the body as JSON (null if it is not).
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// `Location`, if any.
    pub location: Option<String>,
    /// The body.
    pub text: String,
    /// The body as JSON.
    pub json: serde_json::Value,
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build()
}

fn answer(r: Result<ureq::Response, ureq::Error>) -> Answer {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = resp.status();
    let content_type = resp.header("content-type").unwrap_or_default().to_owned();
    let location = resp.header("location").map(str::to_owned);
    let text = resp.into_string().expect("body");
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    Answer {
        status,
        content_type,
        location,
        text,
        json,
    }
}

/// `METHOD url` with an optional JSON body and bearer token.
pub fn call(
    method: &str,
    url: &str,
    body: Option<&serde_json::Value>,
    token: Option<&str>,
) -> Answer {
    let mut req = agent().request(method, url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    answer(match body {
        Some(b) => req.send_json(b.clone()),
        None => req.call(),
    })
}

/// GET `url`.
pub fn get(url: &str) -> Answer {
    call("GET", url, None, None)
}

/// A multipart/form-data body of `parts` (name, file name, content type,
/// bytes) and its content type.
pub fn multipart(parts: &[(&str, Option<&str>, &str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "----runner-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, file, ctype, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match file {
            Some(f) => {
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n")
            }
            None => format!("Content-Disposition: form-data; name=\"{name}\"\r\n"),
        };
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(format!("Content-Type: {ctype}\r\n\r\n").as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// POSTs a run: the component `scenario` (bytes) and `config`.
pub fn submit(base: &str, file: &str, scenario: &[u8], config: &serde_json::Value) -> Answer {
    let config = config.to_string();
    let (ctype, body) = multipart(&[
        ("scenario", Some(file), "application/wasm", scenario),
        ("config", None, "application/json", config.as_bytes()),
    ]);
    post_raw(&format!("{base}/api/v1/runs"), &ctype, &body)
}

/// POSTs raw bytes.
pub fn post_raw(url: &str, content_type: &str, body: &[u8]) -> Answer {
    answer(
        agent()
            .post(url)
            .set("Content-Type", content_type)
            .send_bytes(body),
    )
}

/// PUTs raw bytes.
pub fn put_raw(url: &str, content_type: &str, body: &[u8]) -> Answer {
    answer(
        agent()
            .put(url)
            .set("Content-Type", content_type)
            .send_bytes(body),
    )
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct Sse {
    /// Its `event:` name.
    pub event: String,
    /// Its `data:`, as JSON.
    pub data: serde_json::Value,
}

/// Reads the event stream at `url` on a thread; events arrive on the
/// receiver until the stream ends.
pub fn events(url: &str) -> mpsc::Receiver<Sse> {
    let (tx, rx) = mpsc::channel();
    let resp = ureq::AgentBuilder::new()
        .timeout_read(Duration::from_secs(120))
        .build()
        .get(url)
        .call()
        .expect("open the event stream");
    assert_eq!(
        resp.header("content-type").unwrap_or_default(),
        "text/event-stream"
    );
    let reader = BufReader::new(resp.into_reader());
    std::thread::spawn(move || {
        let (mut event, mut data) = (String::new(), String::new());
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Some(e) = line.strip_prefix("event:") {
                event = e.trim().to_owned();
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
            } else if line.is_empty() && !event.is_empty() {
                let parsed = serde_json::from_str(&data).unwrap_or(serde_json::Value::Null);
                if tx
                    .send(Sse {
                        event: std::mem::take(&mut event),
                        data: parsed,
                    })
                    .is_err()
                {
                    return;
                }
                data.clear();
            }
        }
    });
    rx
}

/// Waits up to `limit` for an event named `name`, returning it and the
/// events before it.
pub fn wait_for(rx: &mpsc::Receiver<Sse>, name: &str, limit: Duration) -> (Sse, Vec<Sse>) {
    let deadline = Instant::now() + limit;
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) if e.event == name => return (e, before),
            Ok(e) => before.push(e),
            Err(_) => panic!(
                "no {name:?} event within {limit:?}; got {:?}",
                before.iter().map(|e| &e.event).collect::<Vec<_>>()
            ),
        }
    }
}

/// Polls `GET url` until its JSON `state` is `state`.
pub fn wait_state(url: &str, state: &str, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let a = get(url);
        if a.json["state"] == state {
            return a.json;
        }
        assert!(
            Instant::now() < deadline,
            "run did not reach {state:?} within {limit:?}: {}",
            a.text
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
