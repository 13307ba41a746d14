//! `TestFarm`: simulated nodes, a store (memory or a real Redis) and a
//! running controller, all in-process on `127.0.0.1:0`; plus a round-robin
//! "proxy" and an invariant checker that reads each node's ARI, never
//! corral's own map.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use corral::controller::{self, Controller, NodeSpec};
use corral::domain::NodeId;
use corral::sim::{SimConfig, SimNode};
use corral::store::{self, Store};
use corral::telemetry::Metrics;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::redis::RedisProcess;

/// Faults for a node where the next `times` answers (`POST
/// /ari/channels/*/answer`) fail with a 500.
pub fn answers_fail(times: u32) -> corral::sim::Faults {
    corral::sim::Faults {
        rest_rule: Some(corral::sim::RestRule {
            method: "POST".into(),
            path: "/ari/channels/*/answer".into(),
            delay_ms: 0,
            fail: times,
        }),
        ..Default::default()
    }
}

/// Which store backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The in-memory store.
    Memory,
    /// A real `redis-server`.
    Redis,
    /// A real `redis-server` always started by the test (never
    /// `CORRAL_TEST_REDIS_URL`), so that [`TestFarm::kill_redis`] works.
    PrivateRedis,
}

/// The controller config tests use: short linger, fast pings.
pub fn test_config(seed: u64) -> controller::Config {
    controller::Config {
        linger: Duration::from_millis(300),
        ping_interval: Duration::from_millis(100),
        reconcile_interval: Duration::from_millis(500),
        redirect_deadline: Duration::from_secs(3),
        seed,
        ..controller::Config::default()
    }
}

/// A running farm. Dropping it stops the controller and the nodes.
pub struct TestFarm {
    pub sims: Vec<SimNode>,
    pub store: Arc<dyn Store>,
    pub ctrl: Controller,
    pub metrics: Arc<Metrics>,
    pub http: reqwest::Client,
    pub dead: HashSet<usize>,
    /// How to reach the farm's store (for more replicas).
    pub store_cfg: store::Config,
    shutdown: CancellationToken,
    run: Option<tokio::task::JoinHandle<()>>,
    _redis: Option<RedisProcess>,
    next: usize,
}

impl TestFarm {
    /// Starts `n` nodes and a controller on `backend`, tuned for tests
    /// (short linger, fast pings); waits until every node streams.
    pub async fn start(n: usize, backend: Backend, seed: u64) -> TestFarm {
        Self::start_with(n, backend, seed, |_| {}).await
    }

    /// Like [`start`], with a hook to adjust the controller config.
    pub async fn start_with(
        n: usize,
        backend: Backend,
        seed: u64,
        tune: impl FnOnce(&mut controller::Config),
    ) -> TestFarm {
        let cfgs = (1..=n).map(|i| SimConfig::new(format!("ast{i}"))).collect();
        Self::start_full(cfgs, backend, seed, tune).await
    }

    /// Starts one node per `SimConfig` (ids must be valid node ids).
    pub async fn start_full(
        sim_cfgs: Vec<SimConfig>,
        backend: Backend,
        seed: u64,
        tune: impl FnOnce(&mut controller::Config),
    ) -> TestFarm {
        super::init_logs();
        let mut sims = Vec::new();
        for cfg in sim_cfgs {
            sims.push(SimNode::start(cfg).await.expect("sim node starts"));
        }
        let (redis, url) = match backend {
            Backend::Memory => (None, None),
            Backend::Redis => {
                let r = RedisProcess::start();
                let url = r.url();
                (Some(r), Some(url))
            }
            Backend::PrivateRedis => {
                let r = RedisProcess::start_private(super::redis::Mode::Standalone);
                let url = r.url();
                (Some(r), Some(url))
            }
        };
        let store_cfg = store::Config {
            farm: super::redis::unique_farm("farm"),
            redis_url: url,
            ..store::Config::default()
        };
        let store = store::connect(&store_cfg).await.expect("store connects");
        let metrics = Arc::new(Metrics::new());
        let specs = specs_for(&sims);
        let mut cfg = test_config(seed);
        tune(&mut cfg);
        let ctrl = Controller::new(cfg, store.clone(), specs, metrics.clone()).unwrap();
        let shutdown = CancellationToken::new();
        let run = {
            let ctrl = ctrl.clone();
            let s = shutdown.clone();
            tokio::spawn(async move { ctrl.run(s).await })
        };
        let farm = TestFarm {
            sims,
            store,
            ctrl,
            metrics,
            http: reqwest::Client::new(),
            dead: HashSet::new(),
            store_cfg,
            shutdown,
            run: Some(run),
            _redis: redis,
            next: 0,
        };
        let ctrl = farm.ctrl.clone();
        super::eventually(Duration::from_secs(10), "every node streaming", || {
            let ctrl = ctrl.clone();
            async move {
                ctrl.nodes_streaming()
                    .iter()
                    .all(|(_, up)| *up)
                    .then_some(())
            }
        })
        .await;
        farm
    }

