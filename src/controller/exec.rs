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
use crate::domain::{ChannelId, Epoch, NodeId, RoomKey, RoomKind, TokenId};
use crate::retry::Backoff;
use crate::store::{
    CallArrival, Consumed, MemberAdded, RedirectToken, RoomFilter, TokenGrant, TokenJoin,
    TokenRecord,
};
use crate::telemetry::{JoinKind, RedirectOutcome, TokenOutcome};

/// A join whose ARI calls failed past their own retries while the call is
/// still there is tried this many more times, pausing from
/// [`JOIN_RETRY_INITIAL`] up to [`JOIN_RETRY_MAX`] (about 1.5 s in all),
/// then left to the resync, which retries it for as long as the call lives.
const JOIN_RETRIES: u32 = 3;
/// After the retries of a failed join, its placement is posted again this
/// much later (and so on, while the call lives).
const JOIN_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_secs(2);
/// A call joined where it landed while its room lives elsewhere (a split):
/// the node is resynced this much later, and again while splits remain,
/// so a split is healed about this long after its cause ends rather than
/// at the next periodic resync.
const HEAL_SOON: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a join's mark on a bridge is kept (longer than any resync).
const BRIDGE_USE_KEPT: std::time::Duration = std::time::Duration::from_secs(60);
/// First pause before a failed join is tried again.
const JOIN_RETRY_INITIAL: std::time::Duration = std::time::Duration::from_millis(200);
/// Longest pause before a failed join is tried again.
const JOIN_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// How a join with its retries ended ([`Controller::bridge_retrying`]).
enum JoinEnd {
    /// In its room's bridge.
    Joined,
    /// ARI says the call is gone or left the app.
    Gone,
    /// Still failing (placed again later), or corral is stopping.
    Later,
}

/// What [`Controller::check_token`] learnt of a token.
enum Checked {
    /// The store's answer.
    Store(Consumed),
    /// The store did not answer; the grant this replica kept.
    Local(TokenGrant),
    /// The store did not answer in time.
    Unchecked,
}

