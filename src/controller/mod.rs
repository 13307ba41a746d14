//! The controller: one task per node that reads its events and runs the call
//! path, plus the background work that keeps the room map true.
//!
//! [`Controller`] is a cheap-clone handle; [`Controller::run`] starts and
//! supervises every per-node task until its cancellation token fires.
//!
//! It is shaped like a kube-runtime controller: facts in, a decision out as
//! a value ([`decide`]), one place that carries it out ([`exec`]).
//!
//! # Guarantees
//! - Events for one channel are handled in order, one at a time, also under
//!   load ([`mailbox`]); different channels in parallel.
//! - A call is never hung up and a bridge never destroyed because corral
//!   stops: on cancel, loops stop taking events, work in flight finishes
//!   (within [`Config::drain_deadline`]).
//! - Every decision goes through the store's atomic operations: what lives
//!   here in memory ([`channel`]) is caches and guards that a resync
//!   rebuilds from ARI and the store.
//!
//! # Parts
//! - [`node`]: one node's loop: lease, event stream, health, resync ticks;
//!   the standby stream while another replica holds the node.
//! - [`channel`]: the state machines: one per channel, one per node's link.
//! - [`mailbox`]: each channel's work, in order.
//! - [`decide`]: the pure decisions of the call path and the resync.
//! - [`exec`]: the executor: the ARI and store I/O those decisions ask for.
//! - [`owner`]: the owner decision, for the call path and the apps' API.
//! - [`minted`]: the grants of the tokens this replica minted, for token
//!   arrivals while the store is down.
//! - [`rooms`]: bridges, members, linger and release, moving a call.
//! - [`apps`]: the decisions apps ask for over the HTTP API.
//! - [`ahead`]: route ahead, the proxy's lookup before it dispatches.
//! - [`queues`]: the queue engine: callers wait, agents are paired.

pub mod ahead;
pub mod apps;
pub(crate) mod channel;
pub mod decide;
pub(crate) mod exec;
pub(crate) mod mailbox;
pub(crate) mod minted;
pub mod node;
pub mod owner;
pub mod queues;
pub mod rooms;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ari::{self, AriNode};
use crate::domain::{NodeId, RoomKey};
use crate::policy::{Policy, Strategy};
pub use crate::queue::QueueConfig;
use crate::retry::Backoff;
use crate::store::{NodeRecord, Store};
use crate::telemetry::SharedMetrics;
use channel::NodeRuntime;

/// The call path's knobs (`[controller]` in the configuration).
///
/// Every default is a `DEFAULT_*` constant here: the configuration file's
/// defaults (`crate::config`) are these same constants, so they are written
/// once.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Stasis app name.
    pub app: String,
    /// The standby Stasis app name (empty: none). A replica that does not
    /// hold a node's stream holds this app on the node instead (one
    /// replica per node, by a lease of its own), and the dialplan sends a
    /// call there when `Stasis(<app>)` fails: the stream's replica died,
    /// and its lease has not expired yet.
    pub standby_app: String,
    /// Redirect target template with `{token}` and `{sip_host}`.
    pub endpoint_template: String,
    /// Redirects one call may take before it joins where it is.
    pub hop_limit: u32,
    /// Token lifetime.
    pub token_ttl: Duration,
    /// How long a redirected call's token has to arrive.
    pub redirect_deadline: Duration,
    /// How long a token arriving while the store does not answer waits in
    /// Stasis, still ringing, for the store (a token this replica minted
    /// does not wait: its grant is kept here).
    pub token_store_wait: Duration,
    /// How long an empty room keeps its node and bridge.
    pub linger: Duration,
    /// Placement strategy.
    pub strategy: Strategy,
    /// Seed of the policy's tie-breaks.
    pub seed: u64,
    /// Health ping interval.
    pub ping_interval: Duration,
    /// Failed pings in a row that mark a node down.
    pub down_after_failures: u32,
    /// Full comparison of the store with each node's ARI.
    pub reconcile_interval: Duration,
    /// This replica's name in node leases (unique per process).
    pub replica: String,
    /// Life of a node lease; renewed at a third of it. A replica that dies
    /// without releasing its leases is replaced after at most this long.
    pub lease_ttl: Duration,
    /// On stop, how long work in flight may take to finish before corral
    /// stops anyway (calls are never hung up either way).
    pub drain_deadline: Duration,
    /// Queue knobs.
    pub queues: QueueConfig,
}

