//! Host side of the `mqtt` interface: `connect` and the `connection`
//! resource, on rumqttc's packet codecs (see [`crate::mqtt_client`]).
//!
//! Every operation is timed by the host and recorded under a metric name:
//! connects and connection losses under the connection's name, publishes
//! under the topic (or the name the guest gives), received messages under
//! the subscription they matched.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Resource;

use crate::bindings::runner::scenario::mqtt::{
    ConnectOptions, Error, Host, HostConnection, Message, Protocol as Version, Qos,
};
use crate::messaging::{metric_name, micros, off_fiber, published, Event, Protocol};
pub use crate::mqtt_client::error_kind;
use crate::mqtt_client::{Session, Settings};
use crate::recorder::Recorder;
use crate::VuState;

/// Time allowed for a handshake or an operation when the guest sets none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most MQTT connections one VU may hold (a VU may play many devices).
const MAX_CONNECTIONS_PER_VU: usize = 4096;

/// Makes default client ids unique within a run.
static NEXT_CLIENT: AtomicU64 = AtomicU64::new(0);

/// An open connection, as the guest's `connection` resource holds it.
pub struct Connection {
    session: Session,
}

/// Checks the options and turns them into a connection's settings, plus the
/// connection's metric name.
fn settings(
    o: ConnectOptions,
    vu: u32,
    run: &crate::RunContext,
) -> Result<(Settings, Arc<str>), Error> {
    let bad = |m: String| Error::InvalidArgument(m);
    let url = url::Url::parse(&o.url)
        .map_err(|e| bad(format!("broker URL {:?} is not valid: {e}", o.url)))?;
    let secure = match url.scheme() {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        s => {
            return Err(bad(format!(
                "broker URL scheme {s:?} is not supported: use mqtt:// or mqtts://"
            )))
        }
    };
    let host = url
        .host_str()
        .ok_or_else(|| bad(format!("broker URL {:?} has no host", o.url)))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port().unwrap_or(if secure { 8883 } else { 1883 });
    let v5 = matches!(o.protocol, Version::V5);
    let keep_alive = o
        .keep_alive
        .map_or(Duration::from_secs(60), Duration::from_nanos);
    let least = if v5 { 5 } else { 1 };
    if (keep_alive.is_zero() && v5) || (!keep_alive.is_zero() && keep_alive.as_secs() < least) {
        return Err(bad(format!(
            "keep-alive must be at least {least} s{}",
            if v5 { "" } else { ", or 0 to disable it" }
        )));
    }
    let client_id = match o.client_id {
        Some(id) if id.is_empty() && !o.clean_session => {
            return Err(bad("an empty client id needs a clean session".into()))
        }
        Some(id) => id,
        None => format!(
            "runner-{}-{vu}-{}",
            std::process::id(),
            NEXT_CLIENT.fetch_add(1, Ordering::Relaxed)
        ),
    };
    let from_url = (!url.username().is_empty()).then(|| {
        let pass = url.password().unwrap_or_default();
        (url.username().to_owned(), pass.to_owned())
    });
    let credentials = match (o.username, o.password) {
        (Some(u), p) => Some((u, p.unwrap_or_default())),
        (None, Some(p)) => Some((String::new(), p)),
        (None, None) => from_url,
    };
    let timeout = o.timeout.map_or(DEFAULT_TIMEOUT, Duration::from_nanos);
    if timeout.is_zero() {
        return Err(bad("the timeout must be more than 0".into()));
    }
    let name: Arc<str> = metric_name(o.name.unwrap_or_else(|| format!("{host}:{port}"))).into();
    let s = Settings {
        host,
        port,
        tls: secure.then(|| run.http.tls_plain()),
        client_id,
        clean_session: o.clean_session,
        keep_alive,
        credentials,
        v5,
        timeout,
        name: name.clone(),
        egress: run.egress.clone(),
        tasks: run.connections.clone(),
    };
    Ok((s, name))
}

