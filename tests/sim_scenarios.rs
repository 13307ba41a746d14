//! Scenarios driven over real HTTP and websockets (plain reqwest and
//! tokio-tungstenite), each checking one of the facts in ARCHITECTURE.md,
//! *ARI facts*.

mod sim_util;
mod support;

use corral::sim::{EndpointScript, OnRefer, SimConfig, SimNode, Upstream};
use serde_json::{Value, json};
use sim_util::{Ari, DEADLINE, Events, enc, start};
use support::eventually;

async fn stat(ari: &Ari, name: &str) -> u64 {
    ari.stats().await[name].as_u64().expect("counter")
}

async fn wait_stat(ari: &Ari, name: &str, at_least: u64) {
    eventually(DEADLINE, &format!("{name} >= {at_least}"), || async {
        (stat(ari, name).await >= at_least).then_some(())
    })
    .await
}

fn redirect_path(chan: &str, endpoint: Option<&str>) -> String {
    match endpoint {
        Some(e) => format!("/ari/channels/{chan}/redirect?endpoint={}", enc(e)),
        None => format!("/ari/channels/{chan}/redirect"),
    }
}

/// Redirect checks run 404 → 409 → 412 → 400 → 422 (ARCHITECTURE.md, *ARI
/// facts: redirect check order*): each channel below fails several checks,
/// and the first in Asterisk's order decides the status.
#[tokio::test]
async fn redirect_errors_come_in_asterisk_order() {
    let node = start("order").await;
    node.set_endpoint("ringer", EndpointScript::Ring);
    let ari = Ari::new(&node);
    let ev = Events::connect(&node, "corral", false).await;

    // 404 beats 400: unknown channel, no endpoint.
    let r = ari.post(&redirect_path("nope", None)).await;
    assert_eq!((r.status, r.message()), (404, "Channel not found"));

    // 409 beats 412 and 400: an originated channel ringing, not in Stasis.
    let o = ari
        .post("/ari/channels?endpoint=PJSIP/ringer&app=corral")
        .await;
    let ringing = o.body["id"].as_str().expect("id").to_string();
    ev.wait_for_channel("ChannelStateChange", &ringing).await;
    let r = ari.post(&redirect_path(&ringing, None)).await;
    assert_eq!(
        (r.status, r.message()),
        (409, "Channel not in Stasis application")
    );

    // 412 beats 400: a created channel is in Stasis but Down.
    let c = ari
        .post("/ari/channels/create?endpoint=PJSIP/bob&app=corral")
        .await;
    assert_eq!(c.status, 200, "{}", c.text);
    let down = c.body["id"].as_str().expect("id").to_string();
    assert_eq!(c.body["state"], "Down");
    let r = ari.post(&redirect_path(&down, None)).await;
    assert_eq!((r.status, r.message()), (412, "Channel in invalid state"));

    // A ringing inbound channel passes the state check.
    let call = ari.call("conf-x", "100").await;
    let chan = call.body["channel_id"].as_str().expect("id").to_string();
    ev.wait_for_channel("StasisStart", &chan).await;
    let r = ari.post(&redirect_path(&chan, None)).await;
    assert_eq!(
        (r.status, r.message()),
        (400, "Required parameter 'endpoint' not provided.")
    );
    for bad in [
        "sip:tok@host",
        "/sip:tok@host",
        "PJSIP/",
        "Local/tok@ctx",
        "PJSIPX/sip:a@b",
    ] {
        let r = ari.post(&redirect_path(&chan, Some(bad))).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.text);
    }
    // Missing `sip:`: accepted, and then nothing happens.
    let r = ari
        .post(&redirect_path(&chan, Some("PJSIP/tok@127.0.0.1:9")))
        .await;
    assert_eq!(r.status, 204);
    assert!(r.text.is_empty());
    wait_stat(&ari, "redirects_invalid", 1).await;
    assert_eq!(ari.get(&format!("/ari/channels/{chan}")).await.status, 200);
    assert!(ev.of_type("StasisEnd").is_empty());
    assert_eq!(stat(&ari, "redirects_302").await, 0);
}

