//! The files corral ships in `deploy/`, embedded, and rendered for one
//! machine: ports, addresses and paths filled in, nothing else changed.
//!
//! Each change names the line it replaces (a key in a section, or a
//! directive); a change whose line is missing from the shipped file is an
//! error, so editing `deploy/` in a way the testbed does not expect fails
//! loudly instead of testing something else.

use super::Error;

/// `deploy/asterisk/extensions.conf`: the reference dialplan.
pub const EXTENSIONS_CONF: &str = include_str!("../../deploy/asterisk/extensions.conf");
/// `deploy/asterisk/pjsip.conf`: the transport and the proxy's endpoint.
pub const PJSIP_CONF: &str = include_str!("../../deploy/asterisk/pjsip.conf");
/// `deploy/asterisk/http.conf`: where ARI listens.
pub const HTTP_CONF: &str = include_str!("../../deploy/asterisk/http.conf");
/// `deploy/asterisk/ari.conf`: corral's ARI user.
pub const ARI_CONF: &str = include_str!("../../deploy/asterisk/ari.conf");
/// `deploy/asterisk/asterisk.conf`: a node's identity.
pub const ASTERISK_CONF: &str = include_str!("../../deploy/asterisk/asterisk.conf");
/// `deploy/kamailio/kamailio.cfg`: the proxy.
pub const KAMAILIO_CFG: &str = include_str!("../../deploy/kamailio/kamailio.cfg");
/// `deploy/kamailio/dispatcher.list`: the farm's nodes for the proxy.
pub const DISPATCHER_LIST: &str = include_str!("../../deploy/kamailio/dispatcher.list");
/// `deploy/corral.toml`: corral's configuration.
pub const CORRAL_TOML: &str = include_str!("../../deploy/corral.toml");

/// The ARI user and password of the shipped `ari.conf`.
pub const ARI_USER: &str = "corral";
/// The ARI password of the shipped `ari.conf` (a placeholder the operator
/// changes; the testbed keeps it, as nothing else is changed).
pub const ARI_PASSWORD: &str = "change-me";

/// Sets `key = value` in `[section]` of an Asterisk-style config file,
/// keeping the line's comment. A commented-out key (`; key = ...`) is
/// uncommented. Exactly one line must carry the key in that section.
///
/// # Errors
/// [`Error::Render`] when the section or key is not in `text` (or is there
/// twice).
pub fn set_ini(
    file: &str,
    text: &str,
    section: &str,
    key: &str,
    value: &str,
) -> Result<String, Error> {
    let mut current = String::new();
    let mut hits = 0;
    let mut out = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix('[') {
            current = rest
                .split(']')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
        }
        let uncommented = trimmed.trim_start_matches(';').trim_start();
        let is_key = uncommented
            .split_once('=')
            .is_some_and(|(k, _)| k.trim() == key);
        if current == section && is_key {
            hits += 1;
            let comment = uncommented
                .split_once('=')
                .and_then(|(_, v)| v.split_once(';'))
                .map(|(_, c)| format!(" ;{c}"))
                .unwrap_or_default();
            out.push(format!("{key} = {value}{comment}"));
        } else {
            out.push(line.to_string());
        }
    }
    if hits != 1 {
        return Err(Error::Render {
            file: file.to_string(),
            what: format!("[{section}] {key} found {hits} times, expected once"),
        });
    }
    Ok(out.join("\n") + "\n")
}

/// Replaces the one line of `text` that starts with `prefix` by `line`.
///
/// # Errors
/// [`Error::Render`] when no line, or more than one, starts with `prefix`.
pub fn replace_line(file: &str, text: &str, prefix: &str, line: &str) -> Result<String, Error> {
    let hits = text.lines().filter(|l| l.starts_with(prefix)).count();
    if hits != 1 {
        return Err(Error::Render {
            file: file.to_string(),
            what: format!("a line starting with {prefix:?} found {hits} times, expected once"),
        });
    }
    let out: Vec<&str> = text
        .lines()
        .map(|l| if l.starts_with(prefix) { line } else { l })
        .collect();
    Ok(out.join("\n") + "\n")
}

/// Replaces every occurrence of `from` by `to`; `from` must occur.
///
/// # Errors
/// [`Error::Render`] when `from` is not in `text`.
pub fn replace_all(file: &str, text: &str, from: &str, to: &str) -> Result<String, Error> {
    if !text.contains(from) {
        return Err(Error::Render {
            file: file.to_string(),
            what: format!("{from:?} not found"),
        });
    }
    Ok(text.replace(from, to))
}

