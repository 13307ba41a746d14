//! One row per fault: the counts the checker found, the promises of issue
//! 11 held against them, and the table that `corral chaos` prints.

use std::collections::BTreeMap;

use super::caller::{AttemptResult, CallRecord};
use super::checker::{Counts, Fate, Sample, Seen, fate, splits};
use super::faults::{Fault, Injected};

/// The promises, each a threshold (flags of `corral chaos`).
#[derive(Debug, Clone)]
pub struct Promises {
    /// Every room in one bridge on one node within this after a fault ends.
    pub whole_within_ms: i64,
    /// After Redis restarted empty: every room whole within this of Redis
    /// being back.
    pub redis_whole_within_ms: i64,
    /// A crashed node is marked down (its rooms released) within this.
    pub crash_detect_ms: i64,
    /// A hung (SIGSTOPped) node takes no new room after this.
    pub hung_stop_ms: i64,
}

/// What one phase showed.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// The fault's name.
    pub fault: String,
    /// What it hit.
    pub target: String,
    /// Calls a node took.
    pub offered: usize,
    /// Calls in their room's bridge until their caller hung up.
    pub bridged: usize,
    /// Calls lost with the fault (crashed node, dropped 302, stuck on a
    /// stopped node).
    pub lost_fault: usize,
    /// Calls lost that corral could have kept.
    pub lost_corral: usize,
    /// Channels corral hung up (`DELETE /ari/channels`).
    pub hung_up_corral: u64,
    /// Calls no node took (not counted in `offered`).
    pub not_offered: usize,
    /// Calls whose end could not be seen.
    pub unknown: usize,
    /// Branches the dispatcher gave up on, by node and why (refused, 5xx,
    /// silent for `fr_timer`): the call went to the next node.
    pub failovers: BTreeMap<String, usize>,
    /// Split episodes seen.
    pub splits: usize,
    /// The longest one, ms.
    pub longest_split_ms: i64,
    /// Rooms whole / rooms with calls, at the end of the load.
    pub whole: (usize, usize),
    /// Takeover or reconnect time, as text.
    pub recovery: String,
    /// Promises broken, each a sentence.
    pub broken: Vec<String>,
    /// Why calls were lost by corral: reason → count.
    pub reasons: BTreeMap<String, usize>,
    /// The replicas had to be restarted before this phase (the previous
    /// fault left the store without its nodes).
    pub reset: bool,
}

/// Everything a phase's judgement needs.
pub struct PhaseData<'a> {
    /// The fault as injected.
    pub inj: &'a Injected,
    /// Its calls.
    pub calls: &'a [CallRecord],
    /// Log lines by call id.
    pub logs: &'a std::collections::HashMap<String, Vec<super::checker::CallEvent>>,
    /// Bridge samples.
    pub samples: &'a [Sample],
    /// corral's events.
    pub events: &'a [Seen],
    /// Counter deltas over the phase.
    pub counts: Counts,
    /// The phase's room prefix.
    pub prefix: &'a str,
    /// When the phase began and its load ended (Unix ms).
    pub began: i64,
    /// When the load ended.
    pub load_end: i64,
    /// Node ids by index.
    pub node_ids: &'a [String],
    /// When the survivors streamed every node again (a replica's crash).
    pub recovered_at: Option<i64>,
}

fn secs(ms: i64) -> String {
    format!("{:.2}s", ms as f64 / 1000.0)
}

/// The first event of `kind` about `node` at or after `from` (and before
/// `to`), its time.
fn first_event(events: &[Seen], kind: &str, node: &str, from: i64, to: i64) -> Option<i64> {
    events
        .iter()
        .filter(|e| e.kind == kind && e.data["node"] == node && e.at >= from && e.at <= to)
        .map(|e| e.at)
        .min()
}

/// When `node` was first marked suspect (`mark`) or cleared, in the span.
fn first_mark(events: &[Seen], node: &str, mark: bool, from: i64, to: i64) -> Option<i64> {
    events
        .iter()
        .filter(|e| {
            e.kind == "node_suspect"
                && e.data["node"] == node
                && e.data["suspect"] == mark
                && e.at >= from
                && e.at <= to
        })
        .map(|e| e.at)
        .min()
}

/// The promises on calls: none lost by corral (`promise` names the one
/// broken) and none hung up by corral (`hung_up` says what was counted).
pub(super) fn call_promises(row: &mut Row, promise: &str, hung_up: &str) {
    if row.lost_corral > 0 {
        let why: Vec<String> = row
            .reasons
            .iter()
            .map(|(r, n)| format!("{n}× {r}"))
            .collect();
        row.broken.push(format!(
            "{} calls lost by corral ({promise}): {}",
            row.lost_corral,
            why.join("; ")
        ));
    }
    if row.hung_up_corral > 0 {
        row.broken
            .push(format!("corral hung up {} {hung_up}", row.hung_up_corral));
    }
}

