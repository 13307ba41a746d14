//! Call queues end to end on simulated nodes: callers and agents brought to
//! the queue's node, callers answered strictly in arrival order, nobody
//! lost; across a corral restart and the loss of the queue's node. Where
//! the calls are is read from the nodes' ARI (`GET /ari/bridges`,
//! `GET /sim/calls`); order and counts from the queue's stored state.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use corral::controller::{self, Controller};
use corral::domain::{NodeId, RoomName};
use corral::queue::{AgentState, QueueSettings, QueueState};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use support::farm::{Backend, TestFarm};
use support::{eventually, seed};

const WAIT: Duration = Duration::from_secs(20);

fn queue() -> RoomName {
    RoomName::new("support").unwrap()
}

fn tune(cfg: &mut controller::Config) {
    cfg.queues.defaults = Arc::new(QueueSettings {
        wrapup: Duration::ZERO,
        ..QueueSettings::default()
    });
}

async fn state(ctrl: &Controller) -> Option<(QueueState, Option<NodeId>)> {
    ctrl.queue(&queue()).await.ok().flatten()
}

/// Waits until the queue's state satisfies `pred`; returns it.
async fn wait_state(
    farm: &TestFarm,
    what: &str,
    pred: impl Fn(&QueueState) -> bool,
) -> (QueueState, Option<NodeId>) {
    let ctrl = farm.ctrl.clone();
    let pred = &pred;
    eventually(WAIT, what, || {
        let ctrl = ctrl.clone();
        async move { state(&ctrl).await.filter(|(s, _)| pred(s)) }
    })
    .await
}

/// Callers connected to an agent: (caller id, seq).
fn connected(st: &QueueState) -> Vec<(String, u64)> {
    st.agents
        .values()
        .filter_map(|a| match &a.activity {
            AgentState::Busy {
                caller,
                connected: true,
                ..
            } => Some((caller.caller.clone(), caller.seq)),
            _ => None,
        })
        .collect()
}

fn available(st: &QueueState) -> usize {
    st.agents
        .values()
        .filter(|a| a.activity == AgentState::Available)
        .count()
}

/// Every live call of the queue (callers and agents) sits on `node`, in a
/// `corral:queue:support…` bridge there, and no other node has one with
/// channels. Returns (callers in the holding bridge, pair bridges).
async fn all_on_queue_node(farm: &TestFarm, node: usize) -> (usize, usize) {
    // Polled: an agent is in the queue's state a moment before it is in
    // the holding bridge.
    let mut poll = support::Poll::new(WAIT);
    loop {
        match placement_of_calls(farm, node).await {
            Ok(counts) => return counts,
            Err(why) => assert!(
                poll.next().await,
                "queue calls not all on node {node}: {why}"
            ),
        }
    }
}

async fn placement_of_calls(farm: &TestFarm, node: usize) -> Result<(usize, usize), String> {
    let calls = farm.live_calls().await;
    let elsewhere: Vec<_> = calls.iter().filter(|(i, _)| *i != node).collect();
    if !elsewhere.is_empty() {
        return Err(format!("calls off the queue's node: {elsewhere:?}"));
    }
    let unbridged: Vec<_> = calls
        .iter()
        .filter(|(_, c)| c["bridge"].is_null())
        .collect();
    if !unbridged.is_empty() {
        return Err(format!("queue calls in no bridge: {unbridged:?}"));
    }
    let mut holding = 0;
    let mut pairs = 0;
    for (i, b) in farm.bridges().await {
        let name = b["name"].as_str().unwrap_or_default();
        let n = b["channels"].as_array().map_or(0, |c| c.len());
        if !name.starts_with("corral:queue:support") || n == 0 {
            continue;
        }
        if i != node {
            return Err(format!("queue bridge {name} on node {i}"));
        }
        if name == "corral:queue:support" {
            assert_eq!(b["bridge_type"], "holding", "{b}");
            holding += n;
        } else {
            assert_eq!(n, 2, "a pair bridge holds caller and agent: {b}");
            pairs += 1;
        }
    }
    // Waiting calls hear music on hold; paired ones hear each other.
    let hearing = |what: &str| calls.iter().filter(|(_, c)| c["hears"] == what).count();
    if (hearing("moh"), hearing("bridge")) != (holding, 2 * pairs) {
        return Err(format!(
            "{} hear moh and {} their pair; want {holding} and {}",
            hearing("moh"),
            hearing("bridge"),
            2 * pairs
        ));
    }
    Ok((holding, pairs))
}

