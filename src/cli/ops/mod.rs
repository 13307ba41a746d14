//! Operator commands against a running corral's HTTP API: `rooms`, `room`,
//! `nodes`, `drain [--wait]`, `undrain`, `watch`, `queues`, `queue NAME
//! [add|remove|pause|unpause]`.
//!
//! They only speak the public API (the same routes and JSON as any client),
//! so they work against any replica. The address comes from `--api` or
//! `CORRAL_API_URL` (default `http://127.0.0.1:8088`), the bearer token from
//! `--token` or `CORRAL_API_TOKEN` (needed for drain, undrain and queue
//! member changes when the server has one). Tables for people; `--json`
//! prints the API's JSON.
//!
//! One file per job: [`rooms`] (the room map), [`nodes`] (nodes, drain),
//! [`queues`] (queues and their members), [`watch`] (the event stream);
//! this file has the connection and the HTTP client they share.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;
use serde_json::Value;

mod nodes;
mod queues;
mod rooms;
mod watch;

pub use nodes::{DrainArgs, NodesArgs, UndrainArgs, drain, nodes, undrain};
pub use queues::{QueueAction, QueueArgs, QueuesArgs, queue, queues};
pub use rooms::{RoomArgs, RoomsArgs, room, rooms};
pub use watch::{WatchArgs, watch};

/// Where the API is and how to talk to it (shared by every ops command).
/// Global: the flags may also follow a sub-command (`corral queue sales
/// pause amy --token T`).
#[derive(Clone, clap::Args)]
pub struct Conn {
    /// The corral API's base URL.
    #[arg(
        long,
        global = true,
        env = "CORRAL_API_URL",
        default_value = "http://127.0.0.1:8088"
    )]
    pub api: String,
    /// Bearer token for routes that change state.
    #[arg(long, global = true, env = "CORRAL_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON (for scripts) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("api", &self.api)
            .field("token", &self.token.as_ref().map(|_| "set"))
            .field("json", &self.json)
            .finish()
    }
}

/// A thin client of the API.
pub(super) struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(conn: &Conn) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()?,
            base: conn.api.trim_end_matches('/').to_owned(),
            token: conn.token.clone(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(10));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<T> {
        let (_, body) = send_checked(&self.base, path, self.request(method, path)).await?;
        serde_json::from_value(body).with_context(|| format!("{path}: unexpected answer"))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(reqwest::Method::GET, path).await
    }
}

/// Sends `req` and fails with the API's error code and message (the
/// token hint for `unauthorized`) on a non-2xx; returns the JSON body
/// (`null` for an empty one).
pub(super) async fn send_checked(
    base: &str,
    path: &str,
    req: reqwest::RequestBuilder,
) -> anyhow::Result<(reqwest::StatusCode, Value)> {
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach the corral API at {base}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let code = body["error"]["code"].as_str().unwrap_or("error");
        let msg = body["error"]["message"].as_str().unwrap_or("");
        let hint = if code == "unauthorized" {
            " (pass --token or set CORRAL_API_TOKEN)"
        } else {
            ""
        };
        bail!("{path}: {status}: {code}: {msg}{hint}");
    }
    Ok((status, body))
}

pub(super) fn enc(s: &str) -> String {
    // Path segments and query values: percent-encode everything but the
    // unreserved characters.
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
