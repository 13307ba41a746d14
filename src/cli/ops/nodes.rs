//! `corral nodes`, `corral drain NODE [--wait]`, `corral undrain NODE`.

use std::io::Write;

use anyhow::Context;

use super::enc;
use std::time::Duration;

use super::{Client, Conn};
use crate::api::nodes::{NodeList, NodeView};
use crate::cli::output;

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
