//! `ApiServer`: corral's real router served by `corral::api::serve` (the
//! server `corral serve` runs) on `127.0.0.1:0` for a
//! [`super::farm::TestFarm`]'s controller; stops when dropped.

use corral::api::ServerConfig;
use corral::controller::Controller;
use tokio_util::sync::CancellationToken;

/// A running API.
pub struct ApiServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    stop: CancellationToken,
    served: Option<tokio::task::JoinHandle<()>>,
}

impl ApiServer {
    /// Serves `corral::api::router` for `ctrl`, protected by `token`, with
    /// the default connection limits.
    pub async fn start(ctrl: &Controller, token: Option<&str>) -> ApiServer {
        Self::start_with(ctrl, token, ServerConfig::default()).await
    }

    /// [`ApiServer::start`] with the connection limits `limits`.
    pub async fn start_with(
        ctrl: &Controller,
        token: Option<&str>,
        limits: ServerConfig,
    ) -> ApiServer {
        let stop = CancellationToken::new();
        let app = corral::api::router(
            corral::api::AppState::new(ctrl.clone(), token.map(str::to_owned))
                .with_shutdown(stop.clone()),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let s = stop.clone();
        let served = tokio::spawn(corral::api::serve(listener, app, limits, s));
        ApiServer {
            url,
            stop,
            served: Some(served),
        }
    }
}

impl ApiServer {
    /// Stops the server gracefully and waits until it has stopped.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(s) = self.served.take() {
            let _ = s.await;
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
