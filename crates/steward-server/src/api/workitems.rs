//! The workitems API: one handler per operation, each annotated for the OpenAPI document.
//! The contract is `/work/notes/workitems-contract.md` (documented in `docs/workitems.md`).

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
use crate::services::workitems::{
    PointInTime, RefreshRequest, RestorePointsView, WorkItemView, parse_moment, parse_point,
};

type ApiResult<T> = Result<T, ServiceError>;

/// Adds the workitems routes.
pub fn routes(r: OpenApiRouter<SharedState>) -> OpenApiRouter<SharedState> {
    r.routes(routes!(list_work_items))
        .routes(routes!(request_refresh))
        .routes(routes!(show_work_item))
        .routes(routes!(accept_work_item))
        .routes(routes!(reschedule_work_item))
        .routes(routes!(cancel_work_item))
        .routes(routes!(restore_points))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListWorkItemsQuery {
    /// `submitted`, `accepted`, `in_progress`, `succeeded`, `failed` or `cancelled`
    pub status: Option<String>,
    /// Only work items whose source or target is this instance.
    pub instance: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequestBody {
    /// The instance whose database is copied.
    pub source: String,
    /// The sandbox whose database is replaced.
    pub target: String,
    /// The moment to copy (RFC 3339): the newest restore point at or before it. Omitted,
    /// `null` or `"latest"`: a fresh copy of the source at window start.
    pub at: Option<String>,
    /// When the downtime window starts (RFC 3339), at least the lead time from now.
    pub window_start: String,
    /// `true`: the requester acknowledges that the target's database is erased and cannot be
    /// recovered from the refresh, that the target is unavailable until the refresh
    /// completes, and that its documents folder is not touched.
    pub acknowledge: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleBody {
    /// The new window start (RFC 3339).
    pub window_start: Option<String>,
    /// The new point in time: an RFC 3339 moment or `"latest"`.
    pub at: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/workitems", tag = "workitems", params(ListWorkItemsQuery),
    responses((status = 200, body = Vec<WorkItemView>),
              (status = 400, description = "`invalid_query`, `invalid_value` (the status)", body = ApiErrorBody)))]
pub async fn list_work_items(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiQuery(q): ApiQuery<ListWorkItemsQuery>,
) -> ApiResult<Json<Vec<WorkItemView>>> {
    st.run(move |s| s.list_work_items(&a, q.status.as_deref(), q.instance.as_deref()))
        .await
        .map(Json)
}

#[utoipa::path(post, path = "/api/v1/workitems/refresh", tag = "workitems", request_body = RefreshRequestBody,
    responses((status = 201, body = WorkItemView),
              (status = 400, description = "`invalid_time`, a window or point in time that breaks a rule, `malformed_json`", body = ApiErrorBody),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_instance`", body = ApiErrorBody),
              (status = 409, description = "`overlapping_operation`, `release_too_old`, a target that is not an available sandbox; for a source continuous capture covers, a moment outside its range (`moment_in_gap`, `moment_outside_range`, `moment_before_retention`, `moment_in_future`), naming the range", body = ApiErrorBody)))]
pub async fn request_refresh(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiJson(req): ApiJson<RefreshRequestBody>,
) -> ApiResult<(StatusCode, Json<WorkItemView>)> {
    let at = match req.at.as_deref().map(parse_point).transpose()? {
        None | Some(PointInTime::Latest) => None,
        Some(PointInTime::At(t)) => Some(t),
    };
    let request = RefreshRequest {
        window_start: parse_moment("window_start", &req.window_start)?,
        source: req.source,
        target: req.target,
        at,
        acknowledge: req.acknowledge.unwrap_or(false),
    };
    st.run(move |s| s.request_refresh(&a, &request))
        .await
        .map(|v| (StatusCode::CREATED, Json(v)))
}

#[utoipa::path(get, path = "/api/v1/workitems/{id}", tag = "workitems",
    params(("id" = i64, Path, description = "Work item id", example = 1)),
    responses((status = 200, body = WorkItemView),
              (status = 404, description = "`unknown_work_item`", body = ApiErrorBody)))]
pub async fn show_work_item(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<WorkItemView>> {
    st.run(move |s| s.show_work_item(&a, id)).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/workitems/{id}/accept", tag = "workitems",
    params(("id" = i64, Path, description = "Work item id", example = 1)),
    responses((status = 200, body = WorkItemView),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_work_item`", body = ApiErrorBody),
              (status = 409, description = "`work_item_not_submitted`", body = ApiErrorBody)))]
pub async fn accept_work_item(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<WorkItemView>> {
    st.run(move |s| s.accept_work_item(&a, id)).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/workitems/{id}/reschedule", tag = "workitems",
    params(("id" = i64, Path, description = "Work item id", example = 1)), request_body = RescheduleBody,
    responses((status = 200, body = WorkItemView),
              (status = 400, description = "`nothing_to_change`, `invalid_time`, a window or point in time that breaks a rule, `malformed_json`", body = ApiErrorBody),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_work_item`", body = ApiErrorBody),
              (status = 409, description = "`overlapping_operation`, `release_too_old`, an item that has started or finished, a moment outside the source's capture range (`moment_in_gap`, `moment_outside_range`, `moment_before_retention`, `moment_in_future`)", body = ApiErrorBody)))]
pub async fn reschedule_work_item(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<RescheduleBody>,
) -> ApiResult<Json<WorkItemView>> {
    let window = req
        .window_start
        .as_deref()
        .map(|w| parse_moment("window_start", w))
        .transpose()?;
    let at = req.at.as_deref().map(parse_point).transpose()?;
    st.run(move |s| s.reschedule_work_item(&a, id, window, at))
        .await
        .map(Json)
}

#[utoipa::path(post, path = "/api/v1/workitems/{id}/cancel", tag = "workitems",
    params(("id" = i64, Path, description = "Work item id", example = 1)),
    responses((status = 200, body = WorkItemView),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_work_item`", body = ApiErrorBody),
              (status = 409, description = "an item that has started or finished", body = ApiErrorBody)))]
pub async fn cancel_work_item(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<WorkItemView>> {
    st.run(move |s| s.cancel_work_item(&a, id)).await.map(Json)
}

#[utoipa::path(get, path = "/api/v1/instances/{name}/restore-points", tag = "workitems",
    params(("name" = String, Path, description = "Instance name", example = "acme-sandbox")),
    responses((status = 200, body = RestorePointsView),
              (status = 404, description = "`unknown_instance`", body = ApiErrorBody)))]
pub async fn restore_points(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<RestorePointsView>> {
    st.run(move |s| s.restore_points(&a, &name)).await.map(Json)
}
