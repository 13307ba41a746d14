//! `corral demo`: corral's main job on simulated nodes, with nothing
//! installed but the Rust toolchain.
//!
//! Starts three simulated Asterisk nodes, corral on the in-memory store (or
//! Redis with `--redis`), and a caller that sends a few hundred calls into a
//! few dozen rooms through a round-robin "proxy" (as Kamailio's dispatcher
//! would). Shows the room map and the counts as it goes, kills one node
//! halfway, and ends with a summary checked against what each node's ARI
//! reports (`GET /ari/bridges`), not against corral's own map.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rand::{RngExt, SeedableRng};
use tokio_util::sync::CancellationToken;

use crate::controller::{self, Controller, NodeSpec};
use crate::domain::{NodeId, NodeState};
use crate::names::BridgeNames;
use crate::shutdown::OwnedTask;
use crate::sim::{SimConfig, SimNode};
use crate::store::{self, RoomFilter};
use crate::telemetry::Metrics;

/// Flags of `corral demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run on this Redis instead of the in-memory store.
    #[arg(long)]
    pub redis: Option<String>,
    /// Simulated nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Calls to send [default: 300; 120 with --asterisk].
    #[arg(long)]
    pub calls: Option<usize>,
    /// Conference rooms the calls go to [default: 30; 12 with --asterisk].
    #[arg(long)]
    pub rooms: Option<usize>,
    /// Calls per second.
    #[arg(long, default_value_t = 60)]
    pub rate: u32,
    /// Do not kill a node halfway.
    #[arg(long)]
    pub no_kill: bool,
    /// Callers of the call-queue part (0: skip it).
    #[arg(long, default_value_t = 40)]
    pub queue_callers: usize,
    /// Seed of the caller's randomness.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where corral's API listens during the demo.
    #[arg(long, default_value = "127.0.0.1:8088")]
    pub api: String,
    /// Run on real parts instead: real Asterisk nodes behind a real
    /// Kamailio, sipp callers, this binary as `corral serve`, every config
    /// from deploy/ (needs Asterisk 22, kamailio and sipp; see README).
    #[arg(long)]
    pub asterisk: bool,
}

struct Farm {
    nodes: Vec<SimNode>,
    dead: HashSet<usize>,
}

