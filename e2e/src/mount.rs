//! A stand-in for the kubelet's Secret and ConfigMap volumes, for processes
//! run outside a pod (tests and `make demo`): it watches one object and
//! rewrites a directory with its data through
//! [`sigil_runtime::volume::write_atomically`], the same `..data` swap a pod
//! sees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    tokio::spawn(async move {
        match source {
            Source::Secret { namespace, name } => {
                let api: Api<Secret> = Api::namespaced(client, &namespace);
                mirror(api, &name, &dir, |s: &Secret| {
                    s.data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect()
                })
                .await
            }
            Source::ConfigMap { namespace, name } => {
                let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
                mirror(api, &name, &dir, |c: &ConfigMap| {
                    c.data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect()
                })
                .await
            }
        }
    })
}

async fn mirror<K>(api: Api<K>, name: &str, dir: &Path, files: impl Fn(&K) -> BTreeMap<String, Vec<u8>>)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher::watcher(api, config).boxed();
    let mut last: Option<BTreeMap<String, Vec<u8>>> = None;
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
        let entries: Vec<(&str, &[u8])> = current.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        if let Err(e) = sigil_runtime::volume::write_atomically(dir, &entries) {
            eprintln!("mount {name}: cannot write {}: {e}", dir.display());
            continue;
        }
        last = Some(current);
    }
}
