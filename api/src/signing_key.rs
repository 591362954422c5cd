//! The `SigningKey` custom resource (`sigil.dev/v1alpha1`).
//!
//! These types are the single source of truth for the CRD: `crds/signingkey.yaml`
//! is generated from them (`make generate`). Doc comments on fields become the
//! descriptions `kubectl explain signingkey.spec` shows, so they are written for
//! users. Rules the API server enforces (schema bounds and CEL) are mirrored by
//! [`SigningKeySpec::validate`], which the operator runs too, because a cluster
//! may still serve an older CRD.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::algorithm::{Algorithm, DEFAULT_RSA_KEY_SIZE, RSA_KEY_SIZES};
use crate::duration::{self, DurationError};

/// A key pair that Sigil generates, publishes and rotates.
///
/// The private key lives only in the Secret named by `secretName`; the public
/// keys that verifiers need live in the JWKS ConfigMap named by
/// `jwksConfigMapName`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sigil.dev",
    version = "v1alpha1",
    kind = "SigningKey",
    namespaced,
    shortname = "sk",
    doc = "A signing key pair that Sigil generates, publishes as a JWKS and rotates on schedule.",
    status = "SigningKeyStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name": "Algorithm", "type": "string", "jsonPath": ".spec.algorithm"}"#,
    printcolumn = r#"{"name": "Active Key", "type": "string", "jsonPath": ".status.activeKeyId"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    // A string, not a date: kubectl renders future dates as "<invalid>".
    printcolumn = r#"{"name": "Next Rotation", "type": "string", "jsonPath": ".status.nextRotationTime"}"#,
    printcolumn = r#"{"name": "Copies", "type": "integer", "jsonPath": ".status.distribution.syncedNamespaces", "priority": 1}"#,
    printcolumn = r#"{"name": "Selected", "type": "integer", "jsonPath": ".status.distribution.selectedNamespaces", "priority": 1}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("!has(self.keySize) || self.algorithm.startsWith('RS') || self.algorithm.startsWith('PS')")
        .message("keySize applies only to RSA algorithms (RS256, RS384, RS512, PS256, PS384, PS512); remove it for ES256, ES384 and EdDSA")
        .field_path(".keySize"),
    validation = Rule::new("has(self.secretName) == has(oldSelf.secretName) && (!has(self.secretName) || self.secretName == oldSelf.secretName)")
        .message("secretName is immutable: create a new SigningKey to use another Secret")
        .field_path(".secretName"),
    validation = Rule::new("has(self.jwksConfigMapName) == has(oldSelf.jwksConfigMapName) && (!has(self.jwksConfigMapName) || self.jwksConfigMapName == oldSelf.jwksConfigMapName)")
        .message("jwksConfigMapName is immutable: create a new SigningKey to use another ConfigMap")
        .field_path(".jwksConfigMapName"),
    // Parse errors are reported by the fields' own rules; this one only relates them.
    validation = Rule::new(concat!(
        "!self.maxTokenLifetime.matches('", sigil_core::duration_pattern!(), "') || !self.rotation.prePublish.matches('", sigil_core::duration_pattern!(),
        "') || !self.rotation.retain.matches('", sigil_core::duration_pattern!(),
        "') || duration(self.rotation.retain) >= duration(self.maxTokenLifetime) + duration(self.rotation.prePublish) + duration('60s')"
    ))
    .message("rotation.retain must be at least maxTokenLifetime + rotation.prePublish + 1m: an issuer can sign with a retired key until the Secret reaches it (prePublish covers that), its tokens live maxTokenLifetime, and verifiers allow up to 1m of clock skew. Raise retain or lower maxTokenLifetime")
    .field_path(".rotation.retain"),
)]
#[serde(rename_all = "camelCase")]
pub struct SigningKeySpec {
    /// JWS algorithm the key signs with. RSA algorithms (RS*, PS*) are the most
    /// widely supported; ES256 and EdDSA give small keys and fast signing.
    #[serde(default)]
    pub algorithm: Algorithm,

    /// RSA modulus size in bits: 2048, 3072 or 4096 (default 2048). Only valid
    /// with RS* and PS* algorithms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Described as int32: Kubernetes warns about the unknown format "uint32".
    #[schemars(with = "Option<i32>", extend("enum" = [2048, 3072, 4096]))]
    pub key_size: Option<u32>,

