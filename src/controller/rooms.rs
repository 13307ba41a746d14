//! Rooms on a node: the bridge, the members, and the linger before release.
//!
//! A room's bridge on its node has a deterministic id built from the room
//! and its epoch (`corral-conference-sales-7`) and the ARI name
//! `corral:<kind>:<room>` (both from [`crate::names`], with the app's
//! name). Creating it is idempotent (a 409 means it is there), and a room re-placed on the same node gets a new epoch and so a
//! new bridge: a release destroying the old one can never pull a new
//! joiner out.
//!
//! # Guarantees
//! - A member is recorded in the store before its channel is answered, so a
//!   store that says "another node owns this room" still finds the call
//!   ringing and movable by a 302.
//! - A room is released only by the store's rule (empty, same epoch, empty
//!   for the whole linger by the store's clock); the bridge is destroyed
//!   only after that.

use std::sync::Arc;
use std::time::Instant;

use super::channel::{Membership, NodeRuntime};
use super::{Controller, FarmEvent};
use crate::ari::rest::{BridgeType, Created};
use crate::domain::{BridgeId, ChannelId, Epoch, RoomKey, RoomKind, TokenId};
use crate::store::{MemberRemoved, Release, TokenGrant};
use crate::telemetry::{RedirectOutcome, TokenOutcome};

fn bridge_type(kind: RoomKind) -> BridgeType {
    match kind {
        RoomKind::Conference => BridgeType::Mixing,
        RoomKind::Queue => BridgeType::Holding,
    }
}

impl Controller {
    /// Answers `channel` on `node` and puts it in the room's bridge,
    /// creating the bridge if needed. `epoch` is `None` for a degraded join.
    ///
    /// # Errors
    /// ARI refused: the channel is gone (404/400) or left Stasis (409/422).
    /// The caller logs it; nothing is left half-done in the store that the
    /// leave path will not undo.
    pub(crate) async fn put_in_bridge(
        &self,
        node: &Arc<NodeRuntime>,
        channel: &ChannelId,
        room: &RoomKey,
        epoch: Option<Epoch>,
    ) -> Result<BridgeId, crate::ari::Error> {
        self.ari_retry(|| node.ari.answer(channel)).await?;
        self.bridge_channel(node, channel, room, epoch).await
    }

    /// Puts an answered `channel` in the room's bridge (made if needed; a
    /// cached bridge that is gone is made again) and remembers it joined.
    ///
    /// # Errors
    /// As [`Controller::put_in_bridge`].
    pub(crate) async fn bridge_channel(
        &self,
        node: &Arc<NodeRuntime>,
        channel: &ChannelId,
        room: &RoomKey,
        epoch: Option<Epoch>,
    ) -> Result<BridgeId, crate::ari::Error> {
        let id = match epoch {
            Some(_) => self.inner.names.bridge_id(room, epoch),
            // A degraded join of a conference goes to the room's bridge
            // here if it has one (the store is down, the room likely lives
            // here): one bridge per room on a node, also during an outage.
            None if room.kind == RoomKind::Conference => node
                .with(|s| s.room_bridges.get(room).cloned())
                .unwrap_or_else(|| self.inner.names.bridge_id(room, None)),
            None => self.inner.names.bridge_id(room, None),
        };
        // A resync that lists this bridge empty meanwhile must not destroy
        // it under the call.
        node.with(|s| s.bridge_join_started(id.as_str()));
        let joined = self.add_to_bridge(node, channel, room, &id).await;
        node.with(|s| s.bridge_join_ended(id.as_str()));
        joined?;
        node.with(|s| {
            s.room_bridges.insert(room.clone(), id.clone());
            s.joined(
                channel,
                Membership {
                    room: room.clone(),
                    recorded: epoch.is_some(),
                },
            )
        });
        Ok(id)
    }

