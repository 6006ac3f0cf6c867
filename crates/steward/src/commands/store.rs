//! `steward store migrate-to`: copy this host's SQLite control plane into PostgreSQL. Runs
//! on the host (it reads the SQLite file), not through the API.

use std::io::Write;

use anyhow::{Context, bail};
use steward_server::Config;
use steward_store::{CopyReport, Store};

use crate::cli::{MigrateToArgs, StoreCommand};
use crate::output;

pub async fn run(c: StoreCommand) -> anyhow::Result<()> {
    match c {
        StoreCommand::MigrateTo(args) => tokio::task::spawn_blocking(move || migrate_to(args))
            .await
            .context("the copy panicked")?,
    }
}

fn migrate_to(args: MigrateToArgs) -> anyhow::Result<()> {
    let url = args.url.trim();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!(
            "the target {:?} is not a PostgreSQL URL: use postgres://user@host/database",
            steward_store::redact_url(url)
        );
    }
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    let source = match config.database_url.as_deref().map(str::trim) {
        None | Some("") => config.data_dir.join("steward.db"),
        Some(u) if u.starts_with("sqlite:") => u
            .trim_start_matches("sqlite:")
            .trim_start_matches("//")
            .into(),
        Some(u) => bail!(
            "this host's control plane is already {} (database_url): only a SQLite one is copied",
            steward_store::redact_url(u)
        ),
    };
    if !source.is_file() {
        bail!(
            "there is no control-plane store at {} (give --data-dir, or STEWARD_DATA_DIR)",
            source.display()
        );
    }
    let from = Store::open(&source)
        .with_context(|| format!("cannot open the control-plane store {}", source.display()))?;
    let to = Store::open_postgres(url)?;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "Copying {} into {} (stop `steward serve` first: later changes are not copied)",
        source.display(),
        steward_store::redact_url(url)
    );
    let report: CopyReport = from.copy_into(&to, |table, rows| {
        let _ = write!(err, "\r  {table}: {rows} rows      ");
        let _ = err.flush();
    })?;
    let _ = writeln!(err, "\r{}", " ".repeat(40));
    drop(err);
    if args.json.json {
        output::print_json(&serde_json::json!({
            "source": source.display().to_string(),
            "target": steward_store::redact_url(url),
            "rows": report.rows,
            "tables": report.tables.iter().map(|(t, n)| serde_json::json!({"table": t, "rows": n})).collect::<Vec<_>>(),
        }))?;
    } else {
        let tables = report.tables.iter().filter(|(_, n)| *n > 0).count();
        println!(
            "Copied {} rows of {} tables into {}.\nStart each node with STEWARD_DATABASE_URL={} to use it.",
            report.rows,
            tables,
            steward_store::redact_url(url),
            steward_store::redact_url(url)
        );
    }
    Ok(())
}
