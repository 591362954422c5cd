//! Refusals as HTTP responses (RFC 6750 section 3). Bodies are short and
//! generic; the precise reason goes to metrics and debug logs only.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::path::PathError;
use crate::verify::Rejection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No Bearer token at all: 401 with no `error` (RFC 6750 section 3.1).
    NoToken,
    /// Two Authorization headers, a token in the query string, a malformed
    /// Authorization header: 400 `invalid_request`.
    InvalidRequest(&'static str),
    /// 401 `invalid_token`.
    InvalidToken(Rejection),
    /// A valid token without a required scope: 403 `insufficient_scope`.
    InsufficientScope,
    /// A path with no safe normal form ([`crate::path`]): 400.
    BadPath(PathError),
    /// A request header name with `_` while those are refused: 400.
    UnderscoreHeader,
}

impl Denial {
    pub fn label(&self) -> &'static str {
        match self {
            Denial::NoToken => "no_token",
            Denial::InvalidRequest(_) => "invalid_request",
            Denial::InvalidToken(r) => r.label(),
            Denial::InsufficientScope => "insufficient_scope",
            Denial::BadPath(_) => "bad_path",
            Denial::UnderscoreHeader => "underscore_header",
        }
    }

    pub fn response(&self) -> Response<Full<Bytes>> {
        let (status, challenge, body) = match self {
            Denial::NoToken => (StatusCode::UNAUTHORIZED, Some(r#"Bearer realm="sigil""#), "unauthorized\n"),
            Denial::InvalidRequest(_) => {
                (StatusCode::BAD_REQUEST, Some(r#"Bearer realm="sigil", error="invalid_request""#), "bad request\n")
            }
            Denial::InvalidToken(_) => {
                (StatusCode::UNAUTHORIZED, Some(r#"Bearer realm="sigil", error="invalid_token""#), "unauthorized\n")
            }
            Denial::InsufficientScope => {
                (StatusCode::FORBIDDEN, Some(r#"Bearer realm="sigil", error="insufficient_scope""#), "forbidden\n")
            }
            Denial::BadPath(_) | Denial::UnderscoreHeader => (StatusCode::BAD_REQUEST, None, "bad request\n"),
        };
        let mut response = plain(status, body);
        if let Some(challenge) = challenge {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

/// A short text response the sidecar writes itself.
pub fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
