//! `runner`: the command-line entry point. All logic lives in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use runner::cli::{Cli, Command, Output};
use runner::{engine, EXIT_ERROR, EXIT_THRESHOLDS, EXIT_USAGE};
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
            // The client libraries narrate every (re)connection at info;
            // the runner counts those itself.
            EnvFilter::try_from_env("RUNNER_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn,rumqttc=warn")),
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
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => {
                let summary = runner::run::run(&args).await?;
                if !args.quiet {
                    println!("{}", summary.table(&args.summary_trend_stats.0));
                }
                for out in &args.out {
                    match out {
                        Output::Json(path) => summary.write_json(path)?,
                        Output::Ndjson(_) | Output::Csv(_) => {} // written during the run
                    }
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
            Command::Inspect(args) => {
                let report = runner::inspect::inspect(&args.scenario, &args.env).await?;
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print!("{}", report.text());
                }
                Ok(0)
            }
            Command::Target(args) => runner::target::serve(args.listen, args.tls, args.stall)
                .await
                .map(|()| 0),
        }
    });
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
