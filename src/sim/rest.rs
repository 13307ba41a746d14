//! The node's HTTP surface: ARI under `/ari` (Basic auth or `api_key`), the
//! control API under `/sim` (no auth), built by one function, [`router`].
//!
//! Rules shared by every ARI handler (ARCHITECTURE.md, *ARI facts: REST
//! conventions*): parameters come from the query string, a form body or a
//! JSON body (the body wins); void operations answer 204 with an empty
//! body; errors are `{"message": ...}`; unknown paths 404 `Resource not
//! found`; a wrong method 405 with `Allow`. The error, the parameters and
//! the extractors are `http.rs`'s; the handlers are here.
//! [`routes`] lists every ARI operation served, with the parameters read and
//! the statuses it can answer, so a test can hold it against the spec.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use super::dialplan::exec::{MAX_NAME, atoi_i32, scan_i32};
use super::dialplan::{Admission, Dialplan, Pbx};
use super::http::{
    AriError, AriResult, Id, Params, SimJson, clip, no_content, ok, parse_urlencoded,
};
use super::media::DEFAULT_MOH_CLASS;
use super::model::{AfterAnswer, Bridge, BridgeKind, Channel, chan_state, now_ts};
use super::state::{Hangup, Shared, State as NodeState};
use super::{EndpointScript, On302, OnRefer, bump, lock, pbx, sip, ws};

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

// ---------------------------------------------------------------------------
// /asterisk

async fn info(State(sh): State<Arc<Shared>>, p: Params) -> AriResult {
    let all = ["build", "system", "config", "status"];
    let only: Vec<String> = match p.get("only") {
        Some(o) => o.split(',').map(|s| s.trim().to_string()).collect(),
        None => all.iter().map(|s| s.to_string()).collect(),
    };
    let c = &sh.common;
    let mut out = serde_json::Map::new();
    for section in only {
        let v = match section.as_str() {
            "build" => json!({
                "os": "Linux", "kernel": "6.1.0-sim", "options": "",
                "machine": "x86_64", "date": "2026-01-01 00:00:00 UTC", "user": "corral-sim",
            }),
            "system" => json!({"version": c.version.version(), "entity_id": c.asterisk_id}),
            "config" => json!({
                "name": c.id, "default_language": "en",
                "setid": {"user": "asterisk", "group": "asterisk"},
            }),
            "status" => {
                json!({"startup_time": sh.startup_time, "last_reload_time": sh.startup_time})
            }
            _ => continue,
        };
        out.insert(section, v);
    }
    ok(Value::Object(out))
}

async fn ping(State(sh): State<Arc<Shared>>) -> AriResult {
    ok(json!({
        "ping": "pong",
        "timestamp": now_ts(),
        "asterisk_id": sh.common.asterisk_id,
    }))
}

// ---------------------------------------------------------------------------
// /channels

fn sorted_channels(st: &NodeState) -> Vec<&Channel> {
    let mut v: Vec<&Channel> = st.channels.values().collect();
    v.sort_by_key(|c| c.seq);
    v
}

async fn list_channels(State(sh): State<Arc<Shared>>) -> AriResult {
    let st = sh.lock();
    ok(Value::Array(
        sorted_channels(&st)
            .into_iter()
            .map(Channel::to_json)
            .collect(),
    ))
}

async fn get_channel(State(sh): State<Arc<Shared>>, Id(id): Id) -> AriResult {
    let st = sh.lock();
    match st.channels.get(&id) {
        Some(c) => ok(c.to_json()),
        None => Err(AriError::new(404, "Channel not found")),
    }
}

/// `find_control`: 404 when the channel does not exist, 409 when it is not
/// in Stasis.
fn control<'a>(st: &'a NodeState, id: &str) -> Result<&'a Channel, AriError> {
    let ch = st
        .channels
        .get(id)
        .ok_or_else(|| AriError::new(404, "Channel not found"))?;
    if ch.stasis.is_none() {
        return Err(AriError::new(409, "Channel not in Stasis application"));
    }
    Ok(ch)
}

/// `find_control` then `channel_state_invalid` (412).
fn control_valid_state<'a>(st: &'a NodeState, id: &str) -> Result<&'a Channel, AriError> {
    let ch = control(st, id)?;
    if ch.state_invalid() {
        return Err(AriError::new(412, "Channel in invalid state"));
    }
    Ok(ch)
}

fn parse_caller_id(raw: &str) -> (String, String) {
    match (raw.find('<'), raw.rfind('>')) {
        (Some(a), Some(b)) if a < b => (
            raw[..a].trim().trim_matches('"').to_string(),
            raw[a + 1..b].trim().to_string(),
        ),
        _ => (String::new(), raw.trim().to_string()),
    }
}

/// The channel drivers a node has (the testbed's Asterisk 22.10.1 loads
/// these among its modules); an originate to any other tech fails.
const CHANNEL_TECHS: &[&str] = &[
    "PJSIP",
    "Local",
    "UnicastRTP",
    "MulticastRTP",
    "AudioSocket",
    "Announcer",
    "Recorder",
];

