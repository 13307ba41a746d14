//! sipp as the farm's callers and phones: scenarios embedded here, one sipp
//! process per batch of calls, and what it saw read from its own logs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use super::{Error, Process};

/// A caller: INVITE, wait for the answer, ACK, wait for the far end's BYE.
/// Logs `answered <caller>-<n> <t0 s> <t0 us> <t1 s> <t1 us>` per answered
/// call, `ended <caller>-<n>` when the far end hung up, and `failed
/// <caller>-<n> <status>` for a call that got a final failure.
pub const CALLER_XML: &str = include_str!("sipp/caller.xml");

/// A caller that refuses transfers: [`CALLER_XML`], except that every
/// REFER is answered 603 Decline (logged `refused <caller>-<n>`).
pub const CALLER_REFUSING_REFER_XML: &str = include_str!("sipp/caller-refuses-refer.xml");

/// A phone: answers every INVITE after `-d` ms, then waits for a BYE.
pub const PHONE_XML: &str = include_str!("sipp/phone.xml");

/// A caller that gives up while it rings: INVITE, and a CANCEL as soon as
/// the far end signals ringing (180). Logs `failed <caller>-<n> 487`.
pub const CANCEL_XML: &str = include_str!("sipp/cancel.xml");

/// A caller that refuses transfers: like [`CALLER_XML`] until answered,
/// then a REFER gets 403 and the call stays. Logs `refused <caller>-<n>`.
pub const REFUSE_REFER_XML: &str = include_str!("sipp/refuse-refer.xml");

/// A busy phone: 180, then 486 Busy Here after `-d` ms.
pub const BUSY_XML: &str = include_str!("sipp/busy.xml");

/// A scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// [`CALLER_XML`].
    Caller,
    /// [`CALLER_REFUSING_REFER_XML`].
    CallerRefusingRefer,
    /// [`PHONE_XML`].
    Phone,
    /// [`CANCEL_XML`].
    Cancel,
    /// [`REFUSE_REFER_XML`].
    RefuseRefer,
    /// [`BUSY_XML`].
    Busy,
    /// [`BRIEF_XML`].
    Brief,
}

impl Scenario {
    fn file(self) -> (&'static str, &'static str) {
        match self {
            Scenario::Caller => ("caller.xml", CALLER_XML),
            Scenario::CallerRefusingRefer => {
                ("caller-refuses-refer.xml", CALLER_REFUSING_REFER_XML)
            }
            Scenario::Phone => ("phone.xml", PHONE_XML),
            Scenario::Cancel => ("cancel.xml", CANCEL_XML),
            Scenario::RefuseRefer => ("refuse-refer.xml", REFUSE_REFER_XML),
            Scenario::Busy => ("busy.xml", BUSY_XML),
            Scenario::Brief => ("brief.xml", BRIEF_XML),
        }
    }
}

/// A caller for benchmarks: like [`CALLER_XML`] until answered, then it
/// holds the call for `-d` ms and hangs up itself.
pub const BRIEF_XML: &str = include_str!("sipp/brief.xml");

/// The sipp program.
#[derive(Debug, Clone)]
pub struct Sipp {
    binary: PathBuf,
}

/// One call a caller saw answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    /// The From user: `<caller>-<n>`, the caller number ARI shows.
    pub caller: String,
    /// INVITE sent → 200 OK received, as sipp measured it.
    pub setup: Duration,
    /// Whether the far end has hung up since.
    pub ended: bool,
    /// Whether the call followed a REFER to another node since.
    pub moved: bool,
}

/// A batch of callers (or a phone) in one sipp process.
#[derive(Debug)]
pub struct SippRun {
    process: Process,
    logs: PathBuf,
    errors: PathBuf,
    /// Local SIP port of this sipp.
    pub port: u16,
}

/// What a batch of callers is to do.
#[derive(Debug, Clone)]
pub struct Calls {
    /// Request URI user (`conf-sales`).
    pub service: String,
    /// Caller number prefix (`sales` → `sales-1`, `sales-2`, ...).
    pub caller: String,
    /// How many calls.
    pub count: u32,
    /// Calls per second.
    pub rate: f64,
    /// Where to send them (`127.0.0.1:5060`, the proxy).
    pub target: String,
    /// The request URI's host (`host:port`); `None`: the target's. A node's
    /// address here has the shipped proxy send the call straight to it.
    pub domain: Option<String>,
}

