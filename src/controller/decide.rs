//! The controller's decisions, as pure functions: facts in, a decision out
//! as a value. No I/O, no clock, no lock: [`super::exec`] gathers the facts
//! (ARI, the store), calls these, and carries the decision out.
//!
//! # The call path
//! A `StasisStart` is read into an [`Arrival`] ([`parse_arrival`]), which
//! [`admit`] turns into the first piece of work: place a call, consume a
//! token, follow a static member's leg, or hand the call back to the
//! dialplan. A token's answer goes through [`after_token`]. Placing a call
//! is [`place`]: the owner decision (the store's, see [`super::owner`])
//! and the hop count give [`Step::JoinHere`], [`Step::Redirect`] with the
//! next hop, [`Step::JoinSplit`] past the hop limit, or
//! [`Step::Degraded`] with its reason. A redirect that fails goes through
//! [`after_move_failed`].
//!
//! # The resync
//! A snapshot of the node (`GET /bridges`, `GET /channels`) and what the
//! store says of the rooms in it become fixes: members to record
//! ([`bridged_fixes`]), splits to heal and announce ([`split_changes`]),
//! stale bridges to destroy ([`stale_bridges`]), calls left unplaced to
//! place on their second sighting ([`unhandled_fixes`]), and joined calls
//! missing from the snapshot to check ([`missing`]).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::channel::{ChannelState, Membership};
use crate::ari::rest::{Bridge, Channel};
use crate::domain::{
    AgentId, ChannelId, Epoch, Incarnation, NodeId, NodeRecord, NodeState, Role, RoomKey, RoomKind,
    RoomName, TokenId,
};
use crate::names::{BridgeNames, BridgeOf};
use crate::queue::{QueueRole, QueueState};
use crate::store::{Consumed, TokenGrant};

// ---- the call path ------------------------------------------------------

/// What a `StasisStart`'s arguments ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// `conference,<room>` or `queue,<name>`: a call for a room.
    Room(RoomKey, Role),
    /// `agent,<queue>,<agent>`: an agent logging in to a queue.
    Agent(RoomKey, AgentId),
    /// `member,<queue>,<agent>`: a static member's leg corral originated,
    /// answered.
    Member(RoomName, AgentId),
    /// No arguments and an alphanumeric extension: a token arriving.
    Token(TokenId),
    /// Anything else: not for corral's call path.
    Odd(String),
}

/// Reads the arguments of `Stasis(<app>,<args>)` and the channel's
/// extension.
pub fn parse_arrival(args: &[String], exten: &str) -> Arrival {
    let odd = |why: &str| {
        Arrival::Odd(format!(
            "{why}: args {:?}",
            args.iter().take(4).collect::<Vec<_>>()
        ))
    };
    match args {
        [] => match TokenId::new(exten) {
            Ok(t) => Arrival::Token(t),
            Err(_) => Arrival::Odd(format!(
                "no arguments and extension {:?} is not a token",
                exten.chars().take(64).collect::<String>()
            )),
        },
        [kind, name] if kind == "conference" => match RoomName::new(name.as_str()) {
            Ok(n) => Arrival::Room(RoomKey::new(RoomKind::Conference, n), Role::Participant),
            Err(e) => odd(&e.to_string()),
        },
        [kind, name] if kind == "queue" => match RoomName::new(name.as_str()) {
            Ok(n) => Arrival::Room(RoomKey::new(RoomKind::Queue, n), Role::Caller),
            Err(e) => odd(&e.to_string()),
        },
        [kind, queue, agent] if kind == "agent" => {
            match (RoomName::new(queue.as_str()), AgentId::new(agent.as_str())) {
                (Ok(q), Ok(a)) => Arrival::Agent(RoomKey::new(RoomKind::Queue, q), a),
                (Err(e), _) | (_, Err(e)) => odd(&e.to_string()),
            }
        }
        [kind, queue, agent] if kind == "member" => {
            match (RoomName::new(queue.as_str()), AgentId::new(agent.as_str())) {
                (Ok(q), Ok(a)) => Arrival::Member(q, a),
                (Err(e), _) | (_, Err(e)) => odd(&e.to_string()),
            }
        }
        _ => odd("unknown arguments"),
    }
}

/// Who joins a room: its role, and the agent id of a queue agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Who {
    /// A conference participant.
    Participant,
    /// A queue caller.
    Caller,
    /// A queue agent logging in.
    Agent(AgentId),
}

impl Who {
    /// The member role it is recorded with.
    pub(crate) fn role(&self) -> Role {
        match self {
            Who::Participant => Role::Participant,
            Who::Caller => Role::Caller,
            Who::Agent(_) => Role::Agent,
        }
    }

    /// Who a token's call is, from its grant.
    fn of_grant(grant: &TokenGrant) -> Who {
        match (grant.room.kind, grant.agent.clone()) {
            (RoomKind::Conference, _) => Who::Participant,
            (RoomKind::Queue, Some(a)) => Who::Agent(a),
            (RoomKind::Queue, None) => Who::Caller,
        }
    }

    /// The agent id of an agent.
    pub(crate) fn agent(&self) -> Option<&AgentId> {
        match self {
            Who::Agent(a) => Some(a),
            _ => None,
        }
    }
}

/// How a call reached its room's node (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum How {
    /// It landed there.
    Direct,
    /// It was redirected there with a token.
    Token,
}

/// A call to place: its room, who it is, and the redirects it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placing {
    /// The room.
    pub(crate) room: RoomKey,
    /// Its role.
    pub(crate) who: Who,
    /// Redirects taken so far.
    pub(crate) hops: u32,
    /// How it got here.
    pub(crate) how: How,
}

/// Why a call joined where it landed without a placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DegradedReason {
    /// The store did not answer.
    StoreUnavailable,
    /// No node may take a new room (all down, draining or full).
    NoEligibleNode,
    /// The store named an owner that is not a configured node.
    UnknownOwner,
    /// ARI refused the redirect for a reason other than the call being gone.
    RedirectFailed,
    /// The owner failed a health check (paused, hung): not sent there.
    OwnerSuspect,
}

impl DegradedReason {
    /// The metric label (`corral_degraded_total{reason}`).
    pub fn as_str(self) -> &'static str {
        match self {
            DegradedReason::StoreUnavailable => "store_unavailable",
            DegradedReason::NoEligibleNode => "no_eligible_node",
            DegradedReason::UnknownOwner => "unknown_owner",
            DegradedReason::RedirectFailed => "redirect_failed",
            DegradedReason::OwnerSuspect => "owner_suspect",
        }
    }
}

/// Why a call goes back to the dialplan (`continue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HandBack {
    /// Its arguments make no sense to corral.
    OddArguments(String),
    /// Its token is not one corral minted (or it was used already).
    UnknownToken,
    /// The store could not check its token.
    TokenUnchecked,
}

/// The first piece of work for an arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Place a call for a room.
    Place(Placing),
    /// A static member's leg answered: the queue engine pairs it.
    MemberAnswered(RoomName, AgentId),
    /// Consume this token (or use the one the channel holds already).
    ConsumeToken(TokenId),
    /// Give the call back to the dialplan.
    HandBack(HandBack),
}

/// An arrival's first piece of work.
pub(crate) fn admit(arrival: Arrival) -> Admit {
    match arrival {
        Arrival::Room(room, role) => Admit::Place(Placing {
            room,
            who: if role == Role::Caller {
                Who::Caller
            } else {
                Who::Participant
            },
            hops: 0,
            how: How::Direct,
        }),
        Arrival::Agent(room, agent) => Admit::Place(Placing {
            room,
            who: Who::Agent(agent),
            hops: 0,
            how: How::Direct,
        }),
        Arrival::Member(queue, agent) => Admit::MemberAnswered(queue, agent),
        Arrival::Token(t) => Admit::ConsumeToken(t),
        Arrival::Odd(why) => Admit::HandBack(HandBack::OddArguments(why)),
    }
}

/// What a token's consumption leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AfterToken {
    /// Consumed here: join (its room was placed here when it was minted;
    /// the member record confirms it).
    Join(Placing),
    /// Minted for another node, or expired: place it again, hops kept.
    Replace(Placing),
    /// The store is down but this replica minted the token: join its room
    /// where the call is, unrecorded (degraded), like any call that
    /// arrives while the store is down.
    Degraded(Placing),
    /// Not corral's, or not checkable: back to the dialplan.
    HandBack(HandBack),
}

