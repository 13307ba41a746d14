//! The operator commands as an operator runs them: the built `corral`
//! binary against an API served in the test (simulated nodes, a running
//! controller): tables for people, `--json` for scripts, the address and
//! token from flags or the environment, `drain --wait` that ends when the
//! node's last room is gone, and `watch` that shows events live.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::api::ApiServer;
use support::eventually;
use support::farm::{Backend, TestFarm};

const TOKEN: &str = "cli-test-token";
const DEADLINE: Duration = Duration::from_secs(15);

/// Runs `corral ARGS` with `CORRAL_API_URL`/`CORRAL_API_TOKEN` from `env`
/// (flags may override them), off the async runtime.
async fn corral(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corral"));
    cmd.args(args)
        .env_remove("CORRAL_API_URL")
        .env_remove("CORRAL_API_TOKEN")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().expect("corral runs"))
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "corral failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        stdout(o)
    );
    stdout(o)
}

/// Lands a call into `conf-<room>` and waits until the room has a member;
/// returns its owner.
async fn land(farm: &mut TestFarm, api: &ApiServer, room: &str, call_id: &str) -> String {
    farm.call(&format!("conf-{room}"), call_id).await;
    let (http, url) = (
        farm.http.clone(),
        format!("{}/v1/rooms/conference/{room}", api.url),
    );
    eventually(DEADLINE, "the call is a member of its room", || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let v: Value = http.get(url).send().await.ok()?.json().await.ok()?;
            (v["members"].as_u64()? >= 1).then(|| v["node"].as_str().unwrap().to_owned())
        }
    })
    .await
}

/// `rooms`, `room`, `nodes` print tables and `--json`; the address comes
/// from `--api` or `CORRAL_API_URL`; drain and undrain need the token and
/// say how to pass it when it is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_json_and_auth() {
    let seed = support::seed("tables_json_and_auth");
    let mut farm = TestFarm::start(2, Backend::Memory, seed).await;
    let api = ApiServer::start(&farm.ctrl, Some(TOKEN)).await;
    let owner = land(&mut farm, &api, "sales", "c1").await;
    let env = [("CORRAL_API_URL", api.url.as_str())];

    let out = ok(&corral(&["rooms"], &env).await);
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["NODE", "KIND", "NAME", "MEMBERS", "EPOCH"],
        "{out}"
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..4],
        [owner.as_str(), "conference", "sales", "1"],
        "{out}"
    );
    assert!(out.contains("1 rooms, 1 members"), "{out}");

    let out = ok(&corral(
        &["rooms", "--json", "--api", &api.url],
        &[("CORRAL_API_URL", "http://127.0.0.1:1")],
    )
    .await);
    let v: Value = serde_json::from_str(&out).expect("--json is JSON");
    assert_eq!(v["rooms"][0]["name"], "sales");
    assert_eq!(v["rooms"][0]["node"], owner.as_str());

    let out = ok(&corral(&["rooms", "--kind", "queue"], &env).await);
    assert!(out.contains("0 rooms"), "{out}");

    let out = ok(&corral(&["room", "conference", "sales"], &env).await);
    assert!(
        out.starts_with(&format!("conference sales on {owner}")),
        "{out}"
    );
    assert!(
        out.contains("CHANNEL") && out.contains("participant"),
        "{out}"
    );
    let out = ok(&corral(&["room", "conference", "sales", "--json"], &env).await);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["member_list"].as_array().unwrap().len(), 1, "{out}");

    let o = corral(&["room", "conference", "nosuch"], &env).await;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("room_not_found"));

    let out = ok(&corral(&["nodes"], &env).await);
    assert!(out.starts_with("NODE"), "{out}");
    for id in ["ast1", "ast2"] {
        let line = out.lines().find(|l| l.starts_with(id)).expect(id);
        assert!(line.contains("UP") && line.contains("yes"), "{line}");
    }
    let v: Value = serde_json::from_str(&ok(&corral(&["nodes", "--json"], &env).await)).unwrap();
    assert_eq!(v["nodes"].as_array().unwrap().len(), 2);

    // No token: refused, with the hint.
    let o = corral(&["drain", "ast1"], &env).await;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unauthorized") && err.contains("CORRAL_API_TOKEN"),
        "{err}"
    );
    assert!(!err.contains(TOKEN));
    // Token from the environment, then from the flag.
    let out = ok(&corral(&["drain", "ast1"], &[env[0], ("CORRAL_API_TOKEN", TOKEN)]).await);
    assert!(out.contains("ast1 draining: state draining"), "{out}");
    let out = ok(&corral(&["undrain", "ast1", "--token", TOKEN, "--json"], &env).await);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["state"].as_str(), v["draining"].as_bool()),
        (Some("up"), Some(false))
    );
    // Unreachable API: a clear error.
    let o = corral(&["nodes", "--api", "http://127.0.0.1:1"], &[]).await;
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach the corral API"));
    farm.stop().await;
}

