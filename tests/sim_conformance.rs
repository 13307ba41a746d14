//! The simulator against the official ARI spec (`../shared/ari-spec`, read
//! at test time): every operation it serves exists in the spec with the same
//! method, parameters and statuses, and every event and model it emits in a
//! scenario carries the spec's required fields with the spec's types (and
//! no field the spec does not know).

mod sim_util;
mod support;

use std::collections::BTreeSet;

use corral::sim::{EndpointScript, routes};
use serde_json::Value;
use sim_util::spec::Spec;
use sim_util::{Ari, Events, enc, start};

/// Every served operation is in the spec: path, method, nickname, each
/// parameter, and each status (success or listed error). Statuses the spec
/// omits but Asterisk gives are listed apart as quirks, each documented.
#[test]
fn route_table_matches_the_spec() {
    let spec = Spec::load();
    let mut problems = Vec::new();
    for r in routes() {
        let Some(op) = spec.ops.get(&(r.path.to_string(), r.method.to_string())) else {
            problems.push(format!("{} {} is not in the spec", r.method, r.path));
            continue;
        };
        if op["nickname"] != r.nickname {
            problems.push(format!(
                "{} {}: nickname {} vs spec {}",
                r.method, r.path, r.nickname, op["nickname"]
            ));
        }
        let spec_params: Vec<&str> = op["parameters"]
            .as_array()
            .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        for p in r.params {
            if !spec_params.contains(p) {
                problems.push(format!("{} {}: param {p} not in spec", r.method, r.path));
            }
        }
        // Required spec parameters must all be read.
        for p in op["parameters"].as_array().into_iter().flatten() {
            let name = p["name"].as_str().unwrap_or("");
            if p["required"] == true && p["paramType"] != "body" && !r.params.contains(&name) {
                problems.push(format!("{} {}: required {name} not read", r.method, r.path));
            }
        }
        let mut allowed: BTreeSet<u16> = op["errorResponses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| match &e["code"] {
                Value::Number(n) => n.as_u64().map(|n| n as u16),
                Value::String(s) => s.parse().ok(),
                _ => None,
            })
            .collect();
        let success = match (op["nickname"].as_str(), op["responseClass"].as_str()) {
            (Some("eventWebsocket"), _) => 101,
            (_, Some("void")) => 204,
            _ => 200,
        };
        allowed.insert(success);
        for s in r.statuses {
            if !allowed.contains(s) {
                problems.push(format!(
                    "{} {}: status {s} not in spec {allowed:?}",
                    r.method, r.path
                ));
            }
        }
        if !r.statuses.contains(&success) {
            problems.push(format!(
                "{} {}: success {success} missing",
                r.method, r.path
            ));
        }
        for (q, why) in r.quirks {
            assert!(!why.is_empty());
            if allowed.contains(q) {
                problems.push(format!(
                    "{} {}: quirk {q} is in the spec; list it as a status",
                    r.method, r.path
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "route table vs spec:\n{}",
        problems.join("\n")
    );
}

/// Every route in the table is really served: a request with unknown ids
/// reaches its handler (no fallback 404 `Resource not found`, no 405), and
/// the status it gets is one the table declares.
#[tokio::test]
async fn every_listed_route_is_served() {
    let node = start("conf-served").await;
    let ari = Ari::new(&node);
    for r in routes() {
        let path = r
            .path
            .replace("{channelId}", "no-such-channel")
            .replace("{bridgeId}", "no-such-bridge")
            .replace("{applicationName}", "no-such-app");
        let resp = ari.send(r.method, &format!("/ari{path}"), None).await;
        assert_ne!(resp.status, 405, "{} {path}", r.method);
        assert!(
            !(resp.status == 404 && resp.message() == "Resource not found"),
            "{} {path} is not routed",
            r.method
        );
        let declared =
            r.statuses.contains(&resp.status) || r.quirks.iter().any(|(q, _)| *q == resp.status);
        assert!(
            declared,
            "{} {path} answered {} {}",
            r.method, resp.status, resp.text
        );
        if resp.status == 204 {
            assert!(resp.text.is_empty(), "204 has an empty body");
        } else if resp.status >= 400 {
            assert!(
                !resp.message().is_empty(),
                "{} {path}: error without message: {}",
                r.method,
                resp.text
            );
        }
    }
}

/// A tour through every event type the simulator emits; each event and each
/// REST model returned is validated against the spec.
#[tokio::test]
async fn emitted_events_and_models_match_the_spec() {
    let spec = Spec::load();
    let a = start("conf-a").await;
    let b = start("conf-b").await;
    a.set_endpoint("alice", EndpointScript::answer(0));
    let ari = Ari::new(&a);
    let ari_b = Ari::new(&b);
    let main = Events::connect(&a, "corral", false).await;
    let watcher = Events::connect(&a, "watcher", true).await;
    let on_b = Events::connect(&b, "corral", false).await;
    let mut models: Vec<(&str, Value)> = Vec::new();

    let mut chans = Vec::new();
    for exten in ["conf-r1", "conf-r1", "queue-q"] {
        let r = ari.call(exten, "100").await;
        assert_eq!(r.status, 201, "{}", r.text);
        chans.push(
            r.body["channel_id"]
                .as_str()
                .expect("channel id")
                .to_string(),
        );
    }
    main.wait_nth("StasisStart", 3).await;
    let br = ari.post("/ari/bridges?type=mixing&name=r1").await;
    assert_eq!(br.status, 200);
    models.push(("Bridge", br.body.clone()));
    let bid = br.body["id"].as_str().expect("bridge id").to_string();
    let r = ari
        .post(&format!(
            "/ari/bridges/{bid}/addChannel?channel={}",
            chans.join(",")
        ))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    main.wait_nth("ChannelEnteredBridge", 3).await;
    models.push(("Bridge", ari.get(&format!("/ari/bridges/{bid}")).await.body));
    let r = ari
        .post(&format!(
            "/ari/bridges/{bid}/removeChannel?channel={}",
            chans[2]
        ))
        .await;
    assert_eq!(r.status, 204);
    main.wait("ChannelLeftBridge").await;
    assert_eq!(
        ari.post(&format!("/ari/channels/{}/answer", chans[0]))
            .await
            .status,
        204
    );
    main.wait("ChannelStateChange").await;
    assert_eq!(
        ari.delete(&format!("/ari/channels/{}", chans[1]))
            .await
            .status,
        204
    );
    watcher.wait("ChannelDestroyed").await;
    assert_eq!(
        ari.post(&format!("/ari/channels/{}/move?app=nope", chans[2]))
            .await
            .status,
        204
    );
    main.wait("ApplicationMoveFailed").await;
    let endpoint = enc(&format!("PJSIP/sip:Tok{}@{}", "abc", b.addr()));
    let r = ari
        .post(&format!(
            "/ari/channels/{}/redirect?endpoint={endpoint}",
            chans[2]
        ))
        .await;
    assert_eq!(r.status, 204);
    on_b.wait("StasisStart").await;
    assert_eq!(ari.delete(&format!("/ari/bridges/{bid}")).await.status, 204);
    // Its channels left it, so only the subscribeAll app still follows
    // the bridge (as on Asterisk 22.10.1: tests/ari_fidelity.rs).
    watcher.wait("BridgeDestroyed").await;
    let orig = ari
        .post("/ari/channels?endpoint=PJSIP/alice&app=corral&appArgs=agent,q,alice&callerId=Q%20%3C200%3E")
        .await;
    assert_eq!(orig.status, 200, "{}", orig.text);
    models.push(("Channel", orig.body.clone()));
    main.wait_for_channel("StasisStart", orig.body["id"].as_str().expect("id"))
        .await;

    models.push(("List[Channel]", ari.get("/ari/channels").await.body));
    models.push(("List[Bridge]", ari.get("/ari/bridges").await.body));
    models.push(("List[Channel]", ari_b.get("/ari/channels").await.body));
    models.push(("AsteriskInfo", ari.get("/ari/asterisk/info").await.body));
    models.push(("AsteriskPing", ari.get("/ari/asterisk/ping").await.body));
    models.push(("List[Application]", ari.get("/ari/applications").await.body));
    models.push((
        "Application",
        ari.get("/ari/applications/corral").await.body,
    ));

    // Takeover last: the old socket gets ApplicationReplaced.
    let _newer = Events::connect(&a, "corral", false).await;
    main.wait("ApplicationReplaced").await;

    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for ev in main
        .all()
        .iter()
        .chain(watcher.all().iter())
        .chain(on_b.all().iter())
    {
        seen.insert(ev["type"].as_str().unwrap_or("").to_string());
        problems.extend(spec.check_event(ev));
    }
    for (ty, v) in &models {
        problems.extend(spec.check(ty, v, ty));
    }
    assert!(
        problems.is_empty(),
        "spec violations:\n{}",
        problems.join("\n")
    );
    for ty in [
        "StasisStart",
        "StasisEnd",
        "ChannelHangupRequest",
        "ChannelDestroyed",
        "ChannelEnteredBridge",
        "ChannelLeftBridge",
        "ChannelStateChange",
        "ChannelCreated",
        "BridgeCreated",
        "BridgeDestroyed",
        "ApplicationReplaced",
        "ApplicationMoveFailed",
    ] {
        assert!(
            seen.contains(ty),
            "the tour never produced {ty}; saw {seen:?}"
        );
    }
}

/// The validator itself catches a missing field, a wrong type and an
/// unknown field, so a passing conformance test means something.
#[test]
fn validator_rejects_bad_events() {
    let spec = Spec::load();
    let ok = serde_json::json!({
        "type": "StasisEnd", "timestamp": "2026-01-01T12:00:00.123+0000",
        "application": "a", "asterisk_id": "02:00:00:00:00:01",
        "channel": {"id": "1.1", "protocol_id": "", "name": "PJSIP/x-1", "state": "Ring",
            "caller": {"name": "", "number": ""}, "connected": {"name": "", "number": ""},
            "accountcode": "", "dialplan": {"context": "c", "exten": "e", "priority": 1,
            "app_name": "Stasis", "app_data": "a"}, "creationtime": "2026-01-01T12:00:00.123+0000",
            "language": "en"}
    });
    assert_eq!(spec.check_event(&ok), Vec::<String>::new());
    let mut missing = ok.clone();
    missing["channel"]
        .as_object_mut()
        .expect("obj")
        .remove("language");
    assert_eq!(spec.check_event(&missing).len(), 1);
    let mut wrong = ok.clone();
    wrong["channel"]["dialplan"]["priority"] = Value::from("1");
    assert_eq!(spec.check_event(&wrong).len(), 1);
    let mut extra = ok.clone();
    extra["surprise"] = Value::from(1);
    assert_eq!(spec.check_event(&extra).len(), 1);
    let mut date = ok;
    date["timestamp"] = Value::from("2026-01-01T12:00:00Z");
    assert_eq!(spec.check_event(&date).len(), 1);
}
