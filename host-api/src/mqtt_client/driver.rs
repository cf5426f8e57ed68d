//! The driver task of one connection: writes what the VU queued, answers
//! the broker's packets (acknowledgements, the QoS 2 steps), completes
//! the VU's operations, and keeps the connection alive with PINGREQ.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::wire::{In, Out};
use super::{error_kind, Ack, Inbound, Shared, Wait, INBOX};
use crate::bindings::runner::scenario::mqtt::{Error, Qos};
use crate::messaging::{stamp_latency, topic_matches, Event, Protocol};
use crate::stream::Io;

/// Room a read asks for at least: acknowledgements are 4 bytes, most
/// messages a few hundred; an idle connection keeps this much.
const READ_MIN: usize = 512;

/// A read buffer grown past this (a large message) is let go once empty.
const READ_KEEP: usize = 16 << 10;

/// The connection a driver runs.
pub(super) struct Link {
    pub io: Io,
    /// Zero: no keep-alive.
    pub keep_alive: Duration,
    /// How long one write may wait for the broker to read.
    pub write_timeout: Duration,
}

/// Runs the connection until it ends, then fails what still waits.
pub(super) async fn drive(shared: Arc<Shared>, mut link: Link, buf: BytesMut) {
    let why = run(&shared, &mut link, buf).await;
    close(&shared, why);
}

async fn run(shared: &Shared, link: &mut Link, mut buf: BytesMut) -> Error {
    let codec = shared.codec;
    let keep_alive = link.keep_alive;
    let mut written = 0u64;
    // Keep-alive: a PINGREQ goes out when nothing was sent or heard for
    // the keep-alive, and its PINGRESP must come within one more; later
    // writes do not move that deadline, so a VU that only publishes still
    // finds out that the broker is gone.
    let mut last_write = Instant::now();
    let mut last_heard = Instant::now();
    let mut ping_sent: Option<Instant> = None;
    let mut need = 0usize;
    // The handshake may have read past CONNACK.
    if let Err(e) = take_packets(shared, &mut buf, &mut need, &mut ping_sent) {
        return e;
    }
    loop {
        let (chunk, closing) = {
            let mut st = shared.lock();
            (std::mem::take(&mut st.out), st.closing)
        };
        if !chunk.is_empty() {
            if let Err(e) = write_within(&mut link.io, &chunk, link.write_timeout).await {
                return e;
            }
            written += chunk.len() as u64;
            last_write = Instant::now();
            let mut st = shared.lock();
            while st.flushes.first().is_some_and(|(end, _)| *end <= written) {
                let (_, reply) = st.flushes.remove(0);
                let _ = reply.send(Ok(Ack::Done));
            }
        }
        if closing {
            // The DISCONNECT went out with the chunk just written.
            let _ = tokio::time::timeout(super::CLOSE_GRACE, link.io.shutdown()).await;
            return Error::Disconnected("disconnected by the VU".into());
        }
        let wake = shared.wake.notified();
        let ping_at = match ping_sent {
            Some(at) => at + keep_alive,
            None => last_write.min(last_heard) + keep_alive,
        };
        if buf.capacity() - buf.len() < need.max(1) {
            buf.reserve(need.max(READ_MIN));
        }
        tokio::select! {
            r = link.io.read_buf(&mut buf) => match r {
                Ok(0) => return Error::Disconnected("the broker closed the connection".into()),
                Ok(_) => {
                    last_heard = Instant::now();
                    if let Err(e) = take_packets(shared, &mut buf, &mut need, &mut ping_sent) {
                        return e;
                    }
                    if buf.is_empty() && buf.capacity() > READ_KEEP {
                        buf = BytesMut::new();
                    }
                }
                Err(e) => return io_error(&e),
            },
            _ = wake => {}
            _ = tokio::time::sleep_until(ping_at), if !keep_alive.is_zero() => {
                if ping_sent.is_some() {
                    // The answer may be waiting unread (a long write kept
                    // this loop away, and the timer won the race): read
                    // what is there before giving up.
                    match link.io.read_buf(&mut buf).now_or_never() {
                        Some(Ok(0)) => {
                            return Error::Disconnected("the broker closed the connection".into())
                        }
                        Some(Ok(_)) => {
                            last_heard = Instant::now();
                            if let Err(e) = take_packets(shared, &mut buf, &mut need, &mut ping_sent) {
                                return e;
                            }
                        }
                        Some(Err(e)) => return io_error(&e),
                        None => {}
                    }
                }
                if ping_sent.is_some() {
                    return Error::Disconnected(format!(
                        "the broker did not answer PINGREQ within the keep-alive ({} s)",
                        keep_alive.as_secs()
                    ));
                }
                ping_sent = Some(Instant::now());
                if let Err(e) = shared.lock().queue(&codec, Out::PingReq) {
                    return e;
                }
            }
        }
    }
}

/// [`write`], failing with a timeout if the broker does not take the
/// bytes within `limit`. The timer is armed only when the socket is full:
/// most writes complete at once, and a timer per publish costs CPU.
async fn write_within(io: &mut Io, bytes: &[u8], limit: Duration) -> Result<(), Error> {
    let mut fut = std::pin::pin!(write(io, bytes));
    let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(r) => r,
        Poll::Pending => tokio::time::timeout(limit, fut)
            .await
            .unwrap_or(Err(Error::Timeout)),
    }
}

/// Writes `bytes` whole and pushes them out of TLS's buffer.
async fn write(io: &mut Io, bytes: &[u8]) -> Result<(), Error> {
    io.write_all(bytes).await.map_err(|e| io_error(&e))?;
    io.flush().await.map_err(|e| io_error(&e))
}

