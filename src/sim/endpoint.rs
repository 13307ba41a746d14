//! The far ends of originated channels: what an endpoint does when a
//! channel is originated to it (`POST /channels`), and which script applies
//! to which endpoint resource.
//!
//! A script stands for a phone or a member endpoint: it answers (and may
//! hang up later), is busy, fails, or rings until the originate times out.
//! `sip.rs` plays the script; this module only holds the scripts, their
//! text form (`answer:50:2000`, used by `corral sim-node --endpoint`) and
//! the lookup by resource. Scripts are set per node, by [`SimConfig`]
//! (`endpoints`, `default_endpoint`), by flags, or at runtime with
//! `PUT /sim/endpoints/{resource}`.
//!
//! [`SimConfig`]: super::SimConfig

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What an originated channel's far end does (see `POST /channels`).
///
/// JSON form (`PUT /sim/endpoints/{resource}`), tagged by `action`:
/// `{"action": "answer", "after_ms": 50, "hangup_after_ms": 2000}`,
/// `{"action": "busy", "after_ms": 100}`, `{"action": "unavailable",
/// "after_ms": 0}`, `{"action": "unreachable"}`,
/// `{"action": "ring"}`. Text form (flags): see
/// [`EndpointScript::from_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "action", deny_unknown_fields)]
pub enum EndpointScript {
    /// Answers after `after_ms` (the channel goes `Up` and enters its
    /// Stasis app).
    Answer {
        /// Ringing time.
        #[serde(default)]
        after_ms: u64,
        /// When set, the far end hangs up (a normal clearing BYE, cause 16)
        /// this long after answering: an agent phone that hangs up
        /// mid-call.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hangup_after_ms: Option<u64>,
    },
    /// Busy after `after_ms` (486 Busy Here: cause 17, "User busy").
    Busy {
        /// Ringing time.
        #[serde(default)]
        after_ms: u64,
    },
    /// Fails after `after_ms` (cause 20, "Subscriber absent"): a member
    /// endpoint that is unregistered or unreachable.
    Unavailable {
        /// Time before the failure.
        #[serde(default)]
        after_ms: u64,
    },
    /// Nothing answers at the endpoint's address (no phone there, UDP to a
    /// closed port): no provisional response, no ringing; at the
    /// originate `timeout` the dial gives up with cause 19 and
    /// `tech_cause` 480, as Asterisk 22.10.1 does.
    Unreachable,
    /// Rings until the originate `timeout` (cause 19) or a hangup.
    Ring,
}

impl EndpointScript {
    /// Answers after `after_ms` and stays up.
    pub fn answer(after_ms: u64) -> Self {
        EndpointScript::Answer {
            after_ms,
            hangup_after_ms: None,
        }
    }

    /// Answers after `after_ms`, then hangs up `hangup_after_ms` later.
    pub fn answer_then_hangup(after_ms: u64, hangup_after_ms: u64) -> Self {
        EndpointScript::Answer {
            after_ms,
            hangup_after_ms: Some(hangup_after_ms),
        }
    }
}

impl Default for EndpointScript {
    /// Answers after 10 ms and stays up.
    fn default() -> Self {
        EndpointScript::answer(10)
    }
}

/// A script's text form is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid endpoint script {given:?}: expected answer[:MS[:HANGUP_MS]], busy[:MS], unavailable[:MS], unreachable or ring"
)]
pub struct ScriptParseError {
    /// The text given.
    pub given: String,
}

impl FromStr for EndpointScript {
    type Err = ScriptParseError;

    /// Parses `answer`, `answer:50`, `answer:50:2000` (hang up 2000 ms after
    /// answering), `busy`, `busy:100`, `unavailable`, `unavailable:0`,
    /// `unreachable` or
    /// `ring`. A missing time is 0.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ScriptParseError {
            given: s.chars().take(64).collect(),
        };
        let mut parts = s.trim().split(':');
        let action = parts.next().unwrap_or("");
        let nums: Vec<u64> = parts
            .map(|p| p.trim().parse::<u64>().map_err(|_| err()))
            .collect::<Result<_, _>>()?;
        let at = |i: usize| nums.get(i).copied().unwrap_or(0);
        match (action.to_ascii_lowercase().as_str(), nums.len()) {
            ("answer", 0..=1) => Ok(EndpointScript::answer(at(0))),
            ("answer", 2) => Ok(EndpointScript::answer_then_hangup(at(0), at(1))),
            ("busy", 0..=1) => Ok(EndpointScript::Busy { after_ms: at(0) }),
            ("unavailable", 0..=1) => Ok(EndpointScript::Unavailable { after_ms: at(0) }),
            ("unreachable", 0) => Ok(EndpointScript::Unreachable),
            ("ring", 0) => Ok(EndpointScript::Ring),
            _ => Err(err()),
        }
    }
}

impl fmt::Display for EndpointScript {
    /// The text form [`EndpointScript::from_str`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointScript::Answer {
                after_ms,
                hangup_after_ms: None,
            } => write!(f, "answer:{after_ms}"),
            EndpointScript::Answer {
                after_ms,
                hangup_after_ms: Some(h),
            } => write!(f, "answer:{after_ms}:{h}"),
            EndpointScript::Busy { after_ms } => write!(f, "busy:{after_ms}"),
            EndpointScript::Unavailable { after_ms } => write!(f, "unavailable:{after_ms}"),
            EndpointScript::Unreachable => write!(f, "unreachable"),
            EndpointScript::Ring => write!(f, "ring"),
        }
    }
}

