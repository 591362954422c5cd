//! RFC 8725 checks, one case per item: every token is built with real keys and
//! would verify if the check under test were dropped.

mod support;

use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};
use sigil_core::jwk::b64;
use sigil_core::{Algorithm, PrivateKey};
use sigil_sidecar::keys::KeySet;
use sigil_sidecar::verify::{AlgorithmSet, Policy, Rejection, TokenProfile, verify};
use support::*;

fn check(token: &str, keys: &KeySet) -> Result<(), Rejection> {
    verify(token, keys, &policy(), now()).map(|_| ())
}

fn es256() -> &'static PrivateKey {
    key(Algorithm::ES256)
}

fn rs256() -> &'static PrivateKey {
    key(Algorithm::RS256)
}

#[test]
fn every_algorithm_verifies_and_exposes_claims() {
    for alg in Algorithm::ALL {
        let k = key(alg);
        let other = if alg == Algorithm::ES256 { key(Algorithm::EdDSA) } else { es256() };
        let t = token(k);
        let v = verify(&t, &keyset(&[k, other]), &policy(), now()).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(v.key.kid, k.kid());
        assert_eq!(v.claims.sub.as_deref(), Some("alice"));
        assert_eq!(v.claims.scope.as_deref(), Some("orders:read orders:write"));
        assert_eq!(v.claims.client_id.as_deref(), Some("web"));
        // The forwarded payload is the signed segment, byte for byte.
        assert_eq!(v.payload_b64, t.split('.').nth(1).expect("payload"));
    }
}

// --- Compact serialization ----------------------------------------------------

