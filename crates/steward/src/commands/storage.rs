//! `steward storage`

use serde_json::Value;

use crate::cli::JsonFlag;
use crate::client::Client;
use crate::output::{self, Storage};

pub async fn run(client: &Client, json: JsonFlag) -> anyhow::Result<()> {
    let v: Value = client.get("/api/v1/storage", &[]).await?;
    super::show(&json, v, |s: &Storage| output::storage_table(s))
}
