//! The JWKS URL: fetched at start, refreshed on a schedule, and at once when a
//! token names an unknown kid (at most once per `min_refresh`). One task does
//! every fetch, so there is never more than one in flight, whatever the
//! traffic. When fetches fail the last good keys stay in use for `max_stale`,
//! so verifying never depends on the issuer being up.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use tokio::time::{Instant, sleep_until};

use super::tls::{Tls, TlsError};
use super::{KeyStore, Source};
use crate::keys::Loaded;

/// A JWKS larger than this is refused (a real one is a few KiB).
const MAX_JWKS_BYTES: usize = 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry after a failure; doubles up to `min_refresh`.
const FIRST_RETRY: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct Schedule {
    /// Regular refresh period; also the upper bound for Cache-Control max-age.
    pub refresh: Duration,
    /// Lower bound between fetches, for both max-age and unknown-kid refreshes.
    pub min_refresh: Duration,
    /// How long the last good keys are used while fetches fail.
    pub max_stale: Duration,
}

pub struct UrlSource {
    uri: Uri,
    schedule: Schedule,
    tls: Tls,
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("request failed: {0}")]
    Request(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("HTTP status {0}")]
    Status(http::StatusCode),
    #[error("reading the body failed (larger than {MAX_JWKS_BYTES} bytes?): {0}")]
    Body(String),
    #[error("{0}")]
    Jwks(sigil_core::jwk::JwkError),
    #[error("{0}")]
    Tls(#[from] TlsError),
}

impl UrlSource {
    /// Fails when `--jwks-ca-file` cannot be used at start-up; later changes
    /// to it are picked up, or reported, at each fetch.
    pub fn new(uri: Uri, schedule: Schedule, ca_file: Option<std::path::PathBuf>) -> Result<Self, TlsError> {
        Ok(UrlSource { uri, schedule, tls: Tls::new(ca_file)? })
    }

    pub async fn run(mut self, store: Arc<KeyStore>) {
        let mut next = Instant::now();
        let mut last_attempt: Option<Instant> = None;
        let mut last_success: Option<Instant> = None;
        let mut failures: u32 = 0;
        loop {
            tokio::select! {
                () = sleep_until(next) => {}
                () = store.unknown_kid_seen() => {
                    if let Some(at) = last_attempt {
                        let allowed = at + self.schedule.min_refresh;
                        if Instant::now() < allowed {
                            // Too soon: fetch when allowed, not before.
                            next = next.min(allowed);
                            continue;
                        }
                    }
                }
            }
            let started = Instant::now();
            last_attempt = Some(started);
            match self.fetch().await {
                Ok((loaded, max_age)) => {
                    failures = 0;
                    last_success = Some(started);
                    store.metrics().jwks_load(Source::Url.label(), true);
                    store.replace(Source::Url, Some(loaded));
                    next = started + self.next_refresh(max_age);
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    store.metrics().jwks_load(Source::Url.label(), false);
                    let stale = last_success.is_some_and(|at| at.elapsed() > self.schedule.max_stale);
                    tracing::warn!(url = %self.uri, error = %e, failures, "JWKS fetch failed; keeping last good keys");
                    if stale {
                        tracing::error!(url = %self.uri, max_stale = ?self.schedule.max_stale, "JWKS keys are stale; dropping them");
                        store.replace(Source::Url, None);
                        last_success = None;
                    }
                    let backoff = FIRST_RETRY.saturating_mul(1 << failures.min(16).saturating_sub(1));
                    next = started + backoff.min(self.schedule.min_refresh);
                }
            }
        }
    }

    /// Cache-Control max-age, kept within [min_refresh, refresh].
    fn next_refresh(&self, max_age: Option<Duration>) -> Duration {
        max_age.unwrap_or(self.schedule.refresh).clamp(self.schedule.min_refresh, self.schedule.refresh)
    }

    async fn fetch(&mut self) -> Result<(Loaded, Option<Duration>), FetchError> {
        let client = self.tls.client()?;
        let request = http::Request::get(self.uri.clone())
            .header(header::ACCEPT, "application/jwk-set+json, application/json")
            .header(header::USER_AGENT, concat!("sigil-sidecar/", env!("CARGO_PKG_VERSION")))
            .body(Empty::new())
            .map_err(|e| FetchError::Request(e.to_string()))?;
        let exchange = async {
            let response = client.request(request).await.map_err(|e| FetchError::Request(crate::error_chain(&e)))?;
            if response.status() != http::StatusCode::OK {
                return Err(FetchError::Status(response.status()));
            }
            let max_age = max_age(response.headers());
            let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| FetchError::Body(e.to_string()))?
                .to_bytes();
            Ok((body, max_age))
        };
        let (body, max_age) =
            tokio::time::timeout(FETCH_TIMEOUT, exchange).await.map_err(|_| FetchError::Timeout(FETCH_TIMEOUT))??;
        let loaded = Loaded::parse(&body).map_err(FetchError::Jwks)?;
        Ok((loaded, max_age))
    }
}

/// `max-age` from Cache-Control; `no-cache`/`no-store` count as zero.
fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut found = None;
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',').map(str::trim) {
            let lower = directive.to_ascii_lowercase();
            if lower == "no-cache" || lower == "no-store" {
                return Some(Duration::ZERO);
            }
            if let Some(secs) = lower.strip_prefix("max-age=") {
                found = secs.trim_matches('"').parse::<u64>().ok().map(Duration::from_secs);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CACHE_CONTROL, v.parse().expect("header"));
        h
    }

    #[test]
    fn reads_max_age() {
        assert_eq!(max_age(&headers("public, max-age=600")), Some(Duration::from_secs(600)));
        assert_eq!(max_age(&headers("Max-Age=\"60\"")), Some(Duration::from_secs(60)));
        assert_eq!(max_age(&headers("no-store")), Some(Duration::ZERO));
        assert_eq!(max_age(&headers("public")), None);
        assert_eq!(max_age(&headers("max-age=soon")), None);
    }

    #[test]
    fn max_age_is_bounded() {
        let s = UrlSource::new(
            Uri::from_static("http://127.0.0.1/jwks.json"),
            Schedule {
                refresh: Duration::from_secs(300),
                min_refresh: Duration::from_secs(30),
                max_stale: Duration::from_secs(3600),
            },
            None,
        )
        .expect("source");
        assert_eq!(s.next_refresh(Some(Duration::from_secs(86400))), Duration::from_secs(300));
        assert_eq!(s.next_refresh(Some(Duration::ZERO)), Duration::from_secs(30));
        assert_eq!(s.next_refresh(Some(Duration::from_secs(120))), Duration::from_secs(120));
        assert_eq!(s.next_refresh(None), Duration::from_secs(300));
    }
}
