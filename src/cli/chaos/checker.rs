//! What the nodes say, and what it means: the chaos run's source of truth.
//!
//! The [`Observer`] watches the farm for the whole run, from the nodes
//! alone (never from corral's map):
//! - every ~100 ms, `GET /ari/bridges` on every running node: which rooms
//!   have calls in which bridge on which node (a paused node keeps its last
//!   sample: its calls are frozen, not gone);
//! - every 250 ms, `GET /sim/log?since=N` on every running node: what
//!   happened to each call (answer, bridge entries, hangups with their
//!   cause), read again from 0 for a node's new process;
//! - every 500 ms, `GET /sim/stats`: counters (channels hung up over ARI,
//!   failed `Stasis()`, 302s lost), summed over a node's processes.
//!
//! It also follows each replica's `/v1/events`, for timings only (when a
//! node was marked down, up again): reaction times are corral's to report;
//! the invariants are judged from the nodes.
//!
//! The analysis functions then judge one phase: each call's fate
//! ([`fate`]), the splits seen in the samples ([`splits`]) and the
//! counters' deltas.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::caller::{CallRecord, HangupResult};
use super::farm::{Board, Life, NodeAddr};
use super::faults::Injected;
use super::now_ms;
use crate::shutdown::OwnedTask;

/// The bridge name of a conference room as ARI shows it (see
/// `names.rs`; read here as an outside tool would).
pub const CONFERENCE_BRIDGE: &str = "corral:conference:";

/// A bridged call moved to another node (REFER) and answered there less
/// than this before its caller hung up is counted bridged: it was on its
/// way into its room's bridge.
const MOVING_MS: i64 = 1000;

/// How often the bridges are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// What the log says happened to a call, in the checker's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    /// Answered.
    Answer,
    /// Entered a bridge.
    EnterBridge,
    /// Left a bridge.
    LeaveBridge,
    /// Gone (with a cause).
    Hangup,
    /// Anything else in the log (MOH, ringing).
    Other,
}

/// One line of a node's call log, kept for a call.
#[derive(Debug, Clone)]
pub struct CallEvent {
    /// Node index.
    pub node: usize,
    /// When (Unix ms, from the node's own timestamp).
    pub at: i64,
    /// What.
    pub what: What,
    /// The bridge's name (bridge entries).
    pub bridge_name: Option<String>,
    /// The hangup cause.
    pub cause: Option<i64>,
}

/// One sample of every node's bridges.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the sample was complete (Unix ms).
    pub at: i64,
    /// Room → its bridges with calls: `(node, bridge id, calls)`.
    pub rooms: BTreeMap<String, Vec<(usize, String, usize)>>,
}

/// Counters of `/sim/stats` the checker reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Counts {
    /// Channels hung up with `DELETE /ari/channels/{id}`: by corral.
    pub hungup_by_ari: u64,
    /// `Stasis()` that failed (no websocket owned the app).
    pub stasis_failed: u64,
    /// 302s whose call was lost on the way.
    pub redirects_lost: u64,
    /// 302s sent.
    pub redirects_302: u64,
    /// REFERs sent.
    pub refers: u64,
    /// REST requests failed on purpose.
    pub rest_faults: u64,
}

impl Counts {
    fn add(self, o: Counts) -> Counts {
        Counts {
            hungup_by_ari: self.hungup_by_ari + o.hungup_by_ari,
            stasis_failed: self.stasis_failed + o.stasis_failed,
            redirects_lost: self.redirects_lost + o.redirects_lost,
            redirects_302: self.redirects_302 + o.redirects_302,
            refers: self.refers + o.refers,
            rest_faults: self.rest_faults + o.rest_faults,
        }
    }

    /// `self - o`, field by field (never below 0).
    pub fn minus(self, o: Counts) -> Counts {
        Counts {
            hungup_by_ari: self.hungup_by_ari.saturating_sub(o.hungup_by_ari),
            stasis_failed: self.stasis_failed.saturating_sub(o.stasis_failed),
            redirects_lost: self.redirects_lost.saturating_sub(o.redirects_lost),
            redirects_302: self.redirects_302.saturating_sub(o.redirects_302),
            refers: self.refers.saturating_sub(o.refers),
            rest_faults: self.rest_faults.saturating_sub(o.rest_faults),
        }
    }
}

