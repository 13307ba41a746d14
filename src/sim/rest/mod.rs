//! The node's HTTP surface: ARI under `/ari` (Basic auth or `api_key`), the
//! control API under `/sim` (no auth), built by one function, [`router`].
//!
//! Rules shared by every ARI handler (ARCHITECTURE.md, *ARI facts: REST
//! conventions*): parameters come from the query string, a form body or a
//! JSON body (the body wins); void operations answer 204 with an empty
//! body; errors are `{"message": ...}`; unknown paths 404 `Resource not
//! found`; a wrong method 405 with `Allow`. The error, the parameters and
//! the extractors are `http.rs`'s; the handlers are in this module's files,
//! one per resource:
//!
//! - this file: [`routes`], [`router`], and the middleware every request
//!   passes (auth, the REST faults, a hung node) and the fallbacks;
//! - `asterisk`: `/asterisk` (info, ping);
//! - `channels`: `/channels` (originate, create, hangup, controls);
//! - `bridges`: `/bridges` (create, destroy, members, MOH);
//! - `applications`: `/applications` (event source subscriptions);
//! - `sim`: the `/sim` control API.
//!
//! [`routes`] lists every ARI operation served, with the parameters read and
//! the statuses it can answer, so a test can hold it against the spec.

mod applications;
mod asterisk;
mod bridges;
mod channels;
mod sim;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use base64::Engine;

use super::http::{AriError, parse_urlencoded};
use super::state::Shared;
use super::{bump, lock, ws};

use applications::{get_app, list_apps, subscribe, unsubscribe};
use asterisk::{info, ping};
use bridges::{
    add_channel, bridge_moh_start, bridge_moh_stop, create_bridge, create_bridge_with_id,
    destroy_bridge, get_bridge, list_bridges, remove_channel,
};
use channels::{
    answer, continue_in_dialplan, create_channel, get_channel, hangup, list_channels, moh_start,
    moh_stop, move_channel, originate, originate_with_id, redirect, ring, ring_stop,
};
use sim::{
    sim_get_faults, sim_get_upstream, sim_hangup_call, sim_info, sim_inject, sim_list_calls,
    sim_list_endpoints, sim_log, sim_new_call, sim_put_endpoint, sim_put_faults, sim_put_upstream,
    sim_stats,
};

/// One ARI operation the simulator serves.
#[derive(Debug, Clone, Copy)]
pub struct AriRoute {
    /// HTTP method.
    pub method: &'static str,
    /// Path below `/ari`, as in the spec (`/channels/{channelId}/redirect`).
    pub path: &'static str,
    /// The spec's `nickname` of the operation.
    pub nickname: &'static str,
    /// Parameters the simulator reads (path parameters included).
    pub params: &'static [&'static str],
    /// Statuses it can answer, all listed in the spec (success included).
    pub statuses: &'static [u16],
    /// Statuses Asterisk really gives that the spec does not list, each with
    /// the fact of ARCHITECTURE.md, *ARI facts*, that it comes from.
    pub quirks: &'static [(u16, &'static str)],
}

const ORIGINATE: &[&str] = &[
    "endpoint",
    "extension",
    "context",
    "priority",
    "label",
    "app",
    "appArgs",
    "callerId",
    "timeout",
    "channelId",
    "otherChannelId",
];
const ORIGINATE_WITH_ID: &[&str] = &[
    "channelId",
    "endpoint",
    "extension",
    "context",
    "priority",
    "label",
    "app",
    "appArgs",
    "callerId",
    "timeout",
    "otherChannelId",
];
const CONTROL: &[u16] = &[204, 404, 409, 412];
const BRIDGE_TYPE_QUIRK: &[(u16, &str)] = &[(
    500,
    "ARI facts: bridges: invalid type combinations give 500 Unable to create bridge",
)];

macro_rules! route {
    ($m:literal, $p:literal, $n:literal, $params:expr, $st:expr) => {
        route!($m, $p, $n, $params, $st, &[])
    };
    ($m:literal, $p:literal, $n:literal, $params:expr, $st:expr, $q:expr) => {
        AriRoute {
            method: $m,
            path: $p,
            nickname: $n,
            params: $params,
            statuses: $st,
            quirks: $q,
        }
    };
}