/// What is known of an arriving token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenAnswer<'a> {
    /// The store's answer.
    Store(&'a Consumed),
    /// The store did not answer; this replica minted it (its grant).
    Local(&'a TokenGrant),
    /// The store did not answer within the wait, and this replica did not
    /// mint it.
    Unchecked,
}

/// What a token arrival leads to.
pub(crate) fn after_token(answer: TokenAnswer<'_>) -> AfterToken {
    let placing = |grant: &TokenGrant| Placing {
        room: grant.room.clone(),
        who: Who::of_grant(grant),
        hops: grant.hops,
        how: How::Token,
    };
    match answer {
        TokenAnswer::Store(Consumed::Ok(rec)) => AfterToken::Join(placing(&rec.grant)),
        TokenAnswer::Store(Consumed::WrongNode(rec) | Consumed::Expired(rec)) => {
            AfterToken::Replace(placing(&rec.grant))
        }
        TokenAnswer::Store(Consumed::Unknown) => AfterToken::HandBack(HandBack::UnknownToken),
        TokenAnswer::Local(grant) => AfterToken::Degraded(placing(grant)),
        TokenAnswer::Unchecked => AfterToken::HandBack(HandBack::TokenUnchecked),
    }
}

/// What a token arrival does while the store does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreSilent {
    /// This replica minted it: use its grant.
    UseLocal,
    /// Wait in Stasis, still ringing, and ask the store again.
    Wait,
    /// Waited `token_store_wait` already: give up.
    GiveUp,
}

/// A token arrival the store did not answer: its grant if this replica
/// minted it (`known_here`), else a wait, bounded by `bound`.
pub(crate) fn token_store_silent(
    known_here: bool,
    waited: Duration,
    bound: Duration,
) -> StoreSilent {
    if known_here {
        StoreSilent::UseLocal
    } else if waited < bound {
        StoreSilent::Wait
    } else {
        StoreSilent::GiveUp
    }
}

/// The owner decision, as far as the call path needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnerFact<'a> {
    /// The room lives on this node.
    Node(&'a NodeId),
    /// No node may take the room.
    NoEligibleNode,
    /// The store did not answer.
    StoreUnavailable,
}

/// The facts a placement is decided on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlaceFacts<'a> {
    /// Where the call is.
    pub(crate) landing: &'a NodeId,
    /// The room's owner, per the store.
    pub(crate) owner: OwnerFact<'a>,
    /// Redirects the call took so far.
    pub(crate) hops: u32,
    /// Redirects a call may take.
    pub(crate) hop_limit: u32,
    /// The owner is a configured node (its SIP host is known).
    pub(crate) owner_known: bool,
    /// The owner failed a health check and has not answered since (a
    /// paused or hung node): a call sent there would wait in its socket.
    pub(crate) owner_suspect: bool,
}

/// What to do with a call now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Record the member here, answer and bridge.
    JoinHere,
    /// Mint a token for `to` and redirect the ringing call there; the
    /// token carries `hops`.
    Redirect {
        /// The owner.
        to: NodeId,
        /// The hop count the token carries.
        hops: u32,
    },
    /// Past the hop limit: join where it is, unrecorded; a split the resync
    /// heals.
    JoinSplit {
        /// The owner the call should have reached.
        owner: NodeId,
    },
    /// Join where it is, unrecorded, counted.
    Degraded(DegradedReason),
    /// The call is gone: nothing to do.
    Gone,
}

/// Decides a placement from its facts.
pub(crate) fn place(f: &PlaceFacts<'_>) -> Step {
    match f.owner {
        OwnerFact::StoreUnavailable => Step::Degraded(DegradedReason::StoreUnavailable),
        OwnerFact::NoEligibleNode => Step::Degraded(DegradedReason::NoEligibleNode),
        OwnerFact::Node(owner) if owner == f.landing => Step::JoinHere,
        // When in doubt, join where the call is: the resync heals the
        // split once the owner answers again or is marked down.
        OwnerFact::Node(_) if f.owner_suspect => Step::Degraded(DegradedReason::OwnerSuspect),
        OwnerFact::Node(owner) if f.hops >= f.hop_limit => Step::JoinSplit {
            owner: owner.clone(),
        },
        OwnerFact::Node(_) if !f.owner_known => Step::Degraded(DegradedReason::UnknownOwner),
        OwnerFact::Node(owner) => Step::Redirect {
            to: owner.clone(),
            hops: f.hops + 1,
        },
    }
}

/// Why a move (mint a token, redirect) failed, as the call path sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MoveFailure {
    /// No token: the store did not answer.
    StoreUnavailable,
    /// ARI says the call is gone or left the app (404, 409).
    CallGone,
    /// ARI refused the redirect for another reason, or did not answer.
    Refused,
}

/// What a failed move leads to: a call that is still there joins where it
/// is (degraded); a gone one needs nothing.
pub(crate) fn after_move_failed(failure: MoveFailure) -> Step {
    match failure {
        MoveFailure::StoreUnavailable => Step::Degraded(DegradedReason::StoreUnavailable),
        MoveFailure::CallGone => Step::Gone,
        MoveFailure::Refused => Step::Degraded(DegradedReason::RedirectFailed),
    }
}

/// What ARI said when a call could not be answered and bridged on its
/// room's node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinError {
    /// 409 or 422: the call left the app (its `StasisEnd` follows).
    LeftApp,
    /// `GET /channels/{id}` answered 404: the call is gone.
    Gone,
    /// Anything else (a 5xx past the retries, no answer): the call may well
    /// be there, still ringing.
    Unknown,
}

/// What a failed join leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterJoinFailed {
    /// The call is not ours any more: undo its member record.
    Undo,
    /// Try the join again after a pause.
    Retry,
    /// Leave it, member record and consumed token kept: the resync retries
    /// it (a call in the app, in no bridge, seen twice).
    LeaveToResync,
}

/// A failed join: a call is gone only when ARI says 404 for it; one that
/// may be there is tried again (`retries_left`), then left to the resync,
/// never forgotten (its consumed token is its only way in).
pub(crate) fn after_join_failed(err: JoinError, retries_left: bool) -> AfterJoinFailed {
    match err {
        JoinError::LeftApp | JoinError::Gone => AfterJoinFailed::Undo,
        JoinError::Unknown if retries_left => AfterJoinFailed::Retry,
        JoinError::Unknown => AfterJoinFailed::LeaveToResync,
    }
}

// ---- the store's memory of the nodes -----------------------------------

/// Nodes whose link was up here before and after the store listed its
/// nodes (`up`), that the list does not have as up: the store lost them
/// (Redis restarted empty, or failed over to a replica that had not seen
/// them). Each is registered again, which claims its rooms back from ARI.
pub(crate) fn forgotten(up: &[NodeId], records: &[NodeRecord]) -> Vec<NodeId> {
    up.iter()
        .filter(|id| {
            !records
                .iter()
                .any(|r| &r.id == *id && r.state != crate::domain::NodeState::Down)
        })
        .cloned()
        .collect()
}

/// How a node's suspect mark changes after a health ping (`answered`, the
/// failures in a row now, the mark now): set at the first failure, so the
/// node takes no new room from then on (a hung node must stop taking rooms
/// within seconds); cleared by an answer. Its rooms go only when it is
/// marked down (`down_after_failures` in a row).
pub(crate) fn suspect_after_ping(answered: bool, failures: u32, suspect: bool) -> Option<bool> {
    match (answered, suspect) {
        (true, true) => Some(false),
        (false, false) if failures >= 1 => Some(true),
        _ => None,
    }
}

/// Whether a registration met a restarted Asterisk: the store says the
/// incarnation is new (`store_says_new`) and it is not the one this
/// replica registered last (`known`). A store that lost its records says
/// "new" for a node that only kept running: its calls are still there.
pub(crate) fn restarted(
    known: Option<&Incarnation>,
    now: &Incarnation,
    store_says_new: bool,
) -> bool {
    store_says_new && known != Some(now)
}

// ---- route ahead ----------------------------------------------------------

/// The longest extension a channel keeps (`AST_MAX_EXTENSION - 1`):
/// chan_pjsip cuts a longer request URI user part, so corral has no
/// opinion on one.
pub const MAX_EXTEN: usize = 79;

/// The room a call whose request URI user part is `user` is for, read the
/// way the shipped dialplan (`deploy/asterisk/extensions.conf`) reads it:
/// `conf-<room>`, `queue-<name>`, `agent-<queue>-<agent>` (the agent id is
/// the part after the last `-`), then the arguments checked as a
/// `StasisStart`'s are ([`parse_arrival`]). Anything else, a token among
/// them, is no room's call: `None`.
pub fn route_target(user: &str) -> Option<RoomKey> {
    if user.len() > MAX_EXTEN {
        return None;
    }
    // Asterisk skips `-` in a dialled string when it matches a pattern:
    // `_co[n]f-.` needs a character other than `-` after `conf`.
    let only_dashes = |rest: &str| rest.bytes().all(|b| b == b'-');
    let args: Vec<&str> = if let Some(room) = user.strip_prefix("conf-") {
        vec!["conference", room]
    } else if let Some(name) = user.strip_prefix("queue-") {
        vec!["queue", name]
    } else if let Some(rest) = user.strip_prefix("agent-") {
        let (queue, agent) = rest.rsplit_once('-')?;
        vec!["agent", queue, agent]
    } else {
        return None;
    };
    if args.iter().skip(1).all(|a| only_dashes(a)) {
        return None;
    }
    let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
    match parse_arrival(&args, user) {
        Arrival::Room(room, _) | Arrival::Agent(room, _) => Some(room),
        _ => None,
    }
}

