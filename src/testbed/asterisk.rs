//! Real Asterisk nodes: where the install is, and one node's process, its
//! configuration (the shipped `deploy/asterisk/` files, rendered), and the
//! ARI reads that tell the truth about its calls.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::render::{self, NodeAddrs};
use super::{Error, Process};

/// The Asterisk 22 tarball the tests use (`../shared/asterisk/`).
pub const TARBALL: &str = "asterisk-22.10.1-debian12-amd64.tar.xz";

/// Names an unpacked Asterisk tree (holding `sbin/asterisk`).
pub const ENV_DIR: &str = "CORRAL_ASTERISK_DIR";

/// Names the tarball, when it is not in `../shared/asterisk/`.
pub const ENV_TARBALL: &str = "CORRAL_ASTERISK_TARBALL";

/// How long a node may take from start to answering ARI. Asterisk answers
/// in 1-2 s on an idle machine; a loaded 2-core CI machine starting several
/// at once needs more.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// How to get an Asterisk when none is found.
const HOW_TO_GET_ONE: &str = "put the relocatable tarball at ../shared/asterisk/asterisk-22.10.1-debian12-amd64.tar.xz \
     (or name it with CORRAL_ASTERISK_TARBALL), or set CORRAL_ASTERISK_DIR to an unpacked tree \
     (holding sbin/asterisk), or install Asterisk 22 so that `asterisk` is on PATH; \
     then install its runtime packages (Debian 12: apt-get install libxml2 libxslt1.1 libsqlite3-0 \
     libssl3 libjansson4 libuuid1 libedit2 libstdc++6). `.ci/test` does all of this.";

/// An Asterisk install: a relocatable tree, or a system one.
#[derive(Debug, Clone)]
pub struct Install {
    /// The `asterisk` binary.
    pub binary: PathBuf,
    /// The relocatable tree's root (`sbin/`, `lib/asterisk/modules`, `moh/`);
    /// `None` for a system install, which knows its own directories.
    pub tree: Option<PathBuf>,
}

impl Install {
    /// Finds an Asterisk: `CORRAL_ASTERISK_DIR`; else the tarball unpacked
    /// in the cache directory (unpacking it there first if it is found next
    /// to the project, or where `CORRAL_ASTERISK_TARBALL` says); else
    /// `asterisk` on `PATH`.
    ///
    /// # Errors
    /// [`Error::NoAsterisk`] saying how to get one; [`Error::Io`] when the
    /// tarball cannot be unpacked.
    pub fn locate() -> Result<Install, Error> {
        if let Some(dir) = std::env::var_os(ENV_DIR).filter(|d| !d.is_empty()) {
            let tree = PathBuf::from(dir);
            let binary = tree.join("sbin/asterisk");
            if !binary.is_file() {
                return Err(Error::NoAsterisk(format!(
                    "{ENV_DIR}={} holds no sbin/asterisk; {HOW_TO_GET_ONE}",
                    tree.display()
                )));
            }
            return Ok(Install {
                binary,
                tree: Some(tree),
            });
        }
        // One unpacking at a time in this process; other processes race
        // safely through `unpack`'s rename.
        static UNPACKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = UNPACKING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let cache = cache_dir();
        let unpacked = cache.join(TARBALL.trim_end_matches(".tar.xz"));
        if unpacked.join("sbin/asterisk").is_file() {
            return Ok(Install {
                binary: unpacked.join("sbin/asterisk"),
                tree: Some(unpacked),
            });
        }
        if let Some(tarball) = find_tarball() {
            unpack(&tarball, &cache)?;
            if unpacked.join("sbin/asterisk").is_file() {
                return Ok(Install {
                    binary: unpacked.join("sbin/asterisk"),
                    tree: Some(unpacked),
                });
            }
            return Err(Error::NoAsterisk(format!(
                "{} did not unpack to {}; {HOW_TO_GET_ONE}",
                tarball.display(),
                unpacked.display()
            )));
        }
        if let Some(binary) = super::which("asterisk") {
            return Ok(Install { binary, tree: None });
        }
        Err(Error::NoAsterisk(HOW_TO_GET_ONE.to_string()))
    }

