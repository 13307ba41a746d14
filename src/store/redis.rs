//! `RedisStore`: the store on Redis (standalone, Sentinel or Cluster), for
//! several controller replicas.
//!
//! Each atomic operation is one Lua script in `lua/`, named like its
//! [`Store`] method, compiled in with `include_str!`, loaded at start (a bad
//! script fails the start) and called by SHA; after a Redis restart the
//! `NOSCRIPT` answer makes the call load the script again. Every key comes
//! from [`super::keys`] with the farm's hash tag, so a farm lives on one
//! Cluster slot. Plain reads of one key (`get_room`, `peek_token`, `ping`)
//! are single commands, atomic by themselves.
//!
//! # Connections
//!
//! | URL | connection |
//! | --- | --- |
//! | `redis://[user:pass@]host:port[/db]`, `rediss://…` | one multiplexed [`ConnectionManager`] |
//! | `redis+sentinel://host:port[,host:port]/<master-name>` | the master that the Sentinels name, through a [`ConnectionManager`]; asked again after a connection error or `READONLY` (failover) |
//! | `redis+cluster://host:port[,host:port]` | a cluster connection following the slot map |
//!
//! # Failure
//!
//! Every call is bounded by `connect_timeout + response_timeout`: an
//! unreachable Redis fails fast with [`Error::Unavailable`], whose
//! [`Error::retry`] says to try again. The connection reconnects in the
//! background, so calls succeed again once Redis is back, without a restart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{Cmd, RedisError, Script, ScriptInvocation, Value};
use tracing::{debug, info, warn};

use super::keys::Keys;
use super::{
    CallArrival, CallPlaced, Config, Consumed, Error, HealthChanged, Member, MemberAdded,
    MemberRemoved, NodeRecord, NodeRegistration, Placement, QueueDoc, QueueSave, RELEASE_BATCH,
    Registered, Release, Resolution, RoomDetail, RoomFilter, RoomPage, Store, TOKEN_TOMBSTONE,
    TokenGrant, TokenJoin, TokenRecord,
};
use crate::domain::{
    AgentId, ChannelId, Epoch, Incarnation, NodeId, Role, RoomKey, RoomKind, RoomName, TokenId,
};
use crate::names;

/// The scripts, one per operation, compiled in.
struct Scripts {
    resolve_placement: Script,
    add_member: Script,
    remove_member: Script,
    release_room: Script,
    mint_token: Script,
    consume_token: Script,
    register_node: Script,
    set_node_health: Script,
    release_node_rooms: Script,
    set_node_drain: Script,
    set_node_suspect: Script,
    report_load: Script,
    list_nodes: Script,
    list_rooms: Script,
    acquire_lease: Script,
    release_lease: Script,
    save_queue: Script,
    load_queue: Script,
    place_call: Script,
    join_with_token: Script,
    node_view: Script,
}

macro_rules! lua {
    ($name:literal) => {
        Script::new(include_str!(concat!("../../lua/", $name, ".lua")))
    };
}

impl Scripts {
    fn new() -> Self {
        Self {
            resolve_placement: lua!("resolve_placement"),
            add_member: lua!("add_member"),
            remove_member: lua!("remove_member"),
            release_room: lua!("release_room"),
            mint_token: lua!("mint_token"),
            consume_token: lua!("consume_token"),
            register_node: lua!("register_node"),
            set_node_health: lua!("set_node_health"),
            release_node_rooms: lua!("release_node_rooms"),
            set_node_drain: lua!("set_node_drain"),
            set_node_suspect: lua!("set_node_suspect"),
            report_load: lua!("report_load"),
            list_nodes: lua!("list_nodes"),
            list_rooms: lua!("list_rooms"),
            acquire_lease: lua!("acquire_lease"),
            release_lease: lua!("release_lease"),
            save_queue: lua!("save_queue"),
            load_queue: lua!("load_queue"),
            place_call: lua!("place_call"),
            join_with_token: lua!("join_with_token"),
            node_view: lua!("node_view"),
        }
    }

    fn all(&self) -> [(&'static str, &Script); 21] {
        [
            ("resolve_placement", &self.resolve_placement),
            ("add_member", &self.add_member),
            ("remove_member", &self.remove_member),
            ("release_room", &self.release_room),
            ("mint_token", &self.mint_token),
            ("consume_token", &self.consume_token),
            ("register_node", &self.register_node),
            ("set_node_health", &self.set_node_health),
            ("release_node_rooms", &self.release_node_rooms),
            ("set_node_drain", &self.set_node_drain),
            ("set_node_suspect", &self.set_node_suspect),
            ("report_load", &self.report_load),
            ("list_nodes", &self.list_nodes),
            ("list_rooms", &self.list_rooms),
            ("acquire_lease", &self.acquire_lease),
            ("release_lease", &self.release_lease),
            ("save_queue", &self.save_queue),
            ("load_queue", &self.load_queue),
            ("place_call", &self.place_call),
            ("join_with_token", &self.join_with_token),
            ("node_view", &self.node_view),
        ]
    }
}

/// A Sentinel-discovered master: the current connection, replaced after a
/// connection error or a `READONLY` answer (the master failed over).
struct SentinelConn {
    client: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<Option<ConnectionManager>>,
    config: ConnectionManagerConfig,
}

impl SentinelConn {
    async fn get(&self) -> Result<ConnectionManager, RedisError> {
        if let Some(c) = self.current_conn() {
            return Ok(c);
        }
        let mut sentinel = self.client.lock().await;
        if let Some(c) = self.current_conn() {
            return Ok(c);
        }
        let client = sentinel.async_get_client().await?;
        let conn = ConnectionManager::new_with_config(client, self.config.clone()).await?;
        info!("connected to the master named by the sentinels");
        *self.lock() = Some(conn.clone());
        Ok(conn)
    }

    fn current_conn(&self) -> Option<ConnectionManager> {
        self.lock().clone()
    }

    fn forget(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ConnectionManager>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The connection, by deployment.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelConn>),
}

/// One request: a script call or a plain command.
enum Request<'a> {
    Script(ScriptInvocation<'a>),
    Cmd(Cmd),
    /// Plain commands sent together (one round trip, not atomic).
    Pipe(redis::Pipeline),
}

impl Request<'_> {
    async fn run_on<C: ConnectionLike + Send>(&self, con: &mut C) -> Result<Value, RedisError> {
        match self {
            Request::Script(inv) => inv.invoke_async(con).await,
            Request::Cmd(cmd) => cmd.query_async(con).await,
            Request::Pipe(p) => p.query_async(con).await,
        }
    }
}

