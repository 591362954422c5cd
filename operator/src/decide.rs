//! The reconcile decision: a pure function of the SigningKey, the observed
//! Secret and ConfigMap, an optional freshly generated key, and `now`. No I/O,
//! no clock, no randomness, so every timeline is a table test.
//!
//! # One write per step
//!
//! [`decide`] returns at most one write. The reconciler applies it, feeds the
//! written object back in and asks again until nothing is left to write. Each
//! intermediate state is therefore a state `decide` itself handles, which is
//! what makes a crash between any two writes safe: after a restart the same
//! function sees the same objects and takes the same next step. The rule that
//! picks the step is:
//!
//! 1. **The ConfigMap catches up with the Secret first.** The desired JWKS is
//!    derived from the keys the Secret holds (active and next are published,
//!    a key that left the Secret is Retired, Retired keys stay until
//!    `retiredAt + retain`, revoked keys never appear). This write only ever
//!    adds keys the Secret already persists, or removes revoked, expired or
//!    never-signing keys.
//! 2. **Then the Secret advances one transition**: store a new next key
//!    (`next.pem`), activate the published next key, or drop a revoked next
//!    key. A key is only activated once the ConfigMap publishes it.
//!
//! So a key's life is: persisted as `next.pem` -> published as Next ->
//! activated in the Secret -> marked Active (the old key Retired) -> removed
//! after `retain`. The very first key takes the same path, with no wait
//! between publishing and activating (nothing signs yet); so does the
//! replacement of a revoked active key (an emergency).
//!
//! A change of `algorithm` or `keySize` rolls over to a key of the new kind by
//! a normal rotation: the new key is generated at once, pre-published for
//! `prePublish`, then activated; the old key retires as usual.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use sigil_api::conditions::{READY, set_condition};
use sigil_api::contract;
use sigil_api::jwk::{Jwk, JwkSet};
use sigil_api::keys::PrivateKey;
use sigil_api::signing_key::{KeyState, KeyStatus, SigningKey, SigningKeyStatus, ValidSpec};

use crate::observe::{KeyKind, Published, Slots, controlled_by, has_labels, secret_data, slots_data};

/// How often a SigningKey blocked by someone else's Secret or ConfigMap looks
/// again. Such objects lack our label, so no watch event tells us they went.
pub const CONFLICT_RECHECK: Duration = Duration::from_secs(60);

/// Everything the decision depends on.
pub struct Input<'a> {
    pub signing_key: &'a SigningKey,
    pub secret: Option<&'a Secret>,
    pub config_map: Option<&'a ConfigMap>,
    /// A key generated after an earlier [`Decision::NeedKey`].
    pub fresh_key: Option<&'a PrivateKey>,
    pub now: Timestamp,
}

#[derive(Debug)]
pub enum Decision {
    /// Generate a key of this kind (slow for RSA, so the caller does it off the
    /// async runtime) and decide again with it as `fresh_key`.
    NeedKey(KeyKind),
    Plan(Box<Plan>),
}

impl From<Plan> for Decision {
    fn from(plan: Plan) -> Decision {
        Decision::Plan(Box::new(plan))
    }
}

#[derive(Debug)]
pub struct Plan {
    /// The one write of this step; `None` when the cluster is up to date.
    pub write: Option<Write>,
    /// The status that describes the state after `write`.
    pub status: SigningKeyStatus,
    /// Events to record once `write` succeeded.
    pub events: Vec<Event>,
    /// When the next scheduled transition is due; `None`: only a change wakes us.
    pub requeue_at: Option<Timestamp>,
}

/// A desired object, complete, for server-side apply.
#[derive(Clone, PartialEq)]
pub enum Write {
    Secret(Secret),
    ConfigMap(ConfigMap),
}

