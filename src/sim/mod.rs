//! A simulated Asterisk 22 node: ARI (REST under `/ari`, the event websocket
//! at `/ari/events`) over real sockets, plus a simulated SIP hop between
//! nodes and a control API under `/sim` for tests, benchmarks and chaos runs.
//!
//! Its role: stand in for a real Asterisk at the network boundary, so that
//! corral's ARI client and controller run unchanged against it. What it must
//! get right is written down in ARCHITECTURE.md, *ARI facts* (the check
//! order of a redirect, 302 versus REFER, the event sequences and who gets
//! them, one websocket per app name).
//!
//! # Layout
//!
//! - this file: [`SimConfig`], the [`SimNode`] handle (start, kill, restart)
//!   and [`routes`], the table of ARI operations the node serves;
//! - `rest/`: the axum router: auth, faults, every handler, one file per
//!   resource (`asterisk`, `channels`, `bridges`, `applications`, and `sim`
//!   for the `/sim` control API);
//! - `ws`: the event websocket (ownership of app names, takeover);
//! - `sip`: the simulated SIP side: 302 and REFER, the upstream proxy model,
//!   and the far ends of originated channels playing their scripts;
//! - `endpoint`: those scripts ([`EndpointScript`]) and their lookup by
//!   endpoint resource;
//! - `pbx`: a channel running the dialplan (answering, entering Stasis,
//!   hanging up);
//! - `state`: one node incarnation's channels, bridges, apps and sockets,
//!   the event fan-out (who receives which event), and the changes that
//!   alter what a channel hears, written to the call log;
//! - `media`: the rules of what each channel hears (MOH, ringing, its
//!   bridge, silence);
//! - `log`: the bounded call log behind `GET /sim/log`;
//! - `model`: the records of channels and bridges with their ARI JSON, what
//!   a channel hears, Asterisk's timestamps and channel states;
//! - `http`: what every answer of the router shares: the ARI error,
//!   parameters merged as Asterisk merges them, the path id and JSON body
//!   extractors;
//! - `dialplan`: `extensions.conf` run with Asterisk's rules (by default
//!   the shipped `deploy/asterisk/extensions.conf`);
//! - `net`: a listener whose connections all die when the node is killed.
//!
//! A module uses only modules listed below it, and this file's shared
//! items (`Common`, `bump`, `lock`, the upstream and fault settings): no
//! two of them depend on each other.
//!
//! # Incarnations
//!
//! A [`SimNode`] handle outlives its incarnations. [`SimNode::kill`] closes
//! every connection and the listener and forgets all channels and bridges;
//! [`SimNode::restart`] binds the same port again with a fresh
//! `startup_time`. Counters ([`SimStats`]), the call log, endpoint scripts
//! and fault settings live on the handle and survive restarts.

mod dialplan;
mod endpoint;
mod http;
mod log;
mod media;
mod model;
mod net;
mod pbx;
mod rest;
mod sip;
pub(crate) use sip::refused_for_failover;
mod state;
mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

pub use dialplan::{Admission, Dialplan, DialplanError, StasisEntry};
pub use endpoint::{EndpointScript, ScriptParseError};
pub use rest::{AriRoute, routes};

/// What the upstream proxy (Kamailio) does with a `302 Moved Temporarily`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum On302 {
    /// `failure_route` with `get_redirects()` + `t_relay()`: after
    /// [`Upstream::follow_delay`] the call arrives on the node named by the
    /// Contact, with the same call id.
    #[default]
    Follow,
    /// Kamailio's default: the 302 goes back to the caller, who gives up.
    /// The call is lost.
    Relay,
    /// The 302 is lost on the way. The call is lost.
    Drop,
}

/// What the far end does with an in-dialog REFER (redirect of an answered
/// channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnRefer {
    /// The transferee INVITEs the Refer-To target (like a followed 302, with
    /// the same call id), then sends BYE on the old dialog.
    #[default]
    Accept,
    /// The REFER is refused (403/405/603): nothing visible happens on ARI.
    Reject,
}

/// The model of the network upstream of the node (the SIP proxy and the
/// callers' user agents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    /// What happens to a 302.
    pub on_302: On302,
    /// How long a followed 302 (or an accepted REFER) takes to reach the
    /// destination node.
    #[serde(with = "millis", rename = "follow_delay_ms")]
    pub follow_delay: Duration,
    /// What happens to a REFER.
    pub on_refer: OnRefer,
    /// The proxy's other nodes (`host:port`), in its order: when the node
    /// a 302 sent the call to refuses it (a SIP 408 or 5xx from its
    /// dialplan, e.g. the shipped fallback's 503 when `Stasis()` failed, or
    /// no answer at all), the call goes on to the next of these, as the
    /// shipped `kamailio.cfg` does with `ds_next_dst()`. Empty: lost.
    #[serde(default)]
    pub failover: Vec<String>,
}