    /// When keys are replaced and how long old ones stay published.
    #[serde(default)]
    pub rotation: Rotation,

    /// Name of the Secret that holds the private key (default `<name>-signing-key`).
    /// Immutable once the SigningKey exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = OBJECT_NAME_PATTERN)
    )]
    pub secret_name: Option<String>,

    /// Name of the ConfigMap that holds the public JWK Set (default `<name>-jwks`).
    /// Immutable once the SigningKey exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = OBJECT_NAME_PATTERN)
    )]
    pub jwks_config_map_name: Option<String>,

    /// The longest lifetime of a token signed with this key (default `1h`,
    /// 1s to 24h). The issuer caps every token at it, and `rotation.retain`
    /// must cover it, so a token never outlives its key's publication.
    #[serde(default = "default_max_token_lifetime")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(concat!("self.matches('", sigil_core::duration_pattern!(), "')"))
            .message("maxTokenLifetime must be a Go duration such as 1h, 15m or 90s"),
        validation = Rule::new(concat!("!self.matches('", sigil_core::duration_pattern!(), "') || (duration(self) >= duration('1s') && duration(self) <= duration('24h'))"))
            .message("maxTokenLifetime must be between 1s and 24h"),
    )]
    pub max_token_lifetime: String,

    /// Key ids (`kid`) to withdraw at once, e.g. after a key compromise. A revoked
    /// key leaves the JWKS immediately, so tokens it signed stop verifying; if it
    /// is the active key, a new key is generated and activated at once.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    #[schemars(length(max = 64), extend("x-kubernetes-list-type" = "set"), inner(length(min = 1, max = 128)))]
    pub revoked_key_ids: BTreeSet<String>,

    /// Copies of the JWKS ConfigMap in other namespaces, for verifiers that
    /// live there (a ConfigMap volume mounts only from its own namespace).
    /// Needs the operator in cluster scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Distribution>,
}

/// Where the JWKS is copied. The operator keeps each copy identical to the
/// source ConfigMap, in the same step, so `prePublish` covers copies too.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.namespaceSelector.matchExpressions) || self.namespaceSelector.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])")
        .message("namespaceSelector.matchExpressions: operator must be In, NotIn, Exists or DoesNotExist")
        .field_path(".namespaceSelector.matchExpressions"),
    validation = Rule::new("!has(self.namespaceSelector.matchExpressions) || self.namespaceSelector.matchExpressions.all(e, (e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0))")
        .message("namespaceSelector.matchExpressions: In and NotIn need at least one value; Exists and DoesNotExist take none")
        .field_path(".namespaceSelector.matchExpressions"),
)]
#[serde(rename_all = "camelCase")]
pub struct Distribution {
    /// Namespaces that get a copy, by label. `{}` selects every namespace;
    /// `matchLabels: {kubernetes.io/metadata.name: shop}` one by name. The
    /// SigningKey's own namespace never gets a copy (the source is there),
    /// nor does a namespace being deleted.
    pub namespace_selector: LabelSelector,

    /// Name of each copy (default: the source's `jwksConfigMapName`, so a
    /// verifier mounts the same name in every namespace). A ConfigMap of
    /// that name that Sigil did not create is never touched: the namespace is
    /// reported as a conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = OBJECT_NAME_PATTERN)
    )]
    pub config_map_name: Option<String>,
}

