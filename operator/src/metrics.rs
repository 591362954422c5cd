//! Prometheus metrics. Counters and the duration histogram are updated by
//! reconcile; key counts and time to the next rotation are read from the
//! controller's cache at scrape time, so a deleted SigningKey leaves no stale
//! series behind.

use std::time::Instant;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sigil_api::signing_key::{KeyState, SigningKey};

#[derive(Clone)]
pub struct Metrics {
    reconciles: Counter,
    failures: Family<Vec<(&'static str, &'static str)>, Counter>,
    duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        // 1 ms .. ~16 s: an ES256 reconcile takes milliseconds, RSA-4096 generation seconds.
        let buckets = prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15);
        Metrics { reconciles: Counter::default(), failures: Family::default(), duration: Histogram::new(buckets) }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("sigil_operator");
        sub.register("reconciles", "SigningKey reconciles started", self.reconciles.clone());
        sub.register(
            "reconcile_failures",
            "SigningKey reconciles that failed or were blocked, by reason",
            self.failures.clone(),
        );
        sub.register("reconcile_duration_seconds", "Time a SigningKey reconcile took", self.duration.clone());
    }

    /// Counts a reconcile and measures it until the returned guard drops.
    pub fn reconcile_started(&self) -> ReconcileTimer<'_> {
        self.reconciles.inc();
        ReconcileTimer { histogram: &self.duration, start: Instant::now() }
    }

    pub fn failure(&self, reason: &'static str) {
        self.failures.get_or_create(&vec![("reason", reason)]).inc();
    }

    #[cfg(test)]
    pub fn failures(&self, reason: &'static str) -> u64 {
        self.failures.get_or_create(&vec![("reason", reason)]).get()
    }
}

pub struct ReconcileTimer<'a> {
    histogram: &'a Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// Gauges derived from the SigningKeys' status in the controller's cache.
#[derive(Debug)]
pub struct StatusCollector {
    pub store: Store<SigningKey>,
}

impl prometheus_client::collector::Collector for StatusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let keys = self.store.state();
        let mut by_state = [(KeyState::Next, 0i64), (KeyState::Active, 0), (KeyState::Retired, 0)];
        for sk in &keys {
            for record in sk.status.iter().flat_map(|s| &s.keys) {
                if let Some(slot) = by_state.iter_mut().find(|(s, _)| *s == record.state) {
                    slot.1 += 1;
                }
            }
        }
        let mut metric = encoder.encode_descriptor(
            "sigil_operator_keys",
            "Keys in the JWKS of all SigningKeys, by state",
            None,
            MetricType::Gauge,
        )?;
        for (state, count) in by_state {
            let labels = vec![("state", format!("{state:?}"))];
            ConstGauge::new(count).encode(metric.encode_family(&labels)?)?;
        }
        let now = Timestamp::now();
        let mut metric = encoder.encode_descriptor(
            "sigil_operator_seconds_until_next_rotation",
            "Seconds until the next key of a SigningKey becomes active (negative: overdue)",
            None,
            MetricType::Gauge,
        )?;
        for sk in &keys {
            let Some(at) = sk.status.as_ref().and_then(|s| s.next_rotation_time.as_ref()) else { continue };
            let labels = vec![("namespace", sk.namespace().unwrap_or_default()), ("name", sk.name_any())];
            let seconds = at.0.duration_since(now).as_secs_f64();
            ConstGauge::new(seconds).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