fn node_index(farm: &TestFarm, id: &NodeId) -> usize {
    farm.sims
        .iter()
        .position(|s| s.id() == id.as_str())
        .expect("a farm node")
}

/// Frees agents one at a time (the connected caller with the smallest
/// arrival hangs up) and checks that each freed agent takes exactly the
/// next caller in arrival order, until `upto` callers were connected.
/// `restart_at`: restart corral when that many are connected, hanging one
/// caller up while it is away.
async fn answer_in_order(
    farm: &mut TestFarm,
    next: &mut u64,
    upto: u64,
    restart_at: Option<(u64, u64)>,
) {
    while *next < upto {
        let (st, _) = state(&farm.ctrl).await.expect("queue exists");
        let mut busy = connected(&st);
        busy.sort_by_key(|(_, seq)| *seq);
        let (caller, _) = busy.first().cloned().expect("someone is connected");
        if let Some((at, seed)) = restart_at
            && *next == at
        {
            farm.stop_controller().await;
            assert!(farm.hangup(&caller).await, "{caller} hangs up");
            farm.restart_controller(seed, tune).await;
        } else {
            assert!(farm.hangup(&caller).await, "{caller} hangs up");
        }
        let want = *next;
        let (st, _) = wait_state(farm, &format!("caller seq {want} connected"), |s| {
            connected(s).iter().any(|(_, seq)| *seq == want)
        })
        .await;
        // Strict order: nobody after `want` is connected, nobody before it
        // still waits.
        assert!(
            connected(&st).iter().all(|(_, seq)| *seq <= want),
            "a later caller was served first: {:?}",
            connected(&st)
        );
        assert!(
            st.callers.iter().all(|c| c.seq > want),
            "an earlier caller still waits"
        );
        *next += 1;
    }
}

/// Logs agents in and brings callers one after the other (each waits for
/// the previous to be queued, so arrival order is known), on random nodes.
async fn arrive(
    farm: &TestFarm,
    rng: &mut StdRng,
    agents: &[String],
    callers: std::ops::Range<u64>,
) {
    let live: Vec<usize> = (0..farm.sims.len())
        .filter(|i| !farm.dead.contains(i))
        .collect();
    for a in agents {
        let at = live[rng.random_range(0..live.len())];
        farm.call_on(at, &format!("agent-support-{a}"), &format!("agent-{a}"))
            .await;
    }
    wait_state(farm, "agents logged in", |s| {
        agents
            .iter()
            .all(|a| s.agents.keys().any(|k| k.as_str() == a))
    })
    .await;
    for i in callers {
        let at = live[rng.random_range(0..live.len())];
        farm.call_on(at, "queue-support", &format!("caller{i}"))
            .await;
        wait_state(farm, &format!("caller{i} queued"), |s| s.next_seq > i).await;
    }
}

