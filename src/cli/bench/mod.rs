//! `corral bench ...`: benchmarks that print figures against a baseline
//! measured in the same run (ratios and percentiles, never one timing).

pub mod sim;

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// Simulated nodes: start time of many nodes, calls per second on one.
    Sim(sim::Args),
}

/// Runs one benchmark.
pub async fn run(bench: Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Sim(args) => sim::run(args).await,
    }
}
