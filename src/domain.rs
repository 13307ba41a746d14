//! The words of corral (ARCHITECTURE.md, "Words") as types: ids, rooms,
//! placements, members, tokens, node records.
//!
//! Everything here is plain data with validation; no I/O, no tokio. Every id
//! that crosses a module boundary is a newtype whose constructor checks its
//! shape, so a value that reaches a Redis key or a dialplan extension has
//! already been proven harmless (no `{`, `}`, `:` or whitespace that could
//! reach another farm's keys or break a script).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an id, a name or a kind was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    /// The value is empty or longer than the limit.
    #[error("{what} must be 1 to {max} characters long, got {len}")]
    Length {
        /// Which kind of value.
        what: &'static str,
        /// Its maximum length.
        max: usize,
        /// The length that was given.
        len: usize,
    },
    /// The value holds a character outside the allowed set.
    #[error("{what} may only contain {allowed}; found {found:?}")]
    Character {
        /// Which kind of value.
        what: &'static str,
        /// The allowed set.
        allowed: Charset,
        /// The first offending character.
        found: char,
    },
    /// A room kind other than `conference` or `queue`.
    #[error("room kind must be \"conference\" or \"queue\", got {0:?}")]
    Kind(String),
}

/// The characters an id may hold: ASCII letters and digits, plus a few
/// others. The one description of an id's alphabet: the validators
/// ([`Charset::allows`]), their error messages (`Display`) and the API's
/// documented patterns ([`Charset::pattern`]) are all read from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charset {
    /// The characters allowed besides ASCII letters and digits.
    extra: &'static str,
}

impl Charset {
    /// ASCII letters and digits, plus the characters of `extra`.
    pub const fn alphanumeric_and(extra: &'static str) -> Self {
        Self { extra }
    }

    /// Whether `c` may appear in the id.
    pub fn allows(self, c: char) -> bool {
        c.is_ascii_alphanumeric() || self.extra.contains(c)
    }

    /// The characters allowed besides ASCII letters and digits.
    pub fn extra(self) -> &'static str {
        self.extra
    }

    /// A regular-expression character class matching one allowed character
    /// (`[A-Za-z0-9_\-]`); valid in ECMA-262 (OpenAPI's dialect) and in
    /// Rust's `regex`.
    pub fn class(self) -> String {
        let mut class = String::from("[A-Za-z0-9");
        for c in self.extra.chars() {
            if matches!(c, '\\' | ']' | '[' | '^' | '-') {
                class.push('\\');
            }
            class.push(c);
        }
        class.push(']');
        class
    }

    /// The anchored pattern of a whole id of 1 to `max` allowed characters
    /// (`^[A-Za-z0-9_\-]{1,64}$`).
    pub fn pattern(self, max: usize) -> String {
        format!("^{}{{1,{max}}}$", self.class())
    }
}

/// "ASCII letters, digits, '_' and '-'": the set, for error messages.
impl fmt::Display for Charset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let extra: Vec<String> = self.extra.chars().map(|c| format!("'{c}'")).collect();
        match extra.split_last() {
            None => f.write_str("ASCII letters and digits"),
            Some((last, [])) => write!(f, "ASCII letters, digits and {last}"),
            Some((last, rest)) => {
                write!(f, "ASCII letters, digits, {} and {last}", rest.join(", "))
            }
        }
    }
}

