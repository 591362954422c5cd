//! Which namespaces get a copy of a SigningKey's JWKS, and which copies must
//! be written or deleted. Pure: the caller lists the namespaces and the
//! copies, this decides, and `copies` does the I/O.
//!
//! A copy is ours when it carries [`LABEL_SOURCE_UID`] with the SigningKey's
//! uid. Namespaces live in other teams' hands, so nothing in them is trusted:
//! a copy someone edited is rewritten from the source, and a ConfigMap of the
//! copy's name without our label is someone else's and never touched.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};
use sigil_api::contract;

/// Label holding the uid of the SigningKey a copy was made from. A uid, not
/// a name: a SigningKey deleted and created again under the same name does
/// not inherit the old one's copies, and a name may be longer than a label.
pub const LABEL_SOURCE_UID: &str = "sigil.dev/source-uid";
/// Label naming the source SigningKey's namespace, so a change to a copy
/// wakes the SigningKey it came from.
pub const LABEL_SOURCE_NAMESPACE: &str = "sigil.dev/source-namespace";
/// Finalizer held while copies may exist: they live in other namespaces, so
/// ownerReferences (and with them the garbage collector) cannot remove them.
pub const FINALIZER: &str = "sigil.dev/jwks-copies";

/// A namespace as the decision needs it.
#[derive(Clone, Debug)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Being deleted: a create there fails, and the copy goes with it anyway.
    pub terminating: bool,
}

impl Namespace {
    pub fn from_meta(meta: &ObjectMeta) -> Namespace {
        Namespace {
            name: meta.name.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            terminating: meta.deletion_timestamp.is_some(),
        }
    }
}

/// What the copies should be.
pub struct Source<'a> {
    /// The SigningKey's namespace, which never gets a copy.
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub selector: &'a Selector,
    pub config_map_name: &'a str,
    /// The source ConfigMap's data, exactly as rendered.
    pub data: &'a BTreeMap<String, String>,
}

/// The writes and deletes that make the copies match the source.
#[derive(Debug, Default, PartialEq)]
pub struct CopyPlan {
    /// Selected namespaces, in order.
    pub selected: Vec<String>,
    /// Selected namespaces without a copy of ours: create one.
    pub create: Vec<String>,
    /// Our copies that differ from the source, with the version read: apply.
    pub update: Vec<(String, Option<String>)>,
    /// Our copies in namespaces no longer selected, with uid and version: delete.
    pub delete: Vec<Stale>,
}

