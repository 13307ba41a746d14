//! `real-node-kill`: the one fault run on the real farm (`src/testbed`):
//! real Asterisk 22 nodes behind a real Kamailio, sipp callers, `corral
//! serve` on a `redis-server`, every config from `deploy/`.
//!
//! sipp callers dial the rooms through Kamailio (each call waits for the
//! far end's BYE, as a phone does); after the warm-up the Asterisk with the
//! most rooms is killed (SIGKILL); the calls go on. The truth comes from
//! the live nodes' ARI (`GET /bridges`, `GET /channels`, sampled every
//! 200 ms) and from sipp's own logs; corral's `/v1/events` only times its
//! reaction. At the end the runner hangs every call up over ARI.
//!
//! Fates: a call answered and in its room's bridge until the end is
//! bridged; one whose channel was on the killed node at the kill, or that
//! failed while Kamailio was failing over from it, is lost with the fault;
//! one that ended before the end on a live node, failed at another time, or
//! was never bridged is lost by corral (a bridged call ended early is also
//! counted as hung up by corral: only ARI ends a bridged call there).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::checker::Sample;
use super::faults::{Fault, Injected};
use super::report::{Promises, Row};
use super::{Args, now_ms};
use crate::testbed::sipp::Calls;
use crate::testbed::{FarmOptions, RealFarm, SippRun};

/// Calls per second at most on the real farm (two shared cores run three
/// Asterisk processes, Kamailio, sipp and corral).
const MAX_RATE: f64 = 10.0;

/// Rooms at most on the real farm.
const MAX_ROOMS: usize = 6;

/// Kamailio's `fr_timer` plus a probe: calls that fail within this after
/// the kill were on their way to the dead node.
const FAILOVER_MS: i64 = 4000;