fn originate_common(sh: Arc<Shared>, channel_id: Option<String>, p: Params) -> AriResult {
    let endpoint = p
        .get("endpoint")
        .ok_or_else(|| AriError::new(400, "Endpoint must be specified"))?;
    let app = p.get("app").map(String::from);
    let extension = p.get("extension").map(String::from);
    if app.is_none() && extension.is_none() {
        return Err(AriError::new(
            400,
            "Application or extension must be specified",
        ));
    }
    let (tech, resource) = endpoint
        .split_once('/')
        .filter(|(t, r)| !t.is_empty() && !r.is_empty())
        .ok_or_else(|| AriError::new(400, "Invalid endpoint specified"))?;
    // No channel driver of that name: `ast_dial_prerun` fails and ARI
    // answers `ast_ari_response_alloc_failed`, a 500 whose body is `null`.
    if !CHANNEL_TECHS.iter().any(|t| t.eq_ignore_ascii_case(tech)) {
        return Ok((StatusCode::INTERNAL_SERVER_ERROR, axum::Json(Value::Null)).into_response());
    }
    let timeout_s = p
        .get("timeout")
        .and_then(|t| t.parse::<i64>().ok())
        .unwrap_or(30);
    let timeout = if timeout_s > 0 {
        Duration::from_secs(timeout_s.unsigned_abs())
    } else {
        Duration::from_secs(86_400)
    };
    let (caller_name, caller_number) = parse_caller_id(p.get("callerId").unwrap_or(""));
    // With `extension=`, the channel runs the dialplan once answered, at
    // `context` (default `default`), the priority or label given (else 1).
    let context = p
        .get("context")
        .filter(|c| !c.is_empty())
        .unwrap_or("default");
    let mut priority = p
        .get("priority")
        .map(|x| i64::from(atoi_i32(x)))
        .filter(|x| *x != 0)
        .unwrap_or(1);
    if let (Some(ext), Some(label)) = (&extension, p.get("label").filter(|l| !l.is_empty())) {
        priority = match scan_i32(label) {
            Some(n) => i64::from(n),
            None => sh
                .common
                .dialplan
                .find_label(context.as_bytes(), ext.as_bytes(), label.as_bytes())
                .map(i64::from)
                .ok_or_else(|| AriError::new(404, "Requested label can not be found"))?,
        };
    }
    let target = match (&app, &extension) {
        (Some(app), _) => Some(AfterAnswer::Stasis(
            app.clone(),
            p.get("appArgs")
                .map(|a| a.split(',').map(String::from).collect())
                .unwrap_or_default(),
        )),
        (None, Some(ext)) => {
            let mut pbx = Pbx::new(context.as_bytes(), ext.as_bytes());
            pbx.priority = i32::try_from(priority).unwrap_or(1);
            Some(AfterAnswer::Dialplan(pbx))
        }
        (None, None) => None,
    };
    let call_id = sh.new_call_id();
    let mut st = sh.lock();
    for id in [channel_id.as_deref(), p.get("otherChannelId")]
        .into_iter()
        .flatten()
    {
        if st.channels.contains_key(id) {
            return Err(AriError::new(
                409,
                "Channel with given unique ID already exists",
            ));
        }
    }
    let (auto_id, seq) = st.next_id();
    let id = channel_id.unwrap_or(auto_id);
    let ch = Channel {
        id: id.clone(),
        seq,
        name: format!("{tech}/{resource}-{:08x}", seq),
        tech: tech.to_string(),
        state: chan_state::DOWN,
        protocol_id: call_id,
        caller_name,
        caller_number,
        // Dialling, an outbound channel sits in its endpoint's context
        // (`from-proxy` for every endpoint of the shipped pjsip.conf) at
        // `s`, running the dialler's `AppDial2`, until it is answered.
        context: if extension.is_some() {
            context.to_string()
        } else if tech.eq_ignore_ascii_case("PJSIP") {
            Dialplan::INBOUND_CONTEXT.to_string()
        } else {
            "default".to_string()
        },
        exten: extension.clone().unwrap_or_else(|| "s".into()),
        priority: if extension.is_some() { priority } else { 1 },
        app_name: "AppDial2".into(),
        app_data: "(Outgoing Line)".into(),
        creationtime: now_ts(),
        stasis: None,
        subscribers: app.iter().cloned().collect(),
        bridge: None,
        bridge_role: None,
        inbound: false,
        moh: None,
        ringing: false,
        hears: Default::default(),
        after_answer: target,
        pbx: None,
    };
    let json = ch.to_json();
    st.add_channel(ch);
    drop(st);
    bump(&sh.common.stats.originated);
    let resource = resource.to_string();
    tokio::spawn(sip::run_originate(sh, id, resource, timeout));
    ok(json)
}

async fn originate(State(sh): State<Arc<Shared>>, p: Params) -> AriResult {
    let id = p.get("channelId").map(String::from);
    originate_common(sh, id, p)
}

async fn originate_with_id(State(sh): State<Arc<Shared>>, Id(id): Id, p: Params) -> AriResult {
    originate_common(sh, Some(id), p)
}