/// Runs the demo.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.asterisk {
        return super::demo_real::run(args).await;
    }
    let mut args = args;
    let calls = *args.calls.get_or_insert(300);
    let rooms = *args.rooms.get_or_insert(30);
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    println!(
        "corral demo: {} simulated nodes, {} calls into {} rooms at {}/s (seed {seed})",
        args.nodes, calls, rooms, args.rate
    );

    let mut sims = Vec::new();
    for i in 1..=args.nodes.max(1) {
        sims.push(SimNode::start(SimConfig::new(format!("ast{i}"))).await?);
    }
    let store_cfg = store::Config {
        farm: format!("demo{}", seed % 100_000),
        redis_url: args.redis.clone(),
        ..store::Config::default()
    };
    let store = store::connect(&store_cfg)
        .await
        .context("cannot start the store")?;
    let metrics = Arc::new(Metrics::new());
    let specs: Vec<NodeSpec> = sims
        .iter()
        .map(|s| NodeSpec {
            ari: crate::ari::Config {
                node: NodeId::new(s.id()).expect("sim ids are valid node ids"),
                base_url: s.base_url(),
                username: SimConfig::DEFAULT_CREDENTIALS.into(),
                password: SimConfig::DEFAULT_CREDENTIALS.into(),
                app: crate::names::DEFAULT_APP.into(),
                request_timeout: Duration::from_secs(2),
            },
            sip_host: s.addr().to_string(),
            capacity: 500,
            max_rooms: None,
        })
        .collect();
    let cfg = controller::Config {
        linger: Duration::from_secs(2),
        ping_interval: Duration::from_millis(250),
        reconcile_interval: Duration::from_secs(2),
        redirect_deadline: Duration::from_secs(2),
        seed,
        queues: controller::QueueConfig {
            defaults: Arc::new(crate::queue::QueueSettings {
                wrapup: Duration::from_millis(300),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..controller::Config::default()
    };
    let ctrl = Controller::new(cfg, store.clone(), specs, metrics.clone())?;
    let shutdown = CancellationToken::new();
    let run = {
        let ctrl = ctrl.clone();
        let s = shutdown.clone();
        OwnedTask::spawn(async move { ctrl.run(s).await })
    };
    // Owned: the API and the story end with the demo.
    let _api = match tokio::net::TcpListener::bind(args.api.as_str()).await {
        Ok(listener) => {
            let app = crate::api::router(
                crate::api::AppState::new(ctrl.clone(), None).with_shutdown(shutdown.clone()),
            );
            let stop = shutdown.clone();
            println!(
                "live room map: http://{}/   API: http://{}/v1/rooms   metrics: http://{}/metrics",
                args.api, args.api, args.api
            );
            Some(OwnedTask::spawn(crate::api::serve(
                listener,
                app,
                crate::api::ServerConfig::default(),
                stop,
            )))
        }
        Err(e) => {
            println!("(API not started: cannot listen on {}: {e})", args.api);
            None
        }
    };
    // Tell the farm's story as it happens.
    let mut events = ctrl.subscribe();
    let _story = OwnedTask::spawn(async move {
        use crate::controller::FarmEvent;
        while let Ok(ev) = events.recv().await {
            match ev {
                FarmEvent::NodeDown {
                    node,
                    reason,
                    released_rooms,
                } => {
                    println!(
                        "  !! {node} marked down ({reason}); its {released_rooms} rooms released: their next callers re-place them on live nodes"
                    )
                }
                FarmEvent::SplitDetected { room, owner, node } => {
                    println!("  !! split: {room} owned by {owner} has a call on {node}")
                }
                FarmEvent::RoomPlaced {
                    room,
                    node,
                    previous: Some(prev),
                    ..
                } => println!("  -> {room} re-placed from {prev} to {node}"),
                _ => {}
            }
        }
    });
    // Wait for every node's stream.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ctrl.nodes_streaming().iter().all(|(_, up)| *up) {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("nodes did not come up within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let http = reqwest::Client::new();
    let mut farm = Farm {
        nodes: sims,
        dead: HashSet::new(),
    };
    let mut next_node = 0usize;
    let mut hangups: Vec<(tokio::time::Instant, String)> = Vec::new();
    let mut lost_to_crash = 0usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let mut tick = tokio::time::interval(interval);
    let mut last_print = tokio::time::Instant::now();
    let kill_at = if args.no_kill || farm.nodes.len() < 2 {
        usize::MAX
    } else {
        calls / 2
    };
    let mut sent = 0usize;
    let started = tokio::time::Instant::now();
    for i in 0..calls {
        tick.tick().await;
        if i == kill_at {
            let victim = busiest_node(&store, &farm).await.unwrap_or(1);
            let on_it = calls_on(&http, &farm.nodes[victim]).await;
            lost_to_crash += on_it;
            println!(
                "\n*** killing {} ({} calls on it are lost with it) ***\n",
                farm.nodes[victim].id(),
                on_it
            );
            farm.nodes[victim].kill().await;
            farm.dead.insert(victim);
        }
        // Zipf-ish: a few big rooms, many small ones.
        let r = (rooms as f64 * rng.random::<f64>().powi(2)) as usize;
        let room = format!("room{:02}", r.min(rooms.saturating_sub(1)));
        let call_id = format!("demo-{seed}-{i}");
        // The round-robin proxy skips nodes that refuse (dispatcher probing).
        for _ in 0..farm.nodes.len() {
            let n = next_node % farm.nodes.len();
            next_node += 1;
            if farm.dead.contains(&n) {
                continue;
            }
            let url = format!("{}/sim/calls", farm.nodes[n].base_url());
            let body = serde_json::json!({"exten": format!("conf-{room}"), "caller": format!("1{i:04}"), "call_id": call_id});
            if http
                .post(url)
                .json(&body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                sent += 1;
                let hold = Duration::from_millis(rng.random_range(3_000..9_000));
                hangups.push((tokio::time::Instant::now() + hold, call_id.clone()));
                break;
            }
        }
        // Callers whose hold time is over hang up.
        let now = tokio::time::Instant::now();
        let (due, keep): (Vec<_>, Vec<_>) = hangups.into_iter().partition(|(t, _)| *t <= now);
        hangups = keep;
        for (_, id) in due {
            hang_up(&http, &farm, &id).await;
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = tokio::time::Instant::now();
            print_map(&store, &ctrl, &farm, started.elapsed()).await;
        }
    }
    // Let the last redirects land, then check co-location through ARI.
    tokio::time::sleep(Duration::from_millis(500)).await;
    print_map(&store, &ctrl, &farm, started.elapsed()).await;
    let (rooms_seen, split_rooms) = check_bridges(&http, &farm).await;
    let t = metrics.snapshot();
    println!("\n== summary ==");
    println!("calls sent          {sent}");
    println!(
        "StasisStarts        {} (calls plus redirected calls arriving with their token)",
        t.arrivals
    );
    println!("joined              {}", t.joined);
    println!(
        "redirected          {} (confirmed by token: {}, timed out: {})",
        t.redirected, t.confirmed, t.timed_out
    );
    println!(
        "splits              {} (joined away from their room past the hop limit)",
        t.splits
    );
    println!("degraded joins      {}", t.degraded);
    println!("rooms released      {}", t.released);
    println!("lost with the node  {lost_to_crash} (calls on the killed node: a crash, not corral)");
    println!(
        "rooms checked       {rooms_seen} through each live node's GET /ari/bridges: {} split",
        split_rooms.len()
    );
    for r in &split_rooms {
        println!("  split room: {r}");
    }
    for (_, id) in hangups {
        hang_up(&http, &farm, &id).await;
    }
    let queue_ok = if args.queue_callers > 0 {
        queue_part(&ctrl, &http, &farm, &mut rng, args.queue_callers).await
    } else {
        true
    };
    shutdown.cancel();
    let _ = run.await;
    if !queue_ok {
        anyhow::bail!("the queue lost or reordered callers");
    }
    if split_rooms.is_empty() {
        println!("every room with members sits in one bridge on one node.");
        Ok(())
    } else {
        anyhow::bail!("{} rooms were split", split_rooms.len())
    }
}

/// The call-queue part: 4 agents log in on random live nodes, callers of
/// queue `help` arrive round-robin one after the other; each answered
/// caller talks 100-400 ms and hangs up. Checks from the queue's state that
/// callers were answered in arrival order and none was lost, and from ARI
/// that everything sat on the queue's node.
async fn queue_part(
    ctrl: &Controller,
    http: &reqwest::Client,
    farm: &Farm,
    rng: &mut impl rand::Rng,
    callers: usize,
) -> bool {
    use crate::queue::AgentState;
    let queue = crate::domain::RoomName::new("help").expect("a valid name");
    let live: Vec<usize> = (0..farm.nodes.len())
        .filter(|i| !farm.dead.contains(i))
        .collect();
    println!("\n== a call queue: 4 agents, {callers} callers, queue `help` ==");
    let post = |node: usize, exten: String, call_id: String| {
        let url = format!("{}/sim/calls", farm.nodes[node].base_url());
        let body = serde_json::json!({"exten": exten, "caller": call_id, "call_id": call_id});
        async move {
            http.post(url)
                .json(&body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    };
    for a in 0..4 {
        let n = live[rng.random_range(0..live.len())];
        post(n, format!("agent-help-a{a}"), format!("agent-a{a}")).await;
    }
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(30);
    let mut sent = 0usize;
    let mut order: Vec<u64> = Vec::new();
    let mut talking: Vec<(tokio::time::Instant, String)> = Vec::new();
    let mut seen = HashSet::new();
    loop {
        if sent < callers {
            let n = live[sent % live.len()];
            post(n, "queue-help".into(), format!("q{sent:03}")).await;
            sent += 1;
        }
        let Ok(Some((st, _))) = ctrl.queue(&queue).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let mut now_connected: Vec<(u64, String)> = st
            .agents
            .values()
            .filter_map(|a| match &a.activity {
                AgentState::Busy {
                    caller,
                    connected: true,
                    ..
                } if !seen.contains(&caller.seq) => Some((caller.seq, caller.caller.clone())),
                _ => None,
            })
            .collect();
        now_connected.sort();
        for (seq, id) in now_connected {
            seen.insert(seq);
            order.push(seq);
            let talk = Duration::from_millis(rng.random_range(100..400));
            talking.push((tokio::time::Instant::now() + talk, id));
        }
        let now = tokio::time::Instant::now();
        let (due, keep): (Vec<_>, Vec<_>) = talking.into_iter().partition(|(t, _)| *t <= now);
        talking = keep;
        for (_, id) in due {
            hang_up(http, farm, &id).await;
        }
        let done = st.answered + st.abandoned + st.lost + st.timed_out >= callers as u64
            && sent == callers;
        if done || now > deadline {
            let in_order = order.windows(2).all(|w| w[0] < w[1]);
            let node = ctrl.queue(&queue).await.ok().flatten().and_then(|(_, n)| n);
            println!(
                "answered {} of {callers} in {:.1} s (abandoned {}, lost {}); in arrival order: {}; queue node: {}",
                st.answered,
                started.elapsed().as_secs_f64(),
                st.abandoned,
                st.lost,
                if in_order { "yes" } else { "NO" },
                node.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            );
            for (_, id) in talking {
                hang_up(http, farm, &id).await;
            }
            for a in 0..4 {
                hang_up(http, farm, &format!("agent-a{a}")).await;
            }
            return in_order && st.answered == callers as u64;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn busiest_node(store: &Arc<dyn store::Store>, farm: &Farm) -> Option<usize> {
    let nodes = store.list_nodes().await.ok()?;
    let best = nodes
        .iter()
        .filter(|n| n.state == NodeState::Up)
        .max_by_key(|n| n.rooms)?;
    farm.nodes.iter().position(|s| s.id() == best.id.as_str())
}

async fn calls_on(http: &reqwest::Client, node: &SimNode) -> usize {
    let url = format!("{}/sim/calls", node.base_url());
    match http.get(url).send().await {
        Ok(r) => r
            .json::<Vec<serde_json::Value>>()
            .await
            .map(|v| v.len())
            .unwrap_or(0),
        Err(_) => 0,
    }
}

async fn hang_up(http: &reqwest::Client, farm: &Farm, call_id: &str) {
    for (i, n) in farm.nodes.iter().enumerate() {
        if farm.dead.contains(&i) {
            continue;
        }
        let url = format!("{}/sim/calls/{call_id}", n.base_url());
        if http
            .delete(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
    }
}

async fn print_map(
    store: &Arc<dyn store::Store>,
    ctrl: &Controller,
    farm: &Farm,
    elapsed: Duration,
) {
    let nodes = store.list_nodes().await.unwrap_or_default();
    let mut by_node: BTreeMap<String, Vec<(String, u32)>> = BTreeMap::new();
    let mut cursor = None;
    loop {
        let Ok(page) = store
            .list_rooms(
                &RoomFilter {
                    node: None,
                    kind: None,
                },
                cursor.as_deref(),
                1000,
            )
            .await
        else {
            break;
        };
        for p in page.rooms {
            by_node
                .entry(p.node.to_string())
                .or_default()
                .push((p.room.name.to_string(), p.members));
        }
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    let t = ctrl.metrics().snapshot();
    println!(
        "[{:>5.1}s] calls {:>4}  joined {:>4}  redirected {:>4}  confirmed {:>4}  splits {}  degraded {}",
        elapsed.as_secs_f64(),
        t.arrivals,
        t.joined,
        t.redirected,
        t.confirmed,
        t.splits,
        t.degraded
    );
    for (i, sim) in farm.nodes.iter().enumerate() {
        let state = nodes
            .iter()
            .find(|n| n.id.as_str() == sim.id())
            .map(|n| n.state.as_str())
            .unwrap_or("?");
        let state = if farm.dead.contains(&i) {
            "down (killed)"
        } else {
            state
        };
        let rooms = by_node.get(sim.id()).cloned().unwrap_or_default();
        let members: u32 = rooms.iter().map(|(_, m)| m).sum();
        let mut list: Vec<String> = rooms.iter().map(|(r, m)| format!("{r}:{m}")).collect();
        list.sort();
        let shown = if list.len() > 12 {
            format!("{} …", list[..12].join(" "))
        } else {
            list.join(" ")
        };
        println!(
            "    {:<5} {:<14} rooms {:>3} members {:>4}  {}",
            sim.id(),
            state,
            rooms.len(),
            members,
            shown
        );
    }
}

/// Reads every live node's bridges and returns how many rooms have calls and
/// which of them have calls on more than one node.
async fn check_bridges(http: &reqwest::Client, farm: &Farm) -> (usize, Vec<String>) {
    let mut where_: HashMap<String, HashSet<String>> = HashMap::new();
    for (i, n) in farm.nodes.iter().enumerate() {
        if farm.dead.contains(&i) {
            continue;
        }
        let url = format!("{}/ari/bridges", n.base_url());
        let Ok(resp) = http
            .get(url)
            .basic_auth(
                SimConfig::DEFAULT_CREDENTIALS,
                Some(SimConfig::DEFAULT_CREDENTIALS),
            )
            .send()
            .await
        else {
            continue;
        };
        let bridges: Vec<serde_json::Value> = resp.json().await.unwrap_or_default();
        for b in bridges {
            let name = b["name"].as_str().unwrap_or("").to_string();
            let has_calls = b["channels"].as_array().is_some_and(|c| !c.is_empty());
            if BridgeNames::default().parse_bridge_name(&name).is_some() && has_calls {
                where_.entry(name).or_default().insert(n.id().to_string());
            }
        }
    }
    let split: Vec<String> = where_
        .iter()
        .filter(|(_, nodes)| nodes.len() > 1)
        .map(|(r, nodes)| format!("{r} on {nodes:?}"))
        .collect();
    (where_.len(), split)
}
