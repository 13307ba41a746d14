//! Route ahead: the proxy asks where a call's room lives before it
//! dispatches the call, so the call lands on its room's node and needs no
//! redirect (ARCHITECTURE.md, *The call path*, step 0: prevent first,
//! repair second).
//!
//! The room is read from the request URI's user part as the shipped
//! dialplan reads it ([`decide::route_target`]), then resolved by the
//! owner decision a `StasisStart` makes ([`super::owner`]): an existing
//! room answers its owner, a new one is placed (preferring the node the
//! proxy says it would pick, if it says so) in the same atomic store
//! operation. So the call that arrives where the proxy was told finds that
//! node to be the owner and joins without a redirect; a room that moved
//! meanwhile is repaired by the redirect as ever.
//!
//! # Guarantees
//! - Only a node that is up is ever named ([`decide::route`]): never a
//!   draining or down one.
//! - Every failure is "no opinion" (the proxy dispatches round-robin): a
//!   lookup never fails a call.

use super::Controller;
use super::decide::{self, NoOpinion, OwnerFact, RouteAnswer};
use super::owner::NoOwner;
use crate::domain::{NodeId, NodeState};

impl Controller {
    /// Where the call to `user` (the request URI's user part) should be
    /// sent; `landing` is the node the proxy would pick (its id, or its
    /// SIP address as `sip:host:port` or `host:port`), preferred for a new
    /// room. Counted in `corral_route_lookups_total{outcome}`.
    pub async fn route_ahead(&self, user: &str, landing: Option<&str>) -> RouteAnswer {
        let answer = self.route_answer(user, landing).await;
        let outcome = match &answer {
            RouteAnswer::Node(_) => "answered",
            RouteAnswer::NoOpinion(why) => why.as_str(),
        };
        self.inner.metrics.route_lookup(outcome);
        answer
    }

    async fn route_answer(&self, user: &str, landing: Option<&str>) -> RouteAnswer {
        let Some(room) = decide::route_target(user) else {
            return RouteAnswer::NoOpinion(NoOpinion::NotARoom);
        };
        let landing = match landing {
            None => None,
            Some(l) => match self.node_at(l) {
                Some(n) => Some(n),
                None => return RouteAnswer::NoOpinion(NoOpinion::UnknownLanding),
            },
        };
        let owner = self.owner(&room, landing.as_ref()).await;
        let fact = match &owner {
            Ok(o) => OwnerFact::Node(&o.node),
            Err(NoOwner::NoEligibleNode) => OwnerFact::NoEligibleNode,
            Err(NoOwner::StoreUnavailable(_)) => OwnerFact::StoreUnavailable,
        };
        let node = owner.as_ref().ok().and_then(|o| self.node_record(&o.node));
        decide::route(
            fact,
            node.as_ref().map(|r| r.0),
            node.as_ref().is_some_and(|r| r.1),
        )
    }

    /// The configured node `addr` names: its id, or its SIP host with or
    /// without `sip:`.
    fn node_at(&self, addr: &str) -> Option<NodeId> {
        if let Ok(id) = NodeId::new(addr)
            && self.inner.nodes.contains_key(&id)
        {
            return Some(id);
        }
        let host = addr.strip_prefix("sip:").unwrap_or(addr);
        self.inner
            .nodes
            .values()
            .find(|n| n.spec.sip_host == host)
            .map(|n| n.id.clone())
    }

    /// A configured node's state and suspect mark in the latest node view (the store's,
    /// refreshed every half second and at once after a drain); `None` for
    /// a node that is not configured or not registered yet.
    pub(crate) fn node_record(&self, node: &NodeId) -> Option<(NodeState, bool)> {
        if !self.inner.nodes.contains_key(node) {
            return None;
        }
        self.inner
            .view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|r| &r.id == node)
            .map(|r| (r.state, r.suspect))
    }
}
