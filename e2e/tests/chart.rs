//! The Helm chart, the examples and the image's command lines, against a real
//! API server: every values file in `charts/sigil/ci/` lints, renders, passes a
//! server-side dry run and installs into a namespace that enforces Pod
//! Security "restricted" (the ReplicaSet controller must be able to create
//! every pod); the operator's RBAC allows what it calls and nothing more; the
//! examples apply; and the binaries accept the flags the chart and the
//! examples pass them. Pods are admitted here but never run (this control
//! plane has no kubelet); `tests/pods.rs` runs them on a real node.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use sigil_e2e::process::binary;
use sigil_e2e::{ControlPlane, eventually, repo_root};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn chart_dir() -> PathBuf {
    repo_root().join("charts").join("sigil")
}

fn ci_values(name: &str) -> PathBuf {
    chart_dir().join("ci").join(name)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs helm against the control plane, with its own config and cache
/// directories so nothing outside the control plane's directory is touched.
fn helm(cp: &ControlPlane, args: &[&str]) -> Output {
    let home = cp.dir.join("helm");
    Command::new(&cp.helm)
        .args(args)
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("helm runs")
}

fn helm_ok(cp: &ControlPlane, args: &[&str]) -> String {
    let out = helm(cp, args);
    assert!(out.status.success(), "helm {} failed:\n{}{}", args.join(" "), text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// `helm template` with `values` (a file under ci/) and extra flags.
fn render(cp: &ControlPlane, namespace: &str, values: &Path, extra: &[&str]) -> Vec<Value> {
    documents(&render_text(cp, namespace, values, extra))
}

fn render_text(cp: &ControlPlane, namespace: &str, values: &Path, extra: &[&str]) -> String {
    let chart = chart_dir();
    let values = values.to_string_lossy();
    let mut args = vec!["template", "sigil", chart.to_str().expect("utf-8 path"), "-n", namespace, "-f", &values];
    args.extend_from_slice(extra);
    helm_ok(cp, &args)
}

/// The install notes (NOTES.txt) as `helm install --dry-run=client` prints
/// them (`helm template` leaves them out).
fn notes(cp: &ControlPlane, namespace: &str, extra: &[&str]) -> String {
    let chart = chart_dir();
    let mut args = vec!["install", "sigil", chart.to_str().expect("utf-8 path"), "-n", namespace, "--dry-run=client"];
    args.extend_from_slice(extra);
    let out = helm_ok(cp, &args);
    out.split_once("\nNOTES:\n").map(|(_, notes)| notes.to_owned()).unwrap_or_else(|| panic!("no NOTES in:\n{out}"))
}

/// Installs a stand-in for cert-manager's Certificate CRD (the kind alone,
/// no schema), so that `helm install --dry-run` can map a rendered
/// Certificate. Once per control plane.
fn certificate_crd(cp: &ControlPlane) {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let crd = serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "certificates.cert-manager.io"},
            "spec": {
                "group": "cert-manager.io", "scope": "Namespaced",
                "names": {"kind": "Certificate", "listKind": "CertificateList", "plural": "certificates",
                          "singular": "certificate"},
                "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                    "type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
            }
        });
        let path = cp.dir.join("cert-manager-certificate-crd.json");
        std::fs::write(&path, crd.to_string()).expect("write CRD");
        cp.kubectl_ok(&["apply", "--server-side", "-f", &path.to_string_lossy()]);
        cp.kubectl_ok(&["wait", "--for=condition=Established", "crd/certificates.cert-manager.io", "--timeout=60s"]);
    });
}

/// The issuer container's arguments in a rendered chart.
fn issuer_args(docs: &[Value]) -> Vec<String> {
    named(docs, "Deployment", "sigil-issuer")["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("arg").to_owned())
        .collect()
}

/// The YAML documents of a multi-document stream, as JSON values.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", names(docs)))
}

fn names(docs: &[Value]) -> Vec<String> {
    docs.iter().map(|d| format!("{}/{}", d["kind"].as_str().unwrap_or("?"), d["metadata"]["name"])).collect()
}

/// A namespace whose Pod Security admission enforces (and warns about) the
/// "restricted" profile.
fn restricted_namespace(cp: &ControlPlane, prefix: &str) -> String {
    let ns = cp.namespace(prefix);
    cp.kubectl_ok(&[
        "label",
        "namespace",
        &ns,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    ]);
    // The label is live: a pod that breaks the profile is refused.
    let pod = cp.dir.join(format!("{ns}-privileged-pod.json"));
    std::fs::write(
        &pod,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "privileged"},
            "spec": {"containers": [{"name": "c", "image": "x", "securityContext": {"privileged": true}}]}
        })
        .to_string(),
    )
    .expect("write pod");
    let out = cp.kubectl(&["create", "-n", &ns, "-f", &pod.to_string_lossy()]);
    assert!(!out.status.success(), "a privileged pod was admitted in {ns}");
    assert!(text(&out.stderr).contains("violates PodSecurity \"restricted"), "{}", text(&out.stderr));
    ns
}

/// An installed release.
struct Release {
    name: String,
    namespace: String,
    /// What the chart rendered, as helm recorded it.
    manifest: Vec<Value>,
}

impl Release {
    fn fullname(&self) -> String {
        format!("{}-sigil", self.name)
    }

    fn operator_sa(&self) -> String {
        format!("system:serviceaccount:{}:{}-operator", self.namespace, self.fullname())
    }
}

/// `helm install` of the chart with a ci/ values file into a fresh
/// restricted namespace. Without --wait: pods never become ready here.
fn install(cp: &ControlPlane, release: &str, values: &str) -> Release {
    let namespace = restricted_namespace(cp, &format!("chart-{release}"));
    let chart = chart_dir();
    let values = ci_values(values);
    let out = helm(
        cp,
        &[
            "install",
            release,
            chart.to_str().expect("utf-8 path"),
            "-n",
            &namespace,
            "-f",
            &values.to_string_lossy(),
            "--timeout",
            "60s",
        ],
    );
    assert!(out.status.success(), "helm install failed:\n{}{}", text(&out.stdout), text(&out.stderr));
    // Pod Security warns at the Deployment already; there must be nothing to warn about.
    assert!(!text(&out.stderr).contains("PodSecurity"), "helm install warned: {}", text(&out.stderr));
    let notes = text(&out.stdout);
    assert!(notes.contains("examples/signingkey.yaml"), "NOTES.txt was not shown:\n{notes}");
    let manifest = documents(&helm_ok(cp, &["get", "manifest", release, "-n", &namespace]));
    Release { name: release.to_owned(), namespace, manifest }
}

