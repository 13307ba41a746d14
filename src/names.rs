//! A room's names: every string that carries a room's identity outside
//! corral's memory is written and read here, and nowhere else.
//!
//! | form | example (app `corral`) | seen by |
//! | --- | --- | --- |
//! | bridge name | `corral:conference:sales`, `corral:queue:support` | ARI, operators, outside tools |
//! | pair bridge name | `corral:queue:support:alice` | ARI (a queue call with agent `alice`) |
//! | bridge id | `corral-conference-sales-7` (epoch 7), `corral-conference-sales-local` (degraded) | ARI |
//! | pair bridge id | `corral-queue-support-qc12` | ARI |
//! | store member | `c:sales`, `q:support` | the store's keys and node indexes |
//! | cursor | `ast1/conference:sales` | `list_rooms` pages, the API's `next` |
//!
//! Bridge names and ids start with the Stasis app name, so two apps on one
//! node never mistake each other's bridges; with the default app (`corral`)
//! they are exactly the forms above, which outside tools check. The app name
//! is a validated word (no `:` and no spaces), and so are room names and
//! agent ids, so every form reads back unambiguously; the round-trip tests
//! below prove it.
//!
//! Plain data, no I/O: `store`, `controller`, the benches and the demo all
//! use it.

use crate::domain::{AgentId, BridgeId, Epoch, NodeId, RoomKey, RoomKind, RoomName};

/// The Stasis app name corral uses unless configured otherwise.
pub const DEFAULT_APP: &str = "corral";

/// The names of rooms' bridges for one Stasis app. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeNames {
    /// The Stasis app name: the first part of every bridge name and id.
    app: String,
}

/// What a bridge name says about its bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeOf {
    /// A room's own bridge: the conference's mixing bridge, or the queue's
    /// holding bridge.
    Room(RoomKey),
    /// A queue's pair bridge: one caller and one agent talking.
    Pair {
        /// The queue (a room of kind `queue`).
        queue: RoomKey,
        /// The agent in the pair.
        agent: AgentId,
    },
}

impl BridgeOf {
    /// The room the bridge belongs to (a pair bridge's queue).
    pub fn room(&self) -> &RoomKey {
        match self {
            BridgeOf::Room(r) => r,
            BridgeOf::Pair { queue, .. } => queue,
        }
    }

    /// True for a queue's pair bridge.
    pub fn is_pair(&self) -> bool {
        matches!(self, BridgeOf::Pair { .. })
    }
}

impl BridgeNames {
    /// Names for `app` (a validated app name: a word without `:`).
    pub fn new(app: impl Into<String>) -> Self {
        Self { app: app.into() }
    }

    /// The app these names belong to.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The ARI bridge name of `room`: `<app>:<kind>:<name>`.
    pub fn bridge_name(&self, room: &RoomKey) -> String {
        format!("{}:{}:{}", self.app, room.kind, room.name)
    }

    /// The bridge id of `room` at `epoch` (`None`: a degraded, unrecorded
    /// room): `<app>-<kind>-<name>-<epoch>` or `<app>-<kind>-<name>-local`.
    /// Deterministic, so creating it twice is harmless and a room placed
    /// again gets a bridge of its own.
    pub fn bridge_id(&self, room: &RoomKey, epoch: Option<Epoch>) -> BridgeId {
        let id = match epoch {
            Some(e) => format!("{}-{}-{}-{}", self.app, room.kind, room.name, e.0),
            None => format!("{}-{}-{}-local", self.app, room.kind, room.name),
        };
        BridgeId::new(id).expect("app, kind and room name are words")
    }

    /// A queue's pair bridge: its id (`<app>-queue-<queue>-<tag>`, `tag`
    /// chosen by the queue's state) and its name
    /// (`<app>:queue:<queue>:<agent>`).
    pub fn pair_bridge(&self, queue: &RoomName, tag: &str, agent: &AgentId) -> (BridgeId, String) {
        let id = BridgeId::new(format!("{}-queue-{queue}-{tag}", self.app))
            .expect("app, queue name and tag are words");
        (id, format!("{}:queue:{queue}:{agent}", self.app))
    }

