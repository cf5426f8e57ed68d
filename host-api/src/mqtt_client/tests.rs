//! The client against a scripted broker: what a real broker cannot be
//! made to do (fall silent, send garbage, never acknowledge).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Session, Settings};
use crate::bindings::runner::scenario::mqtt::{Error, Qos};
use crate::recorder::Recorder;

/// A broker that answers CONNECT with an MQTT 3.1.1 CONNACK, then runs
/// `then`.
async fn broker<F, Fut>(then: F) -> (u16, tokio::task::JoinHandle<Vec<u8>>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Vec<u8>> + Send,
{
    broker_with(&[0x20, 0x02, 0x00, 0x00], then).await
}

/// A broker that answers CONNECT with `connack`, then runs `then`.
async fn broker_with<F, Fut>(
    connack: &'static [u8],
    then: F,
) -> (u16, tokio::task::JoinHandle<Vec<u8>>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Vec<u8>> + Send,
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        let mut b = [0u8; 256];
        let n = s.read(&mut b).await.expect("CONNECT");
        assert_eq!(b[0], 0x10, "CONNECT first: {:?}", &b[..n]);
        s.write_all(connack).await.expect("CONNACK");
        then(s).await
    });
    (port, task)
}

fn settings(port: u16, keep_alive: Duration, timeout: Duration) -> Settings {
    Settings {
        host: "127.0.0.1".into(),
        port,
        tls: None,
        client_id: "t".into(),
        clean_session: true,
        keep_alive,
        credentials: None,
        v5: false,
        timeout,
        name: "t".into(),
        egress: Arc::new(crate::egress::Egress::loopback_only()),
        tasks: tokio_util::task::TaskTracker::new(),
    }
}

/// Reads one PUBLISH from the client.
async fn expect_publish(s: &mut TcpStream, what: &str) {
    let mut b = [0u8; 64];
    let n = s.read(&mut b).await.expect(what);
    assert_eq!(b[0] & 0xF0, 0x30, "{what}: {:?}", &b[..n]);
}

/// Sends PUBACK for packet id `id`.
async fn puback(s: &mut TcpStream, id: u8) {
    s.write_all(&[0x40, 0x02, 0x00, id]).await.expect("PUBACK");
}

/// A QoS 1 publish of `payload` to topic `a`.
async fn publish_qos1(session: &Session, payload: &[u8]) -> Result<(), Error> {
    session
        .publish("a".into(), payload.to_vec(), Qos::AtLeastOnce, false)
        .await
}

/// Everything the client sends until it closes or `limit` passes.
async fn read_all(mut s: TcpStream, limit: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut got)).await;
    got
}

#[tokio::test]
async fn a_broker_that_stops_answering_pings_is_a_lost_connection() {
    let (port, seen) = broker(|s| read_all(s, Duration::from_secs(5))).await;
    let s = settings(port, Duration::from_secs(1), Duration::from_secs(5));
    let session = Session::connect(s, Arc::new(Recorder::new(1)))
        .await
        .expect("connect");
    let got = session.next_message(Duration::from_secs(4)).await;
    match got {
        Err(Error::Disconnected(why)) => assert!(why.contains("PINGREQ"), "{why}"),
        other => panic!(
            "expected a lost connection, got {:?}",
            other.map(|m| m.is_some())
        ),
    }
    drop(session);
    let bytes = seen.await.expect("broker");
    assert!(
        bytes.windows(2).any(|w| w == [0xC0, 0x00]),
        "a PINGREQ was sent: {bytes:?}"
    );
}

#[tokio::test]
async fn garbage_from_the_broker_is_a_protocol_error() {
    let (port, _seen) = broker(|mut s| async move {
        s.write_all(&[0x00, 0x02, 1, 2]).await.expect("junk");
        read_all(s, Duration::from_secs(2)).await
    })
    .await;
    let s = settings(port, Duration::ZERO, Duration::from_secs(5));
    let session = Session::connect(s, Arc::new(Recorder::new(1)))
        .await
        .expect("connect");
    let got = session.next_message(Duration::from_secs(2)).await;
    assert!(matches!(got, Err(Error::Protocol(_))), "{:?}", got.err());
    assert!(session.closed().is_some());
}

