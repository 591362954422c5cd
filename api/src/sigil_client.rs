//! The `SigilClient` custom resource (`sigil.dev/v1alpha1`): which
//! ServiceAccounts of a namespace may get Sigil tokens with their projected
//! ServiceAccount token (workload identity), and with which scopes and
//! audiences.
//!
//! A team creates SigilClients in its own namespace, so Kubernetes RBAC on
//! `sigilclients` decides who can admit whom: a SigilClient only ever admits
//! ServiceAccounts of its own namespace (the names carry no namespace).
//!
//! Like [`crate::signing_key`], these types are the single source of truth for
//! `crds/sigilclient.yaml` (`make generate`), and [`SigilClientSpec::validate`]
//! mirrors the CRD's rules, because the issuer must not trust a cluster to
//! serve the current CRD.

use std::collections::BTreeSet;
use std::time::Duration;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::duration::{self, DurationError};

/// An RFC 1123 subdomain, what Kubernetes requires of ServiceAccount names.
/// Spelled without backslashes for CEL string literals.
macro_rules! object_name_pattern {
    () => {
        "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    };
}

/// RFC 6749 `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`. Inside a CEL
/// string literal, `\\[` and `\\]` reach RE2 as escaped brackets.
macro_rules! scope_pattern {
    () => {
        r"^[!#-\\[\\]-~]+$"
    };
}

/// Printable ASCII without whitespace (RFC 7519 StringOrURI, as the issuer
/// accepts for `--audience`).
macro_rules! audience_pattern {
    () => {
        r"^[!-~]+$"
    };
}

/// The ServiceAccounts of this namespace that may exchange their projected
/// ServiceAccount token for a Sigil token, and what they may ask for.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sigil.dev",
    version = "v1alpha1",
    kind = "SigilClient",
    namespaced,
    // Not `sc`: that is StorageClass's.
    shortname = "sigc",
    doc = "Admits ServiceAccounts of its namespace to Sigil tokens by workload identity (their projected ServiceAccount token), with the scopes and audiences they may request.",
    derive = "PartialEq",
    printcolumn = r#"{"name": "Service Accounts", "type": "string", "jsonPath": ".spec.serviceAccounts"}"#,
    printcolumn = r#"{"name": "Audiences", "type": "string", "jsonPath": ".spec.audiences"}"#,
    printcolumn = r#"{"name": "Scopes", "type": "string", "jsonPath": ".spec.scopes", "priority": 1}"#,
    printcolumn = r#"{"name": "Token TTL", "type": "string", "jsonPath": ".spec.tokenTtl"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SigilClientSpec {
    /// Names of the ServiceAccounts, in this SigilClient's namespace, that it
    /// admits (at least one). A token issued to one has
    /// `sub: system:serviceaccount:<namespace>:<name>`.
    #[schemars(length(min = 1, max = 64), extend("x-kubernetes-list-type" = "set"), inner(length(min = 1, max = 253)))]
    #[x_kube(
        validation = Rule::new(concat!("self.all(n, n.matches('", object_name_pattern!(), "'))"))
            .message("serviceAccounts: each entry must be the name of a ServiceAccount in this SigilClient's namespace (lowercase RFC 1123, e.g. orders-api), not system:serviceaccount:<namespace>:<name>; a SigilClient can only admit ServiceAccounts of its own namespace"),
    )]
    pub service_accounts: Vec<String>,

    /// Scopes the admitted ServiceAccounts may request (RFC 6749 scope tokens:
    /// printable ASCII without spaces, `"` or `\`). A request without `scope`
    /// gets all of them; an empty list grants tokens without scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), extend("x-kubernetes-list-type" = "set"), inner(length(min = 1, max = 128)))]
    #[x_kube(
        validation = Rule::new(concat!("self.all(s, s.matches('", scope_pattern!(), "'))"))
            .message("scopes: each entry must be an RFC 6749 scope token: printable ASCII without spaces, double quotes or backslashes, e.g. orders.read"),
    )]
    pub scopes: Vec<String>,

    /// Audiences (`aud`) the admitted ServiceAccounts may request, at least
    /// one. The first is the default when a request names none.
    #[schemars(length(min = 1, max = 16), extend("x-kubernetes-list-type" = "set"), inner(length(min = 1, max = 256)))]
    #[x_kube(
        validation = Rule::new(concat!("self.all(a, a.matches('", audience_pattern!(), "'))"))
            .message("audiences: each entry must be non-empty printable text without whitespace, e.g. orders-api or https://orders.example"),
    )]
    pub audiences: Vec<String>,

    /// Lifetime of the tokens issued (Go duration, 1s to 24h; default: the
    /// issuer's `--token-ttl`). The signing key's `maxTokenLifetime` still caps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(concat!("self.matches('", sigil_core::duration_pattern!(), "')"))
            .message("tokenTtl must be a Go duration such as 15m, 1h or 90s"),
        validation = Rule::new(concat!("!self.matches('", sigil_core::duration_pattern!(), "') || (duration(self) >= duration('1s') && duration(self) <= duration('24h'))"))
            .message("tokenTtl must be between 1s and 24h"),
    )]
    pub token_ttl: Option<String>,
}

