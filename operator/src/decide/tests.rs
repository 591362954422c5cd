//! Timelines of the pure decision with an injected clock. A small simulator
//! plays the reconciler (one write at a time, fed back in) and checks the
//! issue's invariants after every single write, i.e. at every point where the
//! operator could crash.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use sigil_api::jwk::JwkSet;
use sigil_api::signing_key::{KeyState, SigningKey, SigningKeySpec};

use super::*;

const UID: &str = "0b6f1f6e-0000-4000-8000-000000000001";
const T0: &str = "2026-11-01T00:00:00Z";

fn t(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn at(minutes: i64) -> Timestamp {
    t(T0).checked_add(jiff::SignedDuration::from_mins(minutes)).expect("in range")
}

/// every 1h, prePublish 10m, retain 30m: rotations every hour, generation at
/// :50; tokens live up to 15m (retain must cover 15m + 10m + 1m).
fn spec(extra: serde_json::Value) -> SigningKeySpec {
    let mut json = serde_json::json!({
        "algorithm": "ES256",
        "maxTokenLifetime": "15m",
        "rotation": {"every": "1h", "prePublish": "10m", "retain": "30m"}
    });
    if let (Some(base), Some(extra)) = (json.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    serde_json::from_value(json).expect("spec")
}

fn signing_key(spec: SigningKeySpec) -> SigningKey {
    let mut sk = SigningKey::new("api", spec);
    sk.metadata.namespace = Some("team".into());
    sk.metadata.uid = Some(UID.into());
    sk.metadata.generation = Some(1);
    sk
}

fn generate(kind: KeyKind) -> PrivateKey {
    PrivateKey::generate(kind.algorithm, kind.rsa_bits).expect("generate")
}

/// The cluster as the simulated reconciler sees it, plus the history the
/// invariants need.
struct World {
    sk: SigningKey,
    secret: Option<Secret>,
    cm: Option<ConfigMap>,
    now: Timestamp,
    limits: Limits,
    writes: usize,
    events: Vec<Event>,
    /// Every (Secret, ConfigMap) pair seen between two writes: the crash points.
    snapshots: Vec<(Option<Secret>, Option<ConfigMap>)>,
    keep_snapshots: bool,
    /// kid -> when it entered the JWKS.
    published_since: BTreeMap<String, Timestamp>,
    /// Kids whose private key has been stored in the Secret.
    persisted: BTreeSet<String>,
    /// The key that signs now and since when.
    signing: Option<(String, Timestamp)>,
    /// kid -> when it stopped signing.
    stopped: BTreeMap<String, Timestamp>,
}

impl World {
    fn new(spec: SigningKeySpec) -> World {
        World {
            sk: signing_key(spec),
            secret: None,
            cm: None,
            now: at(0),
            limits: Limits::default(),
            writes: 0,
            events: vec![],
            snapshots: vec![],
            keep_snapshots: true,
            published_since: BTreeMap::new(),
            persisted: BTreeSet::new(),
            signing: None,
            stopped: BTreeMap::new(),
        }
    }

    /// An operator starting on objects a crash left behind, with no status.
    fn resume(spec: SigningKeySpec, secret: Option<Secret>, cm: Option<ConfigMap>, now: Timestamp) -> World {
        let mut w = World::new(spec);
        (w.secret, w.cm, w.now) = (secret, cm, now);
        w.persisted = w.jwks();
        let records = w.secret.as_ref().map(|_| w.records()).unwrap_or_default();
        w.published_since = records.values().map(|r| (r.key_id.clone(), r.published_at.0)).collect();
        w.signing = w.active().map(|k| (k, now));
        w.check_invariants();
        w
    }

    fn decide(&self, fresh: Option<&PrivateKey>) -> Decision {
        decide(Input {
            signing_key: &self.sk,
            secret: self.secret.as_ref(),
            config_map: self.cm.as_ref(),
            fresh_key: fresh,
            limits: self.limits,
            now: self.now,
        })
    }

    /// One step: generate a key if asked, then return the plan.
    fn plan(&self) -> Plan {
        match self.decide(None) {
            Decision::Plan(plan) => *plan,
            Decision::NeedKey(kind) => match self.decide(Some(&generate(kind))) {
                Decision::Plan(plan) => *plan,
                Decision::NeedKey(kind) => panic!("asked for a {kind} key twice"),
            },
        }
    }

    /// Reconciles like the operator: apply each write, decide again, until
    /// nothing is left; the final status is stored as the API server would.
    fn reconcile(&mut self) -> Plan {
        for _ in 0..8 {
            let plan = self.plan();
            self.assert_no_key_material(&plan);
            let Some(write) = plan.write else {
                self.sk.status = Some(plan.status.clone());
                return plan;
            };
            self.events.extend(plan.events);
            self.apply(write);
        }
        panic!("no convergence after 8 writes at {}", self.now);
    }

    fn apply(&mut self, write: Write) {
        self.writes += 1;
        match write {
            Write::Secret(s) => self.secret = Some(s),
            Write::ConfigMap(c) => self.cm = Some(c),
        }
        if self.keep_snapshots {
            self.snapshots.push((self.secret.clone(), self.cm.clone()));
        }
        self.check_invariants();
    }

    /// Advances the clock to each requeue time up to `end`, reconciling there.
    fn run_until(&mut self, end: Timestamp) {
        loop {
            let plan = self.reconcile();
            match plan.requeue_at {
                Some(next) if next <= end => {
                    assert!(next > self.now, "requeue at {next} is not after now {}", self.now);
                    self.now = next;
                }
                _ => break,
            }
        }
        self.now = end;
        self.reconcile();
    }

    fn slots(&self) -> Slots {
        self.secret.as_ref().map(|s| Slots::parse(&secret_data(s)).expect("our Secret parses")).unwrap_or_default()
    }

    fn active(&self) -> Option<String> {
        self.slots().active_kid().map(str::to_owned)
    }

    fn next(&self) -> Option<String> {
        self.slots().next_kid().map(str::to_owned)
    }

    /// Kids a verifier would accept, parsed strictly like the sidecar does.
    fn jwks(&self) -> BTreeSet<String> {
        let Some(text) = self.cm.as_ref().and_then(|c| c.data.as_ref()?.get(contract::JWKS).cloned()) else {
            return BTreeSet::new();
        };
        let parsed = JwkSet::parse(text.as_bytes()).expect("valid JWKS");
        assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
        parsed.keys.into_iter().map(|k| k.kid).collect()
    }

    /// The lifecycle records the Secret holds.
    fn records(&self) -> BTreeMap<String, KeyStatus> {
        self.lifecycle().keys.into_iter().map(|r| (r.status.key_id.clone(), r.status)).collect()
    }

    fn lifecycle(&self) -> Lifecycle {
        let data = self.secret.as_ref().and_then(|s| s.data.as_ref()).expect("Secret data");
        data.get(contract::LIFECYCLE)
            .map(|v| Lifecycle::parse(&v.0).expect("lifecycle.json parses"))
            .unwrap_or_default()
    }

    fn revoked(&self, kid: &str) -> bool {
        self.sk.spec.revoked_key_ids.contains(kid)
    }

    fn check_invariants(&mut self) {
        let now = self.now;
        let spec = self.sk.spec.validate("api").expect("valid spec");
        let published = self.jwks();
        self.published_since.retain(|k, _| published.contains(k));
        for kid in &published {
            self.published_since.entry(kid.clone()).or_insert(now);
        }
        let slots = self.slots();
        self.persisted.extend([slots.active_kid(), slots.next_kid()].into_iter().flatten().map(str::to_owned));

        // Persist before publish: no published key whose private key was never stored.
        for kid in &published {
            assert!(self.persisted.contains(kid), "{now}: {kid} published but never persisted");
        }
        // 1. The active key is published (a revoked one is withdrawn on purpose).
        if let Some(active) = slots.active_kid().filter(|k| !self.revoked(k)) {
            assert!(published.contains(active), "{now}: active {active} is not in the JWKS {published:?}");
        }
        // 2. Published >= prePublish before signing, except the first key and
        //    the replacement of a revoked key. An issuer whose Secret lost its
        //    active key keeps signing with the one it has in memory.
        let previous = self.signing.as_ref().map(|(k, _)| k.clone());
        let active = slots.active_kid().map(str::to_owned).or(previous.clone());
        if active != previous {
            if let Some(new) = &active {
                let emergency = previous.as_deref().is_none_or(|p| self.revoked(p));
                let since = self.published_since.get(new).copied().unwrap_or(now);
                if !emergency {
                    let waited = now.duration_since(since);
                    assert!(
                        waited >= jiff::SignedDuration::try_from(spec.pre_publish).expect("fits"),
                        "{now}: {new} signs after only {waited:?} in the JWKS"
                    );
                }
            }
            if let Some(old) = previous {
                self.stopped.insert(old, now);
            }
            self.signing = active.map(|k| (k, now));
        }
        // 3. A retired key stays published for retain, unless revoked.
        for (kid, stopped) in &self.stopped {
            let until = add(*stopped, spec.retain);
            if now < until && !self.revoked(kid) {
                assert!(published.contains(kid), "{now}: {kid} stopped at {stopped} but left the JWKS before {until}");
            }
        }
        // Revoked keys are never published.
        for kid in &published {
            assert!(!self.revoked(kid), "{now}: revoked {kid} is published");
        }
        // 4. No key material outside the Secret, and nothing but the JWKS in the ConfigMap.
        let cm = serde_json::to_string(&self.cm).expect("json");
        assert!(!cm.contains("PRIVATE KEY"), "private key material in the ConfigMap");
        assert!(!cm.contains("sigil.dev/keys"), "state in the ConfigMap");
        // 5. The state stays bounded.
        if self.secret.is_some() {
            let retired = self.records().values().filter(|r| r.state == KeyState::Retired).count();
            assert!(retired <= MAX_RETIRED_KEYS, "{now}: {retired} retired keys");
        }
    }

    fn assert_no_key_material(&self, plan: &Plan) {
        let status = serde_json::to_string(&plan.status).expect("json");
        let events = format!("{:?}", plan.events);
        let pems: Vec<String> = self
            .secret
            .iter()
            .flat_map(|s| s.data.iter().flatten())
            .filter(|(k, _)| k.ends_with(".pem"))
            .map(|(_, v)| String::from_utf8_lossy(&v.0).lines().nth(1).unwrap_or_default().to_owned())
            .collect();
        for text in [&status, &events] {
            assert!(!text.contains("PRIVATE KEY"), "key material in {text}");
            for line in &pems {
                assert!(!text.contains(line.as_str()), "PEM content leaked into {text}");
            }
        }
    }

    fn reasons(&self) -> Vec<&'static str> {
        self.events.iter().map(|e| e.reason).collect()
    }

    fn ready(&self) -> (String, String) {
        let status = self.sk.status.as_ref().expect("status");
        let c = status.conditions.iter().find(|c| c.type_ == READY).expect("Ready");
        (c.status.clone(), c.reason.clone())
    }
}

fn ready_true() -> (String, String) {
    ("True".into(), reason::ACTIVE.into())
}

#[test]
fn create_publishes_then_activates_the_first_key() {
    let mut w = World::new(spec(serde_json::json!({})));
    let plan = w.reconcile();
    let active = w.active().expect("active key");
    assert_eq!(w.next(), None);
    assert_eq!(w.jwks(), BTreeSet::from([active.clone()]));
    // Secret(next) -> ConfigMap(publish) -> Secret(record as published) -> Secret(activate).
    assert_eq!(w.writes, 4);
    assert_eq!(w.reasons(), ["KeyGenerated", "KeyPublished", "KeyActivated"]);
    let record = &w.records()[&active];
    assert_eq!(
        (record.state, record.published_at.0, record.activated_at.as_ref().map(|t| t.0)),
        (KeyState::Active, at(0), Some(at(0)))
    );
    assert_eq!(w.ready(), ready_true());
    let status = w.sk.status.clone().expect("status");
    assert_eq!(status.active_key_id.as_deref(), Some(active.as_str()));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.next_rotation_time.map(|t| t.0), Some(at(60)));
    // The next step is generating the successor at every - prePublish.
    assert_eq!(plan.requeue_at, Some(at(50)));
    // Objects carry labels and a controller ownerReference.
    let secret = w.secret.as_ref().expect("secret");
    assert_eq!(secret.metadata.name.as_deref(), Some("api-signing-key"));
    assert_eq!(secret.metadata.namespace.as_deref(), Some("team"));
    assert_eq!(secret.type_.as_deref(), Some(contract::SECRET_TYPE));
    let owner: &OwnerReference = &secret.metadata.owner_references.as_ref().expect("owners")[0];
    assert_eq!((owner.uid.as_str(), owner.controller, owner.kind.as_str()), (UID, Some(true), "SigningKey"));
    assert_eq!(w.cm.as_ref().and_then(|c| c.metadata.name.clone()).as_deref(), Some("api-jwks"));
    assert_eq!(w.cm.as_ref().and_then(|c| c.metadata.labels.clone()), Some(contract::labels("api")));
}

