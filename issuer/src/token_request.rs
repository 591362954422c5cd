//! Parsing a `POST /token` request (RFC 6749 sections 2.3.1, 3.1, 4.3, 4.4)
//! into what was asked, before any authentication work. Pure: no I/O.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use base64::Engine as _;
use http::{HeaderMap, HeaderValue, header};
use zeroize::Zeroizing;

use crate::clients::GrantType;
use crate::oauth::OAuthError;

/// A well-formed token request. Secrets are wiped from memory when dropped.
pub struct TokenRequest {
    pub grant: GrantType,
    pub client_id: String,
    pub client_secret: Zeroizing<String>,
    /// Username and password, for the password grant.
    pub user: Option<(String, Zeroizing<String>)>,
    pub scope: Option<String>,
}

impl TokenRequest {
    /// Checks, in order, what RFC 6749 says a token request must be. A
    /// malformed request is refused before the client is authenticated, so it
    /// costs no Argon2 run.
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<TokenRequest, OAuthError> {
        let params = Params::parse(body)?;
        let grant = match params.get("grant_type") {
            None => return Err(OAuthError::InvalidRequest("grant_type is missing")),
            Some(g) => GrantType::from_param(g).ok_or(OAuthError::UnsupportedGrantType)?,
        };
        let user = match grant {
            GrantType::Password => Some((
                params.get("username").ok_or(OAuthError::InvalidRequest("username is missing"))?.to_owned(),
                Zeroizing::new(
                    params.get("password").ok_or(OAuthError::InvalidRequest("password is missing"))?.to_owned(),
                ),
            )),
            GrantType::ClientCredentials => None,
        };
        let (client_id, client_secret) = client_credentials(headers, &params)?;
        Ok(TokenRequest { grant, client_id, client_secret, user, scope: params.get("scope").map(str::to_owned) })
    }
}

pub fn is_form(headers: &HeaderMap) -> bool {
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
    fn requests_parse_in_rfc_order() {
        let basic = |raw: &str| {
            let mut h = HeaderMap::new();
            let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw));
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(&value).expect("header"));
            h
        };
        let none = HeaderMap::new();
        let parse = |h: &HeaderMap, body: &str| TokenRequest::parse(h, body.as_bytes()).map(|r| r.client_id);

        let r = TokenRequest::parse(&basic("svc:pw"), b"grant_type=password&username=al%20ice&password=p&scope=a+b")
            .expect("parse");
        assert_eq!(r.grant, GrantType::Password);
        assert_eq!(r.client_id, "svc");
        assert_eq!(r.client_secret.as_str(), "pw");
        let (user, password) = r.user.expect("user");
        assert_eq!((user.as_str(), password.as_str()), ("al ice", "p"));
        assert_eq!(r.scope.as_deref(), Some("a b"));

        // An empty value counts as absent; the grant type is checked before credentials.
        assert_eq!(parse(&none, "grant_type=&client_id=a"), Err(OAuthError::InvalidRequest("grant_type is missing")));
        assert_eq!(parse(&none, "grant_type=x"), Err(OAuthError::UnsupportedGrantType));
        assert_eq!(parse(&none, "grant_type=client_credentials"), Err(OAuthError::InvalidClient));
        assert_eq!(parse(&none, "grant_type=client_credentials&client_id=a&client_secret=b"), Ok("a".to_owned()),);
        assert!(matches!(
            parse(&basic("a:b"), "grant_type=client_credentials&scope=x&scope=y"),
            Err(OAuthError::InvalidRequest(_))
        ));
        assert!(matches!(parse(&basic("a:b"), "grant_type=password&username=u"), Err(OAuthError::InvalidRequest(_))));
    }
}