impl Upstream {
    /// The default delay of a followed 302.
    pub const DEFAULT_FOLLOW_DELAY: Duration = Duration::from_millis(5);

    /// Follows 302s after the default delay; accepts REFERs.
    pub fn follow() -> Self {
        Upstream {
            on_302: On302::Follow,
            follow_delay: Self::DEFAULT_FOLLOW_DELAY,
            on_refer: OnRefer::Accept,
            failover: Vec::new(),
        }
    }

    /// Relays 302s to the caller (the call is lost); accepts REFERs.
    pub fn relay() -> Self {
        Upstream {
            on_302: On302::Relay,
            ..Self::follow()
        }
    }

    /// Drops 302s (the call is lost); accepts REFERs.
    pub fn drop_302() -> Self {
        Upstream {
            on_302: On302::Drop,
            ..Self::follow()
        }
    }
}

impl Default for Upstream {
    fn default() -> Self {
        Self::follow()
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Which Asterisk release the node imitates where releases differ (hangup
/// causes after a 302, `tech_cause`, the version string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum VersionProfile {
    /// 22.10.1: a 302 hangs up with cause 23 and `tech_cause` 302.
    #[default]
    #[serde(rename = "22.10")]
    Ast22_10,
    /// 22.7 to 22.8: cause 16 and `tech_cause` 302.
    #[serde(rename = "22.7")]
    Ast22_7,
    /// 20.0 and older 22s: cause 16, no `tech_cause`.
    #[serde(rename = "20.0")]
    Ast20_0,
}

impl VersionProfile {
    /// The version string reported by `GET /asterisk/info`.
    pub fn version(self) -> &'static str {
        match self {
            VersionProfile::Ast22_10 => "22.10.1",
            VersionProfile::Ast22_7 => "22.7.0",
            VersionProfile::Ast20_0 => "20.0.0",
        }
    }

    /// `(cause, tech_cause)` of the hangup after a 302.
    pub fn redirect_cause(self) -> (i64, Option<i64>) {
        match self {
            VersionProfile::Ast22_10 => (23, Some(302)),
            VersionProfile::Ast22_7 => (16, Some(302)),
            VersionProfile::Ast20_0 => (16, None),
        }
    }

    /// Whether events carry `tech_cause` (22.7 and later).
    pub fn has_tech_cause(self) -> bool {
        self != VersionProfile::Ast20_0
    }

    /// `(cause, tech_cause)` of an unanswered inbound channel whose caller
    /// gives up (CANCEL, answered 487): `ast_sip_hangup_sip2cause(487)` is
    /// 127 (interworking) in every profile, as Asterisk 22.10.1 shows;
    /// `tech_cause` exists from 22.7 on.
    pub fn cancel_cause(self) -> (i64, Option<i64>) {
        match self {
            VersionProfile::Ast22_10 | VersionProfile::Ast22_7 => (127, Some(487)),
            VersionProfile::Ast20_0 => (127, None),
        }
    }

    /// Parses `22.10`, `22.7` or `20.0`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "22.10" | "22.10.1" => Some(VersionProfile::Ast22_10),
            "22.7" | "22.7.0" => Some(VersionProfile::Ast22_7),
            "20.0" | "20.0.0" => Some(VersionProfile::Ast20_0),
            _ => None,
        }
    }
}

/// Fault knobs for chaos runs. Settable in [`SimConfig::faults`], by flags,
/// and at runtime with `PUT /sim/faults` (fields left out keep their value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Faults {
    /// Every event waits this long before it is written to its websocket
    /// (order is kept). The writer waits for each event in turn, so this
    /// also caps a socket at `1000 / event_delay_ms` events a second: a
    /// slow link.
    pub event_delay_ms: u64,
    /// Every event reaches its websocket this long after it happened,
    /// without slowing the events behind it (order is kept): a link with
    /// latency but no less throughput.
    pub event_latency_ms: u64,
    /// Share (0.0 to 1.0) of events written twice.
    pub duplicate_events: f64,
    /// Share (0.0 to 1.0) of ARI REST requests (not the websocket) that fail
    /// with `500 {"message":"Internal Server Error"}` without taking effect.
    pub rest_error_rate: f64,
    /// One ARI operation made slow or failing (e.g. every `POST
    /// /channels` held for a while, or the next `answer`s failing).
    pub rest_rule: Option<RestRule>,
}

