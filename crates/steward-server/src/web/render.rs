//! Templates and responses: the minijinja environment with every template embedded in the
//! binary, the layout context every page shares (signed-in user, CSRF token, navigation,
//! notice banner) and the helpers that turn a rendered page into an HTTP response.
//! Templates are `*.html`, so minijinja escapes every value they print.

use std::sync::OnceLock;

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::{Environment, UndefinedBehavior, Value, context};

use super::assets;
use super::session::{Cookies, WebSession};
use crate::AppState;
use crate::error::ServiceError;

/// Every template, embedded at compile time.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("login.html", include_str!("../../templates/login.html")),
    (
        "instances.html",
        include_str!("../../templates/instances.html"),
    ),
    (
        "instance.html",
        include_str!("../../templates/instance.html"),
    ),
    ("delete.html", include_str!("../../templates/delete.html")),
    ("audit.html", include_str!("../../templates/audit.html")),
    ("backups.html", include_str!("../../templates/backups.html")),
    (
        "backup_edit.html",
        include_str!("../../templates/backup_edit.html"),
    ),
    (
        "backup_delete.html",
        include_str!("../../templates/backup_delete.html"),
    ),
    (
        "restore_target.html",
        include_str!("../../templates/restore_target.html"),
    ),
    (
        "restore_review.html",
        include_str!("../../templates/restore_review.html"),
    ),
    // Restore to a moment (pitr.rs).
    (
        "backups_pitr.html",
        include_str!("../../templates/backups_pitr.html"),
    ),
    (
        "pitr_range.html",
        include_str!("../../templates/pitr_range.html"),
    ),
    (
        "restore_at_review.html",
        include_str!("../../templates/restore_at_review.html"),
    ),
    (
        "notifications.html",
        include_str!("../../templates/notifications.html"),
    ),
    (
        "notifications_confirm.html",
        include_str!("../../templates/notifications_confirm.html"),
    ),
    ("error.html", include_str!("../../templates/error.html")),
    ("paging.html", include_str!("../../templates/paging.html")),
    ("drills.html", include_str!("../../templates/drills.html")),
    ("nodes.html", include_str!("../../templates/nodes.html")),
    // Updates tab.
    ("updates.html", include_str!("../../templates/updates.html")),
    (
        "updates_instance.html",
        include_str!("../../templates/updates_instance.html"),
    ),
    (
        "updates_stages.html",
        include_str!("../../templates/updates_stages.html"),
    ),
    (
        "updates_rehearsals.html",
        include_str!("../../templates/updates_rehearsals.html"),
    ),
    (
        "updates_timeline.html",
        include_str!("../../templates/updates_timeline.html"),
    ),
    (
        "updates_reschedule.html",
        include_str!("../../templates/updates_reschedule.html"),
    ),
    (
        "updates_confirm.html",
        include_str!("../../templates/updates_confirm.html"),
    ),
    // Work items tab.
    (
        "workitems.html",
        include_str!("../../templates/workitems.html"),
    ),
    (
        "workitems_refresh.html",
        include_str!("../../templates/workitems_refresh.html"),
    ),
    (
        "workitems_detail.html",
        include_str!("../../templates/workitems_detail.html"),
    ),
    (
        "workitems_cancel.html",
        include_str!("../../templates/workitems_cancel.html"),
    ),
];

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("template {name} does not parse: {e:#}"));
        }
        env.add_filter("filesize", |bytes: u64| format_size(bytes));
        env.add_filter("query", |value: &str| query_value(value));
        env.add_global("css_url", assets::url("steward.css"));
        env.add_global("favicon_url", assets::url("favicon.svg"));
        env
    })
}

/// Renders `template` with exactly `ctx` (no layout context added); for unit tests.
#[cfg(test)]
pub fn render_bare(template: &str, ctx: Value) -> String {
    environment()
        .get_template(template)
        .and_then(|t| t.render(ctx))
        .unwrap_or_else(|e| panic!("{template}: {e:#}"))
}

/// `bytes` the way people read storage: `512 B`, `1.2 MiB`, `3.0 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: &[&str] = &["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // Move up while the value would print as 1024.0 or more in this unit.
    while value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `value` percent-encoded for a URL query string (everything but unreserved characters).
