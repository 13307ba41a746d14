//! `corral serve` as an operator runs it: the real binary, a TOML file with
//! environment overrides, simulated nodes, the room map over HTTP, and a
//! graceful stop on SIGTERM that hangs up no call and destroys no bridge.

mod support;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use corral::sim::{SimConfig, SimNode};
use support::eventually;

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(sims: &[SimNode], extra: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "farm = \"servetest\"\n{extra}\n[controller]\nlinger_ms = 200\nping_interval_ms = 100"
    )
    .unwrap();
    for s in sims {
        writeln!(
            f,
            "[[nodes]]\nid = \"{}\"\nari_url = \"{}\"\nusername = \"corral\"\nsip_host = \"{}\"",
            s.id(),
            s.base_url(),
            s.addr()
        )
        .unwrap();
    }
    f
}

/// A bad configuration stops the start with an error that names the key.
#[test]
fn a_bad_config_names_the_key() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "farm = \"x\"\n[[nodes]]\nid = \"ast 1\"\nari_url = \"http://127.0.0.1:1\"\nusername = \"u\"\nsip_host = \"h\"").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["serve", "--config"])
        .arg(f.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nodes[0].id"), "{err}");
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "farm = \"x\"\n[controller]\nlinger = 5").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["serve", "--config"])
        .arg(f.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("linger"), "{err}");
}

/// Calls through the real binary end up co-located; `GET /v1/rooms` shows
/// the map; SIGTERM stops corral and leaves every call and bridge alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_colocates_and_stops_gracefully() {
    let mut sims = Vec::new();
    for i in 1..=2 {
        sims.push(
            SimNode::start(SimConfig::new(format!("ast{i}")))
                .await
                .unwrap(),
        );
    }
    let port = free_port();
    let cfg = config(&sims, "");
    let child = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["serve", "--config"])
        .arg(cfg.path())
        .env("CORRAL_API_LISTEN", format!("127.0.0.1:{port}"))
        .env("CORRAL_NODE_AST1_PASSWORD", "corral")
        .env("CORRAL_NODE_AST2_PASSWORD", "corral")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let serve = Serve(child);
    let http = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{port}");
    // Ready, and streaming both nodes (`/readyz` is 200 from the first):
    // a call on a node corral does not stream yet is refused there.
    eventually(
        Duration::from_secs(20),
        "corral streaming both nodes",
        || async {
            let r = http.get(format!("{api}/readyz")).send().await.ok()?;
            if !r.status().is_success() {
                return None;
            }
            let v: serde_json::Value = r.json().await.ok()?;
            let nodes = v["nodes"].as_array()?;
            (nodes.len() == 2 && nodes.iter().all(|n| n["streaming"] == true)).then_some(())
        },
    )
    .await;
    for i in 0..6 {
        let node = &sims[i % 2];
        let r = http
            .post(format!("{}/sim/calls", node.base_url()))
            .json(&serde_json::json!({"exten": "conf-lobby", "caller": "100", "call_id": format!("s{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    let rooms: serde_json::Value =
        eventually(Duration::from_secs(10), "room with 6 members", || async {
            let v: serde_json::Value = http
                .get(format!("{api}/v1/rooms"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (v["rooms"][0]["members"] == 6).then_some(v)
        })
        .await;
    assert_eq!(rooms["rooms"][0]["kind"], "conference");
    assert_eq!(rooms["rooms"][0]["name"], "lobby");
    let owner = rooms["rooms"][0]["node"].as_str().unwrap().to_string();
    let owner_sim = sims.iter().find(|s| s.id() == owner).unwrap();
    let bridges = |s: &SimNode| {
        let http = http.clone();
        let url = format!("{}/ari/bridges", s.base_url());
        async move {
            let v: Vec<serde_json::Value> = http
                .get(url)
                .basic_auth("corral", Some("corral"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v
        }
    };
    // The member is recorded before the channel is bridged: wait for ARI.
    let before = eventually(Duration::from_secs(10), "6 calls in the bridge", || async {
        let b = bridges(owner_sim).await;
        (b.len() == 1 && b[0]["channels"].as_array().is_some_and(|c| c.len() == 6)).then_some(b)
    })
    .await;

    // SIGTERM: a graceful stop.
    let pid = serve.0.id();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let mut serve = serve;
    let status = eventually(Duration::from_secs(15), "corral exits", || {
        let s = serve.0.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(status.success(), "corral exited with {status}");
    assert_eq!(
        bridges(owner_sim).await,
        before,
        "a bridge changed because corral stopped"
    );
    let hung: u64 = sims.iter().map(|s| s.stats().hungup_by_ari).sum();
    assert_eq!(hung, 0, "corral hung up a call while stopping");
}
