//! The issuer as it runs: real listeners on loopback, a real HTTP client
//! (hyper-util's), tokens checked by an independent verifier (PyJWT, see
//! `verify_token.py`), kubelet-style key swaps under load, and the binary's
//! start-up errors, `hash-secret` subcommand and graceful shutdown.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use sigil_api::{Algorithm, JwkSet, PrivateKey};
use sigil_issuer::server;
use support::{AUDIENCE, Fixture, ISSUER};
use tokio::sync::oneshot;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An issuer serving on loopback until dropped.
struct Running {
    base: String,
    admin: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<sigil_issuer::Result<()>>>,
}

impl Running {
    async fn start(fixture: &Fixture, tweak: impl FnOnce(&mut sigil_issuer::config::Config)) -> Running {
        let mut config = fixture.config();
        tweak(&mut config);
        let (state, registry) = server::prepare(&config).expect("issuer loads");
        let listener = server::bind(config.listen).await.expect("bind");
        let admin = server::bind(config.admin_listen).await.expect("bind admin");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let admin_base = format!("http://{}", admin.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::serve(&config, state, registry, listener, admin, async move {
                let _ = stopped.await;
            })
            .await
        });
        Running { base, admin: admin_base, stop: Some(stop), task: Some(task) }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("graceful shutdown finishes")
                .expect("task")
                .expect("serve ends cleanly");
        }
    }
}

async fn get(client: &HttpClient, url: &str) -> (StatusCode, Bytes) {
    let request = Request::get(url).body(Full::default()).expect("request");
    let response = client.request(request).await.expect("GET");
    let status = response.status();
    (status, response.into_body().collect().await.expect("body").to_bytes())
}

async fn post_token(client: &HttpClient, base: &str, id: &str, secret: &str) -> (StatusCode, Value) {
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    let request = Request::post(format!("{base}/token"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::AUTHORIZATION, format!("Basic {credentials}"))
        .body(Full::new(Bytes::from_static(b"grant_type=client_credentials")))
        .expect("request");
    let response = client.request(request).await.expect("POST /token");
    let status = response.status();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn access_token(body: &Value) -> String {
    body["access_token"].as_str().expect("access_token").to_owned()
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).expect("header").kid.expect("kid")
}

/// Runs the PyJWT verifier; `Ok(claims)` or `Err(its reason)`.
fn pyjwt(base: &str, token: &str, audience: &str) -> Result<Value, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/verify_token.py");
    // SIGIL_TEST_PYTHON may name a virtualenv's interpreter that has PyJWT.
    let python = std::env::var("SIGIL_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let mut child = Command::new(&python)
        .arg(script)
        .arg(format!("{base}/.well-known/jwks.json"))
        .arg(ISSUER)
        .arg(audience)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python} does not run ({e}); see issuer/tests/requirements.txt"));
    child.stdin.take().expect("stdin").write_all(token.as_bytes()).expect("write token");
    let out = child.wait_with_output().expect("verifier finishes");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "PyJWT is missing for {python}: see issuer/tests/requirements.txt\n{stderr}"
    );
    if out.status.success() { serde_json::from_slice(&out.stdout).map_err(|e| e.to_string()) } else { Err(stderr) }
}

