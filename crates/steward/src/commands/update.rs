//! `steward update ...`

use serde_json::Value;

use crate::cli::UpdateCommand;
use crate::client::Client;

pub async fn run(client: &Client, cmd: UpdateCommand) -> anyhow::Result<()> {
    match cmd {
        UpdateCommand::List { instance, json } => {
            let v: Value = client
                .get(&format!("/api/v1/instances/{instance}/updates"), &[])
                .await?;
            super::show(&json, v, |v: &Value| format!("{v:#}\n"))
        }
    }
}
