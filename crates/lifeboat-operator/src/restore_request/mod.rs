//! The RestoreRequest controller: resolve the backup and show the plan; with `execute: true` run
//! one restore Job per asset in order, then the validation Job, and record the achieved RTO. With
//! rollback asked, each target is backed up first and restored from that safety backup if a
//! restore or a check fails. Phases only move forward and a finished request never runs again.

pub mod children;
pub mod plan;
pub mod progress;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use lifeboat_api::conditions::{Status, condition, set_condition, types};
use lifeboat_api::restore_request::{RestorePhase, RestoreRequestStatus};
use lifeboat_api::{BackupPolicy, RestoreRequest};
use tracing::{instrument, warn};

use crate::config::FIELD_MANAGER;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::jobs::{JobOutcome, outcome};
use crate::kubestate::{self, Access};
use progress::Next;

const KIND: &str = "RestoreRequest";
/// How often a running restore is looked at besides Job events.
const POLL: Duration = Duration::from_secs(30);

#[instrument(skip_all, fields(namespace = rr.namespace().unwrap_or_default(), name = rr.name_any()))]
pub async fn reconcile(rr: Arc<RestoreRequest>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx
        .metrics
        .reconcile_duration
        .with_label_values(&[KIND])
        .start_timer();
    ctx.metrics.reconciles.with_label_values(&[KIND]).inc();
    let ns = rr.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let old = rr.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let generation = rr.metadata.generation;

    if old.phase.is_finished() {
        return expire(&rr, &ctx, &ns, &old, now).await;
    }

    let policies = Api::<BackupPolicy>::namespaced(ctx.client.clone(), &ns);
    let Some(policy) = policies.get_opt(&rr.spec.source.policy).await? else {
        let message = format!("BackupPolicy {:?} not found in {ns}", rr.spec.source.policy);
        return report_problem(&rr, &ctx, old, "PolicyNotFound", message).await;
    };
    let mut steps = match plan::resolve(&rr, &policy) {
        Ok(steps) => steps,
        Err(e) => return report_problem(&rr, &ctx, old, e.reason(), e.to_string()).await,
    };
    // Where a Kubernetes-state restore may write, from the platform team's Namespace labels:
    // a step reaching beyond it stops the request before any Job runs.
    for step in &mut steps {
        let Some(state) = &step.asset.kubernetes_state else {
            continue;
        };
        let into = step
            .target
            .as_ref()
            .and_then(|t| t.kubernetes_state.as_ref());
        let reach = kubestate::restore_reach(state, into);
        match kubestate::scope(&ctx.client, Access::Restore, &ns, &reach).await {
            Ok(scope) => step.scope = Some(scope),
            Err(Error::Scope(e)) => {
                kubestate::revoke_withdrawn(&ctx.client, Access::Restore, &ns).await?;
                return report_problem(&rr, &ctx, old, e.reason(), e.to_string()).await;
            }
            Err(e) => return Err(e),
        }
    }
    let note = ignored_account_note(&rr, &steps);

    let mut status = old.clone();
    status.observed_generation = generation;
    status.backup_id = Some(rr.spec.source.backup_id.clone())
        .filter(|id| id != "latest")
        .or_else(|| {
            let ids: BTreeSet<&str> = steps.iter().map(|s| s.backup_id.as_str()).collect();
            Some(ids.into_iter().collect::<Vec<_>>().join(","))
        });
    if !rr.spec.execute {
        status.phase = RestorePhase::Planned;
        status.plan = steps.iter().map(|s| s.planned.clone()).collect();
        set_condition(
            &mut status.conditions,
            condition(
                types::READY,
                Status::True,
                "Planned",
                format!("plan resolved; set execute: true to restore{note}"),
                generation,
                now,
            ),
        );
        if old != status {
            ctx.apply_status(rr.as_ref(), &status).await?;
        }
        return Ok(Action::requeue(Duration::from_secs(300)));
    }

    // Executing: every Job mounts the namespace's signing key, which must exist first.
    match crate::signing_key::ensure(&ctx, &ns).await {
        Err(e @ Error::SigningKeyMissing(_)) => {
            return report_problem(&rr, &ctx, old, e.reason(), e.to_string()).await;
        }
        other => other?,
    }

    // Executing: read the Jobs this request owns.
    let selector = format!(
        "lifeboat.dev/restore={}",
        crate::names::label_value(&rr.name_any())
    );
    let lp = ListParams::default().labels(&selector);
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), &ns);
    let owned: Vec<Job> = jobs
        .list(&lp)
        .await?
        .into_iter()
        .filter(|j| {
            j.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == rr.uid().as_ref())
        })
        .collect();
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
        .list(&lp)
        .await?;
    let existing: BTreeSet<String> = owned.iter().map(ResourceExt::name_any).collect();
    let outcomes: BTreeMap<String, JobOutcome> = owned
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

    status.safety_backups = rr
        .spec
        .rollback_on_failure
        .then(|| plan::safety_policy(&rr.spec.source.policy));
    let name = rr.name_any();
    let observed = progress::Observed {
        rr: &name,
        steps: &steps,
        // Assets that write canary markers are checked for their backup's marker even when no
        // check is declared.
        has_checks: !rr.spec.validation.checks.is_empty() || steps.iter().any(|s| s.asset.canary),
        rollback: rr.spec.rollback_on_failure,
        existing: &existing,
        outcomes: &outcomes,
    };
    let advanced = progress::advance(&observed, &status, now);
    let mut status = advanced.status;
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    match advanced.next {
        Next::SafetyBackup(i) => {
            let job = children::safety_job(&rr, &policy, &steps[i], &ctx.agent)?;
            jobs.patch(&job.name_any(), &apply, &Patch::Apply(&job))
                .await?;
            ctx.publish(
                &rr.object_ref(&()),
                EventType::Normal,
                "SafetyBackupStarted",
                format!("SafetyBackup/{}", steps[i].asset.name),
                format!(
                    "backing up {} before restoring into it, to roll back to if the restore fails",
                    steps[i].planned.target
                ),
            )
            .await;
        }
        Next::Rollback(i) => {
            let id = status.plan[i].safety_backup_id.clone().ok_or_else(|| {
                Error::InvalidSpec(format!(
                    "no safety backup recorded for asset {}",
                    steps[i].asset.name
                ))
            })?;
            let job = children::rollback_job(&rr, &policy, &steps[i], &id, &ctx.agent)?;
            jobs.patch(&job.name_any(), &apply, &Patch::Apply(&job))
                .await?;
            ctx.publish(
                &rr.object_ref(&()),
                EventType::Warning,
                "RollbackStarted",
                format!("Rollback/{}", steps[i].asset.name),
                format!(
                    "restoring safety backup {id} into {}",
                    steps[i].planned.target
                ),
            )
            .await;
        }
        Next::Restore(i) => {
            if let Some(scope) = &steps[i].scope {
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
                    Err(Error::Scope(e)) => {
                        return report_problem(&rr, &ctx, old, e.reason(), e.to_string()).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            let job = children::restore_job(&rr, &policy, &steps[i], &ctx.agent)?;
            jobs.patch(&job.name_any(), &apply, &Patch::Apply(&job))
                .await?;
            ctx.publish(
                &rr.object_ref(&()),
                EventType::Normal,
                "RestoreStarted",
                format!("Restore/{}", steps[i].asset.name),
                format!(
                    "restoring asset {} from backup {} into {}",
                    steps[i].asset.name, steps[i].backup_id, steps[i].planned.target
                ),
            )
            .await;
        }
        Next::Validate => {
            let job = children::validate_job(&rr, &policy, &steps, &ctx.agent)?;
            jobs.patch(&job.name_any(), &apply, &Patch::Apply(&job))
                .await?;
            ctx.publish(
                &rr.object_ref(&()),
                EventType::Normal,
                "ValidationStarted",
                "Validate".into(),
                format!(
                    "running {} validation checks",
                    rr.spec.validation.checks.len()
                ),
            )
            .await;
        }
        Next::Wait | Next::Done => {}
    }
    let ready = match (&advanced.failure, status.phase) {
        (Some((reason, message)), _) => condition(
            types::READY,
            Status::False,
            reason,
            message.clone(),
            generation,
            now,
        ),
        (None, RestorePhase::Succeeded) => condition(
            types::READY,
            Status::True,
            "Succeeded",
            format!(
                "restored and validated in {}",
                status.rto.clone().unwrap_or_default()
            ),
            generation,
            now,
        ),
        (None, phase) => condition(
            types::READY,
            Status::False,
            "InProgress",
            format!("{phase:?}{note}"),
            generation,
            now,
        ),
    };
    set_condition(&mut status.conditions, ready);
    if status.phase.is_finished() && !old.phase.is_finished() {
        let (kind, reason) = match status.phase {
            RestorePhase::Succeeded => (EventType::Normal, "RestoreSucceeded"),
            RestorePhase::RolledBack => (EventType::Warning, "RestoreRolledBack"),
            _ => (EventType::Warning, "RestoreFailed"),
        };
        let note = advanced.failure.as_ref().map_or_else(
            || {
                format!(
                    "restored and validated; RTO {}",
                    status.rto.clone().unwrap_or_default()
                )
            },
            |(r, m)| format!("{r}: {m}"),
        );
        ctx.publish(&rr.object_ref(&()), kind, reason, "Finish".into(), note)
            .await;
    }
    if old != status {
        ctx.apply_status(rr.as_ref(), &status).await?;
    }
    if status.phase.is_finished() {
        return expire(&rr, &ctx, &ns, &status, now).await;
    }
    Ok(Action::requeue(POLL))
}

pub fn error_policy(rr: Arc<RestoreRequest>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[KIND, error.reason()])
        .inc();
    warn!(namespace = rr.namespace(), name = rr.name_any(), reason = error.reason(), %error, "reconcile failed");
    Action::requeue(if error.needs_user() {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(15)
    })
}

