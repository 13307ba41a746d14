//! The co-location call path end to end: corral's real ARI client and
//! controller against simulated nodes over real sockets, on both store
//! backends. Every invariant is read from the nodes' ARI (`GET
//! /ari/bridges`, `GET /sim/calls`), not from corral's own map.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use support::farm::{Backend, TestFarm, answers_fail};
use support::{eventually, seed};

const SETTLE: Duration = Duration::from_secs(20);

/// Waits until `expected` calls are live and every one of them sits in a
/// bridge; returns the live calls.
async fn all_bridged(farm: &TestFarm, expected: usize) -> Vec<(usize, serde_json::Value)> {
    farm.wait_all_bridged(expected, SETTLE).await
}

/// 3 nodes, 300 calls into 30 rooms landing round-robin: every room's live
/// channels sit in one bridge on one node, every call joined, every
/// redirect used its token exactly once, and corral hung up nothing.
async fn colocates(backend: Backend) {
    let seed = seed("colocates");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut farm = TestFarm::start(3, backend, seed).await;
    for i in 0..300 {
        let room = rng.random_range(0..30);
        farm.call(&format!("conf-room{room}"), &format!("c{i}"))
            .await;
    }
    let calls = all_bridged(&farm, 300).await;
    assert_eq!(farm.split_rooms().await, vec![], "seed {seed}");
    // One bridge per room, and every live call in its room's bridge.
    let bridges = farm.bridges().await;
    let mut per_room: HashMap<String, usize> = HashMap::new();
    for (_, b) in &bridges {
        if b["channels"].as_array().is_some_and(|c| !c.is_empty()) {
            *per_room
                .entry(b["name"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    assert!(
        per_room.values().all(|n| *n == 1),
        "a room has two bridges: {per_room:?}"
    );
    let bridged_total: usize = bridges
        .iter()
        .map(|(_, b)| b["channels"].as_array().map_or(0, |c| c.len()))
        .sum();
    assert_eq!(bridged_total, calls.len());
    // Tokens: each redirect confirmed once, none wasted or forged.
    let t = farm.metrics.snapshot();
    assert_eq!(t.joined, 300, "every call joined: {t:?}");
    assert_eq!(
        t.redirected, t.confirmed,
        "every redirect's token consumed: {t:?}"
    );
    assert!(
        t.redirected > 100,
        "round-robin landing must redirect most calls: {t:?}"
    );
    assert_eq!(t.splits + t.degraded, 0, "{t:?}");
    let redirects_302 = farm.sim_stat(|s| s.redirects_followed);
    assert_eq!(
        redirects_302, t.redirected,
        "each redirect became one followed 302"
    );
    assert_eq!(
        farm.sim_stat(|s| s.hungup_by_ari),
        0,
        "corral hung up a call"
    );
    farm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colocates_300_calls_in_30_rooms_memory() {
    colocates(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colocates_300_calls_in_30_rooms_redis() {
    colocates(Backend::Redis).await;
}

/// The same with a node killed halfway: once corral has marked it down, no
/// call is sent to it (no redirect targets it) and every room with members
/// is whole again on the live nodes.
async fn survives_node_loss(backend: Backend) {
    let seed = seed("survives_node_loss");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut farm = TestFarm::start(3, backend, seed).await;
    for i in 0..150 {
        let room = rng.random_range(0..30);
        farm.call(&format!("conf-room{room}"), &format!("a{i}"))
            .await;
    }
    all_bridged(&farm, 150).await;
    let victim = 1;
    let victim_id = farm.sims[victim].id().to_string();
    let lost: usize = farm
        .live_calls()
        .await
        .iter()
        .filter(|(i, _)| *i == victim)
        .count();
    farm.kill(victim).await;
    let store = farm.store.clone();
    eventually(
        Duration::from_secs(5),
        "the killed node marked down",
        || {
            let store = store.clone();
            let id = victim_id.clone();
            async move {
                let nodes = store.list_nodes().await.ok()?;
                nodes
                    .iter()
                    .any(|n| n.id.as_str() == id && n.state == corral::domain::NodeState::Down)
                    .then_some(())
            }
        },
    )
    .await;
    let rooms = farm
        .store
        .list_rooms(&Default::default(), None, 1000)
        .await
        .unwrap();
    assert!(
        rooms.rooms.iter().all(|p| p.node.as_str() != victim_id),
        "a room still points at the dead node"
    );
    let sent_before = farm.sim_stat(|s| s.redirects_followed);
    for i in 0..150 {
        let room = rng.random_range(0..30);
        let landed = farm
            .call(&format!("conf-room{room}"), &format!("b{i}"))
            .await;
        assert_ne!(landed, victim);
    }
    all_bridged(&farm, 300 - lost).await;
    assert_eq!(farm.split_rooms().await, vec![], "seed {seed}");
    let t = farm.metrics.snapshot();
    assert_eq!(t.redirected, t.confirmed, "a redirect went nowhere: {t:?}");
    assert!(farm.sim_stat(|s| s.redirects_followed) > sent_before);
    assert_eq!(
        farm.sim_stat(|s| s.hungup_by_ari),
        0,
        "corral hung up a call"
    );
    // Rooms whose calls all died with the node are re-placed by their next
    // caller: every room now has one live owner.
    let owners: HashSet<String> = farm
        .store
        .list_rooms(&Default::default(), None, 1000)
        .await
        .unwrap()
        .rooms
        .iter()
        .map(|p| p.node.to_string())
        .collect();
    assert!(!owners.contains(&victim_id));
    farm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_node_killed_halfway_memory() {
    survives_node_loss(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_node_killed_halfway_redis() {
    survives_node_loss(Backend::Redis).await;
}

/// A caller who hangs up leaves the room; the empty room is released after
/// its linger and its bridge destroyed on the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_rooms_are_released_and_their_bridges_destroyed() {
    let seed = seed("release");
    let mut farm = TestFarm::start(2, Backend::Memory, seed).await;
    farm.call("conf-solo", "s1").await;
    farm.call("conf-solo", "s2").await;
    let calls = all_bridged(&farm, 2).await;
    for (i, c) in &calls {
        let url = format!(
            "{}/sim/calls/{}",
            farm.sims[*i].base_url(),
            c["call_id"].as_str().unwrap()
        );
        assert!(
            farm.http
                .delete(url)
                .send()
                .await
                .unwrap()
                .status()
                .is_success()
        );
    }
    let store = farm.store.clone();
    eventually(Duration::from_secs(5), "room released", || {
        let store = store.clone();
        async move {
            let page = store.list_rooms(&Default::default(), None, 10).await.ok()?;
            page.rooms.is_empty().then_some(())
        }
    })
    .await;
    eventually(Duration::from_secs(5), "bridge destroyed", || async {
        let left = farm
            .bridges()
            .await
            .iter()
            .filter(|(_, b)| b["name"] == "corral:conference:solo")
            .count();
        (left == 0).then_some(())
    })
    .await;
    assert_eq!(farm.metrics.snapshot().released, 1);
    farm.stop().await;
}

/// A moved call whose answer fails (ARI 500 on every try) on its room's
/// node is not lost: only a 404 for the channel proves a call gone, so the
/// join is tried again, and the call, still ringing, keeps its member
/// record and its consumed token until it joins. (Before: "call gone
/// before it joined" was logged while the call still rang, its token entry
/// was erased, and the resync later found it, read its token as unknown
/// and handed it back to the dialplan, which hung it up.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_call_whose_answer_fails_still_joins() {
    let seed = seed("answer_fails");
    let farm = TestFarm::start(2, Backend::Memory, seed).await;
    farm.call_on(1, "conf-ans", "first").await;
    // The room's node: where its first call joined (the landing node,
    // unless it was not eligible yet, e.g. a ping lost under load).
    let home = all_bridged(&farm, 1).await[0].0;
    let other = 1 - home;
    // Every try of the next answer on the room's node fails (corral tries
    // an ARI call 4 times; 6 failures outlast one round of tries).
    farm.sims[home].set_faults(answers_fail(6));
    farm.call_on(other, "conf-ans", "moved").await;
    let calls = all_bridged(&farm, 2).await;
    assert!(
        calls.iter().all(|(i, _)| *i == home),
        "seed {seed}: {calls:?}"
    );
    assert_eq!(farm.sims[home].stats().rest_faults, 6, "seed {seed}");
    assert_eq!(farm.sim_stat(|s| s.hungup_by_ari), 0);
    assert_eq!(farm.metrics.snapshot().joined, 2);
    farm.stop().await;
}

/// A moved call whose answer keeps failing past every retry in place is
/// placed again 2 s later by its own worker, not two resyncs later: here
/// resyncs run every 30 s, and the call still joins within a few seconds
/// once ARI answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_that_keeps_failing_is_placed_again_soon() {
    let seed = seed("answer_fails_long");
    let farm = TestFarm::start_with(2, Backend::Memory, seed, |c| {
        c.reconcile_interval = Duration::from_secs(30);
    })
    .await;
    farm.call_on(1, "conf-ans2", "first").await;
    let home = all_bridged(&farm, 1).await[0].0;
    let other = 1 - home;
    // 4 joins in place of 4 ARI tries each: 16 failed answers.
    farm.sims[home].set_faults(answers_fail(16));
    farm.call_on(other, "conf-ans2", "moved").await;
    let calls = farm.wait_all_bridged(2, Duration::from_secs(8)).await;
    assert!(
        calls.iter().all(|(i, _)| *i == home),
        "seed {seed}: {calls:?}"
    );
    assert_eq!(farm.sims[home].stats().rest_faults, 16, "seed {seed}");
    assert_eq!(farm.sim_stat(|s| s.hungup_by_ari), 0);
    farm.stop().await;
}
