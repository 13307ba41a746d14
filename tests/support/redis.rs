//! A real `redis-server` for tests: started from `PATH` on a free port in a
//! temp dir (`--save "" --appendonly no`), killed on drop, restartable on
//! the same port. `CORRAL_TEST_REDIS_URL` replaces it with an external Redis
//! for tests that do not need to kill or restart it ([`RedisProcess::start`]);
//! each test gets its own farm ([`unique_farm`]) so tests cannot interfere.
//!
//! A missing `redis-server` fails the test with the fix in the message; it
//! never skips.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a fresh redis-server may take to answer PING.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// The environment variable naming an external Redis for tests.
pub const TEST_REDIS_URL: &str = "CORRAL_TEST_REDIS_URL";

/// What kind of server to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A plain standalone server.
    Standalone,
    /// A one-node Redis Cluster owning all 16384 slots.
    Cluster,
    /// A Sentinel monitoring the master at this port as `mymaster`
    /// (down after 500 ms, quorum 1, so a test can watch a failover).
    Sentinel {
        /// The master's port.
        master_port: u16,
    },
    /// A replica of the master at this port.
    Replica {
        /// The master's port.
        master_port: u16,
    },
}

/// A Redis that the test owns (killed on drop), or an external one.
#[derive(Debug)]
pub struct RedisProcess {
    child: Option<Child>,
    port: u16,
    dir: Option<tempfile::TempDir>,
    external: Option<String>,
    mode: Mode,
}

/// A unique farm name for one test: tests sharing a Redis never meet.
pub fn unique_farm(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let short: String = test
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(32)
        .collect();
    format!("{short}-{}-{n}-{nanos}", std::process::id())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free port: {e}"))
}

fn redis_server_binary() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("redis-server"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "redis-server is not on PATH, and the Redis-backed tests need it. \
             Fix: install it (Debian/Ubuntu: `sudo apt-get install -y redis-server` \
             then `sudo systemctl disable --now redis-server`; macOS: `brew install redis`), \
             or point {TEST_REDIS_URL} at a Redis you own (redis://host:port)."
        )
    })
}

impl RedisProcess {
    /// A Redis for a test: the external one if `CORRAL_TEST_REDIS_URL` is
    /// set, else a private standalone server.
    pub fn start() -> Self {
        match std::env::var(TEST_REDIS_URL) {
            Ok(url) if !url.is_empty() => Self {
                child: None,
                port: 0,
                dir: None,
                external: Some(url),
                mode: Mode::Standalone,
            },
            _ => Self::start_private(Mode::Standalone),
        }
    }

    /// A private server of the given mode, always started here (for tests
    /// that kill or restart it, or need Cluster or Sentinel).
    pub fn start_private(mode: Mode) -> Self {
        let mut p = Self {
            child: None,
            port: free_port(),
            dir: Some(tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"))),
            external: None,
            mode,
        };
        p.spawn();
        p
    }

    /// `redis://127.0.0.1:<port>` (or the external URL; for a cluster,
    /// `redis+cluster://…`).
    pub fn url(&self) -> String {
        if let Some(u) = &self.external {
            return u.clone();
        }
        match self.mode {
            Mode::Cluster => format!("redis+cluster://127.0.0.1:{}", self.port),
            _ => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The port (0 for an external Redis).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// True when this is the external Redis of `CORRAL_TEST_REDIS_URL`.
    pub fn is_external(&self) -> bool {
        self.external.is_some()
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        assert!(self.external.is_none(), "cannot kill an external Redis");
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the server (SIGSTOP): it keeps its data and its connections
    /// but answers nothing until [`RedisProcess::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self
            .child
            .as_ref()
            .expect("a server started by the test")
            .id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid} failed");
    }

    /// Starts the server again on the same port, empty (no persistence):
    /// scripts are gone, like after a real restart.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let bin = redis_server_binary();
        let dir = self
            .dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_else(std::env::temp_dir);
        let mut cmd = Command::new(&bin);
        match &self.mode {
            Mode::Sentinel { master_port } => {
                let conf = dir.join("sentinel.conf");
                let text = format!(
                    "port {}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
                     sentinel down-after-milliseconds mymaster 500\n\
                     sentinel failover-timeout mymaster 5000\n",
                    self.port,
                    dir.display()
                );
                std::fs::write(&conf, text).unwrap_or_else(|e| panic!("sentinel.conf: {e}"));
                cmd.arg(&conf).arg("--sentinel");
            }
            mode => {
                cmd.args(["--port", &self.port.to_string()])
                    .args(["--bind", "127.0.0.1"])
                    .args(["--save", ""])
                    .args(["--appendonly", "no"])
                    .arg("--dir")
                    .arg(&dir);
                if let Mode::Replica { master_port } = mode {
                    cmd.args(["--replicaof", "127.0.0.1", &master_port.to_string()]);
                }
                if *mode == Mode::Cluster {
                    cmd.args(["--cluster-enabled", "yes"])
                        .args(["--cluster-config-file", "nodes.conf"]);
                    let _ = std::fs::remove_file(dir.join("nodes.conf"));
                }
            }
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        self.child = Some(child);
        self.wait_for_ping();
        if self.mode == Mode::Cluster {
            self.setup_cluster();
        }
    }

    fn wait_for_ping(&mut self) {
        let mut poll = super::Poll::new(START_DEADLINE);
        let url = format!("redis://127.0.0.1:{}", self.port);
        loop {
            let pong = redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "redis-server exited at start ({status}); is port {} taken?",
                    self.port
                );
            }
            assert!(
                poll.next_blocking(),
                "redis-server on port {} did not answer PING within {START_DEADLINE:?}",
                self.port
            );
        }
    }

    fn setup_cluster(&self) {
        let url = format!("redis://127.0.0.1:{}", self.port);
        let mut c = redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .unwrap_or_else(|e| panic!("cluster node: {e}"));
        let _: () = redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(0)
            .arg(16383)
            .query(&mut c)
            .unwrap_or_else(|e| panic!("CLUSTER ADDSLOTSRANGE: {e}"));
        let mut poll = super::Poll::new(START_DEADLINE);
        loop {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut c)
                .unwrap_or_default();
            if info.contains("cluster_state:ok") {
                return;
            }
            assert!(
                poll.next_blocking(),
                "one-node cluster did not reach cluster_state:ok"
            );
        }
    }

    /// A synchronous connection for inspecting the server in tests.
    pub fn connection(&self) -> redis::Connection {
        let url = match &self.external {
            Some(u) => u.clone(),
            None => format!("redis://127.0.0.1:{}", self.port),
        };
        redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .unwrap_or_else(|e| panic!("connect to test redis: {e}"))
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
