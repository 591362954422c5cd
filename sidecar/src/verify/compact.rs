//! The JWS Compact Serialization (RFC 7515 section 7.1), parsed strictly:
//! exactly three segments of unpadded base64url, and a size limit checked
//! before any byte is decoded.

use sigil_core::jwk::b64_decode;

use super::Rejection;

/// The three decoded parts of a compact JWS, plus the slices the signature
/// covers and the proxy forwards.
#[derive(Debug)]
pub struct Compact<'a> {
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`: what was signed.
    pub signing_input: &'a str,
    /// The payload segment as sent, already base64url: forwarded as `X-Sigil-Claims`.
    pub payload_b64: &'a str,
    pub header: Vec<u8>,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

pub fn split(token: &str, max_len: usize) -> Result<Compact<'_>, Rejection> {
    if token.len() > max_len {
        return Err(Rejection::TooLarge);
    }
    // The base64url alphabet plus the separator; this also rules out padding,
    // `+`, `/` and whitespace before the decoder sees anything.
    if !token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err(Rejection::Malformed("character outside base64url"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejection::Malformed("not three segments"));
    };
    if header.is_empty() || payload.is_empty() {
        return Err(Rejection::Malformed("empty segment"));
    }
    if signature.is_empty() {
        return Err(Rejection::BadSignature("empty signature"));
    }
    let decode = |segment: &str, what| b64_decode(segment).map_err(|_| Rejection::Malformed(what));
    Ok(Compact {
        signing_input: &token[..header.len() + 1 + payload.len()],
        payload_b64: payload,
        header: decode(header, "header is not strict base64url")?,
        payload: decode(payload, "payload is not strict base64url")?,
        signature: decode(signature, "signature is not strict base64url")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_well_formed_token() {
        let c = split("eyJhIjoxfQ.eyJiIjoyfQ.AAEC", 100).expect("valid");
        assert_eq!(c.signing_input, "eyJhIjoxfQ.eyJiIjoyfQ");
        assert_eq!(c.payload_b64, "eyJiIjoyfQ");
        assert_eq!(c.header, br#"{"a":1}"#);
        assert_eq!(c.signature, [0, 1, 2]);
    }

    #[test]
    fn size_limit_comes_first() {
        assert_eq!(split("a.b.c", 4).expect_err("too large"), Rejection::TooLarge);
        // Even garbage is refused as too large, so nothing big is ever scanned twice.
        assert_eq!(split(&"+".repeat(10), 4).expect_err("too large"), Rejection::TooLarge);
    }
}