impl Sipp {
    /// Finds `sipp` on `PATH`.
    ///
    /// # Errors
    /// [`Error::Missing`] saying how to install it.
    pub fn locate() -> Result<Sipp, Error> {
        super::which("sipp")
            .map(|binary| Sipp { binary })
            .ok_or_else(|| Error::Missing {
                program: "sipp".into(),
                fix:
                    "install sipp 3.6 or later (Debian: apt-get install sip-tester); .ci/test does"
                        .into(),
            })
    }

    fn base(
        &self,
        dir: &Path,
        scenario: Scenario,
        port: u16,
        name: &str,
    ) -> Result<(Command, PathBuf, PathBuf), Error> {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        // One copy per run: sipp reads its scenario at start, and another
        // run writing the same file meanwhile would hand it half a file.
        let (file, text) = scenario.file();
        let sf = dir.join(format!("{name}-{file}"));
        std::fs::write(&sf, text).map_err(Error::io(format!("writing {}", sf.display())))?;
        let logs = dir.join(format!("{name}.log"));
        let errors = dir.join(format!("{name}.err"));
        let media = super::free_port()?;
        let mut cmd = Command::new(&self.binary);
        cmd.current_dir(dir)
            .arg("-sf")
            .arg(&sf)
            .args([
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-mp",
                &media.to_string(),
            ])
            .args(["-nostdin", "-trace_logs", "-log_file"])
            .arg(&logs)
            .args(["-trace_err", "-error_file"])
            .arg(&errors)
            .args(["-trace_msg", "-message_file"])
            .arg(dir.join(format!("{name}.messages")));
        Ok((cmd, logs, errors))
    }

    /// Starts `calls.count` callers at `calls.rate`/s towards `calls.target`.
    /// `name` names the log files in `dir`.
    ///
    /// # Errors
    /// sipp could not be started.
    pub fn callers(&self, dir: &Path, name: &str, calls: &Calls) -> Result<SippRun, Error> {
        self.callers_as(dir, name, Scenario::Caller, calls)
    }

    /// [`Sipp::callers`] with another caller scenario ([`Scenario::Cancel`],
    /// [`Scenario::RefuseRefer`], [`Scenario::CallerRefusingRefer`]).
    ///
    /// # Errors
    /// sipp could not be started.
    pub fn callers_as(
        &self,
        dir: &Path,
        name: &str,
        scenario: Scenario,
        calls: &Calls,
    ) -> Result<SippRun, Error> {
        self.start_callers(dir, name, scenario, calls, Duration::ZERO)
    }

    /// Callers that hang up themselves `hold` after the answer
    /// ([`BRIEF_XML`]), so that a long run keeps few calls up.
    ///
    /// # Errors
    /// sipp could not be started.
    pub fn brief_callers(
        &self,
        dir: &Path,
        name: &str,
        calls: &Calls,
        hold: Duration,
    ) -> Result<SippRun, Error> {
        self.start_callers(dir, name, Scenario::Brief, calls, hold)
    }

    fn start_callers(
        &self,
        dir: &Path,
        name: &str,
        scenario: Scenario,
        calls: &Calls,
        hold: Duration,
    ) -> Result<SippRun, Error> {
        let port = super::free_port()?;
        let (mut cmd, logs, errors) = self.base(dir, scenario, port, name)?;
        cmd.args(["-d", &hold.as_millis().to_string()])
            .args(["-key", "caller", &calls.caller])
            .args([
                "-key",
                "domain",
                calls.domain.as_deref().unwrap_or(&calls.target),
            ])
            .args(["-s", &calls.service])
            .args(["-m", &calls.count.to_string()])
            // `-r N -rp M`: N calls every M ms; a thousandth of a call per
            // second is the resolution (N = rate × 1000 every 1000 s).
            .args([
                "-r",
                &format!("{}", ((calls.rate * 1000.0).round() as u64).max(1)),
                "-rp",
                "1000000",
            ])
            .args(["-l", &calls.count.to_string()])
            .arg(&calls.target);
        SippRun::spawn(dir, name, cmd, logs, errors, port)
    }

    /// A phone on `port` that answers up to `count` calls, each after
    /// `answer_after`.
    ///
    /// # Errors
    /// sipp could not be started.
    pub fn phone(
        &self,
        dir: &Path,
        name: &str,
        port: u16,
        count: u32,
        answer_after: Duration,
    ) -> Result<SippRun, Error> {
        self.phone_as(dir, name, Scenario::Phone, port, count, answer_after)
    }

