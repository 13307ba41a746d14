//! `ApiError`: every error the API returns, as a status and a JSON body
//! `{"error": {"code": "...", "message": "..."}}` with a stable `code`.
//! Internal failures are logged once here and their details never reach the
//! client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An API error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (bad kind, bad name, bad JSON).
    #[error("{0}")]
    BadRequest(String),
    /// No such route, room, node or token.
    #[error("{0}")]
    NotFound(String),
    /// The store cannot be reached; retry.
    #[error("store unavailable")]
    Unavailable(#[source] crate::store::Error),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        }
    }
}

impl From<crate::store::Error> for ApiError {
    fn from(e: crate::store::Error) -> Self {
        ApiError::Unavailable(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        if status.is_server_error() {
            tracing::warn!(reason = %self, source = ?std::error::Error::source(&self).map(|s| s.to_string()), "API request failed");
        }
        let body = serde_json::json!({"error": {"code": code, "message": self.to_string()}});
        (status, Json(body)).into_response()
    }
}

/// The fallback for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}
