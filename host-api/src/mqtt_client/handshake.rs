//! Opening a connection: the egress rules, name lookup, TCP, TLS, and
//! CONNECT answered by CONNACK.

use std::net::SocketAddr;

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::driver::io_error;
use super::wire::{Codec, In, Out};
use super::Settings;
use crate::bindings::runner::scenario::mqtt::Error;
use crate::stream::Io;

/// An open, logged-in connection.
pub(super) struct Opened {
    pub io: Io,
    /// The keep-alive to keep: the broker's, if it imposes one.
    pub keep_alive: std::time::Duration,
    /// Bytes read past CONNACK.
    pub rest: BytesMut,
    /// The largest packet the broker takes, if it said.
    pub max_out: Option<u32>,
    /// QoS 1 and 2 publishes the broker takes unacknowledged at once.
    pub receive_max: u16,
}

/// Opens the connection `s` describes and logs in. The caller bounds the
/// whole by the connect timeout.
pub(super) async fn open(s: &Settings, codec: Codec) -> Result<Opened, Error> {
    let addrs = resolve(s).await?;
    let tcp = TcpStream::connect(&addrs[..])
        .await
        .map_err(|e| io_error(&e))?;
    // Publishes are small and latency-bound; never wait for Nagle.
    let _ = tcp.set_nodelay(true);
    let mut io = match &s.tls {
        None => Io::Tcp(tcp),
        Some(cfg) => {
            let bare = s.host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(bare.to_owned())
                .map_err(|e| Error::InvalidArgument(format!("host {}: {e}", s.host)))?;
            let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(name, tcp)
                .await
                .map_err(
                    |e| match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                        Some(r) => Error::Tls(format!("{}: {r}", s.host)),
                        None => io_error(&e),
                    },
                )?;
            Io::Tls(Box::new(tls))
        }
    };
    let mut out = BytesMut::new();
    let keep_alive = u16::try_from(s.keep_alive.as_secs()).unwrap_or(u16::MAX);
    let connect = Out::Connect {
        client_id: s.client_id.clone(),
        clean: s.clean_session,
        keep_alive,
        login: s.credentials.clone(),
    };
    codec.encode(connect, &mut out)?;
    io.write_all(&out).await.map_err(|e| io_error(&e))?;
    io.flush().await.map_err(|e| io_error(&e))?;
    let mut buf = BytesMut::with_capacity(64);
    let mut need = 0;
    loop {
        if let Some(p) = codec.decode(&mut buf, &mut need)? {
            return match p {
                In::ConnAck(Ok(accepted)) => {
                    let secs = accepted.keep_alive.unwrap_or(keep_alive);
                    Ok(Opened {
                        io,
                        keep_alive: std::time::Duration::from_secs(secs.into()),
                        rest: buf,
                        max_out: accepted.max_packet,
                        // Absent, MQTT 5 says 65,535; MQTT 3.1.1 sets no limit.
                        receive_max: accepted.receive_max.unwrap_or(u16::MAX),
                    })
                }
                In::ConnAck(Err(e)) => Err(e),
                In::Invalid(what) => Err(Error::Protocol(format!("the broker sent {what}"))),
                other => Err(Error::Protocol(format!("expected CONNACK, got {other:?}"))),
            };
        }
        buf.reserve(need);
        match io.read_buf(&mut buf).await {
            Ok(0) => {
                return Err(Error::Disconnected(
                    "the broker closed the connection before CONNACK".into(),
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(io_error(&e)),
        }
    }
}

/// The broker's addresses, each allowed by the egress rules.
async fn resolve(s: &Settings) -> Result<Vec<SocketAddr>, Error> {
    let denied = |d: crate::egress::Denied| Error::Denied(d.0);
    let by_name = s.egress.check_name(&s.host, s.port).map_err(denied)?;
    let bare = s.host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, s.port)],
        Err(_) => tokio::net::lookup_host((bare, s.port))
            .await
            .map_err(|e| Error::Dns(format!("{}: {e}", s.host)))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(Error::Dns(format!("{}: no addresses", s.host)));
    }
    if !by_name {
        // Every address tried must be allowed.
        for a in &addrs {
            s.egress
                .check_addr(&s.host, a.ip(), s.port)
                .map_err(denied)?;
        }
    }
    Ok(addrs)
}
