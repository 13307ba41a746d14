//! `corral sim-node` as a process: flags, a dialplan file, and serving
//! until it is stopped.

mod sim_util;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use serde_json::json;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The process serves ARI and the control API with the flags given: port 0,
/// credentials, the asterisk id, a dialplan file, the upstream model and the
/// endpoint scripts.
#[tokio::test]
async fn sim_node_process_serves_until_stopped() {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(
        file,
        "; rooms only\n[from-proxy]\nexten => _room.,1,Stasis(confapp,conference,${{EXTEN:4}})"
    )
    .expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["sim-node", "--id", "cli1", "--listen", "127.0.0.1:0"])
        .args([
            "--username",
            "u",
            "--password",
            "p",
            "--asterisk-id",
            "02:00:00:00:00:42",
        ])
        .args(["--upstream", "relay", "--version", "20.0", "--seed", "7"])
        .args([
            "--endpoint",
            "alice=answer:50:2000",
            "--endpoint",
            "bob=unavailable:0",
            "--default-endpoint",
            "busy:100",
        ])
        .arg("--dialplan")
        .arg(file.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn corral sim-node");
    let stdout = child.stdout.take().expect("stdout");
    let proc = Proc(child);
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .expect("join")
    .expect("first line");
    // "cli1 listening on 127.0.0.1:PORT (ARI at ...)"
    let addr = line
        .split_whitespace()
        .nth(3)
        .expect("address in the first line")
        .to_string();
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();

    let ping = http
        .get(format!("{base}/ari/asterisk/ping"))
        .basic_auth("u", Some("p"))
        .send()
        .await
        .expect("ping");
    assert_eq!(ping.status().as_u16(), 200);
    let body: serde_json::Value = ping.json().await.expect("json");
    assert_eq!(body["asterisk_id"], "02:00:00:00:00:42");
    let denied = http
        .get(format!("{base}/ari/asterisk/ping"))
        .basic_auth("corral", Some("corral"))
        .send()
        .await
        .expect("ping");
    assert_eq!(denied.status().as_u16(), 401);

    let info: serde_json::Value = http
        .get(format!("{base}/sim/info"))
        .send()
        .await
        .expect("info")
        .json()
        .await
        .expect("json");
    assert_eq!(info["version"], "20.0.0");
    let upstream: serde_json::Value = http
        .get(format!("{base}/sim/upstream"))
        .send()
        .await
        .expect("up")
        .json()
        .await
        .expect("json");
    assert_eq!(upstream["on_302"], "relay");
    let endpoints: serde_json::Value = http
        .get(format!("{base}/sim/endpoints"))
        .send()
        .await
        .expect("endpoints")
        .json()
        .await
        .expect("json");
    assert_eq!(
        endpoints,
        json!({
            "default": {"action": "busy", "after_ms": 100},
            "endpoints": {
                "alice": {"action": "answer", "after_ms": 50, "hangup_after_ms": 2000},
                "bob": {"action": "unavailable", "after_ms": 0},
            },
        })
    );
    let call = |exten: &str| {
        http.post(format!("{base}/sim/calls"))
            .json(&json!({"exten": exten, "caller": "1"}))
            .send()
    };
    assert_eq!(call("conf-a").await.expect("call").status().as_u16(), 404);
    let ok = call("roomA1").await.expect("call");
    assert_eq!(ok.status().as_u16(), 201);
    drop(proc);
    assert!(
        http.get(format!("{base}/sim/stats")).send().await.is_err(),
        "stopped"
    );
}

/// Bad flags are refused with a message, before anything listens.
#[test]
fn bad_flags_are_refused() {
    for args in [
        vec!["sim-node", "--id", "x", "--upstream", "teleport"],
        vec!["sim-node", "--id", "x", "--rest-error-rate", "3"],
        vec!["sim-node", "--id", "x", "--endpoint", "alice=sing"],
        vec!["sim-node", "--id", "x", "--endpoint", "alice"],
        vec![
            "sim-node",
            "--id",
            "x",
            "--default-endpoint",
            "answer:1:2:3",
        ],
        vec![
            "sim-node",
            "--id",
            "x",
            "--dialplan",
            "/nonexistent/dialplan",
        ],
        vec!["sim-node"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(&args)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!out.stderr.is_empty(), "{args:?} said nothing");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["sim-node", "--help"])
        .output()
        .expect("help");
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--id",
        "--listen",
        "--username",
        "--password",
        "--upstream",
        "--dialplan",
        "--refer",
        "--asterisk-id",
        "--rest-error-rate",
        "--endpoint",
        "--default-endpoint",
        "unavailable:MS",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}
