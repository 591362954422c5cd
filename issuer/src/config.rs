//! Command-line flags (each with a `SIGIL_*` environment twin), parsed once
//! and validated before anything is read or any port is bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sigil_runtime::telemetry::LogFormat;

use crate::error::{Error, Result};
use sigil_runtime::client_ip::Cidr;

/// The longest token lifetime the issuer accepts, from flags or a client entry.
/// Access tokens cannot be revoked, so they must stay short-lived.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Parser)]
#[command(
    name = "sigil-issuer",
    version,
    about = "Signs JWT access tokens (RFC 9068) for OAuth clients with the key of a Sigil SigningKey",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read a client secret or password from stdin and print its Argon2id PHC
    /// hash, for `secretHash` / `passwordHash` in the clients file.
    HashSecret,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the token and discovery endpoints.
    #[arg(long, env = "SIGIL_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// PEM certificate chain for HTTPS on --listen (e.g. tls.crt of a
    /// kubernetes.io/tls Secret); re-read when it changes. With
    /// --tls-key-file; without both, --listen serves plain HTTP (for a mesh
    /// or ingress that terminates TLS in front of the issuer).
    #[arg(long, env = "SIGIL_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of --tls-cert-file (e.g. tls.key).
    #[arg(long, env = "SIGIL_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "SIGIL_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,

    /// Directory laid out as the signing-key Secret's volume mount
    /// (private.pem, kid, alg).
    #[arg(long, env = "SIGIL_KEY_DIR", required = true)]
    pub key_dir: Option<PathBuf>,

    /// The JWKS ConfigMap's mounted jwks.json, served at /.well-known/jwks.json.
    #[arg(long, env = "SIGIL_JWKS_FILE", required = true)]
    pub jwks_file: Option<PathBuf>,

    /// The `iss` claim and the base URL of the discovery documents
    /// (https://host[/path], no trailing slash, query or fragment).
    #[arg(long, env = "SIGIL_ISSUER_URL", required = true)]
    pub issuer_url: Option<String>,

    /// The `aud` claim of tokens whose client sets no `audience` of its own.
    #[arg(long, env = "SIGIL_AUDIENCE", required = true)]
    pub audience: Option<String>,

    /// Lifetime of tokens whose client sets no `ttl` of its own (Go duration, at most 24h).
    #[arg(long, env = "SIGIL_TOKEN_TTL", default_value = "15m", value_parser = duration)]
    pub token_ttl: Duration,

    /// YAML file of OAuth clients and password-grant users; reloaded when it changes.
    #[arg(long, env = "SIGIL_CLIENTS_FILE", required = true)]
    pub clients_file: Option<PathBuf>,

    /// `Cache-Control: max-age` of the JWKS and discovery documents.
    #[arg(long, env = "SIGIL_JWKS_MAX_AGE", default_value = "5m", value_parser = duration)]
    pub jwks_max_age: Duration,

    /// How long a verified client secret or user password is remembered, so
    /// repeated requests skip Argon2 and are answered even while others fail
    /// under the same id (an entry only matches the stored hash it was
    /// verified against, so a changed secret never hits it).
    #[arg(long, env = "SIGIL_AUTH_CACHE_TTL", default_value = "1h", value_parser = duration)]
    pub auth_cache_ttl: Duration,

    /// Most remembered authentications.
    #[arg(long, env = "SIGIL_AUTH_CACHE_SIZE", default_value_t = 10_000)]
    pub auth_cache_size: usize,

    /// Failed authentications of one client id (or username) from one source
    /// address before that pair backs off (1s, doubling per failure, up to
    /// --auth-backoff-max). Other sources are not affected.
    #[arg(long, env = "SIGIL_AUTH_FAILURE_LIMIT", default_value_t = 5)]
    pub auth_failure_limit: u32,

    /// The longest back-off; a pair quiet this long after its back-off starts over.
    #[arg(long, env = "SIGIL_AUTH_BACKOFF_MAX", default_value = "15m", value_parser = duration)]
    pub auth_backoff_max: Duration,

    /// Failed authentications per minute for one client id or username across
    /// all sources before that id waits (unless its secret is already proven);
    /// far above real traffic, it slows guesses spread over many addresses.
    #[arg(long, env = "SIGIL_AUTH_FAILURES_PER_MINUTE", default_value_t = 600)]
    pub auth_failures_per_minute: u32,

    /// Most (client id or username, source) pairs whose failures are
    /// remembered; when full, the pair that failed longest ago is forgotten.
    #[arg(long, env = "SIGIL_AUTH_FAILURE_TABLE_SIZE", default_value_t = 100_000)]
    pub auth_failure_table_size: usize,

    /// Proxies (IP addresses or CIDR ranges, comma-separated) whose
    /// X-Forwarded-For is believed for the back-off's source address, e.g. the
    /// ingress controller's pod range. Without it, the peer address is used.
    #[arg(long, env = "SIGIL_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<Cidr>,

    /// Re-read the key, JWKS and clients files at least this often, in case a
    /// file-system event was missed.
    #[arg(long, env = "SIGIL_RELOAD_PERIOD", default_value = "30s", value_parser = duration)]
    pub reload_period: Duration,

    /// After SIGTERM, how long to keep accepting requests while /readyz already
    /// fails, so the endpoint is removed everywhere before the listener closes
    /// (0s to stop at once). Keep it plus the 20s drain under the pod's
    /// terminationGracePeriodSeconds.
    #[arg(long, env = "SIGIL_SHUTDOWN_DELAY", default_value = "5s", value_parser = duration)]
    pub shutdown_delay: Duration,

    /// Accept projected ServiceAccount tokens (workload identity): as RFC 7523
    /// client assertions on client_credentials and as RFC 8693 subject tokens,
    /// for the ServiceAccounts that SigilClient resources admit. Off by default.
    #[arg(long, env = "SIGIL_WORKLOAD_IDENTITY")]
    pub workload_identity: bool,

    /// The API server's --service-account-issuer: the `iss` of ServiceAccount
    /// tokens (e.g. https://kubernetes.default.svc.cluster.local). Required
    /// with --workload-identity: clusters differ, and a wrong guess would
    /// refuse every token.
    #[arg(long, env = "SIGIL_SERVICE_ACCOUNT_ISSUER")]
    pub service_account_issuer: Option<String>,

    /// Path on the API server of its ServiceAccount token keys (its OIDC
    /// JWKS), read through the in-cluster client (the pod's own
    /// ServiceAccount token and CA, or KUBECONFIG) every minute.
    #[arg(long, env = "SIGIL_SERVICE_ACCOUNT_JWKS_PATH", default_value = "/openid/v1/jwks")]
    pub service_account_jwks_path: String,

    /// The audience callers must request their ServiceAccount token for
    /// (projected volume `audience`); default: --issuer-url.
    #[arg(long, env = "SIGIL_SERVICE_ACCOUNT_AUDIENCE")]
    pub service_account_audience: Option<String>,

    /// How long the API server's answer (TokenReview) on a pod-bound
    /// ServiceAccount token is trusted: a deleted pod's token stops working
    /// within this time; each token costs one TokenReview per period.
    #[arg(long, env = "SIGIL_SERVICE_ACCOUNT_REVIEW_TTL", default_value = "60s", value_parser = duration)]
    pub service_account_review_ttl: Duration,

    /// Log format.
    #[arg(long, env = "SIGIL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

