//! Reconcile against a mock API server: every call's method, path and body.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use sigil_api::contract;
use sigil_api::signing_key::{SigningKey, SigningKeyStatus};

use super::*;
use crate::fixtures::{self, NOW};

const SECRETS: &str = "/api/v1/namespaces/team/secrets";
const SECRET: &str = "/api/v1/namespaces/team/secrets/api-signing-key";
const CONFIG_MAPS: &str = "/api/v1/namespaces/team/configmaps";
const CONFIG_MAP: &str = "/api/v1/namespaces/team/configmaps/api-jwks";
const STATUS: &str = "/apis/sigil.dev/v1alpha1/namespaces/team/signingkeys/api/status";

fn signing_key(spec: Value) -> SigningKey {
    let mut sk = SigningKey::new("api", serde_json::from_value(spec).expect("spec"));
    sk.metadata.namespace = Some("team".into());
    sk.metadata.uid = Some("7d1c0c4e-0000-4000-8000-000000000001".into());
    sk.metadata.generation = Some(3);
    sk
}

fn es256() -> SigningKey {
    signing_key(json!({"algorithm": "ES256", "maxTokenLifetime": "15m",
                       "rotation": {"every": "1h", "prePublish": "10m", "retain": "30m"}}))
}

fn b64(value: &Value) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(value.as_str().expect("base64 string")).expect("base64")
}

fn text(value: &Value) -> String {
    String::from_utf8(b64(value)).expect("utf-8")
}

#[tokio::test]
async fn create_writes_in_the_safe_order_then_reports_ready() {
    let (ctx, mut api) = fixtures::context();
    let sk = es256();
    let server = tokio::spawn(async move {
        api.expect("GET", SECRET).await.not_found();
        api.expect("GET", CONFIG_MAP).await.not_found();

        // 1. The private key is persisted as next.pem: nothing can sign with it yet.
        // Created, not applied: a create cannot take over a Secret made since the GET.
        let call = api.expect_create(SECRETS).await;
        let body = call.body.clone();
        assert_eq!((body["apiVersion"].clone(), body["kind"].clone()), (json!("v1"), json!("Secret")));
        assert_eq!(body["type"], contract::SECRET_TYPE);
        assert!(body["metadata"].get("resourceVersion").is_none(), "a create has no version");
        assert_eq!(body["metadata"]["labels"], json!(contract::labels("api")));
        let owner = &body["metadata"]["ownerReferences"][0];
        assert_eq!((owner["kind"].clone(), owner["controller"].clone()), (json!("SigningKey"), json!(true)));
        let data = body["data"].as_object().expect("data");
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            ["lifecycle.json", "max-token-lifetime", "next.alg", "next.kid", "next.pem"]
        );
        assert!(text(&data["next.pem"]).starts_with("-----BEGIN PRIVATE KEY-----"));
        let kid = text(&data["next.kid"]);
        let secret = call.created("1");
        let event = api.expect_event("team", "KeyGenerated").await;
        assert_eq!(event["type"], "Normal");
        assert!(event["note"].as_str().expect("note").contains(&kid));
        assert_eq!(event["regarding"]["name"], "api");

        // 2. The public key is published, as Next.
        let call = api.expect_create(CONFIG_MAPS).await;
        let jwks: Value = serde_json::from_str(call.body["data"]["jwks.json"].as_str().expect("jwks")).expect("json");
        assert_eq!(jwks["keys"][0]["kid"], kid.as_str());
        assert_eq!(jwks["keys"][0]["alg"], "ES256");
        assert!(jwks["keys"][0].get("d").is_none(), "no private parameters");
        assert!(call.body["metadata"].get("annotations").is_none(), "the ConfigMap holds no state");
        call.created("2");
        api.expect_event("team", "KeyPublished").await;

        // 3. The Secret records the key as published, with the version read as
        // precondition. First the fields the create wrote move to the apply
        // manager, or a later apply could not remove next.pem.
        api.expect_adopt(SECRET, "1").await.patched(secret, "3");
        let call = api.expect_apply(SECRET).await;
        assert_eq!(call.body["metadata"]["resourceVersion"], "3");
        let lifecycle = text(&call.body["data"][contract::LIFECYCLE]);
        assert!(lifecycle.contains("\"state\":\"Next\"") && !lifecycle.contains("PRIVATE"), "{lifecycle}");
        assert_eq!(text(&call.body["data"][contract::MAX_TOKEN_LIFETIME]), "15m");
        call.stored("4");

        // 4. Activated: the key moves to its slot and its record says Active, in one write.
        let call = api.expect_apply(SECRET).await;
        assert_eq!(call.body["metadata"]["resourceVersion"], "4");
        let data = call.body["data"].as_object().expect("data");
        let entries: Vec<&String> = data.keys().collect();
        assert_eq!(entries, ["alg", "kid", "lifecycle.json", "max-token-lifetime", "private.pem"]);
        assert_eq!(text(&data["kid"]), kid);
        let lifecycle = text(&data[contract::LIFECYCLE]);
        assert!(lifecycle.contains("\"state\":\"Active\""), "{lifecycle}");
        assert!(lifecycle.contains(&format!("\"activatedAt\":\"{NOW}\"")), "{lifecycle}");
        call.stored("5");
        api.expect_event("team", "KeyActivated").await;

        // 5. Status, by server-side apply on the subresource.
        let call = api.expect_apply(STATUS).await;
        let status = &call.body["status"];
        assert_eq!(call.body["kind"], "SigningKey");
        assert_eq!(status["activeKeyId"], kid.as_str());
        assert_eq!(status["observedGeneration"], 3);
        assert_eq!(status["conditions"][0]["status"], "True");
        assert_eq!(status["conditions"][0]["reason"], "KeyActive");
        assert_eq!(status["nextRotationTime"], "2026-11-01T01:00:00Z");
        assert!(!status.to_string().contains("PRIVATE"), "{status}");
        call.stored_status();
        api.expect_silence().await;
    });
    let action = reconcile(Arc::new(sk), ctx.clone()).await.expect("reconcile");
    server.await.expect("verifier");
    // Requeued for the successor's generation at :50 (plus the one-second margin).
    assert_eq!(action, Action::requeue(Duration::from_secs(50 * 60 + 1)));
}

