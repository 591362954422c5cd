//! Everything a request handler needs, and the reloads that update it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use sigil_runtime::admin::Readiness;

use crate::auth::Authenticator;
use crate::clients::Registry;
use crate::config::{Config, WorkloadConfig};
use crate::error::{Error, Result};
use crate::keys::{KeyState, Keys};
use crate::metrics::Metrics;
use crate::workload::{
    ReviewCache, Reviewer, SaTokenVerifier, VerifiedCache, WorkloadClients, WorkloadError, WorkloadIdentity,
};

/// The settings request handlers read (the rest of [`Config`] is for wiring).
#[derive(Clone, Debug)]
pub struct Settings {
    pub issuer_url: String,
    pub audience: String,
    pub token_ttl: Duration,
    pub jwks_max_age: Duration,
    pub trusted_proxies: Vec<sigil_runtime::client_ip::Cidr>,
}

pub struct AppState {
    pub settings: Settings,
    /// The token port's certificate, when it serves HTTPS.
    pub tls: Option<Arc<crate::tls::CertStore>>,
    pub keys: Keys,
    pub auth: Authenticator,
    pub metrics: Metrics,
    pub readiness: Readiness,
    /// Set with --workload-identity.
    pub workload: Option<Arc<WorkloadState>>,
    clients_file: PathBuf,
    clients: ArcSwap<Registry>,
    generation: AtomicU64,
    reloading_clients: std::sync::Mutex<()>,
    /// Set at SIGTERM: readiness stays false whatever a late reload finds.
    stopping: AtomicBool,
}

impl AppState {
    /// Loads every file once. Any error here names its file and stops start-up.
    pub fn load(config: &Config, metrics: Metrics, readiness: Readiness) -> Result<AppState> {
        let keys = Keys::load(&config.key_dir, &config.jwks_file)?;
        let tls =
            config.tls.as_ref().map(|t| crate::tls::CertStore::load(&t.cert, &t.key).map(Arc::new)).transpose()?;
        let clients = Registry::load(&config.clients_file, 0)?;
        let auth = Authenticator::new(
            config.auth_cache_ttl,
            config.auth_cache_size,
            crate::auth::Limits {
                backoff: crate::rate_limit::Policy {
                    free: config.auth_failure_limit,
                    max: config.auth_backoff_max,
                    capacity: config.auth_failure_table_size,
                },
                ceiling: std::num::NonZeroU32::new(config.auth_failures_per_minute)
                    .ok_or_else(|| Error::Config("--auth-failures-per-minute must be positive".into()))?,
            },
            metrics.clone(),
        )
        .map_err(Error::Config)?;
        let state = AppState {
            settings: Settings {
                issuer_url: config.issuer_url.clone(),
                audience: config.audience.clone(),
                token_ttl: config.token_ttl,
                jwks_max_age: config.jwks_max_age,
                trusted_proxies: config.trusted_proxies.clone(),
            },
            tls,
            keys,
            auth,
            metrics,
            readiness,
            workload: config.workload.clone().map(|w| Arc::new(WorkloadState::new(w))),
            clients_file: config.clients_file.clone(),
            clients: ArcSwap::from_pointee(clients),
            generation: AtomicU64::new(0),
            reloading_clients: std::sync::Mutex::new(()),
            stopping: AtomicBool::new(false),
        };
        state.observe_keys(&state.keys.current());
        Ok(state)
    }

    pub fn clients(&self) -> Arc<Registry> {
        self.clients.load_full()
    }

    pub fn clients_file(&self) -> &Path {
        &self.clients_file
    }

    /// Re-reads the key directory and JWKS file; on error the old keys stay.
    pub fn reload_keys(&self) -> Result<()> {
        let result = self.keys.reload();
        self.metrics.reload("keys", &result);
        self.observe_keys(&self.keys.current());
        result.map(|_| ())
    }

    /// Re-reads the TLS certificate and key; on error the old pair stays.
    pub fn reload_tls(&self) -> Result<()> {
        let Some(tls) = &self.tls else { return Ok(()) };
        let result = tls.reload();
        self.metrics.reload("tls", &result);
        if let Ok(true) = result {
            tracing::info!(file = %tls.cert_file().display(), "TLS certificate reloaded");
        }
        result.map(|_| ())
    }

    /// Re-reads the clients file; on error the old clients stay.
    pub fn reload_clients(&self) -> Result<()> {
        let _one_at_a_time = self.reloading_clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let result = Registry::load(&self.clients_file, generation);
        self.metrics.reload("clients", &result);
        let registry = result?;
        let old = self.clients.load();
        if same_clients(&old, &registry) {
            return Ok(());
        }
        tracing::info!(clients = registry.clients.len(), users = registry.users.len(), "clients file reloaded");
        self.clients.store(Arc::new(registry));
        self.auth.clients_changed();
        Ok(())
    }

