//! Segments and restore to a moment: a base snapshot taken through a held read transaction,
//! many real commits on a real SQLite database, their changed pages (read with
//! `sqlite_dbpage`) written as segments, and restores to random moments compared with the
//! content hash recorded after the matching commit. Then every way a chain can be damaged.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use steward_repo::{Integrity, RepoError, Repository, RestoreOptions, SegmentCommit, VerifyMode};

use crate::util::*;

/// Every page of the database as `conn` sees it now.
fn pages(conn: &Connection) -> Vec<Vec<u8>> {
    let mut st = conn
        .prepare("SELECT pgno, data FROM sqlite_dbpage('main') ORDER BY pgno")
        .unwrap();
    let rows = st
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .unwrap();
    let mut out = Vec::new();
    for (i, r) in rows.enumerate() {
        let (pgno, data) = r.unwrap();
        assert_eq!(pgno as usize, i + 1);
        out.push(data);
    }
    out
}

fn hash_pages(p: &[Vec<u8>]) -> String {
    let mut h = blake3::Hasher::new();
    for page in p {
        h.update(page);
    }
    h.finalize().to_hex().to_string()
}

fn hash_file(path: &Path) -> String {
    blake3::hash(&std::fs::read(path).unwrap())
        .to_hex()
        .to_string()
}

/// The commit that turns `prev` into `cur`: every page that differs or is new.
fn diff(prev: &[Vec<u8>], cur: &[Vec<u8>], at_ms: u64) -> SegmentCommit {
    let pages = cur
        .iter()
        .enumerate()
        .filter(|(i, p)| prev.get(*i) != Some(*p))
        .map(|(i, p)| (i as u32 + 1, p.clone()))
        .collect();
    SegmentCommit {
        at_ms,
        db_pages: cur.len() as u32,
        pages,
    }
}

/// A chain built from real commits.
struct Chain {
    db: PathBuf,
    base: String,
    /// The base snapshot's time: the start of the range.
    from_ms: u64,
    /// Content hash of the pinned state (what the base holds).
    base_hash: String,
    /// (commit time, content hash after it), in order.
    states: Vec<(u64, String)>,
    /// (seq, through_ms, commits) as written.
    segments: Vec<(u64, u64, Vec<SegmentCommit>)>,
    /// The live writer connection.
    conn: Connection,
}

impl Chain {
    fn to_ms(&self) -> u64 {
        self.segments.last().map_or(self.from_ms, |s| s.1)
    }

    /// The content hash of the state at `t`.
    fn expected(&self, t: u64) -> &str {
        self.states
            .iter()
            .rev()
            .find(|(at, _)| *at <= t)
            .map_or(self.base_hash.as_str(), |(_, h)| h.as_str())
    }

    fn through(&self, seq: u64) -> u64 {
        self.segments.iter().find(|s| s.0 == seq).unwrap().1
    }

    fn first_commit(&self, seq: u64) -> u64 {
        let s = self.segments.iter().find(|s| s.0 == seq).unwrap();
        s.2.first().map_or(s.1, |c| c.at_ms)
    }
}

/// One transaction of the workload, chosen by `i`: inserts, updates, deletes, a shrinking
/// VACUUM half-way and growth after it.
fn workload(conn: &Connection, i: usize, n: usize, rng: &mut Rng) {
    if i == n / 2 {
        conn.execute_batch("DELETE FROM customer WHERE id % 4 <> 0; VACUUM;")
            .unwrap();
        return;
    }
    let tx = conn.unchecked_transaction().unwrap();
    match i % 4 {
        0 => {
            for _ in 0..(1 + rng.next() % 25) {
                tx.execute(
                    "INSERT INTO customer(name, email, notes) VALUES (?1, ?2, ?3)",
                    (
                        rng.text(2),
                        format!("{}@x.example", rng.next()),
                        rng.text(30),
                    ),
                )
                .unwrap();
            }
        }
        1 => {
            tx.execute(
                "UPDATE customer SET notes = ?1 WHERE id % 17 = ?2",
                (rng.text(8), (rng.next() % 17) as i64),
            )
            .unwrap();
        }
        2 => {
            tx.execute(
                "DELETE FROM customer WHERE id IN (SELECT id FROM customer ORDER BY random() \
                 LIMIT 3)",
                [],
            )
            .unwrap();
        }
        _ => {}
    }
    tx.execute("UPDATE counter SET n = n + 1", []).unwrap();
    tx.commit().unwrap();
}

