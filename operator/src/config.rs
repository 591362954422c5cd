//! Command-line flags, each with a `SIGIL_*` environment twin, parsed once
//! into typed values before anything binds a port or calls the API server.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sigil_runtime::telemetry::LogFormat;

/// Reconciles SigningKeys (sigil.dev/v1alpha1) into a private-key Secret and a
/// JWKS ConfigMap, and rotates keys so no token ever fails verification.
///
/// Connects with the in-cluster ServiceAccount, or with $KUBECONFIG /
/// ~/.kube/config when run outside a cluster.
#[derive(Debug, Parser)]
#[command(name = "sigil-operator", version)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Watch SigningKeys in this namespace only (default: all namespaces).
    #[arg(long, env = "SIGIL_NAMESPACE")]
    pub namespace: Option<String>,

    /// Address of the admin server: /healthz, /readyz and /metrics.
    #[arg(long, alias = "metrics-listen", env = "SIGIL_ADMIN_LISTEN", default_value = "0.0.0.0:8081")]
    pub admin_listen: SocketAddr,

    /// Run only while holding a coordination.k8s.io Lease, so several replicas
    /// can run safely (one reconciles, the others wait).
    #[arg(long, env = "SIGIL_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "SIGIL_LEASE_NAME", default_value = "sigil-operator")]
    pub lease_name: String,

    /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, then --namespace).
    #[arg(long, env = "SIGIL_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// This replica's identity in the Lease (default: $POD_NAME, then the host name).
    #[arg(long, env = "SIGIL_IDENTITY")]
    pub identity: Option<String>,

    /// The shortest rotation.prePublish a SigningKey may have: how long the
    /// kubelet may take to deliver a changed JWKS ConfigMap to a pod (2m covers
    /// the default 1m sync loop under load). Lower it only for tests that do
    /// not mount the JWKS; SigningKeys then report TimingsEnforced=False.
    #[arg(long, env = "SIGIL_MIN_PRE_PUBLISH", default_value = "2m", value_parser = duration)]
    pub min_pre_publish: Duration,

    /// Log format: json (one object per line) or text.
    #[arg(long, env = "SIGIL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub webhook: WebhookConfig,
}

/// The sidecar-injection webhook: off unless --webhook-listen is given.
#[derive(Debug, clap::Args)]
pub struct WebhookConfig {
    /// Serve the sidecar-injection admission webhook (HTTPS) on this address,
    /// on every replica, leader or not.
    #[arg(long, env = "SIGIL_WEBHOOK_LISTEN")]
    pub webhook_listen: Option<SocketAddr>,

    /// Secret holding the webhook's certificate (tls.crt, tls.key), in
    /// --webhook-secret-namespace (default: $POD_NAMESPACE).
    #[arg(long, env = "SIGIL_WEBHOOK_SECRET", default_value = "sigil-webhook-tls")]
    pub webhook_secret: String,

    #[arg(long, env = "SIGIL_WEBHOOK_SECRET_NAMESPACE")]
    pub webhook_secret_namespace: Option<String>,

    /// Issue the certificate (a CA and a serving certificate in
    /// --webhook-secret) and keep the CA in --webhook-configuration's
    /// caBundle. false: something else writes both (cert-manager).
    #[arg(long, env = "SIGIL_WEBHOOK_MANAGE_CERTIFICATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub webhook_manage_certificate: bool,

    /// The MutatingWebhookConfiguration whose caBundle the operator keeps.
    #[arg(long, env = "SIGIL_WEBHOOK_CONFIGURATION", default_value = "sigil-injector")]
    pub webhook_configuration: String,

    /// DNS name the API server dials (the webhook Service's
    /// <service>.<namespace>.svc); repeatable.
    #[arg(long = "webhook-dns-name", env = "SIGIL_WEBHOOK_DNS_NAMES", value_delimiter = ',')]
    pub webhook_dns_names: Vec<String>,

