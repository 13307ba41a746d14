//! The store: the atomic operations on placements, members, tokens, node
//! state and leases that every controller replica shares.
//!
//! This module owns the [`Store`] trait, its data types and [`Error`]; the
//! backends live in [`redis`] (production, several replicas; one Lua script
//! per operation in `lua/`) and [`memory`] (one replica, the default when no
//! Redis is configured). Both have one behaviour, checked by
//! `tests/store_conformance.rs`. The choice of a node is not made here: the
//! placement policy (`crate::policy`) chooses, the store only applies the
//! choice atomically.
//!
//! # Guarantees
//!
//! - One owner decision: [`Store::resolve_placement`] is a compare-and-set;
//!   racing resolvers for one room all get the same owner.
//! - Epochs only grow. An epoch comes from one farm-wide sequence, so a room
//!   that is released and placed again never reuses an epoch, and a cleanup
//!   that saw epoch `e` can never release a later life of the room.
//! - A room is released only if it is empty, its epoch is the caller's and
//!   it has been empty for the caller's linger, by the store's clock.
//! - Members live on their room's owner: a member is only added by the owning
//!   node, and a room that changes owner (its owner died) starts empty.
//! - A token is consumed once, only on the node it was minted for; an expired
//!   token is told apart from an unknown one for a short tombstone period.
//! - A node that goes down, or comes back as a new incarnation, owns no room
//!   any more from that instant (its rooms are stale at once and released in
//!   batches).
//! - Expiries and timestamps come from the store's clock (Redis `TIME`
//!   inside the scripts, tokio's clock for the memory backend), never from a
//!   replica's wall clock.
//!
//! # Assumptions
//!
//! - Ids are validated newtypes (`crate::domain`), so nothing a caller sends
//!   can reach another farm's keys or break a script.
//!
//! # Failure
//!
//! Every operation has a bounded time: an unreachable Redis fails fast with
//! [`Error::Unavailable`] (retryable, see [`Error::retry`]) and operations
//! succeed again once Redis is back, without recreating the store.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::domain::{
    AgentId, ChannelId, Epoch, Incarnation, NodeId, NodeState, Role, RoomKey, RoomKind, RoomName,
    TokenId,
};
use crate::retry::Retry;

pub mod keys;
pub mod memory;
pub mod redis;

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;
pub use crate::domain::NodeRecord;