/// An RFC 1123 subdomain, what Kubernetes requires of Secret and ConfigMap
/// names; [`check_name`] enforces the same in the operator.
const OBJECT_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// The rotation schedule. Durations are Go-style strings such as `720h`, `90m`
/// or `1h30m`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new(concat!(
        "!self.every.matches('", sigil_core::duration_pattern!(), "') || !self.prePublish.matches('", sigil_core::duration_pattern!(),
        "') || duration(self.prePublish) < duration(self.every)"
    ))
    .message("prePublish must be shorter than every: a new key is published prePublish before it starts signing, within the key's period")
    .field_path(".prePublish"),
    validation = Rule::new(concat!(
        "!self.every.matches('", sigil_core::duration_pattern!(), "') || !self.retain.matches('", sigil_core::duration_pattern!(),
        "') || duration(self.retain).getSeconds() <= 30 * duration(self.every).getSeconds()"
    ))
    .message("retain must be at most 30 times every: each rotation leaves a retired key published for retain, and a SigningKey keeps at most 32 of them. Rotate less often or retain for less")
    .field_path(".retain"),
)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// How long a key signs before it is replaced (default `720h`, at least `1m`).
    #[serde(default = "default_every")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(concat!("self.matches('", sigil_core::duration_pattern!(), "')"))
            .message("every must be a Go duration such as 720h, 90m or 1h30m"),
        validation = Rule::new(concat!("!self.matches('", sigil_core::duration_pattern!(), "') || duration(self) >= duration('1m')"))
            .message("every must be at least 1m"),
    )]
    pub every: String,

    /// How long a new key is published in the JWKS before it starts signing, so
    /// every verifier has fetched it by then (default `1h`; shorter than
    /// `every`). The operator refuses less than the time the kubelet takes to
    /// deliver a changed ConfigMap to a pod (`--min-pre-publish`, default `2m`).
    #[serde(default = "default_pre_publish")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(concat!("self.matches('", sigil_core::duration_pattern!(), "')"))
            .message("prePublish must be a Go duration such as 1h, 10m or 30s"),
        validation = Rule::new(concat!("!self.matches('", sigil_core::duration_pattern!(), "') || duration(self) >= duration('1s')"))
            .message("prePublish must be at least 1s, and the operator requires at least its --min-pre-publish (2m unless lowered for tests): verifiers must see a key before it signs"),
    )]
    pub pre_publish: String,

    /// How long a retired key stays in the JWKS after it stopped signing
    /// (default `24h`): at least `maxTokenLifetime + prePublish + 1m`, so every
    /// token it signed expires first, and at most 30 times `every`.
    #[serde(default = "default_retain")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(concat!("self.matches('", sigil_core::duration_pattern!(), "')"))
        .message("retain must be a Go duration such as 24h, 90m or 30s"))]
    pub retain: String,
}

fn default_every() -> String {
    "720h".to_owned()
}
fn default_pre_publish() -> String {
    "1h".to_owned()
}
fn default_retain() -> String {
    "24h".to_owned()
}
fn default_max_token_lifetime() -> String {
    "1h".to_owned()
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation { every: default_every(), pre_publish: default_pre_publish(), retain: default_retain() }
    }
}

/// What the operator observed and did, for `kubectl get sk` and for people.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SigningKeyStatus {
    /// The `.metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` is True when the Secret holds an active key that the JWKS publishes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Key id (RFC 7638 thumbprint) of the key that signs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_key_id: Option<String>,

    /// Key id of the pre-published key that signs next, while there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_key_id: Option<String>,

    /// When the next key becomes active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<Time>,

    /// Every key in the JWKS, with its lifecycle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["keyId"]))]
    pub keys: Vec<KeyStatus>,

    /// Copies of the JWKS in other namespaces, while `spec.distribution` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<DistributionStatus>,
}

/// How far the JWKS copies are. The `Distributed` condition says why some lag.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DistributionStatus {
    /// Namespaces the selector selects (the SigningKey's own excluded).
    #[schemars(with = "i32")]
    pub selected_namespaces: u32,
    /// Selected namespaces whose copy equals the source.
    #[schemars(with = "i32")]
    pub synced_namespaces: u32,
    /// Selected namespaces holding a ConfigMap of the copy's name that Sigil
    /// did not create (at most 20 named, in order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    /// Selected namespaces where the last write failed (at most 20 named).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
}

/// Where a key is in its life: `Next` (published, not yet signing), `Active`
/// (signing), `Retired` (published until tokens it signed have expired).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
pub enum KeyState {
    Next,
    Active,
    Retired,
}

/// One key's lifecycle. The same record is kept on the JWKS ConfigMap, so
/// status can be rebuilt from the cluster's objects.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatus {
    /// RFC 7638 JWK thumbprint of the public key (the JWS `kid`).
    pub key_id: String,
    /// Where the key is in its life.
    pub state: KeyState,
    /// Algorithm the key signs with.
    pub algorithm: Algorithm,
    /// When the key entered the JWKS.
    pub published_at: Time,
    /// When the key started signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<Time>,
    /// When the key stopped signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<Time>,
    /// When the key leaves the JWKS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_at: Option<Time>,
}

/// A spec the operator can act on: every field parsed and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidSpec {
    pub algorithm: Algorithm,
    /// RSA modulus bits; `None` for non-RSA algorithms.
    pub rsa_bits: Option<u32>,
    pub every: Duration,
    pub pre_publish: Duration,
    pub retain: Duration,
    pub max_token_lifetime: Duration,
    pub secret_name: String,
    pub jwks_config_map_name: String,
    pub revoked_key_ids: BTreeSet<String>,
    pub distribution: Option<ValidDistribution>,
}

