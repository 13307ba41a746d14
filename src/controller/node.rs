//! One node's loop: its lease, its event stream, its health, and the
//! resyncs that follow every (re)connection and every
//! `reconcile_interval`.
//!
//! # Leases
//! One websocket owns an app name on a node (a newer one takes it over), so
//! exactly one replica streams a node: the one holding its lease in the
//! store. A standby replica tries again at a third of the lease's life; the
//! holder renews at that pace and stops streaming when it cannot renew
//! within the lease's life (another replica may have it by then).
//!
//! # Health
//! The node's [`Link`] is driven by its websocket and by `GET
//! /asterisk/ping`. When the socket closes, or pings fail
//! `down_after_failures` times in a row, the node is marked down in the
//! store, which releases its rooms at once so the next arrivals are placed
//! on live nodes. Node liveness never depends on the store: a store that is
//! down only delays the write, which is retried.
//!
//! # Events
//! Each event about a channel is posted to that channel's mailbox
//! ([`super::mailbox`]), so one channel's events are handled in order,
//! different channels in parallel, and the reader never waits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::channel::{ChannelWork, Link, LinkAction, LinkEvent, NodeRuntime, StartedBy};
use super::mailbox::Mailboxes;
use super::{Controller, FarmEvent};
use crate::ari::events::{Event, EventKind};
use crate::ari::stream::{self, EVENT_QUEUE, StreamConfig, StreamItem};
use crate::domain::{ChannelId, Incarnation, NodeId, NodeState};
use crate::retry::Backoff;
use crate::shutdown::OwnedTask;
use crate::store::NodeRegistration;

/// After a (re)connection, when the second resync looks for calls that
/// entered the app while the socket was down.
const RESYNC_SECOND_LOOK: Duration = Duration::from_millis(300);

/// How long a websocket connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs `node` until `cancel`: holds the node's lease (one replica per
/// node's stream), streams while it holds it, and lets it go on stop.
pub(crate) async fn run(ctrl: Controller, node: Arc<NodeRuntime>, cancel: CancellationToken) {
    let store = ctrl.inner.store.clone();
    let replica = ctrl.inner.cfg.replica.clone();
    let ttl = ctrl.inner.cfg.lease_ttl;
    let mut waiting_logged = false;
    let mut backoff = ctrl.store_backoff();
    // This replica's standby stream of the node, while another replica
    // holds the node's stream.
    let mut standby: Option<Standby> = None;
    loop {
        // Acquire: another replica may hold the node; try again at a third
        // of the lease's life.
        let wait = match store.acquire_lease(&node.id, &replica, ttl).await {
            Ok(true) => {
                tracing::info!(node = %node.id, replica = %replica, "lease won");
                waiting_logged = false;
                None
            }
            Ok(false) => {
                if !waiting_logged {
                    tracing::info!(node = %node.id, replica = %replica, "another replica holds the node's stream; standing by");
                    waiting_logged = true;
                }
                if standby.as_ref().is_none_or(Standby::ended) {
                    standby = Standby::start(&ctrl, &node, &cancel).await;
                }
                Some(ttl / 3)
            }
            Err(e) => {
                tracing::debug!(node = %node.id, reason = %e, "lease not acquired (store unavailable)");
                Some(backoff.delay_for(e.retry()).unwrap_or(ttl / 3))
            }
        };
        if let Some(wait) = wait {
            if !ctrl.sleep_unless_stopped(wait).await || cancel.is_cancelled() {
                if let Some(sb) = standby.take() {
                    sb.stop(&ctrl).await;
                }
                return;
            }
            continue;
        }
        if let Some(sb) = standby.take() {
            // Promoted: the standby stream keeps taking the calls that
            // fall back to it until this replica's stream of the node is
            // up, then lets the standby lease go for another replica.
            let (ctrl, node) = (ctrl.clone(), node.clone());
            ctrl.inner.tracker.clone().spawn(async move {
                let mut poll = tokio::time::interval(Duration::from_millis(20));
                let until = Instant::now() + HANDOFF_DEADLINE;
                while !node.is_up() && Instant::now() < until {
                    poll.tick().await;
                }
                sb.stop(&ctrl).await;
            });
        }
        let session = cancel.child_token();
        let renew = OwnedTask::spawn(renew_lease(ctrl.clone(), node.id.clone(), session.clone()));
        stream_session(&ctrl, &node, &session).await;
        drop(renew);
        node.link_step(LinkEvent::SessionEnded);
        if cancel.is_cancelled() {
            // Let another replica take over at once.
            if let Err(e) = store.release_lease(&node.id, &replica).await {
                tracing::debug!(node = %node.id, reason = %e, "lease not released; it expires on its own");
            }
            return;
        }
    }
}

