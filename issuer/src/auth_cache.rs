//! Remembers recent successful authentications so a busy client's repeated
//! requests cost a hash lookup instead of an Argon2 run.
//!
//! Entries are keyed by HMAC-SHA256, under a random key made at start-up, of
//! (kind, stored hash, id, presented secret): the cache never holds a secret,
//! a memory dump cannot be used to test guesses offline without the process
//! key, and an entry matches only while the client's stored hash is the one
//! the secret was verified against (Argon2 of the same secret and hash always
//! gives the same answer), so editing other entries of the clients file keeps
//! it. Only successes are stored; a failure always runs Argon2 again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;

pub type Digest = [u8; 32];

pub struct AuthCache {
    key: hmac::Key,
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<Digest, Instant>>,
}

impl AuthCache {
    pub fn new(ttl: Duration, capacity: usize) -> Result<AuthCache, aws_lc_rs::error::Unspecified> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &aws_lc_rs::rand::SystemRandom::new())?;
        Ok(AuthCache { key, ttl, capacity, entries: Mutex::new(HashMap::new()) })
    }

    /// The cache key of one presentation of credentials. Each field is length
    /// prefixed so no two different inputs share an encoding.
    pub fn digest(&self, kind: &str, stored_hash: &str, id: &str, secret: &[u8]) -> Digest {
        let mut ctx = hmac::Context::with_key(&self.key);
        for field in [kind.as_bytes(), stored_hash.as_bytes(), id.as_bytes(), secret] {
            ctx.update(&(field.len() as u64).to_be_bytes());
            ctx.update(field);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    pub fn contains(&self, digest: &Digest, now: Instant) -> bool {
        let entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.get(digest).is_some_and(|expires| *expires > now)
    }

    pub fn insert(&self, digest: Digest, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&digest) {
            entries.retain(|_, expires| *expires > now);
            if entries.len() >= self.capacity {
                // Still full of live entries: drop one; its client pays one more Argon2 run.
                if let Some(victim) = entries.keys().next().copied() {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(digest, now + self.ttl);
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_expire_and_fields_do_not_run_together() {
        let cache = AuthCache::new(Duration::from_secs(60), 10).expect("cache");
        let now = Instant::now();
        let d = cache.digest("client", "h1", "a", b"secret");
        assert!(!cache.contains(&d, now));
        cache.insert(d, now);
        assert!(cache.contains(&d, now + Duration::from_secs(59)));
        assert!(!cache.contains(&d, now + Duration::from_secs(60)), "expired");
        assert_ne!(d, cache.digest("client", "h1", "as", b"ecret"), "length prefixes separate fields");
        assert_ne!(d, cache.digest("client", "h2", "a", b"secret"), "a new stored hash invalidates");
        assert_ne!(d, cache.digest("user", "h1", "a", b"secret"));
        let other = AuthCache::new(Duration::from_secs(60), 10).expect("cache");
        assert_ne!(d, other.digest("client", "h1", "a", b"secret"), "the key is per process");
        cache.clear();
        assert!(!cache.contains(&d, now));
    }

    #[test]
    fn stays_within_capacity() {
        let cache = AuthCache::new(Duration::from_secs(60), 3).expect("cache");
        let now = Instant::now();
        for i in 0..10u8 {
            cache.insert(cache.digest("client", "h", "a", &[i]), now);
            assert!(cache.len() <= 3);
        }
        let last = cache.digest("client", "h", "a", &[9]);
        assert!(cache.contains(&last, now), "the newest entry is kept");
    }
}
