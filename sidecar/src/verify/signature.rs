//! Signature checks. The key's algorithm decides everything: the token's `alg`
//! must equal it (checked by the caller), and the signature must have the exact
//! shape that algorithm produces before the crypto library sees it.

use sigil_core::Algorithm;

use super::Rejection;
use crate::keys::Key;

/// The order n of P-256 (SEC 2, section 2.4.2), big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa,
    0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The order n of P-384 (SEC 2, section 2.5.1), big-endian.
const P384_ORDER: [u8; 48] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf, 0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0,
    0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73,
];

pub fn check(key: &Key, signing_input: &[u8], signature: &[u8]) -> Result<(), Rejection> {
    match key.alg {
        Algorithm::ES256 => ecdsa_shape(signature, &P256_ORDER)?,
        Algorithm::ES384 => ecdsa_shape(signature, &P384_ORDER)?,
        Algorithm::EdDSA if signature.len() != 64 => return Err(Rejection::BadSignature("Ed25519 signature length")),
        _ => {}
    }
    if key.verify(signing_input, signature) { Ok(()) } else { Err(Rejection::BadSignature("does not verify")) }
}

/// JWS ECDSA signatures are the fixed-size `r || s` (RFC 7518 section 3.4),
/// never DER, with both halves in [1, n-1]. Zero values are the "psychic
/// signature" shape (CVE-2022-21449) that broken verifiers accept.
fn ecdsa_shape(signature: &[u8], order: &[u8]) -> Result<(), Rejection> {
    let len = order.len();
    if signature.len() != 2 * len {
        return Err(Rejection::BadSignature("ECDSA signature is not fixed-size r||s"));
    }
    let (r, s) = signature.split_at(len);
    for half in [r, s] {
        if half.iter().all(|&b| b == 0) || half >= order {
            return Err(Rejection::BadSignature("ECDSA r or s out of range"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_range_edges() {
        let mut sig = [1u8; 64];
        assert!(ecdsa_shape(&sig, &P256_ORDER).is_ok());
        sig[..32].copy_from_slice(&P256_ORDER);
        assert!(ecdsa_shape(&sig, &P256_ORDER).is_err(), "r = n");
        let mut below = P256_ORDER;
        below[31] -= 1;
        sig[..32].copy_from_slice(&below);
        assert!(ecdsa_shape(&sig, &P256_ORDER).is_ok(), "r = n - 1");
        sig[32..].fill(0);
        assert!(ecdsa_shape(&sig, &P256_ORDER).is_err(), "s = 0");
        assert!(ecdsa_shape(&[1u8; 63], &P256_ORDER).is_err());
        assert!(ecdsa_shape(&[0xffu8; 96], &P384_ORDER).is_err());
    }
}
