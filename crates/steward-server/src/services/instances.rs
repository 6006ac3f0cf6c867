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
            storage_bytes: i.storage_bytes,
            created_at: i.created_at,
            created_by: i.created_by.clone(),
            node: i.node.clone(),
            last_drill: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InstanceList {
    /// One page of instances, by name.
    pub instances: Vec<InstanceView>,
    /// Database storage used by all the instances that match (on every page), in bytes.
    pub total_storage_bytes: u64,
    /// How many instances match, on every page.
    pub total: u64,
    /// The last name of this page when more follow: pass it as `after` for the next page;
    /// `null` on the last page.
    pub next_after: Option<String>,
}

/// Which instances a list shows: names containing `contains`, after the name `after`,
/// skipping `offset`, at most `limit`.
#[derive(Debug, Clone, Default)]
pub struct InstanceListQuery {
    pub contains: Option<String>,
    pub after: Option<String>,
    pub offset: u64,
    /// `None`: all of them.
    pub limit: Option<u64>,
}

impl InstanceListQuery {
    /// The name filter, trimmed; `None` when empty.
    pub(crate) fn filter(&self) -> Option<&str> {
        self.contains
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
    }

    /// The store's query for this page, reading `extra` rows beyond the limit.
    pub(crate) fn store_query(&self, extra: i64) -> steward_store::InstanceQuery<'_> {
        steward_store::InstanceQuery {
            contains: self.filter(),
            after: self.after.as_deref(),
            offset: self.offset.min(i64::MAX as u64) as i64,
            limit: self.limit.map_or(i64::MAX, |l| {
                (l.min(i64::MAX as u64) as i64).saturating_add(extra)
            }),
        }
    }
}

/// The most instances one request lists.
pub const MAX_PAGE: u64 = 1000;

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
            let mut row = db
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
            row.storage_bytes = steward_engine::storage_bytes(&db_path);
            db.set_storage_bytes(&[(row.id, row.storage_bytes)])?;
            Ok(row)
        })?;
        Ok(InstanceView::from(&row))
    }

    /// Every live instance (for views that need them all; lists shown to users are paged).
    pub fn list_instances(&self, actor: &Actor) -> Result<InstanceList> {
        self.list_instances_page(actor, &InstanceListQuery::default())
    }

    /// A page of live instances by name, with the totals of everything that matches.
    pub fn list_instances_page(
        &self,
        actor: &Actor,
        q: &InstanceListQuery,
    ) -> Result<InstanceList> {
        authorize(actor.role, Action::ViewInstances)?;
        let contains = q.filter();
        // One more than asked, to tell whether another page follows.
        let query = q.store_query(1);
        let (mut page, left_out) = self.store.read(|db| {
            // Seed 001: an instance whose update is Queued (Not Started) is left out of the
            // total until its database upgrade completes.
            Ok::<_, ServiceError>((db.instance_page(&query)?, db.storage_left_out(contains)?))
        })?;
        let more = q.limit.is_some_and(|l| page.rows.len() as u64 > l);
        if more {
            page.rows.pop();
        }
        let next_after = more
            .then(|| page.rows.last().map(|r| r.name.clone()))
            .flatten();
        let ids: Vec<i64> = page.rows.iter().map(|r| r.id).collect();
        let mut drills = self.last_drills_of(&ids)?;
        let instances: Vec<InstanceView> = page
            .rows
            .iter()
            .map(|row| {
                let mut view = InstanceView::from(row);
                view.last_drill = drills.remove(&row.id);
                view
            })
            .collect();
        Ok(InstanceList {
            instances,
            total_storage_bytes: page.storage_bytes.saturating_sub(left_out.bytes),
            total: page.total,
            next_after,
        })
    }

    /// Measures the database storage of instances this node keeps and records it, so every
    /// node shows it: `only` one of them (after a job on it), or all of them (each minute).
    /// Instances on other nodes are theirs to measure. Returns how many changed.
    pub fn record_storage(&self, only: Option<&str>) -> Result<usize> {
        let me = self.node.name();
        let rows = self.store.read(|db| match only {
            Some(name) => Ok::<_, ServiceError>(db.instance_by_name(name)?.into_iter().collect()),
            None => Ok(db.instances_on_node(me)?),
        })?;
        let measured: Vec<(i64, u64)> = rows
            .iter()
            .filter(|r| r.node.as_deref().is_none_or(|n| n == me))
            .filter_map(|r| {
                let bytes = steward_engine::storage_bytes(Path::new(&r.database_path));
                (bytes != r.storage_bytes).then_some((r.id, bytes))
            })
            .collect();
        if measured.is_empty() {
            return Ok(0);
        }
        Ok(self.store.write(|db| db.set_storage_bytes(&measured))?)
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
