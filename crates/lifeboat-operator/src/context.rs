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
        }
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
    /// one field manager (the same for every kind).
    pub async fn apply_status<K>(
        &self,
        obj: &K,
        status: &impl serde::Serialize,
    ) -> Result<(), kube::Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let patch = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
        let api = Api::<K>::namespaced(self.client.clone(), &obj.namespace().unwrap_or_default());
        let params = PatchParams::apply(crate::config::FIELD_MANAGER).force();
        api.patch_status(&obj.name_any(), &params, &Patch::Apply(&patch))
            .await?;
        Ok(())
    }
}

impl Context {
    /// Sets `Ready=False` with `reason` in `conditions` and, when that is a change, publishes a
    /// Warning Event about `regarding`. Returns whether the conditions changed.
    pub async fn report_not_ready(
        &self,
        regarding: &ObjectReference,
        conditions: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
        generation: Option<i64>,
        reason: &str,
        message: String,
        action: &str,
    ) -> bool {
        use lifeboat_api::conditions::{Status, condition, set_condition, types};
        let new = condition(
            types::READY,
            Status::False,
            reason,
            message.clone(),
            generation,
            jiff::Timestamp::now(),
        );
        let changed = set_condition(conditions, new);
        if changed {
            self.publish(
                regarding,
                EventType::Warning,
                reason,
                action.to_owned(),
                message,
            )
            .await;
        }
        changed
    }
}