/// A fault on one ARI operation: requests with this method and path (`*`
/// stands for one segment: `/ari/channels/*/answer`) wait `delay_ms` before
/// they are served, then, while `fail` is above zero, fail with a 500
/// without taking effect (each one counts `fail` down).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RestRule {
    /// `GET`, `POST`, `DELETE`, ...
    pub method: String,
    /// The path, `*` for one segment: `/ari/channels/*` is an originate
    /// with an id, `/ari/channels/*/answer` an answer.
    pub path: String,
    /// How long each matching request waits first.
    pub delay_ms: u64,
    /// How many matching requests fail next.
    pub fail: u32,
}

/// How to start a simulated node.
#[derive(Clone)]
pub struct SimConfig {
    /// The node's id (`ast1`); also the default `asterisk_id`'s seed and the
    /// system name in `GET /asterisk/info`.
    pub id: String,
    /// Where to listen (port 0 picks a free port). Also the node's SIP host.
    pub listen: SocketAddr,
    /// ARI user.
    pub username: String,
    /// ARI password.
    pub password: String,
    /// The upstream proxy model (changeable at runtime: `PUT /sim/upstream`).
    pub upstream: Upstream,
    /// The EID (`xx:xx:xx:xx:xx:xx`); default derived from `id`.
    pub asterisk_id: Option<String>,
    /// The dialplan (`extensions.conf`); default [`Dialplan::shipped`].
    pub dialplan: Dialplan,
    /// Fault knobs.
    pub faults: Faults,
    /// Which release to imitate.
    pub version: VersionProfile,
    /// Seed of the fault randomness (default: fresh, logged at start).
    pub seed: Option<u64>,
    /// What originated channels' far ends do, by endpoint resource
    /// (`PJSIP/alice` → `alice`; `alice@host` and `sip:alice@host` fall
    /// back to `alice`); others get `default_endpoint`.
    pub endpoints: HashMap<String, EndpointScript>,
    /// The script of endpoints not in `endpoints`.
    pub default_endpoint: EndpointScript,
    /// Events that may wait for one websocket's writer; a socket that falls
    /// further behind is closed (Asterisk's write timeout, in frames).
    pub event_queue: usize,
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("id", &self.id)
            .field("listen", &self.listen)
            .field("username", &self.username)
            .field("password", &"set")
            .field("upstream", &self.upstream)
            .field("asterisk_id", &self.asterisk_id)
            .field("faults", &self.faults)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl SimConfig {
    /// The default of [`SimConfig::event_queue`].
    pub const DEFAULT_EVENT_QUEUE: usize = 65_536;

    /// The default ARI user and password.
    pub const DEFAULT_CREDENTIALS: &'static str = "corral";

    /// A node on `127.0.0.1:0` with user and password `corral`, the
    /// shipped dialplan (Stasis app `corral`) and an upstream that follows
    /// 302s after 5 ms.
    pub fn new(id: impl Into<String>) -> Self {
        SimConfig {
            id: id.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            username: Self::DEFAULT_CREDENTIALS.to_string(),
            password: Self::DEFAULT_CREDENTIALS.to_string(),
            upstream: Upstream::default(),
            asterisk_id: None,
            dialplan: Dialplan::shipped(),
            faults: Faults::default(),
            version: VersionProfile::default(),
            seed: None,
            endpoints: HashMap::new(),
            default_endpoint: EndpointScript::default(),
            event_queue: Self::DEFAULT_EVENT_QUEUE,
        }
    }

    /// The EID this config gives the node.
    pub fn effective_asterisk_id(&self) -> String {
        self.asterisk_id
            .clone()
            .unwrap_or_else(|| derive_asterisk_id(&self.id))
    }
}

/// A MAC-like EID derived from a node id (FNV-1a, then mixed), locally
/// administered so it cannot clash with a real NIC's.
pub fn derive_asterisk_id(id: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finaliser, so that ids differing in one character give
    // EIDs that differ everywhere.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    let b = h.to_be_bytes();
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        (b[2] | 0x02) & 0xfe,
        b[3],
        b[4],
        b[5],
        b[6],
        b[7]
    )
}

