//! Real parts on one machine, for the real-farm tests, `corral demo
//! --asterisk` and `corral chaos`: Asterisk nodes, one Kamailio, sipp
//! callers and phones, and `corral serve`, each configured from the files
//! corral ships in `deploy/` ([`render`]) with only ports, addresses and
//! paths filled in.
//!
//! What it owns: processes it starts (each stopped when its handle drops,
//! including on a test's panic), their directories, and the ports it picks.
//! What it leaves to others: deciding anything about calls. The truth a
//! caller of this module checks is read from each Asterisk's ARI
//! ([`AsteriskNode::bridges`], [`AsteriskNode::channels`]) and from sipp's
//! results, never from corral's own map.
//!
//! # Assumptions
//! - An Asterisk 22 is found by [`asterisk::Install::locate`] (the
//!   relocatable tarball, `CORRAL_ASTERISK_DIR`, or `asterisk` on `PATH`).
//! - `kamailio` (5.6 or later, with the dispatcher module) and `sipp` are on
//!   `PATH` (Debian: `kamailio`, `sip-tester`).
//! - Everything binds to 127.0.0.1 on ports picked free at start.

pub mod asterisk;
pub mod corral;
pub mod farm;
pub mod kamailio;
pub mod process;
pub mod render;
pub mod sipp;

pub use asterisk::{AppSocket, AsteriskNode, Install};
pub use corral::CorralProcess;
pub use farm::{FarmOptions, RealFarm, RoomTruth};
pub use kamailio::Kamailio;
pub use process::Process;
pub use sipp::{Sipp, SippRun};

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};

/// What went wrong while starting or driving real parts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No Asterisk was found; the message says how to get one.
    #[error("no Asterisk 22 found: {0}")]
    NoAsterisk(String),
    /// A program the testbed needs is not installed.
    #[error("{program} is not on PATH: {fix}")]
    Missing {
        /// The program.
        program: String,
        /// How to install it.
        fix: String,
    },
    /// A shipped file did not have the line the testbed fills in.
    #[error("{file}: {what}")]
    Render {
        /// The file under `deploy/`.
        file: String,
        /// What was missing.
        what: String,
    },
    /// A process could not be started, or stopped before it was ready.
    #[error("{what}: {detail}")]
    Start {
        /// Which process.
        what: String,
        /// Why, with the end of its log where there is one.
        detail: String,
    },
    /// File system or process I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An HTTP call to a node or to corral failed.
    #[error("{what}: {source}")]
    Http {
        /// The request.
        what: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// A port free for both TCP and UDP on 127.0.0.1, below the kernel's
/// ephemeral range (where sipp and HTTP clients take theirs, from 32768 on
/// Linux) so that a port picked here is not taken by a client before its
/// server binds it.
///
/// # Errors
/// [`Error::Io`] when no port in the range is free.
pub fn free_port() -> Result<u16, Error> {
    // 20000..26000, starting at a point derived from the process id so that
    // test binaries running side by side rarely try the same ports.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    const LOW: u16 = 20_000;
    const SPAN: u16 = 6_000;
    let base = (std::process::id() % u32::from(SPAN)) as u16;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + (base.wrapping_add(n.wrapping_mul(7))) % SPAN;
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return Ok(port);
        }
    }
    Err(Error::Io {
        what: "finding a free port in 20000..26000".into(),
        source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
    })
}

/// A range of RTP ports for one node: one of 15 slices of 400 ports in
/// 26000..32000 (between [`free_port`]'s range and the ephemeral one),
/// taken in turn from a point derived from the process id. Two nodes that
/// share a slice only share its ports: Asterisk skips a port in use.
pub fn rtp_range() -> (u16, u16) {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    const LOW: u16 = 26_000;
    const SLICES: u16 = 15;
    const SIZE: u16 = 400;
    let slice = ((std::process::id() % u32::from(SLICES)) as u16
        + NEXT.fetch_add(1, Ordering::Relaxed))
        % SLICES;
    let start = LOW + slice * SIZE;
    (start, start + SIZE - 1)
}

/// The HTTP client the testbed reads nodes and corral with: every request
/// ends within 5 s, so a frozen process cannot stall a check.
///
/// # Errors
/// [`Error::Http`] when the client cannot be built.
pub fn http_client() -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|source| Error::Http {
            what: "building an HTTP client".into(),
            source,
        })
}

/// Where a program is on `PATH`.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}
