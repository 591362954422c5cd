//! The HTTP surface: `POST /token`, the JWKS and the discovery documents.
//! [`app`] builds the whole router, so tests drive it without a socket.
//!
//! `/token` runs in three steps: parse ([`token_request::parse`], no I/O),
//! authorize (client, user, scopes; or, with workload identity, the
//! ServiceAccount token and its SigilClient), mint (sign with the current
//! published key).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::auth::AuthError;
use crate::clients::GrantType;
use crate::metrics::IssuedLabels;
use crate::oauth::OAuthError;
use crate::scope::{self, ScopeError};
use crate::state::AppState;
use crate::token::{self, Grant, KubernetesClaim, NamedRef};
use crate::token_request::{self, Parsed, TokenRequest, WorkloadRequest};
use crate::workload::{self, Presented};
use sigil_api::subject::{SubjectKind, subject as subject_of};
use sigil_runtime::client_ip;

/// Token requests are a handful of short parameters; anything bigger is not one.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// A client trickling its body holds a connection and a task; cut it off.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/token", post(token_endpoint))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/openid-configuration", get(metadata))
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .with_state(state)
}

async fn token_endpoint(State(state): State<Arc<AppState>>, request: Request) -> Response {
    match issue(&state, request).await {
        Ok(response) => response,
        Err(e) => {
            state.metrics.failure(e.reason());
            e.into_response()
        }
    }
}

async fn issue(state: &AppState, request: Request) -> Result<Response, OAuthError> {
    let (parts, body) = request.into_parts();
    // Without ConnectInfo (tests driving the router directly) all requests share one peer.
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| addr.ip());
    let source = client_ip::client_ip(peer, &parts.headers, &state.settings.trusted_proxies);
    if !token_request::is_form(&parts.headers) {
        return Err(OAuthError::InvalidRequest("Content-Type must be application/x-www-form-urlencoded"));
    }
    let body = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES))
        .await
        .map_err(|_| OAuthError::InvalidRequest("request body not received in time"))?
        .map_err(|_| OAuthError::PayloadTooLarge)?;
    let granted = match token_request::parse(&parts.headers, &body)? {
        Parsed::Client(request) => authorize(state, request, source).await?,
        Parsed::Workload(request) => authorize_workload(state, request, source).await?,
    };
    mint(state, &granted)
}

/// What a request is granted once every check has passed.
struct Granted {
    client_id: String,
    /// The metrics label of the grant.
    grant: &'static str,
    subject: String,
    audience: String,
    /// The client's own lifetime, if it sets one.
    ttl: Option<Duration>,
    scope: String,
    kubernetes: Option<KubernetesClaim>,
    /// RFC 8693 responses name the issued token's type.
    exchange: bool,
}

/// Authenticates the client (and the user, for the password grant) and
/// decides the scopes.
async fn authorize(state: &AppState, request: TokenRequest, source: IpAddr) -> Result<Granted, OAuthError> {
    let registry = state.clients();
    let client =
        state.auth.client(&registry, &request.client_id, request.client_secret, source).await.map_err(|e| match e {
            AuthError::Invalid => {
                // For audit: the id and address, never the secret. Rate-limited
                // refusals only count in metrics, so a flood cannot flood the
                // logs; Argon2 bounds how fast these can come.
                tracing::info!(client_id = %request.client_id, %source, "client authentication failed");
                OAuthError::InvalidClient
            }
            AuthError::Limited(wait) => OAuthError::TooManyFailures(wait),
            AuthError::Unavailable => OAuthError::ServerError,
        })?;
    if !client.grant_types.contains(&request.grant) {
        return Err(OAuthError::UnauthorizedClient);
    }
    let (subject, allowed) = match request.user {
        None => (subject_of(SubjectKind::Client, &client.id), client.scopes.clone()),
        Some((username, password)) => {
            let user = state.auth.user(&registry, &username, password, source).await.map_err(|e| match e {
                AuthError::Invalid => {
                    // Never the username: users type passwords into that field.
                    tracing::info!(client_id = %client.id, %source, "user authentication failed");
                    OAuthError::InvalidGrant
                }
                AuthError::Limited(wait) => OAuthError::TooManyFailures(wait),
                AuthError::Unavailable => OAuthError::ServerError,
            })?;
            // The token carries what both the user and the client may do.
            (subject_of(SubjectKind::User, &user.username), user.scopes.intersection(&client.scopes).cloned().collect())
        }
    };
    let scopes = scope::grant(request.scope.as_deref(), &allowed).map_err(|e| match e {
        ScopeError::Malformed => OAuthError::InvalidScope(String::new()),
        ScopeError::NotAllowed(s) => OAuthError::InvalidScope(s),
    })?;
    Ok(Granted {
        client_id: client.id.clone(),
        grant: request.grant.as_str(),
        subject,
        audience: client.audience.clone().unwrap_or_else(|| state.settings.audience.clone()),
        ttl: client.ttl,
        scope: scope::join(&scopes),
        kubernetes: None,
        exchange: false,
    })
}

