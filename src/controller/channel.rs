//! What the controller knows of each node: one state machine per channel,
//! one for the node's link, both in one [`NodeState`] behind one mutex.
//!
//! Nothing here must survive a replica: the store has the members and the
//! placements, ARI has the calls, and a resync rebuilds all of this from
//! them. These states only stop two pieces of work from doing the same
//! thing twice (a resync placing a call its `StasisStart` is placing, a
//! split healing moving a call that is already on its way) and remember
//! what a channel's leave must undo.
//!
//! # Why a std mutex
//! Every section is a few map operations with no `.await` inside, so a
//! `std::sync::Mutex` is cheaper than tokio's and cannot be held across a
//! suspension point by mistake (the guard is not `Send`). A poisoned lock
//! (a panic while holding it) is recovered in one place, [`NodeRuntime::with`]:
//! the maps stay usable because every section leaves them consistent.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::NodeSpec;
use super::mailbox::Mailboxes;
use crate::ari::AriNode;
use crate::domain::{BridgeId, ChannelId, Incarnation, NodeId, RoomKey, TokenId};
use crate::store::TokenRecord;

/// A channel's room, once it is in (or on its way into) a bridge here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Membership {
    /// The room whose bridge the channel is in.
    pub(crate) room: RoomKey,
    /// True when the store has it as a member (false for a degraded or split
    /// join and for a static member's leg): its leave removes the member.
    pub(crate) recorded: bool,
}

/// One channel on one node, as the controller sees it. A channel absent
/// from the map is unknown: not handled, and seen by no resync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChannelState {
    /// Its placement is running (its `StasisStart`, or a resync that found
    /// it unhandled, in the channel's worker). `held` is its token when it
    /// was consumed here. A resync leaves it alone.
    Placing {
        /// The token this channel consumed, if any.
        held: Option<TokenRecord>,
    },
    /// Its token was consumed here but the call is in no bridge: the join
    /// failed half-way (ARI errors past the retries). A retry joins without
    /// consuming the token again; a resync retries it when it sees it so
    /// twice in a row (`seen` is the first sighting).
    TokenHeld {
        /// The consumed token's record.
        record: TokenRecord,
        /// Seen unhandled by the last resync.
        seen: bool,
    },
    /// Seen by the last resync in corral's app, ringing or answered, in no
    /// bridge and not handled: its `StasisStart` was lost, or is late. The
    /// next resync that sees it so places it.
    Suspect,
    /// Redirected away with `token`, until its `StasisEnd`: the SIP hop is
    /// on its way, so no resync places it and no split healing moves it
    /// again. `left` is the room it was in, if it was bridged (a split
    /// call being healed), so its leave still removes what it must.
    Redirected {
        /// The token the destination consumes (logged by prefix only).
        token: TokenId,
        /// Its room before the move, if it was in a bridge.
        left: Option<Membership>,
        /// When it was redirected: a move whose token has not arrived
        /// within `redirect_deadline` failed (a refused REFER shows
        /// nothing on ARI).
        since: Instant,
    },
    /// In its room's bridge here.
    Joined(Membership),
}

/// Who started a placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartedBy {
    /// The channel's `StasisStart`.
    Event,
    /// A resync that saw the call unhandled twice (its `StasisStart` lost).
    Resync,
}

/// One piece of a channel's work, done in order by its worker
/// ([`super::mailbox`]): the inputs of its state machine.
#[derive(Debug, Clone)]
pub(crate) enum ChannelWork {
    /// The call entered the app: place it.
    Start {
        /// The Stasis arguments after the app name.
        args: Vec<String>,
        /// The channel as ARI described it (boxed: the other work is small).
        channel: Box<crate::ari::rest::Channel>,
        /// Its `StasisStart`, or a resync.
        by: StartedBy,
    },
    /// It left the app (`StasisEnd`).
    End,
    /// It is gone (`ChannelDestroyed`, with its Q.850 cause).
    Destroyed {
        /// The hangup cause, if any.
        cause: Option<i64>,
    },
}

