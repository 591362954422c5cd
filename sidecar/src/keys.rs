//! The verifier's keys: a [`KeySet`] built from JWKS documents, each key parsed
//! once into the crypto library's verifying form.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaPublicKeyComponents};
use jsonwebtoken::DecodingKeyKind;
use sigil_core::Algorithm;
use sigil_core::jwk::{JwkError, JwkSet, VerifyingKey};

/// One public key, bound to the one algorithm its JWK names.
pub struct Key {
    pub kid: String,
    pub alg: Algorithm,
    public: ParsedPublicKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

impl Key {
    /// Parses the key for its algorithm; the algorithm's parameters (padding,
    /// hash, curve) are fixed here, so a token can never pick them.
    pub fn new(vk: &VerifyingKey) -> Result<Key, JwkError> {
        let unusable = |reason: &str| JwkError::Unusable { kid: Some(vk.kid.clone()), reason: reason.to_owned() };
        let public = match (vk.alg, vk.key.kind()) {
            (alg, DecodingKeyKind::RsaModulusExponent { n, e }) if alg.is_rsa() => {
                let params: &'static sig::RsaParameters = match alg {
                    Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
                    Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
                    Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
                    _ => &sig::RSA_PSS_2048_8192_SHA512,
                };
                RsaPublicKeyComponents { n, e }.to_parsed_public_key(params)
            }
            (Algorithm::ES256, DecodingKeyKind::SecretOrDer(point)) => {
                ParsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point)
            }
            (Algorithm::ES384, DecodingKeyKind::SecretOrDer(point)) => {
                ParsedPublicKey::new(&sig::ECDSA_P384_SHA384_FIXED, point)
            }
            (Algorithm::EdDSA, DecodingKeyKind::SecretOrDer(x)) => ParsedPublicKey::new(&sig::ED25519, x),
            _ => return Err(unusable("key material does not fit its alg")),
        }
        .map_err(|e| unusable(&e.to_string()))?;
        Ok(Key { kid: vk.kid.clone(), alg: vk.alg, public })
    }

    /// Whether `signature` is this key's signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.public.verify_sig(message, signature).is_ok()
    }

    /// Same kid, algorithm and public key (compared as canonical SPKI DER).
    fn same_as(&self, other: &Key) -> bool {
        self.kid == other.kid && self.alg == other.alg && self.public.as_ref() == other.public.as_ref()
    }
}

/// An immutable set of keys by `kid`. A new document builds a new set, which
/// is swapped in whole; a key object that did not change is carried over, so
/// "the key that verified this token is still published" is a pointer check.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: HashMap<String, Arc<Key>>,
}

/// A parsed JWKS document: its usable keys and why the others were left out.
#[derive(Debug, Default)]
pub struct Loaded {
    pub keys: Vec<Key>,
    pub skipped: Vec<JwkError>,
}

impl Loaded {
    pub fn parse(bytes: &[u8]) -> Result<Loaded, JwkError> {
        let parsed = JwkSet::parse(bytes)?;
        let mut loaded = Loaded { keys: Vec::new(), skipped: parsed.skipped };
        for vk in &parsed.keys {
            match Key::new(vk) {
                Ok(key) => loaded.keys.push(key),
                Err(e) => loaded.skipped.push(e),
            }
        }
        Ok(loaded)
    }
}

impl KeySet {
    /// Builds a set from several sources' keys. A `kid` that two sources
    /// publish with different material is dropped: no one can tell which key
    /// a token means. Unchanged keys keep their identity from `previous`.
    pub fn build<'a>(sources: impl IntoIterator<Item = &'a [Arc<Key>]>, previous: &KeySet) -> (KeySet, Vec<String>) {
        let mut keys: HashMap<String, Arc<Key>> = HashMap::new();
        let mut conflicts = Vec::new();
        for key in sources.into_iter().flatten() {
            match keys.get(&key.kid) {
                Some(existing) if existing.same_as(key) => {}
                Some(_) => conflicts.push(key.kid.clone()),
                None => {
                    let key = match previous.keys.get(&key.kid) {
                        Some(old) if old.same_as(key) => Arc::clone(old),
                        _ => Arc::clone(key),
                    };
                    keys.insert(key.kid.clone(), key);
                }
            }
        }
        for kid in &conflicts {
            keys.remove(kid);
        }
        (KeySet { keys }, conflicts)
    }

    pub fn get(&self, kid: &str) -> Option<&Arc<Key>> {
        self.keys.get(kid)
    }

    /// The key a token without `kid` may use: only when there is exactly one.
    pub fn only_key(&self) -> Option<&Arc<Key>> {
        if self.keys.len() == 1 { self.keys.values().next() } else { None }
    }

    /// Whether `key` (the very object) is still in this set.
    pub fn holds(&self, key: &Arc<Key>) -> bool {
        self.keys.get(&key.kid).is_some_and(|k| Arc::ptr_eq(k, key))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}
