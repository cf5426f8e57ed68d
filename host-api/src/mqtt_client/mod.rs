//! One MQTT connection, on an event loop of its own over rumqttc's packet
//! codecs: the handshake (on the connect task), a driver task that writes
//! what the VU queued and reads what the broker sends, and the
//! bookkeeping that turns acknowledgements into completed operations.
//!
//! rumqttc's own event loop keeps, for every connection, 8 KiB read and
//! write buffers, a 65,536-bit QoS 2 set, room for 100 events and a
//! request channel: about 30 KiB before a packet moves, the bulk of an
//! idle connection's cost. Here the VU encodes its packets into a buffer
//! the driver empties, replies wait in a short list keyed by packet id,
//! and an idle connection holds its socket, a small read buffer and this
//! state.

mod driver;
mod handshake;
#[cfg(test)]
mod tests;
mod wire;

pub(crate) use wire::fuzzing;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{oneshot, Notify};

use crate::bindings::runner::scenario::mqtt::{Error, Qos};
use crate::recorder::Recorder;
use wire::{Codec, Out};

/// The metric kind of an error, as the summary counts it.
pub fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::InvalidArgument(_) => "invalid-argument",
        Error::Dns(_) => "dns",
        Error::ConnectionRefused(_) => "connection-refused",
        Error::NotAuthorized(_) => "not-authorized",
        Error::Timeout => "timeout",
        Error::Tls(_) => "tls",
        Error::Protocol(_) => "protocol",
        Error::Disconnected(_) => "disconnected",
        Error::Io(_) => "io",
        Error::Denied(_) => "denied",
    }
}

/// Messages a connection holds for its VU; more are counted as dropped.
const INBOX: usize = 1024;

/// Largest packet accepted or sent.
const MAX_PACKET: usize = 1 << 20;

/// Bytes queued for the driver past which new operations are refused: a
/// connection that cannot send (a broker that stopped reading) must not
/// grow without bound before its write times out.
const MAX_QUEUED: usize = 2 * MAX_PACKET;

/// How long a dropped connection may take to send its DISCONNECT.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A message received for the VU.
pub(crate) struct Inbound {
    pub topic: String,
    pub payload: Bytes,
    pub qos: Qos,
    pub retain: bool,
    pub latency: Option<u64>,
}

/// What a completed operation returns.
enum Ack {
    Done,
    Granted(Qos),
}

type Reply = oneshot::Sender<Result<Ack, Error>>;

/// The broker's packet an operation waits for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Wait {
    PubAck,
    /// A QoS 2 publish's first step; PUBCOMP follows.
    PubRec,
    PubComp,
    SubAck,
    UnsubAck,
}

/// An operation waiting for the broker.
struct Pending {
    pkid: u16,
    wait: Wait,
    reply: Reply,
}

/// State the VU side and the driver share.
#[derive(Default)]
struct State {
    /// Encoded packets the driver has yet to write.
    out: BytesMut,
    /// Bytes ever queued in `out`: the end offset a write waits for.
    queued: u64,
    /// Operations done once written (QoS 0 publishes, DISCONNECT), by the
    /// end offset of their packet, in order.
    flushes: Vec<(u64, Reply)>,
    /// Operations waiting for an acknowledgement. A VU runs one
    /// operation at a time, so this holds one or two entries: a list beats
    /// a map.
    pending: Vec<Pending>,
    /// Packet ids of QoS 1 and 2 publishes the broker has yet to finish
    /// (PUBACK, PUBCOMP, or a refusing PUBREC): the ones it counts against
    /// its Receive Maximum. A publish the VU gave up on stays here until
    /// then, and its id is not reused.
    inflight: Vec<u16>,
    last_pkid: u16,
    /// Subscribed filters and the metric names of their messages.
    filters: Vec<(String, Arc<str>)>,
    /// Why the connection ended, once it has.
    closed: Option<Error>,
    /// The VU asked to close: the end is not an error.
    closing: bool,
    /// Messages received and not yet read by the VU. A plain queue rather
    /// than a channel: it allocates nothing until a message arrives.
    inbox: VecDeque<Inbound>,
}

impl State {
    /// Encodes `p` for the driver; returns the end offset of its bytes.
    fn queue(&mut self, codec: &Codec, p: Out) -> Result<u64, Error> {
        let before = self.out.len();
        codec.encode(p, &mut self.out)?;
        self.queued += (self.out.len() - before) as u64;
        Ok(self.queued)
    }

    /// A packet id no waiting operation uses.
    fn new_pkid(&mut self) -> u16 {
        loop {
            self.last_pkid = self.last_pkid.checked_add(1).unwrap_or(1);
            let id = self.last_pkid;
            if !self.pending.iter().any(|p| p.pkid == id) && !self.inflight.contains(&id) {
                return id;
            }
        }
    }

