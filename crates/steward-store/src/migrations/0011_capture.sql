-- 0011_capture: continuous capture for point-in-time restore. A chain is a base snapshot in the
-- repository taken at an exact commit, followed by numbered segments of the commits captured
-- after it. The chain covers [started_at, through_at]; time no chain covers is a gap, named by
-- the end_reason of the chain before it.
CREATE TABLE capture_chains (
    id INTEGER PRIMARY KEY,
    instance_id INTEGER NOT NULL REFERENCES instances(id),
    instance_name TEXT NOT NULL,
    -- the base snapshot's backup id in the repository
    base_repo_id TEXT NOT NULL,
    -- the release the instance ran during the chain (an update ends the chain)
    release TEXT,
    -- the moment the base snapshot holds
    started_at TEXT NOT NULL,
    -- the last moment capture confirmed: every commit up to it is in the repository
    through_at TEXT NOT NULL,
    segments INTEGER NOT NULL DEFAULT 0,
    commits INTEGER NOT NULL DEFAULT 0,
    -- bytes the chain's segments added to the repository
    bytes INTEGER NOT NULL DEFAULT 0,
    ended_at TEXT,
    -- why capture stopped extending the chain, for people (NULL while it is open)
    end_reason TEXT
);
CREATE INDEX capture_chains_instance ON capture_chains(instance_id, id);
CREATE UNIQUE INDEX capture_chains_open ON capture_chains(instance_id) WHERE end_reason IS NULL;

CREATE TABLE capture_segments (
    chain_id INTEGER NOT NULL REFERENCES capture_chains(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    first_at TEXT NOT NULL,
    last_at TEXT NOT NULL,
    through_at TEXT NOT NULL,
    commits INTEGER NOT NULL,
    pages INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (chain_id, seq)
);
