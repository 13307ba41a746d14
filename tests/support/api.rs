//! `ApiServer`: corral's real router served on `127.0.0.1:0` for a
//! [`super::farm::TestFarm`]'s controller; stops when dropped.

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
    /// Serves `corral::api::router` for `ctrl`, protected by `token`.
    pub async fn start(ctrl: &Controller, token: Option<&str>) -> ApiServer {
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
        let served = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await;
        });
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