/// Runs the pure decision to convergence, as reconcile would, to build an
/// up-to-date cluster.
fn converged(sk: &SigningKey) -> (Secret, ConfigMap, SigningKeyStatus) {
    let now: Timestamp = NOW.parse().expect("now");
    let (mut secret, mut cm): (Option<Secret>, Option<ConfigMap>) = (None, None);
    let mut fresh = None;
    loop {
        let input = Input {
            signing_key: sk,
            secret: secret.as_ref(),
            config_map: cm.as_ref(),
            fresh_key: fresh.as_ref(),
            limits: Limits::default(),
            now,
        };
        match decide::decide(input) {
            Decision::NeedKey(kind) => fresh = Some(PrivateKey::generate(kind.algorithm, kind.rsa_bits).expect("key")),
            Decision::Plan(plan) => match plan.write {
                Some(Write::Secret(mut s)) => {
                    s.metadata.resource_version = Some("10".into());
                    secret = Some(s);
                }
                Some(Write::ConfigMap(mut c)) => {
                    c.metadata.resource_version = Some("11".into());
                    cm = Some(c);
                }
                None => return (secret.expect("secret"), cm.expect("cm"), plan.status),
            },
        }
    }
}

#[tokio::test]
async fn an_up_to_date_signing_key_is_only_read() {
    let (ctx, mut api) = fixtures::context();
    let mut sk = es256();
    let (secret, cm, status) = converged(&sk);
    sk.status = Some(status);
    let server = tokio::spawn(async move {
        let secret = serde_json::to_value(&secret).expect("json");
        let cm = serde_json::to_value(&cm).expect("json");
        api.expect("GET", SECRET).await.respond(http::StatusCode::OK, &secret);
        api.expect("GET", CONFIG_MAP).await.respond(http::StatusCode::OK, &cm);
        api.expect_silence().await;
    });
    let action = reconcile(Arc::new(sk), ctx).await.expect("reconcile");
    server.await.expect("no write, no status patch, no event");
    assert_eq!(action, Action::requeue(Duration::from_secs(50 * 60 + 1)));
}

