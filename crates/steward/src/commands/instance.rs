//! `steward instance ...`

use serde_json::{Value, json};

use crate::cli::InstanceCommand;
use crate::client::{Client, segment};
use crate::output::{self, Instance, InstanceList};

pub async fn run(client: &Client, cmd: InstanceCommand) -> anyhow::Result<()> {
    match cmd {
        InstanceCommand::Create {
            name,
            instance_type,
            release,
            node,
            json,
        } => {
            let body = json!({"name": name, "type": instance_type.as_str(), "release": release, "node": node});
            let v: Value = client.post("/api/v1/instances", &body).await?;
            super::show(&json, v, |i: &Instance| {
                format!(
                    "Created {} instance {} at release {}.\n\n{}",
                    i.instance_type,
                    i.name,
                    i.release,
                    output::instance_details(i)
                )
            })
        }
        InstanceCommand::List {
            filter,
            limit,
            json,
        } => {
            let v = list_all(client, filter.as_deref(), limit).await?;
            super::show(&json, v, |l: &InstanceList| output::instance_table(l))
        }
        InstanceCommand::Show { name, json } => {
            let v: Value = client
                .get(&format!("/api/v1/instances/{}", segment(&name)), &[])
                .await?;
            super::show(&json, v, |i: &Instance| output::instance_details(i))
        }
        InstanceCommand::Switch {
            name,
            instance_type,
            json,
        } => {
            let body = json!({"type": instance_type.as_str()});
            let v: Value = client
                .post(
                    &format!("/api/v1/instances/{}/switch", segment(&name)),
                    &body,
                )
                .await?;
            super::show(&json, v, |i: &Instance| {
                format!("{} is now a {} instance.\n", i.name, i.instance_type)
            })
        }
        InstanceCommand::Delete {
            name,
            confirm,
            json,
        } => {
            let v: Value = client
                .delete(
                    &format!("/api/v1/instances/{}", segment(&name)),
                    &[("confirm", confirm)],
                )
                .await?;
            super::show(&json, v, |i: &Instance| {
                format!(
                    "Deleted {}: it is out of service. Its database was kept at {}\n",
                    i.name, i.database_path
                )
            })
        }
    }
}

/// Every page of `GET /api/v1/instances` (or the first `limit` instances) as one list: the
/// totals are the first page's, which count the whole match.
async fn list_all(
    client: &Client,
    filter: Option<&str>,
    limit: Option<u64>,
) -> anyhow::Result<Value> {
    const PAGE: u64 = 1000;
    let mut all: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    let mut first: Option<Value> = None;
    loop {
        let want = limit.map_or(PAGE, |l| (l - all.len() as u64).min(PAGE));
        let mut query = vec![("limit", want.to_string())];
        if let Some(f) = filter {
            query.push(("q", f.to_owned()));
        }
        if let Some(a) = &after {
            query.push(("after", a.clone()));
        }
        let mut page: Value = client.get("/api/v1/instances", &query).await?;
        if let Some(rows) = page.get_mut("instances").and_then(Value::as_array_mut) {
            all.append(rows);
        }
        after = page
            .get("next_after")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let next_after = after.clone();
        let mut head = first.take().unwrap_or(page);
        head["next_after"] = json!(next_after);
        first = Some(head);
        if after.is_none() || limit.is_some_and(|l| all.len() as u64 >= l) {
            break;
        }
    }
    let mut out = first.unwrap_or_else(|| json!({}));
    out["instances"] = Value::Array(all);
    Ok(out)
}
