//! `steward user ...`

use serde_json::{Value, json};

use crate::cli::UserCommand;
use crate::client::{Client, segment};
use crate::output::{self, CreatedUser, User};

pub async fn run(client: &Client, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::List(json) => {
            let v: Value = client.get("/api/v1/users", &[]).await?;
            super::show(&json, v, |u: &Vec<User>| output::user_table(u))
        }
        UserCommand::Create {
            username,
            role,
            password_stdin,
            json,
        } => {
            let password = if password_stdin {
                Some(super::read_lines(&["Password"])?.remove(0))
            } else {
                None
            };
            let body = json!({"username": username, "role": role.as_str(), "password": password});
            let v: Value = client.post("/api/v1/users", &body).await?;
            super::show(&json, v, |c: &CreatedUser| {
                let mut out = format!("Created user {} ({}).\n", c.user.username, c.user.role);
                if let Some(p) = &c.generated_password {
                    out.push_str(&format!(
                        "\nGenerated password — shown only this once; hand it over securely:\n\n    {p}\n\n\
                         They can get an API token with `steward token login {}` and change the\n\
                         password with `steward user password`.\n",
                        c.user.username
                    ));
                }
                out
            })
        }
        UserCommand::SetRole {
            username,
            role,
            json,
        } => {
            let v = update(client, &username, json!({"role": role.as_str()})).await?;
            super::show(&json, v, |u: &User| {
                format!("{} is now {}.\n", u.username, u.role)
            })
        }
        UserCommand::Disable { username, json } => {
            let v = update(client, &username, json!({"disabled": true})).await?;
            super::show(&json, v, |u: &User| {
                format!(
                    "Disabled {}: their API tokens and sessions no longer work.\n",
                    u.username
                )
            })
        }
        UserCommand::Enable { username, json } => {
            let v = update(client, &username, json!({"disabled": false})).await?;
            super::show(&json, v, |u: &User| format!("Enabled {}.\n", u.username))
        }
        UserCommand::Whoami(json) => {
            let v: Value = client.get("/api/v1/me", &[]).await?;
            super::show(&json, v, |u: &User| output::user_details(u))
        }
        UserCommand::Password => {
            let mut lines = super::read_lines(&["Current password", "New password"])?;
            let new_password = lines.pop().unwrap_or_default();
            let current_password = lines.pop().unwrap_or_default();
            let body = json!({"current_password": current_password, "new_password": new_password});
            let _: Value = client.post("/api/v1/me/password", &body).await?;
            println!("Password changed.");
            Ok(())
        }
        UserCommand::SetEmail {
            username,
            email,
            clear: _,
        } => {
            let _: Value = client
                .put(
                    &format!("/api/v1/users/{}/email", segment(&username)),
                    &json!({"email": email}),
                )
                .await?;
            match email {
                Some(e) => println!("{username}'s notifications now go to {e}."),
                None => println!("{username} has no email address any more."),
            }
            Ok(())
        }
    }
}

async fn update(client: &Client, username: &str, body: Value) -> anyhow::Result<Value> {
    client
        .patch(&format!("/api/v1/users/{}", segment(username)), &body)
        .await
}
