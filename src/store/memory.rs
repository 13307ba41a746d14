//! `MemoryStore`: the store in one process, for one replica (the default
//! when no Redis is configured), with the Redis backend's behaviour.
//!
//! All state sits behind one std `Mutex`, held for a few map operations and
//! never across an `.await`, so every operation is atomic like a Lua script.
//! Its clock is tokio's (`tokio::time::Instant`) offset by the wall clock at
//! creation, so tests with paused time drive linger, token expiry and lease
//! expiry without sleeping.
//!
//! # Guarantees
//!
//! Those of [`crate::store`]; `tests/store_conformance.rs` checks them on
//! both backends.
//!
//! # Failure
//!
//! It never fails for lack of a connection; it can only refuse bad input.
//! Its state dies with the process (one replica only).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::{
    CallArrival, CallPlaced, Consumed, Error, HealthChanged, Member, MemberAdded, MemberRemoved,
    NodeRecord, NodeRegistration, Placement, QueueDoc, QueueSave, Registered, Release, Resolution,
    RoomDetail, RoomFilter, RoomPage, Store, TOKEN_TOMBSTONE, TokenGrant, TokenJoin, TokenRecord,
};
use crate::domain::{
    ChannelId, Epoch, Incarnation, NodeId, Role, RoomKey, RoomKind, RoomName, TokenId,
};

/// How many mints between two sweeps of dead tokens.
const SWEEP_EVERY: u64 = 1024;

/// The in-memory store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct MemoryStore {
    farm: String,
    base: Instant,
    base_ms: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    epoch: u64,
    nodes: BTreeMap<NodeId, Node>,
    rooms: HashMap<RoomKey, Room>,
    index: HashMap<NodeId, BTreeSet<RoomKey>>,
    tokens: HashMap<TokenId, Token>,
    leases: HashMap<NodeId, (String, u64)>,
    mints: u64,
    queues: BTreeMap<RoomName, (u64, String, BTreeMap<u64, String>)>,
}

#[derive(Debug, Clone)]
struct Node {
    healthy: bool,
    draining: bool,
    suspect: bool,
    incarnation: Option<Incarnation>,
    generation: u64,
    sip_host: String,
    capacity: u32,
    max_rooms: Option<u32>,
    channels: u32,
    members: u32,
    updated_ms: u64,
}

#[derive(Debug, Clone)]
struct Room {
    node: NodeId,
    epoch: u64,
    created_ms: u64,
    generation: u64,
    empty_since: Option<u64>,
    members: BTreeMap<ChannelId, (Role, u64)>,
}

#[derive(Debug, Clone)]
struct Token {
    record: TokenRecord,
    gone_ms: u64,
    /// Consumed by this (node, channel); kept so that it may retry.
    used_by: Option<(NodeId, ChannelId)>,
}

impl MemoryStore {
    /// An empty store for `farm`.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad farm name.
    pub fn new(farm: &str) -> Result<Self, Error> {
        super::check_farm(farm)?;
        let base_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Ok(Self {
            farm: farm.to_owned(),
            base: Instant::now(),
            base_ms,
            state: Mutex::new(State::default()),
        })
    }

    /// The farm this store serves.
    pub fn farm(&self) -> &str {
        &self.farm
    }

    fn now_ms(&self) -> u64 {
        self.base_ms + self.base.elapsed().as_millis() as u64
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves maps that are each still
        // consistent (every operation validates before it mutates), so a
        // poisoned lock is taken over rather than propagated.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn owner_healthy(&self, room: &Room) -> bool {
        self.nodes
            .get(&room.node)
            .is_some_and(|n| n.healthy && n.generation == room.generation)
    }

    fn eligible(&self, node: &NodeId) -> Option<u64> {
        let n = self.nodes.get(node)?;
        if !n.healthy || n.draining || n.suspect {
            return None;
        }
        if let Some(max) = n.max_rooms {
            let owned = self.index.get(node).map_or(0, |s| s.len());
            if owned >= max as usize {
                return None;
            }
        }
        Some(n.generation)
    }

