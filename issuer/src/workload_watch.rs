//! Workload identity's inputs from the API server, kept in memory so the
//! token path never waits on it: the service-account issuer's JWKS (polled)
//! and every SigilClient (watched). Runs only with --workload-identity.
//!
//! Least privilege: `list` and `watch` on `sigilclients.sigil.dev` (all
//! namespaces) and `get` on the non-resource URL `/openid/v1/jwks` (Kubernetes
//! grants that to every ServiceAccount through the
//! `system:service-account-issuer-discovery` binding); `create` on
//! `tokenreviews.authentication.k8s.io` for pod bindings (as in the
//! `system:auth-delegator` ClusterRole). Nothing is written.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use sigil_api::SigilClient;
use tokio::task::JoinHandle;

use crate::state::WorkloadState;
use crate::workload::{self, Reviewer};

/// TokenReview through the API client.
pub struct KubeReviewer {
    client: Client,
    audience: String,
}

impl KubeReviewer {
    pub fn new(client: Client, audience: String) -> KubeReviewer {
        KubeReviewer { client, audience }
    }
}

impl Reviewer for KubeReviewer {
    fn review<'a>(
        &'a self,
        token: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, String>> + Send + 'a>> {
        use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
        Box::pin(async move {
            let api: Api<TokenReview> = Api::all(self.client.clone());
            let review = TokenReview {
                spec: TokenReviewSpec { audiences: Some(vec![self.audience.clone()]), token: Some(token.to_owned()) },
                ..TokenReview::default()
            };
            // The error names the request, never its body.
            let answer = api.create(&kube::api::PostParams::default(), &review).await.map_err(|e| e.to_string())?;
            Ok(answer.status.and_then(|s| s.authenticated).unwrap_or(false))
        })
    }
}

/// How often the JWKS is re-read once loaded: the API server adds a new key
/// before it signs with it, so a minute's delay loses nothing.
pub const JWKS_REFRESH: Duration = Duration::from_secs(60);
/// How soon a failed JWKS read is retried.
const JWKS_RETRY: Duration = Duration::from_secs(5);

/// Installs the TokenReview client and starts both loops; abort the handles to stop them.
pub fn spawn(client: Client, workload: Arc<WorkloadState>, jwks_path: String) -> Vec<JoinHandle<()>> {
    workload.set_reviewer(Arc::new(KubeReviewer::new(client.clone(), workload.config.audience.clone())));
    vec![
        tokio::spawn(poll_jwks(client.clone(), workload.clone(), jwks_path)),
        tokio::spawn(watch_clients(client, workload)),
    ]
}

async fn poll_jwks(client: Client, workload: Arc<WorkloadState>, path: String) {
    let mut loaded = false;
    loop {
        match fetch(&client, &path).await {
            Ok(jwks) => match workload.set_jwks(&jwks) {
                Ok(()) => {
                    if !loaded {
                        tracing::info!(path = %path, "ServiceAccount token keys loaded");
                    }
                    loaded = true;
                }
                Err(error) => {
                    tracing::warn!(path = %path, %error, "ServiceAccount JWKS refused; keeping the previous keys")
                }
            },
            Err(error) => tracing::warn!(path = %path, %error, "reading the ServiceAccount JWKS failed"),
        }
        tokio::time::sleep(if loaded { JWKS_REFRESH } else { JWKS_RETRY }).await;
    }
}

async fn fetch(client: &Client, path: &str) -> Result<Vec<u8>, String> {
    let request = http::Request::get(path).body(Vec::new()).map_err(|e| e.to_string())?;
    client.request_text(request).await.map(String::into_bytes).map_err(|e| e.to_string())
}

async fn watch_clients(client: Client, workload: Arc<WorkloadState>) {
    let api: Api<SigilClient> = Api::all(client);
    let (reader, writer) = reflector::store();
    let events = reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            // Rebuilt whole from the store: a few hundred objects at most,
            // and requests keep reading the previous index meanwhile.
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                let objects = reader.state();
                let (clients, invalid) = workload::index(objects.iter().map(AsRef::as_ref));
                for (name, error) in invalid {
                    tracing::warn!(sigil_client = %name, %error, "SigilClient ignored");
                }
                tracing::info!(sigil_clients = objects.len(), service_accounts = clients.len(), "SigilClients loaded");
                workload.set_clients(clients);
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "watching SigilClients"),
        }
    }
}
