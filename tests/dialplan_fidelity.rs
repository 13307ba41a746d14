//! Differential fidelity of the simulator's dialplan: the same
//! `extensions.conf` on a real Asterisk 22.10.1 and on a simulated node,
//! for a table of extensions, comparing
//! - which extensions match, in Asterisk's order (`dialplan show
//!   EXTEN@from-proxy` against `Dialplan::matches`);
//! - where a call goes when no websocket owns the Stasis app: every
//!   application executed with its substituted data (`Executing [...]`
//!   lines of `messages.log` against the simulator's `ChannelDialplan`
//!   events) and what the SIP caller gets (sipp against `POST /sim/calls`);
//! - the same with a websocket for `corral`: the `StasisStart` arguments
//!   and `dialplan` position, then `POST /channels/{id}/continue` and where
//!   the call goes from there, and the `StasisEnd` position.
//!
//! The real Asterisk comes from `support::real_asterisk`, which starts it
//! through the testbed (`Install::locate`, `AsteriskNode`), never skipped:
//! without one the test fails and says how to get one. Calls are placed
//! one at a time with sipp (`uac-wait-answer-bye.xml`). The table is
//! printed; any difference fails the test.

mod sim_util;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use corral::sim::{Dialplan, SimConfig, SimNode};
use serde_json::Value;
use sim_util::{Ari, Events};
use support::real_asterisk::{RealAsterisk, sipp_call, sipp_scenario, start_asterisk};
use support::{Poll, eventually};

/// A call's deadline from INVITE to the end of its dialplan.
const CALL_DEADLINE: Duration = Duration::from_secs(20);

/// Extensions dialled against the shipped dialplan.
const SHIPPED_CASES: &[&str] = &[
    "conf-sales",
    "conf-a-b",
    "conf-my-room",
    "confXYZ",
    "conf-",
    "conf",
    "conf--x",
    "c-o-n-f-x",
    "CONF-sales",
    "queue-support",
    "queuesX",
    "queue-",
    "agent-sales-alice",
    "agent-a-b-c",
    "agent-x",
    "agent-",
    "agent-q-",
    "Ab3dE5fG7hI9jK1lM3nO5p",
    "confAb3dE5fG7hI9jK1lM3",
    "s",
    "h",
    "1",
    "*",
    "*8",
    "*80",
    "-",
    "x",
    "conf-a,b",
    "conf-a;x=y",
    "conf\"x",
    "agent-\u{fc}-x",
    "conf-${EXTEN}",
    "queue-a?b",
    "conf-a+b&c",
    "conf-0123456789012345678901234567890123456789012345678901234567890123456789012345",
];

/// Rules of the matcher and the applications, dialled against
/// `tests/data/dialplan_rules.conf`.
const RULE_CASES: &[&str] = &[
    "5", "12", "123", "1234", "12-34", "1-2-3-4", "129", "2345", "1999", "0000", "h41", "h16",
    "end", "gl", "nx", "ans", "ab", "aB", "Ab", "-", "_X.", "_12", "9x", "z1", "n2", "N2", "7-",
];

