//! Writes what the benchmark needs into a directory: an RS256 key's JWKS, its
//! private key (so the script can derive the public PEM HAProxy wants) and a
//! token valid for a day. Used by `bench/sidecar/run.sh` only.

use std::path::PathBuf;

use sigil_core::jwk::{JwkSet, b64};
use sigil_core::{Algorithm, PrivateKey};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: bench_keys DIR")?);
    std::fs::create_dir_all(&dir)?;
    let key = PrivateKey::generate(Algorithm::RS256, None)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let header = serde_json::json!({"alg": "RS256", "kid": key.kid(), "typ": "at+jwt"});
    let claims = serde_json::json!({
        "iss": "https://issuer.bench", "aud": "orders", "sub": "bench-user", "client_id": "wrk",
        "scope": "orders:read", "iat": now, "exp": now + 86_400, "jti": "bench-token-1",
    });
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let token = format!("{input}.{}", b64(&key.sign(input.as_bytes())?));
    std::fs::write(dir.join("jwks.json"), JwkSet { keys: vec![key.public_jwk().clone()] }.to_json())?;
    std::fs::write(dir.join("private.pem"), key.to_pkcs8_pem().as_bytes())?;
    std::fs::write(dir.join("token"), token)?;
    Ok(())
}
