//! The node's dialplan: an `extensions.conf` run with Asterisk 22's own
//! rules. By default it is the file corral ships,
//! `deploy/asterisk/extensions.conf`, compiled in, so the simulator runs
//! exactly what an operator deploys.
//!
//! # Layout
//!
//! - `conf`: loading the file (`main/config.c`, `pbx/pbx_config.c`) and
//!   refusing, with the line, whatever the simulator cannot run;
//! - `pattern`: which extension a dialled string reaches and in which
//!   order patterns are tried (`main/pbx.c`);
//! - `subst` and `expr`: `${...}`, `CUT`, `FIELDQTY` and `$[...]`;
//! - `exec`: the PBX loop and the applications (`Stasis`, `Goto`,
//!   `GotoIf`, `Set`, `NoOp`, `Answer`, `Playback`, `Hangup`).
//!
//! The simulator's side (what a channel does when the dialplan answers,
//! enters Stasis or hangs up) lives in `sim::pbx`.
//!
//! # Guarantees
//!
//! - Nothing here panics on any text or any dialled string; a dialplan
//!   that loops forever is cut after [`exec::MAX_STEPS`] applications.
//! - A dialplan that loads runs the way Asterisk 22.10.1 runs it, as far
//!   as `tests/dialplan_fidelity.rs` compares them (which extension
//!   matches, the applications executed with their substituted data,
//!   Stasis arguments, the caller's SIP outcome).

mod conf;
pub(crate) mod exec;
mod expr;
mod pattern;
mod subst;

use std::fmt;

pub(crate) use exec::{Host, Pbx, Stop};
use pattern::{ExtenName, Mode, match_core};

/// Why an `extensions.conf` text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialplanError {
    /// A line the simulator cannot run the way Asterisk would.
    #[error("extensions.conf line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong or not modelled.
        reason: String,
    },
    /// No `[from-proxy]` context: every call would be refused.
    #[error(
        "extensions.conf has no [{}] context: every call would get a 404",
        Dialplan::INBOUND_CONTEXT
    )]
    NoInboundContext,
}

/// An application the simulator runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum App {
    Stasis,
    Goto,
    GotoIf,
    Set,
    NoOp,
    Answer,
    Playback,
    Hangup,
}

impl App {
    const ALL: [App; 8] = [
        App::Stasis,
        App::Goto,
        App::GotoIf,
        App::Set,
        App::NoOp,
        App::Answer,
        App::Playback,
        App::Hangup,
    ];

    /// The registered name (what `dialplan show` and the channel's
    /// `dialplan.app_name` say).
    pub(crate) fn name(self) -> &'static str {
        match self {
            App::Stasis => "Stasis",
            App::Goto => "Goto",
            App::GotoIf => "GotoIf",
            App::Set => "Set",
            App::NoOp => "NoOp",
            App::Answer => "Answer",
            App::Playback => "Playback",
            App::Hangup => "Hangup",
        }
    }

    /// Application names are case-insensitive (`pbx_findapp`).
    fn from_name(s: &str) -> Option<App> {
        App::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
    }
}

/// One priority of an extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Priority {
    pub(crate) priority: i32,
    pub(crate) label: Option<String>,
    pub(crate) app: App,
    /// The data as written (substituted when it runs).
    pub(crate) data: Vec<u8>,
    /// Where it is in the file.
    pub(crate) line: usize,
}

/// An extension (a name or a pattern) and its priorities, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Extension {
    pub(crate) name: ExtenName,
    pub(crate) priorities: Vec<Priority>,
}

impl Extension {
    fn label(&self, label: &[u8]) -> Option<i32> {
        self.priorities
            .iter()
            .find(|p| p.label.as_deref().map(str::as_bytes) == Some(label))
            .map(|p| p.priority)
    }
}

/// A context: its extensions in the order Asterisk tries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Context {
    pub(crate) name: String,
    pub(crate) extens: Vec<Extension>,
}

/// A loaded `extensions.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialplan {
    source: String,
    contexts: Vec<Context>,
    /// `[globals]`, in the order they were set.
    globals: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What chan_pjsip answers an INVITE for an extension
/// (`get_destination` in `res_pjsip_session.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The extension exists at priority 1: the call gets a channel.
    Accept,
    /// Only a longer string could match (overlap dialling is on by
    /// default): `484 Address Incomplete`.
    Incomplete,
    /// No match: `404 Not Found`.
    NotFound,
    /// The call pickup extension (`features.conf` `pickupexten`, `*8`):
    /// chan_pjsip tries to pick up a ringing call before any dialplan runs,
    /// and with none to pick up answers `403 Forbidden`. The simulator has
    /// no pickup groups, so it always answers that.
    Pickup,
}

