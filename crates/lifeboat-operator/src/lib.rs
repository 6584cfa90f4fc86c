//! Lifeboat's operator: controllers that turn BackupPolicy, RestoreRequest and DrillSchedule
//! resources into CronJobs and Jobs running the agent, and write what happened back to status.
//! The operator never touches backup data itself: that is the agent's job, inside the Jobs.

pub mod backup_policy;
pub mod config;
pub mod context;
pub mod controller;
pub mod drill_schedule;
pub mod effects;
pub mod error;
pub mod events;
pub mod gauges;
pub mod jobs;
pub mod kubestate;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod pod;
pub mod restore_request;
pub mod server;
pub mod signing_key;
pub mod watch_backoff;

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use lifeboat_api::{DrillSchedule, RestoreRequest};
use tracing::{debug, warn};

use crate::backup_policy::cached::CachedPolicy;
use crate::context::Context;
use crate::watch_backoff::WatchBackoff;

/// Runs the BackupPolicy controller until `shutdown` resolves, over every namespace or only
/// `namespace` (a namespace-scoped install needs a Role, not a ClusterRole).
pub async fn run_backup_policies(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let selector = format!(
        "{}={},{}=backup",
        names::LABEL_MANAGED_BY,
        names::MANAGED_BY,
        names::LABEL_ROLE
    );
    // CronJobs and Jobs: one metadata-only watch each feeds the index reconciles read (updated
    // before the reconcile an event triggers) and triggers reconciles. Metadata is what a
    // reconcile reads of them; full objects (a pod template each) would cost the API server and
    // this process their encoding for nothing.
    let index_ctx = ctx.clone();
    let cronjobs = watcher::watcher(
        scoped::<PartialObjectMeta<CronJob>>(&client, &namespace),
        watcher::Config::default().labels(&selector),
    )
    // Without a backoff a watch retries at once, forever: 175,000 failed attempts during a
    // 5 s API server outage (measured with tests/api_outage.rs).
    .backoff(WatchBackoff::default())
    .map_ok(move |e| {
        index_ctx
            .cronjobs
            .children
            .apply(&e, context::CronJobMeta::of);
        e
    })
    .touched_objects();
    let index_ctx = ctx.clone();
    let jobs = watcher::watcher(
        scoped::<PartialObjectMeta<Job>>(&client, &namespace),
        watcher::Config::default().labels(&selector),
    )
    .backoff(WatchBackoff::default())
    .map_ok(move |e| {
        index_ctx.jobs.apply(&e, |_| ());
        e
    })
    .touched_objects();
    // WAL archivers: a change of their availability (any change of the object) is a reconcile.
    let archivers = watcher::watcher(
        scoped::<PartialObjectMeta<Deployment>>(&client, &namespace),
        watcher::Config::default().labels(&format!(
            "{}={},{}={}",
            names::LABEL_MANAGED_BY,
            names::MANAGED_BY,
            names::LABEL_ROLE,
            names::ROLE_WAL_ARCHIVE
        )),
    )
    .backoff(WatchBackoff::default())
    .touched_objects();
    // Policies are cached as their JSON text (backup_policy::cached), parsed per reconcile: one
    // stored object that no longer fits the Rust types is reported by its own reconcile and does
    // not break the watch. They are kept without managedFields (most of a policy's metadata
    // once its status is applied) and annotations but Lifeboat's own (a GitOps tool's
    // last-applied copy is as large as the spec). kube-runtime takes a transformed stream only
    // through its `unstable-runtime-stream-control` API, hence that feature.
    let (policy_store, policy_writer) = kube::runtime::reflector::store();
    let policies = watcher::watcher(
        scoped::<CachedPolicy>(&client, &namespace),
        watcher::Config::default().any_semantic(),
    )
    .modify(|p| {
        p.managed_fields_mut().clear();
        p.annotations_mut()
            .retain(|k, _| k.starts_with("lifeboat.dev/"));
    })
    .backoff(WatchBackoff::default())
    .reflect(policy_writer)
    .applied_objects();
    // DrillSchedules, for the verified backups their records prove (status.assets[].lastVerified).
    let (drill_store, drill_writer) = kube::runtime::reflector::store();
    let _ = ctx.drills.set(drill_store);
    let drills = tokio::spawn(
        kube::runtime::reflector(
            drill_writer,
            watcher::watcher(
                scoped::<DeserializeGuard<DrillSchedule>>(&client, &namespace),
                watcher::Config::default(),
            )
            .backoff(WatchBackoff::default()),
        )
        .for_each(|_| futures::future::ready(())),
    );
    let sweeper = tokio::spawn(metrics::sweep(
        policy_store.clone(),
        ctx.metrics.clone(),
        metrics::Owner::Policy,
    ));
    // What is remembered of deleted policies' published Events goes on the same rhythm.
    let forget_store = policy_store.clone();
    let forget_ctx = ctx.clone();
    let forgetter = tokio::spawn(async move {
        loop {
            tokio::time::sleep(controller::requeue::METRICS_SWEEP).await;
            let live = forget_store
                .state()
                .iter()
                .filter_map(|p| p.uid())
                .collect();
            forget_ctx.published.retain(&live);
        }
    });
    Controller::for_stream(policies, policy_store)
        .owns_stream(cronjobs)
        .owns_stream(archivers)
        // A drill's new record may verify backups of its policy.
        .watches(
            scoped::<DeserializeGuard<DrillSchedule>>(&client, &namespace),
            watcher::Config::default(),
            |drill| {
                let ns = drill.namespace()?;
                let policy = &drill.0.as_ref().ok()?.spec.policy;
                Some(ObjectRef::<CachedPolicy>::new(policy).within(&ns))
            },
        )
        // Jobs made by a CronJob are owned by it, not by the policy: map them back by annotation.
        .watches_stream(jobs, |job| {
            let ns = job.namespace()?;
            let policy = job.annotations().get(names::ANNOTATION_POLICY)?;
            Some(ObjectRef::<CachedPolicy>::new(policy).within(&ns))
        })
        .trigger_backoff(WatchBackoff::default())
        .with_config(controller_config())
        .graceful_shutdown_on(shutdown)
        .run(backup_policy::reconcile, backup_policy::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => debug!(policy = %obj, "reconciled"),
                Err(e) => warn!(error = %e, "BackupPolicy controller"),
            }
        })
        .await;
    drills.abort();
    sweeper.abort();
    forgetter.abort();
}

