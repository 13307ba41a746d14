//! `corral sim-node`: one simulated Asterisk 22 node until stopped.
//!
//! The node serves ARI under `http://LISTEN/ari` and its control API under
//! `http://LISTEN/sim` (see the README, "Simulated nodes"). Its SIP host,
//! the address other nodes' redirects point at, is LISTEN itself.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use crate::sim::{
    Dialplan, EndpointScript, Faults, On302, OnRefer, SimConfig, SimNode, Upstream, VersionProfile,
};

/// Flags of `corral sim-node`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node's id (`ast1`): its system name, and the seed of its default
    /// `asterisk_id`.
    #[arg(long)]
    pub id: String,
    /// Address to listen on, HOST:PORT. ARI is `http://HOST:PORT/ari`, the
    /// control API `http://HOST:PORT/sim`, and HOST:PORT is also the node's
    /// SIP host (`PJSIP/sip:TOKEN@HOST:PORT` reaches it).
    #[arg(long, default_value = "127.0.0.1:8088")]
    pub listen: SocketAddr,
    /// ARI user (Basic auth or `api_key=user:pass`).
    #[arg(long, env = "CORRAL_SIM_USERNAME", default_value = "corral")]
    pub username: String,
    /// ARI password.
    #[arg(
        long,
        env = "CORRAL_SIM_PASSWORD",
        default_value = "corral",
        hide_env_values = true
    )]
    pub password: String,
    /// The node's EID (`xx:xx:xx:xx:xx:xx`); default derived from --id.
    #[arg(long)]
    pub asterisk_id: Option<String>,
    /// What the upstream proxy does with a 302: `follow` (the call arrives on
    /// the node in the Contact after --follow-delay-ms, same call id),
    /// `relay` (sent back to the caller: the call is lost) or `drop` (lost).
    #[arg(long, default_value = "follow", value_parser = parse_on_302)]
    pub upstream: On302,
    /// Delay of a followed 302 or an accepted REFER, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub follow_delay_ms: u64,
    /// What the far end does with a REFER (redirect of an answered
    /// channel): `accept` (INVITE to the target, then BYE) or `reject`
    /// (nothing happens).
    #[arg(long, default_value = "accept", value_parser = parse_on_refer)]
    pub refer: OnRefer,
    /// The proxy's other nodes (`host:port`, comma-separated), in its
    /// order: a followed 302 that the node it names refuses with a 408 or
    /// 5xx goes on to the next of these, as the shipped `kamailio.cfg`
    /// does. None: such a call is lost.
    #[arg(long, value_delimiter = ',')]
    pub failover: Vec<String>,
    /// The Stasis app of the dialplan: `Stasis(corral,...)` in it becomes
    /// `Stasis(APP,...)`, as an operator who sets corral's `app` edits the
    /// shipped extensions.conf.
    #[arg(long, default_value = "corral")]
    pub app: String,
    /// An extensions.conf to run instead of the shipped
    /// deploy/asterisk/extensions.conf (compiled in), with Asterisk's rules;
    /// calls arrive in [from-proxy]. A line the simulator cannot run as
    /// Asterisk would is refused, with its number (see the README).
    #[arg(long, value_name = "EXTENSIONS_CONF")]
    pub dialplan: Option<PathBuf>,
    /// The Asterisk release to imitate: 22.10 (302 → cause 23, tech_cause
    /// 302), 22.7 (cause 16, tech_cause 302) or 20.0 (cause 16).
    #[arg(long, default_value = "22.10", value_parser = parse_version)]
    pub version: VersionProfile,
    /// Fault: delay every event by this many milliseconds, one after the
    /// other (a slow link: a socket then carries at most 1000/MS events a
    /// second).
    #[arg(long, default_value_t = 0)]
    pub event_delay_ms: u64,
    /// Fault: deliver every event this many milliseconds after it happened,
    /// without slowing the ones behind it (a link with latency).
    #[arg(long, default_value_t = 0)]
    pub event_latency_ms: u64,
    /// Fault: share (0.0-1.0) of events sent twice.
    #[arg(long, default_value_t = 0.0)]
    pub duplicate_events: f64,
    /// Fault: share (0.0-1.0) of ARI REST requests failing with 500.
    #[arg(long, default_value_t = 0.0)]
    pub rest_error_rate: f64,
    /// Seed of the fault randomness (default: fresh, logged at start).
    #[arg(long)]
    pub seed: Option<u64>,
    /// What the far end of an originated endpoint does, as
    /// RESOURCE=SCRIPT (repeatable). SCRIPT is `answer:MS` (answer after
    /// MS), `answer:MS:HANGUP_MS` (answer, then hang up HANGUP_MS later),
    /// `busy:MS` (cause 17), `unavailable:MS` (cause 20), `unreachable`
    /// (silence until the originate timeout, cause 19) or `ring` (no answer until the originate
    /// timeout, cause 19). RESOURCE is what
    /// follows `PJSIP/`; `alice` also covers `alice@host` and
    /// `sip:alice@host` unless those have their own script.
    #[arg(long = "endpoint", value_name = "RESOURCE=SCRIPT", value_parser = parse_endpoint)]
    pub endpoints: Vec<(String, EndpointScript)>,
    /// The SCRIPT of endpoints without one of their own (see --endpoint).
    #[arg(long, value_name = "SCRIPT", default_value = "answer:10", value_parser = parse_script)]
    pub default_endpoint: EndpointScript,
}

