//! `corral bench api`: `POST /v1/rooms/{kind}/{name}/placement` through the
//! real HTTP API (router, auth, JSON, controller, store) against the
//! store's own `resolve_placement` for the same rooms at the same
//! concurrency, in the same run.
//!
//! Setup: simulated nodes, a running controller, the API on `127.0.0.1:0`
//! with a bearer token, and `--rooms` rooms placed beforehand, so both
//! sides resolve existing placements (the operation apps repeat most).
//! Figures:
//! - closed loop: `--concurrency` workers for `--seconds`; requests/s and
//!   p50/p99 for the API and for the store called directly; the ratio.
//! - paced: `--rate` requests/s offered to the API (open loop: latency
//!   counted from each request's issue, and the generator's worst lag
//!   behind its schedule printed apart, so a stall is not hidden);
//!   achieved rate, p50/p99/max. Then, to show where its p99 goes, the
//!   same rate offered to the HTTP floor (`GET /healthz`, no work) and to
//!   the store's own `resolve_placement`.
//!
//! The load generator runs on the same machine and shares its cores; it is
//! a minimal keep-alive HTTP/1.1 client so that it takes as little of them
//! as it can.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

use crate::controller::{self, Controller, NodeSpec};
use crate::domain::{NodeId, RoomKey};
use crate::shutdown::OwnedTask;
use crate::sim::{SimConfig, SimNode};
use crate::store;
use crate::telemetry::Metrics;

/// Flags of `corral bench api`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Redis URL (default: the in-memory store).
    #[arg(long)]
    pub redis: Option<String>,
    /// Simulated nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Distinct rooms requests cycle through.
    #[arg(long, default_value_t = 2000)]
    pub rooms: usize,
    /// Requests in flight in the closed-loop runs.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Duration of each run, in seconds.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Requests per second of the paced run.
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
}

pub(super) const TOKEN: &str = "bench-token";

pub(super) fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(super) fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// The load generator's runtime: one thread of its own.
pub(super) fn load_runtime() -> &'static tokio::runtime::Runtime {
    static GEN: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    GEN.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-load")
            .enable_all()
            .build()
            .expect("a runtime for the load generator")
    })
}

/// What one run measured.
pub(super) struct Figures {
    pub(super) ops: usize,
    pub(super) errors: usize,
    pub(super) took: Duration,
    pub(super) lat: Vec<Duration>,
    /// Paced runs: the latest a request was issued past its schedule.
    pub(super) lag: Duration,
}

impl Figures {
    pub(super) fn rate(&self) -> f64 {
        self.ops as f64 / self.took.as_secs_f64()
    }
    pub(super) fn line(&mut self, what: &str) -> String {
        self.lat.sort();
        format!(
            "{what:<28} {:>9.0} req/s   p50 {}   p99 {}   max {}   errors {}",
            self.rate(),
            ms(pct(&self.lat, 0.50)),
            ms(pct(&self.lat, 0.99)),
            ms(self.lat.last().copied().unwrap_or_default()),
            self.errors
        )
    }
}

/// Runs `op(i)` in `workers` closed loops for `d`.
pub(super) async fn closed_loop<F, Fut>(workers: usize, d: Duration, op: F) -> Figures
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (op, stop) = (op.clone(), stop.clone());
        tasks.push(OwnedTask::spawn(async move {
            let (mut lat, mut errors, mut i) = (Vec::new(), 0, w);
            while !stop.load(Ordering::Relaxed) && start.elapsed() < d {
                let t = Instant::now();
                if !op(i).await {
                    errors += 1;
                }
                lat.push(t.elapsed());
                i += workers;
                // An in-memory store answers without ever yielding: let
                // the other workers (and the timer) run.
                tokio::task::yield_now().await;
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(d).await;
    stop.store(true, Ordering::Relaxed);
    let mut f = Figures {
        ops: 0,
        errors: 0,
        took: Duration::ZERO,
        lat: Vec::new(),
        lag: Duration::ZERO,
    };
    for t in tasks {
        if let Ok((lat, errors)) = t.await {
            f.lat.extend(lat);
            f.errors += errors;
        }
    }
    f.took = start.elapsed();
    f.ops = f.lat.len();
    f
}

/// Offers `op(i)` at `rate`/s for `d` (open loop).
pub(super) async fn paced<F, Fut>(rate: u64, d: Duration, op: F) -> Figures
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let op = Arc::new(op);
    let total = (rate * d.as_secs()).max(1) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due).await;
        let op = op.clone();
        tasks.push(OwnedTask::spawn(async move {
            // Latency counts from the issue; how late the issue was against
            // its schedule is reported apart (generator lag), so a stall of
            // the generator is shown, not hidden.
            let issued = tokio::time::Instant::now();
            let ok = op(i).await;
            (issued.elapsed(), issued - due, ok)
        }));
    }
    let mut f = Figures {
        ops: 0,
        errors: 0,
        took: Duration::ZERO,
        lat: Vec::with_capacity(total),
        lag: Duration::ZERO,
    };
    for t in tasks {
        if let Ok((lat, late, ok)) = t.await {
            f.lat.push(lat);
            f.lag = f.lag.max(late);
            f.errors += usize::from(!ok);
        }
    }
    f.took = start.elapsed();
    f.ops = f.lat.len();
    f
}

