//! The I/O around [`decide`]: read the Secret and ConfigMap, ask for the next
//! step, generate keys off the async runtime, apply the one write, feed the
//! result back in, and finally patch status and schedule the next transition.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sigil_api::contract::FIELD_MANAGER;
use sigil_api::keys::PrivateKey;
use sigil_api::signing_key::SigningKey;
use tracing::{info, warn};

use crate::decide::{self, Decision, Input, Limits, Plan, Write, reason};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::observe::KeyKind;

/// Steps one reconcile may take. Creation takes four writes and two key
/// requests at most; more means two writers are fighting, so back off.
const MAX_STEPS: usize = 12;

/// Everything reconcile touches, in one place.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// The clock, injectable for tests. Times are whole seconds, the precision
    /// Kubernetes stores, so what we write compares equal to what we read back.
    pub now: fn() -> Timestamp,
    pub limits: Limits,
}

pub fn wall_clock() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

pub async fn reconcile(sk: Arc<SigningKey>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let namespace = sk.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    sk.uid().ok_or(Error::MissingMetadata("uid"))?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);

    // Read fresh from the API server, not a cache: a decision on a stale
    // Secret could generate a second key. An invalid spec names no objects.
    let (mut secret, mut config_map) = match sk.spec.validate(&sk.name_any()) {
        Ok(spec) => (secrets.get_opt(&spec.secret_name).await?, config_maps.get_opt(&spec.jwks_config_map_name).await?),
        Err(_) => (None, None),
    };
    let now = (ctx.now)();
    let mut fresh: Option<PrivateKey> = None;
    for _ in 0..MAX_STEPS {
        let input = Input {
            signing_key: &sk,
            secret: secret.as_ref(),
            config_map: config_map.as_ref(),
            fresh_key: fresh.as_ref(),
            limits: ctx.limits,
            now,
        };
        let plan = match decide::decide(input) {
            Decision::NeedKey(kind) => {
                fresh = Some(generate(kind).await?);
                continue;
            }
            Decision::Plan(plan) => *plan,
        };
        let Plan { write, status, events, requeue_at } = plan;
        match write {
            Some(Write::Secret(desired)) => {
                secret = Some(apply(&secrets, desired, secret.as_ref()).await?);
                fresh = None;
            }
            Some(Write::ConfigMap(desired)) => {
                config_map = Some(apply(&config_maps, desired, config_map.as_ref()).await?);
            }
            None => {
                if sk.status.as_ref() != Some(&status) {
                    patch_status(&ctx.client, &sk, &namespace, &status).await?;
                }
                publish(&ctx, &sk, &events).await;
                let blocked = status.conditions.iter().find(|c| c.type_ == sigil_api::conditions::READY);
                if let Some(c) = blocked.filter(|c| c.status != "True" && c.reason != reason::PENDING) {
                    ctx.metrics.failure(metric_reason(&c.reason));
                }
                return Ok(requeue(requeue_at, now));
            }
        }
        publish(&ctx, &sk, &events).await;
    }
    Err(Error::NoConvergence(MAX_STEPS))
}

/// Transient failures retry with backoff; the controller resets it on success.
pub fn error_policy(sk: Arc<SigningKey>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failure(error.metric_label());
    warn!(signing_key = %sk.name_any(), namespace = ?sk.namespace(), %error, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

fn metric_reason(ready_reason: &str) -> &'static str {
    match ready_reason {
        reason::INVALID_SPEC => "invalid_spec",
        reason::SECRET_CONFLICT => "secret_conflict",
        reason::CONFIG_MAP_CONFLICT => "config_map_conflict",
        reason::SECRET_INVALID => "secret_invalid",
        _ => "other",
    }
}

/// Requeue exactly at the next transition, or wait for a change.
fn requeue(at: Option<Timestamp>, now: Timestamp) -> Action {
    match at {
        None => Action::await_change(),
        Some(at) => {
            let wait = at.duration_since(now).max(jiff::SignedDuration::ZERO);
            // One second late rather than early: the times are whole seconds.
            Action::requeue(Duration::try_from(wait).unwrap_or(Duration::ZERO) + Duration::from_secs(1))
        }
    }
}

/// Key generation is CPU work (RSA-4096 takes seconds): keep it off the async
/// runtime so other SigningKeys and the API watches keep moving.
async fn generate(kind: KeyKind) -> Result<PrivateKey> {
    let key = tokio::task::spawn_blocking(move || PrivateKey::generate(kind.algorithm, kind.rsa_bits)).await??;
    info!(kid = key.kid(), algorithm = %kind.algorithm, "generated key");
    Ok(key)
}

/// Server-side apply of a complete desired object. When we read the object
/// before, its resourceVersion is a precondition: the decision was made on
/// exactly that version, so a concurrent change fails with 409 and we retry
/// on fresh data instead of overwriting it.
async fn apply<K>(api: &Api<K>, mut desired: K, observed: Option<&K>) -> Result<K>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = desired.name_any();
    desired.meta_mut().resource_version = observed.and_then(|o| o.resource_version());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api.patch(&name, &params, &Patch::Apply(&desired)).await?)
}

async fn patch_status(
    client: &Client,
    sk: &SigningKey,
    namespace: &str,
    status: &sigil_api::signing_key::SigningKeyStatus,
) -> Result<()> {
    let api: Api<SigningKey> = Api::namespaced(client.clone(), namespace);
    let body = serde_json::json!({
        "apiVersion": SigningKey::api_version(&()),
        "kind": SigningKey::kind(&()),
        "status": status,
    });
    api.patch_status(&sk.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    Ok(())
}

/// Events are best effort: a failed event must not fail or repeat a reconcile
/// whose writes already happened.
async fn publish(ctx: &Context, sk: &SigningKey, events: &[decide::Event]) {
    let reference = sk.object_ref(&());
    for e in events {
        if e.warning {
            warn!(signing_key = %sk.name_any(), reason = e.reason, note = %e.note, "event");
        } else {
            info!(signing_key = %sk.name_any(), reason = e.reason, note = %e.note, "event");
        }
        let event = Event {
            type_: if e.warning { EventType::Warning } else { EventType::Normal },
            reason: e.reason.to_owned(),
            note: Some(e.note.clone()),
            // The recorder merges events by (reason, action, object) and keeps
            // the first note, so an event about another key needs its own action.
            action: e.key_id.as_ref().map_or_else(|| "Reconcile".to_owned(), |kid| format!("Reconcile/{kid}")),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            warn!(%error, reason = e.reason, "could not record event");
        }
    }
}

#[cfg(test)]
mod tests;
