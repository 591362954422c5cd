//! Workload identity: a pod's projected ServiceAccount token in, a decision
//! out. Pure: no I/O, the clock is a parameter.
//!
//! Two steps, kept apart so each has its own errors:
//! 1. [`SaTokenVerifier::verify`] checks the token the way a relying party of
//!    the API server's OIDC issuer does: signature against the API server's
//!    JWKS (`/openid/v1/jwks`), `iss`, `aud`, `exp`/`nbf` with a small leeway,
//!    and the `kubernetes.io` claim (namespace, ServiceAccount, pod binding).
//!    Only bound tokens (with `exp`, as the TokenRequest API and projected
//!    volumes mint them) pass; legacy Secret-based tokens never expire and are
//!    refused.
//! 2. [`WorkloadClients::decide`] maps the verified identity to the
//!    `SigilClient`s of its namespace that admit its ServiceAccount, and
//!    decides audience, scopes and lifetime.
//!
//! What the JWKS cannot tell: whether the pod a token is bound to still
//! exists (the API server would refuse it at TokenReview once the pod is
//! deleted). See NOTES-issue15.md for how that is meant to be added.
//!
//! Subjects are `system:serviceaccount:<namespace>:<name>`, the API server's
//! own spelling, whose first segment (`system`) can never be a
//! `client:`/`user:` subject of the clients file (see `sigil_api::subject`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sigil_api::SigilClient;
use sigil_api::jwk::{JwkSet, VerifyingKey};
use sigil_api::sigil_client::{SigilClientError, ValidSigilClient};

use crate::oauth::OAuthError;
use crate::scope::{self, ScopeError};

/// RFC 7523 section 2.2: the `client_assertion_type` of a JWT client assertion.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// RFC 8693: the token exchange grant.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 section 3: a JWT subject token.
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// RFC 8693 section 3: what the issuer returns.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Clock skew allowed on `exp` and `nbf`: the API server and the issuer run
/// on different machines.
pub const LEEWAY: Duration = Duration::from_secs(30);

pub use sigil_api::subject::service_account_subject;

/// A ServiceAccount token that verified: who the workload is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadIdentity {
    pub namespace: String,
    pub service_account: String,
    pub service_account_uid: String,
    /// The pod the token is bound to, if any: (name, uid).
    pub pod: Option<(String, String)>,
    /// The token's `exp` (seconds since the epoch): a cached verification
    /// must not outlive it.
    pub expires_at: u64,
}

impl WorkloadIdentity {
    pub fn subject(&self) -> String {
        service_account_subject(&self.namespace, &self.service_account)
    }
}

/// Why a request by workload identity is refused. The reason strings are for
/// logs: fixed text, never the token.
#[derive(Debug, PartialEq, Eq)]
pub enum WorkloadError {
    /// The ServiceAccount token is not one this issuer accepts.
    Token(&'static str),
    /// No SigilClient of the token's namespace admits its ServiceAccount.
    NotAdmitted,
    /// No admitting SigilClient allows this audience.
    AudienceNotAllowed,
    ScopeMalformed,
    /// No admitting SigilClient (that allows the audience) allows this scope.
    ScopeNotAllowed(String),
    /// The pod binding could not be checked (TokenReview failed).
    Unavailable,
}

/// How the ServiceAccount token was presented, which decides the error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presented {
    /// RFC 7523 client authentication on `client_credentials`: any failure to
    /// authenticate or admit the client is `invalid_client` (RFC 6749 5.2).
    ClientAssertion,
    /// RFC 8693 token exchange: an unacceptable subject token is
    /// `invalid_request` (RFC 8693 2.2.2), a valid one whose ServiceAccount is
    /// not admitted `invalid_grant`, an audience not allowed `invalid_target`.
    SubjectToken,
}

impl WorkloadError {
    pub fn to_oauth(self, presented: Presented) -> OAuthError {
        match (self, presented) {
            (WorkloadError::Token(_) | WorkloadError::NotAdmitted, Presented::ClientAssertion) => {
                OAuthError::InvalidClient
            }
            (WorkloadError::Token(_), Presented::SubjectToken) => {
                OAuthError::InvalidRequest("subject_token is invalid")
            }
            (WorkloadError::NotAdmitted, Presented::SubjectToken) => OAuthError::NotAdmitted,
            (WorkloadError::AudienceNotAllowed, Presented::ClientAssertion) => {
                OAuthError::InvalidRequest("the requested audience is not allowed")
            }
            (WorkloadError::AudienceNotAllowed, Presented::SubjectToken) => OAuthError::InvalidTarget,
            (WorkloadError::ScopeMalformed, _) => OAuthError::InvalidScope(String::new()),
            (WorkloadError::ScopeNotAllowed(s), _) => OAuthError::InvalidScope(s),
            (WorkloadError::Unavailable, _) => OAuthError::WorkloadUnavailable,
        }
    }
}

