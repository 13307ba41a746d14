//! Typed ARI REST calls, each documented with the statuses Asterisk 22 can
//! answer and what they mean for corral (ARCHITECTURE.md, *ARI facts*).
//! Ids corral sends are newtypes ([`ChannelId`],
//! [`BridgeId`]); ids read back from ARI stay strings until corral acts on
//! them, so one odd id can never fail a whole listing.
//!
//! Only the fields corral reads are modelled; unknown fields are ignored so
//! a newer Asterisk does not break the client.

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{AriNode, Error};
use crate::domain::{BridgeId, ChannelId};

/// Caller id as ARI shows it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct CallerId {
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Number.
    #[serde(default)]
    pub number: String,
}

/// Where a channel is in the dialplan.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Dialplan {
    /// Context.
    #[serde(default)]
    pub context: String,
    /// Extension: for a call that arrived by redirect, the token.
    #[serde(default)]
    pub exten: String,
    /// Priority.
    #[serde(default)]
    pub priority: i64,
    /// The application running (`Stasis`), ≥ 16.4.
    #[serde(default)]
    pub app_name: Option<String>,
    /// Its data (`corral,conference,sales`), ≥ 16.4.
    #[serde(default)]
    pub app_data: Option<String>,
}

/// A channel, as far as corral reads it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Channel {
    /// Unique per node only.
    pub id: String,
    /// `PJSIP/endpoint-0000001a`.
    #[serde(default)]
    pub name: String,
    /// `Ring`, `Up`, `Down`, ...
    #[serde(default)]
    pub state: String,
    /// The SIP Call-ID.
    #[serde(default)]
    pub protocol_id: String,
    /// Caller id.
    #[serde(default)]
    pub caller: CallerId,
    /// Dialplan location.
    #[serde(default)]
    pub dialplan: Dialplan,
}

impl Channel {
    /// The technology part of the name (`PJSIP`).
    pub fn tech(&self) -> &str {
        self.name.split('/').next().unwrap_or("")
    }
}

/// A bridge, as far as corral reads it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Bridge {
    /// Bridge id.
    pub id: String,
    /// `mixing` or `holding`.
    #[serde(default)]
    pub bridge_type: String,
    /// `stasis` for bridges made over ARI.
    #[serde(default)]
    pub bridge_class: String,
    /// The name given at creation (`corral:conference:sales`).
    #[serde(default)]
    pub name: String,
    /// Channel ids in the bridge.
    #[serde(default)]
    pub channels: Vec<String>,
}

/// `GET /asterisk/info`, the parts corral reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AsteriskInfo {
    /// Version and entity id.
    #[serde(default)]
    pub system: Option<SystemInfo>,
    /// Start time.
    #[serde(default)]
    pub status: Option<StatusInfo>,
}

/// `system` of `GET /asterisk/info`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SystemInfo {
    /// Asterisk version.
    #[serde(default)]
    pub version: String,
    /// The EID: the node's `asterisk_id`.
    #[serde(default)]
    pub entity_id: String,
}

/// `status` of `GET /asterisk/info`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StatusInfo {
    /// When this Asterisk process started: with the EID, its incarnation.
    #[serde(default)]
    pub startup_time: String,
}

/// `GET /asterisk/ping`.
#[derive(Debug, Clone, Deserialize)]
pub struct Ping {
    /// The node's EID.
    #[serde(default)]
    pub asterisk_id: String,
}

/// `GET /applications/{app}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Application {
    /// App name.
    pub name: String,
    /// Channels subscribed.
    #[serde(default)]
    pub channel_ids: Vec<String>,
    /// Bridges subscribed.
    #[serde(default)]
    pub bridge_ids: Vec<String>,
}

/// The kind of bridge to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeType {
    /// Everyone hears everyone: a conference, or a queue's caller-agent pair.
    Mixing,
    /// Participants hear music on hold: a queue's waiting callers.
    Holding,
}

impl BridgeType {
    fn as_str(self) -> &'static str {
        match self {
            BridgeType::Mixing => "mixing",
            BridgeType::Holding => "holding",
        }
    }
}

/// The answer to a create-with-id: made now, or there already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The bridge was created by this call.
    New(Bridge),
    /// A bridge with that id already existed (409).
    Exists,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: String,
}

