//! `corral bench sim`: how fast simulated nodes start, and how many calls a
//! second one node takes without dropping events.
//!
//! Figures, each next to a baseline measured in the same run:
//! - start: wall time to start N nodes concurrently (median, min, max over
//!   several runs), against binding N plain TCP listeners;
//! - calls: inbound calls offered at a fixed rate to one node with a
//!   websocket client that counts (or answers) each `StasisStart`; achieved
//!   calls/s, `POST /sim/calls` latency percentiles, and events expected
//!   versus received; the baseline is the same client hitting a no-op
//!   endpoint (`GET /sim/stats`) at the same rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::shutdown::OwnedTask;
use crate::sim::{SimConfig, SimNode};

/// Flags of `corral bench sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Nodes started at once in the start benchmark.
    #[arg(long, default_value_t = 50)]
    pub nodes: usize,
    /// Runs of the start benchmark (the median is reported).
    #[arg(long, default_value_t = 7)]
    pub runs: usize,
    /// Calls per second offered to one node.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// How long calls are offered, in seconds.
    #[arg(long, default_value_t = 3)]
    pub seconds: u64,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// The websocket client answers each StasisStart (POST .../answer)
    /// instead of only counting events.
    #[arg(long)]
    pub answer: bool,
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Runs both benchmarks and prints their figures.
pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.nodes > 0 && args.runs > 0,
        "--nodes and --runs must be positive"
    );
    anyhow::ensure!(
        args.rate > 0 && args.seconds > 0,
        "--rate and --seconds must be positive"
    );
    start_bench(&args).await?;
    calls_bench(&args).await
}

async fn start_bench(args: &Args) -> anyhow::Result<()> {
    let mut sim_times = Vec::new();
    let mut tcp_times = Vec::new();
    for run in 0..args.runs {
        let t0 = Instant::now();
        let mut listeners = Vec::new();
        for _ in 0..args.nodes {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
        }
        tcp_times.push(t0.elapsed());
        drop(listeners);

        let t0 = Instant::now();
        let nodes = futures_util::future::join_all(
            (0..args.nodes).map(|i| SimNode::start(SimConfig::new(format!("bench{run}-{i}")))),
        )
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .context("starting nodes")?;
        sim_times.push(t0.elapsed());
        // Every node answers before the next run.
        let http = reqwest::Client::new();
        for n in &nodes {
            let r = http
                .get(format!("{}/ari/asterisk/ping", n.base_url()))
                .basic_auth("corral", Some("corral"))
                .send()
                .await?;
            anyhow::ensure!(
                r.status().is_success(),
                "node {} did not answer ping",
                n.id()
            );
        }
        for n in &nodes {
            n.kill().await;
        }
    }
    let (min, max) = (
        sim_times.iter().min().copied().unwrap_or_default(),
        sim_times.iter().max().copied().unwrap_or_default(),
    );
    let sim_med = median(&mut sim_times);
    let tcp_med = median(&mut tcp_times);
    println!("start: {} nodes, {} runs", args.nodes, args.runs);
    println!(
        "  sim nodes started   median {}  (min {}, max {})",
        ms(sim_med),
        ms(min),
        ms(max)
    );
    println!("  baseline tcp bind   median {}", ms(tcp_med));
    println!(
        "  ratio sim/baseline  {:.1}x; under one second: {}",
        sim_med.as_secs_f64() / tcp_med.as_secs_f64().max(1e-9),
        if sim_med < Duration::from_secs(1) {
            "yes"
        } else {
            "NO"
        }
    );
    Ok(())
}

