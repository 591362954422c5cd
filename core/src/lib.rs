//! What every Sigil binary shares and that knows nothing of Kubernetes: the
//! signing algorithms ([`algorithm`]), key material ([`keys`]) and its JWK form
//! ([`jwk`]), Go-style durations ([`duration`]), and the `sub` scheme of
//! Sigil's tokens ([`subject`]).
//!
//! The sidecar depends on this crate alone, so the binary in every app pod
//! carries no Kubernetes client; `sigil-api` re-exports it beside the
//! `SigningKey` resource for the operator and the issuer.

#[macro_use]
pub mod duration;
pub mod algorithm;
pub mod jwk;
pub mod keys;
pub mod subject;

/// The most clock skew a Sigil verifier tolerates on `exp`, `nbf` and `iat`
/// (the sidecar refuses a larger `--leeway`). A SigningKey's `retain` budgets
/// for it, so a token can expire on a slow verifier's clock without its key
/// having left the JWKS first.
pub const MAX_LEEWAY: std::time::Duration = std::time::Duration::from_secs(60);

pub use algorithm::Algorithm;
pub use jwk::{Jwk, JwkSet};
pub use keys::PrivateKey;