/// A replica's copy of the farm's healthy nodes ([`RedisStore::resolve_placement`]
/// answers a placed room from it): valid while the store's health version
/// is the one it was read with, and never used past [`NodeView::MAX_AGE`].
#[derive(Debug, Default)]
struct NodeView {
    /// The health version it was read at (`None`: never read).
    version: Option<String>,
    /// Healthy node id → its generation.
    healthy: std::collections::HashMap<String, String>,
    /// When it was read.
    read_at: Option<std::time::Instant>,
}

impl NodeView {
    /// The longest a copy is trusted even with an unchanged version: bounds
    /// what a replica of an older release (whose scripts do not change the
    /// version) can hide during a rolling upgrade.
    const MAX_AGE: Duration = Duration::from_secs(1);

    /// Whether `owner` at generation `gen` is a healthy owner by this copy,
    /// read at `version`: `None` when the copy cannot say (another version,
    /// too old, never read).
    fn owner_healthy(&self, version: &str, owner: &str, gen_: &str) -> Option<bool> {
        let fresh = self.version.as_deref() == Some(version)
            && self.read_at.is_some_and(|t| t.elapsed() < Self::MAX_AGE);
        fresh.then(|| self.healthy.get(owner).is_some_and(|g| g == gen_))
    }
}

/// The Redis backend. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    keys: Keys,
    scripts: Arc<Scripts>,
    deadline: Duration,
    /// Requests sent per operation (each one round trip), for benchmarks:
    /// Redis counts the commands a script runs like top-level ones, so only
    /// the client can tell how many plain commands it sent.
    requests: Arc<Mutex<std::collections::HashMap<&'static str, u64>>>,
    /// The healthy nodes as last read (placed rooms decided without a script).
    view: Arc<Mutex<NodeView>>,
    /// Rooms this replica found placed lately: only those are tried without
    /// a script first (a room never seen is likely new, and the script
    /// places it in one round trip). A hint, never an answer.
    rooms_seen: Arc<Mutex<std::collections::HashSet<String>>>,
}

/// The most rooms [`RedisStore`] remembers as seen placed; when full it
/// forgets them all (the next decision of each costs its script again).
const ROOMS_SEEN_MAX: usize = 100_000;

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.keys.prefix())
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// How a URL names the deployment.
enum Target {
    Single(String),
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
    Cluster(Vec<String>),
}

fn parse_url(url: &str) -> Result<Target, Error> {
    let bad = |reason: &str| Error::Config {
        reason: format!(
            "redis url: {reason} (forms: redis://host:port[/db], redis+sentinel://host:port[,host:port]/<master>, redis+cluster://host:port[,host:port])"
        ),
        source: None,
    };
    let hosts = |list: &str| -> Result<Vec<String>, Error> {
        let v: Vec<String> = list
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("redis://{h}"))
            .collect();
        if v.is_empty() {
            return Err(bad("no host"));
        }
        Ok(v)
    };
    if let Some(rest) = url.strip_prefix("redis+sentinel://") {
        let (list, master) = rest
            .split_once('/')
            .ok_or_else(|| bad("sentinel URL needs /<master-name>"))?;
        if master.is_empty() {
            return Err(bad("empty master name"));
        }
        Ok(Target::Sentinel {
            sentinels: hosts(list)?,
            master: master.to_owned(),
        })
    } else if let Some(rest) = url.strip_prefix("redis+cluster://") {
        Ok(Target::Cluster(hosts(rest.trim_end_matches('/'))?))
    } else if url.starts_with("redis://")
        || url.starts_with("rediss://")
        || url.starts_with("unix://")
        || url.starts_with("redis+unix://")
    {
        Ok(Target::Single(url.to_owned()))
    } else {
        Err(bad("unknown scheme"))
    }
}

fn unavailable(op: &'static str, err: RedisError) -> Error {
    Error::Unavailable {
        op,
        reason: err.to_string(),
        source: Some(err),
    }
}

/// True when the error is about reaching Redis rather than about the request.
fn is_connectivity(err: &RedisError) -> bool {
    use redis::RetryMethod;
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_unrecoverable_error()
        || matches!(
            err.retry_method(),
            RetryMethod::Reconnect
                | RetryMethod::ReconnectFromInitialConnections
                | RetryMethod::WaitAndRetry
                | RetryMethod::RefreshSlotsAndRetry
        )
}

impl RedisStore {
    /// A placed room with a healthy owner, answered without a script: the
    /// room's owner fields and the health version in one round trip of
    /// plain commands, the owner's health from the replica's copy of the
    /// healthy nodes ([`NodeView`]) read at that same version. The answer
    /// is the script's: the room was owned by that owner when it was read,
    /// and no node changed health or generation between the copy and the
    /// version read after the room (the version is never repeated). `None`
    /// when it cannot say (no owner, an owner the copy does not confirm, a
    /// version the copy does not have even after reading it again): the
    /// script decides, as before. Tried only for rooms this replica found
    /// placed before (`rooms_seen`, the room's key `key`); a room it cannot
    /// answer for leaves that set, so the script that follows is not
    /// preceded by this read again.
    async fn owner_by_copy(&self, key: &str) -> Result<Option<Resolution>, Error> {
        let owner = self.owner_by_copy_once(key).await?;
        if owner.is_none() {
            self.seen_lock().remove(key);
        }
        Ok(owner)
    }

    async fn owner_by_copy_once(&self, key: &str) -> Result<Option<Resolution>, Error> {
        const OP: &str = "resolve_placement";
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(key)
            .arg("n")
            .arg("g")
            .arg("e")
            .cmd("GET")
            .arg(self.keys.health_version());
        let v = array(OP, self.run(OP, Request::Pipe(pipe)).await?)?;
        let fields = match v.first() {
            Some(Value::Array(f)) => f,
            other => return Err(corrupt(OP, format!("unexpected room reply {other:?}"))),
        };
        let (Some(owner), Some(gen_), Some(epoch)) = (
            opt_string(fields.first()),
            opt_string(fields.get(1)),
            opt_string(fields.get(2)),
        ) else {
            return Ok(None);
        };
        let version = opt_string(v.get(1)).unwrap_or_default();
        let known = self.view_lock().owner_healthy(&version, &owner, &gen_);
        let healthy = match known {
            Some(h) => h,
            None => {
                self.read_view().await?;
                self.view_lock()
                    .owner_healthy(&version, &owner, &gen_)
                    .unwrap_or(false)
            }
        };
        if !healthy {
            return Ok(None);
        }
        Ok(Some(Resolution::Owner {
            node: NodeId::new(&owner).map_err(|e| corrupt(OP, format!("owner: {e}")))?,
            epoch: Epoch(
                epoch
                    .parse()
                    .map_err(|e| corrupt(OP, format!("epoch {epoch:?}: {e}")))?,
            ),
            created: false,
            previous: None,
        }))
    }

