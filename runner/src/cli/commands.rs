//! Carrying out each subcommand: `run` (a run on this machine, optionally
//! watched and steered over `--web`), `serve` (the agent), `inspect`,
//! `target`. Returns the process's exit code.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio_util::sync::CancellationToken;

use super::cluster::MAX_PROCESSES;
use super::{Capacity, Command, JoinArgs, KeygenArgs, Processes, RunArgs, ServeArgs};
use crate::agent::Agent;
use crate::federation::coordinator::{ClusterOptions, OnLoss};
use crate::federation::token::{check_secret, new_secret, Token};
use crate::federation::{self, tls::Identity, tls::Trust};
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
        Command::Join(args) => join(args).await,
        Command::Keygen(args) => keygen(args),
        Command::New(args) => new(&args),
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
    let bytes: Arc<[u8]> = Arc::from(bytes);
    // `--processes 1` is this process.
    let processes = args.processes.filter(|p| *p != Processes::Count(1));
    let role = match (args.workers, processes) {
        (None, None) => run::Role::Local,
        _ => run::Role::Coordinator,
    };
    let mut prepared = run::prepare_as(spec, bytes.clone(), role)
        .await
        .map_err(|e| anyhow!(e).context("cannot start the run"))?;
    let mut sinks: Vec<Box<dyn run::Sink>> = vec![Box::new(Progress::new(args.quiet))];
    if series.is_active() {
        sinks.push(Box::new(series));
    }
    let handle = match (args.workers, processes) {
        (None, None) => prepared.start(sinks)?,
        (Some(k), _) => {
            let opts = cluster_options(&args, k)?;
            federation::coordinator::coordinate(prepared, bytes, opts, sinks)
                .await
                .context("the distributed run did not start")?
        }
        (None, Some(p)) => {
            let n = process_count(p, &prepared)?;
            prepared.share_memory(n);
            let opts = local_options(&args, n, prepared.connecting_vus())?;
            federation::coordinator::coordinate(prepared, bytes, opts, sinks)
                .await
                .context("the run's processes did not start")?
        }
    };
    let signals = tokio::spawn(stop_on_signals(handle.controller()));
    let shutdown = CancellationToken::new();
    let server = match listener {
        Some(listener) => {
            let agent = Agent::new(1, None);
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
    if let Some(why) = &summary.meta.memory_stop {
        eprintln!("error: the run ended early: {why}");
    }
    if !summary.meta.output_errors.is_empty() {
        eprintln!("error: {}", summary.meta.output_errors.join("; "));
    }
    if summary.meta.memory_stop.is_some() || !summary.meta.output_errors.is_empty() {
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

/// The coordinator's options from the flags.
fn cluster_options(args: &RunArgs, workers: u32) -> Result<ClusterOptions> {
    let identity = match (&args.cert, &args.key) {
        (Some(c), Some(k)) => Identity::load(c, k, args.ca.as_deref())?,
        _ => Identity::generate()?,
    };
    let (secret, secret_generated) = match &args.secret {
        Some(s) => {
            check_secret(s).map_err(|e| anyhow!("--secret: {e}"))?;
            (s.clone(), false)
        }
        None => (new_secret()?, true),
    };
    let min = args.min_workers.map(|m| m as usize);
    if min.is_some_and(|m| m > workers as usize) {
        bail!("--min-workers is more than --workers");
    }
    Ok(ClusterOptions {
        listen: args.listen,
        advertise: args.advertise.clone(),
        workers: workers as usize,
        min_workers: min.unwrap_or(workers as usize),
        quorum: min.unwrap_or(1),
        join_timeout: args.join_timeout,
        on_loss: args.on_worker_loss,
        identity,
        secret,
        secret_generated,
        lease: federation::LEASE,
        local: 0,
    })
}

/// How many processes `--processes` means for this run: never more than
/// it has VUs, never fewer than the open-files limit allows.
fn process_count(p: Processes, prepared: &run::Prepared) -> Result<u32> {
    let connecting = prepared.connecting_vus();
    let needed = crate::oslimits::processes_for(connecting);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let most = u64::from(prepared.plan().pool_vus()).max(1);
    let n = match p {
        Processes::Auto => cores.max(needed).min(most),
        Processes::Count(n) => u64::from(n).min(most),
    };
    if n < needed {
        bail!(
            "{connecting} VUs that may each hold a connection need at least {needed} processes here \
             (each may open only {} files); use --processes {needed} or --processes auto",
            crate::oslimits::open_file_limit().unwrap_or(0)
        );
    }
    if n > u64::from(MAX_PROCESSES) {
        bail!(
            "this run needs {n} processes, more than one machine runs ({MAX_PROCESSES}); \
             spread it over several machines with --workers"
        );
    }
    Ok(n as u32)
}

/// The coordinator's options for worker processes on this machine.
fn local_options(args: &RunArgs, processes: u32, connecting: u64) -> Result<ClusterOptions> {
    let n = processes as usize;
    let mut on_loss = args.on_worker_loss;
    // Taking over a lost process's VUs needs room for twice a share's
    // connections in each survivor.
    let share = connecting.div_ceil(u64::from(processes));
    let room = crate::oslimits::connections_per_process();
    if on_loss == OnLoss::Rebalance && processes > 1 && room.is_some_and(|r| 2 * share > r) {
        tracing::info!(
            "a lost process's VUs will not be taken over by the others (--on-worker-loss continue): \
             they have no open files to spare; more processes (--processes {}) would let them",
            (2 * connecting).div_ceil(room.unwrap_or(1).max(1))
        );
        on_loss = OnLoss::Continue;
    }
    Ok(ClusterOptions {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        advertise: None,
        workers: n,
        min_workers: n,
        quorum: 1,
        join_timeout: args.join_timeout,
        on_loss,
        identity: Identity::generate()?,
        secret: new_secret()?,
        secret_generated: true,
        lease: federation::LEASE,
        local: n,
    })
}

/// `runner join`: the worker, until a signal (or a refusal).
async fn join(args: JoinArgs) -> Result<i32> {
    let capacity = match args.capacity {
        Capacity::Given(c) => c,
        Capacity::Auto => std::thread::available_parallelism()
            .map(|n| n.get() as f64)
            .unwrap_or(1.0),
    };
    let (trust, secret) = match (&args.token, &args.ca, &args.cert, &args.key) {
        (Some(t), _, _, _) => (Trust::Pinned(t.fingerprint), t.secret.clone()),
        (None, Some(ca), Some(cert), Some(key)) => (Trust::ca(ca, cert, key)?, String::new()),
        _ => bail!("give --token, or --ca with --cert and --key"),
    };
    let enforced = if args.local {
        None
    } else {
        let enforced = crate::spec::Enforced {
            allow: args.allow_hosts.clone(),
            block: args.block_hosts.clone(),
        };
        let egress = enforced.egress().map_err(|e| anyhow!(e))?;
        tracing::info!("this worker's VUs may connect to: {}", egress.describe());
        Some(enforced)
    };
    let opts = federation::worker::JoinOptions {
        coordinator: args.coordinator,
        trust,
        secret,
        enforced,
        once: args.once || args.local,
        capacity,
        name: args.name.unwrap_or_else(host_name),
    };
    let load = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("federation".into())
        .spawn(move || {
            let _ = tx.send(federation::worker::join(opts, load));
        })
        .context("cannot start the worker's control thread")?;
    rx.await
        .map_err(|_| anyhow!("the worker's control thread failed"))??;
    Ok(0)
}

/// This machine's host name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into())
}

/// `runner keygen`.
fn keygen(args: KeygenArgs) -> Result<i32> {
    if args.ca {
        return keygen_ca(&args);
    }
    let identity = Identity::generate()?;
    let secret = match args.secret {
        Some(s) => {
            check_secret(&s).map_err(|e| anyhow!("--secret: {e}"))?;
            s
        }
        None => new_secret()?,
    };
    let (cert, key) = identity.pem()?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let token = Token {
        fingerprint: identity.fingerprint,
        secret,
    };
    for (name, text) in [
        ("coordinator.crt", cert),
        ("coordinator.key", key),
        ("token", format!("{token}\n")),
    ] {
        let path = args.dir.join(name);
        write_private(&path, text.as_bytes())?;
    }
    println!(
        "wrote {0}/coordinator.crt, {0}/coordinator.key and {0}/token: start the coordinator with --cert {0}/coordinator.crt --key {0}/coordinator.key --secret SECRET, workers with --token $(cat {0}/token)",
        args.dir.display()
    );
    Ok(0)
}

/// `runner keygen --ca`: a CA, and certificates it signed for the
/// coordinator and the workers.
fn keygen_ca(args: &KeygenArgs) -> Result<i32> {
    let mut hosts = vec![
        federation::tls::SERVER_NAME.to_owned(),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    hosts.extend(args.hosts.iter().cloned());
    let ca = federation::tls::CaFiles::generate(&hosts, args.workers)?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    for (name, text) in &ca.files {
        write_private(&args.dir.join(name), text.as_bytes())?;
    }
    println!(
        "wrote {0}/ca.crt, ca.key (keep it offline), coordinator.crt/.key and {1}: start the coordinator with --ca {0}/ca.crt --cert {0}/coordinator.crt --key {0}/coordinator.key, each worker with --ca {0}/ca.crt and its own --cert/--key",
        args.dir.display(),
        if args.workers == 1 { "worker.crt/.key".to_owned() } else { format!("worker-1..{}.crt/.key", args.workers) }
    );
    Ok(0)
}

/// Writes a file only its owner may read (keys, tokens).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
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
    let enforced = crate::spec::Enforced {
        allow: args.allow_hosts.clone(),
        block: args.block_hosts.clone(),
    };
    let egress = enforced.egress().map_err(|e| anyhow!(e))?;
    let listener = web::bind(args.listen, args.token.as_deref()).await?;
    let agent = Agent::new(args.keep_runs as usize, Some(enforced));
    tracing::info!("submitted runs may connect to: {}", egress.describe());
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

/// `runner new`: writes the project and says how to build and run it.
fn new(args: &super::NewArgs) -> Result<i32> {
    let made = crate::scaffold::create(&args.path, args.lang)?;
    let dir = made.dir.display();
    println!("created {dir}\n");
    let build = match args.lang {
        crate::scaffold::Lang::Rust => format!(". ./wasm-env.sh && {}", made.build),
        crate::scaffold::Lang::Python | crate::scaffold::Lang::Js => made.build.clone(),
    };
    println!("build it:\n    cd {dir}\n    {build}\n");
    println!(
        "run it:\n    runner run {} --vus 10 --duration 30s -e BASE_URL=http://127.0.0.1:8080",
        made.component
    );
    Ok(0)
}
