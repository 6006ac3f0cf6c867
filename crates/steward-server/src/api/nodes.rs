//! The nodes API: the Steward nodes sharing this control plane, with their health, instance
//! counts and running jobs. Annotated for the OpenAPI document with every status it returns.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiActor, ApiErrorBody};
use crate::SharedState;
use crate::error::ServiceError;
use crate::services::nodes::NodeView;

/// Adds the nodes routes.
pub fn routes(r: OpenApiRouter<SharedState>) -> OpenApiRouter<SharedState> {
    r.routes(routes!(list_nodes))
}

/// Every Steward node registered in this control plane, by name: `up` while it heartbeats,
/// `down` once its last heartbeat is older than `node_down_seconds`, `stopped` after a clean
/// stop; with its live instances and running jobs. Every role may list them.
#[utoipa::path(get, path = "/api/v1/nodes", tag = "nodes",
    responses((status = 200, body = Vec<NodeView>),
              (status = 401, body = ApiErrorBody), (status = 403, body = ApiErrorBody)))]
pub async fn list_nodes(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
) -> Result<Json<Vec<NodeView>>, ServiceError> {
    st.run(move |s| s.list_nodes(&a)).await.map(Json)
}
