-- 0010_login_throttle: failed sign-ins and the locks they cause, kept here so a restart does
-- not lift a lock. `scope` is 'account' (key: the username as typed) or 'address' (key: the
-- client address, an IPv6 client by its /64).
CREATE TABLE login_failures (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX login_failures_key ON login_failures(scope, key, at);
CREATE TABLE login_locks (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    locked_at TEXT NOT NULL,
    until TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
