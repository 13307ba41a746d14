//! What each channel hears, made visible: `hears` and `moh_class` in
//! `GET /sim/calls`, and `moh_start` / `moh_stop` / `ring_start` /
//! `ring_stop` entries in the call log.
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
//! Every change that can alter one of these (state, channel MOH, ringing,
//! bridge membership and roles, bridge MOH, hangup) goes through this
//! module's `State` methods or calls [`State::refresh_hears`]; a switch into
//! or out of MOH, or between MOH classes, is logged and counted
//! (`moh_started`).

use super::bump;
use super::log::{LogEntry, What};
use super::state::{BridgeKind, State, chan_state};

/// The role of a holding bridge's participants that hear its idle mode
/// (music on hold by default) when the app sets it itself.
const HOLDING_PARTICIPANT: &str = "holding_participant";

/// The bridge role whose channel plays to a holding bridge's participants.
pub(crate) const ANNOUNCER: &str = "announcer";

/// The MOH class used when none is given (`musiconhold.conf [default]`).
pub(crate) const DEFAULT_MOH_CLASS: &str = "default";

/// What a channel hears.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Hears {
    /// Nothing.
    #[default]
    Silence,
    /// Ringback.
    Ringing,
    /// The other channels of its bridge.
    Bridge,
    /// Music on hold of `class`, played by `bridge` (or by the channel's
    /// own MOH when `None`).
    Moh {
        class: String,
        bridge: Option<String>,
    },
}

impl Hears {
    /// `"silence"`, `"ringing"`, `"bridge"` or `"moh"`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Hears::Silence => "silence",
            Hears::Ringing => "ringing",
            Hears::Bridge => "bridge",
            Hears::Moh { .. } => "moh",
        }
    }

    /// The MOH class heard, if any.
    pub(crate) fn moh_class(&self) -> Option<&str> {
        match self {
            Hears::Moh { class, .. } => Some(class),
            _ => None,
        }
    }

    fn moh_bridge(&self) -> Option<&str> {
        match self {
            Hears::Moh { bridge, .. } => bridge.as_deref(),
            _ => None,
        }
    }
}

/// What `chan_id` hears now, by the rules of the module doc.
pub(crate) fn hears(st: &State, chan_id: &str) -> Hears {
    hears_in(st, chan_id, None)
}

/// [`hears`], told whether the channel's bridge holds an announcer
/// (`None`: look). A caller refreshing every member of one bridge looks
/// once, not once per member: a holding bridge with thousands of callers
/// would otherwise cost members² lookups per join or leave.
fn hears_in(st: &State, chan_id: &str, announcer_in_bridge: Option<bool>) -> Hears {
    let Some(ch) = st.channels.get(chan_id) else {
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
    let Some(b) = ch.bridge.as_ref().and_then(|id| st.bridges.get(id)) else {
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
                    st.channels
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

impl State {
    /// Recomputes what `chan_id` hears and records a switch into, out of or
    /// between MOH classes.
    pub(crate) fn refresh_hears(&mut self, chan_id: &str) {
        let now = hears(self, chan_id);
        self.set_hears(chan_id, now);
    }

    /// Recomputes what every channel of `bridge_id` hears.
    pub(crate) fn refresh_bridge(&mut self, bridge_id: &str) {
        let members = self
            .bridges
            .get(bridge_id)
            .map(|b| b.channels.clone())
            .unwrap_or_default();
        let announcer = members.iter().any(|c| {
            self.channels
                .get(c)
                .is_some_and(|o| o.bridge_role.as_deref() == Some(ANNOUNCER))
        });
        for c in members {
            let now = hears_in(self, &c, Some(announcer));
            self.set_hears(&c, now);
        }
    }

    /// A channel with bridge `role` joined or left `bridge_id`: recomputes
    /// what the other members hear when that can change. In a holding
    /// bridge only an announcer changes it (rule 4); a mixing bridge is
    /// recomputed (rule 5 counts its members).
    pub(crate) fn refresh_after_move(&mut self, bridge_id: &str, role: Option<&str>) {
        let holding = self
            .bridges
            .get(bridge_id)
            .is_some_and(|b| b.kind == BridgeKind::Holding);
        if holding && role != Some(ANNOUNCER) {
            return;
        }
        self.refresh_bridge(bridge_id);
    }

    /// Sets what `chan_id` hears (a hangup forces `Silence`), logging
    /// `moh_stop` then `moh_start` as the MOH class heard changes.
    pub(crate) fn set_hears(&mut self, chan_id: &str, now: Hears) {
        let Some(ch) = self.channels.get_mut(chan_id) else {
            return;
        };
        if ch.hears == now {
            return;
        }
        let before = std::mem::replace(&mut ch.hears, now.clone());
        if before.moh_class() == now.moh_class() {
            return;
        }
        for (what, h) in [(What::MohStop, &before), (What::MohStart, &now)] {
            let Some(class) = h.moh_class() else {
                continue;
            };
            let Some(ch) = self.channels.get(chan_id) else {
                return;
            };
            let mut e = LogEntry::new(what, ch).class(class);
            if let Some(b) = h.moh_bridge().and_then(|id| self.bridges.get(id)) {
                e = e.bridge(b);
            }
            self.record(e);
            if what == What::MohStart {
                bump(&self.common.stats.moh_started);
            }
        }
    }

    /// `POST`/`DELETE /channels/{id}/moh`: the channel's own MOH, of
    /// `class`, or none.
    pub(crate) fn set_channel_moh(&mut self, chan_id: &str, class: Option<String>) {
        if let Some(ch) = self.channels.get_mut(chan_id) {
            ch.moh = class;
        }
        self.refresh_hears(chan_id);
    }

    /// Turns the ringing indication on or off, logging `ring_start` /
    /// `ring_stop` when it changes.
    pub(crate) fn set_ringing(&mut self, chan_id: &str, on: bool) {
        let Some(ch) = self.channels.get_mut(chan_id) else {
            return;
        };
        if ch.ringing == on {
            return;
        }
        ch.ringing = on;
        let what = if on { What::RingStart } else { What::RingStop };
        let e = LogEntry::new(what, ch);
        self.record(e);
        self.refresh_hears(chan_id);
    }

    /// `POST`/`DELETE /bridges/{id}/moh`: sets the bridge's MOH class (or
    /// none) and returns the previous one.
    pub(crate) fn set_bridge_moh(
        &mut self,
        bridge_id: &str,
        class: Option<String>,
    ) -> Option<String> {
        let before = self
            .bridges
            .get_mut(bridge_id)
            .and_then(|b| std::mem::replace(&mut b.moh, class));
        self.refresh_bridge(bridge_id);
        before
    }
}