    /// Sends one call for `exten` through the round-robin proxy, skipping
    /// dead nodes. Returns the index of the node it landed on.
    pub async fn call(&mut self, exten: &str, call_id: &str) -> usize {
        for _ in 0..self.sims.len() {
            let i = self.next % self.sims.len();
            self.next += 1;
            if self.dead.contains(&i) {
                continue;
            }
            self.post_call(i, exten, call_id, "1000").await;
            return i;
        }
        panic!("no live node");
    }

    /// Sends one call for `exten` to node `i` (a proxy that chose it).
    pub async fn call_on(&self, i: usize, exten: &str, call_id: &str) {
        self.post_call(i, exten, call_id, call_id).await;
    }

    async fn post_call(&self, i: usize, exten: &str, call_id: &str, caller: &str) {
        let url = format!("{}/sim/calls", self.sims[i].base_url());
        let body = serde_json::json!({"exten": exten, "caller": caller, "call_id": call_id});
        let resp = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .expect("the node is reachable");
        assert_eq!(
            resp.status().as_u16(),
            201,
            "call {call_id} refused by {}",
            self.sims[i].id()
        );
    }

    /// The caller of `call_id` hangs up, wherever the call is now. Returns
    /// false if no live node has it.
    pub async fn hangup(&self, call_id: &str) -> bool {
        for (i, s) in self.sims.iter().enumerate() {
            if self.dead.contains(&i) {
                continue;
            }
            let url = format!("{}/sim/calls/{call_id}", s.base_url());
            if let Ok(r) = self.http.delete(url).send().await
                && r.status().as_u16() == 204
            {
                return true;
            }
        }
        false
    }

