//! `docker-compose.yml` against `deploy/`: the reference deployment's wiring,
//! checked without Docker (this machine has none, and CI neither).
//!
//! Every check reads the compose file and the shipped configs, and returns
//! the problems it finds. `shipped_deployment_is_coherent` runs them all on
//! the shipped files; the other tests show, on a mutated copy, that each
//! check fails when its part of the wiring breaks. What the checks do not
//! show: that the images build and the services start (README, "Run the
//! reference deployment", says what was run and what was not).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use yaml_rust2::{Yaml, YamlLoader};

/// The images the deployment pulls; every other one is built here.
const PULLED_IMAGES: &[&str] = &["redis:7"];

/// The node configs every Asterisk service mounts into `/etc/asterisk/`.
const NODE_CONFIGS: &[&str] = &[
    "asterisk.conf",
    "extensions.conf",
    "ari.conf",
    "http.conf",
    "pjsip.conf",
];

/// The modules corral cannot work without (the Asterisk image must build
/// them).
const MUST_BUILD: &[&str] = &[
    "chan_pjsip",
    "res_pjsip",
    "res_pjsip_session",
    "res_pjsip_sdp_rtp",
    "res_pjsip_endpoint_identifier_ip",
    "res_pjsip_refer",
    "res_rtp_asterisk",
    "res_http_websocket",
    "res_websocket_client",
    "res_ari",
    "res_ari_channels",
    "res_ari_bridges",
    "res_ari_events",
    "res_ari_asterisk",
    "res_ari_applications",
    "res_stasis",
    "res_stasis_answer",
    "app_stasis",
    "bridge_softmix",
    "bridge_holding",
    "bridge_simple",
    "res_timing_timerfd",
    "res_musiconhold",
    "pbx_config",
    "func_cut",
    "func_strings",
    "func_logic",
    "app_playback",
    "codec_ulaw",
    "codec_alaw",
    "format_gsm",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// The shipped files the checks compare the compose file with (as text, so
/// a test can mutate one).
#[derive(Clone)]
struct Deploy {
    corral_toml: String,
    dispatcher_list: String,
    pjsip_conf: String,
    http_conf: String,
    kamailio_cfg: String,
}

impl Deploy {
    fn shipped() -> Self {
        Self {
            corral_toml: read("deploy/corral.toml"),
            dispatcher_list: read("deploy/kamailio/dispatcher.list"),
            pjsip_conf: read("deploy/asterisk/pjsip.conf"),
            http_conf: read("deploy/asterisk/http.conf"),
            kamailio_cfg: read("deploy/kamailio/kamailio.cfg"),
        }
    }
}

// ---------------------------------------------------------------- parsing

/// The compose file as YAML, with `<<` merge keys applied (compose applies
/// them; yaml-rust2 resolves aliases but leaves merges to us).
fn load_compose(text: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(text).expect("docker-compose.yml is YAML");
    assert_eq!(docs.len(), 1, "docker-compose.yml holds one document");
    let mut doc = docs.remove(0);
    apply_merges(&mut doc);
    doc
}

fn apply_merges(y: &mut Yaml) {
    match y {
        Yaml::Hash(h) => {
            let merge_key = Yaml::String("<<".into());
            if let Some(merged) = h.remove(&merge_key) {
                let sources = match merged {
                    Yaml::Array(a) => a,
                    other => vec![other],
                };
                for source in sources {
                    if let Yaml::Hash(src) = source {
                        for (k, v) in src {
                            if !h.contains_key(&k) {
                                h.insert(k, v);
                            }
                        }
                    }
                }
            }
            for (_, v) in h.iter_mut() {
                apply_merges(v);
            }
        }
        Yaml::Array(a) => a.iter_mut().for_each(apply_merges),
        _ => {}
    }
}

/// A scalar as text (compose reads numbers and strings alike).
fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Array(a) => a.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    }
}

/// One service, read into the parts the checks look at.
#[derive(Debug, Default, Clone)]
struct Service {
    name: String,
    image: Option<String>,
    /// (context, dockerfile), relative to the repository root.
    build: Option<(String, String)>,
    command: Vec<String>,
    environment: BTreeMap<String, String>,
    /// (source, target, read-only) of bind mounts.
    mounts: Vec<(String, String, bool)>,
    /// (published, container port, protocol).
    ports: Vec<(Option<u16>, u16, String)>,
    /// network → static IPv4 (if any).
    networks: BTreeMap<String, Option<String>>,
    depends_on: BTreeSet<String>,
}

struct Compose {
    services: Vec<Service>,
    /// network → subnet.
    subnets: BTreeMap<String, String>,
}

impl Compose {
    fn parse(text: &str) -> Self {
        let doc = load_compose(text);
        let mut services = Vec::new();
        if let Yaml::Hash(h) = &doc["services"] {
            for (name, s) in h {
                services.push(parse_service(&scalar(name).unwrap_or_default(), s));
            }
        }
        let mut subnets = BTreeMap::new();
        if let Yaml::Hash(h) = &doc["networks"] {
            for (name, n) in h {
                let subnet = match &n["ipam"]["config"] {
                    Yaml::Array(a) => a.iter().find_map(|c| scalar(&c["subnet"])),
                    _ => None,
                };
                if let (Some(name), Some(subnet)) = (scalar(name), subnet) {
                    subnets.insert(name, subnet);
                }
            }
        }
        Self { services, subnets }
    }

    /// The services built from `context` (e.g. `deploy/asterisk`).
    fn built_from(&self, context: &str, dockerfile: &str) -> Vec<&Service> {
        self.services
            .iter()
            .filter(|s| {
                s.build.as_ref().is_some_and(|(c, d)| {
                    norm(c) == norm(context) && norm(&format!("{c}/{d}")) == norm(dockerfile)
                })
            })
            .collect()
    }

    /// The service whose static address or name is `host`.
    fn by_host(&self, host: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.name == host || s.ipv4().as_deref() == Some(host))
    }
}

impl Service {
    fn ipv4(&self) -> Option<String> {
        self.networks.values().find_map(Clone::clone)
    }

    fn mount_of(&self, source: &str) -> Option<&(String, String, bool)> {
        self.mounts.iter().find(|(s, _, _)| norm(s) == norm(source))
    }
}