/// Names of the objects of `resource` carrying the release's instance label.
fn installed(cp: &ControlPlane, release: &Release, resource: &str, cluster_scoped: bool) -> BTreeSet<String> {
    let selector = format!("app.kubernetes.io/instance={}", release.name);
    let mut args = vec!["get", resource, "-l", &selector, "-o", "json"];
    if !cluster_scoped {
        args.extend_from_slice(&["-n", &release.namespace]);
    }
    let list: Value = serde_json::from_str(&cp.kubectl_ok(&args)).expect("kubectl json");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().expect("name").to_owned())
        .collect()
}

fn set(names: &[String]) -> BTreeSet<String> {
    names.iter().cloned().collect()
}

/// Each Deployment's ReplicaSet created all its pods in the restricted
/// namespace, and nothing failed to be created.
async fn assert_pods_created(cp: &ControlPlane, release: &Release) {
    for deployment in of_kind(&release.manifest, "Deployment") {
        let name = deployment["metadata"]["name"].as_str().expect("name");
        let replicas = deployment["spec"]["replicas"].as_u64().expect("replicas");
        let selector = deployment["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("matchLabels")
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().expect("label value")))
            .collect::<Vec<_>>()
            .join(",");
        eventually(&format!("{replicas} pods of {name}"), Duration::from_secs(60), || {
            let count = pod_count(cp, &release.namespace, &selector);
            async move { (count == replicas).then_some(()) }
        })
        .await;
    }
    let events = cp.kubectl_ok(&["get", "events", "-n", &release.namespace, "-o", "json"]);
    let events: Value = serde_json::from_str(&events).expect("events json");
    let failed: Vec<&Value> =
        events["items"].as_array().expect("items").iter().filter(|e| e["reason"] == "FailedCreate").collect();
    assert!(failed.is_empty(), "pods failed to be created: {failed:#?}");
}

fn pod_count(cp: &ControlPlane, namespace: &str, selector: &str) -> u64 {
    let pods = cp.kubectl_ok(&["get", "pods", "-n", namespace, "-l", selector, "-o", "json"]);
    let pods: Value = serde_json::from_str(&pods).expect("pods json");
    pods["items"].as_array().map_or(0, |items| items.len() as u64)
}

/// `kubectl auth can-i` as `user`; `args` are the verb, resource and scope.
fn can(cp: &ControlPlane, user: &str, args: &[&str]) -> bool {
    let as_user = format!("--as={user}");
    let mut full = vec!["auth", "can-i"];
    full.extend_from_slice(args);
    full.push(&as_user);
    let out = cp.kubectl(&full);
    match text(&out.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!("kubectl auth can-i {}: {other:?} {}", args.join(" "), text(&out.stderr)),
    }
}

fn assert_can(cp: &ControlPlane, user: &str, cases: &[&[&str]]) {
    let missing: Vec<String> = cases.iter().filter(|c| !can(cp, user, c)).map(|c| c.join(" ")).collect();
    assert!(missing.is_empty(), "{user} lacks permissions it needs: {missing:#?}");
}

fn assert_cannot(cp: &ControlPlane, user: &str, cases: &[&[&str]]) {
    let excess: Vec<String> = cases.iter().filter(|c| can(cp, user, c)).map(|c| c.join(" ")).collect();
    assert!(excess.is_empty(), "{user} has permissions it must not have: {excess:#?}");
}

// ---------------------------------------------------------------------------
// Files: no API server needed.

#[test]
fn chart_crds_are_byte_identical_to_the_generated_ones() {
    let listing = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
            .collect()
    };
    let generated = repo_root().join("crds");
    let in_chart = chart_dir().join("crds");
    assert_eq!(listing(&generated), listing(&in_chart), "charts/sigil/crds/ must hold exactly the files of crds/");
    for name in listing(&generated) {
        let want = std::fs::read(generated.join(&name)).expect("read crd");
        let have = std::fs::read(in_chart.join(&name)).expect("read chart crd");
        assert!(
            want == have,
            "charts/sigil/crds/{name} differs from crds/{name}: run `cp crds/*.yaml charts/sigil/crds/`"
        );
    }
}

#[test]
fn chart_and_example_versions_follow_the_workspace() {
    let chart = std::fs::read_to_string(chart_dir().join("Chart.yaml")).expect("Chart.yaml");
    let chart: Value = serde_yaml::from_str(&chart).expect("Chart.yaml parses");
    assert_eq!(chart["version"], VERSION, "Chart.yaml version");
    assert_eq!(chart["appVersion"], VERSION, "Chart.yaml appVersion");
    let demo = documents(&std::fs::read_to_string(repo_root().join("examples/demo-app.yaml")).expect("demo app"));
    let containers = &named(&demo, "Deployment", "demo-app")["spec"]["template"]["spec"]["containers"];
    for (name, image) in [("sigil-sidecar", "sigil-sidecar"), ("app", "sigil-demo-app")] {
        let container = containers.as_array().expect("containers").iter().find(|c| c["name"] == name);
        assert_eq!(container.expect("container")["image"], format!("{image}:{VERSION}"));
    }
}

#[test]
fn the_example_clients_file_parses_and_holds_the_documented_demo_secret() {
    let docs = documents(&std::fs::read_to_string(repo_root().join("examples/issuer-clients.yaml")).expect("read"));
    let clients = named(&docs, "Secret", "sigil-demo-clients")["stringData"]["clients.yaml"].as_str().expect("text");
    let registry = sigil_issuer::clients::Registry::parse(clients, 0).expect("the issuer accepts the example");
    let client = &registry.clients["demo-client"];
    // hack/demo.sh and hack/kind-demo.sh log in with this secret.
    assert!(client.secret_hash.verify(b"demo-secret-change-me"));
    assert!(!client.secret_hash.verify(b"demo-secret-change-me "));
    let script = std::fs::read_to_string(repo_root().join("hack/demo-steps.sh")).expect("demo-steps.sh");
    assert!(script.contains("client_secret=demo-secret-change-me") && script.contains("client_id=demo-client"));
}