/// The atomic operations every backend provides with one behaviour.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Existing healthy owner (state up or draining, and the placement's
    /// incarnation is the node's current one) → returned as is; else
    /// `choice` (must be known, up, and under its `max_rooms`) becomes owner
    /// with a new, larger epoch. A room that changes owner starts empty.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the store cannot be reached.
    async fn resolve_placement(&self, room: &RoomKey, choice: &NodeId)
    -> Result<Resolution, Error>;

    /// A placed room's owner when it is healthy and the store can tell
    /// without a decision (no choice needed, nothing written): what
    /// [`Store::resolve_placement`] would answer for it (`created: false`).
    /// `None` says nothing (unplaced, an owner that is not healthy, or a
    /// backend that cannot tell cheaply): ask `resolve_placement`. Lets a
    /// caller skip its policy's choice for the common case, a running room.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the store cannot be reached.
    async fn placed_owner(&self, room: &RoomKey) -> Result<Option<Resolution>, Error>;

    /// A call's arrival, decided and written in one atomic step (one round
    /// trip): the owner decision of [`Store::resolve_placement`] with
    /// `choice`; then, when the owner is `call.landing`, the member record
    /// of [`Store::add_member`]; when it is another node and `call.redirect`
    /// is given, a token bound to that owner, as [`Store::mint_token`]
    /// stores it (never overwriting one). Nothing is written when the
    /// choice is refused.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the store cannot be reached;
    /// [`Error::InvalidInput`] for a caller id that is too long or a zero ttl.
    async fn place_call(&self, call: &CallArrival, choice: &NodeId) -> Result<CallPlaced, Error>;

    /// A redirected call's arrival in one atomic step (one round trip): its
    /// token consumed by `channel` as by [`Store::consume_token_as`] (kept,
    /// marked used, so a retry by the same channel on the same node gets it
    /// again and records the member again, harmlessly; anyone else gets
    /// `Unknown`); if consumed, its member recorded as by
    /// [`Store::add_member`] for the token's room on `node`, with the role
    /// its grant implies (conference: participant; queue: agent when the
    /// grant names one, else caller). A token that is not consumed records
    /// nothing.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the store cannot be reached.
    async fn join_with_token(
        &self,
        token: &TokenId,
        node: &NodeId,
        channel: &ChannelId,
    ) -> Result<TokenJoin, Error>;

    /// The room's placement and members, if it is placed.
    async fn get_room(&self, room: &RoomKey) -> Result<Option<RoomDetail>, Error>;

    /// Adds (node, channel) if `node` owns the room; if the room has no
    /// healthy owner, claims it for `node` (unless `node` is down or
    /// unknown: [`Error::NodeUnavailable`]) and adds; if another healthy
    /// node owns it, returns [`MemberAdded::Moved`].
    async fn add_member(
        &self,
        room: &RoomKey,
        node: &NodeId,
        channel: &ChannelId,
        role: Role,
    ) -> Result<MemberAdded, Error>;

    /// Removes (node, channel); the last member out starts the room's empty
    /// time (its linger).
    async fn remove_member(
        &self,
        room: &RoomKey,
        node: &NodeId,
        channel: &ChannelId,
    ) -> Result<MemberRemoved, Error>;

    /// Releases only if no members, epoch == `epoch`, and empty for at least
    /// `linger` by the store's clock.
    async fn release_room(
        &self,
        room: &RoomKey,
        epoch: Epoch,
        linger: Duration,
    ) -> Result<Release, Error>;

    /// Stores a single-use token for `ttl`. A token id that already exists
    /// is refused ([`Error::TokenExists`]).
    async fn mint_token(
        &self,
        token: &TokenId,
        grant: &TokenGrant,
        ttl: Duration,
    ) -> Result<(), Error>;

    /// Reads a token without consuming it (expired ones too, during their
    /// tombstone).
    async fn peek_token(&self, token: &TokenId) -> Result<Option<TokenRecord>, Error>;

    /// Exactly once, only on `grant.to`. Wrong node: not consumed, returns
    /// `WrongNode(record)`. Expired: `Expired(record)` (kept for
    /// [`TOKEN_TOMBSTONE`] past expiry so expired ≠ unknown). Unknown (never
    /// minted, already consumed, or long gone): `Unknown`.
    async fn consume_token(&self, token: &TokenId, node: &NodeId) -> Result<Consumed, Error>;

    /// [`Store::consume_token`] by one consumer, the channel `by`, and
    /// idempotent for it: the token is kept, marked used by (`node`,
    /// `by`), until it would have gone, so a retry by the same channel
    /// (after a timeout that may have consumed it) gets `Ok` again, while
    /// anyone else gets `Unknown` and [`Store::peek_token`] sees nothing.
    async fn consume_token_as(
        &self,
        token: &TokenId,
        node: &NodeId,
        by: &ChannelId,
    ) -> Result<Consumed, Error>;

    /// Creates/updates the node (sip_host, capacity, max_rooms), marks it
    /// healthy. A changed incarnation releases every room the node owned (a
    /// restarted Asterisk starts empty). Keeps the operator's drain flag.
    async fn register_node(&self, reg: &NodeRegistration) -> Result<Registered, Error>;

    /// Health: down releases all the node's rooms at once (returns how many;
    /// batched internally).
    async fn set_node_health(&self, node: &NodeId, healthy: bool) -> Result<HealthChanged, Error>;

    /// Operator drain flag: draining = no new rooms, running rooms still
    /// take joiners.
    async fn set_node_drain(&self, node: &NodeId, draining: bool) -> Result<NodeRecord, Error>;

    /// Marks the node suspect (a health check of it failed) or clears the
    /// mark: a suspect node takes no new room ([`Store::resolve_placement`]
    /// refuses it as a choice) but keeps its rooms and their joiners. A
    /// registration clears it.
    async fn set_node_suspect(&self, node: &NodeId, suspect: bool) -> Result<(), Error>;

    /// Records the node's reported load (channels).
    async fn report_load(&self, node: &NodeId, channels: u32) -> Result<(), Error>;

    /// Every registered node, sorted by id.
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, Error>;

    /// One page of rooms, ordered by (node, kind, name); pass the page's
    /// `next` back as `cursor` for the following page.
    async fn list_rooms(
        &self,
        filter: &RoomFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RoomPage, Error>;

    /// Leases: which controller replica holds a node's ARI event stream.
    /// Acquires, or renews if already ours; `false` if another replica holds it.
    async fn acquire_lease(
        &self,
        node: &NodeId,
        replica: &str,
        ttl: Duration,
    ) -> Result<bool, Error>;

    /// Releases the lease if `replica` holds it; otherwise does nothing.
    async fn release_lease(&self, node: &NodeId, replica: &str) -> Result<(), Error>;

    /// A queue's state document (JSON owned by `crate::queue`) and its
    /// version; `None` if the queue has never been saved.
    async fn load_queue(&self, queue: &RoomName) -> Result<Option<QueueDoc>, Error>;

    /// Compare-and-set of a queue's document: writes `doc` if the stored
    /// version is `expected` (0 = never saved) and returns the new version;
    /// `None` when another writer got there first (reload and retry).
    /// Waiting callers are kept apart, one entry per `seq`: in the same
    /// atomic step, the entries of `removed` are dropped and `added` written.
    async fn save_queue_parts(
        &self,
        queue: &RoomName,
        expected: u64,
        doc: &str,
        removed: &[u64],
        added: &[(u64, String)],
    ) -> Result<Option<u64>, Error>;

    /// [`Store::save_queue_parts`] for the queue's engine on `owner`, in
    /// one atomic step with an owner check: written only while `owner` owns
    /// the queue's room and is healthy; else nothing is written and the
    /// answer is [`QueueSave::Moved`].
    async fn save_queue_on(
        &self,
        queue: &RoomName,
        owner: &NodeId,
        expected: u64,
        doc: &str,
        removed: &[u64],
        added: &[(u64, String)],
    ) -> Result<QueueSave, Error>;

    /// [`Store::save_queue_parts`] with no caller entry changed.
    async fn save_queue(
        &self,
        queue: &RoomName,
        expected: u64,
        doc: &str,
    ) -> Result<Option<u64>, Error> {
        self.save_queue_parts(queue, expected, doc, &[], &[]).await
    }

    /// The version of a queue's document (0: never saved): lets a replica
    /// that holds the latest document skip reading it again.
    async fn queue_version(&self, queue: &RoomName) -> Result<u64, Error>;

    /// Every queue that has a document, sorted by name.
    async fn list_queues(&self) -> Result<Vec<RoomName>, Error>;

    /// Round trip to the store (for `/readyz`).
    async fn ping(&self) -> Result<(), Error>;
}

