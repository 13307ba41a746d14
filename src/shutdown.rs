//! Shutdown: turns SIGTERM and Ctrl-C into a [`CancellationToken`].
//!
//! Long-running functions take the token as an argument (so tests pass their
//! own) and spawn their tasks on a [`tokio_util::task::TaskTracker`], so that
//! "stop taking work, then wait for what is in flight" is one `cancel()` and
//! one `wait()`.

pub use tokio_util::sync::CancellationToken;

/// A spawned task owned by its handle: dropping the handle aborts the task
/// (kube-runtime's `CancelableJoinHandle`). For sub-tasks that must die
/// with their parent even when the parent is itself cancelled mid-await.
#[derive(Debug)]
pub struct OwnedTask<T>(tokio::task::JoinHandle<T>);

impl<T: Send + 'static> OwnedTask<T> {
    /// Spawns `fut` on the current runtime, owned by the returned handle.
    pub fn spawn(fut: impl std::future::Future<Output = T> + Send + 'static) -> Self {
        Self(tokio::spawn(fut))
    }
}

impl<T> OwnedTask<T> {
    /// True once the task has ended.
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

/// Awaiting an `OwnedTask` yields the task's output, as awaiting its
/// `JoinHandle` would (`Err` if it panicked or was aborted).
impl<T> std::future::Future for OwnedTask<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for OwnedTask<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Returns a token that is cancelled on the first SIGTERM or Ctrl-C. A second
/// signal exits the process at once (the forced stage of a two-stage stop).
///
/// The watcher task is deliberately detached, not an [`OwnedTask`]: its job
/// outlives the caller's scope (after the first signal the caller drains and
/// returns, and the second signal must still force the exit while that
/// drain runs), it holds nothing but the token, and it ends with the runtime.
/// Returning a guard would make every caller keep one alive for no gain.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    // Detached on purpose; see above.
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; finishing work in flight (signal again to stop now)");
        trigger.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: stopping now");
        std::process::exit(130);
    });
    token
}

/// Waits for one SIGTERM or Ctrl-C.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_an_owned_task_aborts_it() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = OwnedTask::spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await
        });
        assert!(!task.is_finished());
        drop(task);
        // The sender is dropped with the aborted task.
        assert!(rx.await.is_err());
    }

    #[tokio::test]
    async fn awaiting_an_owned_task_returns_its_value() {
        let task = OwnedTask::spawn(async { 41 + 1 });
        assert_eq!(task.await.unwrap(), 42);
    }

    #[tokio::test]
    async fn an_aborted_owned_task_awaits_to_a_cancelled_error() {
        let task = OwnedTask::spawn(std::future::pending::<()>());
        task.0.abort();
        assert!(task.await.unwrap_err().is_cancelled());
    }
}