/// A followed 302: the origin sees ChannelHangupRequest (cause 23,
/// tech_cause 302) then StasisEnd and no ChannelDestroyed; the call lands on
/// the destination as a new Ring channel whose exten is the token, with the
/// same call id, and its only event is StasisStart.
#[tokio::test]
async fn followed_302_lands_on_the_destination() {
    let a = start("f-a").await;
    let b = start("f-b").await;
    let (ari_a, ari_b) = (Ari::new(&a), Ari::new(&b));
    let ev_a = Events::connect(&a, "corral", false).await;
    let ev_b = Events::connect(&b, "corral", false).await;

    let call = ari_a
        .send(
            "POST",
            "/sim/calls",
            Some(json!({"exten": "conf-42", "caller": "555", "call_id": "abc-123"})),
        )
        .await;
    assert_eq!(call.status, 201);
    assert_eq!(call.body["call_id"], "abc-123");
    let chan = call.body["channel_id"].as_str().expect("id").to_string();
    let start_a = ev_a.wait("StasisStart").await;
    assert_eq!(start_a["args"], json!(["conference", "42"]));
    assert_eq!(
        start_a["channel"]["dialplan"]["app_data"],
        "corral,conference,42"
    );
    assert_eq!(start_a["channel"]["state"], "Ring");
    assert_eq!(start_a["asterisk_id"], a.asterisk_id());

    // The endpoint in a JSON body works as well as in the query.
    let r = ari_a
        .send(
            "POST",
            &format!("/ari/channels/{chan}/redirect"),
            Some(json!({"endpoint": format!("PJSIP/sip:Tok123@{}", b.addr())})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);

    let start_b = ev_b.wait("StasisStart").await;
    assert_eq!(start_b["channel"]["dialplan"]["exten"], "Tok123");
    assert_eq!(start_b["channel"]["protocol_id"], "abc-123");
    assert_eq!(start_b["channel"]["state"], "Ring");
    assert_eq!(start_b["args"], json!([]));
    assert_eq!(ev_b.types(), vec!["StasisStart"]);

    ev_a.wait("StasisEnd").await;
    let types = ev_a.types();
    assert_eq!(
        types,
        vec!["StasisStart", "ChannelHangupRequest", "StasisEnd"]
    );
    let hr = &ev_a.of_type("ChannelHangupRequest")[0];
    assert_eq!(
        (hr["cause"].as_i64(), hr["tech_cause"].as_i64()),
        (Some(23), Some(302))
    );
    assert!(hr.get("soft").is_none());

    assert_eq!(ari_a.get("/ari/channels").await.body, json!([]));
    let calls_b = ari_b.get("/sim/calls").await.body;
    assert_eq!(calls_b[0]["call_id"], "abc-123");
    assert_eq!(calls_b[0]["exten"], "Tok123");
    assert_eq!(calls_b[0]["bridge"], Value::Null);
    wait_stat(&ari_a, "redirects_followed", 1).await;
    assert_eq!(stat(&ari_a, "redirects_lost").await, 0);
}

/// A 302 the proxy relays (Kamailio's default) or drops loses the call: the
/// origin channel is gone and nothing reaches the destination.
#[tokio::test]
async fn unfollowed_302_loses_the_call() {
    for upstream in [Upstream::relay(), Upstream::drop_302()] {
        let mut cfg = SimConfig::new("lost-a");
        cfg.upstream = upstream;
        let a = SimNode::start(cfg).await.expect("start");
        let b = start("lost-b").await;
        let (ari_a, ari_b) = (Ari::new(&a), Ari::new(&b));
        let ev_a = Events::connect(&a, "corral", false).await;
        let _ev_b = Events::connect(&b, "corral", false).await;
        let call = ari_a.call("queue-q1", "1").await;
        let chan = call.body["channel_id"].as_str().expect("id").to_string();
        ev_a.wait("StasisStart").await;
        let target = format!("PJSIP/sip:tok@{}", b.addr());
        assert_eq!(
            ari_a
                .post(&redirect_path(&chan, Some(&target)))
                .await
                .status,
            204
        );
        ev_a.wait("StasisEnd").await;
        wait_stat(&ari_a, "redirects_lost", 1).await;
        assert_eq!(ari_a.get("/sim/calls").await.body, json!([]));
        assert_eq!(ari_b.get("/sim/calls").await.body, json!([]));
        assert_eq!(stat(&ari_b, "calls_created").await, 0);
    }
}

/// A newer websocket takes an app over: the old one gets
/// ApplicationReplaced, nothing more for that app, and stays open (it
/// still answers pings).
#[tokio::test]
async fn a_second_socket_takes_the_app_over() {
    let node = start("takeover").await;
    let ari = Ari::new(&node);
    let old = Events::connect(&node, "corral,other", false).await;
    let new = Events::connect(&node, "corral", false).await;
    let replaced = old.wait("ApplicationReplaced").await;
    assert_eq!(replaced["application"], "corral");
    assert!(new.all().is_empty());

    let call = ari.call("conf-a", "1").await;
    let chan = call.body["channel_id"].as_str().expect("id").to_string();
    new.wait_for_channel("StasisStart", &chan).await;
    assert_eq!(old.types(), vec!["ApplicationReplaced"]);

    old.ping();
    eventually(DEADLINE, "PONG on the old socket", || async {
        (*old.pongs.lock().expect("lock") > 0).then_some(())
    })
    .await;
    assert!(!old.is_closed());
    // The old socket still owns its other app.
    let app = ari.get("/ari/applications/other").await;
    assert_eq!(app.status, 200);
}

/// Without a websocket for the app, Stasis() fails: the call gets 201 with
/// `"stasis": "failed"`, hangs up at once and is counted; connecting later
/// replays nothing.
#[tokio::test]
async fn no_stasis_start_without_a_socket() {
    let node = start("nosock").await;
    let ari = Ari::new(&node);
    let r = ari.call("conf-a", "1").await;
    assert_eq!((r.status, r.body["stasis"].as_str()), (201, Some("failed")));
    assert_eq!(ari.get("/ari/channels").await.body, json!([]));
    // Stasis(corral), then the shipped dialplan's Stasis(corral-standby).
    assert_eq!(stat(&ari, "stasis_failed").await, 2);

    let ev = Events::connect(&node, "corral", false).await;
    let r2 = ari.call("conf-a", "2").await;
    assert_eq!(r2.body["stasis"], "started");
    let first = ev.wait("StasisStart").await;
    assert_eq!(first["channel"]["id"], r2.body["channel_id"]);
    assert_eq!(ev.all().len(), 1);

    // After the socket drops, the app is inactive again; its channel stays.
    drop(ev);
    let ev2 = Events::connect(&node, "corral", false).await;
    drop(ev2);
    eventually(DEADLINE, "stasis fails again with no socket", || async {
        let r = ari.call("conf-b", "3").await;
        (r.body["stasis"] == "failed").then_some(())
    })
    .await;
    let kept = r2.body["channel_id"].as_str().expect("id");
    assert_eq!(ari.get(&format!("/ari/channels/{kept}")).await.status, 200);
}

/// An extension no rule matches is a SIP 404: no channel is created.
#[tokio::test]
async fn unknown_extension_is_a_404() {
    let node = start("noext").await;
    let ari = Ari::new(&node);
    let _ev = Events::connect(&node, "corral", false).await;
    let r = ari.call("*99", "1").await;
    assert_eq!(r.status, 404);
    assert!(!r.message().is_empty());
    assert_eq!(ari.get("/ari/channels").await.body, json!([]));
    assert_eq!(stat(&ari, "calls_rejected").await, 1);
    // Agents: the agent is the part after the last '-'.
    let r = ari.call("agent-sales-emea-bob", "1").await;
    assert_eq!(r.status, 201);
    let s = _ev.wait("StasisStart").await;
    assert_eq!(s["args"], json!(["agent", "sales-emea", "bob"]));
}

/// Bridges as bridges.json and ARCHITECTURE.md, *ARI facts: bridges*, say:
/// mixing bridges switch from simple_bridge to softmix at three channels;
/// addChannel/removeChannel codes; holding bridges and MOH; destroy keeps
/// the channels in Stasis.
#[tokio::test]
async fn bridges_behave_like_asterisk() {
    let node = start("bridges").await;
    node.set_endpoint("ringer", EndpointScript::Ring);
    let ari = Ari::new(&node);
    let ev = Events::connect(&node, "corral", false).await;
    let mut chans = Vec::new();
    for i in 0..3 {
        let r = ari.call("conf-b", &i.to_string()).await;
        chans.push(r.body["channel_id"].as_str().expect("id").to_string());
    }
    ev.wait_nth("StasisStart", 3).await;

    let r = ari.post("/ari/bridges/room1?type=mixing&name=room1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["technology"], "simple_bridge");
    assert_eq!(ari.post("/ari/bridges/room1").await.status, 409);
    assert_eq!(
        ari.post("/ari/bridges?type=holding,mixing").await.status,
        500
    );
    assert_eq!(
        ari.post(&format!(
            "/ari/bridges/none/addChannel?channel={}",
            chans[0]
        ))
        .await
        .status,
        404
    );
    assert_eq!(
        ari.post("/ari/bridges/room1/addChannel?channel=ghost")
            .await
            .status,
        400
    );
    assert_eq!(ari.post("/ari/bridges/room1/addChannel").await.status, 400);
    let o = ari
        .post("/ari/channels?endpoint=PJSIP/ringer&app=corral")
        .await;
    let ringing = o.body["id"].as_str().expect("id").to_string();
    let r = ari
        .post(&format!("/ari/bridges/room1/addChannel?channel={ringing}"))
        .await;
    assert_eq!(r.status, 422);

    // Form body parameters.
    let r = ari
        .http
        .post(format!("{}/ari/bridges/room1/addChannel", ari.base))
        .basic_auth("corral", Some("corral"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("channel={}%2C{}", chans[0], chans[1]))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 204);
    let r = ari
        .post(&format!(
            "/ari/bridges/room1/addChannel?channel={}",
            chans[2]
        ))
        .await;
    assert_eq!(r.status, 204);
    ev.wait_nth("ChannelEnteredBridge", 3).await;
    let b = ari.get("/ari/bridges/room1").await.body;
    assert_eq!(b["technology"], "softmix");
    assert_eq!(b["channels"].as_array().map(Vec::len), Some(3));
    let calls = ari.get("/sim/calls").await.body;
    assert_eq!(calls[0]["bridge"], "room1");

    // Moving a channel to another bridge leaves the first.
    assert_eq!(
        ari.post("/ari/bridges/hold?type=holding").await.body["technology"],
        "holding_bridge"
    );
    assert_eq!(
        ari.post(&format!(
            "/ari/bridges/hold/addChannel?channel={}",
            chans[2]
        ))
        .await
        .status,
        204
    );
    let left = ev.wait("ChannelLeftBridge").await;
    assert_eq!(left["bridge"]["id"], "room1");
    assert_eq!(
        ari.get("/ari/bridges/room1").await.body["technology"],
        "simple_bridge"
    );
    let r = ari
        .post(&format!(
            "/ari/bridges/room1/removeChannel?channel={}",
            chans[2]
        ))
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(ari.delete("/ari/bridges/hold/moh").await.status, 409);
    assert_eq!(
        ari.post("/ari/bridges/hold/moh?mohClass=default")
            .await
            .status,
        204
    );
    assert_eq!(ari.delete("/ari/bridges/hold/moh").await.status, 204);

    assert_eq!(ari.delete("/ari/bridges/room1").await.status, 204);
    assert_eq!(ari.get("/ari/bridges/room1").await.status, 404);
    // The destroy took the channels out first, and with them the app's
    // subscription to the bridge: no BridgeDestroyed for the app (as on
    // Asterisk 22.10.1, tests/ari_fidelity.rs).
    assert!(ev.of_type("BridgeDestroyed").is_empty());
    assert_eq!(ari.delete("/ari/bridges/room1").await.status, 404);
    // Channels stay in Stasis, outside any bridge.
    let c = ari.get(&format!("/ari/channels/{}", chans[0])).await;
    assert_eq!(c.status, 200);
    assert!(ev.of_type("StasisEnd").is_empty());
    let app = ari.get("/ari/applications/corral").await.body;
    assert_eq!(app["bridge_ids"], json!(["hold"]));
    assert!(app["channel_ids"].as_array().expect("ids").len() >= 3);
}

/// Channel operations: answer (Ring → Up, ChannelStateChange), ring and
/// MOH (no state change), hangup through ARI (soft ChannelHangupRequest,
/// StasisEnd, counted), the caller hanging up, and 404/409 rules.
#[tokio::test]
async fn channel_operations() {
    let node = start("chanops").await;
    let ari = Ari::new(&node);
    let ev = Events::connect(&node, "corral", false).await;
    let c1 = ari.call("conf-c", "1").await.body["channel_id"]
        .as_str()
        .expect("id")
        .to_string();
    let c2 = ari.call("conf-c", "2").await.body["call_id"]
        .as_str()
        .expect("id")
        .to_string();
    ev.wait_nth("StasisStart", 2).await;
    for (m, op) in [
        ("POST", "ring"),
        ("DELETE", "ring"),
        ("POST", "moh"),
        ("DELETE", "moh"),
    ] {
        assert_eq!(
            ari.send(m, &format!("/ari/channels/{c1}/{op}"), None)
                .await
                .status,
            204
        );
        assert_eq!(
            ari.send(m, &format!("/ari/channels/ghost/{op}"), None)
                .await
                .status,
            404
        );
    }
    assert_eq!(
        ari.get(&format!("/ari/channels/{c1}")).await.body["state"],
        "Ring"
    );
    assert_eq!(
        ari.post(&format!("/ari/channels/{c1}/answer")).await.status,
        204
    );
    let sc = ev.wait("ChannelStateChange").await;
    assert_eq!(sc["channel"]["state"], "Up");
    assert_eq!(
        ari.delete(&format!("/ari/channels/{c1}?reason=busy&reason_code=17"))
            .await
            .status,
        400
    );
    assert_eq!(
        ari.delete(&format!("/ari/channels/{c1}?reason=bogus"))
            .await
            .status,
        400
    );
    assert_eq!(ari.delete(&format!("/ari/channels/{c1}")).await.status, 204);
    let hr = ev.wait("ChannelHangupRequest").await;
    assert_eq!(hr["soft"], true);
    ev.wait_for_channel("StasisEnd", &c1).await;
    assert!(ev.of_type("ChannelDestroyed").is_empty());
    assert_eq!(ari.delete(&format!("/ari/channels/{c1}")).await.status, 404);
    assert_eq!(stat(&ari, "hungup_by_ari").await, 1);

    assert_eq!(ari.delete(&format!("/sim/calls/{c2}")).await.status, 204);
    ev.wait_nth("StasisEnd", 2).await;
    assert_eq!(ari.delete(&format!("/sim/calls/{c2}")).await.status, 404);
    assert_eq!(stat(&ari, "hungup_by_caller").await, 1);
    assert_eq!(ari.get("/sim/calls").await.body, json!([]));
}

/// Redirect of an answered channel is a REFER: accepted, the call arrives
/// on the target and the old channel gets a BYE; rejected, nothing happens.
#[tokio::test]
async fn refer_of_an_answered_channel() {
    let a = start("refer-a").await;
    let b = start("refer-b").await;
    let (ari_a, ari_b) = (Ari::new(&a), Ari::new(&b));
    let ev_a = Events::connect(&a, "corral", false).await;
    let ev_b = Events::connect(&b, "corral", false).await;
    let call = ari_a.call("conf-r", "9").await;
    let chan = call.body["channel_id"].as_str().expect("id").to_string();
    ev_a.wait("StasisStart").await;
    assert_eq!(
        ari_a
            .post(&format!("/ari/channels/{chan}/answer"))
            .await
            .status,
        204
    );

    a.set_upstream(Upstream {
        on_refer: OnRefer::Reject,
        ..Upstream::follow()
    });
    let target = format!("PJSIP/sip:Tok9@{}", b.addr());
    assert_eq!(
        ari_a
            .post(&redirect_path(&chan, Some(&target)))
            .await
            .status,
        204
    );
    wait_stat(&ari_a, "refers_failed", 1).await;
    assert!(ev_a.of_type("StasisEnd").is_empty());
    assert_eq!(
        ari_a.get(&format!("/ari/channels/{chan}")).await.body["state"],
        "Up"
    );

    a.set_upstream(Upstream::follow());
    assert_eq!(
        ari_a
            .post(&redirect_path(&chan, Some(&target)))
            .await
            .status,
        204
    );
    let s = ev_b.wait("StasisStart").await;
    assert_eq!(s["channel"]["protocol_id"], call.body["call_id"]);
    // The transferee hangs up the old call once the new one is answered.
    assert!(ev_a.of_type("StasisEnd").is_empty());
    let new_chan = s["channel"]["id"].as_str().expect("id");
    assert_eq!(
        ari_b
            .post(&format!("/ari/channels/{new_chan}/answer"))
            .await
            .status,
        204
    );
    ev_a.wait("StasisEnd").await;
    let hr = ev_a.wait("ChannelHangupRequest").await;
    // After a transfer Asterisk 22.10.1 queues that hangup without a cause.
    assert!(hr.get("tech_cause").is_none() && hr.get("cause").is_none());
    assert_eq!(stat(&ari_a, "refers_accepted").await, 1);
    assert_eq!(stat(&ari_a, "redirects_302").await, 0);
    assert_eq!(
        ari_b.get("/sim/calls").await.body.as_array().map(Vec::len),
        Some(1)
    );
}

/// Originate (`POST /channels`) for queue agents: Down → Ringing → Up, then
/// StasisStart with appArgs; the app keeps an extra subscription, so it gets
/// ChannelDestroyed after StasisEnd. A busy endpoint is destroyed with
/// cause 17.
#[tokio::test]
async fn originate_follows_the_endpoint_script() {
    let node = start("orig").await;
    node.set_endpoint("busy", EndpointScript::Busy { after_ms: 0 });
    let ari = Ari::new(&node);
    let ev = Events::connect(&node, "corral", false).await;
    assert_eq!(ari.post("/ari/channels").await.status, 400);
    assert_eq!(
        ari.post("/ari/channels?endpoint=PJSIP/alice").await.status,
        400
    );
    let r = ari
        .post("/ari/channels?endpoint=PJSIP/alice&app=corral&appArgs=agent,q1,alice&channelId=agent-1")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.body["id"].as_str(), r.body["state"].as_str()),
        (Some("agent-1"), Some("Down"))
    );
    assert!(
        r.body["name"]
            .as_str()
            .expect("name")
            .starts_with("PJSIP/alice-")
    );
    assert_eq!(
        ari.post("/ari/channels?endpoint=PJSIP/alice&app=corral&channelId=agent-1")
            .await
            .status,
        409
    );
    let s = ev.wait_for_channel("StasisStart", "agent-1").await;
    assert_eq!(s["args"], json!(["agent", "q1", "alice"]));
    assert_eq!(s["channel"]["state"], "Up");
    let states: Vec<Value> = ev
        .of_type("ChannelStateChange")
        .iter()
        .map(|e| e["channel"]["state"].clone())
        .collect();
    assert_eq!(states, vec![json!("Ringing"), json!("Up")]);
    assert_eq!(ari.delete("/ari/channels/agent-1").await.status, 204);
    let d = ev.wait_for_channel("ChannelDestroyed", "agent-1").await;
    assert_eq!(d["cause"], 16);

    let r = ari
        .post("/ari/channels/busy-1?endpoint=PJSIP/busy&app=corral")
        .await;
    assert_eq!(r.status, 200);
    let d = ev.wait_for_channel("ChannelDestroyed", "busy-1").await;
    assert_eq!(
        (d["cause"].as_i64(), d["cause_txt"].as_str()),
        (Some(17), Some("User busy"))
    );
}

