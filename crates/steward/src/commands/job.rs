//! `steward job ...`

use serde_json::Value;

use crate::cli::JobCommand;
use crate::client::Client;
use crate::output::{self, Job};

pub async fn run(client: &Client, cmd: JobCommand) -> anyhow::Result<()> {
    match cmd {
        JobCommand::List {
            target,
            state,
            json,
        } => {
            let mut q: Vec<(&str, String)> = Vec::new();
            if let Some(t) = target {
                q.push(("target", t));
            }
            if let Some(s) = state {
                q.push(("state", s));
            }
            let v: Value = client.get("/api/v1/jobs", &q).await?;
            super::show(&json, v, |jobs: &Vec<Job>| output::job_table(jobs))
        }
        JobCommand::Show { id, json } => {
            let v: Value = client.get(&format!("/api/v1/jobs/{id}"), &[]).await?;
            super::show(&json, v, output::job_details)
        }
    }
}
