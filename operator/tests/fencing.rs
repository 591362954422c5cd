//! Failover in the middle of a rotation, with two operator processes against
//! a real kube-apiserver and etcd: the leader is frozen (SIGSTOP: it can
//! neither renew nor write), the standby takes the Lease over and finishes
//! the rotation, and the old leader, woken up (SIGCONT), writes nothing more
//! and exits non-zero. The key history stays whole: the pre-published key is
//! the one activated, and the retired key stays published.
//!
//! A second SigningKey, the probe, is watched by the old leader only (it
//! runs cluster-wide, the standby in one namespace): its activation falls due
//! while the old leader is frozen and nobody else will do it, so a write the
//! old leader still sends on waking cannot be hidden by the new leader's.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use sigil_api::contract;
use sigil_api::jwk::JwkSet;
use sigil_api::signing_key::SigningKey;
use sigil_e2e::{ControlPlane, eventually};

/// An operator process with leader election in `namespace`, killed when dropped.
struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    /// Watches `scope`, or every namespace; the Lease lives in `lease_namespace`.
    fn start(cluster: &ControlPlane, scope: Option<&str>, lease_namespace: &str, identity: &str) -> Operator {
        let log = cluster.dir.join(format!("logs/operator-{lease_namespace}-{identity}.log"));
        let admin = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port");
        let scope = scope.map(|ns| vec!["--namespace", ns]).unwrap_or_default();
        let child = Command::new(env!("CARGO_BIN_EXE_sigil-operator"))
            .args(scope)
            .args(["--lease-namespace", lease_namespace, "--identity", identity])
            .args(["--log-format", "text", "--admin-listen", &admin.to_string()])
            // prePublish is 30s here: no kubelet delivers these JWKS.
            .args(["--min-pre-publish", "1s"])
            .env("KUBECONFIG", &cluster.kubeconfig)
            // Events name the replica that recorded them (reportingInstance).
            .env("POD_NAME", identity)
            .env("RUST_LOG", "info,kube=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start sigil-operator");
        Operator { child, log }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args([signal, &pid]).status().expect("kill").success(), "kill {signal}");
    }

    async fn exit_status(&mut self, limit: Duration) -> ExitStatus {
        let child = &mut self.child;
        eventually("the old leader to exit", limit, || std::future::ready(child.try_wait().expect("wait"))).await
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        // SIGKILL also ends a stopped process.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The keys as readers see them: the Secret's `kid` and `next.kid`, the kids
/// of the published JWKS, and the versions of the objects.
#[derive(Debug)]
struct Keys {
    active: Option<String>,
    next: Option<String>,
    published: BTreeSet<String>,
    secret_version: Option<String>,
    config_map_version: Option<String>,
}

async fn keys(secrets: &Api<Secret>, config_maps: &Api<ConfigMap>, name: &str) -> Option<Keys> {
    let secret = secrets.get_opt(&contract::default_secret_name(name)).await.ok()??;
    let config_map = config_maps.get_opt(&contract::default_jwks_config_map_name(name)).await.ok()??;
    let data = secret.data.clone().unwrap_or_default();
    let text = |k: &str| data.get(k).map(|v| String::from_utf8_lossy(&v.0).into_owned());
    let jwks = config_map.data.as_ref()?.get(contract::JWKS)?;
    let set = JwkSet::parse(jwks.as_bytes()).expect("the JWKS parses");
    Some(Keys {
        active: text(contract::KID),
        next: text(contract::NEXT_KID),
        published: set.keys.into_iter().map(|k| k.kid).collect(),
        secret_version: secret.resource_version(),
        config_map_version: config_map.resource_version(),
    })
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases.get_opt("sigil-operator").await.ok()??.spec?.holder_identity
}

/// (reporting instance, reason, note, when) of every Event in the namespace.
async fn events(client: &Client, ns: &str) -> Vec<(String, String, String, Timestamp)> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = events.list(&ListParams::default()).await.expect("events");
    list.items
        .into_iter()
        .map(|e| {
            let last = e.series.as_ref().map(|s| s.last_observed_time.0).or(e.event_time.as_ref().map(|t| t.0));
            (
                e.reporting_instance.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
                last.unwrap_or(Timestamp::UNIX_EPOCH),
            )
        })
        .collect()
}

/// A SigningKey `name` in `ns` that rotates a minute after creation: its
/// next key is generated at 30s and published for 30s before it signs.
/// Tokens live 1s, so retain is 1s + 30s + 1m of clock skew.
async fn rotating(client: &Client, ns: &str, name: &str) -> Api<SigningKey> {
    let spec = json!({"algorithm": "ES256", "maxTokenLifetime": "1s",
                      "rotation": {"every": "1m", "prePublish": "30s", "retain": "91s"}});
    let mut sk = SigningKey::new(name, serde_json::from_value(spec).expect("spec"));
    sk.metadata.namespace = Some(ns.to_owned());
    let api: Api<SigningKey> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &sk).await.expect("create SigningKey");
    api
}

