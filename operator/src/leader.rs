//! Leader election on a `coordination.k8s.io/v1` Lease, the protocol client-go
//! uses: the holder renews `renewTime` every `RETRY`; a candidate takes over
//! once it has seen the same record unchanged for `LEASE_DURATION` on its own
//! monotonic clock (so clock skew between replicas does not matter). Every
//! write is a replace with the read resourceVersion, so two candidates cannot
//! both win. It is small enough to own rather than add a crate for.
//!
//! Winning or renewing opens the [`Fence`] every write checks, for
//! `RENEW_DEADLINE` from when that request started: the record it wrote is
//! no older, so a candidate cannot take over before `LEASE_DURATION` after
//! that start, and the difference covers a write still in flight.

use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::{info, warn};

use crate::config::LeaseConfig;
use crate::error::{Error, Result};
use crate::fence::Fence;

const LEASE_DURATION: Duration = Duration::from_secs(15);
/// A leader that could not renew for this long stops before a candidate may
/// take over (after LEASE_DURATION), so two leaders never overlap.
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_secs(2);

pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The holder record last seen and when it was first seen unchanged.
    observed: Option<(LeaseSpec, Instant)>,
    fence: Fence,
}

impl Elector {
    pub fn new(client: Client, config: LeaseConfig) -> Elector {
        let api = Api::namespaced(client, &config.namespace);
        Elector { api, config, observed: None, fence: Fence::closed() }
    }

    /// The fence this elector opens while it holds the Lease.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&mut self) -> Result<()> {
        let mut announced = false;
        loop {
            let started = Instant::now();
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    self.fence.extend(started + RENEW_DEADLINE);
                    info!(lease = %self.config.name, identity = %self.config.identity, "became leader");
                    return Ok(());
                }
                Ok(false) if !announced => {
                    info!(lease = %self.config.name, "another replica leads; waiting for the lease");
                    announced = true;
                }
                Ok(false) => {}
                Err(error) => warn!(%error, lease = %self.config.name, "lease acquisition failed; retrying"),
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Renews the Lease until the fence closes: no renewal succeeded within
    /// `RENEW_DEADLINE`, or another replica holds the Lease. Returns only
    /// then, with the error; writes are already refused by that time. The
    /// caller must stop reconciling.
    pub async fn hold(&mut self) -> Error {
        loop {
            tokio::time::sleep(RETRY).await;
            // Past the deadline (the process may have been paused for any
            // time) another replica may lead already: renewing now would
            // reopen the fence to writes on a lease we lost sight of.
            if self.fence.check().is_err() {
                self.fence.close();
                return Error::LeaseLost(format!("{} not renewed for {RENEW_DEADLINE:?}", self.config.name));
            }
            let started = Instant::now();
            // A renewal hanging on a dead connection must not keep this loop
            // from noticing the deadline (writes are refused meanwhile anyway).
            let renewal = tokio::time::timeout(RENEW_DEADLINE, self.try_acquire_or_renew()).await;
            match renewal {
                Ok(Ok(true)) => self.fence.extend(started + RENEW_DEADLINE),
                Ok(Ok(false)) => {
                    self.fence.close();
                    return Error::LeaseLost(format!("{} was taken by another replica", self.config.name));
                }
                Ok(Err(error)) => warn!(%error, lease = %self.config.name, "lease renewal failed"),
                Err(_) => warn!(lease = %self.config.name, "lease renewal timed out"),
            }
        }
    }

    /// Gives the Lease up on shutdown so another replica takes over at once.
    /// Writes are refused from here on.
    pub async fn release(&mut self) {
        self.fence.close();
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else { return };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        match self.api.replace(&self.config.name, &PostParams::default(), &lease).await {
            Ok(_) => info!(lease = %self.config.name, "released lease"),
            Err(error) => warn!(%error, lease = %self.config.name, "could not release lease"),
        }
    }

    /// One round of the protocol: `Ok(true)` if we hold the Lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let now = MicroTime(jiff::Timestamp::now());
        let me = self.config.identity.clone();
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return lost_race(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let held_by_me = spec.holder_identity.as_deref() == Some(me.as_str());
        if !held_by_me && !self.expired(&spec) {
            return Ok(false);
        }
        let new = lease.spec.get_or_insert_with(LeaseSpec::default);
        if !held_by_me {
            new.holder_identity = Some(me);
            new.acquire_time = Some(now.clone());
            new.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        new.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
        new.renew_time = Some(now);
        // Replace carries the resourceVersion we read: a concurrent writer makes it fail.
        lost_race(self.api.replace(&self.config.name, &PostParams::default(), &lease).await)
    }

    /// Whether the holder has left `spec` unchanged for its lease duration,
    /// measured from when we first saw it.
    fn expired(&mut self, spec: &LeaseSpec) -> bool {
        if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
            return true;
        }
        let seen_since = match &self.observed {
            Some((seen, since)) if seen == spec => *since,
            _ => {
                self.observed = Some((spec.clone(), Instant::now()));
                return false;
            }
        };
        let duration = spec.lease_duration_seconds.map_or(LEASE_DURATION, |s| Duration::from_secs(s.max(0) as u64));
        seen_since.elapsed() >= duration
    }
}

