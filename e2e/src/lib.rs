//! The harness for Sigil's integration and end-to-end tests: a real
//! etcd, kube-apiserver and kube-controller-manager on loopback, started by
//! `hack/control-plane` once per test binary and stopped by its watchdog when
//! the test process exits, however it exits.
//!
//! Tests share the control plane and isolate themselves by namespace.
//! [`mount`] stands in for the kubelet's Secret and ConfigMap volumes, for
//! fast tests; [`ControlPlane::with_node`] runs the real thing: a kubelet,
//! containerd and kube-proxy beside the control plane, and Sigil's images, so
//! [`pods`] tests run Sigil as pods.

pub mod http;
pub mod mount;
pub mod pods;
pub mod process;
pub mod stack;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

/// A running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    pub helm: PathBuf,
    /// With a node: its address (the bridge pods hang off), where NodePorts
    /// and pod IPs are reachable from this machine.
    pub node_ip: Option<String>,
}

/// The namespace of [`ControlPlane::operator_kubeconfig`]'s ServiceAccount.
pub const OPERATOR_NAMESPACE: &str = "sigil-system";

/// The repository root (tests run with the crate directory as cwd).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("e2e/ sits in the repository root").to_path_buf()
}

impl ControlPlane {
    /// The control plane of this test process, started on first use, with the
    /// SigningKey and SigilClient CRDs installed.
    pub fn shared() -> &'static ControlPlane {
        static SHARED: OnceLock<ControlPlane> = OnceLock::new();
        SHARED.get_or_init(|| {
            let cp = ControlPlane::start();
            cp.kubectl_ok(&["apply", "--server-side", "-f", &repo_root().join("crds").to_string_lossy()]);
            cp.wait_for_crds();
            cp
        })
    }

    /// The control plane of this test process with a node (one per machine
    /// at a time: `hack/control-plane --node`), Sigil's images imported and
    /// the CRD installed. Started on first use, stopped (and the machine
    /// restored) when this process exits.
    pub fn with_node() -> &'static ControlPlane {
        static NODE: OnceLock<ControlPlane> = OnceLock::new();
        NODE.get_or_init(|| {
            let mut args = vec!["--node".to_owned(), "--clean-on-exit".to_owned()];
            for image in images() {
                args.push("--image".to_owned());
                args.push(image.to_string_lossy().into_owned());
            }
            let cp = ControlPlane::launch("node", &args);
            cp.kubectl_ok(&["apply", "--server-side", "-f", &repo_root().join("crds").to_string_lossy()]);
            cp.wait_for_crds();
            cp
        })
    }

    /// Waits until every CRD of `crds/` is served.
    fn wait_for_crds(&self) {
        self.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "crd/signingkeys.sigil.dev",
            "crd/sigilclients.sigil.dev",
            "--timeout=60s",
        ]);
    }

    /// A control plane of its own, without the CRD, for a test that installs
    /// it itself. Stopped when this process exits.
    pub fn start() -> ControlPlane {
        ControlPlane::launch("control-plane", &[])
    }

    fn launch(kind: &str, extra: &[String]) -> ControlPlane {
        // Under target/, so `cargo clean` removes what earlier runs left; a
        // node's under /tmp, since its unix socket paths must stay under 108
        // bytes wherever the checkout is (`down` removes it).
        let name = format!("{kind}-{}", std::process::id());
        let dir = match kind {
            "node" => PathBuf::from("/tmp").join(format!("sigil-e2e-{name}")),
            _ => repo_root().join("target").join("e2e").join(name),
        };
        let script = repo_root().join("hack").join("control-plane");
        let out = Command::new(&script)
            .arg("up")
            .arg(&dir)
            .args(extra)
            .args(["--watch-pid", &std::process::id().to_string()])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "hack/control-plane up failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let env = String::from_utf8_lossy(&out.stdout);
        let value = |name: &str| -> Option<String> {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(|v| v.trim_matches('"').trim_matches('\'').to_owned())
        };
        let var = |name: &str| -> PathBuf {
            value(name).map(PathBuf::from).unwrap_or_else(|| panic!("hack/control-plane did not print {name}:\n{env}"))
        };
        ControlPlane {
            kubeconfig: var("KUBECONFIG"),
            kubectl: var("SIGIL_KUBECTL"),
            helm: var("SIGIL_HELM"),
            node_ip: value("SIGIL_NODE_IP"),
            dir,
        }
    }

    /// An admin client for this control plane.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("client config");
        kube::Client::try_from(config).expect("client")
    }

    /// Runs kubectl against this control plane.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(&self.kubectl).arg("--kubeconfig").arg(&self.kubeconfig).args(args).output().expect("kubectl runs")
    }

    /// Runs kubectl and fails the test, with its output, unless it succeeds.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A kubeconfig for the operator's own identity: the chart's ServiceAccount
    /// and RBAC (cluster scope, no leader election, the injector on; release
    /// "sigil" in namespace [`OPERATOR_NAMESPACE`]), with a TokenRequest token.
    /// Running the operator with it, not as admin, makes a missing permission
    /// in the chart fail the tests.
    pub fn operator_kubeconfig(&self) -> PathBuf {
        static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
        KUBECONFIG
            .get_or_init(|| {
                let ns = OPERATOR_NAMESPACE;
                let _ = self.kubectl(&["create", "namespace", ns]);
                let chart = repo_root().join("charts").join("sigil");
                let out = Command::new(&self.helm)
                    .args(["template", "sigil", &chart.to_string_lossy(), "--namespace", ns])
                    .args(["--set", "issuer.enabled=false", "--set", "operator.leaderElection.enabled=false"])
                    // With what the injection webhook adds (its caBundle, its certificate).
                    .args(["--set", "injector.enabled=true"])
                    .args(["--show-only", "templates/operator/serviceaccount.yaml"])
                    .args(["--show-only", "templates/operator/rbac.yaml"])
                    .output()
                    .expect("helm runs");
                assert!(out.status.success(), "helm template failed: {}", String::from_utf8_lossy(&out.stderr));
                let rendered = String::from_utf8(out.stdout).expect("utf-8");
                let manifest = self.dir.join("operator-rbac.yaml");
                std::fs::write(&manifest, &rendered).expect("write RBAC manifest");
                self.kubectl_ok(&["apply", "-n", ns, "-f", &manifest.to_string_lossy()]);
                let account = rendered
                    .split("\n---")
                    .filter_map(|doc| serde_yaml::from_str::<serde_json::Value>(doc).ok())
                    .find(|doc| doc["kind"] == "ServiceAccount")
                    .and_then(|doc| doc["metadata"]["name"].as_str().map(str::to_owned))
                    .expect("the chart renders the operator's ServiceAccount");
                let token = self.kubectl_ok(&["create", "token", &account, "-n", ns, "--duration=24h"]);
                let mut config = Kubeconfig::read_from(&self.kubeconfig).expect("admin kubeconfig");
                for named in &mut config.auth_infos {
                    named.auth_info = Some(kube::config::AuthInfo {
                        token: Some(token.trim().to_owned().into()),
                        ..Default::default()
                    });
                }
                let path = self.dir.join("operator.kubeconfig");
                std::fs::write(&path, serde_yaml::to_string(&config).expect("kubeconfig YAML")).expect("write");
                path
            })
            .clone()
    }

    /// Creates a fresh namespace named after `prefix`.
    pub fn namespace(&self, prefix: &str) -> String {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        self.kubectl_ok(&["create", "namespace", &name]);
        name
    }
}

/// Sigil's image archives (`hack/build-images.sh`), built from the current
/// code first.
pub fn images() -> Vec<PathBuf> {
    let script = repo_root().join("hack").join("build-images.sh");
    let out = Command::new(&script)
        .arg("--archive")
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(out.status.success(), "hack/build-images.sh failed");
    String::from_utf8_lossy(&out.stdout).lines().map(PathBuf::from).collect()
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after
/// `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