/// After a promotion, the standby stream is kept at most this long while
/// the node's own stream comes up.
const HANDOFF_DEADLINE: Duration = Duration::from_secs(5);

/// This replica's standby stream of one node: the standby app's websocket,
/// held under a lease of its own (one standby replica per node), whose
/// calls (those for which `Stasis(<app>)` failed: the node's stream is
/// down, its replica maybe dead) go through the same call path as the
/// node's own.
struct Standby {
    lease: NodeId,
    session: CancellationToken,
    _task: OwnedTask<()>,
}

impl Standby {
    /// Takes the node's standby lease and starts its standby stream, if a
    /// standby app is configured and no other replica is the standby.
    async fn start(
        ctrl: &Controller,
        node: &Arc<NodeRuntime>,
        cancel: &CancellationToken,
    ) -> Option<Standby> {
        let ari = node.standby.clone()?;
        let lease = crate::names::standby_lease(&node.id)?;
        let (replica, ttl) = (&ctrl.inner.cfg.replica, ctrl.inner.cfg.lease_ttl);
        if !ctrl
            .inner
            .store
            .acquire_lease(&lease, replica, ttl)
            .await
            .ok()?
        {
            return None;
        }
        tracing::info!(node = %node.id, replica = %replica, app = %ari.config().app, "standby stream started");
        let session = cancel.child_token();
        let task = OwnedTask::spawn(standby_session(
            ctrl.clone(),
            node.clone(),
            ari,
            lease.clone(),
            session.clone(),
        ));
        Some(Standby {
            lease,
            session,
            _task: task,
        })
    }

    /// True once its session ended (its lease lost).
    fn ended(&self) -> bool {
        self.session.is_cancelled()
    }

    /// Stops the standby stream and lets its lease go.
    async fn stop(self, ctrl: &Controller) {
        self.session.cancel();
        let replica = &ctrl.inner.cfg.replica;
        if let Err(e) = ctrl.inner.store.release_lease(&self.lease, replica).await {
            tracing::debug!(lease = %self.lease, reason = %e, "standby lease not released; it expires on its own");
        }
    }
}

/// Streams the standby app of `node` until `session` ends (or its lease is
/// lost): events go to the channels' mailboxes like the node's own.
async fn standby_session(
    ctrl: Controller,
    node: Arc<NodeRuntime>,
    ari: crate::ari::AriNode,
    lease: NodeId,
    session: CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel(EVENT_QUEUE);
    let scfg = StreamConfig {
        ping_interval: ctrl.inner.cfg.ping_interval,
        pong_timeout: ctrl.inner.cfg.ping_interval * ctrl.inner.cfg.down_after_failures.max(1),
        connect_timeout: CONNECT_TIMEOUT,
    };
    let _stream = OwnedTask::spawn(stream::run(ari, scfg, tx, session.clone()));
    let _renew = OwnedTask::spawn(renew_lease(ctrl.clone(), lease, session.clone()));
    loop {
        let item = tokio::select! {
            _ = session.cancelled() => break,
            item = rx.recv() => item,
        };
        match item {
            None => break,
            Some(StreamItem::Event(ev)) => {
                // A call in the standby app: `Stasis(corral)` failed on the
                // node, so no replica streams it now. Calls that entered
                // corral's app just before (their StasisStart went to a
                // replica that died) are stranded there: look for them.
                if matches!(ev.kind, EventKind::StasisStart { .. }) {
                    ctrl.rescue_soon(&node);
                }
                ctrl.dispatch(&node, *ev)
            }
            Some(StreamItem::Malformed) => ctrl.inner.metrics.bad_event(&node.id, "malformed"),
            Some(StreamItem::Replaced) => {
                tracing::error!(node = %node.id, app = %ctrl.inner.cfg.standby_app,
                    "another websocket took the standby app over on this node (two standby replicas without leases?)");
            }
            Some(StreamItem::Connected) => {
                tracing::debug!(node = %node.id, "standby stream connected")
            }
            Some(StreamItem::Disconnected { reason }) => {
                tracing::debug!(node = %node.id, %reason, "standby stream lost; reconnecting")
            }
        }
    }
    session.cancel();
    tracing::info!(node = %node.id, "standby stream stopped");
}

