//! The whole Sigil system on one machine: the operator against the control
//! plane, the SigningKey's Secret and ConfigMap mirrored into directories the
//! way the kubelet mounts them, the issuer signing from those files, a demo
//! app, and the sidecar verifying in front of it. Used by the end-to-end
//! tests and by `make demo`, so the demo is exactly what the tests prove.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::mount::{self, Source};
use crate::process::{Proc, binary, free_port};
use crate::{ControlPlane, eventually, http};

/// The demo client the stack's issuer knows.
pub const CLIENT_ID: &str = "demo-client";
pub const CLIENT_SECRET: &str = "demo-secret-change-me";
/// The audience the issuer puts in tokens and the sidecar requires.
pub const AUDIENCE: &str = "demo-api";

pub fn signing_key_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("sigil.dev", "v1alpha1", "SigningKey"))
}

/// Ports to serve on; `None` takes a free one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ports {
    pub issuer: Option<u16>,
    pub sidecar: Option<u16>,
}

/// A running stack. Dropping it stops every process and mirror.
pub struct Stack {
    pub namespace: String,
    pub name: String,
    pub dir: PathBuf,
    pub issuer_url: String,
    pub sidecar_url: String,
    pub issuer_admin: String,
    pub sidecar_admin: String,
    pub operator: Proc,
    pub issuer: Proc,
    pub sidecar: Proc,
    pub app: Proc,
    mounts: Vec<tokio::task::JoinHandle<()>>,
    kubeconfig: PathBuf,
}

impl Drop for Stack {
    fn drop(&mut self) {
        for m in &self.mounts {
            m.abort();
        }
    }
}

impl Stack {
    /// Starts everything for a SigningKey `name` with `spec` in `namespace`
    /// on free ports and waits until a token can be issued and verified.
    pub async fn start(cp: &ControlPlane, namespace: &str, name: &str, spec: Value) -> Stack {
        Self::start_on(cp, namespace, name, spec, Ports::default()).await
    }

    /// As [`Stack::start`], with chosen ports where given.
    pub async fn start_on(cp: &ControlPlane, namespace: &str, name: &str, spec: Value, ports: Ports) -> Stack {
        Self::start_with(cp, namespace, name, spec, ports, Duration::ZERO).await
    }

    /// As [`Stack::start`], with the sidecar reading its own copy of the JWKS
    /// that lags the ConfigMap by `sidecar_jwks_lag` (the issuer's copy does
    /// not: it signs with a new key as soon as it may, the worst case for a
    /// lagging verifier).
    pub async fn start_lagging(
        cp: &ControlPlane,
        namespace: &str,
        name: &str,
        spec: Value,
        sidecar_jwks_lag: Duration,
    ) -> Stack {
        Self::start_with(cp, namespace, name, spec, Ports::default(), sidecar_jwks_lag).await
    }

    async fn start_with(
        cp: &ControlPlane,
        namespace: &str,
        name: &str,
        spec: Value,
        ports: Ports,
        sidecar_jwks_lag: Duration,
    ) -> Stack {
        let dir = cp.dir.join("stacks").join(format!("{namespace}-{name}"));
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).expect("stack dir");
        let client = cp.client().await;
        let kubeconfig = cp.operator_kubeconfig();

