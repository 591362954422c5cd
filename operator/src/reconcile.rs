//! The I/O around [`decide`]: read the Secret and ConfigMap, ask for the next
//! step, generate keys off the async runtime, send the one write, feed the
//! result back in, and finally patch status and schedule the next transition.
//!
//! Writes never take over someone else's object: a new object is created
//! (which fails if the name was taken since our read), a known one is applied
//! with the resourceVersion we read as precondition. And every write first
//! asks the leader [`Fence`], so a replica that lost its Lease stops writing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sigil_api::contract::{self, FIELD_MANAGER};
use sigil_api::keys::PrivateKey;
use sigil_api::signing_key::{SigningKey, SigningKeyStatus, ValidSpec};
use tracing::{debug, info, warn};

use crate::copies;
use crate::decide::{self, Decision, Input, Limits, Plan, Write, reason};
use crate::error::{Error, Result};
use crate::fence::Fence;
use crate::metrics::Metrics;
use crate::observe::KeyKind;

/// Steps one reconcile may take. Creation takes four writes and two key
/// requests at most; more means two writers are fighting, so back off.
const MAX_STEPS: usize = 12;

/// Awaited just before each create, with the object's kind and name.
pub type BeforeCreate = Arc<dyn Fn(&str, &str) -> BoxFuture<'static, ()> + Send + Sync>;