/// `./deploy/x/` and `deploy/x` are one path.
fn norm(p: &str) -> String {
    let mut parts = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

fn parse_service(name: &str, s: &Yaml) -> Service {
    let mut out = Service {
        name: name.to_string(),
        image: scalar(&s["image"]),
        command: strings(&s["command"]),
        ..Default::default()
    };
    out.build = match &s["build"] {
        Yaml::Hash(_) => {
            let context = scalar(&s["build"]["context"]).unwrap_or_else(|| ".".into());
            let dockerfile =
                scalar(&s["build"]["dockerfile"]).unwrap_or_else(|| "Dockerfile".into());
            Some((context, dockerfile))
        }
        other => scalar(other).map(|c| (c, "Dockerfile".into())),
    };
    match &s["environment"] {
        Yaml::Hash(h) => {
            for (k, v) in h {
                if let Some(k) = scalar(k) {
                    out.environment.insert(k, scalar(v).unwrap_or_default());
                }
            }
        }
        Yaml::Array(a) => {
            for kv in a.iter().filter_map(scalar) {
                let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
                out.environment.insert(k.to_string(), v.to_string());
            }
        }
        _ => {}
    }
    if let Yaml::Array(a) = &s["volumes"] {
        for v in a {
            if let Some(short) = scalar(v) {
                let parts: Vec<&str> = short.split(':').collect();
                if parts.len() >= 2 && (parts[0].starts_with('.') || parts[0].starts_with('/')) {
                    let ro = parts
                        .get(2)
                        .is_some_and(|m| m.split(',').any(|o| o == "ro"));
                    out.mounts
                        .push((parts[0].to_string(), parts[1].to_string(), ro));
                }
            } else if scalar(&v["type"]).as_deref() == Some("bind") {
                out.mounts.push((
                    scalar(&v["source"]).unwrap_or_default(),
                    scalar(&v["target"]).unwrap_or_default(),
                    v["read_only"] == Yaml::Boolean(true),
                ));
            }
        }
    }
    if let Yaml::Array(a) = &s["ports"] {
        for p in a {
            if let Some(short) = scalar(p) {
                let (spec, proto) = short.split_once('/').unwrap_or((&short, "tcp"));
                let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
                let container = parts[0].parse().unwrap_or(0);
                let published = parts.get(1).and_then(|p| p.parse().ok());
                out.ports.push((published, container, proto.to_string()));
            } else {
                out.ports.push((
                    scalar(&p["published"]).and_then(|p| p.parse().ok()),
                    scalar(&p["target"])
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0),
                    scalar(&p["protocol"]).unwrap_or_else(|| "tcp".into()),
                ));
            }
        }
    }
    match &s["networks"] {
        Yaml::Hash(h) => {
            for (k, v) in h {
                if let Some(k) = scalar(k) {
                    out.networks.insert(k, scalar(&v["ipv4_address"]));
                }
            }
        }
        Yaml::Array(a) => {
            for n in a.iter().filter_map(scalar) {
                out.networks.insert(n, None);
            }
        }
        _ => {}
    }
    match &s["depends_on"] {
        Yaml::Hash(h) => out.depends_on = h.keys().filter_map(scalar).collect(),
        other => out.depends_on = strings(other).into_iter().collect(),
    }
    out
}

/// The values of `key` in every `[section]` of an Asterisk config (a section
/// name can repeat, as pjsip.conf's `[kamailio]` does), comments dropped.
fn ini_values(text: &str, section: &str, key: &str) -> Vec<String> {
    let mut current = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split(';').next().unwrap_or_default().trim();
        if let Some(rest) = line.strip_prefix('[') {
            current = rest.split(']').next().unwrap_or_default().trim().into();
        } else if let Some((k, v)) = line.split_once('=') {
            let k = k.trim().trim_end_matches('>');
            if current == section && k.trim() == key {
                out.push(v.trim_start_matches('>').trim().to_string());
            }
        }
    }
    out
}

fn one(values: Vec<String>, what: &str) -> Result<String, String> {
    match values.as_slice() {
        [v] => Ok(v.clone()),
        _ => Err(format!(
            "{what}: found {} times, expected once",
            values.len()
        )),
    }
}

/// `host[:port]` split, with `default` as the port when none is given.
fn host_port(s: &str, default: u16) -> Result<(String, u16), String> {
    match s.rsplit_once(':') {
        Some((h, p)) => p
            .parse()
            .map(|p| (h.to_string(), p))
            .map_err(|_| format!("{s:?}: bad port")),
        None => Ok((s.to_string(), default)),
    }
}

/// A URL's host and port (`scheme://[userinfo@]host[:port][/...]`).
fn url_host_port(url: &str, default: u16) -> Result<(String, u16), String> {
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or_else(|| format!("{url:?}: not a URL"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port(hostport, default)
}

/// A URL's password (`scheme://user:password@...`).
fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    userinfo.split_once(':').map(|(_, p)| p.to_string())
}

/// The variable of a value that is one compose interpolation and nothing
/// else (`${NAME}`, `${NAME:?message}`, `${NAME?message}`); defaults
/// (`:-`, `-`) are refused, as they would put a value in the file.
fn interpolated_var(value: &str) -> Option<String> {
    let inner = value.strip_prefix("${")?.strip_suffix('}')?;
    let name_end = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(inner.len());
    let (name, rest) = inner.split_at(name_end);
    let ok = !name.is_empty()
        && (rest.is_empty() || rest.starts_with(":?") || rest.starts_with('?'))
        && !rest.contains('}');
    ok.then(|| name.to_string())
}

/// corral.toml's nodes: (id, ari_url, sip_host).
fn corral_nodes(deploy: &Deploy) -> Result<Vec<(String, String, String)>, String> {
    let doc: toml::Table = deploy
        .corral_toml
        .parse()
        .map_err(|e| format!("deploy/corral.toml: {e}"))?;
    let nodes = doc
        .get("nodes")
        .and_then(|n| n.as_array())
        .ok_or("deploy/corral.toml: no [[nodes]]")?;
    nodes
        .iter()
        .map(|n| {
            let get = |k: &str| {
                n.get(k)
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
                    .ok_or_else(|| format!("deploy/corral.toml: a node has no {k}"))
            };
            Ok((get("id")?, get("ari_url")?, get("sip_host")?))
        })
        .collect()
}

/// dispatcher.list's set 1, as `host:port` (port 5060 when not given).
fn dispatcher_set1(deploy: &Deploy) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    for line in deploy.dispatcher_list.lines() {
        let mut fields = line.split_whitespace();
        if fields.next() != Some("1") {
            continue;
        }
        let uri = fields.next().unwrap_or_default();
        let hostport = uri
            .strip_prefix("sip:")
            .ok_or_else(|| format!("dispatcher.list: {uri:?} is not a sip: URI"))?;
        let hostport = hostport.split(';').next().unwrap_or_default();
        let (h, p) = host_port(hostport, 5060)?;
        out.insert(format!("{h}:{p}"));
    }
    Ok(out)
}

/// kamailio.cfg's `listen=proto:addr:port`.
fn kamailio_listen(deploy: &Deploy) -> Result<(String, String, u16), String> {
    let lines: Vec<&str> = deploy
        .kamailio_cfg
        .lines()
        .filter(|l| l.starts_with("listen="))
        .collect();
    let [line] = lines.as_slice() else {
        return Err(format!(
            "kamailio.cfg: {} listen= lines, expected one",
            lines.len()
        ));
    };
    let spec = line.trim_start_matches("listen=").split_whitespace().next();
    let parts: Vec<&str> = spec.unwrap_or_default().split(':').collect();
    match parts.as_slice() {
        [proto, addr, port] => Ok((
            proto.to_string(),
            addr.to_string(),
            port.parse()
                .map_err(|_| format!("kamailio.cfg: bad port in {line:?}"))?,
        )),
        _ => Err(format!(
            "kamailio.cfg: {line:?} is not listen=proto:addr:port"
        )),
    }
}

