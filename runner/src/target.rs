//! The built-in HTTP target: a small, fast server for demos and smoke
//! tests that counts what it receives (its own ground truth).
//!
//! Routes: `/` answers `ok`; `/status/CODE` answers with that status;
//! `/delay/MS` answers after MS milliseconds; `/bytes/N` answers N bytes;
//! `/stats` returns `{"requests": N}`, the requests served so far (not
//! counting `/stats` itself). HTTP/1.1 and HTTP/2 (prior knowledge).

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

/// Counts kept by the target.
#[derive(Default)]
pub struct Stats {
    requests: AtomicU64,
}

/// Binds `addr`, prints the bound address on stdout, and serves until
/// Ctrl-C.
pub async fn serve(addr: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}; pick another address with --listen"))?;
    let local = listener.local_addr()?;
    println!("listening on http://{local}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let stats = Arc::new(Stats::default());
    tokio::select! {
        r = accept_loop(listener, stats) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn accept_loop(listener: TcpListener, stats: Arc<Stats>) -> Result<()> {
    loop {
        let (stream, _) = match listener.accept().await {
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
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, stats.clone()));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    stats: Arc<Stats>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    if path == "/stats" {
        let n = stats.requests.load(Ordering::Relaxed);
        return Ok(reply(
            StatusCode::OK,
            Bytes::from(format!("{{\"requests\":{n}}}\n")),
        ));
    }
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
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