/// What [`NodeState::begin_placing`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Begin {
    /// The channel is now [`ChannelState::Placing`]; place it (with the
    /// token it holds, if any).
    Place {
        /// The token consumed earlier by this channel.
        held: Option<TokenRecord>,
    },
    /// It is being placed, joined or moved already: a duplicate.
    Handled,
}

/// The link to a node: websocket and registration, driven by
/// [`Link::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// No websocket in this stream session yet, or it dropped before the
    /// node was registered: nothing to undo in the store. Not healthy.
    Connecting,
    /// Websocket up; the node is being registered and resynced. Not
    /// healthy yet: no room is placed on it.
    Registering,
    /// Websocket up but the registration failed (`GET /asterisk/info` or
    /// the store): retried at the next ping that answers.
    Unregistered,
    /// Websocket up, node registered: healthy, takes rooms.
    Up,
    /// Websocket up but `down_after_failures` pings in a row failed: marked
    /// down in the store (its rooms released). A ping that answers
    /// registers it again (same incarnation: nothing more is released).
    PingDown,
    /// The websocket was lost while the node was up: marked down; the
    /// stream reconnects with backoff.
    Down,
}

/// What happens to a node's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkEvent {
    /// The websocket connected.
    SocketUp,
    /// The websocket closed or stopped answering.
    SocketLost,
    /// The node is registered in the store.
    Registered,
    /// The registration could not be made.
    RegisterFailed,
    /// `down_after_failures` pings in a row failed.
    PingsFailed,
    /// A ping answered.
    PingAnswered,
    /// The stream session ended (lease lost, or stopping).
    SessionEnded,
    /// The store no longer has the node registered and up while its link
    /// is up (Redis restarted empty, or failed over to a replica that had
    /// not seen it): register it again.
    Forgotten,
}

/// What the node loop must do after a link step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkAction {
    /// Nothing.
    None,
    /// Register the node (a new incarnation starts empty), then resync.
    Register,
    /// Mark the node down in the store (its rooms are released).
    MarkDown,
}

impl Link {
    /// The one transition function of a node's link.
    pub(crate) fn step(self, ev: LinkEvent) -> (Link, LinkAction) {
        use Link::*;
        use LinkEvent::*;
        match (self, ev) {
            (_, SocketUp) => (Registering, LinkAction::Register),
            (_, SessionEnded) => (Connecting, LinkAction::None),
            (Up, SocketLost) => (Down, LinkAction::MarkDown),
            (PingDown | Down, SocketLost) => (Down, LinkAction::None),
            (Connecting | Registering | Unregistered, SocketLost) => (Connecting, LinkAction::None),
            (Registering, Registered) => (Up, LinkAction::None),
            (Registering, RegisterFailed) => (Unregistered, LinkAction::None),
            (Up, PingsFailed) => (PingDown, LinkAction::MarkDown),
            (Up, Forgotten) => (Registering, LinkAction::Register),
            (PingDown | Unregistered, PingAnswered) => (Registering, LinkAction::Register),
            (state, _) => (state, LinkAction::None),
        }
    }

    /// Healthy: takes rooms and joiners.
    pub(crate) fn is_up(self) -> bool {
        self == Link::Up
    }

    /// The websocket is connected (healthy or not).
    pub(crate) fn is_streaming(self) -> bool {
        matches!(
            self,
            Link::Registering | Link::Unregistered | Link::Up | Link::PingDown
        )
    }
}