/// `drain --wait` returns only once the node's last room is gone: it is
/// still waiting while the call is up, and ends after the caller hangs up
/// and the room is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_wait_ends_when_the_last_room_is_gone() {
    let seed = support::seed("drain_wait_ends_when_the_last_room_is_gone");
    let mut farm = TestFarm::start(2, Backend::Memory, seed).await;
    let api = ApiServer::start(&farm.ctrl, Some(TOKEN)).await;
    let owner = land(&mut farm, &api, "ops", "c-drain").await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args([
            "drain",
            &owner,
            "--wait",
            "--poll-ms",
            "50",
            "--api",
            &api.url,
            "--token",
            TOKEN,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The progress line shows the room left. stderr is read to its end
    // (a closed pipe would break the progress line).
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    let drained_err = tokio::task::spawn_blocking(move || {
        let mut r = BufReader::new(stderr);
        let mut buf = Vec::new();
        r.read_until(b']', &mut buf).unwrap();
        r.read_until(b'\r', &mut buf).unwrap();
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut r, &mut rest);
        rest
    });
    let progress = tokio::time::timeout(DEADLINE, rx)
        .await
        .expect("progress shown")
        .unwrap();
    assert!(progress.contains("1 rooms left"), "{progress:?}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "drain --wait ended with a room left"
    );
    // The caller hangs up: the room empties, lingers, is released.
    let idx = farm.sims.iter().position(|s| s.id() == owner).unwrap();
    let calls = farm.live_calls().await;
    let (_, call) = calls
        .iter()
        .find(|(i, _)| *i == idx)
        .expect("the call is on its owner");
    let call_id = call["call_id"].as_str().unwrap().to_owned();
    let r = farm
        .http
        .delete(format!("{}/sim/calls/{call_id}", farm.sims[idx].base_url()))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let err = drained_err.await.unwrap();
    assert!(out.status.success(), "drain --wait failed: {err}");
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{owner} drained: state draining, 0 rooms")),
        "{text}"
    );
    farm.stop().await;
}

/// `watch --json` prints each event as it happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_shows_events_live() {
    let seed = support::seed("watch_shows_events_live");
    let farm = TestFarm::start(2, Backend::Memory, seed).await;
    let api = ApiServer::start(&farm.ctrl, None).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["watch", "--json", "--count", "2", "--api", &api.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stderr).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    assert!(first.starts_with("watching"), "{first}");
    let http = farm.http.clone();
    let r = http
        .post(format!("{}/v1/rooms/queue/support/placement", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{}/v1/nodes/ast2/drain", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let text = ok(&out);
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["event"], "room_placed", "{text}");
    assert_eq!(events[0]["data"]["room"]["name"], "support");
    assert_eq!(events[1]["event"], "node_draining");
    assert_eq!(events[1]["data"]["node"], "ast2");
    farm.stop().await;
}

/// The queue's detail from the API, once `ok` holds.
async fn queue_until(
    api: &ApiServer,
    name: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let http = reqwest::Client::new();
    let url = format!("{}/v1/queues/{name}", api.url);
    eventually(DEADLINE, what, || {
        let (http, url, ok) = (http.clone(), url.clone(), &ok);
        async move {
            let v: Value = http.get(url).send().await.ok()?.json().await.ok()?;
            ok(&v).then_some(v)
        }
    })
    .await
}

