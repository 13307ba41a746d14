//! Two corral replicas on one farm (one Redis): each node's event stream is
//! held by exactly one replica (a lease in the store), both decide through
//! the same atomic store operations, and when one replica stops the other
//! takes its nodes over and the calls keep being co-located.

mod support;

use std::sync::Arc;
use std::time::Duration;

use corral::controller::{self, Controller};
use corral::telemetry::Metrics;
use support::farm::{Backend, TestFarm};
use support::{eventually, seed};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_replica_takes_over_the_nodes() {
    let seed = seed("ha");
    let lease = Duration::from_millis(900);
    let mut farm = TestFarm::start_with(3, Backend::Redis, seed, |c| {
        c.replica = "replica-a".into();
        c.lease_ttl = lease;
    })
    .await;
    let metrics_b = Arc::new(Metrics::new());
    let cfg_b = controller::Config {
        replica: "replica-b".into(),
        lease_ttl: lease,
        linger: Duration::from_millis(300),
        ping_interval: Duration::from_millis(100),
        reconcile_interval: Duration::from_millis(500),
        seed: seed ^ 1,
        ..controller::Config::default()
    };
    let b = Controller::new(cfg_b, farm.store.clone(), farm.specs(), metrics_b.clone()).unwrap();
    let stop_b = CancellationToken::new();
    let run_b = {
        let (b, s) = (b.clone(), stop_b.clone());
        tokio::spawn(async move { b.run(s).await })
    };
    for i in 0..30 {
        farm.call(&format!("conf-ha{}", i % 4), &format!("a{i}"))
            .await;
    }
    farm.wait_all_bridged(30, Duration::from_secs(15)).await;
    assert_eq!(
        metrics_b.snapshot().arrivals,
        0,
        "the standby handled events"
    );
    assert!(
        b.nodes_streaming().iter().all(|(_, up)| !*up),
        "the standby streams a node"
    );
    let replaced: u64 = farm.sim_stat(|s| s.websockets_cut);
    assert_eq!(replaced, 0);

    // Replica A stops (graceful: it releases its leases); B takes over.
    farm.stop_controller().await;
    eventually(
        Duration::from_secs(10),
        "replica B streams every node",
        || {
            let b = b.clone();
            async move { b.nodes_streaming().iter().all(|(_, up)| *up).then_some(()) }
        },
    )
    .await;
    for i in 30..60 {
        farm.call(&format!("conf-ha{}", i % 4), &format!("b{i}"))
            .await;
    }
    farm.wait_all_bridged(60, Duration::from_secs(15)).await;
    assert_eq!(farm.split_rooms().await, vec![], "seed {seed}");
    assert!(
        metrics_b.snapshot().joined >= 30,
        "{:?}",
        metrics_b.snapshot()
    );
    assert_eq!(farm.sim_stat(|s| s.hungup_by_ari), 0);
    stop_b.cancel();
    let _ = run_b.await;
}

/// A replica in a runtime of its own, so that it can crash like a process
/// killed with SIGKILL: every task and socket dropped at once, no lease
/// released.
struct Replica {
    rt: Option<tokio::runtime::Runtime>,
    ctrl: Controller,
}