    /// Reads a bridge name made by [`BridgeNames::bridge_name`] or
    /// [`BridgeNames::pair_bridge`]; `None` for any other bridge (another
    /// app's, or a name that does not parse).
    pub fn parse_bridge_name(&self, name: &str) -> Option<BridgeOf> {
        let rest = name.strip_prefix(self.app.as_str())?.strip_prefix(':')?;
        let (kind, room) = rest.split_once(':')?;
        match room.split_once(':') {
            Some((queue, agent)) if kind == RoomKind::Queue.as_str() => Some(BridgeOf::Pair {
                queue: RoomKey::parse(kind, queue).ok()?,
                agent: AgentId::new(agent).ok()?,
            }),
            Some(_) => None,
            None => RoomKey::parse(kind, room).ok().map(BridgeOf::Room),
        }
    }
}

impl Default for BridgeNames {
    /// The default app's names (`corral`).
    fn default() -> Self {
        Self::new(DEFAULT_APP)
    }
}

/// A room as it appears in the store's keys and node indexes:
/// `<c|q>:<name>`.
pub fn store_member(room: &RoomKey) -> String {
    format!("{}:{}", kind_letter(room.kind), room.name)
}

/// The one-letter kind used in store keys (`c` conference, `q` queue): a
/// million placements stay small.
pub fn kind_letter(kind: RoomKind) -> char {
    match kind {
        RoomKind::Conference => 'c',
        RoomKind::Queue => 'q',
    }
}

/// Reads `<c|q>:<name>` back into a room.
pub fn parse_store_member(member: &str) -> Option<RoomKey> {
    let (kind, name) = member.split_once(':')?;
    let kind = match kind {
        "c" => RoomKind::Conference,
        "q" => RoomKind::Queue,
        _ => return None,
    };
    Some(RoomKey::new(kind, RoomName::new(name).ok()?))
}

/// A `list_rooms` cursor: the last room of a page, `<node>/<kind>:<name>`
/// (pages are ordered by node, then kind, then name).
pub fn cursor(node: &NodeId, room: &RoomKey) -> String {
    format!("{node}/{}:{}", room.kind, room.name)
}

/// Reads a cursor made by [`cursor`]; `None` for anything else.
pub fn parse_cursor(cursor: &str) -> Option<(NodeId, RoomKey)> {
    let (node, room) = cursor.split_once('/')?;
    let (kind, name) = room.split_once(':')?;
    Some((NodeId::new(node).ok()?, RoomKey::parse(kind, name).ok()?))
}

