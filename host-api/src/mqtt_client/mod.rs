//! One MQTT connection, on rumqttc: the handshake, a driver task that
//! polls rumqttc's event loop, and the bookkeeping that turns its events
//! into completed operations for the VU that waits on them.
//!
//! rumqttc speaks MQTT 3.1.1 and 5 through two parallel APIs; [`Client`]
//! and [`Ev`] hide the difference so the logic exists once. A VU calls one
//! operation at a time, and rumqttc reports outgoing packets in the order
//! they were requested, so operations are matched to their packet ids
//! through a FIFO, then to their acknowledgements by packet id.

mod versions;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::v5;
use tokio::sync::{oneshot, Notify};

use crate::bindings::runner::scenario::mqtt::{Error, Qos};
use crate::messaging::{topic_matches, Event, Protocol};
use crate::recorder::Recorder;
use versions::{v4_error, v4_event, v4_qos, v5_error, v5_event, v5_qos, Ev};

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

/// Requests queued between a connection and its rumqttc event loop.
const REQUEST_QUEUE: usize = 16;

/// Publishes rumqttc keeps in flight; a VU waits for each one, so a few
/// suffice, and fewer slots mean less memory per connection.
const INFLIGHT: u16 = 8;

/// How long a dropped connection may take to send its DISCONNECT.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

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

#[derive(Clone, Copy)]
enum Op {
    Publish(Qos),
    Subscribe,
    Unsubscribe,
}