/// A 409 on create or replace means another replica wrote first.
fn lost_race<T>(result: kube::Result<T>) -> Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::fixtures;

    const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/sigil/leases/sigil-operator";

    fn lease(holder: &str, renewed: &str, resource_version: &str) -> Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "sigil-operator", "namespace": "sigil", "resourceVersion": resource_version},
               "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed,
                        "leaseTransitions": 2}})
    }

    /// Starts one protocol round; the test then plays the API server.
    fn round(mut elector: Elector) -> tokio::task::JoinHandle<(Elector, bool)> {
        tokio::spawn(async move {
            let won = elector.try_acquire_or_renew().await.expect("round");
            (elector, won)
        })
    }

    /// The round's outcome; a round stuck on a call the test did not expect
    /// fails instead of hanging (paused time makes this immediate).
    async fn finish(task: tokio::task::JoinHandle<(Elector, bool)>) -> (Elector, bool) {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the round made a call the test did not answer")
            .expect("round")
    }

    /// Takeover is judged on our own clock: the holder's record must stay
    /// unchanged for a whole lease duration after we first saw it.
    #[tokio::test(start_paused = true)]
    async fn a_lease_is_taken_over_only_after_its_holder_stopped_renewing() {
        let (ctx, mut api) = fixtures::context();
        let config = LeaseConfig { name: "sigil-operator".into(), namespace: "sigil".into(), identity: "b".into() };
        let elector = Elector::new(ctx.client.clone(), config);
        let ok = http::StatusCode::OK;

        let first = lease("a", "2026-01-01T00:00:00.000000Z", "7");
        let task = round(elector);
        api.expect("GET", LEASE).await.respond(ok, &first);
        let (elector, won) = finish(task).await;
        assert!(!won, "a lease seen for the first time is never expired");

        tokio::time::advance(Duration::from_secs(10)).await;
        let task = round(elector);
        api.expect("GET", LEASE).await.respond(ok, &first);
        let (elector, won) = finish(task).await;
        assert!(!won, "10s unchanged is within the 15s duration");

        // The holder renews: our clock starts again.
        tokio::time::advance(Duration::from_secs(6)).await;
        let renewed = lease("a", "2026-01-01T00:00:12.000000Z", "8");
        let task = round(elector);
        api.expect("GET", LEASE).await.respond(ok, &renewed);
        let (elector, won) = finish(task).await;
        assert!(!won, "a renewed lease is not taken");

        tokio::time::advance(Duration::from_secs(16)).await;
        let task = round(elector);
        api.expect("GET", LEASE).await.respond(ok, &renewed);
        let call = api.expect("PUT", LEASE).await;
        assert_eq!(call.body["metadata"]["resourceVersion"], "8", "replace is conditional on what we read");
        assert_eq!(call.body["spec"]["holderIdentity"], "b");
        assert_eq!(call.body["spec"]["leaseTransitions"], 3);
        let body = call.body.clone();
        call.respond(ok, &body);
        let (_, won) = finish(task).await;
        assert!(won, "16s without renewal: taken over");
    }

    /// Wins the absent Lease at the current (paused) instant; the fence opens.
    async fn acquired(api: &mut fixtures::ApiServerVerifier, elector: Elector) -> Elector {
        let task = tokio::spawn(async move {
            let mut elector = elector;
            elector.acquire().await.expect("acquire");
            elector
        });
        api.expect("GET", LEASE).await.not_found();
        let call = api.expect("POST", "/apis/coordination.k8s.io/v1/namespaces/sigil/leases").await;
        let body = call.body.clone();
        call.respond(http::StatusCode::CREATED, &body);
        tokio::time::timeout(Duration::from_secs(60), task).await.expect("acquired").expect("task")
    }

    fn elector(ctx: &crate::reconcile::Context) -> Elector {
        let config = LeaseConfig { name: "sigil-operator".into(), namespace: "sigil".into(), identity: "b".into() };
        Elector::new(ctx.client.clone(), config)
    }

    /// A renewal keeps writes allowed for RENEW_DEADLINE from when its request
    /// started, not from when it was answered: the record it wrote is no
    /// older than that start, and candidates count from the record.
    #[tokio::test(start_paused = true)]
    async fn writes_are_allowed_for_the_renew_deadline_from_the_renewal_start() {
        let (ctx, mut api) = fixtures::context();
        let elector = elector(&ctx);
        let fence = elector.fence();
        assert!(matches!(fence.check(), Err(Error::NotLeader)), "no writes before the Lease is won");
        let mut elector = acquired(&mut api, elector).await;
        let start = Instant::now();
        fence.check().expect("the new leader writes");
        let holding = tokio::spawn(async move { elector.hold().await });

        // The first renewal starts after RETRY and is answered 7s later.
        let get = api.expect("GET", LEASE).await;
        assert_eq!(start.elapsed(), RETRY);
        tokio::time::advance(Duration::from_secs(7)).await;
        get.respond(http::StatusCode::OK, &lease("b", "2026-01-01T00:00:02.000000Z", "7"));
        let put = api.expect("PUT", LEASE).await;
        let body = put.body.clone();
        put.respond(http::StatusCode::OK, &body);

        // The next renewal starts at 11s and hangs: at 12s (2s + 10s) writes stop.
        let hanging = api.expect("GET", LEASE).await;
        assert_eq!(start.elapsed(), Duration::from_secs(11));
        fence.check().expect("within 10s of the last renewal's start");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(matches!(fence.check(), Err(Error::NotLeader)), "12s: 10s after the renewal started at 2s");

        // It fails; the next round finds the deadline passed and gives up without a request.
        let failure = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "InternalError",
                             "code": 500, "message": "etcd timeout"});
        hanging.respond(http::StatusCode::INTERNAL_SERVER_ERROR, &failure);
        let lost = tokio::time::timeout(Duration::from_secs(60), holding).await.expect("hold returns").expect("task");
        assert!(matches!(lost, Error::LeaseLost(_)), "{lost}");
        api.expect_silence().await;
    }

    /// A replica paused past its deadline (SIGSTOP, a frozen VM) must not
    /// renew when it wakes: another replica may lead by then.
    #[tokio::test(start_paused = true)]
    async fn a_replica_woken_after_its_deadline_does_not_renew() {
        let (ctx, mut api) = fixtures::context();
        let mut elector = acquired(&mut api, elector(&ctx)).await;
        let fence = elector.fence();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(matches!(fence.check(), Err(Error::NotLeader)));
        // A renewal would wait for an answer the test never gives: the timeout fails it.
        let lost = tokio::time::timeout(Duration::from_secs(60), elector.hold()).await.expect("no renewal attempted");
        assert!(matches!(lost, Error::LeaseLost(_)), "{lost}");
        api.expect_silence().await;
        assert!(matches!(fence.check(), Err(Error::NotLeader)), "closed for good");
    }

    /// A renewal that never gets an answer does not keep the replica running
    /// on a lease it can no longer vouch for.
    #[tokio::test(start_paused = true)]
    async fn a_hung_renewal_ends_in_a_lost_lease() {
        let (ctx, mut api) = fixtures::context();
        let mut elector = acquired(&mut api, elector(&ctx)).await;
        let holding = tokio::spawn(async move { elector.hold().await });
        let _unanswered = api.expect("GET", LEASE).await;
        let lost = tokio::time::timeout(Duration::from_secs(60), holding).await.expect("hold returns").expect("task");
        assert!(matches!(lost, Error::LeaseLost(_)), "{lost}");
    }

    /// Another replica took the Lease: writes stop at once, not at the deadline.
    #[tokio::test(start_paused = true)]
    async fn a_lease_taken_by_another_replica_closes_the_fence_at_once() {
        let (ctx, mut api) = fixtures::context();
        let mut elector = acquired(&mut api, elector(&ctx)).await;
        let fence = elector.fence();
        let holding = tokio::spawn(async move { elector.hold().await });
        api.expect("GET", LEASE).await.respond(http::StatusCode::OK, &lease("a", "2026-01-01T00:00:01.000000Z", "9"));
        let lost = tokio::time::timeout(Duration::from_secs(60), holding).await.expect("hold returns").expect("task");
        assert!(matches!(lost, Error::LeaseLost(_)), "{lost}");
        assert!(matches!(fence.check(), Err(Error::NotLeader)), "2s after winning, but lost");
    }

    #[tokio::test]
    async fn losing_the_replace_race_is_not_an_error() {
        let (ctx, mut api) = fixtures::context();
        let config = LeaseConfig { name: "sigil-operator".into(), namespace: "sigil".into(), identity: "b".into() };
        let elector = Elector::new(ctx.client.clone(), config);
        let task = tokio::spawn(async move {
            let mut elector = elector;
            elector.try_acquire_or_renew().await
        });
        api.expect("GET", LEASE).await.not_found();
        let call = api.expect("POST", "/apis/coordination.k8s.io/v1/namespaces/sigil/leases").await;
        assert_eq!(call.body["spec"]["holderIdentity"], "b");
        let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists",
                              "code": 409, "message": "exists"});
        call.respond(http::StatusCode::CONFLICT, &conflict);
        assert!(!task.await.expect("task").expect("a 409 is a lost race, not an error"));
    }
}
