//! Instances: create (a real database at a catalog release), list, show, switch type,
//! delete (the database moves out of service into `retired/`; nothing is erased).

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use steward_core::policy::{Action, authorize};
use steward_core::release::ReleaseVersion;
use steward_core::{Engine, InstanceName, InstanceState, InstanceType};
use steward_store::{Db, InstanceRow, NewInstance};

use super::{Actor, Result, Services, audit_entry};
use crate::error::ServiceError;

/// File name of an instance's database inside its directory.
pub const DATABASE_FILE: &str = "database.sqlite";
/// Folder beside the database for documents; restores and refreshes never touch it.
pub const DOCUMENTS_DIR: &str = "documents";

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InstanceView {
    pub name: String,
    /// `production` or `sandbox`
    #[serde(rename = "type")]
    pub instance_type: String,
    /// `sqlite`
    pub engine: String,
    /// The application release the database is on, e.g. `9.1`.
    pub release: String,
    /// `available`, `backing_up`, `restoring`, `updating`, `refreshing` or `unavailable`
    pub state: String,
    /// The database file applications open.
    pub database_path: String,
    /// The documents folder kept beside the database.
    pub documents_path: String,
    /// Bytes the database uses on disk (database, WAL and shared-memory files).
    pub storage_bytes: u64,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// The node that keeps the instance's files and runs its jobs (`null`: from before
    /// Steward recorded nodes).
    pub node: Option<String>,
    /// Its newest finished restore drill (when, result, duration, the backup tested); `null`
    /// when never drilled. Filled by `show` and `list`.
    pub last_drill: Option<super::drills::DrillView>,
}