/// Checks ServiceAccount tokens against the API server's service-account
/// issuer. Built once per JWKS version.
#[derive(Debug)]
pub struct SaTokenVerifier {
    issuer: String,
    audience: String,
    keys: Vec<VerifyingKey>,
    /// Which JWKS version this is: cached verifications of another version
    /// do not count (see [`VerifiedCache`]).
    generation: u64,
}

/// The claims of a bound ServiceAccount token that matter here.
#[derive(Deserialize)]
struct SaClaims {
    sub: String,
    /// Optional here so its absence gets its own reason: legacy Secret-based
    /// tokens have none, and never expire.
    exp: Option<u64>,
    nbf: Option<u64>,
    #[serde(rename = "kubernetes.io")]
    kubernetes: KubernetesClaim,
}

#[derive(Deserialize)]
struct KubernetesClaim {
    namespace: String,
    serviceaccount: ObjectRef,
    pod: Option<ObjectRef>,
}

#[derive(Deserialize)]
struct ObjectRef {
    name: String,
    uid: String,
}

impl SaTokenVerifier {
    /// `jwks` is the body of the API server's `/openid/v1/jwks`; `issuer` its
    /// `--service-account-issuer`; `audience` what callers must request their
    /// token for (the issuer's URL unless configured otherwise).
    pub fn new(issuer: &str, audience: &str, jwks: &[u8]) -> Result<SaTokenVerifier, String> {
        let parsed = JwkSet::parse(jwks).map_err(|e| e.to_string())?;
        for skipped in &parsed.skipped {
            tracing::warn!(error = %skipped, "service-account JWKS: key skipped");
        }
        if parsed.keys.is_empty() {
            return Err("the service-account JWKS has no usable key".to_owned());
        }
        Ok(SaTokenVerifier {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            keys: parsed.keys,
            generation: 0,
        })
    }

    /// The same verifier, numbered as JWKS version `generation`.
    pub fn with_generation(mut self, generation: u64) -> SaTokenVerifier {
        self.generation = generation;
        self
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The algorithms of the published keys, each once.
    pub fn algorithms(&self) -> Vec<sigil_api::Algorithm> {
        let mut algs: Vec<sigil_api::Algorithm> = self.keys.iter().map(|k| k.alg).collect();
        algs.sort_by_key(|a| a.as_str());
        algs.dedup();
        algs
    }

    /// Verifies `token` at `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, now: u64) -> Result<WorkloadIdentity, WorkloadError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| WorkloadError::Token("not a JWT"))?;
        let key = match &header.kid {
            Some(kid) => self.keys.iter().find(|k| &k.kid == kid),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
        .ok_or(WorkloadError::Token("signed by a key the service-account JWKS does not publish"))?;
        if header.alg != key.alg.to_jwt() {
            return Err(WorkloadError::Token("algorithm does not match the key's"));
        }
        let mut validation = jsonwebtoken::Validation::new(key.alg.to_jwt());
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.required_spec_claims = ["iss", "aud", "sub"].into_iter().map(str::to_owned).collect();
        // Times are checked below against the injected clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let data = jsonwebtoken::decode::<SaClaims>(token, &key.key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            WorkloadError::Token(match e.kind() {
                K::InvalidSignature => "bad signature",
                K::InvalidIssuer => "wrong issuer",
                K::InvalidAudience => "wrong audience",
                K::MissingRequiredClaim(_) => "a required claim is missing",
                K::Json(_) | K::InvalidClaimFormat(_) => "not a bound ServiceAccount token (claims)",
                _ => "malformed",
            })
        })?;
        let claims = data.claims;
        let exp = claims.exp.ok_or(WorkloadError::Token("no exp: tokens that never expire are refused"))?;
        let leeway = LEEWAY.as_secs();
        if now >= exp.saturating_add(leeway) {
            return Err(WorkloadError::Token("expired"));
        }
        if claims.nbf.is_some_and(|nbf| now.saturating_add(leeway) < nbf) {
            return Err(WorkloadError::Token("not yet valid"));
        }
        let k = claims.kubernetes;
        let identity = WorkloadIdentity {
            namespace: k.namespace,
            service_account: k.serviceaccount.name,
            service_account_uid: k.serviceaccount.uid,
            pod: k.pod.map(|p| (p.name, p.uid)),
            expires_at: exp,
        };
        // The API server writes both; a token where they disagree is not its.
        if claims.sub != identity.subject() {
            return Err(WorkloadError::Token("sub does not name the kubernetes.io ServiceAccount"));
        }
        Ok(identity)
    }
}