/// State the VU side and the driver share.
#[derive(Default)]
struct State {
    /// Operations requested whose packet rumqttc has not yet sent, in order.
    unsent: VecDeque<(Op, Reply)>,
    /// Sent QoS 1 and 2 publishes by packet id, waiting for PUBACK/PUBCOMP.
    publishes: HashMap<u16, Reply>,
    /// Sent subscribes and unsubscribes by packet id.
    subscribes: HashMap<u16, Reply>,
    unsubscribes: HashMap<u16, Reply>,
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

struct Shared {
    state: Mutex<State>,
    /// Wakes the VU waiting in `next_message`.
    arrived: Notify,
    recorder: Arc<Recorder>,
    name: Arc<str>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// rumqttc's client handle, for either protocol version.
enum Client {
    V4(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
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
}

/// An open connection: the VU's side of it.
pub(crate) struct Session {
    client: Client,
    shared: Arc<Shared>,
    driver: tokio::task::AbortHandle,
    /// Per-operation time limit.
    pub timeout: Duration,
}

impl Session {
    /// Connects and waits for CONNACK, then starts the driver task.
    pub async fn connect(s: Settings, recorder: Arc<Recorder>) -> Result<Self, Error> {
        // Resolve first, so a bad host name reads as such rather than as a
        // generic I/O failure from inside rumqttc.
        let denied = |d: crate::egress::Denied| Error::Denied(d.0);
        let by_name = s.egress.check_name(&s.host, s.port).map_err(denied)?;
        let addr = format!("{}:{}", s.host, s.port);
        let addrs: Vec<std::net::SocketAddr> =
            match tokio::time::timeout(s.timeout, tokio::net::lookup_host(&addr)).await {
                Err(_) => return Err(Error::Timeout),
                Ok(Err(e)) => return Err(Error::Dns(format!("{}: {e}", s.host))),
                Ok(Ok(a)) => a.collect(),
            };
        let mut s = s;
        if !by_name {
            // Every address the name has must be allowed (rumqttc picks
            // one itself); without TLS, the one checked is the one used.
            for a in &addrs {
                s.egress
                    .check_addr(&s.host, a.ip(), s.port)
                    .map_err(denied)?;
            }
            if let (None, Some(a)) = (&s.tls, addrs.first()) {
                s.host = a.ip().to_string();
            }
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            arrived: Notify::new(),
            recorder,
            name: s.name.clone(),
        });
        let secs = s.timeout.as_secs().max(1);
        let (client, driver) = if s.v5 {
            let mut o = v5::MqttOptions::new(&s.client_id, &s.host, s.port);
            o.set_clean_start(s.clean_session)
                .set_keep_alive(s.keep_alive)
                .set_max_packet_size(Some(MAX_PACKET as u32))
                .set_connection_timeout(secs)
                .set_request_channel_capacity(REQUEST_QUEUE)
                .set_outgoing_inflight_upper_limit(INFLIGHT);
            if let Some((u, p)) = &s.credentials {
                o.set_credentials(u, p);
            }
            if let Some(tls) = &s.tls {
                o.set_transport(rumqttc::Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Rustls(tls.clone()),
                ));
            }
            let (client, mut el) = v5::AsyncClient::new(o, REQUEST_QUEUE);
            // rumqttc reserves room for 100 buffered events per connection;
            // a VU's connection rarely holds more than a few.
            el.state.events = VecDeque::new();
            match tokio::time::timeout(s.timeout, el.poll()).await {
                Err(_) => return Err(Error::Timeout),
                Ok(Err(e)) => return Err(v5_error(e)),
                Ok(Ok(_)) => {}
            }
            let task = tokio::spawn(drive(shared.clone(), async move || {
                el.poll().await.map(v5_event).map_err(v5_error)
            }));
            (Client::V5(client), task)
        } else {
            let mut o = rumqttc::MqttOptions::new(&s.client_id, &s.host, s.port);
            o.set_clean_session(s.clean_session)
                .set_keep_alive(s.keep_alive)
                .set_max_packet_size(MAX_PACKET, MAX_PACKET)
                .set_request_channel_capacity(REQUEST_QUEUE)
                .set_inflight(INFLIGHT);
            if let Some((u, p)) = &s.credentials {
                o.set_credentials(u, p);
            }
            if let Some(tls) = &s.tls {
                o.set_transport(rumqttc::Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Rustls(tls.clone()),
                ));
            }
            let (client, mut el) = rumqttc::AsyncClient::new(o, REQUEST_QUEUE);
            el.state.events = VecDeque::new();
            el.network_options.set_connection_timeout(secs);
            match tokio::time::timeout(s.timeout, el.poll()).await {
                Err(_) => return Err(Error::Timeout),
                Ok(Err(e)) => return Err(v4_error(e)),
                Ok(Ok(_)) => {}
            }
            let task = tokio::spawn(drive(shared.clone(), async move || {
                el.poll().await.map(v4_event).map_err(v4_error)
            }));
            (Client::V4(client), task)
        };
        Ok(Self {
            client,
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
        self.request(Op::Publish(qos), async {
            match &self.client {
                Client::V4(c) => c.publish(topic, v4_qos(qos), retain, payload).await.is_ok(),
                Client::V5(c) => c.publish(topic, v5_qos(qos), retain, payload).await.is_ok(),
            }
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
        {
            let mut st = self.shared.lock();
            st.filters.retain(|(f, _)| *f != filter);
            st.filters.push((filter.clone(), name));
        }
        let ack = self
            .request(Op::Subscribe, async {
                match &self.client {
                    Client::V4(c) => c.subscribe(filter, v4_qos(qos)).await.is_ok(),
                    Client::V5(c) => c.subscribe(filter, v5_qos(qos)).await.is_ok(),
                }
            })
            .await?;
        Ok(match ack {
            Ack::Granted(q) => q,
            Ack::Done => qos,
        })
    }

    /// Unsubscribes.
    pub async fn unsubscribe(&self, filter: String) -> Result<(), Error> {
        self.shared.lock().filters.retain(|(f, _)| *f != filter);
        self.request(Op::Unsubscribe, async {
            match &self.client {
                Client::V4(c) => c.unsubscribe(filter).await.is_ok(),
                Client::V5(c) => c.unsubscribe(filter).await.is_ok(),
            }
        })
        .await
        .map(|_| ())
    }

    /// Queues an operation and waits for its completion, within the
    /// connection's timeout.
    async fn request(
        &self,
        op: Op,
        send: impl std::future::Future<Output = bool>,
    ) -> Result<Ack, Error> {
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.shared.lock();
            if let Some(e) = &st.closed {
                return Err(e.clone());
            }
            st.unsent.push_back((op, tx));
        }
        let deadline = Instant::now() + self.timeout;
        match tokio::time::timeout_at(deadline.into(), send).await {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                // Not queued: take back the waiter pushed above, the last one.
                self.shared.lock().unsent.pop_back();
                return Err(self.closed().unwrap_or(Error::Timeout));
            }
        }
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Err(_) => Err(Error::Timeout),
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

    /// Sends DISCONNECT and waits (briefly) for the driver to finish.
    pub async fn disconnect(&self) -> Result<(), Error> {
        if let Some(e) = self.closed() {
            return match e {
                Error::Disconnected(_) => Ok(()),
                e => Err(e),
            };
        }
        self.shared.lock().closing = true;
        let sent = match &self.client {
            Client::V4(c) => c.disconnect().await.is_ok(),
            Client::V5(c) => c.disconnect().await.is_ok(),
        };
        if !sent {
            return Ok(());
        }
        let deadline = Instant::now() + self.timeout;
        while self.closed().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        match self.closed() {
            None => Err(Error::Timeout),
            Some(_) => Ok(()),
        }
    }
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
            st.closing = true;
        }
        let sent = match &self.client {
            Client::V4(c) => c.try_disconnect().is_ok(),
            Client::V5(c) => c.try_disconnect().is_ok(),
        };
        let driver = self.driver.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if sent => {
                rt.spawn(async move {
                    tokio::time::sleep(CLOSE_GRACE).await;
                    driver.abort();
                });
            }
            _ => driver.abort(),
        }
    }
}