#[tokio::test]
async fn tokens_verify_with_pyjwt_against_the_served_jwks() {
    for alg in [Algorithm::RS256, Algorithm::PS256, Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA] {
        let fixture = Fixture::new(alg);
        let running = Running::start(&fixture, |_| {}).await;
        let client = client();
        let (status, body) = post_token(&client, &running.base, "svc", "svc-secret").await;
        assert_eq!(status, StatusCode::OK, "{alg}: {body}");
        let token = access_token(&body);
        let base = running.base.clone();
        let t = token.clone();
        let claims = tokio::task::spawn_blocking(move || pyjwt(&base, &t, AUDIENCE))
            .await
            .expect("join")
            .unwrap_or_else(|e| panic!("{alg}: PyJWT rejected the token: {e}"));
        assert_eq!(claims["sub"], "client:svc", "{alg}");
        assert_eq!(claims["client_id"], "svc", "{alg}");
        assert_eq!(claims["scope"], "orders.read orders.write", "{alg}");

        // The verifier can fail: wrong audience, and a token with a changed claim.
        let base = running.base.clone();
        let t = token.clone();
        let wrong_aud = tokio::task::spawn_blocking(move || pyjwt(&base, &t, "someone-else")).await.expect("join");
        assert!(wrong_aud.expect_err("wrong audience").contains("Audience"), "{alg}");
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut payload: Value =
            serde_json::from_slice(&sigil_api::jwk::b64_decode(&parts[1]).expect("payload")).expect("json");
        payload["sub"] = Value::from("admin");
        parts[1] = sigil_api::jwk::b64(payload.to_string().as_bytes());
        let forged = parts.join(".");
        let base = running.base.clone();
        let forged = tokio::task::spawn_blocking(move || pyjwt(&base, &forged, AUDIENCE)).await.expect("join");
        assert!(forged.expect_err("forged").contains("Signature"), "{alg}");
        running.stop().await;
    }
}

#[tokio::test]
async fn admin_port_reports_health_readiness_and_metrics() {
    let fixture = Fixture::new(Algorithm::ES256);
    let running = Running::start(&fixture, |_| {}).await;
    let client = client();
    assert_eq!(get(&client, &format!("{}/healthz", running.admin)).await.0, StatusCode::OK);
    assert_eq!(get(&client, &format!("{}/readyz", running.admin)).await.0, StatusCode::OK);
    post_token(&client, &running.base, "svc", "svc-secret").await;
    let (status, metrics) = get(&client, &format!("{}/metrics", running.admin)).await;
    assert_eq!(status, StatusCode::OK);
    let metrics = String::from_utf8_lossy(&metrics);
    let kid = fixture.key.kid();
    assert!(metrics.contains(&format!(r#"sigil_issuer_active_kid{{kid="{kid}",alg="ES256"}} 1"#)), "{metrics}");
    assert!(metrics.contains("sigil_issuer_signing_seconds_count 1"), "{metrics}");
    assert!(!metrics.contains("svc-secret"));
    // The token port does not serve admin paths.
    assert_eq!(get(&client, &format!("{}/metrics", running.base)).await.0, StatusCode::NOT_FOUND);
    running.stop().await;
}

/// Keys rotate the way the operator and kubelet rotate them, in both orders
/// (JWKS first, and Secret first, which the issuer must ride out by keeping
/// the published key), while clients keep asking for tokens. Not one request
/// may fail, and every token must verify against the JWKS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_swapped_under_load_fail_no_request() {
    let fixture = Fixture::new(Algorithm::ES256);
    // The fallback re-read is long, so noticing the swaps is inotify's job.
    let running = Running::start(&fixture, |c| c.reload_period = Duration::from_secs(3600)).await;
    let base = Arc::new(running.base.clone());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (base, stop) = (base.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let client = client();
            let (mut ok, mut failed, mut tokens) = (0u32, Vec::new(), Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, body) = post_token(&client, &base, "svc", "svc-secret").await;
                if status == StatusCode::OK {
                    ok += 1;
                    tokens.push(access_token(&body));
                } else {
                    failed.push(format!("{status}: {body}"));
                }
            }
            (ok, failed, tokens)
        }));
    }

    let client = client();
    let mut published: Vec<PrivateKey> = vec![copy(&fixture.key)];
    let mut current = copy(&fixture.key);
    for round in 0..4 {
        let next = support::key(if round % 2 == 0 { Algorithm::EdDSA } else { Algorithm::ES256 });
        if round % 2 == 0 {
            // Operator order: publish, then activate.
            published.push(copy(&next));
            support::write_jwks(&fixture.jwks_dir(), &published.iter().collect::<Vec<_>>());
            tokio::time::sleep(Duration::from_millis(100)).await;
            support::write_secret(&fixture.key_dir(), &next, None);
        } else {
            // Secret ahead of the JWKS: the issuer must keep signing with `current`.
            support::write_secret(&fixture.key_dir(), &next, None);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (_, body) = post_token(&client, &base, "svc", "svc-secret").await;
            assert_eq!(kid_of(&access_token(&body)), current.kid(), "round {round}: unpublished key used");
            published.push(copy(&next));
            support::write_jwks(&fixture.jwks_dir(), &published.iter().collect::<Vec<_>>());
        }
        wait_for_kid(&client, &base, next.kid()).await;
        current = next;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let (_, jwks) = get(&client, &format!("{base}/.well-known/jwks.json")).await;
    let keys = JwkSet::parse(&jwks).expect("jwks").keys;
    let (mut ok, mut kids) = (0, BTreeMap::<String, String>::new());
    for worker in workers {
        let (n, failed, tokens) = worker.await.expect("worker");
        assert!(failed.is_empty(), "requests failed during key swaps: {failed:?}");
        ok += n;
        for token in tokens {
            let kid = kid_of(&token);
            let key = keys.iter().find(|k| k.kid == kid).expect("every token's key is published");
            let mut validation = jsonwebtoken::Validation::new(key.alg.to_jwt());
            validation.set_audience(&[AUDIENCE]);
            validation.set_issuer(&[ISSUER]);
            jsonwebtoken::decode::<Value>(&token, &key.key, &validation).expect("token verifies");
            kids.entry(kid).or_insert(token);
        }
    }
    assert!(kids.len() >= 4, "load spanned the rotations: {} kids, {ok} tokens", kids.len());
    // And the independent verifier agrees, one token per key.
    let base = base.to_string();
    tokio::task::spawn_blocking(move || {
        for token in kids.values() {
            pyjwt(&base, token, AUDIENCE).expect("PyJWT accepts a token from the rotation");
        }
    })
    .await
    .expect("join");
    running.stop().await;
}

