//! The `steward` binary: `steward serve` runs the admin center; every other command is a
//! thin client of its REST API. Parsing is in `cli`, the work in `commands`, HTTP in
//! `client`, printing in `output`. Errors end here as `error: ...` and an exit code.

mod cli;
mod client;
mod commands;
mod output;

use std::io::IsTerminal;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use crate::client::{ApiError, UsageError, exit};

fn main() -> ExitCode {
    let cli = cli::parse();
    let filter = EnvFilter::try_from_env("STEWARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(api) = e.downcast_ref::<ApiError>() {
        api.exit_code()
    } else if e.downcast_ref::<UsageError>().is_some() {
        exit::USAGE
    } else if e.downcast_ref::<commands::DamageFound>().is_some() {
        exit::DAMAGED
    } else {
        exit::FAILURE
    }
}
