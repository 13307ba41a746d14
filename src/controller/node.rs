//! One node's loop: its event stream, its health, and the resync that
//! follows every (re)connection.
//!
//! # Health
//! A node is up while its websocket is up and its `GET /asterisk/ping`s
//! answer. When the socket closes, or pings fail `down_after_failures`
//! times in a row, the node is marked down in the store, which releases its
//! rooms at once so the next arrivals are placed on live nodes. Node
//! liveness never depends on the store: a store that is down only delays
//! the write, which is retried.
//!
//! # Resync
//! Asterisk replays nothing after a reconnect, so on every connection the
//! node registers (a new incarnation starts empty), then corral reads
//! `GET /bridges` and `GET /channels`: calls in corral's bridges are
//! recorded as members, calls still ringing in corral's app are placed as
//! if their `StasisStart` had just arrived, and members whose channel is
//! gone are removed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Controller, FarmEvent, NodeRuntime};
use crate::ari::events::{Event, EventKind};
use crate::ari::stream::{self, EVENT_QUEUE, StreamConfig, StreamItem};
use crate::domain::{ChannelId, Incarnation, NodeState, Role, RoomKind};
use crate::store::{MemberAdded, NodeRegistration, RoomFilter};

/// After a (re)connection, when the second resync looks for calls that
/// entered the app while the socket was down.
const RESYNC_SECOND_LOOK: Duration = Duration::from_millis(300);

/// Events one channel's worker may have queued.
const CHANNEL_QUEUE: usize = 32;

