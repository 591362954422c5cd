//! JWKS copies in other namespaces (`spec.distribution`), on a real API
//! server with the operator in cluster scope and the chart's RBAC: namespaces
//! selected, created, relabelled and deleted; a foreign ConfigMap of the
//! copy's name left alone; an edited copy restored; a rotation in every copy
//! before the new key signs; copies removed with the SigningKey.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use sigil_api::contract;
use sigil_api::signing_key::SigningKey;
use sigil_e2e::stack::start_operator;
use sigil_e2e::{ControlPlane, eventually};

const COPY: &str = "api-jwks";
const LABEL: &str = "sigil-test/jwks";

async fn labelled_namespace(cp: &ControlPlane, client: &Client, prefix: &str, wanted: bool) -> String {
    let ns = cp.namespace(prefix);
    let labels = json!({"metadata": {"labels": {LABEL: if wanted { "yes" } else { "no" }}}});
    Api::<Namespace>::all(client.clone())
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .expect("label");
    ns
}

async fn relabel(client: &Client, ns: &str, wanted: bool) {
    let labels = json!({"metadata": {"labels": {LABEL: if wanted { "yes" } else { "no" }}}});
    Api::<Namespace>::all(client.clone())
        .patch(ns, &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .expect("label");
}

async fn data_in(client: &Client, ns: &str, name: &str) -> Option<BTreeMap<String, String>> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns).get_opt(name).await.expect("get")?;
    Some(cm.data.unwrap_or_default())
}

fn kids(data: &BTreeMap<String, String>) -> Vec<String> {
    let text = data.get(contract::JWKS).map(String::as_str).unwrap_or("{}");
    serde_json::from_str::<sigil_api::JwkSet>(text)
        .map(|s| s.keys.into_iter().map(|k| k.kid).collect())
        .unwrap_or_default()
}

/// The first of `namespaces` whose copy lacks `kid`.
async fn missing_in(client: &Client, namespaces: &[String], kid: &str) -> Option<String> {
    for ns in namespaces {
        let copy = data_in(client, ns, COPY).await.unwrap_or_default();
        if !kids(&copy).iter().any(|k| k == kid) {
            return Some(ns.clone());
        }
    }
    None
}

