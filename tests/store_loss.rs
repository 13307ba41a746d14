//! The store is a cache of what the nodes' ARI says: losing it (Redis
//! restarted empty) must cost seconds, not the farm. The nodes are
//! registered again, their leases taken again, their rooms claimed again
//! from what ARI shows, and the splits the outage made are healed.

mod support;

use std::time::{Duration, Instant};

use corral::domain::NodeState;
use support::farm::{Backend, TestFarm};
use support::{Poll, seed};

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
