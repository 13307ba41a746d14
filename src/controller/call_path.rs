//! The call path: a `StasisStart` becomes a join on this node or a redirect
//! to the room's node, with a token the destination consumes.
//!
//! # Expected flow (`DESIGN.md`, "The call path")
//! 1. `StasisStart` with `conference,<room>` (or `queue,<name>`) on node X:
//!    resolve the owner atomically (landing node first when eligible).
//! 2. Owner X: record the member, answer, bridge.
//! 3. Owner Y: mint a token bound to Y, redirect the still-ringing channel to
//!    `PJSIP/sip:<token>@<Y's sip_host>`; the 204 means "queued" only.
//! 4. On Y the call arrives as a new channel whose extension is the token:
//!    consume it (once, only on Y) and join. A token for another node, an
//!    expired one, or a room that moved is re-resolved with its hop count
//!    raised; past the hop limit the call joins where it is (a split).
//!
//! # Failure
//! No call is dropped by corral: when the store is down or no node is
//! eligible the call joins where it landed (degraded, counted); a call whose
//! arguments make no sense is handed back to the dialplan (`continue`), so
//! the operator's fallback runs.

use std::sync::Arc;
use std::time::Instant;

use super::rooms::MoveFailed;
use super::{Controller, FarmEvent, NodeRuntime};
use crate::ari::rest::Channel;
use crate::domain::{AgentId, ChannelId, NodeId, Role, RoomKey, RoomKind, RoomName, TokenId};
use crate::store::{Consumed, MemberAdded, TokenGrant, TokenRecord};

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

/// Reads the arguments of `Stasis(corral,<args>)` and the channel's
/// extension. Pure: the unit tests cover every shape.
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
    fn role(&self) -> Role {
        match self {
            Who::Participant => Role::Participant,
            Who::Caller => Role::Caller,
            Who::Agent(_) => Role::Agent,
        }
    }
}

/// The owner decision for one arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The room lives here.
    Here,
    /// The room lives on another node.
    There(NodeId),
    /// No placement could be made: join here, counted.
    Degraded(&'static str),
}

impl Controller {
    /// Handles a `StasisStart` on `node`. Runs in the channel's worker.
    pub(crate) async fn on_stasis_start(
        &self,
        node: &Arc<NodeRuntime>,
        args: &[String],
        channel: &Channel,
    ) {
        let started = Instant::now();
        let Ok(chan) = ChannelId::new(channel.id.as_str()) else {
            self.inner.metrics.bad_event(&node.id, "channel_id");
            tracing::warn!(node = %node.id, "StasisStart with an unusable channel id ignored");
            return;
        };
        if node
            .channels
            .lock()
            .is_ok_and(|c| c.contains_key(chan.as_str()))
        {
            // Joined already (a resync placed it before this event came).
            return;
        }
        match parse_arrival(args, &channel.dialplan.exten) {
            Arrival::Room(room, role) => {
                self.inner.metrics.arrival(&node.id, room.kind.as_str());
                let who = if role == Role::Caller {
                    Who::Caller
                } else {
                    Who::Participant
                };
                self.place(node, &chan, channel, &room, who, 0, "direct", started)
                    .await;
            }
            Arrival::Agent(room, agent) => {
                self.inner.metrics.arrival(&node.id, "agent");
                self.place(
                    node,
                    &chan,
                    channel,
                    &room,
                    Who::Agent(agent),
                    0,
                    "direct",
                    started,
                )
                .await;
            }
            Arrival::Member(queue, agent) => {
                self.inner.metrics.arrival(&node.id, "member");
                self.queue_member_answered(node, &chan, &queue, &agent)
                    .await;
            }
            Arrival::Token(token) => {
                self.inner.metrics.arrival(&node.id, "token");
                self.on_token(node, &chan, channel, &token, started).await;
            }
            Arrival::Odd(why) => {
                self.inner.metrics.bad_event(&node.id, "odd_args");
                tracing::warn!(node = %node.id, channel = %chan, reason = %why, "call is not for corral; handed back to the dialplan");
                self.hand_back(node, &chan).await;
            }
        }
    }

