//! `corral bench real`: call setup on the real farm (sipp → Kamailio →
//! real Asterisk nodes → corral), as sipp measures it from INVITE to 200 OK.
//!
//! Four phases on one farm, in one run, after a warm-up of half as many
//! calls that is not counted:
//! 1. **Through the proxy, route ahead**: callers into `--rooms` rooms
//!    through the shipped Kamailio, which asks corral where each room
//!    lives before dispatching; each call is classed, from the nodes' ARI,
//!    as *landed* (it arrived on its room's node) or *redirected* (it
//!    arrived in the token context after a 302 Kamailio followed). The
//!    redirect share.
//! 2. **Through the proxy, round-robin**: the same with corral restarted
//!    with `api.route_ahead = false` (no opinion: Kamailio's round-robin),
//!    so most calls land away and are redirected; then corral is restarted
//!    as it was.
//! 3. **The floor**: the same number of calls into fresh rooms, each room's
//!    calls sent by Kamailio straight to one node (the request URI names
//!    it), so none is redirected: what setup costs without corral moving
//!    anything.
//! 4. **A ramp**: calls through the proxy (route ahead) at rising rates;
//!    the highest rate whose setup p99 stays within twice the first
//!    step's.
//!
//! Percentiles, never one timing; the phases share the machine, so their
//! ratios are what to compare.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context;

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
    /// The ramp's rates (calls/s), comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [5.0, 10.0, 20.0, 40.0, 80.0])]
    pub ramp: Vec<f64>,
    /// Seconds of calls per ramp step.
    #[arg(long, default_value_t = 4.0)]
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
    wait_streaming(&farm).await?;
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

    // Warm-up, not counted: the first calls after the farm starts pay for
    // the nodes' and the proxy's first use.
    let warm: Vec<String> = (0..rooms).map(|i| format!("bw{i}")).collect();
    let w = calls_into(&farm, &warm, args.calls / 2, args.rate, None, "w").await?;
    finish(&farm, w.runs).await;

    // 1. Through the proxy, route ahead.
    let names: Vec<String> = (0..rooms).map(|i| format!("bp{i}")).collect();
    let phase = calls_into(&farm, &names, args.calls, args.rate, None, "p1").await?;
    let ahead = Classed::of(&phase);
    finish(&farm, phase.runs).await;

    // 2. Through the proxy, round-robin: corral has no opinion.
    restart_corral(&mut farm, false).await?;
    let names: Vec<String> = (0..rooms).map(|i| format!("bq{i}")).collect();
    let phase = calls_into(&farm, &names, args.calls, args.rate, None, "p2").await?;
    let rr = Classed::of(&phase);
    finish(&farm, phase.runs).await;
    restart_corral(&mut farm, true).await?;

    // 3. The floor: each room's calls straight to one node.
    let floor_names: Vec<String> = (0..rooms).map(|i| format!("bf{i}")).collect();
    let floor = calls_into(&farm, &floor_names, args.calls, args.rate, Some(()), "p3").await?;
    let floor_redirected = floor
        .context
        .values()
        .filter(|c| *c == "corral-token")
        .count();
    let floor_setup: Vec<Duration> = floor.setup.values().copied().collect();
    finish(&farm, floor.runs).await;

    println!(
        "\n== call setup, INVITE → 200 OK as sipp sees it ({} calls each at {}/s into {rooms} rooms) ==",
        args.calls, args.rate
    );
    println!(
        "{:<40} {:>6} {:>10} {:>10}",
        "calls", "n", "p50 ms", "p99 ms"
    );
    row("route ahead, all", &ahead.all());
    row("route ahead, landed", &ahead.landed);
    row("route ahead, redirected", &ahead.redirected);
    row("round-robin (no route ahead), all", &rr.all());
    row("round-robin, landed", &rr.landed);
    row("round-robin, redirected", &rr.redirected);
    row("straight to the room's node (floor)", &floor_setup);
    println!(
        "redirect share: route ahead {:.1}% ({} of {}), round-robin {:.1}% ({} of {}); floor: {} redirected",
        ahead.share() * 100.0,
        ahead.redirected.len(),
        ahead.total(),
        rr.share() * 100.0,
        rr.redirected.len(),
        rr.total(),
        floor_redirected
    );
    let (fp50, fp99) = (pct(&floor_setup, 50.0), pct(&floor_setup, 99.0));
    let ratio = |v: &[Duration], p: f64, f: Duration| ms(pct(v, p)) / ms(f).max(1e-9);
    println!(
        "against the floor: route ahead p50 {:.2}x p99 {:.2}x; round-robin p50 {:.2}x p99 {:.2}x",
        ratio(&ahead.all(), 50.0, fp50),
        ratio(&ahead.all(), 99.0, fp99),
        ratio(&rr.all(), 50.0, fp50),
        ratio(&rr.all(), 99.0, fp99),
    );

    // 4. The ramp.
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
        let r = calls_into(&farm, &names, n, *rate, None, &format!("r{step}")).await?;
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

