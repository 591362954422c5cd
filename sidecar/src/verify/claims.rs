//! Registered claims (RFC 7519 section 4.1) checked against the policy, and
//! the claims the proxy forwards. Every claim Sigil reads must have its
//! registered type: a string `exp` or a numeric `iss` is a rejection, not a
//! coercion.

use serde_json::{Map, Value};

use super::{Policy, Rejection, TokenProfile};

/// What the verified payload says, in the types the proxy needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub exp: i64,
    pub sub: Option<String>,
    pub scope: Option<String>,
    pub client_id: Option<String>,
}

pub fn check(payload: &[u8], policy: &Policy, now: i64) -> Result<Claims, Rejection> {
    let map = super::strict_json::parse_object(payload).map_err(Rejection::BadClaims)?;
    let exp = numeric(&map, "exp")?.ok_or(Rejection::BadClaims("exp is missing"))?;
    let nbf = numeric(&map, "nbf")?;
    let iat = numeric(&map, "iat")?;
    let leeway = policy.leeway_secs;
    if !still_valid(exp, now, leeway) {
        return Err(Rejection::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(Rejection::NotYetValid);
    }
    if iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
        return Err(Rejection::IssuedInFuture);
    }
    if let Some(max) = policy.max_lifetime_secs {
        // Without `iat` the remaining lifetime is all we can bound.
        let lifetime = exp.saturating_sub(iat.unwrap_or(now));
        if lifetime > max {
            return Err(Rejection::LifetimeTooLong);
        }
    }
    match map.get("iss") {
        Some(Value::String(iss)) if *iss == policy.issuer => {}
        Some(Value::String(_)) | None => return Err(Rejection::Issuer),
        Some(_) => return Err(Rejection::BadClaims("iss is not a string")),
    }
    let audience_ok = match map.get("aud") {
        Some(Value::String(aud)) => policy.audiences.iter().any(|a| a == aud),
        Some(Value::Array(auds)) => {
            let mut any = false;
            for aud in auds {
                let Value::String(aud) = aud else { return Err(Rejection::BadClaims("aud holds a non-string")) };
                any |= policy.audiences.iter().any(|a| a == aud);
            }
            any
        }
        None => false,
        Some(_) => return Err(Rejection::BadClaims("aud is not a string or array")),
    };
    if !audience_ok {
        return Err(Rejection::Audience);
    }
    // Typed but unchecked: a wrongly typed `jti` still means a broken issuer.
    let jti = string(&map, "jti")?;
    let claims =
        Claims { exp, sub: string(&map, "sub")?, scope: string(&map, "scope")?, client_id: string(&map, "client_id")? };
    if policy.profile == TokenProfile::AccessToken {
        // RFC 9068 section 2.2: required in every JWT access token.
        let missing = [
            (claims.sub.is_none(), "sub is missing"),
            (iat.is_none(), "iat is missing"),
            (jti.is_none(), "jti is missing"),
            (claims.client_id.is_none(), "client_id is missing"),
        ];
        if let Some((_, what)) = missing.into_iter().find(|(absent, _)| *absent) {
            return Err(Rejection::BadClaims(what));
        }
    }
    Ok(claims)
}

/// Whether a token expiring at `exp` may still be used at `now`; the token
/// cache asks the same question on every hit.
pub fn still_valid(exp: i64, now: i64, leeway: i64) -> bool {
    now < exp.saturating_add(leeway)
}

/// A NumericDate (RFC 7519 section 2): a JSON number of seconds, possibly
/// fractional, truncated to whole seconds.
fn numeric(map: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, Rejection> {
    match map.get(name) {
        None => Ok(None),
        // `as` saturates, so absurd values become i64::MIN/MAX and fail or pass
        // the comparisons as their sign says.
        Some(Value::Number(n)) => Ok(n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))),
        Some(_) => Err(Rejection::BadClaims(match name {
            "exp" => "exp is not a number",
            "nbf" => "nbf is not a number",
            _ => "iat is not a number",
        })),
    }
}

