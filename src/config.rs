//! The one configuration tree: defaults, then a TOML file, then `CORRAL_*`
//! environment variables, validated once at start.
//!
//! Every error names the key at fault (`nodes[1].sip_host: ...`). Secrets
//! (ARI passwords, the API token, a Redis URL's password) never appear in
//! `Debug` output or logs.
//!
//! ```toml
//! farm = "main"
//! [store]
//! redis_url = "redis://127.0.0.1:6379"   # leave out for the in-memory store
//! [api]
//! listen = "127.0.0.1:8088"
//! # header_read_timeout_ms = 20000, idle_timeout_ms = 5000, max_connections = 512
//! [[nodes]]
//! id = "ast1"
//! ari_url = "http://10.0.0.11:8088"
//! username = "corral"
//! password = "..."
//! sip_host = "10.0.0.11:5060"
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::api::ServerConfig;
use crate::domain::{AgentId, NodeId, RoomName};
use crate::policy::Strategy;
use crate::queue::{QueueConfig, QueueSettings};
use crate::secret::{redact_url, secret_state};

/// A configuration that cannot be used, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("{source_name}: {message}")]
    Parse {
        /// Where the text came from.
        source_name: String,
        /// The parser's message (it names the key and line).
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("{key}: {message}")]
    Invalid {
        /// The key, as written in the file (`nodes[0].id`) or environment.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl fmt::Display) -> Error {
    Error::Invalid {
        key: key.into(),
        message: message.to_string(),
    }
}

/// The whole configuration.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The farm: one Redis keyspace `{corral:<farm>}`.
    #[serde(default = "default_farm")]
    pub farm: String,
    /// The Stasis app name corral registers on every node.
    #[serde(default = "default_app")]
    pub app: String,
    /// The standby Stasis app: a replica that does not stream a node holds
    /// it there, and the dialplan falls back to it when `Stasis(<app>)`
    /// fails (a replica crash). Empty: no standby.
    #[serde(default = "default_standby_app")]
    pub standby_app: String,
    /// Where placements live.
    #[serde(default)]
    pub store: StoreSection,
    /// The HTTP API.
    #[serde(default)]
    pub api: ApiSection,
    /// The call path's knobs.
    #[serde(default)]
    pub controller: ControllerSection,
    /// The Asterisk nodes of the farm.
    #[serde(default)]
    pub nodes: Vec<NodeSection>,
    /// Knobs of every queue not listed in `[queues]`.
    #[serde(default)]
    pub queue_defaults: QueueSection,
    /// Per-queue knobs (`[queues.<name>]`), over `[queue_defaults]`.
    #[serde(default)]
    pub queues: std::collections::BTreeMap<String, QueueSection>,
}

/// `[queue_defaults]` and `[queues.<name>]`: a queue's knobs. Absent keys
/// come from `[queue_defaults]`, then from the built-in defaults.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSection {
    /// `longest-idle` (default), `round-robin` or `ring-all`: how static
    /// members are rung.
    pub strategy: Option<String>,
    /// After a call, how long the agent stays unavailable, in ms (5000).
    pub wrapup_ms: Option<u64>,
    /// Callers waiting at most; more get the treatment (none).
    pub max_callers: Option<u32>,
    /// Longest wait before the treatment, in ms (none).
    pub max_wait_ms: Option<u64>,
    /// How long a static member rings, in ms (15000).
    pub ring_timeout_ms: Option<u64>,
    /// How long a member that did not answer is skipped, in ms (5000).
    pub retry_after_ms: Option<u64>,
    /// The treatment: the dialplan context a caller continues at when the
    /// queue is full or the wait is over (absent: after `Stasis()`).
    pub overflow_context: Option<String>,
    /// The extension in `overflow_context` (`s`).
    pub overflow_extension: Option<String>,
    /// Static members: `{ agent = "alice", endpoint = "PJSIP/alice" }`.
    pub members: Option<Vec<MemberSection>>,
}

/// One static member of a queue.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSection {
    /// The agent id.
    pub agent: String,
    /// What corral dials (an ARI endpoint such as `PJSIP/alice`).
    pub endpoint: String,
}