/// Renews `lease` (a node's, or its standby's) at a third of its life
/// until `session` ends; ends the session when the lease is lost or cannot
/// be renewed within its life.
async fn renew_lease(ctrl: Controller, lease: NodeId, session: CancellationToken) {
    let store = &ctrl.inner.store;
    let (replica, ttl) = (&ctrl.inner.cfg.replica, ctrl.inner.cfg.lease_ttl);
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = session.cancelled() => return,
            _ = tokio::time::sleep(ttl / 3) => {}
        }
        match store.acquire_lease(&lease, replica, ttl).await {
            Ok(true) => last_ok = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::warn!(lease = %lease, replica = %replica, "lease lost to another replica; stopping this stream");
                session.cancel();
                return;
            }
            // A store that cannot answer does not take the stream away
            // until the lease would have expired.
            Err(_) if last_ok.elapsed() < ttl => {}
            Err(e) => {
                tracing::warn!(lease = %lease, reason = %e, "lease not renewed within its life; stopping this stream");
                session.cancel();
                return;
            }
        }
    }
}

/// Streams `node` until `cancel` (shutdown or a lost lease).
async fn stream_session(ctrl: &Controller, node: &Arc<NodeRuntime>, cancel: &CancellationToken) {
    let (tx, mut rx) = mpsc::channel(EVENT_QUEUE);
    let scfg = StreamConfig {
        ping_interval: ctrl.inner.cfg.ping_interval,
        pong_timeout: ctrl.inner.cfg.ping_interval * ctrl.inner.cfg.down_after_failures.max(1),
        connect_timeout: CONNECT_TIMEOUT,
    };
    // Owned: dropped (aborted) when this session ends, however it ends.
    let _stream = OwnedTask::spawn(stream::run(node.ari.clone(), scfg, tx, cancel.clone()));
    let _health = OwnedTask::spawn(health(ctrl.clone(), node.clone(), cancel.clone()));
    let _reconcile = OwnedTask::spawn(reconcile_loop(ctrl.clone(), node.clone(), cancel.clone()));
    tracing::info!(node = %node.id, url = %node.ari.config().base_url, "node loop started");
    // The last reason the stream could not be opened, logged once.
    let mut last_failure: Option<String> = None;
    loop {
        let item = tokio::select! {
            _ = cancel.cancelled() => break,
            item = rx.recv() => item,
        };
        let Some(item) = item else { break };
        match item {
            StreamItem::Connected => {
                last_failure = None;
                ctrl.link(node, LinkEvent::SocketUp, "").await
            }
            StreamItem::Disconnected { reason } => {
                if !node.is_up() && last_failure.as_deref() != Some(reason.as_str()) {
                    // A stream that cannot be opened: said once per reason,
                    // not once per retry.
                    tracing::warn!(node = %node.id, url = %node.spec.ari.base_url, %reason,
                        "node's event stream cannot be opened; retrying with backoff");
                    last_failure = Some(reason.clone());
                }
                ctrl.link(
                    node,
                    LinkEvent::SocketLost,
                    &format!("event stream lost: {reason}"),
                )
                .await
            }
            StreamItem::Replaced => {
                tracing::error!(node = %node.id, app = %ctrl.inner.cfg.app,
                    "another websocket took corral's app over on this node; events now go there (two replicas without leases?)");
            }
            StreamItem::Malformed => ctrl.inner.metrics.bad_event(&node.id, "malformed"),
            StreamItem::Event(ev) => ctrl.dispatch(node, *ev),
        }
    }
    tracing::info!(node = %node.id, "node loop stopped");
}

