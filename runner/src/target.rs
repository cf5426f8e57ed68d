//! The built-in HTTP target: a small, fast server for demos and smoke
//! tests that counts what it receives (its own ground truth).
//!
//! Routes: `/` answers `ok`; `/status/CODE` answers with that status;
//! `/delay/MS` answers after MS milliseconds; `/bytes/N` answers N bytes;
//! `/stats` returns `{"requests": N, "http1": N1, "http2": N2, "by_peer":
//! {"IP": N, ...}}`, the requests served so far (not counting `/stats`
//! itself), by protocol and by client address.
//! HTTP/1.1 and HTTP/2 (prior knowledge, or ALPN with `--tls`, which serves
//! a self-signed certificate for localhost and 127.0.0.1). `--stall
//! PERIOD:LENGTH` pauses the whole server periodically, to test that a
//! load tester's latencies show the pauses (no coordinated omission).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Largest body `/bytes/N` serves.
const MAX_BYTES: usize = 64 << 20;

/// Longest `/delay/MS` honoured.
const MAX_DELAY_MS: u64 = 60_000;

/// Counts kept by the target, and its stall schedule.
pub struct Stats {
    /// Requests by client address (each connection finds its counter once).
    by_peer: std::sync::Mutex<std::collections::BTreeMap<std::net::IpAddr, Arc<AtomicU64>>>,
    requests: AtomicU64,
    http2: AtomicU64,
    started: std::time::Instant,
    stall: Option<Stall>,
}

/// A periodic pause of the whole server, like a garbage-collection pause:
/// every `period`, for `length`, no request is answered; requests that
/// arrive meanwhile are answered when it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stall {
    /// Time from one pause to the next.
    pub period: Duration,
    /// How long each pause lasts.
    pub length: Duration,
}

impl Stall {
    /// How long a request arriving `t` after the start must wait.
    pub fn wait_at(&self, t: Duration) -> Duration {
        let period = self.period.as_nanos().max(1);
        let phase = Duration::from_nanos((t.as_nanos() % period) as u64);
        self.length.saturating_sub(phase)
    }
}

/// Binds `addr`, prints the bound address on stdout, and serves until
/// Ctrl-C; with `tls`, over TLS with a fresh self-signed certificate.
pub async fn serve(addr: SocketAddr, tls: bool, stall: Option<Stall>) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}; pick another address with --listen"))?;
    let local = listener.local_addr()?;
    let acceptor = if tls { Some(tls_acceptor()?) } else { None };
    println!(
        "listening on {}://{local}",
        if tls { "https" } else { "http" }
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let stats = Arc::new(Stats {
        by_peer: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        requests: AtomicU64::new(0),
        http2: AtomicU64::new(0),
        started: std::time::Instant::now(),
        stall,
    });
    tokio::select! {
        r = accept_loop(listener, acceptor, stats) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// A TLS acceptor with a self-signed certificate for local names, offering
/// HTTP/2 and HTTP/1.1 by ALPN.
fn tls_acceptor() -> Result<tokio_rustls::TlsAcceptor> {
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let cert = rcgen::generate_simple_self_signed(names)
        .context("cannot make a self-signed certificate")?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .context("TLS certificate")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stats: Arc<Stats>,
) -> Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors or similar: wait, don't spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let stats = stats.clone();
        let tls = tls.clone();
        let counter = stats
            .by_peer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(peer.ip())
            .or_default()
            .clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req| handle(req, stats.clone(), counter.clone()));
            let server = auto::Builder::new(TokioExecutor::new());
            let _ = match tls {
                None => server.serve_connection(TokioIo::new(stream), svc).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => server.serve_connection(TokioIo::new(tls), svc).await,
                    Err(_) => return, // a client that rejected our certificate
                },
            };
        });
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    stats: Arc<Stats>,
    peer: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    if path == "/stats" {
        let n = stats.requests.load(Ordering::Relaxed);
        let h2 = stats.http2.load(Ordering::Relaxed);
        let peers: Vec<String> = stats
            .by_peer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(ip, c)| format!("\"{ip}\":{}", c.load(Ordering::Relaxed)))
            .collect();
        let body = format!(
            "{{\"requests\":{n},\"http1\":{},\"http2\":{h2},\"by_peer\":{{{}}}}}\n",
            n.saturating_sub(h2),
            peers.join(",")
        );
        return Ok(reply(StatusCode::OK, Bytes::from(body)));
    }
    if let Some(stall) = stats.stall {
        let wait = stall.wait_at(stats.started.elapsed());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
    stats.requests.fetch_add(1, Ordering::Relaxed);
    peer.fetch_add(1, Ordering::Relaxed);
    if req.version() == hyper::Version::HTTP_2 {
        stats.http2.fetch_add(1, Ordering::Relaxed);
    }
    let mut parts = path.trim_matches('/').splitn(2, '/');
    let route = parts.next().unwrap_or("");
    let arg = parts.next().unwrap_or("");
    let r = match route {
        "status" => match arg
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(code) => reply(code, Bytes::from_static(b"status\n")),
            None => reply(
                StatusCode::BAD_REQUEST,
                Bytes::from_static(b"bad status code\n"),
            ),
        },
        "delay" => match arg.parse::<u64>() {
            Ok(ms) => {
                tokio::time::sleep(Duration::from_millis(ms.min(MAX_DELAY_MS))).await;
                reply(StatusCode::OK, Bytes::from_static(b"ok\n"))
            }
            Err(_) => reply(StatusCode::BAD_REQUEST, Bytes::from_static(b"bad delay\n")),
        },
        "bytes" => match arg.parse::<usize>() {
            Ok(n) => reply(StatusCode::OK, Bytes::from(vec![b'x'; n.min(MAX_BYTES)])),
            Err(_) => reply(StatusCode::BAD_REQUEST, Bytes::from_static(b"bad size\n")),
        },
        _ => reply(StatusCode::OK, Bytes::from_static(b"ok\n")),
    };
    Ok(r)
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r
}
