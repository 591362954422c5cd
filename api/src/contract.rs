//! The key contract: what the operator writes and the issuer and sidecar read.
//!
//! * Secret `<secretName>` of type [`SECRET_TYPE`]: the active key as
//!   [`PRIVATE_KEY`] (PKCS#8 PEM), [`KID`] and [`ALG`]; while a key is
//!   pre-published also [`NEXT_PRIVATE_KEY`], [`NEXT_KID`] and [`NEXT_ALG`].
//!   Mounted as a volume, these are the files the issuer reads.
//!   Beside them: [`LIFECYCLE`], every published key's lifecycle (and the
//!   public keys of retired ones), and [`MAX_TOKEN_LIFETIME`]. The Secret is
//!   the operator's whole state: only it (and whoever could replace the
//!   private key anyway) can write there.
//! * ConfigMap `<jwksConfigMapName>`: [`JWKS`], the public JWK Set (next, active
//!   and retained retired keys, never a revoked one), rendered from the
//!   Secret. It is output only: whatever else appears in it is removed.
//! * Both carry the [`LABEL_MANAGED_BY`] and [`LABEL_SIGNING_KEY`] labels and a
//!   controller ownerReference to their SigningKey.
//!
//! `docs/contract.md` is the same contract in prose.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;
use crate::jwk::Jwk;
use crate::keys::{KeyError, PrivateKey};
use crate::signing_key::KeyStatus;

/// `type` of the Secret, so tools and people can tell it apart.
pub const SECRET_TYPE: &str = "sigil.dev/signing-key";
/// Secret key: PKCS#8 PEM of the active private key.
pub const PRIVATE_KEY: &str = "private.pem";
/// Secret key: `kid` of the active key (its RFC 7638 thumbprint).
pub const KID: &str = "kid";
/// Secret key: JWS algorithm of the active key.
pub const ALG: &str = "alg";
/// Secret key: PKCS#8 PEM of the pre-published next key.
pub const NEXT_PRIVATE_KEY: &str = "next.pem";
/// Secret key: `kid` of the next key.
pub const NEXT_KID: &str = "next.kid";
/// Secret key: algorithm of the next key (the spec's algorithm may have changed).
pub const NEXT_ALG: &str = "next.alg";
/// Secret key: the SigningKey's `maxTokenLifetime` as a Go duration (`1h`).
/// The issuer caps every token's lifetime at it: `retain` covers tokens of
/// this lifetime, and no longer.
pub const MAX_TOKEN_LIFETIME: &str = "max-token-lifetime";

/// ConfigMap key: the RFC 7517 JWK Set.
pub const JWKS: &str = "jwks.json";
/// Media type of a JWK Set (RFC 7517 section 8.5.1).
pub const JWKS_MEDIA_TYPE: &str = "application/jwk-set+json";

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "sigil-operator";
/// Label naming the SigningKey an object belongs to.
pub const LABEL_SIGNING_KEY: &str = "sigil.dev/signing-key";

/// SigningKey annotation a user sets to a new value to rotate now.
pub const ANNOTATION_ROTATE: &str = "sigil.dev/rotate";

/// Secret key: the operator's record of every published key ([`Lifecycle`]).
/// It lives beside the private keys because only the operator writes there;
/// the JWKS ConfigMap is rendered from it and never read back as truth.
pub const LIFECYCLE: &str = "lifecycle.json";

/// Field manager for server-side apply.
pub const FIELD_MANAGER: &str = "sigil-operator";

pub fn default_secret_name(signing_key: &str) -> String {
    format!("{signing_key}-signing-key")
}

pub fn default_jwks_config_map_name(signing_key: &str) -> String {
    format!("{signing_key}-jwks")
}

/// Labels every object the operator creates for `signing_key` carries.
pub fn labels(signing_key: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (LABEL_SIGNING_KEY.to_owned(), signing_key.to_owned()),
    ])
}

/// Label selector matching every object the operator manages.
pub fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY}")
}

