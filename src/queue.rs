//! Call queues as data: who waits, in which order, which agents are free,
//! and the pure rules that pair them.
//!
//! A queue's whole state is one [`QueueState`] document in the store (see
//! `Store::save_queue`, a compare-and-set), so a restarted corral, or
//! another replica, resumes the queue where it was: callers keep their
//! positions, agents their states. Nothing here does I/O; the controller's
//! queue engine (`crate::controller::queues`) loads the document, applies one
//! of these transitions, saves it, and then does the ARI work the transition
//! asked for.
//!
//! # Rules
//! - Callers are served in arrival order (their position is the order in
//!   which they reached the queue's node): the longest-waiting caller gets
//!   the next agent.
//! - Call-in agents are chosen longest-idle first; static members by the
//!   queue's [`Distribution`].
//! - An agent is offered one caller at a time; after a call it is in
//!   wrap-up for the queue's wrap-up time, then available again.
//! - A paused agent gets no calls; a call in progress is not disturbed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::{AgentId, ChannelId, NodeId, RoomName};

/// How a queue's static members are rung.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    /// The available agent idle the longest.
    #[default]
    LongestIdle,
    /// The next available agent after the last one offered, by agent id.
    RoundRobin,
    /// Every available static member at once; the first to answer takes
    /// the caller, the others stop ringing.
    RingAll,
}

impl Distribution {
    /// The name used in configuration and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Distribution::LongestIdle => "longest-idle",
            Distribution::RoundRobin => "round-robin",
            Distribution::RingAll => "ring-all",
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Distribution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "longest-idle" => Ok(Distribution::LongestIdle),
            "round-robin" => Ok(Distribution::RoundRobin),
            "ring-all" => Ok(Distribution::RingAll),
            other => Err(format!(
                "unknown strategy {other:?} (longest-idle, round-robin or ring-all)"
            )),
        }
    }
}

/// A queue's knobs (`[queue_defaults]` and `[queues.<name>]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// How static members are chosen.
    pub strategy: Distribution,
    /// After a call, how long an agent stays unavailable.
    pub wrapup: Duration,
    /// Callers waiting at most; an arrival beyond it gets the treatment.
    pub max_callers: Option<u32>,
    /// Longest wait; a caller waiting longer gets the treatment.
    pub max_wait: Option<Duration>,
    /// How long a static member rings before it counts as no answer.
    pub ring_timeout: Duration,
    /// After a member fails (busy, no answer, failure), how long it is
    /// skipped.
    pub retry_after: Duration,
    /// The treatment: the dialplan context (and extension, priority 1) a
    /// caller continues at when the queue is full or its wait is over.
    /// `None`: the caller continues after `Stasis()` in its own context.
    pub overflow_context: Option<String>,
    /// The extension for `overflow_context`.
    pub overflow_extension: String,
    /// Static members configured for the queue (added when the queue is
    /// first used; the API adds and removes more).
    pub members: Vec<(AgentId, String)>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            strategy: Distribution::LongestIdle,
            wrapup: Duration::from_secs(5),
            max_callers: None,
            max_wait: None,
            ring_timeout: Duration::from_secs(15),
            retry_after: Duration::from_secs(5),
            overflow_context: None,
            overflow_extension: "s".into(),
            members: Vec::new(),
        }
    }
}

/// The longest static member dial string (endpoint) corral accepts, in
/// characters (bytes: every allowed character is ASCII).
pub const ENDPOINT_MAX_LEN: usize = 255;

/// Whether `c` may appear in an endpoint: printable ASCII except `,` (ARI
/// would read a comma as a second endpoint).
pub fn endpoint_char(c: char) -> bool {
    c.is_ascii_graphic() && c != ','
}

/// Whether `c` may appear in an endpoint's technology (before the first
/// `/`).
fn tech_char(c: char) -> bool {
    endpoint_char(c) && c != '/'
}

/// A regular-expression class of the ASCII characters `allowed` accepts, as
/// `\xNN` ranges (`[\x21-\x2B\x2D-\x7E]`), valid in ECMA-262 and Rust's
/// `regex`; made from the predicate itself, so the two cannot differ.
pub fn ascii_class(allowed: impl Fn(char) -> bool) -> String {
    let mut class = String::from("[");
    let mut c = 0u8;
    while c < 128 {
        if !allowed(char::from(c)) {
            c += 1;
            continue;
        }
        let first = c;
        while c < 127 && allowed(char::from(c + 1)) {
            c += 1;
        }
        class.push_str(&format!("\\x{first:02X}"));
        if c > first {
            class.push_str(&format!("-\\x{c:02X}"));
        }
        c += 1;
    }
    class.push(']');
    class
}

/// The pattern of an endpoint [`check_endpoint`] accepts (with its length
/// limit, [`ENDPOINT_MAX_LEN`], stated apart).
pub fn endpoint_pattern() -> String {
    format!(
        "^{tech}+/{rest}+$",
        tech = ascii_class(tech_char),
        rest = ascii_class(endpoint_char)
    )
}

/// Every queue's knobs: the defaults and the queues configured by name
/// (built from `[queue_defaults]` and `[queues.<name>]` by the config).
#[derive(Debug, Clone, Default)]
pub struct QueueConfig {
    /// For queues not in `by_name`.
    pub defaults: Arc<QueueSettings>,
    /// `[queues.<name>]`.
    pub by_name: HashMap<RoomName, Arc<QueueSettings>>,
}

impl QueueConfig {
    /// The knobs of `queue`.
    pub fn settings(&self, queue: &RoomName) -> Arc<QueueSettings> {
        self.by_name
            .get(queue)
            .cloned()
            .unwrap_or_else(|| self.defaults.clone())
    }
}

