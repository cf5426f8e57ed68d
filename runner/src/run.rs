//! One local run, start to finish: load and check the scenario, plan, check
//! the OS, start the VUs, aggregate metrics, stop gracefully, summarize.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context, Result};
use host_api::{Metrics, Recorder, RunContext, ScenarioOptions, VuState};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wasmtime::Store;

use crate::cli::{Output, RunArgs};
use crate::engine::{self, EngineSettings};
use crate::executor;
use crate::oslimits;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::report::{Meta, OpenMeta, Summary};
use crate::thresholds::Threshold;
use crate::timeseries::{Record, Series};
use crate::vu::{self, Shared, TrapLog};

/// Longest the scenario's `options()` may take.
const OPTIONS_TIMEOUT: Duration = Duration::from_secs(10);

/// How often shards are drained and the progress line refreshed.
const INTERVAL: Duration = Duration::from_secs(1);

/// Time VUs get to exit after a hard stop before their tasks are aborted.
const ABORT_AFTER: Duration = Duration::from_secs(5);

/// Runs `args` to completion and returns the summary.
pub async fn run(args: &RunArgs) -> Result<Summary> {
    let mut settings = EngineSettings {
        instances: 1,
        memory_limit: args.memory_limit,
        fuel: args.fuel.is_some(),
        core_instances: args.instance_limit,
        tables: args.table_limit,
        table_elements: args.table_elements,
    };
    let probe_engine = engine::build(&settings, false)?;
    let scenario = engine::load(&probe_engine, &args.scenario, &settings)?;

    let recorder = Arc::new(Recorder::new(shard_count()));
    let ctx = Arc::new(RunContext {
        recorder: recorder.clone(),
        env: Arc::new(args.env.iter().cloned().collect::<HashMap<_, _>>()),
        started: Instant::now(),
        http: host_api::http::ClientConfig::new(args.http_timeout, args.max_body, args.insecure),
        log_limit: Arc::new(host_api::stdio::LogLimit::new(args.log_rate)),
    });

    let options = scenario_options(
        &probe_engine,
        &scenario.component,
        &args.scenario,
        &ctx,
        &settings,
        args.cpu_limit,
        args.fuel,
    )
    .await?;
    let plan = Plan::new(args, &options)?;
    let thresholds = thresholds_for(args, &options)?;
    let total = plan.total_vus();
    let most = plan.max_vus();
    settings.instances = most + 1;
    oslimits::check(&oslimits::Needs {
        engine: settings,
        connecting_vus: if scenario.uses_network {
            u64::from(most)
        } else {
            0
        },
    })?;

    let engine = engine::build(&settings, true)?;
    let component = engine::transfer(&scenario.component, &engine)?;
    let pre = engine::link(&engine, &component, &args.scenario)?;
    let _ticker = engine::EpochTicker::start(engine.clone())?;
    // Options probing recorded nothing worth keeping.
    recorder.drain_into(&mut Metrics::default());

    let started_wall = SystemTime::now();
    let started = tokio::time::Instant::now();
    let shared = Arc::new(Shared {
        engine,
        pre,
        ctx: ctx.clone(),
        settings,
        cpu_limit: args.cpu_limit,
        fuel: args.fuel,
        iteration_timeout: plan.iteration_timeout,
        stop: CancellationToken::new(),
        hard_stop: CancellationToken::new(),
        active: AtomicUsize::new(0),
        ready: AtomicUsize::new(0),
        all_ready: std::sync::OnceLock::new(),
        total: total as usize,
        started,
        trap_log: TrapLog::default(),
    });

    let mut tasks = JoinSet::new();
    let mut id = 0u32;
    // Counts the VUs that the run's ramp-up spreads out.
    let mut ramped = 0u32;
    for class in &plan.classes {
        let runtime = class.runtime(&ctx.env);
        match (&class.open, plan.duration) {
            (Some(_), Some(duration)) => {
                tasks.spawn(executor::run_class(
                    shared.clone(),
                    class.clone(),
                    runtime,
                    id,
                    plan.arrival,
                    started,
                    duration,
                ));
                id += class.max_vus();
            }
            _ => match &class.ramp {
                Some(ramp) => {
                    let (tx, rx) = tokio::sync::watch::channel(0u32);
                    tasks.spawn(follow(ramp.clone(), tx, started, shared.stop.clone()));
                    for index in 0..class.vus {
                        let vu = vu::run_ramping(
                            shared.clone(),
                            id,
                            runtime.clone(),
                            index,
                            rx.clone(),
                            plan.grace,
                        );
                        tasks.spawn(vu);
                        id += 1;
                    }
                }
                None => {
                    let own = class.start_offsets(u64::from(id) ^ 0x5DEE_CE66);
                    for j in 0..class.vus {
                        let offset = match &own {
                            Some(offsets) => offsets[j as usize],
                            None => plan.start_offset(ramped),
                        };
                        tasks.spawn(vu::run(
                            shared.clone(),
                            id,
                            runtime.clone(),
                            started + offset,
                        ));
                        id += 1;
                        ramped += 1;
                    }
                }
            },
        }
    }

    let series_path =
        |want: fn(&Output) -> Option<&std::path::Path>| args.out.iter().find_map(want);
    let mut series = Series::open(
        series_path(|o| match o {
            Output::Ndjson(p) => Some(p),
            _ => None,
        }),
        series_path(|o| match o {
            Output::Csv(p) => Some(p),
            _ => None,
        }),
    )?;
    let mut last_tick = Duration::ZERO;
    let mut progress = Progress::new(args.quiet, total);
    let mut totals = Metrics::default();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = plan.duration.map(|d| started + d);
    let mut grace_end: Option<tokio::time::Instant> = None;
    let mut abort_at: Option<tokio::time::Instant> = None;
    let mut interrupted_by_user = false;
    let mut aborted_by: Option<String> = None;
    let far = started + Duration::from_secs(100 * 365 * 24 * 3600);

    loop {
        tokio::select! {
            _ = tick.tick() => {
                let mut m = Metrics::default();
                recorder.drain_into(&mut m);
                let now = started.elapsed();
                let active = shared.active.load(Ordering::Relaxed);
                if series.is_active() {
                    series.write(&Record::new(now, now.saturating_sub(last_tick), active, &m));
                }
                last_tick = now;
                progress.update(now, active, &m, &totals);
                totals.merge(&m);
                if grace_end.is_none() {
                    if let Some(t) = first_crossed(&thresholds, &totals, started.elapsed()) {
                        progress.note(&format!("threshold crossed: {t}; stopping the run"));
                        aborted_by = Some(t);
                        shared.stop.cancel();
                        grace_end = Some(tokio::time::Instant::now() + plan.grace);
                    }
                }
            }
            done = tasks.join_next() => {
                match done {
                    None => break,
                    Some(Err(e)) if e.is_panic() => {
                        // A host-side bug in one VU; the rest go on.
                        tracing::error!("a VU task failed: {e}");
                    }
                    Some(_) => {}
                }
            }
            _ = tokio::time::sleep_until(end.unwrap_or(far)), if end.is_some() && grace_end.is_none() => {
                shared.stop.cancel();
                grace_end = Some(tokio::time::Instant::now() + plan.grace);
            }
            _ = tokio::signal::ctrl_c() => {
                if grace_end.is_none() {
                    interrupted_by_user = true;
                    progress.note(&format!("stopping: in-flight iterations have {:?} to finish (Ctrl-C again to cancel them)", plan.grace));
                    shared.stop.cancel();
                    grace_end = Some(tokio::time::Instant::now() + plan.grace);
                } else {
                    shared.hard_stop.cancel();
                    abort_at.get_or_insert(tokio::time::Instant::now() + ABORT_AFTER);
                }
            }
            _ = tokio::time::sleep_until(grace_end.unwrap_or(far)), if grace_end.is_some() && !shared.hard_stop.is_cancelled() => {
                shared.hard_stop.cancel();
                abort_at = Some(tokio::time::Instant::now() + ABORT_AFTER);
            }
            _ = tokio::time::sleep_until(abort_at.unwrap_or(far)), if abort_at.is_some() => {
                tracing::error!("{} VUs did not stop in time; aborting them", tasks.len());
                tasks.abort_all();
                abort_at = None;
            }
        }
    }
    let elapsed = started.elapsed();
    let mut last = Metrics::default();
    recorder.drain_into(&mut last);
    if series.is_active() {
        series.write(&Record::new(
            elapsed,
            elapsed.saturating_sub(last_tick),
            0,
            &last,
        ));
    }
    totals.merge(&last);
    progress.finish();
    if let Err(e) = series.finish() {
        // The summary is still printed and written.
        tracing::error!("{}", engine::root_message(&e));
    }

    let meta = Meta {
        scenario: args.scenario.display().to_string(),
        scenario_bytes: scenario.size,
        started_unix_ms: started_wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        duration_s: elapsed.as_secs_f64(),
        vus: total,
        max_vus: most,
        open_model: plan.is_open().then(|| OpenMeta {
            rate: plan
                .classes
                .iter()
                .filter_map(|c| c.open.as_ref())
                .map(|o| o.rate.area())
                .sum::<f64>()
                / plan.duration.unwrap_or(elapsed).as_secs_f64().max(1e-9),
            arrival: plan.arrival,
            window_s: plan.duration.unwrap_or(elapsed).min(elapsed).as_secs_f64(),
        }),
        classes: plan
            .classes
            .iter()
            .map(|c| (c.name.to_string(), c.vus))
            .collect(),
        interrupted: interrupted_by_user,
        aborted_by_threshold: aborted_by,
        startup_s: shared.all_ready.get().map(Duration::as_secs_f64),
        log_lines_suppressed: ctx.log_limit.suppressed(),
    };
    let mut summary = Summary::new(meta, totals);
    summary.thresholds = thresholds
        .iter()
        .map(|t| t.evaluate(&summary.raw, summary.meta.duration_s))
        .collect();
    Ok(summary)
}

