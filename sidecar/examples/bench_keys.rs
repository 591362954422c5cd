//! Writes what the benchmark needs into a directory: an RS256 key's JWKS, its
//! private key (so the script can derive the public PEM HAProxy wants), one
//! token valid for a day (`token`, for the cache-on rows) and a pool of
//! distinct ones, one per line (`tokens`, so a verifier with a cache would
//! still check a signature on every request). Used by `bench/sidecar/run.sh` only.

use std::path::PathBuf;

use sigil_core::jwk::{JwkSet, b64};
use sigil_core::{Algorithm, PrivateKey};

/// Distinct tokens in the pool: more than any cache row could hold hot.
const POOL: usize = 1000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: bench_keys DIR")?);
    std::fs::create_dir_all(&dir)?;
    let key = PrivateKey::generate(Algorithm::RS256, None)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let header = b64(serde_json::json!({"alg": "RS256", "kid": key.kid(), "typ": "at+jwt"}).to_string().as_bytes());
    let token = |n: usize| -> Result<String, Box<dyn std::error::Error>> {
        let claims = serde_json::json!({
            "iss": "https://issuer.bench", "aud": "orders", "sub": "bench-user", "client_id": "wrk",
            "scope": "orders:read", "iat": now, "exp": now + 86_400, "jti": format!("bench-token-{n}"),
        });
        let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
        Ok(format!("{input}.{}", b64(&key.sign(input.as_bytes())?)))
    };
    let pool = (1..=POOL).map(token).collect::<Result<Vec<_>, _>>()?;
    std::fs::write(dir.join("jwks.json"), JwkSet { keys: vec![key.public_jwk().clone()] }.to_json())?;
    std::fs::write(dir.join("private.pem"), key.to_pkcs8_pem().as_bytes())?;
    std::fs::write(dir.join("token"), &pool[0])?;
    std::fs::write(dir.join("tokens"), pool.join("\n") + "\n")?;
    Ok(())
}