#[test]
fn strict_base64url_no_standard_alphabet_padding_or_whitespace() {
    let keys = keyset(&[es256()]);
    let good = token(es256());
    assert_eq!(check(&good, &keys), Ok(()));
    let (input, sig) = good.rsplit_once('.').expect("three parts");
    let sig_bytes = sigil_core::jwk::b64_decode(sig).expect("b64");
    let std_sig = base64_std(&sig_bytes);
    let mut hostile = vec![
        format!("{input}.{sig}="),
        format!("{input}.{sig}=="),
        format!("{input}.{}", sig.replace('-', "+").replace('_', "/")),
        format!("{input}.{std_sig}"),
        format!(" {good}"),
        format!("{good} "),
        format!("{good}\n"),
        good.replacen('.', ". ", 1),
        good.replacen('.', ".\t", 1),
    ];
    // A segment whose unused trailing bits are not zero decodes to the same
    // bytes in lax decoders: a second spelling of one signature.
    let last = sig.chars().last().expect("non-empty");
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let index = alphabet.find(last).expect("b64 char");
    hostile.push(format!("{input}.{}{}", &sig[..sig.len() - 1], &alphabet[index + 1..index + 2]));
    for t in hostile {
        if t == good {
            continue;
        }
        assert!(matches!(check(&t, &keys), Err(Rejection::Malformed(_))), "{t:?}: {:?}", check(&t, &keys));
    }
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn exactly_three_segments() {
    let keys = keyset(&[es256()]);
    let good = token(es256());
    let (h, rest) = good.split_once('.').expect("dot");
    let (p, s) = rest.split_once('.').expect("dot");
    for t in
        [format!("{h}.{p}"), format!("{h}.{p}.{s}.{s}"), format!("{h}.{p}.{s}."), format!("{h}..{p}.{s}"), h.to_owned()]
    {
        assert!(matches!(check(&t, &keys), Err(Rejection::Malformed(_))), "{t}");
    }
}

#[test]
fn header_and_payload_must_be_json_objects() {
    let k = es256();
    let keys = keyset(&[k]);
    let claims = claims().to_string();
    let header = header(k).to_string();
    for bad in ["[]", "\"ES256\"", "null", "1", "{\"alg\":\"ES256\"", "not json"] {
        assert!(matches!(check(&sign_raw(k, bad.as_bytes(), claims.as_bytes()), &keys), Err(Rejection::BadHeader(_))));
        assert!(matches!(check(&sign_raw(k, header.as_bytes(), bad.as_bytes()), &keys), Err(Rejection::BadClaims(_))));
    }
}

#[test]
fn duplicate_member_names_are_rejected() {
    let k = es256();
    let keys = keyset(&[k]);
    let dup_header = format!(r#"{{"alg":"ES256","kid":"{}","alg":"ES256"}}"#, k.kid());
    assert_eq!(
        check(&sign_raw(k, dup_header.as_bytes(), claims().to_string().as_bytes()), &keys),
        Err(Rejection::BadHeader("duplicate member name"))
    );
    let c = claims();
    // Last-wins parsers would see the far-future exp and the attacker's audience.
    let dup_claims =
        format!(r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","exp":{},"sub":"alice","sub":"admin"}}"#, c["exp"]);
    assert_eq!(
        check(&sign_raw(k, header(k).to_string().as_bytes(), dup_claims.as_bytes()), &keys),
        Err(Rejection::BadClaims("duplicate member name"))
    );
}

#[test]
fn size_limit_applies_before_decoding() {
    let k = es256();
    let keys = keyset(&[k]);
    let mut c = claims();
    c["pad"] = json!("x".repeat(9000));
    let big = sign(k, &header(k), &c);
    assert_eq!(check(&big, &keys), Err(Rejection::TooLarge));
    let mut lenient = policy();
    lenient.max_token_bytes = 64 * 1024;
    assert!(verify(&big, &keys, &lenient, now()).is_ok(), "only the limit refused it");
}

// --- Algorithms ------------------------------------------------------------------

#[test]
fn algorithm_outside_the_allowlist() {
    let k = es256();
    let keys = keyset(&[k]);
    let mut only_rsa = policy();
    only_rsa.algorithms = AlgorithmSet::from_iter([Algorithm::RS256]);
    assert_eq!(verify(&token(k), &keys, &only_rsa, now()).map(|_| ()), Err(Rejection::AlgorithmNotAllowed));
}

#[test]
fn alg_must_equal_the_keys_alg() {
    // The same RSA key material, signing with PS256 while its JWK says RS256.
    let rsa = rs256();
    let pss = PrivateKey::from_pkcs8_pem(Algorithm::PS256, rsa.to_pkcs8_pem().as_bytes()).expect("same key as PS256");
    let keys = keyset(&[rsa]);
    let t = sign(&pss, &json!({"typ": "at+jwt", "alg": "PS256", "kid": rsa.kid()}), &claims());
    assert_eq!(check(&t, &keys), Err(Rejection::AlgorithmMismatch));
    // Control: with a JWK that says PS256 the very same token verifies.
    assert_eq!(
        check(&sign(&pss, &json!({"typ": "at+jwt", "alg": "PS256", "kid": pss.kid()}), &claims()), &keyset(&[&pss])),
        Ok(())
    );
}

#[test]
fn key_type_must_fit_the_algorithm() {
    // An EC-signed token pointing at an RSA key's kid.
    let (ec, rsa) = (es256(), rs256());
    let keys = keyset(&[ec, rsa]);
    let t = sign(ec, &json!({"typ": "at+jwt", "alg": "ES256", "kid": rsa.kid()}), &claims());
    assert_eq!(check(&t, &keys), Err(Rejection::AlgorithmMismatch));
    // A JWK claiming ES256 over RSA material never becomes a key.
    let mut jwk = serde_json::to_value(rsa.public_jwk()).expect("jwk");
    jwk["alg"] = json!("ES256");
    let loaded = sigil_sidecar::keys::Loaded::parse(json!({"keys": [jwk]}).to_string().as_bytes()).expect("jwks");
    assert!(loaded.keys.is_empty() && loaded.skipped.len() == 1);
}

#[test]
fn none_in_any_spelling() {
    let k = es256();
    let keys = keyset(&[k]);
    let payload = b64(claims().to_string().as_bytes());
    for alg in ["none", "None", "NONE", "nOnE", " none"] {
        let h = b64(json!({"typ": "at+jwt", "alg": alg, "kid": k.kid()}).to_string().as_bytes());
        assert!(check(&format!("{h}.{payload}."), &keys).is_err(), "{alg}");
        // Even with a real signature over the input.
        let t = sign(k, &json!({"typ": "at+jwt", "alg": alg, "kid": k.kid()}), &claims());
        assert_eq!(check(&t, &keys), Err(Rejection::AlgorithmNotAllowed), "{alg}");
    }
}

#[test]
fn empty_signature() {
    let k = es256();
    let good = token(k);
    let (input, _) = good.rsplit_once('.').expect("dot");
    assert_eq!(check(&format!("{input}."), &keyset(&[k])), Err(Rejection::BadSignature("empty signature")));
}

#[test]
fn hs256_signed_with_the_public_key_as_hmac_secret() {
    let rsa = rs256();
    let keys = keyset(&[rsa]);
    let jwks = jwks_json(&[rsa]);
    let jwk_json = serde_json::to_string(rsa.public_jwk()).expect("jwk");
    for secret in [jwks.as_bytes(), jwk_json.as_bytes(), rsa.kid().as_bytes()] {
        for alg in ["HS256", "HS384", "HS512"] {
            let h = b64(json!({"typ": "at+jwt", "alg": alg, "kid": rsa.kid()}).to_string().as_bytes());
            let p = b64(claims().to_string().as_bytes());
            let input = format!("{h}.{p}");
            let hmac_alg = match alg {
                "HS256" => aws_lc_rs::hmac::HMAC_SHA256,
                "HS384" => aws_lc_rs::hmac::HMAC_SHA384,
                _ => aws_lc_rs::hmac::HMAC_SHA512,
            };
            let tag = aws_lc_rs::hmac::sign(&aws_lc_rs::hmac::Key::new(hmac_alg, secret), input.as_bytes());
            let t = format!("{input}.{}", b64(tag.as_ref()));
            assert_eq!(check(&t, &keys), Err(Rejection::AlgorithmNotAllowed));
        }
    }
}

fn ecdsa_token_with_signature(k: &PrivateKey, sig_bytes: &[u8]) -> String {
    let good = token(k);
    let (input, _) = good.rsplit_once('.').expect("dot");
    format!("{input}.{}", b64(sig_bytes))
}

#[test]
fn ecdsa_r_or_s_zero_or_out_of_range() {
    for (alg, n_hex) in [
        (Algorithm::ES256, "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551"),
        (
            Algorithm::ES384,
            "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
        ),
    ] {
        let k = key(alg);
        let keys = keyset(&[k]);
        let n: Vec<u8> =
            (0..n_hex.len()).step_by(2).map(|i| u8::from_str_radix(&n_hex[i..i + 2], 16).expect("hex")).collect();
        let len = n.len();
        let good = token(k);
        let real = sigil_core::jwk::b64_decode(good.rsplit_once('.').expect("dot").1).expect("b64");
        let (r, s) = real.split_at(len);
        let zeros = vec![0u8; len];
        let ones = vec![0xffu8; len];
        for (r, s) in
            [(&zeros[..], &zeros[..]), (r, &zeros[..]), (&zeros[..], s), (&n[..], s), (r, &n[..]), (&ones[..], s)]
        {
            let t = ecdsa_token_with_signature(k, &[r, s].concat());
            assert_eq!(check(&t, &keys), Err(Rejection::BadSignature("ECDSA r or s out of range")), "{alg}");
        }
        // r + n and s + n are the same signature to code that reduces mod n.
        assert_eq!(check(&good, &keys), Ok(()));
    }
}

#[test]
fn der_encoded_ecdsa_signature() {
    let k = es256();
    let keys = keyset(&[k]);
    let pem = k.to_pkcs8_pem();
    let der = pem::parse(pem.as_bytes()).expect("pem");
    let pair = EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, der.contents()).expect("pair");
    let good = token(k);
    let (input, _) = good.rsplit_once('.').expect("dot");
    let der_sig = pair.sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes()).expect("sign");
    // The DER signature is valid for this key and message, in the wrong encoding.
    sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_ASN1, pair.public_key().as_ref())
        .verify(input.as_bytes(), der_sig.as_ref())
        .expect("valid DER signature");
    let t = format!("{input}.{}", b64(der_sig.as_ref()));
    assert_eq!(check(&t, &keys), Err(Rejection::BadSignature("ECDSA signature is not fixed-size r||s")));
}

