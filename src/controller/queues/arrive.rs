//! Callers and call-in agents arriving on the queue's node, and static
//! members' legs answering.

use std::sync::Arc;

use super::{QueueError, lock};
use crate::ari::rest::Channel;
use crate::controller::Controller;
use crate::controller::channel::{Membership, NodeRuntime};
use crate::controller::decide::Who;
use crate::domain::{AgentId, ChannelId, RoomKey, RoomKind, RoomName};
use crate::queue::{QueueSettings, Refused};

impl Controller {
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

    pub(super) async fn agent_login(
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
    pub(super) async fn queue_continue(
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
}
