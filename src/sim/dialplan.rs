//! The node's dialplan: maps the extension of an inbound call (the SIP
//! request URI's user part) to `Stasis(app,args...)`.
//!
//! Format: one rule a line, `PATTERN => APP[,ARG...]`; blank lines and lines
//! starting with `#` or `;` are ignored; the first matching rule wins.
//! PATTERN is literal text with captures: `{name}` matches one or more of
//! `[A-Za-z0-9_-]`, `{name:alnum}` one or more of `[A-Za-z0-9]`. Captures
//! are greedy and backtrack, so in `agent-{queue}-{agent}` the agent is the
//! part after the last `-`. `{name}` in APP or ARGs is replaced by the
//! capture. The reference dialplan:
//!
//! ```text
//! conf-{room}           => corral,conference,{room}
//! queue-{name}          => corral,queue,{name}
//! agent-{queue}-{agent} => corral,agent,{queue},{agent}
//! {token:alnum}         => corral
//! ```
//!
//! An extension no rule matches is a SIP 404: the call gets no channel.

use std::fmt;

/// Why a dialplan text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialplanError {
    /// A line without `=>`, or with an empty pattern or app.
    #[error("dialplan line {line}: expected `PATTERN => APP[,ARG...]`")]
    Syntax {
        /// 1-based line number.
        line: usize,
    },
    /// A `{` without `}`, an empty or unknown capture, or two captures in a row.
    #[error("dialplan line {line}: bad capture: {reason}")]
    Capture {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// No rule at all.
    #[error("dialplan has no rules")]
    Empty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Word,
    Alnum,
}

impl Class {
    fn accepts(self, b: u8) -> bool {
        match self {
            Class::Word => b.is_ascii_alphanumeric() || b == b'_' || b == b'-',
            Class::Alnum => b.is_ascii_alphanumeric(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    Cap(String, Class),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    text: String,
    pattern: Vec<Seg>,
    app: String,
    args: Vec<String>,
}

/// A parsed dialplan (see the module docs for the format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialplan {
    context: String,
    rules: Vec<Rule>,
}

/// Where an extension leads: `Stasis(app_data)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialplanMatch {
    /// The Stasis app.
    pub app: String,
    /// The Stasis args (StasisStart `args`).
    pub args: Vec<String>,
    /// `app,arg1,arg2...` as in the channel's `dialplan.app_data`.
    pub app_data: String,
}

impl Dialplan {
    /// The context name inbound calls run in (`dialplan.context`).
    pub const CONTEXT: &'static str = "from-proxy";

    /// The reference deployment's dialplan for Stasis app `app`.
    pub fn reference(app: &str) -> Self {
        let text = format!(
            "conf-{{room}} => {app},conference,{{room}}\n\
             queue-{{name}} => {app},queue,{{name}}\n\
             agent-{{queue}}-{{agent}} => {app},agent,{{queue}},{{agent}}\n\
             {{token:alnum}} => {app}\n"
        );
        match Self::parse(&text) {
            Ok(d) => d,
            // The text above is fixed and parses; an app name with odd
            // characters still yields a usable literal rule set.
            Err(_) => Dialplan {
                context: Self::CONTEXT.to_string(),
                rules: Vec::new(),
            },
        }
    }

    /// Parses the text format.
    ///
    /// # Errors
    /// [`DialplanError`] naming the first bad line.
    pub fn parse(text: &str) -> Result<Self, DialplanError> {
        let mut rules = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
                continue;
            }
            let (pat, target) = l.split_once("=>").ok_or(DialplanError::Syntax { line })?;
            let (pat, target) = (pat.trim(), target.trim());
            if pat.is_empty() || target.is_empty() {
                return Err(DialplanError::Syntax { line });
            }
            let pattern = parse_pattern(pat, line)?;
            let mut parts = target.split(',').map(|s| s.trim().to_string());
            let app = parts.next().unwrap_or_default();
            if app.is_empty() {
                return Err(DialplanError::Syntax { line });
            }
            rules.push(Rule {
                text: l.to_string(),
                pattern,
                app,
                args: parts.collect(),
            });
        }
        if rules.is_empty() {
            return Err(DialplanError::Empty);
        }
        Ok(Dialplan {
            context: Self::CONTEXT.to_string(),
            rules,
        })
    }

    /// The context name (`from-proxy`).
    pub fn context(&self) -> &str {
        &self.context
    }

    /// Runs `exten` through the rules.
    pub fn route(&self, exten: &str) -> Option<DialplanMatch> {
        let bytes = exten.as_bytes();
        for rule in &self.rules {
            let mut caps = Vec::new();
            if match_segs(&rule.pattern, bytes, &mut caps) {
                let subst = |t: &str| substitute(t, &caps);
                let app = subst(&rule.app);
                let args: Vec<String> = rule.args.iter().map(|a| subst(a)).collect();
                let mut app_data = app.clone();
                for a in &args {
                    app_data.push(',');
                    app_data.push_str(a);
                }
                return Some(DialplanMatch {
                    app,
                    args,
                    app_data,
                });
            }
        }
        None
    }
}

