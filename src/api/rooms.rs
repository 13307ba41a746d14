//! `/v1/rooms`: the room map (list, one room with its members) for
//! operators, and the two decisions apps ask for: placement ("where does
//! this room live?") and colocate ("bring this channel to its room").
//!
//! The decisions are the controller's ([`Controller::placement`],
//! [`Controller::colocate`]); these handlers only translate.
//!
//! [`Controller::placement`]: crate::controller::Controller::placement
//! [`Controller::colocate`]: crate::controller::Controller::colocate

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{AppJson, AppPath, AppQuery, Authorized};
use super::ids::Cursor;
use crate::controller::apps::Colocated;
use crate::domain::{ChannelId, NodeId, RoomKey, RoomKind, RoomName, TokenId};
use crate::store::{Placement, RoomFilter};

/// The default page size of `GET /v1/rooms`.
pub const DEFAULT_PAGE: usize = 100;
/// The largest page size of `GET /v1/rooms`.
pub const MAX_PAGE: usize = 1000;

/// Query of `GET /v1/rooms`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only rooms on this node.
    #[param(value_type = Option<NodeId>)]
    pub node: Option<String>,
    /// Only rooms of this kind (`conference` or `queue`).
    #[param(value_type = Option<RoomKind>)]
    pub kind: Option<String>,
    /// The `next` of the previous page.
    #[param(value_type = Option<Cursor>)]
    pub cursor: Option<String>,
    /// Page size (default 100, at most 1000: a larger one is read as 1000).
    #[serde(default, deserialize_with = "page_size")]
    pub limit: Option<usize>,
}

/// `limit` is any whole number: one too large for a `usize` is clamped like
/// any other above [`MAX_PAGE`], so the document's "integer, minimum 0"
/// is what the server takes.
fn page_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(serde::de::Error::custom(
            "limit must be a whole number (at most 1000 are used)",
        ));
    }
    Ok(Some(text.parse().unwrap_or(usize::MAX)))
}

/// One row of the room map.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, Eq, ToSchema)]
pub struct RoomRow {
    /// `conference` or `queue`.
    #[schema(value_type = RoomKind)]
    pub kind: String,
    /// Room name.
    #[schema(value_type = RoomName)]
    pub name: String,
    /// Owning node.
    #[schema(value_type = NodeId)]
    pub node: String,
    /// Placement epoch (grows on every change of owner).
    pub epoch: u64,
    /// Members now.
    pub members: u32,
    /// When it was placed (store clock, Unix ms).
    pub created_ms: u64,
    /// Since when it has been empty (Unix ms), if empty.
    pub empty_since_ms: Option<u64>,
}

impl From<Placement> for RoomRow {
    fn from(p: Placement) -> Self {
        RoomRow {
            kind: p.room.kind.to_string(),
            name: p.room.name.to_string(),
            node: p.node.to_string(),
            epoch: p.epoch.0,
            members: p.members,
            created_ms: p.created_ms,
            empty_since_ms: p.empty_since_ms,
        }
    }
}

/// A page of the room map.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RoomList {
    /// The rooms, ordered by (node, kind, name).
    pub rooms: Vec<RoomRow>,
    /// Cursor of the next page; absent on the last page.
    pub next: Option<String>,
}

/// A channel in a room.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, Eq, ToSchema)]
pub struct MemberView {
    /// The node the channel is on.
    #[schema(value_type = NodeId)]
    pub node: String,
    /// The channel id.
    #[schema(value_type = ChannelId)]
    pub channel: String,
    /// `caller`, `agent`, ...
    pub role: String,
    /// When it joined (Unix ms).
    pub joined_ms: u64,
}

/// One room with its members.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RoomDetailView {
    /// The placement.
    #[serde(flatten)]
    pub room: RoomRow,
    /// Its members, sorted by channel.
    pub member_list: Vec<MemberView>,
}

