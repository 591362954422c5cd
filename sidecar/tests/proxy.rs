//! The proxy end to end: a real sidecar in front of a real upstream, both on
//! loopback, reached over real sockets.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use sigil_core::Algorithm;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn echo(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn header_of(echo: &Value, name: &str) -> Option<String> {
    echo["headers"][name].as_array().map(|v| v.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" | "))
}

fn es() -> &'static sigil_core::PrivateKey {
    key(Algorithm::ES256)
}

/// The issuer's subjects say whether a client or a user is calling; the app
/// is told which, and a client cannot claim a kind of its own.
#[tokio::test]
async fn the_subject_kind_is_forwarded_from_the_issuers_sub_scheme() {
    let up = upstream().await;
    let sc = sidecar(up.addr, &jwks_json(&[es()]), &[]).await;
    let subjects = [
        ("client:billing", "client"),
        ("user:billing", "user"),
        ("user:client:x", "user"),
        ("system:serviceaccount:shop:orders", "serviceaccount"),
        ("system:node:n1", ""),
        ("billing", ""),
    ];
    for (sub, kind) in subjects {
        let mut c = claims();
        c["sub"] = json!(sub);
        let auth = bearer(&sign(es(), &header(es()), &c));
        let (status, _, body) =
            get(&sc.url("/x"), &[("authorization", &auth), ("x-sigil-subject-kind", "client")]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let e = echo(&body);
        assert_eq!(header_of(&e, "x-sigil-subject").as_deref(), Some(sub));
        assert_eq!(header_of(&e, "x-sigil-subject-kind").as_deref(), Some(kind), "{sub}");
    }
}

#[tokio::test]
async fn forwards_verified_requests_with_identity_and_strips_client_headers() {
    let up = upstream().await;
    let sc = sidecar(up.addr, &jwks_json(&[es()]), &[]).await;
    let t = token(es());
    let auth = bearer(&t);
    let (status, headers, body) = get(
        &sc.url("/orders/7?x=1"),
        &[
            ("authorization", &auth),
            ("x-sigil-subject", "admin"),
            ("X-Sigil-Anything", "forged"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("connection", "x-drop-me, x-sigil-subject, x-sigil-claims"),
            ("x-drop-me", "hop"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let e = echo(&body);
    assert_eq!(e["path"], "/orders/7?x=1");
    assert_eq!(header_of(&e, "x-sigil-subject").as_deref(), Some("alice"));
    assert_eq!(header_of(&e, "x-sigil-subject-kind").as_deref(), Some(""), "alice follows no kind scheme");
    assert_eq!(header_of(&e, "x-sigil-scope").as_deref(), Some("orders:read orders:write"));
    assert_eq!(header_of(&e, "x-sigil-client-id").as_deref(), Some("web"));
    assert_eq!(header_of(&e, "x-sigil-claims").as_deref(), t.split('.').nth(1));
    assert_eq!(header_of(&e, "x-sigil-anything"), None);
    assert_eq!(header_of(&e, "authorization"), None, "the token is not forwarded by default");
    assert_eq!(header_of(&e, "x-forwarded-for").as_deref(), Some("127.0.0.1"), "replaced: the peer is no proxy");
    assert_eq!(header_of(&e, "x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(header_of(&e, "x-drop-me"), None, "hop-by-hop headers named in Connection are dropped");
    assert!(header_of(&e, "host").is_some());
    // The upstream's own hop-by-hop header does not reach the client either.
    assert!(!headers.contains_key("x-hop"));
}

#[tokio::test]
async fn forward_token_keeps_authorization() {
    let up = upstream().await;
    let sc = sidecar(up.addr, &jwks_json(&[es()]), &["--forward-token"]).await;
    let auth = bearer(&token(es()));
    let (status, _, body) = get(&sc.url("/"), &[("authorization", &auth)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header_of(&echo(&body), "authorization"), Some(auth));
}

#[tokio::test]
async fn missing_and_invalid_tokens_get_rfc6750_401s() {
    let up = upstream().await;
    let sc = sidecar(up.addr, &jwks_json(&[es()]), &[]).await;

    let (status, headers, body) = get(&sc.url("/orders"), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], r#"Bearer realm="sigil""#);
    assert_eq!(body, "unauthorized\n");

    let mut c = claims();
    c["exp"] = json!(now() - 3600);
    let expired = sign(es(), &header(es()), &c);
    let auth = bearer(&expired);
    let (status, headers, body) = get(&sc.url("/orders"), &[("authorization", &auth)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], r#"Bearer realm="sigil", error="invalid_token""#);
    assert_eq!(body, "unauthorized\n", "no detail leaks");
    assert_eq!(up.hits(), 0, "nothing reached the app");
    assert_eq!(sc.running.metrics.count("rejections", "expired"), 1);
    assert_eq!(sc.running.metrics.count("rejections", "no_token"), 1);
}

#[tokio::test]
async fn two_authorization_headers_or_a_query_token_are_refused() {
    let up = upstream().await;
    let sc = sidecar(up.addr, &jwks_json(&[es()]), &[]).await;
    let t = token(es());
    let raw = format!(
        "GET /orders HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {t}\r\nauthorization: Bearer {t}\r\nconnection: close\r\n\r\n"
    );
    let response = raw_exchange(sc.running.addr, raw.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains(r#"error="invalid_request""#), "{response}");

    let auth = bearer(&t);
    let (status, headers, _) = get(&sc.url(&format!("/orders?access_token={t}")), &[("authorization", &auth)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(headers["www-authenticate"], r#"Bearer realm="sigil", error="invalid_request""#);
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn public_paths_skip_verification_but_still_strip_sigil_headers() {
    let up = upstream().await;
    let sc = sidecar(up.addr, &jwks_json(&[es()]), &["--public-path", "/healthz"]).await;
    let (status, _, body) = get(&sc.url("/healthz/live"), &[("x-sigil-subject", "admin")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header_of(&echo(&body), "x-sigil-subject"), None);
    assert_eq!(get(&sc.url("/healthzadmin"), &[]).await.0, StatusCode::UNAUTHORIZED);
    // A public prefix cannot be used to walk into a protected path: the
    // decision is made on the normalised path (tests/bypass.rs has the rest).
    for (path, status) in
        [("/healthz/../admin", "401"), ("/healthz/%2e%2e/admin", "401"), ("/healthz/..;/admin", "400")]
    {
        let raw = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        let response = raw_exchange(sc.running.addr, raw.as_bytes()).await;
        assert!(response.starts_with(&format!("HTTP/1.1 {status}")), "{path}: {response}");
    }
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn scopes_are_enforced_with_403() {
    let up = upstream().await;
    let sc = sidecar(
        up.addr,
        &jwks_json(&[es()]),
        &["--require-scope", "/admin=admin", "--require-scope", "/orders=orders:read"],
    )
    .await;
    let auth = bearer(&token(es()));
    let (status, headers, body) = get(&sc.url("/admin/users"), &[("authorization", &auth)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers["www-authenticate"], r#"Bearer realm="sigil", error="insufficient_scope""#);
    assert_eq!(body, "forbidden\n");
    assert_eq!(get(&sc.url("/orders/1"), &[("authorization", &auth)]).await.0, StatusCode::OK);
    let mut c = claims();
    c["scope"] = json!("admin");
    let admin = bearer(&sign(es(), &header(es()), &c));
    assert_eq!(get(&sc.url("/admin/users"), &[("authorization", &admin)]).await.0, StatusCode::OK);
    assert_eq!(get(&sc.url("/orders/1"), &[("authorization", &admin)]).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    let up = upstream().await;
    let sc = sidecar(up.addr, &jwks_json(&[es()]), &[]).await;
    let auth = bearer(&token(es()));
    // Response: the first chunk arrives while the app still holds the second.
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = http::Request::get(sc.url("/stream"))
        .header("authorization", &auth)
        .body(Full::new(Bytes::new()))
        .expect("req");
    let response = client.request(req).await.expect("response");
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("first chunk in time");
    assert_eq!(first.expect("frame").expect("ok").into_data().expect("data"), "first\n");
    up.release.notify_one();
    let rest = body.collect().await.expect("rest").to_bytes();
    assert_eq!(rest, "second\n");
    // Request: 8 MiB goes through and is counted by the app.
    let big = Bytes::from(vec![b'x'; 8 << 20]);
    let (status, _, echoed) = request(http::Method::POST, &sc.url("/upload"), &[("authorization", &auth)], big).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo(&echoed)["body_len"], 8 << 20);
}

#[tokio::test]
async fn one_upstream_connection_carries_sequential_requests() {
    let up = upstream().await;
    let sc = sidecar(up.addr, &jwks_json(&[es()]), &["--threads", "1"]).await;
    let auth = bearer(&token(es()));
    for _ in 0..10 {
        assert_eq!(get(&sc.url("/"), &[("authorization", &auth)]).await.0, StatusCode::OK);
    }
    assert_eq!(up.hits(), 10);
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1, "the connection went back to the pool");
}

#[tokio::test]
async fn upgrades_after_verification() {
    let up = upstream().await;
    let sc = sidecar(up.addr, &jwks_json(&[es()]), &[]).await;
    let mut stream = open_tunnel(&sc, &token(es())).await;
    assert!(echoes(&mut stream).await, "bytes flow both ways over the tunnel");

    // Without a token, no upgrade happens.
    let raw = "GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\n";
    let response = raw_exchange(sc.running.addr, raw.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
}

#[tokio::test]
async fn app_down_is_502_and_slow_app_is_504() {
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    };
    let sc = sidecar(closed, &jwks_json(&[es()]), &[]).await;
    let auth = bearer(&token(es()));
    let (status, _, body) = get(&sc.url("/"), &[("authorization", &auth)]).await;
    assert_eq!((status, body.as_str()), (StatusCode::BAD_GATEWAY, "bad gateway\n"));
    assert_eq!(sc.running.metrics.count("upstream_errors", "connect"), 1);

    let up = upstream().await;
    let sc = sidecar(up.addr, &jwks_json(&[es()]), &["--upstream-timeout", "300ms"]).await;
    let started = std::time::Instant::now();
    let (status, _, _) = get(&sc.url("/slow"), &[("authorization", &auth)]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn http2_prior_knowledge() {
    let up = upstream().await;
    let sc = sidecar(up.addr, &jwks_json(&[es()]), &[]).await;
    let stream = TcpStream::connect(sc.running.addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let auth = bearer(&token(es()));
    for (auth, want) in [(Some(auth.as_str()), StatusCode::OK), (None, StatusCode::UNAUTHORIZED)] {
        let mut req = http::Request::get(sc.url("/h2")).header("x-sigil-scope", "forged");
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let response = send.send_request(req.body(Full::new(Bytes::new())).expect("req")).await.expect("response");
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), want);
        let body = response.into_body().collect().await.expect("body").to_bytes();
        if want == StatusCode::OK {
            let e = echo(&String::from_utf8_lossy(&body));
            assert_eq!(header_of(&e, "x-sigil-scope").as_deref(), Some("orders:read orders:write"));
            assert_eq!(e["version"], "HTTP/1.1", "the app is spoken to in HTTP/1.1");
        }
    }
}

#[tokio::test]
async fn readiness_follows_keys_and_file_swaps_revoke_immediately_cache_included() {
    let up = upstream().await;
    let other = key(Algorithm::EdDSA);
    let mut sc = sidecar(up.addr, "{not json", &[]).await;
    assert_eq!(sc.admin("/readyz").await, StatusCode::SERVICE_UNAVAILABLE, "no keys, not ready");
    assert_eq!(sc.admin("/healthz").await, StatusCode::OK);

    sc.publish(&jwks_json(&[es(), other]));
    eventually("keys loaded", async || sc.admin("/readyz").await == StatusCode::OK).await;
    let auth = bearer(&token(es()));
    for _ in 0..3 {
        assert_eq!(get(&sc.url("/"), &[("authorization", &auth)]).await.0, StatusCode::OK);
    }
    assert_eq!(sc.running.metrics.count("token_cache", "hit"), 2, "repeated token served from the cache");

    // The operator revokes the ES256 key: the cached token must stop working.
    sc.publish(&jwks_json(&[other]));
    eventually("key removed", async || sc.running.keys.load().get(es().kid()).is_none()).await;
    let (status, headers, _) = get(&sc.url("/"), &[("authorization", &auth)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], r#"Bearer realm="sigil", error="invalid_token""#);

    // A broken document keeps the current keys.
    sc.publish("{\"keys\": 7}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ed = bearer(&token(other));
    assert_eq!(get(&sc.url("/"), &[("authorization", &ed)]).await.0, StatusCode::OK);

    sc.stop();
}

#[tokio::test]
async fn drains_in_flight_requests_on_shutdown() {
    let up = upstream().await;
    let mut sc = sidecar(up.addr, &jwks_json(&[es()]), &[]).await;
    let auth = bearer(&token(es()));
    let url = sc.url("/slow");
    let in_flight = tokio::spawn(async move { get(&url, &[("authorization", &auth)]).await.0 });
    eventually("request reached the app", async || up.hits() == 1).await;
    sc.stop();
    eventually("not ready while draining", async || !sc.running.ready.is_ready()).await;
    assert_eq!(in_flight.await.expect("join"), StatusCode::OK, "the in-flight request finished");
    tokio::time::timeout(Duration::from_secs(5), &mut sc.running.done).await.expect("drained").expect("join");
    assert!(TcpStream::connect(sc.running.addr).await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn keeps_serving_through_the_shutdown_delay_while_not_ready() {
    let up = upstream().await;
    let mut sc = sidecar(up.addr, &jwks_json(&[es()]), &["--shutdown-delay", "2s"]).await;
    let auth = bearer(&token(es()));
    assert_eq!(sc.admin("/readyz").await, StatusCode::OK);
    let started = std::time::Instant::now();
    sc.stop();
    eventually("not ready at once", async || sc.admin("/readyz").await == StatusCode::SERVICE_UNAVAILABLE).await;
    // Endpoints take a moment to drop the pod: requests still arriving are served.
    for _ in 0..3 {
        assert_eq!(get(&sc.url("/"), &[("authorization", &auth)]).await.0, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(started.elapsed() < Duration::from_secs(2), "the checks ran inside the delay");
    tokio::time::timeout(Duration::from_secs(5), &mut sc.running.done).await.expect("stopped").expect("join");
    assert!(started.elapsed() >= Duration::from_secs(2), "stopped only after the delay");
    assert!(TcpStream::connect(sc.running.addr).await.is_err(), "no longer accepting");
}

/// Opens a tunnel to the upstream's `/ws` echo with `token`.
async fn open_tunnel(sc: &Sidecar, token: &str) -> TcpStream {
    let mut stream = TcpStream::connect(sc.running.addr).await.expect("connect");
    let head = format!(
        "GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: echo\r\nconnection: upgrade\r\nauthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 1024];
    let n = stream.read(&mut buf).await.expect("read");
    let response = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    stream
}

/// Whether the tunnel still echoes; false once the sidecar closed it.
async fn echoes(stream: &mut TcpStream) -> bool {
    if stream.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut echoed = [0u8; 4];
    matches!(tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut echoed)).await, Ok(Ok(_)))
}

#[tokio::test]
async fn tunnels_close_when_idle() {
    let up = upstream().await;
    let sc = sidecar(up.addr, &jwks_json(&[es()]), &["--upgrade-idle-timeout", "1s"]).await;
    let mut stream = open_tunnel(&sc, &token(es())).await;
    // Traffic keeps it open past the idle timeout...
    for _ in 0..4 {
        assert!(echoes(&mut stream).await);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // ...silence closes it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
    assert_eq!(sc.running.metrics.count("tunnels_closed", "idle"), 1);
}

#[tokio::test]
async fn tunnels_close_when_their_token_expires() {
    let up = upstream().await;
    let sc = sidecar(up.addr, &jwks_json(&[es()]), &[]).await;
    let mut c = claims();
    c["exp"] = json!(now() + 2);
    let mut stream = open_tunnel(&sc, &sign(es(), &header(es()), &c)).await;
    let opened = std::time::Instant::now();
    // Busy the whole time: only the token's expiry can end it.
    while echoes(&mut stream).await {
        assert!(opened.elapsed() < Duration::from_secs(5), "the tunnel outlived its token");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(opened.elapsed() >= Duration::from_millis(900), "closed too early: {:?}", opened.elapsed());
    assert_eq!(sc.running.metrics.count("tunnels_closed", "expired"), 1);
}

async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn slow_or_oversized_request_heads_are_cut_off() {
    let up = upstream().await;
    let sc =
        sidecar(up.addr, &jwks_json(&[es()]), &["--header-read-timeout", "300ms", "--max-header-bytes", "16384"]).await;
    // Slowloris: half a request head, then silence.
    let mut stream = TcpStream::connect(sc.running.addr).await.expect("connect");
    stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.expect("write");
    let mut out = Vec::new();
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut out)).await;
    assert!(closed.is_ok(), "the connection is closed after the header read timeout");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

    let big = "a".repeat(20_000);
    let raw = format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\nconnection: close\r\n\r\n");
    let response = raw_exchange(sc.running.addr, raw.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    assert_eq!(up.hits(), 0);
}
