//! The webhook's serving certificate, issued by the operator itself: a CA
//! and a serving certificate in one Secret in the operator's namespace, and
//! the CA in the MutatingWebhookConfiguration's `caBundle`, so the API server
//! trusts the webhook with no cert-manager installed.
//!
//! The leader writes (fenced like every other write); every replica serves
//! whatever the Secret holds, read through the API so a new certificate is
//! served at once rather than after the kubelet's volume refresh.
//!
//! The CA lives ten years and is replaced a year before it ends; the serving
//! certificate lives a year and is replaced after eight months, signed by the
//! same CA, so renewing it never touches `caBundle`. Replacing the CA (or the
//! Secret being deleted) changes `caBundle`: admission calls fail for the
//! seconds until both the replicas and the API server have the new pair.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::watcher;
use rustls::sign::CertifiedKey;
use sigil_api::contract::{LABEL_MANAGED_BY, MANAGED_BY};
use tracing::{info, warn};

use crate::fence::Fence;

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
/// When the serving certificate is due for renewal (RFC 3339).
pub const ANNOTATION_RENEW_AFTER: &str = "sigil.dev/renew-after";
/// When the CA is due for replacement (RFC 3339).
pub const ANNOTATION_CA_RENEW_AFTER: &str = "sigil.dev/ca-renew-after";
/// The DNS names the serving certificate was issued for.
pub const ANNOTATION_DNS_NAMES: &str = "sigil.dev/dns-names";

const CA_LIFETIME: SignedDuration = SignedDuration::from_hours(24 * 3653);
const CA_RENEW_AT: SignedDuration = SignedDuration::from_hours(24 * 3288);
const CERT_LIFETIME: SignedDuration = SignedDuration::from_hours(24 * 365);
const CERT_RENEW_AT: SignedDuration = SignedDuration::from_hours(24 * 243);
/// Backdating covers clocks a little behind ours.
const BACKDATE: SignedDuration = SignedDuration::from_hours(1);
const CA_NAME: &str = "sigil-webhook-ca";

/// What the Secret needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    Keep,
    /// A new serving certificate from the CA already there.
    Renew,
    /// A new CA, and a serving certificate from it.
    Replace,
}

