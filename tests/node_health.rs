//! Node health and the room lifecycle around it: redirects whose call never
//! arrives, a node restarted as a new incarnation, and an event websocket
//! that drops and comes back (resync from `GET /channels` and
//! `GET /bridges`).

mod support;

use std::time::Duration;

use corral::controller::FarmEvent;
use corral::domain::{NodeState, RoomKey};
use corral::sim::{OnRefer, Upstream};
use support::farm::{Backend, TestFarm};
use support::{eventually, seed};

async fn bridged(farm: &TestFarm, n: usize) {
    eventually(
        Duration::from_secs(15),
        &format!("{n} calls bridged"),
        || async {
            let calls = farm.live_calls().await;
            let b = calls.iter().filter(|(_, c)| !c["bridge"].is_null()).count();
            (b == n && calls.len() == n).then_some(())
        },
    )
    .await;
}

/// A 302 that the proxy does not follow loses the call (as on a real farm
/// without `uac_redirect`): corral counts the redirect as timed out after
/// its deadline, and the room it created for that call is released, not
/// left behind pointing at a node with nobody in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_that_never_arrives_is_counted_and_leaves_nothing_behind() {
    let mut farm = TestFarm::start_with(2, Backend::Memory, seed("lost_302"), |c| {
        c.redirect_deadline = Duration::from_millis(300);
    })
    .await;
    for s in &farm.sims {
        s.set_upstream(Upstream::drop_302());
    }
    // Drain ast1 so every new room goes to ast2; the call lands on ast1.
    farm.ctrl
        .set_drain(&"ast1".parse().unwrap(), true)
        .await
        .unwrap();
    let landed = farm.call("conf-ghost", "g1").await;
    assert_eq!(landed, 0);
    let m = farm.metrics.clone();
    eventually(Duration::from_secs(5), "redirect timed out", || {
        let m = m.clone();
        async move { (m.snapshot().timed_out == 1).then_some(()) }
    })
    .await;
    assert_eq!(farm.sim_stat(|s| s.redirects_lost), 1);
    let room = RoomKey::parse("conference", "ghost").unwrap();
    let store = farm.store.clone();
    eventually(Duration::from_secs(5), "the empty room released", || {
        let store = store.clone();
        let room = room.clone();
        async move { store.get_room(&room).await.ok()?.is_none().then_some(()) }
    })
    .await;
    assert_eq!(farm.sim_stat(|s| s.hungup_by_ari), 0);
    farm.stop().await;
}

/// A node restarted (a crash and a new Asterisk process, new start time):
/// its rooms are released, it registers as a new incarnation, and the
/// calls that come next are placed and co-located again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_starts_empty_and_serves_again() {
    let mut farm = TestFarm::start(2, Backend::Memory, seed("restart")).await;
    for i in 0..6 {
        farm.call("conf-phoenix", &format!("p{i}")).await;
    }
    bridged(&farm, 6).await;
    let room = RoomKey::parse("conference", "phoenix").unwrap();
    let owner = farm
        .store
        .get_room(&room)
        .await
        .unwrap()
        .unwrap()
        .placement
        .node;
    let idx = farm
        .sims
        .iter()
        .position(|s| s.id() == owner.as_str())
        .unwrap();
    let before = farm.sims[idx].startup_time();
    farm.sims[idx].restart().await.unwrap();
    assert_ne!(farm.sims[idx].startup_time(), before, "a new incarnation");
    // The calls on the restarted node died with it; the room is gone.
    let store = farm.store.clone();
    eventually(Duration::from_secs(5), "room released", || {
        let store = store.clone();
        let room = room.clone();
        async move { store.get_room(&room).await.ok()?.is_none().then_some(()) }
    })
    .await;
    let ctrl = farm.ctrl.clone();
    eventually(Duration::from_secs(10), "node streaming again", || {
        let ctrl = ctrl.clone();
        async move {
            ctrl.nodes_streaming()
                .iter()
                .all(|(_, up)| *up)
                .then_some(())
        }
    })
    .await;
    let nodes = farm.store.list_nodes().await.unwrap();
    let rec = nodes.iter().find(|n| n.id == owner).unwrap();
    assert_eq!(rec.state, NodeState::Up);
    assert_eq!(rec.rooms, 0, "a new incarnation owns nothing");
    let survivors = farm.live_calls().await.len();
    for i in 0..4 {
        farm.call("conf-phoenix", &format!("q{i}")).await;
    }
    bridged(&farm, survivors + 4).await;
    assert_eq!(farm.split_rooms().await, vec![]);
    assert_eq!(farm.sim_stat(|s| s.hungup_by_ari), 0);
    farm.stop().await;
}

