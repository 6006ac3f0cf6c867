//! The updates API: one handler per operation, each annotated for the OpenAPI document.
//! Contract: `notes/updates-contract.md` (shared with the CLI and the admin center).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiActor, ApiErrorBody, ApiJson, ApiPath, ApiQuery};
use crate::SharedState;
use crate::error::ServiceError;
use crate::services::updates::{
    PolicyRelease, RehearsalView, RehearseRequest, RescheduleRequest, ScheduleRequest,
    UpdateNowRequest, UpdateOverview, UpdatePolicyDoc, UpdatePolicyView, UpdateView,
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
#[into_params(parameter_in = Query)]
pub struct ListUpdatesQuery {
    /// `scheduled`, `queued`, `in_progress`, `succeeded`, `failed`, `waiting` or `cancelled`
    pub status: Option<String>,
    /// Only this instance's updates.
    pub instance: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/instances/{name}/updates", tag = "updates",
    params(("name" = String, Path, description = "Instance name", example = "acme-sandbox")),
    responses((status = 200, body = UpdateOverview),
              (status = 404, description = "`unknown_instance`", body = ApiErrorBody)))]
pub async fn instance_updates(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<UpdateOverview>> {
    st.run(move |s| s.update_overview(&a, &name))
        .await
        .map(Json)
}

#[utoipa::path(post, path = "/api/v1/instances/{name}/updates", tag = "updates",
    params(("name" = String, Path, description = "Instance name", example = "acme-sandbox")), request_body = ScheduleRequest,
    responses((status = 201, body = UpdateView),
              (status = 400, description = "`unknown_release`, `target_not_newer`, a window that breaks a rule, `malformed_json`", body = ApiErrorBody),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_instance`", body = ApiErrorBody),
              (status = 409, description = "`overlapping_operation`", body = ApiErrorBody)))]
pub async fn schedule_update(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<ScheduleRequest>,
) -> ApiResult<(StatusCode, Json<UpdateView>)> {
    st.run(move |s| s.schedule_update(&a, &name, &req))
        .await
        .map(|v| (StatusCode::CREATED, Json(v)))
}

#[utoipa::path(post, path = "/api/v1/instances/{name}/updates/approve", tag = "updates",
    params(("name" = String, Path, description = "Instance name", example = "acme-sandbox")),
    responses((status = 200, body = UpdateView),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_instance`, `no_open_update`", body = ApiErrorBody),
              (status = 409, description = "`already_approved`, `approval_not_needed`, `update_in_progress`", body = ApiErrorBody)))]
pub async fn approve_update(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<UpdateView>> {
    st.run(move |s| s.approve_update(&a, &name)).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/instances/{name}/updates/withdraw", tag = "updates",
    params(("name" = String, Path, description = "Instance name", example = "acme-sandbox")),
    responses((status = 200, body = UpdateView),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_instance`, `no_open_update`", body = ApiErrorBody),
              (status = 409, description = "`not_approved`, `update_in_progress`", body = ApiErrorBody)))]
pub async fn withdraw_update_approval(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<UpdateView>> {
    st.run(move |s| s.withdraw_update_approval(&a, &name))
        .await
        .map(Json)
}

#[utoipa::path(post, path = "/api/v1/instances/{name}/updates/reschedule", tag = "updates",
    params(("name" = String, Path, description = "Instance name", example = "acme-sandbox")), request_body = RescheduleRequest,
    responses((status = 200, body = UpdateView),
              (status = 400, description = "`nothing_to_change`, `unknown_release`, `target_not_newer`, a window that breaks a rule, `malformed_json`", body = ApiErrorBody),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_instance`, `no_open_update`", body = ApiErrorBody),
              (status = 409, description = "`overlapping_operation`, `update_in_progress`", body = ApiErrorBody)))]
pub async fn reschedule_update(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<RescheduleRequest>,
) -> ApiResult<Json<UpdateView>> {
    st.run(move |s| s.reschedule_update(&a, &name, &req))
        .await
        .map(Json)
}

#[utoipa::path(post, path = "/api/v1/instances/{name}/updates/cancel", tag = "updates",
    params(("name" = String, Path, description = "Instance name", example = "acme-sandbox")),
    responses((status = 200, body = UpdateView),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_instance`, `no_open_update`", body = ApiErrorBody),
              (status = 409, description = "`update_automatic`, `update_mandatory`, `update_in_progress`", body = ApiErrorBody)))]
pub async fn cancel_update(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<UpdateView>> {
    st.run(move |s| s.cancel_update(&a, &name)).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/instances/{name}/updates/now", tag = "updates",
    params(("name" = String, Path, description = "Instance name", example = "acme-sandbox")), request_body = UpdateNowRequest,
    responses((status = 202, body = UpdateView),
              (status = 400, description = "`confirmation_required`, `unknown_release`, `target_not_newer`, `malformed_json`", body = ApiErrorBody),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_instance`", body = ApiErrorBody),
              (status = 409, description = "`instance_busy`, `no_update_available`, `overlapping_operation`, `update_in_progress`", body = ApiErrorBody)))]
