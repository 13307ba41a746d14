//! Operator commands against a running corral's HTTP API: `rooms`, `room`,
//! `nodes`, `drain [--wait]`, `undrain`, `watch`, `queues`, `queue NAME
//! [add|remove|pause|unpause]`.
//!
//! They only speak the public API (the same routes and JSON as any client),
//! so they work against any replica. The address comes from `--api` or
//! `CORRAL_API_URL` (default `http://127.0.0.1:8088`), the bearer token from
//! `--token` or `CORRAL_API_TOKEN` (needed for drain, undrain and queue
//! member changes when the server has one). Tables for people; `--json`
//! prints the API's JSON.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::output;
use crate::api::nodes::{NodeList, NodeView};
use crate::api::queues::{AgentView, QueueDetailView, QueueList, QueueRow};
use crate::api::rooms::{RoomDetailView, RoomList, RoomRow};

/// Where the API is and how to talk to it (shared by every ops command).
/// Global: the flags may also follow a sub-command (`corral queue sales
/// pause amy --token T`).
#[derive(Clone, clap::Args)]
pub struct Conn {
    /// The corral API's base URL.
    #[arg(
        long,
        global = true,
        env = "CORRAL_API_URL",
        default_value = "http://127.0.0.1:8088"
    )]
    pub api: String,
    /// Bearer token for routes that change state.
    #[arg(long, global = true, env = "CORRAL_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON (for scripts) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("api", &self.api)
            .field("token", &self.token.as_ref().map(|_| "set"))
            .field("json", &self.json)
            .finish()
    }
}

/// `corral rooms`.
#[derive(Debug, clap::Args)]
pub struct RoomsArgs {
    /// API connection.
    #[command(flatten)]
    pub conn: Conn,
    /// Only rooms on this node.
    #[arg(long)]
    pub node: Option<String>,
    /// Only rooms of this kind (`conference`, `queue`).
    #[arg(long)]
    pub kind: Option<String>,
}

/// `corral room KIND NAME`.
#[derive(Debug, clap::Args)]
pub struct RoomArgs {
    /// API connection.
    #[command(flatten)]
    pub conn: Conn,
    /// `conference` or `queue`.
    pub kind: String,
    /// The room's name.
    pub name: String,
}

/// `corral nodes`.
#[derive(Debug, clap::Args)]
pub struct NodesArgs {
    /// API connection.
    #[command(flatten)]
    pub conn: Conn,
}

/// `corral undrain NODE`.
#[derive(Debug, clap::Args)]
pub struct UndrainArgs {
    /// API connection.
    #[command(flatten)]
    pub conn: Conn,
    /// The node.
    pub node: String,
}

/// `corral drain NODE`.
#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// API connection.
    #[command(flatten)]
    pub conn: Conn,
    /// The node.
    pub node: String,
    /// Wait until no room is left on the node, showing the progress
    /// (drain only).
    #[arg(long)]
    pub wait: bool,
    /// How often `--wait` polls, in ms.
    #[arg(long, default_value_t = 500)]
    pub poll_ms: u64,
}

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

/// `corral queues`.
#[derive(Debug, clap::Args)]
pub struct QueuesArgs {
    /// API connection.
    #[command(flatten)]
    pub conn: Conn,
}

/// `corral queue NAME [add|remove|pause|unpause ...]`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Without a sub-command: the queue's figures, its waiting callers \
    (position, channel, caller, waiting) and its agents.\n\
    Examples:\n  \
    corral queue sales\n  \
    corral queue sales add alice PJSIP/alice --paused\n  \
    corral queue sales add bob 'PJSIP/{agent}@kamailio'\n  \
    corral queue sales unpause alice\n  \
    corral queue sales remove bob"
)]
pub struct QueueArgs {
    /// API connection.
    #[command(flatten)]
    pub conn: Conn,
    /// The queue's name.
    pub name: String,
    /// Change the queue's members (default: show the queue).
    #[command(subcommand)]
    pub action: Option<QueueAction>,
}

/// What `corral queue NAME ...` changes (each needs the token when the
/// server has one).
#[derive(Debug, clap::Subcommand)]
pub enum QueueAction {
    /// Add a static member (corral dials ENDPOINT when a caller waits), or
    /// update an existing one's endpoint.
    Add {
        /// The agent id (letters, digits, `_`).
        agent: String,
        /// What corral dials, e.g. `PJSIP/alice`; with `{agent}` in it, a
        /// template (`PJSIP/{agent}@kamailio`).
        endpoint: String,
        /// Add it paused (no callers until `unpause`).
        #[arg(long)]
        paused: bool,
    },
    /// Remove an agent (a busy agent leaves when its call ends).
    Remove {
        /// The agent id.
        agent: String,
    },
    /// Pause an agent: no new callers; a call in progress goes on.
    Pause {
        /// The agent id.
        agent: String,
    },
    /// Unpause an agent: it takes callers again.
    Unpause {
        /// The agent id.
        agent: String,
    },
}

