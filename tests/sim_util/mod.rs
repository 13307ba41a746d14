//! Helpers for the simulator's tests: a plain ARI client (reqwest) and an
//! event socket reader (tokio-tungstenite), written independently of
//! corral's own ARI client so the tests check the simulator, not a shared
//! misunderstanding.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral::sim::{SimConfig, SimNode};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use crate::support::eventually;

/// The deadline of every wait in these tests.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// Starts a node with default config.
pub async fn start(id: &str) -> SimNode {
    SimNode::start(SimConfig::new(id))
        .await
        .expect("node starts")
}

/// A response: status and JSON body (`Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }
}

/// A plain HTTP client for one node.
#[derive(Clone)]
pub struct Ari {
    pub base: String,
    pub http: reqwest::Client,
}

impl Ari {
    pub fn new(node: &SimNode) -> Self {
        Ari {
            base: node.base_url(),
            http: reqwest::Client::new(),
        }
    }

    /// Any request; `path` starts with `/`. ARI paths get Basic auth.
    pub async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if path.starts_with("/ari") {
            req = req.basic_auth("corral", Some("corral"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body read");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            body,
            text,
            headers,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, None).await
    }
    pub async fn post(&self, path: &str) -> Resp {
        self.send("POST", path, None).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.send("DELETE", path, None).await
    }

    /// `POST /sim/calls`.
    pub async fn call(&self, exten: &str, caller: &str) -> Resp {
        self.send(
            "POST",
            "/sim/calls",
            Some(serde_json::json!({"exten": exten, "caller": caller})),
        )
        .await
    }

    pub async fn stats(&self) -> Value {
        self.get("/sim/stats").await.body
    }
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Drop for Events {
    /// Closes the socket (a close frame, then the TCP connection), and
    /// checks every event received against the spec's models, so that each
    /// scenario validates what it collected.
    fn drop(&mut self) {
        let _ = self.tx.send(Message::Close(None));
        if std::thread::panicking() {
            return;
        }
        let spec = SPEC.get_or_init(spec::Spec::load);
        let problems: Vec<String> = self
            .all()
            .iter()
            .flat_map(|e| spec.check_event(e))
            .collect();
        assert!(
            problems.is_empty(),
            "events off the spec:\n{}",
            problems.join("\n")
        );
    }
}

static SPEC: std::sync::OnceLock<spec::Spec> = std::sync::OnceLock::new();

/// An event websocket and everything it has received so far.
pub struct Events {
    pub received: Arc<Mutex<Vec<Value>>>,
    pub closed: Arc<Mutex<bool>>,
    notify: Arc<Notify>,
    tx: tokio::sync::mpsc::UnboundedSender<Message>,
    pub pongs: Arc<Mutex<u32>>,
}

impl Events {
    /// Connects `GET /ari/events?app=...` with `api_key` auth.
    pub async fn connect(node: &SimNode, app: &str, subscribe_all: bool) -> Events {
        let url = format!(
            "ws://{}/ari/events?app={}&subscribeAll={}&api_key=corral:corral",
            node.addr(),
            enc(app),
            subscribe_all
        );
        Self::connect_url(url).await
    }

    /// Connects to any ARI event websocket URL (a real Asterisk's too).
    pub async fn connect_url(url: String) -> Events {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        let (mut sink, mut stream) = ws.split();
        let received = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(Mutex::new(false));
        let pongs = Arc::new(Mutex::new(0));
        let notify = Arc::new(Notify::new());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        let (r, c, n, p) = (
            received.clone(),
            closed.clone(),
            notify.clone(),
            pongs.clone(),
        );
        tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                match msg {
                    Ok(Message::Text(t)) => {
                        let v: Value = serde_json::from_str(&t).expect("event is JSON");
                        r.lock().expect("lock").push(v);
                        n.notify_waiters();
                    }
                    Ok(Message::Pong(_)) => *p.lock().expect("lock") += 1,
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            *c.lock().expect("lock") = true;
            n.notify_waiters();
        });
        Events {
            received,
            closed,
            notify,
            tx,
            pongs,
        }
    }

    pub fn all(&self) -> Vec<Value> {
        self.received.lock().expect("lock").clone()
    }

    pub fn of_type(&self, ty: &str) -> Vec<Value> {
        self.all().into_iter().filter(|e| e["type"] == ty).collect()
    }

    pub fn types(&self) -> Vec<String> {
        self.all()
            .iter()
            .map(|e| e["type"].as_str().unwrap_or("").to_string())
            .collect()
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.lock().expect("lock")
    }

    /// Waits for the `n`-th (1-based) event of type `ty`.
    pub async fn wait_nth(&self, ty: &str, n: usize) -> Value {
        eventually(DEADLINE, &format!("{n} event(s) {ty}"), || async {
            self.of_type(ty).get(n - 1).cloned()
        })
        .await
    }

    /// Waits for the first event of type `ty`.
    pub async fn wait(&self, ty: &str) -> Value {
        self.wait_nth(ty, 1).await
    }

    /// Waits for an event of type `ty` about channel `chan`.
    pub async fn wait_for_channel(&self, ty: &str, chan: &str) -> Value {
        eventually(DEADLINE, &format!("{ty} for {chan}"), || async {
            self.of_type(ty)
                .into_iter()
                .find(|e| e["channel"]["id"] == chan)
        })
        .await
    }

    pub fn ping(&self) {
        let _ = self.tx.send(Message::Ping(b"hi".to_vec().into()));
    }

    pub async fn wait_closed(&self) {
        eventually(DEADLINE, "websocket closed", || async {
            self.is_closed().then_some(())
        })
        .await
    }
}
pub mod spec;
