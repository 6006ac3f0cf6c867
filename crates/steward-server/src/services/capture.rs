//! Continuous capture and restores to a moment (point-in-time restore).
//!
//! The capture worker (one thread, [`CaptureWorker::run`]) looks at every instance every
//! `capture_interval_ms`. For an available instance it keeps a [`steward_capture::Capturer`]
//! open on the database and a *chain* in the control plane: a base snapshot taken at an exact
//! commit, then one repository segment per pass that found commits. A pass that finds nothing
//! only confirms the chain (in memory, and in the store every few seconds), so the range reaches
//! up to now. What ends a chain, and so leaves a gap until the next one starts with a new base
//! snapshot: the server stopping, the instance leaving the available state (restored,
//! refreshed, updated, retired), commits lost behind capture's back, and a repository that stays
//! unreachable (capture then lets go of the database, so its WAL is never held, and alerts).
//!
//! The rules (which moments can be restored, what retention expires) are
//! `steward_core::pitr`'s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use steward_core::InstanceState;
use steward_core::notify::Event;
use steward_core::pitr::{ChainSpan, Timeline, check_moment};
use steward_core::policy::{Action, authorize};
use steward_store::{ChainRow, InstanceRow, JobRow, NewChain, NewJob, SegmentRow};

use super::backups::{
    progress_reporter, remove_with_sidecars, repo_error, restoring_path, set_state, swap_in,
};
use super::instances::live_instance;
use super::jobs::{JobContext, JobHandler, JobHandlers, JobView, Recovery};
use super::*;
use crate::config::{Config, ConfigError};

pub const RESTORE_AT_JOB: &str = "restore_at";

/// Capture settings (from the configuration).
#[derive(Debug, Clone)]
pub struct CaptureSettings {
    pub enabled: bool,
    pub interval: StdDuration,
    pub retention_days: u32,
    /// A repository failing this long ends the chain and lets go of the database.
    pub give_up_after: StdDuration,
    /// How often an idle chain's `through_at` is written to the store.
    pub confirm_every: StdDuration,
}

impl Default for CaptureSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            interval: StdDuration::from_millis(100),
            retention_days: 7,
            give_up_after: StdDuration::from_secs(30),
            confirm_every: StdDuration::from_secs(5),
        }
    }
}

pub fn settings(c: &Config) -> Result<CaptureSettings, ConfigError> {
    if !(10..=1000).contains(&c.capture_interval_ms) {
        return Err(ConfigError::new(format!(
            "capture_interval_ms must be 10–1000 (got {})",
            c.capture_interval_ms
        )));
    }
    if !(1..=35).contains(&c.capture_retention_days) {
        return Err(ConfigError::new(format!(
            "capture_retention_days must be 1–35 (got {})",
            c.capture_retention_days
        )));
    }
    if !(1..=3600).contains(&c.capture_give_up_seconds) {
        return Err(ConfigError::new(format!(
            "capture_give_up_seconds must be 1–3600 (got {})",
            c.capture_give_up_seconds
        )));
    }
    Ok(CaptureSettings {
        enabled: c.continuous_capture,
        interval: StdDuration::from_millis(c.capture_interval_ms),
        retention_days: c.capture_retention_days,
        give_up_after: StdDuration::from_secs(c.capture_give_up_seconds),
        ..CaptureSettings::default()
    })
}

/// The capture settings and what the worker knows now.
#[derive(Default)]
pub struct Capture {
    pub settings: CaptureSettings,
    /// Open chains the worker is extending right now: chain id → the moment last confirmed.
    live: Mutex<HashMap<i64, DateTime<Utc>>>,
    /// Tells the worker to stop (tests, shutdown).
    pub stop: AtomicBool,
}

impl Capture {
    /// Where an open chain really reaches: the worker's last confirmation when it is
    /// extending it, else what the store says.
    fn through(&self, c: &ChainRow) -> DateTime<Utc> {
        match self.live.lock().expect("capture state").get(&c.id) {
            Some(t) if c.end_reason.is_none() => (*t).max(c.through_at),
            _ => c.through_at,
        }
    }
}

/// One instance the worker captures.
struct Tracked {
    capturer: steward_capture::Capturer,
    chain_id: i64,
    base: String,
    /// The next segment's number.
    seq: u64,
    /// Commits not yet in the repository (it failed), oldest first.
    pending: Vec<steward_capture::Commit>,
    /// Since when writing to the repository has been failing.
    failing_since: Option<Instant>,
    last_confirm: Instant,
    /// A confirmation to write to the store at the end of the pass (all in one transaction).
    confirm_due: Option<DateTime<Utc>>,
    /// When it was last polled.
    last_poll: Instant,
}

