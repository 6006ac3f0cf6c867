//! Failed sign-ins and sign-in locks (the limits themselves are
//! `steward_core::policy::SignInLimits`). `scope` is `account` or `address`.

use super::*;

/// Failed sign-ins and locks.
impl Db<'_> {
    /// Records one failed (or not yet checked) sign-in for `scope`/`key`; returns its id.
    pub fn insert_login_failure(&self, scope: &str, key: &str, at: DateTime<Utc>) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO login_failures (scope, key, at) VALUES (?1, ?2, ?3)",
            params![scope, key, ts(at)],
        )?;
        Ok(self.conn.last_insert_rowid()?)
    }

    /// Removes one recorded failure (an attempt that turned out right).
    pub fn delete_login_failure(&self, id: i64) -> Result<()> {
        self.conn
            .execute("DELETE FROM login_failures WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Failures of `scope`/`key` at or after `since`.
    pub fn count_login_failures(
        &self,
        scope: &str,
        key: &str,
        since: DateTime<Utc>,
    ) -> Result<u32> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM login_failures WHERE scope = ?1 AND key = ?2 AND at >= ?3",
            params![scope, key, ts(since)],
            |r| r.get(0),
        )?)
    }

    /// Forgets every failure of `scope`/`key` (a success, or a lock that now stands for them).
    pub fn clear_login_failures(&self, scope: &str, key: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM login_failures WHERE scope = ?1 AND key = ?2",
            params![scope, key],
        )?;
        Ok(())
    }

    /// Forgets failures older than `before` and locks that ended before it.
    pub fn prune_login_throttle(&self, before: DateTime<Utc>) -> Result<()> {
        self.conn
            .execute("DELETE FROM login_failures WHERE at < ?1", [ts(before)])?;
        self.conn
            .execute("DELETE FROM login_locks WHERE until < ?1", [ts(before)])?;
        Ok(())
    }

    /// Until when `scope`/`key` is locked, if a lock is still in force at `now`.
    pub fn login_lock(
        &self,
        scope: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>> {
        let until: Option<String> = self
            .conn
            .query_row(
                "SELECT until FROM login_locks WHERE scope = ?1 AND key = ?2 AND until > ?3",
                params![scope, key, ts(now)],
                |r| r.get(0),
            )
            .optional()?;
        Ok(until.as_deref().map(parse_ts).transpose()?)
    }

    /// Locks `scope`/`key` from `at` until `until` (replacing an earlier lock).
    pub fn lock_login(
        &self,
        scope: &str,
        key: &str,
        at: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO login_locks (scope, key, locked_at, until) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (scope, key) DO UPDATE SET locked_at = excluded.locked_at, until = excluded.until",
            params![scope, key, ts(at), ts(until)],
        )?;
        Ok(())
    }
}