    /// The sidecar image injected.
    #[arg(long, env = "SIGIL_INJECT_IMAGE", default_value = concat!("sigil-sidecar:", env!("CARGO_PKG_VERSION")))]
    pub inject_image: String,

    #[arg(long, env = "SIGIL_INJECT_IMAGE_PULL_POLICY", default_value = "IfNotPresent")]
    pub inject_image_pull_policy: String,

    /// The issuer URL every injected sidecar requires in `iss`, byte for byte.
    #[arg(long, env = "SIGIL_INJECT_ISSUER")]
    pub inject_issuer: Option<String>,

    /// SigningKey (<namespace>/<name>) for Pods whose sigil.dev/signing-key
    /// annotation names none.
    #[arg(long, env = "SIGIL_INJECT_SIGNING_KEY")]
    pub inject_signing_key: Option<String>,

    /// The injected sidecar's resources, as a Kubernetes ResourceRequirements
    /// in JSON.
    #[arg(
        long,
        env = "SIGIL_INJECT_RESOURCES",
        default_value = r#"{"requests":{"cpu":"50m","memory":"16Mi"},"limits":{"cpu":"500m","memory":"64Mi"}}"#
    )]
    pub inject_resources: String,
}

impl WebhookConfig {
    /// What every injection uses, or why the flags do not add up. `None`
    /// when the webhook is off.
    pub fn injection(&self) -> Result<Option<crate::inject::Defaults>, String> {
        if self.webhook_listen.is_none() {
            return Ok(None);
        }
        let issuer = self.inject_issuer.clone().filter(|i| !i.is_empty()).ok_or(
            "--inject-issuer is required with --webhook-listen: the issuer URL injected sidecars require in `iss`",
        )?;
        let signing_key = match &self.inject_signing_key {
            Some(value) if !value.contains('/') => {
                return Err(format!("--inject-signing-key {value:?}: expected <namespace>/<name>"));
            }
            Some(value) => {
                Some(crate::inject::KeyRef::parse(value, "").map_err(|e| format!("--inject-signing-key: {e}"))?)
            }
            None => None,
        };
        let resources = serde_json::from_str(&self.inject_resources)
            .map_err(|e| format!("--inject-resources is not a ResourceRequirements in JSON: {e}"))?;
        if self.webhook_manage_certificate && self.webhook_dns_names.is_empty() {
            return Err("--webhook-dns-name is required when the operator issues the webhook's certificate: the webhook Service's <service>.<namespace>.svc".into());
        }
        Ok(Some(crate::inject::Defaults {
            image: self.inject_image.clone(),
            image_pull_policy: self.inject_image_pull_policy.clone(),
            issuer,
            signing_key,
            resources,
        }))
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    sigil_api::duration::parse(s).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the SigningKey CustomResourceDefinition as YAML and exit.
    Crd,
}

/// Where the leader-election Lease lives and who we are in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
}

impl Config {
    /// The Lease settings, or why they cannot be worked out. `env` reads the
    /// environment (injected for tests).
    pub fn lease(&self, env: impl Fn(&str) -> Option<String>) -> Result<Option<LeaseConfig>, String> {
        if !self.leader_election {
            return Ok(None);
        }
        let namespace = self
            .lease_namespace
            .clone()
            .or_else(|| env("POD_NAMESPACE"))
            .or_else(|| self.namespace.clone())
            .filter(|n| !n.is_empty())
            .ok_or("leader election needs a namespace for its Lease: set --lease-namespace (or POD_NAMESPACE), or pass --leader-election=false")?;
        let identity = self
            .identity
            .clone()
            .or_else(|| env("POD_NAME"))
            .or_else(|| env("HOSTNAME"))
            .filter(|n| !n.is_empty())
            .ok_or("leader election needs an identity: set --identity (or POD_NAME)")?;
        Ok(Some(LeaseConfig { name: self.lease_name.clone(), namespace, identity }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("sigil-operator").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).expect("parse");
        assert!(c.command.is_none());
        assert_eq!(c.admin_listen, "0.0.0.0:8081".parse().expect("addr"));
        assert!(c.leader_election);
        assert_eq!(c.lease_name, "sigil-operator");
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.min_pre_publish, crate::decide::Limits::DEFAULT_MIN_PRE_PUBLISH);
        Config::command().debug_assert();
    }

