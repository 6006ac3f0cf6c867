//! The updates tab of the admin center.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;

use chrono::{DateTime, Utc};

use super::session::WebSession;
use crate::SharedState;

/// The updates tab's routes.
pub fn routes() -> Router<SharedState> {
    Router::new().route("/updates", get(page))
}

async fn page(State(st): State<SharedState>, session: WebSession) -> Response {
    super::section(
        &st,
        &session,
        "updates",
        "Updates",
        "Moving instances to later releases, scheduled, approved and safe to roll back.",
        &[
            "Available updates per instance under the release policy (n, n-1, n-2).",
            "Scheduling with a preferred and an alternate window, and rescheduling until the update starts.",
            "Approval by a System Administrator.",
            "Each update's stages and status, with a backup before and a rollback on failure.",
        ],
    )
}

/// `t` in the IANA time zone `zone` (e.g. `Europe/Paris`), as `2027-01-10 22:00 CET`;
/// `None` when `zone` is not a time zone Steward knows.
pub fn time_in_zone(t: DateTime<Utc>, zone: &str) -> Option<String> {
    let tz: chrono_tz::Tz = zone.trim().parse().ok()?;
    Some(t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string())
}
