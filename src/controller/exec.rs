//! The executor: the only code that does the ARI and store I/O the call
//! path's and the resync's decisions ask for ([`super::decide`]), with the
//! room primitives of [`super::rooms`] (bridges, members, release, moves).
//!
//! # Expected flow (the call path)
//! 1. A `StasisStart` with `conference,<room>` (or `queue,<name>`,
//!    `agent,<queue>,<agent>`) on node X: the owner decision
//!    ([`super::owner`]), the landing node first when eligible.
//! 2. Owner X: record the member (the commit point: the store refuses if
//!    the room moved meanwhile), answer, bridge.
//! 3. Owner Y: mint a token bound to Y and redirect the still-ringing call
//!    to `PJSIP/sip:<token>@<Y's sip_host>`. Redirecting a ringing channel
//!    makes Asterisk answer the INVITE with a 302, which the proxy follows;
//!    an answered one would need a REFER, which carriers often refuse. So a
//!    call is answered only on its room's node. ARI's 204 only means
//!    "accepted": the token arriving on Y confirms the move, and a token
//!    that has not arrived after `redirect_deadline` is counted.
//! 4. On Y the call arrives as a new channel whose extension is the token:
//!    consume it (once, only on Y) and join. A token for another node, an
//!    expired one, or a room that moved is placed again with its hop count;
//!    past the hop limit the call joins where it is (a split, healed by the
//!    resync).
//!
//! # Failure
//! No call is dropped by corral: a store that does not answer, no eligible
//! node or a refused redirect joins the call where it landed (degraded,
//! counted); a call whose arguments or token make no sense is handed back
//! to the dialplan (`continue`), so the operator's fallback runs.
//!
//! # The resync
//! Asterisk replays nothing after a reconnect, and events can be missed or
//! late, so after every connection and every `reconcile_interval` the node
//! is compared with the store: `GET /bridges` and `GET /channels`, what the
//! store says of the rooms found, then the fixes. Calls are placed only on
//! their second sighting (a `StasisStart` can trail `GET /channels`), and a
//! member is removed only when ARI answers 404 for its channel (a snapshot
//! predates joins made since).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use super::channel::{Begin, ChannelWork, Membership, NodeRuntime, StartedBy};
use super::decide::{
    self, Admit, AfterToken, Arrival, BridgedFix, HandBack, How, MoveFailure, OwnerFact,
    PlaceFacts, Placing, RoomFacts, Step, UnhandledFix,
};
use super::owner::{NoOwner, Prepared};
use super::rooms::MoveFailed;
use super::{Controller, FarmEvent};
use crate::ari::rest::Channel;
use crate::domain::{ChannelId, NodeId, RoomKey, RoomKind, TokenId};
use crate::store::{
    CallArrival, Consumed, MemberAdded, RedirectToken, RoomFilter, TokenGrant, TokenJoin,
};
use crate::telemetry::{JoinKind, RedirectOutcome, TokenOutcome};

/// One call being handled: where it is and since when.
#[derive(Clone, Copy)]
struct Call<'a> {
    node: &'a Arc<NodeRuntime>,
    chan: &'a ChannelId,
    channel: &'a Channel,
    /// When its `StasisStart` was taken up (for the setup-time metric).
    started: Instant,
}

impl Controller {
    /// Posts `work` to `chan`'s mailbox on `node`, starting its worker if
    /// none runs: the channel's work is done in order, one piece at a time.
    pub(crate) fn post(&self, node: &Arc<NodeRuntime>, chan: ChannelId, work: ChannelWork) {
        if node.mailboxes.post(&chan, work) {
            self.start_worker(node, chan);
        }
    }

    /// Starts the worker that drains `chan`'s mailbox (owned by the
    /// controller's tracker: a stop waits for it).
    pub(crate) fn start_worker(&self, node: &Arc<NodeRuntime>, chan: ChannelId) {
        let ctrl = self.clone();
        let node = node.clone();
        self.inner.tracker.spawn(async move {
            while let Some(work) = node.mailboxes.next(&chan) {
                ctrl.work(&node, &chan, work).await;
            }
        });
    }