/// Everything reconcile touches, in one place.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// The clock, injectable for tests. Times are whole seconds, the precision
    /// Kubernetes stores, so what we write compares equal to what we read back.
    pub now: fn() -> Timestamp,
    pub limits: Limits,
    /// Whether this replica may write at all: it leads, or runs alone.
    pub fence: Fence,
    /// `None` in the operator. A test sets it to create the object itself
    /// between reconcile's read and its create, as a racing writer would.
    pub before_create: Option<BeforeCreate>,
    /// The operator watches every namespace, so it may copy JWKS into them.
    pub cluster_scope: bool,
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

    if sk.metadata.deletion_timestamp.is_some() {
        // Our Secret and ConfigMap go with the garbage collector; copies in
        // other namespaces are ours to delete before the finalizer goes.
        copies::remove_all(&ctx, &sk).await?;
        return Ok(Action::await_change());
    }

    // Read fresh from the API server, not a cache: a decision on a stale
    // Secret could generate a second key. An invalid spec names no objects.
    let spec = sk.spec.validate(&sk.name_any()).ok();
    let (mut secret, mut config_map) = match &spec {
        Some(spec) => {
            (secrets.get_opt(&spec.secret_name).await?, config_maps.get_opt(&spec.jwks_config_map_name).await?)
        }
        None => (None, None),
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
            Some(Write::Secret(desired)) => match write_object(&ctx, &secrets, desired, secret.as_ref()).await? {
                Written::Stored(written) => {
                    secret = Some(written);
                    fresh = None;
                }
                // Decide again on what is there now: someone else's Secret
                // is reported as a conflict, never written to.
                Written::NameTaken(found) => {
                    secret = found;
                    continue;
                }
            },
            Some(Write::ConfigMap(desired)) => {
                match write_object(&ctx, &config_maps, desired, config_map.as_ref()).await? {
                    Written::Stored(written) => config_map = Some(written),
                    Written::NameTaken(found) => {
                        config_map = found;
                        continue;
                    }
                }
            }
            None => {
                let (mut status, mut events, mut requeue_at) = (status, events, requeue_at);
                let recheck =
                    distribute_jwks(&ctx, &sk, spec.as_ref(), config_map.as_ref(), &mut status, &mut events, now)
                        .await?;
                if let Some(recheck) = recheck {
                    let at = now.checked_add(recheck).unwrap_or(Timestamp::MAX);
                    requeue_at = Some(requeue_at.map_or(at, |t| t.min(at)));
                }
                if sk.status.as_ref() != Some(&status) {
                    patch_status(&ctx, &sk, &namespace, &status).await?;
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

/// Copies the rendered JWKS to the namespaces `spec.distribution` selects,
/// or removes every copy once it is unset. Decide's status knows nothing of
/// copies, so their part of the old status is carried over first. Returns
/// how soon to look again when a copy could not be written. `spec` is `None`
/// when invalid: a mistake to report, not a request to delete copies.
async fn distribute_jwks(
    ctx: &Context,
    sk: &SigningKey,
    spec: Option<&ValidSpec>,
    config_map: Option<&ConfigMap>,
    status: &mut SigningKeyStatus,
    events: &mut Vec<decide::Event>,
    now: Timestamp,
) -> Result<Option<Duration>> {
    let old = sk.status.as_ref();
    status.distribution = old.and_then(|s| s.distribution.clone());
    if let Some(c) = old.into_iter().flat_map(|s| &s.conditions).find(|c| c.type_ == copies::DISTRIBUTED) {
        status.conditions.retain(|k| k.type_ != copies::DISTRIBUTED);
        status.conditions.push(c.clone());
    }
    let Some(spec) = spec else { return Ok(None) };
    let Some(distribution) = &spec.distribution else {
        copies::remove_all(ctx, sk).await?;
        status.distribution = None;
        status.conditions.retain(|c| c.type_ != copies::DISTRIBUTED);
        return Ok(None);
    };
    // Copies follow the source only while it is rendered from the Secret
    // (Ready, or its first key being pre-published): while the SigningKey is
    // blocked (a conflict, an unreadable Secret) they stay as they are.
    let rendered = status
        .conditions
        .iter()
        .any(|c| c.type_ == sigil_api::conditions::READY && (c.status == "True" || c.reason == reason::PENDING));
    // Only the JWKS: anything else someone added to the source stays there.
    let jwks = config_map.and_then(|cm| cm.data.as_ref()?.get(contract::JWKS));
    let (true, Some(jwks)) = (rendered, jwks) else { return Ok(None) };
    let data = BTreeMap::from([(contract::JWKS.to_owned(), jwks.clone())]);
    let synced = copies::sync(ctx, sk, distribution, &data, status, Time(now)).await?;
    events.extend(synced.events);
    Ok(synced.recheck)
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

/// What became of a write.
enum Written<K> {
    /// The object as the API server stored it.
    Stored(K),
    /// A create found its name taken: someone created an object between our
    /// read and our write. This is that object as read now (`None` if it went
    /// again), never adopted.
    NameTaken(Option<K>),
}

/// Sends the complete desired object: a create when we read nothing, else an
/// apply conditional on the version we read.
async fn write_object<K>(ctx: &Context, api: &Api<K>, desired: K, observed: Option<&K>) -> Result<Written<K>>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let Some(observed) = observed else { return create(ctx, api, desired).await };
    let adopted = adopt_created_fields(ctx, api, observed).await?;
    apply(ctx, api, desired, adopted.as_ref().unwrap_or(observed)).await.map(Written::Stored)
}

/// A create, not an apply, for an object we did not find: a forced apply
/// would merge into an object someone made since our read and take it over,
/// where a create fails with AlreadyExists.
async fn create<K>(ctx: &Context, api: &Api<K>, desired: K) -> Result<Written<K>>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = desired.name_any();
    if let Some(hook) = &ctx.before_create {
        hook(&K::kind(&()), &name).await;
    }
    ctx.fence.check()?;
    let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() };
    match api.create(&params, &desired).await {
        Ok(created) => Ok(Written::Stored(created)),
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            warn!(kind = %K::kind(&()), name, "the name was taken between our read and our create; reading it again");
            Ok(Written::NameTaken(api.get_opt(&name).await?))
        }
        Err(error) => Err(error.into()),
    }
}

