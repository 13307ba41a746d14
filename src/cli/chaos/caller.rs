//! The callers of a chaos run, behind a model of Kamailio's dispatcher.
//!
//! Calls are offered at a fixed rate (a timer paces the load) into the
//! phase's rooms (`conf-<room>`, room chosen by the seeded generator), each
//! sent to the next node round-robin (`POST /sim/calls` with our own call
//! id). Like the shipped `kamailio.cfg`:
//! - a node that refuses the connection, answers 5xx or sends nothing
//!   within [`FR_TIMER`] is marked inactive and the call goes to the next
//!   node (failover, `ds_next_dst`); a call the node's dialplan refused
//!   unanswered with a SIP 5xx (the shipped fallback's 503 when `Stasis()`
//!   failed) goes to the next node too, without marking this one; an attempt that timed out may still be
//!   taken by that node later, so it is cancelled once the node answers
//!   again (a CANCEL);
//! - inactive nodes are probed every [`PROBE_INTERVAL`] (`GET /sim/info`
//!   for OPTIONS) and take calls again when they answer;
//! - 302s are followed by the nodes' own upstream model (the call keeps its
//!   call id on the node it is sent to), so the caller finds its call by
//!   call id wherever it went.
//!
//! Each call that a node took is held for a while (0.5 to 1.5 times
//! `--hold-ms`), then the caller hangs it up (`DELETE /sim/calls/{id}` on
//! every node that answers: the call may have moved). What it saw is a
//! [`CallRecord`]; judging it is the checker's job.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::farm::NodeAddr;
use super::now_ms;

/// Kamailio's `fr_timer` in the shipped config: no answer within this and
/// the node is marked inactive and the call tried on the next.
pub const FR_TIMER: Duration = Duration::from_secs(2);

/// The dispatcher's probing interval (`ds_ping_interval`).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// How long one hangup request may wait for a node.
const HANGUP_TIMEOUT: Duration = Duration::from_millis(800);

/// What happened to one attempt of a call on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// The node took the call (201).
    Taken,
    /// The node refused the connection or answered 5xx: tried the next.
    Failed(String),
    /// No answer within [`FR_TIMER`]: tried the next; the node may still
    /// take it later (it is cancelled then).
    TimedOut,
}

/// One INVITE branch.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Node index.
    pub node: usize,
    /// What came of it.
    pub result: AttemptResult,
}

/// The node's answer to the call that it took.
#[derive(Debug, Clone)]
pub struct Taken {
    /// Node index.
    pub node: usize,
    /// When (Unix ms).
    pub at: i64,
    /// Whether `Stasis()` was entered (else the dialplan went on to the
    /// fallback at once).
    pub stasis: bool,
}

/// What the caller's hangup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HangupResult {
    /// The call was alive on this node and is hung up now.
    Found {
        /// Node index.
        node: usize,
        /// When the request that found it was sent (Unix ms).
        at: i64,
    },
    /// No running node had it any more.
    Gone {
        /// When the caller looked (Unix ms).
        at: i64,
        /// Hangups sent to a node that did not answer in time (a stopped
        /// node serves them when it resumes): `(node, sent at)`. A call
        /// that such a hangup ended was hung up by its caller.
        late: Vec<(usize, i64)>,
    },
    /// Some node that might have had it never answered before the end.
    Unreachable,
    /// No node took the call, or the run ended before its hangup.
    NotTried,
}

/// One call as its caller saw it.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// The call id of the branch that was taken (or of the first branch).
    pub call_id: String,
    /// The room (`conf-<room>` was dialled).
    pub room: String,
    /// When the call was offered (Unix ms).
    pub offered_at: i64,
    /// Every branch, in order.
    pub attempts: Vec<Attempt>,
    /// The branch a node took.
    pub taken: Option<Taken>,
    /// The caller's hangup.
    pub hangup: HangupResult,
}

/// How to call.
#[derive(Debug, Clone)]
pub struct CallerConfig {
    /// Calls per second.
    pub rate: f64,
    /// The rooms (names without `conf-`).
    pub rooms: Vec<String>,
    /// Mean hold time.
    pub hold: Duration,
    /// Prefix of the call ids (unique per phase).
    pub prefix: String,
    /// Seed of room choice and hold times.
    pub seed: u64,
}

/// The dispatcher's view of the nodes: round-robin over the active ones.
#[derive(Debug)]
struct Dispatcher {
    next: AtomicUsize,
    active: Mutex<Vec<bool>>,
}

impl Dispatcher {
    fn new(n: usize) -> Self {
        Dispatcher {
            next: AtomicUsize::new(0),
            active: Mutex::new(vec![true; n]),
        }
    }