fn string(map: &Map<String, Value>, name: &'static str) -> Result<Option<String>, Rejection> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Rejection::BadClaims(match name {
            "sub" => "sub is not a string",
            "scope" => "scope is not a string",
            "client_id" => "client_id is not a string",
            _ => "jti is not a string",
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::AlgorithmSet;

    const NOW: i64 = 1_800_000_000;

    fn policy() -> Policy {
        Policy {
            issuer: "https://issuer.example".into(),
            audiences: vec!["orders".into(), "billing".into()],
            leeway_secs: 30,
            max_lifetime_secs: Some(3600),
            algorithms: AlgorithmSet::from_iter(sigil_core::Algorithm::ALL),
            max_token_bytes: 8192,
            profile: TokenProfile::AccessToken,
        }
    }

    fn check_json(v: serde_json::Value) -> Result<Claims, Rejection> {
        check(v.to_string().as_bytes(), &policy(), NOW)
    }

    fn base() -> serde_json::Value {
        serde_json::json!({"iss": "https://issuer.example", "aud": "orders", "exp": NOW + 60, "iat": NOW, "sub": "alice", "scope": "read write", "client_id": "web", "jti": "j1"})
    }

    fn with(name: &str, value: serde_json::Value) -> serde_json::Value {
        let mut v = base();
        v[name] = value;
        v
    }

    fn without(name: &str) -> serde_json::Value {
        let mut v = base();
        v.as_object_mut().expect("object").remove(name);
        v
    }

    #[test]
    fn accepts_and_extracts() {
        let c = check_json(base()).expect("valid");
        assert_eq!(c.exp, NOW + 60);
        assert_eq!(c.sub.as_deref(), Some("alice"));
        assert_eq!(c.scope.as_deref(), Some("read write"));
        assert_eq!(c.client_id.as_deref(), Some("web"));
        assert!(check_json(with("exp", serde_json::json!((NOW + 60) as f64 + 0.5))).is_ok());
    }

    #[test]
    fn exp_required_numeric_and_in_the_future_within_leeway() {
        assert_eq!(check_json(without("exp")), Err(Rejection::BadClaims("exp is missing")));
        assert_eq!(
            check_json(with("exp", serde_json::json!((NOW + 60).to_string()))),
            Err(Rejection::BadClaims("exp is not a number"))
        );
        assert_eq!(check_json(with("exp", serde_json::json!(NOW - 31))), Err(Rejection::Expired));
        assert!(check_json(with("exp", serde_json::json!(NOW - 29))).is_ok(), "inside leeway");
    }

    #[test]
    fn nbf_and_iat_in_the_future_beyond_leeway() {
        assert_eq!(check_json(with("nbf", serde_json::json!(NOW + 31))), Err(Rejection::NotYetValid));
        assert!(check_json(with("nbf", serde_json::json!(NOW + 29))).is_ok());
        assert_eq!(check_json(with("iat", serde_json::json!(NOW + 31))), Err(Rejection::IssuedInFuture));
        assert!(check_json(with("iat", serde_json::json!(NOW + 29))).is_ok());
        assert_eq!(check_json(with("nbf", serde_json::json!("0"))), Err(Rejection::BadClaims("nbf is not a number")));
    }

    #[test]
    fn issuer_is_exact_and_case_sensitive() {
        for bad in ["https://ISSUER.example", "https://issuer.example/", " https://issuer.example", ""] {
            assert_eq!(check_json(with("iss", serde_json::json!(bad))), Err(Rejection::Issuer), "{bad}");
        }
        assert_eq!(check_json(without("iss")), Err(Rejection::Issuer));
        assert_eq!(
            check_json(with("iss", serde_json::json!(["https://issuer.example"]))),
            Err(Rejection::BadClaims("iss is not a string"))
        );
    }

    #[test]
    fn audience_string_or_array_exact() {
        assert!(check_json(with("aud", serde_json::json!(["other", "billing"]))).is_ok());
        for bad in [
            serde_json::json!("Orders"),
            serde_json::json!("orders "),
            serde_json::json!([]),
            serde_json::json!(["other"]),
        ] {
            assert_eq!(check_json(with("aud", bad.clone())), Err(Rejection::Audience), "{bad}");
        }
        assert_eq!(check_json(without("aud")), Err(Rejection::Audience));
        assert!(matches!(check_json(with("aud", serde_json::json!(["orders", 1]))), Err(Rejection::BadClaims(_))));
        assert!(matches!(check_json(with("aud", serde_json::json!({"orders": true}))), Err(Rejection::BadClaims(_))));
    }

    #[test]
    fn lifetime_cap() {
        let mut v = base();
        v["iat"] = serde_json::json!(NOW - 10);
        v["exp"] = serde_json::json!(NOW - 10 + 3601);
        assert_eq!(check_json(v), Err(Rejection::LifetimeTooLong));
        assert!(check_json(with("exp", serde_json::json!(NOW + 3600))).is_ok(), "exactly at the cap");
        let mut no_iat = without("iat");
        no_iat["exp"] = serde_json::json!(NOW + 7200);
        assert_eq!(check_json(no_iat), Err(Rejection::LifetimeTooLong));
    }

    #[test]
    fn wrongly_typed_claims() {
        for (name, value) in [
            ("sub", serde_json::json!(42)),
            ("scope", serde_json::json!(["read"])),
            ("client_id", serde_json::json!(null)),
            ("jti", serde_json::json!({})),
            ("iat", serde_json::json!(true)),
        ] {
            assert!(matches!(check_json(with(name, value)), Err(Rejection::BadClaims(_))), "{name}");
        }
    }

    #[test]
    fn payload_must_be_a_strict_object() {
        assert!(matches!(check(b"[1]", &policy(), NOW), Err(Rejection::BadClaims(_))));
        let dup =
            format!(r#"{{"iss":"https://issuer.example","aud":"orders","exp":{},"exp":{}}}"#, NOW + 60, NOW + 99999);
        assert_eq!(check(dup.as_bytes(), &policy(), NOW), Err(Rejection::BadClaims("duplicate member name")));
    }

    #[test]
    fn access_tokens_need_the_rfc9068_claims_and_plain_jwts_do_not() {
        for name in ["sub", "iat", "jti", "client_id"] {
            let claims = without(name);
            let expected = format!("{name} is missing");
            assert_eq!(check_json(claims.clone()), Err(Rejection::BadClaims(leak(expected))), "{name}");
            let jwt = Policy { profile: TokenProfile::Jwt, max_lifetime_secs: None, ..policy() };
            assert!(check(claims.to_string().as_bytes(), &jwt, NOW).is_ok(), "{name}");
        }
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }
}
