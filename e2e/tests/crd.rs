//! The CRD as the API server enforces it: defaults applied, every invalid
//! SigningKey refused with the message the CRD gives, examples accepted.

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use sigil_e2e::{ControlPlane, repo_root};

fn resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("sigil.dev", "v1alpha1", "SigningKey"))
}

/// A sigil.dev/v1alpha1 object of `kind`.
fn of_kind(kind: &str, name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "sigil.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("object")
}

fn object(name: &str, spec: Value) -> DynamicObject {
    of_kind("SigningKey", name, spec)
}

/// The API server's refusal, as the user sees it.
fn refusal(result: Result<DynamicObject, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            status.message
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(obj) => panic!("accepted: {:?}", obj.data),
    }
}

#[tokio::test]
async fn defaults_are_applied_by_the_api_server() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("crd-defaults");
    let api: Api<DynamicObject> = Api::namespaced_with(cp.client().await, &ns, &resource());
    let created = api.create(&PostParams::default(), &object("plain", json!({}))).await.expect("empty spec is valid");
    let spec = &created.data["spec"];
    assert_eq!(spec["algorithm"], "RS256");
    assert_eq!(spec["rotation"], json!({"every": "720h", "prePublish": "1h", "retain": "24h"}));
    assert_eq!(spec["maxTokenLifetime"], "1h");
    assert!(spec.get("keySize").is_none(), "keySize stays unset: {spec}");

    let created = api
        .create(&PostParams::default(), &object("partial", json!({"rotation": {"every": "1h30m20s"}})))
        .await
        .expect("every given alone");
    assert_eq!(created.data["spec"]["rotation"], json!({"every": "1h30m20s", "prePublish": "1h", "retain": "24h"}));
}

#[tokio::test]
async fn invalid_specs_are_refused_with_the_crd_message() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("crd-invalid");
    let api: Api<DynamicObject> = Api::namespaced_with(cp.client().await, &ns, &resource());
    let cases = [
        (json!({"algorithm": "none"}), "spec.algorithm: Unsupported value: \"none\""),
        (json!({"algorithm": "HS256"}), "spec.algorithm: Unsupported value: \"HS256\""),
        (json!({"algorithm": "EdDSA", "keySize": 2048}), "keySize applies only to RSA algorithms"),
        (json!({"algorithm": "ES256", "keySize": 4096}), "keySize applies only to RSA algorithms"),
        (json!({"keySize": 1024}), "spec.keySize: Unsupported value: 1024"),
        (json!({"rotation": {"every": "1h", "prePublish": "1h"}}), "prePublish must be shorter than every"),
        (json!({"rotation": {"every": "10m", "prePublish": "2h"}}), "prePublish must be shorter than every"),
        (json!({"rotation": {"every": "30 days"}}), "every must be a Go duration such as 720h"),
        (json!({"rotation": {"every": "59s", "prePublish": "10s"}}), "every must be at least 1m"),
        (json!({"rotation": {"prePublish": "soon"}}), "prePublish must be a Go duration"),
        (json!({"rotation": {"retain": "1d"}}), "retain must be a Go duration"),
        (json!({"maxTokenLifetime": "forever"}), "maxTokenLifetime must be a Go duration"),
        (json!({"maxTokenLifetime": "25h"}), "maxTokenLifetime must be between 1s and 24h"),
        (json!({"maxTokenLifetime": "0s"}), "maxTokenLifetime must be between 1s and 24h"),
        // The default retain (24h) cannot cover 23h tokens plus the default 1h prePublish.
        (
            json!({"maxTokenLifetime": "23h"}),
            "rotation.retain must be at least maxTokenLifetime + rotation.prePublish + 1m",
        ),
        (json!({"rotation": {"retain": "0s"}}), "rotation.retain must be at least maxTokenLifetime"),
        (json!({"rotation": {"prePublish": "0s"}}), "prePublish must be at least 1s"),
        (
            json!({"maxTokenLifetime": "10m", "rotation": {"every": "1h", "prePublish": "5m", "retain": "15m59s"}}),
            "rotation.retain must be at least maxTokenLifetime",
        ),
        (
            json!({"maxTokenLifetime": "1m", "rotation": {"every": "1m", "prePublish": "10s", "retain": "31m"}}),
            "retain must be at most 30 times every",
        ),
        (json!({"secretName": "Not_A_Name"}), "spec.secretName"),
        (json!({"revokedKeyIds": ["a", "a"]}), "spec.revokedKeyIds[1]: Duplicate value"),
    ];
    for (i, (spec, want)) in cases.into_iter().enumerate() {
        let message = refusal(api.create(&PostParams::default(), &object(&format!("bad-{i}"), spec.clone())).await);
        assert!(message.contains(want), "spec {spec}: message {message:?} lacks {want:?}");
    }
    // The bounds themselves are allowed.
    for (i, spec) in [
        json!({"maxTokenLifetime": "10m", "rotation": {"every": "1h", "prePublish": "5m", "retain": "16m"}}),
        json!({"maxTokenLifetime": "1m", "rotation": {"every": "1m", "prePublish": "10s", "retain": "30m"}}),
    ]
    .into_iter()
    .enumerate()
    {
        api.create(&PostParams::default(), &object(&format!("edge-{i}"), spec.clone()))
            .await
            .unwrap_or_else(|e| panic!("spec {spec} is valid: {e}"));
    }
}

