//! Loading `extensions.conf` as Asterisk 22 does (`main/config.c` for the
//! file syntax, `pbx/pbx_config.c` for its meaning), refusing with the
//! line number whatever the simulator cannot run the way Asterisk would.
//!
//! Modelled: `[context]` sections (repeated ones merge), `[general]`
//! (`static`, `writeprotect`, `clearglobalvars`, `userscontext` have no
//! effect here; `autofallthrough=no`, `extenpatternmatchnew=yes` and
//! `overrideswitch` are refused; other keys are ignored, as Asterisk
//! does), `[globals]` (substituted in order), `exten => NAME,PRIORITY,APP(DATA)`
//! and `same => PRIORITY,...`, priorities `1`, `n`, `s`/`same`, `N+M`, an
//! existing label, and `(label)`; `;` comments and `\;`; global variables in
//! extension names. Refused: `#include`/`#exec`, `;--` block comments,
//! templates, `include =>`, `switch =>`, `ignorepat =>`, hints, caller-id
//! matches (`NAME/CID`), unknown directives, unknown applications and
//! functions, two priorities at one place, and anything Asterisk itself
//! would drop with a warning.

use super::expr;
use super::pattern::{ExtenName, check_pattern, ext_cmp};
use super::subst::{self, Vars};
use super::{App, Context, Dialplan, DialplanError, Extension, Priority};

fn err(line: usize, reason: impl Into<String>) -> DialplanError {
    DialplanError::Line {
        line,
        reason: reason.into(),
    }
}

/// One `name = value` or `name => value` line of a section.
struct Entry {
    line: usize,
    name: String,
    value: Vec<u8>,
}

struct Section {
    name: String,
    entries: Vec<Entry>,
}

/// `main/config.c`: sections and their entries.
fn read_sections(text: &str) -> Result<Vec<Section>, DialplanError> {
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let raw = raw.as_bytes();
        if raw.contains(&0) {
            return Err(err(line, "a NUL byte"));
        }
        // Comments: `;` unless escaped as `\;` (which becomes `;`).
        let mut buf = Vec::with_capacity(raw.len());
        let mut j = 0;
        while j < raw.len() {
            let c = raw[j];
            if c == b';' {
                if buf.last() == Some(&b'\\') {
                    buf.pop();
                    buf.push(b';');
                    j += 1;
                    continue;
                }
                if raw.get(j + 1) == Some(&b'-')
                    && raw.get(j + 2) == Some(&b'-')
                    && raw.get(j + 3) != Some(&b'-')
                {
                    return Err(err(line, "block comments (`;--`) are not modelled"));
                }
                break;
            }
            buf.push(c);
            j += 1;
        }
        let l = trim(&buf);
        if l.is_empty() {
            continue;
        }
        match l[0] {
            b'[' => {
                let Some(close) = l.iter().position(|b| *b == b']') else {
                    return Err(err(line, "a section without its closing `]`"));
                };
                if !trim(&l[close + 1..]).is_empty() {
                    return Err(err(
                        line,
                        "section templates and options (`](...)`) are not modelled",
                    ));
                }
                sections.push(Section {
                    name: String::from_utf8_lossy(&l[1..close]).into_owned(),
                    entries: Vec::new(),
                });
            }
            b'#' => return Err(err(line, "`#include` and `#exec` are not modelled")),
            _ => {
                let Some(eq) = l.iter().position(|b| *b == b'=') else {
                    return Err(err(line, "expected `name = value` or `name => value`"));
                };
                let name = trim(&l[..eq]);
                let mut value = &l[eq + 1..];
                if value.first() == Some(&b'>') {
                    value = &value[1..];
                }
                let Some(section) = sections.last_mut() else {
                    return Err(err(line, "a setting before the first `[section]`"));
                };
                section.entries.push(Entry {
                    line,
                    name: String::from_utf8_lossy(name).into_owned(),
                    value: trim(value).to_vec(),
                });
            }
        }
    }
    Ok(sections)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

/// `ast_true`.
fn is_true(v: &[u8]) -> bool {
    let v = String::from_utf8_lossy(v).to_ascii_lowercase();
    matches!(v.as_str(), "yes" | "true" | "y" | "t" | "1" | "on")
}