impl Config {
    /// The Stasis app every node's dialplan sends calls to.
    pub const DEFAULT_APP: &'static str = crate::names::DEFAULT_APP;
    /// The standby app the shipped dialplan falls back to.
    pub const DEFAULT_STANDBY_APP: &'static str = "corral-standby";
    /// A SIP URI whose user part is the token, sent to the owner's host.
    pub const DEFAULT_ENDPOINT_TEMPLATE: &'static str = "PJSIP/sip:{token}@{sip_host}";
    /// Two redirects: one to the owner, one more if the room moved while the
    /// call was on its way; a third would mean the farm is flapping.
    pub const DEFAULT_HOP_LIMIT: u32 = 2;
    /// A token outlives any SIP round trip by far, yet dies before anyone
    /// could reuse a leaked one.
    pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(30);
    /// A 302 and the INVITE that follows take milliseconds; five seconds
    /// means the call is lost.
    pub const DEFAULT_REDIRECT_DEADLINE: Duration = Duration::from_secs(5);
    /// Redis restarts, or a Sentinel fails over, within ten seconds; a
    /// caller hears ringing meanwhile.
    pub const DEFAULT_TOKEN_STORE_WAIT: Duration = Duration::from_secs(10);
    /// Long enough for a conference whose last caller dials straight back.
    pub const DEFAULT_LINGER: Duration = Duration::from_secs(10);
    /// Least loaded relative to capacity, the landing node first.
    pub const DEFAULT_STRATEGY: Strategy = Strategy::LeastLoaded;
    /// One `GET /asterisk/ping` a second per node.
    pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(1);
    /// Three failed pings: a node is not marked down for one lost packet.
    pub const DEFAULT_DOWN_AFTER_FAILURES: u32 = 3;
    /// The net for missed events runs every five seconds.
    pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(5);
    /// A dead replica's nodes are taken over within ten seconds.
    pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
    /// Steps in flight are a few store and ARI round trips: ten seconds is
    /// plenty, and short enough for an orchestrator's stop timeout.
    pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(10);
}

/// A replica name unique to this process: host, pid and a random suffix.
pub fn default_replica() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "corral".into());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

impl Default for Config {
    fn default() -> Self {
        Self {
            app: Self::DEFAULT_APP.into(),
            standby_app: Self::DEFAULT_STANDBY_APP.into(),
            endpoint_template: Self::DEFAULT_ENDPOINT_TEMPLATE.into(),
            hop_limit: Self::DEFAULT_HOP_LIMIT,
            token_ttl: Self::DEFAULT_TOKEN_TTL,
            redirect_deadline: Self::DEFAULT_REDIRECT_DEADLINE,
            token_store_wait: Self::DEFAULT_TOKEN_STORE_WAIT,
            linger: Self::DEFAULT_LINGER,
            strategy: Self::DEFAULT_STRATEGY,
            seed: rand::random(),
            ping_interval: Self::DEFAULT_PING_INTERVAL,
            down_after_failures: Self::DEFAULT_DOWN_AFTER_FAILURES,
            reconcile_interval: Self::DEFAULT_RECONCILE_INTERVAL,
            replica: default_replica(),
            lease_ttl: Self::DEFAULT_LEASE_TTL,
            drain_deadline: Self::DEFAULT_DRAIN_DEADLINE,
            queues: QueueConfig::default(),
        }
    }
}

/// One node as the controller sees it.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// ARI access.
    pub ari: ari::Config,
    /// Where other nodes' redirects send SIP (`host:port`).
    pub sip_host: String,
    /// Relative capacity.
    pub capacity: u32,
    /// Room cap.
    pub max_rooms: Option<u32>,
}