/// Runs `node` until `cancel`: holds the node's lease (one replica per
/// node's stream), streams while it holds it, and lets it go on stop.
pub(crate) async fn run(ctrl: Controller, node: Arc<NodeRuntime>, cancel: CancellationToken) {
    let store = ctrl.inner.store.clone();
    let replica = ctrl.inner.cfg.replica.clone();
    let ttl = ctrl.inner.cfg.lease_ttl;
    let mut waiting_logged = false;
    loop {
        // Acquire: another replica may hold the node; try again at a third
        // of the lease's life.
        match store.acquire_lease(&node.id, &replica, ttl).await {
            Ok(true) => {
                tracing::info!(node = %node.id, replica = %replica, "lease won");
                waiting_logged = false;
            }
            Ok(false) => {
                if !waiting_logged {
                    tracing::info!(node = %node.id, replica = %replica, "another replica holds the node's stream; standing by");
                    waiting_logged = true;
                }
                if !ctrl.sleep_unless_stopped(ttl / 3).await || cancel.is_cancelled() {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::debug!(node = %node.id, reason = %e, "lease not acquired (store unavailable)");
                if !ctrl.sleep_unless_stopped(Duration::from_millis(500)).await
                    || cancel.is_cancelled()
                {
                    return;
                }
                continue;
            }
        }
        let session = cancel.child_token();
        let renew = {
            let (store, node_id, replica, session) = (
                store.clone(),
                node.id.clone(),
                replica.clone(),
                session.clone(),
            );
            tokio::spawn(async move {
                let mut last_ok = tokio::time::Instant::now();
                loop {
                    tokio::select! {
                        _ = session.cancelled() => return,
                        _ = tokio::time::sleep(ttl / 3) => {}
                    }
                    match store.acquire_lease(&node_id, &replica, ttl).await {
                        Ok(true) => last_ok = tokio::time::Instant::now(),
                        Ok(false) => {
                            tracing::warn!(node = %node_id, replica = %replica, "lease lost to another replica; stopping this node's stream");
                            session.cancel();
                            return;
                        }
                        // A store that cannot answer does not take the
                        // stream away until the lease would have expired.
                        Err(_) if last_ok.elapsed() < ttl => {}
                        Err(e) => {
                            tracing::warn!(node = %node_id, reason = %e, "lease not renewed within its life; stopping this node's stream");
                            session.cancel();
                            return;
                        }
                    }
                }
            })
        };
        stream_session(&ctrl, &node, &session).await;
        renew.abort();
        node.healthy.store(false, Ordering::Relaxed);
        node.streaming.store(false, Ordering::Relaxed);
        if cancel.is_cancelled() {
            // Let another replica take over at once.
            if let Err(e) = store.release_lease(&node.id, &replica).await {
                tracing::debug!(node = %node.id, reason = %e, "lease not released; it expires on its own");
            }
            return;
        }
    }
}

/// Streams `node` until `cancel` (shutdown or a lost lease).
async fn stream_session(ctrl: &Controller, node: &Arc<NodeRuntime>, cancel: &CancellationToken) {
    let (ctrl, node, cancel) = (ctrl.clone(), node.clone(), cancel.clone());
    let (tx, mut rx) = mpsc::channel(EVENT_QUEUE);
    let scfg = StreamConfig {
        ping_interval: ctrl.inner.cfg.ping_interval,
        pong_timeout: ctrl.inner.cfg.ping_interval * ctrl.inner.cfg.down_after_failures.max(1),
        connect_timeout: Duration::from_secs(3),
    };
    let stream_task = {
        let ari = node.ari.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move { stream::run(ari, scfg, tx, cancel).await })
    };
    let health_task = {
        let ctrl = ctrl.clone();
        let node = node.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move { health(ctrl, node, cancel).await })
    };
    let reconcile_task = {
        let ctrl = ctrl.clone();
        let node = node.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move { reconcile_loop(ctrl, node, cancel).await })
    };
    tracing::info!(node = %node.id, url = %node.ari.config().base_url, "node loop started");
    let mut workers: HashMap<String, mpsc::Sender<Event>> = HashMap::new();
    loop {
        let item = tokio::select! {
            _ = cancel.cancelled() => break,
            item = rx.recv() => item,
        };
        let Some(item) = item else { break };
        match item {
            StreamItem::Connected => {
                node.streaming.store(true, Ordering::Relaxed);
                node.ping_down.store(false, Ordering::Relaxed);
                workers.clear();
                ctrl.on_connected(&node).await;
            }
            StreamItem::Disconnected { reason } => {
                node.streaming.store(false, Ordering::Relaxed);
                if node.healthy.load(Ordering::Relaxed) {
                    ctrl.mark_down(&node, &format!("event stream lost: {reason}"))
                        .await;
                }
            }
            StreamItem::Replaced => {
                tracing::error!(node = %node.id, app = %ctrl.inner.cfg.app,
                    "another websocket took corral's app over on this node; events now go there (two replicas without leases?)");
            }
            StreamItem::Malformed => ctrl.inner.metrics.bad_event(&node.id, "malformed"),
            StreamItem::Event(ev) => ctrl.dispatch(&node, &mut workers, *ev),
        }
    }
    stream_task.abort();
    health_task.abort();
    reconcile_task.abort();
    tracing::info!(node = %node.id, "node loop stopped");
}