/// A minimal HTTP/1.1 keep-alive client for the load generator: it shares
/// the machine's cores with the server, so it must cost as little as
/// possible (a general client costs several times more per request than
/// the server does). One pooled connection per request in flight.
pub(super) struct RawClient {
    addr: std::net::SocketAddr,
    auth: String,
    pool: std::sync::Mutex<Vec<BufStream<TcpStream>>>,
}

impl RawClient {
    pub(super) fn new(addr: std::net::SocketAddr, token: &str) -> Self {
        Self {
            addr,
            auth: format!("Bearer {token}"),
            pool: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// `POST path` with an empty body; true on a 2xx with its body read.
    pub(super) async fn post(&self, path: &str) -> bool {
        self.request("POST", path).await
    }

    /// `GET path`; true on a 2xx with its body read.
    pub(super) async fn get(&self, path: &str) -> bool {
        self.request("GET", path).await
    }

    async fn request(&self, method: &str, path: &str) -> bool {
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        let fresh = pooled.is_none();
        let mut conn = match pooled {
            Some(c) => c,
            None => match self.connect().await {
                Some(c) => c,
                None => return false,
            },
        };
        let mut answer = self.exchange(&mut conn, method, path).await;
        if answer.is_err() && !fresh {
            // The server closed a pooled connection that sat idle longer
            // than its idle timeout: the client's doing, not an error of
            // the route; try once on a new connection.
            conn = match self.connect().await {
                Some(c) => c,
                None => return false,
            };
            answer = self.exchange(&mut conn, method, path).await;
        }
        match answer {
            Ok(ok) => {
                if let Ok(mut p) = self.pool.lock() {
                    p.push(conn);
                }
                ok
            }
            Err(_) => false,
        }
    }

    async fn connect(&self) -> Option<BufStream<TcpStream>> {
        let s = TcpStream::connect(self.addr).await.ok()?;
        let _ = s.set_nodelay(true);
        Some(BufStream::new(s))
    }

    async fn exchange(
        &self,
        c: &mut BufStream<TcpStream>,
        method: &str,
        path: &str,
    ) -> std::io::Result<bool> {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: bench\r\nauthorization: {}\r\ncontent-length: 0\r\n\r\n",
            self.auth
        );
        c.write_all(req.as_bytes()).await?;
        c.flush().await?;
        let mut line = String::new();
        c.read_line(&mut line).await?;
        let ok = line.starts_with("HTTP/1.1 2");
        let mut len = 0usize;
        loop {
            line.clear();
            if c.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        c.read_exact(&mut body).await?;
        Ok(ok)
    }
}

/// What the API benchmarks run against: simulated nodes, a running
/// controller on the store, and the API on `127.0.0.1:0` with [`TOKEN`].
pub(super) struct BenchApi {
    pub(super) ctrl: Controller,
    pub(super) store: Arc<dyn store::Store>,
    /// Where the API listens.
    pub(super) addr: std::net::SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
    running: OwnedTask<()>,
    /// The API server (aborted with the bench; it stops on `shutdown`).
    _api: OwnedTask<()>,
    /// Stops everything when the benchmark ends early with an error.
    _stop: tokio_util::sync::DropGuard,
    _sims: Vec<SimNode>,
}

impl BenchApi {
    /// Starts `nodes` simulated nodes, the store (`redis` or memory; farm
    /// `<farm>NNNNN`), the controller streaming every node and the API.
    pub(super) async fn start(
        redis: Option<String>,
        nodes: usize,
        farm: &str,
    ) -> anyhow::Result<Self> {
        let mut sims = Vec::new();
        for i in 1..=nodes {
            sims.push(SimNode::start(SimConfig::new(format!("ast{i}"))).await?);
        }
        let store = store::connect(&store::Config {
            farm: format!("{farm}{}", rand::random::<u32>() % 100_000),
            redis_url: redis.clone(),
            ..store::Config::default()
        })
        .await
        .context("cannot start the store")?;
        let specs: Vec<NodeSpec> = sims
            .iter()
            .map(|s| {
                Ok(NodeSpec {
                    ari: crate::ari::Config {
                        node: NodeId::new(s.id())?,
                        base_url: s.base_url(),
                        username: SimConfig::DEFAULT_CREDENTIALS.into(),
                        password: SimConfig::DEFAULT_CREDENTIALS.into(),
                        app: "corral".into(),
                        request_timeout: Duration::from_secs(2),
                    },
                    sip_host: s.addr().to_string(),
                    capacity: 500,
                    max_rooms: None,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let ctrl = Controller::new(
            controller::Config::default(),
            store.clone(),
            specs,
            Arc::new(Metrics::new()),
        )?;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let running = {
            let (c, s) = (ctrl.clone(), shutdown.clone());
            OwnedTask::spawn(async move { c.run(s).await })
        };
        let t0 = Instant::now();
        while !ctrl.nodes_streaming().iter().all(|(_, up)| *up) {
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(10),
                "nodes did not stream"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = crate::api::router(crate::api::AppState::new(ctrl.clone(), Some(TOKEN.into())));
        let api = OwnedTask::spawn(crate::api::serve(
            listener,
            app,
            crate::api::ServerConfig::default(),
            shutdown.clone(),
        ));
        Ok(Self {
            ctrl,
            store,
            addr,
            _stop: shutdown.clone().drop_guard(),
            shutdown,
            running,
            _api: api,
            _sims: sims,
        })
    }

    /// Stops the API and the controller.
    pub(super) async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.running.await;
    }
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.nodes > 0
            && args.rooms > 0
            && args.concurrency > 0
            && args.seconds > 0
            && args.rate > 0,
        "every count must be positive"
    );
    let bench = BenchApi::start(args.redis.clone(), args.nodes, "benchapi").await?;
    let (ctrl, store, addr) = (bench.ctrl.clone(), bench.store.clone(), bench.addr);

    let rooms: Arc<Vec<RoomKey>> = Arc::new(
        (0..args.rooms)
            .map(|i| RoomKey::parse("conference", &format!("bench{i}")))
            .collect::<Result<_, _>>()?,
    );
    // Place every room first, through the controller (policy + store).
    for r in rooms.iter() {
        ctrl.placement(r, None).await?;
    }
    let owners: Arc<Vec<NodeId>> = {
        let mut v = Vec::with_capacity(rooms.len());
        for r in rooms.iter() {
            let d = store.get_room(r).await?.context("room placed")?;
            v.push(d.placement.node);
        }
        Arc::new(v)
    };
    let client = Arc::new(RawClient::new(addr, TOKEN));
    let paths: Arc<Vec<String>> = Arc::new(
        rooms
            .iter()
            .map(|r| format!("/v1/rooms/{}/{}/placement", r.kind, r.name))
            .collect(),
    );
    let api_op = {
        let (client, paths) = (client.clone(), paths.clone());
        move |i: usize| {
            let (client, paths) = (client.clone(), paths.clone());
            async move { client.post(&paths[i % paths.len()]).await }
        }
    };
    let store_op = {
        let (store, rooms, owners) = (store.clone(), rooms.clone(), owners.clone());
        move |i: usize| {
            let (store, rooms, owners) = (store.clone(), rooms.clone(), owners.clone());
            async move {
                let k = i % rooms.len();
                store.resolve_placement(&rooms[k], &owners[k]).await.is_ok()
            }
        }
    };
    let d = Duration::from_secs(args.seconds);
    println!(
        "corral bench api: {} nodes, {} store, {} rooms placed, {} in flight, {} s per run",
        args.nodes,
        if args.redis.is_some() {
            "redis"
        } else {
            "memory"
        },
        args.rooms,
        args.concurrency,
        args.seconds
    );
    // The load generator runs on its own runtime thread, so the server's
    // runtime is not also scheduling the generator's tasks; both loads are
    // driven from it alike.
    let c = args.concurrency;
    // Warm both paths (connections, caches) before measuring.
    load_runtime()
        .spawn(closed_loop(c, Duration::from_millis(500), api_op.clone()))
        .await?;
    let mut s = load_runtime()
        .spawn(closed_loop(c, d, store_op.clone()))
        .await?;
    let mut a = load_runtime()
        .spawn(closed_loop(c, d, api_op.clone()))
        .await?;
    println!("{}", s.line("store resolve_placement"));
    println!("{}", a.line("API POST .../placement"));
    println!(
        "API / store throughput: {:.2} (goal >= 0.50)",
        a.rate() / s.rate().max(1.0)
    );
    // Where the paced p99 goes: the same rate offered to the HTTP floor
    // (`GET /healthz`: generator, connection, server, router; no work) and
    // to the store's own decision, one after the other in the same run.
    let healthz = {
        let client = client.clone();
        move |_: usize| {
            let client = client.clone();
            async move { client.get("/healthz").await }
        }
    };
    let mut p = load_runtime().spawn(paced(args.rate, d, api_op)).await?;
    let mut floor = load_runtime().spawn(paced(args.rate, d, healthz)).await?;
    let mut sp = load_runtime().spawn(paced(args.rate, d, store_op)).await?;
    println!("{}", p.line(&format!("API paced at {}/s", args.rate)));
    println!("{}", floor.line("GET /healthz paced (floor)"));
    println!("{}", sp.line("store resolve_placement paced"));
    let (p99, floor99, store99) = (pct(&p.lat, 0.99), pct(&floor.lat, 0.99), pct(&sp.lat, 0.99));
    println!(
        "paced p99 {} (goal < 2 ms at 5000/s: {}); the HTTP floor's p99 {}, the store's own {}; generator lag at most {}",
        ms(p99),
        if p99 < Duration::from_millis(2) {
            "met"
        } else {
            "missed"
        },
        ms(floor99),
        ms(store99),
        ms(p.lag.max(floor.lag).max(sp.lag))
    );
    bench.stop().await;
    Ok(())
}
