//! `steward workitem ...`

use serde_json::Value;

use crate::cli::WorkitemCommand;
use crate::client::Client;

pub async fn run(client: &Client, cmd: WorkitemCommand) -> anyhow::Result<()> {
    match cmd {
        WorkitemCommand::List { json } => {
            let v: Value = client.get("/api/v1/workitems", &[]).await?;
            super::show(&json, v, |v: &Value| format!("{v:#}\n"))
        }
    }
}
