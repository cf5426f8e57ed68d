//! `runner`: the command-line entry point. All logic lives in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use runner::cli::{commands, Cli};
use runner::{engine, EXIT_ERROR, EXIT_USAGE};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    let color = !cli.no_color
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stderr().is_terminal();
    tracing_subscriber::fmt()
        .with_ansi(color)
        .with_env_filter(
            // The client libraries narrate every (re)connection at info
            // (and quinn every datagram a partition drops); the runner
            // counts and reports those itself.
            EnvFilter::try_from_env("RUNNER_LOG").unwrap_or_else(|_| {
                EnvFilter::new("info,async_nats=warn,quinn_udp=error,quinn=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR as u8);
        }
    };
    let result = runtime.block_on(commands::execute(cli.command));
    // Host connection tasks may linger; do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {}", engine::root_message(&e));
            ExitCode::from(EXIT_ERROR as u8)
        }
    }
}