    fn view_lock(&self) -> std::sync::MutexGuard<'_, NodeView> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn seen_lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.rooms_seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the farm's health version and healthy nodes (`node_view.lua`)
    /// into the replica's copy.
    async fn read_view(&self) -> Result<(), Error> {
        const OP: &str = "node_view";
        let mut inv = self.scripts.node_view.prepare_invoke();
        inv.key(self.keys.nodes())
            .key(self.keys.health_version())
            .key(self.keys.prefix());
        let v = array(OP, self.run(OP, Request::Script(inv)).await?)?;
        let version = string(OP, v.first())?;
        let healthy = fields(OP, v.get(1..).unwrap_or_default())?
            .into_iter()
            .collect();
        *self.view_lock() = NodeView {
            version: Some(version),
            healthy,
            read_at: Some(std::time::Instant::now()),
        };
        Ok(())
    }

    /// `consume_token.lua`, by `by` (a channel id) or by nobody (`""`).
    async fn consume(&self, token: &TokenId, node: &NodeId, by: &str) -> Result<Consumed, Error> {
        const OP: &str = "consume_token";
        let mut inv = self.scripts.consume_token.prepare_invoke();
        inv.key(self.keys.token(token)).arg(node.as_str()).arg(by);
        let v = array(OP, self.run(OP, Request::Script(inv)).await?)?;
        let status = string(OP, v.first())?;
        if status == "unknown" {
            return Ok(Consumed::Unknown);
        }
        let record = parse_token(&fields(OP, &v[1..])?)?;
        match status.as_str() {
            "ok" => Ok(Consumed::Ok(record)),
            "wrong_node" => Ok(Consumed::WrongNode(record)),
            "expired" => Ok(Consumed::Expired(record)),
            other => Err(corrupt(OP, format!("unknown status {other:?}"))),
        }
    }

    /// Connects, loads every script, and returns the store.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad farm or URL, [`Error::Unavailable`] when
    /// Redis cannot be reached in time, [`Error::ScriptFailed`] when a
    /// script does not compile.
    pub async fn connect(cfg: &Config) -> Result<Self, Error> {
        super::check_farm(&cfg.farm)?;
        let url = cfg.redis_url.as_deref().ok_or_else(|| Error::Config {
            reason: "no redis url".into(),
            source: None,
        })?;
        let deadline = cfg.connect_timeout + cfg.response_timeout;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let config_err = |e: RedisError| Error::Config {
            reason: "redis url".into(),
            source: Some(e),
        };
        let connecting = async {
            match parse_url(url)? {
                Target::Single(url) => {
                    let client = redis::Client::open(url).map_err(config_err)?;
                    let m = ConnectionManager::new_with_config(client, manager_config)
                        .await
                        .map_err(|e| unavailable("connect", e))?;
                    Ok::<_, Error>(Conn::Single(m))
                }
                Target::Cluster(nodes) => {
                    let client = redis::cluster::ClusterClient::builder(nodes)
                        .connection_timeout(cfg.connect_timeout)
                        .response_timeout(cfg.response_timeout)
                        .retries(1)
                        .build()
                        .map_err(config_err)?;
                    let c = client
                        .get_async_connection()
                        .await
                        .map_err(|e| unavailable("connect", e))?;
                    Ok(Conn::Cluster(c))
                }
                Target::Sentinel { sentinels, master } => {
                    let client =
                        SentinelClient::build(sentinels, master, None, SentinelServerType::Master)
                            .map_err(config_err)?;
                    let s = Arc::new(SentinelConn {
                        client: tokio::sync::Mutex::new(client),
                        current: Mutex::new(None),
                        config: manager_config,
                    });
                    s.get().await.map_err(|e| unavailable("connect", e))?;
                    Ok(Conn::Sentinel(s))
                }
            }
        };
        let conn = tokio::time::timeout(deadline, connecting)
            .await
            .map_err(|_| Error::Unavailable {
                op: "connect",
                reason: format!("no connection within {deadline:?}"),
                source: None,
            })??;
        let store = Self {
            conn,
            keys: Keys::new(&cfg.farm),
            scripts: Arc::new(Scripts::new()),
            deadline,
            requests: Arc::default(),
            view: Arc::default(),
            rooms_seen: Arc::default(),
        };
        store.load_scripts().await?;
        info!(farm = %cfg.farm, "redis store ready");
        Ok(store)
    }

