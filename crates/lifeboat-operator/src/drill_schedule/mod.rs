//! The DrillSchedule controller: at each due time (its cron evaluated here, never on creation
//! unless asked) back up the policy's assets, restore them into staging through a RestoreRequest
//! the drill owns, validate, and record the achieved RTO and RPO against the objectives.

pub mod decide;
pub mod evidence;
pub mod notify;
pub mod staging;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use lifeboat_api::conditions::{find, types};
use lifeboat_api::drill_schedule::{
    DrillScheduleStatus, DrillVerdict, NotificationState, NotificationStatus,
    StagingNamespaceStatus,
};
use lifeboat_api::restore_request::RestoreRequestSpec;
use lifeboat_api::schedule::CronSchedule;
use lifeboat_api::{BackupPolicy, DrillSchedule, RestoreRequest};
use tracing::{instrument, warn};

use crate::backup_policy::cronjob::on_demand_job;
use crate::config::FIELD_MANAGER;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::jobs::outcome;
use crate::names;
use decide::{Next, Observed};

const KIND: &str = "DrillSchedule";
/// Asks for a drill now; each distinct value runs once.
pub const ANNOTATION_DRILL_NOW: &str = "lifeboat.dev/drill-now";
/// How often an active drill is looked at besides the events of what it owns.
const POLL: Duration = Duration::from_secs(10);

