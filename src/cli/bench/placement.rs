//! `corral bench placement`: the placement store and policy, measured
//! against baselines taken in the same run.
//!
//! 1. Throughput: placement decisions (policy choice + `resolve_placement`
//!    of a new room) per second and p50/p99 latency at a fixed concurrency,
//!    against the raw ceiling: the same number of round trips of a trivial
//!    `EVALSHA` (`return 1`) on the same connection and concurrency. Prints
//!    the ratio.
//! 2. Paced: decisions issued at a fixed rate (default 5,000/s), p50/p99.
//! 3. Memory: Redis bytes per room for `--rooms` rooms with one member each
//!    (`MEMORY USAGE` sampled over room hashes plus each room's share of its
//!    node index, and the `used_memory` growth per room).
//! 4. Policies (pure, no Redis): how evenly rooms of Zipf-distributed sizes
//!    spread over 10 nodes (max/mean channels), and how many rooms move when
//!    one node of 10 is removed or one added (`consistent-hash` against
//!    `hash % n`, as Kamailio's dispatcher hashes).
//!
//! Without `--redis`, a private `redis-server` (from `PATH`) is started on a
//! free port for the run and killed at the end. With `--redis`, the run's
//! farm (`bench-<pid>`) is deleted at the end.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::{RngExt, SeedableRng};

use crate::domain::{ChannelId, Incarnation, NodeId, Role, RoomKey, RoomKind, RoomName};
use crate::policy::{Policy, Strategy, room_hash};
use crate::shutdown::OwnedTask;
use crate::store::{Config, NodeRecord, NodeRegistration, RedisStore, Resolution, Store};

/// Flags of `corral bench placement`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Redis to measure (`redis://`, `redis+sentinel://`, `redis+cluster://`);
    /// default: a private redis-server started for the run.
    #[arg(long)]
    pub redis: Option<String>,
    /// Requests in flight at once (throughput runs).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Length of each timed run, in seconds.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Rate of the paced run, decisions per second.
    #[arg(long, default_value_t = 5000)]
    pub rate: u32,
    /// Rooms created for the memory figure.
    #[arg(long, default_value_t = 100_000)]
    pub rooms: usize,
    /// Nodes registered for the decisions.
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    /// Placement strategy used in the store runs.
    #[arg(long, default_value = "least-loaded")]
    pub strategy: String,
    /// Seed of the policy and of the simulated room sizes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Client runtime threads for the store runs (1 = current-thread).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let strategy: Strategy = args.strategy.parse()?;
    println!("corral bench placement (seed {})", args.seed);
    let private = match &args.redis {
        Some(_) => None,
        None => Some(PrivateRedis::start().context("starting a private redis-server")?),
    };
    let url = match (&args.redis, &private) {
        (Some(u), _) => u.clone(),
        (None, Some(p)) => p.url(),
        (None, None) => bail!("no redis"),
    };
    // A private Redis holds only this run: the farm name is as short as a
    // real one. A shared Redis gets a farm of its own, deleted at the end.
    let farm = match private {
        Some(_) => "bench".to_owned(),
        None => format!("bench-{}", std::process::id()),
    };
    let cfg = Config {
        farm: farm.clone(),
        redis_url: Some(url.clone()),
        ..Config::default()
    };
    println!(
        "redis: {}  farm: {farm}  concurrency: {}  client threads: {}  strategy: {strategy}",
        if private.is_some() {
            "private redis-server".to_owned()
        } else {
            redacted(&url)
        },
        args.concurrency,
        args.threads,
    );
    // The store runs get a runtime of their own, `--threads` wide: on a
    // small machine the client must leave Redis a core, as a controller
    // replica would on its own host.
    let threads = args.threads;
    let seed = args.seed;
    let args = Arc::new(args);
    let worker = std::thread::spawn(move || -> anyhow::Result<()> {
        let rt = if threads <= 1 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()?
        };
        rt.block_on(async move {
            let store = Arc::new(RedisStore::connect(&cfg).await?);
            let result = store_runs(&args, strategy, store.clone()).await;
            cleanup(&store, &farm).await;
            result
        })
    });
    tokio::task::spawn_blocking(move || worker.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the benchmark thread panicked"))??;
    drop(private);
    policy_runs(seed);
    Ok(())
}