/// Segment sizes (commits per segment) the commits are cut into; 0 is an empty segment.
const CUTS: &[usize] = &[1, 9, 0, 20, 3, 30, 1, 12];

/// Builds a chain on `repo`: a base snapshot taken with `backup_sqlite_conn` while a read
/// transaction is held (a commit happens meanwhile, which must not be in the base), then
/// `n` commits written as segments cut by [`CUTS`] (the rest in a last segment).
fn build_chain(repo: &Repository, dir: &Path, n: usize) -> Chain {
    let db = dir.join("crm.db");
    let conn = make_db(&db, 800);
    let mut rng = Rng(42);

    let reader = Connection::open(&db).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let pinned = pages(&reader); // the first read pins the state
    let base_hash = hash_pages(&pinned);
    // A commit after the pin: in the first segment, not in the base.
    let mut cur = pinned.clone();
    workload(&conn, 0, n, &mut rng);
    let after_first = pages(&conn);
    let b = repo
        .backup_sqlite_conn(&reader, db.to_str().unwrap(), no_meta(), &quiet)
        .unwrap();
    // Still inside the caller's transaction: backup_sqlite_conn leaves it open.
    assert!(!reader.is_autocommit());
    reader.execute_batch("COMMIT").unwrap();
    let from_ms = repo.manifest(&b.id).unwrap().snapshot_ms.unwrap();

    let mut commits = Vec::new();
    let mut states = Vec::new();
    let mut at = from_ms + 500;
    commits.push(diff(&cur, &after_first, at));
    states.push((at, hash_pages(&after_first)));
    cur = after_first;
    for i in 1..n {
        workload(&conn, i, n, &mut rng);
        let next = pages(&conn);
        at += 20 + rng.next() % 80;
        commits.push(diff(&cur, &next, at));
        states.push((at, hash_pages(&next)));
        cur = next;
    }
    assert_ne!(states[n / 2].1, states[n / 2 - 1].1);
    assert!(
        commits[n / 2].db_pages < commits[n / 2 - 1].db_pages,
        "the VACUUM shrinks the file"
    );

    let mut segments = Vec::new();
    let mut rest = &commits[..];
    for (seq, &cut) in (1u64..).zip(CUTS.iter().chain(std::iter::once(&usize::MAX))) {
        let cut = cut.min(rest.len());
        let (these, more) = rest.split_at(cut);
        rest = more;
        // Confirmed until just before the next commit (or a little after the last one).
        let through = match (more.first(), these.last()) {
            (Some(next), _) => next.at_ms - 5,
            (None, Some(last)) => last.at_ms + 30,
            (None, None) => at + 30,
        };
        let through = if these.is_empty() && !more.is_empty() {
            // An empty segment confirms a little, not up to the next commit.
            segments
                .last()
                .map_or(from_ms, |s: &(u64, u64, Vec<SegmentCommit>)| s.1)
                + 1
        } else {
            through
        };
        let info = repo.write_segment(&b.id, seq, through, these).unwrap();
        assert_eq!(info.seq, seq);
        assert_eq!(info.commits, these.len() as u64);
        assert_eq!(info.through_ms, through);
        segments.push((seq, through, these.to_vec()));
        if rest.is_empty() {
            break;
        }
    }
    Chain {
        db,
        base: b.id,
        from_ms,
        base_hash,
        states,
        segments,
        conn,
    }
}

fn restore_to(repo: &Repository, chain: &Chain, t: u64, target: &Path) -> String {
    let s = repo
        .restore_at(&chain.base, t, target, &RestoreOptions::default())
        .unwrap_or_else(|e| panic!("restore at {t}: {e}"));
    let got = hash_file(target);
    assert_eq!(got, s.db_hash);
    assert_eq!(s.integrity, Integrity::CheckedNow);
    assert_eq!(s.db_size, std::fs::metadata(target).unwrap().len());
    got
}

