//! Tracing setup and every metric corral exports.
//!
//! Only the binary calls [`init`]; libraries and tests never install a
//! subscriber of their own. `RUST_LOG` filters (default `corral=info`);
//! `CORRAL_LOG_FORMAT=json` prints JSON lines for production pipelines.
//!
//! [`Metrics`] holds every metric (Prometheus names `corral_<thing>_<unit>`,
//! counters ending in `_total`) plus a few farm-wide [`Totals`] that the demo
//! and benchmarks print. One `Metrics` belongs to one controller, so tests
//! running side by side in one process never mix their counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::domain::{NodeId, NodeState};

/// Installs the global subscriber with `default` as the filter when
/// `RUST_LOG` is not set. Calling it twice is harmless.
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let json = std::env::var("CORRAL_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Labels: one node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    /// Node id.
    pub node: String,
}

/// Labels: a node and an outcome or reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeOutcome {
    /// Node id.
    pub node: String,
    /// What happened (`sent`, `confirmed`, `consumed`, `store_down`, ...).
    pub outcome: String,
}

/// Labels: a store operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// Operation (`resolve_placement`, ...).
    pub op: String,
}

/// Labels: a node and a state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeStateLabel {
    /// Node id.
    pub node: String,
    /// `up`, `draining` or `down`.
    pub state: String,
}

/// Labels: a queue.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    /// Queue name.
    pub queue: String,
}

/// Labels: a queue and a state or outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueStateLabel {
    /// Queue name.
    pub queue: String,
    /// Agent state (`available`, `paused`, `ringing`, `busy`, `wrap_up`) or
    /// caller outcome (`answered`, `abandoned`, `timed_out`, `overflowed`,
    /// `lost`).
    pub state: String,
}

/// Labels: an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// What happened (`answered`, or why there was no answer).
    pub outcome: String,
}

/// Labels: one API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabel {
    /// The matched route template (`/v1/rooms/{kind}/{name}`), or
    /// `unmatched`: never the raw path, so ids cannot blow up the series.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// HTTP status code.
    pub status: String,
}

/// Farm-wide headline counts, for the demo and the benchmarks.
#[derive(Debug, Default)]
pub struct Totals {
    /// `StasisStart`s handled.
    pub arrivals: AtomicU64,
    /// Calls that joined their room's bridge.
    pub joined: AtomicU64,
    /// Redirects sent (a 204 from ARI).
    pub redirected: AtomicU64,
    /// Redirects confirmed by their token arriving.
    pub confirmed: AtomicU64,
    /// Redirects whose token never arrived in time.
    pub timed_out: AtomicU64,
    /// Splits detected: rooms whose calls were found in more than one
    /// bridge (on several nodes, or on one), each counted once.
    pub splits: AtomicU64,
    /// Joins in degraded mode (store down or no eligible node).
    pub degraded: AtomicU64,
    /// Rooms released.
    pub released: AtomicU64,
}

/// A snapshot of [`Totals`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TotalsSnapshot {
    /// `StasisStart`s handled.
    pub arrivals: u64,
    /// Calls that joined their room's bridge.
    pub joined: u64,
    /// Redirects sent.
    pub redirected: u64,
    /// Redirects confirmed by their token.
    pub confirmed: u64,
    /// Redirects timed out.
    pub timed_out: u64,
    /// Splits detected, each once.
    pub splits: u64,
    /// Degraded joins.
    pub degraded: u64,
    /// Rooms released.
    pub released: u64,
}

/// How a call joined its room (`corral_joins_total{how}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// It landed on its room's node.
    Direct,
    /// It came with a token.
    Token,
    /// Without a placement (store down, no node, redirect refused).
    Degraded,
    /// Past the hop limit, away from its room's node.
    Split,
    /// A queue caller or agent on hold in the queue's holding bridge.
    Queue,
}

impl JoinKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            JoinKind::Direct => "direct",
            JoinKind::Token => "token",
            JoinKind::Degraded => "degraded",
            JoinKind::Split => "split",
            JoinKind::Queue => "queue",
        }
    }
}

