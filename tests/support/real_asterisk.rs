//! One real Asterisk 22.10.1 for tests that dial it directly with sipp
//! (no Kamailio, no corral), with a given `extensions.conf`, and the sipp
//! side of such calls. The node is started the one way the tests start a
//! real Asterisk: [`corral::testbed::Install::locate`] and
//! [`AsteriskNode::start_with_dialplan`] (every other file is the shipped
//! one from `deploy/`, rendered), so it is found, configured and stopped
//! like the real farm's nodes. Every process started here is killed when
//! its guard drops, a failing test included. Without an Asterisk the test
//! fails and says how to get one: it is never skipped.
#![allow(dead_code)]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use corral::testbed::render::{ARI_PASSWORD, ARI_USER, NodeAddrs};
use corral::testbed::{AsteriskNode, Install, free_port};

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free udp port")
        .port()
}

/// One running Asterisk and its directory; stopped when dropped (the node
/// first, then the directory).
pub struct RealAsterisk {
    /// The node.
    pub node: AsteriskNode,
    /// The install it runs from (its `sipp/` scenarios among its files).
    pub install: Install,
    /// SIP (UDP) port on 127.0.0.1.
    pub sip_port: u16,
    _dir: tempfile::TempDir,
}

/// Starts one node with `extensions` as its `extensions.conf`; returns
/// once its ARI answers `GET /asterisk/ping`. Panics with the way to get
/// an Asterisk when there is none.
pub async fn start_asterisk(extensions: &Path) -> RealAsterisk {
    let install = Install::locate().unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(extensions)
        .unwrap_or_else(|e| panic!("reading {}: {e}", extensions.display()));
    // Short paths: the CLI socket path must stay under ~90 characters.
    let dir = tempfile::Builder::new()
        .prefix("ast")
        .tempdir_in("/tmp")
        .expect("instance dir");
    let addrs = NodeAddrs {
        id: "ast1".into(),
        bind: "127.0.0.1".into(),
        sip_port: free_port().expect("free port"),
        http_port: free_port().expect("free port"),
        entity_id: "02:00:00:fd:00:01".into(),
    };
    let sip_port = addrs.sip_port;
    // sipp calls from 127.0.0.1: the proxy's endpoint (`from-proxy`).
    let node = AsteriskNode::start_with_dialplan(
        &install,
        dir.path(),
        addrs,
        "127.0.0.1",
        "127.0.0.1:9",
        &text,
    )
    .await
    .unwrap_or_else(|e| panic!("the real Asterisk did not start: {e}"));
    RealAsterisk {
        node,
        install,
        sip_port,
        _dir: dir,
    }
}

impl RealAsterisk {
    /// `ws://` URL of the event websocket for `app`.
    pub fn events_url(&self, app: &str, subscribe_all: bool) -> String {
        self.node.events_url(app, subscribe_all)
    }

    /// `http://127.0.0.1:PORT` (ARI under `/ari`).
    pub fn base_url(&self) -> String {
        self.node.ari_url()
    }

    /// The ARI user and password.
    pub fn credentials(&self) -> (&'static str, &'static str) {
        (ARI_USER, ARI_PASSWORD)
    }

    /// The node's `log/messages.log` (verbose 3: every `Executing`).
    pub fn messages_log(&self) -> PathBuf {
        self.node.messages_log()
    }

    /// Runs one CLI command (`asterisk -rx`) and returns its output.
    pub fn rx(&self, command: &str) -> String {
        self.node.rx(command).expect("asterisk -rx")
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

/// The sipp scenarios shipped with the Asterisk tarball (in the unpacked
/// tree, or beside the tarball in `../shared/asterisk/sipp/`).
pub fn sipp_scenario(install: &Install, name: &str) -> PathBuf {
    if let Some(tree) = &install.tree {
        let in_tree = tree.join("sipp").join(name);
        if in_tree.is_file() {
            return in_tree;
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("shared")
        .join("asterisk")
        .join("sipp")
        .join(name)
}