fn redacted(url: &str) -> String {
    match url.split_once('@') {
        Some((scheme_user, host)) => {
            let scheme = scheme_user.split("://").next().unwrap_or("redis");
            format!("{scheme}://…@{host}")
        }
        None => url.to_owned(),
    }
}

async fn register_nodes(args: &Args, store: &RedisStore) -> anyhow::Result<()> {
    for i in 0..args.nodes {
        store
            .register_node(&NodeRegistration {
                node: NodeId::new(format!("n{i:02}"))?,
                incarnation: Incarnation {
                    asterisk_id: format!("00:00:00:00:00:{i:02}"),
                    started: "bench".into(),
                },
                sip_host: format!("10.0.0.{i}"),
                capacity: 1000,
                max_rooms: None,
            })
            .await?;
    }
    Ok(())
}

async fn store_runs(args: &Args, strategy: Strategy, store: Arc<RedisStore>) -> anyhow::Result<()> {
    register_nodes(args, &store).await?;
    let nodes = Arc::new(store.list_nodes().await?);
    let policy = Arc::new(Mutex::new(Policy::new(strategy, args.seed)));
    let duration = Duration::from_secs_f64(args.seconds);

    // Warm up the connection and the scripts.
    let _ = timed(args.concurrency, Duration::from_millis(300), |_, _| async {
        Ok(())
    })
    .await;

    let raw_sha = raw_script_sha(&store).await?;
    println!("\n## Throughput ({:.1} s per run)", args.seconds);
    let raw = {
        let store = store.clone();
        let sha = raw_sha.clone();
        timed(args.concurrency, duration, move |_, _| {
            let store = store.clone();
            let sha = sha.clone();
            async move {
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(&sha).arg(0);
                store.raw(cmd).await.map(|_| ())
            }
        })
        .await?
    };
    let decide = {
        let store = store.clone();
        let nodes = nodes.clone();
        let policy = policy.clone();
        timed(args.concurrency, duration, move |worker, i| {
            decision(
                store.clone(),
                nodes.clone(),
                policy.clone(),
                format!("t{worker}-{i}"),
            )
        })
        .await?
    };
    let zipf = Arc::new(Zipf::new(ARRIVAL_ROOMS, 1.1));
    let arrivals = {
        let store = store.clone();
        let nodes = nodes.clone();
        let policy = policy.clone();
        let zipf = zipf.clone();
        let seed = args.seed;
        timed(args.concurrency, duration, move |worker, i| {
            let rank = arrival_rank(&zipf, seed, worker, i);
            decision(
                store.clone(),
                nodes.clone(),
                policy.clone(),
                format!("a{rank}"),
            )
        })
        .await?
    };
    // The floor of any decision in a script: one read of the room, the
    // same Zipf-drawn rooms, nothing decided.
    let floor = {
        let store = store.clone();
        let sha = script_sha(&store, FLOOR_ONE_READ).await?;
        let zipf = zipf.clone();
        let seed = args.seed;
        timed(args.concurrency, duration, move |worker, i| {
            let rank = arrival_rank(&zipf, seed, worker, i);
            let store = store.clone();
            let sha = sha.clone();
            async move {
                let room = conference(format!("a{rank}"))?;
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(&sha).arg(1).arg(store.keys().room(&room));
                store.raw(cmd).await.map(|_| ())
            }
        })
        .await?
    };
    println!(
        "{:<44} {:>10} {:>9} {:>9} {:>7}",
        "", "ops/s", "p50 µs", "p99 µs", "ratio"
    );
    raw.print("raw EVALSHA `return 1` (ceiling)", &raw);
    floor.print("floor: a script reading the room (one HMGET)", &raw);
    decide.print("decision, every room new (write path)", &raw);
    arrivals.print(
        &format!("decision per arrival, Zipf over {ARRIVAL_ROOMS} rooms"),
        &raw,
    );

    println!("\n## Paced at {}/s", args.rate);
    let paced_raw = {
        let store = store.clone();
        let sha = raw_sha.clone();
        paced_run(args.rate, duration, move |_| {
            let store = store.clone();
            let sha = sha.clone();
            async move {
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(&sha).arg(0);
                store.raw(cmd).await.map(|_| ())
            }
        })
        .await?
    };
    let paced = {
        let store = store.clone();
        let nodes = nodes.clone();
        let policy = policy.clone();
        paced_run(args.rate, duration, move |i| {
            decision(
                store.clone(),
                nodes.clone(),
                policy.clone(),
                format!("p{i}"),
            )
        })
        .await?
    };
    println!("{:<44} {:>10} {:>9} {:>9}", "", "ops/s", "p50 µs", "p99 µs");
    paced_raw.print(
        &format!("raw EVALSHA `return 1` at {}/s", args.rate),
        &paced_raw,
    );
    paced.print(
        &format!("decision, every room new, at {}/s", args.rate),
        &paced,
    );

    script_costs(&store, &nodes, &raw_sha).await?;

    println!(
        "\n## Memory ({} rooms, farm {:?})",
        args.rooms,
        store.keys().prefix()
    );
    memory_run(args, &store, &nodes).await?;
    Ok(())
}

