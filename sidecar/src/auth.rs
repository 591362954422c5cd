//! From a Bearer token to the identity the app receives: the token cache in
//! front of the pure verifier, and the claims turned into header values once.

use std::sync::Arc;

use http::HeaderValue;

use crate::cache::{TokenCache, digest};
use crate::jwks::KeyStore;
use crate::verify::{Policy, Rejection, Verified, verify};

/// What the app is told about a verified caller, ready to insert as headers.
#[derive(Debug)]
pub struct Identity {
    pub subject: Option<HeaderValue>,
    pub scope: Option<HeaderValue>,
    pub client_id: Option<HeaderValue>,
    /// The verified payload, base64url, exactly as signed.
    pub claims: HeaderValue,
}

impl Identity {
    fn from_verified(v: &Verified) -> Result<Identity, Rejection> {
        // A claim the app cannot receive as a header (e.g. with a newline) is
        // refused rather than silently dropped.
        let header = |s: &Option<String>| match s {
            None => Ok(None),
            Some(s) => HeaderValue::from_str(s)
                .map(Some)
                .map_err(|_| Rejection::BadClaims("a forwarded claim is not a valid header value")),
        };
        Ok(Identity {
            subject: header(&v.claims.sub)?,
            scope: header(&v.claims.scope)?,
            client_id: header(&v.claims.client_id)?,
            claims: HeaderValue::from_str(&v.payload_b64).map_err(|_| Rejection::Malformed("payload"))?,
        })
    }

    /// Whether the token's `scope` (space-separated, RFC 9068) holds `wanted`.
    pub fn has_scope(&self, wanted: &str) -> bool {
        self.scope.as_ref().and_then(|s| s.to_str().ok()).is_some_and(|s| s.split(' ').any(|have| have == wanted))
    }
}

pub struct Authenticator {
    keys: Arc<KeyStore>,
    cache: Option<TokenCache<Identity>>,
    policy: Policy,
}

impl Authenticator {
    pub fn new(keys: Arc<KeyStore>, policy: Policy, cache_capacity: usize) -> Self {
        Authenticator { keys, cache: TokenCache::new(cache_capacity), policy }
    }

    pub fn authenticate(&self, token: &str) -> Result<Arc<Identity>, Rejection> {
        let now = unix_now();
        let keys = self.keys.load();
        let leeway = self.policy.leeway_secs;
        // The size check comes before hashing, as it does before decoding.
        let cached = match &self.cache {
            Some(cache) if token.len() <= self.policy.max_token_bytes => {
                let d = digest(token);
                if let Some(identity) = cache.get(&d, &keys, now, leeway) {
                    self.keys.metrics().cache("hit");
                    return Ok(identity);
                }
                self.keys.metrics().cache("miss");
                Some((cache, d))
            }
            _ => None,
        };
        let verified = verify(token, &keys, &self.policy, now).inspect_err(|e| {
            if *e == Rejection::UnknownKey {
                self.keys.unknown_kid();
            }
        })?;
        let identity = Arc::new(Identity::from_verified(&verified)?);
        if let Some((cache, d)) = cached {
            cache.insert(d, Arc::clone(&identity), verified.key, verified.claims.exp, now, leeway);
        }
        Ok(identity)
    }

    pub fn cached_tokens(&self) -> usize {
        self.cache.as_ref().map_or(0, TokenCache::len)
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
