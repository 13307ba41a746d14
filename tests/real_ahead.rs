//! Route ahead on the real farm when parts fail: sipp callers → the
//! shipped Kamailio, which asks corral where each call's room lives before
//! dispatching → real Asterisk nodes. The truth is read from each node's
//! ARI, from sipp and from Kamailio's log.
//!
//! (60 callers into 6 rooms with and without route ahead: `real_farm.rs`,
//! `conferences_*`.)

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::farm::Backend;
use support::real::{RealTest, route};

const ROOMS: [&str; 6] = ["sales", "support", "ops", "eng", "board", "lobby"];

/// Kamailio's failure timer (`fr_timer` in kamailio.cfg): a call first sent
/// to a dead node is answered no sooner than this, after the failover.
const FR_TIMER: Duration = Duration::from_secs(2);

/// Calls of the calls' ARI channels that arrived with a token (after a 302
/// Kamailio followed).
async fn redirected(t: &RealTest) -> usize {
    t.farm
        .channels()
        .await
        .iter()
        .filter(|(_, c)| c["dialplan"]["context"] == "corral-token")
        .count()
}

/// corral stopped in the middle, with an API token set. While it is down,
/// Kamailio's lookup fails and every call is still dispatched round-robin;
/// no node has corral's app, so each refuses it unanswered (503 from
/// `[corral-fallback]`), Kamailio tries the next, and the caller gets a
/// 5xx: a fast, clean failure, never a call answered only to be hung up.
/// The calls already bridged stay. Once corral is back, calls Kamailio sends round-robin
/// during its 5 s without asking are repaired by redirect, later ones are
/// routed ahead; every room ends whole. The proxy never holds a credential
/// and the token reaches no log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_corral_stopped_calls_go_round_robin_and_are_repaired_once_it_is_back() {
    const TOKEN: &str = "op-token-9f3a51c2";
    let mut t = RealTest::start(
        "aheadoutage",
        3,
        Backend::Redis,
        &[("CORRAL_API_TOKEN", TOKEN)],
    )
    .await;
    let rooms = ["sales", "ops", "eng"];
    let mut runs = Vec::new();
    for room in rooms {
        runs.push(t.call_room(room, &format!("{room}a"), 4));
    }
    let before = t.wait_whole(3, 12, Duration::from_secs(45)).await;
    assert_eq!(redirected(&t).await, 0, "routed ahead, without a token");

    t.farm.corral.as_mut().unwrap().stop();
    // Kamailio stops asking for 5 s from the first lookup that fails, at
    // the earliest now.
    let quiet_since = Instant::now();
    let mut outage = t.call_room("sales", "out", 6);
    let seen = support::eventually(
        Duration::from_secs(30),
        "every outage call answered by a node",
        || {
            let (a, f) = (outage.answered(), outage.failed());
            async move { (a.len() + f.len() == 6).then_some((a, f)) }
        },
    )
    .await;
    assert!(
        seen.0.is_empty() && seen.1.values().all(|&s| (500..600).contains(&s)),
        "while corral was down, every call refused with a 5xx, none answered: {:?} {:?}\n{}",
        seen.0.keys(),
        seen.1,
        t.farm.kamailio.log()
    );
    let warned = |log: &str| log.matches("route ahead: corral did not answer").count();
    assert!(warned(&t.farm.kamailio.log()) >= 1);
    assert_eq!(
        t.farm.rooms().await,
        before,
        "bridged calls stay while corral is down"
    );

    // Back: within Kamailio's 5 s without asking, calls go round-robin and
    // corral repairs them; then it is asked again.
    t.farm
        .corral
        .as_mut()
        .unwrap()
        .restart()
        .await
        .expect("corral restarts");
    t.wait_streaming(Duration::from_secs(20)).await;
    let back_after = quiet_since.elapsed();
    let mut after = Vec::new();
    for room in rooms {
        after.push(t.call_room(room, &format!("{room}b"), 6));
    }
    t.wait_whole(3, 30, Duration::from_secs(45)).await;
    for r in &after {
        assert_eq!(r.answered().len(), 6, "failed: {:?}", r.failed());
    }
    let moved = redirected(&t).await;
    let followed = t.farm.kamailio.log().matches("302 followed").count();
    assert_eq!(
        followed, moved,
        "every call that landed away was repaired by a 302 Kamailio followed"
    );
    eprintln!(
        "outage: 6 calls refused with a 5xx while corral was down; corral back after {back_after:?}; \
         {moved} of 18 later calls repaired by redirect, the others routed ahead; 3 rooms whole"
    );
    if back_after < Duration::from_secs(3) {
        // The first calls went out well inside Kamailio's 5 s without
        // asking: round-robin puts about 2 of 3 of them away from their
        // room.
        assert!(moved >= 1, "no call was round-robin after corral came back");
    }
    // Then Kamailio asks again: a call a second until one is routed ahead.
    let corral = t.farm.corral.as_ref().unwrap();
    let mut probes = Vec::new();
    support::eventually(
        Duration::from_secs(20),
        "Kamailio asking corral again",
        || {
            probes.push(t.call_room("ops", &format!("ops{}", probes.len()), 1));
            async move {
                let answered = corral
                    .metric_sum("corral_route_lookups_total{outcome=\"answered\"}")
                    .await
                    .ok()?;
                (answered >= 1.0).then_some(())
            }
        },
    )
    .await;
    t.wait_whole(3, 30 + probes.len(), Duration::from_secs(45))
        .await;
    for (what, log) in [
        ("corral", corral.log()),
        ("kamailio", t.farm.kamailio.log()),
    ] {
        assert!(!log.contains(TOKEN), "the API token reached {what}'s log");
    }
    t.farm.hangup_all().await;
    for r in runs
        .iter_mut()
        .chain(after.iter_mut())
        .chain(probes.iter_mut())
    {
        let s = r.wait(Duration::from_secs(30)).await;
        assert!(s.is_some_and(|s| s.success()), "{}", r.errors());
    }
    let _ = outage.wait(Duration::from_secs(30)).await;
}