/// move: to an active app, StasisEnd on the old then StasisStart on the new
/// with the args; to an app without a socket, ApplicationMoveFailed.
/// continue: StasisEnd, then the dialplan (here: a new Stasis at another
/// extension).
#[tokio::test]
async fn move_and_continue() {
    let node = start("move").await;
    let ari = Ari::new(&node);
    let ev = Events::connect(&node, "corral", false).await;
    let other = Events::connect(&node, "other", false).await;
    let chan = ari.call("conf-m", "1").await.body["channel_id"]
        .as_str()
        .expect("id")
        .to_string();
    ev.wait("StasisStart").await;
    assert_eq!(
        ari.post(&format!("/ari/channels/{chan}/move?app=ghost&appArgs=x"))
            .await
            .status,
        204
    );
    let f = ev.wait("ApplicationMoveFailed").await;
    assert_eq!(
        (f["destination"].as_str(), f["args"].clone()),
        (Some("ghost"), json!(["x"]))
    );
    assert_eq!(
        ari.post(&format!("/ari/channels/{chan}/move?app=other&appArgs=a,b"))
            .await
            .status,
        204
    );
    ev.wait("StasisEnd").await;
    let s = other.wait("StasisStart").await;
    assert_eq!(s["args"], json!(["a", "b"]));
    assert_eq!(
        ari.post(&format!("/ari/channels/{chan}/move?app=corral"))
            .await
            .status,
        204
    );
    ev.wait_nth("StasisStart", 2).await;

    let r = ari
        .post(&format!("/ari/channels/{chan}/continue?extension=queue-q2"))
        .await;
    assert_eq!(r.status, 204);
    let s = ev.wait_nth("StasisStart", 3).await;
    assert_eq!(s["args"], json!(["queue", "q2"]));
    assert_eq!(s["channel"]["dialplan"]["exten"], "queue-q2");
    assert_eq!(
        ari.post(&format!("/ari/channels/{chan}/continue"))
            .await
            .status,
        204
    );
    ev.wait_nth("StasisEnd", 3).await;
    eventually(DEADLINE, "channel hung up by Hangup()", || async {
        (ari.get(&format!("/ari/channels/{chan}")).await.status == 404).then_some(())
    })
    .await;
}

