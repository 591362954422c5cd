//! The I/O around [`distribute`]: list the namespaces and our copies, send the
//! creates, applies and deletes the plan asks for, and report the outcome in
//! status, the `Distributed` condition, events and metrics.
//!
//! Copies live in other namespaces, where an ownerReference is invalid, so a
//! finalizer on the SigningKey (held only while copies may exist) lets the
//! operator delete them before the SigningKey goes.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use sigil_api::conditions::set_condition;
use sigil_api::contract::FIELD_MANAGER;
use sigil_api::signing_key::{DistributionStatus, SigningKey, SigningKeyStatus, ValidDistribution};
use tracing::warn;

use crate::decide::{CONFLICT_RECHECK, Event};
use crate::distribute::{self, FINALIZER, LABEL_SOURCE_UID, Source};
use crate::error::{Error, Result};
use crate::reconcile::Context;

/// Condition type: whether every selected namespace holds an up-to-date copy.
pub const DISTRIBUTED: &str = "Distributed";

/// `Distributed` condition reasons.
pub mod reason {
    pub const IN_SYNC: &str = "InSync";
    pub const CONFLICT: &str = "Conflict";
    pub const WRITE_FAILED: &str = "WriteFailed";
    pub const NAMESPACED_OPERATOR: &str = "NamespacedOperator";
}

/// Writes in flight at once: 500 namespaces converge in seconds without
/// flooding the API server's priority-and-fairness queue.
const CONCURRENT_WRITES: usize = 16;
/// How soon a failed copy is tried again.
const RETRY_FAILED: Duration = Duration::from_secs(10);
/// Namespaces named in status per list; counts are always complete.
const LISTED: usize = 20;

/// What became of the copies in one reconcile.
pub struct Synced {
    pub events: Vec<Event>,
    /// When to look again although nothing changed (a failure or a conflict).
    pub recheck: Option<Duration>,
}