    /// Puts `channel` in the room's bridge `id`, made first if needed.
    async fn add_to_bridge(
        &self,
        node: &Arc<NodeRuntime>,
        channel: &ChannelId,
        room: &RoomKey,
        id: &BridgeId,
    ) -> Result<(), crate::ari::Error> {
        self.ensure_bridge(node, room, id).await?;
        match self
            .ari_retry(|| node.ari.add_channel(id, channel, None))
            .await
        {
            Err(e) if e.status() == Some(404) => {
                // The cache was stale: the bridge went away. Make it again.
                node.with(|s| s.bridges.remove(id.as_str()));
                self.ensure_bridge(node, room, id).await?;
                self.ari_retry(|| node.ari.add_channel(id, channel, None))
                    .await
            }
            other => other,
        }
    }

    /// Makes the room's bridge `id` on `node` unless it is known to exist.
    async fn ensure_bridge(
        &self,
        node: &Arc<NodeRuntime>,
        room: &RoomKey,
        id: &BridgeId,
    ) -> Result<(), crate::ari::Error> {
        if node.with(|s| s.bridges.contains(id.as_str())) {
            return Ok(());
        }
        let name = self.inner.names.bridge_name(room);
        match self
            .ari_retry(|| node.ari.create_bridge(id, bridge_type(room.kind), &name))
            .await?
        {
            Created::New(_) | Created::Exists => {}
        }
        if room.kind == RoomKind::Queue {
            // ARI puts a holding bridge's participants in idle mode "none"
            // (res/stasis/stasis_bridge.c): without this, waiting callers
            // hear silence. The music comes from one announcer channel per
            // bridge, which ARI lists in no bridge and no channel.
            if let Err(e) = self.ari_retry(|| node.ari.bridge_start_moh(id, None)).await {
                tracing::warn!(node = %node.id, room = %room, reason = %e, "music on hold not started in the queue's bridge");
            }
        }
        node.with(|s| s.bridges.insert(id.to_string()));
        Ok(())
    }

    /// A channel left the app on `node`: forget it, remove its member
    /// record; if the room is now empty, release it after the linger.
    pub(crate) async fn leave(&self, node: &Arc<NodeRuntime>, channel: &ChannelId) {
        let Some(joined) = node.with(|s| s.leave(channel)) else {
            return;
        };
        if !joined.recorded {
            return;
        }
        let started = Instant::now();
        let result = self
            .inner
            .store
            .remove_member(&joined.room, &node.id, channel)
            .await;
        self.inner
            .metrics
            .store_latency("remove_member", started.elapsed());
        match result {
            Ok(MemberRemoved::Removed { remaining, epoch }) => {
                self.emit(FarmEvent::MembersChanged {
                    room: joined.room.clone(),
                    node: node.id.clone(),
                    members: remaining,
                });
                if remaining == 0 {
                    self.schedule_release(node.clone(), joined.room, epoch);
                }
            }
            Ok(MemberRemoved::NotMember) => {}
            Err(e) => {
                tracing::warn!(node = %node.id, room = %joined.room, channel = %channel, reason = %e,
                    "member not removed (store unavailable); the reconciler will remove it");
            }
        }
    }

    /// After the linger, asks the store to release `room` if it is still
    /// empty at `epoch`; destroys its bridge if released.
    pub(crate) fn schedule_release(&self, node: Arc<NodeRuntime>, room: RoomKey, epoch: Epoch) {
        let ctrl = self.clone();
        let linger = self.inner.cfg.linger;
        self.inner.tracker.spawn(async move {
            // A stopping corral leaves rooms as they are: another replica, or
            // this one after restart, releases them.
            if ctrl.sleep_unless_stopped(linger).await {
                ctrl.try_release(&node, &room, epoch, linger).await;
            }
        });
    }