/// Checks a static member's dial string: `Tech/resource`, printable, no
/// commas (ARI would read them as several endpoints), at most
/// [`ENDPOINT_MAX_LEN`] characters: exactly what [`endpoint_pattern`]
/// matches.
///
/// # Errors
/// What is wrong with it.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let Some((tech, resource)) = endpoint.split_once('/') else {
        return Err(format!(
            "{endpoint:?} must be Tech/resource, e.g. PJSIP/alice"
        ));
    };
    if tech.is_empty() || resource.is_empty() {
        return Err(format!(
            "{endpoint:?} must be Tech/resource, e.g. PJSIP/alice"
        ));
    }
    if endpoint.len() > ENDPOINT_MAX_LEN || !endpoint.chars().all(endpoint_char) {
        return Err(format!(
            "must be at most {ENDPOINT_MAX_LEN} printable ASCII characters without ','"
        ));
    }
    Ok(())
}

/// A caller waiting in a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// Its channel on `node`.
    pub channel: ChannelId,
    /// The queue's node when it arrived.
    pub node: NodeId,
    /// Arrival order (smaller = earlier); positions are ranks of this.
    pub seq: u64,
    /// When it started waiting (Unix ms).
    pub since_ms: u64,
    /// Caller id, for operators.
    #[serde(default)]
    pub caller: String,
    /// Static members ringing for it right now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offered: Vec<AgentId>,
}

/// How an agent takes calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentKind {
    /// Logged in by calling `agent,<queue>,<agent>`; waits on `channel`.
    CallIn {
        /// The agent's own call.
        channel: ChannelId,
        /// Where it waits (the queue's node).
        node: NodeId,
    },
    /// Called by corral when a caller waits (`endpoint`, an ARI dial
    /// string such as `PJSIP/alice`).
    Static {
        /// What corral originates.
        endpoint: String,
    },
}

/// What an agent is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AgentState {
    /// Free for the next caller.
    Available,
    /// A static member's phone rings for `caller` (`channel` is the
    /// originated leg on `node`).
    Ringing {
        /// The caller offered.
        caller: ChannelId,
        /// The member's leg.
        channel: ChannelId,
        /// The node it was originated on.
        node: NodeId,
        /// When it started ringing (Unix ms).
        since_ms: u64,
    },
    /// Talking with `caller` in `bridge`.
    Busy {
        /// The caller (its waiting record, kept so a failed connect puts it
        /// back in its place).
        caller: Caller,
        /// The pair's mixing bridge id.
        bridge: String,
        /// A static member's leg (`None` for a call-in agent, whose leg is
        /// its login call).
        #[serde(default)]
        leg: Option<ChannelId>,
        /// Since when (Unix ms).
        since_ms: u64,
        /// True once both are in the bridge.
        #[serde(default)]
        connected: bool,
    },
    /// After a call, until `until_ms`.
    WrapUp {
        /// When the agent is available again (Unix ms).
        until_ms: u64,
    },
}

impl AgentState {
    /// The state's name as shown (`available`, `ringing`, `busy`,
    /// `wrap_up`).
    pub fn name(&self) -> &'static str {
        match self {
            AgentState::Available => "available",
            AgentState::Ringing { .. } => "ringing",
            AgentState::Busy { .. } => "busy",
            AgentState::WrapUp { .. } => "wrap_up",
        }
    }
}

/// An agent of a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// Call-in or static.
    #[serde(flatten)]
    pub kind: AgentKind,
    /// What it does now.
    pub activity: AgentState,
    /// Paused agents get no callers.
    #[serde(default)]
    pub paused: bool,
    /// Idle since (Unix ms): the longest-idle rule's key.
    pub idle_since_ms: u64,
    /// After a failed offer, skipped until then (Unix ms).
    #[serde(default)]
    pub retry_at_ms: u64,
    /// Callers it took.
    #[serde(default)]
    pub answered: u64,
    /// A static member removed while on a call: removed when the call ends.
    #[serde(default)]
    pub removing: bool,
    /// A call-in agent on its way back to the holding bridge after a call:
    /// not offered a caller until it is there.
    #[serde(default)]
    pub returning: bool,
}

impl Agent {
    /// Free, not paused, not backing off.
    fn eligible(&self, now_ms: u64) -> bool {
        self.activity == AgentState::Available
            && !self.paused
            && !self.returning
            && self.retry_at_ms <= now_ms
    }

    /// True for a static member.
    pub fn is_static(&self) -> bool {
        matches!(self.kind, AgentKind::Static { .. })
    }
}

/// A queue's whole state, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    /// Random, set when the queue is created: keeps the ids of member legs
    /// of different queues apart on one node.
    #[serde(default)]
    pub salt: u32,
    /// The next caller's `seq`.
    #[serde(default)]
    pub next_seq: u64,
    /// The next pair bridge's number.
    #[serde(default)]
    pub next_call: u64,
    /// Waiting callers, in arrival order. Stored apart from the document
    /// (one entry per caller, keyed by `seq`), so a change writes only the
    /// callers it changed.
    #[serde(skip)]
    pub callers: Vec<Caller>,
    /// Agents by id.
    #[serde(default)]
    pub agents: BTreeMap<AgentId, Agent>,
    /// Callers connected to an agent.
    #[serde(default)]
    pub answered: u64,
    /// Callers who hung up while waiting.
    #[serde(default)]
    pub abandoned: u64,
    /// Callers sent to the treatment after `max_wait`.
    #[serde(default)]
    pub timed_out: u64,
    /// Arrivals sent to the treatment because `max_callers` were waiting.
    #[serde(default)]
    pub overflowed: u64,
    /// Callers lost with their node.
    #[serde(default)]
    pub lost: u64,
    /// The static member offered last (round-robin).
    #[serde(default)]
    pub rr_last: Option<AgentId>,
}

/// What a channel is to a queue ([`QueueState::role_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRole {
    /// A caller, waiting or talking with an agent: a member of the room.
    Caller,
    /// A call-in agent's own call: a member of the room.
    Agent,
    /// A leg corral originated to a static member: the queue's, never a
    /// member of the room.
    MemberLeg,
}

/// Why an arrival is not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// `max_callers` are waiting.
    Full,
    /// The agent is logged in on another live channel.
    AlreadyLoggedIn(ChannelId),
    /// The agent exists as a static member.
    IsStatic,
}