#[test]
fn an_up_to_date_signing_key_causes_no_write() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.reconcile();
    let (writes, events) = (w.writes, w.events.len());
    for minute in [0, 1, 30, 49] {
        w.now = at(minute);
        let plan = w.plan();
        assert!(plan.write.is_none(), "write at minute {minute}: {:?}", plan.write);
        assert!(plan.events.is_empty());
        assert_eq!(Some(&plan.status), w.sk.status.as_ref(), "status changes at minute {minute}");
    }
    assert_eq!((w.writes, w.events.len()), (writes, events));
}

#[test]
fn scheduled_rotation_pre_publishes_activates_retires_and_removes() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.reconcile();
    let first = w.active().expect("first");

    // :50 the successor is generated and published, not yet signing.
    w.now = at(50);
    let plan = w.reconcile();
    let second = w.next().expect("next key");
    assert_eq!(w.active().as_deref(), Some(first.as_str()));
    assert_eq!(w.jwks(), BTreeSet::from([first.clone(), second.clone()]));
    assert_eq!(w.records()[&second].state, KeyState::Next);
    assert_eq!(w.records()[&second].published_at.0, at(50));
    assert_eq!(plan.requeue_at, Some(at(60)));
    let status = w.sk.status.clone().expect("status");
    assert_eq!(status.next_key_id.as_deref(), Some(second.as_str()));
    assert_eq!(status.next_rotation_time.map(|t| t.0), Some(at(60)));

    // A second before the rotation nothing happens.
    w.now = at(60).checked_sub(jiff::SignedDuration::from_secs(1)).expect("ok");
    assert!(w.plan().write.is_none());

    // :60 the successor signs, the first key retires and stays published.
    w.now = at(60);
    let plan = w.reconcile();
    assert_eq!(w.active().as_deref(), Some(second.as_str()));
    assert_eq!(w.next(), None);
    assert_eq!(w.jwks(), BTreeSet::from([first.clone(), second.clone()]));
    let retired = &w.records()[&first];
    assert_eq!(retired.state, KeyState::Retired);
    assert_eq!(retired.retired_at.as_ref().map(|t| t.0), Some(at(60)));
    assert_eq!(retired.remove_at.as_ref().map(|t| t.0), Some(at(90)));
    assert_eq!(w.records()[&second].activated_at.as_ref().map(|t| t.0), Some(at(60)));
    assert_eq!(plan.requeue_at, Some(at(90)), "removal comes before the next generation at :110");

    // :90 the retired key leaves the JWKS.
    w.now = at(90);
    let plan = w.reconcile();
    assert_eq!(w.jwks(), BTreeSet::from([second.clone()]));
    assert_eq!(plan.requeue_at, Some(at(110)));
    assert_eq!(
        w.reasons(),
        [
            "KeyGenerated",
            "KeyPublished",
            "KeyActivated", // creation
            "KeyGenerated",
            "KeyPublished", // :50
            "KeyActivated",
            "KeyRetired", // :60
            "KeyRemoved", // :90
        ]
    );
    assert_eq!(w.ready(), ready_true());
}

