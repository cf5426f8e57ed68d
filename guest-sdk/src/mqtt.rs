//! MQTT 3.1.1 and 5, timed by the host. A connection belongs to the VU that
//! opened it and closes (with a DISCONNECT) when dropped, when the VU ends
//! or when it traps.
//!
//! ```no_run
//! # fn f() -> guest_sdk::Result {
//! use guest_sdk::mqtt::{self, QoS};
//! use std::time::Duration;
//! let c = mqtt::connect("mqtt://127.0.0.1:1883")?;
//! c.subscribe("devices/+/telemetry", QoS::AtLeastOnce)?;
//! c.publish("devices/7/telemetry", guest_sdk::stamp(b"21.5"), QoS::AtLeastOnce)?;
//! if let Some(m) = c.next_message(Duration::from_secs(1))? {
//!     println!("{} after {:?}", m.topic, m.latency);
//! }
//! # Ok(()) }
//! ```
//!
//! Connections live across iterations when kept in a `thread_local!` (see
//! the `iot` example scenario): a device connects once and publishes every
//! second for the whole run.

use std::time::Duration;

use crate::__bindings::runner::scenario::mqtt as wit;

pub use wit::Error as ErrorKind;
pub use wit::Protocol;
pub use wit::Qos as QoS;

/// Why an MQTT operation failed.
#[derive(Clone, Debug)]
pub struct Error(wit::Error);

impl Error {
    /// The typed reason.
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }

    /// Whether the connection is gone, so connecting again is the remedy.
    pub fn is_disconnected(&self) -> bool {
        matches!(self.0, wit::Error::Disconnected(_))
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            wit::Error::InvalidArgument(m) => write!(f, "invalid MQTT argument: {m}"),
            wit::Error::Dns(m) => write!(f, "MQTT broker name resolution failed: {m}"),
            wit::Error::ConnectionRefused(m) => write!(f, "MQTT connection refused: {m}"),
            wit::Error::NotAuthorized(m) => write!(f, "MQTT not authorized: {m}"),
            wit::Error::Timeout => write!(f, "MQTT operation timed out"),
            wit::Error::Tls(m) => write!(f, "MQTT TLS error: {m}"),
            wit::Error::Protocol(m) => write!(f, "MQTT protocol error: {m}"),
            wit::Error::Disconnected(m) => write!(f, "MQTT disconnected: {m}"),
            wit::Error::Io(m) => write!(f, "MQTT I/O error: {m}"),
            wit::Error::Denied(m) => write!(f, "MQTT connection denied: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// A received message.
#[derive(Clone, Debug)]
pub struct Message {
    /// The topic it was published to.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// The QoS it was delivered with.
    pub qos: QoS,
    /// Whether the broker kept it as the topic's retained message.
    pub retain: bool,
    /// Publish-to-receipt time, when the payload was made with
    /// [`crate::stamp`].
    pub latency: Option<Duration>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Connection settings; [`connect`] uses the defaults.
#[derive(Clone, Debug)]
pub struct Connect(wit::ConnectOptions);

impl Connect {
    /// Settings for `url` (`mqtt://host[:port]` or `mqtts://host[:port]`):
    /// MQTT 3.1.1, clean session, 60 s keep-alive, 10 s timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self(wit::ConnectOptions {
            url: url.into(),
            client_id: None,
            clean_session: true,
            keep_alive: None,
            username: None,
            password: None,
            protocol: Protocol::V311,
            timeout: None,
            name: None,
        })
    }

    /// The client id (default: unique within the run).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.0.client_id = Some(id.into());
        self
    }

    /// Resume the broker's session for this client id instead of a fresh one.
    pub fn persistent_session(mut self) -> Self {
        self.0.clean_session = false;
        self
    }

    /// The keep-alive interval (at least 1 s, or 5 s for MQTT 5).
    pub fn keep_alive(mut self, every: Duration) -> Self {
        self.0.keep_alive = Some(nanos(every));
        self
    }

    /// Username and password.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.0.username = Some(user.into());
        self.0.password = Some(password.into());
        self
    }

    /// Speak MQTT 5 instead of 3.1.1.
    pub fn v5(mut self) -> Self {
        self.0.protocol = Protocol::V5;
        self
    }

    /// Time allowed for the handshake and for each later operation.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.0.timeout = Some(nanos(timeout));
        self
    }

    /// The metric name of this connection (default: the broker's `host:port`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.0.name = Some(name.into());
        self
    }

    /// Connects and waits for the broker's CONNACK.
    pub fn connect(self) -> Result<Connection, Error> {
        wit::connect(&self.0).map(Connection).map_err(Error)
    }
}

/// Connects to `url` with the default settings (see [`Connect`]).
pub fn connect(url: impl Into<String>) -> Result<Connection, Error> {
    Connect::new(url).connect()
}

/// An open MQTT connection.
#[derive(Debug)]
pub struct Connection(wit::Connection);

