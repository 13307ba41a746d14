//! corral keeps every call of a conference or a call queue on one Asterisk
//! node of a farm that a SIP proxy feeds round-robin.
//!
//! # Layout
//!
//! - [`domain`]: the words of the design as types (ids, rooms, placements,
//!   node records).
//! - [`names`]: every string form of a room's identity (bridge names and
//!   ids, store members, cursors), written and read in one place.
//! - [`policy`]: the placement policy, pure and seeded.
//! - [`queue`]: call queues as data: callers, agents, and the pairing rules.
//! - [`store`]: the atomic operations on placements, members, tokens and
//!   nodes; Redis (scripts in `lua/`) and in-memory backends.
//! - [`ari`]: the ARI client: typed REST calls and the event stream.
//! - [`controller`]: per-node loops, the channel and link state machines,
//!   the call path's and the resync's pure decisions and their executor,
//!   the owner decision, room lifecycle, the queue engine.
//! - [`api`]: the HTTP API for apps and operators.
//! - [`sim`]: a simulated Asterisk 22 node speaking ARI over real sockets.
//! - [`testbed`]: real parts on one machine (Asterisk nodes, Kamailio,
//!   sipp, `corral serve`) configured from the shipped `deploy/` files, for
//!   the real-farm tests, `corral demo --asterisk` and `corral chaos`.
//! - [`cli`]: the command line (`serve`, `demo`, `sim-node`, `bench`, ...).
//! - [`config`]: the configuration tree (defaults, file, environment).
//! - [`telemetry`]: tracing setup and every metric.
//! - [`retry`]: the one backoff, honouring what an error says.
//! - [`secret`]: secrets in `Debug` output and logs.
//! - [`shutdown`]: signals, and tasks owned by their handle.
#![warn(missing_docs, clippy::all)]
#![deny(unused_must_use)]

pub mod api;
pub mod ari;
pub mod cli;
pub mod config;
pub mod controller;
pub mod domain;
pub mod names;
pub mod policy;
pub mod queue;
pub mod retry;
pub mod secret;
pub mod shutdown;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod testbed;