/// What an event asks of its channel's worker; `None` for events no
/// channel's state machine reads.
fn channel_work(ev: Event) -> Option<(String, ChannelWork)> {
    match ev.kind {
        EventKind::StasisStart { args, channel } => Some((
            channel.id.clone(),
            ChannelWork::Start {
                args,
                channel: Box::new(channel),
                by: StartedBy::Event,
            },
        )),
        EventKind::StasisEnd { channel } => Some((channel.id, ChannelWork::End)),
        EventKind::ChannelDestroyed { cause, channel } => {
            Some((channel.id, ChannelWork::Destroyed { cause }))
        }
        _ => None,
    }
}

/// Where [`route`] sent an event.
#[derive(Debug, PartialEq, Eq)]
enum Routed {
    /// Posted to the channel's mailbox, which had no worker: start one.
    StartWorker(ChannelId),
    /// Posted behind the work its channel's worker has queued.
    Queued,
    /// A `StasisStart` whose channel id is unusable.
    BadChannelId,
    /// Nothing for a channel's worker.
    Ignored,
}

/// Posts an event's channel work to `boxes`, never waiting: the
/// dispatcher's whole decision, apart from starting workers.
fn route(boxes: &Mailboxes<ChannelId, ChannelWork>, ev: Event) -> Routed {
    let Some((id, work)) = channel_work(ev) else {
        return Routed::Ignored;
    };
    match ChannelId::new(id) {
        Ok(chan) => {
            if boxes.post(&chan, work) {
                Routed::StartWorker(chan)
            } else {
                Routed::Queued
            }
        }
        Err(_) if matches!(work, ChannelWork::Start { .. }) => Routed::BadChannelId,
        Err(_) => Routed::Ignored,
    }
}

impl Controller {
    /// Routes one event: a channel's to its mailbox (in order, never
    /// waiting), a destroyed bridge out of the node's cache.
    fn dispatch(&self, node: &Arc<NodeRuntime>, ev: Event) {
        if let EventKind::BridgeDestroyed { bridge } = &ev.kind {
            node.with(|s| s.bridges.remove(&bridge.id));
            return;
        }
        match route(&node.mailboxes, ev) {
            Routed::StartWorker(chan) => self.start_worker(node, chan),
            Routed::Queued | Routed::Ignored => {}
            Routed::BadChannelId => {
                self.inner.metrics.bad_event(&node.id, "channel_id");
                tracing::warn!(node = %node.id, "StasisStart with an unusable channel id ignored");
            }
        }
    }

    /// Steps the node's link with `ev` and does what the step asks
    /// (`reason` explains a mark-down).
    async fn link(&self, node: &Arc<NodeRuntime>, ev: LinkEvent, reason: &str) {
        match node.link_step(ev).1 {
            LinkAction::None => {}
            LinkAction::Register => self.register(node).await,
            LinkAction::MarkDown => self.mark_down(node, reason).await,
        }
    }

    /// The store lost `node`'s registration while its link is up: steps
    /// the link (`Forgotten`) and registers it again.
    pub(crate) async fn node_forgotten(&self, node: &Arc<NodeRuntime>) {
        self.link(node, LinkEvent::Forgotten, "").await;
    }