/// The bounds of `tokenTtl`, the same as the clients file's `ttl` (the CRD enforces the same).
pub const TOKEN_TTL_RANGE: std::ops::RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(24 * 3600);

/// A spec the issuer can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidSigilClient {
    pub service_accounts: BTreeSet<String>,
    pub scopes: BTreeSet<String>,
    /// In the spec's order: the first is the default.
    pub audiences: Vec<String>,
    pub token_ttl: Option<Duration>,
}

/// Why a SigilClient cannot be used. Messages are for users (logs and events).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigilClientError {
    #[error("serviceAccounts must name at least one ServiceAccount")]
    NoServiceAccounts,
    #[error("serviceAccounts: {0:?} is not a ServiceAccount name (lowercase RFC 1123, in this namespace)")]
    ServiceAccount(String),
    #[error("scopes: {0:?} is not an RFC 6749 scope token")]
    Scope(String),
    #[error("audiences must name at least one audience")]
    NoAudiences,
    #[error("audiences: {0:?} must be non-empty printable text without whitespace")]
    Audience(String),
    #[error("tokenTtl: {0}")]
    TokenTtl(DurationError),
    #[error("tokenTtl must be between 1s and 24h, got {0}")]
    TokenTtlRange(String),
}

impl SigilClientSpec {
    /// Checks the spec the way the CRD's schema and CEL rules do.
    pub fn validate(&self) -> Result<ValidSigilClient, SigilClientError> {
        if self.service_accounts.is_empty() {
            return Err(SigilClientError::NoServiceAccounts);
        }
        if let Some(bad) = self.service_accounts.iter().find(|n| !is_object_name(n)) {
            return Err(SigilClientError::ServiceAccount(bad.clone()));
        }
        if let Some(bad) = self.scopes.iter().find(|s| !is_scope_token(s)) {
            return Err(SigilClientError::Scope(bad.clone()));
        }
        if self.audiences.is_empty() {
            return Err(SigilClientError::NoAudiences);
        }
        if let Some(bad) = self.audiences.iter().find(|a| !is_audience(a)) {
            return Err(SigilClientError::Audience(bad.clone()));
        }
        let token_ttl = match &self.token_ttl {
            None => None,
            Some(text) => {
                let ttl = duration::parse(text).map_err(SigilClientError::TokenTtl)?;
                if !TOKEN_TTL_RANGE.contains(&ttl) {
                    return Err(SigilClientError::TokenTtlRange(text.clone()));
                }
                Some(ttl)
            }
        };
        let mut audiences = Vec::with_capacity(self.audiences.len());
        for a in &self.audiences {
            if !audiences.contains(a) {
                audiences.push(a.clone());
            }
        }
        Ok(ValidSigilClient {
            service_accounts: self.service_accounts.iter().cloned().collect(),
            scopes: self.scopes.iter().cloned().collect(),
            audiences,
            token_ttl,
        })
    }
}

/// RFC 1123 subdomain of at most 253 characters.
pub fn is_object_name(value: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    value.len() <= 253 && value.split('.').all(label_ok)
}

/// RFC 6749 section 3.3 scope token.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

fn is_audience(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| (0x21..=0x7E).contains(&b))
}