/// Judges one phase.
pub fn judge(d: &PhaseData<'_>, p: &Promises) -> Row {
    let inj = d.inj;
    let mut row = Row {
        fault: inj.fault.name().to_string(),
        target: inj.target.clone(),
        hung_up_corral: d.counts.hungup_by_ari,
        ..Row::default()
    };
    for c in d.calls {
        for a in c
            .attempts
            .iter()
            .filter(|a| a.result != AttemptResult::Taken)
        {
            let why = match &a.result {
                AttemptResult::Failed(w) => w.clone(),
                _ => "silent".into(),
            };
            let node = d.node_ids.get(a.node).map_or("?", String::as_str);
            *row.failovers.entry(format!("{node} {why}")).or_default() += 1;
        }
        let mut evs = d.logs.get(&c.call_id).cloned().unwrap_or_default();
        evs.sort_by_key(|e| e.at);
        match fate(c, &evs, inj, d.node_ids) {
            Fate::Bridged => {
                row.offered += 1;
                row.bridged += 1;
            }
            Fate::LostWithFault(_) => {
                row.offered += 1;
                row.lost_fault += 1;
            }
            Fate::LostByCorral(why) => {
                row.offered += 1;
                row.lost_corral += 1;
                *row.reasons.entry(generalise(&why)).or_default() += 1;
            }
            Fate::NotOffered => row.not_offered += 1,
            Fate::Unknown => {
                row.offered += 1;
                row.unknown += 1;
            }
        }
    }
    let (sp, whole) = splits(d.samples, d.prefix, d.began, d.load_end);
    row.splits = sp.len();
    row.longest_split_ms = sp.iter().map(|s| s.to - s.from).max().unwrap_or(0);
    row.whole = whole;

    // The promises every fault keeps.
    let promise = if inj.fault == Fault::ReplicaKill {
        "a replica crash must cost 0 calls"
    } else {
        "0 calls lost by corral"
    };
    call_promises(
        &mut row,
        promise,
        "channels over ARI (it must hang up none)",
    );
    let (whole_by, allowed) = match (inj.fault, inj.back) {
        (Fault::RedisRestart, Some(back)) => {
            (back + p.redis_whole_within_ms, p.redis_whole_within_ms)
        }
        _ => (inj.end + p.whole_within_ms, p.whole_within_ms),
    };
    let late: Vec<&super::checker::Split> = sp
        .iter()
        .filter(|s| s.to > whole_by || (s.open && s.to >= whole_by))
        .collect();
    if let Some(worst) = late.iter().max_by_key(|s| s.to) {
        let since = inj
            .back
            .filter(|_| inj.fault == Fault::RedisRestart)
            .unwrap_or(inj.end);
        row.broken.push(format!(
            "{} rooms not whole {} after the fault ended (allowed {}): e.g. {} in {} bridges on {} nodes{}",
            late.len(),
            secs(worst.to - since),
            secs(allowed),
            worst.room,
            worst.bridges,
            worst.nodes,
            if worst.open { " until the end" } else { "" }
        ));
    }

    // Per fault: the time it took corral, and its own promise.
    let node = inj
        .node
        .and_then(|i| d.node_ids.get(i))
        .cloned()
        .unwrap_or_default();
    let end_of_run = d.load_end + 30_000;
    // Not seen by the time the phase is judged: "> how long we looked".
    let looked = |from: i64| format!(">{}", secs(super::now_ms() - from));
    row.recovery = match inj.fault {
        Fault::NodeKill | Fault::NodeRestart | Fault::RealNodeKill => {
            let down = first_event(d.events, "node_down", &node, inj.start, end_of_run);
            match down {
                Some(t) if t - inj.start <= p.crash_detect_ms => {}
                Some(t) => row.broken.push(format!(
                    "crash detected (rooms released) after {} (promise < {})",
                    secs(t - inj.start),
                    secs(p.crash_detect_ms)
                )),
                None => row
                    .broken
                    .push(format!("{node} never marked down after its crash")),
            }
            let mut s = format!(
                "down {}",
                down.map_or_else(|| looked(inj.start), |t| secs(t - inj.start))
            );
            if let Some(back) = inj.back {
                let up = first_event(d.events, "node_up", &node, back, end_of_run);
                s.push_str(&up.map_or_else(
                    || format!(", up {}", looked(back)),
                    |t| format!(", up {}", secs(t - back)),
                ));
            }
            s
        }
        Fault::NodeStop => {
            // It stops taking rooms and calls when marked suspect (a
            // failed health check) or down, whichever comes first.
            let suspect = first_mark(d.events, &node, true, inj.start, inj.end);
            let marked_down = first_event(d.events, "node_down", &node, inj.start, inj.end);
            let down = suspect.into_iter().chain(marked_down).min();
            let late_rooms = d
                .events
                .iter()
                .filter(|e| {
                    e.kind == "room_placed"
                        && e.data["node"] == node.as_str()
                        && e.at > inj.start + p.hung_stop_ms
                        && e.at <= inj.end
                })
                .count();
            match down {
                Some(t) if t - inj.start <= p.hung_stop_ms => {}
                Some(t) => row.broken.push(format!(
                    "the hung node was marked suspect or down after {} (promise: no new rooms after {})",
                    secs(t - inj.start),
                    secs(p.hung_stop_ms)
                )),
                // A stop shorter than the bound need not be noticed.
                None if inj.end - inj.start <= p.hung_stop_ms => {}
                None => row.broken.push(format!(
                    "the hung node was not marked suspect or down in its {} stop (promise: no new rooms after {})",
                    secs(inj.end - inj.start),
                    secs(p.hung_stop_ms)
                )),
            }
            if late_rooms > 0 {
                row.broken.push(format!(
                    "{late_rooms} rooms placed on the hung node more than {} after it stopped",
                    secs(p.hung_stop_ms)
                ));
            }
            // Back: up again after a down, or its suspect mark cleared.
            let up = first_event(d.events, "node_up", &node, inj.end, end_of_run)
                .into_iter()
                .chain(first_mark(d.events, &node, false, inj.end, end_of_run))
                .min();
            format!(
                "{} {}, back {}",
                if marked_down.is_some_and(|t| suspect.is_none_or(|s| t < s)) {
                    "down"
                } else {
                    "suspect"
                },
                down.map_or_else(|| looked(inj.start), |t| secs(t - inj.start)),
                up.map_or_else(|| looked(inj.end), |t| secs(t - inj.end))
            )
        }
        Fault::WsCut => {
            let up = first_event(d.events, "node_up", &node, inj.start, end_of_run);
            format!(
                "up {}",
                up.map_or_else(|| looked(inj.start), |t| secs(t - inj.start))
            )
        }
        Fault::ReplicaKill => match d.recovered_at {
            Some(t) => format!("takeover {}", secs(t - inj.start)),
            None => format!("takeover {}", looked(inj.start)),
        },
        Fault::RedisRestart => {
            let back = inj.back.unwrap_or(inj.end);
            // The first moment from which no room of the phase is split.
            let after: Vec<&super::checker::Split> = sp.iter().filter(|s| s.to >= back).collect();
            match after.iter().map(|s| s.to).max() {
                None => "whole 0.00s".into(),
                Some(_) if after.iter().any(|s| s.open) => "whole never".into(),
                Some(t) => format!("whole {}", secs(t - back)),
            }
        }
        Fault::Rest5xx | Fault::EventDelay | Fault::EventDup | Fault::Proxy302 => "-".into(),
    };
    row
}