#[instrument(skip_all, fields(namespace = ds.namespace().unwrap_or_default(), name = ds.name_any()))]
pub async fn reconcile(ds: Arc<DrillSchedule>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx
        .metrics
        .reconcile_duration
        .with_label_values(&[KIND])
        .start_timer();
    ctx.metrics.reconciles.with_label_values(&[KIND]).inc();
    let ns = ds.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let old = ds.status.clone().unwrap_or_default();
    let now = Timestamp::now();

    let schedule = match CronSchedule::parse(&ds.spec.schedule, ds.spec.time_zone.as_deref()) {
        Ok(s) => s,
        Err(e) => return report_problem(&ds, &ctx, &old, "InvalidSpec", e.to_string()).await,
    };
    let Some(policy) = Api::<BackupPolicy>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&ds.spec.policy)
        .await?
    else {
        let message = format!("BackupPolicy {:?} not found in {ns}", ds.spec.policy);
        return report_problem(&ds, &ctx, &old, "PolicyNotFound", message).await;
    };
    if let Err(message) = check_scope(&ds, &policy) {
        return report_problem(&ds, &ctx, &old, "InvalidSpec", message).await;
    }
    if let Err(message) = check_staging_scope(&ds) {
        return report_problem(&ds, &ctx, &old, "OutOfStagingScope", message).await;
    }
    // The drill's backup and evidence Jobs mount the namespace's signing key.
    match crate::signing_key::ensure(&ctx, &ns).await {
        Err(e @ Error::SigningKeyMissing(_)) => {
            return report_problem(&ds, &ctx, &old, e.reason(), e.to_string()).await;
        }
        other => other?,
    }
    // A staging namespace is this drill's only if the operator created it and recorded its uid:
    // one that exists otherwise (whatever its labels and annotations) is never adopted, nor,
    // later, deleted.
    let mut staging_present = false;
    if let Some(sn) = &ds.spec.staging.namespace {
        match Api::<Namespace>::all(ctx.client.clone())
            .get_opt(&sn.name)
            .await
        {
            Ok(Some(existing)) if !staging::owned(&existing, old.staging_namespace.as_ref()) => {
                // The cached object may predate the status write that recorded the uid: decide
                // on a fresh read, and never write a conflict over a newer status.
                let fresh = Api::<DrillSchedule>::namespaced(ctx.client.clone(), &ns)
                    .get_opt(&ds.name_any())
                    .await?
                    .and_then(|d| d.status)
                    .unwrap_or_default();
                if staging::owned(&existing, fresh.staging_namespace.as_ref()) {
                    return Ok(Action::requeue(Duration::from_secs(1)));
                }
                return report_problem(
                    &ds,
                    &ctx,
                    &fresh,
                    "StagingNamespaceConflict",
                    staging_conflict(&sn.name),
                )
                .await;
            }
            // Its own, still being deleted after the last drill: nothing starts until it is gone.
            Ok(Some(existing)) if existing.metadata.deletion_timestamp.is_some() => {
                return Ok(Action::requeue(Duration::from_secs(5)));
            }
            Ok(Some(_)) => staging_present = true,
            Ok(None) => {
                // Reading Namespaces is allowed (their labels scope Kubernetes-state Jobs), so
                // whether the operator may make one is asked of the API server by a dry-run
                // create, before any drill is due.
                let dry = kube::api::PostParams {
                    dry_run: true,
                    field_manager: Some(FIELD_MANAGER.into()),
                };
                if let Err(e) = Api::<Namespace>::all(ctx.client.clone())
                    .create(&dry, &staging::namespace(&ds, sn))
                    .await
                {
                    return staging_error(&ds, &ctx, &old, e).await;
                }
            }
            Err(e) => return staging_error(&ds, &ctx, &old, e).await,
        }
    }

    // Never fire on creation: the first due time is the first one after the resource appeared.
    let reference = old
        .last_run
        .as_ref()
        .map(|r| r.started_at.0)
        .or_else(|| ds.creation_timestamp().map(|t| t.0))
        .unwrap_or(now);
    let due = schedule.next_after(reference);
    let token = ds
        .annotations()
        .get(ANNOTATION_DRILL_NOW)
        .filter(|t| !t.is_empty());
    let run_now = token
        .filter(|t| old.last_drill_now_token.as_ref() != Some(t))
        .map(String::as_str);

    let restores = Api::<RestoreRequest>::namespaced(ctx.client.clone(), &ns);
    let mut seen = Observed {
        policy: policy.status.as_ref(),
        ..Default::default()
    };
    let mut restore = None;
    if let Some(active) = &old.active {
        seen.backups = backup_outcomes(&ctx, &ns, &ds, &active.id).await?;
        restore = restores.get_opt(&active.id).await?.and_then(|r| r.status);
    }
    seen.restore = restore.as_ref();
    let decision = decide::advance(&ds, due, run_now, &seen, now);
    let mut status = decision.status;
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let active_id = status.active.as_ref().map(|a| a.id.clone());
    match (&decision.next, &active_id) {
        (Next::Backup, Some(id)) => {
            let jobs = Api::<Job>::namespaced(ctx.client.clone(), &ns);
            let scopes = crate::backup_policy::kubestate_scopes(&ctx, &policy, &ns).await?;
            for asset in policy
                .spec
                .assets
                .iter()
                .filter(|a| ds.spec.assets.contains(&a.name))
            {
                let job = on_demand_job(&policy, asset, id, &ctx.agent, &scopes)?;
                jobs.patch(&job.name_any(), &apply, &Patch::Apply(&job))
                    .await?;
            }
            let note = format!(
                "drill {id}: backing up {} as the simulated disaster",
                ds.spec.assets.join(", ")
            );
            ctx.publish(
                &ds.object_ref(&()),
                EventType::Normal,
                "DrillStarted",
                format!("Drill/{id}"),
                note,
            )
            .await;
        }
        (Next::Restore, Some(id)) => {
            let rr = restore_request(&ds, id)?;
            restores.patch(id, &apply, &Patch::Apply(&rr)).await?;
            if let Some(a) = status.active.as_mut() {
                a.restore_request = Some(id.clone());
            }
            if ds.spec.backup == lifeboat_api::drill_schedule::DrillBackupMode::Latest {
                let note = format!("drill {id}: restoring the latest backups into staging");
                ctx.publish(
                    &ds.object_ref(&()),
                    EventType::Normal,
                    "DrillStarted",
                    format!("Drill/{id}"),
                    note,
                )
                .await;
            }
        }
        (Next::Finished, _) => {
            // The evidence first: a reconcile that dies after this finds the Job and does not
            // make it again; one that dies before it leaves the status unwritten and repeats.
            if let Some(record) = &status.last_run {
                let e = evidence::evidence(&ds, record, seen.restore);
                let job = evidence::evidence_job(&ds, &policy, e, &ctx.agent)?;
                // Created, never applied: one that exists (409) is this drill's and stays as is.
                match Api::<Job>::namespaced(ctx.client.clone(), &ns)
                    .create(&kube::api::PostParams::default(), &job)
                    .await
                {
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    other => {
                        other?;
                    }
                }
            }
            if let Some(record) = &status.last_run {
                let (kind, reason) = match record.verdict {
                    DrillVerdict::Passed => (EventType::Normal, "DrillPassed"),
                    DrillVerdict::ObjectivesMissed => (EventType::Warning, "DrillObjectivesMissed"),
                    DrillVerdict::Failed => (EventType::Warning, "DrillFailed"),
                };
                let note = format!(
                    "drill {}: RTO {} (objective {}), RPO {} (objective {}){}",
                    record.id,
                    record.rto.clone().unwrap_or_else(|| "not measured".into()),
                    ds.spec.objectives.rto,
                    record.rpo.clone().unwrap_or_else(|| "not measured".into()),
                    ds.spec.objectives.rpo,
                    if record.message.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", record.message)
                    }
                );
                ctx.publish(
                    &ds.object_ref(&()),
                    kind,
                    reason,
                    format!("Drill/{}", record.id),
                    note.clone(),
                )
                .await;
                // The notification: a Job in this namespace sends it, once (a 409 is this
                // drill's own Job, made by a pass whose status write did not land).
                let text = format!("Lifeboat {reason} {ns}/{}: {note}", ds.name_any());
                if record.notification.is_some()
                    && let Some(job) = notify::notify_job(&ds, &record.id, text, &ctx.agent)?
                {
                    match Api::<Job>::namespaced(ctx.client.clone(), &ns)
                        .create(&kube::api::PostParams::default(), &job)
                        .await
                    {
                        Err(kube::Error::Api(e)) if e.code == 409 => {}
                        other => {
                            other?;
                        }
                    }
                }
                // The early warning, once, when it starts to hold.
                let risk = |s: &DrillScheduleStatus| {
                    find(&s.conditions, types::RTO_AT_RISK)
                        .filter(|c| c.status == "True")
                        .map(|c| c.message.clone())
                };
                if let (Some(message), None) = (risk(&status), risk(&old)) {
                    ctx.publish(
                        &ds.object_ref(&()),
                        EventType::Warning,
                        "RTOAtRisk",
                        format!("Drill/{}", record.id),
                        message,
                    )
                    .await;
                }
            }
        }
        _ => {}
    }
    // The notification of the last drill, while its Job has not reported.
    let reported = if decision.next == Next::Finished {
        None
    } else {
        notification_outcome(&ctx, &ns, &mut status).await?
    };
    // The staging namespace: there (with its isolation) while a drill runs, gone `ttl` after.
    let mut staging_wait = None;
    // Whether this pass wrote the status already (with a created namespace's uid).
    let mut written = false;
    if let Some(sn) = &ds.spec.staging.namespace
        && status.active.is_some()
    {
        if !staging_present {
            match create_staging(&ctx, &ds, sn, &mut status).await {
                Ok(true) => written = true,
                Ok(false) => {
                    return report_problem(
                        &ds,
                        &ctx,
                        &old,
                        "StagingNamespaceConflict",
                        staging_conflict(&sn.name),
                    )
                    .await;
                }
                Err(Error::Kube(e)) => return staging_error(&ds, &ctx, &old, e).await,
                Err(e) => return Err(e),
            }
        }
        if let Err(e) = isolate_staging(&ctx, sn).await {
            return staging_error(&ds, &ctx, &old, e).await;
        }
    }
    if status.active.is_none()
        && let Some(recorded) = status.staging_namespace.clone()
    {
        let ttl = ds
            .spec
            .staging
            .namespace
            .as_ref()
            .filter(|sn| sn.name == recorded.name)
            .map_or(Duration::ZERO, |sn| sn.ttl.as_std());
        let finished = status.last_run.as_ref().map(|r| r.finished_at.0);
        match staging::cleanup(finished, ttl, now) {
            staging::Cleanup::Wait(s) => staging_wait = Some(s),
            staging::Cleanup::Delete => match remove_staging(&ctx, &recorded).await {
                Ok(Some(wait)) => staging_wait = Some(wait),
                Ok(None) => status.staging_namespace = None,
                Err(e) => return staging_error(&ds, &ctx, &old, e).await,
            },
        }
    }
    update_metrics(&ctx, &ds, &ns, &status);
    if status != old {
        written |= ctx.apply_status(ds.as_ref(), &status).await?;
    }
    if written {
        // After the write that records it: a notification's outcome is announced once.
        if let Some(n) = reported {
            let (kind, reason) = match n.state {
                NotificationState::Sent => (EventType::Normal, "NotificationSent"),
                _ => (EventType::Warning, "NotificationFailed"),
            };
            let note = match &n.reason {
                Some(r) => format!("{r}: {}", n.message),
                None => n.message.clone(),
            };
            ctx.publish(
                &ds.object_ref(&()),
                kind,
                reason,
                format!("Notify/{}", n.job),
                note,
            )
            .await;
        }
    }
    status.active.as_ref().map_or_else(
        || {
            let wait = due.map_or(3600, |d| (d.as_second() - now.as_second()).clamp(1, 3600));
            let wait =
                staging_wait.map_or(wait, |s| wait.min(i64::try_from(s).unwrap_or(wait)).max(1));
            Ok(Action::requeue(Duration::from_secs(
                u64::try_from(wait).unwrap_or(3600),
            )))
        },
        |_| Ok(Action::requeue(POLL)),
    )
}

