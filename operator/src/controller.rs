//! Wiring: the kube `Controller` with its watches, the admin server, leader
//! election and shutdown.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use prometheus_client::registry::Registry;
use sigil_api::contract::{MANAGED_BY, managed_selector};
use sigil_api::signing_key::SigningKey;
use sigil_runtime::admin::{self, Readiness};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::config::LeaseConfig;
use crate::distribute::LABEL_SOURCE_UID;
use crate::fence::Fence;
use crate::leader::Elector;
use crate::metrics::{Metrics, StatusCollector};
use crate::reconcile::{Context, error_policy, reconcile, wall_clock};

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    #[error("cannot reach the Kubernetes API: {0}")]
    Connect(kube::Error),
    #[error(
        "the SigningKey CRD is not installed (or not readable): {0}; install it with `sigil-operator crd | kubectl apply -f -`"
    )]
    Crd(kube::Error),
    #[error("admin server: {0}")]
    Admin(std::io::Error),
    #[error(transparent)]
    Lease(#[from] crate::error::Error),
}

pub struct Options {
    pub namespace: Option<String>,
    pub limits: crate::decide::Limits,
    pub lease: Option<LeaseConfig>,
    pub admin: TcpListener,
    pub webhook: Option<Webhook>,
}

/// The sidecar-injection webhook, when on.
pub struct Webhook {
    pub listener: TcpListener,
    pub defaults: crate::inject::Defaults,
    pub certificate: crate::webhook::cert::Target,
    /// Issue the certificate and keep caBundle (false: cert-manager does).
    pub manage_certificate: bool,
}

pub async fn run(opts: Options) -> Result<(), Fatal> {
    let client = Client::try_default().await.map_err(Fatal::Connect)?;
    let api = |c: &Client| match &opts.namespace {
        Some(ns) => (Api::namespaced(c.clone(), ns), Api::namespaced(c.clone(), ns), Api::namespaced(c.clone(), ns)),
        None => (Api::all(c.clone()), Api::all(c.clone()), Api::all(c.clone())),
    };
    let (signing_keys, secrets, config_maps): (Api<SigningKey>, Api<Secret>, Api<ConfigMap>) = api(&client);
    // Fail fast with a clear message instead of a watch that retries forever.
    signing_keys.list(&ListParams::default().limit(1)).await.map_err(Fatal::Crd)?;

    let metrics = Metrics::default();
    let ready = Readiness::new();
    let owned = watcher::Config::default().labels(&managed_selector());
    let mut controller = Controller::new(signing_keys, watcher::Config::default())
        // Only the objects we manage; a foreign Secret is never even cached.
        .owns(secrets, owned.clone())
        .owns(config_maps, owned)
        .with_config(ControllerConfig::default().concurrency(16));
    let cluster_scope = opts.namespace.is_none();
    if cluster_scope {
        // JWKS copies: a namespace appearing or relabelled wakes every
        // SigningKey that distributes; a copy edited or deleted wakes its source.
        let store = controller.store();
        let distributing = move |_: Namespace| {
            store.state().into_iter().filter(|sk| sk.spec.distribution.is_some()).map(|sk| ObjectRef::from_obj(&*sk))
        };
        let copies = watcher::Config::default().labels(LABEL_SOURCE_UID);
        controller = controller
            .watches(Api::<Namespace>::all(client.clone()), watcher::Config::default(), distributing)
            .watches(Api::<ConfigMap>::all(client.clone()), copies, |cm| crate::copies::source_of(&cm));
    }
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    registry.register_collector(Box::new(StatusCollector { store: controller.store() }));

    // The webhook runs on every replica from the start; the certificate's
    // upkeep waits for the Lease like every other write.
    let mut background = tokio::task::JoinSet::new();
    let mut certificate = None;
    let served = crate::webhook::cert::Served::default();
    if let Some(webhook) = opts.webhook {
        let injection = crate::webhook::InjectionMetrics::default();
        injection.register(&mut registry);
        let target = webhook.certificate;
        let injector = Arc::new(crate::webhook::Injector {
            client: client.clone(),
            defaults: webhook.defaults,
            metrics: injection,
        });
        background.spawn(crate::webhook::cert::follow(
            client.clone(),
            target.secret_namespace.clone(),
            target.secret_name.clone(),
            served.clone(),
        ));
        background.spawn(crate::webhook::serve(webhook.listener, injector, served.clone(), std::future::pending()));
        certificate = Some((target, webhook.manage_certificate));
    }

    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin = tokio::spawn(admin::serve(opts.admin, Arc::new(registry), ready.clone(), async {
        let _ = admin_stopped.await;
    }));
    // Ready means connected to the API with the CRD in place (and, with the
    // webhook on, a certificate to serve); a standby replica is ready too, so
    // a rollout of two replicas can finish.
    if certificate.is_some() {
        let (ready, served) = (ready.clone(), served.clone());
        background.spawn(async move {
            while served.current().is_none() {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            ready.set(true);
        });
    } else {
        ready.set(true);
    }

    let mut elector = opts.lease.map(|lease| Elector::new(client.clone(), lease));
    let shutdown = sigil_runtime::shutdown::signal();
    tokio::pin!(shutdown);
    if let Some(elector) = elector.as_mut() {
        tokio::select! {
            acquired = elector.acquire() => acquired?,
            () = &mut shutdown => return stop(admin, stop_admin).await,
        }
    }

    let reporter = Reporter { controller: MANAGED_BY.to_owned(), instance: std::env::var("POD_NAME").ok() };
    let fence = elector.as_ref().map_or_else(Fence::open, Elector::fence);
    if let Some((target, true)) = certificate {
        background.spawn(crate::webhook::cert::maintain(client.clone(), fence.clone(), target));
    }
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        metrics,
        now: wall_clock,
        limits: opts.limits,
        fence,
        before_create: None,
        cluster_scope,
    });
    let (stop_controller, controller_stopped) = tokio::sync::oneshot::channel::<()>();
    let running = controller
        .graceful_shutdown_on(async {
            let _ = controller_stopped.await;
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => debug!(signing_key = %obj.name, namespace = ?obj.namespace, "reconciled"),
                Err(error) => warn!(%error, "controller"),
            }
        });
    tokio::pin!(running);
    info!("operator running");

    let lost = async {
        match elector.as_mut() {
            Some(e) => e.hold().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        () = &mut shutdown => Ok(()),
        error = lost => Err(Fatal::Lease(error)),
        () = &mut running => Ok(()),
    };
    // In-flight reconciles finish: on shutdown their writes go through before
    // the Lease is released; after a lost Lease the fence refuses them.
    let _ = stop_controller.send(());
    running.await;
    if let Some(elector) = elector.as_mut()
        && outcome.is_ok()
    {
        elector.release().await;
    }
    background.abort_all();
    stop(admin, stop_admin).await?;
    outcome
}

async fn stop(
    admin: tokio::task::JoinHandle<std::io::Result<()>>,
    stop_admin: tokio::sync::oneshot::Sender<()>,
) -> Result<(), Fatal> {
    let _ = stop_admin.send(());
    match admin.await {
        Ok(result) => result.map_err(Fatal::Admin),
        Err(_) => Ok(()),
    }
}
