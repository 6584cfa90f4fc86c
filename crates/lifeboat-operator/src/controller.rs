//! What the three controllers share: the requeue intervals, the guard against objects that no
//! longer deserialize, and one `error_policy`.
//!
//! Every reconcile is the same pipeline (docs/architecture.md): observe what exists, decide (a
//! pure function: the new status, the children to apply, the Events owed), apply the children,
//! write the status with what is owed, then perform what the written status owes (Events,
//! Jobs, deletions) and write down that it was done. An effect is never performed before the
//! write that records it, and each carries a name of its own, so a retry after a crash or a
//! failed write performs it once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::warn;

use crate::context::Context;
use crate::error::{Error, Result};

/// Every interval a controller waits for, in one place.
pub mod requeue {
    use std::time::Duration;

    /// How often a resource is looked at when nothing asks for it, and how long a spec only
    /// its owner can fix waits (the edit triggers a reconcile itself).
    pub const RESYNC: Duration = Duration::from_secs(300);
    /// A problem someone else may fix any moment (a policy created, a key provided).
    pub const PROBLEM: Duration = Duration::from_secs(30);
    /// A running restore, besides the events of its Jobs.
    pub const RESTORE_POLL: Duration = Duration::from_secs(30);
    /// An active drill, besides the events of what it owns (its timeout is checked then).
    pub const DRILL_POLL: Duration = Duration::from_secs(10);
    /// The longest an idle drill sleeps before it looks at its schedule again.
    pub const IDLE_MAX: Duration = Duration::from_secs(3600);
    /// A staging namespace that is being deleted.
    pub const TERMINATING: Duration = Duration::from_secs(5);
    /// The first retry after a failed operation; it doubles with each failure in a row.
    pub const BACKOFF_FIRST: Duration = Duration::from_secs(2);
    /// The longest retry interval after failures in a row.
    pub const BACKOFF_MAX: Duration = Duration::from_secs(120);
    /// How often the metric series of deleted objects are looked for.
    pub const METRICS_SWEEP: Duration = Duration::from_secs(15);
}

/// Failures in a row after which an error is announced by a Warning Event: one failed call is
/// routine (a conflict, a restarting API server), three in a row is something to look at.
pub const PERSISTENT_AFTER: u32 = 3;

/// Failed reconciles in a row, per object: the backoff and the Warning Event of an error that
/// persists. Reset by a reconcile that succeeds.
#[derive(Default)]
pub struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    /// Counts one more failure of `key`; returns how many in a row.
    fn failed(&self, key: &str) -> u32 {
        let Ok(mut m) = self.0.lock() else { return 1 };
        let n = m.entry(key.to_owned()).or_default();
        *n = n.saturating_add(1);
        *n
    }

    fn succeeded(&self, key: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(key);
        }
    }
}

fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// The object a reconcile works on, or [`Error::InvalidObject`] when the stored object no
/// longer deserializes: the watch goes on with every other object (kube's [`DeserializeGuard`]).
pub fn valid<K>(obj: &DeserializeGuard<K>) -> Result<&K> {
    obj.0
        .as_ref()
        .map_err(|invalid| Error::InvalidObject(invalid.error.clone()))
}

/// Counts a reconcile of `kind` and times it until the returned guard drops.
pub fn measure(ctx: &Context, kind: &str) -> prometheus::HistogramTimer {
    ctx.metrics.reconciles.with_label_values(&[kind]).inc();
    ctx.metrics
        .reconcile_duration
        .with_label_values(&[kind])
        .start_timer()
}

/// Records that `obj`'s reconcile went through: its next failure starts a new streak.
pub fn succeeded<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K) {
    ctx.failures.succeeded(&key(obj));
}

/// The one error policy: an error only an edit cures waits for it; any other is retried with
/// a backoff that doubles per failure in a row. An error that persists is announced once per
/// streak by a Warning Event with its reason (an invalid object at once: it will not go away).
pub fn error_policy<K>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
{
    let kind = K::kind(&());
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[&kind, error.reason()])
        .inc();
    warn!(namespace = obj.namespace(), name = obj.name_any(), reason = error.reason(), %error, "reconcile failed");
    let streak = ctx.failures.failed(&key(obj.as_ref()));
    let announce_at = if error.needs_user() {
        1
    } else {
        PERSISTENT_AFTER
    };
    if streak == announce_at {
        let regarding = obj.object_ref(&());
        let (reason, note) = (error.reason(), error.to_string());
        let publisher = ctx.clone();
        tokio::spawn(async move {
            publisher
                .publish(
                    &regarding,
                    EventType::Warning,
                    reason,
                    "Reconcile".into(),
                    note,
                )
                .await;
        });
    }
    Action::requeue(if error.needs_user() {
        requeue::RESYNC
    } else {
        backoff(streak)
    })
}

/// [`requeue::BACKOFF_FIRST`] doubled per failure in a row, at most [`requeue::BACKOFF_MAX`].
pub fn backoff(failures_in_a_row: u32) -> Duration {
    let doublings = failures_in_a_row.saturating_sub(1).min(16);
    requeue::BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(requeue::BACKOFF_MAX)
}

/// Adds or removes `finalizer` on a fresh read of `obj`'s metadata, with its resourceVersion as
/// the merge patch's precondition: a concurrent change is refused (409) and retried, never
/// overwritten (another controller's finalizer stays). Nothing to do when it already is as asked,
/// or the object is gone.
pub async fn set_finalizer<K>(ctx: &Context, obj: &K, finalizer: &str, present: bool) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let name = obj.name_any();
    let api = kube::Api::<K>::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let Some(fresh) = api
        .get_metadata_opt(&name)
        .await
        .map_err(Error::get::<K>(&name))?
    else {
        return Ok(());
    };
    let mut finalizers = fresh.finalizers().to_vec();
    if finalizers.iter().any(|f| f == finalizer) == present {
        return Ok(());
    }
    if present {
        finalizers.push(finalizer.to_owned());
    } else {
        finalizers.retain(|f| f != finalizer);
    }
    let patch = serde_json::json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": fresh.resource_version(),
    }});
    api.patch(
        &name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .map_err(|source| Error::Finalizer { source })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_bound() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(4), Duration::from_secs(16));
        assert_eq!(backoff(30), requeue::BACKOFF_MAX);
        let f = Failures::default();
        assert_eq!((f.failed("a"), f.failed("a"), f.failed("b")), (1, 2, 1));
        f.succeeded("a");
        assert_eq!(f.failed("a"), 1, "a success ends the streak");
    }
}