#[test]
fn revoking_the_active_key_replaces_it_at_once() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.reconcile();
    let first = w.active().expect("first");
    w.now = at(5);
    w.sk.spec.revoked_key_ids.insert(first.clone());
    w.reconcile();
    let second = w.active().expect("replacement");
    assert_ne!(second, first);
    assert_eq!(w.jwks(), BTreeSet::from([second.clone()]), "the revoked key left the JWKS at once");
    assert!(!w.records().contains_key(&first));
    assert_eq!(w.records()[&second].activated_at.as_ref().map(|t| t.0), Some(at(5)));
    let warnings: Vec<_> = w.events.iter().filter(|e| e.warning).map(|e| e.reason).collect();
    assert_eq!(warnings, ["KeyRevoked", "KeyRevoked"], "withdrawal and replacement are both reported");
    assert_eq!(w.ready(), ready_true());
    // The new key runs a full period from its activation.
    assert_eq!(w.reconcile().requeue_at, Some(at(55)));
}

#[test]
fn revoking_a_retired_key_withdraws_only_it() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.run_until(at(60));
    let active = w.active().expect("active");
    let retired: Vec<String> = w.jwks().into_iter().filter(|k| *k != active).collect();
    assert_eq!(retired.len(), 1);
    w.now = at(61);
    w.sk.spec.revoked_key_ids.insert(retired[0].clone());
    let writes = w.writes;
    w.reconcile();
    assert_eq!(w.jwks(), BTreeSet::from([active.clone()]));
    assert_eq!(w.active(), Some(active));
    assert_eq!(w.writes, writes + 2, "the ConfigMap withdraws it, then the Secret drops its record");
    assert!(!w.records().contains_key(&retired[0]));
    assert_eq!(w.events.last().map(|e| (e.warning, e.reason)), Some((true, "KeyRevoked")));
}

