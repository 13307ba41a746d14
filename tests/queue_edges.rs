//! Queue edges on simulated nodes: static members rung by strategy with
//! scripted phones (answer, busy, no answer, unavailable), limits and their
//! treatment, and bad input (malformed ids, a second login, hangups at every
//! step). Whatever happens, corral hangs up no caller: the nodes' counters
//! say so.

mod support;

use std::sync::Arc;
use std::time::Duration;

use corral::controller::{self, Controller};
use corral::domain::{AgentId, RoomName};
use corral::queue::{AgentState, Distribution, QueueSettings, QueueState};
use corral::sim::EndpointScript;
use support::farm::{Backend, TestFarm};
use support::{eventually, seed};

const WAIT: Duration = Duration::from_secs(20);

fn name(s: &str) -> RoomName {
    RoomName::new(s).unwrap()
}

fn agent(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

/// Queues: `sales` rings every member (alice answers, bob is busy, carol
/// never answers, dave's phone fails); `help` rings the longest-idle of x
/// and y; `short` sends callers to the treatment after 300 ms; `tiny` takes
/// one caller. The treatment continues at `conf-overflow`, which the
/// simulated dialplan sends back into corral as a conference, so where the
/// caller went is visible.
fn tune(cfg: &mut controller::Config) {
    let base = QueueSettings {
        wrapup: Duration::ZERO,
        ring_timeout: Duration::from_secs(1),
        retry_after: Duration::from_secs(60),
        overflow_context: Some("from-proxy".into()),
        overflow_extension: "conf-overflow".into(),
        ..QueueSettings::default()
    };
    let members = |m: &[&str]| {
        m.iter()
            .map(|a| (agent(a), format!("PJSIP/{a}")))
            .collect::<Vec<_>>()
    };
    let q = &mut cfg.queues;
    q.defaults = Arc::new(base.clone());
    q.by_name.insert(
        name("sales"),
        Arc::new(QueueSettings {
            strategy: Distribution::RingAll,
            members: members(&["alice", "bob", "carol", "dave"]),
            ..base.clone()
        }),
    );
    q.by_name.insert(
        name("help"),
        Arc::new(QueueSettings {
            strategy: Distribution::LongestIdle,
            members: members(&["x", "y"]),
            ..base.clone()
        }),
    );
    q.by_name.insert(
        name("short"),
        Arc::new(QueueSettings {
            max_wait: Some(Duration::from_millis(300)),
            ..base.clone()
        }),
    );
    q.by_name.insert(
        name("tiny"),
        Arc::new(QueueSettings {
            max_callers: Some(1),
            ..base
        }),
    );
}

async fn start(backend: Backend, test: &str) -> TestFarm {
    let farm = TestFarm::start_with(3, backend, seed(test), tune).await;
    for s in &farm.sims {
        s.set_endpoint("alice", EndpointScript::answer(200));
        s.set_endpoint("bob", EndpointScript::Busy { after_ms: 10 });
        s.set_endpoint("carol", EndpointScript::Ring);
        s.set_endpoint("dave", EndpointScript::Unavailable { after_ms: 10 });
        s.set_endpoint("x", EndpointScript::answer(10));
        s.set_endpoint("y", EndpointScript::answer(10));
    }
    farm
}

async fn wait_queue(
    ctrl: &Controller,
    q: &str,
    what: &str,
    pred: impl Fn(&QueueState) -> bool,
) -> QueueState {
    let pred = &pred;
    let q = name(q);
    eventually(WAIT, what, || {
        let ctrl = ctrl.clone();
        let q = q.clone();
        async move {
            let (st, _) = ctrl.queue(&q).await.ok().flatten()?;
            pred(&st).then_some(st)
        }
    })
    .await
}

fn busy_with(st: &QueueState, a: &str) -> Option<String> {
    match &st.agents.get(&agent(a))?.activity {
        AgentState::Busy {
            caller,
            connected: true,
            ..
        } => Some(caller.caller.clone()),
        _ => None,
    }
}

/// Channels in the conference `overflow` (where the treatment sends).
async fn in_overflow(farm: &TestFarm) -> usize {
    farm.bridges()
        .await
        .iter()
        .filter(|(_, b)| b["name"] == "corral:conference:overflow")
        .map(|(_, b)| b["channels"].as_array().map_or(0, |c| c.len()))
        .sum()
}

async fn static_members(backend: Backend) {
    let mut farm = start(backend, "static_members").await;
    farm.call("queue-sales", "s1").await;
    // Every member rang; alice answered; bob (busy) and dave (failed) are
    // skipped for a while; carol stopped ringing.
    let st = wait_queue(&farm.ctrl, "sales", "alice took s1", |s| {
        busy_with(s, "alice").is_some()
    })
    .await;
    assert_eq!(busy_with(&st, "alice").as_deref(), Some("1000"));
    let st = wait_queue(&farm.ctrl, "sales", "the others settled", |s| {
        ["bob", "carol", "dave"]
            .iter()
            .all(|a| s.agents[&agent(a)].activity == AgentState::Available)
    })
    .await;
    for a in ["bob", "dave"] {
        assert!(st.agents[&agent(a)].retry_at_ms > 0, "{a} backs off");
    }
    assert_eq!(st.agents[&agent("carol")].retry_at_ms, 0);
    assert_eq!(farm.sim_stat(|s| s.originated), 4);
    assert_eq!(farm.sim_stat(|s| s.originated_answered), 1);
    assert_eq!(farm.sim_stat(|s| s.originated_busy), 1);
    assert_eq!(farm.sim_stat(|s| s.originated_unavailable), 1);
    // Busy and failure are told apart (carol's ringing was stopped by
    // corral, not a failure of hers).
    let m = farm.metrics.encode();
    for outcome in ["busy", "failed"] {
        let line = format!(
            "corral_queue_member_offers_failed_total{{queue=\"sales\",state=\"{outcome}\"}} 1"
        );
        assert!(m.contains(&line), "{line} in\n{m}");
    }
    // The pair bridge holds the caller and alice's leg.
    let pair = farm
        .bridges()
        .await
        .into_iter()
        .find(|(_, b)| b["name"] == "corral:queue:sales:alice")
        .expect("alice's pair bridge");
    assert_eq!(pair.1["channels"].as_array().unwrap().len(), 2);

    // The caller hangs up: alice's leg ends, she is free; the next caller
    // rings alice and carol only (the others back off) and alice answers.
    assert!(farm.hangup("s1").await);
    wait_queue(&farm.ctrl, "sales", "alice free", |s| {
        s.agents[&agent("alice")].activity == AgentState::Available
    })
    .await;
    farm.call("queue-sales", "s2").await;
    wait_queue(&farm.ctrl, "sales", "alice took s2", |s| {
        busy_with(s, "alice").is_some()
    })
    .await;
    assert_eq!(farm.sim_stat(|s| s.originated), 6, "alice and carol rang");

    // Longest idle: x first (tie broken by id), then y, who has been idle
    // longer than x once x's call ended.
    farm.call("queue-help", "h1").await;
    wait_queue(&farm.ctrl, "help", "x took h1", |s| {
        busy_with(s, "x").is_some()
    })
    .await;
    assert!(farm.hangup("h1").await);
    wait_queue(&farm.ctrl, "help", "x free", |s| {
        s.agents[&agent("x")].activity == AgentState::Available
    })
    .await;
    farm.call("queue-help", "h2").await;
    wait_queue(&farm.ctrl, "help", "y took h2", |s| {
        busy_with(s, "y").is_some()
    })
    .await;
    // corral hung up member legs it originated (carol's ringing, alice's
    // and x's after their calls), never a caller.
    let callers_alive = farm
        .live_calls()
        .await
        .iter()
        .filter(|(_, c)| c["direction"] == "inbound")
        .count();
    assert_eq!(callers_alive, 2, "s2 and h2 still talking");
    farm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_members_are_rung_by_strategy_memory() {
    static_members(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_members_are_rung_by_strategy_redis() {
    static_members(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_send_callers_to_the_treatment() {
    let mut farm = start(Backend::Memory, "limits").await;
    // max_wait: nobody answers `short`; after 300 ms the caller continues
    // at the treatment.
    farm.call("queue-short", "w1").await;
    let st = wait_queue(&farm.ctrl, "short", "w1 timed out", |s| s.timed_out == 1).await;
    assert!(st.callers.is_empty());
    eventually(WAIT, "w1 in the overflow room", || {
        let farm = &farm;
        async move { (in_overflow(farm).await == 1).then_some(()) }
    })
    .await;
    // max_callers: the second caller of `tiny` goes to the treatment at
    // once; the first keeps waiting.
    farm.call("queue-tiny", "t1").await;
    wait_queue(&farm.ctrl, "tiny", "t1 waits", |s| s.callers.len() == 1).await;
    farm.call("queue-tiny", "t2").await;
    let st = wait_queue(&farm.ctrl, "tiny", "t2 overflowed", |s| s.overflowed == 1).await;
    assert_eq!(st.callers[0].caller, "1000");
    eventually(WAIT, "t2 in the overflow room", || {
        let farm = &farm;
        async move { (in_overflow(farm).await == 2).then_some(()) }
    })
    .await;
    // A waiting caller who hangs up is abandoned.
    assert!(farm.hangup("t1").await);
    wait_queue(&farm.ctrl, "tiny", "t1 abandoned", |s| {
        s.abandoned == 1 && s.callers.is_empty()
    })
    .await;
    assert_eq!(
        farm.sim_stat(|s| s.hungup_by_ari),
        0,
        "corral hung up a call"
    );
    farm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_loses_no_caller() {
    let mut farm = start(Backend::Memory, "bad_input").await;
    // Malformed agent id and queue name: handed back to the dialplan.
    farm.call(&format!("agent-support-{}", "a".repeat(70)), "bad1")
        .await;
    farm.call(&format!("queue-{}", "q".repeat(70)), "bad2")
        .await;
    eventually(WAIT, "both handed back", || {
        let farm = &farm;
        async move { farm.live_calls().await.is_empty().then_some(()) }
    })
    .await;
    assert!(farm.ctrl.queue(&name("support")).await.unwrap().is_none());

    // An agent logging in twice: the second call is refused (handed to the
    // dialplan), the first login stays.
    farm.call("agent-support-a0", "login1").await;
    wait_queue(&farm.ctrl, "support", "a0 logged in", |s| {
        s.agents.len() == 1
    })
    .await;
    farm.call("agent-support-a0", "login2").await;
    eventually(WAIT, "the second login refused", || {
        let farm = &farm;
        async move {
            let calls = farm.live_calls().await;
            (calls.len() == 1 && calls[0].1["call_id"] == "login1").then_some(())
        }
    })
    .await;

    // A caller who hangs up mid-call: the agent goes back on hold.
    farm.call("queue-support", "c1").await;
    wait_queue(&farm.ctrl, "support", "c1 connected", |s| {
        busy_with(s, "a0").is_some()
    })
    .await;
    assert!(farm.hangup("c1").await);
    wait_queue(&farm.ctrl, "support", "a0 free", |s| {
        s.agents[&agent("a0")].activity == AgentState::Available
    })
    .await;
    eventually(WAIT, "a0 back on hold", || {
        let farm = &farm;
        async move {
            let calls = farm.live_calls().await;
            (calls.len() == 1 && calls[0].1["hears"] == "moh").then_some(())
        }
    })
    .await;

    // An agent who hangs up mid-call: logged out; the caller is handed back
    // to the dialplan (its call is over), not hung up by corral.
    farm.call("queue-support", "c2").await;
    wait_queue(&farm.ctrl, "support", "c2 connected", |s| {
        busy_with(s, "a0").is_some()
    })
    .await;
    assert!(farm.hangup("login1").await);
    let st = wait_queue(&farm.ctrl, "support", "a0 logged out", |s| {
        s.agents.is_empty()
    })
    .await;
    assert_eq!((st.answered, st.abandoned), (2, 0));
    eventually(WAIT, "c2 handed back", || {
        let farm = &farm;
        async move { farm.live_calls().await.is_empty().then_some(()) }
    })
    .await;
    assert_eq!(
        farm.sim_stat(|s| s.hungup_by_ari),
        0,
        "corral hung up a call"
    );
    farm.stop().await;
}

/// The resync records a queue's calls with the role the queue gives them
/// and never records a static member's leg as a member: after resyncs with
/// `h1` talking to member `x` in their pair bridge, the room's members are
/// exactly `h1`, a caller. (Before: every call in a pair bridge was recorded
/// as a `Caller`, the leg included, and the leg's member outlived its call
/// because its hangup skipped removing it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resync_records_queue_calls_by_their_role() {
    use corral::domain::{ChannelId, Role, RoomKey, RoomKind};
    let mut farm = start(Backend::Memory, "resync_roles").await;
    farm.call("queue-help", "h1").await;
    let st = wait_queue(&farm.ctrl, "help", "x took h1", |s| {
        busy_with(s, "x").is_some()
    })
    .await;
    let (caller, leg) = match &st.agents[&agent("x")].activity {
        AgentState::Busy {
            caller,
            leg: Some(leg),
            ..
        } => (caller.channel.clone(), leg.clone()),
        other => panic!("x is busy with a leg, not {other:?}"),
    };
    let room = RoomKey::new(RoomKind::Queue, name("help"));
    // Two resyncs of the queue's node (each reports the node's load).
    let node = farm
        .store
        .get_room(&room)
        .await
        .unwrap()
        .expect("help is placed")
        .placement
        .node;
    let seen = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    eventually(WAIT, "two resyncs of the queue's node", || {
        let store = farm.store.clone();
        let node = node.clone();
        let seen = seen.clone();
        async move {
            let n = store.list_nodes().await.ok()?;
            let rec = n.into_iter().find(|r| r.id == node)?;
            let mut seen = seen.lock().unwrap();
            seen.insert(rec.updated_ms);
            (seen.len() >= 3).then_some(())
        }
    })
    .await;
    let members: Vec<(ChannelId, Role)> = farm
        .store
        .get_room(&room)
        .await
        .unwrap()
        .expect("help is placed")
        .members
        .into_iter()
        .map(|m| (m.channel, m.role))
        .collect();
    assert_eq!(
        members,
        vec![(caller, Role::Caller)],
        "leg {leg} is no member"
    );
    // The call ends: nothing of it stays in the room.
    assert!(farm.hangup("h1").await);
    eventually(WAIT, "the room empty", || {
        let store = farm.store.clone();
        let room = room.clone();
        async move {
            let d = store.get_room(&room).await.ok()?;
            d.is_none_or(|d| d.members.is_empty()).then_some(())
        }
    })
    .await;
    farm.stop().await;
}

/// A static member's leg is saved as ringing before its originate reaches
/// the node: a resync in that window finds no such channel, which is not
/// "gone" (the grace of `ORIGINATE_GRACE_MS`). Here every originate takes
/// 1.2 s to reach the node while resyncs run every 0.5 s: the member still
/// answers and takes the caller with the one leg rung, and corral hangs up
/// nothing. (Without the grace the resync dropped the member, rang again,
/// and hung up the first leg when it answered.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_originate_is_slow_is_not_dropped() {
    let farm = start(Backend::Memory, "slow_originate").await;
    for s in &farm.sims {
        s.set_faults(corral::sim::Faults {
            rest_rule: Some(corral::sim::RestRule {
                method: "POST".into(),
                path: "/ari/channels/*".into(),
                delay_ms: 1200,
                fail: 0,
            }),
            ..Default::default()
        });
    }
    let mut farm = farm;
    farm.call("queue-help", "h1").await;
    wait_queue(&farm.ctrl, "help", "x took h1", |s| {
        busy_with(s, "x").is_some()
    })
    .await;
    assert_eq!(farm.sim_stat(|s| s.originated), 1, "one leg rung");
    assert_eq!(
        farm.sim_stat(|s| s.hungup_by_ari),
        0,
        "corral hung up a leg"
    );
    farm.stop().await;
}
