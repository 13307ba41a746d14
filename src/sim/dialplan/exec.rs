//! The PBX loop (`__ast_pbx_run`) and the applications the simulator
//! runs, written from `main/pbx.c`, `main/pbx_builtins.c`,
//! `main/pbx_variables.c`, `apps/app_stasis.c` and `apps/app_playback.c`.
//!
//! A channel's [`Pbx`] is where it is in the dialplan and its variables.
//! [`Pbx::run`] executes priorities until the channel enters a Stasis app
//! ([`Stop::Stasis`]: it waits there until ARI `continue`s it, then
//! [`Pbx::resume`]) or the PBX ends ([`Stop::Hangup`]). What the channel
//! does meanwhile (answering, entering Stasis, publishing its position)
//! is the [`Host`]'s business.
//!
//! The applications, as Asterisk runs them:
//! - `Stasis(app[,args...])`: enters `app` when a websocket owns it
//!   (`STASISSTATUS=SUCCESS` once it leaves), else `STASISSTATUS=FAILED`
//!   and the next priority;
//! - `Goto([[context,]exten,]priority|label)`, with `+N`/`-N`; a label that
//!   does not exist ends the PBX; a place that does not exist too;
//! - `GotoIf(cond?[then][:else])`: `cond` is true unless empty or a
//!   number that is 0;
//! - `Set(NAME=value)`; `NoOp`; `Answer`;
//! - `Playback(file[&file...][,options])`: there are no sounds in the
//!   simulator, so every file fails as a missing one does on a node
//!   without sound packages: the channel is answered first (unless
//!   `noanswer`; with `skip` a ringing channel skips it), then
//!   `PLAYBACKSTATUS=FAILED` and the next priority; no file at all ends
//!   the PBX;
//! - `Hangup([cause])`: ends the PBX with the cause (default 16).
//!
//! Reaching a priority that does not exist ends the PBX (autofallthrough).
//! The `h` extension is not run when the PBX ends (its effects are not
//! visible outside the channel).

use super::pattern::Mode;
use super::subst::{self, Vars, separate_args};
use super::{App, Dialplan};

/// Applications run in one [`Pbx::run`] before the simulator gives up on
/// a dialplan that loops (Asterisk would spin forever).
pub(crate) const MAX_STEPS: usize = 10_000;

/// `AST_MAX_EXTENSION - 1` and `AST_MAX_CONTEXT - 1`: channel fields keep
/// at most this many bytes.
pub(crate) const MAX_NAME: usize = 79;

/// `Stasis()` takes the app name and at most this many arguments.
const STASIS_MAX_ARGS: usize = 128;

/// The default hangup cause (`AST_CAUSE_NORMAL_CLEARING`).
pub(crate) const NORMAL_CLEARING: i32 = 16;

/// Where a PBX stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The channel is in the Stasis app the host entered.
    Stasis,
    /// The PBX ended; the channel hangs up with this cause.
    Hangup {
        /// The channel's hangup cause (0 when nothing set one).
        cause: i32,
        /// Why, for logs.
        reason: String,
    },
}

/// What a channel does while its dialplan runs.
pub(crate) trait Host {
    /// The channel's name (`${CHANNEL}`).
    fn channel_name(&self) -> String;
    /// The channel's id (`${UNIQUEID}`).
    fn uniqueid(&self) -> String;
    /// The channel is about to run `app(data)` at the PBX's place.
    fn executing(&mut self, pbx: &Pbx, app: App, data: &[u8]);
    /// True once answered.
    fn is_up(&self) -> bool;
    /// Answers the channel (a no-op when it is up).
    fn answer(&mut self);
    /// `Stasis(app, args)`: true when the channel entered the app (a
    /// websocket owns it), false for `STASISSTATUS=FAILED`.
    fn enter_stasis(&mut self, app: &str, args: Vec<String>) -> bool;
}