/// What corral tells the proxy before it dispatches a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAnswer {
    /// Send the call to this node: its room lives there.
    Node(NodeId),
    /// Dispatch as usual (round-robin); a call that lands away from its
    /// room is redirected as ever.
    NoOpinion(NoOpinion),
}

/// Why corral has no opinion about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoOpinion {
    /// The user part is no room's call (a token, anything the dialplan
    /// does not place).
    NotARoom,
    /// The proxy named a landing node that is not configured.
    UnknownLanding,
    /// Route-ahead is switched off (`api.route_ahead = false`).
    Disabled,
    /// A new room, and no node may take it (all down, draining or full).
    NoEligibleNode,
    /// The store did not answer.
    StoreUnavailable,
    /// The room lives on a draining node: running rooms keep their
    /// joiners, by redirect, but the proxy is never sent to one.
    OwnerDraining,
    /// The room's node is down.
    OwnerDown,
    /// The room's node failed a health check and has not answered since
    /// (paused, hung): a call sent there would wait in its socket.
    OwnerSuspect,
    /// The owner is not a node corral knows the state of.
    UnknownOwner,
}

impl NoOpinion {
    /// The reason as the API and the metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            NoOpinion::NotARoom => "not_a_room",
            NoOpinion::UnknownLanding => "unknown_landing",
            NoOpinion::Disabled => "disabled",
            NoOpinion::NoEligibleNode => "no_eligible_node",
            NoOpinion::StoreUnavailable => "store_unavailable",
            NoOpinion::OwnerDraining => "owner_draining",
            NoOpinion::OwnerDown => "owner_down",
            NoOpinion::OwnerSuspect => "owner_suspect",
            NoOpinion::UnknownOwner => "unknown_owner",
        }
    }
}

/// The answer for a room, from the owner decision (the same one a
/// `StasisStart` makes) and the owner's state: only an up node is ever
/// named, and not while it is suspect (`owner_suspect`).
pub(crate) fn route(
    owner: OwnerFact<'_>,
    owner_state: Option<NodeState>,
    owner_suspect: bool,
) -> RouteAnswer {
    match (owner, owner_state) {
        (OwnerFact::StoreUnavailable, _) => RouteAnswer::NoOpinion(NoOpinion::StoreUnavailable),
        (OwnerFact::NoEligibleNode, _) => RouteAnswer::NoOpinion(NoOpinion::NoEligibleNode),
        (OwnerFact::Node(_), Some(NodeState::Up)) if owner_suspect => {
            RouteAnswer::NoOpinion(NoOpinion::OwnerSuspect)
        }
        (OwnerFact::Node(node), Some(NodeState::Up)) => RouteAnswer::Node(node.clone()),
        (OwnerFact::Node(_), Some(NodeState::Draining)) => {
            RouteAnswer::NoOpinion(NoOpinion::OwnerDraining)
        }
        (OwnerFact::Node(_), Some(NodeState::Down)) => RouteAnswer::NoOpinion(NoOpinion::OwnerDown),
        (OwnerFact::Node(_), None) => RouteAnswer::NoOpinion(NoOpinion::UnknownOwner),
    }
}

#[cfg(test)]
mod route_tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    fn room(kind: &str, name: &str) -> Option<RoomKey> {
        Some(RoomKey::parse(kind, name).unwrap())
    }

    #[test]
    fn user_parts_are_read_as_the_dialplan_reads_them() {
        for (user, want) in [
            ("conf-sales", room("conference", "sales")),
            ("conf-a-b", room("conference", "a-b")),
            ("conf--x", room("conference", "-x")),
            ("queue-help", room("queue", "help")),
            ("queue-my_q", room("queue", "my_q")),
            ("agent-help-a1", room("queue", "help")),
            ("agent-my-q-a1", room("queue", "my-q")),
            ("agent-q--a", room("queue", "q-")),
            // No room: the dialplan hands these back or never places them.
            ("conf-", None),
            ("conf", None),
            ("CONF-sales", None),
            ("Conf-sales", None),
            ("conf-a b", None),
            ("conf-a,b", None),
            ("conf-a;b", None),
            ("conf-%41", None),
            ("conf-é", None),
            ("queue-", None),
            ("conf--", None),
            ("queue---", None),
            ("agent---", None),
            ("agent-help", None),
            ("agent-help-", None),
            ("agent--a1", None),
            ("agent-a-b-c,d", None),
            ("Zz0123456789abcdefghij", None),
            ("", None),
            ("s", None),
            ("co-nf-sales", None),
        ] {
            assert_eq!(route_target(user), want, "{user:?}");
        }
        // 64 characters is the longest room name; the whole user part
        // must also fit in an extension.
        let long = format!("conf-{}", "a".repeat(64));
        assert_eq!(route_target(&long), room("conference", &"a".repeat(64)));
        assert_eq!(route_target(&format!("conf-{}", "a".repeat(65))), None);
        let agent = format!("agent-{}-{}", "q".repeat(40), "a".repeat(40));
        assert!(agent.len() > MAX_EXTEN);
        assert_eq!(route_target(&agent), None, "cut by chan_pjsip");
    }

    /// What the shipped dialplan makes of `user`: the room its
    /// `StasisStart` would be placed in, if any.
    fn dialplan_room(dp: &crate::sim::Dialplan, user: &str) -> Option<RoomKey> {
        let entry = dp.stasis_entry(user)?;
        match parse_arrival(&entry.args, &entry.exten) {
            Arrival::Room(room, _) | Arrival::Agent(room, _) => Some(room),
            _ => None,
        }
    }

    /// The route reads every user part as the shipped dialplan (run by the
    /// simulator with Asterisk 22's rules) and the call path do: a table,
    /// then seeded random strings over the characters that matter. Past
    /// an extension's length corral only ever says less (no opinion).
    #[test]
    fn the_route_and_the_shipped_dialplan_agree() {
        let dp = crate::sim::Dialplan::shipped();
        let mut users: Vec<String> = [
            "conf-sales",
            "conf-a-b",
            "conf--",
            "conf-",
            "confx-sales",
            "co-nf-sales",
            "queue-q",
            "queue--",
            "queuex",
            "agent-q-a",
            "agent-q-",
            "agent--a",
            "agent-q",
            "agent-q-a-b",
            "agent-q--a",
            "age-nt-q-a",
            "Zz0123456789abcdefghij",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let prefixes = [
            "conf-", "queue-", "agent-", "conf", "agent-q-", "co-nf-", "",
        ];
        let alphabet: Vec<char> = "abqAZ09_-,;.%é ".chars().collect();
        for _ in 0..5000 {
            let mut u = prefixes[rng.random_range(0..prefixes.len())].to_string();
            for _ in 0..rng.random_range(0..12) {
                u.push(alphabet[rng.random_range(0..alphabet.len())]);
            }
            users.push(u);
        }
        for len in [60, 75, 79, 80, 90] {
            users.push(format!("conf-{}", "r".repeat(len - 5)));
            users.push(format!("agent-{}-a", "q".repeat(len - 8)));
        }
        let mut placed = 0;
        for user in &users {
            let dialplan = dialplan_room(&dp, user);
            let route = route_target(user);
            if user.len() <= MAX_EXTEN {
                assert_eq!(route, dialplan, "{user:?}");
            } else {
                assert!(route.is_none() || route == dialplan, "{user:?}: {route:?}");
            }
            placed += usize::from(route.is_some());
        }
        assert!(placed > 200, "only {placed} user parts named a room");
    }

    #[test]
    fn only_an_up_owner_is_named() {
        let x = NodeId::new("ast1").unwrap();
        assert_eq!(
            route(OwnerFact::Node(&x), Some(NodeState::Up), false),
            RouteAnswer::Node(x.clone())
        );
        assert_eq!(
            route(OwnerFact::Node(&x), Some(NodeState::Up), true),
            RouteAnswer::NoOpinion(NoOpinion::OwnerSuspect)
        );
        for (state, why) in [
            (Some(NodeState::Draining), NoOpinion::OwnerDraining),
            (Some(NodeState::Down), NoOpinion::OwnerDown),
            (None, NoOpinion::UnknownOwner),
        ] {
            assert_eq!(
                route(OwnerFact::Node(&x), state, false),
                RouteAnswer::NoOpinion(why)
            );
        }
        for state in [None, Some(NodeState::Up)] {
            assert_eq!(
                route(OwnerFact::NoEligibleNode, state, false),
                RouteAnswer::NoOpinion(NoOpinion::NoEligibleNode)
            );
            assert_eq!(
                route(OwnerFact::StoreUnavailable, state, false),
                RouteAnswer::NoOpinion(NoOpinion::StoreUnavailable)
            );
        }
        let names: std::collections::HashSet<&str> = [
            NoOpinion::NotARoom,
            NoOpinion::UnknownLanding,
            NoOpinion::Disabled,
            NoOpinion::NoEligibleNode,
            NoOpinion::StoreUnavailable,
            NoOpinion::OwnerDraining,
            NoOpinion::OwnerDown,
            NoOpinion::OwnerSuspect,
            NoOpinion::UnknownOwner,
        ]
        .iter()
        .map(|n| n.as_str())
        .collect();
        assert_eq!(names.len(), 9, "each reason has its own name");
    }
}

