//! One function per command. Client commands call the API through [`Client`] and print with
//! `output`; `serve` runs the server library.

mod alerts;
mod audit;
mod backup;
mod drill;
mod instance;
mod job;
mod maintenance;
mod node;
mod notify;
mod pitr;
mod release;
mod serve;
mod storage;
mod store;
mod token;
mod update;
mod user;
mod verify;
mod workitem;

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use serde_json::Value;

use crate::cli::{Cli, Command, JsonFlag};
use crate::client::{Client, UsageError};
use crate::output::{self, Job};

pub use verify::DamageFound;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Serve(args) = cli.command {
        return serve::run(args).await;
    }
    if let Command::Store(c) = cli.command {
        return store::run(c).await;
    }
    let client = Client::new(&cli.conn.url, cli.conn.token)?;
    match cli.command {
        Command::Serve(_) | Command::Store(_) => unreachable!("handled above"),
        Command::Instance(c) => instance::run(&client, c).await,
        Command::Release(c) => release::run(&client, c).await,
        Command::User(c) => user::run(&client, c).await,
        Command::Token(c) => token::run(&client, c).await,
        Command::Audit(c) => audit::run(&client, c).await,
        Command::Job(c) => job::run(&client, c).await,
        Command::Backup(c) => backup::run(&client, c).await,
        Command::Storage(json) => storage::run(&client, json).await,
        Command::Alerts {
            command,
            mine,
            limit,
            json,
        } => alerts::run(&client, command, mine, limit, json).await,
        Command::Notify(c) => notify::run(&client, c).await,
        Command::Maintenance(c) => maintenance::run(&client, c).await,
        Command::Update(c) => update::run(&client, c).await,
        Command::Workitem(c) => workitem::run(&client, c).await,
        Command::Drill(c) => drill::run(&client, c).await,
        Command::Node(c) => node::run(&client, c).await,
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

/// Refuses, before anything is sent, to run a destructive command that cannot ask: standard
/// input is not a terminal and `--yes` was not given. `what` says what would happen, e.g.
/// "delete backup 3".
fn require_confirmation(yes: bool, what: &str) -> anyhow::Result<()> {
    if yes || std::io::stdin().is_terminal() {
        return Ok(());
    }
    Err(UsageError(format!(
        "refusing to {what} without confirmation: standard input is not a terminal, so \
         Steward cannot ask; pass --yes to {what} without asking"
    ))
    .into())
}

/// Asks `question` on the terminal (unless `yes`) and fails unless the answer is y or yes.
/// `declined` says what did not happen.
fn confirm(yes: bool, question: &str, declined: &str) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        anyhow::bail!("cancelled; {declined}")
    }
}

/// How often `--wait` asks the server about the job.
const POLL: Duration = Duration::from_millis(250);

/// Polls a job until it ends, showing its stage and percent on stderr (one updating line on
/// a terminal, a line per change otherwise), and returns it as it ended (see
/// [`Job::failure`]).
async fn wait_for_job(client: &Client, id: i64) -> anyhow::Result<Job> {
    let v = follow(client, &format!("/api/v1/jobs/{id}"), |v| {
        let job: Job = output::decode(v.clone())?;
        let done = matches!(job.state.as_str(), "succeeded" | "failed");
        Ok((output::job_progress_line(&job), done))
    })
    .await?;
    output::decode(v)
}

/// Polls `path` until `describe` says it is done, showing the line `describe` makes of each
/// answer on stderr (one updating line on a terminal, a line per change otherwise), and
/// returns the last answer.
async fn follow(
    client: &Client,
    path: &str,
    describe: impl Fn(&Value) -> anyhow::Result<(String, bool)>,
) -> anyhow::Result<Value> {
    let tty = std::io::stderr().is_terminal();
    let mut last = String::new();
    loop {
        let v: Value = client.get(path, &[]).await?;
        let (line, done) = describe(&v)?;
        if line != last {
            let mut err = std::io::stderr().lock();
            if tty {
                write!(err, "\r\x1b[K{line}")?;
            } else {
                writeln!(err, "{line}")?;
            }
            err.flush()?;
            last = line;
        }
        if done {
            if tty {
                eprintln!();
            }
            return Ok(v);
        }
        tokio::time::sleep(POLL).await;
    }
}
