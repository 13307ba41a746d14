//! `GET /v1/route/{user}`: route ahead, the SIP proxy's lookup before it
//! dispatches a call ([`Controller::route_ahead`]).
//!
//! Made for Kamailio's `http_client` (`http_connect`) without a script:
//! - `200`, `text/plain`: the node's SIP URI and nothing else
//!   (`sip:10.0.0.11:5060`), what `$du` takes; `Corral-Node` names the node;
//! - `204`: no opinion (dispatch as usual); `Corral-No-Opinion` says why.
//!
//! Nothing the proxy can send makes it answer anything else: a user part
//! or a landing that does not parse is "no opinion", never a 4xx or 5xx.
//!
//! # Authentication
//!
//! None, also when `api.token` is set: the proxy holds no secret. The
//! answer tells where a room lives, which the open room map shows anyway,
//! and its one side effect (placing a new room) is the one a call's
//! arrival has; an unused placement is released after its linger. Keep
//! the API on the farm's private network, as ARI and Redis are.
//!
//! [`Controller::route_ahead`]: crate::controller::Controller::route_ahead

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::AppState;
use crate::controller::decide::{NoOpinion, RouteAnswer};

/// The path's prefix; the rest is the user part.
const PREFIX: &str = "/v1/route/";

/// The header naming the node of an answer.
pub const NODE_HEADER: &str = "corral-node";
/// The header giving the reason for no opinion.
pub const NO_OPINION_HEADER: &str = "corral-no-opinion";

/// Query of `GET /v1/route/{user}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RouteQuery {
    /// The node the proxy would pick (its id, or `sip:host:port` /
    /// `host:port` as in the dispatcher list): preferred for a new room.
    /// One that is not a configured node gets no opinion.
    pub landing: Option<String>,
}

/// Where to send a call: the node of its room.
#[utoipa::path(get, path = "/v1/route/{user}", tag = "route", operation_id = "route_ahead",
    params(
        ("user" = String, Path, description = "The request URI's user part as the proxy sees it \
            (`conf-<room>`, `queue-<name>`, `agent-<queue>-<agent>`); anything else gets no opinion"),
        RouteQuery,
    ),
    responses(
        (status = 200, description = "Send the call to this node: its SIP URI (`sip:host:port`), \
            nothing else, as Kamailio's `$du` takes it; the `Corral-Node` header names the node",
            content_type = "text/plain", body = String),
        (status = 204, description = "No opinion: dispatch as usual. The `Corral-No-Opinion` header \
            says why: `not_a_room`, `unknown_landing`, `disabled`, `no_eligible_node`, \
            `store_unavailable`, `owner_draining`, `owner_down`, `owner_suspect`, `unknown_owner`"),
    ))]
pub async fn route(State(st): State<AppState>, uri: Uri) -> Response {
    let answer = if st.route_ahead {
        let user = uri
            .path()
            .strip_prefix(PREFIX)
            .and_then(percent_decode)
            .unwrap_or_default();
        let landing = match uri.query().map(landing_param) {
            Some(Err(())) => None,
            Some(Ok(l)) => Some(l),
            None => Some(None),
        };
        match landing {
            Some(landing) => st.controller.route_ahead(&user, landing.as_deref()).await,
            None => RouteAnswer::NoOpinion(NoOpinion::UnknownLanding),
        }
    } else {
        st.controller
            .metrics()
            .route_lookup(NoOpinion::Disabled.as_str());
        RouteAnswer::NoOpinion(NoOpinion::Disabled)
    };
    match answer {
        RouteAnswer::Node(node) => {
            let sip = st
                .controller
                .sip_host(&node)
                .map(|h| format!("sip:{h}"))
                .unwrap_or_default();
            let mut resp =
                ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], sip).into_response();
            if let Ok(v) = HeaderValue::from_str(node.as_str()) {
                resp.headers_mut().insert(NODE_HEADER, v);
            }
            resp
        }
        RouteAnswer::NoOpinion(why) => {
            let mut resp = StatusCode::NO_CONTENT.into_response();
            resp.headers_mut()
                .insert(NO_OPINION_HEADER, HeaderValue::from_static(why.as_str()));
            resp
        }
    }
}

/// The `landing` parameter of a query: `Ok(None)` without one, `Err` when
/// it does not decode (or is given twice).
fn landing_param(query: &str) -> Result<Option<String>, ()> {
    let mut found = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == "landing" {
            let value = percent_decode(&value.replace('+', " ")).ok_or(())?;
            if found.replace(value).is_some() {
                return Err(());
            }
        }
    }
    Ok(found)
}

/// `%XX` decoding into UTF-8; `None` for a bad escape or bytes that are not
/// UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_refuses_what_is_not_utf8() {
        assert_eq!(percent_decode("conf-sales").as_deref(), Some("conf-sales"));
        assert_eq!(
            percent_decode("conf%2Dsales").as_deref(),
            Some("conf-sales")
        );
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        for bad in ["%", "%4", "%zz", "%FF", "a%C3"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_landing_parameter() {
        assert_eq!(landing_param(""), Ok(None));
        assert_eq!(landing_param("x=1"), Ok(None));
        assert_eq!(landing_param("landing=ast1"), Ok(Some("ast1".into())));
        assert_eq!(
            landing_param("a=b&landing=sip%3A10.0.0.11%3A5060"),
            Ok(Some("sip:10.0.0.11:5060".into()))
        );
        assert_eq!(landing_param("landing"), Ok(Some(String::new())));
        assert_eq!(landing_param("landing=%FF"), Err(()));
        assert_eq!(landing_param("landing=a&landing=b"), Err(()));
    }
}
