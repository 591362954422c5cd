//! Workload identity against a real kube-apiserver: tokens its TokenRequest
//! API mints (bound to a Pod, as a projected volume's are) are exchanged at
//! the issuer, which reads the API server's service-account JWKS, watches
//! SigilClients and reviews pod bindings itself (`sigil_issuer::workload_watch`,
//! in-process here); a token of a deleted pod is refused.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Api;
use kube::api::{DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use sigil_api::contract::{self, SecretKeys};
use sigil_api::{Algorithm, JwkSet, PrivateKey};
use sigil_e2e::process::{Proc, binary, free_port};
use sigil_e2e::{ControlPlane, eventually};
use sigil_issuer::config::{Config, WorkloadConfig};
use sigil_issuer::state::AppState;
use sigil_issuer::{routes, server, workload_watch};
use sigil_runtime::volume::write_atomically;
use tower::ServiceExt;

const ISSUER: &str = "https://sigil-issuer.sigil.svc";

/// The API server's `--service-account-issuer`, from its OIDC discovery.
async fn service_account_issuer(client: &kube::Client) -> String {
    let discovery: Value = serde_json::from_str(
        &client
            .request_text(http::Request::get("/.well-known/openid-configuration").body(Vec::new()).expect("request"))
            .await
            .expect("the API server's OIDC discovery"),
    )
    .expect("JSON");
    discovery["issuer"].as_str().expect("issuer").to_owned()
}

/// The issuer's files under `dir`, as the kubelet would mount them: keys/,
/// jwks/jwks.json and an empty clients.yaml.
fn issuer_files(dir: &std::path::Path) {
    let key = PrivateKey::generate(Algorithm::ES256, None).expect("key");
    let jwks = JwkSet { keys: vec![key.public_jwk().clone()] }.to_json();
    let data = SecretKeys { active: key, next: None }.to_secret_data();
    let files: Vec<(&str, &[u8])> = data.iter().map(|(k, v)| (k.as_str(), v.0.as_slice())).collect();
    write_atomically(&dir.join("keys"), &files).expect("key volume");
    write_atomically(&dir.join("jwks"), &[(contract::JWKS, jwks.as_bytes())]).expect("jwks volume");
    std::fs::write(dir.join("clients.yaml"), "clients: []\n").expect("clients file");
}

/// The issuer, in-process, with workload identity on against `cp`.
async fn issuer(dir: &std::path::Path, client: &kube::Client) -> Arc<AppState> {
    let sa_issuer = service_account_issuer(client).await;
    issuer_files(dir);
    // A short review TTL, so a deleted pod's token is refused within the test.
    let workload = WorkloadConfig {
        issuer: sa_issuer,
        audience: ISSUER.to_owned(),
        jwks_path: "/openid/v1/jwks".into(),
        review_ttl: Duration::from_secs(1),
    };
    let config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        tls: None,
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        key_dir: dir.join("keys"),
        jwks_file: dir.join("jwks").join(contract::JWKS),
        issuer_url: ISSUER.to_owned(),
        audience: "unused".to_owned(),
        token_ttl: Duration::from_secs(900),
        clients_file: dir.join("clients.yaml"),
        jwks_max_age: Duration::from_secs(300),
        auth_cache_ttl: Duration::from_secs(60),
        auth_cache_size: 100,
        auth_failure_limit: 5,
        auth_backoff_max: Duration::from_secs(900),
        auth_failures_per_minute: 600,
        auth_failure_table_size: 100_000,
        trusted_proxies: Vec::new(),
        reload_period: Duration::from_secs(30),
        shutdown_delay: Duration::ZERO,
        workload: Some(workload.clone()),
    };
    let (state, _metrics) = server::prepare(&config).expect("issuer loads");
    let handles = workload_watch::spawn(
        client.clone(),
        state.workload.clone().expect("workload identity on"),
        workload.jwks_path,
    );
    // The loops end with the test's runtime.
    drop(handles);
    state
}

