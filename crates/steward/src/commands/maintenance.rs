//! `steward maintenance ...`

use serde_json::{Value, json};

use crate::cli::MaintenanceCommand;
use crate::client::Client;
use crate::output::{Pruned, human_size};

pub async fn run(client: &Client, cmd: MaintenanceCommand) -> anyhow::Result<()> {
    match cmd {
        MaintenanceCommand::Prune(json) => {
            let v: Value = client.post("/api/v1/maintenance/prune", &json!({})).await?;
            super::show(&json, v, |p: &Pruned| {
                format!(
                    "Pruned the backup repository: {} expired backup{} removed, {} pack{} deleted, {} freed.\n",
                    p.expired,
                    if p.expired == 1 { "" } else { "s" },
                    p.packs_deleted,
                    if p.packs_deleted == 1 { "" } else { "s" },
                    human_size(p.bytes_deleted)
                )
            })
        }
    }
}