    /// Registers the node (a new incarnation starts empty), marks it up,
    /// then resyncs; a failure leaves it unregistered until a ping answers.
    async fn register(&self, node: &Arc<NodeRuntime>) {
        let info = match node.ari.info().await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(node = %node.id, reason = %e, "connected but GET /asterisk/info failed; will retry at the next ping");
                node.link_step(LinkEvent::RegisterFailed);
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
        let mut backoff = self.store_backoff();
        let registered = loop {
            match self.inner.store.register_node(&reg).await {
                Ok(r) => break r,
                Err(e) => {
                    let Some(wait) = backoff.delay_for(e.retry()) else {
                        tracing::error!(node = %node.id, reason = %e, "node not registered; will retry at the next ping");
                        node.link_step(LinkEvent::RegisterFailed);
                        return;
                    };
                    tracing::warn!(node = %node.id, reason = %e, "node not registered (store unavailable); retrying");
                    if !self.sleep_unless_stopped(wait).await {
                        return;
                    }
                }
            }
        };
        // A store that lost its records says "new" for a node that only
        // kept running: its calls are still there, and the resync below
        // records them again.
        let known = node.with(|s| s.incarnation.replace(incarnation.clone()));
        if super::decide::restarted(known.as_ref(), &incarnation, registered.new_incarnation) {
            // A restarted Asterisk has no calls: its queue callers and
            // agents are gone.
            self.queues_node_lost(&node.id).await;
            node.with(|s| s.forget_calls());
            if registered.released_rooms > 0 {
                self.inner.metrics.released(
                    &node.id,
                    "new_incarnation",
                    u64::from(registered.released_rooms),
                );
            }
        }
        // The view hears of the node before it counts as up: a call that
        // lands on it the moment it is up finds it eligible, so a new room
        // stays where its first call landed instead of being sent away.
        self.refresh_view().await;
        if node.link_step(LinkEvent::Registered).0 != Link::Registering {
            // The socket dropped meanwhile: its loss decides what follows.
            return;
        }
        tracing::info!(node = %node.id, incarnation = %incarnation, new_incarnation = registered.new_incarnation,
            released_rooms = registered.released_rooms, "node up");
        self.emit(FarmEvent::NodeUp {
            node: node.id.clone(),
            new_incarnation: registered.new_incarnation,
        });
        self.resync(node).await;
        // Calls that entered the app while the socket was down never get a
        // StasisStart: a second look shortly places them (two sightings).
        let ctrl = self.clone();
        let node = node.clone();
        self.inner.tracker.spawn(async move {
            if ctrl.sleep_unless_stopped(RESYNC_SECOND_LOOK).await && node.is_up() {
                ctrl.resync(&node).await;
            }
        });
    }

