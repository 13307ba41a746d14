//! `ApiServer`: corral's real router served on `127.0.0.1:0` for a
//! [`super::farm::TestFarm`]'s controller; stops when dropped.

use corral::controller::Controller;
use tokio_util::sync::CancellationToken;

/// A running API.
pub struct ApiServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    stop: CancellationToken,
}

impl ApiServer {
    /// Serves `corral::api::router` for `ctrl`, protected by `token`.
    pub async fn start(ctrl: &Controller, token: Option<&str>) -> ApiServer {
        let app = corral::api::router(corral::api::AppState::new(
            ctrl.clone(),
            token.map(str::to_owned),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await;
        });
        ApiServer { url, stop }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
