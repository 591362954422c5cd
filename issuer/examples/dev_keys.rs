//! Writes a signing-key directory and a JWKS file the way the operator's
//! Secret and ConfigMap look when mounted, so the issuer can run outside
//! Kubernetes (local development, benchmarks):
//!
//! ```sh
//! cargo run -p sigil-issuer --example dev-keys -- ES256 /tmp/sigil
//! # -> /tmp/sigil/keys/{private.pem,kid,alg}  /tmp/sigil/jwks/jwks.json
//! ```
//!
//! Running it again over the same directory rotates: the new key becomes
//! active and the JWKS keeps publishing the previous one, swapped atomically
//! like the kubelet does, so a running issuer picks it up.

use std::path::PathBuf;
use std::process::ExitCode;

use sigil_api::contract::{self, SecretKeys};
use sigil_api::{Algorithm, JwkSet, PrivateKey};
use sigil_runtime::volume::write_atomically;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [alg, dir] = args.as_slice() else {
        eprintln!("usage: dev-keys ALG DIR   (ALG: RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA)");
        return ExitCode::FAILURE;
    };
    match run(alg, PathBuf::from(dir)) {
        Ok(kid) => {
            println!("{kid}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dev-keys: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(alg: &str, dir: PathBuf) -> Result<String, Box<dyn std::error::Error>> {
    let alg: Algorithm = alg.parse()?;
    let (key_dir, jwks_dir) = (dir.join("keys"), dir.join("jwks"));
    let jwks_file = jwks_dir.join(contract::JWKS);
    // Keep publishing the keys already there, so tokens signed before stay valid.
    let mut set = match std::fs::read(&jwks_file) {
        Ok(bytes) => serde_json::from_slice::<JwkSet>(&bytes)?,
        Err(_) => JwkSet::default(),
    };
    let key = PrivateKey::generate(alg, None)?;
    set.keys.push(key.public_jwk().clone());
    let kid = key.kid().to_owned();
    // Publish first, then activate: the order the operator follows.
    write_atomically(&jwks_dir, &[(contract::JWKS, set.to_json().as_bytes())])?;
    let data = SecretKeys { active: key, next: None }.to_secret_data();
    let files: Vec<(&str, &[u8])> = data.iter().map(|(k, v)| (k.as_str(), v.0.as_slice())).collect();
    write_atomically(&key_dir, &files)?;
    Ok(kid)
}