fn record(r: &Recorder, name: &str, event: Event<'_>) {
    r.messaging(Protocol::Mqtt, name, event);
}

impl Host for VuState {
    async fn connect(
        &mut self,
        options: ConnectOptions,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        let recorder = self.run.recorder.clone();
        let (settings, name) = match settings(options, self.vu_id, &self.run) {
            Ok(s) => s,
            Err(e) => {
                record(&recorder, "invalid", Event::Error(error_kind(&e)));
                return Ok(Err(e));
            }
        };
        if self.mqtt_connections >= MAX_CONNECTIONS_PER_VU {
            let e = Error::InvalidArgument(format!(
                "this VU already holds {MAX_CONNECTIONS_PER_VU} MQTT connections"
            ));
            return Ok(Err(e));
        }
        let started = Instant::now();
        let destination = format!("{}:{}", settings.host, settings.port);
        let connect_recorder = recorder.clone();
        let result = off_fiber(move || Session::connect(settings, connect_recorder))
            .await
            .unwrap_or_else(|e| Err(Error::Io(e)));
        self.resumed();
        match result {
            Ok(session) => {
                let us = micros(started.elapsed());
                record(&recorder, &name, Event::Connected { us });
                self.mqtt_connections += 1;
                Ok(Ok(self.table.push(Connection { session })?))
            }
            Err(e) => {
                if let Error::Denied(_) = &e {
                    recorder.denied(&destination);
                }
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
        topic: String,
        payload: Vec<u8>,
        qos: Qos,
        retain: bool,
        name: Option<String>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let c = self.table.get(&this)?;
        let name = metric_name(name.unwrap_or_else(|| topic.clone()));
        let bytes = payload.len() as u64;
        let started = Instant::now();
        let result = c.session.publish(topic, payload, qos, retain).await;
        let event = published(&result, started, bytes, error_kind);
        record(&self.run.recorder, &name, event);
        self.resumed();
        Ok(result)
    }

    async fn subscribe(
        &mut self,
        this: Resource<Connection>,
        filter: String,
        qos: Qos,
        name: Option<String>,
    ) -> wasmtime::Result<Result<Qos, Error>> {
        let c = self.table.get(&this)?;
        let name = metric_name(name.unwrap_or_else(|| filter.clone()));
        let result = c.session.subscribe(filter, qos, name.as_str().into()).await;
        if let Err(e) = &result {
            record(&self.run.recorder, &name, Event::Error(error_kind(e)));
        }
        self.resumed();
        Ok(result)
    }

    async fn unsubscribe(
        &mut self,
        this: Resource<Connection>,
        filter: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        let c = self.table.get(&this)?;
        let result = c.session.unsubscribe(filter).await;
        self.resumed();
        Ok(result)
    }

    async fn next_message(
        &mut self,
        this: Resource<Connection>,
        timeout: u64,
    ) -> wasmtime::Result<Result<Option<Message>, Error>> {
        let c = self.table.get_mut(&this)?;
        let result = c.session.next_message(Duration::from_nanos(timeout)).await;
        self.resumed();
        Ok(result.map(|m| {
            m.map(|m| Message {
                topic: m.topic,
                payload: m.payload.to_vec(),
                qos: m.qos,
                retain: m.retain,
                latency: m.latency,
            })
        }))
    }

    async fn is_connected(&mut self, this: Resource<Connection>) -> wasmtime::Result<bool> {
        Ok(self.table.get(&this)?.session.closed().is_none())
    }

    async fn disconnect(
        &mut self,
        this: Resource<Connection>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let c = self.table.get(&this)?;
        let result = c.session.disconnect().await;
        self.resumed();
        Ok(result)
    }

    async fn drop(&mut self, this: Resource<Connection>) -> wasmtime::Result<()> {
        // Dropping the session says DISCONNECT (see `Session`'s Drop).
        self.table.delete(this)?;
        self.mqtt_connections = self.mqtt_connections.saturating_sub(1);
        Ok(())
    }
}
