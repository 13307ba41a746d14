//! `corral bench calls`: the call path's throughput and latency on
//! in-process simulated nodes, against a baseline measured in the same run.
//!
//! Two baselines run first, on the same nodes with the same calls. The
//! first is a trivial Stasis app doing the join's ARI work per call (answer,
//! create the room's bridge, add the channel) on the node where the call
//! landed, with no store, no policy and no redirect: the floor that the
//! simulated nodes and the loopback impose. The second is the same app
//! doing the same ARI work as corral, redirects included: a room lives where
//! its first call landed, kept in process, and a call landing elsewhere is
//! redirected there with a token kept in process (the farm then carries the
//! redirected call to its new node, as it does for corral). corral then runs;
//! against the second, the difference is what corral's store and
//! bookkeeping cost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::{RngExt, SeedableRng};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::redis_stats::RedisCounters;
use crate::ari::AriNode;
use crate::ari::events::EventKind;
use crate::ari::rest::BridgeType;
use crate::ari::stream::{self, StreamConfig, StreamItem};
use crate::controller::{self, Controller, NodeSpec};
use crate::domain::{BridgeId, ChannelId, NodeId, RoomKey};
use crate::names::BridgeNames;
use crate::sim::{SimConfig, SimNode};
use crate::store;
use crate::telemetry::Metrics;

/// Flags of `corral bench calls`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Simulated nodes.
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    /// Calls per run.
    #[arg(long, default_value_t = 4000)]
    pub calls: usize,
    /// Conference rooms the calls go to.
    #[arg(long, default_value_t = 400)]
    pub rooms: usize,
    /// Calls in flight from the load generator.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Calls per second of the paced run that measures latency (below
    /// saturation, so percentiles show work, not queueing).
    #[arg(long, default_value_t = 400)]
    pub rate: u32,
    /// Run corral on this Redis (else the in-memory store).
    #[arg(long)]
    pub redis: Option<String>,
    /// Seed of the room choice.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

struct RunFigures {
    /// Calls redirected (the redirecting baseline only).
    redirected: u64,
    calls_per_s: f64,
    p50_us: u32,
    p99_us: u32,
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: Args) -> anyhow::Result<()> {
    println!(
        "bench calls: {} nodes, {} calls into {} rooms, {} in flight, store {}",
        args.nodes,
        args.calls,
        args.rooms,
        args.concurrency,
        if args.redis.is_some() {
            "redis"
        } else {
            "memory"
        }
    );
    let mut sims = Vec::new();
    for i in 1..=args.nodes.max(1) {
        let cfg = SimConfig::new(format!("n{i}"));
        sims.push(net()?.spawn(SimNode::start(cfg)).await??);
    }
    let base = baseline(&sims, &args, Baseline::Local).await?;
    restart_all(&sims).await?;
    let same = baseline(&sims, &args, Baseline::Redirecting).await?;
    restart_all(&sims).await?;
    let (corral, t, counters) = with_corral(&sims, &args).await?;
    println!();
    println!(
        "                      calls/s    p50 setup   p99 setup   (throughput closed-loop; setup times paced at {}/s)",
        args.rate
    );
    println!(
        "baseline (local app) {:>9.0}   {:>7.2} ms  {:>7.2} ms",
        base.calls_per_s,
        f64::from(base.p50_us) / 1000.0,
        f64::from(base.p99_us) / 1000.0
    );
    println!(
        "baseline, redirects  {:>9.0}   {:>7.2} ms  {:>7.2} ms   (the same app redirecting like corral, no store: {:.1}% redirected)",
        same.calls_per_s,
        f64::from(same.p50_us) / 1000.0,
        f64::from(same.p99_us) / 1000.0,
        100.0 * same.redirected as f64 / (args.calls + paced_count(&args)).max(1) as f64
    );
    println!(
        "corral               {:>9.0}   {:>7.2} ms  {:>7.2} ms",
        corral.calls_per_s,
        f64::from(corral.p50_us) / 1000.0,
        f64::from(corral.p99_us) / 1000.0
    );
    println!(
        "ratio corral/baseline throughput {:.2}; p99 overhead {:+.2} ms",
        corral.calls_per_s / base.calls_per_s.max(1.0),
        (f64::from(corral.p99_us) - f64::from(base.p99_us)) / 1000.0
    );
    println!(
        "ratio corral/baseline with the same redirects {:.2}; p99 overhead {:+.2} ms",
        corral.calls_per_s / same.calls_per_s.max(1.0),
        (f64::from(corral.p99_us) - f64::from(same.p99_us)) / 1000.0
    );
    println!(
        "redirected {:.1}% of calls ({} of {}); confirmed {}; splits {}; degraded {}",
        100.0 * t.redirected as f64 / t.joined.max(1) as f64,
        t.redirected,
        t.joined,
        t.confirmed,
        t.splits,
        t.degraded
    );
    if let Some(c) = counters {
        // Every call of both phases, as Redis saw them.
        let calls = (args.calls + paced_count(&args)) as u64;
        c.print(calls, "call");
    }
    Ok(())
}