/// The lease of a node's standby stream: a lease like a node's own, under
/// the node's id and `--standby` (`None` when that is longer than an id
/// may be: that node has no standby stream).
pub fn standby_lease(node: &NodeId) -> Option<NodeId> {
    NodeId::new(format!("{node}--standby")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(kind: &str, name: &str) -> RoomKey {
        RoomKey::parse(kind, name).unwrap()
    }

    #[test]
    fn room_kind_and_bridge_name() {
        let key = RoomKey::parse("conference", "sales").unwrap();
        assert_eq!(
            BridgeNames::default().bridge_name(&key),
            "corral:conference:sales"
        );
    }

    #[test]
    fn bridge_names_round_trip() {
        let names = BridgeNames::default();
        let room = RoomKey::parse("conference", "sales-eu").unwrap();
        assert_eq!(
            names.bridge_id(&room, Some(Epoch(7))).as_str(),
            "corral-conference-sales-eu-7"
        );
        assert_eq!(
            names.parse_bridge_name(&names.bridge_name(&room)),
            Some(BridgeOf::Room(room))
        );
        assert_eq!(names.parse_bridge_name("other:conference:x"), None);
        let q = RoomKey::parse("queue", "support").unwrap();
        assert_eq!(
            names
                .parse_bridge_name("corral:queue:support:alice")
                .map(|b| b.room().clone()),
            Some(q)
        );
        assert!(
            names
                .parse_bridge_name("corral:queue:support:alice")
                .is_some_and(|b| b.is_pair())
        );
        assert!(
            !names
                .parse_bridge_name("corral:queue:support")
                .unwrap()
                .is_pair()
        );
        assert_eq!(names.parse_bridge_name("corral:conference:a:b"), None);
    }

    /// The forms outside tools check, for the default app, exactly.
    #[test]
    fn default_app_forms_are_the_external_interface() {
        let n = BridgeNames::default();
        let conf = room("conference", "sales");
        let queue = room("queue", "support");
        assert_eq!(n.bridge_name(&conf), "corral:conference:sales");
        assert_eq!(n.bridge_name(&queue), "corral:queue:support");
        assert_eq!(
            n.bridge_id(&conf, Some(Epoch(3))).as_str(),
            "corral-conference-sales-3"
        );
        assert_eq!(
            n.bridge_id(&queue, None).as_str(),
            "corral-queue-support-local"
        );
        let (id, name) = n.pair_bridge(&queue.name, "qc12", &AgentId::new("alice").unwrap());
        assert_eq!(id.as_str(), "corral-queue-support-qc12");
        assert_eq!(name, "corral:queue:support:alice");
        assert_eq!(store_member(&conf), "c:sales");
        assert_eq!(
            cursor(&NodeId::new("ast1").unwrap(), &conf),
            "ast1/conference:sales"
        );
    }

    #[test]
    fn every_form_round_trips_for_any_app() {
        for app in ["corral", "corral-eu", "x_1"] {
            let n = BridgeNames::new(app);
            for r in [room("conference", "a-b_c"), room("queue", "support")] {
                assert_eq!(
                    n.parse_bridge_name(&n.bridge_name(&r)),
                    Some(BridgeOf::Room(r.clone())),
                    "{app}"
                );
                let agent = AgentId::new("bob_2").unwrap();
                let (_, pair) = n.pair_bridge(&r.name, "qc1", &agent);
                if r.kind == RoomKind::Queue {
                    assert_eq!(
                        n.parse_bridge_name(&pair),
                        Some(BridgeOf::Pair {
                            queue: r.clone(),
                            agent
                        })
                    );
                }
                assert_eq!(parse_store_member(&store_member(&r)), Some(r.clone()));
                let node = NodeId::new("ast-1").unwrap();
                assert_eq!(parse_cursor(&cursor(&node, &r)), Some((node, r.clone())));
            }
        }
    }

    #[test]
    fn another_apps_bridges_are_not_ours() {
        let n = BridgeNames::new("corral");
        assert_eq!(n.parse_bridge_name("corral2:conference:sales"), None);
        assert_eq!(n.parse_bridge_name("corralconference:sales"), None);
        let other = BridgeNames::new("other");
        assert_eq!(other.parse_bridge_name("corral:conference:sales"), None);
        assert!(other.parse_bridge_name("other:conference:sales").is_some());
        assert_eq!(n.parse_bridge_name("corral:party:x"), None);
        assert_eq!(n.parse_bridge_name("corral:queue:a:b-c"), None);
    }

    #[test]
    fn room_members_round_trip_and_sort_like_room_keys() {
        let a = RoomKey::parse("conference", "b-1").unwrap();
        let b = RoomKey::parse("queue", "a").unwrap();
        assert_eq!(parse_store_member(&store_member(&a)), Some(a.clone()));
        assert!(store_member(&a) < store_member(&b));
        assert!(a < b);
        assert_eq!(parse_store_member("x:y"), None);
    }

    #[test]
    fn bad_members_and_cursors_are_refused() {
        for bad in ["", "x:sales", "c", "c:a b", "q:{x}"] {
            assert_eq!(parse_store_member(bad), None, "{bad}");
        }
        for bad in [
            "",
            "ast1",
            "ast1/sales",
            "ast 1/conference:x",
            "ast1/party:x",
        ] {
            assert_eq!(parse_cursor(bad), None, "{bad}");
        }
    }
}