/// One node's addresses, as the rendered files need them.
#[derive(Debug, Clone)]
pub struct NodeAddrs {
    /// Node id (`ast1`).
    pub id: String,
    /// Address SIP, HTTP and RTP bind to.
    pub bind: String,
    /// SIP (UDP) port.
    pub sip_port: u16,
    /// HTTP/ARI port.
    pub http_port: u16,
    /// The entity id (`asterisk_id`), unique per node.
    pub entity_id: String,
}

/// The node's `pjsip.conf`: the transport on `bind:sip_port`, the proxy's
/// endpoint identified by the proxy's address, the queue member's phone
/// (`alice`) at `phone`.
///
/// # Errors
/// [`Error::Render`] if the shipped file changed shape.
pub fn pjsip_conf(node: &NodeAddrs, proxy_addr: &str, phone: &str) -> Result<String, Error> {
    let f = "deploy/asterisk/pjsip.conf";
    let t = set_ini(
        f,
        PJSIP_CONF,
        "transport-udp",
        "bind",
        &format!("{}:{}", node.bind, node.sip_port),
    )?;
    let t = set_ini(f, &t, "kamailio", "match", proxy_addr)?;
    set_ini(f, &t, "alice", "contact", &format!("sip:alice@{phone}"))
}

/// The node's `http.conf`: ARI on `bind:http_port`.
///
/// # Errors
/// [`Error::Render`] if the shipped file changed shape.
pub fn http_conf(node: &NodeAddrs) -> Result<String, Error> {
    let f = "deploy/asterisk/http.conf";
    let t = set_ini(f, HTTP_CONF, "general", "bindaddr", &node.bind)?;
    set_ini(f, &t, "general", "bindport", &node.http_port.to_string())
}

/// The node's `asterisk.conf`: the shipped `[options]` with the node's
/// entity id and system name, after the `[directories]` of this install.
///
/// # Errors
/// [`Error::Render`] if the shipped file changed shape.
pub fn asterisk_conf(node: &NodeAddrs, directories: &str) -> Result<String, Error> {
    let f = "deploy/asterisk/asterisk.conf";
    let t = set_ini(f, ASTERISK_CONF, "options", "entityid", &node.entity_id)?;
    let t = set_ini(f, &t, "options", "systemname", &node.id)?;
    Ok(format!("{directories}\n{t}"))
}

/// The line of `kamailio.cfg` that names corral's API for the route-ahead
/// lookup (the start of it; the testbed replaces the whole line).
pub const KAMAILIO_CORRAL_LINE: &str = "modparam(\"http_client\", \"httpcon\", \"corral=>";

/// Kamailio's config: listening on `addr:port`, reading `dispatcher_list`,
/// asking corral's API at `corral_api` (`host:port`) where rooms live.
///
/// # Errors
/// [`Error::Render`] if the shipped file changed shape.
pub fn kamailio_cfg(
    addr: &str,
    port: u16,
    dispatcher_list: &str,
    corral_api: &str,
) -> Result<String, Error> {
    let f = "deploy/kamailio/kamailio.cfg";
    let t = replace_line(
        f,
        KAMAILIO_CFG,
        "listen=",
        &format!("listen=udp:{addr}:{port}"),
    )?;
    let t = replace_line(
        f,
        &t,
        KAMAILIO_CORRAL_LINE,
        &format!("{KAMAILIO_CORRAL_LINE}http://{corral_api}/v1/route\")"),
    )?;
    replace_all(f, &t, "/etc/kamailio/dispatcher.list", dispatcher_list)
}

/// `dispatcher.list` with the farm's nodes in set 1, in the shipped
/// format (the shipped lines' comments kept, its addresses replaced).
///
/// # Errors
/// [`Error::Render`] if the shipped file has no set-1 line to take the
/// format from.
pub fn dispatcher_list(nodes: &[NodeAddrs]) -> Result<String, Error> {
    let mut out: Vec<String> = DISPATCHER_LIST
        .lines()
        .filter(|l| l.trim_start().starts_with('#') || l.trim().is_empty())
        .map(str::to_string)
        .collect();
    if !DISPATCHER_LIST.lines().any(|l| l.starts_with("1 sip:")) {
        return Err(Error::Render {
            file: "deploy/kamailio/dispatcher.list".into(),
            what: "no `1 sip:` line".into(),
        });
    }
    for n in nodes {
        out.push(format!("1 sip:{}:{}", n.bind, n.sip_port));
    }
    Ok(out.join("\n") + "\n")
}