    /// The nodes to try for one call, in order: the active ones from the
    /// next round-robin slot on (all of them when none is active, as
    /// Kamailio tries its set when every destination is marked down).
    fn order(&self) -> Vec<usize> {
        let active = self
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let n = active.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let all: Vec<usize> = (0..n).map(|k| (start + k) % n).collect();
        let up: Vec<usize> = all.iter().copied().filter(|&i| active[i]).collect();
        if up.is_empty() { all } else { up }
    }

    fn set(&self, i: usize, up: bool) {
        if let Some(a) = self
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(i)
        {
            *a = up;
        }
    }

    fn inactive(&self) -> Vec<usize> {
        let a = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        (0..a.len()).filter(|&i| !a[i]).collect()
    }
}

/// Offers calls until `stop` is cancelled, holds and hangs up each, and
/// returns every call's record once all are done (or `deadline` passed:
/// calls not hung up by then are [`HangupResult::NotTried`]).
pub async fn run(
    cfg: CallerConfig,
    nodes: Arc<[NodeAddr]>,
    stop: CancellationToken,
    deadline: tokio::time::Instant,
) -> Vec<CallRecord> {
    let http = match reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
    {
        Ok(h) => h,
        Err(err) => {
            tracing::warn!(cause = %err, "no HTTP client for the callers");
            return Vec::new();
        }
    };
    let dispatcher = Arc::new(Dispatcher::new(nodes.len()));
    let probe_stop = CancellationToken::new();
    let prober = crate::shutdown::OwnedTask::spawn(probe(
        http.clone(),
        nodes.clone(),
        dispatcher.clone(),
        probe_stop.clone(),
    ));
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut calls: JoinSet<CallRecord> = JoinSet::new();
    let period = Duration::from_secs_f64(1.0 / cfg.rate.clamp(0.1, 10_000.0));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    let mut records = Vec::new();
    let rooms = if cfg.rooms.is_empty() {
        vec!["r0".to_string()]
    } else {
        cfg.rooms.clone()
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        n += 1;
        let room = rooms[rng.random_range(0..rooms.len())].clone();
        let hold = cfg.hold.mul_f64(rng.random_range(0.5..1.5));
        let call = OneCall {
            http: http.clone(),
            nodes: nodes.clone(),
            dispatcher: dispatcher.clone(),
            call_id: format!("{}c{n}", cfg.prefix),
            room,
            hold,
            deadline,
        };
        calls.spawn(call.run());
        // Reap finished calls as we go, so the set stays small.
        while let Some(r) = calls.try_join_next() {
            if let Ok(rec) = r {
                records.push(rec);
            }
        }
    }
    let wait = tokio::time::timeout_at(deadline + Duration::from_secs(5), async {
        while let Some(r) = calls.join_next().await {
            if let Ok(rec) = r {
                records.push(rec);
            }
        }
    });
    if wait.await.is_err() {
        calls.abort_all();
    }
    probe_stop.cancel();
    drop(prober);
    records
}

/// One call, from INVITE to the caller's hangup.
struct OneCall {
    http: reqwest::Client,
    nodes: Arc<[NodeAddr]>,
    dispatcher: Arc<Dispatcher>,
    call_id: String,
    room: String,
    hold: Duration,
    deadline: tokio::time::Instant,
}

impl OneCall {
    async fn run(self) -> CallRecord {
        let mut rec = CallRecord {
            call_id: self.call_id.clone(),
            room: self.room.clone(),
            offered_at: now_ms(),
            attempts: Vec::new(),
            taken: None,
            hangup: HangupResult::NotTried,
        };
        let mut ghosts = Vec::new();
        for (k, node) in self.dispatcher.order().into_iter().enumerate() {
            let call_id = if k == 0 {
                self.call_id.clone()
            } else {
                format!("{}b{k}", self.call_id)
            };
            let result = self.invite(node, &call_id).await;
            match result {
                Ok(stasis) => {
                    rec.attempts.push(Attempt {
                        node,
                        result: AttemptResult::Taken,
                    });
                    rec.call_id = call_id;
                    rec.taken = Some(Taken {
                        node,
                        at: now_ms(),
                        stasis,
                    });
                    break;
                }
                Err(r) => {
                    // `ds_mark_dst` when the node does not answer (a
                    // timeout, a transport error); a node whose dialplan
                    // refused the call stays in, and the next is tried.
                    let mark = match &r {
                        AttemptResult::Failed(why) => !why.starts_with("SIP "),
                        _ => true,
                    };
                    if mark {
                        self.dispatcher.set(node, false);
                    }
                    if r == AttemptResult::TimedOut {
                        ghosts.push(call_id.clone());
                    }
                    rec.attempts.push(Attempt { node, result: r });
                }
            }
        }
        if let Some(t) = &rec.taken
            && t.stasis
        {
            // The hold is load, not synchronisation: a caller talks for a
            // while, then hangs up.
            let until = tokio::time::Instant::now() + self.hold;
            tokio::time::sleep_until(until.min(self.deadline)).await;
            rec.hangup = self.hang_up(&rec.call_id).await;
        }
        // CANCEL the branches that timed out, if a node took them late.
        for g in ghosts {
            let _ = self.hang_up(&g).await;
        }
        rec
    }

