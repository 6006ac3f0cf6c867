//! The updates tab of the admin center.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;

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
