//! Test fixtures for the issuer: key directories and JWKS files written the
//! way the kubelet writes mounted Secrets and ConfigMaps (a timestamped
//! directory behind a `..data` symlink swapped atomically; see
//! `sigil_runtime::volume`), clients files with cheap Argon2id hashes, and a
//! ready-made [`Config`].
#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::time::Duration;

use argon2::password_hash::{PasswordHasher, SaltString};
use sigil_api::contract::{self, SecretKeys};
use sigil_api::{Algorithm, JwkSet, PrivateKey};
use sigil_issuer::config::Config;
use sigil_runtime::volume::write_atomically;

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "test-api";

/// Argon2id at OWASP's minimum cost (the issuer refuses anything weaker), with
/// a fixed salt; the dev profile builds argon2 optimised, so this stays fast.
pub fn cheap_hash(secret: &str) -> String {
    let params = argon2::Params::default();
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"fixed-test-salt!").expect("salt");
    argon2.hash_password(secret.as_bytes(), &salt).expect("hash").to_string()
}

pub fn key(alg: Algorithm) -> PrivateKey {
    PrivateKey::generate(alg, None).expect("generate")
}

/// Writes `active` (and `next`) into `dir` as the Secret's volume would hold it.
pub fn write_secret(dir: &Path, active: &PrivateKey, next: Option<&PrivateKey>) {
    let copy = |k: &PrivateKey| PrivateKey::from_pkcs8_pem(k.algorithm(), k.to_pkcs8_pem().as_bytes()).expect("copy");
    let data = SecretKeys { active: copy(active), next: next.map(copy) }.to_secret_data();
    let files: Vec<(&str, &[u8])> = data.iter().map(|(k, v)| (k.as_str(), v.0.as_slice())).collect();
    write_atomically(dir, &files).expect("write secret volume");
}

/// Writes `active` plus extra entries (e.g. `max-token-lifetime`) as one
/// version of the Secret's volume.
pub fn write_secret_with(dir: &Path, active: &PrivateKey, extra: &[(&str, &[u8])]) {
    let copy = |k: &PrivateKey| PrivateKey::from_pkcs8_pem(k.algorithm(), k.to_pkcs8_pem().as_bytes()).expect("copy");
    let data = SecretKeys { active: copy(active), next: None }.to_secret_data();
    let mut files: Vec<(&str, &[u8])> = data.iter().map(|(k, v)| (k.as_str(), v.0.as_slice())).collect();
    files.extend_from_slice(extra);
    write_atomically(dir, &files).expect("write secret volume");
}

/// Writes a Secret version holding only the next key, as the operator's first
/// write can look to the kubelet before the active key is added.
pub fn write_next_only(dir: &Path, next: &PrivateKey) {
    let pem = next.to_pkcs8_pem();
    let files: [(&str, &[u8]); 3] = [
        (contract::NEXT_PRIVATE_KEY, pem.as_bytes()),
        (contract::NEXT_KID, next.kid().as_bytes()),
        (contract::NEXT_ALG, next.algorithm().as_str().as_bytes()),
    ];
    write_atomically(dir, &files).expect("write secret volume");
}

/// Writes a JWKS publishing `keys` into `dir/jwks.json` as the ConfigMap's volume would.
pub fn write_jwks(dir: &Path, keys: &[&PrivateKey]) {
    let set = JwkSet { keys: keys.iter().map(|k| k.public_jwk().clone()).collect() };
    write_atomically(dir, &[(contract::JWKS, set.to_json().as_bytes())]).expect("write jwks volume");
}

/// Writes the clients file (a plain file, replaced by rename so readers never
/// see half of it).
pub fn write_clients(path: &Path, yaml: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, yaml).expect("write clients");
    std::fs::rename(&tmp, path).expect("rename clients");
}

/// The clients every test starts with.
pub fn default_clients() -> String {
    format!(
        r#"clients:
  - id: svc
    secretHash: "{svc}"
    scopes: [orders.read, orders.write]
  - id: short
    secretHash: "{short}"
    scopes: [a]
    audience: other-api
    ttl: 30s
  - id: app
    secretHash: "{app}"
    scopes: [orders.read, profile]
    grantTypes: [client_credentials, password]
users:
  - username: alice
    passwordHash: "{alice}"
    scopes: [orders.read, orders.write, profile]
"#,
        svc = cheap_hash("svc-secret"),
        short = cheap_hash("short-secret"),
        app = cheap_hash("app-secret"),
        alice = cheap_hash("alice-password"),
    )
}

/// A temporary directory holding a key volume, a JWKS volume and a clients file.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub key: PrivateKey,
}

impl Fixture {
    /// A published `alg` key and the default clients.
    pub fn new(alg: Algorithm) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = key(alg);
        let f = Fixture { dir, key };
        write_secret(&f.key_dir(), &f.key, None);
        write_jwks(&f.jwks_dir(), &[&f.key]);
        write_clients(&f.clients_file(), &default_clients());
        f
    }

    pub fn key_dir(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    pub fn jwks_dir(&self) -> PathBuf {
        self.dir.path().join("jwks")
    }

    pub fn jwks_file(&self) -> PathBuf {
        self.jwks_dir().join(contract::JWKS)
    }

    pub fn clients_file(&self) -> PathBuf {
        self.dir.path().join("clients.yaml")
    }

    pub fn config(&self) -> Config {
        Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            tls: None,
            admin_listen: "127.0.0.1:0".parse().expect("addr"),
            key_dir: self.key_dir(),
            jwks_file: self.jwks_file(),
            issuer_url: ISSUER.to_owned(),
            audience: AUDIENCE.to_owned(),
            token_ttl: Duration::from_secs(900),
            clients_file: self.clients_file(),
            jwks_max_age: Duration::from_secs(300),
            auth_cache_ttl: Duration::from_secs(60),
            auth_cache_size: 100,
            auth_failure_limit: 5,
            auth_backoff_max: Duration::from_secs(900),
            auth_failures_per_minute: 600,
            auth_failure_table_size: 100_000,
            trusted_proxies: Vec::new(),
            reload_period: Duration::from_secs(30),
            shutdown_delay: Duration::ZERO,
            workload: None,
        }
    }
}