    /// Loads every script (`SCRIPT LOAD`), so that a script Redis refuses
    /// fails the start rather than the first call.
    async fn load_scripts(&self) -> Result<(), Error> {
        for (name, script) in self.scripts.all() {
            let mut cmd = redis::cmd("SCRIPT");
            // The script text is what `Script` hashes; load the same bytes.
            cmd.arg("LOAD").arg(script_source(name));
            match self.run("script_load", Request::Cmd(cmd)).await {
                Ok(Value::BulkString(sha)) if sha == script.get_hash().as_bytes() => {}
                Ok(other) => {
                    return Err(Error::Corrupt {
                        what: format!("SCRIPT LOAD {name}"),
                        detail: format!("unexpected reply {other:?}"),
                    });
                }
                Err(Error::ScriptFailed { source, .. }) => {
                    return Err(Error::ScriptFailed {
                        script: name,
                        source,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        debug!("scripts loaded");
        Ok(())
    }

    /// The farm's keys (for tests and benchmarks that inspect Redis).
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Runs a raw command on the store's connection (benchmarks use it for
    /// `MEMORY USAGE` and the raw `EVALSHA` ceiling).
    ///
    /// # Errors
    /// As any operation.
    pub async fn raw(&self, cmd: Cmd) -> Result<Value, Error> {
        self.run("raw", Request::Cmd(cmd)).await
    }

    /// How many requests (round trips) each operation sent so far, sorted
    /// by operation (scripts by their name, plain commands by theirs).
    pub fn requests(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<_> = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        v.sort();
        v
    }

    async fn run(&self, op: &'static str, req: Request<'_>) -> Result<Value, Error> {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(op)
            .or_default() += 1;
        let call = async {
            match &self.conn {
                Conn::Single(m) => req.run_on(&mut m.clone()).await,
                Conn::Cluster(c) => req.run_on(&mut c.clone()).await,
                Conn::Sentinel(s) => {
                    let mut m = s.get().await?;
                    let r = req.run_on(&mut m).await;
                    if let Err(e) = &r
                        && (is_connectivity(e)
                            || e.kind()
                                == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly))
                    {
                        warn!(reason = %e, "master connection lost; asking the sentinels again");
                        s.forget();
                    }
                    r
                }
            }
        };
        match tokio::time::timeout(self.deadline, call).await {
            Err(_) => Err(Error::Unavailable {
                op,
                reason: format!("no answer within {:?}", self.deadline),
                source: None,
            }),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if is_connectivity(&e) => Err(unavailable(op, e)),
            Ok(Err(e)) => Err(Error::ScriptFailed {
                script: op,
                source: e,
            }),
        }
    }

    /// `save_queue.lua`, with the owner check when `owner` is given.
    async fn save_queue_with(
        &self,
        queue: &RoomName,
        owner: Option<&NodeId>,
        expected: u64,
        doc: &str,
        removed: &[u64],
        added: &[(u64, String)],
    ) -> Result<QueueSave, Error> {
        const OP: &str = "save_queue";
        super::check_queue_doc(doc, added)?;
        let room = RoomKey::new(RoomKind::Queue, queue.clone());
        let mut inv = self.scripts.save_queue.prepare_invoke();
        inv.key(self.keys.queue(queue))
            .key(self.keys.queues())
            .key(self.keys.queue_callers(queue))
            .key(self.keys.room(&room))
            .key(self.keys.prefix())
            .arg(expected)
            .arg(doc)
            .arg(queue.as_str())
            .arg(owner.map(NodeId::as_str).unwrap_or(""))
            .arg(removed.len());
        for seq in removed {
            inv.arg(*seq);
        }
        for (seq, e) in added {
            inv.arg(*seq).arg(e.as_str());
        }
        let v = array(OP, self.run(OP, Request::Script(inv)).await?)?;
        match int(OP, v.first())? {
            1 => Ok(QueueSave::Saved(int(OP, v.get(1))?)),
            0 => Ok(QueueSave::Conflict),
            2 => Ok(QueueSave::Moved(opt_node_id(OP, v.get(1))?)),
            other => Err(corrupt(OP, format!("unknown status {other}"))),
        }
    }

    async fn release_node_rooms(&self, node: &NodeId) -> Result<u32, Error> {
        let mut after = String::new();
        let mut total = 0u32;
        loop {
            let mut inv = self.scripts.release_node_rooms.prepare_invoke();
            inv.key(self.keys.node(node))
                .key(self.keys.node_rooms(node))
                .key(self.keys.prefix())
                .arg(node.as_str())
                .arg(&after)
                .arg(RELEASE_BATCH);
            let v = self.run("release_node_rooms", Request::Script(inv)).await?;
            let parts = array("release_node_rooms", v)?;
            total += int("release_node_rooms", parts.first())? as u32;
            after = string("release_node_rooms", parts.get(1))?;
            if after.is_empty() {
                break;
            }
        }
        if total > 0 {
            info!(node = %node, released = total, "released the node's stale rooms");
        }
        Ok(total)
    }
}

fn script_source(name: &str) -> &'static str {
    macro_rules! src {
        ($($n:literal),*) => {
            match name {
                $($n => include_str!(concat!("../../lua/", $n, ".lua")),)*
                _ => "",
            }
        };
    }
    src!(
        "resolve_placement",
        "add_member",
        "remove_member",
        "release_room",
        "mint_token",
        "consume_token",
        "register_node",
        "set_node_health",
        "release_node_rooms",
        "set_node_drain",
        "set_node_suspect",
        "report_load",
        "list_nodes",
        "list_rooms",
        "acquire_lease",
        "release_lease",
        "save_queue",
        "load_queue",
        "place_call",
        "join_with_token",
        "node_view"
    )
}

// ---- reply parsing: one small function per shape -------------------------

fn corrupt(what: &str, detail: impl Into<String>) -> Error {
    Error::Corrupt {
        what: what.to_owned(),
        detail: detail.into(),
    }
}

fn array(what: &str, v: Value) -> Result<Vec<Value>, Error> {
    match v {
        Value::Array(a) => Ok(a),
        Value::Set(a) => Ok(a),
        other => Err(corrupt(what, format!("expected an array, got {other:?}"))),
    }
}

fn opt_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

fn string(what: &str, v: Option<&Value>) -> Result<String, Error> {
    opt_string(v).ok_or_else(|| corrupt(what, format!("expected a string, got {v:?}")))
}

fn int(what: &str, v: Option<&Value>) -> Result<u64, Error> {
    match v {
        Some(Value::Int(i)) if *i >= 0 => Ok(*i as u64),
        Some(Value::Int(i)) => Err(corrupt(what, format!("negative number {i}"))),
        other => opt_string(other)
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| corrupt(what, format!("expected a number, got {other:?}"))),
    }
}

fn node_id(what: &str, v: Option<&Value>) -> Result<NodeId, Error> {
    let s = string(what, v)?;
    NodeId::new(&s).map_err(|e| corrupt(what, format!("bad node id {s:?}: {e}")))
}

/// A flat `field, value, ...` list as pairs.
fn fields(what: &str, v: &[Value]) -> Result<Vec<(String, String)>, Error> {
    v.chunks(2)
        .map(|kv| Ok((string(what, kv.first())?, string(what, kv.get(1))?)))
        .collect()
}

fn field<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn num_field(what: &str, f: &[(String, String)], name: &str) -> Result<u64, Error> {
    match field(f, name) {
        None => Ok(0),
        Some(v) => v
            .parse::<i64>()
            .map(|i| i.max(0) as u64)
            .map_err(|_| corrupt(what, format!("field {name} is not a number: {v:?}"))),
    }
}

fn role_letter(role: Role) -> &'static str {
    match role {
        Role::Participant => "p",
        Role::Caller => "c",
        Role::Agent => "a",
    }
}

fn role_from_letter(c: char) -> Option<Role> {
    match c {
        'p' => Some(Role::Participant),
        'c' => Some(Role::Caller),
        'a' => Some(Role::Agent),
        _ => None,
    }
}

fn parse_room(room: &RoomKey, f: &[(String, String)]) -> Result<RoomDetail, Error> {
    let what = format!("room {room}");
    let node = field(f, "n").ok_or_else(|| corrupt(&what, "no owner"))?;
    let node = NodeId::new(node).map_err(|e| corrupt(&what, e.to_string()))?;
    let mut members = Vec::new();
    for (k, v) in f {
        let Some(channel) = k.strip_prefix(':') else {
            continue;
        };
        let channel = ChannelId::new(channel).map_err(|e| corrupt(&what, e.to_string()))?;
        let mut chars = v.chars();
        let role = chars
            .next()
            .and_then(role_from_letter)
            .ok_or_else(|| corrupt(&what, format!("bad member value {v:?}")))?;
        let joined_ms = chars
            .as_str()
            .parse()
            .map_err(|_| corrupt(&what, format!("bad member value {v:?}")))?;
        members.push(Member {
            node: node.clone(),
            channel,
            role,
            joined_ms,
        });
    }
    members.sort_by(|a, b| a.channel.cmp(&b.channel));
    let count = num_field(&what, f, "k")? as u32;
    let placement = Placement {
        room: room.clone(),
        node,
        epoch: Epoch(num_field(&what, f, "e")?),
        created_ms: num_field(&what, f, "c")?,
        members: count,
        // No `z`: empty since its creation (the field is only written once
        // the room has had a member).
        empty_since_ms: if count == 0 {
            field(f, "z")
                .and_then(|z| z.parse().ok())
                .or(Some(num_field(&what, f, "c")?))
        } else {
            None
        },
    };
    Ok(RoomDetail { placement, members })
}

fn parse_token(f: &[(String, String)]) -> Result<TokenRecord, Error> {
    let what = "token";
    let get = |name: &str| field(f, name).ok_or_else(|| corrupt(what, format!("no field {name}")));
    let kind = match get("k")? {
        "c" => RoomKind::Conference,
        "q" => RoomKind::Queue,
        other => return Err(corrupt(what, format!("bad kind {other:?}"))),
    };
    let id = |s: &str| NodeId::new(s).map_err(|e| corrupt(what, e.to_string()));
    Ok(TokenRecord {
        grant: TokenGrant {
            room: RoomKey::new(
                kind,
                RoomName::new(get("r")?).map_err(|e| corrupt(what, e.to_string()))?,
            ),
            from: id(get("f")?)?,
            to: id(get("t")?)?,
            channel: ChannelId::new(get("ch")?).map_err(|e| corrupt(what, e.to_string()))?,
            caller: get("cl")?.to_owned(),
            hops: num_field(what, f, "h")? as u32,
            agent: match field(f, "ag") {
                Some(a) => Some(AgentId::new(a).map_err(|e| corrupt(what, e.to_string()))?),
                None => None,
            },
        },
        minted_ms: num_field(what, f, "m")?,
        expires_ms: num_field(what, f, "x")?,
    })
}

fn parse_node(id: NodeId, rooms: u64, f: &[(String, String)]) -> Result<NodeRecord, Error> {
    let what = format!("node {id}");
    let healthy = field(f, "h") == Some("1");
    let draining = field(f, "d") == Some("1");
    let incarnation = match (field(f, "aid"), field(f, "ast")) {
        (Some(a), Some(s)) => Some(Incarnation {
            asterisk_id: a.to_owned(),
            started: s.to_owned(),
        }),
        _ => None,
    };
    Ok(NodeRecord {
        state: super::effective_state(healthy, draining),
        healthy,
        draining,
        suspect: field(f, "s") == Some("1"),
        incarnation,
        sip_host: field(f, "sip").unwrap_or_default().to_owned(),
        capacity: num_field(&what, f, "cap")? as u32,
        max_rooms: match field(f, "max") {
            Some(_) => Some(num_field(&what, f, "max")? as u32),
            None => None,
        },
        channels: num_field(&what, f, "ch")? as u32,
        rooms: rooms as u32,
        members: num_field(&what, f, "k")? as u32,
        updated_ms: num_field(&what, f, "u")?,
        id,
    })
}

/// Reads an `add_member`-shaped reply (`add_member.lua`, and the member
/// part of `join_with_token.lua`); `None` for `unavailable`.
fn parse_member_added(what: &str, v: &[Value]) -> Result<Option<MemberAdded>, Error> {
    match string(what, v.first())?.as_str() {
        "added" => Ok(Some(MemberAdded::Added {
            epoch: Epoch(int(what, v.get(1))?),
            members: int(what, v.get(2))? as u32,
            claimed: int(what, v.get(3))? == 1,
        })),
        "already" => Ok(Some(MemberAdded::AlreadyMember {
            epoch: Epoch(int(what, v.get(1))?),
            members: int(what, v.get(2))? as u32,
        })),
        "moved" => Ok(Some(MemberAdded::Moved {
            owner: node_id(what, v.get(1))?,
            epoch: Epoch(int(what, v.get(2))?),
        })),
        "unavailable" => Ok(None),
        other => Err(corrupt(what, format!("unknown member status {other:?}"))),
    }
}

/// An optional node id: `''` is none.
fn opt_node_id(what: &str, v: Option<&Value>) -> Result<Option<NodeId>, Error> {
    let s = string(what, v)?;
    if s.is_empty() {
        return Ok(None);
    }
    NodeId::new(&s)
        .map(Some)
        .map_err(|e| corrupt(what, format!("bad node id {s:?}: {e}")))
}

/// The grant of the token [`Store::place_call`] mints for `call` towards
/// `owner`.
fn redirect_grant(call: &CallArrival, r: &super::RedirectToken, owner: &NodeId) -> TokenGrant {
    TokenGrant {
        room: call.room.clone(),
        from: call.landing.clone(),
        to: owner.clone(),
        channel: call.channel.clone(),
        caller: r.caller.clone(),
        hops: r.hops,
        agent: r.agent.clone(),
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn resolve_placement(
        &self,
        room: &RoomKey,
        choice: &NodeId,
    ) -> Result<Resolution, Error> {
        const OP: &str = "resolve_placement";
        let key = self.keys.room(room);
        let seen = self.seen_lock().contains(&key);
        if seen && let Some(owner) = self.owner_by_copy(&key).await? {
            return Ok(owner);
        }
        let mut inv = self.scripts.resolve_placement.prepare_invoke();
        inv.key(key.clone())
            .key(self.keys.epoch())
            .key(self.keys.node(choice))
            .key(self.keys.node_rooms(choice))
            .key(self.keys.prefix())
            .arg(names::store_member(room))
            .arg(choice.as_str());
        let v = array(OP, self.run(OP, Request::Script(inv)).await?)?;
        match string(OP, v.first())?.as_str() {
            "owner" => {
                let previous = string(OP, v.get(4))?;
                {
                    let mut rooms = self.seen_lock();
                    if rooms.len() >= ROOMS_SEEN_MAX {
                        rooms.clear();
                    }
                    rooms.insert(key);
                }
                Ok(Resolution::Owner {
                    node: node_id(OP, v.get(1))?,
                    epoch: Epoch(int(OP, v.get(2))?),
                    created: int(OP, v.get(3))? == 1,
                    previous: if previous.is_empty() {
                        None
                    } else {
                        Some(
                            NodeId::new(&previous)
                                .map_err(|e| corrupt(OP, format!("previous owner: {e}")))?,
                        )
                    },
                })
            }
            "ineligible" => Ok(Resolution::ChoiceIneligible {
                node: choice.clone(),
            }),
            other => Err(corrupt(OP, format!("unknown status {other:?}"))),
        }
    }

    async fn placed_owner(&self, room: &RoomKey) -> Result<Option<Resolution>, Error> {
        let key = self.keys.room(room);
        if !self.seen_lock().contains(&key) {
            return Ok(None);
        }
        self.owner_by_copy(&key).await
    }

    async fn place_call(&self, call: &CallArrival, choice: &NodeId) -> Result<CallPlaced, Error> {
        const OP: &str = "place_call";
        let member = names::store_member(&call.room);
        let mut inv = self.scripts.place_call.prepare_invoke();
        inv.key(self.keys.room(&call.room))
            .key(self.keys.epoch())
            .key(self.keys.node(choice))
            .key(self.keys.node_rooms(choice))
            .key(self.keys.node(&call.landing));
        match &call.redirect {
            Some(r) => {
                super::check_redirect(r)?;
                inv.key(self.keys.token(&r.token));
            }
            None => {
                inv.key(self.keys.prefix());
            }
        }
        inv.key(self.keys.prefix())
            .arg(member)
            .arg(choice.as_str())
            .arg(call.landing.as_str())
            .arg(call.channel.as_str())
            .arg(role_letter(call.role));
        match &call.redirect {
            Some(r) => inv
                .arg(ms(r.ttl).max(1))
                .arg(ms(TOKEN_TOMBSTONE))
                .arg(&r.caller)
                .arg(r.hops)
                .arg(r.agent.as_ref().map(AgentId::as_str).unwrap_or("")),
            None => inv.arg(""),
        };
        let v = array(OP, self.run(OP, Request::Script(inv)).await?)?;
        match string(OP, v.first())?.as_str() {
            "joined" => Ok(CallPlaced::Joined {
                epoch: Epoch(int(OP, v.get(1))?),
                members: int(OP, v.get(2))? as u32,
                created: int(OP, v.get(3))? == 1,
                previous: opt_node_id(OP, v.get(4))?,
                already: int(OP, v.get(5))? == 1,
            }),
            "elsewhere" => {
                let owner = node_id(OP, v.get(1))?;
                let minted_ms = int(OP, v.get(5))?;
                let token = match &call.redirect {
                    Some(r) if minted_ms > 0 => Some(TokenRecord {
                        grant: redirect_grant(call, r, &owner),
                        minted_ms,
                        expires_ms: int(OP, v.get(6))?,
                    }),
                    _ => None,
                };
                Ok(CallPlaced::Elsewhere {
                    owner,
                    epoch: Epoch(int(OP, v.get(2))?),
                    created: int(OP, v.get(3))? == 1,
                    previous: opt_node_id(OP, v.get(4))?,
                    token,
                })
            }
            "ineligible" => Ok(CallPlaced::ChoiceIneligible {
                node: choice.clone(),
            }),
            other => Err(corrupt(OP, format!("unknown status {other:?}"))),
        }
    }

    async fn join_with_token(
        &self,
        token: &TokenId,
        node: &NodeId,
        channel: &ChannelId,
    ) -> Result<TokenJoin, Error> {
        const OP: &str = "join_with_token";
        let mut inv = self.scripts.join_with_token.prepare_invoke();
        inv.key(self.keys.token(token))
            .key(self.keys.epoch())
            .key(self.keys.node(node))
            .key(self.keys.node_rooms(node))
            .key(self.keys.prefix())
            .arg(node.as_str())
            .arg(channel.as_str());
        let mut v = array(OP, self.run(OP, Request::Script(inv)).await?)?;
        let status = string(OP, v.first())?;
        if status == "unknown" {
            return Ok(TokenJoin::NotConsumed(Consumed::Unknown));
        }
        if v.len() < 2 {
            return Err(corrupt(OP, "short reply"));
        }
        let record = parse_token(&fields(OP, &v[2..])?)?;
        let member = array(OP, v.swap_remove(1))?;
        match status.as_str() {
            "ok" => Ok(match parse_member_added(OP, &member)? {
                Some(member) => TokenJoin::Joined { record, member },
                None => TokenJoin::NodeUnavailable { record },
            }),
            "wrong_node" => Ok(TokenJoin::NotConsumed(Consumed::WrongNode(record))),
            "expired" => Ok(TokenJoin::NotConsumed(Consumed::Expired(record))),
            other => Err(corrupt(OP, format!("unknown status {other:?}"))),
        }
    }

    async fn get_room(&self, room: &RoomKey) -> Result<Option<RoomDetail>, Error> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.keys.room(room));
        let v = array("get_room", self.run("get_room", Request::Cmd(cmd)).await?)?;
        if v.is_empty() {
            return Ok(None);
        }
        Ok(Some(parse_room(room, &fields("get_room", &v)?)?))
    }

