//! Host side of the `nats` interface: `connect`, and the `connection` and
//! `subscription` resources, on async-nats.
//!
//! Connects and connection losses are recorded under the connection's
//! metric name, publishes and requests under the subject (or the name the
//! guest gives), received messages under their subscription's name. Each
//! subscription has a small task that counts messages as they arrive, so
//! the counts and latencies do not depend on when the guest reads them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::connection::State;
use bytes::Bytes;
use tokio::sync::mpsc;
use wasmtime::component::Resource;

use crate::bindings::runner::scenario::nats::{
    ConnectOptions, Error, Headers, Host, HostConnection, HostSubscription, Message,
};
use crate::limits::sizes;
use crate::messaging::{metric_name, micros, off_fiber, published, stamp_latency, Event, Protocol};
use crate::nats_url::{check_url, UrlAuth};
use crate::recorder::Recorder;
use crate::VuState;

/// Time allowed for connecting or an operation when the guest sets none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages a subscription holds for its VU; more are counted `unread`.
const INBOX: usize = 1024;

/// An open connection, as the guest's `connection` resource holds it.
pub struct Connection {
    client: async_nats::Client,
    jetstream: Option<async_nats::jetstream::Context>,
    timeout: Duration,
}

/// A subscription: the messages its counting task passed on.
pub struct Subscription {
    inbox: mpsc::Receiver<(async_nats::Message, Option<u64>)>,
    task: tokio::task::AbortHandle,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // The task owns the subscriber; ending it unsubscribes.
        self.task.abort();
    }
}

/// The metric kind of an error, as the summary counts it.
pub fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::InvalidArgument(_) => "invalid-argument",
        Error::Dns(_) => "dns",
        Error::ConnectionRefused(_) => "connection-refused",
        Error::NotAuthorized(_) => "not-authorized",
        Error::Timeout => "timeout",
        Error::NoResponders => "no-responders",
        Error::Tls(_) => "tls",
        Error::Protocol(_) => "protocol",
        Error::Disconnected(_) => "disconnected",
        Error::Io(_) => "io",
        Error::Denied(_) => "denied",
    }
}

fn record(r: &Recorder, name: &str, event: Event<'_>) {
    r.messaging(Protocol::Nats, name, event);
}

/// Finds an I/O error under `e` and names its cause.
fn io_cause(e: &(dyn std::error::Error + 'static)) -> Option<Error> {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.is::<rustls::Error>() {
            return Some(Error::Tls(s.to_string()));
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            // rustls reports handshake failures as I/O errors wrapping its own.
            if io.get_ref().is_some_and(|i| i.is::<rustls::Error>()) {
                return Some(Error::Tls(io.to_string()));
            }
            return Some(match io.kind() {
                K::ConnectionRefused => Error::ConnectionRefused(io.to_string()),
                K::TimedOut => Error::Timeout,
                _ => Error::Io(io.to_string()),
            });
        }
        source = s.source();
    }
    None
}

fn connect_error(e: &async_nats::ConnectError) -> Error {
    use async_nats::ConnectErrorKind as K;
    let text = e.to_string();
    match e.kind() {
        K::ServerParse => Error::InvalidArgument(text),
        K::Dns => Error::Dns(text),
        K::Authentication | K::AuthorizationViolation => Error::NotAuthorized(text),
        K::TimedOut => Error::Timeout,
        K::Tls => Error::Tls(text),
        K::Io | K::MaxReconnects => {
            io_cause(e).unwrap_or_else(|| {
                // async-nats folds "connection refused" into its message.
                if text.contains("refused") {
                    Error::ConnectionRefused(text)
                } else {
                    Error::Io(text)
                }
            })
        }
    }
}

fn closed() -> Error {
    Error::Disconnected("the connection is closed".into())
}

/// A subject or queue group: non-empty, no whitespace.
fn check_token(what: &str, s: &str) -> Result<(), Error> {
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        return Err(Error::InvalidArgument(format!(
            "{what} {s:?} is not valid: it must be non-empty and free of whitespace"
        )));
    }
    Ok(())
}

fn header_map(headers: &Headers) -> async_nats::HeaderMap {
    let mut map = async_nats::HeaderMap::new();
    for (k, v) in headers {
        map.append(k.as_str(), v.as_str());
    }
    map
}