/// Brings the copies in line with `source_data` and records the outcome in
/// `status`. Runs only once the source ConfigMap is rendered and Ready.
pub async fn sync(
    ctx: &Context,
    sk: &SigningKey,
    distribution: &ValidDistribution,
    source_data: &BTreeMap<String, String>,
    status: &mut SigningKeyStatus,
    now: Time,
) -> Result<Synced> {
    let generation = sk.metadata.generation;
    if !ctx.cluster_scope {
        let msg = "the operator watches one namespace only; copying the JWKS to other namespaces needs it in \
                   cluster scope (chart value operator.scope=cluster)";
        let known = status.conditions.iter().any(|c| c.type_ == DISTRIBUTED && c.reason == reason::NAMESPACED_OPERATOR);
        status.distribution = None;
        set_condition(&mut status.conditions, DISTRIBUTED, false, reason::NAMESPACED_OPERATOR, msg, generation, now);
        let events = if known { vec![] } else { vec![Event::warning("DistributionUnavailable", msg.to_owned())] };
        return Ok(Synced { events, recheck: None });
    }
    ensure_finalizer(ctx, sk).await?;
    let (namespace, name, uid) = (sk.namespace().unwrap_or_default(), sk.name_any(), sk.uid().unwrap_or_default());
    let source = Source {
        namespace: &namespace,
        name: &name,
        uid: &uid,
        selector: &distribution.selector,
        config_map_name: &distribution.config_map_name,
        data: source_data,
    };
    let namespaces: Vec<distribute::Namespace> = Api::<Namespace>::all(ctx.client.clone())
        .list_metadata(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|ns| distribute::Namespace::from_meta(&ns.metadata))
        .collect();
    let copies = list_copies(ctx, &uid).await?;
    let plan = distribute::plan(&source, &namespaces, &copies);

    let writes = plan
        .create
        .iter()
        .map(|ns| (ns.clone(), None, true))
        .chain(plan.update.iter().map(|(ns, version)| (ns.clone(), version.clone(), false)));
    // Futures built up front: a stream `map` closure over borrowed data trips
    // the compiler's higher-ranked lifetime inference in the controller.
    let source = &source;
    let writes: Vec<_> = writes
        .map(|(ns, version, create)| async move {
            let outcome = write_copy(ctx, source, &ns, version, create).await;
            (ns, outcome)
        })
        .collect();
    let outcomes: Vec<(String, Outcome)> = stream::iter(writes).buffer_unordered(CONCURRENT_WRITES).collect().await;
    let deletes: Vec<_> = plan.delete.iter().map(|stale| delete_copy(ctx, stale)).collect();
    let deleted: Vec<Result<()>> = stream::iter(deletes).buffer_unordered(CONCURRENT_WRITES).collect().await;
    if let Some(error) = deleted.into_iter().find_map(Result::err) {
        warn!(signing_key = %name, %error, "deleting a JWKS copy failed");
        ctx.metrics.failure("distribution_failed");
    }

    let mut conflicts: Vec<String> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    for (ns, outcome) in outcomes {
        match outcome {
            Outcome::Written => {}
            Outcome::Conflict => conflicts.push(ns),
            Outcome::Failed(error) => {
                warn!(signing_key = %name, namespace = %ns, %error, "writing a JWKS copy failed");
                failed.push(ns);
            }
        }
    }
    conflicts.sort();
    failed.sort();
    let selected = plan.selected.len();
    let synced = selected - conflicts.len() - failed.len();
    let old = status.distribution.take().unwrap_or_default();
    let mut events = Vec::new();
    for ns in conflicts.iter().filter(|ns| !old.conflicts.contains(ns)) {
        events.push(Event::warning(
            "DistributionConflict",
            format!(
                "ConfigMap {ns}/{} exists and was not created by Sigil; it is left untouched and {ns} gets no copy. \
                 Delete it or set spec.distribution.configMapName",
                distribution.config_map_name
            ),
        ));
    }
    let (ok, why, msg, recheck) = if !failed.is_empty() {
        ctx.metrics.failure("distribution_failed");
        let msg =
            format!("{} of {selected} namespaces hold a current copy; writes failed in {}", synced, list(&failed));
        events.push(Event::warning("DistributionFailed", msg.clone()));
        (false, reason::WRITE_FAILED, msg, Some(RETRY_FAILED))
    } else if !conflicts.is_empty() {
        ctx.metrics.failure("distribution_conflict");
        let msg = format!(
            "{} of {selected} namespaces hold a current copy; a ConfigMap named {} that Sigil did not create is in {}",
            synced,
            distribution.config_map_name,
            list(&conflicts)
        );
        (false, reason::CONFLICT, msg, Some(CONFLICT_RECHECK))
    } else {
        let msg = format!("{selected} namespaces hold a current copy of the JWKS as {}", distribution.config_map_name);
        (true, reason::IN_SYNC, msg, None)
    };
    set_condition(&mut status.conditions, DISTRIBUTED, ok, why, &msg, generation, now);
    conflicts.truncate(LISTED);
    failed.truncate(LISTED);
    status.distribution = Some(DistributionStatus {
        selected_namespaces: selected as u32,
        synced_namespaces: synced as u32,
        conflicts,
        failed,
    });
    Ok(Synced { events, recheck })
}

/// Deletes every copy and then drops the finalizer: `spec.distribution` was
/// removed, or the SigningKey is being deleted. Without the finalizer there
/// are no copies (it is added before the first), so nothing is asked.
pub async fn remove_all(ctx: &Context, sk: &SigningKey) -> Result<()> {
    if !has_finalizer(sk) {
        return Ok(());
    }
    for copy in list_copies(ctx, &sk.uid().unwrap_or_default()).await? {
        delete_copy(ctx, &distribute::Stale::of(&copy)).await?;
    }
    let kept: Vec<&String> = sk.finalizers().iter().filter(|f| *f != FINALIZER).collect();
    patch_finalizers(ctx, sk, &kept).await
}