/// The answer of [`Store::save_queue_on`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueSave {
    /// Written: the new version.
    Saved(u64),
    /// Another writer got there first (reload and retry).
    Conflict,
    /// The node no longer owns the queue's room (or it is down): the owner
    /// now, if the room is placed.
    Moved(Option<NodeId>),
}

/// A queue's stored state: an opaque JSON document, its version and the
/// caller entries in `seq` order (see [`Store::save_queue_parts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDoc {
    /// Grows by one on every save.
    pub version: u64,
    /// The document.
    pub doc: String,
    /// The waiting callers' entries, by `seq`.
    pub callers: Vec<String>,
}

/// The largest queue document (or caller entries written at once) a store
/// accepts, in bytes.
pub const MAX_QUEUE_DOC: usize = 4 << 20;

/// Checks a queue document's size (and of the caller entries written with
/// it).
pub(crate) fn check_queue_doc(doc: &str, added: &[(u64, String)]) -> Result<(), Error> {
    if doc.len() + added.iter().map(|(_, e)| e.len()).sum::<usize>() > MAX_QUEUE_DOC {
        return Err(Error::InvalidInput {
            what: "queue document",
            reason: format!("larger than {MAX_QUEUE_DOC} bytes"),
        });
    }
    Ok(())
}

/// How long a token stays readable past its expiry, so that a late arrival
/// is told "expired" rather than "unknown".
pub const TOKEN_TOMBSTONE: Duration = Duration::from_secs(60);

/// How many rooms one step of releasing a node's rooms handles, so that a
/// node with a million rooms never blocks Redis for long.
pub const RELEASE_BATCH: usize = 500;

/// The longest caller id a token may carry, in bytes.
pub const MAX_CALLER_LEN: usize = 256;

/// The longest replica name a lease may carry, in bytes.
pub const MAX_REPLICA_LEN: usize = 128;

/// The longest SIP host a node may register, in bytes.
pub const MAX_SIP_HOST_LEN: usize = 255;