fn condition(sk: &SigningKey, type_: &str) -> Option<(String, String)> {
    let c = sk.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

#[tokio::test]
async fn copies_follow_the_selector_the_source_and_the_signing_key() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let home = cp.namespace("dist-home");
    let logs = cp.dir.join("stacks").join(&home).join("logs");
    let _operator = start_operator(&cp.operator_kubeconfig(), &logs);

    let a = labelled_namespace(cp, &client, "dist-a", true).await;
    let b = labelled_namespace(cp, &client, "dist-b", true).await;
    let off = labelled_namespace(cp, &client, "dist-off", false).await;
    let taken = labelled_namespace(cp, &client, "dist-taken", true).await;
    // Someone else's ConfigMap of the copy's name: never touched.
    let foreign: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": COPY}, "data": {"jwks.json": "{\"keys\":[]}", "owner": "someone else"},
    }))
    .expect("configmap");
    Api::<ConfigMap>::namespaced(client.clone(), &taken)
        .create(&PostParams::default(), &foreign)
        .await
        .expect("create");

    let keys: Api<SigningKey> = Api::namespaced(client.clone(), &home);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &home);
    // CEL refuses a selector the API server would not understand, with a message.
    let bad: SigningKey = serde_json::from_value(json!({
        "apiVersion": "sigil.dev/v1alpha1", "kind": "SigningKey", "metadata": {"name": "bad"},
        "spec": {"distribution": {"namespaceSelector": {"matchExpressions": [{"key": "x", "operator": "Exists", "values": ["y"]}]}}},
    }))
    .expect("SigningKey");
    let refused = keys.create(&PostParams::default(), &bad).await.expect_err("refused");
    assert!(refused.to_string().contains("Exists and DoesNotExist take none"), "{refused}");

    let sk: SigningKey = serde_json::from_value(json!({
        "apiVersion": "sigil.dev/v1alpha1", "kind": "SigningKey", "metadata": {"name": "api"},
        "spec": {"algorithm": "ES256", "maxTokenLifetime": "1s",
                 "rotation": {"every": "1h", "prePublish": "8s", "retain": "2m"},
                 "distribution": {"namespaceSelector": {"matchLabels": {LABEL: "yes"}}}},
    }))
    .expect("SigningKey");
    keys.create(&PostParams::default(), &sk).await.expect("create");

    let source = eventually("copies in the selected namespaces", Duration::from_secs(60), || async {
        let source = data_in(&client, &home, COPY).await?;
        let in_a = data_in(&client, &a, COPY).await?;
        let in_b = data_in(&client, &b, COPY).await?;
        (!kids(&source).is_empty() && in_a == source && in_b == source).then_some(source)
    })
    .await;
    assert_eq!(data_in(&client, &off, COPY).await, None, "an unselected namespace gets nothing");
    let untouched = data_in(&client, &taken, COPY).await.expect("foreign");
    assert_eq!(untouched.get("owner").map(String::as_str), Some("someone else"));
    let sk = eventually("the conflict in status", Duration::from_secs(30), || async {
        let sk = keys.get("api").await.ok()?;
        (condition(&sk, "Distributed")? == ("False".into(), "Conflict".into())).then_some(sk)
    })
    .await;
    let status = sk.status.as_ref().and_then(|s| s.distribution.clone()).expect("distribution status");
    assert_eq!((status.selected_namespaces, status.synced_namespaces), (3, 2));
    assert_eq!(status.conflicts, std::slice::from_ref(&taken));
    assert!(sk.finalizers().iter().any(|f| f == "sigil.dev/jwks-copies"), "{:?}", sk.finalizers());
    let home_copy = Api::<ConfigMap>::namespaced(client.clone(), &home).get(COPY).await.expect("source");
    assert!(home_copy.labels().get("sigil.dev/source-uid").is_none(), "the source is not a copy of itself");

    // The foreign ConfigMap goes: the namespace gets its copy.
    Api::<ConfigMap>::namespaced(client.clone(), &taken).delete(COPY, &DeleteParams::default()).await.expect("delete");
    eventually("a copy where the foreign ConfigMap was", Duration::from_secs(90), || async {
        let copy = data_in(&client, &taken, COPY).await?;
        let sk = keys.get("api").await.ok()?;
        (copy == source && condition(&sk, "Distributed")? == ("True".into(), "InSync".into())).then_some(())
    })
    .await;

    // A namespace created with the label gets a copy; one relabelled loses it.
    let late = labelled_namespace(cp, &client, "dist-late", true).await;
    relabel(&client, &a, false).await;
    eventually("copies follow namespace labels", Duration::from_secs(30), || async {
        let in_late = data_in(&client, &late, COPY).await?;
        (in_late == source && data_in(&client, &a, COPY).await.is_none()).then_some(())
    })
    .await;

    // A planted key in a copy is rewritten from the source.
    let planted = json!({"data": {"jwks.json": "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"planted\",\"k\":\"AA\"}]}"}});
    Api::<ConfigMap>::namespaced(client.clone(), &b)
        .patch(COPY, &PatchParams::default(), &Patch::Merge(&planted))
        .await
        .expect("plant");
    eventually("the edited copy restored", Duration::from_secs(30), || async {
        (data_in(&client, &b, COPY).await? == source).then_some(())
    })
    .await;

    // A deleted namespace is no longer counted.
    Api::<Namespace>::all(client.clone()).delete(&late, &DeleteParams::default()).await.expect("delete namespace");
    eventually("the deleted namespace dropped from status", Duration::from_secs(60), || async {
        let sk = keys.get("api").await.ok()?;
        let d = sk.status?.distribution?;
        (d.selected_namespaces == 2 && d.synced_namespaces == 2).then_some(())
    })
    .await;

    // A rotation: at every moment, the key that signs is in every copy.
    let copies = [b.clone(), taken.clone()];
    let first = eventually("the active kid", Duration::from_secs(10), || async {
        let s = secrets.get(&contract::default_secret_name("api")).await.ok()?;
        Some(String::from_utf8_lossy(&s.data?.get(contract::KID)?.0).into_owned())
    })
    .await;
    let rotate = json!({"metadata": {"annotations": {contract::ANNOTATION_ROTATE: "now"}}});
    keys.patch("api", &PatchParams::default(), &Patch::Merge(&rotate)).await.expect("rotate");
    let start = Instant::now();
    let mut seen_next_everywhere = false;
    loop {
        assert!(start.elapsed() < Duration::from_secs(60), "no rotation within 60 s");
        let s = secrets.get(&contract::default_secret_name("api")).await.expect("secret");
        let data = s.data.unwrap_or_default();
        let active = String::from_utf8_lossy(&data.get(contract::KID).expect("kid").0).into_owned();
        let next = data.get(contract::NEXT_KID).map(|v| String::from_utf8_lossy(&v.0).into_owned());
        if let Some(ns) = missing_in(&client, &copies, &active).await {
            panic!("key {active} signs but the copy in {ns} lacks it");
        }
        if let Some(next) = next {
            seen_next_everywhere |= missing_in(&client, &copies, &next).await.is_none();
        }
        if active != first {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen_next_everywhere, "the next key was never seen in every copy before it signed");

    // Deleting the SigningKey removes its copies, then the finalizer lets it go.
    keys.delete("api", &DeleteParams::default()).await.expect("delete");
    eventually("copies removed and the SigningKey gone", Duration::from_secs(60), || async {
        let gone = keys.get_opt("api").await.ok()?.is_none();
        let none_left = data_in(&client, &b, COPY).await.is_none() && data_in(&client, &taken, COPY).await.is_none();
        (gone && none_left).then_some(())
    })
    .await;
}
