//! Continuous capture (point-in-time restore): each instance's chains (a base snapshot at an
//! exact commit plus the numbered segments captured after it) and what each covers. At most
//! one chain per instance is open (being extended) at a time.

use serde::Serialize;

use super::*;

/// A capture chain as stored.
#[derive(Debug, Clone, Serialize)]
pub struct ChainRow {
    pub id: i64,
    pub instance_id: i64,
    pub instance_name: String,
    /// The base snapshot's backup id in the repository.
    pub base_repo_id: String,
    /// The release the instance ran during the chain.
    pub release: Option<String>,
    pub started_at: DateTime<Utc>,
    /// The last moment capture confirmed.
    pub through_at: DateTime<Utc>,
    pub segments: u64,
    pub commits: u64,
    pub bytes: u64,
    pub ended_at: Option<DateTime<Utc>>,
    /// Why capture stopped extending it; `None` while open.
    pub end_reason: Option<String>,
}

/// A chain to open.
#[derive(Debug, Clone)]
pub struct NewChain {
    pub instance_id: i64,
    pub instance_name: String,
    pub base_repo_id: String,
    pub release: Option<String>,
    pub started_at: DateTime<Utc>,
}

/// One segment of a chain as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentRow {
    pub chain_id: i64,
    pub seq: u64,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    pub through_at: DateTime<Utc>,
    pub commits: u64,
    pub pages: u64,
    pub bytes: u64,
}

const CHAIN_COLS: &str = "id, instance_id, instance_name, base_repo_id, release, started_at, through_at, segments, commits, bytes, ended_at, end_reason";

fn chain_row(r: &Row) -> sql::Result<ChainRow> {
    Ok(ChainRow {
        id: r.get(0)?,
        instance_id: r.get(1)?,
        instance_name: r.get(2)?,
        base_repo_id: r.get(3)?,
        release: r.get(4)?,
        started_at: parse_ts(&r.get::<_, String>(5)?)?,
        through_at: parse_ts(&r.get::<_, String>(6)?)?,
        segments: r.get::<_, i64>(7)? as u64,
        commits: r.get::<_, i64>(8)? as u64,
        bytes: r.get::<_, i64>(9)? as u64,
        ended_at: parse_opt_ts(r.get(10)?)?,
        end_reason: r.get(11)?,
    })
}

fn segment_row(r: &Row) -> sql::Result<SegmentRow> {
    Ok(SegmentRow {
        chain_id: r.get(0)?,
        seq: r.get::<_, i64>(1)? as u64,
        first_at: parse_ts(&r.get::<_, String>(2)?)?,
        last_at: parse_ts(&r.get::<_, String>(3)?)?,
        through_at: parse_ts(&r.get::<_, String>(4)?)?,
        commits: r.get::<_, i64>(5)? as u64,
        pages: r.get::<_, i64>(6)? as u64,
        bytes: r.get::<_, i64>(7)? as u64,
    })
}