const STAGING_FORBIDDEN: &str = "the operator may not manage staging namespaces: install the chart with drills.stagingNamespaces=true, or drop staging.namespace";

/// A refused staging-namespace call is the user's to fix (a condition); any other is retried.
async fn staging_error(
    ds: &DrillSchedule,
    ctx: &Context,
    old: &DrillScheduleStatus,
    e: kube::Error,
) -> Result<Action> {
    if matches!(&e, kube::Error::Api(s) if s.code == 403) {
        report_problem(
            ds,
            ctx,
            old,
            "StagingNamespaceForbidden",
            STAGING_FORBIDDEN.into(),
        )
        .await
    } else {
        Err(e.into())
    }
}

fn staging_conflict(name: &str) -> String {
    format!(
        "namespace {name:?} exists and was not created by this DrillSchedule (its uid is not the one in status.stagingNamespace): it is never adopted or deleted; choose another staging.namespace.name"
    )
}

/// Creates the staging namespace (a create, never an apply: an existing namespace is never
/// taken over) and records its uid in status at once, so the window in which the operator made
/// a namespace it has not recorded is one API call wide. A crash inside it leaves a namespace
/// the drill refuses as not its own (docs/operations.md). Returns false when the name was taken
/// in the meantime.
async fn create_staging(
    ctx: &Context,
    ds: &DrillSchedule,
    sn: &lifeboat_api::drill_schedule::StagingNamespace,
    status: &mut DrillScheduleStatus,
) -> Result<bool> {
    let created = match Api::<Namespace>::all(ctx.client.clone())
        .create(
            &kube::api::PostParams::default(),
            &staging::namespace(ds, sn),
        )
        .await
    {
        Ok(ns) => ns,
        Err(kube::Error::Api(e)) if e.code == 409 => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    status.staging_namespace = Some(StagingNamespaceStatus {
        name: sn.name.clone(),
        uid: created.metadata.uid.ok_or(Error::MissingObjectKey("uid"))?,
    });
    ctx.apply_status(ds, status).await?;
    Ok(true)
}

/// Deletes the recorded staging namespace if it is still the one the operator created.
/// Returns when to look again while it terminates, or `None` once it is no longer this drill's
/// to delete (gone, or someone else's under the same name: forgotten, never deleted).
async fn remove_staging(
    ctx: &Context,
    recorded: &StagingNamespaceStatus,
) -> std::result::Result<Option<u64>, kube::Error> {
    let namespaces = Api::<Namespace>::all(ctx.client.clone());
    match namespaces.get_opt(&recorded.name).await? {
        Some(ns) if staging::owned(&ns, Some(recorded)) => {
            if ns.metadata.deletion_timestamp.is_some() {
                return Ok(Some(5));
            }
            match staging::delete_owned(&namespaces, recorded).await? {
                staging::Deleted::Deleted => Ok(Some(5)),
                staging::Deleted::Gone | staging::Deleted::NotOurs => Ok(None),
            }
        }
        _ => Ok(None),
    }
}

/// The staging namespace's deny-egress NetworkPolicy and ResourceQuota, applied.
async fn isolate_staging(
    ctx: &Context,
    sn: &lifeboat_api::drill_schedule::StagingNamespace,
) -> std::result::Result<(), kube::Error> {
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    Api::<NetworkPolicy>::namespaced(ctx.client.clone(), &sn.name)
        .patch(
            staging::STAGING_OBJECTS,
            &apply,
            &Patch::Apply(&staging::network_policy(sn)),
        )
        .await?;
    Api::<ResourceQuota>::namespaced(ctx.client.clone(), &sn.name)
        .patch(
            staging::STAGING_OBJECTS,
            &apply,
            &Patch::Apply(&staging::resource_quota(sn)),
        )
        .await?;
    Ok(())
}

/// Reads the last drill's notify Job while its notification is pending and records the outcome
/// in `status` (the record and its copy in history). Returns the outcome when it is new.
async fn notification_outcome(
    ctx: &Context,
    ns: &str,
    status: &mut DrillScheduleStatus,
) -> Result<Option<NotificationStatus>> {
    let Some(record) = status.last_run.as_mut() else {
        return Ok(None);
    };
    let Some(pending) = record
        .notification
        .as_ref()
        .filter(|n| n.state == NotificationState::Pending)
    else {
        return Ok(None);
    };
    let name = pending.job.clone();
    let outcome = match Api::<Job>::namespaced(ctx.client.clone(), ns)
        .get_opt(&name)
        .await?
    {
        Some(job) => {
            let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns)
                .list(
                    &ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}")),
                )
                .await?;
            match notify::outcome(&job, &pods.items) {
                Some(o) => o,
                None => return Ok(None),
            }
        }
        // Deleted before it reported: it may or may not have sent; it is not sent again.
        None => NotificationStatus {
            state: NotificationState::Failed,
            job: name,
            reason: Some("JobNotFound".into()),
            message: "the notify Job was deleted before it reported: not sent again".into(),
        },
    };
    record.notification = Some(outcome.clone());
    let id = record.id.clone();
    if let Some(h) = status.history.iter_mut().find(|h| h.id == id) {
        h.notification = Some(outcome.clone());
    }
    Ok(Some(outcome))
}