/// `POST /channels/create`: a channel in Stasis right away, in state
/// `Down`, not dialled (the app has an extra subscription to it).
async fn create_channel(State(sh): State<Arc<Shared>>, p: Params) -> AriResult {
    let endpoint = p
        .get("endpoint")
        .ok_or_else(|| AriError::new(400, "Endpoint must be specified"))?;
    let app = p
        .get("app")
        .ok_or_else(|| AriError::new(400, "Application must be specified"))?
        .to_string();
    let (tech, resource) = endpoint
        .split_once('/')
        .filter(|(t, r)| !t.is_empty() && !r.is_empty())
        .ok_or_else(|| AriError::new(400, "Invalid endpoint specified"))?;
    let args: Vec<String> = p
        .get("appArgs")
        .map(|a| a.split(',').map(String::from).collect())
        .unwrap_or_default();
    let call_id = sh.new_call_id();
    let mut st = sh.lock();
    for id in [p.get("channelId"), p.get("otherChannelId")]
        .into_iter()
        .flatten()
    {
        if st.channels.contains_key(id) {
            return Err(AriError::new(
                409,
                "Channel with given unique ID already exists",
            ));
        }
    }
    let (auto_id, seq) = st.next_id();
    let id = p.get("channelId").map(String::from).unwrap_or(auto_id);
    let ch = Channel {
        id: id.clone(),
        seq,
        name: format!("{tech}/{resource}-{:08x}", seq),
        tech: tech.to_string(),
        state: chan_state::DOWN,
        protocol_id: call_id,
        caller_name: String::new(),
        caller_number: String::new(),
        context: "default".into(),
        exten: "s".into(),
        priority: 1,
        app_name: String::new(),
        app_data: String::new(),
        creationtime: now_ts(),
        stasis: None,
        subscribers: [app.clone()].into_iter().collect(),
        bridge: None,
        bridge_role: None,
        inbound: false,
        moh: None,
        ringing: false,
        hears: Default::default(),
        after_answer: None,
        pbx: None,
    };
    st.add_channel(ch);
    st.stasis_enter_app(&id, &app, args);
    match st.channels.get(&id) {
        Some(c) => ok(c.to_json()),
        None => Err(AriError::new(500, "Internal Server Error")),
    }
}

fn reason_to_cause(reason: &str) -> Option<i64> {
    Some(match reason {
        "normal" => 16,
        "busy" => 17,
        "congestion" => 34,
        "no_answer" => 19,
        "timeout" => 19,
        "rejected" => 21,
        "unallocated" => 1,
        "normal_unspecified" => 31,
        "number_incomplete" => 28,
        "codec_mismatch" => 58,
        "interworking" => 127,
        "failure" => 38,
        "answered_elsewhere" => 26,
        _ => return None,
    })
}

async fn hangup(State(sh): State<Arc<Shared>>, Id(id): Id, p: Params) -> AriResult {
    let mut st = sh.lock();
    if !st.channels.contains_key(&id) {
        return Err(AriError::new(404, "Channel not found"));
    }
    let cause = match (p.get("reason_code"), p.get("reason")) {
        (Some(_), Some(_)) => {
            return Err(AriError::new(
                400,
                "The reason and reason_code can't both be specified",
            ));
        }
        (Some(code), None) => code
            .trim()
            .parse::<i64>()
            .map_err(|_| AriError::new(400, "Invalid reason for hangup reason code provided"))?,
        (None, Some(reason)) => reason_to_cause(reason)
            .ok_or_else(|| AriError::new(400, "Invalid reason for hangup provided"))?,
        (None, None) => 16,
    };
    bump(&sh.common.stats.hungup_by_ari);
    st.hangup(
        &id,
        Hangup {
            request_cause: Some(32),
            tech_cause: None,
            soft: true,
            cause,
            request: true,
        },
    );
    no_content()
}

async fn answer(State(sh): State<Arc<Shared>>, Id(id): Id) -> AriResult {
    let mut st = sh.lock();
    control_valid_state(&st, &id)?;
    st.set_state(&id, chan_state::UP);
    no_content()
}

/// A channel control after `find_control` and the state check (404, 409,
/// 412); what it does is recorded in `GET /sim/calls` and the call log.
fn control_op(sh: &Shared, id: &str, f: impl FnOnce(&mut NodeState)) -> AriResult {
    let mut st = sh.lock();
    control_valid_state(&st, id)?;
    f(&mut st);
    no_content()
}

async fn ring(State(sh): State<Arc<Shared>>, Id(id): Id) -> AriResult {
    control_op(&sh, &id, |st| st.set_ringing(&id, true))
}

async fn ring_stop(State(sh): State<Arc<Shared>>, Id(id): Id) -> AriResult {
    control_op(&sh, &id, |st| st.set_ringing(&id, false))
}

async fn moh_start(State(sh): State<Arc<Shared>>, Id(id): Id, p: Params) -> AriResult {
    let class = p.get("mohClass").unwrap_or(DEFAULT_MOH_CLASS).to_string();
    control_op(&sh, &id, |st| st.set_channel_moh(&id, Some(class)))
}