// ---- the resync ---------------------------------------------------------

/// Calls found in one of this app's bridges on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BridgedCalls {
    /// The bridge's room (and agent, for a pair bridge).
    pub(crate) of: BridgeOf,
    /// The bridge's id.
    pub(crate) bridge: String,
    /// The calls in it (ids ARI gave that are not valid ids are skipped).
    pub(crate) channels: Vec<ChannelId>,
}

/// Reads the app's bridges out of `GET /bridges`.
pub(crate) fn bridged_calls(bridges: &[Bridge], names: &BridgeNames) -> Vec<BridgedCalls> {
    bridges
        .iter()
        .filter_map(|b| {
            let of = names.parse_bridge_name(&b.name)?;
            Some(BridgedCalls {
                of,
                bridge: b.id.clone(),
                channels: b
                    .channels
                    .iter()
                    .filter_map(|c| ChannelId::new(c.as_str()).ok())
                    .collect(),
            })
        })
        .collect()
}

/// What the store says of one room found in the node's bridges.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoomFacts {
    /// Its placement (`None`: not placed, e.g. released while the node was
    /// down): owner and epoch.
    pub(crate) owner: Option<(NodeId, Epoch)>,
    /// The channels the store has as members on this node.
    pub(crate) members_here: HashSet<ChannelId>,
    /// A queue's state (`None` for a conference, or when unreadable).
    pub(crate) queue: Option<QueueState>,
}

/// A fix the resync makes for calls found in bridges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BridgedFix {
    /// Record `channel` as a member with `role` (claims an unowned room).
    Record {
        /// The room.
        room: RoomKey,
        /// The call.
        channel: ChannelId,
        /// Its role.
        role: Role,
    },
    /// Remember `channel` as in the room's bridge here (a member already,
    /// or a static member's leg that is never one).
    Follow {
        /// The call.
        channel: ChannelId,
        /// Its room here.
        membership: Membership,
    },
    /// The room lives on `owner`: move its calls bridged here there.
    Heal {
        /// The room.
        room: RoomKey,
        /// Its owner.
        owner: NodeId,
        /// The calls to move (a static member's leg is never moved).
        channels: Vec<ChannelId>,
    },
}

/// The role a call bridged in `of` is recorded with; `None` for a static
/// member's leg, which is never a member (it is the queue's, until its call
/// ends).
///
/// A conference's calls are participants. A queue's calls are what its
/// state says (waiting or talking callers, call-in agents, member legs); a
/// call the state does not know is a caller in the holding bridge and
/// nothing in a pair bridge.
pub(crate) fn role_in(of: &BridgeOf, queue: Option<&QueueState>, chan: &ChannelId) -> Option<Role> {
    if of.room().kind == RoomKind::Conference {
        return Some(Role::Participant);
    }
    match queue.and_then(|q| q.role_of(chan)) {
        Some(QueueRole::Caller) => Some(Role::Caller),
        Some(QueueRole::Agent) => Some(Role::Agent),
        Some(QueueRole::MemberLeg) => None,
        None if of.is_pair() => None,
        None => Some(Role::Caller),
    }
}

/// The fixes for the calls found in the node's bridges, from what the
/// store says of their rooms (`facts`; a room missing from it is skipped).
pub(crate) fn bridged_fixes(
    here: &NodeId,
    calls: &[BridgedCalls],
    facts: &HashMap<RoomKey, RoomFacts>,
) -> Vec<BridgedFix> {
    let mut fixes = Vec::new();
    let mut heal: Vec<(RoomKey, NodeId, Vec<ChannelId>)> = Vec::new();
    for b in calls {
        let room = b.of.room();
        let Some(f) = facts.get(room) else { continue };
        for chan in &b.channels {
            let role = role_in(&b.of, f.queue.as_ref(), chan);
            match (&f.owner, role) {
                (Some((owner, _)), Some(_)) if owner != here => {
                    match heal.iter_mut().find(|(r, _, _)| r == room) {
                        Some((_, _, chans)) => chans.push(chan.clone()),
                        None => heal.push((room.clone(), owner.clone(), vec![chan.clone()])),
                    }
                }
                (Some((owner, _)), None) if owner != here => {}
                (_, Some(_)) if f.members_here.contains(chan) => fixes.push(BridgedFix::Follow {
                    channel: chan.clone(),
                    membership: Membership {
                        room: room.clone(),
                        recorded: true,
                    },
                }),
                (_, Some(role)) => fixes.push(BridgedFix::Record {
                    room: room.clone(),
                    channel: chan.clone(),
                    role,
                }),
                (_, None) => fixes.push(BridgedFix::Follow {
                    channel: chan.clone(),
                    membership: Membership {
                        room: room.clone(),
                        recorded: false,
                    },
                }),
            }
        }
    }
    fixes.extend(
        heal.into_iter()
            .map(|(room, owner, channels)| BridgedFix::Heal {
                room,
                owner,
                channels,
            }),
    );
    fixes
}

/// A room's calls found here in bridges that are not the room's bridge now
/// (an earlier epoch's, after a blip released the room and the resync
/// claimed it again; or a degraded join's `-local` one): they move into the
/// room's bridge, a local `addChannel`, so a room's calls on one node are
/// always in one bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Merge {
    /// The room.
    pub(crate) room: RoomKey,
    /// Its epoch now: its bridge is `bridge_id(room, epoch)`.
    pub(crate) epoch: Epoch,
    /// The bridges the calls are in, with their calls.
    pub(crate) from: Vec<(String, Vec<ChannelId>)>,
    /// True when the room's calls here are in more than one bridge (a
    /// split, counted), false when they are all in one bridge of another
    /// epoch (the room's bridge now has nobody yet: only renamed).
    pub(crate) split: bool,
}

/// The merges for the calls found in the node's bridges, one per room, from
/// the rooms' owners as the resync left them (`facts`, updated by the
/// members it recorded). Only rooms owned here are merged (stray calls are
/// healed by moving them to their owner); a pair bridge is the queue
/// engine's; a room missing from `facts` is skipped (the store did not
/// answer).
pub(crate) fn merges(
    here: &NodeId,
    calls: &[BridgedCalls],
    facts: &HashMap<RoomKey, RoomFacts>,
    names: &BridgeNames,
) -> Vec<Merge> {
    let mut out: Vec<Merge> = Vec::new();
    let mut current_busy: HashSet<RoomKey> = HashSet::new();
    for b in calls.iter().filter(|b| !b.channels.is_empty()) {
        let BridgeOf::Room(room) = &b.of else {
            continue;
        };
        let Some((owner, epoch)) = facts.get(room).and_then(|f| f.owner.as_ref()) else {
            continue;
        };
        if owner != here {
            continue;
        }
        if names.bridge_id(room, Some(*epoch)).as_str() == b.bridge {
            current_busy.insert(room.clone());
            continue;
        }
        let from = (b.bridge.clone(), b.channels.clone());
        match out.iter_mut().find(|m| &m.room == room) {
            Some(m) => m.from.push(from),
            None => out.push(Merge {
                room: room.clone(),
                epoch: *epoch,
                from: vec![from],
                split: false,
            }),
        }
    }
    for m in &mut out {
        m.split = m.from.len() > 1 || current_busy.contains(&m.room);
    }
    out
}

/// How the node's splits change at this resync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SplitChanges {
    /// Rooms no longer split, and how long each split lasted.
    pub(crate) healed: Vec<(RoomKey, Duration)>,
    /// Rooms newly split, with their owner.
    pub(crate) detected: Vec<(RoomKey, NodeId)>,
}

