//! Where keys come from, and the one place the current [`KeySet`] lives.
//!
//! Two sources feed the store: a mounted JWKS file (the operator's ConfigMap)
//! and a JWKS URL (the issuer). Each replaces its own keys; the store merges
//! them and swaps the merged set in whole. Requests read the set on every
//! call, so it sits in an `ArcSwap`: loads are lock-free and never contend
//! with each other or with a reload, unlike an `RwLock` whose reader count is
//! a shared write on every request.

pub mod file;
pub mod url;

use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};
use sigil_runtime::admin::Readiness;
use tokio::sync::Notify;

use crate::keys::{Key, KeySet, Loaded};
use crate::metrics::Metrics;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    File,
    Url,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Url => "url",
        }
    }
}

#[derive(Default)]
struct Sources {
    file: Option<Vec<Arc<Key>>>,
    url: Option<Vec<Arc<Key>>>,
}

pub struct KeyStore {
    current: ArcSwap<KeySet>,
    sources: Mutex<Sources>,
    unknown_kid: Notify,
    ready: Readiness,
    metrics: Metrics,
}

impl KeyStore {
    pub fn new(ready: Readiness, metrics: Metrics) -> Self {
        ready.set(false);
        KeyStore {
            current: ArcSwap::from_pointee(KeySet::default()),
            sources: Mutex::default(),
            unknown_kid: Notify::new(),
            ready,
            metrics,
        }
    }

    /// The current keys. Cheap; call it per request.
    pub fn load(&self) -> Guard<Arc<KeySet>> {
        self.current.load()
    }

    /// Replaces one source's keys (`None`: that source has none to offer, e.g.
    /// its last good keys went stale) and swaps in the merged set.
    pub fn replace(&self, source: Source, loaded: Option<Loaded>) {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(loaded) = &loaded {
            for skipped in &loaded.skipped {
                tracing::warn!(source = source.label(), reason = %skipped, "JWKS key skipped");
            }
        }
        let keys = loaded.map(|l| l.keys.into_iter().map(Arc::new).collect());
        match source {
            Source::File => sources.file = keys,
            Source::Url => sources.url = keys,
        }
        let previous = self.current.load_full();
        let parts = [sources.file.as_deref(), sources.url.as_deref()];
        let (set, conflicts) = KeySet::build(parts.into_iter().flatten(), &previous);
        for kid in conflicts {
            tracing::warn!(kid, "file and URL publish different keys under one kid; using neither");
        }
        let mut kids: Vec<&str> = set.kids().collect();
        kids.sort_unstable();
        let mut before: Vec<&str> = previous.kids().collect();
        before.sort_unstable();
        if kids != before || set.is_empty() {
            tracing::info!(source = source.label(), keys = ?kids, "key set changed");
        } else {
            tracing::debug!(source = source.label(), "key set reloaded, unchanged");
        }
        self.metrics.set_keys(set.len());
        self.ready.set(!set.is_empty());
        self.current.store(Arc::new(set));
    }

    /// Called when a token names a kid we do not have: the URL source may
    /// fetch at once (rate-limited there).
    pub fn unknown_kid(&self) {
        self.unknown_kid.notify_one();
    }

    async fn unknown_kid_seen(&self) {
        self.unknown_kid.notified().await;
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
