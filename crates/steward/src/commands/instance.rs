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
        InstanceCommand::List(json) => {
            let v: Value = client.get("/api/v1/instances", &[]).await?;
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