// --- Keys only from the configured JWKS -------------------------------------------

#[test]
fn keys_named_in_the_header_are_ignored() {
    let trusted = es256();
    let attacker = PrivateKey::generate(Algorithm::ES256, None).expect("keygen");
    let keys = keyset(&[trusted]);
    let attacker_jwk = serde_json::to_value(attacker.public_jwk()).expect("jwk");
    let x5c = "MIIBszCCAVmgAwIBAgIUWhatever";
    for extra in [
        json!({"jwk": attacker_jwk}),
        json!({"jku": "http://127.0.0.1:1/jwks.json"}),
        json!({"x5u": "http://127.0.0.1:1/cert.pem"}),
        json!({"x5c": [x5c]}),
    ] {
        let mut with_kid = json!({"typ": "at+jwt", "alg": "ES256", "kid": attacker.kid()});
        let mut no_kid = json!({"typ": "at+jwt", "alg": "ES256"});
        for (name, value) in extra.as_object().expect("object") {
            with_kid[name] = value.clone();
            no_kid[name] = value.clone();
        }
        assert_eq!(check(&sign(&attacker, &with_kid, &claims()), &keys), Err(Rejection::UnknownKey));
        // Without kid the only trusted key is used, and the attacker's signature fails.
        assert!(matches!(check(&sign(&attacker, &no_kid, &claims()), &keys), Err(Rejection::BadSignature(_))));
    }
}

