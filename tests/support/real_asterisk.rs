//! A real Asterisk 22.10.1 for tests, as small free functions: find the
//! relocatable tree, start one instance on free ports with a given
//! `extensions.conf`, run CLI commands, place SIP calls with sipp. Every
//! process started here is killed when its guard drops, a failing test
//! included.
//!
//! The tree comes from `CORRAL_ASTERISK_DIR` (the tree itself, or a
//! directory holding `asterisk-22.10.1-debian12-amd64/`; `.ci/test` sets
//! it after unpacking the tarball), else from unpacking
//! `../shared/asterisk/asterisk-22.10.1-debian12-amd64.tar.xz` into
//! `target/asterisk-cache/`. Without either the test fails and says how to
//! get one: it is never skipped.
#![allow(dead_code)]

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::Poll;

/// The tree's directory name inside the tarball.
pub const TREE: &str = "asterisk-22.10.1-debian12-amd64";

/// The ARI user and password of instances started here.
pub const ARI_USER: &str = "corral";
/// See [`ARI_USER`].
pub const ARI_PASS: &str = "corral";

fn is_tree(p: &Path) -> bool {
    p.join("run-asterisk").is_file()
}

/// The Asterisk tree to run: `CORRAL_ASTERISK_DIR`, or the shared tarball
/// unpacked once into `target/asterisk-cache/`. Panics with the way to
/// get one when there is none.
pub fn asterisk_tree() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some(dir) = std::env::var_os("CORRAL_ASTERISK_DIR") {
        let dir = PathBuf::from(dir);
        for cand in [dir.clone(), dir.join(TREE)] {
            if is_tree(&cand) {
                return cand;
            }
        }
        panic!(
            "CORRAL_ASTERISK_DIR={} holds no {TREE} tree (no run-asterisk in it or in {TREE}/)",
            dir.display()
        );
    }
    let cache = manifest.join("target").join("asterisk-cache");
    let tree = cache.join(TREE);
    if is_tree(&tree) {
        return tree;
    }
    let tarball = manifest
        .join("..")
        .join("shared")
        .join("asterisk")
        .join(format!("{TREE}.tar.xz"));
    assert!(
        tarball.is_file(),
        "no real Asterisk for this test: set CORRAL_ASTERISK_DIR to an unpacked {TREE} \
         (tar -xJf {TREE}.tar.xz), or put the tarball at {} (it ships in ../shared/asterisk/ \
         beside the repository; its README lists the Debian runtime packages)",
        tarball.display()
    );
    std::fs::create_dir_all(&cache).expect("create target/asterisk-cache");
    // Unpack beside the final place, then rename: a concurrent test never
    // sees half a tree.
    let staging = tempfile::tempdir_in(&cache).expect("staging dir");
    let status = Command::new("tar")
        .arg("-xJf")
        .arg(&tarball)
        .arg("-C")
        .arg(staging.path())
        .status()
        .expect("run tar");
    assert!(status.success(), "tar -xJf {} failed", tarball.display());
    if std::fs::rename(staging.path().join(TREE), &tree).is_err() {
        assert!(
            is_tree(&tree),
            "unpacked {TREE} could not be moved into place"
        );
    }
    tree
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for tests
/// that bind it at once).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free tcp port")
        .port()
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free udp port")
        .port()
}

/// One running Asterisk; killed (SIGKILL) when dropped.
pub struct RealAsterisk {
    child: Child,
    /// The instance directory (configs, `log/messages.log`, CLI socket).
    pub dir: tempfile::TempDir,
    /// The tree it runs from.
    pub tree: PathBuf,
    /// SIP (UDP) port on 127.0.0.1.
    pub sip_port: u16,
    /// HTTP/ARI port on 127.0.0.1.
    pub http_port: u16,
}

