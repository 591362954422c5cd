//! Command-line flags (each with a `SIGIL_*` environment twin), parsed and
//! checked once into typed settings. Anything invalid stops the sidecar with
//! a clear message before it binds a port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use http::Uri;
use sigil_core::Algorithm;
use sigil_runtime::telemetry::LogFormat;

use crate::Error;
use crate::headers::Underscores;
use crate::jwks::url::Schedule;
use crate::proxy::ProxyConfig;
use crate::routes::{self, Routes, ScopeRule};
use crate::server::Limits;
use crate::tunnel::Bounds;
use crate::verify::{AlgorithmSet, Policy, TokenProfile};
use sigil_runtime::client_ip::Cidr;

const DEFAULT_ALGORITHMS: &str = "RS256,RS384,RS512,PS256,PS384,PS512,ES256,ES384,EdDSA";

/// A verifying reverse proxy: checks each request's Bearer token against the
/// issuer's public keys and forwards only verified requests to the app.
///
/// The app receives X-Sigil-Subject, X-Sigil-Scope, X-Sigil-Client-Id (empty when
/// the claim is absent; UTF-8, controls and '%' percent-encoded) and X-Sigil-Claims
/// (the verified JWT payload, base64url); any X-Sigil-* header a client sends is
/// removed first. Paths are normalised before any decision, and the app receives
/// the normalised path (see the sidecar README).
#[derive(Parser, Debug, Clone)]
#[command(name = "sigil-sidecar", version, max_term_width = 110)]
pub struct Args {
    /// Address to serve proxied traffic on (HTTP/1.1 and HTTP/2 cleartext).
    #[arg(long, env = "SIGIL_LISTEN", default_value = "0.0.0.0:8000")]
    pub listen: SocketAddr,

    /// The app to forward verified requests to, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "SIGIL_UPSTREAM", value_parser = parse_upstream_uri)]
    pub upstream: Uri,

    /// Address of the admin server: /healthz, /readyz (ready once keys are loaded), /metrics.
    #[arg(long, env = "SIGIL_ADMIN_LISTEN", default_value = "0.0.0.0:9091")]
    pub admin_listen: SocketAddr,

    /// JWKS file to verify with, typically the SigningKey's ConfigMap mounted as a volume
    /// (re-read when the kubelet updates it).
    #[arg(long, env = "SIGIL_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,

    /// JWKS URL to verify with, e.g. https://sigil-issuer.auth.svc/.well-known/jwks.json. Plain
    /// http:// only to a loopback address, or anywhere with --jwks-allow-http.
    /// With --jwks-file too, a key verifies while either source lists it, and a key that either
    /// source stops listing stops verifying at once, until that source lists it again.
    #[arg(long, env = "SIGIL_JWKS_URL", value_parser = parse_jwks_uri)]
    pub jwks_url: Option<Uri>,

    /// PEM CA bundle to verify the https JWKS URL's certificate with, instead of the system's
    /// roots; re-read before each fetch, so a re-mounted bundle applies without a restart.
    #[arg(long, env = "SIGIL_JWKS_CA_FILE")]
    pub jwks_ca_file: Option<PathBuf>,

    /// Allow a plain http:// JWKS URL to a host that is not loopback, e.g. inside a mesh that
    /// encrypts pod-to-pod traffic. Without TLS anyone on the path can swap the keys.
    #[arg(long, env = "SIGIL_JWKS_ALLOW_HTTP")]
    pub jwks_allow_http: bool,

    /// How often to refresh the JWKS URL; also the upper bound for the response's Cache-Control max-age.
    #[arg(long, env = "SIGIL_JWKS_REFRESH", default_value = "5m", value_parser = parse_duration)]
    pub jwks_refresh: Duration,

    /// Minimum time between JWKS URL fetches, including those a token with an unknown kid triggers.
    #[arg(long, env = "SIGIL_JWKS_MIN_REFRESH", default_value = "30s", value_parser = parse_duration)]
    pub jwks_min_refresh: Duration,

    /// How long to keep using the last keys fetched from the URL while fetches fail.
    #[arg(long, env = "SIGIL_JWKS_MAX_STALE", default_value = "24h", value_parser = parse_duration)]
    pub jwks_max_stale: Duration,

