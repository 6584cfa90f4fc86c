//! Leader election with a `coordination.k8s.io/v1` Lease, so that two replicas never both act.
//! kube-rs has no elector of its own; this is the client-go algorithm in a few lines: take the
//! Lease when it is free or expired, renew it well before it expires, and stop acting (the process
//! exits and restarts as a candidate) the moment a renewal fails. Writes use the Lease's
//! resourceVersion, so two candidates can never both win the same round.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tracing::{info, warn};

/// Timing of an election.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// How long a Lease holds without renewal.
    pub duration: Duration,
    /// How often the leader renews (well under `duration`).
    pub renew_every: Duration,
    /// How often a candidate retries.
    pub retry_every: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self::with_duration(Duration::from_secs(15))
    }
}

impl LeaseConfig {
    /// A Lease of `duration`, renewed every third of it (two renewals may fail before it
    /// lapses), and retried by candidates often enough to take over soon after it does.
    pub fn with_duration(duration: Duration) -> Self {
        Self {
            duration,
            renew_every: duration / 3,
            retry_every: (duration / 7).min(Duration::from_secs(2)),
        }
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    config: LeaseConfig,
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, config: LeaseConfig) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            config,
        }
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.name, identity = %self.identity, "became the leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(self.config.retry_every).await;
        }
    }

    /// Renews until a renewal fails; returns then, and the caller must stop acting.
    pub async fn hold(&self) {
        loop {
            tokio::time::sleep(self.config.renew_every).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => {}
                Ok(false) => {
                    warn!(lease = %self.name, "lost the lease to another replica");
                    return;
                }
                Err(e) => {
                    warn!(lease = %self.name, error = %e, "could not renew the lease");
                    return;
                }
            }
        }
    }

    /// One round: `Ok(true)` when this candidate holds the Lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let duration_secs = i32::try_from(self.config.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let expired = spec.renew_time.as_ref().is_none_or(|t| {
            let held = i64::from(spec.lease_duration_seconds.unwrap_or(duration_secs));
            t.0.as_second().saturating_add(held) < now.as_second()
        });
        if !ours && !expired {
            return Ok(false);
        }
        if !ours {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(duration_secs);
        spec.renew_time = Some(MicroTime(now));
        // replace() sends the resourceVersion we read: a concurrent winner makes this a 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}