/// A thin client of the API.
struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(conn: &Conn) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()?,
            base: conn.api.trim_end_matches('/').to_owned(),
            token: conn.token.clone(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(10));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<T> {
        let (_, body) = send_checked(&self.base, path, self.request(method, path)).await?;
        serde_json::from_value(body).with_context(|| format!("{path}: unexpected answer"))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(reqwest::Method::GET, path).await
    }
}

/// Sends `req` and fails with the API's error code and message (the
/// token hint for `unauthorized`) on a non-2xx; returns the JSON body
/// (`null` for an empty one).
async fn send_checked(
    base: &str,
    path: &str,
    req: reqwest::RequestBuilder,
) -> anyhow::Result<(reqwest::StatusCode, Value)> {
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach the corral API at {base}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let code = body["error"]["code"].as_str().unwrap_or("error");
        let msg = body["error"]["message"].as_str().unwrap_or("");
        let hint = if code == "unauthorized" {
            " (pass --token or set CORRAL_API_TOKEN)"
        } else {
            ""
        };
        bail!("{path}: {status}: {code}: {msg}{hint}");
    }
    Ok((status, body))
}

fn enc(s: &str) -> String {
    // Path segments and query values: percent-encode everything but the
    // unreserved characters.
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn room_rows(rooms: &[RoomRow]) -> Vec<Vec<String>> {
    rooms
        .iter()
        .map(|r| {
            vec![
                r.node.clone(),
                r.kind.clone(),
                r.name.clone(),
                r.members.to_string(),
                r.epoch.to_string(),
            ]
        })
        .collect()
}

/// `corral rooms`: every page of the room map.
pub async fn rooms(args: RoomsArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.conn)?;
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = vec![format!("limit={}", crate::api::rooms::MAX_PAGE)];
        if let Some(n) = &args.node {
            q.push(format!("node={}", enc(n)));
        }
        if let Some(k) = &args.kind {
            q.push(format!("kind={}", enc(k)));
        }
        if let Some(cur) = &cursor {
            q.push(format!("cursor={}", enc(cur)));
        }
        let page: RoomList = c.get(&format!("/v1/rooms?{}", q.join("&"))).await?;
        all.extend(page.rooms);
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    if args.conn.json {
        print!("{}", output::json(&serde_json::json!({ "rooms": all })));
    } else {
        print!(
            "{}",
            output::table(
                &["NODE", "KIND", "NAME", "MEMBERS", "EPOCH"],
                &room_rows(&all)
            )
        );
        println!(
            "{} rooms, {} members",
            all.len(),
            all.iter().map(|r| u64::from(r.members)).sum::<u64>()
        );
    }
    Ok(())
}

/// `corral room KIND NAME`: one room and its members.
pub async fn room(args: RoomArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.conn)?;
    let path = format!("/v1/rooms/{}/{}", enc(&args.kind), enc(&args.name));
    if args.conn.json {
        let v: Value = c.get(&path).await?;
        print!("{}", output::json(&v));
        return Ok(());
    }
    let r: RoomDetailView = c.get(&path).await?;
    println!(
        "{} {} on {} (epoch {}), {} members",
        r.room.kind, r.room.name, r.room.node, r.room.epoch, r.room.members
    );
    let rows: Vec<Vec<String>> = r
        .member_list
        .iter()
        .map(|m| vec![m.node.clone(), m.channel.clone(), m.role.clone()])
        .collect();
    print!("{}", output::table(&["NODE", "CHANNEL", "ROLE"], &rows));
    Ok(())
}

