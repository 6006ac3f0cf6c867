//! One handler per API operation, each annotated for the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use steward_store::AuditRow;
use utoipa::ToSchema;

use super::{ApiActor, ApiErrorBody, ApiJson, ApiPath, ApiQuery};
use crate::SharedState;
use crate::error::ServiceError;
use crate::services::{
    AlertView, AuditQuery, BackupView, CreatedToken, CreatedUser, InstanceList, InstanceView,
    JobView, ReleaseView, RestoreStarted, StorageView, TokenView, UserView,
};

type ApiResult<T> = Result<T, ServiceError>;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInstanceRequest {
    /// 3–63 lowercase letters, digits and dashes.
    #[schema(example = "acme-new")]
    pub name: String,
    /// `production` or `sandbox`
    #[serde(rename = "type")]
    #[schema(example = "sandbox")]
    pub instance_type: String,
    /// A release in the catalog; the latest when omitted.
    pub release: Option<String>,
    /// The node that will keep the instance's files and run its jobs (see `GET
    /// /api/v1/nodes`), or `least-loaded`: the up node with the fewest instances (the default).
    /// When it is another node, this node passes the request on to it.
    #[schema(example = "node-2")]
    pub node: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchInstanceRequest {
    /// The new type: `production` or `sandbox`.
    #[serde(rename = "type")]
    #[schema(example = "sandbox")]
    pub instance_type: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteInstanceQuery {
    /// The instance's name, typed again to confirm.
    pub confirm: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub username: String,
    /// `system_administrator`, `delegated_admin` or `viewer`
    pub role: String,
    /// At least 12 characters; generated and returned once when omitted.
    pub password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    pub role: Option<String>,
    pub disabled: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    pub new_password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// What the token is for, e.g. `ci-pipeline`.
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginTokenRequest {
    pub username: String,
    pub password: String,
    /// What the token is for, e.g. `laptop`.
    pub name: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListTokensQuery {
    /// Everyone's tokens (System Administrators only).
    #[serde(default)]
    pub all: bool,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListInstancesQuery {
    /// Instances on one page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The page after this name: the previous page's `next_after`.
    pub after: Option<String>,
    /// Only names containing this (case-insensitive).
    pub q: Option<String>,
}

/// Instances on a page when the request does not say.
pub(super) const DEFAULT_PAGE: i64 = 100;

#[utoipa::path(get, path = "/api/v1/instances", tag = "instances", params(ListInstancesQuery),
    responses((status = 200, body = InstanceList),
              (status = 400, description = "`invalid_limit`: `limit` is not from 1 to 1000", body = ApiErrorBody)))]
pub async fn list_instances(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiQuery(q): ApiQuery<ListInstancesQuery>,
) -> ApiResult<Json<InstanceList>> {
    let limit = limit(q.limit, DEFAULT_PAGE, crate::services::MAX_PAGE as i64)? as u64;
    let query = crate::services::InstanceListQuery {
        contains: q.q,
        after: q.after.filter(|a| !a.is_empty()),
        offset: 0,
        limit: Some(limit),
    };
    st.run(move |s| s.list_instances_page(&a, &query))
        .await
        .map(Json)
}

#[utoipa::path(post, path = "/api/v1/instances", tag = "instances", request_body = CreateInstanceRequest,
    responses((status = 201, body = InstanceView),
              (status = 400, description = "`invalid_name`, `invalid_value` (the type), `invalid_release`, `malformed_json`", body = ApiErrorBody),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_release`, `unknown_node`", body = ApiErrorBody),
              (status = 409, description = "`instance_exists`, `node_unavailable` (the node asked for is not up)", body = ApiErrorBody),
              (status = 502, description = "`node_unreachable`: the node that is to keep the instance did not answer; nothing was created", body = ApiErrorBody)))]
pub async fn create_instance(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    headers: axum::http::HeaderMap,
    ApiJson(req): ApiJson<CreateInstanceRequest>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let actor = a.clone();
    let node = req.node.clone();
    let placement = st
        .run(move |s| s.place_instance(&actor, node.as_deref()))
        .await?;
    match placement {
        crate::services::nodes::Placement::Here => st
            .run(move |s| {
                s.create_instance(&a, &req.name, &req.instance_type, req.release.as_deref())
            })
            .await
            .map(|v| (StatusCode::CREATED, Json(v)).into_response()),
        crate::services::nodes::Placement::On { name, address } => {
            super::forward::create_instance_on(&name, &address, &headers, &req).await
        }
    }
}

#[utoipa::path(get, path = "/api/v1/instances/{name}", tag = "instances",
    params(("name" = String, Path, description = "Instance name", example = "acme-sandbox")),
    responses((status = 200, body = InstanceView),
              (status = 404, description = "`unknown_instance`", body = ApiErrorBody)))]
pub async fn show_instance(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<InstanceView>> {
    st.run(move |s| s.show_instance(&a, &name)).await.map(Json)
}

#[utoipa::path(delete, path = "/api/v1/instances/{name}", tag = "instances",
    params(("name" = String, Path, description = "Instance name", example = "acme-sandbox"), DeleteInstanceQuery),
    responses((status = 200, description = "The instance as it was retired", body = InstanceView),
              (status = 400, description = "`confirmation_mismatch`: `confirm` is not the instance's name", body = ApiErrorBody),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_instance`", body = ApiErrorBody),
              (status = 409, description = "`instance_busy`, `instance_on_another_node` (delete it on the node that keeps it)", body = ApiErrorBody)))]
pub async fn delete_instance(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeleteInstanceQuery>,
) -> ApiResult<Json<InstanceView>> {
    let confirm = q.confirm.unwrap_or_default();
    st.run(move |s| s.delete_instance(&a, &name, &confirm))
        .await
        .map(Json)
}

#[utoipa::path(post, path = "/api/v1/instances/{name}/switch", tag = "instances",
    params(("name" = String, Path, description = "Instance name", example = "acme-sandbox")), request_body = SwitchInstanceRequest,
    responses((status = 200, body = InstanceView),
              (status = 400, description = "`invalid_value` (the type), `malformed_json`", body = ApiErrorBody),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_instance`", body = ApiErrorBody),
              (status = 409, description = "`already_that_type`, `instance_busy`", body = ApiErrorBody)))]
pub async fn switch_instance(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<SwitchInstanceRequest>,
) -> ApiResult<Json<InstanceView>> {
    st.run(move |s| s.switch_instance(&a, &name, &req.instance_type))
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/api/v1/releases", tag = "releases",
    responses((status = 200, body = Vec<ReleaseView>)))]
pub async fn list_releases(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
) -> ApiResult<Json<Vec<ReleaseView>>> {
    st.run(move |s| s.list_releases(&a)).await.map(Json)
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    responses((status = 200, body = Vec<UserView>),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody)))]
pub async fn list_users(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
) -> ApiResult<Json<Vec<UserView>>> {
    st.run(move |s| s.list_users(&a)).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUserRequest,
    responses((status = 201, body = CreatedUser),
              (status = 400, description = "`invalid_name`, `invalid_value` (the role), `weak_password`, `malformed_json`", body = ApiErrorBody),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 409, description = "`user_exists`", body = ApiErrorBody)))]
pub async fn create_user(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<CreatedUser>)> {
    st.run(move |s| s.create_user(&a, &req.username, &req.role, req.password.as_deref()))
        .await
        .map(|v| (StatusCode::CREATED, Json(v)))
}

#[utoipa::path(patch, path = "/api/v1/users/{username}", tag = "users",
    params(("username" = String, Path, example = "admin")), request_body = UpdateUserRequest,
    responses((status = 200, body = UserView),
              (status = 400, description = "`invalid_value` (the role), `malformed_json`", body = ApiErrorBody),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_user`", body = ApiErrorBody),
              (status = 409, description = "`last_administrator`", body = ApiErrorBody)))]
