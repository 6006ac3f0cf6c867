//! The restore drills API: the fleet view, running a drill now, one drill, an instance's
//! drills. Each handler is annotated for the OpenAPI document with every status it returns.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiActor, ApiErrorBody, ApiJson, ApiPath, ApiQuery};
use crate::SharedState;
use crate::error::ServiceError;
use crate::services::drills::{DrillFleetView, DrillView};

type ApiResult<T> = Result<T, ServiceError>;

/// Adds the drills routes.
pub fn routes(r: OpenApiRouter<SharedState>) -> OpenApiRouter<SharedState> {
    r.routes(routes!(drill_fleet, run_drill))
        .routes(routes!(show_drill))
        .routes(routes!(instance_drills))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FleetQuery {
    /// A passed drill older than this many days counts as stale (1–3650). Default: twice the
    /// schedule's period in days (2 for `daily`), or 7 when scheduled drills are off.
    pub stale_days: Option<i64>,
    /// `true`: only instances whose last drill failed.
    pub failed: Option<bool>,
    /// Only names containing this (case-insensitive).
    pub q: Option<String>,
    /// Instances on one page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Instances to skip: the previous page's `next_offset` (default 0).
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunDrillRequest {
    /// The instance whose backup is drilled.
    pub instance: String,
    /// The backup to drill (one of the instance's completed backups); its newest completed
    /// backup when omitted.
    pub backup_id: Option<i64>,
}

/// The instances whose last restore drill failed, is older than `stale_days`, or that were
/// never drilled.
#[utoipa::path(get, path = "/api/v1/drills", tag = "drills", params(FleetQuery),
    responses((status = 200, body = DrillFleetView),
              (status = 400, description = "`invalid_stale_days`, `invalid_limit` (not from 1 to 1000), `invalid_offset` (negative) or `invalid_query`", body = ApiErrorBody),
              (status = 401, body = ApiErrorBody), (status = 403, body = ApiErrorBody)))]
pub async fn drill_fleet(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiQuery(q): ApiQuery<FleetQuery>,
) -> ApiResult<Json<DrillFleetView>> {
    let limit = super::handlers::limit(
        q.limit,
        super::handlers::DEFAULT_PAGE,
        crate::services::MAX_PAGE as i64,
    )? as u64;
    let offset = match q.offset {
        None => 0,
        Some(n) if n >= 0 => n as u64,
        Some(n) => {
            return Err(crate::error::ServiceError::invalid(
                "invalid_offset",
                format!("offset must be 0 or more (got {n})"),
            ));
        }
    };
    let query = crate::services::drills::DrillFleetQuery {
        stale_days: q.stale_days,
        failed_only: q.failed.unwrap_or(false),
        contains: q.q,
        offset,
        limit: Some(limit),
    };
    st.run(move |s| s.drill_fleet_view(&a, &query))
        .await
        .map(Json)
}

/// Queues a restore drill of an instance's backup now. The drill worker runs it beside the
/// job queue; follow it with `GET /api/v1/drills/{id}`.
#[utoipa::path(post, path = "/api/v1/drills", tag = "drills", request_body = RunDrillRequest,
    responses((status = 202, description = "Queued", body = DrillView),
              (status = 400, description = "`malformed_json`", body = ApiErrorBody),
              (status = 401, body = ApiErrorBody), (status = 403, body = ApiErrorBody),
              (status = 404, description = "`unknown_instance` or `unknown_backup`", body = ApiErrorBody),
              (status = 409, description = "`no_backup`, `backup_not_drillable` or `drill_in_progress`", body = ApiErrorBody)))]
pub async fn run_drill(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiJson(req): ApiJson<RunDrillRequest>,
) -> ApiResult<(StatusCode, Json<DrillView>)> {
    st.run(move |s| s.run_drill(&a, &req.instance, req.backup_id))
        .await
        .map(|v| (StatusCode::ACCEPTED, Json(v)))
}

/// One restore drill: its state and progress while it runs, its findings once it ended.
#[utoipa::path(get, path = "/api/v1/drills/{id}", tag = "drills",
    params(("id" = i64, Path, description = "Drill id")),
    responses((status = 200, body = DrillView),
              (status = 400, description = "`invalid_path`", body = ApiErrorBody),
              (status = 401, body = ApiErrorBody), (status = 403, body = ApiErrorBody),
              (status = 404, description = "`unknown_drill`", body = ApiErrorBody)))]
pub async fn show_drill(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<DrillView>> {
    st.run(move |s| s.show_drill(&a, id)).await.map(Json)
}

/// An instance's restore drills, newest first (at most 200).
#[utoipa::path(get, path = "/api/v1/instances/{name}/drills", tag = "drills",
    params(("name" = String, Path, description = "Instance name")),
    responses((status = 200, body = Vec<DrillView>),
              (status = 400, description = "`invalid_path`", body = ApiErrorBody),
              (status = 401, body = ApiErrorBody), (status = 403, body = ApiErrorBody),
              (status = 404, description = "`unknown_instance`", body = ApiErrorBody)))]
pub async fn instance_drills(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Vec<DrillView>>> {
    st.run(move |s| s.list_drills(&a, Some(&name)))
        .await
        .map(Json)
}
