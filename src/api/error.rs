//! `ApiError`: every error the API returns, as a status and a JSON body
//! `{"error": {"code": "...", "message": "..."}}` whose `code` is stable
//! (clients branch on it, never on the message).
//!
//! Bad input (4xx) goes back to the client and is not logged. Internal
//! failures (5xx) are logged once, by the middleware in [`super::log_failures`],
//! and the client only sees the code and a generic message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::controller::apps::AppError;
use crate::controller::queues::QueueError;
use crate::domain::{InvalidId, NodeId};

/// An API error. Each variant has one code and one status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `kind` is neither `conference` nor `queue`.
    #[error("{0}")]
    BadKind(InvalidId),
    /// The room name breaks the naming rules.
    #[error("{0}")]
    BadName(InvalidId),
    /// The channel id breaks the naming rules.
    #[error("{0}")]
    BadChannel(InvalidId),
    /// A query string parameter is malformed (e.g. `limit=abc`, bad cursor).
    #[error("{0}")]
    BadQuery(String),
    /// A path segment could not be decoded (not UTF-8): it names nothing,
    /// so this is a 404.
    #[error("{0}")]
    BadPath(String),
    /// The body is not the JSON the route expects.
    #[error("{0}")]
    MalformedJson(String),
    /// A body was sent without `Content-Type: application/json`.
    #[error("expected a request with `Content-Type: application/json`")]
    UnsupportedMediaType,
    /// The body is larger than [`super::BODY_LIMIT`].
    #[error("request body larger than {} bytes", super::BODY_LIMIT)]
    BodyTooLarge,
    /// No (or a wrong) bearer token on a protected route.
    #[error("this route needs `Authorization: Bearer <api.token>`")]
    Unauthorized,
    /// No such route.
    #[error("no such route")]
    RouteNotFound,
    /// The route exists, not with this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The room has no placement.
    #[error("room {0} is not placed")]
    RoomNotFound(String),
    /// The node is not configured (or not registered yet).
    #[error("node {0} is not a node of this farm")]
    UnknownNode(String),
    /// The token was never minted, was consumed, or is long gone.
    #[error("no such token")]
    TokenNotFound,
    /// The token was minted for another node; it was not consumed.
    #[error("token was minted for node {0}, not this one")]
    TokenWrongNode(NodeId),
    /// The token is past its expiry; it was not consumed.
    #[error("token expired")]
    TokenExpired,
    /// ARI does not know the channel on that node.
    #[error("channel not found on node {0}")]
    ChannelNotFound(NodeId),
    /// The channel is not in a Stasis app or not in a state that can move.
    #[error("channel cannot be redirected now: {0}")]
    ChannelNotMovable(String),
    /// No node may take a new room (all down, draining or full).
    #[error("no node is eligible for room {0}")]
    NoEligibleNode(String),
    /// The store cannot be reached; retry.
    #[error("store unavailable")]
    StoreUnavailable(#[source] crate::store::Error),
    /// A node's ARI failed or could not be reached.
    #[error("node unavailable")]
    NodeUnavailable(#[source] crate::ari::Error),
    /// The agent id breaks the naming rules.
    #[error("{0}")]
    BadAgent(InvalidId),
    /// A static member's endpoint (or template) is malformed, or the body
    /// gives both or neither of `endpoint` and `template`.
    #[error("{0}")]
    BadEndpoint(String),
    /// The queue has no state: it was never used (no caller, agent or
    /// member ever).
    #[error("queue {0} is not known (never used)")]
    QueueNotFound(String),
    /// The queue has no such agent.
    #[error("queue {queue} has no agent {agent}")]
    AgentNotFound {
        /// The queue.
        queue: String,
        /// The agent asked for.
        agent: String,
    },
    /// The agent id is logged in as a call-in agent: it cannot be a static
    /// member at the same time.
    #[error(
        "agent {agent} is logged in as a call-in agent on channel {channel}; it cannot be a static member too"
    )]
    AgentLoggedIn {
        /// The agent.
        agent: String,
        /// Its login call.
        channel: String,
    },
    /// The queue's stored document does not parse; an operator must look
    /// (the parse error is in the log, not in the answer).
    #[error("queue {queue} has a corrupt stored document (details in corral's log)")]
    QueueCorrupt {
        /// The queue.
        queue: String,
        /// The parse error.
        #[source]
        source: QueueError,
    },
    /// Other writers kept changing the queue; retry.
    #[error("queue {0} is changed too often to save now; try again")]
    QueueContended(String),
}

