//! The event websocket, `GET /ari/events?app=a[,b...]&subscribeAll=...`.
//!
//! As on Asterisk (ARCHITECTURE.md, *ARI facts: the event websocket*): the
//! socket is registered before the upgrade completes, so no event falls
//! between the 101 and the first read; one socket owns an app name and a
//! newer one takes it over (the old one gets `ApplicationReplaced` and
//! stays open); the node never pings but answers pings (axum replies with
//! PONG); when the socket goes, its apps become inactive and their events
//! are thrown away, never replayed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::bump;
use super::http::{AriError, parse_urlencoded};
use super::state::Shared;

/// Unregisters the socket when dropped: after the connection ends, or if the
/// upgrade never completes.
struct Registration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.lock().drop_socket(self.id);
    }
}

/// The handler of `GET /ari/events`.
pub(crate) async fn events(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let (mut parts, _body) = req.into_parts();
    let mut params = std::collections::HashMap::new();
    if let Some(q) = parts.uri.query()
        && let Err(e) = parse_urlencoded(q.as_bytes(), &mut params)
    {
        return e.into_response();
    }
    let apps: Vec<String> = params
        .get("app")
        .map(|a| {
            a.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if apps.is_empty() {
        return AriError::new(400, "HTTP request is missing param: [app]").into_response();
    }
    if apps.iter().any(|a| a.len() > 79) {
        return AriError::new(500, "Internal Server Error").into_response();
    }
    let subscribe_all = params
        .get("subscribeAll")
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "yes" | "1"));
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(rejection) => {
            return AriError::new(rejection.status().as_u16(), rejection.body_text())
                .into_response();
        }
    };
    let (tx, rx) = mpsc::channel(sh.common.event_queue);
    let close = CancellationToken::new();
    let id = sh
        .lock()
        .register_socket(&apps, subscribe_all, tx, close.clone());
    tracing::debug!(node = %sh.common.id, socket = id, ?apps, subscribe_all, "event websocket connected");
    let reg = Registration {
        shared: sh.clone(),
        id,
    };
    upgrade
        .protocols(["ari"])
        .on_upgrade(move |socket| run(socket, rx, close, reg))
}

async fn run(
    mut socket: WebSocket,
    mut rx: mpsc::Receiver<String>,
    close: CancellationToken,
    reg: Registration,
) {
    let sh = reg.shared.clone();
    let mut hung = sh.common.hung.subscribe();
    // Events held back by the `event_latency_ms` fault, each with the time
    // it is due (its arrival here plus the latency, never before an event
    // that arrived earlier: order is kept).
    let mut late: VecDeque<(tokio::time::Instant, String)> = VecDeque::new();
    loop {
        if *hung.borrow_and_update() {
            // Hung (SIGSTOP): write nothing, read nothing (so no PONG).
            tokio::select! {
                _ = sh.cancel.cancelled() => break,
                _ = close.cancelled() => break,
                _ = hung.changed() => continue,
            }
        }
        let due = late.front().map(|(t, _)| *t);
        tokio::select! {
            _ = sh.cancel.cancelled() => break,
            _ = hung.changed() => continue,
            _ = close.cancelled() => {
                // The node dropped this socket: the close-websockets fault,
                // or a reader too far behind.
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
            _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                let Some((_, text)) = late.pop_front() else { continue };
                if !write(&sh, &mut socket, &close, text).await {
                    break;
                }
            }
            ev = rx.recv() => {
                let Some(text) = ev else { break };
                let latency = sh.common.faults().event_latency_ms;
                if latency > 0 || !late.is_empty() {
                    let at = tokio::time::Instant::now() + Duration::from_millis(latency);
                    let at = late.back().map_or(at, |(t, _)| at.max(*t));
                    if late.len() >= sh.common.event_queue {
                        // As a full queue does: the socket is cut.
                        bump(&sh.common.stats.websockets_cut);
                        break;
                    }
                    late.push_back((at, text));
                    continue;
                }
                if !write(&sh, &mut socket, &close, text).await {
                    break;
                }
            }
            msg = socket.recv() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                // PING is answered by axum; text frames (REST over websocket)
                // are not modelled and are ignored.
                Some(Ok(_)) => {}
            }
        }
    }
    tracing::debug!(node = %sh.common.id, socket = reg.id, "event websocket closed");
    drop(reg);
}

/// Writes one event, with the `event_delay_ms` and `duplicate_events`
/// faults; false when the socket is gone.
async fn write(
    sh: &Shared,
    socket: &mut WebSocket,
    close: &CancellationToken,
    text: String,
) -> bool {
    let faults = sh.common.faults();
    if faults.event_delay_ms > 0 {
        tokio::select! {
            _ = sh.cancel.cancelled() => return false,
            _ = close.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(faults.event_delay_ms)) => {}
        }
    }
    let twice = sh.common.chance(faults.duplicate_events);
    if socket
        .send(Message::Text(text.clone().into()))
        .await
        .is_err()
    {
        return false;
    }
    bump(&sh.common.stats.events_sent);
    if twice {
        if socket.send(Message::Text(text.into())).await.is_err() {
            return false;
        }
        bump(&sh.common.stats.events_sent);
    }
    true
}
