//! The reconcile decision: a pure function of the SigningKey, the observed
//! Secret and ConfigMap, an optional freshly generated key, the operator's
//! limits and `now`. No I/O, no clock, no randomness, so every timeline is a
//! table test.
//!
//! # Where the state lives
//!
//! The Secret is the whole state: the private keys in their slots, and
//! `lifecycle.json` with every published key's record (and the public key of
//! each retired one). Only the operator writes it. The JWKS ConfigMap is
//! output, rendered from the Secret; anything else found in it (a planted
//! key, a damaged `jwks.json`, an old annotation) is overwritten, and nothing
//! read from it is trusted, with one exception: when the state itself is gone
//! (the Secret was deleted, or predates `lifecycle.json`), the keys
//! `.status.keys` names are recovered from the ConfigMap if, and only if,
//! their public key hashes to the recorded key id (RFC 7638).
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
//! 1. **The ConfigMap catches up with the Secret first**: it publishes the
//!    keys in the Secret's slots and the retained keys of its records, never
//!    a revoked one. This write only adds keys the Secret already persists.
//! 2. **Then the Secret's records catch up**: a next key is recorded as
//!    published once the ConfigMap publishes it (pre-publication counts from
//!    then), expired and revoked records go, recorded times are never later
//!    than now.
//! 3. **Then the Secret advances one transition**: store a new next key,
//!    activate the published next key (retiring the active one in the same
//!    write), or drop a revoked next key.
//!
//! So a key's life is: persisted as `next.pem` -> published -> recorded as
//! Next -> activated (the old key recorded Retired, with its public key) ->
//! removed from the ConfigMap after `retain` -> its record dropped. The very
//! first key takes the same path with no wait between publishing and
//! activating (nothing signs yet); so does the replacement of a revoked
//! active key (an emergency).
//!
//! A change of `algorithm` or `keySize` rolls over to a key of the new kind by
//! a normal rotation: the new key is generated at once, pre-published for
//! `prePublish`, then activated; the old key retires as usual.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use sigil_api::conditions::{READY, set_condition};
use sigil_api::contract::{self, KeyRecord, Lifecycle};
use sigil_api::duration;
use sigil_api::jwk::{Jwk, JwkSet};
use sigil_api::keys::PrivateKey;
use sigil_api::signing_key::{KeyState, KeyStatus, MAX_RETIRED_KEYS, SigningKey, SigningKeyStatus, ValidSpec};

use crate::observe::{KeyKind, Published, Slots, controlled_by, has_labels, secret_data, slots_data};

/// How often a SigningKey blocked by someone else's Secret or ConfigMap looks
/// again. Such objects lack our label, so no watch event tells us they went.
pub const CONFLICT_RECHECK: Duration = Duration::from_secs(60);

/// The operator's own limits, the same for every SigningKey it manages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The shortest `prePublish` accepted: how long the kubelet may take to
    /// deliver a changed ConfigMap or Secret to a pod's volume.
    pub min_pre_publish: Duration,
}

impl Limits {
    /// The kubelet refreshes mounted ConfigMaps and Secrets on its sync loop
    /// (1m by default, plus jitter and load). Measured on a real node
    /// (bench/rotation): delivery took up to 88 s. Two minutes covers that.
    pub const DEFAULT_MIN_PRE_PUBLISH: Duration = Duration::from_secs(120);
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { min_pre_publish: Limits::DEFAULT_MIN_PRE_PUBLISH }
    }
}

/// Everything the decision depends on.
pub struct Input<'a> {
    pub signing_key: &'a SigningKey,
    pub secret: Option<&'a Secret>,
    pub config_map: Option<&'a ConfigMap>,
    /// A key generated after an earlier [`Decision::NeedKey`].
    pub fresh_key: Option<&'a PrivateKey>,
    pub limits: Limits,
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
    pub(crate) fn warning(reason: &'static str, note: String) -> Event {
        Event { warning: true, reason, note, key_id: None }
    }
    fn about(mut self, kid: &str) -> Event {
        self.key_id = Some(kid.to_owned());
        self
    }
}

