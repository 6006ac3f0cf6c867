//! `steward backup ...`

use serde_json::{Map, Value, json};

use crate::cli::{BackupCommand, JsonFlag};
use crate::client::{ApiError, Client, segment};
use crate::output::{self, Backup, Instance, RestoreStarted};

pub async fn run(client: &Client, cmd: BackupCommand) -> anyhow::Result<()> {
    match cmd {
        BackupCommand::Verify {
            id,
            instance,
            all,
            read_data,
            sample,
            no_wait,
            json,
        } => {
            let args = super::verify::VerifyArgs {
                id,
                instance,
                all,
                read_data,
                sample,
                no_wait,
                json,
            };
            super::verify::run(client, args).await
        }
        BackupCommand::Create {
            instance,
            label,
            notes,
            wait,
            json,
        } => {
            let body = json!({"label": label, "notes": notes});
            let v: Value = client
                .post(
                    &format!("/api/v1/instances/{}/backups", segment(&instance)),
                    &body,
                )
                .await?;
            if !wait.wait {
                return super::show(&json, v, |b: &Backup| {
                    let follow = match b.job_id {
                        Some(j) => format!(
                            "as job {j}; follow it with `steward job show {j}` or wait with --wait"
                        ),
                        None => "; follow it with `steward backup show ID`".into(),
                    };
                    format!(
                        "Backup {} ({}) of {} is {} {follow}.\n",
                        b.id,
                        b.label.as_deref().unwrap_or_default(),
                        b.instance,
                        b.status
                    )
                });
            }
            let b: Backup = output::decode(v)?;
            let failure = match b.job_id {
                Some(job) => super::wait_for_job(client, job).await?.failure(),
                None => None,
            };
            let v = wait_for_backup(client, b.id).await?;
            let b: Backup = output::decode(v.clone())?;
            let failure = failure.or_else(|| {
                (b.status == "failed").then(|| {
                    anyhow::anyhow!(
                        "backup {} of {} failed: {}",
                        b.id,
                        b.instance,
                        b.error.as_deref().unwrap_or("no error was recorded")
                    )
                })
            });
            super::show(&json, v, |b: &Backup| {
                let head = if b.status == "completed" {
                    format!("Backup {} of {} completed.\n\n", b.id, b.instance)
                } else {
                    String::new()
                };
                format!("{head}{}", output::backup_details(b))
            })?;
            failure.map_or(Ok(()), Err)
        }
        BackupCommand::List { instance, json } => {
            let v: Value = client
                .get(
                    &format!("/api/v1/instances/{}/backups", segment(&instance)),
                    &[],
                )
                .await?;
            super::show(&json, v, |b: &Vec<Backup>| {
                output::backup_table(&instance, b)
            })
        }
        BackupCommand::Show { id, json } => {
            let v: Value = client.get(&format!("/api/v1/backups/{id}"), &[]).await?;
            super::show(&json, v, output::backup_details)
        }
        BackupCommand::Edit {
            id,
            label,
            notes,
            json,
        } => {
            let mut body = Map::new();
            if let Some(l) = label {
                body.insert("label".into(), l.into());
            }
            if let Some(n) = notes {
                body.insert("notes".into(), n.into());
            }
            let v: Value = client
                .patch(&format!("/api/v1/backups/{id}"), &Value::Object(body))
                .await?;
            super::show(&json, v, |b: &Backup| {
                format!("Updated backup {}.\n\n{}", b.id, output::backup_details(b))
            })
        }
        BackupCommand::Delete { id, yes, json } => {
            super::require_confirmation(yes, &format!("delete backup {id}"))?;
            if !yes {
                let b: Backup = client.get(&format!("/api/v1/backups/{id}"), &[]).await?;
                super::confirm(
                    false,
                    &output::delete_backup_question(&b),
                    &format!("backup {id} was not deleted"),
                )?;
            }
            let v: Value = client.delete(&format!("/api/v1/backups/{id}"), &[]).await?;
            super::show(&json, v, |b: &Backup| {
                format!(
                    "Deleted backup {} ({}) of {}.\n",
                    b.id,
                    b.label.as_deref().unwrap_or_default(),
                    b.instance
                )
            })
        }
        BackupCommand::Range { instance, json } => {
            super::pitr::range(client, &instance, &json).await
        }
        BackupCommand::Restore {
            id: None,
            instance,
            at,
            zone,
            target,
            yes,
            wait,
            json,
        } => {
            let args = super::pitr::RestoreAtArgs {
                instance: instance.unwrap_or_default(),
                at: at.unwrap_or_default(),
                time_zone: zone.time_zone,
                target,
                yes,
                wait: wait.wait,
                json,
            };
            super::pitr::restore_at(client, args).await
        }
        BackupCommand::Restore {
            id: Some(id),
            target,
            yes,
            wait,
            json,
            ..
        } => {
            let backup: Backup = client.get(&format!("/api/v1/backups/{id}"), &[]).await?;
            let instance: Instance = client
                .get(&format!("/api/v1/instances/{}", segment(&target)), &[])
                .await?;
            // A target the server would refuse is refused here, before the review and before
            // asking for a confirmation that could not help.
            check_restorable(&backup, &instance)?;
            super::require_confirmation(yes, &format!("restore backup {id} into {target}"))?;
            let review = output::restore_review(&backup, &instance);
            // The review is for people; with --json it goes to stderr so stdout stays JSON.
            if json.json {
                eprintln!("{review}");
            } else {
                println!("{review}");
            }
            super::confirm(
                yes,
                &format!("Restore backup {id} into {target}? [y/N] "),
                "nothing was restored",
            )?;
            let v: Value = client
                .post(
                    &format!("/api/v1/backups/{id}/restore"),
                    &json!({"target": target}),
                )
                .await?;
            let started: RestoreStarted = output::decode(v.clone())?;
            if !wait.wait {
                return super::show(&json, v, |r: &RestoreStarted| {
                    format!(
                        "Restoring backup {} into {} as job {j}; {} is unavailable until it completes.\n\
                         Follow it with `steward job show {j}` or wait with --wait.\n",
                        r.backup.id,
                        r.target.name,
                        r.target.name,
                        j = r.job.id
                    )
                });
            }
            let job = super::wait_for_job(client, started.job.id).await?;
            let failure = job.failure();
            let job_v: Value = client
                .get(&format!("/api/v1/jobs/{}", started.job.id), &[])
                .await?;
            let target_v: Value = client
                .get(&format!("/api/v1/instances/{}", segment(&target)), &[])
                .await?;
            let mut answer = v;
            answer["job"] = job_v;
            answer["target"] = target_v;
            show_restored(&json, answer, failure.is_none())?;
            failure.map_or(Ok(()), Err)
        }
    }
}