/// The JSON body of every error.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code, e.g. `room_not_found`.
    pub code: String,
    /// For people; may change.
    pub message: String,
}

impl ApiError {
    /// The status and the stable code.
    pub fn parts(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        match self {
            BadKind(_) => (StatusCode::BAD_REQUEST, "bad_kind"),
            BadName(_) => (StatusCode::BAD_REQUEST, "bad_name"),
            BadChannel(_) => (StatusCode::BAD_REQUEST, "bad_channel"),
            BadQuery(_) => (StatusCode::BAD_REQUEST, "bad_query"),
            BadPath(_) => (StatusCode::NOT_FOUND, "bad_path"),
            MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            RouteNotFound => (StatusCode::NOT_FOUND, "route_not_found"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            RoomNotFound(_) => (StatusCode::NOT_FOUND, "room_not_found"),
            UnknownNode(_) => (StatusCode::NOT_FOUND, "unknown_node"),
            TokenNotFound => (StatusCode::NOT_FOUND, "token_not_found"),
            TokenWrongNode(_) => (StatusCode::CONFLICT, "token_wrong_node"),
            TokenExpired => (StatusCode::GONE, "token_expired"),
            ChannelNotFound(_) => (StatusCode::NOT_FOUND, "channel_not_found"),
            ChannelNotMovable(_) => (StatusCode::CONFLICT, "channel_not_movable"),
            NoEligibleNode(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_eligible_node"),
            StoreUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            NodeUnavailable(_) => (StatusCode::BAD_GATEWAY, "node_unavailable"),
            BadAgent(_) => (StatusCode::BAD_REQUEST, "bad_agent"),
            BadEndpoint(_) => (StatusCode::BAD_REQUEST, "bad_endpoint"),
            QueueNotFound(_) => (StatusCode::NOT_FOUND, "queue_not_found"),
            AgentNotFound { .. } => (StatusCode::NOT_FOUND, "agent_not_found"),
            AgentLoggedIn { .. } => (StatusCode::CONFLICT, "agent_logged_in"),
            QueueCorrupt { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "queue_corrupt"),
            QueueContended(_) => (StatusCode::SERVICE_UNAVAILABLE, "queue_contended"),
        }
    }

    /// A room path (`kind`, `name`) that did not parse.
    pub fn from_room(e: InvalidId) -> Self {
        match e {
            InvalidId::Kind(_) => ApiError::BadKind(e),
            other => ApiError::BadName(other),
        }
    }
}

impl From<crate::store::Error> for ApiError {
    fn from(e: crate::store::Error) -> Self {
        use crate::store::Error as S;
        match e {
            S::UnknownNode { node } => ApiError::UnknownNode(node.to_string()),
            S::InvalidInput { what, reason } => ApiError::BadQuery(format!("{what}: {reason}")),
            other => ApiError::StoreUnavailable(other),
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::UnknownNode(n) => ApiError::UnknownNode(n.to_string()),
            AppError::NoEligibleNode(r) => ApiError::NoEligibleNode(r.to_string()),
            AppError::Store(s) => s.into(),
            AppError::Redirect(a) => match (&a, a.status()) {
                (crate::ari::Error::Status { node, .. }, Some(404)) => {
                    ApiError::ChannelNotFound(node.clone())
                }
                (crate::ari::Error::Status { message, .. }, Some(409 | 412)) => {
                    ApiError::ChannelNotMovable(message.chars().take(200).collect())
                }
                _ => ApiError::NodeUnavailable(a),
            },
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Store(s) => s.into(),
            QueueError::Corrupt { ref queue, .. } => ApiError::QueueCorrupt {
                queue: queue.to_string(),
                source: e,
            },
            QueueError::Contended(q) => ApiError::QueueContended(q.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        // Internal details stay in the log (the middleware reads this
        // extension); the client sees only the code and the summary.
        let internal = status
            .is_server_error()
            .then(|| InternalDetail(error_chain(&self)));
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: self.to_string(),
            },
        };
        let mut resp = (status, Json(body)).into_response();
        if let Some(d) = internal {
            resp.extensions_mut().insert(d);
        }
        resp
    }
}

/// The full cause chain of a 5xx, for the log line only.
#[derive(Debug, Clone)]
pub struct InternalDetail(pub String);

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The fallback for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::RouteNotFound
}

/// The fallback for a known route with another method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
