//! Flags of the commands of distributed runs: `runner join` and
//! `runner keygen`.

use std::path::PathBuf;

use clap::Args;

/// Flags of `runner join`.
#[derive(Debug, Args, Clone)]
pub struct JoinArgs {
    /// The coordinator, `HOST:PORT`.
    #[arg(long)]
    pub coordinator: String,

    /// The token the coordinator printed (`FINGERPRINT:SECRET`).
    #[arg(
        long,
        env = "RUNNER_JOIN_TOKEN",
        hide_env_values = true,
        value_parser = parse_join_token,
        required_unless_present = "ca",
        conflicts_with = "ca"
    )]
    pub token: Option<crate::federation::token::Token>,

    /// Instead of a token: the CA (PEM) that signed the coordinator's
    /// certificate and this worker's (--cert, --key).
    #[arg(long, requires_all = ["cert", "key"])]
    pub ca: Option<PathBuf>,

    /// This worker's certificate (PEM), signed by --ca.
    #[arg(long, requires = "ca")]
    pub cert: Option<PathBuf>,

    /// Its private key (PEM).
    #[arg(long, requires = "ca")]
    pub key: Option<PathBuf>,

    /// This worker's capacity: `auto` (its CPU cores) or a number; the
    /// load is shared in proportion.
    #[arg(long, default_value = "auto", value_parser = parse_capacity)]
    pub capacity: Capacity,

    /// A name for the coordinator's log and table (default: the host name).
    #[arg(long)]
    pub name: Option<String>,

    /// Where this worker's VUs may connect (repeatable; as `run
    /// --allow-host`), whatever the coordinator's run says. Default:
    /// loopback only.
    #[arg(long = "allow-host", value_name = "RULE")]
    pub allow_hosts: Vec<String>,

    /// Where they may never connect (repeatable).
    #[arg(long = "block-host", value_name = "RULE")]
    pub block_hosts: Vec<String>,

    /// Leave after one run (a Kubernetes Job's worker, a script's):
    /// exit once the coordinator closes the connection.
    #[arg(long)]
    pub once: bool,

    /// A process of `runner run --processes` on this machine: the run's
    /// own egress rules hold (it is this machine's own run), and it leaves
    /// after the run.
    #[arg(long, hide = true, conflicts_with_all = ["allow_hosts", "block_hosts"])]
    pub local: bool,
}

/// How many processes a run uses on this machine (`runner run
/// --processes`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Processes {
    /// One per CPU core, more if the open-files limit needs them.
    Auto,
    /// This many.
    Count(u32),
}

/// Most processes one run starts on a machine.
pub const MAX_PROCESSES: u32 = 256;

/// Parses `--processes`: `auto` or a count.
pub fn parse_processes(s: &str) -> Result<Processes, String> {
    if s == "auto" {
        return Ok(Processes::Auto);
    }
    match s.parse::<u32>() {
        Ok(n) if (1..=MAX_PROCESSES).contains(&n) => Ok(Processes::Count(n)),
        _ => Err(format!(
            "{s:?} is not a process count: `auto` or a number from 1 to {MAX_PROCESSES}"
        )),
    }
}

/// A worker's capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Capacity {
    /// Its CPU cores.
    Auto,
    /// A given weight.
    Given(f64),
}

fn parse_capacity(s: &str) -> Result<Capacity, String> {
    if s == "auto" {
        return Ok(Capacity::Auto);
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1e9 => Ok(Capacity::Given(v)),
        _ => Err(format!(
            "{s:?} is not a capacity: `auto` or a number above 0"
        )),
    }
}

fn parse_join_token(s: &str) -> Result<crate::federation::token::Token, String> {
    s.parse()
}

/// Flags of `runner keygen`.
#[derive(Debug, Args, Clone)]
pub struct KeygenArgs {
    /// Directory to write `coordinator.crt`, `coordinator.key` and `token`
    /// into (created if missing).
    #[arg(long)]
    pub dir: PathBuf,

    /// The secret to put in the token (default: a new random one).
    #[arg(
        long,
        env = "RUNNER_SECRET",
        hide_env_values = true,
        conflicts_with = "ca"
    )]
    pub secret: Option<String>,

    /// Make a CA instead of a token: `ca.crt`, `ca.key`, a coordinator
    /// certificate it signed and a worker certificate it signed.
    #[arg(long)]
    pub ca: bool,

    /// With --ca: a host name or IP address the coordinator is reached at
    /// (repeatable; `localhost`, `127.0.0.1` and `::1` are always in).
    #[arg(long = "host", requires = "ca", value_name = "NAME")]
    pub hosts: Vec<String>,

    /// With --ca: how many worker certificates to make (`worker.crt` for
    /// one, `worker-1.crt`... for more).
    #[arg(long, default_value_t = 1, requires = "ca", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub workers: u32,
}
