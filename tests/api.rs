//! The HTTP API through the real router, against simulated nodes and a
//! running controller: every documented (path, method, status) of
//! `/openapi.json` is produced by a request of a table, and every request
//! of the table produces a documented status and body, refused as
//! malformed exactly when the document refuses it; colocate
//! really redirects a channel; tokens are single-use; auth, oversized and
//! malformed bodies, unknown routes answer JSON and never panic.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Body as AxBody;
use axum::http::Request;
use corral::domain::{ChannelId, NodeId, RoomKey, RoomName, TokenId};
use corral::store::TokenGrant;
use serde_json::{Value, json};
use support::api::ApiServer;
use support::eventually;
use support::farm::{Backend, TestFarm};
use support::openapi::{Doc, param_value, percent_decode};
use tower::ServiceExt;

const TOKEN: &str = "s3cret-api-token";
const DEADLINE: Duration = Duration::from_secs(15);

/// A request body.
#[derive(Clone)]
enum Body {
    None,
    Json(Value),
    /// Raw bytes with an optional content type.
    Raw(Option<&'static str>, Vec<u8>),
}

/// One row of the conformance table.
struct Case {
    method: &'static str,
    template: &'static str,
    status: u16,
    path: String,
    body: Body,
    auth: bool,
    /// The error code expected (for 4xx/5xx JSON errors).
    code: Option<&'static str>,
}

fn case(
    method: &'static str,
    template: &'static str,
    status: u16,
    path: impl Into<String>,
    body: Body,
    auth: bool,
    code: Option<&'static str>,
) -> Case {
    Case {
        method,
        template,
        status,
        path: path.into(),
        body,
        auth,
        code,
    }
}

async fn send(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    body: &Body,
    auth: Option<&str>,
) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = http.request(method, format!("{base}{path}"));
    if let Some(t) = auth {
        rb = rb.bearer_auth(t);
    }
    rb = match body {
        Body::None => rb,
        Body::Json(v) => rb.json(v),
        Body::Raw(ct, bytes) => {
            let rb = match ct {
                Some(ct) => rb.header("content-type", *ct),
                None => rb,
            };
            rb.body(bytes.clone())
        }
    };
    rb.send().await.expect("API answers")
}

async fn get_json(http: &reqwest::Client, url: String) -> (u16, Value) {
    let r = http
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("API answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Every (METHOD, path, status) the OpenAPI document promises.
fn documented(doc: &Value) -> BTreeSet<(String, String, u16)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            for status in op["responses"].as_object().expect("responses").keys() {
                out.insert((
                    method.to_uppercase(),
                    path.clone(),
                    status.parse().expect("numeric status"),
                ));
            }
        }
    }
    out
}

/// Error codes that say the request itself is malformed: the document
/// must refuse every request that gets one.
const INPUT_CODES: &[&str] = &[
    "bad_kind",
    "bad_name",
    "bad_channel",
    "bad_agent",
    "bad_endpoint",
    "bad_query",
    "bad_path",
    "malformed_json",
    "unsupported_media_type",
];

/// Whether the document accepts the request of `c`: its path parameters,
/// query and body against their schemas; the error says why not.
fn documented_request(doc: &Doc, c: &Case) -> Result<(), String> {
    let (path, query) = c.path.split_once('?').unwrap_or((&c.path, ""));
    let params = doc.params(c.method, c.template);
    let param = |location: &str, name: &str| {
        params
            .iter()
            .find(|p| p.location == location && p.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "{} {}: no {location} parameter {name}",
                    c.method, c.template
                )
            })
    };
    let (tsegs, psegs): (Vec<&str>, Vec<&str>) =
        (c.template.split('/').collect(), path.split('/').collect());
    assert_eq!(
        tsegs.len(),
        psegs.len(),
        "{} does not fit {}",
        c.path,
        c.template
    );
    for (t, p) in tsegs.iter().zip(&psegs) {
        if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            let raw = percent_decode(p).ok_or_else(|| format!("{name}: not UTF-8"))?;
            let schema = param("path", name).schema;
            doc.validate(schema, &param_value(doc, schema, &raw))
                .map_err(|e| format!("path {name}: {e}"))?;
        }
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let raw = percent_decode(raw).ok_or_else(|| format!("{name}: not UTF-8"))?;
        let schema = param("query", name).schema;
        doc.validate(schema, &param_value(doc, schema, &raw))
            .map_err(|e| format!("query {name}: {e}"))?;
    }
    match (doc.request_body(c.method, c.template), &c.body) {
        (None, _) => Ok(()),
        (Some((_, required)), Body::None) => {
            if required {
                Err("a body is required".into())
            } else {
                Ok(())
            }
        }
        (Some((schema, _)), Body::Json(v)) => doc.validate(schema, v),
        (Some((schema, _)), Body::Raw(Some("application/json"), bytes)) => {
            let v: Value =
                serde_json::from_slice(bytes).map_err(|e| format!("body is not JSON: {e}"))?;
            doc.validate(schema, &v)
        }
        (Some(_), Body::Raw(..)) => Err("the body is not application/json".into()),
    }
}

/// Runs the table: each request must get its status (and error code);
/// the document must refuse exactly the requests the server refuses as
/// malformed ([`INPUT_CODES`]), and every answer must be the body the
/// document gives for its status, of its content type and schema.
async fn run_cases(http: &reqwest::Client, base: &str, doc: &Doc, cases: &[Case]) {
    for c in cases {
        let auth = c.auth.then_some(TOKEN);
        let resp = send(http, base, c.method, &c.path, &c.body, auth).await;
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let (what, request) = (
            format!("{} {}", c.method, c.path),
            documented_request(doc, c),
        );
        match (&request, c.code) {
            (Err(why), _) => assert!(
                (400..500).contains(&status),
                "{what}: the document refuses it ({why}), the server answered {status}"
            ),
            (Ok(()), Some(code)) => assert!(
                !INPUT_CODES.contains(&code),
                "{what}: the document accepts it, the server refuses it as {code}"
            ),
            (Ok(()), None) => {}
        }
        let documented = doc.response(c.method, c.template, status);
        if let Some((want, _)) = documented {
            assert!(
                ctype.starts_with(want),
                "{what}: {ctype}, documented {want}"
            );
        }
        if c.template == "/v1/events" {
            assert_eq!(status, c.status, "{} {}", c.method, c.path);
            assert!(ctype.starts_with("text/event-stream"), "{ctype}");
            continue;
        }
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(
            status, c.status,
            "{} {} answered {status}, the table expects {}: {text}",
            c.method, c.path, c.status
        );
        match documented {
            None => assert!(text.is_empty(), "{what}: no body is documented: {text}"),
            Some(("application/json", schema)) => {
                let v: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
                if let Err(e) = doc.validate(schema, &v) {
                    panic!("{what}: the answer breaks the document's schema: {e}\n{text}");
                }
            }
            Some(_) => {}
        }
        if let Some(code) = c.code {
            assert!(
                ctype.starts_with("application/json"),
                "{ctype} for {}",
                c.path
            );
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} {}: not JSON ({e}): {text}", c.method, c.path));
            assert_eq!(v["error"]["code"], code, "{} {}: {text}", c.method, c.path);
            assert!(
                v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        }
    }
}

fn grant(room: &str, from: &NodeId, to: &NodeId) -> TokenGrant {
    TokenGrant {
        room: RoomKey::parse("conference", room).unwrap(),
        from: from.clone(),
        to: to.clone(),
        channel: ChannelId::new("1767268800.1").unwrap(),
        caller: "100".into(),
        hops: 1,
        agent: None,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Lands `conf-<room>` and waits until the room has a member; returns
/// (owner, channel).
async fn land(farm: &mut TestFarm, api: &ApiServer, room: &str) -> (String, String) {
    farm.call(&format!("conf-{room}"), &format!("call-{room}"))
        .await;
    let http = farm.http.clone();
    let url = format!("{}/v1/rooms/conference/{room}", api.url);
    eventually(DEADLINE, "the landed call is a member of its room", || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let (s, v) = get_json(&http, url).await;
            let m = v["member_list"].as_array()?.first()?.clone();
            (s == 200).then(|| {
                (
                    m["node"].as_str().unwrap().to_owned(),
                    m["channel"].as_str().unwrap().to_owned(),
                )
            })
        }
    })
    .await
}

