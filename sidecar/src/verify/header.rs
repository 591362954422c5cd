//! The JOSE header: which algorithm and key a token claims, and the members a
//! verifier must refuse to act on.
//!
//! `jku`, `x5u`, `jwk` and `x5c` are never read: keys come only from the
//! configured JWKS (RFC 8725 section 3.10). `kid` is an opaque lookup string.

use serde_json::Value;
use sigil_api::Algorithm;

use super::{AlgorithmSet, Rejection, strict_json};

/// The members of a header the verifier acts on.
#[derive(Debug, PartialEq, Eq)]
pub struct Header {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

pub fn parse(bytes: &[u8], allowed: &AlgorithmSet) -> Result<Header, Rejection> {
    let mut map = strict_json::parse_object(bytes).map_err(Rejection::BadHeader)?;
    // Sigil understands no header extension, so any `crit` is refused: an
    // empty list is invalid too (RFC 7515 section 4.1.11).
    if map.contains_key("crit") {
        return Err(Rejection::UnknownCrit);
    }
    let alg = match map.remove("alg") {
        Some(Value::String(name)) => name.parse::<Algorithm>().map_err(|_| Rejection::AlgorithmNotAllowed)?,
        Some(_) => return Err(Rejection::BadHeader("alg is not a string")),
        None => return Err(Rejection::BadHeader("alg is missing")),
    };
    if !allowed.contains(alg) {
        return Err(Rejection::AlgorithmNotAllowed);
    }
    let kid = match map.remove("kid") {
        Some(Value::String(kid)) => Some(kid),
        Some(_) => return Err(Rejection::BadHeader("kid is not a string")),
        None => None,
    };
    match map.get("typ") {
        None => {}
        Some(Value::String(typ)) if typ_is_jwt(typ) => {}
        Some(_) => return Err(Rejection::BadType),
    }
    Ok(Header { alg, kid })
}

/// `at+jwt` (RFC 9068) or `JWT` (RFC 7519), case-insensitive, with or without
/// the `application/` prefix (RFC 7515 section 4.1.9).
fn typ_is_jwt(typ: &str) -> bool {
    let bare = match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    };
    bare.eq_ignore_ascii_case("at+jwt") || bare.eq_ignore_ascii_case("jwt")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> AlgorithmSet {
        AlgorithmSet::from_iter(Algorithm::ALL)
    }

    #[test]
    fn reads_alg_and_kid() {
        let h = parse(br#"{"alg":"ES256","kid":"k1","typ":"at+jwt"}"#, &all()).expect("valid");
        assert_eq!(h, Header { alg: Algorithm::ES256, kid: Some("k1".into()) });
    }

    #[test]
    fn typ_variants() {
        for ok in ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+Jwt", "JWT", "jwt", "application/jwt"] {
            assert!(typ_is_jwt(ok), "{ok}");
        }
        for bad in ["", "JOSE", "dpop+jwt", "application/", "application/json", "at+jwt ", "xapplication/jwt", "é"] {
            assert!(!typ_is_jwt(bad), "{bad}");
        }
    }
}