/// A node's counters over its processes: finished processes' last values
/// plus the current one's.
#[derive(Debug, Clone, Copy, Default)]
struct CountsOverLives {
    generation: u64,
    done: Counts,
    current: Counts,
}

impl CountsOverLives {
    fn seen(&mut self, generation: u64, c: Counts) {
        if generation != self.generation {
            self.done = self.done.add(self.current);
            self.current = Counts::default();
            self.generation = generation;
        }
        self.current = c;
    }

    fn total(&self) -> Counts {
        self.done.add(self.current)
    }
}

/// An event of corral's `/v1/events`, as seen.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When it arrived (Unix ms).
    pub at: i64,
    /// Its `event:` type.
    pub kind: String,
    /// Its data.
    pub data: Value,
}

/// Everything observed so far.
#[derive(Debug, Default)]
pub struct Obs {
    /// The bridge samples, oldest first.
    pub samples: Vec<Sample>,
    /// Call id → its log lines, all nodes.
    pub calls: HashMap<String, Vec<CallEvent>>,
    counts: Vec<CountsOverLives>,
    /// corral's events.
    pub events: Vec<Seen>,
}

impl Obs {
    /// The counters summed over nodes and processes now.
    pub fn counts(&self) -> Counts {
        self.counts
            .iter()
            .fold(Counts::default(), |a, c| a.add(c.total()))
    }
}

/// The observer's handle: its data and its tasks (stopped on drop).
pub struct Observer {
    obs: Arc<Mutex<Obs>>,
    stop: CancellationToken,
    _tasks: Vec<OwnedTask<()>>,
}

