//! From a Bearer token to the identity the app receives: the token cache in
//! front of the pure verifier, and the claims turned into header values once.

use std::sync::Arc;

use http::HeaderValue;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use sigil_core::subject::SubjectKind;

use crate::cache::{TokenCache, digest};
use crate::jwks::KeyStore;
use crate::verify::{Policy, Rejection, Verified, verify};

/// What the app is told about a verified caller, ready to insert as headers.
#[derive(Debug)]
pub struct Identity {
    /// `sub`, `scope` and `client_id`, empty when the token lacks the claim.
    pub subject: HeaderValue,
    /// `client` or `user`, from the `sub` scheme of Sigil's issuer
    /// (`sigil_core::subject`); empty when `sub` does not follow it.
    pub subject_kind: HeaderValue,
    pub scope: HeaderValue,
    pub client_id: HeaderValue,
    /// The verified payload, base64url, exactly as signed.
    pub claims: HeaderValue,
    /// The `scope` claim as signed, for scope checks.
    scopes: Box<str>,
    /// `exp`: an upgraded connection closes then.
    pub expires_at: i64,
}

/// Header values carry visible ASCII only: anything else in a claim (UTF-8,
/// control characters) and `%` itself is percent-encoded, so every claim
/// reaches the app and decodes back to exactly what was signed.
const HEADER_UNSAFE: &AsciiSet = &CONTROLS.add(b'%');

fn header_value(claim: Option<&str>) -> HeaderValue {
    let Some(claim) = claim else { return HeaderValue::from_static("") };
    let encoded: std::borrow::Cow<'_, str> = utf8_percent_encode(claim, HEADER_UNSAFE).into();
    // Cannot fail: only visible ASCII and spaces remain.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl Identity {
    fn from_verified(v: &Verified) -> Result<Identity, Rejection> {
        Ok(Identity {
            subject: header_value(v.claims.sub.as_deref()),
            subject_kind: HeaderValue::from_static(
                v.claims.sub.as_deref().and_then(SubjectKind::of).map_or("", SubjectKind::as_str),
            ),
            scope: header_value(v.claims.scope.as_deref()),
            client_id: header_value(v.claims.client_id.as_deref()),
            claims: HeaderValue::from_str(&v.payload_b64).map_err(|_| Rejection::Malformed("payload"))?,
            scopes: v.claims.scope.as_deref().unwrap_or_default().into(),
            expires_at: v.claims.exp,
        })
    }

    /// Whether the token's `scope` (space-separated, RFC 9068) holds `wanted`.
    pub fn has_scope(&self, wanted: &str) -> bool {
        self.scopes.split(' ').any(|have| have == wanted)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_become_header_values_that_decode_to_what_was_signed() {
        for (claim, header) in [
            ("alice", "alice"),
            ("orders:read orders:write", "orders:read orders:write"),
            ("zoë", "zo%C3%AB"),
            ("a\r\nx-sigil-subject: admin", "a%0D%0Ax-sigil-subject: admin"),
            ("100%", "100%25"),
            ("\u{7f}", "%7F"),
        ] {
            let value = header_value(Some(claim));
            assert_eq!(value, header, "{claim:?}");
            let decoded = percent_encoding::percent_decode(value.as_bytes()).decode_utf8().expect("utf8");
            assert_eq!(decoded, claim);
        }
        assert_eq!(header_value(None), "");
    }
}