pub async fn update_now(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateNowRequest>,
) -> ApiResult<(StatusCode, Json<UpdateView>)> {
    st.run(move |s| s.update_now(&a, &name, &req))
        .await
        .map(|v| (StatusCode::ACCEPTED, Json(v)))
}

#[utoipa::path(post, path = "/api/v1/instances/{name}/updates/rehearse", tag = "updates",
    params(("name" = String, Path, description = "Instance name", example = "acme-sandbox")), request_body = RehearseRequest,
    responses((status = 202, body = RehearsalView),
              (status = 400, description = "`unknown_release`, `target_not_newer`, `malformed_json`", body = ApiErrorBody),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_instance`", body = ApiErrorBody),
              (status = 409, description = "`no_update_available`, an instance that is not available", body = ApiErrorBody)))]
pub async fn rehearse_update(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<RehearseRequest>,
) -> ApiResult<(StatusCode, Json<RehearsalView>)> {
    st.run(move |s| s.rehearse_update(&a, &name, &req))
        .await
        .map(|v| (StatusCode::ACCEPTED, Json(v)))
}

#[utoipa::path(get, path = "/api/v1/updates", tag = "updates", params(ListUpdatesQuery),
    responses((status = 200, body = [UpdateView]),
              (status = 400, description = "`invalid_query`, `invalid_value` (the status)", body = ApiErrorBody)))]
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
    params(("id" = i64, Path, description = "Update id", example = 1)),
    responses((status = 200, body = UpdateView),
              (status = 404, description = "`unknown_update`", body = ApiErrorBody)))]
pub async fn show_update(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<UpdateView>> {
    st.run(move |s| s.show_update(&a, id)).await.map(Json)
}

/// The update policy in force, where it comes from, and each release's support under it.
///
/// The service's view flattens the policy document into itself; the OpenAPI generator would
/// describe that as "all of" the request document (which forbids other fields) and these,
/// so the answer is spelled out field by field here.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct UpdatePolicyAnswer {
    /// Supported major release lines, newest first.
    pub supported_majors: u32,
    /// Major releases behind the newest that make an update mandatory.
    pub mandatory_when_behind: u32,
    /// Service releases are applied in the next maintenance window without approval.
    pub service_updates_automatic: bool,
    /// Daily maintenance window start, `HH:MM` UTC.
    pub maintenance_window_start: String,
    /// Days ahead a mandatory update is scheduled.
    pub mandatory_lead_days: u32,
    /// `built-in`, `file` or `store`
    pub source: String,
    /// Every release in the catalog and whether the policy supports it today.
    pub releases: Vec<PolicyRelease>,
}

impl From<UpdatePolicyView> for UpdatePolicyAnswer {
    fn from(v: UpdatePolicyView) -> Self {
        // Exhaustive on purpose: a new policy field fails to compile here until it is added.
        let UpdatePolicyDoc {
            supported_majors,
            mandatory_when_behind,
            service_updates_automatic,
            maintenance_window_start,
            mandatory_lead_days,
        } = v.policy;
        Self {
            supported_majors,
            mandatory_when_behind,
            service_updates_automatic,
            maintenance_window_start,
            mandatory_lead_days,
            source: v.source,
            releases: v.releases,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/update-policy", tag = "updates",
    responses((status = 200, body = UpdatePolicyAnswer)))]
pub async fn get_update_policy(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
) -> ApiResult<Json<UpdatePolicyAnswer>> {
    st.run(move |s| s.update_policy(&a))
        .await
        .map(|v| Json(v.into()))
}

#[utoipa::path(put, path = "/api/v1/update-policy", tag = "updates", request_body = UpdatePolicyDoc,
    responses((status = 200, body = UpdatePolicyAnswer),
              (status = 400, description = "`invalid_policy`, `malformed_json`", body = ApiErrorBody),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 409, description = "`policy_from_file`: the policy is read from a file", body = ApiErrorBody)))]
pub async fn put_update_policy(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiJson(doc): ApiJson<UpdatePolicyDoc>,
) -> ApiResult<Json<UpdatePolicyAnswer>> {
    st.run(move |s| s.set_update_policy(&a, doc))
        .await
        .map(|v| Json(v.into()))
}
