//! Request extractors that turn HTTP into service inputs: the authenticated actor, path
//! parameters, query strings and JSON bodies, whose errors come back as `{code, message}` like
//! every other API error (axum's own rejections are plain text).

use axum::extract::path::ErrorKind as PathErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::SharedState;
use crate::error::ServiceError;
use crate::services::Actor;

/// The user behind the request's `Authorization: Bearer` API token.
pub struct ApiActor(pub Actor);

impl FromRequestParts<SharedState> for ApiActor {
    type Rejection = ServiceError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| {
                ServiceError::unauthenticated(
                    "missing_token",
                    "this request needs an API token: send `Authorization: Bearer <token>` (the CLI reads --token or STEWARD_TOKEN)",
                )
            })?
            .to_str()
            .unwrap_or("");
        let secret = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ServiceError::unauthenticated(
                    "malformed_authorization",
                    "the Authorization header must be `Bearer <token>`",
                )
            })?
            .to_owned();
        state
            .run(move |s| s.authenticate_token(&secret))
            .await
            .map(ApiActor)
    }
}

/// A JSON body; a malformed one is a `400 malformed_json` naming what is wrong.
///
/// Every request body of the API is a JSON object. serde would also read a struct from an
/// array of its fields in order (`[null, null]`), which the OpenAPI document does not allow,
/// so anything but an object is refused first.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequest<SharedState> for ApiJson<T> {
    type Rejection = ServiceError;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => v,
            Err(e) => return Err(ServiceError::invalid("malformed_json", e.body_text())),
        };
        if !value.is_object() {
            return Err(ServiceError::invalid(
                "malformed_json",
                format!(
                    "the request body must be a JSON object, not {}",
                    json_kind(&value)
                ),
            ));
        }
        serde_json::from_value(value)
            .map(ApiJson)
            .map_err(|e| ServiceError::invalid("malformed_json", format!("the request body: {e}")))
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Query parameters; malformed ones are a `400 invalid_query`.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(ServiceError::invalid("invalid_query", e.body_text())),
        }
    }
}

/// Path parameters; one that does not parse (`/api/v1/jobs/abc`, an id beyond 64 bits) is a
/// `400 invalid_path` naming the parameter and what it must be.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(rejection) => {
                let names: Vec<String> = RawPathParams::from_request_parts(parts, state)
                    .await
                    .map(|p| p.iter().map(|(k, _)| k.to_owned()).collect())
                    .unwrap_or_default();
                Err(path_error(rejection, &names))
            }
        }
    }
}

/// The `{code, message}` error for a path parameter that did not parse; `names` are the
/// route's parameters in order, to name the one at fault.
fn path_error(rejection: PathRejection, names: &[String]) -> ServiceError {
    let PathRejection::FailedToDeserializePathParams(e) = rejection else {
        tracing::error!(error = %rejection, "path parameters missing from the route");
        return ServiceError::internal(rejection.body_text());
    };
    let name_at = |i: usize| names.get(i).map_or("parameter", String::as_str).to_owned();
    let (name, value, expected) = match e.into_kind() {
        PathErrorKind::ParseError {
            value,
            expected_type,
        } => (name_at(0), value, what_parses(expected_type)),
        PathErrorKind::ParseErrorAtIndex {
            index,
            value,
            expected_type,
        } => (name_at(index), value, what_parses(expected_type)),
        PathErrorKind::ParseErrorAtKey {
            key,
            value,
            expected_type,
        } => (key, value, what_parses(expected_type)),
        PathErrorKind::DeserializeError {
            key,
            value,
            message,
        } => (key, value, message),
        PathErrorKind::InvalidUtf8InPathParam { key } => {
            return ServiceError::invalid(
                "invalid_path",
                format!("the path parameter `{key}` is not valid UTF-8 once percent-decoded"),
            );
        }
        other => {
            tracing::error!(error = %other, "path parameters do not fit the handler");
            return ServiceError::internal(format!("cannot read the path parameters: {other}"));
        }
    };
    ServiceError::invalid(
        "invalid_path",
        format!(
            "the path parameter `{name}` must be {expected}; got `{}`",
            shorten(&value)
        ),
    )
}

/// What a value of a path parameter's Rust type looks like, for a person.
fn what_parses(expected_type: &str) -> String {
    match expected_type {
        "i64" => format!("a whole number from {} to {}", i64::MIN, i64::MAX),
        "u64" => format!("a whole number from 0 to {}", u64::MAX),
        "i32" => format!("a whole number from {} to {}", i32::MIN, i32::MAX),
        "u32" => format!("a whole number from 0 to {}", u32::MAX),
        other => format!("a `{other}`"),
    }
}

/// A value echoed in an error, cut to a readable length.
fn shorten(value: &str) -> String {
    const MAX: usize = 64;
    match value.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &value[..i]),
        None => value.to_owned(),
    }
}
