//! Every way around the sidecar a security review tried, and the spellings
//! next to them, against the real `sigil-sidecar` binary on loopback with a
//! real app behind it. Requests are written byte for byte, so nothing a
//! client library would tidy up (case, `//`, `..`, underscores) is lost.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sigil_core::{Algorithm, PrivateKey};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The real binary, killed on drop.
struct Binary {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port()
}

async fn binary(upstream: SocketAddr, extra: &[&str]) -> Binary {
    let dir = tempfile::tempdir().expect("tempdir");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, jwks_json(&[es()])).expect("write");
    let (port, admin) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_sigil-sidecar"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--upstream", &format!("http://{upstream}"), "--jwks-file", &jwks.display().to_string()])
        .args(["--issuer", ISSUER, "--audience", AUDIENCE])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn sigil-sidecar");
    let binary = Binary { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), _dir: dir };
    let ready = "GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    eventually("the sidecar binary is ready", async || {
        let admin = SocketAddr::from(([127, 0, 0, 1], admin));
        match TcpStream::connect(admin).await {
            Ok(_) => exchange(admin, ready).await.0 == 200,
            Err(_) => false,
        }
    })
    .await;
    binary
}

fn es() -> &'static PrivateKey {
    key(Algorithm::ES256)
}

/// Sends one raw HTTP/1.1 request; returns the status and the body.
async fn exchange(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn request(path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> String {
    let mut r = format!("GET {path} HTTP/1.1\r\nhost: app\r\nconnection: close\r\n");
    if let Some(token) = token {
        r.push_str(&format!("authorization: Bearer {token}\r\n"));
    }
    for (name, value) in headers {
        r.push_str(&format!("{name}: {value}\r\n"));
    }
    r.push_str("\r\n");
    r
}

fn with_scope(scope: Option<&str>) -> String {
    let mut c = claims();
    match scope {
        Some(scope) => c["scope"] = json!(scope),
        None => drop(c.as_object_mut().expect("object").remove("scope")),
    }
    sign(es(), &header(es()), &c)
}

fn echoed(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn echoed_header(echo: &Value, name: &str) -> Option<String> {
    echo["headers"][name].as_array().map(|v| v.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" | "))
}

const RULES: [&str; 6] = [
    "--require-scope",
    "/admin=orders:admin",
    "--public-path",
    "/docs",
    "--require-scope",
    "/docs/admin/=orders:admin",
];

#[tokio::test]
async fn no_spelling_of_a_protected_path_escapes_its_rule() {
    let up = upstream().await;
    let sc = binary(up.addr, &RULES).await;
    let reader = with_scope(Some("orders:read"));
    for path in [
        "/admin/x",
        "/admin",
        "/admin/",
        "/%61dmin/x",
        "/%61%64%6d%69%6e/x",
        "//admin/x",
        "///admin//x",
        "/./admin/x",
        "/orders/../admin/x",
        "/orders/%2e%2e/admin/x",
        "/orders/.%2E/admin/x",
        "/admin;jsessionid=1/x",
        "/docs/admin",
        "/docs/admin/x",
        "/docs//admin",
        "/docs/./admin/",
        "/docs/%61dmin",
        "/docs/guide/../admin",
        "/docs/admin;x",
    ] {
        let (status, body) = exchange(sc.addr, &request(path, Some(&reader), &[])).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    // Without a token the same spellings are 401, public prefix or not.
    for path in ["/%61dmin/x", "/docs/%2e%2e/admin", "/docs//admin"] {
        assert_eq!(exchange(sc.addr, &request(path, None, &[])).await.0, 401, "{path}");
    }
    // What has no safe single meaning is refused before anything else.
    for path in [
        "/admin%2fx",
        "/admin%2Fx",
        "/docs%2f..%2fadmin",
        "/docs%5cadmin",
        "/docs/..;/admin",
        "/docs/.;/admin",
        "/%2e%2e/admin",
        "/..",
        "/admin%00",
        "/admin%0d%0a",
        "/admin%ff",
        "/admin%zz",
        "/admin%",
    ] {
        let (status, body) = exchange(sc.addr, &request(path, Some(&reader), &[])).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    assert_eq!(up.hits(), 0, "nothing reached the app");
}

#[tokio::test]
async fn the_app_receives_the_path_the_decision_was_made_on() {
    let up = upstream().await;
    let sc = binary(up.addr, &RULES).await;
    let admin = with_scope(Some("orders:read orders:admin"));
    for (path, forwarded) in [
        ("/%61dmin//x/./y/../z?q=%2F..", "/admin/x/z?q=%2F.."),
        ("/orders/%7e%41/%c3%a9", "/orders/~A/%C3%A9"),
        ("/docs//guide/./intro", "/docs/guide/intro"),
        ("/orders/7?x=1", "/orders/7?x=1"),
    ] {
        let (status, body) = exchange(sc.addr, &request(path, Some(&admin), &[])).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(echoed(&body)["path"], forwarded, "{path}");
    }
    // A public path stays public in every spelling, and is still normalised.
    let (status, body) = exchange(sc.addr, &request("/docs/%67uide", None, &[])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echoed(&body)["path"], "/docs/guide");
}

#[tokio::test]
async fn case_insensitive_routers_get_case_insensitive_rules() {
    let up = upstream().await;
    let reader = with_scope(Some("orders:read"));
    let exact = binary(up.addr, &RULES).await;
    // A case-sensitive app has no /ADMIN handler: passing it on is right.
    assert_eq!(exchange(exact.addr, &request("/ADMIN/x", Some(&reader), &[])).await.0, 200);
    let folded = binary(up.addr, &[&RULES[..], &["--case-insensitive-paths"]].concat()).await;
    for path in ["/ADMIN/x", "/Admin", "/%41dmin/x", "/DOCS/Admin"] {
        assert_eq!(exchange(folded.addr, &request(path, Some(&reader), &[])).await.0, 403, "{path}");
    }
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn underscore_headers_are_refused_or_dropped_and_identity_cannot_be_forged() {
    let up = upstream().await;
    let no_scope = with_scope(None);
    let forged = [
        ("X_Sigil_Subject", "admin"),
        ("x_sigil_scope", "orders:admin"),
        ("X-SIGIL-SUBJECT", "admin"),
        ("x-Sigil-Client-Id", "admin"),
    ];
    let strict = binary(up.addr, &[]).await;
    for (name, value) in forged {
        let (status, _) = exchange(strict.addr, &request("/orders", Some(&no_scope), &[(name, value)])).await;
        let expected = if name.contains('_') { 400 } else { 200 };
        assert_eq!(status, expected, "{name}");
    }
    assert_eq!(exchange(strict.addr, &request("/orders", None, &[("user_agent", "x")])).await.0, 400);
    assert_eq!(up.hits(), 2, "only the hyphenated spellings were forwarded, and stripped");

    let dropping = binary(up.addr, &["--headers-with-underscores", "drop", "--public-path", "/docs"]).await;
    let (status, body) = exchange(dropping.addr, &request("/orders", Some(&no_scope), &forged)).await;
    assert_eq!(status, 200, "{body}");
    let e = echoed(&body);
    assert_eq!(echoed_header(&e, "x-sigil-subject").as_deref(), Some("alice"));
    assert_eq!(echoed_header(&e, "x-sigil-scope").as_deref(), Some(""), "absent claim: set, empty");
    assert_eq!(echoed_header(&e, "x-sigil-client-id").as_deref(), Some("web"));
    let names: Vec<&String> = e["headers"].as_object().expect("headers").keys().collect();
    assert!(names.iter().all(|n| !n.contains('_')), "{names:?}");

    // Public paths carry no identity at all, forged or real.
    let (status, body) = exchange(dropping.addr, &request("/docs", Some(&no_scope), &forged)).await;
    assert_eq!(status, 200, "{body}");
    let e = echoed(&body);
    let sigil: Vec<&String> =
        e["headers"].as_object().expect("headers").keys().filter(|n| n.starts_with("x-sigil")).collect();
    assert!(sigil.is_empty(), "{sigil:?}");
}

#[tokio::test]
async fn forwarding_headers_are_believed_only_from_trusted_proxies() {
    let up = upstream().await;
    let t = with_scope(Some("orders:read"));
    let claimed = [
        ("x-forwarded-for", "203.0.113.9"),
        ("Forwarded", "for=203.0.113.9;proto=https"),
        ("X-Real-IP", "203.0.113.9"),
        ("x-forwarded-host", "admin.example"),
        ("x-forwarded-proto", "https"),
    ];
    let sc = binary(up.addr, &[]).await;
    let e = echoed(&exchange(sc.addr, &request("/orders", Some(&t), &claimed)).await.1);
    assert_eq!(echoed_header(&e, "x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(echoed_header(&e, "x-forwarded-proto").as_deref(), Some("http"));
    for gone in ["forwarded", "x-real-ip", "x-forwarded-host"] {
        assert_eq!(echoed_header(&e, gone), None, "{gone}");
    }
    let behind_proxy = binary(up.addr, &["--trusted-proxies", "127.0.0.0/8"]).await;
    let e = echoed(&exchange(behind_proxy.addr, &request("/orders", Some(&t), &claimed)).await.1);
    assert_eq!(echoed_header(&e, "x-forwarded-for").as_deref(), Some("203.0.113.9, 127.0.0.1"));
    assert_eq!(echoed_header(&e, "x-real-ip").as_deref(), Some("203.0.113.9"));
    assert_eq!(echoed_header(&e, "x-forwarded-proto").as_deref(), Some("https"));
}

#[tokio::test]
async fn only_rfc9068_access_tokens_pass_by_default() {
    let up = upstream().await;
    let sc = binary(up.addr, &[]).await;
    let mut typed_jwt = header(es());
    typed_jwt["typ"] = json!("JWT");
    let mut untyped = header(es());
    untyped.as_object_mut().expect("object").remove("typ");
    let mut no_jti = claims();
    no_jti.as_object_mut().expect("object").remove("jti");
    let refused =
        [sign(es(), &typed_jwt, &claims()), sign(es(), &untyped, &claims()), sign(es(), &header(es()), &no_jti)];
    for t in &refused {
        let (status, body) = exchange(sc.addr, &request("/orders", Some(t), &[])).await;
        assert_eq!(status, 401, "{body}");
    }
    assert_eq!(up.hits(), 0);
    // One flag accepts them, for issuers that do not type access tokens.
    let relaxed = binary(up.addr, &["--token-profile", "jwt"]).await;
    for t in &refused {
        assert_eq!(exchange(relaxed.addr, &request("/orders", Some(t), &[])).await.0, 200);
    }
}

#[tokio::test]
async fn non_ascii_claims_are_forwarded_encoded() {
    let up = upstream().await;
    let sc = binary(up.addr, &[]).await;
    let mut c = claims();
    c["sub"] = json!("zoë\r\nx-sigil-scope: admin");
    c["client_id"] = json!("100%");
    let t = sign(es(), &header(es()), &c);
    let (status, body) = exchange(sc.addr, &request("/orders", Some(&t), &[])).await;
    assert_eq!(status, 200, "{body}");
    let e = echoed(&body);
    assert_eq!(echoed_header(&e, "x-sigil-subject").as_deref(), Some("zo%C3%AB%0D%0Ax-sigil-scope: admin"));
    assert_eq!(echoed_header(&e, "x-sigil-client-id").as_deref(), Some("100%25"));
    assert_eq!(echoed_header(&e, "x-sigil-scope").as_deref(), Some("orders:read orders:write"));
}

#[tokio::test]
async fn a_public_path_never_opens_a_tunnel() {
    let up = upstream().await;
    let sc = binary(up.addr, &["--public-path", "/ws"]).await;
    let raw = "GET /ws HTTP/1.1\r\nhost: app\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\n";
    let mut stream = TcpStream::connect(sc.addr).await.expect("connect");
    stream.write_all(raw.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.expect("answer").expect("read");
    let response = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(!response.starts_with("HTTP/1.1 101"), "{response}");
    assert!(response.starts_with("HTTP/1.1 502"), "the app's unasked-for 101 is not passed on: {response}");
}
