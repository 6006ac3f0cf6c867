//! `steward release ...`

use serde_json::Value;

use crate::cli::ReleaseCommand;
use crate::client::Client;
use crate::output::{self, Release};

pub async fn run(client: &Client, cmd: ReleaseCommand) -> anyhow::Result<()> {
    match cmd {
        ReleaseCommand::List(json) => {
            let v: Value = client.get("/api/v1/releases", &[]).await?;
            super::show(&json, v, |r: &Vec<Release>| output::release_table(r))
        }
    }
}
