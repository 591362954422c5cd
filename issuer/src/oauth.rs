//! RFC 6749 section 5.2 error responses, mapped to status codes in one place.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// Why a token request was refused. Descriptions are fixed text: request
/// input (and certainly no secret) is never echoed, except a refused scope.
#[derive(Debug, PartialEq, Eq)]
pub enum OAuthError {
    InvalidRequest(&'static str),
    /// Unknown client, wrong secret and missing credentials look the same.
    InvalidClient,
    /// Wrong or unknown username or password (password grant).
    InvalidGrant,
    /// A valid subject token whose ServiceAccount no SigilClient admits (token exchange).
    NotAdmitted,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope(String),
    /// RFC 8693 section 2.2.2: the requested audience is not one the caller may have.
    InvalidTarget,
    TooManyFailures(Duration),
    PayloadTooLarge,
    /// No published signing key is loaded.
    Unavailable,
    /// Workload identity is on but cannot verify now: the API server's
    /// ServiceAccount token keys are not loaded yet, or a TokenReview failed.
    WorkloadUnavailable,
    ServerError,
}

impl OAuthError {
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) | OAuthError::PayloadTooLarge => "invalid_request",
            OAuthError::InvalidClient => "invalid_client",
            OAuthError::InvalidGrant | OAuthError::NotAdmitted => "invalid_grant",
            OAuthError::UnauthorizedClient => "unauthorized_client",
            OAuthError::UnsupportedGrantType => "unsupported_grant_type",
            OAuthError::InvalidScope(_) => "invalid_scope",
            OAuthError::InvalidTarget => "invalid_target",
            OAuthError::TooManyFailures(_) | OAuthError::Unavailable | OAuthError::WorkloadUnavailable => {
                "temporarily_unavailable"
            }
            OAuthError::ServerError => "server_error",
        }
    }

    /// The metrics label: the code, refined where the code is shared.
    pub fn reason(&self) -> &'static str {
        match self {
            OAuthError::TooManyFailures(_) => "rate_limited",
            OAuthError::PayloadTooLarge => "payload_too_large",
            OAuthError::Unavailable => "no_published_key",
            OAuthError::NotAdmitted => "not_admitted",
            OAuthError::WorkloadUnavailable => "workload_unavailable",
            other => other.code(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            OAuthError::InvalidClient => StatusCode::UNAUTHORIZED,
            OAuthError::TooManyFailures(_) => StatusCode::TOO_MANY_REQUESTS,
            OAuthError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            OAuthError::Unavailable | OAuthError::WorkloadUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            OAuthError::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn description(&self) -> String {
        match self {
            OAuthError::InvalidRequest(why) => (*why).to_owned(),
            OAuthError::InvalidClient => "client authentication failed".to_owned(),
            OAuthError::InvalidGrant => "the resource owner credentials are invalid".to_owned(),
            OAuthError::NotAdmitted => "no SigilClient admits the subject_token's ServiceAccount".to_owned(),
            OAuthError::UnauthorizedClient => "the client may not use this grant type".to_owned(),
            OAuthError::UnsupportedGrantType => "supported grant types: client_credentials, password".to_owned(),
            OAuthError::InvalidScope(scope) if scope.is_empty() => "scope is malformed".to_owned(),
            OAuthError::InvalidScope(scope) => format!("scope {scope:?} is not allowed"),
            OAuthError::InvalidTarget => "the requested audience is not allowed".to_owned(),
            OAuthError::TooManyFailures(_) => "too many failed authentications; retry later".to_owned(),
            OAuthError::PayloadTooLarge => "request body too large".to_owned(),
            OAuthError::Unavailable => "no published signing key is loaded yet".to_owned(),
            OAuthError::WorkloadUnavailable => "ServiceAccount tokens cannot be verified right now; retry".to_owned(),
            OAuthError::ServerError => "internal error".to_owned(),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.code(), "error_description": self.description()});
        let mut response = (self.status(), body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        match self {
            OAuthError::InvalidClient => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"sigil-issuer\""));
            }
            OAuthError::TooManyFailures(wait) => {
                // Round up: retrying a fraction of a second early would fail again.
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            OAuthError::Unavailable | OAuthError::WorkloadUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}