#[test]
fn restores_to_random_moments_give_the_state_committed_then() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(&dir.path().join("repo"), None);
    let chain = build_chain(&repo, dir.path(), 120);

    let infos = repo.segments(&chain.base).unwrap();
    assert_eq!(infos.len(), chain.segments.len());
    for (info, (seq, through, commits)) in infos.iter().zip(&chain.segments) {
        assert_eq!((info.seq, info.through_ms), (*seq, *through));
        assert_eq!(info.commits, commits.len() as u64);
        if let (Some(f), Some(l)) = (commits.first(), commits.last()) {
            assert_eq!((info.first_ms, info.last_ms), (f.at_ms, l.at_ms));
        }
    }

    // The base moment is the pinned state, without the commit made while it was read.
    let t = dir.path().join("at-base.db");
    assert_eq!(
        restore_to(&repo, &chain, chain.from_ms, &t),
        chain.base_hash
    );

    let mut rng = Rng(7);
    let (lo, hi) = (chain.from_ms, chain.to_ms());
    let mut moments: Vec<u64> = (0..14).map(|_| lo + rng.next() % (hi - lo + 1)).collect();
    // Exactly at a commit, one ms before it, the range's end, and around the VACUUM.
    let mid = chain.states.len() / 2;
    moments.extend([
        chain.states[5].0,
        chain.states[5].0 - 1,
        hi,
        chain.states[mid].0,
        chain.states[mid + 3].0,
    ]);
    for (i, t_ms) in moments.into_iter().enumerate() {
        let target = dir.path().join(format!("t{i}.db"));
        let got = restore_to(&repo, &chain, t_ms, &target);
        assert_eq!(got, chain.expected(t_ms), "moment {t_ms} (#{i})");
        // The restored file is a database with the rows of that moment.
        let c = Connection::open(&target).unwrap();
        let _: i64 = c
            .query_row("SELECT count(*) FROM customer", [], |r| r.get(0))
            .unwrap();
    }
    // The newest state equals the live database.
    let target = dir.path().join("newest.db");
    restore_to(&repo, &chain, hi, &target);
    assert_eq!(dump(&target), dump(&chain.db));
    drop(chain.conn);
}

#[test]
fn segment_pages_are_deduplicated_and_rewriting_a_segment_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let repo = local_repo(&repo_dir, None);
    let chain = build_chain(&repo, dir.path(), 40);
    let files_before = files_under(&repo_dir, "data").len() + files_under(&repo_dir, "index").len();

    // The same segment again: the stored one comes back, nothing is written.
    let (seq, through, commits) = chain.segments[3].clone();
    let info = repo
        .write_segment(&chain.base, seq, through, &commits)
        .unwrap();
    assert_eq!(info, repo.segments(&chain.base).unwrap()[3]);
    let files_after = files_under(&repo_dir, "data").len() + files_under(&repo_dir, "index").len();
    assert_eq!(files_before, files_after);

    // Different content under the same number is refused.
    let err = repo
        .write_segment(&chain.base, seq, through + 1, &commits)
        .unwrap_err();
    assert!(
        matches!(&err, RepoError::SegmentConflict { segment } if segment.ends_with(&format!("{seq:020}"))),
        "{err}"
    );

    // The same pages captured again in a new segment store no new chunk.
    let next = chain.segments.len() as u64 + 1;
    let last_through = chain.to_ms();
    let again: Vec<SegmentCommit> = commits
        .iter()
        .enumerate()
        .map(|(i, c)| SegmentCommit {
            at_ms: last_through + 1 + i as u64,
            ..c.clone()
        })
        .collect();
    let stats = repo.stats().unwrap();
    let info = repo
        .write_segment(&chain.base, next, last_through + 100, &again)
        .unwrap();
    assert_eq!(repo.stats().unwrap().packs, stats.packs, "{info:?}");

    // Bad input changes nothing.
    let c = &commits[0];
    let short = SegmentCommit {
        pages: vec![(1, vec![0u8; 100])],
        ..c.clone()
    };
    for (s, th, cs) in [
        (0, through, vec![c.clone()]),
        (next + 1, c.at_ms - 1, vec![c.clone()]),
        (next + 1, through, vec![short]),
    ] {
        let e = repo.write_segment(&chain.base, s, th, &cs).unwrap_err();
        assert!(matches!(e, RepoError::Invalid(_)), "{e}");
    }
    let e = repo
        .write_segment("20990101T000000.000Z-00000000", 1, through, &commits)
        .unwrap_err();
    assert!(matches!(e, RepoError::BackupNotFound(_)), "{e}");
    assert_eq!(repo.segments(&chain.base).unwrap().len() as u64, next);
}

