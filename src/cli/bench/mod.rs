//! `corral bench ...`: benchmarks that print figures against a baseline
//! measured in the same run (ratios and percentiles, never one timing).

pub mod placement;

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// The placement store and policy: decisions/s and latency against the
    /// raw Redis ceiling, bytes per room, spread and moves per strategy.
    Placement(placement::Args),
}

/// Runs one benchmark.
pub async fn run(bench: Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Placement(args) => placement::run(args).await,
    }
}
