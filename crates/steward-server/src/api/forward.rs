//! Passing an API request on to another node: an instance is created by the node that will
//! keep its files, so a node asked to create one elsewhere forwards the request there, with
//! the caller's own credentials, and answers with that node's answer.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::handlers::CreateInstanceRequest;
use crate::error::{ErrorKind, ServiceError};

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default()
    })
}

/// `POST /api/v1/instances` on node `name` at `address`, naming that node, with the caller's
/// `Authorization` header; its status and JSON body are the answer.
pub async fn create_instance_on(
    name: &str,
    address: &str,
    headers: &HeaderMap,
    req: &CreateInstanceRequest,
) -> Result<Response, ServiceError> {
    let unreachable = |why: String| {
        ServiceError::new(
            ErrorKind::BadGateway,
            "node_unreachable",
            format!(
                "node {name} at {address}, which is to keep the instance, did not answer ({why}); \
                 nothing was created"
            ),
        )
    };
    let mut call = client()
        .post(format!("{address}/api/v1/instances"))
        .json(&serde_json::json!({
            "name": req.name,
            "type": req.instance_type,
            "release": req.release,
            "node": name,
        }));
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        call = call.header(header::AUTHORIZATION, auth.clone());
    }
    let resp = call.send().await.map_err(|e| unreachable(e.to_string()))?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = resp.bytes().await.map_err(|e| unreachable(e.to_string()))?;
    tracing::info!(node = name, %status, "passed an instance creation on");
    Ok((status, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}
