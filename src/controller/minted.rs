//! The grants of the tokens this replica minted, kept in memory until they
//! expire: with the store down, a token arriving on a node this replica
//! streams can still be used ("store down → join where it landed", applied
//! to token arrivals).
//!
//! # Guarantees
//! - A grant is taken at most once from here (single use, per replica).
//! - Bounded: expired grants are dropped as new ones come, and past
//!   [`MAX_MINTED`] live grants a new one is not kept (its call, arriving
//!   with the store down, then waits for the store like any token this
//!   replica did not mint).
//!
//! # Caveats
//! A grant used from here is not consumed in the store (it did not
//! answer): the store's copy expires on its own. Only the call that carries
//! the token could present it again, and it is joined by then.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::TokenId;
use crate::store::TokenGrant;

/// The most live grants kept: a token lives 30 s by default, so this covers
/// over 3,000 redirects a second.
pub(crate) const MAX_MINTED: usize = 100_000;

/// Grants by token, with their expiry (this replica's clock).
#[derive(Debug, Default)]
pub(crate) struct Minted {
    grants: Mutex<HashMap<TokenId, (TokenGrant, Instant)>>,
}

impl Minted {
    /// Keeps `grant` of `token` until `now + ttl`.
    pub(crate) fn keep(&self, token: &TokenId, grant: &TokenGrant, ttl: Duration, now: Instant) {
        let mut g = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        if g.len() >= MAX_MINTED / 2 {
            g.retain(|_, (_, until)| *until > now);
        }
        if g.len() < MAX_MINTED {
            g.insert(token.clone(), (grant.clone(), now + ttl));
        }
    }

    /// Takes the grant of `token` if it is kept and not expired at `now`.
    pub(crate) fn take(&self, token: &TokenId, now: Instant) -> Option<TokenGrant> {
        let mut g = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        match g.remove(token) {
            Some((grant, until)) if until > now => Some(grant),
            _ => None,
        }
    }

    /// Forgets `token` (consumed through the store).
    pub(crate) fn forget(&self, token: &TokenId) {
        self.grants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.grants.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ChannelId, NodeId, RoomKey};

    fn grant() -> TokenGrant {
        TokenGrant {
            room: RoomKey::parse("conference", "a").unwrap(),
            from: NodeId::new("x").unwrap(),
            to: NodeId::new("y").unwrap(),
            channel: ChannelId::new("c").unwrap(),
            caller: String::new(),
            hops: 1,
            agent: None,
        }
    }

    #[test]
    fn a_grant_is_taken_once_and_only_before_it_expires() {
        let m = Minted::default();
        let t0 = Instant::now();
        let (a, b, c) = (
            TokenId::new("A").unwrap(),
            TokenId::new("B").unwrap(),
            TokenId::new("C").unwrap(),
        );
        let ttl = Duration::from_secs(30);
        m.keep(&a, &grant(), ttl, t0);
        m.keep(&b, &grant(), ttl, t0);
        m.keep(&c, &grant(), ttl, t0);
        assert_eq!(m.take(&a, t0), Some(grant()));
        assert_eq!(m.take(&a, t0), None, "single use");
        assert_eq!(m.take(&b, t0 + ttl), None, "expired");
        m.forget(&c);
        assert_eq!(m.take(&c, t0), None, "consumed through the store");
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn expired_grants_are_dropped_as_new_ones_come() {
        let m = Minted::default();
        let t0 = Instant::now();
        let ttl = Duration::from_millis(10);
        for i in 0..MAX_MINTED / 2 {
            m.keep(&TokenId::new(format!("T{i}")).unwrap(), &grant(), ttl, t0);
        }
        assert_eq!(m.len(), MAX_MINTED / 2);
        m.keep(&TokenId::new("new").unwrap(), &grant(), ttl, t0 + ttl);
        assert_eq!(m.len(), 1);
    }
}