#[test]
fn moments_outside_the_range_are_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(&dir.path().join("repo"), None);
    let chain = build_chain(&repo, dir.path(), 20);
    let target = dir.path().join("t.db");
    let (from, to) = (chain.from_ms, chain.to_ms());
    let e = repo
        .restore_at(&chain.base, from - 1, &target, &RestoreOptions::default())
        .unwrap_err();
    match &e {
        RepoError::MomentBeforeRange { from_ms, to_ms, .. } => {
            assert_eq!((*from_ms, *to_ms), (from, to))
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains(&format!("{from} ms")), "{e}");
    let e = repo
        .restore_at(&chain.base, to + 1, &target, &RestoreOptions::default())
        .unwrap_err();
    match &e {
        RepoError::MomentAfterRange { from_ms, to_ms, .. } => {
            assert_eq!((*from_ms, *to_ms), (from, to))
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains(&format!("{to} ms")), "{e}");
    assert!(!target.exists());
    // An existing target is refused without overwrite, and kept.
    std::fs::write(&target, b"keep").unwrap();
    let e = repo
        .restore_at(&chain.base, to, &target, &RestoreOptions::default())
        .unwrap_err();
    assert!(matches!(e, RepoError::TargetExists(_)), "{e}");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
}

/// The directory entries beside `target` other than the target itself (temporary files).
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".restore-"))
        .collect()
}

#[test]
fn a_missing_segment_is_refused_naming_it_and_the_moments_lost() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let repo = local_repo(&repo_dir, None);
    let chain = build_chain(&repo, dir.path(), 60);
    let key = format!("segments/{}/{:020}", chain.base, 4);
    std::fs::remove_file(repo_dir.join(&key)).unwrap();

    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let target = out.join("t.db");
    for t in [chain.first_commit(4), chain.to_ms(), chain.through(3) + 1] {
        let e = repo
            .restore_at(&chain.base, t, &target, &RestoreOptions::default())
            .unwrap_err();
        match &e {
            RepoError::SegmentMissing {
                segment,
                after_ms,
                until_ms,
            } => {
                assert_eq!(segment, &key);
                assert_eq!(*after_ms, chain.through(3));
                assert_eq!(*until_ms, chain.first_commit(5));
            }
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains(&key), "{e}");
        assert!(!target.exists());
    }
    assert!(leftovers(&out).is_empty());
    // Moments the earlier segments cover still restore.
    let t = chain.through(3);
    assert_eq!(restore_to(&repo, &chain, t, &target), chain.expected(t));
    // The listing shows the hole.
    let seqs: Vec<u64> = repo
        .segments(&chain.base)
        .unwrap()
        .iter()
        .map(|s| s.seq)
        .collect();
    assert!(!seqs.contains(&4) && seqs.contains(&5), "{seqs:?}");
}

