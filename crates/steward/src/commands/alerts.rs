//! `steward alerts [--mine]`, `steward alerts dismiss ID`

use serde_json::Value;

use crate::cli::{AlertsCommand, JsonFlag};
use crate::client::Client;
use crate::output::{self, Alert};

pub async fn run(
    client: &Client,
    command: Option<AlertsCommand>,
    mine: bool,
    limit: Option<u32>,
    json: JsonFlag,
) -> anyhow::Result<()> {
    if let Some(AlertsCommand::Dismiss { id }) = command {
        let _: Value = client
            .post(
                &format!("/api/v1/alerts/{id}/dismiss"),
                &serde_json::json!({}),
            )
            .await?;
        println!("Dismissed alert {id} (for you only).");
        return Ok(());
    }
    let query: Vec<(&str, String)> = limit
        .map(|n| ("limit", n.to_string()))
        .into_iter()
        .collect();
    let path = if mine {
        "/api/v1/alerts/mine"
    } else {
        "/api/v1/alerts"
    };
    let v: Value = client.get(path, &query).await?;
    super::show(&json, v, |a: &Vec<Alert>| output::alert_table(a))
}
