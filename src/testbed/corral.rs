//! `corral serve` as an operator runs it: the real binary on the shipped
//! `deploy/corral.toml` with its nodes filled in, secrets and the store
//! from the environment.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::render::{self, NodeAddrs};
use super::{Error, Process};

/// How long corral may take to serve its API.
pub const START_DEADLINE: Duration = Duration::from_secs(15);

/// A running `corral serve`.
#[derive(Debug)]
pub struct CorralProcess {
    binary: PathBuf,
    dir: PathBuf,
    config: PathBuf,
    env: Vec<(String, String)>,
    api: String,
    process: Option<Process>,
    http: reqwest::Client,
}

impl CorralProcess {
    /// Renders the config for `nodes` into `dir` and starts `binary serve`
    /// on it, on the memory store (`redis_url` `None`) or that Redis; `env`
    /// adds `CORRAL_*` overrides. Returns once `/healthz` answers.
    ///
    /// # Errors
    /// Rendering or starting failed, or the API did not answer in time.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        nodes: &[NodeAddrs],
        redis_url: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        // Where the API listens: CORRAL_API_LISTEN when given, as it
        // overrides the file; else a free port.
        let api = match env.iter().find(|(k, _)| *k == "CORRAL_API_LISTEN") {
            Some((_, v)) => v.to_string(),
            None => format!("127.0.0.1:{}", super::free_port()?),
        };
        let config = dir.join("corral.toml");
        std::fs::write(&config, render::corral_toml(nodes, &api)?)
            .map_err(Error::io(format!("writing {}", config.display())))?;
        let mut all: Vec<(String, String)> = vec![(
            "CORRAL_STORE_REDIS_URL".into(),
            redis_url.unwrap_or_default().to_string(),
        )];
        for n in nodes {
            all.push((
                format!("CORRAL_NODE_{}_PASSWORD", n.id.to_uppercase()),
                render::ARI_PASSWORD.into(),
            ));
        }
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let http = super::http_client()?;
        let mut me = Self {
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            config,
            env: all,
            api,
            process: None,
            http,
        };
        me.spawn().await?;
        Ok(me)
    }

    async fn spawn(&mut self) -> Result<(), Error> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("serve").arg("--config").arg(&self.config);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut process = Process::spawn("corral serve", cmd, &self.dir.join("corral.log"))?;
        let until = tokio::time::Instant::now() + START_DEADLINE;
        let mut pause = Duration::from_millis(10);
        loop {
            let ok = self
                .http
                .get(format!("{}/healthz", self.url()))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                self.process = Some(process);
                return Ok(());
            }
            if process.exited().is_some() || tokio::time::Instant::now() >= until {
                return Err(Error::Start {
                    what: "corral serve".into(),
                    detail: format!(
                        "no /healthz on {}; log:\n{}",
                        self.api,
                        process.log_tail(30)
                    ),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:<port>`: corral's API.
    pub fn url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// The process id (also its process group's), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Process::pid)
    }

    /// The rendered config file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("corral.log")).unwrap_or_default()
    }

    /// `GET <path>` on the API as JSON.
    ///
    /// # Errors
    /// [`Error::Http`] when it does not answer with JSON.
    pub async fn get(&self, path: &str) -> Result<serde_json::Value, Error> {
        let (what, r) = self.send_get(path).await?;
        r.json()
            .await
            .map_err(|source| Error::Http { what, source })
    }

    /// `GET /metrics`: the text exposition.
    ///
    /// # Errors
    /// [`Error::Http`] when it does not answer.
    pub async fn metrics(&self) -> Result<String, Error> {
        let (what, r) = self.send_get("/metrics").await?;
        r.text()
            .await
            .map_err(|source| Error::Http { what, source })
    }

    async fn send_get(&self, path: &str) -> Result<(String, reqwest::Response), Error> {
        let url = format!("{}{path}", self.url());
        let what = format!("GET {url}");
        match self.http.get(&url).send().await {
            Ok(r) => Ok((what, r)),
            Err(source) => Err(Error::Http { what, source }),
        }
    }

    /// The sum of every sample of a metric whose line starts with `prefix`
    /// (a name, optionally with the start of its labels).
    ///
    /// # Errors
    /// As [`CorralProcess::metrics`].
    pub async fn metric_sum(&self, prefix: &str) -> Result<f64, Error> {
        Ok(self
            .metrics()
            .await?
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// A graceful stop (SIGTERM): corral hands its nodes back and hangs up
    /// no call.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(15));
        }
    }

    /// A crash (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Sets (`Some`) or removes (`None`) a variable of its environment
    /// for its next start ([`CorralProcess::restart`]).
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_string(), v.to_string()));
        }
    }

    /// Starts it again with the same config and environment.
    ///
    /// # Errors
    /// As [`CorralProcess::start`].
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.stop();
        self.spawn().await
    }
}
