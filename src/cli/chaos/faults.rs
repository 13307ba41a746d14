//! The faults a chaos run injects, one at a time, and the record of what
//! was done when ([`Injected`]), which the checker needs to tell calls lost
//! with a fault from calls lost by corral.
//!
//! Each fault uses what an operator's chaos tool has: signals to processes
//! (kill -9, SIGSTOP/SIGCONT), restarting a process on its port, and the
//! simulated nodes' knobs (`PUT /sim/faults`, `PUT /sim/upstream`, see the
//! README's "Simulated nodes").

use std::time::Duration;

use serde_json::json;

use super::checker::Observer;
use super::farm::{NodeAddr, SimFarm};
use super::now_ms;

/// One fault of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// kill -9 of the node with the most rooms; it stays dead.
    NodeKill,
    /// kill -9 of a node, started again on the same port a second later (a
    /// new incarnation).
    NodeRestart,
    /// SIGSTOP of a node for `--fault-secs`, then SIGCONT.
    NodeStop,
    /// The node's event websocket cut (`close_websockets`).
    WsCut,
    /// kill -9 of the replica holding the most node streams.
    ReplicaKill,
    /// kill -9 of Redis, and a new empty Redis on the same port at once.
    RedisRestart,
    /// Every node answers a share of ARI requests with 500 for
    /// `--fault-secs`.
    Rest5xx,
    /// Every node delivers its events late (`event_latency_ms`: latency,
    /// not a slower stream) for `--fault-secs`.
    EventDelay,
    /// Every node sends a share of its events twice for `--fault-secs`.
    EventDup,
    /// The proxy drops every 302 for `--fault-secs` (the calls corral
    /// redirects then are lost: counted with the fault).
    Proxy302,
    /// On the real farm (real Asterisk, Kamailio, sipp, corral serve on
    /// Redis): kill -9 of an Asterisk.
    RealNodeKill,
}

impl Fault {
    /// Every fault, in the matrix's order.
    pub const ALL: [Fault; 11] = [
        Fault::NodeKill,
        Fault::NodeRestart,
        Fault::NodeStop,
        Fault::WsCut,
        Fault::ReplicaKill,
        Fault::RedisRestart,
        Fault::Rest5xx,
        Fault::EventDelay,
        Fault::EventDup,
        Fault::Proxy302,
        Fault::RealNodeKill,
    ];

    /// Its name on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Fault::NodeKill => "node-kill",
            Fault::NodeRestart => "node-restart",
            Fault::NodeStop => "node-stop",
            Fault::WsCut => "ws-cut",
            Fault::ReplicaKill => "replica-kill",
            Fault::RedisRestart => "redis-restart",
            Fault::Rest5xx => "rest-5xx",
            Fault::EventDelay => "event-delay",
            Fault::EventDup => "event-dup",
            Fault::Proxy302 => "proxy-302",
            Fault::RealNodeKill => "real-node-kill",
        }
    }

    /// True for the fault that runs on the real farm.
    pub fn is_real(self) -> bool {
        self.name().starts_with("real-")
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == s.trim())
    }

    /// The comma-separated list of names, for messages.
    pub fn names() -> String {
        Fault::ALL.map(Fault::name).join(", ")
    }
}

/// A 302 sent this long before a node died or stopped may still have been
/// on its way to it (the follow is an HTTP request on a loaded machine):
/// its loss is the fault's too.
const IN_FLIGHT_MS: i64 = 1000;

/// How strong the faults are.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a fault with a length lasts (SIGSTOP, bursts, 302 drops).
    pub fault_secs: f64,
    /// Share of ARI requests answered 500 during `rest-5xx`.
    pub rest_error_rate: f64,
    /// Event delay during `event-delay`.
    pub event_delay_ms: u64,
    /// Share of events sent twice during `event-dup`.
    pub duplicate_events: f64,
    /// Crash detection promise: a 302 sent this long after a node died
    /// counts with the fault (corral could not know yet).
    pub crash_detect_ms: i64,
    /// Hung node promise: likewise after a SIGSTOP.
    pub hung_stop_ms: i64,
}

