//! One incarnation of a node: its channels, bridges, Stasis apps and event
//! websockets, and the rules for who receives which event.
//!
//! Delivery follows ARCHITECTURE.md, *ARI facts: who gets which event*: an
//! app gets a channel's events while the channel is in its Stasis app
//! (`StasisStart` until `StasisEnd`), while it holds an extra subscription
//! (channels originated with `app=`, explicit subscriptions), or when its
//! websocket asked for `subscribeAll`; bridge events go to apps whose
//! channels were added to the bridge through ARI, while they are in it.
//! An app without a websocket loses its events (counted, never replayed).
//!
//! Everything is behind one std `Mutex`, held for short sections and never
//! across an `.await`; events are pushed with `try_send` into each socket's
//! bounded queue, so emitting never blocks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::log::{LogEntry, What};
use super::media::{self, ANNOUNCER};
use super::model::{Bridge, BridgeKind, Channel, Hears, chan_state, format_ts, now_ts};
use super::{Common, bump, lock};

/// Q.850 cause text as `ast_cause2str` gives it.
pub(crate) fn cause_txt(cause: i64) -> &'static str {
    match cause {
        1 => "Unallocated (unassigned) number",
        16 => "Normal Clearing",
        17 => "User busy",
        18 => "No user responding",
        19 => "User alerting, no answer",
        20 => "Subscriber absent",
        21 => "Call Rejected",
        23 => "Redirected to new destination",
        26 => "Answered elsewhere",
        28 => "Invalid number format (addr incomplete)",
        31 => "Normal, unspecified",
        34 => "Circuit/channel congestion",
        38 => "Network out of order",
        41 => "Temporary failure",
        58 => "Bearer capability not available",
        127 => "Interworking, unspecified",
        _ => "Unknown",
    }
}

/// A Stasis app (created by the first websocket that names it).
#[derive(Debug, Default)]
pub(crate) struct App {
    /// The websocket that owns the app; `None` = inactive.
    pub(crate) owner: Option<u64>,
    pub(crate) subscribe_all: bool,
}

/// One event websocket's queue and the apps it owns.
pub(crate) struct Socket {
    pub(crate) tx: mpsc::Sender<String>,
    pub(crate) apps: Vec<String>,
    /// Cancelled when the node drops the socket: its task closes it at once,
    /// without writing what is still queued.
    pub(crate) close: CancellationToken,
}

/// How a channel goes away.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hangup {
    /// `ChannelHangupRequest.cause` (omitted when `None`).
    pub(crate) request_cause: Option<i64>,
    /// `tech_cause` on both events (omitted when `None`).
    pub(crate) tech_cause: Option<i64>,
    /// `ChannelHangupRequest.soft` (ARI `DELETE`).
    pub(crate) soft: bool,
    /// `ChannelDestroyed.cause`.
    pub(crate) cause: i64,
    /// Emit `ChannelHangupRequest` at all (a failed dial other than a busy
    /// one does not queue one).
    pub(crate) request: bool,
}

impl Hangup {
    /// A BYE from the far end or a dialplan `Hangup()`: cause 16.
    pub(crate) fn normal() -> Self {
        Hangup {
            request_cause: Some(16),
            tech_cause: None,
            soft: false,
            cause: 16,
            request: true,
        }
    }
}

/// One incarnation's state, behind [`Shared::state`].
pub(crate) struct State {
    pub(crate) common: Arc<Common>,
    epoch: i64,
    seq: u64,
    pub(crate) channels: HashMap<String, Channel>,
    pub(crate) bridges: HashMap<String, Bridge>,
    pub(crate) apps: HashMap<String, App>,
    pub(crate) sockets: HashMap<u64, Socket>,
    next_socket: u64,
}

/// An incarnation: state plus the token that kills it.
pub(crate) struct Shared {
    pub(crate) common: Arc<Common>,
    pub(crate) state: Mutex<State>,
    pub(crate) cancel: CancellationToken,
    pub(crate) startup_time: String,
    /// Ids for random call ids of originated channels.
    pub(crate) call_seq: AtomicU64,
}

