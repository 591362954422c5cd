//! HTTPS on the token endpoint over real sockets: a certificate from a test
//! CA, rotated kubelet-style while requests keep coming (none may fail), a
//! bad pair that must not replace a good one, and discovery URLs.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;
use sigil_api::Algorithm;
use sigil_issuer::config::TlsFiles;
use sigil_issuer::server;
use sigil_runtime::volume::write_atomically;
use support::{Fixture, ISSUER};
use tokio::net::TcpStream;

/// A test CA; [`Ca::issue`] signs server certificates for 127.0.0.1.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        Ca { issuer: rcgen::CertifiedIssuer::self_signed(params, key).expect("CA") }
    }

    /// A certificate and its key, as PEM.
    fn issue(&self) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("server key");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("server params");
        let cert = params.signed_by(&key, &self.issuer).expect("server certificate");
        (cert.pem(), key.serialize_pem())
    }

    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).expect("CA root");
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        // A resumed session presents no certificate; every handshake here is
        // a full one, so each shows what the server serves now.
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }
}

/// Writes a certificate pair the way the kubelet updates a kubernetes.io/tls Secret's volume.
fn write_tls(dir: &std::path::Path, (cert, key): &(String, String)) {
    write_atomically(dir, &[("tls.crt", cert.as_bytes()), ("tls.key", key.as_bytes())]).expect("write tls volume");
}

/// DER of a PEM certificate, to compare with what a handshake presents.
fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem").to_vec()
}

/// One request on a fresh TLS connection: status, body, and the certificate served.
async fn https(
    config: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Value, Vec<u8>), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let served = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| format!("http: {e}"))?;
    tokio::spawn(conn);
    let response = sender.send_request(request).await.map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null), served))
}

fn token_request() -> Request<Full<Bytes>> {
    let credentials = base64::engine::general_purpose::STANDARD.encode("svc:svc-secret");
    Request::post("/token")
        .header(header::HOST, "127.0.0.1")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::AUTHORIZATION, format!("Basic {credentials}"))
        .body(Full::new(Bytes::from_static(b"grant_type=client_credentials")))
        .expect("request")
}

struct Served {
    addr: SocketAddr,
    state: Arc<sigil_issuer::state::AppState>,
    tls_dir: PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<sigil_issuer::Result<()>>,
}

async fn serve_tls(fixture: &Fixture, pair: &(String, String)) -> Served {
    let tls_dir = fixture.dir.path().join("tls");
    write_tls(&tls_dir, pair);
    let mut config = fixture.config();
    config.tls = Some(TlsFiles { cert: tls_dir.join("tls.crt"), key: tls_dir.join("tls.key") });
    let (state, registry) = server::prepare(&config).expect("issuer loads");
    let listener = server::bind(config.listen).await.expect("bind");
    let admin = server::bind(config.admin_listen).await.expect("bind admin");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = state.clone();
    let task = tokio::spawn(async move {
        server::serve(&config, serving, registry, listener, admin, async move {
            let _ = stopped.await;
        })
        .await
    });
    Served { addr, state, tls_dir, stop, task }
}

impl Served {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task).await.expect("stops").expect("join").expect("ok");
    }
}

/// Finding 2: tokens over HTTPS while cert-manager (here: a kubelet-style
/// volume swap) replaces the certificate; every request succeeds, and new
/// connections get the new certificate.
#[tokio::test]
async fn tls_certificate_rotated_under_load_fails_no_request() {
    let fixture = Fixture::new(Algorithm::ES256);
    let ca = Ca::new();
    let (first, second) = (ca.issue(), ca.issue());
    let served = serve_tls(&fixture, &first).await;
    let client = ca.client_config();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(BTreeSet::<Vec<u8>>::new()));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (client, stop, seen, addr) = (client.clone(), stop.clone(), seen.clone(), served.addr);
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failures) = (0u32, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                match https(&client, addr, token_request()).await {
                    Ok((StatusCode::OK, body, cert)) if body["access_token"].is_string() => {
                        ok += 1;
                        seen.lock().expect("lock").insert(cert);
                    }
                    other => failures.push(format!("{other:?}")),
                }
            }
            (ok, failures)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    write_tls(&served.tls_dir, &second);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.lock().expect("lock").contains(&der(&second.0)) {
        assert!(Instant::now() < deadline, "the rotated certificate was never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (mut ok, mut failures) = (0, Vec::new());
    for w in workers {
        let (n, f) = w.await.expect("worker");
        ok += n;
        failures.extend(f);
    }
    assert!(failures.is_empty(), "{} requests failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(ok > 20, "the load really ran: {ok}");
    assert!(seen.lock().expect("lock").contains(&der(&first.0)), "the first certificate was served before");
    served.stop().await;
}

/// A certificate whose key does not match (or junk) never replaces a good
/// pair; the error names the file; plain HTTP is not answered on the TLS port.
#[tokio::test]
async fn tls_a_bad_pair_keeps_the_served_certificate() {
    let fixture = Fixture::new(Algorithm::ES256);
    let ca = Ca::new();
    let good = ca.issue();
    let served = serve_tls(&fixture, &good).await;
    let client = ca.client_config();
    let mismatched = (ca.issue().0, good.1.clone());
    for bad in [mismatched, (good.0.clone(), "junk".to_owned()), ("junk".to_owned(), good.1.clone())] {
        write_tls(&served.tls_dir, &bad);
        let err = served.state.reload_tls().expect_err("bad pair").to_string();
        assert!(err.contains("tls.key") || err.contains("tls.crt"), "{err}");
        assert!(!err.contains("PRIVATE KEY"), "no key material in errors: {err}");
        let (status, _, cert) = https(&client, served.addr, token_request()).await.expect("still served");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(cert, der(&good.0));
    }
    // Plain HTTP on the HTTPS port gets no token.
    let plain: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let mut request = token_request();
    *request.uri_mut() = format!("http://{}/token", served.addr).parse().expect("uri");
    let answer = tokio::time::timeout(Duration::from_secs(10), plain.request(request)).await.expect("answered");
    assert!(answer.is_err() || answer.is_ok_and(|r| r.status() != StatusCode::OK));
    served.stop().await;
}

/// The discovery documents served over HTTPS name https endpoints under the issuer URL.
#[tokio::test]
async fn tls_discovery_urls_are_https() {
    let fixture = Fixture::new(Algorithm::ES256);
    let ca = Ca::new();
    let served = serve_tls(&fixture, &ca.issue()).await;
    let client = ca.client_config();
    for path in ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"] {
        let request = Request::get(path).header(header::HOST, "127.0.0.1").body(Full::default()).expect("request");
        let (status, body, _) = https(&client, served.addr, request).await.expect("discovery");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["issuer"], ISSUER);
        assert!(ISSUER.starts_with("https://"));
        assert_eq!(body["token_endpoint"], format!("{ISSUER}/token"));
        assert_eq!(body["jwks_uri"], format!("{ISSUER}/.well-known/jwks.json"));
    }
    served.stop().await;
}
