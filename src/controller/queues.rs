//! The queue engine: callers wait in the queue's holding bridge, agents are
//! paired with them in a mixing bridge of their own, on the queue's node.
//!
//! A queue is a room of kind `queue`: it has a node like a conference, and
//! its callers and call-in agents are brought there by the call path (a 302
//! with a token before they are answered). What happens on that node is
//! here. The queue's state is a document in the store ([`QueueState`]);
//! every change is load → pure transition → compare-and-set save, then the
//! ARI work the transition asked for ([`Action`]). So a corral that restarts
//! finds every caller in its place, and two replicas never undo each other.
//!
//! # Guarantees
//! - Callers are answered in arrival order, each by the longest-idle free
//!   agent (static members by the queue's strategy).
//! - corral never hangs up a caller. A caller leaves by hanging up
//!   (abandoned), by the treatment (continue at the overflow context), or
//!   at the end of its call (continue after `Stasis()`). corral only hangs
//!   up member legs it originated itself.
//! - The engine runs where the queue's node is streamed; a replica that
//!   is not streaming it leaves the work to the one that is.
//!
//! # Bridges
//! - Holding: id `corral-queue-<name>-<epoch>`, name `corral:queue:<name>`;
//!   callers and call-in agents wait there with music on hold.
//! - Pair: id `corral-queue-<name>-qc<n>`, name `corral:queue:<name>:<agent>`,
//!   mixing; destroyed when the call ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::channel::{Membership, NodeRuntime};
use super::decide::Who;
use super::{Controller, FarmEvent};
use crate::ari::rest::{BridgeType, Channel};
use crate::domain::{AgentId, ChannelId, NodeId, RoomKey, RoomKind, RoomName};
use crate::queue::{Action, AgentState, Gone, QueueSettings, QueueState, Refused};

/// The engine's memory: nothing that must survive (the store has the rest).
#[derive(Default)]
pub(crate) struct Runtime {
    /// One lock per queue: this replica's changes to a queue go one at a
    /// time (the store's compare-and-set covers other replicas).
    locks: Mutex<HashMap<RoomName, Arc<tokio::sync::Mutex<()>>>>,
    /// (node, channel) → queue, for every queue channel corral knows
    /// (callers, agents, member legs), so a hangup finds its queue.
    chans: Mutex<HashMap<(NodeId, String), RoomName>>,
    /// The last document this replica saved per queue, parsed: the next
    /// change skips reading and parsing it when the store's version is
    /// still this one.
    cache: Mutex<HashMap<RoomName, Cached>>,
    /// Agents back in the holding bridge, to mark in the queue's next
    /// dispatch (one save instead of two per call).
    returned: Mutex<HashMap<RoomName, Vec<AgentId>>>,
    /// Each queue's holding bridge as last joined here: (node, epoch).
    holding: Mutex<HashMap<RoomName, (NodeId, crate::domain::Epoch)>>,
    /// The earliest wake-up armed per queue (Unix ms).
    wakeups: Mutex<HashMap<RoomName, u64>>,
}

/// Which side of a pair could not be bridged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PairFailed {
    /// The caller hung up or left the app: it leaves the queue.
    CallerGone,
    /// The agent's leg (or the pair bridge) failed: the caller keeps its
    /// place, the agent backs off.
    AgentGone,
}

/// A queue document as this replica last saved it.
struct Cached {
    version: u64,
    state: Arc<QueueState>,
    doc: String,
}

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The store did not answer.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// The stored document does not parse.
    #[error("queue {queue} has a corrupt document: {reason}")]
    Corrupt {
        /// The queue.
        queue: RoomName,
        /// The parse error.
        reason: String,
    },
    /// Other writers kept winning.
    #[error("queue {0} is changed too often to save; try again")]
    Contended(RoomName),
}

