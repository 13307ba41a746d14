//! The HTTP API: `router(state)` builds the whole surface, so tests can call
//! it without a socket.
//!
//! Routes so far: `GET /v1/rooms` (the room map), `GET /healthz`,
//! `GET /readyz`, `GET /metrics`.

pub mod error;
pub mod rooms;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::controller::Controller;
use crate::store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The store (rooms, nodes, tokens).
    pub store: Arc<dyn Store>,
    /// The controller (node streams, metrics, events).
    pub controller: Controller,
}

/// Builds the whole HTTP surface.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/rooms", get(rooms::list))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(error::not_found)
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(st): State<AppState>) -> impl IntoResponse {
    let store_ok = st.store.ping().await.is_ok();
    let nodes = st.controller.nodes_streaming();
    let streaming = nodes.iter().filter(|(_, up)| *up).count();
    let ready = store_ok && streaming > 0;
    let body = serde_json::json!({
        "ready": ready,
        "store": if store_ok { "ok" } else { "unreachable" },
        "nodes": nodes.iter().map(|(id, up)| serde_json::json!({"node": id, "streaming": up})).collect::<Vec<_>>(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.controller.metrics().encode(),
    )
}