/// The `user` of a SIP URI for `exten`: what SIP allows raw stays raw,
/// the rest is percent-escaped (pjsip decodes it back).
fn sip_user(exten: &str) -> String {
    let mut out = String::new();
    for b in exten.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Escapes an extension for the Asterisk CLI parser.
fn cli_escape(exten: &str) -> String {
    let mut out = String::new();
    for c in exten.chars() {
        if matches!(c, '"' | '\\' | ' ') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Where one call went.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Route {
    /// The caller's final SIP status (`200` once answered).
    sip: String,
    /// `StasisStart` args, when the call entered the app.
    args: Option<Vec<String>>,
    /// `StasisStart`'s `dialplan` (`exten@context:priority app(data)`).
    stasis_at: Option<String>,
    /// `StasisEnd`'s `dialplan` after `continue`.
    end_at: Option<String>,
    /// Every application executed: `exten@context:priority App(data)`.
    trace: Vec<String>,
    /// What a `subscribeAll` app saw of the channel: event types in order
    /// (`ChannelVarset` left out: the simulator does not send it), the
    /// `ChannelDestroyed` cause last.
    events: Vec<String>,
}

impl Route {
    /// One line for the table.
    fn summary(&self) -> String {
        let mut parts = Vec::new();
        for t in &self.trace {
            if let Some(i) = t.find(" Stasis(") {
                parts.push(t[i + 1..].to_string());
            }
        }
        if let Some(a) = &self.args {
            parts.push(format!("args {a:?}"));
        }
        if let Some(last) = self.trace.last() {
            let ctx = last
                .split_once('@')
                .and_then(|(_, r)| r.split_once(':'))
                .map(|(c, _)| c)
                .unwrap_or("");
            if ctx == "corral-fallback" {
                parts.push("fallback".into());
            } else if let Some(i) = last.find(' ') {
                parts.push(format!("ends {}", &last[i + 1..]));
            }
        }
        parts.push(format!("SIP {}", self.sip));
        parts.join(" -> ")
    }
}

fn dialplan_at(channel: &Value) -> String {
    let d = &channel["dialplan"];
    format!(
        "{}@{}:{} {}({})",
        d["exten"].as_str().unwrap_or(""),
        d["context"].as_str().unwrap_or(""),
        d["priority"],
        d["app_name"].as_str().unwrap_or(""),
        d["app_data"].as_str().unwrap_or("")
    )
}

fn args_of(start: &Value) -> Vec<String> {
    start["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Parses `... Executing [EXTEN@CONTEXT:PRIO] APP("CHAN", "DATA") in new stack`.
fn parse_executing(line: &str) -> Option<(String, String)> {
    let start = line.find("Executing [")? + "Executing [".len();
    let call = line.find("(\"PJSIP/")?;
    let head = &line[start..call];
    let close = head.rfind("] ")?;
    let (at, app) = (&head[..close], &head[close + 2..]);
    let rest = &line[call + 2..];
    let sep = rest.find("\", \"")?;
    let chan = rest[..sep].to_string();
    let data = rest[sep + 4..].strip_suffix("\") in new stack")?;
    Some((chan, format!("{at} {app}({data})")))
}

fn log_len(path: &Path) -> usize {
    std::fs::metadata(path)
        .map(|m| m.len() as usize)
        .unwrap_or(0)
}

fn log_since(path: &Path, from: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(bytes.get(from..).unwrap_or_default()).into_owned()
}

/// One call on the real Asterisk; with `corral` connected, the test plays
/// corral: it reads `StasisStart` and continues the channel.
async fn real_call(
    ast: &RealAsterisk,
    observer: &Events,
    exten: &str,
    corral: Option<&Events>,
) -> Route {
    let log = ast.messages_log();
    let from = log_len(&log);
    let before = corral.map_or(0, |e| e.of_type("StasisStart").len());
    let mut sipp = sipp_call(
        &sipp_scenario(&ast.install, "uac-wait-answer-bye.xml"),
        &sip_user(exten),
        ast.sip_port,
    );
    let mut route = Route::default();
    let http = reqwest::Client::new();
    let mut poll = Poll::new(CALL_DEADLINE);
    let mut ended = None;
    loop {
        if let Some(ok) = sipp.try_wait() {
            ended = Some(ok);
        }
        if let Some(ev) = corral
            && route.args.is_none()
            && let Some(start) = ev.of_type("StasisStart").get(before).cloned()
        {
            route.args = Some(args_of(&start));
            route.stasis_at = Some(dialplan_at(&start["channel"]));
            let id = start["channel"]["id"].as_str().unwrap_or("").to_string();
            let r = http
                .post(format!("{}/ari/channels/{id}/continue", ast.base_url()))
                .basic_auth(ast.credentials().0, Some(ast.credentials().1))
                .send()
                .await
                .expect("continue");
            assert_eq!(r.status().as_u16(), 204, "continue {exten}");
            let end = eventually(CALL_DEADLINE, "StasisEnd", || async {
                ev.of_type("StasisEnd")
                    .into_iter()
                    .find(|e| e["channel"]["id"] == id.as_str())
            })
            .await;
            route.end_at = Some(dialplan_at(&end["channel"]));
        }
        if ended.is_some() {
            break;
        }
        assert!(
            poll.next().await,
            "sipp call to {exten:?} still running after {CALL_DEADLINE:?}"
        );
    }
    let responses = sipp.invite_responses();
    route.sip = if responses.contains(&200) {
        "200".into()
    } else {
        responses
            .iter()
            .rev()
            .find(|s| **s >= 200)
            .map_or("none".into(), u16::to_string)
    };
    // The log is written by its own thread: wait for the end of this
    // call's dialplan (there is none for a refused call).
    if !["403", "404", "484"].contains(&route.sip.as_str()) {
        eventually(
            CALL_DEADLINE,
            &format!("the end of {exten:?} in messages.log"),
            || async {
                let text = log_since(&log, from);
                [
                    "exited non-zero on '",
                    "Auto fallthrough, channel '",
                    "sent to invalid extension",
                ]
                .iter()
                .any(|m| text.contains(m))
                .then_some(())
            },
        )
        .await;
    }
    let executed: Vec<(String, String)> = log_since(&log, from)
        .lines()
        .filter_map(parse_executing)
        .collect();
    if let Some((chan, _)) = executed.first() {
        let chan = chan.clone();
        eventually(
            CALL_DEADLINE,
            "ChannelDestroyed on the real node",
            || async {
                observer
                    .of_type("ChannelDestroyed")
                    .into_iter()
                    .find(|e| e["channel"]["name"] == chan.as_str())
            },
        )
        .await;
        let mine: Vec<Value> = observer
            .all()
            .into_iter()
            .filter(|e| e["channel"]["name"] == chan.as_str())
            .collect();
        route.events = observed(&mine);
    }
    route.trace = executed.into_iter().map(|(_, t)| t).collect();
    route
}

/// The observer's view of one channel (see [`Route::events`]).
fn observed(mine: &[Value]) -> Vec<String> {
    mine.iter()
        .filter(|e| e["type"] != "ChannelVarset")
        .map(|e| match e["type"].as_str().unwrap_or("") {
            "ChannelDestroyed" => format!("ChannelDestroyed({})", e["cause"]),
            "ChannelHangupRequest" => format!("ChannelHangupRequest({},{})", e["cause"], e["soft"]),
            "ChannelStateChange" => format!(
                "ChannelStateChange({})",
                e["channel"]["state"].as_str().unwrap_or("")
            ),
            t => t.to_string(),
        })
        .collect()
}

/// The same call on the simulated node; `observer` (subscribeAll) sees
/// the channel's `ChannelDialplan`, `ChannelStateChange` and
/// `ChannelDestroyed`.
async fn sim_call(ari: &Ari, observer: &Events, exten: &str, corral: Option<&Events>) -> Route {
    let r = ari.call(exten, "sipp").await;
    let mut route = Route::default();
    if r.status != 201 {
        route.sip = r.status.to_string();
        return route;
    }
    let id = r.body["channel_id"]
        .as_str()
        .expect("channel id")
        .to_string();
    if let Some(ev) = corral
        && r.body["stasis"] == "started"
    {
        let start = ev.wait_for_channel("StasisStart", &id).await;
        route.args = Some(args_of(&start));
        route.stasis_at = Some(dialplan_at(&start["channel"]));
        let c = ari.post(&format!("/ari/channels/{id}/continue")).await;
        assert_eq!(c.status, 204, "continue {exten}");
        let end = ev.wait_for_channel("StasisEnd", &id).await;
        route.end_at = Some(dialplan_at(&end["channel"]));
    }
    observer.wait_for_channel("ChannelDestroyed", &id).await;
    let mine: Vec<Value> = observer
        .all()
        .into_iter()
        .filter(|e| e["channel"]["id"] == id.as_str())
        .collect();
    let answered = mine
        .iter()
        .any(|e| e["type"] == "ChannelStateChange" && e["channel"]["state"] == "Up");
    route.sip = if answered {
        "200".into()
    } else {
        r.body["sip_status"]
            .as_u64()
            .map_or("none".into(), |s| s.to_string())
    };
    route.events = observed(&mine);
    route.trace = mine
        .iter()
        .filter(|e| e["type"] == "ChannelDialplan")
        .map(|e| {
            let d = &e["channel"]["dialplan"];
            format!(
                "{}@{}:{} {}({})",
                d["exten"].as_str().unwrap_or(""),
                d["context"].as_str().unwrap_or(""),
                d["priority"],
                e["dialplan_app"].as_str().unwrap_or(""),
                e["dialplan_app_data"].as_str().unwrap_or("")
            )
        })
        .collect();
    route
}

/// `dialplan show EXTEN@from-proxy`: the names listed, in order.
fn real_matches(ast: &RealAsterisk, exten: &str) -> Vec<String> {
    ast.rx(&format!("dialplan show {}@from-proxy", cli_escape(exten)))
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix("  '")?;
            let end = l.find("' =>")?;
            Some(l[..end].to_string())
        })
        .collect()
}

#[derive(Debug, Default)]
struct Row {
    exten: String,
    matched: (Vec<String>, Vec<String>),
    alone: (Route, Route),
    owned: Option<(Route, Route)>,
}

impl Row {
    fn differs(&self) -> bool {
        self.matched.0 != self.matched.1
            || self.alone.0 != self.alone.1
            || self.owned.as_ref().is_some_and(|(a, b)| a != b)
    }
}

/// Runs the cases on both sides: first every call with no websocket for
/// `corral` (so the app was never registered), then every call with one.
async fn compare(conf: &Path, cases: &[&str], with_websocket: bool) -> Vec<Row> {
    let ast = start_asterisk(conf).await;
    let text = std::fs::read_to_string(conf).expect("read the dialplan");
    let dialplan =
        Dialplan::parse(&text).unwrap_or_else(|e| panic!("the simulator refuses it: {e}"));
    let mut cfg = SimConfig::new("fidelity");
    cfg.dialplan = dialplan.clone();
    let node = SimNode::start(cfg).await.expect("sim node");
    let ari = Ari::new(&node);
    let observer = Events::connect(&node, "observer", true).await;
    let real_observer = Events::connect_url(ast.events_url("observer", true)).await;
    let mut rows: Vec<Row> = Vec::new();
    for exten in cases {
        let real = real_call(&ast, &real_observer, exten, None).await;
        let sim = sim_call(&ari, &observer, exten, None).await;
        rows.push(Row {
            exten: (*exten).to_string(),
            matched: (
                real_matches(&ast, exten),
                dialplan.matches("from-proxy", exten),
            ),
            alone: (real, sim),
            owned: None,
        });
    }
    if with_websocket {
        let real_corral = Events::connect_url(ast.events_url("corral", false)).await;
        let sim_corral = Events::connect(&node, "corral", false).await;
        // Both apps answer before the first call.
        eventually(
            Duration::from_secs(5),
            "corral registered on the real node",
            || async {
                let r = reqwest::Client::new()
                    .get(format!("{}/ari/applications/corral", ast.base_url()))
                    .basic_auth(ast.credentials().0, Some(ast.credentials().1))
                    .send()
                    .await
                    .ok()?;
                (r.status().as_u16() == 200).then_some(())
            },
        )
        .await;
        for row in &mut rows {
            let real = real_call(&ast, &real_observer, &row.exten, Some(&real_corral)).await;
            let sim = sim_call(&ari, &observer, &row.exten, Some(&sim_corral)).await;
            row.owned = Some((real, sim));
        }
    }
    rows
}

fn print_table(title: &str, rows: &[Row]) {
    println!("\n{title}");
    println!(
        "{:<26} {:<16} {:<58} {:<66} SIM",
        "EXTEN", "MATCHES (real)", "NO WEBSOCKET (real)", "WEBSOCKET: StasisStart, continue (real)"
    );
    for r in rows {
        let exten: String = if r.exten.chars().count() > 25 {
            format!("{}...", r.exten.chars().take(22).collect::<String>())
        } else {
            r.exten.clone()
        };
        let matched = r.matched.0.first().cloned().unwrap_or_else(|| "-".into());
        let owned = r.owned.as_ref().map(|o| o.0.summary()).unwrap_or_default();
        println!(
            "{:<26} {:<16} {:<58} {:<66} {}",
            exten,
            matched,
            r.alone.0.summary(),
            owned,
            if r.differs() { "DIFFERS" } else { "same" }
        );
    }
    if let Some(r) = rows.first() {
        println!(
            "\n{:?} as a subscribeAll app sees it, no websocket for corral (real and sim alike):\n  {}",
            r.exten,
            r.alone.0.events.join(", ")
        );
    }
    for r in rows.iter().filter(|r| r.differs()) {
        println!("\n{:?} differs:", r.exten);
        println!(
            "  matches real {:?}\n          sim  {:?}",
            r.matched.0, r.matched.1
        );
        println!(
            "  alone   real {:#?}\n          sim  {:#?}",
            r.alone.0, r.alone.1
        );
        if let Some((a, b)) = &r.owned {
            println!("  owned   real {a:#?}\n          sim  {b:#?}");
        }
    }
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The shipped `deploy/asterisk/extensions.conf` routes every extension of
/// the table the same on a real Asterisk 22.10.1 and on the simulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_dialplan_routes_like_asterisk() {
    let rows = compare(
        &repo_file("deploy/asterisk/extensions.conf"),
        SHIPPED_CASES,
        true,
    )
    .await;
    print_table(
        "deploy/asterisk/extensions.conf: real Asterisk 22.10.1 against the simulator",
        &rows,
    );
    let bad: Vec<&str> = rows
        .iter()
        .filter(|r| r.differs())
        .map(|r| r.exten.as_str())
        .collect();
    assert!(
        bad.is_empty(),
        "the simulator differs from Asterisk for {bad:?}"
    );
}

/// The matcher's and the applications' rules (X Z N, sets, `.`, `!`,
/// dashes, literal names first, labels, Goto to nowhere, Hangup before
/// answer, falling off the end) against a real Asterisk 22.10.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialplan_rules_match_asterisk() {
    let rows = compare(
        &repo_file("tests/data/dialplan_rules.conf"),
        RULE_CASES,
        false,
    )
    .await;
    print_table(
        "tests/data/dialplan_rules.conf: real Asterisk 22.10.1 against the simulator",
        &rows,
    );
    let bad: Vec<&str> = rows
        .iter()
        .filter(|r| r.differs())
        .map(|r| r.exten.as_str())
        .collect();
    assert!(
        bad.is_empty(),
        "the simulator differs from Asterisk for {bad:?}"
    );
}

#[test]
fn executing_lines_parse() {
    let l = r#"[2026-12-06 13:17:21.671] VERBOSE[20229][C-00000001] pbx.c: Executing [conf-sales@from-proxy:2] Stasis("PJSIP/proxy-00000000", "corral,conference,sales") in new stack"#;
    assert_eq!(
        parse_executing(l),
        Some((
            "PJSIP/proxy-00000000".into(),
            "conf-sales@from-proxy:2 Stasis(corral,conference,sales)".into()
        ))
    );
    assert_eq!(sip_user("conf\"x ü"), "conf%22x%20%C3%BC");
    assert_eq!(cli_escape("a\"b c"), "a\\\"b\\ c");
}