#[tokio::test]
async fn a_foreign_secret_is_only_read_and_reported() {
    let (ctx, mut api) = fixtures::context();
    let sk = es256();
    let server = tokio::spawn(async move {
        let foreign = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "api-signing-key", "namespace": "team", "resourceVersion": "5"},
            "data": {"password": "aHVudGVyMg=="}});
        api.expect("GET", SECRET).await.respond(http::StatusCode::OK, &foreign);
        api.expect("GET", CONFIG_MAP).await.not_found();
        let call = api.expect_apply(STATUS).await;
        let condition = &call.body["status"]["conditions"][0];
        assert_eq!(
            (condition["status"].clone(), condition["reason"].clone()),
            (json!("False"), json!("SecretConflict"))
        );
        call.stored_status();
        let event = api.expect_event("team", "Conflict").await;
        assert_eq!(event["type"], "Warning");
        assert!(event["note"].as_str().expect("note").contains("api-signing-key"));
        api.expect_silence().await;
    });
    let action = reconcile(Arc::new(sk), ctx.clone()).await.expect("reconcile");
    server.await.expect("verifier");
    assert_eq!(action, Action::requeue(decide::CONFLICT_RECHECK + Duration::from_secs(1)));
    assert_eq!(ctx.metrics.failures("secret_conflict"), 1);
}

/// Someone creates the Secret between our GET and our write: the create
/// fails, the Secret is read again and reported, and never written to.
#[tokio::test]
async fn a_secret_created_after_our_read_is_a_conflict_not_adopted() {
    let (ctx, mut api) = fixtures::context();
    let server = tokio::spawn(async move {
        api.expect("GET", SECRET).await.not_found();
        api.expect("GET", CONFIG_MAP).await.not_found();
        api.expect_create(SECRETS).await.already_exists();
        let foreign = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "api-signing-key", "namespace": "team", "resourceVersion": "5"},
            "data": {"password": "aHVudGVyMg=="}});
        api.expect("GET", SECRET).await.respond(http::StatusCode::OK, &foreign);
        let call = api.expect_apply(STATUS).await;
        assert_eq!(call.body["status"]["conditions"][0]["reason"], "SecretConflict");
        call.stored_status();
        let event = api.expect_event("team", "Conflict").await;
        assert_eq!(event["type"], "Warning");
        api.expect_silence().await;
    });
    let action = reconcile(Arc::new(es256()), ctx.clone()).await.expect("reconcile");
    server.await.expect("no KeyGenerated event, no write to the foreign Secret");
    assert_eq!(action, Action::requeue(decide::CONFLICT_RECHECK + Duration::from_secs(1)));
    assert_eq!(ctx.metrics.failures("secret_conflict"), 1);
}

#[tokio::test]
async fn a_config_map_created_after_our_read_is_a_conflict_not_adopted() {
    let (ctx, mut api) = fixtures::context();
    let server = tokio::spawn(async move {
        api.expect("GET", SECRET).await.not_found();
        api.expect("GET", CONFIG_MAP).await.not_found();
        api.expect_create(SECRETS).await.created("1");
        api.expect_event("team", "KeyGenerated").await;
        api.expect_create(CONFIG_MAPS).await.already_exists();
        let foreign = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "api-jwks", "namespace": "team", "resourceVersion": "7"},
            "data": {"jwks.json": "{\"keys\":[]}"}});
        api.expect("GET", CONFIG_MAP).await.respond(http::StatusCode::OK, &foreign);
        let call = api.expect_apply(STATUS).await;
        assert_eq!(call.body["status"]["conditions"][0]["reason"], "ConfigMapConflict");
        call.stored_status();
        api.expect_event("team", "Conflict").await;
        api.expect_silence().await;
    });
    reconcile(Arc::new(es256()), ctx.clone()).await.expect("reconcile");
    server.await.expect("verifier");
    assert_eq!(ctx.metrics.failures("config_map_conflict"), 1);
}

/// A replica whose fence is closed (it lost, or never won, the Lease) still
/// reads, but sends nothing: no create, no status, no event.
#[tokio::test]
async fn without_the_lease_nothing_is_written() {
    let (ctx, mut api) = fixtures::context();
    let ctx = Arc::new(Context {
        client: ctx.client.clone(),
        recorder: ctx.recorder.clone(),
        metrics: ctx.metrics.clone(),
        now: ctx.now,
        fence: Fence::closed(),
        before_create: None,
        cluster_scope: true,
        limits: ctx.limits,
    });
    let server = tokio::spawn(async move {
        api.expect("GET", SECRET).await.not_found();
        api.expect("GET", CONFIG_MAP).await.not_found();
        api.expect_silence().await;
    });
    let error = reconcile(Arc::new(es256()), ctx.clone()).await.expect_err("refused");
    server.await.expect("verifier");
    assert!(matches!(error, Error::NotLeader), "{error}");
    assert_eq!(error.metric_label(), "not_leader");
}