#[test]
fn revoking_the_next_key_withdraws_it_and_publishes_another() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.run_until(at(50));
    let next = w.next().expect("next");
    w.now = at(52);
    w.sk.spec.revoked_key_ids.insert(next.clone());
    w.reconcile();
    let replacement = w.next().expect("a new next key");
    assert_ne!(replacement, next);
    assert!(!w.jwks().contains(&next));
    assert_eq!(w.records()[&replacement].published_at.0, at(52));
    // It still gets its full pre-publication: activation at :62, not :60.
    assert_eq!(w.reconcile().requeue_at, Some(at(62)));
    w.run_until(at(62));
    assert_eq!(w.active(), Some(replacement));
}

#[test]
fn manual_rotation_honours_pre_publish_and_acts_once() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.reconcile();
    let first = w.active().expect("first");
    w.sk.metadata.annotations = Some(BTreeMap::from([(contract::ANNOTATION_ROTATE.into(), "1".into())]));
    w.now = at(5);
    let plan = w.reconcile();
    let second = w.next().expect("rotation started");
    assert_eq!(w.active().as_deref(), Some(first.as_str()));
    assert_eq!(plan.requeue_at, Some(at(15)), "prePublish still applies");
    w.run_until(at(15));
    assert_eq!(w.active().as_deref(), Some(second.as_str()));
    assert_eq!(w.lifecycle().rotate_handled.as_deref(), Some("1"));
    // The same value does not rotate again: the next rotation is on schedule.
    w.now = at(20);
    let plan = w.reconcile();
    assert_eq!(w.next(), None);
    assert_eq!(plan.requeue_at, Some(at(45)), "the first key's removal");
    let status = w.sk.status.clone().expect("status");
    assert_eq!(status.next_rotation_time.map(|t| t.0), Some(at(75)), "a full period after :15");
    // A new value does.
    w.sk.metadata.annotations = Some(BTreeMap::from([(contract::ANNOTATION_ROTATE.into(), "2".into())]));
    w.reconcile();
    assert!(w.next().is_some());
}

#[test]
fn a_spec_change_rolls_to_the_new_kind_through_a_normal_rotation() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.reconcile();
    w.now = at(5);
    w.sk.spec.algorithm = sigil_api::Algorithm::EdDSA;
    w.sk.metadata.generation = Some(2);
    let plan = w.reconcile();
    let next = w.slots().next.expect("a key of the new kind is pre-published");
    assert_eq!(next.algorithm(), sigil_api::Algorithm::EdDSA);
    assert_eq!(w.slots().active.map(|k| k.algorithm()), Some(sigil_api::Algorithm::ES256));
    assert_eq!(plan.requeue_at, Some(at(15)));
    assert_eq!(w.sk.status.as_ref().and_then(|s| s.observed_generation), Some(2));
    w.run_until(at(15));
    assert_eq!(w.slots().active.map(|k| k.algorithm()), Some(sigil_api::Algorithm::EdDSA));
    let alg = w.secret.as_ref().and_then(|s| s.data.as_ref()?.get(contract::ALG).cloned()).expect("alg");
    assert_eq!(alg.0, b"EdDSA");
}

#[test]
fn every_crash_point_of_a_rotation_resumes_safely_even_without_status() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.run_until(at(100));
    let final_jwks = w.jwks();
    let final_active = w.active();
    // Creation 4 writes, :50 three, :60 one, :90 two.
    assert_eq!(w.snapshots.len(), 10);
    for (i, (secret, cm)) in w.snapshots.clone().into_iter().enumerate() {
        // A fresh operator with no memory and no status, on the objects a crash left.
        let mut r = World::resume(w.sk.spec.clone(), secret, cm, at(100));
        let plan = r.reconcile();
        assert!(r.active().is_some(), "snapshot {i}: no active key after recovery");
        let active = r.active().unwrap_or_default();
        assert!(r.jwks().contains(&active), "snapshot {i}: active key unpublished after recovery");
        assert!(plan.requeue_at.is_some_and(|t| t > at(100)), "snapshot {i}");
    }
    // The crash-free run and the last snapshot agree.
    let mut r = World::resume(w.sk.spec.clone(), w.secret.clone(), w.cm.clone(), at(100));
    r.reconcile();
    assert_eq!((r.jwks(), r.active(), r.writes), (final_jwks, final_active, 0));
}

#[test]
fn next_key_stored_but_not_yet_published_is_published_before_anything_else() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.reconcile();
    let active = w.active().expect("active");
    // Crash right after the Secret got next.pem at :50.
    w.now = at(50);
    let Write::Secret(secret) = w.plan().write.expect("write") else { panic!("the Secret is written first") };
    w.secret = Some(secret);
    let next = w.next().expect("next stored");
    assert!(!w.jwks().contains(&next));
    // Restart at :70, after the scheduled activation time: publish first, then wait prePublish.
    w.now = at(70);
    let Some(Write::ConfigMap(cm)) = w.plan().write else { panic!("the ConfigMap catches up first") };
    w.cm = Some(cm);
    assert!(w.jwks().contains(&next));
    let plan = w.reconcile();
    assert_eq!(w.active(), Some(active), "no activation before prePublish has passed");
    assert_eq!(plan.requeue_at, Some(at(80)));
}