async fn moh_stop(State(sh): State<Arc<Shared>>, Id(id): Id) -> AriResult {
    control_op(&sh, &id, |st| st.set_channel_moh(&id, None))
}

async fn redirect(State(sh): State<Arc<Shared>>, Id(id): Id, p: Params) -> AriResult {
    let resource = {
        let st = sh.lock();
        let ch = control_valid_state(&st, &id)?;
        let endpoint = p
            .get("endpoint")
            .ok_or_else(|| AriError::new(400, "Required parameter 'endpoint' not provided."))?;
        let (tech, resource) = match endpoint.split_once('/') {
            Some((t, r)) if !t.is_empty() => (t, r),
            _ => {
                return Err(AriError::new(
                    422,
                    format!(
                        "Endpoint parameter '{}' does not contain tech/resource",
                        clip(endpoint)
                    ),
                ));
            }
        };
        if resource.is_empty() {
            return Err(AriError::new(
                422,
                format!(
                    "No resource provided in endpoint parameter '{}'",
                    clip(endpoint)
                ),
            ));
        }
        // strncasecmp(channel_type, tech, strlen(tech)): a case-insensitive
        // prefix compare.
        if !ch
            .tech
            .to_ascii_lowercase()
            .starts_with(&tech.to_ascii_lowercase())
        {
            return Err(AriError::new(
                422,
                format!(
                    "Endpoint technology '{}' does not match channel technology '{}'",
                    clip(tech),
                    ch.tech
                ),
            ));
        }
        resource.to_string()
    };
    tokio::spawn(sip::redirect(sh.clone(), id, resource));
    no_content()
}

/// `continueInDialplan`: the target as `ast_ari_channels_continue_in_dialplan`
/// computes it (no context: the channel's context and the given extension
/// or its own; a context: the given extension or `s`; a label beats a
/// priority; nothing at all: the next priority), then the channel leaves
/// its bridge and Stasis and runs the dialplan from there.
async fn continue_in_dialplan(State(sh): State<Arc<Shared>>, Id(id): Id, p: Params) -> AriResult {
    let mut st = sh.lock();
    let ch = control_valid_state(&st, &id)?;
    let (cur_context, cur_exten) = match &ch.pbx {
        Some(pbx) => (pbx.context.clone(), pbx.exten.clone()),
        None => (
            ch.context.clone().into_bytes(),
            ch.exten.clone().into_bytes(),
        ),
    };
    let nonempty = |k: &str| {
        p.get(k)
            .filter(|v| !v.is_empty())
            .map(|v| v.as_bytes().to_vec())
    };
    let (context, exten) = match nonempty("context") {
        None => (cur_context, nonempty("extension").unwrap_or(cur_exten)),
        Some(c) => (c, nonempty("extension").unwrap_or_else(|| b"s".to_vec())),
    };
    let priority = if let Some(label) = nonempty("label") {
        let n = match scan_i32(&String::from_utf8_lossy(&label)) {
            Some(n) => n,
            None => sh
                .common
                .dialplan
                .find_label(&context, &exten, &label)
                .ok_or_else(|| AriError::new(404, "Requested label can not be found"))?,
        };
        if n == 0 {
            return Err(AriError::new(400, "Requested priority is illegal"));
        }
        n
    } else if let Some(n) = p.get("priority").map(atoi_i32).filter(|n| *n != 0) {
        n
    } else if nonempty("context").is_none() && nonempty("extension").is_none() {
        i32::try_from(ch.priority).unwrap_or(0).saturating_add(1)
    } else {
        1
    };
    st.leave_bridge(&id);
    st.stasis_end(&id);
    if let Some(ch) = st.channels.get_mut(&id) {
        let pbx = ch.pbx.get_or_insert_with(|| Pbx::new(&context, &exten));
        pbx.resume(&context, &exten, priority);
    }
    pbx::run(&mut st, &id);
    no_content()
}

async fn move_channel(State(sh): State<Arc<Shared>>, Id(id): Id, p: Params) -> AriResult {
    let mut st = sh.lock();
    let ch = control(&st, &id)?;
    let current = ch.stasis.clone().unwrap_or_default();
    let app = p.get("app").unwrap_or("").to_string();
    let args: Vec<String> = p
        .get("appArgs")
        .map(|a| a.split(',').map(String::from).collect())
        .unwrap_or_default();
    if st.app_active(&app) {
        st.leave_bridge(&id);
        st.stasis_end(&id);
        st.stasis_enter_app(&id, &app, args);
    } else {
        let mut f = serde_json::Map::new();
        f.insert("channel".into(), ch.to_json());
        f.insert("destination".into(), json!(app));
        f.insert("args".into(), json!(args));
        st.emit(&[current], "ApplicationMoveFailed", f);
    }
    no_content()
}

// ---------------------------------------------------------------------------
// /bridges

async fn list_bridges(State(sh): State<Arc<Shared>>) -> AriResult {
    let st = sh.lock();
    let mut v: Vec<&Bridge> = st.bridges.values().collect();
    v.sort_by_key(|b| b.seq);
    ok(Value::Array(v.into_iter().map(Bridge::to_json).collect()))
}