/// Unix time in ms (the queue's clock: waits and wrap-ups are shown to
/// operators as wall-clock times).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Controller {
    fn queue_lock(&self, queue: &RoomName) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.inner.queues.locks)
            .entry(queue.clone())
            .or_default()
            .clone()
    }

    /// Loads a queue's state (empty with its configured members if new).
    pub(crate) async fn queue_load(
        &self,
        queue: &RoomName,
    ) -> Result<(u64, QueueState), QueueError> {
        self.queue_load_doc(queue).await.map(|(v, st, _)| (v, st))
    }

    /// [`Controller::queue_load`], with the document as stored (`None` if
    /// new).
    async fn queue_load_doc(
        &self,
        queue: &RoomName,
    ) -> Result<(u64, QueueState, Option<String>), QueueError> {
        match self.inner.store.load_queue(queue).await? {
            Some(d) => {
                let corrupt = |e: serde_json::Error| QueueError::Corrupt {
                    queue: queue.clone(),
                    reason: e.to_string(),
                };
                let mut st = QueueState::from_doc(&d.doc).map_err(corrupt)?;
                st.callers = d
                    .callers
                    .iter()
                    .map(|e| QueueState::caller_from_entry(e))
                    .collect::<Result<_, _>>()
                    .map_err(corrupt)?;
                Ok((d.version, st, Some(d.doc)))
            }
            None => {
                let mut st = QueueState {
                    salt: rand::random(),
                    ..Default::default()
                };
                let now = now_ms();
                for (agent, endpoint) in &self.inner.cfg.queues.settings(queue).members {
                    st.add_member(agent.clone(), endpoint.clone(), false, now);
                }
                Ok((0, st, None))
            }
        }
    }

    /// Applies `f` to the queue's state and saves it (compare-and-set,
    /// retried on a conflict; `f` may run more than once). Nothing is
    /// written if `f` changed nothing. Returns `f`'s answer and the state
    /// as saved.
    pub(crate) async fn queue_update<T>(
        &self,
        queue: &RoomName,
        mut f: impl FnMut(&mut QueueState, u64) -> T,
    ) -> Result<(T, Arc<QueueState>), QueueError> {
        let l = self.queue_lock(queue);
        let _g = l.lock().await;
        for _ in 0..32 {
            // The document this replica saved last, if nobody changed it
            // since (one small read instead of the whole document).
            let cached = lock(&self.inner.queues.cache).remove(queue);
            let cached = match cached {
                Some(c) if self.inner.store.queue_version(queue).await? == c.version => Some(c),
                _ => None,
            };
            let (version, mut st, stored) = match cached {
                Some(c) => (
                    c.version,
                    Arc::try_unwrap(c.state).unwrap_or_else(|a| (*a).clone()),
                    Some(c.doc),
                ),
                None => self.queue_load_doc(queue).await?,
            };
            let before = st.callers.clone();
            let out = f(&mut st, now_ms());
            let doc = st.to_doc();
            let (removed, added) = st.callers_diff(&before);
            // Unchanged if the document serializes as stored (the
            // serializer is deterministic) and no caller changed.
            if stored.as_deref() == Some(doc.as_str()) && removed.is_empty() && added.is_empty() {
                let state = Arc::new(st);
                self.cache_queue(queue, version, state.clone(), doc);
                return Ok((out, state));
            }
            let t = Instant::now();
            let saved = self
                .inner
                .store
                .save_queue_parts(queue, version, &doc, &removed, &added)
                .await?;
            self.inner.metrics.store_latency("save_queue", t.elapsed());
            if let Some(v) = saved {
                self.queue_observe(queue, &st);
                let state = Arc::new(st);
                self.cache_queue(queue, v, state.clone(), doc);
                return Ok((out, state));
            }
        }
        Err(QueueError::Contended(queue.clone()))
    }

    fn cache_queue(&self, queue: &RoomName, version: u64, state: Arc<QueueState>, doc: String) {
        lock(&self.inner.queues.cache).insert(
            queue.clone(),
            Cached {
                version,
                state,
                doc,
            },
        );
    }

    fn queue_observe(&self, queue: &RoomName, st: &QueueState) {
        let counts = st.agent_counts();
        self.inner
            .metrics
            .queue_state(queue.as_str(), st.callers.len(), &counts);
        self.emit(FarmEvent::QueueChanged {
            queue: queue.clone(),
            waiting: st.callers.len() as u32,
            available: counts.get("available").copied().unwrap_or(0),
        });
    }

    fn remember(&self, node: &NodeId, chan: &ChannelId, queue: &RoomName) {
        lock(&self.inner.queues.chans).insert((node.clone(), chan.to_string()), queue.clone());
    }

    /// The queue `chan` on `node` belongs to, if corral knows it.
    fn queue_of(&self, node: &Arc<NodeRuntime>, chan: &ChannelId) -> Option<RoomName> {
        if let Some(q) = lock(&self.inner.queues.chans).get(&(node.id.clone(), chan.to_string())) {
            return Some(q.clone());
        }
        node.with(|s| {
            s.membership(chan)
                .filter(|m| m.room.kind == RoomKind::Queue)
                .map(|m| m.room.name.clone())
        })
    }

    /// A queue caller or agent reached the queue's node and is recorded as
    /// a member there: queue it (or log the agent in), answer it and put it
    /// in the holding bridge, then pair whoever can be paired.
    pub(crate) async fn queue_arrive(
        &self,
        node: &Arc<NodeRuntime>,
        chan: &ChannelId,
        channel: &Channel,
        room: &RoomKey,
        who: Who,
        epoch: crate::domain::Epoch,
    ) {
        let queue = &room.name;
        let settings = self.inner.cfg.queues.settings(queue);
        // Answered and on hold first: a caller is only ever in the queue's
        // state once it sits in the holding bridge, so a pairing can never
        // be undone by its own arrival.
        self.remember(&node.id, chan, queue);
        lock(&self.inner.queues.holding).insert(queue.clone(), (node.id.clone(), epoch));
        if let Err(e) = self.put_in_bridge(node, chan, room, Some(epoch)).await {
            tracing::info!(node = %node.id, queue = %queue, channel = %chan, reason = %e, "queue arrival gone before it was answered");
            node.with(|s| {
                s.joined(
                    chan,
                    Membership {
                        room: room.clone(),
                        recorded: true,
                    },
                )
            });
            self.gone(node, chan).await;
            return;
        }
        self.inner
            .metrics
            .joined(&node.id, crate::telemetry::JoinKind::Queue);
        let admitted = match &who {
            Who::Agent(agent) => self.agent_login(node, queue, agent, chan).await,
            _ => {
                let caller: String = channel.caller.number.chars().take(64).collect();
                self.queue_update(queue, |st, now| {
                    st.enqueue(
                        chan.clone(),
                        node.id.clone(),
                        caller.clone(),
                        now,
                        &settings,
                    )
                })
                .await
                .map(|(r, _)| r.map(|_| ()))
            }
        };
        match admitted {
            Ok(Ok(())) => {
                tracing::debug!(node = %node.id, queue = %queue, channel = %chan, who = ?who, "waiting in the queue");
            }
            Ok(Err(refused)) => {
                let why = match &refused {
                    Refused::Full => "queue full (max_callers)".to_string(),
                    Refused::AlreadyLoggedIn(old) => {
                        format!("agent already logged in on channel {old}")
                    }
                    Refused::IsStatic => "agent is a static member of the queue".into(),
                };
                tracing::warn!(node = %node.id, queue = %queue, channel = %chan, reason = %why, "queue arrival refused; handed to the dialplan");
                let overflow = refused == Refused::Full;
                if overflow {
                    self.inner
                        .metrics
                        .queue_outcome(queue.as_str(), "overflowed");
                }
                // Its StasisEnd removes the member record.
                self.queue_continue(node, chan, overflow, &settings).await;
                return;
            }
            Err(e) => {
                tracing::warn!(node = %node.id, queue = %queue, channel = %chan, reason = %e, "queue state unavailable; call handed to the dialplan");
                self.queue_continue(node, chan, false, &settings).await;
                return;
            }
        }
        self.queue_dispatch(queue).await;
    }

    async fn agent_login(
        &self,
        node: &Arc<NodeRuntime>,
        queue: &RoomName,
        agent: &AgentId,
        chan: &ChannelId,
    ) -> Result<Result<(), Refused>, QueueError> {
        // Is an earlier login still alive? Asked before the update (ARI is
        // not called under the queue's lock).
        let (_, st) = self.queue_load(queue).await?;
        let old_alive = match st.agents.get(agent).map(|a| &a.kind) {
            Some(crate::queue::AgentKind::CallIn { channel, node: n }) if channel != chan => {
                match self.inner.nodes.get(n) {
                    Some(rt) => {
                        !matches!(rt.ari.channel(channel).await, Err(e) if e.status() == Some(404))
                    }
                    None => false,
                }
            }
            _ => false,
        };
        let (r, _) = self
            .queue_update(queue, |st, now| {
                st.login(agent.clone(), chan.clone(), node.id.clone(), now, |_| {
                    old_alive
                })
            })
            .await?;
        if r.is_ok() {
            tracing::info!(node = %node.id, queue = %queue, agent = %agent, channel = %chan, "agent logged in");
        }
        Ok(r)
    }

    /// Gives a queue channel back to the dialplan: the treatment
    /// (`overflow`) or after `Stasis()`.
    async fn queue_continue(
        &self,
        node: &Arc<NodeRuntime>,
        chan: &ChannelId,
        overflow: bool,
        settings: &QueueSettings,
    ) {
        let (ctx, ext, prio) = match (&settings.overflow_context, overflow) {
            (Some(ctx), true) => (
                Some(ctx.as_str()),
                Some(settings.overflow_extension.as_str()),
                Some(1),
            ),
            _ => (None, None, None),
        };
        if let Err(e) = self
            .ari_retry(|| node.ari.continue_in_dialplan(chan, ctx, ext, prio))
            .await
        {
            tracing::info!(node = %node.id, channel = %chan, reason = %e, "continue refused (call gone?)");
        }
    }

    /// A channel left corral's app (hung up, or moved on by corral): its
    /// queue hears of it, then the room member is removed.
    pub(crate) async fn gone(&self, node: &Arc<NodeRuntime>, chan: &ChannelId) {
        self.gone_because(node, chan, None).await
    }

    /// [`Controller::gone`] with the hangup cause of `ChannelDestroyed`
    /// (tells a busy member from one that did not answer or failed).
    pub(crate) async fn gone_because(
        &self,
        node: &Arc<NodeRuntime>,
        chan: &ChannelId,
        cause: Option<i64>,
    ) {
        if let Some(queue) = self.queue_of(node, chan) {
            self.queue_gone(node, &queue, chan, cause).await;
        }
        self.leave(node, chan).await;
    }

    async fn queue_gone(
        &self,
        node: &Arc<NodeRuntime>,
        queue: &RoomName,
        chan: &ChannelId,
        cause: Option<i64>,
    ) {
        lock(&self.inner.queues.chans).remove(&(node.id.clone(), chan.to_string()));
        let settings = self.inner.cfg.queues.settings(queue);
        let res = self
            .queue_update(queue, |st, now| st.channel_gone(chan, now, &settings))
            .await;
        let (gone, actions) = match res {
            Ok(((g, a), _)) => (g, a),
            Err(e) => {
                tracing::warn!(node = %node.id, queue = %queue, channel = %chan, reason = %e, "queue not updated for a hangup; the next resync will");
                return;
            }
        };
        match &gone {
            Gone::Abandoned { waited_ms } => {
                self.inner
                    .metrics
                    .queue_outcome(queue.as_str(), "abandoned");
                tracing::info!(node = %node.id, queue = %queue, channel = %chan, waited_ms, "caller abandoned the queue");
            }
            Gone::LoggedOut(agent) => {
                tracing::info!(node = %node.id, queue = %queue, agent = %agent, "agent logged out (hung up)");
            }
            Gone::OfferFailed(agent) => {
                // Q.850 causes: 17 user busy, 18/19 no answer, the rest a
                // failure (20 subscriber absent, 34 congestion, ...).
                let outcome = match cause {
                    Some(17) => "busy",
                    Some(18 | 19) => "no_answer",
                    Some(_) => "failed",
                    None => "gone",
                };
                self.inner.metrics.queue_offer(queue.as_str(), outcome);
                tracing::info!(node = %node.id, queue = %queue, agent = %agent, leg = %chan, cause, outcome, "member did not take the call; skipped for retry_after_ms");
            }
            Gone::CallEnded => {
                tracing::debug!(node = %node.id, queue = %queue, channel = %chan, "queue call ended");
            }
            Gone::Unknown => return,
        }
        self.queue_run(node, queue, actions).await;
        self.queue_dispatch(queue).await;
    }

    /// The queue's node runtime, if this replica streams it.
    async fn queue_node(&self, queue: &RoomName) -> Option<Arc<NodeRuntime>> {
        let room = RoomKey::new(RoomKind::Queue, queue.clone());
        let detail = self.inner.store.get_room(&room).await.ok()??;
        let rt = self.inner.nodes.get(&detail.placement.node)?.clone();
        rt.link().is_streaming().then_some(rt)
    }

    /// Pairs waiting callers with free agents (after ending due wrap-ups
    /// and sending callers past `max_wait` to the treatment), then arms the
    /// next wake-up.
    pub(crate) async fn queue_dispatch(&self, queue: &RoomName) {
        let Some(node) = self.queue_node(queue).await else {
            return;
        };
        let settings = self.inner.cfg.queues.settings(queue);
        // Calls on a node that is down (the queue moved on without it) are
        // gone: they must not hold the head of the queue.
        let down: Vec<NodeId> = self
            .inner
            .view
            .read()
            .map(|v| {
                v.iter()
                    .filter(|n| !n.healthy && n.id != node.id)
                    .map(|n| n.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        // Bounded: each round hands out agents; a round that fails puts
        // them back with a back-off, so this ends.
        for _ in 0..8 {
            let returned = lock(&self.inner.queues.returned)
                .remove(queue)
                .unwrap_or_default();
            let res = self
                .queue_update(queue, |st, now| {
                    for a in &returned {
                        st.returned(a);
                    }
                    for n in &down {
                        st.node_lost(n);
                    }
                    st.end_wrapups(now);
                    let mut a = st.expire(now, &settings);
                    a.extend(st.assign(now, &settings));
                    a
                })
                .await;
            let (actions, st) = match res {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(queue = %queue, reason = %e, "queue not dispatched");
                    return;
                }
            };
            self.arm_wakeup(queue, &st, &settings);
            // Let go of the state: the next change reuses it without a copy.
            drop(st);
            if actions.is_empty() {
                return;
            }
            let retry = self.queue_run(&node, queue, actions).await;
            if !retry {
                return;
            }
        }
    }

    /// Arms one timer at the queue's next deadline (wrap-up end, max wait,
    /// a member's back-off) unless an earlier one is armed.
    fn arm_wakeup(&self, queue: &RoomName, st: &QueueState, settings: &QueueSettings) {
        let mut next = u64::MAX;
        for a in st.agents.values() {
            if let AgentState::WrapUp { until_ms } = a.activity {
                next = next.min(until_ms);
            }
            if !st.callers.is_empty() && a.retry_at_ms > 0 && a.activity == AgentState::Available {
                next = next.min(a.retry_at_ms);
            }
        }
        if let Some(max) = settings.max_wait {
            for c in &st.callers {
                next = next.min(c.since_ms + max.as_millis() as u64);
            }
        }
        if next == u64::MAX {
            return;
        }
        let now = now_ms();
        {
            let mut w = lock(&self.inner.queues.wakeups);
            if let Some(&armed) = w.get(queue)
                && armed <= next
                && armed >= now
            {
                return;
            }
            w.insert(queue.clone(), next);
        }
        let ctrl = self.clone();
        let queue = queue.clone();
        let wait = Duration::from_millis(next.saturating_sub(now));
        self.inner.tracker.spawn(async move {
            if !ctrl.sleep_unless_stopped(wait).await {
                return;
            }
            {
                let mut w = lock(&ctrl.inner.queues.wakeups);
                if w.get(&queue) == Some(&next) {
                    w.remove(&queue);
                }
            }
            ctrl.queue_dispatch(&queue).await;
        });
    }

    /// Does the ARI work of a transition. Returns true if something failed
    /// in a way that changed the state (dispatch again).
    async fn queue_run(
        &self,
        node: &Arc<NodeRuntime>,
        queue: &RoomName,
        actions: Vec<Action>,
    ) -> bool {
        let settings = self.inner.cfg.queues.settings(queue);
        let mut todo: std::collections::VecDeque<Action> = actions.into();
        let mut changed = false;
        while let Some(action) = todo.pop_front() {
            match action {
                Action::Connect {
                    caller,
                    agent,
                    leg,
                    bridge,
                } => {
                    match self
                        .connect(node, queue, &caller, &agent, &leg, &bridge)
                        .await
                    {
                        Ok(()) => {
                            if let Ok((Some((waited, ready)), _)) =
                                self.queue_update(queue, |st, _| st.connected(&agent)).await
                            {
                                self.inner.metrics.queue_outcome(queue.as_str(), "answered");
                                self.inner
                                    .metrics
                                    .queue_wait(queue.as_str(), Duration::from_millis(waited));
                                let connect_ms = now_ms().saturating_sub(ready);
                                self.inner
                                    .metrics
                                    .queue_connect(Duration::from_millis(connect_ms));
                                tracing::info!(node = %node.id, queue = %queue, caller = %caller, agent = %agent, waited_ms = waited, "caller connected to agent");
                                self.emit(FarmEvent::QueueConnected {
                                    queue: queue.clone(),
                                    caller,
                                    agent,
                                    waited_ms: waited,
                                    connect_ms,
                                });
                            }
                        }
                        Err(failed) => {
                            let caller_gone = failed == PairFailed::CallerGone;
                            tracing::info!(node = %node.id, queue = %queue, caller = %caller, agent = %agent, caller_gone, "pair not bridged: one side is gone");
                            changed = true;
                            if let Ok((more, _)) = self
                                .queue_update(queue, |st, now| {
                                    st.connect_failed(&agent, caller_gone, now)
                                })
                                .await
                            {
                                if caller_gone {
                                    self.inner
                                        .metrics
                                        .queue_outcome(queue.as_str(), "abandoned");
                                }
                                todo.extend(more);
                            }
                        }
                    }
                }
                Action::Ring {
                    caller,
                    caller_id,
                    agent,
                    endpoint,
                    leg,
                } => {
                    self.remember(&node.id, &leg, queue);
                    let args = format!("member,{queue},{agent}");
                    let secs = settings.ring_timeout.as_secs().max(1) as u32;
                    let cid = (!caller_id.is_empty()).then_some(caller_id.as_str());
                    match node.ari.originate(&leg, &endpoint, &args, cid, secs).await {
                        Ok(_) => {
                            tracing::debug!(node = %node.id, queue = %queue, agent = %agent, caller = %caller, endpoint = %endpoint, "ringing member");
                        }
                        Err(e) => {
                            tracing::warn!(node = %node.id, queue = %queue, agent = %agent, endpoint = %endpoint, reason = %e, "member endpoint failed; trying others");
                            lock(&self.inner.queues.chans)
                                .remove(&(node.id.clone(), leg.to_string()));
                            changed = true;
                            if let Ok(((_, more), _)) = self
                                .queue_update(queue, |st, now| {
                                    st.channel_gone(&leg, now, &settings)
                                })
                                .await
                            {
                                todo.extend(more);
                            }
                        }
                    }
                }
                Action::HangupLeg { leg } => {
                    if let Err(e) = node.ari.hangup(&leg, "normal").await
                        && e.status() != Some(404)
                    {
                        tracing::info!(node = %node.id, leg = %leg, reason = %e, "member leg not hung up");
                    }
                }
                Action::BackToHolding { agent, channel } => {
                    match self.rehold(node, queue, &channel).await {
                        Ok(()) => {
                            changed = true;
                            lock(&self.inner.queues.returned)
                                .entry(queue.clone())
                                .or_default()
                                .push(agent);
                        }
                        Err(e) => {
                            tracing::info!(node = %node.id, queue = %queue, channel = %channel, reason = %e, "agent not put back on hold (gone?)");
                        }
                    }
                }
                Action::Continue { caller, overflow } => {
                    if overflow {
                        self.inner
                            .metrics
                            .queue_outcome(queue.as_str(), "timed_out");
                        tracing::info!(node = %node.id, queue = %queue, caller = %caller, "caller waited max_wait; to the treatment");
                    }
                    self.queue_continue(node, &caller, overflow, &settings)
                        .await;
                }
                Action::DestroyBridge { bridge } => {
                    node.with(|s| s.bridges.remove(&bridge));
                    if let Ok(bridge) = crate::domain::BridgeId::new(bridge.as_str())
                        && let Err(e) = node.ari.destroy_bridge(&bridge).await
                        && e.status() != Some(404)
                    {
                        tracing::info!(node = %node.id, bridge = %bridge, reason = %e, "pair bridge not destroyed");
                    }
                }
                Action::WrapUpUntil { .. } => {}
            }
        }
        changed
    }

    /// Puts an answered caller or agent back in the queue's holding bridge
    /// (no answer again, and no store read when this replica knows the
    /// bridge).
    async fn rehold(
        &self,
        node: &Arc<NodeRuntime>,
        queue: &RoomName,
        channel: &ChannelId,
    ) -> Result<(), crate::ari::Error> {
        let room = RoomKey::new(RoomKind::Queue, queue.clone());
        let known = lock(&self.inner.queues.holding)
            .get(queue)
            .filter(|(n, _)| n == &node.id)
            .map(|(_, e)| *e);
        let epoch = match known {
            Some(e) => Some(e),
            None => match self.inner.store.get_room(&room).await {
                Ok(Some(d)) if d.placement.node == node.id => Some(d.placement.epoch),
                _ => None,
            },
        };
        self.bridge_channel(node, channel, &room, epoch)
            .await
            .map(|_| ())
    }

    /// Bridges a caller with an agent's leg. `Err(true)`: the caller is
    /// gone; `Err(false)`: the agent's leg is.
    async fn connect(
        &self,
        node: &Arc<NodeRuntime>,
        queue: &RoomName,
        caller: &ChannelId,
        agent: &AgentId,
        leg: &ChannelId,
        tag: &str,
    ) -> Result<(), PairFailed> {
        let (id, name) = self.inner.names.pair_bridge(queue, tag, agent);
        if let Err(e) = self
            .ari_retry(|| node.ari.create_bridge(&id, BridgeType::Mixing, &name))
            .await
        {
            tracing::warn!(node = %node.id, queue = %queue, reason = %e, "pair bridge not created");
            return Err(PairFailed::AgentGone);
        }
        node.with(|s| s.bridges.insert(id.to_string()));
        if let Err(e) = self
            .ari_retry(|| node.ari.add_channel(&id, caller, None))
            .await
        {
            tracing::debug!(reason = %e, "caller not bridged");
            // Gone or out of the app; any other failure is put on the agent
            // side (the caller stays in its place).
            return Err(if matches!(e.status(), Some(400 | 404 | 409 | 422)) {
                PairFailed::CallerGone
            } else {
                PairFailed::AgentGone
            });
        }
        if let Err(e) = self
            .ari_retry(|| node.ari.add_channel(&id, leg, None))
            .await
        {
            tracing::debug!(reason = %e, "agent not bridged");
            // The caller is in the pair bridge alone: back on hold.
            let _ = self.rehold(node, queue, caller).await;
            return Err(PairFailed::AgentGone);
        }
        Ok(())
    }

    /// A member leg corral originated was answered (`member,<queue>,<agent>`).
    pub(crate) async fn queue_member_answered(
        &self,
        node: &Arc<NodeRuntime>,
        chan: &ChannelId,
        queue: &RoomName,
        agent: &AgentId,
    ) {
        tracing::debug!(node = %node.id, queue = %queue, agent = %agent, leg = %chan, "member leg answered");
        self.remember(&node.id, chan, queue);
        node.with(|s| {
            s.joined(
                chan,
                Membership {
                    room: RoomKey::new(RoomKind::Queue, queue.clone()),
                    recorded: false,
                },
            )
        });
        match self
            .queue_update(queue, |st, now| st.member_answered(agent, chan, now))
            .await
        {
            Ok((actions, _)) => {
                tracing::debug!(node = %node.id, queue = %queue, agent = %agent, "member answered");
                self.queue_run(node, queue, actions).await;
            }
            Err(e) => {
                tracing::warn!(node = %node.id, queue = %queue, agent = %agent, reason = %e, "member answered but the queue is unavailable; leg hung up");
                let _ = node.ari.hangup(chan, "normal").await;
            }
        }
        self.queue_dispatch(queue).await;
    }

    /// After a (re)connection to `node`: every queue placed there checks
    /// its callers, agents and legs against `live` channels (confirmed by a
    /// 404 before anything is dropped), relearns them, and dispatches.
    pub(crate) async fn queue_resync(
        &self,
        node: &Arc<NodeRuntime>,
        live: &std::collections::HashSet<&str>,
        bridges: &[crate::ari::rest::Bridge],
    ) {
        let Ok(queues) = self.inner.store.list_queues().await else {
            return;
        };
        for queue in queues {
            let Ok((_, st)) = self.queue_load(&queue).await else {
                continue;
            };
            let room = RoomKey::new(RoomKind::Queue, queue.clone());
            let ringing: Vec<ChannelId> = st
                .agents
                .values()
                .filter_map(|a| match &a.activity {
                    AgentState::Ringing { channel, .. } => Some(channel.clone()),
                    _ => None,
                })
                .collect();
            for chan in st.channels_on(&node.id) {
                if live.contains(chan.as_str()) || !self.channel_gone(node, &chan).await {
                    self.remember(&node.id, &chan, &queue);
                    // A ringing leg is not in the app yet: its StasisStart
                    // (answered) must still be handled.
                    if ringing.contains(&chan) {
                        continue;
                    }
                    node.with(|s| {
                        s.follow(
                            &chan,
                            Membership {
                                room: room.clone(),
                                recorded: false,
                            },
                        )
                    });
                } else {
                    self.queue_gone(node, &queue, &chan, None).await;
                }
            }
            // Agents whose return to the holding bridge was cut short.
            let returning: Vec<Action> = st
                .agents
                .iter()
                .filter_map(|(id, a)| match &a.kind {
                    crate::queue::AgentKind::CallIn { channel, node: n }
                        if a.returning && n == &node.id =>
                    {
                        Some(Action::BackToHolding {
                            agent: id.clone(),
                            channel: channel.clone(),
                        })
                    }
                    _ => None,
                })
                .collect();
            if !returning.is_empty() {
                self.queue_run(node, &queue, returning).await;
            }
            // Empty pair bridges no pair uses any more (a call that ended
            // while corral was away).
            let used: std::collections::HashSet<String> = st
                .agents
                .iter()
                .filter_map(|(id, a)| match &a.activity {
                    AgentState::Busy { bridge, .. } => Some(
                        self.inner
                            .names
                            .pair_bridge(&queue, bridge, id)
                            .0
                            .to_string(),
                    ),
                    _ => None,
                })
                .collect();
            for b in bridges.iter().filter(|b| {
                b.channels.is_empty()
                    && self
                        .inner
                        .names
                        .parse_bridge_name(&b.name)
                        .is_some_and(|of| of.is_pair() && of.room() == &room)
                    && !used.contains(&b.id)
            }) {
                self.destroy_listed_bridge(node, &b.id).await;
            }
            // Configured members added since the queue was created.
            let settings = self.inner.cfg.queues.settings(&queue);
            if settings
                .members
                .iter()
                .any(|(a, _)| !st.agents.contains_key(a))
            {
                let _ = self
                    .queue_update(&queue, |st, now| {
                        for (a, e) in &settings.members {
                            if !st.agents.contains_key(a) {
                                st.add_member(a.clone(), e.clone(), false, now);
                            }
                        }
                    })
                    .await;
            }
            self.queue_dispatch(&queue).await;
        }
    }

    /// `node` died (or restarted empty): what the queues had there is gone.
    pub(crate) async fn queues_node_lost(&self, node: &NodeId) {
        let Ok(queues) = self.inner.store.list_queues().await else {
            return;
        };
        lock(&self.inner.queues.chans).retain(|(n, _), _| n != node);
        for queue in queues {
            match self.queue_update(&queue, |st, _| st.node_lost(node)).await {
                Ok((0, _)) => {}
                Ok((lost, _)) => {
                    self.inner.metrics.queue_lost(queue.as_str(), lost as u64);
                    tracing::warn!(node = %node, queue = %queue, lost, "queue calls lost with their node");
                }
                Err(e) => {
                    tracing::warn!(node = %node, queue = %queue, reason = %e, "queue not cleared of a lost node")
                }
            }
        }
    }

    // ---- operators' API -------------------------------------------------

    /// Every queue's state, by name.
    pub async fn queues(&self) -> Result<Vec<(RoomName, QueueState)>, QueueError> {
        let mut out = Vec::new();
        for q in self.inner.store.list_queues().await? {
            let (_, st) = self.queue_load(&q).await?;
            out.push((q, st));
        }
        Ok(out)
    }

    /// One queue's state (`None`: never used), with its node.
    pub async fn queue(
        &self,
        queue: &RoomName,
    ) -> Result<Option<(QueueState, Option<NodeId>)>, QueueError> {
        let (_, st, stored) = self.queue_load_doc(queue).await?;
        if stored.is_none() {
            return Ok(None);
        }
        let room = RoomKey::new(RoomKind::Queue, queue.clone());
        let node = self
            .inner
            .store
            .get_room(&room)
            .await?
            .map(|d| d.placement.node);
        Ok(Some((st, node)))
    }

    /// The knobs of a queue.
    pub fn queue_settings(&self, queue: &RoomName) -> Arc<QueueSettings> {
        self.inner.cfg.queues.settings(queue)
    }

    /// Adds (or updates) a static member, then dispatches.
    pub async fn queue_add_member(
        &self,
        queue: &RoomName,
        agent: &AgentId,
        endpoint: &str,
        paused: bool,
    ) -> Result<Result<QueueState, Refused>, QueueError> {
        let (r, st) = self
            .queue_update(queue, |st, now| {
                if let Some(a) = st.agents.get(agent)
                    && !a.is_static()
                {
                    return Err(Refused::AlreadyLoggedIn(match &a.kind {
                        crate::queue::AgentKind::CallIn { channel, .. } => channel.clone(),
                        crate::queue::AgentKind::Static { .. } => unreachable!("checked"),
                    }));
                }
                st.add_member(agent.clone(), endpoint.to_string(), paused, now);
                Ok(())
            })
            .await?;
        if r.is_ok() {
            tracing::info!(queue = %queue, agent = %agent, endpoint, "static member added");
            self.queue_dispatch(queue).await;
        }
        Ok(r.map(|_| (*st).clone()))
    }

    /// Removes an agent (after its call if it is on one). `Ok(false)`:
    /// unknown agent.
    pub async fn queue_remove_member(
        &self,
        queue: &RoomName,
        agent: &AgentId,
    ) -> Result<bool, QueueError> {
        let (actions, _) = self
            .queue_update(queue, |st, _| st.remove_agent(agent))
            .await?;
        let Some(actions) = actions else {
            return Ok(false);
        };
        tracing::info!(queue = %queue, agent = %agent, "agent removed");
        if let Some(node) = self.queue_node(queue).await {
            self.queue_run(&node, queue, actions).await;
        }
        self.queue_dispatch(queue).await;
        Ok(true)
    }

    /// Pauses or resumes an agent. `Ok(false)`: unknown agent.
    pub async fn queue_pause(
        &self,
        queue: &RoomName,
        agent: &AgentId,
        paused: bool,
    ) -> Result<bool, QueueError> {
        let (found, _) = self
            .queue_update(queue, |st, _| st.set_paused(agent, paused).is_some())
            .await?;
        if found {
            tracing::info!(queue = %queue, agent = %agent, paused, "agent pause changed");
            self.queue_dispatch(queue).await;
        }
        Ok(found)
    }
}
