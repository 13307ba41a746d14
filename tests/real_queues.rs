//! Call queues on real parts: sipp callers and call-in agents through
//! Kamailio onto real Asterisk nodes, a sipp phone as a static member.
//! Where everyone is comes from the nodes' ARI (`GET /bridges`,
//! `GET /channels`), who answered from sipp.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::farm::Backend;
use support::real::RealTest;

const WAIT: Duration = Duration::from_secs(30);

/// The caller numbers of the channels in the bridge named `name`, with the
/// node it is on; `None` while no node has such a bridge with channels.
async fn bridge_callers(t: &RealTest, name: &str) -> Option<(String, Vec<String>)> {
    let numbers: BTreeMap<String, String> = t
        .farm
        .channels()
        .await
        .into_iter()
        .map(|(_, c)| {
            (
                c["id"].as_str().unwrap_or_default().to_string(),
                c["caller"]["number"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let rooms = t.farm.rooms().await;
    let truth = rooms.get(name)?;
    assert_eq!(
        truth.bridge_count(),
        1,
        "{name} in more than one bridge: {truth:?}"
    );
    let (node, bridges) = truth.bridges.iter().next()?;
    let mut callers: Vec<String> = bridges
        .values()
        .flatten()
        .map(|c| numbers.get(c).cloned().unwrap_or_default())
        .collect();
    callers.sort();
    Some((node.clone(), callers))
}

/// Transmitted RTP packets per channel, from `pjsip show channelstats`.
fn tx_counts(stats: &str) -> BTreeMap<String, u64> {
    stats
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // BridgeId ChannelId UpTime Codec rx-count lost pct jitter tx-count ...
            (f.len() >= 9 && f[1].starts_with("kamailio-"))
                .then(|| (f[1].to_string(), f[8].parse().unwrap_or(0)))
        })
        .collect()
}

async fn wait_bridge(t: &RealTest, name: &str, want: &[&str]) -> String {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    let mut poll = support::Poll::new(WAIT);
    loop {
        let seen = bridge_callers(t, name).await;
        if let Some((node, callers)) = &seen
            && *callers == want
        {
            return node.clone();
        }
        if !poll.next().await {
            panic!(
                "{name}: want {want:?}, saw {seen:?}\n{}",
                t.diagnose().await
            );
        }
    }
}

/// Callers of queue `support` arriving on random nodes wait on the queue's
/// node in its holding bridge, hearing music on hold; call-in agents arriving on random nodes
/// meet them there and take them in arrival order; the static member
/// `alice` of queue `sales` (shipped corral.toml) is rung at the phone the
/// shipped pjsip.conf names and bridged with its caller.
async fn queues(backend: Backend) {
    let t = RealTest::start("queues", 3, backend, &[]).await;
    let mut runs = Vec::new();
    // Four callers, one after the other: each waits in the holding bridge
    // before the next is sent, so arrival order is 1, 2, 3, 4.
    let mut waiting = Vec::new();
    let mut queue_node = String::new();
    for k in 1..=4 {
        runs.push(t.call("queue-support", &format!("sup{k}"), 1));
        waiting.push(format!("sup{k}-1"));
        let want: Vec<&str> = waiting.iter().map(String::as_str).collect();
        queue_node = wait_bridge(&t, "corral:queue:support", &want).await;
    }
    // They hear music on hold: in a holding bridge nobody hears anybody,
    // so RTP sent to a waiting caller is the music.
    let qi = t.farm.index_of(&queue_node).unwrap();
    support::eventually(WAIT, "every waiting caller sent RTP", || async {
        let stats = t.farm.nodes[qi].rx("pjsip show channelstats").ok()?;
        let sending = tx_counts(&stats).values().filter(|n| **n > 0).count();
        (sending == 4).then_some(())
    })
    .await;
    // Agents call in, one after the other: each takes the caller waiting
    // longest.
    for (agent, caller) in [("bob", "sup1-1"), ("carol", "sup2-1")] {
        runs.push(t.call(&format!("agent-support-{agent}"), agent, 1));
        let node = wait_bridge(
            &t,
            &format!("corral:queue:support:{agent}"),
            &[&format!("{agent}-1"), caller],
        )
        .await;
        assert_eq!(
            node, queue_node,
            "{agent} paired away from the queue's node"
        );
    }
    let node = wait_bridge(&t, "corral:queue:support", &["sup3-1", "sup4-1"]).await;
    assert_eq!(node, queue_node);

    // The static member: alice's phone answers, corral bridges it.
    let mut phone = t
        .farm
        .sipp
        .phone(
            &t.farm.dir().join("sipp"),
            "alice",
            t.farm.phone_port,
            1,
            Duration::from_millis(200),
        )
        .expect("phone starts");
    runs.push(t.call("queue-sales", "buyer", 1));
    let (node, callers) = support::eventually(WAIT, "alice bridged with the buyer", || async {
        bridge_callers(&t, "corral:queue:sales:alice")
            .await
            .filter(|(_, c)| c.len() == 2 && c.contains(&"buyer-1".to_string()))
    })
    .await;
    assert!(
        phone.answered().contains_key("alice"),
        "alice's phone answered: {:?}",
        phone.answered()
    );
    let sales_node = t.farm.rooms().await;
    eprintln!(
        "queues ({backend:?}): support on {queue_node}, sales paired on {node} ({callers:?}); {} rooms",
        sales_node.len()
    );

    for r in &runs {
        assert_eq!(r.answered().len(), 1, "{:?} {:?}", r.answered(), r.failed());
    }
    t.farm.hangup_all().await;
    for r in runs.iter_mut().chain(std::iter::once(&mut phone)) {
        let s = r.wait(Duration::from_secs(30)).await;
        assert!(
            s.is_some_and(|s| s.success()),
            "{}\n{}",
            r.output(),
            r.errors()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_on_the_memory_store() {
    queues(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_on_redis() {
    queues(Backend::Redis).await;
}