/// Condition reasons; Ready's are also the `reason` label of failure metrics.
pub mod reason {
    pub const ACTIVE: &str = "KeyActive";
    pub const PENDING: &str = "KeyPending";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    pub const CONFIG_MAP_CONFLICT: &str = "ConfigMapConflict";
    pub const SECRET_INVALID: &str = "SecretInvalid";
    /// `TimingsEnforced`: prePublish is held to the kubelet propagation floor.
    pub const FLOOR_ENFORCED: &str = "PropagationFloor";
    /// `TimingsEnforced`: the operator runs with a lowered floor (tests).
    pub const FLOOR_LOWERED: &str = "FloorLowered";
}

/// Condition type saying whether the operator holds `prePublish` to the
/// kubelet's propagation delay, so an operator flag lowering it is visible on
/// every SigningKey.
pub const TIMINGS_ENFORCED: &str = "TimingsEnforced";

pub fn decide(input: Input<'_>) -> Decision {
    let sk = input.signing_key;
    let name = sk.name_any();
    let uid = sk.uid().unwrap_or_default();
    let limits = input.limits;
    if sk.metadata.deletion_timestamp.is_some() {
        // The garbage collector is removing our objects; recreating them
        // would race it and mint keys for a SigningKey that is going away.
        let status = sk.status.clone().unwrap_or_default();
        return Decision::from(Plan { write: None, status, events: vec![], requeue_at: None });
    }
    let spec = match sk.spec.validate(&name) {
        Ok(spec) if spec.pre_publish < limits.min_pre_publish => {
            let msg = format!(
                "spec is invalid: rotation.prePublish {} is shorter than {}, the time the kubelet may take to \
                 deliver a changed JWKS to a verifier's volume (operator flag --min-pre-publish); raise prePublish",
                sk.spec.rotation.pre_publish,
                duration::format(limits.min_pre_publish)
            );
            return Decision::from(blocked(sk, input.now, limits, reason::INVALID_SPEC, "InvalidSpec", msg, None));
        }
        Ok(spec) => spec,
        Err(e) => {
            let msg = format!("spec is invalid: {e}");
            return Decision::from(blocked(sk, input.now, limits, reason::INVALID_SPEC, "InvalidSpec", msg, None));
        }
    };
    if let Some(secret) = input.secret.filter(|s| !controlled_by(*s, &uid)) {
        let msg = format!(
            "Secret {} exists and is not controlled by this SigningKey; Sigil leaves it untouched. \
             Delete it or choose another spec.secretName",
            secret.name_any()
        );
        let recheck = Some(CONFLICT_RECHECK);
        return Decision::from(blocked(sk, input.now, limits, reason::SECRET_CONFLICT, "Conflict", msg, recheck));
    }
    if let Some(cm) = input.config_map.filter(|c| !controlled_by(*c, &uid)) {
        let msg = format!(
            "ConfigMap {} exists and is not controlled by this SigningKey; Sigil leaves it untouched. \
             Delete it or choose another spec.jwksConfigMapName",
            cm.name_any()
        );
        let recheck = Some(CONFLICT_RECHECK);
        return Decision::from(blocked(sk, input.now, limits, reason::CONFIG_MAP_CONFLICT, "Conflict", msg, recheck));
    }
    let data = input.secret.map(secret_data).unwrap_or_default();
    let read = Slots::parse(&data).and_then(|slots| {
        let stored = data.get(contract::LIFECYCLE).map(|v| Lifecycle::parse(&v.0)).transpose()?;
        Ok((slots, stored))
    });
    let (slots, stored) = match read {
        Ok(read) => read,
        Err(e) => {
            // Never overwrite key material or records we cannot read: a person must look.
            let msg = format!("Secret {} cannot be read: {e}; fix or delete it", spec.secret_name);
            return Decision::from(blocked(sk, input.now, limits, reason::SECRET_INVALID, "SecretInvalid", msg, None));
        }
    };
    let published = input.config_map.map(Published::parse).unwrap_or_default();
    let secret_exists = input.secret.is_some();
    let (base, recovered) = (BTreeMap::new(), Vec::new());
    let mut step = Step { sk, spec, limits, now: input.now, slots, stored, secret_exists, published, base, recovered };
    (step.base, step.recovered) = step.base_records();
    step.decide(input.secret, input.config_map, input.fresh_key)
}

/// Nothing can be written: report why and wait.
fn blocked(
    sk: &SigningKey,
    now: Timestamp,
    limits: Limits,
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
    set_timings_condition(&mut status, limits, now);
    let events = if repeated { vec![] } else { vec![Event::warning(event_reason, message)] };
    Plan { write: None, status, events, requeue_at: recheck.map(|d| add(now, d)) }
}

