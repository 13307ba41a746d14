//! `corral chaos`: a fault matrix run from outside, as an operator's chaos
//! run would (issue 11).
//!
//! It starts a simulated farm as separate processes (`farm`: one
//! `redis-server`, N `corral sim-node`, two `corral serve` replicas), and
//! then, for each fault in turn (`faults`), drives calls through a model of
//! Kamailio's dispatcher (`caller`), injects the fault once the rooms are
//! up, and judges what the nodes' ARI and control API show (`checker`):
//! each call's fate, splits and how long they last, and corral's reaction
//! times. One row per fault, and the promises held against it (`report`).
//! `real-node-kill` runs on the real farm instead (`real`).
//!
//! Phases do not share calls or rooms: phase k dials rooms `pk r0..` with
//! call ids `pkc1..`; before each phase the farm is healed (nodes started
//! again, replicas restarted) and every node's stream is held again.
//!
//! Exits non-zero when a promise breaks, naming it and the seed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

mod caller;
mod checker;
mod farm;
mod faults;
mod real;
mod report;

use faults::Fault;
use report::{Promises, Row};

/// Unix time in ms (the nodes stamp their logs with the same clock).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Flags of `corral chaos`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Faults to run, comma separated, in this order: node-kill,
    /// node-restart, node-stop, ws-cut, replica-kill, redis-restart,
    /// rest-5xx, event-delay, event-dup, proxy-302, real-node-kill (or
    /// `all`: every simulated one).
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pub faults: Vec<String>,
    /// Add the real-farm fault (real-node-kill: real Asterisk, Kamailio,
    /// sipp, corral serve on Redis; see README, "The real farm").
    #[arg(long)]
    pub real: bool,
    /// Simulated nodes.
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// `corral serve` replicas on the one Redis.
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
    /// Calls per second offered.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Conference rooms per phase.
    #[arg(long, default_value_t = 20)]
    pub rooms: usize,
    /// Mean hold time of a call, ms (each call 0.5 to 1.5 times this).
    #[arg(long, default_value_t = 3000)]
    pub hold_ms: u64,
    /// Seconds of load per fault (made longer when the fault and the
    /// promise's bound would not fit).
    #[arg(long, default_value_t = 12.0)]
    pub duration: f64,
    /// Seconds of load before the fault.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// How long a fault with a length lasts, seconds (SIGSTOP, 5xx burst,
    /// event delay or duplication, 302 drops).
    #[arg(long, default_value_t = 4.0)]
    pub fault_secs: f64,
    /// Seed of the callers and the nodes' fault randomness (default: fresh;
    /// printed at start and on failure).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop everything after this many seconds, whatever is running
    /// (default: enough for the matrix, plus a minute).
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Promise: every room in one bridge on one node within this after a
    /// fault ends, ms.
    #[arg(long, default_value_t = 2000)]
    pub whole_within_ms: i64,
    /// Promise: after Redis restarted empty, every room whole within this
    /// of Redis being back, ms.
    #[arg(long, default_value_t = 5000)]
    pub redis_whole_within_ms: i64,
    /// Promise: a crashed node's rooms released within this, ms.
    #[arg(long, default_value_t = 500)]
    pub crash_detect_ms: i64,
    /// Promise: a hung (SIGSTOPped) node takes no new rooms after this, ms.
    #[arg(long, default_value_t = 3000)]
    pub hung_stop_ms: i64,
    /// Share of ARI requests answered 500 during rest-5xx.
    #[arg(long, default_value_t = 0.3)]
    pub rest_error_rate: f64,
    /// Event latency during event-delay, ms (each event arrives this much
    /// later, the stream is not slowed).
    #[arg(long, default_value_t = 300)]
    pub event_delay_ms: u64,
    /// Share of events sent twice during event-dup.
    #[arg(long, default_value_t = 0.3)]
    pub duplicate_events: f64,
    /// `CORRAL_*` overrides for the replicas, KEY=VALUE (repeatable), e.g.
    /// `CORRAL_CONTROLLER_LEASE_TTL_MS=3000`.
    #[arg(long = "corral-env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub corral_env: Vec<(String, String)>,
    /// Keep the run's directory (every process's log) even when all
    /// promises hold.
    #[arg(long)]
    pub keep: bool,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .filter(|(k, _)| k.starts_with("CORRAL_") && k.len() > 7)
        .ok_or_else(|| format!("expected CORRAL_KEY=VALUE, got {s:?}"))?;
    Ok((k.to_string(), v.to_string()))
}