pub async fn update_user(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(username): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateUserRequest>,
) -> ApiResult<Json<UserView>> {
    st.run(move |s| s.update_user(&a, &username, req.role.as_deref(), req.disabled))
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/api/v1/me", tag = "users", responses((status = 200, body = UserView),
              (status = 404, description = "`unknown_user`: the token belongs to no user", body = ApiErrorBody)))]
pub async fn me(State(st): State<SharedState>, ApiActor(a): ApiActor) -> ApiResult<Json<UserView>> {
    st.run(move |s| s.me(&a)).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/me/password", tag = "users", request_body = ChangePasswordRequest,
    responses((status = 204),
              (status = 400, description = "`wrong_password`, `weak_password`, `malformed_json`", body = ApiErrorBody),
              (status = 404, description = "`unknown_user`: the token belongs to no user", body = ApiErrorBody)))]
pub async fn change_password(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> ApiResult<StatusCode> {
    st.run(move |s| s.change_password(&a, &req.current_password, &req.new_password))
        .await
        .map(|()| StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", params(ListTokensQuery),
    responses((status = 200, body = Vec<TokenView>),
              (status = 400, description = "`invalid_query`", body = ApiErrorBody),
              (status = 403, description = "`forbidden`: `all=true` needs a System Administrator", body = ApiErrorBody)))]
pub async fn list_tokens(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiQuery(q): ApiQuery<ListTokensQuery>,
) -> ApiResult<Json<Vec<TokenView>>> {
    st.run(move |s| s.list_tokens(&a, q.all)).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = CreateTokenRequest,
    responses((status = 201, description = "The secret is shown only in this response", body = CreatedToken),
              (status = 400, description = "`invalid_token_name`, `no_user`, `malformed_json`", body = ApiErrorBody)))]
