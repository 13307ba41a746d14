//! `/asterisk`: `getInfo` and `ping`.

use std::sync::Arc;

use axum::extract::State;
use serde_json::{Value, json};

use crate::sim::http::{AriResult, Params, ok};
use crate::sim::model::now_ts;
use crate::sim::state::Shared;

pub(super) async fn info(State(sh): State<Arc<Shared>>, p: Params) -> AriResult {
    let all = ["build", "system", "config", "status"];
    let only: Vec<String> = match p.get("only") {
        Some(o) => o.split(',').map(|s| s.trim().to_string()).collect(),
        None => all.iter().map(|s| s.to_string()).collect(),
    };
    let c = &sh.common;
    let mut out = serde_json::Map::new();
    for section in only {
        let v = match section.as_str() {
            "build" => json!({
                "os": "Linux", "kernel": "6.1.0-sim", "options": "",
                "machine": "x86_64", "date": "2026-01-01 00:00:00 UTC", "user": "corral-sim",
            }),
            "system" => json!({"version": c.version.version(), "entity_id": c.asterisk_id}),
            "config" => json!({
                "name": c.id, "default_language": "en",
                "setid": {"user": "asterisk", "group": "asterisk"},
            }),
            "status" => {
                json!({"startup_time": sh.startup_time, "last_reload_time": sh.startup_time})
            }
            _ => continue,
        };
        out.insert(section, v);
    }
    ok(Value::Object(out))
}

pub(super) async fn ping(State(sh): State<Arc<Shared>>) -> AriResult {
    ok(json!({
        "ping": "pong",
        "timestamp": now_ts(),
        "asterisk_id": sh.common.asterisk_id,
    }))
}