/// kamailio.cfg's corral connection for route ahead:
/// `modparam("http_client", "httpcon", "corral=><url>")`.
fn kamailio_corral_url(deploy: &Deploy) -> Result<String, String> {
    let urls: Vec<String> = deploy
        .kamailio_cfg
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("modparam(\"http_client\", \"httpcon\", \"corral=>")
                .and_then(|r| r.split('"').next())
                .map(str::to_string)
        })
        .collect();
    match urls.as_slice() {
        [url] => Ok(url.clone()),
        _ => Err(format!(
            "kamailio.cfg: {} httpcon lines for corral, expected one",
            urls.len()
        )),
    }
}

/// kamailio.cfg's `modparam("dispatcher", "list_file", "...")`.
fn kamailio_list_file(deploy: &Deploy) -> Option<String> {
    deploy.kamailio_cfg.lines().find_map(|l| {
        let rest = l
            .trim()
            .strip_prefix("modparam(\"dispatcher\", \"list_file\", \"")?;
        rest.split('"').next().map(str::to_string)
    })
}

fn ipv4(s: &str) -> Option<[u8; 4]> {
    let v: Vec<u8> = s
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

fn in_subnet(addr: &str, subnet: &str) -> bool {
    let Some((net, len)) = subnet.split_once('/') else {
        return false;
    };
    let (Some(a), Some(n), Ok(len)) = (ipv4(addr), ipv4(net), len.parse::<u32>()) else {
        return false;
    };
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - len.min(32))
    };
    u32::from_be_bytes(a) & mask == u32::from_be_bytes(n) & mask
}

// ----------------------------------------------------------------- checks

type Check = fn(&Compose, &Deploy) -> Vec<String>;

const CHECKS: &[(&str, Check)] = &[
    ("images and builds", check_images_and_builds),
    ("mounts", check_mounts),
    ("network", check_network),
    ("asterisk nodes", check_nodes),
    ("node identity", check_identity),
    ("kamailio", check_kamailio),
    ("redis", check_redis),
    ("corral replicas", check_corral),
    ("secrets", check_secrets),
];

fn problems(compose_text: &str, deploy: &Deploy) -> Vec<String> {
    let compose = Compose::parse(compose_text);
    CHECKS
        .iter()
        .flat_map(|(name, check)| {
            check(&compose, deploy)
                .into_iter()
                .map(move |p| format!("{name}: {p}"))
        })
        .collect()
}

/// Every service is built here (its context and Dockerfile exist, and so does
/// everything the Dockerfile COPYs from its context) or pulls one of the
/// few public images named in [`PULLED_IMAGES`]: no image that nobody
/// publishes (`asterisk:22`).
fn check_images_and_builds(compose: &Compose, _: &Deploy) -> Vec<String> {
    let mut out = Vec::new();
    for s in &compose.services {
        let Some((context, dockerfile)) = &s.build else {
            match &s.image {
                Some(i) if PULLED_IMAGES.contains(&i.as_str()) => {}
                Some(i) => out.push(format!(
                    "{}: image {i:?} is neither built here nor a known public image",
                    s.name
                )),
                None => out.push(format!("{}: neither image nor build", s.name)),
            }
            continue;
        };
        let ctx = root().join(norm(context));
        if !ctx.is_dir() {
            out.push(format!("{}: build context {context} is missing", s.name));
            continue;
        }
        let df = ctx.join(dockerfile);
        let Ok(text) = std::fs::read_to_string(&df) else {
            out.push(format!("{}: no Dockerfile {}", s.name, df.display()));
            continue;
        };
        for line in text.lines() {
            let Some(args) = line.trim().strip_prefix("COPY ") else {
                continue;
            };
            let words: Vec<&str> = args.split_whitespace().collect();
            if words.iter().any(|w| w.starts_with("--from")) || words.len() < 2 {
                continue;
            }
            for src in words[..words.len() - 1]
                .iter()
                .filter(|w| !w.starts_with("--"))
            {
                if !norm(src).is_empty() && !ctx.join(norm(src)).exists() {
                    out.push(format!(
                        "{}: {} copies {src}, which is not in {context}",
                        s.name,
                        df.display()
                    ));
                }
            }
        }
    }
    out
}

/// Every bind-mounted file exists, and is mounted read-only.
fn check_mounts(compose: &Compose, _: &Deploy) -> Vec<String> {
    let mut out = Vec::new();
    for s in &compose.services {
        for (src, target, ro) in &s.mounts {
            let path = if src.starts_with('/') {
                PathBuf::from(src)
            } else {
                root().join(norm(src))
            };
            if !path.exists() {
                out.push(format!(
                    "{}: {src} (mounted at {target}) does not exist",
                    s.name
                ));
            }
            if !ro {
                out.push(format!(
                    "{}: {src} is mounted writable; configs are :ro",
                    s.name
                ));
            }
        }
    }
    out
}

/// Every service has a fixed address on the one network with a subnet, all
/// different.
fn check_network(compose: &Compose, _: &Deploy) -> Vec<String> {
    let mut out = Vec::new();
    let [(net, subnet)] = compose.subnets.iter().collect::<Vec<_>>()[..] else {
        return vec![format!(
            "expected one network with an ipam subnet, found {}",
            compose.subnets.len()
        )];
    };
    let mut seen = BTreeMap::new();
    for s in &compose.services {
        match s.networks.get(net) {
            Some(Some(addr)) => {
                if !in_subnet(addr, subnet) {
                    out.push(format!("{}: {addr} is not in {subnet}", s.name));
                }
                if let Some(other) = seen.insert(addr.clone(), s.name.clone()) {
                    out.push(format!("{}: {addr} is {other}'s address too", s.name));
                }
            }
            _ => out.push(format!(
                "{}: no fixed ipv4_address on network {net}",
                s.name
            )),
        }
    }
    out
}