/// The faults the flags name, in order.
fn chosen(args: &Args) -> anyhow::Result<Vec<Fault>> {
    let mut out = Vec::new();
    for name in &args.faults {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        if name == "all" {
            out.extend(Fault::ALL.into_iter().filter(|f| !f.is_real()));
            continue;
        }
        let f = Fault::parse(name)
            .ok_or_else(|| anyhow::anyhow!("unknown fault {name:?}; known: {}", Fault::names()))?;
        out.push(f);
    }
    if args.real && !out.contains(&Fault::RealNodeKill) {
        out.push(Fault::RealNodeKill);
    }
    anyhow::ensure!(!out.is_empty(), "no fault chosen (--faults)");
    Ok(out)
}

/// The checks of odd input, before anything starts.
fn validate(args: &Args) -> anyhow::Result<()> {
    let finite = |name: &str, v: f64, lo: f64, hi: f64| {
        anyhow::ensure!(
            v.is_finite() && v >= lo && v <= hi,
            "--{name} must be between {lo} and {hi}, got {v}"
        );
        Ok(())
    };
    finite("rate", args.rate, 0.1, 2000.0)?;
    finite("duration", args.duration, 1.0, 3600.0)?;
    finite("warmup", args.warmup, 0.0, 600.0)?;
    finite("fault-secs", args.fault_secs, 0.1, 600.0)?;
    finite("rest-error-rate", args.rest_error_rate, 0.0, 1.0)?;
    finite("duplicate-events", args.duplicate_events, 0.0, 1.0)?;
    if let Some(t) = args.timeout {
        finite("timeout", t, 1.0, 86_400.0)?;
    }
    anyhow::ensure!((1..=64).contains(&args.nodes), "--nodes must be 1 to 64");
    anyhow::ensure!(
        (1..=8).contains(&args.replicas),
        "--replicas must be 1 to 8"
    );
    anyhow::ensure!(
        (1..=10_000).contains(&args.rooms),
        "--rooms must be 1 to 10000"
    );
    anyhow::ensure!(args.hold_ms <= 600_000, "--hold-ms must be at most 600000");
    for (name, v) in [
        ("whole-within-ms", args.whole_within_ms),
        ("redis-whole-within-ms", args.redis_whole_within_ms),
        ("crash-detect-ms", args.crash_detect_ms),
        ("hung-stop-ms", args.hung_stop_ms),
    ] {
        anyhow::ensure!((0..=600_000).contains(&v), "--{name} must be 0 to 600000");
    }
    Ok(())
}

/// Seconds of load a phase gets: the flag, or more when the warm-up, the
/// fault and the promise's bound need it.
fn load_secs(args: &Args, f: Fault) -> f64 {
    let bound = match f {
        Fault::RedisRestart => args.redis_whole_within_ms,
        _ => args.whole_within_ms,
    } as f64
        / 1000.0;
    let fault = match f {
        Fault::NodeStop
        | Fault::Rest5xx
        | Fault::EventDelay
        | Fault::EventDup
        | Fault::Proxy302 => args.fault_secs,
        Fault::NodeRestart => 1.5,
        _ => 0.5,
    };
    args.duration.max(args.warmup + fault + bound + 1.0)
}