impl Connection {
    /// Publishes and waits until the message is written (QoS 0),
    /// acknowledged (QoS 1) or completed (QoS 2). The metric name is the
    /// topic; see [`Connection::message`] for a name, retain and more.
    pub fn publish(&self, topic: &str, payload: impl AsRef<[u8]>, qos: QoS) -> Result<(), Error> {
        self.message(topic, payload).qos(qos).send()
    }

    /// A message to publish, with its options.
    pub fn message<'c>(&'c self, topic: &str, payload: impl AsRef<[u8]>) -> Publish<'c> {
        Publish {
            conn: self,
            topic: topic.to_owned(),
            payload: payload.as_ref().to_vec(),
            qos: QoS::AtMostOnce,
            retain: false,
            name: None,
        }
    }

    /// Subscribes to a topic filter (`+`, `#` wildcards); returns the QoS
    /// the broker granted. Messages are counted under the filter.
    pub fn subscribe(&self, filter: &str, qos: QoS) -> Result<QoS, Error> {
        self.0.subscribe(filter, qos, None).map_err(Error)
    }

    /// Like [`Connection::subscribe`], counting messages under `name`.
    pub fn subscribe_named(&self, filter: &str, qos: QoS, name: &str) -> Result<QoS, Error> {
        self.0.subscribe(filter, qos, Some(name)).map_err(Error)
    }

    /// Removes a subscription.
    pub fn unsubscribe(&self, filter: &str) -> Result<(), Error> {
        self.0.unsubscribe(filter).map_err(Error)
    }

    /// The next received message, waiting at most `timeout`.
    pub fn next_message(&self, timeout: Duration) -> Result<Option<Message>, Error> {
        let m = self.0.next_message(nanos(timeout)).map_err(Error)?;
        Ok(m.map(|m| Message {
            topic: m.topic,
            payload: m.payload,
            qos: m.qos,
            retain: m.retain,
            latency: m.latency.map(Duration::from_nanos),
        }))
    }

    /// Whether the connection is still open.
    pub fn is_connected(&self) -> bool {
        self.0.is_connected()
    }

    /// Sends DISCONNECT and closes the connection.
    pub fn disconnect(self) -> Result<(), Error> {
        self.0.disconnect().map_err(Error)
    }
}

/// A message being prepared by [`Connection::message`].
#[must_use = "a message is published by `send`"]
pub struct Publish<'c> {
    conn: &'c Connection,
    topic: String,
    payload: Vec<u8>,
    qos: QoS,
    retain: bool,
    name: Option<String>,
}

impl Publish<'_> {
    /// The delivery guarantee (default: at most once).
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// Ask the broker to keep it as the topic's retained message.
    pub fn retain(mut self) -> Self {
        self.retain = true;
        self
    }

    /// The metric name (default: the topic), so per-device topics can
    /// share one row.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Publishes and waits for the confirmation its QoS promises.
    pub fn send(self) -> Result<(), Error> {
        self.conn
            .0
            .publish(
                &self.topic,
                &self.payload,
                self.qos,
                self.retain,
                self.name.as_deref(),
            )
            .map_err(Error)
    }
}

/// A connection kept across iterations and opened again when lost: the
/// long-lived device connection of an IoT scenario. Keep it in a
/// `thread_local!`; each VU has its own.
///
/// ```no_run
/// use guest_sdk::mqtt::{self, Persistent, QoS};
/// thread_local!(static DEVICE: Persistent = const { Persistent::new() });
/// fn iteration() -> guest_sdk::Result {
///     DEVICE.with(|d| {
///         d.with(
///             || mqtt::connect("mqtt://127.0.0.1:1883"),
///             |c| c.publish("telemetry", b"21.5", QoS::AtLeastOnce),
///         )
///     })?;
///     Ok(())
/// }
/// ```
#[derive(Debug, Default)]
pub struct Persistent(std::cell::RefCell<Option<Connection>>);

impl Persistent {
    /// No connection yet.
    pub const fn new() -> Self {
        Self(std::cell::RefCell::new(None))
    }

    /// Runs `f` on the connection, first opening it with `connect` (which
    /// may also subscribe) when there is none or it was lost. When `f`
    /// fails because the connection is gone, it is dropped, so the next
    /// call connects again.
    pub fn with<T>(
        &self,
        connect: impl FnOnce() -> Result<Connection, Error>,
        f: impl FnOnce(&Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut slot = self.0.borrow_mut();
        if !slot.as_ref().is_some_and(Connection::is_connected) {
            *slot = None;
            *slot = Some(connect()?);
        }
        let Some(conn) = slot.as_ref() else {
            unreachable!("connected just above")
        };
        let result = f(conn);
        if matches!(&result, Err(e) if e.is_disconnected()) {
            *slot = None;
        }
        result
    }

    /// Closes the connection, if open, with a DISCONNECT.
    pub fn close(&self) -> Result<(), Error> {
        match self.0.borrow_mut().take() {
            Some(c) => c.disconnect(),
            None => Ok(()),
        }
    }
}