/// corral.toml's nodes are dispatcher.list's set 1 and the Asterisk
/// services: each node's `sip_host` and `ari_url` name its service's
/// address, with pjsip.conf's SIP port and http.conf's HTTP port; its id is
/// the service's system name; every Asterisk service mounts the node
/// configs.
fn check_nodes(compose: &Compose, deploy: &Deploy) -> Vec<String> {
    let mut out = Vec::new();
    let nodes = match corral_nodes(deploy) {
        Ok(n) => n,
        Err(e) => return vec![e],
    };
    let sip_port = one(
        ini_values(&deploy.pjsip_conf, "transport-udp", "bind"),
        "pjsip.conf [transport-udp] bind",
    )
    .and_then(|b| host_port(&b, 5060).map(|(_, p)| p));
    let http_port = one(
        ini_values(&deploy.http_conf, "general", "bindport"),
        "http.conf [general] bindport",
    )
    .and_then(|p| {
        p.parse::<u16>()
            .map_err(|_| format!("http.conf: bad bindport {p:?}"))
    });
    let (sip_port, http_port) = match (sip_port, http_port) {
        (Ok(s), Ok(h)) => (s, h),
        (s, h) => return [s.err(), h.err()].into_iter().flatten().collect(),
    };
    match dispatcher_set1(deploy) {
        Ok(set) => {
            let ours: BTreeSet<String> = nodes
                .iter()
                .map(|(_, _, sip)| {
                    host_port(sip, 5060).map_or(sip.clone(), |(h, p)| format!("{h}:{p}"))
                })
                .collect();
            if set != ours {
                out.push(format!(
                    "dispatcher.list set 1 {set:?} is not corral.toml's nodes' sip_host {ours:?}"
                ));
            }
        }
        Err(e) => out.push(e),
    }
    let asterisks = compose.built_from("deploy/asterisk", "deploy/asterisk/Dockerfile");
    if asterisks.is_empty() {
        out.push("no service is built from deploy/asterisk".into());
    }
    let mut matched = BTreeSet::new();
    for (id, ari_url, sip_host) in &nodes {
        let (sip_h, sip_p) = match host_port(sip_host, 5060) {
            Ok(x) => x,
            Err(e) => {
                out.push(format!("node {id}: sip_host {e}"));
                continue;
            }
        };
        let (ari_h, ari_p) = match url_host_port(ari_url, 80) {
            Ok(x) => x,
            Err(e) => {
                out.push(format!("node {id}: ari_url {e}"));
                continue;
            }
        };
        let Some(svc) = asterisks
            .iter()
            .find(|s| s.ipv4().as_deref() == Some(sip_h.as_str()))
        else {
            out.push(format!(
                "node {id}: sip_host {sip_host} is no Asterisk service's address"
            ));
            continue;
        };
        matched.insert(svc.name.clone());
        if ari_h != sip_h {
            out.push(format!(
                "node {id}: ari_url {ari_url} and sip_host {sip_host} name different hosts"
            ));
        }
        if sip_p != sip_port {
            out.push(format!(
                "node {id}: sip_host port {sip_p}, pjsip.conf binds {sip_port}"
            ));
        }
        if ari_p != http_port {
            out.push(format!(
                "node {id}: ari_url port {ari_p}, http.conf binds {http_port}"
            ));
        }
        if svc.environment.get("ASTERISK_SYSTEMNAME") != Some(id) {
            out.push(format!(
                "node {id}: service {} has ASTERISK_SYSTEMNAME {:?}, expected the node id",
                svc.name,
                svc.environment.get("ASTERISK_SYSTEMNAME")
            ));
        }
    }
    for s in &asterisks {
        if !matched.contains(&s.name) {
            out.push(format!(
                "{}: an Asterisk service that corral.toml does not name",
                s.name
            ));
        }
        for conf in NODE_CONFIGS {
            match s.mount_of(&format!("deploy/asterisk/{conf}")) {
                Some((_, target, _)) if target == &format!("/etc/asterisk/{conf}") => {}
                Some((_, target, _)) => out.push(format!(
                    "{}: deploy/asterisk/{conf} mounted at {target}, not /etc/asterisk/{conf}",
                    s.name
                )),
                None => out.push(format!("{}: does not mount deploy/asterisk/{conf}", s.name)),
            }
        }
    }
    out
}

/// Every Asterisk service has its own entity id (a MAC-like id) and system
/// name, which the image's entrypoint renders into asterisk.conf.
fn check_identity(compose: &Compose, _: &Deploy) -> Vec<String> {
    let mut out = Vec::new();
    let mut eids = BTreeMap::new();
    let mut names = BTreeMap::new();
    for s in compose.built_from("deploy/asterisk", "deploy/asterisk/Dockerfile") {
        let eid = s.environment.get("ASTERISK_ENTITYID");
        let name = s.environment.get("ASTERISK_SYSTEMNAME");
        match eid {
            Some(e)
                if e.split(':').count() == 6
                    && e.split(':')
                        .all(|b| b.len() == 2 && u8::from_str_radix(b, 16).is_ok()) =>
            {
                if let Some(other) = eids.insert(e.to_ascii_lowercase(), s.name.clone()) {
                    out.push(format!("{}: entity id {e} is {other}'s too", s.name));
                }
            }
            other => out.push(format!(
                "{}: ASTERISK_ENTITYID {other:?} is not like 02:00:00:00:00:11",
                s.name
            )),
        }
        match name {
            Some(n) if !n.is_empty() => {
                if let Some(other) = names.insert(n.clone(), s.name.clone()) {
                    out.push(format!("{}: system name {n} is {other}'s too", s.name));
                }
            }
            _ => out.push(format!("{}: no ASTERISK_SYSTEMNAME", s.name)),
        }
    }
    out
}

/// kamailio.cfg listens on the Kamailio service's address, on the port it
/// publishes; pjsip.conf identifies the proxy by that address; the config
/// and the dispatcher list are mounted where the image and the config read
/// them.
fn check_kamailio(compose: &Compose, deploy: &Deploy) -> Vec<String> {
    let mut out = Vec::new();
    let kams = compose.built_from("deploy/kamailio", "deploy/kamailio/Dockerfile");
    let [kam] = kams.as_slice() else {
        return vec![format!(
            "{} services built from deploy/kamailio, expected one",
            kams.len()
        )];
    };
    let (proto, addr, port) = match kamailio_listen(deploy) {
        Ok(l) => l,
        Err(e) => return vec![e],
    };
    if kam.ipv4().as_deref() != Some(addr.as_str()) {
        out.push(format!(
            "kamailio.cfg listens on {addr}, the service's address is {:?}",
            kam.ipv4()
        ));
    }
    if !kam.ports.iter().any(|(_, c, p)| *c == port && *p == proto) {
        out.push(format!("kamailio.cfg listens on {proto} port {port}, which the service does not publish ({:?})", kam.ports));
    }
    match one(
        ini_values(&deploy.pjsip_conf, "kamailio", "match"),
        "pjsip.conf [kamailio] match",
    ) {
        Ok(m) if m == addr => {}
        Ok(m) => out.push(format!(
            "pjsip.conf identifies the proxy as {m}, Kamailio is at {addr}"
        )),
        Err(e) => out.push(e),
    }
    let dockerfile =
        std::fs::read_to_string(root().join("deploy/kamailio/Dockerfile")).unwrap_or_default();
    match kam.mount_of("deploy/kamailio/kamailio.cfg") {
        Some((_, target, _)) if dockerfile.contains(&format!("\"{target}\"")) => {}
        Some((_, target, _)) => out.push(format!("kamailio.cfg is mounted at {target}, which deploy/kamailio/Dockerfile does not start with")),
        None => out.push("kamailio.cfg is not mounted".into()),
    }
    match (
        kam.mount_of("deploy/kamailio/dispatcher.list"),
        kamailio_list_file(deploy),
    ) {
        (Some((_, target, _)), Some(list)) if *target == list => {}
        (mount, list) => out.push(format!(
            "dispatcher.list is mounted at {:?}, kamailio.cfg reads {list:?}",
            mount.map(|m| &m.1)
        )),
    }
    // Route ahead: Kamailio asks a corral replica, on corral.toml's API
    // port, with http_client, which the image must install.
    let api_port = deploy
        .corral_toml
        .parse::<toml::Table>()
        .ok()
        .and_then(|d| {
            let l = d.get("api")?.get("listen")?.as_str()?.to_string();
            host_port(&l, 0).ok().map(|(_, p)| p)
        });
    match kamailio_corral_url(deploy).and_then(|u| url_host_port(&u, 80).map(|hp| (u, hp))) {
        Ok((url, (host, port))) => {
            let replicas = compose.built_from(".", "deploy/Dockerfile");
            let replica = compose
                .by_host(&host)
                .filter(|s| replicas.iter().any(|r| r.name == s.name));
            if replica.is_none() {
                out.push(format!(
                    "kamailio.cfg asks corral at {url}, whose host {host} is no corral replica"
                ));
            }
            if Some(port) != api_port {
                out.push(format!(
                    "kamailio.cfg asks corral at {url}, corral.toml's api listens on port {api_port:?}"
                ));
            }
            if !url.ends_with("/v1/route") {
                out.push(format!("kamailio.cfg asks corral at {url}, not /v1/route"));
            }
        }
        Err(e) => out.push(e),
    }
    // http_client's connection takes the module's defaults when declared.
    let at = |what: &str| deploy.kamailio_cfg.find(what);
    let httpcon = at("modparam(\"http_client\", \"httpcon\"");
    for param in ["connection_timeout", "keep_connections"] {
        match (at(&format!("modparam(\"http_client\", \"{param}\"")), httpcon) {
            (Some(p), Some(c)) if p < c => {}
            _ => out.push(format!(
                "kamailio.cfg sets http_client's {param} after the corral connection, which does not take it"
            )),
        }
    }
    if deploy
        .kamailio_cfg
        .contains("loadmodule \"http_client.so\"")
        && !dockerfile.contains("kamailio-utils-modules")
    {
        out.push(
            "kamailio.cfg loads http_client, deploy/kamailio/Dockerfile does not install kamailio-utils-modules"
                .into(),
        );
    }
    out
}