/// Decides from the Secret's annotations; a missing or unreadable field
/// means "issue again", so a damaged Secret repairs itself.
pub fn plan(now: Timestamp, secret: Option<&Secret>, dns_names: &[String]) -> Plan {
    let Some(secret) = secret else { return Plan::Replace };
    let annotation = |name: &str| secret.metadata.annotations.as_ref().and_then(|a| a.get(name));
    let due = |name: &str| annotation(name).and_then(|t| t.parse::<Timestamp>().ok()).is_none_or(|t| now >= t);
    let data = secret.data.as_ref();
    let has = |key: &str| data.and_then(|d| d.get(key)).is_some_and(|v| !v.0.is_empty());
    if !has(CA_CERT) || !has(CA_KEY) || due(ANNOTATION_CA_RENEW_AFTER) {
        return Plan::Replace;
    }
    if !has(TLS_CERT)
        || !has(TLS_KEY)
        || due(ANNOTATION_RENEW_AFTER)
        || annotation(ANNOTATION_DNS_NAMES) != Some(&dns_names.join(","))
    {
        return Plan::Renew;
    }
    Plan::Keep
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the CA in the Secret is unusable: {0}")]
    Ca(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Fence(#[from] crate::error::Error),
}

/// What the Secret holds after an issue.
pub struct Issued {
    pub data: BTreeMap<String, ByteString>,
    pub annotations: BTreeMap<String, String>,
}

/// The Secret's data and annotations after `plan`; `current` holds the CA
/// for a renewal.
pub fn issue(now: Timestamp, plan: &Plan, current: Option<&Secret>, dns_names: &[String]) -> Result<Issued, CertError> {
    // Whole days are precise enough for lifetimes of months.
    let date = |t: Timestamp| {
        let d = t.to_zoned(jiff::tz::TimeZone::UTC).date();
        rcgen::date_time_ymd(i32::from(d.year()), d.month().unsigned_abs(), d.day().unsigned_abs())
    };
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, CA_NAME);
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let field = |key: &str| current.and_then(|s| s.data.as_ref()).and_then(|d| d.get(key)).map(|v| v.0.clone());
    let annotation =
        |key: &str| current.and_then(|s| s.metadata.annotations.as_ref()).and_then(|a| a.get(key)).cloned();
    let (ca_key, ca_pem, ca_renew_after) = match plan {
        Plan::Replace => {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            (ca_params.not_before, ca_params.not_after) = (date(now - BACKDATE), date(now + CA_LIFETIME));
            let cert = ca_params.self_signed(&key)?;
            (key, cert.pem(), (now + CA_RENEW_AT).to_string())
        }
        Plan::Renew | Plan::Keep => {
            let pem = field(CA_KEY).ok_or_else(|| CertError::Ca("no ca.key".into()))?;
            let pem = String::from_utf8(pem).map_err(|_| CertError::Ca("ca.key is not PEM".into()))?;
            let key = rcgen::KeyPair::from_pem(&pem).map_err(|e| CertError::Ca(e.to_string()))?;
            let cert = field(CA_CERT).ok_or_else(|| CertError::Ca("no ca.crt".into()))?;
            let cert = String::from_utf8(cert).map_err(|_| CertError::Ca("ca.crt is not PEM".into()))?;
            let renew =
                annotation(ANNOTATION_CA_RENEW_AFTER).ok_or_else(|| CertError::Ca("no CA renewal time".into()))?;
            (key, cert, renew)
        }
    };
    // Same subject and key as the CA certificate: what a signature needs.
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(dns_names.to_vec())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, dns_names.first().map_or("sigil-webhook", String::as_str));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    (params.not_before, params.not_after) = (date(now - BACKDATE), date(now + CERT_LIFETIME));
    let cert = params.signed_by(&key, &issuer)?;

    let bytes = |s: String| ByteString(s.into_bytes());
    let data = BTreeMap::from([
        (CA_CERT.to_owned(), bytes(ca_pem)),
        (CA_KEY.to_owned(), bytes(issuer.key().serialize_pem())),
        (TLS_CERT.to_owned(), bytes(cert.pem())),
        (TLS_KEY.to_owned(), bytes(key.serialize_pem())),
    ]);
    let annotations = BTreeMap::from([
        (ANNOTATION_RENEW_AFTER.to_owned(), (now + CERT_RENEW_AT).to_string()),
        (ANNOTATION_CA_RENEW_AFTER.to_owned(), ca_renew_after),
        (ANNOTATION_DNS_NAMES.to_owned(), dns_names.join(",")),
    ]);
    Ok(Issued { data, annotations })
}

/// Where the certificate lives and who trusts it.
#[derive(Clone, Debug)]
pub struct Target {
    pub secret_namespace: String,
    pub secret_name: String,
    /// The MutatingWebhookConfiguration whose `caBundle` the operator keeps;
    /// `None` when cert-manager's CA injector does it.
    pub webhook_configuration: Option<String>,
    pub dns_names: Vec<String>,
}

/// The leader's loop: keeps the Secret current and `caBundle` equal to its
/// CA. Checks every minute, so a Secret deleted by hand or a webhook
/// configuration reinstalled by Helm (with no `caBundle`) is mended within one.
pub async fn maintain(client: Client, fence: Fence, target: Target) {
    loop {
        if let Err(error) = maintain_once(&client, &fence, &target).await {
            warn!(%error, secret = %target.secret_name, "webhook certificate");
        }
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    }
}