fn new_uuid(sh: &Shared) -> String {
    use rand::RngExt;
    let n: u128 = lock(&sh.common.rng).random();
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn create_bridge_common(sh: &Shared, id: Option<String>, p: &Params) -> AriResult {
    let (mut mixing, mut holding, mut known) = (false, false, false);
    match p.get("type") {
        None => mixing = true,
        Some(types) => {
            for t in types.split(',').map(str::trim) {
                match t {
                    "mixing" => mixing = true,
                    "holding" => holding = true,
                    "dtmf_events" | "proxy_media" | "video_sfu" | "video_single" | "sdp_label" => {
                        known = true
                    }
                    _ => {}
                }
            }
        }
    }
    if (mixing && holding) || !(mixing || holding || known) {
        return Err(AriError::new(
            500,
            format!(
                "Unable to create bridge. Possible duplicate bridge id '{}'",
                id.as_deref().unwrap_or("(null)")
            ),
        ));
    }
    let kind = if holding {
        BridgeKind::Holding
    } else {
        BridgeKind::Mixing
    };
    let id = id.unwrap_or_else(|| new_uuid(sh));
    let mut st = sh.lock();
    if st.bridges.contains_key(&id) {
        return Err(AriError::new(
            409,
            format!("Bridge with id '{}' already exists", clip(&id)),
        ));
    }
    let (_, seq) = st.next_id();
    let b = Bridge {
        id,
        seq,
        kind,
        name: p.get("name").unwrap_or("").to_string(),
        channels: Vec::new(),
        creationtime: now_ts(),
        moh: None,
        subscribers: Default::default(),
    };
    ok(st.add_bridge(b))
}

async fn create_bridge(State(sh): State<Arc<Shared>>, p: Params) -> AriResult {
    let id = p.get("bridgeId").map(String::from);
    create_bridge_common(&sh, id, &p)
}

async fn create_bridge_with_id(State(sh): State<Arc<Shared>>, Id(id): Id, p: Params) -> AriResult {
    create_bridge_common(&sh, Some(id), &p)
}

async fn get_bridge(State(sh): State<Arc<Shared>>, Id(id): Id) -> AriResult {
    let st = sh.lock();
    match st.bridges.get(&id) {
        Some(b) => ok(b.to_json()),
        None => Err(AriError::new(404, "Bridge not found")),
    }
}

async fn destroy_bridge(State(sh): State<Arc<Shared>>, Id(id): Id) -> AriResult {
    let mut st = sh.lock();
    if !st.bridges.contains_key(&id) {
        return Err(AriError::new(404, "Bridge not found"));
    }
    st.destroy_bridge(&id);
    no_content()
}

/// `control_list_create`: every listed channel must exist (400) and be in
/// Stasis (422).
fn channel_list(st: &NodeState, p: &Params) -> Result<Vec<String>, AriError> {
    let raw = p
        .get("channel")
        .ok_or_else(|| AriError::new(400, "Missing parameter channel"))?;
    let ids: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if ids.is_empty() {
        return Err(AriError::new(400, "Missing parameter channel"));
    }
    for id in &ids {
        match st.channels.get(id) {
            None => return Err(AriError::new(400, "Channel not found")),
            Some(c) if c.stasis.is_none() => {
                return Err(AriError::new(422, "Channel not in Stasis application"));
            }
            Some(_) => {}
        }
    }
    Ok(ids)
}

async fn add_channel(State(sh): State<Arc<Shared>>, Id(bid): Id, p: Params) -> AriResult {
    let mut st = sh.lock();
    if !st.bridges.contains_key(&bid) {
        return Err(AriError::new(404, "Bridge not found"));
    }
    let role = p.get("role").map(String::from);
    for c in channel_list(&st, &p)? {
        st.enter_bridge(&c, &bid, role.as_deref());
    }
    no_content()
}

async fn remove_channel(State(sh): State<Arc<Shared>>, Id(bid): Id, p: Params) -> AriResult {
    let mut st = sh.lock();
    if !st.bridges.contains_key(&bid) {
        return Err(AriError::new(404, "Bridge not found"));
    }
    let ids = channel_list(&st, &p)?;
    for c in &ids {
        if st.channels.get(c).and_then(|ch| ch.bridge.as_deref()) != Some(bid.as_str()) {
            return Err(AriError::new(422, "Channel not in this bridge"));
        }
    }
    for c in &ids {
        st.leave_bridge(c);
    }
    no_content()
}

/// Starts MOH on the bridge, or changes its class.
async fn bridge_moh_start(State(sh): State<Arc<Shared>>, Id(bid): Id, p: Params) -> AriResult {
    let mut st = sh.lock();
    if !st.bridges.contains_key(&bid) {
        return Err(AriError::new(404, "Bridge not found"));
    }
    let class = p.get("mohClass").unwrap_or(DEFAULT_MOH_CLASS).to_string();
    st.set_bridge_moh(&bid, Some(class));
    no_content()
}

async fn bridge_moh_stop(State(sh): State<Arc<Shared>>, Id(bid): Id) -> AriResult {
    let mut st = sh.lock();
    let playing = st
        .bridges
        .get(&bid)
        .ok_or_else(|| AriError::new(404, "Bridge not found"))?
        .moh
        .is_some();
    if !playing {
        return Err(AriError::new(409, "Bridge isn't playing music"));
    }
    st.set_bridge_moh(&bid, None);
    no_content()
}

// ---------------------------------------------------------------------------
// /applications

async fn list_apps(State(sh): State<Arc<Shared>>) -> AriResult {
    let st = sh.lock();
    let mut names: Vec<&String> = st.apps.keys().collect();
    names.sort();
    ok(Value::Array(
        names.into_iter().map(|n| st.app_json(n)).collect(),
    ))
}

async fn get_app(State(sh): State<Arc<Shared>>, Id(name): Id) -> AriResult {
    let st = sh.lock();
    if !st.apps.contains_key(&name) {
        return Err(AriError::new(404, "Application not found"));
    }
    ok(st.app_json(&name))
}

/// A parsed `eventSource`: `channel:{id}` or `bridge:{id}`.
enum Source {
    Channel(String),
    Bridge(String),
}

/// `stasis_app_subscribe`'s checks: 400 without sources, 404 unknown app,
/// 400 bad scheme, 422 unknown source.
fn event_sources(st: &NodeState, app: &str, p: &Params) -> Result<Vec<Source>, AriError> {
    let raw = p
        .get("eventSource")
        .ok_or_else(|| AriError::new(400, "Missing parameter eventSource"))?;
    if !st.apps.contains_key(app) {
        return Err(AriError::new(404, "Application not found"));
    }
    let mut out = Vec::new();
    for src in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (scheme, id) = src.split_once(':').unwrap_or((src, ""));
        let exists = match scheme {
            "channel" => st.channels.contains_key(id),
            "bridge" => st.bridges.contains_key(id),
            // Endpoints and device states are not modelled: none exists.
            "endpoint" | "deviceState" => false,
            _ => return Err(AriError::new(400, "Invalid event source URI scheme")),
        };
        if !exists {
            return Err(AriError::new(422, "Event source does not exist"));
        }
        out.push(match scheme {
            "channel" => Source::Channel(id.to_string()),
            _ => Source::Bridge(id.to_string()),
        });
    }
    if out.is_empty() {
        return Err(AriError::new(400, "Missing parameter eventSource"));
    }
    Ok(out)
}