#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{0} is not UTF-8 text")]
    NotText(&'static str),
    #[error("{file}: {source}")]
    Algorithm { file: &'static str, source: crate::algorithm::UnknownAlgorithm },
    #[error("{file}: {source}")]
    Key { file: &'static str, source: KeyError },
    #[error("{kid_file} says {stated:?} but the key in {pem_file} has kid {actual:?}")]
    KidMismatch { kid_file: &'static str, pem_file: &'static str, stated: String, actual: String },
    #[error("{0} and {1} must be present together")]
    Incomplete(&'static str, &'static str),
    #[error("{LIFECYCLE} is not valid: {0}")]
    Lifecycle(String),
}

/// The private keys a Secret holds.
#[derive(Debug)]
pub struct SecretKeys {
    pub active: PrivateKey,
    pub next: Option<PrivateKey>,
}

impl SecretKeys {
    /// Reads the keys from the Secret's entries, via `get` (Secret data or the
    /// files of its volume mount). Every stated `kid` must match its key.
    pub fn parse<'a>(get: impl Fn(&str) -> Option<&'a [u8]>) -> Result<SecretKeys, ContractError> {
        let active = read_key(&get, PRIVATE_KEY, KID, ALG, None)?.ok_or(ContractError::Missing(PRIVATE_KEY))?;
        let next = read_key(&get, NEXT_PRIVATE_KEY, NEXT_KID, NEXT_ALG, Some(active.algorithm()))?;
        Ok(SecretKeys { active, next })
    }

    /// Parses a Secret's `data`.
    pub fn from_secret_data(data: &BTreeMap<String, ByteString>) -> Result<SecretKeys, ContractError> {
        Self::parse(|k| data.get(k).map(|v| v.0.as_slice()))
    }

    /// The Secret `data` for these keys.
    pub fn to_secret_data(&self) -> BTreeMap<String, ByteString> {
        let mut data = BTreeMap::new();
        let mut put = |k: &str, v: &[u8]| data.insert(k.to_owned(), ByteString(v.to_vec()));
        put(PRIVATE_KEY, self.active.to_pkcs8_pem().as_bytes());
        put(KID, self.active.kid().as_bytes());
        put(ALG, self.active.algorithm().as_str().as_bytes());
        if let Some(next) = &self.next {
            put(NEXT_PRIVATE_KEY, next.to_pkcs8_pem().as_bytes());
            put(NEXT_KID, next.kid().as_bytes());
            put(NEXT_ALG, next.algorithm().as_str().as_bytes());
        }
        data
    }
}

fn text<'a>(get: &impl Fn(&str) -> Option<&'a [u8]>, file: &'static str) -> Result<Option<&'a str>, ContractError> {
    get(file).map(|b| std::str::from_utf8(b).map(str::trim).map_err(|_| ContractError::NotText(file))).transpose()
}

fn read_key<'a>(
    get: &impl Fn(&str) -> Option<&'a [u8]>,
    pem_file: &'static str,
    kid_file: &'static str,
    alg_file: &'static str,
    default_alg: Option<Algorithm>,
) -> Result<Option<PrivateKey>, ContractError> {
    let (pem, kid) = match (get(pem_file), text(get, kid_file)?) {
        (None, None) => return Ok(None),
        (Some(pem), Some(kid)) => (pem, kid),
        _ => return Err(ContractError::Incomplete(pem_file, kid_file)),
    };
    let alg = match (text(get, alg_file)?, default_alg) {
        (Some(a), _) => a.parse().map_err(|source| ContractError::Algorithm { file: alg_file, source })?,
        (None, Some(a)) => a,
        (None, None) => return Err(ContractError::Missing(alg_file)),
    };
    let key = PrivateKey::from_pkcs8_pem(alg, pem).map_err(|source| ContractError::Key { file: pem_file, source })?;
    if key.kid() != kid {
        return Err(ContractError::KidMismatch {
            kid_file,
            pem_file,
            stated: kid.to_owned(),
            actual: key.kid().to_owned(),
        });
    }
    Ok(Some(key))
}

/// One published key's lifecycle as the operator stores it: the record
/// `status.keys` shows, plus the public key of a key that has left the
/// Secret's key slots (a retired key), so it stays publishable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct KeyRecord {
    #[serde(flatten)]
    pub status: KeyStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwk: Option<Jwk>,
}

/// The content of [`LIFECYCLE`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    /// Sorted by key id, so the same state always renders the same bytes.
    pub keys: Vec<KeyRecord>,
    /// The last `sigil.dev/rotate` value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_handled: Option<String>,
}

impl Lifecycle {
    pub fn render(&self) -> String {
        let mut sorted = self.clone();
        sorted.keys.sort_by(|a, b| a.status.key_id.cmp(&b.status.key_id));
        serde_json::to_string(&sorted).unwrap_or_default()
    }

