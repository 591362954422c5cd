//! Argon2id hashes of client secrets and user passwords, as PHC strings
//! (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`).
//!
//! Hashing and verifying are deliberately slow (tens of milliseconds): callers
//! on the async runtime run them with `spawn_blocking` and a concurrency bound.

use argon2::password_hash::{PasswordHashString, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// A parsed Argon2id hash. Other algorithms (argon2i, bcrypt, ...) are refused
/// at load time, so a typo never silently weakens a client's protection.
#[derive(Clone, Debug)]
pub struct SecretHash(PasswordHashString);

impl SecretHash {
    pub fn parse(phc: &str) -> Result<SecretHash, String> {
        let hash = PasswordHashString::new(phc.trim()).map_err(|e| format!("not a PHC hash string: {e}"))?;
        if hash.algorithm().as_str() != "argon2id" {
            return Err(format!("algorithm is {}, expected argon2id", hash.algorithm()));
        }
        // The parameters must be ones Argon2 accepts, or every verification would fail.
        let params = Params::try_from(&hash.password_hash()).map_err(|e| format!("bad Argon2 parameters: {e}"))?;
        check_cost(params.m_cost(), params.t_cost(), params.p_cost())?;
        if hash.hash().is_none() {
            return Err("PHC string has no hash".to_owned());
        }
        Ok(SecretHash(hash))
    }

    /// Whether `secret` matches. Constant-time in the comparison; the Argon2
    /// parameters come from the hash itself.
    pub fn verify(&self, secret: &[u8]) -> bool {
        Argon2::default().verify_password(secret, &self.0.password_hash()).is_ok()
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// OWASP's Argon2id minimums (Password Storage Cheat Sheet), as (memory KiB,
/// passes) with one lane: equally strong trade-offs between memory and time.
/// A stored hash must reach one of them, so a hand-made hash with a tiny cost
/// cannot make its secret cheap to guess offline.
pub const OWASP_MINIMUMS: [(u32, u32); 5] = [(47_104, 1), (19_456, 2), (12_288, 3), (9_216, 4), (7_168, 5)];
/// The most memory one verification may take: up to two runs per core happen
/// at once, and the parameters come from a file, so they must not be able to
/// exhaust the pod's memory.
pub const MAX_MEMORY_KIB: u32 = 64 * 1024;
/// The most passes and lanes: each is CPU time spent on every request.
pub const MAX_PASSES: u32 = 10;
pub const MAX_LANES: u32 = 4;

/// Refuses parameters below OWASP's minimums or above the ceilings, saying which.
pub fn check_cost(memory_kib: u32, passes: u32, lanes: u32) -> Result<(), String> {
    if memory_kib > MAX_MEMORY_KIB {
        return Err(format!("m={memory_kib} KiB is above the ceiling of {MAX_MEMORY_KIB} KiB"));
    }
    if passes > MAX_PASSES {
        return Err(format!("t={passes} is above the ceiling of {MAX_PASSES} passes"));
    }
    if lanes > MAX_LANES {
        return Err(format!("p={lanes} is above the ceiling of {MAX_LANES} lanes"));
    }
    if !OWASP_MINIMUMS.iter().any(|&(m, t)| memory_kib >= m && passes >= t) {
        return Err(format!(
            "m={memory_kib},t={passes} is weaker than OWASP's Argon2id minimum (e.g. m=19456,t=2); \
             re-hash it with sigil-issuer hash-secret"
        ));
    }
    Ok(())
}

/// Hashes `secret` with Argon2id and OWASP's recommended parameters
/// (19 MiB, 2 passes, 1 lane), the `argon2` crate's defaults.
pub fn hash(secret: &[u8]) -> Result<SecretHash, String> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| "no randomness for a salt".to_owned())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default());
    let phc =
        argon2::password_hash::PasswordHasher::hash_password(&argon2, secret, &salt).map_err(|e| e.to_string())?;
    Ok(SecretHash(phc.serialize()))
}

/// Hashes what a user piped in: one trailing newline (`echo`) is not part of
/// the secret; an empty secret is refused.
pub fn hash_input(input: &[u8]) -> Result<SecretHash, String> {
    let secret = input.strip_suffix(b"\n").unwrap_or(input);
    let secret = secret.strip_suffix(b"\r").unwrap_or(secret);
    if secret.is_empty() {
        return Err("empty secret on stdin; pipe it in, e.g. printf %s \"$SECRET\" | sigil-issuer hash-secret".into());
    }
    hash(secret)
}

/// A hash with a fixed salt, for tests (the dev profile compiles argon2
/// optimised, so the minimum parameters stay fast in debug builds).
#[cfg(test)]
pub(crate) fn test_hash(secret: &[u8]) -> SecretHash {
    let params = Params::default();
    let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
    let phc = argon2::password_hash::PasswordHasher::hash_password(
        &Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
        secret,
        &salt,
    )
    .expect("hash");
    SecretHash(phc.serialize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let h = hash(b"s3cret").expect("hash");
        assert!(h.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{}", h.as_str());
        assert!(h.verify(b"s3cret"));
        assert!(!h.verify(b"s3cret "));
        let again = SecretHash::parse(h.as_str()).expect("round trip");
        assert!(again.verify(b"s3cret"));
        assert_ne!(hash(b"s3cret").expect("hash").as_str(), h.as_str(), "salts are random");
    }

    #[test]
    fn hash_input_drops_one_newline_and_refuses_empty() {
        assert!(hash_input(b"pw\n").expect("hash").verify(b"pw"));
        assert!(hash_input(b"pw\r\n").expect("hash").verify(b"pw"));
        assert!(hash_input(b"pw\n\n").expect("hash").verify(b"pw\n"));
        assert!(hash_input(b"\n").expect_err("empty").contains("empty secret"));
    }

    #[test]
    fn non_argon2id_hashes_are_refused() {
        let h = hash(b"x").expect("hash");
        let argon2i = h.as_str().replacen("argon2id", "argon2i", 1);
        assert!(SecretHash::parse(&argon2i).expect_err("argon2i").contains("argon2id"));
        assert!(SecretHash::parse("$2b$12$abcdefghijklmnopqrstuv").is_err());
        assert!(SecretHash::parse("plaintext").is_err());
        assert!(SecretHash::parse("$argon2id$v=19$m=1,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g").is_err(), "m too small");
    }

    #[test]
    fn argon2_bounds_refuse_weak_and_huge_costs() {
        let phc = |m: u32, t: u32, p: u32| {
            format!("$argon2id$v=19$m={m},t={t},p={p}$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2g")
        };
        for (m, t, p) in [(19_456, 2, 1), (47_104, 1, 1), (7_168, 5, 1), (65_536, 3, 4)] {
            let parsed = SecretHash::parse(&phc(m, t, p));
            assert!(parsed.is_ok(), "m={m},t={t},p={p}: {parsed:?}");
        }
        for (m, t, p, needle) in [
            (1024, 1, 1, "weaker than OWASP"),
            (19_455, 2, 1, "weaker than OWASP"),
            (47_103, 1, 1, "weaker than OWASP"),
            (7_168, 4, 1, "weaker than OWASP"),
            (65_537, 2, 1, "ceiling"),
            (4_194_304, 2, 1, "ceiling"),
            (19_456, 11, 1, "ceiling"),
            (19_456, 2, 5, "ceiling"),
        ] {
            let err = SecretHash::parse(&phc(m, t, p)).expect_err(&phc(m, t, p));
            assert!(err.contains(needle), "m={m},t={t},p={p}: {err}");
        }
    }
}
