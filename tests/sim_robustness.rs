//! Bad input never panics a node, and the fault knobs do what the README
//! says. Every test ends by checking the node still answers ping.

mod sim_util;
mod support;

use corral::sim::{Faults, SimConfig, SimNode};
use serde_json::json;
use sim_util::{Ari, DEADLINE, Events, start};
use support::eventually;

async fn still_serving(ari: &Ari) {
    let r = ari.get("/ari/asterisk/ping").await;
    assert_eq!(r.status, 200, "node stopped answering ping: {}", r.text);
}

async fn raw(ari: &Ari, method: &str, path: &str, ctype: &str, body: Vec<u8>) -> (u16, String) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let r = ari
        .http
        .request(m, format!("{}{}", ari.base, path))
        .basic_auth("corral", Some("corral"))
        .header("content-type", ctype)
        .body(body)
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// Malformed JSON, wrong types, unknown ids, huge and non-UTF-8 values: each
/// gets a 4xx with a JSON message, and the node keeps serving.
#[tokio::test]
async fn bad_input_gets_4xx_and_the_node_keeps_serving() {
    let node = start("robust").await;
    let ari = Ari::new(&node);
    let _ev = Events::connect(&node, "corral", false).await;
    let json_ct = "application/json";

    // The control API.
    for body in [
        b"{not json".to_vec(),
        b"[]".to_vec(),
        b"{\"exten\": 5}".to_vec(),
        b"{\"caller\": \"x\"}".to_vec(),
        b"{\"exten\": \"a\", \"surprise\": 1}".to_vec(),
        format!("{{\"exten\": \"{}\"}}", "a".repeat(10_000)).into_bytes(),
        b"{\"exten\": \"a\\u0000b\"}".to_vec(),
        vec![0xff, 0xfe, 0xfd],
    ] {
        let (s, text) = raw(&ari, "POST", "/sim/calls", json_ct, body).await;
        assert_eq!(s, 400, "{text}");
        assert!(text.contains("message"));
    }
    let (s, _) = raw(&ari, "POST", "/sim/calls", json_ct, vec![b' '; 100_000]).await;
    assert_eq!(s, 413);
    let (s, _) = raw(
        &ari,
        "PUT",
        "/sim/faults",
        json_ct,
        b"{\"rest_error_rate\": 2}".to_vec(),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = raw(
        &ari,
        "PUT",
        "/sim/upstream",
        json_ct,
        b"{\"on_302\": \"teleport\"}".to_vec(),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = raw(
        &ari,
        "PUT",
        "/sim/endpoints/x",
        json_ct,
        b"{\"action\": \"sing\"}".to_vec(),
    )
    .await;
    assert_eq!(s, 400);

    // ARI bodies and parameters.
    let (s, text) = raw(
        &ari,
        "POST",
        "/ari/bridges",
        json_ct,
        b"{\"type\": ".to_vec(),
    )
    .await;
    assert_eq!(
        (s, text.as_str()),
        (400, "{\"message\":\"Error parsing request body\"}")
    );
    let (s, _) = raw(
        &ari,
        "POST",
        "/ari/bridges",
        "application/x-www-form-urlencoded",
        b"name=\xff".to_vec(),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = raw(&ari, "POST", "/ari/bridges", json_ct, vec![b' '; 50_000]).await;
    assert_eq!(s, 413);
    assert_eq!(
        ari.post("/ari/channels/x/redirect?endpoint=%FF%FE")
            .await
            .status,
        400
    );
    assert_eq!(ari.get("/ari/channels/%FF%FE").await.status, 404);
    let long = "x".repeat(8_000);
    assert_eq!(ari.get(&format!("/ari/channels/{long}")).await.status, 404);
    assert_eq!(
        ari.post(&format!("/ari/channels/x/redirect?endpoint={long}"))
            .await
            .status,
        404
    );
    assert_eq!(
        ari.post(&format!("/ari/bridges/b1?name={long}"))
            .await
            .status,
        200
    );
    assert_eq!(
        ari.get(&format!("/ari/applications/{long}")).await.status,
        404
    );
    assert_eq!(
        ari.get(&format!("/ari/events?app={long}")).await.status,
        500
    );

    // Unknown ids everywhere.
    for (m, p) in [
        ("GET", "/ari/channels/ghost"),
        ("DELETE", "/ari/channels/ghost"),
        ("POST", "/ari/channels/ghost/answer"),
        ("POST", "/ari/channels/ghost/continue"),
        ("POST", "/ari/channels/ghost/move?app=x"),
        ("GET", "/ari/bridges/ghost"),
        ("DELETE", "/ari/bridges/ghost"),
        ("POST", "/ari/bridges/ghost/removeChannel?channel=x"),
        ("POST", "/ari/bridges/ghost/moh"),
        ("GET", "/ari/applications/ghost"),
        ("DELETE", "/sim/calls/ghost"),
    ] {
        let r = ari.send(m, p, None).await;
        assert_eq!(r.status, 404, "{m} {p}: {}", r.text);
        assert!(!r.message().is_empty());
    }

    // A call with odd but legal values still works.
    let r = ari
        .send(
            "POST",
            "/sim/calls",
            Some(json!({"exten": "ü-conf", "caller": "\"Zoë\" <+1>"})),
        )
        .await;
    assert_eq!(
        r.status, 404,
        "a non-ASCII first character: no extension matches"
    );
    let r = ari
        .send(
            "POST",
            "/sim/calls",
            Some(json!({"exten": "conf-ok", "caller": "Zoë"})),
        )
        .await;
    assert_eq!(r.status, 201);
    still_serving(&ari).await;
    assert!(node.is_running());
}

/// `rest_error_rate` fails ARI REST calls with 500 (never the control API);
/// with the same seed, two nodes fail the same requests.
#[tokio::test]
async fn rest_faults_are_seeded_and_reversible() {
    let seed = support::seed("rest_faults_are_seeded_and_reversible");
    let mut patterns = Vec::new();
    for id in ["f1", "f2"] {
        let mut cfg = SimConfig::new(id);
        cfg.seed = Some(seed);
        cfg.faults = Faults {
            rest_error_rate: 0.5,
            ..Faults::default()
        };
        let node = SimNode::start(cfg).await.expect("start");
        let ari = Ari::new(&node);
        let mut pattern = Vec::new();
        for _ in 0..40 {
            let r = ari.get("/ari/asterisk/ping").await;
            assert!(r.status == 200 || (r.status == 500 && r.message() == "Internal Server Error"));
            pattern.push(r.status);
        }
        assert_eq!(ari.get("/sim/stats").await.status, 200);
        let put = ari
            .send("PUT", "/sim/faults", Some(json!({"rest_error_rate": 0.0})))
            .await;
        assert_eq!(put.body["rest_error_rate"], 0.0);
        still_serving(&ari).await;
        let failed = pattern.iter().filter(|s| **s == 500).count() as u64;
        assert_eq!(ari.stats().await["rest_faults"].as_u64(), Some(failed));
        patterns.push(pattern);
    }
    assert_eq!(patterns[0], patterns[1], "seed {seed}");
}

/// duplicate_events = 1 writes every event twice; event_delay_ms keeps the
/// order; close_websockets closes the sockets now, and new calls then fail
/// Stasis() until a client reconnects (nothing is replayed).
#[tokio::test]
async fn event_faults_and_closing_websockets() {
    let node = start("evfaults").await;
    let ari = Ari::new(&node);
    let ev = Events::connect(&node, "corral", false).await;
    node.set_faults(Faults {
        duplicate_events: 1.0,
        event_delay_ms: 2,
        ..Faults::default()
    });
    let c = ari.call("conf-d", "1").await.body["channel_id"]
        .as_str()
        .expect("id")
        .to_string();
    ev.wait_nth("StasisStart", 2).await;
    assert_eq!(ari.delete(&format!("/ari/channels/{c}")).await.status, 204);
    ev.wait_nth("StasisEnd", 2).await;
    assert_eq!(
        ev.types(),
        vec![
            "StasisStart",
            "StasisStart",
            "ChannelHangupRequest",
            "ChannelHangupRequest",
            "StasisEnd",
            "StasisEnd"
        ]
    );
    node.set_faults(Faults::default());

    let r = ari
        .send(
            "PUT",
            "/sim/faults",
            Some(json!({"close_websockets": true})),
        )
        .await;
    assert_eq!(r.status, 200);
    ev.wait_closed().await;
    eventually(DEADLINE, "app inactive", || async {
        let app = ari.get("/ari/applications/corral").await;
        (app.status == 200).then_some(())
    })
    .await;
    let r = ari.call("conf-d", "2").await;
    assert_eq!(r.body["stasis"], "failed");
    let ev2 = Events::connect(&node, "corral", false).await;
    let r = ari.call("conf-d", "3").await;
    let s = ev2.wait("StasisStart").await;
    assert_eq!(s["channel"]["id"], r.body["channel_id"]);
    assert_eq!(ev2.all().len(), 1);
    still_serving(&ari).await;
}

/// The control API reports the node's identity and takes upstream and
/// endpoint settings at runtime.
#[tokio::test]
async fn control_api_reports_state() {
    let node = start("ctl").await;
    let ari = Ari::new(&node);
    let info = ari.get("/sim/info").await.body;
    assert_eq!(info["asterisk_id"], node.asterisk_id());
    assert_eq!(info["sip_host"], node.addr().to_string());
    let up = ari
        .send(
            "PUT",
            "/sim/upstream",
            Some(json!({"on_302": "relay", "follow_delay_ms": 1})),
        )
        .await;
    assert_eq!(
        (up.status, up.body["on_302"].as_str()),
        (200, Some("relay"))
    );
    assert_eq!(node.upstream().on_302, corral::sim::On302::Relay);
    let r = ari
        .send(
            "PUT",
            "/sim/endpoints/carol",
            Some(json!({"action": "ring"})),
        )
        .await;
    assert_eq!(r.status, 204);
    still_serving(&ari).await;
}

/// A websocket that falls further behind than its queue (here: a writer
/// slowed by event_delay_ms and a queue of 4) is closed, as Asterisk closes
/// a socket whose write times out; its app becomes inactive and the node
/// keeps serving.
#[tokio::test]
async fn a_socket_too_far_behind_is_cut_off() {
    let mut cfg = SimConfig::new("slow");
    cfg.event_queue = 4;
    cfg.faults = Faults {
        event_delay_ms: 200,
        ..Faults::default()
    };
    let node = SimNode::start(cfg).await.expect("start");
    let ari = Ari::new(&node);
    let ev = Events::connect(&node, "corral", false).await;
    for i in 0..10 {
        ari.call("conf-s", &i.to_string()).await;
    }
    ev.wait_closed().await;
    assert_eq!(ari.stats().await["websockets_cut"].as_u64(), Some(1));
    let r = ari.call("conf-s", "late").await;
    assert_eq!(r.body["stasis"], "failed");
    still_serving(&ari).await;
}

/// hang() is the in-process SIGSTOP: connections stay open but nothing is
/// answered (REST, control API, PING); resume() serves what waited.
#[tokio::test]
async fn a_hung_node_answers_nothing_until_resumed() {
    let node = start("hung").await;
    let ari = Ari::new(&node);
    let ev = Events::connect(&node, "corral", false).await;
    node.hang();
    assert!(node.is_hung());
    let waiting = {
        let ari = ari.clone();
        tokio::spawn(async move { ari.get("/ari/asterisk/ping").await.status })
    };
    ev.ping();
    // A negative check needs a bound: nothing may come back within it.
    let probe =
        tokio::time::timeout(std::time::Duration::from_millis(300), ari.get("/sim/stats")).await;
    assert!(probe.is_err(), "a hung node answered");
    assert!(!waiting.is_finished());
    assert_eq!(*ev.pongs.lock().expect("lock"), 0);
    assert!(!ev.is_closed());

    node.resume();
    assert_eq!(waiting.await.expect("task"), 200);
    eventually(DEADLINE, "PONG after resume", || async {
        (*ev.pongs.lock().expect("lock") > 0).then_some(())
    })
    .await;
    still_serving(&ari).await;
}

/// `event_latency_ms` (set at runtime with `PUT /sim/faults`) delays each
/// event without slowing the ones behind it, in order: 20 calls' events
/// all arrive about one latency later, where `event_delay_ms` would take
/// 20 latencies. Set back to 0, events flow at once again.
#[tokio::test]
async fn event_latency_delays_without_slowing_the_stream() {
    let node = start("latency").await;
    let ari = Ari::new(&node);
    let ev = Events::connect(&node, "corral", false).await;
    let r = ari
        .send("PUT", "/sim/faults", Some(json!({"event_latency_ms": 300})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["event_latency_ms"], 300);
    let t0 = std::time::Instant::now();
    let mut chans = Vec::new();
    for i in 0..20 {
        let c = ari.call("conf-l", &i.to_string()).await;
        chans.push(c.body["channel_id"].as_str().expect("channel").to_string());
    }
    ev.wait_nth("StasisStart", 20).await;
    let took = t0.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(300),
        "events came before their latency: {took:?}"
    );
    assert!(
        took < std::time::Duration::from_secs(3),
        "the latency slowed the stream like a delay: {took:?}"
    );
    let order: Vec<String> = ev
        .of_type("StasisStart")
        .iter()
        .filter_map(|e| e["channel"]["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(order, chans, "order is kept");
    let r = ari
        .send("PUT", "/sim/faults", Some(json!({"event_latency_ms": 0})))
        .await;
    assert_eq!(r.body["event_latency_ms"], 0);
    ari.call("conf-l", "after").await;
    ev.wait_nth("StasisStart", 21).await;
    still_serving(&ari).await;
}