/// What became of a redirect (`corral_redirects_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectOutcome {
    /// ARI accepted it (204).
    Sent,
    /// Its token arrived on the destination and was consumed.
    Confirmed,
    /// Its token did not arrive within the redirect deadline.
    TimedOut,
    /// ARI refused it, or the call was gone.
    Failed,
}

impl RedirectOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RedirectOutcome::Sent => "sent",
            RedirectOutcome::Confirmed => "confirmed",
            RedirectOutcome::TimedOut => "timed_out",
            RedirectOutcome::Failed => "failed",
        }
    }
}

/// What happened to a token (`corral_tokens_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOutcome {
    /// Minted for a redirect.
    Minted,
    /// Consumed on its node.
    Consumed,
    /// Presented on a node it was not minted for.
    WrongNode,
    /// Presented after its expiry.
    Expired,
    /// Not corral's (never minted, used, or long gone).
    Unknown,
    /// Arrived while the store did not answer: joined on the grant this
    /// replica kept.
    UsedLocally,
    /// Arrived while the store did not answer: waited for it.
    WaitedForStore,
}

impl TokenOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenOutcome::Minted => "minted",
            TokenOutcome::Consumed => "consumed",
            TokenOutcome::WrongNode => "wrong_node",
            TokenOutcome::Expired => "expired",
            TokenOutcome::Unknown => "unknown",
            TokenOutcome::UsedLocally => "used_locally",
            TokenOutcome::WaitedForStore => "waited_for_store",
        }
    }

    /// The outcome of a consumption.
    pub fn of(consumed: &crate::store::Consumed) -> Self {
        match consumed {
            crate::store::Consumed::Ok(_) => TokenOutcome::Consumed,
            crate::store::Consumed::WrongNode(_) => TokenOutcome::WrongNode,
            crate::store::Consumed::Expired(_) => TokenOutcome::Expired,
            crate::store::Consumed::Unknown => TokenOutcome::Unknown,
        }
    }
}