pub fn error_policy(ds: Arc<DrillSchedule>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[KIND, error.reason()])
        .inc();
    warn!(namespace = ds.namespace(), name = ds.name_any(), reason = error.reason(), %error, "reconcile failed");
    Action::requeue(if error.needs_user() {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(15)
    })
}

/// The drill's RestoreRequest: `latest` (the fresh backups, once the policy recorded them) into
/// the staging targets, executed at once, with the drill's checks; owned by the drill.
fn restore_request(ds: &DrillSchedule, id: &str) -> Result<RestoreRequest> {
    let spec = RestoreRequestSpec {
        source: lifeboat_api::restore_request::RestoreSource {
            policy: ds.spec.policy.clone(),
            backup_id: "latest".into(),
            location: None,
            allow_unsigned: false,
        },
        assets: ds.spec.assets.clone(),
        targets: ds.spec.staging.targets.clone(),
        execute: true,
        validation: ds.spec.validation.clone(),
        rollback_on_failure: false,
        options: Default::default(),
        timeout: ds.spec.timeout.clone(),
        ttl_after_finished: None,
        pod_template: ds.spec.pod_template.clone(),
    };
    let mut rr = RestoreRequest::new(id, spec);
    rr.metadata.namespace = ds.namespace();
    rr.metadata.labels = Some(BTreeMap::from([
        (
            names::LABEL_MANAGED_BY.to_owned(),
            names::MANAGED_BY.to_owned(),
        ),
        (
            "lifeboat.dev/drill".to_owned(),
            names::label_value(&ds.name_any()),
        ),
    ]));
    rr.metadata.owner_references = Some(vec![
        ds.controller_owner_ref(&())
            .ok_or(Error::MissingObjectKey("uid"))?,
    ]);
    Ok(rr)
}

