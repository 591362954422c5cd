//! Workload identity through the router (no socket): a ServiceAccount token,
//! signed by a stand-in for the API server's service-account key, exchanged
//! as an RFC 7523 client assertion and as an RFC 8693 subject token; every
//! refusal with its RFC 6749 / RFC 8693 code; the discovery metadata.

mod support;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sigil_api::{Algorithm, JwkSet, PrivateKey};
use sigil_issuer::config::WorkloadConfig;
use sigil_issuer::state::AppState;
use sigil_issuer::workload::{WorkloadClient, WorkloadClients};
use sigil_issuer::{routes, server};
use support::{Fixture, ISSUER};
use tower::ServiceExt;

const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const ASSERTION_TYPE: &str = "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer";
const EXCHANGE: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange";
const JWT_TYPE: &str = "urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt";

struct Harness {
    _fixture: Fixture,
    state: Arc<AppState>,
    /// The API server's service-account signing key.
    api_server: PrivateKey,
}

struct Reply {
    status: StatusCode,
    body: Value,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

impl Harness {
    /// The issuer with workload identity on (`on`), the API server's JWKS
    /// loaded (`jwks`), and SigilClients admitting shop/orders and shop/web.
    fn new(on: bool, jwks: bool) -> Harness {
        let fixture = Fixture::new(Algorithm::ES256);
        let mut config = fixture.config();
        if on {
            config.workload = Some(WorkloadConfig {
                issuer: SA_ISSUER.to_owned(),
                audience: ISSUER.to_owned(),
                jwks_path: "/openid/v1/jwks".to_owned(),
                review_ttl: std::time::Duration::from_secs(60),
            });
        }
        let (state, _registry) = server::prepare(&config).expect("issuer loads");
        let api_server = PrivateKey::generate(Algorithm::RS256, None).expect("key");
        if let Some(workload) = &state.workload {
            if jwks {
                let set = JwkSet { keys: vec![api_server.public_jwk().clone()] };
                workload.set_jwks(set.to_json().as_bytes()).expect("JWKS loads");
            }
            let client = |name: &str, spec: Value| WorkloadClient {
                namespace: "shop".into(),
                name: name.into(),
                spec: serde_json::from_value::<sigil_api::SigilClientSpec>(spec)
                    .expect("spec")
                    .validate()
                    .expect("valid"),
            };
            workload.set_clients(WorkloadClients::new([
                client(
                    "orders",
                    json!({"serviceAccounts": ["orders"], "scopes": ["orders.read", "orders.write"],
                           "audiences": ["orders-api", "billing-api"], "tokenTtl": "2m"}),
                ),
                client("web", json!({"serviceAccounts": ["web"], "audiences": ["web-api"]})),
            ]));
        }
        Harness { _fixture: fixture, state, api_server }
    }

    /// A projected ServiceAccount token of `sa` in `ns`, with `edit` applied.
    fn sa_token(&self, ns: &str, sa: &str, edit: impl FnOnce(&mut Value)) -> String {
        let now = now();
        let mut claims = json!({
            "aud": [ISSUER], "exp": now + 600, "iat": now, "nbf": now, "iss": SA_ISSUER,
            "sub": format!("system:serviceaccount:{ns}:{sa}"),
            "kubernetes.io": {"namespace": ns, "pod": {"name": "p-1", "uid": "pu"},
                              "serviceaccount": {"name": sa, "uid": "su"}},
        });
        edit(&mut claims);
        let b64 = sigil_api::jwk::b64;
        let header = json!({"alg": "RS256", "kid": self.api_server.kid()});
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        format!("{input}.{}", b64(&self.api_server.sign(input.as_bytes()).expect("sign")))
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = routes::app(self.state.clone()).oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = response.into_body().collect().await.expect("body").to_bytes();
        Reply { status, body: serde_json::from_slice(&body).unwrap_or(Value::Null) }
    }