/// corral's config for these nodes: the shipped `deploy/corral.toml`, with
/// each `[[nodes]]` entry's `ari_url` and `sip_host` filled in (the shipped
/// file's first node is the template for nodes beyond its count), and
/// `[api] listen` set. The store and secrets come from the environment
/// (`CORRAL_STORE_REDIS_URL`, `CORRAL_NODE_<ID>_PASSWORD`), as the shipped
/// file expects.
///
/// # Errors
/// [`Error::Render`] if the shipped file is not valid TOML or lacks
/// `[[nodes]]`.
pub fn corral_toml(nodes: &[NodeAddrs], api_listen: &str) -> Result<String, Error> {
    let bad = |what: String| Error::Render {
        file: "deploy/corral.toml".into(),
        what,
    };
    let mut doc: toml::Table = CORRAL_TOML.parse().map_err(|e| bad(format!("{e}")))?;
    let template = doc
        .get("nodes")
        .and_then(|n| n.as_array())
        .and_then(|a| a.first())
        .and_then(|n| n.as_table())
        .cloned()
        .ok_or_else(|| bad("no [[nodes]]".into()))?;
    let shipped: Vec<toml::Table> = doc
        .get("nodes")
        .and_then(|n| n.as_array())
        .map(|a| a.iter().filter_map(|n| n.as_table().cloned()).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let mut t = shipped.get(i).cloned().unwrap_or_else(|| template.clone());
        t.insert("id".into(), n.id.clone().into());
        t.insert(
            "ari_url".into(),
            format!("http://{}:{}", n.bind, n.http_port).into(),
        );
        t.insert(
            "sip_host".into(),
            format!("{}:{}", n.bind, n.sip_port).into(),
        );
        out.push(toml::Value::Table(t));
    }
    doc.insert("nodes".into(), toml::Value::Array(out));
    let api = doc
        .entry("api")
        .or_insert_with(|| toml::Value::Table(Default::default()));
    if let Some(api) = api.as_table_mut() {
        api.insert("listen".into(), api_listen.into());
    }
    toml::to_string(&doc).map_err(|e| bad(format!("{e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeAddrs {
        NodeAddrs {
            id: "ast1".into(),
            bind: "127.0.0.1".into(),
            sip_port: 5161,
            http_port: 8161,
            entity_id: "02:00:00:00:00:01".into(),
        }
    }

    #[test]
    fn set_ini_changes_one_key_in_one_section() {
        let t = "[a]\nx = 1 ; one\n[b]\nx = 2\n; y = 3\n";
        let r = set_ini("f", t, "a", "x", "9").unwrap();
        assert_eq!(r, "[a]\nx = 9 ; one\n[b]\nx = 2\n; y = 3\n");
        let r = set_ini("f", t, "b", "y", "4").unwrap();
        assert!(r.contains("\ny = 4\n"), "{r}");
        assert!(set_ini("f", t, "a", "z", "1").is_err());
        assert!(set_ini("f", "[a]\nx=1\nx=2\n", "a", "x", "1").is_err());
    }

    #[test]
    fn shipped_files_render() {
        let n = node();
        let p = pjsip_conf(&n, "127.0.0.1", "127.0.0.1:5170").unwrap();
        assert!(p.contains("contact = sip:alice@127.0.0.1:5170"), "{p}");
        assert!(p.contains("bind = 127.0.0.1:5161"), "{p}");
        assert!(p.contains("match = 127.0.0.1"), "{p}");
        let h = http_conf(&n).unwrap();
        assert!(
            h.contains("bindport = 8161") && h.contains("bindaddr = 127.0.0.1"),
            "{h}"
        );
        let a = asterisk_conf(&n, "[directories]\nastrundir => /x").unwrap();
        assert!(
            a.starts_with("[directories]") && a.contains("entityid = 02:00:00:00:00:01"),
            "{a}"
        );
        let k = kamailio_cfg("127.0.0.1", 5999, "/tmp/d.list", "127.0.0.1:8099").unwrap();
        assert!(k.contains("listen=udp:127.0.0.1:5999") && k.contains("\"/tmp/d.list\""));
        assert!(
            k.contains("\"corral=>http://127.0.0.1:8099/v1/route\")") && !k.contains("10.0.0.21"),
            "{k}"
        );
        let d = dispatcher_list(std::slice::from_ref(&n)).unwrap();
        assert!(d.contains("1 sip:127.0.0.1:5161"), "{d}");
        let c = corral_toml(
            &[
                n.clone(),
                NodeAddrs {
                    id: "ast9".into(),
                    ..n
                },
            ],
            "127.0.0.1:1",
        )
        .unwrap();
        let cfg: toml::Table = c.parse().unwrap();
        let nodes = cfg["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[1]["id"].as_str(), Some("ast9"));
        assert_eq!(nodes[0]["ari_url"].as_str(), Some("http://127.0.0.1:8161"));
    }
}