struct Globals<'a>(&'a [(Vec<u8>, Vec<u8>)]);

impl Vars for Globals<'_> {
    fn get(&self, name: &[u8]) -> Option<Vec<u8>> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n.as_slice() == name)
            .map(|(_, v)| v.clone())
    }
}

/// `pbx_strsep(..., ",")`: a comma outside `[...]`, honouring `\`.
fn split_exten(s: &[u8]) -> (&[u8], Option<&[u8]>) {
    let mut square = 0u32;
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'[' => square += 1,
            b']' => square = square.saturating_sub(1),
            b'\\' => i += 1,
            b',' if square == 0 => return (&s[..i], Some(&s[i + 1..])),
            _ => {}
        }
        i += 1;
    }
    (s, None)
}

/// Loads an `extensions.conf` text.
pub(super) fn load(text: &str) -> Result<Dialplan, DialplanError> {
    let sections = read_sections(text)?;
    let mut globals: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for s in sections
        .iter()
        .filter(|s| s.name.eq_ignore_ascii_case("general"))
    {
        for e in &s.entries {
            let key = e.name.to_ascii_lowercase();
            let refused = match key.as_str() {
                "autofallthrough" if !is_true(&e.value) => Some("autofallthrough=no"),
                "extenpatternmatchnew" if is_true(&e.value) => {
                    Some("extenpatternmatchnew=yes (the pattern trie matcher)")
                }
                "overrideswitch" if !e.value.is_empty() => Some("overrideswitch"),
                _ => None,
            };
            if let Some(what) = refused {
                return Err(err(e.line, format!("{what} is not modelled")));
            }
        }
    }
    for s in sections
        .iter()
        .filter(|s| s.name.eq_ignore_ascii_case("globals"))
    {
        for e in &s.entries {
            let value = subst::substitute(&e.value, &Globals(&globals), 8191)
                .map_err(|x| err(e.line, x.to_string()))?;
            globals.push((e.name.as_bytes().to_vec(), value));
        }
    }
    let mut contexts: Vec<Context> = Vec::new();
    for s in &sections {
        if s.name.eq_ignore_ascii_case("general") || s.name.eq_ignore_ascii_case("globals") {
            continue;
        }
        let ci = match contexts.iter().position(|c| c.name == s.name) {
            Some(i) => i,
            None => {
                contexts.push(Context {
                    name: s.name.clone(),
                    extens: Vec::new(),
                });
                contexts.len() - 1
            }
        };
        let mut last_exten: Option<Vec<u8>> = None;
        let mut last_pri: Option<i32> = None;
        for e in &s.entries {
            let lname = e.name.to_ascii_lowercase();
            let rest: &[u8];
            let realext: Vec<u8>;
            if lname.starts_with("same") {
                let Some(prev) = &last_exten else {
                    return Err(err(
                        e.line,
                        "`same =>` before any `exten =>` in this context",
                    ));
                };
                realext = prev.clone();
                rest = &e.value;
            } else if lname == "exten" {
                let (ext, r) = split_exten(&e.value);
                realext = subst::substitute(ext, &Globals(&globals), 255)
                    .map_err(|x| err(e.line, x.to_string()))?;
                last_exten = Some(realext.clone());
                rest = r.unwrap_or(b"");
            } else if matches!(
                lname.as_str(),
                "include" | "ignorepat" | "switch" | "lswitch" | "eswitch"
            ) {
                return Err(err(e.line, format!("`{}` is not modelled", e.name)));
            } else {
                return Err(err(e.line, format!("unknown directive `{}`", e.name)));
            }
            let line = e.line;
            if realext.contains(&b'/') {
                return Err(err(
                    line,
                    "caller-id matches (`EXTEN/CID`) are not modelled",
                ));
            }
            let name = ExtenName::new(&realext);
            if name.key.is_empty() {
                return Err(err(line, "an empty extension name"));
            }
            check_pattern(&name.key).map_err(|r| err(line, r))?;
            // The priority.
            let (pri_raw, app_part) = match rest.iter().position(|b| *b == b',') {
                Some(c) => (&rest[..c], &rest[c + 1..]),
                None => (rest, &b""[..]),
            };
            let mut pri = trim(pri_raw).to_vec();
            let mut label = None;
            if let Some(open) = pri.iter().position(|b| *b == b'(') {
                let Some(close) = pri[open..].iter().position(|b| *b == b')') else {
                    return Err(err(line, "a label without its closing `)`"));
                };
                label = Some(String::from_utf8_lossy(&pri[open + 1..open + close]).into_owned());
                pri.truncate(open);
            }
            let mut plus = 0i64;
            if let Some(p) = pri.iter().position(|b| *b == b'+') {
                plus = expr::atoi(&pri[p + 1..]);
                pri.truncate(p);
            }
            let base: i64 = match pri.as_slice() {
                b"hint" => return Err(err(line, "hints are not modelled")),
                b"next" | b"n" => match last_pri {
                    Some(p) => i64::from(p) + 1,
                    None => return Err(err(line, "`n` on the first entry of a context")),
                },
                b"same" | b"s" => match last_pri {
                    Some(p) => i64::from(p),
                    None => return Err(err(line, "`s` on the first entry of a context")),
                },
                other => match subst::scan_int(other) {
                    Some((v, _)) if v >= 1 => i64::from(v),
                    Some(_) => return Err(err(line, "a priority below 1")),
                    None => {
                        let found = contexts[ci]
                            .extens
                            .iter()
                            .find(|x| ext_cmp(&x.name.key, &name.key).is_eq())
                            .and_then(|x| x.label(other));
                        match found {
                            Some(p) => i64::from(p),
                            None => {
                                return Err(err(
                                    line,
                                    format!(
                                        "no priority or label `{}`",
                                        String::from_utf8_lossy(other)
                                    ),
                                ));
                            }
                        }
                    }
                },
            };
            let priority = i32::try_from(base + plus)
                .ok()
                .filter(|p| *p >= 1)
                .ok_or_else(|| err(line, "a priority out of range"))?;
            last_pri = Some(priority);
            // The application and its data.
            let (app_name, data) = match app_part.iter().position(|b| *b == b'(') {
                None => (app_part, &b""[..]),
                Some(open) => {
                    let before = &app_part[..open];
                    if before.windows(2).any(|w| w == b"${" || w == b"$[") {
                        (app_part, &b""[..])
                    } else {
                        let after = &app_part[open + 1..];
                        let Some(close) = after.iter().rposition(|b| *b == b')') else {
                            return Err(err(line, "an application without its closing `)`"));
                        };
                        (before, &after[..close])
                    }
                }
            };
            let app_name = String::from_utf8_lossy(
                &app_name[app_name
                    .iter()
                    .take_while(|b| **b == b' ' || **b == b'\t')
                    .count()..],
            )
            .into_owned();
            let Some(app) = App::from_name(&app_name) else {
                return Err(err(
                    line,
                    if app_name.is_empty() {
                        "no application".to_string()
                    } else {
                        format!("unknown application `{app_name}`")
                    },
                ));
            };
            check_data(app, data).map_err(|r| err(line, r))?;
            let prio = Priority {
                priority,
                label,
                app,
                data: data.to_vec(),
                line,
            };
            add(&mut contexts[ci], name, prio)?;
        }
    }
    Ok(Dialplan {
        source: text.to_string(),
        contexts,
        globals,
    })
}