/// The thresholds in force: the command line's if it gives any, else the
/// scenario's.
fn thresholds_for(args: &RunArgs, options: &ScenarioOptions) -> Result<Vec<Threshold>> {
    if !args.thresholds.is_empty() {
        return Ok(args.thresholds.clone());
    }
    options
        .thresholds
        .iter()
        .map(|text| {
            let t = Threshold::parse(text).map_err(|e| anyhow!("the scenario's options: {e}"))?;
            t.validate()
                .map_err(|e| anyhow!("the scenario's options: {e}"))?;
            Ok(t)
        })
        .collect()
}

/// The first `abort` threshold that fails on the data so far (thresholds
/// with no data yet do not abort).
fn first_crossed(thresholds: &[Threshold], totals: &Metrics, elapsed: Duration) -> Option<String> {
    thresholds.iter().filter(|t| t.abort).find_map(|t| {
        let o = t.evaluate(totals, elapsed.as_secs_f64());
        (o.value.is_some() && !o.pass).then(|| t.source.clone())
    })
}

/// Publishes the number of VUs `ramp` wants running, every 50 ms, until
/// the ramp ends or the run stops.
async fn follow(
    ramp: crate::profile::Profile,
    tx: tokio::sync::watch::Sender<u32>,
    started: tokio::time::Instant,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        let t = started.elapsed().as_secs_f64();
        let want = ramp.value_at(t).round() as u32;
        tx.send_if_modified(|v| std::mem::replace(v, want) != want);
        if t >= ramp.duration().as_secs_f64() {
            // Hold the last target until the run stops.
            stop.cancelled().await;
            return;
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Asks the scenario for its options on a throwaway instance.
pub async fn scenario_options(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
    path: &std::path::Path,
    ctx: &Arc<RunContext>,
    settings: &EngineSettings,
    cpu_limit: Duration,
    fuel: Option<u64>,
) -> Result<ScenarioOptions> {
    let shown = path.display();
    let pre = engine::link(engine, component, path)?;
    let state = VuState::new(
        ctx.clone(),
        u32::MAX,
        "options".into(),
        settings.limiter(),
        cpu_limit,
    );
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    if let Some(f) = fuel {
        store.set_fuel(f).map_err(anyhow::Error::from)?;
    }
    // Yield on every tick so the wall-clock timeout below can fire even if
    // the guest spins.
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    let call = async {
        let bindings = pre.instantiate_async(&mut store).await?;
        bindings
            .runner_scenario_scenario()
            .call_options(&mut store)
            .await
    };
    let ticker = engine::EpochTicker::start(engine.clone())?;
    let result = tokio::time::timeout(OPTIONS_TIMEOUT, call).await;
    drop(ticker);
    match result {
        Err(_) => Err(anyhow!(
            "{shown}: the scenario's options() did not return within {OPTIONS_TIMEOUT:?}"
        )),
        Ok(Err(e)) => {
            let abort = vu::classify(&e, store.data());
            let hint = if abort.kind == "memory-limit" {
                "; raise --memory-limit"
            } else if abort.message.contains("instance count") {
                "; raise --instance-limit"
            } else if abort.message.contains("table") {
                "; raise --table-elements or --table-limit"
            } else {
                ""
            };
            Err(anyhow!(
                "{shown}: the scenario failed while starting up ({}: {}){hint}",
                abort.kind,
                abort.message
            ))
        }
        Ok(Ok(o)) => Ok(o),
    }
    .context("cannot start the run")
}

/// Shards for the recorder: enough that worker threads rarely share one.
fn shard_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(4)
        * 2
}