/// Every metric of one controller.
pub struct Metrics {
    registry: Registry,
    /// Headline counts.
    pub totals: Totals,
    arrivals: Family<NodeOutcome, Counter>,
    joins: Family<NodeOutcome, Counter>,
    placements: Family<NodeLabel, Counter>,
    redirects: Family<NodeOutcome, Counter>,
    tokens: Family<NodeOutcome, Counter>,
    splits_detected: Family<NodeLabel, Counter>,
    splits_healed: Family<NodeLabel, Counter>,
    heal_moves_failed: Family<NodeLabel, Counter>,
    split_duration: Histogram,
    degraded: Family<NodeOutcome, Counter>,
    released: Family<NodeOutcome, Counter>,
    bad_events: Family<NodeOutcome, Counter>,
    node_state: Family<NodeStateLabel, Gauge>,
    ari_latency: Family<NodeLabel, Histogram>,
    store_latency: Family<OpLabel, Histogram>,
    call_setup: Histogram,
    api_latency: Family<ApiLabel, Histogram>,
    route_lookups: Family<OutcomeLabel, Counter>,
    samples: std::sync::Mutex<Option<Vec<u32>>>,
    queue_waiting: Family<QueueLabel, Gauge>,
    queue_agents: Family<QueueStateLabel, Gauge>,
    queue_callers: Family<QueueStateLabel, Counter>,
    queue_offers: Family<QueueStateLabel, Counter>,
    queue_wait: Family<QueueLabel, Histogram>,
    queue_connect: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("totals", &self.totals)
            .finish()
    }
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~6.5 s, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 17,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, registered under their Prometheus names.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            totals: Totals::default(),
            arrivals: Family::default(),
            joins: Family::default(),
            placements: Family::default(),
            redirects: Family::default(),
            tokens: Family::default(),
            splits_detected: Family::default(),
            splits_healed: Family::default(),
            heal_moves_failed: Family::default(),
            split_duration: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.01, 2.0, 14),
            ),
            degraded: Family::default(),
            released: Family::default(),
            bad_events: Family::default(),
            node_state: Family::default(),
            ari_latency: Family::new_with_constructor(latency_histogram),
            store_latency: Family::new_with_constructor(latency_histogram),
            call_setup: latency_histogram(),
            api_latency: Family::new_with_constructor(latency_histogram),
            route_lookups: Family::default(),
            samples: std::sync::Mutex::new(None),
            queue_waiting: Family::default(),
            queue_agents: Family::default(),
            queue_callers: Family::default(),
            queue_offers: Family::default(),
            queue_wait: Family::new_with_constructor(|| {
                // 100 ms to ~55 min, doubling.
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    0.1, 2.0, 16,
                ))
            }),
            queue_connect: latency_histogram(),
            registry: Registry::default(),
        };
        registry.register(
            "corral_queue_waiting_callers",
            "Callers waiting in each queue",
            m.queue_waiting.clone(),
        );
        registry.register(
            "corral_queue_agents",
            "Agents of each queue by state",
            m.queue_agents.clone(),
        );
        registry.register(
            "corral_queue_callers",
            "Queue callers by outcome (answered, abandoned, timed_out, overflowed, lost)",
            m.queue_callers.clone(),
        );
        registry.register(
            "corral_queue_member_offers_failed",
            "Static member calls not taken, by outcome (busy, no_answer, failed)",
            m.queue_offers.clone(),
        );
        registry.register(
            "corral_queue_wait_seconds",
            "How long answered callers waited, per queue",
            m.queue_wait.clone(),
        );
        registry.register(
            "corral_queue_connect_seconds",
            "From a free agent and a waiting caller to both bridged",
            m.queue_connect.clone(),
        );
        registry.register(
            "corral_arrivals",
            "Calls that entered corral's Stasis app, by node and kind",
            m.arrivals.clone(),
        );
        registry.register(
            "corral_joins",
            "Calls added to their room's bridge, by node and how (direct, token, degraded, split)",
            m.joins.clone(),
        );
        registry.register(
            "corral_placements",
            "Rooms placed on a node",
            m.placements.clone(),
        );
        registry.register(
            "corral_redirects",
            "Redirects by origin node and outcome (sent, confirmed, timed_out, failed)",
            m.redirects.clone(),
        );
        registry.register(
            "corral_tokens",
            "Tokens by node and outcome (minted, consumed, wrong_node, expired, unknown)",
            m.tokens.clone(),
        );
        registry.register(
            "corral_splits_detected",
            "Splits detected, each once: rooms whose calls were found in more than one bridge (on several nodes, or two on one node)",
            m.splits_detected.clone(),
        );
        registry.register(
            "corral_splits_healed",
            "Splits healed",
            m.splits_healed.clone(),
        );
        registry.register(
            "corral_heal_moves_failed",
            "Moves of stray calls whose token never arrived (a refused REFER): each is tried again with backoff, the call never hung up",
            m.heal_moves_failed.clone(),
        );
        registry.register(
            "corral_split_duration_seconds",
            "How long a split lasted until healed",
            m.split_duration.clone(),
        );
        registry.register(
            "corral_degraded_joins",
            "Calls joined where they landed because no placement could be made, by reason",
            m.degraded.clone(),
        );
        registry.register(
            "corral_rooms_released",
            "Rooms released, by reason",
            m.released.clone(),
        );
        registry.register(
            "corral_bad_events",
            "ARI events corral could not use, by reason",
            m.bad_events.clone(),
        );
        registry.register(
            "corral_node_state",
            "1 for the node's current state",
            m.node_state.clone(),
        );
        registry.register(
            "corral_ari_request_duration_seconds",
            "ARI REST latency per node",
            m.ari_latency.clone(),
        );
        registry.register(
            "corral_store_request_duration_seconds",
            "Store operation latency",
            m.store_latency.clone(),
        );
        registry.register(
            "corral_call_setup_duration_seconds",
            "From StasisStart to the channel in its bridge or the redirect sent",
            m.call_setup.clone(),
        );
        registry.register(
            "corral_api_request_duration_seconds",
            "HTTP API latency by route, method and status",
            m.api_latency.clone(),
        );
        registry.register(
            "corral_route_lookups",
            "Route-ahead lookups by the proxy, by outcome (answered, or the no-opinion reason)",
            m.route_lookups.clone(),
        );
        Self { registry, ..m }
    }

    /// A queue's waiting callers and agents by state.
    pub fn queue_state(
        &self,
        queue: &str,
        waiting: usize,
        agents: &std::collections::BTreeMap<&'static str, u32>,
    ) {
        self.queue_waiting
            .get_or_create(&QueueLabel {
                queue: queue.to_string(),
            })
            .set(waiting as i64);
        for state in ["available", "paused", "ringing", "busy", "wrap_up"] {
            self.queue_agents
                .get_or_create(&QueueStateLabel {
                    queue: queue.to_string(),
                    state: state.to_string(),
                })
                .set(i64::from(agents.get(state).copied().unwrap_or(0)));
        }
    }

    /// One queue caller's outcome.
    pub fn queue_outcome(&self, queue: &str, outcome: &str) {
        self.queue_callers
            .get_or_create(&QueueStateLabel {
                queue: queue.to_string(),
                state: outcome.to_string(),
            })
            .inc();
    }

    /// A static member did not take an offered caller.
    pub fn queue_offer(&self, queue: &str, outcome: &str) {
        self.queue_offers
            .get_or_create(&QueueStateLabel {
                queue: queue.to_string(),
                state: outcome.to_string(),
            })
            .inc();
    }

    /// Queue callers lost with their node.
    pub fn queue_lost(&self, queue: &str, n: u64) {
        self.queue_callers
            .get_or_create(&QueueStateLabel {
                queue: queue.to_string(),
                state: "lost".to_string(),
            })
            .inc_by(n);
    }

    /// An answered caller's wait.
    pub fn queue_wait(&self, queue: &str, waited: Duration) {
        self.queue_wait
            .get_or_create(&QueueLabel {
                queue: queue.to_string(),
            })
            .observe(waited.as_secs_f64());
    }

    /// From a free agent and a waiting caller to both bridged.
    pub fn queue_connect(&self, took: Duration) {
        self.queue_connect.observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The headline counts now.
    pub fn snapshot(&self) -> TotalsSnapshot {
        let t = &self.totals;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TotalsSnapshot {
            arrivals: g(&t.arrivals),
            joined: g(&t.joined),
            redirected: g(&t.redirected),
            confirmed: g(&t.confirmed),
            timed_out: g(&t.timed_out),
            splits: g(&t.splits),
            degraded: g(&t.degraded),
            released: g(&t.released),
        }
    }

    fn no(node: &NodeId, outcome: &str) -> NodeOutcome {
        NodeOutcome {
            node: node.to_string(),
            outcome: outcome.to_string(),
        }
    }

    /// A call entered the app on `node`.
    pub fn arrival(&self, node: &NodeId, kind: &str) {
        self.totals.arrivals.fetch_add(1, Ordering::Relaxed);
        self.arrivals.get_or_create(&Self::no(node, kind)).inc();
    }

    /// A call joined its room's bridge on `node`.
    pub fn joined(&self, node: &NodeId, how: JoinKind) {
        self.totals.joined.fetch_add(1, Ordering::Relaxed);
        match how {
            JoinKind::Degraded => {
                self.totals.degraded.fetch_add(1, Ordering::Relaxed);
            }
            JoinKind::Split | JoinKind::Direct | JoinKind::Token | JoinKind::Queue => {}
        }
        self.joins
            .get_or_create(&Self::no(node, how.as_str()))
            .inc();
    }

    /// A room was placed on `node`.
    pub fn placed(&self, node: &NodeId) {
        self.placements
            .get_or_create(&NodeLabel {
                node: node.to_string(),
            })
            .inc();
    }

    /// A redirect from `node` reached `outcome`.
    pub fn redirect(&self, node: &NodeId, outcome: RedirectOutcome) {
        let t = &self.totals;
        match outcome {
            RedirectOutcome::Sent => t.redirected.fetch_add(1, Ordering::Relaxed),
            RedirectOutcome::Confirmed => t.confirmed.fetch_add(1, Ordering::Relaxed),
            RedirectOutcome::TimedOut => t.timed_out.fetch_add(1, Ordering::Relaxed),
            RedirectOutcome::Failed => 0,
        };
        self.redirects
            .get_or_create(&Self::no(node, outcome.as_str()))
            .inc();
    }

    /// A token event on `node`.
    pub fn token(&self, node: &NodeId, outcome: TokenOutcome) {
        self.tokens
            .get_or_create(&Self::no(node, outcome.as_str()))
            .inc();
    }

    /// A degraded decision on `node` for `reason` (the join itself is
    /// counted by [`Metrics::joined`]).
    pub fn degraded(&self, node: &NodeId, reason: &str) {
        self.degraded.get_or_create(&Self::no(node, reason)).inc();
    }

    /// A split was detected on `node` (its stray calls are there): counted
    /// once per split, however it was made (a join past the hop limit, a
    /// resync finding calls on a node that does not own their room, or a
    /// room's calls in two bridges of one node).
    pub fn split_detected(&self, node: &NodeId) {
        self.totals.splits.fetch_add(1, Ordering::Relaxed);
        self.splits_detected
            .get_or_create(&NodeLabel {
                node: node.to_string(),
            })
            .inc();
    }

    /// A stray call's move on `node` failed (its token never arrived).
    pub fn heal_move_failed(&self, node: &NodeId) {
        self.heal_moves_failed
            .get_or_create(&NodeLabel {
                node: node.to_string(),
            })
            .inc();
    }

    /// A split healed after `lasted`.
    pub fn split_healed(&self, node: &NodeId, lasted: Duration) {
        self.splits_healed
            .get_or_create(&NodeLabel {
                node: node.to_string(),
            })
            .inc();
        self.split_duration.observe(lasted.as_secs_f64());
    }

    /// A route-ahead lookup answered (`answered`) or not (the reason).
    pub fn route_lookup(&self, outcome: &str) {
        self.route_lookups
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// A room was released (`empty`, `node_down`, `new_incarnation`).
    pub fn released(&self, node: &NodeId, reason: &str, count: u64) {
        self.totals.released.fetch_add(count, Ordering::Relaxed);
        self.released
            .get_or_create(&Self::no(node, reason))
            .inc_by(count);
    }

    /// An event corral could not use.
    pub fn bad_event(&self, node: &NodeId, reason: &str) {
        self.bad_events.get_or_create(&Self::no(node, reason)).inc();
    }

    /// The node's state now.
    pub fn node_state(&self, node: &NodeId, state: NodeState) {
        for s in [NodeState::Up, NodeState::Draining, NodeState::Down] {
            let label = NodeStateLabel {
                node: node.to_string(),
                state: s.as_str().to_string(),
            };
            self.node_state
                .get_or_create(&label)
                .set(i64::from(s == state));
        }
    }

    /// One ARI REST round trip.
    pub fn ari_latency(&self, node: &NodeId, took: Duration) {
        self.ari_latency
            .get_or_create(&NodeLabel {
                node: node.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// One store operation.
    pub fn store_latency(&self, op: &str, took: Duration) {
        self.store_latency
            .get_or_create(&OpLabel { op: op.to_string() })
            .observe(took.as_secs_f64());
    }

    /// From `StasisStart` to the call in its bridge or its redirect sent.
    pub fn call_setup(&self, took: Duration) {
        self.call_setup.observe(took.as_secs_f64());
        if let Ok(mut s) = self.samples.lock()
            && let Some(v) = s.as_mut()
        {
            v.push(took.as_micros().min(u128::from(u32::MAX)) as u32);
        }
    }

    /// One HTTP API request on `route` (the matched template).
    pub fn api_request(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.api_latency
            .get_or_create(&ApiLabel {
                route: route.to_owned(),
                method: method.to_owned(),
                status: status.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Starts keeping every call-setup time (in µs) for exact percentiles
    /// (benchmarks only: memory grows with calls).
    pub fn keep_samples(&self) {
        if let Ok(mut s) = self.samples.lock() {
            *s = Some(Vec::new());
        }
    }

    /// Takes the call-setup samples kept so far.
    pub fn take_samples(&self) -> Vec<u32> {
        self.samples
            .lock()
            .ok()
            .and_then(|mut s| s.as_mut().map(std::mem::take))
            .unwrap_or_default()
    }
}

/// Shared handle.
pub type SharedMetrics = Arc<Metrics>;