pub async fn maintain_once(client: &Client, fence: &Fence, target: &Target) -> Result<(), CertError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &target.secret_namespace);
    let mut current = secrets.get_opt(&target.secret_name).await?;
    let now = Timestamp::now();
    let plan = plan(now, current.as_ref(), &target.dns_names);
    if plan != Plan::Keep {
        // A renewal from a CA we cannot read starts over with a new CA.
        let Issued { data, annotations } = match issue(now, &plan, current.as_ref(), &target.dns_names) {
            Err(CertError::Ca(why)) => {
                warn!(reason = %why, "webhook CA unusable; issuing a new one");
                issue(now, &Plan::Replace, None, &target.dns_names)?
            }
            other => other?,
        };
        let mut secret = current.clone().unwrap_or_else(|| Secret {
            metadata: ObjectMeta {
                name: Some(target.secret_name.clone()),
                namespace: Some(target.secret_namespace.clone()),
                labels: Some(BTreeMap::from([(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned())])),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".to_owned()),
            ..Default::default()
        });
        secret.data = Some(data);
        secret.metadata.annotations.get_or_insert_with(BTreeMap::new).extend(annotations);
        fence.check()?;
        // Create, or replace on the resourceVersion read: a concurrent
        // writer makes this fail (409), and the next round starts over.
        current = Some(match current {
            None => secrets.create(&PostParams::default(), &secret).await?,
            Some(_) => secrets.replace(&target.secret_name, &PostParams::default(), &secret).await?,
        });
        info!(secret = %target.secret_name, ?plan, "webhook certificate issued");
    }
    let Some(name) = &target.webhook_configuration else { return Ok(()) };
    let Some(ca) = current.as_ref().and_then(|s| s.data.as_ref()).and_then(|d| d.get(CA_CERT)) else { return Ok(()) };
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let Some(mut config) = configs.get_opt(name).await? else {
        warn!(configuration = %name, "the MutatingWebhookConfiguration does not exist; nothing calls the webhook");
        return Ok(());
    };
    let mut changed = false;
    for webhook in config.webhooks.iter_mut().flatten() {
        if webhook.client_config.ca_bundle.as_ref() != Some(ca) {
            webhook.client_config.ca_bundle = Some(ca.clone());
            changed = true;
        }
    }
    if changed {
        fence.check()?;
        configs.replace(name, &PostParams::default(), &config).await?;
        info!(configuration = %name, "caBundle updated");
    }
    Ok(())
}

/// The pair every replica serves: empty until the Secret first holds one.
#[derive(Clone, Default)]
pub struct Served(Arc<ArcSwapOption<CertifiedKey>>);

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served").field("loaded", &self.0.load().is_some()).finish()
    }
}

impl Served {
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.0.load_full()
    }

    /// Loads the Secret's pair; a pair that does not parse or whose key does
    /// not match keeps the previous one.
    pub fn load(&self, secret: &Secret) -> Result<(), String> {
        let data = secret.data.as_ref().ok_or("the Secret has no data")?;
        let get = |k: &str| data.get(k).map(|v| v.0.as_slice()).ok_or(format!("the Secret has no {k}"));
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let pair = sigil_runtime::tls::certified_key(get(TLS_CERT)?, get(TLS_KEY)?, &provider)
            .map_err(|e| format!("{}: {e}", if e.in_key() { TLS_KEY } else { TLS_CERT }))?;
        self.0.store(Some(Arc::new(pair)));
        Ok(())
    }
}

