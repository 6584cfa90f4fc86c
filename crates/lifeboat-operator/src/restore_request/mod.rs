//! The RestoreRequest controller: resolve the backup and show the plan; with `execute: true` run
//! one restore Job per asset in order, then the validation Job, and record the achieved RTO. With
//! rollback asked, each target is backed up first and restored from that safety backup if a
//! restore or a check fails. Phases only move forward and a finished request never runs again.
//!
//! The reconcile is the pipeline every controller follows (crate::controller): [`observe`],
//! [`decide::decide`], [`apply_children`], the status write, [`perform`].

pub mod children;
pub mod decide;
pub mod plan;
pub mod progress;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use lifeboat_api::backup_policy::AssetSource;
use lifeboat_api::common::Target;
use lifeboat_api::identity;
use lifeboat_api::restore_request::RestoreRequestStatus;
use lifeboat_api::{BackupPolicy, RestoreRequest};
use tracing::instrument;

use crate::config::FIELD_MANAGER;
use crate::context::Context;
use crate::controller;
use crate::error::{CatalogFailure, Error, Problem, Result};
use crate::jobs::{JobOutcome, outcome};
use crate::kubestate::{self, Access};
use decide::{Decision, Observed};
use progress::Next;

const KIND: &str = "RestoreRequest";

#[instrument(skip_all, fields(namespace = obj.namespace().unwrap_or_default(), name = obj.name_any()))]
pub async fn reconcile(
    obj: Arc<DeserializeGuard<RestoreRequest>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let _timer = controller::measure(&ctx, KIND);
    let rr = controller::valid(&obj)?;
    let now = Timestamp::now();
    let (seen, found) = observe(rr, &ctx).await?;
    let mut decision = decide::decide(rr, &seen, now);
    if let Some(problem) = apply_children(rr, &ctx, &seen, &found, &decision).await? {
        let seen = Observed {
            plan: Err(problem),
            ..seen
        };
        decision = decide::decide(rr, &seen, now);
    }
    if Some(&decision.status) != rr.status.as_ref() {
        ctx.apply_status(rr, &decision.status).await?;
    }
    let action = perform(rr, &ctx, decision, now).await?;
    controller::succeeded(&ctx, rr);
    Ok(action)
}

pub use controller::error_policy;

/// What the children are built from, beside [`Observed`].
#[derive(Default)]
struct Found {
    policy: Option<BackupPolicy>,
    /// The Job to apply before there is a plan: the catalog Job (a location to read, and no
    /// catalog yet), or a point-in-time plan Job.
    reading_job: Option<Job>,
    /// The namespace's signing key Secret to apply before a Job (when it is missing or stale).
    signing_key: Option<Secret>,
}

/// Reads what the request decides from: its policy, the plan, and (executing) its Jobs and
/// their pods. A finished request reads nothing.
async fn observe(rr: &RestoreRequest, ctx: &Context) -> Result<(Observed, Found)> {
    let mut seen = Observed {
        plan: Ok(Vec::new()),
        existing: BTreeSet::new(),
        outcomes: BTreeMap::new(),
    };
    let mut found = Found::default();
    if rr.status.as_ref().is_some_and(|s| s.phase.is_finished()) {
        return Ok((seen, found));
    }
    let ns = rr.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let policy_name = &rr.spec.source.policy;
    let policy = Api::<BackupPolicy>::namespaced(ctx.client.clone(), &ns)
        .get_opt(policy_name)
        .await
        .map_err(Error::get::<BackupPolicy>(policy_name))?;
    // Before the catalog Job: every location the request or its policy names (the policy's
    // destination is read and its buckets are the default targets).
    let mut locations = identity::restore_locations(&rr.spec);
    if let Some(policy) = &policy {
        locations.extend(identity::policy_locations(&policy.spec));
    }
    if let Err(refused) = identity::check(locations, ctx.agent.s3_ambient_identity) {
        seen.plan = Err(refused.into());
        return Ok((seen, found));
    }
    let resolved = match (plan::catalog_location(rr, policy.as_ref()), &policy) {
        // A location is read, whether or not a policy exists: the policy's status describes its
        // own destination, and a rebuilt cluster has neither.
        (Some(location), _) => {
            let read = match plan::executing_catalog(rr) {
                Some(pinned) => Ok(pinned),
                None => catalog(rr, ctx, &ns, location, &mut found).await?,
            };
            match read {
                Ok(catalog) => plan::from_catalog(rr, policy.as_ref(), &catalog),
                Err(problem) => {
                    seen.plan = Err(problem);
                    return Ok((seen, found));
                }
            }
        }
        (None, Some(policy)) => plan::resolve(rr, policy),
        (None, None) => {
            seen.plan = Err(Problem::PolicyNotFound {
                policy: policy_name.clone(),
                namespace: ns,
            });
            return Ok((seen, found));
        }
    };
    seen.plan = match resolved {
        Ok(steps) => scoped(ctx, &ns, steps).await?,
        Err(e) => Err(e.into()),
    };
    if let Ok(steps) = &mut seen.plan
        && let Err(problem) =
            point_in_time_plans(rr, ctx, &ns, policy.as_ref(), steps, &mut found).await?
    {
        seen.plan = Err(problem);
    }
    found.policy = policy;
    if !rr.spec.execute || seen.plan.is_err() {
        return Ok((seen, found));
    }
    // Executing: every Job mounts the namespace's signing key, which must exist first.
    match crate::signing_key::desired(ctx, &ns, crate::signing_key::Check::Fresh).await {
        Ok(secret) => found.signing_key = secret,
        Err(Error::Problem(p)) => {
            seen.plan = Err(p);
            return Ok((seen, found));
        }
        Err(e) => return Err(e),
    }
    let (existing, outcomes) = owned_jobs(rr, ctx, &ns).await?;
    seen.existing = existing;
    seen.outcomes = outcomes;
    Ok((seen, found))
}