    /// Drops a room entirely: index entry, member count of its node.
    fn drop_room(&mut self, key: &RoomKey) -> Option<Room> {
        let room = self.rooms.remove(key)?;
        if let Some(idx) = self.index.get_mut(&room.node) {
            idx.remove(key);
        }
        if let Some(n) = self.nodes.get_mut(&room.node) {
            n.members = n.members.saturating_sub(room.members.len() as u32);
        }
        Some(room)
    }

    fn place(&mut self, key: &RoomKey, node: &NodeId, generation: u64, now: u64) -> u64 {
        self.epoch += 1;
        let epoch = self.epoch;
        self.rooms.insert(
            key.clone(),
            Room {
                node: node.clone(),
                epoch,
                created_ms: now,
                generation,
                empty_since: Some(now),
                members: BTreeMap::new(),
            },
        );
        self.index
            .entry(node.clone())
            .or_default()
            .insert(key.clone());
        epoch
    }

    /// Releases every room of `node` that is stale (node down, or placed by
    /// another generation).
    fn release_stale_rooms(&mut self, node: &NodeId) -> u32 {
        let Some(idx) = self.index.get(node) else {
            return 0;
        };
        let keys: Vec<RoomKey> = idx.iter().cloned().collect();
        let mut released = 0;
        for key in keys {
            let stale = match self.rooms.get(&key) {
                Some(room) => room.node != *node || !self.owner_healthy(room),
                None => true,
            };
            if !stale {
                continue;
            }
            match self.rooms.get(&key) {
                Some(room) if room.node == *node => {
                    self.drop_room(&key);
                    released += 1;
                }
                _ => {
                    if let Some(idx) = self.index.get_mut(node) {
                        idx.remove(&key);
                    }
                }
            }
        }
        released
    }

    /// The owner decision (`Store::resolve_placement`).
    fn resolve(&mut self, room: &RoomKey, choice: &NodeId, now: u64) -> Resolution {
        let mut previous = None;
        if let Some(current) = self.rooms.get(room) {
            if self.owner_healthy(current) {
                return Resolution::Owner {
                    node: current.node.clone(),
                    epoch: Epoch(current.epoch),
                    created: false,
                    previous: None,
                };
            }
            previous = Some(current.node.clone());
        }
        let Some(generation) = self.eligible(choice) else {
            return Resolution::ChoiceIneligible {
                node: choice.clone(),
            };
        };
        self.drop_room(room);
        let epoch = self.place(room, choice, generation, now);
        Resolution::Owner {
            node: choice.clone(),
            epoch: Epoch(epoch),
            created: true,
            previous,
        }
    }

    /// The member record (`Store::add_member`).
    fn add(
        &mut self,
        room: &RoomKey,
        node: &NodeId,
        channel: &ChannelId,
        role: Role,
        now: u64,
    ) -> Result<MemberAdded, Error> {
        let mut claimed = false;
        let owned = self
            .rooms
            .get(room)
            .filter(|r| self.owner_healthy(r))
            .map(|r| (r.node.clone(), r.epoch));
        match owned {
            Some((owner, epoch)) if owner != *node => {
                return Ok(MemberAdded::Moved {
                    owner,
                    epoch: Epoch(epoch),
                });
            }
            Some(_) => {}
            None => {
                let generation = match self.nodes.get(node) {
                    Some(n) if n.healthy => n.generation,
                    _ => {
                        return Err(Error::NodeUnavailable {
                            node: node.clone(),
                            room: room.clone(),
                        });
                    }
                };
                self.drop_room(room);
                self.place(room, node, generation, now);
                claimed = true;
            }
        }
        let Some(r) = self.rooms.get_mut(room) else {
            return Err(Error::Corrupt {
                what: format!("room {room}"),
                detail: "vanished under the lock".into(),
            });
        };
        let epoch = Epoch(r.epoch);
        if r.members.contains_key(channel) {
            return Ok(MemberAdded::AlreadyMember {
                epoch,
                members: r.members.len() as u32,
            });
        }
        r.members.insert(channel.clone(), (role, now));
        r.empty_since = None;
        let members = r.members.len() as u32;
        if let Some(n) = self.nodes.get_mut(node) {
            n.members += 1;
        }
        Ok(MemberAdded::Added {
            epoch,
            members,
            claimed,
        })
    }