/// `spec.distribution`, parsed.
#[derive(Clone, Debug)]
pub struct ValidDistribution {
    pub selector: kube::core::Selector,
    pub config_map_name: String,
}

/// Selectors compare by what they select, written the same way.
impl PartialEq for ValidDistribution {
    fn eq(&self, other: &Self) -> bool {
        self.selector.to_string() == other.selector.to_string() && self.config_map_name == other.config_map_name
    }
}
impl Eq for ValidDistribution {}

/// Why a spec cannot be acted on. Messages are for users (status and events).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("keySize {0} is not supported: use 2048, 3072 or 4096")]
    KeySize(u32),
    #[error("keySize applies only to RSA algorithms; remove it for {0}")]
    KeySizeWithoutRsa(Algorithm),
    #[error("{field}: {source}")]
    Duration { field: &'static str, source: DurationError },
    #[error("rotation.every must be at least 1m, got {0}")]
    EveryTooShort(String),
    #[error("rotation.prePublish ({pre_publish}) must be shorter than rotation.every ({every})")]
    PrePublishNotShorter { pre_publish: String, every: String },
    #[error("rotation.prePublish must be at least 1s, got {0}")]
    PrePublishTooShort(String),
    #[error("maxTokenLifetime must be between 1s and 24h, got {0}")]
    MaxTokenLifetime(String),
    #[error(
        "rotation.retain ({retain}) must be at least maxTokenLifetime + rotation.prePublish + 1m ({needed}), \
         or tokens signed just before their key retired outlive its publication"
    )]
    RetainTooShort { retain: String, needed: String },
    #[error("rotation.retain ({retain}) must be at most 30 times rotation.every ({every})")]
    RetainTooLong { retain: String, every: String },
    #[error("{field} {value:?} is not a valid Kubernetes object name")]
    Name { field: &'static str, value: String },
    #[error("distribution.namespaceSelector is invalid: {0}")]
    Selector(String),
}

/// The shortest rotation period a SigningKey accepts (the CRD enforces the same).
pub const MIN_EVERY: Duration = Duration::from_secs(60);
/// The shortest `prePublish` the CRD accepts; the operator's own floor
/// (`--min-pre-publish`) is higher unless lowered for tests.
pub const MIN_PRE_PUBLISH: Duration = Duration::from_secs(1);
/// The bounds of `maxTokenLifetime` (the CRD enforces the same).
pub const MAX_TOKEN_LIFETIME_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(24 * 3600);
/// `retain` may be at most this many times `every`: with scheduled rotations,
/// fewer retired keys than [`MAX_RETIRED_KEYS`] are ever published at once.
pub const MAX_RETAIN_PER_EVERY: u32 = 30;
/// The most retired keys a SigningKey keeps. Rotations beyond the schedule
/// (manual ones, algorithm changes) wait while this many are retained, so the
/// operator's state has a fixed bound.
pub const MAX_RETIRED_KEYS: usize = 32;

