//! Browser sessions, cookies and CSRF protection for the admin center.
//!
//! - `steward_session` holds the session id from `Services::login`; [`WebSession`] resolves
//!   it with `Services::session` on every request (no session: redirect to `/login`).
//! - Every form carries the session's CSRF token in a hidden `csrf` field; [`Posted`]
//!   compares it in constant time before the handler runs and answers 403 otherwise.
//! - The sign-in form has no session yet, so it uses a double-submit token: a random
//!   `steward_login_csrf` cookie that must equal the form's `csrf` field.
//! - `steward_flash` carries a one-time notice (hex-encoded) across a redirect.
//!
//! Every cookie is `HttpOnly; SameSite=Strict` and `Secure` when `secure_cookies` is on.

use axum::extract::{Form, FromRequest, FromRequestParts, Request};
use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::render::Page;
use crate::config::Config;
use crate::error::ErrorKind;
use crate::services::{Actor, Services};
use crate::{AppState, SharedState};

pub const SESSION_COOKIE: &str = "steward_session";
pub const LOGIN_CSRF_COOKIE: &str = "steward_login_csrf";
pub const FLASH_COOKIE: &str = "steward_flash";
/// The hidden form field every form carries.
pub const CSRF_FIELD: &str = "csrf";
/// What a refused form shows.
pub const CSRF_MESSAGE: &str =
    "This form has expired or did not come from Steward. Reload the page and try again.";

/// Whether the token a form sent equals the expected one, compared in constant time (the
/// time taken does not depend on where they differ). An empty expected token never matches.
pub fn csrf_matches(sent: &str, expected: &str) -> bool {
    let (sent, expected) = (sent.as_bytes(), expected.as_bytes());
    if expected.is_empty() || sent.len() != expected.len() {
        return false;
    }
    let diff = sent
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

/// A fresh random token for the sign-in form (32 bytes, hex).
pub fn random_token() -> String {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    hex::encode(buf)
}

/// The value of cookie `name` in the request, if any.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

/// Builds `Set-Cookie` values with the attributes every Steward cookie shares.
pub struct Cookies {
    secure: bool,
}

impl Cookies {
    pub fn new(config: &Config) -> Self {
        Self {
            secure: config.secure_cookies,
        }
    }

    /// `value` must be cookie-safe (Steward only sets hex strings).
    pub fn set(&self, name: &str, value: &str, max_age_secs: i64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let header = format!(
            "{name}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}"
        );
        HeaderValue::from_str(&header).expect("cookie values are hex")
    }

    pub fn clear(&self, name: &str) -> HeaderValue {
        self.set(name, "", 0)
    }

    /// A one-time notice for the next page.
    pub fn flash(&self, message: &str) -> HeaderValue {
        self.set(FLASH_COOKIE, &hex::encode(message.as_bytes()), 120)
    }
}

/// A `303 See Other` to `to`, with cookies to set.
pub fn redirect(to: &str, cookies: impl IntoIterator<Item = HeaderValue>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(
        LOCATION,
        HeaderValue::from_str(to).expect("redirect targets are paths"),
    );
    for c in cookies {
        headers.append(SET_COOKIE, c);
    }
    response
}

/// Redirect after a successful change, with the notice the next page shows.
pub fn redirect_with_notice(state: &AppState, to: &str, notice: &str) -> Response {
    redirect(to, [Cookies::new(&state.config).flash(notice)])
}

/// The signed-in user behind the request's session cookie. Without a live session the
/// request is answered with a redirect to `/login` (and a stale cookie is cleared).
pub struct WebSession {
    pub actor: Actor,
    /// The session's CSRF token, for the hidden `csrf` field of every form.
    pub csrf: String,
    /// The session cookie itself (for signing out).
    pub cookie: String,
    /// A notice left by the previous request (shown once).
    pub flash: Option<String>,
    /// The newest alert of the last day, for the banner above every page.
    pub alert: Option<AlertBanner>,
}

/// How long an alert stays in the banner above every page.
const ALERT_BANNER_HOURS: i64 = 24;

/// The newest alert (backup or restore finished or failed), as the layout shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AlertBanner {
    /// For the Dismiss form (`/alerts/{id}/dismiss`).
    pub id: i64,
    /// `info`, `success` or `error`
    pub level: String,
    pub message: String,
    pub instance: Option<String>,
    pub at: String,
}

/// The newest alert for `actor`'s audience that they have not dismissed, if it is less than
/// a day old. Best effort: the banner is a convenience, so a failure leaves it out rather
/// than failing the page.
fn latest_alert(services: &Services, actor: &Actor) -> Option<AlertBanner> {
    let since = services.now() - chrono::Duration::hours(ALERT_BANNER_HOURS);
    let alert = services
        .my_alerts_since(actor, Some(since), 1)
        .ok()?
        .into_iter()
        .next()?;
    Some(AlertBanner {
        id: alert.id,
        level: alert.level,
        message: super::render::sentence_naming(
            &alert.message,
            &[alert.instance.as_deref().unwrap_or("")],
        ),
        instance: alert.instance,
        at: alert.at.format("%Y-%m-%d %H:%M UTC").to_string(),
    })
}

