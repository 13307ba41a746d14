//! What every handler of the node's HTTP surface shares: the ARI error (a
//! status and `{"message": ...}`), parameters read the way Asterisk reads
//! them (the query string, then a form or JSON body: ARCHITECTURE.md, *ARI
//! facts: REST conventions*), and the extractors of a path id and of a
//! control API JSON body.
//!
//! `rest/` (every ARI and control handler) and `ws.rs` (the event
//! websocket's upgrade) both answer with these; nothing here knows a node's
//! state.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Largest request body read (Asterisk's `MAX_CONTENT_LENGTH`); more is 413.
pub(crate) const MAX_BODY: usize = 40_960;

/// An ARI error: a status and `{"message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AriError {
    status: u16,
    message: String,
}

impl AriError {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        AriError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for AriError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(json!({"message": self.message}))).into_response()
    }
}

/// What a handler answers: a response, or an ARI error.
pub(crate) type AriResult = Result<Response, AriError>;

/// 204 with an empty body.
pub(crate) fn no_content() -> AriResult {
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// 200 with `v` as its JSON body.
pub(crate) fn ok(v: Value) -> AriResult {
    Ok((StatusCode::OK, axum::Json(v)).into_response())
}

/// Cuts user input quoted in a message to a sane length.
pub(crate) fn clip(s: &str) -> String {
    s.chars().take(128).collect()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode(raw: &[u8]) -> Result<String, AriError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < raw.len() => match (hex(raw[i + 1]), hex(raw[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| AriError::new(400, "Invalid UTF-8 in request parameters"))
}

/// Parses `a=1&b=2` (percent and `+` decoding) into `into`; later keys win.
pub(crate) fn parse_urlencoded(
    raw: &[u8],
    into: &mut HashMap<String, String>,
) -> Result<(), AriError> {
    for pair in raw.split(|b| *b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        into.insert(decode(k)?, decode(v)?);
    }
    Ok(())
}

/// An operation's parameters: query string, then form or JSON body.
#[derive(Debug, Default)]
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    /// The value if present and non-empty (Asterisk's `ast_strlen_zero`).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = AriError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, AriError> {
        let (parts, body) = req.into_parts();
        let mut map = HashMap::new();
        if let Some(q) = parts.uri.query() {
            parse_urlencoded(q.as_bytes(), &mut map)?;
        }
        let bytes = axum::body::to_bytes(body, MAX_BODY)
            .await
            .map_err(|_| AriError::new(413, "Request Entity Too Large"))?;
        if bytes.is_empty() {
            return Ok(Params(map));
        }
        let ctype = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if ctype.starts_with("application/json") {
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|_| AriError::new(400, "Error parsing request body"))?;
            if let Value::Object(obj) = v {
                for (k, v) in obj {
                    let s = match v {
                        Value::String(s) => s,
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Array(items) => items
                            .iter()
                            .map(|i| match i {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            })
                            .collect::<Vec<_>>()
                            .join(","),
                        // `variables` and other containers are not modelled.
                        Value::Object(_) | Value::Null => continue,
                    };
                    map.insert(k, s);
                }
            }
        } else if ctype.starts_with("application/x-www-form-urlencoded") {
            parse_urlencoded(&bytes, &mut map)?;
        }
        Ok(Params(map))
    }
}

/// The one path parameter of a route; an undecodable one is simply not
/// found.
pub(crate) struct Id(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = AriError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AriError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(s)| Id(s))
            .map_err(|_| AriError::new(404, "Resource not found"))
    }
}

/// A JSON body of the control API.
pub(crate) struct SimJson(pub(crate) Value);

impl<S: Send + Sync> FromRequest<S> for SimJson {
    type Rejection = AriError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AriError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| AriError::new(413, "Request Entity Too Large"))?;
        if bytes.len() > MAX_BODY {
            return Err(AriError::new(413, "Request Entity Too Large"));
        }
        serde_json::from_slice(&bytes)
            .map(SimJson)
            .map_err(|e| AriError::new(400, format!("Invalid JSON body: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencoded_values_decode() {
        let mut m = HashMap::new();
        parse_urlencoded(b"endpoint=PJSIP%2Fsip%3Atok%40h&x=a+b&y&z=%zz", &mut m).expect("ok");
        assert_eq!(m["endpoint"], "PJSIP/sip:tok@h");
        assert_eq!(m["x"], "a b");
        assert_eq!(m["y"], "");
        assert_eq!(m["z"], "%zz");
        assert!(parse_urlencoded(b"a=%ff%fe", &mut m).is_err());
        parse_urlencoded(b"t=%4", &mut m).expect("short escape kept");
        assert_eq!(m["t"], "%4");
    }
}