static ROUTES: &[AriRoute] = &[
    route!("GET", "/asterisk/info", "getInfo", &["only"], &[200]),
    route!("GET", "/asterisk/ping", "ping", &[], &[200]),
    route!("GET", "/channels", "list", &[], &[200]),
    route!(
        "POST",
        "/channels",
        "originate",
        ORIGINATE,
        &[200, 400, 409]
    ),
    route!(
        "GET",
        "/channels/{channelId}",
        "get",
        &["channelId"],
        &[200, 404]
    ),
    route!(
        "POST",
        "/channels/{channelId}",
        "originateWithId",
        ORIGINATE_WITH_ID,
        &[200, 400, 409]
    ),
    route!(
        "DELETE",
        "/channels/{channelId}",
        "hangup",
        &["channelId", "reason_code", "reason"],
        &[204, 400, 404]
    ),
    route!(
        "POST",
        "/channels/{channelId}/answer",
        "answer",
        &["channelId"],
        CONTROL
    ),
    route!(
        "POST",
        "/channels/{channelId}/ring",
        "ring",
        &["channelId"],
        CONTROL
    ),
    route!(
        "DELETE",
        "/channels/{channelId}/ring",
        "ringStop",
        &["channelId"],
        CONTROL
    ),
    route!(
        "POST",
        "/channels/{channelId}/redirect",
        "redirect",
        &["channelId", "endpoint"],
        &[204, 400, 404, 409, 412, 422]
    ),
    route!(
        "POST",
        "/channels/{channelId}/continue",
        "continueInDialplan",
        &["channelId", "context", "extension", "priority", "label"],
        CONTROL,
        &[(
            400,
            "ARI facts: continue and move: label `0` gives 400 Requested priority is illegal"
        )]
    ),
    route!(
        "POST",
        "/channels/{channelId}/move",
        "move",
        &["channelId", "app", "appArgs"],
        &[204, 404, 409]
    ),
    route!(
        "POST",
        "/channels/{channelId}/moh",
        "startMoh",
        &["channelId", "mohClass"],
        CONTROL
    ),
    route!(
        "DELETE",
        "/channels/{channelId}/moh",
        "stopMoh",
        &["channelId"],
        CONTROL
    ),
    route!("GET", "/bridges", "list", &[], &[200]),
    route!(
        "POST",
        "/bridges",
        "create",
        &["type", "bridgeId", "name"],
        &[200, 409],
        BRIDGE_TYPE_QUIRK
    ),
    route!(
        "POST",
        "/bridges/{bridgeId}",
        "createWithId",
        &["type", "bridgeId", "name"],
        &[200, 409],
        BRIDGE_TYPE_QUIRK
    ),
    route!(
        "GET",
        "/bridges/{bridgeId}",
        "get",
        &["bridgeId"],
        &[200, 404]
    ),
    route!(
        "DELETE",
        "/bridges/{bridgeId}",
        "destroy",
        &["bridgeId"],
        &[204, 404]
    ),
    route!(
        "POST",
        "/bridges/{bridgeId}/addChannel",
        "addChannel",
        &["bridgeId", "channel", "role"],
        &[204, 400, 404, 422]
    ),
    route!(
        "POST",
        "/bridges/{bridgeId}/removeChannel",
        "removeChannel",
        &["bridgeId", "channel"],
        &[204, 400, 404, 422]
    ),
    route!(
        "POST",
        "/bridges/{bridgeId}/moh",
        "startMoh",
        &["bridgeId", "mohClass"],
        &[204, 404]
    ),
    route!(
        "DELETE",
        "/bridges/{bridgeId}/moh",
        "stopMoh",
        &["bridgeId"],
        &[204, 404, 409]
    ),
    route!("GET", "/applications", "list", &[], &[200]),
    route!(
        "GET",
        "/applications/{applicationName}",
        "get",
        &["applicationName"],
        &[200, 404]
    ),
    route!(
        "POST",
        "/applications/{applicationName}/subscription",
        "subscribe",
        &["applicationName", "eventSource"],
        &[200, 400, 404, 422]
    ),
    route!(
        "DELETE",
        "/applications/{applicationName}/subscription",
        "unsubscribe",
        &["applicationName", "eventSource"],
        &[200, 400, 404, 409, 422]
    ),
    route!(
        "GET",
        "/events",
        "eventWebsocket",
        &["app", "subscribeAll"],
        &[101],
        &[(400, "ARI facts: the event websocket: missing app gives 400")]
    ),
];

/// Every ARI operation the simulator serves (paths below `/ari`).
pub fn routes() -> &'static [AriRoute] {
    ROUTES
}