    async fn add_member(
        &self,
        room: &RoomKey,
        node: &NodeId,
        channel: &ChannelId,
        role: Role,
    ) -> Result<MemberAdded, Error> {
        const OP: &str = "add_member";
        let mut inv = self.scripts.add_member.prepare_invoke();
        inv.key(self.keys.room(room))
            .key(self.keys.epoch())
            .key(self.keys.node(node))
            .key(self.keys.node_rooms(node))
            .key(self.keys.prefix())
            .arg(names::store_member(room))
            .arg(node.as_str())
            .arg(channel.as_str())
            .arg(role_letter(role));
        let v = array(OP, self.run(OP, Request::Script(inv)).await?)?;
        parse_member_added(OP, &v)?.ok_or_else(|| Error::NodeUnavailable {
            node: node.clone(),
            room: room.clone(),
        })
    }

    async fn remove_member(
        &self,
        room: &RoomKey,
        node: &NodeId,
        channel: &ChannelId,
    ) -> Result<MemberRemoved, Error> {
        const OP: &str = "remove_member";
        let mut inv = self.scripts.remove_member.prepare_invoke();
        inv.key(self.keys.room(room))
            .key(self.keys.node(node))
            .arg(node.as_str())
            .arg(channel.as_str());
        let v = array(OP, self.run(OP, Request::Script(inv)).await?)?;
        match string(OP, v.first())?.as_str() {
            "removed" => Ok(MemberRemoved::Removed {
                remaining: int(OP, v.get(1))? as u32,
                epoch: Epoch(int(OP, v.get(2))?),
            }),
            "not_member" => Ok(MemberRemoved::NotMember),
            other => Err(corrupt(OP, format!("unknown status {other:?}"))),
        }
    }