pub fn has_finalizer(sk: &SigningKey) -> bool {
    sk.finalizers().iter().any(|f| f == FINALIZER)
}

async fn ensure_finalizer(ctx: &Context, sk: &SigningKey) -> Result<()> {
    if has_finalizer(sk) {
        return Ok(());
    }
    let mut finalizers: Vec<&String> = sk.finalizers().iter().collect();
    let ours = FINALIZER.to_owned();
    finalizers.push(&ours);
    patch_finalizers(ctx, sk, &finalizers).await
}

/// A merge patch of the whole list, on the version we read: a concurrent
/// change to the finalizers fails with 409 rather than being overwritten.
async fn patch_finalizers(ctx: &Context, sk: &SigningKey, finalizers: &[&String]) -> Result<()> {
    let api: Api<SigningKey> = Api::namespaced(ctx.client.clone(), &sk.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": sk.resource_version(), "finalizers": finalizers},
    });
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
    ctx.fence.check()?;
    api.patch(&sk.name_any(), &params, &Patch::Merge(&patch)).await?;
    Ok(())
}

async fn list_copies(ctx: &Context, uid: &str) -> Result<Vec<ConfigMap>> {
    let params = ListParams::default().labels(&format!("{LABEL_SOURCE_UID}={uid}"));
    Ok(Api::<ConfigMap>::all(ctx.client.clone()).list(&params).await?.items)
}

enum Outcome {
    Written,
    /// A ConfigMap of that name that is not ours.
    Conflict,
    Failed(Error),
}

async fn write_copy(ctx: &Context, source: &Source<'_>, ns: &str, version: Option<String>, create: bool) -> Outcome {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let mut desired = distribute::copy(source, ns);
    let result = async {
        if create {
            ctx.fence.check()?;
            let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() };
            match api.create(&params, &desired).await {
                Ok(_) => return Ok(Outcome::Written),
                Err(kube::Error::Api(status)) if status.is_already_exists() => {}
                Err(error) => return Err(error.into()),
            }
            // The name is taken: ours only if it carries our uid (a copy
            // created since our list), never someone else's.
            let found = api.get_opt(source.config_map_name).await?;
            match found {
                Some(cm) if distribute::is_copy_of(&cm, source.uid) => {
                    desired.metadata.resource_version = cm.resource_version();
                }
                Some(_) => return Ok(Outcome::Conflict),
                None => return Ok(Outcome::Failed(Error::CopyVanished)),
            }
        } else {
            desired.metadata.resource_version = version;
        }
        ctx.fence.check()?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(source.config_map_name, &params, &Patch::Apply(&desired)).await?;
        Ok::<_, Error>(Outcome::Written)
    };
    result.await.unwrap_or_else(Outcome::Failed)
}

/// Deletes one copy, only if it is still the object we listed.
async fn delete_copy(ctx: &Context, stale: &distribute::Stale) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &stale.namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: stale.uid.clone(), resource_version: stale.resource_version.clone() }),
        ..DeleteParams::default()
    };
    ctx.fence.check()?;
    match api.delete(&stale.name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

fn list(namespaces: &[String]) -> String {
    let mut text = namespaces.iter().take(LISTED).cloned().collect::<Vec<_>>().join(", ");
    if namespaces.len() > LISTED {
        text.push_str(&format!(" and {} more", namespaces.len() - LISTED));
    }
    text
}

/// The SigningKey a copy came from, from its labels.
pub fn source_of(cm: &ConfigMap) -> Option<kube::runtime::reflector::ObjectRef<SigningKey>> {
    let labels = cm.labels();
    let name = labels.get(sigil_api::contract::LABEL_SIGNING_KEY)?;
    let namespace = labels.get(distribute::LABEL_SOURCE_NAMESPACE)?;
    Some(kube::runtime::reflector::ObjectRef::new(name).within(namespace))
}
