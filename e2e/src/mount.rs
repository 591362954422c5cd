//! A stand-in for the kubelet's Secret and ConfigMap volumes, for processes
//! run outside a pod (tests and `make demo`): it watches one object and
//! rewrites a directory with its data through
//! [`sigil_runtime::volume::write_atomically`], the same `..data` swap a pod
//! sees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::runtime::watcher::{self, Event};

/// Which object to mirror.
#[derive(Clone, Debug)]
pub enum Source {
    Secret { namespace: String, name: String },
    ConfigMap { namespace: String, name: String },
}

/// Mirrors `source` into `dir` until the returned task is aborted. Each
/// version of the object is written once, as the kubelet would.
pub fn spawn(client: kube::Client, source: Source, dir: PathBuf) -> tokio::task::JoinHandle<()> {
    spawn_lagging(client, source, dir, Duration::ZERO)
}

/// As [`spawn`], but each change lands `lag` after the API server had it:
/// a kubelet on its sync loop (a minute by default, more under load) is
/// that late, and a test that assumes less proves nothing about it. The
/// first version lands at once, as a pod's volumes are filled before its
/// containers start.
pub fn spawn_lagging(client: kube::Client, source: Source, dir: PathBuf, lag: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        match source {
            Source::Secret { namespace, name } => {
                let api: Api<Secret> = Api::namespaced(client, &namespace);
                mirror(api, &name, &dir, lag, |s: &Secret| {
                    s.data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect()
                })
                .await
            }
            Source::ConfigMap { namespace, name } => {
                let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
                mirror(api, &name, &dir, lag, |c: &ConfigMap| {
                    c.data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect()
                })
                .await
            }
        }
    })
}

async fn mirror<K>(api: Api<K>, name: &str, dir: &Path, lag: Duration, files: impl Fn(&K) -> BTreeMap<String, Vec<u8>>)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher::watcher(api, config).boxed();
    let mut last: Option<BTreeMap<String, Vec<u8>>> = None;
    // Versions wait here for their delivery time, in order; the writer ends
    // with this task (aborting it drops the sender).
    let (versions, mut due) = tokio::sync::mpsc::unbounded_channel::<(Instant, BTreeMap<String, Vec<u8>>)>();
    let (writer_dir, writer_name) = (dir.to_path_buf(), name.to_owned());
    tokio::spawn(async move {
        while let Some((at, files)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            let entries: Vec<(&str, &[u8])> = files.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            if let Err(e) = sigil_runtime::volume::write_atomically(&writer_dir, &entries) {
                eprintln!("mount {writer_name}: cannot write {}: {e}", writer_dir.display());
            }
        }
    });
    while let Some(event) = events.next().await {
        let object = match event {
            Ok(Event::Apply(o) | Event::InitApply(o)) => o,
            Ok(_) => continue,
            Err(e) => {
                eprintln!("mount {name}: watch error: {e}");
                continue;
            }
        };
        let current = files(&object);
        if last.as_ref() == Some(&current) {
            continue;
        }
        let at = if last.is_none() { Instant::now() } else { Instant::now() + lag };
        if versions.send((at, current.clone())).is_err() {
            return;
        }
        last = Some(current);
    }
}