    /// Shutdown has begun: report not ready from now on, so the endpoint is
    /// removed while requests are still served.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.readiness.set(false);
    }

    fn observe_keys(&self, keys: &KeyState) {
        self.metrics.observe_keys(keys);
        self.readiness.set(keys.signer.is_some() && !self.stopping.load(Ordering::SeqCst));
    }
}

/// Workload identity's inputs: the API server's ServiceAccount token keys
/// and the SigilClients, each replaced whole as it changes, so requests
/// never see half of an update.
pub struct WorkloadState {
    pub config: WorkloadConfig,
    verifier: ArcSwapOption<SaTokenVerifier>,
    clients: ArcSwap<WorkloadClients>,
    /// Checks pod bindings; installed with the API client (without one,
    /// as in router tests, bindings are not checked beyond `exp`).
    reviewer: std::sync::OnceLock<Arc<dyn Reviewer>>,
    pub reviews: ReviewCache,
    verified: VerifiedCache,
    /// Digest and version number of the JWKS in use: re-reading an
    /// unchanged JWKS keeps the verification cache warm.
    jwks_version: std::sync::Mutex<(Option<[u8; 32]>, u64)>,
}

/// Most remembered TokenReview answers (one per live pod-bound token).
const REVIEW_CACHE_SIZE: usize = 100_000;

impl WorkloadState {
    pub fn new(config: WorkloadConfig) -> WorkloadState {
        let config_review_ttl = config.review_ttl;
        WorkloadState {
            config,
            verifier: ArcSwapOption::empty(),
            clients: ArcSwap::from_pointee(WorkloadClients::default()),
            reviewer: std::sync::OnceLock::new(),
            reviews: ReviewCache::new(config_review_ttl, REVIEW_CACHE_SIZE),
            verified: VerifiedCache::new(REVIEW_CACHE_SIZE),
            jwks_version: std::sync::Mutex::new((None, 0)),
        }
    }

    /// Installs the TokenReview client (once).
    pub fn set_reviewer(&self, reviewer: Arc<dyn Reviewer>) {
        let _ = self.reviewer.set(reviewer);
    }

    pub fn reviewer(&self) -> Option<&Arc<dyn Reviewer>> {
        self.reviewer.get()
    }

    /// Replaces the ServiceAccount token keys with the API server's JWKS
    /// (`/openid/v1/jwks`); on error the previous keys stay.
    pub fn set_jwks(&self, jwks: &[u8]) -> std::result::Result<(), String> {
        let digest = crate::workload::digest(jwks);
        let mut version = self.jwks_version.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if version.0 == Some(digest) {
            return Ok(());
        }
        let generation = version.1 + 1;
        let verifier =
            SaTokenVerifier::new(&self.config.issuer, &self.config.audience, jwks)?.with_generation(generation);
        self.verifier.store(Some(Arc::new(verifier)));
        *version = (Some(digest), generation);
        Ok(())
    }

    /// Verifies a ServiceAccount token with the loaded keys (cached; see
    /// `workload::VerifiedCache`).
    pub fn verify(&self, token: &str, now: u64) -> std::result::Result<WorkloadIdentity, WorkloadError> {
        let verifier = self.verifier().ok_or(WorkloadError::Unavailable)?;
        self.verified.verify(&verifier, token, now)
    }

    /// The keys, once a JWKS has been loaded.
    pub fn verifier(&self) -> Option<Arc<SaTokenVerifier>> {
        self.verifier.load_full()
    }

    pub fn set_clients(&self, clients: WorkloadClients) {
        self.clients.store(Arc::new(clients));
    }

    pub fn clients(&self) -> Arc<WorkloadClients> {
        self.clients.load_full()
    }
}

/// Whether two versions of the clients file hold the same entries, so a
/// periodic re-read of an unchanged file keeps the cache warm.
fn same_clients(a: &Registry, b: &Registry) -> bool {
    a.clients.len() == b.clients.len()
        && a.users.len() == b.users.len()
        && a.clients.iter().all(|(id, c)| {
            b.clients.get(id).is_some_and(|d| {
                c.secret_hash.as_str() == d.secret_hash.as_str()
                    && c.scopes == d.scopes
                    && c.audience == d.audience
                    && c.ttl == d.ttl
                    && c.grant_types == d.grant_types
            })
        })
        && a.users.iter().all(|(name, u)| {
            b.users
                .get(name)
                .is_some_and(|v| u.password_hash.as_str() == v.password_hash.as_str() && u.scopes == v.scopes)
        })
}
