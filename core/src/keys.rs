//! Private key material: generation, PKCS#8 PEM in and out, signing, and the
//! public JWK (with its `kid`) that belongs to it.
//!
//! Everything runs on AWS-LC (`aws-lc-rs`), the same constant-time backend
//! `jsonwebtoken` verifies with. A [`PrivateKey`] never prints its secret: its
//! `Debug` shows only the algorithm and `kid`, and the PKCS#8 bytes it keeps are
//! wiped on drop.

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self as sig, KeyPair};
use zeroize::Zeroizing;

use crate::algorithm::{Algorithm, KeyFamily};
use crate::jwk::{Jwk, JwkParams, b64};

/// PEM label of an unencrypted PKCS#8 private key (RFC 7468 section 10).
pub const PKCS8_PEM_LABEL: &str = "PRIVATE KEY";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM document: {0}")]
    Pem(String),
    #[error("PEM label is {0:?}; expected an unencrypted PKCS#8 \"PRIVATE KEY\"")]
    PemLabel(String),
    #[error("the key is not a valid {alg} private key: {reason}")]
    Rejected { alg: Algorithm, reason: String },
    #[error("RSA key of {0} bits is not allowed: use 2048, 3072 or 4096")]
    RsaSize(usize),
    #[error("key generation failed for {0}")]
    Generate(Algorithm),
    #[error("signing failed with {0}")]
    Sign(Algorithm),
}

enum Pair {
    Rsa(aws_lc_rs::rsa::KeyPair),
    Ec(sig::EcdsaKeyPair),
    Ed(sig::Ed25519KeyPair),
}

/// A private signing key bound to one algorithm.
pub struct PrivateKey {
    alg: Algorithm,
    pair: Pair,
    pkcs8: Zeroizing<Vec<u8>>,
    jwk: Jwk,
}

impl PrivateKey {
    /// Generates a fresh key for `alg`. `rsa_bits` is used by RSA algorithms only
    /// (2048 when `None`). RSA-4096 takes a second or more: call it off the async
    /// runtime.
    pub fn generate(alg: Algorithm, rsa_bits: Option<u32>) -> Result<Self, KeyError> {
        let failed = |_| KeyError::Generate(alg);
        let pkcs8: Vec<u8> = match alg.family() {
            KeyFamily::Rsa => {
                let size = match rsa_bits.unwrap_or(crate::algorithm::DEFAULT_RSA_KEY_SIZE) {
                    2048 => KeySize::Rsa2048,
                    3072 => KeySize::Rsa3072,
                    4096 => KeySize::Rsa4096,
                    other => return Err(KeyError::RsaSize(other as usize)),
                };
                let pair = aws_lc_rs::rsa::KeyPair::generate(size).map_err(failed)?;
                pair.as_der().map_err(failed)?.as_ref().to_vec()
            }
            KeyFamily::EcP256 | KeyFamily::EcP384 => {
                let pair = sig::EcdsaKeyPair::generate(ecdsa_signing(alg)).map_err(failed)?;
                pair.to_pkcs8v1().map_err(failed)?.as_ref().to_vec()
            }
            KeyFamily::Ed25519 => {
                let pair = sig::Ed25519KeyPair::generate().map_err(failed)?;
                pair.to_pkcs8v1().map_err(failed)?.as_ref().to_vec()
            }
        };
        Self::from_pkcs8_der(alg, Zeroizing::new(pkcs8))
    }

    /// Parses a PKCS#8 PEM private key that must suit `alg`.
    pub fn from_pkcs8_pem(alg: Algorithm, pem_text: &[u8]) -> Result<Self, KeyError> {
        let doc = pem::parse(pem_text).map_err(|e| KeyError::Pem(e.to_string()))?;
        if doc.tag() != PKCS8_PEM_LABEL {
            return Err(KeyError::PemLabel(doc.tag().to_owned()));
        }
        Self::from_pkcs8_der(alg, Zeroizing::new(doc.into_contents()))
    }