impl Controller {
    /// Routes one event to its channel's worker (created on `StasisStart`),
    /// so one channel's events are handled in order and different channels
    /// in parallel.
    fn dispatch(
        &self,
        node: &Arc<NodeRuntime>,
        workers: &mut HashMap<String, mpsc::Sender<Event>>,
        ev: Event,
    ) {
        workers.retain(|_, tx| !tx.is_closed());
        let Some(channel) = ev.channel() else {
            if let EventKind::BridgeDestroyed { bridge } = &ev.kind
                && let Ok(mut b) = node.bridges.lock()
            {
                b.remove(&bridge.id);
            }
            return;
        };
        let id = channel.id.clone();
        if let Some(tx) = workers.get(&id) {
            match tx.try_send(ev) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(ev)) => {
                    // A worker stuck behind a slow call: never block the
                    // reader; hand the event to a task that waits.
                    let tx = tx.clone();
                    self.inner.tracker.spawn(async move {
                        let _ = tx.send(ev).await;
                    });
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(ev)) => {
                    workers.remove(&id);
                    return self.dispatch(node, workers, ev);
                }
            }
        }
        match &ev.kind {
            EventKind::StasisStart { .. } => {
                let (tx, rx) = mpsc::channel(CHANNEL_QUEUE);
                let _ = tx.try_send(ev);
                // Already being placed by a resync (its StasisStart came
                // late): the worker only follows the channel's later events.
                let placing = node
                    .inflight
                    .lock()
                    .map(|mut f| !f.insert(id.clone()))
                    .unwrap_or(false);
                workers.insert(id, tx);
                let ctrl = self.clone();
                let node = node.clone();
                self.inner
                    .tracker
                    .spawn(async move { ctrl.channel_worker(node, rx, placing).await });
            }
            EventKind::StasisEnd { .. } | EventKind::ChannelDestroyed { .. } => {
                // A channel corral joined before a reconnect, or a member
                // leg that was never answered: no worker.
                let cause = match &ev.kind {
                    EventKind::ChannelDestroyed { cause, .. } => *cause,
                    _ => None,
                };
                if let Ok(chan) = ChannelId::new(id.as_str()) {
                    let ctrl = self.clone();
                    let node = node.clone();
                    self.inner
                        .tracker
                        .spawn(async move { ctrl.gone_because(&node, &chan, cause).await });
                }
            }
            _ => {}
        }
    }

    /// Handles one channel's events in order until it leaves the app.
    async fn channel_worker(
        &self,
        node: Arc<NodeRuntime>,
        mut rx: mpsc::Receiver<Event>,
        placing: bool,
    ) {
        let mut started = placing;
        while let Some(ev) = rx.recv().await {
            match &ev.kind {
                // A second StasisStart before the StasisEnd is a duplicate
                // (a re-entry into Stasis comes after a StasisEnd, in a new
                // worker): handling it again could undo the join.
                EventKind::StasisStart { .. } if started => {
                    self.inner.metrics.bad_event(&node.id, "duplicate");
                }
                EventKind::StasisStart { args, channel } => {
                    started = true;
                    self.on_stasis_start(&node, args, channel).await;
                    // Handled: from now on a resync may retry it if it is
                    // still in no bridge (unless it was redirected away).
                    if let Ok(mut f) = node.inflight.lock() {
                        f.remove(&channel.id);
                    }
                }
                EventKind::StasisEnd { channel } | EventKind::ChannelDestroyed { channel, .. } => {
                    if let Ok(chan) = ChannelId::new(channel.id.as_str()) {
                        self.gone(&node, &chan).await;
                    }
                    return;
                }
                _ => {}
            }
        }
    }

    /// The stream is up: register the node (a new incarnation starts
    /// empty), mark it healthy, then resync.
    pub(crate) async fn on_connected(&self, node: &Arc<NodeRuntime>) {
        let info = match node.ari.info().await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(node = %node.id, reason = %e, "connected but GET /asterisk/info failed; will retry at the next reconcile");
                return;
            }
        };
        let incarnation = Incarnation {
            asterisk_id: info.system.map(|s| s.entity_id).unwrap_or_default(),
            started: info.status.map(|s| s.startup_time).unwrap_or_default(),
        };
        let reg = NodeRegistration {
            node: node.id.clone(),
            incarnation: incarnation.clone(),
            sip_host: node.spec.sip_host.clone(),
            capacity: node.spec.capacity,
            max_rooms: node.spec.max_rooms,
        };
        let registered = loop {
            match self.inner.store.register_node(&reg).await {
                Ok(r) => break r,
                Err(e) => {
                    tracing::warn!(node = %node.id, reason = %e, "node not registered (store unavailable); retrying");
                    if !self.sleep_unless_stopped(Duration::from_millis(500)).await {
                        return;
                    }
                }
            }
        };
        if registered.new_incarnation {
            // A restarted Asterisk has no calls: its queue callers and
            // agents are gone.
            self.queues_node_lost(&node.id).await;
            if let Ok(mut b) = node.bridges.lock() {
                b.clear();
            }
            if let Ok(mut c) = node.channels.lock() {
                c.clear();
            }
            if registered.released_rooms > 0 {
                self.inner.metrics.released(
                    &node.id,
                    "new_incarnation",
                    u64::from(registered.released_rooms),
                );
            }
        }
        node.healthy.store(true, Ordering::Relaxed);
        tracing::info!(node = %node.id, incarnation = %incarnation, new_incarnation = registered.new_incarnation,
            released_rooms = registered.released_rooms, "node up");
        self.emit(FarmEvent::NodeUp {
            node: node.id.clone(),
            new_incarnation: registered.new_incarnation,
        });
        self.refresh_view().await;
        self.resync(node).await;
        // Calls that entered the app while the socket was down never get a
        // StasisStart: a second look shortly places them (two sightings).
        let ctrl = self.clone();
        let node = node.clone();
        self.inner.tracker.spawn(async move {
            if ctrl.sleep_unless_stopped(RESYNC_SECOND_LOOK).await
                && node.healthy.load(Ordering::Relaxed)
            {
                ctrl.resync(&node).await;
            }
        });
    }

    /// Marks `node` down and releases its rooms.
    pub(crate) async fn mark_down(&self, node: &Arc<NodeRuntime>, reason: &str) {
        if !node.healthy.swap(false, Ordering::Relaxed) {
            return;
        }
        if let Ok(mut b) = node.bridges.lock() {
            b.clear();
        }
        self.inner.metrics.node_state(&node.id, NodeState::Down);
        let released = loop {
            match self.inner.store.set_node_health(&node.id, false).await {
                Ok(h) => break h.released_rooms,
                Err(e) => {
                    tracing::warn!(node = %node.id, reason = %e, "node not marked down in the store yet; retrying");
                    if !self.sleep_unless_stopped(Duration::from_millis(500)).await {
                        return;
                    }
                    if node.healthy.load(Ordering::Relaxed) {
                        return;
                    }
                }
            }
        };
        self.inner
            .metrics
            .released(&node.id, "node_down", u64::from(released));
        tracing::warn!(node = %node.id, reason, released_rooms = released, "node down");
        self.emit(FarmEvent::NodeDown {
            node: node.id.clone(),
            reason: reason.to_string(),
            released_rooms: released,
        });
        self.refresh_view().await;
    }

    /// Compares the node's ARI with the store and heals the difference.
    pub(crate) async fn resync(&self, node: &Arc<NodeRuntime>) {
        let (bridges, channels) = match tokio::try_join!(node.ari.bridges(), node.ari.channels()) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(node = %node.id, reason = %e, "resync skipped: ARI did not answer");
                return;
            }
        };
        // The node's load, as ARI reports it, for the placement policy.
        if let Err(e) = self
            .inner
            .store
            .report_load(&node.id, channels.len().min(u32::MAX as usize) as u32)
            .await
        {
            tracing::debug!(node = %node.id, reason = %e, "load not reported");
        }
        let mut bridged = std::collections::HashSet::new();
        // Rooms with calls bridged here while another node owns them.
        let mut stray: HashMap<crate::domain::RoomKey, (crate::domain::NodeId, Vec<ChannelId>)> =
            HashMap::new();
        for b in &bridges {
            let Some(room) = self
                .inner
                .names
                .parse_bridge_name(&b.name)
                .map(|of| of.room().clone())
            else {
                continue;
            };
            if let Ok(mut known) = node.bridges.lock() {
                known.insert(b.id.clone());
            }
            for ch in &b.channels {
                bridged.insert(ch.clone());
                let Ok(chan) = ChannelId::new(ch.as_str()) else {
                    continue;
                };
                let role = match room.kind {
                    RoomKind::Conference => Role::Participant,
                    RoomKind::Queue => Role::Caller,
                };
                match self
                    .inner
                    .store
                    .add_member(&room, &node.id, &chan, role)
                    .await
                {
                    Ok(MemberAdded::Added { .. } | MemberAdded::AlreadyMember { .. }) => {
                        if let Ok(mut c) = node.channels.lock() {
                            c.entry(ch.clone()).or_insert(super::rooms::Joined {
                                room: room.clone(),
                                recorded: true,
                            });
                        }
                    }
                    Ok(MemberAdded::Moved { owner, .. }) => {
                        if let Ok(mut c) = node.channels.lock() {
                            c.entry(ch.clone()).or_insert(super::rooms::Joined {
                                room: room.clone(),
                                recorded: false,
                            });
                        }
                        stray
                            .entry(room.clone())
                            .or_insert_with(|| (owner, Vec::new()))
                            .1
                            .push(chan);
                    }
                    Err(e) => {
                        tracing::warn!(node = %node.id, reason = %e, "resync stopped (store unavailable)");
                        return;
                    }
                }
            }
        }
        self.heal_splits(node, stray).await;
        self.destroy_stale_bridges(node, &bridges).await;
        // Calls in corral's app but in no bridge.
        let app = &self.inner.cfg.app;
        let live: std::collections::HashSet<&str> =
            channels.iter().map(|c| c.id.as_str()).collect();
        let was_suspect = node
            .suspects
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        let mut now_suspect = std::collections::HashSet::new();
        for ch in &channels {
            let in_app = ch.dialplan.app_name.as_deref() == Some("Stasis")
                && ch
                    .dialplan
                    .app_data
                    .as_deref()
                    .is_some_and(|d| d == app || d.starts_with(&format!("{app},")));
            let joined = node
                .channels
                .lock()
                .map(|c| c.contains_key(&ch.id))
                .unwrap_or(true)
                || node
                    .inflight
                    .lock()
                    .map(|f| f.contains(&ch.id))
                    .unwrap_or(true)
                || node
                    .redirected
                    .lock()
                    .map(|r| r.contains(&ch.id))
                    .unwrap_or(true);
            // Ringing: its StasisStart was lost. Answered but in no bridge:
            // a join that failed half-way (ARI errors past the retries).
            let placeable = ch.state == "Ring" || ch.state == "Up";
            // Seen unhandled by two resyncs in a row: a StasisStart that is
            // merely late (events can trail `GET /channels`) is not raced.
            let unhandled = in_app && placeable && !bridged.contains(&ch.id) && !joined;
            if unhandled {
                now_suspect.insert(ch.id.clone());
            }
            if unhandled && was_suspect.contains(&ch.id) {
                let args: Vec<String> = ch
                    .dialplan
                    .app_data
                    .as_deref()
                    .unwrap_or("")
                    .split(',')
                    .skip(1)
                    .map(str::to_string)
                    .collect();
                tracing::info!(node = %node.id, channel = %ch.id, state = %ch.state, "placing a call that is in corral's app but in no bridge");
                if let Ok(mut f) = node.inflight.lock() {
                    f.insert(ch.id.clone());
                }
                let ctrl = self.clone();
                let node = node.clone();
                let ch = ch.clone();
                self.inner.tracker.spawn(async move {
                    ctrl.on_stasis_start(&node, &args, &ch).await;
                    if let Ok(mut f) = node.inflight.lock() {
                        f.remove(&ch.id);
                    }
                });
            }
        }
        now_suspect.retain(|id| !was_suspect.contains(id));
        if let Ok(mut s) = node.suspects.lock() {
            *s = now_suspect;
        }
        // Members whose channel is gone.
        let stale: Vec<(String, super::rooms::Joined)> = node
            .channels
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|(id, _)| !live.contains(id.as_str()))
                    .map(|(a, b)| (a.clone(), b.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (id, _) in stale {
            // The snapshot may predate the join: ask ARI before removing.
            if self.channel_gone(node, &id).await
                && let Ok(chan) = ChannelId::new(id)
            {
                self.gone(node, &chan).await;
            }
        }
        self.sweep_store_members(node, &live).await;
        self.queue_resync(node, &live, &bridges).await;
    }

    /// Heals splits seen on `node`: every call bridged here for a room that
    /// another node owns is moved to the owner with a token (the calls are
    /// answered, so Asterisk sends a REFER). A room whose stray calls are
    /// all gone is announced healed, with how long the split lasted.
    async fn heal_splits(
        &self,
        node: &Arc<NodeRuntime>,
        stray: HashMap<crate::domain::RoomKey, (crate::domain::NodeId, Vec<ChannelId>)>,
    ) {
        let now = Instant::now();
        let healed: Vec<(crate::domain::RoomKey, Instant)> = match node.splits.lock() {
            Ok(mut splits) => {
                let healed = splits
                    .iter()
                    .filter(|(r, _)| !stray.contains_key(*r))
                    .map(|(r, t)| (r.clone(), *t))
                    .collect();
                splits.retain(|r, _| stray.contains_key(r));
                healed
            }
            Err(_) => Vec::new(),
        };
        for (room, since) in healed {
            let lasted = now.duration_since(since);
            self.inner.metrics.split_healed(&node.id, lasted);
            tracing::info!(node = %node.id, room = %room, lasted_ms = lasted.as_millis() as u64, "split healed");
            self.emit(FarmEvent::SplitHealed {
                room,
                node: node.id.clone(),
                lasted_ms: lasted.as_millis() as u64,
            });
        }
        for (room, (owner, chans)) in stray {
            let new = node
                .splits
                .lock()
                .map(|mut s| match s.entry(room.clone()) {
                    std::collections::hash_map::Entry::Occupied(_) => false,
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(now);
                        true
                    }
                })
                .unwrap_or(false);
            if new {
                tracing::warn!(node = %node.id, room = %room, owner = %owner, calls = chans.len(), "split: calls bridged on a node that does not own their room; moving them to the owner");
                self.emit(FarmEvent::SplitDetected {
                    room: room.clone(),
                    owner: owner.clone(),
                    node: node.id.clone(),
                });
            }
            let Some(target) = self.sip_host(&owner) else {
                continue;
            };
            for chan in chans {
                let moving = node
                    .redirected
                    .lock()
                    .map(|r| r.contains(chan.as_str()))
                    .unwrap_or(true);
                if moving {
                    continue;
                }
                let grant = crate::store::TokenGrant {
                    room: room.clone(),
                    from: node.id.clone(),
                    to: owner.clone(),
                    channel: chan.clone(),
                    caller: String::new(),
                    hops: 0,
                    agent: None,
                };
                match self.send_with_token(node, grant, &target).await {
                    Ok(_) => {}
                    Err(super::rooms::MoveFailed::Store(_)) => return,
                    Err(super::rooms::MoveFailed::Redirect(e)) => {
                        tracing::info!(node = %node.id, channel = %chan, reason = %e, "split call not moved")
                    }
                }
            }
        }
    }

    /// Destroys corral's empty bridges on `node` that no longer belong to
    /// the room's current placement here (a healed split's local bridge, a
    /// previous epoch's bridge). A bridge with calls is never touched.
    async fn destroy_stale_bridges(
        &self,
        node: &Arc<NodeRuntime>,
        bridges: &[crate::ari::rest::Bridge],
    ) {
        // A queue's pair bridges are the queue engine's (a new one is empty
        // for a moment before its pair is added).
        for b in bridges.iter().filter(|b| b.channels.is_empty()) {
            let Some(crate::names::BridgeOf::Room(room)) =
                self.inner.names.parse_bridge_name(&b.name)
            else {
                continue;
            };
            let current = match self.inner.store.get_room(&room).await {
                Ok(Some(d)) if d.placement.node == node.id => Some(d.placement.epoch),
                Ok(_) => None,
                Err(_) => return,
            };
            if current.is_some_and(|e| self.inner.names.bridge_id(&room, Some(e)).as_str() == b.id)
            {
                continue;
            }
            if let Ok(mut known) = node.bridges.lock() {
                known.remove(&b.id);
            }
            if let Err(e) = node.ari.destroy_bridge(&b.id).await {
                tracing::debug!(node = %node.id, bridge = %b.id, reason = %e, "stale bridge not destroyed");
            }
        }
    }

    /// True only when ARI says the channel does not exist (404): a snapshot
    /// of `GET /channels` is older than joins made since, so absence from it
    /// proves nothing.
    async fn channel_gone(&self, node: &Arc<NodeRuntime>, id: &str) -> bool {
        matches!(node.ari.channel(id).await, Err(e) if e.status() == Some(404))
    }

    /// Removes store members of `node` whose channel is not live, and
    /// releases empty rooms past their linger (the net for missed events and
    /// for redirects whose call never arrived).
    async fn sweep_store_members(
        &self,
        node: &Arc<NodeRuntime>,
        live: &std::collections::HashSet<&str>,
    ) {
        let filter = RoomFilter {
            node: Some(node.id.clone()),
            kind: None,
        };
        let mut cursor: Option<String> = None;
        loop {
            let page = match self
                .inner
                .store
                .list_rooms(&filter, cursor.as_deref(), 500)
                .await
            {
                Ok(p) => p,
                Err(_) => return,
            };
            for p in &page.rooms {
                if p.members == 0 {
                    // A room nobody joined yet may be waiting for a
                    // redirected call: give it the redirect deadline too.
                    let min_empty = self.inner.cfg.linger.max(self.inner.cfg.redirect_deadline);
                    self.try_release(node, &p.room, p.epoch, min_empty).await;
                    continue;
                }
                let Ok(Some(detail)) = self.inner.store.get_room(&p.room).await else {
                    continue;
                };
                for m in detail.members {
                    if m.node == node.id
                        && !live.contains(m.channel.as_str())
                        && self.channel_gone(node, m.channel.as_str()).await
                        && let Ok(crate::store::MemberRemoved::Removed {
                            remaining: 0,
                            epoch,
                        }) = self
                            .inner
                            .store
                            .remove_member(&p.room, &node.id, &m.channel)
                            .await
                    {
                        self.schedule_release(node.clone(), p.room.clone(), epoch);
                    }
                }
            }
            match page.next {
                Some(n) => cursor = Some(n),
                None => return,
            }
        }
    }
}