/// With the WAL watcher, how often a pass polls an instance that wrote nothing (to move its
/// confirmed range forward; a write is polled the moment it happens).
const IDLE_POLL_EVERY: StdDuration = StdDuration::from_secs(1);

/// How often the worker reads the instance list again (a restore into an instance ends its
/// chain at once, see `end_capture_of`; other changes are seen within this).
const RELIST_EVERY: StdDuration = StdDuration::from_secs(1);

/// The worker's state between passes.
#[derive(Default)]
pub struct CaptureWorker {
    tracked: HashMap<i64, Tracked>,
    /// Whether the WAL watcher polls written instances at once (then a pass polls idle ones
    /// only every `IDLE_POLL_EVERY`).
    lazy_idle: bool,
    /// The instances as last listed, and when.
    instances: Vec<InstanceRow>,
    listed: Option<Instant>,
    /// Instances whose capture could not start, with the error (logged once) and when the
    /// last attempt failed: the next waits `give_up_after`, because every attempt holds a
    /// read transaction on the database for as long as the base snapshot tries to write
    /// (retrying every pass would hold the application's WAL while the repository is down).
    failed: HashMap<i64, (String, Instant)>,
}

fn ms(t: DateTime<Utc>) -> u64 {
    t.timestamp_millis().max(0) as u64
}

/// A moment for messages, as the repository's errors write it: UTC with milliseconds.
fn fmt_moment(v: u64) -> String {
    format!("{} ({v} ms)", from_ms(v).format("%Y-%m-%dT%H:%M:%S%.3fZ"))
}

fn from_ms(v: u64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v as i64)
        .single()
        .unwrap_or_else(Utc::now)
}

/// Why capture of an instance in `state` stops.
fn stop_reason(state: InstanceState) -> String {
    match state {
        InstanceState::Restoring => "the instance was restored".into(),
        InstanceState::Refreshing => "the instance was refreshed".into(),
        InstanceState::Updating => "the instance was updated".into(),
        s => format!("the instance became {}", s.as_str()),
    }
}