/// The catalog at `location`, read by the request's catalog Job: the catalog once it finished
/// well, else why there is none yet (the Job to apply is left in `found`) or none at all. The
/// Job mounts the namespace's signing key, which must exist first.
async fn catalog(
    rr: &RestoreRequest,
    ctx: &Context,
    ns: &str,
    location: lifeboat_api::common::Destination,
    found: &mut Found,
) -> Result<std::result::Result<lifeboat_api::agent_result::Catalog, Problem>> {
    let job = children::catalog_job(rr, location, &ctx.agent)?;
    let name = job.name_any();
    let Some((existing, pods)) = owned_job_pods(rr, ctx, ns, &name).await? else {
        if let Some(problem) = ask_for_job(ctx, ns, job, found).await? {
            return Ok(Err(problem));
        }
        return Ok(Err(Problem::ReadingCatalog(name)));
    };
    let Some(outcome) = outcome(&existing, &pods) else {
        return Ok(Err(Problem::ReadingCatalog(name)));
    };
    Ok(match (outcome.result, crate::jobs::catalog(&pods)) {
        (Ok(_), Some(catalog)) => Ok(catalog),
        (Ok(_), None) => Err(Problem::Catalog {
            reason: CatalogFailure::CatalogFailed,
            message: format!("catalog Job {name} completed without reporting a catalog"),
        }),
        (Err(failure), _) => Err(Problem::Catalog {
            reason: CatalogFailure::from_class(
                lifeboat_api::agent_result::ErrorClass::from_reason(&failure.reason),
            ),
            message: format!(
                "catalog Job {name}: {}: {}; fix it and create a new RestoreRequest (or edit this one)",
                failure.reason, failure.message
            ),
        }),
    })
}

/// The request's own Job `name` and its pods, once it exists (a Job of that name that the
/// request does not own is not its report).
async fn owned_job_pods(
    rr: &RestoreRequest,
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<Option<(Job, Vec<Pod>)>> {
    let existing = Api::<Job>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(Error::get::<Job>(name))?
        .filter(|j| {
            j.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == rr.uid().as_ref())
        });
    let Some(job) = existing else {
        return Ok(None);
    };
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}")))
        .await
        .map_err(Error::list::<Pod>())?
        .items;
    Ok(Some((job, pods)))
}

/// Leaves a reading Job (catalog or plan) in `found` to be applied, with the namespace's
/// signing key it mounts; without a master key that is the problem instead.
async fn ask_for_job(
    ctx: &Context,
    ns: &str,
    job: Job,
    found: &mut Found,
) -> Result<Option<Problem>> {
    match crate::signing_key::desired(ctx, ns, crate::signing_key::Check::Fresh).await {
        Ok(secret) => found.signing_key = secret,
        Err(Error::Problem(p)) => return Ok(Some(p)),
        Err(e) => return Err(e),
    }
    found.reading_job = Some(job);
    Ok(None)
}