    /// Asks the store to release `room` at `epoch` if it has been empty for
    /// at least `min_empty` (store clock); destroys its bridge if released.
    pub(crate) async fn try_release(
        &self,
        node: &Arc<NodeRuntime>,
        room: &RoomKey,
        epoch: Epoch,
        min_empty: std::time::Duration,
    ) {
        match self.inner.store.release_room(room, epoch, min_empty).await {
            Ok(Release::Released) => {
                self.inner.metrics.released(&node.id, "empty", 1);
                self.emit(FarmEvent::RoomReleased {
                    room: room.clone(),
                    node: node.id.clone(),
                    reason: "empty".into(),
                });
                let id = self.inner.names.bridge_id(room, Some(epoch));
                node.with(|s| {
                    s.bridges.remove(id.as_str());
                    if s.room_bridges.get(room) == Some(&id) {
                        s.room_bridges.remove(room);
                    }
                });
                if let Err(e) = node.ari.destroy_bridge(&id).await
                    && e.status() != Some(404)
                {
                    tracing::warn!(node = %node.id, room = %room, reason = %e, "bridge of a released room not destroyed");
                }
                tracing::debug!(node = %node.id, room = %room, epoch = epoch.0, "room released");
            }
            Ok(other) => {
                tracing::debug!(node = %node.id, room = %room, outcome = ?other, "room kept")
            }
            Err(e) => {
                tracing::warn!(node = %node.id, room = %room, reason = %e, "room not released (store unavailable); the reconciler will retry")
            }
        }
    }

    /// Destroys a bridge of `node` by the id ARI listed (a string until
    /// here), forgetting it first.
    pub(crate) async fn destroy_listed_bridge(
        &self,
        node: &Arc<NodeRuntime>,
        id: &str,
        listed: Instant,
    ) {
        if node.with(|s| s.bridge_in_use_since(id, listed)) {
            // A join put a call in it after the listing: not empty.
            tracing::debug!(node = %node.id, bridge = id, "bridge in use since it was listed; kept");
            return;
        }
        node.with(|s| s.bridges.remove(id));
        let Ok(bridge) = BridgeId::new(id) else {
            return;
        };
        if let Err(e) = node.ari.destroy_bridge(&bridge).await {
            tracing::debug!(node = %node.id, bridge = %bridge, reason = %e, "stale bridge not destroyed");
        }
    }
}

/// Why [`Controller::send_with_token`] could not move a channel.
#[derive(Debug)]
pub(crate) enum MoveFailed {
    /// No token: the store did not answer.
    Store(crate::store::Error),
    /// The token exists but ARI refused or failed the redirect.
    Redirect(crate::ari::Error),
}

impl Controller {
    /// Mints a token for `grant` and redirects its channel (on `node`) to
    /// `grant.to` at `sip_host`: the one way corral moves a call, shared by
    /// the call path, split healing and the apps' colocate. On success the
    /// channel is remembered as on its way (a resync will not place it) and
    /// the token and the endpoint used are returned.
    pub(crate) async fn send_with_token(
        &self,
        node: &Arc<NodeRuntime>,
        grant: TokenGrant,
        sip_host: &str,
    ) -> Result<(TokenId, String), MoveFailed> {
        let token = TokenId::generate(&mut rand::rng());
        self.inner
            .store
            .mint_token(&token, &grant, self.inner.cfg.token_ttl)
            .await
            .map_err(MoveFailed::Store)?;
        self.inner.metrics.token(&node.id, TokenOutcome::Minted);
        self.inner.minted.keep(
            &token,
            &grant,
            self.inner.cfg.token_ttl,
            std::time::Instant::now(),
        );
        let endpoint = self
            .send_minted(node, &grant.channel, &token, sip_host)
            .await
            .map_err(MoveFailed::Redirect)?;
        Ok((token, endpoint))
    }

    /// Redirects `chan` (on `node`) with a token minted already to the
    /// node at `sip_host`, and remembers it is on its way; returns the
    /// endpoint used.
    ///
    /// # Errors
    /// ARI refused or failed the redirect.
    pub(crate) async fn send_minted(
        &self,
        node: &Arc<NodeRuntime>,
        chan: &ChannelId,
        token: &TokenId,
        sip_host: &str,
    ) -> Result<String, crate::ari::Error> {
        let endpoint = self
            .inner
            .cfg
            .endpoint_template
            .replace("{token}", token.as_str())
            .replace("{sip_host}", sip_host);
        self.ari_retry(|| node.ari.redirect(chan, &endpoint))
            .await?;
        node.with(|s| s.redirected(chan, token.clone(), std::time::Instant::now()));
        self.inner.metrics.redirect(&node.id, RedirectOutcome::Sent);
        Ok(endpoint)
    }
}