    /// Stores a token (`Store::mint_token`); `None` when its id is taken.
    fn mint(
        &mut self,
        token: &TokenId,
        grant: TokenGrant,
        ttl: Duration,
        now: u64,
    ) -> Option<TokenRecord> {
        self.mints += 1;
        if self.mints.is_multiple_of(SWEEP_EVERY) {
            self.tokens.retain(|_, t| t.gone_ms > now);
        }
        if self.tokens.get(token).is_some_and(|t| t.gone_ms > now) {
            return None;
        }
        let expires_ms = now + ttl.as_millis() as u64;
        let record = TokenRecord {
            grant,
            minted_ms: now,
            expires_ms,
        };
        self.tokens.insert(
            token.clone(),
            Token {
                record: record.clone(),
                gone_ms: expires_ms + TOKEN_TOMBSTONE.as_millis() as u64,
                used_by: None,
            },
        );
        Some(record)
    }

    /// Uses a token on `node`, by `by` (kept, marked used, so that `by`
    /// may retry: `Store::consume_token_as`) or by nobody (deleted:
    /// `Store::consume_token`): the rule of `consume_token.lua`.
    fn consume(
        &mut self,
        token: &TokenId,
        node: &NodeId,
        by: Option<&ChannelId>,
        now: u64,
    ) -> Consumed {
        let Some(t) = self.tokens.get_mut(token).filter(|t| t.gone_ms > now) else {
            self.tokens.remove(token);
            return Consumed::Unknown;
        };
        if let Some((n, c)) = &t.used_by {
            return match by {
                Some(by) if n == node && c == by => Consumed::Ok(t.record.clone()),
                _ => Consumed::Unknown,
            };
        }
        let record = t.record.clone();
        if now >= record.expires_ms {
            return Consumed::Expired(record);
        }
        if record.grant.to != *node {
            return Consumed::WrongNode(record);
        }
        match by {
            Some(by) => t.used_by = Some((node.clone(), by.clone())),
            None => {
                self.tokens.remove(token);
            }
        }
        Consumed::Ok(record)
    }

    /// The compare-and-set of a queue's document (`Store::save_queue_parts`).
    fn save_queue(
        &mut self,
        queue: &RoomName,
        expected: u64,
        doc: &str,
        removed: &[u64],
        added: &[(u64, String)],
    ) -> Option<u64> {
        let current = self.queues.get(queue).map_or(0, |q| q.0);
        if current != expected {
            return None;
        }
        let entry = self
            .queues
            .entry(queue.clone())
            .or_insert_with(|| (0, String::new(), BTreeMap::new()));
        entry.0 = current + 1;
        entry.1 = doc.to_owned();
        for seq in removed {
            entry.2.remove(seq);
        }
        for (seq, e) in added {
            entry.2.insert(*seq, e.clone());
        }
        Some(current + 1)
    }

    fn placement(key: &RoomKey, room: &Room) -> Placement {
        Placement {
            room: key.clone(),
            node: room.node.clone(),
            epoch: Epoch(room.epoch),
            created_ms: room.created_ms,
            members: room.members.len() as u32,
            empty_since_ms: if room.members.is_empty() {
                room.empty_since
            } else {
                None
            },
        }
    }