/// Verifies the ServiceAccount token (signature and claims against the API
/// server's JWKS in memory), decides by SigilClient, then checks a pod
/// binding with the API server on first sight and once per review TTL (cached).
async fn authorize_workload(state: &AppState, request: WorkloadRequest, source: IpAddr) -> Result<Granted, OAuthError> {
    let presented = request.presented;
    let Some(workload) = &state.workload else {
        return Err(match presented {
            Presented::ClientAssertion => OAuthError::InvalidClient,
            Presented::SubjectToken => OAuthError::UnsupportedGrantType,
        });
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let identity = workload.verify(&request.token, now).map_err(|e| {
        // The reason is fixed text; never the token.
        if let workload::WorkloadError::Token(reason) = &e {
            tracing::info!(%source, reason, "ServiceAccount token refused");
        }
        e.to_oauth(presented)
    })?;
    let subject = identity.subject();
    if request.client_id.as_ref().is_some_and(|id| *id != subject) {
        return Err(match presented {
            Presented::ClientAssertion => OAuthError::InvalidClient,
            Presented::SubjectToken => {
                OAuthError::InvalidRequest("client_id does not name the subject_token's ServiceAccount")
            }
        });
    }
    let decision =
        workload.clients().decide(&identity, request.audience.as_deref(), request.scope.as_deref()).map_err(|e| {
            tracing::info!(%source, namespace = %identity.namespace, service_account = %identity.service_account,
                refusal = ?e, "workload identity refused");
            e.to_oauth(presented)
        })?;
    // Last, so only admitted workloads can cause an API call.
    if let Some(reviewer) = workload.reviewer() {
        workload::check_binding(reviewer.as_ref(), &workload.reviews, &request.token, &identity, now).await.map_err(
            |e| {
                tracing::info!(%source, namespace = %identity.namespace, service_account = %identity.service_account,
                    refusal = ?e, "ServiceAccount token binding refused");
                e.to_oauth(presented)
            },
        )?;
    }
    tracing::debug!(sigil_client = %decision.sigil_client, %subject, "workload identity admitted");
    Ok(Granted {
        client_id: subject.clone(),
        grant: match presented {
            Presented::ClientAssertion => GrantType::ClientCredentials.as_str(),
            Presented::SubjectToken => "token_exchange",
        },
        subject,
        audience: decision.audience,
        ttl: decision.ttl,
        scope: scope::join(&decision.scopes),
        kubernetes: Some(KubernetesClaim {
            namespace: identity.namespace,
            serviceaccount: NamedRef { name: identity.service_account },
            pod: identity.pod.map(|(name, _uid)| NamedRef { name }),
        }),
        exchange: presented == Presented::SubjectToken,
    })
}

/// Signs the token with the current published key and builds the response.
fn mint(state: &AppState, granted: &Granted) -> Result<Response, OAuthError> {
    let keys = state.keys.current();
    let signer = keys.signer.as_ref().ok_or(OAuthError::Unavailable)?;
    let settings = &state.settings;
    // The SigningKey's maximum lifetime caps whatever the client or flag says:
    // its retired keys stay published only that long.
    let configured = granted.ttl.unwrap_or(settings.token_ttl);
    let ttl = keys.max_token_lifetime.map_or(configured, |cap| configured.min(cap));
    let claims = Grant {
        issuer: &settings.issuer_url,
        subject: &granted.subject,
        audience: &granted.audience,
        client_id: &granted.client_id,
        scope: &granted.scope,
        ttl,
        kubernetes: granted.kubernetes.as_ref(),
    }
    .claims(SystemTime::now());
    let started = Instant::now();
    let access_token = token::sign(signer, &claims).map_err(|e| {
        tracing::error!(error = %e, kid = signer.kid(), "signing failed");
        OAuthError::ServerError
    })?;
    state.metrics.signing_seconds.observe(started.elapsed().as_secs_f64());
    let grant = granted.grant;
    state.metrics.tokens_issued.get_or_create(&IssuedLabels { client: granted.client_id.clone(), grant }).inc();
    tracing::debug!(client = %granted.client_id, grant, jti = %claims.jti, kid = signer.kid(), "token issued");

    let mut body = serde_json::json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs(),
    });
    if !granted.scope.is_empty() {
        body["scope"] = serde_json::Value::from(granted.scope.as_str());
    }
    if granted.exchange {
        body["issued_token_type"] = serde_json::Value::from(workload::ACCESS_TOKEN_TYPE);
    }
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

