//! Noticing when a mounted Secret or ConfigMap changes.
//!
//! The kubelet updates such a volume atomically: it writes the new files into
//! a fresh timestamped directory, then renames a `..data` symlink over the old
//! one. Watching the file itself misses that (its inode never changes), so
//! [`Changes`] watches the directory with inotify, and ticks on a fallback
//! period as well in case an event is lost (or inotify is unavailable).
//! Consumers re-read, validate, and swap in the new content themselves.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};

/// Events of one swap arrive in a burst; waiting this long lets them settle
/// into a single re-read.
const SETTLE: Duration = Duration::from_millis(25);

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{0}: no such file or directory")]
    Missing(PathBuf),
}

/// A stream of "this path may have changed" notices.
pub struct Changes {
    // Held so the watch lasts as long as `Changes`.
    _watcher: Option<RecommendedWatcher>,
    events: watch::Receiver<u64>,
    fallback: Interval,
}

impl Changes {
    /// Watches `path` (a file or a directory). For a file, its directory is
    /// watched, which is where the kubelet's `..data` swap happens.
    pub fn new(path: &Path, fallback_period: Duration) -> Result<Changes, WatchError> {
        let dir =
            if path.is_dir() { path.to_path_buf() } else { path.parent().unwrap_or(Path::new(".")).to_path_buf() };
        if !dir.exists() || !path.exists() {
            return Err(WatchError::Missing(path.to_path_buf()));
        }
        let (tx, events) = watch::channel(0u64);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| may_change(&e.kind)) {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        })
        .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(path = %dir.display(), error = %e, "cannot watch; re-reading on the fallback period only");
                None
            }
        };
        let mut fallback = tokio::time::interval_at(tokio::time::Instant::now() + fallback_period, fallback_period);
        fallback.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Changes { _watcher: watcher, events, fallback })
    }

    /// Resolves when the watched content may have changed.
    pub async fn changed(&mut self) {
        tokio::select! {
            result = self.events.changed() => {
                if result.is_err() {
                    // The watcher is gone; only the fallback remains.
                    self.fallback.tick().await;
                    return;
                }
                tokio::time::sleep(SETTLE).await;
                self.events.borrow_and_update();
            }
            _ = self.fallback.tick() => {}
        }
    }
}

/// Whether an event can mean new content. Opening or reading a file cannot;
/// counting those made every consumer's own re-read notify it again, so a
/// watched file was re-read every `SETTLE` forever.
fn may_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume;

    #[tokio::test]
    async fn a_kubelet_style_swap_is_noticed_without_waiting_for_the_fallback() {
        let dir = tempfile::tempdir().expect("tempdir");
        volume::write_atomically(dir.path(), &[("jwks.json", b"one")]).expect("write");
        let mut changes = Changes::new(&dir.path().join("jwks.json"), Duration::from_secs(3600)).expect("watch");
        volume::write_atomically(dir.path(), &[("jwks.json", b"two")]).expect("swap");
        tokio::time::timeout(Duration::from_secs(5), changes.changed()).await.expect("inotify noticed the swap");
        assert_eq!(std::fs::read(dir.path().join("jwks.json")).expect("read"), b"two");
    }

    #[tokio::test]
    async fn the_fallback_ticks_when_nothing_happens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut changes = Changes::new(dir.path(), Duration::from_millis(50)).expect("watch");
        tokio::time::timeout(Duration::from_secs(5), changes.changed()).await.expect("fallback tick");
    }

    #[test]
    fn reads_are_not_changes() {
        use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
        ] {
            assert!(!may_change(&kind), "{kind:?}");
        }
        for kind in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::Any),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(RemoveKind::Any),
            EventKind::Any,
        ] {
            assert!(may_change(&kind), "{kind:?}");
        }
    }

    #[test]
    fn a_missing_path_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope").join("jwks.json");
        assert!(matches!(Changes::new(&missing, Duration::from_secs(1)), Err(WatchError::Missing(_))));
    }
}
