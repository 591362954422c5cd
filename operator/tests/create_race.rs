//! Reconcile, in-process, against a real kube-apiserver and etcd: a Secret or
//! ConfigMap someone creates between the operator's read and its write is
//! reported as a conflict and left exactly as it was made. The race is made
//! certain, not likely: the context's `before_create` hook creates the
//! foreign object right before the operator's own create is sent.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, ResourceExt};
use serde_json::json;
use sigil_api::contract;
use sigil_api::signing_key::SigningKey;
use sigil_e2e::ControlPlane;
use sigil_operator::fence::Fence;
use sigil_operator::metrics::Metrics;
use sigil_operator::reconcile::{self, BeforeCreate, Context};

fn context(client: Client, before_create: Option<BeforeCreate>) -> Arc<Context> {
    let reporter = Reporter { controller: contract::MANAGED_BY.to_owned(), instance: None };
    Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        metrics: Metrics::default(),
        now: reconcile::wall_clock,
        fence: Fence::open(),
        before_create,
        limits: sigil_operator::Limits::default(),
        cluster_scope: true,
    })
}

/// A fresh namespace with a SigningKey `api`, as the API server stored it.
async fn signing_key(cluster: &ControlPlane, client: &Client, prefix: &str) -> (String, SigningKey) {
    let ns = cluster.namespace(prefix);
    let mut sk = SigningKey::new("api", serde_json::from_value(json!({"algorithm": "ES256"})).expect("spec"));
    sk.metadata.namespace = Some(ns.clone());
    let api: Api<SigningKey> = Api::namespaced(client.clone(), &ns);
    let sk = api.create(&PostParams::default(), &sk).await.expect("create SigningKey");
    (ns, sk)
}

fn ready(sk: &SigningKey) -> Option<(String, String)> {
    let c = sk.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone()))
}

/// A hook that creates `foreign` (named like the operator's object of `kind`)
/// just before the operator's create of that kind, and keeps it as stored.
fn race<K>(api: Api<K>, kind: &'static str, foreign: K) -> (BeforeCreate, Arc<Mutex<Option<K>>>)
where
    K: kube::Resource
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let stored = Arc::new(Mutex::new(None));
    let keep = stored.clone();
    let hook: BeforeCreate = Arc::new(move |k: &str, name: &str| {
        let (api, foreign, keep) = (api.clone(), foreign.clone(), keep.clone());
        let ours = k == kind && name == foreign.name_any();
        Box::pin(async move {
            if ours && keep.lock().expect("lock").is_none() {
                let created = api.create(&PostParams::default(), &foreign).await.expect("the racing create");
                *keep.lock().expect("lock") = Some(created);
            }
        })
    });
    (hook, stored)
}

/// What makes an object someone else's, still: nothing of ours was added.
fn untouched<K: kube::Resource>(now: &K, made: &K) {
    assert_eq!(now.resource_version(), made.resource_version(), "the foreign object was written to");
    assert!(now.meta().owner_references.is_none(), "an ownerReference was added");
    assert!(now.meta().labels.is_none(), "labels were added");
    let managers: Vec<_> = now.meta().managed_fields.iter().flatten().filter_map(|e| e.manager.clone()).collect();
    assert!(!managers.iter().any(|m| m == contract::FIELD_MANAGER), "sigil-operator manages fields: {managers:?}");
}