impl Observer {
    /// Starts watching `nodes` (their states from `board`) and the replicas
    /// at `replicas` (API URLs).
    ///
    /// # Errors
    /// No HTTP client could be built.
    pub fn start(
        nodes: Arc<[NodeAddr]>,
        board: Board,
        replicas: Vec<String>,
        ari_user: &str,
        ari_password: &str,
    ) -> anyhow::Result<Observer> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(16)
            .build()?;
        let obs = Arc::new(Mutex::new(Obs {
            counts: vec![CountsOverLives::default(); nodes.len()],
            ..Obs::default()
        }));
        let stop = CancellationToken::new();
        let ctx = Ctx {
            http,
            nodes,
            board,
            obs: obs.clone(),
            stop: stop.clone(),
            auth: (ari_user.to_string(), ari_password.to_string()),
        };
        let mut tasks = vec![
            OwnedTask::spawn(ctx.clone().sample_bridges()),
            OwnedTask::spawn(ctx.clone().poll_logs()),
            OwnedTask::spawn(ctx.clone().poll_stats()),
        ];
        for url in replicas {
            tasks.push(OwnedTask::spawn(ctx.clone().follow_events(url)));
        }
        Ok(Observer {
            obs,
            stop,
            _tasks: tasks,
        })
    }

    /// An observer of corral's events only (for the real farm, whose nodes
    /// are sampled by its own phase).
    ///
    /// # Errors
    /// No HTTP client could be built.
    pub fn events_only(replicas: Vec<String>) -> anyhow::Result<Observer> {
        let obs = Arc::new(Mutex::new(Obs::default()));
        let stop = CancellationToken::new();
        let ctx = Ctx {
            http: reqwest::Client::builder().build()?,
            nodes: Arc::from(Vec::new()),
            board: Board::default(),
            obs: obs.clone(),
            stop: stop.clone(),
            auth: (String::new(), String::new()),
        };
        let tasks = replicas
            .into_iter()
            .map(|url| OwnedTask::spawn(ctx.clone().follow_events(url)))
            .collect();
        Ok(Observer {
            obs,
            stop,
            _tasks: tasks,
        })
    }

    /// The observations, locked (do not hold across an await).
    pub fn lock(&self) -> MutexGuard<'_, Obs> {
        self.obs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the log and counters have been read once more from
    /// every running node (so that a phase's analysis sees its last calls).
    pub async fn settle(&self) {
        // Two rounds of the slowest poller.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[derive(Clone)]
struct Ctx {
    http: reqwest::Client,
    nodes: Arc<[NodeAddr]>,
    board: Board,
    obs: Arc<Mutex<Obs>>,
    stop: CancellationToken,
    auth: (String, String),
}

impl Ctx {
    fn lock(&self) -> MutexGuard<'_, Obs> {
        self.obs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn tick(&self, every: &mut tokio::time::Interval) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = every.tick() => true,
        }
    }

    /// `GET url` as JSON, tried again on a 5xx (the REST fault knob hits
    /// the checker's reads too), `None` when the node does not answer.
    async fn get(&self, url: String, ari: bool, timeout: Duration) -> Option<Value> {
        for _ in 0..4 {
            let mut req = self.http.get(&url).timeout(timeout);
            if ari {
                req = req.basic_auth(&self.auth.0, Some(&self.auth.1));
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => return r.json().await.ok(),
                Ok(r) if r.status().is_server_error() => continue,
                _ => return None,
            }
        }
        None
    }

    async fn sample_bridges(self) {
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Per node: its last answer (kept while it is paused).
        let mut last: Vec<Vec<(String, String, usize)>> = vec![Vec::new(); self.nodes.len()];
        while self.tick(&mut every).await {
            let board = self.board.get();
            let me = &self;
            let asks = self.nodes.iter().enumerate().map(|(i, n)| {
                let life = board.get(i).map(|s| s.life).unwrap_or(Life::Killed);
                let url = format!("{}/ari/bridges", n.url);
                async move {
                    match life {
                        Life::Up => (i, life, me.get(url, true, Duration::from_millis(400)).await),
                        _ => (i, life, None),
                    }
                }
            });
            let answers = futures_util::future::join_all(asks).await;
            let mut rooms: BTreeMap<String, Vec<(usize, String, usize)>> = BTreeMap::new();
            for (i, life, answer) in answers {
                match (life, answer) {
                    (Life::Killed, _) => last[i].clear(),
                    (Life::Up, Some(v)) => last[i] = conference_bridges(&v),
                    // Paused, or no answer in time: as last seen.
                    _ => {}
                }
                for (room, bridge, n) in &last[i] {
                    rooms
                        .entry(room.clone())
                        .or_default()
                        .push((i, bridge.clone(), *n));
                }
            }
            let at = now_ms();
            self.lock().samples.push(Sample { at, rooms });
        }
    }

    async fn poll_logs(self) {
        let mut every = tokio::time::interval(Duration::from_millis(250));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Per node: (generation, last seq read).
        let mut cursor: Vec<(u64, u64)> = vec![(0, 0); self.nodes.len()];
        while self.tick(&mut every).await {
            let board = self.board.get();
            for (i, n) in self.nodes.iter().enumerate() {
                let Some(s) = board.get(i) else { continue };
                if s.life != Life::Up {
                    continue;
                }
                if cursor[i].0 != s.generation {
                    cursor[i] = (s.generation, 0);
                }
                let url = format!("{}/sim/log?since={}", n.url, cursor[i].1);
                let Some(Value::Array(entries)) =
                    self.get(url, false, Duration::from_millis(1500)).await
                else {
                    continue;
                };
                let mut obs = self.lock();
                for e in entries {
                    if let Some(seq) = e["seq"].as_u64() {
                        cursor[i].1 = cursor[i].1.max(seq);
                    }
                    let Some(call) = e["call_id"].as_str() else {
                        continue;
                    };
                    let what = match e["what"].as_str() {
                        Some("answer") => What::Answer,
                        Some("enter_bridge") => What::EnterBridge,
                        Some("leave_bridge") => What::LeaveBridge,
                        Some("hangup") => What::Hangup,
                        _ => What::Other,
                    };
                    if what == What::Other {
                        continue;
                    }
                    let at = e["ts"]
                        .as_str()
                        .and_then(parse_ts_ms)
                        .unwrap_or_else(now_ms);
                    obs.calls
                        .entry(call.to_string())
                        .or_default()
                        .push(CallEvent {
                            node: i,
                            at,
                            what,
                            bridge_name: e["bridge_name"].as_str().map(str::to_string),
                            cause: e["cause"].as_i64(),
                        });
                }
            }
        }
    }

    async fn poll_stats(self) {
        let mut every = tokio::time::interval(Duration::from_millis(500));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while self.tick(&mut every).await {
            let board = self.board.get();
            for (i, n) in self.nodes.iter().enumerate() {
                let Some(s) = board.get(i) else { continue };
                if s.life != Life::Up {
                    continue;
                }
                let url = format!("{}/sim/stats", n.url);
                if let Some(v) = self.get(url, false, Duration::from_millis(800)).await
                    && let Ok(c) = serde_json::from_value::<Counts>(v)
                    && let Some(slot) = self.lock().counts.get_mut(i)
                {
                    slot.seen(s.generation, c);
                }
            }
        }
    }

    /// Follows one replica's `/v1/events` (server-sent events), connecting
    /// again whenever the stream ends (the replica was killed, restarted).
    async fn follow_events(self, url: String) {
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            if let Ok(mut r) = self.http.get(format!("{url}/v1/events")).send().await
                && r.status().is_success()
            {
                let mut buf = String::new();
                loop {
                    let chunk = tokio::select! {
                        _ = self.stop.cancelled() => return,
                        c = r.chunk() => c,
                    };
                    let Ok(Some(bytes)) = chunk else { break };
                    buf.push_str(&String::from_utf8_lossy(&bytes));
                    while let Some(end) = buf.find("\n\n") {
                        let block: String = buf.drain(..end + 2).collect();
                        if let Some((kind, data)) = parse_sse(&block) {
                            self.lock().events.push(Seen {
                                at: now_ms(),
                                kind,
                                data,
                            });
                        }
                    }
                }
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
}

/// One server-sent event block: `(event type, data as JSON)`.
fn parse_sse(block: &str) -> Option<(String, Value)> {
    let mut kind = None;
    let mut data = String::new();
    for line in block.lines() {
        if let Some(k) = line.strip_prefix("event:") {
            kind = Some(k.trim().to_string());
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.trim_start());
        }
    }
    Some((kind?, serde_json::from_str(&data).unwrap_or(Value::Null)))
}

