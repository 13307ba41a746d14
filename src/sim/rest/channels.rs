//! `/channels`: list, get, originate (with or without an id), create,
//! hang up, and the channel controls (answer, ring, MOH, redirect,
//! continue, move), with the `find_control` checks they share.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::sim::dialplan::exec::{atoi_i32, scan_i32};
use crate::sim::dialplan::{Dialplan, Pbx};
use crate::sim::http::{AriError, AriResult, Id, Params, clip, no_content, ok};
use crate::sim::media::DEFAULT_MOH_CLASS;
use crate::sim::model::{AfterAnswer, Channel, chan_state, now_ts};
use crate::sim::state::{Hangup, Shared, State as NodeState};
use crate::sim::{bump, pbx, sip};

pub(super) fn sorted_channels(st: &NodeState) -> Vec<&Channel> {
    let mut v: Vec<&Channel> = st.channels.values().collect();
    v.sort_by_key(|c| c.seq);
    v
}

pub(super) async fn list_channels(State(sh): State<Arc<Shared>>) -> AriResult {
    let st = sh.lock();
    ok(Value::Array(
        sorted_channels(&st)
            .into_iter()
            .map(Channel::to_json)
            .collect(),
    ))
}

pub(super) async fn get_channel(State(sh): State<Arc<Shared>>, Id(id): Id) -> AriResult {
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

/// `appArgs`, split on commas (absent: no arguments).
fn app_args(p: &Params) -> Vec<String> {
    p.get("appArgs")
        .map(|a| a.split(',').map(String::from).collect())
        .unwrap_or_default()
}

/// An endpoint `tech/resource`, both parts non-empty (else 400).
fn endpoint_parts(endpoint: &str) -> Result<(&str, &str), AriError> {
    endpoint
        .split_once('/')
        .filter(|(t, r)| !t.is_empty() && !r.is_empty())
        .ok_or_else(|| AriError::new(400, "Invalid endpoint specified"))
}

/// The ids asked for a new channel (and its other end) are not taken (else
/// 409).
fn ids_free(st: &NodeState, ids: [Option<&str>; 2]) -> Result<(), AriError> {
    if ids
        .into_iter()
        .flatten()
        .any(|id| st.channels.contains_key(id))
    {
        return Err(AriError::new(
            409,
            "Channel with given unique ID already exists",
        ));
    }
    Ok(())
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
    let (tech, resource) = endpoint_parts(endpoint)?;
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
        (Some(app), _) => Some(AfterAnswer::Stasis(app.clone(), app_args(&p))),
        (None, Some(ext)) => {
            let mut pbx = Pbx::new(context.as_bytes(), ext.as_bytes());
            pbx.priority = i32::try_from(priority).unwrap_or(1);
            Some(AfterAnswer::Dialplan(pbx))
        }
        (None, None) => None,
    };
    let call_id = sh.new_call_id();
    let mut st = sh.lock();
    ids_free(&st, [channel_id.as_deref(), p.get("otherChannelId")])?;
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

pub(super) async fn originate(State(sh): State<Arc<Shared>>, p: Params) -> AriResult {
    let id = p.get("channelId").map(String::from);
    originate_common(sh, id, p)
}

pub(super) async fn originate_with_id(
    State(sh): State<Arc<Shared>>,
    Id(id): Id,
    p: Params,
) -> AriResult {
    originate_common(sh, Some(id), p)
}

/// `POST /channels/create`: a channel in Stasis right away, in state
/// `Down`, not dialled (the app has an extra subscription to it).
pub(super) async fn create_channel(State(sh): State<Arc<Shared>>, p: Params) -> AriResult {
    let endpoint = p
        .get("endpoint")
        .ok_or_else(|| AriError::new(400, "Endpoint must be specified"))?;
    let app = p
        .get("app")
        .ok_or_else(|| AriError::new(400, "Application must be specified"))?
        .to_string();
    let (tech, resource) = endpoint_parts(endpoint)?;
    let args = app_args(&p);
    let call_id = sh.new_call_id();
    let mut st = sh.lock();
    ids_free(&st, [p.get("channelId"), p.get("otherChannelId")])?;
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

pub(super) async fn hangup(State(sh): State<Arc<Shared>>, Id(id): Id, p: Params) -> AriResult {
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

pub(super) async fn answer(State(sh): State<Arc<Shared>>, Id(id): Id) -> AriResult {
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

pub(super) async fn ring(State(sh): State<Arc<Shared>>, Id(id): Id) -> AriResult {
    control_op(&sh, &id, |st| st.set_ringing(&id, true))
}

pub(super) async fn ring_stop(State(sh): State<Arc<Shared>>, Id(id): Id) -> AriResult {
    control_op(&sh, &id, |st| st.set_ringing(&id, false))
}

pub(super) async fn moh_start(State(sh): State<Arc<Shared>>, Id(id): Id, p: Params) -> AriResult {
    let class = p.get("mohClass").unwrap_or(DEFAULT_MOH_CLASS).to_string();
    control_op(&sh, &id, |st| st.set_channel_moh(&id, Some(class)))
}

pub(super) async fn moh_stop(State(sh): State<Arc<Shared>>, Id(id): Id) -> AriResult {
    control_op(&sh, &id, |st| st.set_channel_moh(&id, None))
}

pub(super) async fn redirect(State(sh): State<Arc<Shared>>, Id(id): Id, p: Params) -> AriResult {
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
pub(super) async fn continue_in_dialplan(
    State(sh): State<Arc<Shared>>,
    Id(id): Id,
    p: Params,
) -> AriResult {
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

pub(super) async fn move_channel(
    State(sh): State<Arc<Shared>>,
    Id(id): Id,
    p: Params,
) -> AriResult {
    let mut st = sh.lock();
    let ch = control(&st, &id)?;
    let current = ch.stasis.clone().unwrap_or_default();
    let app = p.get("app").unwrap_or("").to_string();
    let args = app_args(&p);
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
