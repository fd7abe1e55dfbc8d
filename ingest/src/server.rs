//! Accepting connections: HTTP/1.1 with a cap on connections served at once, a deadline
//! for a request's headers (which also closes an idle kept-alive connection) and a
//! bounded read buffer per connection, so what connections hold before they authenticate
//! is bounded by the cap. The body's own deadline is the handler's (`http::BodyDeadline`).
//! Talks to the network; knows nothing of the requests.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tracing::{debug, info, warn};

/// Limits on connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connections {
    /// Most connections served at once.
    pub max: usize,
    /// Time to send a request's headers, and most idle time between requests.
    pub header_timeout: Duration,
}

/// The largest read buffer of a connection: headers must fit in it; a body is read in
/// pieces of at most this size.
pub const READ_BUFFER: usize = 64 * 1024;

/// How long requests in flight get to finish once `shutdown` fires: the pods' stop gives
/// 30 s for it, the login's statement timeout.
const DRAIN: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` until `shutdown` completes, then lets requests in flight
/// finish (up to 30 s, the pods' stop grace for them).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    connections: Connections,
    shutdown: impl Future<Output = ()>,
) {
    let slots = std::sync::Arc::new(Semaphore::new(connections.max.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(connections.header_timeout)
        .max_buf_size(READ_BUFFER)
        .keep_alive(true);
    let service =
        router.map_request(|request: hyper::Request<Incoming>| request.map(axum::body::Body::new));
    tokio::pin!(shutdown);
    loop {
        // A slot first: beyond the cap, connections wait in the accept queue.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pass, and try again.
                    warn!(%error, "failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // The peer's address, for handlers that key on the client (`ConnectInfo`).
        let service = tower::ServiceExt::map_request(
            service.clone(),
            move |mut request: hyper::Request<Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        );
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%error, "connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    info!("stopped accepting connections; finishing requests in flight");
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("requests still in flight after the drain time; stopping anyway");
    }
}