/// Capture chains and segments.
impl Db<'_> {
    fn rows_of<T, P: sql::Params>(
        &self,
        sql: &str,
        params: P,
        f: fn(&Row) -> sql::Result<T>,
    ) -> Result<Vec<T>> {
        let mut st = self.conn.prepare(sql)?;
        let rows = st.query_map(params, f)?.collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// Opens a chain for the instance, ending the open one first with `reason` (at the new
    /// chain's start) if there is one.
    pub fn open_chain(&self, new: &NewChain, end_previous: &str) -> Result<ChainRow> {
        if let Some(open) = self.open_chain_of(new.instance_id)? {
            self.end_chain(open.id, new.started_at, end_previous)?;
        }
        self.conn.execute(
            "INSERT INTO capture_chains (instance_id, instance_name, base_repo_id, release, started_at, through_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![
                new.instance_id,
                new.instance_name,
                new.base_repo_id,
                new.release,
                ts(new.started_at)
            ],
        )?;
        Ok(self
            .chain(self.conn.last_insert_rowid()?)?
            .expect("just inserted"))
    }

    pub fn chain(&self, id: i64) -> Result<Option<ChainRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {CHAIN_COLS} FROM capture_chains WHERE id = ?1"),
                [id],
                chain_row,
            )
            .optional()?)
    }

    /// The instance's chain being extended, if any.
    pub fn open_chain_of(&self, instance_id: i64) -> Result<Option<ChainRow>> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {CHAIN_COLS} FROM capture_chains WHERE instance_id = ?1 AND end_reason IS NULL"
                ),
                [instance_id],
                chain_row,
            )
            .optional()?)
    }

    /// Every open chain (capture resumes them, or ends them, at start).
    pub fn open_chains(&self) -> Result<Vec<ChainRow>> {
        self.rows_of(
            &format!(
                "SELECT {CHAIN_COLS} FROM capture_chains WHERE end_reason IS NULL ORDER BY id"
            ),
            [],
            chain_row,
        )
    }

    /// Every chain of every instance, oldest first.
    pub fn all_chains(&self) -> Result<Vec<ChainRow>> {
        self.rows_of(
            &format!("SELECT {CHAIN_COLS} FROM capture_chains ORDER BY started_at, id"),
            [],
            chain_row,
        )
    }

    /// The ids of every open chain (the capture worker checks them every pass).
    pub fn open_chain_ids(&self) -> Result<Vec<i64>> {
        self.rows_of(
            "SELECT id FROM capture_chains WHERE end_reason IS NULL",
            [],
            |r| r.get(0),
        )
    }

    /// The instance's chains, oldest first.
    pub fn chains_of(&self, instance_id: i64) -> Result<Vec<ChainRow>> {
        self.rows_of(
            &format!(
                "SELECT {CHAIN_COLS} FROM capture_chains WHERE instance_id = ?1 ORDER BY started_at, id"
            ),
            [instance_id],
            chain_row,
        )
    }

    /// Records segment `seg` of its chain and moves the chain's `through_at` to the segment's.
    /// Refuses a segment out of sequence (the repository holds them numbered 1, 2, 3, ...).
    pub fn add_segment(&self, seg: &SegmentRow) -> Result<()> {
        let chain = self
            .chain(seg.chain_id)?
            .ok_or_else(|| StoreError::Corrupt(format!("no capture chain {}", seg.chain_id)))?;
        if chain.end_reason.is_some() {
            return Err(StoreError::OutOfSequence(format!(
                "capture chain {} has ended; segment {} cannot be added to it",
                seg.chain_id, seg.seq
            )));
        }
        if seg.seq != chain.segments + 1 {
            return Err(StoreError::OutOfSequence(format!(
                "segment {} of capture chain {} is out of sequence: {} segments are recorded",
                seg.seq, seg.chain_id, chain.segments
            )));
        }
        self.conn.execute(
            "INSERT INTO capture_segments (chain_id, seq, first_at, last_at, through_at, commits, pages, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                seg.chain_id,
                seg.seq as i64,
                ts(seg.first_at),
                ts(seg.last_at),
                ts(seg.through_at),
                seg.commits as i64,
                seg.pages as i64,
                seg.bytes as i64
            ],
        )?;
        self.conn.execute(
            "UPDATE capture_chains SET segments = ?2, commits = commits + ?3, bytes = bytes + ?4,
                 through_at = CASE WHEN through_at > ?5 THEN through_at ELSE ?5 END WHERE id = ?1",
            params![
                seg.chain_id,
                seg.seq as i64,
                seg.commits as i64,
                seg.bytes as i64,
                ts(seg.through_at)
            ],
        )?;
        Ok(())
    }

    /// Moves an open chain's `through_at` forward (capture confirmed nothing new was
    /// committed up to `at`).
    pub fn confirm_chain(&self, chain_id: i64, at: DateTime<Utc>) -> Result<()> {
        self.conn.execute(
            "UPDATE capture_chains SET through_at = CASE WHEN through_at > ?2 THEN through_at ELSE ?2 END WHERE id = ?1 AND end_reason IS NULL",
            params![chain_id, ts(at)],
        )?;
        Ok(())
    }

    /// Ends a chain: capture no longer extends it, for `reason`.
    pub fn end_chain(&self, chain_id: i64, at: DateTime<Utc>, reason: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE capture_chains SET ended_at = ?2, end_reason = ?3 WHERE id = ?1 AND end_reason IS NULL",
            params![chain_id, ts(at), reason],
        )?;
        Ok(())
    }

    pub fn segments_of(&self, chain_id: i64) -> Result<Vec<SegmentRow>> {
        self.rows_of(
            "SELECT chain_id, seq, first_at, last_at, through_at, commits, pages, bytes
             FROM capture_segments WHERE chain_id = ?1 ORDER BY seq",
            [chain_id],
            segment_row,
        )
    }

    /// Forgets a chain and its segments (retention expired it, or its instance is gone; the
    /// caller deletes the repository's objects first).
    pub fn delete_chain(&self, chain_id: i64) -> Result<()> {
        self.conn.execute(
            "DELETE FROM capture_segments WHERE chain_id = ?1",
            [chain_id],
        )?;
        self.conn
            .execute("DELETE FROM capture_chains WHERE id = ?1", [chain_id])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, 1, 10, 12, 0, 0).unwrap() + Duration::seconds(s)
    }

    fn store_with_instance() -> (tempfile::TempDir, Store, i64) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("steward.db")).unwrap();
        let id = store
            .write(|db| {
                db.insert_instance(
                    &NewInstance {
                        name: "crm-prod".into(),
                        instance_type: steward_core::InstanceType::Production,
                        engine: steward_core::Engine::Sqlite,
                        release: "9.1".into(),
                        state: steward_core::InstanceState::Available,
                        database_path: "/tmp/x.db".into(),
                        documents_path: "/tmp/docs".into(),
                        created_by: "admin".into(),
                        node: None,
                    },
                    t(0),
                )
                .map(|i| i.unwrap().id)
            })
            .unwrap();
        (dir, store, id)
    }

    fn chain(instance_id: i64, base: &str, at: i64) -> NewChain {
        NewChain {
            instance_id,
            instance_name: "crm-prod".into(),
            base_repo_id: base.into(),
            release: Some("9.1".into()),
            started_at: t(at),
        }
    }

    fn seg(chain_id: i64, seq: u64, from: i64, to: i64) -> SegmentRow {
        SegmentRow {
            chain_id,
            seq,
            first_at: t(from),
            last_at: t(to),
            through_at: t(to + 1),
            commits: 3,
            pages: 7,
            bytes: 4096,
        }
    }

    #[test]
    fn segments_extend_the_open_chain_in_sequence_and_a_new_chain_ends_it() {
        let (_d, store, inst) = store_with_instance();
        let c1 = store
            .write(|db| db.open_chain(&chain(inst, "base-1", 0), "unused"))
            .unwrap();
        store
            .write(|db| db.add_segment(&seg(c1.id, 1, 1, 5)))
            .unwrap();
        store
            .write(|db| db.add_segment(&seg(c1.id, 2, 6, 9)))
            .unwrap();
        let e = store
            .write(|db| db.add_segment(&seg(c1.id, 4, 10, 12)))
            .unwrap_err();
        assert!(e.to_string().contains("out of sequence"), "{e}");
        store.write(|db| db.confirm_chain(c1.id, t(30))).unwrap();
        let now = store.read(|db| db.chain(c1.id)).unwrap().unwrap();
        assert_eq!((now.segments, now.commits, now.bytes), (2, 6, 8192));
        assert_eq!(now.through_at, t(30));
        // Confirming never moves it back.
        store.write(|db| db.confirm_chain(c1.id, t(20))).unwrap();
        assert_eq!(
            store
                .read(|db| db.chain(c1.id))
                .unwrap()
                .unwrap()
                .through_at,
            t(30)
        );

        let c2 = store
            .write(|db| db.open_chain(&chain(inst, "base-2", 40), "the server was stopped"))
            .unwrap();
        let chains = store.read(|db| db.chains_of(inst)).unwrap();
        assert_eq!(chains.len(), 2);
        assert_eq!(
            chains[0].end_reason.as_deref(),
            Some("the server was stopped")
        );
        assert_eq!(chains[0].ended_at, Some(t(40)));
        assert_eq!(
            store.read(|db| db.open_chain_of(inst)).unwrap().unwrap().id,
            c2.id
        );
        // An ended chain is not extended.
        store.write(|db| db.confirm_chain(c1.id, t(50))).unwrap();
        assert_eq!(
            store
                .read(|db| db.chain(c1.id))
                .unwrap()
                .unwrap()
                .through_at,
            t(30)
        );
        assert_eq!(store.read(|db| db.segments_of(c1.id)).unwrap().len(), 2);
        let e = store
            .write(|db| db.add_segment(&seg(c1.id, 3, 10, 12)))
            .unwrap_err();
        assert!(e.to_string().contains("has ended"), "{e}");

        store.write(|db| db.delete_chain(c1.id)).unwrap();
        assert!(store.read(|db| db.chain(c1.id)).unwrap().is_none());
        assert!(store.read(|db| db.segments_of(c1.id)).unwrap().is_empty());
        assert_eq!(store.read(|db| db.open_chains()).unwrap().len(), 1);
    }
}