    async fn release_room(
        &self,
        room: &RoomKey,
        epoch: Epoch,
        linger: Duration,
    ) -> Result<Release, Error> {
        const OP: &str = "release_room";
        let mut inv = self.scripts.release_room.prepare_invoke();
        inv.key(self.keys.room(room))
            .key(self.keys.prefix())
            .arg(names::store_member(room))
            .arg(epoch.0)
            .arg(ms(linger));
        let v = array(OP, self.run(OP, Request::Script(inv)).await?)?;
        match string(OP, v.first())?.as_str() {
            "released" => Ok(Release::Released),
            "not_found" => Ok(Release::NotFound),
            "epoch_changed" => Ok(Release::EpochChanged {
                current: Epoch(int(OP, v.get(1))?),
            }),
            "not_empty" => Ok(Release::NotEmpty),
            "too_soon" => Ok(Release::TooSoon),
            other => Err(corrupt(OP, format!("unknown status {other:?}"))),
        }
    }

    async fn mint_token(
        &self,
        token: &TokenId,
        grant: &TokenGrant,
        ttl: Duration,
    ) -> Result<(), Error> {
        const OP: &str = "mint_token";
        super::check_grant(grant, ttl)?;
        let mut inv = self.scripts.mint_token.prepare_invoke();
        inv.key(self.keys.token(token))
            .arg(ms(ttl).max(1))
            .arg(ms(TOKEN_TOMBSTONE))
            .arg(names::kind_letter(grant.room.kind).to_string())
            .arg(grant.room.name.as_str())
            .arg(grant.from.as_str())
            .arg(grant.to.as_str())
            .arg(grant.channel.as_str())
            .arg(&grant.caller)
            .arg(grant.hops)
            .arg(grant.agent.as_ref().map(AgentId::as_str).unwrap_or(""));
        let v = array(OP, self.run(OP, Request::Script(inv)).await?)?;
        if int(OP, v.first())? == 1 {
            Ok(())
        } else {
            Err(Error::TokenExists {
                prefix: token.prefix().to_owned(),
            })
        }
    }

