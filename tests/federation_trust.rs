//! Who may take part in a distributed run: wrong tokens and fingerprints,
//! version skew, garbage and oversized frames, a CA for both sides, a
//! truncated component; each a clear one-line error on the side that sees
//! it.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::*;

#[test]
fn wrong_tokens_and_bad_peers_get_a_clear_error() {
    let mut coord = Coordinator::start(
        &hello(),
        "127.0.0.1:0",
        &[
            "--workers",
            "2",
            "--vus",
            "2",
            "-d",
            "1s",
            "--join-timeout",
            "40s",
            "--quiet",
        ],
    );
    // The right fingerprint, the wrong secret.
    let (fp, _) = coord.token.split_once(':').unwrap();
    let mut w = worker(
        &coord.addr,
        &format!("{fp}:0123456789abcdef0123"),
        "bad-secret",
        &[],
    );
    let (code, _) = w.wait(Duration::from_secs(20));
    assert_eq!(code, Some(1));
    assert!(w.log().contains("wrong token"), "{}", w.log());
    // The wrong fingerprint: the worker refuses the coordinator.
    let other = format!(
        "{}:{}",
        "ab".repeat(32),
        coord.token.split_once(':').unwrap().1
    );
    let mut w = worker(&coord.addr, &other, "bad-fp", &[]);
    let (code, _) = w.wait(Duration::from_secs(20));
    assert_eq!(code, Some(1));
    assert!(w.log().contains("fingerprint"), "{}", w.log());
    // Garbage datagrams on the port change nothing.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..200u32 {
        let junk: Vec<u8> = (0..1200).map(|j| (i * 31 + j * 7) as u8).collect();
        let _ = udp.send_to(&junk, &coord.addr);
    }
    // A client with the right token that speaks another protocol version,
    // then one that sends an oversized frame.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let token: runner::federation::token::Token = coord.token.parse().unwrap();
    let addr: std::net::SocketAddr = coord.addr.parse().unwrap();
    rt.block_on(async {
        let reply = raw_hello(addr, &token, 99).await;
        assert!(reply.contains("protocol 99"), "{reply}");
        let closed = oversized(addr, &token).await;
        assert!(closed.contains("larger than"), "{closed}");
    });
    coord.proc.wait_line("larger than", Duration::from_secs(10));
    // The coordinator still takes good workers and runs.
    let _good1 = worker(&coord.addr, &coord.token, "good1", &[]);
    let _good2 = worker(&coord.addr, &coord.token, "good2", &[]);
    let (code, _) = coord.proc.wait(Duration::from_secs(40));
    assert_eq!(code, Some(0), "{}", coord.proc.log());
    assert!(!coord.proc.log().contains("panicked"));
}

/// Connects with `token` and says hello with `protocol`; returns the
/// coordinator's answer.
async fn raw_hello(
    addr: std::net::SocketAddr,
    token: &runner::federation::token::Token,
    protocol: u32,
) -> String {
    use runner::federation::{protocol::*, tls, wire};
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(
        tls::client_config(&tls::Trust::Pinned(token.fingerprint)).unwrap(),
    );
    let conn = ep.connect(addr, tls::SERVER_NAME).unwrap().await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = Up::Hello {
        protocol,
        version: "0.0.0".into(),
        name: "raw".into(),
        capacity: 1.0,
        secret: token.secret.clone(),
        resume: None,
    };
    wire::write(&mut send, &hello).await.unwrap();
    match wire::read::<Down>(&mut recv).await {
        Ok(Some(Down::Refused { reason })) => reason,
        other => format!("{other:?}"),
    }
}

/// Says hello properly, then sends a frame announcing 4 GiB; returns why
/// the coordinator closed the connection.
async fn oversized(addr: std::net::SocketAddr, token: &runner::federation::token::Token) -> String {
    use runner::federation::{protocol::*, tls, wire};
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(
        tls::client_config(&tls::Trust::Pinned(token.fingerprint)).unwrap(),
    );
    let conn = ep.connect(addr, tls::SERVER_NAME).unwrap().await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = Up::Hello {
        protocol: PROTOCOL,
        version: env!("CARGO_PKG_VERSION").into(),
        name: "oversized".into(),
        capacity: 1.0,
        secret: token.secret.clone(),
        resume: None,
    };
    wire::write(&mut send, &hello).await.unwrap();
    let welcome = wire::read::<Down>(&mut recv).await;
    assert!(
        matches!(welcome, Ok(Some(Down::Welcome { .. }))),
        "{welcome:?}"
    );
    send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    send.write_all(b"{}").await.unwrap();
    let why = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await;
    format!("{why:?}")
}