/// Where a call enters a Stasis app ([`Dialplan::stasis_entry`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StasisEntry {
    /// The app (`corral`).
    pub app: String,
    /// Its arguments (`["conference", "sales"]`).
    pub args: Vec<String>,
    /// The channel's extension when it entered.
    pub exten: String,
}

impl Dialplan {
    /// The context of calls from the proxy (`context=from-proxy` on the
    /// proxy's PJSIP endpoint in `deploy/asterisk/pjsip.conf`).
    pub const INBOUND_CONTEXT: &'static str = "from-proxy";

    /// `pickupexten`'s default in `features.conf`.
    pub const PICKUP_EXTEN: &'static str = "*8";

    /// The dialplan corral ships.
    pub const SHIPPED: &'static str = include_str!("../../../deploy/asterisk/extensions.conf");

    /// The shipped dialplan, loaded (once per process).
    pub fn shipped() -> Self {
        static SHIPPED: std::sync::OnceLock<Dialplan> = std::sync::OnceLock::new();
        SHIPPED
            .get_or_init(|| {
                Self::parse(Self::SHIPPED).expect(
                    "deploy/asterisk/extensions.conf loads (checked by sim::dialplan's unit tests)",
                )
            })
            .clone()
    }

    /// Loads an `extensions.conf` text.
    ///
    /// # Errors
    /// [`DialplanError`] naming the first line the simulator cannot run as
    /// Asterisk would, or the missing inbound context.
    pub fn parse(text: &str) -> Result<Self, DialplanError> {
        let dp = conf::load(text)?;
        if dp.context(Self::INBOUND_CONTEXT.as_bytes()).is_none() {
            return Err(DialplanError::NoInboundContext);
        }
        Ok(dp)
    }

    /// The same dialplan with its Stasis app `corral` renamed `app`, as an
    /// operator who sets corral's `app` would edit the file.
    #[must_use]
    pub fn with_stasis_app(mut self, app: &str) -> Self {
        if app == "corral" {
            return self;
        }
        for p in self
            .contexts
            .iter_mut()
            .flat_map(|c| c.extens.iter_mut())
            .flat_map(|x| x.priorities.iter_mut())
            .filter(|p| p.app == App::Stasis)
        {
            if p.data == b"corral" || p.data.starts_with(b"corral,") {
                let mut data = app.as_bytes().to_vec();
                data.extend_from_slice(&p.data[6..]);
                p.data = data;
            }
        }
        self
    }