/// Asks the API server whether it still accepts a token (TokenReview): the
/// one authority on bound-object revocation (a deleted Pod, a recreated
/// ServiceAccount). Boxed future: the issuer holds it as a trait object.
pub trait Reviewer: Send + Sync {
    /// `Ok(true)` if the API server accepts `token` now.
    fn review<'a>(
        &'a self,
        token: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, String>> + Send + 'a>>;
}

/// Remembers tokens the API server accepted, each until the earlier of its
/// `exp` and `now + ttl`, so a pod's token costs one TokenReview per `ttl`
/// and a deleted pod's token stops working within `ttl`. Keyed by a digest:
/// no token is kept. Bounded: when full, expired entries go, and if none
/// has expired nothing new is remembered (correct, only slower).
pub struct ReviewCache {
    ttl: Duration,
    capacity: usize,
    accepted: std::sync::Mutex<HashMap<[u8; 32], u64>>,
}

impl ReviewCache {
    pub fn new(ttl: Duration, capacity: usize) -> ReviewCache {
        ReviewCache { ttl, capacity, accepted: std::sync::Mutex::new(HashMap::new()) }
    }

    pub fn contains(&self, token: &str, now: u64) -> bool {
        let accepted = self.accepted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        accepted.get(&digest(token.as_bytes())).is_some_and(|until| now < *until)
    }

    pub fn insert(&self, token: &str, expires_at: u64, now: u64) {
        let until = expires_at.min(now.saturating_add(self.ttl.as_secs()));
        let mut accepted = self.accepted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if accepted.len() >= self.capacity {
            accepted.retain(|_, until| now < *until);
        }
        if accepted.len() < self.capacity {
            accepted.insert(digest(token.as_bytes()), until);
        }
    }

    pub fn len(&self) -> usize {
        self.accepted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// SHA-256: caches are keyed by it, so no token is kept in memory.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// Tokens that verified, so a warm request costs a digest and a lookup, not
/// a signature check: each entry lasts as long as the token would verify
/// (its `exp` plus [`LEEWAY`]) and only for the JWKS version that verified
/// it. Bounded like [`ReviewCache`].
pub struct VerifiedCache {
    capacity: usize,
    entries: std::sync::Mutex<HashMap<[u8; 32], (u64, WorkloadIdentity)>>,
}

impl VerifiedCache {
    pub fn new(capacity: usize) -> VerifiedCache {
        VerifiedCache { capacity, entries: std::sync::Mutex::new(HashMap::new()) }
    }

    fn valid(identity: &WorkloadIdentity, now: u64) -> bool {
        now < identity.expires_at.saturating_add(LEEWAY.as_secs())
    }

    /// Verifies `token` with `verifier`, or answers from the cache.
    pub fn verify(&self, verifier: &SaTokenVerifier, token: &str, now: u64) -> Result<WorkloadIdentity, WorkloadError> {
        let key = digest(token.as_bytes());
        {
            let entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((generation, identity)) = entries.get(&key)
                && *generation == verifier.generation()
                && Self::valid(identity, now)
            {
                return Ok(identity.clone());
            }
        }
        let identity = verifier.verify(token, now)?;
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= self.capacity {
            entries
                .retain(|_, (generation, identity)| *generation == verifier.generation() && Self::valid(identity, now));
        }
        if entries.len() < self.capacity {
            entries.insert(key, (verifier.generation(), identity.clone()));
        }
        Ok(identity)
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checks a verified identity's pod binding: pod-bound tokens are reviewed
/// by the API server on first sight and then every `ttl` (see
/// [`ReviewCache`]); unbound tokens have nothing to check beyond `exp`.
pub async fn check_binding(
    reviewer: &dyn Reviewer,
    cache: &ReviewCache,
    token: &str,
    identity: &WorkloadIdentity,
    now: u64,
) -> Result<(), WorkloadError> {
    if identity.pod.is_none() || cache.contains(token, now) {
        return Ok(());
    }
    match reviewer.review(token).await {
        Ok(true) => {
            cache.insert(token, identity.expires_at, now);
            Ok(())
        }
        Ok(false) => Err(WorkloadError::Token("the API server no longer accepts it (its pod is gone?)")),
        Err(error) => {
            tracing::warn!(%error, "TokenReview failed");
            Err(WorkloadError::Unavailable)
        }
    }
}

/// A SigilClient the issuer acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadClient {
    pub namespace: String,
    pub name: String,
    pub spec: ValidSigilClient,
}

/// Every SigilClient, indexed by the ServiceAccounts they admit.
#[derive(Debug, Default)]
pub struct WorkloadClients {
    /// (namespace, ServiceAccount) -> admitting SigilClients, ordered by name.
    admitted: HashMap<(String, String), Vec<Arc<WorkloadClient>>>,
}

/// Indexes SigilClients as the API server holds them. Invalid ones (a
/// cluster may serve an older CRD) admit nothing and are returned, by
/// `<namespace>/<name>`, to be reported.
pub fn index<'a>(
    objects: impl IntoIterator<Item = &'a SigilClient>,
) -> (WorkloadClients, Vec<(String, SigilClientError)>) {
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    for object in objects {
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let name = object.metadata.name.clone().unwrap_or_default();
        match object.spec.validate() {
            Ok(spec) => valid.push(WorkloadClient { namespace, name, spec }),
            Err(error) => invalid.push((format!("{namespace}/{name}"), error)),
        }
    }
    (WorkloadClients::new(valid), invalid)
}

/// What an admitted workload gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub subject: String,
    /// `<namespace>/<name>` of the SigilClient that granted it (for logs and metrics).
    pub sigil_client: String,
    pub audience: String,
    pub scopes: BTreeSet<String>,
    pub ttl: Option<Duration>,
}

impl WorkloadClients {
    pub fn new(clients: impl IntoIterator<Item = WorkloadClient>) -> WorkloadClients {
        let mut admitted: HashMap<(String, String), Vec<Arc<WorkloadClient>>> = HashMap::new();
        for client in clients {
            let client = Arc::new(client);
            for sa in &client.spec.service_accounts {
                admitted.entry((client.namespace.clone(), sa.clone())).or_default().push(client.clone());
            }
        }
        for list in admitted.values_mut() {
            list.sort_by(|a, b| a.name.cmp(&b.name));
        }
        WorkloadClients { admitted }
    }