async fn subscribe(State(sh): State<Arc<Shared>>, Id(app): Id, p: Params) -> AriResult {
    let mut st = sh.lock();
    for src in event_sources(&st, &app, &p)? {
        let subs = match &src {
            Source::Channel(id) => st.channels.get_mut(id).map(|c| &mut c.subscribers),
            Source::Bridge(id) => st.bridges.get_mut(id).map(|b| &mut b.subscribers),
        };
        if let Some(subs) = subs {
            subs.insert(app.clone());
        }
    }
    ok(st.app_json(&app))
}

async fn unsubscribe(State(sh): State<Arc<Shared>>, Id(app): Id, p: Params) -> AriResult {
    let mut st = sh.lock();
    let sources = event_sources(&st, &app, &p)?;
    for src in &sources {
        let subscribed = match src {
            Source::Channel(id) => st
                .channels
                .get(id)
                .is_some_and(|c| c.subscribers.contains(&app)),
            Source::Bridge(id) => st
                .bridges
                .get(id)
                .is_some_and(|b| b.subscribers.contains(&app)),
        };
        if !subscribed {
            return Err(AriError::new(
                409,
                "Application not subscribed to event source",
            ));
        }
    }
    for src in sources {
        let subs = match &src {
            Source::Channel(id) => st.channels.get_mut(id).map(|c| &mut c.subscribers),
            Source::Bridge(id) => st.bridges.get_mut(id).map(|b| &mut b.subscribers),
        };
        if let Some(subs) = subs {
            subs.remove(&app);
        }
    }
    ok(st.app_json(&app))
}

// ---------------------------------------------------------------------------
// /sim: the control API

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCall {
    exten: String,
    #[serde(default)]
    caller: Option<String>,
    #[serde(default)]
    call_id: Option<String>,
}

/// Longest exten, caller or call id accepted by `POST /sim/calls`.
const MAX_SIP_FIELD: usize = 256;