/// Runs the real-farm phase.
///
/// # Errors
/// The real farm did not start (the error says what it needs).
pub async fn phase(args: &Args, _seed: u64, dir: &Path, p: &Promises) -> anyhow::Result<Row> {
    std::fs::create_dir_all(dir)?;
    let redis = super::farm::RedisServer::start(dir).await?;
    let farm = RealFarm::start(FarmOptions {
        nodes: 3,
        corral_binary: std::env::current_exe()?,
        redis_url: Some(redis.url()),
        corral_env: vec![(
            "CORRAL_FARM".into(),
            format!("chaosreal{}", std::process::id()),
        )],
        dir: dir.to_path_buf(),
        start_corral: true,
    })
    .await
    .context("the real farm did not start (README, \"The real farm\", says what it needs)")?;
    let mut farm = farm;
    let corral_url = farm
        .corral
        .as_ref()
        .map(|c| c.url())
        .context("corral runs")?;
    wait_streamed(&corral_url, farm.nodes.len()).await?;
    let node_ids: Vec<String> = farm.nodes.iter().map(|n| n.id().to_string()).collect();

    let events = super::checker::Observer::events_only(vec![corral_url.clone()])?;
    let rate = args.rate.min(MAX_RATE);
    let rooms: Vec<String> = (0..args.rooms.clamp(1, MAX_ROOMS))
        .map(|i| format!("x{i}"))
        .collect();
    let load = super::load_secs(args, Fault::RealNodeKill);
    let per_room = rate / rooms.len() as f64;
    let count = ((per_room * load).ceil() as u32).max(1);
    let began = now_ms();
    let mut runs: Vec<(String, SippRun)> = Vec::new();
    for room in &rooms {
        let batch = Calls {
            service: format!("conf-{room}"),
            caller: format!("c{room}"),
            count,
            rate: per_room,
            target: farm.kamailio.addr(),
            domain: None,
        };
        runs.push((
            room.clone(),
            farm.sipp.callers(&dir.join("sipp"), room, &batch)?,
        ));
    }
    let mut samples: Vec<Sample> = Vec::new();
    // Channel id on a node → caller number, and callers seen bridged.
    let mut callers: HashMap<(usize, String), String> = HashMap::new();
    let mut bridged: BTreeSet<String> = BTreeSet::new();
    let mut on_node: HashMap<String, usize> = HashMap::new();
    let t0 = tokio::time::Instant::now();
    let kill_at = t0 + Duration::from_secs_f64(args.warmup.max(1.0));
    let end_at = t0 + Duration::from_secs_f64(load);
    let mut inj: Option<Injected> = None;
    let mut victim_calls: BTreeSet<String> = BTreeSet::new();
    let mut every = tokio::time::interval(Duration::from_millis(200));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while tokio::time::Instant::now() < end_at {
        every.tick().await;
        sample(
            &farm,
            &mut samples,
            &mut callers,
            &mut bridged,
            &mut on_node,
        )
        .await;
        if inj.is_none() && tokio::time::Instant::now() >= kill_at {
            let victim = busiest(samples.last(), farm.nodes.len());
            victim_calls = on_node
                .iter()
                .filter(|(_, n)| **n == victim)
                .map(|(c, _)| c.clone())
                .collect();
            let mut i = Injected::new_at(
                Fault::RealNodeKill,
                node_ids[victim].clone(),
                Some(victim),
                now_ms(),
            );
            farm.nodes[victim].kill();
            i.kills.push((victim, i.start));
            i.redirect_loss.push((i.start, i.start + FAILOVER_MS));
            inj = Some(i);
        }
    }
    let load_end = now_ms();
    let inj =
        inj.unwrap_or_else(|| Injected::new_at(Fault::RealNodeKill, "nothing", None, load_end));
    // Let the last calls ring in, then read every caller's fate before the
    // runner hangs anything up.
    let settle = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < settle {
        every.tick().await;
        sample(
            &farm,
            &mut samples,
            &mut callers,
            &mut bridged,
            &mut on_node,
        )
        .await;
    }
    let mut answered = HashMap::new();
    let mut failed = HashMap::new();
    for (_, r) in &runs {
        answered.extend(r.answered());
        failed.extend(r.failed());
    }
    farm.hangup_all().await;
    for (_, r) in runs.iter_mut() {
        let _ = r.wait(Duration::from_secs(10)).await;
        r.kill();
    }

    let mut row = Row {
        fault: Fault::RealNodeKill.name().into(),
        target: inj.target.clone(),
        ..Row::default()
    };
    let mut dump = format!(
        "real-node-kill of {} at +0; load ended at +{} ms\n",
        inj.target,
        load_end - inj.start
    );
    for (room, _) in &runs {
        for n in 1..=count {
            let caller = format!("c{room}-{n}");
            let started = began + (f64::from(n - 1) / per_room * 1000.0) as i64;
            let was_on_victim = victim_calls.contains(&caller);
            dump.push_str(&format!(
                "{caller} started +{} answered={:?} failed={:?} last node={:?} bridged={} on victim={was_on_victim}\n",
                started - inj.start,
                answered.get(&caller).map(|a| (a.setup, a.ended)),
                failed.get(&caller),
                on_node.get(&caller).and_then(|i| node_ids.get(*i)),
                bridged.contains(&caller),
            ));
            match (answered.get(&caller), failed.get(&caller)) {
                (Some(a), _) => {
                    row.offered += 1;
                    if was_on_victim {
                        row.lost_fault += 1;
                    } else if a.ended {
                        row.lost_corral += 1;
                        if bridged.contains(&caller) {
                            row.hung_up_corral += 1;
                        }
                        *row.reasons
                            .entry("ended before the end on a live node".into())
                            .or_default() += 1;
                    } else if bridged.contains(&caller) {
                        row.bridged += 1;
                    } else {
                        row.lost_corral += 1;
                        *row.reasons
                            .entry("answered, never bridged".into())
                            .or_default() += 1;
                    }
                }
                (None, Some(status)) => {
                    row.offered += 1;
                    if inj.redirect_loss_covers(started) || was_on_victim {
                        row.lost_fault += 1;
                    } else {
                        row.lost_corral += 1;
                        *row.reasons
                            .entry(format!("failed with SIP {status}"))
                            .or_default() += 1;
                    }
                }
                (None, None) => {
                    if on_node.contains_key(&caller) {
                        row.offered += 1;
                        if was_on_victim {
                            row.lost_fault += 1;
                        } else {
                            row.lost_corral += 1;
                            *row.reasons.entry("never answered".into()).or_default() += 1;
                        }
                    } else {
                        row.not_offered += 1;
                    }
                }
            }
        }
    }
    if let Err(e) = std::fs::write(dir.join("calls.txt"), dump) {
        tracing::warn!(cause = %e, "real phase dump not written");
    }
    let prefix = "x";
    let (sp, whole) = super::checker::splits(&samples, prefix, began, load_end);
    row.splits = sp.len();
    row.longest_split_ms = sp.iter().map(|s| s.to - s.from).max().unwrap_or(0);
    row.whole = whole;
    super::report::call_promises(&mut row, "0 calls lost by corral", "bridged calls");
    let whole_by = inj.end + p.whole_within_ms;
    let late = sp.iter().filter(|s| s.to > whole_by).count();
    if late > 0 {
        row.broken.push(format!(
            "{late} rooms not whole {} ms after the fault",
            p.whole_within_ms
        ));
    }
    let seen = events.lock().events.clone();
    let node = inj.node.map(|i| node_ids[i].clone()).unwrap_or_default();
    let down = seen
        .iter()
        .filter(|e| e.kind == "node_down" && e.data["node"] == node.as_str() && e.at >= inj.start)
        .map(|e| e.at)
        .min();
    row.recovery = match down {
        Some(t) => {
            if t - inj.start > p.crash_detect_ms {
                row.broken.push(format!(
                    "crash detected after {} ms (promise < {} ms)",
                    t - inj.start,
                    p.crash_detect_ms
                ));
            }
            format!("down {:.2}s", (t - inj.start) as f64 / 1000.0)
        }
        None => {
            row.broken
                .push(format!("{node} never marked down after its crash"));
            "down never".into()
        }
    };
    drop(farm);
    drop(redis);
    Ok(row)
}

