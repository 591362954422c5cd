//! Brute-force protection that only the attacker feels.
//!
//! Two rules, both applied only to secrets that are not already known good
//! (a cached success in `auth.rs` is answered before either):
//!
//! 1. **Back-off per (id, source)**: failures are counted per client id (or
//!    username) *and* source address together. After `free` failures each
//!    further one doubles the wait, from one second up to `max`. A source that
//!    has not failed is never slowed down by another source's failures, and a
//!    source address alone is never a key, so clients sharing a proxy, a mesh
//!    sidecar or SNAT are not locked out together.
//! 2. **Ceiling per id**: a GCRA limit (`governor`) on failures of one known
//!    id across all sources, far above real traffic, so an attacker spreading
//!    guesses over many addresses is slowed down too. Only failures count, so
//!    a burst of correct requests on a cold replica never trips it. It is the
//!    one rule that can refuse a source that never failed, and only while
//!    someone fails that id's secret hundreds of times a minute.
//!
//! The back-off table is bounded: when it is full, the entry whose last
//! failure is oldest is evicted; a new key is always counted.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// The first wait once the free failures are used up; it doubles from here.
const BASE_BACKOFF: Duration = Duration::from_secs(1);

/// How failures turn into waits.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Failures allowed before back-off begins.
    pub free: u32,
    /// The longest wait; an entry quiet for this long after its wait is forgotten.
    pub max: Duration,
    /// Most (id, source) pairs remembered.
    pub capacity: usize,
}

impl Policy {
    /// The wait after `failures` failures: none for the free ones, then 1 s,
    /// 2 s, 4 s, ... up to `max`. Pure, so the schedule is a table test.
    pub fn wait(&self, failures: u32) -> Duration {
        if failures < self.free {
            return Duration::ZERO;
        }
        let doublings = (failures - self.free).min(31);
        BASE_BACKOFF.saturating_mul(1 << doublings).min(self.max)
    }
}

/// The key of one (kind, id, source) pair: a SHA-256 of the length-prefixed
/// fields, so an id of any length costs 32 bytes in the table and no two
/// different pairs share an encoding.
pub type PairKey = [u8; 32];

pub fn pair_key(kind: &str, id: &str, source: IpAddr) -> PairKey {
    let source = source_key(source);
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for field in [kind.as_bytes(), id.as_bytes(), source.as_bytes()] {
        ctx.update(&(field.len() as u64).to_be_bytes());
        ctx.update(field);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    last: Instant,
    /// Position in `Table::order`.
    seq: u64,
}

#[derive(Default)]
struct Table {
    entries: HashMap<PairKey, Entry>,
    /// Entries by last failure, oldest first, for eviction.
    order: BTreeMap<u64, PairKey>,
    next_seq: u64,
}

impl Table {
    fn remove(&mut self, key: &PairKey) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.order.remove(&entry.seq);
        Some(entry)
    }
}

/// Exponential back-off per (id, source) pair.
pub struct Backoff {
    policy: Policy,
    table: Mutex<Table>,
}

impl Backoff {
    pub fn new(policy: Policy) -> Backoff {
        Backoff { policy, table: Mutex::new(Table::default()) }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Err(wait)` while `key` is backing off.
    pub fn check(&self, key: &PairKey, now: Instant) -> Result<(), Duration> {
        match self.table().entries.get(key) {
            Some(e) => {
                let until = e.last + self.policy.wait(e.failures);
                if now < until { Err(until - now) } else { Ok(()) }
            }
            None => Ok(()),
        }
    }

    pub fn record_failure(&self, key: &PairKey, now: Instant) {
        let mut table = self.table();
        let previous = table.remove(key);
        let failures = match previous {
            // Quiet for `max` after its last wait ended: start over.
            Some(e) if now < e.last + self.policy.wait(e.failures) + self.policy.max => e.failures.saturating_add(1),
            _ => 1,
        };
        while table.entries.len() >= self.policy.capacity {
            let Some((_, oldest)) = table.order.pop_first() else { break };
            table.entries.remove(&oldest);
        }
        let seq = table.next_seq;
        table.next_seq += 1;
        table.order.insert(seq, *key);
        table.entries.insert(*key, Entry { failures, last: now, seq });
    }

    /// A correct secret from this pair: its failures no longer count.
    pub fn record_success(&self, key: &PairKey) {
        self.table().remove(key);
    }

    pub fn len(&self) -> usize {
        self.table().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Failures per known id per minute, across all sources. Keys are ids from
/// the clients file, so both maps are bounded by it.
pub struct Ceiling {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    /// Ids whose allowance ran out, and until when.
    blocked: Mutex<HashMap<String, Instant>>,
}

impl Ceiling {
    pub fn per_minute(failures: NonZeroU32) -> Ceiling {
        Ceiling {
            limiter: DefaultKeyedRateLimiter::hashmap(Quota::per_minute(failures)),
            clock: DefaultClock::default(),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    fn blocked(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.blocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Err(wait)` while `key` is over its allowance.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        match self.blocked().get(key) {
            Some(until) if now < *until => Err(*until - now),
            _ => Ok(()),
        }
    }

    /// Takes one failure from `key`'s allowance; when there is none left, the
    /// id waits until the GCRA would allow the next one.
    pub fn record_failure(&self, key: &str, now: Instant) {
        if let Err(not_until) = self.limiter.check_key(&key.to_owned()) {
            self.blocked().insert(key.to_owned(), now + not_until.wait_time_from(self.clock.now()));
        }
    }