#[test]
fn with_a_ca_both_sides_show_certificates_it_signed() {
    let dir = scratch("fed-ca");
    let (ours, theirs) = (dir.join("ours"), dir.join("theirs"));
    for d in [&ours, &theirs] {
        let out = std::process::Command::new(runner())
            .args(["keygen", "--ca", "--dir"])
            .arg(d)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let file = |d: &std::path::Path, f: &str| d.join(f).to_str().unwrap().to_owned();
    let target = Target::start();
    let out = dir.join("r.json");
    let base = format!("BASE_URL={}", target.url);
    let json = format!("json={}", out.display());
    let mut coord = Coordinator::start(
        &hello(),
        "127.0.0.1:0",
        &[
            "--workers",
            "1",
            "--vus",
            "2",
            "-d",
            "2s",
            "--join-timeout",
            "40s",
            "-e",
            &base,
            "--quiet",
            "--out",
            &json,
            "--ca",
            &file(&ours, "ca.crt"),
            "--cert",
            &file(&ours, "coordinator.crt"),
            "--key",
            &file(&ours, "coordinator.key"),
        ],
    );
    let join = |d: &std::path::Path, ca: &std::path::Path, name: &str| {
        let mut cmd = std::process::Command::new(runner());
        cmd.args(["join", "--coordinator", &coord.addr, "--name", name])
            .args(["--ca", &file(ca, "ca.crt")])
            .args(["--cert", &file(d, "worker.crt")])
            .args(["--key", &file(d, "worker.key")]);
        Proc::spawn(cmd)
    };
    // A worker whose certificate another CA signed is refused by the
    // coordinator, in one clear line.
    let mut stranger = join(&theirs, &ours, "stranger");
    let (code, _) = stranger.wait(Duration::from_secs(20));
    assert_eq!(code, Some(1));
    assert!(
        stranger.log().contains("refused this worker's certificate"),
        "{}",
        stranger.log()
    );
    // A worker trusting another CA refuses the coordinator.
    let mut wary = join(&ours, &theirs, "wary");
    let (code, _) = wary.wait(Duration::from_secs(20));
    assert_eq!(code, Some(1));
    assert!(
        wary.log().contains("refusing the coordinator"),
        "{}",
        wary.log()
    );
    // Ours runs the test, and every request is counted.
    let _good = join(&ours, &ours, "good");
    let (code, _) = coord.proc.wait(Duration::from_secs(40));
    assert_eq!(code, Some(0), "{}", coord.proc.log());
    let s = summary(&out);
    assert!(total_requests(&s) > 0);
    assert_eq!(total_requests(&s), target.requests());
}

#[test]
fn a_truncated_component_is_refused_by_the_worker() {
    use runner::federation::{protocol::*, tls, wire};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // A coordinator of the test's own that sends half a component.
        let id = tls::Identity::generate().unwrap();
        let ep =
            quinn::Endpoint::server(id.server_config().unwrap(), "127.0.0.1:0".parse().unwrap())
                .unwrap();
        let addr = ep.local_addr().unwrap().to_string();
        let token = format!(
            "{}:0123456789abcdef0123",
            runner::federation::token::hex(&id.fingerprint)
        );
        let mut w = worker(&addr, &token, "w", &[]);
        let conn = ep.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let hello = wire::read::<Up>(&mut recv).await.unwrap().unwrap();
        assert!(matches!(hello, Up::Hello { .. }), "{hello:?}");
        let welcome = Down::Welcome {
            protocol: PROTOCOL,
            version: "test".into(),
            worker: 1,
            resumed: false,
        };
        wire::write(&mut send, &welcome).await.unwrap();
        let mut spec = runner::spec::RunSpec::default();
        spec.scenario.sha256 = "ab".repeat(32);
        let assign = Down::Assign {
            run: 7,
            spec: Box::new(spec),
            share: Default::default(),
            lease_ms: 5000,
        };
        wire::write(&mut send, &assign).await.unwrap();
        let need = wire::read::<Up>(&mut recv).await.unwrap().unwrap();
        assert!(matches!(need, Up::Need { run: 7, .. }), "{need:?}");
        let mut s = conn.open_uni().await.unwrap();
        let head = ComponentHeader {
            sha256: "ab".repeat(32),
            len: 1000,
        };
        wire::write(&mut s, &head).await.unwrap();
        s.write_all(&[0u8; 10]).await.unwrap();
        s.finish().unwrap();
        let failed = loop {
            match wire::read::<Up>(&mut recv).await.unwrap().unwrap() {
                Up::Failed { run: 7, error } => break error,
                _ => continue,
            }
        };
        assert!(failed.contains("cut short"), "{failed}");
        assert!(w.log().contains("unusable"), "{}", w.log());
        assert!(w.running(), "the worker goes on: {}", w.log());
    });
}