impl CaptureWorker {
    /// Runs passes until `stop` is set. Chains left open by a previous run are ended first:
    /// nobody watched the database while Steward was stopped.
    pub fn run(s: &Services) {
        if let Err(e) = s.end_orphan_chains() {
            tracing::error!(error = %e, "capture could not end the chains of the last run");
        }
        let mut w = CaptureWorker::default();
        // Between passes, an instance whose -wal is written is polled at once, so its commits
        // are stamped within a millisecond or so of their commit (not up to a pass later) and
        // idle instances cost nothing. Without inotify: a pass every interval, as before.
        let mut watcher = match steward_capture::WalWatcher::new() {
            Ok(x) if x.is_native() => Some(x),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "capture polls every interval: cannot watch the WAL files");
                None
            }
        };
        // Instance id → the database watched; and when the watcher last flushed each instance
        // (a busy instance gets at most one segment per WATCH_FLUSH_GAP from the watcher; its
        // commits are still polled, so stamped, at once).
        w.lazy_idle = watcher.is_some();
        let mut watched: HashMap<i64, PathBuf> = HashMap::new();
        let mut flushed: HashMap<i64, Instant> = HashMap::new();
        const WATCH_FLUSH_GAP: StdDuration = StdDuration::from_millis(50);
        while !s.capture.stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            if let Err(e) = w.pass(s) {
                tracing::error!(error = %e, "capture pass failed");
            }
            let next = started + s.capture.settings.interval;
            let Some(watcher) = watcher.as_mut() else {
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                continue;
            };
            w.sync_watches(watcher, &mut watched);
            flushed.retain(|id, _| watched.contains_key(id));
            while !s.capture.stop.load(Ordering::Relaxed) {
                let Some(left) = next.checked_duration_since(Instant::now()) else {
                    break;
                };
                let mut let_go = false;
                for key in watcher.wait(left) {
                    let id = key as i64;
                    // Only what a pass started (the pass starts chains and reads the list).
                    if !w.tracked.contains_key(&id) {
                        continue;
                    }
                    let Some(inst) = w.instances.iter().find(|i| i.id == id).cloned() else {
                        continue;
                    };
                    let flush = flushed
                        .get(&id)
                        .is_none_or(|t| t.elapsed() >= WATCH_FLUSH_GAP);
                    w.step(s, &inst, flush);
                    if flush {
                        flushed.insert(id, Instant::now());
                    }
                    // A commit written but not yet published: look again very soon.
                    match w.tracked.get(&id) {
                        Some(t) => watcher.set_in_flight(key, t.capturer.commit_in_flight()),
                        None => let_go = true,
                    }
                }
                if let_go {
                    w.sync_watches(watcher, &mut watched);
                }
            }
        }
        w.stop_all(s, "Steward was stopped");
    }

    /// Watches the database of every tracked instance, and only those (`tracked` is the
    /// source of truth).
    fn sync_watches(
        &self,
        watcher: &mut steward_capture::WalWatcher,
        watched: &mut HashMap<i64, PathBuf>,
    ) {
        watched.retain(|id, path| {
            let keep = self
                .tracked
                .get(id)
                .is_some_and(|t| t.capturer.db_path() == path.as_path());
            if !keep {
                watcher.unwatch(*id as u64);
            }
            keep
        });
        for (id, t) in &self.tracked {
            if watched.contains_key(id) {
                continue;
            }
            let path = t.capturer.db_path().to_path_buf();
            if let Err(e) = watcher.watch(*id as u64, &path) {
                // Still reported at each timeout until a watch succeeds.
                tracing::warn!(error = %e, "capture polls this database every interval");
            }
            watched.insert(*id, path);
        }
    }

    /// Ends every chain this worker extends, with `reason`.
    fn stop_all(&mut self, s: &Services, reason: &str) {
        let ids: Vec<i64> = self.tracked.keys().copied().collect();
        for id in ids {
            self.finish(s, id, reason);
        }
    }

    /// Flushes what it can and ends the chain of instance `id`.
    fn finish(&mut self, s: &Services, id: i64, reason: &str) {
        let Some(mut t) = self.tracked.remove(&id) else {
            return;
        };
        let _ = self.flush(s, &mut t);
        // The chain reaches as far as capture confirmed, when everything it read is written
        // (the store's own `through_at` is only written every few seconds for an idle chain).
        let confirmed = (t.pending.is_empty() && t.failing_since.is_none())
            .then(|| t.capturer.confirmed_through_ms().map(from_ms))
            .flatten();
        let now = s.now();
        s.capture
            .live
            .lock()
            .expect("capture state")
            .remove(&t.chain_id);
        if let Err(e) = s.store.write(|db| {
            if let Some(at) = confirmed {
                db.confirm_chain(t.chain_id, at)?;
            }
            db.end_chain(t.chain_id, now, reason)
        }) {
            tracing::error!(error = %e, chain = t.chain_id, "could not end a capture chain");
        }
    }

    /// One look at every instance.
    pub fn pass(&mut self, s: &Services) -> Result<()> {
        if self.listed.is_none_or(|t| t.elapsed() >= RELIST_EVERY) {
            self.instances = s.store.read(|db| db.list_instances())?;
            self.listed = Some(Instant::now());
        }
        let mut instances = self.instances.clone();
        let present: std::collections::HashSet<i64> = instances.iter().map(|i| i.id).collect();
        let gone: Vec<i64> = self
            .tracked
            .keys()
            .filter(|id| !present.contains(id))
            .copied()
            .collect();
        for id in gone {
            self.finish(s, id, "the instance was deleted");
        }
        // A chain ended by someone else (a restore into the instance ends it before writing):
        // let go, and start a new chain when the instance is available again.
        let open: std::collections::HashSet<i64> = s
            .store
            .read(|db| db.open_chain_ids())?
            .into_iter()
            .collect();
        let ended: Vec<i64> = self
            .tracked
            .iter()
            .filter(|(_, t)| !open.contains(&t.chain_id))
            .map(|(id, _)| *id)
            .collect();
        if !ended.is_empty() {
            // Whoever ended them also changed the instance (restoring, updating, refreshing):
            // read the list again, so a chain does not start again from a stale state.
            self.instances = s.store.read(|db| db.list_instances())?;
            self.listed = Some(Instant::now());
            instances = self.instances.clone();
        }
        for id in ended {
            if let Some(t) = self.tracked.remove(&id) {
                s.capture
                    .live
                    .lock()
                    .expect("capture state")
                    .remove(&t.chain_id);
            }
        }
        for inst in &instances {
            // With the watcher, a write is polled the moment it happens: an idle instance
            // only needs a poll now and then to move its confirmed range forward.
            if self.lazy_idle
                && inst.state == InstanceState::Available
                && self.tracked.get(&inst.id).is_some_and(|t| {
                    t.pending.is_empty()
                        && t.failing_since.is_none()
                        && t.last_poll.elapsed() < IDLE_POLL_EVERY
                })
            {
                continue;
            }
            self.step(s, inst, true);
        }
        // Idle chains confirmed this pass, in one transaction.
        let due: Vec<(i64, DateTime<Utc>)> = self
            .tracked
            .values_mut()
            .filter_map(|t| t.confirm_due.take().map(|at| (t.chain_id, at)))
            .collect();
        if !due.is_empty() {
            s.store.write(|db| {
                for (chain, at) in &due {
                    db.confirm_chain(*chain, *at)?;
                }
                Ok::<_, ServiceError>(())
            })?;
        }
        Ok(())
    }

    /// One instance's share of a pass: ends its capture when it is no longer available,
    /// starts it when it is, polls it, and (with `flush`) writes what the poll found.
    fn step(&mut self, s: &Services, inst: &InstanceRow, flush: bool) {
        if inst.state != InstanceState::Available {
            if self.tracked.contains_key(&inst.id) {
                self.finish(s, inst.id, &stop_reason(inst.state));
            }
            return;
        }
        if !self.tracked.contains_key(&inst.id) {
            if let Some((_, at)) = self.failed.get(&inst.id)
                && at.elapsed() < s.capture.settings.give_up_after
            {
                return;
            }
            match s.start_chain(inst) {
                Ok(t) => {
                    self.failed.remove(&inst.id);
                    self.tracked.insert(inst.id, t);
                }
                Err(e) => {
                    if self.failed.get(&inst.id).map(|(m, _)| m) != Some(&e.message) {
                        tracing::warn!(instance = %inst.name, error = %e.message, "continuous capture cannot start");
                    }
                    self.failed
                        .insert(inst.id, (e.message.clone(), Instant::now()));
                    return;
                }
            }
        }
        let t = self.tracked.get_mut(&inst.id).expect("tracked");
        t.last_poll = Instant::now();
        match t.capturer.poll() {
            Ok(commits) => t.pending.extend(commits),
            // Nothing changed; the next poll tries again (a header being published, a lock
            // held for a moment).
            Err(steward_capture::CaptureError::Busy(why)) => {
                tracing::debug!(instance = %inst.name, %why, "capture poll busy");
                return;
            }
            Err(e) => {
                let reason = format!("capture lost track of the database: {e}");
                self.finish(s, inst.id, &reason);
                return;
            }
        }
        if !flush {
            return;
        }
        let t = self.tracked.get_mut(&inst.id).expect("tracked");
        match self_flush(s, t) {
            Ok(()) => {}
            Err(e) => {
                let since = *t.failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= s.capture.settings.give_up_after {
                    let reason = format!("the backup repository was unreachable: {}", e.message);
                    s.alert_capture(&inst.name, &reason);
                    self.finish(s, inst.id, &reason);
                }
            }
        }
    }

    fn flush(&mut self, s: &Services, t: &mut Tracked) -> Result<()> {
        self_flush(s, t)
    }
}