/// A reason without its node, so that reasons add up across nodes.
fn generalise(why: &str) -> String {
    let mut out = String::new();
    for w in why.split(' ') {
        if !out.is_empty() {
            out.push(' ');
        }
        if w.starts_with("ast") && w[3..].chars().all(|c| c.is_ascii_digit()) && w.len() > 3 {
            out.push_str("a node");
        } else {
            out.push_str(w);
        }
    }
    out
}

/// The table's heading.
pub fn header() -> String {
    format!(
        "{:<15} {:<11} {:>7} {:>7} {:>10} {:>11} {:>10} {:>6} {:>8} {:>6}  {:<20} {}",
        "fault",
        "target",
        "offered",
        "bridged",
        "lost:fault",
        "lost:corral",
        "hungup:crl",
        "splits",
        "longest",
        "whole",
        "recovery",
        "promises"
    )
}

/// One row of the table.
pub fn line(r: &Row) -> String {
    format!(
        "{:<15} {:<11} {:>7} {:>7} {:>10} {:>11} {:>10} {:>6} {:>8} {:>6}  {:<20} {}",
        r.fault,
        r.target,
        r.offered,
        r.bridged,
        r.lost_fault,
        r.lost_corral,
        r.hung_up_corral,
        r.splits,
        if r.splits == 0 {
            "-".into()
        } else {
            secs(r.longest_split_ms)
        },
        format!("{}/{}", r.whole.0, r.whole.1),
        r.recovery,
        if r.broken.is_empty() {
            "ok".to_string()
        } else {
            format!("BROKEN ({})", r.broken.len())
        }
    )
}