/// Builds the node's whole HTTP surface.
pub(crate) fn router(sh: Arc<Shared>) -> Router {
    Router::new()
        .route("/ari/asterisk/info", get(info))
        .route("/ari/asterisk/ping", get(ping))
        .route("/ari/channels", get(list_channels).post(originate))
        .route(
            "/ari/channels/{channelId}",
            get(get_channel).post(originate_with_id).delete(hangup),
        )
        .route("/ari/channels/create", post(create_channel))
        .route("/ari/channels/{channelId}/answer", post(answer))
        .route(
            "/ari/channels/{channelId}/ring",
            post(ring).delete(ring_stop),
        )
        .route("/ari/channels/{channelId}/redirect", post(redirect))
        .route(
            "/ari/channels/{channelId}/continue",
            post(continue_in_dialplan),
        )
        .route("/ari/channels/{channelId}/move", post(move_channel))
        .route(
            "/ari/channels/{channelId}/moh",
            post(moh_start).delete(moh_stop),
        )
        .route("/ari/bridges", get(list_bridges).post(create_bridge))
        .route(
            "/ari/bridges/{bridgeId}",
            get(get_bridge)
                .post(create_bridge_with_id)
                .delete(destroy_bridge),
        )
        .route("/ari/bridges/{bridgeId}/addChannel", post(add_channel))
        .route(
            "/ari/bridges/{bridgeId}/removeChannel",
            post(remove_channel),
        )
        .route(
            "/ari/bridges/{bridgeId}/moh",
            post(bridge_moh_start).delete(bridge_moh_stop),
        )
        .route("/ari/applications", get(list_apps))
        .route("/ari/applications/{applicationName}", get(get_app))
        .route(
            "/ari/applications/{applicationName}/subscription",
            post(subscribe).delete(unsubscribe),
        )
        .route("/ari/events", get(ws::events))
        .route("/sim/calls", get(sim_list_calls).post(sim_new_call))
        .route("/sim/calls/{call_id}", delete(sim_hangup_call))
        .route("/sim/stats", get(sim_stats))
        .route("/sim/faults", get(sim_get_faults).put(sim_put_faults))
        .route("/sim/upstream", get(sim_get_upstream).put(sim_put_upstream))
        .route("/sim/endpoints", get(sim_list_endpoints))
        .route("/sim/endpoints/{resource}", put(sim_put_endpoint))
        .route("/sim/log", get(sim_log))
        .route("/sim/info", get(sim_info))
        .route("/sim/inject", post(sim_inject))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // One layer for the whole surface, so unknown /ari paths need auth
        // too (Asterisk authenticates before it routes).
        .layer(middleware::from_fn_with_state(sh.clone(), guard))
        .with_state(sh)
}

// ---------------------------------------------------------------------------
// Middleware and fallbacks

fn authorized(sh: &Shared, req: &Request) -> bool {
    let expected = format!("{}:{}", sh.common.username, sh.common.password);
    if let Some(auth) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(b64) = auth
            .strip_prefix("Basic ")
            .or_else(|| auth.strip_prefix("basic "))
        && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim())
        && raw == expected.as_bytes()
    {
        return true;
    }
    if let Some(q) = req.uri().query() {
        let mut params = HashMap::new();
        if parse_urlencoded(q.as_bytes(), &mut params).is_ok()
            && params.get("api_key") == Some(&expected)
        {
            return true;
        }
    }
    false
}

async fn guard(State(sh): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    // A hung node answers nothing, the control API included (SIGSTOP).
    sh.common.wait_unhung().await;
    let path = req.uri().path();
    if path == "/ari" || path.starts_with("/ari/") {
        if !authorized(&sh, &req) {
            let mut resp = AriError::new(401, "Authentication required").into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Asterisk REST Interface\""),
            );
            return resp;
        }
        if path != "/ari/events" {
            let rate = sh.common.faults().rest_error_rate;
            if sh.common.chance(rate) {
                bump(&sh.common.stats.rest_faults);
                return AriError::new(500, "Internal Server Error").into_response();
            }
            if let Some((delay, fail)) = rest_rule(&sh, req.method().as_str(), path) {
                tokio::time::sleep(delay).await;
                if fail {
                    bump(&sh.common.stats.rest_faults);
                    return AriError::new(500, "Internal Server Error").into_response();
                }
            }
        }
    }
    next.run(req).await
}

/// The fault of [`super::Faults::rest_rule`] for a request, if it matches:
/// its delay, and whether it fails (counted down here).
fn rest_rule(sh: &Shared, method: &str, path: &str) -> Option<(Duration, bool)> {
    let mut f = lock(&sh.common.faults);
    let rule = f.rest_rule.as_mut()?;
    let (mut want, mut got) = (rule.path.split('/'), path.split('/'));
    let same_path = loop {
        match (want.next(), got.next()) {
            (None, None) => break true,
            (Some(w), Some(g)) if w == "*" || w == g => {}
            _ => break false,
        }
    };
    if !rule.method.eq_ignore_ascii_case(method) || !same_path {
        return None;
    }
    let fail = rule.fail > 0;
    rule.fail = rule.fail.saturating_sub(1);
    Some((Duration::from_millis(rule.delay_ms.min(60_000)), fail))
}

async fn not_found(req: Request) -> Response {
    let path = req.uri().path();
    if path.starts_with("/ari/") && path.ends_with('/') {
        return AriError::new(404, "ARI URLs do not end with a slash").into_response();
    }
    AriError::new(404, "Resource not found").into_response()
}

async fn method_not_allowed() -> Response {
    AriError::new(405, "Invalid method").into_response()
}
