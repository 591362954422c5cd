//! Sidecar injection through a real API server: the chart's
//! MutatingWebhookConfiguration (pointed at this machine instead of a
//! Service), the operator binary with the chart's RBAC serving it with the
//! certificate it issued and the caBundle it patched. Pods are only stored
//! here (no node); `tests/pods.rs` runs an injected app on the real node.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sigil_api::signing_key::SigningKey;
use sigil_e2e::process::{Proc, binary, free_port};
use sigil_e2e::{ControlPlane, OPERATOR_NAMESPACE, eventually, http, repo_root};

const WEBHOOK: &str = "sigil-injector";
const ISSUER: &str = "http://issuer.test";

fn pod(name: &str, inject: bool, annotations: Value) -> Pod {
    let labels = if inject { json!({"sigil.dev/inject": "enabled"}) } else { json!({}) };
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "app:1", "ports": [{"name": "http", "containerPort": 8080}]}]},
    }))
    .expect("pod")
}

fn app_annotations() -> Value {
    json!({"sigil.dev/audience": "orders", "sigil.dev/upstream-port": "http", "sigil.dev/public-paths": "/healthz"})
}

fn sidecars(pod: &Pod) -> Vec<&k8s_openapi::api::core::v1::Container> {
    let spec = pod.spec.as_ref().expect("spec");
    spec.init_containers.iter().flatten().filter(|c| c.name == "sigil-sidecar").collect()
}