    /// Decides what `identity` gets for the requested audience and scope.
    ///
    /// Several SigilClients may admit one ServiceAccount; their grants are
    /// never mixed. The first by name that allows the audience (or, without
    /// one, any) and every requested scope grants the token, with its own
    /// TTL; without `audience`, a SigilClient's first audience is used.
    pub fn decide(
        &self,
        identity: &WorkloadIdentity,
        audience: Option<&str>,
        requested_scope: Option<&str>,
    ) -> Result<Decision, WorkloadError> {
        // Malformed is malformed whatever a SigilClient allows.
        if requested_scope.is_some_and(|r| !r.split(' ').all(scope::is_scope_token)) {
            return Err(WorkloadError::ScopeMalformed);
        }
        let key = (identity.namespace.clone(), identity.service_account.clone());
        let candidates = self.admitted.get(&key).ok_or(WorkloadError::NotAdmitted)?;
        let with_audience: Vec<&Arc<WorkloadClient>> = candidates
            .iter()
            .filter(|c| audience.is_none_or(|a| c.spec.audiences.iter().any(|allowed| allowed == a)))
            .collect();
        if with_audience.is_empty() {
            return Err(WorkloadError::AudienceNotAllowed);
        }
        let mut refused = None;
        for client in with_audience {
            match scope::grant(requested_scope, &client.spec.scopes) {
                Ok(scopes) => {
                    let audience = match audience {
                        Some(a) => a.to_owned(),
                        // validate() guarantees at least one audience.
                        None => client.spec.audiences.first().cloned().unwrap_or_default(),
                    };
                    return Ok(Decision {
                        subject: identity.subject(),
                        sigil_client: format!("{}/{}", client.namespace, client.name),
                        audience,
                        scopes,
                        ttl: client.spec.token_ttl,
                    });
                }
                Err(ScopeError::Malformed) => return Err(WorkloadError::ScopeMalformed),
                Err(ScopeError::NotAllowed(s)) => refused = refused.or(Some(s)),
            }
        }
        Err(WorkloadError::ScopeNotAllowed(refused.unwrap_or_default()))
    }

