//! Users, API tokens, browser sessions and the first administrator. Passwords are hashed with
//! argon2; tokens and session ids are random and stored only as hashes.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::json;
use std::net::IpAddr;

use steward_core::name::TextKind;
use steward_core::policy::{Action, SignInLimits, SignInLocked, SignInScope, authorize};
use steward_core::{Role, Username};
use steward_store::{NewAudit, NewUser, SessionRow, TokenRow, UserRow};

use super::{Actor, Result, Services, audit_entry, random_hex, secret_hash};
use crate::config::{Config, ConfigError};
use crate::error::{ErrorKind, ServiceError};

/// Minimum length of a password a person chooses.
pub const MIN_PASSWORD_LEN: usize = 12;
/// Every API token starts with this, so it is recognisable in logs and secret scanners.
pub const TOKEN_PREFIX: &str = "stw_";

/// What the first start created, to be shown once.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub username: String,
    pub password: String,
    pub token: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub username: String,
    /// `system_administrator`, `delegated_admin` or `viewer`
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub disabled: bool,
}

impl From<&UserRow> for UserView {
    fn from(u: &UserRow) -> Self {
        Self {
            username: u.username.clone(),
            role: u.role.as_str().into(),
            created_at: u.created_at,
            disabled: u.disabled_at.is_some(),
        }
    }
}