#[test]
fn activation_retires_the_old_key_in_the_same_write() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.run_until(at(50));
    let (old, new) = (w.active().expect("active"), w.next().expect("next"));
    w.now = at(60);
    let Some(Write::Secret(secret)) = w.plan().write else { panic!("activation is a Secret write") };
    w.secret = Some(secret);
    // The activating write alone holds the whole new state: a crash right
    // after it loses nothing, and the old key's public half is kept.
    let records = w.records();
    assert_eq!(records[&new].state, KeyState::Active);
    assert_eq!(records[&old].state, KeyState::Retired);
    assert_eq!(records[&old].retired_at.as_ref().map(|t| t.0), Some(at(60)));
    let kept = w.lifecycle().keys.into_iter().find(|r| r.status.key_id == old).and_then(|r| r.jwk);
    assert_eq!(kept.map(|j| j.kid), Some(old.clone()));
    w.sk.status = None;
    w.now = at(62);
    let plan = w.reconcile();
    assert_eq!(w.jwks(), BTreeSet::from([old, new]));
    assert_eq!(w.next(), None, "no second key is generated");
    assert_eq!(plan.requeue_at, Some(at(90)));
}

#[test]
fn first_key_crash_between_secret_and_config_map() {
    let mut w = World::new(spec(serde_json::json!({})));
    let Some(Write::Secret(secret)) = w.plan().write else { panic!("the private key is persisted first") };
    let data = secret.data.clone().expect("data");
    assert!(!data.contains_key(contract::PRIVATE_KEY), "the first key is not active before it is published");
    assert!(data.contains_key(contract::NEXT_PRIVATE_KEY));
    w.secret = Some(secret);
    let stored = w.next().expect("stored");
    w.now = at(3);
    w.reconcile();
    assert_eq!(w.active(), Some(stored), "the stored key is used, not a new one");
}

#[test]
fn lost_status_is_rebuilt_from_the_objects_without_writes() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.run_until(at(70));
    let before = w.sk.status.clone().expect("status");
    assert_eq!(before.keys.len(), 2);
    w.sk.status = None;
    let writes = w.writes;
    let plan = w.reconcile();
    assert_eq!(w.writes, writes);
    let after = plan.status;
    assert_eq!(after.keys, before.keys);
    assert_eq!(after.active_key_id, before.active_key_id);
    assert_eq!(after.next_rotation_time, before.next_rotation_time);
    assert_eq!(after.conditions[0].status, "True");
}

/// Deleting the Secret is not a revocation: the issuer may still sign with
/// the key it holds in memory, so that key stays published and the
/// replacement is pre-published like any new key (file-mounted verifiers
/// need the time). A leaked key is withdrawn with revokedKeyIds instead.
#[test]
fn a_deleted_secret_keeps_its_keys_published_and_pre_publishes_the_replacement() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.run_until(at(61));
    let lost = w.active().expect("active");
    let retired: Vec<String> = w.jwks().into_iter().filter(|k| *k != lost).collect();
    assert_eq!(retired.len(), 1);
    w.secret = None;
    w.now = at(70);
    let plan = w.reconcile();
    let new = w.next().expect("a replacement is pre-published");
    assert_eq!(w.active(), None, "the replacement does not sign before prePublish");
    assert_eq!(w.jwks(), BTreeSet::from([lost.clone(), new.clone(), retired[0].clone()]));
    assert_eq!(w.records()[&lost].state, KeyState::Active, "it may still sign from the issuer's memory");
    assert_eq!(plan.requeue_at, Some(at(80)));
    let warning = w.events.iter().find(|e| e.reason == "SecretLost").expect("SecretLost event");
    assert!(warning.warning && warning.note.contains("revokedKeyIds"), "{}", warning.note);
    w.run_until(at(80));
    assert_eq!(w.active(), Some(new));
    let record = &w.records()[&lost];
    assert_eq!(record.state, KeyState::Retired);
    assert_eq!(
        record.remove_at.as_ref().map(|t| t.0),
        Some(at(110)),
        "retain counts from the replacement's activation"
    );
    assert_eq!(w.records()[&retired[0]].remove_at.as_ref().map(|t| t.0), Some(at(90)));
}

/// Without status too, nothing vouches for the ConfigMap's keys: they go.
#[test]
fn a_deleted_secret_and_lost_status_start_over() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.reconcile();
    let lost = w.active().expect("active");
    w.secret = None;
    w.sk.status = None;
    w.signing = None;
    w.now = at(10);
    w.reconcile();
    assert!(!w.jwks().contains(&lost));
    assert!(w.active().is_some_and(|k| k != lost));
}

fn foreign<K: Resource<DynamicType = ()> + Default>(name: &str) -> K {
    let mut obj = K::default();
    *obj.meta_mut() = ObjectMeta { name: Some(name.into()), namespace: Some("team".into()), ..ObjectMeta::default() };
    obj
}

#[test]
fn someone_elses_secret_or_config_map_is_never_touched() {
    for (secret, cm, want) in [
        (Some(foreign::<Secret>("api-signing-key")), None, reason::SECRET_CONFLICT),
        (None, Some(foreign::<ConfigMap>("api-jwks")), reason::CONFIG_MAP_CONFLICT),
    ] {
        let mut w = World::new(spec(serde_json::json!({})));
        (w.secret, w.cm) = (secret.clone(), cm.clone());
        let plan = w.reconcile();
        assert_eq!(w.writes, 0);
        assert_eq!((w.secret.clone(), w.cm.clone()), (secret, cm));
        assert_eq!(w.ready(), ("False".into(), want.into()));
        assert_eq!(plan.events.len(), 1);
        assert!(plan.events[0].warning && plan.events[0].reason == "Conflict");
        assert_eq!(plan.requeue_at, Some(add(at(0), CONFLICT_RECHECK)));
        // Reported once, not on every recheck.
        assert!(w.reconcile().events.is_empty());
    }
    // An ownerReference to another SigningKey (other uid) is a conflict too.
    let mut w = World::new(spec(serde_json::json!({})));
    w.reconcile();
    let mut secret = w.secret.clone().expect("secret");
    secret.metadata.owner_references.as_mut().expect("owners")[0].uid = "someone-else".into();
    w.secret = Some(secret);
    let writes = w.writes;
    w.reconcile();
    assert_eq!((w.writes, w.ready().1), (writes, reason::SECRET_CONFLICT.to_owned()));
}