fn node_rows(nodes: &[NodeView]) -> Vec<Vec<String>> {
    nodes
        .iter()
        .map(|n| {
            vec![
                n.id.clone(),
                n.state.to_uppercase(),
                if n.streaming { "yes" } else { "no" }.to_owned(),
                n.rooms.to_string(),
                n.members.to_string(),
                n.channels.to_string(),
                format!("{:.0}%", n.load * 100.0),
                n.incarnation.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect()
}

/// `corral nodes`.
pub async fn nodes(args: NodesArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.conn)?;
    let list: NodeList = c.get("/v1/nodes").await?;
    if args.conn.json {
        print!("{}", output::json(&serde_json::to_value(&list)?));
    } else {
        print!(
            "{}",
            output::table(
                &[
                    "NODE",
                    "STATE",
                    "STREAM",
                    "ROOMS",
                    "MEMBERS",
                    "CHANNELS",
                    "LOAD",
                    "INCARNATION"
                ],
                &node_rows(&list.nodes)
            )
        );
    }
    Ok(())
}

/// `corral drain NODE [--wait]`.
pub async fn drain(args: DrainArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.conn)?;
    let path = format!("/v1/nodes/{}/drain", enc(&args.node));
    let mut n: NodeView = c.call(reqwest::Method::POST, &path).await?;
    if args.wait {
        let interactive = !args.conn.json;
        let start = n.rooms.max(1);
        while n.rooms > 0 {
            if interactive {
                // One line, rewritten in place: a bar of the rooms left.
                let done = (start.saturating_sub(n.rooms) * 30 / start) as usize;
                eprint!(
                    "\rdraining {}: [{}{}] {} rooms left, {} members   ",
                    n.id,
                    "#".repeat(done),
                    ".".repeat(30 - done),
                    n.rooms,
                    n.members
                );
                let _ = std::io::stderr().flush();
            }
            tokio::time::sleep(Duration::from_millis(args.poll_ms.max(50))).await;
            let list: NodeList = c.get("/v1/nodes").await?;
            n = list
                .nodes
                .into_iter()
                .find(|x| x.id == n.id)
                .with_context(|| format!("node {} vanished from /v1/nodes", args.node))?;
        }
        if interactive {
            eprintln!();
        }
    }
    print_node(
        &args.conn,
        &n,
        if args.wait { "drained" } else { "draining" },
    )
}

/// `corral undrain NODE`.
pub async fn undrain(args: UndrainArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.conn)?;
    let path = format!("/v1/nodes/{}/undrain", enc(&args.node));
    let n: NodeView = c.call(reqwest::Method::POST, &path).await?;
    print_node(&args.conn, &n, "takes new rooms again")
}

fn print_node(conn: &Conn, n: &NodeView, what: &str) -> anyhow::Result<()> {
    if conn.json {
        print!("{}", output::json(&serde_json::to_value(n)?));
    } else {
        println!(
            "{} {what}: state {}, {} rooms, {} members",
            n.id, n.state, n.rooms, n.members
        );
    }
    Ok(())
}

fn queue_rows(queues: &[QueueRow]) -> Vec<Vec<String>> {
    queues
        .iter()
        .map(|q| {
            vec![
                q.name.clone(),
                q.node.clone().unwrap_or_else(|| "-".into()),
                q.waiting.to_string(),
                output::duration_ms(q.longest_wait_ms),
                q.agents.available.to_string(),
                (q.agents.busy + q.agents.ringing).to_string(),
                q.agents.wrap_up.to_string(),
                q.agents.paused.to_string(),
                q.answered.to_string(),
                q.abandoned.to_string(),
            ]
        })
        .collect()
}

/// `corral queues`: one row per queue.
pub async fn queues(args: QueuesArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.conn)?;
    let list: QueueList = c.get("/v1/queues").await?;
    if args.conn.json {
        print!("{}", output::json(&serde_json::to_value(&list)?));
        return Ok(());
    }
    print!(
        "{}",
        output::table(
            &[
                "QUEUE",
                "NODE",
                "WAITING",
                "LONGEST",
                "AVAILABLE",
                "BUSY",
                "WRAP-UP",
                "PAUSED",
                "ANSWERED",
                "ABANDONED"
            ],
            &queue_rows(&list.queues)
        )
    );
    println!(
        "{} queues, {} waiting (BUSY counts ringing agents too)",
        list.queues.len(),
        list.queues
            .iter()
            .map(|q| u64::from(q.waiting))
            .sum::<u64>()
    );
    Ok(())
}