    /// The `[directories]` of an instance living in `dir`.
    fn directories(&self, dir: &Path) -> String {
        let d = dir.display();
        let mut s = format!(
            "[directories]\nastetcdir => {d}/etc\nastvarlibdir => {d}/lib\nastdbdir => {d}/lib\n\
             astkeydir => {d}/keys\nastspooldir => {d}/spool\nastrundir => {d}/run\n\
             astlogdir => {d}/log\nastcachedir => {d}/cache\n"
        );
        if let Some(tree) = &self.tree {
            let t = tree.display();
            s.push_str(&format!(
                "astmoddir => {t}/lib/asterisk/modules\nastdatadir => {t}/share/asterisk\nastsbindir => {t}/sbin\n"
            ));
        }
        s
    }
}

/// `CORRAL_CACHE_DIR`, else `$XDG_CACHE_HOME/corral`, else
/// `$HOME/.cache/corral`, else the system temp dir's `corral-cache`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CORRAL_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("corral");
    }
    if let Some(d) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join(".cache/corral");
    }
    std::env::temp_dir().join("corral-cache")
}

fn find_tarball() -> Option<PathBuf> {
    if let Some(t) = std::env::var_os(ENV_TARBALL).filter(|t| !t.is_empty()) {
        return Some(PathBuf::from(t));
    }
    let beside = |root: &Path| root.join("../shared/asterisk").join(TARBALL);
    let mut candidates = vec![beside(Path::new(env!("CARGO_MANIFEST_DIR")))];
    if let Ok(cwd) = std::env::current_dir() {
        candidates.push(beside(&cwd));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// Unpacks `tarball` into `cache` through a private directory and a rename,
/// so that processes racing to unpack never see half a tree.
fn unpack(tarball: &Path, cache: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(cache).map_err(Error::io(format!("creating {}", cache.display())))?;
    let tmp = cache.join(format!(
        ".unpack-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(Error::io(format!("creating {}", tmp.display())))?;
    let out = Command::new("tar")
        .arg("-xJf")
        .arg(tarball)
        .arg("-C")
        .arg(&tmp)
        .output()
        .map_err(Error::io("running tar"))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::Start {
            what: format!("unpacking {}", tarball.display()),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let name = TARBALL.trim_end_matches(".tar.xz");
    let target = cache.join(name);
    // Another process may have won the race: its tree is as good as ours.
    if std::fs::rename(tmp.join(name), &target).is_err() && !target.join("sbin/asterisk").is_file()
    {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::Start {
            what: format!("unpacking {}", tarball.display()),
            detail: format!("could not move the tree to {}", target.display()),
        });
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// One real Asterisk node of the testbed.
#[derive(Debug)]
pub struct AsteriskNode {
    install: Install,
    addrs: NodeAddrs,
    dir: PathBuf,
    process: Option<Process>,
    http: reqwest::Client,
    /// How many times it was started (1 for the first life).
    pub lives: u32,
    /// Frozen by [`AsteriskNode::pause`]: reads skip it rather than wait.
    paused: bool,
}

impl AsteriskNode {
    /// Writes the node's configuration into `dir` and starts it; returns
    /// once its ARI answers. `proxy_addr` is where Kamailio's requests come
    /// from; `phone` the queue member's phone (`host:port`).
    ///
    /// # Errors
    /// Rendering, writing or starting failed, or ARI did not answer within
    /// [`START_DEADLINE`] (the error carries the end of its log).
    pub async fn start(
        install: &Install,
        dir: &Path,
        addrs: NodeAddrs,
        proxy_addr: &str,
        phone: &str,
    ) -> Result<Self, Error> {
        Self::start_with_dialplan(
            install,
            dir,
            addrs,
            proxy_addr,
            phone,
            render::EXTENSIONS_CONF,
        )
        .await
    }

    /// [`AsteriskNode::start`] with `extensions` as the node's
    /// `extensions.conf` instead of the shipped one (a test's own
    /// dialplan); every other file is the shipped one, rendered.
    ///
    /// # Errors
    /// As [`AsteriskNode::start`].
    pub async fn start_with_dialplan(
        install: &Install,
        dir: &Path,
        addrs: NodeAddrs,
        proxy_addr: &str,
        phone: &str,
        extensions: &str,
    ) -> Result<Self, Error> {
        write_config(install, dir, &addrs, proxy_addr, phone, extensions)?;
        let http = super::http_client()?;
        let mut node = Self {
            install: install.clone(),
            addrs,
            dir: dir.to_path_buf(),
            process: None,
            http,
            lives: 0,
            paused: false,
        };
        node.spawn().await?;
        Ok(node)
    }

    async fn spawn(&mut self) -> Result<(), Error> {
        let mut cmd = Command::new(&self.install.binary);
        cmd.arg("-C")
            .arg(self.dir.join("etc/asterisk.conf"))
            .args(["-f", "-n", "-q"]);
        let what = format!("asterisk {}", self.addrs.id);
        let process = Process::spawn(&what, cmd, &self.dir.join("log/console.log"))?;
        self.process = Some(process);
        self.lives += 1;
        let mut pause = Duration::from_millis(20);
        let until = tokio::time::Instant::now() + START_DEADLINE;
        loop {
            if self.ping().await {
                return Ok(());
            }
            let exited = self.process.as_mut().and_then(Process::exited);
            if exited.is_some() || tokio::time::Instant::now() >= until {
                let tail = self
                    .process
                    .as_ref()
                    .map(|p| p.log_tail(20))
                    .unwrap_or_default();
                let messages =
                    std::fs::read_to_string(self.dir.join("log/messages.log")).unwrap_or_default();
                let last: Vec<&str> = messages.lines().rev().take(20).collect();
                return Err(Error::Start {
                    what,
                    detail: format!(
                        "{} (ARI at {}); console:\n{tail}\nmessages.log (last lines first):\n{}",
                        match exited {
                            Some(s) => format!("exited at start: {s}"),
                            None => format!("ARI did not answer within {START_DEADLINE:?}"),
                        },
                        self.ari_url(),
                        last.join("\n")
                    ),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// The node id (`ast1`).
    pub fn id(&self) -> &str {
        &self.addrs.id
    }

    /// Its addresses.
    pub fn addrs(&self) -> &NodeAddrs {
        &self.addrs
    }

    /// `http://127.0.0.1:<http_port>`: what corral's `ari_url` names.
    pub fn ari_url(&self) -> String {
        format!("http://{}:{}", self.addrs.bind, self.addrs.http_port)
    }

    /// `127.0.0.1:<sip_port>`.
    pub fn sip_addr(&self) -> String {
        format!("{}:{}", self.addrs.bind, self.addrs.sip_port)
    }

    /// The node's directory (`etc/`, `log/`, `run/`, ...).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the process runs (killed nodes do not).
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| p.exited().is_none())
    }

    /// `GET /ari/asterisk/ping` answered 200.
    pub async fn ping(&self) -> bool {
        self.get("asterisk/ping")
            .await
            .is_ok_and(|v| v.get("ping").is_some())
    }

    /// `GET /ari/<path>` as the shipped ARI user, as JSON.
    ///
    /// # Errors
    /// [`Error::Http`] when the node does not answer, or not with 2xx JSON.
    pub async fn get(&self, path: &str) -> Result<Value, Error> {
        let url = format!("{}/ari/{path}", self.ari_url());
        let what = format!("GET {url}");
        let resp = self
            .http
            .get(&url)
            .basic_auth(render::ARI_USER, Some(render::ARI_PASSWORD))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|source| Error::Http {
                what: what.clone(),
                source,
            })?;
        resp.json()
            .await
            .map_err(|source| Error::Http { what, source })
    }

    /// `GET /ari/channels`: every channel on the node.
    ///
    /// # Errors
    /// As [`AsteriskNode::get`].
    pub async fn channels(&self) -> Result<Vec<Value>, Error> {
        Ok(as_list(self.get("channels").await?))
    }

    /// `GET /ari/bridges`: every bridge on the node.
    ///
    /// # Errors
    /// As [`AsteriskNode::get`].
    pub async fn bridges(&self) -> Result<Vec<Value>, Error> {
        Ok(as_list(self.get("bridges").await?))
    }

    /// `DELETE /ari/channels/<id>`: hangs a channel up (Asterisk sends BYE).
    /// Returns the HTTP status.
    ///
    /// # Errors
    /// [`Error::Http`] when the node does not answer.
    pub async fn hangup(&self, channel: &str) -> Result<u16, Error> {
        let url = format!("{}/ari/channels/{channel}", self.ari_url());
        let resp = self
            .http
            .delete(&url)
            .basic_auth(render::ARI_USER, Some(render::ARI_PASSWORD))
            .send()
            .await
            .map_err(|source| Error::Http {
                what: format!("DELETE {url}"),
                source,
            })?;
        Ok(resp.status().as_u16())
    }

    /// `POST /ari/<path>` with `query`; the HTTP status and the body (JSON
    /// or `null`).
    ///
    /// # Errors
    /// [`Error::Http`] when the node does not answer.
    pub async fn post(&self, path: &str, query: &[(&str, &str)]) -> Result<(u16, Value), Error> {
        let url = format!("{}/ari/{path}", self.ari_url());
        let resp = self
            .http
            .post(&url)
            .basic_auth(render::ARI_USER, Some(render::ARI_PASSWORD))
            .query(query)
            .send()
            .await
            .map_err(|source| Error::Http {
                what: format!("POST {url}"),
                source,
            })?;
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// The `ws://` URL of the ARI event websocket for `app`, with the
    /// shipped ARI user's credentials in `api_key`.
    pub fn events_url(&self, app: &str, subscribe_all: bool) -> String {
        format!(
            "ws://{}:{}/ari/events?app={app}&subscribeAll={subscribe_all}&api_key={}:{}",
            self.addrs.bind,
            self.addrs.http_port,
            render::ARI_USER,
            render::ARI_PASSWORD
        )
    }

    /// The node's `log/messages.log` (notices, warnings, errors and
    /// verbose level 3: every dialplan `Executing` line).
    pub fn messages_log(&self) -> PathBuf {
        self.dir.join("log/messages.log")
    }

    /// Opens an ARI event websocket for `app` as the shipped ARI user (what
    /// corral does, for tests that play the app themselves).
    ///
    /// # Errors
    /// [`Error::Start`] when the websocket cannot be opened.
    pub async fn connect_app(&self, app: &str) -> Result<AppSocket, Error> {
        let url = format!(
            "ws://{}:{}/ari/events?app={app}&api_key={}:{}",
            self.addrs.bind,
            self.addrs.http_port,
            render::ARI_USER,
            render::ARI_PASSWORD
        );
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .map_err(|e| Error::Start {
                what: format!("ARI websocket for {app} on {}", self.addrs.id),
                detail: e.to_string(),
            })?;
        Ok(AppSocket { ws })
    }

    /// Runs one CLI command against the node (`asterisk -rx`).
    ///
    /// # Errors
    /// [`Error::Io`] when the binary cannot be run.
    pub fn rx(&self, command: &str) -> Result<String, Error> {
        let mut cmd = Command::new(&self.install.binary);
        cmd.arg("-C")
            .arg(self.dir.join("etc/asterisk.conf"))
            .args(["-rx", command]);
        let out = cmd.output().map_err(Error::io("running asterisk -rx"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A crash: SIGKILL, no clean shutdown, no SIP goodbyes.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
        self.paused = false;
    }

    /// Freezes the node (SIGSTOP): its sockets stay open and nothing answers.
    pub fn pause(&mut self) {
        if let Some(p) = &self.process {
            p.pause();
            self.paused = true;
        }
    }

    /// Thaws a paused node (SIGCONT).
    pub fn resume(&mut self) {
        if let Some(p) = &self.process {
            p.resume();
        }
        self.paused = false;
    }

    /// Running and not paused: its ARI can answer.
    pub fn is_answering(&self) -> bool {
        self.process.is_some() && !self.paused
    }

    /// Starts the node again on the same ports and directory (after a kill
    /// or a stop): a new incarnation, with a new start time. Returns once
    /// its ARI answers.
    ///
    /// # Errors
    /// As [`AsteriskNode::start`].
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.kill();
        self.spawn().await
    }

    /// A clean stop (SIGTERM).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(10));
        }
    }
}

/// An ARI event websocket held by a test playing the app.
#[derive(Debug)]
pub struct AppSocket {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl AppSocket {
    /// The next event, or `None` when none came within `deadline` or the
    /// socket closed.
    pub async fn next(&mut self, deadline: Duration) -> Option<Value> {
        use futures_util::StreamExt;
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let msg = tokio::time::timeout_at(until, self.ws.next())
                .await
                .ok()??
                .ok()?;
            if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
                return serde_json::from_str(t.as_str()).ok();
            }
        }
    }

    /// The next event of `kind` (`StasisStart`, ...), skipping others; `None`
    /// when none came within `deadline`.
    pub async fn next_of(&mut self, kind: &str, deadline: Duration) -> Option<Value> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            let ev = self.next(left).await?;
            if ev["type"] == kind {
                return Some(ev);
            }
        }
    }

    /// Closes the socket (the app stops being served on the node).
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

fn as_list(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        _ => Vec::new(),
    }
}

/// Writes the node's `etc/`: the shipped files rendered, and the few files
/// the shipped set leaves to the operator's install (modules, logger, music
/// on hold, RTP range, CDR off).
fn write_config(
    install: &Install,
    dir: &Path,
    addrs: &NodeAddrs,
    proxy_addr: &str,
    phone: &str,
    extensions: &str,
) -> Result<(), Error> {
    for sub in ["etc", "log", "run", "lib", "spool", "cache", "keys"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(Error::io(format!("creating {}", d.display())))?;
    }
    let (rtp_start, rtp_end) = super::rtp_range();
    let moh = match &install.tree {
        Some(tree) => tree.join("moh").display().to_string(),
        None => "moh".to_string(),
    };
    let files = [
        ("asterisk.conf", render::asterisk_conf(addrs, &install.directories(dir))?),
        ("extensions.conf", extensions.to_string()),
        ("pjsip.conf", render::pjsip_conf(addrs, proxy_addr, phone)?),
        ("http.conf", render::http_conf(addrs)?),
        ("ari.conf", render::ARI_CONF.to_string()),
        // Not shipped by corral: what an operator's install already has.
        ("modules.conf", "[modules]\nautoload = yes\nnoload = chan_websocket.so\n".to_string()),
        (
            "logger.conf",
            "[general]\ndateformat = %F %T.%3q\n[logfiles]\nmessages.log => notice,warning,error,verbose(3)\n"
                .to_string(),
        ),
        (
            "musiconhold.conf",
            format!("[general]\n[default]\nmode = files\ndirectory = {moh}\nsort = alpha\n"),
        ),
        (
            "rtp.conf",
            format!("[general]\nrtpstart = {rtp_start}\nrtpend = {rtp_end}\nstrictrtp = no\n"),
        ),
        ("cdr.conf", "[general]\nenable = no\n".to_string()),
        ("cel.conf", "[general]\nenable = no\n".to_string()),
        ("manager.conf", "[general]\nenabled = no\n".to_string()),
        ("indications.conf", "[general]\ncountry = us\n[us]\ndescription = United States\nringcadence = 2000,4000\ndial = 350+440\nbusy = 480+620/500,0/500\nring = 440+480/2000,0/4000\ncongestion = 480+620/250,0/250\n".to_string()),
    ];
    for (name, text) in files {
        let path = dir.join("etc").join(name);
        std::fs::write(&path, text).map_err(Error::io(format!("writing {}", path.display())))?;
    }
    Ok(())
}