/// The corral replicas' Redis URL (environment, and corral.toml's) names the
/// Redis service and its port, and they start after it.
fn check_redis(compose: &Compose, deploy: &Deploy) -> Vec<String> {
    let mut out = Vec::new();
    let Some(redis) = compose
        .services
        .iter()
        .find(|s| s.image.as_deref().is_some_and(|i| i.starts_with("redis:")))
    else {
        return vec!["no redis service".into()];
    };
    let port = redis
        .command
        .iter()
        .position(|a| a == "--port")
        .and_then(|i| redis.command.get(i + 1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(6379u16);
    let points_at_redis = |url: &str| -> Result<(), String> {
        let (h, p) = url_host_port(url, 6379)?;
        if compose.by_host(&h).map(|s| &s.name) != Some(&redis.name) {
            return Err(format!(
                "{url:?} names host {h}, not the redis service ({} / {:?})",
                redis.name,
                redis.ipv4()
            ));
        }
        if p != port {
            return Err(format!("{url:?} names port {p}, redis listens on {port}"));
        }
        Ok(())
    };
    let doc: toml::Table = deploy.corral_toml.parse().unwrap_or_default();
    if let Some(url) = doc
        .get("store")
        .and_then(|s| s.get("redis_url"))
        .and_then(|u| u.as_str())
        && let Err(e) = points_at_redis(url)
    {
        out.push(format!("deploy/corral.toml store.redis_url: {e}"));
    }
    for s in compose.built_from(".", "deploy/Dockerfile") {
        match s.environment.get("CORRAL_STORE_REDIS_URL") {
            Some(url) => {
                if let Err(e) = points_at_redis(url) {
                    out.push(format!("{}: CORRAL_STORE_REDIS_URL {e}", s.name));
                }
            }
            None => out.push(format!("{}: no CORRAL_STORE_REDIS_URL", s.name)),
        }
        if !s.depends_on.contains(&redis.name) {
            out.push(format!("{}: does not depend on {}", s.name, redis.name));
        }
    }
    out
}

/// The corral replicas run corral.toml (mounted where `--config` says) and
/// get a password for every node it names, and for no other; their API
/// port is the one corral.toml listens on.
fn check_corral(compose: &Compose, deploy: &Deploy) -> Vec<String> {
    let mut out = Vec::new();
    let replicas = compose.built_from(".", "deploy/Dockerfile");
    if replicas.len() < 2 {
        out.push(format!(
            "{} corral replicas built from deploy/Dockerfile, expected two or more",
            replicas.len()
        ));
    }
    let ids: BTreeSet<String> = match corral_nodes(deploy) {
        Ok(n) => n.into_iter().map(|(id, _, _)| id).collect(),
        Err(e) => return vec![e],
    };
    let doc: toml::Table = deploy.corral_toml.parse().unwrap_or_default();
    let api_port = doc
        .get("api")
        .and_then(|a| a.get("listen"))
        .and_then(|l| l.as_str())
        .and_then(|l| host_port(l, 0).ok())
        .map(|(_, p)| p);
    for s in replicas {
        let config = s
            .command
            .iter()
            .position(|a| a == "--config")
            .and_then(|i| s.command.get(i + 1));
        match (config, s.mount_of("deploy/corral.toml")) {
            (Some(c), Some((_, target, _))) if c == target => {}
            (c, m) => out.push(format!(
                "{}: --config {c:?}, deploy/corral.toml mounted at {:?}",
                s.name,
                m.map(|m| &m.1)
            )),
        }
        let wanted: BTreeSet<String> = ids
            .iter()
            .map(|id| {
                format!(
                    "CORRAL_NODE_{}_PASSWORD",
                    id.to_ascii_uppercase().replace('-', "_")
                )
            })
            .collect();
        let given: BTreeSet<String> = s
            .environment
            .keys()
            .filter(|k| k.starts_with("CORRAL_NODE_") && k.ends_with("_PASSWORD"))
            .cloned()
            .collect();
        for missing in wanted.difference(&given) {
            out.push(format!(
                "{}: no {missing} (corral.toml names that node)",
                s.name
            ));
        }
        for extra in given.difference(&wanted) {
            out.push(format!(
                "{}: {extra} names no node of corral.toml (corral refuses to start)",
                s.name
            ));
        }
        for (_, container, _) in &s.ports {
            if Some(*container) != api_port {
                out.push(format!("{}: publishes container port {container}, corral.toml's api listens on {api_port:?}", s.name));
            }
        }
    }
    out
}

/// Secrets come from the environment: every password, token or secret in
/// the compose file is one `${VAR}` (no literal, no default), Redis's
/// password is the one in the replicas' URL, each node's ARI password is
/// the one corral is given for it, and the shipped corral.toml holds none.
fn check_secrets(compose: &Compose, deploy: &Deploy) -> Vec<String> {
    let mut out = Vec::new();
    let secret_key = |k: &str| {
        ["PASSWORD", "TOKEN", "SECRET", "AUTH"]
            .iter()
            .any(|w| k.contains(w))
    };
    for s in &compose.services {
        for (k, v) in &s.environment {
            if secret_key(k) && interpolated_var(v).is_none() {
                out.push(format!(
                    "{}: {k} is not taken from the environment (${{VAR}}): {v:?}",
                    s.name
                ));
            }
            if k.ends_with("_URL")
                && let Some(p) = url_password(v)
                && interpolated_var(&p).is_none()
            {
                out.push(format!("{}: {k} has a literal password", s.name));
            }
        }
        for pair in s.command.windows(2) {
            if pair[0] == "--requirepass" && interpolated_var(&pair[1]).is_none() {
                out.push(format!(
                    "{}: --requirepass is not taken from the environment",
                    s.name
                ));
            }
        }
    }
    // Redis's password and the replicas' URL use one variable.
    let requirepass: Option<String> = compose.services.iter().find_map(|s| {
        s.command
            .windows(2)
            .find(|p| p[0] == "--requirepass")
            .and_then(|p| interpolated_var(&p[1]))
    });
    for s in compose.built_from(".", "deploy/Dockerfile") {
        let url_var = s
            .environment
            .get("CORRAL_STORE_REDIS_URL")
            .and_then(|u| url_password(u))
            .and_then(|p| interpolated_var(&p));
        if url_var != requirepass {
            out.push(format!(
                "{}: Redis URL password {url_var:?}, Redis requires {requirepass:?}",
                s.name
            ));
        }
        // Each node's ARI password is the one its Asterisk is given.
        for (id, _, sip_host) in corral_nodes(deploy).unwrap_or_default() {
            let key = format!(
                "CORRAL_NODE_{}_PASSWORD",
                id.to_ascii_uppercase().replace('-', "_")
            );
            let ours = s.environment.get(&key).and_then(|v| interpolated_var(v));
            let host = host_port(&sip_host, 5060)
                .map(|(h, _)| h)
                .unwrap_or_default();
            let theirs = compose
                .by_host(&host)
                .and_then(|a| a.environment.get("ASTERISK_ARI_PASSWORD"))
                .and_then(|v| interpolated_var(v));
            if ours.is_none() || ours != theirs {
                out.push(format!(
                    "{}: {key} is {ours:?}, node {id}'s ASTERISK_ARI_PASSWORD is {theirs:?}",
                    s.name
                ));
            }
        }
    }
    let doc: toml::Table = deploy.corral_toml.parse().unwrap_or_default();
    if doc.get("api").and_then(|a| a.get("token")).is_some() {
        out.push("deploy/corral.toml sets api.token: use CORRAL_API_TOKEN".into());
    }
    for n in doc
        .get("nodes")
        .and_then(|n| n.as_array())
        .into_iter()
        .flatten()
    {
        if n.get("password").is_some() {
            out.push(
                "deploy/corral.toml sets a node password: use CORRAL_NODE_<ID>_PASSWORD".into(),
            );
        }
    }
    out
}

// ------------------------------------------------------------------ tests

fn shipped_compose() -> String {
    read("docker-compose.yml")
}

#[test]
fn shipped_deployment_is_coherent() {
    let found = problems(&shipped_compose(), &Deploy::shipped());
    assert!(
        found.is_empty(),
        "docker-compose.yml vs deploy/:\n  {}",
        found.join("\n  ")
    );
}

/// The (mutated) compose text and deploy files must make the check named
/// `check` report a problem containing `says`.
#[track_caller]
fn assert_caught(compose_text: &str, deploy: &Deploy, check: &str, says: &str) {
    let found = problems(compose_text, deploy);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with(&format!("{check}: ")) && p.contains(says)),
        "expected a `{check}` problem saying {says:?}, got:\n  {}",
        found.join("\n  ")
    );
}