/// The OpenAPI document and the server agree: for every documented
/// (path, method, status) a request of the table produces exactly that
/// status (with the expected JSON error code), and the table holds no
/// request whose status is undocumented. Bodies and ids too: every answer
/// is valid against the schema documented for its status, and a request
/// is refused as malformed (`bad_*`, `malformed_json`, 415) exactly when
/// its path, query or body breaks the document's schemas. Runs on a real Redis so that
/// `store_unavailable` is real (Redis killed), with three nodes so that a
/// dead node's `node_unavailable` is real too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_matches_the_server() {
    let seed = support::seed("openapi_document_matches_the_server");
    let mut farm = TestFarm::start(3, Backend::PrivateRedis, seed).await;
    let api = ApiServer::start(&farm.ctrl, Some(TOKEN)).await;
    let http = farm.http.clone();
    let base = api.url.clone();
    let doc: Value = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let promised = documented(&doc);
    let doc = Doc::new(doc);

    let (owner, channel) = land(&mut farm, &api, "alpha").await;
    let ids: Vec<String> = farm.sims.iter().map(|s| s.id().to_owned()).collect();
    let others: Vec<&String> = ids.iter().filter(|i| **i != owner).collect();
    let (other, victim) = (others[0].clone(), others[1].clone());
    let (owner_id, other_id) = (NodeId::new(&owner).unwrap(), NodeId::new(&other).unwrap());

    let mut rng = rand::rng();
    let tk_ok = TokenId::generate(&mut rng);
    let tk_wrong = TokenId::generate(&mut rng);
    let tk_exp = TokenId::generate(&mut rng);
    let store = farm.store.clone();
    for (t, ttl) in [(&tk_ok, 30_000), (&tk_wrong, 30_000), (&tk_exp, 50)] {
        store
            .mint_token(
                t,
                &grant("alpha", &owner_id, &other_id),
                Duration::from_millis(ttl),
            )
            .await
            .unwrap();
    }
    let exp_url = format!("{base}/v1/tokens/{tk_exp}");
    eventually(DEADLINE, "the short token is past its expiry", || {
        let (http, url) = (http.clone(), exp_url.clone());
        async move {
            let (_, v) = get_json(&http, url).await;
            (v["expires_ms"].as_u64()? + 20 < now_ms()).then_some(())
        }
    })
    .await;

    // A channel on `other` that is not in Stasis: an originated call still
    // ringing (its far end scripted to ring), owned by another app.
    let oi = ids.iter().position(|i| *i == other).unwrap();
    let sim = farm.sims[oi].base_url();
    let r = http
        .put(format!("{sim}/sim/endpoints/ringer"))
        .json(&json!({"action": "ring"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let ringing: Value = http
        .post(format!(
            "{sim}/ari/channels?endpoint=PJSIP/ringer&app=otherapp&timeout=60"
        ))
        .basic_auth("corral", Some("corral"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ringing = ringing["id"]
        .as_str()
        .expect("originated channel id")
        .to_owned();

    let big = Body::Raw(Some("application/json"), vec![b' '; 20 * 1024]);
    let text = Body::Raw(None, b"landing_node=ast1".to_vec());
    let j = Body::Json;
    let n = Body::None;
    let (rooms, room, place, colo) = (
        "/v1/rooms",
        "/v1/rooms/{kind}/{name}",
        "/v1/rooms/{kind}/{name}/placement",
        "/v1/rooms/{kind}/{name}/colocate",
    );
    let (nodes, drain, undrain) = (
        "/v1/nodes",
        "/v1/nodes/{id}/drain",
        "/v1/nodes/{id}/undrain",
    );
    let (tok, consume) = ("/v1/tokens/{token}", "/v1/tokens/{token}/consume");
    let unknown_tok = "Zz".repeat(11);
    let mut cases = vec![
        case("GET", rooms, 200, "/v1/rooms", n.clone(), false, None),
        case(
            "GET",
            rooms,
            400,
            "/v1/rooms?limit=abc",
            n.clone(),
            false,
            Some("bad_query"),
        ),
        // Any whole number is a page size (the document says integer >= 0).
        case(
            "GET",
            rooms,
            200,
            "/v1/rooms?limit=99999999999999999999999999&kind=queue",
            n.clone(),
            false,
            None,
        ),
        case(
            "GET",
            room,
            200,
            "/v1/rooms/conference/alpha",
            n.clone(),
            false,
            None,
        ),
        case(
            "GET",
            room,
            400,
            "/v1/rooms/party/alpha",
            n.clone(),
            false,
            Some("bad_kind"),
        ),
        case(
            "GET",
            room,
            404,
            "/v1/rooms/conference/nosuch",
            n.clone(),
            false,
            Some("room_not_found"),
        ),
        case(
            "POST",
            place,
            200,
            "/v1/rooms/queue/beta/placement",
            n.clone(),
            true,
            None,
        ),
        case(
            "POST",
            place,
            400,
            "/v1/rooms/conference/bad.name/placement",
            n.clone(),
            true,
            Some("bad_name"),
        ),
        // The body is optional, its field nullable, the body itself not.
        case(
            "POST",
            place,
            200,
            "/v1/rooms/queue/beta/placement",
            j(json!({"landing_node": null})),
            true,
            None,
        ),
        case(
            "POST",
            place,
            400,
            "/v1/rooms/queue/beta/placement",
            j(Value::Null),
            true,
            Some("malformed_json"),
        ),
        case(
            "POST",
            place,
            401,
            "/v1/rooms/queue/beta/placement",
            n.clone(),
            false,
            Some("unauthorized"),
        ),
        case(
            "POST",
            place,
            404,
            "/v1/rooms/queue/beta/placement",
            j(json!({"landing_node": "ast9"})),
            true,
            Some("unknown_node"),
        ),
        case(
            "POST",
            place,
            413,
            "/v1/rooms/queue/beta/placement",
            big.clone(),
            true,
            Some("body_too_large"),
        ),
        case(
            "POST",
            place,
            415,
            "/v1/rooms/queue/beta/placement",
            text.clone(),
            true,
            Some("unsupported_media_type"),
        ),
        case(
            "POST",
            colo,
            200,
            "/v1/rooms/conference/alpha/colocate",
            j(json!({"node": owner, "channel": channel})),
            true,
            None,
        ),
        case(
            "POST",
            colo,
            400,
            "/v1/rooms/conference/alpha/colocate",
            j(json!({"node": owner, "channel": "no such"})),
            true,
            Some("bad_channel"),
        ),
        case(
            "POST",
            colo,
            401,
            "/v1/rooms/conference/alpha/colocate",
            j(json!({"node": owner, "channel": channel})),
            false,
            Some("unauthorized"),
        ),
        case(
            "POST",
            colo,
            404,
            "/v1/rooms/conference/alpha/colocate",
            j(json!({"node": other, "channel": "1767268800.999"})),
            true,
            Some("channel_not_found"),
        ),
        case(
            "POST",
            colo,
            409,
            "/v1/rooms/conference/alpha/colocate",
            j(json!({"node": other, "channel": ringing})),
            true,
            Some("channel_not_movable"),
        ),
        case(
            "POST",
            colo,
            413,
            "/v1/rooms/conference/alpha/colocate",
            big.clone(),
            true,
            Some("body_too_large"),
        ),
        case(
            "POST",
            colo,
            415,
            "/v1/rooms/conference/alpha/colocate",
            text.clone(),
            true,
            Some("unsupported_media_type"),
        ),
        case("GET", nodes, 200, "/v1/nodes", n.clone(), false, None),
        case(
            "POST",
            drain,
            200,
            format!("/v1/nodes/{other}/drain"),
            n.clone(),
            true,
            None,
        ),
        case(
            "POST",
            drain,
            401,
            format!("/v1/nodes/{other}/drain"),
            n.clone(),
            false,
            Some("unauthorized"),
        ),
        case(
            "POST",
            drain,
            404,
            "/v1/nodes/ast9/drain",
            n.clone(),
            true,
            Some("unknown_node"),
        ),
        case(
            "POST",
            undrain,
            200,
            format!("/v1/nodes/{other}/undrain"),
            n.clone(),
            true,
            None,
        ),
        case(
            "POST",
            undrain,
            401,
            format!("/v1/nodes/{other}/undrain"),
            n.clone(),
            false,
            Some("unauthorized"),
        ),
        case(
            "POST",
            undrain,
            404,
            "/v1/nodes/ast9/undrain",
            n.clone(),
            true,
            Some("unknown_node"),
        ),
        case(
            "GET",
            tok,
            200,
            format!("/v1/tokens/{tk_ok}"),
            n.clone(),
            true,
            None,
        ),
        case(
            "GET",
            tok,
            401,
            format!("/v1/tokens/{tk_ok}"),
            n.clone(),
            false,
            Some("unauthorized"),
        ),
        case(
            "GET",
            tok,
            404,
            format!("/v1/tokens/{unknown_tok}"),
            n.clone(),
            true,
            Some("token_not_found"),
        ),
        case(
            "POST",
            consume,
            400,
            format!("/v1/tokens/{tk_ok}/consume"),
            Body::Raw(Some("application/json"), b"{\"node\":".to_vec()),
            true,
            Some("malformed_json"),
        ),
        case(
            "POST",
            consume,
            401,
            format!("/v1/tokens/{tk_ok}/consume"),
            j(json!({"node": other})),
            false,
            Some("unauthorized"),
        ),
        case(
            "POST",
            consume,
            404,
            format!("/v1/tokens/{unknown_tok}/consume"),
            j(json!({"node": other})),
            true,
            Some("token_not_found"),
        ),
        case(
            "POST",
            consume,
            409,
            format!("/v1/tokens/{tk_wrong}/consume"),
            j(json!({"node": owner})),
            true,
            Some("token_wrong_node"),
        ),
        case(
            "POST",
            consume,
            410,
            format!("/v1/tokens/{tk_exp}/consume"),
            j(json!({"node": other})),
            true,
            Some("token_expired"),
        ),
        case(
            "POST",
            consume,
            200,
            format!("/v1/tokens/{tk_ok}/consume"),
            j(json!({"node": other})),
            true,
            None,
        ),
        case(
            "POST",
            consume,
            413,
            format!("/v1/tokens/{tk_ok}/consume"),
            big.clone(),
            true,
            Some("body_too_large"),
        ),
        case(
            "POST",
            consume,
            415,
            format!("/v1/tokens/{tk_ok}/consume"),
            text.clone(),
            true,
            Some("unsupported_media_type"),
        ),
        case(
            "GET",
            "/v1/events",
            200,
            "/v1/events",
            n.clone(),
            false,
            None,
        ),
        // The proxy's lookup: open, an answer or no opinion, never an error.
        case(
            "GET",
            "/v1/route/{user}",
            200,
            "/v1/route/conf-alpha",
            n.clone(),
            false,
            None,
        ),
        case(
            "GET",
            "/v1/route/{user}",
            200,
            format!("/v1/route/queue-beta?landing={other}"),
            n.clone(),
            false,
            None,
        ),
        case(
            "GET",
            "/v1/route/{user}",
            204,
            "/v1/route/not-a-room",
            n.clone(),
            false,
            None,
        ),
        case(
            "GET",
            "/v1/route/{user}",
            204,
            "/v1/route/conf-a%20b?landing=nosuch",
            n.clone(),
            false,
            None,
        ),
        case("GET", "/healthz", 200, "/healthz", n.clone(), false, None),
        case("GET", "/readyz", 200, "/readyz", n.clone(), false, None),
        case("GET", "/metrics", 200, "/metrics", n.clone(), false, None),
    ];
    run_cases(&http, &base, &doc, &cases).await;
    // Single use: the consumed token is gone.
    let (s, _) = get_json(&http, format!("{base}/v1/tokens/{tk_ok}")).await;
    assert_eq!(s, 404, "a consumed token is gone");

    // Queues: amy logs in as a call-in agent of qa (a real call through
    // the farm), so her id cannot become a static member (409).
    farm.call("agent-qa-amy", "agent-amy").await;
    queue_until(&http, &base, "qa", "amy logged in to qa", |d| {
        d["agents"][0]["agent"] == "amy" && d["agents"][0]["kind"] == "call_in"
    })
    .await;
    let (qs, q, qm, qma, qp, qu) = (
        "/v1/queues",
        "/v1/queues/{name}",
        "/v1/queues/{name}/members",
        "/v1/queues/{name}/members/{agent}",
        "/v1/queues/{name}/members/{agent}/pause",
        "/v1/queues/{name}/members/{agent}/unpause",
    );
    let bob = || j(json!({"agent": "bob", "endpoint": "PJSIP/bob", "paused": true}));
    let queue_cases = vec![
        case("GET", qs, 200, "/v1/queues", n.clone(), false, None),
        case("GET", q, 200, "/v1/queues/qa", n.clone(), false, None),
        case(
            "GET",
            q,
            400,
            "/v1/queues/bad.name",
            n.clone(),
            false,
            Some("bad_name"),
        ),
        case(
            "GET",
            q,
            404,
            "/v1/queues/nosuch",
            n.clone(),
            false,
            Some("queue_not_found"),
        ),
        case("POST", qm, 201, "/v1/queues/qa/members", bob(), true, None),
        case(
            "POST",
            qm,
            200,
            "/v1/queues/qa/members",
            j(json!({"agent": "bob", "endpoint": "PJSIP/bob", "template": null, "paused": true})),
            true,
            None,
        ),
        case(
            "POST",
            qm,
            400,
            "/v1/queues/qa/members",
            j(json!({"agent": "bob", "endpoint": null})),
            true,
            Some("bad_endpoint"),
        ),
        case(
            "POST",
            qm,
            400,
            "/v1/queues/qa/members",
            j(json!({"agent": "bob", "template": "PJSIP/{agent}{agent}"})),
            true,
            Some("bad_endpoint"),
        ),
        case(
            "POST",
            qm,
            400,
            "/v1/queues/qa/members",
            j(json!({"agent": "b-b", "endpoint": "PJSIP/bob"})),
            true,
            Some("bad_agent"),
        ),
        case(
            "POST",
            qm,
            401,
            "/v1/queues/qa/members",
            bob(),
            false,
            Some("unauthorized"),
        ),
        case(
            "POST",
            qm,
            404,
            "/v1/queues/%FF/members",
            bob(),
            true,
            Some("bad_path"),
        ),
        case(
            "POST",
            qm,
            409,
            "/v1/queues/qa/members",
            j(json!({"agent": "amy", "endpoint": "PJSIP/amy"})),
            true,
            Some("agent_logged_in"),
        ),
        case(
            "POST",
            qm,
            413,
            "/v1/queues/qa/members",
            big.clone(),
            true,
            Some("body_too_large"),
        ),
        case(
            "POST",
            qm,
            415,
            "/v1/queues/qa/members",
            text.clone(),
            true,
            Some("unsupported_media_type"),
        ),
        case(
            "POST",
            qp,
            200,
            "/v1/queues/qa/members/bob/pause",
            n.clone(),
            true,
            None,
        ),
        case(
            "POST",
            qp,
            400,
            "/v1/queues/qa/members/b-b/pause",
            n.clone(),
            true,
            Some("bad_agent"),
        ),
        case(
            "POST",
            qp,
            401,
            "/v1/queues/qa/members/bob/pause",
            n.clone(),
            false,
            Some("unauthorized"),
        ),
        case(
            "POST",
            qp,
            404,
            "/v1/queues/qa/members/nobody/pause",
            n.clone(),
            true,
            Some("agent_not_found"),
        ),
        case(
            "POST",
            qu,
            200,
            "/v1/queues/qa/members/bob/unpause",
            n.clone(),
            true,
            None,
        ),
        case(
            "POST",
            qu,
            400,
            "/v1/queues/bad.name/members/bob/unpause",
            n.clone(),
            true,
            Some("bad_name"),
        ),
        case(
            "POST",
            qu,
            401,
            "/v1/queues/qa/members/bob/unpause",
            n.clone(),
            false,
            Some("unauthorized"),
        ),
        case(
            "POST",
            qu,
            404,
            "/v1/queues/nosuch/members/bob/unpause",
            n.clone(),
            true,
            Some("queue_not_found"),
        ),
        case(
            "DELETE",
            qma,
            401,
            "/v1/queues/qa/members/bob",
            n.clone(),
            false,
            Some("unauthorized"),
        ),
        case(
            "DELETE",
            qma,
            204,
            "/v1/queues/qa/members/bob",
            n.clone(),
            true,
            None,
        ),
        case(
            "DELETE",
            qma,
            400,
            "/v1/queues/qa/members/b-b",
            n.clone(),
            true,
            Some("bad_agent"),
        ),
        case(
            "DELETE",
            qma,
            404,
            "/v1/queues/qa/members/bob",
            n.clone(),
            true,
            Some("agent_not_found"),
        ),
    ];
    run_cases(&http, &base, &doc, &queue_cases).await;

    // A queue whose stored document does not parse: 500 `queue_corrupt`
    // everywhere it is read, then repaired for the rest of the test.
    let qbad = RoomName::new("qbad").unwrap();
    assert_eq!(
        store.save_queue(&qbad, 0, "{not json").await.unwrap(),
        Some(1)
    );
    let member = || j(json!({"agent": "bob", "endpoint": "PJSIP/bob"}));
    let corrupt = vec![
        case(
            "GET",
            qs,
            500,
            "/v1/queues",
            n.clone(),
            false,
            Some("queue_corrupt"),
        ),
        case(
            "GET",
            q,
            500,
            "/v1/queues/qbad",
            n.clone(),
            false,
            Some("queue_corrupt"),
        ),
        case(
            "POST",
            qm,
            500,
            "/v1/queues/qbad/members",
            member(),
            true,
            Some("queue_corrupt"),
        ),
        case(
            "DELETE",
            qma,
            500,
            "/v1/queues/qbad/members/bob",
            n.clone(),
            true,
            Some("queue_corrupt"),
        ),
        case(
            "POST",
            qp,
            500,
            "/v1/queues/qbad/members/bob/pause",
            n.clone(),
            true,
            Some("queue_corrupt"),
        ),
        case(
            "POST",
            qu,
            500,
            "/v1/queues/qbad/members/bob/unpause",
            n.clone(),
            true,
            Some("queue_corrupt"),
        ),
    ];
    run_cases(&http, &base, &doc, &corrupt).await;
    let r = send(&http, &base, "GET", "/v1/queues/qbad", &n, None).await;
    let v: Value = r.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("qbad") && msg.contains("corrupt"), "{v}");
    assert!(
        !msg.contains("not json") && !msg.contains("line"),
        "no parser detail: {v}"
    );
    assert_eq!(store.save_queue(&qbad, 1, "{}").await.unwrap(), Some(2));
    let (s, _) = get_json(&http, format!("{base}/v1/queues")).await;
    assert_eq!(s, 200, "repaired");

    // Every node drained: nothing may take a new room.
    for id in &ids {
        let r = send(
            &http,
            &base,
            "POST",
            &format!("/v1/nodes/{id}/drain"),
            &n,
            Some(TOKEN),
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    let drained = vec![
        case(
            "POST",
            place,
            503,
            "/v1/rooms/conference/gamma/placement",
            n.clone(),
            true,
            Some("no_eligible_node"),
        ),
        case(
            "POST",
            colo,
            503,
            "/v1/rooms/conference/delta/colocate",
            j(json!({"node": other, "channel": "1767268800.5"})),
            true,
            Some("no_eligible_node"),
        ),
        case(
            "GET",
            "/v1/route/{user}",
            204,
            "/v1/route/conf-gamma",
            n.clone(),
            false,
            None,
        ),
    ];
    run_cases(&http, &base, &doc, &drained).await;
    for id in &ids {
        let r = send(
            &http,
            &base,
            "POST",
            &format!("/v1/nodes/{id}/undrain"),
            &n,
            Some(TOKEN),
        )
        .await;
        assert_eq!(r.status(), 200);
    }

    // A dead node: the redirect cannot be sent.
    let vi = ids.iter().position(|i| *i == victim).unwrap();
    farm.kill(vi).await;
    let dead = vec![case(
        "POST",
        colo,
        502,
        "/v1/rooms/conference/alpha/colocate",
        j(json!({"node": victim, "channel": "1767268800.7"})),
        true,
        Some("node_unavailable"),
    )];
    run_cases(&http, &base, &doc, &dead).await;

    // The store gone.
    farm.kill_redis();
    let down = vec![
        case(
            "GET",
            rooms,
            503,
            "/v1/rooms",
            n.clone(),
            false,
            Some("store_unavailable"),
        ),
        case(
            "GET",
            room,
            503,
            "/v1/rooms/conference/alpha",
            n.clone(),
            false,
            Some("store_unavailable"),
        ),
        case(
            "POST",
            place,
            503,
            "/v1/rooms/conference/epsilon/placement",
            n.clone(),
            true,
            Some("store_unavailable"),
        ),
        case(
            "POST",
            colo,
            503,
            "/v1/rooms/conference/alpha/colocate",
            j(json!({"node": owner, "channel": channel})),
            true,
            Some("store_unavailable"),
        ),
        case(
            "GET",
            nodes,
            503,
            "/v1/nodes",
            n.clone(),
            false,
            Some("store_unavailable"),
        ),
        case(
            "POST",
            drain,
            503,
            format!("/v1/nodes/{other}/drain"),
            n.clone(),
            true,
            Some("store_unavailable"),
        ),
        case(
            "POST",
            undrain,
            503,
            format!("/v1/nodes/{other}/undrain"),
            n.clone(),
            true,
            Some("store_unavailable"),
        ),
        case(
            "GET",
            tok,
            503,
            format!("/v1/tokens/{tk_wrong}"),
            n.clone(),
            true,
            Some("store_unavailable"),
        ),
        case(
            "POST",
            consume,
            503,
            format!("/v1/tokens/{tk_wrong}/consume"),
            j(json!({"node": other})),
            true,
            Some("store_unavailable"),
        ),
        case("GET", "/readyz", 503, "/readyz", n.clone(), false, None),
        case(
            "GET",
            qs,
            503,
            "/v1/queues",
            n.clone(),
            false,
            Some("store_unavailable"),
        ),
        case(
            "GET",
            q,
            503,
            "/v1/queues/qa",
            n.clone(),
            false,
            Some("store_unavailable"),
        ),
        case(
            "POST",
            qm,
            503,
            "/v1/queues/qa/members",
            bob(),
            true,
            Some("store_unavailable"),
        ),
        case(
            "DELETE",
            qma,
            503,
            "/v1/queues/qa/members/amy",
            n.clone(),
            true,
            Some("store_unavailable"),
        ),
        case(
            "POST",
            qp,
            503,
            "/v1/queues/qa/members/amy/pause",
            n.clone(),
            true,
            Some("store_unavailable"),
        ),
        case(
            "POST",
            qu,
            503,
            "/v1/queues/qa/members/amy/unpause",
            n.clone(),
            true,
            Some("store_unavailable"),
        ),
    ];
    run_cases(&http, &base, &doc, &down).await;
    // The proxy gets no opinion, not an error, without the store.
    let r = send(&http, &base, "GET", "/v1/route/conf-alpha", &n, None).await;
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["corral-no-opinion"].to_str().unwrap()
        ),
        (204, "store_unavailable")
    );

    cases.extend(queue_cases);
    cases.extend(corrupt);
    cases.extend(drained);
    cases.extend(dead);
    cases.extend(down);
    let tested: BTreeSet<(String, String, u16)> = cases
        .iter()
        .map(|c| (c.method.to_owned(), c.template.to_owned(), c.status))
        .collect();
    let untested: Vec<_> = promised.difference(&tested).collect();
    let undocumented: Vec<_> = tested.difference(&promised).collect();
    assert!(
        untested.is_empty() && undocumented.is_empty(),
        "documented but no request in the table: {untested:?}\n\
         in the table but not documented: {undocumented:?}"
    );
    farm.stop().await;
}

/// What the proxy gets from `GET /v1/route/{user}`.
struct Routed {
    status: u16,
    /// `Corral-Node` (200) or `Corral-No-Opinion` (204).
    said: String,
    body: String,
    ctype: String,
}

/// Asks the route as the proxy does: no credential.
async fn routed(http: &reqwest::Client, base: &str, path: &str) -> Routed {
    let r = http
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("API answers");
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let status = r.status().as_u16();
    let said = header(if status == 200 {
        "corral-node"
    } else {
        "corral-no-opinion"
    });
    let ctype = header("content-type");
    Routed {
        status,
        said,
        body: r.text().await.unwrap_or_default(),
        ctype,
    }
}

/// Route ahead, every answer the proxy can get, without a credential while
/// the API has a token: a new room is placed and named by its node's SIP
/// URI (the same answer when asked again), and the call that then lands
/// there joins without a redirect; the landing the proxy names is
/// preferred for a new room (by id, SIP URI or host:port); a queue's
/// callers and agents get the queue's node; odd user parts and landings
/// get no opinion (never a 4xx or 5xx); a room on a draining node gets no
/// opinion, a new room with every node drained too; a dead node's room is
/// answered on a live node; the store gone is no opinion; switched off,
/// every lookup is no opinion. Counted per outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_ahead_answers_the_proxy() {
    let seed = support::seed("route_ahead_answers_the_proxy");
    let mut farm = TestFarm::start(3, Backend::PrivateRedis, seed).await;
    let api = ApiServer::start(&farm.ctrl, Some(TOKEN)).await;
    let http = farm.http.clone();
    let base = api.url.clone();
    let ids: Vec<String> = farm.sims.iter().map(|s| s.id().to_owned()).collect();
    let sip = |id: &str| {
        let i = ids.iter().position(|x| x == id).expect("a node id");
        format!("sip:{}", farm.sims[i].addr())
    };

    // A new room: placed, named by its node's SIP URI, plain text.
    let first = routed(&http, &base, "/v1/route/conf-ahead1").await;
    assert_eq!(first.status, 200, "{}", first.said);
    assert!(first.ctype.starts_with("text/plain"), "{}", first.ctype);
    assert_eq!(first.body, sip(&first.said));
    let owner = first.said.clone();
    let (_, room) = get_json(&http, format!("{base}/v1/rooms/conference/ahead1")).await;
    assert_eq!(room["node"], owner.as_str(), "placed where named");
    for _ in 0..3 {
        let again = routed(&http, &base, "/v1/route/conf-ahead1").await;
        assert_eq!((again.status, again.said), (200, owner.clone()));
    }
    // The StasisStart that follows agrees: the call arriving there joins
    // its room there, without a redirect.
    let oi = ids.iter().position(|i| *i == owner).unwrap();
    farm.call_on(oi, "conf-ahead1", "ahead-call-1").await;
    let url = format!("{base}/v1/rooms/conference/ahead1");
    eventually(DEADLINE, "the call joined where the proxy sent it", || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let (_, v) = get_json(&http, url).await;
            (v["member_list"].as_array()?.len() == 1).then_some(v)
        }
    })
    .await;
    let (_, v) = get_json(&http, url.clone()).await;
    assert_eq!(v["member_list"][0]["node"], owner.as_str());
    assert_eq!(farm.metrics.snapshot().redirected, 0, "no redirect");

    // The landing the proxy names is preferred for a new room.
    for (k, id) in ids.iter().enumerate() {
        let i = k;
        let forms = [
            id.clone(),
            sip(id).replace(':', "%3A"),
            farm.sims[i].addr().to_string(),
        ];
        for (f, landing) in forms.iter().enumerate() {
            let r = routed(
                &http,
                &base,
                &format!("/v1/route/conf-land{k}x{f}?landing={landing}"),
            )
            .await;
            assert_eq!((r.status, r.said.as_str()), (200, id.as_str()), "{landing}");
        }
    }

    // A queue's callers and agents: the queue's node.
    let q = routed(&http, &base, "/v1/route/queue-help").await;
    assert_eq!(q.status, 200);
    for agent in ["/v1/route/agent-help-a1", "/v1/route/agent-help-b2"] {
        let a = routed(&http, &base, agent).await;
        assert_eq!((a.status, a.said), (200, q.said.clone()), "{agent}");
    }

    // Odd input: no opinion, never an error.
    let long = format!("/v1/route/conf-{}", "a".repeat(100));
    for path in [
        "/v1/route/not-a-room",
        "/v1/route/conf-",
        "/v1/route/conf--",
        "/v1/route/CONF-sales",
        "/v1/route/conf-a%20b",
        "/v1/route/conf-a%2Cb",
        "/v1/route/%FF",
        "/v1/route/conf-%E2%82%AC",
        "/v1/route/conf-a%",
        "/v1/route/agent-help",
        "/v1/route/agent-help-",
        "/v1/route/Zz0123456789abcdefghij",
        long.as_str(),
    ] {
        let r = routed(&http, &base, path).await;
        assert_eq!(
            (r.status, r.said.as_str(), r.body.as_str()),
            (204, "not_a_room", ""),
            "{path}"
        );
    }
    for query in [
        "landing=nosuch",
        "landing=%FF",
        "landing=sip:10.9.9.9:5060",
        "landing=",
        "landing=ast1&landing=ast2",
    ] {
        let r = routed(&http, &base, &format!("/v1/route/conf-odd?{query}")).await;
        assert_eq!(
            (r.status, r.said.as_str()),
            (204, "unknown_landing"),
            "{query}"
        );
    }
    let r = routed(&http, &base, "/v1/route/conf-odd?other=1").await;
    assert_eq!(r.status, 200, "other parameters are ignored");
    for path in ["/v1/route/", "/v1/route/a/b"] {
        let r = routed(&http, &base, path).await;
        assert_eq!(r.status, 404, "{path}: not the route");
    }

    // The room's node draining: no opinion (its joiners still reach it by
    // redirect); new rooms go elsewhere; undrained, named again.
    let drain = |id: &str, on: bool| {
        let (http, base, id) = (http.clone(), base.clone(), id.to_owned());
        async move {
            let verb = if on { "drain" } else { "undrain" };
            let r = send(
                &http,
                &base,
                "POST",
                &format!("/v1/nodes/{id}/{verb}"),
                &Body::None,
                Some(TOKEN),
            )
            .await;
            assert_eq!(r.status(), 200);
        }
    };
    drain(&owner, true).await;
    let r = routed(&http, &base, "/v1/route/conf-ahead1").await;
    assert_eq!((r.status, r.said.as_str()), (204, "owner_draining"));
    let r = routed(
        &http,
        &base,
        &format!("/v1/route/conf-new1?landing={owner}"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_ne!(r.said, owner, "never a new room on a draining node");
    for id in &ids {
        drain(id, true).await;
    }
    let r = routed(&http, &base, "/v1/route/conf-nowhere").await;
    assert_eq!((r.status, r.said.as_str()), (204, "no_eligible_node"));
    for id in &ids {
        drain(id, false).await;
    }
    let r = routed(&http, &base, "/v1/route/conf-ahead1").await;
    assert_eq!((r.status, r.said), (200, owner.clone()));

    // The room's node dies: the room is answered on a live node.
    farm.kill(oi).await;
    let moved = eventually(DEADLINE, "the room answered on a live node", || {
        let (http, base, owner) = (http.clone(), base.clone(), owner.clone());
        async move {
            let r = routed(&http, &base, "/v1/route/conf-ahead1").await;
            (r.status == 200 && r.said != owner).then_some(r.said)
        }
    })
    .await;
    assert!(ids.contains(&moved));

    // Switched off (`api.route_ahead = false`): no opinion, always.
    let off = corral::api::router(
        corral::api::AppState::new(farm.ctrl.clone(), Some(TOKEN.into())).with_route_ahead(false),
    );
    let resp = off
        .oneshot(
            Request::get("/v1/route/conf-ahead1")
                .body(AxBody::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(resp.headers()["corral-no-opinion"], "disabled");

    // Counted per outcome.
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for outcome in [
        "answered",
        "not_a_room",
        "unknown_landing",
        "owner_draining",
        "no_eligible_node",
        "disabled",
    ] {
        assert!(
            text.contains(&format!(
                "corral_route_lookups_total{{outcome=\"{outcome}\"}}"
            )),
            "{outcome}"
        );
    }

    // The store gone: no opinion.
    farm.kill_redis();
    let r = routed(&http, &base, "/v1/route/conf-ahead1").await;
    assert_eq!((r.status, r.said.as_str()), (204, "store_unavailable"));
    farm.stop().await;
}

/// An app asks corral to bring a channel to a room on another node: corral
/// mints a token and redirects the (answered) channel, which arrives on
/// the room's node, joins its room there, and the token is used once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colocate_moves_a_channel_to_its_room_node() {
    let seed = support::seed("colocate_moves_a_channel_to_its_room_node");
    let mut farm = TestFarm::start(2, Backend::Memory, seed).await;
    let api = ApiServer::start(&farm.ctrl, Some(TOKEN)).await;
    let http = farm.http.clone();
    let (owner, channel) = land(&mut farm, &api, "alpha").await;
    let other = farm
        .sims
        .iter()
        .map(|s| s.id().to_owned())
        .find(|i| *i != owner)
        .unwrap();
    // Room bravo lives on the other node.
    let r = send(
        &http,
        &api.url,
        "POST",
        "/v1/rooms/conference/bravo/placement",
        &Body::Json(json!({"landing_node": other})),
        Some(TOKEN),
    )
    .await;
    let placed: Value = r.json().await.unwrap();
    assert_eq!(placed["node"], other.as_str(), "{placed}");
    assert_eq!(placed["created"], true);
    // Colocate alpha's channel into bravo.
    let r = send(
        &http,
        &api.url,
        "POST",
        "/v1/rooms/conference/bravo/colocate",
        &Body::Json(json!({"node": owner, "channel": channel})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.status(), 200);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["action"], "redirect", "{d}");
    assert_eq!(d["node"], other.as_str());
    let token = d["token"].as_str().unwrap().to_owned();
    assert!(d["endpoint"].as_str().unwrap().contains(&token));
    // The call arrives on the other node and joins bravo there.
    let url = format!("{}/v1/rooms/conference/bravo", api.url);
    eventually(
        DEADLINE,
        "the moved call is a member of bravo on its node",
        || {
            let (http, url, other) = (http.clone(), url.clone(), other.clone());
            async move {
                let (_, v) = get_json(&http, url).await;
                let m = v["member_list"].as_array()?.first()?.clone();
                (m["node"] == other.as_str()).then_some(())
            }
        },
    )
    .await;
    // corral's app on the destination consumed the token: it is gone.
    let (s, _) = get_json(&http, format!("{}/v1/tokens/{token}", api.url)).await;
    assert_eq!(s, 404, "the token was used once");
    // The member is recorded before it is answered and bridged: wait for
    // the bridge.
    let idx = farm.sims.iter().position(|s| s.id() == other).unwrap();
    eventually(DEADLINE, "a bridged call on the other node", || {
        let farm = &farm;
        async move {
            let calls = farm.live_calls().await;
            calls
                .iter()
                .any(|(i, c)| *i == idx && c["bridge"].is_string())
                .then_some(())
        }
    })
    .await;
    // The placement of a placed room is stable.
    let r = send(
        &http,
        &api.url,
        "POST",
        "/v1/rooms/conference/bravo/placement",
        &Body::None,
        Some(TOKEN),
    )
    .await;
    let again: Value = r.json().await.unwrap();
    assert_eq!(
        (again["node"].clone(), again["created"].clone()),
        (json!(other), json!(false))
    );
    farm.stop().await;
}

/// The event stream shows a room placed by the API, as `event: room_placed`
/// with the event's JSON, and a drain as `event: node_draining`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_farm_events() {
    let seed = support::seed("events_stream_farm_events");
    let farm = TestFarm::start(2, Backend::Memory, seed).await;
    let api = ApiServer::start(&farm.ctrl, None).await;
    let http = farm.http.clone();
    let resp = http
        .get(format!("{}/v1/events", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut resp = resp;
    let r = send(
        &http,
        &api.url,
        "POST",
        "/v1/rooms/conference/evroom/placement",
        &Body::None,
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = send(
        &http,
        &api.url,
        "POST",
        "/v1/nodes/ast1/drain",
        &Body::None,
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let mut seen = String::new();
    let read = async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("event: node_draining") {
                return;
            }
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("events arrive");
    assert!(seen.contains("event: room_placed\ndata: {"), "{seen}");
    assert!(seen.contains("\"name\":\"evroom\""), "{seen}");
    assert!(seen.contains("\"draining\":true"), "{seen}");
    // A graceful stop does not wait for the open stream: it ends it.
    tokio::time::timeout(DEADLINE, api.stop())
        .await
        .expect("the server stops with an event stream open");
    let end = tokio::time::timeout(DEADLINE, async {
        while resp.chunk().await.ok().flatten().is_some() {}
    });
    end.await.expect("the event stream ends");
    farm.stop().await;
}

async fn oneshot(app: &axum::Router, req: Request<AxBody>) -> (u16, Value) {
    let resp = app.clone().oneshot(req).await.expect("router answers");
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Without a socket: auth is required exactly on the protected routes (no
/// header, wrong token, other scheme → 401 JSON; right token in any scheme
/// case → through), read-only views stay open, unknown routes and methods
/// answer JSON, and odd inputs never panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_odd_inputs_answer_json() {
    let seed = support::seed("auth_and_odd_inputs_answer_json");
    let farm = TestFarm::start(1, Backend::Memory, seed).await;
    let app = corral::api::router(corral::api::AppState::new(
        farm.ctrl.clone(),
        Some(TOKEN.into()),
    ));
    let place = "/v1/rooms/conference/r1/placement";
    for (header, want) in [
        (None, 401),
        (Some("Bearer wrong".to_string()), 401),
        (Some(format!("Bearer {TOKEN}x")), 401),
        (Some(format!("Basic {TOKEN}")), 401),
        (Some(TOKEN.to_string()), 401),
        (Some(format!("Bearer {TOKEN}")), 200),
        (Some(format!("bearer {TOKEN}")), 200),
    ] {
        let mut rb = Request::post(place);
        if let Some(h) = &header {
            rb = rb.header("authorization", h);
        }
        let (s, v) = oneshot(&app, rb.body(AxBody::empty()).unwrap()).await;
        assert_eq!(s, want, "{header:?}: {v}");
        if want == 401 {
            assert_eq!(v["error"]["code"], "unauthorized");
        }
    }
    for open in [
        "/v1/rooms",
        "/v1/nodes",
        "/v1/queues",
        "/healthz",
        "/metrics",
        "/openapi.json",
        "/",
    ] {
        let resp = app
            .clone()
            .oneshot(Request::get(open).body(AxBody::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{open} is open");
    }
    let (s, v) = oneshot(
        &app,
        Request::get("/v2/nothing").body(AxBody::empty()).unwrap(),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (404, json!("route_not_found"))
    );
    let (s, v) = oneshot(
        &app,
        Request::delete("/v1/rooms").body(AxBody::empty()).unwrap(),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (405, json!("method_not_allowed"))
    );
    let odd = [
        ("GET", "/v1/rooms/%FF/x".to_string(), None),
        (
            "GET",
            format!("/v1/rooms/conference/{}", "a".repeat(5000)),
            None,
        ),
        ("GET", "/v1/rooms?limit=-1&cursor=%00".to_string(), None),
        ("GET", "/v1/rooms?cursor=nonsense".to_string(), None),
        ("GET", "/v1/rooms?node=a%20b".to_string(), None),
        ("GET", "/v1/tokens/..%2F..".to_string(), None),
        ("POST", place.to_string(), Some(b"[1,2,3]".to_vec())),
        (
            "POST",
            place.to_string(),
            Some(b"{\"landing_node\": 7}".to_vec()),
        ),
        (
            "POST",
            place.to_string(),
            Some(b"{\"landing_node\": \"ast1\", \"x\": 1}".to_vec()),
        ),
        ("POST", place.to_string(), Some(vec![0xff, 0xfe, 0x00])),
        (
            "POST",
            "/v1/rooms/conference/r1/colocate".to_string(),
            Some(b"{}".to_vec()),
        ),
        (
            "POST",
            "/v1/tokens/abc/consume".to_string(),
            Some(b"{\"node\":\"\"}".to_vec()),
        ),
        ("POST", "/v1/nodes/%E2%82%AC/drain".to_string(), None),
        ("GET", "/v1/queues/%FF".to_string(), None),
        ("GET", format!("/v1/queues/{}", "q".repeat(5000)), None),
        ("POST", "/v1/queues/q1/members".to_string(), None),
        (
            "POST",
            "/v1/queues/q1/members".to_string(),
            Some(b"[1,2,3]".to_vec()),
        ),
        (
            "POST",
            "/v1/queues/q1/members".to_string(),
            Some(b"{\"agent\": 7, \"endpoint\": \"PJSIP/a\"}".to_vec()),
        ),
        (
            "POST",
            "/v1/queues/q1/members".to_string(),
            Some(b"{\"agent\": \"a\", \"endpoint\": \"PJSIP/a\", \"x\": 1}".to_vec()),
        ),
        (
            "POST",
            "/v1/queues/q1/members".to_string(),
            Some(
                format!(
                    "{{\"agent\": \"a\", \"endpoint\": \"PJSIP/{}\"}}",
                    "x".repeat(300)
                )
                .into_bytes(),
            ),
        ),
        (
            "POST",
            "/v1/queues/q1/members".to_string(),
            Some(
                "{\"agent\": \"a\", \"endpoint\": \"PJSIP/\u{e9}\"}"
                    .as_bytes()
                    .to_vec(),
            ),
        ),
        (
            "POST",
            "/v1/queues/q1/members".to_string(),
            Some(vec![0xff, 0xfe, 0x00]),
        ),
        (
            "DELETE",
            "/v1/queues/q1/members/%E2%82%AC".to_string(),
            None,
        ),
        (
            "POST",
            "/v1/queues/q1/members/..%2F../pause".to_string(),
            None,
        ),
        ("POST", "/v1/queues/q1/members/a/unpause".to_string(), None),
    ];
    for (method, path, body) in odd {
        let mut rb = Request::builder()
            .method(method)
            .uri(&path)
            .header("authorization", format!("Bearer {TOKEN}"));
        if body.is_some() {
            rb = rb.header("content-type", "application/json");
        }
        let req = rb
            .body(body.map(AxBody::from).unwrap_or_else(AxBody::empty))
            .unwrap();
        let (s, v) = oneshot(&app, req).await;
        assert!((400..500).contains(&s), "{method} {path}: {s} {v}");
        assert!(v["error"]["code"].is_string(), "{method} {path}: {s} {v}");
    }
    // Queue member changes need the token; the queue views do not.
    for (method, path) in [
        ("POST", "/v1/queues/q1/members"),
        ("DELETE", "/v1/queues/q1/members/a"),
        ("POST", "/v1/queues/q1/members/a/pause"),
        ("POST", "/v1/queues/q1/members/a/unpause"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(AxBody::from(r#"{"agent":"a","endpoint":"PJSIP/a"}"#))
            .unwrap();
        let (s, v) = oneshot(&app, req).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{method} {path}"
        );
    }
    // Nothing above created a queue.
    let (s, v) = oneshot(
        &app,
        Request::get("/v1/queues").body(AxBody::empty()).unwrap(),
    )
    .await;
    assert_eq!((s, v), (200, json!({"queues": []})));
    // The Debug of the state never shows the token.
    let st = corral::api::AppState::new(farm.ctrl.clone(), Some(TOKEN.into()));
    assert!(!format!("{st:?}").contains(TOKEN));
    farm.stop().await;
}

/// `/metrics` names follow `corral_<thing>_<unit>` with counters ending in
/// `_total`, and the API's own latency is among them after a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_named_by_the_rules() {
    let seed = support::seed("metrics_are_named_by_the_rules");
    let mut farm = TestFarm::start(2, Backend::Memory, seed).await;
    let api = ApiServer::start(&farm.ctrl, None).await;
    land(&mut farm, &api, "m1").await;
    let text = farm
        .http
        .get(format!("{}/metrics", api.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.split_whitespace().skip(2);
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        assert!(name.starts_with("corral_"), "{line}");
        if kind == "histogram" {
            assert!(name.ends_with("_seconds"), "{line}");
        }
    }
    for want in [
        "corral_placements_total{",
        "corral_api_request_duration_seconds_count{route=\"/v1/rooms/{kind}/{name}\"",
        "corral_store_request_duration_seconds_count{",
        "corral_ari_request_duration_seconds_count{",
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
    farm.stop().await;
}

/// `GET /v1/queues/{name}` as JSON (status asserted 200).
async fn queue_detail(http: &reqwest::Client, base: &str, name: &str) -> Value {
    let (s, v) = get_json(http, format!("{base}/v1/queues/{name}")).await;
    assert_eq!(s, 200, "{v}");
    v
}

/// Waits until the queue's detail satisfies `ok`; returns it.
async fn queue_until(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    eventually(DEADLINE, what, || {
        let (http, url) = (http.clone(), format!("{base}/v1/queues/{name}"));
        let ok = &ok;
        async move {
            let (s, v) = get_json(&http, url).await;
            (s == 200 && ok(&v)).then_some(v)
        }
    })
    .await
}

/// A static member's whole life through the API, with a real caller on the
/// simulated nodes: added paused (201, from a template), updated (200,
/// its pause flag kept), the caller waits in position 1 and shows in the
/// list and the detail; unpaused, the member is rung, answers and is busy
/// with that caller (`queue_changed` and `queue_connected` on the event
/// stream); paused while busy it stays on its call; removed while busy it
/// is `removing` and goes when the caller hangs up; then it is unknown
/// (404). A call-in agent's id cannot become a static member (409), and
/// bad members are refused with clear 400s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_members_through_the_api() {
    let seed = support::seed("queue_members_through_the_api");
    let mut farm = TestFarm::start(2, Backend::Memory, seed).await;
    let api = ApiServer::start(&farm.ctrl, Some(TOKEN)).await;
    let http = farm.http.clone();
    let base = api.url.clone();
    let post = |path: String, body: Body| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = send(&http, &base, "POST", &path, &body, Some(TOKEN)).await;
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, v) = get_json(&http, format!("{base}/v1/queues")).await;
    assert_eq!((s, v), (200, json!({"queues": []})));

    let mut events = http.get(format!("{base}/v1/events")).send().await.unwrap();
    assert_eq!(events.status(), 200);

    // Added paused, from a template.
    let (s, a) = post(
        "/v1/queues/sales/members".into(),
        Body::Json(json!({"agent": "alice", "template": "PJSIP/{agent}@kamailio", "paused": true})),
    )
    .await;
    assert_eq!(s, 201, "{a}");
    assert_eq!(
        a,
        json!({"agent": "alice", "kind": "static", "endpoint": "PJSIP/alice@kamailio",
               "channel": null, "state": "paused", "paused": true, "idle_ms": 0,
               "answered": 0, "caller": null, "removing": false})
    );
    // Updated: 200, the endpoint changes, the pause flag is kept.
    let (s, a) = post(
        "/v1/queues/sales/members".into(),
        Body::Json(json!({"agent": "alice", "endpoint": "PJSIP/alice"})),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(
        (a["endpoint"].as_str(), a["paused"].as_bool()),
        (Some("PJSIP/alice"), Some(true))
    );
    let d = queue_detail(&http, &base, "sales").await;
    assert_eq!(d["agents"].as_array().unwrap().len(), 1, "{d}");
    assert_eq!(d["callers"], json!([]));
    assert_eq!(d["strategy"], "longest-idle");
    assert!(d["wrapup_ms"].is_u64() && d["max_callers"].is_null(), "{d}");

    // A caller: it waits in position 1 (alice is paused).
    farm.call("queue-sales", "qc1").await;
    let d = queue_until(&http, &base, "sales", "the caller waits", |d| {
        d["callers"].as_array().is_some_and(|c| c.len() == 1)
    })
    .await;
    let c = &d["callers"][0];
    assert_eq!(
        (c["position"].as_u64(), c["caller"].as_str()),
        (Some(1), Some("1000")),
        "{d}"
    );
    assert!(c["waiting_ms"].is_u64() && c["offered"] == json!([]), "{d}");
    let caller = c["channel"].as_str().unwrap().to_owned();
    let caller_node = c["node"].as_str().unwrap().to_owned();
    assert_eq!(d["node"].as_str(), Some(caller_node.as_str()), "{d}");
    let (_, list) = get_json(&http, format!("{base}/v1/queues")).await;
    let row = &list["queues"][0];
    assert_eq!(
        (
            row["name"].as_str(),
            row["waiting"].as_u64(),
            row["node"].as_str()
        ),
        (Some("sales"), Some(1), Some(caller_node.as_str())),
        "{list}"
    );
    assert_eq!(
        row["agents"],
        json!({"available": 0, "paused": 1, "ringing": 0, "busy": 0, "wrap_up": 0})
    );
    for k in [
        "answered",
        "abandoned",
        "timed_out",
        "overflowed",
        "lost",
        "longest_wait_ms",
    ] {
        assert!(row[k].is_u64(), "{k} in {row}");
    }

    // Unpaused: rung, answered, busy with that caller.
    let (s, a) = post("/v1/queues/sales/members/alice/unpause".into(), Body::None).await;
    assert_eq!((s, a["paused"].as_bool()), (200, Some(false)), "{a}");
    let d = queue_until(
        &http,
        &base,
        "sales",
        "alice is busy with the caller",
        |d| d["agents"][0]["state"] == "busy",
    )
    .await;
    assert_eq!(
        d["agents"][0]["caller"].as_str(),
        Some(caller.as_str()),
        "{d}"
    );
    assert_eq!(d["callers"], json!([]));
    queue_until(
        &http,
        &base,
        "sales",
        "the caller counts as answered",
        |d| d["answered"] == 1 && d["agents"][0]["answered"] == 1,
    )
    .await;
    let mut seen = String::new();
    tokio::time::timeout(DEADLINE, async {
        while let Some(chunk) = events.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("event: queue_connected") {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("queue_connected on the event stream: {seen}"));
    assert!(seen.contains("event: queue_changed\ndata: {"), "{seen}");
    assert!(seen.contains("\"queue\":\"sales\""), "{seen}");
    assert!(seen.contains("\"agent\":\"alice\""), "{seen}");

    // Paused while busy: the call goes on.
    let (s, a) = post("/v1/queues/sales/members/alice/pause".into(), Body::None).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(
        (a["state"].as_str(), a["paused"].as_bool()),
        (Some("busy"), Some(true))
    );
    // Removed while busy: still listed, `removing`, until the call ends.
    let r = send(
        &http,
        &base,
        "DELETE",
        "/v1/queues/sales/members/alice",
        &Body::None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.status(), 204);
    let d = queue_detail(&http, &base, "sales").await;
    assert_eq!(d["agents"][0]["removing"], true, "{d}");
    let ci = farm
        .sims
        .iter()
        .position(|s| s.id() == caller_node)
        .unwrap();
    let r = http
        .delete(format!(
            "{}/ari/channels/{caller}",
            farm.sims[ci].base_url()
        ))
        .basic_auth("corral", Some("corral"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    queue_until(&http, &base, "sales", "alice gone after her call", |d| {
        d["agents"] == json!([])
    })
    .await;
    for path in [
        "/v1/queues/sales/members/alice/pause",
        "/v1/queues/sales/members/alice/unpause",
    ] {
        let (s, v) = post(path.into(), Body::None).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (404, Some("agent_not_found")),
            "{path}"
        );
    }
    let r = send(
        &http,
        &base,
        "DELETE",
        "/v1/queues/sales/members/alice",
        &Body::None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.status(), 404);

    // A call-in agent's id is not free for a static member.
    farm.call("agent-sales-amy", "ag1").await;
    let d = queue_until(&http, &base, "sales", "amy logged in", |d| {
        d["agents"][0]["agent"] == "amy"
    })
    .await;
    let amy = &d["agents"][0];
    assert_eq!(
        (amy["kind"].as_str(), amy["endpoint"].as_null()),
        (Some("call_in"), Some(())),
        "{d}"
    );
    assert!(amy["channel"].is_string(), "{d}");
    let (s, v) = post(
        "/v1/queues/sales/members".into(),
        Body::Json(json!({"agent": "amy", "endpoint": "PJSIP/amy"})),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("agent_logged_in")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("call-in"),
        "{v}"
    );

    // Bad members: clear 400s.
    for (body, code, says) in [
        (
            json!({"agent": "al-ice", "endpoint": "PJSIP/x"}),
            "bad_agent",
            "agent id",
        ),
        (
            json!({"agent": "bob", "endpoint": "PJSIP/bob", "template": "PJSIP/{agent}"}),
            "bad_endpoint",
            "not both",
        ),
        (json!({"agent": "bob"}), "bad_endpoint", "template"),
        (
            json!({"agent": "bob", "endpoint": "bob"}),
            "bad_endpoint",
            "Tech/resource",
        ),
        (
            json!({"agent": "bob", "endpoint": "PJSIP/a,PJSIP/b"}),
            "bad_endpoint",
            "','",
        ),
        (
            json!({"agent": "bob", "template": "PJSIP/bob"}),
            "bad_endpoint",
            "{agent}",
        ),
        (
            json!({"agent": "bob", "endpoint": "PJSIP/bob", "paused": "yes"}),
            "malformed_json",
            "",
        ),
    ] {
        let (s, v) = post("/v1/queues/sales/members".into(), Body::Json(body.clone())).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}: {v}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{body}: {v}"
        );
    }
    // Never used: unknown, and asking does not create it.
    for path in ["/v1/queues/nosuch", "/v1/queues/nosuch/members/bob/pause"] {
        let method = if path.ends_with("pause") {
            "POST"
        } else {
            "GET"
        };
        let r = send(&http, &base, method, path, &Body::None, Some(TOKEN)).await;
        assert_eq!(r.status(), 404, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "queue_not_found", "{path}");
    }
    let (_, list) = get_json(&http, format!("{base}/v1/queues")).await;
    assert_eq!(list["queues"].as_array().unwrap().len(), 1, "{list}");
    farm.stop().await;
}

/// Limits for the connection tests: `header`, `idle` and `cap` as given.
fn limits(header_ms: u64, idle_ms: u64, cap: usize) -> corral::api::ServerConfig {
    corral::api::ServerConfig {
        header_read_timeout: Duration::from_millis(header_ms),
        idle_timeout: Duration::from_millis(idle_ms),
        max_connections: cap,
    }
}

/// A raw client connection to `url` (`http://host:port`).
async fn raw(url: &str) -> tokio::net::TcpStream {
    let addr = url.trim_start_matches("http://");
    tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the API")
}

/// Sends a keep-alive `GET /healthz` on `conn` and reads its whole answer,
/// failing after `deadline`.
async fn healthz_on(conn: &mut tokio::net::TcpStream, deadline: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: corral\r\n\r\n")
        .await
        .expect("request sent");
    let mut seen = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        while !seen.ends_with(b"\r\n\r\nok\n") {
            let n = conn.read(&mut buf).await.expect("read the answer");
            assert!(
                n > 0,
                "closed before answering: {:?}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(deadline, read)
        .await
        .expect("/healthz answers");
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

/// Reads from `conn` until the server closes it (EOF or reset), failing
/// after `deadline`; returns how long that took.
async fn closed_within(conn: &mut tokio::net::TcpStream, deadline: Duration) -> Duration {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let wait = async {
        let mut buf = [0u8; 1024];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(deadline, wait)
        .await
        .expect("the server closes the connection");
    started.elapsed()
}

/// Slowloris: a client that sends half a request line and stalls is cut
/// off once `header_read_timeout` has passed (here 300 ms, with an idle
/// timeout of a minute that cannot be what closes it); the server answers
/// others meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_is_cut_off_after_the_header_read_timeout() {
    use tokio::io::AsyncWriteExt;
    let seed = support::seed("a_half_sent_request_is_cut_off_after_the_header_read_timeout");
    let farm = TestFarm::start(1, Backend::Memory, seed).await;
    let api = ApiServer::start_with(&farm.ctrl, None, limits(300, 60_000, 16)).await;
    let mut stalled = raw(&api.url).await;
    stalled.write_all(b"GET /heal").await.unwrap();
    let mut other = raw(&api.url).await;
    healthz_on(&mut other, DEADLINE).await;
    let took = closed_within(&mut stalled, DEADLINE).await;
    assert!(
        took < Duration::from_secs(10),
        "cut off after {took:?}, the timeout is 300 ms"
    );
    api.stop().await;
    farm.stop().await;
}

/// A keep-alive connection left idle after its request is closed once
/// `idle_timeout` has passed (here 300 ms, with a header read timeout of a
/// minute that cannot be what closes it). An event stream open all along
/// is a request in progress, not idle: it still delivers events after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let seed = support::seed("an_idle_keep_alive_connection_is_closed_after_the_idle_timeout");
    let farm = TestFarm::start(1, Backend::Memory, seed).await;
    let api = ApiServer::start_with(&farm.ctrl, None, limits(60_000, 300, 16)).await;
    let http = farm.http.clone();
    let mut events = http
        .get(format!("{}/v1/events", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let mut idle = raw(&api.url).await;
    healthz_on(&mut idle, DEADLINE).await;
    let took = closed_within(&mut idle, DEADLINE).await;
    assert!(
        took < Duration::from_secs(10),
        "closed after {took:?}, the idle timeout is 300 ms"
    );
    // The stream, opened before, has been open longer than the idle
    // timeout: it must still carry events.
    let r = send(
        &http,
        &api.url,
        "POST",
        "/v1/rooms/conference/idle/placement",
        &Body::None,
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let mut seen = String::new();
    let read = async {
        while let Some(chunk) = events.chunk().await.expect("the stream is open") {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("event: room_placed") {
                return;
            }
        }
        panic!("the event stream ended: {seen}");
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("the event arrives");
    api.stop().await;
    farm.stop().await;
}

/// With `max_connections` = 2 taken by two open keep-alive connections, a
/// third is not served (its `/healthz` gets no answer for as long as we
/// look: 500 ms); once one of the two closes, it is answered, and a stop
/// does not wait for the idle connections left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_until_one_frees_up() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let seed = support::seed("connections_beyond_the_cap_wait_until_one_frees_up");
    let farm = TestFarm::start(1, Backend::Memory, seed).await;
    let api = ApiServer::start_with(&farm.ctrl, None, limits(60_000, 30_000, 2)).await;
    let mut first = raw(&api.url).await;
    healthz_on(&mut first, DEADLINE).await;
    let mut second = raw(&api.url).await;
    healthz_on(&mut second, DEADLINE).await;

    let mut third = raw(&api.url).await;
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: corral\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a third connection was served with the cap at 2: {early:?}"
    );
    drop(first);
    let mut seen = Vec::new();
    let answered = async {
        while !seen.ends_with(b"ok\n") {
            let n = third.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(DEADLINE, answered)
        .await
        .expect("the waiting connection is served once a slot frees up");
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
    drop(third);
    // The server still answers, through a new connection.
    let r = support::eventually(DEADLINE, "/healthz answers a new client", || {
        let (http, url) = (farm.http.clone(), format!("{}/healthz", api.url));
        async move {
            http.get(url)
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
        }
    })
    .await;
    assert_eq!(r.text().await.unwrap(), "ok\n");
    tokio::time::timeout(DEADLINE, api.stop())
        .await
        .expect("a stop closes the idle connections and returns");
    drop(second);
    farm.stop().await;
}