/// `TimingsEnforced`: whether this operator holds prePublish to the kubelet's
/// propagation delay. False only when a flag lowered the floor (tests).
fn set_timings_condition(status: &mut SigningKeyStatus, limits: Limits, now: Timestamp) {
    let generation = status.observed_generation;
    let floor = duration::format(limits.min_pre_publish);
    let (ok, why, msg) = if limits.min_pre_publish >= Limits::DEFAULT_MIN_PRE_PUBLISH {
        let msg = format!(
            "prePublish is at least {floor}, the kubelet's propagation delay; retain covers maxTokenLifetime + prePublish + 1m"
        );
        (true, reason::FLOOR_ENFORCED, msg)
    } else {
        let msg = format!(
            "the operator runs with --min-pre-publish={floor}, below the kubelet's propagation delay ({}): \
             verifiers that mount the JWKS may reject tokens after a rotation. This is a test setting",
            duration::format(Limits::DEFAULT_MIN_PRE_PUBLISH)
        );
        (false, reason::FLOOR_LOWERED, msg)
    };
    set_condition(&mut status.conditions, TIMINGS_ENFORCED, ok, why, &msg, generation, Time(now));
}

struct Step<'a> {
    sk: &'a SigningKey,
    spec: ValidSpec,
    limits: Limits,
    now: Timestamp,
    slots: Slots,
    /// The Secret's `lifecycle.json`; `None` when the Secret or the entry is missing.
    stored: Option<Lifecycle>,
    secret_exists: bool,
    published: Published,
    /// The records to start from ([`Step::base_records`]), read once.
    base: BTreeMap<String, KeyRecord>,
    /// Which of them were recovered from `.status` and the ConfigMap.
    recovered: Vec<String>,
}

/// The state the Secret should hold and the JWKS that renders from it.
#[derive(Debug, PartialEq)]
struct Desired {
    records: BTreeMap<String, KeyRecord>,
    rotate_handled: Option<String>,
}

impl Desired {
    fn lifecycle(&self) -> Lifecycle {
        Lifecycle { keys: self.records.values().cloned().collect(), rotate_handled: self.rotate_handled.clone() }
    }

    fn record(&self, kid: &str) -> Option<&KeyStatus> {
        self.records.get(kid).map(|r| &r.status)
    }

