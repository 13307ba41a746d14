//! The real farm in tests: [`corral::testbed`] started with the built
//! `corral` binary in a temp directory that is kept (and its path printed)
//! when the test fails, or always with `CORRAL_KEEP_TESTBED=1`, so that
//! every part's log can be read (`RUST_LOG=corral=debug` reaches corral).

use std::collections::BTreeMap;
use std::time::Duration;

use corral::testbed::{FarmOptions, RealFarm, RoomTruth};

use super::farm::Backend;
use super::redis::RedisProcess;

/// A real farm for one test, with its Redis and directory.
pub struct RealTest {
    /// The farm (dropped first: its processes stop before the directory
    /// goes).
    pub farm: RealFarm,
    /// The Redis corral runs on, if any.
    pub redis: Option<RedisProcess>,
    dir: Option<tempfile::TempDir>,
}

impl RealTest {
    /// Starts `nodes` real Asterisk nodes, Kamailio and `corral serve` on
    /// `backend`, with `env` as extra `CORRAL_*` overrides; waits until
    /// corral streams every node.
    pub async fn start(
        test: &str,
        nodes: usize,
        backend: Backend,
        env: &[(&str, &str)],
    ) -> RealTest {
        let t = Self::start_with(test, nodes, backend, env, true).await;
        t.wait_streaming(Duration::from_secs(20)).await;
        t
    }

    /// Like [`RealTest::start`], waiting only for `streaming` nodes (the
    /// others are expected not to stream).
    pub async fn start_streaming(
        test: &str,
        nodes: usize,
        backend: Backend,
        env: &[(&str, &str)],
        streaming: &[&str],
    ) -> RealTest {
        let t = Self::start_with(test, nodes, backend, env, true).await;
        let corral = t.farm.corral.as_ref().expect("corral runs");
        super::eventually(
            Duration::from_secs(20),
            "corral streaming the nodes",
            || async {
                let r = corral.get("/readyz").await.ok()?;
                let up: Vec<&str> = r["nodes"]
                    .as_array()?
                    .iter()
                    .filter(|n| n["streaming"] == true)
                    .filter_map(|n| n["node"].as_str())
                    .collect();
                (up == streaming).then_some(())
            },
        )
        .await;
        t
    }

    /// The nodes and Kamailio only: the test plays corral's app itself.
    pub async fn start_without_corral(test: &str, nodes: usize) -> RealTest {
        Self::start_with(test, nodes, Backend::Memory, &[], false).await
    }

    async fn start_with(
        test: &str,
        nodes: usize,
        backend: Backend,
        env: &[(&str, &str)],
        start_corral: bool,
    ) -> RealTest {
        super::init_logs();
        let redis = match backend {
            Backend::Memory => None,
            Backend::Redis => Some(RedisProcess::start()),
            Backend::PrivateRedis => {
                Some(RedisProcess::start_private(super::redis::Mode::Standalone))
            }
        };
        let dir = tempfile::Builder::new()
            .prefix(&format!("corral-{test}-"))
            .tempdir()
            .expect("temp dir");
        let mut corral_env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        corral_env.push(("CORRAL_FARM".into(), super::redis::unique_farm(test)));
        let opts = FarmOptions {
            nodes,
            corral_binary: env!("CARGO_BIN_EXE_corral").into(),
            redis_url: redis.as_ref().map(RedisProcess::url),
            corral_env,
            dir: dir.path().to_path_buf(),
            start_corral,
        };
        let farm = match RealFarm::start(opts).await {
            Ok(f) => f,
            Err(e) => {
                let kept = dir.keep();
                panic!(
                    "the real farm did not start: {e}\n(files kept in {})",
                    kept.display()
                );
            }
        };
        RealTest {
            farm,
            redis,
            dir: Some(dir),
        }
    }

    /// corral's API URL.
    pub fn api(&self) -> String {
        self.farm.corral.as_ref().expect("corral runs").url()
    }

    /// Waits until corral streams every running node (its `/readyz`).
    pub async fn wait_streaming(&self, deadline: Duration) {
        if let Err(e) = self.farm.wait_streaming(deadline).await {
            panic!("{e}");
        }
    }

