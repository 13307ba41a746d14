//! `corral bench real`: call setup on the real farm (sipp → Kamailio →
//! real Asterisk nodes → corral), as sipp measures it from INVITE to 200 OK.
//!
//! Three phases on one farm, in one run, after a warm-up that is not
//! counted; every caller hangs up `--hold-ms` after the answer, so the
//! calls up stay few:
//! 1. **Route ahead, against the floor, side by side**: callers into
//!    `--rooms` rooms through the shipped Kamailio, which asks corral where
//!    each room lives before it dispatches and, at the same time and rate,
//!    the floor: callers into other rooms, each room's calls sent by
//!    Kamailio straight to one node (the request URI names it), so none is
//!    redirected. Each proxy call is classed, from the nodes' ARI read
//!    while it is up, as *landed* (it arrived on its room's node) or
//!    *redirected* (it arrived in the token context after a 302 Kamailio
//!    followed). The redirect share.
//! 2. **Round-robin, against the floor, side by side**: the same with
//!    corral restarted with `api.route_ahead = false` (no opinion:
//!    Kamailio's round-robin, so most calls land away and are redirected);
//!    then corral is restarted as it was.
//! 3. **A ramp**: calls through the proxy (route ahead) at rising rates;
//!    the highest rate whose setup p99 stays within twice the first
//!    step's.
//!
//! Percentiles, never one timing; the floor runs in the same window as
//! what it is compared with, so the machine's load is the same for both.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context;
use rand::{RngExt, SeedableRng};

use crate::testbed::sipp::Calls;
use crate::testbed::{FarmOptions, RealFarm, SippRun};

/// Flags of `corral bench real`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Asterisk nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Rooms the calls of each phase go to.
    #[arg(long, default_value_t = 6)]
    pub rooms: usize,
    /// Calls in phases 1 and 2.
    #[arg(long, default_value_t = 120)]
    pub calls: u32,
    /// Calls per second in phases 1 and 2.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// How long each caller holds its call after the answer (ms).
    #[arg(long, default_value_t = 2000)]
    pub hold_ms: u64,
    /// The ramp's rates (calls/s), comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [5.0, 10.0, 20.0, 40.0, 80.0])]
    pub ramp: Vec<f64>,
    /// Seconds of calls per ramp step (enough calls that p99 is not just
    /// the slowest one).
    #[arg(long, default_value_t = 10.0)]
    pub step_secs: f64,
    /// Run corral on this Redis instead of the memory store.
    #[arg(long)]
    pub redis: Option<String>,
}