/// kill() drops every connection (the client sees its websocket close) and
/// releases the port; restart() binds the same port with empty state and a
/// new startup_time.
#[tokio::test]
async fn kill_and_restart() {
    let node = start("crash").await;
    let ari = Ari::new(&node);
    let ev = Events::connect(&node, "corral", false).await;
    ari.call("conf-k", "1").await;
    ev.wait("StasisStart").await;
    let before = ari.get("/ari/asterisk/info").await.body["status"]["startup_time"].clone();
    let addr = node.addr();

    node.kill().await;
    assert!(!node.is_running());
    ev.wait_closed().await;
    assert!(
        reqwest::get(format!("http://{addr}/ari/asterisk/ping"))
            .await
            .is_err()
    );

    // `startup_time` has millisecond precision: make sure it can differ.
    let t0 = std::time::Instant::now();
    eventually(DEADLINE, "a millisecond to pass", || async {
        (t0.elapsed() >= std::time::Duration::from_millis(2)).then_some(())
    })
    .await;
    node.restart().await.expect("restart");
    assert!(node.is_running());
    assert_eq!(node.addr(), addr);
    let ari = Ari::new(&node);
    assert_eq!(ari.get("/ari/asterisk/ping").await.status, 200);
    assert_eq!(ari.get("/ari/channels").await.body, json!([]));
    assert_eq!(ari.get("/ari/applications").await.body, json!([]));
    let after = ari.get("/ari/asterisk/info").await.body["status"]["startup_time"].clone();
    assert_ne!(before, after);
    assert_eq!(stat(&ari, "incarnations").await, 2);
    let ev2 = Events::connect(&node, "corral", false).await;
    ari.call("conf-k", "2").await;
    ev2.wait("StasisStart").await;
}

/// Dropping the last handle stops the node.
#[tokio::test]
async fn dropping_the_handle_stops_the_node() {
    let node = start("dropped").await;
    let addr = node.addr();
    let ev = Events::connect(&node, "corral", false).await;
    drop(node);
    ev.wait_closed().await;
    eventually(DEADLINE, "port closed", || async {
        reqwest::get(format!("http://{addr}/sim/stats"))
            .await
            .is_err()
            .then_some(())
    })
    .await;
}

/// Fifty nodes start in one process and all answer ping (timing is the
/// benchmark's job, not this test's).
#[tokio::test]
async fn fifty_nodes_start_and_answer_ping() {
    let nodes = futures_util::future::join_all((0..50).map(|i| start_owned(format!("n{i}")))).await;
    let ids: std::collections::BTreeSet<String> =
        nodes.iter().map(|n| n.asterisk_id().to_string()).collect();
    assert_eq!(ids.len(), 50, "asterisk ids are distinct");
    for n in &nodes {
        let r = Ari::new(n).get("/ari/asterisk/ping").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["asterisk_id"], n.asterisk_id());
    }
}

async fn start_owned(id: String) -> SimNode {
    start(&id).await
}