/// What was injected, and when (Unix ms).
#[derive(Debug, Clone)]
pub struct Injected {
    /// Which fault.
    pub fault: Fault,
    /// What it hit (`ast2`, `corral-a`, `redis`, `all-nodes`).
    pub target: String,
    /// The node it hit, if one.
    pub node: Option<usize>,
    /// When it began.
    pub start: i64,
    /// When it ended (the same as `start` for a kill or a cut).
    pub end: i64,
    /// When the broken part answered again (a restarted node or Redis).
    pub back: Option<i64>,
    /// Nodes killed, when.
    pub kills: Vec<(usize, i64)>,
    /// Nodes paused, from, to.
    pub pauses: Vec<(usize, i64, i64)>,
    /// Spans in which a 302 lost on its way is the fault's doing.
    pub redirect_loss: Vec<(i64, i64)>,
}

impl Injected {
    fn new(fault: Fault, target: impl Into<String>, node: Option<usize>) -> Self {
        Self::new_at(fault, target, node, now_ms())
    }

    /// A fault that began (and, until said otherwise, ended) at `now`.
    pub fn new_at(fault: Fault, target: impl Into<String>, node: Option<usize>, now: i64) -> Self {
        Injected {
            fault,
            target: target.into(),
            node,
            start: now,
            end: now,
            back: None,
            kills: Vec::new(),
            pauses: Vec::new(),
            redirect_loss: Vec::new(),
        }
    }

    /// True when `node` was paused at some time in `from..=to`.
    pub fn paused_during(&self, node: usize, from: i64, to: i64) -> bool {
        self.pauses
            .iter()
            .any(|&(n, a, b)| n == node && a <= to && b >= from)
    }

    /// True when `node` was killed in `from..=to`.
    pub fn killed_during(&self, node: usize, from: i64, to: i64) -> bool {
        self.kills
            .iter()
            .any(|&(n, t)| n == node && t >= from && t <= to)
    }

    /// True when a 302 at `t` that never arrived is the fault's doing.
    pub fn redirect_loss_covers(&self, t: i64) -> bool {
        self.redirect_loss.iter().any(|&(a, b)| t >= a && t <= b)
    }

    /// A record for a phase without a fault (nothing covers anything).
    #[cfg(test)]
    pub fn none() -> Self {
        Injected::new(Fault::EventDelay, "nothing", None)
    }
}

/// The node with the most of this phase's rooms in the last bridge sample
/// (the fault hurts most there); the first running node if none.
fn busiest_node(obs: &Observer, prefix: &str, n: usize) -> usize {
    let o = obs.lock();
    let mut per = vec![0usize; n];
    if let Some(s) = o.samples.last() {
        for (room, bridges) in &s.rooms {
            if room.starts_with(prefix) {
                for b in bridges {
                    if let Some(c) = per.get_mut(b.0) {
                        *c += 1;
                    }
                }
            }
        }
    }
    per.iter()
        .enumerate()
        .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
        .map_or(0, |(i, _)| i)
}

/// `PUT` a JSON body to every node's `path`; errors are the node's (a node
/// that does not answer keeps its old setting, and the row says so).
async fn put_all(
    http: &reqwest::Client,
    nodes: &[NodeAddr],
    path: &str,
    body: serde_json::Value,
) -> usize {
    let mut ok = 0;
    for n in nodes {
        let r = http
            .put(format!("{}{path}", n.url))
            .json(&body)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            ok += 1;
        }
    }
    ok
}

