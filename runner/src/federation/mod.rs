//! One test across many machines, over QUIC: a coordinator
//! ([`coordinator`], `runner run ... --workers K`) and long-running
//! workers ([`worker`], `runner join`), or worker processes on this
//! machine ([`local`], `runner run ... --processes N`). The token ([`token`]) pins the
//! coordinator's certificate ([`tls`]) and carries the secret that admits
//! workers; every frame is length-prefixed, size-limited and validated
//! ([`wire`], [`protocol`]). Shares of the plan add up exactly to the
//! whole (`plan::share`), the snapshots merge exactly, and a worker that
//! loses its coordinator stops its load when its lease runs out.

pub mod coordinator;
pub mod local;
pub mod protocol;
pub mod tls;
pub mod token;
pub mod wire;
pub mod worker;

/// The coordinator's default port (UDP).
pub const DEFAULT_PORT: u16 = 7676;

/// How long a worker goes on generating load without hearing from its
/// coordinator.
pub const LEASE: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits for Ctrl-C or SIGTERM (forever, if they cannot be watched).
pub async fn signal() {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
