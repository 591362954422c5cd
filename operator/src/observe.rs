//! Reading what the cluster holds: the Secret's key slots and the JWKS
//! ConfigMap's published keys and lifecycle records. Pure parsing, no I/O, so
//! the decision can be rebuilt from the objects alone after a restart or the
//! loss of `.status`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Resource;
use sigil_api::algorithm::Algorithm;
use sigil_api::contract::{self, ContractError, SecretKeys};
use sigil_api::jwk::{Jwk, JwkParams, JwkSet, b64_decode};
use sigil_api::keys::PrivateKey;

/// What a key is: its algorithm and, for RSA, its modulus size. A spec change
/// of either rolls the key over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyKind {
    pub algorithm: Algorithm,
    pub rsa_bits: Option<u32>,
}

impl KeyKind {
    pub fn of(key: &PrivateKey) -> KeyKind {
        let rsa_bits = match &key.public_jwk().params {
            JwkParams::Rsa { n, .. } => b64_decode(n).ok().map(|n| (n.len() * 8) as u32),
            _ => None,
        };
        KeyKind { algorithm: key.algorithm(), rsa_bits }
    }
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.rsa_bits {
            Some(bits) => write!(f, "{} ({bits}-bit RSA)", self.algorithm),
            None => write!(f, "{}", self.algorithm),
        }
    }
}

/// The private keys a Secret holds. Unlike [`SecretKeys`], the active slot may
/// be empty: while the very first key is being published, the Secret holds it
/// as `next.pem` only, so no reader can sign with a key the JWKS lacks.
#[derive(Debug, Default)]
pub struct Slots {
    pub active: Option<PrivateKey>,
    pub next: Option<PrivateKey>,
}

impl Slots {
    pub fn parse(data: &BTreeMap<String, ByteString>) -> Result<Slots, ContractError> {
        let has = |k: &str| data.contains_key(k);
        if has(contract::PRIVATE_KEY) || has(contract::KID) {
            let keys = SecretKeys::from_secret_data(data)?;
            return Ok(Slots { active: Some(keys.active), next: keys.next });
        }
        if has(contract::NEXT_PRIVATE_KEY) || has(contract::NEXT_KID) {
            // Read the next slot with the contract's own parser by renaming its files.
            let renamed = |k: &str| match k {
                contract::PRIVATE_KEY => Some(contract::NEXT_PRIVATE_KEY),
                contract::KID => Some(contract::NEXT_KID),
                contract::ALG => Some(contract::NEXT_ALG),
                _ => None,
            };
            let keys = SecretKeys::parse(|k| renamed(k).and_then(|k| data.get(k)).map(|v| v.0.as_slice()))?;
            return Ok(Slots { active: None, next: Some(keys.active) });
        }
        Ok(Slots::default())
    }

    /// The Secret `data` for these slots.
    #[cfg(test)]
    pub fn to_data(&self) -> BTreeMap<String, ByteString> {
        slots_data(self.active.as_ref(), self.next.as_ref())
    }

    pub fn active_kid(&self) -> Option<&str> {
        self.active.as_ref().map(PrivateKey::kid)
    }

    pub fn next_kid(&self) -> Option<&str> {
        self.next.as_ref().map(PrivateKey::kid)
    }
}

/// The Secret `data` holding `active` and `next`.
pub fn slots_data(active: Option<&PrivateKey>, next: Option<&PrivateKey>) -> BTreeMap<String, ByteString> {
    let mut data = BTreeMap::new();
    let mut put = |names: [&str; 3], key: &PrivateKey| {
        data.insert(names[0].to_owned(), ByteString(key.to_pkcs8_pem().as_bytes().to_vec()));
        data.insert(names[1].to_owned(), ByteString(key.kid().as_bytes().to_vec()));
        data.insert(names[2].to_owned(), ByteString(key.algorithm().as_str().as_bytes().to_vec()));
    };
    if let Some(k) = active {
        put([contract::PRIVATE_KEY, contract::KID, contract::ALG], k);
    }
    if let Some(k) = next {
        put([contract::NEXT_PRIVATE_KEY, contract::NEXT_KID, contract::NEXT_ALG], k);
    }
    data
}

/// What the JWKS ConfigMap publishes, plus what could not be read. Output
/// of the operator, read back only to see whether it needs rewriting (and to
/// recover public keys whose id proves them, see `decide`).
#[derive(Debug, Default, Clone)]
pub struct Published {
    pub jwks: BTreeMap<String, Jwk>,
    /// Why part of the ConfigMap was unreadable (it is rewritten from the Secret).
    pub problems: Vec<String>,
}

impl Published {
    pub fn parse(cm: &ConfigMap) -> Published {
        let mut out = Published::default();
        if let Some(text) = cm.data.as_ref().and_then(|d| d.get(contract::JWKS)) {
            match serde_json::from_str::<JwkSet>(text) {
                Ok(set) => out.jwks = set.keys.into_iter().map(|k| (k.kid.clone(), k)).collect(),
                Err(e) => out.problems.push(format!("{} is not a JWK Set: {e}", contract::JWKS)),
            }
        }
        out
    }
}

/// Whether `obj` carries a controller ownerReference to the object with `uid`.
pub fn controlled_by<K: Resource>(obj: &K, uid: &str) -> bool {
    obj.meta().owner_references.iter().flatten().any(|r| r.controller == Some(true) && r.uid == uid)
}

/// Whether every label in `want` is set on `obj`.
pub fn has_labels<K: Resource>(obj: &K, want: &BTreeMap<String, String>) -> bool {
    let have = obj.meta().labels.as_ref();
    want.iter().all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
}

pub fn secret_data(secret: &Secret) -> BTreeMap<String, ByteString> {
    secret.data.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(alg: Algorithm) -> PrivateKey {
        PrivateKey::generate(alg, None).expect("generate")
    }

    #[test]
    fn slots_round_trip_including_next_only() {
        for slots in [
            Slots { active: Some(key(Algorithm::ES256)), next: None },
            Slots { active: Some(key(Algorithm::ES256)), next: Some(key(Algorithm::EdDSA)) },
            Slots { active: None, next: Some(key(Algorithm::ES384)) },
            Slots::default(),
        ] {
            let back = Slots::parse(&slots.to_data()).expect("parse");
            assert_eq!(back.active_kid(), slots.active_kid());
            assert_eq!(back.next_kid(), slots.next_kid());
            assert_eq!(back.next.map(|k| k.algorithm()), slots.next.map(|k| k.algorithm()));
        }
    }

    #[test]
    fn a_broken_next_slot_is_an_error_not_an_empty_secret() {
        let mut data = Slots { active: None, next: Some(key(Algorithm::ES256)) }.to_data();
        data.insert(contract::NEXT_KID.into(), ByteString(b"other".to_vec()));
        assert!(Slots::parse(&data).is_err());
    }

    #[test]
    fn kind_reports_rsa_modulus_bits() {
        let k = PrivateKey::generate(Algorithm::PS256, Some(2048)).expect("generate");
        assert_eq!(KeyKind::of(&k), KeyKind { algorithm: Algorithm::PS256, rsa_bits: Some(2048) });
        assert_eq!(KeyKind::of(&key(Algorithm::EdDSA)).rsa_bits, None);
    }

    #[test]
    fn an_unreadable_jwks_is_reported() {
        let cm =
            ConfigMap { data: Some(BTreeMap::from([(contract::JWKS.into(), "nope".into())])), ..Default::default() };
        let p = Published::parse(&cm);
        assert_eq!(p.problems.len(), 1, "{:?}", p.problems);
        assert!(p.jwks.is_empty());
    }
}
