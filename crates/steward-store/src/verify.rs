//! Backup verification results: one row per backup checked by each verify run.

use serde::Serialize;

use super::*;

/// What one verify run found in one backup.
#[derive(Debug, Clone, Serialize)]
pub struct VerificationRow {
    pub id: i64,
    pub backup_id: i64,
    pub job_id: Option<i64>,
    pub at: DateTime<Utc>,
    /// `structure`, `read_data` or `sample`.
    pub mode: String,
    pub sample_percent: Option<f64>,
    pub ok: bool,
    pub chunks_needed: u64,
    pub chunks_checked: u64,
    pub bytes_read: u64,
    pub missing_chunks: u64,
    pub corrupt_chunks: u64,
    /// Packs in which something is missing, truncated or corrupt.
    pub damaged_packs: Vec<String>,
    /// Descriptions for people, each naming the pack and/or chunk.
    pub problems: Vec<String>,
    /// `requested` (in the scope asked for) or `shared` (checked because it may share a
    /// damaged pack with a backup that was).
    pub reason: String,
}

/// A verification to record.
#[derive(Debug, Clone)]
pub struct NewVerification {
    pub backup_id: i64,
    pub job_id: Option<i64>,
    pub mode: String,
    pub sample_percent: Option<f64>,
    pub ok: bool,
    pub chunks_needed: u64,
    pub chunks_checked: u64,
    pub bytes_read: u64,
    pub missing_chunks: u64,
    pub corrupt_chunks: u64,
    pub damaged_packs: Vec<String>,
    pub problems: Vec<String>,
    pub reason: String,
}

const VERIFICATION_COLS: &str = "id, backup_id, job_id, at, mode, sample_percent, ok, chunks_needed, chunks_checked, bytes_read, missing_chunks, corrupt_chunks, damaged_packs, problems, reason";

fn strings(raw: String) -> Vec<String> {
    serde_json::from_str(&raw).unwrap_or_default()
}

fn verification_row(r: &Row) -> sql::Result<VerificationRow> {
    let n = |i: usize| -> sql::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
    Ok(VerificationRow {
        id: r.get(0)?,
        backup_id: r.get(1)?,
        job_id: r.get(2)?,
        at: parse_ts(&r.get::<_, String>(3)?)?,
        mode: r.get(4)?,
        sample_percent: r.get(5)?,
        ok: r.get(6)?,
        chunks_needed: n(7)?,
        chunks_checked: n(8)?,
        bytes_read: n(9)?,
        missing_chunks: n(10)?,
        corrupt_chunks: n(11)?,
        damaged_packs: strings(r.get(12)?),
        problems: strings(r.get(13)?),
        reason: r.get(14)?,
    })
}

/// Verification results.
impl Db<'_> {
    /// Records what a verify found in one backup; returns the row.
    pub fn insert_verification(
        &self,
        new: &NewVerification,
        at: DateTime<Utc>,
    ) -> Result<VerificationRow> {
        let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
        self.conn.execute(
            "INSERT INTO backup_verifications (backup_id, job_id, at, mode, sample_percent, ok, chunks_needed, chunks_checked, bytes_read, missing_chunks, corrupt_chunks, damaged_packs, problems, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                new.backup_id,
                new.job_id,
                ts(at),
                new.mode,
                new.sample_percent,
                new.ok,
                new.chunks_needed as i64,
                new.chunks_checked as i64,
                new.bytes_read as i64,
                new.missing_chunks as i64,
                new.corrupt_chunks as i64,
                json(&new.damaged_packs),
                json(&new.problems),
                new.reason,
            ],
        )?;
        let id = self.conn.last_insert_rowid()?;
        Ok(self.conn.query_row(
            &format!("SELECT {VERIFICATION_COLS} FROM backup_verifications WHERE id = ?1"),
            [id],
            verification_row,
        )?)
    }

    /// Every verification of a backup, oldest first.
    pub fn verifications_of_backup(&self, backup_id: i64) -> Result<Vec<VerificationRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {VERIFICATION_COLS} FROM backup_verifications WHERE backup_id = ?1 ORDER BY id"
        ))?;
        let rows = st
            .query_map([backup_id], verification_row)?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// What one verify job recorded, in the order it recorded it.
    pub fn verifications_of_job(&self, job_id: i64) -> Result<Vec<VerificationRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {VERIFICATION_COLS} FROM backup_verifications WHERE job_id = ?1 ORDER BY id"
        ))?;
        let rows = st
            .query_map([job_id], verification_row)?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// The backups a verify can check: completed, with data in the repository; of one
    /// instance (by id) or of all, oldest first.
    pub fn verifiable_backups(&self, instance_id: Option<i64>) -> Result<Vec<BackupRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {BACKUP_COLS} FROM backups WHERE status = 'completed' AND repo_id IS NOT NULL
             AND (?1 IS NULL OR instance_id = ?1) ORDER BY id"
        ))?;
        let rows = st
            .query_map([instance_id], backup_row)?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }
}