    async fn peek_token(&self, token: &TokenId) -> Result<Option<TokenRecord>, Error> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.keys.token(token));
        let v = array(
            "peek_token",
            self.run("peek_token", Request::Cmd(cmd)).await?,
        )?;
        if v.is_empty() {
            return Ok(None);
        }
        let f = fields("peek_token", &v)?;
        if field(&f, "u").is_some() {
            // Used (kept only so its consumer may retry).
            return Ok(None);
        }
        Ok(Some(parse_token(&f)?))
    }

    async fn consume_token(&self, token: &TokenId, node: &NodeId) -> Result<Consumed, Error> {
        self.consume(token, node, "").await
    }

    async fn consume_token_as(
        &self,
        token: &TokenId,
        node: &NodeId,
        by: &ChannelId,
    ) -> Result<Consumed, Error> {
        self.consume(token, node, by.as_str()).await
    }

    async fn register_node(&self, reg: &NodeRegistration) -> Result<Registered, Error> {
        const OP: &str = "register_node";
        super::check_registration(reg)?;
        let mut inv = self.scripts.register_node.prepare_invoke();
        inv.key(self.keys.node(&reg.node))
            .key(self.keys.nodes())
            .key(self.keys.health_version())
            .key(self.keys.epoch())
            .arg(reg.node.as_str())
            .arg(&reg.incarnation.asterisk_id)
            .arg(&reg.incarnation.started)
            .arg(&reg.sip_host)
            .arg(reg.capacity)
            .arg(reg.max_rooms.map(|m| m.to_string()).unwrap_or_default());
        let v = array(OP, self.run(OP, Request::Script(inv)).await?)?;
        let new_incarnation = int(OP, v.first())? == 1;
        let released_rooms = if int(OP, v.get(1))? == 1 {
            self.release_node_rooms(&reg.node).await?
        } else {
            0
        };
        Ok(Registered {
            new_incarnation,
            released_rooms,
        })
    }

    async fn set_node_health(&self, node: &NodeId, healthy: bool) -> Result<HealthChanged, Error> {
        const OP: &str = "set_node_health";
        let mut inv = self.scripts.set_node_health.prepare_invoke();
        inv.key(self.keys.node(node))
            .key(self.keys.health_version())
            .key(self.keys.epoch())
            .arg(if healthy { "1" } else { "0" });
        let v = self.run(OP, Request::Script(inv)).await?;
        let changed = match v {
            Value::Int(-1) => return Err(Error::UnknownNode { node: node.clone() }),
            Value::Int(c) => c == 1,
            other => return Err(corrupt(OP, format!("unexpected reply {other:?}"))),
        };
        let released_rooms = if healthy {
            0
        } else {
            self.release_node_rooms(node).await?
        };
        Ok(HealthChanged {
            changed,
            released_rooms,
        })
    }

    async fn set_node_drain(&self, node: &NodeId, draining: bool) -> Result<NodeRecord, Error> {
        const OP: &str = "set_node_drain";
        let mut inv = self.scripts.set_node_drain.prepare_invoke();
        inv.key(self.keys.node(node))
            .key(self.keys.node_rooms(node))
            .arg(if draining { "1" } else { "0" });
        let v = array(OP, self.run(OP, Request::Script(inv)).await?)?;
        if v.is_empty() {
            return Err(Error::UnknownNode { node: node.clone() });
        }
        let rooms = int(OP, v.first())?;
        parse_node(node.clone(), rooms, &fields(OP, &v[1..])?)
    }

    async fn set_node_suspect(&self, node: &NodeId, suspect: bool) -> Result<(), Error> {
        const OP: &str = "set_node_suspect";
        let mut inv = self.scripts.set_node_suspect.prepare_invoke();
        inv.key(self.keys.node(node))
            .arg(if suspect { "1" } else { "0" });
        match self.run(OP, Request::Script(inv)).await? {
            Value::Int(1) => Ok(()),
            Value::Int(0) => Err(Error::UnknownNode { node: node.clone() }),
            other => Err(corrupt(OP, format!("unexpected reply {other:?}"))),
        }
    }

    async fn report_load(&self, node: &NodeId, channels: u32) -> Result<(), Error> {
        const OP: &str = "report_load";
        let mut inv = self.scripts.report_load.prepare_invoke();
        inv.key(self.keys.node(node)).arg(channels);
        match self.run(OP, Request::Script(inv)).await? {
            Value::Int(1) => Ok(()),
            Value::Int(0) => Err(Error::UnknownNode { node: node.clone() }),
            other => Err(corrupt(OP, format!("unexpected reply {other:?}"))),
        }
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, Error> {
        const OP: &str = "list_nodes";
        let mut inv = self.scripts.list_nodes.prepare_invoke();
        inv.key(self.keys.nodes()).key(self.keys.prefix());
        let v = array(OP, self.run(OP, Request::Script(inv)).await?)?;
        let mut out = Vec::with_capacity(v.len());
        for entry in v {
            let e = array(OP, entry)?;
            let id = node_id(OP, e.first())?;
            let rooms = int(OP, e.get(1))?;
            out.push(parse_node(
                id,
                rooms,
                &fields(OP, e.get(2..).unwrap_or(&[]))?,
            )?);
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn list_rooms(
        &self,
        filter: &RoomFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RoomPage, Error> {
        const OP: &str = "list_rooms";
        let limit = super::page_limit(limit);
        let after = cursor.map(super::parse_cursor).transpose()?;
        let nodes: Vec<NodeId> = match &filter.node {
            Some(n) => vec![n.clone()],
            None => {
                let mut cmd = redis::cmd("SMEMBERS");
                cmd.arg(self.keys.nodes());
                let v = array(OP, self.run(OP, Request::Cmd(cmd)).await?)?;
                let mut ids = v
                    .iter()
                    .map(|x| node_id(OP, Some(x)))
                    .collect::<Result<Vec<_>, _>>()?;
                ids.sort();
                ids
            }
        };
        let (kind_min, kind_max) = match filter.kind {
            Some(k) => {
                let l = names::kind_letter(k);
                (format!("{l}:"), format!("{l};"))
            }
            None => (String::new(), String::new()),
        };
        let want = limit + 1;
        let mut rooms: Vec<Placement> = Vec::new();
        for node in nodes {
            if let Some((an, _)) = &after
                && &node < an
            {
                continue;
            }
            let mut min = if kind_min.is_empty() {
                "-".to_owned()
            } else {
                format!("[{kind_min}")
            };
            let max = if kind_max.is_empty() {
                "+".to_owned()
            } else {
                format!("({kind_max}")
            };
            if let Some((an, ar)) = &after
                && *an == node
            {
                let m = names::store_member(ar);
                if kind_min.is_empty() || m >= kind_min {
                    min = format!("({m}");
                }
            }
            let mut inv = self.scripts.list_rooms.prepare_invoke();
            inv.key(self.keys.node_rooms(&node))
                .key(self.keys.prefix())
                .arg(&min)
                .arg(&max)
                .arg(want - rooms.len());
            let v = array(OP, self.run(OP, Request::Script(inv)).await?)?;
            for r in v.chunks(6) {
                let member = string(OP, r.first())?;
                let room = names::parse_store_member(&member)
                    .ok_or_else(|| corrupt(OP, format!("bad index member {member:?}")))?;
                let members = int(OP, r.get(4))? as u32;
                let z = string(OP, r.get(5))?;
                let created_ms = int(OP, r.get(3))?;
                rooms.push(Placement {
                    room,
                    node: node_id(OP, r.get(1))?,
                    epoch: Epoch(int(OP, r.get(2))?),
                    created_ms,
                    members,
                    empty_since_ms: if members == 0 {
                        Some(z.parse().unwrap_or(created_ms))
                    } else {
                        None
                    },
                });
            }
            if rooms.len() >= want {
                break;
            }
        }
        let next = if rooms.len() > limit {
            rooms.truncate(limit);
            rooms.last().map(|p| names::cursor(&p.node, &p.room))
        } else {
            None
        };
        Ok(RoomPage { rooms, next })
    }

    async fn acquire_lease(
        &self,
        node: &NodeId,
        replica: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        const OP: &str = "acquire_lease";
        super::check_replica(replica)?;
        let mut inv = self.scripts.acquire_lease.prepare_invoke();
        inv.key(self.keys.lease(node))
            .arg(replica)
            .arg(ms(ttl).max(1));
        Ok(int(OP, Some(&self.run(OP, Request::Script(inv)).await?))? == 1)
    }

    async fn release_lease(&self, node: &NodeId, replica: &str) -> Result<(), Error> {
        const OP: &str = "release_lease";
        let mut inv = self.scripts.release_lease.prepare_invoke();
        inv.key(self.keys.lease(node)).arg(replica);
        self.run(OP, Request::Script(inv)).await?;
        Ok(())
    }

    async fn load_queue(&self, queue: &RoomName) -> Result<Option<QueueDoc>, Error> {
        const OP: &str = "load_queue";
        let mut inv = self.scripts.load_queue.prepare_invoke();
        inv.key(self.keys.queue(queue))
            .key(self.keys.queue_callers(queue));
        let v = array(OP, self.run(OP, Request::Script(inv)).await?)?;
        if v.is_empty() {
            return Ok(None);
        }
        let version = string(OP, v.first())?
            .parse()
            .map_err(|_| corrupt(OP, "version is not a number"))?;
        let doc = string(OP, v.get(1))?;
        let mut callers = Vec::with_capacity(v.len().saturating_sub(2));
        for x in &v[2..] {
            callers.push(string(OP, Some(x))?);
        }
        Ok(Some(QueueDoc {
            version,
            doc,
            callers,
        }))
    }

    async fn save_queue_parts(
        &self,
        queue: &RoomName,
        expected: u64,
        doc: &str,
        removed: &[u64],
        added: &[(u64, String)],
    ) -> Result<Option<u64>, Error> {
        match self
            .save_queue_with(queue, None, expected, doc, removed, added)
            .await?
        {
            QueueSave::Saved(v) => Ok(Some(v)),
            _ => Ok(None),
        }
    }

    async fn save_queue_on(
        &self,
        queue: &RoomName,
        owner: &NodeId,
        expected: u64,
        doc: &str,
        removed: &[u64],
        added: &[(u64, String)],
    ) -> Result<QueueSave, Error> {
        self.save_queue_with(queue, Some(owner), expected, doc, removed, added)
            .await
    }

    async fn queue_version(&self, queue: &RoomName) -> Result<u64, Error> {
        const OP: &str = "queue_version";
        let mut cmd = redis::cmd("HGET");
        cmd.arg(self.keys.queue(queue)).arg("v");
        match self.run(OP, Request::Cmd(cmd)).await? {
            Value::Nil => Ok(0),
            v => string(OP, Some(&v))?
                .parse()
                .map_err(|_| corrupt(OP, "version is not a number")),
        }
    }

    async fn list_queues(&self) -> Result<Vec<RoomName>, Error> {
        const OP: &str = "list_queues";
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(self.keys.queues());
        let v = array(OP, self.run(OP, Request::Cmd(cmd)).await?)?;
        let mut out = Vec::with_capacity(v.len());
        for x in &v {
            let name = string(OP, Some(x))?;
            out.push(RoomName::new(name.as_str()).map_err(|e| corrupt(OP, e.to_string()))?);
        }
        out.sort();
        Ok(out)
    }

    async fn ping(&self) -> Result<(), Error> {
        self.run("ping", Request::Cmd(redis::cmd("PING"))).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        assert!(matches!(
            parse_url("redis://127.0.0.1:6379/0"),
            Ok(Target::Single(_))
        ));
        match parse_url("redis+sentinel://a:26379,b:26379/mymaster") {
            Ok(Target::Sentinel { sentinels, master }) => {
                assert_eq!(sentinels, ["redis://a:26379", "redis://b:26379"]);
                assert_eq!(master, "mymaster");
            }
            _ => panic!("sentinel url not parsed"),
        }
        match parse_url("redis+cluster://a:7000,b:7001") {
            Ok(Target::Cluster(n)) => assert_eq!(n.len(), 2),
            _ => panic!("cluster url not parsed"),
        }
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("redis+sentinel://a:1").is_err());
    }

    #[test]
    fn every_script_has_its_header_and_source() {
        for (name, _) in Scripts::new().all() {
            let src = script_source(name);
            assert!(src.starts_with(&format!("-- {name}:")), "{name}");
            for part in ["KEYS[1]", "Reply:", "Rule:"] {
                assert!(src.contains(part), "{name} lacks {part}");
            }
        }
    }
}