fn copy(k: &PrivateKey) -> PrivateKey {
    PrivateKey::from_pkcs8_pem(k.algorithm(), k.to_pkcs8_pem().as_bytes()).expect("copy")
}

async fn wait_for_kid(client: &HttpClient, base: &str, kid: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = post_token(client, base, "svc", "svc-secret").await;
        assert_eq!(status, StatusCode::OK);
        if kid_of(&access_token(&body)) == kid {
            return;
        }
        assert!(Instant::now() < deadline, "the issuer never switched to {kid}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn clients_file_edits_are_picked_up_without_a_restart() {
    let fixture = Fixture::new(Algorithm::ES256);
    let running = Running::start(&fixture, |c| c.reload_period = Duration::from_secs(3600)).await;
    let client = client();
    assert_eq!(post_token(&client, &running.base, "svc", "svc-secret").await.0, StatusCode::OK);
    let late = format!("  - id: late\n    secretHash: \"{}\"\nusers:", support::cheap_hash("late-secret"));
    let added = support::default_clients().replace("users:", &late);
    support::write_clients(&fixture.clients_file(), &added);
    let deadline = Instant::now() + Duration::from_secs(10);
    while post_token(&client, &running.base, "late", "late-secret").await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "the new client was never accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await;
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr")
}

fn issuer_command(fixture: &Fixture, listen: SocketAddr, admin: SocketAddr) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sigil-issuer"));
    command
        .arg(format!("--listen={listen}"))
        .arg(format!("--admin-listen={admin}"))
        .arg(format!("--key-dir={}", fixture.key_dir().display()))
        .arg(format!("--jwks-file={}", fixture.jwks_file().display()))
        .arg(format!("--issuer-url={ISSUER}"))
        .arg(format!("--audience={AUDIENCE}"))
        .arg(format!("--clients-file={}", fixture.clients_file().display()))
        .arg("--shutdown-delay=0s")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[test]
fn the_binary_refuses_bad_input_before_binding_a_port() {
    let fixture = Fixture::new(Algorithm::ES256);
    // Hold the port: if the issuer tried to bind first, it would report that instead.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr");

    sigil_runtime::volume::write_atomically(
        &fixture.key_dir(),
        &[("private.pem", b"not a key"), ("kid", b"x"), ("alg", b"ES256")],
    )
    .expect("write");
    let out = issuer_command(&fixture, port, port).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("sigil-issuer: key directory") && stderr.contains("private.pem"), "{stderr}");
    assert!(!stderr.contains("cannot listen"), "{stderr}");

    let fixture = Fixture::new(Algorithm::ES256);
    let out = issuer_command(&fixture, port, port).arg("--token-ttl=48h").output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("invalid configuration: --token-ttl"), "{stderr}");

    // With good input, the held port is the problem, and it is named.
    let out = issuer_command(&fixture, port, free_port()).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cannot listen on {port}")), "{stderr}");
    drop(held);
}

