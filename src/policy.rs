//! The placement policy: which node a new room goes to. Pure and seeded; no
//! I/O, no clock, no tokio.
//!
//! The store never chooses: the controller asks [`Policy::choose`] for a
//! node, passes it to `Store::resolve_placement`, which applies it only if
//! the room still needs an owner and the node is still eligible.
//!
//! # Rules
//!
//! - Never a draining or down node, never a node at its `max_rooms`.
//! - `least-loaded` (default) and `power-of-two`: the landing node first
//!   when it is eligible and not over its capacity (the call is already
//!   there, no redirect needed); else the node with the lowest load relative
//!   to capacity (`least-loaded`: all of them, random among ties;
//!   `power-of-two`: the better of two picked at random, which avoids
//!   herding when many deciders hold stale load figures).
//! - `consistent-hash`: rendezvous hashing of the room over the eligible
//!   nodes (the landing node gets no preference). A room's node depends only
//!   on its name and the set of nodes, so a SIP proxy could compute it too,
//!   and removing a node moves only that node's rooms.
//! - Bursts: [`Policy::record_placement`] counts a placement at once, so a
//!   burst of new rooms does not pile onto the node that looked least loaded
//!   at the last report. Each recent placement adds
//!   [`Policy::PLACEMENT_WEIGHT`] channels to the node's load until the
//!   node's reported load has caught up (reported ≥ what it was at the
//!   placement + the inflation), or until [`Policy::DECAY_MS`] of newer
//!   reports show it never will (the room stayed small).

use std::collections::HashMap;
use std::str::FromStr;

use crate::domain::{NodeId, NodeRecord, NodeState, RoomKey};

/// How a node is chosen for a new room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Landing node if eligible, else least loaded relative to capacity.
    #[default]
    LeastLoaded,
    /// Landing node if eligible, else the better of two random nodes.
    PowerOfTwo,
    /// Rendezvous hashing of the room name over the eligible nodes.
    ConsistentHash,
}

impl Strategy {
    /// The strategy's configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::LeastLoaded => "least-loaded",
            Strategy::PowerOfTwo => "power-of-two",
            Strategy::ConsistentHash => "consistent-hash",
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown strategy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown placement strategy {0:?} (expected least-loaded, power-of-two or consistent-hash)"
)]
pub struct UnknownStrategy(String);

impl FromStr for Strategy {
    type Err = UnknownStrategy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "least-loaded" => Ok(Strategy::LeastLoaded),
            "power-of-two" => Ok(Strategy::PowerOfTwo),
            "consistent-hash" => Ok(Strategy::ConsistentHash),
            other => Err(UnknownStrategy(other.chars().take(40).collect())),
        }
    }
}

/// Placements counted at once on one node, until reports catch up.
#[derive(Debug, Clone)]
struct Recent {
    /// Reported channels when the first of these placements was counted.
    base: u32,
    /// Rooms the node owned when the first of these placements was counted.
    base_rooms: u32,
    /// Placements counted since.
    placed: u32,
    /// `updated_ms` of the node record seen at the first placement.
    seen_ms: u64,
}

/// The placement policy of one controller replica.
#[derive(Debug, Clone)]
pub struct Policy {
    strategy: Strategy,
    rng: SplitMix64,
    recent: HashMap<NodeId, Recent>,
    /// The last record seen per node (channels, rooms, updated ms), for
    /// `record_placement`.
    last: HashMap<NodeId, (u32, u32, u64)>,
}

impl Policy {
    /// Channels one new room is expected to bring at once (its first call).
    pub const PLACEMENT_WEIGHT: u32 = 1;
    /// Reports this much newer than a placement end its inflation even if
    /// the reported load never reached it.
    pub const DECAY_MS: u64 = 10_000;

    /// A policy with a seed for its tie-breaks (print the seed in tests).
    pub fn new(strategy: Strategy, seed: u64) -> Self {
        Self {
            strategy,
            rng: SplitMix64(seed),
            recent: HashMap::new(),
            last: HashMap::new(),
        }
    }

