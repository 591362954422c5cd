//! Load generator for `bench/operator/run.sh`: times SigningKeys from create
//! to `Ready=True` against a running operator, beside a baseline of the same
//! API round trip without the operator (create a ConfigMap, see it in a watch).
//!
//!   bench latency NAMESPACE ALGORITHM COUNT   # one at a time: median, p90, max
//!   bench converge NAMESPACE ALGORITHM COUNT  # all at once: time until all Ready
//!   bench distribute NAMESPACE ALGORITHM COUNT  # one SigningKey copied into COUNT
//!       new namespaces: time until every copy exists, then until a rotation's
//!       next key is in every copy (needs the operator in cluster scope)
//!
//! Uses $KUBECONFIG. Prints one JSON object per run on stdout.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::runtime::wait::await_condition;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use sigil_api::signing_key::SigningKey;

const LIMIT: Duration = Duration::from_secs(300);

fn ready(sk: Option<&SigningKey>) -> bool {
    sk.and_then(|sk| sk.status.as_ref())
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn signing_key(name: &str, algorithm: &str) -> SigningKey {
    let spec = serde_json::from_value(json!({"algorithm": algorithm})).expect("spec");
    SigningKey::new(name, spec)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

fn summary(mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    json!({"n": ms.len(), "median_ms": percentile(&ms, 0.5), "p90_ms": percentile(&ms, 0.9),
           "max_ms": ms.last().copied().unwrap_or(f64::NAN)})
}

async fn latency(client: Client, ns: &str, algorithm: &str, count: usize) -> serde_json::Value {
    let sks: Api<SigningKey> = Api::namespaced(client.clone(), ns);
    let cms: Api<ConfigMap> = Api::namespaced(client, ns);
    let (mut operator, mut baseline) = (Vec::new(), Vec::new());
    let tag = algorithm.to_lowercase();
    for i in 0..count {
        // Baseline: the API server's create + watch round trip, nothing else.
        let name = format!("baseline-{tag}-{i}");
        let start = Instant::now();
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name}})).expect("cm");
        cms.create(&PostParams::default(), &cm).await.expect("create ConfigMap");
        let seen = await_condition(cms.clone(), &name, |cm: Option<&ConfigMap>| cm.is_some());
        tokio::time::timeout(LIMIT, seen).await.expect("baseline in time").expect("watch");
        baseline.push(start.elapsed().as_secs_f64() * 1000.0);

        let name = format!("lat-{tag}-{i}");
        let start = Instant::now();
        sks.create(&PostParams::default(), &signing_key(&name, algorithm)).await.expect("create SigningKey");
        let done = await_condition(sks.clone(), &name, ready);
        tokio::time::timeout(LIMIT, done).await.expect("Ready in time").expect("watch");
        operator.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    let (op, base) = (summary(operator), summary(baseline));
    let ratio = op["median_ms"].as_f64().unwrap_or(f64::NAN) / base["median_ms"].as_f64().unwrap_or(f64::NAN);
    json!({"run": "latency", "algorithm": algorithm, "ready": op, "baseline_create_and_watch": base,
           "median_ratio_to_baseline": ratio})
}

