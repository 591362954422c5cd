//! JSON Web Keys (RFC 7517) for the public half of Sigil's keys: rendering,
//! RFC 7638 thumbprints (Sigil's key ids), and conversion to verifying keys.
//!
//! Parsing is strict where a lax parser would let an attacker choose the key:
//! every key must carry an `alg` that Sigil supports and that fits its `kty` and
//! curve, `use` (when present) must be `sig`, RSA moduli must be at least 2048
//! bits, and coordinates must have their curve's exact length.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::algorithm::{Algorithm, KeyFamily};

/// Base64url without padding, as JOSE uses everywhere.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Strict base64url decoding: no padding, no `+`/`/`, no stray trailing bits.
pub fn b64_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(text)
}

/// The public parameters of a key, tagged by `kty`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "kty")]
pub enum JwkParams {
    #[serde(rename = "RSA")]
    Rsa { n: String, e: String },
    #[serde(rename = "EC")]
    Ec { crv: String, x: String, y: String },
    #[serde(rename = "OKP")]
    Okp { crv: String, x: String },
}

/// A public signing key as published in a JWKS.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Jwk {
    #[serde(flatten)]
    pub params: JwkParams,
    pub kid: String,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    pub alg: Algorithm,
}

/// A JWK Set (RFC 7517 section 5).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwkError {
    #[error("JWKS is not a JSON object with a \"keys\" array: {0}")]
    NotAJwkSet(String),
    #[error("key {kid:?}: {reason}")]
    Unusable { kid: Option<String>, reason: String },
}

impl JwkError {
    fn unusable(kid: &str, reason: impl Into<String>) -> Self {
        JwkError::Unusable { kid: Some(kid.to_owned()), reason: reason.into() }
    }
}

/// A key ready to check signatures: the only form verifiers use.
#[derive(Clone)]
pub struct VerifyingKey {
    pub kid: String,
    pub alg: Algorithm,
    pub key: jsonwebtoken::DecodingKey,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

impl Jwk {
    /// A signing JWK whose `kid` is its own RFC 7638 thumbprint.
    pub fn new(alg: Algorithm, params: JwkParams) -> Self {
        let mut jwk = Jwk { params, kid: String::new(), use_: Some("sig".to_owned()), alg };
        jwk.kid = jwk.thumbprint();
        jwk
    }