    /// Required exact value of the `iss` claim (case-sensitive).
    #[arg(long, env = "SIGIL_ISSUER")]
    pub issuer: String,

    /// Accepted `aud` value (repeatable; the env var takes a comma-separated list). The token's
    /// `aud` must contain one of them exactly.
    #[arg(long = "audience", env = "SIGIL_AUDIENCE", value_delimiter = ',', required = true)]
    pub audiences: Vec<String>,

    /// Clock skew tolerated for exp, nbf and iat.
    #[arg(long, env = "SIGIL_LEEWAY", default_value = "30s", value_parser = parse_duration)]
    pub leeway: Duration,

    /// Refuse tokens whose lifetime (exp - iat) is longer than this.
    #[arg(long, env = "SIGIL_MAX_TOKEN_LIFETIME", value_parser = parse_duration)]
    pub max_token_lifetime: Option<Duration>,

    /// Accepted JWS algorithms (comma-separated). `none` and HMAC are never accepted.
    #[arg(long, env = "SIGIL_ALGORITHMS", value_delimiter = ',', default_value = DEFAULT_ALGORITHMS,
          value_parser = parse_algorithm)]
    pub algorithms: Vec<Algorithm>,

    /// What counts as an access token: `access-token` (RFC 9068: typ at+jwt; sub, iat, jti and
    /// client_id required) or `jwt` (any signed JWT, for issuers that do not type their tokens,
    /// e.g. Kubernetes ServiceAccount tokens).
    #[arg(long, env = "SIGIL_TOKEN_PROFILE", value_enum, default_value = "access-token")]
    pub token_profile: TokenProfile,

    /// Path prefix served without a token (repeatable; whole segments: /healthz covers
    /// /healthz/live but not /healthzx). The most specific rule wins: a --require-scope
    /// prefix inside a public path is still protected.
    #[arg(long = "public-path", env = "SIGIL_PUBLIC_PATHS", value_delimiter = ',', value_parser = routes::parse_prefix)]
    pub public_paths: Vec<String>,

    /// PREFIX=SCOPE[,SCOPE]: requests under PREFIX (whole segments) need every listed scope in the
    /// token's `scope` claim, or get 403 insufficient_scope; nested rules add their scopes
    /// (repeatable; the env var takes a space-separated list).
    #[arg(long = "require-scope", env = "SIGIL_REQUIRE_SCOPES", value_delimiter = ' ')]
    pub require_scopes: Vec<ScopeRule>,

    /// Match --public-path and --require-scope ignoring case, for apps whose router ignores it.
    #[arg(long, env = "SIGIL_CASE_INSENSITIVE_PATHS")]
    pub case_insensitive_paths: bool,

    /// Request header names containing '_': `reject` (400) or `drop`. Many frameworks read
    /// X_Sigil_Subject as X-Sigil-Subject.
    #[arg(long, env = "SIGIL_HEADERS_WITH_UNDERSCORES", value_enum, default_value = "reject")]
    pub headers_with_underscores: Underscores,

    /// Proxies (IP addresses or CIDR ranges, comma-separated) whose X-Forwarded-For, Forwarded,
    /// X-Real-IP and X-Forwarded-Proto/Host are passed on; from any other peer they are replaced.
    #[arg(long, env = "SIGIL_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<Cidr>,

    /// Keep the Authorization header when forwarding (by default the app never sees the token).
    #[arg(long, env = "SIGIL_FORWARD_TOKEN")]
    pub forward_token: bool,

    /// Largest token accepted, in bytes; longer ones are refused before decoding.
    #[arg(long, env = "SIGIL_MAX_TOKEN_BYTES", default_value_t = 8192)]
    pub max_token_bytes: usize,

    /// Verified tokens to remember, saving their signature check on reuse (0 turns the cache off).
    #[arg(long, env = "SIGIL_TOKEN_CACHE_SIZE", default_value_t = 10_000)]
    pub token_cache_size: usize,

    /// Time allowed to connect to the app.
    #[arg(long, env = "SIGIL_UPSTREAM_CONNECT_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub upstream_connect_timeout: Duration,

    /// Time allowed for the app to start its response (504 after that).
    #[arg(long, env = "SIGIL_UPSTREAM_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,

    /// Time a client has to send a complete HTTP/1.1 request head.
    #[arg(long, env = "SIGIL_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Largest request head accepted, in bytes (at least 8192).
    #[arg(long, env = "SIGIL_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,

    /// Proxy worker threads, each with its own event loop and upstream pool (default: one per CPU).
    #[arg(long, env = "SIGIL_THREADS")]
    pub threads: Option<usize>,

    /// Close an upgraded connection (WebSocket) after this long with no byte in either direction.
    #[arg(long, env = "SIGIL_UPGRADE_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub upgrade_idle_timeout: Duration,

    /// Close an upgraded connection after this long at most; it also closes when the token that
    /// opened it expires.
    #[arg(long, env = "SIGIL_UPGRADE_MAX_LIFETIME", default_value = "1h", value_parser = parse_duration)]
    pub upgrade_max_lifetime: Duration,

    /// After SIGTERM, how long to keep accepting requests while /readyz already fails, so the
    /// endpoint is removed everywhere before the listener closes (0s to stop at once). Keep
    /// --shutdown-delay plus --drain-timeout under the pod's terminationGracePeriodSeconds.
    #[arg(long, env = "SIGIL_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,

    /// How long in-flight requests may finish once the listener has closed.
    #[arg(long, env = "SIGIL_DRAIN_TIMEOUT", default_value = "25s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Log format.
    #[arg(long, env = "SIGIL_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