/// `; <why>` when the request names a ServiceAccount its Kubernetes-state steps will not use.
fn ignored_account_note(rr: &RestoreRequest, steps: &[plan::Step]) -> String {
    let named = rr
        .spec
        .pod_template
        .as_ref()
        .is_some_and(|t| t.service_account_name.is_some());
    if named && steps.iter().any(|s| s.asset.kubernetes_state.is_some()) {
        format!("; {}", kubestate::ignored_account_note(Access::Restore))
    } else {
        String::new()
    }
}

/// A request that cannot go on yet (no policy, no backup): `Pending` with the reason; retried.
async fn report_problem(
    rr: &RestoreRequest,
    ctx: &Context,
    old: RestoreRequestStatus,
    reason: &str,
    message: String,
) -> Result<Action> {
    let mut status = old.clone();
    status.observed_generation = rr.metadata.generation;
    ctx.report_not_ready(
        &rr.object_ref(&()),
        &mut status.conditions,
        rr.metadata.generation,
        reason,
        message,
        "Plan",
    )
    .await;
    if old != status {
        ctx.apply_status(rr, &status).await?;
    }
    Ok(Action::requeue(Duration::from_secs(30)))
}

/// Deletes a finished request once its TTL has passed.
async fn expire(
    rr: &RestoreRequest,
    ctx: &Context,
    ns: &str,
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
    if now.as_second() >= due {
        let api = Api::<RestoreRequest>::namespaced(ctx.client.clone(), ns);
        match api
            .delete(&rr.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(Action::await_change());
    }
    Ok(Action::requeue(Duration::from_secs(
        u64::try_from(due - now.as_second()).unwrap_or(1).max(1),
    )))
}
