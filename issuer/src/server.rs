//! Wiring: load everything, bind both ports, watch the mounted files, serve
//! until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::registry::Registry;
use sigil_runtime::admin::{self, Readiness};
use sigil_runtime::watch::Changes;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::routes;
use crate::state::AppState;
use sigil_runtime::tls::Stream;

/// Loads and validates every input. Nothing is bound yet, so a bad file stops
/// the process before it ever accepts a connection.
pub fn prepare(config: &Config) -> Result<(Arc<AppState>, Arc<Registry>)> {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let state = AppState::load(config, metrics, Readiness::new())?;
    Ok((Arc::new(state), Arc::new(registry)))
}

/// Serves the token and admin endpoints on already-bound listeners until
/// `shutdown` completes, reloading files as they change.
pub async fn serve(
    config: &Config,
    state: Arc<AppState>,
    registry: Arc<Registry>,
    listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let watchers = [
        spawn_watch(&config.key_dir, config.reload_period, state.clone(), Source::Keys)?,
        spawn_watch(&config.jwks_file, config.reload_period, state.clone(), Source::Keys)?,
        spawn_watch(&config.clients_file, config.reload_period, state.clone(), Source::Clients)?,
    ];
    let mut watchers = Vec::from(watchers);
    if let Some(tls) = &config.tls {
        // cert-manager and the kubelet replace both files in one swap; either event re-reads the pair.
        watchers.push(spawn_watch(&tls.cert, config.reload_period, state.clone(), Source::Tls)?);
        watchers.push(spawn_watch(&tls.key, config.reload_period, state.clone(), Source::Tls)?);
    }
    if let (Some(settings), Some(workload)) = (&config.workload, &state.workload) {
        // KUBECONFIG, or in a pod its own ServiceAccount token and CA.
        let client = kube::Client::try_default()
            .await
            .map_err(|e| Error::Config(format!("--workload-identity needs the Kubernetes API: {e}")))?;
        watchers.extend(crate::workload_watch::spawn(client, workload.clone(), settings.jwks_path.clone()));
    }
    let acceptor = match &state.tls {
        Some(store) => Some(tokio_rustls::TlsAcceptor::from(store.server_config()?)),
        None => None,
    };
    let admin = tokio::spawn(admin::serve(admin_listener, registry, state.readiness.clone(), stopped()));
    let delay = config.shutdown_delay;
    let draining = state.clone();
    tokio::spawn(async move {
        shutdown.await;
        // Endpoints (kube-proxy, ingresses, meshes) notice a pod leaving only
        // after a while; keep accepting meanwhile, already not ready, so no
        // request routed here in that window finds the port closed.
        draining.begin_shutdown();
        if !delay.is_zero() {
            tracing::info!(delay = ?delay, "shutting down: not ready, serving on while endpoints are removed");
            tokio::time::sleep(delay).await;
        }
        let _ = stop_tx.send(true);
    });
    serve_http(listener, acceptor, routes::app(state), stopped()).await;
    for w in watchers {
        w.abort();
    }
    if let Ok(Err(source)) = admin.await {
        return Err(Error::Io { what: "serving the admin port", source });
    }
    Ok(())
}

/// A client must send its request headers within this time, so slow or idle
/// connections cannot pile up (axum's own `serve` sets no timeouts).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// In-flight requests get this long to finish after a shutdown signal; the
/// kubelet's default grace period is 30s.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves `app` over HTTP/1.1 and HTTP/2 (h2c, or h2 over TLS) until `shutdown`, then lets
/// open requests finish. Each request carries its peer address as
/// `ConnectInfo`, which the rate limiter keys on.
async fn serve_http(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    sigil_runtime::serve::connections(listener, shutdown, DRAIN_TIMEOUT, move |stream, remote| {
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            app.clone().oneshot(request.map(Body::new))
        });
        builder.serve_connection(TokioIo::new(Stream::accept(stream, tls.as_ref())), service).into_owned()
    })
    .await;
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })
}

#[derive(Clone, Copy)]
enum Source {
    Keys,
    Clients,
    Tls,
}

fn spawn_watch(
    path: &Path,
    period: Duration,
    state: Arc<AppState>,
    source: Source,
) -> Result<tokio::task::JoinHandle<()>> {
    let mut changes =
        Changes::new(path, period).map_err(|e| Error::File { path: path.to_path_buf(), reason: e.to_string() })?;
    Ok(tokio::spawn(async move {
        loop {
            changes.changed().await;
            let state = state.clone();
            // Parsing keys and hashes is CPU work; keep it off the request threads.
            let result = tokio::task::spawn_blocking(move || match source {
                Source::Keys => state.reload_keys(),
                Source::Clients => state.reload_clients(),
                Source::Tls => state.reload_tls(),
            })
            .await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "reload failed; keeping the previous version"),
                Err(e) => tracing::error!(error = %e, "reload task failed"),
            }
        }
    }))
}
