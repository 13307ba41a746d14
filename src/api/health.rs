//! `/healthz` (the process answers), `/readyz` (the store answers and at
//! least one node's event stream is held by this replica) and `/metrics`
//! (Prometheus text; every name is in `crate::telemetry`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use crate::domain::NodeId;

/// `/readyz`'s body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// Store reachable and at least one node stream held.
    pub ready: bool,
    /// `ok` or `unreachable`.
    pub store: String,
    /// Each configured node and whether its stream is up.
    pub nodes: Vec<NodeStream>,
}

/// One node's stream.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeStream {
    /// Node id.
    #[schema(value_type = NodeId)]
    pub node: String,
    /// Whether this replica holds its event stream.
    pub streaming: bool,
}

/// Alive.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String)))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready to serve: store reachable, node streams held.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Store unreachable or no node stream held", body = Readiness),
    ))]
pub async fn readyz(State(st): State<AppState>) -> impl IntoResponse {
    let store_ok = st.store.ping().await.is_ok();
    let nodes: Vec<NodeStream> = st
        .controller
        .nodes_streaming()
        .into_iter()
        .map(|(id, up)| NodeStream {
            node: id.to_string(),
            streaming: up,
        })
        .collect();
    let ready = store_ok && nodes.iter().any(|n| n.streaming);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        ready,
        store: if store_ok { "ok" } else { "unreachable" }.to_owned(),
        nodes,
    };
    (status, Json(body))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.controller.metrics().encode(),
    )
}