/// The event websocket drops while calls sit in bridges (the node itself is
/// fine): corral marks the node down, reconnects, resyncs from ARI, and the
/// room map shows the members again; a caller hanging up afterwards still
/// leaves the room (events resume for surviving channels).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_websocket_is_resynced_from_ari() {
    let mut farm = TestFarm::start(1, Backend::Memory, seed("resync")).await;
    for i in 0..3 {
        farm.call("conf-steady", &format!("s{i}")).await;
    }
    bridged(&farm, 3).await;
    let room = RoomKey::parse("conference", "steady").unwrap();
    let incarnations_before = farm.sim_stat(|s| s.incarnations);
    let mut events = farm.ctrl.subscribe();
    let r = farm
        .http
        .put(format!("{}/sim/faults", farm.sims[0].base_url()))
        .json(&serde_json::json!({"close_websockets": true}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    // Down (rooms released), then up again with the same incarnation.
    let mut seen_down = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("node down then up")
            .unwrap();
        match ev {
            FarmEvent::NodeDown { .. } => seen_down = true,
            FarmEvent::NodeUp {
                new_incarnation, ..
            } if seen_down => {
                assert!(!new_incarnation);
                break;
            }
            _ => {}
        }
    }
    let store = farm.store.clone();
    eventually(Duration::from_secs(10), "members back after resync", || {
        let store = store.clone();
        let room = room.clone();
        async move {
            let d = store.get_room(&room).await.ok()??;
            (d.placement.members == 3).then_some(())
        }
    })
    .await;
    assert_eq!(
        farm.sim_stat(|s| s.incarnations),
        incarnations_before,
        "the node itself did not restart"
    );
    let calls = farm.live_calls().await;
    let id = calls[0].1["call_id"].as_str().unwrap().to_string();
    let r = farm
        .http
        .delete(format!("{}/sim/calls/{id}", farm.sims[0].base_url()))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    eventually(Duration::from_secs(5), "the leaver removed", || {
        let store = store.clone();
        let room = room.clone();
        async move {
            let d = store.get_room(&room).await.ok()??;
            (d.placement.members == 2).then_some(())
        }
    })
    .await;
    assert_eq!(farm.sim_stat(|s| s.hungup_by_ari), 0);
    farm.stop().await;
}

/// Splits are healed: with a hop limit of 0 every call that lands away from
/// its room joins where it landed (a split); the resync then moves those
/// calls (answered, so by REFER) to the owner with a token, announces the
/// room healed with how long the split lasted, and removes the empty local
/// bridge. In the end the room is whole on one node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_are_healed_by_moving_the_stray_calls() {
    let mut farm =
        TestFarm::start_with(3, Backend::Memory, seed("heal"), |c| c.hop_limit = 0).await;
    let mut events = farm.ctrl.subscribe();
    for i in 0..12 {
        farm.call("conf-split", &format!("h{i}")).await;
    }
    let t = farm.metrics.snapshot();
    let healed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Ok(FarmEvent::SplitHealed { lasted_ms, .. }) = events.recv().await {
                return lasted_ms;
            }
        }
    })
    .await
    .expect("a split healed");
    assert!(healed < 15_000);
    farm.wait_all_bridged(12, Duration::from_secs(15)).await;
    eventually(
        Duration::from_secs(15),
        "one bridge on one node",
        || async { farm.split_rooms().await.is_empty().then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(15),
        "no empty corral bridge left",
        || async {
            let empty = farm
                .bridges()
                .await
                .iter()
                .filter(|(_, b)| b["channels"].as_array().is_some_and(|c| c.is_empty()))
                .count();
            (empty == 0).then_some(())
        },
    )
    .await;
    let after = farm.metrics.snapshot();
    assert!(
        after.splits > 0 || t.splits > 0,
        "no split happened: {after:?}"
    );
    assert!(
        farm.metrics.encode().contains("corral_splits_healed_total"),
        "healed not counted"
    );
    assert!(
        farm.sim_stat(|s| s.refers_accepted) > 0,
        "stray calls move by REFER"
    );
    assert_eq!(farm.sim_stat(|s| s.hungup_by_ari), 0);
    farm.stop().await;
}

/// Waits for the node to go down and come back up (same incarnation).
async fn down_then_up(events: &mut tokio::sync::broadcast::Receiver<FarmEvent>) {
    let mut seen_down = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("node down then up")
            .unwrap();
        match ev {
            FarmEvent::NodeDown { .. } => seen_down = true,
            FarmEvent::NodeUp {
                new_incarnation, ..
            } if seen_down => {
                assert!(!new_incarnation);
                return;
            }
            _ => {}
        }
    }
}

