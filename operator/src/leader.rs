//! Leader election on a `coordination.k8s.io/v1` Lease, the protocol client-go
//! uses: the holder renews `renewTime` every `RETRY`; a candidate takes over
//! once it has seen the same record unchanged for `LEASE_DURATION` on its own
//! monotonic clock (so clock skew between replicas does not matter). Every
//! write is a replace with the read resourceVersion, so two candidates cannot
//! both win. It is small enough to own rather than add a crate for.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::{info, warn};

use crate::config::LeaseConfig;
use crate::error::{Error, Result};

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
}

impl Elector {
    pub fn new(client: Client, config: LeaseConfig) -> Elector {
        let api = Api::namespaced(client, &config.namespace);
        Elector { api, config, observed: None }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&mut self) -> Result<()> {
        let mut announced = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
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

    /// Renews the Lease until a renewal has failed for `RENEW_DEADLINE`;
    /// returns only then, with the error. The caller must stop reconciling.
    pub async fn hold(&mut self) -> Error {
        let mut last_renewal = Instant::now();
        loop {
            tokio::time::sleep(RETRY).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = Instant::now(),
                Ok(false) => return Error::LeaseLost(format!("{} was taken by another replica", self.config.name)),
                Err(error) => warn!(%error, lease = %self.config.name, "lease renewal failed"),
            }
            if last_renewal.elapsed() >= RENEW_DEADLINE {
                return Error::LeaseLost(format!("{} not renewed for {RENEW_DEADLINE:?}", self.config.name));
            }
        }
    }

    /// Gives the Lease up on shutdown so another replica takes over at once.
    pub async fn release(&mut self) {
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