/// Runs the benchmark.
pub async fn run(args: Args) -> anyhow::Result<()> {
    println!("corral bench real: {}", machine());
    let dir = std::env::temp_dir().join(format!("corral-bench-real-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let opts = FarmOptions {
        nodes: args.nodes.max(1),
        corral_binary: std::env::current_exe()?,
        redis_url: args.redis.clone(),
        corral_env: vec![(
            "CORRAL_FARM".into(),
            format!("benchreal{}", std::process::id()),
        )],
        dir: dir.clone(),
        start_corral: true,
    };
    let mut farm = RealFarm::start(opts)
        .await
        .context("the real farm did not start (README, \"The real farm\", says what it needs)")?;
    farm.wait_streaming(Duration::from_secs(20)).await?;
    println!(
        "{} real Asterisk nodes, Kamailio, corral serve on the {} store; files in {}",
        farm.nodes.len(),
        if args.redis.is_some() {
            "Redis"
        } else {
            "memory"
        },
        dir.display()
    );
    let rooms = args.rooms.max(1);

    let hold = Duration::from_millis(args.hold_ms);

    // Warm-up, not counted: the first calls after the farm starts pay for
    // the nodes' and the proxy's first use.
    let warm: Vec<String> = (0..rooms).map(|i| format!("bw{i}")).collect();
    let w = calls_into(&farm, &warm, args.calls / 2, args.rate, false, hold, "w").await?;
    finish(&farm, w.runs).await;

    // 1. Route ahead (Kamailio asks corral first), against the floor, side
    //    by side.
    let ahead = side_by_side(&farm, &args, rooms, hold, "a").await?;
    // 2. Round-robin (corral restarted with route ahead off: no opinion),
    //    against the floor, side by side; then corral as it was.
    restart_corral(&mut farm, false).await?;
    let rr = side_by_side(&farm, &args, rooms, hold, "r").await?;
    restart_corral(&mut farm, true).await?;

    println!(
        "\n== call setup, INVITE → 200 OK as sipp sees it ({} calls each at {}/s into {rooms} rooms, each beside as many floor calls, held {} ms) ==",
        args.calls, args.rate, args.hold_ms
    );
    println!(
        "{:<44} {:>6} {:>10} {:>10}",
        "calls", "n", "p50 ms", "p99 ms"
    );
    for (what, w) in [
        ("route ahead", &ahead),
        ("round-robin (no route ahead)", &rr),
    ] {
        row(&format!("{what}, all"), &w.proxy.all());
        row(&format!("{what}, landed"), &w.proxy.landed);
        row(&format!("{what}, redirected"), &w.proxy.redirected);
        row(&format!("{what}: the floor beside it"), &w.floor);
    }
    println!(
        "redirect share: route ahead {:.1}% ({} of {}), round-robin {:.1}% ({} of {}); floor: {} redirected",
        ahead.proxy.share() * 100.0,
        ahead.proxy.redirected.len(),
        ahead.proxy.total(),
        rr.proxy.share() * 100.0,
        rr.proxy.redirected.len(),
        rr.proxy.total(),
        ahead.floor_redirected + rr.floor_redirected
    );
    let ratio = |v: &[Duration], p: f64, f: &[Duration]| ms(pct(v, p)) / ms(pct(f, p)).max(1e-9);
    println!(
        "against the floor beside it: route ahead p50 {:.2}x p99 {:.2}x; round-robin p50 {:.2}x p99 {:.2}x (its redirected calls p50 {:.2}x)",
        ratio(&ahead.proxy.all(), 50.0, &ahead.floor),
        ratio(&ahead.proxy.all(), 99.0, &ahead.floor),
        ratio(&rr.proxy.all(), 50.0, &rr.floor),
        ratio(&rr.proxy.all(), 99.0, &rr.floor),
        ratio(&rr.proxy.redirected, 50.0, &rr.floor),
    );

    // 3. The ramp (route ahead on).
    println!(
        "\n== ramp through the proxy ({:.0} s of calls per step into {rooms} rooms) ==",
        args.step_secs
    );
    println!(
        "{:>8} {:>6} {:>8} {:>10} {:>10} {:>9}",
        "calls/s", "n", "failed", "p50 ms", "p99 ms", "p99/base"
    );
    let mut base: Option<f64> = None;
    let mut last_ok: Option<f64> = None;
    for (step, rate) in args.ramp.iter().enumerate() {
        let n = ((rate * args.step_secs).round() as u32).max(1);
        let names: Vec<String> = (0..rooms).map(|i| format!("br{step}x{i}")).collect();
        let r = calls_into(&farm, &names, n, *rate, false, hold, &format!("r{step}")).await?;
        let all: Vec<Duration> = r.setup.values().copied().collect();
        let p99 = ms(pct(&all, 99.0));
        let b = *base.get_or_insert(p99);
        let ratio = p99 / b.max(1e-9);
        println!(
            "{:>8.0} {:>6} {:>8} {:>10.2} {:>10.2} {:>9.2}",
            rate,
            all.len(),
            r.failed,
            ms(pct(&all, 50.0)),
            p99,
            ratio
        );
        if ratio <= 2.0 && r.failed == 0 {
            last_ok = Some(*rate);
        }
        finish(&farm, r.runs).await;
        if ratio > 2.0 {
            break;
        }
    }
    match last_ok {
        Some(r) => println!(
            "setup p99 stays within 2x the first step's up to {r:.0} calls/s through one corral"
        ),
        None => println!("setup p99 doubled at the first rate"),
    }
    Ok(())
}

/// A phase through the proxy and the floor run beside it.
struct SideBySide {
    proxy: Classed,
    floor: Vec<Duration>,
    floor_redirected: usize,
}

/// `args.calls` calls through the proxy and as many straight to the
/// rooms' nodes (the floor), in the same window, at the same rate.
async fn side_by_side(
    farm: &RealFarm,
    args: &Args,
    rooms: usize,
    hold: Duration,
    tag: &str,
) -> anyhow::Result<SideBySide> {
    let names: Vec<String> = (0..rooms).map(|i| format!("b{tag}p{i}")).collect();
    let floor_names: Vec<String> = (0..rooms).map(|i| format!("b{tag}f{i}")).collect();
    let watch = Watch::start(farm);
    let (ptag, ftag) = (format!("{tag}p"), format!("{tag}f"));
    let (phase, floor) = tokio::join!(
        calls_into(farm, &names, args.calls, args.rate, false, hold, &ptag),
        calls_into(farm, &floor_names, args.calls, args.rate, true, hold, &ftag),
    );
    let (phase, floor) = (phase?, floor?);
    let context = watch.stop().await;
    let proxy = Classed::of(&phase, &context);
    let floor_redirected = floor
        .setup
        .keys()
        .filter(|c| context.get(*c).map(String::as_str) == Some("corral-token"))
        .count();
    let floor_setup = floor.setup.values().copied().collect();
    finish(farm, phase.runs).await;
    finish(farm, floor.runs).await;
    Ok(SideBySide {
        proxy,
        floor: floor_setup,
        floor_redirected,
    })
}

/// A phase's answered calls' setup times, by how they reached their room.
struct Classed {
    /// Arrived on the room's node.
    landed: Vec<Duration>,
    /// Arrived with a token, after a 302 Kamailio followed.
    redirected: Vec<Duration>,
}

impl Classed {
    fn of(phase: &Phase, context: &HashMap<String, String>) -> Self {
        let mut c = Classed {
            landed: Vec::new(),
            redirected: Vec::new(),
        };
        for (caller, setup) in &phase.setup {
            match context.get(caller).map(String::as_str) {
                Some("corral-token") => c.redirected.push(*setup),
                _ => c.landed.push(*setup),
            }
        }
        c
    }

    fn all(&self) -> Vec<Duration> {
        self.landed
            .iter()
            .chain(&self.redirected)
            .copied()
            .collect()
    }

    fn total(&self) -> usize {
        self.landed.len() + self.redirected.len()
    }

    fn share(&self) -> f64 {
        self.redirected.len() as f64 / self.total().max(1) as f64
    }
}

/// Restarts corral with route ahead on or off (`CORRAL_API_ROUTE_AHEAD`)
/// and waits until it streams every node again.
async fn restart_corral(farm: &mut RealFarm, ahead: bool) -> anyhow::Result<()> {
    let corral = farm.corral.as_mut().context("corral runs")?;
    corral.set_env(
        "CORRAL_API_ROUTE_AHEAD",
        if ahead { None } else { Some("false") },
    );
    corral.restart().await?;
    farm.wait_streaming(Duration::from_secs(20)).await?;
    Ok(())
}

/// One phase's calls and what was seen of them.
struct Phase {
    /// Caller number → setup time (answered calls).
    setup: BTreeMap<String, Duration>,
    failed: usize,
    runs: Vec<SippRun>,
}

/// Sends `calls` calls at `rate` into `rooms` (one sipp per room), through
/// the proxy, each held `hold`; with `straight`, each room's calls name one
/// node in the request URI (room i → node i mod n). Returns once every call
/// is answered or failed (or 60 s passed).
async fn calls_into(
    farm: &RealFarm,
    rooms: &[String],
    calls: u32,
    rate: f64,
    straight: bool,
    hold: Duration,
    tag: &str,
) -> anyhow::Result<Phase> {
    // Rooms of unequal sizes (seeded by the tag): equal rates would keep
    // the rooms' calls in lockstep with the proxy's round-robin, so that a
    // room's calls would always land on the same node.
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        tag.bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))),
    );
    let weights: Vec<f64> = rooms.iter().map(|_| rng.random_range(0.5..1.5)).collect();
    let total: f64 = weights.iter().sum();
    let counts = split_counts(calls, &weights);
    let mut runs = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        let count = counts[i];
        if count == 0 {
            continue;
        }
        let domain = straight.then(|| farm.nodes[i % farm.nodes.len()].sip_addr());
        let batch = Calls {
            service: format!("conf-{room}"),
            caller: format!("{tag}{room}"),
            count,
            rate: rate * weights[i] / total,
            target: farm.kamailio.addr(),
            domain,
        };
        runs.push(farm.sipp.brief_callers(
            &farm.dir().join("sipp"),
            &format!("{tag}-{room}"),
            &batch,
            hold,
        )?);
    }
    let until =
        tokio::time::Instant::now() + Duration::from_secs_f64(f64::from(calls) / rate + 60.0);
    loop {
        let settled: usize = runs
            .iter()
            .map(|r| r.answered().len() + r.failed().len())
            .sum();
        if settled >= calls as usize || tokio::time::Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut setup = BTreeMap::new();
    let mut failed = 0;
    for r in &runs {
        setup.extend(r.answered().into_iter().map(|(c, a)| (c, a.setup)));
        failed += r.failed().len();
    }
    Ok(Phase {
        setup,
        failed,
        runs,
    })
}