/// A node blip (its websocket cut, or the node hung for a while) releases
/// its rooms; the resync after it records the bridged calls again under a
/// new epoch. The room's later callers must join the same bridge as the
/// earlier ones: a room's calls on one node are always in one bridge
/// (before: the later callers got the new epoch's bridge, and the two
/// halves of the conference could not hear each other, for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_blip_leaves_each_room_in_one_bridge() {
    let seed = seed("blip_one_bridge");
    let mut farm = TestFarm::start(1, Backend::Memory, seed).await;
    for i in 0..3 {
        farm.call("conf-blip", &format!("b{i}")).await;
    }
    bridged(&farm, 3).await;
    let mut events = farm.ctrl.subscribe();
    let r = farm
        .http
        .put(format!("{}/sim/faults", farm.sims[0].base_url()))
        .json(&serde_json::json!({"close_websockets": true}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    down_then_up(&mut events).await;
    // The node paused: pings fail, it is marked down, then comes back.
    farm.sims[0].hang();
    let ctrl = farm.ctrl.clone();
    eventually(Duration::from_secs(5), "the hung node marked down", || {
        let ctrl = ctrl.clone();
        async move { (!ctrl.nodes_streaming()[0].1).then_some(()) }
    })
    .await;
    farm.sims[0].resume();
    down_then_up(&mut events).await;
    let room = RoomKey::parse("conference", "blip").unwrap();
    let store = farm.store.clone();
    eventually(Duration::from_secs(10), "members back after resync", || {
        let store = store.clone();
        let room = room.clone();
        async move {
            let d = store.get_room(&room).await.ok()??;
            (d.placement.members == 3).then_some(())
        }
    })
    .await;
    for i in 3..6 {
        farm.call("conf-blip", &format!("b{i}")).await;
    }
    bridged(&farm, 6).await;
    eventually(
        Duration::from_secs(2),
        "the room's calls in one bridge",
        || async { farm.rooms_not_whole().await.is_empty().then_some(()) },
    )
    .await;
    assert_eq!(farm.sim_stat(|s| s.hungup_by_ari), 0, "seed {seed}");
    farm.stop().await;
}

/// The sum of a counter family in the Prometheus text (`name` without
/// `_total`).
fn counter_sum(farm: &TestFarm, name: &str) -> u64 {
    let prefix = format!("{name}_total");
    farm.metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A split the resync finds (not a join past the hop limit) is counted:
/// the room's node hangs, is marked down (its room released), the room's
/// next caller lands on the other node and places it there, the hung node
/// comes back with its calls: a split, detected by the resync, counted
/// once, healed. (Before: `corral_splits_detected_total` counted only
/// hop-limit joins and read 0 here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_found_by_the_resync_is_counted_once() {
    let seed = seed("split_counted");
    let farm = TestFarm::start(2, Backend::Memory, seed).await;
    for i in 0..3 {
        farm.call_on(0, "conf-count", &format!("c{i}")).await;
    }
    bridged(&farm, 3).await;
    let mut events = farm.ctrl.subscribe();
    farm.sims[0].hang();
    let ctrl = farm.ctrl.clone();
    eventually(Duration::from_secs(5), "the hung node marked down", || {
        let ctrl = ctrl.clone();
        async move {
            let s = ctrl.nodes_streaming();
            (!s[0].1 && s[1].1).then_some(())
        }
    })
    .await;
    farm.call_on(1, "conf-count", "c3").await;
    let m = farm.metrics.clone();
    eventually(
        Duration::from_secs(5),
        "the call on the other node joined",
        || {
            let m = m.clone();
            async move { (m.snapshot().joined == 4).then_some(()) }
        },
    )
    .await;
    farm.sims[0].resume();
    let (mut detected, mut healed) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while healed == 0 {
        match tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("split detected and healed")
            .unwrap()
        {
            FarmEvent::SplitDetected { .. } => detected += 1,
            FarmEvent::SplitHealed { .. } => healed += 1,
            _ => {}
        }
    }
    assert_eq!(detected, 1, "seed {seed}");
    farm.wait_all_bridged(4, Duration::from_secs(10)).await;
    assert_eq!(
        counter_sum(&farm, "corral_splits_detected"),
        1,
        "seed {seed}"
    );
    assert_eq!(farm.metrics.snapshot().splits, 1, "seed {seed}");
    assert_eq!(farm.sim_stat(|s| s.hungup_by_ari), 0);
    farm.stop().await;
}

/// A split healed by REFER whose far ends refuse it: nothing shows on ARI
/// and the calls stay where they are. corral gives each move the redirect
/// deadline, counts it failed, and moves the call again with backoff,
/// never hanging it up; once the far ends accept, the split heals. (Before:
/// the calls were marked "on their way" forever and never moved again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refer_is_retried_with_backoff() {
    let seed = seed("refer_refused");
    let mut farm = TestFarm::start_with(3, Backend::Memory, seed, |c| {
        c.hop_limit = 0;
        c.redirect_deadline = Duration::from_millis(300);
    })
    .await;
    let refuse = Upstream {
        on_refer: OnRefer::Reject,
        ..Upstream::follow()
    };
    for s in &farm.sims {
        s.set_upstream(refuse.clone());
    }
    for i in 0..6 {
        farm.call("conf-refuse", &format!("r{i}")).await;
    }
    farm.wait_all_bridged(6, Duration::from_secs(10)).await;
    // Refused, then tried again: more REFERs than stray calls.
    eventually(
        Duration::from_secs(10),
        "the refused moves tried again",
        || async {
            let failed = counter_sum(&farm, "corral_heal_moves_failed");
            let refers = farm.sim_stat(|s| s.refers_failed);
            (failed >= 2 && refers > failed).then_some(())
        },
    )
    .await;
    assert_eq!(farm.live_calls().await.len(), 6, "no call hung up");
    assert_eq!(farm.sim_stat(|s| s.refers_accepted), 0);
    // The far ends accept now: the next try heals the split.
    for s in &farm.sims {
        s.set_upstream(Upstream::follow());
    }
    eventually(
        Duration::from_secs(15),
        "the room whole after a retry",
        || async {
            let calls = farm.live_calls().await;
            let bridged = calls.iter().filter(|(_, c)| !c["bridge"].is_null()).count();
            (calls.len() == 6 && bridged == 6 && farm.rooms_not_whole().await.is_empty())
                .then_some(())
        },
    )
    .await;
    assert!(farm.sim_stat(|s| s.refers_accepted) > 0);
    assert_eq!(farm.sim_stat(|s| s.hungup_by_ari), 0, "seed {seed}");
    farm.stop().await;
}