/// Everything the sidecar needs, checked.
#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<(Uri, Schedule)>,
    pub jwks_ca_file: Option<PathBuf>,
    pub policy: Policy,
    pub routes: Routes,
    pub underscores: Underscores,
    pub trusted_proxies: Vec<Cidr>,
    pub tunnels: Bounds,
    pub upstream: Uri,
    pub forward_token: bool,
    pub token_cache_size: usize,
    pub upstream_connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub threads: usize,
    pub limits: Limits,
    pub shutdown_delay: Duration,
    pub log_format: LogFormat,
}

impl Args {
    pub fn into_config(self) -> Result<Config, Error> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.jwks_file.is_none() && self.jwks_url.is_none() {
            return bad("set --jwks-file, --jwks-url, or both: the sidecar needs keys to verify with".into());
        }
        if let Some(url) = &self.jwks_url
            && url.scheme_str() == Some("http")
            && !self.jwks_allow_http
            && !is_loopback(url)
        {
            return bad(format!(
                "--jwks-url {url}: plain http to a host that is not loopback lets anyone on the path swap the keys; \
                 use https, or add --jwks-allow-http where the network is already encrypted (a mesh)"
            ));
        }
        if self.jwks_ca_file.is_some() && self.jwks_url.as_ref().and_then(Uri::scheme_str) != Some("https") {
            return bad("--jwks-ca-file needs an https:// --jwks-url".into());
        }
        if self.jwks_min_refresh > self.jwks_refresh {
            return bad(format!(
                "--jwks-min-refresh ({}) must not exceed --jwks-refresh ({})",
                sigil_core::duration::format(self.jwks_min_refresh),
                sigil_core::duration::format(self.jwks_refresh)
            ));
        }
        if self.jwks_min_refresh.is_zero() {
            return bad("--jwks-min-refresh must be more than zero".into());
        }
        if self.leeway > sigil_core::MAX_LEEWAY {
            // A SigningKey's retain budgets for this much skew and no more.
            return bad(format!(
                "--leeway must be at most {}: keys are retained for tokens' lifetime plus that much clock skew",
                sigil_core::duration::format(sigil_core::MAX_LEEWAY)
            ));
        }
        if self.issuer.is_empty() {
            return bad("--issuer must not be empty".into());
        }
        if self.audiences.iter().any(String::is_empty) {
            return bad("--audience must not be empty".into());
        }
        if self.algorithms.is_empty() {
            return bad("--algorithms must list at least one algorithm".into());
        }
        if !(256..=1024 * 1024).contains(&self.max_token_bytes) {
            return bad("--max-token-bytes must be between 256 and 1048576".into());
        }
        if self.max_header_bytes < 8192 || self.max_header_bytes < self.max_token_bytes + 1024 {
            return bad("--max-header-bytes must be at least 8192 and leave room for a full-size token".into());
        }
        let threads = match self.threads {
            Some(0) => return bad("--threads must be at least 1".into()),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, usize::from),
        };
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let policy = Policy {
            issuer: self.issuer,
            audiences: self.audiences,
            leeway_secs: secs(self.leeway),
            max_lifetime_secs: self.max_token_lifetime.map(secs),
            algorithms: self.algorithms.into_iter().collect::<AlgorithmSet>(),
            max_token_bytes: self.max_token_bytes,
            profile: self.token_profile,
        };
        let routes = match Routes::new(self.public_paths, self.require_scopes, self.case_insensitive_paths) {
            Ok(routes) => routes,
            Err(e) => return bad(e),
        };
        let schedule =
            Schedule { refresh: self.jwks_refresh, min_refresh: self.jwks_min_refresh, max_stale: self.jwks_max_stale };
        Ok(Config {
            listen: self.listen,
            admin_listen: self.admin_listen,
            jwks_file: self.jwks_file,
            jwks_url: self.jwks_url.map(|u| (u, schedule)),
            jwks_ca_file: self.jwks_ca_file,
            policy,
            routes,
            underscores: self.headers_with_underscores,
            trusted_proxies: self.trusted_proxies,
            tunnels: Bounds { idle: self.upgrade_idle_timeout, max_lifetime: self.upgrade_max_lifetime },
            upstream: self.upstream,
            forward_token: self.forward_token,
            token_cache_size: self.token_cache_size,
            upstream_connect_timeout: self.upstream_connect_timeout,
            upstream_timeout: self.upstream_timeout,
            threads,
            limits: Limits {
                header_read_timeout: self.header_read_timeout,
                max_header_bytes: self.max_header_bytes,
                drain_timeout: self.drain_timeout,
            },
            shutdown_delay: self.shutdown_delay,
            log_format: self.log_format,
        })
    }
}