#[tokio::test]
async fn names_cannot_change_once_set() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("crd-immutable");
    let api: Api<DynamicObject> = Api::namespaced_with(cp.client().await, &ns, &resource());
    api.create(&PostParams::default(), &object("named", json!({"secretName": "one", "jwksConfigMapName": "one-jwks"})))
        .await
        .expect("create");
    api.create(&PostParams::default(), &object("unnamed", json!({}))).await.expect("create");
    let patch = |spec: Value| Patch::Merge(json!({"spec": spec}));
    let pp = PatchParams::default();

    let renamed = api.patch("named", &pp, &patch(json!({"secretName": "two"}))).await;
    assert!(refusal(renamed).contains("secretName is immutable"));
    let renamed = api.patch("named", &pp, &patch(json!({"jwksConfigMapName": "two"}))).await;
    assert!(refusal(renamed).contains("jwksConfigMapName is immutable"));
    let removed = api.patch("named", &pp, &patch(json!({"secretName": null}))).await;
    assert!(refusal(removed).contains("secretName is immutable"));
    // Adding a name later would silently move the key away from the default Secret.
    let added = api.patch("unnamed", &pp, &patch(json!({"secretName": "late"}))).await;
    assert!(refusal(added).contains("secretName is immutable"));
    // Everything else stays editable.
    api.patch("named", &pp, &patch(json!({"rotation": {"every": "48h"}, "revokedKeyIds": ["x"]})))
        .await
        .expect("rotation and revocations can change");
}

#[test]
fn the_examples_apply() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("crd-examples");
    for example in ["signingkey.yaml", "signingkey-es256.yaml"] {
        let path = repo_root().join("examples").join(example);
        cp.kubectl_ok(&["apply", "-n", &ns, "-f", &path.to_string_lossy()]);
    }
    let listed = cp.kubectl_ok(&["get", "sk", "-n", &ns, "-o", "name"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    // Printer columns are what `kubectl get sk` shows.
    let table = cp.kubectl_ok(&["get", "sk", "-n", &ns]);
    let header = table.lines().next().unwrap_or_default();
    for column in ["NAME", "ALGORITHM", "ACTIVE KEY", "READY", "NEXT ROTATION", "AGE"] {
        assert!(header.contains(column), "{header}");
    }
}

fn sigil_client(name: &str, spec: Value) -> DynamicObject {
    of_kind("SigilClient", name, spec)
}

fn sigil_clients(client: kube::Client, ns: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("sigil.dev", "v1alpha1", "SigilClient"));
    Api::namespaced_with(client, ns, &resource)
}

