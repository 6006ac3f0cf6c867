//! Static assets (stylesheet, icon) embedded in the binary and served at `/assets/{file}`.
//! Pages link them as `/assets/{file}?v={hash}`, so a new binary's assets get new URLs and
//! browsers may cache each one for a long time.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "steward.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/steward.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../assets/favicon.svg"),
    },
];

/// Each asset's content hash (the first 16 hex digits of its BLAKE3 hash).
fn hashes() -> &'static [String] {
    static HASHES: OnceLock<Vec<String>> = OnceLock::new();
    HASHES.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| blake3::hash(a.body).to_hex()[..16].to_owned())
            .collect()
    })
}

fn find(name: &str) -> Option<(&'static Asset, &'static str)> {
    ASSETS
        .iter()
        .zip(hashes())
        .find(|(a, _)| a.name == name)
        .map(|(a, h)| (a, h.as_str()))
}

/// The URL pages use for asset `name` (which must exist).
pub fn url(name: &str) -> String {
    let (asset, hash) = find(name).unwrap_or_else(|| panic!("no asset named {name}"));
    format!("/assets/{}?v={hash}", asset.name)
}

/// `GET /assets/{file}`: the asset with a long cache lifetime and an ETag.
pub async fn serve(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some((asset, hash)) = find(&file) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let etag = format!("\"{hash}\"");
    let cache = HeaderValue::from_static("public, max-age=604800");
    let fresh = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let etag = HeaderValue::from_str(&etag).expect("hex");
    if fresh {
        return (
            StatusCode::NOT_MODIFIED,
            [(ETAG, etag), (CACHE_CONTROL, cache)],
        )
            .into_response();
    }
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
            (ETAG, etag),
            (CACHE_CONTROL, cache),
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_urls_carry_the_content_hash() {
        let u = url("steward.css");
        assert!(u.starts_with("/assets/steward.css?v="), "{u}");
        assert_eq!(u.len(), "/assets/steward.css?v=".len() + 16);
    }
}