/// Names the object and its keys, never the Secret's values: a stray `{:?}`
/// in a log line must not leak a private key.
impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, name, keys): (_, _, Vec<&String>) = match self {
            Write::Secret(s) => ("Secret", s.name_any(), s.data.iter().flatten().map(|(k, _)| k).collect()),
            Write::ConfigMap(c) => ("ConfigMap", c.name_any(), c.data.iter().flatten().map(|(k, _)| k).collect()),
        };
        f.debug_struct(kind).field("name", &name).field("keys", &keys).finish_non_exhaustive()
    }
}

/// A Kubernetes Event about the SigningKey. Notes name key ids, never key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
    /// The key the event is about, if one. Events about different keys must
    /// not be merged into one series (kube's recorder keeps the first note).
    pub key_id: Option<String>,
}

impl Event {
    fn normal(reason: &'static str, note: String) -> Event {
        Event { warning: false, reason, note, key_id: None }
    }
    fn warning(reason: &'static str, note: String) -> Event {
        Event { warning: true, reason, note, key_id: None }
    }
    fn about(mut self, kid: &str) -> Event {
        self.key_id = Some(kid.to_owned());
        self
    }
}

/// Ready condition reasons, also the `reason` label of failure metrics.
pub mod reason {
    pub const ACTIVE: &str = "KeyActive";
    pub const PENDING: &str = "KeyPending";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    pub const CONFIG_MAP_CONFLICT: &str = "ConfigMapConflict";
    pub const SECRET_INVALID: &str = "SecretInvalid";
}

pub fn decide(input: Input<'_>) -> Decision {
    let sk = input.signing_key;
    let name = sk.name_any();
    let uid = sk.uid().unwrap_or_default();
    if sk.metadata.deletion_timestamp.is_some() {
        // The garbage collector is removing our objects; recreating them
        // would race it and mint keys for a SigningKey that is going away.
        let status = sk.status.clone().unwrap_or_default();
        return Decision::from(Plan { write: None, status, events: vec![], requeue_at: None });
    }
    let spec = match sk.spec.validate(&name) {
        Ok(spec) => spec,
        Err(e) => {
            let msg = format!("spec is invalid: {e}");
            return Decision::from(blocked(sk, input.now, reason::INVALID_SPEC, "InvalidSpec", msg, None));
        }
    };
    if let Some(secret) = input.secret.filter(|s| !controlled_by(*s, &uid)) {
        let msg = format!(
            "Secret {} exists and is not controlled by this SigningKey; Sigil leaves it untouched. \
             Delete it or choose another spec.secretName",
            secret.name_any()
        );
        return Decision::from(blocked(
            sk,
            input.now,
            reason::SECRET_CONFLICT,
            "Conflict",
            msg,
            Some(CONFLICT_RECHECK),
        ));
    }
    if let Some(cm) = input.config_map.filter(|c| !controlled_by(*c, &uid)) {
        let msg = format!(
            "ConfigMap {} exists and is not controlled by this SigningKey; Sigil leaves it untouched. \
             Delete it or choose another spec.jwksConfigMapName",
            cm.name_any()
        );
        let recheck = Some(CONFLICT_RECHECK);
        return Decision::from(blocked(sk, input.now, reason::CONFIG_MAP_CONFLICT, "Conflict", msg, recheck));
    }
    let slots = match input.secret.map(|s| Slots::parse(&secret_data(s))).transpose() {
        Ok(slots) => slots.unwrap_or_default(),
        Err(e) => {
            // Never overwrite key material we cannot read: a person must look.
            let msg = format!("Secret {} cannot be read: {e}; fix or delete it", spec.secret_name);
            return Decision::from(blocked(sk, input.now, reason::SECRET_INVALID, "SecretInvalid", msg, None));
        }
    };
    let published = input.config_map.map(Published::parse).unwrap_or_default();
    let step = Step { sk, spec, now: input.now, slots, published };
    step.decide(input.secret, input.config_map, input.fresh_key)
}