/// A copy to delete, with the preconditions the delete carries.
#[derive(Debug, PartialEq)]
pub struct Stale {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl Stale {
    /// `cm` as it was read: a delete succeeds only while it is still that object.
    pub fn of(cm: &ConfigMap) -> Stale {
        Stale {
            namespace: cm.namespace().unwrap_or_default(),
            name: cm.name_any(),
            uid: cm.uid(),
            resource_version: cm.resource_version(),
        }
    }
}

/// Whether `cm` is a copy made from the SigningKey with uid `uid`.
pub fn is_copy_of(cm: &ConfigMap, uid: &str) -> bool {
    cm.labels().get(LABEL_SOURCE_UID).map(String::as_str) == Some(uid)
}

/// The namespaces `source` selects: not its own, not one being deleted.
pub fn selected<'n>(source: &Source<'_>, namespaces: &'n [Namespace]) -> Vec<&'n Namespace> {
    namespaces
        .iter()
        .filter(|ns| ns.name != source.namespace && !ns.terminating && source.selector.matches(&ns.labels))
        .collect()
}

/// Decides the copies' writes. `copies` are the ConfigMaps labelled with the
/// source's uid, in any namespace, under any name.
pub fn plan(source: &Source<'_>, namespaces: &[Namespace], copies: &[ConfigMap]) -> CopyPlan {
    let selected: BTreeSet<&str> = selected(source, namespaces).into_iter().map(|ns| ns.name.as_str()).collect();
    let mut plan = CopyPlan { selected: selected.iter().map(|s| s.to_string()).collect(), ..CopyPlan::default() };
    let mut present = BTreeSet::new();
    for cm in copies.iter().filter(|cm| is_copy_of(cm, source.uid)) {
        let namespace = cm.namespace().unwrap_or_default();
        let wanted = selected.contains(namespace.as_str()) && cm.name_any() == source.config_map_name;
        if !wanted {
            // Not selected any more, or a copy under a name we no longer use.
            plan.delete.push(Stale::of(cm));
            continue;
        }
        if !up_to_date(source, cm) {
            plan.update.push((namespace.clone(), cm.resource_version()));
        }
        present.insert(namespace);
    }
    plan.create = selected.iter().filter(|ns| !present.contains(**ns)).map(|ns| ns.to_string()).collect();
    plan
}

fn up_to_date(source: &Source<'_>, cm: &ConfigMap) -> bool {
    let labels = cm.labels();
    cm.data.as_ref() == Some(source.data)
        && cm.binary_data.as_ref().is_none_or(BTreeMap::is_empty)
        && labels_of(source).iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Labels every copy carries: the source's usual labels plus its uid and namespace.
pub fn labels_of(source: &Source<'_>) -> BTreeMap<String, String> {
    let mut labels = contract::labels(source.name);
    labels.insert(LABEL_SOURCE_UID.to_owned(), source.uid.to_owned());
    labels.insert(LABEL_SOURCE_NAMESPACE.to_owned(), source.namespace.to_owned());
    labels
}

/// The copy for `namespace`, complete, for a create or a server-side apply.
pub fn copy(source: &Source<'_>, namespace: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(source.config_map_name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels_of(source)),
            ..ObjectMeta::default()
        },
        data: Some(source.data.clone()),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    use super::*;

    fn ns(name: &str, labels: &[(&str, &str)]) -> Namespace {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Namespace { name: name.to_owned(), labels, terminating: false }
    }

    fn selector(json: serde_json::Value) -> Selector {
        let selector: LabelSelector = serde_json::from_value(json).expect("selector");
        selector.try_into().expect("valid selector")
    }

    fn data(jwks: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(contract::JWKS.to_owned(), jwks.to_owned())])
    }

    fn source<'a>(selector: &'a Selector, data: &'a BTreeMap<String, String>) -> Source<'a> {
        Source { namespace: "keys", name: "api", uid: "uid-1", selector, config_map_name: "api-jwks", data }
    }

    fn existing(source: &Source<'_>, namespace: &str, version: &str) -> ConfigMap {
        let mut cm = copy(source, namespace);
        cm.metadata.resource_version = Some(version.to_owned());
        cm.metadata.uid = Some(format!("cm-{namespace}"));
        cm
    }

    fn names(list: &[String]) -> Vec<&str> {
        list.iter().map(String::as_str).collect()
    }

    #[test]
    fn an_empty_selector_selects_every_namespace_but_its_own_and_terminating_ones() {
        let (all, d) = (selector(serde_json::json!({})), data("{}"));
        let mut going = ns("going", &[]);
        going.terminating = true;
        let namespaces = [ns("keys", &[]), ns("shop", &[]), going, ns("web", &[])];
        let plan = plan(&source(&all, &d), &namespaces, &[]);
        assert_eq!(names(&plan.selected), ["shop", "web"]);
        assert_eq!(names(&plan.create), ["shop", "web"]);
        assert!(plan.update.is_empty() && plan.delete.is_empty());
    }

    #[test]
    fn match_labels_and_expressions_both_apply() {
        let s = selector(serde_json::json!({
            "matchLabels": {"team": "pay"},
            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}],
        }));
        let d = data("{}");
        let namespaces = [
            ns("a", &[("team", "pay")]),
            ns("b", &[("team", "pay"), ("env", "dev")]),
            ns("c", &[("team", "web")]),
            ns("d", &[("team", "pay"), ("env", "prod")]),
            ns("keys", &[("team", "pay")]),
        ];
        assert_eq!(names(&plan(&source(&s, &d), &namespaces, &[]).selected), ["a", "d"]);
    }

    #[test]
    fn an_unchanged_copy_causes_no_write_and_a_changed_one_one_apply() {
        let (all, d) = (selector(serde_json::json!({})), data("{\"keys\":[]}"));
        let src = source(&all, &d);
        let same = existing(&src, "shop", "7");
        let mut edited = existing(&src, "web", "9");
        edited.data = Some(data("{\"keys\":[{\"planted\":true}]}"));
        let mut relabelled = existing(&src, "ops", "3");
        relabelled.labels_mut().remove(contract::LABEL_SIGNING_KEY);
        let namespaces = [ns("shop", &[]), ns("web", &[]), ns("ops", &[])];
        let plan = plan(&src, &namespaces, &[same, edited, relabelled]);
        assert!(plan.create.is_empty(), "{plan:?}");
        let updated: Vec<_> = plan.update.iter().map(|(ns, v)| (ns.as_str(), v.as_deref())).collect();
        assert_eq!(updated, [("web", Some("9")), ("ops", Some("3"))]);
        assert!(plan.delete.is_empty());
    }

    #[test]
    fn binary_data_added_to_a_copy_is_removed() {
        let (all, d) = (selector(serde_json::json!({})), data("{}"));
        let src = source(&all, &d);
        let mut cm = existing(&src, "shop", "1");
        cm.binary_data = Some(BTreeMap::from([("x".to_owned(), k8s_openapi::ByteString(vec![1]))]));
        assert_eq!(plan(&src, &[ns("shop", &[])], &[cm]).update.len(), 1);
    }

    #[test]
    fn copies_where_the_selector_no_longer_reaches_are_deleted_with_preconditions() {
        let s = selector(serde_json::json!({"matchLabels": {"jwks": "yes"}}));
        let d = data("{}");
        let src = source(&s, &d);
        let namespaces = [ns("shop", &[("jwks", "yes")]), ns("web", &[("jwks", "no")])];
        let kept = existing(&src, "shop", "1");
        let stale = existing(&src, "web", "2");
        let mut renamed = existing(&src, "shop", "3");
        renamed.metadata.name = Some("old-name".to_owned());
        let plan = plan(&src, &namespaces, &[kept, stale, renamed]);
        assert!(plan.create.is_empty() && plan.update.is_empty(), "{plan:?}");
        let deleted: Vec<_> = plan.delete.iter().map(|s| (s.namespace.as_str(), s.name.as_str())).collect();
        assert_eq!(deleted, [("web", "api-jwks"), ("shop", "old-name")]);
        assert_eq!(plan.delete[1].resource_version.as_deref(), Some("3"));
        assert_eq!(plan.delete[0].uid.as_deref(), Some("cm-web"));
    }

    #[test]
    fn a_copy_of_another_signing_key_is_neither_counted_nor_touched() {
        let (all, d) = (selector(serde_json::json!({})), data("{}"));
        let src = source(&all, &d);
        let mut other = existing(&src, "shop", "1");
        other.labels_mut().insert(LABEL_SOURCE_UID.to_owned(), "uid-2".to_owned());
        let plan = plan(&src, &[ns("shop", &[])], &[other]);
        assert_eq!(names(&plan.create), ["shop"], "ours is missing: create (the name clash shows on create)");
        assert!(plan.update.is_empty() && plan.delete.is_empty());
    }

    #[test]
    fn a_copy_lists_the_source_data_and_labels() {
        let (all, d) = (selector(serde_json::json!({})), data("{\"keys\":[]}"));
        let cm = copy(&source(&all, &d), "shop");
        assert_eq!(cm.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(cm.metadata.name.as_deref(), Some("api-jwks"));
        assert_eq!(cm.data.as_ref(), Some(&d));
        let labels = cm.labels();
        assert_eq!(labels.get(LABEL_SOURCE_UID).map(String::as_str), Some("uid-1"));
        assert_eq!(labels.get(LABEL_SOURCE_NAMESPACE).map(String::as_str), Some("keys"));
        assert_eq!(labels.get(contract::LABEL_MANAGED_BY).map(String::as_str), Some(contract::MANAGED_BY));
        assert!(cm.metadata.owner_references.is_none(), "an owner in another namespace is invalid");
    }
}