impl SigningKeySpec {
    /// Checks the spec the way the CRD's schema and CEL rules do, and resolves
    /// defaults that depend on the object's name. `name` is the SigningKey's name.
    pub fn validate(&self, name: &str) -> Result<ValidSpec, SpecError> {
        let rsa_bits = match (self.algorithm.is_rsa(), self.key_size) {
            (true, None) => Some(DEFAULT_RSA_KEY_SIZE),
            (true, Some(bits)) if RSA_KEY_SIZES.contains(&bits) => Some(bits),
            (true, Some(bits)) => return Err(SpecError::KeySize(bits)),
            (false, None) => None,
            (false, Some(_)) => return Err(SpecError::KeySizeWithoutRsa(self.algorithm)),
        };
        let parse = |field: &'static str, value: &str| {
            duration::parse(value).map_err(|source| SpecError::Duration { field, source })
        };
        let every = parse("rotation.every", &self.rotation.every)?;
        let pre_publish = parse("rotation.prePublish", &self.rotation.pre_publish)?;
        let retain = parse("rotation.retain", &self.rotation.retain)?;
        if every < MIN_EVERY {
            return Err(SpecError::EveryTooShort(self.rotation.every.clone()));
        }
        if pre_publish < MIN_PRE_PUBLISH {
            return Err(SpecError::PrePublishTooShort(self.rotation.pre_publish.clone()));
        }
        if pre_publish >= every {
            return Err(SpecError::PrePublishNotShorter {
                pre_publish: self.rotation.pre_publish.clone(),
                every: self.rotation.every.clone(),
            });
        }
        let max_token_lifetime = parse("maxTokenLifetime", &self.max_token_lifetime)?;
        if !MAX_TOKEN_LIFETIME_RANGE.contains(&max_token_lifetime) {
            return Err(SpecError::MaxTokenLifetime(self.max_token_lifetime.clone()));
        }
        let needed = max_token_lifetime + pre_publish + sigil_core::MAX_LEEWAY;
        if retain < needed {
            let (retain, needed) = (self.rotation.retain.clone(), duration::format(needed));
            return Err(SpecError::RetainTooShort { retain, needed });
        }
        if retain > every * MAX_RETAIN_PER_EVERY {
            let (retain, every) = (self.rotation.retain.clone(), self.rotation.every.clone());
            return Err(SpecError::RetainTooLong { retain, every });
        }
        let secret_name = self.secret_name.clone().unwrap_or_else(|| crate::contract::default_secret_name(name));
        let jwks_config_map_name =
            self.jwks_config_map_name.clone().unwrap_or_else(|| crate::contract::default_jwks_config_map_name(name));
        check_name("secretName", &secret_name)?;
        check_name("jwksConfigMapName", &jwks_config_map_name)?;
        let distribution = match &self.distribution {
            None => None,
            Some(d) => {
                let selector = kube::core::Selector::try_from(d.namespace_selector.clone())
                    .map_err(|e| SpecError::Selector(e.to_string()))?;
                let config_map_name = d.config_map_name.clone().unwrap_or_else(|| jwks_config_map_name.clone());
                check_name("distribution.configMapName", &config_map_name)?;
                Some(ValidDistribution { selector, config_map_name })
            }
        };
        Ok(ValidSpec {
            algorithm: self.algorithm,
            rsa_bits,
            every,
            pre_publish,
            retain,
            max_token_lifetime,
            secret_name,
            jwks_config_map_name,
            revoked_key_ids: self.revoked_key_ids.clone(),
            distribution,
        })
    }
}

/// RFC 1123 subdomain, as Kubernetes requires of Secret and ConfigMap names.
fn check_name(field: &'static str, value: &str) -> Result<(), SpecError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if value.len() <= 253 && value.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(SpecError::Name { field, value: value.to_owned() })
    }
}

