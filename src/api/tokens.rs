//! `/v1/tokens`: what a destination app needs to resume a redirected call:
//! read a token (room, origin, caller, hops) and consume it, once, on the
//! node it was minted for.
//!
//! Tokens are capabilities: both routes need the bearer token, and only a
//! token's 8-character prefix is ever logged. A token id that is not even
//! well-formed cannot exist, so it is `token_not_found` like an unknown one.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{AppJson, AppPath, Authorized};
use super::rooms::configured_node;
use crate::domain::{ChannelId, NodeId, RoomKind, RoomName, TokenId};
use crate::store::{Consumed, TokenRecord};

/// A token's grant.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    /// The room's kind.
    #[schema(value_type = RoomKind)]
    pub kind: String,
    /// The room's name.
    #[schema(value_type = RoomName)]
    pub room: String,
    /// The node the channel was redirected from.
    #[schema(value_type = NodeId)]
    pub origin: String,
    /// The only node that may consume it.
    #[schema(value_type = NodeId)]
    pub destination: String,
    /// The channel on the origin node.
    #[schema(value_type = ChannelId)]
    pub channel: String,
    /// The caller id to restore.
    pub caller: String,
    /// Redirects this call has had.
    pub hops: u32,
    /// When it was minted (store clock, Unix ms).
    pub minted_ms: u64,
    /// When it expires (store clock, Unix ms).
    pub expires_ms: u64,
}

impl From<TokenRecord> for TokenView {
    fn from(r: TokenRecord) -> Self {
        TokenView {
            kind: r.grant.room.kind.to_string(),
            room: r.grant.room.name.to_string(),
            origin: r.grant.from.to_string(),
            destination: r.grant.to.to_string(),
            channel: r.grant.channel.to_string(),
            caller: r.grant.caller,
            hops: r.grant.hops,
            minted_ms: r.minted_ms,
            expires_ms: r.expires_ms,
        }
    }
}

/// Body of `POST /v1/tokens/{token}/consume`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumeRequest {
    /// The node the redirected call arrived on.
    #[schema(value_type = NodeId)]
    pub node: String,
}

fn token_id(s: &str) -> Result<TokenId, ApiError> {
    TokenId::new(s).map_err(|_| ApiError::TokenNotFound)
}

/// Reads a token without consuming it (an expired one too, for a while).
#[utoipa::path(get, path = "/v1/tokens/{token}", tag = "tokens", operation_id = "get_token",
    params(("token" = TokenId, Path, description = "The token")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The grant", body = TokenView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`token_not_found`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub async fn get(
    _: Authorized,
    State(st): State<AppState>,
    AppPath(token): AppPath<String>,
) -> Result<Json<TokenView>, ApiError> {
    let token = token_id(&token)?;
    let rec = st
        .controller
        .peek_token(&token)
        .await?
        .ok_or(ApiError::TokenNotFound)?;
    Ok(Json(rec.into()))
}

/// Consumes a token: works once, only on its destination node.
#[utoipa::path(post, path = "/v1/tokens/{token}/consume", tag = "tokens",
    params(("token" = TokenId, Path, description = "The token")),
    request_body(content = ConsumeRequest, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Consumed: the grant", body = TokenView),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`token_not_found` (never minted, consumed, long gone), `unknown_node`", body = ErrorBody),
        (status = 409, description = "`token_wrong_node`: not consumed", body = ErrorBody),
        (status = 410, description = "`token_expired`: not consumed", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub async fn consume(
    _: Authorized,
    State(st): State<AppState>,
    AppPath(token): AppPath<String>,
    AppJson(req): AppJson<ConsumeRequest>,
) -> Result<Json<TokenView>, ApiError> {
    let node = configured_node(&st, &req.node)?;
    let token = token_id(&token)?;
    match st.controller.consume_token(&token, &node).await? {
        Consumed::Ok(rec) => Ok(Json(rec.into())),
        Consumed::WrongNode(rec) => Err(ApiError::TokenWrongNode(rec.grant.to)),
        Consumed::Expired(_) => Err(ApiError::TokenExpired),
        Consumed::Unknown => Err(ApiError::TokenNotFound),
    }
}