/// The shipped compose text with `from` (which must be in it, `n` times)
/// replaced by `to`.
#[track_caller]
fn mutate(from: &str, to: &str, n: usize) -> String {
    let text = shipped_compose();
    assert_eq!(
        text.matches(from).count(),
        n,
        "{from:?} in docker-compose.yml"
    );
    text.replace(from, to)
}

#[test]
fn an_image_nobody_publishes_is_caught() {
    let t = mutate(
        "  build: { context: ./deploy/asterisk }\n  image: corral-asterisk:22.10.1",
        "  image: asterisk:22",
        1,
    );
    assert_caught(
        &t,
        &Deploy::shipped(),
        "images and builds",
        "\"asterisk:22\" is neither built here",
    );
    let t = mutate(
        "{ context: ./deploy/kamailio }",
        "{ context: ./deploy/kamailo }",
        1,
    );
    assert_caught(
        &t,
        &Deploy::shipped(),
        "images and builds",
        "build context ./deploy/kamailo is missing",
    );
    let t = mutate(
        "dockerfile: deploy/Dockerfile",
        "dockerfile: deploy/Dockerfile.corral",
        1,
    );
    assert_caught(&t, &Deploy::shipped(), "images and builds", "no Dockerfile");
}

#[test]
fn a_missing_or_writable_mount_is_caught() {
    let t = mutate(
        "./deploy/asterisk/extensions.conf:",
        "./deploy/asterisk/extension.conf:",
        1,
    );
    assert_caught(
        &t,
        &Deploy::shipped(),
        "mounts",
        "extension.conf (mounted at /etc/asterisk/extensions.conf) does not exist",
    );
    let t = mutate(
        "./deploy/corral.toml:/etc/corral/corral.toml:ro",
        "./deploy/corral.toml:/etc/corral/corral.toml",
        1,
    );
    assert_caught(&t, &Deploy::shipped(), "mounts", "mounted writable");
}

#[test]
fn a_shared_or_missing_address_is_caught() {
    let t = mutate("ipv4_address: 10.0.0.22", "ipv4_address: 10.0.0.21", 1);
    assert_caught(
        &t,
        &Deploy::shipped(),
        "network",
        "10.0.0.21 is corral-a's address too",
    );
    let t = mutate("ipv4_address: 10.0.0.3 }", "ipv4_address: 10.1.0.3 }", 1);
    assert_caught(
        &t,
        &Deploy::shipped(),
        "network",
        "10.1.0.3 is not in 10.0.0.0/24",
    );
}