/// The conference bridges with calls in a `GET /ari/bridges` answer:
/// `(room, bridge id, calls)`.
fn conference_bridges(v: &Value) -> Vec<(String, String, usize)> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| {
            let room = b["name"].as_str()?.strip_prefix(CONFERENCE_BRIDGE)?;
            let n = b["channels"].as_array().map_or(0, Vec::len);
            (n > 0).then(|| {
                (
                    room.to_string(),
                    b["id"].as_str().unwrap_or("").to_string(),
                    n,
                )
            })
        })
        .collect()
}

/// Asterisk's event time (`2026-01-02T03:04:05.678+0000`) as Unix ms.
pub fn parse_ts_ms(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    if b.len() < 28 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { ts.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    let sign = if b[23] == b'-' { -1 } else { 1 };
    let off = sign * (num(24..26)? * 60 + num(26..28)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi - off) * 60_000 + s * 1000 + ms)
}

// ---------------------------------------------------------------------------
// Judging a phase

/// What became of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// In its room's bridge, and still there when its caller hung up.
    Bridged,
    /// Lost because of the fault (with its crashed node, a 302 the proxy
    /// dropped, stuck on a stopped node): why.
    LostWithFault(String),
    /// Lost, and corral could have kept it: why.
    LostByCorral(String),
    /// No node took it (every node refused or was silent).
    NotOffered,
    /// Its end could not be seen (its node never answered again).
    Unknown,
}