/// Writes the pending commits as the chain's next segment (or confirms an idle chain).
fn self_flush(s: &Services, t: &mut Tracked) -> Result<()> {
    // What the capture confirmed: no commit but the ones it returned happened before its last
    // poll read the WAL. The time now, after the poll, could hide a commit made since; and
    // after commits were lost nothing is confirmed.
    let seen = t.capturer.confirmed_through_ms().map(from_ms);
    if t.pending.is_empty() {
        let Some(seen) = seen else {
            return Ok(());
        };
        s.capture
            .live
            .lock()
            .expect("capture state")
            .insert(t.chain_id, seen);
        if t.failing_since.is_none() && t.last_confirm.elapsed() >= s.capture.settings.confirm_every
        {
            t.confirm_due = Some(seen);
            t.last_confirm = Instant::now();
        }
        return Ok(());
    }
    let commits: Vec<steward_repo::SegmentCommit> = t
        .pending
        .iter()
        .map(|c| steward_repo::SegmentCommit {
            at_ms: c.at_ms,
            db_pages: c.db_pages,
            pages: c.pages.clone(),
        })
        .collect();
    let through = seen
        .map_or(0, ms)
        .max(commits.last().map_or(0, |c| c.at_ms));
    let info = s
        .repo()?
        .write_segment(&t.base, t.seq, through, &commits)
        .map_err(repo_error)?;
    let row = SegmentRow {
        chain_id: t.chain_id,
        seq: t.seq,
        first_at: from_ms(info.first_ms),
        last_at: from_ms(info.last_ms),
        through_at: from_ms(info.through_ms),
        commits: info.commits,
        pages: info.pages,
        bytes: info.added_bytes,
    };
    s.store.write(|db| db.add_segment(&row))?;
    t.seq += 1;
    t.pending.clear();
    t.failing_since = None;
    t.last_confirm = Instant::now();
    s.capture
        .live
        .lock()
        .expect("capture state")
        .insert(t.chain_id, from_ms(through));
    Ok(())
}

/// One span of the restorable range.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RangeSpanView {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The capture chain (base snapshot + segments) behind it.
    pub chain_id: i64,
    pub release: Option<String>,
    pub commits: u64,
    pub segments: u64,
    pub bytes: u64,
    /// Whether capture is extending it now.
    pub open: bool,
}

/// A stretch of time that cannot be restored, and why.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RangeGapView {
    pub from: DateTime<Utc>,
    /// `None`: up to now (capture is not running for the instance).
    pub to: Option<DateTime<Utc>>,
    pub reason: String,
}