/// The row's figures that are not columns: calls not offered or of
/// unknown end, failovers, why calls were lost by corral.
pub fn details(r: &Row) -> String {
    let mut parts = Vec::new();
    if r.reset {
        parts.push("replicas restarted before it (the store had lost its nodes)".to_string());
    }
    if r.failovers.is_empty() {
        parts.push("no failover".to_string());
    }
    for (what, n) in &r.failovers {
        parts.push(format!("{n} failed over ({what})"));
    }
    if r.not_offered > 0 {
        parts.push(format!("{} taken by no node", r.not_offered));
    }
    if r.unknown > 0 {
        parts.push(format!("{} of unknown end", r.unknown));
    }
    for (why, n) in &r.reasons {
        parts.push(format!("{n} lost by corral: {why}"));
    }
    format!("{}: {}", r.fault, parts.join("; "))
}

/// Every call that did not end bridged, with what the nodes logged about
/// it (times in ms from the fault's start), for whoever fixes what broke.
pub fn dump(d: &PhaseData<'_>) -> String {
    use std::fmt::Write;
    let t = |ms: i64| ms - d.inj.start;
    let name = |i: usize| d.node_ids.get(i).map_or("?", String::as_str);
    let mut out = format!(
        "{} on {}: from +0 to +{} ms{}; load ended at +{} ms\n",
        d.inj.fault.name(),
        d.inj.target,
        t(d.inj.end),
        d.inj
            .back
            .map_or(String::new(), |b| format!(", back at +{}", t(b))),
        t(d.load_end)
    );
    for c in d.calls {
        let mut evs = d.logs.get(&c.call_id).cloned().unwrap_or_default();
        evs.sort_by_key(|e| e.at);
        let f = fate(c, &evs, d.inj, d.node_ids);
        if f == Fate::Bridged {
            continue;
        }
        let _ = write!(
            out,
            "{} {} offered +{} {:?}",
            c.call_id,
            c.room,
            t(c.offered_at),
            f
        );
        if let Some(tk) = &c.taken {
            let _ = write!(
                out,
                " taken {} +{} stasis={}",
                name(tk.node),
                t(tk.at),
                tk.stasis
            );
        }
        let _ = writeln!(out, " hangup {:?}", c.hangup);
        for e in &evs {
            let _ = writeln!(
                out,
                "    +{} {} {:?}{}{}",
                t(e.at),
                name(e.node),
                e.what,
                e.bridge_name
                    .as_deref()
                    .map_or(String::new(), |b| format!(" {b}")),
                e.cause.map_or(String::new(), |c| format!(" cause {c}"))
            );
        }
    }
    out
}

/// What each column means, printed under the table.
pub const LEGEND: &str = "\
offered: calls a node took; bridged: in their room's bridge until their caller hung up;
lost:fault: lost with the fault (with a crashed node, a 302 the proxy dropped, stuck on a stopped node);
lost:corral: lost when corral could have kept them; hungup:crl: channels corral hung up over ARI;
splits / longest: rooms seen in more than one bridge (100 ms samples of GET /ari/bridges), the longest;
whole: rooms in one bridge on one node / rooms with calls, at the end of the load;
recovery: corral's reaction (node marked suspect or down, stream up again, standby took over, rooms whole after Redis was back);
  \">5.20s\": not seen in the 5.2 s the phase looked.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_drop_node_names() {
        assert_eq!(
            generalise("never bridged on ast12 in its hold"),
            "never bridged on a node in its hold"
        );
        assert_eq!(
            generalise("Stasis() failed on ast1 (x)"),
            "Stasis() failed on a node (x)"
        );
        assert_eq!(generalise("aster ast"), "aster ast");
    }

    #[test]
    fn the_table_has_one_column_per_heading() {
        let r = Row {
            fault: "node-kill".into(),
            target: "ast1".into(),
            recovery: "down 0.20s".into(),
            ..Row::default()
        };
        assert_eq!(header().split_whitespace().count(), 12);
        let l = line(&r);
        assert!(l.ends_with("ok"), "{l}");
        assert_eq!(
            l.split_whitespace().count(),
            13,
            "recovery has two words: {l}"
        );
    }
}
