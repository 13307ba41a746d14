//! The ARI events corral reads, as serde types tagged by `type`.
//!
//! Events corral does not use decode to [`EventKind::Other`], so a newer
//! Asterisk (or `subscribeAll` noise) never breaks the stream. Only the
//! fields corral reads are modelled.

use serde::Deserialize;

use super::rest::{Bridge, Channel};

/// One event from the websocket: the envelope and its typed body.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    /// The app the event was sent to.
    #[serde(default)]
    pub application: String,
    /// The node's EID.
    #[serde(default)]
    pub asterisk_id: Option<String>,
    /// Asterisk's timestamp (`2026-01-01T12:00:00.123+0000`).
    #[serde(default)]
    pub timestamp: Option<String>,
    /// The typed part.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The event types corral acts on.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type")]
pub enum EventKind {
    /// A channel entered the app (`Stasis(corral,<args>)`).
    StasisStart {
        /// The Stasis arguments after the app name.
        #[serde(default)]
        args: Vec<String>,
        /// The channel.
        channel: Channel,
    },
    /// A channel left the app: hung up, redirected, continued or moved.
    StasisEnd {
        /// The channel.
        channel: Channel,
    },
    /// Someone asked for the channel to hang up (a 302 is one).
    ChannelHangupRequest {
        /// Q.850 cause, when non-zero.
        #[serde(default)]
        cause: Option<i64>,
        /// SIP status behind it (≥ 22.7), e.g. 302.
        #[serde(default)]
        tech_cause: Option<i64>,
        /// The channel.
        channel: Channel,
    },
    /// The channel is gone (only to subscribed apps).
    ChannelDestroyed {
        /// Cause.
        #[serde(default)]
        cause: Option<i64>,
        /// The channel.
        channel: Channel,
    },
    /// A channel's state changed (`Ring` → `Up`).
    ChannelStateChange {
        /// The channel.
        channel: Channel,
    },
    /// A channel entered a bridge.
    ChannelEnteredBridge {
        /// The bridge.
        bridge: Bridge,
        /// The channel.
        channel: Channel,
    },
    /// A channel left a bridge.
    ChannelLeftBridge {
        /// The bridge.
        bridge: Bridge,
        /// The channel.
        channel: Channel,
    },
    /// A bridge was destroyed.
    BridgeDestroyed {
        /// The bridge.
        bridge: Bridge,
    },
    /// Another websocket took this app over: this one gets nothing more.
    ApplicationReplaced,
    /// Any other event.
    #[serde(other)]
    Other,
}

impl Event {
    /// Decodes one websocket text frame.
    ///
    /// # Errors
    /// The frame is not JSON, has no `type`, or a known type lacks a field
    /// corral needs; the caller logs it once and carries on.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The event's type name, for logs.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            EventKind::StasisStart { .. } => "StasisStart",
            EventKind::StasisEnd { .. } => "StasisEnd",
            EventKind::ChannelHangupRequest { .. } => "ChannelHangupRequest",
            EventKind::ChannelDestroyed { .. } => "ChannelDestroyed",
            EventKind::ChannelStateChange { .. } => "ChannelStateChange",
            EventKind::ChannelEnteredBridge { .. } => "ChannelEnteredBridge",
            EventKind::ChannelLeftBridge { .. } => "ChannelLeftBridge",
            EventKind::BridgeDestroyed { .. } => "BridgeDestroyed",
            EventKind::ApplicationReplaced => "ApplicationReplaced",
            EventKind::Other => "Other",
        }
    }

    /// The channel the event is about, if any.
    pub fn channel(&self) -> Option<&Channel> {
        match &self.kind {
            EventKind::StasisStart { channel, .. }
            | EventKind::StasisEnd { channel }
            | EventKind::ChannelHangupRequest { channel, .. }
            | EventKind::ChannelDestroyed { channel, .. }
            | EventKind::ChannelStateChange { channel }
            | EventKind::ChannelEnteredBridge { channel, .. }
            | EventKind::ChannelLeftBridge { channel, .. } => Some(channel),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_stasis_start_and_unknown_types() {
        let e = Event::parse(
            r#"{"type":"StasisStart","timestamp":"2026-01-01T12:00:00.123+0000","args":["conference","sales"],
               "channel":{"id":"1.1","name":"PJSIP/k-1","state":"Ring","dialplan":{"exten":"conf-sales"}},
               "asterisk_id":"42:01:0a:84:00:05","application":"corral"}"#,
        )
        .unwrap();
        match e.kind {
            EventKind::StasisStart { args, channel } => {
                assert_eq!(args, ["conference", "sales"]);
                assert_eq!(channel.state, "Ring");
            }
            other => panic!("decoded as {other:?}"),
        }
        let e = Event::parse(r#"{"type":"ChannelVarset","variable":"x","application":"corral"}"#)
            .unwrap();
        assert!(matches!(e.kind, EventKind::Other));
        assert!(Event::parse(r#"{"type":"StasisStart"}"#).is_err());
        assert!(Event::parse("not json").is_err());
    }
}