/// What an instance can be restored to: "restorable from X to Y", with the gaps.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RangeView {
    pub instance: String,
    /// Whether capture is extending the range now.
    pub capturing: bool,
    pub earliest: Option<DateTime<Utc>>,
    pub latest: Option<DateTime<Utc>>,
    pub spans: Vec<RangeSpanView>,
    pub gaps: Vec<RangeGapView>,
    /// For people: "from X to Y" (and the other spans), or that nothing is restorable yet.
    pub description: String,
    pub retention_days: u32,
}

/// A restore to a moment, as started.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RestoreAtStarted {
    pub job: JobView,
    pub source: String,
    pub target: String,
    /// The moment asked for.
    pub at: DateTime<Utc>,
    /// The release the target takes: the one the source ran at that moment.
    pub release: Option<String>,
}

impl Services {
    /// Ends every chain left open (the previous run stopped without ending them).
    pub(crate) fn end_orphan_chains(&self) -> Result<usize> {
        let now = self.now();
        let open = self.store.read(|db| db.open_chains())?;
        let n = open.len();
        self.store.write(|db| {
            for c in &open {
                db.end_chain(c.id, now, "Steward was stopped")?;
            }
            Ok::<_, ServiceError>(())
        })?;
        Ok(n)
    }

    /// Opens capture on `inst` and starts a chain with a base snapshot at an exact commit.
    fn start_chain(&self, inst: &InstanceRow) -> Result<Tracked> {
        let path = PathBuf::from(&inst.database_path);
        let cap_err = |e: steward_capture::CaptureError| {
            ServiceError::conflict("capture_unavailable", e.to_string())
        };
        // The repository must answer before the database is touched: a base snapshot holds
        // the database's WAL while it is taken, and a failing one would hold it for nothing.
        self.repo()?.probe().map_err(repo_error)?;
        let clock = self.clock.clone();
        let opts = steward_capture::CaptureOptions {
            clock: std::sync::Arc::new(move || ms(clock.now())),
            ..Default::default()
        };
        let mut capturer = steward_capture::Capturer::open(&path, opts).map_err(cap_err)?;
        let mut metadata = std::collections::BTreeMap::new();
        metadata.insert("instance".to_owned(), inst.name.clone());
        metadata.insert("kind".to_owned(), "capture-base".to_owned());
        metadata.insert("release".to_owned(), inst.release.clone());
        let source = path.display().to_string();
        let repo = self.repo()?;
        // The commits until the snapshot are in it; the chain holds the ones after.
        let (_, summary) = capturer
            .poll_with_snapshot(|conn| repo.backup_sqlite_conn(conn, &source, metadata, &|_| {}))
            .map_err(cap_err)?;
        let summary = summary.map_err(repo_error)?;
        let started = self.now();
        let chain = self.store.write(|db| {
            db.open_chain(
                &NewChain {
                    instance_id: inst.id,
                    instance_name: inst.name.clone(),
                    base_repo_id: summary.id.clone(),
                    release: Some(inst.release.clone()),
                    started_at: started,
                },
                "a new base snapshot was taken",
            )
        })?;
        tracing::info!(instance = %inst.name, chain = chain.id, base = %summary.id, "continuous capture started");
        self.capture
            .live
            .lock()
            .expect("capture state")
            .insert(chain.id, started);
        Ok(Tracked {
            capturer,
            chain_id: chain.id,
            base: summary.id,
            seq: 1,
            pending: Vec::new(),
            failing_since: None,
            last_confirm: Instant::now(),
            confirm_due: None,
            last_poll: Instant::now(),
        })
    }

    /// Ends the instance's open chain, in the caller's transaction: its database is about to
    /// be replaced (a restore or a refresh), so the chain cannot go on.
    pub(crate) fn end_capture_of(
        &self,
        db: &steward_store::Db,
        instance_id: i64,
        reason: &str,
    ) -> Result<()> {
        if let Some(c) = db.open_chain_of(instance_id)? {
            let through = self.capture.through(&c);
            db.confirm_chain(c.id, through)?;
            db.end_chain(c.id, self.now(), reason)?;
        }
        Ok(())
    }

