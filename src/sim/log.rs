//! The node's call log (`GET /sim/log?since=SEQ`): a bounded, ordered
//! record of what happened to each call that ARI events alone do not show
//! (what a caller hears) or show only per app (answers, bridges, hangups).
//!
//! Tests read it to check "the caller heard music on hold while waiting" and
//! in which order channels entered bridges. Every entry gets the next `seq`
//! of the node, so entries of one node are totally ordered; the log lives
//! on the node handle and survives restarts, like the counters. Only the
//! last [`LOG_CAPACITY`] entries are kept.
//!
//! This module only stores entries; `state.rs` decides when to write them.

use std::collections::VecDeque;

use serde::Serialize;

use super::model::{Bridge, Channel, now_ts};

/// Entries kept; older ones are dropped first. About 200 bytes each, so a
/// full log is a few megabytes, and enough for a long benchmark's tail.
pub(crate) const LOG_CAPACITY: usize = 20_000;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum What {
    /// The channel went `Up` (`POST /answer`, or an originated far end
    /// answered).
    Answer,
    /// The channel started hearing music on hold (`class` set).
    MohStart,
    /// The channel stopped hearing music on hold (`class` set).
    MohStop,
    /// The channel entered a bridge (`bridge`, `bridge_name` set).
    EnterBridge,
    /// The channel left a bridge (`bridge`, `bridge_name` set).
    LeaveBridge,
    /// Ringing was indicated to the channel (`POST /channels/{id}/ring`).
    RingStart,
    /// Ringing stopped (`DELETE .../ring`, answer of a ringing inbound
    /// channel, hangup).
    RingStop,
    /// The channel is gone (`cause` set).
    Hangup,
}

/// One entry of the log.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LogEntry {
    /// The node's sequence number of the entry (1, 2, ...).
    pub(crate) seq: u64,
    /// When, in Asterisk's event timestamp format.
    pub(crate) ts: String,
    /// The call's SIP Call-ID (`protocol_id`).
    pub(crate) call_id: String,
    /// The channel.
    pub(crate) channel_id: String,
    /// What happened.
    pub(crate) what: What,
    /// The bridge entered or left, or whose MOH the channel hears.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bridge: Option<String>,
    /// That bridge's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bridge_name: Option<String>,
    /// The music on hold class (`moh_start`, `moh_stop`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) class: Option<String>,
    /// The hangup cause (`hangup`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cause: Option<i64>,
}

impl LogEntry {
    /// An entry about `ch`; `seq` and `ts` are set by [`CallLog::push`].
    pub(crate) fn new(what: What, ch: &Channel) -> Self {
        LogEntry {
            seq: 0,
            ts: String::new(),
            call_id: ch.protocol_id.clone(),
            channel_id: ch.id.clone(),
            what,
            bridge: None,
            bridge_name: None,
            class: None,
            cause: None,
        }
    }

    /// Names the bridge.
    pub(crate) fn bridge(mut self, b: &Bridge) -> Self {
        self.bridge = Some(b.id.clone());
        self.bridge_name = Some(b.name.clone());
        self
    }

    /// Sets the MOH class.
    pub(crate) fn class(mut self, class: &str) -> Self {
        self.class = Some(class.to_string());
        self
    }

    /// Sets the hangup cause.
    pub(crate) fn cause(mut self, cause: i64) -> Self {
        self.cause = Some(cause);
        self
    }
}

/// The bounded log of one node.
#[derive(Debug)]
pub(crate) struct CallLog {
    last_seq: u64,
    entries: VecDeque<LogEntry>,
    capacity: usize,
}

impl Default for CallLog {
    fn default() -> Self {
        CallLog::with_capacity(LOG_CAPACITY)
    }
}

impl CallLog {
    /// An empty log keeping at most `capacity` entries (at least one).
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        CallLog {
            last_seq: 0,
            entries: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Appends `e` with the next sequence number and the time now, dropping
    /// the oldest entry when full.
    pub(crate) fn push(&mut self, mut e: LogEntry) {
        self.last_seq += 1;
        e.seq = self.last_seq;
        e.ts = now_ts();
        if self.entries.len() >= self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(e);
    }

    /// The kept entries with `seq > since`, oldest first.
    pub(crate) fn since(&self, since: u64) -> Vec<LogEntry> {
        let start = self.entries.partition_point(|e| e.seq <= since);
        self.entries.range(start..).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(what: What) -> LogEntry {
        LogEntry {
            seq: 0,
            ts: String::new(),
            call_id: "c".into(),
            channel_id: "1.1".into(),
            what,
            bridge: None,
            bridge_name: None,
            class: None,
            cause: None,
        }
    }

    #[test]
    fn the_log_is_ordered_bounded_and_read_since_a_seq() {
        let mut log = CallLog::with_capacity(3);
        for w in [What::Answer, What::MohStart, What::MohStop, What::Hangup] {
            log.push(entry(w));
        }
        let all = log.since(0);
        let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![2, 3, 4], "the oldest entry went");
        assert_eq!(all[0].what, What::MohStart);
        assert_eq!(log.since(3).len(), 1);
        assert!(log.since(4).is_empty());
        assert!(log.since(u64::MAX).is_empty());
    }

    #[test]
    fn entries_serialise_without_empty_fields() {
        let v = serde_json::to_value(entry(What::MohStart).class("default")).expect("json");
        assert_eq!(v["what"], "moh_start");
        assert_eq!(v["class"], "default");
        assert!(v.get("bridge").is_none());
        assert!(v.get("cause").is_none());
    }
}