/// The fate of `rec`, from its log lines `evs` (sorted by time) and what
/// was injected.
pub fn fate(rec: &CallRecord, evs: &[CallEvent], inj: &Injected, node_ids: &[String]) -> Fate {
    let name = |i: usize| {
        node_ids
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("node{i}"))
    };
    let Some(taken) = &rec.taken else {
        return Fate::NotOffered;
    };
    if !taken.stasis {
        return Fate::LostByCorral(format!(
            "Stasis() failed on {} (no websocket owned the app)",
            name(taken.node)
        ));
    }
    let bridge = format!("{CONFERENCE_BRIDGE}{}", rec.room);
    let in_room = |e: &CallEvent| e.bridge_name.as_deref() == Some(bridge.as_str());
    let bridged = evs
        .iter()
        .any(|e| e.what == What::EnterBridge && in_room(e));
    // A hangup the caller sent to a stopped node, served when it resumed,
    // is the caller's own: the call was found there.
    let hangup = match &rec.hangup {
        HangupResult::Gone { late, .. } => evs
            .last()
            .filter(|e| e.what == What::Hangup)
            .and_then(|e| late.iter().find(|(n, t)| *n == e.node && *t <= e.at))
            .map(|&(node, at)| HangupResult::Found { node, at }),
        _ => None,
    }
    .unwrap_or_else(|| rec.hangup.clone());
    // Sent into the fault: its last 302 fell in a span where a lost 302 is
    // the fault's, and nothing after it happened anywhere but on the node
    // the fault hit until the fault ended (a stopped node serves the
    // INVITE when it resumes, and may pass it on to another node then).
    let into_fault = evs
        .iter()
        .rposition(|e| e.what == What::Hangup && e.cause == Some(23))
        .filter(|&i| inj.redirect_loss_covers(evs[i].at))
        .is_some_and(|i| {
            evs[i + 1..]
                .iter()
                .all(|e| Some(e.node) == inj.node || e.at >= inj.end)
        });
    match &hangup {
        HangupResult::NotTried => Fate::Unknown,
        HangupResult::Unreachable => {
            if bridged {
                Fate::Bridged
            } else {
                Fate::LostWithFault("never bridged; its node did not answer at the end".into())
            }
        }
        HangupResult::Found { node, at } => {
            // The state on that node when the caller sent its hangup.
            let last_bridge_on = |n: usize| {
                evs.iter().rfind(|e| {
                    e.node == n
                        && e.at < *at
                        && matches!(e.what, What::EnterBridge | What::LeaveBridge)
                })
            };
            let last_bridge = last_bridge_on(*node);
            // A call being moved (REFER) has two legs: the old one stays in
            // its room's bridge until the new one is answered, so a caller
            // still in its room's bridge on another node was bridged.
            let in_room_elsewhere = evs.iter().map(|e| e.node).filter(|n| n != node).any(|n| {
                last_bridge_on(n).is_some_and(|e| e.what == What::EnterBridge && in_room(e))
            });
            match last_bridge {
                Some(e) if e.what == What::EnterBridge && in_room(e) => Fate::Bridged,
                _ if in_room_elsewhere => Fate::Bridged,
                _ if !bridged => {
                    if into_fault {
                        Fate::LostWithFault("redirected (302) into the fault".into())
                    } else if inj.paused_during(*node, rec.offered_at, *at)
                        || inj.paused_during(taken.node, rec.offered_at, *at)
                    {
                        Fate::LostWithFault("never bridged; its node was stopped".into())
                    } else {
                        Fate::LostByCorral(format!("never bridged on {} in its hold", name(*node)))
                    }
                }
                // Bridged before, and moved here (a REFER) less than a
                // second before or after its caller sent the hangup (a
                // hangup sent while the call was between two nodes is
                // served where it arrives): on its way back in.
                _ if evs.iter().any(|e| {
                    e.node == *node && e.what == What::Answer && (*at - e.at).abs() < MOVING_MS
                }) =>
                {
                    Fate::Bridged
                }
                _ => Fate::LostByCorral(format!(
                    "out of its room's bridge on {} when its caller hung up",
                    name(*node)
                )),
            }
        }
        HangupResult::Gone { .. } if into_fault && !bridged => {
            Fate::LostWithFault("redirected (302) into the fault".into())
        }
        HangupResult::Gone { at, .. } => match evs.last() {
            Some(e) if e.what == What::Hangup => match e.cause {
                Some(23) => {
                    if inj.redirect_loss_covers(e.at) {
                        Fate::LostWithFault("redirected (302) into the fault".into())
                    } else {
                        Fate::LostByCorral(format!(
                            "redirected (302) from {} and never arrived",
                            name(e.node)
                        ))
                    }
                }
                Some(41) => Fate::LostByCorral(format!(
                    "handed to the dialplan's fallback on {}",
                    name(e.node)
                )),
                c => Fate::LostByCorral(format!(
                    "hung up on {} (cause {})",
                    name(e.node),
                    c.map_or("?".into(), |c| c.to_string())
                )),
            },
            last => {
                let node = last.map_or(taken.node, |e| e.node);
                let since = last.map_or(taken.at, |e| e.at);
                if inj.killed_during(node, since - 500, *at)
                    || (last.is_none() && inj.killed_during(taken.node, taken.at - 500, *at))
                {
                    Fate::LostWithFault("lost with its crashed node".into())
                } else {
                    Fate::LostByCorral(format!("vanished from {}", name(node)))
                }
            }
        },
    }
}