/// Outcomes of the drill's fresh backup Jobs (named after the drill id, one per asset).
async fn backup_outcomes(
    ctx: &Context,
    ns: &str,
    ds: &DrillSchedule,
    id: &str,
) -> Result<Vec<crate::jobs::JobOutcome>> {
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), ns);
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns);
    let mut out = Vec::new();
    for asset in &ds.spec.assets {
        let name = names::backup_now_job(&ds.spec.policy, asset, id);
        let Some(job) = jobs.get_opt(&name).await? else {
            continue;
        };
        let mine = pods
            .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}")))
            .await?;
        out.extend(outcome(&job, &mine.items));
    }
    Ok(out)
}

/// A drill never restores over its source: every drilled asset needs a staging target, and no
/// target may be the asset's own source.
fn check_scope(ds: &DrillSchedule, policy: &BackupPolicy) -> std::result::Result<(), String> {
    for name in &ds.spec.assets {
        let asset = policy
            .spec
            .assets
            .iter()
            .find(|a| &a.name == name)
            .ok_or_else(|| format!("asset {name:?} is not in BackupPolicy {:?}", ds.spec.policy))?;
        let target = ds
            .spec
            .staging
            .targets
            .iter()
            .find(|t| &t.asset == name)
            .ok_or_else(|| format!("asset {name:?} has no staging target"))?;
        let same = match (
            &asset.postgres,
            &target.postgres,
            &asset.redis,
            &target.redis,
        ) {
            (Some(src), Some(dst), _, _) => {
                let db = dst.database.clone();
                src.connection.host == dst.connection.host
                    && src.connection.port == dst.connection.port
                    && db.is_none_or(|d| src.databases.contains(&d))
            }
            (_, _, Some(src), Some(dst)) => {
                src.connection.host == dst.connection.host
                    && src.connection.port == dst.connection.port
            }
            _ => match (
                &asset.object_storage,
                &target.object_storage,
                &asset.kubernetes_state,
                &target.kubernetes_state,
            ) {
                (Some(src), Some(dst), _, _) => {
                    src.source.endpoint == dst.endpoint
                        && src.source.bucket == dst.bucket
                        && src.source.prefix == dst.prefix
                }
                (_, _, Some(_), Some(dst)) => dst.namespace_mapping.is_empty(),
                _ => {
                    return Err(format!(
                        "the staging target of {name:?} is not of the asset's kind"
                    ));
                }
            },
        };
        if same {
            return Err(format!(
                "the staging target of {name:?} is its own source: a drill never restores over its source"
            ));
        }
    }
    Ok(())
}

