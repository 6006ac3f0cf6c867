//! The updates API: one handler per operation, each annotated for the OpenAPI document.
//! Contract: `notes/updates-contract.md` (shared with the CLI and the admin center).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiActor, ApiErrorBody, ApiJson, ApiQuery};
use crate::SharedState;
use crate::error::ServiceError;
use crate::services::updates::{
    RehearsalView, RehearseRequest, RescheduleRequest, ScheduleRequest, UpdateNowRequest,
    UpdateOverview, UpdatePolicyDoc, UpdatePolicyView, UpdateView,
};

type ApiResult<T> = Result<T, ServiceError>;

/// Adds the updates routes.
pub fn routes(r: OpenApiRouter<SharedState>) -> OpenApiRouter<SharedState> {
    r.routes(routes!(instance_updates, schedule_update))
        .routes(routes!(approve_update))
        .routes(routes!(withdraw_update_approval))
        .routes(routes!(reschedule_update))
        .routes(routes!(cancel_update))
        .routes(routes!(update_now))
        .routes(routes!(rehearse_update))
        .routes(routes!(list_updates))
        .routes(routes!(show_update))
        .routes(routes!(get_update_policy, put_update_policy))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListUpdatesQuery {
    /// `scheduled`, `queued`, `in_progress`, `succeeded`, `failed`, `waiting` or `cancelled`
    pub status: Option<String>,
    /// Only this instance's updates.
    pub instance: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/instances/{name}/updates", tag = "updates",
    params(("name" = String, Path, description = "Instance name")),
    responses((status = 200, body = UpdateOverview), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn instance_updates(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    Path(name): Path<String>,
) -> ApiResult<Json<UpdateOverview>> {
    st.run(move |s| s.update_overview(&a, &name))
        .await
        .map(Json)
}

#[utoipa::path(post, path = "/api/v1/instances/{name}/updates", tag = "updates",
    params(("name" = String, Path, description = "Instance name")), request_body = ScheduleRequest,
    responses((status = 201, body = UpdateView), (status = 400, body = ApiErrorBody), (status = 403, body = ApiErrorBody),
              (status = 404, body = ApiErrorBody), (status = 409, body = ApiErrorBody)))]
pub async fn schedule_update(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<ScheduleRequest>,
) -> ApiResult<(StatusCode, Json<UpdateView>)> {
    st.run(move |s| s.schedule_update(&a, &name, &req))
        .await
        .map(|v| (StatusCode::CREATED, Json(v)))
}

#[utoipa::path(post, path = "/api/v1/instances/{name}/updates/approve", tag = "updates",
    params(("name" = String, Path, description = "Instance name")),
    responses((status = 200, body = UpdateView), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody), (status = 409, body = ApiErrorBody)))]
pub async fn approve_update(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    Path(name): Path<String>,
) -> ApiResult<Json<UpdateView>> {
    st.run(move |s| s.approve_update(&a, &name)).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/instances/{name}/updates/withdraw", tag = "updates",
    params(("name" = String, Path, description = "Instance name")),
    responses((status = 200, body = UpdateView), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody), (status = 409, body = ApiErrorBody)))]
pub async fn withdraw_update_approval(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    Path(name): Path<String>,
) -> ApiResult<Json<UpdateView>> {
    st.run(move |s| s.withdraw_update_approval(&a, &name))
        .await
        .map(Json)
}

#[utoipa::path(post, path = "/api/v1/instances/{name}/updates/reschedule", tag = "updates",
    params(("name" = String, Path, description = "Instance name")), request_body = RescheduleRequest,
    responses((status = 200, body = UpdateView), (status = 400, body = ApiErrorBody), (status = 403, body = ApiErrorBody),
              (status = 404, body = ApiErrorBody), (status = 409, body = ApiErrorBody)))]
pub async fn reschedule_update(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<RescheduleRequest>,
) -> ApiResult<Json<UpdateView>> {
    st.run(move |s| s.reschedule_update(&a, &name, &req))
        .await
        .map(Json)
}

#[utoipa::path(post, path = "/api/v1/instances/{name}/updates/cancel", tag = "updates",
    params(("name" = String, Path, description = "Instance name")),
    responses((status = 200, body = UpdateView), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody), (status = 409, body = ApiErrorBody)))]
pub async fn cancel_update(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    Path(name): Path<String>,
) -> ApiResult<Json<UpdateView>> {
    st.run(move |s| s.cancel_update(&a, &name)).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/instances/{name}/updates/now", tag = "updates",
    params(("name" = String, Path, description = "Instance name")), request_body = UpdateNowRequest,
    responses((status = 202, body = UpdateView), (status = 400, body = ApiErrorBody), (status = 403, body = ApiErrorBody),
              (status = 404, body = ApiErrorBody), (status = 409, body = ApiErrorBody)))]
pub async fn update_now(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<UpdateNowRequest>,
) -> ApiResult<(StatusCode, Json<UpdateView>)> {
    st.run(move |s| s.update_now(&a, &name, &req))
        .await
        .map(|v| (StatusCode::ACCEPTED, Json(v)))
}

#[utoipa::path(post, path = "/api/v1/instances/{name}/updates/rehearse", tag = "updates",
    params(("name" = String, Path, description = "Instance name")), request_body = RehearseRequest,
    responses((status = 202, body = RehearsalView), (status = 400, body = ApiErrorBody), (status = 403, body = ApiErrorBody),
              (status = 404, body = ApiErrorBody), (status = 409, body = ApiErrorBody)))]
pub async fn rehearse_update(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<RehearseRequest>,
) -> ApiResult<(StatusCode, Json<RehearsalView>)> {
    st.run(move |s| s.rehearse_update(&a, &name, &req))
        .await
        .map(|v| (StatusCode::ACCEPTED, Json(v)))
}

#[utoipa::path(get, path = "/api/v1/updates", tag = "updates", params(ListUpdatesQuery),
    responses((status = 200, body = [UpdateView]), (status = 400, body = ApiErrorBody), (status = 403, body = ApiErrorBody)))]
pub async fn list_updates(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiQuery(q): ApiQuery<ListUpdatesQuery>,
) -> ApiResult<Json<Vec<UpdateView>>> {
    st.run(move |s| s.list_updates(&a, q.status.as_deref(), q.instance.as_deref()))
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/api/v1/updates/{id}", tag = "updates",
    params(("id" = i64, Path, description = "Update id")),
    responses((status = 200, body = UpdateView), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn show_update(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    Path(id): Path<i64>,
) -> ApiResult<Json<UpdateView>> {
    st.run(move |s| s.show_update(&a, id)).await.map(Json)
}

#[utoipa::path(get, path = "/api/v1/update-policy", tag = "updates",
    responses((status = 200, body = UpdatePolicyView), (status = 403, body = ApiErrorBody)))]
pub async fn get_update_policy(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
) -> ApiResult<Json<UpdatePolicyView>> {
    st.run(move |s| s.update_policy(&a)).await.map(Json)
}

#[utoipa::path(put, path = "/api/v1/update-policy", tag = "updates", request_body = UpdatePolicyDoc,
    responses((status = 200, body = UpdatePolicyView), (status = 400, body = ApiErrorBody),
              (status = 403, body = ApiErrorBody), (status = 409, body = ApiErrorBody)))]
pub async fn put_update_policy(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiJson(doc): ApiJson<UpdatePolicyDoc>,
) -> ApiResult<Json<UpdatePolicyView>> {
    st.run(move |s| s.set_update_policy(&a, doc))
        .await
        .map(Json)
}
