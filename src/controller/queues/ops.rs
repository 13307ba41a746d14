//! The operators' API: every queue's state, one queue, static members
//! added or removed, agents paused.

use std::sync::Arc;

use super::QueueError;
use crate::controller::Controller;
use crate::domain::{AgentId, NodeId, RoomKey, RoomKind, RoomName};
use crate::queue::{QueueSettings, QueueState, Refused};

impl Controller {
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
