//! `corral watch`: the farm's event stream, one line per event.

use anyhow::{Context, bail};
use std::io::Write;

use serde_json::Value;

use super::{Client, Conn};

/// `corral watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// API connection.
    #[command(flatten)]
    pub conn: Conn,
    /// Stop after this many events (default: run until interrupted).
    #[arg(long)]
    pub count: Option<u64>,
}

/// One line for a person from an event's type and JSON.
fn describe(kind: &str, v: &Value) -> String {
    let room = |v: &Value| {
        format!(
            "{}:{}",
            v["kind"].as_str().unwrap_or("?"),
            v["name"].as_str().unwrap_or("?")
        )
    };
    let s = |k: &str| v[k].as_str().unwrap_or("?").to_owned();
    match kind {
        "room_placed" => match v["previous"].as_str() {
            Some(p) => format!(
                "room {} moved {p} -> {} (epoch {})",
                room(&v["room"]),
                s("node"),
                v["epoch"]
            ),
            None => format!(
                "room {} placed on {} (epoch {})",
                room(&v["room"]),
                s("node"),
                v["epoch"]
            ),
        },
        "room_released" => format!(
            "room {} released from {} ({})",
            room(&v["room"]),
            s("node"),
            s("reason")
        ),
        "members_changed" => format!(
            "room {} on {}: {} members",
            room(&v["room"]),
            s("node"),
            v["members"]
        ),
        "node_up" => format!(
            "node {} UP{}",
            s("node"),
            if v["new_incarnation"] == true {
                " (new incarnation)"
            } else {
                ""
            }
        ),
        "node_down" => format!(
            "node {} DOWN: {} ({} rooms released)",
            s("node"),
            s("reason"),
            v["released_rooms"]
        ),
        "node_suspect" => format!(
            "node {} {}",
            s("node"),
            if v["suspect"] == true {
                "SUSPECT (health check failed: no new rooms, no calls sent)"
            } else {
                "answers again"
            }
        ),
        "node_draining" => format!(
            "node {} {}",
            s("node"),
            if v["draining"] == true {
                "DRAINING"
            } else {
                "undrained"
            }
        ),
        "split_detected" => format!(
            "SPLIT room {}: owner {}, stray call on {}",
            room(&v["room"]),
            s("owner"),
            s("node")
        ),
        "split_healed" => format!(
            "healed room {} on {} after {} ms",
            room(&v["room"]),
            s("node"),
            v["lasted_ms"]
        ),
        "queue_changed" => format!(
            "queue {}: {} waiting, {} agents available",
            s("queue"),
            v["waiting"],
            v["available"]
        ),
        "queue_connected" => format!(
            "queue {}: caller {} connected to agent {} after {} ms",
            s("queue"),
            s("caller"),
            s("agent"),
            v["waited_ms"]
        ),
        "lagged" => format!("missed {} events (reload the map)", v["missed"]),
        other => format!("{other} {v}"),
    }
}

/// `corral watch`: the event stream, live.
pub async fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.conn)?;
    let mut resp = c
        .http
        .get(format!("{}/v1/events", c.base))
        .send()
        .await
        .with_context(|| format!("cannot reach the corral API at {}", c.base))?;
    if !resp.status().is_success() {
        bail!("/v1/events: {}", resp.status());
    }
    eprintln!("watching {}/v1/events (Ctrl-C to stop)", c.base);
    let mut buf = String::new();
    let mut seen = 0u64;
    let (mut event, mut data) = (String::new(), String::new());
    while let Some(chunk) = resp.chunk().await.context("event stream broken")? {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = buf.find('\n') {
            let line: String = buf.drain(..=i).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if let Some(e) = line.strip_prefix("event:") {
                event = e.trim().to_owned();
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
            } else if line.is_empty() && !data.is_empty() {
                let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                if args.conn.json {
                    println!("{}", serde_json::json!({ "event": event, "data": v }));
                } else {
                    let at = time::OffsetDateTime::now_utc()
                        .format(time::macros::format_description!(
                            "[hour]:[minute]:[second]"
                        ))
                        .unwrap_or_default();
                    println!("{at}  {}", describe(&event, &v));
                }
                let _ = std::io::stdout().flush();
                event.clear();
                data.clear();
                seen += 1;
                if args.count.is_some_and(|n| seen >= n) {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}
