//! The HTTP/1.1 server, with limits so slow or oversized clients cannot tie it up: a cap on
//! open connections (beyond it a connection is told 503 and closed), a deadline for each
//! request head, including the wait for the next one on an idle keep-alive connection, a cap
//! on header bytes (431 beyond it) and, per route, body-read and request deadlines (see `app`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// A client must send its request line and headers within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Request line plus headers; providers send a few hundred bytes.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long a connection beyond the cap gets to take its 503.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);
/// How long open connections get to finish once shutdown starts.
const CONNECTION_DRAIN: Duration = Duration::from_secs(10);

/// Connections beyond the cap that are told so at once; past these they are just closed.
const REFUSALS_IN_FLIGHT: usize = 64;
/// What a connection beyond the cap hears, in whole: there is no request to route yet.
const AT_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\n\
    content-length: 50\r\n\r\n\
    {\"error\":\"too many open connections; retry later\"}";

/// Serves `app` until `shutdown`, then stops accepting and lets requests in progress finish.
/// At most `max_connections` are served at once.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    shutdown: CancellationToken,
) {
    let open = Arc::new(Semaphore::new(max_connections));
    let refusing = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
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
        let Ok(slot) = open.clone().try_acquire_owned() else {
            if let Ok(refusal) = refusing.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    let _refusal = refusal;
                    let mut stream = stream;
                    // Closing with the request unread would reset the connection and lose
                    // the answer; the client gets it, then its remaining bytes are skipped.
                    let _ = tokio::time::timeout(REFUSAL_WRITE, async {
                        stream.write_all(AT_CAPACITY).await?;
                        stream.shutdown().await?;
                        let mut sink = [0u8; 4096];
                        while stream.read(&mut sink).await? > 0 {}
                        std::io::Result::Ok(())
                    })
                    .await;
                });
            }
            tracing::debug!(%peer, "connection refused: at the connection cap");
            continue;
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
            let _slot = slot;
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