fn agent_rows(agents: &[AgentView]) -> Vec<Vec<String>> {
    agents
        .iter()
        .map(|a| {
            let state = if a.removing {
                format!("{} (removing)", a.state)
            } else {
                a.state.clone()
            };
            vec![
                a.agent.clone(),
                a.kind.clone(),
                state,
                a.endpoint
                    .clone()
                    .or_else(|| a.channel.clone())
                    .unwrap_or_else(|| "-".into()),
                if a.state == "available" {
                    output::duration_ms(a.idle_ms)
                } else {
                    "-".into()
                },
                a.answered.to_string(),
                a.caller.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect()
}

fn print_queue(q: &QueueDetailView) {
    let limits = [
        q.max_callers.map(|m| format!("max {m} callers")),
        q.max_wait_ms
            .map(|m| format!("max wait {}", output::duration_ms(m))),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>();
    println!(
        "queue {} on {}: {}, wrap-up {}{}",
        q.name,
        q.node.as_deref().unwrap_or("-"),
        q.strategy,
        output::duration_ms(q.wrapup_ms),
        if limits.is_empty() {
            String::new()
        } else {
            format!(", {}", limits.join(", "))
        }
    );
    let longest = if q.callers.is_empty() {
        String::new()
    } else {
        format!(" (longest {})", output::duration_ms(q.longest_wait_ms))
    };
    println!(
        "{} waiting{longest}; answered {}, abandoned {}, timed out {}, overflowed {}, lost {}",
        q.callers.len(),
        q.answered,
        q.abandoned,
        q.timed_out,
        q.overflowed,
        q.lost
    );
    println!();
    if q.callers.is_empty() {
        println!("no caller waiting");
    } else {
        let rows: Vec<Vec<String>> = q
            .callers
            .iter()
            .map(|c| {
                vec![
                    c.position.to_string(),
                    c.channel.clone(),
                    if c.caller.is_empty() {
                        "-".into()
                    } else {
                        c.caller.clone()
                    },
                    output::duration_ms(c.waiting_ms),
                    if c.offered.is_empty() {
                        "-".into()
                    } else {
                        c.offered.join(",")
                    },
                ]
            })
            .collect();
        print!(
            "{}",
            output::table(
                &["POSITION", "CHANNEL", "CALLER", "WAITING", "RINGING"],
                &rows
            )
        );
    }
    println!();
    if q.agents.is_empty() {
        println!("no agent");
    } else {
        print!(
            "{}",
            output::table(
                &[
                    "AGENT",
                    "KIND",
                    "STATE",
                    "ENDPOINT/CHANNEL",
                    "IDLE",
                    "ANSWERED",
                    "CALLER"
                ],
                &agent_rows(&q.agents)
            )
        );
    }
}

/// `corral queue NAME [add|remove|pause|unpause ...]`.
pub async fn queue(args: QueueArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.conn)?;
    let base = format!("/v1/queues/{}", enc(&args.name));
    let json = args.conn.json;
    let Some(action) = args.action else {
        let v: Value = c.get(&base).await?;
        if json {
            print!("{}", output::json(&v));
        } else {
            let q: QueueDetailView =
                serde_json::from_value(v).with_context(|| format!("{base}: unexpected answer"))?;
            print_queue(&q);
        }
        return Ok(());
    };
    let (what, agent, (status, body)) = match &action {
        QueueAction::Add {
            agent,
            endpoint,
            paused,
        } => {
            let path = format!("{base}/members");
            let mut req = serde_json::json!({ "agent": agent });
            let key = if endpoint.contains(crate::api::queues::AGENT_PLACEHOLDER) {
                "template"
            } else {
                "endpoint"
            };
            req[key] = Value::from(endpoint.as_str());
            if *paused {
                req["paused"] = Value::Bool(true);
            }
            let rb = c.request(reqwest::Method::POST, &path).json(&req);
            ("add", agent, send_checked(&c.base, &path, rb).await?)
        }
        QueueAction::Remove { agent } => {
            let path = format!("{base}/members/{}", enc(agent));
            let rb = c.request(reqwest::Method::DELETE, &path);
            ("remove", agent, send_checked(&c.base, &path, rb).await?)
        }
        QueueAction::Pause { agent } | QueueAction::Unpause { agent } => {
            let verb = if matches!(action, QueueAction::Pause { .. }) {
                "pause"
            } else {
                "unpause"
            };
            let path = format!("{base}/members/{}/{verb}", enc(agent));
            let rb = c.request(reqwest::Method::POST, &path);
            (verb, agent, send_checked(&c.base, &path, rb).await?)
        }
    };
    if what == "remove" {
        if json {
            let v = serde_json::json!({ "queue": args.name, "agent": agent, "removed": true });
            print!("{}", output::json(&v));
        } else {
            println!(
                "{agent} removed from queue {} (an agent on a call leaves when the call ends)",
                args.name
            );
        }
        return Ok(());
    }
    if json {
        print!("{}", output::json(&body));
        return Ok(());
    }
    let a: AgentView =
        serde_json::from_value(body).with_context(|| format!("{base}: unexpected answer"))?;
    let done = match what {
        "add" if status == reqwest::StatusCode::CREATED => "added to",
        "add" => "updated in",
        "pause" => "paused in",
        _ => "unpaused in",
    };
    println!(
        "{} {done} queue {}: {} {}, state {}{}",
        a.agent,
        args.name,
        a.kind,
        a.endpoint
            .as_deref()
            .or(a.channel.as_deref())
            .unwrap_or("-"),
        a.state,
        if a.paused { " (paused)" } else { "" }
    );
    Ok(())
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
