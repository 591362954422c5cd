//! The router driven directly (`tower::ServiceExt::oneshot`, no socket):
//! every endpoint, every RFC 6749 error, client authentication, scopes, the
//! auth cache, rate limits and key reloads.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use base64::Engine as _;
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use serde_json::Value;
use sigil_api::{Algorithm, JwkSet};
use sigil_issuer::routes;
use sigil_issuer::server;
use sigil_issuer::state::AppState;
use support::{AUDIENCE, Fixture, ISSUER};
use tower::ServiceExt;

struct Harness {
    fixture: Fixture,
    state: Arc<AppState>,
    registry: Arc<Registry>,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

const FORM: &str = "application/x-www-form-urlencoded";

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
}

impl Harness {
    fn new(alg: Algorithm) -> Harness {
        Harness::with(Fixture::new(alg), |_| {})
    }

    fn with(fixture: Fixture, tweak: impl FnOnce(&mut sigil_issuer::config::Config)) -> Harness {
        let mut config = fixture.config();
        tweak(&mut config);
        let (state, registry) = server::prepare(&config).expect("issuer loads");
        Harness { fixture, state, registry }
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = routes::app(self.state.clone()).oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes().to_vec();
        Reply { status: parts.status, headers: parts.headers, body }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = Request::get(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(Body::empty()).expect("request")).await
    }

    /// POST /token from `source`, with optional Basic credentials.
    async fn token_from(&self, form: &str, auth: Option<(&str, &str)>, source: &str) -> Reply {
        let mut request = Request::post("/token").header(header::CONTENT_TYPE, FORM);
        if let Some((id, secret)) = auth {
            request = request.header(header::AUTHORIZATION, basic(id, secret));
        }
        let mut request = request.body(Body::from(form.to_owned())).expect("request");
        let addr: SocketAddr = format!("{source}:40000").parse().expect("addr");
        request.extensions_mut().insert(ConnectInfo(addr));
        self.send(request).await
    }

    /// POST /token through a proxy at 192.0.2.1 that forwards for `client`.
    async fn token_via_proxy(&self, form: &str, auth: Option<(&str, &str)>, client: &str) -> Reply {
        let mut request = Request::post("/token")
            .header(header::CONTENT_TYPE, FORM)
            .header("x-forwarded-for", format!("6.6.6.6, {client}"));
        if let Some((id, secret)) = auth {
            request = request.header(header::AUTHORIZATION, basic(id, secret));
        }
        let mut request = request.body(Body::from(form.to_owned())).expect("request");
        request.extensions_mut().insert(ConnectInfo("192.0.2.1:40000".parse::<SocketAddr>().expect("addr")));
        self.send(request).await
    }

    async fn token(&self, form: &str, auth: Option<(&str, &str)>) -> Reply {
        self.token_from(form, auth, "192.0.2.1").await
    }

