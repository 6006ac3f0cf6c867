//! The workitems API: one handler per operation, each annotated for the OpenAPI document.

use utoipa_axum::router::OpenApiRouter;

use crate::SharedState;

/// Adds the workitems routes.
pub fn routes(r: OpenApiRouter<SharedState>) -> OpenApiRouter<SharedState> {
    r
}