/// The scripts of one node: by endpoint resource, and a default.
#[derive(Debug, Clone, Default)]
pub(crate) struct Endpoints {
    /// Scripts set by resource (`alice`, `alice@kamailio`, ...).
    pub(crate) by_resource: HashMap<String, EndpointScript>,
    /// The script of resources that match nothing in `by_resource`.
    pub(crate) default: EndpointScript,
}

impl Endpoints {
    /// The script of an originated `TECH/resource`: the exact resource
    /// first (`alice`), then the user part of a `user@host` resource
    /// (`alice@kamailio` → `alice`) or of a SIP URI
    /// (`sip:alice@10.0.0.5:5060` → `alice`), then the default.
    pub(crate) fn lookup(&self, resource: &str) -> EndpointScript {
        if let Some(s) = self.by_resource.get(resource) {
            return *s;
        }
        user_part(resource)
            .and_then(|u| self.by_resource.get(u))
            .copied()
            .unwrap_or(self.default)
    }

    /// `{"default": script, "endpoints": {resource: script}}`, sorted by
    /// resource (`GET /sim/endpoints`).
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let sorted: BTreeMap<&String, &EndpointScript> = self.by_resource.iter().collect();
        serde_json::json!({"default": self.default, "endpoints": sorted})
    }
}

/// The user part of a resource: of a SIP URI (`sip:`/`sips:`, any case,
/// optional angle brackets, user options cut at `;`), else of `user@host`.
/// `None` when there is no non-empty user part.
fn user_part(resource: &str) -> Option<&str> {
    let r = resource.trim();
    let r = r.strip_prefix('<').unwrap_or(r);
    let lower = r.get(..5).unwrap_or(r).to_ascii_lowercase();
    let rest = if lower.starts_with("sip:") {
        &r[4..]
    } else if lower.starts_with("sips:") {
        &r[5..]
    } else {
        r
    };
    let (user, _host) = rest.rsplit_once('@')?;
    let user = user.split(';').next().unwrap_or("");
    (!user.is_empty()).then_some(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_parse_from_text_and_print_back() {
        for (text, script) in [
            ("answer", EndpointScript::answer(0)),
            ("answer:50", EndpointScript::answer(50)),
            (
                "answer:50:2000",
                EndpointScript::answer_then_hangup(50, 2000),
            ),
            ("busy:100", EndpointScript::Busy { after_ms: 100 }),
            ("busy", EndpointScript::Busy { after_ms: 0 }),
            ("unavailable:0", EndpointScript::Unavailable { after_ms: 0 }),
            ("ring", EndpointScript::Ring),
            ("RING", EndpointScript::Ring),
        ] {
            assert_eq!(text.parse::<EndpointScript>(), Ok(script), "{text}");
            let printed = script.to_string();
            assert_eq!(printed.parse::<EndpointScript>(), Ok(script), "{printed}");
        }
        for bad in [
            "",
            "sing",
            "ring:5",
            "busy:1:2",
            "answer:1:2:3",
            "answer:-1",
            "answer:x",
            "answer:",
        ] {
            assert!(bad.parse::<EndpointScript>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scripts_have_a_json_form() {
        let s: EndpointScript =
            serde_json::from_str(r#"{"action":"answer","after_ms":50,"hangup_after_ms":2000}"#)
                .expect("answer");
        assert_eq!(s, EndpointScript::answer_then_hangup(50, 2000));
        let s: EndpointScript =
            serde_json::from_str(r#"{"action":"unavailable"}"#).expect("unavailable");
        assert_eq!(s, EndpointScript::Unavailable { after_ms: 0 });
        let s: EndpointScript = serde_json::from_str(r#"{"action":"ring"}"#).expect("ring");
        assert_eq!(s, EndpointScript::Ring);
        assert_eq!(
            serde_json::to_value(EndpointScript::answer(5)).expect("json"),
            serde_json::json!({"action": "answer", "after_ms": 5})
        );
        // A misspelt field is refused, not ignored.
        assert!(
            serde_json::from_str::<EndpointScript>(r#"{"action":"answer","hangup_after":5}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<EndpointScript>(r#"{"action":"sing"}"#).is_err());
    }

    #[test]
    fn lookup_tries_the_resource_then_its_user_part_then_the_default() {
        let mut e = Endpoints {
            default: EndpointScript::Ring,
            ..Endpoints::default()
        };
        e.by_resource
            .insert("alice".into(), EndpointScript::answer(1));
        e.by_resource
            .insert("bob@pbx".into(), EndpointScript::Busy { after_ms: 2 });
        e.by_resource
            .insert("bob".into(), EndpointScript::Unavailable { after_ms: 3 });
        let cases = [
            ("alice", EndpointScript::answer(1)),
            ("alice@kamailio", EndpointScript::answer(1)),
            ("sip:alice@10.0.0.5:5060", EndpointScript::answer(1)),
            ("<SIPS:alice;x=y@10.0.0.5>", EndpointScript::answer(1)),
            ("bob@pbx", EndpointScript::Busy { after_ms: 2 }),
            ("bob@other", EndpointScript::Unavailable { after_ms: 3 }),
            ("carol", EndpointScript::Ring),
            ("sip:10.0.0.5", EndpointScript::Ring),
            ("@host", EndpointScript::Ring),
            ("é@x", EndpointScript::Ring),
        ];
        for (resource, script) in cases {
            assert_eq!(e.lookup(resource), script, "{resource}");
        }
    }
}
