//! `corral demo --asterisk`: the demo on real parts, for an operator who
//! wants to see corral work before deploying it: three real Asterisk nodes,
//! a real Kamailio in front of them and sipp callers, every config rendered
//! from the shipped `deploy/` files, and this binary as `corral serve`.
//!
//! Needs what the real-farm tests need (README, "The real farm"): an
//! Asterisk 22 (the tarball next to the project, `CORRAL_ASTERISK_DIR`, or
//! `asterisk` on `PATH`), `kamailio` and `sipp`. Prints the same room map
//! and summary as the simulated demo; the truth at the end is read from
//! each live node's `GET /ari/bridges` and from sipp.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context;
use rand::{RngExt, SeedableRng};

use crate::testbed::sipp::Calls;
use crate::testbed::{FarmOptions, RealFarm, SippRun};

use super::demo::Args;

/// Runs the demo on real parts.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let calls = args.calls.unwrap_or(120);
    let rooms = args.rooms.unwrap_or(12).max(1);
    let nodes = args.nodes.max(1);
    println!(
        "corral demo --asterisk: {nodes} real Asterisk nodes behind Kamailio, {calls} sipp calls into {rooms} rooms at {}/s (seed {seed})",
        args.rate
    );
    // Kept after the demo, so that every part's log can be read.
    let dir = std::env::temp_dir().join(format!("corral-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("cannot make a directory for the farm")?;
    let opts = FarmOptions {
        nodes,
        corral_binary: std::env::current_exe().context("cannot find this corral binary")?,
        redis_url: args.redis.clone(),
        corral_env: vec![
            ("CORRAL_API_LISTEN".into(), args.api.clone()),
            ("CORRAL_FARM".into(), format!("demo{}", seed % 100_000)),
        ],
        dir: dir.clone(),
        start_corral: true,
    };
    let mut farm = RealFarm::start(opts)
        .await
        .context("the real farm did not start (README, \"The real farm\", says what it needs)")?;
    let corral = farm.corral.as_ref().context("corral runs")?;
    println!(
        "nodes: {}; proxy: Kamailio on {}; corral: {} (live room map at {}/)",
        farm.nodes
            .iter()
            .map(|n| format!("{} (SIP {}, ARI {})", n.id(), n.sip_addr(), n.ari_url()))
            .collect::<Vec<_>>()
            .join(", "),
        farm.kamailio.addr(),
        corral.url(),
        corral.url()
    );
    println!("files and logs: {}", dir.display());
    farm.wait_streaming(Duration::from_secs(20)).await?;

    // How many calls each room gets: a few big rooms, many small ones.
    let mut per_room: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..calls {
        let r = (rooms as f64 * rng.random::<f64>().powi(2)) as usize;
        *per_room
            .entry(format!("room{:02}", r.min(rooms - 1)))
            .or_default() += 1;
    }
    let kill_at = (!args.no_kill && nodes > 1).then_some(per_room.len() / 2);
    let started = tokio::time::Instant::now();
    let mut runs: Vec<(String, SippRun)> = Vec::new();
    let mut lost_with_node = 0usize;
    let mut killed: Option<String> = None;
    let per_sec = f64::from(args.rate.max(1));
    for (i, (room, count)) in per_room.iter().enumerate() {
        if Some(i) == kill_at {
            let (victim, on_it) = busiest(&farm).await;
            if let Some(v) = victim {
                println!("\n*** killing {v} (kill -9; its {on_it} calls are lost with it) ***\n");
                let vi = farm.index_of(&v).context("the victim is a node")?;
                farm.nodes[vi].kill();
                lost_with_node = on_it;
                killed = Some(v);
            }
        }
        let batch = Calls {
            service: format!("conf-{room}"),
            caller: room.clone(),
            count: *count,
            rate: per_sec,
            target: farm.kamailio.addr(),
            domain: None,
        };
        let run = farm
            .sipp
            .callers(&farm.dir().join("sipp"), room, &batch)
            .with_context(|| format!("sipp for {room}"))?;
        runs.push((room.clone(), run));
        // Pace the rooms at the call rate overall.
        tokio::time::sleep(Duration::from_secs_f64(f64::from(*count) / per_sec)).await;
        print_map(&farm, started.elapsed(), killed.as_deref()).await;
    }
    // Wait until every call was answered or failed (or 30 s passed).
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let settled: usize = runs
            .iter()
            .map(|(_, r)| r.answered().len() + r.failed().len())
            .sum();
        if settled >= calls || tokio::time::Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    print_map(&farm, started.elapsed(), killed.as_deref()).await;

    // The truth, from ARI and sipp.
    let truth = farm.rooms().await;
    let split: Vec<String> = truth
        .iter()
        .filter(|(_, t)| t.whole_on().is_none())
        .map(|(r, t)| format!("{r}: {:?}", t.bridges.keys().collect::<Vec<_>>()))
        .collect();
    let answered: usize = runs.iter().map(|(_, r)| r.answered().len()).sum();
    let failed: HashMap<String, u16> = runs.iter().flat_map(|(_, r)| r.failed()).collect();
    let redirected = farm
        .channels()
        .await
        .iter()
        .filter(|(_, c)| c["dialplan"]["context"] == "corral-token")
        .count();
    let followed = farm.kamailio.log().matches("302 followed").count();
    let corral = farm.corral.as_ref().context("corral runs")?;
    println!("\n== summary ==");
    println!("calls sent          {calls}");
    println!("answered (sipp)     {answered}");
    if !failed.is_empty() {
        let mut codes: BTreeMap<u16, usize> = BTreeMap::new();
        for c in failed.values() {
            *codes.entry(*c).or_default() += 1;
        }
        println!("failed (sipp)       {} {codes:?}", failed.len());
    }
    println!(
        "redirected          {} by 302s Kamailio followed ({redirected} of the calls up now arrived with a token)",
        followed
    );
    println!(
        "corral's counts     StasisStarts {}  joined {}  redirects sent {}  tokens consumed {}  degraded {}",
        metric(corral, "corral_arrivals_total", "").await,
        metric(corral, "corral_joins_total", "").await,
        metric(corral, "corral_redirects_total", "outcome=\"sent\"").await,
        metric(corral, "corral_tokens_total", "outcome=\"consumed\"").await,
        metric(corral, "corral_degraded_joins_total", "").await,
    );
    println!(
        "lost with the node  {lost_with_node} (calls on the killed node: a crash, not corral)"
    );
    println!(
        "rooms checked       {} through each live node's GET /ari/bridges: {} split",
        truth.len(),
        split.len()
    );
    for s in &split {
        println!("  split room: {s}");
    }
    println!("hanging up {} calls over ARI", farm.hangup_all().await);
    for (_, r) in runs.iter_mut() {
        let _ = r.wait(Duration::from_secs(10)).await;
    }
    if let Some(c) = farm.corral.as_mut() {
        c.stop();
    }
    drop(farm);
    if split.is_empty() {
        println!("every room with calls sits in one bridge on one node.");
        Ok(())
    } else {
        anyhow::bail!("{} rooms were split", split.len())
    }
}

/// The sum of a counter's samples whose labels contain `label`.
async fn metric(corral: &crate::testbed::CorralProcess, name: &str, label: &str) -> u64 {
    corral
        .metrics()
        .await
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The node with the most calls in corral's bridges, from ARI, and how many.
async fn busiest(farm: &RealFarm) -> (Option<String>, usize) {
    let mut per: HashMap<String, usize> = HashMap::new();
    for t in farm.rooms().await.values() {
        for (node, bridges) in &t.bridges {
            *per.entry(node.clone()).or_default() +=
                bridges.values().map(|c| c.len()).sum::<usize>();
        }
    }
    per.into_iter()
        .max_by_key(|(n, c)| (*c, n.clone()))
        .map(|(n, c)| (Some(n), c))
        .unwrap_or((None, 0))
}

/// The room map as corral's API shows it, one line per node.
async fn print_map(farm: &RealFarm, elapsed: Duration, killed: Option<&str>) {
    let Some(corral) = farm.corral.as_ref() else {
        return;
    };
    let nodes = corral.get("/v1/nodes").await.unwrap_or_default();
    let rooms = corral.get("/v1/rooms?limit=1000").await.unwrap_or_default();
    let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in rooms["rooms"].as_array().cloned().unwrap_or_default() {
        by_node
            .entry(r["node"].as_str().unwrap_or("?").to_string())
            .or_default()
            .push(format!(
                "{}:{}",
                r["name"].as_str().unwrap_or("?"),
                r["members"]
            ));
    }
    println!("[{:>5.1}s]", elapsed.as_secs_f64());
    for n in nodes["nodes"].as_array().cloned().unwrap_or_default() {
        let id = n["id"].as_str().unwrap_or("?").to_string();
        let state = if killed == Some(id.as_str()) {
            "down (killed)".to_string()
        } else {
            n["state"].as_str().unwrap_or("?").to_string()
        };
        let mut list = by_node.get(&id).cloned().unwrap_or_default();
        list.sort();
        println!(
            "    {:<5} {:<14} rooms {:>3} members {:>4}  {}",
            id,
            state,
            n["rooms"],
            n["members"],
            list.join(" ")
        );
    }
}
