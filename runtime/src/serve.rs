//! The accept loop every Sigil server shares: take connections until shutdown
//! begins, hand each to hyper, then give open requests a bounded time to
//! finish.

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::server::graceful::{GracefulConnection, GracefulShutdown};
use tokio::net::{TcpListener, TcpStream};

/// Serves `listener` until `shutdown` completes. `connect` turns each accepted
/// stream (and its peer address) into a hyper connection; the loop drives it,
/// and on shutdown waits up to `drain` for open connections to finish.
pub async fn connections<C, F>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    mut connect: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> C,
    C: GracefulConnection + Send + 'static,
    C::Error: Display + Send,
{
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning,
                    // and keep serving the connections already open.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses here are small; do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let conn = graceful.watch(connect(stream, remote));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    // Stop accepting before waiting, so the port refuses new connections.
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(timeout = ?drain, "connections still open after the drain timeout; closing them");
    }
}
