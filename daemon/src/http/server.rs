//! The HTTP/1.1 server, with limits so slow or oversized clients cannot tie it up: a deadline
//! for the request head, a cap on header bytes (431 beyond it) and, per route, body-read and
//! request deadlines (see `app`).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// A client must send its request line and headers within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Request line plus headers; providers send a few hundred bytes.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long open connections get to finish once shutdown starts.
const CONNECTION_DRAIN: Duration = Duration::from_secs(10);

/// Serves `app` until `shutdown`, then stops accepting and lets requests in progress finish.
pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // The buffer bound only applies while the head is incomplete; this one also to a
        // complete head that arrived in one large read.
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_HEADER_BYTES);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let service = app
            .clone()
            .map_request(move |mut request: axum::extract::Request<_>| {
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(peer));
                request
            });
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(CONNECTION_DRAIN) => {
            tracing::warn!("connections still open after {CONNECTION_DRAIN:?}; closing them");
        }
    }
}