    /// Deletes the capture chains retention no longer needs (`steward_core::pitr::
    /// expired_chains`): their base snapshot and segments from the repository, then the
    /// chain from the control plane. A chain covering any moment inside retention stays
    /// whole. Returns how many went.
    pub(crate) fn expire_capture(&self) -> Result<usize> {
        let now = self.now();
        let all = self.store.read(|db| db.all_chains())?;
        let mut by_instance: HashMap<i64, Vec<&ChainRow>> = HashMap::new();
        for c in &all {
            by_instance.entry(c.instance_id).or_default().push(c);
        }
        let mut gone = 0;
        for chains in by_instance.values() {
            let tl = Timeline::new(
                chains
                    .iter()
                    .map(|c| ChainSpan {
                        chain_id: c.id,
                        start: c.started_at,
                        through: self.capture.through(c),
                        end_reason: c.end_reason.clone(),
                    })
                    .collect(),
            );
            for id in
                steward_core::pitr::expired_chains(&tl, now, self.capture.settings.retention_days)
            {
                let c = chains.iter().find(|c| c.id == id).expect("its chain");
                match self.repo()?.delete_backup(&c.base_repo_id) {
                    Ok(()) | Err(steward_repo::RepoError::BackupNotFound(_)) => {}
                    Err(e) => return Err(repo_error(e)),
                }
                self.store.write(|db| db.delete_chain(id))?;
                gone += 1;
            }
        }
        Ok(gone)
    }

    fn alert_capture(&self, instance: &str, reason: &str) {
        let r = self.store.write(|db| {
            self.announce(
                db,
                Event::CaptureStopped,
                "error",
                Some(instance),
                &format!(
                    "Continuous capture of {instance} stopped: {reason}. It lets go of the database (its WAL is not held) and starts again, with a new base snapshot, when the repository answers; moments in between cannot be restored"
                ),
                json!({"reason": reason}),
            )
            .map(drop)
        });
        if let Err(e) = r {
            tracing::error!(error = %e, "could not record a capture alert");
        }
    }

    /// The instance's chains as a timeline (open chains reaching as far as capture confirmed).
    fn timeline_of(&self, inst: &InstanceRow) -> Result<(Timeline, Vec<ChainRow>)> {
        let chains = self.store.read(|db| db.chains_of(inst.id))?;
        let spans = chains
            .iter()
            .map(|c| ChainSpan {
                chain_id: c.id,
                start: c.started_at,
                through: self.capture.through(c),
                end_reason: c.end_reason.clone(),
            })
            .collect();
        Ok((Timeline::new(spans), chains))
    }

    /// What `instance` can be restored to.
    pub fn backup_range(&self, actor: &Actor, instance: &str) -> Result<RangeView> {
        authorize(actor.role, Action::ViewBackups)?;
        let inst = self.store.read(|db| live_instance(db, instance))?;
        let (tl, chains) = self.timeline_of(&inst)?;
        let by_id: HashMap<i64, &ChainRow> = chains.iter().map(|c| (c.id, c)).collect();
        Ok(RangeView {
            instance: inst.name.clone(),
            capturing: chains.iter().any(|c| c.end_reason.is_none()),
            earliest: tl.earliest(),
            latest: tl.latest(),
            spans: tl
                .spans
                .iter()
                .map(|s| {
                    let c = by_id[&s.chain_id];
                    RangeSpanView {
                        from: s.start,
                        to: s.through,
                        chain_id: s.chain_id,
                        release: c.release.clone(),
                        commits: c.commits,
                        segments: c.segments,
                        bytes: c.bytes,
                        open: c.end_reason.is_none(),
                    }
                })
                .collect(),
            gaps: tl
                .gaps
                .iter()
                .map(|g| RangeGapView {
                    from: g.from,
                    to: g.to,
                    reason: g.reason.clone(),
                })
                .collect(),
            description: tl.describe(),
            retention_days: self.capture.settings.retention_days,
        })
    }

    /// The chain holding `instance`'s state at `at`, or the specific reason it cannot be
    /// restored to that moment.
    pub(crate) fn chain_for_moment(
        &self,
        inst: &InstanceRow,
        at: DateTime<Utc>,
    ) -> Result<ChainRow> {
        let (tl, chains) = self.timeline_of(inst)?;
        let span = check_moment(
            &inst.name,
            &tl,
            at,
            self.now(),
            self.capture.settings.retention_days,
        )
        .map_err(|e| ServiceError::conflict(e.code(), e.to_string()))?;
        Ok(chains
            .into_iter()
            .find(|c| c.id == span.chain_id)
            .expect("the span's chain"))
    }

