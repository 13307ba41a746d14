//! Bad input on the call path: malformed events, events for unknown
//! channels, `StasisStart`s with missing or odd arguments, tokens that are
//! not corral's, nodes that answer 5xx. Each is counted and handled, the
//! node's loop keeps running (a normal call afterwards still joins), and no
//! call is hung up by corral (`hungup_by_ari` stays 0).

mod support;

use std::time::Duration;

use corral::sim::{Dialplan, Faults, SimConfig};
use support::farm::{Backend, TestFarm};
use support::{eventually, seed};

async fn inject(farm: &TestFarm, node: usize, frame: &str) {
    let r = farm
        .http
        .post(format!("{}/sim/inject", farm.sims[node].base_url()))
        .json(&serde_json::json!({"app": "corral", "frame": frame}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204, "inject refused");
}

/// Waits until `n` calls are live, all in bridges.
async fn bridged(farm: &TestFarm, n: usize) {
    farm.wait_all_bridged(n, Duration::from_secs(15)).await;
}

fn bad_events(farm: &TestFarm, reason: &str) -> u64 {
    let text = farm.metrics.encode();
    text.lines()
        .filter(|l| {
            l.starts_with("corral_bad_events_total{")
                && l.contains(&format!("outcome=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Frames that are not JSON, JSON without a type, a known type without its
/// channel, a channel id that could reach a URL path, and events for
/// channels nobody knows: counted, skipped, and the loop goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unknown_events_are_skipped() {
    let farm = TestFarm::start(2, Backend::Memory, seed("malformed")).await;
    for frame in [
        "not json at all",
        "{\"no_type\": true}",
        "{\"type\": \"StasisStart\", \"application\": \"corral\"}",
        &format!(
            "{{\"type\": \"ChannelVarset\", \"value\": \"{}\"}}",
            "x".repeat(12_000)
        ),
        "\u{0}\u{1}binary-ish",
    ] {
        inject(&farm, 0, frame).await;
    }
    let odd_id = r#"{"type":"StasisStart","args":["conference","x"],"application":"corral",
        "channel":{"id":"../../bridges/x?y","name":"PJSIP/a-1","state":"Ring","dialplan":{"exten":"conf-x"}}}"#;
    inject(&farm, 0, odd_id).await;
    let unknown = r#"{"type":"StasisEnd","application":"corral","channel":{"id":"999.999","name":"PJSIP/a-9","state":"Up"}}"#;
    inject(&farm, 0, unknown).await;
    inject(
        &farm,
        0,
        r#"{"type":"ChannelHangupRequest","application":"corral","channel":{"id":"999.998"}}"#,
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "malformed frames counted",
        || async { (bad_events(&farm, "malformed") >= 3).then_some(()) },
    )
    .await;
    eventually(Duration::from_secs(5), "odd channel id counted", || async {
        (bad_events(&farm, "channel_id") >= 1).then_some(())
    })
    .await;
    // The loop still works.
    let mut farm = farm;
    farm.call("conf-after", "ok1").await;
    farm.call("conf-after", "ok2").await;
    bridged(&farm, 2).await;
    assert!(farm.ctrl.nodes_streaming().iter().all(|(_, up)| *up));
    assert_eq!(farm.sim_stat(|s| s.hungup_by_ari), 0);
    farm.stop().await;
}

/// `StasisStart`s with missing or odd arguments and tokens that are not
/// corral's are handed back to the dialplan (`continue`), never hung up by
/// corral; the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_arguments_and_foreign_tokens_go_back_to_the_dialplan() {
    let dialplan = Dialplan::parse(
        "[from-proxy]\n\
         exten => _co[n]f-.,1,Stasis(corral,conference,${EXTEN:5})\n\
         exten => noroom,1,Stasis(corral,conference)\n\
         exten => _party-.,1,Stasis(corral,party,${EXTEN:6})\n\
         exten => _badname-.,1,Stasis(corral,conference,a:b)\n\
         exten => _[A-Za-z0-9].,1,Stasis(corral)\n",
    )
    .unwrap();
    let cfgs = (1..=2)
        .map(|i| {
            let mut c = SimConfig::new(format!("ast{i}"));
            c.dialplan = dialplan.clone();
            c
        })
        .collect();
    let mut farm = TestFarm::start_full(cfgs, Backend::Memory, seed("odd_args"), |_| {}).await;
    for (i, exten) in [
        "noroom",
        "party-x",
        "badname-x",
        "NotOurToken123",
        "AAAAAAAAAAAAAAAAAAAAAA",
    ]
    .iter()
    .enumerate()
    {
        farm.call(exten, &format!("odd{i}")).await;
    }
    // Every one of them leaves Stasis through the dialplan.
    eventually(Duration::from_secs(10), "odd calls handed back", || async {
        let live = farm.live_calls().await;
        live.is_empty().then_some(())
    })
    .await;
    assert!(
        bad_events(&farm, "odd_args") >= 3,
        "{}",
        farm.metrics.encode()
    );
    let text = farm.metrics.encode();
    assert!(
        text.contains("outcome=\"unknown\""),
        "foreign tokens counted: {text}"
    );
    assert_eq!(
        farm.sim_stat(|s| s.hungup_by_ari),
        0,
        "corral hung up a call"
    );
    farm.call("conf-fine", "fine1").await;
    farm.call("conf-fine", "fine2").await;
    bridged(&farm, 2).await;
    assert_eq!(farm.split_rooms().await, vec![]);
    farm.stop().await;
}

/// Nodes that fail a third of their REST calls with 500: corral retries,
/// the resync finishes what failed half-way, and every call ends up in its
/// room's single bridge; nothing is hung up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_answering_5xx_do_not_lose_calls() {
    let seed = seed("5xx");
    let cfgs = (1..=3)
        .map(|i| {
            let mut c = SimConfig::new(format!("ast{i}"));
            c.seed = Some(seed.wrapping_add(i));
            c
        })
        .collect();
    // Pings fail too; a node is only marked down after 20 in a row (this
    // test is about REST errors, not node loss).
    let mut farm =
        TestFarm::start_full(cfgs, Backend::Memory, seed, |c| c.down_after_failures = 20).await;
    for s in &farm.sims {
        s.set_faults(Faults {
            rest_error_rate: 0.3,
            ..Faults::default()
        });
    }
    for i in 0..60 {
        farm.call(&format!("conf-r{}", i % 6), &format!("f{i}"))
            .await;
    }
    bridged(&farm, 60).await;
    for s in &farm.sims {
        s.set_faults(Faults::default());
    }
    assert_eq!(farm.split_rooms().await, vec![], "seed {seed}");
    assert!(
        farm.sim_stat(|s| s.rest_faults) > 0,
        "the fault knob did nothing"
    );
    assert_eq!(farm.sim_stat(|s| s.hungup_by_ari), 0);
    farm.stop().await;
}

/// Events duplicated and delayed by the node (a third sent twice, every one
/// 20 ms late): the same co-location, no call hung up, no member lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_and_delayed_events_change_nothing() {
    let seed = seed("dup");
    let cfgs = (1..=3)
        .map(|i| {
            let mut c = SimConfig::new(format!("ast{i}"));
            c.seed = Some(seed.wrapping_add(i));
            c.faults = Faults {
                duplicate_events: 0.3,
                event_delay_ms: 20,
                ..Faults::default()
            };
            c
        })
        .collect();
    let mut farm = TestFarm::start_full(cfgs, Backend::Memory, seed, |_| {}).await;
    for i in 0..45 {
        farm.call(&format!("conf-d{}", i % 5), &format!("d{i}"))
            .await;
    }
    bridged(&farm, 45).await;
    eventually(Duration::from_secs(10), "no room split", || async {
        farm.split_rooms().await.is_empty().then_some(())
    })
    .await;
    // If the node cut a socket that fell behind (its write-timeout model),
    // corral resynced: either way every call ends up recorded once.
    let store = farm.store.clone();
    eventually(Duration::from_secs(10), "45 members recorded", || {
        let store = store.clone();
        async move {
            let page = store
                .list_rooms(&Default::default(), None, 100)
                .await
                .ok()?;
            let members: u32 = page.rooms.iter().map(|p| p.members).sum();
            (members == 45).then_some(())
        }
    })
    .await;
    assert!(
        bad_events(&farm, "duplicate") > 0,
        "no duplicate was seen: the fault did nothing"
    );
    assert_eq!(farm.sim_stat(|s| s.hungup_by_ari), 0);
    farm.stop().await;
}
