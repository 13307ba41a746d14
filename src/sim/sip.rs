//! The simulated SIP side of a node: what a redirect does after its 204
//! (302 for a ringing channel, REFER for an answered one), the upstream
//! proxy's answer to a 302, and the far ends of originated channels.
//!
//! A node's SIP host is its HTTP listen address: "sending an INVITE to
//! `sip:USER@HOST:PORT`" is a real `POST http://HOST:PORT/sim/calls` with
//! `exten = USER` and the call's call id (the SIP Call-ID, kept across the
//! proxy's new branch).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::model::{AfterAnswer, chan_state};
use super::state::{Hangup, Shared};
use super::{EndpointScript, On302, OnRefer, bump, pbx};

/// Where a SIP URI points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SipTarget {
    /// The user part (`s` when empty), user options cut at `;`.
    pub(crate) user: String,
    /// `HOST:PORT` (port 5060 when absent).
    pub(crate) hostport: String,
}

/// Parses a redirect resource as pjsip would a name-addr: `sip:` or `sips:`
/// (any case), optional angle brackets, URI parameters ignored. `None` when
/// it is not a SIP URI (e.g. `tok@host` without `sip:`): no 302 is sent.
pub(crate) fn parse_sip_uri(resource: &str) -> Option<SipTarget> {
    let r = resource.trim();
    let r = r.strip_prefix('<').unwrap_or(r);
    let r = r.split('>').next().unwrap_or(r);
    let lower = r.to_ascii_lowercase();
    let rest = if lower.starts_with("sip:") {
        &r[4..]
    } else if lower.starts_with("sips:") {
        &r[5..]
    } else {
        return None;
    };
    let (user, host) = match rest.rsplit_once('@') {
        Some((u, h)) => (u, h),
        None => ("", rest),
    };
    let user = user.split(';').next().unwrap_or("");
    let host = host.split([';', '?']).next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    let hostport = if host.starts_with('[') {
        if host.contains("]:") {
            host.to_string()
        } else {
            format!("{host}:5060")
        }
    } else if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5060")
    };
    Some(SipTarget {
        user: if user.is_empty() {
            "s".into()
        } else {
            user.into()
        },
        hostport,
    })
}

/// The SIP status of a call that `POST /sim/calls` created (`created`, its
/// 201 body) but whose dialplan refused it unanswered with a 408 or 5xx
/// (e.g. the shipped fallback's 503 when `Stasis()` failed): what the
/// shipped `kamailio.cfg` fails over on. `None`: the node kept the call.
pub(crate) fn refused_for_failover(created: &serde_json::Value) -> Option<u64> {
    let sip = created["sip_status"].as_u64().unwrap_or(0);
    (created["stasis"] == "failed" && created["answered"] != true && (sip == 408 || sip >= 500))
        .then_some(sip)
}

/// What came of an INVITE sent to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Invited {
    /// The node created a channel and kept it (in Stasis, or answered).
    Taken,
    /// Refused in a way the proxy fails over on: no answer, or a 408 or
    /// 5xx (from the node, or from its dialplan before answering).
    Retry,
    /// Refused for good (404, 484, 403, a 6xx...).
    Refused,
}

/// Sends the INVITE of a followed 302 or an accepted REFER: `true` when the
/// destination created a channel (201).
async fn invite(sh: &Shared, target: &SipTarget, caller: &str, call_id: &str) -> bool {
    send_invite(sh, &target.hostport, &target.user, caller, call_id).await == Invited::Taken
}

/// Follows a 302 as the shipped `kamailio.cfg` does: to the node it names,
/// and when that node refuses it with a 408 or 5xx, on to the next node of
/// [`super::Upstream::failover`] (the same user part: a token there is
/// re-resolved by corral).
async fn follow_302(
    sh: &Shared,
    target: &SipTarget,
    failover: &[String],
    caller: &str,
    call_id: &str,
) -> bool {
    let mut tried = vec![target.hostport.as_str()];
    let mut next = Some(target.hostport.as_str());
    while let Some(host) = next {
        match send_invite(sh, host, &target.user, caller, call_id).await {
            Invited::Taken => return true,
            Invited::Refused => return false,
            Invited::Retry => {}
        }
        next = failover
            .iter()
            .map(String::as_str)
            .find(|h| !tried.contains(h));
        if let Some(h) = next {
            tried.push(h);
        }
    }
    false
}

