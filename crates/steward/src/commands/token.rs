//! `steward token ...`

use serde_json::{Value, json};

use crate::cli::TokenCommand;
use crate::client::Client;
use crate::output::{self, CreatedToken, Token};

pub async fn run(client: &Client, cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create { name, json } => {
            let v: Value = client
                .post("/api/v1/tokens", &json!({"name": name}))
                .await?;
            super::show(&json, v, |c: &CreatedToken| output::new_token(c))
        }
        TokenCommand::Login {
            username,
            name,
            json,
        } => {
            let password = super::read_lines(&["Password"])?.remove(0);
            let body = json!({"username": username, "password": password, "name": name});
            let v: Value = client.post("/api/v1/tokens/login", &body).await?;
            super::show(&json, v, |c: &CreatedToken| output::new_token(c))
        }
        TokenCommand::List { all, json } => {
            let query = if all {
                vec![("all", "true".to_owned())]
            } else {
                vec![]
            };
            let v: Value = client.get("/api/v1/tokens", &query).await?;
            super::show(&json, v, |t: &Vec<Token>| output::token_table(t))
        }
        TokenCommand::Revoke { id, json } => {
            let v: Value = client.delete(&format!("/api/v1/tokens/{id}"), &[]).await?;
            super::show(&json, v, |t: &Token| {
                format!(
                    "Revoked API token {} ({:?}) of {}.\n",
                    t.id, t.name, t.username
                )
            })
        }
    }
}