    /// Stops the controller (graceful) and starts a new one on the same
    /// store and nodes; waits until every live node streams again.
    pub async fn restart_controller(
        &mut self,
        seed: u64,
        tune: impl FnOnce(&mut controller::Config),
    ) {
        self.stop_controller().await;
        let mut cfg = test_config(seed);
        tune(&mut cfg);
        let metrics = Arc::new(Metrics::new());
        let specs = specs_for(&self.sims);
        let ctrl = Controller::new(cfg, self.store.clone(), specs, metrics.clone()).unwrap();
        let shutdown = CancellationToken::new();
        let run = {
            let ctrl = ctrl.clone();
            let s = shutdown.clone();
            tokio::spawn(async move { ctrl.run(s).await })
        };
        self.ctrl = ctrl;
        self.metrics = metrics;
        self.shutdown = shutdown;
        self.run = Some(run);
        let ctrl = self.ctrl.clone();
        let live: HashSet<String> = self
            .sims
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.dead.contains(i))
            .map(|(_, s)| s.id().to_string())
            .collect();
        super::eventually(Duration::from_secs(10), "every live node streaming", || {
            let ctrl = ctrl.clone();
            let live = live.clone();
            async move {
                ctrl.nodes_streaming()
                    .iter()
                    .filter(|(id, _)| live.contains(id.as_str()))
                    .all(|(_, up)| *up)
                    .then_some(())
            }
        })
        .await;
    }

    /// Kills node `i` (a crash) and remembers it as dead.
    pub async fn kill(&mut self, i: usize) {
        self.sims[i].kill().await;
        self.dead.insert(i);
    }

    /// Live calls on every live node: `(node index, call JSON)`.
    pub async fn live_calls(&self) -> Vec<(usize, Value)> {
        let mut out = Vec::new();
        for (i, s) in self.sims.iter().enumerate() {
            if self.dead.contains(&i) {
                continue;
            }
            let url = format!("{}/sim/calls", s.base_url());
            let calls: Vec<Value> = self
                .http
                .get(url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            out.extend(calls.into_iter().map(|c| (i, c)));
        }
        out
    }

    /// Waits until exactly `n` calls are live and all sit in bridges; on
    /// timeout, fails with the calls that are not and corral's counts.
    pub async fn wait_all_bridged(&self, n: usize, deadline: Duration) -> Vec<(usize, Value)> {
        let mut poll = super::Poll::new(deadline);
        loop {
            let calls = self.live_calls().await;
            let b = calls.iter().filter(|(_, c)| !c["bridge"].is_null()).count();
            if b == n && calls.len() == n {
                return calls;
            }
            if !poll.next().await {
                let rest: Vec<_> = calls
                    .iter()
                    .filter(|(_, c)| c["bridge"].is_null())
                    .take(5)
                    .collect();
                panic!(
                    "{b} of {n} calls bridged ({} live) after {deadline:?}; some not bridged: {rest:?}; counts: {:?}",
                    calls.len(),
                    self.metrics.snapshot()
                );
            }
        }
    }

    /// Every live node's bridges (`GET /ari/bridges`).
    pub async fn bridges(&self) -> Vec<(usize, Value)> {
        let mut out = Vec::new();
        for (i, s) in self.sims.iter().enumerate() {
            if self.dead.contains(&i) {
                continue;
            }
            let url = format!("{}/ari/bridges", s.base_url());
            let bridges: Vec<Value> = self
                .http
                .get(url)
                .basic_auth("corral", Some("corral"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            out.extend(bridges.into_iter().map(|b| (i, b)));
        }
        out
    }

    /// The invariant, read from ARI: for each room (`corral:<kind>:<room>`
    /// bridge name), the nodes whose bridge of that room has channels.
    /// Returns rooms found on more than one node.
    pub async fn split_rooms(&self) -> Vec<(String, Vec<usize>)> {
        let mut rooms: HashMap<String, HashSet<usize>> = HashMap::new();
        for (i, b) in self.bridges().await {
            let name = b["name"].as_str().unwrap_or_default().to_string();
            if name.starts_with("corral:")
                && b["channels"].as_array().is_some_and(|c| !c.is_empty())
            {
                rooms.entry(name).or_default().insert(i);
            }
        }
        let mut split: Vec<_> = rooms
            .into_iter()
            .filter(|(_, n)| n.len() > 1)
            .map(|(r, n)| (r, n.into_iter().collect()))
            .collect();
        split.sort();
        split
    }

    /// The whole invariant, read from ARI: rooms whose live calls sit in
    /// more than one bridge, on one node or on several. Each comes with its
    /// bridges as `(node index, bridge id, calls)`.
    pub async fn rooms_not_whole(&self) -> Vec<(String, Vec<(usize, String, usize)>)> {
        let mut rooms: HashMap<String, Vec<(usize, String, usize)>> = HashMap::new();
        for (i, b) in self.bridges().await {
            let name = b["name"].as_str().unwrap_or_default().to_string();
            let calls = b["channels"].as_array().map_or(0, Vec::len);
            // A pair bridge (`corral:queue:<q>:<agent>`) is a queue's call
            // with one agent, not the queue's room.
            if name.starts_with("corral:") && name.matches(':').count() == 2 && calls > 0 {
                let id = b["id"].as_str().unwrap_or_default().to_string();
                rooms.entry(name).or_default().push((i, id, calls));
            }
        }
        let mut out: Vec<_> = rooms.into_iter().filter(|(_, b)| b.len() > 1).collect();
        out.sort();
        out
    }

    /// Sum of one counter of `GET /sim/stats` over every node ever started.
    pub fn sim_stat(&self, f: impl Fn(&corral::sim::SimStats) -> u64) -> u64 {
        self.sims.iter().map(|s| f(&s.stats())).sum()
    }

    /// Kills the farm's Redis (a `Backend::PrivateRedis` one).
    pub fn kill_redis(&mut self) {
        self._redis
            .as_mut()
            .expect("kill_redis needs Backend::PrivateRedis")
            .kill();
    }

    /// Starts the farm's Redis again on the same port, empty (after
    /// [`TestFarm::kill_redis`], or in place of the running one: a restart
    /// without persistence).
    pub fn restart_redis(&mut self) {
        self._redis
            .as_mut()
            .expect("restart_redis needs Backend::PrivateRedis")
            .restart();
    }

    /// Freezes the farm's Redis (SIGSTOP): it keeps its data, answers
    /// nothing.
    pub fn pause_redis(&self) {
        self._redis
            .as_ref()
            .expect("pause_redis needs Backend::PrivateRedis")
            .pause();
    }

    /// Thaws the farm's Redis (SIGCONT).
    pub fn resume_redis(&self) {
        self._redis
            .as_ref()
            .expect("resume_redis needs Backend::PrivateRedis")
            .resume();
    }

    /// Node specs for another controller on the same nodes.
    pub fn specs(&self) -> Vec<NodeSpec> {
        specs_for(&self.sims)
    }

    /// Stops this farm's controller (graceful), keeping the nodes running.
    pub async fn stop_controller(&mut self) {
        self.shutdown.cancel();
        if let Some(run) = self.run.take() {
            let _ = run.await;
        }
    }

    /// Stops the controller (graceful) and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(run) = self.run.take() {
            let _ = run.await;
        }
    }
}

/// How a controller reaches `sims` (default credentials, app `corral`).
fn specs_for(sims: &[SimNode]) -> Vec<NodeSpec> {
    sims.iter()
        .map(|s| NodeSpec {
            ari: corral::ari::Config {
                node: NodeId::new(s.id()).unwrap(),
                base_url: s.base_url(),
                username: SimConfig::DEFAULT_CREDENTIALS.into(),
                password: SimConfig::DEFAULT_CREDENTIALS.into(),
                app: "corral".into(),
                request_timeout: Duration::from_secs(2),
            },
            sip_host: s.addr().to_string(),
            capacity: 500,
            max_rooms: None,
        })
        .collect()
}

impl Drop for TestFarm {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
