//! The REST API under `/api/v1`. Handlers only translate HTTP to service calls and back;
//! the OpenAPI document is generated from the same handler annotations that build the router,
//! so it cannot drift from the routes.

mod capture;
mod drills;
mod extract;
pub(crate) mod forward;
mod handlers;
mod nodes;
mod updates;
mod verify;
mod workitems;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use extract::{ApiActor, ApiJson, ApiPath, ApiQuery};

use crate::SharedState;
use crate::error::{ErrorKind, ServiceError};

/// The JSON body of every API error.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ApiErrorBody {
    /// Stable machine-readable code, e.g. `unknown_instance`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}

pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Throttled => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::BadGateway => StatusCode::BAD_GATEWAY,
    }
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status = status_of(self.kind);
        let body = ApiErrorBody {
            code: self.code.to_owned(),
            message: self.message,
        };
        (status, Json(body)).into_response()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Steward API",
        description = "Self-hosted admin center for fleets of database instances. Authenticate with `Authorization: Bearer <API token>`. Errors are JSON `{code, message}`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The routes and the OpenAPI document built from them.
pub fn parts() -> (axum::Router<SharedState>, utoipa::openapi::OpenApi) {
    use handlers::*;
    let r = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_instances, create_instance))
        .routes(routes!(show_instance, delete_instance))
        .routes(routes!(switch_instance))
        .routes(routes!(list_releases))
        .routes(routes!(list_users, create_user))
        .routes(routes!(update_user))
        .routes(routes!(me))
        .routes(routes!(change_password))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(login_token))
        .routes(routes!(list_audit))
        .routes(routes!(list_jobs))
        .routes(routes!(show_job))
        .routes(routes!(list_backups, create_backup))
        .routes(routes!(show_backup, edit_backup, delete_backup))
        .routes(routes!(restore_backup))
        .routes(routes!(storage))
        .routes(routes!(list_alerts))
        .routes(routes!(prune))
        .routes(routes!(notification_schedule))
        .routes(routes!(set_notification_schedule))
        .routes(routes!(reset_notification_schedule))
        .routes(routes!(notification_log))
        .routes(routes!(list_recipients, add_recipient))
        .routes(routes!(remove_recipient))
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(delete_webhook))
        .routes(routes!(set_user_email))
        .routes(routes!(my_alerts))
        .routes(routes!(dismiss_alert));
    let r = updates::routes(r);
    let r = workitems::routes(r);
    let r = verify::routes(r);
    let r = drills::routes(r);
    let r = capture::routes(r);
    let r = nodes::routes(r);
    let (router, mut doc) = r.split_for_parts();
    document_common_errors(&mut doc);
    (router, doc)
}

/// Adds to every operation the error answers that come from the extractors and the server
/// rather than from the operation itself, so no handler can forget them: `401` where a token
/// is required, `400` where a path parameter, query or body can be malformed, `500`, and
/// `503` while the control plane or the backup storage cannot be reached.
/// The answers each operation adds (`403`, `404`, `409`, its own `400`s) are in its
/// annotation.
fn document_common_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::SecurityRequirement;
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let error = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ApiErrorBody")))
                        .build(),
                )
                .build(),
        )
    };
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            let public = op.security.as_ref().is_some_and(|s| {
                !s.is_empty() && s.iter().all(|r| *r == SecurityRequirement::default())
            });
            let takes_input =
                op.parameters.as_ref().is_some_and(|p| !p.is_empty()) || op.request_body.is_some();
            let responses = &mut op.responses.responses;
            if takes_input {
                responses.entry("400".into()).or_insert_with(|| {
                    error("A malformed path parameter (`invalid_path`), query (`invalid_query`) or body (`malformed_json`), or a value that breaks a rule")
                });
            }
            if !public {
                responses.entry("401".into()).or_insert_with(|| {
                    error("No API token, a malformed `Authorization` header, or a token that is wrong, expired or revoked")
                });
            }
            responses.entry("500".into()).or_insert_with(|| {
                error("Something failed inside Steward (`internal`); nothing was changed")
            });
            responses.entry("503".into()).or_insert_with(|| {
                error("The PostgreSQL control plane (`store_unavailable`) or the backup repository's storage (`repository_unavailable`) cannot be reached right now; nothing was changed, try again when it is back")
            });
        }
    }
}

/// The API router, including `/api/v1/openapi.json` and a JSON 404 for unknown API paths.
pub fn router(state: SharedState) -> axum::Router {
    let (routes, doc) = parts();
    let doc = std::sync::Arc::new(doc);
    routes
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .route("/api/v1", axum::routing::any(unknown_route))
        .route("/api/v1/", axum::routing::any(unknown_route))
        .route("/api/v1/{*rest}", axum::routing::any(unknown_route))
        // After every route: a known path with a method it lacks is a JSON 405 too (axum
        // keeps the `Allow` header).
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let body = ApiErrorBody {
        code: "method_not_allowed".into(),
        message: format!("{} does not accept {method}", uri.path()),
    };
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

async fn unknown_route(uri: axum::http::Uri) -> ServiceError {
    ServiceError::not_found(
        "unknown_route",
        format!("there is no API route {}", uri.path()),
    )
}