/// Each `dataVolume` step's plan, from its plan Job: what the agent chose (base backup, WAL,
/// the time) once the Job finished well; else why there is none yet (the Job to apply is left
/// in `found`, with the namespace's signing key it mounts) or none at all. Executing, the plan
/// Job is not waited for (the restore plans again before it writes): its finished plan is only
/// kept in status.
async fn point_in_time_plans(
    rr: &RestoreRequest,
    ctx: &Context,
    ns: &str,
    policy: Option<&BackupPolicy>,
    steps: &mut [plan::Step],
    found: &mut Found,
) -> Result<std::result::Result<(), Problem>> {
    for step in steps.iter_mut() {
        if step.target.as_ref().and_then(|t| t.data_volume()).is_none() {
            continue;
        }
        let job = children::plan_job(rr, policy, step, &ctx.agent)?;
        let name = job.name_any();
        let (existing, pods) = match owned_job_pods(rr, ctx, ns, &name).await? {
            Some(job_and_pods) => job_and_pods,
            None if rr.spec.execute => continue,
            None => {
                if let Some(problem) = ask_for_job(ctx, ns, job, found).await? {
                    return Ok(Err(problem));
                }
                return Ok(Err(Problem::PlanningPointInTime(name)));
            }
        };
        let outcome = match outcome(&existing, &pods) {
            Some(o) => o,
            None if rr.spec.execute => continue,
            None => return Ok(Err(Problem::PlanningPointInTime(name))),
        };
        match (outcome.result, crate::jobs::point_in_time(&pods)) {
            (Ok(_), Some(chosen)) => {
                step.planned.backup_id = chosen.base_backup_id.clone();
                step.planned.snapshot_time = chosen
                    .recovers_to
                    .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
                step.planned.point_in_time = Some(chosen);
            }
            _ if rr.spec.execute => {}
            (Ok(_), None) => {
                return Ok(Err(Problem::PointInTimeUnavailable(format!(
                    "plan Job {name} completed without reporting a plan"
                ))));
            }
            (Err(failure), _) => {
                return Ok(Err(Problem::PointInTimeUnavailable(format!(
                    "plan Job {name}: {}: {}; fix it and create a new RestoreRequest (or edit this one)",
                    failure.reason, failure.message
                ))));
            }
        }
    }
    Ok(Ok(()))
}

/// Where each Kubernetes-state Job may write, from the platform team's Namespace labels: a
/// step reaching beyond it stops the request before any Job runs.
async fn scoped(
    ctx: &Context,
    ns: &str,
    mut steps: Vec<plan::Step>,
) -> Result<std::result::Result<Vec<plan::Step>, Problem>> {
    for step in &mut steps {
        let AssetSource::KubernetesState(state) = &step.asset.source else {
            continue;
        };
        let into = step.target.as_ref().and_then(|t| match &t.to {
            Target::KubernetesState(k) => Some(k),
            _ => None,
        });
        let reach = kubestate::restore_reach(state, into);
        match kubestate::scope(&ctx.client, Access::Restore, ns, &reach).await {
            Ok(scope) => step.scope = Some(scope),
            Err(Error::Problem(p)) => return Ok(Err(p)),
            Err(e) => return Err(e),
        }
    }
    Ok(Ok(steps))
}

/// The Jobs `rr` owns by name, and how the finished ones ended.
async fn owned_jobs(
    rr: &RestoreRequest,
    ctx: &Context,
    ns: &str,
) -> Result<(BTreeSet<String>, BTreeMap<String, JobOutcome>)> {
    let selector = format!(
        "lifeboat.dev/restore={}",
        crate::names::label_value(&rr.name_any())
    );
    let lp = ListParams::default().labels(&selector);
    let owned: Vec<Job> = Api::<Job>::namespaced(ctx.client.clone(), ns)
        .list(&lp)
        .await
        .map_err(Error::list::<Job>())?
        .into_iter()
        .filter(|j| {
            j.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == rr.uid().as_ref())
        })
        .collect();
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&lp)
        .await
        .map_err(Error::list::<Pod>())?;
    let existing = owned.iter().map(ResourceExt::name_any).collect();
    let outcomes = owned
        .iter()
        .filter_map(|j| {
            let mine: Vec<Pod> = pods
                .iter()
                .filter(|p| p.labels().get("batch.kubernetes.io/job-name") == Some(&j.name_any()))
                .cloned()
                .collect();
            outcome(j, &mine).map(|o| (o.job.clone(), o))
        })
        .collect();
    Ok((existing, outcomes))
}

