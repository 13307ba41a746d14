//! Serving the API over TCP: [`serve`] accepts connections and serves the
//! [`super::router`] app on each with hyper's HTTP/1.1 server, within the
//! limits a port that untrusted clients reach needs, until its shutdown
//! token fires.
//!
//! # Limits (`[api]` in the configuration; [`ServerConfig`])
//!
//! - **Header read timeout** (`header_read_timeout_ms`): hyper's
//!   `header_read_timeout`. A request's head (request line and headers)
//!   must be complete this long after the connection started waiting for
//!   it (at accept, or when the previous response ended), else the
//!   connection is closed. A client that sends half a request line and
//!   stalls holds its connection for this long at most.
//! - **Idle timeout** (`idle_timeout_ms`): a connection with no request in
//!   progress that has received no byte of a next one for this long is
//!   closed (hyper's graceful close: an idle connection closes at once). A
//!   request is in progress from its head until its response body is done,
//!   so an event stream (`/v1/events`) is never idle. Because hyper's head
//!   clock also runs while a connection idles, the idle timeout must be the
//!   shorter of the two (`Config::validate` checks it).
//! - **Connection cap** (`max_connections`): a semaphore around accept, as
//!   mini-redis does. With the cap reached, corral accepts nothing more;
//!   new connections wait in the kernel's listen backlog and are served, in
//!   order, as served ones close (the timeouts above make sure they do).
//!
//! A request body that trickles in, and a client that reads its response
//! slowly, are not bounded here; the body limit keeps bodies small.
//!
//! # Shutdown
//!
//! When `shutdown` fires, corral stops accepting (the listener closes) and
//! asks every connection to close gracefully: an idle one closes at once,
//! a busy one after its response. Event streams end on the same token
//! ([`super::AppState::with_shutdown`]). [`serve`] returns when every
//! connection has closed.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The limits of the API's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// How long a request's head may take, counted from when the connection
    /// starts waiting for it.
    pub header_read_timeout: Duration,
    /// How long a connection may wait, with no request in progress, for
    /// the first byte of the next one.
    pub idle_timeout: Duration,
    /// How many connections are served at once.
    pub max_connections: usize,
}

impl ServerConfig {
    /// 20 s: the first figure of Apache httpd's default `RequestReadTimeout
    /// header=20-40` (mod_reqtimeout). corral's clients (apps, the CLI,
    /// browsers, Prometheus) send a head in one write; 20 s covers a
    /// congested link many times over and bounds what a stalled client
    /// holds.
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(20);

    /// 5 s: Apache httpd's default `KeepAliveTimeout`. A client that
    /// returns later opens a new connection, which costs a handshake; an
    /// idle connection costs a slot of [`Self::DEFAULT_MAX_CONNECTIONS`].
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

    /// 512: half of Linux's default soft limit of 1024 open files per
    /// process (each connection is one), leaving the rest to the store and
    /// the nodes' REST and event connections. Raise it with `ulimit -n`.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// The longest pause after a failed `accept` (out of file descriptors, ...)
/// before the next try; the pause starts at 1 ms and doubles.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `shutdown` fires, then closes every
/// connection gracefully and returns once they have all closed.
///
/// Failed accepts are retried (with a growing pause, logged at `warn`):
/// they come from the system (no file descriptor left, a connection reset
/// before it was accepted), and the server must outlive them. A
/// connection's own errors (a client gone, a head timed out) end that
/// connection only and are logged at `debug`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    cfg: ServerConfig,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let connections = TaskTracker::new();
    let mut backoff = Duration::from_millis(1);
    loop {
        // A slot first: with the cap reached, nothing more is accepted.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed; nothing left to serve with
            },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    tracing::warn!(reason = %e, pause_ms = backoff.as_millis() as u64, "API accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(1);
        connections.spawn(connection(stream, app.clone(), cfg, shutdown.clone(), slot));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Serves one connection until it closes; `_slot` frees its place under
/// the connection cap when it does.
async fn connection(
    stream: TcpStream,
    app: Router,
    cfg: ServerConfig,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Metered {
        stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let in_progress = InProgress::start(&activity);
            let app = app.clone();
            async move {
                let resp = app
                    .oneshot(req.map(Body::new))
                    .await
                    .unwrap_or_else(|e: Infallible| match e {});
                // The request stays in progress until its body is done (or
                // dropped): an event stream is never idle.
                Ok::<_, Infallible>(resp.map(|body| {
                    Body::new(Tracked {
                        body,
                        _in_progress: in_progress,
                    })
                }))
            }
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout);
    let conn = http.serve_connection(io, service);
    tokio::pin!(conn);
    let idle = activity.idle_for(cfg.idle_timeout);
    tokio::pin!(idle);
    let mut closing = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(reason = %e, "API connection ended");
                }
                break;
            }
            _ = shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = &mut idle, if !closing => {
                closing = true;
                tracing::debug!(idle_ms = cfg.idle_timeout.as_millis() as u64, "closing an idle API connection");
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What a connection is doing, for the idle timeout: requests in progress,
/// since when none is, and whether a byte of a next one arrived since.
#[derive(Debug)]
struct Activity {
    state: Mutex<ActivityState>,
    /// Wakes [`Activity::idle_for`] whenever the state changes in a way that
    /// moves or cancels its deadline.
    changed: Notify,
}

#[derive(Debug, Clone, Copy)]
struct ActivityState {
    /// Requests whose response is not done.
    in_progress: usize,
    /// When `in_progress` last became 0 (or the connection was accepted).
    idle_since: Instant,
    /// A byte arrived while no request was in progress: a next head is on
    /// its way, and hyper's header read timeout governs it.
    reading: bool,
}

impl Activity {
    fn new() -> Self {
        Self {
            state: Mutex::new(ActivityState {
                in_progress: 0,
                idle_since: Instant::now(),
                reading: false,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        // The state is plain data, consistent after every statement: a
        // panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_read(&self) {
        let mut s = self.lock();
        if s.in_progress == 0 && !s.reading {
            s.reading = true;
            drop(s);
            self.changed.notify_one();
        }
    }

    /// Resolves once the connection has been idle (no request in progress,
    /// no byte of a next one) for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let s = *self.lock();
            if s.in_progress == 0 && !s.reading {
                let deadline = s.idle_since + timeout;
                if Instant::now() >= deadline {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = self.changed.notified() => {}
                }
            } else {
                self.changed.notified().await;
            }
        }
    }
}

/// A request in progress; dropping it (with the response body) ends it.
#[derive(Debug)]
struct InProgress(Arc<Activity>);

impl InProgress {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.lock().in_progress += 1;
        activity.changed.notify_one();
        Self(activity.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.in_progress = s.in_progress.saturating_sub(1);
        if s.in_progress == 0 {
            s.idle_since = Instant::now();
            s.reading = false;
        }
        drop(s);
        self.0.changed.notify_one();
    }
}

/// A response body that keeps its request in progress until it is done.
struct Tracked {
    body: Body,
    _in_progress: InProgress,
}

impl HttpBody for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection's socket, telling [`Activity`] when bytes arrive.
struct Metered {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Metered {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.on_read();
        }
        polled
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
