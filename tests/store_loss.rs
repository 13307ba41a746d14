//! The store is a cache of what the nodes' ARI says: losing it (Redis
//! restarted empty) must cost seconds, not the farm. The nodes are
//! registered again, their leases taken again, their rooms claimed again
//! from what ARI shows, and the splits the outage made are healed.

mod support;

use std::time::{Duration, Instant};

use corral::domain::{ChannelId, NodeId, NodeState, RoomKey, TokenId};
use corral::sim::Upstream;
use corral::store::TokenGrant;
use support::farm::{Backend, TestFarm, answers_fail};
use support::{Poll, eventually, seed};

/// Redis restarts empty while calls sit in rooms on three nodes, and calls
/// keep coming while it is down and after. Within 5 s of Redis being back
/// every room is whole again (one bridge on one node), every node is
/// registered and up, and no call was dropped. (Before: the nodes were
/// never registered again; every resync failed with "node is down or
/// unknown and cannot claim room", every new call was a degraded join, and
/// the rooms stayed split for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_costs_seconds_not_the_farm() {
    let seed = seed("redis_empty");
    let mut farm = TestFarm::start(3, Backend::PrivateRedis, seed).await;
    let rooms = ["conf-e0", "conf-e1", "conf-e2", "conf-e3"];
    for i in 0..12 {
        farm.call(rooms[i % 4], &format!("a{i}")).await;
    }
    farm.wait_all_bridged(12, Duration::from_secs(10)).await;
    // Down: calls join where they land (degraded), splitting rooms.
    farm.kill_redis();
    for i in 0..6 {
        farm.call(rooms[i % 4], &format!("d{i}")).await;
    }
    farm.wait_all_bridged(18, Duration::from_secs(10)).await;
    farm.restart_redis();
    let back = Instant::now();
    for i in 0..6 {
        farm.call(rooms[i % 4], &format!("b{i}")).await;
    }
    let mut poll = Poll::new(Duration::from_secs(5));
    loop {
        let calls = farm.live_calls().await;
        let bridged = calls.iter().filter(|(_, c)| !c["bridge"].is_null()).count();
        let broken = farm.rooms_not_whole().await;
        if calls.len() == 24 && bridged == 24 && broken.is_empty() {
            break;
        }
        assert!(
            poll.next().await,
            "5 s after Redis came back: {} calls live, {bridged} bridged, rooms not whole {broken:?}; seed {seed}",
            calls.len()
        );
    }
    eprintln!("rooms whole {:?} after Redis came back", back.elapsed());
    let nodes = farm.store.list_nodes().await.unwrap();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    assert!(nodes.iter().all(|n| n.state == NodeState::Up), "{nodes:?}");
    assert_eq!(farm.sim_stat(|s| s.hungup_by_ari), 0, "seed {seed}");
    assert_eq!(farm.sim_stat(|s| s.stasis_failed), 0, "seed {seed}");
    farm.stop().await;
}

/// How many tokens ended with `outcome` (`corral_tokens_total`).
fn tokens(farm: &TestFarm, outcome: &str) -> u64 {
    let label = format!("outcome=\"{outcome}\"");
    farm.metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("corral_tokens_total") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A redirected call whose token arrives while Redis is down joins its
/// room where it landed, like any call while the store is down: this
/// replica minted the token and kept its grant. It joins the room's bridge
/// on that node, so the room stays whole. (Before: the token could not be
/// checked, the call was handed back to the dialplan, whose fallback hung
/// it up.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_arriving_while_redis_is_down_joins_on_the_kept_grant() {
    let seed = seed("token_redis_down");
    let mut farm = TestFarm::start(2, Backend::PrivateRedis, seed).await;
    farm.call_on(1, "conf-tok", "first").await;
    // The room's node: where its first call joined (the landing node,
    // unless it was not eligible yet, e.g. a ping lost under load).
    let home = farm.wait_all_bridged(1, Duration::from_secs(10)).await[0].0;
    let other = 1 - home;
    farm.sims[other].set_upstream(Upstream {
        follow_delay: Duration::from_millis(800),
        ..Upstream::follow()
    });
    farm.call_on(other, "conf-tok", "moved").await;
    let sim = farm.sims[other].clone();
    eventually(Duration::from_secs(5), "the call redirected", || {
        let sim = sim.clone();
        async move { (sim.stats().redirects_302 == 1).then_some(()) }
    })
    .await;
    farm.kill_redis();
    // The 302 is followed 0.8 s later, onto the room's node.
    let calls = farm.wait_all_bridged(2, Duration::from_secs(10)).await;
    assert!(
        calls.iter().all(|(i, _)| *i == home),
        "seed {seed}: {calls:?}"
    );
    assert_eq!(farm.rooms_not_whole().await, vec![], "seed {seed}");
    assert_eq!(tokens(&farm, "used_locally"), 1);
    assert_eq!(farm.sim_stat(|s| s.hungup_by_ari), 0);
    farm.restart_redis();
    farm.stop().await;
}