    fn retired(&self) -> usize {
        self.records.values().filter(|r| r.status.state == KeyState::Retired).count()
    }
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
        let (active, next) = (self.slots.active.as_ref(), self.slots.next.as_ref());
        let desired = self.catch_up(active, next);
        let jwks = self.jwks(&desired, active, next);
        if !self.config_map_up_to_date(cm, &jwks) {
            let events = self.published_events(&desired, &jwks);
            let write = Write::ConfigMap(self.config_map_object(&jwks));
            let status = self.status(&desired, &jwks, None);
            return Decision::from(Plan { write: Some(write), status, events, requeue_at: Some(self.now) });
        }
        if !self.secret_up_to_date(secret, &desired) {
            let events = self.recovery_events(&desired);
            let write = Write::Secret(self.secret_object(active, next, &desired));
            let status = self.status(&desired, &jwks, None);
            return Decision::from(Plan { write: Some(write), status, events, requeue_at: Some(self.now) });
        }
        let (active, next, events) = match self.transition(&desired) {
            Transition::Wait(at) => return Decision::from(self.settled(&desired, &jwks, at)),
            Transition::Generate => {
                let kind = self.spec_kind();
                let Some(fresh) = fresh.filter(|k| KeyKind::of(k) == kind) else {
                    return Decision::NeedKey(kind);
                };
                let note = format!("generated {kind} key {}; it is published before it signs", fresh.kid());
                let event = Event::normal("KeyGenerated", note).about(fresh.kid());
                (active, Some(fresh), vec![event])
            }
            Transition::Activate => {
                let kid = self.slots.next_kid().unwrap_or_default();
                let mut events = vec![Event::normal("KeyActivated", format!("key {kid} now signs")).about(kid)];
                for old in desired.records.values().filter(|r| r.status.state == KeyState::Active) {
                    let note = format!(
                        "key {} stopped signing; it stays published until {}",
                        old.status.key_id,
                        add(self.now, self.spec.retain)
                    );
                    events.push(Event::normal("KeyRetired", note).about(&old.status.key_id));
                }
                if let Some(old) = self.slots.active_kid().filter(|k| self.revoked(k)) {
                    let note = format!("revoked active key {old} was replaced at once by key {kid}");
                    events.push(Event::warning("KeyRevoked", note).about(old));
                }
                (next, None, events)
            }
            Transition::DropNext => (active, None, vec![]),
        };
        // The records move with the keys, in the same write.
        let after = self.catch_up(active, next);
        let write = Write::Secret(self.secret_object(active, next, &after));
        let status = self.status(&after, &self.jwks(&after, active, next), None);
        Decision::from(Plan { write: Some(write), status, events, requeue_at: Some(self.now) })
    }

    /// The cluster is up to date; report and sleep until `next_transition`.
    fn settled(&self, desired: &Desired, jwks: &BTreeMap<String, Jwk>, next_transition: Timestamp) -> Plan {
        let removals = desired.records.values().filter_map(|r| r.status.remove_at.as_ref().map(|t| t.0));
        let requeue_at = removals.chain([next_transition]).min();
        let status = self.status(desired, jwks, Some(next_transition));
        Plan { write: None, status, events: vec![], requeue_at }
    }

    fn revoked(&self, kid: &str) -> bool {
        self.spec.revoked_key_ids.contains(kid)
    }

    fn spec_kind(&self) -> KeyKind {
        KeyKind { algorithm: self.spec.algorithm, rsa_bits: self.spec.rsa_bits }
    }

    fn rotate_request(&self) -> Option<&String> {
        self.sk.annotations().get(contract::ANNOTATION_ROTATE).filter(|v| !v.is_empty())
    }

    fn rotate_handled(&self) -> Option<&String> {
        self.stored.as_ref().and_then(|s| s.rotate_handled.as_ref())
    }

    fn rotate_pending(&self) -> bool {
        self.rotate_request().is_some_and(|v| self.rotate_handled() != Some(v))
    }

    /// The public key of `kid` as far as the Secret knows it: from a key slot,
    /// or from its record.
    fn own_jwk(&self, kid: &str, record: Option<&KeyRecord>) -> Option<Jwk> {
        let slot =
            [self.slots.active.as_ref(), self.slots.next.as_ref()].into_iter().flatten().find(|k| k.kid() == kid);
        slot.map(|k| k.public_jwk().clone()).or_else(|| record.and_then(|r| r.jwk.clone()))
    }

    /// The records to start from: the Secret's, or when it has none (the
    /// Secret was deleted, or was written before `lifecycle.json` existed)
    /// what `.status` names, keeping only keys whose public key is known and
    /// hashes to the recorded id. A record's times are never later than now.
    fn base_records(&self) -> (BTreeMap<String, KeyRecord>, Vec<String>) {
        let clamp = |t: &Time| Time(t.0.min(self.now));
        let sanitize = |mut r: KeyRecord| {
            r.status.published_at = clamp(&r.status.published_at);
            r.status.activated_at = r.status.activated_at.as_ref().map(clamp);
            r.status.retired_at = r.status.retired_at.as_ref().map(clamp);
            r
        };
        if let Some(stored) = &self.stored {
            let records = stored.keys.iter().cloned().map(sanitize).map(|r| (r.status.key_id.clone(), r)).collect();
            return (records, vec![]);
        }
        let mut records = BTreeMap::new();
        let mut recovered = vec![];
        for status in self.sk.status.iter().flat_map(|s| &s.keys) {
            let kid = &status.key_id;
            let jwk = match self.own_jwk(kid, None) {
                Some(own) => own,
                None => match self.published.jwks.get(kid).filter(|j| j.thumbprint() == *kid) {
                    Some(proven) => {
                        recovered.push(kid.clone());
                        proven.clone()
                    }
                    None => continue,
                },
            };
            let mut record = sanitize(KeyRecord { status: status.clone(), jwk: Some(jwk) });
            // A remove time is not taken from status: it is recomputed from retain.
            record.status.remove_at = None;
            records.insert(kid.clone(), record);
        }
        (records, recovered)
    }

    /// The records that match `active` and `next` as the Secret's key slots.
    fn catch_up(&self, active: Option<&PrivateKey>, next: Option<&PrivateKey>) -> Desired {
        let now = Time(self.now);
        let base = &self.base;
        let mut records = BTreeMap::new();
        let mut activated_now = false;
        let active = active.filter(|k| !self.revoked(k.kid()));
        let next = next.filter(|k| !self.revoked(k.kid()));
        if let Some(a) = active {
            let status = match base.get(a.kid()).map(|r| &r.status) {
                Some(r) if r.state == KeyState::Active => {
                    KeyStatus { activated_at: r.activated_at.clone().or(Some(now.clone())), ..r.clone() }
                }
                known => {
                    activated_now = true;
                    KeyStatus {
                        key_id: a.kid().to_owned(),
                        state: KeyState::Active,
                        algorithm: a.algorithm(),
                        published_at: known.map_or(now.clone(), |r| r.published_at.clone()),
                        activated_at: Some(now.clone()),
                        retired_at: None,
                        remove_at: None,
                    }
                }
            };
            records.insert(
                a.kid().to_owned(),
                KeyRecord { status: KeyStatus { state: KeyState::Active, ..status }, jwk: None },
            );
        }
        if let Some(n) = next {
            // Pre-publication counts from when the ConfigMap really published the key.
            let status = match base.get(n.kid()).map(|r| &r.status) {
                Some(r) if r.state == KeyState::Next => Some(r.clone()),
                _ if self.published.jwks.get(n.kid()) == Some(n.public_jwk()) => Some(KeyStatus {
                    key_id: n.kid().to_owned(),
                    state: KeyState::Next,
                    algorithm: n.algorithm(),
                    published_at: now.clone(),
                    activated_at: None,
                    retired_at: None,
                    remove_at: None,
                }),
                _ => None,
            };
            if let Some(status) = status {
                records.insert(n.kid().to_owned(), KeyRecord { status, jwk: None });
            }
        }
        for (kid, record) in base {
            if records.contains_key(kid) || self.revoked(kid) {
                continue;
            }
            let Some(jwk) = self.own_jwk(kid, Some(record)) else { continue };
            let status = &record.status;
            let retired_at = match status.state {
                // A next key that left the Secret never signed: nothing can need it.
                KeyState::Next => continue,
                // The active key left its slot with nothing activated in its
                // place (the Secret was lost): the issuer may still sign with
                // it from memory, so it stays Active until a key is.
                KeyState::Active if active.is_none() => {
                    records.insert(kid.clone(), KeyRecord { status: status.clone(), jwk: Some(jwk) });
                    continue;
                }
                KeyState::Active => now.clone(),
                KeyState::Retired => status.retired_at.clone().unwrap_or(now.clone()),
            };
            let by_retain = add(retired_at.0, self.spec.retain);
            let remove_at = status.remove_at.as_ref().map_or(by_retain, |t| t.0.max(by_retain));
            if remove_at <= self.now {
                continue;
            }
            let retired = KeyStatus {
                state: KeyState::Retired,
                retired_at: Some(retired_at),
                remove_at: Some(Time(remove_at)),
                ..status.clone()
            };
            records.insert(kid.clone(), KeyRecord { status: retired, jwk: Some(jwk) });
        }
        // A rotation request is done once a key has been activated after it.
        let rotate_handled = match self.rotate_request() {
            Some(v) if activated_now && self.rotate_pending() => Some(v.clone()),
            _ => self.rotate_handled().cloned(),
        };
        Desired { records, rotate_handled }
    }

    /// The JWKS for a state: the keys in the slots (a next key is published
    /// before it is recorded) and every record's key; never a revoked one.
    fn jwks(&self, desired: &Desired, active: Option<&PrivateKey>, next: Option<&PrivateKey>) -> BTreeMap<String, Jwk> {
        let mut jwks = BTreeMap::new();
        for key in [active, next].into_iter().flatten().filter(|k| !self.revoked(k.kid())) {
            jwks.insert(key.kid().to_owned(), key.public_jwk().clone());
        }
        for (kid, record) in &desired.records {
            if let Some(jwk) = &record.jwk {
                jwks.entry(kid.clone()).or_insert_with(|| jwk.clone());
            }
        }
        jwks
    }

    fn config_map_up_to_date(&self, cm: Option<&ConfigMap>, jwks: &BTreeMap<String, Jwk>) -> bool {
        let Some(cm) = cm else {
            // Nothing to publish yet.
            return jwks.is_empty();
        };
        let jwks_text = cm.data.as_ref().and_then(|d| d.get(contract::JWKS));
        // Annotations of ours (records of an older operator) are removed: nothing here is state.
        let ours = |k: &String| k.starts_with("sigil.dev/");
        self.published.problems.is_empty()
            && jwks_text == Some(&render_jwks(jwks))
            && !cm.metadata.annotations.iter().flatten().any(|(k, _)| ours(k))
            && has_labels(cm, &contract::labels(&self.sk.name_any()))
    }

    fn secret_up_to_date(&self, secret: Option<&Secret>, desired: &Desired) -> bool {
        let Some(secret) = secret else {
            // Nothing persisted yet: the first write is a transition.
            return desired.records.is_empty();
        };
        let data = secret.data.as_ref();
        let entry = |k: &str| data.and_then(|d| d.get(k)).map(|v| v.0.as_slice());
        entry(contract::LIFECYCLE) == Some(desired.lifecycle().render().as_bytes())
            && entry(contract::MAX_TOKEN_LIFETIME) == Some(duration::format(self.spec.max_token_lifetime).as_bytes())
            && secret.type_.as_deref() == Some(contract::SECRET_TYPE)
            && has_labels(secret, &contract::labels(&self.sk.name_any()))
    }

    /// The Secret's next transition, with the ConfigMap and records already matching it.
    fn transition(&self, desired: &Desired) -> Transition {
        let spec = &self.spec;
        let active = self.slots.active.as_ref().filter(|k| !self.revoked(k.kid()));
        // A key that still signs though its private key left the Secret (see catch_up).
        let orphan = desired.records.values().find(|r| r.status.state == KeyState::Active && r.jwk.is_some());
        // When the active key is due to be replaced, and whether that is now
        // regardless of schedule (manual request, a key of the wrong kind, a lost Secret).
        let (rotation_at, asap) = match (active, orphan) {
            (Some(a), _) => {
                let activated = desired.record(a.kid()).and_then(|r| r.activated_at.clone());
                let rotation_at = add(activated.map_or(self.now, |t| t.0), spec.every);
                (rotation_at, self.rotate_pending() || KeyKind::of(a) != self.spec_kind())
            }
            (None, _) => (self.now, true),
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
        let Some(published_at) = desired.record(next.kid()).map(|r| r.published_at.0) else {
            // Not yet recorded as published: the catch-up steps come first.
            return Transition::Wait(self.now);
        };
        let signing = active.is_some() || orphan.is_some();
        let activate_at = match signing {
            // The first key, or the replacement of a revoked one: nothing
            // trustworthy signs, so there is nothing to wait for.
            false => self.now,
            true if asap => add(published_at, spec.pre_publish),
            true => rotation_at.max(add(published_at, spec.pre_publish)),
        };
        if self.now < activate_at {
            return Transition::Wait(activate_at);
        }
        // Each activation retires a key: beyond the bound, an unscheduled
        // rotation waits for the oldest retired key to go. A signing key that
        // was revoked is replaced regardless (its record is already gone).
        if signing && desired.retired() >= MAX_RETIRED_KEYS {
            let oldest = desired.records.values().filter_map(|r| r.status.remove_at.as_ref().map(|t| t.0)).min();
            return Transition::Wait(oldest.unwrap_or(self.now));
        }
        Transition::Activate
    }

    fn status(
        &self,
        desired: &Desired,
        jwks: &BTreeMap<String, Jwk>,
        next_transition: Option<Timestamp>,
    ) -> SigningKeyStatus {
        let old = self.sk.status.clone().unwrap_or_default();
        let generation = self.sk.metadata.generation;
        let mut status =
            SigningKeyStatus { observed_generation: generation, conditions: old.conditions, ..Default::default() };
        let active =
            self.slots.active_kid().filter(|kid| jwks.contains_key(*kid) && desired.records.contains_key(*kid));
        match active {
            Some(kid) => {
                let alg = desired.record(kid).map(|r| r.algorithm.as_str()).unwrap_or_default();
                let msg = format!("key {kid} ({alg}) signs; {} key(s) published", jwks.len());
                set_condition(&mut status.conditions, READY, true, reason::ACTIVE, &msg, generation, Time(self.now));
            }
            None => {
                let msg = "generating and publishing a signing key";
                set_condition(&mut status.conditions, READY, false, reason::PENDING, msg, generation, Time(self.now));
            }
        }
        set_timings_condition(&mut status, self.limits, self.now);
        // With a next key waiting, the transition is its activation; without,
        // it is the generation of one, which activates prePublish later.
        status.next_rotation_time = next_transition.map(|t| match self.slots.next {
            Some(_) => Time(t),
            None => Time(add(t, self.spec.pre_publish)),
        });
        status.active_key_id = active.map(str::to_owned);
        status.next_key_id = self.slots.next_kid().filter(|k| !self.revoked(k)).map(str::to_owned);
        status.keys = desired.records.values().map(|r| r.status.clone()).collect();
        status
    }

    /// Events for a ConfigMap write from what it publishes to `jwks`.
    fn published_events(&self, desired: &Desired, jwks: &BTreeMap<String, Jwk>) -> Vec<Event> {
        let cm = &self.spec.jwks_config_map_name;
        let mut events = Vec::new();
        for problem in &self.published.problems {
            events.push(Event::warning("JwksRepaired", format!("ConfigMap {cm} rewritten: {problem}")));
        }
        for kid in jwks.keys().filter(|k| !self.published.jwks.contains_key(*k)) {
            events.push(Event::normal("KeyPublished", format!("published key {kid} in ConfigMap {cm}")).about(kid));
        }
        let known = &self.base;
        let in_slots = |k: &str| self.slots.active_kid() == Some(k) || self.slots.next_kid() == Some(k);
        for kid in self.published.jwks.keys().filter(|k| !jwks.contains_key(*k)) {
            let event = if self.revoked(kid) {
                let note = format!("withdrew revoked key {kid} from ConfigMap {cm}: tokens it signed no longer verify");
                Event::warning("KeyRevoked", note)
            } else if known.contains_key(kid) || in_slots(kid) || desired.records.contains_key(kid) {
                Event::normal("KeyRemoved", format!("removed key {kid} from ConfigMap {cm}"))
            } else {
                let note = format!(
                    "removed key {kid} from ConfigMap {cm}: the operator never published it. The ConfigMap is \
                     rendered from Secret {}; someone with write access to ConfigMaps in this namespace added it",
                    self.spec.secret_name
                );
                Event::warning("UnknownKeyRemoved", note)
            };
            events.push(event.about(kid));
        }
        events
    }

    /// Events for a Secret write that rebuilds lost records.
    fn recovery_events(&self, desired: &Desired) -> Vec<Event> {
        let recovered: Vec<&str> =
            self.recovered.iter().filter(|k| desired.records.contains_key(*k)).map(String::as_str).collect();
        if recovered.is_empty() || self.stored.is_some() {
            return vec![];
        }
        let kids = recovered.join(", ");
        let note = if self.secret_exists {
            format!("recorded the lifecycle of key(s) {kids} in Secret {} (from status)", self.spec.secret_name)
        } else {
            format!(
                "Secret {} was deleted: key(s) {kids} stay published until their tokens expire, and a new key is \
                 published for prePublish before it signs. If a key leaked, list it in spec.revokedKeyIds",
                self.spec.secret_name
            )
        };
        let reason = if self.secret_exists { "StateRecovered" } else { "SecretLost" };
        vec![Event { warning: !self.secret_exists, reason, note, key_id: None }]
    }

    fn meta(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: self.sk.namespace(),
            labels: Some(contract::labels(&self.sk.name_any())),
            owner_references: self.sk.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        }
    }

    fn secret_object(&self, active: Option<&PrivateKey>, next: Option<&PrivateKey>, desired: &Desired) -> Secret {
        let mut data = slots_data(active, next);
        data.insert(contract::LIFECYCLE.to_owned(), ByteString(desired.lifecycle().render().into_bytes()));
        let lifetime = duration::format(self.spec.max_token_lifetime);
        data.insert(contract::MAX_TOKEN_LIFETIME.to_owned(), ByteString(lifetime.into_bytes()));
        Secret {
            metadata: self.meta(&self.spec.secret_name),
            type_: Some(contract::SECRET_TYPE.to_owned()),
            data: Some(data),
            ..Secret::default()
        }
    }

    fn config_map_object(&self, jwks: &BTreeMap<String, Jwk>) -> ConfigMap {
        ConfigMap {
            metadata: self.meta(&self.spec.jwks_config_map_name),
            data: Some(BTreeMap::from([(contract::JWKS.to_owned(), render_jwks(jwks))])),
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
