//! Point-in-time restore API: an instance's restorable range, and a restore to a moment.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiActor, ApiErrorBody, ApiJson, ApiPath};
use crate::SharedState;
use crate::error::ServiceError;
use crate::services::capture::{RangeView, RestoreAtStarted};
use crate::services::workitems::parse_moment;

type ApiResult<T> = Result<T, ServiceError>;

/// Adds the point-in-time routes.
pub fn routes(r: OpenApiRouter<SharedState>) -> OpenApiRouter<SharedState> {
    r.routes(routes!(backup_range)).routes(routes!(restore_at))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreAtRequest {
    /// The instance whose past state is restored.
    pub instance: String,
    /// The moment (RFC 3339, any offset): the database as committed at the last commit at or
    /// before it. Must lie in the instance's restorable range (`GET
    /// /api/v1/instances/{name}/range`).
    pub at: String,
    /// The sandbox that receives it (unavailable while the restore runs; its documents are
    /// not touched).
    pub target: String,
}

/// What an instance can be restored to: the spans continuous capture covers ("restorable from
/// X to Y"), and the gaps between them with their reasons.
#[utoipa::path(get, path = "/api/v1/instances/{name}/range", tag = "backups",
    params(("name" = String, Path, description = "Instance name")),
    responses((status = 200, body = RangeView),
              (status = 401, body = ApiErrorBody), (status = 403, body = ApiErrorBody),
              (status = 404, description = "`unknown_instance`", body = ApiErrorBody)))]
pub async fn backup_range(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<RangeView>> {
    st.run(move |s| s.backup_range(&a, &name)).await.map(Json)
}

/// Restores an instance as it was at a moment into a sandbox, as a job (follow it with `GET
/// /api/v1/jobs/{id}`).
#[utoipa::path(post, path = "/api/v1/restores", tag = "backups", request_body = RestoreAtRequest,
    responses((status = 202, description = "Started", body = RestoreAtStarted),
              (status = 400, description = "`invalid_time` or `malformed_json`", body = ApiErrorBody),
              (status = 401, body = ApiErrorBody), (status = 403, body = ApiErrorBody),
              (status = 404, description = "`unknown_instance`", body = ApiErrorBody),
              (status = 409, description = "`moment_in_future`, `moment_before_retention`, `moment_in_gap`, `moment_outside_range`, `never_captured`, `target_not_sandbox` or `instance_busy`", body = ApiErrorBody)))]
pub async fn restore_at(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiJson(req): ApiJson<RestoreAtRequest>,
) -> ApiResult<(StatusCode, Json<RestoreAtStarted>)> {
    let at = parse_moment("at", &req.at)?;
    st.run(move |s| s.restore_to_moment(&a, &req.instance, at, &req.target))
        .await
        .map(|v| (StatusCode::ACCEPTED, Json(v)))
}