async fn post(state: &Arc<AppState>, form: String) -> (StatusCode, Value) {
    let request = Request::post("/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .expect("request");
    let response = routes::app(state.clone()).oneshot(request).await.expect("infallible");
    let status = response.status();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn exchange(token: &str, extra: &str) -> String {
    format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token={token}\
         &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt{extra}"
    )
}

fn assertion(token: &str) -> String {
    format!(
        "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer\
         &client_assertion={token}"
    )
}

/// A token of `sa` from the TokenRequest API, for `audience`, bound to `pod` if given.
async fn mint(sas: &Api<ServiceAccount>, sa: &str, audience: &str, pod: Option<&Pod>) -> String {
    let bound_object_ref = pod.map(|p| BoundObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: p.metadata.name.clone(),
        uid: p.metadata.uid.clone(),
    });
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.to_owned()],
            expiration_seconds: Some(600),
            bound_object_ref,
        },
        ..TokenRequest::default()
    };
    let minted = sas.create_token_request(sa, &PostParams::default(), &request).await.expect("TokenRequest");
    minted.status.expect("status").token
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT");
    serde_json::from_slice(&sigil_api::jwk::b64_decode(payload).expect("base64url")).expect("claims")
}

#[tokio::test]
async fn tokens_minted_by_the_api_server_are_exchanged() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("workload");
    let client = cp.client().await;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    for name in ["orders", "intruder"] {
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).expect("sa");
        sas.create(&PostParams::default(), &sa).await.expect("ServiceAccount");
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orders-1"},
        "spec": {"serviceAccountName": "orders", "automountServiceAccountToken": false,
                 "containers": [{"name": "app", "image": "example.invalid/app:1"}]},
    }))
    .expect("pod");
    let pod = pods.create(&PostParams::default(), &pod).await.expect("Pod");
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("sigil.dev", "v1alpha1", "SigilClient"));
    let sigil_clients: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "sigil.dev/v1alpha1", "kind": "SigilClient", "metadata": {"name": "orders"},
        "spec": {"serviceAccounts": ["orders"], "scopes": ["orders.read"], "audiences": ["orders-api"], "tokenTtl": "5m"},
    }))
    .expect("SigilClient");
    sigil_clients.create(&PostParams::default(), &object).await.expect("SigilClient");

    let dir = tempfile::tempdir().expect("tempdir");
    let state = issuer(dir.path(), &client).await;
    let token = mint(&sas, "orders", ISSUER, Some(&pod)).await;
    // The JWKS read and the SigilClient watch run in the background.
    let (status, body) = eventually("the issuer to admit orders", Duration::from_secs(30), || async {
        let (status, body) = post(&state, exchange(&token, "")).await;
        (status == StatusCode::OK).then_some((status, body))
    })
    .await;
    assert_eq!(status, StatusCode::OK);
    let issued = claims(body["access_token"].as_str().expect("access_token"));
    assert_eq!(issued["sub"], format!("system:serviceaccount:{ns}:orders"));
    assert_eq!(issued["aud"], "orders-api");
    assert_eq!(issued["scope"], "orders.read");
    assert_eq!(issued["kubernetes.io"]["namespace"], ns.as_str());
    assert_eq!(issued["kubernetes.io"]["pod"]["name"], "orders-1");
    assert_eq!(body["expires_in"], 300);

    // The same token as an RFC 7523 client assertion.
    let (status, body) = post(&state, assertion(&token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A ServiceAccount no SigilClient admits.
    let intruder = mint(&sas, "intruder", ISSUER, None).await;
    assert_eq!(post(&state, assertion(&intruder)).await.1["error"], "invalid_client");
    assert_eq!(post(&state, exchange(&intruder, "")).await.1["error"], "invalid_grant");
    // A token for the API server's audience, not the issuer's.
    let wrong = mint(&sas, "orders", "https://kubernetes.default.svc", None).await;
    assert_eq!(post(&state, assertion(&wrong)).await.1["error"], "invalid_client");
    assert_eq!(post(&state, exchange(&wrong, "")).await.1["error"], "invalid_request");
    // Scope and audience beyond the SigilClient.
    assert_eq!(post(&state, exchange(&token, "&scope=orders.write")).await.1["error"], "invalid_scope");
    assert_eq!(post(&state, exchange(&token, "&audience=billing-api")).await.1["error"], "invalid_target");

    // The pod the token is bound to is deleted: the API server's TokenReview
    // refuses the token, and so does the issuer within its review TTL (1s here).
    pods.delete("orders-1", &Default::default()).await.expect("delete pod");
    eventually("the deleted pod's token to be refused", Duration::from_secs(30), || async {
        (post(&state, exchange(&token, "")).await.1["error"] == "invalid_request").then_some(())
    })
    .await;
    assert_eq!(post(&state, assertion(&token)).await.1["error"], "invalid_client");

    // The SigilClient is watched: deleting it revokes admission (decided
    // before any TokenReview, so a workload not admitted causes no API call).
    sigil_clients.delete("orders", &Default::default()).await.expect("delete");
    eventually("the deletion to reach the issuer", Duration::from_secs(30), || async {
        (post(&state, exchange(&token, "")).await.1["error"] == "invalid_grant").then_some(())
    })
    .await;
}

/// The binary as the chart would run it: `--workload-identity` makes it build
/// its own Kubernetes client (KUBECONFIG here; in a pod, its ServiceAccount).
#[tokio::test]
async fn the_issuer_binary_serves_workload_identity() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("workload-bin");
    let client = cp.client().await;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "batch"}})).expect("sa");
    sas.create(&PostParams::default(), &sa).await.expect("ServiceAccount");
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("sigil.dev", "v1alpha1", "SigilClient"));
    let sigil_clients: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "sigil.dev/v1alpha1", "kind": "SigilClient", "metadata": {"name": "batch"},
        "spec": {"serviceAccounts": ["batch"], "audiences": ["reports-api"]},
    }))
    .expect("SigilClient");
    sigil_clients.create(&PostParams::default(), &object).await.expect("SigilClient");

    let dir = tempfile::tempdir().expect("tempdir");
    issuer_files(dir.path());
    let (port, admin_port) = (free_port(), free_port());
    let issuer_url = format!("http://127.0.0.1:{port}");
    let sa_issuer = service_account_issuer(&client).await;
    let path = |p: &str| dir.path().join(p).display().to_string();
    let args: Vec<String> = [
        format!("--listen=127.0.0.1:{port}"),
        format!("--admin-listen=127.0.0.1:{admin_port}"),
        format!("--key-dir={}", path("keys")),
        format!("--jwks-file={}", path("jwks/jwks.json")),
        format!("--issuer-url={issuer_url}"),
        "--audience=unused".to_owned(),
        format!("--clients-file={}", path("clients.yaml")),
        "--log-format=text".to_owned(),
        "--workload-identity".to_owned(),
        format!("--service-account-issuer={sa_issuer}"),
    ]
    .into();
    let kubeconfig = cp.kubeconfig.display().to_string();
    let mut process = Proc::start(
        "issuer",
        &binary("sigil-issuer", "sigil-issuer"),
        &args,
        &[("KUBECONFIG", kubeconfig.as_str())],
        &dir.path().join("logs"),
    );
    let token = mint(&sas, "batch", &issuer_url, None).await;
    let url = format!("{issuer_url}/token");
    let reply = eventually("the issuer binary to admit batch", Duration::from_secs(60), || async {
        match sigil_e2e::http::post_form(&url, &assertion(&token), &[]).await {
            Ok(reply) if reply.status == StatusCode::OK => Some(reply),
            _ => None,
        }
    })
    .await;
    process.assert_running();
    let issued = claims(reply.json()["access_token"].as_str().expect("access_token"));
    assert_eq!(issued["sub"], format!("system:serviceaccount:{ns}:batch"));
    assert_eq!(issued["aud"], "reports-api");
    let metadata = sigil_e2e::http::get(&format!("{issuer_url}/.well-known/oauth-authorization-server"), &[])
        .await
        .expect("metadata")
        .json();
    assert_eq!(metadata["token_endpoint_auth_signing_alg_values_supported"], json!(["RS256"]));
    // The log never holds the ServiceAccount token.
    let log = std::fs::read_to_string(&process.log).unwrap_or_default();
    assert!(!log.contains(&token), "the token was logged");
    assert!(log.contains("ServiceAccount token keys loaded"), "{log}");
}
