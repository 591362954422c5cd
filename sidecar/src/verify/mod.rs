//! Token verification: pure and synchronous, a function of the token, the
//! current key set, the policy and the clock. No I/O, no cache, no logging;
//! the proxy decides what to do with the answer.

mod claims;
pub mod compact;
mod header;
mod signature;
pub mod strict_json;

use std::sync::Arc;

use sigil_core::Algorithm;

pub use claims::{Claims, still_valid};

use crate::keys::{Key, KeySet};

/// What a verified token may be trusted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `iss` must equal this exactly.
    pub issuer: String,
    /// `aud` must contain one of these exactly.
    pub audiences: Vec<String>,
    pub leeway_secs: i64,
    /// Optional cap on `exp - iat`.
    pub max_lifetime_secs: Option<i64>,
    pub algorithms: AlgorithmSet,
    /// Tokens longer than this are refused before any decoding.
    pub max_token_bytes: usize,
    /// Which tokens count as access tokens at all.
    pub profile: TokenProfile,
}

/// What kind of JWT the sidecar accepts as an access token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenProfile {
    /// RFC 9068 JWT access tokens: `typ` must be `at+jwt` (or
    /// `application/at+jwt`), and `sub`, `iat`, `jti` and `client_id` are
    /// required, so an ID token or any other JWT from the same issuer is not
    /// mistaken for one (RFC 8725 section 3.11).
    #[default]
    AccessToken,
    /// Any signed JWT (`typ` `JWT`, `at+jwt` or none), for issuers that do not
    /// type their access tokens, e.g. Kubernetes ServiceAccount tokens. Only
    /// `exp`, `iss` and `aud` are required.
    Jwt,
}

/// A set of algorithms, as a bit mask over [`Algorithm::ALL`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlgorithmSet(u16);

impl AlgorithmSet {
    fn bit(alg: Algorithm) -> u16 {
        let index = Algorithm::ALL.iter().position(|a| *a == alg).unwrap_or(0);
        1 << index
    }

    pub fn insert(&mut self, alg: Algorithm) {
        self.0 |= Self::bit(alg);
    }

    pub fn contains(&self, alg: Algorithm) -> bool {
        self.0 & Self::bit(alg) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<Algorithm> for AlgorithmSet {
    fn from_iter<I: IntoIterator<Item = Algorithm>>(iter: I) -> Self {
        let mut set = AlgorithmSet::default();
        iter.into_iter().for_each(|a| set.insert(a));
        set
    }
}

/// Why a token was refused. Carries no token content, so it is always safe to
/// log and to use as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("token is larger than the configured limit")]
    TooLarge,
    #[error("malformed compact JWS: {0}")]
    Malformed(&'static str),
    #[error("bad JOSE header: {0}")]
    BadHeader(&'static str),
    #[error("header lists critical extensions")]
    UnknownCrit,
    #[error("typ is not one the token profile accepts")]
    BadType,
    #[error("alg is not allowed")]
    AlgorithmNotAllowed,
    #[error("no key with this kid")]
    UnknownKey,
    #[error("token has no kid and the key set holds several keys")]
    KidRequired,
    #[error("alg differs from the key's alg")]
    AlgorithmMismatch,
    #[error("bad signature: {0}")]
    BadSignature(&'static str),
    #[error("bad claims: {0}")]
    BadClaims(&'static str),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token was issued in the future (iat)")]
    IssuedInFuture,
    #[error("token lifetime exceeds the configured maximum")]
    LifetimeTooLong,
    #[error("iss does not match")]
    Issuer,
    #[error("aud does not match")]
    Audience,
}

impl Rejection {
    /// A short stable name for metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::TooLarge => "too_large",
            Rejection::Malformed(_) => "malformed",
            Rejection::BadHeader(_) => "bad_header",
            Rejection::UnknownCrit => "crit",
            Rejection::BadType => "typ",
            Rejection::AlgorithmNotAllowed => "alg_not_allowed",
            Rejection::UnknownKey => "unknown_kid",
            Rejection::KidRequired => "kid_required",
            Rejection::AlgorithmMismatch => "alg_key_mismatch",
            Rejection::BadSignature(_) => "bad_signature",
            Rejection::BadClaims(_) => "bad_claims",
            Rejection::Expired => "expired",
            Rejection::NotYetValid => "not_yet_valid",
            Rejection::IssuedInFuture => "iat_in_future",
            Rejection::LifetimeTooLong => "lifetime",
            Rejection::Issuer => "issuer",
            Rejection::Audience => "audience",
        }
    }
}

/// A token that passed every check, with the key that verified it.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Claims,
    /// The payload segment exactly as signed (base64url).
    pub payload_b64: String,
    pub key: Arc<Key>,
}

/// Verifies a compact JWS access token at unix time `now`.
///
/// Order matters: the header is read only to pick the key, the signature is
/// checked before the payload is parsed, and claims are checked last.
pub fn verify(token: &str, keys: &KeySet, policy: &Policy, now: i64) -> Result<Verified, Rejection> {
    let parts = compact::split(token, policy.max_token_bytes)?;
    let header = header::parse(&parts.header, &policy.algorithms, policy.profile)?;
    let key = match &header.kid {
        Some(kid) => keys.get(kid).ok_or(Rejection::UnknownKey)?,
        None if keys.len() > 1 => return Err(Rejection::KidRequired),
        None => keys.only_key().ok_or(Rejection::UnknownKey)?,
    };
    if key.alg != header.alg {
        return Err(Rejection::AlgorithmMismatch);
    }
    signature::check(key, parts.signing_input.as_bytes(), &parts.signature)?;
    let claims = claims::check(&parts.payload, policy, now)?;
    Ok(Verified { claims, payload_b64: parts.payload_b64.to_owned(), key: Arc::clone(key) })
}