        let operator = start_operator(&kubeconfig, &logs);
        let keys: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &signing_key_resource());
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "sigil.dev/v1alpha1", "kind": "SigningKey",
            "metadata": {"name": name}, "spec": spec,
        }))
        .expect("SigningKey");
        keys.create(&PostParams::default(), &object).await.expect("create SigningKey");
        wait_ready(&keys, name, Duration::from_secs(60)).await;

        let key_dir = dir.join("signing-key");
        let jwks_dir = dir.join("jwks");
        let secret_name = sigil_api::contract::default_secret_name(name);
        let cm_name = sigil_api::contract::default_jwks_config_map_name(name);
        let ns = namespace.to_owned();
        let sidecar_jwks_dir = if sidecar_jwks_lag.is_zero() { jwks_dir.clone() } else { dir.join("sidecar-jwks") };
        let jwks_source = Source::ConfigMap { namespace: ns.clone(), name: cm_name };
        let mut mounts = vec![
            mount::spawn(client.clone(), Source::Secret { namespace: ns.clone(), name: secret_name }, key_dir.clone()),
            mount::spawn(client.clone(), jwks_source.clone(), jwks_dir.clone()),
        ];
        if !sidecar_jwks_lag.is_zero() {
            mounts.push(mount::spawn_lagging(client.clone(), jwks_source, sidecar_jwks_dir.clone(), sidecar_jwks_lag));
        }
        // Every first version lands at once, the lagging copy's too.
        eventually("the mounted volumes", Duration::from_secs(30), || {
            let ready = key_dir.join("kid").exists()
                && jwks_dir.join("jwks.json").exists()
                && sidecar_jwks_dir.join("jwks.json").exists();
            async move { ready.then_some(()) }
        })
        .await;

        let clients_file = dir.join("clients.yaml");
        std::fs::write(&clients_file, clients_yaml(&hash_secret(CLIENT_SECRET))).expect("clients file");

        let (issuer_port, issuer_admin_port) = (ports.issuer.unwrap_or_else(free_port), free_port());
        let issuer_url = format!("http://127.0.0.1:{issuer_port}");
        let issuer = Proc::start(
            "issuer",
            &binary("sigil-issuer", "sigil-issuer"),
            &args(&[
                ("--listen", format!("127.0.0.1:{issuer_port}")),
                ("--admin-listen", format!("127.0.0.1:{issuer_admin_port}")),
                ("--key-dir", key_dir.display().to_string()),
                ("--jwks-file", jwks_dir.join("jwks.json").display().to_string()),
                ("--issuer-url", issuer_url.clone()),
                ("--audience", AUDIENCE.to_owned()),
                ("--clients-file", clients_file.display().to_string()),
                ("--log-format", "text".to_owned()),
            ]),
            &[],
            &logs,
        );

        let app_port = free_port();
        let app =
            Proc::start("app", &binary("sigil-e2e", "sigil-demo-app"), &[format!("127.0.0.1:{app_port}")], &[], &logs);

        let (sidecar_port, sidecar_admin_port) = (ports.sidecar.unwrap_or_else(free_port), free_port());
        let sidecar = Proc::start(
            "sidecar",
            &binary("sigil-sidecar", "sigil-sidecar"),
            &args(&[
                ("--listen", format!("127.0.0.1:{sidecar_port}")),
                ("--admin-listen", format!("127.0.0.1:{sidecar_admin_port}")),
                ("--upstream", format!("http://127.0.0.1:{app_port}")),
                ("--jwks-file", sidecar_jwks_dir.join("jwks.json").display().to_string()),
                ("--issuer", issuer_url.clone()),
                ("--audience", AUDIENCE.to_owned()),
                ("--public-path", "/public".to_owned()),
                ("--log-format", "text".to_owned()),
            ]),
            &[],
            &logs,
        );

        let mut stack = Stack {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            dir,
            issuer_url,
            sidecar_url: format!("http://127.0.0.1:{sidecar_port}"),
            issuer_admin: format!("http://127.0.0.1:{issuer_admin_port}"),
            sidecar_admin: format!("http://127.0.0.1:{sidecar_admin_port}"),
            operator,
            issuer,
            sidecar,
            app,
            mounts,
            kubeconfig,
        };
        for admin in [&stack.issuer_admin, &stack.sidecar_admin] {
            http::wait_ok(&format!("{admin}/readyz"), Duration::from_secs(60)).await;
        }
        stack.assert_running();
        stack
    }

    /// Fails with the logs of any process that died.
    pub fn assert_running(&mut self) {
        self.operator.assert_running();
        self.issuer.assert_running();
        self.sidecar.assert_running();
        self.app.assert_running();
    }

    /// Kills the operator and starts a new one (a crash and a restart).
    pub fn restart_operator(&mut self) {
        self.operator.kill();
        self.operator = start_operator(&self.kubeconfig, &self.dir.join("logs"));
    }

    /// A fresh access token from the issuer (client credentials).
    pub async fn token(&self) -> String {
        match self.try_token().await {
            Ok(token) => token,
            Err(why) => panic!("token request failed: {why}"),
        }
    }

    /// A token, or why the issuer gave none. For polling across moments when
    /// the issuer is briefly not ready (an emergency revocation leaves it
    /// without a published key for a few milliseconds and it answers 503).
    pub async fn try_token(&self) -> Result<String, String> {
        let reply = http::post_form(
            &format!("{}/token", self.issuer_url),
            &format!("grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}"),
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
        if !reply.status.is_success() {
            return Err(format!("{} {}", reply.status, reply.text()));
        }
        reply.json()["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no access_token: {}", reply.text()))
    }

    /// Calls the app through the sidecar, with `token` as Bearer if given.
    pub async fn call(&self, path: &str, token: Option<&str>) -> http::Reply {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        http::get(&format!("{}{path}", self.sidecar_url), &headers).await.expect("call through the sidecar")
    }

    /// The kids the mounted JWKS publishes now.
    pub async fn published_kids(&self, client: &kube::Client) -> Vec<String> {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &self.namespace);
        let cm = cms.get(&sigil_api::contract::default_jwks_config_map_name(&self.name)).await.expect("JWKS ConfigMap");
        let text = cm.data.unwrap_or_default().remove(sigil_api::contract::JWKS).unwrap_or_default();
        let set: sigil_api::JwkSet = serde_json::from_str(&text).expect("JWKS");
        set.keys.into_iter().map(|k| k.kid).collect()
    }
}