/// What happened in the farm, for the API's event stream and the demo.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FarmEvent {
    /// A room got a node.
    RoomPlaced {
        /// The room.
        room: RoomKey,
        /// Its node.
        node: NodeId,
        /// Its epoch.
        epoch: u64,
        /// The node it had before, if it moved.
        previous: Option<NodeId>,
    },
    /// A room was released.
    RoomReleased {
        /// The room.
        room: RoomKey,
        /// The node it had.
        node: NodeId,
        /// Why (`empty`).
        reason: String,
    },
    /// A room's member count changed.
    MembersChanged {
        /// The room.
        room: RoomKey,
        /// Its node.
        node: NodeId,
        /// Members now.
        members: u32,
    },
    /// A node's stream is up and registered.
    NodeUp {
        /// The node.
        node: NodeId,
        /// Whether this is a new Asterisk process.
        new_incarnation: bool,
    },
    /// A node was marked down; its rooms were released.
    NodeDown {
        /// The node.
        node: NodeId,
        /// Why.
        reason: String,
        /// Rooms released.
        released_rooms: u32,
    },
    /// A node failed a health check (`suspect`: it takes no new room and
    /// no call is sent to it; its rooms stay), or answered again.
    NodeSuspect {
        /// The node.
        node: NodeId,
        /// Marked (true) or cleared (false).
        suspect: bool,
    },
    /// A split room is whole again: its stray calls moved to the owner.
    SplitHealed {
        /// The room.
        room: RoomKey,
        /// The node its stray calls were on.
        node: NodeId,
        /// How long the split lasted, from its detection, in ms.
        lasted_ms: u64,
    },
    /// A queue caller was bridged with an agent.
    QueueConnected {
        /// The queue.
        queue: crate::domain::RoomName,
        /// The caller's channel.
        caller: crate::domain::ChannelId,
        /// The agent.
        agent: crate::domain::AgentId,
        /// How long the caller waited, in ms.
        waited_ms: u64,
        /// From the agent being picked to both bridged, in ms.
        connect_ms: u64,
    },
    /// A queue's waiting callers or agents changed.
    QueueChanged {
        /// The queue.
        queue: crate::domain::RoomName,
        /// Callers waiting.
        waiting: u32,
        /// Agents available (not paused).
        available: u32,
    },
    /// An operator drained or undrained a node.
    NodeDraining {
        /// The node.
        node: NodeId,
        /// Drain flag now.
        draining: bool,
    },
    /// A room's calls were found on two nodes.
    SplitDetected {
        /// The room.
        room: RoomKey,
        /// The owner.
        owner: NodeId,
        /// Where the stray call is.
        node: NodeId,
    },
}

/// How many farm events may wait for a slow subscriber before it misses
/// some (it is told how many it missed).
pub const EVENT_BACKLOG: usize = 1024;

/// How many times one ARI call is tried when it fails with a 5xx or a
/// transport error: enough to ride out a blip, few enough that a call never
/// waits long.
pub const ARI_ATTEMPTS: u32 = 4;

/// First pause between two tries of an ARI call (then doubling, jittered,
/// up to [`ARI_RETRY_MAX`]; longer when ARI's error asks for it).
pub const ARI_RETRY_INITIAL: Duration = Duration::from_millis(10);

/// Longest pause between two tries of an ARI call.
pub const ARI_RETRY_MAX: Duration = Duration::from_millis(40);

/// First pause before a store write retried until it succeeds (a node's
/// registration or mark-down, a lease): Redis restarts in a second or two.
pub const STORE_RETRY_INITIAL: Duration = Duration::from_millis(100);

/// Longest pause between two tries of a store write.
pub const STORE_RETRY_MAX: Duration = Duration::from_secs(5);

pub(crate) struct Inner {
    pub(crate) cfg: Config,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) metrics: SharedMetrics,
    pub(crate) nodes: HashMap<NodeId, Arc<NodeRuntime>>,
    pub(crate) policy: Mutex<Policy>,
    pub(crate) view: RwLock<Vec<NodeRecord>>,
    pub(crate) events: broadcast::Sender<FarmEvent>,
    pub(crate) tracker: TaskTracker,
    /// Cancelled when the controller stops: timers (linger, redirect
    /// deadlines) end at once instead of holding the shutdown.
    pub(crate) stop: CancellationToken,
    /// Queues' runtime state (locks, channel index, wake-ups).
    pub(crate) queues: queues::Runtime,
    /// The names of this app's bridges (`cfg.app`).
    pub(crate) names: crate::names::BridgeNames,
    /// The grants of the tokens this replica minted, for arrivals while
    /// the store is down.
    pub(crate) minted: minted::Minted,
}