fn duration(s: &str) -> Result<Duration, String> {
    sigil_api::duration::parse(s).map_err(|e| e.to_string())
}

/// The validated configuration the issuer runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Certificate and key files, when --listen serves HTTPS.
    pub tls: Option<TlsFiles>,
    pub admin_listen: SocketAddr,
    pub key_dir: PathBuf,
    pub jwks_file: PathBuf,
    pub issuer_url: String,
    pub audience: String,
    pub token_ttl: Duration,
    pub clients_file: PathBuf,
    pub jwks_max_age: Duration,
    pub auth_cache_ttl: Duration,
    pub auth_cache_size: usize,
    pub auth_failure_limit: u32,
    pub auth_backoff_max: Duration,
    pub auth_failures_per_minute: u32,
    pub auth_failure_table_size: usize,
    pub trusted_proxies: Vec<Cidr>,
    pub reload_period: Duration,
    pub shutdown_delay: Duration,
    /// Set with --workload-identity.
    pub workload: Option<WorkloadConfig>,
}

/// How ServiceAccount tokens are verified (see `workload`).
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Expected `iss` of ServiceAccount tokens.
    pub issuer: String,
    /// Expected `aud` of ServiceAccount tokens.
    pub audience: String,
    /// API server path of the ServiceAccount JWKS.
    pub jwks_path: String,
    /// How long a TokenReview of a pod-bound token is trusted.
    pub review_ttl: Duration,
}

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ServeArgs {
    /// Checks what clap cannot: URL shape, non-empty values, sane durations.
    pub fn validate(self) -> Result<Config> {
        let missing = |flag: &str| Error::Config(format!("--{flag} is required"));
        let issuer_url = self.issuer_url.ok_or_else(|| missing("issuer-url"))?;
        validate_issuer_url(&issuer_url)?;
        let audience = self.audience.ok_or_else(|| missing("audience"))?;
        if audience.trim().is_empty() {
            return Err(Error::Config("--audience must not be empty".into()));
        }
        validate_ttl("--token-ttl", self.token_ttl)?;
        let tls = match (self.tls_cert_file, self.tls_key_file) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => return Err(Error::Config("--tls-cert-file and --tls-key-file go together".into())),
        };
        // The discovery documents name the token endpoint under the issuer
        // URL; with TLS on, an http:// URL would send clients' secrets to a
        // port that does not speak it.
        if tls.is_some() && !issuer_url.starts_with("https://") {
            return Err(Error::Config(format!("--issuer-url {issuer_url:?} must be https:// when TLS is on")));
        }
        if self.reload_period < Duration::from_secs(1) {
            return Err(Error::Config("--reload-period must be at least 1s".into()));
        }
        if self.auth_failure_limit == 0 || self.auth_backoff_max < Duration::from_secs(1) {
            return Err(Error::Config(
                "--auth-failure-limit must be positive and --auth-backoff-max at least 1s".into(),
            ));
        }
        if self.auth_failures_per_minute == 0 || self.auth_failure_table_size == 0 {
            return Err(Error::Config(
                "--auth-failures-per-minute and --auth-failure-table-size must be positive".into(),
            ));
        }
        if self.shutdown_delay > Duration::from_secs(60) {
            return Err(Error::Config("--shutdown-delay must be at most 60s".into()));
        }
        if self.auth_cache_size == 0 || self.auth_cache_ttl.is_zero() {
            return Err(Error::Config("--auth-cache-size and --auth-cache-ttl must be positive".into()));
        }
        let workload = if self.workload_identity {
            let issuer = self.service_account_issuer.ok_or_else(|| {
                Error::Config("--service-account-issuer is required with --workload-identity (the API server's --service-account-issuer)".into())
            })?;
            let audience = self.service_account_audience.unwrap_or_else(|| issuer_url.clone());
            for (flag, value) in [("--service-account-issuer", &issuer), ("--service-account-audience", &audience)] {
                if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(Error::Config(format!("{flag} must be non-empty and without whitespace")));
                }
            }
            if !self.service_account_jwks_path.starts_with('/') || self.service_account_jwks_path.contains("://") {
                return Err(Error::Config("--service-account-jwks-path must be a path such as /openid/v1/jwks".into()));
            }
            let review_ttl = self.service_account_review_ttl;
            if review_ttl < Duration::from_secs(1) || review_ttl > Duration::from_secs(3600) {
                return Err(Error::Config("--service-account-review-ttl must be between 1s and 1h".into()));
            }
            Some(WorkloadConfig { issuer, audience, jwks_path: self.service_account_jwks_path, review_ttl })
        } else {
            None
        };
        Ok(Config {
            listen: self.listen,
            tls,
            admin_listen: self.admin_listen,
            key_dir: self.key_dir.ok_or_else(|| missing("key-dir"))?,
            jwks_file: self.jwks_file.ok_or_else(|| missing("jwks-file"))?,
            issuer_url,
            audience,
            token_ttl: self.token_ttl,
            clients_file: self.clients_file.ok_or_else(|| missing("clients-file"))?,
            jwks_max_age: self.jwks_max_age,
            auth_cache_ttl: self.auth_cache_ttl,
            auth_cache_size: self.auth_cache_size,
            auth_failure_limit: self.auth_failure_limit,
            auth_backoff_max: self.auth_backoff_max,
            auth_failures_per_minute: self.auth_failures_per_minute,
            auth_failure_table_size: self.auth_failure_table_size,
            trusted_proxies: self.trusted_proxies,
            reload_period: self.reload_period,
            shutdown_delay: self.shutdown_delay,
            workload,
        })
    }
}

