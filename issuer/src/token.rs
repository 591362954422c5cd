//! RFC 9068 JWT access tokens: the claims, and signing them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sigil_api::jwk::b64;

use crate::keys::Signer;

/// The claims of an access token (RFC 9068 section 2.2).
#[derive(Debug, Serialize)]
pub struct Claims<'a> {
    pub iss: &'a str,
    pub sub: &'a str,
    pub aud: &'a str,
    pub exp: u64,
    pub iat: u64,
    pub nbf: u64,
    pub jti: String,
    pub client_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub scope: &'a str,
    /// Workload-identity tokens: where the workload runs.
    #[serde(rename = "kubernetes.io", skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<&'a KubernetesClaim>,
}

/// The `kubernetes.io` claim of a token issued by workload identity, a
/// subset of the ServiceAccount token's own claim of that name, so
/// verifiers that know one know the other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KubernetesClaim {
    pub namespace: String,
    pub serviceaccount: NamedRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<NamedRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NamedRef {
    pub name: String,
}

/// What a token is for; everything else is filled in at issue time.
pub struct Grant<'a> {
    pub issuer: &'a str,
    pub subject: &'a str,
    pub audience: &'a str,
    pub client_id: &'a str,
    pub scope: &'a str,
    pub ttl: Duration,
    pub kubernetes: Option<&'a KubernetesClaim>,
}

impl<'a> Grant<'a> {
    pub fn claims(&self, now: SystemTime) -> Claims<'a> {
        let iat = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Claims {
            iss: self.issuer,
            sub: self.subject,
            aud: self.audience,
            exp: iat + self.ttl.as_secs(),
            iat,
            nbf: iat,
            jti: new_jti(),
            client_id: self.client_id,
            scope: self.scope,
            kubernetes: self.kubernetes,
        }
    }
}

/// 128 random bits: unique without coordination between replicas.
pub fn new_jti() -> String {
    let mut bytes = [0u8; 16];
    // The system RNG failing is not recoverable in any useful way; a zero jti
    // would still be a valid (if not unique) token, so do not fail the request.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        tracing::error!("system random number generator failed");
    }
    b64(&bytes)
}

pub fn sign(signer: &Signer, claims: &Claims<'_>) -> Result<String, sigil_api::keys::KeyError> {
    let json = serde_json::to_vec(claims).map_err(|_| sigil_api::keys::KeyError::Sign(signer.algorithm()))?;
    signer.sign(&json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_follow_rfc_9068() {
        let grant = Grant {
            issuer: "https://iss",
            subject: "svc",
            audience: "api",
            client_id: "svc",
            scope: "a b",
            ttl: Duration::from_secs(60),
            kubernetes: None,
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let claims = grant.claims(now);
        let json: serde_json::Value = serde_json::to_value(&claims).expect("json");
        assert_eq!(json["iss"], "https://iss");
        assert_eq!(json["exp"], 1_060);
        assert_eq!(json["iat"], 1_000);
        assert_eq!(json["nbf"], 1_000);
        assert_eq!(json["scope"], "a b");
        assert_eq!(json["client_id"], "svc");
        assert_eq!(sigil_api::jwk::b64_decode(&claims.jti).expect("b64").len(), 16);
        assert_ne!(claims.jti, grant.claims(now).jti);
        let no_scope = Grant { scope: "", ..grant };
        assert!(serde_json::to_value(no_scope.claims(now)).expect("json").get("scope").is_none());
        assert!(json.get("kubernetes.io").is_none());
        let k8s = KubernetesClaim {
            namespace: "shop".into(),
            serviceaccount: NamedRef { name: "orders".into() },
            pod: Some(NamedRef { name: "orders-1".into() }),
        };
        let workload = Grant { kubernetes: Some(&k8s), ..no_scope };
        let json = serde_json::to_value(workload.claims(now)).expect("json");
        assert_eq!(
            json["kubernetes.io"],
            serde_json::json!({"namespace": "shop", "serviceaccount": {"name": "orders"}, "pod": {"name": "orders-1"}})
        );
    }
}