    /// Marks `node` down in the store (its rooms are released), retrying
    /// while the store does not answer and the node stays down.
    async fn mark_down(&self, node: &Arc<NodeRuntime>, reason: &str) {
        node.with(|s| s.bridges.clear());
        self.inner.metrics.node_state(&node.id, NodeState::Down);
        let mut backoff = self.store_backoff();
        let released = loop {
            match self.inner.store.set_node_health(&node.id, false).await {
                Ok(h) => break h.released_rooms,
                Err(e) => {
                    let Some(wait) = backoff.delay_for(e.retry()) else {
                        tracing::error!(node = %node.id, reason = %e, "node not marked down in the store");
                        return;
                    };
                    tracing::warn!(node = %node.id, reason = %e, "node not marked down in the store yet; retrying");
                    if !self.sleep_unless_stopped(wait).await || node.is_up() {
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

    /// The backoff for store writes retried until they succeed.
    pub(crate) fn store_backoff(&self) -> Backoff {
        Backoff::new(
            super::STORE_RETRY_INITIAL,
            super::STORE_RETRY_MAX,
            Backoff::DEFAULT_RESET_AFTER,
        )
    }
}

/// Pings the node; `down_after_failures` failures in a row step its link
/// down, a ping that answers steps it back.
async fn health(ctrl: Controller, node: Arc<NodeRuntime>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(ctrl.inner.cfg.ping_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    let mut suspect = false;
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
        let failed_now = if ok { 0 } else { failures + 1 };
        if let Some(mark) = super::decide::suspect_after_ping(ok, failed_now, suspect) {
            suspect = mark;
            // Not awaited here: the pings keep their pace while the store
            // is slow.
            let (ctrl, node) = (ctrl.clone(), node.clone());
            ctrl.inner.tracker.clone().spawn(async move {
                match ctrl.inner.store.set_node_suspect(&node.id, mark).await {
                    Ok(()) => {
                        if mark {
                            tracing::warn!(node = %node.id, "ping failed; the node takes no new room and no call until it answers");
                        }
                        ctrl.refresh_view().await;
                        ctrl.emit(FarmEvent::NodeSuspect {
                            node: node.id.clone(),
                            suspect: mark,
                        });
                    }
                    Err(e) => {
                        tracing::debug!(node = %node.id, reason = %e, "suspect mark not written")
                    }
                }
            });
        }
        if ok {
            failures = 0;
            // Marked down by pings, or not registered, while its socket
            // stayed up: it answers again, so register it (same
            // incarnation: nothing is released) and resync.
            ctrl.link(&node, LinkEvent::PingAnswered, "").await;
            continue;
        }
        failures += 1;
        tracing::debug!(node = %node.id, failures, took = ?started.elapsed(), "ping failed");
        if failures >= ctrl.inner.cfg.down_after_failures {
            ctrl.link(
                &node,
                LinkEvent::PingsFailed,
                &format!("{failures} pings failed"),
            )
            .await;
        }
    }
}

impl Controller {
    /// On a node this replica does not stream, resyncs it twice
    /// [`RESYNC_SECOND_LOOK`] apart (one look pending at a time): calls in
    /// corral's app but in no bridge, seen on both looks, are placed (REST
    /// works on any app's channel), so a call whose StasisStart went to a
    /// replica that crashed is not left ringing until the leases expire.
    pub(crate) fn rescue_soon(&self, node: &Arc<NodeRuntime>) {
        use std::sync::atomic::Ordering;
        if node.is_up() || node.rescue_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let (ctrl, node) = (self.clone(), node.clone());
        self.inner.tracker.spawn(async move {
            for _ in 0..2 {
                if !ctrl.sleep_unless_stopped(RESYNC_SECOND_LOOK).await || node.is_up() {
                    break;
                }
                ctrl.resync(&node).await;
            }
            node.rescue_pending.store(false, Ordering::Release);
        });
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
        if node.is_up() {
            ctrl.resync(&node).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: serde_json::Value) -> Event {
        Event::parse(&json.to_string()).expect("a valid event")
    }
    fn start(id: &str, args: &[&str]) -> Event {
        event(serde_json::json!({"type": "StasisStart", "args": args, "channel": {"id": id}}))
    }
    fn end(id: &str) -> Event {
        event(serde_json::json!({"type": "StasisEnd", "channel": {"id": id}}))
    }
    fn state_change(id: &str) -> Event {
        event(
            serde_json::json!({"type": "ChannelStateChange", "channel": {"id": id, "state": "Up"}}),
        )
    }

    fn name(w: &ChannelWork) -> String {
        match w {
            ChannelWork::Start { args, .. } => format!("start{args:?}"),
            ChannelWork::End => "end".into(),
            ChannelWork::Destroyed { .. } => "destroyed".into(),
        }
    }

    /// A channel's events reach its worker in the order they arrived, also
    /// when its worker is busy and events pile up: here a slow placement
    /// while Asterisk sends 31 more events, its `StasisEnd`, then its
    /// re-entry into the app. (Before: a full per-channel queue handed the
    /// `StasisEnd` to a task of its own, the re-entry's `StasisStart` found
    /// room once the worker took one event and overtook it, and the worker
    /// saw start, start (a "duplicate", dropped), end: the re-entered call
    /// was never placed.)
    #[tokio::test]
    async fn a_channels_events_keep_their_order_under_backpressure() {
        let boxes: Mailboxes<ChannelId, ChannelWork> = Mailboxes::default();
        let c = ChannelId::new("c1").unwrap();
        assert_eq!(
            route(&boxes, start("c1", &["conference", "a"])),
            Routed::StartWorker(c.clone())
        );
        for _ in 0..31 {
            assert_eq!(route(&boxes, state_change("c1")), Routed::Ignored);
        }
        assert_eq!(route(&boxes, end("c1")), Routed::Queued);
        // The worker takes its first event (a slow placement)...
        let mut seen = vec![name(&boxes.next(&c).expect("queued"))];
        // ...while the call comes back into the app.
        assert_eq!(
            route(&boxes, start("c1", &["conference", "b"])),
            Routed::Queued
        );
        tokio::task::yield_now().await;
        seen.extend(std::iter::from_fn(|| boxes.next(&c)).map(|w| name(&w)));
        assert_eq!(
            seen,
            vec![
                r#"start["conference", "a"]"#.to_string(),
                "end".into(),
                r#"start["conference", "b"]"#.into(),
            ]
        );
        // Another channel's events do not wait behind this one's.
        assert_eq!(
            route(&boxes, start("c2", &[])),
            Routed::StartWorker(ChannelId::new("c2").unwrap())
        );
        assert_eq!(route(&boxes, start("bad id", &[])), Routed::BadChannelId);
        assert_eq!(route(&boxes, end("bad id")), Routed::Ignored);
    }
}
