//! The ARI client: typed REST calls ([`rest`]) and the event stream
//! ([`stream`]) for one Asterisk node, behind one cheap-to-clone [`AriNode`].
//!
//! This module knows ARI and nothing of rooms: the controller decides, this
//! module carries the decision out and reports what Asterisk answered. There
//! is no trait and no mock: tests drive this code against `crate::sim`, which
//! speaks ARI over real sockets.
//!
//! # Failure
//! Every call has a timeout. Errors say what the caller should do
//! ([`Error::retry`]): a 4xx from Asterisk is an answer about the request
//! (the channel is gone, it left Stasis, it is in the wrong state) and is not
//! retried; a 5xx or a transport error may be.

pub mod events;
pub mod rest;
pub mod stream;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::NodeId;
use crate::retry::Retry;

/// How to reach one node's ARI.
#[derive(Clone)]
pub struct Config {
    /// The node this is.
    pub node: NodeId,
    /// ARI's HTTP base, without `/ari` (`http://10.0.0.11:8088`).
    pub base_url: String,
    /// ARI user (`ari.conf`).
    pub username: String,
    /// ARI password. Never printed: `Debug` says "set".
    pub password: String,
    /// The Stasis app corral registers on the node's websocket.
    pub app: String,
    /// Timeout of one REST call.
    pub request_timeout: Duration,
}

impl Config {
    /// A REST call that takes longer than this has failed: ARI answers in
    /// milliseconds unless the node is overloaded or hung.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("node", &self.node)
            .field("base_url", &self.base_url)
            .field("username", &self.username)
            .field("password", &crate::secret::secret_state(&self.password))
            .field("app", &self.app)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// What went wrong talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Asterisk answered with an error status.
    #[error("{op} on node {node}: ARI answered {status}: {message}")]
    Status {
        /// The node asked.
        node: NodeId,
        /// The operation (`redirect`, `addChannel`, ...).
        op: &'static str,
        /// The HTTP status.
        status: u16,
        /// Asterisk's `message`, or the body's start.
        message: String,
    },
    /// The request did not complete: refused, reset, timed out.
    #[error("{op} on node {node}: {source}")]
    Transport {
        /// The node asked.
        node: NodeId,
        /// The operation.
        op: &'static str,
        /// What the HTTP client saw.
        #[source]
        source: reqwest::Error,
    },
    /// Asterisk answered 2xx with a body corral cannot read.
    #[error("{op} on node {node}: unreadable answer: {detail}")]
    Decode {
        /// The node asked.
        node: NodeId,
        /// The operation.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl Error {
    /// What the caller should do about this error.
    pub fn retry(&self) -> Retry {
        match self {
            Error::Status { status, .. } if *status >= 500 => {
                Retry::After(Duration::from_millis(50))
            }
            Error::Status { .. } | Error::Decode { .. } => Retry::Never,
            Error::Transport { .. } => Retry::Reconnect,
        }
    }

    /// The HTTP status Asterisk answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One node's ARI: REST client and config. Cheap to clone (one `Arc`); all
/// clones share one connection pool.
#[derive(Clone, Debug)]
pub struct AriNode {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: Config,
    http: reqwest::Client,
    /// `base_url` + `/ari`, built once.
    ari: String,
    /// Where REST latency is recorded.
    metrics: crate::telemetry::SharedMetrics,
}

impl AriNode {
    /// Builds the client. No I/O happens here.
    ///
    /// # Errors
    /// The HTTP client cannot be built (the TLS or DNS backend failed to
    /// initialise).
    pub fn new(
        cfg: Config,
        metrics: crate::telemetry::SharedMetrics,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout.min(Duration::from_secs(2)))
            .pool_max_idle_per_host(16)
            .tcp_nodelay(true)
            .build()?;
        let ari = format!("{}/ari", cfg.base_url.trim_end_matches('/'));
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                http,
                ari,
                metrics,
            }),
        })
    }

    /// The node's id.
    pub fn node(&self) -> &NodeId {
        &self.inner.cfg.node
    }

    /// The config this client was built from.
    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }
}
