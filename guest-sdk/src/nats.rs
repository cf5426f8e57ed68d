//! NATS: publish, subscribe with queue groups, request/reply and JetStream
//! publish, timed by the host. Connections and subscriptions belong to the
//! VU and close when dropped, when the VU ends or when it traps. A
//! connection whose server goes away reconnects in the background.
//!
//! ```no_run
//! # fn f() -> guest_sdk::Result {
//! use guest_sdk::nats;
//! use std::time::Duration;
//! let c = nats::connect("nats://127.0.0.1:4222")?;
//! let sub = c.queue_subscribe("orders.*", "workers")?;
//! c.publish("orders.new", guest_sdk::stamp(b"{}"))?;
//! if let Some(m) = sub.next_message(Duration::from_secs(1))? {
//!     println!("{} after {:?}", m.subject, m.latency);
//! }
//! let reply = c.request("time.now", b"")?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use crate::__bindings::runner::scenario::nats as wit;

pub use wit::Error as ErrorKind;

/// Why a NATS operation failed.
#[derive(Clone, Debug)]
pub struct Error(wit::Error);

impl Error {
    /// The typed reason.
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }

    /// Whether the operation timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self.0, wit::Error::Timeout)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            wit::Error::InvalidArgument(m) => write!(f, "invalid NATS argument: {m}"),
            wit::Error::Dns(m) => write!(f, "NATS server name resolution failed: {m}"),
            wit::Error::ConnectionRefused(m) => write!(f, "NATS connection refused: {m}"),
            wit::Error::NotAuthorized(m) => write!(f, "NATS not authorized: {m}"),
            wit::Error::Timeout => write!(f, "NATS operation timed out"),
            wit::Error::NoResponders => write!(f, "no NATS responders for the request"),
            wit::Error::Tls(m) => write!(f, "NATS TLS error: {m}"),
            wit::Error::Protocol(m) => write!(f, "NATS protocol error: {m}"),
            wit::Error::Disconnected(m) => write!(f, "NATS disconnected: {m}"),
            wit::Error::Io(m) => write!(f, "NATS I/O error: {m}"),
            wit::Error::Denied(m) => write!(f, "NATS connection denied: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// A received message or a reply.
#[derive(Clone, Debug)]
pub struct Message {
    /// The subject it was published to.
    pub subject: String,
    /// Where the sender waits for an answer, if it does.
    pub reply: Option<String>,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its headers, in order.
    pub headers: Vec<(String, String)>,
    /// Publish-to-receipt time, when the payload was made with
    /// [`crate::stamp`].
    pub latency: Option<Duration>,
}

impl From<wit::Message> for Message {
    fn from(m: wit::Message) -> Self {
        Self {
            subject: m.subject,
            reply: m.reply,
            payload: m.payload,
            headers: m.headers,
            latency: m.latency.map(Duration::from_nanos),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Connection settings; [`connect`] uses the defaults.
#[derive(Clone, Debug)]
pub struct Connect(wit::ConnectOptions);

impl Connect {
    /// Settings for `url` (`nats://host[:port]` or `tls://host[:port]`,
    /// several separated by commas), with a 10 s timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self(wit::ConnectOptions {
            url: url.into(),
            token: None,
            username: None,
            password: None,
            tls: false,
            timeout: None,
            name: None,
        })
    }

    /// Token authentication.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.0.token = Some(token.into());
        self
    }

    /// Username and password.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.0.username = Some(user.into());
        self.0.password = Some(password.into());
        self
    }

    /// Require TLS.
    pub fn tls(mut self) -> Self {
        self.0.tls = true;
        self
    }

    /// Time allowed for connecting and for each later operation.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.0.timeout = Some(nanos(timeout));
        self
    }

    /// The metric name of this connection (default: the server's `host:port`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.0.name = Some(name.into());
        self
    }

    /// Connects.
    pub fn connect(self) -> Result<Connection, Error> {
        wit::connect(&self.0).map(Connection).map_err(Error)
    }
}

/// Connects to `url` with the default settings (see [`Connect`]).
pub fn connect(url: impl Into<String>) -> Result<Connection, Error> {
    Connect::new(url).connect()
}

/// An open NATS connection.
#[derive(Debug)]
pub struct Connection(wit::Connection);