impl fmt::Display for Dialplan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.rules {
            writeln!(f, "{}", r.text)?;
        }
        Ok(())
    }
}

fn parse_pattern(pat: &str, line: usize) -> Result<Vec<Seg>, DialplanError> {
    let mut segs = Vec::new();
    let mut rest = pat;
    while !rest.is_empty() {
        if let Some(open) = rest.find('{') {
            if open > 0 {
                segs.push(Seg::Lit(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or_else(|| DialplanError::Capture {
                line,
                reason: "missing `}`".into(),
            })?;
            let inner = &after[..close];
            let (name, class) = match inner.split_once(':') {
                None => (inner, Class::Word),
                Some((n, "alnum")) => (n, Class::Alnum),
                Some((n, "word")) => (n, Class::Word),
                Some((_, other)) => {
                    return Err(DialplanError::Capture {
                        line,
                        reason: format!("unknown class {other:?} (use alnum or word)"),
                    });
                }
            };
            if name.is_empty() {
                return Err(DialplanError::Capture {
                    line,
                    reason: "empty capture name".into(),
                });
            }
            if matches!(segs.last(), Some(Seg::Cap(..))) {
                return Err(DialplanError::Capture {
                    line,
                    reason: "two captures need literal text between them".into(),
                });
            }
            segs.push(Seg::Cap(name.to_string(), class));
            rest = &after[close + 1..];
        } else {
            segs.push(Seg::Lit(rest.to_string()));
            rest = "";
        }
    }
    Ok(segs)
}

/// Greedy matching with backtracking; captures are ASCII, so byte offsets
/// are char boundaries.
fn match_segs(segs: &[Seg], s: &[u8], caps: &mut Vec<(String, String)>) -> bool {
    match segs.split_first() {
        None => s.is_empty(),
        Some((Seg::Lit(l), rest)) => {
            s.starts_with(l.as_bytes()) && match_segs(rest, &s[l.len()..], caps)
        }
        Some((Seg::Cap(name, class), rest)) => {
            let max = s.iter().take_while(|b| class.accepts(**b)).count();
            for n in (1..=max).rev() {
                caps.push((name.clone(), String::from_utf8_lossy(&s[..n]).into_owned()));
                if match_segs(rest, &s[n..], caps) {
                    return true;
                }
                caps.pop();
            }
            false
        }
    }
}

fn substitute(template: &str, caps: &[(String, String)]) -> String {
    let mut out = template.to_string();
    for (name, value) in caps {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_dialplan_routes_the_four_kinds() {
        let d = Dialplan::reference("corral");
        let m = d.route("conf-sales").expect("conf");
        assert_eq!(m.app_data, "corral,conference,sales");
        let m = d.route("conf-my-room").expect("conf with dash");
        assert_eq!(m.args, vec!["conference", "my-room"]);
        let m = d.route("queue-support").expect("queue");
        assert_eq!(m.args, vec!["queue", "support"]);
        let m = d.route("agent-sales-x-bob").expect("agent");
        assert_eq!(m.args, vec!["agent", "sales-x", "bob"]);
        let m = d.route("Tok123abc").expect("token");
        assert_eq!((m.app.as_str(), m.args.len()), ("corral", 0));
        assert_eq!(m.app_data, "corral");
        assert!(d.route("bad-token").is_none());
        assert!(d.route("").is_none());
        assert!(d.route("conf-").is_none());
        assert!(d.route("tök").is_none());
    }

    #[test]
    fn parse_errors_name_the_line() {
        assert_eq!(
            Dialplan::parse("# c\nfoo\n"),
            Err(DialplanError::Syntax { line: 2 })
        );
        assert!(matches!(
            Dialplan::parse("a{x => app"),
            Err(DialplanError::Capture { line: 1, .. })
        ));
        assert!(matches!(
            Dialplan::parse("{a}{b} => app"),
            Err(DialplanError::Capture { .. })
        ));
        assert_eq!(Dialplan::parse("\n# only\n"), Err(DialplanError::Empty));
    }

    #[test]
    fn custom_rules_substitute_captures() {
        let d = Dialplan::parse("t{tok:alnum} => other,resume,{tok}\n").expect("parse");
        let m = d.route("tabc").expect("match");
        assert_eq!(m.app_data, "other,resume,abc");
    }
}