/// kill -9 of the node with the most rooms. As soon as corral sees it
/// down, its lookups never name it (its rooms are placed again on live
/// nodes as their next callers are looked up), so no later call is sent to
/// it: each is answered sooner than Kamailio's failover would allow. With
/// corral stopped as well, the dispatcher's own probing keeps calls away
/// from the dead node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_gets_no_calls_and_its_rooms_move() {
    let mut t = RealTest::start("aheadkill", 3, Backend::Memory, &[]).await;
    let mut runs = Vec::new();
    for room in ROOMS {
        runs.push(t.call_room(room, &format!("{room}a"), 3));
    }
    let before = t.wait_whole(6, 18, Duration::from_secs(45)).await;
    let mut per_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (room, truth) in &before {
        per_node
            .entry(truth.whole_on().unwrap().to_string())
            .or_default()
            .push(room.clone());
    }
    let (victim, lost) = per_node
        .iter()
        .max_by_key(|(_, r)| r.len())
        .map(|(n, r)| (n.clone(), r.clone()))
        .unwrap();
    let vi = t.farm.index_of(&victim).unwrap();
    let victim_sip = format!("sip:{}", t.farm.nodes[vi].sip_addr());
    t.farm.nodes[vi].kill();
    let corral = t.farm.corral.as_ref().unwrap();
    support::eventually(
        Duration::from_secs(20),
        "corral marks the killed node down",
        || async {
            let nodes = corral.get("/v1/nodes").await.ok()?;
            nodes["nodes"]
                .as_array()?
                .iter()
                .any(|n| n["id"] == victim.as_str() && n["state"] == "down")
                .then_some(())
        },
    )
    .await;
    // corral's answer: never the dead node.
    for room in ROOMS {
        let (status, node, sip) = route(&t.api(), &format!("conf-{room}")).await;
        assert_eq!(status, 200, "{room}: {node}");
        assert!(
            node != victim && sip != victim_sip,
            "{room} on the dead node"
        );
    }
    let mut later = Vec::new();
    for room in ROOMS {
        later.push(t.call_room(room, &format!("{room}b"), 3));
    }
    let live = 18 - 3 * lost.len() + 18;
    let after = t.wait_whole(6, live, Duration::from_secs(45)).await;
    for (room, truth) in &after {
        assert_ne!(truth.whole_on(), Some(victim.as_str()), "{room}");
        let want = if lost.contains(room) { 3 } else { 6 };
        assert_eq!(truth.calls(), want, "{room}: {truth:?}");
    }
    for r in &later {
        let answered = r.answered();
        assert_eq!(answered.len(), 3, "failed: {:?}", r.failed());
        for a in answered.values() {
            assert!(
                a.setup < FR_TIMER,
                "{} took {:?}: sent to the dead node first",
                a.caller,
                a.setup
            );
        }
    }
    eprintln!("killed {victim} (rooms {lost:?}): 18 later calls routed to live nodes, rooms moved");

    // corral down too: the dispatcher's probing alone keeps calls away
    // from the dead node; the live ones refuse them (no corral), so the
    // callers get a 5xx at once, not after a timeout on the dead node.
    let down = format!("node down: {victim_sip}");
    support::eventually(
        Duration::from_secs(20),
        "Kamailio's probing marks the node down",
        || {
            let log = t.farm.kamailio.log();
            let down = down.clone();
            async move { log.contains(&down).then_some(()) }
        },
    )
    .await;
    t.farm.corral.as_mut().unwrap().stop();
    let sent = Instant::now();
    let mut blind = t.call_room("sales", "blind", 6);
    let seen = support::eventually(
        Duration::from_secs(30),
        "every call refused by the live nodes",
        || {
            let (a, f) = (blind.answered(), blind.failed());
            async move { (a.len() + f.len() == 6).then_some((a, f)) }
        },
    )
    .await;
    assert!(
        seen.0.is_empty() && seen.1.values().all(|&s| (500..600).contains(&s)),
        "without corral every call is refused with a 5xx: {:?} {:?}",
        seen.0.keys(),
        seen.1
    );
    // Six calls at 20/s, each refused by the live nodes: well inside one
    // `fr_timer`, which a call sent to the dead node would have waited.
    assert!(
        sent.elapsed() < FR_TIMER + Duration::from_millis(300),
        "refusals took {:?}: sent to the dead node first",
        sent.elapsed()
    );
    t.farm.hangup_all().await;
    for r in later.iter_mut() {
        let s = r.wait(Duration::from_secs(30)).await;
        assert!(s.is_some_and(|s| s.success()), "{}", r.errors());
    }
    let _ = blind.wait(Duration::from_secs(30)).await;
    drop(runs);
}