/// Reads every node's channels every 100 ms in the background, to learn
/// how each call arrived (its dialplan context) while it is up.
struct Watch {
    stop: tokio::sync::oneshot::Sender<()>,
    task: crate::shutdown::OwnedTask<HashMap<String, String>>,
}

impl Watch {
    fn start(farm: &RealFarm) -> Watch {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let urls: Vec<String> = farm.nodes.iter().map(|n| n.ari_url()).collect();
        let task = crate::shutdown::OwnedTask::spawn(async move {
            let mut seen = HashMap::new();
            let Ok(http) = crate::testbed::http_client() else {
                return seen;
            };
            loop {
                for url in &urls {
                    let Ok(r) = http
                        .get(format!("{url}/ari/channels"))
                        .basic_auth(
                            crate::testbed::render::ARI_USER,
                            Some(crate::testbed::render::ARI_PASSWORD),
                        )
                        .send()
                        .await
                    else {
                        continue;
                    };
                    let chans: Vec<serde_json::Value> = r.json().await.unwrap_or_default();
                    for c in chans {
                        let caller = c["caller"]["number"].as_str().unwrap_or_default();
                        let ctx = c["dialplan"]["context"].as_str().unwrap_or_default();
                        seen.insert(caller.to_string(), ctx.to_string());
                    }
                }
                tokio::select! {
                    _ = &mut stopped => return seen,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        });
        Watch { stop, task }
    }

    /// Stops watching: caller number → the context its channel was seen in.
    async fn stop(self) -> HashMap<String, String> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// Hangs every call up and waits for the callers to finish.
async fn finish(farm: &RealFarm, mut runs: Vec<SippRun>) {
    farm.hangup_all().await;
    for r in runs.iter_mut() {
        let _ = r.wait(Duration::from_secs(20)).await;
    }
}

/// `calls` split in proportion to `weights`, summing to `calls` exactly.
fn split_counts(calls: u32, weights: &[f64]) -> Vec<u32> {
    let total: f64 = weights.iter().sum();
    let mut counts: Vec<u32> = weights
        .iter()
        .map(|w| (f64::from(calls) * w / total).floor() as u32)
        .collect();
    let left = calls.saturating_sub(counts.iter().sum()) as usize;
    for c in counts.iter_mut().take(left) {
        *c += 1;
    }
    counts
}

fn row(what: &str, v: &[Duration]) {
    println!(
        "{:<44} {:>6} {:>10.2} {:>10.2}",
        what,
        v.len(),
        ms(pct(v, 50.0)),
        ms(pct(v, 99.0))
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p`th percentile (nearest rank) of `v`; zero when empty.
fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort();
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// The machine, for the figures: CPU model, cores, memory.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_the_weights_and_sum_up() {
        let c = split_counts(120, &[1.0, 1.0, 2.0]);
        assert_eq!(c, vec![30, 30, 60]);
        let c = split_counts(10, &[0.7, 1.3, 0.9]);
        assert_eq!(c.iter().sum::<u32>(), 10);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(pct(&v, 50.0), Duration::from_millis(50));
        assert_eq!(pct(&v, 99.0), Duration::from_millis(99));
        assert_eq!(pct(&[], 99.0), Duration::ZERO);
        assert_eq!(pct(&v[..1], 99.0), Duration::from_millis(1));
    }
}
