#![allow(dead_code)] // each fuzz target uses one of these
//! What each fuzz target asserts about one input, shared by the fuzz targets
//! and by the corpus replay in `sidecar/tests/fuzz_corpus.rs`. Beyond "no
//! panic", each states a property the security rules rely on.

use sigil_sidecar::path::normalize;
use sigil_sidecar::verify::{compact, strict_json};

/// A normalised path is stable (normalising it again changes nothing), has
/// no empty or dot segment, and is what the app receives: printable ASCII.
pub fn path_normalize(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else { return };
    for case_insensitive in [false, true] {
        let Ok(normal) = normalize(path, case_insensitive) else { continue };
        let forwarded = normal.path.as_ref();
        assert!(forwarded.starts_with('/'), "{path:?} -> {forwarded:?}");
        assert!(forwarded.bytes().all(|b| b.is_ascii_graphic()), "{path:?} -> {forwarded:?}");
        let again = normalize(forwarded, case_insensitive).expect("a normalised path normalises");
        assert_eq!(again.path, forwarded, "not idempotent: {path:?}");
        assert_eq!(again.route, normal.route, "route changed on re-normalising: {path:?}");
        let inner = forwarded.trim_start_matches('/').trim_end_matches('/');
        if !inner.is_empty() {
            for segment in inner.split('/') {
                assert!(!segment.is_empty() && segment != "." && segment != "..", "{path:?} -> {forwarded:?}");
            }
        }
    }
}

/// Splitting never panics, and what it accepts is exactly three base64url
/// segments whose signing input is a prefix of the token.
pub fn compact_jws(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else { return };
    if let Ok(parts) = compact::split(token, 8192) {
        assert!(token.starts_with(parts.signing_input));
        assert_eq!(token.split('.').count(), 3);
        assert!(parts.signing_input.ends_with(parts.payload_b64));
    }
}

/// The strict parser never disagrees with serde_json on what it accepts: the
/// same value, member for member. (It refuses more: duplicate names.)
pub fn strict_json(data: &[u8]) {
    if let Ok(map) = strict_json::parse_object(data) {
        let loose: serde_json::Value = serde_json::from_slice(data).expect("strict implies valid JSON");
        assert_eq!(serde_json::Value::Object(map), loose);
    }
}

/// Bearer extraction never panics and never returns a token with whitespace,
/// commas or nothing in it.
pub fn bearer(data: &[u8]) {
    let (header, query) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], std::str::from_utf8(&data[i + 1..]).ok()),
        None => (data, None),
    };
    let mut headers = http::HeaderMap::new();
    if let Ok(value) = http::HeaderValue::from_bytes(header) {
        headers.insert(http::header::AUTHORIZATION, value);
    }
    if let Ok(token) = sigil_sidecar::bearer::extract(&headers, query) {
        assert!(!token.is_empty());
        assert!(!token.bytes().any(|b| matches!(b, b' ' | b'\t' | b',')), "{token:?}");
    }
}