impl Shared {
    pub(crate) fn new(common: Arc<Common>) -> Self {
        let now = OffsetDateTime::now_utc();
        Shared {
            state: Mutex::new(State {
                common: common.clone(),
                epoch: now.unix_timestamp(),
                seq: 0,
                channels: HashMap::new(),
                bridges: HashMap::new(),
                apps: HashMap::new(),
                sockets: HashMap::new(),
                next_socket: 1,
            }),
            common,
            cancel: CancellationToken::new(),
            startup_time: format_ts(now),
            call_seq: AtomicU64::new(0),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Closes every event websocket (their apps become inactive).
    pub(crate) fn close_all_sockets(&self) {
        let mut st = self.lock();
        let ids: Vec<u64> = st.sockets.keys().copied().collect();
        for id in ids {
            st.drop_socket(id);
        }
    }

    /// A fresh SIP Call-ID for an originated channel.
    pub(crate) fn new_call_id(&self) -> String {
        let n = self.call_seq.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}-{}@{}", n, self.startup_time.len(), self.common.addr)
    }
}

impl State {
    /// Next channel/bridge sequence number and a unique id `<epoch>.<seq>`.
    pub(crate) fn next_id(&mut self) -> (String, u64) {
        let seq = self.seq;
        self.seq += 1;
        (format!("{}.{}", self.epoch, seq), seq)
    }

    /// Registers a websocket owning `apps`; a current owner of any of them
    /// gets `ApplicationReplaced` and loses it.
    pub(crate) fn register_socket(
        &mut self,
        apps: &[String],
        subscribe_all: bool,
        tx: mpsc::Sender<String>,
        close: CancellationToken,
    ) -> u64 {
        let id = self.next_socket;
        self.next_socket += 1;
        self.sockets.insert(
            id,
            Socket {
                tx,
                apps: apps.to_vec(),
                close,
            },
        );
        for name in apps {
            let old = self.apps.get(name).and_then(|a| a.owner);
            if let Some(old) = old.filter(|o| *o != id) {
                let ev = self.envelope("ApplicationReplaced", name, Map::new());
                self.send_to_socket(old, ev);
                if let Some(s) = self.sockets.get_mut(&old) {
                    s.apps.retain(|a| a != name);
                }
            }
            let app = self.apps.entry(name.clone()).or_default();
            app.owner = Some(id);
            app.subscribe_all = subscribe_all;
        }
        id
    }

    /// Forgets a websocket; the apps it still owns become inactive.
    pub(crate) fn drop_socket(&mut self, id: u64) {
        if let Some(s) = self.sockets.remove(&id) {
            s.close.cancel();
            for name in s.apps {
                if let Some(a) = self.apps.get_mut(&name)
                    && a.owner == Some(id)
                {
                    a.owner = None;
                    a.subscribe_all = false;
                }
            }
        }
    }

    pub(crate) fn app_active(&self, app: &str) -> bool {
        self.apps.get(app).is_some_and(|a| a.owner.is_some())
    }

    /// Appends an entry to the node's call log (`GET /sim/log`).
    pub(crate) fn record(&self, e: LogEntry) {
        lock(&self.common.log).push(e);
    }

    fn envelope(&self, ty: &str, app: &str, mut fields: Map<String, Value>) -> String {
        fields.insert("type".into(), Value::from(ty));
        fields.insert("timestamp".into(), Value::from(now_ts()));
        fields.insert("application".into(), Value::from(app));
        fields.insert(
            "asterisk_id".into(),
            Value::from(self.common.asterisk_id.clone()),
        );
        Value::Object(fields).to_string()
    }

    fn send_to_socket(&mut self, id: u64, text: String) {
        let Some(sock) = self.sockets.get(&id) else {
            return;
        };
        match sock.tx.try_send(text) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(node = %self.common.id, socket = id, "event websocket reader too slow; closing it");
                bump(&self.common.stats.websockets_cut);
                self.drop_socket(id);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.drop_socket(id),
        }
    }

    /// Writes `text` unchanged to the socket owning `app`; false if none.
    pub(crate) fn inject(&mut self, app: &str, text: String) -> bool {
        match self.apps.get(app).and_then(|a| a.owner) {
            Some(sock) => {
                self.send_to_socket(sock, text);
                true
            }
            None => false,
        }
    }

    /// Sends one event to each of `apps` (their owner sockets).
    pub(crate) fn emit(&mut self, apps: &[String], ty: &str, fields: Map<String, Value>) {
        for app in apps {
            match self.apps.get(app).and_then(|a| a.owner) {
                Some(sock) => {
                    let text = self.envelope(ty, app, fields.clone());
                    self.send_to_socket(sock, text);
                }
                None => bump(&self.common.stats.events_dropped),
            }
        }
    }

    fn subscribe_all_apps(&self, into: &mut Vec<String>) {
        for (name, app) in &self.apps {
            if app.subscribe_all && app.owner.is_some() && !into.contains(name) {
                into.push(name.clone());
            }
        }
    }