/// Applies what the decision asks for: the namespace's signing key and the next Job (with the
/// Kubernetes-state account it runs as). A problem only an API call reveals (a scope the
/// installation refuses) is returned for the status, not as an error.
async fn apply_children(
    rr: &RestoreRequest,
    ctx: &Context,
    seen: &Observed,
    found: &Found,
    decision: &Decision,
) -> Result<Option<Problem>> {
    let ns = rr.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    if let Err(Problem::Scope(_)) = &seen.plan {
        // What a withdrawn label no longer allows goes, even though nothing runs.
        kubestate::revoke_withdrawn(&ctx.client, Access::Restore, &ns).await?;
    }
    if let Some(job) = &found.reading_job {
        if let Some(secret) = &found.signing_key {
            crate::signing_key::apply(ctx, secret).await?;
        }
        apply_job(ctx, &ns, job).await?;
        return Ok(None);
    }
    let Ok(steps) = &seen.plan else {
        return Ok(None);
    };
    let policy = found.policy.as_ref();
    let job = match (&decision.next, policy) {
        (Next::SafetyBackup(i), Some(policy)) => {
            children::safety_job(rr, policy, &steps[*i], &ctx.agent)?
        }
        (Next::Rollback(i, id), Some(policy)) => {
            children::rollback_job(rr, policy, &steps[*i], id, &ctx.agent)?
        }
        // The plan refuses a rollback without its policy (plan::from_catalog).
        (Next::SafetyBackup(_) | Next::Rollback(..), None) => {
            return Ok(Some(Problem::Plan(plan::PlanError::RollbackWithoutPolicy(
                rr.spec.source.policy.clone(),
            ))));
        }
        (Next::Restore(i), _) => {
            if let Some(scope) = &steps[*i].scope {
                let granted = kubestate::grant(
                    &ctx.client,
                    &ctx.agent.kubestate_roles,
                    Access::Restore,
                    &ns,
                    scope,
                )
                .await;
                match granted {
                    Ok(()) => {}
                    Err(Error::Problem(p)) => return Ok(Some(p)),
                    Err(e) => return Err(e),
                }
            }
            children::restore_job(rr, policy, &steps[*i], &ctx.agent)?
        }
        (Next::Validate, _) => children::validate_job(rr, policy, steps, &ctx.agent)?,
        (Next::Wait | Next::Done, _) => return Ok(None),
    };
    if let Some(secret) = &found.signing_key {
        crate::signing_key::apply(ctx, secret).await?;
    }
    apply_job(ctx, &ns, &job).await?;
    Ok(None)
}

async fn apply_job(ctx: &Context, ns: &str, job: &Job) -> Result<()> {
    let name = job.name_any();
    Api::<Job>::namespaced(ctx.client.clone(), ns)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(job),
        )
        .await
        .map_err(Error::apply::<Job>(&name))?;
    Ok(())
}

/// What the written status owes: its Events, then (finished) the request's deletion once its
/// TTL has passed.
async fn perform(
    rr: &RestoreRequest,
    ctx: &Context,
    decision: Decision,
    now: Timestamp,
) -> Result<Action> {
    let Decision {
        status, requeue, ..
    } = decision;
    if !status.pending_events.is_empty() {
        let published = crate::effects::publish(ctx, rr, &status.pending_events).await?;
        let mut after = status.clone();
        after.pending_events.retain(|e| !published.contains(&e.id));
        ctx.apply_status(rr, &after).await?;
    }
    if status.phase.is_finished() {
        return expire(rr, ctx, &status, now).await;
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Deletes a finished request once its TTL has passed.
async fn expire(
    rr: &RestoreRequest,
    ctx: &Context,
    status: &RestoreRequestStatus,
    now: Timestamp,
) -> Result<Action> {
    let (Some(ttl), Some(finished)) = (&rr.spec.ttl_after_finished, &status.finished_at) else {
        return Ok(Action::await_change());
    };
    let due = finished
        .0
        .as_second()
        .saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
    if now.as_second() < due {
        return Ok(Action::requeue(std::time::Duration::from_secs(
            u64::try_from(due - now.as_second()).unwrap_or(1).max(1),
        )));
    }
    let ns = rr.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let name = rr.name_any();
    match Api::<RestoreRequest>::namespaced(ctx.client.clone(), &ns)
        .delete(&name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(Error::delete::<RestoreRequest>(&name)(e)),
    }
}
