//! Request extractors that turn HTTP into service inputs: the authenticated actor and JSON
//! bodies whose errors come back as `{code, message}` like every other API error.

use axum::extract::{FromRequest, FromRequestParts, Request};
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
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequest<SharedState> for ApiJson<T> {
    type Rejection = ServiceError;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(e) => Err(ServiceError::invalid("malformed_json", e.body_text())),
        }
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