/// Refuses, before the review is printed, a restore the server would refuse, in the server's
/// order: a backup that is not completed (`backup_not_restorable`, the server's words), one a
/// verify found damaged (`backup_damaged`), then a target the core's rule refuses (`check_restore_target`: only an available sandbox). The
/// error is the one the server would answer (409 and its code), so the message and exit code
/// are the same. A type or state this CLI does not know is left to the server.
fn check_restorable(backup: &Backup, target: &Instance) -> anyhow::Result<()> {
    use steward_core::backup::BackupRefusal;
    use steward_core::instance::{InstanceState, InstanceType};
    let conflict = |code: &str, message: String| -> anyhow::Error {
        ApiError {
            status: reqwest::StatusCode::CONFLICT,
            code: code.into(),
            message,
        }
        .into()
    };
    if backup.status != "completed" {
        return Err(conflict(
            "backup_not_restorable",
            format!(
                "backup {} is {}; only completed backups can be restored",
                backup.id, backup.status
            ),
        ));
    }
    if backup.damaged {
        return Err(conflict(
            "backup_damaged",
            format!(
                "backup {} of {} is damaged and cannot be restored: {}. Verify it again with \
                 `steward backup verify {} --read-data`; when a verify finds it whole, it can be \
                 restored",
                backup.id,
                backup.instance,
                backup
                    .damage
                    .as_deref()
                    .unwrap_or("a verify found it damaged"),
                backup.id
            ),
        ));
    }
    let (Ok(kind), Ok(state)) = (
        target.instance_type.parse::<InstanceType>(),
        target.state.parse::<InstanceState>(),
    ) else {
        return Ok(());
    };
    steward_core::backup::check_restore_target(&target.name, kind, state).map_err(|refusal| {
        let code = match refusal {
            BackupRefusal::TargetNotSandbox { .. } => "target_not_sandbox",
            BackupRefusal::TargetBusy { .. } | BackupRefusal::SourceBusy { .. } => "instance_busy",
            BackupRefusal::ReleaseTooOld { .. } => "release_too_old",
        };
        conflict(code, refusal.to_string())
    })
}

/// Prints the end of a restore waited for: the target as it is now.
fn show_restored(json: &JsonFlag, v: Value, succeeded: bool) -> anyhow::Result<()> {
    super::show(json, v, |r: &RestoreStarted| {
        if succeeded {
            format!(
                "Restored backup {} ({}) of {} into {}: it is {} at release {}.\n",
                r.backup.id,
                r.backup.label.as_deref().unwrap_or_default(),
                r.backup.instance,
                r.target.name,
                r.target.state,
                r.target.release
            )
        } else {
            format!(
                "{} is {} at release {}.\n",
                r.target.name, r.target.state, r.target.release
            )
        }
    })
}

/// Polls a backup until it is neither queued nor running (its job has ended, so this is
/// normally at once) and returns its JSON.
async fn wait_for_backup(client: &Client, id: i64) -> anyhow::Result<Value> {
    loop {
        let v: Value = client.get(&format!("/api/v1/backups/{id}"), &[]).await?;
        let b: Backup = output::decode(v.clone())?;
        if !matches!(b.status.as_str(), "queued" | "running") {
            return Ok(v);
        }
        tokio::time::sleep(super::POLL).await;
    }
}
