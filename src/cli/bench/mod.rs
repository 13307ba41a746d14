//! `corral bench ...`: benchmarks that print figures against a baseline
//! measured in the same run (ratios and percentiles, never one timing).

pub mod ahead;
pub mod api;
pub mod calls;
pub mod placement;
pub mod queues;
pub mod real;
mod redis_stats;
pub mod sim;

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// The call path on in-process simulated nodes, against a trivial local
    /// app on the same nodes.
    Calls(calls::Args),
    /// The placement store and policy: decisions/s and latency against the
    /// raw Redis ceiling, bytes per room, spread and moves per strategy.
    Placement(placement::Args),
    /// One call queue: callers per second with N agents and a backlog, and
    /// the time from an agent becoming free to the next caller bridged,
    /// against a trivial local queue app on the same node.
    Queues(queues::Args),
    /// The simulated node itself: start time of 50 nodes, calls per second
    /// on one node without dropping events.
    Sim(sim::Args),
    /// The HTTP API's placement route against the store's own
    /// `resolve_placement` at the same concurrency; then a paced run.
    Api(api::Args),
    /// The SIP proxy's route-ahead lookup (`GET /v1/route/...`) paced at
    /// 2,000/s, new rooms and running ones, against the HTTP floor
    /// (`/healthz`) and the store's own decision at the same rate.
    Ahead(ahead::Args),
    /// Call setup on the real farm (sipp, Kamailio, real Asterisk, corral
    /// serve): landed and redirected calls against calls sent straight to
    /// the room's node; the redirect share; a rate ramp.
    Real(real::Args),
}

/// Runs one benchmark.
pub async fn run(bench: Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Calls(args) => calls::run(args).await,
        Bench::Placement(args) => placement::run(args).await,
        Bench::Queues(args) => queues::run(args).await,
        Bench::Sim(args) => sim::run(args).await,
        Bench::Api(args) => api::run(args).await,
        Bench::Ahead(args) => ahead::run(args).await,
        Bench::Real(args) => real::run(args).await,
    }
}
