//! `corral queues` and `corral queue NAME [add|remove|pause|unpause]`.

use super::{Client, Conn};
use super::{enc, send_checked};
use crate::api::queues::{AgentView, QueueDetailView, QueueList, QueueRow};
use crate::cli::output;
use anyhow::Context;
use serde_json::Value;

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
