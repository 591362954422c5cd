//! The sidecar's Prometheus metrics. Failure reasons are labels here and in
//! debug logs; the token itself is never recorded anywhere.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Label = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];
type KidLabel = [(&'static str, String); 1];

#[derive(Clone, Default)]
pub struct Metrics {
    requests: Family<Label, Counter>,
    rejections: Family<Label, Counter>,
    upstream_errors: Family<Label, Counter>,
    cache: Family<Label, Counter>,
    jwks_loads: Family<Labels2, Counter>,
    keys: Gauge,
    key_info: Family<KidLabel, Gauge>,
    jwks_last_success: Family<Label, Gauge>,
    tunnels_closed: Family<Label, Counter>,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("sigil_sidecar");
        r.register(
            "requests",
            "Requests by outcome (forwarded, public, rejected, upstream_error)",
            self.requests.clone(),
        );
        r.register("rejections", "Requests refused, by reason", self.rejections.clone());
        r.register(
            "upstream_errors",
            "Requests the app did not answer (connect, timeout)",
            self.upstream_errors.clone(),
        );
        r.register("token_cache", "Verified-token cache lookups (hit, miss)", self.cache.clone());
        r.register("jwks_loads", "JWKS loads by source (file, url) and result (ok, error)", self.jwks_loads.clone());
        r.register("keys", "Keys the sidecar verifies with now", self.keys.clone());
        r.register("key_info", "1 for each key id the sidecar verifies with now", self.key_info.clone());
        r.register(
            "jwks_last_success_timestamp_seconds",
            "Unix time of the last successful JWKS load, by source",
            self.jwks_last_success.clone(),
        );
        r.register(
            "tunnels_closed",
            "Upgraded connections the sidecar closed, by reason (idle, expired)",
            self.tunnels_closed.clone(),
        );
    }

    pub fn request(&self, outcome: &'static str) {
        self.requests.get_or_create(&[("outcome", outcome)]).inc();
    }

    pub fn rejection(&self, reason: &'static str) {
        self.request("rejected");
        self.rejections.get_or_create(&[("reason", reason)]).inc();
    }

    pub fn upstream_error(&self, kind: &'static str) {
        self.request("upstream_error");
        self.upstream_errors.get_or_create(&[("kind", kind)]).inc();
    }

    pub fn cache(&self, result: &'static str) {
        self.cache.get_or_create(&[("result", result)]).inc();
    }

    pub fn jwks_load(&self, source: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.jwks_loads.get_or_create(&[("source", source), ("result", result)]).inc();
        if ok {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            self.jwks_last_success.get_or_create(&[("source", source)]).set(i64::try_from(now).unwrap_or(i64::MAX));
        }
    }

    pub fn tunnel_closed(&self, reason: &'static str) {
        self.tunnels_closed.get_or_create(&[("reason", reason)]).inc();
    }

    /// The key ids verified with now; kids are public (they name JWKS
    /// entries), and there are only a handful.
    /// Updated in place, so a scrape never sees an empty set mid-update.
    pub fn set_keys(&self, before: &[&str], now: &[&str]) {
        self.keys.set(i64::try_from(now.len()).unwrap_or(i64::MAX));
        for gone in before.iter().filter(|kid| !now.contains(kid)) {
            self.key_info.remove(&[("kid", (*gone).to_owned())]);
        }
        for kid in now {
            self.key_info.get_or_create(&[("kid", (*kid).to_owned())]).set(1);
        }
    }

    /// A counter's current value, for tests.
    pub fn count(&self, family: &str, label: &'static str) -> u64 {
        let f = match family {
            "requests" => &self.requests,
            "rejections" => &self.rejections,
            "upstream_errors" => &self.upstream_errors,
            "tunnels_closed" => &self.tunnels_closed,
            _ => &self.cache,
        };
        let key = match family {
            "requests" => "outcome",
            "rejections" => "reason",
            "upstream_errors" => "kind",
            "tunnels_closed" => "reason",
            _ => "result",
        };
        f.get_or_create(&[(key, label)]).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_info_names_exactly_the_current_kids() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let text = |registry: &Registry| {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, registry).expect("encode");
            out
        };
        metrics.set_keys(&[], &["k1", "k2"]);
        metrics.set_keys(&["k1", "k2"], &["k2", "k3"]);
        let out = text(&registry);
        assert!(out.contains("sigil_sidecar_key_info{kid=\"k2\"} 1"), "{out}");
        assert!(out.contains("sigil_sidecar_key_info{kid=\"k3\"} 1"), "{out}");
        assert!(!out.contains("kid=\"k1\""), "a withdrawn kid is gone: {out}");
        assert!(out.contains("sigil_sidecar_keys 2"), "{out}");
    }
}
