//! Command-line interface: what the user types, parsed and validated, then
//! turned into a [`RunSpec`] before anything runs ([`commands`] carries
//! each subcommand out).

mod cluster;
pub mod commands;

pub use cluster::{Capacity, JoinArgs, KeygenArgs, Processes};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::spec::{Arrival, Output, RunOptions, RunSpec, ScenarioRef, Stage};
use crate::units::{parse_duration, parse_positive_duration, parse_size};

/// Load tests whose scenarios are WebAssembly components, one sandboxed
/// store per virtual user.
#[derive(Debug, Parser)]
#[command(name = "runner", version, about, long_about = None)]
pub struct Cli {
    /// No colors in the log (also when NO_COLOR is set or stderr is not a
    /// terminal).
    #[arg(long, global = true)]
    pub no_color: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The runner's subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once; boxing buys nothing
pub enum Command {
    /// Run a scenario component on this machine.
    Run(RunArgs),
    /// Serve the built-in HTTP test target (for demos and smoke tests).
    Target(TargetArgs),
    /// Show a scenario's size, imports, exports and declared options.
    Inspect(InspectArgs),
    /// A long-running agent: accept runs over HTTP (REST API, live events,
    /// Prometheus metrics), run them one at a time, keep serving.
    Serve(ServeArgs),
    /// A long-running worker of distributed runs: join a coordinator
    /// (`runner run ... --workers K`) and run its share of each run.
    Join(JoinArgs),
    /// Make a coordinator certificate, key and join token (for deployments
    /// where the token must be known before the coordinator starts).
    Keygen(KeygenArgs),
    /// Write a new scenario project, with this runner's guest SDK and WIT
    /// world in it, ready to build and run.
    New(NewArgs),
}

/// Flags of `runner new`.
#[derive(Debug, Args, Clone)]
pub struct NewArgs {
    /// The project's directory; its last part names the scenario.
    pub path: PathBuf,

    /// The language to write the scenario in.
    #[arg(long, value_enum, default_value = "rust")]
    pub lang: crate::scaffold::Lang,
}

/// Flags of `runner run`.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// The scenario: a WebAssembly component built against the
    /// runner:scenario world (`cargo component build --release`).
    pub scenario: PathBuf,

    /// Virtual users. With several VU classes, scales their counts.
    #[arg(short = 'u', long, value_parser = parse_positive_u32)]
    pub vus: Option<u32>,

    /// How long to run, e.g. `30s`, `5m`. Without it (and without
    /// --iterations) each VU runs one iteration.
    #[arg(short, long, value_parser = parse_positive_duration)]
    pub duration: Option<Duration>,

    /// Iterations per VU; the run ends when every VU has done them (or
    /// --duration is up, whichever is first).
    #[arg(short, long, value_parser = parse_positive_u64)]
    pub iterations: Option<u64>,

    /// Open model: start this many iterations per second, whether or not
    /// earlier ones have finished (latency is then also measured from each
    /// iteration's scheduled start). --vus VUs are allocated up front; more
    /// are started up to --max-vus when all are busy (an arrival waits for
    /// the first VU to come free, a running or a new one), and an arrival
    /// that finds none free with all --max-vus running is counted as
    /// dropped. Needs --duration.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Ramp through stages, `DURATION:TARGET` each, e.g. `--stage 30s:100
    /// --stage 1m:100 --stage 30s:0`: targets are running VUs (from --vus,
    /// default 0) or, with --rate, arrivals per second (from --rate).
    /// Repeatable; the stages set the run's length.
    #[arg(long = "stage", value_name = "DURATION:TARGET")]
    pub stages: Vec<Stage>,

    /// Open model: the most VUs (default: enough for one-second iterations
    /// at the full rate). Closed model, in a run of a set length: the most
    /// VUs the run may be raised to while it goes on (default: --vus).
    #[arg(long, value_parser = parse_positive_u32)]
    pub max_vus: Option<u32>,