    async fn token(&self, form: &str) -> Reply {
        let request = Request::post("/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.to_owned()))
            .expect("request");
        self.send(request).await
    }

    async fn assertion(&self, token: &str, extra: &str) -> Reply {
        self.token(&format!(
            "grant_type=client_credentials&client_assertion_type={ASSERTION_TYPE}&client_assertion={token}{extra}"
        ))
        .await
    }

    async fn exchange(&self, token: &str, extra: &str) -> Reply {
        self.token(&format!("grant_type={EXCHANGE}&subject_token={token}&subject_token_type={JWT_TYPE}{extra}")).await
    }

    /// The claims of an issued token, checked against the issuer's own JWKS.
    async fn claims(&self, reply: &Reply, audience: &str) -> Value {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let jwks = self.send(Request::get("/.well-known/jwks.json").body(Body::empty()).expect("request")).await;
        let keys = JwkSet::parse(jwks.body.to_string().as_bytes()).expect("JWKS").keys;
        let token = reply.body["access_token"].as_str().expect("access_token");
        let kid = jsonwebtoken::decode_header(token).expect("header").kid.expect("kid");
        let key = keys.iter().find(|k| k.kid == kid).expect("published kid");
        let mut validation = jsonwebtoken::Validation::new(key.alg.to_jwt());
        validation.set_audience(&[audience]);
        validation.set_issuer(&[ISSUER]);
        jsonwebtoken::decode::<Value>(token, &key.key, &validation).expect("token verifies").claims
    }
}

#[tokio::test]
async fn a_client_assertion_gets_a_token_for_the_service_account() {
    let h = Harness::new(true, true);
    let reply = h.assertion(&h.sa_token("shop", "orders", |_| {}), "").await;
    let claims = h.claims(&reply, "orders-api").await;
    assert_eq!(claims["sub"], "system:serviceaccount:shop:orders");
    assert_eq!(claims["client_id"], "system:serviceaccount:shop:orders");
    assert_eq!(claims["scope"], "orders.read orders.write");
    assert_eq!(
        claims["kubernetes.io"],
        json!({"namespace": "shop", "serviceaccount": {"name": "orders"}, "pod": {"name": "p-1"}})
    );
    assert_eq!(reply.body["expires_in"], 120, "the SigilClient's tokenTtl");
    assert!(reply.body.get("issued_token_type").is_none());

    // client_id may be sent, and must then name the ServiceAccount.
    let token = h.sa_token("shop", "orders", |_| {});
    let named = h.assertion(&token, "&client_id=system%3Aserviceaccount%3Ashop%3Aorders&scope=orders.read").await;
    assert_eq!(h.claims(&named, "orders-api").await["scope"], "orders.read");
    let other = h.assertion(&token, "&client_id=system%3Aserviceaccount%3Ashop%3Aweb").await;
    assert_eq!((other.status, other.body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
}

#[tokio::test]
async fn a_token_exchange_gets_a_token_for_the_requested_audience() {
    let h = Harness::new(true, true);
    let reply = h.exchange(&h.sa_token("shop", "orders", |_| {}), "&audience=billing-api&scope=orders.write").await;
    let claims = h.claims(&reply, "billing-api").await;
    assert_eq!(claims["sub"], "system:serviceaccount:shop:orders");
    assert_eq!(claims["scope"], "orders.write");
    assert_eq!(reply.body["issued_token_type"], "urn:ietf:params:oauth:token-type:access_token");
    assert_eq!(reply.body["token_type"], "Bearer");
    // A SigilClient without scopes or tokenTtl: no scope claim, the issuer's TTL.
    let web = h.exchange(&h.sa_token("shop", "web", |_| {}), "").await;
    let claims = h.claims(&web, "web-api").await;
    assert!(claims.get("scope").is_none(), "{claims}");
    assert_eq!(web.body["expires_in"], 900);
}

/// Each refusal, as a client assertion and as a subject token.
#[tokio::test]
async fn every_refusal_has_its_rfc_error_code() {
    let h = Harness::new(true, true);
    let good = |edit: fn(&mut Value)| h.sa_token("shop", "orders", edit);
    let cases: Vec<(&str, String, &str, (&str, &str))> = vec![
        (
            "wrong audience",
            good(|c| c["aud"] = json!(["https://kubernetes.default.svc"])),
            "",
            ("invalid_client", "invalid_request"),
        ),
        (
            "wrong issuer",
            good(|c| c["iss"] = json!("https://other.example")),
            "",
            ("invalid_client", "invalid_request"),
        ),
        ("expired", good(|c| c["exp"] = json!(now() - 120)), "", ("invalid_client", "invalid_request")),
        ("garbage", "x.y.z".to_owned(), "", ("invalid_client", "invalid_request")),
        ("unknown ServiceAccount", h.sa_token("payments", "orders", |_| {}), "", ("invalid_client", "invalid_grant")),
        ("not admitted", h.sa_token("shop", "admin", |_| {}), "", ("invalid_client", "invalid_grant")),
        ("scope not allowed", good(|_| {}), "&scope=orders.delete", ("invalid_scope", "invalid_scope")),
        ("audience not allowed", good(|_| {}), "&audience=web-api", ("invalid_request", "invalid_target")),
    ];
    for (what, token, extra, (as_assertion, as_exchange)) in cases {
        let reply = h.assertion(&token, extra).await;
        assert_eq!(reply.body["error"], as_assertion, "{what} (assertion): {}", reply.body);
        let want = if as_assertion == "invalid_client" { StatusCode::UNAUTHORIZED } else { StatusCode::BAD_REQUEST };
        assert_eq!(reply.status, want, "{what}");
        let reply = h.exchange(&token, extra).await;
        assert_eq!(reply.body["error"], as_exchange, "{what} (exchange): {}", reply.body);
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{what}");
        // Nothing of the token comes back.
        assert!(!reply.body.to_string().contains(&token), "{what}");
    }
}

#[tokio::test]
async fn off_by_default_and_unavailable_until_the_keys_are_loaded() {
    let off = Harness::new(false, false);
    let token = off.sa_token("shop", "orders", |_| {});
    assert_eq!(off.assertion(&token, "").await.body["error"], "invalid_client");
    assert_eq!(off.exchange(&token, "").await.body["error"], "unsupported_grant_type");

    let no_keys = Harness::new(true, false);
    let reply = no_keys.exchange(&no_keys.sa_token("shop", "orders", |_| {}), "").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body["error"], "temporarily_unavailable");
}

#[tokio::test]
async fn discovery_lists_the_new_grant_and_assertion_only_when_on() {
    let metadata = |h: Harness| async move {
        h.send(Request::get("/.well-known/oauth-authorization-server").body(Body::empty()).expect("request")).await.body
    };
    let on = metadata(Harness::new(true, true)).await;
    assert_eq!(
        on["grant_types_supported"],
        json!(["client_credentials", "password", "urn:ietf:params:oauth:grant-type:token-exchange"])
    );
    assert_eq!(
        on["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post", "private_key_jwt"])
    );
    assert_eq!(on["token_endpoint_auth_signing_alg_values_supported"], json!(["RS256"]));
    let off = metadata(Harness::new(false, false)).await;
    assert_eq!(off["grant_types_supported"], json!(["client_credentials", "password"]));
    assert!(off.get("token_endpoint_auth_signing_alg_values_supported").is_none());
}
