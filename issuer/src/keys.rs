//! The signing key and the published JWKS, loaded from their mounted volumes
//! and swapped atomically on reload.
//!
//! The rule that matters: never sign with a key the JWKS does not publish, or
//! verifiers would reject the token. When the Secret's key is not (yet) in the
//! JWKS, the issuer keeps signing with the last key that is, and reports it;
//! with no published key at all it is not ready.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use sigil_api::contract::{self, ContractError, SecretKeys};
use sigil_api::jwk::b64;
use sigil_api::{Algorithm, JwkSet, PrivateKey};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A key ready to sign JWTs: the protected header is the same for every
/// token, so it is encoded once here.
pub struct Signer {
    key: PrivateKey,
    header_b64: String,
}

impl Signer {
    pub fn new(key: PrivateKey) -> Signer {
        // RFC 9068 section 2.1: typ "at+jwt"; kid names the key in the JWKS.
        let header = serde_json::json!({"alg": key.algorithm().as_str(), "kid": key.kid(), "typ": "at+jwt"});
        Signer { header_b64: b64(header.to_string().as_bytes()), key }
    }

    pub fn kid(&self) -> &str {
        self.key.kid()
    }

    pub fn algorithm(&self) -> Algorithm {
        self.key.algorithm()
    }

    /// A compact JWS of `claims` (already-serialized JSON).
    pub fn sign(&self, claims: &[u8]) -> Result<String, sigil_api::keys::KeyError> {
        let payload = b64(claims);
        let mut jws = String::with_capacity(self.header_b64.len() + payload.len() + 700);
        jws.push_str(&self.header_b64);
        jws.push('.');
        jws.push_str(&payload);
        let signature = self.key.sign(jws.as_bytes())?;
        jws.push('.');
        jws.push_str(&b64(&signature));
        Ok(jws)
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("key", &self.key).finish_non_exhaustive()
    }
}

/// The JWKS file as served: its exact bytes, their ETag, and what it publishes.
#[derive(Debug)]
pub struct Jwks {
    pub bytes: Bytes,
    pub etag: String,
    pub kids: Vec<String>,
    pub algorithms: Vec<Algorithm>,
}

impl Jwks {
    /// Parses with the same strict rules verifiers use, so "published" means
    /// "a verifier will accept it".
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Jwks> {
        let parsed = JwkSet::parse(&bytes).map_err(|source| Error::Jwks { path: path.to_path_buf(), source })?;
        for skipped in &parsed.skipped {
            tracing::warn!(file = %path.display(), problem = %skipped, "JWKS key skipped");
        }
        let kids = parsed.keys.iter().map(|k| k.kid.clone()).collect();
        let mut algorithms: Vec<Algorithm> = parsed.keys.iter().map(|k| k.alg).collect();
        algorithms.sort_unstable();
        algorithms.dedup();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
        let etag = format!("\"{}\"", b64(&digest.as_ref()[..18]));
        Ok(Jwks { bytes: Bytes::from(bytes), etag, kids, algorithms })
    }

    pub fn publishes(&self, kid: &str) -> bool {
        self.kids.iter().any(|k| k == kid)
    }
}

/// What the issuer signs with and serves, as of the last successful load.
#[derive(Debug)]
pub struct KeyState {
    /// `None` until a key the JWKS publishes has been loaded.
    pub signer: Option<Arc<Signer>>,
    pub jwks: Arc<Jwks>,
    /// The kid the Secret currently names; differs from the signer's while
    /// the JWKS does not publish it yet. Empty while the Secret has no active key.
    pub secret_kid: String,
    /// The SigningKey's maximum token lifetime, when the Secret carries one:
    /// its `retain` covers tokens this long, so none may live longer.
    pub max_token_lifetime: Option<Duration>,
}

impl KeyState {
    /// Whether the signer is the Secret's current key.
    pub fn signing_current_key(&self) -> bool {
        self.signer.as_ref().is_some_and(|s| s.kid() == self.secret_kid)
    }
}

