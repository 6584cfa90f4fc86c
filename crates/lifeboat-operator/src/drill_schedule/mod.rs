//! The DrillSchedule controller: at each due time (its cron evaluated here, never on creation
//! unless asked) back up the policy's assets, restore them into staging through a RestoreRequest
//! the drill owns, validate, and record the achieved RTO and RPO against the objectives.
//!
//! The reconcile is the pipeline every controller follows (crate::controller): [`observe`],
//! [`decide::decide`], [`apply_children`], the status write, [`perform`]. A DrillSchedule that
//! made a staging namespace carries a finalizer until that namespace is gone ([`finalize`]).

pub mod checks;
pub mod decide;
pub mod evidence;
pub mod notify;
pub mod staging;

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use lifeboat_api::conditions::{self, Status, types};
use lifeboat_api::drill_schedule::{
    DrillJob, DrillScheduleStatus, NotificationState, NotificationStatus,
};
use lifeboat_api::identity;
use lifeboat_api::restore_request::RestoreRequestSpec;
use lifeboat_api::schedule::CronSchedule;
use lifeboat_api::{BackupPolicy, DrillSchedule, RestoreRequest};
use tracing::instrument;

use crate::backup_policy::cronjob::on_demand_job;
use crate::config::FIELD_MANAGER;
use crate::context::Context;
use crate::controller;
use crate::error::{Error, Problem, Result};
use crate::jobs::outcome;
use crate::names;
use decide::{Decision, Next, Observed, StagingAction};

const KIND: &str = "DrillSchedule";
/// Asks for a drill now; each distinct value runs once.
pub const ANNOTATION_DRILL_NOW: &str = "lifeboat.dev/drill-now";

#[instrument(skip_all, fields(namespace = obj.namespace().unwrap_or_default(), name = obj.name_any()))]
pub async fn reconcile(
    obj: Arc<DeserializeGuard<DrillSchedule>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let _timer = controller::measure(&ctx, KIND);
    let ds = controller::valid(&obj)?;
    if ds.metadata.deletion_timestamp.is_some() {
        let action = finalize(ds, &ctx).await?;
        controller::succeeded(&ctx, ds);
        return Ok(action);
    }
    let now = Timestamp::now();
    let (mut seen, found) = observe(ds, &ctx, now).await?;
    let mut decision = decide::decide(ds, &seen, now);
    if let Some(problem) = apply_children(ds, &ctx, &found, &mut decision).await? {
        // A namespace created in this pass stays recorded whatever else the status says.
        let recorded = decision.status.staging_namespace.clone();
        seen.problem = Some(problem);
        decision = decide::decide(ds, &seen, now);
        decision.status.staging_namespace = recorded;
    }
    if Some(&decision.status) != ds.status.as_ref() {
        ctx.apply_status(ds, &decision.status).await?;
    }
    update_metrics(&ctx, ds, &decision.status);
    perform(ds, &ctx, &decision, &found).await?;
    controller::succeeded(&ctx, ds);
    Ok(Action::requeue(decision.requeue))
}

pub use controller::error_policy;

/// What the children are built from, beside [`Observed`].
#[derive(Default)]
struct Found {
    policy: Option<BackupPolicy>,
    /// The namespace's signing key Secret to apply before a Job (when missing or stale).
    signing_key: Option<Secret>,
}