/// Runs the matrix; `Err` when a promise broke (after the table) or the
/// run could not be made.
pub async fn run(args: Args) -> anyhow::Result<()> {
    validate(&args)?;
    let faults = chosen(&args)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let per_phase: f64 = faults
        .iter()
        .map(|f| {
            if f.is_real() {
                120.0
            } else {
                load_secs(&args, *f) + args.hold_ms as f64 * 1.5 / 1000.0 + 20.0
            }
        })
        .sum();
    let hard = Duration::from_secs_f64(args.timeout.unwrap_or(per_phase + 60.0));
    println!(
        "corral chaos: seed {seed}; faults {}; {} nodes, {} replicas on one Redis; {} calls/s into {} rooms, hold {} ms; hard timeout {:.0} s",
        faults
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(","),
        args.nodes,
        args.replicas,
        args.rate,
        args.rooms,
        args.hold_ms,
        hard.as_secs_f64()
    );
    // Whatever happens, no process outlives the run: Drop kills them on
    // the way out; a panic or a second Ctrl-C kills every group we started.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        farm::kill_registered();
        default_hook(info);
    }));
    let dir = std::env::temp_dir().join(format!("corral-chaos-{}", std::process::id()));
    let matrix = matrix(&args, &faults, seed, &dir);
    // The second-signal watcher, owned by this scope: it must keep watching
    // while the interrupted run is torn down below.
    let mut _force_exit = None;
    let outcome = tokio::select! {
        r = tokio::time::timeout(hard, matrix) => match r {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("the run did not finish within its hard timeout of {:.0} s", hard.as_secs_f64())),
        },
        _ = crate::shutdown::wait_for_signal() => {
            // The matrix future is dropped here: the farm with it.
            _force_exit = Some(crate::shutdown::OwnedTask::spawn(async {
                crate::shutdown::wait_for_signal().await;
                farm::kill_registered();
                std::process::exit(130);
            }));
            Err(anyhow::anyhow!("interrupted"))
        }
    };
    farm::kill_registered();
    match outcome {
        Ok(rows) => {
            let broken: Vec<&Row> = rows.iter().filter(|r| !r.broken.is_empty()).collect();
            if broken.is_empty() {
                if !args.keep {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                println!("every promise held (seed {seed})");
                Ok(())
            } else {
                println!("logs: {}", dir.display());
                anyhow::bail!(
                    "promises broken in {} of {} faults: {} (seed {seed})",
                    broken.len(),
                    rows.len(),
                    broken
                        .iter()
                        .map(|r| r.fault.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        }
        Err(e) => {
            println!("logs: {}", dir.display());
            Err(e.context(format!("corral chaos (seed {seed})")))
        }
    }
}

/// Every phase, printing each row as it is judged.
async fn matrix(
    args: &Args,
    faults: &[Fault],
    seed: u64,
    dir: &std::path::Path,
) -> anyhow::Result<Vec<Row>> {
    let promises = Promises {
        whole_within_ms: args.whole_within_ms,
        redis_whole_within_ms: args.redis_whole_within_ms,
        crash_detect_ms: args.crash_detect_ms,
        hung_stop_ms: args.hung_stop_ms,
    };
    let settings = faults::Settings {
        fault_secs: args.fault_secs,
        rest_error_rate: args.rest_error_rate,
        event_delay_ms: args.event_delay_ms,
        duplicate_events: args.duplicate_events,
        crash_detect_ms: args.crash_detect_ms,
        hung_stop_ms: args.hung_stop_ms,
    };
    let mut rows = Vec::new();
    let sim: Vec<Fault> = faults.iter().copied().filter(|f| !f.is_real()).collect();
    let mut printed_header = false;
    let mut print = |row: &Row| {
        if !printed_header {
            println!("\n{}", report::header());
            printed_header = true;
        }
        println!("{}", report::line(row));
    };
    if !sim.is_empty() {
        let mut farm = farm::SimFarm::start(farm::FarmOptions {
            nodes: args.nodes,
            replicas: args.replicas,
            seed,
            dir: dir.to_path_buf(),
            corral_env: args.corral_env.clone(),
        })
        .await
        .context("the simulated farm did not start")?;
        let nodes: Arc<[farm::NodeAddr]> = farm.nodes().into();
        let node_ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
        let observer = checker::Observer::start(
            nodes.clone(),
            farm.board(),
            farm.replicas().into_iter().map(|(u, _)| u).collect(),
            crate::sim::SimConfig::DEFAULT_CREDENTIALS,
            crate::testbed::render::ARI_PASSWORD,
        )?;
        println!(
            "farm up: {} (Redis {}); logs in {}",
            node_ids.join(", "),
            farm.redis_url(),
            farm.dir().display()
        );
        let run = Run {
            args,
            seed,
            observer: &observer,
            nodes: &nodes,
            node_ids: &node_ids,
            settings: &settings,
            promises: &promises,
        };
        for (k, f) in faults.iter().enumerate() {
            if f.is_real() {
                continue;
            }
            let row = phase(k + 1, *f, run, &mut farm).await?;
            print(&row);
            rows.push(row);
        }
    }
    if faults.contains(&Fault::RealNodeKill) {
        let row = real::phase(args, seed, &dir.join("real"), &promises).await?;
        print(&row);
        rows.push(row);
    }
    println!("\n{}", report::LEGEND);
    println!();
    for r in &rows {
        println!("{}", report::details(r));
    }
    for r in rows.iter().filter(|r| !r.broken.is_empty()) {
        for b in &r.broken {
            println!("BROKEN {}: {b}", r.fault);
        }
    }
    Ok(rows)
}

/// What every phase of a run on the simulated farm shares.
#[derive(Clone, Copy)]
struct Run<'a> {
    args: &'a Args,
    seed: u64,
    observer: &'a checker::Observer,
    nodes: &'a Arc<[farm::NodeAddr]>,
    node_ids: &'a [String],
    settings: &'a faults::Settings,
    promises: &'a Promises,
}

/// One fault on the simulated farm.
async fn phase(
    k: usize,
    fault: Fault,
    run: Run<'_>,
    farm: &mut farm::SimFarm,
) -> anyhow::Result<Row> {
    let Run {
        args,
        seed,
        observer,
        nodes,
        node_ids,
        settings,
        promises,
    } = run;
    // Heal what the previous fault broke, and wait until every node's
    // stream is held again.
    farm.heal_nodes().await?;
    farm.heal_replicas().await?;
    farm.wait_streamed(Duration::from_secs(30)).await?;
    let mut reset = false;
    if !farm.nodes_up_in_store(Duration::from_secs(5)).await {
        // What the last fault left behind (e.g. a store that lost its
        // nodes) must not be charged to this one: restart the replicas.
        reset = true;
        farm.restart_replicas().await?;
        farm.wait_streamed(Duration::from_secs(30)).await?;
        anyhow::ensure!(
            farm.nodes_up_in_store(Duration::from_secs(10)).await,
            "before {}: the nodes are not up in the store even after the replicas restarted",
            fault.name()
        );
    }
    let prefix = format!("p{k}r");
    let load = Duration::from_secs_f64(load_secs(args, fault));
    let hold = Duration::from_millis(args.hold_ms);
    let began = now_ms();
    let t0 = tokio::time::Instant::now();
    let stop = tokio_util::sync::CancellationToken::new();
    let deadline = t0 + load + hold.mul_f64(1.5) + Duration::from_secs(10);
    let cfg = caller::CallerConfig {
        rate: args.rate,
        rooms: (0..args.rooms).map(|i| format!("{prefix}{i}")).collect(),
        hold,
        prefix: format!("p{k}"),
        seed: seed.wrapping_add(k as u64 * 1_000_003),
    };
    let counts_start = observer.lock().counts();
    // A JoinSet aborts the callers if this phase is dropped (Ctrl-C).
    let mut callers = tokio::task::JoinSet::new();
    callers.spawn(caller::run(cfg, nodes.clone(), stop.clone(), deadline));
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let inj = faults::inject(fault, farm, observer, &prefix, settings).await?;
    // A replica's crash: how long until the survivors stream every node.
    let mut takeover = tokio::task::JoinSet::new();
    if fault == Fault::ReplicaKill {
        let survivors: Vec<String> = farm
            .replicas()
            .into_iter()
            .filter(|(_, up)| *up)
            .map(|(u, _)| u)
            .collect();
        takeover.spawn(watch_takeover(
            survivors,
            node_ids.len(),
            Duration::from_secs(40),
        ));
    }
    tokio::time::sleep_until(t0 + load).await;
    let load_end = now_ms();
    stop.cancel();
    let records = match callers.join_next().await {
        Some(Ok(r)) => r,
        _ => Vec::new(),
    };
    let recovered_at = match takeover.join_next().await {
        Some(Ok(t)) => t,
        _ => None,
    };
    observer.settle().await;
    let o = observer.lock();
    let counts = o.counts().minus(counts_start);
    let data = report::PhaseData {
        inj: &inj,
        calls: &records,
        logs: &o.calls,
        samples: &o.samples,
        events: &o.events,
        counts,
        prefix: &prefix,
        began,
        load_end,
        node_ids,
        recovered_at,
    };
    let mut row = report::judge(&data, promises);
    row.reset = reset;
    let file = farm.dir().join(format!("phase{k}-{}.txt", fault.name()));
    if let Err(e) = std::fs::write(&file, report::dump(&data)) {
        tracing::warn!(file = %file.display(), cause = %e, "phase dump not written");
    }
    Ok(row)
}

/// Polls the surviving replicas' `/readyz` until together they stream
/// `nodes` nodes; the time (Unix ms), or `None` within `deadline`.
async fn watch_takeover(survivors: Vec<String>, nodes: usize, deadline: Duration) -> Option<i64> {
    let http = reqwest::Client::new();
    let until = tokio::time::Instant::now() + deadline;
    while tokio::time::Instant::now() < until {
        let mut held = 0;
        for url in &survivors {
            held += farm::streams_of(&http, url).await.unwrap_or(0);
        }
        if held >= nodes {
            return Some(now_ms());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
