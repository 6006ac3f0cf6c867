-- 0008_verify: what each verify found, one row per backup checked per verify run
-- (`steward backup verify`). A backup is damaged while a failed row is not cleared by a
-- later passing row of a mode that would have seen the problem (steward_core::verify).
CREATE TABLE backup_verifications (
    id INTEGER PRIMARY KEY,
    backup_id INTEGER NOT NULL REFERENCES backups(id),
    -- the verify job that checked it
    job_id INTEGER,
    at TEXT NOT NULL,
    -- structure, read_data or sample (with sample_percent)
    mode TEXT NOT NULL,
    sample_percent REAL,
    ok INTEGER NOT NULL,
    chunks_needed INTEGER NOT NULL DEFAULT 0,
    chunks_checked INTEGER NOT NULL DEFAULT 0,
    bytes_read INTEGER NOT NULL DEFAULT 0,
    missing_chunks INTEGER NOT NULL DEFAULT 0,
    corrupt_chunks INTEGER NOT NULL DEFAULT 0,
    -- JSON array of pack names in which something is missing, truncated or corrupt
    damaged_packs TEXT NOT NULL DEFAULT '[]',
    -- JSON array of descriptions for people, each naming the pack and/or chunk
    problems TEXT NOT NULL DEFAULT '[]',
    -- requested: in the scope asked for; shared: checked because it may share a damaged pack
    reason TEXT NOT NULL DEFAULT 'requested'
);
CREATE INDEX backup_verifications_backup ON backup_verifications(backup_id, id);
CREATE INDEX backup_verifications_job ON backup_verifications(job_id);