/// Work a transition asks the engine to do over ARI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Bridge a caller with a call-in agent (or an answered member leg) in
    /// a new mixing bridge `bridge`.
    Connect {
        /// The caller.
        caller: ChannelId,
        /// The agent.
        agent: AgentId,
        /// The agent's leg to bridge.
        leg: ChannelId,
        /// The pair's bridge id.
        bridge: String,
    },
    /// Originate to a static member.
    Ring {
        /// The caller.
        caller: ChannelId,
        /// Caller id to show the member.
        caller_id: String,
        /// The member.
        agent: AgentId,
        /// Its dial string.
        endpoint: String,
        /// The id to give the new leg.
        leg: ChannelId,
    },
    /// Stop a member leg corral originated (ringing for a caller someone
    /// else took, or the far side of a finished call).
    HangupLeg {
        /// The leg.
        leg: ChannelId,
    },
    /// Put a call-in agent back in the holding bridge after a call; then
    /// [`QueueState::returned`] makes it eligible again.
    BackToHolding {
        /// The agent.
        agent: AgentId,
        /// The agent's channel.
        channel: ChannelId,
    },
    /// Give a caller back to the dialplan: the treatment (`overflow`) or
    /// the end of its call (`overflow: false`, continue after `Stasis()`).
    Continue {
        /// The caller.
        caller: ChannelId,
        /// True: to the overflow context.
        overflow: bool,
    },
    /// Destroy a pair's bridge.
    DestroyBridge {
        /// The bridge id.
        bridge: String,
    },
    /// An agent finished wrap-up at this time (Unix ms): arm a timer.
    WrapUpUntil {
        /// The agent.
        agent: AgentId,
        /// When.
        until_ms: u64,
    },
}

/// What a channel that went away was to the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gone {
    /// A waiting caller: abandoned.
    Abandoned {
        /// How long it waited.
        waited_ms: u64,
    },
    /// A caller or agent whose call ended.
    CallEnded,
    /// A call-in agent logged out.
    LoggedOut(AgentId),
    /// A member leg that was not answered.
    OfferFailed(AgentId),
    /// Not this queue's.
    Unknown,
}

impl QueueState {
    /// Parses a stored document.
    pub fn from_doc(doc: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(doc)
    }

