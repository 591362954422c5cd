//! Authenticating clients and users: the success cache, failure rate limits,
//! and Argon2 verification off the async threads.
//!
//! Order of checks, and why:
//! 1. A cache hit proves this secret matched this stored hash before, so it is
//!    answered even while the id is backing off: an attacker failing on
//!    purpose cannot lock out a client that has authenticated on this replica.
//! 2. A (id, source) pair that is backing off, or an id over its ceiling, gets
//!    429 before any Argon2 work (see `rate_limit`).
//! 3. Argon2 runs against the stored hash, or against a dummy hash when the id
//!    is unknown, so the answer takes as long either way and an unknown id
//!    cannot be told from a wrong secret.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sigil_api::subject::SubjectKind as Kind;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::auth_cache::AuthCache;
use crate::clients::{Client, Registry, User};
use crate::metrics::Metrics;
use crate::password::SecretHash;
use crate::rate_limit::{Backoff, Ceiling, Policy, pair_key};

/// What unknown ids are verified against, so they cost one Argon2 run like a
/// known id with a wrong secret. It need not be secret: an unknown id never
/// authenticates whatever the result. Same parameters as `hash-secret` uses
/// (hash of 32 random bytes, discarded).
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$bEDLFXmOJAFL6LtS2WFbXA$+zbnSqDJfYe18y4Lck+EJnWeei2/phi+VTGADgNMIp0";

#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    /// Wrong secret or unknown id (deliberately indistinguishable).
    Invalid,
    /// Too many failures for the id from this source, or too many checks of
    /// the id overall: retry after this long.
    Limited(Duration),
    /// Verification could not run (the blocking pool is gone: shutting down).
    Unavailable,
}

/// How the authenticator limits guessing; see `rate_limit`.
pub struct Limits {
    pub backoff: Policy,
    /// Failures per known id per minute, across all sources.
    pub ceiling: std::num::NonZeroU32,
}

pub struct Authenticator {
    cache: AuthCache,
    backoff: Backoff,
    ceiling: Ceiling,
    /// Bounds concurrent Argon2 runs: each takes ~19 MiB and a core for tens of
    /// milliseconds, so an unbounded flood of bad secrets would exhaust memory.
    permits: Semaphore,
    dummy: SecretHash,
    metrics: Metrics,
}

impl Authenticator {
    pub fn new(
        cache_ttl: Duration,
        cache_size: usize,
        limits: Limits,
        metrics: Metrics,
    ) -> Result<Authenticator, String> {
        let cache = AuthCache::new(cache_ttl, cache_size).map_err(|_| "no randomness for the cache key".to_owned())?;
        let dummy = SecretHash::parse(DUMMY_HASH)?;
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(2);
        Ok(Authenticator {
            cache,
            backoff: Backoff::new(limits.backoff),
            ceiling: Ceiling::per_minute(limits.ceiling),
            permits: Semaphore::new(cores * 2),
            dummy,
            metrics,
        })
    }

    pub async fn client(
        &self,
        registry: &Registry,
        id: &str,
        secret: Zeroizing<String>,
        source: IpAddr,
    ) -> Result<Arc<Client>, AuthError> {
        let client = registry.clients.get(id);
        let hash = client.map(|c| c.secret_hash.clone());
        self.verify(Kind::Client, id, hash, secret, source).await?;
        client.cloned().ok_or(AuthError::Invalid)
    }

    pub async fn user(
        &self,
        registry: &Registry,
        username: &str,
        password: Zeroizing<String>,
        source: IpAddr,
    ) -> Result<Arc<User>, AuthError> {
        let user = registry.users.get(username);
        let hash = user.map(|u| u.password_hash.clone());
        self.verify(Kind::User, username, hash, password, source).await?;
        user.cloned().ok_or(AuthError::Invalid)
    }

    /// The clients file changed: drop ceiling state of ids that went away.
    /// Cached successes stay: they name the stored hash they matched, so a
    /// changed secret can no longer hit them, and unchanged clients stay proven.
    pub fn clients_changed(&self) {
        self.ceiling.shrink(Instant::now());
    }

    pub fn backoff_entries(&self) -> usize {
        self.backoff.len()
    }

    async fn verify(
        &self,
        kind: Kind,
        id: &str,
        hash: Option<SecretHash>,
        secret: Zeroizing<String>,
        source: IpAddr,
    ) -> Result<(), AuthError> {
        let digest = hash.as_ref().map(|h| self.cache.digest(kind.as_str(), h.as_str(), id, secret.as_bytes()));
        if let Some(digest) = &digest
            && self.cache.contains(digest, Instant::now())
        {
            self.metrics.auth_cache_hits.inc();
            return Ok(());
        }
        let pair = pair_key(kind.as_str(), id, source);
        // Unknown ids have no ceiling: they never authenticate, the back-off
        // still applies to them, and the map stays bounded by the clients file.
        let ceiling_key = hash.is_some().then(|| format!("{}:{id}", kind.as_str()));
        let now = Instant::now();
        self.backoff.check(&pair, now).map_err(AuthError::Limited)?;
        if let Some(key) = &ceiling_key {
            self.ceiling.check(key, now).map_err(AuthError::Limited)?;
        }

        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.clone());
        let ok = {
            let _permit = self.permits.acquire().await.map_err(|_| AuthError::Unavailable)?;
            self.metrics.argon2_verifications.inc();
            tokio::task::spawn_blocking(move || hash.verify(secret.as_bytes()))
                .await
                .map_err(|_| AuthError::Unavailable)?
        };
        match digest {
            Some(digest) if ok && known => {
                self.cache.insert(digest, Instant::now());
                self.backoff.record_success(&pair);
                Ok(())
            }
            _ => {
                let now = Instant::now();
                self.backoff.record_failure(&pair, now);
                if let Some(key) = &ceiling_key {
                    self.ceiling.record_failure(key, now);
                }
                Err(AuthError::Invalid)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unknown ids must cost what known ones cost: same algorithm and parameters.
    #[test]
    fn the_dummy_hash_has_the_parameters_new_hashes_get() {
        let params = |phc: &str| phc.rsplitn(3, '$').nth(2).map(str::to_owned);
        let fresh = crate::password::hash(b"x").expect("hash");
        assert_eq!(params(DUMMY_HASH), params(fresh.as_str()));
        assert!(SecretHash::parse(DUMMY_HASH).is_ok());
    }
}