/// Restarts every simulated node (a clean farm for the next phase).
async fn restart_all(sims: &[SimNode]) -> anyhow::Result<()> {
    for s in sims {
        let s = s.clone();
        net()?.spawn(async move { s.restart().await }).await??;
    }
    Ok(())
}

/// Calls in the paced phase.
fn paced_count(args: &Args) -> usize {
    (args.rate as usize * 5).min(args.calls).max(1)
}

/// The runtime of the simulated nodes and the load generator: separate
/// worker threads, so corral's runtime is not flooded by the farm's own
/// tasks (in a real farm they are other machines).
pub(super) fn net() -> anyhow::Result<&'static tokio::runtime::Runtime> {
    static NET: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(rt) = NET.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sim-net")
        .enable_all()
        .build()
        .context("cannot start a runtime for the simulated farm")?;
    // A racing caller may have set it first: this one has no tasks yet,
    // and a runtime is shut down in the background (dropping one inside
    // async code would panic).
    if let Err(rt) = NET.set(rt) {
        rt.shutdown_background();
    }
    NET.get().context("the simulated farm's runtime is not set")
}

/// Runs [`load`] on the farm's runtime.
async fn load_on_net(
    sims: &[SimNode],
    args: &Args,
    tag: &str,
    count: usize,
    rate: Option<u32>,
) -> anyhow::Result<()> {
    let sims = sims.to_vec();
    let args = args.clone();
    let tag = tag.to_string();
    net()?
        .spawn(async move { load(&sims, &args, &tag, count, rate).await })
        .await?
}

/// Sends `count` calls round-robin over `sims`: as fast as `concurrency`
/// workers can (closed loop) when `rate` is `None`, else one every
/// `1/rate` s.
async fn load(
    sims: &[SimNode],
    args: &Args,
    tag: &str,
    count: usize,
    rate: Option<u32>,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let urls: Arc<Vec<String>> = Arc::new(
        sims.iter()
            .map(|s| format!("{}/sim/calls", s.base_url()))
            .collect(),
    );
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut tick = rate.map(|r| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(r.max(1))));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        let permit = sem.clone().acquire_owned().await?;
        let http = http.clone();
        let url = urls[i % urls.len()].clone();
        let room = rng.random_range(0..args.rooms.max(1));
        let body = serde_json::json!({"exten": format!("conf-r{room}"), "caller": "100", "call_id": format!("{tag}{i}")});
        tasks.spawn(async move {
            let resp = http.post(url).json(&body).send().await?;
            drop(permit);
            anyhow::ensure!(
                resp.status().as_u16() == 201,
                "call refused: {}",
                resp.status()
            );
            Ok::<(), anyhow::Error>(())
        });
        while let Some(r) = tasks.try_join_next() {
            r??;
        }
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

