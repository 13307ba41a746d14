//! A whole real farm on one machine: N Asterisk nodes, one Kamailio in
//! front of them (asking corral where rooms live before it dispatches),
//! `corral serve` streaming them, and the truth about rooms read from
//! every node's ARI.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::render::NodeAddrs;
use super::{AsteriskNode, CorralProcess, Error, Install, Kamailio, Sipp};

/// What to start.
#[derive(Debug, Clone)]
pub struct FarmOptions {
    /// How many Asterisk nodes (`ast1` …).
    pub nodes: usize,
    /// The `corral` binary to run as `corral serve`.
    pub corral_binary: PathBuf,
    /// Redis for corral's store; `None`: the in-memory store.
    pub redis_url: Option<String>,
    /// `CORRAL_*` overrides for corral (e.g. a shorter linger for a test).
    pub corral_env: Vec<(String, String)>,
    /// Where every part keeps its files (one subdirectory each).
    pub dir: PathBuf,
    /// Start corral too (false: the caller starts its own).
    pub start_corral: bool,
}

/// A running real farm. Dropping it stops every part.
#[derive(Debug)]
pub struct RealFarm {
    /// The Asterisk nodes, in id order.
    pub nodes: Vec<AsteriskNode>,
    /// The proxy.
    pub kamailio: Kamailio,
    /// corral, when started by the farm.
    pub corral: Option<CorralProcess>,
    /// sipp, for callers and phones.
    pub sipp: Sipp,
    /// The install the nodes run.
    pub install: Install,
    /// Where the nodes ring the queue member `alice` (`127.0.0.1:<port>`):
    /// a test starts a sipp phone there.
    pub phone_port: u16,
    /// Where Kamailio asks corral where rooms live (`127.0.0.1:<port>`):
    /// corral's API address, also when the test starts corral itself.
    pub corral_api: String,
    dir: PathBuf,
}

/// One room's live calls as the nodes' ARI shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomTruth {
    /// Node id → (bridge id → channel ids) of this room's bridges with
    /// channels.
    pub bridges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl RoomTruth {
    /// Channels in the room's bridges, all nodes together.
    pub fn calls(&self) -> usize {
        self.bridges
            .values()
            .flat_map(|b| b.values())
            .map(BTreeSet::len)
            .sum()
    }

    /// Bridges with channels, all nodes together (1 when the room is whole).
    pub fn bridge_count(&self) -> usize {
        self.bridges.values().map(BTreeMap::len).sum()
    }

    /// The node of a whole room: one node, one bridge.
    pub fn whole_on(&self) -> Option<&str> {
        (self.bridges.len() == 1 && self.bridge_count() == 1)
            .then(|| self.bridges.keys().next().map(String::as_str))
            .flatten()
    }
}

impl RealFarm {
    /// Starts the nodes (side by side), Kamailio, then corral.
    ///
    /// # Errors
    /// Any part failed to start; the error names it and carries its log.
    pub async fn start(opts: FarmOptions) -> Result<Self, Error> {
        let install = Install::locate()?;
        let sipp = Sipp::locate()?;
        std::fs::create_dir_all(&opts.dir)
            .map_err(Error::io(format!("creating {}", opts.dir.display())))?;
        let mut addrs = Vec::new();
        for i in 1..=opts.nodes {
            addrs.push(NodeAddrs {
                id: format!("ast{i}"),
                bind: "127.0.0.1".into(),
                sip_port: super::free_port()?,
                http_port: super::free_port()?,
                entity_id: format!("02:00:00:c0:{:02x}:{:02x}", (i >> 8) & 0xff, i & 0xff),
            });
        }
        let phone_port = super::free_port()?;
        let phone = format!("127.0.0.1:{phone_port}");
        let starts = addrs.iter().map(|a| {
            let dir = opts.dir.join(&a.id);
            let install = install.clone();
            let a = a.clone();
            let phone = phone.clone();
            async move { AsteriskNode::start(&install, &dir, a, "127.0.0.1", &phone).await }
        });
        let mut nodes = Vec::new();
        for r in futures_util::future::join_all(starts).await {
            nodes.push(r?);
        }
        // corral's API address first: Kamailio starts before corral and
        // asks it where rooms live (CORRAL_API_LISTEN when the caller sets
        // it, as it overrides corral's file).
        let corral_api = match opts
            .corral_env
            .iter()
            .find(|(k, _)| k == "CORRAL_API_LISTEN")
        {
            Some((_, v)) => v.clone(),
            None => format!("127.0.0.1:{}", super::free_port()?),
        };
        let kamailio = Kamailio::start(
            &opts.dir.join("kamailio"),
            &addrs,
            super::free_port()?,
            &corral_api,
        )
        .await?;
        let mut farm = RealFarm {
            nodes,
            kamailio,
            corral: None,
            sipp,
            install,
            phone_port,
            corral_api: corral_api.clone(),
            dir: opts.dir.clone(),
        };
        if opts.start_corral {
            let mut env: Vec<(&str, &str)> = opts
                .corral_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            if !env.iter().any(|(k, _)| *k == "CORRAL_API_LISTEN") {
                env.push(("CORRAL_API_LISTEN", corral_api.as_str()));
            }
            let corral = CorralProcess::start(
                &opts.corral_binary,
                &opts.dir.join("corral"),
                &addrs,
                opts.redis_url.as_deref(),
                &env,
            )
            .await?;
            farm.corral = Some(corral);
        }
        Ok(farm)
    }

