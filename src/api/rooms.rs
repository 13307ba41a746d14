//! `GET /v1/rooms`: the room map.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use crate::domain::{NodeId, RoomKind};
use crate::store::RoomFilter;

/// Query of `GET /v1/rooms`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Only rooms on this node.
    pub node: Option<String>,
    /// Only rooms of this kind.
    pub kind: Option<String>,
    /// Where the previous page ended.
    pub cursor: Option<String>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// One row of the room map.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct RoomRow {
    /// `conference` or `queue`.
    pub kind: RoomKind,
    /// Room name.
    pub name: String,
    /// Owning node.
    pub node: NodeId,
    /// Placement epoch.
    pub epoch: u64,
    /// Members now.
    pub members: u32,
}

/// A page of the room map.
#[derive(Debug, Serialize, Deserialize)]
pub struct RoomList {
    /// The rooms.
    pub rooms: Vec<RoomRow>,
    /// Cursor of the next page, if any.
    pub next: Option<String>,
}

/// `GET /v1/rooms`.
pub async fn list(
    State(st): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<RoomList>, ApiError> {
    let node = q
        .node
        .map(NodeId::new)
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let kind = q
        .kind
        .map(|k| k.parse::<RoomKind>())
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let page = st
        .store
        .list_rooms(&RoomFilter { node, kind }, q.cursor.as_deref(), limit)
        .await?;
    Ok(Json(RoomList {
        rooms: page
            .rooms
            .into_iter()
            .map(|p| RoomRow {
                kind: p.room.kind,
                name: p.room.name.to_string(),
                node: p.node,
                epoch: p.epoch.0,
                members: p.members,
            })
            .collect(),
        next: page.next,
    }))
}
