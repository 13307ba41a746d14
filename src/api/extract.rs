//! Extractors whose rejections are [`ApiError`]s, so that no input (bad
//! JSON, oversized body, bad query, undecodable path) ever gets a plain-text
//! answer; and [`Authorized`], the bearer-token guard of the routes that
//! change state or reveal tokens.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;

/// `Json<T>` with JSON errors: malformed → 400 `malformed_json`, too large →
/// 413 `body_too_large`, no JSON content type → 415.
#[derive(Debug)]
pub struct AppJson<T>(pub T);

fn json_rejection(r: JsonRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::BodyTooLarge;
    }
    match r {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        other => ApiError::MalformedJson(other.body_text()),
    }
}

impl<T, S> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        <axum::Json<T> as FromRequest<S>>::from_request(req, state)
            .await
            .map(|axum::Json(v)| AppJson(v))
            .map_err(json_rejection)
    }
}

/// An optional JSON body: an empty body without a content type is `None`;
/// anything else must be valid JSON as for [`AppJson`].
impl<T, S> OptionalFromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        if req.headers().contains_key(axum::http::header::CONTENT_TYPE) {
            return <Self as FromRequest<S>>::from_request(req, state)
                .await
                .map(Some);
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::BodyTooLarge
                } else {
                    ApiError::MalformedJson(r.body_text())
                }
            })?;
        if bytes.is_empty() {
            Ok(None)
        } else {
            Err(ApiError::UnsupportedMediaType)
        }
    }
}

/// `Query<T>` with a JSON 400 `bad_query`.
#[derive(Debug)]
pub struct AppQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for AppQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| AppQuery(q.0))
            .map_err(|r: QueryRejection| ApiError::BadQuery(r.body_text()))
    }
}

/// `Path<T>` with a JSON 404 `bad_path` (a segment that does not decode names
/// nothing).
#[derive(Debug)]
pub struct AppPath<T>(pub T);

impl<T, S> FromRequestParts<S> for AppPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| AppPath(p.0))
            .map_err(|r: PathRejection| ApiError::BadPath(r.body_text()))
    }
}

/// Proof that the request carries the configured bearer token (or that no
/// token is configured). Take it as a handler argument to protect a route.
#[derive(Debug, Clone, Copy)]
pub struct Authorized;

impl FromRequestParts<AppState> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let given = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                // The scheme is case-insensitive (RFC 9110 §11.1).
                let (scheme, token) = v.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then_some(token.trim())
            });
        if state.auth.allows(given) {
            Ok(Authorized)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}
