//! A queue channel leaving: a caller abandons, an agent logs out, a member
//! declines, a call ends.

use std::sync::Arc;

use super::lock;
use crate::controller::Controller;
use crate::controller::channel::NodeRuntime;
use crate::domain::{ChannelId, RoomName};
use crate::queue::Gone;

impl Controller {
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

    pub(super) async fn queue_gone(
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
}