/// The next key of `name` once it is stored and published, not yet signing.
async fn pre_published(secrets: &Api<Secret>, config_maps: &Api<ConfigMap>, name: &str) -> String {
    eventually(&format!("the next key of {name} to be published"), Duration::from_secs(60), || async {
        let k = keys(secrets, config_maps, name).await?;
        k.next.clone().filter(|n| k.published.contains(n))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_writes_nothing_after_another_replica_took_over() {
    let cluster = ControlPlane::shared();
    let client = cluster.client().await;
    let ns = cluster.namespace("fencing");
    let probe_ns = cluster.namespace("fencing-probe");
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let probe_secrets: Api<Secret> = Api::namespaced(client.clone(), &probe_ns);
    let probe_config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &probe_ns);

    let mut old = Operator::start(cluster, None, &ns, "a");
    eventually("replica a to lead", Duration::from_secs(30), || async {
        (holder(&leases).await.as_deref() == Some("a")).then_some(())
    })
    .await;
    let new = Operator::start(cluster, Some(&ns), &ns, "b");

    let signing_keys = rotating(&client, &ns, "api").await;
    let probes = rotating(&client, &probe_ns, "probe").await;
    let first = eventually("the first key to be active and published", Duration::from_secs(30), || async {
        let k = keys(&secrets, &config_maps, "api").await?;
        k.active.clone().filter(|a| k.published.contains(a))
    })
    .await;

    // Mid-rotation: the next keys are stored and published, not yet signing.
    let second = pre_published(&secrets, &config_maps, "api").await;
    pre_published(&probe_secrets, &probe_config_maps, "probe").await;
    let probe_due = eventually("the probe's status to name its activation time", Duration::from_secs(10), || async {
        let sk = probes.get("probe").await.ok()?;
        sk.status?.next_rotation_time.map(|t| t.0)
    })
    .await;
    old.signal("-STOP");
    let stopped_at = Timestamp::now();

    eventually("replica b to take the lease over", Duration::from_secs(40), || async {
        (holder(&leases).await.as_deref() == Some("b")).then_some(())
    })
    .await;
    // The status is the last write of the reconcile that activates.
    let finished = eventually("replica b to finish the rotation", Duration::from_secs(40), || async {
        let k = keys(&secrets, &config_maps, "api").await?;
        let sk = signing_keys.get("api").await.ok()?;
        let status_active = sk.status.as_ref()?.active_key_id.clone();
        (k.active.as_ref() == Some(&second) && status_active.as_ref() == Some(&second)).then_some((k, sk))
    })
    .await;
    let (before, sk_before) = finished;
    assert_eq!(before.next, None, "{before:?}");
    let want: BTreeSet<String> = [first.clone(), second.clone()].into();
    assert_eq!(before.published, want, "the retired key stays published next to the active one");

    // The probe's activation is due: the old leader wakes with work to do.
    let due = probe_due.checked_add(Duration::from_secs(2)).expect("time");
    eventually("the probe's activation to be due", Duration::from_secs(40), || async {
        (Timestamp::now() > due).then_some(())
    })
    .await;
    let probe_before = keys(&probe_secrets, &probe_config_maps, "probe").await.expect("probe objects");

    // Woken after its deadline, the old leader must neither renew nor write.
    // Replica b writes next when the retired key expires, 30s after it
    // activated, well after these checks: any change now is the old leader's.
    old.signal("-CONT");
    let status = old.exit_status(Duration::from_secs(20)).await;
    let log = old.log();
    assert!(!status.success(), "a replica that lost its lease exits non-zero, got {status}\n{log}");
    assert!(log.contains("lost the leader lease"), "{log}");

    let after = keys(&secrets, &config_maps, "api").await.expect("Secret and ConfigMap");
    let sk_after = signing_keys.get("api").await.expect("SigningKey");
    let context = format!("before {before:?}\nafter {after:?}\nold leader's log:\n{log}");
    assert_eq!(after.secret_version, before.secret_version, "the Secret was written; {context}");
    assert_eq!(after.config_map_version, before.config_map_version, "the ConfigMap was written; {context}");
    assert_eq!(sk_after.resource_version(), sk_before.resource_version(), "the status was written; {context}");
    let probe_after = keys(&probe_secrets, &probe_config_maps, "probe").await.expect("probe objects");
    let context = format!("before {probe_before:?}\nafter {probe_after:?}\nold leader's log:\n{log}");
    assert_eq!(probe_after.secret_version, probe_before.secret_version, "the probe's Secret was written; {context}");
    assert_eq!(probe_after.next, probe_before.next, "{context}");
    assert_eq!(probe_after.config_map_version, probe_before.config_map_version, "{context}");
    let probe_events = events(&client, &probe_ns).await;
    let late: Vec<_> = probe_events.iter().filter(|(_, _, _, at)| *at > stopped_at).collect();
    assert!(late.is_empty(), "events recorded by the frozen leader: {late:?}\n{log}");

    let events = events(&client, &ns).await;
    let late: Vec<_> = events.iter().filter(|(by, _, _, at)| by == "a" && *at > stopped_at).collect();
    assert!(late.is_empty(), "events recorded by the frozen leader: {late:?}\n{log}");

    // One key per rotation: nobody generated a key besides the two seen.
    let generated: BTreeSet<&str> = events
        .iter()
        .filter(|(_, reason, _, _)| reason == "KeyGenerated")
        .filter_map(|(_, _, note, _)| {
            [&first, &second].into_iter().find(|k| note.contains(k.as_str())).map(|k| k.as_str())
        })
        .collect();
    let all_generated = events.iter().filter(|(_, reason, _, _)| reason == "KeyGenerated").count();
    assert_eq!((generated.len(), all_generated), (2, 2), "{events:?}");
    assert_eq!(holder(&leases).await.as_deref(), Some("b"));
    drop(new);
}