/// The CRD as the YAML committed in `crds/signingkey.yaml`.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let body = serde_yaml::to_string(&SigningKey::crd()).unwrap_or_default();
    format!("# Generated from api/src/signing_key.rs by `make generate`; do not edit.\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> SigningKeySpec {
        serde_json::from_value(json).expect("spec deserializes")
    }

    #[test]
    fn empty_spec_gets_documented_defaults() {
        let s = spec(serde_json::json!({}));
        assert_eq!(s.algorithm, Algorithm::RS256);
        assert_eq!(s.key_size, None);
        assert_eq!(s.rotation, Rotation { every: "720h".into(), pre_publish: "1h".into(), retain: "24h".into() });
        let v = s.validate("api").expect("defaults are valid");
        assert_eq!(v.rsa_bits, Some(2048));
        assert_eq!(v.every, Duration::from_secs(720 * 3600));
        assert_eq!(v.pre_publish, Duration::from_secs(3600));
        assert_eq!(v.retain, Duration::from_secs(24 * 3600));
        assert_eq!(v.secret_name, "api-signing-key");
        assert_eq!(v.jwks_config_map_name, "api-jwks");
        assert!(v.revoked_key_ids.is_empty());
    }

    #[test]
    fn partial_rotation_keeps_other_defaults() {
        let s = spec(serde_json::json!({"rotation": {"every": "20s"}}));
        assert_eq!(s.rotation.pre_publish, "1h");
        assert_eq!(s.rotation.retain, "24h");
    }

    /// Each row mirrors one schema bound or CEL rule of the CRD.
    #[test]
    fn validation_mirrors_the_crd_rules() {
        let cases: Vec<(serde_json::Value, Result<(), SpecError>)> = vec![
            (serde_json::json!({"algorithm": "ES256"}), Ok(())),
            (serde_json::json!({"algorithm": "PS384", "keySize": 4096}), Ok(())),
            (serde_json::json!({"algorithm": "RS256", "keySize": 3072}), Ok(())),
            (serde_json::json!({"keySize": 1024}), Err(SpecError::KeySize(1024))),
            (
                serde_json::json!({"algorithm": "EdDSA", "keySize": 2048}),
                Err(SpecError::KeySizeWithoutRsa(Algorithm::EdDSA)),
            ),
            (
                serde_json::json!({"algorithm": "ES384", "keySize": 2048}),
                Err(SpecError::KeySizeWithoutRsa(Algorithm::ES384)),
            ),
            (
                serde_json::json!({"maxTokenLifetime": "1m", "rotation": {"every": "1m", "prePublish": "30s", "retain": "30m"}}),
                Ok(()),
            ),
            (
                serde_json::json!({"rotation": {"every": "1m", "prePublish": "30s"}}),
                Err(SpecError::RetainTooLong { retain: "24h".into(), every: "1m".into() }),
            ),
            (
                serde_json::json!({"maxTokenLifetime": "23h"}),
                Err(SpecError::RetainTooShort { retain: "24h".into(), needed: "24h1m".into() }),
            ),
            (serde_json::json!({"maxTokenLifetime": "10m", "rotation": {"prePublish": "5m", "retain": "16m"}}), Ok(())),
            (serde_json::json!({"maxTokenLifetime": "25h"}), Err(SpecError::MaxTokenLifetime("25h".into()))),
            (serde_json::json!({"rotation": {"prePublish": "0s"}}), Err(SpecError::PrePublishTooShort("0s".into()))),
            (serde_json::json!({"maxTokenLifetime": "0s"}), Err(SpecError::MaxTokenLifetime("0s".into()))),
            (
                serde_json::json!({"rotation": {"every": "59s", "prePublish": "10s"}}),
                Err(SpecError::EveryTooShort("59s".into())),
            ),
            (
                serde_json::json!({"rotation": {"every": "1h", "prePublish": "1h"}}),
                Err(SpecError::PrePublishNotShorter { pre_publish: "1h".into(), every: "1h".into() }),
            ),
            (
                serde_json::json!({"rotation": {"every": "1h", "prePublish": "90m"}}),
                Err(SpecError::PrePublishNotShorter { pre_publish: "90m".into(), every: "1h".into() }),
            ),
            (
                serde_json::json!({"secretName": "Not_A_Name"}),
                Err(SpecError::Name { field: "secretName", value: "Not_A_Name".into() }),
            ),
            (serde_json::json!({"jwksConfigMapName": "keys.example"}), Ok(())),
        ];
        for (json, want) in cases {
            let got = spec(json.clone()).validate("api").map(|_| ());
            assert_eq!(got, want, "{json}");
        }
    }

    #[test]
    fn unparsable_durations_name_the_field() {
        for field in ["every", "prePublish", "retain"] {
            let s = spec(serde_json::json!({"rotation": {field: "30 days"}}));
            let err = s.validate("api").expect_err("must fail");
            assert!(matches!(err, SpecError::Duration { field: f, .. } if f == format!("rotation.{field}")), "{err}");
            assert!(err.to_string().starts_with(&format!("rotation.{field}")), "{err}");
        }
    }

    #[test]
    fn unknown_algorithms_do_not_deserialize() {
        for alg in ["none", "HS256", "rs256"] {
            assert!(serde_json::from_value::<SigningKeySpec>(serde_json::json!({ "algorithm": alg })).is_err());
        }
    }

    #[test]
    fn status_round_trips_with_camel_case_names() {
        let status: SigningKeyStatus = serde_json::from_value(serde_json::json!({
            "observedGeneration": 3,
            "activeKeyId": "abc",
            "keys": [{"keyId": "abc", "state": "Active", "algorithm": "ES256",
                      "publishedAt": "2026-01-01T00:00:00Z", "activatedAt": "2026-01-01T00:00:00Z"}]
        }))
        .expect("status deserializes");
        assert_eq!(status.keys[0].state, KeyState::Active);
        let back = serde_json::to_value(&status).expect("serialize");
        assert_eq!(back["keys"][0]["publishedAt"], "2026-01-01T00:00:00Z");
        assert!(back.get("nextKeyId").is_none());
    }
}
