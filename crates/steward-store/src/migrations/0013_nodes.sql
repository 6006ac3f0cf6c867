-- 0013_nodes: the Steward nodes sharing this control plane. Each `steward serve` registers
-- under a unique name with the address others reach it at and heartbeats; node_key names the
-- node's data directory, so the same node starting again (after a crash) takes its name back
-- at once, while another node may take it only once the holder stopped or is down.
-- instances.node is the node that created (and keeps) the instance; jobs.node is the node
-- that claimed the job.
CREATE TABLE nodes (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    node_key TEXT NOT NULL,
    address TEXT NOT NULL,
    version TEXT NOT NULL,
    started_at TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    stopped_at TEXT
);
ALTER TABLE instances ADD COLUMN node TEXT;
ALTER TABLE jobs ADD COLUMN node TEXT;
CREATE INDEX instances_node ON instances(node) WHERE deleted_at IS NULL;
CREATE INDEX jobs_node_running ON jobs(node) WHERE state = 'running';
