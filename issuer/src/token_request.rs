//! Parsing a `POST /token` request (RFC 6749 sections 2.3.1, 3.1, 4.3, 4.4;
//! RFC 7523 client assertions; RFC 8693 token exchange) into what was asked,
//! before any authentication work. Pure: no I/O.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use base64::Engine as _;
use http::{HeaderMap, HeaderValue, header};
use zeroize::Zeroizing;

use crate::clients::GrantType;
use crate::oauth::OAuthError;
use crate::workload::{self, Presented};

/// A well-formed request of either kind.
pub enum Parsed {
    /// Client secret (and, for the password grant, user) credentials.
    Client(TokenRequest),
    /// A ServiceAccount token: client assertion or token exchange.
    Workload(WorkloadRequest),
}

/// A request that authenticates with a projected ServiceAccount token. The
/// token is wiped from memory when dropped.
pub struct WorkloadRequest {
    pub presented: Presented,
    pub token: Zeroizing<String>,
    /// `client_id`, if sent: must then name the token's ServiceAccount.
    pub client_id: Option<String>,
    /// `audience` (RFC 8693; also accepted on client_credentials), or RFC 8707 `resource`.
    pub audience: Option<String>,
    pub scope: Option<String>,
}

/// Parses any token request: ServiceAccount-token requests are recognised by
/// their grant type or `client_assertion_type`, everything else is
/// [`TokenRequest::parse`]'s.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Parsed, OAuthError> {
    let params = Params::parse(body)?;
    let grant = params.get("grant_type").ok_or(OAuthError::InvalidRequest("grant_type is missing"))?;
    let has_other_auth = headers.contains_key(header::AUTHORIZATION) || params.get("client_secret").is_some();
    let audience = || match (params.get("audience"), params.get("resource")) {
        (Some(_), Some(_)) => Err(OAuthError::InvalidRequest("send audience or resource, not both")),
        (a, r) => Ok(a.or(r).map(str::to_owned)),
    };
    if grant == workload::TOKEN_EXCHANGE_GRANT {
        if has_other_auth || params.get("client_assertion").is_some() {
            return Err(OAuthError::InvalidRequest(
                "token exchange takes no client authentication: the subject_token is the credential",
            ));
        }
        if params.get("actor_token").is_some() {
            return Err(OAuthError::InvalidRequest("actor_token (delegation) is not supported"));
        }
        let token = params.get("subject_token").ok_or(OAuthError::InvalidRequest("subject_token is missing"))?;
        if params.get("subject_token_type") != Some(workload::JWT_TOKEN_TYPE) {
            return Err(OAuthError::InvalidRequest("subject_token_type must be urn:ietf:params:oauth:token-type:jwt"));
        }
        if params
            .get("requested_token_type")
            .is_some_and(|t| t != workload::ACCESS_TOKEN_TYPE && t != workload::JWT_TOKEN_TYPE)
        {
            return Err(OAuthError::InvalidRequest("requested_token_type must be an access token or a JWT"));
        }
        return Ok(Parsed::Workload(WorkloadRequest {
            presented: Presented::SubjectToken,
            token: Zeroizing::new(token.to_owned()),
            client_id: params.get("client_id").map(str::to_owned),
            audience: audience()?,
            scope: params.get("scope").map(str::to_owned),
        }));
    }
    if let Some(kind) = params.get("client_assertion_type") {
        if kind != workload::JWT_BEARER_ASSERTION {
            return Err(OAuthError::InvalidRequest(
                "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ));
        }
        if grant != GrantType::ClientCredentials.as_str() {
            return Err(OAuthError::UnauthorizedClient);
        }
        if has_other_auth {
            return Err(OAuthError::InvalidRequest("use one client authentication method, not two"));
        }
        let token = params.get("client_assertion").ok_or(OAuthError::InvalidRequest("client_assertion is missing"))?;
        return Ok(Parsed::Workload(WorkloadRequest {
            presented: Presented::ClientAssertion,
            token: Zeroizing::new(token.to_owned()),
            client_id: params.get("client_id").map(str::to_owned),
            audience: audience()?,
            scope: params.get("scope").map(str::to_owned),
        }));
    }
    if params.get("client_assertion").is_some() {
        return Err(OAuthError::InvalidRequest("client_assertion needs client_assertion_type"));
    }
    TokenRequest::from_params(headers, &params).map(Parsed::Client)
}

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
        TokenRequest::from_params(headers, &Params::parse(body)?)
    }

    fn from_params(headers: &HeaderMap, params: &Params) -> Result<TokenRequest, OAuthError> {
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
        let (client_id, client_secret) = client_credentials(headers, params)?;
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

    #[test]
    fn service_account_token_requests_parse() {
        let none = HeaderMap::new();
        let assertion = "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=h.p.s";
        let Ok(Parsed::Workload(r)) = parse(&none, format!("{assertion}&scope=a&audience=api").as_bytes()) else {
            panic!("an assertion request")
        };
        assert_eq!(r.presented, Presented::ClientAssertion);
        assert_eq!((r.token.as_str(), r.scope.as_deref(), r.audience.as_deref()), ("h.p.s", Some("a"), Some("api")));

        let exchange = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=h.p.s&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt";
        let Ok(Parsed::Workload(r)) = parse(&none, format!("{exchange}&resource=api").as_bytes()) else {
            panic!("an exchange request")
        };
        assert_eq!(r.presented, Presented::SubjectToken);
        assert_eq!(r.audience.as_deref(), Some("api"));
        assert!(matches!(
            parse(&none, b"grant_type=client_credentials&client_id=a&client_secret=b"),
            Ok(Parsed::Client(_))
        ));

        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic YTpi"));
        let refused = |h: &HeaderMap, body: String| match parse(h, body.as_bytes()) {
            Ok(_) => panic!("{body} parsed"),
            Err(e) => e,
        };
        let code = |h: &HeaderMap, body: String| refused(h, body).code();
        assert_eq!(code(&none, format!("{exchange}&actor_token=x")), "invalid_request");
        assert_eq!(code(&none, exchange.replace("token-type%3Ajwt", "token-type%3Aid_token")), "invalid_request");
        assert_eq!(code(&none, exchange.replace("&subject_token=h.p.s", "")), "invalid_request");
        assert_eq!(
            code(
                &none,
                format!("{exchange}&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Arefresh_token")
            ),
            "invalid_request"
        );
        assert_eq!(code(&basic, exchange.to_owned()), "invalid_request");
        assert_eq!(code(&none, format!("{exchange}&audience=a&resource=b")), "invalid_request");
        assert_eq!(code(&basic, assertion.to_owned()), "invalid_request", "two authentication methods");
        assert_eq!(code(&none, assertion.replace("jwt-bearer", "saml2-bearer")), "invalid_request");
        assert_eq!(code(&none, assertion.replace("&client_assertion=h.p.s", "")), "invalid_request");
        assert_eq!(code(&none, assertion.replace("client_credentials", "password")), "unauthorized_client");
        assert_eq!(code(&none, "grant_type=client_credentials&client_assertion=h.p.s".to_owned()), "invalid_request");
    }
}
