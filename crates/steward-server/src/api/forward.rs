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

fn form_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            // The browser follows the other node's redirect itself, on this node.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default()
    })
}

/// An admin-center form posted to `path` on node `name` at `address`, with the browser's own
/// cookies (the session is in the shared store, so it is valid there too); that node's
/// status, redirect, cookies and page are the answer.
pub async fn post_form_on(
    name: &str,
    address: &str,
    path: &str,
    headers: &HeaderMap,
    fields: &[(&str, &str)],
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
    let mut call = form_client().post(format!("{address}{path}")).form(fields);
    if let Some(cookie) = headers.get(header::COOKIE) {
        call = call.header(header::COOKIE, cookie.clone());
    }
    let resp = call.send().await.map_err(|e| unreachable(e.to_string()))?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut out = HeaderMap::new();
    for (k, v) in resp.headers() {
        if k == header::LOCATION || k == header::SET_COOKIE || k == header::CONTENT_TYPE {
            out.append(k.clone(), v.clone());
        }
    }
    let body = resp.bytes().await.map_err(|e| unreachable(e.to_string()))?;
    tracing::info!(node = name, %status, "passed an instance creation form on");
    Ok((status, out, body).into_response())
}