    /// The strategy in use.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Chooses a node for a new room; `None` if no node is eligible.
    pub fn choose(
        &mut self,
        room: &RoomKey,
        landing: Option<&NodeId>,
        nodes: &[NodeRecord],
    ) -> Option<NodeId> {
        self.observe(nodes);
        let eligible: Vec<&NodeRecord> = nodes.iter().filter(|n| self.eligible(n)).collect();
        if eligible.is_empty() {
            return None;
        }
        if self.strategy == Strategy::ConsistentHash {
            return eligible
                .iter()
                .max_by_key(|n| rendezvous(room, &n.id))
                .map(|n| n.id.clone());
        }
        if let Some(n) = landing.and_then(|l| eligible.iter().find(|n| &n.id == l))
            && self.load(n) < 1.0
        {
            return Some(n.id.clone());
        }
        match self.strategy {
            Strategy::PowerOfTwo if eligible.len() > 2 => {
                let a = self.rng.below(eligible.len());
                let mut b = self.rng.below(eligible.len() - 1);
                if b >= a {
                    b += 1;
                }
                let (la, lb) = (self.load(eligible[a]), self.load(eligible[b]));
                Some(
                    if lb < la {
                        &eligible[b].id
                    } else {
                        &eligible[a].id
                    }
                    .clone(),
                )
            }
            _ => {
                let mut best: Vec<&NodeRecord> = Vec::new();
                let mut best_load = f64::INFINITY;
                for n in &eligible {
                    let l = self.load(n);
                    if l < best_load - 1e-12 {
                        best_load = l;
                        best.clear();
                        best.push(n);
                    } else if (l - best_load).abs() <= 1e-12 {
                        best.push(n);
                    }
                }
                let pick = self.rng.below(best.len());
                best.get(pick).map(|n| n.id.clone())
            }
        }
    }

    /// Counts a placement on `node` at once (burst absorption). Call it when
    /// the store confirmed the room was placed there.
    pub fn record_placement(&mut self, node: &NodeId) {
        let (channels, rooms, seen) = self.last.get(node).copied().unwrap_or((0, 0, 0));
        let r = self.recent.entry(node.clone()).or_insert(Recent {
            base: channels,
            base_rooms: rooms,
            placed: 0,
            seen_ms: seen,
        });
        r.placed += 1;
    }

    /// The load a node is treated as having: reported channels, or what they
    /// were at the recent placements plus those placements, if more.
    pub fn effective_channels(&self, node: &NodeRecord) -> u32 {
        match self.recent.get(&node.id) {
            Some(r) => node
                .channels
                .max(r.base + r.placed * Self::PLACEMENT_WEIGHT),
            None => node.channels,
        }
    }

    /// Rooms a node is treated as owning: as read, or as read at the recent
    /// placements plus those placements, if more (a fresh read already
    /// counts them).
    fn effective_rooms(&self, node: &NodeRecord) -> u32 {
        match self.recent.get(&node.id) {
            Some(r) => node.rooms.max(r.base_rooms + r.placed),
            None => node.rooms,
        }
    }

    fn load(&self, n: &NodeRecord) -> f64 {
        f64::from(self.effective_channels(n)) / f64::from(n.capacity.max(1))
    }

    fn eligible(&self, n: &NodeRecord) -> bool {
        if n.state != NodeState::Up || !n.healthy || n.draining || n.suspect {
            return false;
        }
        match n.max_rooms {
            // `rooms` lags behind our own placements until the next read.
            Some(max) => self.effective_rooms(n) < max,
            None => true,
        }
    }

    /// Updates what is known of each node and ends inflations that the
    /// reports have caught up with.
    fn observe(&mut self, nodes: &[NodeRecord]) {
        for n in nodes {
            let seen = (n.channels, n.rooms, n.updated_ms);
            match self.last.get_mut(&n.id) {
                Some(last) => *last = seen,
                None => {
                    self.last.insert(n.id.clone(), seen);
                }
            }
            if let Some(r) = self.recent.get(&n.id) {
                let caught_up = n.channels >= r.base + r.placed * Self::PLACEMENT_WEIGHT;
                let stale = n.updated_ms >= r.seen_ms.saturating_add(Self::DECAY_MS);
                if caught_up || stale {
                    self.recent.remove(&n.id);
                }
            }
        }
    }
}