fn parse_on_302(s: &str) -> Result<On302, String> {
    match s {
        "follow" => Ok(On302::Follow),
        "relay" => Ok(On302::Relay),
        "drop" => Ok(On302::Drop),
        _ => Err(format!("expected follow, relay or drop, got {s:?}")),
    }
}

fn parse_on_refer(s: &str) -> Result<OnRefer, String> {
    match s {
        "accept" => Ok(OnRefer::Accept),
        "reject" => Ok(OnRefer::Reject),
        _ => Err(format!("expected accept or reject, got {s:?}")),
    }
}

fn parse_version(s: &str) -> Result<VersionProfile, String> {
    VersionProfile::parse(s).ok_or_else(|| format!("expected 22.10, 22.7 or 20.0, got {s:?}"))
}

fn parse_script(s: &str) -> Result<EndpointScript, String> {
    s.parse()
        .map_err(|e: crate::sim::ScriptParseError| e.to_string())
}

/// `RESOURCE=SCRIPT`; split at the last `=`, since a resource may hold one
/// (`sip:bob@host;transport=tcp`) and a script never does.
fn parse_endpoint(s: &str) -> Result<(String, EndpointScript), String> {
    let (resource, script) = s
        .rsplit_once('=')
        .filter(|(r, _)| !r.is_empty())
        .ok_or_else(|| format!("expected RESOURCE=SCRIPT, got {s:?}"))?;
    Ok((resource.to_string(), parse_script(script)?))
}

fn share(name: &str, v: f64) -> anyhow::Result<f64> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&v),
        "--{name} must be between 0.0 and 1.0, got {v}"
    );
    Ok(v)
}

/// Runs the node until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let dialplan = match &args.dialplan {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading dialplan {}", path.display()))?;
            Dialplan::parse(&text).with_context(|| format!("dialplan {}", path.display()))?
        }
        None => Dialplan::shipped(),
    }
    .with_stasis_app(&args.app);
    let mut cfg = SimConfig::new(args.id);
    cfg.listen = args.listen;
    cfg.username = args.username;
    cfg.password = args.password;
    cfg.asterisk_id = args.asterisk_id;
    cfg.upstream = Upstream {
        on_302: args.upstream,
        follow_delay: std::time::Duration::from_millis(args.follow_delay_ms),
        on_refer: args.refer,
        failover: args.failover,
    };
    cfg.dialplan = dialplan;
    cfg.version = args.version;
    cfg.faults = Faults {
        event_delay_ms: args.event_delay_ms,
        event_latency_ms: args.event_latency_ms.min(60_000),
        duplicate_events: share("duplicate-events", args.duplicate_events)?,
        rest_error_rate: share("rest-error-rate", args.rest_error_rate)?,
        rest_rule: None,
    };
    cfg.endpoints = args.endpoints.into_iter().collect();
    cfg.default_endpoint = args.default_endpoint;
    let seed = args.seed.unwrap_or_else(rand::random);
    cfg.seed = Some(seed);
    let listen = cfg.listen;
    let node = SimNode::start(cfg)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(
        node = node.id(),
        ari = %format!("{}/ari", node.base_url()),
        asterisk_id = node.asterisk_id(),
        seed,
        "simulated node running; stop with Ctrl-C"
    );
    println!(
        "{} listening on {} (ARI at {}/ari)",
        node.id(),
        node.addr(),
        node.base_url()
    );
    crate::shutdown::wait_for_signal().await;
    node.kill().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_flags_parse() {
        assert_eq!(
            parse_endpoint("alice=answer:50:2000"),
            Ok(("alice".into(), EndpointScript::answer_then_hangup(50, 2000)))
        );
        assert_eq!(
            parse_endpoint("sip:bob@h;transport=tcp=busy:100"),
            Ok((
                "sip:bob@h;transport=tcp".into(),
                EndpointScript::Busy { after_ms: 100 }
            ))
        );
        for bad in ["alice", "=ring", "alice=sing", "alice=answer:x"] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }
}