/// Everything the controller keeps of one node, under one lock.
#[derive(Debug)]
pub(crate) struct NodeState {
    /// The node's link.
    pub(crate) link: Link,
    /// Every channel corral handles or has seen unhandled on the node.
    pub(crate) channels: HashMap<ChannelId, ChannelState>,
    /// Bridge ids known to exist on the node (a cache: a 404 drops one).
    pub(crate) bridges: HashSet<String>,
    /// The bridge each room's calls were last put in here: where a
    /// degraded join of a conference goes (the store cannot say the epoch).
    pub(crate) room_bridges: HashMap<RoomKey, BridgeId>,
    /// Rooms with calls bridged here that another node owns, since when
    /// the split was detected (for its duration when healed).
    pub(crate) splits: HashMap<RoomKey, Instant>,
    /// Tokens of redirects from this node whose arrival is awaited, true
    /// once this replica consumed one on its destination: the redirect's
    /// watcher then needs no store read to confirm it.
    pub(crate) redirects: HashMap<TokenId, bool>,
    /// Channels whose moves away failed: how many, and when the last one
    /// was found failed (the next try waits a backoff from there).
    pub(crate) move_failures: HashMap<ChannelId, (u32, Instant)>,
    /// The node's incarnation this replica last registered: a store that
    /// says "new" for the same one has lost its records, the node did not
    /// restart.
    pub(crate) incarnation: Option<Incarnation>,
    /// Bridges a join is putting a call in (how many now) or last put one
    /// in (when it finished): a resync that listed a bridge empty before
    /// then must not destroy it ([`NodeState::bridge_in_use_since`]).
    pub(crate) bridge_use: HashMap<String, (u32, Instant)>,
}

impl NodeState {
    /// A join starts putting a call in bridge `id`.
    pub(crate) fn bridge_join_started(&mut self, id: &str) {
        let now = Instant::now();
        self.bridge_use
            .entry(id.to_string())
            .and_modify(|u| u.0 += 1)
            .or_insert((1, now));
    }

    /// A join into bridge `id` is over (done or failed).
    pub(crate) fn bridge_join_ended(&mut self, id: &str) {
        let now = Instant::now();
        if let Some(u) = self.bridge_use.get_mut(id) {
            *u = (u.0.saturating_sub(1), now);
        }
    }

    /// Whether a join was putting a call in bridge `id` at or after
    /// `listed` (when a resync listed the node's bridges): the listing may
    /// show it empty while it is not.
    pub(crate) fn bridge_in_use_since(&self, id: &str, listed: Instant) -> bool {
        self.bridge_use
            .get(id)
            .is_some_and(|&(busy, last)| busy > 0 || last >= listed)
    }

    /// Forgets the join marks of bridges idle since before `before`.
    pub(crate) fn forget_bridge_use(&mut self, before: Instant) {
        self.bridge_use
            .retain(|_, &mut (busy, last)| busy > 0 || last >= before);
    }

    fn new() -> Self {
        Self {
            link: Link::Connecting,
            channels: HashMap::new(),
            bridges: HashSet::new(),
            room_bridges: HashMap::new(),
            splits: HashMap::new(),
            redirects: HashMap::new(),
            move_failures: HashMap::new(),
            incarnation: None,
            bridge_use: HashMap::new(),
        }
    }

    /// Starts placing `chan` unless it is handled already.
    pub(crate) fn begin_placing(&mut self, chan: &ChannelId) -> Begin {
        let held = match self.channels.get(chan) {
            None | Some(ChannelState::Suspect) => None,
            Some(ChannelState::TokenHeld { record, .. }) => Some(record.clone()),
            Some(
                ChannelState::Placing { .. }
                | ChannelState::Redirected { .. }
                | ChannelState::Joined(_),
            ) => return Begin::Handled,
        };
        self.channels
            .insert(chan.clone(), ChannelState::Placing { held: held.clone() });
        Begin::Place { held }
    }

    /// The placement of `chan` ended: a channel still `Placing` is in no
    /// bridge and was not moved (handed back, gone, or failed half-way): it
    /// keeps its consumed token for a retry, or is forgotten.
    pub(crate) fn end_placing(&mut self, chan: &ChannelId) {
        if let Some(ChannelState::Placing { held }) = self.channels.get(chan) {
            match held.clone() {
                Some(record) => {
                    self.channels.insert(
                        chan.clone(),
                        ChannelState::TokenHeld {
                            record,
                            seen: false,
                        },
                    );
                }
                None => {
                    self.channels.remove(chan);
                }
            }
        }
    }

