//! What a backup killed with its process leaves behind, and how it is reclaimed: its lock
//! (removed by `remove_backup_locks`, or by prune once stale), its packs and indexes, a pack
//! whose index was never written, and the staging file of the put it was in.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use steward_repo::{PruneOptions, RepoError, Repository, RestoreOptions, VerifyMode};

use crate::util::*;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Every file under `dir`, relative to it, with its size.
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let len = e.metadata().unwrap().len();
                out.push(format!("{} {len}", p.strip_prefix(root).unwrap().display()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn write_lock(root: &Path, name: &str, kind: &str, started_ms: u64, refreshed_ms: u64) {
    std::fs::create_dir_all(root.join("locks")).unwrap();
    std::fs::write(
        root.join("locks").join(name),
        format!(
            r#"{{"kind":"{kind}","started_ms":{started_ms},"refreshed_ms":{refreshed_ms},"pid":4242}}"#
        ),
    )
    .unwrap();
}

fn random_pack_name(rng: &mut Rng) -> String {
    (0..4).map(|_| format!("{:016x}", rng.next())).collect()
}

fn pack_path(root: &Path, name: &str) -> std::path::PathBuf {
    root.join("data").join(&name[..2]).join(name)
}

/// A repository with one backup, and a database with new data for the next one.
struct Setup {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    db: std::path::PathBuf,
    repo: Repository,
    base: String,
    files_before: Vec<String>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.db");
    let root = dir.path().join("repo");
    let conn = make_db(&db, 2000);
    let repo = local_repo(&root, None);
    let base = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap().id;
    fill(&conn, 3000, 7);
    checkpoint(&conn);
    let files_before = files(&root);
    Setup {
        _dir: dir,
        root,
        db,
        repo,
        base,
        files_before,
    }
}

/// Leaves the repository as a backup killed in the middle of storing data does, in the order
/// `backup_sqlite` writes: its lock (`started_ms`, last refreshed at `refreshed_ms`), then packs
/// each followed by its index, a pack whose index was not written yet, and the staging file
/// (`<pack>#1`) of the pack being written; no chunk list, no manifest.
fn crash_a_backup(s: &Setup, refreshed_ms: impl Fn(u64) -> u64) {
    let started_ms = now_ms();
    // A real backup stores the packs and indexes; its manifest and chunk list were never
    // written, and its lock is put back as the dead process left it.
    let b = s.repo.backup_sqlite(&s.db, no_meta(), &quiet).unwrap();
    assert!(b.chunks_new > 0, "{b:?}");
    std::fs::remove_file(s.root.join("backups").join(&b.id)).unwrap();
    std::fs::remove_file(s.root.join("backups").join(format!("{}.chunks", b.id))).unwrap();
    write_lock(
        &s.root,
        &format!("backup-{}", b.id),
        "backup",
        started_ms,
        refreshed_ms(started_ms),
    );
    let mut rng = Rng(started_ms | 1);
    let mut pack = b"STWDPAK1".to_vec();
    pack.extend((0..300_000).map(|_| rng.next() as u8));
    let unindexed = pack_path(&s.root, &random_pack_name(&mut rng));
    std::fs::create_dir_all(unindexed.parent().unwrap()).unwrap();
    std::fs::write(&unindexed, &pack).unwrap();
    let staging = pack_path(&s.root, &random_pack_name(&mut rng));
    std::fs::create_dir_all(staging.parent().unwrap()).unwrap();
    let mut staging = staging.into_os_string();
    staging.push("#1");
    std::fs::write(&staging, &pack[..100_000]).unwrap();
    assert_ne!(files(&s.root), s.files_before);
}

fn dir_size(root: &Path) -> u64 {
    files(root)
        .iter()
        .map(|f| f.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum()
}

/// The repository is sound: the base backup verifies and restores.
fn check_sound(s: &Setup) {
    assert!(
        s.repo
            .verify(None, VerifyMode::Full, &quiet)
            .unwrap()
            .is_ok()
    );
    let t = s.root.parent().unwrap().join("restored.db");
    s.repo
        .restore(&s.base, &t, &RestoreOptions::default(), &quiet)
        .unwrap();
    let again = s.repo.backup_sqlite(&s.db, no_meta(), &quiet).unwrap();
    assert!(again.chunks_new > 0);
}

#[test]
fn a_killed_backup_is_reclaimed_once_its_lock_is_removed() {
    let s = setup();
    let size_before = dir_size(&s.root);
    let stats_before = s.repo.stats().unwrap();
    crash_a_backup(&s, |_| now_ms());

    // With the dead backup's lock in place prune treats it as running: it condemns the packs
    // but keeps them, and keeps the orphan pack and the staging file written after its start.
    let s1 = s.repo.prune(&prune_now()).unwrap();
    assert!(s1.packs_condemned > 0, "{s1:?}");
    let s2 = s.repo.prune(&prune_now()).unwrap();
    assert!(s2.packs_kept_for_running_backups > 0, "{s2:?}");
    assert_eq!(
        (
            s2.packs_deleted,
            s2.orphans_deleted,
            s2.staging_files_deleted
        ),
        (0, 0, 0),
        "{s2:?}"
    );
    assert_eq!(s.repo.stats().unwrap().backups, 1);

    // No backup runs (e.g. the only writer just started): its lock can go, and two prunes
    // return the repository to what it was before the killed backup.
    assert_eq!(s.repo.remove_backup_locks().unwrap(), 1);
    assert_eq!(s.repo.remove_backup_locks().unwrap(), 0);
    let p1 = s.repo.prune(&prune_now()).unwrap();
    let p2 = s.repo.prune(&prune_now()).unwrap();
    assert!(p1.packs_deleted + p2.packs_deleted > 0, "{p1:?} {p2:?}");
    assert_eq!(p1.orphans_deleted, 1, "{p1:?}");
    assert_eq!(p1.staging_files_deleted, 1, "{p1:?}");
    assert!(p1.bytes_deleted >= 100_000 + 300_000, "{p1:?}");
    assert_eq!(files(&s.root), s.files_before);
    assert_eq!(dir_size(&s.root), size_before);
    assert_eq!(s.repo.stats().unwrap(), stats_before);
    check_sound(&s);
}

#[test]
fn prune_deletes_stale_locks_and_then_what_they_kept() {
    let s = setup();
    // The process died 16 minutes after its last refresh.
    crash_a_backup(&s, |_| now_ms() - 16 * 60 * 1000);
    // Timestamps are compared to the millisecond: let the running backup start strictly
    // after the orphans were written, and the prune strictly after both.
    std::thread::sleep(std::time::Duration::from_millis(50));
    // A running backup's lock, and a recent unreadable lock, are not stale.
    write_lock(&s.root, "backup-running", "backup", now_ms(), now_ms());
    std::thread::sleep(std::time::Duration::from_millis(50));
    std::fs::write(s.root.join("locks/backup-garbled"), b"{").unwrap();
    let s1 = s.repo.prune(&prune_now()).unwrap();
    assert_eq!(s1.stale_locks_deleted, 1, "{s1:?}");
    let mut left: Vec<String> = std::fs::read_dir(s.root.join("locks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["backup-garbled", "backup-running"]);
    assert!(s1.packs_condemned > 0, "{s1:?}");
    // The running backup started after the orphans were written: they are not its own.
    assert_eq!(s1.staging_files_deleted, 1, "{s1:?}");
    assert_eq!(s1.orphans_deleted, 1, "{s1:?}");
    let s2 = s.repo.prune(&prune_now()).unwrap();
    assert_eq!(s2.packs_deleted, 0, "kept for the running backup: {s2:?}");

    // Once it is gone too, the next prune deletes the condemned packs.
    std::fs::remove_file(s.root.join("locks/backup-running")).unwrap();
    std::fs::remove_file(s.root.join("locks/backup-garbled")).unwrap();
    let s3 = s.repo.prune(&prune_now()).unwrap();
    assert!(s3.packs_deleted > 0, "{s3:?}");
    assert_eq!(files(&s.root), s.files_before);
    check_sound(&s);
}

#[test]
fn remove_backup_locks_leaves_prune_locks() {
    let s = setup();
    let now = now_ms();
    write_lock(&s.root, "backup-a", "backup", now, now);
    write_lock(
        &s.root,
        "backup-b",
        "backup",
        now - 3_600_000,
        now - 3_600_000,
    );
    write_lock(&s.root, "prune-c", "prune", now, now);
    assert_eq!(s.repo.remove_backup_locks().unwrap(), 2);
    let left: Vec<String> = std::fs::read_dir(s.root.join("locks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["prune-c"]);
}

#[test]
fn a_prune_lock_left_by_a_killed_prune_is_removed_and_prune_runs_again() {
    let s = setup();
    let now = now_ms();
    write_lock(&s.root, "prune-killed", "prune", now, now);
    write_lock(&s.root, "backup-a", "backup", now, now);
    let refused = s.repo.prune(&PruneOptions::default());
    assert!(
        matches!(refused, Err(RepoError::Locked(_))),
        "a fresh prune lock blocks prune: {refused:?}"
    );
    assert_eq!(s.repo.remove_prune_locks().unwrap(), 1);
    let left: Vec<String> = std::fs::read_dir(s.root.join("locks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["backup-a"], "backup locks are left alone");
    s.repo
        .prune(&PruneOptions::default())
        .expect("prune runs once the dead prune's lock is gone");
}

#[test]
fn young_staging_files_and_other_names_are_kept() {
    let s = setup();
    let mut rng = Rng(99);
    let name = random_pack_name(&mut rng);
    let dir = pack_path(&s.root, &name);
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let staging = format!("{}#1", dir.display());
    std::fs::write(&staging, b"STWDPAK1 partial").unwrap();
    // Younger than the grace period: may be a write in progress.
    let p = s
        .repo
        .prune(&PruneOptions {
            grace: Duration::from_secs(3600),
            ..prune_now()
        })
        .unwrap();
    assert_eq!(p.staging_files_deleted, 0, "{p:?}");
    assert!(Path::new(&staging).exists());

    // A repository on a store that is not `local_store` itself cannot see staging files.
    let wrapped: std::sync::Arc<dyn object_store::ObjectStore> =
        FaultStore::new(Repository::local_store(&s.root).unwrap());
    let other = Repository::open(wrapped, None).unwrap();
    let p = other.prune(&prune_now()).unwrap();
    assert_eq!(p.staging_files_deleted, 0, "{p:?}");
    assert!(Path::new(&staging).exists());

    // Through `local_store`, once old enough, it goes; a name that is an object stays.
    std::fs::write(s.root.join("odd#name"), b"x").unwrap();
    let p = s.repo.prune(&prune_now()).unwrap();
    assert_eq!(p.staging_files_deleted, 1, "{p:?}");
    assert!(!Path::new(&staging).exists());
    assert!(s.root.join("odd#name").exists());
}
