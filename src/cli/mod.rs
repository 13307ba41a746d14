//! The command line: one [`Command`] enum, one file per command.
//!
//! `main.rs` calls [`main`]; each command's flags live next to its code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod bench;
pub mod chaos;
pub mod demo;
pub mod demo_real;
pub mod ops;
pub mod output;
pub mod serve;
pub mod sim_node;

/// corral keeps every call of a conference or a queue on one Asterisk node.
#[derive(Debug, Parser)]
#[command(name = "corral", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// corral's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller and its API against the configured nodes.
    Serve(serve::Args),
    /// The demo: simulated nodes, corral on the in-memory store (or Redis),
    /// a caller sending calls through a round-robin proxy, a node killed
    /// halfway (`--asterisk`: the same on real Asterisk, Kamailio and sipp).
    Demo(demo::Args),
    /// Run one simulated Asterisk 22 node (ARI over HTTP and websockets)
    /// until stopped.
    SimNode(sim_node::Args),
    /// Measure corral's parts and print figures against a baseline measured
    /// in the same run.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Run a fault matrix against a simulated farm of separate processes
    /// (nodes, two replicas, Redis) and check corral's promises from the
    /// nodes' ARI; exits non-zero when one breaks.
    Chaos(chaos::Args),
    /// List the room map of a running corral (every page).
    Rooms(ops::RoomsArgs),
    /// Show one room and its members.
    Room(ops::RoomArgs),
    /// List the nodes: state, stream, rooms, members, load.
    Nodes(ops::NodesArgs),
    /// Drain a node: no new rooms there; running rooms still take joiners.
    Drain(ops::DrainArgs),
    /// Undrain a node: it takes new rooms again.
    Undrain(ops::UndrainArgs),
    /// Follow the farm's events live.
    Watch(ops::WatchArgs),
    /// List the queues: node, waiting callers, longest wait, agents
    /// (available, busy, wrap-up, paused), answered, abandoned.
    Queues(ops::QueuesArgs),
    /// Show one queue (figures, waiting callers, agents), or change its
    /// members: `add AGENT ENDPOINT [--paused]`, `remove AGENT`, `pause
    /// AGENT`, `unpause AGENT`.
    Queue(ops::QueueArgs),
}

/// Parses the command line, starts tracing and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo and benchmarks print their own story; logs would drown it.
    // Operator commands print tables or JSON on stdout: keep logs to warn.
    let quiet = !matches!(cli.command, Command::Serve(_) | Command::SimNode(_));
    crate::telemetry::init(if quiet { "corral=warn" } else { "corral=info" });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("corral: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::SimNode(args) => sim_node::run(args).await,
            Command::Bench(bench) => bench::run(bench).await,
            Command::Chaos(args) => chaos::run(args).await,
            Command::Rooms(args) => ops::rooms(args).await,
            Command::Room(args) => ops::room(args).await,
            Command::Nodes(args) => ops::nodes(args).await,
            Command::Drain(args) => ops::drain(args).await,
            Command::Undrain(args) => ops::undrain(args).await,
            Command::Watch(args) => ops::watch(args).await,
            Command::Queues(args) => ops::queues(args).await,
            Command::Queue(args) => ops::queue(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("corral: {err:#}");
            ExitCode::FAILURE
        }
    }
}