pub(super) fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn wait_until(deadline: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let until = Instant::now() + deadline;
    while !done() {
        anyhow::ensure!(
            Instant::now() < until,
            "calls did not all finish within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// Node specs for corral on the bench's simulated nodes (capacity high
/// enough that the policy never refuses a room).
pub(super) fn node_specs(sims: &[SimNode]) -> anyhow::Result<Vec<NodeSpec>> {
    sims.iter()
        .map(|s| {
            Ok(NodeSpec {
                ari: ari_config(s)?,
                sip_host: s.addr().to_string(),
                capacity: 100_000,
                max_rooms: None,
            })
        })
        .collect()
}

pub(super) fn ari_config(s: &SimNode) -> anyhow::Result<crate::ari::Config> {
    Ok(crate::ari::Config {
        node: NodeId::new(s.id())?,
        base_url: s.base_url(),
        username: SimConfig::DEFAULT_CREDENTIALS.into(),
        password: SimConfig::DEFAULT_CREDENTIALS.into(),
        app: crate::names::DEFAULT_APP.into(),
        request_timeout: Duration::from_secs(5),
    })
}

/// Which baseline app runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Baseline {
    /// Every call joins where it landed: answer, bridge per room, add.
    Local,
    /// The same ARI work as corral's call path without a store: a room
    /// lives where its first call landed (an in-process map), a call that
    /// lands elsewhere is redirected there with a token (an in-process
    /// map) through the same `redirect` and the same endpoint template,
    /// and the token's arrival joins like a local call.
    Redirecting,
}

/// The baseline's in-process placement: room → node index, token → room.
#[derive(Default)]
struct LocalPlacements {
    rooms: std::collections::HashMap<String, usize>,
    tokens: std::collections::HashMap<String, String>,
}

/// What the baseline does with one `StasisStart`.
enum BaselineStep {
    /// Join this room's bridge here.
    Join(String),
    /// Redirect with this token to the node at this SIP host.
    Redirect(crate::domain::TokenId, String),
}

/// A trivial local app: answer, bridge per room, add; with
/// [`Baseline::Redirecting`], also corral's redirects (no store).
async fn baseline(sims: &[SimNode], args: &Args, kind: Baseline) -> anyhow::Result<RunFigures> {
    let metrics = Arc::new(Metrics::new());
    let done = Arc::new(AtomicU64::new(0));
    let redirected = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(std::sync::Mutex::new(Vec::with_capacity(args.calls)));
    let placements = Arc::new(std::sync::Mutex::new(LocalPlacements::default()));
    let hosts: Arc<Vec<String>> = Arc::new(sims.iter().map(|s| s.addr().to_string()).collect());
    let cancel = CancellationToken::new();
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(sims.len());
    // The app's streams and readers, aborted when the baseline returns.
    let mut app = tokio::task::JoinSet::new();
    for (me, s) in sims.iter().enumerate() {
        let ari = AriNode::new(ari_config(s)?, metrics.clone())?;
        let (tx, mut rx) = mpsc::channel(crate::ari::stream::EVENT_QUEUE);
        app.spawn(stream::run(
            ari.clone(),
            StreamConfig::default(),
            tx,
            cancel.clone(),
        ));
        let done = done.clone();
        let redirected = redirected.clone();
        let samples = samples.clone();
        let ready = ready_tx.clone();
        let placements = placements.clone();
        let hosts = hosts.clone();
        app.spawn(async move {
            // One task per call, owned by this reader (reaped as they end).
            let mut answers = tokio::task::JoinSet::new();
            while let Some(item) = rx.recv().await {
                while answers.try_join_next().is_some() {}
                match item {
                    StreamItem::Connected => {
                        let _ = ready.send(()).await;
                    }
                    StreamItem::Event(ev) => {
                        let EventKind::StasisStart { args, channel } = ev.kind else {
                            continue;
                        };
                        let t = Instant::now();
                        let step = {
                            let mut p = placements.lock().unwrap_or_else(|e| e.into_inner());
                            match (kind, args.get(1)) {
                                (Baseline::Local, Some(room)) => BaselineStep::Join(room.clone()),
                                (Baseline::Redirecting, Some(room)) => {
                                    let owner = *p.rooms.entry(room.clone()).or_insert(me);
                                    if owner == me {
                                        BaselineStep::Join(room.clone())
                                    } else {
                                        let token =
                                            crate::domain::TokenId::generate(&mut rand::rng());
                                        p.tokens.insert(token.as_str().to_string(), room.clone());
                                        BaselineStep::Redirect(token, hosts[owner].clone())
                                    }
                                }
                                (_, None) => match p.tokens.remove(&channel.dialplan.exten) {
                                    Some(room) => BaselineStep::Join(room),
                                    None => continue,
                                },
                            }
                        };
                        let ari = ari.clone();
                        let done = done.clone();
                        let redirected = redirected.clone();
                        let samples = samples.clone();
                        answers.spawn(async move {
                            let Ok(chan) = ChannelId::new(channel.id.as_str()) else {
                                return;
                            };
                            let ok = match step {
                                BaselineStep::Join(room) => {
                                    let Ok(id) = BridgeId::new(format!("b-{room}")) else {
                                        return;
                                    };
                                    let name = RoomKey::parse("conference", &room)
                                        .map(|r| BridgeNames::default().bridge_name(&r))
                                        .unwrap_or_default();
                                    let joined = ari.answer(&chan).await.is_ok()
                                        && ari
                                            .create_bridge(&id, BridgeType::Mixing, &name)
                                            .await
                                            .is_ok()
                                        && ari.add_channel(&id, &chan, None).await.is_ok();
                                    if joined {
                                        done.fetch_add(1, Ordering::Relaxed);
                                    }
                                    joined
                                }
                                BaselineStep::Redirect(token, host) => {
                                    let endpoint = controller::Config::DEFAULT_ENDPOINT_TEMPLATE
                                        .replace("{token}", token.as_str())
                                        .replace("{sip_host}", &host);
                                    let sent = ari.redirect(&chan, &endpoint).await.is_ok();
                                    if sent {
                                        redirected.fetch_add(1, Ordering::Relaxed);
                                    }
                                    sent
                                }
                            };
                            // As corral counts: a join, or a redirect sent.
                            if ok && let Ok(mut s) = samples.lock() {
                                s.push(t.elapsed().as_micros() as u32);
                            }
                        });
                    }
                    _ => {}
                }
            }
        });
    }
    for _ in sims {
        ready_rx
            .recv()
            .await
            .context("baseline app did not connect")?;
    }
    let done_count = || done.load(Ordering::Relaxed);
    let take = || {
        samples
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    };
    let tag = match kind {
        Baseline::Local => "base",
        Baseline::Redirecting => "bred",
    };
    let figures = two_phases(sims, args, tag, done_count, take).await;
    cancel.cancel();
    figures.map(|f| RunFigures {
        redirected: redirected.load(Ordering::Relaxed),
        ..f
    })
}

/// Phase 1, closed loop: `args.calls` calls as fast as the load generator
/// can, for throughput. Phase 2, paced at `args.rate`: latency percentiles
/// below saturation. `done` counts calls handled; `take` takes the latency
/// samples kept so far.
async fn two_phases(
    sims: &[SimNode],
    args: &Args,
    tag: &str,
    done: impl Fn() -> u64,
    take: impl Fn() -> Vec<u32>,
) -> anyhow::Result<RunFigures> {
    let started = Instant::now();
    load_on_net(sims, args, &format!("{tag}a"), args.calls, None).await?;
    let total = args.calls as u64;
    wait_until(Duration::from_secs(120), || done() >= total).await?;
    let elapsed = started.elapsed();
    let _ = take();
    let paced = paced_count(args);
    load_on_net(sims, args, &format!("{tag}b"), paced, Some(args.rate)).await?;
    wait_until(Duration::from_secs(120), || done() >= total + paced as u64).await?;
    let mut s = take();
    s.sort_unstable();
    Ok(RunFigures {
        redirected: 0,
        calls_per_s: args.calls as f64 / elapsed.as_secs_f64(),
        p50_us: percentile(&s, 0.50),
        p99_us: percentile(&s, 0.99),
    })
}

async fn with_corral(
    sims: &[SimNode],
    args: &Args,
) -> anyhow::Result<(
    RunFigures,
    crate::telemetry::TotalsSnapshot,
    Option<RedisCounters>,
)> {
    let cfg = store::Config {
        farm: format!("bench{}", std::process::id()),
        redis_url: args.redis.clone(),
        ..store::Config::default()
    };
    // On Redis, keep the concrete store: its counters are read around the run.
    let redis = match &args.redis {
        Some(_) => Some(
            store::RedisStore::connect(&cfg)
                .await
                .context("cannot start the store")?,
        ),
        None => None,
    };
    let store: Arc<dyn store::Store> = match &redis {
        Some(r) => Arc::new(r.clone()),
        None => store::connect(&cfg)
            .await
            .context("cannot start the store")?,
    };
    let metrics = Arc::new(Metrics::new());
    metrics.keep_samples();
    let specs = node_specs(sims)?;
    let cfg = controller::Config {
        seed: args.seed,
        reconcile_interval: Duration::from_secs(3600),
        linger: Duration::from_secs(60),
        ..controller::Config::default()
    };
    let ctrl = Controller::new(cfg, store, specs, metrics.clone())?;
    let shutdown = CancellationToken::new();
    let handle = {
        let ctrl = ctrl.clone();
        let s = shutdown.clone();
        crate::shutdown::OwnedTask::spawn(async move { ctrl.run(s).await })
    };
    wait_until(Duration::from_secs(10), || {
        ctrl.nodes_streaming().iter().all(|(_, up)| *up)
    })
    .await?;
    let before = match &redis {
        Some(r) => Some(RedisCounters::read(r).await?),
        None => None,
    };
    let figures = two_phases(
        sims,
        args,
        "corral",
        || metrics.snapshot().joined,
        || metrics.take_samples(),
    )
    .await;
    let counters = match (&redis, &before) {
        (Some(r), Some(b)) => Some(RedisCounters::read(r).await?.since(b)),
        _ => None,
    };
    let t = metrics.snapshot();
    if let Ok(path) = std::env::var("CORRAL_BENCH_METRICS") {
        std::fs::write(path, metrics.encode())?;
    }
    shutdown.cancel();
    let _ = handle.await;
    Ok((figures?, t, counters))
}
