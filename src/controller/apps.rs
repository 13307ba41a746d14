//! The decisions apps ask for over the HTTP API: where a room lives, and
//! "bring this channel to its room" (redirect with a token when needed).
//!
//! They are the same decisions the call path makes for corral's own Stasis
//! app, so an app running its own conference or queue logic gets corral's
//! guarantees: one atomic owner decision, tokens bound to a node and used
//! once.

use std::time::Instant;

use serde::Serialize;

use super::Controller;
use crate::domain::{ChannelId, Epoch, NodeId, RoomKey, TokenId};
use crate::store::{Consumed, TokenGrant, TokenRecord};

/// Why an app's request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The node is not one of the configured nodes.
    #[error("node {0} is not configured")]
    UnknownNode(NodeId),
    /// No node may take a new room (all down, draining or full).
    #[error("no node is eligible for room {0}")]
    NoEligibleNode(RoomKey),
    /// The store cannot be reached; retry.
    #[error("store unavailable")]
    Store(#[from] crate::store::Error),
    /// ARI refused the redirect (404 channel unknown, 409 not in Stasis,
    /// 412 wrong state, 422 bad endpoint) or could not be reached.
    #[error("redirect refused: {0}")]
    Redirect(#[source] crate::ari::Error),
}

/// The answer to "where does this room live?".
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PlacementAnswer {
    /// The owner.
    pub node: NodeId,
    /// Where SIP reaches it.
    pub sip_host: String,
    /// The placement's epoch.
    pub epoch: Epoch,
    /// True when this request placed the room.
    pub created: bool,
}

/// The answer to "bring this channel to its room".
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Colocated {
    /// The channel is already on the room's node.
    Stay {
        /// The node (the channel's own).
        node: NodeId,
        /// The placement's epoch.
        epoch: Epoch,
    },
    /// corral minted a token and redirected the channel to the owner.
    Redirect {
        /// The owner the channel goes to.
        to: NodeId,
        /// The token the destination app will see as the extension.
        token: TokenId,
        /// The endpoint the redirect used.
        endpoint: String,
        /// The placement's epoch.
        epoch: Epoch,
    },
}

impl Controller {
    /// Resolves (or creates) `room`'s placement, preferring `landing`.
    ///
    /// # Errors
    /// [`AppError::UnknownNode`], [`AppError::NoEligibleNode`],
    /// [`AppError::Store`].
    pub async fn placement(
        &self,
        room: &RoomKey,
        landing: Option<&NodeId>,
    ) -> Result<PlacementAnswer, AppError> {
        if let Some(l) = landing
            && !self.inner.nodes.contains_key(l)
        {
            return Err(AppError::UnknownNode(l.clone()));
        }
        let (node, epoch, created) = self.resolve(room, landing).await?;
        let sip_host = self.sip_host(&node).unwrap_or_default();
        Ok(PlacementAnswer {
            node,
            sip_host,
            epoch,
            created,
        })
    }

    /// Resolves `room`'s owner: the policy chooses among fresh node records
    /// (the landing node first when eligible), the store decides atomically.
    /// A refused choice refreshes the records and chooses once more.
    pub(crate) async fn resolve(
        &self,
        room: &RoomKey,
        landing: Option<&NodeId>,
    ) -> Result<(NodeId, Epoch, bool), AppError> {
        for _ in 0..2 {
            let choice = {
                let view = self
                    .inner
                    .view
                    .read()
                    .map(|v| v.clone())
                    .unwrap_or_default();
                let mut policy = match self.inner.policy.lock() {
                    Ok(p) => p,
                    Err(p) => p.into_inner(),
                };
                policy.choose(room, landing, &view)
            };
            let Some(choice) = choice else {
                self.refresh_view().await;
                continue;
            };
            let started = Instant::now();
            let resolved = self.inner.store.resolve_placement(room, &choice).await;
            self.inner
                .metrics
                .store_latency("resolve_placement", started.elapsed());
            match resolved? {
                crate::store::Resolution::Owner {
                    node,
                    epoch,
                    created,
                    previous,
                } => {
                    if created {
                        if let Ok(mut p) = self.inner.policy.lock() {
                            p.record_placement(&node);
                        }
                        self.inner.metrics.placed(&node);
                        self.emit(super::FarmEvent::RoomPlaced {
                            room: room.clone(),
                            node: node.clone(),
                            epoch: epoch.0,
                            previous,
                        });
                    }
                    return Ok((node, epoch, created));
                }
                crate::store::Resolution::ChoiceIneligible { .. } => self.refresh_view().await,
            }
        }
        Err(AppError::NoEligibleNode(room.clone()))
    }

    /// Brings `channel` (on `node`, still ringing) to `room`'s node: says
    /// "stay" if it is there, else mints a token and redirects it.
    ///
    /// # Errors
    /// [`AppError::UnknownNode`], [`AppError::NoEligibleNode`],
    /// [`AppError::Store`], [`AppError::Redirect`] (ARI's answer, e.g. 404
    /// for an unknown channel).
    pub async fn colocate(
        &self,
        room: &RoomKey,
        node: &NodeId,
        channel: &ChannelId,
    ) -> Result<Colocated, AppError> {
        let Some(rt) = self.inner.nodes.get(node).cloned() else {
            return Err(AppError::UnknownNode(node.clone()));
        };
        let (owner, epoch, _) = self.resolve(room, Some(node)).await?;
        if &owner == node {
            return Ok(Colocated::Stay { node: owner, epoch });
        }
        let target = self
            .sip_host(&owner)
            .ok_or_else(|| AppError::UnknownNode(owner.clone()))?;
        let grant = TokenGrant {
            room: room.clone(),
            from: node.clone(),
            to: owner.clone(),
            channel: channel.clone(),
            caller: String::new(),
            hops: 1,
            agent: None,
        };
        let (token, endpoint) = match self.send_with_token(&rt, grant, &target).await {
            Ok(v) => v,
            Err(super::rooms::MoveFailed::Store(e)) => return Err(AppError::Store(e)),
            Err(super::rooms::MoveFailed::Redirect(e)) => return Err(AppError::Redirect(e)),
        };
        tracing::debug!(node = %node, room = %room, owner = %owner, token = token.prefix(), "app asked for a redirect");
        Ok(Colocated::Redirect {
            to: owner,
            token,
            endpoint,
            epoch,
        })
    }

    /// Consumes `token` on `node` for an app resuming a redirected call,
    /// counting it as the call path does.
    ///
    /// # Errors
    /// [`AppError::Store`].
    pub async fn consume_token(
        &self,
        token: &TokenId,
        node: &NodeId,
    ) -> Result<Consumed, AppError> {
        let c = self.inner.store.consume_token(token, node).await?;
        let outcome = match &c {
            Consumed::Ok(rec) => {
                self.inner.metrics.redirect(&rec.grant.from, "confirmed");
                "consumed"
            }
            Consumed::WrongNode(_) => "wrong_node",
            Consumed::Expired(_) => "expired",
            Consumed::Unknown => "unknown",
        };
        self.inner.metrics.token(node, outcome);
        Ok(c)
    }

    /// Reads a token without consuming it.
    ///
    /// # Errors
    /// [`AppError::Store`].
    pub async fn peek_token(&self, token: &TokenId) -> Result<Option<TokenRecord>, AppError> {
        Ok(self.inner.store.peek_token(token).await?)
    }
}
