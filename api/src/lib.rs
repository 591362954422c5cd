//! Sigil's shared contract.
//!
//! Everything that more than one Sigil binary must agree on lives here, once:
//! the `SigningKey` custom resource ([`signing_key`]), the `SigilClient` custom
//! resource that admits ServiceAccounts to tokens by workload identity
//! ([`sigil_client`]), and, from `sigil-core`,
//! the algorithms it offers ([`algorithm`]), Go-style durations ([`duration`]),
//! key material and its JWK form ([`keys`], [`jwk`]); and the layout of the Secret and JWKS ConfigMap the
//! operator writes and the issuer and sidecar read ([`contract`]).
//!
//! `docs/contract.md` describes the same contract for humans.

pub mod conditions;
pub mod contract;
pub mod sigil_client;
pub mod signing_key;

pub use sigil_core::{algorithm, duration, jwk, keys, subject};

pub use algorithm::Algorithm;
pub use jwk::{Jwk, JwkSet};
pub use keys::PrivateKey;
pub use sigil_client::{SigilClient, SigilClientSpec};
pub use signing_key::{KeyState, KeyStatus, SigningKey, SigningKeySpec, SigningKeyStatus};
