//! `/bridges`: list, create (with or without an id), get, destroy, add
//! and remove channels, bridge MOH.

use std::sync::Arc;

use axum::extract::State;
use serde_json::Value;

use crate::sim::http::{AriError, AriResult, Id, Params, clip, no_content, ok};
use crate::sim::lock;
use crate::sim::media::DEFAULT_MOH_CLASS;
use crate::sim::model::{Bridge, BridgeKind, now_ts};
use crate::sim::state::{Shared, State as NodeState};

pub(super) async fn list_bridges(State(sh): State<Arc<Shared>>) -> AriResult {
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

pub(super) async fn create_bridge(State(sh): State<Arc<Shared>>, p: Params) -> AriResult {
    let id = p.get("bridgeId").map(String::from);
    create_bridge_common(&sh, id, &p)
}

pub(super) async fn create_bridge_with_id(
    State(sh): State<Arc<Shared>>,
    Id(id): Id,
    p: Params,
) -> AriResult {
    create_bridge_common(&sh, Some(id), &p)
}

pub(super) async fn get_bridge(State(sh): State<Arc<Shared>>, Id(id): Id) -> AriResult {
    let st = sh.lock();
    match st.bridges.get(&id) {
        Some(b) => ok(b.to_json()),
        None => Err(AriError::new(404, "Bridge not found")),
    }
}

pub(super) async fn destroy_bridge(State(sh): State<Arc<Shared>>, Id(id): Id) -> AriResult {
    let mut st = sh.lock();
    bridge_exists(&st, &id)?;
    st.destroy_bridge(&id);
    no_content()
}

/// The bridge exists (else 404).
fn bridge_exists(st: &NodeState, id: &str) -> Result<(), AriError> {
    if st.bridges.contains_key(id) {
        Ok(())
    } else {
        Err(AriError::new(404, "Bridge not found"))
    }
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

pub(super) async fn add_channel(
    State(sh): State<Arc<Shared>>,
    Id(bid): Id,
    p: Params,
) -> AriResult {
    let mut st = sh.lock();
    bridge_exists(&st, &bid)?;
    let role = p.get("role").map(String::from);
    for c in channel_list(&st, &p)? {
        st.enter_bridge(&c, &bid, role.as_deref());
    }
    no_content()
}

pub(super) async fn remove_channel(
    State(sh): State<Arc<Shared>>,
    Id(bid): Id,
    p: Params,
) -> AriResult {
    let mut st = sh.lock();
    bridge_exists(&st, &bid)?;
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
pub(super) async fn bridge_moh_start(
    State(sh): State<Arc<Shared>>,
    Id(bid): Id,
    p: Params,
) -> AriResult {
    let mut st = sh.lock();
    bridge_exists(&st, &bid)?;
    let class = p.get("mohClass").unwrap_or(DEFAULT_MOH_CLASS).to_string();
    st.set_bridge_moh(&bid, Some(class));
    no_content()
}

pub(super) async fn bridge_moh_stop(State(sh): State<Arc<Shared>>, Id(bid): Id) -> AriResult {
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
