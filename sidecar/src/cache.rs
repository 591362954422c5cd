//! A bounded cache of verified tokens, so a client that sends the same token
//! many times pays for one signature check.
//!
//! Entries are keyed by the SHA-256 of the token (a collision would be a
//! forgery, so the hash must be cryptographic) and hold the key object that
//! verified them. A hit counts only while the token is unexpired and that very
//! key is still in the current key set: removing a key from the JWKS
//! invalidates its cached tokens at the next request, with no sweep.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use crate::keys::{Key, KeySet};
use crate::verify::still_valid;

pub type Digest = [u8; 32];

pub fn digest(token: &str) -> Digest {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Shards keep lock hold times short under many connections.
const SHARDS: usize = 16;

type Shard<V> = Mutex<HashMap<Digest, Entry<V>, BuildHasherDefault<DigestHasher>>>;

pub struct TokenCache<V> {
    shards: Box<[Shard<V>]>,
    per_shard: usize,
}

struct Entry<V> {
    value: Arc<V>,
    key: Arc<Key>,
    exp: i64,
}

impl<V> TokenCache<V> {
    /// A cache for about `capacity` tokens; `None` when `capacity` is 0.
    pub fn new(capacity: usize) -> Option<Self> {
        if capacity == 0 {
            return None;
        }
        let per_shard = capacity.div_ceil(SHARDS);
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::default())).collect();
        Some(TokenCache { shards, per_shard })
    }

    fn shard(&self, d: &Digest) -> &Shard<V> {
        &self.shards[usize::from(d[31]) % SHARDS]
    }

    pub fn get(&self, d: &Digest, keys: &KeySet, now: i64, leeway: i64) -> Option<Arc<V>> {
        let mut shard = self.shard(d).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = shard.get(d)?;
        if still_valid(entry.exp, now, leeway) && keys.holds(&entry.key) {
            return Some(Arc::clone(&entry.value));
        }
        shard.remove(d);
        None
    }

    pub fn insert(&self, d: Digest, value: Arc<V>, key: Arc<Key>, exp: i64, now: i64, leeway: i64) {
        let mut shard = self.shard(&d).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if shard.len() >= self.per_shard {
            shard.retain(|_, e| still_valid(e.exp, now, leeway));
        }
        if shard.len() >= self.per_shard {
            // Still full of live tokens: drop one. The map's order is as good
            // as random, and a miss costs only one signature check.
            if let Some(victim) = shard.keys().next().copied() {
                shard.remove(&victim);
            }
        }
        shard.insert(d, Entry { value, key, exp });
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map_or(0, |s| s.len())).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The keys are already SHA-256 digests: their first eight bytes are a fine
/// hash, with no need to hash them again.
#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Loaded;
    use sigil_core::jwk::JwkSet;
    use sigil_core::{Algorithm, PrivateKey};

    fn keys_of(keys: &[&PrivateKey], previous: &KeySet) -> KeySet {
        let json = JwkSet { keys: keys.iter().map(|k| k.public_jwk().clone()).collect() }.to_json();
        let loaded: Vec<Arc<Key>> =
            Loaded::parse(json.as_bytes()).expect("jwks").keys.into_iter().map(Arc::new).collect();
        KeySet::build([loaded.as_slice()], previous).0
    }

    #[test]
    fn hits_until_expiry_or_key_removal() {
        let (a, b) = (
            PrivateKey::generate(Algorithm::EdDSA, None).expect("key"),
            PrivateKey::generate(Algorithm::EdDSA, None).expect("key"),
        );
        let set = keys_of(&[&a, &b], &KeySet::default());
        let cache = TokenCache::new(100).expect("enabled");
        let key = Arc::clone(set.get(a.kid()).expect("a"));
        cache.insert(digest("t1"), Arc::new("alice"), key, 1000, 900, 0);
        assert_eq!(cache.get(&digest("t1"), &set, 999, 0).as_deref(), Some(&"alice"));
        assert!(cache.get(&digest("t2"), &set, 999, 0).is_none());
        assert!(cache.get(&digest("t1"), &set, 1000, 0).is_none(), "expired");
        assert!(cache.is_empty(), "expired entries are dropped on lookup");

        cache.insert(digest("t1"), Arc::new("alice"), Arc::clone(set.get(a.kid()).expect("a")), 1000, 900, 0);
        // An unrelated reload keeps the key object, so the entry survives.
        let reloaded = keys_of(&[&a, &b], &set);
        assert!(cache.get(&digest("t1"), &reloaded, 950, 0).is_some());
        // Removing the key ends it at once.
        let without_a = keys_of(&[&b], &reloaded);
        assert!(cache.get(&digest("t1"), &without_a, 950, 0).is_none());
        // Publishing it again is a new key object: the old entry stays dead.
        cache.insert(digest("t1"), Arc::new("alice"), Arc::clone(reloaded.get(a.kid()).expect("a")), 1000, 900, 0);
        let fresh = keys_of(&[&a, &b], &KeySet::default());
        assert!(cache.get(&digest("t1"), &fresh, 950, 0).is_none());
    }

    #[test]
    fn stays_bounded() {
        let a = PrivateKey::generate(Algorithm::EdDSA, None).expect("key");
        let set = keys_of(&[&a], &KeySet::default());
        let key = Arc::clone(set.get(a.kid()).expect("a"));
        let cache = TokenCache::new(64).expect("enabled");
        for i in 0..1000 {
            cache.insert(digest(&i.to_string()), Arc::new(i), Arc::clone(&key), 10_000, 0, 0);
        }
        assert!(cache.len() <= 64, "{}", cache.len());
        assert!(TokenCache::<()>::new(0).is_none(), "0 turns the cache off");
    }
}
