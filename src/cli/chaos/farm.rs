//! The simulated farm of a chaos run, as an operator would run it: one
//! `redis-server` (from `PATH`), N `corral sim-node` processes and two
//! `corral serve` replicas on that Redis, each in its own process group.
//!
//! What it owns: the processes, their ports (picked free at start and kept
//! across restarts, so a restarted node or Redis comes back where the
//! others expect it) and the [`Board`] that tells the checker what the
//! runner did to each node. It decides nothing about calls.
//!
//! # Cleanup
//! Every process is killed with its group when its handle drops (a normal
//! end, an error, a timeout, a panic that unwinds). Every group is also in
//! a registry that [`kill_registered`] empties: the panic hook and a second
//! Ctrl-C call it, so nothing is left running even when `Drop` cannot run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use rustix::process::{Pid, Signal, kill_process_group};
use serde_json::Value;

use crate::testbed::render::{self, NodeAddrs};
use crate::testbed::{CorralProcess, Process};

/// How long a process may take to answer after it was started.
const START_DEADLINE: Duration = Duration::from_secs(15);

/// Process groups started by this run and not yet reaped.
static GROUPS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn groups() -> MutexGuard<'static, BTreeSet<i32>> {
    GROUPS.lock().unwrap_or_else(PoisonError::into_inner)
}

fn register(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        groups().insert(pid);
    }
}

fn unregister(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        groups().remove(&pid);
    }
}

/// SIGCONT then SIGKILL to every process group this run started and has not
/// reaped: the last resort of the panic hook and of a second Ctrl-C.
pub fn kill_registered() {
    for pid in std::mem::take(&mut *groups()) {
        if let Some(pid) = Pid::from_raw(pid) {
            let _ = kill_process_group(pid, Signal::CONT);
            let _ = kill_process_group(pid, Signal::KILL);
        }
    }
}

/// What the runner has done to a node's process, as the checker must know
/// it (a paused node cannot be sampled; a new process has a new log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    /// Running.
    Up,
    /// Killed (SIGKILL), not started again yet.
    Killed,
    /// Stopped (SIGSTOP).
    Paused,
}

/// One node's state on the [`Board`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeStatus {
    /// Running, killed or paused.
    pub life: Life,
    /// The process's number: 1 at start, +1 per restart. A new process has
    /// new counters and a new call log.
    pub generation: u64,
}

/// The nodes' states, shared by the farm (writer) and the checker (reader).
#[derive(Debug, Clone, Default)]
pub struct Board(Arc<Mutex<Vec<NodeStatus>>>);

impl Board {
    /// A snapshot.
    pub fn get(&self) -> Vec<NodeStatus> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, i: usize, f: impl FnOnce(&mut NodeStatus)) {
        let mut v = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = v.get_mut(i) {
            f(s);
        }
    }
}

/// A node as the caller and the checker reach it.
#[derive(Debug, Clone)]
pub struct NodeAddr {
    /// `ast1` ...
    pub id: String,
    /// `http://127.0.0.1:PORT` (ARI under `/ari`, control under `/sim`).
    pub url: String,
}

/// One `corral sim-node` process.
#[derive(Debug)]
struct SimProcess {
    id: String,
    port: u16,
    process: Option<Process>,
}

/// A `redis-server` from `PATH`, on a port kept across restarts, empty at
/// every start (no persistence).
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    process: Option<Process>,
}

