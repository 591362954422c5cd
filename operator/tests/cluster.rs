//! The operator binary against a real kube-apiserver, etcd and
//! kube-controller-manager on loopback (`hack/control-plane`): the CRD is
//! applied, SigningKeys are created, and what lands in the cluster is checked.
//! Every wait is bounded, so a broken operator fails the test, never hangs it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{CustomResourceExt, ResourceExt};
use serde_json::json;
use sigil_api::contract::{self, Lifecycle, SecretKeys};
use sigil_api::jwk::JwkSet;
use sigil_api::signing_key::{KeyState, SigningKey};
use sigil_e2e::{ControlPlane, eventually};

const NS: &str = "sigil-it";

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
            // These SigningKeys pre-publish for seconds: no kubelet delivers their JWKS here.
            .args(["--min-pre-publish", "1s"])
            .env("KUBECONFIG", &cluster.kubeconfig)
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
    rotate_handled: Option<String>,
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
    let lifecycle = Lifecycle::parse(&secret.data.as_ref()?.get(contract::LIFECYCLE)?.0).expect("lifecycle.json");
    let records = lifecycle.keys.iter().map(|r| r.status.clone()).collect();
    Some(Observed {
        rotate_handled: lifecycle.rotate_handled,
        active: keys.active.kid().to_owned(),
        next: keys.next.as_ref().map(|k| k.kid().to_owned()),
        published: parsed.keys.into_iter().map(|k| k.kid).collect(),
        records,
        secret,
        config_map,
    })
}

/// GET on an operator's admin port: (status, body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let reply = sigil_e2e::http::get(&format!("http://{addr}{path}"), &[]).await.expect("admin port answers");
    (reply.status.as_u16(), reply.text())
}