async fn sim_new_call(State(sh): State<Arc<Shared>>, SimJson(body): SimJson) -> AriResult {
    let call: NewCall = serde_json::from_value(body)
        .map_err(|e| AriError::new(400, format!("Invalid call: {e}")))?;
    for (what, v) in [
        ("exten", Some(&call.exten)),
        ("caller", call.caller.as_ref()),
        ("call_id", call.call_id.as_ref()),
    ] {
        if let Some(v) = v
            && (v.len() > MAX_SIP_FIELD || v.chars().any(char::is_control))
        {
            return Err(AriError::new(
                400,
                format!("{what} must be at most {MAX_SIP_FIELD} bytes without control characters"),
            ));
        }
    }
    // SIP: an empty user part means `s`; chan_pjsip keeps 79 bytes of it.
    let exten = if call.exten.is_empty() {
        b"s".to_vec()
    } else {
        call.exten.into_bytes()
    };
    let exten = exten[..exten.len().min(MAX_NAME)].to_vec();
    let refused = match sh.common.dialplan.admit(&exten) {
        Admission::Accept => None,
        Admission::Incomplete => Some((484, "484 Address Incomplete")),
        Admission::NotFound => Some((404, "404 Not Found")),
        Admission::Pickup => Some((403, "403 Forbidden: call pickup, no call to pick up")),
    };
    if let Some((status, sip)) = refused {
        bump(&sh.common.stats.calls_rejected);
        return Err(AriError::new(
            status,
            format!(
                "Extension '{}' in context '{}' refused (SIP {sip})",
                clip(&String::from_utf8_lossy(&exten)),
                Dialplan::INBOUND_CONTEXT
            ),
        ));
    }
    let caller = call.caller.unwrap_or_default();
    let mut st = sh.lock();
    let (id, seq) = st.next_id();
    let call_id = call
        .call_id
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| format!("{}-{}", id, sh.common.asterisk_id.replace(':', "")));
    let ch = Channel {
        id: id.clone(),
        seq,
        name: format!("PJSIP/kamailio-{seq:08x}"),
        tech: "PJSIP".into(),
        state: chan_state::RING,
        protocol_id: call_id.clone(),
        caller_name: caller.clone(),
        caller_number: caller,
        context: Dialplan::INBOUND_CONTEXT.to_string(),
        exten: String::from_utf8_lossy(&exten).into_owned(),
        priority: 1,
        app_name: String::new(),
        app_data: String::new(),
        creationtime: now_ts(),
        stasis: None,
        subscribers: Default::default(),
        bridge: None,
        bridge_role: None,
        inbound: true,
        moh: None,
        ringing: false,
        hears: Default::default(),
        after_answer: None,
        pbx: Some(Pbx::new(Dialplan::INBOUND_CONTEXT.as_bytes(), &exten)),
    };
    st.add_channel(ch);
    bump(&sh.common.stats.calls_created);
    let ran = pbx::run(&mut st, &id);
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "call_id": call_id,
            "channel_id": id,
            "stasis": if ran.in_stasis { "started" } else { "failed" },
            "answered": ran.answered,
            "sip_status": ran.sip_status(),
            "hangup_cause": ran.hangup_cause,
        })),
    )
        .into_response())
}

async fn sim_list_calls(State(sh): State<Arc<Shared>>) -> AriResult {
    let st = sh.lock();
    ok(Value::Array(
        sorted_channels(&st)
            .into_iter()
            .map(|c| {
                json!({
                    "call_id": c.protocol_id,
                    "channel_id": c.id,
                    "state": c.state,
                    "exten": c.exten,
                    "bridge": c.bridge,
                    "direction": if c.inbound { "inbound" } else { "outbound" },
                    "stasis": c.stasis,
                    "hears": c.hears.name(),
                    "moh_class": c.hears.moh_class(),
                })
            })
            .collect(),
    ))
}

async fn sim_hangup_call(State(sh): State<Arc<Shared>>, Id(call_id): Id) -> AriResult {
    let mut st = sh.lock();
    let chan = st
        .channel_by_call(&call_id)
        .ok_or_else(|| AriError::new(404, "Call not found"))?;
    bump(&sh.common.stats.hungup_by_caller);
    // Before the answer the caller CANCELs (487 to its INVITE); after it,
    // it sends BYE (cause 16).
    let answered = st
        .channels
        .get(&chan)
        .is_some_and(|c| c.state == chan_state::UP);
    let h = if answered {
        Hangup::normal()
    } else {
        let (cause, tech_cause) = sh.common.version.cancel_cause();
        Hangup {
            request_cause: Some(cause),
            tech_cause,
            cause,
            ..Hangup::normal()
        }
    };
    st.hangup(&chan, h);
    no_content()
}

async fn sim_stats(State(sh): State<Arc<Shared>>) -> AriResult {
    ok(serde_json::to_value(sh.common.stats.snapshot()).unwrap_or(Value::Null))
}