#[test]
fn nodes_that_disagree_are_caught() {
    // A node moved in compose only.
    let t = mutate("ipv4_address: 10.0.0.12 }", "ipv4_address: 10.0.0.14 }", 1);
    assert_caught(
        &t,
        &Deploy::shipped(),
        "asterisk nodes",
        "sip_host 10.0.0.12:5060 is no Asterisk service's address",
    );
    assert_caught(
        &t,
        &Deploy::shipped(),
        "asterisk nodes",
        "ast2: an Asterisk service that corral.toml does not name",
    );
    // The dispatcher list with a node corral does not know.
    let mut d = Deploy::shipped();
    d.dispatcher_list.push_str("1 sip:10.0.0.14:5060\n");
    assert_caught(
        &shipped_compose(),
        &d,
        "asterisk nodes",
        "dispatcher.list set 1",
    );
    // A SIP port that pjsip.conf does not bind, an ARI port that http.conf does not.
    let mut d = Deploy::shipped();
    d.pjsip_conf = d
        .pjsip_conf
        .replace("bind = 0.0.0.0:5060", "bind = 0.0.0.0:5070");
    assert_caught(
        &shipped_compose(),
        &d,
        "asterisk nodes",
        "pjsip.conf binds 5070",
    );
    let mut d = Deploy::shipped();
    d.http_conf = d.http_conf.replace("bindport = 8088", "bindport = 8089");
    assert_caught(
        &shipped_compose(),
        &d,
        "asterisk nodes",
        "http.conf binds 8089",
    );
    // A node named by hostname: Kamailio matches 302 Contacts by IP.
    let mut d = Deploy::shipped();
    d.corral_toml = d
        .corral_toml
        .replace("sip_host = \"10.0.0.13:5060\"", "sip_host = \"ast3:5060\"");
    assert_caught(
        &shipped_compose(),
        &d,
        "asterisk nodes",
        "dispatcher.list set 1",
    );
    // A node that forgets a config.
    let t = mutate(
        "    - ./deploy/asterisk/pjsip.conf:/etc/asterisk/pjsip.conf:ro\n",
        "",
        1,
    );
    assert_caught(
        &t,
        &Deploy::shipped(),
        "asterisk nodes",
        "does not mount deploy/asterisk/pjsip.conf",
    );
    // A system name that is not the node id.
    let t = mutate("ASTERISK_SYSTEMNAME: ast3", "ASTERISK_SYSTEMNAME: node3", 1);
    assert_caught(
        &t,
        &Deploy::shipped(),
        "asterisk nodes",
        "expected the node id",
    );
}

#[test]
fn a_shared_identity_is_caught() {
    let t = mutate("\"02:00:00:00:00:13\"", "\"02:00:00:00:00:11\"", 1);
    assert_caught(
        &t,
        &Deploy::shipped(),
        "node identity",
        "entity id 02:00:00:00:00:11 is ast1's too",
    );
    let t = mutate("\"02:00:00:00:00:13\"", "\"02-00-00-00-00-13\"", 1);
    assert_caught(&t, &Deploy::shipped(), "node identity", "is not like");
}

#[test]
fn a_proxy_that_disagrees_is_caught() {
    let t = mutate(
        "ports: [\"5060:5060/udp\"]",
        "ports: [\"5060:5070/udp\"]",
        1,
    );
    assert_caught(
        &t,
        &Deploy::shipped(),
        "kamailio",
        "which the service does not publish",
    );
    let t = mutate("ipv4_address: 10.0.0.2 }", "ipv4_address: 10.0.0.4 }", 1);
    assert_caught(
        &t,
        &Deploy::shipped(),
        "kamailio",
        "kamailio.cfg listens on 10.0.0.2",
    );
    let mut d = Deploy::shipped();
    d.pjsip_conf = d.pjsip_conf.replace("match = 10.0.0.2", "match = 10.0.0.9");
    assert_caught(
        &shipped_compose(),
        &d,
        "kamailio",
        "identifies the proxy as 10.0.0.9",
    );
    let t = mutate(
        ":/etc/kamailio/dispatcher.list:ro",
        ":/etc/kamailio/farm.list:ro",
        1,
    );
    assert_caught(&t, &Deploy::shipped(), "kamailio", "kamailio.cfg reads");
    // Route ahead asks a corral replica on its API port.
    for (from, to, says) in [
        (
            "corral=>http://10.0.0.21:8088",
            "corral=>http://10.0.0.3:8088",
            "is no corral replica",
        ),
        (
            "corral=>http://10.0.0.21:8088",
            "corral=>http://10.0.0.22:9000",
            "api listens on port",
        ),
        (
            "10.0.0.21:8088/v1/route",
            "10.0.0.21:8088/v1/rooms",
            "not /v1/route",
        ),
    ] {
        let mut d = Deploy::shipped();
        assert!(d.kamailio_cfg.contains(from), "{from}");
        d.kamailio_cfg = d.kamailio_cfg.replace(from, to);
        assert_caught(&shipped_compose(), &d, "kamailio", says);
    }
    let mut d = Deploy::shipped();
    let line = "modparam(\"http_client\", \"keep_connections\", 1)\n";
    assert!(d.kamailio_cfg.contains(line));
    d.kamailio_cfg = d.kamailio_cfg.replace(line, "") + line;
    assert_caught(&shipped_compose(), &d, "kamailio", "keep_connections after");
}

#[test]
fn a_redis_url_elsewhere_is_caught() {
    let t = mutate("@redis:6379\"", "@cache:6379\"", 1);
    assert_caught(&t, &Deploy::shipped(), "redis", "names host cache");
    let t = mutate("@redis:6379\"", "@redis:6380\"", 1);
    assert_caught(&t, &Deploy::shipped(), "redis", "names port 6380");
    let mut d = Deploy::shipped();
    d.corral_toml = d
        .corral_toml
        .replace("redis://redis:6379", "redis://10.0.0.9:6379");
    assert_caught(&shipped_compose(), &d, "redis", "store.redis_url");
}

#[test]
fn a_replica_that_misses_a_node_is_caught() {
    let t = mutate(
        "    CORRAL_NODE_AST3_PASSWORD: \"${CORRAL_ARI_PASSWORD:?set CORRAL_ARI_PASSWORD}\"\n",
        "",
        1,
    );
    assert_caught(
        &t,
        &Deploy::shipped(),
        "corral replicas",
        "no CORRAL_NODE_AST3_PASSWORD",
    );
    let t = mutate("\"/etc/corral/corral.toml\"]", "\"/etc/corral.toml\"]", 1);
    assert_caught(&t, &Deploy::shipped(), "corral replicas", "--config");
    let t = mutate("\"127.0.0.1:8089:8088\"", "\"127.0.0.1:8089:8089\"", 1);
    assert_caught(
        &t,
        &Deploy::shipped(),
        "corral replicas",
        "publishes container port 8089",
    );
}

#[test]
fn a_committed_secret_is_caught() {
    let t = mutate(
        "CORRAL_API_TOKEN: \"${CORRAL_API_TOKEN:?set CORRAL_API_TOKEN}\"",
        "CORRAL_API_TOKEN: hunter2",
        1,
    );
    assert_caught(
        &t,
        &Deploy::shipped(),
        "secrets",
        "CORRAL_API_TOKEN is not taken from the environment",
    );
    let t = mutate(
        "CORRAL_API_TOKEN: \"${CORRAL_API_TOKEN:?set CORRAL_API_TOKEN}\"",
        "CORRAL_API_TOKEN: \"${CORRAL_API_TOKEN:-hunter2}\"",
        1,
    );
    assert_caught(
        &t,
        &Deploy::shipped(),
        "secrets",
        "CORRAL_API_TOKEN is not taken from the environment",
    );
    let t = mutate(
        "redis://:${CORRAL_REDIS_PASSWORD:?set CORRAL_REDIS_PASSWORD}@",
        "redis://:hunter2@",
        1,
    );
    assert_caught(
        &t,
        &Deploy::shipped(),
        "secrets",
        "CORRAL_STORE_REDIS_URL has a literal password",
    );
    let t = mutate(
        "ASTERISK_ARI_PASSWORD: \"${CORRAL_ARI_PASSWORD:?set CORRAL_ARI_PASSWORD}\"\n    networks:\n      farm: { ipv4_address: 10.0.0.12 }",
        "ASTERISK_ARI_PASSWORD: \"${AST2_PASSWORD:?}\"\n    networks:\n      farm: { ipv4_address: 10.0.0.12 }",
        1,
    );
    assert_caught(
        &t,
        &Deploy::shipped(),
        "secrets",
        "node ast2's ASTERISK_ARI_PASSWORD is Some(\"AST2_PASSWORD\")",
    );
    let mut d = Deploy::shipped();
    d.corral_toml = d.corral_toml.replace(
        "username = \"corral\"\nsip_host = \"10.0.0.11:5060\"",
        "username = \"corral\"\npassword = \"change-me\"\nsip_host = \"10.0.0.11:5060\"",
    );
    assert_caught(&shipped_compose(), &d, "secrets", "sets a node password");
}

