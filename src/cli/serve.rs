//! `corral serve --config corral.toml`: the controller and its API, until
//! SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::controller::{self, Controller, NodeSpec};
use crate::domain::NodeId;
use crate::store;
use crate::telemetry::Metrics;

/// Flags of `corral serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The TOML configuration (see README, "Configure a real farm");
    /// `CORRAL_*` environment variables override it.
    #[arg(long, short, env = "CORRAL_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Builds the controller's own config from the file's `[controller]`.
pub fn controller_config(cfg: &Config) -> anyhow::Result<controller::Config> {
    let c = &cfg.controller;
    Ok(controller::Config {
        app: cfg.app.clone(),
        standby_app: cfg.standby_app.clone(),
        endpoint_template: c.endpoint_template.clone(),
        hop_limit: c.hop_limit,
        token_ttl: Duration::from_millis(c.token_ttl_ms),
        redirect_deadline: Duration::from_millis(c.redirect_deadline_ms),
        token_store_wait: Duration::from_millis(c.token_store_wait_ms),
        linger: Duration::from_millis(c.linger_ms),
        strategy: c
            .policy
            .parse()
            .map_err(|e| anyhow::anyhow!("controller.policy: {e}"))?,
        seed: c.seed.unwrap_or_else(rand::random),
        ping_interval: Duration::from_millis(c.ping_interval_ms),
        down_after_failures: c.down_after_failures,
        reconcile_interval: Duration::from_millis(c.reconcile_interval_ms),
        replica: controller::default_replica(),
        lease_ttl: Duration::from_millis(c.lease_ttl_ms),
        drain_deadline: Duration::from_millis(c.drain_deadline_ms),
        queues: cfg.queue_settings()?,
    })
}

/// The node list of the configuration, for the controller.
pub fn node_specs(cfg: &Config) -> anyhow::Result<Vec<NodeSpec>> {
    cfg.nodes
        .iter()
        .map(|n| {
            Ok(NodeSpec {
                ari: crate::ari::Config {
                    node: NodeId::new(n.id.as_str())?,
                    base_url: n.ari_url.clone(),
                    username: n.username.clone(),
                    password: n.password.clone(),
                    app: cfg.app.clone(),
                    request_timeout: crate::ari::Config::DEFAULT_REQUEST_TIMEOUT,
                },
                sip_host: n.sip_host.clone(),
                capacity: n.capacity,
                max_rooms: n.max_rooms,
            })
        })
        .collect()
}

/// The store config of the configuration.
pub fn store_config(cfg: &Config) -> store::Config {
    store::Config {
        farm: cfg.farm.clone(),
        redis_url: cfg.store.redis_url.clone(),
        ..store::Config::default()
    }
}

/// Runs corral until a signal.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = Config::load(args.config.as_deref())?;
    if cfg.nodes.is_empty() {
        anyhow::bail!("no [[nodes]] configured: corral has nothing to manage");
    }
    let shutdown = crate::shutdown::on_signal();
    let store = store::connect(&store_config(&cfg))
        .await
        .context("cannot start the store")?;
    let metrics = Arc::new(Metrics::new());
    let ctrl = Controller::new(
        controller_config(&cfg)?,
        store.clone(),
        node_specs(&cfg)?,
        metrics,
    )?;
    let listen = cfg.api_listen()?;
    let limits = cfg.api_server()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("api.listen: cannot listen on {listen}"))?;
    tracing::info!(farm = %cfg.farm, api = %listen, nodes = cfg.nodes.len(),
        store = if cfg.store.redis_url.is_some() { "redis" } else { "memory" }, "corral serving");
    if cfg.api.token.is_none() {
        tracing::warn!(
            "api.token is not set: placement, colocate, tokens and drain are open to anyone who reaches the API"
        );
    }
    let app = crate::api::router(
        crate::api::AppState::new(ctrl.clone(), cfg.api.token.clone())
            .with_shutdown(shutdown.clone())
            .with_route_ahead(cfg.api.route_ahead),
    );
    let api_shutdown = shutdown.clone();
    let api =
        crate::shutdown::OwnedTask::spawn(crate::api::serve(listener, app, limits, api_shutdown));
    ctrl.run(shutdown).await;
    api.await?;
    Ok(())
}