async fn sim_get_faults(State(sh): State<Arc<Shared>>) -> AriResult {
    ok(serde_json::to_value(sh.common.faults()).unwrap_or(Value::Null))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsPatch {
    event_delay_ms: Option<u64>,
    event_latency_ms: Option<u64>,
    duplicate_events: Option<f64>,
    rest_error_rate: Option<f64>,
    /// A rule object sets it; `null` clears it; absent keeps it.
    #[serde(default)]
    rest_rule: Option<Value>,
    #[serde(default)]
    close_websockets: bool,
}

async fn sim_put_faults(State(sh): State<Arc<Shared>>, SimJson(body): SimJson) -> AriResult {
    let patch: FaultsPatch = serde_json::from_value(body)
        .map_err(|e| AriError::new(400, format!("Invalid faults: {e}")))?;
    for share in [patch.duplicate_events, patch.rest_error_rate]
        .into_iter()
        .flatten()
    {
        if !(0.0..=1.0).contains(&share) {
            return Err(AriError::new(400, "shares must be between 0.0 and 1.0"));
        }
    }
    let rule = match patch.rest_rule {
        None => None,
        Some(Value::Null) => Some(None),
        Some(v) => Some(Some(
            serde_json::from_value::<super::RestRule>(v)
                .map_err(|e| AriError::new(400, format!("Invalid rest_rule: {e}")))?,
        )),
    };
    let now = {
        let mut f = lock(&sh.common.faults);
        if let Some(r) = rule {
            f.rest_rule = r;
        }
        if let Some(v) = patch.event_delay_ms {
            f.event_delay_ms = v.min(60_000);
        }
        if let Some(v) = patch.event_latency_ms {
            f.event_latency_ms = v.min(60_000);
        }
        if let Some(v) = patch.duplicate_events {
            f.duplicate_events = v;
        }
        if let Some(v) = patch.rest_error_rate {
            f.rest_error_rate = v;
        }
        f.clone()
    };
    if patch.close_websockets {
        sh.close_all_sockets();
    }
    ok(serde_json::to_value(now).unwrap_or(Value::Null))
}

async fn sim_get_upstream(State(sh): State<Arc<Shared>>) -> AriResult {
    ok(serde_json::to_value(sh.common.upstream()).unwrap_or(Value::Null))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamPatch {
    on_302: Option<On302>,
    follow_delay_ms: Option<u64>,
    on_refer: Option<OnRefer>,
    failover: Option<Vec<String>>,
}

async fn sim_put_upstream(State(sh): State<Arc<Shared>>, SimJson(body): SimJson) -> AriResult {
    let patch: UpstreamPatch = serde_json::from_value(body)
        .map_err(|e| AriError::new(400, format!("Invalid upstream: {e}")))?;
    let now = {
        let mut u = lock(&sh.common.upstream);
        if let Some(v) = patch.on_302 {
            u.on_302 = v;
        }
        if let Some(v) = patch.follow_delay_ms {
            u.follow_delay = Duration::from_millis(v.min(60_000));
        }
        if let Some(v) = patch.on_refer {
            u.on_refer = v;
        }
        if let Some(v) = patch.failover {
            if v.len() > 64
                || v.iter()
                    .any(|h| h.is_empty() || h.len() > 255 || h.contains(char::is_whitespace))
            {
                return Err(AriError::new(
                    400,
                    "Invalid upstream: failover is up to 64 host:port".to_string(),
                ));
            }
            u.failover = v;
        }
        u.clone()
    };
    ok(serde_json::to_value(now).unwrap_or(Value::Null))
}

async fn sim_put_endpoint(
    State(sh): State<Arc<Shared>>,
    Id(resource): Id,
    SimJson(body): SimJson,
) -> AriResult {
    let script: EndpointScript = serde_json::from_value(body)
        .map_err(|e| AriError::new(400, format!("Invalid endpoint script: {e}")))?;
    lock(&sh.common.endpoints)
        .by_resource
        .insert(resource, script);
    no_content()
}

/// `GET /sim/endpoints`: `{"default": script, "endpoints": {resource:
/// script}}`.
async fn sim_list_endpoints(State(sh): State<Arc<Shared>>) -> AriResult {
    ok(lock(&sh.common.endpoints).to_json())
}

/// `GET /sim/log?since=SEQ`: the kept call log entries with `seq > SEQ`
/// (all kept entries without `since`), oldest first.
async fn sim_log(State(sh): State<Arc<Shared>>, p: Params) -> AriResult {
    let since = match p.get("since") {
        None => 0,
        Some(s) => s
            .trim()
            .parse::<u64>()
            .map_err(|_| AriError::new(400, "since must be a non-negative integer"))?,
    };
    let entries = lock(&sh.common.log).since(since);
    ok(serde_json::to_value(entries).unwrap_or(Value::Null))
}

async fn sim_info(State(sh): State<Arc<Shared>>) -> AriResult {
    let c = &sh.common;
    ok(json!({
        "id": c.id,
        "asterisk_id": c.asterisk_id,
        "startup_time": sh.startup_time,
        "sip_host": c.addr.to_string(),
        "version": c.version.version(),
        "dialplan": c.dialplan.to_string(),
    }))
}

/// `POST /sim/inject {"app", "frame"}`: writes `frame` as-is, as one text
/// frame, to the websocket that owns `app` (a chaos knob: a malformed or
/// unexpected event "from Asterisk"). 204, or 404 when no socket owns it.
async fn sim_inject(State(sh): State<Arc<Shared>>, SimJson(body): SimJson) -> AriResult {
    let app = body.get("app").and_then(Value::as_str);
    let frame = body.get("frame").and_then(Value::as_str);
    let (Some(app), Some(frame)) = (app, frame) else {
        return Err(AriError::new(
            400,
            "body must be {\"app\": string, \"frame\": string}",
        ));
    };
    if sh.lock().inject(app, frame.to_string()) {
        no_content()
    } else {
        Err(AriError::new(404, "no websocket owns this application"))
    }
}