async fn converge(client: Client, ns: &str, algorithm: &str, count: usize) -> serde_json::Value {
    let sks: Api<SigningKey> = Api::namespaced(client, ns);
    let tag = algorithm.to_lowercase();
    let start = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let (sks, sk) = (sks.clone(), signing_key(&format!("conv-{tag}-{i}"), algorithm));
            async move { sks.create(&PostParams::default(), &sk).await }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .expect("create SigningKeys");
    let created = start.elapsed();
    let prefix = format!("conv-{tag}-");
    let mut ready_names = std::collections::BTreeSet::new();
    let mut stream = watcher(sks.clone(), watcher::Config::default()).applied_objects().boxed();
    let all_ready = async {
        while let Some(sk) = stream.try_next().await.expect("watch") {
            if sk.name_any().starts_with(&prefix) && ready(Some(&sk)) {
                ready_names.insert(sk.name_any());
                if ready_names.len() == count {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(LIMIT, all_ready).await.expect("all Ready in time");
    json!({"run": "converge", "algorithm": algorithm, "count": count,
           "created_s": created.as_secs_f64(), "all_ready_s": start.elapsed().as_secs_f64()})
}

/// Status counts of `name`'s copies: (selected, synced).
async fn copies(sks: &Api<SigningKey>, name: &str) -> (u32, u32) {
    let d = sks.get(name).await.ok().and_then(|sk| sk.status?.distribution);
    d.map_or((0, 0), |d| (d.selected_namespaces, d.synced_namespaces))
}

/// Kids published in the copy in namespace `ns`.
async fn copy_kids(client: &Client, ns: &str, name: &str) -> Vec<String> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns).get_opt(name).await.ok().flatten();
    let text = cm.and_then(|cm| cm.data?.remove(sigil_api::contract::JWKS)).unwrap_or_default();
    serde_json::from_str::<sigil_api::JwkSet>(&text)
        .map(|s| s.keys.into_iter().map(|k| k.kid).collect())
        .unwrap_or_default()
}

async fn distribute(client: Client, ns: &str, algorithm: &str, count: usize) -> serde_json::Value {
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    use kube::api::{Patch, PatchParams};
    let label = "bench.sigil.dev/jwks";
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let targets: Vec<String> = (0..count).map(|i| format!("{ns}-copy-{i}")).collect();
    futures::stream::iter(targets.clone())
        .map(|name| {
            let namespaces = namespaces.clone();
            let body: Namespace = serde_json::from_value(json!({"metadata": {"name": name, "labels": {label: "yes"}}}))
                .expect("namespace");
            async move { namespaces.create(&PostParams::default(), &body).await }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .expect("create namespaces");
    let sks: Api<SigningKey> = Api::namespaced(client.clone(), ns);
    let spec = serde_json::from_value(json!({
        "algorithm": algorithm,
        "distribution": {"namespaceSelector": {"matchLabels": {label: "yes"}}},
    }))
    .expect("spec");
    let name = "dist";
    let start = Instant::now();
    sks.create(&PostParams::default(), &SigningKey::new(name, spec)).await.expect("create SigningKey");
    let synced = async {
        while copies(&sks, name).await != (count as u32, count as u32) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(LIMIT, synced).await.expect("all copies in time");
    let all_copies = start.elapsed();

    // A manual rotation: from the request until the next key is in every copy.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let rotate = json!({"metadata": {"annotations": {sigil_api::contract::ANNOTATION_ROTATE: "bench"}}});
    let start = Instant::now();
    sks.patch(name, &PatchParams::default(), &Patch::Merge(&rotate)).await.expect("rotate");
    let next = async {
        loop {
            let secret = secrets.get(&sigil_api::contract::default_secret_name(name)).await.expect("secret");
            if let Some(kid) = secret.data.and_then(|mut d| d.remove(sigil_api::contract::NEXT_KID)) {
                return String::from_utf8_lossy(&kid.0).into_owned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let next = tokio::time::timeout(LIMIT, next).await.expect("next key in time");
    let copy_name = sigil_api::contract::default_jwks_config_map_name(name);
    let everywhere = async {
        // Every copy read in each round (32 at a time): the figure is the end
        // of the first round that found the key everywhere.
        loop {
            let present: Vec<bool> = futures::stream::iter(&targets)
                .map(|target| {
                    let (client, copy_name, next) = (client.clone(), copy_name.clone(), next.clone());
                    async move { copy_kids(&client, target, &copy_name).await.contains(&next) }
                })
                .buffer_unordered(32)
                .collect()
                .await;
            if present.iter().all(|p| *p) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(LIMIT, everywhere).await.expect("rotation in every copy in time");
    json!({"run": "distribute", "algorithm": algorithm, "namespaces": count,
           "all_copies_s": all_copies.as_secs_f64(), "rotation_in_every_copy_s": start.elapsed().as_secs_f64()})
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, ns, algorithm, count] = args.as_slice() else {
        eprintln!("usage: bench latency|converge|distribute NAMESPACE ALGORITHM COUNT");
        std::process::exit(2);
    };
    let count: usize = count.parse().expect("COUNT is a number");
    let client = Client::try_default().await.expect("kubeconfig");
    let result = match mode.as_str() {
        "latency" => latency(client, ns, algorithm, count).await,
        "converge" => converge(client, ns, algorithm, count).await,
        "distribute" => distribute(client, ns, algorithm, count).await,
        other => panic!("unknown mode {other}"),
    };
    println!("{result}");
}
