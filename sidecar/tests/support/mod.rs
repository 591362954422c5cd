//! Shared test fixtures: real keys, hand-built compact JWS tokens.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};
use sigil_core::jwk::{JwkSet, b64};
use sigil_core::{Algorithm, PrivateKey};
use sigil_sidecar::keys::{KeySet, Loaded};
use sigil_sidecar::verify::{AlgorithmSet, Policy, TokenProfile};

pub const ISSUER: &str = "https://issuer.sigil.test";
pub const AUDIENCE: &str = "orders";

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// One generated key per algorithm, shared across tests (RSA generation is slow).
pub fn key(alg: Algorithm) -> &'static PrivateKey {
    static KEYS: OnceLock<Vec<PrivateKey>> = OnceLock::new();
    let keys =
        KEYS.get_or_init(|| Algorithm::ALL.iter().map(|a| PrivateKey::generate(*a, None).expect("keygen")).collect());
    let index = Algorithm::ALL.iter().position(|a| *a == alg).expect("known alg");
    &keys[index]
}

pub fn jwks_json(keys: &[&PrivateKey]) -> String {
    JwkSet { keys: keys.iter().map(|k| k.public_jwk().clone()).collect() }.to_json()
}

pub fn keyset(keys: &[&PrivateKey]) -> KeySet {
    let loaded = Loaded::parse(jwks_json(keys).as_bytes()).expect("jwks");
    assert!(loaded.skipped.is_empty(), "{:?}", loaded.skipped);
    let keys: Vec<_> = loaded.keys.into_iter().map(Arc::new).collect();
    KeySet::build([keys.as_slice()], &KeySet::default()).0
}

pub fn policy() -> Policy {
    Policy {
        issuer: ISSUER.into(),
        audiences: vec![AUDIENCE.into()],
        leeway_secs: 30,
        max_lifetime_secs: None,
        algorithms: AlgorithmSet::from_iter(Algorithm::ALL),
        max_token_bytes: 8192,
        profile: TokenProfile::AccessToken,
    }
}

/// The claims of a valid RFC 9068 access token, each call with its own `jti`.
pub fn claims() -> Value {
    static JTI: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = now();
    let jti = format!("jti-{}", JTI.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "scope": "orders:read orders:write",
           "client_id": "web", "iat": now, "exp": now + 300, "jti": jti})
}

pub fn header(key: &PrivateKey) -> Value {
    json!({"alg": key.algorithm().as_str(), "kid": key.kid(), "typ": "at+jwt"})
}

/// Signs raw header and payload bytes: the way to build tokens no JWT
/// library would produce (duplicates, non-objects, odd headers).
pub fn sign_raw(key: &PrivateKey, header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = key.sign(input.as_bytes()).expect("sign");
    format!("{input}.{}", b64(&sig))
}

pub fn sign(key: &PrivateKey, header: &Value, claims: &Value) -> String {
    sign_raw(key, header.to_string().as_bytes(), claims.to_string().as_bytes())
}

/// A valid token for `key` with the default claims.
pub fn token(key: &PrivateKey) -> String {
    sign(key, &header(key), &claims())
}

// --- Servers on loopback ------------------------------------------------------------

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser as _;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sigil_sidecar::config::Args;
use sigil_sidecar::run::Running;
use tokio::net::TcpListener;
use tokio::sync::Notify;

type UpBody = BoxBody<Bytes, Infallible>;

/// A small real app: echoes what it received as JSON, and has routes that are
/// slow, stream, or switch protocols.
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// Lets `/stream` send its second chunk.
    pub release: Arc<Notify>,
}