    #[test]
    fn lease_namespace_and_identity_fall_back_in_order() {
        let env = |k: &str| match k {
            "POD_NAMESPACE" => Some("sigil-system".to_owned()),
            "POD_NAME" => Some("sigil-operator-abc".to_owned()),
            _ => None,
        };
        let c = parse(&["--namespace", "team"]).expect("parse");
        let lease = c.lease(env).expect("lease").expect("enabled");
        assert_eq!((lease.namespace.as_str(), lease.identity.as_str()), ("sigil-system", "sigil-operator-abc"));
        let lease = c.lease(|_| None::<String>);
        assert!(lease.is_err(), "no identity anywhere");
        let c = parse(&["--namespace", "team", "--identity", "me"]).expect("parse");
        assert_eq!(c.lease(|_| None).expect("lease").expect("enabled").namespace, "team");
        let c = parse(&["--identity", "me"]).expect("parse");
        assert!(c.lease(|_| None).expect_err("no namespace").contains("--lease-namespace"));
        let c = parse(&["--leader-election", "false"]).expect("parse");
        assert_eq!(c.lease(|_| None), Ok(None));
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        let err = parse(&["--admin-listen", "nope"]).expect_err("bad address").to_string();
        assert!(err.contains("--admin-listen"), "{err}");
        assert!(parse(&["--leader-election", "maybe"]).is_err());
        assert!(parse(&["--log-format", "xml"]).is_err());
        let err = parse(&["--min-pre-publish", "2 minutes"]).expect_err("bad duration").to_string();
        assert!(err.contains("--min-pre-publish"), "{err}");
        assert_eq!(parse(&["--min-pre-publish", "1s"]).expect("parse").min_pre_publish, Duration::from_secs(1));
        assert!(matches!(parse(&["crd"]).expect("crd").command, Some(Command::Crd)));
    }

    #[test]
    fn the_webhook_is_off_by_default_and_its_flags_are_checked_when_on() {
        assert!(parse(&[]).expect("parse").webhook.injection().expect("off").is_none());
        let on = ["--webhook-listen=0.0.0.0:9443", "--webhook-dns-name=sigil-operator.sigil.svc"];
        let err = parse(&on).expect("parse").webhook.injection().expect_err("no issuer");
        assert!(err.contains("--inject-issuer"), "{err}");
        let with = |extra: &[&str]| {
            let args: Vec<&str> = on
                .iter()
                .chain(["--inject-issuer=http://sigil-issuer.sigil.svc"].iter())
                .chain(extra)
                .copied()
                .collect();
            parse(&args).expect("parse").webhook.injection()
        };
        let defaults = with(&[]).expect("valid").expect("on");
        assert_eq!(defaults.image, concat!("sigil-sidecar:", env!("CARGO_PKG_VERSION")));
        assert!(defaults.resources.limits.is_some() && defaults.signing_key.is_none());
        let key = with(&["--inject-signing-key=sigil/api"]).expect("valid").expect("on").signing_key;
        assert_eq!(key.map(|k| k.to_string()).as_deref(), Some("sigil/api"));
        assert!(with(&["--inject-signing-key=api"]).expect_err("no namespace").contains("<namespace>/<name>"));
        assert!(with(&["--inject-resources={"]).expect_err("bad json").contains("--inject-resources"));
        let no_names = parse(&["--webhook-listen=0.0.0.0:9443", "--inject-issuer=http://i"]).expect("parse");
        assert!(no_names.webhook.injection().expect_err("no dns name").contains("--webhook-dns-name"));
        let external =
            ["--webhook-listen=0.0.0.0:9443", "--inject-issuer=http://i", "--webhook-manage-certificate=false"];
        assert!(parse(&external).expect("parse").webhook.injection().expect("cert-manager writes it").is_some());
    }
}
