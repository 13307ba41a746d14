//! Pairing waiting callers with free agents, the queue's wake-ups, and the
//! ARI work a transition asks for ([`crate::queue::Action`]).

use std::sync::Arc;
use std::time::Duration;

use super::{lock, now_ms};
use crate::ari::rest::BridgeType;
use crate::controller::channel::NodeRuntime;
use crate::controller::{Controller, FarmEvent};
use crate::domain::{AgentId, ChannelId, NodeId, RoomKey, RoomKind, RoomName};
use crate::queue::{Action, AgentState, QueueSettings, QueueState};

/// Which side of a pair could not be bridged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PairFailed {
    /// The caller hung up or left the app: it leaves the queue.
    CallerGone,
    /// The agent's leg (or the pair bridge) failed: the caller keeps its
    /// place, the agent backs off.
    AgentGone,
}

impl Controller {
    /// The queue's node runtime, if this replica streams it.
    /// The node of the queue's holding bridge as last joined here is taken
    /// without a store read (the engine's saves check it still owns the
    /// queue); else the room is read.
    pub(super) async fn queue_node(&self, queue: &RoomName) -> Option<Arc<NodeRuntime>> {
        let known = lock(&self.inner.queues.holding)
            .get(queue)
            .and_then(|(n, _)| self.inner.nodes.get(n).cloned());
        if let Some(rt) = known
            && rt.link().is_streaming()
        {
            return Some(rt);
        }
        let room = RoomKey::new(RoomKind::Queue, queue.clone());
        let detail = self.inner.store.get_room(&room).await.ok()??;
        let rt = self.inner.nodes.get(&detail.placement.node)?.clone();
        if rt.link().is_streaming() {
            lock(&self.inner.queues.holding)
                .insert(queue.clone(), (rt.id.clone(), detail.placement.epoch));
            Some(rt)
        } else {
            None
        }
    }

    /// Pairs waiting callers with free agents (after ending due wrap-ups
    /// and sending callers past `max_wait` to the treatment), then arms the
    /// next wake-up.
    pub(crate) async fn queue_dispatch(&self, queue: &RoomName) {
        let Some(mut node) = self.queue_node(queue).await else {
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
                .queue_update_on(queue, Some(&node.id), |st, now| {
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
                Ok(Ok(x)) => x,
                Ok(Err(owner)) => {
                    // The queue moved since this replica last joined it:
                    // read where it lives now, and dispatch there (if
                    // streamed here).
                    lock(&self.inner.queues.returned)
                        .entry(queue.clone())
                        .or_default()
                        .extend(returned);
                    let stale = lock(&self.inner.queues.holding).remove(queue);
                    tracing::debug!(queue = %queue, owner = ?owner, stale = ?stale.map(|(n, _)| n), "queue moved; its node read again");
                    match self.queue_node(queue).await {
                        Some(n) if n.id != node.id => {
                            node = n;
                            continue;
                        }
                        _ => return,
                    }
                }
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
    pub(super) fn arm_wakeup(&self, queue: &RoomName, st: &QueueState, settings: &QueueSettings) {
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
    pub(super) async fn queue_run(
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
    pub(super) async fn rehold(
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
}
