//! The HTTP surface: `POST /token`, the JWKS and the discovery documents.
//! [`app`] builds the whole router, so tests drive it without a socket.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use zeroize::Zeroizing;

use crate::auth::AuthError;
use crate::clients::GrantType;
use crate::oauth::OAuthError;
use crate::scope::{self, ScopeError};
use crate::state::AppState;
use crate::token::{self, Grant};

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
    // Without ConnectInfo (tests driving the router directly) all requests share one source.
    let source = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| addr.ip());
    if !is_form(&parts.headers) {
        return Err(OAuthError::InvalidRequest("Content-Type must be application/x-www-form-urlencoded"));
    }
    let body = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES))
        .await
        .map_err(|_| OAuthError::InvalidRequest("request body not received in time"))?
        .map_err(|_| OAuthError::PayloadTooLarge)?;
    let params = Params::parse(&body)?;

    let grant = match params.get("grant_type") {
        None => return Err(OAuthError::InvalidRequest("grant_type is missing")),
        Some(g) => GrantType::from_param(g).ok_or(OAuthError::UnsupportedGrantType)?,
    };
    // Check the request is complete before any expensive authentication.
    let user_credentials = match grant {
        GrantType::Password => Some((
            params.get("username").ok_or(OAuthError::InvalidRequest("username is missing"))?,
            params.get("password").ok_or(OAuthError::InvalidRequest("password is missing"))?,
        )),
        GrantType::ClientCredentials => None,
    };
    let (client_id, secret) = client_credentials(&parts.headers, &params)?;

    let registry = state.clients();
    let client = state.auth.client(&registry, &client_id, secret, source).await.map_err(|e| match e {
        AuthError::Invalid => OAuthError::InvalidClient,
        AuthError::Limited(wait) => OAuthError::TooManyFailures(wait),
        AuthError::Unavailable => OAuthError::ServerError,
    })?;
    if !client.grant_types.contains(&grant) {
        return Err(OAuthError::UnauthorizedClient);
    }
    let (subject, allowed) = match user_credentials {
        None => (client.id.clone(), client.scopes.clone()),
        Some((username, password)) => {
            let password = Zeroizing::new(password.to_owned());
            let user = state.auth.user(&registry, username, password, source).await.map_err(|e| match e {
                AuthError::Invalid => OAuthError::InvalidGrant,
                AuthError::Limited(wait) => OAuthError::TooManyFailures(wait),
                AuthError::Unavailable => OAuthError::ServerError,
            })?;
            // The token carries what both the user and the client may do.
            (user.username.clone(), user.scopes.intersection(&client.scopes).cloned().collect())
        }
    };
    let scopes = scope::grant(params.get("scope"), &allowed).map_err(|e| match e {
        ScopeError::Malformed => OAuthError::InvalidScope(String::new()),
        ScopeError::NotAllowed(s) => OAuthError::InvalidScope(s),
    })?;
    let scope = scope::join(&scopes);

    let keys = state.keys.current();
    let signer = keys.signer.as_ref().ok_or(OAuthError::Unavailable)?;
    let settings = &state.settings;
    let ttl = client.ttl.unwrap_or(settings.token_ttl);
    let grant_claims = Grant {
        issuer: &settings.issuer_url,
        subject: &subject,
        audience: client.audience.as_deref().unwrap_or(&settings.audience),
        client_id: &client.id,
        scope: &scope,
        ttl,
    };
    let claims = grant_claims.claims(SystemTime::now());
    let started = Instant::now();
    let access_token = token::sign(signer, &claims).map_err(|e| {
        tracing::error!(error = %e, kid = signer.kid(), "signing failed");
        OAuthError::ServerError
    })?;
    state.metrics.signing_seconds.observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .tokens_issued
        .get_or_create(&crate::metrics::IssuedLabels { client: client.id.clone(), grant: grant.as_str() })
        .inc();
    tracing::debug!(client = %client.id, grant = grant.as_str(), jti = %claims.jti, kid = signer.kid(), "token issued");

    let mut body = serde_json::json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs(),
    });
    if !scope.is_empty() {
        body["scope"] = serde_json::Value::String(scope);
    }
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

/// Form parameters. RFC 6749 section 3.1: a parameter without a value counts
/// as omitted, and none may appear twice.
struct Params(HashMap<String, Zeroizing<String>>);

impl Params {
    fn parse(body: &[u8]) -> Result<Params, OAuthError> {
        let mut map = HashMap::new();
        for (name, value) in form_urlencoded::parse(body) {
            match map.entry(name.into_owned()) {
                Entry::Occupied(_) => return Err(OAuthError::InvalidRequest("a parameter is repeated")),
                Entry::Vacant(slot) => {
                    slot.insert(Zeroizing::new(value.into_owned()));
                }
            }
        }
        Ok(Params(map))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.as_str()).filter(|v| !v.is_empty())
    }
}

/// The client's id and secret, from HTTP Basic (`client_secret_basic`) or the
/// form (`client_secret_post`). Using both at once is an error (RFC 6749 2.3.1).
fn client_credentials(headers: &HeaderMap, params: &Params) -> Result<(String, Zeroizing<String>), OAuthError> {
    let basic = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => Some(parse_basic(value).ok_or(OAuthError::InvalidClient)?),
    };
    match (basic, params.get("client_secret")) {
        (Some(_), Some(_)) => Err(OAuthError::InvalidRequest("use one client authentication method, not two")),
        (Some((id, secret)), None) => match params.get("client_id") {
            Some(form_id) if form_id != id => {
                Err(OAuthError::InvalidRequest("client_id does not match the authenticated client"))
            }
            _ => Ok((id, secret)),
        },
        (None, Some(secret)) => match params.get("client_id") {
            Some(id) => Ok((id.to_owned(), Zeroizing::new(secret.to_owned()))),
            None => Err(OAuthError::InvalidClient),
        },
        (None, None) => Err(OAuthError::InvalidClient),
    }
}

/// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))`.
fn parse_basic(value: &HeaderValue) -> Option<(String, Zeroizing<String>)> {
    let value = value.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?);
    let text = std::str::from_utf8(&decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let id = form_decode(id)?;
    let secret = Zeroizing::new(form_decode(secret)?);
    if id.is_empty() { None } else { Some((id, secret)) }
}

/// Decodes one `application/x-www-form-urlencoded` value (`+` is a space).
fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
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
    let body = serde_json::json!({
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
    fn basic_credentials_are_form_decoded() {
        let header = |raw: &str| {
            HeaderValue::from_str(&format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw)))
                .expect("header")
        };
        let (id, secret) = parse_basic(&header("my%20app:p%3Aw+d")).expect("parse");
        assert_eq!((id.as_str(), secret.as_str()), ("my app", "p:w d"));
        let (id, secret) = parse_basic(&header("app:a:b")).expect("colon in secret");
        assert_eq!((id.as_str(), secret.as_str()), ("app", "a:b"));
        assert!(parse_basic(&header("no-colon")).is_none());
        assert!(parse_basic(&header(":secret")).is_none());
        assert!(parse_basic(&header("app:%zz")).is_none());
        assert!(parse_basic(&HeaderValue::from_static("Bearer abc")).is_none());
        assert!(parse_basic(&HeaderValue::from_static("Basic !!!")).is_none());
    }

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