    /// Open model: how arrivals are spaced.
    #[arg(long, value_enum, default_value = "even")]
    pub arrival: Arrival,

    /// Iterations shared by all VUs: each VU takes the next one until N have
    /// run (k6's shared-iterations), so faster VUs do more.
    #[arg(long, value_parser = parse_positive_u64, conflicts_with_all = ["iterations", "rate", "stages"])]
    pub shared_iterations: Option<u64>,

    /// Closed model: pause this long after each iteration (every class;
    /// replaces the scenario's think time).
    #[arg(long, value_parser = parse_duration, conflicts_with = "rate")]
    pub think_time: Option<Duration>,

    /// Closed model: start a VU's iterations at least this far apart
    /// (constant pacing; every class; replaces the scenario's pacing).
    #[arg(long, value_parser = parse_duration, conflicts_with = "rate")]
    pub pacing: Option<Duration>,

    /// Spread the VUs' starts evenly over this time, so they do not hit the
    /// target in one instant.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub ramp_up: Duration,

    /// At the end (or on Ctrl-C), time allowed for in-flight iterations to
    /// finish before they are cancelled.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub grace: Duration,

    /// A value for the scenario, read with `vu::env("KEY")`. Repeatable.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,

    /// CPU time an iteration may spend (in guest code and in host calls)
    /// before it is stopped.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub cpu_limit: Duration,

    /// Also meter guest code with fuel: this many units per iteration.
    #[arg(long, value_parser = parse_positive_u64)]
    pub fuel: Option<u64>,

    /// Linear memory a VU may use, e.g. `64MiB`. Default: twice the
    /// component's initial memory, at least 32MiB.
    #[arg(long, value_parser = parse_size)]
    pub memory_limit: Option<u64>,

    /// Core WebAssembly instances a VU's component may create: a ceiling;
    /// the pool is sized for what the component needs.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub instance_limit: u32,

    /// Tables a VU's component may create: a ceiling; the pool is sized
    /// for what the component needs.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub table_limit: u32,

    /// Elements a table may grow to.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub table_elements: u32,

    /// Wall-clock time an iteration may take before it is cancelled.
    #[arg(long, value_parser = parse_positive_duration)]
    pub iteration_timeout: Option<Duration>,

    /// Timeout of an HTTP request that sets none.
    #[arg(long, value_parser = parse_positive_duration, default_value = "60s")]
    pub http_timeout: Duration,

    /// Largest HTTP response body accepted, and largest request body a
    /// scenario may send, e.g. `16MiB`.
    #[arg(long, value_parser = parse_size, default_value = "16MiB")]
    pub max_body: u64,

    /// Skip TLS certificate verification (self-signed targets).
    #[arg(long)]
    pub insecure: bool,

    /// A pass/fail criterion, e.g. `'http_req_duration{name:login} p(99)<300ms'`,
    /// `'checks rate>0.99'`, `'errors count<10 abort'` (abort: stop the run
    /// as soon as it fails). Repeatable; replaces the scenario's thresholds.
    /// A failed threshold makes the run exit with code 99.
    #[arg(long = "threshold", value_name = "EXPR", value_parser = parse_threshold)]
    pub thresholds: Vec<crate::thresholds::Threshold>,

    /// Write results: `json=FILE` (the full summary), `html=FILE` (a report
    /// with charts, one offline file), `ndjson=FILE` (one
    /// JSON line per second), `csv=FILE` (one row per second and request
    /// name), `snapshots=FILE` (the raw, mergeable snapshot of each second).
    /// Repeatable. `json` and `html` are replaced atomically at the end; the
    /// time series are written as the run goes (a killed run keeps them).
    #[arg(short, long, value_name = "FORMAT=FILE")]
    pub out: Vec<Output>,