async fn queue_in_order(backend: Backend, restart: bool) {
    let seed = seed("queue_in_order");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut farm = TestFarm::start_with(3, backend, seed, tune).await;
    let agents: Vec<String> = (0..5).map(|i| format!("a{i}")).collect();
    arrive(&farm, &mut rng, &agents, 0..200).await;
    let (st, node) = wait_state(&farm, "five callers connected", |s| connected(s).len() == 5).await;
    // The first five callers took the five agents; the rest wait in order.
    let first: BTreeSet<u64> = connected(&st).iter().map(|(_, s)| *s).collect();
    assert_eq!(first, (0..5).collect(), "seed {seed}");
    let seqs: Vec<u64> = st.callers.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (5..200).collect::<Vec<_>>(), "seed {seed}");
    for (i, c) in st.callers.iter().enumerate() {
        assert_eq!(c.caller, format!("caller{}", i + 5), "seed {seed}");
    }
    let node = node_index(&farm, &node.expect("queue placed"));
    let (holding, pairs) = all_on_queue_node(&farm, node).await;
    assert_eq!((holding, pairs), (195, 5), "seed {seed}");

    let mut next = 5;
    let restart_at = restart.then_some((100, seed));
    answer_in_order(&mut farm, &mut next, 200, restart_at).await;
    // The last five hang up; the queue is empty and everyone was answered.
    for (caller, _) in connected(&state(&farm.ctrl).await.unwrap().0) {
        farm.hangup(&caller).await;
    }
    let (st, _) = wait_state(&farm, "all agents free", |s| {
        available(s) == 5 && s.callers.is_empty()
    })
    .await;
    assert_eq!(
        (st.answered, st.abandoned, st.lost, st.timed_out),
        (200, 0, 0, 0),
        "seed {seed}"
    );
    assert_eq!(
        farm.sim_stat(|s| s.hungup_by_ari),
        0,
        "corral hung up a call"
    );
    let (holding, pairs) = all_on_queue_node(&farm, node).await;
    assert_eq!((holding, pairs), (5, 0), "the agents wait on hold");
    farm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_answered_in_arrival_order_memory() {
    queue_in_order(Backend::Memory, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_answered_in_arrival_order_redis() {
    queue_in_order(Backend::Redis, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_keep_their_place_across_a_restart_memory() {
    queue_in_order(Backend::Memory, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_keep_their_place_across_a_restart_redis() {
    queue_in_order(Backend::Redis, true).await;
}

/// The queue's node dies: what was there is counted lost, the queue is
/// placed again on a live node, and the agents and callers who come
/// afterwards go there and are served in order.
async fn queue_node_killed(backend: Backend) {
    let seed = seed("queue_node_killed");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut farm = TestFarm::start_with(3, backend, seed, tune).await;
    let agents: Vec<String> = (0..3).map(|i| format!("a{i}")).collect();
    arrive(&farm, &mut rng, &agents, 0..10).await;
    let (_, node) = wait_state(&farm, "three connected", |s| connected(s).len() == 3).await;
    let old = node.expect("placed");
    let victim = node_index(&farm, &old);
    farm.kill(victim).await;
    let store = farm.store.clone();
    let id = old.clone();
    eventually(WAIT, "the queue's node marked down", || {
        let store = store.clone();
        let id = id.clone();
        async move {
            let nodes = store.list_nodes().await.ok()?;
            nodes.iter().any(|n| n.id == id && !n.healthy).then_some(())
        }
    })
    .await;
    let agents: Vec<String> = (0..3).map(|i| format!("b{i}")).collect();
    arrive(&farm, &mut rng, &agents, 10..30).await;
    let (st, node) = wait_state(&farm, "three new callers connected", |s| {
        connected(s).len() == 3
    })
    .await;
    let new = node.expect("placed again");
    assert_ne!(new, old, "seed {seed}");
    assert_eq!(st.lost, 10, "7 waiting and 3 talking died with the node");
    let first: BTreeSet<u64> = connected(&st).iter().map(|(_, s)| *s).collect();
    assert_eq!(first, (10..13).collect(), "seed {seed}");
    assert!(st.agents.keys().all(|a| a.as_str().starts_with('b')));
    let node = node_index(&farm, &new);
    let (holding, pairs) = all_on_queue_node(&farm, node).await;
    assert_eq!((holding, pairs), (17, 3), "seed {seed}");
    let mut next = 13;
    answer_in_order(&mut farm, &mut next, 30, None).await;
    assert_eq!(
        farm.sim_stat(|s| s.hungup_by_ari),
        0,
        "corral hung up a call"
    );
    farm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_node_killed_memory() {
    queue_node_killed(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_node_killed_redis() {
    queue_node_killed(Backend::Redis).await;
}