/// Nothing can be written: report why and wait.
fn blocked(
    sk: &SigningKey,
    now: Timestamp,
    ready_reason: &'static str,
    event_reason: &'static str,
    message: String,
    recheck: Option<Duration>,
) -> Plan {
    let old = sk.status.clone().unwrap_or_default();
    let generation = sk.metadata.generation;
    let ready = old.conditions.iter().find(|c| c.type_ == READY);
    let repeated = ready.is_some_and(|c| c.reason == ready_reason && c.message == message)
        && old.observed_generation == generation;
    let mut status = old.clone();
    status.observed_generation = generation;
    set_condition(&mut status.conditions, READY, false, ready_reason, &message, generation, Time(now));
    let events = if repeated { vec![] } else { vec![Event::warning(event_reason, message)] };
    Plan { write: None, status, events, requeue_at: recheck.map(|d| add(now, d)) }
}

struct Step<'a> {
    sk: &'a SigningKey,
    spec: ValidSpec,
    now: Timestamp,
    slots: Slots,
    published: Published,
}

/// The ConfigMap content that matches a Secret.
#[derive(Debug, PartialEq)]
struct Desired {
    records: BTreeMap<String, KeyStatus>,
    jwks: BTreeMap<String, Jwk>,
    rotate_handled: Option<String>,
}

/// How the Secret moves next.
enum Transition {
    /// Store a fresh key as `next.pem` (replacing a next key of the wrong kind).
    Generate,
    /// The published next key becomes the active key.
    Activate,
    /// A revoked next key leaves the Secret.
    DropNext,
    /// Nothing due; the next transition is at this time.
    Wait(Timestamp),
}

