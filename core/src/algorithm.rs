//! The JWS algorithms a SigningKey can use, and what each needs of its key.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A JWS signing algorithm (RFC 7518, RFC 8037). HMAC and `none` are absent on
/// purpose: Sigil's verifiers must never hold a secret that can mint tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256. The most widely supported choice.
    #[default]
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256. Small keys and signatures, fast to sign.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// EdDSA with Ed25519 (RFC 8037).
    EdDSA,
}

/// The kind of key an algorithm signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl Algorithm {
    pub const ALL: [Algorithm; 9] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    /// The name used in JWS headers, JWKs and the SigningKey spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    pub fn family(self) -> KeyFamily {
        match self {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => KeyFamily::Rsa,
            Algorithm::ES256 => KeyFamily::EcP256,
            Algorithm::ES384 => KeyFamily::EcP384,
            Algorithm::EdDSA => KeyFamily::Ed25519,
        }
    }

    pub fn is_rsa(self) -> bool {
        self.family() == KeyFamily::Rsa
    }

    /// The same algorithm as `jsonwebtoken` names it.
    pub fn to_jwt(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as J;
        match self {
            Algorithm::RS256 => J::RS256,
            Algorithm::RS384 => J::RS384,
            Algorithm::RS512 => J::RS512,
            Algorithm::PS256 => J::PS256,
            Algorithm::PS384 => J::PS384,
            Algorithm::PS512 => J::PS512,
            Algorithm::ES256 => J::ES256,
            Algorithm::ES384 => J::ES384,
            Algorithm::EdDSA => J::EdDSA,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unsupported algorithm {0:?}: expected one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    /// Exact, case-sensitive match: `alg` values are case-sensitive (RFC 7515 4.1.1),
    /// so `rs256` or `NONE` are not algorithms.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

/// RSA modulus sizes a SigningKey may ask for.
pub const RSA_KEY_SIZES: [u32; 3] = [2048, 3072, 4096];
/// The RSA modulus size used when `keySize` is not set.
pub const DEFAULT_RSA_KEY_SIZE: u32 = 2048;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_from_str_and_serde() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.as_str().parse::<Algorithm>(), Ok(alg));
            let json = serde_json::to_string(&alg).expect("serialize");
            assert_eq!(json, format!("\"{}\"", alg.as_str()));
            assert_eq!(format!("{:?}", alg.to_jwt()), alg.as_str());
        }
    }

    #[test]
    fn rejects_none_hmac_and_wrong_case() {
        for bad in ["none", "None", "NONE", "HS256", "rs256", "Es256", "eddsa", ""] {
            assert!(bad.parse::<Algorithm>().is_err(), "{bad} must not parse");
        }
    }

    #[test]
    fn families() {
        assert!(Algorithm::PS512.is_rsa());
        assert!(!Algorithm::ES256.is_rsa());
        assert_eq!(Algorithm::ES384.family(), KeyFamily::EcP384);
        assert_eq!(Algorithm::EdDSA.family(), KeyFamily::Ed25519);
        assert_eq!(Algorithm::default(), Algorithm::RS256);
    }
}