fn default_farm() -> String {
    "main".into()
}
fn default_app() -> String {
    crate::controller::Config::DEFAULT_APP.into()
}
fn default_standby_app() -> String {
    crate::controller::Config::DEFAULT_STANDBY_APP.into()
}

/// `[store]`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `redis://`, `redis+sentinel://` or `redis+cluster://` URL; absent →
    /// the in-memory store (one replica only).
    pub redis_url: Option<String>,
}

/// `[api]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Address the HTTP API listens on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Bearer token required for everything that changes state or reveals
    /// tokens; absent → no authentication (say so loudly in production).
    pub token: Option<String>,
    /// How long a request's head may take, in ms, counted from when the
    /// connection starts waiting for it; then the connection is closed
    /// (default [`ServerConfig::DEFAULT_HEADER_READ_TIMEOUT`]).
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// How long a connection with no request in progress may wait for the
    /// next one, in ms; less than `header_read_timeout_ms` (default
    /// [`ServerConfig::DEFAULT_IDLE_TIMEOUT`]).
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// How many connections are served at once; more wait in the listen
    /// backlog (default [`ServerConfig::DEFAULT_MAX_CONNECTIONS`]).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Whether the proxy's route-ahead lookup (`GET /v1/route/{user}`)
    /// answers; false: it always has no opinion and every call is
    /// dispatched round-robin and repaired by redirect (default true).
    #[serde(default = "default_route_ahead")]
    pub route_ahead: bool,
}

fn default_listen() -> String {
    "127.0.0.1:8088".into()
}
fn default_header_read_timeout_ms() -> u64 {
    ServerConfig::DEFAULT_HEADER_READ_TIMEOUT.as_millis() as u64
}
fn default_idle_timeout_ms() -> u64 {
    ServerConfig::DEFAULT_IDLE_TIMEOUT.as_millis() as u64
}
fn default_max_connections() -> usize {
    ServerConfig::DEFAULT_MAX_CONNECTIONS
}
fn default_route_ahead() -> bool {
    true
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            token: None,
            header_read_timeout_ms: default_header_read_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            max_connections: default_max_connections(),
            route_ahead: default_route_ahead(),
        }
    }
}

/// `[controller]`: the call path.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerSection {
    /// The redirect target; `{token}` and `{sip_host}` are filled in.
    #[serde(default = "default_endpoint")]
    pub endpoint_template: String,
    /// How many times one call may be redirected before it joins where it
    /// is (counted as a split).
    #[serde(default = "default_hop_limit")]
    pub hop_limit: u32,
    /// How long a token lives, in ms.
    #[serde(default = "default_token_ttl")]
    pub token_ttl_ms: u64,
    /// How long corral waits for a redirected call's token to arrive, in ms.
    #[serde(default = "default_redirect_deadline")]
    pub redirect_deadline_ms: u64,
    /// How long a token arriving while the store does not answer waits for
    /// it, in ms.
    #[serde(default = "default_token_store_wait")]
    pub token_store_wait_ms: u64,
    /// How long an empty room keeps its node and bridge, in ms.
    #[serde(default = "default_linger")]
    pub linger_ms: u64,
    /// `least-loaded`, `power-of-two` or `consistent-hash`.
    #[serde(default = "default_policy")]
    pub policy: String,
    /// Seed of the policy's tie-breaks; absent → random.
    pub seed: Option<u64>,
    /// Interval of `GET /asterisk/ping` and websocket pings, in ms.
    #[serde(default = "default_ping")]
    pub ping_interval_ms: u64,
    /// Failed pings in a row that mark a node down.
    #[serde(default = "default_down_after")]
    pub down_after_failures: u32,
    /// Interval of the reconciler's full comparison, in ms.
    #[serde(default = "default_reconcile")]
    pub reconcile_interval_ms: u64,
    /// Life of a replica's lease on a node's stream, in ms: a replica that
    /// dies is replaced after at most this long.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_ms: u64,
    /// On stop (SIGTERM), how long work in flight may take to finish, in
    /// ms, before corral stops anyway; calls are never hung up either way.
    #[serde(default = "default_drain_deadline")]
    pub drain_deadline_ms: u64,
}

/// The controller's defaults, in the units of the file (ms).
type Defaults = crate::controller::Config;

