//! Sigil as pods on the real node ([`ControlPlane::with_node`]): the chart
//! installed with helm, the examples applied with kubectl, and traffic from
//! this machine through the Services' node ports, as README's "Install on a
//! cluster" and `hack/kind-demo.sh` do it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::Value;
use tokio::sync::watch;

use crate::{ControlPlane, http, repo_root};

/// The namespace of README, the kind demo and `examples/demo-app.yaml` (the
/// sidecar's `--issuer` names the issuer Service in it).
pub const NAMESPACE: &str = "sigil";
/// The Helm release name (the issuer URL in `examples/demo-app.yaml` follows it).
pub const RELEASE: &str = "sigil";
/// Node ports of `charts/sigil/ci/kind-demo-values.yaml` and
/// `examples/demo-app.yaml`; kind-config.yaml maps the same ones.
pub const ISSUER_NODE_PORT: u16 = 30080;
pub const APP_NODE_PORT: u16 = 30800;
/// The demo client of `examples/issuer-clients.yaml`.
pub const CLIENT_ID: &str = "demo-client";
pub const CLIENT_SECRET: &str = "demo-secret-change-me";

/// Seconds since the epoch, for comparing with token and log times.
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl ControlPlane {
    /// Runs helm against this control plane and fails the test unless it succeeds.
    pub fn helm_ok(&self, args: &[&str]) -> String {
        let out =
            Command::new(&self.helm).arg("--kubeconfig").arg(&self.kubeconfig).args(args).output().expect("helm runs");
        assert!(out.status.success(), "helm {} failed:\n{}{}", args.join(" "), text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    /// `kubectl apply -n NS` of a manifest given as text.
    pub fn apply_text(&self, namespace: &str, name: &str, manifest: &str) {
        let path = self.dir.join(format!("{namespace}-{name}.yaml"));
        std::fs::write(&path, manifest).expect("write manifest");
        self.kubectl_ok(&["apply", "-n", namespace, "-f", &path.to_string_lossy()]);
    }

    /// A URL on the node's address (NodePorts, and pod IPs are routed too).
    pub fn node_url(&self, port: u16) -> String {
        format!("http://{}:{port}", self.node_ip.as_deref().expect("a control plane with a node"))
    }

    /// Waits for a Deployment's rollout to finish.
    pub fn rollout_status(&self, namespace: &str, deployment: &str) {
        self.kubectl_ok(&["rollout", "status", "-n", namespace, &format!("deployment/{deployment}"), "--timeout=180s"]);
    }

    /// The pods matching `selector` as JSON objects.
    pub fn pods(&self, namespace: &str, selector: &str) -> Vec<Value> {
        let list: Value =
            serde_json::from_str(&self.kubectl_ok(&["get", "pods", "-n", namespace, "-l", selector, "-o", "json"]))
                .expect("pod list");
        list["items"].as_array().cloned().unwrap_or_default()
    }
}

/// A file of the repository, as text.
pub fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// What the kind demo installs, on the node: namespace "sigil" under Pod
/// Security "restricted", the clients Secret, the chart with the kind demo's
/// values, a SigningKey and the demo app with its sidecar. Removed on drop.
pub struct Demo {
    pub cp: &'static ControlPlane,
    pub urls: Urls,
}

impl std::ops::Deref for Demo {
    type Target = Urls;
    fn deref(&self) -> &Urls {
        &self.urls
    }
}

/// Where the demo answers from this machine, and the requests a client makes.
#[derive(Clone, Debug)]
pub struct Urls {
    /// The issuer through its NodePort Service.
    pub issuer: String,
    /// The demo app through its NodePort Service (the sidecar's port).
    pub app: String,
}

/// What to vary from the kind demo.
#[derive(Default)]
pub struct DemoOptions<'a> {
    /// The clients file (default: `examples/issuer-clients.yaml` as is).
    pub clients: Option<String>,
    /// The SigningKey manifest (default: `examples/signingkey.yaml`).
    pub signing_key: Option<String>,
    /// Extra `helm install` arguments, e.g. `--set issuer.replicas=2`.
    pub helm: &'a [&'a str],
}