async fn send_invite(
    sh: &Shared,
    hostport: &str,
    user: &str,
    caller: &str,
    call_id: &str,
) -> Invited {
    let url = format!("http://{hostport}/sim/calls");
    let body = json!({"exten": user, "caller": caller, "call_id": call_id});
    match sh.common.http.post(&url).json(&body).send().await {
        Ok(resp) if resp.status().as_u16() == 201 => {
            let v: serde_json::Value = resp.json().await.unwrap_or_default();
            if let Some(sip) = refused_for_failover(&v) {
                tracing::debug!(node = %sh.common.id, status = sip, "INVITE refused by the dialplan");
                Invited::Retry
            } else {
                Invited::Taken
            }
        }
        Ok(resp) => {
            let status = resp.status().as_u16();
            tracing::debug!(node = %sh.common.id, status, "INVITE refused");
            if status == 408 || status >= 500 {
                Invited::Retry
            } else {
                Invited::Refused
            }
        }
        Err(err) => {
            tracing::debug!(node = %sh.common.id, cause = %err, "INVITE failed");
            Invited::Retry
        }
    }
}

/// How long a transferee waits for the answer to the INVITE a REFER made
/// it send (the testbed's sipp caller waits 30 s for that 200 OK).
const REFER_ANSWER_WAIT: Duration = Duration::from_secs(30);