    /// Latency statistics shown in the summary table, comma-separated, from
    /// avg, min, med, max, p(N).
    #[arg(long, value_parser = parse_trend_stats, default_value = "p(50),p(90),p(95),p(99),p(99.9),max")]
    pub summary_trend_stats: TrendStats,

    /// No live progress line and no summary table on stdout.
    #[arg(short, long)]
    pub quiet: bool,

    /// Guest log lines allowed per second across all VUs; more are counted
    /// and dropped.
    #[arg(long, default_value_t = 100)]
    pub log_rate: u64,

    /// Distinct series (request names with their tags, check names,
    /// custom metric names) per metric family over the run (a tenth of it
    /// for timings and histograms, which cost more each); more are counted
    /// in one overflow row, so ids or times in names cannot exhaust memory.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_series: u32,

    /// Let VUs connect only here (repeatable): `host`, `host:port`,
    /// `*.example.com`, an IP or a CIDR; HTTP, MQTT and NATS alike. A
    /// denied connection sends nothing and fails as `denied`.
    #[arg(long = "allow-host", value_name = "RULE")]
    pub allow_hosts: Vec<String>,

    /// Never let VUs connect here (repeatable; same forms; wins over
    /// --allow-host), e.g. `169.254.169.254`.
    #[arg(long = "block-host", value_name = "RULE")]
    pub block_hosts: Vec<String>,

    /// Make HTTP connections from these local addresses, VUs taking them
    /// in turn (repeatable or comma-separated): an IP, a range
    /// `127.0.0.2-127.0.0.50` or a CIDR `10.1.0.0/24`. One address reaches
    /// one target with at most ~28,000 connections.
    #[arg(long = "local-addr", value_name = "ADDRS", value_delimiter = ',')]
    pub local_addrs: Vec<String>,

    /// Replay: seed every random source a VU can reach (WASI random,
    /// Poisson arrivals and starts) from N and the VU's id, so the same
    /// seed makes the same requests. Without it a seed is drawn, and the
    /// summary shows it.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Stop starting iterations, and end the run gracefully, when the
    /// runner's own memory (RSS) reaches this, e.g. `8GiB` (default: 80%
    /// of the machine's or the container's memory).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub max_memory: Option<u64>,

    /// Serve the live API (and dashboard) of this run on ADDR while it
    /// runs (default 127.0.0.1:6565): watch it, stop it, change its VUs or
    /// rate. Put it after the scenario.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:6565")]
    pub web: Option<SocketAddr>,

    /// Bearer token the API requires (needed to bind --web off loopback).
    #[arg(long, env = "RUNNER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Run the VUs in this many processes of this machine instead of this
    /// one (`auto`: one per CPU core, more if the open-files limit needs
    /// them): each has its own open-files limit and its own scheduler.
    /// This process coordinates them over loopback as it would --workers,
    /// and merges their results into one summary.
    #[arg(long, value_name = "N", value_parser = cluster::parse_processes, conflicts_with_all = ["workers", "listen", "advertise", "secret", "cert", "ca"], help_heading = "Distributed runs")]
    pub processes: Option<Processes>,

    /// Run across this many workers (`runner join`) instead of here: this
    /// process coordinates, splits the load by the workers' capacity, and
    /// merges their results into one summary.
    #[arg(long, value_parser = parse_positive_u32, help_heading = "Distributed runs")]
    pub workers: Option<u32>,

    /// Start with this many workers once --join-timeout passes, and stop
    /// the run if fewer remain (the quorum). Default: wait for all
    /// --workers; a run goes on while one is left.
    #[arg(long, value_parser = parse_positive_u32, requires = "workers", help_heading = "Distributed runs")]
    pub min_workers: Option<u32>,

    /// How long to wait for the workers.
    #[arg(long, value_parser = parse_positive_duration, default_value = "60s", help_heading = "Distributed runs")]
    pub join_timeout: Duration,