impl Demo {
    pub async fn install(cp: &'static ControlPlane, options: DemoOptions<'_>) -> Demo {
        // A namespace left by an earlier, failed test of this process.
        Demo::remove(cp);
        cp.kubectl_ok(&["create", "namespace", NAMESPACE]);
        cp.kubectl_ok(&["label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted"]);
        let clients = options.clients.unwrap_or_else(|| read("examples/issuer-clients.yaml"));
        cp.apply_text(NAMESPACE, "clients", &clients);
        let chart = repo_root().join("charts/sigil");
        let values = chart.join("ci/kind-demo-values.yaml");
        let mut args = vec!["install", RELEASE, chart.to_str().expect("utf-8"), "-n", NAMESPACE];
        args.extend(["-f", values.to_str().expect("utf-8")]);
        args.extend(options.helm);
        cp.helm_ok(&args);
        let signing_key = options.signing_key.unwrap_or_else(|| read("examples/signingkey.yaml"));
        cp.apply_text(NAMESPACE, "signingkey", &signing_key);
        cp.kubectl_ok(&["apply", "-n", NAMESPACE, "-f", &repo_root().join("examples/demo-app.yaml").to_string_lossy()]);
        cp.kubectl_ok(&["wait", "-n", NAMESPACE, "--for=condition=Ready", "signingkey/api", "--timeout=120s"]);
        for deployment in ["sigil-operator", "sigil-issuer", "demo-app"] {
            cp.rollout_status(NAMESPACE, deployment);
        }
        let demo = Demo { cp, urls: Urls { issuer: cp.node_url(ISSUER_NODE_PORT), app: cp.node_url(APP_NODE_PORT) } };
        // kube-proxy routes a new Service a moment after it exists.
        crate::eventually("a token through the issuer's node port", Duration::from_secs(30), || async {
            demo.token().await.ok()
        })
        .await;
        crate::eventually("the app's node port", Duration::from_secs(30), || async {
            demo.call("/hello", None).await.ok().filter(|r| r.status == 401)
        })
        .await;
        demo
    }

    /// Deletes what [`Demo::install`] created, SigningKey first (while the
    /// operator still runs), and waits until the namespace is gone.
    fn remove(cp: &ControlPlane) {
        if !cp.kubectl(&["get", "namespace", NAMESPACE]).status.success() {
            return;
        }
        let _ = cp.kubectl(&["delete", "signingkeys", "--all", "-n", NAMESPACE, "--timeout=60s"]);
        let _ = Command::new(&cp.helm)
            .arg("--kubeconfig")
            .arg(&cp.kubeconfig)
            .args(["uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=60s"])
            .output();
        cp.kubectl_ok(&["delete", "namespace", NAMESPACE, "--timeout=120s"]);
    }

    /// The key ids the JWKS ConfigMap publishes now (the operator's output).
    pub fn published_kids(&self) -> Vec<String> {
        let jwks = self.cp.kubectl_ok(&[
            "get",
            "configmap",
            "api-jwks",
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.data.jwks\\.json}",
        ]);
        kids(&serde_json::from_str(&jwks).expect("jwks.json"))
    }

    /// Each demo-app pod's sidecar: how many keys it verifies with now (its
    /// `sigil_sidecar_keys` gauge, read on the pod's admin port).
    /// The key ids each running sidecar verifies with (`sigil_sidecar_key_info`),
    /// `None` for one that did not answer.
    pub async fn sidecar_kids(&self) -> Vec<Option<Vec<String>>> {
        let mut kids = Vec::new();
        for pod in self.cp.pods(NAMESPACE, "app.kubernetes.io/name=demo-app") {
            let Some(ip) = pod["status"]["podIP"].as_str() else { continue };
            if pod["metadata"]["deletionTimestamp"].is_string() {
                continue;
            }
            let metrics = http::get(&format!("http://{ip}:9091/metrics"), &[]).await.ok();
            kids.push(metrics.map(|m| {
                m.text()
                    .lines()
                    .filter_map(|l| l.strip_prefix("sigil_sidecar_key_info{kid=\""))
                    .filter_map(|l| l.split_once('"').map(|(kid, _)| kid.to_owned()))
                    .collect()
            }));
        }
        kids
    }
}

impl Urls {
    /// A token for the demo client, or why there is none.
    pub async fn token(&self) -> Result<Token, String> {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
        let reply = http::post_form(
            &format!("{}/token", self.issuer),
            "grant_type=client_credentials",
            &[("authorization", &format!("Basic {basic}"))],
        )
        .await
        .map_err(|e| format!("connection: {e}"))?;
        if reply.status != 200 {
            return Err(format!("HTTP {}: {}", reply.status, reply.text()));
        }
        let raw = reply.json()["access_token"].as_str().ok_or("no access_token")?.to_owned();
        Token::parse(raw)
    }

    /// Calls the demo app through its sidecar.
    pub async fn call(&self, path: &str, token: Option<&Token>) -> Result<http::Reply, String> {
        let bearer = token.map(|t| format!("Bearer {}", t.raw));
        let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
        http::get(&format!("{}{path}", self.app), &headers).await.map_err(|e| format!("connection: {e}"))
    }