/// A token this replica did not mint (another replica's redirect) arriving
/// while Redis does not answer waits in Stasis, still ringing, and asks
/// again until Redis answers: then it is consumed and the call joins its
/// room. (Before: handed back to the dialplan and hung up at once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_arriving_while_redis_hangs_waits_for_it() {
    let seed = seed("token_redis_hangs");
    let farm = TestFarm::start(2, Backend::PrivateRedis, seed).await;
    farm.call_on(1, "conf-wait", "first").await;
    let home = farm.wait_all_bridged(1, Duration::from_secs(10)).await[0].0;
    let token = TokenId::generate(&mut rand::rng());
    let grant = TokenGrant {
        room: RoomKey::parse("conference", "wait").unwrap(),
        from: NodeId::new(format!("ast{}", 2 - home)).unwrap(),
        to: NodeId::new(format!("ast{}", home + 1)).unwrap(),
        channel: ChannelId::new("elsewhere").unwrap(),
        caller: String::new(),
        hops: 1,
        agent: None,
    };
    farm.store
        .mint_token(&token, &grant, Duration::from_secs(30))
        .await
        .unwrap();
    farm.pause_redis();
    farm.call_on(home, token.as_str(), "moved").await;
    eventually(
        Duration::from_secs(10),
        "the token waiting for Redis",
        || {
            let waiting = tokens(&farm, "waited_for_store");
            async move { (waiting == 1).then_some(()) }
        },
    )
    .await;
    farm.resume_redis();
    let calls = farm.wait_all_bridged(2, Duration::from_secs(10)).await;
    assert!(
        calls.iter().all(|(i, _)| *i == home),
        "seed {seed}: {calls:?}"
    );
    assert_eq!(farm.rooms_not_whole().await, vec![], "seed {seed}");
    assert_eq!(tokens(&farm, "consumed"), 1);
    assert_eq!(farm.sim_stat(|s| s.hungup_by_ari), 0);
    farm.stop().await;
}

/// The same with two replicas on the Redis (each node's stream held by
/// one, the other standing by): whichever renews its leases first after
/// the restart, the nodes are registered again and the rooms whole within
/// 5 s. (Before: the replica that held the leases renewed them first and
/// never registered the nodes again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_under_two_replicas() {
    use std::sync::Arc;

    use corral::controller::{self, Controller};
    use corral::telemetry::Metrics;
    use tokio_util::sync::CancellationToken;

    let seed = seed("redis_empty_two");
    let mut farm = TestFarm::start(3, Backend::PrivateRedis, seed).await;
    let store_b = corral::store::connect(&farm.store_cfg).await.unwrap();
    let cfg_b = controller::Config {
        replica: "replica-b".into(),
        ..support::farm::test_config(seed ^ 1)
    };
    let b = Controller::new(cfg_b, store_b, farm.specs(), Arc::new(Metrics::new())).unwrap();
    let stop_b = CancellationToken::new();
    let run_b = {
        let (b, s) = (b.clone(), stop_b.clone());
        tokio::spawn(async move { b.run(s).await })
    };
    let rooms = ["conf-t0", "conf-t1", "conf-t2"];
    for i in 0..9 {
        farm.call(rooms[i % 3], &format!("a{i}")).await;
    }
    farm.wait_all_bridged(9, Duration::from_secs(10)).await;
    farm.kill_redis();
    for i in 0..3 {
        farm.call(rooms[i % 3], &format!("d{i}")).await;
    }
    farm.wait_all_bridged(12, Duration::from_secs(10)).await;
    farm.restart_redis();
    let back = Instant::now();
    for i in 0..3 {
        farm.call(rooms[i % 3], &format!("b{i}")).await;
    }
    let mut poll = Poll::new(Duration::from_secs(5));
    loop {
        let calls = farm.live_calls().await;
        let bridged = calls.iter().filter(|(_, c)| !c["bridge"].is_null()).count();
        let broken = farm.rooms_not_whole().await;
        if calls.len() == 15 && bridged == 15 && broken.is_empty() {
            break;
        }
        assert!(
            poll.next().await,
            "5 s after Redis came back: {} calls live, {bridged} bridged, rooms not whole {broken:?}; seed {seed}",
            calls.len()
        );
    }
    eprintln!("rooms whole {:?} after Redis came back", back.elapsed());
    let nodes = farm.store.list_nodes().await.unwrap();
    assert!(nodes.iter().all(|n| n.state == NodeState::Up), "{nodes:?}");
    assert_eq!(farm.sim_stat(|s| s.hungup_by_ari), 0, "seed {seed}");
    stop_b.cancel();
    let _ = run_b.await;
    farm.stop().await;
}

/// A call that arrives while Redis is down joins where it landed (degraded);
/// when that join's answer fails past the ARI client's own tries, the join
/// is tried again while the call is still there, as a recorded join is.
/// (Before: "call gone before it joined" was logged and the call was left
/// ringing, unhandled, until two resyncs had seen it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degraded_join_whose_answer_fails_still_joins() {
    let seed = seed("degraded_answer_fails");
    let mut farm = TestFarm::start_with(2, Backend::PrivateRedis, seed, |c| {
        c.reconcile_interval = Duration::from_secs(30);
    })
    .await;
    farm.kill_redis();
    // 6 failures outlast one round of the ARI client's 4 tries.
    farm.sims[0].set_faults(answers_fail(6));
    farm.call_on(0, "conf-deg", "degraded").await;
    let calls = farm.wait_all_bridged(1, Duration::from_secs(5)).await;
    assert!(calls.iter().all(|(i, _)| *i == 0), "seed {seed}: {calls:?}");
    assert_eq!(farm.sims[0].stats().rest_faults, 6, "seed {seed}");
    assert_eq!(farm.sim_stat(|s| s.hungup_by_ari), 0);
    farm.restart_redis();
    farm.stop().await;
}
