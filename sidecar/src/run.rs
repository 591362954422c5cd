//! Wiring: key sources, the proxy, the admin server, and shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use sigil_runtime::admin::{self, Readiness};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Error;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::jwks::KeyStore;
use crate::jwks::file::FileSource;
use crate::jwks::url::UrlSource;
use crate::metrics::Metrics;
use crate::proxy::Proxy;

/// A started sidecar.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub keys: Arc<KeyStore>,
    pub metrics: Metrics,
    pub ready: Readiness,
    /// Completes when the proxy has drained after `shutdown` fired.
    pub done: JoinHandle<()>,
}

/// Starts everything and returns once both ports are bound. Configuration
/// problems (including a missing JWKS file) are reported before binding.
pub async fn start(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<Running, Error> {
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let ready = Readiness::new();
    let keys = Arc::new(KeyStore::new(ready.clone(), metrics.clone()));
    let file = config.jwks_file.as_deref().map(FileSource::new).transpose()?;
    let auth = Arc::new(Authenticator::new(Arc::clone(&keys), config.policy.clone(), config.token_cache_size));
    let proxy_config = config.proxy();
    let proxies = (0..config.threads)
        .map(|_| Proxy::new(&proxy_config, Arc::clone(&auth), metrics.clone()))
        .collect::<Result<Vec<_>, _>>()?;

    let listeners = crate::server::bind_shared(config.listen, config.threads)
        .map_err(|source| Error::Listen { addr: config.listen, source })?;
    let admin_listener = bind(config.admin_listen).await?;
    let addr = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .ok_or_else(|| Error::Config("no proxy listener was bound".into()))?;
    let admin_addr =
        admin_listener.local_addr().map_err(|source| Error::Listen { addr: config.admin_listen, source })?;

    let mut sources = Vec::new();
    if let Some(mut file) = file {
        // Load once before serving so a valid mount means ready at once.
        file.reload(&keys).await;
        sources.push(tokio::spawn(file.run(Arc::clone(&keys))));
    }
    if let Some((uri, schedule)) = config.jwks_url.clone() {
        let source = UrlSource::new(uri, schedule, config.jwks_ca_file.clone())
            .map_err(|e| Error::Config(format!("--jwks-ca-file: {e}")))?;
        sources.push(tokio::spawn(source.run(Arc::clone(&keys))));
    }

    let (stop, stopped) = watch::channel(false);
    let mut workers = Vec::with_capacity(proxies.len());
    for (index, (listener, proxy)) in listeners.into_iter().zip(proxies).enumerate() {
        let worker = crate::server::spawn_worker(index, listener, proxy, config.limits.clone(), stopped.clone())
            .map_err(|source| Error::Listen { addr, source })?;
        workers.push(worker);
    }
    let admin = {
        let mut stopped = stopped.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let until = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = admin::serve(admin_listener, Arc::new(registry), ready, until).await {
                tracing::error!(error = %e, "admin server failed");
            }
        })
    };
    tracing::info!(%addr, %admin_addr, upstream = %config.upstream, threads = workers.len(), "sidecar listening");
    for overlap in config.routes.overlaps() {
        tracing::warn!(%overlap, "path rules overlap; the most specific prefix decides public or protected");
    }
    let done = {
        let ready = ready.clone();
        let shutdown_delay = config.shutdown_delay;
        tokio::spawn(async move {
            shutdown.await;
            // Key sources stop first, so no reload can flip readiness back on;
            // then tell the kubelet, so no new traffic is sent while we drain.
            for source in &sources {
                source.abort();
            }
            ready.set(false);
            if !shutdown_delay.is_zero() {
                tracing::info!(delay = ?shutdown_delay, "shutting down: not ready, serving on while endpoints are removed");
                tokio::time::sleep(shutdown_delay).await;
            }
            let _ = stop.send(true);
            let _ = tokio::task::spawn_blocking(move || {
                for worker in workers {
                    let _ = worker.join();
                }
            })
            .await;
            let _ = admin.await;
        })
    };
    Ok(Running { addr, admin_addr, keys, metrics, ready, done })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|source| Error::Listen { addr, source })
}