/// The controller handle. Cheap to clone.
#[derive(Clone)]
pub struct Controller {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("nodes", &self.inner.nodes.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Controller {
    /// Builds the controller for `nodes`. No I/O happens until [`run`].
    ///
    /// # Errors
    /// An ARI client cannot be built.
    ///
    /// [`run`]: Controller::run
    pub fn new(
        cfg: Config,
        store: Arc<dyn Store>,
        nodes: Vec<NodeSpec>,
        metrics: SharedMetrics,
    ) -> Result<Self, reqwest::Error> {
        let mut map = HashMap::new();
        for spec in nodes {
            let ari = AriNode::new(spec.ari.clone(), metrics.clone())?;
            let standby = match cfg.standby_app.as_str() {
                "" => None,
                app => Some(AriNode::new(
                    ari::Config {
                        app: app.to_string(),
                        ..spec.ari.clone()
                    },
                    metrics.clone(),
                )?),
            };
            let id = spec.ari.node.clone();
            map.insert(id.clone(), NodeRuntime::new(id, ari, standby, spec));
        }
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        let cfg_app = cfg.app.clone();
        Ok(Self {
            inner: Arc::new(Inner {
                policy: Mutex::new(Policy::new(cfg.strategy, cfg.seed)),
                cfg,
                store,
                metrics,
                nodes: map,
                view: RwLock::new(Vec::new()),
                events,
                tracker: TaskTracker::new(),
                stop: CancellationToken::new(),
                queues: queues::Runtime::default(),
                names: crate::names::BridgeNames::new(cfg_app),
                minted: minted::Minted::default(),
            }),
        })
    }

    /// Runs every node's loop until `shutdown` fires, then waits for the
    /// work in flight to finish (at most [`Config::drain_deadline`]), without hanging up a call
    /// or destroying a bridge.
    pub async fn run(&self, shutdown: CancellationToken) {
        let inner = &self.inner;
        for node in inner.nodes.values() {
            let ctrl = self.clone();
            let node = node.clone();
            let cancel = shutdown.child_token();
            inner
                .tracker
                .spawn(async move { node::run(ctrl, node, cancel).await });
        }
        let ctrl = self.clone();
        let cancel = shutdown.child_token();
        inner
            .tracker
            .spawn(async move { ctrl.refresh_view_loop(cancel).await });
        shutdown.cancelled().await;
        inner.stop.cancel();
        tracing::info!("controller stopping: no new events taken; finishing work in flight");
        inner.tracker.close();
        let deadline = inner.cfg.drain_deadline;
        if tokio::time::timeout(deadline, inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                deadline_ms = deadline.as_millis() as u64,
                "work in flight did not finish within the drain deadline; stopping anyway"
            );
        }
        tracing::info!("controller stopped");
    }

    /// Subscribes to farm events.
    pub fn subscribe(&self) -> broadcast::Receiver<FarmEvent> {
        self.inner.events.subscribe()
    }

    /// The store this controller decides with.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// This controller's metrics.
    pub fn metrics(&self) -> &SharedMetrics {
        &self.inner.metrics
    }

    /// Ids of the configured nodes.
    pub fn node_ids(&self) -> Vec<NodeId> {
        let mut v: Vec<_> = self.inner.nodes.keys().cloned().collect();
        v.sort();
        v
    }

    /// Whether every node's stream is up (for `/readyz`).
    pub fn nodes_streaming(&self) -> Vec<(NodeId, bool)> {
        let mut v: Vec<_> = self
            .inner
            .nodes
            .values()
            .map(|n| (n.id.clone(), n.is_up()))
            .collect();
        v.sort();
        v
    }

    /// The node's ARI client, if configured.
    pub fn ari(&self, node: &NodeId) -> Option<AriNode> {
        self.inner.nodes.get(node).map(|n| n.ari.clone())
    }

    /// The node's SIP host, if configured.
    pub fn sip_host(&self, node: &NodeId) -> Option<String> {
        self.inner.nodes.get(node).map(|n| n.spec.sip_host.clone())
    }

    /// Sleeps for `d`, or returns `false` at once if the controller stops.
    pub(crate) async fn sleep_unless_stopped(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.inner.stop.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    pub(crate) fn emit(&self, ev: FarmEvent) {
        // No subscriber is fine.
        let _ = self.inner.events.send(ev);
    }

    /// Reloads the node view the policy chooses from; returns it, or
    /// `None` when the store did not answer.
    pub(crate) async fn refresh_view(&self) -> Option<Vec<NodeRecord>> {
        let started = std::time::Instant::now();
        match self.inner.store.list_nodes().await {
            Ok(nodes) => {
                self.inner
                    .metrics
                    .store_latency("list_nodes", started.elapsed());
                for n in &nodes {
                    self.inner.metrics.node_state(&n.id, n.state);
                }
                *self
                    .inner
                    .view
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = nodes.clone();
                Some(nodes)
            }
            Err(e) => {
                tracing::debug!(reason = %e, "node view not refreshed");
                None
            }
        }
    }

    /// The node view, refreshed every 500 ms; also how corral notices the
    /// store coming back (every streamed node is resynced at once, so the
    /// calls joined where they landed meanwhile are recorded, merged and
    /// healed in a moment, not at the next periodic resync) and the store
    /// having lost nodes this replica streams (Redis restarted empty: they
    /// are registered again, which claims their rooms back from ARI).
    async fn refresh_view_loop(&self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut store_was_down = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let up_before = self.up_nodes();
            let Some(records) = self.refresh_view().await else {
                store_was_down = true;
                continue;
            };
            let up: Vec<NodeId> = self
                .up_nodes()
                .into_iter()
                .filter(|id| up_before.contains(id))
                .collect();
            let forgotten = decide::forgotten(&up, &records);
            for id in &forgotten {
                let Some(node) = self.inner.nodes.get(id).cloned() else {
                    continue;
                };
                tracing::warn!(node = %id, "the store lost this node's registration (restarted empty?); registering it again");
                let ctrl = self.clone();
                self.inner
                    .tracker
                    .spawn(async move { ctrl.node_forgotten(&node).await });
            }
            if std::mem::take(&mut store_was_down) {
                for node in self.inner.nodes.values() {
                    if !node.is_up() || forgotten.contains(&node.id) {
                        continue;
                    }
                    tracing::info!(node = %node.id, "store answers again; resyncing");
                    let (ctrl, node) = (self.clone(), node.clone());
                    self.inner
                        .tracker
                        .spawn(async move { ctrl.resync(&node).await });
                }
            }
        }
    }

    /// The nodes whose link is up here (streamed and registered).
    fn up_nodes(&self) -> Vec<NodeId> {
        self.inner
            .nodes
            .values()
            .filter(|n| n.is_up())
            .map(|n| n.id.clone())
            .collect()
    }

    /// Marks `node` drained (no new rooms) or not.
    ///
    /// # Errors
    /// The store failed.
    pub async fn set_drain(
        &self,
        node: &NodeId,
        draining: bool,
    ) -> Result<NodeRecord, crate::store::Error> {
        let rec = self.inner.store.set_node_drain(node, draining).await?;
        self.emit(FarmEvent::NodeDraining {
            node: node.clone(),
            draining,
        });
        self.refresh_view().await;
        Ok(rec)
    }

    /// Runs one ARI call, retrying what [`crate::ari::Error::retry`] says
    /// may succeed again (a 5xx, a reset connection) up to
    /// [`ARI_ATTEMPTS`] times, pausing as the error asks through the one
    /// backoff ([`Backoff::delay_for`]).
    pub(crate) async fn ari_retry<T, F, Fut>(&self, mut call: F) -> Result<T, crate::ari::Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::ari::Error>>,
    {
        let mut backoff = Backoff::new(ARI_RETRY_INITIAL, ARI_RETRY_MAX, ARI_RETRY_MAX);
        let mut attempt = 1;
        loop {
            match call().await {
                Err(e) if attempt < ARI_ATTEMPTS => match backoff.delay_for(e.retry()) {
                    Some(pause) => {
                        tracing::debug!(reason = %e, attempt, "ARI call failed; retrying");
                        tokio::time::sleep(pause).await;
                        attempt += 1;
                    }
                    None => return Err(e),
                },
                other => return other,
            }
        }
    }
}