/// Reads what the drill decides from. A spec problem stops the reading there.
async fn observe(ds: &DrillSchedule, ctx: &Context, now: Timestamp) -> Result<(Observed, Found)> {
    let mut seen = Observed::default();
    let mut found = Found::default();
    let ns = ds.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let old = ds.status.clone().unwrap_or_default();
    let schedule = match CronSchedule::parse(&ds.spec.schedule, ds.spec.time_zone.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            seen.problem = Some(Problem::InvalidSchedule(e.to_string()));
            return Ok((seen, found));
        }
    };
    let Some(policy) = Api::<BackupPolicy>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&ds.spec.policy)
        .await
        .map_err(Error::get::<BackupPolicy>(&ds.spec.policy))?
    else {
        seen.problem = Some(Problem::PolicyNotFound {
            policy: ds.spec.policy.clone(),
            namespace: ns,
        });
        return Ok((seen, found));
    };
    let checked = checks::check_targets(ds, &policy)
        .and_then(|()| checks::check_staging_scope(ds))
        .and_then(|()| {
            // The drill runs backups of the policy and restores into its staging targets.
            let mut locations = identity::policy_locations(&policy.spec);
            locations.extend(identity::drill_locations(&ds.spec));
            Ok(identity::check(locations, ctx.agent.s3_ambient_identity)?)
        });
    if let Err(p) = checked {
        seen.problem = Some(p);
        return Ok((seen, found));
    }
    // The drill's backup and evidence Jobs mount the namespace's signing key.
    let ready = match crate::signing_key::desired(ctx, &ns, crate::signing_key::Check::Fresh).await
    {
        Ok(secret) => staging::observe(ds, ctx).await.map(|s| (secret, s)),
        Err(e) => Err(e),
    };
    match ready {
        Ok((secret, staging)) => (found.signing_key, seen.staging) = (secret, staging),
        Err(Error::Problem(p)) => {
            seen.problem = Some(p);
            return Ok((seen, found));
        }
        Err(e) => return Err(e),
    }
    // Never fire on creation: the first due time is the first one after the resource appeared.
    let reference = old
        .last_run
        .as_ref()
        .map(|r| r.started_at.0)
        .or_else(|| ds.creation_timestamp().map(|t| t.0))
        .unwrap_or(now);
    seen.due = schedule.next_after(reference);
    seen.run_now = ds
        .annotations()
        .get(ANNOTATION_DRILL_NOW)
        .filter(|t| !t.is_empty() && old.last_drill_now_token.as_ref() != Some(*t))
        .cloned();
    if let Some(active) = &old.active {
        seen.backups = backup_outcomes(ctx, &ns, ds, &active.id).await?;
        seen.restore = Api::<RestoreRequest>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&active.id)
            .await
            .map_err(Error::get::<RestoreRequest>(&active.id))?
            .and_then(|r| r.status);
    }
    seen.notification = notification_outcome(ctx, &ns, &old).await?;
    seen.policy = policy.status.clone();
    found.policy = Some(policy);
    Ok((seen, found))
}

/// Applies what the decision asks for: the staging namespace (created and recorded at once)
/// and its isolation, then the drill's backup Jobs or its RestoreRequest. A problem only an API
/// call reveals (a namespace taken, a permission the installation lacks) is returned for the
/// status, not as an error.
async fn apply_children(
    ds: &DrillSchedule,
    ctx: &Context,
    found: &Found,
    decision: &mut Decision,
) -> Result<Option<Problem>> {
    let ns = ds.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    if decision.staging == StagingAction::Ensure
        && let Some(sn) = &ds.spec.staging.namespace
    {
        match staging::ensure(ds, ctx, sn, &mut decision.status).await {
            Ok(()) => {}
            Err(Error::Problem(p)) => return Ok(Some(p)),
            Err(e) => return Err(e),
        }
    }
    let (Some(policy), Some(active)) = (&found.policy, &decision.status.active) else {
        return Ok(None);
    };
    let id = active.id.clone();
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    match decision.next {
        Next::Backup => {
            if let Some(secret) = &found.signing_key {
                crate::signing_key::apply(ctx, secret).await?;
            }
            let scopes = match crate::backup_policy::kubestate_scopes(ctx, policy, &ns).await {
                Ok(scopes) => scopes,
                Err(Error::Problem(p)) => return Ok(Some(p)),
                Err(e) => return Err(e),
            };
            let jobs = Api::<Job>::namespaced(ctx.client.clone(), &ns);
            for asset in policy
                .spec
                .assets
                .iter()
                .filter(|a| ds.spec.assets.contains(&a.name))
            {
                let job = on_demand_job(policy, asset, &id, &ctx.agent, &scopes)?;
                jobs.patch(&job.name_any(), &apply, &Patch::Apply(&job))
                    .await
                    .map_err(Error::apply::<Job>(&job.name_any()))?;
            }
        }
        Next::Restore => {
            let rr = restore_request(ds, &id, &active.started_at)?;
            Api::<RestoreRequest>::namespaced(ctx.client.clone(), &ns)
                .patch(&id, &apply, &Patch::Apply(&rr))
                .await
                .map_err(Error::apply::<RestoreRequest>(&id))?;
            if let Some(a) = decision.status.active.as_mut() {
                a.restore_request = Some(id);
            }
        }
        Next::Sleep | Next::Wait | Next::Finished => {}
    }
    Ok(None)
}