/// Runs the RestoreRequest controller until `shutdown` resolves (scoped like the policies').
pub async fn run_restore_requests(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let selector = format!(
        "{}={},lifeboat.dev/restore",
        names::LABEL_MANAGED_BY,
        names::MANAGED_BY
    );
    Controller::new(
        scoped::<DeserializeGuard<RestoreRequest>>(&client, &namespace),
        watcher::Config::default().any_semantic(),
    )
    .owns(
        scoped::<Job>(&client, &namespace),
        watcher::Config::default().labels(&selector),
    )
    .trigger_backoff(WatchBackoff::default())
    .with_config(controller_config())
    .graceful_shutdown_on(shutdown)
    .run(
        restore_request::reconcile,
        restore_request::error_policy,
        ctx,
    )
    .for_each(|result| async move {
        match result {
            Ok((obj, _)) => debug!(restore = %obj, "reconciled"),
            Err(e) => warn!(error = %e, "RestoreRequest controller"),
        }
    })
    .await;
}

/// Runs the DrillSchedule controller until `shutdown` resolves (scoped like the policies').
pub async fn run_drill_schedules(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let selector = format!(
        "{}={},lifeboat.dev/drill",
        names::LABEL_MANAGED_BY,
        names::MANAGED_BY
    );
    let controller = Controller::new(
        scoped::<DeserializeGuard<DrillSchedule>>(&client, &namespace),
        watcher::Config::default().any_semantic(),
    );
    let sweeper = tokio::spawn(metrics::sweep(
        controller.store(),
        ctx.metrics.clone(),
        metrics::Owner::Drill,
    ));
    controller
        .owns(
            scoped::<DeserializeGuard<RestoreRequest>>(&client, &namespace),
            watcher::Config::default().labels(&selector),
        )
        // Its evidence and notify Jobs: a finished notify Job's outcome goes into the record.
        .owns(
            scoped::<Job>(&client, &namespace),
            watcher::Config::default().labels(&selector),
        )
        .trigger_backoff(WatchBackoff::default())
        .with_config(controller_config())
        .graceful_shutdown_on(shutdown)
        .run(drill_schedule::reconcile, drill_schedule::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => debug!(drill = %obj, "reconciled"),
                Err(e) => warn!(error = %e, "DrillSchedule controller"),
            }
        })
        .await;
    sweeper.abort();
}

/// Runs every controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stopped = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let relay = tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    futures::join!(
        run_backup_policies(ctx.clone(), namespace.clone(), stopped(rx.clone())),
        run_restore_requests(ctx.clone(), namespace.clone(), stopped(rx.clone())),
        run_drill_schedules(ctx, namespace, stopped(rx)),
    );
    relay.abort();
}

/// Every controller: triggers arriving within half a second of each other (a policy created, its
/// CronJobs appearing, its status landing) make one reconcile, not four; and at most 16 reconciles
/// run at once, so a burst of thousands of objects costs bounded memory and spreads its API
/// requests instead of queueing them all at the API server together.
fn controller_config() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default()
        .debounce(std::time::Duration::from_millis(500))
        .concurrency(16)
}

fn scoped<K>(client: &kube::Client, namespace: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}
