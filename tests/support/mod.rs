//! Test support shared by every file in `tests/`: each starts with
//! `mod support;`. Things start for real, in-process, on `127.0.0.1:0`.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

/// Paces a wait for a condition with a deadline: the one place tests pause
/// between two looks (2 ms, doubling up to 50 ms). `next` is false once the
/// deadline has passed.
pub struct Poll {
    until: std::time::Instant,
    pause: Duration,
}

impl Poll {
    /// A wait of at most `deadline` from now.
    pub fn new(deadline: Duration) -> Self {
        Self {
            until: std::time::Instant::now() + deadline,
            pause: Duration::from_millis(2),
        }
    }

    fn step(&mut self) -> Option<Duration> {
        if std::time::Instant::now() > self.until {
            return None;
        }
        let pause = self.pause;
        self.pause = (self.pause * 2).min(Duration::from_millis(50));
        Some(pause)
    }

    /// Pauses before the next look; false when the deadline has passed.
    pub async fn next(&mut self) -> bool {
        match self.step() {
            Some(p) => {
                tokio::time::sleep(p).await;
                true
            }
            None => false,
        }
    }

    /// [`Poll::next`] for code outside the runtime (starting processes).
    pub fn next_blocking(&mut self) -> bool {
        match self.step() {
            Some(p) => {
                std::thread::sleep(p);
                true
            }
            None => false,
        }
    }
}

/// Polls `condition` until it returns `Some`, or fails the test after
/// `deadline` with `what` in the message. Tests wait for conditions, never
/// for time.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let mut poll = Poll::new(deadline);
    loop {
        if let Some(v) = condition().await {
            return v;
        }
        if !poll.next().await {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
    }
}

/// A seed for a test's randomness: `CORRAL_TEST_SEED` if set, else fresh.
/// Printed so that a failing run can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("CORRAL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{test}: seed {seed} (replay with CORRAL_TEST_SEED={seed})");
    seed
}

pub mod api;
pub mod farm;
pub mod openapi;
pub mod real;
pub mod real_asterisk;
pub mod redis;

/// Logs of corral's code in tests, when `RUST_LOG` is set (e.g.
/// `RUST_LOG=corral=debug cargo test --test call_path -- --nocapture`).
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