/// What the written status owes: its Events, the last drill's evidence and notify Jobs, the
/// staging namespace's deletion; then the status without them.
async fn perform(
    ds: &DrillSchedule,
    ctx: &Context,
    decision: &Decision,
    found: &Found,
) -> Result<()> {
    let written = &decision.status;
    let mut after = written.clone();
    if !written.pending_events.is_empty() {
        let published = crate::effects::publish(ctx, ds, &written.pending_events).await?;
        after.pending_events.retain(|e| !published.contains(&e.id));
    }
    for job in &written.pending_jobs {
        create_owed_job(ds, ctx, found, written, *job).await?;
        after.pending_jobs.retain(|j| j != job);
    }
    if decision.staging == StagingAction::Delete
        && let Some(recorded) = &written.staging_namespace
        && staging::remove(ctx, recorded).await?.is_none()
    {
        after.staging_namespace = None;
        staging::set_finalizer(ctx, ds, false).await?;
    }
    if &after != written {
        ctx.apply_status(ds, &after).await?;
    }
    Ok(())
}

/// Creates a Job the last drill owes. Created, never applied: one that exists (409) is this
/// drill's, made by a pass whose status write did not land, and stays as it is.
async fn create_owed_job(
    ds: &DrillSchedule,
    ctx: &Context,
    found: &Found,
    status: &DrillScheduleStatus,
    job: DrillJob,
) -> Result<()> {
    let ns = ds.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let Some(record) = &status.last_run else {
        return Ok(());
    };
    let built = match job {
        DrillJob::Evidence => {
            let Some(policy) = &found.policy else {
                return Ok(());
            };
            let restore = Api::<RestoreRequest>::namespaced(ctx.client.clone(), &ns)
                .get_opt(&record.id)
                .await
                .map_err(Error::get::<RestoreRequest>(&record.id))?
                .and_then(|r| r.status);
            let e = evidence::evidence(ds, record, restore.as_ref());
            Some(evidence::evidence_job(ds, policy, e, &ctx.agent)?)
        }
        DrillJob::Notify => {
            let (_, reason) = decide::verdict_reason(record.verdict);
            let note = decide::verdict_note(ds, record);
            let text = format!("Lifeboat {reason} {ns}/{}: {note}", ds.name_any());
            notify::notify_job(ds, &record.id, text, &ctx.agent)?
        }
    };
    let Some(built) = built else {
        return Ok(());
    };
    let name = built.name_any();
    match Api::<Job>::namespaced(ctx.client.clone(), &ns)
        .create(&PostParams::default(), &built)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(Error::create::<Job>(&name)(e)),
    }
}

/// A DrillSchedule being deleted: its staging namespace goes first (only the one it created,
/// by uid), then its finalizer.
async fn finalize(ds: &DrillSchedule, ctx: &Context) -> Result<Action> {
    if !ds.finalizers().iter().any(|f| f == staging::FINALIZER) {
        return Ok(Action::await_change());
    }
    if let Some(recorded) = ds
        .status
        .as_ref()
        .and_then(|s| s.staging_namespace.as_ref())
        && let Some(wait) = staging::remove(ctx, recorded).await?
    {
        return Ok(Action::requeue(wait));
    }
    staging::set_finalizer(ctx, ds, false).await?;
    Ok(Action::await_change())
}

