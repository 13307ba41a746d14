//! `corral bench ...`: benchmarks that print figures against a baseline
//! measured in the same run (ratios and percentiles, never one timing).

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum Bench {}

/// Runs one benchmark.
pub async fn run(bench: Bench) -> anyhow::Result<()> {
    match bench {}
}