#[tokio::test]
async fn an_unacknowledged_publish_times_out_and_a_late_ack_is_harmless() {
    let (port, seen) = broker(|mut s| async move {
        expect_publish(&mut s, "PUBLISH").await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        // PUBACK for the publish given up on, then the next one's.
        puback(&mut s, 1).await;
        expect_publish(&mut s, "PUBLISH 2").await;
        puback(&mut s, 2).await;
        read_all(s, Duration::from_secs(2)).await
    })
    .await;
    let s = settings(port, Duration::ZERO, Duration::from_millis(300));
    let session = Session::connect(s, Arc::new(Recorder::new(1)))
        .await
        .expect("connect");
    let first = publish_qos1(&session, b"x").await;
    assert!(matches!(first, Err(Error::Timeout)), "{:?}", first.err());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = publish_qos1(&session, b"y").await;
    assert!(second.is_ok(), "{:?}", second.err());
    assert!(session.shared.lock().pending.is_empty());
    session.disconnect().await.expect("disconnect");
    let bytes = seen.await.expect("broker");
    assert_eq!(bytes, [0xE0, 0x00], "DISCONNECT last");
}

#[tokio::test]
async fn a_broker_that_stops_reading_ends_the_connection_by_timeout() {
    let (port, _seen) = broker(|s| async move {
        // Holds the connection open and never reads again.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
        Vec::new()
    })
    .await;
    let s = settings(port, Duration::ZERO, Duration::from_millis(500));
    let session = Session::connect(s, Arc::new(Recorder::new(1)))
        .await
        .expect("connect");
    let payload = vec![7u8; 900 << 10];
    let started = std::time::Instant::now();
    let mut sent = 0;
    let failure = loop {
        match session
            .publish("big".into(), payload.clone(), Qos::AtMostOnce, false)
            .await
        {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 200, "the socket buffers never filled");
    };
    assert!(matches!(failure, Error::Timeout), "{failure:?}");
    // The driver gave up on the write: the connection is over, and says so.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        matches!(session.closed(), Some(Error::Timeout)),
        "{:?}",
        session.closed()
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// An MQTT 5 CONNACK: success, with Receive Maximum 1.
const CONNACK_RECEIVE_MAX_1: &[u8] = &[0x20, 0x06, 0x00, 0x00, 0x03, 0x21, 0x00, 0x01];

#[tokio::test]
async fn no_publish_goes_out_past_the_brokers_receive_maximum() {
    let (port, seen) = broker_with(CONNACK_RECEIVE_MAX_1, |mut s| async move {
        expect_publish(&mut s, "PUBLISH 1").await;
        // The client gives up on the first publish at 300 ms and on the
        // second at 600: with one publish allowed unacknowledged, nothing
        // may come before this PUBACK, however late.
        let mut b = [0u8; 64];
        let early = tokio::time::timeout(Duration::from_millis(700), s.read(&mut b)).await;
        assert!(early.is_err(), "a publish past Receive Maximum: {early:?}");
        puback(&mut s, 1).await;
        expect_publish(&mut s, "PUBLISH 2").await;
        puback(&mut s, 2).await;
        read_all(s, Duration::from_secs(2)).await
    })
    .await;
    let mut s = settings(port, Duration::ZERO, Duration::from_millis(300));
    s.v5 = true;
    let session = Session::connect(s, Arc::new(Recorder::new(1)))
        .await
        .expect("connect");
    let first = publish_qos1(&session, b"x").await;
    assert!(matches!(first, Err(Error::Timeout)), "{:?}", first.err());
    // Its acknowledgement is still owed: this one times out unsent.
    let held = publish_qos1(&session, b"y").await;
    assert!(matches!(held, Err(Error::Timeout)), "{:?}", held.err());
    // The late PUBACK (at ~700 ms) frees the slot within this one's time.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = publish_qos1(&session, b"z").await;
    assert!(second.is_ok(), "{:?}", second.err());
    assert!(session.shared.lock().inflight.is_empty());
    session.disconnect().await.expect("disconnect");
    let bytes = seen.await.expect("broker");
    assert_eq!(bytes, [0xE0, 0x00], "DISCONNECT last");
}

#[tokio::test]
async fn a_receive_maximum_of_zero_is_refused_at_connect() {
    let connack: &[u8] = &[0x20, 0x06, 0x00, 0x00, 0x03, 0x21, 0x00, 0x00];
    let (port, _seen) = broker_with(connack, |s| read_all(s, Duration::from_secs(1))).await;
    let mut s = settings(port, Duration::ZERO, Duration::from_secs(2));
    s.v5 = true;
    let got = Session::connect(s, Arc::new(Recorder::new(1))).await;
    match got {
        Err(Error::Protocol(why)) => assert!(why.contains("Receive Maximum 0"), "{why}"),
        other => panic!("expected a protocol error, got {:?}", other.err()),
    }
}