#[test]
fn a_corrupt_segment_is_refused_and_never_writes_a_wrong_database() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let repo = local_repo(&repo_dir, None);
    let chain = build_chain(&repo, dir.path(), 60);
    let key = format!("segments/{}/{:020}", chain.base, 4);
    let path = repo_dir.join(&key);
    let mut b = std::fs::read(&path).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x01;
    std::fs::write(&path, &b).unwrap();

    // Overwriting an existing database: it stays whole.
    let target = dir.path().join("t.db");
    std::fs::write(&target, b"the old database").unwrap();
    let opts = RestoreOptions {
        overwrite: true,
        ..RestoreOptions::default()
    };
    let e = repo
        .restore_at(&chain.base, chain.to_ms(), &target, &opts)
        .unwrap_err();
    match &e {
        RepoError::SegmentCorrupt {
            segment, after_ms, ..
        } => {
            assert_eq!(segment, &key);
            assert_eq!(*after_ms, chain.through(3));
        }
        other => panic!("{other}"),
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"the old database");
    assert!(leftovers(dir.path()).is_empty());
    let e = repo.segments(&chain.base).unwrap_err();
    assert!(e.to_string().contains(&key), "{e}");
    // Earlier moments still restore.
    let t = chain.through(3);
    let s = repo.restore_at(&chain.base, t, &target, &opts).unwrap();
    assert_eq!(s.db_hash, chain.expected(t));
}

#[test]
fn a_segment_of_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let repo = local_repo(&repo_dir, None);
    let chain = build_chain(&repo, dir.path(), 30);
    let key = format!("segments/{}/{:020}", chain.base, 2);
    let path = repo_dir.join(&key);
    let mut body = plain_body(&std::fs::read(&path).unwrap());
    assert_eq!(&body[..8], b"STWDSEG1");
    body[8..12].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&path, plain_seal("steward-repo segment", body)).unwrap();
    let target = dir.path().join("t.db");
    let e = repo
        .restore_at(
            &chain.base,
            chain.to_ms(),
            &target,
            &RestoreOptions::default(),
        )
        .unwrap_err();
    match &e {
        RepoError::NewerFormat { object, found, .. } => {
            assert_eq!((object.as_str(), *found), (key.as_str(), 2));
        }
        other => panic!("{other}"),
    }
    assert!(!target.exists());
    assert!(matches!(
        repo.segments(&chain.base).unwrap_err(),
        RepoError::NewerFormat { .. }
    ));
}

#[test]
fn a_missing_pack_of_segment_pages_is_refused_naming_the_segment_and_page() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let repo = local_repo(&repo_dir, None);
    let chain = build_chain(&repo, dir.path(), 40);
    // The packs written after the base: only segment pages are in them.
    let base_packs = {
        let m = repo.manifest(&chain.base).unwrap();
        assert!(m.chunks_new > 0);
        // Packs older than the first segment object are the base's.
        let first = repo_dir.join(format!("segments/{}/{:020}", chain.base, 1));
        let t0 = std::fs::metadata(first).unwrap().modified().unwrap();
        files_under(&repo_dir, "data")
            .into_iter()
            .filter(|p| std::fs::metadata(p).unwrap().modified().unwrap() < t0)
            .collect::<Vec<_>>()
    };
    let all = files_under(&repo_dir, "data");
    let seg_packs: Vec<_> = all.iter().filter(|p| !base_packs.contains(p)).collect();
    assert!(!seg_packs.is_empty());
    for p in &seg_packs {
        std::fs::remove_file(p).unwrap();
    }
    let target = dir.path().join("t.db");
    let e = repo
        .restore_at(
            &chain.base,
            chain.to_ms(),
            &target,
            &RestoreOptions::default(),
        )
        .unwrap_err();
    match &e {
        RepoError::SegmentChunkDamaged {
            segment, reason, ..
        } => {
            assert!(
                segment.starts_with(&format!("segments/{}/", chain.base)),
                "{e}"
            );
            assert!(reason.contains("missing"), "{e}");
        }
        other => panic!("{other}"),
    }
    assert!(!target.exists());
    assert!(leftovers(dir.path()).is_empty());
    // The base moment needs no segment page.
    assert_eq!(
        restore_to(&repo, &chain, chain.from_ms, &target),
        chain.base_hash
    );
}