    /// The key ids the issuer serves at /.well-known/jwks.json (its mounted copy).
    pub async fn issuer_kids(&self) -> Option<Vec<String>> {
        let reply = http::get(&format!("{}/.well-known/jwks.json", self.issuer), &[]).await.ok()?;
        (reply.status == 200).then(|| kids(&reply.json()))
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        Demo::remove(self.cp);
    }
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .map(|keys| keys.iter().filter_map(|k| k["kid"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// An access token with the header and claims the tests look at.
#[derive(Clone, Debug)]
pub struct Token {
    pub raw: String,
    pub kid: String,
    pub exp: u64,
}

impl Token {
    pub fn parse(raw: String) -> Result<Token, String> {
        let part = |i: usize| -> Result<Value, String> {
            let segment = raw.split('.').nth(i).ok_or("not a compact JWS")?;
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment).map_err(|e| e.to_string())?;
            serde_json::from_slice(&bytes).map_err(|e| e.to_string())
        };
        let kid = part(0)?["kid"].as_str().ok_or("no kid")?.to_owned();
        let exp = part(1)?["exp"].as_u64().ok_or("no exp")?;
        Ok(Token { raw, kid, exp })
    }
}

/// One request of [`Traffic`] that did not get the answer it should have.
#[derive(Clone, Debug)]
pub struct Failure {
    /// When it was sent (seconds since the epoch).
    pub at: f64,
    /// "token" (issuing), "fresh" (calling the app with a just-issued
    /// token) or "oldest" (with the oldest unexpired token held).
    pub kind: &'static str,
    /// The key id of the token used, for calls.
    pub kid: Option<String>,
    pub why: String,
}

/// What [`Traffic`] did.
#[derive(Debug, Default)]
pub struct Report {
    pub tokens: usize,
    pub calls: usize,
    pub failures: Vec<Failure>,
    /// Every key id that signed a token.
    pub kids: Vec<String>,
}

/// Continuous traffic the way clients make it: issue a token, call the app
/// with it, and call again with the oldest token still unexpired, so that a
/// key retired too early fails as surely as a key published too late. Each
/// request opens a new connection, as curl would.
pub struct Traffic {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Report>,
}

impl Traffic {
    pub fn start(urls: &Urls) -> Traffic {
        let (stop, mut stopped) = watch::channel(false);
        let demo = urls.clone();
        let task = tokio::spawn(async move {
            let mut report = Report::default();
            let mut held: VecDeque<Token> = VecDeque::new();
            while !*stopped.borrow() {
                let at = now();
                match demo.token().await {
                    Ok(token) => {
                        report.tokens += 1;
                        if !report.kids.contains(&token.kid) {
                            report.kids.push(token.kid.clone());
                        }
                        record(&mut report, at, "fresh", &demo.call("/hello", Some(&token)).await, Some(&token));
                        held.push_back(token);
                    }
                    Err(why) => report.failures.push(Failure { at, kind: "token", kid: None, why }),
                }
                // Tokens within 2 s of expiry could expire in flight.
                while held.front().is_some_and(|t| (t.exp as f64) < now() + 2.0) {
                    held.pop_front();
                }
                if let Some(oldest) = held.front().cloned() {
                    let at = now();
                    record(&mut report, at, "oldest", &demo.call("/hello", Some(&oldest)).await, Some(&oldest));
                }
                tokio::select! {
                    _ = stopped.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
            report
        });
        Traffic { stop, task }
    }

    pub async fn stop(self) -> Report {
        let _ = self.stop.send(true);
        self.task.await.expect("traffic task")
    }
}

fn record(
    report: &mut Report,
    at: f64,
    kind: &'static str,
    reply: &Result<http::Reply, String>,
    token: Option<&Token>,
) {
    report.calls += 1;
    let why = match reply {
        Ok(r) if r.status == 200 => return,
        Ok(r) => format!("HTTP {} {}", r.status, r.header("www-authenticate").unwrap_or_default()),
        Err(e) => e.clone(),
    };
    report.failures.push(Failure { at, kind, kid: token.map(|t| t.kid.clone()), why });
}

/// Where the real-node tests leave their measurements (bench/ records them).
pub fn report_path(name: &str) -> PathBuf {
    let dir = repo_root().join("target").join("e2e").join("reports");
    std::fs::create_dir_all(&dir).expect("reports dir");
    dir.join(format!("{name}.json"))
}