/// Handles every whole packet at the front of `buf`.
fn take_packets(
    shared: &Shared,
    buf: &mut BytesMut,
    need: &mut usize,
    ping_sent: &mut Option<Instant>,
) -> Result<(), Error> {
    while let Some(p) = shared.codec.decode(buf, need)? {
        handle(shared, p, ping_sent)?;
    }
    Ok(())
}

/// Applies one packet from the broker; an error ends the connection.
fn handle(shared: &Shared, p: In, ping_sent: &mut Option<Instant>) -> Result<(), Error> {
    let codec = shared.codec;
    let mut st = shared.lock();
    let done = |r: Option<super::Reply>, result: Result<Ack, Error>| {
        if let Some(r) = r {
            let _ = r.send(result);
        }
    };
    // Room for one more publish, for a VU waiting in `room`.
    let mut freed = false;
    match p {
        In::PingResp => *ping_sent = None,
        In::PubAck(id, r) => {
            freed = st.finish(id);
            done(st.take(id, Wait::PubAck), r.map(|_| Ack::Done));
        }
        In::PubRec(id, r) => match (st.take(id, Wait::PubRec), r) {
            (Some(reply), Ok(())) => {
                st.pending.push(super::Pending {
                    pkid: id,
                    wait: Wait::PubComp,
                    reply,
                });
                st.queue(&codec, Out::PubRel(id))?;
            }
            (reply, Err(e)) => {
                // A refusing PUBREC ends the exchange (MQTT 5 §4.9).
                freed = st.finish(id);
                done(reply, Err(e));
            }
            // A publish the VU gave up on: still finish its exchange.
            (None, Ok(())) => {
                st.queue(&codec, Out::PubRel(id))?;
            }
        },
        In::PubComp(id, r) => {
            freed = st.finish(id);
            done(st.take(id, Wait::PubComp), r.map(|_| Ack::Done));
        }
        In::SubAck(id, r) => done(st.take(id, Wait::SubAck), r.map(Ack::Granted)),
        In::UnsubAck(id) => done(st.take(id, Wait::UnsubAck), Ok(Ack::Done)),
        In::PubRel(id) => {
            st.queue(&codec, Out::PubComp(id))?;
        }
        In::Publish {
            pkid,
            topic,
            payload,
            qos,
            retain,
        } => {
            let answer = match qos {
                Qos::AtMostOnce => None,
                Qos::AtLeastOnce => Some(Out::PubAck(pkid)),
                Qos::ExactlyOnce => Some(Out::PubRec(pkid)),
            };
            if let Some(a) = answer {
                st.queue(&codec, a)?;
            }
            let m = Inbound {
                latency: stamp_latency(&payload),
                topic,
                payload,
                qos,
                retain,
            };
            drop(st);
            deliver(shared, m);
            return Ok(());
        }
        In::Disconnect(reason) => {
            return Err(Error::Disconnected(format!(
                "the broker disconnected: {reason}"
            )))
        }
        In::ConnAck(_) => return Err(Error::Protocol("a second CONNACK".into())),
        In::Unexpected(what) => {
            return Err(Error::Protocol(format!(
                "the broker sent {what}, which only a client sends"
            )))
        }
        In::Invalid(what) => return Err(Error::Protocol(format!("the broker sent {what}"))),
    }
    drop(st);
    if freed {
        shared.arrived.notify_one();
    }
    // Answers queued here go out when the driver loops back to write.
    Ok(())
}

/// Puts a message in the VU's inbox and counts it.
fn deliver(shared: &Shared, m: Inbound) {
    let mut st = shared.lock();
    let name = st
        .filters
        .iter()
        .find(|(f, _)| topic_matches(f, &m.topic))
        .map(|(_, n)| n.clone());
    let event = Event::Received {
        bytes: m.payload.len() as u64,
        latency_us: m.latency.map(|ns| ns / 1_000),
    };
    // The VU may not read its messages (or not fast enough): they are
    // counted as received, and the oldest dropped beyond INBOX.
    let overflow = st.inbox.len() >= INBOX;
    if overflow {
        st.inbox.pop_front();
    }
    st.inbox.push_back(m);
    drop(st);
    shared.arrived.notify_one();
    let name = name.as_deref().unwrap_or("(unsubscribed)");
    shared.recorder.messaging(Protocol::Mqtt, name, event);
    if overflow {
        shared
            .recorder
            .messaging(Protocol::Mqtt, name, Event::Unread);
    }
}

/// Ends the connection: every waiting operation fails with `why`, which
/// is counted unless the VU itself closed the connection.
fn close(shared: &Shared, why: Error) {
    let mut st = shared.lock();
    if !st.closing {
        let kind = error_kind(&why);
        shared
            .recorder
            .messaging(Protocol::Mqtt, &shared.name, Event::Error(kind));
    }
    let fail = |reply: super::Reply| {
        let _ = reply.send(Err(why.clone()));
    };
    st.flushes.drain(..).for_each(|(_, r)| fail(r));
    st.pending.drain(..).for_each(|p| fail(p.reply));
    st.out = BytesMut::new();
    st.closed = Some(why);
    drop(st);
    shared.arrived.notify_one();
}

/// An I/O failure as the WIT error the VU sees.
pub(super) fn io_error(e: &std::io::Error) -> Error {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => Error::ConnectionRefused(e.to_string()),
        K::TimedOut => Error::Timeout,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            Error::Disconnected(format!("the broker closed the connection: {e}"))
        }
        _ => Error::Io(e.to_string()),
    }
}