// ---------------------------------------------------------------------------
// helm lint / template / server-side dry run

#[test]
fn every_values_file_lints_renders_and_passes_a_server_side_dry_run() {
    let cp = ControlPlane::shared();
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci"))
        .expect("ci dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let stems: BTreeSet<String> =
        files.iter().map(|f| f.file_name().expect("name").to_string_lossy().into_owned()).collect();
    for want in [
        "default-values.yaml",
        "namespace-mode-values.yaml",
        "issuer-off-values.yaml",
        "ha-values.yaml",
        "kind-demo-values.yaml",
        "injector-values.yaml",
    ] {
        assert!(stems.contains(want), "charts/sigil/ci/{want} is missing");
    }
    let chart = chart_dir();
    for file in &files {
        let values = file.to_string_lossy();
        helm_ok(cp, &["lint", "--strict", chart.to_str().expect("utf-8"), "-f", &values]);
        let ns = cp.namespace("chart-dry-run");
        let yaml = render_text(cp, &ns, file, &[]);
        let rendered = documents(&yaml);
        assert!(!rendered.is_empty(), "{values} rendered nothing");
        let path = cp.dir.join(format!("{ns}.yaml"));
        std::fs::write(&path, yaml).expect("write rendered");
        let out = cp.kubectl(&["apply", "--dry-run=server", "-n", &ns, "-f", &path.to_string_lossy()]);
        assert!(out.status.success(), "server-side dry run of {values}:\n{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(
            text(&out.stdout).lines().filter(|l| l.ends_with("(server dry run)")).count(),
            rendered.len(),
            "every object of {values} is accepted:\n{}",
            text(&out.stdout)
        );
    }
}

#[test]
fn every_rendered_pod_is_restricted_and_bounded() {
    let cp = ControlPlane::shared();
    for values in ["default-values.yaml", "ha-values.yaml", "namespace-mode-values.yaml"] {
        let docs = render(cp, "sigil", &ci_values(values), &[]);
        let deployments = of_kind(&docs, "Deployment");
        assert!(!deployments.is_empty());
        for d in deployments {
            let pod = &d["spec"]["template"]["spec"];
            let name = &d["metadata"]["name"];
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
            assert_eq!(pod["securityContext"]["runAsUser"], 65532, "{name}");
            assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{name}");
            for c in pod["containers"].as_array().expect("containers") {
                let sc = &c["securityContext"];
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
                assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{name}");
                for bound in ["requests", "limits"] {
                    for resource in ["cpu", "memory"] {
                        assert!(c["resources"][bound][resource].is_string(), "{name}: {bound}.{resource}");
                    }
                }
                assert_eq!(c["readinessProbe"]["httpGet"]["port"], "admin", "{name}");
                assert_eq!(c["livenessProbe"]["httpGet"]["port"], "admin", "{name}");
            }
        }
        let issuer = docs.iter().find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "sigil-issuer");
        if let Some(issuer) = issuer {
            let pod = &issuer["spec"]["template"]["spec"];
            // The issuer never talks to the API server.
            assert_eq!(pod["automountServiceAccountToken"], false);
            // The private key and the clients file are readable by the pod's group only.
            for volume in pod["volumes"].as_array().expect("volumes") {
                if volume.get("secret").is_some() {
                    assert_eq!(volume["secret"]["defaultMode"], 0o440, "{}", volume["name"]);
                }
            }
        }
    }
}

