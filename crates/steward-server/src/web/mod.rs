//! The web admin center (server-rendered). Placeholder until the admin center lands.

use crate::SharedState;

pub fn router(state: SharedState) -> axum::Router {
    axum::Router::new().with_state(state)
}
