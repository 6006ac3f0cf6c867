-- 0015_instance_storage: an instance's database storage (its file, -wal and -shm), measured
-- by the node that keeps the files and recorded here, so that every node shows it and a list
-- of 10,000 instances sums one column instead of statting 30,000 files.
ALTER TABLE instances ADD COLUMN storage_bytes INTEGER NOT NULL DEFAULT 0;
