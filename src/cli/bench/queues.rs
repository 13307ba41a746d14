//! `corral bench queues`: how many callers per second one queue serves, and
//! how soon an agent that becomes free is bridged with the next caller, on
//! in-process simulated nodes, against a baseline measured in the same run.
//!
//! Each run has two phases.
//! - Untimed: the callers arrive (for corral on random nodes, seeded; it
//!   brings them to the queue's node) and wait in the queue's holding
//!   bridge; no agent is logged in yet, so the whole backlog waits.
//! - Timed: the call-in agents log in. Each time a caller is bridged with an
//!   agent (`FarmEvent::QueueConnected`), the bench hangs the caller up at
//!   once (talk time 0), which frees the agent (wrap-up 0) for the next
//!   caller. The phase ends when every caller was connected and hung up.
//!
//! Figures: callers per second over the timed phase; and, for each hangup
//! that frees an agent while callers still wait, the time from the bench's
//! `Instant` just before its `DELETE /sim/calls/{call_id}` to the
//! `QueueConnected` event naming that agent: "agent free → next caller
//! bridged", at µs resolution.
//!
//! The baseline is a trivial Stasis app on one node doing the same ARI work
//! per pairing with no store and no redirect: callers and agents are
//! answered and put in a holding bridge; a pair gets a mixing bridge and
//! both are added; when the caller hangs up the pair's bridge is destroyed
//! and the agent goes back to the holding bridge. It emits the same event
//! to the same measuring loop, so the difference is corral's overhead.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::{RngExt, SeedableRng};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::calls::{ari_config, net, node_specs, percentile};
use crate::ari::AriNode;
use crate::ari::events::EventKind;
use crate::ari::rest::BridgeType;
use crate::ari::stream::{self, StreamConfig, StreamItem};
use crate::controller::{self, Controller, FarmEvent, QueueConfig};
use crate::domain::{AgentId, BridgeId, ChannelId, RoomKey, RoomKind, RoomName};
use crate::names::BridgeNames;
use crate::queue::{AgentState, QueueSettings};
use crate::sim::{SimConfig, SimNode};
use crate::store;
use crate::telemetry::Metrics;

/// The queue the bench uses (`queue-bench`, `agent-bench-a<k>`).
const QUEUE: &str = "bench";

/// Calls the load generator has in flight while the callers arrive.
const IN_FLIGHT: usize = 64;

/// No caller bridged for this long: the run failed.
const STALL: Duration = Duration::from_secs(20);

/// Flags of `corral bench queues`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Simulated nodes; corral's callers and agents land on random ones.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Call-in agents logged in to the queue.
    #[arg(long, default_value_t = 10)]
    pub agents: usize,
    /// Callers per run, all waiting before the agents log in.
    #[arg(long, default_value_t = 2000)]
    pub callers: usize,
    /// Runs, each a baseline then corral; each is printed, then the median.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Run corral on this Redis (else the in-memory store).
    #[arg(long)]
    pub redis: Option<String>,
    /// Seed of the landing nodes of corral's callers and agents (run `r`
    /// uses `seed + r`).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// One side of one run.
struct Figures {
    callers_per_s: f64,
    /// Agent free → next caller bridged.
    p50_us: u32,
    p99_us: u32,
    /// How many such gaps were measured.
    samples: usize,
}