    /// The document to store (everything but the waiting callers).
    pub fn to_doc(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// A stored caller entry.
    pub fn caller_to_entry(c: &Caller) -> String {
        serde_json::to_string(c).unwrap_or_else(|_| "{}".into())
    }

    /// Parses a stored caller entry.
    pub fn caller_from_entry(e: &str) -> Result<Caller, serde_json::Error> {
        serde_json::from_str(e)
    }

    /// What changed among waiting callers from `before` to now (both in
    /// `seq` order): the seqs to drop and the entries to write (a changed
    /// caller is both).
    pub fn callers_diff(&self, before: &[Caller]) -> (Vec<u64>, Vec<(u64, String)>) {
        let (mut removed, mut added) = (Vec::new(), Vec::new());
        let (mut i, mut j) = (0, 0);
        let now = &self.callers;
        while i < before.len() || j < now.len() {
            match (before.get(i), now.get(j)) {
                (Some(b), Some(n)) if b.seq == n.seq => {
                    if b != n {
                        removed.push(b.seq);
                        added.push((n.seq, Self::caller_to_entry(n)));
                    }
                    i += 1;
                    j += 1;
                }
                (Some(b), Some(n)) if b.seq < n.seq => {
                    removed.push(b.seq);
                    i += 1;
                }
                (Some(b), None) => {
                    removed.push(b.seq);
                    i += 1;
                }
                (_, Some(n)) => {
                    added.push((n.seq, Self::caller_to_entry(n)));
                    j += 1;
                }
                (None, None) => break,
            }
        }
        (removed, added)
    }

    /// 1-based position of `channel` among waiting callers.
    pub fn position(&self, channel: &ChannelId) -> Option<usize> {
        self.callers
            .iter()
            .position(|c| &c.channel == channel)
            .map(|i| i + 1)
    }

    /// Queues a caller at the back (a caller already waiting keeps its
    /// place). Returns its position.
    pub fn enqueue(
        &mut self,
        channel: ChannelId,
        node: NodeId,
        caller: String,
        now_ms: u64,
        settings: &QueueSettings,
    ) -> Result<usize, Refused> {
        if let Some(p) = self.position(&channel) {
            return Ok(p);
        }
        if self.busy_with(&channel).is_some() {
            return Ok(0);
        }
        if let Some(max) = settings.max_callers
            && self.callers.len() >= max as usize
        {
            self.overflowed += 1;
            return Err(Refused::Full);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.callers.push(Caller {
            channel,
            node,
            seq,
            since_ms: now_ms,
            caller,
            offered: Vec::new(),
        });
        Ok(self.callers.len())
    }

    /// Logs a call-in agent in. `alive` tells whether an existing login's
    /// channel still exists (a stale login is replaced).
    pub fn login(
        &mut self,
        agent: AgentId,
        channel: ChannelId,
        node: NodeId,
        now_ms: u64,
        alive: impl Fn(&ChannelId) -> bool,
    ) -> Result<(), Refused> {
        if let Some(a) = self.agents.get(&agent) {
            match &a.kind {
                AgentKind::Static { .. } => return Err(Refused::IsStatic),
                AgentKind::CallIn { channel: old, .. } if old == &channel => return Ok(()),
                AgentKind::CallIn { channel: old, .. } if alive(old) => {
                    return Err(Refused::AlreadyLoggedIn(old.clone()));
                }
                AgentKind::CallIn { .. } => {}
            }
        }
        self.agents.insert(
            agent,
            Agent {
                kind: AgentKind::CallIn { channel, node },
                activity: AgentState::Available,
                paused: false,
                idle_since_ms: now_ms,
                retry_at_ms: 0,
                answered: 0,
                removing: false,
                returning: false,
            },
        );
        Ok(())
    }

    /// Adds or updates a static member (its state is kept if it exists).
    pub fn add_member(&mut self, agent: AgentId, endpoint: String, paused: bool, now_ms: u64) {
        match self.agents.get_mut(&agent) {
            Some(a) => {
                a.kind = AgentKind::Static { endpoint };
                a.paused = paused;
                a.removing = false;
            }
            None => {
                self.agents.insert(
                    agent,
                    Agent {
                        kind: AgentKind::Static { endpoint },
                        activity: AgentState::Available,
                        paused,
                        idle_since_ms: now_ms,
                        retry_at_ms: 0,
                        answered: 0,
                        removing: false,
                        returning: false,
                    },
                );
            }
        }
    }

    /// Removes an agent: at once if idle, after its call if busy (returns
    /// the actions for a ringing member). `None` if unknown.
    pub fn remove_agent(&mut self, agent: &AgentId) -> Option<Vec<Action>> {
        let a = self.agents.get_mut(agent)?;
        let mut actions = Vec::new();
        match a.activity.clone() {
            AgentState::Busy { .. } => {
                a.removing = true;
                return Some(actions);
            }
            AgentState::Ringing {
                caller, channel, ..
            } => {
                actions.push(Action::HangupLeg { leg: channel });
                self.withdraw_offer(&caller, agent);
            }
            _ => {}
        }
        self.agents.remove(agent);
        Some(actions)
    }

    /// Sets the pause flag; `None` if the agent is unknown.
    pub fn set_paused(&mut self, agent: &AgentId, paused: bool) -> Option<()> {
        self.agents.get_mut(agent).map(|a| a.paused = paused)
    }

    fn withdraw_offer(&mut self, caller: &ChannelId, agent: &AgentId) {
        if let Some(c) = self.callers.iter_mut().find(|c| &c.channel == caller) {
            c.offered.retain(|a| a != agent);
        }
    }

    /// What `chan` is to the queue: a caller (waiting or talking), a
    /// call-in agent's own call, or a static member's leg (ringing or
    /// talking); `None` if the queue does not know it.
    pub fn role_of(&self, chan: &ChannelId) -> Option<QueueRole> {
        if self.callers.iter().any(|c| &c.channel == chan) {
            return Some(QueueRole::Caller);
        }
        self.agents.values().find_map(|a| {
            if matches!(&a.kind, AgentKind::CallIn { channel, .. } if channel == chan) {
                return Some(QueueRole::Agent);
            }
            match &a.activity {
                AgentState::Busy { caller, .. } if &caller.channel == chan => {
                    Some(QueueRole::Caller)
                }
                AgentState::Busy { leg: Some(leg), .. } if leg == chan => {
                    Some(QueueRole::MemberLeg)
                }
                AgentState::Ringing { channel, .. } if channel == chan => {
                    Some(QueueRole::MemberLeg)
                }
                _ => None,
            }
        })
    }

    /// The agent busy with `caller`, if any.
    pub fn busy_with(&self, caller: &ChannelId) -> Option<&AgentId> {
        self.agents.iter().find_map(|(id, a)| match &a.activity {
            AgentState::Busy { caller: c, .. } if &c.channel == caller => Some(id),
            _ => None,
        })
    }

    /// Pairs waiting callers with free agents, oldest caller first: call-in
    /// agents are connected at once (longest idle first); static members are
    /// rung by the queue's strategy. Marks everything it hands out, so a
    /// second call plans nothing twice.
    pub fn assign(&mut self, now_ms: u64, settings: &QueueSettings) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut i = 0;
        while i < self.callers.len() {
            // A caller with members ringing keeps them; it can still take a
            // call-in agent who frees up meanwhile.
            let mut callin: Vec<(&AgentId, &Agent)> = self
                .agents
                .iter()
                .filter(|(_, a)| a.eligible(now_ms) && !a.is_static())
                .collect();
            callin.sort_by_key(|(id, a)| (a.idle_since_ms, (*id).clone()));
            if let Some((id, _)) = callin.first() {
                let id = (*id).clone();
                let caller = self.callers.remove(i);
                for a in caller.offered.clone() {
                    actions.extend(self.cancel_ring(&a, now_ms));
                }
                let bridge = self.pair_bridge();
                let agent = self.agents.get_mut(&id).expect("chosen above");
                let AgentKind::CallIn { channel: leg, .. } = agent.kind.clone() else {
                    unreachable!("call-in agents only")
                };
                actions.push(Action::Connect {
                    caller: caller.channel.clone(),
                    agent: id,
                    leg,
                    bridge: bridge.clone(),
                });
                agent.activity = AgentState::Busy {
                    caller: Caller {
                        offered: Vec::new(),
                        ..caller
                    },
                    bridge,
                    leg: None,
                    since_ms: now_ms,
                    connected: false,
                };
                continue;
            }
            if !self.callers[i].offered.is_empty() {
                i += 1;
                continue;
            }
            let members = self.pick_members(now_ms, settings.strategy);
            if members.is_empty() {
                // No agent at all is free: later callers wait too.
                break;
            }
            let caller = self.callers[i].channel.clone();
            let caller_id = self.callers[i].caller.clone();
            let node = self.callers[i].node.clone();
            for id in members {
                let leg = self.member_leg(&id);
                let agent = self.agents.get_mut(&id).expect("picked");
                let AgentKind::Static { endpoint } = agent.kind.clone() else {
                    unreachable!("static members only")
                };
                agent.activity = AgentState::Ringing {
                    caller: caller.clone(),
                    channel: leg.clone(),
                    node: node.clone(),
                    since_ms: now_ms,
                };
                self.callers[i].offered.push(id.clone());
                self.rr_last = Some(id.clone());
                actions.push(Action::Ring {
                    caller: caller.clone(),
                    caller_id: caller_id.clone(),
                    agent: id,
                    endpoint,
                    leg,
                });
            }
            i += 1;
        }
        actions
    }

    fn pick_members(&self, now_ms: u64, strategy: Distribution) -> Vec<AgentId> {
        let mut free: Vec<(&AgentId, &Agent)> = self
            .agents
            .iter()
            .filter(|(_, a)| a.eligible(now_ms) && a.is_static())
            .collect();
        if free.is_empty() {
            return Vec::new();
        }
        match strategy {
            Distribution::RingAll => free.into_iter().map(|(id, _)| id.clone()).collect(),
            Distribution::LongestIdle => {
                free.sort_by_key(|(id, a)| (a.idle_since_ms, (*id).clone()));
                vec![free[0].0.clone()]
            }
            Distribution::RoundRobin => {
                // Agents are in id order; the first after the last offered.
                let next = match &self.rr_last {
                    Some(last) => free.iter().find(|(id, _)| *id > last).or(free.first()),
                    None => free.first(),
                };
                next.map(|(id, _)| vec![(*id).clone()]).unwrap_or_default()
            }
        }
    }

    fn pair_bridge(&mut self) -> String {
        self.next_call += 1;
        format!("qc{}", self.next_call)
    }

    fn member_leg(&mut self, agent: &AgentId) -> ChannelId {
        self.next_call += 1;
        // Agent ids are at most 64 word characters: the id stays valid.
        ChannelId::new(format!(
            "corral-m{:x}-{}-{agent}",
            self.salt, self.next_call
        ))
        .expect("word characters and a number")
    }

    /// A ringing member stops ringing: it goes back to available.
    fn cancel_ring(&mut self, agent: &AgentId, _now_ms: u64) -> Vec<Action> {
        let Some(a) = self.agents.get_mut(agent) else {
            return Vec::new();
        };
        let AgentState::Ringing { channel, .. } = a.activity.clone() else {
            return Vec::new();
        };
        a.activity = AgentState::Available;
        vec![Action::HangupLeg { leg: channel }]
    }

    /// A member leg was answered (`StasisStart` of `leg`): it takes its
    /// caller if the caller still waits for it; otherwise the leg is not
    /// needed (hang it up).
    pub fn member_answered(
        &mut self,
        agent: &AgentId,
        leg: &ChannelId,
        now_ms: u64,
    ) -> Vec<Action> {
        let ringing_for = match self.agents.get(agent).map(|a| &a.activity) {
            Some(AgentState::Ringing {
                caller, channel, ..
            }) if channel == leg => caller.clone(),
            _ => return vec![Action::HangupLeg { leg: leg.clone() }],
        };
        let Some(i) = self.callers.iter().position(|c| c.channel == ringing_for) else {
            // The caller is gone (or taken): this member is free again.
            if let Some(a) = self.agents.get_mut(agent) {
                a.activity = AgentState::Available;
            }
            return vec![Action::HangupLeg { leg: leg.clone() }];
        };
        let caller = self.callers.remove(i);
        let mut actions = Vec::new();
        for other in caller.offered.iter().filter(|a| *a != agent) {
            actions.extend(self.cancel_ring(other, now_ms));
        }
        let bridge = self.pair_bridge();
        let a = self.agents.get_mut(agent).expect("checked");
        a.activity = AgentState::Busy {
            caller: Caller {
                offered: Vec::new(),
                ..caller.clone()
            },
            bridge: bridge.clone(),
            leg: Some(leg.clone()),
            since_ms: now_ms,
            connected: false,
        };
        actions.push(Action::Connect {
            caller: caller.channel,
            agent: agent.clone(),
            leg: leg.clone(),
            bridge,
        });
        actions
    }

    /// Both sides of a pair are in its bridge: the caller is answered.
    /// Returns how long it waited and since when the pair could have been
    /// made (the later of the agent free and the caller waiting, Unix ms).
    pub fn connected(&mut self, agent: &AgentId) -> Option<(u64, u64)> {
        let a = self.agents.get_mut(agent)?;
        let idle_since = a.idle_since_ms;
        match &mut a.activity {
            AgentState::Busy {
                caller,
                connected,
                since_ms,
                ..
            } if !*connected => {
                *connected = true;
                let waited = since_ms.saturating_sub(caller.since_ms);
                let ready = idle_since.max(caller.since_ms);
                a.answered += 1;
                self.answered += 1;
                Some((waited, ready))
            }
            _ => None,
        }
    }

    /// A connect failed before both were bridged because `gone` left: the
    /// other side goes back (the caller to its place, by arrival order).
    pub fn connect_failed(
        &mut self,
        agent: &AgentId,
        caller_gone: bool,
        now_ms: u64,
    ) -> Vec<Action> {
        let Some(a) = self.agents.get(agent) else {
            return Vec::new();
        };
        let AgentState::Busy {
            caller,
            bridge,
            leg,
            ..
        } = a.activity.clone()
        else {
            return Vec::new();
        };
        let mut actions = vec![Action::DestroyBridge { bridge }];
        if caller_gone {
            self.abandoned += 1;
            let a = self.agents.get_mut(agent).expect("checked");
            a.activity = AgentState::Available;
            match (&a.kind, leg) {
                (AgentKind::CallIn { channel, .. }, _) => {
                    a.returning = true;
                    actions.push(Action::BackToHolding {
                        agent: agent.clone(),
                        channel: channel.clone(),
                    })
                }
                (AgentKind::Static { .. }, Some(leg)) => actions.push(Action::HangupLeg { leg }),
                _ => {}
            }
        } else {
            // The agent's side failed: the caller waits again in its place.
            self.requeue(caller);
            let a = self.agents.get_mut(agent).expect("checked");
            match &a.kind {
                AgentKind::CallIn { .. } => {
                    self.agents.remove(agent);
                }
                AgentKind::Static { .. } => {
                    a.activity = AgentState::Available;
                    a.retry_at_ms = now_ms;
                }
            }
        }
        actions
    }

    fn requeue(&mut self, caller: Caller) {
        let at = self
            .callers
            .iter()
            .position(|c| c.seq > caller.seq)
            .unwrap_or(self.callers.len());
        self.callers.insert(at, caller);
    }

    /// A channel of this queue went away (hangup, or gone from its node).
    pub fn channel_gone(
        &mut self,
        channel: &ChannelId,
        now_ms: u64,
        settings: &QueueSettings,
    ) -> (Gone, Vec<Action>) {
        // A waiting caller.
        if let Some(i) = self.callers.iter().position(|c| &c.channel == channel) {
            let caller = self.callers.remove(i);
            self.abandoned += 1;
            let mut actions = Vec::new();
            for a in &caller.offered {
                actions.extend(self.cancel_ring(a, now_ms));
            }
            return (
                Gone::Abandoned {
                    waited_ms: now_ms.saturating_sub(caller.since_ms),
                },
                actions,
            );
        }
        let hit = self.agents.iter().find_map(|(id, a)| {
            let own = matches!(&a.kind, AgentKind::CallIn { channel: c, .. } if c == channel);
            match &a.activity {
                AgentState::Busy { caller, .. } if &caller.channel == channel => {
                    Some((id.clone(), "caller"))
                }
                AgentState::Busy { leg: Some(l), .. } if l == channel => Some((id.clone(), "leg")),
                AgentState::Ringing { channel: l, .. } if l == channel => {
                    Some((id.clone(), "ringing"))
                }
                _ if own => Some((id.clone(), "agent")),
                _ => None,
            }
        });
        let Some((id, what)) = hit else {
            return (Gone::Unknown, Vec::new());
        };
        let a = self.agents.get(&id).cloned().expect("found");
        match (what, a.activity.clone()) {
            ("ringing", AgentState::Ringing { caller, .. }) => {
                let agent = self.agents.get_mut(&id).expect("found");
                agent.activity = AgentState::Available;
                agent.retry_at_ms = now_ms + settings.retry_after.as_millis() as u64;
                if agent.removing {
                    self.agents.remove(&id);
                }
                self.withdraw_offer(&caller, &id);
                (Gone::OfferFailed(id), Vec::new())
            }
            (
                "caller",
                AgentState::Busy {
                    bridge,
                    leg,
                    connected,
                    ..
                },
            ) => {
                if !connected {
                    // Hung up between being picked and being bridged.
                    return (
                        Gone::Abandoned { waited_ms: 0 },
                        self.connect_failed(&id, true, now_ms),
                    );
                }
                let mut actions = vec![Action::DestroyBridge { bridge }];
                let until = now_ms + settings.wrapup.as_millis() as u64;
                match (&a.kind, leg) {
                    (AgentKind::CallIn { channel, .. }, _) => {
                        if let Some(x) = self.agents.get_mut(&id) {
                            x.returning = true;
                        }
                        actions.push(Action::BackToHolding {
                            agent: id.clone(),
                            channel: channel.clone(),
                        })
                    }
                    (AgentKind::Static { .. }, Some(leg)) => {
                        actions.push(Action::HangupLeg { leg })
                    }
                    _ => {}
                }
                actions.extend(self.end_call(&id, until));
                (Gone::CallEnded, actions)
            }
            (
                "leg" | "agent",
                AgentState::Busy {
                    caller,
                    bridge,
                    connected,
                    ..
                },
            ) => {
                if !connected {
                    return (Gone::CallEnded, self.connect_failed(&id, false, now_ms));
                }
                let mut actions = vec![
                    Action::DestroyBridge { bridge },
                    Action::Continue {
                        caller: caller.channel,
                        overflow: false,
                    },
                ];
                if what == "agent" {
                    self.agents.remove(&id);
                    return (Gone::LoggedOut(id), actions);
                }
                let until = now_ms + settings.wrapup.as_millis() as u64;
                actions.extend(self.end_call(&id, until));
                (Gone::CallEnded, actions)
            }
            ("agent", _) => {
                self.agents.remove(&id);
                (Gone::LoggedOut(id), Vec::new())
            }
            _ => (Gone::Unknown, Vec::new()),
        }
    }

    fn end_call(&mut self, agent: &AgentId, until_ms: u64) -> Vec<Action> {
        let Some(a) = self.agents.get_mut(agent) else {
            return Vec::new();
        };
        if a.removing {
            self.agents.remove(agent);
            return Vec::new();
        }
        a.activity = AgentState::WrapUp { until_ms };
        vec![Action::WrapUpUntil {
            agent: agent.clone(),
            until_ms,
        }]
    }

    /// A call-in agent is back in the holding bridge.
    pub fn returned(&mut self, agent: &AgentId) {
        if let Some(a) = self.agents.get_mut(agent) {
            a.returning = false;
        }
    }

    /// Agents whose wrap-up is over become available (idle from then).
    pub fn end_wrapups(&mut self, now_ms: u64) -> usize {
        let mut n = 0;
        for a in self.agents.values_mut() {
            if let AgentState::WrapUp { until_ms } = a.activity
                && until_ms <= now_ms
            {
                a.activity = AgentState::Available;
                a.idle_since_ms = until_ms;
                n += 1;
            }
        }
        n
    }

    /// Waiting callers past `max_wait` leave the queue for the treatment.
    pub fn expire(&mut self, now_ms: u64, settings: &QueueSettings) -> Vec<Action> {
        let Some(max) = settings.max_wait else {
            return Vec::new();
        };
        let max = max.as_millis() as u64;
        let mut actions = Vec::new();
        let (out, keep): (Vec<Caller>, Vec<Caller>) = std::mem::take(&mut self.callers)
            .into_iter()
            .partition(|c| now_ms.saturating_sub(c.since_ms) >= max);
        self.callers = keep;
        for c in out {
            self.timed_out += 1;
            for a in &c.offered {
                actions.extend(self.cancel_ring(a, now_ms));
            }
            actions.push(Action::Continue {
                caller: c.channel,
                overflow: true,
            });
        }
        actions
    }

    /// Everything of the queue that lived on `node` is gone with it: its
    /// waiting callers are lost, its call-in agents logged out, static
    /// members busy or ringing there are free again.
    pub fn node_lost(&mut self, node: &NodeId) -> usize {
        let before = self.callers.len();
        self.callers.retain(|c| &c.node != node);
        let mut lost = before - self.callers.len();
        let mut gone = Vec::new();
        for (id, a) in self.agents.iter_mut() {
            if matches!(&a.kind, AgentKind::CallIn { node: n, .. } if n == node) {
                if matches!(a.activity, AgentState::Busy { .. }) {
                    lost += 1;
                }
                gone.push(id.clone());
                continue;
            }
            let on_node = match &a.activity {
                AgentState::Ringing { node: n, .. } => n == node,
                AgentState::Busy { caller, .. } => &caller.node == node,
                _ => false,
            };
            if on_node {
                if matches!(a.activity, AgentState::Busy { .. }) {
                    lost += 1;
                }
                a.activity = AgentState::Available;
            }
        }
        for id in gone {
            self.agents.remove(&id);
        }
        for c in &mut self.callers {
            c.offered.retain(|a| {
                self.agents
                    .get(a)
                    .is_some_and(|x| matches!(x.activity, AgentState::Ringing { .. }))
            });
        }
        self.lost += lost as u64;
        lost
    }

    /// Every channel the queue knows on `node` (callers, call-in agents,
    /// member legs), for resync and event routing.
    pub fn channels_on(&self, node: &NodeId) -> Vec<ChannelId> {
        let mut out: Vec<ChannelId> = self
            .callers
            .iter()
            .filter(|c| &c.node == node)
            .map(|c| c.channel.clone())
            .collect();
        for a in self.agents.values() {
            if let AgentKind::CallIn { channel, node: n } = &a.kind
                && n == node
            {
                out.push(channel.clone());
            }
            match &a.activity {
                AgentState::Busy { caller, leg, .. } if &caller.node == node => {
                    out.push(caller.channel.clone());
                    out.extend(leg.clone());
                }
                AgentState::Ringing {
                    channel, node: n, ..
                } if n == node => out.push(channel.clone()),
                _ => {}
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The longest current wait (ms).
    pub fn longest_wait_ms(&self, now_ms: u64) -> u64 {
        self.callers
            .iter()
            .map(|c| now_ms.saturating_sub(c.since_ms))
            .max()
            .unwrap_or(0)
    }

    /// Agents by state name (`paused` counted apart from available).
    pub fn agent_counts(&self) -> BTreeMap<&'static str, u32> {
        let mut m = BTreeMap::new();
        for a in self.agents.values() {
            let name = if a.paused && a.activity == AgentState::Available {
                "paused"
            } else {
                a.activity.name()
            };
            *m.entry(name).or_insert(0) += 1;
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(s: &str) -> ChannelId {
        ChannelId::new(s).unwrap()
    }
    fn ag(s: &str) -> AgentId {
        AgentId::new(s).unwrap()
    }
    fn n() -> NodeId {
        NodeId::new("ast1").unwrap()
    }

    fn connects(actions: &[Action]) -> Vec<(String, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Connect { caller, agent, .. } => {
                    Some((caller.to_string(), agent.to_string()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn oldest_caller_gets_longest_idle_agent() {
        let s = QueueSettings::default();
        let mut q = QueueState::default();
        for (i, c) in ["c1", "c2", "c3"].iter().enumerate() {
            assert_eq!(
                q.enqueue(ch(c), n(), String::new(), i as u64, &s),
                Ok(i + 1)
            );
        }
        q.login(ag("bob"), ch("b"), n(), 20, |_| true).unwrap();
        q.login(ag("amy"), ch("a"), n(), 10, |_| true).unwrap();
        let acts = q.assign(30, &s);
        assert_eq!(
            connects(&acts),
            vec![("c1".into(), "amy".into()), ("c2".into(), "bob".into())]
        );
        assert_eq!(q.position(&ch("c3")), Some(1));
        assert!(q.assign(31, &s).is_empty(), "nothing is handed out twice");
        assert_eq!(q.connected(&ag("amy")), Some((30, 10)));
        assert_eq!(q.answered, 1);
    }

    #[test]
    fn wrapup_then_available_again() {
        let s = QueueSettings {
            wrapup: Duration::from_millis(100),
            ..Default::default()
        };
        let mut q = QueueState::default();
        q.enqueue(ch("c1"), n(), String::new(), 0, &s).unwrap();
        q.login(ag("amy"), ch("a"), n(), 0, |_| true).unwrap();
        q.assign(1, &s);
        q.connected(&ag("amy"));
        let (gone, acts) = q.channel_gone(&ch("c1"), 50, &s);
        assert_eq!(gone, Gone::CallEnded);
        assert!(acts.contains(&Action::BackToHolding {
            agent: ag("amy"),
            channel: ch("a")
        }));
        q.returned(&ag("amy"));
        q.enqueue(ch("c2"), n(), String::new(), 60, &s).unwrap();
        assert!(q.assign(100, &s).is_empty(), "in wrap-up");
        assert_eq!(q.end_wrapups(150), 1);
        assert_eq!(connects(&q.assign(150, &s)).len(), 1);
    }

    #[test]
    fn failed_connect_puts_the_caller_back_in_its_place() {
        let s = QueueSettings::default();
        let mut q = QueueState::default();
        for c in ["c1", "c2"] {
            q.enqueue(ch(c), n(), String::new(), 0, &s).unwrap();
        }
        q.login(ag("amy"), ch("a"), n(), 0, |_| true).unwrap();
        q.assign(1, &s);
        // The agent hung up before the bridge: it is logged out.
        let (_, acts) = q.channel_gone(&ch("a"), 2, &s);
        assert!(matches!(acts[0], Action::DestroyBridge { .. }));
        assert_eq!(q.position(&ch("c1")), Some(1));
        assert_eq!(q.position(&ch("c2")), Some(2));
        assert!(q.agents.is_empty());
    }

    #[test]
    fn abandon_and_limits() {
        let s = QueueSettings {
            max_callers: Some(2),
            max_wait: Some(Duration::from_millis(100)),
            ..Default::default()
        };
        let mut q = QueueState::default();
        q.enqueue(ch("c1"), n(), String::new(), 0, &s).unwrap();
        q.enqueue(ch("c2"), n(), String::new(), 50, &s).unwrap();
        assert_eq!(
            q.enqueue(ch("c3"), n(), String::new(), 60, &s),
            Err(Refused::Full)
        );
        let (gone, _) = q.channel_gone(&ch("c2"), 70, &s);
        assert_eq!(gone, Gone::Abandoned { waited_ms: 20 });
        let acts = q.expire(100, &s);
        assert_eq!(
            acts,
            vec![Action::Continue {
                caller: ch("c1"),
                overflow: true
            }]
        );
        assert_eq!((q.abandoned, q.timed_out, q.overflowed), (1, 1, 1));
    }

    #[test]
    fn second_login_is_refused_while_the_first_lives() {
        let mut q = QueueState::default();
        q.login(ag("amy"), ch("a1"), n(), 0, |_| true).unwrap();
        assert_eq!(
            q.login(ag("amy"), ch("a2"), n(), 1, |_| true),
            Err(Refused::AlreadyLoggedIn(ch("a1")))
        );
        q.login(ag("amy"), ch("a2"), n(), 1, |_| false).unwrap();
    }

    #[test]
    fn static_members_by_strategy() {
        let mut s = QueueSettings::default();
        let mut q = QueueState::default();
        q.add_member(ag("a"), "PJSIP/a".into(), false, 5);
        q.add_member(ag("b"), "PJSIP/b".into(), false, 1);
        q.add_member(ag("c"), "PJSIP/c".into(), false, 3);
        q.enqueue(ch("c1"), n(), "100".into(), 0, &s).unwrap();
        let rung = |acts: &[Action]| -> Vec<String> {
            acts.iter()
                .filter_map(|a| match a {
                    Action::Ring { agent, .. } => Some(agent.to_string()),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(rung(&q.assign(10, &s)), vec!["b"]);
        // Busy (the leg died unanswered): skipped for retry_after.
        let leg = match &q.agents[&ag("b")].activity {
            AgentState::Ringing { channel, .. } => channel.clone(),
            _ => panic!("ringing"),
        };
        assert!(matches!(
            q.channel_gone(&leg, 11, &s).0,
            Gone::OfferFailed(_)
        ));
        assert_eq!(rung(&q.assign(12, &s)), vec!["c"]);

        s.strategy = Distribution::RingAll;
        let mut q2 = QueueState::default();
        q2.add_member(ag("a"), "PJSIP/a".into(), false, 5);
        q2.add_member(ag("b"), "PJSIP/b".into(), false, 1);
        q2.enqueue(ch("c1"), n(), String::new(), 0, &s).unwrap();
        let acts = q2.assign(1, &s);
        assert_eq!(rung(&acts), vec!["a", "b"]);
        let leg_b = match &q2.agents[&ag("b")].activity {
            AgentState::Ringing { channel, .. } => channel.clone(),
            _ => panic!(),
        };
        let acts = q2.member_answered(&ag("b"), &leg_b, 2);
        assert!(
            matches!(acts[0], Action::HangupLeg { .. }),
            "a stops ringing"
        );
        assert_eq!(connects(&acts), vec![("c1".into(), "b".into())]);
        assert_eq!(q2.agents[&ag("a")].activity, AgentState::Available);

        s.strategy = Distribution::RoundRobin;
        let mut q3 = QueueState::default();
        for x in ["a", "b", "c"] {
            q3.add_member(ag(x), format!("PJSIP/{x}"), false, 0);
        }
        let mut order = Vec::new();
        for i in 0..4 {
            q3.enqueue(ch(&format!("c{i}")), n(), String::new(), i, &s)
                .unwrap();
            let acts = q3.assign(i, &s);
            order.extend(rung(&acts));
            for a in q3.agents.values_mut() {
                a.activity = AgentState::Available;
            }
            q3.callers.clear();
        }
        assert_eq!(order, vec!["a", "b", "c", "a"]);
    }

    #[test]
    fn node_loss_clears_what_lived_there() {
        let s = QueueSettings::default();
        let mut q = QueueState::default();
        q.enqueue(ch("c1"), n(), String::new(), 0, &s).unwrap();
        q.login(ag("amy"), ch("a"), n(), 0, |_| true).unwrap();
        q.add_member(ag("sam"), "PJSIP/sam".into(), false, 0);
        q.enqueue(ch("c2"), n(), String::new(), 0, &s).unwrap();
        q.assign(1, &s);
        assert_eq!(q.channels_on(&n()).len(), 4);
        q.node_lost(&n());
        assert!(q.callers.is_empty());
        assert_eq!(q.agents.len(), 1);
        assert_eq!(q.agents[&ag("sam")].activity, AgentState::Available);
    }

    #[test]
    fn documents_round_trip() {
        let s = QueueSettings::default();
        let mut q = QueueState::default();
        q.enqueue(ch("c1"), n(), "Ann".into(), 0, &s).unwrap();
        q.login(ag("amy"), ch("a"), n(), 0, |_| true).unwrap();
        q.add_member(ag("sam"), "PJSIP/sam".into(), true, 0);
        q.assign(1, &s);
        let mut back = QueueState::from_doc(&q.to_doc()).unwrap();
        assert!(back.callers.is_empty(), "callers are stored apart");
        let (removed, added) = q.callers_diff(&[]);
        assert!(removed.is_empty());
        back.callers = added
            .iter()
            .map(|(_, e)| QueueState::caller_from_entry(e).unwrap())
            .collect();
        assert_eq!(back, q);
        // A diff names only what changed.
        q.enqueue(ch("c9"), n(), String::new(), 4, &s).unwrap();
        let before = q.callers.clone();
        q.enqueue(ch("c2"), n(), String::new(), 5, &s).unwrap();
        let (removed, added) = q.callers_diff(&before);
        assert_eq!((removed.len(), added.len()), (0, 1));
        q.callers.remove(0);
        let (removed, added) = q.callers_diff(&before);
        assert_eq!((removed, added.len()), (vec![before[0].seq], 1));
    }
}
