//! After a (re)connection: the queue's calls checked against ARI (a 404
//! before anything is dropped), and what a lost node had.

use std::sync::Arc;

use super::lock;
use crate::controller::Controller;
use crate::controller::channel::{Membership, NodeRuntime};
use crate::domain::{ChannelId, NodeId, RoomKey, RoomKind};
use crate::queue::{Action, AgentState};

/// How long after a member starts ringing (its state saved, its originate
/// on the way) a resync may take "no such channel" to mean it is gone: the
/// ARI request timeout, twice, for clocks of replicas that differ a little.
const ORIGINATE_GRACE_MS: u64 = 10_000;

impl Controller {
    /// After a (re)connection to `node`: every queue placed there checks
    /// its callers, agents and legs against `live` channels (confirmed by a
    /// 404 before anything is dropped), relearns them, and dispatches.
    pub(crate) async fn queue_resync(
        &self,
        node: &Arc<NodeRuntime>,
        live: &std::collections::HashSet<&str>,
        bridges: &[crate::ari::rest::Bridge],
        listed_at: std::time::Instant,
    ) {
        let Ok(queues) = self.inner.store.list_queues().await else {
            return;
        };
        for queue in queues {
            let Ok((_, st)) = self.queue_load(&queue).await else {
                continue;
            };
            let room = RoomKey::new(RoomKind::Queue, queue.clone());
            let ringing: Vec<(ChannelId, u64)> = st
                .agents
                .values()
                .filter_map(|a| match &a.activity {
                    AgentState::Ringing {
                        channel, since_ms, ..
                    } => Some((channel.clone(), *since_ms)),
                    _ => None,
                })
                .collect();
            for chan in st.channels_on(&node.id) {
                let rung_at = ringing.iter().find(|(c, _)| *c == chan).map(|(_, t)| *t);
                if live.contains(chan.as_str()) || !self.channel_gone(node, &chan).await {
                    self.remember(&node.id, &chan, &queue);
                    // A ringing leg is not in the app yet: its StasisStart
                    // (answered) must still be handled.
                    if rung_at.is_some() {
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
                } else if rung_at
                    .is_some_and(|t| super::now_ms().saturating_sub(t) < ORIGINATE_GRACE_MS)
                {
                    // The leg is in the state before its originate reaches
                    // the node (the state is saved first): not there yet is
                    // not gone. Seen on a real Asterisk: a resync in that
                    // window dropped a member whose phone then answered.
                    continue;
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
                self.destroy_listed_bridge(node, &b.id, listed_at).await;
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
}