/// Every replica: follows the Secret and serves what it holds.
pub async fn follow(client: Client, namespace: String, name: String, served: Served) {
    let secrets: Api<Secret> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher::watcher(secrets, config));
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret)) => match served.load(&secret) {
                Ok(()) => info!(secret = %name, "webhook certificate loaded"),
                Err(why) => {
                    warn!(secret = %name, reason = %why, "webhook certificate not loaded; serving the previous one")
                }
            },
            Ok(_) => {}
            Err(error) => warn!(%error, secret = %name, "watching the webhook certificate"),
        }
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    use super::*;

    fn names() -> Vec<String> {
        vec!["sigil-operator.sigil.svc".to_owned(), "sigil-operator.sigil".to_owned()]
    }

    fn secret(data: BTreeMap<String, ByteString>, annotations: BTreeMap<String, String>) -> Secret {
        Secret {
            metadata: ObjectMeta { annotations: Some(annotations), ..Default::default() },
            data: Some(data),
            ..Default::default()
        }
    }

    #[test]
    fn a_missing_secret_gets_a_ca_and_a_certificate_that_chains_to_it() {
        let now = Timestamp::now();
        assert_eq!(plan(now, None, &names()), Plan::Replace);
        let Issued { data, annotations } = issue(now, &Plan::Replace, None, &names()).expect("issue");
        let s = secret(data, annotations);
        assert_eq!(plan(now, Some(&s), &names()), Plan::Keep, "freshly issued");
        let served = Served::default();
        served.load(&s).expect("the pair loads and matches");
        verify_chain(&s, "sigil-operator.sigil.svc", now);
    }

    /// The serving certificate chains to the CA in the Secret for the name
    /// the API server dials: what `caBundle` promises.
    fn verify_chain(s: &Secret, name: &str, now: Timestamp) {
        let data = s.data.as_ref().expect("data");
        let ca = CertificateDer::from_pem_slice(&data[CA_CERT].0).expect("ca pem");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).expect("root");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("verifier");
        let leaf = CertificateDer::from_pem_slice(&data[TLS_CERT].0).expect("leaf pem");
        let server = rustls::pki_types::ServerName::try_from(name.to_owned()).expect("name");
        let at = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            now.as_second().unsigned_abs(),
        ));
        rustls::client::danger::ServerCertVerifier::verify_server_cert(&*verifier, &leaf, &[], &server, &[], at)
            .expect("the certificate chains to the CA for its DNS name");
    }

    #[test]
    fn renewal_keeps_the_ca_so_ca_bundle_never_changes() {
        let now = Timestamp::now();
        let Issued { data, annotations } = issue(now, &Plan::Replace, None, &names()).expect("issue");
        let first = secret(data, annotations);
        let later = now + SignedDuration::from_hours(24 * 250);
        assert_eq!(plan(later, Some(&first), &names()), Plan::Renew, "eight months on");
        let Issued { data, annotations } = issue(later, &Plan::Renew, Some(&first), &names()).expect("renew");
        let second = secret(data, annotations);
        let d = |s: &Secret, k: &str| s.data.as_ref().expect("data")[k].clone();
        assert_eq!(d(&first, CA_CERT), d(&second, CA_CERT));
        assert_ne!(d(&first, TLS_CERT), d(&second, TLS_CERT));
        assert_eq!(plan(later, Some(&second), &names()), Plan::Keep);
        verify_chain(&second, "sigil-operator.sigil", later);
    }

    #[test]
    fn damaged_or_outdated_secrets_are_issued_again() {
        let now = Timestamp::now();
        let Issued { data, annotations } = issue(now, &Plan::Replace, None, &names()).expect("issue");
        let good = secret(data.clone(), annotations.clone());
        let without = |key: &str| {
            let mut d = data.clone();
            d.remove(key);
            secret(d, annotations.clone())
        };
        assert_eq!(plan(now, Some(&without(CA_KEY)), &names()), Plan::Replace);
        assert_eq!(plan(now, Some(&without(TLS_KEY)), &names()), Plan::Renew);
        let mut garbled = annotations.clone();
        garbled.insert(ANNOTATION_RENEW_AFTER.into(), "soon".into());
        assert_eq!(plan(now, Some(&secret(data.clone(), garbled)), &names()), Plan::Renew);
        let other_names = vec!["other.sigil.svc".to_owned()];
        assert_eq!(plan(now, Some(&good), &other_names), Plan::Renew, "the Service was renamed");
        let ten_years = now + SignedDuration::from_hours(24 * 3300);
        assert_eq!(plan(ten_years, Some(&good), &names()), Plan::Replace, "the CA nears its end");
        // A pair whose key does not match is never served.
        let other = issue(now, &Plan::Replace, None, &names()).expect("issue").data;
        let mut mixed = data.clone();
        mixed.insert(TLS_KEY.into(), other[TLS_KEY].clone());
        let served = Served::default();
        assert!(served.load(&secret(mixed, annotations)).is_err());
        assert!(served.current().is_none());
    }
}