#[test]
fn prune_keeps_what_segments_reference_and_reclaims_it_once_they_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let repo = local_repo(&repo_dir, None);
    let chain = build_chain(&repo, dir.path(), 60);
    let packs_with_segments = repo.stats().unwrap().packs;
    for _ in 0..2 {
        let s = repo.prune(&prune_now()).unwrap();
        assert_eq!(s.segments_live, chain.segments.len() as u64);
        assert_eq!(s.packs_deleted, 0);
        assert_eq!(s.packs_condemned, 0);
    }
    let mut rng = Rng(99);
    for i in 0..4 {
        let t = chain.from_ms + rng.next() % (chain.to_ms() - chain.from_ms + 1);
        let target = dir.path().join(format!("p{i}.db"));
        assert_eq!(restore_to(&repo, &chain, t, &target), chain.expected(t));
    }
    assert!(repo.verify(None, VerifyMode::Full, &quiet).unwrap().is_ok());

    // Without its segments the base keeps only its own packs.
    assert_eq!(
        repo.delete_segments(&chain.base).unwrap(),
        chain.segments.len()
    );
    assert!(repo.segments(&chain.base).unwrap().is_empty());
    repo.prune(&prune_now()).unwrap();
    repo.prune(&prune_now()).unwrap();
    let after = repo.stats().unwrap().packs;
    assert!(
        after < packs_with_segments,
        "{after} of {packs_with_segments}"
    );
    let target = dir.path().join("base.db");
    assert_eq!(
        restore_to(&repo, &chain, chain.from_ms, &target),
        chain.base_hash
    );
}

#[test]
fn deleting_the_base_deletes_its_segments_and_prune_removes_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let repo = local_repo(&repo_dir, None);
    let chain = build_chain(&repo, dir.path(), 20);
    repo.delete_backup(&chain.base).unwrap();
    assert!(files_under(&repo_dir, "segments").is_empty());
    repo.prune(&prune_now()).unwrap();
    repo.prune(&prune_now()).unwrap();
    assert_eq!(repo.stats().unwrap().packs, 0);

    // A segment left without its base (a deletion interrupted between the two) is removed.
    let chain = build_chain(&repo, &dir.path().join("second").tap_mkdir(), 10);
    let manifest = repo_dir.join(format!("backups/{}", chain.base));
    std::fs::remove_file(manifest).unwrap();
    let s = repo.prune(&prune_now()).unwrap();
    assert_eq!(s.orphan_segments_deleted, chain.segments.len() as u64);
    assert!(
        files_under(&repo_dir, "segments")
            .iter()
            .all(|p| !p.is_file())
    );
}

