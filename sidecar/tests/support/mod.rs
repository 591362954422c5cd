//! Shared test fixtures: real keys, hand-built compact JWS tokens.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};
use sigil_api::jwk::{JwkSet, b64};
use sigil_api::{Algorithm, PrivateKey};
use sigil_sidecar::keys::{KeySet, Loaded};
use sigil_sidecar::verify::{AlgorithmSet, Policy};

pub const ISSUER: &str = "https://issuer.sigil.test";
pub const AUDIENCE: &str = "orders";

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// One generated key per algorithm, shared across tests (RSA generation is slow).
pub fn key(alg: Algorithm) -> &'static PrivateKey {
    static KEYS: OnceLock<Vec<PrivateKey>> = OnceLock::new();
    let keys =
        KEYS.get_or_init(|| Algorithm::ALL.iter().map(|a| PrivateKey::generate(*a, None).expect("keygen")).collect());
    let index = Algorithm::ALL.iter().position(|a| *a == alg).expect("known alg");
    &keys[index]
}

pub fn jwks_json(keys: &[&PrivateKey]) -> String {
    JwkSet { keys: keys.iter().map(|k| k.public_jwk().clone()).collect() }.to_json()
}

pub fn keyset(keys: &[&PrivateKey]) -> KeySet {
    let loaded = Loaded::parse(jwks_json(keys).as_bytes()).expect("jwks");
    assert!(loaded.skipped.is_empty(), "{:?}", loaded.skipped);
    let keys: Vec<_> = loaded.keys.into_iter().map(Arc::new).collect();
    KeySet::build([keys.as_slice()], &KeySet::default()).0
}

pub fn policy() -> Policy {
    Policy {
        issuer: ISSUER.into(),
        audiences: vec![AUDIENCE.into()],
        leeway_secs: 30,
        max_lifetime_secs: None,
        algorithms: AlgorithmSet::from_iter(Algorithm::ALL),
        max_token_bytes: 8192,
    }
}

pub fn claims() -> Value {
    let now = now();
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "scope": "orders:read orders:write",
           "client_id": "web", "iat": now, "exp": now + 300})
}

pub fn header(key: &PrivateKey) -> Value {
    json!({"alg": key.algorithm().as_str(), "kid": key.kid(), "typ": "at+jwt"})
}

/// Signs raw header and payload bytes: the way to build tokens no JWT
/// library would produce (duplicates, non-objects, odd headers).
pub fn sign_raw(key: &PrivateKey, header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = key.sign(input.as_bytes()).expect("sign");
    format!("{input}.{}", b64(&sig))
}

pub fn sign(key: &PrivateKey, header: &Value, claims: &Value) -> String {
    sign_raw(key, header.to_string().as_bytes(), claims.to_string().as_bytes())
}

/// A valid token for `key` with the default claims.
pub fn token(key: &PrivateKey) -> String {
    sign(key, &header(key), &claims())
}
