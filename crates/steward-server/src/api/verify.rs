//! The verify API: start a verify of backups as a job, and read a backup's verification
//! state. The report of a verify is its job's `result` (`GET /api/v1/jobs/{id}`), a
//! `VerifyReportView` (`crate::services::verify`).

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
use crate::services::verify::{BackupVerificationView, VerifyRequest, VerifyStarted};

type ApiResult<T> = Result<T, ServiceError>;

/// Adds the verify routes.
pub fn routes(r: OpenApiRouter<SharedState>) -> OpenApiRouter<SharedState> {
    r.routes(routes!(start_verify))
        .routes(routes!(backup_verification))
}

/// How thoroughly to verify.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerifyModeWord {
    /// No data read: every chunk located in an index, every pack present and long enough.
    Structure,
    /// Read every chunk and check it against its hash.
    ReadData,
    /// Read `sample_percent` of the data.
    Sample,
}

impl VerifyModeWord {
    fn as_str(self) -> &'static str {
        match self {
            VerifyModeWord::Structure => "structure",
            VerifyModeWord::ReadData => "read_data",
            VerifyModeWord::Sample => "sample",
        }
    }
}

/// What to verify (exactly one of `backup_id`, `instance`, `all: true`) and how.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// Verify this backup.
    pub backup_id: Option<i64>,
    /// Verify every completed backup of this instance.
    pub instance: Option<String>,
    /// `true`: verify every completed backup of every instance.
    pub all: Option<bool>,
    /// `structure` (the default: no data read; every chunk located in an index and every
    /// pack present and long enough), `read_data` (read every chunk and check its hash) or
    /// `sample` (read `sample_percent` of the data).
    pub mode: Option<VerifyModeWord>,
    /// For `sample` (and only then): the percentage of the data to read, greater than 0 and
    /// at most 100.
    #[schema(exclusive_minimum = 0.0, maximum = 100.0)]
    pub sample_percent: Option<f64>,
}

/// Starts a verify as a `verify` job. Its result (a `VerifyReportView`) names, per backup,
/// the missing and corrupt chunks and the damaged packs; a damaged pack names every backup
/// it damages. Damaged backups are marked (`damaged` in backup views), alerted about
/// (`backup_damaged`) and refused for restore until a verify finds them whole.
#[utoipa::path(post, path = "/api/v1/backups/verify", tag = "backups", request_body = VerifyBody,
    responses(
        (status = 202, description = "The verify is queued as a job", body = VerifyStarted),
        (status = 400, description = "No scope or more than one, a sample percentage outside (0, 100] or without the sample mode, or a body that is not this schema (`invalid_scope`, `invalid_sample`, `malformed_json`)", body = ApiErrorBody),
        (status = 401, description = "No API token, or a wrong one", body = ApiErrorBody),
        (status = 403, description = "The role may not verify backups (Viewers)", body = ApiErrorBody),
        (status = 404, description = "Unknown backup or instance", body = ApiErrorBody),
        (status = 409, description = "The backup is not completed, or the scope holds no completed backup (`backup_not_verifiable`, `nothing_to_verify`)", body = ApiErrorBody)))]
pub async fn start_verify(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiJson(req): ApiJson<VerifyBody>,
) -> ApiResult<(StatusCode, Json<VerifyStarted>)> {
    let request = VerifyRequest {
        backup_id: req.backup_id,
        instance: req.instance,
        all: req.all.unwrap_or(false),
        mode: req.mode.map(|m| m.as_str().to_owned()),
        sample_percent: req.sample_percent,
    };
    let (scope, mode) = request.parse()?;
    st.run(move |s| s.start_verify(&a, &scope, mode))
        .await
        .map(|v| (StatusCode::ACCEPTED, Json(v)))
}

/// A backup's verification state: whether it is damaged (and what was found), its latest
/// verification and its history.
#[utoipa::path(get, path = "/api/v1/backups/{id}/verification", tag = "backups",
    params(("id" = i64, Path, description = "Backup id")),
    responses(
        (status = 200, body = BackupVerificationView),
        (status = 400, description = "The id is not a number", body = ApiErrorBody),
        (status = 401, description = "No API token, or a wrong one", body = ApiErrorBody),
        (status = 403, body = ApiErrorBody),
        (status = 404, description = "Unknown backup", body = ApiErrorBody)))]
pub async fn backup_verification(
    State(st): State<SharedState>,
    ApiActor(a): ApiActor,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<BackupVerificationView>> {
    st.run(move |s| s.backup_verification(&a, id))
        .await
        .map(Json)
}