    /// Apps that receive the channel's events.
    pub(crate) fn channel_apps(&self, chan_id: &str) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(ch) = self.channels.get(chan_id) {
            if let Some(a) = &ch.stasis {
                v.push(a.clone());
            }
            for a in &ch.subscribers {
                if !v.contains(a) {
                    v.push(a.clone());
                }
            }
        }
        self.subscribe_all_apps(&mut v);
        v
    }

    /// Apps that receive the bridge's events.
    ///
    /// A channel added over ARI subscribes its Stasis app to the bridge
    /// and leaving it unsubscribes the app again (Asterisk's
    /// `app_subscribe_bridge` on `addChannel`, `app_unsubscribe_bridge` in
    /// the channel's after-bridge callback, counted per channel). So a
    /// bridge destroyed over ARI, which first takes its channels out, sends
    /// its `BridgeDestroyed` only to explicit and `subscribeAll`
    /// subscribers, as Asterisk 22.10.1 does.
    pub(crate) fn bridge_apps(&self, bridge_id: &str) -> Vec<String> {
        let Some(b) = self.bridges.get(bridge_id) else {
            let mut v = Vec::new();
            self.subscribe_all_apps(&mut v);
            return v;
        };
        let mut v: Vec<String> = b.subscribers.iter().cloned().collect();
        for c in &b.channels {
            if let Some(app) = self.channels.get(c).and_then(|c| c.stasis.as_ref())
                && !v.contains(app)
            {
                v.push(app.clone());
            }
        }
        self.subscribe_all_apps(&mut v);
        v
    }

    fn chan_json(&self, id: &str) -> Value {
        self.channels
            .get(id)
            .map(Channel::to_json)
            .unwrap_or(Value::Null)
    }

    fn bridge_json(&self, id: &str) -> Value {
        self.bridges
            .get(id)
            .map(Bridge::to_json)
            .unwrap_or(Value::Null)
    }

    fn fields(pairs: Vec<(&str, Value)>) -> Map<String, Value> {
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// A new channel: `ChannelCreated` to `subscribeAll` apps.
    pub(crate) fn add_channel(&mut self, ch: Channel) {
        let id = ch.id.clone();
        self.channels.insert(id.clone(), ch);
        let mut apps = Vec::new();
        self.subscribe_all_apps(&mut apps);
        let f = Self::fields(vec![("channel", self.chan_json(&id))]);
        self.emit(&apps, "ChannelCreated", f);
    }

    /// `Stasis(app,args)`: `StasisStart` if a websocket owns the app; else
    /// `false` (`STASISSTATUS=FAILED`). The channel's `dialplan.app_name`
    /// and `app_data` stay as they are (the dialplan set them).
    pub(crate) fn stasis_enter(&mut self, chan_id: &str, app: &str, args: Vec<String>) -> bool {
        if !self.app_active(app) {
            bump(&self.common.stats.stasis_failed);
            tracing::debug!(node = %self.common.id, channel = chan_id, app, "Stasis app not registered/not active");
            return false;
        }
        let Some(ch) = self.channels.get_mut(chan_id) else {
            return false;
        };
        ch.stasis = Some(app.to_string());
        bump(&self.common.stats.stasis_started);
        let f = Self::fields(vec![
            ("args", json!(args)),
            ("channel", self.chan_json(chan_id)),
        ]);
        self.emit(&[app.to_string()], "StasisStart", f);
        true
    }

    /// [`State::stasis_enter`] for a channel that runs `Stasis(app,args)`
    /// without a dialplan (created or originated with `app=`): its
    /// `dialplan.app_name` becomes `Stasis` and `app_data` `app,args...`.
    pub(crate) fn stasis_enter_app(&mut self, chan_id: &str, app: &str, args: Vec<String>) -> bool {
        if let Some(ch) = self.channels.get_mut(chan_id) {
            let mut app_data = app.to_string();
            for a in &args {
                app_data.push(',');
                app_data.push_str(a);
            }
            ch.app_name = "Stasis".into();
            ch.app_data = app_data;
        }
        self.stasis_enter(chan_id, app, args)
    }

    /// The channel runs `app(data)` at a new place in the dialplan: its
    /// snapshot moves there and `ChannelDialplan` goes to the apps that
    /// follow the channel (`subscribeAll` ones, explicit subscribers).
    pub(crate) fn dialplan_moved(
        &mut self,
        chan_id: &str,
        at: (String, String, i64),
        app: &str,
        data: String,
    ) {
        let Some(ch) = self.channels.get_mut(chan_id) else {
            return;
        };
        (ch.context, ch.exten, ch.priority) = at;
        ch.app_name = app.to_string();
        ch.app_data = data.clone();
        let apps = self.channel_apps(chan_id);
        if apps.is_empty() {
            return;
        }
        let f = Self::fields(vec![
            ("dialplan_app", json!(app)),
            ("dialplan_app_data", json!(data)),
            ("channel", self.chan_json(chan_id)),
        ]);
        self.emit(&apps, "ChannelDialplan", f);
    }

    /// `StasisEnd` to the channel's app, which is unsubscribed from it.
    pub(crate) fn stasis_end(&mut self, chan_id: &str) {
        let Some(app) = self.channels.get(chan_id).and_then(|c| c.stasis.clone()) else {
            return;
        };
        let f = Self::fields(vec![("channel", self.chan_json(chan_id))]);
        if let Some(ch) = self.channels.get_mut(chan_id) {
            ch.stasis = None;
        }
        self.emit(&[app], "StasisEnd", f);
    }

    /// Changes the state and emits `ChannelStateChange`. Going `Up` is
    /// logged (`answer`); the 200 OK to an inbound call ends the ringback
    /// of an earlier 180 (`ring_stop`).
    pub(crate) fn set_state(&mut self, chan_id: &str, state: &'static str) {
        let Some(ch) = self.channels.get_mut(chan_id) else {
            return;
        };
        if ch.state == state {
            return;
        }
        let before = std::mem::replace(&mut ch.state, state);
        let apps = self.channel_apps(chan_id);
        let f = Self::fields(vec![("channel", self.chan_json(chan_id))]);
        self.emit(&apps, "ChannelStateChange", f);
        if state == chan_state::UP
            && let Some(ch) = self.channels.get(chan_id)
        {
            self.record(LogEntry::new(What::Answer, ch));
            if before == chan_state::RING {
                self.set_ringing(chan_id, false);
            }
        }
        self.refresh_hears(chan_id);
    }

    /// Takes the channel out of its bridge (`ChannelLeftBridge`).
    pub(crate) fn leave_bridge(&mut self, chan_id: &str) {
        let Some(bid) = self.channels.get_mut(chan_id).and_then(|c| c.bridge.take()) else {
            return;
        };
        if let Some(b) = self.bridges.get_mut(&bid) {
            b.channels.retain(|c| c != chan_id);
        }
        let mut apps = self.bridge_apps(&bid);
        for a in self.channel_apps(chan_id) {
            if !apps.contains(&a) {
                apps.push(a);
            }
        }
        let f = Self::fields(vec![
            ("bridge", self.bridge_json(&bid)),
            ("channel", self.chan_json(chan_id)),
        ]);
        self.emit(&apps, "ChannelLeftBridge", f);
        let role = self
            .channels
            .get_mut(chan_id)
            .and_then(|ch| ch.bridge_role.take());
        if let (Some(ch), Some(b)) = (self.channels.get(chan_id), self.bridges.get(&bid)) {
            self.record(LogEntry::new(What::LeaveBridge, ch).bridge(b));
        }
        self.refresh_hears(chan_id);
        self.refresh_after_move(&bid, role.as_deref());
    }

    /// Puts the channel into a bridge (leaving its old one first) with its
    /// role (`addChannel?role=`); its Stasis app follows the bridge while
    /// it is in it.
    pub(crate) fn enter_bridge(&mut self, chan_id: &str, bridge_id: &str, role: Option<&str>) {
        // Added again to the bridge it is in, it leaves and enters again
        // (`ChannelLeftBridge`, `ChannelEnteredBridge`), as in Asterisk.
        self.leave_bridge(chan_id);
        let Some(b) = self.bridges.get_mut(bridge_id) else {
            return;
        };
        b.channels.push(chan_id.to_string());
        if let Some(ch) = self.channels.get_mut(chan_id) {
            ch.bridge = Some(bridge_id.to_string());
            ch.bridge_role = role.map(String::from);
        }
        let mut apps = self.bridge_apps(bridge_id);
        for a in self.channel_apps(chan_id) {
            if !apps.contains(&a) {
                apps.push(a);
            }
        }
        let f = Self::fields(vec![
            ("bridge", self.bridge_json(bridge_id)),
            ("channel", self.chan_json(chan_id)),
        ]);
        self.emit(&apps, "ChannelEnteredBridge", f);
        if let (Some(ch), Some(b)) = (self.channels.get(chan_id), self.bridges.get(bridge_id)) {
            self.record(LogEntry::new(What::EnterBridge, ch).bridge(b));
        }
        self.refresh_hears(chan_id);
        self.refresh_after_move(bridge_id, role);
    }

    /// A new bridge: `BridgeCreated` to `subscribeAll` apps (nothing ties a
    /// bridge created over REST to an app yet).
    pub(crate) fn add_bridge(&mut self, b: Bridge) -> Value {
        let id = b.id.clone();
        self.bridges.insert(id.clone(), b);
        let apps = self.bridge_apps(&id);
        let json = self.bridge_json(&id);
        self.emit(
            &apps,
            "BridgeCreated",
            Self::fields(vec![("bridge", json.clone())]),
        );
        json
    }

    /// Empties and destroys a bridge; its channels stay in Stasis.
    pub(crate) fn destroy_bridge(&mut self, bridge_id: &str) {
        let chans = self
            .bridges
            .get(bridge_id)
            .map(|b| b.channels.clone())
            .unwrap_or_default();
        for c in chans {
            self.leave_bridge(&c);
        }
        let apps = self.bridge_apps(bridge_id);
        let f = Self::fields(vec![("bridge", self.bridge_json(bridge_id))]);
        self.bridges.remove(bridge_id);
        self.emit(&apps, "BridgeDestroyed", f);
    }

    /// Hangs a channel up: `ChannelHangupRequest` → (`ChannelLeftBridge`) →
    /// `StasisEnd` → `ChannelDestroyed` (only to apps still subscribed).
    pub(crate) fn hangup(&mut self, chan_id: &str, h: Hangup) {
        if !self.channels.contains_key(chan_id) {
            return;
        }
        if h.request {
            let apps = self.channel_apps(chan_id);
            let mut f = Self::fields(vec![("channel", self.chan_json(chan_id))]);
            if let Some(c) = h.request_cause.filter(|c| *c != 0) {
                f.insert("cause".into(), json!(c));
            }
            if let Some(t) = h.tech_cause.filter(|c| *c != 0) {
                f.insert("tech_cause".into(), json!(t));
            }
            if h.soft {
                f.insert("soft".into(), json!(true));
            }
            self.emit(&apps, "ChannelHangupRequest", f);
        }
        self.leave_bridge(chan_id);
        self.stasis_end(chan_id);
        // The call's media ends with it.
        self.set_ringing(chan_id, false);
        self.set_hears(chan_id, Hears::Silence);
        if let Some(ch) = self.channels.get(chan_id) {
            self.record(LogEntry::new(What::Hangup, ch).cause(h.cause));
        }
        let apps = self.channel_apps(chan_id);
        let mut f = Self::fields(vec![
            ("cause", json!(h.cause)),
            ("cause_txt", json!(cause_txt(h.cause))),
            ("channel", self.chan_json(chan_id)),
        ]);
        if let Some(t) = h.tech_cause.filter(|c| *c != 0) {
            f.insert("tech_cause".into(), json!(t));
        }
        self.channels.remove(chan_id);
        self.emit(&apps, "ChannelDestroyed", f);
    }

    /// The `Application` model of one app.
    pub(crate) fn app_json(&self, name: &str) -> Value {
        let mut chans: Vec<&Channel> = self
            .channels
            .values()
            .filter(|c| c.stasis.as_deref() == Some(name) || c.subscribers.contains(name))
            .collect();
        chans.sort_by_key(|c| c.seq);
        let mut bridges: Vec<&Bridge> = self
            .bridges
            .values()
            .filter(|b| {
                b.subscribers.contains(name)
                    || b.channels.iter().any(|c| {
                        self.channels
                            .get(c)
                            .is_some_and(|c| c.stasis.as_deref() == Some(name))
                    })
            })
            .collect();
        bridges.sort_by_key(|b| b.seq);
        json!({
            "name": name,
            "channel_ids": chans.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
            "bridge_ids": bridges.iter().map(|b| b.id.clone()).collect::<Vec<_>>(),
            "endpoint_ids": [],
            "device_names": [],
            "events_allowed": [],
            "events_disallowed": [],
        })
    }

    /// Finds a live channel by its call id (SIP Call-ID).
    pub(crate) fn channel_by_call(&self, call_id: &str) -> Option<String> {
        self.channels
            .values()
            .filter(|c| c.protocol_id == call_id)
            .min_by_key(|c| c.seq)
            .map(|c| c.id.clone())
    }
}

// What channels hear: `media.rs` states the rules, these apply them and log
// what changed.
impl State {
    /// Recomputes what `chan_id` hears and records a switch into, out of or
    /// between MOH classes.
    pub(crate) fn refresh_hears(&mut self, chan_id: &str) {
        let now = media::hears(&self.channels, &self.bridges, chan_id);
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
            let now = media::hears_in(&self.channels, &self.bridges, &c, Some(announcer));
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