    /// Does one piece of a channel's work (in its worker).
    async fn work(&self, node: &Arc<NodeRuntime>, chan: &ChannelId, work: ChannelWork) {
        match work {
            ChannelWork::Start { args, channel, by } => {
                match node.with(|s| s.begin_placing(chan)) {
                    // A second StasisStart before the StasisEnd is a
                    // duplicate (a re-entry into Stasis comes after a
                    // StasisEnd): handling it again could undo the join.
                    Begin::Handled => {
                        if by == StartedBy::Event {
                            self.inner.metrics.bad_event(&node.id, "duplicate");
                        }
                    }
                    Begin::Place { .. } => {
                        let call = Call {
                            node,
                            chan,
                            channel: &channel,
                            started: Instant::now(),
                        };
                        self.arrive(call, &args).await;
                        node.with(|s| s.end_placing(chan));
                    }
                }
            }
            ChannelWork::End => self.gone(node, chan).await,
            ChannelWork::Destroyed { cause } => self.gone_because(node, chan, cause).await,
        }
    }

    /// Handles a call entering the app (its `StasisStart`, or a resync
    /// placing it).
    async fn arrive(&self, call: Call<'_>, args: &[String]) {
        let arrival = decide::parse_arrival(args, &call.channel.dialplan.exten);
        let kind = match &arrival {
            Arrival::Room(room, _) => Some(room.kind.as_str()),
            Arrival::Agent(..) => Some("agent"),
            Arrival::Member(..) => Some("member"),
            Arrival::Token(_) => Some("token"),
            Arrival::Odd(_) => None,
        };
        if let Some(kind) = kind {
            self.inner.metrics.arrival(&call.node.id, kind);
        }
        match decide::admit(arrival) {
            Admit::Place(p) => self.place(call, p).await,
            Admit::MemberAnswered(queue, agent) => {
                self.queue_member_answered(call.node, call.chan, &queue, &agent)
                    .await
            }
            Admit::ConsumeToken(token) => self.on_token(call, &token).await,
            Admit::HandBack(why) => self.hand_back(call, &why).await,
        }
    }

    /// A call arrived with a token in its extension: consumed and, when
    /// consumed, recorded in its room in one store round trip
    /// ([`crate::store::Store::join_with_token`]).
    async fn on_token(&self, call: Call<'_>, token: &TokenId) {
        let node = call.node;
        // A join that failed after the token was consumed, retried: the
        // token is this channel's already.
        let held = node.with(|s| s.held_token(call.chan));
        let retry = held.is_some();
        let mut prepared = Prepared::Nothing;
        let consumed = match held {
            Some(rec) => Some(Consumed::Ok(rec)),
            None => {
                let t = Instant::now();
                let joined = self
                    .inner
                    .store
                    .join_with_token(token, &node.id, call.chan)
                    .await;
                self.inner
                    .metrics
                    .store_latency("join_with_token", t.elapsed());
                let c = match joined {
                    Ok(TokenJoin::Joined { record, member }) => {
                        prepared = Prepared::Recorded(Ok(member));
                        Some(Consumed::Ok(record))
                    }
                    Ok(TokenJoin::NodeUnavailable { record }) => {
                        prepared = Prepared::Recorded(Err(crate::store::Error::NodeUnavailable {
                            node: node.id.clone(),
                            room: record.grant.room.clone(),
                        }));
                        Some(Consumed::Ok(record))
                    }
                    Ok(TokenJoin::NotConsumed(c)) => Some(c),
                    Err(e) => {
                        tracing::warn!(node = %node.id, channel = %call.chan, reason = %e, "token not checked (store unavailable)");
                        None
                    }
                };
                if let Some(c) = &c {
                    if let Consumed::Ok(rec) = c {
                        node.with(|s| s.hold_token(call.chan, rec.clone()));
                        self.redirect_arrived(&rec.grant.from, token);
                    }
                    self.inner.metrics.token(&node.id, TokenOutcome::of(c));
                }
                c
            }
        };
        match decide::after_token(consumed.as_ref()) {
            AfterToken::Join(p) => {
                if let (false, Some(Consumed::Ok(rec))) = (retry, &consumed) {
                    self.inner
                        .metrics
                        .redirect(&rec.grant.from, RedirectOutcome::Confirmed);
                }
                self.carry_out(call, &p, Step::JoinHere, prepared).await;
            }
            AfterToken::Replace(p) => {
                tracing::info!(node = %node.id, room = %p.room, token = token.prefix(), "token re-resolved");
                self.place(call, p).await;
            }
            AfterToken::HandBack(why) => self.hand_back(call, &why).await,
        }
    }