impl From<&InstanceRow> for InstanceView {
    fn from(i: &InstanceRow) -> Self {
        Self {
            name: i.name.clone(),
            instance_type: i.instance_type.as_str().into(),
            engine: i.engine.as_str().into(),
            release: i.release.clone(),
            state: i.state.as_str().into(),
            database_path: i.database_path.clone(),
            documents_path: i.documents_path.clone(),
            storage_bytes: steward_engine::storage_bytes(Path::new(&i.database_path)),
            created_at: i.created_at,
            created_by: i.created_by.clone(),
            node: i.node.clone(),
            last_drill: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InstanceList {
    pub instances: Vec<InstanceView>,
    /// Database storage used by all instances, in bytes.
    pub total_storage_bytes: u64,
}

fn unknown_instance(name: &str) -> ServiceError {
    ServiceError::not_found(
        "unknown_instance",
        format!("there is no instance named {name:?}"),
    )
}

/// The live instance named `name`, or `unknown_instance`.
pub(crate) fn live_instance(db: &Db, name: &str) -> Result<InstanceRow> {
    db.instance_by_name(name)?
        .ok_or_else(|| unknown_instance(name))
}

fn summary(i: &InstanceRow) -> serde_json::Value {
    json!({"type": i.instance_type, "release": i.release, "state": i.state})
}

impl Services {
    pub fn create_instance(
        &self,
        actor: &Actor,
        name: &str,
        instance_type: &str,
        release: Option<&str>,
    ) -> Result<InstanceView> {
        authorize(actor.role, Action::CreateInstance)?;
        let name = InstanceName::parse(name)?;
        let instance_type: InstanceType = instance_type.parse()?;
        let release = match release.filter(|r| !r.is_empty()) {
            None => self.catalog.latest().version,
            Some(raw) => {
                let v: ReleaseVersion = raw.parse().map_err(|e| {
                    ServiceError::invalid(
                        "invalid_release",
                        format!("{raw:?} is not a release version: {e}"),
                    )
                })?;
                if self.catalog.get(&v).is_none() {
                    let known: Vec<String> = self
                        .catalog
                        .releases()
                        .iter()
                        .map(|r| r.version.to_string())
                        .collect();
                    return Err(ServiceError::not_found(
                        "unknown_release",
                        format!(
                            "release {v} is not in the catalog (known: {})",
                            known.join(", ")
                        ),
                    ));
                }
                v
            }
        };
        let dir = self.paths.instance_dir(name.as_str());
        let db_path = dir.join(DATABASE_FILE);
        let docs = dir.join(DOCUMENTS_DIR);
        let now = self.now();
        let row = self.store.write(|db| {
            if db.instance_by_name(name.as_str())?.is_some() {
                return Err(ServiceError::conflict(
                    "instance_exists",
                    format!("an instance named {name} already exists"),
                ));
            }
            if dir.exists() {
                // Left behind by a crash between building the files and committing the row:
                // keep it, out of the way, rather than erase anything.
                self.retire_dir(&dir, &format!("{name}.orphan"), now)?;
            }
            let build = || -> std::io::Result<()> {
                std::fs::create_dir_all(&docs)?;
                Ok(())
            };
            build().map_err(|e| {
                ServiceError::internal(format!("cannot create {}: {e}", dir.display()))
            })?;
            if let Err(e) = steward_engine::create_database(&db_path, &self.catalog, &release) {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(ServiceError::internal(format!(
                    "cannot build the database: {e}"
                )));
            }
            let row = db
                .insert_instance(
                    &NewInstance {
                        name: name.to_string(),
                        instance_type,
                        engine: Engine::Sqlite,
                        release: release.to_string(),
                        state: InstanceState::Available,
                        database_path: db_path.display().to_string(),
                        documents_path: docs.display().to_string(),
                        created_by: actor.username.clone(),
                        node: Some(self.node.name().to_owned()),
                    },
                    now,
                )?
                .ok_or_else(|| {
                    ServiceError::conflict(
                        "instance_exists",
                        format!("an instance named {name} already exists"),
                    )
                })?;
            db.audit(
                &audit_entry(
                    actor,
                    "instance.create",
                    name.as_str(),
                    json!({"after": summary(&row)}),
                ),
                now,
            )?;
            Ok(row)
        })?;
        Ok(InstanceView::from(&row))
    }

    pub fn list_instances(&self, actor: &Actor) -> Result<InstanceList> {
        authorize(actor.role, Action::ViewInstances)?;
        let (rows, left_out) = self.store.read(|db| {
            Ok::<_, ServiceError>((db.list_instances()?, db.instances_left_out_of_storage()?))
        })?;
        let mut instances: Vec<InstanceView> = rows.iter().map(InstanceView::from).collect();
        let mut drills = self.last_drills_by_instance()?;
        for (view, row) in instances.iter_mut().zip(&rows) {
            view.last_drill = drills.remove(&row.id);
        }
        // Seed 001: an instance whose update is Queued (Not Started) is left out until its
        // database upgrade completes.
        let total_storage_bytes = instances
            .iter()
            .filter(|i| !left_out.contains(&i.name))
            .map(|i| i.storage_bytes)
            .sum();
        Ok(InstanceList {
            instances,
            total_storage_bytes,
        })
    }

    pub fn show_instance(&self, actor: &Actor, name: &str) -> Result<InstanceView> {
        authorize(actor.role, Action::ViewInstances)?;
        let row = self.store.read(|db| live_instance(db, name))?;
        let mut view = InstanceView::from(&row);
        view.last_drill = self.last_drill_of(row.id)?;
        Ok(view)
    }

    /// Switches an instance between production and sandbox (audited).
    pub fn switch_instance(&self, actor: &Actor, name: &str, to: &str) -> Result<InstanceView> {
        authorize(actor.role, Action::SwitchInstanceType)?;
        let to: InstanceType = to.parse()?;
        let now = self.now();
        let row = self.store.write(|db| {
            let mut row = live_instance(db, name)?;
            if row.instance_type == to {
                return Err(ServiceError::conflict(
                    "already_that_type",
                    format!("{name} is already a {to} instance"),
                ));
            }
            if !row.state.allows_reconfiguration() {
                return Err(ServiceError::conflict(
                    "instance_busy",
                    format!(
                        "{name} is {}; wait until it is available",
                        row.state.label().to_lowercase()
                    ),
                ));
            }
            let before = summary(&row);
            row.instance_type = to;
            db.update_instance(&row)?;
            db.audit(
                &audit_entry(
                    actor,
                    "instance.switch",
                    name,
                    json!({"before": before, "after": summary(&row)}),
                ),
                now,
            )?;
            Ok(row)
        })?;
        Ok(InstanceView::from(&row))
    }

    /// Deletes an instance: `confirm` must repeat its name. The database and documents move
    /// out of service into `retired/`; backups stay restorable until they expire.
    pub fn delete_instance(
        &self,
        actor: &Actor,
        name: &str,
        confirm: &str,
    ) -> Result<InstanceView> {
        authorize(actor.role, Action::DeleteInstance)?;
        if confirm != name {
            return Err(ServiceError::invalid(
                "confirmation_mismatch",
                format!("to delete {name}, type its name again to confirm (got {confirm:?})"),
            ));
        }
        let now = self.now();
        let row = self.store.write(|db| {
            let mut row = live_instance(db, name)?;
            self.refuse_if_kept_elsewhere(db, &row, "delete")?;
            if !row.state.allows_reconfiguration() {
                return Err(ServiceError::conflict(
                    "instance_busy",
                    format!(
                        "{name} is {}; wait until it is available",
                        row.state.label().to_lowercase()
                    ),
                ));
            }
            let dir = self.paths.instance_dir(name);
            let retired = self.retire_dir(&dir, &format!("{name}.{}", row.id), now)?;
            let before = summary(&row);
            row.deleted_at = Some(now);
            row.state = InstanceState::Unavailable;
            if let Some(retired) = &retired {
                row.database_path = retired.join(DATABASE_FILE).display().to_string();
                row.documents_path = retired.join(DOCUMENTS_DIR).display().to_string();
            }
            let write = (|| {
                db.update_instance(&row)?;
                db.audit(
                    &audit_entry(
                        actor,
                        "instance.delete",
                        name,
                        json!({"before": before, "retired_to": retired}),
                    ),
                    now,
                )
            })();
            if let Err(e) = write {
                if let Some(retired) = &retired {
                    let _ = std::fs::rename(retired, &dir);
                }
                return Err(e.into());
            }
            Ok(row)
        })?;
        Ok(InstanceView::from(&row))
    }

    /// Moves `dir` to `retired/<label>.<timestamp>`; `None` if `dir` does not exist.
    fn retire_dir(
        &self,
        dir: &Path,
        label: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<std::path::PathBuf>> {
        if !dir.exists() {
            return Ok(None);
        }
        let retired = self.paths.retired();
        std::fs::create_dir_all(&retired).map_err(|e| {
            ServiceError::internal(format!("cannot create {}: {e}", retired.display()))
        })?;
        let to = retired.join(format!("{label}.{}", now.format("%Y%m%dT%H%M%S%.3fZ")));
        std::fs::rename(dir, &to).map_err(|e| {
            ServiceError::internal(format!("cannot move {} out of service: {e}", dir.display()))
        })?;
        Ok(Some(to))
    }
}
