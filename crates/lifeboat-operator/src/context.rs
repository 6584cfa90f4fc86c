//! What every reconcile is handed: the client, the Event recorder, metrics and settings.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::warn;

use crate::config::AgentConfig;
use crate::metrics::Metrics;

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub agent: AgentConfig,
    written: StatusMemo,
    /// The metadata of every CronJob the policies own, kept by a watch (set by the BackupPolicy
    /// controller): a reconcile reads it instead of listing CronJobs, which at thousands of
    /// policies makes the API server filter every CronJob once per reconcile.
    pub cronjobs: std::sync::OnceLock<CronJobIndex>,
    /// Every DrillSchedule in scope, kept by a watch (set by the BackupPolicy controller): a
    /// policy's verified backups are read from its drills' records without a list per reconcile.
    pub drills: std::sync::OnceLock<
        kube::runtime::reflector::Store<kube::core::DeserializeGuard<lifeboat_api::DrillSchedule>>,
    >,
    /// The master key the namespaces' signing keys are derived from; without it no Job is made.
    pub signing_key: Option<crate::signing_key::MasterKeySecret>,
    /// Failed reconciles in a row per object (crate::controller::error_policy).
    pub failures: crate::controller::Failures,
}

/// CronJob metadata from a watch, and the generation of each CronJob right after this operator
/// applied it: a different generation later means someone else changed the spec.
pub struct CronJobIndex {
    pub store: kube::runtime::reflector::Store<
        kube::core::PartialObjectMeta<k8s_openapi::api::batch::v1::CronJob>,
    >,
    pub applied: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

/// The statuses this operator wrote in the last moments, by object uid. A reconcile triggered by
/// the operator's own writes (its CronJobs appearing, its status landing) often sees the object
/// from a cache that does not hold that status yet; without this it would write the same status
/// again and publish the same transitions twice. An entry expires after [`StatusMemo::FOR`], so an
/// outside edit of a status is corrected at the next reconcile after that.
#[derive(Default)]
struct StatusMemo {
    entries: std::sync::Mutex<std::collections::HashMap<String, (u64, std::time::Instant)>>,
}

impl StatusMemo {
    const FOR: std::time::Duration = std::time::Duration::from_secs(30);

    fn fingerprint(status: &[u8]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        status.hash(&mut h);
        h.finish()
    }

    /// Whether `status` is what was written for `uid` moments ago.
    fn recent(&self, uid: &str, status: &[u8]) -> bool {
        let Ok(entries) = self.entries.lock() else {
            return false;
        };
        entries
            .get(uid)
            .is_some_and(|(f, at)| *f == Self::fingerprint(status) && at.elapsed() < Self::FOR)
    }

    fn record(&self, uid: &str, status: &[u8]) {
        if let Ok(mut entries) = self.entries.lock() {
            let now = std::time::Instant::now();
            // Bounded: stale entries go whenever the map has grown.
            if entries.len() > 4096 {
                entries.retain(|_, (_, at)| at.elapsed() < Self::FOR);
            }
            entries.insert(uid.to_owned(), (Self::fingerprint(status), now));
        }
    }
}

impl Context {
    pub fn new(client: Client, metrics: Metrics, agent: AgentConfig) -> Self {
        let reporter = Reporter {
            controller: crate::config::FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            agent,
            written: StatusMemo::default(),
            cronjobs: std::sync::OnceLock::new(),
            drills: std::sync::OnceLock::new(),
            signing_key: None,
            failures: Default::default(),
        }
    }

    /// Where the master signing key is (`--signing-key-secret`).
    pub fn with_signing_key(mut self, secret: crate::signing_key::MasterKeySecret) -> Self {
        self.signing_key = Some(secret);
        self
    }
}

impl Context {
    /// Publishes an Event about `regarding`. `action` names what the Event is about
    /// (`Backup/orders-db`): the recorder folds repeats of the same type, reason and action into
    /// one series, so distinct subjects need distinct actions to stay distinct Events. A failure
    /// to publish is logged, never fatal.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: String,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action,
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, regarding).await {
            warn!(error = %e, reason, "publishing an Event");
        }
    }
}

impl Context {
    /// Writes `status` to `obj`'s status subresource by server-side apply, with the operator's
    /// one field manager (the same for every kind). Returns false, writing nothing, when this
    /// exact status was written moments ago (the reconcile saw a cache that lags its own write).
    pub async fn apply_status<K>(
        &self,
        obj: &K,
        status: &impl serde::Serialize,
    ) -> crate::error::Result<bool>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let patch = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
        let key = format!(
            "{}/{}",
            obj.uid().unwrap_or_default(),
            obj.meta().generation.unwrap_or_default()
        );
        let body = serde_json::to_vec(&patch)?;
        if self.written.recent(&key, &body) {
            return Ok(false);
        }
        let api = Api::<K>::namespaced(self.client.clone(), &obj.namespace().unwrap_or_default());
        let params = PatchParams::apply(crate::config::FIELD_MANAGER).force();
        api.patch_status(&obj.name_any(), &params, &Patch::Apply(&patch))
            .await
            .map_err(|source| crate::error::Error::ApplyStatus { source })?;
        self.written.record(&key, &body);
        Ok(true)
    }
}