#[test]
fn kid_is_opaque() {
    let k = es256();
    let keys = keyset(&[k]);
    for kid in
        ["../../../../etc/passwd", "/dev/zero", "%2e%2e%2f", &format!("{}/../{}", k.kid(), k.kid()), &"A".repeat(4000)]
    {
        assert_eq!(
            check(&sign(k, &json!({"typ": "at+jwt", "alg": "ES256", "kid": kid}), &claims()), &keys),
            Err(Rejection::UnknownKey),
            "{kid}"
        );
    }
    for kid in [json!(1), json!(null), json!([k.kid()]), json!({"kid": k.kid()}), json!(true)] {
        assert_eq!(
            check(&sign(k, &json!({"typ": "at+jwt", "alg": "ES256", "kid": kid}), &claims()), &keys),
            Err(Rejection::BadHeader("kid is not a string"))
        );
    }
}

#[test]
fn missing_kid_with_several_keys() {
    let (a, b) = (es256(), key(Algorithm::EdDSA));
    let t = sign(a, &json!({"typ": "at+jwt", "alg": "ES256"}), &claims());
    assert_eq!(check(&t, &keyset(&[a, b])), Err(Rejection::KidRequired));
    assert_eq!(check(&t, &keyset(&[a])), Ok(()), "one key: no ambiguity");
}

#[test]
fn unknown_crit_entries() {
    let k = es256();
    let keys = keyset(&[k]);
    for crit in [json!(["exp"]), json!(["b64"]), json!([]), json!("b64")] {
        let mut h = header(k);
        h["crit"] = crit;
        h["b64"] = json!(false);
        h["exp"] = json!(0);
        assert_eq!(check(&sign(k, &h, &claims()), &keys), Err(Rejection::UnknownCrit));
    }
}

#[test]
fn removed_key_stops_verifying() {
    let (a, b) = (es256(), key(Algorithm::EdDSA));
    let t = token(a);
    assert_eq!(check(&t, &keyset(&[a, b])), Ok(()));
    assert_eq!(check(&t, &keyset(&[b])), Err(Rejection::UnknownKey));
}

// --- Claims and typ ------------------------------------------------------------------

fn with_claim(name: &str, value: Value) -> Value {
    let mut c = claims();
    if value.is_null() {
        c.as_object_mut().expect("object").remove(name);
    } else {
        c[name] = value;
    }
    c
}

#[test]
fn exp_is_required_numeric_and_unexpired() {
    let k = es256();
    let keys = keyset(&[k]);
    let h = header(k);
    let exp = now() + 300;
    assert_eq!(
        check(&sign(k, &h, &with_claim("exp", Value::Null)), &keys),
        Err(Rejection::BadClaims("exp is missing"))
    );
    assert_eq!(
        check(&sign(k, &h, &with_claim("exp", json!(exp.to_string()))), &keys),
        Err(Rejection::BadClaims("exp is not a number"))
    );
    assert_eq!(check(&sign(k, &h, &with_claim("exp", json!(now() - 60))), &keys), Err(Rejection::Expired));
}

#[test]
fn nbf_and_iat_in_the_future() {
    let k = es256();
    let keys = keyset(&[k]);
    let h = header(k);
    assert_eq!(check(&sign(k, &h, &with_claim("nbf", json!(now() + 120))), &keys), Err(Rejection::NotYetValid));
    assert_eq!(check(&sign(k, &h, &with_claim("iat", json!(now() + 120))), &keys), Err(Rejection::IssuedInFuture));
    assert_eq!(check(&sign(k, &h, &with_claim("nbf", json!(now() + 10))), &keys), Ok(()), "within leeway");
}

#[test]
fn max_token_lifetime() {
    let k = es256();
    let keys = keyset(&[k]);
    let mut capped = policy();
    capped.max_lifetime_secs = Some(600);
    let long = sign(k, &header(k), &with_claim("exp", json!(now() + 3600)));
    assert_eq!(verify(&long, &keys, &capped, now()).map(|_| ()), Err(Rejection::LifetimeTooLong));
    assert!(verify(&long, &keys, &policy(), now()).is_ok());
}