/// A hung node (SIGSTOP) stops taking new rooms within seconds: its first
/// failed ping marks it suspect in the store, which refuses it as the
/// choice for a new room, while its rooms stay until it is marked down
/// (`down_after_failures` pings in a row). Default pings (1 s): refused
/// within 2.5 s of the hang. (Before: only the mark-down stopped it, 3 to
/// 4 s after the hang.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_node_stops_taking_new_rooms_within_seconds() {
    use corral::domain::NodeId;
    use corral::store::Resolution;
    let seed = seed("hung_no_new_rooms");
    let farm = TestFarm::start_with(2, Backend::Memory, seed, |c| {
        c.ping_interval = Duration::from_secs(1);
    })
    .await;
    let hung = NodeId::new(farm.sims[0].id()).unwrap();
    farm.sims[0].hang();
    let t0 = std::time::Instant::now();
    let mut poll = support::Poll::new(Duration::from_secs(10));
    let mut i = 0;
    loop {
        i += 1;
        let probe = RoomKey::parse("conference", &format!("probe{i}")).unwrap();
        if let Resolution::ChoiceIneligible { .. } =
            farm.store.resolve_placement(&probe, &hung).await.unwrap()
        {
            break;
        }
        assert!(poll.next().await, "the hung node still takes rooms");
    }
    let took = t0.elapsed();
    eprintln!("a hung node stopped taking new rooms {took:?} after the hang");
    assert!(took < Duration::from_millis(2500), "{took:?}; seed {seed}");
    farm.sims[0].resume();
    farm.stop().await;
}

/// A crashed node's rooms are released within half a second: its event
/// websocket closes with the process, which marks it down at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_nodes_rooms_are_released_within_half_a_second() {
    let seed = seed("crash_release");
    let mut farm = TestFarm::start(2, Backend::Memory, seed).await;
    for i in 0..3 {
        farm.call_on(0, "conf-gone", &format!("g{i}")).await;
    }
    bridged(&farm, 3).await;
    let room = RoomKey::parse("conference", "gone").unwrap();
    let t0 = std::time::Instant::now();
    farm.kill(0).await;
    let store = farm.store.clone();
    eventually(Duration::from_secs(5), "the room released", || {
        let store = store.clone();
        let room = room.clone();
        async move { store.get_room(&room).await.ok()?.is_none().then_some(()) }
    })
    .await;
    let took = t0.elapsed();
    eprintln!("a crashed node's rooms released {took:?} after the crash");
    assert!(took < Duration::from_millis(500), "{took:?}; seed {seed}");
    farm.stop().await;
}