/// Chooses the signer for a freshly read Secret and JWKS. Pure, so every case
/// is a table row in the tests.
pub fn decide(secret: SecretKeys, jwks: Arc<Jwks>, previous: Option<&Arc<Signer>>) -> KeyState {
    let secret_kid = secret.active.kid().to_owned();
    let signer = if jwks.publishes(&secret_kid) {
        match previous {
            // Same key as before: keep the existing signer (no churn in metrics).
            Some(prev) if prev.kid() == secret_kid => Some(prev.clone()),
            _ => Some(Arc::new(Signer::new(secret.active))),
        }
    } else {
        previous.filter(|prev| jwks.publishes(prev.kid())).cloned()
    };
    KeyState { signer, jwks, secret_kid, max_token_lifetime: None }
}

/// One consistent read of the Secret's volume.
#[derive(Debug)]
pub struct SecretVolume {
    pub keys: SecretKeys,
    pub max_token_lifetime: Option<Duration>,
}

/// Whether `e` means the Secret has no active key yet (e.g. the first version
/// the kubelet mounts holds only `next.pem`): wait for it, not ready. An
/// active key with a file missing beside it is broken, not early, and stays
/// an error.
fn is_incomplete(e: &Error) -> bool {
    matches!(e, Error::Keys { source: ContractError::Missing(name), .. } if *name == contract::PRIVATE_KEY)
}

/// Parses the `max-token-lifetime` entry: a Go duration of at least 1s.
fn parse_max_token_lifetime(dir: &Path, bytes: &[u8]) -> Result<Duration> {
    let path = dir.join(contract::MAX_TOKEN_LIFETIME);
    let bad = |reason: String| Error::File { path: path.clone(), reason };
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?.trim();
    let lifetime = sigil_api::duration::parse(text).map_err(|e| bad(format!("{text:?}: {e}")))?;
    if lifetime < Duration::from_secs(1) {
        return Err(bad(format!("{text:?} is shorter than 1s")));
    }
    Ok(lifetime)
}

/// Reads the Secret's files from `dir`. A missing file is absent (the contract
/// decides whether that is allowed); any other read error names the file.
pub fn read_secret(dir: &Path) -> Result<SecretVolume> {
    if !dir.is_dir() {
        return Err(Error::File { path: dir.to_path_buf(), reason: "not a directory".into() });
    }
    // The kubelet may swap `..data` between two of our reads, giving a torn set
    // (one version's key, the next one's kid). Re-read when the link moved.
    let data_link = || std::fs::read_link(dir.join("..data")).ok();
    let mut attempts = 0;
    let files = loop {
        let before = data_link();
        let files = read_secret_files(dir)?;
        attempts += 1;
        if data_link() == before || attempts == 3 {
            break files;
        }
    };
    let keys = SecretKeys::parse(|name| files.get(name).map(|b| b.as_slice()))
        .map_err(|source| Error::Keys { dir: dir.to_path_buf(), source })?;
    let max_token_lifetime =
        files.get(contract::MAX_TOKEN_LIFETIME).map(|b| parse_max_token_lifetime(dir, b)).transpose()?;
    Ok(SecretVolume { keys, max_token_lifetime })
}

fn read_secret_files(dir: &Path) -> Result<BTreeMap<&'static str, Zeroizing<Vec<u8>>>> {
    let mut files = BTreeMap::new();
    for name in [
        contract::PRIVATE_KEY,
        contract::KID,
        contract::ALG,
        contract::NEXT_PRIVATE_KEY,
        contract::NEXT_KID,
        contract::NEXT_ALG,
        contract::MAX_TOKEN_LIFETIME,
    ] {
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => {
                files.insert(name, Zeroizing::new(bytes));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::File { path, reason: e.to_string() }),
        }
    }
    Ok(files)
}

pub fn read_jwks(path: &Path) -> Result<Jwks> {
    let bytes = std::fs::read(path).map_err(Error::read(path))?;
    Jwks::parse(path, bytes)
}

/// What a reload changed, for logs and metrics.
#[derive(Debug, PartialEq, Eq)]
pub struct ReloadOutcome {
    pub signer_changed: bool,
    pub jwks_changed: bool,
}