/// One sample of the live nodes: rooms' bridges, and which caller each
/// channel is.
async fn sample(
    farm: &RealFarm,
    samples: &mut Vec<Sample>,
    callers: &mut HashMap<(usize, String), String>,
    bridged: &mut BTreeSet<String>,
    on_node: &mut HashMap<String, usize>,
) {
    let mut rooms: BTreeMap<String, Vec<(usize, String, usize)>> = BTreeMap::new();
    for (i, n) in farm.nodes.iter().enumerate() {
        if !n.is_answering() {
            continue;
        }
        if let Ok(chans) = n.channels().await {
            for c in chans {
                let (Some(id), Some(num)) = (c["id"].as_str(), c["caller"]["number"].as_str())
                else {
                    continue;
                };
                callers.insert((i, id.to_string()), num.to_string());
                on_node.insert(num.to_string(), i);
            }
        }
        let Ok(bridges) = n.bridges().await else {
            continue;
        };
        for b in bridges {
            let Some(room) = b["name"]
                .as_str()
                .and_then(|s| s.strip_prefix(super::checker::CONFERENCE_BRIDGE))
            else {
                continue;
            };
            let chans: Vec<&str> = b["channels"]
                .as_array()
                .map(|a| a.iter().filter_map(|c| c.as_str()).collect())
                .unwrap_or_default();
            if chans.is_empty() {
                continue;
            }
            for c in &chans {
                if let Some(num) = callers.get(&(i, c.to_string())) {
                    bridged.insert(num.clone());
                }
            }
            rooms.entry(room.to_string()).or_default().push((
                i,
                b["id"].as_str().unwrap_or_default().to_string(),
                chans.len(),
            ));
        }
    }
    samples.push(Sample {
        at: now_ms(),
        rooms,
    });
}

/// The node with the most rooms in the sample.
fn busiest(s: Option<&Sample>, n: usize) -> usize {
    let mut per = vec![0usize; n.max(1)];
    for bridges in s.map(|s| s.rooms.values()).into_iter().flatten() {
        for b in bridges {
            if let Some(c) = per.get_mut(b.0) {
                *c += 1;
            }
        }
    }
    per.iter()
        .enumerate()
        .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
        .map_or(0, |(i, _)| i)
}

async fn wait_streamed(url: &str, nodes: usize) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if super::farm::streams_of(&http, url).await.unwrap_or(0) >= nodes {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < until,
            "corral did not stream every real node within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
