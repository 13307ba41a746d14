//! One child process of the testbed: started in its own process group with
//! its output in a log file, signalled as a whole group (Kamailio forks
//! workers), and killed with its group when its handle drops.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};

use super::Error;

/// A running child process and its process group.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Option<Child>,
    /// The group's id (the leader's pid), kept after the leader is reaped
    /// so that workers that outlive it can still be signalled.
    group: Option<Pid>,
    log: PathBuf,
}

impl Process {
    /// Starts `cmd` in a new process group, stdout and stderr appended to
    /// `log`.
    ///
    /// # Errors
    /// [`Error::Start`] when the program cannot be started.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self, Error> {
        use std::os::unix::process::CommandExt;
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(Error::io(format!("opening {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(Error::io(format!("opening {}", log.display())))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        let child = cmd.spawn().map_err(|e| Error::Start {
            what: name.to_string(),
            detail: format!("{:?}: {e}", cmd.get_program()),
        })?;
        Ok(Self {
            name: name.to_string(),
            group: Pid::from_raw(child.id() as i32),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// The process id (also its group id), if it was not reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Where its output goes.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The last `n` lines of its log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whether it has exited; its status if so.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends `signal` to the whole group.
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.group {
            // The group may be gone already: nothing to do then.
            let _ = kill_process_group(pid, signal);
        }
    }

    /// A crash: SIGKILL to the group, and the process reaped.
    pub fn kill(&mut self) {
        self.signal(Signal::KILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The id may be reused by an unrelated group from now on.
        self.group = None;
    }

    /// Freezes the group (SIGSTOP): sockets stay open, nothing answers.
    pub fn pause(&self) {
        self.signal(Signal::STOP);
    }

    /// Thaws a paused group (SIGCONT).
    pub fn resume(&self) {
        self.signal(Signal::CONT);
    }

    /// A clean stop: SIGTERM, then SIGKILL if it has not exited within
    /// `grace`. Returns its exit status when it exited by itself.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.resume();
        self.signal(Signal::TERM);
        let deadline = std::time::Instant::now() + grace;
        let mut pause = Duration::from_millis(2);
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.exited() {
                self.child = None;
                // Workers of a group (Kamailio's) may outlive the leader.
                self.signal(Signal::KILL);
                self.group = None;
                return Some(status);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        tracing::warn!(process = %self.name, "did not stop within {grace:?}; killed");
        self.kill();
        None
    }

    /// Waits for it to exit by itself, at most `deadline`.
    pub async fn wait(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let until = tokio::time::Instant::now() + deadline;
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