#[test]
fn values_that_cannot_work_fail_at_install_time_with_a_clear_message() {
    let cp = ControlPlane::shared();
    let cases: &[(&[&str], &str)] = &[
        (&["--set", "operator.replicsa=2"], "additional properties 'replicsa' not allowed"),
        (&["--set", "image.tagg=1"], "additional properties 'tagg' not allowed"),
        (&["--set", "operator.scope=global"], "value must be one of 'cluster', 'namespace'"),
        (&["--set", "issuer.tokenTtl=15min"], "/issuer/tokenTtl"),
        (&["--set", "issuer.url=https://issuer.example/"], "/issuer/url"),
        (&["--set", "issuer.signingKey.algorithm=HS256"], "/issuer/signingKey/algorithm"),
        (&["--set", "issuer.signingKey.keySize=1024"], "/issuer/signingKey/keySize"),
        (&["--set-json", r#"issuer.clients.clients=[{"id":"a","secret":"plain"}]"#], "missing property 'secretHash'"),
        (
            &["--set-json", r#"issuer.clients.clients=[{"id":"a","secretHash":"plain"}]"#],
            "/issuer/clients/clients/0/secretHash",
        ),
        (&["--set-json", r#"issuer.trustedProxies=["ingress-nginx"]"#], "/issuer/trustedProxies/0"),
        (&["--set-json", r#"issuer.trustedProxies=["10.0.0.0/8,10.1.0.0/16"]"#], "/issuer/trustedProxies/0"),
        (
            &["--set", "operator.replicas=2", "--set", "operator.leaderElection.enabled=false"],
            "operator.replicas > 1 needs operator.leaderElection.enabled=true",
        ),
        (
            &["--set", "operator.scope=namespace", "--set", "operator.watchNamespace=elsewhere"],
            "the operator (namespace mode) watches only \"elsewhere\"",
        ),
        (
            &["--set", "injector.enabled=true", "--set", "operator.scope=namespace"],
            "injector.enabled needs operator.scope=cluster",
        ),
        (
            &["--set", "injector.enabled=true", "--set", "injector.certManager.enabled=true"],
            "injector.certManager.issuerRef.name is required",
        ),
        (&["--set", "injector.failurePolicy=Maybe"], "/injector/failurePolicy"),
        (&["--set", "injector.signingKey=api"], "/injector/signingKey"),
    ];
    let chart = chart_dir();
    for (flags, want) in cases {
        let mut args = vec!["template", "sigil", chart.to_str().expect("utf-8")];
        args.extend_from_slice(flags);
        let out = helm(cp, &args);
        assert!(!out.status.success(), "helm accepted {flags:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(want), "{flags:?}: {stderr:?} lacks {want:?}");
    }
}

/// Issue 13, finding 2 (plain HTTP only), in the chart: `issuer.tls` with an
/// existing Secret or a cert-manager Certificate makes every URL https and
/// mounts the certificate the TLS flags name; without it the install notes
/// warn that secrets cross the network in clear.
#[test]
fn tls_values_render_https_urls_the_certificate_and_its_mount() {
    let cp = ControlPlane::shared();
    certificate_crd(cp);
    let defaults = ci_values("default-values.yaml");
    let tls_flags = ["--tls-cert-file=/etc/sigil/tls/tls.crt", "--tls-key-file=/etc/sigil/tls/tls.key"];

    // The default: plain HTTP, opt-in TLS, and a warning that says so.
    let docs = render(cp, "sigil", &defaults, &[]);
    let args = issuer_args(&docs);
    assert!(args.contains(&"--issuer-url=http://sigil-issuer.sigil.svc".to_owned()), "{args:?}");
    assert!(!args.iter().any(|a| a.starts_with("--tls-")), "{args:?}");
    assert!(of_kind(&docs, "Certificate").is_empty());
    let pod = &named(&docs, "Deployment", "sigil-issuer")["spec"]["template"]["spec"];
    assert!(!pod["volumes"].as_array().expect("volumes").iter().any(|v| v["name"] == "tls"));
    let plain = notes(cp, "sigil", &[]);
    assert!(plain.contains("WARNING: the issuer serves plain HTTP"), "{plain}");
    assert!(plain.contains("secrets and passwords cross the network in clear"), "{plain}");
    assert!(plain.contains("--issuer=http://sigil-issuer.sigil.svc "), "{plain}");

    let cases: [(&str, &[&str], &str, &str); 2] = [
        (
            "an existing Secret",
            &["--set", "issuer.tls.enabled=true", "--set", "issuer.tls.secretName=issuer-cert"],
            "issuer-cert",
            // Port 80 over https is not the scheme's default: the URL names it.
            "https://sigil-issuer.sigil.svc:80",
        ),
        (
            "cert-manager",
            &[
                "--set",
                "issuer.tls.enabled=true",
                "--set",
                "issuer.service.port=443",
                "--set",
                "issuer.tls.certManager.enabled=true",
                "--set",
                "issuer.tls.certManager.issuerRef.name=internal-ca",
                "--set",
                "issuer.tls.certManager.issuerRef.kind=ClusterIssuer",
                "--set-json",
                r#"issuer.tls.certManager.dnsNames=["issuer.example.com"]"#,
            ],
            "sigil-issuer-tls",
            "https://sigil-issuer.sigil.svc",
        ),
    ];
    for (case, flags, secret, url) in cases {
        let docs = render(cp, "sigil", &defaults, flags);
        let args = issuer_args(&docs);
        assert!(args.contains(&format!("--issuer-url={url}")), "{case}: {args:?}");
        for flag in tls_flags {
            assert!(args.iter().any(|a| a == flag), "{case}: {flag} missing from {args:?}");
        }
        let pod = &named(&docs, "Deployment", "sigil-issuer")["spec"]["template"]["spec"];
        let volume = pod["volumes"].as_array().expect("volumes").iter().find(|v| v["name"] == "tls");
        let volume = volume.unwrap_or_else(|| panic!("{case}: no tls volume in {}", pod["volumes"]));
        assert_eq!(volume["secret"]["secretName"], secret, "{case}");
        assert_eq!(volume["secret"]["defaultMode"], 0o440, "{case}: the key is readable by the pod's group only");
        let mounts = pod["containers"][0]["volumeMounts"].as_array().expect("volumeMounts");
        let mount = mounts.iter().find(|m| m["name"] == "tls").unwrap_or_else(|| panic!("{case}: no tls mount"));
        assert_eq!(mount["mountPath"], "/etc/sigil/tls", "{case}: the TLS flags name files in the mounted Secret");
        assert_eq!(mount["readOnly"], true, "{case}");

        // What sidecars are told to expect as `iss` and where the JWKS is.
        let notes = notes(cp, "sigil", flags);
        assert!(notes.contains(&format!("--issuer={url} ")), "{case}: {notes}");
        assert!(notes.contains(&format!("{url}/.well-known/jwks.json")), "{case}: {notes}");
        assert!(notes.contains("https://sigil-issuer.sigil.svc:8080/token"), "{case}: {notes}");
        assert!(!notes.contains("WARNING"), "{case}: {notes}");

        let certificates = of_kind(&docs, "Certificate");
        if case == "cert-manager" {
            assert_eq!(certificates.len(), 1, "{case}");
            let spec = &certificates[0]["spec"];
            assert_eq!(spec["secretName"], secret, "cert-manager writes the Secret the issuer mounts");
            assert_eq!(
                spec["dnsNames"],
                serde_json::json!([
                    "sigil-issuer",
                    "sigil-issuer.sigil",
                    "sigil-issuer.sigil.svc",
                    "issuer.example.com"
                ])
            );
            assert_eq!(spec["issuerRef"], serde_json::json!({"name": "internal-ca", "kind": "ClusterIssuer"}));
        } else {
            assert!(certificates.is_empty(), "{case}: the Secret is the user's, no Certificate");
        }
    }

    // cert-manager without an issuer to sign: a clear refusal, not a
    // Certificate that never becomes ready.
    let chart = chart_dir();
    let out = helm(
        cp,
        &[
            "template",
            "sigil",
            chart.to_str().expect("utf-8"),
            "--set",
            "issuer.tls.enabled=true",
            "--set",
            "issuer.tls.certManager.enabled=true",
        ],
    );
    assert!(!out.status.success(), "helm rendered cert-manager TLS without an issuerRef");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("issuer.tls.certManager.issuerRef.name is required: the cert-manager Issuer or ClusterIssuer"),
        "{stderr}"
    );
}

#[test]
fn trusted_proxies_reach_the_issuer_only_when_set() {
    let cp = ControlPlane::shared();
    let defaults = ci_values("default-values.yaml");
    let args = issuer_args(&render(cp, "sigil", &defaults, &[]));
    assert!(!args.iter().any(|a| a.starts_with("--trusted-proxies")), "{args:?}");
    let args = issuer_args(&render(
        cp,
        "sigil",
        &defaults,
        &["--set-json", r#"issuer.trustedProxies=["10.244.0.0/16","fd00::/8","192.0.2.7"]"#],
    ));
    let proxies: Vec<&String> = args.iter().filter(|a| a.starts_with("--trusted-proxies")).collect();
    assert_eq!(proxies, ["--trusted-proxies=10.244.0.0/16,fd00::/8,192.0.2.7"], "{args:?}");
}

/// Workload identity: off, the issuer has no token and no RBAC; on, its
/// flags, its token, and a ClusterRole for exactly what it reads, which a
/// real API server grants its ServiceAccount and nothing more.
#[test]
fn workload_identity_gives_the_issuer_its_flags_token_and_least_rbac() {
    let cp = ControlPlane::shared();
    let defaults = ci_values("default-values.yaml");
    let off = render(cp, "sigil", &defaults, &[]);
    assert!(!issuer_args(&off).iter().any(|a| a.starts_with("--workload-identity")));
    assert!(
        of_kind(&off, "ClusterRole").iter().all(|r| !r["metadata"]["name"].as_str().unwrap_or("").contains("issuer"))
    );
    let issuer_pod = |docs: &[Value]| named(docs, "Deployment", "sigil-issuer")["spec"]["template"]["spec"].clone();
    assert_eq!(issuer_pod(&off)["automountServiceAccountToken"], false);

    let sa_issuer = "https://kubernetes.default.svc.cluster.local";
    let flags = [
        "--set",
        "issuer.workloadIdentity.enabled=true",
        "--set",
        &format!("issuer.workloadIdentity.serviceAccountIssuer={sa_issuer}"),
    ];
    let on = render(cp, "sigil", &defaults, &flags);
    let args = issuer_args(&on);
    assert!(args.contains(&"--workload-identity".to_owned()), "{args:?}");
    assert!(args.contains(&format!("--service-account-issuer={sa_issuer}")), "{args:?}");
    assert_eq!(issuer_pod(&on)["automountServiceAccountToken"], true);
    assert_eq!(named(&on, "ServiceAccount", "sigil-issuer")["automountServiceAccountToken"], true);
    let role = named(&on, "ClusterRole", "sigil-issuer-workload-identity");
    let rules = serde_json::to_string(&role["rules"]).expect("rules");
    for want in ["sigilclients", "tokenreviews", "/openid/v1/jwks"] {
        assert!(rules.contains(want), "{rules}");
    }

    // The same RBAC on a real API server: what it needs, and nothing to write.
    let ns = cp.namespace("chart-workload");
    let path = cp.dir.join(format!("{ns}-workload.yaml"));
    let rbac = render_text(
        cp,
        &ns,
        &defaults,
        &[
            &flags[..],
            &["--show-only", "templates/issuer/rbac.yaml", "--show-only", "templates/issuer/serviceaccount.yaml"],
        ]
        .concat(),
    );
    std::fs::write(&path, rbac).expect("write RBAC");
    cp.kubectl_ok(&["apply", "-n", &ns, "-f", &path.to_string_lossy()]);
    let issuer = format!("system:serviceaccount:{ns}:sigil-issuer");
    assert_can(
        cp,
        &issuer,
        &[
            &["list", "sigilclients.sigil.dev", "-A"],
            &["watch", "sigilclients.sigil.dev", "-A"],
            &["create", "tokenreviews.authentication.k8s.io"],
            &["get", "/openid/v1/jwks"],
        ],
    );
    assert_cannot(
        cp,
        &issuer,
        &[
            &["create", "sigilclients.sigil.dev", "-n", &ns],
            &["get", "secrets", "-n", &ns],
            &["create", "serviceaccounts/token", "-n", &ns],
            &["list", "pods", "-A"],
        ],
    );
    let out = helm(
        cp,
        &["template", "sigil", chart_dir().to_str().expect("utf-8"), "--set", "issuer.workloadIdentity.enabled=true"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("issuer.workloadIdentity.serviceAccountIssuer is required"),
        "{}",
        text(&out.stderr)
    );
    cp.kubectl_ok(&["delete", "-f", &path.to_string_lossy(), "-n", &ns]);
}

#[test]
fn service_monitors_are_rendered_only_when_enabled_and_select_the_metrics_services() {
    let cp = ControlPlane::shared();
    let defaults = render(cp, "sigil", &ci_values("default-values.yaml"), &[]);
    assert!(of_kind(&defaults, "ServiceMonitor").is_empty());
    for (values, components) in
        [("default-values.yaml", &["operator", "issuer"][..]), ("issuer-off-values.yaml", &["operator"][..])]
    {
        let docs = render(cp, "sigil", &ci_values(values), &["--set", "serviceMonitor.enabled=true"]);
        let monitors = of_kind(&docs, "ServiceMonitor");
        assert_eq!(monitors.len(), components.len(), "{values}");
        for monitor in monitors {
            let selector = monitor["spec"]["selector"]["matchLabels"].as_object().expect("selector");
            let matching: Vec<&Value> = of_kind(&docs, "Service")
                .into_iter()
                .filter(|s| selector.iter().all(|(k, v)| &s["metadata"]["labels"][k] == v))
                .collect();
            assert_eq!(matching.len(), 1, "{} must select exactly its metrics Service", monitor["metadata"]["name"]);
            let port = monitor["spec"]["endpoints"][0]["port"].as_str().expect("port");
            let ports = matching[0]["spec"]["ports"].as_array().expect("ports");
            assert!(ports.iter().any(|p| p["name"] == port), "{port} not on {}", matching[0]["metadata"]["name"]);
        }
    }
}

// ---------------------------------------------------------------------------
// helm install into restricted namespaces, and RBAC

#[tokio::test]
async fn defaults_install_a_cluster_wide_operator_with_the_least_rbac_that_works() {
    let cp = ControlPlane::shared();
    let r = install(cp, "defaults", "default-values.yaml");
    let f = r.fullname();
    let n = |s: &str| format!("{f}-{s}");
    assert_eq!(installed(cp, &r, "deployments", false), set(&[n("issuer"), n("operator")]));
    assert_eq!(installed(cp, &r, "serviceaccounts", false), set(&[n("issuer"), n("operator")]));
    assert_eq!(installed(cp, &r, "services", false), set(&[n("issuer"), n("issuer-metrics"), n("operator-metrics")]));
    assert_eq!(installed(cp, &r, "poddisruptionbudgets", false), set(&[n("issuer"), n("operator")]));
    assert_eq!(installed(cp, &r, "secrets", false), set(&[n("issuer-clients")]));
    assert_eq!(installed(cp, &r, "clusterroles", true), set(&[n("operator")]));
    assert_eq!(installed(cp, &r, "clusterrolebindings", true), set(&[n("operator")]));
    assert_eq!(installed(cp, &r, "roles", false), set(&[n("operator-leader-election")]));
    assert_eq!(installed(cp, &r, "rolebindings", false), set(&[n("operator-leader-election")]));
    let key: Value =
        serde_json::from_str(&cp.kubectl_ok(&["get", "signingkey", &n("issuer"), "-n", &r.namespace, "-o", "json"]))
            .expect("signingkey");
    assert_eq!(key["spec"]["secretName"], n("issuer-signing-key"));
    assert_eq!(key["spec"]["jwksConfigMapName"], n("issuer-jwks"));
    assert_eq!(key["spec"]["algorithm"], "RS256", "the CRD default applies");
    assert_pods_created(cp, &r).await;

    let sa = r.operator_sa();
    let other = cp.namespace("chart-other");
    let lease = n("operator");
    let ns = r.namespace.as_str();
    assert_can(
        cp,
        &sa,
        &[
            &["list", "signingkeys.sigil.dev", "-A"],
            &["watch", "signingkeys.sigil.dev", "-A"],
            &["patch", "signingkeys.sigil.dev", "--subresource=status", "-n", &other],
            &["update", "signingkeys.sigil.dev", "--subresource=finalizers", "-n", &other],
            &["list", "secrets", "-A"],
            &["watch", "configmaps", "-A"],
            &["get", "secrets", "-n", &other],
            &["create", "secrets", "-n", &other],
            &["patch", "configmaps", "-n", &other],
            &["create", "events.events.k8s.io", "-n", &other],
            &["patch", "events.events.k8s.io", "-n", &other],
            // JWKS copies (spec.distribution): find namespaces, delete a copy
            // no longer wanted, hold the finalizer that outlives them.
            &["list", "namespaces"],
            &["watch", "namespaces"],
            &["delete", "configmaps", "-n", &other],
            &["patch", "signingkeys.sigil.dev", "-n", &other],
            &["create", "leases.coordination.k8s.io", "-n", ns],
            &["get", &format!("leases.coordination.k8s.io/{lease}"), "-n", ns],
            &["update", &format!("leases.coordination.k8s.io/{lease}"), "-n", ns],
        ],
    );
    assert_cannot(
        cp,
        &sa,
        &[
            &["update", "signingkeys.sigil.dev", "-n", &other],
            &["delete", "signingkeys.sigil.dev", "-n", &other],
            &["delete", "secrets", "-n", &other],
            &["update", "secrets", "-n", &other],
            &["update", "configmaps", "-n", &other],
            &["delete", "namespaces"],
            &["patch", "namespaces"],
            &["get", "pods", "-n", &other],
            &["create", "pods", "-n", ns],
            &["create", "serviceaccounts/token", "-n", ns],
            &["create", "clusterroles"],
            &["create", "rolebindings", "-n", ns],
            &["impersonate", "users"],
            &["get", "leases.coordination.k8s.io/kube-controller-manager", "-n", "kube-system"],
            &["update", "leases.coordination.k8s.io/someone-else", "-n", ns],
            &["create", "leases.coordination.k8s.io", "-n", &other],
        ],
    );
    // The issuer has an identity and no rights at all.
    let issuer = format!("system:serviceaccount:{ns}:{}", n("issuer"));
    assert_cannot(
        cp,
        &issuer,
        &[
            &["get", "secrets", "-n", ns],
            &["get", "configmaps", "-n", ns],
            &["list", "signingkeys.sigil.dev", "-n", ns],
        ],
    );
}

#[tokio::test]
async fn namespace_mode_grants_one_namespace_and_nothing_cluster_wide() {
    let cp = ControlPlane::shared();
    let r = install(cp, "nsmode", "namespace-mode-values.yaml");
    let f = r.fullname();
    let n = |s: &str| format!("{f}-{s}");
    assert!(installed(cp, &r, "clusterroles", true).is_empty());
    assert!(installed(cp, &r, "clusterrolebindings", true).is_empty());
    assert_eq!(installed(cp, &r, "roles", false), set(&[n("operator"), n("operator-leader-election")]));
    assert_eq!(installed(cp, &r, "rolebindings", false), set(&[n("operator"), n("operator-leader-election")]));
    let args = &named(&r.manifest, "Deployment", &n("operator"))["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(args.as_array().expect("args").contains(&Value::from(format!("--namespace={}", r.namespace))), "{args}");
    let key: Value =
        serde_json::from_str(&cp.kubectl_ok(&["get", "signingkey", &n("issuer"), "-n", &r.namespace, "-o", "json"]))
            .expect("signingkey");
    assert_eq!(key["spec"]["algorithm"], "ES256");
    assert_eq!(key["spec"]["rotation"], serde_json::json!({"every": "24h", "prePublish": "10m", "retain": "1h"}));
    assert_eq!(key["spec"]["maxTokenLifetime"], "15m");
    assert_pods_created(cp, &r).await;

    let sa = r.operator_sa();
    let ns = r.namespace.as_str();
    let other = cp.namespace("chart-other");
    assert_can(
        cp,
        &sa,
        &[
            &["list", "signingkeys.sigil.dev", "-n", ns],
            &["watch", "signingkeys.sigil.dev", "-n", ns],
            &["patch", "signingkeys.sigil.dev", "--subresource=status", "-n", ns],
            &["list", "secrets", "-n", ns],
            &["create", "secrets", "-n", ns],
            &["patch", "configmaps", "-n", ns],
            &["create", "events.events.k8s.io", "-n", ns],
        ],
    );
    assert_cannot(
        cp,
        &sa,
        &[
            &["list", "secrets", "-A"],
            &["list", "signingkeys.sigil.dev", "-A"],
            &["get", "secrets", "-n", &other],
            &["create", "configmaps", "-n", &other],
            &["patch", "signingkeys.sigil.dev", "--subresource=status", "-n", &other],
            &["create", "events.events.k8s.io", "-n", &other],
            &["delete", "namespaces"],
            &["list", "namespaces"],
            &["delete", "configmaps", "-n", ns],
            &["patch", "signingkeys.sigil.dev", "-n", ns],
        ],
    );
}

#[tokio::test]
async fn issuer_off_installs_the_operator_alone() {
    let cp = ControlPlane::shared();
    let r = install(cp, "noissuer", "issuer-off-values.yaml");
    let n = |s: &str| format!("{}-{s}", r.fullname());
    assert_eq!(installed(cp, &r, "deployments", false), set(&[n("operator")]));
    assert_eq!(installed(cp, &r, "serviceaccounts", false), set(&[n("operator")]));
    assert_eq!(installed(cp, &r, "services", false), set(&[n("operator-metrics")]));
    assert_eq!(installed(cp, &r, "poddisruptionbudgets", false), set(&[n("operator")]));
    assert!(installed(cp, &r, "signingkeys.sigil.dev", false).is_empty());
    assert!(installed(cp, &r, "secrets", false).is_empty());
    assert_pods_created(cp, &r).await;
}

#[tokio::test]
async fn ha_runs_replicas_behind_a_lease_and_disruption_budgets() {
    let cp = ControlPlane::shared();
    let r = install(cp, "ha", "ha-values.yaml");
    let n = |s: &str| format!("{}-{s}", r.fullname());
    let operator = &named(&r.manifest, "Deployment", &n("operator"))["spec"];
    assert_eq!(operator["replicas"], 2);
    let args = operator["template"]["spec"]["containers"][0]["args"].as_array().expect("args");
    assert!(args.contains(&Value::from("--leader-election=true")), "{args:?}");
    assert!(args.contains(&Value::from(format!("--lease-name={}", n("operator")))), "{args:?}");
    assert_eq!(named(&r.manifest, "Deployment", &n("issuer"))["spec"]["replicas"], 3);
    for pdb in [n("operator"), n("issuer")] {
        let pdb: Value =
            serde_json::from_str(&cp.kubectl_ok(&["get", "pdb", &pdb, "-n", &r.namespace, "-o", "json"])).expect("pdb");
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    }
    // 2 operator and 3 issuer pods, all admitted under "restricted".
    assert_pods_created(cp, &r).await;
}

#[tokio::test]
async fn the_kind_demo_values_install_and_expose_the_issuer_on_its_node_port() {
    let cp = ControlPlane::shared();
    let r = install(cp, "kinddemo", "kind-demo-values.yaml");
    let n = |s: &str| format!("{}-{s}", r.fullname());
    assert!(installed(cp, &r, "signingkeys.sigil.dev", false).is_empty(), "the demo applies its own SigningKey");
    let service: Value =
        serde_json::from_str(&cp.kubectl_ok(&["get", "service", &n("issuer"), "-n", &r.namespace, "-o", "json"]))
            .expect("service");
    assert_eq!(service["spec"]["type"], "NodePort");
    assert_eq!(service["spec"]["ports"][0]["nodePort"], 30080);
    let pod = &named(&r.manifest, "Deployment", &n("issuer"))["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_array().expect("volumes");
    let volume = |name: &str| volumes.iter().find(|v| v["name"] == name).expect("volume").clone();
    assert_eq!(volume("signing-key")["secret"]["secretName"], "api-signing-key");
    assert_eq!(volume("jwks")["configMap"]["name"], "api-jwks");
    assert_eq!(volume("clients")["secret"]["secretName"], "sigil-demo-clients");
    assert_pods_created(cp, &r).await;
}

// ---------------------------------------------------------------------------
// Examples

#[tokio::test]
async fn the_examples_apply_in_a_restricted_namespace() {
    let cp = ControlPlane::shared();
    let ns = restricted_namespace(cp, "examples");
    for example in ["signingkey.yaml", "signingkey-es256.yaml", "issuer-clients.yaml", "demo-app.yaml"] {
        let path = repo_root().join("examples").join(example);
        let out = cp.kubectl(&["apply", "-n", &ns, "-f", &path.to_string_lossy()]);
        assert!(out.status.success(), "{example}: {}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("PodSecurity"), "{example} warned: {}", text(&out.stderr));
    }
    let keys: Value =
        serde_json::from_str(&cp.kubectl_ok(&["get", "signingkeys", "-n", &ns, "-o", "json"])).expect("sk");
    let algorithms: BTreeSet<String> = keys["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|k| format!("{}={}", k["metadata"]["name"].as_str().expect("name"), k["spec"]["algorithm"]))
        .collect();
    assert_eq!(algorithms, set(&["api=\"RS256\"".into(), "api-es256=\"ES256\"".into()]));
    // The demo app's pod (app + sidecar) is admitted under "restricted".
    eventually("the demo app's pod", Duration::from_secs(60), || {
        let count = pod_count(cp, &ns, "app.kubernetes.io/name=demo-app");
        async move { (count == 1).then_some(()) }
    })
    .await;
    let service: Value =
        serde_json::from_str(&cp.kubectl_ok(&["get", "service", "demo-app", "-n", &ns, "-o", "json"])).expect("svc");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "proxy", "only the sidecar's port is exposed");
}

// ---------------------------------------------------------------------------
// The binaries accept the command lines the chart and the examples give them.

/// A container's command, arguments and environment, with fieldRef values
/// filled in as the kubelet would.
fn command_line(container: &Value) -> (String, Vec<String>, Vec<(String, String)>) {
    // Without a command the image's entrypoint runs: /usr/local/bin/<image name>.
    let command = container["command"][0].as_str().map_or_else(
        || {
            let image = container["image"].as_str().expect("image");
            let name = image.rsplit('/').next().and_then(|n| n.split([':', '@']).next()).expect("image name");
            format!("/usr/local/bin/{name}")
        },
        str::to_owned,
    );
    let args =
        container["args"].as_array().expect("args").iter().map(|a| a.as_str().expect("arg").to_owned()).collect();
    let env = container["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .map(|e| {
                    let value = e["value"].as_str().map_or_else(|| "from-field-ref".to_owned(), str::to_owned);
                    (e["name"].as_str().expect("env name").to_owned(), value)
                })
                .collect()
        })
        .unwrap_or_default();
    (command, args, env)
}

/// Runs `program` and returns its exit code and stderr; kills it after 20 s.
fn run_briefly(program: &Path, args: &[String], env: &[(String, String)], extra_env: &[(&str, &str)]) -> (i32, String) {
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(extra_env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            return (status.code().unwrap_or(-1), text(&out.stderr));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("{} {args:?} did not stop:\n{}", program.display(), text(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_binaries_accept_the_flags_the_chart_and_the_examples_pass() {
    let cp = ControlPlane::shared();
    let mut containers: Vec<Value> = Vec::new();
    let renders: [(&str, &[&str]); 6] = [
        ("default-values.yaml", &[]),
        ("namespace-mode-values.yaml", &[]),
        ("ha-values.yaml", &[]),
        ("kind-demo-values.yaml", &[]),
        ("injector-values.yaml", &[]),
        // The optional flags the values above leave out.
        ("default-values.yaml", &["--set-json", r#"issuer.trustedProxies=["10.244.0.0/16","fd00::/8"]"#]),
    ];
    for (values, extra) in renders {
        for d in of_kind(&render(cp, "sigil", &ci_values(values), extra), "Deployment") {
            containers.extend(d["spec"]["template"]["spec"]["containers"].as_array().expect("containers").clone());
        }
    }
    let demo = documents(&std::fs::read_to_string(repo_root().join("examples/demo-app.yaml")).expect("demo app"));
    let demo_pod = &named(&demo, "Deployment", "demo-app")["spec"]["template"]["spec"];
    containers.extend(
        demo_pod["containers"].as_array().expect("containers").iter().filter(|c| c["name"] == "sigil-sidecar").cloned(),
    );

    let missing_kubeconfig = cp.dir.join("no-such-kubeconfig");
    let mut seen = BTreeSet::new();
    for container in &containers {
        let (command, args, env) = command_line(container);
        // Listen on an ephemeral loopback port instead of 0.0.0.0.
        let args: Vec<String> = args
            .iter()
            .map(|a| match a.split_once("=0.0.0.0:") {
                Some((flag, _)) => format!("{flag}=127.0.0.1:0"),
                None => a.clone(),
            })
            .collect();
        let name = command.rsplit('/').next().expect("binary name").to_owned();
        let package = name.clone();
        let program = binary(&package, &name);
        // Each binary gets past flag parsing and validation and then stops
        // at the first thing this machine lacks: the operator at connecting
        // (no cluster configured), the issuer at its key directory, the
        // sidecar at its JWKS file. A flag it does not know stops it earlier,
        // with clap's usage error instead.
        let kubeconfig = missing_kubeconfig.to_string_lossy();
        let (code, stderr) = run_briefly(&program, &args, &env, &[("KUBECONFIG", &kubeconfig)]);
        assert_ne!(code, 0, "{name} {args:?} should have stopped with an error");
        assert!(!stderr.contains("Usage:"), "{name} refused its flags {args:?}:\n{stderr}");
        let reached = match name.as_str() {
            "sigil-operator" => stderr.contains("cannot reach the Kubernetes API"),
            "sigil-issuer" => stderr.contains("/etc/sigil/signing-key"),
            "sigil-sidecar" => stderr.contains("/etc/sigil/jwks/jwks.json"),
            other => panic!("unexpected command {other}"),
        };
        assert!(reached, "{name} {args:?} stopped before reaching its files or the API:\n{stderr}");
        seen.insert(name);
    }
    assert_eq!(seen, set(&["sigil-issuer".into(), "sigil-operator".into(), "sigil-sidecar".into()]));
}

#[tokio::test]
async fn upgrading_to_ha_works_and_uninstall_keeps_the_signing_key() {
    let cp = ControlPlane::shared();
    let r = install(cp, "upgrade", "default-values.yaml");
    let n = |s: &str| format!("{}-{s}", r.fullname());
    let chart = chart_dir();
    let ha = ci_values("ha-values.yaml");
    // Selectors are immutable: an upgrade that changed them would fail here.
    helm_ok(cp, &["upgrade", &r.name, chart.to_str().expect("utf-8"), "-n", &r.namespace, "-f", &ha.to_string_lossy()]);
    let operator: Value =
        serde_json::from_str(&cp.kubectl_ok(&["get", "deployment", &n("operator"), "-n", &r.namespace, "-o", "json"]))
            .expect("deployment");
    assert_eq!(operator["spec"]["replicas"], 2);

    helm_ok(cp, &["uninstall", &r.name, "-n", &r.namespace, "--timeout", "60s"]);
    assert!(installed(cp, &r, "deployments", false).is_empty(), "uninstall removes the workloads");
    assert!(installed(cp, &r, "clusterroles", true).is_empty(), "and the cluster-wide RBAC");
    // Deleting the SigningKey would delete its keys and invalidate every token they signed.
    assert_eq!(installed(cp, &r, "signingkeys.sigil.dev", false), set(&[n("issuer")]));
}