pub async fn create_token(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    st.run(move |s| s.create_token(&a, &req.name))
        .await
        .map(|v| (StatusCode::CREATED, Json(v)))
}

#[utoipa::path(post, path = "/api/v1/tokens/login", tag = "tokens", request_body = LoginTokenRequest, security(()),
    responses((status = 201, description = "A new API token for the user whose credentials were given; the secret is shown only here", body = CreatedToken),
              (status = 400, description = "`malformed_json`", body = ApiErrorBody),
              (status = 401, description = "`invalid_credentials`", body = ApiErrorBody),
              (status = 429, description = "`login_throttled`: too many failed sign-ins for this account or from this address; the message says when to try again", body = ApiErrorBody)))]
pub async fn login_token(
    State(st): State<SharedState>,
    // The client's address, for the per-address sign-in limit.
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    ApiJson(req): ApiJson<LoginTokenRequest>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let client = peer.map(|p| p.0.0.ip());
    st.run(move |s| s.token_for_credentials_from(&req.username, &req.password, &req.name, client))
        .await
        .map(|v| (StatusCode::CREATED, Json(v)))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = i64, Path, example = 1)),
    responses((status = 200, body = TokenView),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_token`", body = ApiErrorBody),
              (status = 409, description = "`already_revoked`", body = ApiErrorBody)))]
pub async fn revoke_token(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<TokenView>> {
    st.run(move |s| s.revoke_token(&a, id)).await.map(Json)
}

/// One audit entry.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: chrono::DateTime<chrono::Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// `{"before": .., "after": ..}` where the action changes values.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        Self {
            id: r.id,
            at: r.at,
            actor: r.actor,
            action: r.action,
            target: r.target,
            details: r.details,
        }
    }
}

/// Filters for the audit log; every field optional.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only entries by this user (or `System`).
    pub actor: Option<String>,
    /// Only this action, or actions under this prefix (`instance` matches `instance.create`).
    pub action: Option<String>,
    /// Only entries about this target (an instance name, a username, ...).
    pub target: Option<String>,
    /// Only entries at or after this moment (RFC 3339).
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// At most this many entries: 1 to 10000 (default 200).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditParams),
    responses((status = 200, body = Vec<AuditEntry>),
              (status = 400, description = "`invalid_query`, `invalid_limit`", body = ApiErrorBody)))]
pub async fn list_audit(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    let q = AuditQuery {
        limit: Some(limit(p.limit, 200, 10_000)?),
        actor: p.actor,
        action: p.action,
        target: p.target,
        since: p.since,
    };
    st.run(move |s| s.list_audit(&a, &q))
        .await
        .map(|rows| Json(rows.into_iter().map(AuditEntry::from).collect()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListJobsQuery {
    /// Only jobs about this target (an instance name).
    pub target: Option<String>,
    /// Only jobs in this state: `queued`, `running`, `succeeded` or `failed`.
    pub state: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(ListJobsQuery),
    responses((status = 200, body = Vec<JobView>),
              (status = 400, description = "`invalid_query`, `invalid_value` (the state)", body = ApiErrorBody)))]
pub async fn list_jobs(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiQuery(q): ApiQuery<ListJobsQuery>,
) -> ApiResult<Json<Vec<JobView>>> {
    st.run(move |s| s.list_jobs(&a, q.target.as_deref(), q.state.as_deref()))
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = i64, Path, example = 1)),
    responses((status = 200, description = "The job with its stages and timings", body = JobView),
              (status = 404, description = "`unknown_job`", body = ApiErrorBody)))]
pub async fn show_job(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<JobView>> {
    st.run(move |s| s.show_job(&a, id)).await.map(Json)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBackupRequest {
    /// Required: what this backup is for, e.g. `before the Q3 import`.
    #[schema(example = "before the Q3 import")]
    pub label: String,
    pub notes: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditBackupRequest {
    pub label: Option<String>,
    pub notes: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// The sandbox instance whose database is replaced.
    #[schema(example = "acme-sandbox")]
    pub target: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertsQuery {
    /// At most this many alerts: 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// A `limit` query parameter within `1..=max`, or `default` when omitted; outside the bounds
/// it is a `400 invalid_limit` (the bounds are in the OpenAPI document too).
pub(super) fn limit(value: Option<i64>, default: i64, max: i64) -> ApiResult<i64> {
    match value {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ServiceError::invalid(
            "invalid_limit",
            format!("limit must be 1 to {max} (got {n})"),
        )),
    }
}

#[utoipa::path(get, path = "/api/v1/instances/{name}/backups", tag = "backups",
    params(("name" = String, Path, description = "Instance name", example = "acme-sandbox")),
    responses((status = 200, description = "Backups newest first", body = Vec<BackupView>),
              (status = 404, description = "`unknown_instance`", body = ApiErrorBody)))]
pub async fn list_backups(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Vec<BackupView>>> {
    st.run(move |s| s.list_backups(&a, &name)).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/instances/{name}/backups", tag = "backups",
    params(("name" = String, Path, description = "Instance name", example = "acme-sandbox")), request_body = CreateBackupRequest,
    responses((status = 202, description = "The backup is queued as a job", body = BackupView),
              (status = 400, description = "`invalid_label`, `invalid_notes`, `malformed_json`", body = ApiErrorBody),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_instance`", body = ApiErrorBody),
              (status = 409, description = "`release_too_old`, `instance_busy`", body = ApiErrorBody)))]