    /// `chan` consumed its token: remember it while it is placed.
    pub(crate) fn hold_token(&mut self, chan: &ChannelId, record: TokenRecord) {
        self.channels
            .insert(chan.clone(), ChannelState::Placing { held: Some(record) });
    }

    /// The token `chan` consumed earlier, if any.
    pub(crate) fn held_token(&self, chan: &ChannelId) -> Option<TokenRecord> {
        match self.channels.get(chan) {
            Some(ChannelState::Placing { held }) => held.clone(),
            Some(ChannelState::TokenHeld { record, .. }) => Some(record.clone()),
            _ => None,
        }
    }

    /// `chan` is in `room`'s bridge. A membership the store has is never
    /// downgraded by a later unrecorded sighting.
    pub(crate) fn joined(&mut self, chan: &ChannelId, m: Membership) {
        let recorded = m.recorded
            || self
                .membership(chan)
                .is_some_and(|old| old.recorded && old.room == m.room);
        self.channels.insert(
            chan.clone(),
            ChannelState::Joined(Membership {
                room: m.room,
                recorded,
            }),
        );
    }

    /// A resync found `chan` in a bridge of `m.room`: remember it there,
    /// unless it is being placed or moved (that work decides its state).
    pub(crate) fn follow(&mut self, chan: &ChannelId, m: Membership) {
        match self.channels.get(chan) {
            Some(ChannelState::Placing { .. } | ChannelState::Redirected { .. }) => {}
            _ => self.joined(chan, m),
        }
    }

    /// A resync saw `chan` unhandled for the first time.
    pub(crate) fn sighted(&mut self, chan: &ChannelId) {
        match self.channels.get_mut(chan) {
            None => {
                self.channels.insert(chan.clone(), ChannelState::Suspect);
            }
            Some(ChannelState::TokenHeld { seen, .. }) => *seen = true,
            Some(_) => {}
        }
    }

    /// A resync no longer sees `chan` unhandled: forget the sighting.
    pub(crate) fn unsighted(&mut self, chan: &ChannelId) {
        match self.channels.get_mut(chan) {
            Some(ChannelState::Suspect) => {
                self.channels.remove(chan);
            }
            Some(ChannelState::TokenHeld { seen, .. }) => *seen = false,
            _ => {}
        }
    }

    /// True while `chan` is on its way to another node.
    pub(crate) fn is_moving(&self, chan: &ChannelId) -> bool {
        matches!(
            self.channels.get(chan),
            Some(ChannelState::Redirected { .. })
        )
    }

    /// `chan` was redirected away with `token` at `since`.
    pub(crate) fn redirected(&mut self, chan: &ChannelId, token: TokenId, since: Instant) {
        let left = self.membership(chan).cloned();
        self.channels.insert(
            chan.clone(),
            ChannelState::Redirected { token, left, since },
        );
    }

    /// `chan`'s move away, if it is moving: its token and since when.
    pub(crate) fn moving(&self, chan: &ChannelId) -> Option<(TokenId, Instant)> {
        match self.channels.get(chan) {
            Some(ChannelState::Redirected { token, since, .. }) => Some((token.clone(), *since)),
            _ => None,
        }
    }

    /// `chan`'s move failed at `now` (its token never arrived, e.g. the far
    /// end refused the REFER): it is back in its room's bridge here, and
    /// its failures are counted for the next try's backoff. Returns how
    /// many moves of it failed.
    pub(crate) fn move_failed(&mut self, chan: &ChannelId, now: Instant) -> u32 {
        if let Some(ChannelState::Redirected { left, .. }) = self.channels.get(chan) {
            match left.clone() {
                Some(m) => {
                    self.channels.insert(chan.clone(), ChannelState::Joined(m));
                }
                None => {
                    self.channels.remove(chan);
                }
            }
        }
        let f = self.move_failures.entry(chan.clone()).or_insert((0, now));
        *f = (f.0 + 1, now);
        f.0
    }

