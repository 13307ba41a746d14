//! `/sim`: the control API (no auth): calls, stats, faults, upstream,
//! endpoint scripts, the call log, node info, and frame injection.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::channels::sorted_channels;
use crate::sim::dialplan::exec::MAX_NAME;
use crate::sim::dialplan::{Admission, Dialplan, Pbx};
use crate::sim::http::{AriError, AriResult, Id, Params, SimJson, clip, no_content, ok};
use crate::sim::model::{Channel, chan_state, now_ts};
use crate::sim::state::{Hangup, Shared};
use crate::sim::{EndpointScript, On302, OnRefer, RestRule, bump, lock, pbx};

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

pub(super) async fn sim_new_call(
    State(sh): State<Arc<Shared>>,
    SimJson(body): SimJson,
) -> AriResult {
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

pub(super) async fn sim_list_calls(State(sh): State<Arc<Shared>>) -> AriResult {
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

pub(super) async fn sim_hangup_call(State(sh): State<Arc<Shared>>, Id(call_id): Id) -> AriResult {
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

pub(super) async fn sim_stats(State(sh): State<Arc<Shared>>) -> AriResult {
    ok(serde_json::to_value(sh.common.stats.snapshot()).unwrap_or(Value::Null))
}

pub(super) async fn sim_get_faults(State(sh): State<Arc<Shared>>) -> AriResult {
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

pub(super) async fn sim_put_faults(
    State(sh): State<Arc<Shared>>,
    SimJson(body): SimJson,
) -> AriResult {
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
            serde_json::from_value::<RestRule>(v)
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

pub(super) async fn sim_get_upstream(State(sh): State<Arc<Shared>>) -> AriResult {
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

pub(super) async fn sim_put_upstream(
    State(sh): State<Arc<Shared>>,
    SimJson(body): SimJson,
) -> AriResult {
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

pub(super) async fn sim_put_endpoint(
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
pub(super) async fn sim_list_endpoints(State(sh): State<Arc<Shared>>) -> AriResult {
    ok(lock(&sh.common.endpoints).to_json())
}

/// `GET /sim/log?since=SEQ`: the kept call log entries with `seq > SEQ`
/// (all kept entries without `since`), oldest first.
pub(super) async fn sim_log(State(sh): State<Arc<Shared>>, p: Params) -> AriResult {
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

pub(super) async fn sim_info(State(sh): State<Arc<Shared>>) -> AriResult {
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
pub(super) async fn sim_inject(State(sh): State<Arc<Shared>>, SimJson(body): SimJson) -> AriResult {
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