fn check(what: &'static str, value: &str, max: usize, allowed: Charset) -> Result<(), InvalidId> {
    let len = value.chars().count();
    if len == 0 || len > max {
        return Err(InvalidId::Length { what, max, len });
    }
    if let Some(found) = value.chars().find(|c| !allowed.allows(*c)) {
        return Err(InvalidId::Character {
            what,
            allowed,
            found,
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr, $extra:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The longest accepted value, in characters.
            pub const MAX_LEN: usize = $max;
            /// The characters a value may hold.
            pub const CHARSET: Charset = Charset::alphanumeric_and($extra);
            /// What the value is, for messages and documentation.
            pub const WHAT: &'static str = $what;

            /// The anchored regular expression every accepted value matches
            /// (and no refused one does), for the API's documentation.
            pub fn pattern() -> String {
                Self::CHARSET.pattern(Self::MAX_LEN)
            }

            /// Checks `value` and wraps it.
            ///
            /// # Errors
            /// [`InvalidId`] when the value is empty, too long or holds a
            /// character outside the allowed set.
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                check($what, &value, $max, Self::CHARSET)?;
                Ok(Self(value))
            }

            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A node's id, as configured (`ast1`). Used in Redis keys and logs.
    NodeId,
    "node id",
    64,
    "_-"
);

id_type!(
    /// A room's name (`sales`). Appears in dialplan extensions
    /// (`conf-<room>`), bridge names and Redis keys.
    RoomName,
    "room name",
    64,
    "_-"
);

id_type!(
    /// A queue agent's id (`alice`). It is the last `-`-separated part of an
    /// `agent-<queue>-<agent>` extension, so it may not hold `-` itself.
    AgentId,
    "agent id",
    64,
    "_"
);

id_type!(
    /// A channel id as Asterisk gives it (`1767268800.42`, or
    /// `name-1767268800.42` with `systemname`). Unique only per node: key
    /// channels by `(NodeId, ChannelId)`.
    ChannelId,
    "channel id",
    128,
    "._-@"
);

id_type!(
    /// A bridge id on one node (`corral-conference-sales-7`). corral chooses
    /// the ids of its own bridges (`crate::names`); ids read from ARI stay
    /// strings until corral acts on them.
    BridgeId,
    "bridge id",
    128,
    "._-@"
);

id_type!(
    /// A single-use state token: `[A-Za-z0-9]` only, because dialplan
    /// matching ignores `-` and SIP cuts the user part at `;`.
    TokenId,
    "token",
    64,
    ""
);

/// How many characters a freshly minted token has: 22 base-62 characters
/// carry 130 bits, enough that a token cannot be guessed.
pub const TOKEN_LEN: usize = 22;

impl TokenId {
    /// Mints a fresh, unguessable token from `rng`.
    pub fn generate(rng: &mut impl rand::Rng) -> Self {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut s = String::with_capacity(TOKEN_LEN);
        while s.len() < TOKEN_LEN {
            // Rejection sampling keeps the alphabet uniform: 248 = 4 * 62.
            let b = (rng.next_u32() & 0xff) as u8;
            if b < 248 {
                s.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
        TokenId(s)
    }

    /// The first 8 characters, the only part of a token that may be logged
    /// (a token is a capability).
    pub fn prefix(&self) -> &str {
        let end = self.0.len().min(8);
        &self.0[..end]
    }
}

/// What a room is for. The kind decides the bridge type (mixing for a
/// conference, holding for a queue's waiting callers) and the bridge name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomKind {
    /// A conference: every member in one mixing bridge.
    Conference,
    /// A call queue: callers wait in a holding bridge, agents are bridged
    /// with them one pair at a time.
    Queue,
}

impl RoomKind {
    /// The kind as it appears in URLs, keys and Stasis arguments.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomKind::Conference => "conference",
            RoomKind::Queue => "queue",
        }
    }
}

impl fmt::Display for RoomKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RoomKind {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "conference" => Ok(RoomKind::Conference),
            "queue" => Ok(RoomKind::Queue),
            other => Err(InvalidId::Kind(other.chars().take(32).collect())),
        }
    }
}

/// A room: `(kind, name)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RoomKey {
    /// Conference or queue.
    pub kind: RoomKind,
    /// The room's name within its kind.
    pub name: RoomName,
}

impl RoomKey {
    /// A room key from its parts.
    pub fn new(kind: RoomKind, name: RoomName) -> Self {
        Self { kind, name }
    }

    /// Parses `kind` and `name` from untrusted strings.
    ///
    /// # Errors
    /// [`InvalidId`] naming the bad part.
    pub fn parse(kind: &str, name: &str) -> Result<Self, InvalidId> {
        Ok(Self {
            kind: kind.parse()?,
            name: RoomName::new(name)?,
        })
    }
}

impl fmt::Display for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

/// A placement's version. It grows by one on every change of owner, so a
/// cleanup that saw epoch `e` can refuse to touch a room now at `e + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A node's administrative and health state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Healthy: takes new rooms and joiners.
    Up,
    /// No new rooms; its running rooms still take joiners.
    Draining,
    /// Failed or gone: owns no rooms, takes nothing.
    Down,
}

