//! The leader's permission to write. Leader election alone does not stop a
//! replica that was paused (a GC pause, a stopped container, a slow node) from
//! waking up and writing after another replica took over. So every write asks
//! the fence first, immediately before it is sent, and the fence only opens
//! for a bounded time after each successful Lease renewal: a replica that
//! cannot renew stops writing on its own clock, before a candidate, counting
//! on its own clock, may take the Lease over.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;

use crate::error::{Error, Result};

/// Shared by the elector, which extends it, and every writer, which checks it.
#[derive(Clone, Debug)]
pub struct Fence(Option<Arc<Mutex<Option<Instant>>>>);

impl Fence {
    /// No leader election: this replica is the only writer, always allowed.
    pub fn open() -> Fence {
        Fence(None)
    }

    /// Leader election: writes are refused until the Lease is won.
    pub fn closed() -> Fence {
        Fence(Some(Arc::new(Mutex::new(None))))
    }

    /// Allows writes until `until`. Never shortens what an earlier renewal
    /// allowed: a slow renewal answered late must not move the fence back.
    pub fn extend(&self, until: Instant) {
        if let Some(valid) = &self.0 {
            let mut valid = valid.lock().unwrap_or_else(PoisonError::into_inner);
            *valid = Some(valid.map_or(until, |v| v.max(until)));
        }
    }

    /// Refuses every write from now on (the Lease is lost or given up).
    pub fn close(&self) {
        if let Some(valid) = &self.0 {
            *valid.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    /// `Ok` if a write may be sent now; call it right before sending.
    pub fn check(&self) -> Result<()> {
        let Some(valid) = &self.0 else { return Ok(()) };
        let until = *valid.lock().unwrap_or_else(PoisonError::into_inner);
        if permits(until, Instant::now()) { Ok(()) } else { Err(Error::NotLeader) }
    }
}

/// Whether a fence valid until `until` lets a write through at `now`. The
/// instant itself is already too late.
fn permits(until: Option<Instant>, now: Instant) -> bool {
    until.is_some_and(|until| now < until)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_fence_permits_strictly_before_its_deadline() {
        let now = Instant::now();
        let until = now + Duration::from_secs(10);
        assert!(permits(Some(until), now));
        assert!(permits(Some(until), until - Duration::from_millis(1)));
        assert!(!permits(Some(until), until), "the deadline itself is too late");
        assert!(!permits(Some(until), until + Duration::from_secs(30)));
        assert!(!permits(None, now), "never renewed, never allowed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fence_closes_on_its_own_clock_without_a_renewal() {
        let fence = Fence::closed();
        assert!(matches!(fence.check(), Err(Error::NotLeader)), "closed until the Lease is won");
        fence.extend(Instant::now() + Duration::from_secs(10));
        tokio::time::advance(Duration::from_millis(9_999)).await;
        fence.check().expect("within the renewal's validity");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(matches!(fence.check(), Err(Error::NotLeader)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_answer_never_shortens_the_fence_and_close_is_final() {
        let fence = Fence::closed();
        let start = Instant::now();
        fence.extend(start + Duration::from_secs(10));
        // A renewal that started earlier but was answered later.
        fence.extend(start + Duration::from_secs(4));
        tokio::time::advance(Duration::from_secs(6)).await;
        fence.check().expect("the later deadline stands");
        // A clone is the same fence: the writers see what the elector does.
        let writer = fence.clone();
        fence.close();
        assert!(matches!(writer.check(), Err(Error::NotLeader)));
    }

    #[test]
    fn without_leader_election_every_write_is_allowed() {
        let fence = Fence::open();
        fence.close();
        fence.check().expect("an open fence is not closable: there is no Lease to lose");
    }
}