pub async fn create_backup(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<CreateBackupRequest>,
) -> ApiResult<(StatusCode, Json<BackupView>)> {
    st.run(move |s| s.create_backup(&a, &name, &req.label, req.notes.as_deref()))
        .await
        .map(|v| (StatusCode::ACCEPTED, Json(v)))
}

#[utoipa::path(get, path = "/api/v1/backups/{id}", tag = "backups", params(("id" = i64, Path, example = 1)),
    responses((status = 200, body = BackupView),
              (status = 404, description = "`unknown_backup`", body = ApiErrorBody)))]
pub async fn show_backup(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<BackupView>> {
    st.run(move |s| s.show_backup(&a, id)).await.map(Json)
}

#[utoipa::path(patch, path = "/api/v1/backups/{id}", tag = "backups", params(("id" = i64, Path, example = 1)),
    request_body = EditBackupRequest,
    responses((status = 200, body = BackupView),
              (status = 400, description = "`invalid_label`, `invalid_notes`, `nothing_to_change`, `malformed_json`", body = ApiErrorBody),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_backup`", body = ApiErrorBody),
              (status = 409, description = "`system_backup_immutable`", body = ApiErrorBody)))]
pub async fn edit_backup(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<EditBackupRequest>,
) -> ApiResult<Json<BackupView>> {
    st.run(move |s| s.edit_backup(&a, id, req.label.as_deref(), req.notes.as_deref()))
        .await
        .map(Json)
}

#[utoipa::path(delete, path = "/api/v1/backups/{id}", tag = "backups", params(("id" = i64, Path, example = 1)),
    responses((status = 200, body = BackupView),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_backup`", body = ApiErrorBody),
              (status = 409, description = "`backup_running`, `system_backup_immutable`", body = ApiErrorBody)))]
