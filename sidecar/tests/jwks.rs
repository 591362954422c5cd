//! The JWKS URL source against a real HTTP JWKS server that counts fetches:
//! refresh on unknown kid, its rate limit, Cache-Control, stale serving,
//! revocation through either source, and https with a CA bundle.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser as _;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use sigil_core::{Algorithm, PrivateKey};
use support::*;
use tokio::net::TcpListener;

#[derive(Clone)]
struct Reply {
    status: StatusCode,
    body: String,
    cache_control: Option<&'static str>,
}

struct JwksServer {
    url: String,
    fetches: Arc<AtomicUsize>,
    reply: Arc<Mutex<Reply>>,
}

impl JwksServer {
    async fn start(body: String, cache_control: Option<&'static str>) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().expect("addr"));
        let fetches = Arc::new(AtomicUsize::new(0));
        let reply = Arc::new(Mutex::new(Reply { status: StatusCode::OK, body, cache_control }));
        let (f, r) = (fetches.clone(), reply.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (f, r) = (f.clone(), r.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        f.fetch_add(1, Ordering::SeqCst);
                        let reply = r.lock().expect("lock").clone();
                        async move {
                            let mut response = Response::new(Full::new(Bytes::from(reply.body)));
                            *response.status_mut() = reply.status;
                            if let Some(cc) = reply.cache_control {
                                response.headers_mut().insert("cache-control", cc.parse().expect("hv"));
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        JwksServer { url, fetches, reply }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn serve(&self, status: StatusCode, body: String) {
        let mut reply = self.reply.lock().expect("lock");
        reply.status = status;
        reply.body = body;
    }
}

async fn status_with(sc: &Sidecar, token: &str) -> StatusCode {
    get(&sc.url("/"), &[("authorization", &bearer(token))]).await.0
}

#[tokio::test]
async fn unknown_kid_refreshes_at_once_but_at_most_once_per_min_refresh() {
    let (a, b) = (key(Algorithm::ES256), key(Algorithm::EdDSA));
    let jwks = JwksServer::start(jwks_json(&[a]), None).await;
    let up = upstream().await;
    let sc =
        sidecar_with(up.addr, &["--jwks-url", &jwks.url, "--jwks-refresh", "1h", "--jwks-min-refresh", "1s"]).await;
    eventually("ready from the URL", async || sc.admin("/readyz").await == StatusCode::OK).await;
    assert_eq!(status_with(&sc, &token(a)).await, StatusCode::OK);
    assert_eq!(jwks.fetches(), 1);

    // The issuer publishes a new key; a token signed with it arrives.
    jwks.serve(StatusCode::OK, jwks_json(&[a, b]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status_with(&sc, &token(b)).await, StatusCode::UNAUTHORIZED, "not known yet: refused, not held");
    eventually("refetched on unknown kid", async || jwks.fetches() == 2).await;
    eventually("new key verifies", async || status_with(&sc, &token(b)).await == StatusCode::OK).await;

    // A flood of unknown kids: no fetch before min-refresh has passed, then one.
    let attacker = PrivateKey::generate(Algorithm::ES256, None).expect("keygen");
    for i in 0..30 {
        let t = sign(
            &attacker,
            &serde_json::json!({"typ": "at+jwt", "alg": "ES256", "kid": format!("random-{i}")}),
            &claims(),
        );
        assert_eq!(status_with(&sc, &t).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(jwks.fetches(), 2, "rate-limited");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(jwks.fetches(), 3, "one deferred fetch for the whole flood");
}

#[tokio::test]
async fn cache_control_max_age_is_honoured_within_bounds() {
    let a = key(Algorithm::ES256);
    let short = JwksServer::start(jwks_json(&[a]), Some("public, max-age=1")).await;
    let plain = JwksServer::start(jwks_json(&[a]), None).await;
    let up = upstream().await;
    let flags = |url: &str| {
        vec![
            "--jwks-url".to_owned(),
            url.to_owned(),
            "--jwks-refresh".into(),
            "1h".into(),
            "--jwks-min-refresh".into(),
            "1s".into(),
        ]
    };
    let short_flags = flags(&short.url);
    let plain_flags = flags(&plain.url);
    let _s1 = sidecar_with(up.addr, &short_flags.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let _s2 = sidecar_with(up.addr, &plain_flags.iter().map(String::as_str).collect::<Vec<_>>()).await;
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert!(short.fetches() >= 3, "max-age=1 refetches every second: {}", short.fetches());
    assert_eq!(plain.fetches(), 1, "without max-age the 1h schedule applies");
}

#[tokio::test]
async fn last_good_keys_serve_until_max_stale() {
    let a = key(Algorithm::ES256);
    let jwks = JwksServer::start(jwks_json(&[a]), Some("max-age=0")).await;
    let up = upstream().await;
    let sc = sidecar_with(
        up.addr,
        &[
            "--jwks-url",
            &jwks.url,
            "--jwks-refresh",
            "200ms",
            "--jwks-min-refresh",
            "200ms",
            "--jwks-max-stale",
            "1500ms",
        ],
    )
    .await;
    eventually("ready", async || sc.admin("/readyz").await == StatusCode::OK).await;

    // The issuer goes down: keys keep working.
    jwks.serve(StatusCode::SERVICE_UNAVAILABLE, "down".into());
    let failed_from = jwks.fetches();
    eventually("a fetch failed", async || jwks.fetches() > failed_from).await;
    assert_eq!(status_with(&sc, &token(a)).await, StatusCode::OK, "last good keys still verify");
    assert_eq!(sc.admin("/readyz").await, StatusCode::OK);

    // Past max-stale they are dropped, and the sidecar says it is not ready.
    eventually("stale keys dropped", async || sc.admin("/readyz").await == StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(status_with(&sc, &token(a)).await, StatusCode::UNAUTHORIZED);

    // The issuer comes back.
    jwks.serve(StatusCode::OK, jwks_json(&[a]));
    eventually("recovered", async || status_with(&sc, &token(a)).await == StatusCode::OK).await;
}

#[tokio::test]
async fn file_and_url_keys_are_merged() {
    let (a, b) = (key(Algorithm::ES256), key(Algorithm::EdDSA));
    let jwks = JwksServer::start(jwks_json(&[b]), None).await;
    let up = upstream().await;
    let sc = sidecar(up.addr, &jwks_json(&[a]), &["--jwks-url", &jwks.url]).await;
    eventually("URL keys loaded", async || sc.running.keys.load().len() == 2).await;
    assert_eq!(status_with(&sc, &token(a)).await, StatusCode::OK);
    assert_eq!(status_with(&sc, &token(b)).await, StatusCode::OK);
}

#[tokio::test]
async fn a_key_withdrawn_by_one_source_stops_verifying_while_the_other_still_lists_it() {
    let (a, b) = (key(Algorithm::ES256), key(Algorithm::EdDSA));
    let jwks = JwksServer::start(jwks_json(&[a, b]), None).await;
    let up = upstream().await;
    let url_args = ["--jwks-url", &jwks.url, "--jwks-refresh", "1h", "--jwks-min-refresh", "1s"];
    let sc = sidecar(up.addr, &jwks_json(&[a, b]), &url_args).await;
    eventually("URL keys loaded", async || jwks.fetches() >= 1).await;
    assert_eq!(status_with(&sc, &token(b)).await, StatusCode::OK);
    let attacker = PrivateKey::generate(Algorithm::ES256, None).expect("keygen");
    let unknown_kid = |i: usize| {
        sign(&attacker, &serde_json::json!({"typ": "at+jwt", "alg": "ES256", "kid": format!("unknown-{i}")}), &claims())
    };

    // The operator revokes b: the mounted file drops it at once, while the
    // issuer's copy behind the URL still lists it.
    sc.publish(&jwks_json(&[a]));
    eventually("b refused once the file drops it", async || {
        status_with(&sc, &token(b)).await == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(status_with(&sc, &token(a)).await, StatusCode::OK);
    // A fresh URL fetch that still lists b does not bring it back.
    let fetched = jwks.fetches();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status_with(&sc, &unknown_kid(1)).await, StatusCode::UNAUTHORIZED);
    eventually("the URL was fetched again", async || jwks.fetches() > fetched).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status_with(&sc, &token(b)).await, StatusCode::UNAUTHORIZED, "still withdrawn");

    // Only the source that withdrew a key can restore it.
    sc.publish(&jwks_json(&[a, b]));
    eventually("b verifies when the file lists it again", async || status_with(&sc, &token(b)).await == StatusCode::OK)
        .await;

    // And the other way round: the URL drops b while the file still lists it.
    jwks.serve(StatusCode::OK, jwks_json(&[a]));
    let fetched = jwks.fetches();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status_with(&sc, &unknown_kid(2)).await, StatusCode::UNAUTHORIZED);
    eventually("the URL was fetched again", async || jwks.fetches() > fetched).await;
    eventually("b refused once the URL drops it", async || {
        status_with(&sc, &token(b)).await == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(status_with(&sc, &token(a)).await, StatusCode::OK);
}

/// A CA and a server certificate for 127.0.0.1 it signed: the CA's PEM, and
/// the server's TLS configuration.
fn pki() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("server key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("server params");
    let cert = params.signed_by(&key, &ca).expect("server certificate");
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der)
        .expect("server config");
    (ca.pem(), Arc::new(config))
}

/// A JWKS served over TLS; counts completed requests (failed handshakes never get that far).
async fn https_jwks(config: Arc<rustls::ServerConfig>, body: String) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("https://{}/.well-known/jwks.json", listener.local_addr().expect("addr"));
    let fetches = Arc::new(AtomicUsize::new(0));
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let counted = fetches.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (acceptor, counted, body) = (acceptor.clone(), counted.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let service = hyper::service::service_fn(move |_req| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let body = body.clone();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    (url, fetches)
}

#[tokio::test]
async fn https_jwks_url_trusts_only_its_ca_bundle_and_rereads_it() {
    let a = key(Algorithm::ES256);
    let (ca, server) = pki();
    let (other_ca, _) = pki();
    let (url, fetches) = https_jwks(server, jwks_json(&[a])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &other_ca).expect("write CA");
    let up = upstream().await;
    let ca_arg = ca_file.display().to_string();
    let sc = sidecar_with(up.addr, &["--jwks-url", &url, "--jwks-ca-file", &ca_arg, "--jwks-min-refresh", "1s"]).await;

    // Signed by a CA the bundle does not hold: no keys, not ready.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sc.admin("/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(fetches.load(Ordering::SeqCst), 0, "no request was sent over the untrusted connection");
    assert_eq!(status_with(&sc, &token(a)).await, StatusCode::UNAUTHORIZED);

    // The bundle is replaced the way the kubelet replaces a mounted file.
    let next = dir.path().join("ca.pem.new");
    std::fs::write(&next, &ca).expect("write CA");
    std::fs::rename(&next, &ca_file).expect("rename");
    eventually("ready once the right CA is mounted", async || sc.admin("/readyz").await == StatusCode::OK).await;
    assert_eq!(status_with(&sc, &token(a)).await, StatusCode::OK);
}

#[tokio::test]
async fn an_unusable_ca_bundle_stops_the_sidecar_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, "not a certificate").expect("write");
    let up = upstream().await;
    let args = sigil_sidecar::config::Args::try_parse_from([
        "sigil-sidecar",
        "--listen=127.0.0.1:0",
        "--admin-listen=127.0.0.1:0",
        &format!("--upstream=http://{}", up.addr),
        "--issuer=https://i",
        "--audience=a",
        "--jwks-url=https://127.0.0.1:1/jwks.json",
        &format!("--jwks-ca-file={}", ca_file.display()),
    ])
    .expect("args");
    let err = sigil_sidecar::run::start(args.into_config().expect("config"), std::future::pending())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("holds no PEM certificate"), "{err}");
}