/// Injects `fault` into the simulated farm and returns once it is over
/// (a kill or a cut at once; a stop, a burst or a drop after
/// `fault_secs`; a restart once the part answers again).
///
/// # Errors
/// A part could not be restarted, or the fault is not for this farm.
pub async fn inject(
    fault: Fault,
    farm: &mut SimFarm,
    obs: &Observer,
    prefix: &str,
    s: &Settings,
) -> anyhow::Result<Injected> {
    let http = reqwest::Client::new();
    let nodes = farm.nodes();
    let hold = Duration::from_secs_f64(s.fault_secs.clamp(0.1, 600.0));
    let target = busiest_node(obs, prefix, nodes.len());
    let id = nodes.get(target).map_or_else(String::new, |n| n.id.clone());
    let inj = match fault {
        Fault::NodeKill => {
            let mut inj = Injected::new(fault, id, Some(target));
            farm.kill_node(target);
            inj.kills.push((target, inj.start));
            inj.redirect_loss
                .push((inj.start - IN_FLIGHT_MS, inj.start + s.crash_detect_ms));
            inj
        }
        Fault::NodeRestart => {
            let mut inj = Injected::new(fault, id, Some(target));
            farm.kill_node(target);
            inj.kills.push((target, inj.start));
            inj.redirect_loss
                .push((inj.start - IN_FLIGHT_MS, inj.start + s.crash_detect_ms));
            // Down for a second: long enough for corral to notice.
            tokio::time::sleep(Duration::from_secs(1)).await;
            farm.restart_node(target).await?;
            inj.end = now_ms();
            inj.back = Some(inj.end);
            inj
        }
        Fault::NodeStop => {
            let mut inj = Injected::new(fault, id, Some(target));
            farm.pause_node(target);
            tokio::time::sleep(hold).await;
            farm.resume_node(target);
            inj.end = now_ms();
            inj.back = Some(inj.end);
            inj.pauses.push((target, inj.start, inj.end));
            inj.redirect_loss
                .push((inj.start - IN_FLIGHT_MS, inj.start + s.hung_stop_ms));
            inj
        }
        Fault::WsCut => {
            let url = nodes.get(target).map(|n| n.url.clone()).unwrap_or_default();
            let inj = Injected::new(fault, id, Some(target));
            let r = http
                .put(format!("{url}/sim/faults"))
                .json(&json!({"close_websockets": true}))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            anyhow::ensure!(
                r.is_ok_and(|r| r.status().is_success()),
                "{}: PUT /sim/faults close_websockets failed",
                inj.target
            );
            inj
        }
        Fault::ReplicaKill => {
            let held = farm.streams_held().await;
            let (victim, _) = held
                .iter()
                .copied()
                .max_by_key(|(i, n)| (*n, std::cmp::Reverse(*i)))
                .ok_or_else(|| anyhow::anyhow!("no replica runs"))?;
            let inj = Injected::new(
                fault,
                format!("corral-{}", (b'a' + victim as u8) as char),
                None,
            );
            farm.kill_replica(victim);
            inj
        }
        Fault::RedisRestart => {
            let mut inj = Injected::new(fault, "redis", None);
            farm.restart_redis().await?;
            inj.end = now_ms();
            inj.back = Some(inj.end);
            inj
        }
        Fault::Rest5xx | Fault::EventDelay | Fault::EventDup | Fault::Proxy302 => {
            let (path, on, off) = match fault {
                Fault::Rest5xx => (
                    "/sim/faults",
                    json!({"rest_error_rate": s.rest_error_rate}),
                    json!({"rest_error_rate": 0.0}),
                ),
                Fault::EventDelay => (
                    "/sim/faults",
                    json!({"event_latency_ms": s.event_delay_ms}),
                    json!({"event_latency_ms": 0}),
                ),
                Fault::EventDup => (
                    "/sim/faults",
                    json!({"duplicate_events": s.duplicate_events}),
                    json!({"duplicate_events": 0.0}),
                ),
                _ => (
                    "/sim/upstream",
                    json!({"on_302": "drop"}),
                    json!({"on_302": "follow"}),
                ),
            };
            let mut inj = Injected::new(fault, "all-nodes", None);
            let set = put_all(&http, &nodes, path, on).await;
            anyhow::ensure!(
                set == nodes.len(),
                "{}: only {set} of {} nodes took the setting",
                fault.name(),
                nodes.len()
            );
            tokio::time::sleep(hold).await;
            put_all(&http, &nodes, path, off).await;
            inj.end = now_ms();
            if fault == Fault::Proxy302 {
                inj.redirect_loss.push((inj.start, inj.end));
            }
            inj
        }
        Fault::RealNodeKill => anyhow::bail!("real-node-kill runs on the real farm"),
    };
    Ok(inj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Fault::ALL {
            assert_eq!(Fault::parse(f.name()), Some(f));
        }
        assert_eq!(Fault::parse(" ws-cut "), Some(Fault::WsCut));
        assert_eq!(Fault::parse("node"), None);
        assert!(Fault::RealNodeKill.is_real());
        assert!(!Fault::NodeKill.is_real());
    }

    #[test]
    fn windows_cover_what_they_say() {
        let mut i = Injected::none();
        i.kills.push((1, 1000));
        i.pauses.push((2, 2000, 3000));
        i.redirect_loss.push((1000, 1500));
        assert!(i.killed_during(1, 900, 1000));
        assert!(!i.killed_during(1, 1001, 2000));
        assert!(!i.killed_during(0, 0, 5000));
        assert!(i.paused_during(2, 2500, 9000));
        assert!(!i.paused_during(2, 3001, 9000));
        assert!(i.redirect_loss_covers(1500));
        assert!(!i.redirect_loss_covers(1501));
    }
}