#[tokio::test]
async fn the_api_server_calls_the_webhook_which_injects_or_refuses_with_the_reason() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let keys_ns = cp.namespace("inject-keys");
    let team = cp.namespace("inject-team");
    let elsewhere = cp.namespace("inject-elsewhere");
    let select = json!({"metadata": {"labels": {"sigil-test/jwks": "yes"}}});
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces.patch(&team, &PatchParams::default(), &Patch::Merge(&select)).await.expect("label");

    // The chart's webhook configuration, calling this machine by URL.
    let chart = repo_root().join("charts/sigil");
    let out = std::process::Command::new(&cp.helm)
        .args(["template", "sigil", &chart.to_string_lossy(), "--namespace", OPERATOR_NAMESPACE])
        .args(["--set", "issuer.enabled=false", "--set", "injector.enabled=true"])
        .args(["--show-only", "templates/injector/mutatingwebhookconfiguration.yaml"])
        .output()
        .expect("helm");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut config: Value = serde_yaml::from_slice(&out.stdout).expect("webhook configuration");
    assert_eq!(config["metadata"]["name"], WEBHOOK);
    let port = free_port();
    config["webhooks"][0]["clientConfig"] = json!({"url": format!("https://127.0.0.1:{port}/inject")});
    let path = cp.dir.join("injector-webhook.json");
    std::fs::write(&path, config.to_string()).expect("write");
    cp.kubectl_ok(&["apply", "-f", &path.to_string_lossy()]);

    let admin = free_port();
    let logs = cp.dir.join("stacks").join(&team).join("logs");
    let kubeconfig = cp.operator_kubeconfig();
    let args: Vec<String> = [
        format!("--admin-listen=127.0.0.1:{admin}"),
        "--leader-election=false".into(),
        "--log-format=text".into(),
        "--min-pre-publish=1s".into(),
        format!("--webhook-listen=127.0.0.1:{port}"),
        format!("--webhook-secret-namespace={OPERATOR_NAMESPACE}"),
        "--webhook-secret=sigil-injector-tls".into(),
        format!("--webhook-configuration={WEBHOOK}"),
        "--webhook-dns-name=127.0.0.1".into(),
        format!("--inject-issuer={ISSUER}"),
        format!("--inject-signing-key={keys_ns}/api"),
    ]
    .into();
    let mut operator = Proc::start(
        "operator",
        &binary("sigil-operator", "sigil-operator"),
        &args,
        &[("KUBECONFIG", &kubeconfig.display().to_string())],
        &logs,
    );

    let keys: Api<SigningKey> = Api::namespaced(client.clone(), &keys_ns);
    let sk: SigningKey = serde_json::from_value(json!({
        "apiVersion": "sigil.dev/v1alpha1", "kind": "SigningKey", "metadata": {"name": "api"},
        "spec": {"algorithm": "ES256", "maxTokenLifetime": "10m",
                 "distribution": {"namespaceSelector": {"matchLabels": {"sigil-test/jwks": "yes"}}}},
    }))
    .expect("SigningKey");
    keys.create(&PostParams::default(), &sk).await.expect("create SigningKey");

    // Ready only with a certificate to serve; caBundle follows from the leader.
    let readyz = format!("http://127.0.0.1:{admin}/readyz");
    let ready = eventually("the operator ready to serve the webhook", Duration::from_secs(60), || async {
        http::get(&readyz, &[]).await.ok().filter(|r| r.status == 200)
    });
    tokio::select! {
        _ = ready => {}
        () = async { loop { operator.assert_running(); tokio::time::sleep(Duration::from_millis(500)).await } } => {}
    }
    eventually("caBundle patched", Duration::from_secs(30), || async {
        let bundle = cp.kubectl_ok(&[
            "get",
            "mutatingwebhookconfiguration",
            WEBHOOK,
            "-o",
            "jsonpath={.webhooks[0].clientConfig.caBundle}",
        ]);
        (!bundle.trim().is_empty()).then_some(())
    })
    .await;

    // Injected: a native sidecar with the SigningKey's algorithm and lifetime,
    // the copy in the Pod's namespace, the annotations' settings.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &team);
    let injected = eventually("an injected pod", Duration::from_secs(30), || async {
        pods.create(&PostParams::default(), &pod("first", true, app_annotations())).await.ok()
    })
    .await;
    let sidecar = sidecars(&injected);
    assert_eq!(sidecar.len(), 1, "{:?}", injected.spec);
    let args: Vec<&str> = sidecar[0].args.iter().flatten().map(String::as_str).collect();
    for want in [
        "--upstream=http://127.0.0.1:8080",
        "--issuer=http://issuer.test",
        "--algorithms=ES256",
        "--max-token-lifetime=10m",
        "--audience=orders",
        "--public-path=/healthz",
    ] {
        assert!(args.contains(&want), "{want} missing from {args:?}");
    }
    assert_eq!(sidecar[0].restart_policy.as_deref(), Some("Always"));
    let volumes = injected.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default();
    assert!(volumes.iter().any(|v| v.config_map.as_ref().is_some_and(|c| c.name == "api-jwks")), "{volumes:?}");

    // Injected again (a Pod created from an injected one): nothing changes.
    let mut again = injected.clone();
    again.metadata = kube::api::ObjectMeta {
        name: Some("second".into()),
        labels: injected.metadata.labels.clone(),
        annotations: injected.metadata.annotations.clone(),
        ..Default::default()
    };
    let again = pods.create(&PostParams::default(), &again).await.expect("create from an injected pod");
    assert_eq!(sidecars(&again), sidecars(&injected));
    assert_eq!(again.spec.as_ref().and_then(|s| s.volumes.as_ref()).map(Vec::len), Some(volumes.len()));

    // A server-side dry run is admitted too (sideEffects: None).
    let dry = PostParams { dry_run: true, ..Default::default() };
    let dry_run = pods.create(&dry, &pod("dry", true, app_annotations())).await.expect("dry run");
    assert_eq!(sidecars(&dry_run).len(), 1);

    // Not labelled: never sent to the webhook.
    let plain = pods.create(&PostParams::default(), &pod("plain", false, app_annotations())).await.expect("plain");
    assert!(sidecars(&plain).is_empty());

    // Refused, with the reason, to whoever creates the Pod.
    let refused = |ns: String, annotations: Value| {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        async move {
            match pods.create(&PostParams::default(), &pod("refused", true, annotations)).await {
                Ok(_) => panic!("admitted in {ns}"),
                Err(kube::Error::Api(status)) => status.message,
                Err(e) => panic!("{e}"),
            }
        }
    };
    let message = refused(team.clone(), json!({"sigil.dev/upstream-port": "8080"})).await;
    assert!(message.contains("annotation sigil.dev/audience is required"), "{message}");
    let message = refused(team.clone(), json!({"sigil.dev/audience": "o", "sigil.dev/upstream-port": "9091"})).await;
    assert!(message.contains("sigil.dev/admin-port"), "{message}");
    let message = refused(elsewhere.clone(), app_annotations()).await;
    assert!(message.contains(&format!("does not publish its keys in namespace {elsewhere}")), "{message}");
    let mut missing = app_annotations();
    missing["sigil.dev/signing-key"] = json!(format!("{keys_ns}/nope"));
    let message = refused(team.clone(), missing).await;
    assert!(message.contains(&format!("SigningKey {keys_ns}/nope does not exist")), "{message}");

    // Counted by result.
    let metrics = http::get(&format!("http://127.0.0.1:{admin}/metrics"), &[]).await.expect("metrics").text();
    let count = |result: &str| -> f64 {
        let prefix = format!("sigil_operator_injections_total{{result=\"{result}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok()).unwrap_or(0.0)
    };
    assert!(count("injected") >= 3.0 && count("refused") >= 4.0, "{metrics}");

    operator.assert_running();
    for ns in [&team, &elsewhere] {
        let _ = namespaces.delete(ns, &DeleteParams::default()).await;
    }
    keys.delete("api", &DeleteParams::default()).await.expect("delete SigningKey");
    cp.kubectl_ok(&["delete", "mutatingwebhookconfiguration", WEBHOOK]);
}
