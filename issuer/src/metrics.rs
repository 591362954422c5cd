//! The issuer's metrics. Label values come only from the clients file and
//! fixed sets, never from request input, so an attacker cannot grow the series.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::keys::KeyState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuedLabels {
    pub client: String,
    pub grant: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KidLabels {
    pub kid: String,
    pub alg: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub source: &'static str,
    pub result: &'static str,
}

#[derive(Clone)]
pub struct Metrics {
    pub tokens_issued: Family<IssuedLabels, Counter>,
    pub token_failures: Family<ReasonLabels, Counter>,
    pub signing_seconds: Histogram,
    pub active_kid: Family<KidLabels, Gauge>,
    pub signing_current_key: Gauge,
    pub argon2_verifications: Counter,
    pub auth_cache_hits: Counter,
    pub reloads: Family<ReloadLabels, Counter>,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            tokens_issued: Family::default(),
            token_failures: Family::default(),
            // 10 µs to ~80 ms: Ed25519 at the bottom, RSA-4096 near the top.
            signing_seconds: Histogram::new(exponential_buckets(0.000_01, 2.0, 14)),
            active_kid: Family::default(),
            signing_current_key: Gauge::default(),
            argon2_verifications: Counter::default(),
            auth_cache_hits: Counter::default(),
            reloads: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("sigil_issuer");
        r.register("tokens_issued", "Access tokens issued, by client and grant type", m.tokens_issued.clone());
        r.register("token_failures", "Token requests refused, by reason", m.token_failures.clone());
        r.register("signing_seconds", "Time to sign one token", m.signing_seconds.clone());
        r.register(
            "active_kid",
            "The key tokens are signed with (1 for the active kid; absent when none is published)",
            m.active_kid.clone(),
        );
        r.register(
            "signing_current_key",
            "1 when signing with the Secret's current key, 0 when it is not published yet and an older key is used",
            m.signing_current_key.clone(),
        );
        r.register(
            "argon2_verifications",
            "Argon2 secret and password verifications run (cache misses and failures)",
            m.argon2_verifications.clone(),
        );
        r.register(
            "auth_cache_hits",
            "Client authentications answered from the success cache",
            m.auth_cache_hits.clone(),
        );
        r.register(
            "reloads",
            "Reloads of the key, JWKS and clients files, by result (success or the kind of error)",
            m.reloads.clone(),
        );
        m
    }

    pub fn failure(&self, reason: &'static str) {
        self.token_failures.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts a reload by outcome: `success`, or the kind of error.
    pub fn reload<T>(&self, source: &'static str, result: &crate::Result<T>) {
        let result = result.as_ref().map_or_else(crate::Error::metric_label, |_| "success");
        self.reloads.get_or_create(&ReloadLabels { source, result }).inc();
    }

    /// Mirrors the key state into `active_kid` and `signing_current_key`.
    pub fn observe_keys(&self, state: &KeyState) {
        self.active_kid.clear();
        if let Some(signer) = &state.signer {
            self.active_kid
                .get_or_create(&KidLabels { kid: signer.kid().to_owned(), alg: signer.algorithm().as_str() })
                .set(1);
        }
        self.signing_current_key.set(i64::from(state.signing_current_key()));
    }
}