/// The CRD as the YAML committed in `crds/sigilclient.yaml`.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let body = serde_yaml::to_string(&SigilClient::crd()).unwrap_or_default();
    format!("# Generated from api/src/sigil_client.rs by `make generate`; do not edit.\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> SigilClientSpec {
        serde_json::from_value(json).expect("spec deserializes")
    }

    #[test]
    fn a_full_spec_validates() {
        let s = spec(serde_json::json!({
            "serviceAccounts": ["orders", "orders.batch"],
            "scopes": ["orders.read", "orders:write", "!~"],
            "audiences": ["orders-api", "https://orders.example", "orders-api"],
            "tokenTtl": "15m",
        }));
        let v = s.validate().expect("valid");
        assert_eq!(v.service_accounts, BTreeSet::from(["orders".to_owned(), "orders.batch".to_owned()]));
        assert_eq!(v.scopes.len(), 3);
        assert_eq!(v.audiences, ["orders-api", "https://orders.example"], "order kept, duplicates dropped");
        assert_eq!(v.token_ttl, Some(Duration::from_secs(900)));

        let minimal = spec(serde_json::json!({"serviceAccounts": ["a"], "audiences": ["b"]}));
        let v = minimal.validate().expect("valid");
        assert!(v.scopes.is_empty() && v.token_ttl.is_none());
    }

    /// Each row mirrors one schema bound or CEL rule of the CRD.
    #[test]
    fn validation_mirrors_the_crd_rules() {
        use SigilClientError as E;
        let with = |extra: serde_json::Value| {
            let mut base = serde_json::json!({"serviceAccounts": ["app"], "audiences": ["api"]});
            for (k, v) in extra.as_object().expect("object") {
                base[k] = v.clone();
            }
            base
        };
        let cases: Vec<(serde_json::Value, Result<(), SigilClientError>)> = vec![
            (with(serde_json::json!({"serviceAccounts": []})), Err(E::NoServiceAccounts)),
            (
                with(serde_json::json!({"serviceAccounts": ["system:serviceaccount:ns:app"]})),
                Err(E::ServiceAccount("system:serviceaccount:ns:app".into())),
            ),
            (with(serde_json::json!({"serviceAccounts": ["App"]})), Err(E::ServiceAccount("App".into()))),
            (with(serde_json::json!({"serviceAccounts": ["-app"]})), Err(E::ServiceAccount("-app".into()))),
            (with(serde_json::json!({"serviceAccounts": ["a..b"]})), Err(E::ServiceAccount("a..b".into()))),
            (with(serde_json::json!({"serviceAccounts": ["a".repeat(254)]})), Err(E::ServiceAccount("a".repeat(254)))),
            (with(serde_json::json!({"scopes": ["a b"]})), Err(E::Scope("a b".into()))),
            (with(serde_json::json!({"scopes": ["a\"b"]})), Err(E::Scope("a\"b".into()))),
            (with(serde_json::json!({"scopes": ["a\\b"]})), Err(E::Scope("a\\b".into()))),
            (with(serde_json::json!({"scopes": ["é"]})), Err(E::Scope("é".into()))),
            (with(serde_json::json!({"scopes": ["x[y]z", "#", "~"]})), Ok(())),
            (with(serde_json::json!({"audiences": []})), Err(E::NoAudiences)),
            (with(serde_json::json!({"audiences": ["has space"]})), Err(E::Audience("has space".into()))),
            (with(serde_json::json!({"tokenTtl": "1d"})), Err(E::TokenTtl(DurationError::Invalid("1d".into())))),
            (with(serde_json::json!({"tokenTtl": "25h"})), Err(E::TokenTtlRange("25h".into()))),
            (with(serde_json::json!({"tokenTtl": "0s"})), Err(E::TokenTtlRange("0s".into()))),
            (with(serde_json::json!({"tokenTtl": "24h"})), Ok(())),
            (with(serde_json::json!({"tokenTtl": "1s"})), Ok(())),
        ];
        for (json, want) in cases {
            let got = spec(json.clone()).validate().map(|_| ());
            assert_eq!(got, want, "{json}");
        }
    }

    /// The CEL rules' regular expressions (after CEL's string unescaping) and
    /// the Rust checks agree; RE2 and the regex crate read these the same.
    #[test]
    fn cel_patterns_and_checks_agree() {
        let unescape = |p: &str| p.replace(r"\\", r"\");
        let name = regex::Regex::new(object_name_pattern!()).expect("compiles");
        let scope = regex::Regex::new(&unescape(scope_pattern!())).expect("compiles");
        let audience = regex::Regex::new(audience_pattern!()).expect("compiles");
        let inputs = [
            "a",
            "app",
            "orders.batch",
            "App",
            "-a",
            "a-",
            "a..b",
            "a_b",
            "x:y",
            "orders.read",
            "a b",
            "\"",
            "\\",
            "[",
            "]",
            "!",
            "~",
            "é",
            "\u{7f}",
            "https://orders.example",
            "",
            "0",
            "a.b-c.d",
        ];
        for input in inputs {
            assert_eq!(name.is_match(input), is_object_name(input), "name {input:?}");
            assert_eq!(scope.is_match(input), is_scope_token(input), "scope {input:?}");
            assert_eq!(audience.is_match(input), is_audience(input), "audience {input:?}");
        }
    }

    #[test]
    fn the_crd_carries_the_rules_and_columns() {
        let yaml = crd_yaml();
        assert!(yaml.starts_with("# Generated from api/src/sigil_client.rs"));
        for needle in [
            "name: sigilclients.sigil.dev",
            "scope: Namespaced",
            "x-kubernetes-validations",
            "tokenTtl must be between 1s and 24h",
            "name: Service Accounts",
            "- sigc",
        ] {
            assert!(yaml.contains(needle), "CRD lacks {needle:?}");
        }
    }
}