/// What corral reported about its own run.
struct CorralNotes {
    /// Redirects sent (callers and agents that landed elsewhere).
    redirected: u64,
    /// The queue's document with the whole backlog waiting, in bytes.
    doc_bytes: (usize, usize),
    /// corral's own `connect_ms` (wall-clock ms), p50 and p99.
    engine_ms: (u32, u32),
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.nodes >= 1 && args.agents >= 1 && args.callers >= 1 && args.runs >= 1,
        "--nodes, --agents, --callers and --runs must be at least 1"
    );
    println!(
        "bench queues: {} nodes, 1 queue, {} agents, {} callers waiting before the agents log in, \
         talk time 0, wrap-up 0; {} runs; store {}; seed {}",
        args.nodes,
        args.agents,
        args.callers,
        args.runs,
        if args.redis.is_some() {
            "redis"
        } else {
            "memory"
        },
        args.seed
    );
    let mut sims = Vec::new();
    for i in 1..=args.nodes {
        let cfg = SimConfig::new(format!("n{i}"));
        sims.push(net()?.spawn(SimNode::start(cfg)).await??);
    }
    println!();
    println!("run  side        callers/s   agent free -> next caller bridged (p50, p99)");
    let mut rows = Vec::new();
    for run in 1..=args.runs as u64 {
        restart(&sims).await?;
        let base = baseline(&sims[0], &args, run)
            .await
            .with_context(|| format!("baseline, run {run}"))?;
        print_side(&run.to_string(), "baseline", &base);
        restart(&sims).await?;
        let (corral, notes) = with_corral(&sims, &args, run)
            .await
            .with_context(|| format!("corral, run {run}"))?;
        print_side(&run.to_string(), "corral", &corral);
        println!(
            "     corral/baseline: throughput {:.2}, p50 {:.1}x, p99 {:.1}x ({} gaps measured)",
            corral.callers_per_s / base.callers_per_s.max(f64::MIN_POSITIVE),
            f64::from(corral.p50_us) / f64::from(base.p50_us.max(1)),
            f64::from(corral.p99_us) / f64::from(base.p99_us.max(1)),
            corral.samples,
        );
        println!(
            "     corral: {} redirects; queue document {} B + {} KB of caller entries with the backlog waiting; \
             its own connect_ms p50 {} / p99 {}",
            notes.redirected,
            notes.doc_bytes.0,
            notes.doc_bytes.1 / 1024,
            notes.engine_ms.0,
            notes.engine_ms.1,
        );
        rows.push((base, corral));
    }
    let med = |f: &dyn Fn(&(Figures, Figures)) -> f64| median(rows.iter().map(f).collect());
    let base = Figures {
        callers_per_s: med(&|r| r.0.callers_per_s),
        p50_us: med(&|r| f64::from(r.0.p50_us)) as u32,
        p99_us: med(&|r| f64::from(r.0.p99_us)) as u32,
        samples: 0,
    };
    let corral = Figures {
        callers_per_s: med(&|r| r.1.callers_per_s),
        p50_us: med(&|r| f64::from(r.1.p50_us)) as u32,
        p99_us: med(&|r| f64::from(r.1.p99_us)) as u32,
        samples: 0,
    };
    println!();
    print_side("med", "baseline", &base);
    print_side("med", "corral", &corral);
    println!(
        "median corral/baseline: throughput {:.2}; agent free -> next caller p50 {:.1}x, p99 {:.1}x",
        corral.callers_per_s / base.callers_per_s.max(f64::MIN_POSITIVE),
        f64::from(corral.p50_us) / f64::from(base.p50_us.max(1)),
        f64::from(corral.p99_us) / f64::from(base.p99_us.max(1)),
    );
    Ok(())
}

fn print_side(run: &str, side: &str, f: &Figures) {
    println!(
        "{run:<4} {side:<10} {:>10.0}   {:>8.2} ms  {:>8.2} ms",
        f.callers_per_s,
        f64::from(f.p50_us) / 1000.0,
        f64::from(f.p99_us) / 1000.0
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Restarts every node: each side of each run starts on empty nodes.
async fn restart(sims: &[SimNode]) -> anyhow::Result<()> {
    for s in sims {
        let s = s.clone();
        net()?
            .spawn(async move { s.restart().await })
            .await?
            .with_context(|| "a simulated node did not restart")?;
    }
    Ok(())
}

/// One inbound call of the load generator.
struct Call {
    /// `http://node/sim/calls`.
    url: String,
    exten: String,
    caller: String,
    call_id: String,
}

/// Places `calls` on the farm's runtime, [`IN_FLIGHT`] at a time; returns
/// once every node said 201.
async fn place(calls: Vec<Call>) -> anyhow::Result<()> {
    net()?
        .spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(IN_FLIGHT)
                .tcp_nodelay(true)
                .build()?;
            let sem = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
            let mut tasks = tokio::task::JoinSet::new();
            for c in calls {
                let permit = sem.clone().acquire_owned().await?;
                let http = http.clone();
                tasks.spawn(async move {
                    let body = serde_json::json!({"exten": c.exten, "caller": c.caller, "call_id": c.call_id});
                    let resp = http
                        .post(&c.url)
                        .json(&body)
                        .send()
                        .await
                        .with_context(|| format!("POST {}", c.url))?;
                    drop(permit);
                    anyhow::ensure!(
                        resp.status().as_u16() == 201,
                        "call {} refused: {}",
                        c.call_id,
                        resp.status()
                    );
                    Ok(())
                });
                while let Some(r) = tasks.try_join_next() {
                    r??;
                }
            }
            while let Some(r) = tasks.join_next().await {
                r??;
            }
            Ok(())
        })
        .await?
}