#[test]
fn an_invalid_spec_is_reported_and_waits_for_a_change() {
    let mut w = World::new(spec(serde_json::json!({"keySize": 2048})));
    let plan = w.reconcile();
    assert_eq!(w.writes, 0);
    assert_eq!(plan.requeue_at, None);
    assert_eq!(w.ready(), ("False".into(), reason::INVALID_SPEC.into()));
    let message = &w.sk.status.as_ref().expect("status").conditions[0].message;
    assert!(message.contains("keySize applies only to RSA"), "{message}");
    assert_eq!(plan.events.iter().map(|e| (e.warning, e.reason)).collect::<Vec<_>>(), [(true, "InvalidSpec")]);
    assert!(w.reconcile().events.is_empty(), "not repeated");
}

#[test]
fn an_unreadable_secret_of_ours_is_left_alone() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.reconcile();
    let mut secret = w.secret.clone().expect("secret");
    secret.data.as_mut().expect("data").insert(contract::KID.into(), k8s_openapi::ByteString(b"tampered".to_vec()));
    w.secret = Some(secret.clone());
    let plan = w.plan();
    assert!(plan.write.is_none());
    assert_eq!(plan.requeue_at, None);
    assert_eq!(plan.events[0].reason, "SecretInvalid");
    assert!(plan.events[0].note.contains("says \"tampered\""), "{}", plan.events[0].note);
}

#[test]
fn a_longer_retain_keeps_retired_keys_longer() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.run_until(at(60));
    w.sk.spec.rotation.retain = "45m".into();
    w.now = at(61);
    let plan = w.reconcile();
    assert_eq!(plan.requeue_at, Some(at(105)));
    w.run_until(at(100));
    assert_eq!(w.jwks().len(), 2, "still retained at :100");
}

#[test]
fn a_damaged_config_map_is_rewritten_from_the_secret() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.reconcile();
    let active = w.active().expect("active");
    let mut cm = w.cm.clone().expect("cm");
    cm.data = Some(BTreeMap::from([(contract::JWKS.into(), "garbage".into())]));
    w.cm = Some(cm);
    w.now = at(1);
    w.reconcile();
    assert_eq!(w.jwks(), BTreeSet::from([active]));
    assert!(w.reasons().contains(&"JwksRepaired"));
}

/// Hours of rotations with reconciles at odd moments between the scheduled
/// ones; every write is checked against the invariants by the simulator.
#[test]
fn invariants_hold_across_many_rotations_and_extra_reconciles() {
    let mut w = World::new(spec(serde_json::json!({})));
    let mut minute = 0;
    while minute < 6 * 60 {
        w.now = at(minute);
        let plan = w.reconcile();
        if let Some(next) = plan.requeue_at {
            // Never a poll: the requeue time is a real transition.
            assert!(next > w.now);
        }
        minute += 7; // out of phase with every, prePublish and retain
    }
    w.run_until(at(6 * 60 + 30));
    let activations = w.reasons().iter().filter(|r| **r == "KeyActivated").count();
    assert!(activations >= 6, "{activations} activations in 6.5h of hourly rotation");
    assert_eq!(w.ready(), ready_true());
}

#[test]
fn a_signing_key_being_deleted_is_left_to_the_garbage_collector() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.reconcile();
    // Foreground deletion: the collector removed the Secret first.
    w.sk.metadata.deletion_timestamp = Some(Time(at(1)));
    w.secret = None;
    w.now = at(1);
    let plan = w.reconcile();
    assert!(w.secret.is_none(), "no key is minted for a SigningKey that is going away");
    assert_eq!((plan.requeue_at, plan.events.len()), (None, 0));
}

#[test]
fn a_spec_change_during_pre_publication_replaces_the_unused_next_key() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.run_until(at(52));
    let old_next = w.next().expect("pre-published ES256 key");
    w.sk.spec.algorithm = sigil_api::Algorithm::EdDSA;
    let plan = w.reconcile();
    let next = w.slots().next.expect("replacement");
    assert_eq!(next.algorithm(), sigil_api::Algorithm::EdDSA);
    assert!(!w.jwks().contains(&old_next), "the never-used key is withdrawn");
    assert_eq!(plan.requeue_at, Some(at(62)), "the replacement gets its full prePublish");
    w.run_until(at(62));
    assert_eq!(w.slots().active.map(|k| k.algorithm()), Some(sigil_api::Algorithm::EdDSA));
}

#[test]
fn labels_removed_by_someone_are_restored_without_touching_keys() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.reconcile();
    let before = w.secret.clone().expect("secret");
    let mut stripped = before.clone();
    stripped.metadata.labels = None;
    w.secret = Some(stripped);
    let writes = w.writes;
    w.reconcile();
    assert_eq!(w.writes, writes + 1);
    let after = w.secret.clone().expect("secret");
    assert_eq!(after.metadata.labels, before.metadata.labels);
    assert_eq!(after.data, before.data, "the keys are unchanged");
}

#[test]
fn a_debug_printed_plan_shows_no_key_material() {
    let w = World::new(spec(serde_json::json!({})));
    let plan = w.plan();
    let Some(Write::Secret(secret)) = &plan.write else { panic!("the first write is the Secret") };
    let pem = String::from_utf8_lossy(&secret.data.as_ref().expect("data")[contract::NEXT_PRIVATE_KEY].0).into_owned();
    let printed = format!("{plan:?}");
    assert!(printed.contains("next.pem"), "{printed}");
    assert!(!printed.contains("PRIVATE KEY") && !printed.contains(pem.lines().nth(1).unwrap_or("-")), "{printed}");
    // ByteString's own Debug prints the bytes as numbers.
    let as_numbers = format!("{:?}", &pem.as_bytes()[..12]);
    assert!(!printed.contains(as_numbers.trim_matches(['[', ']'])), "{printed}");
}