    /// Resolves the owner of `room` for an arrival on `landing`; a store
    /// that cannot answer or a farm with no eligible node means a degraded
    /// join where the call landed.
    pub(crate) async fn decide(&self, room: &RoomKey, landing: &NodeId) -> Decision {
        match self.resolve(room, Some(landing)).await {
            Ok((node, _, _)) if &node == landing => Decision::Here,
            Ok((node, _, _)) => Decision::There(node),
            Err(super::apps::AppError::Store(e)) => {
                tracing::warn!(room = %room, node = %landing, reason = %e, "store unavailable; joining where the call landed");
                Decision::Degraded("store_unavailable")
            }
            Err(_) => Decision::Degraded("no_eligible_node"),
        }
    }

    /// Places one call: join here, or redirect to the owner.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn place(
        &self,
        node: &Arc<NodeRuntime>,
        chan: &ChannelId,
        channel: &Channel,
        room: &RoomKey,
        who: Who,
        hops: u32,
        how: &'static str,
        started: Instant,
    ) {
        match self.decide(room, &node.id).await {
            Decision::Here => {
                self.join_here(node, chan, channel, room, who, hops, how, started)
                    .await
            }
            Decision::There(owner) => {
                self.redirect_or_join(node, chan, channel, room, &owner, who, hops, started)
                    .await
            }
            Decision::Degraded(reason) => {
                self.join_degraded(node, chan, room, reason, started).await
            }
        }
    }

    /// Records the member here and bridges the call; if the store says the
    /// room has moved meanwhile, redirects instead.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn join_here(
        &self,
        node: &Arc<NodeRuntime>,
        chan: &ChannelId,
        channel: &Channel,
        room: &RoomKey,
        who: Who,
        hops: u32,
        how: &'static str,
        started: Instant,
    ) {
        let t = Instant::now();
        let added = self
            .inner
            .store
            .add_member(room, &node.id, chan, who.role())
            .await;
        self.inner.metrics.store_latency("add_member", t.elapsed());
        let (epoch, members, claimed) = match added {
            Ok(MemberAdded::Added {
                epoch,
                members,
                claimed,
            }) => (epoch, members, claimed),
            Ok(MemberAdded::AlreadyMember { epoch, members }) => (epoch, members, false),
            Ok(MemberAdded::Moved { owner, .. }) => {
                return self
                    .redirect_or_join(node, chan, channel, room, &owner, who, hops, started)
                    .await;
            }
            Err(e) => {
                tracing::warn!(node = %node.id, room = %room, reason = %e, "member not recorded (store unavailable); joining here");
                return self
                    .join_degraded(node, chan, room, "store_unavailable", started)
                    .await;
            }
        };
        if claimed {
            self.emit(FarmEvent::RoomPlaced {
                room: room.clone(),
                node: node.id.clone(),
                epoch: epoch.0,
                previous: None,
            });
        }
        if room.kind == RoomKind::Queue {
            self.inner.metrics.call_setup(started.elapsed());
            self.queue_arrive(node, chan, channel, room, who, epoch)
                .await;
            self.emit(FarmEvent::MembersChanged {
                room: room.clone(),
                node: node.id.clone(),
                members,
            });
            return;
        }
        match self.put_in_bridge(node, chan, room, Some(epoch)).await {
            Ok(_) => {
                self.inner.metrics.joined(&node.id, how);
                self.inner.metrics.call_setup(started.elapsed());
                self.emit(FarmEvent::MembersChanged {
                    room: room.clone(),
                    node: node.id.clone(),
                    members,
                });
            }
            Err(e) => {
                // The caller hung up (404/400) or the channel left Stasis
                // (409/422) while we worked: undo the member.
                tracing::info!(node = %node.id, room = %room, channel = %chan, reason = %e, "call gone before it joined");
                if let Ok(mut c) = node.channels.lock() {
                    c.insert(
                        chan.to_string(),
                        super::rooms::Joined {
                            room: room.clone(),
                            recorded: true,
                        },
                    );
                }
                self.leave(node, chan).await;
            }
        }
    }

    /// Joins the call where it landed without a placement (degraded mode).
    pub(crate) async fn join_degraded(
        &self,
        node: &Arc<NodeRuntime>,
        chan: &ChannelId,
        room: &RoomKey,
        reason: &'static str,
        started: Instant,
    ) {
        self.inner.metrics.degraded(&node.id, reason);
        match self.put_in_bridge(node, chan, room, None).await {
            Ok(_) => {
                self.inner.metrics.joined(&node.id, "degraded");
                self.inner.metrics.call_setup(started.elapsed());
            }
            Err(e) => {
                tracing::info!(node = %node.id, room = %room, channel = %chan, reason = %e, "call gone before it joined")
            }
        }
    }

    /// Redirects the call to `owner` if the hop limit allows, else joins it
    /// here as a counted split.
    #[allow(clippy::too_many_arguments)]
    async fn redirect_or_join(
        &self,
        node: &Arc<NodeRuntime>,
        chan: &ChannelId,
        channel: &Channel,
        room: &RoomKey,
        owner: &NodeId,
        who: Who,
        hops: u32,
        started: Instant,
    ) {
        if hops >= self.inner.cfg.hop_limit {
            tracing::warn!(node = %node.id, room = %room, owner = %owner, hops, "hop limit reached; joining where the call is (split)");
            // The resync moves it to the owner (healing) and measures how
            // long the split lasted from now.
            let first = node
                .splits
                .lock()
                .map(|mut s| {
                    let first = !s.contains_key(room);
                    s.entry(room.clone()).or_insert_with(Instant::now);
                    first
                })
                .unwrap_or(false);
            if first {
                self.emit(FarmEvent::SplitDetected {
                    room: room.clone(),
                    owner: owner.clone(),
                    node: node.id.clone(),
                });
            }
            match self.put_in_bridge(node, chan, room, None).await {
                Ok(_) => {
                    self.inner.metrics.joined(&node.id, "split");
                    self.inner.metrics.call_setup(started.elapsed());
                }
                Err(e) => {
                    tracing::info!(node = %node.id, channel = %chan, reason = %e, "call gone before it joined")
                }
            }
            return;
        }
        let Some(target) = self.inner.nodes.get(owner).map(|n| n.spec.sip_host.clone()) else {
            tracing::warn!(node = %node.id, room = %room, owner = %owner, "owner is not a configured node; joining here");
            return self
                .join_degraded(node, chan, room, "unknown_owner", started)
                .await;
        };
        let grant = TokenGrant {
            room: room.clone(),
            from: node.id.clone(),
            to: owner.clone(),
            channel: chan.clone(),
            caller: channel.caller.number.chars().take(64).collect(),
            hops: hops + 1,
            agent: match who {
                Who::Agent(a) => Some(a),
                _ => None,
            },
        };
        match self.send_with_token(node, grant, &target).await {
            Ok((token, _)) => {
                self.inner.metrics.call_setup(started.elapsed());
                tracing::debug!(node = %node.id, room = %room, owner = %owner, token = token.prefix(), "redirected");
                self.watch_redirect(node.clone(), token, room.clone());
            }
            Err(MoveFailed::Store(e)) => {
                tracing::warn!(node = %node.id, room = %room, reason = %e, "token not minted (store unavailable); joining here");
                self.join_degraded(node, chan, room, "store_unavailable", started)
                    .await;
            }
            Err(MoveFailed::Redirect(e)) if matches!(e.status(), Some(404 | 409)) => {
                self.inner.metrics.redirect(&node.id, "failed");
                tracing::info!(node = %node.id, channel = %chan, reason = %e, "call gone before its redirect");
            }
            Err(MoveFailed::Redirect(e)) => {
                self.inner.metrics.redirect(&node.id, "failed");
                tracing::warn!(node = %node.id, room = %room, reason = %e, "redirect refused; joining here");
                self.join_degraded(node, chan, room, "redirect_failed", started)
                    .await;
            }
        }
    }

    /// After the deadline, checks that the redirected call's token was
    /// consumed; if not, counts it and releases a room it left empty.
    fn watch_redirect(&self, node: Arc<NodeRuntime>, token: TokenId, room: RoomKey) {
        let ctrl = self.clone();
        let deadline = self.inner.cfg.redirect_deadline;
        self.inner.tracker.spawn(async move {
            if !ctrl.sleep_unless_stopped(deadline).await {
                return;
            }
            match ctrl.inner.store.peek_token(&token).await {
                Ok(None) => {}
                Ok(Some(_)) => {
                    ctrl.inner.metrics.redirect(&node.id, "timed_out");
                    tracing::warn!(node = %node.id, room = %room, token = token.prefix(), "redirected call never arrived");
                    if let Ok(Some(detail)) = ctrl.inner.store.get_room(&room).await
                        && detail.placement.members == 0
                            && let Some(owner) = ctrl.inner.nodes.get(&detail.placement.node).cloned() {
                                ctrl.schedule_release(owner, room, detail.placement.epoch);
                            }
                }
                Err(e) => tracing::debug!(reason = %e, "redirect not checked (store unavailable)"),
            }
        });
    }

    /// A call arrived with a token in its extension.
    async fn on_token(
        &self,
        node: &Arc<NodeRuntime>,
        chan: &ChannelId,
        channel: &Channel,
        token: &TokenId,
        started: Instant,
    ) {
        let retried = node
            .consumed
            .lock()
            .ok()
            .and_then(|c| c.get(chan.as_str()).cloned());
        let is_retry = retried.is_some();
        let consumed = match retried {
            // A join that failed after the token was consumed, retried by
            // the resync: the token is this channel's already.
            Some(rec) => Ok(Consumed::Ok(rec)),
            None => {
                let t = Instant::now();
                let c = self.inner.store.consume_token(token, &node.id).await;
                self.inner
                    .metrics
                    .store_latency("consume_token", t.elapsed());
                if let Ok(Consumed::Ok(rec)) = &c
                    && let Ok(mut m) = node.consumed.lock()
                {
                    m.insert(chan.to_string(), rec.clone());
                }
                c
            }
        };
        let (record, outcome): (TokenRecord, &str) = match consumed {
            Ok(Consumed::Ok(rec)) => (rec, "consumed"),
            Ok(Consumed::WrongNode(rec)) => (rec, "wrong_node"),
            Ok(Consumed::Expired(rec)) => (rec, "expired"),
            Ok(Consumed::Unknown) => {
                self.inner.metrics.token(&node.id, "unknown");
                tracing::warn!(node = %node.id, channel = %chan, token = token.prefix(), "token is not ours; handed back to the dialplan");
                return self.hand_back(node, chan).await;
            }
            Err(e) => {
                tracing::warn!(node = %node.id, channel = %chan, reason = %e, "token not checked (store unavailable); handed back to the dialplan");
                return self.hand_back(node, chan).await;
            }
        };
        if !is_retry {
            self.inner.metrics.token(&node.id, outcome);
        }
        let room = record.grant.room.clone();
        let role = match (room.kind, record.grant.agent.clone()) {
            (RoomKind::Conference, _) => Who::Participant,
            (RoomKind::Queue, Some(a)) => Who::Agent(a),
            (RoomKind::Queue, None) => Who::Caller,
        };
        if outcome == "consumed" {
            if !is_retry {
                self.inner.metrics.redirect(&record.grant.from, "confirmed");
            }
            self.join_here(
                node,
                chan,
                channel,
                &room,
                role.clone(),
                record.grant.hops,
                "token",
                started,
            )
            .await;
        } else {
            tracing::info!(node = %node.id, room = %room, token = token.prefix(), outcome, "token re-resolved");
            self.place(
                node,
                chan,
                channel,
                &room,
                role,
                record.grant.hops,
                "token",
                started,
            )
            .await;
        }
    }

    /// Gives a call corral cannot place back to the dialplan (`continue`),
    /// so the operator's fallback runs; corral never hangs it up itself.
    async fn hand_back(&self, node: &Arc<NodeRuntime>, chan: &ChannelId) {
        if let Err(e) = self
            .ari_retry(|| {
                node.ari
                    .continue_in_dialplan(chan.as_str(), None, None, None)
            })
            .await
        {
            tracing::info!(node = %node.id, channel = %chan, reason = %e, "continue refused (call gone?)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
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
}