/// Body of `POST /v1/rooms/{kind}/{name}/placement` (optional).
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementRequest {
    /// The node the call landed on: preferred for a new room.
    #[schema(value_type = Option<NodeId>)]
    pub landing_node: Option<String>,
}

/// Where a room lives.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlacementView {
    /// The owner.
    #[schema(value_type = NodeId)]
    pub node: String,
    /// Where SIP reaches it (`host:port`).
    pub sip_host: String,
    /// The placement's epoch.
    pub epoch: u64,
    /// True when this request placed the room.
    pub created: bool,
}

/// Body of `POST /v1/rooms/{kind}/{name}/colocate`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ColocateRequest {
    /// The node the channel is on.
    #[schema(value_type = NodeId)]
    pub node: String,
    /// The channel (ARI channel id), still in the app's Stasis.
    #[schema(value_type = ChannelId)]
    pub channel: String,
}

/// corral's decision for a channel.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ColocateView {
    /// `stay` (the channel is on the room's node) or `redirect` (corral
    /// minted a token and redirected the channel).
    pub action: String,
    /// The room's node.
    #[schema(value_type = NodeId)]
    pub node: String,
    /// The placement's epoch.
    pub epoch: u64,
    /// The token the destination will see (redirect only).
    #[schema(value_type = Option<TokenId>)]
    pub token: Option<String>,
    /// The endpoint the redirect used (redirect only).
    pub endpoint: Option<String>,
}

fn room_key(kind: &str, name: &str) -> Result<RoomKey, ApiError> {
    RoomKey::parse(kind, name).map_err(ApiError::from_room)
}

/// A configured node, or `unknown_node`.
pub(crate) fn configured_node(st: &AppState, id: &str) -> Result<NodeId, ApiError> {
    NodeId::new(id)
        .ok()
        .filter(|n| st.controller.sip_host(n).is_some())
        .ok_or_else(|| ApiError::UnknownNode(id.chars().take(64).collect()))
}