impl AriNode {
    async fn call<T: DeserializeOwned>(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, Error> {
        let resp = self.send(op, method, path, query).await?;
        let bytes = resp.bytes().await.map_err(|source| Error::Transport {
            node: self.node().clone(),
            op,
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            node: self.node().clone(),
            op,
            detail: e.to_string(),
        })
    }

    /// A call answered by 204 (or any 2xx) with nothing corral reads.
    async fn call_void(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<(), Error> {
        self.send(op, method, path, query).await.map(drop)
    }

    async fn send(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<reqwest::Response, Error> {
        let cfg = self.config();
        let url = format!("{}{}", self.inner.ari, path);
        let started = std::time::Instant::now();
        let result = self
            .inner
            .http
            .request(method, url)
            .basic_auth(&cfg.username, Some(&cfg.password))
            .query(query)
            .send()
            .await;
        self.inner
            .metrics
            .ari_latency(self.node(), started.elapsed());
        let resp = result.map_err(|source| Error::Transport {
            node: self.node().clone(),
            op,
            source,
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
        Err(Error::Status {
            node: self.node().clone(),
            op,
            status: status.as_u16(),
            message,
        })
    }

    /// `GET /asterisk/info`: version, EID and start time (the incarnation).
    pub async fn info(&self) -> Result<AsteriskInfo, Error> {
        self.call("info", Method::GET, "/asterisk/info", &[]).await
    }

    /// `GET /asterisk/ping`: the cheap liveness probe (Asterisk ≥ 13.25).
    pub async fn ping(&self) -> Result<Ping, Error> {
        self.call("ping", Method::GET, "/asterisk/ping", &[]).await
    }

    /// `GET /channels`: every channel on the node (resync after reconnect).
    pub async fn channels(&self) -> Result<Vec<Channel>, Error> {
        self.call("channels", Method::GET, "/channels", &[]).await
    }

    /// `GET /channels/{id}`. 404: no such channel.
    pub async fn channel(&self, id: &ChannelId) -> Result<Channel, Error> {
        self.call(
            "channel",
            Method::GET,
            &format!("/channels/{}", enc(id.as_str())),
            &[],
        )
        .await
    }

    /// `POST /channels/{id}/answer`, synchronous. 404 gone, 409 not in
    /// Stasis, 412 wrong state. Answering commits the call to this node: a
    /// later redirect would be a REFER.
    pub async fn answer(&self, id: &ChannelId) -> Result<(), Error> {
        self.call_void(
            "answer",
            Method::POST,
            &format!("/channels/{}/answer", enc(id.as_str())),
            &[],
        )
        .await
    }

    /// `POST /channels/{id}/ring`: 180 to the caller; the state stays
    /// `Ring`, so a later redirect is still a 302.
    pub async fn ring(&self, id: &ChannelId) -> Result<(), Error> {
        self.call_void(
            "ring",
            Method::POST,
            &format!("/channels/{}/ring", enc(id.as_str())),
            &[],
        )
        .await
    }

    /// `DELETE /channels/{id}`: hang up. corral calls this only when a call
    /// must end (a queue's treatment), never because corral stops.
    pub async fn hangup(&self, id: &ChannelId, reason: &str) -> Result<(), Error> {
        self.call_void(
            "hangup",
            Method::DELETE,
            &format!("/channels/{}", enc(id.as_str())),
            &[("reason", reason)],
        )
        .await
    }

    /// `POST /channels/{id}/redirect?endpoint=...`. Checks run 404 (no
    /// channel) → 409 (not in Stasis) → 412 (outbound, not answered) → 400
    /// (no endpoint) → 422 (not `tech/resource`, or another tech). A 204 only
    /// means "queued": the move is confirmed when the token arrives.
    pub async fn redirect(&self, id: &ChannelId, endpoint: &str) -> Result<(), Error> {
        self.call_void(
            "redirect",
            Method::POST,
            &format!("/channels/{}/redirect", enc(id.as_str())),
            &[("endpoint", endpoint)],
        )
        .await
    }

    /// `POST /channels/{id}/continue`: leave Stasis and continue in the
    /// dialplan (at `context`/`extension`/`priority` if given). 404, 409, 412.
    pub async fn continue_in_dialplan(
        &self,
        id: &ChannelId,
        context: Option<&str>,
        extension: Option<&str>,
        priority: Option<u32>,
    ) -> Result<(), Error> {
        let prio = priority.map(|p| p.to_string());
        let mut q: Vec<(&str, &str)> = Vec::new();
        if let Some(c) = context {
            q.push(("context", c));
        }
        if let Some(e) = extension {
            q.push(("extension", e));
        }
        if let Some(p) = prio.as_deref() {
            q.push(("priority", p));
        }
        self.call_void(
            "continue",
            Method::POST,
            &format!("/channels/{}/continue", enc(id.as_str())),
            &q,
        )
        .await
    }

    /// `POST /channels/{id}/moh`: music on hold to one channel. 404/409/412.
    pub async fn start_moh(&self, id: &ChannelId, class: Option<&str>) -> Result<(), Error> {
        let q: Vec<(&str, &str)> = class.map(|c| vec![("mohClass", c)]).unwrap_or_default();
        self.call_void(
            "startMoh",
            Method::POST,
            &format!("/channels/{}/moh", enc(id.as_str())),
            &q,
        )
        .await
    }

    /// `DELETE /channels/{id}/moh`.
    pub async fn stop_moh(&self, id: &ChannelId) -> Result<(), Error> {
        self.call_void(
            "stopMoh",
            Method::DELETE,
            &format!("/channels/{}/moh", enc(id.as_str())),
            &[],
        )
        .await
    }

    /// `POST /channels/{channelId}` (originateWithId) into `app` with
    /// `app_args`: an outbound call (a queue's static member). 400 bad
    /// endpoint, 409 id in use. Its events arrive because ARI created it.
    pub async fn originate(
        &self,
        channel_id: &ChannelId,
        endpoint: &str,
        app_args: &str,
        caller_id: Option<&str>,
        timeout_secs: u32,
    ) -> Result<Channel, Error> {
        let timeout = timeout_secs.to_string();
        let app = self.config().app.clone();
        let mut q = vec![
            ("endpoint", endpoint),
            ("app", app.as_str()),
            ("appArgs", app_args),
            ("timeout", timeout.as_str()),
        ];
        if let Some(c) = caller_id {
            q.push(("callerId", c));
        }
        self.call(
            "originate",
            Method::POST,
            &format!("/channels/{}", enc(channel_id.as_str())),
            &q,
        )
        .await
    }

    /// `GET /bridges`: every bridge on the node.
    pub async fn bridges(&self) -> Result<Vec<Bridge>, Error> {
        self.call("bridges", Method::GET, "/bridges", &[]).await
    }

    /// `GET /bridges/{id}`. 404: no such bridge.
    pub async fn bridge(&self, id: &BridgeId) -> Result<Bridge, Error> {
        self.call(
            "bridge",
            Method::GET,
            &format!("/bridges/{}", enc(id.as_str())),
            &[],
        )
        .await
    }

    /// `POST /bridges/{id}` (createWithId). A 409 means the id is taken:
    /// with corral's deterministic ids, the bridge is already there.
    pub async fn create_bridge(
        &self,
        id: &BridgeId,
        kind: BridgeType,
        name: &str,
    ) -> Result<Created, Error> {
        match self
            .call::<Bridge>(
                "createBridge",
                Method::POST,
                &format!("/bridges/{}", enc(id.as_str())),
                &[("type", kind.as_str()), ("name", name)],
            )
            .await
        {
            Ok(b) => Ok(Created::New(b)),
            Err(e) if e.status() == Some(StatusCode::CONFLICT.as_u16()) => Ok(Created::Exists),
            Err(e) => Err(e),
        }
    }

    /// `DELETE /bridges/{id}`: channels inside stay in Stasis, not hung up.
    /// 404 unknown, 409 not a Stasis bridge.
    pub async fn destroy_bridge(&self, id: &BridgeId) -> Result<(), Error> {
        self.call_void(
            "destroyBridge",
            Method::DELETE,
            &format!("/bridges/{}", enc(id.as_str())),
            &[],
        )
        .await
    }

    /// `POST /bridges/{id}/addChannel`, synchronous. 404 bridge unknown, 400
    /// channel unknown, 422 channel not in Stasis, 409 not a Stasis bridge.
    pub async fn add_channel(
        &self,
        bridge: &BridgeId,
        channel: &ChannelId,
        role: Option<&str>,
    ) -> Result<(), Error> {
        let mut q = vec![("channel", channel.as_str())];
        if let Some(r) = role {
            q.push(("role", r));
        }
        self.call_void(
            "addChannel",
            Method::POST,
            &format!("/bridges/{}/addChannel", enc(bridge.as_str())),
            &q,
        )
        .await
    }

    /// `POST /bridges/{id}/removeChannel`. 422: not in this bridge.
    pub async fn remove_channel(
        &self,
        bridge: &BridgeId,
        channel: &ChannelId,
    ) -> Result<(), Error> {
        self.call_void(
            "removeChannel",
            Method::POST,
            &format!("/bridges/{}/removeChannel", enc(bridge.as_str())),
            &[("channel", channel.as_str())],
        )
        .await
    }

    /// `POST /bridges/{id}/moh`: music on hold to the whole bridge.
    pub async fn bridge_start_moh(
        &self,
        bridge: &BridgeId,
        class: Option<&str>,
    ) -> Result<(), Error> {
        let q: Vec<(&str, &str)> = class.map(|c| vec![("mohClass", c)]).unwrap_or_default();
        self.call_void(
            "bridgeStartMoh",
            Method::POST,
            &format!("/bridges/{}/moh", enc(bridge.as_str())),
            &q,
        )
        .await
    }

    /// `GET /applications/{app}`: is corral's app registered, and what it
    /// is subscribed to.
    pub async fn application(&self) -> Result<Application, Error> {
        let app = self.config().app.clone();
        self.call(
            "application",
            Method::GET,
            &format!("/applications/{}", enc(&app)),
            &[],
        )
        .await
    }
}

/// Percent-encodes one path segment. Ids from ARI are plain, but a channel
/// id read from the network must never be able to change the path.
fn enc(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_cannot_escape() {
        assert_eq!(enc("1767268800.42"), "1767268800.42");
        assert_eq!(enc("../x/y?z"), "..%2Fx%2Fy%3Fz");
    }

    #[test]
    fn channel_decodes_with_unknown_fields() {
        let c: Channel = serde_json::from_str(
            r#"{"id":"1.2","name":"PJSIP/kam-0001","state":"Ring","caller":{"name":"A","number":"100"},
                "dialplan":{"context":"from-proxy","exten":"tok","priority":1},"new_field":[1]}"#,
        )
        .unwrap();
        assert_eq!(c.tech(), "PJSIP");
        assert_eq!(c.dialplan.exten, "tok");
    }
}
