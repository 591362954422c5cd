//! Sigil as pods on a real node: a kubelet, containerd and kube-proxy beside
//! the control plane (`hack/control-plane up --node`), Sigil's images built
//! here and imported, the chart installed with helm. The kubelet mounts the
//! Secret and the ConfigMap and refreshes them on its own schedule, so the
//! rotation test sees the real propagation delay.
//!
//! Tests take turns (one lock): each installs cluster-scoped objects, node
//! ports and an operator that watches every namespace.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sigil_e2e::pods::{self, Demo, DemoOptions, NAMESPACE, Traffic, now, read};
use sigil_e2e::process::free_port;
use sigil_e2e::{ControlPlane, eventually, http, repo_root};
use tokio::sync::Mutex;

static TURN: LazyLock<Mutex<()>> = LazyLock::new(|| Mutex::new(()));

fn node() -> &'static ControlPlane {
    ControlPlane::with_node()
}

// ---------------------------------------------------------------------------
// The chart

/// Every values file in charts/sigil/ci, installed into a namespace that
/// enforces Pod Security "restricted": every pod starts and becomes Ready.
#[tokio::test]
async fn every_values_file_brings_its_pods_to_ready_under_restricted() {
    let _turn = TURN.lock().await;
    let cp = node();
    let chart = repo_root().join("charts/sigil");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(chart.join("ci")).expect("ci dir").map(|e| e.expect("entry").path()).collect();
    files.sort();
    assert!(files.len() >= 5, "charts/sigil/ci has the values files: {files:?}");
    for values in files {
        let stem = values.file_stem().and_then(|s| s.to_str()).expect("name").trim_end_matches("-values").to_owned();
        let ns = format!("values-{stem}");
        cp.kubectl_ok(&["create", "namespace", &ns]);
        cp.kubectl_ok(&["label", "namespace", &ns, "pod-security.kubernetes.io/enforce=restricted"]);
        // What the kind demo values expect to exist.
        if stem == "kind-demo" {
            cp.kubectl_ok(&[
                "apply",
                "-n",
                &ns,
                "-f",
                &repo_root().join("examples/issuer-clients.yaml").to_string_lossy(),
            ]);
            cp.kubectl_ok(&["apply", "-n", &ns, "-f", &repo_root().join("examples/signingkey.yaml").to_string_lossy()]);
        }
        let started = Instant::now();
        cp.helm_ok(&[
            "install",
            "sigil",
            chart.to_str().expect("utf-8"),
            "-n",
            &ns,
            "-f",
            values.to_str().expect("utf-8"),
            "--wait",
            "--timeout=180s",
        ]);
        let pods = cp.pods(&ns, "app.kubernetes.io/name=sigil");
        let values_text = std::fs::read_to_string(&values).expect("values");
        let want = if stem == "ha" {
            5
        } else if stem == "issuer-off" {
            1
        } else {
            2
        };
        assert_eq!(pods.len(), want, "{stem}: pods {}", names(&pods));
        for pod in &pods {
            let ready = pod["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
            assert!(ready, "{stem}: pod {} is not Ready:\n{}", pod["metadata"]["name"], pod["status"]);
            assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
        }
        println!("{stem}: {} pods Ready {:.1}s after helm install", pods.len(), started.elapsed().as_secs_f64());
        if values_text.contains("replicas: 2") {
            // HA: exactly one operator holds the Lease, and it is a running pod.
            let holder = eventually("a leader", Duration::from_secs(60), || async {
                let lease =
                    cp.kubectl(&["get", "lease", "sigil-operator", "-n", &ns, "-o", "jsonpath={.spec.holderIdentity}"]);
                let holder = String::from_utf8_lossy(&lease.stdout).trim().to_owned();
                (lease.status.success() && !holder.is_empty()).then_some(holder)
            })
            .await;
            let operators = cp.pods(&ns, "app.kubernetes.io/component=operator");
            assert!(
                operators.iter().any(|p| p["metadata"]["name"] == holder.as_str()),
                "the Lease holder {holder} is one of the operator pods {}",
                names(&operators)
            );
        }
        let _ = cp.kubectl(&["delete", "signingkeys", "--all", "-n", &ns, "--timeout=60s"]);
        cp.helm_ok(&["uninstall", "sigil", "-n", &ns, "--wait", "--timeout=120s"]);
        cp.kubectl_ok(&["delete", "namespace", &ns, "--timeout=120s"]);
    }
}

fn names(pods: &[Value]) -> String {
    pods.iter().filter_map(|p| p["metadata"]["name"].as_str()).collect::<Vec<_>>().join(", ")
}

// ---------------------------------------------------------------------------
// The token flow through Services

/// The README's and the kind demo's flow: a token from the issuer, then the
/// app through its sidecar: 401 without it, 200 with it, 403 for a scope the
/// client lacks, through the NodePort, the ClusterIP and `kubectl port-forward`.
#[tokio::test]
async fn the_demo_answers_401_200_and_403_through_its_services() {
    let _turn = TURN.lock().await;
    let cp = node();
    let demo = Demo::install(cp, DemoOptions::default()).await;
    let token = demo.token().await.expect("a token from the issuer's node port");

    let cluster_ip =
        cp.kubectl_ok(&["get", "service", "demo-app", "-n", NAMESPACE, "-o", "jsonpath={.spec.clusterIP}"]);
    let forward_port = free_port();
    let mut forward = Command::new(&cp.kubectl)
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .args(["port-forward", "-n", NAMESPACE, "svc/demo-app", &format!("{forward_port}:80")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl port-forward");
    let routes =
        [demo.app.clone(), format!("http://{}:80", cluster_ip.trim()), format!("http://127.0.0.1:{forward_port}")];
    for base in &routes {
        let get = |path: &'static str, bearer: Option<String>| {
            let url = format!("{base}{path}");
            async move {
                let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
                http::get(&url, &headers).await.ok()
            }
        };
        let bearer = Some(format!("Bearer {}", token.raw));
        // A new ClusterIP or port-forward routes a moment after it exists.
        let without = eventually(&format!("{base} answering"), Duration::from_secs(30), || get("/hello", None)).await;
        assert_eq!(without.status, 401, "{base}: {}", without.text());
        assert_eq!(without.header("www-authenticate"), Some("Bearer realm=\"sigil\""));
        let with = get("/hello", bearer.clone()).await.expect("call with a token");
        assert_eq!(with.status, 200, "{base}: {}", with.text());
        assert_eq!(with.json()["clientId"], pods::CLIENT_ID);
        assert_eq!(with.json()["authorizationForwarded"], false, "the sidecar strips the token");
        let admin = get("/admin", bearer).await.expect("call /admin");
        assert_eq!(admin.status, 403, "{base}: the demo client lacks the admin scope");
        let mut forged = token.raw.clone();
        forged.replace_range(forged.len() - 4.., "AAAA");
        let forged = get("/hello", Some(format!("Bearer {forged}"))).await.expect("call with a forged token");
        assert_eq!(forged.status, 401);
    }
    let _ = forward.kill();
    let _ = forward.wait();
}

// ---------------------------------------------------------------------------
// The rotation promise, measured

/// Tokens live 60 s here (the demo client's 10m shortened), so retain can be
/// short and the test takes minutes, not hours.
const TOKEN_TTL: u64 = 60;
/// The kubelet refreshes mounted ConfigMaps and Secrets on its sync loop
/// (`syncFrequency`, 1m by default, as on this node) plus jitter: a change
/// arrives up to about 90 s later (bench/rotation records what we measure).
/// A new key must be published at least that long before it signs.
const PRE_PUBLISH: u64 = 120;
/// A retired key must stay published until every token it signed expired:
/// the issuer may sign with it until the kubelet delivers the new Secret
/// (up to PRE_PUBLISH after activation), and such a token lives TOKEN_TTL;
/// 1m more of clock skew. The CRD refuses anything shorter.
const RETAIN: u64 = PRE_PUBLISH + TOKEN_TTL + 60;

fn rotation_signing_key() -> String {
    let mut key: Value = serde_yaml::from_str(&read("examples/signingkey.yaml")).expect("example SigningKey");
    key["spec"]["algorithm"] = json!("ES256");
    key["spec"].as_object_mut().expect("spec").remove("keySize");
    key["spec"]["maxTokenLifetime"] = json!(format!("{TOKEN_TTL}s"));
    key["spec"]["rotation"] =
        json!({"every": "720h", "prePublish": format!("{PRE_PUBLISH}s"), "retain": format!("{RETAIN}s")});
    serde_yaml::to_string(&key).expect("YAML")
}

fn short_lived_clients() -> String {
    let clients = read("examples/issuer-clients.yaml");
    assert!(clients.contains("ttl: 10m"), "examples/issuer-clients.yaml gives the demo client ttl: 10m");
    clients.replace("ttl: 10m", &format!("ttl: {TOKEN_TTL}s"))
}

/// The SigningKey's status fields.
fn status(cp: &ControlPlane) -> Value {
    let sk = cp.kubectl_ok(&["get", "signingkey", "api", "-n", NAMESPACE, "-o", "json"]);
    serde_json::from_str::<Value>(&sk).expect("SigningKey")["status"].clone()
}

/// The name of the Secret the operator keeps the SigningKey's keys in.
fn signing_key_secret_name(cp: &ControlPlane) -> String {
    let selector = "sigil.dev/signing-key=api";
    let name =
        cp.kubectl_ok(&["get", "secret", "-l", selector, "-n", NAMESPACE, "-o", "jsonpath={.items[0].metadata.name}"]);
    assert!(!name.trim().is_empty(), "no Secret labelled {selector}");
    name.trim().to_owned()
}

fn force_delete_one(cp: &ControlPlane, component: &str) -> (String, f64) {
    let pods = cp.pods(NAMESPACE, &format!("app.kubernetes.io/component={component}"));
    let pod = pods[0]["metadata"]["name"].as_str().expect("pod name").to_owned();
    let at = now();
    cp.kubectl_ok(&["delete", "pod", &pod, "-n", NAMESPACE, "--grace-period=0", "--force"]);
    (pod, at)
}

/// When the kubelet delivered a published key to the issuer's and the
/// sidecars' mounts, in seconds after the ConfigMap changed.
async fn propagation(demo: &Demo, kid: &str, changed_at: f64) -> (f64, f64) {
    let timeout = Duration::from_secs(PRE_PUBLISH);
    let issuer = eventually("the issuer's mounted JWKS to show the new key", timeout, || async {
        demo.issuer_kids().await.filter(|kids| kids.iter().any(|k| k == kid)).map(|_| now() - changed_at)
    });
    let sidecar = eventually("every sidecar's mounted JWKS to show the new key", timeout, || async {
        // By kid, not by count: the operator may drop a retired key meanwhile.
        let kids = demo.sidecar_kids().await;
        let has = |k: &Option<Vec<String>>| k.as_ref().is_some_and(|k| k.iter().any(|k| k == kid));
        (!kids.is_empty() && kids.iter().all(has)).then(|| now() - changed_at)
    });
    tokio::join!(issuer, sidecar)
}

/// The README's promise under load on a real kubelet: three rotations, the
/// operator and an issuer pod force-deleted mid-rotation, the Secret deleted,
/// and a revocation,
/// while tokens are issued and used continuously. Nothing may fail except
/// tokens of the revoked key and, allowed by design, token requests that
/// were routed to the force-deleted issuer pod before its endpoint went.
#[tokio::test]
async fn rotation_under_load_with_the_kubelets_real_delay_fails_no_request() {
    let _turn = TURN.lock().await;
    let cp = node();
    let demo = Demo::install(
        cp,
        DemoOptions {
            clients: Some(short_lived_clients()),
            signing_key: Some(rotation_signing_key()),
            helm: &["--set", "issuer.replicas=2"],
        },
    )
    .await;
    let traffic = Traffic::start(&demo.urls);
    let started = now();
    let mut measured: Vec<BTreeMap<&str, Value>> = Vec::new();
    let mut deleted_issuer_at = None;
    let mut kids = vec![status(cp)["activeKeyId"].as_str().expect("an active key").to_owned()];

    // Three manual rotations, then a fourth forced by deleting the Secret:
    // its keys stay published and the replacement is pre-published (the
    // issuer keeps signing with the key it holds meanwhile).
    for rotation in 1..=4 {
        let before = kids.last().expect("active").clone();
        let mut event = None;
        if rotation == 4 {
            let secret = signing_key_secret_name(cp);
            cp.kubectl_ok(&["delete", "secret", &secret, "-n", NAMESPACE]);
            event = Some(format!("Secret {secret} deleted"));
        } else {
            cp.kubectl_ok(&[
                "annotate",
                "signingkey",
                "api",
                "-n",
                NAMESPACE,
                &format!("sigil.dev/rotate=r{rotation}"),
                "--overwrite",
            ]);
        }
        let (next, published_at) = eventually("the next key in the ConfigMap", Duration::from_secs(30), || async {
            demo.published_kids().into_iter().find(|k| !kids.contains(k)).map(|k| (k, now()))
        })
        .await;
        let propagate = propagation(&demo, &next, published_at);
        let (issuer_delay, sidecar_delay) = if rotation == 1 || rotation == 4 {
            propagate.await
        } else {
            // Mid pre-publish: the operator (rotation 2) or an issuer pod
            // (rotation 3) dies without a chance to finish anything.
            let component = if rotation == 2 { "operator" } else { "issuer" };
            let (pod, at) = force_delete_one(cp, component);
            if component == "issuer" {
                deleted_issuer_at = Some(at);
            }
            event = Some(format!("{component} pod {pod} force-deleted {:.0}s after publication", at - published_at));
            propagate.await
        };
        assert!(
            issuer_delay < PRE_PUBLISH as f64 && sidecar_delay < PRE_PUBLISH as f64,
            "the kubelet delivered the key after prePublish: issuer {issuer_delay:.1}s, sidecars {sidecar_delay:.1}s"
        );
        // Activation: the status names the new key; then the issuer's mount
        // gets the new Secret and tokens carry the new kid.
        let activated_at = eventually("activation", Duration::from_secs(PRE_PUBLISH + 60), || async {
            (status(cp)["activeKeyId"].as_str() == Some(next.as_str())).then(now)
        })
        .await;
        let signing_delay = eventually("tokens signed by the new key", Duration::from_secs(150), || async {
            demo.token().await.ok().filter(|t| t.kid == next).map(|_| now() - activated_at)
        })
        .await;
        println!(
            "rotation {rotation}: {before:.8} -> {next:.8}; kubelet delivered the JWKS to the issuer after {issuer_delay:.1}s \
             and to the sidecar after {sidecar_delay:.1}s; activated {:.1}s after publication; the issuer signed with it \
             {signing_delay:.1}s after activation{}",
            activated_at - published_at,
            event.as_deref().map(|e| format!("; {e}")).unwrap_or_default()
        );
        measured.push(BTreeMap::from([
            ("rotation", json!(rotation)),
            ("jwksToIssuerSeconds", json!(issuer_delay)),
            ("jwksToSidecarSeconds", json!(sidecar_delay)),
            ("activatedAfterPublicationSeconds", json!(activated_at - published_at)),
            ("secretToIssuerSeconds", json!(signing_delay)),
        ]));
        kids.push(next);
    }

    // Revoke the key retired last: its tokens stop working, nothing else does.
    let revoked = kids[kids.len() - 2].clone();
    let revoked_at = now();
    cp.kubectl_ok(&[
        "patch",
        "signingkey",
        "api",
        "-n",
        NAMESPACE,
        "--type=merge",
        "-p",
        &json!({"spec": {"revokedKeyIds": [revoked]}}).to_string(),
    ]);
    eventually("the revoked key to leave the ConfigMap", Duration::from_secs(30), || async {
        (!demo.published_kids().contains(&revoked)).then_some(())
    })
    .await;
    let (issuer_delay, _) = {
        let timeout = Duration::from_secs(PRE_PUBLISH);
        let issuer = eventually("the issuer to drop the revoked key", timeout, || async {
            demo.issuer_kids().await.filter(|k| !k.contains(&revoked)).map(|_| now() - revoked_at)
        });
        let sidecar = eventually("the sidecars to drop the revoked key", timeout, || async {
            let kids = demo.sidecar_kids().await;
            let dropped = |k: &Option<Vec<String>>| k.as_ref().is_some_and(|k| !k.is_empty() && !k.contains(&revoked));
            (!kids.is_empty() && kids.iter().all(dropped)).then(|| now() - revoked_at)
        });
        tokio::join!(issuer, sidecar)
    };
    // Let the traffic run past the revocation for a while.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let report = traffic.stop().await;

    // Judge every failure.
    let mut revoked_failures = 0;
    let mut endpoint_failures = 0;
    let mut unexplained = Vec::new();
    for f in &report.failures {
        if f.kid.as_deref() == Some(revoked.as_str()) && f.at >= revoked_at {
            revoked_failures += 1;
        } else if f.kind == "token"
            && f.why.starts_with("connection")
            && deleted_issuer_at.is_some_and(|d| f.at >= d && f.at < d + 10.0)
        {
            endpoint_failures += 1;
        } else {
            unexplained.push(f.clone());
        }
    }
    println!(
        "rotation under load: {:.0}s, {} tokens issued, {} calls through the sidecar, {} failures: {revoked_failures} \
         with the revoked key, {endpoint_failures} token requests routed to the force-deleted issuer pod, {} \
         unexplained; keys {:?}; the issuer dropped the revoked key {issuer_delay:.1}s after revocation",
        now() - started,
        report.tokens,
        report.calls,
        report.failures.len(),
        unexplained.len(),
        report.kids,
    );
    std::fs::write(
        pods::report_path("rotation-under-load"),
        serde_json::to_string_pretty(&json!({
            "syncFrequency": "1m (kubelet default)",
            "prePublishSeconds": PRE_PUBLISH, "retainSeconds": RETAIN, "tokenTtlSeconds": TOKEN_TTL,
            "rotations": measured,
            "tokens": report.tokens, "calls": report.calls,
            "failuresRevokedKey": revoked_failures, "failuresForceDeletedIssuer": endpoint_failures,
            "failuresUnexplained": unexplained.len(),
            "revocationToIssuerSeconds": issuer_delay,
        }))
        .expect("JSON"),
    )
    .expect("write report");
    assert!(unexplained.is_empty(), "failed requests the design does not allow:\n{unexplained:#?}");
    assert!(report.tokens > 100 && report.calls > 200, "the traffic really ran: {report:?}");
    assert!(report.kids.len() >= 5, "tokens were signed by all five keys: {:?}", report.kids);
}

// ---------------------------------------------------------------------------
// Rollouts

/// `kubectl rollout restart` of the issuer and of the demo app while tokens
/// are issued and used: the pre-stop delay keeps each old pod serving until
/// it has left the Service's endpoints, and the issuer's own shutdown delay
/// and drain let it finish what still arrives, so no request fails. Each
/// rollout is measured on its own, so a failure names the component.
#[tokio::test]
async fn rolling_restarts_of_the_issuer_and_the_app_drop_no_request() {
    let _turn = TURN.lock().await;
    let cp = node();
    let demo = Demo::install(cp, DemoOptions::default()).await;
    for (deployment, selector) in
        [("sigil-issuer", "app.kubernetes.io/component=issuer"), ("demo-app", "app.kubernetes.io/name=demo-app")]
    {
        let traffic = Traffic::start(&demo.urls);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before: Vec<String> = cp
            .pods(NAMESPACE, selector)
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        cp.kubectl_ok(&["rollout", "restart", "-n", NAMESPACE, &format!("deployment/{deployment}")]);
        cp.rollout_status(NAMESPACE, deployment);
        // The old pods are gone, not just unready.
        eventually("the old pods to terminate", Duration::from_secs(60), || async {
            let now = names(&cp.pods(NAMESPACE, selector));
            (!before.iter().any(|p| now.contains(p.as_str()))).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let report = traffic.stop().await;
        println!(
            "rolling restart of {deployment}: {} tokens issued, {} calls, {} failures",
            report.tokens,
            report.calls,
            report.failures.len()
        );
        assert!(report.failures.is_empty(), "requests failed during the {deployment} rollout:\n{:#?}", report.failures);
        assert!(report.tokens > 20, "the traffic really ran during the {deployment} rollout: {report:?}");
    }
}

// ---------------------------------------------------------------------------
// Sidecar injection

/// Namespaces this test creates beside the demo's, removed however it ends.
struct Namespaces(&'static ControlPlane, Vec<&'static str>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.1 {
            let _ = self.0.kubectl(&["delete", "namespace", ns, "--ignore-not-found", "--timeout=120s"]);
        }
    }
}

/// The chart with the injector on; examples/injected-app.yaml applied in a
/// second namespace that enforces Pod Security "restricted". The API server
/// calls the webhook (served by the operator pod, with the certificate the
/// operator issued and the caBundle it patched), the Pod gets a native
/// sidecar verifying with the JWKS copy in its namespace, and the app answers
/// 401 without a token and 200 with one, through a rotation with no failed
/// request. Pods the webhook must refuse are refused with the reason.
#[tokio::test]
async fn an_injected_app_in_another_namespace_verifies_through_a_rotation() {
    let _turn = TURN.lock().await;
    let cp = node();
    let (team, other) = ("sigil-team-a", "sigil-team-b");
    let namespaces = Namespaces(cp, vec![team, other]);
    for ns in &namespaces.1 {
        let _ = cp.kubectl(&["delete", "namespace", ns, "--ignore-not-found", "--timeout=120s"]);
    }
    let mut key: Value = serde_yaml::from_str(&rotation_signing_key()).expect("SigningKey");
    // What the chart gives its own SigningKey with the injector on.
    key["spec"]["distribution"] = json!({"namespaceSelector": {"matchLabels": {"sigil.dev/inject": "enabled"}}});
    let demo = Demo::install(
        cp,
        DemoOptions {
            clients: Some(short_lived_clients()),
            signing_key: Some(serde_yaml::to_string(&key).expect("YAML")),
            helm: &["--set", "injector.enabled=true"],
        },
    )
    .await;
    eventually("the operator to patch caBundle", Duration::from_secs(30), || async {
        let bundle = cp.kubectl_ok(&[
            "get",
            "mutatingwebhookconfiguration",
            "sigil-injector",
            "-o",
            "jsonpath={.webhooks[0].clientConfig.caBundle}",
        ]);
        (!bundle.trim().is_empty()).then_some(())
    })
    .await;

    for ns in [team, other] {
        cp.kubectl_ok(&["create", "namespace", ns]);
        cp.kubectl_ok(&["label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted"]);
    }
    cp.kubectl_ok(&["label", "namespace", team, "sigil.dev/inject=enabled"]);
    eventually("the JWKS copy in the team's namespace", Duration::from_secs(30), || async {
        cp.kubectl(&["get", "configmap", "api-jwks", "-n", team]).status.success().then_some(())
    })
    .await;
    let example = repo_root().join("examples/injected-app.yaml");
    cp.kubectl_ok(&["apply", "-n", team, "-f", &example.to_string_lossy()]);
    cp.rollout_status(team, "orders");

    let pod = cp.pods(team, "app.kubernetes.io/name=orders").into_iter().next().expect("an orders pod");
    let init = &pod["spec"]["initContainers"];
    assert_eq!(init[0]["name"], "sigil-sidecar", "{init}");
    assert_eq!(init[0]["restartPolicy"], "Always", "a native sidecar");
    assert_eq!(pod["spec"]["containers"].as_array().map(Vec::len), Some(1), "the app alone in containers");
    assert!(
        pod["spec"]["volumes"].as_array().into_iter().flatten().any(|v| v["configMap"]["name"] == "api-jwks"),
        "the JWKS copy is mounted"
    );

    // Through the Service, from this machine (a node port added here).
    let node_port = 30801;
    cp.kubectl_ok(&[
        "patch",
        "service",
        "orders",
        "-n",
        team,
        "-p",
        &json!({"spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80, "targetPort": "sigil-http", "nodePort": node_port}]}})
            .to_string(),
    ]);
    let urls = pods::Urls { issuer: demo.issuer.clone(), app: cp.node_url(node_port) };
    let without = eventually("the injected app's node port", Duration::from_secs(30), || async {
        urls.call("/hello", None).await.ok()
    })
    .await;
    assert_eq!(without.status, 401, "{}", without.text());
    assert_eq!(without.header("www-authenticate"), Some("Bearer realm=\"sigil\""));
    let token = urls.token().await.expect("a token");
    let with = urls.call("/hello", Some(&token)).await.expect("a call with the token");
    assert_eq!(with.status, 200, "{}", with.text());
    assert_eq!(with.json()["clientId"], pods::CLIENT_ID);
    assert_eq!(urls.call("/admin", Some(&token)).await.expect("call /admin").status, 403, "the scope annotation");
    assert_eq!(urls.call("/public", None).await.expect("call /public").status, 200, "the public-path annotation");

    // Refusals come back to whoever creates the Pod, with the reason.
    let refused = |ns: &str, annotations: Value| {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "refused", "labels": {"sigil.dev/inject": "enabled"}, "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "sigil-demo-app:0.1.0"}]},
        });
        let path = cp.dir.join(format!("refused-{ns}.json"));
        std::fs::write(&path, pod.to_string()).expect("write pod");
        let out = cp.kubectl(&["create", "-n", ns, "-f", &path.to_string_lossy()]);
        assert!(!out.status.success(), "the pod was admitted in {ns}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(team, json!({"sigil.dev/upstream-port": "8080"}));
    assert!(err.contains("sigil.dev/audience"), "{err}");
    let err = refused(other, json!({"sigil.dev/audience": "demo-api", "sigil.dev/upstream-port": "8080"}));
    assert!(err.contains("does not publish its keys in namespace sigil-team-b"), "{err}");

    // A rotation under traffic: the copy must carry the next key before it signs.
    let before = status(cp)["activeKeyId"].as_str().expect("an active key").to_owned();
    let traffic = Traffic::start(&urls);
    cp.kubectl_ok(&["annotate", "signingkey", "api", "-n", NAMESPACE, "sigil.dev/rotate=injected", "--overwrite"]);
    let next = eventually("the next key", Duration::from_secs(30), || async {
        status(cp)["nextKeyId"].as_str().filter(|k| *k != before).map(str::to_owned)
    })
    .await;
    eventually("activation", Duration::from_secs(PRE_PUBLISH + 60), || async {
        (status(cp)["activeKeyId"].as_str() == Some(next.as_str())).then_some(())
    })
    .await;
    eventually("tokens signed by the new key", Duration::from_secs(150), || async {
        urls.token().await.ok().filter(|t| t.kid == next).map(|_| ())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let report = traffic.stop().await;
    println!(
        "injected app through a rotation: {} tokens, {} calls, {} failures, keys {:?}",
        report.tokens,
        report.calls,
        report.failures.len(),
        report.kids
    );
    assert!(report.failures.is_empty(), "failed requests through the injected sidecar:\n{:#?}", report.failures);
    assert!(report.kids.contains(&before) && report.kids.contains(&next), "both keys signed: {:?}", report.kids);
    assert!(report.calls > 100, "the traffic really ran: {report:?}");
    drop(namespaces);
}