impl RedisServer {
    /// Starts one, its files and log in `dir`; returns once it answers PING.
    ///
    /// # Errors
    /// `redis-server` is not on `PATH`, or did not answer.
    pub async fn start(dir: &Path) -> anyhow::Result<RedisServer> {
        let mut r = RedisServer {
            port: crate::testbed::free_port()?,
            dir: dir.to_path_buf(),
            process: None,
        };
        r.spawn().await?;
        Ok(r)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let bin = crate::testbed::which("redis-server").context(
            "redis-server is not on PATH (Debian: apt-get install redis-server); corral chaos runs the replicas on it",
        )?;
        let data = self.dir.join("redis");
        std::fs::create_dir_all(&data)?;
        let mut cmd = Command::new(bin);
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&data);
        let mut p = Process::spawn("redis-server", cmd, &self.dir.join("redis.log"))?;
        register(p.pid());
        let until = tokio::time::Instant::now() + START_DEADLINE;
        loop {
            if self.answers().await {
                self.process = Some(p);
                return Ok(());
            }
            if p.exited().is_some() || tokio::time::Instant::now() >= until {
                let tail = p.log_tail(10);
                unregister(p.pid());
                p.kill();
                anyhow::bail!("redis-server did not start on port {}:\n{tail}", self.port);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// True when it answers PING.
    pub async fn answers(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let ping = async {
            let mut c = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut c).await
        };
        matches!(
            tokio::time::timeout(Duration::from_millis(500), ping).await,
            Ok(Ok(_))
        )
    }

    /// kill -9, then a new, empty server on the same port; returns once it
    /// answers PING.
    ///
    /// # Errors
    /// The new server did not start.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn().await
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            unregister(p.pid());
            p.kill();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The running farm. Dropping it kills every process.
#[derive(Debug)]
pub struct SimFarm {
    dir: PathBuf,
    binary: PathBuf,
    seed: u64,
    nodes: Vec<SimProcess>,
    redis: RedisServer,
    replicas: Vec<CorralProcess>,
    /// Which replicas were killed by the runner (and not started again).
    replica_down: Vec<bool>,
    board: Board,
    http: reqwest::Client,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct FarmOptions {
    /// Simulated nodes.
    pub nodes: usize,
    /// `corral serve` replicas.
    pub replicas: usize,
    /// Seed of the nodes' fault randomness (node i gets `seed + i`).
    pub seed: u64,
    /// Where logs and configs go.
    pub dir: PathBuf,
    /// `CORRAL_*` overrides for the replicas.
    pub corral_env: Vec<(String, String)>,
}

impl SimFarm {
    /// Starts Redis, the nodes, then the replicas, and returns once every
    /// node's event stream is held by a replica.
    ///
    /// # Errors
    /// A part did not start; the error names it and ends with its log.
    pub async fn start(opts: FarmOptions) -> anyhow::Result<SimFarm> {
        std::fs::create_dir_all(&opts.dir)
            .with_context(|| format!("creating {}", opts.dir.display()))?;
        let binary = std::env::current_exe().context("finding the corral binary")?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let mut farm = SimFarm {
            dir: opts.dir.clone(),
            binary,
            seed: opts.seed,
            nodes: Vec::new(),
            redis: RedisServer::start(&opts.dir).await?,
            replicas: Vec::new(),
            replica_down: Vec::new(),
            board: Board::default(),
            http,
        };
        for i in 0..opts.nodes.max(1) {
            farm.nodes.push(SimProcess {
                id: format!("ast{}", i + 1),
                port: crate::testbed::free_port()?,
                process: None,
            });
            farm.board
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(NodeStatus {
                    life: Life::Killed,
                    generation: 0,
                });
        }
        for i in 0..farm.nodes.len() {
            farm.start_node(i).await?;
        }
        let addrs = farm.node_addrs();
        let farm_name = format!("chaos{}", std::process::id());
        let mut env: Vec<(String, String)> = vec![("CORRAL_FARM".into(), farm_name)];
        env.extend(opts.corral_env.iter().cloned());
        let env_ref: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        for r in 0..opts.replicas.max(1) {
            let name = format!("corral-{}", (b'a' + (r as u8 % 26)) as char);
            let c = CorralProcess::start(
                &farm.binary,
                &farm.dir.join(&name),
                &addrs,
                Some(&farm.redis_url()),
                &env_ref,
            )
            .await
            .with_context(|| format!("starting replica {name}"))?;
            register(c.pid());
            farm.replicas.push(c);
            farm.replica_down.push(false);
        }
        farm.wait_streamed(START_DEADLINE).await?;
        Ok(farm)
    }

    fn node_addrs(&self) -> Vec<NodeAddrs> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeAddrs {
                id: n.id.clone(),
                bind: "127.0.0.1".into(),
                sip_port: n.port,
                http_port: n.port,
                entity_id: format!("02:00:00:ca:{:02x}:{:02x}", (i >> 8) & 0xff, i & 0xff),
            })
            .collect()
    }

    /// The nodes' addresses, in id order.
    pub fn nodes(&self) -> Vec<NodeAddr> {
        self.nodes
            .iter()
            .map(|n| NodeAddr {
                id: n.id.clone(),
                url: format!("http://127.0.0.1:{}", n.port),
            })
            .collect()
    }

    /// The board the checker reads.
    pub fn board(&self) -> Board {
        self.board.clone()
    }

    /// Where the run keeps logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn redis_url(&self) -> String {
        self.redis.url()
    }