    /// The room `chan` is in here, if any (also while it is moved away).
    pub(crate) fn membership(&self, chan: &ChannelId) -> Option<&Membership> {
        match self.channels.get(chan) {
            Some(ChannelState::Joined(m))
            | Some(ChannelState::Redirected { left: Some(m), .. }) => Some(m),
            _ => None,
        }
    }

    /// `chan` left: forgets it and returns the room its leave must undo.
    pub(crate) fn leave(&mut self, chan: &ChannelId) -> Option<Membership> {
        self.move_failures.remove(chan);
        match self.channels.remove(chan) {
            Some(ChannelState::Joined(m))
            | Some(ChannelState::Redirected { left: Some(m), .. }) => Some(m),
            _ => None,
        }
    }

    /// A new incarnation of the node has none of the old one's calls or
    /// bridges (placements running now belong to the new one).
    pub(crate) fn forget_calls(&mut self) {
        self.bridges.clear();
        self.move_failures.clear();
        self.room_bridges.clear();
        self.channels
            .retain(|_, s| matches!(s, ChannelState::Placing { .. }));
    }
}

/// One node as the controller runs it: its id, ARI client and spec, and its
/// [`NodeState`].
#[derive(Debug)]
pub(crate) struct NodeRuntime {
    pub(crate) id: NodeId,
    pub(crate) ari: AriNode,
    /// The node's ARI under the standby app's name (its websocket only;
    /// REST goes through `ari`), if a standby app is configured.
    pub(crate) standby: Option<AriNode>,
    pub(crate) spec: NodeSpec,
    state: Mutex<NodeState>,
    /// Each channel's work, in order ([`super::mailbox`]).
    pub(crate) mailboxes: Mailboxes<ChannelId, ChannelWork>,
    /// Held by the node's resync: two resyncs at once (a periodic one, one
    /// after a registration, one when the store answers again) would both
    /// find a stray call not moving yet and move it twice.
    pub(crate) resync: tokio::sync::Mutex<()>,
    /// A resync to heal a split is scheduled ([`super::Controller::heal_soon`]):
    /// one at a time, however many calls joined split meanwhile.
    pub(crate) heal_pending: std::sync::atomic::AtomicBool,
    /// A standby replica's look for calls stranded in the app of a
    /// replica that stopped streaming the node is scheduled
    /// ([`super::Controller::rescue_soon`]).
    pub(crate) rescue_pending: std::sync::atomic::AtomicBool,
}

