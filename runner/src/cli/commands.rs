//! Carrying out each subcommand: `run` (a run on this machine, optionally
//! watched and steered over `--web`), `serve` (the agent), `inspect`,
//! `target`. Returns the process's exit code.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tokio_util::sync::CancellationToken;

use super::{Command, RunArgs, ServeArgs};
use crate::agent::Agent;
use crate::run::{self, Controller, StopBy};
use crate::sinks::progress::Progress;
use crate::sinks::timeseries::Series;
use crate::web;
use crate::{EXIT_ERROR, EXIT_THRESHOLDS};

/// How long the API may take to close its connections at exit.
const WEB_SHUTDOWN: Duration = Duration::from_secs(3);

/// Carries out `command`.
pub async fn execute(command: Command) -> Result<i32> {
    match command {
        Command::Run(args) => run(args).await,
        Command::Serve(args) => serve(args).await,
        Command::Inspect(args) => {
            let report = crate::inspect::inspect(&args.scenario, &args.env).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.text());
            }
            Ok(0)
        }
        Command::Target(args) => crate::target::serve(args.listen, args.tls, args.stall)
            .await
            .map(|()| 0),
    }
}

/// `runner run`.
async fn run(args: RunArgs) -> Result<i32> {
    let shown = args.scenario.display().to_string();
    let bytes =
        std::fs::read(&args.scenario).with_context(|| format!("cannot read scenario {shown}"))?;
    // Bind first: a taken port should stop the run before it starts.
    let listener = match args.web {
        Some(addr) => Some(web::bind(addr, args.token.as_deref()).await?),
        None => None,
    };
    let spec = args.spec();
    // Opened before the run, so a file that cannot be written stops it
    // before it starts.
    let series = Series::open(&spec.outputs)?;
    let prepared = run::prepare(spec, Arc::from(bytes))
        .await
        .map_err(|e| anyhow!(e).context("cannot start the run"))?;
    let mut sinks: Vec<Box<dyn run::Sink>> = vec![Box::new(Progress::new(args.quiet))];
    if series.is_active() {
        sinks.push(Box::new(series));
    }
    let handle = prepared.start(sinks)?;
    let signals = tokio::spawn(stop_on_signals(handle.controller()));
    let shutdown = CancellationToken::new();
    let server = match listener {
        Some(listener) => {
            let agent = Agent::new(1);
            let record = agent.adopt(&handle);
            let addr = listener.local_addr()?;
            tracing::info!(
                "dashboard: http://{addr}/  live API: http://{addr}/api/v1/runs/{} (events: .../events, metrics: http://{addr}/metrics)",
                record.id
            );
            let state = web::AppState {
                agent,
                token: args.token.as_deref().map(Arc::from),
                max_upload: 256 << 20,
            };
            Some(tokio::spawn(web::serve(
                listener,
                web::router(state),
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let summary = handle.wait().await;
    signals.abort();
    if let Some(server) = server {
        shutdown.cancel();
        let _ = tokio::time::timeout(WEB_SHUTDOWN, server).await;
    }
    let summary = summary?;
    if !args.quiet {
        println!("{}", summary.table(&args.summary_trend_stats.0));
    }
    if !summary.meta.output_errors.is_empty() {
        eprintln!("error: {}", summary.meta.output_errors.join("; "));
        return Ok(EXIT_ERROR);
    }
    if !summary.thresholds_passed() {
        let failed: Vec<&str> = summary
            .thresholds
            .iter()
            .filter(|t| !t.pass)
            .map(|t| t.threshold.as_str())
            .collect();
        eprintln!("thresholds failed: {}", failed.join("; "));
        return Ok(EXIT_THRESHOLDS);
    }
    Ok(0)
}

/// Turns Ctrl-C and SIGTERM into stops: the first lets in-flight
/// iterations finish, the next cancels them.
async fn stop_on_signals(controller: Controller) {
    loop {
        if next_signal().await.is_err() {
            return;
        }
        controller.stop_now(false, StopBy::Signal);
    }
}

/// Waits for Ctrl-C or SIGTERM.
async fn next_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

/// `runner serve`.
async fn serve(args: ServeArgs) -> Result<i32> {
    let listener = web::bind(args.listen, args.token.as_deref()).await?;
    let agent = Agent::new(args.keep_runs as usize);
    let addr = listener.local_addr()?;
    // Tests and scripts read this line to learn the port.
    println!("listening on http://{addr}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    tracing::info!(
        "runner agent: dashboard at http://{addr}/, API at http://{addr}/api/v1, OpenAPI at http://{addr}/api/openapi.json, Prometheus at http://{addr}/metrics"
    );
    let shutdown = CancellationToken::new();
    let state = web::AppState {
        agent: agent.clone(),
        token: args.token.as_deref().map(Arc::from),
        max_upload: usize::try_from(args.max_upload).unwrap_or(usize::MAX),
    };
    let server = tokio::spawn(web::serve(listener, web::router(state), shutdown.clone()));
    let stopper = {
        let (agent, shutdown) = (agent.clone(), shutdown.clone());
        tokio::spawn(async move {
            if next_signal().await.is_err() {
                return;
            }
            tracing::info!("stopping: the active run (if any) finishes its in-flight iterations (signal again to cancel them)");
            let active = agent.list().into_iter().find(|r| !r.is_over());
            if let Some(r) = active {
                r.controller().stop_now(false, StopBy::Signal);
                let mut watch = r.hub.watch();
                loop {
                    tokio::select! {
                        changed = watch.changed() => {
                            if changed.is_err() || r.is_over() { break; }
                        }
                        s = next_signal() => {
                            if s.is_err() { break; }
                            r.controller().stop_now(true, StopBy::Signal);
                        }
                    }
                }
            }
            shutdown.cancel();
        })
    };
    let result = server.await;
    stopper.abort();
    match result {
        Ok(r) => r.map(|()| 0),
        Err(e) => Err(anyhow!("the API server failed: {e}")),
    }
}