/// A channel's place in the dialplan and its variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pbx {
    pub(crate) context: Vec<u8>,
    pub(crate) exten: Vec<u8>,
    pub(crate) priority: i32,
    /// Channel variables, by name (without `_`/`__` inheritance marks).
    vars: Vec<(Vec<u8>, Vec<u8>)>,
    /// `ast_channel_hangupcause`.
    cause: i32,
}

fn cut(mut v: Vec<u8>) -> Vec<u8> {
    v.truncate(MAX_NAME);
    v
}

/// `hangup_cause2sip` in chan_pjsip, with `ast_sip_session_terminate`'s
/// default: the SIP status an unanswered caller gets for a hangup cause.
pub(crate) fn cause_to_sip(cause: i32) -> u16 {
    match cause {
        23 => 302,
        1..=3 => 404,
        34 | 42 => 503,
        18 => 408,
        19 | 20 | 31 => 480,
        21 => 403,
        22 => 410,
        28 => 484,
        17 => 486,
        38 | 127 => 500,
        29 => 501,
        66 => 503,
        27 => 502,
        58 => 488,
        _ => 603,
    }
}

/// `sscanf(s, "%30d")` on text from ARI.
pub(crate) fn scan_i32(s: &str) -> Option<i32> {
    subst::scan_int(s.as_bytes()).map(|(n, _)| n)
}

/// `atoi`, as the generated ARI parameter parsers use it.
pub(crate) fn atoi_i32(s: &str) -> i32 {
    let n = super::expr::atoi(s.as_bytes());
    i32::try_from(n).unwrap_or(if n < 0 { i32::MIN } else { i32::MAX })
}

impl Pbx {
    /// A channel starting at priority 1 of `exten` in `context`.
    pub(crate) fn new(context: &[u8], exten: &[u8]) -> Self {
        Pbx {
            context: cut(context.to_vec()),
            exten: cut(exten.to_vec()),
            priority: 1,
            vars: Vec::new(),
            cause: 0,
        }
    }