    /// Starts restoring `source` as it was at `at` into the sandbox `target`.
    pub fn restore_to_moment(
        &self,
        actor: &Actor,
        source: &str,
        at: DateTime<Utc>,
        target: &str,
    ) -> Result<RestoreAtStarted> {
        authorize(actor.role, Action::RestoreBackup)?;
        let src = self.store.read(|db| live_instance(db, source))?;
        // The target first: a production target is refused before anything else.
        let tgt = self.store.read(|db| live_instance(db, target))?;
        steward_core::backup::check_restore_target(&tgt.name, tgt.instance_type, tgt.state)
            .map_err(super::backups::refusal)?;
        let chain = self.chain_for_moment(&src, at)?;
        let now = self.now();
        let (job, inst) = self.store.write(|db| {
            let mut inst = live_instance(db, target)?;
            steward_core::backup::check_restore_target(&inst.name, inst.instance_type, inst.state)
                .map_err(super::backups::refusal)?;
            let before = json!({"release": inst.release, "state": inst.state});
            inst.state = InstanceState::Restoring;
            db.update_instance(&inst)?;
            self.end_capture_of(db, inst.id, "the instance was restored")?;
            let job = db.insert_job(
                &NewJob {
                    kind: RESTORE_AT_JOB.into(),
                    target: inst.name.clone(),
                    params: json!({"source": src.name, "chain_id": chain.id, "base": chain.base_repo_id,
                                   "at_ms": ms(at), "target": inst.name, "release": chain.release}),
                    created_by: actor.username.clone(),
                },
                now,
            )?;
            db.audit(
                &audit_entry(
                    actor,
                    "backup.restore_at",
                    &inst.name,
                    json!({"source": src.name, "at": at, "before": before, "after": {"release": chain.release}}),
                ),
                now,
            )?;
            Ok::<_, ServiceError>((job, inst))
        })?;
        self.job_wakeup.notify_one();
        Ok(RestoreAtStarted {
            job: JobView::from_row(job),
            source: src.name,
            target: inst.name,
            at,
            release: chain.release,
        })
    }
}

/// The `restore_at` job: the source's chain is replayed up to the moment into a file beside
/// the target's database, checked, then copied in as one transaction. Documents untouched.
fn run_restore_at(s: &Services, job: &JobRow, ctx: &JobContext) -> Result<Value> {
    let p = &job.params;
    let source = p["source"].as_str().unwrap_or_default().to_owned();
    let target = p["target"].as_str().unwrap_or_default().to_owned();
    let base = p["base"].as_str().unwrap_or_default().to_owned();
    let at_ms = p["at_ms"].as_u64().unwrap_or_default();
    let chain_id = p["chain_id"].as_i64().unwrap_or_default();
    let release = p["release"].as_str().map(str::to_owned);
    let at = from_ms(at_ms);
    let inst = s.store.read(|db| live_instance(db, &target))?;
    let what = format!(
        "Restore of {source} as of {} into {target}",
        steward_core::clock::display_time(&at)
    );
    let details = json!({"source_instance": source, "at": at, "release": release});
    s.alert(
        Event::RestoreStarted,
        "info",
        &target,
        format!("{what} started"),
        details.clone(),
    );
    let db_path = PathBuf::from(&inst.database_path);
    let temp = restoring_path(&db_path);
    let result = (|| {
        ctx.stage("restore")?;
        pause(s);
        remove_with_sidecars(&temp);
        let _report = progress_reporter(ctx);
        let summary = restore_chain_to_file(s, chain_id, &base, at_ms, &temp)?;
        ctx.stage("swap")?;
        pause(s);
        swap_in(&temp, &db_path)?;
        Ok::<_, ServiceError>(summary)
    })();
    remove_with_sidecars(&temp);
    match result {
        Ok(summary) => {
            s.store.write(|db| {
                if let Some(mut i) = db.instance_by_id(inst.id)? {
                    if let Some(r) = &release {
                        i.release = r.clone();
                    }
                    i.state = InstanceState::Available;
                    db.update_instance(&i)?;
                }
                s.announce(
                    db,
                    Event::RestoreSucceeded,
                    "success",
                    Some(&target),
                    &format!("{what} succeeded"),
                    details.clone(),
                )?;
                Ok::<_, ServiceError>(())
            })?;
            Ok(json!({
                "source": source, "target": target, "at": at,
                "commit_at": from_ms(summary.applied_at_ms),
                "commits_applied": summary.commits_applied,
                "bytes": summary.db_size, "db_hash": summary.db_hash,
                "release": release, "integrity": "checked_now",
            }))
        }
        Err(e) => {
            s.store.write(|db| {
                set_state(
                    db,
                    inst.id,
                    &[InstanceState::Restoring],
                    InstanceState::Available,
                )?;
                let mut d = details.clone();
                d["error"] = json!(e.message);
                s.announce(
                    db,
                    Event::RestoreFailed,
                    "error",
                    Some(&target),
                    &format!("{what} failed: {}", e.message),
                    d,
                )?;
                Ok::<_, ServiceError>(())
            })?;
            Err(e)
        }
    }
}