    pub fn parse(bytes: &[u8]) -> Result<Lifecycle, ContractError> {
        serde_json::from_slice(bytes).map_err(|e| ContractError::Lifecycle(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing_key::KeyState;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn key(alg: Algorithm) -> PrivateKey {
        PrivateKey::generate(alg, None).expect("generate")
    }

    #[test]
    fn secret_round_trip_with_and_without_next() {
        let keys = SecretKeys { active: key(Algorithm::ES256), next: None };
        let data = keys.to_secret_data();
        assert_eq!(data.keys().map(String::as_str).collect::<Vec<_>>(), vec![ALG, KID, PRIVATE_KEY]);
        let back = SecretKeys::from_secret_data(&data).expect("parse");
        assert_eq!(back.active.kid(), keys.active.kid());
        assert!(back.next.is_none());

        let keys = SecretKeys { active: key(Algorithm::ES256), next: Some(key(Algorithm::EdDSA)) };
        let back = SecretKeys::from_secret_data(&keys.to_secret_data()).expect("parse");
        let next = back.next.expect("next key survives");
        assert_eq!(next.kid(), keys.next.as_ref().expect("next").kid());
        assert_eq!(next.algorithm(), Algorithm::EdDSA);
    }

    #[test]
    fn next_alg_defaults_to_the_active_algorithm() {
        let keys = SecretKeys { active: key(Algorithm::ES384), next: Some(key(Algorithm::ES384)) };
        let mut data = keys.to_secret_data();
        data.remove(NEXT_ALG);
        let back = SecretKeys::from_secret_data(&data).expect("parse");
        assert_eq!(back.next.expect("next").algorithm(), Algorithm::ES384);
    }

    #[test]
    fn files_from_a_volume_mount_parse_with_trailing_newlines() {
        let k = key(Algorithm::RS256);
        let pem = k.to_pkcs8_pem();
        let kid = format!("{}\n", k.kid());
        let files: BTreeMap<&str, &[u8]> =
            BTreeMap::from([(PRIVATE_KEY, pem.as_bytes()), (KID, kid.as_bytes()), (ALG, &b"RS256\n"[..])]);
        let keys = SecretKeys::parse(|name| files.get(name).copied()).expect("parse");
        assert_eq!(keys.active.kid(), k.kid());
    }

    #[test]
    fn broken_secrets_are_named_precisely() {
        let good = SecretKeys { active: key(Algorithm::ES256), next: Some(key(Algorithm::ES256)) }.to_secret_data();
        let without = |k: &str| {
            let mut d = good.clone();
            d.remove(k);
            SecretKeys::from_secret_data(&d).expect_err("must fail").to_string()
        };
        assert_eq!(without(PRIVATE_KEY), "private.pem and kid must be present together");
        assert_eq!(without(NEXT_KID), "next.pem and next.kid must be present together");
        assert_eq!(without(ALG), "alg is missing");
        let mut d = good.clone();
        d.insert(KID.into(), ByteString(b"someone-else".to_vec()));
        assert!(matches!(SecretKeys::from_secret_data(&d), Err(ContractError::KidMismatch { .. })));
        let mut d = good.clone();
        d.insert(ALG.into(), ByteString(b"HS256".to_vec()));
        assert!(matches!(SecretKeys::from_secret_data(&d), Err(ContractError::Algorithm { .. })));
        let mut d = good;
        d.insert(ALG.into(), ByteString(b"RS256".to_vec()));
        assert!(matches!(SecretKeys::from_secret_data(&d), Err(ContractError::Key { file: PRIVATE_KEY, .. })));
        assert!(matches!(SecretKeys::from_secret_data(&BTreeMap::new()), Err(ContractError::Missing(PRIVATE_KEY))));
    }

    #[test]
    fn lifecycle_round_trips_in_kid_order() {
        let t = |s: &str| Time(s.parse().expect("timestamp"));
        let retired_key = key(Algorithm::ES256);
        let records = vec![
            KeyRecord {
                status: KeyStatus {
                    key_id: "b".into(),
                    state: KeyState::Next,
                    algorithm: Algorithm::ES256,
                    published_at: t("2026-01-02T00:00:00Z"),
                    activated_at: None,
                    retired_at: None,
                    remove_at: None,
                },
                jwk: None,
            },
            KeyRecord {
                status: KeyStatus {
                    key_id: "a".into(),
                    state: KeyState::Retired,
                    algorithm: Algorithm::ES256,
                    published_at: t("2026-01-01T00:00:00Z"),
                    activated_at: Some(t("2026-01-01T00:00:00Z")),
                    retired_at: Some(t("2026-01-03T00:00:00Z")),
                    remove_at: Some(t("2026-01-04T00:00:00Z")),
                },
                jwk: Some(retired_key.public_jwk().clone()),
            },
        ];
        let lifecycle = Lifecycle { keys: records.clone(), rotate_handled: Some("1".into()) };
        let text = lifecycle.render();
        assert!(text.find("\"a\"") < text.find("\"b\""));
        assert!(text.contains("\"keyId\":\"a\"") && text.contains("\"rotateHandled\":\"1\""), "{text}");
        assert!(!text.contains("PRIVATE"), "{text}");
        let back = Lifecycle::parse(text.as_bytes()).expect("parse");
        assert_eq!(back.keys, vec![records[1].clone(), records[0].clone()]);
        assert_eq!(back.render(), text);
        assert!(matches!(Lifecycle::parse(b"{"), Err(ContractError::Lifecycle(_))));
    }

    #[test]
    fn names_and_labels() {
        assert_eq!(default_secret_name("api"), "api-signing-key");
        assert_eq!(default_jwks_config_map_name("api"), "api-jwks");
        assert_eq!(labels("api")[LABEL_SIGNING_KEY], "api");
        assert_eq!(managed_selector(), "app.kubernetes.io/managed-by=sigil-operator");
    }
}