#[test]
fn hash_secret_prints_a_verifiable_argon2id_hash() {
    let run = |input: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sigil-issuer"))
            .arg("hash-secret")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child.stdin.take().expect("stdin").write_all(input).expect("write");
        child.wait_with_output().expect("wait")
    };
    let out = run(b"correct horse\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let phc = String::from_utf8(out.stdout).expect("utf8");
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    let hash = sigil_issuer::password::SecretHash::parse(&phc).expect("parses");
    assert!(hash.verify(b"correct horse"), "the trailing newline is not part of the secret");
    assert!(!hash.verify(b"correct horse\n"));
    let out = run(b"");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty secret"));
}

/// Starts the binary and waits until it is ready; returns it and its --listen address.
async fn start_binary(fixture: &Fixture) -> (std::process::Child, SocketAddr) {
    let (listen, admin) = (free_port(), free_port());
    let child = issuer_command(fixture, listen, admin).spawn().expect("spawn");
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let request = Request::get(format!("http://{admin}/readyz")).body(Full::default()).expect("request");
        if let Ok(r) = client.request(request).await
            && r.status() == StatusCode::OK
        {
            break;
        }
        assert!(Instant::now() < deadline, "the issuer never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, listen)
}

/// Sends SIGTERM, checks the binary exits cleanly, and returns its log (stderr).
async fn stop_binary(child: std::process::Child) -> String {
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let out =
        tokio::time::timeout(Duration::from_secs(10), tokio::task::spawn_blocking(move || child.wait_with_output()))
            .await
            .expect("exits after SIGTERM")
            .expect("join")
            .expect("wait");
    assert!(out.status.success(), "{}", out.status);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The binary end to end: serves, issues a token, and exits cleanly on SIGTERM.
#[tokio::test]
async fn the_binary_serves_and_shuts_down_on_sigterm() {
    let fixture = Fixture::new(Algorithm::EdDSA);
    let (child, listen) = start_binary(&fixture).await;
    let client = client();
    let (status, body) = post_token(&client, &format!("http://{listen}"), "svc", "svc-secret").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A failed attempt is logged for audit, without its secret.
    let (status, _) = post_token(&client, &format!("http://{listen}"), "svc", "wrong-guess-4711").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let stderr = stop_binary(child).await;
    let token = access_token(&body);
    assert!(!stderr.contains(&token[..40]), "tokens never appear in logs");
    assert!(!stderr.contains("svc-secret") && !stderr.contains("wrong-guess-4711"), "secrets never appear in logs");
    assert!(stderr.contains("client authentication failed") && stderr.contains("\"client_id\":\"svc\""), "{stderr}");
    assert!(stderr.contains("\"serving\"") || stderr.contains("serving"), "{stderr}");
}

/// Finding 6 (usernames are logged on failure): users type passwords into
/// the username field, so a failed password grant is logged with the client
/// id and source address only, from the binary's real log output.
#[tokio::test]
async fn usernames_are_not_logged_on_failed_password_grants() {
    let fixture = Fixture::new(Algorithm::ES256);
    let (child, listen) = start_binary(&fixture).await;
    let client = client();
    let password_grant = |username: &'static str, password: &'static str| {
        let credentials = base64::engine::general_purpose::STANDARD.encode("app:app-secret");
        Request::post(format!("http://{listen}/token"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::AUTHORIZATION, format!("Basic {credentials}"))
            .body(Full::new(Bytes::from(format!("grant_type=password&username={username}&password={password}"))))
            .expect("request")
    };
    // A password typed into the username field (no such user), then a real
    // user with a wrong password: both fail the same way.
    for (username, password) in [("Hunter2TypedAsUsername", "pw-4711"), ("alice", "wrong-pw-0815")] {
        let response = client.request(password_grant(username, password)).await.expect("POST /token");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{username}");
        let body = response.into_body().collect().await.expect("body").to_bytes();
        let body: Value = serde_json::from_slice(&body).expect("JSON error");
        assert_eq!(body["error"], "invalid_grant", "{username}");
    }
    let stderr = stop_binary(child).await;

    // Each failure was logged, naming the client and the source address.
    let failures: Vec<Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["message"] == "user authentication failed")
        .collect();
    assert_eq!(failures.len(), 2, "one audit line per failed grant:\n{stderr}");
    for event in &failures {
        assert_eq!(event["client_id"], "app", "{event}");
        assert_eq!(event["source"], "127.0.0.1", "{event}");
    }
    // Neither username nor password appears anywhere in the log.
    for secret in ["Hunter2TypedAsUsername", "pw-4711", "alice", "wrong-pw-0815"] {
        assert!(!stderr.contains(secret), "{secret:?} was logged:\n{stderr}");
    }
}

/// The real server hands the peer address to the back-off: guesses at `svc`
/// from 127.0.0.1 back off, while the real client on 127.0.0.2 is served.
#[tokio::test]
async fn lockout_by_anyone_is_keyed_on_the_real_peer_address() {
    let fixture = Fixture::new(Algorithm::ES256);
    let running = Running::start(&fixture, |c| c.auth_failure_limit = 2).await;
    let attacker = client();
    assert_eq!(post_token(&attacker, &running.base, "svc", "guess").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(post_token(&attacker, &running.base, "svc", "guess").await.0, StatusCode::UNAUTHORIZED);
    let (status, body) = post_token(&attacker, &running.base, "svc", "guess").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some("127.0.0.2".parse().expect("ip")));
    let real: HttpClient = Client::builder(TokioExecutor::new()).build(connector);
    let (status, body) = post_token(&real, &running.base, "svc", "svc-secret").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    running.stop().await;
}

/// Finding 7: after the shutdown signal the issuer reports not ready at once
/// but keeps accepting new connections for --shutdown-delay, then closes the
/// port and drains.
#[tokio::test]
async fn draining_new_connections_are_served_during_the_shutdown_delay() {
    let fixture = Fixture::new(Algorithm::ES256);
    let mut running = Running::start(&fixture, |c| c.shutdown_delay = Duration::from_secs(3)).await;
    let client = client();
    assert_eq!(get(&client, &format!("{}/readyz", running.admin)).await.0, StatusCode::OK);
    let _ = running.stop.take().expect("not stopped yet").send(());
    let deadline = Instant::now() + Duration::from_secs(2);
    while get(&client, &format!("{}/readyz", running.admin)).await.0 == StatusCode::OK {
        assert!(Instant::now() < deadline, "readiness never dropped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Not ready, still serving: fresh clients (new connections) get tokens.
    for _ in 0..3 {
        let (status, body) = post_token(&self::client(), &running.base, "svc", "svc-secret").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let task = running.task.take().expect("task");
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops after the delay")
        .expect("join")
        .expect("ok");
    let refused = client.request(
        Request::get(format!("{}/.well-known/jwks.json", running.base)).body(Full::default()).expect("request"),
    );
    assert!(refused.await.is_err(), "the port is closed after the delay");
}