/// After a crash during a restore to a moment: the target kept its whole old database (the
/// copy in is one transaction); remove the temporary file and make the target available.
fn recover_restore_at(s: &Services, job: &JobRow) -> Recovery {
    let msg = "interrupted: Steward stopped while this restore ran".to_string();
    let target = job.params["target"].as_str().unwrap_or_default().to_owned();
    let r = s.store.write(|db| {
        if let Some(mut i) = db.instance_by_name(&target)? {
            let temp = restoring_path(Path::new(&i.database_path));
            remove_with_sidecars(&temp);
            remove_repo_temps(&temp);
            if let Ok(v) = steward_engine::database_release(Path::new(&i.database_path)) {
                i.release = v.to_string();
            }
            if i.state == InstanceState::Restoring {
                i.state = InstanceState::Available;
            }
            db.update_instance(&i)?;
        }
        Ok::<_, ServiceError>(())
    });
    if let Err(e) = r {
        tracing::error!(error = %e, "could not recover the interrupted restore");
    }
    Recovery::Fail(format!(
        "{msg}; {target} holds either its previous database or the whole restored one, never a mix"
    ))
}

/// Removes what a killed `restore_at` of the repository left beside `file`: its temporary
/// files `.<file name>.restore-<random>.tmp` (as large as the database).
fn remove_repo_temps(file: &Path) {
    let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
        return;
    };
    let prefix = format!(".{}.restore-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&prefix) && n.ends_with(".tmp") {
            match std::fs::remove_file(e.path()) {
                Ok(()) => {
                    tracing::info!(file = %e.path().display(), "removed the temporary file of an interrupted restore")
                }
                Err(err) => {
                    tracing::warn!(file = %e.path().display(), error = %err, "could not remove the temporary file of an interrupted restore")
                }
            }
        }
    }
}

/// The testing aid `job_stage_pause_ms`: holds the job at the start of each stage.
fn pause(s: &Services) {
    if !s.stage_pause.is_zero() {
        std::thread::sleep(s.stage_pause);
    }
}

struct RestoreAtHandler;
impl JobHandler for RestoreAtHandler {
    fn run(&self, s: &Services, job: &JobRow, ctx: &JobContext) -> Result<Value> {
        run_restore_at(s, job, ctx)
    }
    fn recover(&self, s: &Services, job: &JobRow) -> Recovery {
        recover_restore_at(s, job)
    }
}

/// Registers the `restore_at` job handler.
pub fn register(handlers: &mut JobHandlers) {
    handlers.register(RESTORE_AT_JOB, RestoreAtHandler);
}

/// Restores chain `chain_id` (on base snapshot `base`) as it was at `at_ms` into a new file
/// at `path` (restores and refreshes to a moment use it).
///
/// The range check confirmed every commit up to the moment is in the repository, whose own
/// range may end earlier when nothing was committed since its last segment: the state at the
/// moment is the one at that end. Where the chain's commits end is what the store recorded,
/// not what the repository lists: a missing or damaged last segment is refused by name, never
/// skipped (that would quietly restore an older state), and a damaged segment after the
/// moment does not stop a restore that does not need it.
pub(crate) fn restore_chain_to_file(
    s: &Services,
    chain_id: i64,
    base: &str,
    at_ms: u64,
    path: &Path,
) -> Result<steward_repo::RestoreAtSummary> {
    let floor = s
        .repo()?
        .manifest(base)
        .map_err(repo_error)?
        .snapshot_time_ms();
    // Segments whose first commit is after the moment are not needed.
    let recorded = s.store.read(|db| db.segments_of(chain_id))?;
    let end = recorded
        .iter()
        .filter(|r| ms(r.first_at) <= at_ms)
        .map(|r| ms(r.through_at))
        .max()
        .unwrap_or(floor)
        .max(floor);
    let effective = at_ms.min(end).max(floor);
    let damaged =
        |e: steward_repo::RepoError| ServiceError::conflict("capture_damaged", e.to_string());
    s.repo()?
        .restore_at(base, effective, path, &steward_repo::RestoreOptions::default())
        .map_err(|e| match e {
            steward_repo::RepoError::SegmentMissing { .. }
            | steward_repo::RepoError::SegmentCorrupt { .. }
            | steward_repo::RepoError::SegmentChunkDamaged { .. } => damaged(e),
            steward_repo::RepoError::NewerFormat { .. } => {
                ServiceError::conflict("repository_newer", e.to_string())
            }
            // The repository's readable segments end before what the store recorded: the
            // first recorded one past that end is missing or does not open.
            steward_repo::RepoError::MomentAfterRange { to_ms, .. } => {
                match recorded.iter().find(|r| ms(r.through_at) > to_ms) {
                    Some(r) => ServiceError::conflict(
                        "capture_damaged",
                        format!(
                            "segment segments/{base}/{:020} is missing or unreadable: the commits captured after {} (up to {}) are not in the repository, so this chain cannot restore any moment after {}",
                            r.seq,
                            fmt_moment(to_ms),
                            fmt_moment(end),
                            fmt_moment(to_ms)
                        ),
                    ),
                    None => repo_error(e),
                }
            }
            e => repo_error(e),
        })
}