    /// Removes and returns the reply waiting for `wait` on `pkid`.
    fn take(&mut self, pkid: u16, wait: Wait) -> Option<Reply> {
        let i = self
            .pending
            .iter()
            .position(|p| p.pkid == pkid && p.wait == wait)?;
        Some(self.pending.swap_remove(i).reply)
    }

    /// Ends the broker's exchange for the publish `pkid`; tells whether it
    /// was in flight.
    fn finish(&mut self, pkid: u16) -> bool {
        let before = self.inflight.len();
        self.inflight.retain(|&id| id != pkid);
        self.inflight.len() < before
    }
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the VU waiting in `next_message`, `disconnect`, or for the
    /// broker to take another publish.
    arrived: Notify,
    /// Wakes the driver: there is something to write.
    wake: Notify,
    codec: Codec,
    /// QoS 1 and 2 publishes the broker takes unacknowledged at once.
    receive_max: u16,
    recorder: Arc<Recorder>,
    name: Arc<str>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How to connect, already validated.
pub(crate) struct Settings {
    pub host: String,
    pub port: u16,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub client_id: String,
    pub clean_session: bool,
    pub keep_alive: Duration,
    pub credentials: Option<(String, String)>,
    pub v5: bool,
    pub timeout: Duration,
    /// Metric name under which a lost connection is counted.
    pub name: Arc<str>,
    /// Where the VU may connect.
    pub egress: Arc<crate::egress::Egress>,
    /// Where the connection's driver task is tracked, so the run can
    /// wait for it to say DISCONNECT.
    pub tasks: tokio_util::task::TaskTracker,
}

/// An open connection: the VU's side of it.
pub(crate) struct Session {
    shared: Arc<Shared>,
    driver: tokio::task::AbortHandle,
    /// Per-operation time limit.
    pub timeout: Duration,
}

impl Session {
    /// Connects and waits for CONNACK, then starts the driver task.
    pub async fn connect(s: Settings, recorder: Arc<Recorder>) -> Result<Self, Error> {
        let mut codec = Codec::new(s.v5, MAX_PACKET);
        let open = handshake::open(&s, codec);
        let opened = match tokio::time::timeout(s.timeout, open).await {
            Err(_) => return Err(Error::Timeout),
            Ok(r) => r?,
        };
        if let Some(max) = opened.max_out {
            codec.max_out = codec.max_out.min(max as usize);
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            arrived: Notify::new(),
            wake: Notify::new(),
            codec,
            receive_max: opened.receive_max,
            recorder,
            name: s.name,
        });
        let link = driver::Link {
            io: opened.io,
            keep_alive: opened.keep_alive,
            write_timeout: s.timeout,
        };
        let driver = s
            .tasks
            .spawn(driver::drive(shared.clone(), link, opened.rest));
        Ok(Self {
            shared,
            driver: driver.abort_handle(),
            timeout: s.timeout,
        })
    }

    /// Why the connection ended, if it has.
    pub fn closed(&self) -> Option<Error> {
        self.shared.lock().closed.clone()
    }

