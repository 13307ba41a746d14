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

//!
//! # Files
//! - this one: the engine's memory and the one way a queue's state changes
//!   (load → pure transition → compare-and-set save);
//! - [`arrive`]: callers and agents arriving, member legs answered;
//! - [`gone`]: hangups and the queue's view of a channel leaving;
//! - [`dispatch`]: pairing, wake-ups, and the ARI work a transition asks for;
//! - [`resync`]: the queue's calls checked against ARI, a lost node;
//! - [`ops`]: the operators' API (state, members, pause).

mod arrive;
mod dispatch;
mod gone;
mod ops;
mod resync;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::channel::NodeRuntime;
use super::{Controller, FarmEvent};
use crate::domain::{AgentId, ChannelId, NodeId, RoomKind, RoomName};
use crate::queue::QueueState;
use crate::store::QueueSave;

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
    /// Each queue's holding bridge as last joined here: (node, epoch). The
    /// engine runs for that node without reading the room; its saves check
    /// the node still owns the queue ([`crate::store::Store::save_queue_on`]).
    holding: Mutex<HashMap<RoomName, (NodeId, crate::domain::Epoch)>>,
    /// The earliest wake-up armed per queue (Unix ms).
    wakeups: Mutex<HashMap<RoomName, u64>>,
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
    pub(super) fn queue_lock(&self, queue: &RoomName) -> Arc<tokio::sync::Mutex<()>> {
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
    pub(super) async fn queue_load_doc(
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
        f: impl FnMut(&mut QueueState, u64) -> T,
    ) -> Result<(T, Arc<QueueState>), QueueError> {
        // Without an owner to check, the store never answers "moved".
        self.queue_update_on(queue, None, f)
            .await?
            .map_err(|_| QueueError::Contended(queue.clone()))
    }

    /// [`Controller::queue_update`] for the engine of the queue's node
    /// `owner`: the save also checks that `owner` still owns the queue;
    /// `Ok(Err(owner now))` when it does not (nothing written).
    ///
    /// One store round trip when this replica saved the queue last: its
    /// saved version is the compare-and-set's expectation (a conflict
    /// reloads and applies `f` again). Only a transition that changes
    /// nothing reads the version, to be sure it saw the latest state.
    pub(crate) async fn queue_update_on<T>(
        &self,
        queue: &RoomName,
        owner: Option<&NodeId>,
        mut f: impl FnMut(&mut QueueState, u64) -> T,
    ) -> Result<Result<(T, Arc<QueueState>), Option<NodeId>>, QueueError> {
        let l = self.queue_lock(queue);
        let _g = l.lock().await;
        let mut cached = lock(&self.inner.queues.cache).remove(queue);
        for _ in 0..32 {
            let (version, mut st, stored, fresh) = match cached.take() {
                Some(c) => (
                    c.version,
                    Arc::try_unwrap(c.state).unwrap_or_else(|a| (*a).clone()),
                    Some(c.doc),
                    false,
                ),
                None => {
                    let (v, st, stored) = self.queue_load_doc(queue).await?;
                    (v, st, stored, true)
                }
            };
            let before = st.callers.clone();
            let out = f(&mut st, now_ms());
            let doc = st.to_doc();
            let (removed, added) = st.callers_diff(&before);
            // Unchanged if the document serializes as stored (the
            // serializer is deterministic) and no caller changed.
            if stored.as_deref() == Some(doc.as_str()) && removed.is_empty() && added.is_empty() {
                // A state kept from this replica's last save may be stale
                // (another writer): checked before nothing is done.
                if !fresh && self.inner.store.queue_version(queue).await? != version {
                    continue;
                }
                let state = Arc::new(st);
                self.cache_queue(queue, version, state.clone(), doc);
                return Ok(Ok((out, state)));
            }
            let t = Instant::now();
            let saved = match owner {
                Some(o) => {
                    self.inner
                        .store
                        .save_queue_on(queue, o, version, &doc, &removed, &added)
                        .await
                }
                None => self
                    .inner
                    .store
                    .save_queue_parts(queue, version, &doc, &removed, &added)
                    .await
                    .map(|v| v.map_or(QueueSave::Conflict, QueueSave::Saved)),
            };
            self.inner.metrics.store_latency("save_queue", t.elapsed());
            match saved {
                Ok(QueueSave::Saved(v)) => {
                    self.queue_observe(queue, &st);
                    let state = Arc::new(st);
                    self.cache_queue(queue, v, state.clone(), doc);
                    return Ok(Ok((out, state)));
                }
                Ok(QueueSave::Conflict) => {}
                Ok(QueueSave::Moved(now)) => return Ok(Err(now)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(QueueError::Contended(queue.clone()))
    }

    pub(super) fn cache_queue(
        &self,
        queue: &RoomName,
        version: u64,
        state: Arc<QueueState>,
        doc: String,
    ) {
        lock(&self.inner.queues.cache).insert(
            queue.clone(),
            Cached {
                version,
                state,
                doc,
            },
        );
    }

    pub(super) fn queue_observe(&self, queue: &RoomName, st: &QueueState) {
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

    pub(super) fn remember(&self, node: &NodeId, chan: &ChannelId, queue: &RoomName) {
        lock(&self.inner.queues.chans).insert((node.clone(), chan.to_string()), queue.clone());
    }

    /// The queue `chan` on `node` belongs to, if corral knows it.
    pub(super) fn queue_of(&self, node: &Arc<NodeRuntime>, chan: &ChannelId) -> Option<RoomName> {
        if let Some(q) = lock(&self.inner.queues.chans).get(&(node.id.clone(), chan.to_string())) {
            return Some(q.clone());
        }
        node.with(|s| {
            s.membership(chan)
                .filter(|m| m.room.kind == RoomKind::Queue)
                .map(|m| m.room.name.clone())
        })
    }
}
