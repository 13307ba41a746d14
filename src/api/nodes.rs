//! `/v1/nodes`: every configured node with its state, load and rooms, and
//! whether corral's event stream to it is up; drain and undrain.
//!
//! Drain (`NodeState::Draining`) means no new rooms on the node; its running
//! rooms still take joiners, so their calls stay together. The room count
//! shows the drain's progress (`corral drain NODE --wait` follows it).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{AppPath, Authorized};
use super::rooms::configured_node;
use crate::domain::NodeId;
use crate::store::NodeRecord;

/// One node.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    /// The node id.
    #[schema(value_type = NodeId)]
    pub id: String,
    /// `up`, `draining`, `down`, or `unregistered` (configured, never seen).
    pub state: String,
    /// The operator's drain flag.
    pub draining: bool,
    /// Whether this corral replica holds the node's event stream now.
    pub streaming: bool,
    /// The Asterisk process's life (`<entity id>@<startup>`), if registered.
    pub incarnation: Option<String>,
    /// Where SIP reaches it.
    pub sip_host: String,
    /// Channels it is sized for.
    pub capacity: u32,
    /// Room cap, if any.
    pub max_rooms: Option<u32>,
    /// Reported channels.
    pub channels: u32,
    /// Load: channels / capacity.
    pub load: f64,
    /// Rooms it owns.
    pub rooms: u32,
    /// Members in its rooms.
    pub members: u32,
    /// Last registration or report (Unix ms).
    pub updated_ms: u64,
}

/// Every configured node.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeList {
    /// Sorted by id.
    pub nodes: Vec<NodeView>,
}

fn view(rec: &NodeRecord, streaming: bool) -> NodeView {
    NodeView {
        id: rec.id.to_string(),
        state: rec.state.as_str().to_owned(),
        draining: rec.draining,
        streaming,
        incarnation: rec.incarnation.as_ref().map(|i| i.to_string()),
        sip_host: rec.sip_host.clone(),
        capacity: rec.capacity,
        max_rooms: rec.max_rooms,
        channels: rec.channels,
        load: if rec.capacity == 0 {
            0.0
        } else {
            f64::from(rec.channels) / f64::from(rec.capacity)
        },
        rooms: rec.rooms,
        members: rec.members,
        updated_ms: rec.updated_ms,
    }
}

/// Every configured node, registered or not.
#[utoipa::path(get, path = "/v1/nodes", tag = "nodes", operation_id = "list_nodes",
    responses(
        (status = 200, description = "The nodes", body = NodeList),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub async fn list(State(st): State<AppState>) -> Result<Json<NodeList>, ApiError> {
    let records = st.store.list_nodes().await?;
    let mut nodes = Vec::new();
    for (id, streaming) in st.controller.nodes_streaming() {
        match records.iter().find(|r| r.id == id) {
            Some(rec) => nodes.push(view(rec, streaming)),
            None => nodes.push(NodeView {
                id: id.to_string(),
                state: "unregistered".into(),
                draining: false,
                streaming,
                incarnation: None,
                sip_host: st.controller.sip_host(&id).unwrap_or_default(),
                capacity: 0,
                max_rooms: None,
                channels: 0,
                load: 0.0,
                rooms: 0,
                members: 0,
                updated_ms: 0,
            }),
        }
    }
    // Nodes another replica's configuration registered are shown too.
    for rec in &records {
        if !nodes.iter().any(|n| n.id == rec.id.as_str()) {
            nodes.push(view(rec, false));
        }
    }
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(NodeList { nodes }))
}

async fn set_drain(st: &AppState, id: &str, draining: bool) -> Result<Json<NodeView>, ApiError> {
    let node = configured_node(st, id)?;
    let rec = st.controller.set_drain(&node, draining).await?;
    let streaming = st
        .controller
        .nodes_streaming()
        .iter()
        .any(|(n, up)| n == &node && *up);
    Ok(Json(view(&rec, streaming)))
}

/// Drains the node: no new rooms there; its running rooms still take
/// joiners. Idempotent.
#[utoipa::path(post, path = "/v1/nodes/{id}/drain", tag = "nodes",
    params(("id" = NodeId, Path, description = "Node id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The node, draining", body = NodeView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`unknown_node`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub async fn drain(
    _: Authorized,
    State(st): State<AppState>,
    AppPath(id): AppPath<String>,
) -> Result<Json<NodeView>, ApiError> {
    set_drain(&st, &id, true).await
}

/// Undrains the node: it takes new rooms again. Idempotent.
#[utoipa::path(post, path = "/v1/nodes/{id}/undrain", tag = "nodes",
    params(("id" = NodeId, Path, description = "Node id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The node", body = NodeView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`unknown_node`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub async fn undrain(
    _: Authorized,
    State(st): State<AppState>,
    AppPath(id): AppPath<String>,
) -> Result<Json<NodeView>, ApiError> {
    set_drain(&st, &id, false).await
}
