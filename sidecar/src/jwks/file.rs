//! The mounted JWKS file: read at start, re-read whenever the kubelet swaps the
//! volume. A document that does not parse leaves the current keys in place; a
//! valid document with fewer keys removes them at once (that is how a
//! revocation arrives).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sigil_runtime::watch::Changes;

use super::{KeyStore, Source};
use crate::keys::Loaded;

/// How often to re-read even without a change notice, in case one was lost.
const FALLBACK: Duration = Duration::from_secs(60);

pub struct FileSource {
    path: PathBuf,
    changes: Changes,
    last: Option<Vec<u8>>,
}

impl FileSource {
    /// Starts watching `path`; fails if it does not exist (a missing mount is
    /// a configuration error worth exiting for).
    pub fn new(path: &Path) -> Result<FileSource, crate::Error> {
        let changes = Changes::new(path, FALLBACK).map_err(|e| crate::Error::JwksFile(e.to_string()))?;
        Ok(FileSource { path: path.to_path_buf(), changes, last: None })
    }

    /// Loads now and again after every change, forever.
    pub async fn run(mut self, store: Arc<KeyStore>) {
        loop {
            self.reload(&store).await;
            self.changes.changed().await;
        }
    }

    pub async fn reload(&mut self, store: &KeyStore) {
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot read JWKS file; keeping current keys");
                store.metrics().jwks_load(Source::File.label(), false);
                return;
            }
        };
        if self.last.as_deref() == Some(&bytes[..]) {
            return;
        }
        match Loaded::parse(&bytes) {
            Ok(loaded) => {
                store.metrics().jwks_load(Source::File.label(), true);
                store.replace(Source::File, Some(loaded));
                self.last = Some(bytes);
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "JWKS file is invalid; keeping current keys");
                store.metrics().jwks_load(Source::File.label(), false);
            }
        }
    }
}
