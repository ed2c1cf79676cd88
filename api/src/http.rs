//! HTTP routes: POST/GET /graphql, GET /graphql/ws, /healthz, /readyz, /metrics, and the web
//! console (`/`, `/assets/...`, and `/demo/tokens` under `--demo`; see `web.rs`).

use crate::auth::Auth;
use crate::errors;
use crate::graphql::{Caller, TriadSchema};
use crate::ws::{self, engine::Engine, protocol::Protocol, WsConfig};
use async_graphql::http::GraphiQLSource;
use axum::body::Bytes;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use triad_eventstore::{EventStore, LogTail};
use triad_projections::ProjectionRunner;

/// Largest request body accepted (a GraphQL document with variables is small).
const MAX_BODY: usize = 256 * 1024;
/// Small client messages only: the default 128 KiB read buffer is zero-filled on every poll.
const WS_READ_BUFFER: usize = 4 * 1024;
/// A projection further behind the log than this is "not ready".
pub const READY_LAG_BOUND: i64 = 1_000;

#[derive(Clone)]
pub struct AppState {
    pub schema: TriadSchema,
    pub auth: Arc<Auth>,
    pub store: EventStore,
    pub tail: Arc<LogTail>,
    pub runner: Arc<ProjectionRunner>,
    pub metrics: PrometheusHandle,
    pub engine: Arc<Engine>,
    pub ws: WsConfig,
    /// Demo identities for the console's sign-in (`--demo` only).
    pub demo: crate::web::DemoSwitch,
}

pub fn router(state: AppState) -> Router {
    let request_id = axum::http::HeaderName::from_static("x-request-id");
    Router::new()
        .route("/graphql", get(graphiql).post(graphql_post))
        .route("/graphql/ws", get(graphql_ws))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(crate::web::index))
        .route("/assets/{*path}", get(crate::web::asset))
        .route("/demo/tokens", get(crate::web::demo_tokens))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .finish(),
    )
}

fn error_body(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "data": null,
        "errors": [{ "message": message, "extensions": { "code": code } }]
    });
    (status, Json(body)).into_response()
}

async fn graphql_post(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("?"));
    let actor = match app.auth.from_header(authorization) {
        Ok(actor) => actor,
        Err(e) => return error_body(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", &e.to_string()),
    };
    let batch: async_graphql::BatchRequest = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error_body(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                &format!("the body is not a GraphQL request in JSON: {e}"),
            )
        }
    };
    let span = tracing::info_span!("graphql", request_id = %request_id, sub = actor.as_ref().map(|a| a.sub.to_string()).unwrap_or_default());
    let _guard = span.enter();
    let caller = Caller { actor, request_id };
    let batch = batch.data(caller);
    let mut response = app.schema.execute_batch(batch).await;
    match &mut response {
        async_graphql::BatchResponse::Single(r) => errors::ensure_codes(r),
        async_graphql::BatchResponse::Batch(rs) => rs.iter_mut().for_each(errors::ensure_codes),
    }
    Json(response).into_response()
}

async fn graphql_ws(State(app): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    let upgrade = upgrade
        .read_buffer_size(WS_READ_BUFFER)
        .protocols(ws::protocol::SUBPROTOCOLS);
    let protocol = Protocol::from_header(upgrade.selected_protocol().and_then(|p| p.to_str().ok()));
    upgrade.on_upgrade(move |socket| ws::serve(socket, protocol, app.engine, app.auth, app.ws))
}

async fn readyz(State(app): State<AppState>) -> Response {
    let store_ok = app.store.ping().await.is_ok();
    let head = app.store.head().await.unwrap_or(0);
    let positions = app.runner.positions();
    let lagging: Vec<_> = positions
        .iter()
        .filter(|(_, p)| head - **p > READY_LAG_BOUND)
        .map(|(name, p)| format!("{name} at {p}"))
        .collect();
    let ready = store_ok && lagging.is_empty();
    let body = serde_json::json!({
        "ready": ready,
        "store": if store_ok { "ok" } else { "unreachable" },
        "head": head,
        "projections": positions,
        "lagging": lagging,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(app): State<AppState>) -> Response {
    metrics::gauge!("triad_log_head").set(app.tail.head() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}
