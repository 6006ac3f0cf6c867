//! The workitems tab of the admin center.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;

use super::session::WebSession;
use crate::SharedState;

/// The workitems tab's routes.
pub fn routes() -> Router<SharedState> {
    Router::new().route("/workitems", get(page))
}

async fn page(State(st): State<SharedState>, session: WebSession) -> Response {
    super::section(
        &st,
        &session,
        "workitems",
        "Work items",
        "Requested, scheduled operations with their own lifecycle.",
        &[
            "Database refreshes: a source instance's database at a point in time copied into a sandbox.",
            "Requests at least 24 hours ahead, which you can reschedule or cancel before they start.",
            "Each work item's status and history.",
        ],
    )
}
