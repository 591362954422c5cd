//! The whole flow, as a pod would see it: the operator keeps the keys, the
//! kubelet (our mirror) swaps the mounted files, the issuer signs and the
//! sidecar verifies, through a rotation, the retirement and removal of the
//! old key, and a revocation; and rotations under load while the sidecar's
//! copy of the JWKS lags as a kubelet's does.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Secret};
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::json;
use sigil_e2e::pods::{Traffic, Urls};
use sigil_e2e::stack::{self, Stack};
use sigil_e2e::{ControlPlane, eventually};

/// The `kid` in a compact JWS's header.
fn kid_of(token: &str) -> String {
    let header = token.split('.').next().expect("header segment");
    let header: serde_json::Value =
        serde_json::from_slice(&sigil_api::jwk::b64_decode(header).expect("base64url")).expect("JSON header");
    header["kid"].as_str().expect("kid").to_owned()
}

#[tokio::test]
async fn tokens_survive_rotation_and_die_with_their_key() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("flow");
    let client = cp.client().await;
    // Tokens live at most 20s, so retain is 20s + prePublish + 1m of clock skew.
    let spec = json!({"algorithm": "ES256", "maxTokenLifetime": "20s",
                      "rotation": {"every": "1h", "prePublish": "3s", "retain": "83s"}});
    let mut stack = Stack::start(cp, &ns, "api", spec).await;
    let keys: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &stack::signing_key_resource());

    // A token works; no token and a forged token do not.
    let first = stack.token().await;
    let kid1 = kid_of(&first);
    let ok = stack.call("/hello", Some(&first)).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["clientId"], stack::CLIENT_ID);
    assert_eq!(ok.json()["authorizationForwarded"], false);
    let none = stack.call("/hello", None).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate"), Some("Bearer realm=\"sigil\""));
    let mut forged = first.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    let forged = stack.call("/hello", Some(&forged)).await;
    assert_eq!(forged.status, 401);
    assert!(forged.header("www-authenticate").unwrap_or_default().contains("error=\"invalid_token\""));

    // The issuer caps tokens at maxTokenLifetime (20s), so the token that
    // must outlive its key's activation period is taken just before rotating.
    let last_of_kid1 = stack.token().await;
    assert_eq!(kid_of(&last_of_kid1), kid1);

    // Manual rotation: the next key is published first, then activated.
    keys.patch(
        "api",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"sigil.dev/rotate": "first"}}})),
    )
    .await
    .expect("annotate");
    let kid2 = eventually("a second published key", Duration::from_secs(30), || async {
        let kids = stack.published_kids(&client).await;
        kids.into_iter().find(|k| *k != kid1)
    })
    .await;
    let second = eventually("the issuer signing with the new key", Duration::from_secs(60), || async {
        let t = stack.token().await;
        (kid_of(&t) == kid2).then_some(t)
    })
    .await;
    assert_eq!(stack.call("/hello", Some(&second)).await.status, 200);
    // The old token still verifies while its key is retained.
    assert!(stack.published_kids(&client).await.contains(&kid1), "retired key must stay published");
    assert_eq!(stack.call("/hello", Some(&last_of_kid1)).await.status, 200, "old token must work until retain passes");

    // After retain the old key leaves the JWKS and its tokens stop working.
    eventually("the retired key's removal", Duration::from_secs(120), || async {
        (!stack.published_kids(&client).await.contains(&kid1)).then_some(())
    })
    .await;
    eventually("the sidecar refusing the old token", Duration::from_secs(30), || async {
        (stack.call("/hello", Some(&last_of_kid1)).await.status == 401).then_some(())
    })
    .await;
    // `second` has expired by now (20s cap); a fresh token of the same key works.
    let second = stack.token().await;
    assert_eq!(kid_of(&second), kid2);
    assert_eq!(stack.call("/hello", Some(&second)).await.status, 200);

    // Revoking the active key replaces it at once and kills its tokens.
    keys.patch("api", &PatchParams::default(), &Patch::Merge(json!({"spec": {"revokedKeyIds": [kid2]}})))
        .await
        .expect("revoke");
    // Well inside the token's 20s lifetime, so the refusal is the revocation's.
    eventually("the sidecar refusing the revoked key's token", Duration::from_secs(12), || async {
        (stack.call("/hello", Some(&second)).await.status == 401).then_some(())
    })
    .await;
    // The issuer answers 503 for the moment it holds no published key.
    let third = eventually("a token from the replacement key", Duration::from_secs(60), || async {
        let t = stack.try_token().await.ok()?;
        (kid_of(&t) != kid2).then_some(t)
    })
    .await;
    assert_ne!(kid_of(&third), kid1);
    assert_eq!(stack.call("/hello", Some(&third)).await.status, 200);
    assert!(!stack.published_kids(&client).await.contains(&kid2), "a revoked key is never published");
    stack.assert_running();
}

/// How late the lagging stand-in delivers the JWKS to the sidecar: at least
/// as late as the worst delivery measured from a real kubelet on its default
/// one-minute sync loop (88 s, bench/rotation/README.md).
const LAG: Duration = Duration::from_secs(90);

