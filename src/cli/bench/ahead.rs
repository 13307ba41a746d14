//! `corral bench ahead`: the proxy's route-ahead lookup,
//! `GET /v1/route/conf-<room>`, offered at `--rate` lookups/s (open loop)
//! through the real HTTP API (router, controller, owner decision, store),
//! with two baselines measured in the same run at the same rate:
//! - `GET /healthz` over the same client and server: the HTTP floor
//!   (generator, connection, router), so what the lookup itself adds is
//!   the difference;
//! - the store's `resolve_placement` called directly for existing rooms:
//!   the owner decision's own cost.
//!
//! The lookups run twice: every lookup a new room (each places one, the
//! policy's choice applied by the store), then `--rooms` of those rooms
//! again and again (the lookup a call for a running room makes). Goal:
//! p99 under 1 ms at 2,000 lookups/s on the memory store, under 2 ms on
//! Redis. The generator shares the machine's cores with corral (and
//! Redis); its worst lag behind schedule is printed apart.

use std::sync::Arc;
use std::time::Duration;

use super::api::{BenchApi, RawClient, TOKEN, load_runtime, ms, paced, pct};
use crate::domain::{NodeId, RoomKey};

/// Flags of `corral bench ahead`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Redis URL (default: the in-memory store).
    #[arg(long)]
    pub redis: Option<String>,
    /// Simulated nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Lookups per second offered.
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Seconds of each paced run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Running rooms the second lookup run cycles through.
    #[arg(long, default_value_t = 2000)]
    pub rooms: usize,
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.nodes > 0 && args.rate > 0 && args.seconds > 0 && args.rooms > 0,
        "every count must be positive"
    );
    let bench = BenchApi::start(args.redis.clone(), args.nodes, "benchahead").await?;
    let client = Arc::new(RawClient::new(bench.addr, TOKEN));
    let d = Duration::from_secs(args.seconds);
    let goal = if args.redis.is_some() { 2.0 } else { 1.0 };
    println!(
        "corral bench ahead: {} nodes, {} store, {} lookups/s offered for {} s per run (goal p99 < {goal} ms)",
        args.nodes,
        if args.redis.is_some() {
            "redis"
        } else {
            "memory"
        },
        args.rate,
        args.seconds
    );
    let get = |paths: Arc<Vec<String>>| {
        let client = client.clone();
        move |i: usize| {
            let (client, paths) = (client.clone(), paths.clone());
            async move { client.get(&paths[i % paths.len()]).await }
        }
    };
    let healthz = get(Arc::new(vec!["/healthz".to_string()]));
    // Warm the connections.
    load_runtime()
        .spawn(paced(args.rate, Duration::from_secs(1), healthz.clone()))
        .await?;

    let total = (args.rate * args.seconds) as usize;
    let new_rooms: Arc<Vec<String>> = Arc::new(
        (0..total)
            .map(|i| format!("/v1/route/conf-ahead{i}"))
            .collect(),
    );
    let running: Arc<Vec<String>> = Arc::new(
        new_rooms
            .iter()
            .take(args.rooms.min(total))
            .cloned()
            .collect(),
    );

    let mut floor = load_runtime().spawn(paced(args.rate, d, healthz)).await?;
    let mut placing = load_runtime()
        .spawn(paced(args.rate, d, get(new_rooms)))
        .await?;
    let mut again = load_runtime()
        .spawn(paced(args.rate, d, get(running.clone())))
        .await?;
    // The store's own decision for the same running rooms, at the same rate.
    let mut keys = Vec::new();
    for p in running.iter() {
        let name = p.trim_start_matches("/v1/route/conf-");
        let room = RoomKey::parse("conference", name)?;
        let owner: NodeId = match bench.store.get_room(&room).await? {
            Some(d) => d.placement.node,
            None => anyhow::bail!("room {name} was not placed by its lookup"),
        };
        keys.push((room, owner));
    }
    let keys = Arc::new(keys);
    let store = bench.store.clone();
    let mut decision = load_runtime()
        .spawn(paced(args.rate, d, move |i: usize| {
            let (store, keys) = (store.clone(), keys.clone());
            async move {
                let (room, owner) = &keys[i % keys.len()];
                store.resolve_placement(room, owner).await.is_ok()
            }
        }))
        .await?;

    println!("{}", floor.line("GET /healthz (HTTP floor)"));
    println!("{}", decision.line("store resolve_placement"));
    println!("{}", placing.line("lookup, each a new room"));
    println!("{}", again.line("lookup, running rooms"));
    for (what, f) in [("new rooms", &placing), ("running rooms", &again)] {
        let p99 = pct(&f.lat, 0.99);
        println!(
            "{what}: p99 {} (goal < {goal} ms: {}), {} over the HTTP floor's p99; generator lag at most {}",
            ms(p99),
            if p99.as_secs_f64() * 1000.0 < goal {
                "met"
            } else {
                "missed"
            },
            ms(p99.saturating_sub(pct(&floor.lat, 0.99))),
            ms(f.lag)
        );
    }
    let answered = placing.ops - placing.errors + again.ops - again.errors;
    println!(
        "{answered} of {} lookups answered with a node (2xx)",
        placing.ops + again.ops
    );
    bench.stop().await;
    Ok(())
}