impl Replica {
    fn start(cfg: controller::Config, farm: &TestFarm) -> Replica {
        let (store_cfg, specs) = (farm.store_cfg.clone(), farm.specs());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a runtime");
            let ctrl = rt.block_on(async move {
                let store = corral::store::connect(&store_cfg).await.expect("store");
                Controller::new(cfg, store, specs, Arc::new(Metrics::new())).unwrap()
            });
            let run = ctrl.clone();
            rt.spawn(async move { run.run(CancellationToken::new()).await });
            Replica { rt: Some(rt), ctrl }
        })
        .join()
        .expect("replica starts")
    }

    /// kill -9: the runtime goes, with every task and connection of it.
    fn crash(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// The streaming replica is killed (SIGKILL: no lease released) while
/// calls keep coming. Until its leases expire no websocket owns `corral`
/// on the nodes, so `Stasis(corral)` fails; the shipped dialplan then tries
/// `corral-standby`, which the other replica holds on every node it does
/// not stream: the calls are placed as usual, and the standby takes the
/// nodes over when the leases expire. No call is lost. (Before: every call
/// in those seconds went to the fallback and was hung up.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_crash_costs_no_call() {
    let seed = seed("replica_crash");
    let mut farm = TestFarm::start(3, Backend::PrivateRedis, seed).await;
    // Replicas of their own: the farm's is stopped (its leases released).
    farm.stop_controller().await;
    let lease = Duration::from_secs(2);
    let cfg = |name: &str, seed| controller::Config {
        replica: name.into(),
        lease_ttl: lease,
        ..support::farm::test_config(seed)
    };
    let a = Replica::start(cfg("replica-a", seed), &farm);
    let a_ctrl = a.ctrl.clone();
    eventually(
        Duration::from_secs(10),
        "replica A streams every node",
        || {
            let a = a_ctrl.clone();
            async move { a.nodes_streaming().iter().all(|(_, up)| *up).then_some(()) }
        },
    )
    .await;
    let b = Replica::start(cfg("replica-b", seed ^ 1), &farm);
    let b_ctrl = b.ctrl.clone();
    let rooms = 6;
    let (before, during) = (20, 60);
    let mut sent = 0;
    for _ in 0..before {
        farm.call(&format!("conf-crash{}", sent % rooms), &format!("c{sent}"))
            .await;
        sent += 1;
    }
    farm.wait_all_bridged(sent, Duration::from_secs(10)).await;
    let crashed = std::time::Instant::now();
    a.crash();
    // Calls keep coming, one every 50 ms, for 3 s: across the lease's
    // expiry (2 s) and B's takeover.
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    for _ in 0..during {
        pace.tick().await;
        farm.call(&format!("conf-crash{}", sent % rooms), &format!("c{sent}"))
            .await;
        sent += 1;
    }
    eventually(
        Duration::from_secs(10),
        "replica B streams every node",
        || {
            let b = b_ctrl.clone();
            async move { b.nodes_streaming().iter().all(|(_, up)| *up).then_some(()) }
        },
    )
    .await;
    eprintln!(
        "replica B took the nodes over {:?} after the crash",
        crashed.elapsed()
    );
    // Settled: every live call bridged, rooms whole.
    let mut poll = support::Poll::new(Duration::from_secs(15));
    let live = loop {
        let calls = farm.live_calls().await;
        let bridged = calls.iter().filter(|(_, c)| !c["bridge"].is_null()).count();
        if bridged == calls.len() && farm.rooms_not_whole().await.is_empty() {
            break calls.len();
        }
        assert!(
            poll.next().await,
            "{bridged} of {} live calls bridged; rooms not whole {:?}",
            calls.len(),
            farm.rooms_not_whole().await
        );
    };
    let lost = sent - live;
    eprintln!(
        "calls lost across the crash: {lost} of {sent} ({} Stasis() failures on the nodes)",
        farm.sim_stat(|s| s.stasis_failed)
    );
    assert_eq!(lost, 0, "seed {seed}");
    assert_eq!(farm.sim_stat(|s| s.hungup_by_ari), 0);
    drop(b);
}

/// A call whose `StasisStart` was on its way to the streaming replica when
/// it crashed is stranded in `corral`'s app: no replica will ever get that
/// event, and the standby takes the node's stream over only when the lease
/// expires (20 s here). The next call on that node fails `Stasis(corral)`
/// and lands in `corral-standby`, which tells the standby that no replica
/// streams the node: it looks for calls in corral's app in no bridge (two
/// looks 300 ms apart) and places them, long before the lease expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_stranded_by_a_replica_crash_is_placed_by_the_standby() {
    let seed = seed("stranded");
    let mut farm = TestFarm::start(2, Backend::PrivateRedis, seed).await;
    farm.stop_controller().await;
    let lease = Duration::from_secs(20);
    let cfg = |name: &str, seed| controller::Config {
        replica: name.into(),
        lease_ttl: lease,
        ..support::farm::test_config(seed)
    };
    let a = Replica::start(cfg("replica-a", seed), &farm);
    let a_ctrl = a.ctrl.clone();
    eventually(
        Duration::from_secs(10),
        "replica A streams every node",
        || {
            let a = a_ctrl.clone();
            async move { a.nodes_streaming().iter().all(|(_, up)| *up).then_some(()) }
        },
    )
    .await;
    let b = Replica::start(cfg("replica-b", seed ^ 1), &farm);
    // B holds the standby app on node 0: a call there is placed by B when
    // corral's socket is gone. Until then, hold the stranded call's
    // StasisStart back, and crash A before it is delivered.
    let held = corral::sim::Faults {
        event_latency_ms: 5_000,
        ..Default::default()
    };
    farm.sims[0].set_faults(held);
    farm.call_on(0, "conf-strand", "stranded").await;
    let crashed = std::time::Instant::now();
    a.crash();
    farm.sims[0].set_faults(corral::sim::Faults::default());
    // Calls on node 0 until one lands in the standby app: A's socket is
    // gone and B's standby socket is up (a call before that finds neither
    // app and is refused, 503).
    let mut k = 0;
    eventually(
        Duration::from_secs(5),
        "a call on node 0 in the standby app",
        || {
            k += 1;
            let call = format!("next{k}");
            let farm = &farm;
            async move {
                farm.call_on(0, "conf-strand", &call).await;
                let live = farm.live_calls().await;
                live.iter()
                    .any(|(_, c)| c["stasis"] == "corral-standby")
                    .then_some(())
            }
        },
    )
    .await;
    let calls = farm.live_calls().await.len();
    let live = farm.wait_all_bridged(calls, Duration::from_secs(5)).await;
    assert!(
        live.iter().any(|(_, c)| c["call_id"] == "stranded"),
        "the stranded call is bridged: {live:?}"
    );
    let took = crashed.elapsed();
    eprintln!("the stranded call was placed {took:?} after the crash (lease {lease:?})");
    assert!(
        b.ctrl.nodes_streaming().iter().all(|(_, up)| !*up),
        "placed by the standby's look, not by a takeover"
    );
    assert!(farm.rooms_not_whole().await.is_empty());
    drop(b);
}