    /// RFC 7638 thumbprint: SHA-256 over the required members in lexicographic
    /// order with no whitespace, base64url-encoded.
    pub fn thumbprint(&self) -> String {
        // The members are base64url or fixed names, so no JSON escaping is needed;
        // serde_json still writes them to be safe against odd input.
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let canonical = match &self.params {
            JwkParams::Rsa { n, e } => format!(r#"{{"e":{},"kty":"RSA","n":{}}}"#, q(e), q(n)),
            JwkParams::Ec { crv, x, y } => format!(r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#, q(crv), q(x), q(y)),
            JwkParams::Okp { crv, x } => format!(r#"{{"crv":{},"kty":"OKP","x":{}}}"#, q(crv), q(x)),
        };
        b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// Checks the key fits its algorithm and turns it into a verifying key.
    pub fn verifying_key(&self) -> Result<VerifyingKey, JwkError> {
        let kid = &self.kid;
        if let Some(u) = &self.use_
            && u != "sig"
        {
            return Err(JwkError::unusable(kid, format!("\"use\" is {u:?}, not \"sig\"")));
        }
        let decode = |name: &str, v: &str| {
            b64_decode(v).map_err(|_| JwkError::unusable(kid, format!("\"{name}\" is not strict base64url")))
        };
        let key = match (&self.params, self.alg.family()) {
            (JwkParams::Rsa { n, e }, KeyFamily::Rsa) => {
                let n = decode("n", n)?;
                let e = decode("e", e)?;
                let bits = n.len() * 8;
                if n.first() == Some(&0) || !(2048..=8192).contains(&bits) {
                    return Err(JwkError::unusable(kid, format!("RSA modulus of {bits} bits (2048 to 8192 allowed)")));
                }
                if e.is_empty() || e.len() > 4 || e.first() == Some(&0) || e.last().is_some_and(|b| b % 2 == 0) {
                    return Err(JwkError::unusable(kid, "RSA exponent is not a small odd number"));
                }
                jsonwebtoken::DecodingKey::from_rsa_raw_components(&n, &e)
            }
            (JwkParams::Ec { crv, x, y }, family @ (KeyFamily::EcP256 | KeyFamily::EcP384)) => {
                let (want_crv, len) = if family == KeyFamily::EcP256 { ("P-256", 32) } else { ("P-384", 48) };
                if crv != want_crv {
                    return Err(JwkError::unusable(kid, format!("curve {crv} does not fit {}", self.alg)));
                }
                if decode("x", x)?.len() != len || decode("y", y)?.len() != len {
                    return Err(JwkError::unusable(kid, format!("{crv} coordinates must be {len} bytes")));
                }
                jsonwebtoken::DecodingKey::from_ec_components(x, y)
                    .map_err(|e| JwkError::unusable(kid, e.to_string()))?
            }
            (JwkParams::Okp { crv, x }, KeyFamily::Ed25519) => {
                if crv != "Ed25519" {
                    return Err(JwkError::unusable(kid, format!("curve {crv} does not fit EdDSA")));
                }
                if decode("x", x)?.len() != 32 {
                    return Err(JwkError::unusable(kid, "Ed25519 public key must be 32 bytes"));
                }
                jsonwebtoken::DecodingKey::from_ed_components(x).map_err(|e| JwkError::unusable(kid, e.to_string()))?
            }
            _ => return Err(JwkError::unusable(kid, format!("key type does not fit {}", self.alg))),
        };
        Ok(VerifyingKey { kid: kid.clone(), alg: self.alg, key })
    }
}

/// A parsed JWKS: the usable keys, and why each other key was left out.
#[derive(Debug, Default)]
pub struct ParsedJwks {
    pub keys: Vec<VerifyingKey>,
    pub skipped: Vec<JwkError>,
}

impl JwkSet {
    /// Renders the set deterministically: keys sorted by `kid`, so the same
    /// keys always give the same bytes (and an unchanged ConfigMap no write).
    pub fn to_json(&self) -> String {
        let mut keys = self.keys.clone();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        let mut out = serde_json::to_string_pretty(&JwkSet { keys }).unwrap_or_default();
        out.push('\n');
        out
    }

    /// Parses a JWKS from an untrusted source. One bad key does not poison the
    /// others: it is skipped and reported. Duplicate `kid`s are all skipped,
    /// since a verifier could not tell which one a token means.
    pub fn parse(bytes: &[u8]) -> Result<ParsedJwks, JwkError> {
        #[derive(Deserialize)]
        struct Raw {
            keys: Vec<serde_json::Value>,
        }
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| JwkError::NotAJwkSet(e.to_string()))?;
        let mut parsed = ParsedJwks::default();
        for value in raw.keys {
            let kid = value.get("kid").and_then(|k| k.as_str()).map(str::to_owned);
            match serde_json::from_value::<Jwk>(value) {
                Ok(jwk) => match jwk.verifying_key() {
                    Ok(key) => parsed.keys.push(key),
                    Err(e) => parsed.skipped.push(e),
                },
                Err(e) => parsed.skipped.push(JwkError::Unusable { kid, reason: e.to_string() }),
            }
        }
        let mut kids: Vec<&str> = parsed.keys.iter().map(|k| k.kid.as_str()).collect();
        kids.sort_unstable();
        let dups: Vec<String> = kids.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0].to_owned()).collect();
        if !dups.is_empty() {
            parsed.keys.retain(|k| !dups.contains(&k.kid));
            for kid in dups {
                parsed.skipped.push(JwkError::unusable(&kid, "kid appears more than once"));
            }
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7638 section 3.1: the example RSA key and its thumbprint.
    #[test]
    fn rfc7638_example_thumbprint() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let jwk = Jwk {
            params: JwkParams::Rsa { n: n.to_owned(), e: "AQAB".to_owned() },
            kid: "2011-04-29".to_owned(),
            use_: None,
            alg: Algorithm::RS256,
        };
        assert_eq!(jwk.thumbprint(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
        assert!(jwk.verifying_key().is_ok());
    }

    /// RFC 8037 appendix A.1 and A.3: the Ed25519 example key's thumbprint.
    #[test]
    fn rfc8037_example_thumbprint() {
        let jwk = Jwk {
            params: JwkParams::Okp { crv: "Ed25519".into(), x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into() },
            kid: String::new(),
            use_: None,
            alg: Algorithm::EdDSA,
        };
        assert_eq!(jwk.thumbprint(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        assert!(jwk.verifying_key().is_ok());
    }

    /// RFC 8037 appendix A.4/A.5: the example signature verifies with the
    /// example public key through our JWK conversion.
    #[test]
    fn rfc8037_example_signature_verifies() {
        let jwk = Jwk::new(
            Algorithm::EdDSA,
            JwkParams::Okp { crv: "Ed25519".into(), x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into() },
        );
        let key = jwk.verifying_key().expect("usable");
        let message = b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
        let signature = "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
        assert!(
            jsonwebtoken::crypto::verify(signature, message, &key.key, jsonwebtoken::Algorithm::EdDSA).expect("verify")
        );
    }

    #[test]
    fn serializes_with_standard_member_names() {
        let jwk = Jwk::new(Algorithm::ES256, JwkParams::Ec { crv: "P-256".into(), x: b64(&[1; 32]), y: b64(&[2; 32]) });
        let v = serde_json::to_value(&jwk).expect("serialize");
        assert_eq!(v["kty"], "EC");
        assert_eq!(v["use"], "sig");
        assert_eq!(v["alg"], "ES256");
        assert_eq!(v["crv"], "P-256");
        let back: Jwk = serde_json::from_value(v).expect("deserialize");
        assert_eq!(back, jwk);
    }

    #[test]
    fn rendering_is_deterministic() {
        let a = crate::PrivateKey::generate(Algorithm::ES256, None).expect("key").public_jwk().clone();
        let b = crate::PrivateKey::generate(Algorithm::EdDSA, None).expect("key").public_jwk().clone();
        let one = JwkSet { keys: vec![a.clone(), b.clone()] }.to_json();
        let two = JwkSet { keys: vec![b, a] }.to_json();
        assert_eq!(one, two);
        let parsed = JwkSet::parse(one.as_bytes()).expect("parse");
        assert_eq!(parsed.keys.len(), 2);
        assert!(parsed.skipped.is_empty());
    }

    #[test]
    fn mismatched_or_weak_keys_are_skipped_not_fatal() {
        let good = crate::PrivateKey::generate(Algorithm::ES256, None).expect("key").public_jwk().clone();
        let mut wrong_curve = good.clone();
        wrong_curve.alg = Algorithm::ES384;
        wrong_curve.kid = "wrong-curve".into();
        let mut enc = good.clone();
        enc.use_ = Some("enc".into());
        enc.kid = "enc".into();
        let weak = Jwk {
            params: JwkParams::Rsa { n: b64(&[0xc1; 128]), e: "AQAB".into() },
            kid: "weak".into(),
            use_: None,
            alg: Algorithm::RS256,
        };
        let rsa_as_ec = Jwk { alg: Algorithm::ES256, kid: "rsa-as-ec".into(), ..weak.clone() };
        let json = serde_json::json!({"keys": [
            good, wrong_curve, enc, weak, rsa_as_ec,
            {"kty": "oct", "kid": "hmac", "alg": "HS256", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "no-alg", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "EC", "kid": "none", "alg": "none", "crv": "P-256", "x": "AA", "y": "AA"},
        ]});
        let parsed = JwkSet::parse(json.to_string().as_bytes()).expect("parse");
        assert_eq!(parsed.keys.len(), 1);
        let skipped: Vec<Option<String>> = parsed
            .skipped
            .iter()
            .map(|e| match e {
                JwkError::Unusable { kid, .. } => kid.clone(),
                other => panic!("{other}"),
            })
            .collect();
        for kid in ["wrong-curve", "enc", "weak", "rsa-as-ec", "hmac", "no-alg", "none"] {
            assert!(skipped.contains(&Some(kid.to_owned())), "{kid} must be skipped: {skipped:?}");
        }
    }

    #[test]
    fn duplicate_kids_are_refused() {
        let good = crate::PrivateKey::generate(Algorithm::EdDSA, None).expect("key").public_jwk().clone();
        let json = serde_json::json!({"keys": [good.clone(), good]});
        let parsed = JwkSet::parse(json.to_string().as_bytes()).expect("parse");
        assert!(parsed.keys.is_empty());
        assert_eq!(parsed.skipped.len(), 1);
    }

    #[test]
    fn not_a_jwks() {
        for bad in [&b"[]"[..], b"{}", b"{\"keys\": 1}", b"nope"] {
            assert!(matches!(JwkSet::parse(bad), Err(JwkError::NotAJwkSet(_))));
        }
    }

    #[test]
    fn padded_or_standard_base64_is_refused() {
        let mut jwk = crate::PrivateKey::generate(Algorithm::EdDSA, None).expect("key").public_jwk().clone();
        if let JwkParams::Okp { x, .. } = &mut jwk.params {
            x.push('=');
        }
        assert!(jwk.verifying_key().is_err());
    }
}
