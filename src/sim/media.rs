//! The rules of what each channel hears, which the node makes visible:
//! `hears` and `moh_class` in `GET /sim/calls`, and `moh_start` /
//! `moh_stop` / `ring_start` / `ring_stop` entries in the call log.
//!
//! The simulator carries no media, so "hearing" is derived from the state
//! that would produce it on Asterisk, in this order:
//!
//! 1. A channel that is not `Up` has no media path (the simulator has no
//!    early media): it hears `ringing` if the app indicated ringing (a 180,
//!    so the caller's phone plays ringback), else `silence`: a caller hears
//!    music on hold or a bridge only over early media or once answered
//!    (ARCHITECTURE.md, *ARI facts: what a caller hears*).
//! 2. MOH started on the channel itself (`POST /channels/{id}/moh`): `moh`.
//! 3. A bridge playing MOH (`POST /bridges/{id}/moh`, an announcer channel
//!    hidden from ARI): `moh` with the bridge's class, for every member.
//! 4. In a holding bridge: a channel with role `announcer` in the bridge is
//!    what every participant hears (`bridge`); the announcer hears nobody.
//!    Without one, a channel the app added with role `holding_participant`
//!    hears `moh` (that role's `idle_mode` defaults to `musiconhold`, class
//!    `default`), and one added without a role hears nothing: ARI
//!    (`res/stasis/stasis_bridge.c`) gives it `holding_participant` with
//!    `idle_mode=none`. Seen on a real Asterisk 22.10.1: callers added
//!    without a role sent no RTP until the app started the bridge's MOH.
//! 5. In a mixing bridge with at least one other channel: `bridge`.
//! 6. Ringing indicated (inband ringback on an answered channel): `ringing`.
//! 7. Otherwise `silence`.
//!
//! This module only states the rules, as pure functions of a node's
//! channels and bridges. Every change that can alter what a channel hears
//! (state, channel MOH, ringing, bridge membership and roles, bridge MOH,
//! hangup) goes through `State`'s methods in `state.rs`, which apply them
//! (`State::refresh_hears`); a switch into or out of MOH, or between MOH
//! classes, is logged there and counted (`moh_started`).

use std::collections::HashMap;

use super::model::{Bridge, BridgeKind, Channel, Hears, chan_state};

/// The role of a holding bridge's participants that hear its idle mode
/// (music on hold by default) when the app sets it itself.
const HOLDING_PARTICIPANT: &str = "holding_participant";

/// The bridge role whose channel plays to a holding bridge's participants.
pub(crate) const ANNOUNCER: &str = "announcer";

/// The MOH class used when none is given (`musiconhold.conf [default]`).
pub(crate) const DEFAULT_MOH_CLASS: &str = "default";

/// What `chan_id` hears now, by the rules of the module doc, among a
/// node's `channels` and `bridges`.
pub(crate) fn hears(
    channels: &HashMap<String, Channel>,
    bridges: &HashMap<String, Bridge>,
    chan_id: &str,
) -> Hears {
    hears_in(channels, bridges, chan_id, None)
}

/// [`hears`], told whether the channel's bridge holds an announcer
/// (`None`: look). A caller refreshing every member of one bridge looks
/// once, not once per member: a holding bridge with thousands of callers
/// would otherwise cost members² lookups per join or leave.
pub(crate) fn hears_in(
    channels: &HashMap<String, Channel>,
    bridges: &HashMap<String, Bridge>,
    chan_id: &str,
    announcer_in_bridge: Option<bool>,
) -> Hears {
    let Some(ch) = channels.get(chan_id) else {
        return Hears::Silence;
    };
    let ringing_or_silence = if ch.ringing {
        Hears::Ringing
    } else {
        Hears::Silence
    };
    if ch.state != chan_state::UP {
        return ringing_or_silence;
    }
    if let Some(class) = &ch.moh {
        return Hears::Moh {
            class: class.clone(),
            bridge: None,
        };
    }
    let Some(b) = ch.bridge.as_ref().and_then(|id| bridges.get(id)) else {
        return ringing_or_silence;
    };
    if let Some(class) = &b.moh {
        return Hears::Moh {
            class: class.clone(),
            bridge: Some(b.id.clone()),
        };
    }
    let mut others = b.channels.iter().filter(|c| c.as_str() != chan_id);
    match b.kind {
        BridgeKind::Holding if ch.bridge_role.as_deref() == Some(ANNOUNCER) => ringing_or_silence,
        BridgeKind::Holding => {
            // This channel is no announcer (the arm above), so "another
            // channel is" is the same as "the bridge holds one".
            let announcer = announcer_in_bridge.unwrap_or_else(|| {
                others.any(|c| {
                    channels
                        .get(c)
                        .is_some_and(|o| o.bridge_role.as_deref() == Some(ANNOUNCER))
                })
            });
            if announcer {
                Hears::Bridge
            } else if ch.bridge_role.as_deref() == Some(HOLDING_PARTICIPANT) {
                Hears::Moh {
                    class: DEFAULT_MOH_CLASS.to_string(),
                    bridge: Some(b.id.clone()),
                }
            } else {
                // ARI gives a channel added without a role the role
                // holding_participant with idle_mode "none".
                ringing_or_silence
            }
        }
        BridgeKind::Mixing if others.next().is_some() => Hears::Bridge,
        BridgeKind::Mixing => ringing_or_silence,
    }
}
