//! The one backoff policy: exponential with full jitter, a cap, and a reset
//! after a stable period. Every reconnect in corral goes through it.

use std::time::Duration;

use rand::RngExt;
use tokio::time::Instant;

/// What an error tells its caller to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try again at once (another node, a fresh read).
    Now,
    /// Try again after a pause: the other side is busy or briefly away.
    After(Duration),
    /// The connection is gone: reconnect, then try again.
    Reconnect,
    /// Trying again cannot help: the request itself is wrong.
    Never,
}

/// Exponential backoff with jitter, from `initial` up to `max`, reset to
/// `initial` once a connection has stayed up for `reset_after`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    reset_after: Duration,
    current: Duration,
    up_since: Option<Instant>,
}

impl Backoff {
    /// First wait: long enough not to hammer a restarting Asterisk.
    pub const DEFAULT_INITIAL: Duration = Duration::from_millis(200);
    /// Longest wait: a node that comes back is reconnected within this.
    pub const DEFAULT_MAX: Duration = Duration::from_secs(10);
    /// A connection up this long counts as stable and resets the backoff.
    pub const DEFAULT_RESET_AFTER: Duration = Duration::from_secs(60);

    /// A backoff with explicit bounds.
    pub fn new(initial: Duration, max: Duration, reset_after: Duration) -> Self {
        Self {
            initial,
            max,
            reset_after,
            current: initial,
            up_since: None,
        }
    }

    /// Marks the connection as established; a long enough stay resets the
    /// backoff at the next failure.
    pub fn connected(&mut self) {
        self.up_since = Some(Instant::now());
    }

    /// The next wait after a failure: a random duration in
    /// `[current/2, current]`, then `current` doubles up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        if let Some(since) = self.up_since.take()
            && since.elapsed() >= self.reset_after
        {
            self.current = self.initial;
        }
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let lo = base.as_millis() as u64 / 2;
        let hi = base.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(lo..=hi.max(lo)))
    }
}

impl Backoff {
    /// How long to wait before trying again after an error that says
    /// `retry`; `None` when trying again cannot help.
    ///
    /// `After(d)` waits at least `d` (the other side said how long it needs);
    /// `Reconnect` and `Now` take the next backoff step, which starts short:
    /// a reconnect takes a moment, and "now", repeated, must not spin.
    pub fn delay_for(&mut self, retry: Retry) -> Option<Duration> {
        match retry {
            Retry::Never => None,
            Retry::After(d) => Some(d.max(self.next_delay())),
            Retry::Now | Retry::Reconnect => Some(self.next_delay()),
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(
            Self::DEFAULT_INITIAL,
            Self::DEFAULT_MAX,
            Self::DEFAULT_RESET_AFTER,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_error_says_is_honoured() {
        let mut b = Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(40),
            Duration::from_secs(5),
        );
        assert_eq!(b.delay_for(Retry::Never), None);
        let after = b
            .delay_for(Retry::After(Duration::from_millis(500)))
            .unwrap();
        assert_eq!(
            after,
            Duration::from_millis(500),
            "a stated pause is waited"
        );
        let step = b.delay_for(Retry::Reconnect).unwrap();
        assert!(step <= Duration::from_millis(40), "{step:?}");
        let now = b.delay_for(Retry::Now).unwrap();
        assert!(now <= Duration::from_millis(40), "{now:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn grows_to_the_cap_and_resets_after_a_stable_period() {
        let mut b = Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(800),
            Duration::from_secs(5),
        );
        let waits: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        assert!(waits[0] <= Duration::from_millis(100));
        assert!(waits[5] >= Duration::from_millis(400) && waits[5] <= Duration::from_millis(800));
        b.connected();
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