    /// Waits until corral streams every node that runs (its `/readyz`).
    ///
    /// # Errors
    /// [`Error::Start`] with corral's log when it does not within
    /// `deadline`, or corral was not started by the farm.
    pub async fn wait_streaming(&self, deadline: std::time::Duration) -> Result<(), Error> {
        let Some(corral) = self.corral.as_ref() else {
            return Err(Error::Start {
                what: "corral".into(),
                detail: "not started by the farm".into(),
            });
        };
        let want: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| n.is_answering())
            .map(|n| n.id())
            .collect();
        let until = tokio::time::Instant::now() + deadline;
        let mut pause = std::time::Duration::from_millis(5);
        loop {
            if let Ok(r) = corral.get("/readyz").await {
                let up: Vec<&str> = r["nodes"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter(|n| n["streaming"] == true)
                            .filter_map(|n| n["node"].as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                if want.iter().all(|w| up.contains(w)) {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= until {
                return Err(Error::Start {
                    what: "corral".into(),
                    detail: format!(
                        "did not stream {want:?} within {deadline:?}; log:\n{}",
                        corral.log()
                    ),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(100));
        }
    }

    /// Where the farm keeps its files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The nodes' addresses, in id order.
    pub fn addrs(&self) -> Vec<NodeAddrs> {
        self.nodes.iter().map(|n| n.addrs().clone()).collect()
    }

    /// Index of the node `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id() == id)
    }

    /// Every live channel of every running node: `(node id, channel)`.
    /// Nodes that do not answer (killed, paused) are left out.
    pub async fn channels(&self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for n in self.nodes.iter().filter(|n| n.is_answering()) {
            if let Ok(chans) = n.channels().await {
                out.extend(chans.into_iter().map(|c| (n.id().to_string(), c)));
            }
        }
        out
    }

    /// The rooms as the nodes' ARI shows them: for each bridge name of
    /// corral's (`corral:conference:<room>`, `corral:queue:<name>`), the
    /// bridges that hold channels, per node. Nodes that do not answer are
    /// left out.
    pub async fn rooms(&self) -> BTreeMap<String, RoomTruth> {
        let mut rooms: BTreeMap<String, RoomTruth> = BTreeMap::new();
        for n in self.nodes.iter().filter(|n| n.is_answering()) {
            let Ok(bridges) = n.bridges().await else {
                continue;
            };
            for b in bridges {
                let name = b["name"].as_str().unwrap_or_default();
                let chans: BTreeSet<String> = b["channels"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|c| c.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                if !name.starts_with("corral:") || chans.is_empty() {
                    continue;
                }
                rooms
                    .entry(name.to_string())
                    .or_default()
                    .bridges
                    .entry(n.id().to_string())
                    .or_default()
                    .insert(b["id"].as_str().unwrap_or_default().to_string(), chans);
            }
        }
        rooms
    }

    /// Hangs up every channel of every running node over ARI (the callers
    /// get a BYE), and returns how many it asked to hang up.
    pub async fn hangup_all(&self) -> usize {
        let mut n = 0;
        for node in self.nodes.iter().filter(|n| n.is_answering()) {
            for c in node.channels().await.unwrap_or_default() {
                if let Some(id) = c["id"].as_str()
                    && node.hangup(id).await.is_ok()
                {
                    n += 1;
                }
            }
        }
        n
    }
}

impl Drop for RealFarm {
    fn drop(&mut self) {
        if let Some(c) = &mut self.corral {
            c.kill();
        }
        for n in &mut self.nodes {
            n.kill();
        }
        self.kamailio.stop();
    }
}