/// Counters of one node, kept across restarts (`GET /sim/stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Inbound calls that got a channel (`POST /sim/calls` → 201).
    pub calls_created: u64,
    /// Inbound calls refused: no extension matched (SIP 404; 484 when only
    /// a longer one could), or the call pickup extension `*8` (403).
    pub calls_rejected: u64,
    /// `StasisStart`s (inbound, originated, moved, continued).
    pub stasis_started: u64,
    /// `Stasis()` failed because no websocket owned the app
    /// (`STASISSTATUS=FAILED`; the dialplan went on).
    pub stasis_failed: u64,
    /// Channels hung up by `DELETE /ari/channels/{id}`.
    pub hungup_by_ari: u64,
    /// Channels hung up by the caller (`DELETE /sim/calls/{call_id}`).
    pub hungup_by_caller: u64,
    /// 302s sent (redirects of ringing channels).
    pub redirects_302: u64,
    /// 302s followed that reached the destination (it answered 201).
    pub redirects_followed: u64,
    /// 302s whose call was lost (relayed, dropped, or the follow failed).
    pub redirects_lost: u64,
    /// Redirects accepted with 204 whose target was not a SIP URI (nothing happened).
    pub redirects_invalid: u64,
    /// REFERs sent (redirects of answered channels).
    pub refers: u64,
    /// REFERs accepted whose INVITE reached the target, followed by a BYE.
    pub refers_accepted: u64,
    /// REFERs rejected or failed (nothing happened).
    pub refers_failed: u64,
    /// Channels originated through `POST /channels`.
    pub originated: u64,
    /// Originated channels whose far end answered.
    pub originated_answered: u64,
    /// Originated channels whose far end was busy (cause 17).
    pub originated_busy: u64,
    /// Originated channels not answered before their timeout (cause 19).
    pub originated_no_answer: u64,
    /// Originated channels whose far end failed (cause 20).
    pub originated_unavailable: u64,
    /// Times a channel started hearing music on hold (each `moh_start` in
    /// the call log: channel MOH, holding bridges, bridge MOH).
    pub moh_started: u64,
    /// Event frames written to websockets (duplicates included).
    pub events_sent: u64,
    /// Events thrown away because their app had no websocket.
    pub events_dropped: u64,
    /// Websockets cut off because their reader was too slow.
    pub websockets_cut: u64,
    /// REST requests failed on purpose (`rest_error_rate`).
    pub rest_faults: u64,
    /// Incarnations started (1 after start, +1 per restart).
    pub incarnations: u64,
}

