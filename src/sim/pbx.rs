//! A channel running the node's dialplan: the simulator's side of
//! `dialplan::exec` (which decides what runs). Answering makes the
//! channel `Up` (the caller's 200 OK), `Stasis()` enters the app when a
//! websocket owns it, each application moves the channel's
//! `dialplan.{context,exten,priority,app_name,app_data}` and publishes
//! `ChannelDialplan`, and the end of the PBX hangs the channel up.
//!
//! The dialplan runs under the node's state lock, all at once: without
//! media, every application the simulator models takes no time.

use super::dialplan::exec::cause_to_sip;
use super::dialplan::{App, Host, Pbx, Stop};
use super::model::chan_state;
use super::state::{Hangup, State};

/// `AST_SOFTHANGUP_APPUNLOAD`, the `cause` of the `ChannelHangupRequest`
/// a real Asterisk 22.10.1 sends when a channel's dialplan ends.
const SOFTHANGUP_APPUNLOAD: i64 = 16;

/// What a run of the dialplan left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ran {
    /// The channel waits in a Stasis app.
    pub(crate) in_stasis: bool,
    /// The channel was answered (the caller got a 200 OK).
    pub(crate) answered: bool,
    /// The hangup cause when the dialplan ended the call.
    pub(crate) hangup_cause: Option<i32>,
}

impl Ran {
    /// The final SIP response the caller got so far: 200 once answered,
    /// chan_pjsip's status for the hangup cause of an unanswered call, or
    /// none while it still rings.
    pub(crate) fn sip_status(&self) -> Option<u16> {
        if self.answered {
            Some(200)
        } else {
            self.hangup_cause.map(cause_to_sip)
        }
    }
}

struct ChannelHost<'a> {
    st: &'a mut State,
    chan: &'a str,
}

impl Host for ChannelHost<'_> {
    fn channel_name(&self) -> String {
        self.st
            .channels
            .get(self.chan)
            .map(|c| c.name.clone())
            .unwrap_or_default()
    }

    fn uniqueid(&self) -> String {
        self.chan.to_string()
    }

    fn executing(&mut self, pbx: &Pbx, app: App, data: &[u8]) {
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        self.st.dialplan_moved(
            self.chan,
            (
                lossy(&pbx.context),
                lossy(&pbx.exten),
                i64::from(pbx.priority),
            ),
            app.name(),
            lossy(data),
        );
    }

    fn is_up(&self) -> bool {
        self.st
            .channels
            .get(self.chan)
            .is_some_and(|c| c.state == chan_state::UP)
    }

    fn answer(&mut self) {
        self.st.set_state(self.chan, chan_state::UP);
    }

    fn enter_stasis(&mut self, app: &str, args: Vec<String>) -> bool {
        self.st.stasis_enter(self.chan, app, args)
    }
}

/// Runs the channel's dialplan from where its [`Pbx`] stands, until it
/// enters a Stasis app or the dialplan hangs it up. A channel without a
/// PBX is left alone.
pub(crate) fn run(st: &mut State, chan_id: &str) -> Ran {
    let common = st.common.clone();
    let Some(mut pbx) = st.channels.get_mut(chan_id).and_then(|c| c.pbx.take()) else {
        return Ran {
            in_stasis: false,
            answered: false,
            hangup_cause: None,
        };
    };
    let stop = pbx.run(&common.dialplan, &mut ChannelHost { st, chan: chan_id });
    let answered = st
        .channels
        .get(chan_id)
        .is_some_and(|c| c.state == chan_state::UP);
    if let Some(ch) = st.channels.get_mut(chan_id) {
        ch.pbx = Some(pbx);
    }
    match stop {
        Stop::Stasis => Ran {
            in_stasis: true,
            answered,
            hangup_cause: None,
        },
        Stop::Hangup { cause, reason } => {
            tracing::debug!(node = %common.id, channel = chan_id, cause, reason = %reason, "dialplan ended the call");
            // The end of the PBX is `ast_softhangup(AST_SOFTHANGUP_APPUNLOAD)`:
            // a soft `ChannelHangupRequest` whose `cause` is that flag (16).
            st.hangup(
                chan_id,
                Hangup {
                    request_cause: Some(SOFTHANGUP_APPUNLOAD),
                    tech_cause: None,
                    soft: true,
                    cause: i64::from(cause),
                    request: true,
                },
            );
            Ran {
                in_stasis: false,
                answered,
                hangup_cause: Some(cause),
            }
        }
    }
}