impl WebSession {
    async fn resolve(parts: &Parts, state: &SharedState) -> Result<Self, Response> {
        let cookies = Cookies::new(&state.config);
        let Some(cookie) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(redirect("/login", []));
        };
        let lookup = cookie.clone();
        let resolved = state
            .run(move |s| {
                let (actor, csrf) = s.session(&lookup)?;
                let alert = latest_alert(s, &actor);
                Ok((actor, csrf, alert))
            })
            .await;
        match resolved {
            Ok((actor, csrf, alert)) => Ok(Self {
                actor,
                csrf,
                cookie,
                flash: flash_of(&parts.headers),
                alert,
            }),
            Err(e) if e.kind == ErrorKind::Unauthenticated => Err(redirect(
                "/login",
                [
                    cookies.clear(SESSION_COOKIE),
                    cookies.flash("Your session has ended. Sign in again."),
                ],
            )),
            Err(e) => Err(Page::anonymous("Error").service_error(state, &e)),
        }
    }
}

/// The notice in the request's flash cookie, if any.
pub fn flash_of(headers: &HeaderMap) -> Option<String> {
    let raw = cookie(headers, FLASH_COOKIE)?;
    let bytes = hex::decode(raw).ok()?;
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

impl FromRequestParts<SharedState> for WebSession {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        Self::resolve(parts, state).await
    }
}

/// A form posted by a signed-in user whose `csrf` field matched the session's token.
/// Anything else is answered before the handler runs: no session → redirect to `/login`;
/// a missing, wrong or unreadable token → 403 with [`CSRF_MESSAGE`].
pub struct Posted {
    pub session: WebSession,
    fields: Vec<(String, String)>,
}

impl Posted {
    /// The value of form field `name` (`""` when absent).
    pub fn field(&self, name: &str) -> &str {
        field(&self.fields, name)
    }
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// The 403 page for a form whose token did not match.
pub fn csrf_refused(state: &AppState, session: Option<&WebSession>) -> Response {
    let page = match session {
        Some(s) => Page::new(s, "", "Form expired"),
        None => Page::anonymous("Form expired"),
    };
    page.error(state, StatusCode::FORBIDDEN, "Form expired", CSRF_MESSAGE)
}

/// Reads a urlencoded body; an unreadable one has no fields (and so no token).
async fn form_fields(req: Request, state: &SharedState) -> Vec<(String, String)> {
    match Form::<Vec<(String, String)>>::from_request(req, state).await {
        Ok(Form(fields)) => fields,
        Err(_) => Vec::new(),
    }
}

impl FromRequest<SharedState> for Posted {
    type Rejection = Response;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let session = WebSession::resolve(&parts, state).await?;
        let fields = form_fields(Request::from_parts(parts, body), state).await;
        if !csrf_matches(field(&fields, CSRF_FIELD), &session.csrf) {
            tracing::warn!(user = %session.actor.username, "refused a form without a valid CSRF token");
            return Err(csrf_refused(state, Some(&session)));
        }
        Ok(Self { session, fields })
    }
}

/// The address of the client a request came from (the TCP peer), when the server was started
/// with connection info (`serve` is); the per-address sign-in limit counts it. Behind a reverse
/// proxy this is the proxy.
pub struct ClientAddress(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// The sign-in form, checked against the `steward_login_csrf` cookie (double submit).
pub struct LoginPosted {
    fields: Vec<(String, String)>,
}

impl LoginPosted {
    pub fn field(&self, name: &str) -> &str {
        field(&self.fields, name)
    }
}

impl FromRequest<SharedState> for LoginPosted {
    type Rejection = Response;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        let expected = cookie(req.headers(), LOGIN_CSRF_COOKIE).unwrap_or_default();
        let fields = form_fields(req, state).await;
        if !csrf_matches(field(&fields, CSRF_FIELD), &expected) {
            tracing::warn!("refused a sign-in form without a valid CSRF token");
            return Err(csrf_refused(state, None));
        }
        Ok(Self { fields })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_must_match_exactly() {
        let t = random_token();
        assert_eq!(t.len(), 64);
        assert!(csrf_matches(&t, &t));
        assert!(!csrf_matches("", &t), "missing token");
        assert!(!csrf_matches(&t[..63], &t), "truncated token");
        assert!(!csrf_matches(&format!("{t}0"), &t), "longer token");
        let mut wrong = t.clone().into_bytes();
        wrong[63] = if wrong[63] == b'0' { b'1' } else { b'0' };
        assert!(
            !csrf_matches(std::str::from_utf8(&wrong).unwrap(), &t),
            "last byte differs"
        );
        assert!(
            !csrf_matches("", ""),
            "an empty expected token never matches"
        );
        assert_ne!(random_token(), t, "tokens are random");
    }

    #[test]
    fn cookies_are_read_from_every_cookie_header() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; steward_session=abc"));
        h.append(COOKIE, HeaderValue::from_static("steward_flash=6869"));
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "a").as_deref(), Some("1"));
        assert_eq!(cookie(&h, "steward"), None);
        assert_eq!(flash_of(&h).as_deref(), Some("hi"));
    }

    #[test]
    fn cookies_carry_the_security_attributes() {
        let secure = Cookies { secure: true }.set(SESSION_COOKIE, "ab", 60);
        assert_eq!(
            secure.to_str().unwrap(),
            "steward_session=ab; Path=/; Max-Age=60; HttpOnly; SameSite=Strict; Secure"
        );
        let plain = Cookies { secure: false }.clear(SESSION_COOKIE);
        assert_eq!(
            plain.to_str().unwrap(),
            "steward_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
        );
    }
}