    /// A variable set on the channel.
    #[cfg(test)]
    pub(crate) fn var(&self, name: &str) -> Option<&[u8]> {
        self.vars
            .iter()
            .find(|(n, _)| n.as_slice() == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// `pbx_builtin_setvar_helper`.
    pub(crate) fn set_var(&mut self, name: &[u8], value: &[u8]) {
        let mut tail = name;
        for _ in 0..2 {
            if let Some(t) = tail.strip_prefix(b"_") {
                tail = t;
            }
        }
        self.vars.retain(|(n, _)| n.as_slice() != tail);
        let mut value = value.to_vec();
        value.truncate(subst::VAR_MAX);
        self.vars.push((tail.to_vec(), value));
    }

    /// `ast_explicit_goto`: empty parts keep their value.
    fn explicit_goto(&mut self, context: Option<&[u8]>, exten: Option<&[u8]>, priority: i32) {
        if let Some(c) = context.filter(|c| !c.is_empty()) {
            self.context = cut(c.to_vec());
        }
        if let Some(e) = exten.filter(|e| !e.is_empty()) {
            self.exten = cut(e.to_vec());
        }
        self.priority = priority;
    }

    /// After ARI `continue`: `STASISSTATUS=SUCCESS`, and the channel goes
    /// on at `context`, `exten`, `priority` (`ast_explicit_goto`).
    pub(crate) fn resume(&mut self, context: &[u8], exten: &[u8], priority: i32) {
        self.set_var(b"STASISSTATUS", b"SUCCESS");
        self.explicit_goto(Some(context), Some(exten), priority);
    }

    /// Runs priorities until the channel enters Stasis or the PBX ends.
    pub(crate) fn run(&mut self, dp: &Dialplan, host: &mut dyn Host) -> Stop {
        for _ in 0..MAX_STEPS {
            let Some(p) = dp.find(&self.context, &self.exten, self.priority, Mode::Match) else {
                return self.end("no such priority (autofallthrough) or extension");
            };
            let (app, raw) = (p.app, p.data.clone());
            let data = {
                let env = Env {
                    pbx: self,
                    host,
                    dp,
                };
                match subst::substitute(&raw, &env, subst::DATA_MAX) {
                    Ok(d) => d,
                    Err(e) => return self.end(&e.to_string()),
                }
            };
            host.executing(self, app, &data);
            match app {
                App::NoOp => {}
                App::Answer => host.answer(),
                App::Set => self.set(&data),
                App::Goto => match self.goto(dp, &data) {
                    Ok(()) => continue,
                    Err(why) => return self.end(&why),
                },
                App::GotoIf => {
                    let (cond, branches) = split_once(&data, b'?');
                    let (then, other) = match branches {
                        Some(b) => {
                            let (t, o) = split_once(b, b':');
                            (Some(t), o)
                        }
                        None => (None, None),
                    };
                    let branch = if check_condition(cond) { then } else { other };
                    if let Some(b) = branch.filter(|b| !b.is_empty()) {
                        match self.goto(dp, b) {
                            Ok(()) => continue,
                            Err(why) => return self.end(&why),
                        }
                    }
                }
                App::Playback => {
                    if data.is_empty() {
                        return self.end("Playback requires an argument (filename)");
                    }
                    let args = separate_args(&data, b',', 2);
                    let options = args
                        .get(1)
                        .map(|o| String::from_utf8_lossy(o).to_ascii_lowercase())
                        .unwrap_or_default();
                    if !host.is_up() && options.contains("skip") {
                        self.set_var(b"PLAYBACKSTATUS", b"SUCCESS");
                    } else {
                        if !options.contains("noanswer") {
                            host.answer();
                        }
                        // No sounds here: every file "does not exist in any format".
                        self.set_var(b"PLAYBACKSTATUS", b"FAILED");
                    }
                }
                App::Hangup => {
                    let mut cause = subst::scan_int(&data).map_or(0, |(c, _)| c);
                    if cause <= 0 {
                        cause = if self.cause > 0 {
                            self.cause
                        } else {
                            NORMAL_CLEARING
                        };
                    }
                    self.cause = cause;
                    return Stop::Hangup {
                        cause,
                        reason: "Hangup()".into(),
                    };
                }
                App::Stasis => {
                    self.set_var(b"STASISSTATUS", b"");
                    let mut args = separate_args(&data, b',', STASIS_MAX_ARGS + 1).into_iter();
                    let entered = match args.next() {
                        Some(name) => {
                            let name = String::from_utf8_lossy(&name).into_owned();
                            let args = args
                                .map(|a| String::from_utf8_lossy(&a).into_owned())
                                .collect();
                            host.enter_stasis(&name, args)
                        }
                        None => false,
                    };
                    if entered {
                        return Stop::Stasis;
                    }
                    self.set_var(b"STASISSTATUS", b"FAILED");
                }
            }
            self.priority = self.priority.saturating_add(1);
        }
        self.end(&format!(
            "more than {MAX_STEPS} applications in a row: the dialplan loops"
        ))
    }

    fn end(&self, reason: &str) -> Stop {
        Stop::Hangup {
            cause: self.cause,
            reason: reason.to_string(),
        }
    }

    /// `pbx_builtin_setvar`.
    fn set(&mut self, data: &[u8]) {
        let Some((name, value)) = split_once(data, b'=')
            .1
            .map(|v| (split_once(data, b'=').0, v))
        else {
            return; // "Set requires an '=' to be a valid assignment."
        };
        if name.ends_with(b")") {
            tracing::warn!(data = %String::from_utf8_lossy(data), "Set() of a function is not modelled; ignored");
            return;
        }
        self.set_var(name, value);
    }

    /// `pbx_parseable_goto` and `pbx_parse_location`.
    fn goto(&mut self, dp: &Dialplan, data: &[u8]) -> Result<(), String> {
        if data.is_empty() {
            return Err("Goto requires an argument".into());
        }
        let mut parts = data.splitn(4, |b| *b == b',');
        let first = parts.next().unwrap_or_default();
        let second = parts.next();
        let third = parts.next();
        let (context, exten, pri) = match (second, third) {
            (None, _) => (None, None, first),
            (Some(e), None) => (None, Some(first), e),
            (Some(e), Some(p)) => (Some(first), Some(e), p),
        };
        let (mode, pri) = match pri.first() {
            Some(b'+') => (1, &pri[1..]),
            Some(b'-') => (-1, &pri[1..]),
            _ => (0, pri),
        };
        let number = match subst::scan_int(pri) {
            // `%d%1s`: nothing but blanks may follow the number.
            Some((n, rest)) if rest.iter().all(u8::is_ascii_whitespace) => Some(n),
            _ => None,
        };
        let target = match number {
            Some(n) if mode != 0 => self.priority.saturating_add(n.saturating_mul(mode)),
            Some(n) => n,
            None => {
                let ctx = context.unwrap_or(&self.context);
                let ext = exten.unwrap_or(&self.exten);
                match dp.find_label(ctx, ext, pri) {
                    Some(p) if p >= 1 => p,
                    _ => {
                        return Err(format!(
                            "Priority '{}' must be a number > 0, or valid label",
                            String::from_utf8_lossy(pri)
                        ));
                    }
                }
            }
        };
        self.explicit_goto(context, exten, target);
        Ok(())
    }
}

fn split_once(s: &[u8], c: u8) -> (&[u8], Option<&[u8]>) {
    match s.iter().position(|b| *b == c) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// `pbx_checkcondition`.
fn check_condition(c: &[u8]) -> bool {
    if c.is_empty() {
        return false;
    }
    match subst::scan_int(c) {
        Some((n, _)) => n != 0,
        None => true,
    }
}

/// Variable lookup during a substitution: builtins, the channel, globals.
struct Env<'a> {
    pbx: &'a Pbx,
    host: &'a dyn Host,
    dp: &'a Dialplan,
}

impl Vars for Env<'_> {
    fn get(&self, name: &[u8]) -> Option<Vec<u8>> {
        match name {
            b"EXTEN" => return Some(self.pbx.exten.clone()),
            b"CONTEXT" => return Some(self.pbx.context.clone()),
            b"PRIORITY" => return Some(self.pbx.priority.to_string().into_bytes()),
            b"CHANNEL" => return Some(self.host.channel_name().into_bytes()),
            b"UNIQUEID" => return Some(self.host.uniqueid().into_bytes()),
            b"HANGUPCAUSE" => return Some(self.pbx.cause.to_string().into_bytes()),
            _ => {}
        }
        self.pbx
            .vars
            .iter()
            .find(|(n, _)| n.as_slice() == name)
            .map(|(_, v)| v.clone())
            .or_else(|| {
                self.dp
                    .globals
                    .iter()
                    .rev()
                    .find(|(n, _)| n.as_slice() == name)
                    .map(|(_, v)| v.clone())
            })
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;

    /// A channel that records what it executes.
    #[derive(Default)]
    pub(super) struct Rec {
        pub(super) up: bool,
        pub(super) apps_owned: Vec<String>,
        pub(super) trace: Vec<String>,
        pub(super) stasis: Vec<(String, Vec<String>)>,
    }

    impl Host for Rec {
        fn channel_name(&self) -> String {
            "PJSIP/proxy-00000000".into()
        }
        fn uniqueid(&self) -> String {
            "1.1".into()
        }
        fn executing(&mut self, pbx: &Pbx, app: App, data: &[u8]) {
            self.trace.push(format!(
                "{}@{}:{} {}({})",
                String::from_utf8_lossy(&pbx.exten),
                String::from_utf8_lossy(&pbx.context),
                pbx.priority,
                app.name(),
                String::from_utf8_lossy(data)
            ));
        }
        fn is_up(&self) -> bool {
            self.up
        }
        fn answer(&mut self) {
            self.up = true;
        }
        fn enter_stasis(&mut self, app: &str, args: Vec<String>) -> bool {
            self.stasis.push((app.to_string(), args));
            self.apps_owned.iter().any(|a| a == app)
        }
    }

    pub(super) fn run_call(dp: &Dialplan, exten: &str, owned: bool) -> (Rec, Pbx, Stop) {
        let mut rec = Rec {
            apps_owned: if owned { vec!["corral".into()] } else { vec![] },
            ..Rec::default()
        };
        let mut pbx = Pbx::new(b"from-proxy", exten.as_bytes());
        let stop = pbx.run(dp, &mut rec);
        (rec, pbx, stop)
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::run_call as call;
    use super::*;

    #[test]
    fn shipped_conference_queue_agent_and_token() {
        let dp = Dialplan::shipped();
        let (rec, pbx, stop) = call(&dp, "conf-sales", true);
        assert_eq!(stop, Stop::Stasis);
        assert_eq!(
            rec.stasis,
            [("corral".into(), vec!["conference".into(), "sales".into()])]
        );
        assert_eq!(pbx.priority, 2);
        assert_eq!(
            rec.trace,
            [
                "conf-sales@from-proxy:1 GotoIf(0?corral-token,conf-sales,1)",
                "conf-sales@from-proxy:2 Stasis(corral,conference,sales)",
            ]
        );
        let (rec, _, _) = call(&dp, "queue-support", true);
        assert_eq!(rec.stasis[0].1, ["queue", "support"]);
        let (rec, _, _) = call(&dp, "agent-sales-emea-bob", true);
        assert_eq!(rec.stasis[0].1, ["agent", "sales-emea", "bob"]);
        let (rec, pbx, _) = call(&dp, "confXYZ", true);
        assert_eq!(rec.stasis[0].1, Vec::<String>::new(), "a token");
        assert_eq!(pbx.context, b"corral-token");
        let (rec, _, _) = call(&dp, "conf-a,b", true);
        assert_eq!(
            rec.stasis[0].1,
            ["conference", "a", "b"],
            "the comma splits"
        );
    }

    #[test]
    fn shipped_fallback_when_no_websocket() {
        let dp = Dialplan::shipped();
        let (rec, pbx, stop) = call(&dp, "conf-sales", false);
        assert_eq!(
            stop,
            Stop::Hangup {
                cause: 34,
                reason: "Hangup()".into()
            }
        );
        assert!(
            !rec.up,
            "refused unanswered: 503, the proxy tries the next node"
        );
        assert_eq!(cause_to_sip(34), 503);
        assert_eq!(pbx.var("STASISSTATUS"), Some(&b"FAILED"[..]));
        assert_eq!(
            rec.trace[2..],
            [
                // Stasis(corral) failed: the standby app, which fails too.
                "conf-sales@from-proxy:3 GotoIf(0?corral-fallback,s,1)",
                "conf-sales@from-proxy:4 Stasis(corral-standby,conference,sales)",
                "conf-sales@from-proxy:5 Goto(corral-fallback,s,1)",
                "s@corral-fallback:1 NoOp(corral unavailable: STASISSTATUS=FAILED)",
                "s@corral-fallback:2 GotoIf(1?refuse)",
                "s@corral-fallback:6 Hangup(34)",
            ]
        );
        // An agent without a queue part: the fallback, no Stasis at all:
        // answered, told, hung up.
        let (rec, _, _) = call(&dp, "agent-x", true);
        assert!(rec.stasis.is_empty());
        assert!(rec.up, "the treatment answers");
        assert_eq!(
            rec.trace.last().map(String::as_str),
            Some("s@corral-fallback:5 Hangup(41)")
        );
    }

    #[test]
    fn continue_goes_on_where_asked() {
        let dp = Dialplan::shipped();
        let (mut rec, mut pbx, _) = call(&dp, "queue-q", true);
        let (ctx, ext) = (pbx.context.clone(), pbx.exten.clone());
        pbx.resume(&ctx, &ext, pbx.priority + 1);
        let stop = pbx.run(&dp, &mut rec);
        assert!(matches!(stop, Stop::Hangup { cause: 41, .. }));
        assert_eq!(pbx.var("STASISSTATUS"), Some(&b"SUCCESS"[..]));
        assert!(rec.trace.contains(
            &"s@corral-fallback:1 NoOp(corral unavailable: STASISSTATUS=SUCCESS)".to_string()
        ));
        // To another extension, priority 1.
        let (mut rec, mut pbx, _) = call(&dp, "queue-q", true);
        pbx.resume(b"from-proxy", b"conf-x", 1);
        assert_eq!(pbx.run(&dp, &mut rec), Stop::Stasis);
        assert_eq!(rec.stasis[1].1, ["conference", "x"]);
    }

    fn dp(text: &str) -> Dialplan {
        Dialplan::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn goto_forms_labels_and_failures() {
        let d = dp("[from-proxy]\n\
             exten => a,1,Goto(b,1)\n\
             exten => b,1,Goto(3)\n same => n,NoOp(skipped)\n same => n,Goto(other,c,lab)\n\
             exten => rel,1,Goto(+2)\n same => n,NoOp(skipped)\n same => n,Goto(-2)\n\
             exten => badlabel,1,Goto(nolabel)\n\
             exten => nowhere,1,Goto(nowhere,s,1)\n\
             exten => end,1,NoOp()\n\
             exten => loop,1,Goto(loop,1)\n\
             exten => h41,1,Hangup(41)\n\
             exten => h0,1,Hangup(${NOPE})\n\
             [other]\nexten => c,1,NoOp()\n same => n(lab),Set(__V=1)\n same => n,GotoIf(${V}?:from-proxy,end,1)\n same => n,NoOp(${V})\n");
        let (rec, _, stop) = call(&d, "a", false);
        assert!(matches!(stop, Stop::Hangup { cause: 0, .. }));
        assert_eq!(
            rec.trace,
            [
                "a@from-proxy:1 Goto(b,1)",
                "b@from-proxy:1 Goto(3)",
                "b@from-proxy:3 Goto(other,c,lab)",
                "c@other:2 Set(__V=1)",
                "c@other:3 GotoIf(1?:from-proxy,end,1)",
                "c@other:4 NoOp(1)",
            ]
        );
        let (rec, _, stop) = call(&d, "rel", false);
        assert!(matches!(stop, Stop::Hangup { .. }));
        assert_eq!(rec.trace.len(), MAX_STEPS, "+2/-2 loops until the cap");
        let (_, _, stop) = call(&d, "badlabel", false);
        assert!(matches!(stop, Stop::Hangup { ref reason, .. } if reason.contains("valid label")));
        let (rec, _, _) = call(&d, "nowhere", false);
        assert_eq!(rec.trace.len(), 1);
        let (_, _, stop) = call(&d, "h41", false);
        assert!(matches!(stop, Stop::Hangup { cause: 41, .. }));
        let (_, _, stop) = call(&d, "h0", false);
        assert!(matches!(stop, Stop::Hangup { cause: 16, .. }));
        assert_eq!(cause_to_sip(41), 603);
        assert_eq!(cause_to_sip(0), 603);
        assert_eq!(cause_to_sip(17), 486);
    }

    #[test]
    fn playback_and_answer() {
        let d = dp("[from-proxy]\n\
             exten => p,1,Playback(x,noanswer)\n same => n,Hangup()\n\
             exten => q,1,Playback(x,skip)\n same => n,Hangup()\n\
             exten => r,1,Playback()\n\
             exten => s,1,Answer()\n same => n,Playback(a&b)\n");
        let (rec, pbx, _) = call(&d, "p", false);
        assert!(!rec.up);
        assert_eq!(pbx.var("PLAYBACKSTATUS"), Some(&b"FAILED"[..]));
        let (rec, pbx, _) = call(&d, "q", false);
        assert!(!rec.up);
        assert_eq!(pbx.var("PLAYBACKSTATUS"), Some(&b"SUCCESS"[..]));
        let (rec, _, stop) = call(&d, "r", false);
        assert_eq!(rec.trace.len(), 1);
        assert!(matches!(stop, Stop::Hangup { cause: 0, .. }));
        let (rec, pbx, stop) = call(&d, "s", false);
        assert!(rec.up);
        assert_eq!(pbx.var("PLAYBACKSTATUS"), Some(&b"FAILED"[..]));
        assert!(
            matches!(stop, Stop::Hangup { cause: 0, .. }),
            "fell off the end"
        );
    }

    #[test]
    fn stasis_arguments() {
        let d = dp("[from-proxy]\n\
             exten => e,1,Stasis()\n same => n,NoOp(${STASISSTATUS})\n\
             exten => q,1,Stasis(corral,\"a,b\",c\\,d,)\n");
        let (rec, pbx, _) = call(&d, "e", true);
        assert!(rec.stasis.is_empty());
        assert_eq!(pbx.var("STASISSTATUS"), Some(&b"FAILED"[..]));
        let (rec, _, stop) = call(&d, "q", true);
        assert_eq!(stop, Stop::Stasis);
        assert_eq!(rec.stasis[0].1, ["a,b", "c,d", ""]);
    }

    #[test]
    fn odd_extensions_do_not_panic() {
        let d = Dialplan::shipped();
        for e in [
            "",
            "-",
            "conf-",
            "conf\"x",
            "conf-\"",
            "agent--",
            "agent-a-",
            "agent-\u{e9}-x",
            "a:b",
            "conf-${EXTEN}",
            "conf-$[1+1]",
            "queue-)",
            "conf-?:",
            "agent-,,,",
            &"x".repeat(200),
        ] {
            for owned in [true, false] {
                let (_, pbx, _) = call(&d, e, owned);
                assert!(pbx.exten.len() <= MAX_NAME);
            }
        }
        // What a real Asterisk 22.10.1 did with conf"x: a syntax error in
        // $[...] leaves `""`, which is true: the token path.
        let (rec, _, _) = call(&d, "conf\"x", true);
        assert_eq!(
            rec.trace[0],
            "conf\"x@from-proxy:1 GotoIf(\"\"?corral-token,conf\"x,1)"
        );
        // ${EXTEN} inside the data is not substituted again.
        let (rec, _, _) = call(&d, "conf-${EXTEN}", true);
        assert_eq!(rec.stasis[0].1, ["conference", "${EXTEN}"]);
    }
}

#[cfg(test)]
mod fuzz {
    use super::tests_support::*;
    use super::*;

    /// A small seeded generator (no dependency on the test's clock).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) as usize
        }
    }

    /// Random dialled strings and randomly damaged dialplans never panic,
    /// never hang, and keep channel fields within Asterisk's sizes.
    #[test]
    fn random_extensions_and_dialplans() {
        const ALPHABET: &[u8] = b"conf-queagt_XZN.![]${}():,?;\"\\ 019az\xc3\xbc*#+&=~<>|";
        let mut rng = Lcg(0x5eed);
        let shipped = Dialplan::shipped();
        for _ in 0..3_000 {
            let len = rng.next() % 24;
            let exten: Vec<u8> = (0..len)
                .map(|_| ALPHABET[rng.next() % ALPHABET.len()])
                .collect();
            let exten = String::from_utf8_lossy(&exten).into_owned();
            for owned in [true, false] {
                let (_, pbx, _) = run_call(&shipped, &exten, owned);
                assert!(pbx.exten.len() <= MAX_NAME && pbx.context.len() <= MAX_NAME);
            }
            let _ = shipped.admit(exten.as_bytes());
            let _ = shipped.matches("from-proxy", &exten);
        }
        let text = Dialplan::SHIPPED.as_bytes();
        let mut loaded = 0;
        for _ in 0..2_000 {
            let mut t = text.to_vec();
            for _ in 0..1 + rng.next() % 4 {
                let at = rng.next() % t.len();
                t[at] = ALPHABET[rng.next() % ALPHABET.len()];
            }
            let Ok(dp) = Dialplan::parse(&String::from_utf8_lossy(&t)) else {
                continue;
            };
            loaded += 1;
            for exten in ["conf-sales", "agent-a-b", "queue-q", "tok123", "s"] {
                let _ = run_call(&dp, exten, rng.next().is_multiple_of(2));
            }
        }
        assert!(loaded > 100, "some damaged dialplans still load ({loaded})");
    }
}
