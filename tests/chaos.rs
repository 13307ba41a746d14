//! `corral chaos` through the built binary: a short fault matrix on a
//! simulated farm of processes (sim-nodes, two `corral serve` replicas, a
//! `redis-server`), the table it prints, and its exit code: 0 only when
//! every promise of issue 11 held for every fault.
//!
//! The matrix test fails while corral breaks a promise (the rows say which
//! and how, and the runner's directory keeps every log); that is its job.

mod support;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};

/// The short matrix: every simulated fault, shortened.
const FAULTS: &str = "node-kill,node-restart,node-stop,ws-cut,replica-kill,redis-restart,rest-5xx,event-delay,event-dup,proxy-302";

/// The columns of the table, in order.
const COLUMNS: [&str; 12] = [
    "fault",
    "target",
    "offered",
    "bridged",
    "lost:fault",
    "lost:corral",
    "hungup:crl",
    "splits",
    "longest",
    "whole",
    "recovery",
    "promises",
];

/// A running `corral chaos`, stopped (SIGTERM, so it cleans up its
/// processes, then SIGKILL) if the test ends first.
struct Runner {
    child: Child,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
}

impl Runner {
    fn start(args: &[&str]) -> Runner {
        let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
            .arg("chaos")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("corral chaos starts");
        let mut stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Runner { child, out, err }
    }

    /// Waits for it to exit within `deadline`: (exit code, stdout, stderr).
    fn finish(mut self, deadline: Duration) -> (Option<i32>, String, String) {
        let mut poll = support::Poll::new(deadline);
        let status = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break Some(s);
            }
            if !poll.next_blocking() {
                self.stop();
                break self.child.wait().ok();
            }
        };
        let out = std::mem::replace(&mut self.out, std::thread::spawn(String::new));
        let err = std::mem::replace(&mut self.err, std::thread::spawn(String::new));
        (
            status.and_then(|s| s.code()),
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        )
    }

    fn stop(&mut self) {
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            let _ = kill_process(pid, Signal::TERM);
        }
        let mut poll = support::Poll::new(Duration::from_secs(15));
        while matches!(self.child.try_wait(), Ok(None)) {
            if !poll.next_blocking() {
                let _ = self.child.kill();
                break;
            }
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
        let _ = self.child.wait();
    }
}

/// One row of the table, by column.
fn rows(out: &str) -> Vec<Vec<String>> {
    let mut lines = out.lines().skip_while(|l| !l.starts_with("fault "));
    let header = lines.next().expect("the table's header");
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        COLUMNS,
        "header: {header}"
    );
    lines
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            // `recovery` may hold spaces: the columns before it are single
            // words, `promises` is `ok` or `BROKEN (n)`.
            let words: Vec<&str> = l.split_whitespace().collect();
            let promises_at = words
                .iter()
                .position(|w| *w == "ok" || *w == "BROKEN")
                .unwrap_or(words.len());
            let mut row: Vec<String> = words[..10.min(words.len())]
                .iter()
                .map(|s| s.to_string())
                .collect();
            row.push(words.get(10..promises_at).unwrap_or_default().join(" "));
            row.push(words.get(promises_at..).unwrap_or_default().join(" "));
            row
        })
        .collect()
}

/// The short matrix on 3 simulated nodes at 30 calls/s into 10 rooms
/// (about 2 minutes on 2 cores; a SIGSTOP of 4 s, so the hung-node bound
/// of 3 s is tested): one
/// row per fault, in order, each with its counts; then the exit code says
/// whether every promise held (a failure lists what broke, from the
/// runner's own output).
#[test]
fn a_short_fault_matrix_keeps_every_promise() {
    let started = std::time::Instant::now();
    let runner = Runner::start(&[
        "--faults",
        FAULTS,
        "--nodes",
        "3",
        "--rate",
        "30",
        "--rooms",
        "10",
        "--hold-ms",
        "1500",
        "--duration",
        "6",
        "--warmup",
        "1",
        "--fault-secs",
        "4",
        "--seed",
        "11",
        "--timeout",
        "200",
    ]);
    let (code, out, err) = runner.finish(Duration::from_secs(230));
    let took = started.elapsed();
    assert!(
        out.contains("seed 11"),
        "the seed is printed:\n{out}\n{err}"
    );
    let rows = rows(&out);
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        names,
        FAULTS.split(',').collect::<Vec<_>>(),
        "one row per fault:\n{out}"
    );
    for r in &rows {
        assert_eq!(r.len(), COLUMNS.len(), "{r:?}");
        for (i, col) in COLUMNS.iter().enumerate().take(8).skip(2) {
            assert!(r[i].parse::<u64>().is_ok(), "{col} is a count: {r:?}");
        }
        let offered: u64 = r[2].parse().unwrap_or(0);
        let parts: u64 = r[3..6].iter().map(|c| c.parse::<u64>().unwrap_or(0)).sum();
        assert!(offered > 50, "calls were offered: {r:?}");
        assert!(
            parts <= offered,
            "bridged and lost are parts of offered: {r:?}"
        );
        assert!(
            r[9].split_once('/')
                .is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok()),
            "whole is n/m: {r:?}"
        );
        assert!(r[11] == "ok" || r[11].starts_with("BROKEN ("), "{r:?}");
    }
    let broken: Vec<&str> = out.lines().filter(|l| l.starts_with("BROKEN ")).collect();
    println!("{out}\n(took {took:?})");
    assert_eq!(
        code,
        Some(0),
        "corral chaos exits 0 only when every promise held; broken:\n{}\n{err}",
        broken.join("\n")
    );
    assert!(broken.is_empty());
}

/// Odd input is refused before anything starts, with the reason.
#[test]
fn odd_input_is_refused_with_a_reason() {
    for (args, says) in [
        (&["--faults", "bogus"][..], "unknown fault"),
        (&["--faults", ","][..], "no fault chosen"),
        (&["--rate", "0"][..], "--rate"),
        (&["--rate", "NaN"][..], "--rate"),
        (&["--nodes", "0"][..], "--nodes"),
        (&["--rest-error-rate", "2"][..], "--rest-error-rate"),
        (&["--corral-env", "X=1"][..], "CORRAL_KEY=VALUE"),
    ] {
        let (code, out, err) = Runner::start(args).finish(Duration::from_secs(20));
        assert_ne!(code, Some(0), "{args:?} accepted:\n{out}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