    /// The text it was loaded from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The extensions of `context` that `exten` matches, in the order
    /// Asterisk tries them: what `dialplan show EXTEN@CONTEXT` lists.
    pub fn matches(&self, context: &str, exten: &str) -> Vec<String> {
        self.context(context.as_bytes())
            .map(|c| {
                c.extens
                    .iter()
                    .filter(|x| match_core(&x.name.key, exten.as_bytes(), Mode::Match) != 0)
                    .map(|x| x.name.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What chan_pjsip answers an INVITE whose user part is `exten`
    /// (`get_destination`: the pickup extension first, then the dialplan,
    /// then a partial match of either).
    pub fn admit(&self, exten: &[u8]) -> Admission {
        let ctx = Self::INBOUND_CONTEXT.as_bytes();
        let pickup = Self::PICKUP_EXTEN.as_bytes();
        if exten == pickup {
            Admission::Pickup
        } else if self.find(ctx, exten, 1, Mode::Match).is_some() {
            Admission::Accept
        } else if pickup.starts_with(exten) || self.find(ctx, exten, 1, Mode::CanMatch).is_some() {
            Admission::Incomplete
        } else {
            Admission::NotFound
        }
    }

    /// Where a call from the proxy whose request URI user part is `exten`
    /// enters a Stasis app, with a websocket owning every app: the app,
    /// its arguments and the channel's extension there. `None` when
    /// chan_pjsip refuses the call or its dialplan ends it first.
    ///
    /// corral's route-ahead lookup reads a request URI the way this
    /// dialplan does; its tests compare the two.
    pub fn stasis_entry(&self, exten: &str) -> Option<StasisEntry> {
        /// A channel that only records the Stasis app it enters.
        struct Entry(Option<(String, Vec<String>)>);
        impl Host for Entry {
            fn channel_name(&self) -> String {
                "PJSIP/proxy-00000000".into()
            }
            fn uniqueid(&self) -> String {
                "1.1".into()
            }
            fn executing(&mut self, _: &Pbx, _: App, _: &[u8]) {}
            fn is_up(&self) -> bool {
                false
            }
            fn answer(&mut self) {}
            fn enter_stasis(&mut self, app: &str, args: Vec<String>) -> bool {
                self.0 = Some((app.to_string(), args));
                true
            }
        }
        if self.admit(exten.as_bytes()) != Admission::Accept {
            return None;
        }
        let mut host = Entry(None);
        let mut pbx = Pbx::new(Self::INBOUND_CONTEXT.as_bytes(), exten.as_bytes());
        match pbx.run(self, &mut host) {
            Stop::Stasis => host.0.map(|(app, args)| StasisEntry {
                app,
                args,
                exten: String::from_utf8_lossy(&pbx.exten).into_owned(),
            }),
            Stop::Hangup { .. } => None,
        }
    }

    pub(crate) fn context(&self, name: &[u8]) -> Option<&Context> {
        self.contexts.iter().find(|c| c.name.as_bytes() == name)
    }

    /// `pbx_find_extension` (the default matcher): the first extension in
    /// order that matches and has the priority.
    pub(crate) fn find(
        &self,
        context: &[u8],
        exten: &[u8],
        priority: i32,
        mode: Mode,
    ) -> Option<&Priority> {
        self.context(context)?
            .extens
            .iter()
            .filter(|x| match_core(&x.name.key, exten, mode) != 0)
            .find_map(|x| x.priorities.iter().find(|p| p.priority == priority))
    }

    /// `ast_findlabel_extension`: the priority of `label` in the first
    /// matching extension that has it.
    pub(crate) fn find_label(&self, context: &[u8], exten: &[u8], label: &[u8]) -> Option<i32> {
        self.context(context)?
            .extens
            .iter()
            .filter(|x| match_core(&x.name.key, exten, Mode::Match) != 0)
            .find_map(|x| x.label(label))
    }
}

impl Default for Dialplan {
    fn default() -> Self {
        Self::shipped()
    }
}

impl fmt::Display for Dialplan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_dialplan_loads() {
        let dp = Dialplan::shipped();
        assert_eq!(
            dp.matches("from-proxy", "conf-sales"),
            ["_co[n]f-.", "_[A-Za-z0-9]."]
        );
        assert_eq!(dp.matches("from-proxy", "conf-"), ["_[A-Za-z0-9]."]);
        assert!(dp.matches("from-proxy", "s").is_empty());
        assert!(dp.matches("nowhere", "s").is_empty());
        assert_eq!(dp.admit(b"conf-sales"), Admission::Accept);
        assert_eq!(dp.admit(b"s"), Admission::Incomplete);
        assert_eq!(dp.admit(b"-"), Admission::Incomplete);
        assert_eq!(dp.admit(b"*"), Admission::Incomplete, "a prefix of *8");
        assert_eq!(dp.admit(b"*8"), Admission::Pickup);
        assert_eq!(dp.admit(b"*80"), Admission::NotFound);
        assert_eq!(dp.admit(b""), Admission::Incomplete);
        assert_eq!(dp.to_string(), Dialplan::SHIPPED);
    }

    #[test]
    fn load_errors_name_the_line() {
        let line = |text: &str| match Dialplan::parse(text) {
            Err(DialplanError::Line { line, reason }) => (line, reason),
            other => panic!("{text:?} gave {other:?}"),
        };
        let base = "[from-proxy]\nexten => s,1,NoOp()\n";
        for (text, at, says) in [
            ("exten => s,1,NoOp()\n", 1, "before the first"),
            (
                "[from-proxy]\nexten => s,1,Dial(PJSIP/x)\n",
                2,
                "unknown application `Dial`",
            ),
            (
                "[from-proxy]\nexten => s,1,NoOp(${LEN(x)})\n",
                2,
                "unknown function `LEN`",
            ),
            ("[from-proxy]\nexten => s,1,NoOp($[a =~ b])\n", 2, "regex"),
            ("[from-proxy]\nexten => s,1,NoOp(\n", 2, "closing `)`"),
            ("[from-proxy]\nsame => n,NoOp()\n", 2, "`same =>` before"),
            ("[from-proxy]\nexten => s,n,NoOp()\n", 2, "`n` on the first"),
            ("[from-proxy]\nexten => s,0,NoOp()\n", 2, "below 1"),
            (
                "[from-proxy]\nexten => s,foo,NoOp()\n",
                2,
                "no priority or label",
            ),
            ("[from-proxy]\nexten => s,hint,PJSIP/x\n", 2, "hints"),
            ("[from-proxy]\ninclude => other\n", 2, "not modelled"),
            ("[from-proxy]\nfoo => bar\n", 2, "unknown directive"),
            ("[from-proxy]\nexten => 1/2,1,NoOp()\n", 2, "caller-id"),
            ("[from-proxy]\nexten => _[ab,1,NoOp()\n", 2, "without `]`"),
            ("#include other.conf\n", 1, "#include"),
            ("[from-proxy\n", 1, "closing `]`"),
            ("[from-proxy](tpl)\n", 1, "templates"),
            (
                "[general]\nautofallthrough=no\n[from-proxy]\n",
                2,
                "autofallthrough",
            ),
            (
                "[general]\nextenpatternmatchnew=yes\n[from-proxy]\n",
                2,
                "trie",
            ),
            ("[from-proxy]\n;-- block --;\n", 2, "block comments"),
            (
                "[from-proxy]\nexten => s,1,Hangup(NORMAL_CLEARING)\n",
                2,
                "numeric cause",
            ),
            (
                "[from-proxy]\nexten => s,1,Set(CHANNEL(x)=1)\n",
                2,
                "Set() of a function",
            ),
            ("[from-proxy]\nexten => s,1,Set(x)\n", 2, "NAME=value"),
            ("[from-proxy]\nexten => ,1,NoOp()\n", 2, "empty extension"),
            ("[from-proxy]\nexten => s,1,\n", 2, "no application"),
            (
                "[from-proxy]\nexten => s,1,NoOp ()\n",
                2,
                "unknown application `NoOp `",
            ),
            (
                &format!("{base}exten => s,1,NoOp()\n"),
                3,
                "already defined at line 2",
            ),
            (
                "[from-proxy]\nexten => _NXXZ,1,NoOp()\nexten => _nxxz,1,NoOp()\n",
                3,
                "already defined",
            ),
            (
                "[from-proxy]\nexten => s,1(a),NoOp()\nsame => n(a),NoOp()\n",
                3,
                "label `a`",
            ),
            ("[from-proxy]\ngarbage\n", 2, "expected `name = value`"),
        ] {
            let (l, reason) = line(text);
            assert_eq!(l, at, "{text:?}: {reason}");
            assert!(reason.contains(says), "{text:?}: {reason}");
        }
        assert_eq!(
            Dialplan::parse("[other]\nexten => s,1,NoOp()\n"),
            Err(DialplanError::NoInboundContext)
        );
    }

    #[test]
    fn priorities_labels_and_same() {
        let dp = Dialplan::parse(
            "[general]\nstatic=yes\nunknownkey=1\n\
             [globals]\nPFX=conf\nFULL=${PFX}-x\n\
             [from-proxy]\n\
             exten => ${PFX}1,1,NoOp(a) ; comment\n\
              same => n(two),NoOp(b\\;c)\n\
              same => n+2,NoOp(d)\n\
             exten => ${PFX}1,two+1,NoOp(e)\n\
             exten => x,1,NoOp()\n\
             exten => y,s,NoOp(y)\n\
             exten => Answer-Me,1,answer()\n\
             [from-proxy]\nexten => other,1,NoOp()\n",
        );
        let dp = match dp {
            Ok(dp) => dp,
            Err(e) => panic!("{e}"),
        };
        let ctx = b"from-proxy";
        let p = |e: &[u8], n| {
            dp.find(ctx, e, n, Mode::Match)
                .map(|p| (p.app, p.data.clone()))
        };
        assert_eq!(p(b"conf1", 2), Some((App::NoOp, b"b;c".to_vec())));
        assert_eq!(
            p(b"conf1", 3),
            Some((App::NoOp, b"e".to_vec())),
            "label two, plus one"
        );
        assert_eq!(p(b"conf1", 4), None);
        assert_eq!(p(b"conf1", 5), Some((App::NoOp, b"d".to_vec())), "n+2");
        assert_eq!(
            p(b"y", 1),
            Some((App::NoOp, b"y".to_vec())),
            "`s`: the last priority"
        );
        assert_eq!(dp.find_label(ctx, b"conf1", b"two"), Some(2));
        assert_eq!(dp.find_label(ctx, b"conf1", b"three"), None);
        assert_eq!(p(b"AnswerMe", 1), Some((App::Answer, Vec::new())));
        assert_eq!(p(b"Answer-Me", 1).map(|x| x.0), Some(App::Answer));
        assert_eq!(
            p(b"other", 1).map(|x| x.0),
            Some(App::NoOp),
            "sections merge"
        );
        assert_eq!(dp.globals[1], (b"FULL".to_vec(), b"conf-x".to_vec()));
    }

    #[test]
    fn the_stasis_app_can_be_renamed() {
        let dp = Dialplan::shipped().with_stasis_app("confapp");
        let p = dp
            .find(b"from-proxy", b"conf-sales", 2, Mode::Match)
            .expect("priority 2");
        assert_eq!(p.data, b"confapp,conference,${EXTEN:5}");
        let p = dp
            .find(b"corral-token", b"tok", 1, Mode::Match)
            .expect("a token");
        assert_eq!(p.data, b"confapp");
    }
}