pub fn query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A service message as a sentence for a banner: capital first letter, final full stop.
pub fn sentence(message: &str) -> String {
    let mut chars = message.trim().chars();
    let mut out: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => return String::new(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// [`sentence`] for a message that may start with one of `names` (instance names are
/// lowercase and must stay as written): such a message keeps its first letter.
pub fn sentence_naming(message: &str, names: &[&str]) -> String {
    let trimmed = message.trim();
    let starts_with_name = names.iter().any(|n| {
        !n.is_empty()
            && trimmed.starts_with(n)
            && !trimmed[n.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '-')
    });
    if !starts_with_name {
        return sentence(trimmed);
    }
    let mut out = trimmed.to_owned();
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// What the layout shows around a page.
pub struct Page<'a> {
    pub session: Option<&'a WebSession>,
    /// The navigation tab to highlight (`instances`, `backups`, ..., or `""`).
    pub nav: &'static str,
    pub title: &'a str,
    /// The notice banner; from the flash cookie unless set.
    pub notice: Option<String>,
}

impl<'a> Page<'a> {
    pub fn new(session: &'a WebSession, nav: &'static str, title: &'a str) -> Self {
        Self {
            session: Some(session),
            nav,
            title,
            notice: session.flash.clone(),
        }
    }

    pub fn anonymous(title: &'a str) -> Self {
        Self {
            session: None,
            nav: "",
            title,
            notice: None,
        }
    }

    pub fn with_notice(mut self, notice: Option<String>) -> Self {
        self.notice = notice;
        self
    }

    /// Renders `template` with the layout context and `ctx`, as a complete response.
    pub fn render(
        &self,
        state: &AppState,
        status: StatusCode,
        template: &str,
        ctx: Value,
    ) -> Response {
        let user = self.session.map(|s| {
            context! {
                name => s.actor.username,
                role => s.actor.role.label(),
            }
        });
        // The Backup & Restore tab lists every recent alert itself.
        let latest_alert = self
            .session
            .and_then(|s| s.alert.as_ref())
            .filter(|_| self.nav != "backups");
        let full = context! {
            title => self.title,
            nav => self.nav,
            user => user,
            csrf => self.session.map(|s| s.csrf.as_str()),
            notice => self.notice,
            latest_alert => latest_alert,
            ..ctx
        };
        let mut response = match environment()
            .get_template(template)
            .and_then(|t| t.render(full))
        {
            Ok(html) => html_response(status, html),
            Err(e) => {
                tracing::error!(template, error = %format!("{e:#}"), "template failed");
                plain_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Steward could not show this page.",
                )
            }
        };
        if self.notice.is_some() {
            // The notice has been shown: forget it.
            let clear = Cookies::new(&state.config).clear(super::session::FLASH_COOKIE);
            response.headers_mut().append(SET_COOKIE, clear);
        }
        response
    }

    /// A page that only says what went wrong, with `error.html`.
    pub fn error(
        &self,
        state: &AppState,
        status: StatusCode,
        heading: &str,
        message: &str,
    ) -> Response {
        self.render(
            state,
            status,
            "error.html",
            context! { heading => heading, message => message },
        )
    }

    /// The error page for a failed service call, with the status its kind maps to.
    pub fn service_error(&self, state: &AppState, err: &ServiceError) -> Response {
        let status = crate::api::status_of(err.kind);
        let heading = match status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::CONFLICT => "Not possible right now",
            StatusCode::BAD_REQUEST => "Cannot do that",
            _ => "Something went wrong",
        };
        self.error(state, status, heading, &sentence(&err.message))
    }
}

pub fn html_response(status: StatusCode, html: String) -> Response {
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A last-resort plain-text response (a template itself failed).
pub fn plain_error(status: StatusCode, message: &'static str) -> Response {
    (status, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1024), "1.0 KiB");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(1_258_291), "1.2 MiB");
        assert_eq!(format_size(1024 * 1024 - 1), "1.0 MiB", "no 1024.0 KiB");
        assert_eq!(format_size(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(format_size(5 * (1u64 << 40)), "5.0 TiB");
        assert_eq!(format_size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_value("prod-a"), "prod-a");
        assert_eq!(query_value("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn messages_become_sentences() {
        assert_eq!(
            sentence("the username or password is wrong"),
            "The username or password is wrong."
        );
        assert_eq!(sentence("Done!"), "Done!");
        assert_eq!(sentence(""), "");
        assert_eq!(
            sentence_naming("prod-a is a production instance", &["prod-a"]),
            "prod-a is a production instance."
        );
        assert_eq!(
            sentence_naming("prod is busy", &["prod-a"]),
            "Prod is busy.",
            "only a whole name"
        );
        assert_eq!(
            sentence_naming("there is no instance", &["prod-a"]),
            "There is no instance."
        );
    }

    #[test]
    fn every_template_parses_and_escapes() {
        let env = environment();
        for (name, _) in TEMPLATES {
            env.get_template(name).expect(name);
        }
        let html = env
            .get_template("error.html")
            .unwrap()
            .render(context! {
                title => "t", nav => "", user => (), csrf => (), notice => (), latest_alert => (),
                heading => "<b>h</b>", message => "<script>alert(1)</script>",
            })
            .unwrap();
        assert!(html.contains("&lt;script&gt;alert(1)"), "{html}");
        assert!(!html.contains("<script>alert"), "{html}");
    }
}
