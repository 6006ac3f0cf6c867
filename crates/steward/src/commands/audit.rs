//! `steward audit ...`

use serde_json::Value;

use crate::cli::AuditCommand;
use crate::client::Client;
use crate::output::{self, AuditEntry};

pub async fn run(client: &Client, cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::List(f) => {
            let mut q: Vec<(&str, String)> = Vec::new();
            if let Some(a) = f.actor {
                q.push(("actor", a));
            }
            if let Some(a) = f.action {
                q.push(("action", a));
            }
            if let Some(t) = f.target {
                q.push(("target", t));
            }
            if let Some(s) = f.since {
                q.push(("since", s.to_rfc3339()));
            }
            if let Some(n) = f.limit {
                q.push(("limit", n.to_string()));
            }
            let v: Value = client.get("/api/v1/audit", &q).await?;
            super::show(&f.json, v, |e: &Vec<AuditEntry>| output::audit_table(e))
        }
    }
}
