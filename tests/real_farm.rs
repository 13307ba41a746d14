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

/// 60 callers into 6 rooms through Kamailio round-robin on 3 real nodes:
/// every room's calls in one bridge on one node; every caller answered
/// (sipp saw the 200 OK), the redirected ones after a 302 that Kamailio
/// followed (sipp never saw one); each token used by exactly one call.
async fn conferences(backend: Backend) {
    let t = RealTest::start("conferences", 3, backend, &[]).await;
    let farm = &t.farm;
    let mut runs = Vec::new();
    for room in ROOMS {
        let calls = Calls {
            service: format!("conf-{room}"),
            caller: room.to_string(),
            count: 10,
            rate: 20.0,
            target: farm.kamailio.addr(),
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
    // Round-robin over 3 nodes: about 2 of 3 calls land away from their
    // room at first; far fewer than that would mean the redirect path was
    // not exercised.
    assert!(redirected >= 10, "only {redirected} of 60 calls redirected");
    let followed = farm.kamailio.log().matches("302 followed").count();
    assert_eq!(
        followed, redirected,
        "Kamailio followed {followed} 302s; {redirected} calls arrived with a token"
    );
    eprintln!(
        "conferences ({backend:?}): 60 answered, {redirected} after a 302 Kamailio followed, 6 rooms whole"
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
    conferences(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conferences_on_redis() {
    conferences(Backend::Redis).await;
}
