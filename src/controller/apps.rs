//! The decisions apps ask for over the HTTP API: where a room lives, and
//! "bring this channel to its room" (redirect with a token when needed).
//!
//! They are the same decisions the call path makes for corral's own Stasis
//! app, so an app running its own conference or queue logic gets corral's
//! guarantees: one atomic owner decision, tokens bound to a node and used
//! once.

use serde::Serialize;

use super::Controller;
use super::owner::{NoOwner, Owner};
use crate::domain::{ChannelId, Epoch, NodeId, RoomKey, TokenId};
use crate::store::{Consumed, TokenGrant, TokenRecord};
use crate::telemetry::{RedirectOutcome, TokenOutcome};

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
    /// Resolves (or creates) `room`'s placement, preferring `landing`
    /// (the owner decision of [`super::owner`], the same as the call
    /// path's).
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
        let owner = self.app_owner(room, landing).await?;
        let sip_host = self.sip_host(&owner.node).unwrap_or_default();
        Ok(PlacementAnswer {
            node: owner.node,
            sip_host,
            epoch: owner.epoch,
            created: owner.created,
        })
    }

    /// The owner decision, its failure as the API tells it.
    async fn app_owner(&self, room: &RoomKey, landing: Option<&NodeId>) -> Result<Owner, AppError> {
        self.owner(room, landing).await.map_err(|e| match e {
            NoOwner::NoEligibleNode => AppError::NoEligibleNode(room.clone()),
            NoOwner::StoreUnavailable(e) => AppError::Store(e),
        })
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
        let Owner {
            node: owner, epoch, ..
        } = self.app_owner(room, Some(node)).await?;
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
        if let Consumed::Ok(rec) = &c {
            self.inner
                .metrics
                .redirect(&rec.grant.from, RedirectOutcome::Confirmed);
        }
        self.inner.metrics.token(node, TokenOutcome::of(&c));
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