/// The driver task: polls rumqttc's event loop (through `next`) and
/// applies each event until the connection ends.
async fn drive(shared: Arc<Shared>, mut next: impl AsyncFnMut() -> Result<Ev, Error>) {
    let end = loop {
        match next().await {
            Ok(ev) => {
                if let Some(end) = handle(&shared, ev) {
                    break end;
                }
            }
            Err(e) => break e,
        }
    };
    close(&shared, end);
}

/// Applies one event; returns why the connection ends, if it does.
fn handle(shared: &Shared, ev: Ev) -> Option<Error> {
    let mut st = shared.lock();
    match ev {
        Ev::OutPublish(pkid) => {
            if let Some((op, reply)) = st.unsent.pop_front() {
                match op {
                    Op::Publish(Qos::AtMostOnce) => {
                        let _ = reply.send(Ok(Ack::Done));
                    }
                    _ => {
                        st.publishes.insert(pkid, reply);
                    }
                }
            }
        }
        Ev::OutSubscribe(pkid) => {
            if let Some((_, reply)) = st.unsent.pop_front() {
                st.subscribes.insert(pkid, reply);
            }
        }
        Ev::OutUnsubscribe(pkid) => {
            if let Some((_, reply)) = st.unsent.pop_front() {
                st.unsubscribes.insert(pkid, reply);
            }
        }
        Ev::OutDisconnect => return Some(Error::Disconnected("disconnected by the VU".into())),
        Ev::Acked(pkid, r) => {
            if let Some(reply) = st.publishes.remove(&pkid) {
                let _ = reply.send(r.map(|_| Ack::Done));
            }
        }
        Ev::SubAck(pkid, r) => {
            if let Some(reply) = st.subscribes.remove(&pkid) {
                let _ = reply.send(r.map(Ack::Granted));
            }
        }
        Ev::UnsubAck(pkid) => {
            if let Some(reply) = st.unsubscribes.remove(&pkid) {
                let _ = reply.send(Ok(Ack::Done));
            }
        }
        Ev::Message(m) => {
            let name = st
                .filters
                .iter()
                .find(|(f, _)| topic_matches(f, &m.topic))
                .map(|(_, n)| n.clone());
            let event = Event::Received {
                bytes: m.payload.len() as u64,
                latency_us: m.latency.map(|ns| ns / 1_000),
            };
            // The VU may not read its messages (or not fast enough): they
            // are counted as received, and the oldest dropped beyond INBOX.
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
        Ev::Closed(e) => return Some(e),
        Ev::Other => {}
    }
    None
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
    let fail = |reply: Reply| {
        let _ = reply.send(Err(why.clone()));
    };
    st.unsent.drain(..).for_each(|(_, r)| fail(r));
    st.publishes.drain().for_each(|(_, r)| fail(r));
    st.subscribes.drain().for_each(|(_, r)| fail(r));
    st.unsubscribes.drain().for_each(|(_, r)| fail(r));
    st.closed = Some(why);
    drop(st);
    shared.arrived.notify_one();
}
