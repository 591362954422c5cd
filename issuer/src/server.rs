//! Wiring: load everything, bind both ports, watch the mounted files, serve
//! until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use sigil_runtime::admin::{self, Readiness};
use sigil_runtime::watch::Changes;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::routes;
use crate::state::AppState;

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
    let admin = tokio::spawn(admin::serve(admin_listener, registry, state.readiness.clone(), stopped()));
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let app = routes::app(state).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stopped())
        .await
        .map_err(|source| Error::Io { what: "serving /token", source });
    for w in watchers {
        w.abort();
    }
    if let Ok(Err(source)) = admin.await {
        return Err(Error::Io { what: "serving the admin port", source });
    }
    served
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })
}

#[derive(Clone, Copy)]
enum Source {
    Keys,
    Clients,
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