/// The last drill's notify Job's outcome while its notification is pending and the Job was
/// made; `None` while it runs.
async fn notification_outcome(
    ctx: &Context,
    ns: &str,
    status: &DrillScheduleStatus,
) -> Result<Option<NotificationStatus>> {
    let pending = status
        .last_run
        .as_ref()
        .and_then(|r| r.notification.as_ref())
        .filter(|n| n.state == NotificationState::Pending);
    let Some(pending) = pending else {
        return Ok(None);
    };
    if status.pending_jobs.contains(&DrillJob::Notify) {
        return Ok(None);
    }
    let name = &pending.job;
    let Some(job) = Api::<Job>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(Error::get::<Job>(name))?
    else {
        // Deleted before it reported: it may or may not have sent; it is not sent again.
        return Ok(Some(NotificationStatus {
            state: NotificationState::Failed,
            job: name.clone(),
            reason: Some("JobNotFound".into()),
            message: "the notify Job was deleted before it reported: not sent again".into(),
        }));
    };
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}")))
        .await
        .map_err(Error::list::<Pod>())?;
    Ok(notify::outcome(&job, &pods.items))
}

/// The drill's RestoreRequest into the staging targets, executed at once, with the drill's
/// checks; owned by the drill. Mode `Latest` restores the newest backups taken before the
/// drill's start (the simulated disaster), pinned by `takenBefore`: a scheduled backup that
/// lands before the request is planned is not restored in their place. Mode `Fresh` restores
/// `latest`, its own backups once the policy recorded them.
fn restore_request(
    ds: &DrillSchedule,
    id: &str,
    started_at: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Result<RestoreRequest> {
    let spec = RestoreRequestSpec {
        source: lifeboat_api::restore_request::RestoreSource {
            policy: ds.spec.policy.clone(),
            backup_id: "latest".into(),
            taken_before: (ds.spec.backup == lifeboat_api::drill_schedule::DrillBackupMode::Latest)
                .then(|| started_at.clone()),
            location: None,
            identity_secret: None,
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
            names::LABEL_DRILL.to_owned(),
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
        let Some(job) = jobs
            .get_opt(&name)
            .await
            .map_err(Error::get::<Job>(&name))?
        else {
            continue;
        };
        let mine = pods
            .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}")))
            .await
            .map_err(Error::list::<Pod>())?;
        out.extend(outcome(&job, &mine.items));
    }
    Ok(out)
}

fn update_metrics(ctx: &Context, ds: &DrillSchedule, status: &DrillScheduleStatus) {
    let (ns, name) = (ds.namespace().unwrap_or_default(), ds.name_any());
    let (ns, name) = (ns.as_str(), name.as_str());
    let m = &ctx.metrics;
    // Exported before any drill ran: an overdue first drill is caught too.
    match &status.next_run_time {
        Some(t) => m
            .drill_next_run
            .with_label_values(&[ns, name])
            .set(t.0.as_second() as f64),
        None => {
            let _ = m.drill_next_run.remove_label_values(&[ns, name]);
        }
    }
    let Some(run) = &status.last_run else { return };
    if let Some(rto) = run.rto_seconds {
        m.drill_rto.with_label_values(&[ns, name]).set(rto);
    }
    if let Some(rpo) = run.rpo_seconds {
        m.drill_rpo.with_label_values(&[ns, name]).set(rpo);
    }
    m.drill_objective_met
        .with_label_values(&[ns, name, "rto"])
        .set(f64::from(u8::from(run.rto_met)));
    // A drill that measured no RPO (mode Fresh, or nothing restored) did not miss it either:
    // only a measured RPO is exported, so the alert on a missed objective fires on evidence.
    // A drill that found no backup to restore is a failed drill, which its own alert covers.
    if run.rpo_seconds.is_some() {
        m.drill_objective_met
            .with_label_values(&[ns, name, "rpo"])
            .set(f64::from(u8::from(run.rpo_met)));
    } else {
        let _ = m
            .drill_objective_met
            .remove_label_values(&[ns, name, "rpo"]);
    }
    let verdict = format!("{:?}", run.verdict);
    for v in ["Passed", "ObjectivesMissed", "Failed"] {
        if v != verdict {
            let _ = m.drill_last_run.remove_label_values(&[ns, name, v]);
        }
    }
    m.drill_last_run
        .with_label_values(&[ns, name, &verdict])
        .set(run.finished_at.0.as_second() as f64);
    let at_risk = conditions::status(&status.conditions, types::RTO_AT_RISK) == Some(Status::True);
    m.drill_rto_at_risk
        .with_label_values(&[ns, name])
        .set(f64::from(u8::from(at_risk)));
}