impl Connection {
    /// Publishes and flushes; the metric name is the subject.
    pub fn publish(&self, subject: &str, payload: impl AsRef<[u8]>) -> Result<(), Error> {
        self.0
            .publish(subject, payload.as_ref(), None, &[], None)
            .map_err(Error)
    }

    /// Publishes with a metric name, a reply subject and headers.
    pub fn publish_with(
        &self,
        subject: &str,
        payload: impl AsRef<[u8]>,
        reply: Option<&str>,
        headers: &[(String, String)],
        name: Option<&str>,
    ) -> Result<(), Error> {
        self.0
            .publish(subject, payload.as_ref(), reply, headers, name)
            .map_err(Error)
    }

    /// Answers a request: publishes `payload` to the message's reply subject.
    pub fn respond(&self, to: &Message, payload: impl AsRef<[u8]>) -> Result<(), Error> {
        let reply = to.reply.as_deref().ok_or_else(|| {
            Error(wit::Error::InvalidArgument(format!(
                "the message on {:?} has no reply subject",
                to.subject
            )))
        })?;
        self.0
            .publish(reply, payload.as_ref(), None, &[], Some("reply"))
            .map_err(Error)
    }

    /// Subscribes to a subject (`*`, `>` wildcards).
    pub fn subscribe(&self, subject: &str) -> Result<Subscription, Error> {
        self.0
            .subscribe(subject, None, None)
            .map(Subscription)
            .map_err(Error)
    }

    /// Subscribes as a member of a queue group: each message goes to one
    /// member.
    pub fn queue_subscribe(&self, subject: &str, group: &str) -> Result<Subscription, Error> {
        self.0
            .subscribe(subject, Some(group), None)
            .map(Subscription)
            .map_err(Error)
    }

    /// Subscribes, counting messages under `name`.
    pub fn subscribe_named(
        &self,
        subject: &str,
        group: Option<&str>,
        name: &str,
    ) -> Result<Subscription, Error> {
        self.0
            .subscribe(subject, group, Some(name))
            .map(Subscription)
            .map_err(Error)
    }

    /// Sends a request and waits for the first reply (the connection's
    /// timeout). The metric name is the subject.
    pub fn request(&self, subject: &str, payload: impl AsRef<[u8]>) -> Result<Message, Error> {
        self.0
            .request(subject, payload.as_ref(), None, None)
            .map(Message::from)
            .map_err(Error)
    }

    /// Like [`Connection::request`], with a timeout and a metric name.
    pub fn request_with(
        &self,
        subject: &str,
        payload: impl AsRef<[u8]>,
        timeout: Option<Duration>,
        name: Option<&str>,
    ) -> Result<Message, Error> {
        self.0
            .request(subject, payload.as_ref(), timeout.map(nanos), name)
            .map(Message::from)
            .map_err(Error)
    }

    /// Publishes to a JetStream stream and waits for its acknowledgement;
    /// returns the message's sequence number in the stream.
    pub fn jetstream_publish(
        &self,
        subject: &str,
        payload: impl AsRef<[u8]>,
    ) -> Result<u64, Error> {
        self.0
            .jetstream_publish(subject, payload.as_ref(), None)
            .map_err(Error)
    }

    /// Like [`Connection::jetstream_publish`], counted under `name`.
    pub fn jetstream_publish_named(
        &self,
        subject: &str,
        payload: impl AsRef<[u8]>,
        name: &str,
    ) -> Result<u64, Error> {
        self.0
            .jetstream_publish(subject, payload.as_ref(), Some(name))
            .map_err(Error)
    }

    /// Waits until everything published is written to the socket.
    pub fn flush(&self) -> Result<(), Error> {
        self.0.flush().map_err(Error)
    }

    /// Whether the connection is currently connected.
    pub fn is_connected(&self) -> bool {
        self.0.is_connected()
    }
}

/// A subscription; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription(wit::Subscription);

impl Subscription {
    /// The next message, waiting at most `timeout`.
    pub fn next_message(&self, timeout: Duration) -> Result<Option<Message>, Error> {
        let m = self.0.next_message(nanos(timeout)).map_err(Error)?;
        Ok(m.map(Message::from))
    }

    /// Stops the subscription.
    pub fn unsubscribe(self) -> Result<(), Error> {
        self.0.unsubscribe().map_err(Error)
    }
}