/// `ast_add_extension2`: the extension keeps its place in `ext_cmp` order;
/// an alias (`_nxxz` for `_NXXZ`) joins the first spelling.
fn add(ctx: &mut Context, name: ExtenName, prio: Priority) -> Result<(), DialplanError> {
    let line = prio.line;
    let at = ctx
        .extens
        .iter()
        .position(|x| ext_cmp(&x.name.key, &name.key).is_ge())
        .unwrap_or(ctx.extens.len());
    if ctx
        .extens
        .get(at)
        .is_some_and(|x| ext_cmp(&x.name.key, &name.key).is_eq())
    {
        let x = &mut ctx.extens[at];
        if let Some(old) = x.priorities.iter().find(|p| p.priority == prio.priority) {
            return Err(err(
                line,
                format!(
                    "priority {} of `{}` is already defined at line {}",
                    prio.priority, x.name.name, old.line
                ),
            ));
        }
        if let Some(l) = &prio.label
            && x.label(l.as_bytes()).is_some()
        {
            return Err(err(
                line,
                format!("label `{l}` is already used in `{}`", x.name.name),
            ));
        }
        let pos = x
            .priorities
            .iter()
            .position(|p| p.priority > prio.priority)
            .unwrap_or(x.priorities.len());
        x.priorities.insert(pos, prio);
    } else {
        ctx.extens.insert(
            at,
            Extension {
                name,
                priorities: vec![prio],
            },
        );
    }
    Ok(())
}