macro_rules! counters {
    ($($f:ident),* $(,)?) => {
        /// The live counters behind [`SimStats`].
        #[derive(Debug, Default)]
        pub(crate) struct Counters { $(pub(crate) $f: AtomicU64,)* }
        impl Counters {
            fn snapshot(&self) -> SimStats {
                SimStats { $($f: self.$f.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters!(
    calls_created,
    calls_rejected,
    stasis_started,
    stasis_failed,
    hungup_by_ari,
    hungup_by_caller,
    redirects_302,
    redirects_followed,
    redirects_lost,
    redirects_invalid,
    refers,
    refers_accepted,
    refers_failed,
    originated,
    originated_answered,
    originated_busy,
    originated_no_answer,
    originated_unavailable,
    moh_started,
    events_sent,
    events_dropped,
    websockets_cut,
    rest_faults,
    incarnations,
);

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What every incarnation of a node shares: configuration, counters, faults.
pub(crate) struct Common {
    pub(crate) id: String,
    pub(crate) addr: SocketAddr,
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) asterisk_id: String,
    pub(crate) dialplan: Dialplan,
    pub(crate) version: VersionProfile,
    pub(crate) upstream: Mutex<Upstream>,
    pub(crate) faults: Mutex<Faults>,
    pub(crate) rng: Mutex<StdRng>,
    pub(crate) endpoints: Mutex<endpoint::Endpoints>,
    pub(crate) event_queue: usize,
    pub(crate) stats: Counters,
    /// The call log (`GET /sim/log`); locked after the state lock, never
    /// before it.
    pub(crate) log: Mutex<log::CallLog>,
    pub(crate) http: reqwest::Client,
    /// True while the node is hung (the in-process SIGSTOP).
    pub(crate) hung: tokio::sync::watch::Sender<bool>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Common {
    pub(crate) fn upstream(&self) -> Upstream {
        lock(&self.upstream).clone()
    }

    pub(crate) fn faults(&self) -> Faults {
        lock(&self.faults).clone()
    }

    /// True with probability `p` (seeded).
    pub(crate) fn chance(&self, p: f64) -> bool {
        use rand::RngExt;
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        lock(&self.rng).random_bool(p)
    }

    /// Returns at once unless the node is hung; then waits until it is
    /// resumed.
    pub(crate) async fn wait_unhung(&self) {
        if !*self.hung.borrow() {
            return;
        }
        let mut rx = self.hung.subscribe();
        let _ = rx.wait_for(|hung| !*hung).await;
    }

    /// The script of an originated `TECH/resource` (see
    /// `Endpoints::lookup`).
    pub(crate) fn endpoint_script(&self, resource: &str) -> EndpointScript {
        lock(&self.endpoints).lookup(resource)
    }
}

/// One running incarnation.
struct Incarnation {
    shared: Arc<state::Shared>,
    server: JoinHandle<()>,
}

struct NodeInner {
    common: Arc<Common>,
    running: Mutex<Option<Incarnation>>,
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        if let Some(inc) = lock(&self.running).take() {
            inc.shared.cancel.cancel();
            inc.server.abort();
        }
    }
}

/// A handle on one simulated node; cheap to clone. Dropping the last handle
/// stops the node's tasks and closes its connections.
#[derive(Clone)]
pub struct SimNode {
    inner: Arc<NodeInner>,
}

impl std::fmt::Debug for SimNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNode")
            .field("id", &self.inner.common.id)
            .field("addr", &self.inner.common.addr)
            .finish()
    }
}

impl SimNode {
    /// Binds `cfg.listen` and starts serving.
    ///
    /// # Errors
    /// The bind error, when the address is taken or not local.
    pub async fn start(cfg: SimConfig) -> std::io::Result<SimNode> {
        let listener = net::bind(cfg.listen)?;
        let addr = listener.local_addr()?;
        let seed = cfg.seed.unwrap_or_else(rand::random);
        tracing::debug!(node = %cfg.id, %addr, seed, "simulated node starting");
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(8)
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(std::io::Error::other)?;
        let common = Arc::new(Common {
            asterisk_id: cfg.effective_asterisk_id(),
            id: cfg.id,
            addr,
            username: cfg.username,
            password: cfg.password,
            dialplan: cfg.dialplan,
            version: cfg.version,
            upstream: Mutex::new(cfg.upstream),
            faults: Mutex::new(cfg.faults),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            endpoints: Mutex::new(endpoint::Endpoints {
                by_resource: cfg.endpoints,
                default: cfg.default_endpoint,
            }),
            event_queue: cfg.event_queue.max(1),
            stats: Counters::default(),
            log: Mutex::new(log::CallLog::default()),
            http,
            hung: tokio::sync::watch::Sender::new(false),
        });
        let inner = Arc::new(NodeInner {
            common: common.clone(),
            running: Mutex::new(None),
        });
        let inc = Self::serve(common, listener);
        *lock(&inner.running) = Some(inc);
        Ok(SimNode { inner })
    }

    fn serve(common: Arc<Common>, listener: tokio::net::TcpListener) -> Incarnation {
        bump(&common.stats.incarnations);
        let shared = Arc::new(state::Shared::new(common));
        let router = rest::router(shared.clone());
        let cancel = shared.cancel.clone();
        let listener = net::KillableListener::new(listener, cancel.clone());
        let server = tokio::spawn(async move {
            tokio::select! {
                res = axum::serve(listener, router) => {
                    if let Err(err) = res {
                        tracing::warn!(cause = %err, "simulated node stopped serving");
                    }
                }
                _ = cancel.cancelled() => {}
            }
        });
        Incarnation { shared, server }
    }

    /// The bound address; also the node's SIP host (`sip:USER@ADDR`).
    pub fn addr(&self) -> SocketAddr {
        self.inner.common.addr
    }

    /// `http://HOST:PORT`; ARI is under `base_url() + "/ari"`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.common.addr)
    }

    /// The node's id.
    pub fn id(&self) -> &str {
        &self.inner.common.id
    }

    /// The node's EID.
    pub fn asterisk_id(&self) -> &str {
        &self.inner.common.asterisk_id
    }

    /// The current incarnation's `startup_time` (as in `GET /asterisk/info`),
    /// or `None` while killed.
    pub fn startup_time(&self) -> Option<String> {
        lock(&self.inner.running)
            .as_ref()
            .map(|inc| inc.shared.startup_time.clone())
    }

    /// Crashes the node: closes every connection (websockets included) and
    /// the listener, and loses all channels and bridges.
    pub async fn kill(&self) {
        let inc = lock(&self.inner.running).take();
        if let Some(inc) = inc {
            tracing::debug!(node = %self.inner.common.id, "simulated node killed");
            inc.shared.cancel.cancel();
            inc.shared.close_all_sockets();
            inc.server.abort();
            let _ = inc.server.await;
        }
    }

    /// Starts a new incarnation on the same port (killing the current one
    /// first): empty state, a new `startup_time`.
    ///
    /// # Errors
    /// The bind error if the port stays taken for about two seconds.
    pub async fn restart(&self) -> std::io::Result<()> {
        self.kill().await;
        let addr = self.inner.common.addr;
        let mut attempt = 0u32;
        let listener = loop {
            match net::bind(addr) {
                Ok(l) => break l,
                Err(err) if attempt < 100 => {
                    attempt += 1;
                    tracing::debug!(cause = %err, attempt, "port not free yet; retrying bind");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => return Err(err),
            }
        };
        // A new process is not stopped, whatever the old one was.
        self.resume();
        let inc = Self::serve(self.inner.common.clone(), listener);
        tracing::debug!(node = %self.inner.common.id, %addr, "simulated node restarted");
        *lock(&self.inner.running) = Some(inc);
        Ok(())
    }

    /// True between start/restart and kill.
    pub fn is_running(&self) -> bool {
        lock(&self.inner.running).is_some()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SimStats {
        self.inner.common.stats.snapshot()
    }

    /// The fault settings now.
    pub fn faults(&self) -> Faults {
        self.inner.common.faults()
    }

    /// Replaces the fault settings.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.inner.common.faults) = faults;
    }

    /// The upstream model now.
    pub fn upstream(&self) -> Upstream {
        self.inner.common.upstream()
    }

    /// Replaces the upstream model.
    pub fn set_upstream(&self, upstream: Upstream) {
        *lock(&self.inner.common.upstream) = upstream;
    }

    /// Sets what the far end of `PJSIP/<resource>` does when originated
    /// (also used for `<resource>@host` and `sip:<resource>@host` when those
    /// have no script of their own).
    pub fn set_endpoint(&self, resource: impl Into<String>, script: EndpointScript) {
        lock(&self.inner.common.endpoints)
            .by_resource
            .insert(resource.into(), script);
    }

    /// Sets the script of endpoints that have none of their own.
    pub fn set_default_endpoint(&self, script: EndpointScript) {
        lock(&self.inner.common.endpoints).default = script;
    }

    /// Hangs the node, like SIGSTOP on a real process: connections stay
    /// open, but no request is answered, no event is written and no PING is
    /// answered until [`SimNode::resume`].
    pub fn hang(&self) {
        self.inner.common.hung.send_replace(true);
    }

    /// Ends [`SimNode::hang`]: requests that waited are served.
    pub fn resume(&self) {
        self.inner.common.hung.send_replace(false);
    }

    /// True while hung.
    pub fn is_hung(&self) -> bool {
        *self.inner.common.hung.borrow()
    }

    /// Closes every event websocket now (a network blip); the apps become
    /// inactive until clients reconnect.
    pub fn close_websockets(&self) {
        if let Some(inc) = lock(&self.inner.running).as_ref() {
            inc.shared.close_all_sockets();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_asterisk_ids_look_like_local_macs() {
        let a = derive_asterisk_id("ast1");
        assert_eq!(a, derive_asterisk_id("ast1"));
        assert_ne!(a, derive_asterisk_id("ast2"));
        let bytes: Vec<u8> = a
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).expect("hex"))
            .collect();
        assert_eq!(bytes.len(), 6);
        assert_eq!(bytes[0] & 0x03, 0x02, "locally administered, unicast");
        assert_eq!(a, a.to_lowercase());
    }

    #[test]
    fn version_profiles_set_the_redirect_cause() {
        assert_eq!(VersionProfile::Ast22_10.redirect_cause(), (23, Some(302)));
        assert_eq!(VersionProfile::Ast22_7.redirect_cause(), (16, Some(302)));
        assert_eq!(VersionProfile::Ast20_0.redirect_cause(), (16, None));
        assert_eq!(VersionProfile::parse("22.7"), Some(VersionProfile::Ast22_7));
        assert_eq!(VersionProfile::parse("21"), None);
    }
}