impl NodeState {
    /// The state as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Draining => "draining",
            NodeState::Down => "down",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "up" => Ok(NodeState::Up),
            "draining" => Ok(NodeState::Draining),
            "down" => Ok(NodeState::Down),
            other => Err(format!("unknown node state {other:?}")),
        }
    }
}

/// One life of an Asterisk process: its entity id and its start time. A
/// restarted Asterisk is a new incarnation and must not inherit rooms.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Incarnation {
    /// `asterisk_id` (the EID, `xx:xx:xx:xx:xx:xx`).
    pub asterisk_id: String,
    /// `status.startup_time` from `GET /asterisk/info`, as Asterisk prints it.
    pub started: String,
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.asterisk_id, self.started)
    }
}

/// What a member does in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A conference participant.
    Participant,
    /// A queue caller waiting for an agent.
    Caller,
    /// A queue agent.
    Agent,
}

impl Role {
    /// The role as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Participant => "participant",
            Role::Caller => "caller",
            Role::Agent => "agent",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "participant" => Ok(Role::Participant),
            "caller" => Ok(Role::Caller),
            "agent" => Ok(Role::Agent),
            other => Err(format!("unknown role {other:?}")),
        }
    }
}

/// A node as the farm knows it: what the store keeps of it and what the
/// placement policy chooses from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct NodeRecord {
    /// The node.
    pub id: NodeId,
    /// Effective: down if unhealthy, else draining if drain flag, else up.
    pub state: NodeState,
    /// Health flag.
    pub healthy: bool,
    /// Operator's drain flag.
    pub draining: bool,
    /// A health check of it failed: no new rooms (its rooms stay) until a
    /// check answers or it is marked down.
    pub suspect: bool,
    /// The registered incarnation.
    pub incarnation: Option<Incarnation>,
    /// The SIP host other nodes redirect to.
    pub sip_host: String,
    /// Channels it is sized for.
    pub capacity: u32,
    /// Room cap.
    pub max_rooms: Option<u32>,
    /// Reported load (channels).
    pub channels: u32,
    /// Rooms it owns.
    pub rooms: u32,
    /// Members recorded in its rooms.
    pub members: u32,
    /// Last registration or report (store clock, Unix ms).
    pub updated_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_kind_is_checked() {
        assert!(RoomKey::parse("party", "x").is_err());
    }

    #[test]
    fn ids_refuse_key_breaking_characters() {
        for bad in ["", "a:b", "{corral:x}", "a b", "é", "a\nb", "a}"] {
            assert!(NodeId::new(bad).is_err(), "{bad:?} accepted");
            assert!(RoomName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(RoomName::new("x".repeat(65)).is_err());
        assert!(RoomName::new("sales-EU_2").is_ok());
        assert!(AgentId::new("al-ice").is_err());
        assert!(TokenId::new("abc-def").is_err());
    }

    /// The messages name each id's alphabet as they always did.
    #[test]
    fn charsets_describe_themselves() {
        assert_eq!(
            NodeId::CHARSET.to_string(),
            "ASCII letters, digits, '_' and '-'"
        );
        assert_eq!(
            AgentId::CHARSET.to_string(),
            "ASCII letters, digits and '_'"
        );
        assert_eq!(
            ChannelId::CHARSET.to_string(),
            "ASCII letters, digits, '.', '_', '-' and '@'"
        );
        assert_eq!(TokenId::CHARSET.to_string(), "ASCII letters and digits");
        assert_eq!(ChannelId::pattern(), "^[A-Za-z0-9._\\-@]{1,128}$");
        let e = AgentId::new("al-ice").unwrap_err().to_string();
        assert_eq!(
            e,
            "agent id may only contain ASCII letters, digits and '_'; found '-'"
        );
    }

    #[test]
    fn generated_tokens_are_alphanumeric_and_distinct() {
        let mut rng = rand::rng();
        let a = TokenId::generate(&mut rng);
        let b = TokenId::generate(&mut rng);
        assert_eq!(a.as_str().len(), TOKEN_LEN);
        assert!(a.as_str().chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert_eq!(a.prefix().len(), 8);
    }
}
