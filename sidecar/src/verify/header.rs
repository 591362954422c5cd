//! The JOSE header: which algorithm and key a token claims, and the members a
//! verifier must refuse to act on.
//!
//! `jku`, `x5u`, `jwk` and `x5c` are never read: keys come only from the
//! configured JWKS (RFC 8725 section 3.10). `kid` is an opaque lookup string.

use serde_json::Value;
use sigil_core::Algorithm;

use super::{AlgorithmSet, Rejection, TokenProfile, strict_json};

/// The members of a header the verifier acts on.
#[derive(Debug, PartialEq, Eq)]
pub struct Header {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

pub fn parse(bytes: &[u8], allowed: &AlgorithmSet, profile: TokenProfile) -> Result<Header, Rejection> {
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
    let typ = match map.get("typ") {
        None => None,
        Some(Value::String(typ)) => Some(media_type(typ)),
        Some(_) => return Err(Rejection::BadType),
    };
    let accepted = match (profile, typ) {
        (TokenProfile::AccessToken, Some(typ)) => typ.eq_ignore_ascii_case("at+jwt"),
        (TokenProfile::AccessToken, None) => false,
        (TokenProfile::Jwt, Some(typ)) => typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("jwt"),
        (TokenProfile::Jwt, None) => true,
    };
    if !accepted {
        return Err(Rejection::BadType);
    }
    Ok(Header { alg, kid })
}

/// `typ` without its optional `application/` prefix (RFC 7515 section 4.1.9);
/// media types compare case-insensitively.
fn media_type(typ: &str) -> &str {
    match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> AlgorithmSet {
        AlgorithmSet::from_iter(Algorithm::ALL)
    }

    #[test]
    fn reads_alg_and_kid() {
        let h =
            parse(br#"{"alg":"ES256","kid":"k1","typ":"at+jwt"}"#, &all(), TokenProfile::AccessToken).expect("valid");
        assert_eq!(h, Header { alg: Algorithm::ES256, kid: Some("k1".into()) });
    }

    fn typ_accepted(typ: Option<&str>, profile: TokenProfile) -> bool {
        let header = match typ {
            Some(typ) => serde_json::json!({"alg": "ES256", "typ": typ}),
            None => serde_json::json!({"alg": "ES256"}),
        };
        match parse(header.to_string().as_bytes(), &all(), profile) {
            Ok(_) => true,
            Err(Rejection::BadType) => false,
            Err(other) => panic!("{typ:?}: {other}"),
        }
    }

    #[test]
    fn access_tokens_must_be_typed_at_jwt() {
        for ok in ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+Jwt"] {
            assert!(typ_accepted(Some(ok), TokenProfile::AccessToken), "{ok}");
        }
        for bad in [
            "JWT",
            "jwt",
            "application/jwt",
            "",
            "JOSE",
            "dpop+jwt",
            "application/",
            "at+jwt ",
            "xapplication/at+jwt",
            "é",
            "at%2Bjwt",
        ] {
            assert!(!typ_accepted(Some(bad), TokenProfile::AccessToken), "{bad}");
        }
        assert!(!typ_accepted(None, TokenProfile::AccessToken), "untyped");
        let numeric = parse(br#"{"alg":"ES256","typ":1}"#, &all(), TokenProfile::Jwt);
        assert_eq!(numeric, Err(Rejection::BadType));
    }

    #[test]
    fn the_jwt_profile_also_takes_jwt_and_untyped_tokens() {
        for ok in ["at+jwt", "JWT", "jwt", "application/jwt"] {
            assert!(typ_accepted(Some(ok), TokenProfile::Jwt), "{ok}");
        }
        assert!(typ_accepted(None, TokenProfile::Jwt));
        for bad in ["", "JOSE", "dpop+jwt", "application/json", "secevent+jwt"] {
            assert!(!typ_accepted(Some(bad), TokenProfile::Jwt), "{bad}");
        }
    }
}
