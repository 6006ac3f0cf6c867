//! `steward alerts`

use serde_json::Value;

use crate::cli::JsonFlag;
use crate::client::Client;
use crate::output::{self, Alert};

pub async fn run(client: &Client, limit: Option<u32>, json: JsonFlag) -> anyhow::Result<()> {
    let query: Vec<(&str, String)> = limit
        .map(|n| ("limit", n.to_string()))
        .into_iter()
        .collect();
    let v: Value = client.get("/api/v1/alerts", &query).await?;
    super::show(&json, v, |a: &Vec<Alert>| output::alert_table(a))
}