/// Every staging target inside the scope the drill declares (when it declares one): a drill
/// never writes anywhere else. Checked before anything runs, on every reconcile.
pub fn check_staging_scope(ds: &DrillSchedule) -> std::result::Result<(), String> {
    let Some(scope) = &ds.spec.staging.scope else {
        return Ok(());
    };
    for t in &ds.spec.staging.targets {
        let out = |what: String| {
            Err(format!(
                "the staging target of {:?} ({what}) is outside the drill's staging scope",
                t.asset
            ))
        };
        if let Some(pg) = &t.postgres
            && !scope.allows_host(&pg.connection.host)
        {
            return out(format!("host {}", pg.connection.host));
        }
        if let Some(r) = &t.redis
            && !scope.allows_host(&r.connection.host)
        {
            return out(format!("host {}", r.connection.host));
        }
        if let Some(s3) = &t.object_storage {
            let host = endpoint_host(&s3.endpoint);
            if !scope.allows_host(host) {
                return out(format!("endpoint {}", s3.endpoint));
            }
            if !scope.buckets.contains(&s3.bucket) {
                return out(format!("bucket {}", s3.bucket));
            }
        }
        if let Some(k) = &t.kubernetes_state {
            if k.namespace_mapping.is_empty() {
                return out("no namespace mapping: the original namespaces".into());
            }
            if let Some(ns) = k
                .namespace_mapping
                .values()
                .find(|ns| !scope.namespaces.contains(ns))
            {
                return out(format!("namespace {ns}"));
            }
        }
    }
    Ok(())
}

/// The host of an endpoint URL (`https://s3.example.com:9000/x` → `s3.example.com`).
fn endpoint_host(endpoint: &str) -> &str {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.split(':').next().unwrap_or(authority),
    }
}

async fn report_problem(
    ds: &DrillSchedule,
    ctx: &Context,
    old: &DrillScheduleStatus,
    reason: &str,
    message: String,
) -> Result<Action> {
    let mut status = old.clone();
    status.observed_generation = ds.metadata.generation;
    ctx.report_not_ready(
        &ds.object_ref(&()),
        &mut status.conditions,
        ds.metadata.generation,
        reason,
        message,
        "Validate",
    )
    .await;
    if &status != old {
        ctx.apply_status(ds, &status).await?;
    }
    Ok(Action::requeue(if reason == "InvalidSpec" {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(30)
    }))
}