/// Waits until the call `call_id` is answered (`Up`) on the node at
/// `target`: `false` when it ends first, the node stops answering, or
/// [`REFER_ANSWER_WAIT`] passes.
async fn answered(sh: &Shared, target: &SipTarget, call_id: &str) -> bool {
    let url = format!("http://{}/sim/calls", target.hostport);
    let until = tokio::time::Instant::now() + REFER_ANSWER_WAIT;
    let mut pause = Duration::from_millis(2);
    while tokio::time::Instant::now() < until {
        let calls: serde_json::Value = match sh.common.http.get(&url).send().await {
            Ok(resp) => resp.json().await.unwrap_or_default(),
            Err(_) => return false,
        };
        let state = calls.as_array().and_then(|a| {
            a.iter()
                .find(|c| c["call_id"] == call_id)
                .map(|c| c["state"].as_str().unwrap_or("").to_string())
        });
        match state.as_deref() {
            Some("Up") => return true,
            None => return false,
            Some(_) => {}
        }
        tokio::select! {
            _ = sh.cancel.cancelled() => return false,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    false
}

/// What a redirect does once its 204 is out (the channel's Stasis thread
/// runs `ast_transfer`).
pub(crate) async fn redirect(sh: Arc<Shared>, chan_id: String, resource: String) {
    let target = parse_sip_uri(&resource);
    let (state, caller, call_id) = {
        let st = sh.lock();
        let Some(ch) = st.channels.get(&chan_id) else {
            return;
        };
        if ch.stasis.is_none() {
            return;
        }
        (ch.state, ch.caller_number.clone(), ch.protocol_id.clone())
    };
    let Some(target) = target else {
        // pjsip cannot parse the Contact/Refer-To: a WARNING in its log, no
        // SIP message, no ARI event; the channel stays in Stasis.
        bump(&sh.common.stats.redirects_invalid);
        tracing::debug!(node = %sh.common.id, channel = %chan_id, "redirect target is not a SIP URI; nothing sent");
        return;
    };
    let upstream = sh.common.upstream();
    if state == chan_state::RING {
        // 302 Moved Temporarily, then the session ends.
        bump(&sh.common.stats.redirects_302);
        let (cause, tech_cause) = sh.common.version.redirect_cause();
        sh.lock().hangup(
            &chan_id,
            Hangup {
                request_cause: Some(cause),
                tech_cause,
                soft: false,
                cause,
                request: true,
            },
        );
        match upstream.on_302 {
            On302::Follow => {
                tokio::select! {
                    _ = sh.cancel.cancelled() => return,
                    _ = tokio::time::sleep(upstream.follow_delay) => {}
                }
                if follow_302(&sh, &target, &upstream.failover, &caller, &call_id).await {
                    bump(&sh.common.stats.redirects_followed);
                } else {
                    bump(&sh.common.stats.redirects_lost);
                }
            }
            On302::Relay | On302::Drop => bump(&sh.common.stats.redirects_lost),
        }
    } else {
        // In-dialog REFER; no ARI event reports its progress.
        bump(&sh.common.stats.refers);
        match upstream.on_refer {
            OnRefer::Reject => bump(&sh.common.stats.refers_failed),
            OnRefer::Accept => {
                tokio::select! {
                    _ = sh.cancel.cancelled() => return,
                    _ = tokio::time::sleep(upstream.follow_delay) => {}
                }
                if invite(&sh, &target, &caller, &call_id).await
                    && answered(&sh, &target, &call_id).await
                {
                    bump(&sh.common.stats.refers_accepted);
                    // The transferee hangs up the old dialog (BYE) once the
                    // new call is answered, as a phone does. After a
                    // transfer Asterisk 22.10.1 queues that hangup without
                    // a cause.
                    sh.lock().hangup(
                        &chan_id,
                        Hangup {
                            request_cause: None,
                            ..Hangup::normal()
                        },
                    );
                } else {
                    bump(&sh.common.stats.refers_failed);
                }
            }
        }
    }
}

/// How an originated call ends up, once its far end has had its say.
enum Outcome {
    /// 200 OK; the far end may send BYE later.
    Answer { hangup_after: Option<Duration> },
    /// 486 Busy Here (cause 17).
    Busy,
    /// The endpoint cannot be reached (cause 20, "Subscriber absent").
    Unavailable,
    /// Nothing answered at the endpoint's address before the timeout, not
    /// even ringing (cause 19, `tech_cause` 480).
    Unreachable,
    /// Nothing before the originate timeout (cause 19).
    NoAnswer,
}

/// The far end of an originated channel: Down → Ringing, then the
/// endpoint's script: answer → Up → `Stasis(app, appArgs)` or the
/// dialplan at `extension` (and, with
/// `hangup_after_ms`, a BYE later); busy (`ChannelHangupRequest` and
/// `ChannelDestroyed` with cause 17, `tech_cause` 486); unavailable (cause
/// 20); unreachable (no ringing; at the timeout cause 19, `tech_cause`
/// 480); or ring until the originate timeout (cause 19, `tech_cause` 480).
/// A failed channel other than a busy one is destroyed without
/// `ChannelHangupRequest`; its `ChannelDestroyed` reaches the app named in
/// `app=` through the originate's extra subscription (ARCHITECTURE.md,
/// *ARI facts: originate*).
pub(crate) async fn run_originate(
    sh: Arc<Shared>,
    chan_id: String,
    resource: String,
    timeout: Duration,
) {
    let script = sh.common.endpoint_script(&resource);
    // An unreachable far end never rings: the channel stays `Down`.
    let dialling = if matches!(script, EndpointScript::Unreachable) {
        chan_state::DOWN
    } else {
        chan_state::RINGING
    };
    let seq = {
        let mut st = sh.lock();
        st.set_state(&chan_id, dialling);
        st.channels.get(&chan_id).map(|c| c.seq)
    };
    let Some(seq) = seq else {
        return;
    };
    let ms = Duration::from_millis;
    let (wait, outcome) = match script {
        EndpointScript::Answer {
            after_ms,
            hangup_after_ms,
        } => (
            ms(after_ms),
            Outcome::Answer {
                hangup_after: hangup_after_ms.map(ms),
            },
        ),
        EndpointScript::Busy { after_ms } => (ms(after_ms), Outcome::Busy),
        EndpointScript::Unavailable { after_ms } => (ms(after_ms), Outcome::Unavailable),
        EndpointScript::Unreachable => (timeout, Outcome::Unreachable),
        EndpointScript::Ring => (timeout, Outcome::NoAnswer),
    };
    let (wait, outcome) = if wait < timeout || matches!(outcome, Outcome::Unreachable) {
        (wait, outcome)
    } else {
        (timeout, Outcome::NoAnswer)
    };
    tokio::select! {
        _ = sh.cancel.cancelled() => return,
        _ = tokio::time::sleep(wait) => {}
    }
    let hangup_after = {
        let mut st = sh.lock();
        // The same channel (ids can be reused), still waiting for its far end.
        let still_ringing = st
            .channels
            .get(&chan_id)
            .is_some_and(|c| c.seq == seq && c.state == dialling);
        if !still_ringing {
            return;
        }
        // A failed dial destroys the channel without a hangup request.
        let failed = |cause| Hangup {
            request_cause: None,
            tech_cause: None,
            soft: false,
            cause,
            request: false,
        };
        let stats = &sh.common.stats;
        match outcome {
            Outcome::Answer { hangup_after } => {
                bump(&stats.originated_answered);
                st.set_state(&chan_id, chan_state::UP);
                let target = st
                    .channels
                    .get_mut(&chan_id)
                    .and_then(|c| c.after_answer.take());
                match target {
                    Some(AfterAnswer::Stasis(app, args)) => {
                        if !st.stasis_enter_app(&chan_id, &app, args) {
                            st.hangup(&chan_id, Hangup::normal());
                            return;
                        }
                    }
                    Some(AfterAnswer::Dialplan(p)) => {
                        if let Some(ch) = st.channels.get_mut(&chan_id) {
                            ch.pbx = Some(p);
                        }
                        if !pbx::run(&mut st, &chan_id).in_stasis {
                            return;
                        }
                    }
                    None => {
                        st.hangup(&chan_id, Hangup::normal());
                        return;
                    }
                }
                hangup_after
            }
            Outcome::Busy => {
                // chan_pjsip queues the hangup of a 486 with its cause, so
                // the app sees a `ChannelHangupRequest` first.
                bump(&stats.originated_busy);
                let tech_cause = sh.common.version.has_tech_cause().then_some(486);
                st.hangup(
                    &chan_id,
                    Hangup {
                        request_cause: Some(17),
                        tech_cause,
                        soft: false,
                        cause: 17,
                        request: true,
                    },
                );
                return;
            }
            Outcome::Unreachable => {
                bump(&stats.originated_unavailable);
                let tech_cause = sh.common.version.has_tech_cause().then_some(480);
                st.hangup(
                    &chan_id,
                    Hangup {
                        tech_cause,
                        ..failed(19)
                    },
                );
                return;
            }
            Outcome::Unavailable => {
                bump(&stats.originated_unavailable);
                st.hangup(&chan_id, failed(20));
                return;
            }
            Outcome::NoAnswer => {
                // The dial's timeout CANCELs the INVITE; chan_pjsip reports
                // it as a 480 (cause 19).
                bump(&stats.originated_no_answer);
                let tech_cause = sh.common.version.has_tech_cause().then_some(480);
                st.hangup(
                    &chan_id,
                    Hangup {
                        tech_cause,
                        ..failed(19)
                    },
                );
                return;
            }
        }
    };
    let Some(after) = hangup_after else {
        return;
    };
    tokio::select! {
        _ = sh.cancel.cancelled() => return,
        _ = tokio::time::sleep(after) => {}
    }
    // The far end hangs up mid-call: BYE, normal clearing.
    let mut st = sh.lock();
    if st.channels.get(&chan_id).is_some_and(|c| c.seq == seq) {
        st.hangup(&chan_id, Hangup::normal());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uris_parse_like_pjsip() {
        let t = parse_sip_uri("sip:tok123@10.0.0.12").expect("plain");
        assert_eq!(t.user, "tok123");
        assert_eq!(t.hostport, "10.0.0.12:5060");
        let t = parse_sip_uri("<SIP:tok;x=y@127.0.0.1:4000;transport=tcp>").expect("brackets");
        assert_eq!(
            (t.user.as_str(), t.hostport.as_str()),
            ("tok", "127.0.0.1:4000")
        );
        let t = parse_sip_uri("sip:127.0.0.1:4000").expect("no user");
        assert_eq!(t.user, "s");
        assert!(parse_sip_uri("tok@127.0.0.1").is_none());
        assert!(parse_sip_uri("sip:").is_none());
        assert!(parse_sip_uri("").is_none());
        assert!(parse_sip_uri("é").is_none());
    }
}