/// Static checks of an application's data: functions the simulator
/// knows, expressions it can evaluate, arguments it understands.
fn check_data(app: App, data: &[u8]) -> Result<(), String> {
    check_substitutions(data)?;
    let dynamic = data.contains(&b'$');
    match app {
        App::Set => match data.iter().position(|b| *b == b'=') {
            None if !dynamic => return Err("Set() needs `NAME=value`".into()),
            Some(eq) if data[..eq].ends_with(b")") => {
                return Err("Set() of a function is not modelled".into());
            }
            _ => {}
        },
        App::Hangup
            if !dynamic
                && !data.is_empty()
                && subst::scan_int(data).is_none_or(|(c, _)| c <= 0) =>
        {
            return Err(
                "Hangup() takes a numeric cause here (cause names are not modelled)".into(),
            );
        }
        _ => {}
    }
    Ok(())
}

/// Every `${NAME(...)}` names a function the simulator has; every `$[...]`
/// is an expression it can evaluate.
fn check_substitutions(s: &[u8]) -> Result<(), String> {
    let mut i = 0;
    while i + 1 < s.len() {
        if s[i] != b'$' || (s[i + 1] != b'{' && s[i + 1] != b'[') {
            i += 1;
            continue;
        }
        let open = s[i + 1];
        let (close, other) = if open == b'{' {
            (b'}', b'[')
        } else {
            (b']', b'{')
        };
        let (end, _, closed) = subst_scan(s, i + 2, open, close, other);
        if !closed {
            return Err(format!(
                "a `${}` without its closing `{}`",
                open as char, close as char
            ));
        }
        let body = &s[i + 2..end - 1];
        if open == b'{' {
            let mut parens = 0i32;
            for (k, &c) in body.iter().enumerate() {
                match c {
                    b'(' => {
                        if parens == 0 {
                            let name = &body[..k];
                            if name.contains(&b'$') {
                                return Err(
                                    "a function whose name is computed is not modelled".into()
                                );
                            }
                            let name = String::from_utf8_lossy(name);
                            if !subst::FUNCTIONS.contains(&name.as_ref()) {
                                return Err(format!("unknown function `{name}`"));
                            }
                        }
                        parens += 1;
                    }
                    b')' => parens -= 1,
                    b':' if parens == 0 => break,
                    _ => {}
                }
            }
        } else {
            expr::check_static(&blank_substitutions(body)).map_err(|e| e.to_string())?;
        }
        check_substitutions(body)?;
        i = end;
    }
    Ok(())
}

fn subst_scan(s: &[u8], start: usize, open: u8, close: u8, other: u8) -> (usize, bool, bool) {
    let mut brackets = 1;
    let mut i = start;
    while brackets > 0 && i < s.len() {
        let next = s.get(i + 1).copied();
        if s[i] == b'$' && next == Some(open) {
            brackets += 1;
            i += 1;
        } else if s[i] == open {
            brackets += 1;
        } else if s[i] == close {
            brackets -= 1;
        } else if s[i] == b'$' && next == Some(other) {
            i += 1;
        }
        i += 1;
    }
    (i.min(s.len()), false, brackets == 0)
}

/// The static text of an expression: each `${...}`/`$[...]` becomes `0`.
fn blank_substitutions(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'$' && matches!(s.get(i + 1), Some(b'{') | Some(b'[')) {
            let open = s[i + 1];
            let (close, other) = if open == b'{' {
                (b'}', b'[')
            } else {
                (b']', b'{')
            };
            let (end, _, _) = subst_scan(s, i + 2, open, close, other);
            out.push(b'0');
            i = end;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}