    fn from_pkcs8_der(alg: Algorithm, pkcs8: Zeroizing<Vec<u8>>) -> Result<Self, KeyError> {
        let rejected = |e: aws_lc_rs::error::KeyRejected| KeyError::Rejected { alg, reason: e.to_string() };
        let (pair, params) = match alg.family() {
            KeyFamily::Rsa => {
                let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(&pkcs8).map_err(rejected)?;
                let bits = pair.public_modulus_len() * 8;
                if !crate::algorithm::RSA_KEY_SIZES.contains(&(bits as u32)) {
                    return Err(KeyError::RsaSize(bits));
                }
                let public = pair.public_key();
                let params = JwkParams::Rsa {
                    n: b64(public.modulus().big_endian_without_leading_zero()),
                    e: b64(public.exponent().big_endian_without_leading_zero()),
                };
                (Pair::Rsa(pair), params)
            }
            KeyFamily::EcP256 | KeyFamily::EcP384 => {
                let pair = sig::EcdsaKeyPair::from_pkcs8(ecdsa_signing(alg), &pkcs8).map_err(rejected)?;
                // Uncompressed SEC1 point: 0x04 || X || Y, coordinates of equal length.
                let point = pair.public_key().as_ref();
                let (x, y) = point[1..].split_at((point.len() - 1) / 2);
                let crv = if alg == Algorithm::ES256 { "P-256" } else { "P-384" };
                let params = JwkParams::Ec { crv: crv.to_owned(), x: b64(x), y: b64(y) };
                (Pair::Ec(pair), params)
            }
            KeyFamily::Ed25519 => {
                let pair = sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).map_err(rejected)?;
                let x = b64(pair.public_key().as_ref());
                (Pair::Ed(pair), JwkParams::Okp { crv: "Ed25519".to_owned(), x })
            }
        };
        let jwk = Jwk::new(alg, params);
        Ok(PrivateKey { alg, pair, pkcs8, jwk })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The key id: the RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.jwk.kid
    }

    /// The public half as a JWK, `kid` included.
    pub fn public_jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// The key as PKCS#8 PEM, for the Secret. Wiped from memory when dropped.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(pem::encode(&pem::Pem::new(PKCS8_PEM_LABEL, self.pkcs8.to_vec())))
    }

    /// Signs `message` and returns the JWS signature bytes (for ECDSA the fixed
    /// `r || s` form JWS requires, not DER).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let failed = |_| KeyError::Sign(self.alg);
        match &self.pair {
            Pair::Rsa(pair) => {
                let padding: &'static dyn sig::RsaEncoding = match self.alg {
                    Algorithm::RS256 => &sig::RSA_PKCS1_SHA256,
                    Algorithm::RS384 => &sig::RSA_PKCS1_SHA384,
                    Algorithm::RS512 => &sig::RSA_PKCS1_SHA512,
                    Algorithm::PS256 => &sig::RSA_PSS_SHA256,
                    Algorithm::PS384 => &sig::RSA_PSS_SHA384,
                    _ => &sig::RSA_PSS_SHA512,
                };
                let mut out = vec![0; pair.public_modulus_len()];
                pair.sign(padding, &SystemRandom::new(), message, &mut out).map_err(failed)?;
                Ok(out)
            }
            Pair::Ec(pair) => Ok(pair.sign(&SystemRandom::new(), message).map_err(failed)?.as_ref().to_vec()),
            Pair::Ed(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }
}

fn ecdsa_signing(alg: Algorithm) -> &'static sig::EcdsaSigningAlgorithm {
    if alg == Algorithm::ES384 { &sig::ECDSA_P384_SHA384_FIXED_SIGNING } else { &sig::ECDSA_P256_SHA256_FIXED_SIGNING }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey").field("alg", &self.alg).field("kid", &self.jwk.kid).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(alg: Algorithm) -> PrivateKey {
        PrivateKey::generate(alg, None).expect("generate")
    }

    #[test]
    fn every_algorithm_generates_signs_and_verifies_through_its_jwk() {
        for alg in Algorithm::ALL {
            let k = key(alg);
            let jwk = k.public_jwk();
            assert_eq!(jwk.alg, alg);
            assert_eq!(jwk.kid, jwk.thumbprint(), "{alg}: kid is the RFC 7638 thumbprint");
            let verifying = jwk.verifying_key().expect("jwk converts");
            let message = b"header.payload";
            let signature = b64(&k.sign(message).expect("sign"));
            assert!(
                jsonwebtoken::crypto::verify(&signature, message, &verifying.key, alg.to_jwt()).expect("verify"),
                "{alg}"
            );
            assert!(
                !jsonwebtoken::crypto::verify(&signature, b"header.other", &verifying.key, alg.to_jwt())
                    .expect("verify"),
                "{alg}"
            );
        }
    }

    #[test]
    fn pem_round_trip_keeps_the_kid() {
        for alg in Algorithm::ALL {
            let k = key(alg);
            let pem = k.to_pkcs8_pem();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            let back = PrivateKey::from_pkcs8_pem(alg, pem.as_bytes()).expect("parse");
            assert_eq!(back.kid(), k.kid(), "{alg}");
        }
    }

    #[test]
    fn rsa_sizes_follow_the_spec() {
        for bits in [2048u32, 3072] {
            let k = PrivateKey::generate(Algorithm::PS256, Some(bits)).expect("generate");
            let JwkParams::Rsa { n, .. } = &k.public_jwk().params else { panic!("RSA params") };
            assert_eq!(crate::jwk::b64_decode(n).expect("n").len() * 8, bits as usize);
        }
        assert!(matches!(PrivateKey::generate(Algorithm::RS256, Some(1024)), Err(KeyError::RsaSize(1024))));
    }

    #[test]
    fn a_key_of_another_family_is_rejected() {
        let ec = key(Algorithm::ES256).to_pkcs8_pem();
        assert!(matches!(PrivateKey::from_pkcs8_pem(Algorithm::RS256, ec.as_bytes()), Err(KeyError::Rejected { .. })));
        assert!(matches!(PrivateKey::from_pkcs8_pem(Algorithm::ES384, ec.as_bytes()), Err(KeyError::Rejected { .. })));
        let rsa = key(Algorithm::RS256).to_pkcs8_pem();
        assert!(matches!(PrivateKey::from_pkcs8_pem(Algorithm::EdDSA, rsa.as_bytes()), Err(KeyError::Rejected { .. })));
    }

    #[test]
    fn garbage_and_wrong_labels_are_clear_errors() {
        assert!(matches!(PrivateKey::from_pkcs8_pem(Algorithm::ES256, b"not pem"), Err(KeyError::Pem(_))));
        let public = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(matches!(PrivateKey::from_pkcs8_pem(Algorithm::ES256, public.as_bytes()), Err(KeyError::PemLabel(_))));
    }

    #[test]
    fn debug_never_shows_key_material() {
        let k = key(Algorithm::EdDSA);
        let shown = format!("{k:?}");
        assert!(shown.contains(k.kid()));
        let pem = k.to_pkcs8_pem();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!shown.contains(&body[..16]));
    }
}