    /// Drops the state of ids with a full allowance or an expired block (e.g.
    /// ones removed from the file).
    pub fn shrink(&self, now: Instant) {
        self.limiter.retain_recent();
        self.blocked().retain(|_, until| now < *until);
    }
}

/// The source part of a pair. IPv6 hosts usually own a whole /64, so that is
/// the unit counted; IPv4-mapped IPv6 is the IPv4 address.
pub fn source_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy { free: 3, max: Duration::from_secs(60), capacity: 100 };

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn the_wait_doubles_after_the_free_failures_up_to_the_maximum() {
        let secs = |n| POLICY.wait(n).as_secs();
        assert_eq!([0, 1, 2, 3, 4, 5, 6, 7, 8, 40, u32::MAX].map(secs), [0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn a_pair_backs_off_and_other_pairs_do_not() {
        let b = Backoff::new(POLICY);
        let t0 = Instant::now();
        let attacker = pair_key("client", "svc", ip("198.51.100.1"));
        for i in 0..3 {
            assert_eq!(b.check(&attacker, t0), Ok(()), "free failure {i}");
            b.record_failure(&attacker, t0);
        }
        assert_eq!(b.check(&attacker, t0), Err(Duration::from_secs(1)));
        assert_eq!(b.check(&attacker, t0 + Duration::from_secs(1)), Ok(()), "the wait is over");
        b.record_failure(&attacker, t0 + Duration::from_secs(1));
        assert_eq!(b.check(&attacker, t0 + Duration::from_secs(1)), Err(Duration::from_secs(2)), "doubled");

        // Same id, another source; same source, another id: unaffected.
        assert_eq!(b.check(&pair_key("client", "svc", ip("192.0.2.7")), t0), Ok(()));
        assert_eq!(b.check(&pair_key("client", "other", ip("198.51.100.1")), t0), Ok(()));
        assert_eq!(b.check(&pair_key("user", "svc", ip("198.51.100.1")), t0), Ok(()), "users are apart");

        // Success clears the pair.
        b.record_success(&attacker);
        assert_eq!(b.check(&attacker, t0 + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn a_quiet_pair_starts_over() {
        let b = Backoff::new(POLICY);
        let t0 = Instant::now();
        let k = pair_key("client", "svc", ip("198.51.100.1"));
        for _ in 0..4 {
            b.record_failure(&k, t0);
        }
        // Waited out 2 s, then quiet for `max`: the count restarts at one.
        let later = t0 + Duration::from_secs(2) + POLICY.max;
        b.record_failure(&k, later);
        assert_eq!(b.check(&k, later), Ok(()));
    }

    #[test]
    fn a_full_table_evicts_the_oldest_and_still_counts_new_pairs() {
        let b = Backoff::new(Policy { capacity: 3, ..POLICY });
        let t0 = Instant::now();
        let keys: Vec<PairKey> = (1..=4).map(|i| pair_key("client", "svc", ip(&format!("198.51.100.{i}")))).collect();
        for (i, k) in keys.iter().enumerate() {
            for _ in 0..3 {
                b.record_failure(k, t0 + Duration::from_millis(i as u64));
            }
            assert!(b.len() <= 3);
        }
        assert_eq!(b.check(&keys[0], t0), Ok(()), "the oldest was evicted");
        for k in &keys[1..] {
            assert!(b.check(k, t0 + Duration::from_millis(10)).is_err(), "newer pairs are still backing off");
        }
        // Touching an entry makes it the newest: keys[1] survives the next eviction, keys[2] does not.
        b.record_failure(&keys[1], t0 + Duration::from_millis(20));
        b.record_failure(&keys[0], t0 + Duration::from_millis(21));
        assert!(b.check(&keys[1], t0 + Duration::from_millis(21)).is_err());
        assert_eq!(b.check(&keys[2], t0 + Duration::from_millis(21)), Ok(()));
    }

    #[test]
    fn pair_keys_do_not_run_together() {
        let a = ip("192.0.2.1");
        assert_ne!(pair_key("client", "ab", a), pair_key("client", "a", ip("192.0.2.1")));
        assert_ne!(pair_key("client", "a", a), pair_key("user", "a", a));
        assert_eq!(pair_key("client", "a", ip("::ffff:192.0.2.1")), pair_key("client", "a", a));
    }

    #[test]
    fn the_ceiling_blocks_an_id_past_its_failure_quota() {
        let ceiling = Ceiling::per_minute(NonZeroU32::new(2).expect("non-zero"));
        let now = Instant::now();
        for _ in 0..2 {
            assert_eq!(ceiling.check("client:svc", now), Ok(()));
            ceiling.record_failure("client:svc", now);
        }
        assert_eq!(ceiling.check("client:svc", now), Ok(()), "the quota itself is allowed");
        ceiling.record_failure("client:svc", now);
        let wait = ceiling.check("client:svc", now).expect_err("over the ceiling");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(30), "{wait:?}");
        assert_eq!(ceiling.check("client:svc", now + wait), Ok(()), "until the GCRA allows one more");
        assert_eq!(ceiling.check("client:other", now), Ok(()), "per id");
    }

    #[test]
    fn ipv6_counts_per_64() {
        assert_eq!(source_key(ip("2001:db8:1:2:aaaa::1")), source_key(ip("2001:db8:1:2:bbbb::2")));
        assert_ne!(source_key(ip("2001:db8:1:2::1")), source_key(ip("2001:db8:1:3::1")));
        assert_eq!(source_key(ip("::ffff:192.0.2.1")), "192.0.2.1");
    }
}