    /// Where the coordinator listens for workers (UDP).
    #[arg(
        long,
        default_value = "0.0.0.0:7676",
        help_heading = "Distributed runs"
    )]
    pub listen: SocketAddr,

    /// The address workers are told to join, if not --listen's (a DNS
    /// name, a Service).
    #[arg(long, value_name = "HOST:PORT", help_heading = "Distributed runs")]
    pub advertise: Option<String>,

    /// What becomes of a lost worker's share.
    #[arg(
        long,
        value_enum,
        default_value = "rebalance",
        help_heading = "Distributed runs"
    )]
    pub on_worker_loss: crate::federation::coordinator::OnLoss,

    /// The secret workers must know (default: a new random one, printed in
    /// the join token).
    #[arg(
        long,
        env = "RUNNER_SECRET",
        hide_env_values = true,
        help_heading = "Distributed runs"
    )]
    pub secret: Option<String>,

    /// The coordinator's certificate (PEM) instead of a fresh one; with
    /// --key, so the token's fingerprint stays the same across starts.
    #[arg(long, requires = "key", help_heading = "Distributed runs")]
    pub cert: Option<PathBuf>,

    /// The certificate's private key (PEM).
    #[arg(long, requires = "cert", help_heading = "Distributed runs")]
    pub key: Option<PathBuf>,

    /// A CA (PEM): admit only workers whose client certificate it signed
    /// (no token needed); --cert should be signed by it too.
    #[arg(
        long,
        requires = "cert",
        conflicts_with = "secret",
        help_heading = "Distributed runs"
    )]
    pub ca: Option<PathBuf>,
}

impl RunArgs {
    /// The run these flags describe (the scenario's hash is filled in when
    /// it is loaded).
    pub fn spec(&self) -> RunSpec {
        RunSpec {
            scenario: ScenarioRef {
                name: self.scenario.display().to_string(),
                ..ScenarioRef::default()
            },
            options: RunOptions {
                vus: self.vus,
                max_vus: self.max_vus,
                duration: self.duration,
                iterations: self.iterations,
                shared_iterations: self.shared_iterations,
                rate: self.rate,
                stages: self.stages.clone(),
                arrival: self.arrival,
                think_time: self.think_time,
                pacing: self.pacing,
                ramp_up: self.ramp_up,
                grace: self.grace,
                env: self.env.iter().cloned().collect(),
                thresholds: self.thresholds.iter().map(|t| t.source.clone()).collect(),
                cpu_limit: self.cpu_limit,
                fuel: self.fuel,
                memory_limit: self.memory_limit,
                instance_limit: self.instance_limit,
                table_limit: self.table_limit,
                table_elements: self.table_elements,
                iteration_timeout: self.iteration_timeout,
                http_timeout: self.http_timeout,
                max_body: self.max_body,
                insecure: self.insecure,
                log_rate: self.log_rate,
                max_series: self.max_series,
                allow_hosts: self.allow_hosts.clone(),
                block_hosts: self.block_hosts.clone(),
                local_addrs: self.local_addrs.clone(),
                seed: self.seed,
                max_memory: self.max_memory,
            },
            outputs: self.out.clone(),
            enforced: None,
        }
    }
}

/// Flags of `runner serve`.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Address to serve the API on. Anything but loopback needs --token.
    #[arg(long, default_value = "127.0.0.1:6565")]
    pub listen: SocketAddr,

    /// Bearer token every request must carry (`Authorization: Bearer
    /// TOKEN`).
    #[arg(long, env = "RUNNER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Largest scenario upload accepted, e.g. `256MiB`.
    #[arg(long, value_parser = parse_size, default_value = "256MiB")]
    pub max_upload: u64,

    /// Finished runs kept (their summaries and histories); older ones are
    /// forgotten.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub keep_runs: u32,

    /// Where the VUs of submitted runs may connect (repeatable; as `run
    /// --allow-host`). Default: loopback only, so an uploaded scenario
    /// cannot aim this machine at any other host.
    #[arg(long = "allow-host", value_name = "RULE")]
    pub allow_hosts: Vec<String>,

    /// Where they may never connect (repeatable).
    #[arg(long = "block-host", value_name = "RULE")]
    pub block_hosts: Vec<String>,
}