fn args(pairs: &[(&str, String)]) -> Vec<String> {
    pairs.iter().flat_map(|(k, v)| [(*k).to_owned(), v.clone()]).collect()
}

/// Starts one operator (no leader election) with the kubeconfig given,
/// logging into `logs`.
pub fn start_operator(kubeconfig: &std::path::Path, logs: &std::path::Path) -> Proc {
    let admin_port = free_port();
    Proc::start(
        "operator",
        &binary("sigil-operator", "sigil-operator"),
        // One operator at a time here, so no Lease: a restarted operator must
        // not wait for its predecessor's Lease to expire.
        &args(&[
            ("--admin-listen", format!("127.0.0.1:{admin_port}")),
            ("--leader-election", "false".to_owned()),
            ("--log-format", "text".to_owned()),
            // These stacks mirror volumes at once (no kubelet), so their
            // SigningKeys may pre-publish for seconds.
            ("--min-pre-publish", "1s".to_owned()),
        ]),
        &[("KUBECONFIG", &kubeconfig.display().to_string())],
        logs,
    )
}

/// Waits for `Ready=True` on SigningKey `name`.
pub async fn wait_ready(keys: &Api<DynamicObject>, name: &str, timeout: Duration) -> DynamicObject {
    eventually(&format!("SigningKey {name} Ready"), timeout, || async {
        let sk = keys.get(name).await.ok()?;
        let ready =
            sk.data["status"]["conditions"].as_array()?.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(sk)
    })
    .await
}

/// Hashes a client secret with the issuer's own `hash-secret` subcommand.
pub fn hash_secret(secret: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(binary("sigil-issuer", "sigil-issuer"))
        .arg("hash-secret")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sigil-issuer hash-secret");
    child.stdin.take().expect("stdin").write_all(secret.as_bytes()).expect("write secret");
    let out = child.wait_with_output().expect("hash-secret output");
    assert!(out.status.success(), "hash-secret failed");
    String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
}

fn clients_yaml(secret_hash: &str) -> String {
    format!(
        "# Written by the Sigil test stack.\nclients:\n  - id: {CLIENT_ID}\n    secretHash: '{secret_hash}'\n    scopes: [read, write]\nusers: []\n"
    )
}
