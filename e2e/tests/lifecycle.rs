//! A key's whole life on a real API server, on the operator's schedule (no
//! manual trigger): published before it signs, activated on time, retired,
//! kept for `retain`, removed. Mid-rotation the operator is killed and
//! `.status` is wiped; the restarted operator rebuilds everything from the
//! Secret and ConfigMap and finishes the rotation on time.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sigil_api::contract;
use sigil_e2e::stack::{signing_key_resource, start_operator, wait_ready};
use sigil_e2e::{ControlPlane, eventually};

fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    secret.data.as_ref()?.get(key).map(|v| String::from_utf8_lossy(&v.0).trim().to_owned())
}

fn published(cm: &ConfigMap) -> Vec<String> {
    let text = cm.data.as_ref().and_then(|d| d.get(contract::JWKS)).cloned().unwrap_or_default();
    serde_json::from_str::<sigil_api::JwkSet>(&text)
        .map(|s| s.keys.into_iter().map(|k| k.kid).collect())
        .unwrap_or_default()
}

fn time(v: &Value) -> Timestamp {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not a timestamp: {v}"))
}

fn key_record<'a>(sk: &'a DynamicObject, kid: &str) -> &'a Value {
    sk.data["status"]["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["keyId"] == kid))
        .unwrap_or_else(|| panic!("status has no record of {kid}: {}", sk.data["status"]))
}

#[tokio::test]
async fn scheduled_rotation_survives_a_crash_and_a_lost_status() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("lifecycle");
    let client = cp.client().await;
    let logs = cp.dir.join("stacks").join(&ns).join("logs");
    let mut operator = start_operator(&cp.operator_kubeconfig(), &logs);

    let keys: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &signing_key_resource());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let sk: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "sigil.dev/v1alpha1", "kind": "SigningKey", "metadata": {"name": "sched"},
        "spec": {"algorithm": "EdDSA", "maxTokenLifetime": "1s",
                 "rotation": {"every": "1m", "prePublish": "20s", "retain": "81s"}},
    }))
    .expect("SigningKey");
    keys.create(&PostParams::default(), &sk).await.expect("create");
    let ready = wait_ready(&keys, "sched", Duration::from_secs(60)).await;
    let kid1 = ready.data["status"]["activeKeyId"].as_str().expect("activeKeyId").to_owned();
    let activated1 = time(&key_record(&ready, &kid1)["activatedAt"]);
    let due = time(&ready.data["status"]["nextRotationTime"]);
    assert_eq!(due, activated1 + Duration::from_secs(60), "the next rotation is due `every` after activation");

    // At activation + every - prePublish the next key is stored and published, not yet signing.
    let kid2 = eventually("the pre-published next key", Duration::from_secs(75), || async {
        let secret = secrets.get(&contract::default_secret_name("sched")).await.ok()?;
        secret_text(&secret, contract::NEXT_KID)
    })
    .await;
    let cm = eventually("the next key in the JWKS", Duration::from_secs(10), || async {
        let cm = config_maps.get(&contract::default_jwks_config_map_name("sched")).await.ok()?;
        published(&cm).contains(&kid2).then_some(cm)
    })
    .await;
    assert!(published(&cm).contains(&kid1), "the active key stays published");
    let secret = secrets.get(&contract::default_secret_name("sched")).await.expect("secret");
    assert_eq!(secret_text(&secret, contract::KID).as_deref(), Some(kid1.as_str()), "still signing with the old key");
    let since_activation = Timestamp::now().duration_since(activated1);
    assert!(since_activation >= jiff::SignedDuration::from_secs(39), "pre-published too early: {since_activation}");

    // Crash in the pre-publish window and lose the status.
    operator.kill();
    let wiped = Patch::Merge(json!({"status": null}));
    keys.patch_status("sched", &PatchParams::default(), &wiped).await.expect("wipe status");
    assert!(keys.get("sched").await.expect("get").data.get("status").is_none_or(Value::is_null));
    let _operator = start_operator(&cp.operator_kubeconfig(), &logs);

    // The restarted operator activates the next key on schedule and rebuilds the history.
    let activated = eventually("the next key's activation", Duration::from_secs(60), || async {
        let sk = keys.get("sched").await.ok()?;
        (sk.data["status"]["activeKeyId"] == kid2.as_str()).then_some(sk)
    })
    .await;
    let secret = secrets.get(&contract::default_secret_name("sched")).await.expect("secret");
    assert_eq!(secret_text(&secret, contract::KID).as_deref(), Some(kid2.as_str()));
    assert!(secret_text(&secret, contract::NEXT_KID).is_none(), "next.* entries go once activated");
    let next = key_record(&activated, &kid2);
    let (published2, activated2) = (time(&next["publishedAt"]), time(&next["activatedAt"]));
    assert!(
        activated2.duration_since(published2) >= jiff::SignedDuration::from_secs(20),
        "published >= prePublish before signing"
    );
    assert!(activated2 >= due, "not activated before it was due");
    let old = key_record(&activated, &kid1);
    assert_eq!(old["state"], "Retired");
    assert_eq!(time(&old["activatedAt"]), activated1, "the old key's history survived the lost status");
    let remove_at = time(&old["removeAt"]);
    assert_eq!(remove_at, time(&old["retiredAt"]) + Duration::from_secs(81));

    // Each key has its own events: a second KeyGenerated is not merged into
    // the first one's series (which would keep showing the first key's id).
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    let notes = eventually("a KeyGenerated event for each key", Duration::from_secs(20), || async {
        let list = events.list(&Default::default()).await.ok()?;
        let notes: Vec<String> = list
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("KeyGenerated"))
            .filter_map(|e| e.note)
            .collect();
        (notes.iter().any(|n| n.contains(&kid1)) && notes.iter().any(|n| n.contains(&kid2))).then_some(notes)
    })
    .await;
    assert_eq!(notes.len(), 2, "{notes:?}");

    // The retired key leaves the JWKS once retain has passed, not before.
    eventually("the retired key's removal", Duration::from_secs(120), || async {
        let cm = config_maps.get(&contract::default_jwks_config_map_name("sched")).await.ok()?;
        (!published(&cm).contains(&kid1)).then_some(())
    })
    .await;
    assert!(Timestamp::now() >= remove_at, "removed before retain had passed");
    // The status is written after the objects it describes (and after that
    // step's events), so it may trail the ConfigMap by a round trip or two.
    eventually("status forgets the removed key", Duration::from_secs(10), || async {
        let sk = keys.get("sched").await.ok()?;
        let keys = sk.data["status"]["keys"].as_array()?;
        keys.iter().all(|k| k["keyId"] != kid1.as_str()).then_some(())
    })
    .await;

    // Deleting the SigningKey garbage-collects what it owned.
    keys.delete("sched", &DeleteParams::foreground()).await.expect("delete");
    eventually("garbage collection", Duration::from_secs(60), || async {
        let secret = secrets.get_opt(&contract::default_secret_name("sched")).await.ok()?;
        let cm = config_maps.get_opt(&contract::default_jwks_config_map_name("sched")).await.ok()?;
        (secret.is_none() && cm.is_none()).then_some(())
    })
    .await;
}
