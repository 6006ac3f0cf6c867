-- CRM 8.1: activities (calls, emails, meetings, tasks) of accounts and contacts.

CREATE TABLE activities (
    id         INTEGER PRIMARY KEY,
    account_id INTEGER REFERENCES accounts (id) ON DELETE CASCADE,
    contact_id INTEGER REFERENCES contacts (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('call', 'email', 'meeting', 'task')),
    subject    TEXT NOT NULL,
    due_at     TEXT,
    done       INTEGER NOT NULL DEFAULT 0 CHECK (done IN (0, 1)),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE INDEX activities_account ON activities (account_id);
CREATE INDEX activities_contact ON activities (contact_id);

-- Sample data.
INSERT INTO activities (id, account_id, contact_id, kind, subject, due_at, done, created_at) VALUES
    (1, 1, 1, 'call', 'Introductory call', '2016-12-12T14:00:00Z', 1, '2016-12-05T11:00:00Z'),
    (2, 1, 2, 'meeting', 'Product demo', '2016-12-20T10:00:00Z', 0, '2016-12-05T11:01:00Z'),
    (3, 2, 3, 'email', 'Send price list', '2016-12-08T09:00:00Z', 0, '2016-12-05T11:02:00Z'),
    (4, 3, NULL, 'task', 'Check credit rating', NULL, 0, '2016-12-05T11:03:00Z');