#[test]
fn interpolation_is_read_as_compose_reads_it() {
    assert_eq!(interpolated_var("${A_B}").as_deref(), Some("A_B"));
    assert_eq!(interpolated_var("${A:?set A}").as_deref(), Some("A"));
    assert_eq!(interpolated_var("${A?}").as_deref(), Some("A"));
    assert_eq!(interpolated_var("${A:-x}"), None);
    assert_eq!(interpolated_var("x${A}"), None);
    assert_eq!(interpolated_var("${A}${B}"), None);
    assert_eq!(
        url_password("redis://:${P:?x}@redis:6379").as_deref(),
        Some("${P:?x}")
    );
    assert_eq!(
        url_host_port("redis://:${P:?x}@redis:6379/0", 1),
        Ok(("redis".into(), 6379))
    );
    assert!(in_subnet("10.0.0.13", "10.0.0.0/24") && !in_subnet("10.0.1.13", "10.0.0.0/24"));
}

// ------------------------------------------------------ the Asterisk image

/// The Asterisk image builds every module corral needs, and modules.conf
/// requires only modules it builds (a required module that is not there
/// stops Asterisk at start).
#[test]
fn the_asterisk_image_builds_what_corral_needs() {
    let built: BTreeSet<String> = read("deploy/asterisk/image/modules.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    for m in MUST_BUILD {
        assert!(
            built.contains(*m),
            "deploy/asterisk/image/modules.txt lacks {m}"
        );
    }
    let modules_conf = read("deploy/asterisk/image/etc/modules.conf");
    let required = ini_values(&modules_conf, "modules", "require");
    assert!(!required.is_empty());
    for r in required {
        let name = r.trim_end_matches(".so");
        assert!(
            built.contains(name),
            "modules.conf requires {r}, which modules.txt does not build"
        );
    }
    let dockerfile = read("deploy/asterisk/Dockerfile");
    let arg = |name: &str| {
        dockerfile
            .lines()
            .find_map(|l| l.strip_prefix(&format!("ARG {name}=")))
            .map(str::to_string)
    };
    let commit = arg("ASTERISK_COMMIT").expect("ASTERISK_COMMIT pinned");
    assert!(
        commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit()),
        "{commit}"
    );
    let version = arg("ASTERISK_VERSION").expect("ASTERISK_VERSION pinned");
    assert!(version.starts_with("22."), "Asterisk 22, not {version}");
    let compose = Compose::parse(&shipped_compose());
    for s in compose.built_from("deploy/asterisk", "deploy/asterisk/Dockerfile") {
        assert_eq!(
            s.image.as_deref(),
            Some(format!("corral-asterisk:{version}").as_str()),
            "{}: the image tag names the version built",
            s.name
        );
    }
}

/// Runs the image's entrypoint in render-only mode on the shipped configs.
fn render_node(env: &[(&str, &str)]) -> (std::process::Output, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for f in NODE_CONFIGS {
        std::fs::copy(root().join("deploy/asterisk").join(f), src.join(f)).unwrap();
    }
    let dst = dir.path().join("etc");
    let mut cmd = std::process::Command::new("sh");
    cmd.arg(root().join("deploy/asterisk/image/docker-entrypoint.sh"))
        .env_remove("ASTERISK_ENTITYID")
        .env_remove("ASTERISK_SYSTEMNAME")
        .env_remove("ASTERISK_ARI_PASSWORD")
        .env("ASTERISK_CONFIG_SOURCE", &src)
        .env("ASTERISK_CONFIG_DIR", &dst)
        .env("ASTERISK_RENDER_ONLY", "1")
        .envs(env.iter().copied());
    (cmd.output().expect("running sh"), dst, dir)
}

#[test]
fn the_entrypoint_renders_the_node_from_the_environment() {
    let node = [
        ("ASTERISK_ENTITYID", "02:00:00:00:00:12"),
        ("ASTERISK_SYSTEMNAME", "ast2"),
        ("ASTERISK_ARI_PASSWORD", "s3cret-from-env"),
    ];
    let (out, etc, _dir) = render_node(&node);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conf = std::fs::read_to_string(etc.join("asterisk.conf")).unwrap();
    assert!(
        conf.starts_with(&format!("[directories]\nastetcdir => {}\n", etc.display())),
        "{conf}"
    );
    assert_eq!(
        ini_values(&conf, "options", "entityid"),
        ["02:00:00:00:00:12"],
        "{conf}"
    );
    assert_eq!(
        ini_values(&conf, "options", "systemname"),
        ["ast2"],
        "{conf}"
    );
    let ari = std::fs::read_to_string(etc.join("ari.conf")).unwrap();
    assert_eq!(
        ini_values(&ari, "corral", "password"),
        ["s3cret-from-env"],
        "{ari}"
    );
    // Everything else is the shipped files, unchanged.
    for f in ["extensions.conf", "pjsip.conf", "http.conf"] {
        assert_eq!(
            std::fs::read_to_string(etc.join(f)).unwrap(),
            read(&format!("deploy/asterisk/{f}")),
            "{f}"
        );
    }
    // Each variable is required and checked.
    for (drop, says) in [
        ("ASTERISK_ENTITYID", "set ASTERISK_ENTITYID"),
        ("ASTERISK_SYSTEMNAME", "set ASTERISK_SYSTEMNAME"),
        ("ASTERISK_ARI_PASSWORD", "set ASTERISK_ARI_PASSWORD"),
    ] {
        let env: Vec<_> = node.iter().copied().filter(|(k, _)| *k != drop).collect();
        let (out, _, _dir) = render_node(&env);
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains(says),
            "without {drop}"
        );
    }
    for (key, bad) in [
        ("ASTERISK_ENTITYID", "02:00:00:00:12"),
        ("ASTERISK_SYSTEMNAME", "ast 2"),
        ("ASTERISK_ARI_PASSWORD", "a;b"),
    ] {
        let env: Vec<_> = node
            .iter()
            .map(|&(k, v)| if k == key { (k, bad) } else { (k, v) })
            .collect();
        let (out, _, _dir) = render_node(&env);
        assert!(!out.status.success(), "{key}={bad:?} accepted");
    }
}