/// Rooms the arrivals run draws from (Zipf by rank: a few busy rooms, a
/// long tail of small ones).
const ARRIVAL_ROOMS: usize = 10_000;

/// The floor of any decision made in a script: one read of the room.
const FLOOR_ONE_READ: &str = "return redis.call('HMGET', KEYS[1], 'n', 'g', 'e', 'k')";

/// Which room arrival `i` of `worker` is for (Zipf by rank), seeded.
fn arrival_rank(zipf: &Zipf, seed: u64, worker: usize, i: usize) -> u32 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ ((worker as u64) << 40) ^ (i as u64));
    zipf.sample(&mut rng)
}

/// The conference room `name` (a bad name is the store's `InvalidInput`).
fn conference(name: String) -> Result<RoomKey, crate::store::Error> {
    RoomName::new(name)
        .map(|n| RoomKey::new(RoomKind::Conference, n))
        .map_err(|e| crate::store::Error::InvalidInput {
            what: "room",
            reason: e.to_string(),
        })
}

/// One placement decision, as the controller makes it: a running room's
/// owner from the store as it stands, else the policy's choice, then the
/// store's decision.
async fn decision(
    store: Arc<RedisStore>,
    nodes: Arc<Vec<NodeRecord>>,
    policy: Arc<Mutex<Policy>>,
    name: String,
) -> Result<(), crate::store::Error> {
    let room = conference(name)?;
    // As the controller decides: a running room needs no choice.
    if store.placed_owner(&room).await?.is_some() {
        return Ok(());
    }
    let choice = {
        let mut p = policy.lock().unwrap_or_else(|e| e.into_inner());
        p.choose(&room, None, &nodes)
    };
    let Some(choice) = choice else {
        return Ok(());
    };
    if let Resolution::Owner {
        node,
        created: true,
        ..
    } = store.resolve_placement(&room, &choice).await?
    {
        policy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record_placement(&node);
    }
    Ok(())
}

async fn raw_script_sha(store: &RedisStore) -> anyhow::Result<String> {
    script_sha(store, "return 1").await
}

/// Loads `body` as a script; its SHA.
async fn script_sha(store: &RedisStore, body: &str) -> anyhow::Result<String> {
    let mut cmd = redis::cmd("SCRIPT");
    cmd.arg("LOAD").arg(body);
    match store.raw(cmd).await? {
        redis::Value::BulkString(b) => Ok(String::from_utf8(b)?),
        other => bail!("SCRIPT LOAD answered {other:?}"),
    }
}