fn update_metrics(ctx: &Context, ds: &DrillSchedule, ns: &str, status: &DrillScheduleStatus) {
    let Some(run) = &status.last_run else { return };
    let name = ds.name_any();
    let m = &ctx.metrics;
    if let Some(rto) = run.rto_seconds {
        m.drill_rto.with_label_values(&[ns, &name]).set(rto);
    }
    if let Some(rpo) = run.rpo_seconds {
        m.drill_rpo.with_label_values(&[ns, &name]).set(rpo);
    }
    m.drill_objective_met
        .with_label_values(&[ns, &name, "rto"])
        .set(f64::from(u8::from(run.rto_met)));
    m.drill_objective_met
        .with_label_values(&[ns, &name, "rpo"])
        .set(f64::from(u8::from(run.rpo_met)));
    let verdict = format!("{:?}", run.verdict);
    for v in ["Passed", "ObjectivesMissed", "Failed"] {
        if v != verdict {
            let _ = m.drill_last_run.remove_label_values(&[ns, &name, v]);
        }
    }
    m.drill_last_run
        .with_label_values(&[ns, &name, &verdict])
        .set(run.finished_at.0.as_second() as f64);
    let at_risk = find(&status.conditions, types::RTO_AT_RISK).is_some_and(|c| c.status == "True");
    m.drill_rto_at_risk
        .with_label_values(&[ns, &name])
        .set(f64::from(u8::from(at_risk)));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn drill(staging: serde_json::Value) -> DrillSchedule {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DrillSchedule",
            "metadata": {"name": "q", "namespace": "shop"},
            "spec": {"schedule": "0 6 1 * *", "policy": "shop", "assets": ["db", "cache", "media", "state"],
                     "staging": staging, "objectives": {"rto": "30m", "rpo": "15m"}}
        }))
        .unwrap()
    }

    fn targets(pg_host: &str, endpoint: &str, ns: &str) -> serde_json::Value {
        serde_json::json!([
            {"asset": "db", "postgres": {"host": pg_host, "user": "u", "database": "d"}},
            {"asset": "cache", "redis": {"host": "cache.drills.svc"}},
            {"asset": "media", "objectStorage": {"endpoint": endpoint, "bucket": "drill-media",
                                                  "credentialsSecret": {"name": "s"}}},
            {"asset": "state", "kubernetesState": {"namespaceMapping": {"prod": ns}}}
        ])
    }

    fn scope() -> serde_json::Value {
        serde_json::json!({"hosts": ["*.drills.svc", "minio.drills.example.com"],
                           "buckets": ["drill-media"], "namespaces": ["prod-drill"]})
    }

    #[test]
    fn every_target_inside_the_declared_scope_passes() {
        let d = drill(serde_json::json!({"targets": targets("pg.drills.svc",
            "https://minio.drills.example.com:9000", "prod-drill"), "scope": scope()}));
        assert_eq!(check_staging_scope(&d), Ok(()));
        // Without a scope only the own-source rule applies.
        let d = drill(
            serde_json::json!({"targets": targets("prod-db", "https://s3.amazonaws.com", "prod")}),
        );
        assert_eq!(check_staging_scope(&d), Ok(()));
    }

    #[test]
    fn a_target_outside_the_scope_is_refused_with_what_is_outside() {
        for (pg, endpoint, ns, expect) in [
            (
                "prod-db.shop.svc",
                "https://minio.drills.example.com",
                "prod-drill",
                "host prod-db.shop.svc",
            ),
            // A suffix pattern does not match the bare suffix or a lookalike.
            (
                "drills.svc",
                "https://minio.drills.example.com",
                "prod-drill",
                "host drills.svc",
            ),
            (
                "pg.evil-drills.svc",
                "https://minio.drills.example.com",
                "prod-drill",
                "host pg.evil-drills.svc",
            ),
            (
                "pg.drills.svc",
                "https://s3.amazonaws.com",
                "prod-drill",
                "endpoint https://s3.amazonaws.com",
            ),
            (
                "pg.drills.svc",
                "https://minio.drills.example.com",
                "prod",
                "namespace prod",
            ),
        ] {
            let d =
                drill(serde_json::json!({"targets": targets(pg, endpoint, ns), "scope": scope()}));
            let err = check_staging_scope(&d).unwrap_err();
            assert!(
                err.contains(expect) && err.contains("outside the drill's staging scope"),
                "{err}"
            );
        }
    }

    #[test]
    fn endpoint_hosts() {
        assert_eq!(
            endpoint_host("https://s3.example.com:9000/x"),
            "s3.example.com"
        );
        assert_eq!(endpoint_host("http://[::1]:9000"), "::1");
        assert_eq!(endpoint_host("s3.example.com"), "s3.example.com");
    }
}
