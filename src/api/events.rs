//! `GET /v1/events`: the farm's events as server-sent events. Each event's
//! `event:` is the [`FarmEvent`]'s `type` (`room_placed` — a move when
//! `previous` is set —, `room_released`, `members_changed`, `node_up`,
//! `node_down`, `node_suspect` — `{node, suspect}` when a health check
//! fails or answers again —, `node_draining`, `split_detected`, `split_healed`,
//! `queue_changed` — `{queue, waiting, available}` after every saved change
//! of a queue —, `queue_connected` — `{queue, caller, agent, waited_ms,
//! connect_ms}` when a caller is bridged with an agent) and its `data:` the
//! event's JSON. A subscriber too slow to keep up gets `event: lagged` with
//! `{"missed": n}` and should reload the map. Keep-alive comments every
//! [`KEEP_ALIVE`] hold proxies open. The stream ends when the server
//! shuts down (`AppState::shutdown`), so open pages never hold up a
//! graceful stop.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use crate::controller::FarmEvent;

/// How often an idle stream sends a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn to_sse(ev: &FarmEvent) -> Event {
    let data = serde_json::to_value(ev).unwrap_or_default();
    let name = data
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("event")
        .to_owned();
    Event::default().event(name).data(data.to_string())
}

/// The event stream (`text/event-stream`).
#[utoipa::path(get, path = "/v1/events", tag = "ops",
    responses(
        (status = 200, description = "Server-sent events: `event:` the type, `data:` the JSON",
         content_type = "text/event-stream", body = String),
    ))]
pub async fn stream(
    State(st): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = st.controller.subscribe();
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        let ev = match rx.recv().await {
            Ok(ev) => to_sse(&ev),
            Err(RecvError::Lagged(n)) => Event::default()
                .event("lagged")
                .data(serde_json::json!({ "missed": n }).to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(ev), rx))
    });
    // A first comment flushes the headers at once, so clients know they
    // are subscribed before any event happens.
    let hello = futures_util::stream::once(async { Ok(Event::default().comment("subscribed")) });
    let stop = st.shutdown.clone();
    let stream = futures_util::StreamExt::take_until(
        futures_util::StreamExt::chain(hello, events),
        async move { stop.cancelled().await },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AgentId, ChannelId, RoomName};

    /// The queue events keep the names clients (the live page, `corral
    /// watch`) listen for.
    #[test]
    fn queue_events_are_named_by_their_type() {
        let q = RoomName::new("sales").unwrap();
        for (ev, name) in [
            (
                FarmEvent::QueueChanged {
                    queue: q.clone(),
                    waiting: 2,
                    available: 1,
                },
                "queue_changed",
            ),
            (
                FarmEvent::QueueConnected {
                    queue: q.clone(),
                    caller: ChannelId::new("1.1").unwrap(),
                    agent: AgentId::new("amy").unwrap(),
                    waited_ms: 5,
                    connect_ms: 1,
                },
                "queue_connected",
            ),
        ] {
            let v = serde_json::to_value(&ev).unwrap();
            assert_eq!(v["type"], name);
            assert_eq!(v["queue"], "sales");
            let sse = format!("{:?}", to_sse(&ev));
            assert!(sse.contains(name), "{sse}");
        }
    }
}
