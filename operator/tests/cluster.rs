//! The operator binary against a real kube-apiserver, etcd and
//! kube-controller-manager on loopback (`hack/control-plane`): the CRD is
//! applied, SigningKeys are created, and what lands in the cluster is checked.
//! Every wait is bounded, so a broken operator fails the test, never hangs it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::json;
use sigil_api::contract::{self, SecretKeys};
use sigil_api::jwk::JwkSet;
use sigil_api::signing_key::{KeyState, SigningKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NS: &str = "sigil-it";

/// The control plane, stopped when the test ends however it ends (the
/// script's `--watch-pid` covers a killed test process too).
struct ControlPlane {
    dir: PathBuf,
    repo: PathBuf,
}

impl ControlPlane {
    fn up() -> ControlPlane {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("operator-cluster-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let status = Command::new(repo.join("hack/control-plane"))
            .args(["up", dir.to_str().expect("utf-8 path"), "--watch-pid", &std::process::id().to_string()])
            .env("SIGIL_CONTROL_PLANE_TIMEOUT", "120")
            .stdout(Stdio::null())
            .status()
            .expect("run hack/control-plane");
        assert!(
            status.success(),
            "hack/control-plane up failed (see its output above; binaries: hack/build-binaries.sh)"
        );
        ControlPlane { dir, repo }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig()).expect("kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("config");
        Client::try_from(config).expect("client")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Keep the logs of a failed run (the operators' are logs/operator-*.log).
        let keep = std::thread::panicking();
        let mut down = Command::new(self.repo.join("hack/control-plane"));
        down.args(["down", self.dir.to_str().unwrap_or_default()]);
        if keep {
            eprintln!("logs kept in {}", self.dir.join("logs").display());
        } else {
            down.arg("--clean");
        }
        let _ = down.stderr(Stdio::null()).status();
    }
}

/// The operator process, killed when the test ends.
struct Operator {
    child: Child,
    admin: std::net::SocketAddr,
}

impl Operator {
    fn start(cluster: &ControlPlane, identity: &str) -> Operator {
        let log = std::fs::File::create(cluster.dir.join(format!("logs/operator-{identity}.log"))).expect("log");
        let admin = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port");
        let child = Command::new(env!("CARGO_BIN_EXE_sigil-operator"))
            .args(["--namespace", NS, "--lease-namespace", NS, "--identity", identity, "--log-format", "text"])
            .args(["--admin-listen", &admin.to_string()])
            .env("KUBECONFIG", cluster.kubeconfig())
            .env("RUST_LOG", "info,kube=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sigil-operator");
        Operator { child, admin }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Operator {
    /// SIGTERM, as the kubelet sends, and the exit status within `limit`.
    fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(start.elapsed() < limit, "operator did not exit within {limit:?} of SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Polls `check` until it returns `Some`, or fails after `limit`.
async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ready_reason(sk: &SigningKey) -> Option<(String, String)> {
    let c = sk.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone()))
}

/// The Secret's keys, the JWKS kids, and the ConfigMap's records, all parsed.
struct Observed {
    secret: Secret,
    config_map: ConfigMap,
    active: String,
    next: Option<String>,
    published: Vec<String>,
    records: Vec<sigil_api::signing_key::KeyStatus>,
}

async fn observe(secrets: &Api<Secret>, config_maps: &Api<ConfigMap>, name: &str) -> Option<Observed> {
    let secret = secrets.get_opt(&contract::default_secret_name(name)).await.ok()??;
    let config_map = config_maps.get_opt(&contract::default_jwks_config_map_name(name)).await.ok()??;
    let keys = SecretKeys::from_secret_data(secret.data.as_ref()?).ok()?;
    let jwks = config_map.data.as_ref()?.get(contract::JWKS)?;
    let parsed = JwkSet::parse(jwks.as_bytes()).expect("the JWKS parses strictly");
    assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
    // The published public key is the Secret's key, not just a matching kid.
    let set: JwkSet = serde_json::from_str(jwks).expect("jwks");
    for key in std::iter::once(&keys.active).chain(keys.next.as_ref()) {
        if let Some(jwk) = set.keys.iter().find(|j| j.kid == key.kid()) {
            assert_eq!(jwk, key.public_jwk(), "published JWK differs from the Secret's key");
        }
    }
    let records =
        contract::parse_key_records(config_map.metadata.annotations.as_ref()?.get(contract::ANNOTATION_KEYS)?).ok()?;
    Some(Observed {
        active: keys.active.kid().to_owned(),
        next: keys.next.as_ref().map(|k| k.kid().to_owned()),
        published: parsed.keys.into_iter().map(|k| k.kid).collect(),
        records,
        secret,
        config_map,
    })
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect admin");
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

fn signing_key(name: &str, spec: serde_json::Value) -> SigningKey {
    let mut sk = SigningKey::new(name, serde_json::from_value(spec).expect("spec"));
    sk.metadata.namespace = Some(NS.into());
    sk
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_against_a_real_api_server() {
    let cluster = ControlPlane::up();
    let client = cluster.client().await;

    // The CRD, as the binary prints it, established.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &SigningKey::crd()).await.expect("create CRD");
    wait_for("the CRD to be established", Duration::from_secs(30), || async {
        let crd = crds.get("signingkeys.sigil.dev").await.ok()?;
        let established = crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(())
    })
    .await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).expect("ns");
    namespaces.create(&PostParams::default(), &ns).await.expect("namespace");

    let operator = Operator::start(&cluster, "a");
    let signing_keys: Api<SigningKey> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);

    // --- Creation: Ready, and the Secret and ConfigMap agree.
    let spec = json!({"algorithm": "ES256", "rotation": {"every": "1h", "prePublish": "5s", "retain": "8s"}});
    signing_keys.create(&PostParams::default(), &signing_key("api", spec)).await.expect("create SigningKey");
    let sk = wait_for("SigningKey api to be Ready", Duration::from_secs(30), || async {
        let sk = signing_keys.get("api").await.ok()?;
        (ready_reason(&sk)? == ("True".into(), "KeyActive".into())).then_some(sk)
    })
    .await;
    let first = observe(&secrets, &config_maps, "api").await.expect("Secret and ConfigMap");
    let status = sk.status.clone().expect("status");
    assert_eq!(status.active_key_id.as_deref(), Some(first.active.as_str()));
    assert_eq!(first.published, vec![first.active.clone()]);
    assert_eq!(first.next, None);
    assert_eq!(status.keys, first.records, "status and the ConfigMap annotation hold the same records");
    for meta in [&first.secret.metadata, &first.config_map.metadata] {
        let owner = &meta.owner_references.as_ref().expect("owner")[0];
        assert_eq!((owner.uid.as_str(), owner.controller), (sk.uid().expect("uid").as_str(), Some(true)));
        assert_eq!(meta.labels.as_ref().expect("labels")[contract::LABEL_MANAGED_BY], contract::MANAGED_BY);
    }
    assert_eq!(first.secret.type_.as_deref(), Some(contract::SECRET_TYPE));

    // --- Idempotence: a reconcile of an up-to-date SigningKey writes nothing.
    let patch = json!({"metadata": {"labels": {"touched": "yes"}}});
    signing_keys.patch("api", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("touch");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = observe(&secrets, &config_maps, "api").await.expect("objects");
    assert_eq!(again.secret.resource_version(), first.secret.resource_version(), "the Secret was rewritten");
    assert_eq!(again.config_map.resource_version(), first.config_map.resource_version(), "the ConfigMap was rewritten");

    // --- Manual rotation: pre-published for 5s, then active, then the old key retires and leaves after 8s.
    let patch = json!({"metadata": {"annotations": {contract::ANNOTATION_ROTATE: "1"}}});
    signing_keys.patch("api", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate");
    let rotating = wait_for("the next key to be published", Duration::from_secs(15), || async {
        let o = observe(&secrets, &config_maps, "api").await?;
        o.next.clone().filter(|n| o.published.contains(n)).map(|_| o)
    })
    .await;
    let second = rotating.next.clone().expect("next");
    assert_eq!(rotating.active, first.active, "the next key does not sign before prePublish");
    let published_at = Instant::now();
    let rotated = wait_for("the next key to be activated", Duration::from_secs(20), || async {
        let o = observe(&secrets, &config_maps, "api").await?;
        (o.active == second && o.records.iter().any(|r| r.key_id == first.active && r.state == KeyState::Retired))
            .then_some(o)
    })
    .await;
    assert!(published_at.elapsed() >= Duration::from_secs(3), "activated too soon after publication");
    assert!(rotated.published.contains(&first.active), "the retired key stays published");
    let handled = rotated.config_map.metadata.annotations.as_ref().expect("annotations")
        [contract::ANNOTATION_ROTATE_HANDLED]
        .clone();
    assert_eq!(handled, "1");
    wait_for("the retired key to be removed", Duration::from_secs(20), || async {
        let o = observe(&secrets, &config_maps, "api").await?;
        (o.published == vec![second.clone()]).then_some(())
    })
    .await;

    // --- Revoking the active key: it leaves the JWKS and a new key signs at once.
    let patch = json!({"spec": {"revokedKeyIds": [second.clone()]}});
    signing_keys.patch("api", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("revoke");
    let replaced = wait_for("the revoked key to be replaced", Duration::from_secs(15), || async {
        let o = observe(&secrets, &config_maps, "api").await?;
        (o.active != second && !o.published.contains(&second)).then_some(o)
    })
    .await;
    assert_eq!(replaced.published, vec![replaced.active.clone()]);
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    wait_for("a KeyRevoked warning", Duration::from_secs(10), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("KeyRevoked") && e.type_.as_deref() == Some("Warning"))
            .then_some(())
    })
    .await;

    // --- Someone else's Secret is left alone and reported.
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": {"name": "other-signing-key", "namespace": NS},
        "stringData": {"password": "hunter2"}
    }))
    .expect("secret");
    let foreign = secrets.create(&PostParams::default(), &foreign).await.expect("foreign Secret");
    signing_keys
        .create(&PostParams::default(), &signing_key("other", json!({"algorithm": "EdDSA"})))
        .await
        .expect("create");
    wait_for("SigningKey other to report SecretConflict", Duration::from_secs(20), || async {
        let sk = signing_keys.get("other").await.ok()?;
        (ready_reason(&sk)? == ("False".into(), "SecretConflict".into())).then_some(())
    })
    .await;
    wait_for("a Conflict event", Duration::from_secs(10), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("Conflict")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("other")
            })
            .then_some(())
    })
    .await;
    let after = secrets.get("other-signing-key").await.expect("foreign Secret");
    assert_eq!(after.resource_version(), foreign.resource_version(), "the foreign Secret was modified");
    assert!(after.metadata.owner_references.is_none());
    assert!(config_maps.get_opt("other-jwks").await.expect("get").is_none(), "nothing is published for it");

    // --- Metrics on the admin port.
    let metrics = http_get(operator.admin, "/metrics").await;
    assert!(metrics.contains("sigil_operator_reconciles_total"), "{metrics}");
    assert!(metrics.contains("sigil_operator_reconcile_failures_total{reason=\"secret_conflict\"}"), "{metrics}");
    assert!(metrics.contains("sigil_operator_keys{state=\"Active\"} 1"), "{metrics}");
    assert!(http_get(operator.admin, "/readyz").await.starts_with("HTTP/1.1 200"));

    // --- Deleting the SigningKey garbage-collects its Secret and ConfigMap.
    signing_keys.delete("api", &DeleteParams::foreground()).await.expect("delete");
    wait_for("the Secret and ConfigMap to be collected", Duration::from_secs(30), || async {
        let secret = secrets.get_opt("api-signing-key").await.ok()?;
        let cm = config_maps.get_opt("api-jwks").await.ok()?;
        (secret.is_none() && cm.is_none()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(secrets.get_opt("api-signing-key").await.expect("get").is_none(), "keys minted during deletion");

    // --- Leader election: a second replica waits, and takes over when the first shuts down.
    let mut operator = operator;
    let standby = Operator::start(&cluster, "b");
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let holder = |lease: &Lease| lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
    wait_for("the standby to be ready", Duration::from_secs(15), || async {
        let ok = tokio::net::TcpStream::connect(standby.admin).await.is_ok();
        (ok && http_get(standby.admin, "/readyz").await.starts_with("HTTP/1.1 200")).then_some(())
    })
    .await;
    assert_eq!(holder(&leases.get("sigil-operator").await.expect("lease")).as_deref(), Some("a"));
    let exit = operator.terminate(Duration::from_secs(15));
    assert!(exit.success(), "graceful shutdown exits 0, got {exit}");
    let lease = wait_for("the standby to take the lease", Duration::from_secs(15), || async {
        let lease = leases.get("sigil-operator").await.ok()?;
        (holder(&lease).as_deref() == Some("b")).then_some(lease)
    })
    .await;
    assert!(lease.spec.and_then(|s| s.lease_transitions).unwrap_or(0) >= 1);
    signing_keys
        .create(&PostParams::default(), &signing_key("after", json!({"algorithm": "ES256"})))
        .await
        .expect("create");
    wait_for("the new leader to make SigningKey after Ready", Duration::from_secs(20), || async {
        let sk = signing_keys.get("after").await.ok()?;
        (ready_reason(&sk)? == ("True".into(), "KeyActive".into())).then_some(())
    })
    .await;
    eprintln!("standby took over and reconciled");
    drop(standby);
}