    /// Places a call: the owner decision, with the member record or the
    /// redirect token it leads to, in one store round trip
    /// ([`Controller::owner_for_call`]); then carries out the step.
    async fn place(&self, call: Call<'_>, p: Placing) {
        // A token is minted with the decision unless the call may not be
        // redirected again (past the hop limit it joins as a split).
        let redirect = (p.hops < self.inner.cfg.hop_limit).then(|| RedirectToken {
            token: TokenId::generate(&mut rand::rng()),
            caller: call.channel.caller.number.chars().take(64).collect(),
            hops: p.hops + 1,
            agent: p.who.agent().cloned(),
            ttl: self.inner.cfg.token_ttl,
        });
        let arrival = CallArrival {
            room: p.room.clone(),
            landing: call.node.id.clone(),
            channel: call.chan.clone(),
            role: p.who.role(),
            redirect,
        };
        let placed = self.owner_for_call(&arrival).await;
        let (fact, prepared) = match placed {
            Ok((o, prepared)) => (Some(o.node), prepared),
            Err(NoOwner::NoEligibleNode) => (None, Prepared::Nothing),
            Err(NoOwner::StoreUnavailable(e)) => {
                tracing::warn!(room = %p.room, node = %call.node.id, reason = %e, "store unavailable; joining where the call landed");
                let step = decide::place(&self.facts(call, &p, OwnerFact::StoreUnavailable));
                return self.carry_out(call, &p, step, Prepared::Nothing).await;
            }
        };
        let fact = match &fact {
            Some(n) => OwnerFact::Node(n),
            None => OwnerFact::NoEligibleNode,
        };
        let step = decide::place(&self.facts(call, &p, fact));
        self.carry_out(call, &p, step, prepared).await;
    }