/// RFC 8414 section 2: the issuer is a URL with no query or fragment. A
/// trailing slash is refused rather than trimmed, because `iss` must match what
/// verifiers are configured with byte for byte.
fn validate_issuer_url(url: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::Config(format!("--issuer-url {url:?}: {why}")));
    let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) else {
        return bad("must start with https:// (or http:// for local testing)");
    };
    if rest.is_empty() || rest.starts_with('/') {
        return bad("has no host");
    }
    if url.contains(['?', '#']) {
        return bad("must not have a query or fragment");
    }
    if url.ends_with('/') {
        return bad("must not end with a slash");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("must not contain whitespace");
    }
    Ok(())
}

pub(crate) fn validate_ttl(what: &str, ttl: Duration) -> Result<()> {
    if ttl < Duration::from_secs(1) || ttl > MAX_TOKEN_TTL {
        return Err(Error::Config(format!(
            "{what} {} is out of range: use 1s to 24h",
            sigil_api::duration::format(ttl)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        let base = [
            "sigil-issuer",
            "--key-dir=/k",
            "--jwks-file=/j/jwks.json",
            "--issuer-url=https://issuer.example",
            "--audience=api",
            "--clients-file=/c.yaml",
        ];
        // A flag given in `args` replaces the base one (clap refuses repeats).
        let flag = |a: &str| a.split('=').next().unwrap_or_default().to_owned();
        let overridden: Vec<String> = args.iter().map(|a| flag(a)).collect();
        let base = base.iter().filter(|b| !overridden.contains(&flag(b)));
        Cli::try_parse_from(base.chain(args))
    }

    #[test]
    fn defaults_follow_the_documented_interface() {
        let config = parse(&[]).expect("parse").serve.validate().expect("valid");
        assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(config.admin_listen.to_string(), "0.0.0.0:9090");
        assert_eq!(config.token_ttl, Duration::from_secs(900));
        assert_eq!(config.issuer_url, "https://issuer.example");
        assert!(config.trusted_proxies.is_empty());
        let config = parse(&["--trusted-proxies=10.0.0.0/8,fd00::/8"]).expect("parse").serve.validate().expect("ok");
        assert_eq!(config.trusted_proxies.len(), 2);
        assert!(parse(&["--trusted-proxies=10.0.0.0/99"]).is_err());
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        for (arg, needle) in [
            ("--issuer-url=issuer.example", "--issuer-url"),
            ("--issuer-url=https://issuer.example/", "slash"),
            ("--issuer-url=https://issuer.example?x=1", "query"),
            ("--token-ttl=48h", "--token-ttl"),
            ("--audience= ", "--audience"),
            ("--auth-failure-limit=0", "--auth-failure-limit"),
            ("--auth-failures-per-minute=0", "--auth-failures-per-minute"),
            ("--auth-failure-table-size=0", "--auth-failure-table-size"),
            ("--shutdown-delay=5m", "--shutdown-delay"),
            ("--issuer-url=http://issuer.example", "must be https://"),
        ] {
            let tls = ["--tls-cert-file=/t/tls.crt", "--tls-key-file=/t/tls.key"];
            let args: Vec<&str> = if needle == "must be https://" { [&[arg][..], &tls].concat() } else { vec![arg] };
            let err = parse(&args).expect("clap accepts").serve.validate().expect_err(arg).to_string();
            assert!(err.contains(needle), "{arg}: {err}");
        }
        assert!(parse(&["--token-ttl=soon"]).is_err());
        assert!(parse(&["--tls-cert-file=/t/tls.crt"]).is_err(), "a certificate needs its key");
        let tls = parse(&["--tls-cert-file=/t/tls.crt", "--tls-key-file=/t/tls.key"]).expect("parse");
        assert!(tls.serve.validate().expect("https issuer").tls.is_some());
        assert!(parse(&["--issuer-url=http://issuer.example"]).expect("parse").serve.validate().is_ok(), "plain HTTP");
    }

    #[test]
    fn workload_identity_is_off_by_default_and_needs_the_service_account_issuer() {
        assert!(parse(&[]).expect("parse").serve.validate().expect("valid").workload.is_none());
        let err = parse(&["--workload-identity"]).expect("parse").serve.validate().expect_err("no issuer");
        assert!(err.to_string().contains("--service-account-issuer"), "{err}");
        let on = ["--workload-identity", "--service-account-issuer=https://kubernetes.default.svc.cluster.local"];
        let workload = parse(&on).expect("parse").serve.validate().expect("valid").workload.expect("on");
        assert_eq!(workload.audience, "https://issuer.example", "defaults to the issuer URL");
        assert_eq!(workload.jwks_path, "/openid/v1/jwks");
        assert_eq!(workload.review_ttl, Duration::from_secs(60));
        let args = [&on[..], &["--service-account-review-ttl=2h"]].concat();
        assert!(parse(&args).expect("parse").serve.validate().is_err(), "review ttl bounded");
        let args = [&on[..], &["--service-account-audience=sigil"]].concat();
        assert_eq!(
            parse(&args).expect("parse").serve.validate().expect("valid").workload.expect("on").audience,
            "sigil"
        );
        let args = [&on[..], &["--service-account-jwks-path=https://10.0.0.1/openid/v1/jwks"]].concat();
        assert!(parse(&args).expect("parse").serve.validate().is_err(), "a URL, not a path");
    }

    #[test]
    fn required_flags_are_required_except_for_hash_secret() {
        assert!(Cli::try_parse_from(["sigil-issuer"]).is_err());
        let cli = Cli::try_parse_from(["sigil-issuer", "hash-secret"]).expect("subcommand alone");
        assert!(matches!(cli.command, Some(Command::HashSecret)));
    }
}