struct Offered {
    ok: u64,
    failed: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

async fn offer(
    args: &Args,
    make: impl Fn(u64) -> reqwest::RequestBuilder,
    ok_status: u16,
) -> Offered {
    let total = args.rate * args.seconds;
    let sem = Arc::new(Semaphore::new(args.concurrency));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total as usize)));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / args.rate as f64);
        tokio::time::sleep_until(due).await;
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let req = make(i);
        let (ok, failed, lat) = (ok.clone(), failed.clone(), lat.clone());
        tasks.push(OwnedTask::spawn(async move {
            let t0 = Instant::now();
            let res = req.send().await;
            let d = t0.elapsed();
            drop(permit);
            match res {
                Ok(r) if r.status().as_u16() == ok_status => {
                    ok.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut l) = lat.lock() {
                        l.push(d);
                    }
                }
                _ => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed();
    let mut latencies = lat.lock().map(|l| l.clone()).unwrap_or_default();
    latencies.sort();
    Offered {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed,
        latencies,
    }
}

async fn calls_bench(args: &Args) -> anyhow::Result<()> {
    let node = SimNode::start(SimConfig::new("bench-calls")).await?;
    let base = node.base_url();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;

    // The event client: counts every event, answers StasisStarts if asked.
    let url = format!(
        "ws://{}/ari/events?app=corral&api_key=corral:corral",
        node.addr()
    );
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .context("connecting the event websocket")?;
    let (_sink, mut stream) = ws.split();
    let starts = Arc::new(AtomicU64::new(0));
    let events = Arc::new(AtomicU64::new(0));
    let (s2, e2, h2, b2, answer) = (
        starts.clone(),
        events.clone(),
        http.clone(),
        base.clone(),
        args.answer,
    );
    let reader = OwnedTask::spawn(async move {
        // The answers, owned by this reader (reaped as they end).
        let mut answers = tokio::task::JoinSet::new();
        while let Some(Ok(msg)) = stream.next().await {
            while answers.try_join_next().is_some() {}
            let Message::Text(text) = msg else { continue };
            e2.fetch_add(1, Ordering::Relaxed);
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            if v["type"] == "StasisStart" {
                s2.fetch_add(1, Ordering::Relaxed);
                if answer && let Some(id) = v["channel"]["id"].as_str() {
                    let req = h2
                        .post(format!("{b2}/ari/channels/{id}/answer"))
                        .basic_auth("corral", Some("corral"));
                    answers.spawn(async move {
                        let _ = req.send().await;
                    });
                }
            }
        }
    });

    // Baseline: a no-op endpoint at the same rate.
    let baseline = offer(args, |_| http.get(format!("{base}/sim/stats")), 200).await;

    let calls = offer(
        args,
        |i| {
            http.post(format!("{base}/sim/calls"))
                .json(&serde_json::json!({"exten": format!("conf-room{}", i % 100), "caller": i.to_string()}))
        },
        201,
    )
    .await;

    let per_call = if args.answer { 2 } else { 1 };
    let expected = calls.ok * per_call;
    let deadline = Instant::now() + Duration::from_secs(10);
    while events.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = events.load(Ordering::Relaxed);
    let stats = node.stats();
    drop(reader);

    let rate = |o: &Offered| o.ok as f64 / o.elapsed.as_secs_f64().max(1e-9);
    println!(
        "calls: one node, {} calls/s offered for {} s, client {}",
        args.rate,
        args.seconds,
        if args.answer {
            "answers each StasisStart"
        } else {
            "counts events"
        }
    );
    println!(
        "  calls created       {} ({} failed) in {:.2} s = {:.0} calls/s",
        calls.ok,
        calls.failed,
        calls.elapsed.as_secs_f64(),
        rate(&calls)
    );
    println!(
        "  POST /sim/calls     p50 {}  p99 {}  max {}",
        ms(pct(&calls.latencies, 0.5)),
        ms(pct(&calls.latencies, 0.99)),
        ms(pct(&calls.latencies, 1.0))
    );
    println!(
        "  baseline GET /sim/stats  {:.0} req/s, p50 {}  p99 {}",
        rate(&baseline),
        ms(pct(&baseline.latencies, 0.5)),
        ms(pct(&baseline.latencies, 0.99))
    );
    println!(
        "  events expected {}  received {}  (StasisStart {}; node: sent {}, dropped {}, sockets cut {})",
        expected,
        received,
        starts.load(Ordering::Relaxed),
        stats.events_sent,
        stats.events_dropped,
        stats.websockets_cut
    );
    println!(
        "  no event lost: {}",
        if received >= expected && stats.events_dropped == 0 {
            "yes"
        } else {
            "NO"
        }
    );
    node.kill().await;
    Ok(())
}