/// One call being handled: where it is and since when.
#[derive(Clone, Copy)]
struct Call<'a> {
    node: &'a Arc<NodeRuntime>,
    chan: &'a ChannelId,
    channel: &'a Channel,
    /// Its Stasis arguments (for a placement tried again later).
    args: &'a [String],
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
                            args: &args,
                            started: Instant::now(),
                        };
                        self.arrive(call).await;
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
    async fn arrive(&self, call: Call<'_>) {
        let arrival = decide::parse_arrival(call.args, &call.channel.dialplan.exten);
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
        let (checked, prepared) = match held {
            Some(rec) => (Checked::Store(Consumed::Ok(rec)), Prepared::Nothing),
            None => self.check_token(call, token).await,
        };
        let answer = match &checked {
            Checked::Store(c) => decide::TokenAnswer::Store(c),
            Checked::Local(g) => decide::TokenAnswer::Local(g),
            Checked::Unchecked => decide::TokenAnswer::Unchecked,
        };
        match decide::after_token(answer) {
            AfterToken::Join(p) => {
                if let (false, Checked::Store(Consumed::Ok(rec))) = (retry, &checked) {
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
            AfterToken::Degraded(p) => {
                tracing::warn!(node = %node.id, room = %p.room, token = token.prefix(),
                    "store unavailable; token minted here: joining its room where the call landed");
                self.carry_out(
                    call,
                    &p,
                    Step::Degraded(decide::DegradedReason::StoreUnavailable),
                    Prepared::Nothing,
                )
                .await;
            }
            AfterToken::HandBack(why) => self.hand_back(call, &why).await,
        }
    }

    /// Consumes `token` on the call's node and, when consumed, records the
    /// call in the token's room, in one store round trip
    /// ([`crate::store::Store::join_with_token`]); the member record's
    /// answer comes back as [`Prepared::Recorded`] for the join. While the
    /// store does not answer, a token this replica minted is used from its
    /// memory; any other waits in Stasis, still ringing (a 180 is sent
    /// once), asking again with backoff, for at most `token_store_wait`
    /// ([`decide::token_store_silent`]).
    async fn check_token(&self, call: Call<'_>, token: &TokenId) -> (Checked, Prepared) {
        let node = call.node;
        let started = Instant::now();
        let mut backoff = self.store_backoff();
        let mut waiting = false;
        loop {
            let t = Instant::now();
            // By this channel: a retry after a timeout that consumed the
            // token anyway gets it again (and its member record, again).
            let joined = self
                .inner
                .store
                .join_with_token(token, &node.id, call.chan)
                .await;
            self.inner
                .metrics
                .store_latency("join_with_token", t.elapsed());
            let e = match joined {
                Ok(joined) => {
                    self.inner.minted.forget(token);
                    let (c, prepared) = match joined {
                        TokenJoin::Joined { record, member } => {
                            (Consumed::Ok(record), Prepared::Recorded(Ok(member)))
                        }
                        TokenJoin::NodeUnavailable { record } => {
                            let refused = crate::store::Error::NodeUnavailable {
                                node: node.id.clone(),
                                room: record.grant.room.clone(),
                            };
                            (Consumed::Ok(record), Prepared::Recorded(Err(refused)))
                        }
                        TokenJoin::NotConsumed(c) => (c, Prepared::Nothing),
                    };
                    if let Consumed::Ok(rec) = &c {
                        node.with(|s| s.hold_token(call.chan, rec.clone()));
                        self.redirect_arrived(&rec.grant.from, token);
                    }
                    self.inner.metrics.token(&node.id, TokenOutcome::of(&c));
                    return (Checked::Store(c), prepared);
                }
                Err(e) => e,
            };
            let known = self.inner.minted.take(token, Instant::now());
            match decide::token_store_silent(
                known.is_some(),
                started.elapsed(),
                self.inner.cfg.token_store_wait,
            ) {
                decide::StoreSilent::UseLocal => {
                    self.inner
                        .metrics
                        .token(&node.id, TokenOutcome::UsedLocally);
                    return (
                        known.map_or(Checked::Unchecked, Checked::Local),
                        Prepared::Nothing,
                    );
                }
                decide::StoreSilent::Wait => {
                    if !waiting {
                        waiting = true;
                        self.inner
                            .metrics
                            .token(&node.id, TokenOutcome::WaitedForStore);
                        tracing::warn!(node = %node.id, channel = %call.chan, reason = %e,
                            "token not checked (store unavailable); the call waits, ringing");
                        if let Err(e) = node.ari.ring(call.chan).await {
                            tracing::debug!(node = %node.id, channel = %call.chan, reason = %e, "ring refused");
                        }
                    }
                    let pause = backoff
                        .delay_for(e.retry())
                        .unwrap_or(super::STORE_RETRY_INITIAL);
                    if !self.sleep_unless_stopped(pause).await {
                        return (Checked::Unchecked, Prepared::Nothing);
                    }
                }
                decide::StoreSilent::GiveUp => {
                    tracing::warn!(node = %node.id, channel = %call.chan, reason = %e,
                        waited_ms = started.elapsed().as_millis() as u64, "token not checked (store unavailable)");
                    return (Checked::Unchecked, Prepared::Nothing);
                }
            }
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
        let owner_suspect = match owner {
            OwnerFact::Node(n) if n != &call.node.id => self.is_suspect(n),
            _ => false,
        };
        PlaceFacts {
            landing: &call.node.id,
            owner,
            hops: p.hops,
            hop_limit: self.inner.cfg.hop_limit,
            owner_known,
            owner_suspect,
        }
    }

    /// Whether `node` is marked suspect in the latest node view.
    fn is_suspect(&self, node: &NodeId) -> bool {
        self.node_record(node).is_some_and(|(_, suspect)| suspect)
    }

    /// Resyncs `node` after [`HEAL_SOON`] (one pending at a time): a call
    /// joined away from its room's node, and the split heals as soon as
    /// the move can be made.
    pub(crate) fn heal_soon(&self, node: &Arc<NodeRuntime>) {
        use std::sync::atomic::Ordering;
        if node.heal_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let (ctrl, node) = (self.clone(), node.clone());
        self.inner.tracker.spawn(async move {
            let slept = ctrl.sleep_unless_stopped(HEAL_SOON).await;
            node.heal_pending.store(false, Ordering::Release);
            if slept && node.is_up() {
                ctrl.resync(&node).await;
            }
        });
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
                            Some((token, rec))
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
                    self.join_unrecorded(call, &p.room, JoinKind::Degraded)
                        .await;
                    // A split to heal once its cause ends (the store's
                    // return resyncs every node by itself).
                    if reason != decide::DegradedReason::StoreUnavailable {
                        self.heal_soon(call.node);
                    }
                    return;
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
        match self.bridge_retrying(call, room, Some(epoch)).await {
            JoinEnd::Joined => {
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
            JoinEnd::Gone => {
                // The caller hung up, or the channel left Stasis, while we
                // worked: undo the member.
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
            JoinEnd::Later => {}
        }
        None
    }

    /// Puts the call in its room's bridge here (`epoch`: recorded; `None`:
    /// unrecorded), trying again while ARI fails and the call is still
    /// there (`decide::after_join_failed`), then posting its placement
    /// again later; "gone" only when ARI says so.
    async fn bridge_retrying(
        &self,
        call: Call<'_>,
        room: &RoomKey,
        epoch: Option<Epoch>,
    ) -> JoinEnd {
        let (node, chan) = (call.node, call.chan);
        let mut backoff = Backoff::new(JOIN_RETRY_INITIAL, JOIN_RETRY_MAX, JOIN_RETRY_MAX);
        let mut retries = JOIN_RETRIES;
        loop {
            let e = match self.put_in_bridge(node, chan, room, epoch).await {
                Ok(_) => return JoinEnd::Joined,
                Err(e) => e,
            };
            let err = if matches!(e.status(), Some(409 | 422)) {
                decide::JoinError::LeftApp
            } else if self.channel_gone(node, chan).await {
                decide::JoinError::Gone
            } else {
                decide::JoinError::Unknown
            };
            match decide::after_join_failed(err, retries > 0) {
                decide::AfterJoinFailed::Undo => {
                    tracing::info!(node = %node.id, room = %room, channel = %chan, reason = %e, "call gone before it joined");
                    return JoinEnd::Gone;
                }
                decide::AfterJoinFailed::Retry => {
                    retries -= 1;
                    tracing::warn!(node = %node.id, room = %room, channel = %chan, reason = %e, "join failed; the call is still there: trying again");
                    let pause = backoff.delay_for(e.retry()).unwrap_or(JOIN_RETRY_MAX);
                    if !self.sleep_unless_stopped(pause).await {
                        return JoinEnd::Later;
                    }
                }
                decide::AfterJoinFailed::LeaveToResync => {
                    tracing::warn!(node = %node.id, room = %room, channel = %chan, reason = %e, recorded = epoch.is_some(),
                        "join failed again; the call keeps its member record and token, if any, and is placed again shortly");
                    self.place_again_later(call);
                    return JoinEnd::Later;
                }
            }
        }
    }

    /// Posts the call's placement again after [`JOIN_AGAIN_AFTER`] (its
    /// worker then finds it with its consumed token, or placed meanwhile
    /// by a resync, or gone), so a call whose join failed does not wait
    /// for two resyncs.
    fn place_again_later(&self, call: Call<'_>) {
        let (ctrl, node, chan) = (self.clone(), call.node.clone(), call.chan.clone());
        let work = ChannelWork::Start {
            args: call.args.to_vec(),
            channel: Box::new(call.channel.clone()),
            by: StartedBy::Resync,
        };
        self.inner.tracker.spawn(async move {
            if ctrl.sleep_unless_stopped(JOIN_AGAIN_AFTER).await {
                ctrl.post(&node, chan, work);
            }
        });
    }

    /// Joins the call where it is, without a member record. A join whose
    /// ARI work fails while the call is still there is retried like a
    /// recorded one (`decide::after_join_failed`), then placed again later.
    async fn join_unrecorded(&self, call: Call<'_>, room: &RoomKey, kind: JoinKind) {
        if let JoinEnd::Joined = self.bridge_retrying(call, room, None).await {
            self.inner.metrics.joined(&call.node.id, kind);
            self.inner.metrics.call_setup(call.started.elapsed());
        }
    }

    /// Past the hop limit: joins where the call is, as a split the resync
    /// heals (and measures from now).
    async fn join_split(&self, call: Call<'_>, room: &RoomKey, owner: &NodeId) {
        let node = call.node;
        tracing::warn!(node = %node.id, room = %room, owner = %owner, "hop limit reached; joining where the call is (split)");
        self.split_began(node, room, owner, Instant::now());
        self.join_unrecorded(call, room, JoinKind::Split).await;
        self.heal_soon(node);
    }

    /// Mints a token for `to` and redirects the ringing call there; a
    /// failure is decided by [`decide::after_move_failed`].
    /// `minted` is the token the decision's round trip minted for `to`
    /// already, with its record (else one is minted now). Either way its
    /// grant is kept in this replica too ([`super::minted`]), for its
    /// arrival while the store does not answer.
    async fn redirect(
        &self,
        call: Call<'_>,
        p: &Placing,
        to: &NodeId,
        hops: u32,
        minted: Option<(TokenId, TokenRecord)>,
    ) -> Option<Step> {
        let node = call.node;
        let target = self.sip_host(to)?;
        let sent = match minted {
            Some((token, rec)) => {
                self.inner.metrics.token(&node.id, TokenOutcome::Minted);
                self.inner.minted.keep(
                    &token,
                    &rec.grant,
                    self.inner.cfg.token_ttl,
                    Instant::now(),
                );
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
        let _one_at_a_time = node.resync.lock().await;
        // Before the listing: a bridge a join uses from now on is not
        // destroyed as empty on the listing's word.
        let listed_at = Instant::now();
        node.with(|s| s.forget_bridge_use(listed_at - BRIDGE_USE_KEPT));
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
        let listed: HashSet<&str> = bridges.iter().map(|b| b.id.as_str()).collect();
        node.with(|s| {
            s.bridges.extend(calls.iter().map(|c| c.bridge.clone()));
            // Rooms whose bridge is gone from the node are forgotten (the
            // map stays as small as the node's bridges).
            s.room_bridges.retain(|_, id| listed.contains(id.as_str()));
        });
        let mut facts = match self.room_facts(&node.id, &calls).await {
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
                    Ok(
                        MemberAdded::Added { epoch, .. } | MemberAdded::AlreadyMember { epoch, .. },
                    ) => {
                        // The room is here at `epoch` now (claimed, maybe,
                        // under a new one): what the merges go by.
                        if let Some(f) = facts.get_mut(&room) {
                            f.owner = Some((node.id.clone(), epoch));
                        }
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
        for merge in decide::merges(&node.id, &calls, &facts, &self.inner.names) {
            self.merge_bridge(node, merge, listed_at).await;
        }
        self.heal_splits(node, stray).await;
        for bridge in decide::stale_bridges(&node.id, &bridges, &facts, &self.inner.names) {
            self.destroy_listed_bridge(node, &bridge, listed_at).await;
        }
        // Calls in corral's app but in no bridge.
        let bridged: HashSet<ChannelId> = calls
            .iter()
            .flat_map(|c| c.channels.iter().cloned())
            .collect();
        let cfg = &self.inner.cfg;
        let apps = [cfg.app.as_str(), cfg.standby_app.as_str()];
        let fixes = node.with(|s| decide::unhandled_fixes(&channels, &bridged, &s.channels, &apps));
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
        self.queue_resync(node, &live, &bridges, listed_at).await;
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
        let changes = node.with(|s| decide::split_changes(&s.splits, &owners, now));
        for (room, _) in changes.healed {
            self.split_ended(node, &room, now);
        }
        for (room, owner) in changes.detected {
            let calls = stray.get(&room).map(|(_, c)| c.len()).unwrap_or(0);
            tracing::warn!(node = %node.id, room = %room, owner = %owner, calls, "split: calls bridged on a node that does not own their room; moving them to the owner");
            self.split_began(node, &room, &owner, now);
        }
        let deadline = self.inner.cfg.redirect_deadline;
        if !stray.is_empty() {
            // Looked at again shortly: moves on their way are confirmed,
            // and moves not possible now are tried as soon as they are.
            self.heal_soon(node);
        }
        for (room, (owner, chans)) in stray {
            let Some(target) = self.sip_host(&owner) else {
                continue;
            };
            if self.is_suspect(&owner) {
                // A hung owner would leave the moved calls ringing in its
                // socket: the split stays until it answers or is down.
                continue;
            }
            for chan in chans {
                let (moving, failures) =
                    node.with(|s| (s.moving(&chan), s.move_failures.get(&chan).copied()));
                match decide::heal_step(moving.as_ref().map(|m| m.1), failures, now, deadline) {
                    decide::HealStep::Move => {}
                    decide::HealStep::OnItsWay | decide::HealStep::NotYet => continue,
                    decide::HealStep::Overdue => {
                        let Some((token, _)) = moving else { continue };
                        // The token still unused: the far end never
                        // followed (a refused REFER shows nothing on ARI).
                        if let Ok(Some(_)) = self.inner.store.peek_token(&token).await {
                            let n = node.with(|s| s.move_failed(&chan, now));
                            self.inner.metrics.heal_move_failed(&node.id);
                            tracing::warn!(node = %node.id, room = %room, channel = %chan, token = token.prefix(), failures = n,
                                retry_in_ms = decide::heal_backoff(n, deadline).as_millis() as u64,
                                "stray call not moved (its REFER refused?); it stays bridged here and is moved again later");
                        }
                        continue;
                    }
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

    /// Moves a room's calls from other bridges here into the room's bridge
    /// (a local `addChannel`; the channel leaves its old bridge), then
    /// destroys each old one whose calls all moved. Calls in two bridges
    /// at once are a split: counted, and healed here.
    async fn merge_bridge(&self, node: &Arc<NodeRuntime>, m: decide::Merge, listed_at: Instant) {
        let started = Instant::now();
        if m.split {
            tracing::warn!(node = %node.id, room = %m.room, bridges = m.from.len() + 1,
                "split: a room's calls in several bridges of one node; moving them into the room's bridge");
            self.split_began(node, &m.room, &node.id, started);
        }
        let mut whole = true;
        for (from, chans) in &m.from {
            let mut all = true;
            for chan in chans {
                if node.with(|s| s.is_moving(chan)) {
                    all = false;
                    continue;
                }
                if let Err(e) = self
                    .bridge_channel(node, chan, &m.room, Some(m.epoch))
                    .await
                {
                    all = false;
                    tracing::info!(node = %node.id, room = %m.room, channel = %chan, reason = %e, "call not moved into its room's bridge");
                }
            }
            if all {
                self.destroy_listed_bridge(node, from, listed_at).await;
            }
            whole &= all;
        }
        if m.split && whole {
            self.split_ended(node, &m.room, Instant::now());
        }
    }

    /// A split of `room` with stray calls on `node` (`owner` has the room)
    /// was found at `since`: counted and announced once, until it ends.
    fn split_began(&self, node: &Arc<NodeRuntime>, room: &RoomKey, owner: &NodeId, since: Instant) {
        let first = node.with(|s| {
            let first = !s.splits.contains_key(room);
            s.splits.entry(room.clone()).or_insert(since);
            first
        });
        if first {
            self.inner.metrics.split_detected(&node.id);
            self.emit(FarmEvent::SplitDetected {
                room: room.clone(),
                owner: owner.clone(),
                node: node.id.clone(),
            });
        }
    }

    /// The split of `room` on `node` is healed: reported with how long it
    /// lasted (nothing if none was known).
    fn split_ended(&self, node: &Arc<NodeRuntime>, room: &RoomKey, now: Instant) {
        let Some(since) = node.with(|s| s.splits.remove(room)) else {
            return;
        };
        let lasted = now.saturating_duration_since(since);
        self.inner.metrics.split_healed(&node.id, lasted);
        tracing::info!(node = %node.id, room = %room, lasted_ms = lasted.as_millis() as u64, "split healed");
        self.emit(FarmEvent::SplitHealed {
            room: room.clone(),
            node: node.id.clone(),
            lasted_ms: lasted.as_millis() as u64,
        });
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
