//! `GET /v1/events`: the farm's events as server-sent events. Each event's
//! `event:` is the [`FarmEvent`]'s `type` (`room_placed` — a move when
//! `previous` is set —, `room_released`, `members_changed`, `node_up`,
//! `node_down`, `node_draining`, `split_detected`, `split_healed`) and its
//! `data:` the
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