trait TapMkdir {
    fn tap_mkdir(self) -> PathBuf;
}
impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> PathBuf {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

#[test]
fn a_segment_whose_object_was_never_written_is_absent_and_the_chain_stays_sound() {
    let dir = tempfile::tempdir().unwrap();
    let inner = Repository::local_store(dir.path().join("repo")).unwrap();
    let faults = FaultStore::new(inner);
    let repo = Repository::init(faults.clone(), Default::default())
        .unwrap()
        .with_retry(fast_retry());
    let chain = build_chain(&repo, dir.path(), 30);
    let next = chain.segments.len() as u64 + 1;
    let to = chain.to_ms();

    // New pages, so the segment has packs to write.
    workload(&chain.conn, 1, 100, &mut Rng(5));
    let target_a = dir.path().join("a.db");
    restore_to(&repo, &chain, to, &target_a);
    let prev = {
        let c = Connection::open(&target_a).unwrap();
        pages(&c)
    };
    let now = pages(&chain.conn);
    let commit = diff(&prev, &now, to + 10);
    assert!(!commit.pages.is_empty());

    // Fail the pack, then the index, then the segment object itself, permanently.
    for prefix in ["data/", "index/", "segments/"] {
        faults.only_under(Some(prefix));
        faults.arm(1, true);
        let e = repo.write_segment(&chain.base, next, to + 20, std::slice::from_ref(&commit));
        faults.arm(0, false);
        faults.only_under(None);
        assert!(e.is_err(), "failing {prefix} did not fail the write");
        let seqs = repo.segments(&chain.base).unwrap();
        assert_eq!(seqs.len() as u64, next - 1, "failing {prefix}");
        // The range did not grow, and what it covers restores.
        let e = repo
            .restore_at(
                &chain.base,
                to + 20,
                &dir.path().join("x.db"),
                &RestoreOptions::default(),
            )
            .unwrap_err();
        assert!(matches!(e, RepoError::MomentAfterRange { .. }), "{e}");
        let t = dir
            .path()
            .join(format!("after-{}.db", prefix.trim_end_matches('/')));
        assert_eq!(restore_to(&repo, &chain, to, &t), chain.expected(to));
    }
    // A transient failure is retried away; then the segment is there.
    faults.arm(2, false);
    repo.write_segment(&chain.base, next, to + 20, std::slice::from_ref(&commit))
        .unwrap();
    let t = dir.path().join("new.db");
    assert_eq!(restore_to(&repo, &chain, to + 20, &t), hash_pages(&now));
    // Debris of the failed attempts is reclaimed without breaking anything.
    repo.prune(&prune_now()).unwrap();
    repo.prune(&prune_now()).unwrap();
    let t = dir.path().join("new2.db");
    assert_eq!(restore_to(&repo, &chain, to + 20, &t), hash_pages(&now));
}

#[test]
fn an_encrypted_repository_restores_to_moments() {
    let dir = tempfile::tempdir().unwrap();
    let key = steward_repo::Key::generate().unwrap();
    let repo = local_repo(&dir.path().join("repo"), Some(key));
    let chain = build_chain(&repo, dir.path(), 30);
    let mut rng = Rng(3);
    for i in 0..3 {
        let t = chain.from_ms + rng.next() % (chain.to_ms() - chain.from_ms + 1);
        let target = dir.path().join(format!("e{i}.db"));
        assert_eq!(restore_to(&repo, &chain, t, &target), chain.expected(t));
    }
}

#[test]
fn backup_sqlite_conn_refuses_a_connection_outside_a_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(&dir.path().join("repo"), None);
    let db = dir.path().join("crm.db");
    let conn = make_db(&db, 10);
    let e = repo
        .backup_sqlite_conn(&conn, db.to_str().unwrap(), no_meta(), &quiet)
        .unwrap_err();
    assert!(matches!(e, RepoError::Invalid(_)), "{e}");
    assert!(repo.list_backups().unwrap().is_empty());
}

/// Run by [`a_killed_restore_to_a_moment_leaves_the_target_whole`] in a child process:
/// restores to a moment over the target again and again until killed.
#[test]
#[ignore = "run as a child process by a_killed_restore_to_a_moment_leaves_the_target_whole"]
fn child_restores_until_killed() {
    let Ok(repo_dir) = std::env::var("SEGMENTS_CHILD_REPO") else {
        return;
    };
    let base = std::env::var("SEGMENTS_CHILD_BASE").unwrap();
    let at: u64 = std::env::var("SEGMENTS_CHILD_AT").unwrap().parse().unwrap();
    let target = PathBuf::from(std::env::var("SEGMENTS_CHILD_TARGET").unwrap());
    let repo = Repository::open(Repository::local_store(repo_dir).unwrap(), None).unwrap();
    let opts = RestoreOptions {
        overwrite: true,
        ..RestoreOptions::default()
    };
    loop {
        repo.restore_at(&base, at, &target, &opts).unwrap();
    }
}