    /// Publishes and waits for the confirmation `qos` promises.
    pub async fn publish(
        &self,
        topic: String,
        payload: Vec<u8>,
        qos: Qos,
        retain: bool,
    ) -> Result<(), Error> {
        if !rumqttc::valid_topic(&topic) {
            return Err(Error::InvalidArgument(format!(
                "{topic:?} is not a valid topic name (empty, or contains + or #)"
            )));
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        if qos != Qos::AtMostOnce {
            self.room(deadline).await?;
        }
        self.request(deadline, |st, codec| {
            let pkid = match qos {
                Qos::AtMostOnce => 0,
                _ => {
                    let id = st.new_pkid();
                    st.inflight.push(id);
                    id
                }
            };
            let p = Out::Publish {
                pkid,
                topic,
                payload: payload.into(),
                qos,
                retain,
            };
            let end = st.queue(codec, p)?;
            Ok(match qos {
                Qos::AtMostOnce => Waiting::Written(end),
                Qos::AtLeastOnce => Waiting::Ack(pkid, Wait::PubAck),
                Qos::ExactlyOnce => Waiting::Ack(pkid, Wait::PubRec),
            })
        })
        .await
        .map(|_| ())
    }

    /// Subscribes; returns the granted QoS.
    pub async fn subscribe(&self, filter: String, qos: Qos, name: Arc<str>) -> Result<Qos, Error> {
        if !rumqttc::valid_filter(&filter) {
            return Err(Error::InvalidArgument(format!(
                "{filter:?} is not a valid topic filter"
            )));
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let ack = self
            .request(deadline, |st, codec| {
                st.filters.retain(|(f, _)| *f != filter);
                st.filters.push((filter.clone(), name));
                let pkid = st.new_pkid();
                st.queue(codec, Out::Subscribe { pkid, filter, qos })?;
                Ok(Waiting::Ack(pkid, Wait::SubAck))
            })
            .await?;
        Ok(match ack {
            Ack::Granted(q) => q,
            Ack::Done => qos,
        })
    }

    /// Unsubscribes.
    pub async fn unsubscribe(&self, filter: String) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        self.request(deadline, |st, codec| {
            st.filters.retain(|(f, _)| *f != filter);
            let pkid = st.new_pkid();
            st.queue(codec, Out::Unsubscribe { pkid, filter })?;
            Ok(Waiting::Ack(pkid, Wait::UnsubAck))
        })
        .await
        .map(|_| ())
    }

    /// Waits, until `deadline`, for the broker to take one more QoS 1 or
    /// 2 publish: MQTT 5 forbids sending more than its Receive Maximum
    /// unacknowledged. Only publishes the VU gave up on (timed out, their
    /// acknowledgement still owed) can fill it, as a VU waits for each.
    async fn room(&self, deadline: tokio::time::Instant) -> Result<(), Error> {
        loop {
            let freed = self.shared.arrived.notified();
            {
                let st = self.shared.lock();
                if let Some(e) = &st.closed {
                    return Err(e.clone());
                }
                if st.inflight.len() < usize::from(self.shared.receive_max) {
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(Error::Timeout);
            }
        }
    }

    /// Queues an operation's packet (through `queue`, under the lock),
    /// wakes the driver and waits for the completion until `deadline`.
    async fn request(
        &self,
        deadline: tokio::time::Instant,
        queue: impl FnOnce(&mut State, &Codec) -> Result<Waiting, Error>,
    ) -> Result<Ack, Error> {
        let (tx, rx) = oneshot::channel();
        let waiting = {
            let mut st = self.shared.lock();
            if let Some(e) = &st.closed {
                return Err(e.clone());
            }
            if st.out.len() >= MAX_QUEUED {
                return Err(Error::Io(format!(
                    "{} bytes wait to be sent: the broker is not reading",
                    st.out.len()
                )));
            }
            let w = queue(&mut st, &self.shared.codec)?;
            match w {
                Waiting::Written(end) => st.flushes.push((end, tx)),
                Waiting::Ack(pkid, wait) => st.pending.push(Pending {
                    pkid,
                    wait,
                    reply: tx,
                }),
            }
            w
        };
        self.shared.wake.notify_one();
        match tokio::time::timeout_at(deadline, rx).await {
            Err(_) => {
                if let Waiting::Ack(pkid, _) = waiting {
                    // A late answer finds nothing to complete (a QoS 2
                    // publish still gets its PUBREL from the driver).
                    self.shared.lock().pending.retain(|p| p.pkid != pkid);
                }
                Err(Error::Timeout)
            }
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(self
                .closed()
                .unwrap_or_else(|| Error::Disconnected("the connection closed".into()))),
        }
    }

    /// The next message, waiting at most `timeout`.
    pub async fn next_message(&self, timeout: Duration) -> Result<Option<Inbound>, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register for a wake-up before looking, so a message that
            // arrives in between is not missed.
            let arrived = self.shared.arrived.notified();
            {
                let mut st = self.shared.lock();
                if let Some(m) = st.inbox.pop_front() {
                    if st.inbox.is_empty() && st.inbox.capacity() > 64 {
                        // A burst is over: give its room back.
                        st.inbox = VecDeque::new();
                    }
                    return Ok(Some(m));
                }
                if let Some(e) = &st.closed {
                    return Err(e.clone());
                }
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Ok(None);
            }
        }
    }

    /// Sends DISCONNECT and waits (within the timeout) for the driver to
    /// close the connection.
    pub async fn disconnect(&self) -> Result<(), Error> {
        {
            let mut st = self.shared.lock();
            if let Some(e) = &st.closed {
                return match e {
                    Error::Disconnected(_) => Ok(()),
                    e => Err(e.clone()),
                };
            }
            if !st.closing {
                st.closing = true;
                st.queue(&self.shared.codec, Out::Disconnect)?;
            }
        }
        self.shared.wake.notify_one();
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            if self.closed().is_some() {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Err(Error::Timeout);
            }
        }
    }
}

/// What a queued operation waits for.
#[derive(Clone, Copy)]
enum Waiting {
    /// Its packet written up to this offset.
    Written(u64),
    /// The broker's answer to this packet id.
    Ack(u16, Wait),
}

impl Drop for Session {
    /// A connection the guest forgot, or whose VU ended or trapped, still
    /// says DISCONNECT, so the broker sees a clean close; a driver that
    /// cannot send it in time is aborted.
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            if st.closed.is_some() {
                return;
            }
            if !st.closing {
                st.closing = true;
                let _ = st.queue(&self.shared.codec, Out::Disconnect);
            }
        }
        self.shared.wake.notify_one();
        let driver = self.driver.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    tokio::time::sleep(CLOSE_GRACE).await;
                    driver.abort();
                });
            }
            Err(_) => driver.abort(),
        }
    }
}