/// A user just created, with the password to hand over (shown once).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedUser {
    pub user: UserView,
    /// The password, when Steward generated it; `null` when the caller chose it.
    pub generated_password: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenView {
    pub id: i64,
    pub name: String,
    pub username: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<TokenRow> for TokenView {
    fn from(t: TokenRow) -> Self {
        Self {
            id: t.id,
            name: t.name,
            username: t.username,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// A token just created: the secret is shown this once and never again.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub token: TokenView,
    pub secret: String,
}

/// A browser session just opened: the cookie value and the form token for CSRF checks.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub cookie: String,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

pub fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|e| ServiceError::internal(format!("random source: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| ServiceError::internal(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServiceError::internal(format!("password hashing failed: {e}")))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

fn check_password_rules(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(ServiceError::invalid(
            "weak_password",
            format!("a password must be at least {MIN_PASSWORD_LEN} characters long"),
        ));
    }
    Ok(())
}

fn actor_of(u: &UserRow) -> Actor {
    Actor {
        user_id: Some(u.id),
        username: u.username.clone(),
        role: u.role,
    }
}

fn new_token_secret() -> String {
    format!("{TOKEN_PREFIX}{}", random_hex(20))
}

fn token_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ServiceError::invalid(
            "invalid_token_name",
            "a token name must be 1–100 characters long",
        ));
    }
    // Token names are listed to administrators: no control or bidirectional characters.
    steward_core::name::check_plain_text("a token name", name, TextKind::Line)
        .map_err(|e| ServiceError::invalid("invalid_token_name", e.to_string()))?;
    Ok(name.to_owned())
}

impl Services {
    /// On a store with no users, creates the first System Administrator (`admin`) with a
    /// random one-time password and an API token (`token`, or a random one).
    pub fn bootstrap(&self, token: Option<String>) -> Result<Option<Bootstrap>> {
        if let Some(t) = &token
            && (!t.starts_with(TOKEN_PREFIX) || t.len() < TOKEN_PREFIX.len() + 32)
        {
            return Err(ServiceError::invalid(
                "invalid_bootstrap_token",
                format!(
                    "the bootstrap token must start with {TOKEN_PREFIX:?} and have at least 32 characters after it"
                ),
            ));
        }
        let password = random_hex(12);
        let hash = hash_password(&password)?;
        let secret = token.unwrap_or_else(new_token_secret);
        let now = self.now();
        self.store.write(|db| {
            if db.count_users()? > 0 {
                return Ok(None);
            }
            let user = db
                .insert_user(
                    &NewUser {
                        username: "admin".into(),
                        role: Role::SystemAdministrator,
                        password_hash: hash,
                    },
                    now,
                )?
                .ok_or_else(|| ServiceError::internal("the first user could not be created"))?;
            db.insert_token(user.id, "bootstrap", &secret_hash(&secret), now)?;
            db.audit(
                &audit_entry(
                    &Actor::system(),
                    "user.bootstrap",
                    "admin",
                    json!({"after": {"role": "system_administrator"}}),
                ),
                now,
            )?;
            Ok(Some(Bootstrap {
                username: user.username,
                password,
                token: secret,
            }))
        })
    }

    /// The actor behind an API token, or `unauthenticated` if it is unknown or revoked.
    pub fn authenticate_token(&self, secret: &str) -> Result<Actor> {
        let now = self.now();
        let hash = secret_hash(secret);
        self.store.write(|db| {
            let Some((token, user)) = db.user_by_token_hash(&hash)? else {
                return Err(ServiceError::unauthenticated(
                    "invalid_token",
                    "the API token is unknown or has been revoked",
                ));
            };
            if user.disabled_at.is_some() {
                return Err(ServiceError::unauthenticated(
                    "user_disabled",
                    "this user has been disabled",
                ));
            }
            db.touch_token(token.id, now)?;
            Ok(actor_of(&user))
        })
    }

    /// Checks a username and password and opens a browser session.
    pub fn login(&self, username: &str, password: &str) -> Result<(Actor, NewSession)> {
        self.login_from(username, password, None)
    }

    /// [`Services::login`] from client address `client` (counted for the per-address
    /// sign-in limit when known).
    pub fn login_from(
        &self,
        username: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<(Actor, NewSession)> {
        let user = self.check_credentials(username, password, client)?;
        let now = self.now();
        let cookie = random_hex(32);
        let session = SessionRow {
            token_hash: secret_hash(&cookie),
            user_id: user.id,
            csrf_token: random_hex(32),
            created_at: now,
            expires_at: now + Duration::hours(self.session_hours),
        };
        let actor = actor_of(&user);
        self.store.write(|db| {
            db.delete_expired_sessions(now)?;
            db.insert_session(&session)?;
            db.audit(
                &audit_entry(&actor, "session.login", &user.username, json!({})),
                now,
            )?;
            Ok::<_, ServiceError>(())
        })?;
        Ok((
            actor,
            NewSession {
                cookie,
                csrf_token: session.csrf_token,
                expires_at: session.expires_at,
            },
        ))
    }

    /// The actor and CSRF token of a live browser session.
    pub fn session(&self, cookie: &str) -> Result<(Actor, String)> {
        let now = self.now();
        let hash = secret_hash(cookie);
        self.store.read(|db| {
            let expired =
                || ServiceError::unauthenticated("session_expired", "please sign in again");
            let s = db.session(&hash)?.ok_or_else(expired)?;
            if s.expires_at < now {
                return Err(expired());
            }
            let u = db.user_by_id(s.user_id)?.ok_or_else(expired)?;
            if u.disabled_at.is_some() {
                return Err(expired());
            }
            Ok((actor_of(&u), s.csrf_token))
        })
    }

    pub fn logout(&self, cookie: &str) -> Result<()> {
        let hash = secret_hash(cookie);
        Ok(self.store.write(|db| db.delete_session(&hash))?)
    }

    // ---- users ----

    pub fn list_users(&self, actor: &Actor) -> Result<Vec<UserView>> {
        authorize(actor.role, Action::ViewUsers)?;
        let users = self.store.read(|db| db.list_users())?;
        Ok(users.iter().map(UserView::from).collect())
    }

    pub fn me(&self, actor: &Actor) -> Result<UserView> {
        let user = self
            .store
            .read(|db| db.user_by_name(&actor.username))?
            .ok_or_else(|| ServiceError::not_found("unknown_user", "you are not a user"))?;
        Ok(UserView::from(&user))
    }

    /// Creates a user. Without a password, Steward generates one and returns it once.
    pub fn create_user(
        &self,
        actor: &Actor,
        username: &str,
        role: &str,
        password: Option<&str>,
    ) -> Result<CreatedUser> {
        authorize(actor.role, Action::ManageUsers)?;
        let username = Username::parse(username)?;
        let role: Role = role.parse()?;
        let (password, generated) = match password {
            Some(p) => {
                check_password_rules(p)?;
                (p.to_owned(), None)
            }
            None => {
                let p = random_hex(12);
                (p.clone(), Some(p))
            }
        };
        let hash = hash_password(&password)?;
        let now = self.now();
        let user = self.store.write(|db| {
            let user = db
                .insert_user(
                    &NewUser {
                        username: username.to_string(),
                        role,
                        password_hash: hash,
                    },
                    now,
                )?
                .ok_or_else(|| {
                    ServiceError::conflict(
                        "user_exists",
                        format!("a user named {username} already exists"),
                    )
                })?;
            db.audit(
                &audit_entry(
                    actor,
                    "user.create",
                    username.as_str(),
                    json!({"after": {"role": role.as_str()}}),
                ),
                now,
            )?;
            Ok::<_, ServiceError>(user)
        })?;
        Ok(CreatedUser {
            user: UserView::from(&user),
            generated_password: generated,
        })
    }

    /// Changes a user's role and/or disables or re-enables them. The last active System
    /// Administrator can be neither demoted nor disabled.
    pub fn update_user(
        &self,
        actor: &Actor,
        username: &str,
        role: Option<&str>,
        disabled: Option<bool>,
    ) -> Result<UserView> {
        authorize(actor.role, Action::ManageUsers)?;
        let role: Option<Role> = role.map(str::parse).transpose()?;
        let now = self.now();
        self.store.write(|db| {
            let mut user = db
                .user_by_name(username)?
                .ok_or_else(|| ServiceError::not_found("unknown_user", format!("there is no user named {username:?}")))?;
            let before = UserView::from(&user);
            if let Some(r) = role {
                user.role = r;
            }
            if let Some(d) = disabled {
                user.disabled_at = if d { user.disabled_at.or(Some(now)) } else { None };
            }
            let was_admin = before.role == Role::SystemAdministrator.as_str() && !before.disabled;
            let is_admin = user.role == Role::SystemAdministrator && user.disabled_at.is_none();
            if was_admin && !is_admin && db.count_active_admins()? <= 1 {
                return Err(ServiceError::conflict(
                    "last_administrator",
                    format!("{username} is the last active System Administrator; make another user one first"),
                ));
            }
            db.update_user(&user)?;
            let after = UserView::from(&user);
            db.audit(
                &audit_entry(actor, "user.update", username, json!({"before": before, "after": after})),
                now,
            )?;
            Ok(after)
        })
    }

    /// Changes the actor's own password after checking the current one.
    pub fn change_password(&self, actor: &Actor, current: &str, new: &str) -> Result<()> {
        check_password_rules(new)?;
        let user = self
            .store
            .read(|db| db.user_by_name(&actor.username))?
            .ok_or_else(|| ServiceError::not_found("unknown_user", "you are not a user"))?;
        if !verify_password(current, &user.password_hash) {
            return Err(ServiceError::invalid(
                "wrong_password",
                "the current password is wrong",
            ));
        }
        let hash = hash_password(new)?;
        let now = self.now();
        self.store.write(|db| {
            let mut u = user.clone();
            u.password_hash = hash;
            db.update_user(&u)?;
            db.audit(
                &audit_entry(actor, "user.password", &actor.username, json!({})),
                now,
            )?;
            Ok::<_, ServiceError>(())
        })
    }

    // ---- API tokens ----

    pub fn create_token(&self, actor: &Actor, name: &str) -> Result<CreatedToken> {
        authorize(actor.role, Action::ManageOwnTokens)?;
        let name = token_name(name)?;
        let user_id = actor
            .user_id
            .ok_or_else(|| ServiceError::invalid("no_user", "System cannot own API tokens"))?;
        let secret = new_token_secret();
        let now = self.now();
        let token = self.store.write(|db| {
            let t = db.insert_token(user_id, &name, &secret_hash(&secret), now)?;
            db.audit(
                &audit_entry(
                    actor,
                    "token.create",
                    &actor.username,
                    json!({"after": {"id": t.id, "name": name}}),
                ),
                now,
            )?;
            Ok::<_, ServiceError>(t)
        })?;
        Ok(CreatedToken {
            token: token.into(),
            secret,
        })
    }

    /// The actor's tokens, or everyone's with `all` (System Administrators only).
    pub fn list_tokens(&self, actor: &Actor, all: bool) -> Result<Vec<TokenView>> {
        authorize(
            actor.role,
            if all {
                Action::ManageAllTokens
            } else {
                Action::ManageOwnTokens
            },
        )?;
        let filter = if all { None } else { actor.user_id };
        let rows = self.store.read(|db| db.list_tokens(filter))?;
        Ok(rows.into_iter().map(TokenView::from).collect())
    }

    /// Revokes a token: one's own, or anyone's for a System Administrator.
    pub fn revoke_token(&self, actor: &Actor, id: i64) -> Result<TokenView> {
        authorize(actor.role, Action::ManageOwnTokens)?;
        let now = self.now();
        self.store.write(|db| {
            let token = db.token_by_id(id)?.ok_or_else(|| {
                ServiceError::not_found("unknown_token", format!("there is no API token {id}"))
            })?;
            if Some(token.user_id) != actor.user_id {
                authorize(actor.role, Action::ManageAllTokens)?;
            }
            if token.revoked_at.is_some() {
                return Err(ServiceError::conflict(
                    "already_revoked",
                    format!("API token {id} is already revoked"),
                ));
            }
            db.revoke_token(id, now)?;
            db.audit(
                &audit_entry(
                    actor,
                    "token.revoke",
                    &token.username,
                    json!({"before": {"id": id, "name": token.name}}),
                ),
                now,
            )?;
            Ok(db
                .token_by_id(id)?
                .map(TokenView::from)
                .expect("token just read"))
        })
    }
}

impl Services {
    /// Exchanges a username and password for a new API token (for `steward login` and for
    /// users whose tokens an administrator does not hand out).
    pub fn token_for_credentials(
        &self,
        username: &str,
        password: &str,
        name: &str,
    ) -> Result<CreatedToken> {
        self.token_for_credentials_from(username, password, name, None)
    }

    /// [`Services::token_for_credentials`] from client address `client`.
    pub fn token_for_credentials_from(
        &self,
        username: &str,
        password: &str,
        name: &str,
        client: Option<IpAddr>,
    ) -> Result<CreatedToken> {
        let name = token_name(name)?;
        let user = self.check_credentials(username, password, client)?;
        self.create_token(&actor_of(&user), &name)
    }

    /// The one password check of the admin center and the API, with the sign-in limits
    /// (`self.login`): a locked account or address is refused (`429 login_throttled`) before
    /// the password is looked at; each failure is counted and audited, and the failure that
    /// reaches a limit locks and is audited too; a success clears the account's failures.
    ///
    /// An attempt is counted as a failure before its password is checked (and uncounted if it
    /// was right), so attempts sent in parallel cannot slip past the limit while an earlier
    /// one is still being checked. Unknown and disabled users are counted like any other, so
    /// the answers do not tell which accounts exist.
    fn check_credentials(
        &self,
        username: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<UserRow> {
        let limits = self.login;
        let now = self.now();
        let account = account_key(username);
        let address = client.map(address_key);
        let keys: Vec<(SignInScope, &str)> = std::iter::once((SignInScope::Account, &*account))
            .chain(address.as_deref().map(|a| (SignInScope::Address, a)))
            .collect();
        let pending = self.store.write(|db| {
            db.prune_login_throttle(now - limits.window.max(limits.lockout))?;
            for (scope, key) in &keys {
                if let Some(until) = db.login_lock(scope.as_str(), key, now)? {
                    return Err(throttled(*scope, key, until, now));
                }
            }
            keys.iter()
                .map(|(scope, key)| Ok(db.insert_login_failure(scope.as_str(), key, now)?))
                .collect::<Result<Vec<i64>>>()
        })?;

        let user = self.store.read(|db| db.user_by_name(username))?;
        // Verify against a dummy hash for unknown users so timing does not reveal them.
        let ok = match &user {
            Some(u) => verify_password(password, &u.password_hash),
            None => {
                verify_password(
                    password,
                    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0000000000000000000000000000000000000000000",
                );
                false
            }
        };
        let now = self.now();
        match user {
            Some(u) if ok && u.disabled_at.is_none() => {
                self.store.write(|db| {
                    // A success resets the account's count; the address keeps its other
                    // failures (one good account does not excuse guessing at others).
                    db.clear_login_failures(SignInScope::Account.as_str(), &account)?;
                    for id in pending.iter().skip(1) {
                        db.delete_login_failure(*id)?;
                    }
                    Ok::<_, ServiceError>(())
                })?;
                Ok(u)
            }
            _ => Err(self.store.write(|db| {
                let since = now - limits.window;
                let shown = audit_name(username);
                let mut failures = serde_json::Map::new();
                let mut locked = Vec::new();
                for (scope, key) in &keys {
                    let n = db.count_login_failures(scope.as_str(), key, since)?;
                    failures.insert(scope.as_str().into(), json!(n));
                    if limits.locks(*scope, n) {
                        locked.push((*scope, *key, n));
                    }
                }
                db.audit(
                    &NewAudit {
                        actor: "anonymous".into(),
                        action: "session.login_failed".into(),
                        target: shown.clone(),
                        details: json!({"address": address, "failures": failures}),
                    },
                    now,
                )?;
                let until = now + limits.lockout;
                // Every limit reached locks (the account and the address may both be due).
                for (scope, key, n) in &locked {
                    db.lock_login(scope.as_str(), key, now, until)?;
                    // The lock now stands for these failures: after it, the count starts again.
                    db.clear_login_failures(scope.as_str(), key)?;
                    let target = match scope {
                        SignInScope::Account => shown.clone(),
                        SignInScope::Address => (*key).to_owned(),
                    };
                    db.audit(
                        &audit_entry(
                            &Actor::system(),
                            "session.login_locked",
                            &target,
                            json!({"scope": scope.as_str(), "failures": n, "until": until, "address": address}),
                        ),
                        now,
                    )?;
                    tracing::warn!(scope = scope.as_str(), key, failures = n, %until, "sign-in locked after failed attempts");
                }
                Ok::<_, ServiceError>(match locked.first() {
                    Some((scope, key, _)) => throttled(*scope, key, until, now),
                    None => ServiceError::unauthenticated(
                        "invalid_credentials",
                        "the username or password is wrong",
                    ),
                })
            })?),
        }
    }
}

/// Reads the sign-in limits from the configuration.
pub fn login_limits(c: &Config) -> std::result::Result<SignInLimits, ConfigError> {
    for (name, minutes) in [
        (
            "login_failure_window_minutes",
            c.login_failure_window_minutes,
        ),
        ("login_lockout_minutes", c.login_lockout_minutes),
    ] {
        if !(1..=1440).contains(&minutes) {
            return Err(ConfigError::new(format!(
                "{name} must be 1–1440 minutes (got {minutes})"
            )));
        }
    }
    Ok(SignInLimits {
        account_failures: c.login_account_failures,
        address_failures: c.login_address_failures,
        window: Duration::minutes(c.login_failure_window_minutes.into()),
        lockout: Duration::minutes(c.login_lockout_minutes.into()),
    })
}

fn throttled(
    scope: SignInScope,
    key: &str,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> ServiceError {
    ServiceError::new(
        ErrorKind::Throttled,
        "login_throttled",
        SignInLocked {
            scope,
            key: key.to_owned(),
            until,
            now,
        }
        .to_string(),
    )
}

/// The account a sign-in counts against: the username as given (at most 100 characters).
fn account_key(username: &str) -> String {
    username.chars().take(100).collect()
}

/// The client address a sign-in counts against: an IPv4 address, or an IPv6 client's /64
/// (one host usually has a whole /64 to pick addresses from).
fn address_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{prefix}/64")
        }
    }
}

/// How a typed username appears in the audit log: as typed if it is a valid username, else
/// its printable ASCII with `?` for anything else (anyone can type anything here).
fn audit_name(username: &str) -> String {
    if Username::parse(username).is_ok() {
        return username.to_owned();
    }
    username
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}