/// Server-side apply of a complete desired object, on the version we read as
/// precondition: the decision was made on exactly that version, so a
/// concurrent change fails with 409 and we retry on fresh data instead of
/// overwriting it.
async fn apply<K>(ctx: &Context, api: &Api<K>, mut desired: K, observed: &K) -> Result<K>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = desired.name_any();
    desired.meta_mut().resource_version = observed.resource_version();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    ctx.fence.check()?;
    Ok(api.patch(&name, &params, &Patch::Apply(&desired)).await?)
}

/// The fields a create wrote belong to our manager's `Update` entry in
/// managedFields, and server-side apply only removes fields that its own
/// `Apply` entry owns: left alone, no apply could ever remove what a create
/// wrote (`next.pem` once that key is activated). So before the first apply
/// they move to our `Apply` entry, in a patch conditional on the version we
/// read (kubectl's csaupgrade does the same for client-side apply). `None`:
/// nothing to move.
async fn adopt_created_fields<K>(ctx: &Context, api: &Api<K>, observed: &K) -> Result<Option<K>>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let entries = observed.meta().managed_fields.as_deref().unwrap_or_default();
    let Some(entries) = created_fields_applied(entries) else { return Ok(None) };
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": observed.resource_version(), "managedFields": entries},
    });
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
    ctx.fence.check()?;
    Ok(Some(api.patch(&observed.name_any(), &params, &Patch::Merge(&patch)).await?))
}

/// `entries` with our manager's `Update` entries folded into its `Apply`
/// entry, or `None` when it has no `Update` entry. Other managers' entries
/// and subresources (status) are left as they are.
fn created_fields_applied(entries: &[ManagedFieldsEntry]) -> Option<Vec<ManagedFieldsEntry>> {
    let ours = |e: &ManagedFieldsEntry, operation: &str| {
        e.manager.as_deref() == Some(FIELD_MANAGER)
            && e.operation.as_deref() == Some(operation)
            && e.subresource.as_deref().is_none_or(str::is_empty)
    };
    if !entries.iter().any(|e| ours(e, "Update")) {
        return None;
    }
    let mut kept = Vec::with_capacity(entries.len());
    let mut applied: Option<ManagedFieldsEntry> = None;
    for entry in entries {
        if !ours(entry, "Update") && !ours(entry, "Apply") {
            kept.push(entry.clone());
            continue;
        }
        match applied.as_mut() {
            None => applied = Some(ManagedFieldsEntry { operation: Some("Apply".to_owned()), ..entry.clone() }),
            Some(into) => {
                if let (Some(into), Some(from)) = (into.fields_v1.as_mut(), entry.fields_v1.as_ref()) {
                    union_fields(&mut into.0, &from.0);
                } else if into.fields_v1.is_none() {
                    into.fields_v1 = entry.fields_v1.clone();
                }
                into.time = into.time.clone().max(entry.time.clone());
            }
        }
    }
    kept.extend(applied);
    Some(kept)
}

/// Adds the field set `from` to `into` (FieldsV1 is a trie of JSON objects).
fn union_fields(into: &mut serde_json::Value, from: &serde_json::Value) {
    let (serde_json::Value::Object(into), serde_json::Value::Object(from)) = (into, from) else { return };
    for (key, value) in from {
        match into.get_mut(key) {
            Some(existing) => union_fields(existing, value),
            None => {
                into.insert(key.clone(), value.clone());
            }
        }
    }
}

async fn patch_status(
    ctx: &Context,
    sk: &SigningKey,
    namespace: &str,
    status: &sigil_api::signing_key::SigningKeyStatus,
) -> Result<()> {
    let api: Api<SigningKey> = Api::namespaced(ctx.client.clone(), namespace);
    let body = serde_json::json!({
        "apiVersion": SigningKey::api_version(&()),
        "kind": SigningKey::kind(&()),
        "status": status,
    });
    ctx.fence.check()?;
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
        // An event is a write too: a replica that no longer leads stays silent.
        if let Err(error) = ctx.fence.check() {
            debug!(%error, reason = e.reason, "event not recorded");
            continue;
        }
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            warn!(%error, reason = e.reason, "could not record event");
        }
    }
}

#[cfg(test)]
mod tests;