/// `queues` and `queue NAME` (tables and `--json`) and member management
/// through the built binary: members added paused (one from a template,
/// flags after the sub-command), updated, a caller waiting shows in both
/// tables, `unpause` hands it to the member, `pause` and `remove` answer
/// the agent; without the token, for an unknown agent or queue, the
/// command fails with the API's code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_commands() {
    let seed = support::seed("queue_commands");
    let mut farm = TestFarm::start(2, Backend::Memory, seed).await;
    let api = ApiServer::start(&farm.ctrl, Some(TOKEN)).await;
    let url = [("CORRAL_API_URL", api.url.as_str())];
    let env = [url[0], ("CORRAL_API_TOKEN", TOKEN)];

    let out = ok(&corral(&["queues"], &url).await);
    assert!(out.starts_with("QUEUE"), "{out}");
    assert!(out.contains("0 queues, 0 waiting"), "{out}");

    let out = ok(&corral(
        &["queue", "sales", "add", "alice", "PJSIP/alice", "--paused"],
        &env,
    )
    .await);
    assert_eq!(
        out.trim(),
        "alice added to queue sales: static PJSIP/alice, state paused (paused)"
    );
    let out = ok(&corral(
        &[
            "queue",
            "sales",
            "add",
            "bob",
            "PJSIP/{agent}@kamailio",
            "--paused",
            "--token",
            TOKEN,
            "--json",
        ],
        &url,
    )
    .await);
    let v: Value = serde_json::from_str(&out).expect("--json is JSON");
    assert_eq!(
        (v["endpoint"].as_str(), v["paused"].as_bool()),
        (Some("PJSIP/bob@kamailio"), Some(true)),
        "{out}"
    );
    let out = ok(&corral(&["queue", "sales", "add", "alice", "PJSIP/alice2"], &env).await);
    assert!(
        out.starts_with("alice updated in queue sales: static PJSIP/alice2"),
        "{out}"
    );
    // Without the token: refused, with the hint.
    let o = corral(&["queue", "sales", "pause", "alice"], &url).await;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unauthorized") && err.contains("CORRAL_API_TOKEN"),
        "{err}"
    );
    // A bad endpoint: the API's message.
    let o = corral(&["queue", "sales", "add", "carl", "carl"], &env).await;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad_endpoint") && err.contains("Tech/resource"),
        "{err}"
    );

    // A caller waits (both members are paused).
    farm.call("queue-sales", "qc1").await;
    let d = queue_until(&api, "sales", "the caller waits", |d| {
        d["callers"].as_array().is_some_and(|c| c.len() == 1)
    })
    .await;
    let node = d["node"].as_str().unwrap().to_owned();
    let channel = d["callers"][0]["channel"].as_str().unwrap().to_owned();

    let out = ok(&corral(&["queues"], &url).await);
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        [
            "QUEUE",
            "NODE",
            "WAITING",
            "LONGEST",
            "AVAILABLE",
            "BUSY",
            "WRAP-UP",
            "PAUSED",
            "ANSWERED",
            "ABANDONED"
        ],
        "{out}"
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[..3], ["sales", node.as_str(), "1"], "{out}");
    assert_eq!(row[4..], ["0", "0", "0", "2", "0", "0"], "{out}");
    assert!(out.contains("1 queues, 1 waiting"), "{out}");
    let v: Value = serde_json::from_str(&ok(&corral(&["queues", "--json"], &url).await)).unwrap();
    assert_eq!(v["queues"][0]["waiting"], 1, "{v}");

    let out = ok(&corral(&["queue", "sales"], &url).await);
    assert!(
        out.starts_with(&format!("queue sales on {node}: longest-idle")),
        "{out}"
    );
    assert!(out.contains("1 waiting (longest "), "{out}");
    let caller_row = out
        .lines()
        .skip_while(|l| !l.starts_with("POSITION"))
        .nth(1)
        .unwrap_or_default();
    assert_eq!(
        caller_row.split_whitespace().take(3).collect::<Vec<_>>(),
        ["1", channel.as_str(), "1000"],
        "{out}"
    );
    let agents: Vec<Vec<&str>> = out
        .lines()
        .skip_while(|l| !l.starts_with("AGENT"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(agents.len(), 2, "{out}");
    assert_eq!(
        agents[0][..4],
        ["alice", "static", "paused", "PJSIP/alice2"],
        "{out}"
    );
    assert_eq!(
        agents[1][..4],
        ["bob", "static", "paused", "PJSIP/bob@kamailio"],
        "{out}"
    );
    let v: Value =
        serde_json::from_str(&ok(&corral(&["queue", "sales", "--json"], &url).await)).unwrap();
    assert_eq!(v["callers"][0]["position"], 1, "{v}");
    assert_eq!(v["agents"].as_array().unwrap().len(), 2, "{v}");

    // Unpaused, alice takes the caller.
    let out = ok(&corral(&["queue", "sales", "unpause", "alice"], &env).await);
    assert!(out.starts_with("alice unpaused in queue sales"), "{out}");
    queue_until(&api, "sales", "alice busy with the caller", |d| {
        d["agents"][0]["state"] == "busy" && d["agents"][0]["caller"] == channel.as_str()
    })
    .await;
    let out = ok(&corral(&["queue", "sales"], &url).await);
    assert!(out.contains("no caller waiting"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("alice") && l.contains("busy") && l.ends_with(&channel)),
        "{out}"
    );

    let out = ok(&corral(&["queue", "sales", "pause", "alice", "--json"], &env).await);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["state"].as_str(), v["paused"].as_bool()),
        (Some("busy"), Some(true))
    );
    let out = ok(&corral(&["queue", "sales", "remove", "bob"], &env).await);
    assert!(out.starts_with("bob removed from queue sales"), "{out}");
    let o = corral(&["queue", "sales", "remove", "bob"], &env).await;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("agent_not_found"));
    let o = corral(&["queue", "nosuch"], &url).await;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("queue_not_found"));
    farm.stop().await;
}