fn to_message(m: async_nats::Message, latency: Option<u64>) -> Message {
    let headers = m
        .headers
        .as_ref()
        .map(|h| {
            h.iter()
                .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Message {
        subject: m.subject.to_string(),
        reply: m.reply.map(|r| r.to_string()),
        payload: m.payload.to_vec(),
        headers,
        latency,
    }
}

/// Whether every server of `urls` may be reached: by name, or by each
/// address the name has; else the destination denied and why.
async fn allowed(
    egress: &crate::egress::Egress,
    urls: &str,
    timeout: Duration,
) -> Result<(), (String, String)> {
    if egress.is_open() {
        return Ok(());
    }
    for (host, port) in crate::nats_url::servers(urls) {
        let destination = format!("{host}:{port}");
        let by_name = egress
            .check_name(&host, port)
            .map_err(|d| (destination.clone(), d.0))?;
        if by_name {
            continue;
        }
        let addrs = tokio::time::timeout(timeout, tokio::net::lookup_host(&destination))
            .await
            .ok()
            .and_then(Result::ok)
            .map(Iterator::collect::<Vec<_>>)
            .unwrap_or_default();
        if addrs.is_empty() {
            let why =
                format!("{destination} could not be resolved to check it against the egress rules");
            return Err((destination, why));
        }
        for a in addrs {
            egress
                .check_addr(&host, a.ip(), port)
                .map_err(|d| (destination.clone(), d.0))?;
        }
    }
    Ok(())
}

impl Host for VuState {
    async fn connect(
        &mut self,
        o: ConnectOptions,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        let recorder = self.run.recorder.clone();
        let (default_name, url_auth) = match check_url(&o.url) {
            Ok(n) => n,
            Err(e) => {
                record(&recorder, "invalid", Event::Error(error_kind(&e)));
                return Ok(Err(e));
            }
        };
        let name: Arc<str> = metric_name(o.name.unwrap_or(default_name)).into();
        if self.nats_connections >= sizes::NATS_CONNECTIONS {
            let e = Error::InvalidArgument(format!(
                "this VU already holds {} NATS connections; drop one first",
                sizes::NATS_CONNECTIONS
            ));
            record(&recorder, &name, Event::Error(error_kind(&e)));
            return Ok(Err(e));
        }
        let timeout = o.timeout.map_or(DEFAULT_TIMEOUT, Duration::from_nanos);
        let mut opts = async_nats::ConnectOptions::new()
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            .read_buffer_capacity(8 * 1024)
            .subscription_capacity(INBOX)
            .client_capacity(256)
            .tls_client_config((*self.run.http.tls_plain()).clone())
            // Reconnect quickly once the server is back: a load test wants
            // to see the outage end, not a client backing off for seconds.
            // The first attempt (1) goes at once.
            .reconnect_delay_callback(|attempts| match attempts {
                0 | 1 => Duration::ZERO,
                n => Duration::from_millis(50 << (n - 2).min(5)),
            });
        // Options win over credentials written into the URL.
        let url_auth = if o.token.is_some() || o.username.is_some() {
            UrlAuth::None
        } else {
            url_auth
        };
        if let Some(t) = o.token {
            opts = opts.token(t);
        }
        if let Some(u) = o.username {
            opts = opts.user_and_password(u, o.password.unwrap_or_default());
        }
        match url_auth {
            UrlAuth::None => {}
            UrlAuth::Token(t) => opts = opts.token(t),
            UrlAuth::UserPassword(u, p) => opts = opts.user_and_password(u, p),
        }
        if o.tls {
            opts = opts.require_tls(true);
        }
        let events = recorder.clone();
        let events_name = name.clone();
        opts = opts.event_callback(move |event| {
            let kind = match event {
                async_nats::Event::Disconnected => Some("disconnected"),
                async_nats::Event::SlowConsumer(_) => Some("slow-consumer"),
                async_nats::Event::ServerError(async_nats::ServerError::AuthorizationViolation) => {
                    Some("not-authorized")
                }
                async_nats::Event::ServerError(_) => Some("server-error"),
                _ => None,
            };
            if let Some(kind) = kind {
                record(&events, &events_name, Event::Error(kind));
            }
            async {}
        });
        let egress = self.run.egress.clone();
        if !egress.is_open() {
            // The servers a connection may go to are the ones checked.
            opts = opts.ignore_discovered_servers();
        }
        let started = Instant::now();
        let url = o.url;
        let denied_at = recorder.clone();
        let handshake = move || async move {
            if let Err(d) = allowed(&egress, &url, timeout).await {
                denied_at.denied(&d.0);
                return Err(Error::Denied(d.1));
            }
            match tokio::time::timeout(timeout, opts.connect(url.as_str())).await {
                Err(_) => Err(Error::Timeout),
                Ok(Err(e)) => Err(connect_error(&e)),
                Ok(Ok(client)) => Ok(client),
            }
        };
        let result = off_fiber(handshake)
            .await
            .unwrap_or_else(|e| Err(Error::Io(e)));
        self.resumed();
        match result {
            Ok(client) => {
                record(
                    &recorder,
                    &name,
                    Event::Connected {
                        us: micros(started.elapsed()),
                    },
                );
                let c = Connection {
                    client,
                    jetstream: None,
                    timeout,
                };
                self.nats_connections += 1;
                Ok(Ok(self.table.push(c)?))
            }
            Err(e) => {
                record(&recorder, &name, Event::Error(error_kind(&e)));
                Ok(Err(e))
            }
        }
    }
}

impl HostConnection for VuState {
    async fn publish(
        &mut self,
        this: Resource<Connection>,
        subject: String,
        payload: Vec<u8>,
        reply: Option<String>,
        headers: Headers,
        name: Option<String>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let c = self.table.get(&this)?;
        let name = metric_name(name.unwrap_or_else(|| subject.clone()));
        let bytes = payload.len() as u64;
        let started = Instant::now();
        let result = async {
            check_token("subject", &subject)?;
            if let Some(r) = &reply {
                check_token("reply subject", r)?;
            }
            let payload = Bytes::from(payload);
            let sent = match (reply, headers.is_empty()) {
                (None, true) => c.client.publish(subject, payload).await,
                (None, false) => {
                    c.client
                        .publish_with_headers(subject, header_map(&headers), payload)
                        .await
                }
                (Some(r), true) => c.client.publish_with_reply(subject, r, payload).await,
                (Some(r), false) => {
                    c.client
                        .publish_with_reply_and_headers(subject, r, header_map(&headers), payload)
                        .await
                }
            };
            sent.map_err(|e| match e.kind() {
                async_nats::client::PublishErrorKind::Send => closed(),
                _ => Error::InvalidArgument(e.to_string()),
            })?;
            flush(&c.client, c.timeout).await
        };
        let result = tokio::time::timeout(c.timeout, result)
            .await
            .unwrap_or(Err(Error::Timeout));
        let event = published(&result, started, bytes, error_kind);
        record(&self.run.recorder, &name, event);
        self.resumed();
        Ok(result)
    }

    async fn subscribe(
        &mut self,
        this: Resource<Connection>,
        subject: String,
        queue_group: Option<String>,
        name: Option<String>,
    ) -> wasmtime::Result<Result<Resource<Subscription>, Error>> {
        let c = self.table.get(&this)?;
        let name = metric_name(name.unwrap_or_else(|| subject.clone()));
        if self.subscriptions >= sizes::SUBSCRIPTIONS {
            let e = Error::InvalidArgument(format!(
                "this VU already holds {} NATS subscriptions; drop one first",
                sizes::SUBSCRIPTIONS
            ));
            record(&self.run.recorder, &name, Event::Error(error_kind(&e)));
            return Ok(Err(e));
        }
        let result = async {
            check_token("subject", &subject)?;
            let sub = match queue_group {
                Some(q) => {
                    check_token("queue group", &q)?;
                    c.client.queue_subscribe(subject, q).await
                }
                None => c.client.subscribe(subject).await,
            };
            let sub = sub.map_err(|e| Error::InvalidArgument(e.to_string()))?;
            // The server has the subscription once it is flushed.
            flush(&c.client, c.timeout).await?;
            Ok(sub)
        }
        .await;
        let recorder = self.run.recorder.clone();
        let sub = match result {
            Ok(s) => s,
            Err(e) => {
                record(&recorder, &name, Event::Error(error_kind(&e)));
                self.resumed();
                return Ok(Err(e));
            }
        };
        let (tx, inbox) = mpsc::channel(INBOX);
        let task = tokio::spawn(forward(sub, tx, recorder, name.into()));
        let s = Subscription {
            inbox,
            task: task.abort_handle(),
        };
        self.resumed();
        self.subscriptions += 1;
        Ok(Ok(self.table.push(s)?))
    }

    async fn request(
        &mut self,
        this: Resource<Connection>,
        subject: String,
        payload: Vec<u8>,
        timeout: Option<u64>,
        name: Option<String>,
    ) -> wasmtime::Result<Result<Message, Error>> {
        let c = self.table.get(&this)?;
        let name = metric_name(name.unwrap_or_else(|| subject.clone()));
        let timeout = timeout.map_or(c.timeout, Duration::from_nanos);
        let sent = payload.len() as u64;
        let started = Instant::now();
        let result = async {
            check_token("subject", &subject)?;
            let req = async_nats::Request::new()
                .payload(Bytes::from(payload))
                .timeout(Some(timeout));
            c.client.send_request(subject, req).await.map_err(|e| {
                use async_nats::RequestErrorKind as K;
                match e.kind() {
                    K::TimedOut => Error::Timeout,
                    K::NoResponders => Error::NoResponders,
                    K::InvalidSubject | K::MaxPayloadExceeded => {
                        Error::InvalidArgument(e.to_string())
                    }
                    K::Other => io_cause(&e).unwrap_or_else(|| Error::Protocol(e.to_string())),
                }
            })
        };
        // The request carries its own timeout; this bounds a stuck client.
        let result = tokio::time::timeout(timeout + Duration::from_secs(1), result)
            .await
            .unwrap_or(Err(Error::Timeout));
        let result = result.map(|m| {
            let event = Event::Replied {
                us: micros(started.elapsed()),
                sent,
                received: m.payload.len() as u64,
            };
            record(&self.run.recorder, &name, event);
            let latency = stamp_latency(&m.payload);
            to_message(m, latency)
        });
        if let Err(e) = &result {
            record(&self.run.recorder, &name, Event::Error(error_kind(e)));
        }
        self.resumed();
        Ok(result)
    }

    async fn jetstream_publish(
        &mut self,
        this: Resource<Connection>,
        subject: String,
        payload: Vec<u8>,
        name: Option<String>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let c = self.table.get_mut(&this)?;
        let name = metric_name(name.unwrap_or_else(|| subject.clone()));
        let timeout = c.timeout;
        let js = c
            .jetstream
            .get_or_insert_with(|| async_nats::jetstream::new(c.client.clone()))
            .clone();
        let bytes = payload.len() as u64;
        let started = Instant::now();
        let result = async {
            check_token("subject", &subject)?;
            let ack = js
                .publish(subject, Bytes::from(payload))
                .await
                .map_err(|e| js_error(&e))?;
            let ack = ack.await.map_err(|e| js_error(&e))?;
            Ok(ack.sequence)
        };
        let result = tokio::time::timeout(timeout, result)
            .await
            .unwrap_or(Err(Error::Timeout));
        let event = published(&result, started, bytes, error_kind);
        record(&self.run.recorder, &name, event);
        self.resumed();
        Ok(result)
    }

    async fn flush(&mut self, this: Resource<Connection>) -> wasmtime::Result<Result<(), Error>> {
        let c = self.table.get(&this)?;
        let result = flush(&c.client, c.timeout).await;
        self.resumed();
        Ok(result)
    }

    async fn is_connected(&mut self, this: Resource<Connection>) -> wasmtime::Result<bool> {
        let c = self.table.get(&this)?;
        Ok(c.client.connection_state() == State::Connected)
    }

    async fn drop(&mut self, this: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        self.nats_connections = self.nats_connections.saturating_sub(1);
        Ok(())
    }
}

impl HostSubscription for VuState {
    async fn next_message(
        &mut self,
        this: Resource<Subscription>,
        timeout: u64,
    ) -> wasmtime::Result<Result<Option<Message>, Error>> {
        let s = self.table.get_mut(&this)?;
        let got = tokio::time::timeout(Duration::from_nanos(timeout), s.inbox.recv()).await;
        self.resumed();
        Ok(match got {
            Err(_) => Ok(None),
            Ok(Some((m, latency))) => Ok(Some(to_message(m, latency))),
            Ok(None) => Err(Error::Disconnected("the subscription has ended".into())),
        })
    }

    async fn unsubscribe(
        &mut self,
        this: Resource<Subscription>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let s = self.table.get(&this)?;
        s.task.abort();
        Ok(Ok(()))
    }

    async fn drop(&mut self, this: Resource<Subscription>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        self.subscriptions = self.subscriptions.saturating_sub(1);
        Ok(())
    }
}

async fn flush(client: &async_nats::Client, timeout: Duration) -> Result<(), Error> {
    match tokio::time::timeout(timeout, client.flush()).await {
        Err(_) => Err(Error::Timeout),
        Ok(Err(_)) => Err(closed()),
        Ok(Ok(())) => Ok(()),
    }
}

fn js_error(e: &async_nats::jetstream::context::PublishError) -> Error {
    use async_nats::jetstream::context::PublishErrorKind as K;
    match e.kind() {
        K::TimedOut => Error::Timeout,
        K::BrokenPipe => closed(),
        K::MaxPayloadExceeded => Error::InvalidArgument(e.to_string()),
        _ => Error::Protocol(e.to_string()),
    }
}

/// Counts a subscription's messages as they arrive and hands them to the
/// VU; when the VU does not keep up, they are counted `unread` and dropped.
async fn forward(
    mut sub: async_nats::Subscriber,
    tx: mpsc::Sender<(async_nats::Message, Option<u64>)>,
    recorder: Arc<Recorder>,
    name: Arc<str>,
) {
    use futures_util::StreamExt as _;
    while let Some(m) = sub.next().await {
        let latency = stamp_latency(&m.payload);
        let event = Event::Received {
            bytes: m.payload.len() as u64,
            latency_us: latency.map(|ns| ns / 1_000),
        };
        record(&recorder, &name, event);
        if tx.try_send((m, latency)).is_err() {
            record(&recorder, &name, Event::Unread);
        }
    }
}
