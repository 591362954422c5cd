//! The listening side: HTTP/1.1 with keep-alive and HTTP/2 cleartext (prior
//! knowledge) on one port, header limits and read timeouts, and a graceful
//! drain when shutdown begins.
//!
//! Traffic is served thread-per-core: each worker thread runs its own
//! single-threaded runtime, its own listener on the shared port
//! (`SO_REUSEPORT`, the kernel spreads connections) and its own upstream
//! connection pool. A request then never hops between threads, which on a
//! small pod saves the cross-thread wake-ups a work-stealing runtime pays on
//! every proxied request. Key sources and the admin port stay on the main
//! runtime; workers share only the key set (lock-free) and the token cache.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use crate::proxy::Proxy;

#[derive(Clone, Debug)]
pub struct Limits {
    /// Time a client has to send a complete request head (slowloris guard).
    pub header_read_timeout: Duration,
    /// Largest request head accepted (HTTP/1.1 buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// How long open requests may finish after shutdown begins.
    pub drain_timeout: Duration,
}

pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, limits: Limits, shutdown: impl Future<Output = ()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    sigil_runtime::serve::connections(listener, shutdown, limits.drain_timeout, move |stream, remote| {
        let proxy = Arc::clone(&proxy);
        let service = hyper::service::service_fn(move |req| {
            let proxy = Arc::clone(&proxy);
            async move { Ok::<_, Infallible>(proxy.handle(req, remote).await) }
        });
        builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned()
    })
    .await;
}

/// Binds `n` listeners to one address with `SO_REUSEPORT` (port 0 picks one
/// port for all). Must run inside a runtime; the sockets are handed back
/// unregistered, for each worker's runtime to adopt.
pub fn bind_shared(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut addr = addr;
    let mut listeners = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        addr = listener.local_addr()?;
        listeners.push(listener.into_std()?);
    }
    Ok(listeners)
}

/// Starts one worker thread serving `listener` until `shutdown` turns true.
pub fn spawn_worker(
    index: usize,
    listener: std::net::TcpListener,
    proxy: Proxy,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(format!("sigil-proxy-{index}")).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, "cannot start a proxy worker runtime");
                return;
            }
        };
        runtime.block_on(async move {
            let listener = match TcpListener::from_std(listener) {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::error!(error = %e, "cannot adopt the listening socket");
                    return;
                }
            };
            let until = async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            };
            serve(listener, Arc::new(proxy), limits, until).await;
        });
    })
}
