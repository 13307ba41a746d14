//! One node's event websocket, as an explicit state machine that connects,
//! reads, pings and reconnects with backoff until cancelled.
//!
//! # Guarantees
//! - The socket is read on this task and nothing else: a frame is decoded
//!   and queued at once, so Asterisk's 100 ms write timeout never cuts corral
//!   off for reading slowly (the queue is [`EVENT_QUEUE`] deep).
//! - Asterisk never pings, so this task does: no pong within
//!   [`StreamConfig::pong_timeout`] means the connection is dead (half-open
//!   TCP, a hung node) and it is dropped.
//! - Every (re)connection is announced with [`StreamItem::Connected`] and
//!   every loss with [`StreamItem::Disconnected`]: events in between are
//!   lost for good (Asterisk replays nothing), so the consumer resyncs.

use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_util::sync::CancellationToken;

use super::AriNode;
use super::events::{Event, EventKind};
use crate::domain::NodeId;
use crate::retry::Backoff;

/// How many decoded events may wait for the controller. Deep enough for a
/// burst of thousands of calls; a full queue stalls the reader, which
/// Asterisk punishes by closing the socket, so the consumer must keep up.
pub const EVENT_QUEUE: usize = 8192;

/// What the stream tells its consumer.
#[derive(Debug)]
pub enum StreamItem {
    /// The websocket is up and owns the app: resync now.
    Connected,
    /// One event.
    Event(Box<Event>),
    /// A frame that could not be decoded; already logged once.
    Malformed,
    /// The connection is gone (`reason` for logs); reconnecting.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// Another websocket took the app over on this node.
    Replaced,
}

/// Timing of the stream.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// How often to ping.
    pub ping_interval: Duration,
    /// How long a ping may go unanswered.
    pub pong_timeout: Duration,
    /// Websocket handshake timeout.
    pub connect_timeout: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(2),
            pong_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// First wait before reopening a closed event websocket.
pub const RECONNECT_INITIAL: Duration = Duration::from_millis(100);

/// Longest wait between attempts: a node without corral's websocket
/// refuses its calls (`Stasis()` fails), so a node that comes back is
/// streamed again within this. An attempt is one TCP connect, cheap for a
/// node that is down.
pub const RECONNECT_MAX: Duration = Duration::from_secs(1);

/// The connection's state.
enum State {
    /// About to open the websocket.
    Connecting,
    /// Waiting before the next attempt.
    Backoff {
        /// When to try again.
        until: Instant,
    },
}

/// Runs the stream for `node` until `cancel`, sending items to `tx`.
pub async fn run(
    node: AriNode,
    cfg: StreamConfig,
    tx: mpsc::Sender<StreamItem>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(
        RECONNECT_INITIAL,
        RECONNECT_MAX,
        Backoff::DEFAULT_RESET_AFTER,
    );
    let mut state = State::Connecting;
    loop {
        match state {
            State::Backoff { until } => {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep_until(until) => state = State::Connecting,
                }
            }
            State::Connecting => {
                let connected = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = tokio::time::timeout(cfg.connect_timeout, connect(&node)) => r,
                };
                let ws = match connected {
                    Ok(Ok(ws)) => ws,
                    Ok(Err(e)) => {
                        tracing::debug!(node = %node.node(), reason = %e, "event websocket connect failed");
                        if tx
                            .send(StreamItem::Disconnected { reason: e })
                            .await
                            .is_err()
                        {
                            return;
                        }
                        state = State::Backoff {
                            until: Instant::now() + backoff.next_delay(),
                        };
                        continue;
                    }
                    Err(_) => {
                        let reason = "websocket connect timed out".to_string();
                        if tx.send(StreamItem::Disconnected { reason }).await.is_err() {
                            return;
                        }
                        state = State::Backoff {
                            until: Instant::now() + backoff.next_delay(),
                        };
                        continue;
                    }
                };
                backoff.connected();
                if tx.send(StreamItem::Connected).await.is_err() {
                    return;
                }
                let reason = stream(&node, &cfg, ws, &tx, &cancel).await;
                let Some(reason) = reason else { return };
                if tx.send(StreamItem::Disconnected { reason }).await.is_err() {
                    return;
                }
                state = State::Backoff {
                    until: Instant::now() + backoff.next_delay(),
                };
            }
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(node: &AriNode) -> Result<Ws, String> {
    let cfg = node.config();
    let base = cfg.base_url.trim_end_matches('/');
    let ws_base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        return Err(format!(
            "ARI URL must start with http:// or https://: {base}"
        ));
    };
    let url = format!("{ws_base}/ari/events?app={}&subscribeAll=false", cfg.app);
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    let creds = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", cfg.username, cfg.password));
    let header = HeaderValue::from_str(&format!("Basic {creds}")).map_err(|e| e.to_string())?;
    req.headers_mut().insert("authorization", header);
    let (ws, _resp) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| connect_failure(&e, base, &cfg.node))?;
    Ok(ws)
}