/// Rendezvous (highest random weight) score of a room on a node.
fn rendezvous(room: &RoomKey, node: &NodeId) -> u64 {
    let mut h = Fnv::new();
    h.write(room.kind.as_str().as_bytes());
    h.write(b":");
    h.write(room.name.as_str().as_bytes());
    h.write(b"@");
    h.write(node.as_str().as_bytes());
    mix(h.0)
}

/// A stable hash of a room, for `hash % n` comparisons (as Kamailio's
/// dispatcher would do with a hash of the request URI).
pub fn room_hash(room: &RoomKey) -> u64 {
    let mut h = Fnv::new();
    h.write(room.kind.as_str().as_bytes());
    h.write(b":");
    h.write(room.name.as_str().as_bytes());
    mix(h.0)
}

/// FNV-1a, 64 bits: stable across Rust versions (std's hasher is not).
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// SplitMix64's finaliser: spreads FNV's weak low bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A tiny seeded generator (SplitMix64): the policy's only randomness.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`), by rejection.
    fn below(&mut self, n: usize) -> usize {
        let n = n.max(1) as u64;
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next();
            if x < zone {
                return (x % n) as usize;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RoomKind;

    fn node(id: &str, channels: u32, capacity: u32) -> NodeRecord {
        NodeRecord {
            id: NodeId::new(id).unwrap(),
            state: NodeState::Up,
            healthy: true,
            draining: false,
            suspect: false,
            incarnation: None,
            sip_host: format!("{id}.example"),
            capacity,
            max_rooms: None,
            channels,
            rooms: 0,
            members: 0,
            updated_ms: 1_000,
        }
    }

    fn room(name: &str) -> RoomKey {
        RoomKey::parse("conference", name).unwrap()
    }

    #[test]
    fn strategies_parse_from_their_names() {
        for s in [
            Strategy::LeastLoaded,
            Strategy::PowerOfTwo,
            Strategy::ConsistentHash,
        ] {
            assert_eq!(s.as_str().parse::<Strategy>(), Ok(s));
        }
        assert!("round-robin".parse::<Strategy>().is_err());
    }

    #[test]
    fn landing_node_first_when_eligible() {
        let mut p = Policy::new(Strategy::LeastLoaded, 1);
        let nodes = [node("a", 0, 100), node("b", 50, 100)];
        let b = NodeId::new("b").unwrap();
        assert_eq!(p.choose(&room("r"), Some(&b), &nodes), Some(b));
    }

    #[test]
    fn never_draining_down_or_full_nodes() {
        let mut p = Policy::new(Strategy::LeastLoaded, 2);
        let mut a = node("a", 0, 100);
        a.state = NodeState::Draining;
        a.draining = true;
        let mut b = node("b", 0, 100);
        b.state = NodeState::Down;
        b.healthy = false;
        let mut c = node("c", 0, 100);
        c.max_rooms = Some(3);
        c.rooms = 3;
        let d = node("d", 90, 100);
        let nodes = [a.clone(), b.clone(), c, d];
        for landing in [&a.id, &b.id] {
            assert_eq!(
                p.choose(&room("x"), Some(landing), &nodes),
                Some(NodeId::new("d").unwrap())
            );
        }
        assert_eq!(p.choose(&room("x"), None, &nodes[..3]), None);
        let mut ch = Policy::new(Strategy::ConsistentHash, 0);
        assert_eq!(ch.choose(&room("x"), None, &nodes[..3]), None);
    }

    #[test]
    fn least_loaded_relative_to_capacity_and_random_among_ties() {
        let mut p = Policy::new(Strategy::LeastLoaded, 3);
        let nodes = [node("a", 50, 100), node("b", 60, 200), node("c", 40, 50)];
        assert_eq!(
            p.choose(&room("r"), None, &nodes),
            Some(NodeId::new("b").unwrap())
        );
        let tied = [node("a", 0, 10), node("b", 0, 10), node("c", 0, 10)];
        let mut seen = std::collections::HashSet::new();
        for i in 0..100 {
            seen.insert(p.choose(&room(&format!("r{i}")), None, &tied));
        }
        assert_eq!(seen.len(), 3, "ties must be broken at random");
    }

    #[test]
    fn a_burst_spreads_before_any_report() {
        let mut p = Policy::new(Strategy::LeastLoaded, 4);
        let nodes: Vec<_> = (0..5).map(|i| node(&format!("n{i}"), 10, 100)).collect();
        let mut count: HashMap<NodeId, u32> = HashMap::new();
        for i in 0..50 {
            let n = p.choose(&room(&format!("b{i}")), None, &nodes).unwrap();
            p.record_placement(&n);
            *count.entry(n).or_default() += 1;
        }
        assert!(count.values().all(|c| *c == 10), "{count:?}");
    }

    #[test]
    fn inflation_ends_when_reports_catch_up_or_grow_stale() {
        let mut p = Policy::new(Strategy::LeastLoaded, 5);
        let mut a = node("a", 10, 100);
        p.choose(&room("x"), None, std::slice::from_ref(&a));
        p.record_placement(&a.id);
        p.record_placement(&a.id);
        assert_eq!(p.effective_channels(&a), 12);
        a.channels = 12;
        p.choose(&room("y"), None, std::slice::from_ref(&a));
        assert_eq!(p.effective_channels(&a), 12);
        a.channels = 3;
        assert_eq!(p.effective_channels(&a), 3, "caught up: no inflation left");
        p.record_placement(&a.id);
        a.updated_ms += Policy::DECAY_MS;
        p.choose(&room("z"), None, std::slice::from_ref(&a));
        assert_eq!(p.effective_channels(&a), 3, "stale inflation decays");
    }

    #[test]
    fn room_caps_count_recent_placements_once() {
        let mut p = Policy::new(Strategy::LeastLoaded, 8);
        let mut a = node("a", 0, 100);
        a.max_rooms = Some(3);
        a.rooms = 1;
        p.choose(&room("x"), None, std::slice::from_ref(&a));
        p.record_placement(&a.id);
        assert!(
            p.choose(&room("y"), None, std::slice::from_ref(&a))
                .is_some()
        );
        p.record_placement(&a.id);
        assert_eq!(p.choose(&room("z"), None, std::slice::from_ref(&a)), None);
        // A fresh read that already counts the placements (2 here) is not
        // added to them: 3 rooms counted (1 + 2 placed), not 4.
        a.rooms = 2;
        a.max_rooms = Some(4);
        assert!(
            p.choose(&room("z"), None, std::slice::from_ref(&a))
                .is_some()
        );
    }

    #[test]
    fn consistent_hash_moves_only_the_removed_nodes_rooms() {
        let mut p = Policy::new(Strategy::ConsistentHash, 6);
        let nodes: Vec<_> = (0..10).map(|i| node(&format!("n{i}"), 0, 100)).collect();
        let rooms: Vec<_> = (0..2000).map(|i| room(&format!("r{i}"))).collect();
        let before: Vec<_> = rooms
            .iter()
            .map(|r| p.choose(r, None, &nodes).unwrap())
            .collect();
        let fewer = &nodes[1..];
        for (r, b) in rooms.iter().zip(&before) {
            let after = p.choose(r, None, fewer).unwrap();
            if *b != nodes[0].id {
                assert_eq!(&after, b, "{r} moved off a surviving node");
            }
        }
        let per_node = before.iter().filter(|n| **n == nodes[0].id).count();
        assert!((100..300).contains(&per_node), "{per_node}");
    }

    #[test]
    fn power_of_two_prefers_the_lighter_of_two() {
        let mut p = Policy::new(Strategy::PowerOfTwo, 7);
        let mut nodes: Vec<_> = (0..3).map(|i| node(&format!("n{i}"), 0, 100)).collect();
        nodes[0].channels = 100;
        for i in 0..100 {
            let n = p
                .choose(
                    &RoomKey::parse("queue", &format!("q{i}")).unwrap(),
                    None,
                    &nodes,
                )
                .unwrap();
            assert_ne!(n, nodes[0].id);
        }
        let _ = RoomKind::Queue;
    }
}