/// Anyone with `patch configmaps` (the built-in `edit` role) can write the
/// JWKS ConfigMap. The operator overwrites it from the Secret and says so.
#[test]
fn a_planted_jwk_in_the_config_map_is_removed_with_a_warning() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.reconcile();
    let active = w.active().expect("active");
    let attacker = PrivateKey::generate(sigil_api::Algorithm::ES256, None).expect("generate");
    let mut cm = w.cm.clone().expect("cm");
    let mut set: JwkSet = serde_json::from_str(&cm.data.as_ref().expect("data")[contract::JWKS]).expect("jwks");
    set.keys.push(attacker.public_jwk().clone());
    cm.data = Some(BTreeMap::from([(contract::JWKS.into(), set.to_json())]));
    w.cm = Some(cm);
    w.now = at(1);
    let writes = w.writes;
    let plan = w.reconcile();
    assert_eq!(w.jwks(), BTreeSet::from([active]));
    assert_eq!(w.writes, writes + 1, "one ConfigMap write; the Secret is the truth and stays as it was");
    let warning = w.events.iter().find(|e| e.reason == "UnknownKeyRemoved").expect("a Warning event");
    assert!(warning.warning && warning.key_id.as_deref() == Some(attacker.kid()), "{warning:?}");
    assert!(!plan.status.keys.iter().any(|r| r.key_id == attacker.kid()), "never copied into status");
}

/// The records of the old layout, forged: a planted key "retired" until 2099,
/// an active key "activated" in the future, a next key "published" long ago.
/// None of it is read; the annotation itself is removed.
#[test]
fn forged_lifecycle_records_in_the_config_map_are_ignored_and_removed() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.run_until(at(52));
    let (active, next) = (w.active().expect("active"), w.next().expect("next"));
    let attacker = PrivateKey::generate(sigil_api::Algorithm::ES256, None).expect("generate");
    let forged = serde_json::json!([
        {"keyId": attacker.kid(), "state": "Retired", "algorithm": "ES256", "publishedAt": "2026-01-01T00:00:00Z",
         "activatedAt": "2026-01-01T00:00:00Z", "retiredAt": "2099-01-01T00:00:00Z", "removeAt": "2099-01-02T00:00:00Z"},
        {"keyId": active, "state": "Active", "algorithm": "ES256", "publishedAt": "2026-01-01T00:00:00Z",
         "activatedAt": "2099-01-01T00:00:00Z"},
        {"keyId": next, "state": "Next", "algorithm": "ES256", "publishedAt": "2020-01-01T00:00:00Z"}
    ]);
    let mut cm = w.cm.clone().expect("cm");
    let mut set: JwkSet = serde_json::from_str(&cm.data.as_ref().expect("data")[contract::JWKS]).expect("jwks");
    set.keys.push(attacker.public_jwk().clone());
    cm.data = Some(BTreeMap::from([(contract::JWKS.into(), set.to_json())]));
    cm.metadata.annotations = Some(BTreeMap::from([("sigil.dev/keys".to_owned(), forged.to_string())]));
    w.cm = Some(cm);
    w.now = at(53);
    let plan = w.reconcile();
    assert!(!w.jwks().contains(attacker.kid()));
    assert!(w.cm.as_ref().and_then(|c| c.metadata.annotations.clone()).is_none_or(|a| a.is_empty()));
    assert_eq!(w.active(), Some(active.clone()), "the next key was not activated early");
    assert_eq!(plan.requeue_at, Some(at(60)), "activation stays at :60, a full prePublish after :50");
    w.run_until(at(60));
    assert_eq!(w.active(), Some(next), "rotation was not stopped");
}

/// Times in the Secret's records are trusted only up to now: a record that
/// claims a key was activated in the future cannot postpone its rotation
/// past a period from today.
#[test]
fn recorded_times_later_than_now_are_clamped() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.reconcile();
    let active = w.active().expect("active");
    let mut lifecycle = w.lifecycle();
    for r in &mut lifecycle.keys {
        r.status.activated_at = Some(Time(t("2099-01-01T00:00:00Z")));
        r.status.published_at = Time(t("2099-01-01T00:00:00Z"));
    }
    let mut secret = w.secret.clone().expect("secret");
    secret.data.as_mut().expect("data").insert(contract::LIFECYCLE.into(), ByteString(lifecycle.render().into_bytes()));
    w.secret = Some(secret);
    w.now = at(5);
    let plan = w.reconcile();
    assert_eq!(w.records()[&active].activated_at.as_ref().map(|t| t.0), Some(at(5)));
    assert_eq!(plan.requeue_at, Some(at(55)), "next generation a period after now less prePublish");
}

/// A damaged `jwks.json` loses nothing: retired keys are kept in the Secret.
#[test]
fn a_damaged_jwks_keeps_retired_keys_within_retain() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.run_until(at(61));
    let published = w.jwks();
    assert_eq!(published.len(), 2, "active and retired");
    for damage in ["garbage", "{\"keys\": []}", ""] {
        let mut cm = w.cm.clone().expect("cm");
        cm.data = Some(BTreeMap::from([(contract::JWKS.into(), damage.into())]));
        w.cm = Some(cm);
        w.now = add(w.now, Duration::from_secs(60));
        w.reconcile();
        assert_eq!(w.jwks(), published, "after {damage:?}");
    }
}

#[test]
fn an_unreadable_lifecycle_in_our_secret_is_left_alone() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.reconcile();
    let mut secret = w.secret.clone().expect("secret");
    secret.data.as_mut().expect("data").insert(contract::LIFECYCLE.into(), ByteString(b"{\"keys\": 7}".to_vec()));
    w.secret = Some(secret);
    let plan = w.plan();
    assert!(plan.write.is_none());
    assert_eq!(plan.events[0].reason, "SecretInvalid");
    assert!(plan.events[0].note.contains("lifecycle.json"), "{}", plan.events[0].note);
}