fn ms_of(d: Duration) -> u64 {
    d.as_millis() as u64
}
fn default_lease_ttl() -> u64 {
    ms_of(Defaults::DEFAULT_LEASE_TTL)
}
fn default_drain_deadline() -> u64 {
    ms_of(Defaults::DEFAULT_DRAIN_DEADLINE)
}
fn default_endpoint() -> String {
    Defaults::DEFAULT_ENDPOINT_TEMPLATE.into()
}
fn default_hop_limit() -> u32 {
    Defaults::DEFAULT_HOP_LIMIT
}
fn default_token_ttl() -> u64 {
    ms_of(Defaults::DEFAULT_TOKEN_TTL)
}
fn default_redirect_deadline() -> u64 {
    ms_of(Defaults::DEFAULT_REDIRECT_DEADLINE)
}
fn default_token_store_wait() -> u64 {
    ms_of(Defaults::DEFAULT_TOKEN_STORE_WAIT)
}
fn default_linger() -> u64 {
    ms_of(Defaults::DEFAULT_LINGER)
}
fn default_policy() -> String {
    Defaults::DEFAULT_STRATEGY.to_string()
}
fn default_ping() -> u64 {
    ms_of(Defaults::DEFAULT_PING_INTERVAL)
}
fn default_down_after() -> u32 {
    Defaults::DEFAULT_DOWN_AFTER_FAILURES
}
fn default_reconcile() -> u64 {
    ms_of(Defaults::DEFAULT_RECONCILE_INTERVAL)
}

impl Default for ControllerSection {
    fn default() -> Self {
        toml::from_str("").unwrap_or_else(|_| unreachable!("every field has a default"))
    }
}

/// `[[nodes]]`: one Asterisk node.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Node id (`ast1`).
    pub id: String,
    /// ARI base URL without `/ari` (`http://10.0.0.11:8088`).
    pub ari_url: String,
    /// ARI user.
    pub username: String,
    /// ARI password (or `CORRAL_NODE_<ID>_PASSWORD`).
    #[serde(default)]
    pub password: String,
    /// Where other nodes' redirects send SIP: `host[:port]`.
    pub sip_host: String,
    /// Relative capacity (calls it can carry); load is members / capacity.
    #[serde(default = "default_capacity")]
    pub capacity: u32,
    /// Most rooms this node may own at once; absent → no cap.
    pub max_rooms: Option<u32>,
}

fn default_capacity() -> u32 {
    500
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("farm", &self.farm)
            .field("app", &self.app)
            .field("store", &self.store)
            .field("api", &self.api)
            .field("controller", &self.controller)
            .field("nodes", &self.nodes)
            .finish()
    }
}

impl fmt::Debug for StoreSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSection")
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .finish()
    }
}

impl fmt::Debug for ApiSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiSection")
            .field("listen", &self.listen)
            .field("token", &secret_state(self.token.as_deref().unwrap_or("")))
            .field("header_read_timeout_ms", &self.header_read_timeout_ms)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("max_connections", &self.max_connections)
            .field("route_ahead", &self.route_ahead)
            .finish()
    }
}

impl fmt::Debug for NodeSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeSection")
            .field("id", &self.id)
            .field("ari_url", &self.ari_url)
            .field("username", &self.username)
            .field("password", &secret_state(&self.password))
            .field("sip_host", &self.sip_host)
            .field("capacity", &self.capacity)
            .field("max_rooms", &self.max_rooms)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").unwrap_or_else(|_| unreachable!("every field has a default"))
    }
}