/// Flags of `runner inspect`.
#[derive(Debug, Args, Clone)]
pub struct InspectArgs {
    /// The scenario component.
    pub scenario: PathBuf,

    /// A value the scenario's options may read (as with `run`).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `runner target`.
#[derive(Debug, Args, Clone)]
pub struct TargetArgs {
    /// Address to listen on; port 0 picks a free port (printed on start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with a fresh self-signed
    /// certificate; clients need `--insecure`.
    #[arg(long)]
    pub tls: bool,

    /// Pause the whole server every PERIOD for LENGTH, e.g. `5s:1s`
    /// (requests arriving in a pause wait for its end).
    #[arg(long, value_name = "PERIOD:LENGTH", value_parser = parse_stall)]
    pub stall: Option<crate::target::Stall>,
}

/// The statistics a summary table shows for each latency trend.
#[derive(Clone, Debug, PartialEq)]
pub struct TrendStats(pub Vec<crate::thresholds::Aggregate>);

fn parse_trend_stats(s: &str) -> Result<TrendStats, String> {
    let stats = s
        .split(',')
        .map(|w| {
            crate::thresholds::Aggregate::parse(w.trim())
                .filter(|a| a.is_trend())
                .ok_or_else(|| format!("{w:?} is not a trend statistic (avg, min, med, max, p(N))"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TrendStats(stats))
}

fn parse_threshold(s: &str) -> Result<crate::thresholds::Threshold, String> {
    let t = crate::thresholds::Threshold::parse(s)?;
    t.validate()?;
    Ok(t)
}

fn parse_stall(s: &str) -> Result<crate::target::Stall, String> {
    let (p, l) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not PERIOD:LENGTH (e.g. 5s:1s)"))?;
    let (period, length) = (parse_duration(p)?, parse_duration(l)?);
    if length >= period || period.is_zero() {
        return Err("the pause must be shorter than the period".into());
    }
    Ok(crate::target::Stall { period, length })
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=10_000_000.0).contains(&r) => Ok(r),
        Ok(_) => Err("must be 0 to 10000000 per second".into()),
        Err(_) => Err(format!("{s:?} is not a number of iterations per second")),
    }
}

fn parse_positive_u32(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}: expected a whole number")),
    }
}

fn parse_positive_u64(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}: expected a whole number")),
    }
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_flags_give_the_default_options() {
        let cli = Cli::try_parse_from(["runner", "run", "s.wasm"]).expect("parses");
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert_eq!(a.spec().options, RunOptions::default());
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "runner",
            "run",
            "s.wasm",
            "--vus",
            "10",
            "-d",
            "5s",
            "-e",
            "A=b=c",
            "--out",
            "json=r.json",
        ])
        .expect("parses");
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert_eq!(a.vus, Some(10));
        assert_eq!(a.duration, Some(Duration::from_secs(5)));
        assert_eq!(a.env, vec![("A".into(), "b=c".into())]);
        assert_eq!(a.out, vec![Output::Json("r.json".into())]);
        assert!(Cli::try_parse_from(["runner", "run", "s.wasm", "--vus", "0"]).is_err());
        assert!(Cli::try_parse_from(["runner", "run", "s.wasm", "--duration", "soon"]).is_err());
        assert!(Cli::try_parse_from(["runner", "run", "s.wasm", "--duration", "0s"]).is_err());
        assert!(Cli::try_parse_from(["runner", "run", "s.wasm", "--http-timeout", "0s"]).is_err());
        // A zero pause is a real choice.
        assert!(Cli::try_parse_from(["runner", "run", "s.wasm", "--think-time", "0s"]).is_ok());
    }
}