pub async fn delete_backup(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<BackupView>> {
    st.run(move |s| s.delete_backup(&a, id)).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/backups/{id}/restore", tag = "backups", params(("id" = i64, Path, example = 1)),
    request_body = RestoreRequest,
    responses((status = 202, description = "The restore is running as a job", body = RestoreStarted),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_backup`, `unknown_instance` (the target)", body = ApiErrorBody),
              (status = 409, description = "`backup_not_restorable`, `backup_damaged`, `target_not_sandbox`, `instance_busy`", body = ApiErrorBody)))]
pub async fn restore_backup(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<RestoreRequest>,
) -> ApiResult<(StatusCode, Json<RestoreStarted>)> {
    st.run(move |s| s.restore_backup(&a, id, &req.target))
        .await
        .map(|v| (StatusCode::ACCEPTED, Json(v)))
}

#[utoipa::path(get, path = "/api/v1/storage", tag = "backups",
    responses((status = 200, description = "Database storage per instance and in total; backup storage separately", body = StorageView)))]
pub async fn storage(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
) -> ApiResult<Json<StorageView>> {
    st.run(move |s| s.storage(&a)).await.map(Json)
}

#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts", params(AlertsQuery),
    responses((status = 200, description = "In-product notifications, newest first", body = Vec<AlertView>),
              (status = 400, description = "`invalid_query`, `invalid_limit`", body = ApiErrorBody)))]
pub async fn list_alerts(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiQuery(q): ApiQuery<AlertsQuery>,
) -> ApiResult<Json<Vec<AlertView>>> {
    let limit = limit(q.limit, 50, 1000)?;
    st.run(move |s| s.list_alerts(&a, limit)).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/maintenance/prune", tag = "backups",
    responses((status = 200, description = "Expired backups removed and unreferenced data pruned", body = crate::services::backups::MaintenanceReport),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody)))]
pub async fn prune(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
) -> ApiResult<Json<crate::services::backups::MaintenanceReport>> {
    st.run(move |s| s.run_maintenance(&a)).await.map(Json)
}

// ---- notifications ----

use crate::services::{
    CreatedWebhook, DeliveryView, RecipientView, ScheduleEntryView, WebhookView,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// `system_administrators` or `all_admins_and_users`
    #[schema(example = "system_administrators")]
    pub audience: String,
    /// Any of `email`, `webhook`, `in_product`; empty: the admin center's log only.
    pub channels: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientRequest {
    #[schema(example = "dba@example.com")]
    pub email: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// An http(s) URL that receives signed JSON POSTs.
    #[schema(example = "https://hooks.example.com/steward")]
    pub url: String,
    /// Signing secret (at least 16 characters); generated and returned once when omitted.
    pub secret: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserEmailRequest {
    /// The address notifications go to; `null` to stop emailing this user.
    pub email: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationLogQuery {
    /// Only deliveries of this instance's notifications.
    pub instance: Option<String>,
    /// At most this many: 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/notifications/schedule", tag = "notifications",
    responses((status = 200, description = "Who is told about each event, and how", body = Vec<ScheduleEntryView>)))]
pub async fn notification_schedule(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
) -> ApiResult<Json<Vec<ScheduleEntryView>>> {
    st.run(move |s| s.notification_schedule(&a)).await.map(Json)
}

#[utoipa::path(put, path = "/api/v1/notifications/schedule/{event}", tag = "notifications",
    params(("event" = String, Path, description = "An event of the communications schedule", example = "backup_succeeded")), request_body = ScheduleRequest,
    responses((status = 200, body = ScheduleEntryView),
              (status = 400, description = "`invalid_value` (the event, audience or a channel), `malformed_json`", body = ApiErrorBody),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody)))]
pub async fn set_notification_schedule(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(event): ApiPath<String>,
    ApiJson(req): ApiJson<ScheduleRequest>,
) -> ApiResult<Json<ScheduleEntryView>> {
    st.run(move |s| s.set_schedule(&a, &event, &req.audience, &req.channels))
        .await
        .map(Json)
}

#[utoipa::path(delete, path = "/api/v1/notifications/schedule/{event}", tag = "notifications",
    params(("event" = String, Path, description = "An event of the communications schedule", example = "backup_succeeded")),
    responses((status = 200, description = "The event is back on the default schedule", body = ScheduleEntryView),
              (status = 400, description = "`invalid_value` (the event)", body = ApiErrorBody),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody)))]
pub async fn reset_notification_schedule(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(event): ApiPath<String>,
) -> ApiResult<Json<ScheduleEntryView>> {
    st.run(move |s| s.reset_schedule(&a, &event))
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/api/v1/notifications/log", tag = "notifications", params(NotificationLogQuery),
    responses((status = 200, description = "Deliveries, newest first", body = Vec<DeliveryView>),
              (status = 400, description = "`invalid_query`, `invalid_limit`", body = ApiErrorBody)))]
pub async fn notification_log(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiQuery(q): ApiQuery<NotificationLogQuery>,
) -> ApiResult<Json<Vec<DeliveryView>>> {
    let limit = limit(q.limit, 100, 1000)?;
    st.run(move |s| s.notification_log(&a, q.instance.as_deref(), limit))
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/api/v1/instances/{name}/recipients", tag = "notifications",
    params(("name" = String, Path, description = "Instance name", example = "acme-sandbox")),
    responses((status = 200, description = "Extra email recipients of the instance's notifications", body = Vec<RecipientView>),
              (status = 404, description = "`unknown_instance`", body = ApiErrorBody)))]
pub async fn list_recipients(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Vec<RecipientView>>> {
    st.run(move |s| s.list_recipients(&a, &name))
        .await
        .map(Json)
}

#[utoipa::path(post, path = "/api/v1/instances/{name}/recipients", tag = "notifications",
    params(("name" = String, Path, description = "Instance name", example = "acme-sandbox")), request_body = RecipientRequest,
    responses((status = 201, body = RecipientView),
              (status = 400, description = "`invalid_email`, `malformed_json`", body = ApiErrorBody),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_instance`", body = ApiErrorBody),
              (status = 409, description = "`recipient_exists`", body = ApiErrorBody)))]
