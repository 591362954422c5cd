//! Counts failed authentications per key (a client id, a username or a source
//! address) in fixed windows, and says how long a key that used up its
//! allowance must wait. Only failures count, so a client that authenticates
//! correctly is never slowed down by its own traffic.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys tracked at most. Beyond this (after dropping finished windows), new
/// keys go uncounted rather than evicting keys under attack; Argon2 work stays
/// bounded regardless by the verification semaphore.
const MAX_KEYS: usize = 100_000;

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

pub struct RateLimiter {
    limit: u32,
    window: Duration,
    entries: Mutex<HashMap<String, Window>>,
}

impl RateLimiter {
    pub fn new(limit: u32, window: Duration) -> RateLimiter {
        RateLimiter { limit, window, entries: Mutex::new(HashMap::new()) }
    }

    /// `Err(retry_after)` when `key` has failed `limit` times in its current window.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match entries.get(key) {
            Some(w) if w.failures >= self.limit && now < w.start + self.window => Err(w.start + self.window - now),
            _ => Ok(()),
        }
    }

    pub fn record_failure(&self, key: &str, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(w) = entries.get_mut(key) {
            if now >= w.start + self.window {
                *w = Window { start: now, failures: 0 };
            }
            w.failures = w.failures.saturating_add(1);
            return;
        }
        if entries.len() >= MAX_KEYS {
            entries.retain(|_, w| now < w.start + self.window);
            if entries.len() >= MAX_KEYS {
                return;
            }
        }
        entries.insert(key.to_owned(), Window { start: now, failures: 1 });
    }
}

/// The rate-limit key of a source address. IPv6 hosts usually own a whole /64,
/// so that is the unit counted.
pub fn source_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let s = v6.segments();
                format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let limiter = RateLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(limiter.check("client:a", t0), Ok(()), "attempt {i}");
            limiter.record_failure("client:a", t0 + Duration::from_secs(i));
        }
        assert_eq!(limiter.check("client:a", t0 + Duration::from_secs(10)), Err(Duration::from_secs(50)));
        assert_eq!(limiter.check("client:b", t0), Ok(()), "other keys are unaffected");
        assert_eq!(limiter.check("client:a", t0 + Duration::from_secs(60)), Ok(()), "window over");
        limiter.record_failure("client:a", t0 + Duration::from_secs(61));
        assert_eq!(limiter.check("client:a", t0 + Duration::from_secs(61)), Ok(()), "a fresh window");
    }

    #[test]
    fn ipv6_counts_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        assert_eq!(source_key(mapped), "ip:192.0.2.1");
    }
}