async fn jwks(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let keys = state.keys.current();
    let jwks = &keys.jwks;
    let etag = HeaderValue::from_str(&jwks.etag).unwrap_or_else(|_| HeaderValue::from_static("\"\""));
    let cache_control = max_age(&state);
    if if_none_match(&headers, &jwks.etag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag), (header::CACHE_CONTROL, cache_control)])
            .into_response();
    }
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(sigil_api::contract::JWKS_MEDIA_TYPE)),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, cache_control),
        ],
        Body::from(jwks.bytes.clone()),
    )
        .into_response()
}

/// RFC 9110 section 13.1.2: `*` or any listed tag, compared weakly.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |tag| {
            let tag = tag.trim();
            tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag
        },
    )
}

fn max_age(state: &AppState) -> HeaderValue {
    HeaderValue::from_str(&format!("public, max-age={}", state.settings.jwks_max_age.as_secs()))
        .unwrap_or_else(|_| HeaderValue::from_static("no-cache"))
}

/// RFC 8414 authorization server metadata, also served as OpenID discovery so
/// OIDC libraries find the JWKS. The signing algorithms are those the JWKS
/// publishes, so they follow key rotation.
async fn metadata(State(state): State<Arc<AppState>>) -> Response {
    let issuer = &state.settings.issuer_url;
    let algorithms: Vec<&str> = state.keys.current().jwks.algorithms.iter().map(|a| a.as_str()).collect();
    let mut body = serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "token_endpoint": format!("{issuer}/token"),
        "grant_types_supported": ["client_credentials", "password"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "response_types_supported": [],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algorithms,
        "access_token_signing_alg_values_supported": algorithms,
    });
    if let Some(workload) = &state.workload {
        body["grant_types_supported"] =
            serde_json::json!(["client_credentials", "password", workload::TOKEN_EXCHANGE_GRANT]);
        body["token_endpoint_auth_methods_supported"] =
            serde_json::json!(["client_secret_basic", "client_secret_post", "private_key_jwt"]);
        // RFC 8414: required with private_key_jwt. What the API server signs
        // ServiceAccount tokens with, once its keys are loaded.
        let assertion_algs: Vec<&str> = workload
            .verifier()
            .map(|v| v.algorithms().into_iter().map(|a| a.as_str()).collect())
            .unwrap_or_else(|| vec!["RS256", "ES256"]);
        body["token_endpoint_auth_signing_alg_values_supported"] = serde_json::json!(assertion_algs);
    }
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CACHE_CONTROL, max_age(&state)),
        ],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_forms() {
        let mut h = HeaderMap::new();
        assert!(!if_none_match(&h, "\"a\""));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"x\", W/\"a\""));
        assert!(if_none_match(&h, "\"a\""));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(if_none_match(&h, "\"a\""));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"b\""));
        assert!(!if_none_match(&h, "\"a\""));
    }
}