/// The Warning the SigningKey got for the conflict.
async fn conflict_warning(client: &Client, ns: &str) -> Event {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = events.list(&ListParams::default()).await.expect("events");
    let found = list.items.into_iter().find(|e| {
        e.reason.as_deref() == Some("Conflict") && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("api")
    });
    let event = found.expect("a Conflict event about SigningKey api");
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_created_between_read_and_write_is_reported_never_taken_over() {
    let cluster = ControlPlane::shared();
    let client = cluster.client().await;
    let (ns, sk) = signing_key(cluster, &client, "race-secret").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": {"name": contract::default_secret_name("api"), "namespace": ns},
        "stringData": {"password": "hunter2"}
    }))
    .expect("secret");
    let (hook, made) = race(secrets.clone(), "Secret", foreign);

    reconcile::reconcile(Arc::new(sk), context(client.clone(), Some(hook))).await.expect("reconcile");

    let made = made.lock().expect("lock").clone().expect("the hook ran before the operator's create");
    let now = secrets.get(&made.name_any()).await.expect("the foreign Secret");
    untouched(&now, &made);
    assert_eq!(now.data, made.data, "its data changed");
    let signing_keys: Api<SigningKey> = Api::namespaced(client.clone(), &ns);
    let sk = signing_keys.get("api").await.expect("SigningKey");
    assert_eq!(ready(&sk), Some(("False".into(), "SecretConflict".into())));
    let note = conflict_warning(&client, &ns).await.note.unwrap_or_default();
    assert!(note.contains(&made.name_any()), "{note}");
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let jwks = contract::default_jwks_config_map_name("api");
    assert!(config_maps.get_opt(&jwks).await.expect("get").is_none(), "a key was published for it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_map_created_between_read_and_write_is_reported_never_taken_over() {
    let cluster = ControlPlane::shared();
    let client = cluster.client().await;
    let (ns, sk) = signing_key(cluster, &client, "race-cm").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let foreign: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": contract::default_jwks_config_map_name("api"), "namespace": ns},
        "data": {"jwks.json": "{\"keys\":[]}", "owner": "team-b"}
    }))
    .expect("config map");
    let (hook, made) = race(config_maps.clone(), "ConfigMap", foreign);

    reconcile::reconcile(Arc::new(sk), context(client.clone(), Some(hook))).await.expect("reconcile");

    let made = made.lock().expect("lock").clone().expect("the hook ran before the operator's create");
    let now = config_maps.get(&made.name_any()).await.expect("the foreign ConfigMap");
    untouched(&now, &made);
    assert_eq!(now.data, made.data, "its data changed");
    let signing_keys: Api<SigningKey> = Api::namespaced(client.clone(), &ns);
    let sk = signing_keys.get("api").await.expect("SigningKey");
    assert_eq!(ready(&sk), Some(("False".into(), "ConfigMapConflict".into())));
    conflict_warning(&client, &ns).await;
}

/// Without a race, the objects a create made are then changed by apply, and
/// apply can remove what the create wrote: after activation the Secret holds
/// only the active key, not a stale `next.pem`, and its fields belong to our
/// apply manager alone. A second reconcile writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_objects_are_then_fully_owned_by_apply() {
    let cluster = ControlPlane::shared();
    let client = cluster.client().await;
    let (ns, sk) = signing_key(cluster, &client, "create-apply").await;
    let ctx = context(client.clone(), None);
    reconcile::reconcile(Arc::new(sk), ctx.clone()).await.expect("reconcile");

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let signing_keys: Api<SigningKey> = Api::namespaced(client.clone(), &ns);
    let secret = secrets.get(&contract::default_secret_name("api")).await.expect("Secret");
    let config_map = config_maps.get(&contract::default_jwks_config_map_name("api")).await.expect("ConfigMap");
    let sk = signing_keys.get("api").await.expect("SigningKey");
    assert_eq!(ready(&sk), Some(("True".into(), "KeyActive".into())));
    let data = secret.data.clone().unwrap_or_default();
    assert!(data.contains_key(contract::PRIVATE_KEY) && data.contains_key(contract::KID));
    for next in [contract::NEXT_PRIVATE_KEY, contract::NEXT_KID, contract::NEXT_ALG] {
        assert!(!data.contains_key(next), "the create's {next} stayed after activation");
    }
    let entries = |meta: &kube::api::ObjectMeta| -> Vec<(String, String)> {
        meta.managed_fields
            .iter()
            .flatten()
            .map(|e| (e.manager.clone().unwrap_or_default(), e.operation.clone().unwrap_or_default()))
            .collect()
    };
    // The Secret was written again after its create (records, activation); the
    // ConfigMap, written once, keeps its create's entry until its next write.
    assert_eq!(entries(&secret.metadata), [(contract::FIELD_MANAGER.to_owned(), "Apply".to_owned())]);
    let config_map_managers = entries(&config_map.metadata);
    assert!(config_map_managers.iter().all(|(m, _)| m == contract::FIELD_MANAGER), "{config_map_managers:?}");

    reconcile::reconcile(Arc::new(sk), ctx).await.expect("second reconcile");
    let again = secrets.get(&secret.name_any()).await.expect("Secret");
    assert_eq!(again.resource_version(), secret.resource_version(), "an up-to-date Secret was written");
    let again = config_maps.get(&config_map.name_any()).await.expect("ConfigMap");
    assert_eq!(again.resource_version(), config_map.resource_version(), "an up-to-date ConfigMap was written");
}