/// The answer of [`Store::resolve_placement`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Resolution {
    /// The room's owner: the existing healthy one, or the caller's choice.
    Owner {
        /// The owning node.
        node: NodeId,
        /// The placement's epoch.
        epoch: Epoch,
        /// True when this call placed the room (new, or re-placed).
        created: bool,
        /// The unhealthy owner this call replaced, if any.
        previous: Option<NodeId>,
    },
    /// The room needs a new owner, and the choice is unknown, draining, down
    /// or at its `max_rooms`: choose again with fresh node records.
    ChoiceIneligible {
        /// The refused choice.
        node: NodeId,
    },
}

/// A call arriving for a room ([`Store::place_call`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallArrival {
    /// The room it is for.
    pub room: RoomKey,
    /// The node it landed on.
    pub landing: NodeId,
    /// Its channel on `landing`.
    pub channel: ChannelId,
    /// The role it joins with.
    pub role: Role,
    /// The token to mint if the room lives on another node; `None`: mint
    /// none (the call will not be redirected, e.g. past the hop limit).
    pub redirect: Option<RedirectToken>,
}

/// The token [`Store::place_call`] mints for a call whose room lives
/// elsewhere: its grant is the call's room, `from` the landing node, `to`
/// the owner the store found, `channel` the call's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectToken {
    /// The token id (generated).
    pub token: TokenId,
    /// The caller id to restore (at most [`MAX_CALLER_LEN`] bytes).
    pub caller: String,
    /// The hop count the token carries.
    pub hops: u32,
    /// The queue agent the call logs in as, if any.
    pub agent: Option<AgentId>,
    /// How long the token is valid.
    pub ttl: Duration,
}

/// The answer of [`Store::place_call`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum CallPlaced {
    /// The room lives on the landing node and the call is its member.
    Joined {
        /// The placement's epoch.
        epoch: Epoch,
        /// Members now.
        members: u32,
        /// True when this call placed the room.
        created: bool,
        /// The unhealthy owner this call replaced, if any.
        previous: Option<NodeId>,
        /// True when the channel was a member already (a repeat).
        already: bool,
    },
    /// The room lives on another node.
    Elsewhere {
        /// The owner.
        owner: NodeId,
        /// The placement's epoch.
        epoch: Epoch,
        /// True when this call placed the room.
        created: bool,
        /// The unhealthy owner this call replaced, if any.
        previous: Option<NodeId>,
        /// The token minted for the owner; `None` when none was asked for
        /// (or, never with generated ids, its id existed).
        token: Option<TokenRecord>,
    },
    /// The room needs a new owner and the choice is unknown, draining,
    /// suspect, down or full: choose again with fresh node records.
    ChoiceIneligible {
        /// The refused choice.
        node: NodeId,
    },
}

/// The answer of [`Store::join_with_token`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum TokenJoin {
    /// Consumed here; `member` is what recording the member in the token's
    /// room gave (`Moved` when the room lives elsewhere now).
    Joined {
        /// The consumed token.
        record: TokenRecord,
        /// The member record's answer.
        member: MemberAdded,
    },
    /// Consumed here, but the room has no healthy owner and this node is
    /// down or unknown: nothing recorded.
    NodeUnavailable {
        /// The consumed token.
        record: TokenRecord,
    },
    /// Not consumed (`WrongNode`, `Expired` or `Unknown`): nothing recorded.
    NotConsumed(Consumed),
}

/// A room's placement, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct Placement {
    /// The room.
    pub room: RoomKey,
    /// Its owner.
    pub node: NodeId,
    /// The placement's epoch.
    pub epoch: Epoch,
    /// When the placement was made (store clock, Unix ms).
    pub created_ms: u64,
    /// How many members it has.
    pub members: u32,
    /// Since when it has been empty (store clock, Unix ms), if empty.
    pub empty_since_ms: Option<u64>,
}

/// A channel in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct Member {
    /// The node the channel is on (always the room's owner).
    pub node: NodeId,
    /// The channel.
    pub channel: ChannelId,
    /// Its role.
    pub role: Role,
    /// When it joined (store clock, Unix ms).
    pub joined_ms: u64,
}

/// A placement and its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct RoomDetail {
    /// The placement.
    pub placement: Placement,
    /// Its members, sorted by channel.
    pub members: Vec<Member>,
}

