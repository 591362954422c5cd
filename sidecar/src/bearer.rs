//! Finding the Bearer token in a request (RFC 6750 section 2.1): only the
//! Authorization header counts, and a request that offers a token in more
//! than one way is refused rather than guessed at.

use http::{HeaderMap, header};

use crate::rejection::Denial;

/// The token from `Authorization: Bearer <token>` (scheme case-insensitive).
pub fn extract<'a>(headers: &'a HeaderMap, query: Option<&str>) -> Result<&'a str, Denial> {
    if query.is_some_and(has_access_token) {
        return Err(Denial::InvalidRequest("access_token in the query string"));
    }
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Err(Denial::NoToken) };
    if values.next().is_some() {
        return Err(Denial::InvalidRequest("more than one Authorization header"));
    }
    let value = value.to_str().map_err(|_| Denial::InvalidRequest("Authorization is not ASCII"))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme (Basic, DPoP, ...) is no Bearer token.
        return Err(Denial::NoToken);
    }
    let token = token.trim_start_matches(' ');
    if token.is_empty() || token.bytes().any(|b| matches!(b, b' ' | b'\t' | b',')) {
        return Err(Denial::InvalidRequest("malformed Bearer credentials"));
    }
    Ok(token)
}

fn has_access_token(query: &str) -> bool {
    query.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or(pair);
        name == "access_token" || name.eq_ignore_ascii_case("access%5Ftoken")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, v.parse().expect("header"));
        }
        h
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR  abc"] {
            assert_eq!(extract(&headers(&[v]), None), Ok("abc"), "{v}");
        }
    }

    #[test]
    fn no_token_or_another_scheme() {
        assert_eq!(extract(&headers(&[]), None), Err(Denial::NoToken));
        assert_eq!(extract(&headers(&["Basic YTpi"]), None), Err(Denial::NoToken));
        assert_eq!(extract(&headers(&["Bearerabc"]), None), Err(Denial::NoToken));
    }

    #[test]
    fn ambiguous_or_malformed_requests() {
        assert!(matches!(extract(&headers(&["Bearer a", "Bearer b"]), None), Err(Denial::InvalidRequest(_))));
        assert!(matches!(extract(&headers(&["Bearer a"]), Some("x=1&access_token=b")), Err(Denial::InvalidRequest(_))));
        assert!(matches!(extract(&headers(&[]), Some("access_token=b")), Err(Denial::InvalidRequest(_))));
        assert!(matches!(extract(&headers(&["Bearer "]), None), Err(Denial::InvalidRequest(_))));
        assert!(matches!(extract(&headers(&["Bearer a b"]), None), Err(Denial::InvalidRequest(_))));
        assert_eq!(extract(&headers(&["Bearer a"]), Some("my_access_token=1")), Ok("a"));
    }
}
