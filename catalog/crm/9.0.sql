-- CRM 9.0: contact names split into first and last name; outgoing integrations.

-- Split full_name at its first space: "Jim Glynn van der Berg" becomes
-- first_name "Jim", last_name "Glynn van der Berg"; a single word is a first name.
ALTER TABLE contacts ADD COLUMN first_name TEXT NOT NULL DEFAULT '';
ALTER TABLE contacts ADD COLUMN last_name TEXT NOT NULL DEFAULT '';
UPDATE contacts
SET first_name = CASE
        WHEN instr(trim(full_name), ' ') > 0
        THEN substr(trim(full_name), 1, instr(trim(full_name), ' ') - 1)
        ELSE trim(full_name)
    END,
    last_name = CASE
        WHEN instr(trim(full_name), ' ') > 0
        THEN trim(substr(trim(full_name), instr(trim(full_name), ' ') + 1))
        ELSE ''
    END;
ALTER TABLE contacts DROP COLUMN full_name;
CREATE INDEX contacts_name ON contacts (last_name, first_name);

-- Connections to other systems. Outgoing integrations send data out (mail, webhooks);
-- a sandbox copy of production must have them switched off (enabled = 0).
CREATE TABLE integrations (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL CHECK (kind IN ('email', 'webhook', 'sync')),
    endpoint   TEXT NOT NULL,
    outgoing   INTEGER NOT NULL DEFAULT 1 CHECK (outgoing IN (0, 1)),
    enabled    INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);

-- Every 9.0 installation starts with the outgoing mail relay, switched on.
INSERT INTO integrations (name, kind, endpoint, outgoing, enabled)
VALUES ('Outgoing email', 'email', 'smtp://localhost:25', 1, 1);
