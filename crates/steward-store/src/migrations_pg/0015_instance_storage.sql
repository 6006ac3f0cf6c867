-- PostgreSQL twin of the SQLite migration of the same number.
-- 0015_instance_storage: an instance's database storage (its file, -wal and -shm), measured
-- by the node that keeps the files and recorded here, so that every node shows it and a list
-- of 10,000 instances sums one column instead of statting 30,000 files.
ALTER TABLE instances ADD COLUMN storage_bytes BIGINT NOT NULL DEFAULT 0;
-- The minute scheduler asks which instances already have the day's system backup: one
-- indexed query instead of one insert attempt per instance per minute.
CREATE INDEX backups_system_by_day ON backups(scheduled_for) WHERE kind = 'system';
-- The minute scheduler asks which instances' drills of the current period are queued: one
-- query by slot instead of one per instance.
CREATE INDEX drills_by_slot ON drills(slot) WHERE slot IS NOT NULL;
-- Each instance's last finished drill (the Restore drills page, instance views): found by
-- index as drills pile up (10,000 instances with 300,000 drills: 196 ms → 22 ms on SQLite).
CREATE INDEX drills_finished ON drills(instance_id, finished_at) WHERE state IN ('passed', 'failed');
