//! `corral sim-node`: one simulated node until stopped.

/// Flags of `corral sim-node`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the node until SIGTERM or Ctrl-C.
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not yet built")
}
