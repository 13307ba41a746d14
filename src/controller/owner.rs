//! The owner decision: which node a room lives on, decided once, atomically,
//! by the store, with the placement policy's choice.
//!
//! Used by the call path (a `StasisStart` for a room) and by the apps' API
//! (`placement`, `colocate`) alike, so both get the same answer for the same
//! room, and two replicas or two arrivals racing for a new room too.
//!
//! # Guarantees
//! - The policy chooses among fresh node records (the landing node first
//!   when eligible); the store applies the choice only if the room is still
//!   unowned or its owner unhealthy, else answers with the owner it has.
//! - A refused choice (the chosen node went down meanwhile) refreshes the
//!   records and chooses once more; then the answer is
//!   [`NoOwner::NoEligibleNode`].
//!
//! # Failure
//! [`NoOwner::StoreUnavailable`] when the store does not answer: the call
//! path joins the call where it landed (degraded), the API answers 503.

use std::time::Instant;

use super::{Controller, FarmEvent};
use crate::domain::{Epoch, NodeId, RoomKey, TokenId};
use crate::store::{CallArrival, CallPlaced, MemberAdded, Resolution, TokenRecord};

/// A room's owner, as the store decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The node the room lives on.
    pub node: NodeId,
    /// The placement's epoch.
    pub epoch: Epoch,
    /// True when this decision placed the room (it had no owner).
    pub created: bool,
}

/// Why a room has no owner.
#[derive(Debug, thiserror::Error)]
pub enum NoOwner {
    /// No node may take a new room (all down, draining or full).
    #[error("no node is eligible")]
    NoEligibleNode,
    /// The store did not answer.
    #[error("store unavailable: {0}")]
    StoreUnavailable(#[source] crate::store::Error),
}

impl Controller {
    /// The owner of `room`, placing it if it has none (preferring
    /// `landing`).
    ///
    /// # Errors
    /// [`NoOwner`]: no eligible node, or the store did not answer.
    pub(crate) async fn owner(
        &self,
        room: &RoomKey,
        landing: Option<&NodeId>,
    ) -> Result<Owner, NoOwner> {
        // A running room (the common case) needs no choice.
        let started = Instant::now();
        let placed = self.inner.store.placed_owner(room).await;
        self.inner
            .metrics
            .store_latency("placed_owner", started.elapsed());
        if let Some(Resolution::Owner { node, epoch, .. }) =
            placed.map_err(NoOwner::StoreUnavailable)?
        {
            return Ok(Owner {
                node,
                epoch,
                created: false,
            });
        }
        for _ in 0..2 {
            let Some(choice) = self.policy_choice(room, landing) else {
                self.refresh_view().await;
                continue;
            };
            let started = Instant::now();
            let resolved = self.inner.store.resolve_placement(room, &choice).await;
            self.inner
                .metrics
                .store_latency("resolve_placement", started.elapsed());
            match resolved.map_err(NoOwner::StoreUnavailable)? {
                Resolution::Owner {
                    node,
                    epoch,
                    created,
                    previous,
                } => {
                    if created {
                        self.room_created(room, &node, epoch, previous);
                    }
                    return Ok(Owner {
                        node,
                        epoch,
                        created,
                    });
                }
                Resolution::ChoiceIneligible { .. } => {
                    self.refresh_view().await;
                }
            }
        }
        Err(NoOwner::NoEligibleNode)
    }
}

impl Controller {
    /// The policy's choice for a new room, from the node view read in
    /// place (no copy of the node records per decision).
    fn policy_choice(&self, room: &RoomKey, landing: Option<&NodeId>) -> Option<NodeId> {
        let view = self
            .inner
            .view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.inner
            .policy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .choose(room, landing, &view)
    }

    /// A decision placed `room` on `node`: the policy, the metric and the
    /// event hear of it.
    fn room_created(&self, room: &RoomKey, node: &NodeId, epoch: Epoch, previous: Option<NodeId>) {
        self.inner
            .policy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .record_placement(node);
        self.inner.metrics.placed(node);
        self.emit(FarmEvent::RoomPlaced {
            room: room.clone(),
            node: node.clone(),
            epoch: epoch.0,
            previous,
        });
    }
}

/// What the call path's one-step arrival ([`Controller::owner_for_call`])
/// did besides deciding the owner, for the executor to carry on from.
#[derive(Debug)]
pub(crate) enum Prepared {
    /// Nothing: the next step does its own store work.
    Nothing,
    /// The member record's answer (the room lives here): the join goes
    /// straight to ARI. An error is the store's refusal (a down node).
    Recorded(Result<MemberAdded, crate::store::Error>),
    /// A token minted for the owner: the redirect goes straight to ARI.
    Minted(TokenId, TokenRecord),
}

impl Controller {
    /// The owner decision of [`Controller::owner`] and, in the same store
    /// round trip ([`crate::store::Store::place_call`]), the member record
    /// when the room lives on `call.landing`, or the redirect token for its
    /// owner when it lives elsewhere.
    ///
    /// # Errors
    /// [`NoOwner`]: no eligible node, or the store did not answer.
    pub(crate) async fn owner_for_call(
        &self,
        call: &CallArrival,
    ) -> Result<(Owner, Prepared), NoOwner> {
        for _ in 0..2 {
            let Some(choice) = self.policy_choice(&call.room, Some(&call.landing)) else {
                self.refresh_view().await;
                continue;
            };
            let started = Instant::now();
            let placed = self.inner.store.place_call(call, &choice).await;
            self.inner
                .metrics
                .store_latency("place_call", started.elapsed());
            let (node, epoch, created, previous, prepared) =
                match placed.map_err(NoOwner::StoreUnavailable)? {
                    CallPlaced::Joined {
                        epoch,
                        members,
                        created,
                        previous,
                        already,
                    } => {
                        let added = if already {
                            MemberAdded::AlreadyMember { epoch, members }
                        } else {
                            MemberAdded::Added {
                                epoch,
                                members,
                                claimed: false,
                            }
                        };
                        let node = call.landing.clone();
                        (
                            node,
                            epoch,
                            created,
                            previous,
                            Prepared::Recorded(Ok(added)),
                        )
                    }
                    CallPlaced::Elsewhere {
                        owner,
                        epoch,
                        created,
                        previous,
                        token,
                    } => {
                        let prepared = match (token, &call.redirect) {
                            (Some(record), Some(r)) => Prepared::Minted(r.token.clone(), record),
                            _ => Prepared::Nothing,
                        };
                        (owner, epoch, created, previous, prepared)
                    }
                    CallPlaced::ChoiceIneligible { .. } => {
                        self.refresh_view().await;
                        continue;
                    }
                };
            if created {
                self.room_created(&call.room, &node, epoch, previous);
            }
            return Ok((
                Owner {
                    node,
                    epoch,
                    created,
                },
                prepared,
            ));
        }
        Err(NoOwner::NoEligibleNode)
    }
}