impl Config {
    /// Reads `path` (if any), applies the process environment and validates.
    ///
    /// # Errors
    /// An [`Error`] naming the file, key or variable at fault.
    pub fn load(path: Option<&Path>) -> Result<Self, Error> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| Error::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                Self::parse(&text, &p.display().to_string())?
            }
            None => Self::default(),
        };
        cfg.apply_env(std::env::vars())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses TOML text (`source_name` names it in errors).
    ///
    /// # Errors
    /// [`Error::Parse`] with the parser's message (key and line).
    pub fn parse(text: &str, source_name: &str) -> Result<Self, Error> {
        toml::from_str(text).map_err(|e| Error::Parse {
            source_name: source_name.to_string(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Applies `CORRAL_*` overrides: `CORRAL_FARM`, `CORRAL_APP`,
    /// `CORRAL_STORE_REDIS_URL`, `CORRAL_API_LISTEN`, `CORRAL_API_TOKEN`,
    /// `CORRAL_API_<KEY>` for the `[api]` limits (`CORRAL_API_IDLE_TIMEOUT_MS`)
    /// and `CORRAL_API_ROUTE_AHEAD` (`true`/`false`),
    /// `CORRAL_CONTROLLER_<KEY>` for each `[controller]` key (upper case),
    /// and `CORRAL_NODE_<ID>_PASSWORD` for a node's password (id upper case,
    /// `-` as `_`).
    ///
    /// # Errors
    /// A variable that is not a number where one is needed, or that names
    /// no key.
    pub fn apply_env(&mut self, vars: impl Iterator<Item = (String, String)>) -> Result<(), Error> {
        for (k, v) in vars {
            let Some(rest) = k.strip_prefix("CORRAL_") else {
                continue;
            };
            let num = |key: &str| -> Result<u64, Error> {
                v.parse()
                    .map_err(|_| invalid(key, format!("{v:?} is not a whole number")))
            };
            match rest {
                "FARM" => self.farm = v.clone(),
                "APP" => self.app = v.clone(),
                "STANDBY_APP" => self.standby_app = v.clone(),
                "STORE_REDIS_URL" => {
                    self.store.redis_url = Some(v.clone()).filter(|s| !s.is_empty())
                }
                "API_LISTEN" => self.api.listen = v.clone(),
                "API_TOKEN" => self.api.token = Some(v.clone()).filter(|s| !s.is_empty()),
                "API_HEADER_READ_TIMEOUT_MS" => self.api.header_read_timeout_ms = num(&k)?,
                "API_IDLE_TIMEOUT_MS" => self.api.idle_timeout_ms = num(&k)?,
                "API_ROUTE_AHEAD" => {
                    self.api.route_ahead = match v.as_str() {
                        "true" | "1" | "yes" => true,
                        "false" | "0" | "no" => false,
                        _ => return Err(invalid(&k, format!("{v:?} is not true or false"))),
                    }
                }
                "API_MAX_CONNECTIONS" => {
                    self.api.max_connections = usize::try_from(num(&k)?)
                        .map_err(|_| invalid(&k, format!("{v:?} is too large")))?
                }
                "CONTROLLER_ENDPOINT_TEMPLATE" => self.controller.endpoint_template = v.clone(),
                "CONTROLLER_HOP_LIMIT" => self.controller.hop_limit = num(&k)? as u32,
                "CONTROLLER_TOKEN_TTL_MS" => self.controller.token_ttl_ms = num(&k)?,
                "CONTROLLER_REDIRECT_DEADLINE_MS" => {
                    self.controller.redirect_deadline_ms = num(&k)?
                }
                "CONTROLLER_TOKEN_STORE_WAIT_MS" => self.controller.token_store_wait_ms = num(&k)?,
                "CONTROLLER_LINGER_MS" => self.controller.linger_ms = num(&k)?,
                "CONTROLLER_POLICY" => self.controller.policy = v.clone(),
                "CONTROLLER_SEED" => self.controller.seed = Some(num(&k)?),
                "CONTROLLER_PING_INTERVAL_MS" => self.controller.ping_interval_ms = num(&k)?,
                "CONTROLLER_DOWN_AFTER_FAILURES" => {
                    self.controller.down_after_failures = num(&k)? as u32
                }
                "CONTROLLER_RECONCILE_INTERVAL_MS" => {
                    self.controller.reconcile_interval_ms = num(&k)?
                }
                "CONTROLLER_LEASE_TTL_MS" => self.controller.lease_ttl_ms = num(&k)?,
                "CONTROLLER_DRAIN_DEADLINE_MS" => self.controller.drain_deadline_ms = num(&k)?,
                other => {
                    if let Some(id) = other
                        .strip_prefix("NODE_")
                        .and_then(|r| r.strip_suffix("_PASSWORD"))
                    {
                        let node = self
                            .nodes
                            .iter_mut()
                            .find(|n| n.id.to_ascii_uppercase().replace('-', "_") == id);
                        match node {
                            Some(n) => n.password = v.clone(),
                            None => return Err(invalid(&k, "no [[nodes]] entry has this id")),
                        }
                    }
                    // Other CORRAL_* variables belong to other tools
                    // (CORRAL_LOG_FORMAT, CORRAL_TEST_*): not ours to refuse.
                }
            }
        }
        Ok(())
    }

    /// Checks every value; the error names the key.
    ///
    /// # Errors
    /// [`Error::Invalid`] for the first bad value.
    pub fn validate(&self) -> Result<(), Error> {
        RoomName::new(self.farm.as_str()).map_err(|e| invalid("farm", e))?;
        RoomName::new(self.app.as_str()).map_err(|e| invalid("app", e))?;
        if !self.standby_app.is_empty() {
            RoomName::new(self.standby_app.as_str()).map_err(|e| invalid("standby_app", e))?;
            if self.standby_app == self.app {
                return Err(invalid("standby_app", "must differ from app"));
            }
        }
        self.api_listen()?;
        self.api_server()?;
        if let Some(url) = &self.store.redis_url {
            let ok = [
                "redis://",
                "rediss://",
                "redis+sentinel://",
                "redis+cluster://",
                "redis+unix://",
                "unix://",
            ]
            .iter()
            .any(|p| url.starts_with(p));
            if !ok {
                return Err(invalid(
                    "store.redis_url",
                    format!(
                        "{:?} must start with redis://, redis+sentinel:// or redis+cluster://",
                        redact_url(url)
                    ),
                ));
            }
        }
        let c = &self.controller;
        if !c.endpoint_template.contains("{token}") {
            return Err(invalid(
                "controller.endpoint_template",
                "must contain {token}",
            ));
        }
        if !c.endpoint_template.contains('/') {
            return Err(invalid(
                "controller.endpoint_template",
                "must be <Tech>/<resource>, e.g. PJSIP/sip:{token}@{sip_host}",
            ));
        }
        c.policy
            .parse::<Strategy>()
            .map_err(|e| invalid("controller.policy", e))?;
        for (key, v) in [
            ("controller.token_ttl_ms", c.token_ttl_ms),
            ("controller.redirect_deadline_ms", c.redirect_deadline_ms),
            ("controller.ping_interval_ms", c.ping_interval_ms),
            ("controller.reconcile_interval_ms", c.reconcile_interval_ms),
            ("controller.lease_ttl_ms", c.lease_ttl_ms),
            ("controller.drain_deadline_ms", c.drain_deadline_ms),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be more than 0"));
            }
        }
        if c.down_after_failures == 0 {
            return Err(invalid(
                "controller.down_after_failures",
                "must be at least 1",
            ));
        }
        self.queue_settings()?;
        let mut seen = std::collections::HashSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let key = |k: &str| format!("nodes[{i}].{k}");
            NodeId::new(n.id.as_str()).map_err(|e| invalid(key("id"), e))?;
            if !seen.insert(n.id.clone()) {
                return Err(invalid(key("id"), format!("{:?} appears twice", n.id)));
            }
            if !(n.ari_url.starts_with("http://") || n.ari_url.starts_with("https://")) {
                return Err(invalid(
                    key("ari_url"),
                    "must start with http:// or https://",
                ));
            }
            if n.username.is_empty() {
                return Err(invalid(key("username"), "must not be empty"));
            }
            if n.sip_host.is_empty() || n.sip_host.contains(['/', '@', ' ', ';']) {
                return Err(invalid(key("sip_host"), "must be host or host:port"));
            }
            if n.capacity == 0 {
                return Err(invalid(key("capacity"), "must be at least 1"));
            }
        }
        Ok(())
    }

    /// Every queue's knobs, checked: the defaults and the listed queues.
    ///
    /// # Errors
    /// A value out of range, named by its key.
    pub fn queue_settings(&self) -> Result<QueueConfig, Error> {
        let defaults = resolve_queue(
            "queue_defaults",
            &self.queue_defaults,
            &QueueSettings::default(),
        )?;
        let mut by_name = std::collections::HashMap::new();
        for (name, q) in &self.queues {
            let key = format!("queues.{name}");
            let room = RoomName::new(name.as_str()).map_err(|e| invalid(&key, e))?;
            by_name.insert(
                room,
                std::sync::Arc::new(resolve_queue(&key, q, &defaults)?),
            );
        }
        Ok(QueueConfig {
            defaults: std::sync::Arc::new(defaults),
            by_name,
        })
    }

    /// The API's listen address.
    ///
    /// # Errors
    /// `api.listen` is not `host:port`.
    pub fn api_listen(&self) -> Result<SocketAddr, Error> {
        self.api
            .listen
            .parse()
            .map_err(|e| invalid("api.listen", format!("{:?}: {e}", self.api.listen)))
    }

    /// The API server's limits from `[api]`.
    ///
    /// # Errors
    /// A limit of 0, or an idle timeout not below the header read timeout
    /// (hyper's head clock also runs while a connection idles, so a longer
    /// idle timeout would never fire).
    pub fn api_server(&self) -> Result<ServerConfig, Error> {
        let a = &self.api;
        for (key, v) in [
            ("api.header_read_timeout_ms", a.header_read_timeout_ms),
            ("api.idle_timeout_ms", a.idle_timeout_ms),
            ("api.max_connections", a.max_connections as u64),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be more than 0"));
            }
        }
        if a.idle_timeout_ms >= a.header_read_timeout_ms {
            return Err(invalid(
                "api.idle_timeout_ms",
                format!(
                    "must be less than api.header_read_timeout_ms ({}): the head's clock also runs \
                     while a connection idles, so a longer idle timeout never fires",
                    a.header_read_timeout_ms
                ),
            ));
        }
        Ok(ServerConfig {
            header_read_timeout: Duration::from_millis(a.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(a.idle_timeout_ms),
            max_connections: a.max_connections,
        })
    }

    /// Milliseconds as a duration.
    pub fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }
}

