//! One real Kamailio in front of the testbed's nodes, running the shipped
//! `deploy/kamailio/kamailio.cfg` with its listen address, the path of its
//! dispatcher list and corral's API address (route ahead) filled in.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::render::{self, NodeAddrs};
use super::{Error, Process};

/// How long Kamailio may take to listen.
pub const START_DEADLINE: Duration = Duration::from_secs(15);

/// A running Kamailio.
#[derive(Debug)]
pub struct Kamailio {
    port: u16,
    dir: PathBuf,
    process: Option<Process>,
}

impl Kamailio {
    /// `kamailio -c` on the rendered config: Kamailio's own check.
    ///
    /// # Errors
    /// [`Error::Start`] with Kamailio's output when the check fails.
    pub fn check(
        dir: &Path,
        nodes: &[NodeAddrs],
        port: u16,
        corral_api: &str,
    ) -> Result<String, Error> {
        let cfg = write_config(dir, nodes, port, corral_api)?;
        let bin = kamailio_binary()?;
        let out = Command::new(bin)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .map_err(Error::io("running kamailio -c"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(Error::Start {
                what: "kamailio -c".into(),
                detail: text,
            })
        }
    }

    /// Starts Kamailio on `127.0.0.1:port` with `nodes` as the farm,
    /// asking corral's API at `corral_api` (`host:port`; it need not be up:
    /// without an answer the proxy dispatches round-robin); returns once
    /// it answers an OPTIONS.
    ///
    /// # Errors
    /// Rendering or starting failed, or it did not answer in time.
    pub async fn start(
        dir: &Path,
        nodes: &[NodeAddrs],
        port: u16,
        corral_api: &str,
    ) -> Result<Self, Error> {
        let cfg = write_config(dir, nodes, port, corral_api)?;
        let bin = kamailio_binary()?;
        let mut cmd = Command::new(bin);
        // -DD: stay in the foreground (the pid we hold is the main process);
        // -E: log to stderr (our log file); -w: working directory.
        cmd.args(["-DD", "-E", "-f"])
            .arg(&cfg)
            .arg("-w")
            .arg(dir)
            .args(["-Y"])
            .arg(dir);
        let mut process = Process::spawn("kamailio", cmd, &dir.join("kamailio.log"))?;
        let until = tokio::time::Instant::now() + START_DEADLINE;
        let mut pause = Duration::from_millis(20);
        loop {
            if options_answered(port).await {
                return Ok(Self {
                    port,
                    dir: dir.to_path_buf(),
                    process: Some(process),
                });
            }
            if process.exited().is_some() || tokio::time::Instant::now() >= until {
                return Err(Error::Start {
                    what: "kamailio".into(),
                    detail: format!(
                        "not answering on 127.0.0.1:{port}; log:\n{}",
                        process.log_tail(30)
                    ),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// `127.0.0.1:<port>`: where callers send INVITEs.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its SIP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its log (the `xlog` lines of the config among them).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kamailio.log")).unwrap_or_default()
    }

    /// Stops it (SIGTERM to its process group).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(5));
        }
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.stop();
    }
}

fn kamailio_binary() -> Result<PathBuf, Error> {
    super::which("kamailio")
        .or_else(|| {
            ["/usr/sbin/kamailio", "/usr/local/sbin/kamailio"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        })
        .ok_or_else(|| Error::Missing {
            program: "kamailio".into(),
            fix: "install Kamailio 5.6 or later with the dispatcher and http_client \
                  modules (Debian: apt-get install kamailio kamailio-utils-modules); \
                  .ci/test does"
                .into(),
        })
}

fn write_config(
    dir: &Path,
    nodes: &[NodeAddrs],
    port: u16,
    corral_api: &str,
) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    let list = dir.join("dispatcher.list");
    std::fs::write(&list, render::dispatcher_list(nodes)?)
        .map_err(Error::io(format!("writing {}", list.display())))?;
    let cfg = dir.join("kamailio.cfg");
    let text = render::kamailio_cfg("127.0.0.1", port, &list.display().to_string(), corral_api)?;
    std::fs::write(&cfg, text).map_err(Error::io(format!("writing {}", cfg.display())))?;
    Ok(cfg)
}

/// Sends one OPTIONS to the proxy itself and waits briefly for any answer.
async fn options_answered(port: u16) -> bool {
    let Ok(sock) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
        return false;
    };
    let local = match sock.local_addr() {
        Ok(a) => a,
        Err(_) => return false,
    };
    let msg = format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-corral-{n}\r\n\
         From: <sip:probe@{local}>;tag=probe\r\n\
         To: <sip:127.0.0.1:{port}>\r\n\
         Call-ID: corral-probe-{n}@127.0.0.1\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        n = rand::random::<u32>()
    );
    if sock
        .send_to(msg.as_bytes(), ("127.0.0.1", port))
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 2048];
    matches!(
        tokio::time::timeout(Duration::from_millis(300), sock.recv(&mut buf)).await,
        Ok(Ok(n)) if buf[..n].starts_with(b"SIP/2.0")
    )
}
