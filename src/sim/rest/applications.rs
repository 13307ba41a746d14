//! `/applications`: list, get, and event source subscriptions.

use std::sync::Arc;

use axum::extract::State;
use serde_json::Value;

use crate::sim::http::{AriError, AriResult, Id, Params, ok};
use crate::sim::state::{Shared, State as NodeState};

pub(super) async fn list_apps(State(sh): State<Arc<Shared>>) -> AriResult {
    let st = sh.lock();
    let mut names: Vec<&String> = st.apps.keys().collect();
    names.sort();
    ok(Value::Array(
        names.into_iter().map(|n| st.app_json(n)).collect(),
    ))
}

pub(super) async fn get_app(State(sh): State<Arc<Shared>>, Id(name): Id) -> AriResult {
    let st = sh.lock();
    if !st.apps.contains_key(&name) {
        return Err(AriError::new(404, "Application not found"));
    }
    ok(st.app_json(&name))
}

/// A parsed `eventSource`: `channel:{id}` or `bridge:{id}`.
enum Source {
    Channel(String),
    Bridge(String),
}

/// `stasis_app_subscribe`'s checks: 400 without sources, 404 unknown app,
/// 400 bad scheme, 422 unknown source.
fn event_sources(st: &NodeState, app: &str, p: &Params) -> Result<Vec<Source>, AriError> {
    let raw = p
        .get("eventSource")
        .ok_or_else(|| AriError::new(400, "Missing parameter eventSource"))?;
    if !st.apps.contains_key(app) {
        return Err(AriError::new(404, "Application not found"));
    }
    let mut out = Vec::new();
    for src in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (scheme, id) = src.split_once(':').unwrap_or((src, ""));
        let exists = match scheme {
            "channel" => st.channels.contains_key(id),
            "bridge" => st.bridges.contains_key(id),
            // Endpoints and device states are not modelled: none exists.
            "endpoint" | "deviceState" => false,
            _ => return Err(AriError::new(400, "Invalid event source URI scheme")),
        };
        if !exists {
            return Err(AriError::new(422, "Event source does not exist"));
        }
        out.push(match scheme {
            "channel" => Source::Channel(id.to_string()),
            _ => Source::Bridge(id.to_string()),
        });
    }
    if out.is_empty() {
        return Err(AriError::new(400, "Missing parameter eventSource"));
    }
    Ok(out)
}

pub(super) async fn subscribe(State(sh): State<Arc<Shared>>, Id(app): Id, p: Params) -> AriResult {
    let mut st = sh.lock();
    for src in event_sources(&st, &app, &p)? {
        let subs = match &src {
            Source::Channel(id) => st.channels.get_mut(id).map(|c| &mut c.subscribers),
            Source::Bridge(id) => st.bridges.get_mut(id).map(|b| &mut b.subscribers),
        };
        if let Some(subs) = subs {
            subs.insert(app.clone());
        }
    }
    ok(st.app_json(&app))
}

pub(super) async fn unsubscribe(
    State(sh): State<Arc<Shared>>,
    Id(app): Id,
    p: Params,
) -> AriResult {
    let mut st = sh.lock();
    let sources = event_sources(&st, &app, &p)?;
    for src in &sources {
        let subscribed = match src {
            Source::Channel(id) => st
                .channels
                .get(id)
                .is_some_and(|c| c.subscribers.contains(&app)),
            Source::Bridge(id) => st
                .bridges
                .get(id)
                .is_some_and(|b| b.subscribers.contains(&app)),
        };
        if !subscribed {
            return Err(AriError::new(
                409,
                "Application not subscribed to event source",
            ));
        }
    }
    for src in sources {
        let subs = match &src {
            Source::Channel(id) => st.channels.get_mut(id).map(|c| &mut c.subscribers),
            Source::Bridge(id) => st.bridges.get_mut(id).map(|b| &mut b.subscribers),
        };
        if let Some(subs) = subs {
            subs.remove(&app);
        }
    }
    ok(st.app_json(&app))
}