/// Applies `q` over `base`, checking every value.
fn resolve_queue(
    key: &str,
    q: &QueueSection,
    base: &QueueSettings,
) -> Result<QueueSettings, Error> {
    let k = |f: &str| format!("{key}.{f}");
    let mut out = base.clone();
    if let Some(s) = &q.strategy {
        out.strategy = s.parse().map_err(|e| invalid(k("strategy"), e))?;
    }
    if let Some(v) = q.wrapup_ms {
        out.wrapup = Duration::from_millis(v);
    }
    if let Some(v) = q.max_callers {
        if v == 0 {
            return Err(invalid(
                k("max_callers"),
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        out.max_callers = Some(v);
    }
    if let Some(v) = q.max_wait_ms {
        if v == 0 {
            return Err(invalid(
                k("max_wait_ms"),
                "must be more than 0 (leave it out for no limit)",
            ));
        }
        out.max_wait = Some(Duration::from_millis(v));
    }
    if let Some(v) = q.ring_timeout_ms {
        if v < 1000 {
            return Err(invalid(
                k("ring_timeout_ms"),
                "must be at least 1000 (ARI's originate timeout is in seconds)",
            ));
        }
        out.ring_timeout = Duration::from_millis(v);
    }
    if let Some(v) = q.retry_after_ms {
        out.retry_after = Duration::from_millis(v);
    }
    let dialplan_word = |v: &str| {
        !v.is_empty() && v.len() <= 80 && v.chars().all(|c| c.is_ascii_graphic() && c != ',')
    };
    if let Some(v) = &q.overflow_context {
        if !dialplan_word(v) {
            return Err(invalid(
                k("overflow_context"),
                "must be a dialplan context name",
            ));
        }
        out.overflow_context = Some(v.clone());
    }
    if let Some(v) = &q.overflow_extension {
        if !dialplan_word(v) {
            return Err(invalid(
                k("overflow_extension"),
                "must be a dialplan extension",
            ));
        }
        out.overflow_extension = v.clone();
    }
    if let Some(members) = &q.members {
        out.members = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let mk = |f: &str| format!("{key}.members[{i}].{f}");
            let agent = AgentId::new(m.agent.as_str()).map_err(|e| invalid(mk("agent"), e))?;
            crate::queue::check_endpoint(&m.endpoint).map_err(|e| invalid(mk("endpoint"), e))?;
            out.members.push((agent, m.endpoint.clone()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
farm = "main"
[store]
redis_url = "redis://:hunter2@127.0.0.1:6379"
[api]
listen = "127.0.0.1:8088"
[[nodes]]
id = "ast1"
ari_url = "http://10.0.0.11:8088"
username = "corral"
password = "secret"
sip_host = "10.0.0.11:5060"
"#;

    #[test]
    fn parses_the_documented_example_and_hides_secrets() {
        let cfg = Config::parse(GOOD, "test").unwrap();
        cfg.validate().unwrap();
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("secret") && !dbg.contains("hunter2"), "{dbg}");
        assert_eq!(cfg.controller.hop_limit, 2);
    }

    #[test]
    fn the_deploy_example_parses_with_its_queues() {
        let cfg = Config::parse(include_str!("../deploy/corral.toml"), "deploy/corral.toml")
            .expect("deploy/corral.toml is valid");
        let q = cfg.queue_settings().unwrap();
        let sales = q.settings(&RoomName::new("sales").unwrap());
        assert_eq!(sales.strategy, crate::queue::Distribution::RingAll);
        assert_eq!(sales.overflow_context.as_deref(), Some("queue-overflow"));
        assert_eq!(sales.members.len(), 1);
        let other = q.settings(&RoomName::new("other").unwrap());
        assert_eq!(other.strategy, crate::queue::Distribution::LongestIdle);
        assert!(other.members.is_empty());
    }

    #[test]
    fn queue_errors_name_the_key() {
        for (text, key) in [
            (
                "[queues.sales]\nstrategy = \"fifo\"",
                "queues.sales.strategy",
            ),
            (
                "[queue_defaults]\nmax_callers = 0",
                "queue_defaults.max_callers",
            ),
            (
                "[queues.sales]\nring_timeout_ms = 10",
                "queues.sales.ring_timeout_ms",
            ),
            (
                "[queues.sales]\nmembers = [{agent = \"al-ice\", endpoint = \"PJSIP/a\"}]",
                "queues.sales.members[0].agent",
            ),
            (
                "[queues.sales]\nmembers = [{agent = \"al\", endpoint = \"alice\"}]",
                "queues.sales.members[0].endpoint",
            ),
            ("[queues.\"bad name\"]\nwrapup_ms = 1", "queues.bad name"),
        ] {
            let err = match Config::parse(text, "t.toml").and_then(|c| c.validate()) {
                Ok(_) => panic!("{text} accepted"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse(&GOOD.replace("sip_host", "sip_hots"), "corral.toml").unwrap_err();
        assert!(e.to_string().contains("sip_hots"), "{e}");
        let cfg = Config::parse(&GOOD.replace("\"ast1\"", "\"ast:1\""), "t").unwrap();
        let e = cfg.validate().unwrap_err();
        assert!(e.to_string().starts_with("nodes[0].id"), "{e}");
        let mut cfg = Config::parse(GOOD, "t").unwrap();
        let e = cfg
            .apply_env(
                [(
                    "CORRAL_CONTROLLER_LINGER_MS".to_string(),
                    "soon".to_string(),
                )]
                .into_iter(),
            )
            .unwrap_err();
        assert!(e.to_string().contains("CORRAL_CONTROLLER_LINGER_MS"), "{e}");
    }

    #[test]
    fn file_defaults_are_the_controllers() {
        let cfg = Config::default();
        let c = &cfg.controller;
        let d = crate::controller::Config::default();
        assert_eq!(cfg.app, d.app);
        assert_eq!(cfg.standby_app, d.standby_app);
        assert_eq!(c.endpoint_template, d.endpoint_template);
        assert_eq!(c.hop_limit, d.hop_limit);
        assert_eq!(Config::ms(c.token_ttl_ms), d.token_ttl);
        assert_eq!(Config::ms(c.redirect_deadline_ms), d.redirect_deadline);
        assert_eq!(Config::ms(c.token_store_wait_ms), d.token_store_wait);
        assert_eq!(Config::ms(c.linger_ms), d.linger);
        assert_eq!(c.policy.parse::<Strategy>().unwrap(), d.strategy);
        assert_eq!(Config::ms(c.ping_interval_ms), d.ping_interval);
        assert_eq!(c.down_after_failures, d.down_after_failures);
        assert_eq!(Config::ms(c.reconcile_interval_ms), d.reconcile_interval);
        assert_eq!(Config::ms(c.lease_ttl_ms), d.lease_ttl);
        assert_eq!(Config::ms(c.drain_deadline_ms), d.drain_deadline);
    }

    #[test]
    fn drain_deadline_is_a_key() {
        let mut cfg = Config::parse("[controller]\ndrain_deadline_ms = 2500", "t").unwrap();
        assert_eq!(cfg.controller.drain_deadline_ms, 2500);
        cfg.apply_env(
            [(
                "CORRAL_CONTROLLER_DRAIN_DEADLINE_MS".to_string(),
                "700".to_string(),
            )]
            .into_iter(),
        )
        .unwrap();
        assert_eq!(cfg.controller.drain_deadline_ms, 700);
        let cfg = Config::parse("[controller]\ndrain_deadline_ms = 0", "t").unwrap();
        let e = cfg.validate().unwrap_err();
        assert!(
            e.to_string().contains("controller.drain_deadline_ms"),
            "{e}"
        );
    }

    #[test]
    fn env_overrides_file() {
        let mut cfg = Config::parse(GOOD, "t").unwrap();
        cfg.apply_env(
            [
                ("CORRAL_API_LISTEN".to_string(), "0.0.0.0:9000".to_string()),
                (
                    "CORRAL_NODE_AST1_PASSWORD".to_string(),
                    "fromenv".to_string(),
                ),
            ]
            .into_iter(),
        )
        .unwrap();
        assert_eq!(cfg.api.listen, "0.0.0.0:9000");
        assert_eq!(cfg.nodes[0].password, "fromenv");
    }

    /// The API server's limits: defaults from `ServerConfig`, set in
    /// `[api]` or by `CORRAL_API_*`, refused when they cannot work.
    #[test]
    fn route_ahead_is_on_by_default_and_switched_by_file_or_env() {
        let cfg = Config::parse(GOOD, "t").unwrap();
        assert!(cfg.api.route_ahead);
        let off = GOOD.replace(
            "listen = \"127.0.0.1:8088\"",
            "listen = \"127.0.0.1:8088\"\nroute_ahead = false",
        );
        let mut cfg = Config::parse(&off, "t").unwrap();
        assert!(!cfg.api.route_ahead);
        cfg.apply_env([("CORRAL_API_ROUTE_AHEAD".to_string(), "true".to_string())].into_iter())
            .unwrap();
        assert!(cfg.api.route_ahead);
        let err = cfg
            .apply_env([("CORRAL_API_ROUTE_AHEAD".to_string(), "maybe".to_string())].into_iter())
            .unwrap_err();
        assert!(err.to_string().contains("CORRAL_API_ROUTE_AHEAD"), "{err}");
    }

    #[test]
    fn api_limits_default_parse_and_are_checked() {
        let cfg = Config::parse(GOOD, "t").unwrap();
        assert_eq!(cfg.api_server().unwrap(), ServerConfig::default());
        let text = GOOD.replace(
            "listen = \"127.0.0.1:8088\"",
            "listen = \"127.0.0.1:8088\"\nheader_read_timeout_ms = 3000\nidle_timeout_ms = 1000\nmax_connections = 8",
        );
        let mut cfg = Config::parse(&text, "t").unwrap();
        let api = cfg.api_server().unwrap();
        assert_eq!(
            (
                api.header_read_timeout,
                api.idle_timeout,
                api.max_connections
            ),
            (Duration::from_secs(3), Duration::from_secs(1), 8)
        );
        cfg.apply_env([("CORRAL_API_MAX_CONNECTIONS".to_string(), "9".to_string())].into_iter())
            .unwrap();
        assert_eq!(cfg.api_server().unwrap().max_connections, 9);
        for (key, value, named) in [
            ("max_connections", 0, "api.max_connections"),
            ("idle_timeout_ms", 0, "api.idle_timeout_ms"),
            ("idle_timeout_ms", 3000, "api.idle_timeout_ms"),
            ("header_read_timeout_ms", 0, "api.header_read_timeout_ms"),
        ] {
            let mut bad = Config::parse(&text, "t").unwrap();
            match key {
                "max_connections" => bad.api.max_connections = value as usize,
                "idle_timeout_ms" => bad.api.idle_timeout_ms = value,
                _ => bad.api.header_read_timeout_ms = value,
            }
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.starts_with(named), "{key} = {value}: {e}");
        }
    }
}