#[test]
fn issuer_exact_and_case_sensitive() {
    let k = es256();
    let keys = keyset(&[k]);
    for iss in [ISSUER.to_uppercase(), format!("{ISSUER}/"), "https://evil.test".into()] {
        assert_eq!(check(&sign(k, &header(k), &with_claim("iss", json!(iss))), &keys), Err(Rejection::Issuer));
    }
}

#[test]
fn audience_string_or_array() {
    let k = es256();
    let keys = keyset(&[k]);
    assert_eq!(check(&sign(k, &header(k), &with_claim("aud", json!(["billing", AUDIENCE]))), &keys), Ok(()));
    for aud in [json!("Orders"), json!(["billing"]), json!([]), json!(format!("{AUDIENCE} billing"))] {
        assert_eq!(check(&sign(k, &header(k), &with_claim("aud", aud)), &keys), Err(Rejection::Audience));
    }
    assert!(matches!(check(&sign(k, &header(k), &with_claim("aud", json!(7))), &keys), Err(Rejection::BadClaims(_))));
}

#[test]
fn access_tokens_are_typed_at_jwt_and_carry_the_rfc9068_claims() {
    let k = es256();
    let keys = keyset(&[k]);
    for typ in ["at+jwt", "AT+JWT", "application/at+jwt", "Application/AT+JWT"] {
        let mut h = header(k);
        h["typ"] = json!(typ);
        assert_eq!(check(&sign(k, &h, &claims()), &keys), Ok(()), "{typ}");
    }
    // An ID token or any other JWT from the same issuer and key is not an
    // access token (RFC 9068 section 4, RFC 8725 section 3.11).
    for typ in [
        json!("JWT"),
        json!("jwt"),
        json!("application/jwt"),
        json!("JOSE"),
        json!("dpop+jwt"),
        json!("id_token+jwt"),
        json!(""),
        json!(1),
        json!(["at+jwt"]),
    ] {
        let mut h = header(k);
        h["typ"] = typ.clone();
        assert_eq!(check(&sign(k, &h, &claims()), &keys), Err(Rejection::BadType), "{typ}");
    }
    let mut untyped = header(k);
    untyped.as_object_mut().expect("object").remove("typ");
    assert_eq!(check(&sign(k, &untyped, &claims()), &keys), Err(Rejection::BadType));
    for claim in ["sub", "iat", "jti", "client_id"] {
        let mut c = claims();
        c.as_object_mut().expect("object").remove(claim);
        assert!(matches!(check(&sign(k, &header(k), &c), &keys), Err(Rejection::BadClaims(_))), "{claim}");
    }
}

#[test]
fn the_jwt_profile_accepts_untyped_tokens_without_the_access_token_claims() {
    let k = es256();
    let keys = keyset(&[k]);
    let jwt = Policy { profile: TokenProfile::Jwt, ..policy() };
    let mut c = claims();
    for claim in ["sub", "iat", "jti", "client_id"] {
        c.as_object_mut().expect("object").remove(claim);
    }
    for typ in [Some("JWT"), Some("at+jwt"), Some("application/jwt"), None] {
        let mut h = header(k);
        match typ {
            Some(typ) => h["typ"] = json!(typ),
            None => drop(h.as_object_mut().expect("object").remove("typ")),
        }
        assert!(verify(&sign(k, &h, &c), &keys, &jwt, now()).is_ok(), "{typ:?}");
    }
    let mut h = header(k);
    h["typ"] = json!("secevent+jwt");
    assert_eq!(verify(&sign(k, &h, &c), &keys, &jwt, now()).map(|_| ()), Err(Rejection::BadType));
}

#[test]
fn wrongly_typed_claims() {
    let k = es256();
    let keys = keyset(&[k]);
    for (name, value) in [
        ("iss", json!([ISSUER])),
        ("sub", json!(1)),
        ("scope", json!(["orders:read"])),
        ("client_id", json!({"id": "web"})),
        ("nbf", json!("0")),
        ("iat", json!(false)),
        ("jti", json!(5)),
    ] {
        assert!(
            matches!(check(&sign(k, &header(k), &with_claim(name, value)), &keys), Err(Rejection::BadClaims(_))),
            "{name}"
        );
    }
}

#[test]
fn tampered_payload_fails_the_signature() {
    let k = rs256();
    let good = token(k);
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = b64(with_claim("sub", json!("admin")).to_string().as_bytes());
    assert_eq!(check(&parts.join("."), &keyset(&[k])), Err(Rejection::BadSignature("does not verify")));
}