/// The no-failed-request promise when a verifier's copy of the JWKS lags the
/// ConfigMap as a kubelet's does, while the issuer's copy does not (it signs
/// with a new key as early as it may). Continuous traffic through three key
/// changes with prePublish (120 s) above the lag fails nothing: two
/// rotations, then a third forced by deleting the Secret, where the operator
/// keeps the old keys published, pre-publishes the replacement and says so
/// with a Warning `SecretLost` (a deletion is not a revocation). The control:
/// one rotation with prePublish below the lag fails requests, so the stand-in
/// really lags, and that is why the operator refuses such a prePublish unless
/// a test lowers its floor.
#[tokio::test]
async fn rotation_under_a_lagging_jwks_mount_fails_no_request() {
    let started = std::time::Instant::now();
    let cp = ControlPlane::shared();
    let ns = cp.namespace("lag");
    let client = cp.client().await;
    // retain is the least the API accepts: maxTokenLifetime + prePublish + 1m.
    let spec = json!({"algorithm": "ES256", "maxTokenLifetime": "20s",
                      "rotation": {"every": "1h", "prePublish": "120s", "retain": "200s"}});
    let stack = Stack::start_lagging(cp, &ns, "lag", spec, LAG).await;
    let keys: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &stack::signing_key_resource());
    let urls = Urls { issuer: stack.issuer_url.clone(), app: stack.sidecar_url.clone() };
    let active = || async {
        let sk = keys.get("lag").await.ok()?;
        sk.data["status"]["activeKeyId"].as_str().map(str::to_owned)
    };
    let rotate = |value: String| {
        let keys = keys.clone();
        async move {
            let patch = json!({"metadata": {"annotations": {"sigil.dev/rotate": value}}});
            keys.patch("lag", &PatchParams::default(), &Patch::Merge(patch)).await.expect("annotate");
        }
    };
    // Activation, then tokens carrying the new key (the issuer's copy is instant).
    let rotated = |before: String| {
        let urls = urls.clone();
        async move {
            let after = eventually("activation", Duration::from_secs(200), || async {
                active().await.filter(|k| *k != before)
            })
            .await;
            eventually("tokens signed by the new key", Duration::from_secs(60), || async {
                urls.token().await.ok().filter(|t| t.kid == after).map(|_| ())
            })
            .await;
            after
        }
    };

    let traffic = Traffic::start(&urls);
    let mut kid = active().await.expect("an active key");
    for round in 1..=2 {
        rotate(format!("r{round}")).await;
        kid = rotated(kid).await;
    }
    // The third key change: the Secret is deleted right after an activation,
    // while the sidecar's copy still lags behind it.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret_name = sigil_api::contract::default_secret_name("lag");
    secrets.delete(&secret_name, &DeleteParams::default()).await.expect("delete the Secret");
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let lost = eventually("a SecretLost event", Duration::from_secs(30), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| e.reason.as_deref() == Some("SecretLost"))
    })
    .await;
    assert_eq!(lost.type_.as_deref(), Some("Warning"), "{lost:?}");
    assert_eq!(lost.involved_object.name.as_deref(), Some("lag"), "{lost:?}");
    let note = lost.message.unwrap_or_default();
    assert!(note.contains(&secret_name) && note.contains("revokedKeyIds"), "{note}");
    // Not a revocation: the lost key stays Active and published, and the
    // issuer keeps signing with the copy it holds until the replacement,
    // pre-published for prePublish, may sign.
    let states = eventually("a pre-published replacement in status", Duration::from_secs(30), || async {
        let sk = keys.get("lag").await.ok()?;
        let states: Vec<(String, String)> = sk.data["status"]["keys"]
            .as_array()?
            .iter()
            .map(|k| Some((k["keyId"].as_str()?.to_owned(), k["state"].as_str()?.to_owned())))
            .collect::<Option<_>>()?;
        states.iter().any(|(_, state)| state == "Next").then_some(states)
    })
    .await;
    assert!(states.contains(&(kid.clone(), "Active".to_owned())), "the lost key stays Active: {states:?}");
    assert!(stack.published_kids(&client).await.contains(&kid), "the lost key stays published");
    let token = urls.token().await.expect("a token while the Secret is being replaced");
    assert_eq!(token.kid, kid, "the issuer signs with the key it holds");
    kid = rotated(kid).await;

    tokio::time::sleep(Duration::from_secs(5)).await;
    let report = traffic.stop().await;
    println!("lagging mount: {} tokens, {} calls, keys {:?}", report.tokens, report.calls, report.kids);
    assert!(
        report.failures.is_empty(),
        "failed requests with prePublish > lag (two rotations and a Secret deletion):\n{:#?}",
        report.failures
    );
    assert!(report.kids.len() >= 4, "tokens were signed by all four keys: {:?}", report.kids);
    assert!(report.calls > 200, "the traffic really ran: {report:?}");

    // The control: prePublish below the lag (allowed here only because this
    // operator runs with a lowered floor; retain stays valid).
    let patch = json!({"spec": {"rotation": {"prePublish": "5s"}}});
    keys.patch("lag", &PatchParams::default(), &Patch::Merge(patch)).await.expect("shorten prePublish");
    let traffic = Traffic::start(&urls);
    rotate("too-early".to_owned()).await;
    let new = rotated(kid).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let report = traffic.stop().await;
    let refused = report.failures.iter().filter(|f| f.kid.as_deref() == Some(new.as_str()) && f.why.contains("401"));
    assert!(refused.count() > 0, "a key signing before the lagging copy has it must fail: {report:?}");
    println!("lagging mount: the whole test took {:?}", started.elapsed());
}