/// The live key state. Readers take a snapshot with [`Keys::current`]; a
/// reload builds a complete new state and swaps it in with one pointer store,
/// so a request signs with either the old key or the new one, never neither.
pub struct Keys {
    key_dir: PathBuf,
    jwks_file: PathBuf,
    state: ArcSwap<KeyState>,
    /// The key-dir and JWKS watchers may both fire for one rotation; one
    /// reload at a time, so an older read never overwrites a newer one.
    reloading: std::sync::Mutex<()>,
}

impl Keys {
    /// First load. Bad key material or JWKS is an error naming the file; an
    /// unpublished key is not, and neither is a Secret without an active key
    /// yet: the issuer starts unready and waits for a reload to bring one.
    pub fn load(key_dir: &Path, jwks_file: &Path) -> Result<Keys> {
        // The key directory first: its problems are the ones to report first.
        let volume = match read_secret(key_dir) {
            Ok(volume) => Some(volume),
            Err(e) if is_incomplete(&e) => {
                tracing::warn!(error = %e, "the signing-key Secret is incomplete; not ready until it is complete");
                None
            }
            Err(e) => return Err(e),
        };
        let jwks = Arc::new(read_jwks(jwks_file)?);
        let state = match volume {
            Some(volume) => {
                KeyState { max_token_lifetime: volume.max_token_lifetime, ..decide(volume.keys, jwks, None) }
            }
            None => KeyState { signer: None, jwks, secret_kid: String::new(), max_token_lifetime: None },
        };
        log_state(&state);
        Ok(Keys {
            key_dir: key_dir.to_path_buf(),
            jwks_file: jwks_file.to_path_buf(),
            state: ArcSwap::from_pointee(state),
            reloading: std::sync::Mutex::new(()),
        })
    }

    pub fn current(&self) -> Arc<KeyState> {
        self.state.load_full()
    }

    /// Re-reads both volumes. A broken JWKS keeps the current state. A broken
    /// key directory keeps the current signer, but a valid new JWKS is still
    /// taken, so a key the JWKS withdraws stops being used either way.
    pub fn reload(&self) -> Result<ReloadOutcome> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let bytes = std::fs::read(&self.jwks_file).map_err(Error::read(&self.jwks_file))?;
        let old = self.state.load_full();
        // Unchanged bytes (the periodic re-read) need no parse, and log nothing again.
        let jwks_changed = bytes != old.jwks.bytes;
        let jwks = if jwks_changed { Arc::new(Jwks::parse(&self.jwks_file, bytes)?) } else { old.jwks.clone() };
        let (new, secret_error) = match read_secret(&self.key_dir) {
            Ok(volume) => (
                KeyState {
                    max_token_lifetime: volume.max_token_lifetime,
                    ..decide(volume.keys, jwks, old.signer.as_ref())
                },
                None,
            ),
            Err(e) => {
                let signer = old.signer.clone().filter(|s| jwks.publishes(s.kid()));
                let max_token_lifetime = old.max_token_lifetime;
                (KeyState { signer, jwks, secret_kid: old.secret_kid.clone(), max_token_lifetime }, Some(e))
            }
        };
        let signer_changed = new.signer.as_ref().map(|s| s.kid()) != old.signer.as_ref().map(|s| s.kid());
        if new.max_token_lifetime != old.max_token_lifetime {
            tracing::info!(max_token_lifetime = ?new.max_token_lifetime, "maximum token lifetime changed");
        }
        if signer_changed || jwks_changed || new.secret_kid != old.secret_kid {
            log_state(&new);
        }
        self.state.store(Arc::new(new));
        match secret_error {
            Some(e) => Err(e),
            None => Ok(ReloadOutcome { signer_changed, jwks_changed }),
        }
    }
}