/// Compares the splits known (`known`, since when) with the rooms found
/// split now (`stray`, room → owner).
pub(crate) fn split_changes(
    known: &HashMap<RoomKey, Instant>,
    stray: &HashMap<RoomKey, NodeId>,
    now: Instant,
) -> SplitChanges {
    let mut out = SplitChanges::default();
    for (room, since) in known {
        if !stray.contains_key(room) {
            out.healed
                .push((room.clone(), now.saturating_duration_since(*since)));
        }
    }
    for (room, owner) in stray {
        if !known.contains_key(room) {
            out.detected.push((room.clone(), owner.clone()));
        }
    }
    out.healed.sort_by(|a, b| a.0.cmp(&b.0));
    out.detected.sort();
    out
}

/// What a stray call's move needs at a resync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HealStep {
    /// Move it (first try, or its backoff after a failed one is over).
    Move,
    /// Its move is on its way (within `redirect_deadline`).
    OnItsWay,
    /// Its move is past the deadline: failed unless its token arrived (a
    /// refused REFER shows nothing on ARI; the token is the only proof).
    Overdue,
    /// A move of it failed: the next waits out its backoff.
    NotYet,
}

/// The step for a stray call: `moving_since` when a move is on its way,
/// `failures` (how many, the last when) of its earlier moves.
pub(crate) fn heal_step(
    moving_since: Option<Instant>,
    failures: Option<(u32, Instant)>,
    now: Instant,
    deadline: Duration,
) -> HealStep {
    match (moving_since, failures) {
        (Some(since), _) if now.saturating_duration_since(since) < deadline => HealStep::OnItsWay,
        (Some(_), _) => HealStep::Overdue,
        (None, Some((n, at))) if now.saturating_duration_since(at) < heal_backoff(n, deadline) => {
            HealStep::NotYet
        }
        (None, _) => HealStep::Move,
    }
}

/// The longest pause between two moves of one stray call.
pub(crate) const HEAL_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The pause after `failures` failed moves of a stray call: `base` (the
/// redirect deadline), doubling, at most [`HEAL_BACKOFF_MAX`].
pub(crate) fn heal_backoff(failures: u32, base: Duration) -> Duration {
    let doubled = base.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(HEAL_BACKOFF_MAX)
}

/// Empty bridges of this app's rooms that are not their room's bridge here
/// now (a healed split's local bridge, an earlier epoch's): destroy them.
/// A pair bridge is the queue engine's; a bridge with calls is never
/// touched; a room missing from `facts` is skipped (the store did not
/// answer).
pub(crate) fn stale_bridges(
    here: &NodeId,
    bridges: &[Bridge],
    facts: &HashMap<RoomKey, RoomFacts>,
    names: &BridgeNames,
) -> Vec<String> {
    bridges
        .iter()
        .filter(|b| b.channels.is_empty())
        .filter_map(|b| {
            let Some(BridgeOf::Room(room)) = names.parse_bridge_name(&b.name) else {
                return None;
            };
            let f = facts.get(&room)?;
            let current = match &f.owner {
                Some((node, epoch)) if node == here => Some(names.bridge_id(&room, Some(*epoch))),
                _ => None,
            };
            match current {
                Some(id) if id.as_str() == b.id => None,
                _ => Some(b.id.clone()),
            }
        })
        .collect()
}

/// A fix for a call in the app but in no bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UnhandledFix {
    /// First sighting: remember it (a `StasisStart` may merely be late).
    Suspect(ChannelId),
    /// Second sighting in a row: place it as if its `StasisStart` had just
    /// arrived, with these Stasis arguments.
    Place {
        /// The call (as ARI listed it; boxed: the other fixes are small).
        channel: Box<Channel>,
        /// Its Stasis arguments after the app name.
        args: Vec<String>,
    },
    /// Seen before but handled, bridged or gone now: forget the sighting.
    Clear(ChannelId),
}

/// The Stasis arguments of a channel in one of `apps` (`None`: in none).
fn stasis_args(ch: &Channel, apps: &[&str]) -> Option<Vec<String>> {
    if ch.dialplan.app_name.as_deref() != Some("Stasis") {
        return None;
    }
    let data = ch.dialplan.app_data.as_deref()?;
    let mut parts = data.split(',');
    if !parts
        .next()
        .is_some_and(|a| !a.is_empty() && apps.contains(&a))
    {
        return None;
    }
    Some(parts.map(str::to_string).collect())
}

/// Calls in one of `apps` (corral's, and its standby), ringing or
/// answered, in no bridge (`bridged`) and not handled (`states`): suspects
/// on first sighting, placed on the second. A sighting is forgotten when
/// the call is no longer unhandled.
pub(crate) fn unhandled_fixes(
    channels: &[Channel],
    bridged: &HashSet<ChannelId>,
    states: &HashMap<ChannelId, ChannelState>,
    apps: &[&str],
) -> Vec<UnhandledFix> {
    let mut fixes = Vec::new();
    let mut unhandled = HashSet::new();
    for ch in channels {
        let Ok(id) = ChannelId::new(ch.id.as_str()) else {
            continue;
        };
        let Some(args) = stasis_args(ch, apps) else {
            continue;
        };
        // Ringing: its StasisStart was lost. Answered but in no bridge: a
        // join that failed half-way (ARI errors past the retries).
        if !(ch.state == "Ring" || ch.state == "Up") || bridged.contains(&id) {
            continue;
        }
        let seen = match states.get(&id) {
            None => false,
            Some(ChannelState::Suspect) => true,
            Some(ChannelState::TokenHeld { seen, .. }) => *seen,
            Some(
                ChannelState::Placing { .. }
                | ChannelState::Redirected { .. }
                | ChannelState::Joined(_),
            ) => continue,
        };
        unhandled.insert(id.clone());
        fixes.push(if seen {
            UnhandledFix::Place {
                channel: Box::new(ch.clone()),
                args,
            }
        } else {
            UnhandledFix::Suspect(id)
        });
    }
    for (id, state) in states {
        let sighted = matches!(
            state,
            ChannelState::Suspect | ChannelState::TokenHeld { seen: true, .. }
        );
        if sighted && !unhandled.contains(id) {
            fixes.push(UnhandledFix::Clear(id.clone()));
        }
    }
    fixes
}

