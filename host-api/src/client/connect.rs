//! Opening a connection: name lookup, the egress rules, TCP (from a
//! `--local-addr` if given), TLS, and the HTTP/1.1 or HTTP/2 handshake.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::h1;
use super::{hyper_error, io_error, ClientConfig, ConnectTimes, Origin, Sender};
use crate::bindings::runner::scenario::http::{Error, Version};
use crate::egress::Egress;

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, Error> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| Error::Dns(format!("{host}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| Error::Dns(format!("{host}: no addresses")))
}

/// A TCP connection to `addr`, from `from` if given. The port is chosen
/// at connect time (`IP_BIND_ADDRESS_NO_PORT`), so one source address
/// serves ~28,000 connections to each target rather than to all of them.
async fn tcp_connect(addr: SocketAddr, from: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(from) = from else {
        return TcpStream::connect(addr).await;
    };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    {
        use std::os::fd::AsRawFd as _;
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads `one` for the size given, on a socket
        // this function owns. A kernel without the option keeps the old
        // behaviour (the port chosen at bind).
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                std::ptr::addr_of!(one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(addr).await
}

/// HTTP/2's handshake; hyper drives the connection from a task of its own.
async fn h2_handshake<S>(io: S) -> Result<Sender, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| hyper_error(&e))?;
    tokio::spawn(conn);
    Ok(Sender::H2(sender))
}

/// Opens a connection to `origin`: name lookup, TCP, TLS, the HTTP
/// handshake. The handshake's state (rustls, hyper's HTTP/2) is tens of KiB: it is
/// boxed when the connect task first runs, so spawning this future from a
/// VU's fiber moves only its arguments there. Moved whole, it left 48 KiB
/// of every connected VU's fiber stack resident.
pub(crate) async fn connect(
    origin: Arc<Origin>,
    cfg: ClientConfig,
    egress: Arc<Egress>,
    vu: u32,
) -> Result<(Sender, ConnectTimes), Error> {
    Box::pin(open(origin, cfg, egress, vu)).await
}

async fn open(
    origin: Arc<Origin>,
    cfg: ClientConfig,
    egress: Arc<Egress>,
    vu: u32,
) -> Result<(Sender, ConnectTimes), Error> {
    let mut times = ConnectTimes::default();
    let denied = |d: crate::egress::Denied| Error::Denied(d.0);
    let by_name = egress
        .check_name(&origin.host, origin.port)
        .map_err(denied)?;
    let t = Instant::now();
    let addr = resolve(&origin.host, origin.port).await?;
    times.dns = t.elapsed();
    if !by_name {
        egress
            .check_addr(&origin.host, addr.ip(), origin.port)
            .map_err(denied)?;
    }

    let t = Instant::now();
    let from = crate::source::pick(&cfg.local, vu, addr.ip());
    let tcp = tcp_connect(addr, from)
        .await
        .map_err(|e| io_error(&e, &format!("connect to {addr}")))?;
    // Requests are small and latency-bound; never wait for Nagle.
    let _ = tcp.set_nodelay(true);
    times.connect = t.elapsed();

    if !origin.https {
        let sender = if origin.version == Some(Version::Http2) {
            h2_handshake(tcp).await?
        } else {
            Sender::H1(h1::Conn::new(h1::Io::Tcp(tcp)))
        };
        return Ok((sender, times));
    }

    let t = Instant::now();
    let tls_cfg = match origin.version {
        None => cfg.tls_any,
        Some(Version::Http1) => cfg.tls_h1,
        Some(Version::Http2) => cfg.tls_h2,
    };
    let bare = origin
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let name = ServerName::try_from(bare)
        .map_err(|e| Error::InvalidRequest(format!("host {}: {e}", origin.host)))?;
    let tls = tokio_rustls::TlsConnector::from(tls_cfg)
        .connect(name, tcp)
        .await
        .map_err(
            |e| match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(r) => Error::Tls(format!("{}: {r}", origin.host)),
                None => io_error(&e, "TLS handshake"),
            },
        )?;
    times.tls = t.elapsed();
    let sender = if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        h2_handshake(tls).await?
    } else {
        Sender::H1(h1::Conn::new(h1::Io::Tls(Box::new(tls))))
    };
    Ok((sender, times))
}
