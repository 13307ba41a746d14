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
