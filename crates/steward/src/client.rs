//! The HTTP client for Steward's REST API (`/api/v1`): sends the API token, turns every
//! error answer (`{code, message}`) into an [`ApiError`] that carries the CLI's exit code,
//! and says plainly when the server cannot be reached. Only this module knows HTTP.

use std::fmt;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Exit codes of every `steward` command (also listed in `steward --help`).
pub mod exit {
    /// Anything else: the server is unreachable, failed inside, or `serve` could not start.
    pub const FAILURE: u8 = 1;
    /// The command line or the request is invalid (HTTP 400 and other 4xx).
    pub const USAGE: u8 = 2;
    /// No token, a wrong or revoked token, a role that may not do this, or a sign-in locked
    /// after failed passwords (HTTP 401/403/429).
    pub const AUTH: u8 = 3;
    /// The instance, release, user or token named does not exist (HTTP 404).
    pub const NOT_FOUND: u8 = 4;
    /// The request conflicts with the current state, e.g. a duplicate name (HTTP 409).
    pub const CONFLICT: u8 = 5;
    /// `backup verify` found damaged backups.
    pub const DAMAGED: u8 = 6;
}

/// An error answer from the server, with its stable code and human message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl ApiError {
    /// The process exit code this error ends the command with.
    pub fn exit_code(&self) -> u8 {
        match self.status.as_u16() {
            401 | 403 | 429 => exit::AUTH,
            404 => exit::NOT_FOUND,
            409 => exit::CONFLICT,
            400..=499 => exit::USAGE,
            _ => exit::FAILURE,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ApiError {}

/// A mistake on the command line that clap cannot see (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A client for one Steward server, authenticated with one API token (or none).
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(url: &str, token: Option<String>) -> anyhow::Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(UsageError(format!(
                "--url must start with http:// or https:// (got {url:?})"
            ))
            .into());
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("steward-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base,
            token: token.filter(|t| !t.trim().is_empty()),
        })
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        self.send(Method::GET, path, query, None::<&()>).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        self.send(Method::POST, path, &[], Some(body)).await
    }

    pub async fn put<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        self.send(Method::PUT, path, &[], Some(body)).await
    }

    pub async fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        self.send(Method::PATCH, path, &[], Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        self.send(Method::DELETE, path, query, None::<&()>).await
    }

    /// Sends one request and decodes the answer; an empty answer (204) decodes as `null`.
    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(token) = &self.token {
            req = req.bearer_auth(token.trim());
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.transport_error(e))?;
        if !status.is_success() {
            return Err(error_from(status, &text).into());
        }
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "the server at {} sent an answer that is not JSON ({e})",
                    self.base
                )
            })?
        };
        serde_json::from_value(value).map_err(|e| {
            anyhow::anyhow!(
                "the server at {} sent an answer this steward does not understand ({e}); are the CLI and server the same version?",
                self.base
            )
        })
    }

    fn transport_error(&self, e: reqwest::Error) -> anyhow::Error {
        if e.is_connect() || e.is_timeout() {
            anyhow::anyhow!(
                "cannot reach the Steward server at {} ({}); is `steward serve` running there? Set --url or STEWARD_URL to its address",
                self.base,
                root_cause(&e)
            )
        } else {
            anyhow::anyhow!("request to {} failed: {}", self.base, root_cause(&e))
        }
    }
}

/// The innermost cause of a transport error ("Connection refused"), which says the most.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// An [`ApiError`] from an error answer; a body that is not `{code, message}` (a proxy's
/// page, say) is kept as the message.
fn error_from(status: StatusCode, body: &str) -> ApiError {
    #[derive(serde::Deserialize)]
    struct Body {
        code: String,
        message: String,
    }
    match serde_json::from_str::<Body>(body) {
        Ok(b) => ApiError {
            status,
            code: b.code,
            message: b.message,
        },
        Err(_) => {
            let text = body.trim();
            ApiError {
                status,
                code: format!("http_{}", status.as_u16()),
                message: if text.is_empty() {
                    format!("the server answered {status}")
                } else {
                    format!(
                        "the server answered {status}: {}",
                        text.chars().take(300).collect::<String>()
                    )
                },
            }
        }
    }
}

/// Percent-encodes one path segment (a name typed by the user).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_status() {
        let e = |s: u16| error_from(StatusCode::from_u16(s).unwrap(), "").exit_code();
        assert_eq!(e(400), exit::USAGE);
        assert_eq!(e(401), exit::AUTH);
        assert_eq!(e(403), exit::AUTH);
        assert_eq!(e(404), exit::NOT_FOUND);
        assert_eq!(e(409), exit::CONFLICT);
        assert_eq!(e(422), exit::USAGE);
        assert_eq!(e(500), exit::FAILURE);
    }

    #[test]
    fn error_bodies_keep_the_server_message() {
        let e = error_from(
            StatusCode::CONFLICT,
            r#"{"code":"instance_exists","message":"an instance named a already exists"}"#,
        );
        assert_eq!(
            e.to_string(),
            "an instance named a already exists (instance_exists)"
        );
        let e = error_from(StatusCode::BAD_GATEWAY, "<html>bad gateway</html>");
        assert_eq!(e.code, "http_502");
        assert!(e.message.contains("bad gateway"), "{}", e.message);
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("acme-prod"), "acme-prod");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }
}
