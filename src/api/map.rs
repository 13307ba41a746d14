//! `GET /`: the live room map for operators, one HTML file with inline CSS
//! and JS (`map.html`, compiled in; no build step). It loads `/v1/nodes`
//! and `/v1/rooms`, then follows `/v1/events` and reloads on each event; a
//! small Queues panel loads `/v1/queues` and follows the queue events.

use axum::response::Html;

/// The page.
pub const PAGE: &str = include_str!("map.html");

/// Serves the page.
pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}