    /// `POST /sim/calls`; `Ok(stasis entered)` when the node took it.
    async fn invite(&self, node: usize, call_id: &str) -> Result<bool, AttemptResult> {
        let Some(n) = self.nodes.get(node) else {
            return Err(AttemptResult::Failed("no such node".into()));
        };
        let body = json!({
            "exten": format!("conf-{}", self.room),
            "caller": call_id,
            "call_id": call_id,
        });
        let sent = self
            .http
            .post(format!("{}/sim/calls", n.url))
            .json(&body)
            .timeout(FR_TIMER)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().as_u16() == 201 => {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                // The dialplan refused the call before answering it (the
                // shipped fallback's 503 when Stasis() failed): Kamailio's
                // failure route tries the next node on 408 and 5xx.
                if let Some(sip) = crate::sim::refused_for_failover(&v) {
                    return Err(AttemptResult::Failed(format!("SIP {sip}")));
                }
                Ok(v["stasis"] == "started")
            }
            Ok(r) => Err(AttemptResult::Failed(format!(
                "HTTP {}",
                r.status().as_u16()
            ))),
            Err(e) if e.is_timeout() => Err(AttemptResult::TimedOut),
            Err(e) => Err(AttemptResult::Failed(if e.is_connect() {
                "connection refused".into()
            } else {
                "transport error".into()
            })),
        }
    }

    /// Hangs the call up wherever it is: `DELETE /sim/calls/{id}` on every
    /// node at once. A node that does not answer may have it: asked again
    /// every half second until the deadline. Nowhere: asked once more a
    /// moment later (a 302 may be on its way).
    async fn hang_up(&self, call_id: &str) -> HangupResult {
        let mut misses = 0;
        let mut late = Vec::new();
        loop {
            let sent = now_ms();
            let asks = self.nodes.iter().enumerate().map(|(i, n)| {
                let req = self
                    .http
                    .delete(format!("{}/sim/calls/{call_id}", n.url))
                    .timeout(HANGUP_TIMEOUT)
                    .send();
                async move { (i, req.await) }
            });
            let answers = futures_util::future::join_all(asks).await;
            let mut unreachable = false;
            for (i, a) in answers {
                match a {
                    Ok(r) if r.status().as_u16() == 204 => {
                        return HangupResult::Found { node: i, at: sent };
                    }
                    Ok(r) if r.status().as_u16() == 404 => {}
                    Ok(_) => unreachable = true,
                    // Refused: the process is gone, and its calls with it.
                    Err(e) if e.is_connect() => {}
                    Err(_) => {
                        unreachable = true;
                        late.push((i, sent));
                    }
                }
            }
            if tokio::time::Instant::now() >= self.deadline {
                return if unreachable {
                    HangupResult::Unreachable
                } else {
                    HangupResult::Gone { at: now_ms(), late }
                };
            }
            if !unreachable {
                misses += 1;
                if misses >= 2 {
                    return HangupResult::Gone { at: now_ms(), late };
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            } else {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Kamailio's probing: every [`PROBE_INTERVAL`], each inactive node is
/// asked `GET /sim/info`; one that answers takes calls again.
async fn probe(
    http: reqwest::Client,
    nodes: Arc<[NodeAddr]>,
    dispatcher: Arc<Dispatcher>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for i in dispatcher.inactive() {
            let Some(n) = nodes.get(i) else { continue };
            let ok = http
                .get(format!("{}/sim/info", n.url))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                dispatcher.set(i, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dispatcher_goes_round_robin_over_active_nodes() {
        let d = Dispatcher::new(3);
        assert_eq!(d.order(), vec![0, 1, 2]);
        assert_eq!(d.order(), vec![1, 2, 0]);
        d.set(2, false);
        assert_eq!(d.order(), vec![0, 1]);
        assert_eq!(d.inactive(), vec![2]);
        d.set(0, false);
        d.set(1, false);
        assert_eq!(d.order().len(), 3, "all down: try them all");
        assert!(Dispatcher::new(0).order().is_empty());
    }
}