/// Latencies of one run.
struct Figures {
    ops: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn pct(&self, p: f64) -> u128 {
        if self.latencies.is_empty() {
            return 0;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)].as_micros()
    }

    fn print(&self, label: &str, ceiling: &Figures) {
        let ratio = if std::ptr::eq(self, ceiling) {
            String::new()
        } else {
            format!("{:.2}", self.rate() / ceiling.rate().max(1.0))
        };
        println!(
            "{label:<44} {:>10.0} {:>9} {:>9} {:>7}{}",
            self.rate(),
            self.pct(0.50),
            self.pct(0.99),
            ratio,
            if self.errors > 0 {
                format!("  ({} errors)", self.errors)
            } else {
                String::new()
            }
        );
    }
}

/// Runs `op` from `concurrency` workers for `duration`, closed loop.
async fn timed<F, Fut>(concurrency: usize, duration: Duration, op: F) -> anyhow::Result<Figures>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<(), crate::store::Error>> + Send,
{
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency.max(1) {
        let op = op.clone();
        workers.push(OwnedTask::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut i = 0;
            while start.elapsed() < duration {
                let t = Instant::now();
                if op(w, i).await.is_err() {
                    errors += 1;
                }
                lat.push(t.elapsed());
                i += 1;
            }
            (lat, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Ok(Figures {
        ops: latencies.len(),
        errors,
        elapsed,
        latencies,
    })
}

/// Issues `op` at `rate` per second for `duration` (open loop: a slow answer
/// does not delay the next request).
async fn paced_run<F, Fut>(rate: u32, duration: Duration, op: F) -> anyhow::Result<Figures>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), crate::store::Error>> + Send + 'static,
{
    let total = (f64::from(rate) * duration.as_secs_f64()) as usize;
    let start = tokio::time::Instant::now();
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + period.mul_f64(i as f64);
        if due > tokio::time::Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let fut = op(i);
        tasks.push(OwnedTask::spawn(async move {
            let t = Instant::now();
            let ok = fut.await.is_ok();
            (t.elapsed(), ok)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0;
    for t in tasks {
        let (l, ok) = t.await?;
        latencies.push(l);
        if !ok {
            errors += 1;
        }
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Ok(Figures {
        ops: latencies.len(),
        errors,
        elapsed,
        latencies,
    })
}

async fn used_memory(store: &RedisStore) -> anyhow::Result<u64> {
    let mut cmd = redis::cmd("INFO");
    cmd.arg("memory");
    let text = match store.raw(cmd).await? {
        redis::Value::BulkString(b) => String::from_utf8(b)?,
        redis::Value::VerbatimString { text, .. } => text,
        other => bail!("INFO answered {other:?}"),
    };
    text.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no used_memory in INFO")
}

async fn memory_usage(store: &RedisStore, key: &str, samples: u32) -> anyhow::Result<u64> {
    let mut cmd = redis::cmd("MEMORY");
    cmd.arg("USAGE").arg(key).arg("SAMPLES").arg(samples);
    match store.raw(cmd).await? {
        redis::Value::Int(n) => Ok(n.max(0) as u64),
        redis::Value::Nil => Ok(0),
        other => bail!("MEMORY USAGE answered {other:?}"),
    }
}

async fn index_usage(store: &RedisStore, nodes: &[NodeRecord]) -> anyhow::Result<u64> {
    let mut total = 0;
    for n in nodes {
        total += memory_usage(store, &store.keys().node_rooms(&n.id), 0).await?;
    }
    Ok(total)
}

async fn memory_run(
    args: &Args,
    store: &Arc<RedisStore>,
    nodes: &Arc<Vec<NodeRecord>>,
) -> anyhow::Result<()> {
    for with_member in [false, true] {
        let tag = if with_member { "m" } else { "e" };
        if with_member && args.redis.is_none() {
            // Each fill from an empty private Redis, so that neither pays
            // for the other's hash-table growth.
            store.raw(redis::cmd("FLUSHDB")).await?;
            register_nodes(args, store).await?;
        }
        let before = used_memory(store).await?;
        let index_before = index_usage(store, nodes).await?;
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..args.concurrency.max(1) {
            let (store, nodes, next) = (store.clone(), nodes.clone(), next.clone());
            let total = args.rooms;
            workers.push(OwnedTask::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= total {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let room = mem_room(tag, i)?;
                    let node = &nodes[i % nodes.len()].id;
                    if with_member {
                        // A joiner on an unplaced room claims it: one round trip.
                        store
                            .add_member(
                                &room,
                                node,
                                &ChannelId::new(format!("1767268800.{i}"))?,
                                Role::Participant,
                            )
                            .await?;
                    } else {
                        store.resolve_placement(&room, node).await?;
                    }
                }
            }));
        }
        for w in workers {
            w.await??;
        }
        let fill = started.elapsed();
        let after = used_memory(store).await?;
        let index_after = index_usage(store, nodes).await?;
        let rooms = args.rooms.max(1) as u64;
        let sample = 1000.min(args.rooms);
        let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
        let mut hash_bytes = 0u64;
        for _ in 0..sample {
            let i = rng.random_range(0..args.rooms);
            hash_bytes += memory_usage(store, &store.keys().room(&mem_room(tag, i)?), 0).await?;
        }
        let per_hash = hash_bytes as f64 / sample.max(1) as f64;
        let per_index = index_after.saturating_sub(index_before) as f64 / rooms as f64;
        println!(
            "{}: {} rooms in {:.1} s ({:.0}/s)",
            if with_member {
                "one member each (add_member claims)"
            } else {
                "placements only (resolve_placement)"
            },
            rooms,
            fill.as_secs_f64(),
            rooms as f64 / fill.as_secs_f64()
        );
        println!(
            "  MEMORY USAGE: room hash {per_hash:.0} B + node index share {per_index:.0} B = {:.0} B/room",
            per_hash + per_index
        );
        println!(
            "  used_memory growth: {:.0} B/room   (goal < 300)",
            after.saturating_sub(before) as f64 / rooms as f64
        );
    }
    Ok(())
}

fn mem_room(tag: &str, i: usize) -> anyhow::Result<RoomKey> {
    Ok(RoomKey::new(
        RoomKind::Conference,
        RoomName::new(format!("{tag}room-{i:07}"))?,
    ))
}

/// Deletes the run's farm (when the Redis is not private).
async fn cleanup(store: &RedisStore, farm: &str) {
    let pattern = format!("{{corral:{farm}}}:*");
    let mut cursor = 0u64;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000);
        let Ok(redis::Value::Array(parts)) = store.raw(cmd).await else {
            return;
        };
        let next = match parts.first() {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).parse().unwrap_or(0),
            _ => 0,
        };
        if let Some(redis::Value::Array(keys)) = parts.get(1)
            && !keys.is_empty()
        {
            let mut del = redis::cmd("UNLINK");
            for k in keys {
                if let redis::Value::BulkString(b) = k {
                    del.arg(b.as_slice());
                }
            }
            let _ = store.raw(del).await;
        }
        cursor = next;
        if cursor == 0 {
            return;
        }
    }
}

// ---- policies, pure ----------------------------------------------------

/// A Zipf sampler over sizes 1..=max with exponent `s`.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(max: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf = Vec::with_capacity(max);
        for k in 1..=max {
            acc += 1.0 / (k as f64).powf(s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Self { cdf }
    }

    fn sample(&self, rng: &mut impl rand::Rng) -> u32 {
        let u: f64 = rng.random();
        (self.cdf.partition_point(|c| *c < u) + 1) as u32
    }
}

/// Capacity of a simulated node: the Zipf rooms of the spread run fill
/// about 70% of the farm, so "landing first" applies as in production.
const SIM_CAPACITY: u32 = 160_000;

fn sim_node(i: usize, channels: u32, updated_ms: u64) -> NodeRecord {
    NodeRecord {
        id: NodeId::new(format!("n{i:02}")).expect("n00..n99 are valid node ids"),
        state: crate::domain::NodeState::Up,
        healthy: true,
        draining: false,
        suspect: false,
        incarnation: None,
        sip_host: String::new(),
        capacity: SIM_CAPACITY,
        max_rooms: None,
        channels,
        rooms: 0,
        members: 0,
        updated_ms,
    }
}

/// How a simulated decider picks a node.
#[derive(Clone, Copy)]
enum Sim {
    Policy(Strategy, bool),
    RoundRobin,
    HashModN,
}

/// Places `rooms` rooms of Zipf sizes on 10 nodes; the policy sees each
/// node's load as reported every `lag` placements (stale in between, as
/// real reports are) and counts its own placements at once.
fn spread(sim: Sim, rooms: usize, lag: usize, seed: u64) -> f64 {
    let n = 10;
    let zipf = Zipf::new(500, 1.1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut actual = vec![0u32; n];
    let mut reported: Vec<NodeRecord> = (0..n).map(|i| sim_node(i, 0, 0)).collect();
    let mut policy = match sim {
        Sim::Policy(s, _) => Some(Policy::new(s, seed)),
        _ => None,
    };
    for r in 0..rooms {
        if r % lag == 0 {
            for (i, rec) in reported.iter_mut().enumerate() {
                rec.channels = actual[i];
                rec.updated_ms = r as u64;
            }
        }
        let size = zipf.sample(&mut rng);
        let room = RoomKey::new(
            RoomKind::Conference,
            RoomName::new(format!("z{r}")).expect("z<digits> is a valid room name"),
        );
        let idx = match sim {
            Sim::RoundRobin => r % n,
            Sim::HashModN => (room_hash(&room) % n as u64) as usize,
            Sim::Policy(_, landing) => {
                let landing_id = landing.then(|| reported[r % n].id.clone());
                let p = policy.as_mut().expect("Sim::Policy always has a policy");
                let chosen = p
                    .choose(&room, landing_id.as_ref(), &reported)
                    .unwrap_or_else(|| reported[0].id.clone());
                p.record_placement(&chosen);
                reported.iter().position(|x| x.id == chosen).unwrap_or(0)
            }
        };
        actual[idx] += size;
    }
    let max = *actual.iter().max().unwrap_or(&0) as f64;
    let mean = actual.iter().map(|x| *x as f64).sum::<f64>() / n as f64;
    max / mean.max(1.0)
}

/// Fraction of `rooms` rooms that change node when the node set changes
/// from `before` to `after` nodes.
fn moved(hash_mod: bool, rooms: usize, before: usize, after: usize) -> (f64, f64) {
    let set = |k: usize| -> Vec<NodeRecord> { (0..k).map(|i| sim_node(i, 0, 0)).collect() };
    let (a, b) = (set(before), set(after));
    let mut p = Policy::new(Strategy::ConsistentHash, 0);
    let mut moved = 0usize;
    let mut necessary = 0usize;
    for r in 0..rooms {
        let room = RoomKey::new(
            RoomKind::Conference,
            RoomName::new(format!("m{r}")).expect("m<digits> is a valid room name"),
        );
        let (x, y) = if hash_mod {
            let h = room_hash(&room);
            (
                a[(h % before as u64) as usize].id.clone(),
                b[(h % after as u64) as usize].id.clone(),
            )
        } else {
            (
                p.choose(&room, None, &a).unwrap_or_else(|| a[0].id.clone()),
                p.choose(&room, None, &b).unwrap_or_else(|| b[0].id.clone()),
            )
        };
        if x != y {
            moved += 1;
        }
        // A move is necessary only off a removed node or onto an added one.
        let removed = !b.iter().any(|n| n.id == x);
        let added = !a.iter().any(|n| n.id == y);
        if removed || added {
            necessary += 1;
        }
    }
    (moved as f64 / rooms as f64, necessary as f64 / rooms as f64)
}

fn policy_runs(seed: u64) {
    let rooms = 20_000;
    println!(
        "\n## Spread: {rooms} rooms, Zipf sizes (1..500, s=1.1), 10 nodes, loads reported every 50 placements"
    );
    println!("{:<52} {:>10}", "decider", "max/mean");
    let rows: [(&str, Sim); 6] = [
        ("least-loaded", Sim::Policy(Strategy::LeastLoaded, false)),
        (
            "least-loaded, round-robin landing first",
            Sim::Policy(Strategy::LeastLoaded, true),
        ),
        ("power-of-two", Sim::Policy(Strategy::PowerOfTwo, false)),
        (
            "consistent-hash (rendezvous)",
            Sim::Policy(Strategy::ConsistentHash, false),
        ),
        ("round-robin (dispatcher alg 4)", Sim::RoundRobin),
        ("hash % n (dispatcher hash)", Sim::HashModN),
    ];
    for (label, sim) in rows {
        println!("{label:<52} {:>10.3}", spread(sim, rooms, 50, seed));
    }
    let total = 100_000;
    println!("\n## Moves when the node set changes ({total} rooms)");
    println!(
        "{:<32} {:>14} {:>14} {:>14}",
        "", "moved", "necessary", "excess"
    );
    for (label, hash_mod) in [("consistent-hash", false), ("hash % n", true)] {
        for (change, before, after) in [("remove 1 of 10", 10, 9), ("add 1 to 10", 10, 11)] {
            let (m, need) = moved(hash_mod, total, before, after);
            println!(
                "{:<32} {:>13.1}% {:>13.1}% {:>13.1}%",
                format!("{label}, {change}"),
                m * 100.0,
                need * 100.0,
                (m - need) * 100.0
            );
        }
    }
}

/// A redis-server for the run: free port, temp dir, no persistence, killed
/// on drop.
struct PrivateRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl PrivateRedis {
    fn start() -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("corral-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(
                "redis-server not found on PATH: install it (apt-get install -y redis-server) \
                 or pass --redis redis://host:port",
            )?;
        let mut me = Self { child, port, dir };
        let start = Instant::now();
        loop {
            let ok = redis::Client::open(me.url().as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok();
            if ok {
                return Ok(me);
            }
            if let Ok(Some(status)) = me.child.try_wait() {
                bail!("redis-server exited at start: {status}");
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("redis-server did not answer PING within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Invocations per script in [`script_costs`].
const COST_CALLS: usize = 20_000;

/// In flight during [`script_costs`].
const COST_CONCURRENCY: usize = 16;

/// Each call-path script's cost in Redis, from Redis's own counters (`INFO
/// commandstats`: execution time of `EVALSHA`; `INFO cpu`: the server's CPU,
/// socket I/O included) over [`COST_CALLS`] calls of it alone, against a
/// trivial `EVALSHA` measured the same way.
async fn script_costs(
    store: &Arc<RedisStore>,
    nodes: &[NodeRecord],
    raw_sha: &str,
) -> anyhow::Result<()> {
    use crate::domain::{ChannelId, Role, TokenId};
    use crate::store::{CallArrival, RedirectToken, TokenGrant};

    let (Some(a), Some(b)) = (nodes.first(), nodes.get(1)) else {
        return Ok(());
    };
    let (a, b) = (a.id.clone(), b.id.clone());
    let room = RoomKey::new(RoomKind::Conference, RoomName::new("cost-room")?);
    store.resolve_placement(&room, &a).await?;
    println!(
        "\n## Script cost in Redis ({COST_CALLS} calls each, {COST_CONCURRENCY} in flight; Redis's counters)"
    );
    println!(
        "{:<58} {:>10} {:>7} {:>12} {:>7}",
        "", "exec µs", "ratio", "CPU µs (I/O)", "ratio"
    );
    let mut base: Option<(f64, f64)> = None;
    // The floors: what any script deciding on a placed room pays to read
    // it (and its owner's node record), with nothing else done.
    let floor_one = script_sha(store, FLOOR_ONE_READ).await?;
    let floor_two = script_sha(
        store,
        "local r = redis.call('HMGET', KEYS[1], 'n', 'g', 'e', 'k') \
         return {r, redis.call('HMGET', KEYS[2], 'h', 'g')}",
    )
    .await?;
    let room_key = store.keys().room(&room);
    let node_key = store.keys().node(&a);
    let cases: [&str; 9] = [
        "raw EVALSHA `return 1`",
        "floor: a script reading the room (one HMGET)",
        "floor: ... and its owner's node (two HMGETs)",
        "resolve_placement, placed room (HMGET + GET, no script)",
        "place_call, placed room elsewhere, no token",
        "place_call, placed room elsewhere, token minted",
        "place_call, placed room here, member recorded",
        "join_with_token (consume + member recorded)",
        "remove_member",
    ];
    for (case, label) in cases.iter().enumerate() {
        // Tokens to consume are minted before the measured run.
        let tokens: Vec<TokenId> = if case == 7 {
            let mut v = Vec::with_capacity(COST_CALLS);
            for i in 0..COST_CALLS {
                let t = TokenId::generate(&mut rand::rng());
                let grant = TokenGrant {
                    room: room.clone(),
                    from: b.clone(),
                    to: a.clone(),
                    channel: ChannelId::new(format!("tok-{i}"))?,
                    caller: "100".into(),
                    hops: 1,
                    agent: None,
                };
                store
                    .mint_token(&t, &grant, Duration::from_secs(60))
                    .await?;
                v.push(t);
            }
            v
        } else {
            Vec::new()
        };
        let tokens = Arc::new(tokens);
        let before = super::redis_stats::RedisCounters::read(store).await?;
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut workers = Vec::new();
        for _ in 0..COST_CONCURRENCY {
            let (store, room, a, b) = (store.clone(), room.clone(), a.clone(), b.clone());
            let (next, tokens, sha) = (next.clone(), tokens.clone(), raw_sha.to_owned());
            let (floor_one, floor_two) = (floor_one.clone(), floor_two.clone());
            let (room_key, node_key) = (room_key.clone(), node_key.clone());
            workers.push(OwnedTask::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= COST_CALLS {
                        return Ok::<(), anyhow::Error>(());
                    }
                    let chan = ChannelId::new(format!("c{case}-{i}"))?;
                    let arrival = |landing: &NodeId, token: bool| CallArrival {
                        room: room.clone(),
                        landing: landing.clone(),
                        channel: chan.clone(),
                        role: Role::Participant,
                        redirect: token.then(|| RedirectToken {
                            token: TokenId::generate(&mut rand::rng()),
                            caller: "100".into(),
                            hops: 1,
                            agent: None,
                            ttl: Duration::from_secs(5),
                        }),
                    };
                    match case {
                        0 => {
                            let mut cmd = redis::cmd("EVALSHA");
                            cmd.arg(&sha).arg(0);
                            store.raw(cmd).await?;
                        }
                        1 => {
                            let mut cmd = redis::cmd("EVALSHA");
                            cmd.arg(&floor_one).arg(1).arg(&room_key);
                            store.raw(cmd).await?;
                        }
                        2 => {
                            let mut cmd = redis::cmd("EVALSHA");
                            cmd.arg(&floor_two).arg(2).arg(&room_key).arg(&node_key);
                            store.raw(cmd).await?;
                        }
                        3 => {
                            store.resolve_placement(&room, &b).await?;
                        }
                        4 => {
                            store.place_call(&arrival(&b, false), &b).await?;
                        }
                        5 => {
                            store.place_call(&arrival(&b, true), &b).await?;
                        }
                        6 => {
                            store.place_call(&arrival(&a, false), &a).await?;
                        }
                        7 => {
                            let chan = ChannelId::new(format!("j-{i}"))?;
                            store.join_with_token(&tokens[i], &a, &chan).await?;
                        }
                        _ => {
                            // The members case 6 recorded.
                            let chan = ChannelId::new(format!("c6-{i}"))?;
                            store.remove_member(&room, &a, &chan).await?;
                        }
                    }
                }
            }));
        }
        for w in workers {
            w.await??;
        }
        let d = super::redis_stats::RedisCounters::read(store)
            .await?
            .since(&before);
        let (exec, cpu) = d.script_cost(COST_CALLS as u64);
        let (e0, c0) = *base.get_or_insert((exec, cpu));
        println!(
            "{label:<58} {exec:>10.2} {:>7.2} {cpu:>12.2} {:>7.2}",
            exec / e0.max(0.01),
            cpu / c0.max(0.01)
        );
    }
    Ok(())
}
