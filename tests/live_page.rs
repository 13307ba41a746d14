//! The live room map in a real browser: headless Chromium loads `/` from
//! corral's API (simulated nodes, a running controller), shows the nodes
//! and the rooms, and shows a new room — learnt from the event stream —
//! when a call arrives, without a reload; its Queues panel follows a
//! queue's waiting callers and answered calls the same way. Driven over
//! the Chrome DevTools Protocol (`Runtime.evaluate`) with tokio-tungstenite.
//!
//! Needs the `chromium` binary (Debian package `chromium`; `./.ci/test`
//! installs it). Without it the test fails and says so; it never skips.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::api::ApiServer;
use support::eventually;
use support::farm::{Backend, TestFarm};
use tokio_tungstenite::tungstenite::Message;

const DEADLINE: Duration = Duration::from_secs(20);

/// A headless Chromium, killed on drop.
struct Browser {
    child: Child,
    /// `http://127.0.0.1:<port>` of its DevTools endpoint.
    devtools: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts Chromium on `url` and waits for its DevTools line.
    async fn open(url: &str) -> Browser {
        let bin = ["chromium", "chromium-browser"]
            .into_iter()
            .find(|b| {
                Command::new(b)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .unwrap_or_else(|| {
                panic!(
                    "chromium is not installed: the live page's browser test needs it \
                     (`sudo apt-get install -y chromium`, or run ./.ci/test which installs it)"
                )
            });
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Read stderr to its end (a closed pipe could stop Chromium).
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("DevTools listening on ").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(rest.trim().to_owned());
                }
            }
        });
        let ws = tokio::time::timeout(DEADLINE, rx)
            .await
            .expect("Chromium prints its DevTools address")
            .expect("Chromium exited before printing its DevTools address");
        let hostport = ws
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        Browser {
            child,
            devtools: format!("http://{hostport}"),
            _profile: profile,
        }
    }

    /// The page target's DevTools websocket.
    async fn page(&self) -> Page {
        let http = reqwest::Client::new();
        let list_url = format!("{}/json/list", self.devtools);
        let ws_url = eventually(DEADLINE, "a page target", || {
            let (http, u) = (http.clone(), list_url.clone());
            async move {
                let targets: Vec<Value> = http.get(u).send().await.ok()?.json().await.ok()?;
                targets
                    .into_iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
            }
        })
        .await;
        let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .expect("DevTools websocket");
        Page { ws, next: 0 }
    }
}

/// A CDP session on one page.
struct Page {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
}

impl Page {
    /// `Runtime.evaluate(expr)` → its value (JSON).
    async fn eval(&mut self, expr: &str) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": "Runtime.evaluate",
            "params": {"expression": expr, "returnByValue": true}});
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
        loop {
            let m = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("DevTools answers")
                .expect("DevTools socket open")
                .unwrap();
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["id"] == id {
                    return v["result"]["result"]["value"].clone();
                }
            }
        }
    }

    /// Waits until `expr` evaluates to something other than null/false.
    async fn until(&mut self, what: &str, expr: &str) -> Value {
        let mut poll = support::Poll::new(DEADLINE);
        loop {
            let v = self.eval(expr).await;
            if !v.is_null() && v != Value::Bool(false) {
                return v;
            }
            assert!(poll.next().await, "page never showed: {what}");
        }
    }
}

/// The page shows every node with its state and the rooms with their
/// member counts, and a room created by a new call appears without a
/// reload (the same document, updated from the `room_placed` event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_shows_rooms_and_updates_without_reload() {
    let seed = support::seed("the_live_page_shows_rooms_and_updates_without_reload");
    let mut farm = TestFarm::start(2, Backend::Memory, seed).await;
    let api = ApiServer::start(&farm.ctrl, Some("page-token")).await;
    farm.call("conf-first", "p1").await;
    let browser = Browser::open(&format!("{}/", api.url)).await;
    let mut page = browser.page().await;

    let members = page
        .until(
            "room first with one member",
            r#"document.querySelector('[data-room="conference:first"]')?.dataset.members === "1""#,
        )
        .await;
    assert_eq!(members, true);
    let states = page
        .eval(r#"[...document.querySelectorAll('[data-node]')].map(n => n.dataset.node + '=' + n.dataset.state).join(',')"#)
        .await;
    assert_eq!(states, "ast1=up,ast2=up");
    page.until(
        "the event stream is connected",
        r#"document.getElementById('conn').className === 'live'"#,
    )
    .await;
    // Mark this document: a reload would lose the mark.
    page.eval("window.__corralMark = 'same-document'; true")
        .await;

    farm.call("conf-second", "p2").await;
    page.until(
        "room second appears",
        r#"document.querySelector('[data-room="conference:second"]')?.dataset.members === "1""#,
    )
    .await;
    assert_eq!(page.eval("window.__corralMark").await, "same-document");
    let logged = page
        .eval(r#"document.getElementById('log').textContent.includes('"name":"second"')"#)
        .await;
    assert_eq!(logged, true, "the room_placed event reached the page");
    assert_eq!(
        page.eval("document.getElementById('s-rooms').textContent")
            .await,
        "2"
    );

    // The Queues panel: a queue that gets a member appears (queue_changed),
    // a waiting caller shows, and an answered call counts (queue_connected).
    let http = farm.http.clone();
    let post = |path: &str, body: Option<Value>| {
        let rb = http
            .post(format!("{}{path}", api.url))
            .bearer_auth("page-token");
        let rb = match body {
            Some(b) => rb.json(&b),
            None => rb,
        };
        async move { rb.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        post(
            "/v1/queues/lp/members",
            Some(json!({"agent": "sam", "endpoint": "PJSIP/sam", "paused": true}))
        )
        .await,
        201
    );
    page.until(
        "queue lp in the panel",
        r#"document.querySelector('[data-queue="lp"]')?.dataset.waiting === "0""#,
    )
    .await;
    farm.call("queue-lp", "p3").await;
    page.until(
        "a caller waiting in lp",
        r#"document.querySelector('[data-queue="lp"]')?.dataset.waiting === "1""#,
    )
    .await;
    assert_eq!(post("/v1/queues/lp/members/sam/unpause", None).await, 200);
    page.until(
        "the caller answered in lp",
        r#"(q => q?.dataset.answered === "1" && q.dataset.waiting === "0")(document.querySelector('[data-queue="lp"]'))"#,
    )
    .await;
    assert_eq!(page.eval("window.__corralMark").await, "same-document");
    page.until(
        "queue_connected reached the page",
        r#"document.getElementById('log').textContent.includes('queue_connected')"#,
    )
    .await;

    // A node lost is obvious: its column says DOWN and the banner names it.
    farm.kill(1).await;
    page.until(
        "ast2 shown down",
        r#"document.querySelector('[data-node="ast2"]')?.dataset.state === 'down' && document.getElementById('alert').textContent.includes('ast2')"#,
    )
    .await;
    drop(page);
    drop(browser);
    farm.stop().await;
}