impl NodeRuntime {
    pub(crate) fn new(
        id: NodeId,
        ari: AriNode,
        standby: Option<AriNode>,
        spec: NodeSpec,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            ari,
            standby,
            spec,
            state: Mutex::new(NodeState::new()),
            mailboxes: Mailboxes::default(),
            resync: tokio::sync::Mutex::new(()),
            heal_pending: std::sync::atomic::AtomicBool::new(false),
            rescue_pending: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Runs `f` on the node's state under its lock (never across an
    /// `.await`: `f` is synchronous).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut NodeState) -> R) -> R {
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// Steps the node's link; returns the state before and the action.
    pub(crate) fn link_step(&self, ev: LinkEvent) -> (Link, LinkAction) {
        self.with(|s| {
            let before = s.link;
            let (next, action) = before.step(ev);
            s.link = next;
            (before, action)
        })
    }

    /// The node's link now.
    pub(crate) fn link(&self) -> Link {
        self.with(|s| s.link)
    }

    /// Healthy: registered with its websocket up.
    pub(crate) fn is_up(&self) -> bool {
        self.link().is_up()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{NodeId, RoomKey};
    use crate::store::TokenGrant;

    fn chan(id: &str) -> ChannelId {
        ChannelId::new(id).unwrap()
    }

    fn record() -> TokenRecord {
        TokenRecord {
            grant: TokenGrant {
                room: RoomKey::parse("conference", "sales").unwrap(),
                from: NodeId::new("a").unwrap(),
                to: NodeId::new("b").unwrap(),
                channel: chan("c1"),
                caller: String::new(),
                hops: 1,
                agent: None,
            },
            minted_ms: 0,
            expires_ms: 1,
        }
    }

    fn room() -> RoomKey {
        RoomKey::parse("conference", "sales").unwrap()
    }

    #[test]
    fn a_bridge_a_join_used_after_the_listing_is_not_destroyed() {
        let mut s = NodeState::new();
        let listed = Instant::now();
        assert!(!s.bridge_in_use_since("b", listed), "never used");
        s.bridge_join_started("b");
        assert!(s.bridge_in_use_since("b", listed), "a join in flight");
        s.bridge_join_ended("b");
        assert!(
            s.bridge_in_use_since("b", listed),
            "joined after the listing"
        );
        let later = Instant::now() + std::time::Duration::from_millis(1);
        assert!(
            !s.bridge_in_use_since("b", later),
            "idle since before a later listing"
        );
        s.forget_bridge_use(later);
        assert!(s.bridge_use.is_empty());
        // In flight across the listing: kept, and not forgotten.
        s.bridge_join_started("c");
        s.forget_bridge_use(later);
        assert!(s.bridge_in_use_since("c", later));
    }

    #[test]
    fn every_link_transition() {
        use Link::*;
        use LinkAction as A;
        use LinkEvent::*;
        let all = [Connecting, Registering, Unregistered, Up, PingDown, Down];
        for s in all {
            assert_eq!(s.step(SocketUp), (Registering, A::Register), "{s:?}");
            assert_eq!(s.step(SessionEnded), (Connecting, A::None), "{s:?}");
        }
        assert_eq!(Up.step(SocketLost), (Down, A::MarkDown));
        assert_eq!(PingDown.step(SocketLost), (Down, A::None));
        assert_eq!(Down.step(SocketLost), (Down, A::None));
        for s in [Connecting, Registering, Unregistered] {
            assert_eq!(s.step(SocketLost), (Connecting, A::None), "{s:?}");
        }
        assert_eq!(Registering.step(Registered), (Up, A::None));
        assert_eq!(Registering.step(RegisterFailed), (Unregistered, A::None));
        assert_eq!(Up.step(PingsFailed), (PingDown, A::MarkDown));
        assert_eq!(PingDown.step(PingAnswered), (Registering, A::Register));
        assert_eq!(Unregistered.step(PingAnswered), (Registering, A::Register));
        assert_eq!(Up.step(Forgotten), (Registering, A::Register));
        for s in [Connecting, Registering, Unregistered, PingDown, Down] {
            assert_eq!(s.step(Forgotten), (s, A::None), "{s:?}");
        }
        // Everything else changes nothing.
        for (s, e) in [
            (Up, PingAnswered),
            (Up, Registered),
            (Connecting, Registered),
            (Down, Registered),
            (PingDown, PingsFailed),
            (Down, PingsFailed),
            (Connecting, PingAnswered),
            (Down, PingAnswered),
            (Registering, PingAnswered),
            (Up, RegisterFailed),
        ] {
            assert_eq!(s.step(e), (s, A::None), "{s:?} {e:?}");
        }
        assert!(Up.is_up() && !PingDown.is_up());
        assert!(PingDown.is_streaming() && Registering.is_streaming());
        assert!(!Down.is_streaming() && !Connecting.is_streaming());
    }

    #[test]
    fn a_channel_is_placed_once_and_keeps_its_token_for_a_retry() {
        let mut s = NodeState::new();
        let c = chan("c1");
        assert_eq!(s.begin_placing(&c), Begin::Place { held: None });
        assert_eq!(s.begin_placing(&c), Begin::Handled);
        s.hold_token(&c, record());
        assert_eq!(s.held_token(&c), Some(record()));
        s.end_placing(&c);
        assert_eq!(
            s.channels.get(&c),
            Some(&ChannelState::TokenHeld {
                record: record(),
                seen: false
            })
        );
        assert_eq!(
            s.begin_placing(&c),
            Begin::Place {
                held: Some(record())
            }
        );
        s.joined(
            &c,
            Membership {
                room: room(),
                recorded: true,
            },
        );
        s.end_placing(&c);
        assert_eq!(s.begin_placing(&c), Begin::Handled);
        assert_eq!(s.held_token(&c), None);
    }

    #[test]
    fn a_placement_that_ends_in_no_bridge_is_forgotten() {
        let mut s = NodeState::new();
        let c = chan("c1");
        s.channels.insert(c.clone(), ChannelState::Suspect);
        assert_eq!(s.begin_placing(&c), Begin::Place { held: None });
        s.end_placing(&c);
        assert!(s.channels.is_empty());
    }

    #[test]
    fn leave_forgets_everything_and_returns_the_room() {
        let mut s = NodeState::new();
        let c = chan("c1");
        let m = Membership {
            room: room(),
            recorded: true,
        };
        s.joined(&c, m.clone());
        // A later unrecorded sighting does not lose the member.
        s.joined(
            &c,
            Membership {
                room: room(),
                recorded: false,
            },
        );
        s.redirected(&c, TokenId::new("T0k").unwrap(), Instant::now());
        assert!(matches!(s.begin_placing(&c), Begin::Handled));
        assert_eq!(s.leave(&c), Some(m));
        assert!(s.channels.is_empty());
        assert_eq!(s.leave(&c), None);
        s.hold_token(&c, record());
        assert_eq!(s.leave(&c), None);
        assert!(s.channels.is_empty());
    }

    #[test]
    fn a_resync_follows_only_channels_no_work_decides() {
        let mut s = NodeState::new();
        let m = Membership {
            room: room(),
            recorded: true,
        };
        s.begin_placing(&chan("p"));
        s.redirected(&chan("r"), TokenId::new("T").unwrap(), Instant::now());
        s.channels.insert(chan("s"), ChannelState::Suspect);
        for c in ["p", "r", "s", "new"] {
            s.follow(&chan(c), m.clone());
        }
        assert_eq!(s.channels[&chan("p")], ChannelState::Placing { held: None });
        assert!(s.is_moving(&chan("r")));
        assert_eq!(s.channels[&chan("s")], ChannelState::Joined(m.clone()));
        assert_eq!(s.channels[&chan("new")], ChannelState::Joined(m));
    }

    #[test]
    fn sightings_mark_and_clear() {
        let mut s = NodeState::new();
        s.sighted(&chan("a"));
        assert_eq!(s.channels[&chan("a")], ChannelState::Suspect);
        s.unsighted(&chan("a"));
        assert!(s.channels.is_empty());
        s.hold_token(&chan("t"), record());
        s.end_placing(&chan("t"));
        s.sighted(&chan("t"));
        assert!(matches!(
            s.channels[&chan("t")],
            ChannelState::TokenHeld { seen: true, .. }
        ));
        s.unsighted(&chan("t"));
        assert!(matches!(
            s.channels[&chan("t")],
            ChannelState::TokenHeld { seen: false, .. }
        ));
        s.begin_placing(&chan("p"));
        s.sighted(&chan("p"));
        s.unsighted(&chan("p"));
        assert_eq!(s.channels[&chan("p")], ChannelState::Placing { held: None });
    }

    #[test]
    fn a_new_incarnation_forgets_calls_but_not_placements_in_flight() {
        let mut s = NodeState::new();
        s.bridges.insert("b".into());
        s.joined(
            &chan("j"),
            Membership {
                room: room(),
                recorded: true,
            },
        );
        s.channels.insert(chan("s"), ChannelState::Suspect);
        s.begin_placing(&chan("p"));
        s.forget_calls();
        assert!(s.bridges.is_empty());
        assert_eq!(s.channels.len(), 1);
        assert!(s.channels.contains_key(&chan("p")));
    }
}