    /// Checks the token with the JWKS the issuer serves (in-process; the
    /// independent PyJWT check is in `server.rs`) and returns its claims.
    async fn verify(&self, token: &str, audience: &str) -> Value {
        let jwks = self.get("/.well-known/jwks.json", &[]).await;
        let keys = JwkSet::parse(&jwks.body).expect("served JWKS parses").keys;
        let header = jsonwebtoken::decode_header(token).expect("header");
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        let kid = header.kid.expect("kid");
        let key = keys.iter().find(|k| k.kid == kid).expect("kid is published");
        assert_eq!(header.alg, key.alg.to_jwt());
        let mut validation = jsonwebtoken::Validation::new(key.alg.to_jwt());
        validation.set_audience(&[audience]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "sub", "aud", "jti"]);
        jsonwebtoken::decode::<Value>(token, &key.key, &validation).expect("token verifies").claims
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("encode");
        text
    }

    fn metric(&self, name: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

#[tokio::test]
async fn client_credentials_with_basic_auth_issues_an_rfc_9068_token() {
    let h = Harness::new(Algorithm::ES256);
    let reply = h.token("grant_type=client_credentials", Some(("svc", "svc-secret"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(reply.headers[header::CONTENT_TYPE], "application/json");
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "orders.read orders.write");
    let claims = h.verify(body["access_token"].as_str().expect("token"), AUDIENCE).await;
    assert_eq!(claims["sub"], "client:svc");
    assert_eq!(claims["client_id"], "svc");
    assert_eq!(claims["scope"], "orders.read orders.write");
    assert_eq!(claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat"), 900);
    assert_eq!(claims["nbf"], claims["iat"]);
    let header = jsonwebtoken::decode_header(body["access_token"].as_str().expect("token")).expect("header");
    assert_eq!(header.kid.as_deref(), Some(h.fixture.key.kid()));
    assert!(h.metrics().contains(r#"sigil_issuer_tokens_issued_total{client="svc",grant="client_credentials"} 1"#));
}

#[tokio::test]
async fn form_client_auth_and_per_client_audience_and_ttl() {
    let h = Harness::new(Algorithm::EdDSA);
    let reply = h.token("grant_type=client_credentials&client_id=short&client_secret=short-secret", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["expires_in"], 30);
    let claims = h.verify(reply.json()["access_token"].as_str().expect("token"), "other-api").await;
    assert_eq!(claims["aud"], "other-api");
    assert_eq!(claims["sub"], "client:short");
}

#[tokio::test]
async fn jti_is_unique_per_token() {
    let h = Harness::new(Algorithm::ES256);
    let mut jtis = std::collections::HashSet::new();
    for _ in 0..5 {
        let reply = h.token("grant_type=client_credentials", Some(("svc", "svc-secret"))).await;
        let claims = h.verify(reply.json()["access_token"].as_str().expect("token"), AUDIENCE).await;
        assert!(jtis.insert(claims["jti"].as_str().expect("jti").to_owned()));
    }
}

#[tokio::test]
async fn unknown_client_and_wrong_secret_get_the_same_answer() {
    let h = Harness::new(Algorithm::ES256);
    let wrong = h.token("grant_type=client_credentials", Some(("svc", "nope"))).await;
    let unknown = h.token("grant_type=client_credentials", Some(("ghost", "nope"))).await;
    let missing = h.token("grant_type=client_credentials", None).await;
    let form_unknown = h.token("grant_type=client_credentials&client_id=ghost&client_secret=x", None).await;
    for reply in [&wrong, &unknown, &missing, &form_unknown] {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.error(), "invalid_client");
        assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Basic realm=\"sigil-issuer\"");
        assert_eq!(reply.body, wrong.body, "identical bodies");
    }
    // An unknown client runs Argon2 too (against a dummy hash), like a wrong secret.
    let before = h.metric("sigil_issuer_argon2_verifications_total");
    h.token("grant_type=client_credentials", Some(("ghost2", "nope"))).await;
    assert_eq!(h.metric("sigil_issuer_argon2_verifications_total"), before + 1.0);
}

#[tokio::test]
async fn every_malformed_request_is_an_rfc_6749_error() {
    let h = Harness::new(Algorithm::ES256);
    let svc = Some(("svc", "svc-secret"));
    // (form, Basic credentials, expected status, expected error)
    type Case<'a> = (&'a str, Option<(&'a str, &'a str)>, StatusCode, &'a str);
    let cases: &[Case] = &[
        ("", svc, StatusCode::BAD_REQUEST, "invalid_request"),
        ("grant_type=", svc, StatusCode::BAD_REQUEST, "invalid_request"),
        ("grant_type=authorization_code", svc, StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        ("grant_type=implicit", svc, StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        (
            "grant_type=client_credentials&grant_type=client_credentials",
            svc,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        ("grant_type=client_credentials&client_secret=svc-secret", svc, StatusCode::BAD_REQUEST, "invalid_request"),
        ("grant_type=client_credentials&client_id=other", svc, StatusCode::BAD_REQUEST, "invalid_request"),
        ("grant_type=client_credentials&client_id=svc", None, StatusCode::UNAUTHORIZED, "invalid_client"),
        ("grant_type=client_credentials&scope=admin", svc, StatusCode::BAD_REQUEST, "invalid_scope"),
        (
            "grant_type=client_credentials&scope=orders.read%20%20orders.write",
            svc,
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        ("grant_type=password&password=x", Some(("app", "app-secret")), StatusCode::BAD_REQUEST, "invalid_request"),
        ("grant_type=password&username=alice", Some(("app", "app-secret")), StatusCode::BAD_REQUEST, "invalid_request"),
        (
            "grant_type=password&username=alice&password=alice-password",
            svc,
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
        ),
        (
            "grant_type=password&username=alice&password=wrong",
            Some(("app", "app-secret")),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            "grant_type=password&username=bob&password=wrong",
            Some(("app", "app-secret")),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
    ];
    for (form, auth, status, error) in cases {
        let reply = h.token(form, *auth).await;
        assert_eq!((reply.status, reply.error().as_str()), (*status, *error), "{form}");
        assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store", "{form}");
        assert!(reply.json()["error_description"].is_string(), "{form}");
    }

    // Not a form.
    let request = Request::post("/token")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, basic("svc", "svc-secret"))
        .body(Body::from(r#"{"grant_type":"client_credentials"}"#))
        .expect("request");
    let reply = h.send(request).await;
    assert_eq!((reply.status, reply.error().as_str()), (StatusCode::BAD_REQUEST, "invalid_request"));

    // Too big.
    let huge = format!("grant_type=client_credentials&pad={}", "x".repeat(routes::MAX_BODY_BYTES));
    let reply = h.token(&huge, svc).await;
    assert_eq!((reply.status, reply.error().as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request"));

    // Garbage Basic header.
    let request = Request::post("/token")
        .header(header::CONTENT_TYPE, FORM)
        .header(header::AUTHORIZATION, "Basic not-base64!")
        .body(Body::from("grant_type=client_credentials"))
        .expect("request");
    assert_eq!(h.send(request).await.status, StatusCode::UNAUTHORIZED);

    // Wrong method.
    assert_eq!(h.get("/token", &[]).await.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(h.metrics().contains(r#"sigil_issuer_token_failures_total{reason="invalid_scope"} 2"#));
}

#[tokio::test]
async fn scopes_are_a_subset_of_what_is_allowed() {
    let h = Harness::new(Algorithm::ES256);
    let svc = Some(("svc", "svc-secret"));
    let reply = h.token("grant_type=client_credentials&scope=orders.read", svc).await;
    assert_eq!(reply.json()["scope"], "orders.read");
    let claims = h.verify(reply.json()["access_token"].as_str().expect("token"), AUDIENCE).await;
    assert_eq!(claims["scope"], "orders.read");
    let reply = h.token("grant_type=client_credentials&scope=orders.write+orders.read", svc).await;
    assert_eq!(reply.json()["scope"], "orders.read orders.write");
    let reply = h.token("grant_type=client_credentials&scope=orders.read+orders.delete", svc).await;
    assert_eq!(reply.error(), "invalid_scope");
    assert!(reply.json()["error_description"].as_str().expect("description").contains("orders.delete"));
}

#[tokio::test]
async fn password_grant_gives_the_user_the_scopes_both_may_have() {
    let h = Harness::new(Algorithm::RS256);
    let app = Some(("app", "app-secret"));
    let reply = h.token("grant_type=password&username=alice&password=alice-password", app).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    // alice has orders.write too, but the app client may not ask for it.
    assert_eq!(reply.json()["scope"], "orders.read profile");
    let claims = h.verify(reply.json()["access_token"].as_str().expect("token"), AUDIENCE).await;
    assert_eq!(claims["sub"], "user:alice");
    assert_eq!(claims["client_id"], "app");
    let reply = h.token("grant_type=password&username=alice&password=alice-password&scope=orders.write", app).await;
    assert_eq!(reply.error(), "invalid_scope");
    // A wrong client secret fails before the user is looked at.
    let reply = h.token("grant_type=password&username=alice&password=alice-password", Some(("app", "x"))).await;
    assert_eq!(reply.error(), "invalid_client");
    assert!(h.metrics().contains(r#"sigil_issuer_tokens_issued_total{client="app",grant="password"} 1"#));
}

#[tokio::test]
async fn a_cached_success_skips_argon2_and_a_changed_secret_misses_it() {
    let h = Harness::new(Algorithm::ES256);
    let argon2 = || h.metric("sigil_issuer_argon2_verifications_total");
    let svc = Some(("svc", "svc-secret"));
    assert_eq!(h.token("grant_type=client_credentials", svc).await.status, StatusCode::OK);
    assert_eq!(argon2(), 1.0);
    for _ in 0..3 {
        assert_eq!(h.token("grant_type=client_credentials", svc).await.status, StatusCode::OK);
    }
    assert_eq!(argon2(), 1.0, "answered from the cache");
    assert_eq!(h.metric("sigil_issuer_auth_cache_hits_total"), 3.0);

    // Failures are never cached: each one runs Argon2.
    h.token("grant_type=client_credentials", Some(("svc", "wrong"))).await;
    h.token("grant_type=client_credentials", Some(("svc", "wrong"))).await;
    assert_eq!(argon2(), 3.0);

    // An unchanged clients file keeps the cache, and so does an edit of other
    // entries; a changed secret hash no longer matches the cached success.
    h.state.reload_clients().expect("reload");
    assert_eq!(h.token("grant_type=client_credentials", svc).await.status, StatusCode::OK);
    assert_eq!(argon2(), 3.0);
    let edited = support::default_clients().replace("ttl: 30s", "ttl: 40s");
    support::write_clients(&h.fixture.clients_file(), &edited);
    h.state.reload_clients().expect("reload");
    assert_eq!(h.token("grant_type=client_credentials", svc).await.status, StatusCode::OK);
    assert_eq!(argon2(), 3.0, "an edit of another client keeps svc proven");
    let rotated = support::default_clients().replace(&support::cheap_hash("svc-secret"), &support::cheap_hash("new"));
    support::write_clients(&h.fixture.clients_file(), &rotated);
    h.state.reload_clients().expect("reload");
    let reply = h.token("grant_type=client_credentials", svc).await;
    assert_eq!(reply.error(), "invalid_client", "the old secret no longer works, cache or not");
    assert_eq!(argon2(), 4.0);
    assert_eq!(h.token("grant_type=client_credentials", Some(("svc", "new"))).await.status, StatusCode::OK);
}

const CC: &str = "grant_type=client_credentials";

/// Finding 1: knowing a client id must not be enough to lock that client out.
/// An attacker hammers `svc` from one address; the real client, never seen
/// before on this replica (no cached success), keeps getting tokens from its own.
#[tokio::test]
async fn lockout_by_anyone_an_attacker_on_one_address_does_not_stop_the_client_on_another() {
    let h = Harness::with(Fixture::new(Algorithm::ES256), |c| c.auth_failure_limit = 3);
    for _ in 0..3 {
        assert_eq!(h.token_from(CC, Some(("svc", "guess")), "198.51.100.1").await.error(), "invalid_client");
    }
    let argon2_before = h.metric("sigil_issuer_argon2_verifications_total");
    for _ in 0..20 {
        let limited = h.token_from(CC, Some(("svc", "guess")), "198.51.100.1").await;
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = limited.headers[header::RETRY_AFTER].to_str().expect("ascii").parse().expect("seconds");
        assert_eq!(retry, 1, "the first back-off is one second");
        // Even the right secret waits out the back-off from the failing pair.
        let right = h.token_from(CC, Some(("svc", "svc-secret")), "198.51.100.1").await;
        assert_eq!(right.status, StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(h.metric("sigil_issuer_argon2_verifications_total"), argon2_before, "no Argon2 work when limited");
    assert_eq!(h.metric("sigil_issuer_auth_cache_hits_total"), 0.0, "the real client is not cached yet");
    for _ in 0..3 {
        assert_eq!(h.token_from(CC, Some(("svc", "svc-secret")), "192.0.2.10").await.status, StatusCode::OK);
    }
    // The same holds for users: alice is guessed at from one address and logs in from another.
    let app = Some(("app", "app-secret"));
    for _ in 0..3 {
        let r = h.token_from("grant_type=password&username=alice&password=x", app, "198.51.100.1").await;
        assert_eq!(r.error(), "invalid_grant");
    }
    let r = h.token_from("grant_type=password&username=alice&password=x", app, "198.51.100.1").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = h.token_from("grant_type=password&username=alice&password=alice-password", app, "192.0.2.21").await;
    assert_eq!(r.status, StatusCode::OK);
}

/// Finding 1, behind one proxy peer (an ingress without --trusted-proxies, a
/// mesh proxy, NodePort SNAT): everyone arrives from 192.0.2.1. An address
/// alone is never a key, so other clients are untouched; the attacked client
/// keeps working once it has authenticated on this replica; and with
/// --trusted-proxies each forwarded address is its own source.
#[tokio::test]
async fn lockout_by_anyone_everyone_behind_one_proxy_peer() {
    let h = Harness::with(Fixture::new(Algorithm::ES256), |c| c.auth_failure_limit = 2);
    let peer = "192.0.2.1";
    assert_eq!(h.token_from(CC, Some(("svc", "svc-secret")), peer).await.status, StatusCode::OK);
    for _ in 0..2 {
        assert_eq!(h.token_from(CC, Some(("svc", "guess")), peer).await.error(), "invalid_client");
    }
    assert_eq!(h.token_from(CC, Some(("svc", "guess")), peer).await.status, StatusCode::TOO_MANY_REQUESTS);
    // The real svc, through the same peer, is answered from its proven secret.
    for _ in 0..5 {
        assert_eq!(h.token_from(CC, Some(("svc", "svc-secret")), peer).await.status, StatusCode::OK);
    }
    // Guessing at many ids from the peer does not lock out a client it never targeted.
    for id in ["a", "b", "c", "d"] {
        assert_eq!(h.token_from(CC, Some((id, "x")), peer).await.error(), "invalid_client");
    }
    assert_eq!(h.token_from(CC, Some(("short", "short-secret")), peer).await.status, StatusCode::OK);

    // With the proxy trusted, forwarded addresses are the sources: the attacker
    // at .7 backs off, the real client at .8 (cold cache) does not; the
    // attacker's forged left-most 6.6.6.6 is ignored.
    let h = Harness::with(Fixture::new(Algorithm::ES256), |c| {
        c.auth_failure_limit = 2;
        c.trusted_proxies = vec!["192.0.2.0/24".parse().expect("cidr")];
    });
    for _ in 0..2 {
        assert_eq!(h.token_via_proxy(CC, Some(("svc", "x")), "198.51.100.7").await.error(), "invalid_client");
    }
    let limited = h.token_via_proxy(CC, Some(("svc", "x")), "198.51.100.7").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let other = h.token_via_proxy(CC, Some(("svc", "svc-secret")), "198.51.100.8").await;
    assert_eq!(other.status, StatusCode::OK);
}

/// Finding 1, a full table: new pairs are still counted (the oldest entry is
/// evicted), so filling the table does not switch the limiter off.
#[tokio::test]
async fn lockout_by_anyone_a_full_table_still_counts_new_pairs() {
    let h = Harness::with(Fixture::new(Algorithm::ES256), |c| {
        c.auth_failure_limit = 2;
        c.auth_failure_table_size = 4;
    });
    for i in 0..10 {
        let r = h.token_from(CC, Some((&format!("junk-{i}"), "x")), &format!("203.0.113.{i}")).await;
        assert_eq!(r.error(), "invalid_client");
        assert!(h.state.auth.backoff_entries() <= 4);
    }
    assert_eq!(h.state.auth.backoff_entries(), 4, "the table is full");
    for _ in 0..2 {
        assert_eq!(h.token_from(CC, Some(("svc", "x")), "198.51.100.9").await.error(), "invalid_client");
    }
    let limited = h.token_from(CC, Some(("svc", "x")), "198.51.100.9").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "a new pair is counted in a full table");
    assert_eq!(h.state.auth.backoff_entries(), 4);
    assert_eq!(h.token_from(CC, Some(("svc", "svc-secret")), "192.0.2.10").await.status, StatusCode::OK);
}

/// Finding 1, guesses spread over many addresses: the per-id ceiling stops
/// them once they exceed the quota, a client whose secret is proven is still
/// answered, and correct secrets never use up the quota.
#[tokio::test]
async fn lockout_by_anyone_the_per_client_ceiling_stops_guesses_from_many_addresses() {
    let h = Harness::with(Fixture::new(Algorithm::ES256), |c| c.auth_failures_per_minute = 3);
    assert_eq!(h.token_from(CC, Some(("svc", "svc-secret")), "192.0.2.10").await.status, StatusCode::OK);
    for i in 1..=4 {
        let r = h.token_from(CC, Some(("svc", "guess")), &format!("198.51.100.{i}")).await;
        assert_eq!(r.error(), "invalid_client", "guess {i}");
    }
    let argon2_before = h.metric("sigil_issuer_argon2_verifications_total");
    let r = h.token_from(CC, Some(("svc", "guess")), "198.51.100.5").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    assert_eq!(h.metric("sigil_issuer_argon2_verifications_total"), argon2_before);
    assert_eq!(h.token_from(CC, Some(("svc", "svc-secret")), "192.0.2.10").await.status, StatusCode::OK);
    assert_eq!(h.token_from(CC, Some(("short", "short-secret")), "198.51.100.6").await.status, StatusCode::OK);
    assert!(h.metrics().contains(r#"sigil_issuer_token_failures_total{reason="rate_limited"} 1"#));

    // Correct secrets that each run Argon2 (no cache: a cold replica's burst)
    // never use up the quota.
    let cold = Harness::with(Fixture::new(Algorithm::ES256), |c| {
        c.auth_failures_per_minute = 3;
        c.auth_cache_ttl = std::time::Duration::from_nanos(1);
    });
    for i in 1..=8 {
        let r = cold.token_from(CC, Some(("svc", "svc-secret")), &format!("192.0.2.{i}")).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}");
    }
    assert_eq!(cold.metric("sigil_issuer_argon2_verifications_total"), 8.0, "every request was a cold check");
}

/// Finding 3: a client and a user of the same name get different subjects.
#[tokio::test]
async fn subjects_of_clients_and_users_cannot_collide() {
    let fixture = Fixture::new(Algorithm::ES256);
    let clients = format!(
        "clients:\n  - id: billing\n    secretHash: \"{c}\"\n    grantTypes: [client_credentials, password]\nusers:\n  - username: billing\n    passwordHash: \"{u}\"\n",
        c = support::cheap_hash("client-secret"),
        u = support::cheap_hash("user-password"),
    );
    support::write_clients(&fixture.clients_file(), &clients);
    let h = Harness::with(fixture, |_| {});
    let billing = Some(("billing", "client-secret"));
    let as_client = h.token(CC, billing).await;
    let as_user = h.token("grant_type=password&username=billing&password=user-password", billing).await;
    let sub = |r: &Reply| r.json()["access_token"].as_str().map(str::to_owned).expect("token");
    let client_claims = h.verify(&sub(&as_client), AUDIENCE).await;
    let user_claims = h.verify(&sub(&as_user), AUDIENCE).await;
    assert_eq!(client_claims["sub"], "client:billing");
    assert_eq!(user_claims["sub"], "user:billing");
    assert_eq!(client_claims["client_id"], user_claims["client_id"]);
}

/// Finding 4: a hash below OWASP's minimum on reload is refused with file,
/// entry and reason, and the previous clients keep working.
#[tokio::test]
async fn argon2_bounds_a_weak_hash_on_reload_keeps_the_previous_clients() {
    let h = Harness::new(Algorithm::ES256);
    let weak = {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let params = argon2::Params::new(1024, 1, 1, None).expect("params");
        let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(b"fixed-test-salt!").expect("salt");
        argon2.hash_password(b"svc-secret", &salt).expect("hash").to_string()
    };
    let edited = support::default_clients().replace(&support::cheap_hash("svc-secret"), &weak);
    support::write_clients(&h.fixture.clients_file(), &edited);
    let err = h.state.reload_clients().expect_err("weak hash").to_string();
    let file = h.fixture.clients_file().display().to_string();
    assert!(err.contains(&file) && err.contains(r#"clients[0] ("svc"): secretHash"#), "{err}");
    assert!(err.contains("weaker than OWASP"), "{err}");
    assert!(!err.contains(&weak), "the hash is not echoed: {err}");
    assert_eq!(h.token(CC, Some(("svc", "svc-secret"))).await.status, StatusCode::OK);
    assert!(
        h.metrics().contains(r#"sigil_issuer_reloads_total{source="clients",result="clients"} 1"#),
        "{}",
        h.metrics()
    );
}

/// Finding 5: a first Secret version with only `next.pem` leaves the issuer
/// running and not ready, instead of exiting; it becomes ready when the
/// active key arrives.
#[tokio::test]
async fn not_ready_not_crashing_when_the_first_secret_holds_only_next_pem() {
    let fixture = Fixture::new(Algorithm::ES256);
    support::write_next_only(&fixture.key_dir(), &fixture.key);
    let h = Harness::with(fixture, |_| {});
    assert!(!h.state.readiness.is_ready());
    assert_eq!(h.token(CC, Some(("svc", "svc-secret"))).await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.get("/.well-known/jwks.json", &[]).await.status, StatusCode::OK, "the JWKS is served meanwhile");
    // Still incomplete on a re-read: an error to report, still not ready.
    let err = h.state.reload_keys().expect_err("still incomplete").to_string();
    assert!(err.contains("private.pem is missing"), "{err}");
    assert!(!h.state.readiness.is_ready());
    support::write_secret(&h.fixture.key_dir(), &h.fixture.key, None);
    h.state.reload_keys().expect("reload");
    assert!(h.state.readiness.is_ready());
    assert_eq!(h.token(CC, Some(("svc", "svc-secret"))).await.status, StatusCode::OK);
}

/// The Secret's `max-token-lifetime` caps every token, follows reloads, and a
/// malformed value keeps the previous one.
#[tokio::test]
async fn max_token_lifetime_from_the_secret_caps_every_token() {
    let fixture = Fixture::new(Algorithm::ES256);
    support::write_secret_with(&fixture.key_dir(), &fixture.key, &[("max-token-lifetime", b"20s")]);
    let h = Harness::with(fixture, |_| {});
    let expires = |r: &Reply| r.json()["expires_in"].as_u64().expect("expires_in");
    let exp_minus_iat = |claims: &Value| claims["exp"].as_u64().unwrap_or(0) - claims["iat"].as_u64().unwrap_or(0);
    let svc = h.token(CC, Some(("svc", "svc-secret"))).await;
    assert_eq!(expires(&svc), 20, "--token-ttl 15m is capped");
    let claims = h.verify(svc.json()["access_token"].as_str().expect("token"), AUDIENCE).await;
    assert_eq!(exp_minus_iat(&claims), 20);
    assert_eq!(expires(&h.token(CC, Some(("short", "short-secret"))).await), 20, "the client's 30s is capped");

    support::write_secret_with(&h.fixture.key_dir(), &h.fixture.key, &[("max-token-lifetime", b"10m")]);
    h.state.reload_keys().expect("reload");
    assert_eq!(expires(&h.token(CC, Some(("svc", "svc-secret"))).await), 600);
    assert_eq!(expires(&h.token(CC, Some(("short", "short-secret"))).await), 30, "a shorter ttl stays");

    for bad in [&b"soon"[..], b"0s", b"-1h"] {
        support::write_secret_with(&h.fixture.key_dir(), &h.fixture.key, &[("max-token-lifetime", bad)]);
        let err = h.state.reload_keys().expect_err("malformed").to_string();
        assert!(err.contains("max-token-lifetime"), "{err}");
        assert_eq!(expires(&h.token(CC, Some(("svc", "svc-secret"))).await), 600, "the previous cap stays");
    }

    support::write_secret(&h.fixture.key_dir(), &h.fixture.key, None);
    h.state.reload_keys().expect("reload");
    assert_eq!(expires(&h.token(CC, Some(("svc", "svc-secret"))).await), 900, "absent: no extra cap");
}

#[tokio::test]
async fn jwks_is_the_file_with_etag_and_max_age() {
    let h = Harness::new(Algorithm::ES256);
    let reply = h.get("/.well-known/jwks.json", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, std::fs::read(h.fixture.jwks_file()).expect("file"));
    assert_eq!(reply.headers[header::CONTENT_TYPE], "application/jwk-set+json");
    assert_eq!(reply.headers[header::CACHE_CONTROL], "public, max-age=300");
    let etag = reply.headers[header::ETAG].to_str().expect("etag").to_owned();
    let not_modified = h.get("/.well-known/jwks.json", &[("if-none-match", &etag)]).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.headers[header::ETAG], etag.as_str());
    let other = h.get("/.well-known/jwks.json", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(other.status, StatusCode::OK);

    // A new JWKS gets a new ETag, and the old one no longer matches.
    let next = support::key(Algorithm::ES256);
    support::write_jwks(&h.fixture.jwks_dir(), &[&h.fixture.key, &next]);
    h.state.reload_keys().expect("reload");
    let reply = h.get("/.well-known/jwks.json", &[("if-none-match", &etag)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_ne!(reply.headers[header::ETAG], etag.as_str());
    assert_eq!(JwkSet::parse(&reply.body).expect("parse").keys.len(), 2);
}

#[tokio::test]
async fn discovery_documents_describe_the_issuer() {
    let h = Harness::new(Algorithm::EdDSA);
    for path in ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"] {
        let reply = h.get(path, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.headers[header::CONTENT_TYPE], "application/json");
        let doc = reply.json();
        assert_eq!(doc["issuer"], ISSUER);
        assert_eq!(doc["jwks_uri"], format!("{ISSUER}/.well-known/jwks.json"));
        assert_eq!(doc["token_endpoint"], format!("{ISSUER}/token"));
        assert_eq!(doc["grant_types_supported"], serde_json::json!(["client_credentials", "password"]));
        assert_eq!(
            doc["token_endpoint_auth_methods_supported"],
            serde_json::json!(["client_secret_basic", "client_secret_post"])
        );
        assert_eq!(doc["id_token_signing_alg_values_supported"], serde_json::json!(["EdDSA"]));
    }
    assert_eq!(h.get("/.well-known/nothing", &[]).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_unpublished_key_is_never_used() {
    let h = Harness::new(Algorithm::ES256);
    let old = h.fixture.key.kid().to_owned();
    let svc = Some(("svc", "svc-secret"));
    let kid_of = |reply: &Reply| {
        let token = reply.json()["access_token"].as_str().expect("token").to_owned();
        jsonwebtoken::decode_header(&token).expect("header").kid.expect("kid")
    };

    // The Secret moves to a key the JWKS does not publish yet: keep the old one.
    let new = support::key(Algorithm::ES256);
    support::write_secret(&h.fixture.key_dir(), &new, None);
    h.state.reload_keys().expect("reload");
    let reply = h.token("grant_type=client_credentials", svc).await;
    assert_eq!(kid_of(&reply), old);
    h.verify(reply.json()["access_token"].as_str().expect("token"), AUDIENCE).await;
    assert!(h.metrics().contains("sigil_issuer_signing_current_key 0"));
    assert!(h.metrics().contains(&format!(r#"sigil_issuer_active_kid{{kid="{old}",alg="ES256"}} 1"#)));
    assert!(h.state.readiness.is_ready());

    // Published: switch.
    support::write_jwks(&h.fixture.jwks_dir(), &[&h.fixture.key, &new]);
    h.state.reload_keys().expect("reload");
    let reply = h.token("grant_type=client_credentials", svc).await;
    assert_eq!(kid_of(&reply), new.kid());
    assert!(h.metrics().contains("sigil_issuer_signing_current_key 1"));
    assert!(!h.metrics().contains(&format!(r#"kid="{old}""#)), "the old kid is no longer reported active");

    // The JWKS drops every key we have: refuse to sign rather than sign unverifiably.
    support::write_jwks(&h.fixture.jwks_dir(), &[&support::key(Algorithm::ES256)]);
    h.state.reload_keys().expect("reload");
    let reply = h.token("grant_type=client_credentials", svc).await;
    assert_eq!((reply.status, reply.error().as_str()), (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"));
    assert!(!h.state.readiness.is_ready());
}

#[tokio::test]
async fn starting_with_an_unpublished_key_is_not_ready_until_it_is_published() {
    let fixture = Fixture::new(Algorithm::ES256);
    support::write_jwks(&fixture.jwks_dir(), &[&support::key(Algorithm::ES256)]);
    let h = Harness::with(fixture, |_| {});
    assert!(!h.state.readiness.is_ready());
    let reply = h.token("grant_type=client_credentials", Some(("svc", "svc-secret"))).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    support::write_jwks(&h.fixture.jwks_dir(), &[&h.fixture.key]);
    h.state.reload_keys().expect("reload");
    assert!(h.state.readiness.is_ready());
    let reply = h.token("grant_type=client_credentials", Some(("svc", "svc-secret"))).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn bad_key_material_on_reload_keeps_the_current_key() {
    let h = Harness::new(Algorithm::ES256);
    let kid = h.fixture.key.kid().to_owned();
    sigil_runtime::volume::write_atomically(
        &h.fixture.key_dir(),
        &[
            ("private.pem", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            ("kid", kid.as_bytes()),
            ("alg", b"ES256"),
        ],
    )
    .expect("write");
    let err = h.state.reload_keys().expect_err("bad key").to_string();
    assert!(err.contains("private.pem"), "{err}");
    assert!(h.metrics().contains(r#"sigil_issuer_reloads_total{source="keys",result="key_material"} 1"#));
    let reply = h.token("grant_type=client_credentials", Some(("svc", "svc-secret"))).await;
    assert_eq!(reply.status, StatusCode::OK);

    // While the key directory stays broken, a JWKS change still applies: a
    // withdrawn key is not used any more.
    support::write_jwks(&h.fixture.jwks_dir(), &[&support::key(Algorithm::ES256)]);
    h.state.reload_keys().expect_err("key directory still broken");
    let reply = h.token("grant_type=client_credentials", Some(("svc", "svc-secret"))).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    // Repaired: back in service.
    support::write_jwks(&h.fixture.jwks_dir(), &[&h.fixture.key]);
    support::write_secret(&h.fixture.key_dir(), &h.fixture.key, None);
    h.state.reload_keys().expect("repaired");
    assert!(h.state.readiness.is_ready());

    // A broken clients file is refused the same way.
    support::write_clients(&h.fixture.clients_file(), "clients:\n- id: x\n");
    let err = h.state.reload_clients().expect_err("bad clients").to_string();
    assert!(err.contains("clients.yaml") && err.contains("secretHash"), "{err}");
    let reply = h.token("grant_type=client_credentials", Some(("svc", "svc-secret"))).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[test]
fn bad_material_at_startup_names_the_file_and_the_problem() {
    let f = Fixture::new(Algorithm::ES256);
    let load = |f: &Fixture| server::prepare(&f.config()).map(|_| ()).expect_err("must fail").to_string();

    std::fs::remove_file(f.key_dir().join("..data/alg")).expect("rm");
    let err = load(&f);
    assert!(err.contains("keys") && err.contains("alg is missing"), "{err}");

    sigil_runtime::volume::write_atomically(
        &f.key_dir(),
        &[("private.pem", b"junk"), ("kid", b"x"), ("alg", b"ES256")],
    )
    .expect("write");
    let err = load(&f);
    assert!(err.contains("private.pem") && err.contains("PEM"), "{err}");

    let other = support::key(Algorithm::ES256);
    support::write_secret(&f.key_dir(), &f.key, None);
    sigil_runtime::volume::write_atomically(
        &f.key_dir(),
        &[("private.pem", f.key.to_pkcs8_pem().as_bytes()), ("kid", other.kid().as_bytes()), ("alg", b"ES256")],
    )
    .expect("write");
    assert!(load(&f).contains("kid says"), "{}", load(&f));

    support::write_secret(&f.key_dir(), &f.key, None);
    sigil_runtime::volume::write_atomically(&f.jwks_dir(), &[("jwks.json", b"{}")]).expect("write");
    let err = load(&f);
    assert!(err.contains("jwks.json") && err.contains("keys"), "{err}");

    let f = Fixture::new(Algorithm::ES256);
    std::fs::remove_file(f.clients_file()).expect("rm");
    let err = load(&f);
    assert!(err.contains("clients.yaml"), "{err}");
}