impl Upstream {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

pub async fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let connections = Arc::new(AtomicUsize::new(0));
    let (h, r, c) = (hits.clone(), release.clone(), connections.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            c.fetch_add(1, Ordering::SeqCst);
            let (h, r) = (h.clone(), r.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let (h, r) = (h.clone(), r.clone());
                    async move { Ok::<_, Infallible>(app(req, h, r).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Upstream { addr, hits, connections, release }
}

async fn app(mut req: Request<Incoming>, hits: Arc<AtomicUsize>, release: Arc<Notify>) -> Response<UpBody> {
    hits.fetch_add(1, Ordering::SeqCst);
    match req.uri().path() {
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Response::new(Full::new(Bytes::from_static(b"late")).boxed())
        }
        "/stream" => {
            let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(1);
            tokio::spawn(async move {
                let _ = tx.send_data(Bytes::from_static(b"first\n")).await;
                release.notified().await;
                let _ = tx.send_data(Bytes::from_static(b"second\n")).await;
            });
            Response::new(body.boxed())
        }
        "/ws" => {
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let (mut r, mut w) = tokio::io::split(&mut io);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            let mut response = Response::new(Full::new(Bytes::new()).boxed());
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            response.headers_mut().insert("upgrade", "echo".parse().expect("hv"));
            response.headers_mut().insert("connection", "upgrade".parse().expect("hv"));
            response
        }
        _ => {
            let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (name, value) in req.headers() {
                headers.entry(name.to_string()).or_default().push(value.to_str().unwrap_or("?").to_owned());
            }
            let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
            let version = format!("{:?}", req.version());
            let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            let echo = json!({"path": path, "version": version, "headers": headers, "body_len": body.len()});
            let mut response = Response::new(Full::new(Bytes::from(echo.to_string())).boxed());
            response.headers_mut().insert("connection", "x-hop".parse().expect("hv"));
            response.headers_mut().insert("x-hop", "secret".parse().expect("hv"));
            response
        }
    }
}

/// A running sidecar with its JWKS directory (kubelet layout) and a stop switch.
pub struct Sidecar {
    pub running: Running,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Sidecar {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.addr)
    }

    pub fn jwks_path(&self) -> PathBuf {
        self.dir.path().join("jwks.json")
    }

    /// Publishes a new JWKS the way the kubelet does (atomic `..data` swap).
    pub fn publish(&self, jwks: &str) {
        sigil_runtime::volume::write_atomically(self.dir.path(), &[("jwks.json", jwks.as_bytes())]).expect("swap");
    }

    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn admin(&self, path: &str) -> StatusCode {
        get(&format!("http://{}{path}", self.running.admin_addr), &[]).await.0
    }
}

/// A sidecar verifying with a mounted JWKS file holding `jwks`.
pub async fn sidecar(upstream: SocketAddr, jwks: &str, extra: &[&str]) -> Sidecar {
    let dir = tempfile::tempdir().expect("tempdir");
    sigil_runtime::volume::write_atomically(dir.path(), &[("jwks.json", jwks.as_bytes())]).expect("write");
    let jwks_file = dir.path().join("jwks.json").display().to_string();
    let mut args = vec!["--jwks-file", &jwks_file];
    args.extend_from_slice(extra);
    start(upstream, dir, &args).await
}

/// A sidecar with only the flags given (plus listen, upstream, issuer, audience).
pub async fn sidecar_with(upstream: SocketAddr, extra: &[&str]) -> Sidecar {
    start(upstream, tempfile::tempdir().expect("tempdir"), extra).await
}

async fn start(upstream: SocketAddr, dir: tempfile::TempDir, extra: &[&str]) -> Sidecar {
    let upstream = format!("http://{upstream}");
    let mut args = vec![
        "sigil-sidecar",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream,
        "--issuer",
        ISSUER,
        "--audience",
        AUDIENCE,
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"--shutdown-delay") {
        args.extend(["--shutdown-delay", "0s"]);
    }
    let config = Args::try_parse_from(args).expect("args").into_config().expect("config");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = sigil_sidecar::run::start(config, async move {
        let _ = stopped.await;
    })
    .await
    .expect("start");
    Sidecar { running, dir, stop: Some(stop) }
}

/// One request over a fresh HTTP/1.1 connection.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
    request(http::Method::GET, url, headers, Bytes::new()).await
}

pub async fn request(
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (StatusCode, HeaderMap, String) {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let response = client.request(req.body(Full::new(body)).expect("request")).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Polls `condition` for up to five seconds.
pub async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}