#[test]
fn fields_a_create_wrote_move_to_the_apply_manager() {
    let entry = |manager: &str, operation: &str, subresource: Option<&str>, fields: Value| {
        serde_json::from_value::<ManagedFieldsEntry>(json!({
            "manager": manager, "operation": operation, "apiVersion": "v1", "subresource": subresource,
            "time": "2026-11-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": fields,
        }))
        .expect("entry")
    };
    let kubectl = entry("kubectl-label", "Update", None, json!({"f:metadata": {"f:labels": {"f:team": {}}}}));
    let status = entry("sigil-operator", "Update", Some("status"), json!({"f:status": {}}));
    let created = entry("sigil-operator", "Update", None, json!({"f:data": {"f:next.pem": {}}, "f:type": {}}));
    let applied = entry("sigil-operator", "Apply", None, json!({"f:data": {"f:kid": {}}}));

    assert_eq!(created_fields_applied(&[kubectl.clone(), applied.clone()]), None, "nothing to move");
    let moved = created_fields_applied(&[kubectl.clone(), created.clone(), status.clone()]).expect("moved");
    assert_eq!(moved.len(), 3, "other managers and subresources are kept: {moved:?}");
    assert!(moved.contains(&kubectl) && moved.contains(&status));
    let ours = moved.iter().find(|e| e.subresource.is_none() && e.manager.as_deref() == Some("sigil-operator"));
    let ours = ours.expect("our entry");
    assert_eq!(ours.operation.as_deref(), Some("Apply"));
    assert_eq!(ours.fields_v1, created.fields_v1, "the same fields, now applied");

    // Both entries at once (e.g. an earlier hand-over was lost): one Apply entry with both sets.
    let merged = created_fields_applied(&[applied, created]).expect("merged");
    assert_eq!(merged.len(), 1, "{merged:?}");
    let fields = &merged[0].fields_v1.as_ref().expect("fields").0;
    assert_eq!(fields, &json!({"f:data": {"f:kid": {}, "f:next.pem": {}}, "f:type": {}}));
}

#[tokio::test]
async fn an_invalid_spec_reads_nothing_and_waits_for_a_change() {
    let (ctx, mut api) = fixtures::context();
    let sk = signing_key(json!({"algorithm": "ES256", "keySize": 2048}));
    let server = tokio::spawn(async move {
        let call = api.expect_apply(STATUS).await;
        assert_eq!(call.body["status"]["conditions"][0]["reason"], "InvalidSpec");
        call.stored_status();
        api.expect_event("team", "InvalidSpec").await;
        api.expect_silence().await;
    });
    let action = reconcile(Arc::new(sk), ctx.clone()).await.expect("reconcile");
    server.await.expect("verifier");
    assert_eq!(action, Action::await_change());
    assert_eq!(ctx.metrics.failures("invalid_spec"), 1);
}

#[tokio::test]
async fn a_write_conflict_is_an_error_for_the_backoff() {
    let (ctx, mut api) = fixtures::context();
    let sk = es256();
    // Someone stripped the ConfigMap's labels: it is rewritten, on the version read.
    let (secret, mut cm, _) = converged(&sk);
    cm.metadata.labels = None;
    let server = tokio::spawn(async move {
        api.expect("GET", SECRET).await.respond(http::StatusCode::OK, &serde_json::to_value(&secret).expect("json"));
        api.expect("GET", CONFIG_MAP).await.respond(http::StatusCode::OK, &serde_json::to_value(&cm).expect("json"));
        let call = api.expect_apply(CONFIG_MAP).await;
        assert_eq!(call.body["metadata"]["resourceVersion"], "11");
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
                            "message": "the object has been modified"});
        call.respond(http::StatusCode::CONFLICT, &status);
        api.expect_silence().await;
    });
    let error = reconcile(Arc::new(sk.clone()), ctx.clone()).await.expect_err("409 fails the reconcile");
    server.await.expect("verifier");
    assert_eq!(error.metric_label(), "write_conflict");
    assert_eq!(error_policy(Arc::new(sk), &error, ctx.clone()), Action::requeue(Duration::from_secs(5)));
    assert_eq!(ctx.metrics.failures("write_conflict"), 1);
}

#[test]
fn requeue_is_at_the_transition_never_before_it() {
    let now: Timestamp = NOW.parse().expect("now");
    let later = now.checked_add(Duration::from_secs(90)).expect("time");
    assert_eq!(requeue(Some(later), now), Action::requeue(Duration::from_secs(91)));
    let past = now.checked_sub(Duration::from_secs(5)).expect("time");
    assert_eq!(requeue(Some(past), now), Action::requeue(Duration::from_secs(1)));
    assert_eq!(requeue(None, now), Action::await_change());
}