    fn facts<'a>(&'a self, call: Call<'a>, p: &Placing, owner: OwnerFact<'a>) -> PlaceFacts<'a> {
        let owner_known = match owner {
            OwnerFact::Node(n) => self.inner.nodes.contains_key(n),
            _ => false,
        };
        PlaceFacts {
            landing: &call.node.id,
            owner,
            hops: p.hops,
            hop_limit: self.inner.cfg.hop_limit,
            owner_known,
        }
    }

    /// Carries out `step` for `call`, and the steps its outcome leads to.
    /// `prepared` is the store work the decision's round trip did already
    /// (the member record, or the token for the owner): the first step that
    /// can use it does, instead of another round trip.
    async fn carry_out(&self, call: Call<'_>, p: &Placing, mut step: Step, prepared: Prepared) {
        let mut prepared = Some(prepared);
        loop {
            step = match step {
                Step::JoinHere => {
                    let next = match prepared.take() {
                        Some(Prepared::Recorded(added)) => self.joined_here(call, p, added).await,
                        _ => self.join_here(call, p).await,
                    };
                    match next {
                        Some(next) => next,
                        None => return,
                    }
                }
                Step::Redirect { to, hops } => {
                    let minted = match prepared.take() {
                        Some(Prepared::Minted(token, rec))
                            if rec.grant.to == to && rec.grant.hops == hops =>
                        {
                            Some(token)
                        }
                        _ => None,
                    };
                    match self.redirect(call, p, &to, hops, minted).await {
                        Some(next) => next,
                        None => return,
                    }
                }
                Step::JoinSplit { owner } => return self.join_split(call, &p.room, &owner).await,
                Step::Degraded(reason) => {
                    self.inner.metrics.degraded(&call.node.id, reason.as_str());
                    return self
                        .join_unrecorded(call, &p.room, JoinKind::Degraded)
                        .await;
                }
                Step::Gone => return,
            };
        }
    }

    /// Records the member here and bridges the call. The store may say the
    /// room moved meanwhile (the call is still ringing: the next step moves
    /// it) or not answer (degraded).
    async fn join_here(&self, call: Call<'_>, p: &Placing) -> Option<Step> {
        let t = Instant::now();
        let added = self
            .inner
            .store
            .add_member(&p.room, &call.node.id, call.chan, p.who.role())
            .await;
        self.inner.metrics.store_latency("add_member", t.elapsed());
        self.joined_here(call, p, added).await
    }

    /// Carries on from the member record's answer `added`: bridges the
    /// call (or hands it to the queue engine); a room that moved meanwhile
    /// leads to the next step, a store that did not answer to a degraded
    /// join.
    async fn joined_here(
        &self,
        call: Call<'_>,
        p: &Placing,
        added: Result<MemberAdded, crate::store::Error>,
    ) -> Option<Step> {
        let (node, chan, room) = (call.node, call.chan, &p.room);
        let (epoch, members, claimed) = match added {
            Ok(MemberAdded::Added {
                epoch,
                members,
                claimed,
            }) => (epoch, members, claimed),
            Ok(MemberAdded::AlreadyMember { epoch, members }) => (epoch, members, false),
            Ok(MemberAdded::Moved { owner, .. }) => {
                return Some(decide::place(&self.facts(call, p, OwnerFact::Node(&owner))));
            }
            Err(e) => {
                tracing::warn!(node = %node.id, room = %room, reason = %e, "member not recorded (store unavailable); joining here");
                return Some(Step::Degraded(decide::DegradedReason::StoreUnavailable));
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
            self.inner.metrics.call_setup(call.started.elapsed());
            self.queue_arrive(node, chan, call.channel, room, p.who.clone(), epoch)
                .await;
            self.emit(FarmEvent::MembersChanged {
                room: room.clone(),
                node: node.id.clone(),
                members,
            });
            return None;
        }
        match self.put_in_bridge(node, chan, room, Some(epoch)).await {
            Ok(_) => {
                let how = match p.how {
                    How::Direct => JoinKind::Direct,
                    How::Token => JoinKind::Token,
                };
                self.inner.metrics.joined(&node.id, how);
                self.inner.metrics.call_setup(call.started.elapsed());
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
                node.with(|s| {
                    s.joined(
                        chan,
                        Membership {
                            room: room.clone(),
                            recorded: true,
                        },
                    )
                });
                self.leave(node, chan).await;
            }
        }
        None
    }

    /// Joins the call where it is, without a member record.
    async fn join_unrecorded(&self, call: Call<'_>, room: &RoomKey, kind: JoinKind) {
        match self.put_in_bridge(call.node, call.chan, room, None).await {
            Ok(_) => {
                self.inner.metrics.joined(&call.node.id, kind);
                self.inner.metrics.call_setup(call.started.elapsed());
            }
            Err(e) => {
                tracing::info!(node = %call.node.id, room = %room, channel = %call.chan, reason = %e, "call gone before it joined")
            }
        }
    }

    /// Past the hop limit: joins where the call is, as a split the resync
    /// heals (and measures from now).
    async fn join_split(&self, call: Call<'_>, room: &RoomKey, owner: &NodeId) {
        let node = call.node;
        tracing::warn!(node = %node.id, room = %room, owner = %owner, "hop limit reached; joining where the call is (split)");
        let first = node.with(|s| {
            let first = !s.splits.contains_key(room);
            s.splits.entry(room.clone()).or_insert_with(Instant::now);
            first
        });
        if first {
            self.emit(FarmEvent::SplitDetected {
                room: room.clone(),
                owner: owner.clone(),
                node: node.id.clone(),
            });
        }
        self.join_unrecorded(call, room, JoinKind::Split).await;
    }

    /// Mints a token for `to` and redirects the ringing call there; a
    /// failure is decided by [`decide::after_move_failed`].
    /// `minted` is the token the decision's round trip minted for `to`
    /// already (else one is minted now).
    async fn redirect(
        &self,
        call: Call<'_>,
        p: &Placing,
        to: &NodeId,
        hops: u32,
        minted: Option<TokenId>,
    ) -> Option<Step> {
        let node = call.node;
        let target = self.sip_host(to)?;
        let sent = match minted {
            Some(token) => {
                self.inner.metrics.token(&node.id, TokenOutcome::Minted);
                // Expected before the redirect: its arrival may be handled
                // before the redirect's answer.
                node.with(|s| s.redirects.insert(token.clone(), false));
                let sent = self.send_minted(node, call.chan, &token, &target).await;
                if sent.is_err() {
                    node.with(|s| s.redirects.remove(&token));
                }
                sent.map(|endpoint| (token, endpoint))
                    .map_err(MoveFailed::Redirect)
            }
            None => {
                let grant = TokenGrant {
                    room: p.room.clone(),
                    from: node.id.clone(),
                    to: to.clone(),
                    channel: call.chan.clone(),
                    caller: call.channel.caller.number.chars().take(64).collect(),
                    hops,
                    agent: p.who.agent().cloned(),
                };
                self.send_with_token(node, grant, &target).await
            }
        };
        let failure = match sent {
            Ok((token, _)) => {
                self.inner.metrics.call_setup(call.started.elapsed());
                tracing::debug!(node = %node.id, room = %p.room, owner = %to, token = token.prefix(), "redirected");
                self.watch_redirect(node.clone(), token, p.room.clone());
                return None;
            }
            Err(MoveFailed::Store(e)) => {
                tracing::warn!(node = %node.id, room = %p.room, reason = %e, "token not minted (store unavailable); joining here");
                MoveFailure::StoreUnavailable
            }
            Err(MoveFailed::Redirect(e)) if matches!(e.status(), Some(404 | 409)) => {
                self.inner
                    .metrics
                    .redirect(&node.id, RedirectOutcome::Failed);
                tracing::info!(node = %node.id, channel = %call.chan, reason = %e, "call gone before its redirect");
                MoveFailure::CallGone
            }
            Err(MoveFailed::Redirect(e)) => {
                self.inner
                    .metrics
                    .redirect(&node.id, RedirectOutcome::Failed);
                tracing::warn!(node = %node.id, room = %p.room, reason = %e, "redirect refused; joining here");
                MoveFailure::Refused
            }
        };
        Some(decide::after_move_failed(failure))
    }

    /// After the redirect deadline, checks that the redirected call's token
    /// was consumed; if not, counts it and releases a room it left empty.
    fn watch_redirect(&self, node: Arc<NodeRuntime>, token: TokenId, room: RoomKey) {
        let ctrl = self.clone();
        let deadline = self.inner.cfg.redirect_deadline;
        node.with(|s| {
            s.redirects.entry(token.clone()).or_insert(false);
        });
        self.inner.tracker.spawn(async move {
            if !ctrl.sleep_unless_stopped(deadline).await {
                return;
            }
            // Its arrival handled here: confirmed without asking the store.
            if node.with(|s| s.redirects.remove(&token)) == Some(true) {
                return;
            }
            match ctrl.inner.store.peek_token(&token).await {
                Ok(None) => {}
                Ok(Some(_)) => {
                    ctrl.inner
                        .metrics
                        .redirect(&node.id, RedirectOutcome::TimedOut);
                    tracing::warn!(node = %node.id, room = %room, token = token.prefix(), "redirected call never arrived");
                    if let Ok(Some(detail)) = ctrl.inner.store.get_room(&room).await
                        && detail.placement.members == 0
                        && let Some(owner) = ctrl.inner.nodes.get(&detail.placement.node).cloned()
                    {
                        ctrl.schedule_release(owner, room, detail.placement.epoch);
                    }
                }
                Err(e) => tracing::debug!(reason = %e, "redirect not checked (store unavailable)"),
            }
        });
    }

    /// A token minted on `from` arrived here and was consumed: the
    /// redirect watcher of `from` needs no store read to know.
    fn redirect_arrived(&self, from: &NodeId, token: &TokenId) {
        if let Some(from) = self.inner.nodes.get(from) {
            from.with(|s| {
                if let Some(arrived) = s.redirects.get_mut(token) {
                    *arrived = true;
                }
            });
        }
    }

    /// Gives a call corral cannot place back to the dialplan (`continue`),
    /// so the operator's fallback runs; corral never hangs it up itself.
    async fn hand_back(&self, call: Call<'_>, why: &HandBack) {
        let node = call.node;
        match why {
            HandBack::OddArguments(reason) => {
                self.inner.metrics.bad_event(&node.id, "odd_args");
                tracing::warn!(node = %node.id, channel = %call.chan, reason = %reason, "call is not for corral; handed back to the dialplan");
            }
            HandBack::UnknownToken => {
                tracing::warn!(node = %node.id, channel = %call.chan, "token is not ours; handed back to the dialplan");
            }
            HandBack::TokenUnchecked => {
                tracing::warn!(node = %node.id, channel = %call.chan, "token not checked; handed back to the dialplan");
            }
        }
        if let Err(e) = self
            .ari_retry(|| node.ari.continue_in_dialplan(call.chan, None, None, None))
            .await
        {
            tracing::info!(node = %node.id, channel = %call.chan, reason = %e, "continue refused (call gone?)");
        }
    }

    // ---- the resync -----------------------------------------------------

    /// Compares the node's ARI with the store and heals the difference.
    pub(crate) async fn resync(&self, node: &Arc<NodeRuntime>) {
        let (bridges, channels) = match tokio::try_join!(node.ari.bridges(), node.ari.channels()) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(node = %node.id, reason = %e, "resync skipped: ARI did not answer");
                return;
            }
        };
        // The node's load, as ARI reports it, for the placement policy.
        if let Err(e) = self
            .inner
            .store
            .report_load(&node.id, channels.len().min(u32::MAX as usize) as u32)
            .await
        {
            tracing::debug!(node = %node.id, reason = %e, "load not reported");
        }
        let calls = decide::bridged_calls(&bridges, &self.inner.names);
        node.with(|s| s.bridges.extend(calls.iter().map(|c| c.bridge.clone())));
        let facts = match self.room_facts(&node.id, &calls).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(node = %node.id, reason = %e, "resync stopped (store unavailable)");
                return;
            }
        };
        // Rooms with calls bridged here while another node owns them.
        let mut stray: HashMap<RoomKey, (NodeId, Vec<ChannelId>)> = HashMap::new();
        for fix in decide::bridged_fixes(&node.id, &calls, &facts) {
            match fix {
                BridgedFix::Record {
                    room,
                    channel,
                    role,
                } => match self
                    .inner
                    .store
                    .add_member(&room, &node.id, &channel, role)
                    .await
                {
                    Ok(MemberAdded::Added { .. } | MemberAdded::AlreadyMember { .. }) => {
                        node.with(|s| {
                            s.follow(
                                &channel,
                                Membership {
                                    room,
                                    recorded: true,
                                },
                            )
                        });
                    }
                    Ok(MemberAdded::Moved { owner, .. }) => {
                        node.with(|s| {
                            s.follow(
                                &channel,
                                Membership {
                                    room: room.clone(),
                                    recorded: false,
                                },
                            )
                        });
                        stray
                            .entry(room)
                            .or_insert_with(|| (owner, Vec::new()))
                            .1
                            .push(channel);
                    }
                    Err(e) => {
                        tracing::warn!(node = %node.id, reason = %e, "resync stopped (store unavailable)");
                        return;
                    }
                },
                BridgedFix::Follow {
                    channel,
                    membership,
                } => node.with(|s| s.follow(&channel, membership)),
                BridgedFix::Heal {
                    room,
                    owner,
                    channels,
                } => {
                    node.with(|s| {
                        for c in &channels {
                            s.follow(
                                c,
                                Membership {
                                    room: room.clone(),
                                    recorded: false,
                                },
                            );
                        }
                    });
                    stray
                        .entry(room)
                        .or_insert_with(|| (owner, Vec::new()))
                        .1
                        .extend(channels);
                }
            }
        }
        self.heal_splits(node, stray).await;
        for bridge in decide::stale_bridges(&node.id, &bridges, &facts, &self.inner.names) {
            self.destroy_listed_bridge(node, &bridge).await;
        }
        // Calls in corral's app but in no bridge.
        let bridged: HashSet<ChannelId> = calls
            .iter()
            .flat_map(|c| c.channels.iter().cloned())
            .collect();
        let fixes = node.with(|s| {
            decide::unhandled_fixes(&channels, &bridged, &s.channels, &self.inner.cfg.app)
        });
        for fix in fixes {
            match fix {
                UnhandledFix::Suspect(id) => node.with(|s| s.sighted(&id)),
                UnhandledFix::Clear(id) => node.with(|s| s.unsighted(&id)),
                UnhandledFix::Place { channel, args } => {
                    let Ok(id) = ChannelId::new(channel.id.as_str()) else {
                        continue;
                    };
                    tracing::info!(node = %node.id, channel = %id, state = %channel.state, "placing a call that is in corral's app but in no bridge");
                    self.post(
                        node,
                        id,
                        ChannelWork::Start {
                            args,
                            channel,
                            by: StartedBy::Resync,
                        },
                    );
                }
            }
        }
        // Joined calls whose channel is gone.
        let live: HashSet<ChannelId> = channels
            .iter()
            .filter_map(|c| ChannelId::new(c.id.as_str()).ok())
            .collect();
        for id in node.with(|s| decide::missing(&s.channels, &live)) {
            if self.channel_gone(node, &id).await {
                self.gone(node, &id).await;
            }
        }
        let live: HashSet<&str> = channels.iter().map(|c| c.id.as_str()).collect();
        self.sweep_store_members(node, &live).await;
        self.queue_resync(node, &live, &bridges).await;
    }

    /// What the store says of every room found in the node's bridges: its
    /// placement, its members here, and a queue's state when calls of it
    /// are bridged.
    ///
    /// # Errors
    /// The store did not answer: the resync stops (and runs again later).
    async fn room_facts(
        &self,
        here: &NodeId,
        calls: &[decide::BridgedCalls],
    ) -> Result<HashMap<RoomKey, RoomFacts>, crate::store::Error> {
        let mut facts: HashMap<RoomKey, RoomFacts> = HashMap::new();
        for c in calls {
            let room = c.of.room();
            if !facts.contains_key(room) {
                let f = match self.inner.store.get_room(room).await? {
                    Some(d) => RoomFacts {
                        owner: Some((d.placement.node.clone(), d.placement.epoch)),
                        members_here: d
                            .members
                            .into_iter()
                            .filter(|m| &m.node == here)
                            .map(|m| m.channel)
                            .collect(),
                        queue: None,
                    },
                    None => RoomFacts::default(),
                };
                facts.insert(room.clone(), f);
            }
            if room.kind == RoomKind::Queue && !c.channels.is_empty() {
                let f = facts.entry(room.clone()).or_default();
                if f.queue.is_none() {
                    f.queue = self.queue_load(&room.name).await.ok().map(|(_, st)| st);
                }
            }
        }
        Ok(facts)
    }

    /// Heals splits seen on `node`: every call bridged here for a room that
    /// another node owns is moved to the owner with a token (the calls are
    /// answered, so Asterisk sends a REFER). A room whose stray calls are
    /// all gone is announced healed, with how long the split lasted.
    async fn heal_splits(
        &self,
        node: &Arc<NodeRuntime>,
        stray: HashMap<RoomKey, (NodeId, Vec<ChannelId>)>,
    ) {
        let now = Instant::now();
        let owners: HashMap<RoomKey, NodeId> = stray
            .iter()
            .map(|(r, (o, _))| (r.clone(), o.clone()))
            .collect();
        let changes = node.with(|s| {
            let changes = decide::split_changes(&s.splits, &owners, now);
            for (room, _) in &changes.healed {
                s.splits.remove(room);
            }
            for (room, _) in &changes.detected {
                s.splits.insert(room.clone(), now);
            }
            changes
        });
        for (room, lasted) in changes.healed {
            self.inner.metrics.split_healed(&node.id, lasted);
            tracing::info!(node = %node.id, room = %room, lasted_ms = lasted.as_millis() as u64, "split healed");
            self.emit(FarmEvent::SplitHealed {
                room,
                node: node.id.clone(),
                lasted_ms: lasted.as_millis() as u64,
            });
        }
        for (room, owner) in changes.detected {
            let calls = stray.get(&room).map(|(_, c)| c.len()).unwrap_or(0);
            tracing::warn!(node = %node.id, room = %room, owner = %owner, calls, "split: calls bridged on a node that does not own their room; moving them to the owner");
            self.emit(FarmEvent::SplitDetected {
                room,
                owner,
                node: node.id.clone(),
            });
        }
        for (room, (owner, chans)) in stray {
            let Some(target) = self.sip_host(&owner) else {
                continue;
            };
            for chan in chans {
                if node.with(|s| s.is_moving(&chan)) {
                    continue;
                }
                let grant = TokenGrant {
                    room: room.clone(),
                    from: node.id.clone(),
                    to: owner.clone(),
                    channel: chan.clone(),
                    caller: String::new(),
                    hops: 0,
                    agent: None,
                };
                match self.send_with_token(node, grant, &target).await {
                    Ok(_) => {}
                    Err(MoveFailed::Store(_)) => return,
                    Err(MoveFailed::Redirect(e)) => {
                        tracing::info!(node = %node.id, channel = %chan, reason = %e, "split call not moved")
                    }
                }
            }
        }
    }

    /// True only when ARI says the channel does not exist (404): a snapshot
    /// of `GET /channels` is older than joins made since, so absence from it
    /// proves nothing.
    pub(crate) async fn channel_gone(&self, node: &Arc<NodeRuntime>, id: &ChannelId) -> bool {
        matches!(node.ari.channel(id).await, Err(e) if e.status() == Some(404))
    }

    /// Removes store members of `node` whose channel is not live, and
    /// releases empty rooms past their linger (the net for missed events and
    /// for redirects whose call never arrived).
    async fn sweep_store_members(&self, node: &Arc<NodeRuntime>, live: &HashSet<&str>) {
        let filter = RoomFilter {
            node: Some(node.id.clone()),
            kind: None,
        };
        let mut cursor: Option<String> = None;
        loop {
            let page = match self
                .inner
                .store
                .list_rooms(&filter, cursor.as_deref(), 500)
                .await
            {
                Ok(p) => p,
                Err(_) => return,
            };
            for p in &page.rooms {
                if p.members == 0 {
                    // A room nobody joined yet may be waiting for a
                    // redirected call: give it the redirect deadline too.
                    let min_empty = self.inner.cfg.linger.max(self.inner.cfg.redirect_deadline);
                    self.try_release(node, &p.room, p.epoch, min_empty).await;
                    continue;
                }
                let Ok(Some(detail)) = self.inner.store.get_room(&p.room).await else {
                    continue;
                };
                for m in detail.members {
                    if m.node == node.id
                        && !live.contains(m.channel.as_str())
                        && self.channel_gone(node, &m.channel).await
                        && let Ok(crate::store::MemberRemoved::Removed {
                            remaining: 0,
                            epoch,
                        }) = self
                            .inner
                            .store
                            .remove_member(&p.room, &node.id, &m.channel)
                            .await
                    {
                        self.schedule_release(node.clone(), p.room.clone(), epoch);
                    }
                }
            }
            match page.next {
                Some(n) => cursor = Some(n),
                None => return,
            }
        }
    }
}