    /// [`Sipp::phone`] with another phone scenario ([`Scenario::Busy`]:
    /// 486 after `answer_after`).
    ///
    /// # Errors
    /// sipp could not be started.
    pub fn phone_as(
        &self,
        dir: &Path,
        name: &str,
        scenario: Scenario,
        port: u16,
        count: u32,
        answer_after: Duration,
    ) -> Result<SippRun, Error> {
        let (mut cmd, logs, errors) = self.base(dir, scenario, port, name)?;
        cmd.args(["-m", &count.to_string()])
            .args(["-d", &answer_after.as_millis().to_string()]);
        SippRun::spawn(dir, name, cmd, logs, errors, port)
    }
}

impl SippRun {
    fn spawn(
        dir: &Path,
        name: &str,
        cmd: Command,
        logs: PathBuf,
        errors: PathBuf,
        port: u16,
    ) -> Result<SippRun, Error> {
        let process = Process::spawn(
            &format!("sipp {name}"),
            cmd,
            &dir.join(format!("{name}.out")),
        )?;
        Ok(SippRun {
            process,
            logs,
            errors,
            port,
        })
    }

    /// The calls this batch saw answered so far, by caller number.
    pub fn answered(&self) -> HashMap<String, Answered> {
        let text = std::fs::read_to_string(&self.logs).unwrap_or_default();
        let mut out: HashMap<String, Answered> = HashMap::new();
        for line in text.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["answered", caller, t0s, t0u, t1s, t1u] => {
                    let t = |s: &str, u: &str| {
                        s.parse::<f64>().unwrap_or(0.0) + u.parse::<f64>().unwrap_or(0.0) / 1e6
                    };
                    let setup = (t(t1s, t1u) - t(t0s, t0u)).max(0.0);
                    out.insert(
                        caller.to_string(),
                        Answered {
                            caller: caller.to_string(),
                            setup: Duration::from_secs_f64(setup),
                            ended: false,
                            moved: false,
                        },
                    );
                }
                ["answered", user] => {
                    out.insert(
                        user.to_string(),
                        Answered {
                            caller: user.to_string(),
                            setup: Duration::ZERO,
                            ended: false,
                            moved: false,
                        },
                    );
                }
                ["ended", caller] => {
                    if let Some(a) = out.get_mut(*caller) {
                        a.ended = true;
                    }
                }
                ["moved", caller, ..] => {
                    if let Some(a) = out.get_mut(*caller) {
                        a.moved = true;
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// REFERs each caller refused so far (a [`Scenario::CallerRefusingRefer`]
    /// batch), by caller number.
    pub fn refused_refers(&self) -> HashMap<String, u32> {
        let text = std::fs::read_to_string(&self.logs).unwrap_or_default();
        let mut out: HashMap<String, u32> = HashMap::new();
        for line in text.lines() {
            if let ["refused", caller] = line.split_whitespace().collect::<Vec<_>>().as_slice() {
                *out.entry(caller.to_string()).or_default() += 1;
            }
        }
        out
    }

    /// The calls this batch saw fail, by caller number, with the final
    /// status (a 302 the proxy relayed instead of following is one).
    pub fn failed(&self) -> HashMap<String, u16> {
        let text = std::fs::read_to_string(&self.logs).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut p = l.split_whitespace();
                match (p.next(), p.next(), p.next()) {
                    (Some("failed"), Some(caller), Some(code)) => {
                        Some((caller.to_string(), code.parse().ok()?))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// Every line the scenario logged so far (`answered ...`, `refused
    /// ...`, `busy ...`), in order.
    pub fn logged(&self) -> Vec<String> {
        std::fs::read_to_string(&self.logs)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// sipp's error log (unexpected messages, timeouts), for failure
    /// messages.
    pub fn errors(&self) -> String {
        std::fs::read_to_string(&self.errors).unwrap_or_default()
    }

    /// sipp's screen output so far.
    pub fn output(&self) -> String {
        self.process.log_tail(60)
    }

    /// Waits for sipp to finish every call; its exit status (0: every call
    /// completed its scenario), or `None` when `deadline` passed.
    pub async fn wait(&mut self, deadline: Duration) -> Option<ExitStatus> {
        self.process.wait(deadline).await
    }

    /// Stops sipp at once (its unfinished calls are abandoned).
    pub fn kill(&mut self) {
        self.process.kill();
    }
}
