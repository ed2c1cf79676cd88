//! The web console: plain ES modules under `api/web/`, embedded in the binary (no build step,
//! nothing to install at run time), served at `/` and `/assets/...`; and, only for
//! `triad serve --demo`, `GET /demo/tokens` for the sign-in page.

use crate::http::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use triad_domain::{Role, UserId};

/// Every file the console serves, by its path under `api/web/` (and under `/assets/`).
/// `include_bytes!` makes cargo rebuild when one changes; a test checks that every file in
/// the folder is listed here.
macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $path)) as &[u8])),*]
    };
}

static ASSETS: &[(&str, &[u8])] = assets![
    "index.html",
    "style.css",
    "app.js",
    "lib/gql.js",
    "lib/ui.js",
    "pages/signin.js",
    "pages/auctions.js",
    "pages/patients.js",
    "pages/donations.js",
    "pages/admin.js",
    "vendor/README.txt",
    "vendor/graphql-ws/client.js",
    "vendor/graphql-ws/common-CGW11Fyb.js",
    "vendor/graphql-ws/LICENSE.md",
    "vendor/uplot/uPlot.esm.js",
    "vendor/uplot/uPlot.min.css",
    "vendor/uplot/LICENSE",
];

struct Asset {
    bytes: &'static [u8],
    content_type: &'static str,
    etag: HeaderValue,
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

/// FNV-1a: a stable content hash for the ETag (not a security boundary).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn table() -> &'static HashMap<&'static str, Asset> {
    static TABLE: OnceLock<HashMap<&'static str, Asset>> = OnceLock::new();
    TABLE.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(path, bytes)| {
                let etag = HeaderValue::from_str(&format!("\"{:016x}\"", fnv1a(bytes)))
                    .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
                let asset = Asset {
                    bytes,
                    content_type: content_type(path),
                    etag,
                };
                (*path, asset)
            })
            .collect()
    })
}

/// Serves one embedded file. Paths are not versioned, so browsers revalidate every time
/// (`no-cache`) and get a 304 while the ETag matches: a new binary never serves stale code.
fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = table().get(path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let cache = (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if headers.get(header::IF_NONE_MATCH) == Some(&asset.etag) {
        return (
            StatusCode::NOT_MODIFIED,
            [cache, (header::ETAG, asset.etag.clone())],
        )
            .into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            cache,
            (header::ETAG, asset.etag.clone()),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        asset.bytes,
    )
        .into_response()
}

pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

/// Someone the demo lets you sign in as.
#[derive(Debug, Clone)]
pub struct DemoIdentity {
    pub sub: UserId,
    pub role: Role,
    /// What the sign-in page shows, e.g. "Dr. Demo, 2 patients".
    pub label: String,
}

/// Set once by `triad serve --demo` after the demo data is loaded; empty otherwise, and then
/// `/demo/tokens` does not exist (404): a real deployment never mints tokens over HTTP.
pub type DemoSwitch = Arc<OnceLock<Vec<DemoIdentity>>>;

/// Lifetime of the tokens the demo hands out.
const DEMO_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(12 * 3_600);

pub async fn demo_tokens(State(app): State<AppState>) -> Response {
    let Some(identities) = app.demo.get() else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let mut out = Vec::with_capacity(identities.len());
    for who in identities {
        match app.auth.mint(&who.sub, who.role, DEMO_TOKEN_TTL) {
            Ok(token) => out.push(serde_json::json!({
                "sub": who.sub.to_string(),
                "role": who.role.as_str(),
                "label": who.label,
                "token": token,
            })),
            Err(e) => {
                tracing::error!(error = %e, "minting a demo token");
                return (StatusCode::INTERNAL_SERVER_ERROR, "cannot mint tokens").into_response();
            }
        }
    }
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({ "identities": out })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, base, out);
            } else {
                let rel = path.strip_prefix(base).unwrap().to_string_lossy();
                out.push(rel.replace('\\', "/"));
            }
        }
    }

    #[test]
    fn every_file_of_the_console_is_embedded() {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let mut on_disk = vec![];
        files(&base, &base, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|(p, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "list new console files in web.rs ASSETS");
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(
            content_type("vendor/uplot/uPlot.min.css"),
            "text/css; charset=utf-8"
        );
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(
            content_type("vendor/uplot/LICENSE"),
            "text/plain; charset=utf-8"
        );
    }
}
