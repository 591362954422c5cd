//! Where keys come from, and the one place the current [`KeySet`] lives.
//!
//! Two sources feed the store: a mounted JWKS file (the operator's ConfigMap)
//! and a JWKS URL (the issuer). Each replaces its own keys; the store merges
//! them and swaps the merged set in whole.
//!
//! How they combine: a key verifies while either source lists it, so a new
//! key is usable as soon as the first source has it. A key that a source
//! stops listing is withdrawn at once from the merged set, even while the
//! other source still lists it (its copy may lag by a kubelet sync or a
//! refresh interval, or be stale), until the withdrawing source lists it
//! again: revocation travels at the speed of the fastest source. A source that
//! fails to load withdraws nothing; its keys drop out only when stale.
//!
//! Requests read the set on every call, so it sits in an `ArcSwap`: loads are
//! lock-free and never contend with each other or with a reload, unlike an
//! `RwLock` whose reader count is a shared write on every request.

pub mod file;
pub mod tls;
pub mod url;

use std::collections::HashMap;
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
    /// Kids a source stopped listing, by the source that dropped them, in
    /// the order withdrawn (oldest first once the bound is reached).
    withdrawn: HashMap<String, (Source, u64)>,
    withdrawals: u64,
}

/// Withdrawn kids remembered; far more than any real key history holds.
const MAX_WITHDRAWN: usize = 4096;

impl Sources {
    fn keys(&mut self, source: Source) -> &mut Option<Vec<Arc<Key>>> {
        match source {
            Source::File => &mut self.file,
            Source::Url => &mut self.url,
        }
    }

    /// Records what `source` now lists: kids it dropped are withdrawn, kids
    /// it lists again are its to restore.
    fn update(&mut self, source: Source, keys: Option<Vec<Arc<Key>>>) {
        if let (Some(before), Some(now)) = (self.keys(source).as_deref(), keys.as_deref()) {
            let dropped: Vec<String> =
                before.iter().filter(|k| !now.iter().any(|n| n.kid == k.kid)).map(|k| k.kid.clone()).collect();
            for kid in dropped {
                self.withdrawals += 1;
                self.withdrawn.insert(kid, (source, self.withdrawals));
            }
        }
        if let Some(now) = keys.as_deref() {
            self.withdrawn.retain(|kid, (by, _)| *by != source || !now.iter().any(|k| k.kid == *kid));
        }
        while self.withdrawn.len() > MAX_WITHDRAWN {
            let oldest = self.withdrawn.iter().min_by_key(|(_, (_, n))| *n).map(|(kid, _)| kid.clone());
            if let Some(kid) = oldest {
                self.withdrawn.remove(&kid);
            }
        }
        *self.keys(source) = keys;
    }

    /// Every source's keys, less the withdrawn ones.
    fn usable(&self) -> Vec<Vec<Arc<Key>>> {
        [self.file.as_deref(), self.url.as_deref()]
            .into_iter()
            .flatten()
            .map(|keys| keys.iter().filter(|k| !self.withdrawn.contains_key(&k.kid)).cloned().collect())
            .collect()
    }
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
        sources.update(source, keys);
        let previous = self.current.load_full();
        let usable = sources.usable();
        let (set, conflicts) = KeySet::build(usable.iter().map(Vec::as_slice), &previous);
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
        self.metrics.set_keys(&before, &kids);
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
