//! The notifications tab of the admin center.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;

use super::session::WebSession;
use crate::SharedState;

/// The notifications tab's routes.
pub fn routes() -> Router<SharedState> {
    Router::new().route("/notifications", get(page))
}

async fn page(State(st): State<SharedState>, session: WebSession) -> Response {
    super::section(
        &st,
        &session,
        "notifications",
        "Notifications",
        "Who hears about scheduled work, and when.",
        &[
            "Notification recipients for each instance.",
            "Reminders and the communications schedule before updates and refreshes.",
            "Messages sent, and to whom.",
        ],
    )
}