#[tokio::test]
async fn sigil_clients_are_validated_by_the_api_server() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("crd-sigilclient");
    let api = sigil_clients(cp.client().await, &ns);
    let valid = json!({"serviceAccounts": ["app"], "audiences": ["api"]});
    let with = |extra: Value| {
        let mut spec = valid.clone();
        for (k, v) in extra.as_object().expect("object") {
            spec[k] = v.clone();
        }
        spec
    };
    let cases = [
        (json!({"audiences": ["api"]}), "spec.serviceAccounts: Required value"),
        (json!({"serviceAccounts": ["app"]}), "spec.audiences: Required value"),
        (with(json!({"serviceAccounts": []})), "spec.serviceAccounts: Invalid value"),
        (with(json!({"audiences": []})), "spec.audiences: Invalid value"),
        (
            with(json!({"serviceAccounts": ["system:serviceaccount:other:app"]})),
            "a SigilClient can only admit ServiceAccounts of its own namespace",
        ),
        (with(json!({"serviceAccounts": ["App"]})), "each entry must be the name of a ServiceAccount"),
        (with(json!({"serviceAccounts": ["app", "app"]})), "spec.serviceAccounts[1]: Duplicate value"),
        (with(json!({"scopes": ["orders read"]})), "each entry must be an RFC 6749 scope token"),
        (with(json!({"scopes": ["a\\b"]})), "each entry must be an RFC 6749 scope token"),
        (with(json!({"scopes": ["a\"b"]})), "each entry must be an RFC 6749 scope token"),
        (with(json!({"audiences": ["has space"]})), "audiences: each entry must be non-empty printable text"),
        (with(json!({"tokenTtl": "1d"})), "tokenTtl must be a Go duration"),
        (with(json!({"tokenTtl": "25h"})), "tokenTtl must be between 1s and 24h"),
        (with(json!({"tokenTtl": "0s"})), "tokenTtl must be between 1s and 24h"),
    ];
    for (i, (spec, want)) in cases.into_iter().enumerate() {
        let message =
            refusal(api.create(&PostParams::default(), &sigil_client(&format!("bad-{i}"), spec.clone())).await);
        assert!(message.contains(want), "spec {spec}: message {message:?} lacks {want:?}");
    }
    for (i, spec) in [
        valid.clone(),
        with(json!({"scopes": ["orders.read", "x[y]z", "!", "~"], "tokenTtl": "24h"})),
        with(json!({"serviceAccounts": ["a", "b.c", "d-e"], "audiences": ["api", "https://orders.example"], "tokenTtl": "1s"})),
    ]
    .into_iter()
    .enumerate()
    {
        api.create(&PostParams::default(), &sigil_client(&format!("good-{i}"), spec.clone()))
            .await
            .unwrap_or_else(|e| panic!("spec {spec} is valid: {e}"));
    }
    // What the API server stores, the issuer's validation accepts.
    let stored = api.get("good-1").await.expect("get");
    let spec: sigil_api::SigilClientSpec = serde_json::from_value(stored.data["spec"].clone()).expect("typed spec");
    let valid = spec.validate().expect("the issuer accepts what the API server accepted");
    assert_eq!(valid.token_ttl, Some(std::time::Duration::from_secs(24 * 3600)));
}

#[test]
fn the_sigil_client_example_applies() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("crd-sigilclient-example");
    let path = repo_root().join("examples").join("sigilclient.yaml");
    cp.kubectl_ok(&["apply", "-n", &ns, "-f", &path.to_string_lossy()]);
    let table = cp.kubectl_ok(&["get", "sigc", "-n", &ns]);
    let header = table.lines().next().unwrap_or_default();
    for column in ["NAME", "SERVICE ACCOUNTS", "AUDIENCES", "TOKEN TTL", "AGE"] {
        assert!(header.contains(column), "{header}");
    }
    assert!(table.contains("orders-api"), "{table}");
}