/// The answer of [`Store::add_member`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum MemberAdded {
    /// Recorded.
    Added {
        /// The placement's epoch.
        epoch: Epoch,
        /// Members now.
        members: u32,
        /// True when the room had no healthy owner and `node` claimed it.
        claimed: bool,
    },
    /// It was already there (idempotent repeat).
    AlreadyMember {
        /// The placement's epoch.
        epoch: Epoch,
        /// Members now.
        members: u32,
    },
    /// Another healthy node owns the room: move the channel there.
    Moved {
        /// The owner.
        owner: NodeId,
        /// The placement's epoch.
        epoch: Epoch,
    },
}

/// The answer of [`Store::remove_member`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum MemberRemoved {
    /// Removed.
    Removed {
        /// Members left.
        remaining: u32,
        /// The placement's epoch (pass it to [`Store::release_room`]).
        epoch: Epoch,
    },
    /// Not a member of this room on this node (or no such room).
    NotMember,
}

/// The answer of [`Store::release_room`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Release {
    /// Released: the room has no placement any more.
    Released,
    /// Someone joined meanwhile.
    NotEmpty,
    /// The room was re-placed meanwhile.
    EpochChanged {
        /// The room's epoch now.
        current: Epoch,
    },
    /// Empty for less than the linger.
    TooSoon,
    /// Not placed.
    NotFound,
}

/// What a token allows: one channel to resume on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct TokenGrant {
    /// The room the channel goes to.
    pub room: RoomKey,
    /// The node the channel is redirected from.
    pub from: NodeId,
    /// The only node that may consume the token.
    pub to: NodeId,
    /// The channel on `from`.
    pub channel: ChannelId,
    /// The caller id to restore (free text, at most [`MAX_CALLER_LEN`] bytes).
    pub caller: String,
    /// How many redirects this call has had.
    pub hops: u32,
    /// The queue agent this channel logs in as (`agent,<queue>,<agent>`);
    /// `None` for conference participants and queue callers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
}

/// A stored token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct TokenRecord {
    /// What it allows.
    pub grant: TokenGrant,
    /// When it was minted (store clock, Unix ms).
    pub minted_ms: u64,
    /// When it expires (store clock, Unix ms).
    pub expires_ms: u64,
}

/// The answer of [`Store::consume_token`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", content = "token", rename_all = "snake_case")]
pub enum Consumed {
    /// Consumed by this call; nobody else will get it.
    Ok(TokenRecord),
    /// Minted for another node: not consumed.
    WrongNode(TokenRecord),
    /// Past its expiry: not consumed.
    Expired(TokenRecord),
    /// Never minted, already consumed, or long gone.
    Unknown,
}

/// What a node tells the store when its ARI connection comes up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct NodeRegistration {
    /// The node.
    pub node: NodeId,
    /// The Asterisk process's life.
    pub incarnation: Incarnation,
    /// The SIP host other nodes redirect to.
    pub sip_host: String,
    /// Channels it is sized for (the policy divides load by it).
    pub capacity: u32,
    /// At most this many rooms (the store refuses more).
    pub max_rooms: Option<u32>,
}

/// The answer of [`Store::register_node`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct Registered {
    /// True on first registration or when the incarnation changed.
    pub new_incarnation: bool,
    /// Rooms released because they belonged to the previous incarnation.
    pub released_rooms: u32,
}

/// The answer of [`Store::set_node_health`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct HealthChanged {
    /// True when the health flag flipped.
    pub changed: bool,
    /// Rooms released (when marked down).
    pub released_rooms: u32,
}

/// Which rooms [`Store::list_rooms`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct RoomFilter {
    /// Only rooms owned by this node.
    pub node: Option<NodeId>,
    /// Only rooms of this kind.
    pub kind: Option<RoomKind>,
}

