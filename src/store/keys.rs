//! Every Redis key corral uses, built in this one place.
//!
//! Every key starts with the farm's hash tag `{corral:<farm>}`, so all of a
//! farm's keys hash to one Redis Cluster slot (its scripts are atomic on one
//! shard) and many farms spread over a cluster. The parts after the tag are
//! validated ids (`crate::domain`), which cannot hold `{`, `}`, `:` or
//! spaces, so no caller can reach another farm's keys.
//!
//! # Layout (`F` = farm)
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `{corral:F}:epoch` | string | the farm-wide epoch sequence (`INCR`) |
//! | `{corral:F}:hv` | string | the health version: a new, never repeated value at every change of a node's health or generation (`<s>.<µs>.<epoch>`) |
//! | `{corral:F}:nodes` | set | registered node ids |
//! | `{corral:F}:n:<node>` | hash | node: `h` healthy, `d` drain, `aid`/`ast` incarnation, `g` generation, `sip`, `cap`, `max`, `ch` channels, `k` members, `u` updated ms |
//! | `{corral:F}:nr:<node>` | sorted set | the rooms `<node>` owns, score 0, member `<c|q>:<name>`, ordered by lex (paging, releasing a dead node's rooms) |
//! | `{corral:F}:r:<c|q>:<name>` | hash | room: `n` owner, `e` epoch, `c` created ms, `g` owner generation, `k` members (absent = 0), `z` empty since ms (absent = since `c`); one field `:<channel>` per member, value `<role letter><joined ms>` |
//! | `{corral:F}:t:<token>` | hash | token grant, minted and expiry ms; key TTL = ttl + tombstone |
//! | `{corral:F}:l:<node>` | string | lease holder (replica), key TTL = lease ttl |
//! | `{corral:F}:q:<name>` | hash | queue state: `v` version, `d` JSON document (`crate::queue`) |
//! | `{corral:F}:qc:<name>` | sorted set | the queue's waiting callers: score = arrival seq, member = the caller's JSON |
//! | `{corral:F}:queues` | set | queue names with a document |
//!
//! The room kind is one letter in keys (`c` conference, `q` queue) to keep a
//! placement small: a million rooms is a few hundred MB at most.

use crate::domain::{NodeId, RoomKey, RoomName, TokenId};
use crate::names;

/// Builds the keys of one farm.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys for `farm` (already validated as an id).
    pub fn new(farm: &str) -> Self {
        Self {
            prefix: format!("{{corral:{farm}}}:"),
        }
    }

    /// The farm's prefix, `{corral:F}:`. Scripts that walk an index derive
    /// room and node keys from it (they stay in the farm's slot).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The farm-wide epoch sequence.
    pub fn epoch(&self) -> String {
        format!("{}epoch", self.prefix)
    }

    /// The health version (changes with any node's health or generation).
    pub fn health_version(&self) -> String {
        format!("{}hv", self.prefix)
    }

    /// The set of registered node ids.
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// A node's hash.
    pub fn node(&self, node: &NodeId) -> String {
        format!("{}n:{node}", self.prefix)
    }

    /// The sorted set of rooms a node owns.
    pub fn node_rooms(&self, node: &NodeId) -> String {
        format!("{}nr:{node}", self.prefix)
    }

    /// A room's hash.
    pub fn room(&self, room: &RoomKey) -> String {
        format!("{}r:{}", self.prefix, names::store_member(room))
    }

    /// A token's hash.
    pub fn token(&self, token: &TokenId) -> String {
        format!("{}t:{token}", self.prefix)
    }

    /// A queue's state document.
    pub fn queue(&self, queue: &RoomName) -> String {
        format!("{}q:{queue}", self.prefix)
    }

    /// A queue's waiting callers (sorted set, score = arrival seq).
    pub fn queue_callers(&self, queue: &RoomName) -> String {
        format!("{}qc:{queue}", self.prefix)
    }

    /// The set of queue names that have a document.
    pub fn queues(&self) -> String {
        format!("{}queues", self.prefix)
    }

    /// A node's lease.
    pub fn lease(&self, node: &NodeId) -> String {
        format!("{}l:{node}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_farm_hash_tag() {
        let keys = Keys::new("eu1");
        let node = NodeId::new("ast1").unwrap();
        let room = RoomKey::parse("queue", "sales").unwrap();
        let token = TokenId::new("abc").unwrap();
        for key in [
            keys.epoch(),
            keys.nodes(),
            keys.node(&node),
            keys.node_rooms(&node),
            keys.room(&room),
            keys.token(&token),
            keys.lease(&node),
        ] {
            assert!(key.starts_with("{corral:eu1}:"), "{key}");
            assert_eq!(key.matches('{').count(), 1, "{key}");
        }
        assert_eq!(keys.room(&room), "{corral:eu1}:r:q:sales");
    }
}