#[test]
fn a_killed_restore_to_a_moment_leaves_the_target_whole() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let repo = local_repo(&repo_dir, None);
    let chain = build_chain(&repo, dir.path(), 60);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let target = out.join("t.db");
    let old_t = chain.states[10].0;
    let old = restore_to(&repo, &chain, old_t, &target);
    let new_t = chain.to_ms();
    let new = chain.expected(new_t).to_string();
    assert_ne!(old, new);

    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(11);
    let mut killed_mid_restore = 0;
    for round in 0..12 {
        // Back to the old state, then kill a restore to the new one at some point.
        let opts = RestoreOptions {
            overwrite: true,
            ..RestoreOptions::default()
        };
        repo.restore_at(&chain.base, old_t, &target, &opts).unwrap();
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "segments::child_restores_until_killed",
                "--ignored",
                "--nocapture",
            ])
            .env("SEGMENTS_CHILD_REPO", &repo_dir)
            .env("SEGMENTS_CHILD_BASE", &chain.base)
            .env("SEGMENTS_CHILD_AT", new_t.to_string())
            .env("SEGMENTS_CHILD_TARGET", &target)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30 + rng.next() % 150));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let got = hash_file(&target);
        assert!(
            got == old || got == new,
            "round {round}: the target is neither the old nor the new database"
        );
        let c = Connection::open(&target).unwrap();
        let ok: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        drop(c);
        for suffix in ["-wal", "-shm"] {
            let mut p = target.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
        // What the killed process left is only its temporary file, never the target.
        let left = leftovers(&out);
        if !left.is_empty() {
            killed_mid_restore += 1;
        }
        for f in left {
            std::fs::remove_file(out.join(f)).unwrap();
        }
    }
    assert!(
        killed_mid_restore > 0,
        "no kill landed in the middle of a restore"
    );
}

#[test]
fn a_damaged_pack_of_segment_pages_is_refused_and_earlier_moments_restore() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let repo = local_repo(&repo_dir, None);
    let chain = build_chain(&repo, dir.path(), 40);
    // The packs written after the first segment object: only pages of later segments.
    let first = repo_dir.join(format!("segments/{}/{:020}", chain.base, 2));
    let t0 = std::fs::metadata(first).unwrap().modified().unwrap();
    let later: Vec<_> = files_under(&repo_dir, "data")
        .into_iter()
        .filter(|p| std::fs::metadata(p).unwrap().modified().unwrap() > t0)
        .collect();
    assert!(!later.is_empty());
    for p in &later {
        let mut b = std::fs::read(p).unwrap();
        let n = b.len();
        b[n - 20] ^= 0x40;
        std::fs::write(p, b).unwrap();
    }
    let target = dir.path().join("t.db");
    let e = repo
        .restore_at(
            &chain.base,
            chain.to_ms(),
            &target,
            &RestoreOptions::default(),
        )
        .unwrap_err();
    match &e {
        RepoError::SegmentChunkDamaged {
            segment,
            written_ms,
            ..
        } => {
            assert!(
                segment.starts_with(&format!("segments/{}/", chain.base)),
                "{e}"
            );
            assert!(*written_ms > chain.through(2), "{e}");
        }
        other => panic!("{other}"),
    }
    assert!(!target.exists());
    assert!(leftovers(dir.path()).is_empty());
    let t = chain.through(2);
    assert_eq!(restore_to(&repo, &chain, t, &target), chain.expected(t));
}

#[test]
fn a_chain_on_s3_restores_to_moments() {
    let dir = tempfile::tempdir().unwrap();
    let s3_root = dir.path().join("s3");
    std::fs::create_dir_all(s3_root.join("pitr")).unwrap();
    let (_server, addr) = crate::s3::start_s3(&s3_root);
    let store = Repository::s3_store(&crate::s3::s3_config(addr, "pitr")).unwrap();
    let repo = Repository::init(store, Default::default())
        .unwrap()
        .with_retry(fast_retry());
    let chain = build_chain(&repo, dir.path(), 40);
    assert_eq!(
        repo.segments(&chain.base).unwrap().len(),
        chain.segments.len()
    );
    let mut rng = Rng(21);
    for i in 0..4 {
        let t = chain.from_ms + rng.next() % (chain.to_ms() - chain.from_ms + 1);
        let target = dir.path().join(format!("s{i}.db"));
        assert_eq!(restore_to(&repo, &chain, t, &target), chain.expected(t));
    }
    repo.prune(&prune_now()).unwrap();
    let target = dir.path().join("after-prune.db");
    let t = chain.to_ms();
    assert_eq!(restore_to(&repo, &chain, t, &target), chain.expected(t));
}
