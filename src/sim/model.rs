//! The ARI models a node keeps, as plain data: channels and bridges (the
//! `Channel` and `Bridge` of the spec, with their JSON form), what a
//! channel hears, and how Asterisk spells their timestamps and channel
//! states.
//!
//! Nothing here decides anything: `state.rs` keeps these records and emits
//! their events, `media.rs` derives what a channel hears, `log.rs` records
//! what happened to them.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::format_description;

use super::dialplan::Pbx;

/// Asterisk's timestamp format: `2026-01-01T12:00:00.123+0000`.
pub(crate) fn format_ts(t: OffsetDateTime) -> String {
    let fmt = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3][offset_hour sign:mandatory][offset_minute]"
    );
    t.format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000+0000".to_string())
}

/// Now, in Asterisk's timestamp format.
pub(crate) fn now_ts() -> String {
    format_ts(OffsetDateTime::now_utc())
}

/// Channel states as `ast_state2str` spells them.
pub(crate) mod chan_state {
    pub(crate) const DOWN: &str = "Down";
    pub(crate) const RING: &str = "Ring";
    pub(crate) const RINGING: &str = "Ringing";
    pub(crate) const UP: &str = "Up";
}

/// A channel.
#[derive(Debug, Clone)]
pub(crate) struct Channel {
    pub(crate) id: String,
    pub(crate) seq: u64,
    pub(crate) name: String,
    pub(crate) tech: String,
    pub(crate) state: &'static str,
    pub(crate) protocol_id: String,
    pub(crate) caller_name: String,
    pub(crate) caller_number: String,
    pub(crate) context: String,
    pub(crate) exten: String,
    pub(crate) priority: i64,
    pub(crate) app_name: String,
    pub(crate) app_data: String,
    pub(crate) creationtime: String,
    /// The Stasis app the channel is in.
    pub(crate) stasis: Option<String>,
    /// Apps with an extra subscription (originated with `app=`).
    pub(crate) subscribers: BTreeSet<String>,
    pub(crate) bridge: Option<String>,
    /// The channel's role in its bridge (`addChannel?role=`); `announcer`
    /// matters in holding bridges.
    pub(crate) bridge_role: Option<String>,
    /// Inbound call from the simulated proxy (`POST /sim/calls`).
    pub(crate) inbound: bool,
    /// The class of the channel's own MOH (`POST /channels/{id}/moh`).
    pub(crate) moh: Option<String>,
    /// Ringing indicated (`POST /channels/{id}/ring`).
    pub(crate) ringing: bool,
    /// What the channel hears, as last recorded (`media.rs` keeps it up to
    /// date; `GET /sim/calls` shows it).
    pub(crate) hears: Hears,
    /// Where an originated channel goes once answered.
    pub(crate) after_answer: Option<AfterAnswer>,
    /// The channel's place in the dialplan and its variables, for channels
    /// that run the dialplan (inbound calls, channels originated to an
    /// extension, channels continued out of Stasis).
    pub(crate) pbx: Option<Pbx>,
}

/// Where an originated channel goes once its far end answers.
#[derive(Debug, Clone)]
pub(crate) enum AfterAnswer {
    /// `app=`: straight into the Stasis app with `appArgs`.
    Stasis(String, Vec<String>),
    /// `extension=` (and `context=`, `priority=`): the dialplan from there.
    Dialplan(Pbx),
}

impl Channel {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "protocol_id": self.protocol_id,
            "caller": {"name": self.caller_name, "number": self.caller_number},
            "connected": {"name": "", "number": ""},
            "accountcode": "",
            "dialplan": {
                "context": self.context,
                "exten": self.exten,
                "priority": self.priority,
                "app_name": self.app_name,
                "app_data": self.app_data,
            },
            "creationtime": self.creationtime,
            "language": "en",
        })
    }

    /// `Down`, `Rsrvd` and `Ringing` are "invalid" for redirect, answer,
    /// ring, moh, continue (`channel_state_invalid`).
    pub(crate) fn state_invalid(&self) -> bool {
        matches!(self.state, chan_state::DOWN | chan_state::RINGING | "Rsrvd")
    }
}

/// The type of a bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BridgeKind {
    Mixing,
    Holding,
}

/// A Stasis bridge.
#[derive(Debug, Clone)]
pub(crate) struct Bridge {
    pub(crate) id: String,
    pub(crate) seq: u64,
    pub(crate) kind: BridgeKind,
    pub(crate) name: String,
    pub(crate) channels: Vec<String>,
    pub(crate) creationtime: String,
    /// The class of the MOH played to the bridge (`POST /bridges/{id}/moh`).
    pub(crate) moh: Option<String>,
    /// Apps subscribed to the bridge explicitly
    /// (`POST /applications/{app}/subscription`). The Stasis app of a
    /// channel in the bridge follows it too, but only while the channel is
    /// in it (see `State::bridge_apps`).
    pub(crate) subscribers: BTreeSet<String>,
}

impl Bridge {
    pub(crate) fn technology(&self) -> &'static str {
        match self.kind {
            BridgeKind::Holding => "holding_bridge",
            BridgeKind::Mixing if self.channels.len() <= 2 => "simple_bridge",
            BridgeKind::Mixing => "softmix",
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "technology": self.technology(),
            "bridge_type": match self.kind { BridgeKind::Mixing => "mixing", BridgeKind::Holding => "holding" },
            "bridge_class": "stasis",
            "creator": "Stasis",
            "name": self.name,
            "channels": self.channels,
            "creationtime": self.creationtime,
            "video_mode": "none",
        })
    }
}

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

    /// The bridge playing the MOH heard, if any.
    pub(crate) fn moh_bridge(&self) -> Option<&str> {
        match self {
            Hears::Moh { bridge, .. } => bridge.as_deref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_use_asterisk_format() {
        let t = OffsetDateTime::from_unix_timestamp(1_767_268_800).expect("valid");
        assert_eq!(format_ts(t), "2026-01-01T12:00:00.000+0000");
    }
}