/// Pings the node; marks it down after `down_after_failures` failures.
async fn health(ctrl: Controller, node: Arc<NodeRuntime>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(ctrl.inner.cfg.ping_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let started = Instant::now();
        let ok = tokio::time::timeout(
            ctrl.inner.cfg.ping_interval.max(Duration::from_millis(200)),
            node.ari.ping(),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if ok {
            failures = 0;
            // Marked down by pings while its socket stayed up: it answers
            // again, so register it again (same incarnation: nothing is
            // released) and resync.
            if node.streaming.load(Ordering::Relaxed)
                && node.ping_down.swap(false, Ordering::Relaxed)
            {
                ctrl.on_connected(&node).await;
            }
            continue;
        }
        failures += 1;
        tracing::debug!(node = %node.id, failures, took = ?started.elapsed(), "ping failed");
        if failures >= ctrl.inner.cfg.down_after_failures && node.healthy.load(Ordering::Relaxed) {
            node.ping_down.store(true, Ordering::Relaxed);
            ctrl.mark_down(&node, &format!("{failures} pings failed"))
                .await;
        }
    }
}

/// Periodic resync: the net for missed events.
async fn reconcile_loop(ctrl: Controller, node: Arc<NodeRuntime>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(ctrl.inner.cfg.reconcile_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if node.healthy.load(Ordering::Relaxed) {
            ctrl.resync(&node).await;
        }
    }
}