/// Channel id → SIP call id of every call on `node` (`GET /sim/calls`).
async fn call_ids(node: &SimNode) -> anyhow::Result<HashMap<String, String>> {
    let url = format!("{}/sim/calls", node.base_url());
    net()?
        .spawn(async move {
            let calls: Vec<serde_json::Value> = reqwest::get(&url)
                .await
                .with_context(|| format!("GET {url}"))?
                .json()
                .await
                .with_context(|| format!("GET {url}: not a list of calls"))?;
            Ok(calls
                .iter()
                .filter_map(|c| {
                    Some((
                        c["channel_id"].as_str()?.to_string(),
                        c["call_id"].as_str()?.to_string(),
                    ))
                })
                .collect())
        })
        .await?
}

async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    while !done().await {
        anyhow::ensure!(Instant::now() < until, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// What the timed phase measured.
struct Drained {
    elapsed: Duration,
    /// Agent free → next caller bridged, µs.
    gaps_us: Vec<u32>,
    /// The `connect_ms` of each event.
    engine_ms: Vec<u64>,
}

impl Drained {
    fn figures(mut self, callers: usize) -> Figures {
        self.gaps_us.sort_unstable();
        Figures {
            callers_per_s: callers as f64 / self.elapsed.as_secs_f64(),
            p50_us: percentile(&self.gaps_us, 0.50),
            p99_us: percentile(&self.gaps_us, 0.99),
            samples: self.gaps_us.len(),
        }
    }
}

/// The timed phase: logs `agents` in, then hangs up each caller as soon as
/// `events` says it was bridged, until `callers` were; `call_ids` maps the
/// callers' channels on `node` (the queue's node) to their call ids.
async fn drain(
    mut events: broadcast::Receiver<FarmEvent>,
    node: &SimNode,
    call_ids: HashMap<String, String>,
    callers: usize,
    agents: Vec<Call>,
) -> anyhow::Result<Drained> {
    let queue = RoomName::new(QUEUE)?;
    let net = net()?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(32)
        .tcp_nodelay(true)
        .build()?;
    let hangup_url = format!("{}/sim/calls/", node.base_url());
    // When each agent was last freed (its caller hung up), until its next
    // caller is bridged.
    let freed: Arc<Mutex<HashMap<AgentId, Instant>>> = Arc::default();
    let mut hangups = tokio::task::JoinSet::new();
    let mut gaps_us = Vec::with_capacity(callers);
    let mut engine_ms = Vec::with_capacity(callers);
    let started = Instant::now();
    let login = crate::shutdown::OwnedTask::spawn(place(agents));
    let mut connected = 0;
    while connected < callers {
        let ev = match tokio::time::timeout(STALL, events.recv()).await {
            Ok(Ok(ev)) => ev,
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => anyhow::bail!(
                "the bench fell {n} events behind the event stream (after {connected} of {callers} callers)"
            ),
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                anyhow::bail!("the event stream closed")
            }
            Err(_) => {
                anyhow::bail!("no caller bridged for {STALL:?} ({connected} of {callers} so far)")
            }
        };
        let FarmEvent::QueueConnected {
            queue: q,
            caller,
            agent,
            connect_ms,
            ..
        } = ev
        else {
            continue;
        };
        if q != queue {
            continue;
        }
        let at = Instant::now();
        if let Some(t0) = lock(&freed).remove(&agent) {
            gaps_us.push(at.saturating_duration_since(t0).as_micros() as u32);
        }
        engine_ms.push(connect_ms);
        connected += 1;
        let call_id = call_ids
            .get(caller.as_str())
            .with_context(|| format!("caller channel {caller} is not one the bench placed"))?;
        let url = format!("{hangup_url}{call_id}");
        let http = http.clone();
        let freed = freed.clone();
        hangups.spawn_on(
            async move {
                lock(&freed).insert(agent, Instant::now());
                let resp = http
                    .delete(&url)
                    .send()
                    .await
                    .with_context(|| format!("DELETE {url}"))?;
                anyhow::ensure!(
                    resp.status().as_u16() == 204,
                    "DELETE {url}: {}",
                    resp.status()
                );
                Ok::<(), anyhow::Error>(())
            },
            net.handle(),
        );
        while let Some(r) = hangups.try_join_next() {
            r??;
        }
    }
    while let Some(r) = hangups.join_next().await {
        r??;
    }
    let elapsed = started.elapsed();
    login.await??;
    Ok(Drained {
        elapsed,
        gaps_us,
        engine_ms,
    })
}

fn agent_calls(
    sims: &[SimNode],
    agents: usize,
    tag: &str,
    mut at: impl FnMut() -> usize,
) -> Vec<Call> {
    (0..agents)
        .map(|k| Call {
            url: format!("{}/sim/calls", sims[at()].base_url()),
            exten: format!("agent-{QUEUE}-a{k}"),
            caller: format!("a{k}"),
            call_id: format!("{tag}a{k}"),
        })
        .collect()
}

fn caller_calls(
    sims: &[SimNode],
    callers: usize,
    tag: &str,
    mut at: impl FnMut() -> usize,
) -> Vec<Call> {
    (0..callers)
        .map(|i| Call {
            url: format!("{}/sim/calls", sims[at()].base_url()),
            exten: format!("queue-{QUEUE}"),
            caller: format!("c{i}"),
            call_id: format!("{tag}c{i}"),
        })
        .collect()
}

// ---- the baseline -------------------------------------------------------

/// The baseline app's whole state: a minimal queue in memory.
#[derive(Default)]
struct BaseQueue {
    /// Callers on hold, oldest first.
    waiting: VecDeque<String>,
    /// (agent, its channel) on hold, longest idle first.
    free: VecDeque<(String, String)>,
    /// Caller channel → (agent, agent channel, pair bridge).
    pairs: HashMap<String, (String, String, String)>,
    next_pair: u64,
}

/// A trivial queue app on one node: no store, no redirect.
struct BaseApp {
    ari: AriNode,
    queue: RoomName,
    holding: BridgeId,
    state: Mutex<BaseQueue>,
    events: broadcast::Sender<FarmEvent>,
    failures: AtomicU64,
}

impl BaseApp {
    async fn on_event(self: Arc<Self>, ev: EventKind) {
        match ev {
            EventKind::StasisStart { args, channel } => {
                let who = match (args.first().map(String::as_str), args.get(2)) {
                    (Some("queue"), _) => None,
                    (Some("agent"), Some(agent)) => Some(agent.clone()),
                    _ => return,
                };
                let Ok(chan) = ChannelId::new(channel.id.as_str()) else {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let ok = self.ari.answer(&chan).await.is_ok()
                    && self
                        .ari
                        .add_channel(&self.holding, &chan, None)
                        .await
                        .is_ok();
                if !ok {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                {
                    let mut st = lock(&self.state);
                    match who {
                        None => st.waiting.push_back(channel.id),
                        Some(agent) => st.free.push_back((agent, channel.id)),
                    }
                }
                self.pair().await;
            }
            EventKind::StasisEnd { channel } => {
                let pair = lock(&self.state).pairs.remove(&channel.id);
                let Some((agent, agent_chan, bridge)) = pair else {
                    return;
                };
                let (Ok(bridge_id), Ok(agent_id)) = (
                    BridgeId::new(bridge.as_str()),
                    ChannelId::new(agent_chan.as_str()),
                ) else {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let ok = self.ari.destroy_bridge(&bridge_id).await.is_ok()
                    && self
                        .ari
                        .add_channel(&self.holding, &agent_id, None)
                        .await
                        .is_ok();
                if !ok {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                lock(&self.state).free.push_back((agent, agent_chan));
                self.pair().await;
            }
            _ => {}
        }
    }

    /// Pairs the oldest callers with the longest-idle agents, connecting the
    /// pairs concurrently (inside the event's task, so they are owned by it).
    async fn pair(&self) {
        let mut todo = Vec::new();
        {
            let mut st = lock(&self.state);
            while !st.waiting.is_empty() && !st.free.is_empty() {
                let (Some(caller), Some((agent, chan))) =
                    (st.waiting.pop_front(), st.free.pop_front())
                else {
                    break;
                };
                st.next_pair += 1;
                todo.push((caller, agent, chan, st.next_pair));
            }
        }
        futures_util::future::join_all(
            todo.into_iter()
                .map(|(caller, agent, chan, n)| self.connect(caller, agent, chan, n)),
        )
        .await;
    }

    async fn connect(&self, caller: String, agent: String, agent_chan: String, n: u64) {
        let id = format!("base-pair-{n}");
        let name = AgentId::new(agent.as_str())
            .map(|a| {
                BridgeNames::default()
                    .pair_bridge(&self.queue, "base", &a)
                    .1
            })
            .unwrap_or_default();
        let (Ok(bridge), Ok(caller_chan), Ok(agent_leg)) = (
            BridgeId::new(id.as_str()),
            ChannelId::new(caller.as_str()),
            ChannelId::new(agent_chan.as_str()),
        ) else {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let ok = self
            .ari
            .create_bridge(&bridge, BridgeType::Mixing, &name)
            .await
            .is_ok()
            && self
                .ari
                .add_channel(&bridge, &caller_chan, None)
                .await
                .is_ok()
            && self
                .ari
                .add_channel(&bridge, &agent_leg, None)
                .await
                .is_ok();
        let ids = ChannelId::new(caller.as_str())
            .ok()
            .zip(AgentId::new(agent.as_str()).ok());
        let (true, Some((caller_id, agent_id))) = (ok, ids) else {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return;
        };
        lock(&self.state)
            .pairs
            .insert(caller, (agent, agent_chan, id));
        let _ = self.events.send(FarmEvent::QueueConnected {
            queue: self.queue.clone(),
            caller: caller_id,
            agent: agent_id,
            waited_ms: 0,
            connect_ms: 0,
        });
    }
}

/// One run of the baseline on `node`: every caller and agent lands there.
async fn baseline(node: &SimNode, args: &Args, run: u64) -> anyhow::Result<Figures> {
    let ari = AriNode::new(ari_config(node)?, Arc::new(Metrics::new()))?;
    let (events, _) = broadcast::channel(controller::EVENT_BACKLOG);
    let app = Arc::new(BaseApp {
        ari: ari.clone(),
        queue: RoomName::new(QUEUE)?,
        holding: BridgeId::new(format!("base-queue-{QUEUE}"))?,
        state: Mutex::default(),
        events,
        failures: AtomicU64::new(0),
    });
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let (tx, mut rx) = mpsc::channel(stream::EVENT_QUEUE);
    let _stream = crate::shutdown::OwnedTask::spawn(stream::run(
        ari.clone(),
        StreamConfig::default(),
        tx,
        cancel.clone(),
    ));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let _reader = {
        let app = app.clone();
        crate::shutdown::OwnedTask::spawn(async move {
            let mut ready = Some(ready_tx);
            // One task per event, owned by this reader (reaped as they end).
            let mut handlers = tokio::task::JoinSet::new();
            while let Some(item) = rx.recv().await {
                while handlers.try_join_next().is_some() {}
                match item {
                    StreamItem::Connected => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    StreamItem::Event(ev) => {
                        handlers.spawn(app.clone().on_event(ev.kind));
                    }
                    _ => {}
                }
            }
        })
    };
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .context("the baseline app did not connect")?
        .context("the baseline app's stream stopped")?;
    ari.create_bridge(
        &app.holding,
        BridgeType::Holding,
        &BridgeNames::default().bridge_name(&RoomKey::new(RoomKind::Queue, RoomName::new(QUEUE)?)),
    )
    .await
    .context("the baseline's holding bridge")?;

    let one = std::slice::from_ref(node);
    place(caller_calls(one, args.callers, &format!("b{run}"), || 0)).await?;
    wait_until(Duration::from_secs(120), "baseline callers on hold", || {
        let n = lock(&app.state).waiting.len();
        async move { n >= args.callers }
    })
    .await
    .with_context(|| {
        format!(
            "{} of {} callers on hold; {} ARI calls failed",
            lock(&app.state).waiting.len(),
            args.callers,
            app.failures.load(Ordering::Relaxed)
        )
    })?;
    let ids = call_ids(node).await?;
    let drained = drain(
        app.events.subscribe(),
        node,
        ids,
        args.callers,
        agent_calls(one, args.agents, &format!("b{run}"), || 0),
    )
    .await?;
    wait_until(
        Duration::from_secs(10),
        "baseline agents back on hold",
        || {
            let st = lock(&app.state);
            let done = st.free.len() == args.agents && st.waiting.is_empty() && st.pairs.is_empty();
            async move { done }
        },
    )
    .await?;
    let failures = app.failures.load(Ordering::Relaxed);
    anyhow::ensure!(
        failures == 0,
        "{failures} ARI calls of the baseline app failed"
    );
    Ok(drained.figures(args.callers))
}

// ---- corral -------------------------------------------------------------

/// One run of corral: callers and agents land on random nodes.
async fn with_corral(
    sims: &[SimNode],
    args: &Args,
    run: u64,
) -> anyhow::Result<(Figures, CorralNotes)> {
    let store = store::connect(&store::Config {
        farm: format!("benchq{}r{run}", std::process::id()),
        redis_url: args.redis.clone(),
        ..store::Config::default()
    })
    .await
    .context("cannot start the store")?;
    let metrics = Arc::new(Metrics::new());
    let specs = node_specs(sims)?;
    let cfg = controller::Config {
        seed: args.seed.wrapping_add(run),
        reconcile_interval: Duration::from_secs(3600),
        linger: Duration::from_secs(60),
        queues: QueueConfig {
            defaults: Arc::new(QueueSettings {
                wrapup: Duration::ZERO,
                ..QueueSettings::default()
            }),
            ..QueueConfig::default()
        },
        ..controller::Config::default()
    };
    let ctrl = Controller::new(cfg, store, specs, metrics.clone())?;
    let shutdown = CancellationToken::new();
    let handle = {
        let ctrl = ctrl.clone();
        let s = shutdown.clone();
        crate::shutdown::OwnedTask::spawn(async move { ctrl.run(s).await })
    };
    let result = corral_phases(sims, args, run, &ctrl).await;
    shutdown.cancel();
    let _ = handle.await;
    if let Ok(path) = std::env::var("CORRAL_BENCH_METRICS") {
        std::fs::write(&path, metrics.encode()).with_context(|| format!("cannot write {path}"))?;
    }
    let (figures, mut notes) = result?;
    notes.redirected = metrics.snapshot().redirected;
    Ok((figures, notes))
}

async fn corral_phases(
    sims: &[SimNode],
    args: &Args,
    run: u64,
    ctrl: &Controller,
) -> anyhow::Result<(Figures, CorralNotes)> {
    wait_until(Duration::from_secs(10), "nodes streaming", || {
        let up = ctrl.nodes_streaming().iter().all(|(_, up)| *up);
        async move { up }
    })
    .await?;
    let queue = RoomName::new(QUEUE)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed.wrapping_add(run));
    let n = sims.len();
    place(caller_calls(sims, args.callers, &format!("r{run}"), || {
        rng.random_range(0..n)
    }))
    .await?;
    // Every caller waits before the agents log in: the whole backlog.
    let until = Instant::now() + Duration::from_secs(120);
    let (doc_bytes, node) = loop {
        if let Ok(Some((st, Some(node)))) = ctrl.queue(&queue).await
            && st.callers.len() >= args.callers
        {
            let entries: usize = st
                .callers
                .iter()
                .map(|c| crate::queue::QueueState::caller_to_entry(c).len())
                .sum();
            break ((st.to_doc().len(), entries), node);
        }
        anyhow::ensure!(
            Instant::now() < until,
            "the callers were not all waiting in corral's queue within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let at = sims
        .iter()
        .position(|s| s.id() == node.as_str())
        .with_context(|| format!("the queue is on an unknown node {node}"))?;
    let ids = call_ids(&sims[at]).await?;
    let agents = agent_calls(sims, args.agents, &format!("r{run}"), || {
        rng.random_range(0..n)
    });
    let drained = drain(ctrl.subscribe(), &sims[at], ids, args.callers, agents).await?;
    wait_until(Duration::from_secs(10), "corral's agents free again", || {
        let ctrl = ctrl.clone();
        let queue = queue.clone();
        async move {
            matches!(ctrl.queue(&queue).await, Ok(Some((st, _)))
                if st.callers.is_empty()
                    && st.answered == args.callers as u64
                    && st.agents.len() == args.agents
                    && st.agents.values().all(|a| a.activity == AgentState::Available && !a.returning))
        }
    })
    .await?;
    let mut engine: Vec<u32> = drained
        .engine_ms
        .iter()
        .map(|&ms| u32::try_from(ms).unwrap_or(u32::MAX))
        .collect();
    engine.sort_unstable();
    let notes = CorralNotes {
        redirected: 0,
        doc_bytes,
        engine_ms: (percentile(&engine, 0.50), percentile(&engine, 0.99)),
    };
    Ok((drained.figures(args.callers), notes))
}
