//! Redis's own counters around a benchmark run: `INFO commandstats` (calls
//! and microseconds per command, the commands scripts run included) and
//! `INFO cpu` (the server's CPU time, socket I/O included), read before and
//! after, and the store client's request counts beside them.
//!
//! Redis counts a command run inside a script like one sent by a client, so
//! it cannot tell a top-level `HGETALL` from a script's: the round trips are
//! Redis's `EVALSHA` count (every script call is one) plus the plain
//! commands the store client sent ([`RedisStore::requests`]); the two
//! script counts are printed side by side as a check.

use std::collections::BTreeMap;

use anyhow::{Context, bail};

use crate::store::RedisStore;

/// One reading of the counters.
#[derive(Debug, Clone, Default)]
pub(super) struct RedisCounters {
    /// Command → (calls, µs), from `INFO commandstats`.
    cmds: BTreeMap<String, (u64, u64)>,
    /// `used_cpu_user + used_cpu_sys`, seconds.
    cpu_s: f64,
    /// The store client's requests per operation.
    requests: BTreeMap<&'static str, u64>,
}

async fn info(store: &RedisStore, section: &str) -> anyhow::Result<String> {
    let mut cmd = redis::cmd("INFO");
    cmd.arg(section);
    match store.raw(cmd).await.context("INFO")? {
        redis::Value::BulkString(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        redis::Value::VerbatimString { text, .. } => Ok(text),
        other => bail!("INFO answered {other:?}"),
    }
}

impl RedisCounters {
    /// Reads the counters now.
    pub(super) async fn read(store: &RedisStore) -> anyhow::Result<Self> {
        let mut out = Self::default();
        for line in info(store, "commandstats").await?.lines() {
            // cmdstat_evalsha:calls=21801,usec=784836,usec_per_call=36.00,...
            let Some((name, rest)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let field = |k: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(k))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            out.cmds
                .insert(name.to_owned(), (field("calls="), field("usec=")));
        }
        for line in info(store, "cpu").await?.lines() {
            if let Some(v) = line
                .strip_prefix("used_cpu_user:")
                .or_else(|| line.strip_prefix("used_cpu_sys:"))
            {
                out.cpu_s += v.trim().parse::<f64>().unwrap_or(0.0);
            }
        }
        out.requests = store.requests().into_iter().collect();
        Ok(out)
    }

    /// What happened between `before` and `self` (the bench's own `INFO`
    /// and raw commands left out).
    pub(super) fn since(&self, before: &Self) -> Self {
        let mut cmds = BTreeMap::new();
        for (k, (c, u)) in &self.cmds {
            let (c0, u0) = before.cmds.get(k).copied().unwrap_or_default();
            if k == "info" || k.starts_with("config") || *c <= c0 {
                continue;
            }
            cmds.insert(k.clone(), (c - c0, u.saturating_sub(u0)));
        }
        let mut requests = BTreeMap::new();
        for (k, n) in &self.requests {
            let n0 = before.requests.get(k).copied().unwrap_or(0);
            if *k != "raw" && *n > n0 {
                requests.insert(*k, n - n0);
            }
        }
        Self {
            cmds,
            cpu_s: self.cpu_s - before.cpu_s,
            requests,
        }
    }

    /// Script calls counted by Redis (`EVALSHA` + `EVAL`).
    pub(super) fn scripts(&self) -> u64 {
        ["evalsha", "eval", "evalsha_ro", "eval_ro"]
            .iter()
            .filter_map(|k| self.cmds.get(*k))
            .map(|(c, _)| c)
            .sum()
    }

    /// One script's cost over `calls` calls of it alone: `EVALSHA`'s
    /// execution µs per call, and the server's CPU µs per call (socket I/O
    /// included).
    ///
    /// An operation that ran without a script (fewer `EVALSHA`s than
    /// calls: `resolve_placement` on a placed room is plain commands) is
    /// charged every command's execution µs instead (the counters' own
    /// `INFO` excepted).
    pub(super) fn script_cost(&self, calls: u64) -> (f64, f64) {
        let evalsha = self.cmds.get("evalsha").copied().unwrap_or_default();
        let exec = if evalsha.0 * 2 >= calls {
            evalsha.1
        } else {
            self.cmds
                .iter()
                .filter(|(name, _)| !matches!(name.as_str(), "info" | "config"))
                .map(|(_, (_, u))| *u)
                .sum()
        };
        let calls = calls.max(1) as f64;
        (exec as f64 / calls, self.cpu_s * 1e6 / calls)
    }

    /// Every command Redis ran (scripts' commands included).
    pub(super) fn commands(&self) -> u64 {
        self.cmds.values().map(|(c, _)| c).sum()
    }

    /// Round trips: Redis's script calls plus the plain commands the store
    /// client sent (`script_requests` tells those apart: the client's
    /// requests that are script calls).
    pub(super) fn round_trips(&self, plain_ops: &[&str]) -> (u64, u64) {
        let plain = self
            .requests
            .iter()
            .filter(|(k, _)| plain_ops.contains(k))
            .map(|(_, n)| n)
            .sum();
        (self.scripts(), plain)
    }

    /// Prints the counters per `per` (calls, pairings, ...), named `unit`.
    pub(super) fn print(&self, per: u64, unit: &str) {
        let per = per.max(1) as f64;
        let (scripts, plain) = self.round_trips(PLAIN_OPS);
        let client_scripts: u64 = self
            .requests
            .iter()
            .filter(|(k, _)| !PLAIN_OPS.contains(k))
            .map(|(_, n)| n)
            .sum();
        let evalsha_us = self
            .cmds
            .get("evalsha")
            .map(|(c, u)| *u as f64 / (*c).max(1) as f64)
            .unwrap_or(0.0);
        println!(
            "store round trips per {unit}: {:.2} ({:.2} script calls counted by Redis, {} by the client; {:.2} plain commands counted by the client)",
            (scripts + plain) as f64 / per,
            scripts as f64 / per,
            client_scripts,
            plain as f64 / per
        );
        println!(
            "Redis commands per {unit}: {:.1} (scripts' commands included); Redis CPU per {unit}: {:.1} µs (I/O included); EVALSHA {:.1} µs each (execution only)",
            self.commands() as f64 / per,
            self.cpu_s * 1e6 / per,
            evalsha_us
        );
        let mut by_calls: Vec<_> = self.cmds.iter().collect();
        by_calls.sort_by_key(|(_, (c, _))| std::cmp::Reverse(*c));
        let top: Vec<String> = by_calls
            .iter()
            .take(10)
            .map(|(k, (c, _))| format!("{k} {:.2}", *c as f64 / per))
            .collect();
        println!("  Redis commands per {unit}: {}", top.join(", "));
        let ops: Vec<String> = self
            .requests
            .iter()
            .map(|(k, n)| format!("{k} {:.2}", *n as f64 / per))
            .collect();
        println!(
            "  store requests per {unit} by operation: {}",
            ops.join(", ")
        );
    }
}

/// The store operations that are plain commands, not scripts
/// (`src/store/redis.rs`).
pub(super) const PLAIN_OPS: &[&str] = &[
    "get_room",
    "peek_token",
    "queue_version",
    "list_queues",
    "ping",
    "script_load",
];
