//! Authenticating clients and users: the success cache, failure rate limits,
//! and Argon2 verification off the async threads.
//!
//! Order of checks, and why:
//! 1. A cache hit proves the secret was verified recently, so it is answered
//!    even for a rate-limited id: an attacker failing on purpose cannot lock
//!    a well-behaved client out.
//! 2. A rate-limited id or source address gets 429 before any Argon2 work.
//! 3. Argon2 runs against the stored hash, or against a dummy hash when the id
//!    is unknown, so the answer takes as long either way and an unknown id
//!    cannot be told from a wrong secret.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::auth_cache::AuthCache;
use crate::clients::{Client, Registry, User};
use crate::metrics::Metrics;
use crate::password::SecretHash;
use crate::rate_limit::{RateLimiter, source_key};

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
    /// Too many failures for the id or the source address: retry after this long.
    Limited(Duration),
    /// Verification could not run (the blocking pool is gone: shutting down).
    Unavailable,
}

#[derive(Clone, Copy)]
enum Kind {
    Client,
    User,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Client => "client",
            Kind::User => "user",
        }
    }
}

pub struct Authenticator {
    cache: AuthCache,
    limiter: RateLimiter,
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
        failure_limit: u32,
        failure_window: Duration,
        metrics: Metrics,
    ) -> Result<Authenticator, String> {
        let cache = AuthCache::new(cache_ttl, cache_size).map_err(|_| "no randomness for the cache key".to_owned())?;
        let dummy = SecretHash::parse(DUMMY_HASH)?;
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(2);
        Ok(Authenticator {
            cache,
            limiter: RateLimiter::new(failure_limit, failure_window),
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
        self.verify(Kind::Client, registry.generation, id, hash, secret, source).await?;
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
        self.verify(Kind::User, registry.generation, username, hash, password, source).await?;
        user.cloned().ok_or(AuthError::Invalid)
    }

    /// Forgets cached successes (the clients file changed).
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    async fn verify(
        &self,
        kind: Kind,
        generation: u64,
        id: &str,
        hash: Option<SecretHash>,
        secret: Zeroizing<String>,
        source: IpAddr,
    ) -> Result<(), AuthError> {
        let digest = self.cache.digest(kind.as_str(), generation, id, secret.as_bytes());
        if hash.is_some() && self.cache.contains(&digest, Instant::now()) {
            self.metrics.auth_cache_hits.inc();
            return Ok(());
        }
        let id_key = format!("{}:{id}", kind.as_str());
        let ip_key = source_key(source);
        let now = Instant::now();
        if let Err(wait) = self.limiter.check(&id_key, now).and(self.limiter.check(&ip_key, now)) {
            return Err(AuthError::Limited(wait));
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
        if ok && known {
            self.cache.insert(digest, Instant::now());
            return Ok(());
        }
        let now = Instant::now();
        self.limiter.record_failure(&id_key, now);
        self.limiter.record_failure(&ip_key, now);
        Err(AuthError::Invalid)
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