/// Why the event websocket could not be opened, for the operator: what
/// failed, where, and what to check. Never holds the credentials.
fn connect_failure(e: &tokio_tungstenite::tungstenite::Error, base: &str, node: &NodeId) -> String {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match e {
        WsError::Http(resp) if resp.status().as_u16() == 401 => format!(
            "ARI at {base} refused corral's credentials (HTTP 401): check the node's username and \
             password (corral: nodes[].password or CORRAL_NODE_{}_PASSWORD) against its ari.conf",
            node.as_str().to_uppercase()
        ),
        WsError::Http(resp) => format!(
            "ARI at {base} answered HTTP {} to the event websocket (is ARI enabled in ari.conf and http.conf?)",
            resp.status()
        ),
        WsError::Io(io) => format!("cannot reach ARI at {base}: {io}"),
        other => format!("event websocket to {base} failed: {other}"),
    }
}

/// Reads until the connection ends. `None` means cancelled or the consumer
/// went away (stop); `Some(reason)` means reconnect.
async fn stream(
    node: &AriNode,
    cfg: &StreamConfig,
    mut ws: Ws,
    tx: &mpsc::Sender<StreamItem>,
    cancel: &CancellationToken,
) -> Option<String> {
    let mut ping = tokio::time::interval(cfg.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    let mut awaiting_pong: Option<Instant> = None;
    loop {
        let pong_deadline = awaiting_pong.map(|t| t + cfg.pong_timeout);
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = ws.close(None).await;
                return None;
            }
            _ = ping.tick() => {
                if awaiting_pong.is_none() {
                    awaiting_pong = Some(Instant::now());
                }
                if let Err(e) = ws.send(Message::Ping(Vec::new().into())).await {
                    return Some(format!("ping failed: {e}"));
                }
            }
            _ = async { match pong_deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                return Some("no pong: node hung or connection half-open".to_string());
            }
            frame = ws.next() => {
                let Some(frame) = frame else { return Some("websocket closed".to_string()) };
                let frame = match frame {
                    Ok(f) => f,
                    Err(e) => return Some(format!("websocket error: {e}")),
                };
                match frame {
                    Message::Text(text) => {
                        let item = match Event::parse(text.as_str()) {
                            Ok(ev) if matches!(ev.kind, EventKind::ApplicationReplaced) => StreamItem::Replaced,
                            Ok(ev) => StreamItem::Event(Box::new(ev)),
                            Err(e) => {
                                tracing::warn!(node = %node.node(), reason = %e, "malformed ARI event skipped");
                                StreamItem::Malformed
                            }
                        };
                        if tx.send(item).await.is_err() {
                            return None;
                        }
                    }
                    Message::Pong(_) => awaiting_pong = None,
                    Message::Close(_) => return Some("websocket closed by node".to_string()),
                    _ => {}
                }
            }
        }
    }
}