impl Step<'_> {
    fn decide(self, secret: Option<&Secret>, cm: Option<&ConfigMap>, fresh: Option<&PrivateKey>) -> Decision {
        let desired = self.catch_up();
        if !self.config_map_up_to_date(cm, &desired) {
            let events = self.published_events(&desired);
            let write = Write::ConfigMap(self.config_map_object(&desired));
            let status = self.status(&desired, None);
            return Decision::from(Plan { write: Some(write), status, events, requeue_at: Some(self.now) });
        }
        let transition = self.transition(&desired);
        let (active, next, events) = match transition {
            Transition::Wait(at) => return Decision::from(self.settled(secret, desired, at)),
            Transition::Generate => {
                let kind = self.spec_kind();
                let Some(fresh) = fresh.filter(|k| KeyKind::of(k) == kind) else {
                    return Decision::NeedKey(kind);
                };
                let note = format!("generated {kind} key {}; it is published before it signs", fresh.kid());
                let event = Event::normal("KeyGenerated", note).about(fresh.kid());
                (self.slots.active.as_ref(), Some(fresh), vec![event])
            }
            Transition::Activate => {
                let kid = self.slots.next_kid().unwrap_or_default();
                let mut events = vec![Event::normal("KeyActivated", format!("key {kid} now signs")).about(kid)];
                if let Some(old) = self.slots.active_kid().filter(|k| self.revoked(k)) {
                    let note = format!("revoked active key {old} was replaced at once by key {kid}");
                    events.push(Event::warning("KeyRevoked", note).about(old));
                }
                (self.slots.next.as_ref(), None, events)
            }
            Transition::DropNext => (self.slots.active.as_ref(), None, vec![]),
        };
        let write = Write::Secret(self.secret_object(active, next));
        let status = self.status(&desired, None);
        Decision::from(Plan { write: Some(write), status, events, requeue_at: Some(self.now) })
    }

    /// The cluster is up to date; report and sleep until `next_transition`.
    fn settled(&self, secret: Option<&Secret>, desired: Desired, next_transition: Timestamp) -> Plan {
        // The Secret can still lack our labels (someone removed them): restore them.
        let labels = contract::labels(&self.sk.name_any());
        let write = secret
            .filter(|s| !has_labels(*s, &labels))
            .map(|_| Write::Secret(self.secret_object(self.slots.active.as_ref(), self.slots.next.as_ref())));
        let removals = desired.records.values().filter_map(|r| r.remove_at.as_ref().map(|t| t.0));
        let requeue_at = removals.chain([next_transition]).min();
        let status = self.status(&desired, Some(next_transition));
        Plan { write, status, events: vec![], requeue_at }
    }

    fn revoked(&self, kid: &str) -> bool {
        self.spec.revoked_key_ids.contains(kid)
    }

    fn spec_kind(&self) -> KeyKind {
        KeyKind { algorithm: self.spec.algorithm, rsa_bits: self.spec.rsa_bits }
    }

    /// The record we know for `kid`: the ConfigMap's, or failing that the
    /// status's (the ConfigMap may have been deleted while the Secret lives).
    fn known(&self, kid: &str) -> Option<KeyStatus> {
        let from_status = || self.sk.status.as_ref()?.keys.iter().find(|r| r.key_id == kid).cloned();
        self.published.records.get(kid).cloned().or_else(from_status)
    }

    fn rotate_request(&self) -> Option<&String> {
        self.sk.annotations().get(contract::ANNOTATION_ROTATE).filter(|v| !v.is_empty())
    }

    fn rotate_pending(&self) -> bool {
        self.rotate_request().is_some_and(|v| self.published.rotate_handled.as_ref() != Some(v))
    }

    /// The ConfigMap content that matches the Secret as it is now.
    fn catch_up(&self) -> Desired {
        let now = Time(self.now);
        let mut records = BTreeMap::new();
        let mut jwks = BTreeMap::new();
        let mut activated_now = false;
        if let Some(a) = self.slots.active.as_ref().filter(|k| !self.revoked(k.kid())) {
            let (published_at, activated_at) = match self.known(a.kid()) {
                Some(r) if r.state == KeyState::Active => (r.published_at, r.activated_at.unwrap_or(now.clone())),
                Some(r) => {
                    activated_now = true;
                    (r.published_at, now.clone())
                }
                None => {
                    activated_now = true;
                    (now.clone(), now.clone())
                }
            };
            let record = KeyStatus {
                key_id: a.kid().to_owned(),
                state: KeyState::Active,
                algorithm: a.algorithm(),
                published_at,
                activated_at: Some(activated_at),
                retired_at: None,
                remove_at: None,
            };
            records.insert(record.key_id.clone(), record);
            jwks.insert(a.kid().to_owned(), a.public_jwk().clone());
        }
        if let Some(n) = self.slots.next.as_ref().filter(|k| !self.revoked(k.kid())) {
            // Pre-publishing counts from when the key really entered the JWKS.
            let published_at = match self.published.records.get(n.kid()) {
                Some(r) if r.state == KeyState::Next && self.published.jwks.contains_key(n.kid()) => {
                    r.published_at.clone()
                }
                _ => now.clone(),
            };
            let record = KeyStatus {
                key_id: n.kid().to_owned(),
                state: KeyState::Next,
                algorithm: n.algorithm(),
                published_at,
                activated_at: None,
                retired_at: None,
                remove_at: None,
            };
            records.insert(record.key_id.clone(), record);
            jwks.insert(n.kid().to_owned(), n.public_jwk().clone());
        }
        let in_secret: BTreeSet<&str> =
            [self.slots.active_kid(), self.slots.next_kid()].into_iter().flatten().collect();
        for (kid, jwk) in &self.published.jwks {
            if in_secret.contains(kid.as_str()) || self.revoked(kid) {
                continue;
            }
            let record = self.published.records.get(kid);
            let retired_at = match record {
                // A next key that left the Secret never signed: nothing can need it.
                Some(r) if r.state == KeyState::Next => continue,
                Some(r) if r.state == KeyState::Retired => r.retired_at.clone().unwrap_or(now.clone()),
                // It was active and has left the Secret: it stopped signing now.
                // An unknown key is kept as retired too: someone may rely on it.
                _ => now.clone(),
            };
            let remove_at = Time(add(retired_at.0, self.spec.retain));
            if remove_at.0 <= self.now {
                continue;
            }
            let retired = KeyStatus {
                key_id: kid.clone(),
                state: KeyState::Retired,
                algorithm: record.map_or(jwk.alg, |r| r.algorithm),
                published_at: record.map_or(now.clone(), |r| r.published_at.clone()),
                activated_at: record.and_then(|r| r.activated_at.clone()),
                retired_at: Some(retired_at),
                remove_at: Some(remove_at),
            };
            records.insert(kid.clone(), retired);
            jwks.insert(kid.clone(), jwk.clone());
        }
        // A rotation request is done once a key has been activated after it.
        let rotate_handled = match self.rotate_request() {
            Some(v) if activated_now && self.rotate_pending() => Some(v.clone()),
            _ => self.published.rotate_handled.clone(),
        };
        Desired { records, jwks, rotate_handled }
    }

    fn config_map_up_to_date(&self, cm: Option<&ConfigMap>, desired: &Desired) -> bool {
        let Some(cm) = cm else {
            // Nothing to publish yet (the first key is still only persisted).
            return desired.jwks.is_empty() && desired.rotate_handled.is_none();
        };
        let jwks_text = cm.data.as_ref().and_then(|d| d.get(contract::JWKS));
        self.published.problems.is_empty()
            && jwks_text == Some(&render_jwks(&desired.jwks))
            && self.published.records == desired.records
            && self.published.rotate_handled == desired.rotate_handled
            && has_labels(cm, &contract::labels(&self.sk.name_any()))
    }

    /// The Secret's next transition, with the ConfigMap already matching it.
    fn transition(&self, desired: &Desired) -> Transition {
        let spec = &self.spec;
        let active = self.slots.active.as_ref().filter(|k| !self.revoked(k.kid()));
        // When the active key is due to be replaced, and whether that is now
        // regardless of schedule (manual request, or a key of the wrong kind).
        let (rotation_at, asap) = match active {
            None => (self.now, true),
            Some(a) => {
                let activated = desired.records.get(a.kid()).and_then(|r| r.activated_at.clone());
                let rotation_at = add(activated.map_or(self.now, |t| t.0), spec.every);
                (rotation_at, self.rotate_pending() || KeyKind::of(a) != self.spec_kind())
            }
        };
        let Some(next) = &self.slots.next else {
            let generate_at = if asap { self.now } else { sub(rotation_at, spec.pre_publish) };
            return if self.now >= generate_at { Transition::Generate } else { Transition::Wait(generate_at) };
        };
        if self.revoked(next.kid()) {
            return Transition::DropNext;
        }
        if KeyKind::of(next) != self.spec_kind() {
            return Transition::Generate;
        }
        let published_at = desired.records.get(next.kid()).map_or(self.now, |r| r.published_at.0);
        let activate_at = match active {
            // The first key, or the replacement of a revoked one: nothing
            // trustworthy signs, so there is nothing to wait for.
            None => self.now,
            Some(_) if asap => add(published_at, spec.pre_publish),
            Some(_) => rotation_at.max(add(published_at, spec.pre_publish)),
        };
        if self.now >= activate_at { Transition::Activate } else { Transition::Wait(activate_at) }
    }

    fn status(&self, desired: &Desired, next_transition: Option<Timestamp>) -> SigningKeyStatus {
        let old = self.sk.status.clone().unwrap_or_default();
        let generation = self.sk.metadata.generation;
        let mut conditions = old.conditions;
        let active = self.slots.active_kid().filter(|kid| desired.records.contains_key(*kid));
        match active {
            Some(kid) => {
                let alg = desired.records.get(kid).map(|r| r.algorithm.as_str()).unwrap_or_default();
                let msg = format!("key {kid} ({alg}) signs; {} key(s) published", desired.jwks.len());
                set_condition(&mut conditions, READY, true, reason::ACTIVE, &msg, generation, Time(self.now));
            }
            None => {
                let msg = "generating and publishing a signing key";
                set_condition(&mut conditions, READY, false, reason::PENDING, msg, generation, Time(self.now));
            }
        }
        // With a next key waiting, the transition is its activation; without,
        // it is the generation of one, which activates prePublish later.
        let next_rotation_time = next_transition.map(|t| match self.slots.next {
            Some(_) => Time(t),
            None => Time(add(t, self.spec.pre_publish)),
        });
        SigningKeyStatus {
            observed_generation: generation,
            conditions,
            active_key_id: active.map(str::to_owned),
            next_key_id: self.slots.next_kid().filter(|k| !self.revoked(k)).map(str::to_owned),
            next_rotation_time,
            keys: desired.records.values().cloned().collect(),
        }
    }

    /// Events for a ConfigMap write from the published state to `desired`.
    fn published_events(&self, desired: &Desired) -> Vec<Event> {
        let cm = &self.spec.jwks_config_map_name;
        let mut events = Vec::new();
        for problem in &self.published.problems {
            events.push(Event::warning("JwksRepaired", format!("ConfigMap {cm} rewritten: {problem}")));
        }
        for (kid, record) in &desired.records {
            let was = self.published.records.get(kid).filter(|_| self.published.jwks.contains_key(kid));
            if !self.published.jwks.contains_key(kid) {
                events.push(Event::normal("KeyPublished", format!("published key {kid} in ConfigMap {cm}")).about(kid));
            }
            if record.state == KeyState::Retired && was.is_some_and(|r| r.state != KeyState::Retired) {
                let until = record.remove_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
                let note = format!("key {kid} stopped signing; it stays published until {until}");
                events.push(Event::normal("KeyRetired", note).about(kid));
            }
        }
        for kid in self.published.jwks.keys().filter(|k| !desired.jwks.contains_key(*k)) {
            if self.revoked(kid) {
                let note = format!("withdrew revoked key {kid} from ConfigMap {cm}: tokens it signed no longer verify");
                events.push(Event::warning("KeyRevoked", note).about(kid));
            } else {
                events.push(Event::normal("KeyRemoved", format!("removed key {kid} from ConfigMap {cm}")).about(kid));
            }
        }
        events
    }

    fn meta(&self, name: &str, annotations: Option<BTreeMap<String, String>>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: self.sk.namespace(),
            labels: Some(contract::labels(&self.sk.name_any())),
            annotations,
            owner_references: self.sk.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        }
    }

    fn secret_object(&self, active: Option<&PrivateKey>, next: Option<&PrivateKey>) -> Secret {
        Secret {
            metadata: self.meta(&self.spec.secret_name, None),
            type_: Some(contract::SECRET_TYPE.to_owned()),
            data: Some(slots_data(active, next)),
            ..Secret::default()
        }
    }

    fn config_map_object(&self, desired: &Desired) -> ConfigMap {
        let records: Vec<KeyStatus> = desired.records.values().cloned().collect();
        let mut annotations =
            BTreeMap::from([(contract::ANNOTATION_KEYS.to_owned(), contract::render_key_records(&records))]);
        if let Some(handled) = &desired.rotate_handled {
            annotations.insert(contract::ANNOTATION_ROTATE_HANDLED.to_owned(), handled.clone());
        }
        ConfigMap {
            metadata: self.meta(&self.spec.jwks_config_map_name, Some(annotations)),
            data: Some(BTreeMap::from([(contract::JWKS.to_owned(), render_jwks(&desired.jwks))])),
            ..ConfigMap::default()
        }
    }
}

fn render_jwks(jwks: &BTreeMap<String, Jwk>) -> String {
    JwkSet { keys: jwks.values().cloned().collect() }.to_json()
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

fn sub(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_sub(d).unwrap_or(Timestamp::MIN)
}

#[cfg(test)]
mod tests;