fn signing_key(name: &str, spec: serde_json::Value) -> SigningKey {
    let mut sk = SigningKey::new(name, serde_json::from_value(spec).expect("spec"));
    sk.metadata.namespace = Some(NS.into());
    sk
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_against_a_real_api_server() {
    // A control plane of this test's own: it installs the CRD as the binary prints it.
    let cluster = ControlPlane::start();
    let client = cluster.client().await;

    // The CRD, as the binary prints it, established.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &SigningKey::crd()).await.expect("create CRD");
    eventually("the CRD to be established", Duration::from_secs(30), || async {
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

    // --- Creation: Ready, and the Secret and ConfigMap agree. Tokens live 1s,
    // so retain needs 1s + prePublish + 1m of clock skew.
    let spec = json!({"algorithm": "ES256", "maxTokenLifetime": "1s",
                      "rotation": {"every": "1h", "prePublish": "5s", "retain": "66s"}});
    signing_keys.create(&PostParams::default(), &signing_key("api", spec)).await.expect("create SigningKey");
    let sk = eventually("SigningKey api to be Ready", Duration::from_secs(30), || async {
        let sk = signing_keys.get("api").await.ok()?;
        (ready_reason(&sk)? == ("True".into(), "KeyActive".into())).then_some(sk)
    })
    .await;
    let first = observe(&secrets, &config_maps, "api").await.expect("Secret and ConfigMap");
    let status = sk.status.clone().expect("status");
    assert_eq!(status.active_key_id.as_deref(), Some(first.active.as_str()));
    assert_eq!(first.published, vec![first.active.clone()]);
    assert_eq!(first.next, None);
    assert_eq!(status.keys, first.records, "status shows the records the Secret holds");
    assert!(first.config_map.metadata.annotations.is_none(), "the ConfigMap holds no state");
    let timings = status.conditions.iter().find(|c| c.type_ == "TimingsEnforced").expect("TimingsEnforced");
    assert_eq!(
        (timings.status.as_str(), timings.reason.as_str()),
        ("False", "FloorLowered"),
        "--min-pre-publish 1s is reported"
    );
    assert_eq!(first.secret.data.as_ref().expect("data")[contract::MAX_TOKEN_LIFETIME].0, b"1s");
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

    // --- A key planted in the ConfigMap (anyone with the edit role can) is removed and reported.
    let planted = sigil_api::PrivateKey::generate(sigil_api::Algorithm::ES256, None).expect("key");
    let mut set: JwkSet =
        serde_json::from_str(&first.config_map.data.as_ref().expect("data")[contract::JWKS]).expect("set");
    set.keys.push(planted.public_jwk().clone());
    let patch = json!({"data": {contract::JWKS: set.to_json()}});
    config_maps.patch("api-jwks", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("plant a key");
    eventually("the planted key to be removed", Duration::from_secs(15), || async {
        let o = observe(&secrets, &config_maps, "api").await?;
        (o.published == vec![first.active.clone()]).then_some(())
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    eventually("an UnknownKeyRemoved warning", Duration::from_secs(10), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.iter().any(|e| e.reason.as_deref() == Some("UnknownKeyRemoved")).then_some(())
    })
    .await;

    // --- Manual rotation: pre-published for 5s, then active, then the old key retires and leaves after 66s.
    let patch = json!({"metadata": {"annotations": {contract::ANNOTATION_ROTATE: "1"}}});
    signing_keys.patch("api", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate");
    let rotating = eventually("the next key to be published", Duration::from_secs(15), || async {
        let o = observe(&secrets, &config_maps, "api").await?;
        o.next.clone().filter(|n| o.published.contains(n)).map(|_| o)
    })
    .await;
    let second = rotating.next.clone().expect("next");
    assert_eq!(rotating.active, first.active, "the next key does not sign before prePublish");
    let published_at = Instant::now();
    let rotated = eventually("the next key to be activated", Duration::from_secs(20), || async {
        let o = observe(&secrets, &config_maps, "api").await?;
        (o.active == second && o.records.iter().any(|r| r.key_id == first.active && r.state == KeyState::Retired))
            .then_some(o)
    })
    .await;
    assert!(published_at.elapsed() >= Duration::from_secs(3), "activated too soon after publication");
    assert!(rotated.published.contains(&first.active), "the retired key stays published");
    assert_eq!(rotated.rotate_handled.as_deref(), Some("1"));
    eventually("the retired key to be removed", Duration::from_secs(90), || async {
        let o = observe(&secrets, &config_maps, "api").await?;
        (o.published == vec![second.clone()]).then_some(())
    })
    .await;

    // --- Revoking the active key: it leaves the JWKS and a new key signs at once.
    let patch = json!({"spec": {"revokedKeyIds": [second.clone()]}});
    signing_keys.patch("api", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("revoke");
    let replaced = eventually("the revoked key to be replaced", Duration::from_secs(15), || async {
        let o = observe(&secrets, &config_maps, "api").await?;
        (o.active != second && !o.published.contains(&second)).then_some(o)
    })
    .await;
    assert_eq!(replaced.published, vec![replaced.active.clone()]);
    eventually("a KeyRevoked warning", Duration::from_secs(10), || async {
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
    eventually("SigningKey other to report SecretConflict", Duration::from_secs(20), || async {
        let sk = signing_keys.get("other").await.ok()?;
        (ready_reason(&sk)? == ("False".into(), "SecretConflict".into())).then_some(())
    })
    .await;
    eventually("a Conflict event", Duration::from_secs(10), || async {
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
    let (status, metrics) = http_get(operator.admin, "/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    assert!(metrics.contains("sigil_operator_reconciles_total"), "{metrics}");
    assert!(metrics.contains("sigil_operator_reconcile_failures_total{reason=\"secret_conflict\"}"), "{metrics}");
    assert!(metrics.contains("sigil_operator_keys{state=\"Active\"} 1"), "{metrics}");
    assert_eq!(http_get(operator.admin, "/readyz").await.0, 200);

    // --- Copies to other namespaces need cluster scope: this operator watches
    // one namespace, so it says so and holds no finalizer it could not honour.
    let spec = json!({"algorithm": "ES256", "distribution": {"namespaceSelector": {}}});
    signing_keys.create(&PostParams::default(), &signing_key("wide", spec)).await.expect("create");
    let wide = eventually("SigningKey wide to report NamespacedOperator", Duration::from_secs(30), || async {
        let sk = signing_keys.get("wide").await.ok()?;
        let c = sk.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Distributed")?;
        (c.status == "False" && c.reason == "NamespacedOperator").then_some(sk)
    })
    .await;
    assert_eq!(ready_reason(&wide), Some(("True".into(), "KeyActive".into())), "its own JWKS is unaffected");
    assert!(wide.finalizers().is_empty(), "{:?}", wide.finalizers());
    assert!(wide.status.as_ref().expect("status").distribution.is_none());

    // --- Deleting the SigningKey garbage-collects its Secret and ConfigMap.
    signing_keys.delete("api", &DeleteParams::foreground()).await.expect("delete");
    eventually("the Secret and ConfigMap to be collected", Duration::from_secs(30), || async {
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
    eventually("the standby to be ready", Duration::from_secs(15), || async {
        let ok = tokio::net::TcpStream::connect(standby.admin).await.is_ok();
        (ok && http_get(standby.admin, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(holder(&leases.get("sigil-operator").await.expect("lease")).as_deref(), Some("a"));
    let exit = operator.terminate(Duration::from_secs(15));
    assert!(exit.success(), "graceful shutdown exits 0, got {exit}");
    let lease = eventually("the standby to take the lease", Duration::from_secs(15), || async {
        let lease = leases.get("sigil-operator").await.ok()?;
        (holder(&lease).as_deref() == Some("b")).then_some(lease)
    })
    .await;
    assert!(lease.spec.and_then(|s| s.lease_transitions).unwrap_or(0) >= 1);
    signing_keys
        .create(&PostParams::default(), &signing_key("after", json!({"algorithm": "ES256"})))
        .await
        .expect("create");
    eventually("the new leader to make SigningKey after Ready", Duration::from_secs(20), || async {
        let sk = signing_keys.get("after").await.ok()?;
        (ready_reason(&sk)? == ("True".into(), "KeyActive".into())).then_some(())
    })
    .await;
    eprintln!("standby took over and reconciled");
    drop(standby);
}