/// The room map, one page at a time.
#[utoipa::path(get, path = "/v1/rooms", tag = "rooms", operation_id = "list_rooms", params(ListQuery),
    responses(
        (status = 200, description = "A page of rooms", body = RoomList),
        (status = 400, description = "`bad_kind`, `bad_query` (limit, cursor, node)", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub async fn list(
    State(st): State<AppState>,
    AppQuery(q): AppQuery<ListQuery>,
) -> Result<Json<RoomList>, ApiError> {
    let node = q
        .node
        .map(NodeId::new)
        .transpose()
        .map_err(|e| ApiError::BadQuery(format!("node: {e}")))?;
    let kind = q
        .kind
        .map(|k| k.parse::<RoomKind>())
        .transpose()
        .map_err(ApiError::BadKind)?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let page = st
        .store
        .list_rooms(&RoomFilter { node, kind }, q.cursor.as_deref(), limit)
        .await?;
    Ok(Json(RoomList {
        rooms: page.rooms.into_iter().map(RoomRow::from).collect(),
        next: page.next,
    }))
}

/// One room and its members.
#[utoipa::path(get, path = "/v1/rooms/{kind}/{name}", tag = "rooms", operation_id = "get_room",
    params(("kind" = RoomKind, Path, description = "`conference` or `queue`"),
           ("name" = RoomName, Path, description = "Room name")),
    responses(
        (status = 200, description = "The room", body = RoomDetailView),
        (status = 400, description = "`bad_kind`, `bad_name`", body = ErrorBody),
        (status = 404, description = "`room_not_found`, `bad_path`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub async fn get(
    State(st): State<AppState>,
    AppPath((kind, name)): AppPath<(String, String)>,
) -> Result<Json<RoomDetailView>, ApiError> {
    let room = room_key(&kind, &name)?;
    let detail = st
        .store
        .get_room(&room)
        .await?
        .ok_or_else(|| ApiError::RoomNotFound(room.to_string()))?;
    Ok(Json(RoomDetailView {
        room: detail.placement.into(),
        member_list: detail
            .members
            .into_iter()
            .map(|m| MemberView {
                node: m.node.to_string(),
                channel: m.channel.to_string(),
                role: m.role.as_str().to_owned(),
                joined_ms: m.joined_ms,
            })
            .collect(),
    }))
}

/// Resolves the room's placement, creating it if needed (preferring
/// `landing_node`).
#[utoipa::path(post, path = "/v1/rooms/{kind}/{name}/placement", tag = "rooms",
    params(("kind" = RoomKind, Path, description = "`conference` or `queue`"),
           ("name" = RoomName, Path, description = "Room name")),
    // Optional but not nullable: no body (or an empty one) has no landing
    // node, while `null` is not a `PlacementRequest` (`malformed_json`). A
    // `ref` body is not marked required; `Option<_>` would add `null`.
    request_body(content = ref("#/components/schemas/PlacementRequest"), content_type = "application/json",
        description = "Optional; no body (an empty one, without `Content-Type`) has no landing node"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The placement", body = PlacementView),
        (status = 400, description = "`bad_kind`, `bad_name`, `malformed_json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`unknown_node` (landing node), `bad_path`", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 503, description = "`no_eligible_node`, `store_unavailable`", body = ErrorBody),
    ))]
pub async fn placement(
    _: Authorized,
    State(st): State<AppState>,
    AppPath((kind, name)): AppPath<(String, String)>,
    body: Option<AppJson<PlacementRequest>>,
) -> Result<Json<PlacementView>, ApiError> {
    let room = room_key(&kind, &name)?;
    let landing = match body.and_then(|b| b.0.landing_node) {
        Some(l) => Some(configured_node(&st, &l)?),
        None => None,
    };
    let p = st.controller.placement(&room, landing.as_ref()).await?;
    Ok(Json(PlacementView {
        node: p.node.to_string(),
        sip_host: p.sip_host,
        epoch: p.epoch.0,
        created: p.created,
    }))
}

/// Brings a channel to its room: `stay`, or a token minted and the channel
/// redirected to the room's node (answered channels move by SIP REFER).
#[utoipa::path(post, path = "/v1/rooms/{kind}/{name}/colocate", tag = "rooms",
    params(("kind" = RoomKind, Path, description = "`conference` or `queue`"),
           ("name" = RoomName, Path, description = "Room name")),
    request_body(content = ColocateRequest, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The decision (and the redirect, done)", body = ColocateView),
        (status = 400, description = "`bad_kind`, `bad_name`, `bad_channel`, `malformed_json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`unknown_node`, `channel_not_found`, `bad_path`", body = ErrorBody),
        (status = 409, description = "`channel_not_movable`: not in Stasis, or in a state that cannot move", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 502, description = "`node_unavailable`: the channel's node did not answer", body = ErrorBody),
        (status = 503, description = "`no_eligible_node`, `store_unavailable`", body = ErrorBody),
    ))]
pub async fn colocate(
    _: Authorized,
    State(st): State<AppState>,
    AppPath((kind, name)): AppPath<(String, String)>,
    AppJson(req): AppJson<ColocateRequest>,
) -> Result<Json<ColocateView>, ApiError> {
    let room = room_key(&kind, &name)?;
    let node = configured_node(&st, &req.node)?;
    let channel = ChannelId::new(req.channel).map_err(ApiError::BadChannel)?;
    let view = match st.controller.colocate(&room, &node, &channel).await? {
        Colocated::Stay { node, epoch } => ColocateView {
            action: "stay".into(),
            node: node.to_string(),
            epoch: epoch.0,
            token: None,
            endpoint: None,
        },
        Colocated::Redirect {
            to,
            token,
            endpoint,
            epoch,
        } => ColocateView {
            action: "redirect".into(),
            node: to.to_string(),
            epoch: epoch.0,
            token: Some(token.to_string()),
            endpoint: Some(endpoint),
        },
    };
    Ok(Json(view))
}