/// Auth: no credentials or wrong ones give 401 with WWW-Authenticate, on
/// known and unknown paths and on the websocket; api_key works; the
/// control API needs none.
#[tokio::test]
async fn auth_and_routing_errors() {
    let node = start("auth").await;
    let base = node.base_url();
    let http = reqwest::Client::new();
    for path in ["/ari/asterisk/ping", "/ari/nothing", "/ari/events?app=x"] {
        let r = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 401, "{path}");
        assert!(r.headers().get("www-authenticate").is_some());
    }
    let r = http
        .get(format!("{base}/ari/asterisk/ping"))
        .basic_auth("corral", Some("wrong"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .get(format!("{base}/ari/asterisk/ping?api_key=corral:corral"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    let ari = Ari::new(&node);
    assert_eq!(ari.get("/ari/events").await.status, 400);
    assert_eq!(
        ari.get("/ari/events").await.message(),
        "HTTP request is missing param: [app]"
    );
    let r = ari.send("PUT", "/ari/channels", None).await;
    assert_eq!(r.status, 405);
    assert!(r.headers.get("allow").is_some());
    assert_eq!(ari.get("/ari/channels/").await.status, 404);
    assert_eq!(ari.get("/ari/bogus").await.message(), "Resource not found");
    assert_eq!(ari.get("/sim/stats").await.status, 200);
    let info = ari.get("/ari/asterisk/info?only=status").await.body;
    assert!(info.get("build").is_none());
    assert!(info["status"]["startup_time"].is_string());
}

/// An explicit subscription (`POST /applications/{app}/subscription`) keeps
/// the app subscribed after StasisEnd, so it gets ChannelDestroyed; errors
/// follow stasis_app_subscribe (400, 404, 422, and 409 on unsubscribe).
#[tokio::test]
async fn explicit_subscription_delivers_channel_destroyed() {
    let node = start("subs").await;
    let ari = Ari::new(&node);
    let ev = Events::connect(&node, "corral", false).await;
    let call = ari.call("conf-s", "1").await;
    let chan = call.body["channel_id"].as_str().expect("id").to_string();
    ev.wait("StasisStart").await;
    let base = "/ari/applications/corral/subscription";
    assert_eq!(ari.post(base).await.status, 400);
    assert_eq!(
        ari.post("/ari/applications/ghost/subscription?eventSource=channel:x")
            .await
            .status,
        404
    );
    assert_eq!(
        ari.post(&format!("{base}?eventSource=planet:x"))
            .await
            .status,
        400
    );
    assert_eq!(
        ari.post(&format!("{base}?eventSource=channel:ghost"))
            .await
            .status,
        422
    );
    assert_eq!(
        ari.delete(&format!("{base}?eventSource=channel:{chan}"))
            .await
            .status,
        409
    );
    let r = ari
        .post(&format!("{base}?eventSource=channel:{chan}"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["channel_ids"], json!([chan]));
    assert_eq!(
        ari.delete(&format!(
            "/sim/calls/{}",
            call.body["call_id"].as_str().expect("call")
        ))
        .await
        .status,
        204
    );
    let d = ev.wait_for_channel("ChannelDestroyed", &chan).await;
    // The caller gave up before the answer: a CANCEL (487, cause 127).
    assert_eq!(d["cause_txt"], "Interworking, unspecified");
}

// ---------------------------------------------------------------------------
// Call queues: endpoint scripts, what callers hear, the call log

/// `GET /sim/log?since=SEQ`.
async fn log_since(ari: &Ari, since: u64) -> Vec<Value> {
    let r = ari.get(&format!("/sim/log?since={since}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body.as_array().expect("log is an array").clone()
}

/// The log entries of one channel, as `what` strings.
async fn log_of(ari: &Ari, chan: &str) -> Vec<String> {
    log_since(ari, 0)
        .await
        .iter()
        .filter(|e| e["channel_id"] == chan)
        .map(|e| e["what"].as_str().expect("what").to_string())
        .collect()
}

/// The `GET /sim/calls` entry of a channel.
async fn call_entry(ari: &Ari, chan: &str) -> Value {
    ari.get("/sim/calls")
        .await
        .body
        .as_array()
        .expect("calls")
        .iter()
        .find(|c| c["channel_id"] == chan)
        .cloned()
        .unwrap_or_else(|| panic!("no call for channel {chan}"))
}

/// `(hears, moh_class)` of a channel.
async fn hears(ari: &Ari, chan: &str) -> (String, Value) {
    let c = call_entry(ari, chan).await;
    (
        c["hears"].as_str().expect("hears").to_string(),
        c["moh_class"].clone(),
    )
}

/// An inbound call that entered Stasis and was answered; returns its
/// channel id.
async fn answered_call(ari: &Ari, ev: &Events, exten: &str, caller: &str) -> String {
    let r = ari.call(exten, caller).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let chan = r.body["channel_id"].as_str().expect("id").to_string();
    ev.wait_for_channel("StasisStart", &chan).await;
    let a = ari.post(&format!("/ari/channels/{chan}/answer")).await;
    assert_eq!(a.status, 204, "{}", a.text);
    chan
}

/// Each endpoint script, seen over ARI on the socket of the app named in
/// `app=` and in `/sim/stats`: answer → Ringing, Up, StasisStart with the
/// comma-split appArgs; busy, unavailable and no answer → ChannelDestroyed
/// (causes 17, 20, 19 with Asterisk's texts) without StasisStart (and, but
/// for busy, without ChannelHangupRequest), delivered through the
/// originate's extra subscription (ARCHITECTURE.md, *ARI facts:
/// originate*) and to no other app. Scripts are set over
/// `PUT /sim/endpoints` and listed by `GET /sim/endpoints`.
#[tokio::test]
async fn originate_outcomes_follow_every_script() {
    let node = start("scripts").await;
    let ari = Ari::new(&node);
    let ev = Events::connect(&node, "queues", false).await;
    let bystander = Events::connect(&node, "corral", false).await;
    for (resource, script) in [
        ("agent1", json!({"action": "answer", "after_ms": 0})),
        ("agent2", json!({"action": "busy", "after_ms": 0})),
        ("agent3", json!({"action": "unavailable", "after_ms": 0})),
        ("agent4", json!({"action": "ring"})),
    ] {
        let r = ari
            .send("PUT", &format!("/sim/endpoints/{resource}"), Some(script))
            .await;
        assert_eq!(r.status, 204, "{resource}: {}", r.text);
    }
    let r = ari
        .send(
            "PUT",
            "/sim/endpoints/agent5",
            Some(json!({"action": "answer", "hangup_after": 5})),
        )
        .await;
    assert_eq!(r.status, 400, "a misspelt field is refused");
    let listed = ari.get("/sim/endpoints").await.body;
    assert_eq!(
        listed["endpoints"]["agent3"],
        json!({"action": "unavailable", "after_ms": 0})
    );
    assert_eq!(listed["endpoints"]["agent4"], json!({"action": "ring"}));
    assert_eq!(
        listed["default"],
        json!({"action": "answer", "after_ms": 10})
    );
    assert!(listed["endpoints"].get("agent5").is_none());

    let originate = |resource: &str, id: &str, extra: &str| {
        let path = format!("/ari/channels/{id}?endpoint=PJSIP/{resource}&app=queues{extra}");
        let ari = ari.clone();
        async move {
            let r = ari.post(&path).await;
            assert_eq!(r.status, 200, "{path}: {}", r.text);
        }
    };
    originate("agent1", "o-answer", "&appArgs=agent,sales,agent1").await;
    originate("agent2", "o-busy", "").await;
    originate("agent3", "o-unavail", "").await;
    originate("agent4", "o-ring", "&timeout=1").await;

    let s = ev.wait_for_channel("StasisStart", "o-answer").await;
    assert_eq!(s["args"], json!(["agent", "sales", "agent1"]));
    assert_eq!(s["channel"]["state"], "Up");
    for (chan, cause, text) in [
        ("o-busy", 17, "User busy"),
        ("o-unavail", 20, "Subscriber absent"),
        ("o-ring", 19, "User alerting, no answer"),
    ] {
        let d = eventually(
            std::time::Duration::from_secs(10),
            &format!("ChannelDestroyed for {chan}"),
            || async {
                ev.of_type("ChannelDestroyed")
                    .into_iter()
                    .find(|e| e["channel"]["id"] == chan)
            },
        )
        .await;
        assert_eq!(
            (d["cause"].as_i64(), d["cause_txt"].as_str()),
            (Some(cause), Some(text)),
            "{chan}"
        );
        assert_eq!(d["application"], "queues");
        let about = |ty: &str| {
            ev.of_type(ty)
                .into_iter()
                .filter(|e| e["channel"]["id"] == chan)
                .count()
        };
        assert_eq!(about("StasisStart"), 0, "{chan} never entered Stasis");
        // chan_pjsip queues the hangup of a 486 with its cause; other
        // failed dials are destroyed without a hangup request.
        let requests = usize::from(chan == "o-busy");
        assert_eq!(
            about("ChannelHangupRequest"),
            requests,
            "{chan}: a failed dial"
        );
    }
    assert!(
        bystander.all().is_empty(),
        "an app that did not originate hears nothing: {:?}",
        bystander.types()
    );
    let stats = ari.stats().await;
    for (name, n) in [
        ("originated", 4),
        ("originated_answered", 1),
        ("originated_busy", 1),
        ("originated_unavailable", 1),
        ("originated_no_answer", 1),
    ] {
        assert_eq!(stats[name], n, "{name}");
    }
    // The answered one is the only call left.
    let calls = ari.get("/sim/calls").await.body;
    assert_eq!(calls.as_array().map(Vec::len), Some(1));
    assert_eq!(calls[0]["channel_id"], "o-answer");
    assert_eq!(calls[0]["direction"], "outbound");
    assert_eq!(log_of(&ari, "o-unavail").await, vec!["hangup".to_string()]);
}

/// Scripts are found by endpoint resource: the exact resource first, then
/// the user part of `user@host` and of SIP URIs, then the default script.
#[tokio::test]
async fn endpoint_scripts_match_by_user_part() {
    let node = start("lookup").await;
    node.set_endpoint("alice", EndpointScript::Busy { after_ms: 0 });
    node.set_endpoint("alice@backup", EndpointScript::answer(0));
    node.set_default_endpoint(EndpointScript::Unavailable { after_ms: 0 });
    let ari = Ari::new(&node);
    let ev = Events::connect(&node, "queues", false).await;
    for (endpoint, id, outcome) in [
        ("PJSIP/alice", "exact", Some(17)),
        ("PJSIP/alice@kamailio", "user-host", Some(17)),
        ("PJSIP/sip:alice@10.0.0.5:5060", "sip-uri", Some(17)),
        ("PJSIP/alice@backup", "exact-user-host", None),
        ("PJSIP/zed", "default", Some(20)),
        ("PJSIP/sip:10.0.0.5", "no-user", Some(20)),
    ] {
        let r = ari
            .post(&format!(
                "/ari/channels/{id}?endpoint={}&app=queues",
                enc(endpoint)
            ))
            .await;
        assert_eq!(r.status, 200, "{endpoint}: {}", r.text);
        match outcome {
            Some(cause) => {
                let d = ev.wait_for_channel("ChannelDestroyed", id).await;
                assert_eq!(d["cause"], cause, "{endpoint}");
            }
            None => {
                ev.wait_for_channel("StasisStart", id).await;
            }
        }
    }
    let stats = ari.stats().await;
    assert_eq!(
        (
            stats["originated_busy"].as_u64(),
            stats["originated_unavailable"].as_u64(),
            stats["originated_answered"].as_u64()
        ),
        (Some(3), Some(2), Some(1))
    );
}

/// `answer` with `hangup_after_ms`: the agent's phone answers, the channel
/// enters Stasis, and later the far end hangs up by itself with a normal
/// clearing BYE: ChannelHangupRequest (cause 16, not soft), StasisEnd, then
/// ChannelDestroyed (cause 16) through the originate's subscription. The
/// call log has `answer` then `hangup` with cause 16.
#[tokio::test]
async fn an_answered_endpoint_hangs_up_after_hangup_after_ms() {
    let node = start("hangup-after").await;
    let ari = Ari::new(&node);
    let ev = Events::connect(&node, "queues", false).await;
    let r = ari
        .send(
            "PUT",
            "/sim/endpoints/bob",
            Some(json!({"action": "answer", "after_ms": 0, "hangup_after_ms": 50})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = ari
        .post("/ari/channels/agent-bob?endpoint=PJSIP/bob@kamailio&app=queues&appArgs=agent,q1,bob")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    ev.wait_for_channel("StasisStart", "agent-bob").await;
    let d = ev.wait_for_channel("ChannelDestroyed", "agent-bob").await;
    assert_eq!(
        (d["cause"].as_i64(), d["cause_txt"].as_str()),
        (Some(16), Some("Normal Clearing"))
    );
    let hr = ev
        .wait_for_channel("ChannelHangupRequest", "agent-bob")
        .await;
    assert_eq!(hr["cause"], 16);
    assert!(hr.get("soft").is_none(), "a BYE, not an ARI hangup");
    let order: Vec<String> = ev
        .all()
        .iter()
        .filter(|e| e["channel"]["id"] == "agent-bob")
        .map(|e| e["type"].as_str().unwrap_or("").to_string())
        .filter(|t| t != "ChannelStateChange")
        .collect();
    assert_eq!(
        order,
        vec![
            "StasisStart",
            "ChannelHangupRequest",
            "StasisEnd",
            "ChannelDestroyed"
        ]
    );
    assert_eq!(log_of(&ari, "agent-bob").await, vec!["answer", "hangup"]);
    let hangup = log_since(&ari, 0)
        .await
        .into_iter()
        .find(|e| e["what"] == "hangup")
        .expect("hangup entry");
    assert_eq!(hangup["cause"], 16);
    let stats = ari.stats().await;
    assert_eq!(stats["originated_answered"], 1);
    assert_eq!(stats["hungup_by_ari"], 0);
    assert_eq!(ari.get("/ari/channels").await.body, json!([]));
}

/// A queue caller waits in a holding bridge and hears music on hold
/// (`hears: moh`, class `default`, `moh_start` after `enter_bridge` in the
/// log); an agent answers and waits alone in a mixing bridge (silence);
/// the caller is moved to the agent's bridge: the log has `leave_bridge`,
/// `moh_stop`, `enter_bridge` in that order, and both hear each other.
#[tokio::test]
async fn a_holding_caller_hears_moh_until_bridged_with_an_agent() {
    let node = start("queue").await;
    node.set_endpoint("agent", EndpointScript::answer(0));
    let ari = Ari::new(&node);
    let ev = Events::connect(&node, "corral", false).await;
    let caller = answered_call(&ari, &ev, "queue-sales", "555").await;
    assert_eq!(hears(&ari, &caller).await, ("silence".into(), Value::Null));

    let r = ari
        .post("/ari/bridges/hold-sales?type=holding&name=queue-sales")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = ari
        .post(&format!(
            "/ari/bridges/hold-sales/addChannel?channel={caller}"
        ))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    // Added without a role, a holding participant hears nothing (ARI sets
    // its idle_mode to none, as a real Asterisk 22 shows) until the app
    // plays music on hold to the bridge.
    assert_eq!(hears(&ari, &caller).await, ("silence".into(), Value::Null));
    let r = ari.post("/ari/bridges/hold-sales/moh").await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(hears(&ari, &caller).await, ("moh".into(), json!("default")));
    assert_eq!(
        log_of(&ari, &caller).await,
        vec!["answer", "enter_bridge", "moh_start"]
    );
    let log = log_since(&ari, 0).await;
    let moh = log.iter().find(|e| e["what"] == "moh_start").expect("moh");
    assert_eq!(
        (
            moh["class"].as_str(),
            moh["bridge"].as_str(),
            moh["bridge_name"].as_str()
        ),
        (Some("default"), Some("hold-sales"), Some("queue-sales"))
    );
    assert_eq!(ari.stats().await["moh_started"], 1);

    let r = ari
        .post("/ari/channels/agent-1?endpoint=PJSIP/agent&app=corral&appArgs=agent,sales,agent")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    ev.wait_for_channel("StasisStart", "agent-1").await;
    let r = ari
        .post("/ari/bridges/call-1?type=mixing&name=call-1")
        .await;
    assert_eq!(r.status, 200);
    let r = ari
        .post("/ari/bridges/call-1/addChannel?channel=agent-1")
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        hears(&ari, "agent-1").await,
        ("silence".into(), Value::Null)
    );
    let mark = log_since(&ari, 0).await.last().expect("entries")["seq"]
        .as_u64()
        .expect("seq");

    let r = ari
        .post(&format!("/ari/bridges/call-1/addChannel?channel={caller}"))
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(hears(&ari, &caller).await, ("bridge".into(), Value::Null));
    assert_eq!(hears(&ari, "agent-1").await, ("bridge".into(), Value::Null));
    let after: Vec<(String, Value)> = log_since(&ari, mark)
        .await
        .iter()
        .map(|e| {
            (
                e["what"].as_str().expect("what").to_string(),
                e["bridge"].clone(),
            )
        })
        .collect();
    assert_eq!(
        after,
        vec![
            ("leave_bridge".to_string(), json!("hold-sales")),
            ("moh_stop".to_string(), json!("hold-sales")),
            ("enter_bridge".to_string(), json!("call-1")),
        ]
    );
    let left = ev.wait_for_channel("ChannelLeftBridge", &caller).await;
    assert_eq!(left["bridge"]["id"], "hold-sales");
    assert_eq!(ari.stats().await["moh_started"], 1);
}

/// What a channel hears, case by case: ringback after `POST /ring` (ended
/// by the answer); a channel's own MOH with its class; a bridge's MOH
/// (`POST /bridges/{id}/moh`, class changes logged); an unanswered caller
/// in a holding bridge hears nothing until answered (no media path,
/// ARCHITECTURE.md, *ARI facts: what a caller hears*); a holding bridge's
/// announcer is heard instead of MOH; a hangup stops the music.
#[tokio::test]
async fn what_a_channel_hears() {
    let node = start("hears").await;
    let ari = Ari::new(&node);
    let ev = Events::connect(&node, "corral", false).await;

    // Ringback, then the answer ends it.
    let r = ari.call("queue-q", "1").await;
    let c1 = r.body["channel_id"].as_str().expect("id").to_string();
    ev.wait_for_channel("StasisStart", &c1).await;
    assert_eq!(
        ari.post(&format!("/ari/channels/{c1}/ring")).await.status,
        204
    );
    assert_eq!(hears(&ari, &c1).await.0, "ringing");
    // MOH on an unanswered channel is not heard.
    assert_eq!(
        ari.post(&format!("/ari/channels/{c1}/moh?mohClass=jazz"))
            .await
            .status,
        204
    );
    assert_eq!(hears(&ari, &c1).await.0, "ringing");
    assert_eq!(
        ari.post(&format!("/ari/channels/{c1}/answer")).await.status,
        204
    );
    assert_eq!(hears(&ari, &c1).await, ("moh".into(), json!("jazz")));
    assert_eq!(
        log_of(&ari, &c1).await,
        vec!["ring_start", "answer", "ring_stop", "moh_start"]
    );
    assert_eq!(
        ari.delete(&format!("/ari/channels/{c1}/moh")).await.status,
        204
    );
    assert_eq!(hears(&ari, &c1).await, ("silence".into(), Value::Null));
    // Inband ringback on an answered channel.
    assert_eq!(
        ari.post(&format!("/ari/channels/{c1}/ring")).await.status,
        204
    );
    assert_eq!(hears(&ari, &c1).await.0, "ringing");
    assert_eq!(
        ari.delete(&format!("/ari/channels/{c1}/ring")).await.status,
        204
    );
    assert_eq!(hears(&ari, &c1).await.0, "silence");

    // A mixing bridge playing MOH, then changing class, then stopping.
    let c2 = answered_call(&ari, &ev, "conf-m", "2").await;
    assert_eq!(ari.post("/ari/bridges/mix?type=mixing").await.status, 200);
    let r = ari
        .post(&format!("/ari/bridges/mix/addChannel?channel={c1},{c2}"))
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(hears(&ari, &c1).await.0, "bridge");
    assert_eq!(ari.post("/ari/bridges/mix/moh").await.status, 204);
    assert_eq!(hears(&ari, &c2).await, ("moh".into(), json!("default")));
    assert_eq!(
        ari.post("/ari/bridges/mix/moh?mohClass=classical")
            .await
            .status,
        204
    );
    assert_eq!(hears(&ari, &c1).await, ("moh".into(), json!("classical")));
    assert_eq!(ari.delete("/ari/bridges/mix/moh").await.status, 204);
    assert_eq!(hears(&ari, &c1).await.0, "bridge");
    let classes: Vec<(String, String)> = log_since(&ari, 0)
        .await
        .iter()
        .filter(|e| {
            e["channel_id"] == c2 && e["what"].as_str().is_some_and(|w| w.starts_with("moh"))
        })
        .map(|e| {
            (
                e["what"].as_str().expect("what").to_string(),
                e["class"].as_str().expect("class").to_string(),
            )
        })
        .collect();
    let pair = |w: &str, c: &str| (w.to_string(), c.to_string());
    assert_eq!(
        classes,
        vec![
            pair("moh_start", "default"),
            pair("moh_stop", "default"),
            pair("moh_start", "classical"),
            pair("moh_stop", "classical"),
        ]
    );

    // An unanswered caller in a holding bridge hears nothing until answered
    // (added as holding_participant, whose idle mode is music on hold; one
    // added without a role would hear nothing at all).
    assert_eq!(ari.post("/ari/bridges/hold?type=holding").await.status, 200);
    let r = ari.call("queue-q", "3").await;
    let c3 = r.body["channel_id"].as_str().expect("id").to_string();
    ev.wait_for_channel("StasisStart", &c3).await;
    let r = ari
        .post(&format!(
            "/ari/bridges/hold/addChannel?channel={c3}&role=holding_participant"
        ))
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(hears(&ari, &c3).await.0, "silence");
    assert_eq!(
        ari.post(&format!("/ari/channels/{c3}/answer")).await.status,
        204
    );
    assert_eq!(hears(&ari, &c3).await, ("moh".into(), json!("default")));

    // An announcer in the holding bridge is heard instead of the music.
    let r = ari
        .post(&format!(
            "/ari/bridges/hold/addChannel?channel={c2}&role=announcer"
        ))
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(hears(&ari, &c3).await.0, "bridge");
    assert_eq!(hears(&ari, &c2).await.0, "silence");
    assert_eq!(hears(&ari, &c1).await.0, "silence", "alone in mix now");
    let r = ari
        .post(&format!("/ari/bridges/hold/removeChannel?channel={c2}"))
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(hears(&ari, &c3).await, ("moh".into(), json!("default")));

    // Hanging up stops the music before the hangup entry.
    let call3 = call_entry(&ari, &c3).await["call_id"]
        .as_str()
        .expect("call id")
        .to_string();
    assert_eq!(ari.delete(&format!("/sim/calls/{call3}")).await.status, 204);
    let tail: Vec<String> = log_of(&ari, &c3).await.into_iter().rev().take(3).collect();
    assert_eq!(tail, vec!["hangup", "moh_stop", "leave_bridge"]);
    // c1: jazz, default, classical; c2: default, classical; c3: twice.
    assert_eq!(ari.stats().await["moh_started"], 7);
}

/// `GET /sim/log?since=SEQ`: entries with seq > SEQ, oldest first, with a
/// strictly increasing seq, the call id, the channel id and an Asterisk
/// timestamp; a bad `since` is a 400.
#[tokio::test]
async fn the_call_log_reads_since_a_seq() {
    let node = start("log").await;
    let ari = Ari::new(&node);
    let ev = Events::connect(&node, "corral", false).await;
    assert_eq!(log_since(&ari, 0).await, Vec::<Value>::new());
    let r = ari
        .send(
            "POST",
            "/sim/calls",
            Some(json!({"exten": "queue-q", "caller": "7", "call_id": "call-7"})),
        )
        .await;
    let chan = r.body["channel_id"].as_str().expect("id").to_string();
    ev.wait_for_channel("StasisStart", &chan).await;
    for op in ["ring", "answer"] {
        let path = format!("/ari/channels/{chan}/{op}");
        assert_eq!(ari.post(&path).await.status, 204, "{op}");
    }
    assert_eq!(ari.delete("/sim/calls/call-7").await.status, 204);
    let all = log_since(&ari, 0).await;
    let whats: Vec<&str> = all
        .iter()
        .map(|e| e["what"].as_str().expect("what"))
        .collect();
    assert_eq!(whats, vec!["ring_start", "answer", "ring_stop", "hangup"]);
    let seqs: Vec<u64> = all
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    for e in &all {
        assert_eq!(e["call_id"], "call-7");
        assert_eq!(e["channel_id"], chan.as_str());
        let ts = e["ts"].as_str().expect("ts");
        assert!(ts.len() == 28 && ts.ends_with("+0000"), "{ts}");
    }
    assert_eq!(all[3]["cause"], 16);
    let tail = log_since(&ari, seqs[1]).await;
    assert_eq!(tail, all[2..].to_vec());
    assert!(log_since(&ari, seqs[3]).await.is_empty());
    assert_eq!(ari.get("/sim/log").await.body, Value::Array(all));
    for bad in ["x", "-1"] {
        let r = ari.get(&format!("/sim/log?since={bad}")).await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(!r.message().is_empty());
    }
}

/// The shipped dialplan on a node: `POST /sim/calls` reports what the
/// caller got (404, 484 and 403 with no channel; the fallback's 503 when
/// no websocket owns `corral`); `continue` goes where ARI
/// computes (a label that does not exist is a 404, label `0` a 400, a
/// context without an extension goes to `s`, a priority is kept) and
/// `StasisStart`'s `dialplan` shows where `Stasis()` ran; an originate to
/// an extension runs the dialplan once answered.
#[tokio::test]
async fn the_shipped_dialplan_and_continue_targets() {
    let node = start("dialplan").await;
    let ari = Ari::new(&node);
    for (exten, status) in [("*", 484), ("s", 484), ("*8", 403), ("*80", 404)] {
        let r = ari.call(exten, "1").await;
        assert_eq!(r.status, status, "{exten}: {}", r.text);
    }
    assert_eq!(ari.get("/ari/channels").await.body, json!([]));
    let r = ari.call("conf-sales", "1").await;
    assert_eq!(r.status, 201);
    assert_eq!(
        (
            &r.body["stasis"],
            &r.body["answered"],
            &r.body["sip_status"],
            &r.body["hangup_cause"]
        ),
        (&json!("failed"), &json!(false), &json!(503), &json!(34)),
        "no websocket: the fallback refuses the unanswered call, 503 (cause 34)"
    );
    // Stasis(corral), then the shipped dialplan's Stasis(corral-standby).
    assert_eq!(stat(&ari, "stasis_failed").await, 2);

    let ev = Events::connect(&node, "corral", false).await;
    let r = ari.call("agent-sales-emea-bob", "2").await;
    assert_eq!(
        (&r.body["stasis"], &r.body["sip_status"]),
        (&json!("started"), &Value::Null)
    );
    let chan = r.body["channel_id"].as_str().expect("id").to_string();
    let s = ev.wait("StasisStart").await;
    assert_eq!(s["args"], json!(["agent", "sales-emea", "bob"]));
    let d = &s["channel"]["dialplan"];
    assert_eq!(
        (
            &d["context"],
            &d["exten"],
            &d["priority"],
            &d["app_name"],
            &d["app_data"]
        ),
        (
            &json!("from-proxy"),
            &json!("agent-sales-emea-bob"),
            &json!(5),
            &json!("Stasis"),
            &json!("corral,agent,sales-emea,bob")
        )
    );
    let cont = |q: &str| {
        let path = format!("/ari/channels/{chan}/continue{q}");
        let ari = ari.clone();
        async move { ari.post(&path).await }
    };
    assert_eq!(cont("?label=nolabel").await.status, 404);
    assert_eq!(cont("?label=0").await.status, 400);
    // Back in at priority 5: Stasis() again.
    assert_eq!(cont("?priority=5").await.status, 204);
    let s = ev.wait_nth("StasisStart", 2).await;
    assert_eq!(s["args"], json!(["agent", "sales-emea", "bob"]));
    let end = ev.wait("StasisEnd").await;
    assert_eq!(end["channel"]["dialplan"]["priority"], 5);
    // A context alone: extension `s`, priority 1 (the fallback).
    assert_eq!(cont("?context=corral-fallback").await.status, 204);
    ev.wait_nth("StasisEnd", 2).await;
    eventually(DEADLINE, "the fallback hung the channel up", || async {
        (ari.get(&format!("/ari/channels/{chan}")).await.status == 404).then_some(())
    })
    .await;

    // Originate to an extension: the dialplan runs once the far end answers.
    let r = ari
        .post("/ari/channels?endpoint=PJSIP/alice&extension=queue-q1&context=from-proxy&channelId=o-1")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let s = ev.wait_for_channel("StasisStart", "o-1").await;
    assert_eq!(s["args"], json!(["queue", "q1"]));
    assert_eq!(
        ari.post(
            "/ari/channels?endpoint=PJSIP/alice&extension=queue-q1&context=from-proxy&label=nope"
        )
        .await
        .status,
        404
    );
}