    /// The replicas' API URLs, and whether each runs.
    pub fn replicas(&self) -> Vec<(String, bool)> {
        self.replicas
            .iter()
            .zip(&self.replica_down)
            .map(|(r, down)| (r.url(), !down))
            .collect()
    }

    // -- nodes ---------------------------------------------------------

    async fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        // The proxy's failover for a followed 302 the node refuses: the
        // other nodes, from the next one on.
        let count = self.nodes.len();
        let failover: Vec<String> = (1..count)
            .filter_map(|k| self.nodes.get((i + k) % count))
            .map(|o| format!("127.0.0.1:{}", o.port))
            .collect();
        let Some(n) = self.nodes.get_mut(i) else {
            anyhow::bail!("no node {i}");
        };
        let log = self.dir.join(format!("{}.log", n.id));
        let url = format!("http://127.0.0.1:{}", n.port);
        let mut last = String::new();
        // The port may still be held for a moment by the killed process's
        // sockets; a node that exits at once is started again.
        for _ in 0..20 {
            let mut cmd = Command::new(&self.binary);
            cmd.arg("sim-node")
                .args(["--id", &n.id])
                .args(["--listen", &format!("127.0.0.1:{}", n.port)])
                .args(["--password", render::ARI_PASSWORD])
                .args(["--seed", &(self.seed.wrapping_add(i as u64)).to_string()])
                .env("RUST_LOG", "corral=warn");
            if !failover.is_empty() {
                cmd.args(["--failover", &failover.join(",")]);
            }
            let mut p = Process::spawn(&format!("sim-node {}", n.id), cmd, &log)?;
            register(p.pid());
            let until = tokio::time::Instant::now() + START_DEADLINE;
            loop {
                let ok = self
                    .http
                    .get(format!("{url}/sim/info"))
                    .timeout(Duration::from_millis(500))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    n.process = Some(p);
                    self.board.set(i, |s| {
                        s.life = Life::Up;
                        s.generation += 1;
                    });
                    return Ok(());
                }
                if p.exited().is_some() || tokio::time::Instant::now() >= until {
                    last = p.log_tail(5);
                    unregister(p.pid());
                    p.kill();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!(
            "sim-node {} did not start on port {}:\n{last}",
            n.id,
            n.port
        )
    }

    /// kill -9 of node `i` (its calls and bridges are gone).
    pub fn kill_node(&mut self, i: usize) {
        if let Some(n) = self.nodes.get_mut(i)
            && let Some(mut p) = n.process.take()
        {
            unregister(p.pid());
            p.kill();
            self.board.set(i, |s| s.life = Life::Killed);
        }
    }

    /// A new process for node `i` on its port (a new incarnation); kills
    /// the old one first if it runs.
    ///
    /// # Errors
    /// It did not answer within the start deadline.
    pub async fn restart_node(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill_node(i);
        self.start_node(i).await
    }

    /// SIGSTOP to node `i`.
    pub fn pause_node(&mut self, i: usize) {
        if let Some(p) = self.nodes.get(i).and_then(|n| n.process.as_ref()) {
            p.pause();
            self.board.set(i, |s| s.life = Life::Paused);
        }
    }

    /// SIGCONT to node `i`.
    pub fn resume_node(&mut self, i: usize) {
        if let Some(p) = self.nodes.get(i).and_then(|n| n.process.as_ref()) {
            p.resume();
            self.board.set(i, |s| s.life = Life::Up);
        }
    }

    /// Starts every killed node again and resumes paused ones.
    ///
    /// # Errors
    /// A node did not start.
    pub async fn heal_nodes(&mut self) -> anyhow::Result<()> {
        for (i, s) in self.board.get().into_iter().enumerate() {
            match s.life {
                Life::Up => {}
                Life::Paused => self.resume_node(i),
                Life::Killed => self.start_node(i).await?,
            }
        }
        Ok(())
    }

    // -- Redis ---------------------------------------------------------

    /// kill -9 of Redis, then a new, empty Redis on the same port; returns
    /// once it answers PING.
    ///
    /// # Errors
    /// The new Redis did not start.
    pub async fn restart_redis(&mut self) -> anyhow::Result<()> {
        self.redis.restart().await
    }

    // -- replicas ------------------------------------------------------

    /// Per replica (by index) that runs: how many nodes' streams it holds
    /// (`/readyz`).
    pub async fn streams_held(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (i, r) in self.replicas.iter().enumerate() {
            if self.replica_down[i] {
                continue;
            }
            let held = streams_of(&self.http, &r.url()).await.unwrap_or(0);
            out.push((i, held));
        }
        out
    }

    /// kill -9 of replica `i`.
    pub fn kill_replica(&mut self, i: usize) {
        if let Some(r) = self.replicas.get_mut(i) {
            unregister(r.pid());
            r.kill();
            self.replica_down[i] = true;
        }
    }

    /// Starts every killed replica again.
    ///
    /// # Errors
    /// A replica did not start.
    pub async fn heal_replicas(&mut self) -> anyhow::Result<()> {
        for i in 0..self.replicas.len() {
            if self.replica_down[i] {
                self.replicas[i].restart().await?;
                register(self.replicas[i].pid());
                self.replica_down[i] = false;
            }
        }
        Ok(())
    }

    /// True when a running replica's `/v1/nodes` (the store's view) shows
    /// every node `up` within `deadline`.
    pub async fn nodes_up_in_store(&self, deadline: Duration) -> bool {
        let t0 = tokio::time::Instant::now();
        loop {
            for (i, r) in self.replicas.iter().enumerate() {
                if self.replica_down[i] {
                    continue;
                }
                let v: Option<Value> = match self
                    .http
                    .get(format!("{}/v1/nodes", r.url()))
                    .timeout(Duration::from_millis(500))
                    .send()
                    .await
                {
                    Ok(resp) if resp.status().is_success() => resp.json().await.ok(),
                    _ => None,
                };
                let up = v
                    .as_ref()
                    .and_then(|v| v["nodes"].as_array())
                    .map_or(0, |a| a.iter().filter(|n| n["state"] == "up").count());
                if up >= self.nodes.len() {
                    return true;
                }
            }
            if t0.elapsed() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Restarts every replica, one after the other (SIGTERM, then a new
    /// process): they register the nodes again.
    ///
    /// # Errors
    /// A replica did not start.
    pub async fn restart_replicas(&mut self) -> anyhow::Result<()> {
        for i in 0..self.replicas.len() {
            unregister(self.replicas[i].pid());
            self.replicas[i].restart().await?;
            register(self.replicas[i].pid());
            self.replica_down[i] = false;
        }
        Ok(())
    }

    /// Waits until every node's stream is held by one running replica.
    ///
    /// # Errors
    /// Not within `deadline`; says which nodes are not streamed.
    pub async fn wait_streamed(&self, deadline: Duration) -> anyhow::Result<Duration> {
        let t0 = tokio::time::Instant::now();
        let want = self.nodes.len();
        loop {
            let mut streamed = BTreeSet::new();
            for (i, r) in self.replicas.iter().enumerate() {
                if self.replica_down[i] {
                    continue;
                }
                if let Some(v) = readyz(&self.http, &r.url()).await {
                    for n in v["nodes"].as_array().into_iter().flatten() {
                        if n["streaming"] == true
                            && let Some(id) = n["node"].as_str()
                        {
                            streamed.insert(id.to_string());
                        }
                    }
                }
            }
            if streamed.len() >= want {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() >= deadline {
                let missing: Vec<&str> = self
                    .nodes
                    .iter()
                    .map(|n| n.id.as_str())
                    .filter(|id| !streamed.contains(*id))
                    .collect();
                anyhow::bail!(
                    "nodes {} not streamed by any replica within {deadline:?} (logs in {})",
                    missing.join(", "),
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `GET /readyz` of a replica (its body is JSON on 200 and 503).
async fn readyz(http: &reqwest::Client, url: &str) -> Option<Value> {
    let r = http
        .get(format!("{url}/readyz"))
        .timeout(Duration::from_millis(500))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// How many nodes' streams the replica at `url` holds.
pub async fn streams_of(http: &reqwest::Client, url: &str) -> Option<usize> {
    let v = readyz(http, url).await?;
    Some(
        v["nodes"]
            .as_array()?
            .iter()
            .filter(|n| n["streaming"] == true)
            .count(),
    )
}

impl Drop for SimFarm {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            unregister(r.pid());
            r.kill();
        }
        for n in &mut self.nodes {
            if let Some(mut p) = n.process.take() {
                unregister(p.pid());
                p.kill();
            }
        }
    }
}