/// A Secret written before `lifecycle.json` existed: its records are rebuilt
/// from status, and a retired key's public half from the ConfigMap, but only
/// because it hashes to the id status recorded.
#[test]
fn a_secret_without_lifecycle_is_rebuilt_from_status_and_thumbprints() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.run_until(at(61));
    let published = w.jwks();
    let mut secret = w.secret.clone().expect("secret");
    secret.data.as_mut().expect("data").remove(contract::LIFECYCLE);
    w.secret = Some(secret);
    // A forged key under a retired key's id does not hash to it: refused.
    let active = w.active().expect("active");
    let retired = published.iter().find(|k| **k != active).expect("retired").clone();
    let mut tampered = w.clone_world_with_swapped_jwk(&retired);
    tampered.now = at(62);
    tampered.reconcile();
    assert!(!tampered.jwks().contains(&retired), "a JWK that does not match its kid is not recovered");
    // The genuine one is.
    w.now = at(62);
    w.reconcile();
    assert_eq!(w.jwks(), published);
    assert_eq!(w.records()[&retired].remove_at.as_ref().map(|t| t.0), Some(at(90)));
    assert!(w.reasons().contains(&"StateRecovered"));
}

impl World {
    /// This world with the ConfigMap's JWK for `kid` replaced by another key
    /// that claims the same id.
    fn clone_world_with_swapped_jwk(&self, kid: &str) -> World {
        let mut other = World::resume(self.sk.spec.clone(), self.secret.clone(), self.cm.clone(), self.now);
        other.sk.status = self.sk.status.clone();
        let mut cm = other.cm.clone().expect("cm");
        let mut set: JwkSet = serde_json::from_str(&cm.data.as_ref().expect("data")[contract::JWKS]).expect("jwks");
        let impostor = PrivateKey::generate(sigil_api::Algorithm::ES256, None).expect("generate");
        for k in &mut set.keys {
            if k.kid == kid {
                *k = impostor.public_jwk().clone();
                k.kid = kid.to_owned();
            }
        }
        cm.data = Some(BTreeMap::from([(contract::JWKS.into(), set.to_json())]));
        other.cm = Some(cm);
        // The retired key is meant to be lost here: no invariant tracks it.
        other.signing = self.signing.clone();
        other
    }
}

/// `every: 1m`, `retain: 30m` and a manual rotation requested at every
/// reconcile, for a simulated day: the state stays bounded (the old layout
/// outgrew its 256 KiB annotation within that day), rotation never wedges,
/// and every invariant holds after every write.
#[test]
fn the_state_stays_bounded_over_days_of_rotation_and_manual_requests() {
    let mut w = World::new(spec(serde_json::json!({
        "maxTokenLifetime": "1s",
        "rotation": {"every": "1m", "prePublish": "10s", "retain": "30m"}
    })));
    w.limits = Limits { min_pre_publish: Duration::from_secs(1) };
    w.keep_snapshots = false;
    let end = at(24 * 60);
    let mut request = 0u64;
    let mut largest = 0;
    while w.now < end {
        request += 1;
        w.sk.metadata.annotations = Some(BTreeMap::from([(contract::ANNOTATION_ROTATE.into(), request.to_string())]));
        let plan = w.reconcile();
        let size: usize =
            w.secret.as_ref().and_then(|s| s.data.as_ref()).map_or(0, |d| d.values().map(|v| v.0.len()).sum());
        largest = largest.max(size);
        let next = plan.requeue_at.expect("always a next transition");
        w.now = next.max(add(w.now, Duration::from_secs(1)));
    }
    let activations = w.reasons().iter().filter(|r| **r == "KeyActivated").count();
    assert!(activations >= 24 * 60, "{activations} activations in a day of 1m rotation");
    assert!(largest < 64 * 1024, "the Secret grew to {largest} bytes");
    let retired = w.records().values().filter(|r| r.state == KeyState::Retired).count();
    assert!(retired <= MAX_RETIRED_KEYS, "{retired}");
    assert_eq!(w.ready(), ready_true());
}

#[test]
fn a_pre_publish_below_the_operator_floor_is_refused_unless_lowered() {
    let mut w = World::new(spec(serde_json::json!({
        "maxTokenLifetime": "1m",
        "rotation": {"every": "1h", "prePublish": "30s", "retain": "30m"}
    })));
    w.reconcile();
    assert_eq!(w.writes, 0);
    assert_eq!(w.ready(), ("False".into(), reason::INVALID_SPEC.into()));
    let status = w.sk.status.clone().expect("status");
    assert!(status.conditions[0].message.contains("--min-pre-publish"), "{}", status.conditions[0].message);
    let timings = status.conditions.iter().find(|c| c.type_ == TIMINGS_ENFORCED).expect("TimingsEnforced");
    assert_eq!((timings.status.as_str(), timings.reason.as_str()), ("True", reason::FLOOR_ENFORCED));

    w.limits = Limits { min_pre_publish: Duration::from_secs(1) };
    w.reconcile();
    assert_eq!(w.ready(), ready_true());
    let status = w.sk.status.clone().expect("status");
    let timings = status.conditions.iter().find(|c| c.type_ == TIMINGS_ENFORCED).expect("TimingsEnforced");
    assert_eq!((timings.status.as_str(), timings.reason.as_str()), ("False", reason::FLOOR_LOWERED));
    assert!(timings.message.contains("test setting"), "{}", timings.message);
}

#[test]
fn the_secret_carries_the_max_token_lifetime_for_the_issuer() {
    let mut w = World::new(spec(serde_json::json!({})));
    w.reconcile();
    let data = w.secret.as_ref().and_then(|s| s.data.clone()).expect("data");
    assert_eq!(data[contract::MAX_TOKEN_LIFETIME].0, b"15m");
    w.sk.spec.max_token_lifetime = "10m".into();
    w.now = at(1);
    let writes = w.writes;
    w.reconcile();
    let data = w.secret.as_ref().and_then(|s| s.data.clone()).expect("data");
    assert_eq!((data[contract::MAX_TOKEN_LIFETIME].0.as_slice(), w.writes), (&b"10m"[..], writes + 1));
}