impl Config {
    pub fn proxy(&self) -> ProxyConfig {
        ProxyConfig {
            upstream: self.upstream.clone(),
            routes: self.routes.clone(),
            underscores: self.underscores,
            trusted_proxies: self.trusted_proxies.clone(),
            tunnels: self.tunnels,
            forward_token: self.forward_token,
            connect_timeout: self.upstream_connect_timeout,
            response_timeout: self.upstream_timeout,
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    sigil_core::duration::parse(s).map_err(|e| e.to_string())
}

fn parse_upstream_uri(s: &str) -> Result<Uri, String> {
    let uri: Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(format!("{s:?}: expected http://HOST:PORT, the app beside the sidecar"));
    }
    Ok(uri)
}

fn parse_jwks_uri(s: &str) -> Result<Uri, String> {
    let uri: Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(format!("{s:?}: expected https://HOST[:PORT]/..."));
    }
    Ok(uri)
}

/// `localhost` or a loopback address: traffic that never leaves the pod.
fn is_loopback(uri: &Uri) -> bool {
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    if s.eq_ignore_ascii_case("none") || s.to_ascii_uppercase().starts_with("HS") {
        return Err(format!("{s:?} is never accepted: a verifier must not accept unsigned or HMAC tokens"));
    }
    s.parse::<Algorithm>().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, String> {
        let base = ["sigil-sidecar", "--upstream", "http://127.0.0.1:8080", "--issuer", "https://i", "--audience", "a"];
        let args = Args::try_parse_from(base.iter().chain(extra)).map_err(|e| e.to_string())?;
        args.into_config().map_err(|e| e.to_string())
    }

    #[test]
    fn plain_http_jwks_urls_only_to_loopback_or_when_allowed() {
        for url in
            ["http://127.0.0.1:8080/jwks", "http://localhost/jwks", "http://[::1]:80/jwks", "https://issuer/jwks"]
        {
            assert!(parse(&["--jwks-url", url]).is_ok(), "{url}");
        }
        for url in ["http://issuer.auth.svc/jwks", "http://127.0.0.1.nip.io/jwks", "http://[::ffff:10.0.0.1]/jwks"] {
            assert!(parse(&["--jwks-url", url]).is_err(), "{url}");
            assert!(parse(&["--jwks-url", url, "--jwks-allow-http"]).is_ok(), "{url}");
        }
    }

    #[test]
    fn defaults() {
        let c = parse(&["--jwks-file", "/keys/jwks.json"]).expect("valid");
        assert_eq!(c.listen.to_string(), "0.0.0.0:8000");
        assert_eq!(c.admin_listen.to_string(), "0.0.0.0:9091");
        assert_eq!(c.policy.leeway_secs, 30);
        assert_eq!(c.policy.max_token_bytes, 8192);
        for alg in Algorithm::ALL {
            assert!(c.policy.algorithms.contains(alg));
        }
        assert!(!c.forward_token);
        assert_eq!(c.policy.profile, TokenProfile::AccessToken);
        assert_eq!(c.underscores, Underscores::Reject);
        assert!(c.trusted_proxies.is_empty());
        assert!(!c.routes.case_insensitive());
    }

    #[test]
    fn repeated_and_listed_values() {
        let c = parse(&[
            "--jwks-url",
            "https://issuer/.well-known/jwks.json",
            "--audience",
            "b",
            "--algorithms",
            "ES256,EdDSA",
            "--public-path",
            "/healthz",
            "--require-scope",
            "/admin=admin,audit",
        ])
        .expect("valid");
        assert_eq!(c.policy.audiences, ["a", "b"]);
        assert!(c.policy.algorithms.contains(Algorithm::EdDSA) && !c.policy.algorithms.contains(Algorithm::RS256));
        assert_eq!(c.routes.required_scopes("/admin/x").collect::<Vec<_>>(), ["admin", "audit"]);
        let (_, schedule) = c.jwks_url.expect("url");
        assert_eq!(schedule.refresh, Duration::from_secs(300));
    }

    #[test]
    fn invalid_configurations_are_explained() {
        for (extra, needle) in [
            (&[][..], "--jwks-file, --jwks-url"),
            (&["--jwks-file", "/k", "--algorithms", "none"][..], "never accepted"),
            (&["--jwks-file", "/k", "--algorithms", "HS256"][..], "never accepted"),
            (&["--jwks-file", "/k", "--algorithms", "rs256"][..], "unsupported algorithm"),
            (&["--jwks-url", "http://issuer/jwks"][..], "--jwks-allow-http"),
            (&["--jwks-url", "http://10.0.0.1/jwks"][..], "--jwks-allow-http"),
            (&["--jwks-url", "ftp://issuer/jwks"][..], "https://"),
            (&["--jwks-file", "/k", "--jwks-ca-file", "/ca.pem"][..], "needs an https"),
            (&["--jwks-url", "http://127.0.0.1/j", "--jwks-ca-file", "/ca.pem"][..], "needs an https"),
            (&["--jwks-file", "/k", "--jwks-min-refresh", "10m"][..], "must not exceed"),
            (&["--jwks-file", "/k", "--leeway", "soon"][..], "invalid duration"),
            (&["--jwks-file", "/k", "--leeway", "61s"][..], "--leeway must be at most 1m"),
            (&["--jwks-file", "/k", "--public-path", "healthz"][..], "starts with '/'"),
            (&["--jwks-file", "/k", "--public-path", "/a/../.."][..], "above the root"),
            (&["--jwks-file", "/k", "--public-path", "/admin", "--require-scope", "/admin/=a"][..], "both"),
            (&["--jwks-file", "/k", "--trusted-proxies", "10.0.0.0/33"][..], "CIDR"),
            (&["--jwks-file", "/k", "--token-profile", "id-token"][..], "access-token"),
            (&["--jwks-file", "/k", "--headers-with-underscores", "allow"][..], "reject"),
            (&["--jwks-file", "/k", "--require-scope", "/admin"][..], "PREFIX=SCOPE"),
            (&["--jwks-file", "/k", "--max-header-bytes", "4096"][..], "--max-header-bytes"),
        ] {
            let err = parse(extra).expect_err("invalid");
            assert!(err.contains(needle), "{extra:?}: {err}");
        }
    }
}
