//! One function per command. Client commands call the API through [`Client`] and print with
//! `output`; `serve` runs the server library.

mod audit;
mod instance;
mod job;
mod release;
mod serve;
mod token;
mod user;

use std::io::{BufRead, IsTerminal, Write};

use serde_json::Value;

use crate::cli::{Cli, Command, JsonFlag};
use crate::client::{Client, UsageError};
use crate::output;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Serve(args) = cli.command {
        return serve::run(args).await;
    }
    let client = Client::new(&cli.conn.url, cli.conn.token)?;
    match cli.command {
        Command::Serve(_) => unreachable!("handled above"),
        Command::Instance(c) => instance::run(&client, c).await,
        Command::Release(c) => release::run(&client, c).await,
        Command::User(c) => user::run(&client, c).await,
        Command::Token(c) => token::run(&client, c).await,
        Command::Audit(c) => audit::run(&client, c).await,
        Command::Job(c) => job::run(&client, c).await,
    }
}

/// Prints an answer: its JSON with `--json`, otherwise what `human` makes of it.
fn show<T: serde::de::DeserializeOwned>(
    json: &JsonFlag,
    v: Value,
    human: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if json.json {
        return output::print_json(&v);
    }
    let t: T = output::decode(v)?;
    print!("{}", human(&t));
    Ok(())
}

/// Reads lines from standard input, prompting on stderr when it is a terminal. Each line
/// must be non-empty; `what` names them in prompts and errors.
fn read_lines(what: &[&str]) -> anyhow::Result<Vec<String>> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut lines = stdin.lock();
    let mut out = Vec::with_capacity(what.len());
    for w in what {
        if interactive {
            eprint!("{w}: ");
            std::io::stderr().flush()?;
        }
        let mut line = String::new();
        lines.read_line(&mut line)?;
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            return Err(UsageError(format!(
                "expected the {} on standard input, got an empty line",
                w.to_lowercase()
            ))
            .into());
        }
        out.push(line);
    }
    Ok(out)
}