/// One page of rooms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct RoomPage {
    /// The rooms, ordered by (node, kind, name).
    pub rooms: Vec<Placement>,
    /// Cursor of the next page; `None` on the last page.
    pub next: Option<String>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store cannot be reached or did not answer in time. Retryable:
    /// the store reconnects on its own.
    #[error("store unavailable during {op}: {reason}")]
    Unavailable {
        /// The operation.
        op: &'static str,
        /// What happened (timeout, refused, dropped).
        reason: String,
        /// The Redis error, if there was one (none for a timeout).
        #[source]
        source: Option<::redis::RedisError>,
    },
    /// A script (or command) was refused by Redis for a reason other than
    /// connectivity.
    #[error("store script {script} failed")]
    ScriptFailed {
        /// The script (its Rust method's name).
        script: &'static str,
        /// Redis's error.
        #[source]
        source: ::redis::RedisError,
    },
    /// The store returned data corral cannot read.
    #[error("corrupt store data in {what}: {detail}")]
    Corrupt {
        /// Which record or reply.
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// The node is not registered.
    #[error("node {node} is not registered")]
    UnknownNode {
        /// The node.
        node: NodeId,
    },
    /// The node is down or unknown and cannot claim a room.
    #[error("node {node} is down or unknown and cannot claim room {room}")]
    NodeUnavailable {
        /// The node.
        node: NodeId,
        /// The room.
        room: RoomKey,
    },
    /// A token with this id exists already (never happens with generated
    /// tokens).
    #[error("token {prefix}… exists already")]
    TokenExists {
        /// The token's loggable prefix.
        prefix: String,
    },
    /// A caller-supplied value was refused.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// Which value.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The store configuration (URL, farm) is wrong.
    #[error("invalid store configuration: {reason}")]
    Config {
        /// Why.
        reason: String,
        /// The Redis error, if any.
        #[source]
        source: Option<::redis::RedisError>,
    },
}

impl Error {
    /// What the caller should do: [`Retry::Reconnect`]/[`Retry::After`] for
    /// an unreachable store (the store reconnects by itself; simply call
    /// again), [`Retry::Never`] for bad input or bad data.
    pub fn retry(&self) -> Retry {
        match self {
            Error::Unavailable { source: None, .. } => Retry::After(Duration::from_millis(100)),
            Error::Unavailable {
                source: Some(err), ..
            } => classify(err),
            Error::ScriptFailed { source, .. } => match classify(source) {
                Retry::Never => Retry::Never,
                other => other,
            },
            _ => Retry::Never,
        }
    }

    /// True when trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        self.retry() != Retry::Never
    }
}

/// Maps a Redis error to what the caller should do.
fn classify(err: &::redis::RedisError) -> Retry {
    use ::redis::RetryMethod;
    match err.retry_method() {
        RetryMethod::Reconnect | RetryMethod::ReconnectFromInitialConnections => Retry::Reconnect,
        RetryMethod::RetryImmediately
        | RetryMethod::AskRedirect
        | RetryMethod::MovedRedirect
        | RetryMethod::RefreshSlotsAndRetry => Retry::Now,
        RetryMethod::WaitAndRetry => Retry::After(Duration::from_millis(100)),
        RetryMethod::NoRetry => {
            if err.is_timeout() || err.is_io_error() || err.is_connection_dropped() {
                Retry::Reconnect
            } else {
                Retry::Never
            }
        }
        _ => Retry::After(Duration::from_millis(100)),
    }
}

/// How to reach the store.
#[derive(Clone)]
pub struct Config {
    /// The farm: every key is under `{corral:<farm>}`. Same rules as a node
    /// id (ASCII letters, digits, `_`, `-`).
    pub farm: String,
    /// `None`: the in-memory store (one replica). Else one of
    /// `redis://[user:pass@]host:port[/db]`, `rediss://…`,
    /// `redis+sentinel://host:port[,host:port]/<master-name>`,
    /// `redis+cluster://host:port[,host:port]`.
    pub redis_url: Option<String>,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on one command's answer.
    pub response_timeout: Duration,
}

impl Config {
    /// The farm name when none is configured.
    pub const DEFAULT_FARM: &'static str = "default";
    /// Establishing a connection to a reachable Redis takes well under this;
    /// beyond it the call fails and the caller degrades.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    /// A healthy Redis answers in well under a millisecond; one second
    /// covers a busy one and still fails fast for the call path.
    pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
}

