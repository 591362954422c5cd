//! What every Sigil binary runs beside its real work, written once:
//! [`telemetry`] (structured logs), [`admin`] (`/healthz`, `/readyz`,
//! `/metrics` on a separate port), [`serve`] (the accept loop with a graceful
//! drain), [`shutdown`] (SIGTERM and Ctrl-C), [`client_ip`] (`--trusted-proxies`),
//! [`tls`] (one stream type for plain and TLS connections), [`watch`]
//! (noticing when the kubelet swaps a mounted Secret or ConfigMap) and
//! [`volume`] (writing such a directory the way the kubelet does).

pub mod admin;
pub mod client_ip;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod volume;
pub mod watch;