/// Joined calls absent from the snapshot (`live`): each is checked with
/// ARI (only a 404 proves it gone: the snapshot may predate its join).
pub(crate) fn missing(
    states: &HashMap<ChannelId, ChannelState>,
    live: &HashSet<ChannelId>,
) -> Vec<ChannelId> {
    let mut out: Vec<ChannelId> = states
        .iter()
        .filter(|(id, s)| matches!(s, ChannelState::Joined(_)) && !live.contains(*id))
        .map(|(id, _)| id.clone())
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ari::rest::Dialplan;
    use crate::queue::{Agent, AgentKind, AgentState, Caller};
    use crate::store::{TokenGrant, TokenRecord};

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }
    fn node(id: &str) -> NodeId {
        NodeId::new(id).unwrap()
    }
    fn chan(id: &str) -> ChannelId {
        ChannelId::new(id).unwrap()
    }
    fn conf(name: &str) -> RoomKey {
        RoomKey::parse("conference", name).unwrap()
    }
    fn queue(name: &str) -> RoomKey {
        RoomKey::parse("queue", name).unwrap()
    }
    fn agent(id: &str) -> AgentId {
        AgentId::new(id).unwrap()
    }

    #[test]
    fn arrivals_are_read_from_args_and_extension() {
        assert_eq!(
            parse_arrival(&s(&["conference", "sales"]), "conf-sales"),
            Arrival::Room(
                RoomKey::parse("conference", "sales").unwrap(),
                Role::Participant
            )
        );
        assert_eq!(
            parse_arrival(&s(&["queue", "support"]), "queue-support"),
            Arrival::Room(RoomKey::parse("queue", "support").unwrap(), Role::Caller)
        );
        assert!(matches!(
            parse_arrival(&s(&["agent", "support", "alice"]), "x"),
            Arrival::Agent(..)
        ));
        assert_eq!(
            parse_arrival(&[], "Ab12"),
            Arrival::Token(TokenId::new("Ab12").unwrap())
        );
        assert!(matches!(parse_arrival(&[], "a-b"), Arrival::Odd(_)));
        assert!(matches!(
            parse_arrival(&s(&["conference"]), "x"),
            Arrival::Odd(_)
        ));
        assert!(matches!(
            parse_arrival(&s(&["conference", "a:b"]), "x"),
            Arrival::Odd(_)
        ));
        assert!(matches!(
            parse_arrival(&s(&["party", "x"]), "x"),
            Arrival::Odd(_)
        ));
    }

    #[test]
    fn member_and_bad_agent_arrivals() {
        assert_eq!(
            parse_arrival(&s(&["member", "support", "alice"]), "x"),
            Arrival::Member(RoomName::new("support").unwrap(), agent("alice"))
        );
        for args in [
            ["member", "sup port", "alice"],
            ["member", "support", "al-ice"],
            ["agent", "support", "al-ice"],
            ["agent", "a:b", "alice"],
        ] {
            assert!(
                matches!(parse_arrival(&s(&args), "x"), Arrival::Odd(_)),
                "{args:?}"
            );
        }
        assert!(matches!(
            parse_arrival(&s(&["queue", "a b"]), "x"),
            Arrival::Odd(_)
        ));
    }

    #[test]
    fn every_arrival_is_admitted_to_its_work() {
        assert_eq!(
            admit(Arrival::Room(conf("sales"), Role::Participant)),
            Admit::Place(Placing {
                room: conf("sales"),
                who: Who::Participant,
                hops: 0,
                how: How::Direct
            })
        );
        assert_eq!(
            admit(Arrival::Room(queue("support"), Role::Caller)),
            Admit::Place(Placing {
                room: queue("support"),
                who: Who::Caller,
                hops: 0,
                how: How::Direct
            })
        );
        assert_eq!(
            admit(Arrival::Agent(queue("support"), agent("alice"))),
            Admit::Place(Placing {
                room: queue("support"),
                who: Who::Agent(agent("alice")),
                hops: 0,
                how: How::Direct
            })
        );
        let q = RoomName::new("support").unwrap();
        assert_eq!(
            admit(Arrival::Member(q.clone(), agent("bob"))),
            Admit::MemberAnswered(q, agent("bob"))
        );
        let t = TokenId::new("Tok").unwrap();
        assert_eq!(admit(Arrival::Token(t.clone())), Admit::ConsumeToken(t));
        assert_eq!(
            admit(Arrival::Odd("why".into())),
            Admit::HandBack(HandBack::OddArguments("why".into()))
        );
    }

    fn record(room: RoomKey, agent_id: Option<&str>, hops: u32) -> TokenRecord {
        TokenRecord {
            grant: TokenGrant {
                room,
                from: node("a"),
                to: node("b"),
                channel: chan("c"),
                caller: String::new(),
                hops,
                agent: agent_id.map(agent),
            },
            minted_ms: 0,
            expires_ms: 1,
        }
    }

    #[test]
    fn every_token_answer() {
        let r = record(conf("sales"), None, 1);
        let join = Placing {
            room: conf("sales"),
            who: Who::Participant,
            hops: 1,
            how: How::Token,
        };
        let store = |c: &Consumed| after_token(TokenAnswer::Store(c));
        assert_eq!(
            store(&Consumed::Ok(r.clone())),
            AfterToken::Join(join.clone())
        );
        assert_eq!(
            store(&Consumed::WrongNode(r.clone())),
            AfterToken::Replace(join.clone())
        );
        assert_eq!(
            store(&Consumed::Expired(r.clone())),
            AfterToken::Replace(join.clone())
        );
        assert_eq!(
            store(&Consumed::Unknown),
            AfterToken::HandBack(HandBack::UnknownToken)
        );
        assert_eq!(
            after_token(TokenAnswer::Local(&r.grant)),
            AfterToken::Degraded(join)
        );
        assert_eq!(
            after_token(TokenAnswer::Unchecked),
            AfterToken::HandBack(HandBack::TokenUnchecked)
        );
        // The grant says who the call is.
        let agent_call = record(queue("support"), Some("alice"), 2);
        let AfterToken::Join(p) = store(&Consumed::Ok(agent_call)) else {
            panic!("consumed")
        };
        assert_eq!((p.who, p.hops), (Who::Agent(agent("alice")), 2));
        let caller = record(queue("support"), None, 1);
        let AfterToken::Join(p) = store(&Consumed::Ok(caller)) else {
            panic!("consumed")
        };
        assert_eq!(p.who, Who::Caller);
    }

    #[test]
    fn a_token_the_store_does_not_check_waits_or_uses_the_local_grant() {
        let bound = Duration::from_secs(10);
        let (zero, later) = (Duration::ZERO, Duration::from_secs(3));
        assert_eq!(token_store_silent(true, zero, bound), StoreSilent::UseLocal);
        assert_eq!(
            token_store_silent(true, bound, bound),
            StoreSilent::UseLocal
        );
        assert_eq!(token_store_silent(false, zero, bound), StoreSilent::Wait);
        assert_eq!(token_store_silent(false, later, bound), StoreSilent::Wait);
        assert_eq!(token_store_silent(false, bound, bound), StoreSilent::GiveUp);
    }

    fn facts<'a>(landing: &'a NodeId, owner: OwnerFact<'a>, hops: u32) -> PlaceFacts<'a> {
        PlaceFacts {
            landing,
            owner,
            hops,
            hop_limit: 2,
            owner_known: true,
            owner_suspect: false,
        }
    }

    #[test]
    fn every_placement_branch() {
        let (x, y) = (node("x"), node("y"));
        assert_eq!(place(&facts(&x, OwnerFact::Node(&x), 0)), Step::JoinHere);
        // Owner here joins even past the hop limit.
        assert_eq!(place(&facts(&x, OwnerFact::Node(&x), 5)), Step::JoinHere);
        assert_eq!(
            place(&facts(&x, OwnerFact::Node(&y), 0)),
            Step::Redirect {
                to: y.clone(),
                hops: 1
            }
        );
        assert_eq!(
            place(&facts(&x, OwnerFact::Node(&y), 1)),
            Step::Redirect {
                to: y.clone(),
                hops: 2
            }
        );
        assert_eq!(
            place(&facts(&x, OwnerFact::Node(&y), 2)),
            Step::JoinSplit { owner: y.clone() }
        );
        // A suspect owner: join here, also past the hop limit; an owner
        // here joins here whatever its mark (its own health is not news to
        // its calls).
        for hops in [0, 2] {
            let mut hung = facts(&x, OwnerFact::Node(&y), hops);
            hung.owner_suspect = true;
            assert_eq!(place(&hung), Step::Degraded(DegradedReason::OwnerSuspect));
        }
        let mut here = facts(&x, OwnerFact::Node(&x), 0);
        here.owner_suspect = true;
        assert_eq!(place(&here), Step::JoinHere);
        let mut unknown = facts(&x, OwnerFact::Node(&y), 0);
        unknown.owner_known = false;
        assert_eq!(
            place(&unknown),
            Step::Degraded(DegradedReason::UnknownOwner)
        );
        assert_eq!(
            place(&facts(&x, OwnerFact::StoreUnavailable, 0)),
            Step::Degraded(DegradedReason::StoreUnavailable)
        );
        assert_eq!(
            place(&facts(&x, OwnerFact::NoEligibleNode, 0)),
            Step::Degraded(DegradedReason::NoEligibleNode)
        );
    }

    #[test]
    fn every_move_failure() {
        assert_eq!(
            after_move_failed(MoveFailure::StoreUnavailable),
            Step::Degraded(DegradedReason::StoreUnavailable)
        );
        assert_eq!(after_move_failed(MoveFailure::CallGone), Step::Gone);
        assert_eq!(
            after_move_failed(MoveFailure::Refused),
            Step::Degraded(DegradedReason::RedirectFailed)
        );
        for r in [
            DegradedReason::StoreUnavailable,
            DegradedReason::NoEligibleNode,
            DegradedReason::UnknownOwner,
            DegradedReason::RedirectFailed,
        ] {
            assert!(!r.as_str().is_empty());
        }
    }

    #[test]
    fn a_failed_join_is_undone_only_for_a_call_that_is_gone() {
        use AfterJoinFailed::*;
        for left in [true, false] {
            assert_eq!(after_join_failed(JoinError::Gone, left), Undo);
            assert_eq!(after_join_failed(JoinError::LeftApp, left), Undo);
        }
        assert_eq!(after_join_failed(JoinError::Unknown, true), Retry);
        assert_eq!(after_join_failed(JoinError::Unknown, false), LeaveToResync);
    }

    #[test]
    fn nodes_the_store_forgot_are_registered_again() {
        use crate::domain::NodeState;
        let rec = |id: &str, state| NodeRecord {
            id: node(id),
            state,
            healthy: state != NodeState::Down,
            draining: state == NodeState::Draining,
            suspect: false,
            incarnation: None,
            sip_host: String::new(),
            capacity: 1,
            max_rooms: None,
            channels: 0,
            rooms: 0,
            members: 0,
            updated_ms: 0,
        };
        let up = [node("a"), node("b"), node("c"), node("d")];
        let records = vec![
            rec("a", NodeState::Up),
            rec("b", NodeState::Draining),
            rec("c", NodeState::Down),
        ];
        // `d` is missing, `c` is down while its link is up here.
        assert_eq!(forgotten(&up, &records), vec![node("c"), node("d")]);
        assert!(forgotten(&[], &records).is_empty());
    }

    #[test]
    fn a_node_is_suspect_from_its_first_failed_ping_until_one_answers() {
        assert_eq!(suspect_after_ping(false, 1, false), Some(true));
        assert_eq!(suspect_after_ping(false, 2, true), None);
        assert_eq!(suspect_after_ping(true, 0, true), Some(false));
        assert_eq!(suspect_after_ping(true, 0, false), None);
        assert_eq!(suspect_after_ping(false, 0, false), None);
    }

    #[test]
    fn a_store_that_forgot_is_not_a_restarted_node() {
        let inc = |s: &str| Incarnation {
            asterisk_id: "e".into(),
            started: s.into(),
        };
        assert!(!restarted(Some(&inc("1")), &inc("1"), true), "store lost");
        assert!(restarted(Some(&inc("1")), &inc("2"), true), "restarted");
        assert!(restarted(None, &inc("1"), true), "first seen");
        assert!(!restarted(None, &inc("1"), false));
        assert!(!restarted(Some(&inc("1")), &inc("2"), false));
    }

    fn bridge(id: &str, name: &str, chans: &[&str]) -> Bridge {
        Bridge {
            id: id.into(),
            bridge_type: String::new(),
            bridge_class: String::new(),
            name: name.into(),
            channels: s(chans),
        }
    }

    /// A queue with caller `c1` waiting, call-in agent `alice` on `a1`,
    /// and static member `bob` talking with caller `c2` on leg `leg1`.
    fn queue_state(n: &NodeId) -> QueueState {
        let caller = |id: &str, seq| Caller {
            channel: chan(id),
            node: n.clone(),
            seq,
            since_ms: 0,
            caller: String::new(),
            offered: vec![],
        };
        let mut st = QueueState {
            callers: vec![caller("c1", 1)],
            ..Default::default()
        };
        let base = |kind, activity| Agent {
            kind,
            activity,
            paused: false,
            idle_since_ms: 0,
            retry_at_ms: 0,
            answered: 0,
            removing: false,
            returning: false,
        };
        st.agents.insert(
            agent("alice"),
            base(
                AgentKind::CallIn {
                    channel: chan("a1"),
                    node: n.clone(),
                },
                AgentState::Available,
            ),
        );
        st.agents.insert(
            agent("bob"),
            base(
                AgentKind::Static {
                    endpoint: "PJSIP/bob".into(),
                },
                AgentState::Busy {
                    caller: caller("c2", 2),
                    bridge: "qc1".into(),
                    leg: Some(chan("leg1")),
                    since_ms: 0,
                    connected: true,
                },
            ),
        );
        st
    }

    #[test]
    fn roles_come_from_the_queue_state_and_legs_are_never_members() {
        let n = node("x");
        let st = queue_state(&n);
        let holding = BridgeOf::Room(queue("support"));
        let pair = BridgeOf::Pair {
            queue: queue("support"),
            agent: agent("bob"),
        };
        let conference = BridgeOf::Room(conf("sales"));
        assert_eq!(
            role_in(&conference, None, &chan("p")),
            Some(Role::Participant)
        );
        assert_eq!(
            role_in(&holding, Some(&st), &chan("c1")),
            Some(Role::Caller)
        );
        assert_eq!(role_in(&holding, Some(&st), &chan("a1")), Some(Role::Agent));
        assert_eq!(role_in(&pair, Some(&st), &chan("c2")), Some(Role::Caller));
        assert_eq!(role_in(&pair, Some(&st), &chan("leg1")), None);
        // Unknown to the state: a caller on hold, nothing in a pair bridge.
        assert_eq!(
            role_in(&holding, Some(&st), &chan("zz")),
            Some(Role::Caller)
        );
        assert_eq!(role_in(&pair, Some(&st), &chan("zz")), None);
        assert_eq!(role_in(&holding, None, &chan("zz")), Some(Role::Caller));
        assert_eq!(role_in(&pair, None, &chan("zz")), None);
    }

    #[test]
    fn bridged_calls_are_recorded_followed_or_healed() {
        let (x, y) = (node("x"), node("y"));
        let names = BridgeNames::default();
        let bridges = vec![
            bridge(
                "corral-conference-sales-3",
                "corral:conference:sales",
                &["p1", "p2"],
            ),
            bridge(
                "corral-conference-away-local",
                "corral:conference:away",
                &["s1"],
            ),
            bridge(
                "corral-queue-support-4",
                "corral:queue:support",
                &["c1", "a1"],
            ),
            bridge(
                "corral-queue-support-qc1",
                "corral:queue:support:bob",
                &["c2", "leg1"],
            ),
            bridge(
                "corral-conference-gone-1",
                "corral:conference:gone",
                &["g1"],
            ),
            bridge("other", "someone:else", &["o1"]),
            bridge("odd", "corral:conference:bad", &["bad id"]),
        ];
        let calls = bridged_calls(&bridges, &names);
        assert_eq!(calls.len(), 6, "another app's bridge is not read");
        assert!(
            calls[5].channels.is_empty(),
            "an unusable channel id is skipped"
        );
        let mut f = HashMap::new();
        f.insert(
            conf("sales"),
            RoomFacts {
                owner: Some((x.clone(), Epoch(3))),
                members_here: [chan("p1")].into(),
                queue: None,
            },
        );
        f.insert(
            conf("away"),
            RoomFacts {
                owner: Some((y.clone(), Epoch(9))),
                ..Default::default()
            },
        );
        f.insert(
            queue("support"),
            RoomFacts {
                owner: None,
                members_here: HashSet::new(),
                queue: Some(queue_state(&x)),
            },
        );
        // `gone` is not in the facts (the store did not answer): skipped.
        let fixes = bridged_fixes(&x, &calls, &f);
        let follow = |c: &str, room: RoomKey, recorded| BridgedFix::Follow {
            channel: chan(c),
            membership: Membership { room, recorded },
        };
        let record = |room: RoomKey, c: &str, role| BridgedFix::Record {
            room,
            channel: chan(c),
            role,
        };
        assert_eq!(
            fixes,
            vec![
                follow("p1", conf("sales"), true),
                record(conf("sales"), "p2", Role::Participant),
                record(queue("support"), "c1", Role::Caller),
                record(queue("support"), "a1", Role::Agent),
                record(queue("support"), "c2", Role::Caller),
                follow("leg1", queue("support"), false),
                BridgedFix::Heal {
                    room: conf("away"),
                    owner: y.clone(),
                    channels: vec![chan("s1")]
                },
            ]
        );
        // A queue owned elsewhere: its callers move, a leg never does.
        f.get_mut(&queue("support")).unwrap().owner = Some((y.clone(), Epoch(1)));
        let fixes = bridged_fixes(&x, &calls, &f);
        assert!(fixes.contains(&BridgedFix::Heal {
            room: queue("support"),
            owner: y,
            channels: vec![chan("c1"), chan("a1"), chan("c2")]
        }));
        assert!(
            !fixes.iter().any(
                |f| matches!(f, BridgedFix::Follow { channel, .. } if channel == &chan("leg1"))
            )
        );
    }

    #[test]
    fn a_rooms_calls_in_another_bridge_here_are_merged_into_its_bridge() {
        let (x, y) = (node("x"), node("y"));
        let names = BridgeNames::default();
        let bridges = vec![
            // An earlier epoch's bridge, the room claimed again at 7.
            bridge(
                "corral-conference-a-5",
                "corral:conference:a",
                &["a1", "a2"],
            ),
            // The room's bridge now: nothing to do.
            bridge("corral-conference-a-7", "corral:conference:a", &["a3"]),
            // A degraded join's bridge.
            bridge("corral-conference-a-local", "corral:conference:a", &["a4"]),
            // Empty: the stale sweep's, not a merge.
            bridge("corral-conference-a-6", "corral:conference:a", &[]),
            // Owned elsewhere: healed by a move, not merged.
            bridge("corral-conference-b-1", "corral:conference:b", &["b1"]),
            // Not placed (the store forgot it): not merged.
            bridge("corral-conference-c-1", "corral:conference:c", &["c1"]),
            // A pair bridge is the queue engine's.
            bridge("corral-queue-q-qc1", "corral:queue:q:alice", &["q1"]),
            bridge("corral-queue-q-2", "corral:queue:q", &["q2"]),
            // Not in the facts (the store did not answer).
            bridge("corral-conference-d-1", "corral:conference:d", &["d1"]),
        ];
        let calls = bridged_calls(&bridges, &names);
        let owned = |n: &NodeId, e| RoomFacts {
            owner: Some((n.clone(), Epoch(e))),
            ..Default::default()
        };
        let mut f = HashMap::new();
        f.insert(conf("a"), owned(&x, 7));
        f.insert(conf("b"), owned(&y, 1));
        f.insert(conf("c"), RoomFacts::default());
        f.insert(queue("q"), owned(&x, 3));
        let from = |id: &str, chans: &[&str]| {
            (
                id.to_string(),
                chans.iter().map(|c| chan(c)).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            merges(&x, &calls, &f, &names),
            vec![
                Merge {
                    room: conf("a"),
                    epoch: Epoch(7),
                    from: vec![
                        from("corral-conference-a-5", &["a1", "a2"]),
                        from("corral-conference-a-local", &["a4"]),
                    ],
                    split: true,
                },
                // Its calls all in one bridge of another epoch: only renamed.
                Merge {
                    room: queue("q"),
                    epoch: Epoch(3),
                    from: vec![from("corral-queue-q-2", &["q2"])],
                    split: false,
                },
            ]
        );
        // Calls in the room's bridge now and in one other: a split.
        let two = bridged_calls(&bridges[1..3], &names);
        assert!(merges(&x, &two, &f, &names)[0].split);
        let one = bridged_calls(&bridges[..1], &names);
        assert!(!merges(&x, &one, &f, &names)[0].split);
    }

    #[test]
    fn splits_are_detected_once_and_healed_with_their_duration() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(3);
        let mut known = HashMap::new();
        known.insert(conf("old"), t0);
        known.insert(conf("still"), t0);
        let mut stray = HashMap::new();
        stray.insert(conf("still"), node("y"));
        stray.insert(conf("new"), node("y"));
        let c = split_changes(&known, &stray, now);
        assert_eq!(c.healed, vec![(conf("old"), Duration::from_secs(3))]);
        assert_eq!(c.detected, vec![(conf("new"), node("y"))]);
        assert_eq!(
            split_changes(&HashMap::new(), &HashMap::new(), now),
            SplitChanges::default()
        );
    }

    #[test]
    fn a_heal_move_has_a_deadline_then_retries_with_backoff() {
        let t0 = Instant::now();
        let d = Duration::from_secs(5);
        let s = Duration::from_secs;
        assert_eq!(heal_step(None, None, t0, d), HealStep::Move);
        assert_eq!(heal_step(Some(t0), None, t0 + s(4), d), HealStep::OnItsWay);
        assert_eq!(heal_step(Some(t0), None, t0 + s(5), d), HealStep::Overdue);
        // One failure: 5 s; two: 10 s; then doubling up to a minute.
        assert_eq!(
            heal_step(None, Some((1, t0)), t0 + s(4), d),
            HealStep::NotYet
        );
        assert_eq!(heal_step(None, Some((1, t0)), t0 + s(5), d), HealStep::Move);
        assert_eq!(
            heal_step(None, Some((2, t0)), t0 + s(9), d),
            HealStep::NotYet
        );
        assert_eq!(
            heal_step(None, Some((2, t0)), t0 + s(10), d),
            HealStep::Move
        );
        assert_eq!(heal_backoff(1, d), s(5));
        assert_eq!(heal_backoff(3, d), s(20));
        assert_eq!(heal_backoff(9, d), HEAL_BACKOFF_MAX);
        assert_eq!(heal_backoff(u32::MAX, d), HEAL_BACKOFF_MAX);
        // A move on its way is never started again.
        assert_eq!(
            heal_step(Some(t0), Some((3, t0)), t0, d),
            HealStep::OnItsWay
        );
    }

    #[test]
    fn stale_bridges_are_empty_ones_not_their_rooms_bridge_now() {
        let (x, y) = (node("x"), node("y"));
        let names = BridgeNames::default();
        let bridges = vec![
            bridge("corral-conference-a-3", "corral:conference:a", &[]),
            bridge("corral-conference-a-2", "corral:conference:a", &[]),
            bridge("corral-conference-a-local", "corral:conference:a", &[]),
            bridge("corral-conference-b-1", "corral:conference:b", &[]),
            bridge("corral-conference-c-1", "corral:conference:c", &[]),
            bridge("corral-conference-d-1", "corral:conference:d", &["busy"]),
            bridge("corral-queue-q-qc1", "corral:queue:q:alice", &[]),
            bridge("corral-conference-u-1", "corral:conference:u", &[]),
            bridge("x", "other:conference:a", &[]),
        ];
        let mut f = HashMap::new();
        f.insert(
            conf("a"),
            RoomFacts {
                owner: Some((x.clone(), Epoch(3))),
                ..Default::default()
            },
        );
        f.insert(
            conf("b"),
            RoomFacts {
                owner: Some((y, Epoch(1))),
                ..Default::default()
            },
        );
        f.insert(conf("c"), RoomFacts::default());
        f.insert(conf("d"), RoomFacts::default());
        f.insert(queue("q"), RoomFacts::default());
        assert_eq!(
            stale_bridges(&x, &bridges, &f, &names),
            vec![
                "corral-conference-a-2".to_string(),
                "corral-conference-a-local".into(),
                "corral-conference-b-1".into(),
                "corral-conference-c-1".into(),
            ]
        );
    }

    fn channel(id: &str, state: &str, app_data: Option<&str>) -> Channel {
        Channel {
            id: id.into(),
            state: state.into(),
            dialplan: Dialplan {
                app_name: app_data.map(|_| "Stasis".to_string()),
                app_data: app_data.map(str::to_string),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn unhandled_calls_are_placed_on_their_second_sighting() {
        let chans = vec![
            channel("new", "Ring", Some("corral,conference,sales")),
            channel("seen", "Up", Some("corral,queue,support")),
            channel("token", "Ring", Some("corral")),
            channel("held1", "Ring", Some("corral")),
            channel("held2", "Ring", Some("corral")),
            channel("placing", "Ring", Some("corral,conference,a")),
            channel("joined", "Up", Some("corral,conference,a")),
            channel("moving", "Ring", Some("corral,conference,a")),
            channel("bridged", "Up", Some("corral,conference,a")),
            channel("down", "Down", Some("corral,conference,a")),
            channel("other", "Ring", Some("corral2,conference,a")),
            channel("standby", "Ring", Some("corral-standby,conference,b")),
            channel("dialplan", "Ring", None),
            channel("bad id", "Ring", Some("corral")),
        ];
        let rec = record(conf("a"), None, 1);
        let mut states = HashMap::new();
        states.insert(chan("seen"), ChannelState::Suspect);
        states.insert(
            chan("held1"),
            ChannelState::TokenHeld {
                record: rec.clone(),
                seen: false,
            },
        );
        states.insert(
            chan("held2"),
            ChannelState::TokenHeld {
                record: rec.clone(),
                seen: true,
            },
        );
        states.insert(chan("placing"), ChannelState::Placing { held: None });
        states.insert(
            chan("joined"),
            ChannelState::Joined(Membership {
                room: conf("a"),
                recorded: true,
            }),
        );
        states.insert(
            chan("moving"),
            ChannelState::Redirected {
                token: TokenId::new("T").unwrap(),
                left: None,
                since: Instant::now(),
            },
        );
        states.insert(chan("vanished"), ChannelState::Suspect);
        states.insert(
            chan("held-gone"),
            ChannelState::TokenHeld {
                record: rec,
                seen: true,
            },
        );
        let bridged: HashSet<ChannelId> = [chan("bridged")].into();
        let mut fixes = unhandled_fixes(&chans, &bridged, &states, &["corral", "corral-standby"]);
        let mut clears: Vec<_> = fixes
            .iter()
            .filter_map(|f| match f {
                UnhandledFix::Clear(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        clears.sort();
        assert_eq!(clears, vec![chan("held-gone"), chan("vanished")]);
        fixes.retain(|f| !matches!(f, UnhandledFix::Clear(_)));
        let placed = |id: &str, args: &[&str]| UnhandledFix::Place {
            channel: Box::new(chans.iter().find(|c| c.id == id).unwrap().clone()),
            args: s(args),
        };
        assert_eq!(
            fixes,
            vec![
                UnhandledFix::Suspect(chan("new")),
                placed("seen", &["queue", "support"]),
                UnhandledFix::Suspect(chan("token")),
                UnhandledFix::Suspect(chan("held1")),
                placed("held2", &[]),
                UnhandledFix::Suspect(chan("standby")),
            ]
        );
    }

    #[test]
    fn joined_calls_missing_from_the_snapshot_are_checked() {
        let mut states = HashMap::new();
        let m = Membership {
            room: conf("a"),
            recorded: true,
        };
        states.insert(chan("live"), ChannelState::Joined(m.clone()));
        states.insert(chan("gone"), ChannelState::Joined(m));
        states.insert(chan("placing"), ChannelState::Placing { held: None });
        let live: HashSet<ChannelId> = [chan("live")].into();
        assert_eq!(missing(&states, &live), vec![chan("gone")]);
    }
}