    pub fn len(&self) -> usize {
        self.admitted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.admitted.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_api::Algorithm;
    use sigil_api::keys::PrivateKey;
    use sigil_api::sigil_client::SigilClientSpec;

    const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
    const AUDIENCE: &str = "https://sigil.example";
    const NOW: u64 = 1_800_000_000;

    /// A stand-in for the API server's service-account signing key.
    struct ApiServer {
        key: PrivateKey,
    }

    impl ApiServer {
        fn new(alg: Algorithm) -> ApiServer {
            ApiServer { key: PrivateKey::generate(alg, None).expect("key") }
        }

        fn jwks(&self) -> Vec<u8> {
            serde_json::to_vec(&serde_json::json!({"keys": [self.key.public_jwk()]})).expect("jwks")
        }

        fn verifier(&self) -> SaTokenVerifier {
            SaTokenVerifier::new(SA_ISSUER, AUDIENCE, &self.jwks()).expect("verifier")
        }

        /// A token as a projected volume gets it, with `edit` applied to its claims.
        fn token(&self, edit: impl FnOnce(&mut serde_json::Value)) -> String {
            let mut claims = serde_json::json!({
                "aud": [AUDIENCE],
                "exp": NOW + 600,
                "iat": NOW - 10,
                "nbf": NOW - 10,
                "iss": SA_ISSUER,
                "jti": "0d3c2a9e",
                "sub": "system:serviceaccount:shop:orders",
                "kubernetes.io": {
                    "namespace": "shop",
                    "node": {"name": "node-1", "uid": "n-uid"},
                    "pod": {"name": "orders-7d9f", "uid": "p-uid"},
                    "serviceaccount": {"name": "orders", "uid": "sa-uid"},
                },
            });
            edit(&mut claims);
            self.sign(&claims)
        }

        fn sign(&self, claims: &serde_json::Value) -> String {
            let b64 = sigil_api::jwk::b64;
            let header = serde_json::json!({"alg": self.key.algorithm().as_str(), "kid": self.key.kid()});
            let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
            let signature = self.key.sign(input.as_bytes()).expect("sign");
            format!("{input}.{}", b64(&signature))
        }
    }

    fn client(namespace: &str, name: &str, spec: serde_json::Value) -> WorkloadClient {
        let spec: SigilClientSpec = serde_json::from_value(spec).expect("spec");
        WorkloadClient { namespace: namespace.into(), name: name.into(), spec: spec.validate().expect("valid") }
    }

    fn shop_clients() -> WorkloadClients {
        WorkloadClients::new([
            client(
                "shop",
                "orders",
                serde_json::json!({"serviceAccounts": ["orders"], "scopes": ["orders.read", "orders.write"],
                                   "audiences": ["orders-api", "billing-api"], "tokenTtl": "5m"}),
            ),
            client("shop", "web", serde_json::json!({"serviceAccounts": ["web"], "audiences": ["web-api"]})),
            // Another namespace admitting a ServiceAccount of the same name.
            client("other", "orders", serde_json::json!({"serviceAccounts": ["orders"], "audiences": ["x"]})),
        ])
    }

    #[test]
    fn a_bound_token_verifies_and_is_admitted() {
        for alg in [Algorithm::RS256, Algorithm::ES256] {
            let api = ApiServer::new(alg);
            let identity = api.verifier().verify(&api.token(|_| {}), NOW).expect("verifies");
            assert_eq!(
                identity,
                WorkloadIdentity {
                    namespace: "shop".into(),
                    service_account: "orders".into(),
                    service_account_uid: "sa-uid".into(),
                    pod: Some(("orders-7d9f".into(), "p-uid".into())),
                    expires_at: NOW + 600,
                }
            );
            let decision = shop_clients().decide(&identity, None, None).expect("admitted");
            assert_eq!(decision.subject, "system:serviceaccount:shop:orders");
            assert_eq!(decision.sigil_client, "shop/orders");
            assert_eq!(decision.audience, "orders-api", "the first audience is the default");
            assert_eq!(scope::join(&decision.scopes), "orders.read orders.write");
            assert_eq!(decision.ttl, Some(Duration::from_secs(300)));

            let narrowed = shop_clients().decide(&identity, Some("billing-api"), Some("orders.read")).expect("ok");
            assert_eq!(
                (narrowed.audience.as_str(), scope::join(&narrowed.scopes).as_str()),
                ("billing-api", "orders.read")
            );
        }
    }

    #[test]
    fn a_token_without_a_pod_binding_verifies() {
        let api = ApiServer::new(Algorithm::RS256);
        let token = api.token(|c| {
            let k = c["kubernetes.io"].as_object_mut().expect("object");
            k.remove("pod");
            k.remove("node");
        });
        let identity = api.verifier().verify(&token, NOW).expect("verifies");
        assert_eq!(identity.pod, None);
    }

    /// Each refusal of the token itself, with a reason that names it.
    #[test]
    fn bad_tokens_are_refused() {
        let api = ApiServer::new(Algorithm::RS256);
        let verifier = api.verifier();
        let cases: Vec<(String, &str)> = vec![
            (api.token(|c| c["aud"] = serde_json::json!(["https://other.example"])), "wrong audience"),
            (api.token(|c| c["aud"] = serde_json::json!("https://kubernetes.default.svc")), "wrong audience"),
            (api.token(|c| c["iss"] = serde_json::json!("https://evil.example")), "wrong issuer"),
            (api.token(|c| c["exp"] = serde_json::json!(NOW - 31)), "expired"),
            (api.token(|c| c["nbf"] = serde_json::json!(NOW + 31)), "not yet valid"),
            // Legacy Secret-based tokens never expire.
            (
                api.token(|c| {
                    c.as_object_mut().expect("object").remove("exp");
                }),
                "no exp: tokens that never expire are refused",
            ),
            (
                api.token(|c| {
                    c.as_object_mut().expect("object").remove("kubernetes.io");
                }),
                "not a bound ServiceAccount token (claims)",
            ),
            (
                api.token(|c| c["sub"] = serde_json::json!("system:serviceaccount:shop:admin")),
                "sub does not name the kubernetes.io ServiceAccount",
            ),
            // Signed by another key (another cluster) under this cluster's kid.
            (
                {
                    let other = ApiServer::new(Algorithm::RS256).token(|_| {});
                    let (_, payload_and_signature) = other.split_once('.').expect("jwt");
                    let header = serde_json::json!({"alg": "RS256", "kid": api.key.kid()});
                    format!("{}.{payload_and_signature}", sigil_api::jwk::b64(header.to_string().as_bytes()))
                },
                "bad signature",
            ),
            (
                ApiServer::new(Algorithm::RS256).token(|_| {}),
                "signed by a key the service-account JWKS does not publish",
            ),
            ("not-a-jwt".to_owned(), "not a JWT"),
        ];
        for (token, want) in cases {
            assert_eq!(verifier.verify(&token, NOW), Err(WorkloadError::Token(want)), "{want}");
        }
        // Within the leeway, a just-expired token still counts.
        assert!(verifier.verify(&api.token(|c| c["exp"] = serde_json::json!(NOW - 29)), NOW).is_ok());
    }

    #[test]
    fn an_unsigned_or_hmac_token_is_refused() {
        let api = ApiServer::new(Algorithm::RS256);
        let token = api.token(|_| {});
        let payload = token.split('.').nth(1).expect("payload");
        for alg in ["none", "HS256"] {
            let header = serde_json::json!({"alg": alg, "kid": api.key.kid()});
            let forged = format!("{}.{payload}.", sigil_api::jwk::b64(header.to_string().as_bytes()));
            assert!(matches!(api.verifier().verify(&forged, NOW), Err(WorkloadError::Token(_))), "{alg}");
        }
    }

    #[test]
    fn admission_refusals() {
        let api = ApiServer::new(Algorithm::ES256);
        let verifier = api.verifier();
        let clients = shop_clients();
        let identity = |ns: &str, sa: &str| {
            let token = api.token(|c| {
                c["sub"] = serde_json::json!(service_account_subject(ns, sa));
                c["kubernetes.io"]["namespace"] = serde_json::json!(ns);
                c["kubernetes.io"]["serviceaccount"]["name"] = serde_json::json!(sa);
            });
            verifier.verify(&token, NOW).expect("verifies")
        };
        // Unknown: no SigilClient in its namespace at all.
        assert_eq!(clients.decide(&identity("payments", "orders"), None, None), Err(WorkloadError::NotAdmitted));
        // Not admitted: its namespace has SigilClients, none names it.
        assert_eq!(clients.decide(&identity("shop", "admin"), None, None), Err(WorkloadError::NotAdmitted));
        let orders = identity("shop", "orders");
        assert_eq!(clients.decide(&orders, Some("web-api"), None), Err(WorkloadError::AudienceNotAllowed));
        assert_eq!(
            clients.decide(&orders, None, Some("orders.delete")),
            Err(WorkloadError::ScopeNotAllowed("orders.delete".into()))
        );
        assert_eq!(clients.decide(&orders, None, Some("a  b")), Err(WorkloadError::ScopeMalformed));
        // The other namespace's SigilClient of the same name grants nothing here.
        assert_eq!(clients.decide(&orders, Some("x"), None), Err(WorkloadError::AudienceNotAllowed));
        // A web token gets no scopes and the issuer's default TTL.
        let web = clients.decide(&identity("shop", "web"), None, None).expect("admitted");
        assert!(web.scopes.is_empty() && web.ttl.is_none());
    }

    #[test]
    fn several_admitting_clients_are_not_mixed() {
        let clients = WorkloadClients::new([
            client(
                "shop",
                "b-write",
                serde_json::json!({"serviceAccounts": ["orders"], "scopes": ["write"], "audiences": ["api"], "tokenTtl": "1m"}),
            ),
            client(
                "shop",
                "a-read",
                serde_json::json!({"serviceAccounts": ["orders"], "scopes": ["read"], "audiences": ["api", "other"]}),
            ),
        ]);
        let identity = WorkloadIdentity {
            namespace: "shop".into(),
            service_account: "orders".into(),
            service_account_uid: "u".into(),
            pod: None,
            expires_at: NOW,
        };
        let d = clients.decide(&identity, None, None).expect("first by name");
        assert_eq!((d.sigil_client.as_str(), scope::join(&d.scopes).as_str(), d.ttl), ("shop/a-read", "read", None));
        let d = clients.decide(&identity, Some("api"), Some("write")).expect("the one that allows it");
        assert_eq!((d.sigil_client.as_str(), d.ttl), ("shop/b-write", Some(Duration::from_secs(60))));
        // No single SigilClient allows both.
        assert_eq!(
            clients.decide(&identity, None, Some("read write")),
            Err(WorkloadError::ScopeNotAllowed("write".into()))
        );
    }

    /// RFC 6749 / RFC 8693 codes for each refusal, by how the token came.
    #[test]
    fn refusals_map_to_rfc_error_codes() {
        use Presented::{ClientAssertion as Client, SubjectToken as Exchange};
        let cases = [
            (WorkloadError::Token("expired"), Client, "invalid_client"),
            (WorkloadError::NotAdmitted, Client, "invalid_client"),
            (WorkloadError::AudienceNotAllowed, Client, "invalid_request"),
            (WorkloadError::ScopeNotAllowed("x".into()), Client, "invalid_scope"),
            (WorkloadError::ScopeMalformed, Client, "invalid_scope"),
            (WorkloadError::Token("wrong audience"), Exchange, "invalid_request"),
            (WorkloadError::NotAdmitted, Exchange, "invalid_grant"),
            (WorkloadError::AudienceNotAllowed, Exchange, "invalid_target"),
            (WorkloadError::ScopeNotAllowed("x".into()), Exchange, "invalid_scope"),
        ];
        for (error, presented, code) in cases {
            let label = format!("{error:?} {presented:?}");
            assert_eq!(error.to_oauth(presented).code(), code, "{label}");
        }
    }

    #[test]
    fn index_skips_and_reports_invalid_sigil_clients() {
        let object = |ns: &str, name: &str, spec: serde_json::Value| -> SigilClient {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "sigil.dev/v1alpha1", "kind": "SigilClient",
                "metadata": {"namespace": ns, "name": name}, "spec": spec,
            }))
            .expect("object")
        };
        let objects = [
            object("shop", "good", serde_json::json!({"serviceAccounts": ["orders"], "audiences": ["api"]})),
            object("shop", "bad", serde_json::json!({"serviceAccounts": ["Admin"], "audiences": ["api"]})),
        ];
        let (clients, invalid) = index(objects.iter());
        assert_eq!(clients.len(), 1);
        assert_eq!(invalid, [("shop/bad".to_owned(), SigilClientError::ServiceAccount("Admin".into()))]);
        let identity = |sa: &str| WorkloadIdentity {
            namespace: "shop".into(),
            service_account: sa.into(),
            service_account_uid: "u".into(),
            pod: None,
            expires_at: NOW,
        };
        assert_eq!(clients.decide(&identity("orders"), None, None).expect("admitted").sigil_client, "shop/good");
        assert_eq!(clients.decide(&identity("Admin"), None, None), Err(WorkloadError::NotAdmitted));
    }

    /// A reviewer that answers from a flag and counts its calls.
    struct FakeReviewer {
        accept: std::sync::atomic::AtomicBool,
        fail: bool,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl Reviewer for FakeReviewer {
        fn review<'a>(
            &'a self,
            _token: &'a str,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, String>> + Send + 'a>> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answer = if self.fail {
                Err("down".to_owned())
            } else {
                Ok(self.accept.load(std::sync::atomic::Ordering::SeqCst))
            };
            Box::pin(async move { answer })
        }
    }

    #[tokio::test]
    async fn pod_bound_tokens_are_reviewed_once_per_ttl_and_refused_once_revoked() {
        use std::sync::atomic::Ordering::SeqCst;
        let api = ApiServer::new(Algorithm::RS256);
        let token = api.token(|_| {});
        let identity = api.verifier().verify(&token, NOW).expect("verifies");
        let reviewer = FakeReviewer { accept: true.into(), fail: false, calls: 0.into() };
        let cache = ReviewCache::new(Duration::from_secs(60), 100);
        check_binding(&reviewer, &cache, &token, &identity, NOW).await.expect("accepted");
        check_binding(&reviewer, &cache, &token, &identity, NOW + 59).await.expect("cached");
        assert_eq!(reviewer.calls.load(SeqCst), 1, "one review within the ttl");
        // The pod is deleted: the API server refuses the token from now on.
        reviewer.accept.store(false, SeqCst);
        let refused = check_binding(&reviewer, &cache, &token, &identity, NOW + 60).await;
        assert_eq!(refused, Err(WorkloadError::Token("the API server no longer accepts it (its pod is gone?)")));
        assert_eq!(reviewer.calls.load(SeqCst), 2);
        assert_eq!(refused.map_err(|e| e.to_oauth(Presented::ClientAssertion).code()), Err("invalid_client"));

        // Unbound tokens are not reviewed; a failing review is retryable, not a refusal.
        let unbound = api.token(|c| {
            c["kubernetes.io"].as_object_mut().expect("object").remove("pod");
        });
        let unbound_identity = api.verifier().verify(&unbound, NOW).expect("verifies");
        check_binding(&reviewer, &cache, &unbound, &unbound_identity, NOW).await.expect("nothing to check");
        assert_eq!(reviewer.calls.load(SeqCst), 2);
        let down = FakeReviewer { accept: true.into(), fail: true, calls: 0.into() };
        let fresh = ReviewCache::new(Duration::from_secs(60), 100);
        let err = check_binding(&down, &fresh, &token, &identity, NOW).await.expect_err("unavailable");
        assert_eq!(err.to_oauth(Presented::SubjectToken).code(), "temporarily_unavailable");
    }

    #[test]
    fn the_review_cache_is_bounded_and_never_outlives_the_token() {
        let cache = ReviewCache::new(Duration::from_secs(60), 2);
        cache.insert("a", NOW + 10, NOW);
        assert!(cache.contains("a", NOW + 9) && !cache.contains("a", NOW + 10), "exp bounds the entry");
        cache.insert("b", NOW + 600, NOW);
        cache.insert("c", NOW + 600, NOW);
        assert_eq!(cache.len(), 2, "full: nothing new while nothing expired");
        assert!(!cache.contains("c", NOW));
        cache.insert("c", NOW + 600, NOW + 10);
        assert!(cache.contains("c", NOW + 10), "expired entries make room");
        assert!(!cache.contains("b", NOW + 60), "ttl bounds the entry");
    }

    #[test]
    fn verified_tokens_are_cached_for_their_lifetime_and_their_jwks_version() {
        let api = ApiServer::new(Algorithm::ES256);
        let verifier = api.verifier().with_generation(1);
        let cache = VerifiedCache::new(2);
        let token = api.token(|_| {});
        let identity = cache.verify(&verifier, &token, NOW).expect("verifies");
        assert_eq!(cache.len(), 1);
        // A cached answer is the same answer, until exp plus the leeway.
        assert_eq!(cache.verify(&verifier, &token, NOW + 629), Ok(identity));
        assert_eq!(cache.verify(&verifier, &token, NOW + 630), Err(WorkloadError::Token("expired")));
        // Another JWKS version (the key is gone): the cache does not vouch.
        let rotated = ApiServer::new(Algorithm::ES256).verifier().with_generation(2);
        assert!(matches!(cache.verify(&rotated, &token, NOW), Err(WorkloadError::Token(_))));
        // Refusals are not cached; the cache stays bounded.
        assert!(cache.verify(&verifier, "x.y.z", NOW).is_err());
        for i in 0..3 {
            let other = api.token(|c| c["jti"] = serde_json::json!(i));
            cache.verify(&verifier, &other, NOW).expect("verifies");
        }
        assert!(cache.len() <= 2, "bounded: {}", cache.len());
    }

    #[test]
    fn a_jwks_without_usable_keys_is_an_error() {
        assert!(SaTokenVerifier::new(SA_ISSUER, AUDIENCE, br#"{"keys": []}"#).is_err());
        assert!(SaTokenVerifier::new(SA_ISSUER, AUDIENCE, b"{}").is_err());
    }
}