fn log_state(state: &KeyState) {
    match &state.signer {
        Some(s) if state.signing_current_key() => {
            tracing::info!(kid = s.kid(), alg = %s.algorithm(), "signing with the Secret's key");
        }
        Some(s) => tracing::warn!(
            kid = s.kid(),
            secret_kid = %state.secret_kid,
            "the Secret's key is not in the JWKS yet; still signing with the last published key"
        ),
        None => tracing::warn!(
            secret_kid = %state.secret_kid,
            "no loaded key is in the JWKS; not ready and refusing to sign"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_api::jwk::VerifyingKey;

    fn key(alg: Algorithm) -> PrivateKey {
        PrivateKey::generate(alg, None).expect("generate")
    }

    fn jwks_of(keys: &[&PrivateKey]) -> Arc<Jwks> {
        let set = JwkSet { keys: keys.iter().map(|k| k.public_jwk().clone()).collect() };
        Arc::new(Jwks::parse(Path::new("jwks.json"), set.to_json().into_bytes()).expect("jwks"))
    }

    fn secret(k: &PrivateKey) -> SecretKeys {
        SecretKeys::from_secret_data(&SecretKeys { active: clone(k), next: None }.to_secret_data()).expect("secret")
    }

    fn clone(k: &PrivateKey) -> PrivateKey {
        PrivateKey::from_pkcs8_pem(k.algorithm(), k.to_pkcs8_pem().as_bytes()).expect("clone")
    }

    #[test]
    fn decide_never_picks_an_unpublished_key() {
        let (a, b) = (key(Algorithm::ES256), key(Algorithm::EdDSA));
        let signer_a = Arc::new(Signer::new(clone(&a)));
        let kid = |s: &KeyState| s.signer.as_ref().map(|s| s.kid().to_owned());

        // Published: sign with the Secret's key.
        let s = decide(secret(&a), jwks_of(&[&a]), None);
        assert_eq!(kid(&s), Some(a.kid().to_owned()));
        assert!(s.signing_current_key());
        // Same key again: the existing signer is reused.
        let s = decide(secret(&a), jwks_of(&[&a]), Some(&signer_a));
        assert!(Arc::ptr_eq(s.signer.as_ref().expect("signer"), &signer_a));
        // New key not yet published: keep the previous one.
        let s = decide(secret(&b), jwks_of(&[&a]), Some(&signer_a));
        assert_eq!(kid(&s), Some(a.kid().to_owned()));
        assert!(!s.signing_current_key());
        assert_eq!(s.secret_kid, b.kid());
        // New key published: switch.
        let s = decide(secret(&b), jwks_of(&[&a, &b]), Some(&signer_a));
        assert_eq!(kid(&s), Some(b.kid().to_owned()));
        // Nothing published ever: no signer.
        assert_eq!(kid(&decide(secret(&b), jwks_of(&[&a]), None)), None);
        // The previous key was withdrawn and the new one is unpublished: no signer.
        assert_eq!(kid(&decide(secret(&b), jwks_of(&[]), Some(&signer_a))), None);
    }

    #[test]
    fn signed_tokens_verify_with_the_published_key() {
        for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA, Algorithm::PS384] {
            let k = key(alg);
            let verifying: VerifyingKey = k.public_jwk().verifying_key().expect("jwk");
            let signer = Signer::new(clone(&k));
            let token = signer.sign(br#"{"sub":"x"}"#).expect("sign");
            let header = jsonwebtoken::decode_header(&token).expect("header");
            assert_eq!(header.typ.as_deref(), Some("at+jwt"));
            assert_eq!(header.kid.as_deref(), Some(k.kid()));
            let (message, signature) = token.rsplit_once('.').expect("jws");
            assert!(
                jsonwebtoken::crypto::verify(signature, message.as_bytes(), &verifying.key, alg.to_jwt())
                    .expect("verify")
            );
        }
    }

    #[test]
    fn etag_follows_the_bytes() {
        let a = key(Algorithm::ES256);
        let one = jwks_of(&[&a]);
        assert_eq!(one.etag, jwks_of(&[&a]).etag);
        assert_ne!(one.etag, jwks_of(&[&a, &key(Algorithm::ES256)]).etag);
        assert!(one.etag.starts_with('"') && one.etag.ends_with('"'));
        assert_eq!(one.algorithms, [Algorithm::ES256]);
    }
}