/// A phase's answered calls' setup times, by how they reached their room.
struct Classed {
    /// Arrived on the room's node.
    landed: Vec<Duration>,
    /// Arrived with a token, after a 302 Kamailio followed.
    redirected: Vec<Duration>,
}

impl Classed {
    fn of(phase: &Phase) -> Self {
        let mut c = Classed {
            landed: Vec::new(),
            redirected: Vec::new(),
        };
        for (caller, setup) in &phase.setup {
            match phase.context.get(caller).map(String::as_str) {
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
    wait_streaming(farm).await
}

/// One phase's calls and what was seen of them.
struct Phase {
    /// Caller number → setup time (answered calls).
    setup: BTreeMap<String, Duration>,
    /// Caller number → the dialplan context its channel is in (ARI).
    context: HashMap<String, String>,
    failed: usize,
    runs: Vec<SippRun>,
}

/// Sends `calls` calls at `rate` into `rooms` (one sipp per room), through
/// the proxy; with `straight`, each room's calls name one node in the
/// request URI (room i → node i mod n). Returns once every call is
/// answered or failed (or 60 s passed), with ARI's view of each call.
async fn calls_into(
    farm: &RealFarm,
    rooms: &[String],
    calls: u32,
    rate: f64,
    straight: Option<()>,
    tag: &str,
) -> anyhow::Result<Phase> {
    let per = calls / rooms.len() as u32;
    let extra = calls % rooms.len() as u32;
    let mut runs = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        let count = per + u32::from((i as u32) < extra);
        if count == 0 {
            continue;
        }
        let domain = straight.map(|_| farm.nodes[i % farm.nodes.len()].sip_addr());
        let batch = Calls {
            service: format!("conf-{room}"),
            caller: format!("{tag}{room}"),
            count,
            rate: rate / rooms.len() as f64,
            target: farm.kamailio.addr(),
            domain,
        };
        runs.push(
            farm.sipp
                .callers(&farm.dir().join("sipp"), &format!("{tag}-{room}"), &batch)?,
        );
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
    let context = farm
        .channels()
        .await
        .into_iter()
        .map(|(_, c)| {
            (
                c["caller"]["number"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                c["dialplan"]["context"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    Ok(Phase {
        setup,
        context,
        failed,
        runs,
    })
}

/// Hangs every call up and waits for the callers to finish.
async fn finish(farm: &RealFarm, mut runs: Vec<SippRun>) {
    farm.hangup_all().await;
    for r in runs.iter_mut() {
        let _ = r.wait(Duration::from_secs(20)).await;
    }
}

async fn wait_streaming(farm: &RealFarm) -> anyhow::Result<()> {
    let corral = farm.corral.as_ref().context("corral runs")?;
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = corral.get("/readyz").await
            && r["nodes"]
                .as_array()
                .is_some_and(|a| a.iter().all(|n| n["streaming"] == true))
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > until {
            anyhow::bail!("corral did not stream every node within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn row(what: &str, v: &[Duration]) {
    println!(
        "{:<40} {:>6} {:>10.2} {:>10.2}",
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
    fn percentiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(pct(&v, 50.0), Duration::from_millis(50));
        assert_eq!(pct(&v, 99.0), Duration::from_millis(99));
        assert_eq!(pct(&[], 99.0), Duration::ZERO);
        assert_eq!(pct(&v[..1], 99.0), Duration::from_millis(1));
    }
}