    fn record(&self, id: &NodeId, n: &Node) -> NodeRecord {
        NodeRecord {
            id: id.clone(),
            state: super::effective_state(n.healthy, n.draining),
            healthy: n.healthy,
            draining: n.draining,
            suspect: n.suspect,
            incarnation: n.incarnation.clone(),
            sip_host: n.sip_host.clone(),
            capacity: n.capacity,
            max_rooms: n.max_rooms,
            channels: n.channels,
            rooms: self.index.get(id).map_or(0, |s| s.len() as u32),
            members: n.members,
            updated_ms: n.updated_ms,
        }
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn resolve_placement(
        &self,
        room: &RoomKey,
        choice: &NodeId,
    ) -> Result<Resolution, Error> {
        let now = self.now_ms();
        Ok(self.lock().resolve(room, choice, now))
    }

    async fn placed_owner(&self, room: &RoomKey) -> Result<Option<Resolution>, Error> {
        let st = self.lock();
        Ok(st
            .rooms
            .get(room)
            .filter(|r| st.owner_healthy(r))
            .map(|r| Resolution::Owner {
                node: r.node.clone(),
                epoch: Epoch(r.epoch),
                created: false,
                previous: None,
            }))
    }

    async fn place_call(&self, call: &CallArrival, choice: &NodeId) -> Result<CallPlaced, Error> {
        if let Some(r) = &call.redirect {
            super::check_redirect(r)?;
        }
        let now = self.now_ms();
        let mut st = self.lock();
        let (owner, epoch, created, previous) = match st.resolve(&call.room, choice, now) {
            Resolution::Owner {
                node,
                epoch,
                created,
                previous,
            } => (node, epoch, created, previous),
            Resolution::ChoiceIneligible { node } => {
                return Ok(CallPlaced::ChoiceIneligible { node });
            }
        };
        if owner == call.landing {
            let (members, already) =
                match st.add(&call.room, &owner, &call.channel, call.role, now)? {
                    MemberAdded::Added { members, .. } => (members, false),
                    MemberAdded::AlreadyMember { members, .. } => (members, true),
                    MemberAdded::Moved { .. } => {
                        return Err(Error::Corrupt {
                            what: format!("room {}", call.room),
                            detail: "moved under the lock".into(),
                        });
                    }
                };
            return Ok(CallPlaced::Joined {
                epoch,
                members,
                created,
                previous,
                already,
            });
        }
        let token = match &call.redirect {
            Some(r) => {
                let grant = TokenGrant {
                    room: call.room.clone(),
                    from: call.landing.clone(),
                    to: owner.clone(),
                    channel: call.channel.clone(),
                    caller: r.caller.clone(),
                    hops: r.hops,
                    agent: r.agent.clone(),
                };
                st.mint(&r.token, grant, r.ttl, now)
            }
            None => None,
        };
        Ok(CallPlaced::Elsewhere {
            owner,
            epoch,
            created,
            previous,
            token,
        })
    }

    async fn join_with_token(
        &self,
        token: &TokenId,
        node: &NodeId,
        channel: &ChannelId,
    ) -> Result<TokenJoin, Error> {
        let now = self.now_ms();
        let mut st = self.lock();
        let record = match st.consume(token, node, Some(channel), now) {
            Consumed::Ok(record) => record,
            other => return Ok(TokenJoin::NotConsumed(other)),
        };
        let role = super::grant_role(&record.grant);
        match st.add(&record.grant.room, node, channel, role, now) {
            Ok(member) => Ok(TokenJoin::Joined { record, member }),
            Err(Error::NodeUnavailable { .. }) => Ok(TokenJoin::NodeUnavailable { record }),
            Err(e) => Err(e),
        }
    }

    async fn get_room(&self, room: &RoomKey) -> Result<Option<RoomDetail>, Error> {
        let st = self.lock();
        Ok(st.rooms.get(room).map(|r| RoomDetail {
            placement: State::placement(room, r),
            members: r
                .members
                .iter()
                .map(|(channel, (role, joined))| Member {
                    node: r.node.clone(),
                    channel: channel.clone(),
                    role: *role,
                    joined_ms: *joined,
                })
                .collect(),
        }))
    }

    async fn add_member(
        &self,
        room: &RoomKey,
        node: &NodeId,
        channel: &ChannelId,
        role: Role,
    ) -> Result<MemberAdded, Error> {
        let now = self.now_ms();
        self.lock().add(room, node, channel, role, now)
    }

    async fn remove_member(
        &self,
        room: &RoomKey,
        node: &NodeId,
        channel: &ChannelId,
    ) -> Result<MemberRemoved, Error> {
        let now = self.now_ms();
        let mut st = self.lock();
        let Some(r) = st.rooms.get_mut(room) else {
            return Ok(MemberRemoved::NotMember);
        };
        if r.node != *node || r.members.remove(channel).is_none() {
            return Ok(MemberRemoved::NotMember);
        }
        if r.members.is_empty() {
            r.empty_since = Some(now);
        }
        let (remaining, epoch) = (r.members.len() as u32, Epoch(r.epoch));
        if let Some(n) = st.nodes.get_mut(node) {
            n.members = n.members.saturating_sub(1);
        }
        Ok(MemberRemoved::Removed { remaining, epoch })
    }

    async fn release_room(
        &self,
        room: &RoomKey,
        epoch: Epoch,
        linger: Duration,
    ) -> Result<Release, Error> {
        let now = self.now_ms();
        let mut st = self.lock();
        let Some(r) = st.rooms.get(room) else {
            return Ok(Release::NotFound);
        };
        if r.epoch != epoch.0 {
            return Ok(Release::EpochChanged {
                current: Epoch(r.epoch),
            });
        }
        if !r.members.is_empty() {
            return Ok(Release::NotEmpty);
        }
        let since = r.empty_since.unwrap_or(r.created_ms);
        if now.saturating_sub(since) < linger.as_millis() as u64 {
            return Ok(Release::TooSoon);
        }
        st.drop_room(room);
        Ok(Release::Released)
    }

    async fn mint_token(
        &self,
        token: &TokenId,
        grant: &TokenGrant,
        ttl: Duration,
    ) -> Result<(), Error> {
        super::check_grant(grant, ttl)?;
        let now = self.now_ms();
        match self.lock().mint(token, grant.clone(), ttl, now) {
            Some(_) => Ok(()),
            None => Err(Error::TokenExists {
                prefix: token.prefix().to_owned(),
            }),
        }
    }

    async fn peek_token(&self, token: &TokenId) -> Result<Option<TokenRecord>, Error> {
        let now = self.now_ms();
        let st = self.lock();
        Ok(st
            .tokens
            .get(token)
            .filter(|t| t.gone_ms > now && t.used_by.is_none())
            .map(|t| t.record.clone()))
    }

    async fn consume_token(&self, token: &TokenId, node: &NodeId) -> Result<Consumed, Error> {
        let now = self.now_ms();
        Ok(self.lock().consume(token, node, None, now))
    }

    async fn consume_token_as(
        &self,
        token: &TokenId,
        node: &NodeId,
        by: &ChannelId,
    ) -> Result<Consumed, Error> {
        let now = self.now_ms();
        Ok(self.lock().consume(token, node, Some(by), now))
    }

    async fn register_node(&self, reg: &NodeRegistration) -> Result<Registered, Error> {
        super::check_registration(reg)?;
        let now = self.now_ms();
        let mut st = self.lock();
        let (new_incarnation, release) = match st.nodes.get_mut(&reg.node) {
            Some(n) => {
                let changed = n.incarnation.as_ref() != Some(&reg.incarnation);
                let was_down = !n.healthy;
                if changed {
                    n.generation += 1;
                }
                n.healthy = true;
                n.suspect = false;
                n.incarnation = Some(reg.incarnation.clone());
                n.sip_host = reg.sip_host.clone();
                n.capacity = reg.capacity;
                n.max_rooms = reg.max_rooms;
                n.updated_ms = now;
                (changed, changed || was_down)
            }
            None => {
                st.nodes.insert(
                    reg.node.clone(),
                    Node {
                        healthy: true,
                        draining: false,
                        suspect: false,
                        incarnation: Some(reg.incarnation.clone()),
                        generation: 1,
                        sip_host: reg.sip_host.clone(),
                        capacity: reg.capacity,
                        max_rooms: reg.max_rooms,
                        channels: 0,
                        members: 0,
                        updated_ms: now,
                    },
                );
                (true, false)
            }
        };
        let released_rooms = if release {
            st.release_stale_rooms(&reg.node)
        } else {
            0
        };
        Ok(Registered {
            new_incarnation,
            released_rooms,
        })
    }

    async fn set_node_health(&self, node: &NodeId, healthy: bool) -> Result<HealthChanged, Error> {
        let now = self.now_ms();
        let mut st = self.lock();
        let Some(n) = st.nodes.get_mut(node) else {
            return Err(Error::UnknownNode { node: node.clone() });
        };
        let changed = n.healthy != healthy;
        if changed && !healthy {
            // A new generation: every room placed before this instant is
            // stale for good, even if the node comes back.
            n.generation += 1;
        }
        n.healthy = healthy;
        n.updated_ms = now;
        let released_rooms = if healthy {
            0
        } else {
            st.release_stale_rooms(node)
        };
        Ok(HealthChanged {
            changed,
            released_rooms,
        })
    }

    async fn set_node_drain(&self, node: &NodeId, draining: bool) -> Result<NodeRecord, Error> {
        let now = self.now_ms();
        let mut st = self.lock();
        let Some(n) = st.nodes.get_mut(node) else {
            return Err(Error::UnknownNode { node: node.clone() });
        };
        n.draining = draining;
        n.updated_ms = now;
        let n = n.clone();
        Ok(st.record(node, &n))
    }

    async fn set_node_suspect(&self, node: &NodeId, suspect: bool) -> Result<(), Error> {
        let mut st = self.lock();
        let Some(n) = st.nodes.get_mut(node) else {
            return Err(Error::UnknownNode { node: node.clone() });
        };
        n.suspect = suspect;
        Ok(())
    }

    async fn report_load(&self, node: &NodeId, channels: u32) -> Result<(), Error> {
        let now = self.now_ms();
        let mut st = self.lock();
        let Some(n) = st.nodes.get_mut(node) else {
            return Err(Error::UnknownNode { node: node.clone() });
        };
        n.channels = channels;
        n.updated_ms = now;
        Ok(())
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, Error> {
        let st = self.lock();
        Ok(st.nodes.iter().map(|(id, n)| st.record(id, n)).collect())
    }

    async fn list_rooms(
        &self,
        filter: &RoomFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RoomPage, Error> {
        let limit = super::page_limit(limit);
        let after = cursor.map(super::parse_cursor).transpose()?;
        let st = self.lock();
        let mut rooms = Vec::new();
        let mut more = false;
        'nodes: for node in st.nodes.keys() {
            if filter.node.as_ref().is_some_and(|f| f != node) {
                continue;
            }
            if let Some((an, _)) = &after
                && node < an
            {
                continue;
            }
            let Some(idx) = st.index.get(node) else {
                continue;
            };
            for key in idx {
                if let Some((an, ar)) = &after
                    && node == an
                    && key <= ar
                {
                    continue;
                }
                if filter.kind.is_some_and(|k| k != key.kind) {
                    continue;
                }
                let Some(r) = st.rooms.get(key) else {
                    continue;
                };
                if rooms.len() == limit {
                    more = true;
                    break 'nodes;
                }
                rooms.push(State::placement(key, r));
            }
        }
        let next = if more {
            rooms
                .last()
                .map(|p: &Placement| crate::names::cursor(&p.node, &p.room))
        } else {
            None
        };
        Ok(RoomPage { rooms, next })
    }

    async fn acquire_lease(
        &self,
        node: &NodeId,
        replica: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        super::check_replica(replica)?;
        let now = self.now_ms();
        let mut st = self.lock();
        match st.leases.get(node) {
            Some((holder, until)) if *until > now && holder != replica => Ok(false),
            _ => {
                st.leases.insert(
                    node.clone(),
                    (replica.to_owned(), now + ttl.as_millis().max(1) as u64),
                );
                Ok(true)
            }
        }
    }

    async fn release_lease(&self, node: &NodeId, replica: &str) -> Result<(), Error> {
        let mut st = self.lock();
        if st.leases.get(node).is_some_and(|(h, _)| h == replica) {
            st.leases.remove(node);
        }
        Ok(())
    }

    async fn load_queue(&self, queue: &RoomName) -> Result<Option<QueueDoc>, Error> {
        Ok(self.lock().queues.get(queue).map(|(v, d, c)| QueueDoc {
            version: *v,
            doc: d.clone(),
            callers: c.values().cloned().collect(),
        }))
    }

    async fn save_queue_parts(
        &self,
        queue: &RoomName,
        expected: u64,
        doc: &str,
        removed: &[u64],
        added: &[(u64, String)],
    ) -> Result<Option<u64>, Error> {
        super::check_queue_doc(doc, added)?;
        Ok(self.lock().save_queue(queue, expected, doc, removed, added))
    }

    async fn save_queue_on(
        &self,
        queue: &RoomName,
        owner: &NodeId,
        expected: u64,
        doc: &str,
        removed: &[u64],
        added: &[(u64, String)],
    ) -> Result<QueueSave, Error> {
        super::check_queue_doc(doc, added)?;
        let mut st = self.lock();
        let room = RoomKey::new(RoomKind::Queue, queue.clone());
        match st.rooms.get(&room) {
            Some(r) if r.node == *owner && st.owner_healthy(r) => {}
            Some(r) if r.node != *owner => return Ok(QueueSave::Moved(Some(r.node.clone()))),
            _ => return Ok(QueueSave::Moved(None)),
        }
        Ok(match st.save_queue(queue, expected, doc, removed, added) {
            Some(v) => QueueSave::Saved(v),
            None => QueueSave::Conflict,
        })
    }

    async fn queue_version(&self, queue: &RoomName) -> Result<u64, Error> {
        Ok(self.lock().queues.get(queue).map_or(0, |q| q.0))
    }

    async fn list_queues(&self) -> Result<Vec<RoomName>, Error> {
        Ok(self.lock().queues.keys().cloned().collect())
    }

    async fn ping(&self) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ChannelId, Incarnation, RoomKey};

    /// The memory store's clock is tokio's: paused time drives linger,
    /// token expiry and lease expiry without waiting.
    #[tokio::test(start_paused = true)]
    async fn linger_tokens_and_leases_follow_paused_time() {
        let s = MemoryStore::new("t").unwrap();
        let a = NodeId::new("a").unwrap();
        s.register_node(&NodeRegistration {
            node: a.clone(),
            incarnation: Incarnation {
                asterisk_id: "x".into(),
                started: "y".into(),
            },
            sip_host: "a.example".into(),
            capacity: 10,
            max_rooms: None,
        })
        .await
        .unwrap();
        let room = RoomKey::parse("conference", "r").unwrap();
        let epoch = match s.resolve_placement(&room, &a).await.unwrap() {
            Resolution::Owner { epoch, .. } => epoch,
            other => panic!("{other:?}"),
        };
        let linger = Duration::from_secs(30);
        assert_eq!(
            s.release_room(&room, epoch, linger).await.unwrap(),
            Release::TooSoon
        );
        tokio::time::advance(linger).await;
        assert_eq!(
            s.release_room(&room, epoch, linger).await.unwrap(),
            Release::Released
        );

        let token = TokenId::new("abc").unwrap();
        let grant = TokenGrant {
            room: room.clone(),
            from: a.clone(),
            to: a.clone(),
            channel: ChannelId::new("1.1").unwrap(),
            caller: String::new(),
            hops: 0,
            agent: None,
        };
        s.mint_token(&token, &grant, Duration::from_secs(5))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(matches!(
            s.consume_token(&token, &a).await.unwrap(),
            Consumed::Expired(_)
        ));
        tokio::time::advance(TOKEN_TOMBSTONE).await;
        assert_eq!(
            s.consume_token(&token, &a).await.unwrap(),
            Consumed::Unknown
        );

        assert!(
            s.acquire_lease(&a, "r1", Duration::from_secs(10))
                .await
                .unwrap()
        );
        assert!(
            !s.acquire_lease(&a, "r2", Duration::from_secs(10))
                .await
                .unwrap()
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(
            s.acquire_lease(&a, "r2", Duration::from_secs(10))
                .await
                .unwrap()
        );
    }
}