    /// Waits until the nodes' ARI shows `calls` channels in corral's rooms,
    /// `rooms` rooms, each whole (one bridge on one node); returns them.
    pub async fn wait_whole(
        &self,
        rooms: usize,
        calls: usize,
        deadline: Duration,
    ) -> BTreeMap<String, RoomTruth> {
        let mut poll = super::Poll::new(deadline);
        loop {
            let seen = self.farm.rooms().await;
            let total: usize = seen.values().map(RoomTruth::calls).sum();
            if seen.len() == rooms
                && total == calls
                && seen.values().all(|r| r.whole_on().is_some())
            {
                return seen;
            }
            if !poll.next().await {
                panic!(
                    "after {deadline:?}: {} rooms, {total} calls in corral's bridges (want {rooms} rooms, {calls} calls, each whole): {seen:#?}\n{}",
                    seen.len(),
                    self.diagnose().await
                );
            }
        }
    }

    /// Starts `count` callers of `room` (`conf-<room>`, callers
    /// `<prefix>-1` ...) at 20/s through Kamailio.
    pub fn call_room(&self, room: &str, prefix: &str, count: u32) -> corral::testbed::SippRun {
        self.call(&format!("conf-{room}"), prefix, count)
    }

    /// [`RealTest::call_room`] with callers that refuse every REFER.
    pub fn call_room_refusing_refer(
        &self,
        room: &str,
        prefix: &str,
        count: u32,
    ) -> corral::testbed::SippRun {
        let calls = corral::testbed::sipp::Calls {
            service: format!("conf-{room}"),
            caller: prefix.to_string(),
            count,
            rate: 20.0,
            target: self.farm.kamailio.addr(),
            domain: None,
        };
        self.farm
            .sipp
            .callers_as(
                &self.farm.dir().join("sipp"),
                prefix,
                corral::testbed::sipp::Scenario::CallerRefusingRefer,
                &calls,
            )
            .expect("sipp starts")
    }

    /// Starts `count` calls to `service` (the request URI's user), callers
    /// `<prefix>-1` ..., at 20/s through Kamailio.
    pub fn call(&self, service: &str, prefix: &str, count: u32) -> corral::testbed::SippRun {
        let calls = corral::testbed::sipp::Calls {
            service: service.to_string(),
            caller: prefix.to_string(),
            count,
            rate: 20.0,
            target: self.farm.kamailio.addr(),
            domain: None,
        };
        self.farm
            .sipp
            .callers(&self.farm.dir().join("sipp"), prefix, &calls)
            .expect("sipp starts")
    }

    /// What a failure message needs: channels per node and context, corral's
    /// counters, the end of corral's log.
    pub async fn diagnose(&self) -> String {
        let mut by: BTreeMap<(String, String), usize> = BTreeMap::new();
        for (node, c) in self.farm.channels().await {
            let ctx = c["dialplan"]["context"].as_str().unwrap_or("?").to_string();
            let app = c["dialplan"]["app_name"].as_str().unwrap_or("").to_string();
            *by.entry((node, format!("{ctx}/{app}"))).or_default() += 1;
        }
        let corral = self.farm.corral.as_ref();
        let metrics = match corral {
            Some(c) => c
                .metrics()
                .await
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    !l.starts_with('#')
                        && (l.starts_with("corral_redirects")
                            || l.starts_with("corral_joins")
                            || l.starts_with("corral_tokens")
                            || l.starts_with("corral_degraded")
                            || l.starts_with("corral_split"))
                        && !l.contains("_bucket")
                })
                .collect::<Vec<_>>()
                .join("\n"),
            None => String::new(),
        };
        let log = corral.map(|c| c.log()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        format!(
            "channels by node and context/app: {by:?}\ncorral counters:\n{metrics}\ncorral log (last first):\n{}\nfiles: {}",
            tail.join("\n"),
            self.farm.dir().display()
        )
    }
}

/// `GET /v1/route/<user>` on corral's API at `api` as the proxy asks it
/// (no credential): the status, the `Corral-Node` header (or the
/// `Corral-No-Opinion` reason) and the body.
pub async fn route(api: &str, user: &str) -> (u16, String, String) {
    let r = reqwest::Client::new()
        .get(format!("{api}/v1/route/{user}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("corral answers the lookup");
    let status = r.status().as_u16();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let node = if status == 200 {
        header("corral-node")
    } else {
        header("corral-no-opinion")
    };
    (status, node, r.text().await.unwrap_or_default())
}

impl Drop for RealTest {
    fn drop(&mut self) {
        let keep = std::thread::panicking() || std::env::var_os("CORRAL_KEEP_TESTBED").is_some();
        if keep && let Some(d) = self.dir.take() {
            let kept = d.keep();
            eprintln!("real farm files kept in {}", kept.display());
        }
    }
}