impl Default for Config {
    fn default() -> Self {
        Self {
            farm: Self::DEFAULT_FARM.to_owned(),
            redis_url: None,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            response_timeout: Self::DEFAULT_RESPONSE_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: print only its scheme.
        let url = self
            .redis_url
            .as_deref()
            .map(|u| u.split("://").next().unwrap_or("?").to_owned() + "://…");
        f.debug_struct("Config")
            .field("farm", &self.farm)
            .field("redis_url", &url)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

/// Opens the configured store: memory when `redis_url` is `None`, else
/// Redis (scripts loaded now, so a bad script or an unreachable Redis fails
/// the start).
///
/// # Errors
/// [`Error::Config`] for a bad farm or URL, [`Error::Unavailable`] when
/// Redis cannot be reached, [`Error::ScriptFailed`] when a script does not
/// load.
pub async fn connect(cfg: &Config) -> Result<Arc<dyn Store>, Error> {
    match &cfg.redis_url {
        None => Ok(Arc::new(MemoryStore::new(&cfg.farm)?)),
        Some(_) => Ok(Arc::new(RedisStore::connect(cfg).await?)),
    }
}

/// Checks a farm name (same shape as a node id).
pub(crate) fn check_farm(farm: &str) -> Result<(), Error> {
    NodeId::new(farm).map(|_| ()).map_err(|e| Error::Config {
        reason: format!("farm name: {e}"),
        source: None,
    })
}

/// Checks the free-text parts of a token grant.
pub(crate) fn check_grant(grant: &TokenGrant, ttl: Duration) -> Result<(), Error> {
    if grant.caller.len() > MAX_CALLER_LEN {
        return Err(Error::InvalidInput {
            what: "caller",
            reason: format!("longer than {MAX_CALLER_LEN} bytes"),
        });
    }
    if ttl.is_zero() {
        return Err(Error::InvalidInput {
            what: "token ttl",
            reason: "must be positive".into(),
        });
    }
    Ok(())
}

/// Checks the free-text parts of a token [`Store::place_call`] mints.
pub(crate) fn check_redirect(r: &RedirectToken) -> Result<(), Error> {
    if r.caller.len() > MAX_CALLER_LEN {
        return Err(Error::InvalidInput {
            what: "caller",
            reason: format!("longer than {MAX_CALLER_LEN} bytes"),
        });
    }
    if r.ttl.is_zero() {
        return Err(Error::InvalidInput {
            what: "token ttl",
            reason: "must be positive".into(),
        });
    }
    Ok(())
}

/// Checks a registration's free-text parts.
pub(crate) fn check_registration(reg: &NodeRegistration) -> Result<(), Error> {
    if reg.sip_host.is_empty() || reg.sip_host.len() > MAX_SIP_HOST_LEN {
        return Err(Error::InvalidInput {
            what: "sip_host",
            reason: format!("must be 1 to {MAX_SIP_HOST_LEN} bytes"),
        });
    }
    for (what, v) in [
        ("asterisk_id", &reg.incarnation.asterisk_id),
        ("startup time", &reg.incarnation.started),
    ] {
        if v.len() > MAX_SIP_HOST_LEN {
            return Err(Error::InvalidInput {
                what,
                reason: format!("longer than {MAX_SIP_HOST_LEN} bytes"),
            });
        }
    }
    Ok(())
}

/// Checks a replica name and a lease ttl.
pub(crate) fn check_replica(replica: &str) -> Result<(), Error> {
    if replica.is_empty() || replica.len() > MAX_REPLICA_LEN {
        return Err(Error::InvalidInput {
            what: "replica",
            reason: format!("must be 1 to {MAX_REPLICA_LEN} bytes"),
        });
    }
    Ok(())
}

/// Reads a `list_rooms` cursor ([`crate::names::cursor`]).
pub(crate) fn parse_cursor(cursor: &str) -> Result<(NodeId, RoomKey), Error> {
    crate::names::parse_cursor(cursor).ok_or_else(|| Error::InvalidInput {
        what: "cursor",
        reason: "not a cursor returned by list_rooms".into(),
    })
}

/// The effective state of a node from its flags.
pub(crate) fn effective_state(healthy: bool, draining: bool) -> NodeState {
    if !healthy {
        NodeState::Down
    } else if draining {
        NodeState::Draining
    } else {
        NodeState::Up
    }
}

/// Clamps a requested page size to something sane.
pub(crate) fn page_limit(limit: usize) -> usize {
    limit.clamp(1, 10_000)
}

/// The role a token's call joins its room with ([`Store::join_with_token`]):
/// a conference participant; in a queue an agent when the grant names one,
/// else a caller.
pub(crate) fn grant_role(grant: &TokenGrant) -> Role {
    match (grant.room.kind, &grant.agent) {
        (RoomKind::Conference, _) => Role::Participant,
        (RoomKind::Queue, Some(_)) => Role::Agent,
        (RoomKind::Queue, None) => Role::Caller,
    }
}