impl Drop for RealAsterisk {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts one instance with `extensions` as its `extensions.conf` and
/// waits (30 s at most) until ARI answers `GET /asterisk/ping`.
pub fn start_asterisk(tree: &Path, extensions: &Path) -> RealAsterisk {
    // Short paths: the CLI socket path must stay under ~90 characters.
    let dir = tempfile::Builder::new()
        .prefix("ast")
        .tempdir_in("/tmp")
        .expect("instance dir");
    let sip_port = free_udp_port();
    let http_port = free_tcp_port();
    let rtp = free_udp_port();
    let rtp_start = rtp.min(65_000);
    let log = std::fs::File::create(dir.path().join("console.out")).expect("console file");
    let child = Command::new(tree.join("run-asterisk"))
        .arg("--dir")
        .arg(dir.path().join("i"))
        .args(["--sip-port", &sip_port.to_string()])
        .args(["--http-port", &http_port.to_string()])
        .args(["--ari-user", ARI_USER, "--ari-pass", ARI_PASS])
        .args(["--rtp-start", &rtp_start.to_string()])
        .args(["--rtp-end", &(rtp_start + 39).to_string()])
        .arg("--extensions")
        .arg(extensions)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("dup")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn run-asterisk");
    let ast = RealAsterisk {
        child,
        dir,
        tree: tree.to_path_buf(),
        sip_port,
        http_port,
    };
    let mut poll = Poll::new(Duration::from_secs(30));
    while !ari_pings(http_port) {
        if !poll.next_blocking() {
            panic!(
                "Asterisk did not answer ARI within 30 s; console:\n{}",
                std::fs::read_to_string(ast.dir.path().join("console.out")).unwrap_or_default()
            );
        }
    }
    ast
}

/// True when `GET /ari/asterisk/ping` answers 200 (a plain HTTP/1.0
/// request, so this works outside a runtime).
fn ari_pings(http_port: u16) -> bool {
    use base64::Engine;
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", http_port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{ARI_USER}:{ARI_PASS}"));
    let req = format!("GET /ari/asterisk/ping HTTP/1.0\r\nAuthorization: Basic {auth}\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    resp.starts_with(b"HTTP/1.1 200") || resp.starts_with(b"HTTP/1.0 200")
}

impl RealAsterisk {
    /// `ws://` URL of the event websocket for `app`.
    pub fn events_url(&self, app: &str, subscribe_all: bool) -> String {
        format!(
            "ws://127.0.0.1:{}/ari/events?app={app}&subscribeAll={subscribe_all}&api_key={ARI_USER}:{ARI_PASS}",
            self.http_port
        )
    }

    /// `http://127.0.0.1:PORT` (ARI under `/ari`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The instance's `log/messages.log` (verbose 3: every `Executing`).
    pub fn messages_log(&self) -> PathBuf {
        self.dir.path().join("i").join("log").join("messages.log")
    }

    /// Runs one CLI command (`asterisk -rx`) and returns its output.
    pub fn rx(&self, command: &str) -> String {
        let out = Command::new(self.tree.join("run-asterisk"))
            .arg("--dir")
            .arg(self.dir.path().join("i"))
            .arg("--rx")
            .arg(command)
            .output()
            .expect("run-asterisk --rx");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A sipp caller; killed when dropped.
pub struct Sipp {
    child: Child,
    /// Where sipp writes every message it sends and receives.
    pub messages: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls `user@127.0.0.1:sip_port` with `scenario` (e.g.
/// `uac-wait-answer-bye.xml` from `../shared/asterisk/sipp/`); `user` goes
/// into the request URI as it is (escape what SIP does not allow raw).
pub fn sipp_call(scenario: &Path, user: &str, sip_port: u16) -> Sipp {
    let dir = tempfile::tempdir().expect("sipp dir");
    let messages = dir.path().join("messages.log");
    let child = Command::new("sipp")
        .arg("-sf")
        .arg(scenario)
        .args(["-s", user, "-i", "127.0.0.1"])
        .args(["-p", &free_udp_port().to_string()])
        .args(["-m", "1", "-nostdin", "-timeout", "15s", "-trace_msg"])
        .arg("-message_file")
        .arg(&messages)
        .arg(format!("127.0.0.1:{sip_port}"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run sipp ({e}): apt-get install sip-tester"));
    Sipp {
        child,
        messages,
        _dir: dir,
    }
}

impl Sipp {
    /// The exit status once sipp has ended (`None` while it runs).
    pub fn try_wait(&mut self) -> Option<bool> {
        self.child.try_wait().ok().flatten().map(|s| s.success())
    }

    /// The status codes of the responses to the INVITE sipp received, in
    /// order.
    pub fn invite_responses(&self) -> Vec<u16> {
        let text = std::fs::read_to_string(&self.messages).unwrap_or_default();
        let mut out = Vec::new();
        for block in text.split("message received") {
            let block = block.split("\n-----").next().unwrap_or("");
            let Some(status) = block.lines().find_map(|l| {
                l.strip_prefix("SIP/2.0 ")
                    .and_then(|r| r.get(..3))
                    .and_then(|c| c.parse::<u16>().ok())
            }) else {
                continue;
            };
            if block
                .lines()
                .any(|l| l.to_ascii_lowercase().starts_with("cseq:") && l.contains("INVITE"))
            {
                out.push(status);
            }
        }
        out
    }
}

/// The sipp scenarios shipped with the Asterisk tarball (in the tree, or
/// beside the tarball in `../shared/asterisk/sipp/`).
pub fn sipp_scenario(tree: &Path, name: &str) -> PathBuf {
    let in_tree = tree.join("sipp").join(name);
    if in_tree.is_file() {
        return in_tree;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("shared")
        .join("asterisk")
        .join("sipp")
        .join(name)
}
