//! The seed's system, end to end, on real parts: sipp callers → Kamailio's
//! dispatcher (round-robin) → real Asterisk 22 nodes → corral → 302
//! followed by Kamailio → the room's node. Every config is rendered from
//! `deploy/`. The truth is read from each node's ARI and from sipp, never
//! from corral's map.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use corral::testbed::sipp::Calls;
use support::farm::Backend;
use support::real::RealTest;

const ROOMS: [&str; 6] = ["sales", "support", "ops", "eng", "board", "lobby"];

/// 60 callers into 6 rooms through Kamailio on 3 real nodes: every room's
/// calls in one bridge on one node; every caller answered (sipp saw the
/// 200 OK), the redirected ones after a 302 that Kamailio followed (sipp
/// never saw one); each token used by exactly one call.
///
/// With route ahead (`ahead`), Kamailio asks corral before dispatching and
/// under 2% of the calls are redirected: each lands where corral said, the
/// room's node, and joins there; corral's answer for each room names the
/// node its bridge is on. Without it (`api.route_ahead = false`: corral has
/// no opinion), round-robin lands about 2 of 3 calls away from their room
/// and the redirect repairs them.
async fn conferences(backend: Backend, ahead: bool) {
    let env: &[(&str, &str)] = if ahead {
        &[]
    } else {
        &[("CORRAL_API_ROUTE_AHEAD", "false")]
    };
    let t = RealTest::start("conferences", 3, backend, env).await;
    let farm = &t.farm;
    let mut runs = Vec::new();
    for (i, room) in ROOMS.iter().enumerate() {
        // Unequal rates: six rooms at one rate can stay in lockstep with
        // the proxy's round-robin over three nodes (each room's calls all
        // landing on one node), and then nothing is redirected.
        let calls = Calls {
            service: format!("conf-{room}"),
            caller: room.to_string(),
            count: 10,
            rate: 14.0 + 2.0 * i as f64,
            target: farm.kamailio.addr(),
            domain: None,
        };
        runs.push(
            farm.sipp
                .callers(&farm.dir().join("sipp"), room, &calls)
                .expect("sipp starts"),
        );
    }
    let rooms = t.wait_whole(6, 60, Duration::from_secs(45)).await;
    for room in ROOMS {
        let truth = &rooms[&format!("corral:conference:{room}")];
        assert_eq!(truth.calls(), 10, "{room}: {truth:?}");
    }

    // Every caller answered, as sipp saw it; none saw a 302.
    let mut answered = HashMap::new();
    for r in &runs {
        answered.extend(r.answered());
    }
    assert_eq!(
        answered.len(),
        60,
        "callers answered per sipp: {:?}",
        answered.keys()
    );

    // Who came how, from ARI: a redirected call arrives in the token
    // context with the token as its extension.
    let channels = farm.channels().await;
    let mut callers: BTreeMap<String, usize> = BTreeMap::new();
    let mut tokens: BTreeSet<String> = BTreeSet::new();
    let mut redirected = 0;
    for (_, c) in &channels {
        *callers
            .entry(c["caller"]["number"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
        match c["dialplan"]["context"].as_str() {
            Some("corral-token") => {
                redirected += 1;
                let token = c["dialplan"]["exten"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                assert!(
                    tokens.insert(token.clone()),
                    "token {token} used by two calls"
                );
            }
            Some("from-proxy") => {}
            other => panic!("a call in context {other:?}: {c}"),
        }
    }
    assert_eq!(channels.len(), 60, "one channel per caller: {callers:?}");
    assert!(
        callers.values().all(|n| *n == 1),
        "a caller with two legs: {callers:?}"
    );
    assert!(
        answered.keys().all(|a| callers.contains_key(a)),
        "sipp's callers and ARI's channels differ"
    );
    let corral = farm.corral.as_ref().unwrap();
    let answered_ahead = corral
        .metric_sum("corral_route_lookups_total{outcome=\"answered\"}")
        .await
        .unwrap();
    if ahead {
        // Under 2%: each call went where corral said, its room's node.
        assert!(
            redirected * 50 < 60,
            "{redirected} of 60 calls redirected with route ahead\n{}",
            t.diagnose().await
        );
        assert_eq!(answered_ahead, 60.0, "one answered lookup per call");
        // The route's answer and the StasisStart agree: corral names, for
        // each room, the node its bridge is on (what ARI shows).
        for room in ROOMS {
            let (status, node, sip) = support::real::route(&t.api(), &format!("conf-{room}")).await;
            let truth = rooms[&format!("corral:conference:{room}")]
                .whole_on()
                .unwrap();
            assert_eq!((status, node.as_str()), (200, truth), "{room}");
            let i = farm.index_of(truth).unwrap();
            assert_eq!(sip, format!("sip:{}", farm.nodes[i].sip_addr()));
        }
    } else {
        // Round-robin over 3 nodes: about 2 of 3 calls land away from their
        // room at first; far fewer than that would mean the redirect path
        // was not exercised.
        assert!(redirected >= 10, "only {redirected} of 60 calls redirected");
        assert_eq!(answered_ahead, 0.0, "corral had no opinion");
    }
    let followed = farm.kamailio.log().matches("302 followed").count();
    assert_eq!(
        followed, redirected,
        "Kamailio followed {followed} 302s; {redirected} calls arrived with a token"
    );
    eprintln!(
        "conferences ({backend:?}, route ahead {ahead}): 60 answered, {redirected} after a 302 Kamailio followed, 6 rooms whole"
    );

    // The far end hangs up: every sipp call completes its scenario.
    assert_eq!(farm.hangup_all().await, 60);
    for (i, r) in runs.iter_mut().enumerate() {
        let status = r.wait(Duration::from_secs(30)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "sipp {}: {status:?}\n{}\n{}",
            ROOMS[i],
            r.output(),
            r.errors()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conferences_on_the_memory_store() {
    conferences(Backend::Memory, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conferences_on_redis() {
    conferences(Backend::Redis, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conferences_without_route_ahead_are_repaired_by_redirect() {
    conferences(Backend::Memory, false).await;
}

/// `kamailio -c` passes on the shipped `kamailio.cfg` (rendered with only
/// its listen address, list path and corral's address filled in).
#[test]
fn the_shipped_kamailio_cfg_passes_kamailio_check() {
    let dir = tempfile::tempdir().unwrap();
    let node = corral::testbed::render::NodeAddrs {
        id: "ast1".into(),
        bind: "127.0.0.1".into(),
        sip_port: 5160,
        http_port: 8160,
        entity_id: "02:00:00:00:00:01".into(),
    };
    let out = corral::testbed::Kamailio::check(dir.path(), &[node], 5159, "127.0.0.1:8159")
        .unwrap_or_else(|e| panic!("kamailio -c refused the shipped config: {e}"));
    assert!(out.contains("config file ok"), "{out}");
}

/// Plays the app on every node; returns the first `StasisStart` on any
/// of them within `deadline`, with the node's index.
async fn stasis_start(
    sockets: &mut [corral::testbed::AppSocket],
    deadline: Duration,
) -> Option<(usize, serde_json::Value)> {
    let until = tokio::time::Instant::now() + deadline;
    while tokio::time::Instant::now() < until {
        for (i, s) in sockets.iter_mut().enumerate() {
            if let Some(ev) = s.next_of("StasisStart", Duration::from_millis(50)).await {
                return Some((i, ev));
            }
        }
    }
    None
}

/// The shipped proxy follows a 302 only to a node of the farm: a node
/// redirecting a ringing call outside the farm gets it refused (the caller
/// sees 502), one redirecting it to another node gets it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_follows_302s_only_to_farm_nodes() {
    let t = RealTest::start_without_corral("proxy302", 2).await;
    let farm = &t.farm;
    let mut sockets = Vec::new();
    for n in &farm.nodes {
        sockets.push(n.connect_app("corral").await.expect("app socket"));
    }

    let mut outside = t.call_room("out", "out", 1);
    let (i, ev) = stasis_start(&mut sockets, Duration::from_secs(10))
        .await
        .expect("the call reaches the app");
    let id = ev["channel"]["id"].as_str().unwrap().to_string();
    let (status, _) = farm.nodes[i]
        .post(
            &format!("channels/{id}/redirect"),
            &[("endpoint", "PJSIP/sip:evil@127.0.0.1:9")],
        )
        .await
        .unwrap();
    assert_eq!(status, 204);
    let failed = support::eventually(Duration::from_secs(10), "the caller refused", || {
        let f = outside.failed();
        async move { f.get("out-1").copied() }
    })
    .await;
    assert_eq!(failed, 502, "a 302 outside the farm must be refused");
    assert!(
        farm.kamailio.log().contains("refused: not a farm node"),
        "{}",
        farm.kamailio.log()
    );
    assert!(outside.wait(Duration::from_secs(10)).await.is_some());

    let mut inside = t.call_room("in", "in", 1);
    let (i, ev) = stasis_start(&mut sockets, Duration::from_secs(10))
        .await
        .expect("the call reaches the app");
    let id = ev["channel"]["id"].as_str().unwrap().to_string();
    let other = 1 - i;
    let endpoint = format!("PJSIP/sip:hello@{}", farm.nodes[other].sip_addr());
    let (status, _) = farm.nodes[i]
        .post(
            &format!("channels/{id}/redirect"),
            &[("endpoint", endpoint.as_str())],
        )
        .await
        .unwrap();
    assert_eq!(status, 204);
    let (j, ev) = stasis_start(&mut sockets, Duration::from_secs(10))
        .await
        .expect("the redirected call arrives");
    assert_eq!(
        j, other,
        "the call arrives on the node of the 302's Contact"
    );
    assert_eq!(ev["channel"]["dialplan"]["exten"], "hello");
    let id = ev["channel"]["id"].as_str().unwrap().to_string();
    let (status, _) = farm.nodes[j]
        .post(&format!("channels/{id}/answer"), &[])
        .await
        .unwrap();
    assert_eq!(status, 204);
    support::eventually(Duration::from_secs(10), "the caller answered", || {
        let a = inside.answered();
        async move { a.contains_key("in-1").then_some(()) }
    })
    .await;
    assert_eq!(farm.hangup_all().await, 1);
    let status = inside.wait(Duration::from_secs(10)).await;
    assert!(status.is_some_and(|s| s.success()), "{}", inside.errors());
}

/// kill -9 of a node while calls are up: its rooms are re-placed; later
/// callers of those rooms, including the ones the dispatcher still sends to
/// the dead node (Kamailio fails them over), meet on a live node. The node
/// restarted on the same ports is a new incarnation and owns nothing: the
/// rooms stay where they were re-placed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_loses_its_rooms_and_a_restarted_one_owns_nothing() {
    let mut t = RealTest::start("crash", 3, Backend::Memory, &[]).await;
    let mut runs = Vec::new();
    for room in ROOMS {
        runs.push(t.call_room(room, &format!("{room}a"), 4));
    }
    let before = t.wait_whole(6, 24, Duration::from_secs(45)).await;
    // The node with the most rooms dies.
    let mut per_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (room, truth) in &before {
        per_node
            .entry(truth.whole_on().unwrap().to_string())
            .or_default()
            .push(room.clone());
    }
    let (victim, lost_rooms) = per_node
        .iter()
        .max_by_key(|(_, r)| r.len())
        .map(|(n, r)| (n.clone(), r.clone()))
        .unwrap();
    let vi = t.farm.index_of(&victim).unwrap();
    let killed_at = std::time::Instant::now();
    t.farm.nodes[vi].kill();
    eprintln!("killed {victim} with rooms {lost_rooms:?}");

    // Later callers of every room: 4 more each, round-robin over all three
    // nodes (the dispatcher does not know yet that one is dead).
    let mut later = Vec::new();
    for room in ROOMS {
        later.push(t.call_room(room, &format!("{room}b"), 4));
    }
    let live_calls = 24 - 4 * lost_rooms.len() + 24;
    let after = t.wait_whole(6, live_calls, Duration::from_secs(60)).await;
    eprintln!(
        "crash: rooms whole again on live nodes {:?} after the kill",
        killed_at.elapsed()
    );
    for (room, truth) in &after {
        let node = truth.whole_on().unwrap();
        assert_ne!(node, victim, "{room} still on the dead node");
        let want = if lost_rooms.contains(room) { 4 } else { 8 };
        assert_eq!(truth.calls(), want, "{room}: {truth:?}");
    }
    for r in &later {
        assert_eq!(
            r.answered().len(),
            4,
            "later callers answered: {:?} failed: {:?}",
            r.answered().keys(),
            r.failed()
        );
    }

    // The node comes back on the same ports: a new incarnation that owns
    // nothing. New callers of the old rooms still meet where they were.
    t.farm.nodes[vi].restart().await.expect("restart");
    t.wait_streaming(Duration::from_secs(20)).await;
    let nodes = t
        .farm
        .corral
        .as_ref()
        .unwrap()
        .get("/v1/nodes")
        .await
        .unwrap();
    let view = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == victim.as_str())
        .cloned()
        .unwrap();
    assert_eq!(view["rooms"], 0, "the restarted node owns no room: {view}");
    let mut again = Vec::new();
    for room in ROOMS {
        again.push(t.call_room(room, &format!("{room}c"), 2));
    }
    let last = t
        .wait_whole(6, live_calls + 12, Duration::from_secs(45))
        .await;
    for (room, truth) in &last {
        assert_eq!(
            truth.whole_on(),
            after[room].whole_on(),
            "{room} moved after the restart"
        );
    }
    assert!(
        t.farm.nodes[vi]
            .bridges()
            .await
            .unwrap()
            .iter()
            .all(|b| b["channels"].as_array().is_none_or(|c| c.is_empty()))
    );
    t.farm.hangup_all().await;
    for r in later.iter_mut().chain(again.iter_mut()) {
        let s = r.wait(Duration::from_secs(30)).await;
        assert!(s.is_some_and(|s| s.success()), "{}", r.errors());
    }
    drop(runs);
}

/// A split healed on real Asterisk. A node holding a room's calls freezes
/// (SIGSTOP): corral marks it down and releases its rooms, and new callers
/// of the room meet on another node. The node thaws with its answered
/// calls still bridged there: corral finds the room split and moves the
/// stray calls to the room's node with a token in a REFER (they are
/// answered, so no 302), which the callers follow as phones do: a new
/// INVITE to the Refer-To through Kamailio, then a BYE on the old call.
/// The room ends whole, on one node, in one bridge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_is_healed_by_refer_on_real_asterisk() {
    let mut t = RealTest::start("splitheal", 3, Backend::Memory, &[]).await;
    let mut first = t.call_room("sales", "sa", 3);
    let before = t.wait_whole(1, 3, Duration::from_secs(30)).await;
    let x = before["corral:conference:sales"]
        .whole_on()
        .unwrap()
        .to_string();
    let xi = t.farm.index_of(&x).unwrap();
    t.farm.nodes[xi].pause();
    let corral = t.farm.corral.as_ref().unwrap();
    support::eventually(
        Duration::from_secs(20),
        "corral marks the frozen node down",
        || async {
            let nodes = corral.get("/v1/nodes").await.ok()?;
            nodes["nodes"]
                .as_array()?
                .iter()
                .any(|n| n["id"] == x.as_str() && n["state"] == "down")
                .then_some(())
        },
    )
    .await;
    let mut second = t.call_room("sales", "sb", 3);
    let during = t.wait_whole(1, 3, Duration::from_secs(30)).await;
    let y = during["corral:conference:sales"]
        .whole_on()
        .unwrap()
        .to_string();
    assert_ne!(x, y);
    let thawed = std::time::Instant::now();
    t.farm.nodes[xi].resume();
    let after = t.wait_whole(1, 6, Duration::from_secs(60)).await;
    eprintln!(
        "split heal: room on {x}, re-placed on {y} while {x} was frozen; whole again on {:?} {:?} after the thaw",
        after["corral:conference:sales"].whole_on(),
        thawed.elapsed()
    );
    let moved: Vec<String> = first
        .answered()
        .values()
        .chain(second.answered().values())
        .filter(|a| a.moved)
        .map(|a| a.caller.clone())
        .collect();
    assert_eq!(moved.len(), 3, "three callers followed a REFER: {moved:?}");
    // The old calls end when the callers' BYEs arrive: then six channels
    // are left on the nodes, all in the room's bridge.
    support::eventually(Duration::from_secs(20), "the old calls gone", || async {
        (t.farm.channels().await.len() == 6).then_some(())
    })
    .await;
    assert_eq!(t.farm.hangup_all().await, 6);
    for r in [&mut first, &mut second] {
        let s = r.wait(Duration::from_secs(30)).await;
        assert!(
            s.is_some_and(|s| s.success()),
            "{}\n{}",
            r.output(),
            r.errors()
        );
    }
}

/// A split healed by REFER whose callers refuse every REFER (603, as many
/// carriers do): Asterisk shows nothing and the calls stay where they are.
/// corral gives each move its redirect deadline, counts it failed
/// (`corral_heal_moves_failed_total`), and moves the call again with
/// backoff; it never hangs a call up. (Before: the calls were marked "on
/// their way" for good and never moved again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refer_is_retried_and_never_hangs_up_on_real_asterisk() {
    let mut t = RealTest::start(
        "referrefused",
        3,
        Backend::Memory,
        &[
            ("CORRAL_CONTROLLER_REDIRECT_DEADLINE_MS", "1500"),
            ("CORRAL_CONTROLLER_RECONCILE_INTERVAL_MS", "1000"),
        ],
    )
    .await;
    let mut first = t.call_room_refusing_refer("sales", "ra", 3);
    let before = t.wait_whole(1, 3, Duration::from_secs(30)).await;
    let x = before["corral:conference:sales"]
        .whole_on()
        .unwrap()
        .to_string();
    let xi = t.farm.index_of(&x).unwrap();
    t.farm.nodes[xi].pause();
    let corral = t.farm.corral.as_ref().unwrap();
    support::eventually(
        Duration::from_secs(20),
        "corral marks the frozen node down",
        || async {
            let nodes = corral.get("/v1/nodes").await.ok()?;
            nodes["nodes"]
                .as_array()?
                .iter()
                .any(|n| n["id"] == x.as_str() && n["state"] == "down")
                .then_some(())
        },
    )
    .await;
    let mut second = t.call_room("sales", "rb", 3);
    t.wait_whole(1, 3, Duration::from_secs(30)).await;
    t.farm.nodes[xi].resume();
    // Each stray call's move is refused, counted failed after the deadline,
    // and tried again after its backoff: two failures per call.
    let failed_moves = || async {
        let metrics = corral.metrics().await.ok()?;
        let failed: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("corral_heal_moves_failed_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        Some(failed as u64)
    };
    let mut poll = support::Poll::new(Duration::from_secs(40));
    loop {
        if failed_moves().await.is_some_and(|n| n >= 6) {
            break;
        }
        if !poll.next().await {
            let log = corral.log();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            panic!(
                "heal moves failed: {:?}; refused REFERs {:?}\n{}\ncorral: {tail:#?}",
                failed_moves().await,
                first.refused_refers(),
                t.diagnose().await
            );
        }
    }
    let refused = first.refused_refers();
    eprintln!(
        "refused REFERs per caller: {refused:?}; heal moves failed: {:?}",
        failed_moves().await
    );
    assert_eq!(
        refused.len(),
        3,
        "every stray caller got a REFER: {refused:?}"
    );
    // Nobody was hung up: the six calls are up, the refusing ones still
    // bridged on the old node.
    assert_eq!(t.farm.channels().await.len(), 6, "{}", t.diagnose().await);
    assert!(first.answered().values().all(|a| !a.ended && !a.moved));
    assert_eq!(t.farm.hangup_all().await, 6);
    for r in [&mut first, &mut second] {
        let s = r.wait(Duration::from_secs(30)).await;
        assert!(
            s.is_some_and(|s| s.success()),
            "{}\n{}",
            r.output(),
            r.errors()
        );
    }
}

/// A wrong ARI password for one node: corral says so, naming the node and
/// the key to fix, keeps serving the other nodes, and never logs the
/// password. The proxy's calls that land on that node (no corral app
/// there) are refused unanswered and placed on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ari_password_is_named_for_its_node() {
    let t = support::real::RealTest::start_streaming(
        "badpass",
        2,
        Backend::Memory,
        &[
            ("CORRAL_NODE_AST2_PASSWORD", "not-the-password"),
            // The proxy round-robins (route-ahead would name ast1).
            ("CORRAL_API_ROUTE_AHEAD", "false"),
        ],
        &["ast1"],
    )
    .await;
    let corral = t.farm.corral.as_ref().unwrap();
    let line = support::eventually(Duration::from_secs(20), "an error naming ast2", || async {
        corral
            .log()
            .lines()
            .find(|l| l.contains("ast2") && (l.contains("401") || l.contains("password")))
            .map(str::to_string)
    })
    .await;
    eprintln!("corral says: {line}");
    assert!(line.contains("WARN") && line.contains("401"), "{line}");
    assert!(
        line.contains("CORRAL_NODE_AST2_PASSWORD"),
        "the fix is named: {line}"
    );
    assert!(
        !corral.log().contains("not-the-password"),
        "the password reached the log"
    );
    // The other node works: calls sent straight to it meet in one bridge.
    let calls = corral::testbed::sipp::Calls {
        service: "conf-sales".into(),
        caller: "ok".into(),
        count: 2,
        rate: 20.0,
        target: t.farm.nodes[0].sip_addr(),
        domain: None,
    };
    let mut run = t
        .farm
        .sipp
        .callers(&t.farm.dir().join("sipp"), "ok", &calls)
        .unwrap();
    let rooms = t.wait_whole(1, 2, Duration::from_secs(30)).await;
    assert_eq!(rooms["corral:conference:sales"].whole_on(), Some("ast1"));
    // Through the proxy: round-robin sends every other call to ast2, where
    // corral's app is not (Stasis() fails there); its shipped dialplan
    // refuses the call unanswered (503), Kamailio sends it on to ast1, and
    // every call meets there: none is answered only to be hung up.
    let processed = |cli: &str| {
        cli.lines()
            .find_map(|l| {
                l.strip_suffix(" calls processed")
                    .or(l.strip_suffix(" call processed"))
            })
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    let before = processed(&t.farm.nodes[1].rx("core show calls").unwrap());
    let mut rr = t.call_room("sales", "rr", 6);
    let rooms = t.wait_whole(1, 8, Duration::from_secs(30)).await;
    assert_eq!(rooms["corral:conference:sales"].whole_on(), Some("ast1"));
    let answered = support::eventually(Duration::from_secs(10), "six calls answered", || {
        let a = rr.answered();
        async move { (a.len() == 6).then_some(a) }
    })
    .await;
    assert!(rr.failed().is_empty(), "{:?}", rr.failed());
    let refused = processed(&t.farm.nodes[1].rx("core show calls").unwrap()) - before;
    eprintln!(
        "through the proxy: 6 of 6 calls bridged on ast1, {refused} of them refused by ast2 first"
    );
    assert!(refused >= 2, "round-robin sent no call to ast2 ({refused})");
    assert!(answered.values().all(|a| !a.ended));
    t.farm.hangup_all().await;
    let s = run.wait(Duration::from_secs(20)).await;
    assert!(s.is_some_and(|s| s.success()), "{}", run.errors());
    let s = rr.wait(Duration::from_secs(20)).await;
    assert!(s.is_some_and(|s| s.success()), "{}", rr.errors());
}

/// A node whose ARI does not answer when corral starts: corral names it,
/// serves the others, and streams it as soon as it is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_unreachable_at_start_is_streamed_once_up() {
    let mut t = RealTest::start("unreachable", 2, Backend::Memory, &[]).await;
    t.farm.nodes[1].stop();
    t.farm
        .corral
        .as_mut()
        .unwrap()
        .restart()
        .await
        .expect("corral restarts");
    let corral = t.farm.corral.as_ref().unwrap();
    let line = support::eventually(Duration::from_secs(20), "an error naming ast2", || async {
        corral
            .log()
            .lines()
            .find(|l| l.contains("ast2") && l.contains("cannot be opened"))
            .map(str::to_string)
    })
    .await;
    eprintln!("corral says: {line}");
    assert!(
        line.contains(&t.farm.nodes[1].ari_url()) && line.contains("Connection refused"),
        "the URL tried and why are named: {line}"
    );
    t.farm.nodes[1].restart().await.expect("ast2 starts");
    t.wait_streaming(Duration::from_secs(30)).await;
}