/// One split: a room with calls in more than one bridge (on one node or
/// several) in consecutive samples.
#[derive(Debug, Clone)]
pub struct Split {
    /// The room.
    pub room: String,
    /// First sample that showed it (Unix ms).
    pub from: i64,
    /// First sample that showed it whole again (or the window's end).
    pub to: i64,
    /// Whether it was still split at the window's end.
    pub open: bool,
    /// Most bridges at once.
    pub bridges: usize,
    /// Nodes involved at once, most.
    pub nodes: usize,
}

/// The splits of rooms starting with `prefix` in samples from `from` to
/// `to`, and the rooms' state in the last sample: `(whole, with calls)`.
pub fn splits(
    samples: &[Sample],
    prefix: &str,
    from: i64,
    to: i64,
) -> (Vec<Split>, (usize, usize)) {
    let mut open: BTreeMap<String, Split> = BTreeMap::new();
    let mut done = Vec::new();
    let mut last_state = (0, 0);
    for s in samples.iter().filter(|s| s.at >= from && s.at <= to) {
        let mut whole = 0;
        let mut total = 0;
        for (room, bridges) in s.rooms.iter().filter(|(r, _)| r.starts_with(prefix)) {
            total += 1;
            if bridges.len() <= 1 {
                whole += 1;
                if let Some(mut sp) = open.remove(room) {
                    sp.to = s.at;
                    sp.open = false;
                    done.push(sp);
                }
                continue;
            }
            let mut nodes: Vec<usize> = bridges.iter().map(|b| b.0).collect();
            nodes.sort_unstable();
            nodes.dedup();
            let sp = open.entry(room.clone()).or_insert_with(|| Split {
                room: room.clone(),
                from: s.at,
                to: s.at,
                open: true,
                bridges: 0,
                nodes: 0,
            });
            sp.to = s.at;
            sp.bridges = sp.bridges.max(bridges.len());
            sp.nodes = sp.nodes.max(nodes.len());
        }
        // A room with no calls left is not split any more.
        let gone: Vec<String> = open
            .keys()
            .filter(|r| !s.rooms.contains_key(*r))
            .cloned()
            .collect();
        for r in gone {
            if let Some(mut sp) = open.remove(&r) {
                sp.to = s.at;
                sp.open = false;
                done.push(sp);
            }
        }
        last_state = (whole, total);
    }
    done.extend(open.into_values());
    done.sort_by_key(|s| (s.from, s.room.clone()));
    (done, last_state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asterisk_times_read_as_unix_ms() {
        assert_eq!(parse_ts_ms("1970-01-01T00:00:00.000+0000"), Some(0));
        assert_eq!(parse_ts_ms("1970-01-01T01:00:00.250+0100"), Some(250));
        assert_eq!(
            parse_ts_ms("2024-02-29T12:00:00.001+0000"),
            Some(1_709_208_000_001)
        );
        for bad in [
            "",
            "2024-02-29",
            "2024-02-29T12:00:00.001+00",
            "xxxx-02-29T12:00:00.001+0000",
        ] {
            assert_eq!(parse_ts_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn sse_blocks_parse() {
        let (k, v) = parse_sse("event: node_down\ndata: {\"node\":\"ast1\"}\n\n").expect("event");
        assert_eq!(k, "node_down");
        assert_eq!(v["node"], "ast1");
        assert!(parse_sse(": keep-alive\n\n").is_none());
    }

    fn call(taken: Option<(usize, bool)>, hangup: HangupResult) -> CallRecord {
        CallRecord {
            call_id: "p1c1".into(),
            room: "p1r0".into(),
            offered_at: 1000,
            attempts: Vec::new(),
            taken: taken.map(|(node, stasis)| super::super::caller::Taken {
                node,
                at: 1000,
                stasis,
            }),
            hangup,
        }
    }

    fn ev(node: usize, at: i64, what: What, cause: Option<i64>) -> CallEvent {
        CallEvent {
            node,
            at,
            what,
            bridge_name: matches!(what, What::EnterBridge | What::LeaveBridge)
                .then(|| "corral:conference:p1r0".to_string()),
            cause,
        }
    }

    #[test]
    fn fates_follow_what_the_nodes_logged() {
        let ids: Vec<String> = vec!["ast1".into(), "ast2".into()];
        let mut inj =
            Injected::new_at(super::super::faults::Fault::NodeKill, "ast2", Some(1), 5000);
        inj.kills.push((1, 5000));
        inj.redirect_loss.push((5000, 5500));
        let found = HangupResult::Found { node: 0, at: 9000 };
        let gone = HangupResult::Gone {
            at: 9000,
            late: Vec::new(),
        };
        let bridged = [
            ev(0, 1010, What::Answer, None),
            ev(0, 1011, What::EnterBridge, None),
            ev(0, 9001, What::LeaveBridge, None),
            ev(0, 9001, What::Hangup, Some(16)),
        ];
        assert_eq!(
            fate(&call(None, HangupResult::NotTried), &[], &inj, &ids),
            Fate::NotOffered
        );
        assert!(matches!(
            fate(&call(Some((0, false)), HangupResult::NotTried), &[], &inj, &ids),
            Fate::LostByCorral(w) if w.contains("Stasis() failed on ast1")
        ));
        assert_eq!(
            fate(&call(Some((0, true)), found.clone()), &bridged, &inj, &ids),
            Fate::Bridged
        );
        // Left its bridge before its caller hung up.
        let left = [
            ev(0, 1011, What::EnterBridge, None),
            ev(0, 4000, What::LeaveBridge, None),
        ];
        assert!(matches!(
            fate(&call(Some((0, true)), found.clone()), &left, &inj, &ids),
            Fate::LostByCorral(w) if w.contains("out of its room's bridge")
        ));
        // Bridged on ast2, moved (REFER) to ast1 while its caller hung up:
        // the hangup was sent just before the answer there.
        let moving = [
            ev(1, 1010, What::Answer, None),
            ev(1, 1011, What::EnterBridge, None),
            ev(1, 8990, What::LeaveBridge, None),
            ev(1, 8991, What::Hangup, Some(16)),
            ev(0, 9020, What::Answer, None),
            ev(0, 9040, What::Hangup, Some(16)),
        ];
        assert_eq!(
            fate(&call(Some((1, true)), found.clone()), &moving, &inj, &ids),
            Fate::Bridged
        );
        // Moved (REFER) from ast2 to ast1 when its caller hung up: the new
        // leg rings on ast1, the old one is still in the room's bridge.
        let referring = [
            ev(1, 1010, What::Answer, None),
            ev(1, 1011, What::EnterBridge, None),
            ev(0, 8990, What::Hangup, Some(127)),
            ev(1, 9002, What::LeaveBridge, None),
            ev(1, 9002, What::Hangup, Some(16)),
        ];
        assert_eq!(
            fate(
                &call(Some((1, true)), found.clone()),
                &referring,
                &inj,
                &ids
            ),
            Fate::Bridged
        );
        assert!(matches!(
            fate(&call(Some((0, true)), found), &[], &inj, &ids),
            Fate::LostByCorral(w) if w.contains("never bridged")
        ));
        // On the node that crashed, nothing logged after.
        let on_dead = [ev(1, 1011, What::EnterBridge, None)];
        assert!(matches!(
            fate(&call(Some((1, true)), gone.clone()), &on_dead, &inj, &ids),
            Fate::LostWithFault(_)
        ));
        // A 302 inside the crash window, and one after it.
        let in_window = [ev(0, 5200, What::Hangup, Some(23))];
        assert!(matches!(
            fate(&call(Some((0, true)), gone.clone()), &in_window, &inj, &ids),
            Fate::LostWithFault(_)
        ));
        let after = [ev(0, 6000, What::Hangup, Some(23))];
        assert!(matches!(
            fate(&call(Some((0, true)), gone.clone()), &after, &inj, &ids),
            Fate::LostByCorral(w) if w.contains("302")
        ));
        let fallback = [ev(0, 1200, What::Hangup, Some(41))];
        assert!(matches!(
            fate(&call(Some((0, true)), gone), &fallback, &inj, &ids),
            Fate::LostByCorral(w) if w.contains("fallback")
        ));
        // Sent by 302 to a stopped node, served on resume by the fallback.
        let mut stop =
            Injected::new_at(super::super::faults::Fault::NodeStop, "ast2", Some(1), 5000);
        stop.pauses.push((1, 5000, 9000));
        stop.end = 9000;
        stop.redirect_loss.push((4000, 8000));
        let into_stopped = [
            ev(0, 5100, What::Hangup, Some(23)),
            ev(1, 9001, What::Answer, None),
            ev(1, 9001, What::Hangup, Some(41)),
        ];
        let gone = HangupResult::Gone {
            at: 9500,
            late: Vec::new(),
        };
        assert!(matches!(
            fate(
                &call(Some((0, true)), gone.clone()),
                &into_stopped,
                &stop,
                &ids
            ),
            Fate::LostWithFault(_)
        ));
        // ... but a 302 to another node that then loses it is corral's.
        let elsewhere = [
            ev(1, 5100, What::Hangup, Some(23)),
            ev(0, 5200, What::Hangup, Some(41)),
        ];
        assert!(matches!(
            fate(
                &call(Some((1, true)), gone.clone()),
                &elsewhere,
                &stop,
                &ids
            ),
            Fate::LostByCorral(_)
        ));
        // Stuck in the stopped node until it resumed, then refused there
        // (no corral app yet) and passed on by the proxy, too late.
        let stuck = [
            ev(0, 5100, What::Hangup, Some(23)),
            ev(1, 9001, What::Hangup, Some(34)),
            ev(2, 9010, What::Hangup, Some(127)),
        ];
        assert!(matches!(
            fate(&call(Some((0, true)), gone), &stuck, &stop, &ids),
            Fate::LostWithFault(_)
        ));
        // The caller's own hangup, sent to a stopped node and served late.
        let late = HangupResult::Gone {
            at: 9000,
            late: vec![(0, 7000)],
        };
        let served_late = [
            ev(0, 1011, What::EnterBridge, None),
            ev(0, 8000, What::LeaveBridge, None),
            ev(0, 8000, What::Hangup, Some(16)),
        ];
        assert_eq!(
            fate(&call(Some((0, true)), late), &served_late, &inj, &ids),
            Fate::Bridged
        );
    }

    fn sample(at: i64, rooms: &[(&str, &[(usize, &str)])]) -> Sample {
        Sample {
            at,
            rooms: rooms
                .iter()
                .map(|(r, b)| {
                    (
                        r.to_string(),
                        b.iter().map(|(n, id)| (*n, id.to_string(), 1)).collect(),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn splits_are_episodes_of_more_than_one_bridge() {
        let s = vec![
            sample(0, &[("p1r0", &[(0, "a")]), ("p1r1", &[(1, "b")])]),
            sample(
                100,
                &[("p1r0", &[(0, "a"), (1, "c")]), ("p1r1", &[(1, "b")])],
            ),
            sample(
                200,
                &[
                    ("p1r0", &[(0, "a"), (0, "d")]),
                    ("p1r1", &[(1, "b"), (1, "e")]),
                ],
            ),
            sample(
                300,
                &[("p1r0", &[(0, "a")]), ("p1r1", &[(1, "b"), (1, "e")])],
            ),
            sample(
                400,
                &[
                    ("p1r1", &[(1, "b"), (1, "e")]),
                    ("p2r0", &[(0, "x"), (1, "y")]),
                ],
            ),
        ];
        let (sp, (whole, total)) = splits(&s, "p1", 0, 400);
        assert_eq!(sp.len(), 2);
        assert_eq!(
            (sp[0].room.as_str(), sp[0].from, sp[0].to, sp[0].open),
            ("p1r0", 100, 300, false)
        );
        assert_eq!((sp[0].bridges, sp[0].nodes), (2, 2));
        assert_eq!(
            (sp[1].room.as_str(), sp[1].from, sp[1].open),
            ("p1r1", 200, true)
        );
        assert_eq!((whole, total), (0, 1), "p2 rooms are another phase's");
    }
}