pub async fn add_recipient(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<RecipientRequest>,
) -> ApiResult<(StatusCode, Json<RecipientView>)> {
    st.run(move |s| s.add_recipient(&a, &name, &req.email))
        .await
        .map(|v| (StatusCode::CREATED, Json(v)))
}

#[utoipa::path(delete, path = "/api/v1/instances/{name}/recipients/{email}", tag = "notifications",
    params(("name" = String, Path, description = "Instance name", example = "acme-sandbox"), ("email" = String, Path, example = "ops@example.com")),
    responses((status = 204),
              (status = 400, description = "`invalid_email`", body = ApiErrorBody),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_instance`, `unknown_recipient`", body = ApiErrorBody)))]
pub async fn remove_recipient(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath((name, email)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    st.run(move |s| s.remove_recipient(&a, &name, &email))
        .await
        .map(|()| StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/webhooks", tag = "notifications",
    responses((status = 200, body = Vec<WebhookView>)))]
pub async fn list_webhooks(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
) -> ApiResult<Json<Vec<WebhookView>>> {
    st.run(move |s| s.list_webhooks(&a)).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/webhooks", tag = "notifications", request_body = WebhookRequest,
    responses((status = 201, description = "The webhook and its signing secret, shown once", body = CreatedWebhook),
              (status = 400, description = "`invalid_webhook_url`, `invalid_webhook_secret`, `malformed_json`", body = ApiErrorBody),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody)))]
pub async fn create_webhook(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiJson(req): ApiJson<WebhookRequest>,
) -> ApiResult<(StatusCode, Json<CreatedWebhook>)> {
    st.run(move |s| s.create_webhook(&a, &req.url, req.secret.as_deref()))
        .await
        .map(|v| (StatusCode::CREATED, Json(v)))
}

#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "notifications", params(("id" = i64, Path, example = 1)),
    responses((status = 204),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_webhook`", body = ApiErrorBody)))]
pub async fn delete_webhook(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    st.run(move |s| s.delete_webhook(&a, id))
        .await
        .map(|()| StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/api/v1/users/{username}/email", tag = "users",
    params(("username" = String, Path, example = "admin")), request_body = UserEmailRequest,
    responses((status = 204),
              (status = 400, description = "`invalid_email`, `malformed_json`", body = ApiErrorBody),
              (status = 403, description = "`forbidden`: the caller's role may not do this", body = ApiErrorBody),
              (status = 404, description = "`unknown_user`", body = ApiErrorBody)))]
pub async fn set_user_email(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(username): ApiPath<String>,
    ApiJson(req): ApiJson<UserEmailRequest>,
) -> ApiResult<StatusCode> {
    st.run(move |s| s.set_user_email(&a, &username, req.email.as_deref()))
        .await
        .map(|()| StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/alerts/mine", tag = "alerts", params(AlertsQuery),
    responses((status = 200, description = "In-product alerts the caller has not dismissed, newest first", body = Vec<AlertView>),
              (status = 400, description = "`invalid_query`, `invalid_limit`, `not_a_user`", body = ApiErrorBody)))]
pub async fn my_alerts(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiQuery(q): ApiQuery<AlertsQuery>,
) -> ApiResult<Json<Vec<AlertView>>> {
    let limit = limit(q.limit, 50, 1000)?;
    st.run(move |s| s.my_alerts(&a, limit)).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/alerts/{id}/dismiss", tag = "alerts", params(("id" = i64, Path, example = 1)),
    responses((status = 204, description = "Dismissed for the caller only"),
              (status = 400, description = "`invalid_path`, `not_a_user`", body = ApiErrorBody),
              (status = 404, description = "`unknown_alert`", body = ApiErrorBody)))]
pub async fn dismiss_alert(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    st.run(move |s| s.dismiss_alert(&a, id))
        .await
        .map(|()| StatusCode::NO_CONTENT)
}
