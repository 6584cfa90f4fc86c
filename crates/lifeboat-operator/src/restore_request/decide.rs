//! A RestoreRequest's whole decision from what a reconcile observed: its next status (with the
//! Events its transitions owe), the Job to create, and when to look again. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use lifeboat_api::RestoreRequest;
use lifeboat_api::common::{EventType, PendingEvent};
use lifeboat_api::conditions::{Status, condition, find, set_condition, set_kstatus, types};
use lifeboat_api::restore_request::{
    PlannedRestore, RestorePhase, RestoreRequestStatus, StepState,
};

use super::plan::{self, Step};
use super::progress::{self, Next};
use crate::controller::requeue;
use crate::effects::{self, event};
use crate::error::Problem;
use crate::jobs::JobOutcome;
use crate::kubestate::{self, Access};

/// What a reconcile found.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The resolved steps (with their Kubernetes-state scope), or what keeps the request from
    /// any. Unset for a finished request, which reads nothing.
    pub plan: Result<Vec<Step>, Problem>,
    /// The Jobs the request owns, by name.
    pub existing: BTreeSet<String>,
    /// How the finished ones ended.
    pub outcomes: BTreeMap<String, JobOutcome>,
}

/// What the reconcile does.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: RestoreRequestStatus,
    /// The Job to create, if any.
    pub next: Next,
    /// When to look again (`None`: when something changes, or the TTL of a finished request).
    pub requeue: Option<Duration>,
}

pub fn decide(rr: &RestoreRequest, seen: &Observed, now: Timestamp) -> Decision {
    let old = rr.status.clone().unwrap_or_default();
    if old.phase.is_finished() {
        // Never run again; only what it still owes is performed.
        return Decision {
            status: old,
            next: Next::Done,
            requeue: None,
        };
    }
    let generation = rr.metadata.generation;
    let mut status = old.clone();
    status.observed_generation = generation;
    let validates = seen.plan.as_ref().is_ok_and(|steps| has_checks(rr, steps));
    let (next, requeue, problem) = match &seen.plan {
        Err(problem) => {
            set_condition(
                &mut status.conditions,
                condition(
                    types::READY,
                    Status::False,
                    problem.reason(),
                    problem.to_string(),
                    generation,
                    now,
                ),
            );
            (Next::Wait, Some(problem.recheck()), Some(problem))
        }
        Ok(steps) => {
            let (next, requeue) = with_plan(rr, steps, seen, &mut status, now);
            (next, requeue, None)
        }
    };
    // Under way (Argo CD's Progressing) until it succeeded, failed, was rolled back, or waits
    // for `execute: true` or for a spec problem to be fixed.
    let progressing = problem.is_none()
        && matches!(
            status.phase,
            RestorePhase::Pending
                | RestorePhase::SafetyBackup
                | RestorePhase::Restoring
                | RestorePhase::Validating
                | RestorePhase::RollingBack
        );
    set_kstatus(&mut status.conditions, progressing, generation, now);
    let owed = events(rr, &old, &status, validates, problem);
    status.pending_events = effects::owe(&old.pending_events, owed);
    Decision {
        status,
        next,
        requeue,
    }
}

/// The status of a request whose plan resolved: planned, or executing step by step.
fn with_plan(
    rr: &RestoreRequest,
    steps: &[Step],
    seen: &Observed,
    status: &mut RestoreRequestStatus,
    now: Timestamp,
) -> (Next, Option<Duration>) {
    let generation = rr.metadata.generation;
    let note = ignored_account_note(rr, steps);
    status.backup_id = Some(rr.spec.source.backup_id.clone())
        .filter(|id| id != "latest")
        .or_else(|| {
            let ids: BTreeSet<&str> = steps.iter().map(|s| s.backup_id.as_str()).collect();
            Some(ids.into_iter().collect::<Vec<_>>().join(","))
        });
    if !rr.spec.execute {
        status.phase = RestorePhase::Planned;
        status.plan = steps.iter().map(|s| s.planned.clone()).collect();
        let ready = condition(
            types::READY,
            Status::True,
            "Planned",
            format!("plan resolved; set execute: true to restore{note}"),
            generation,
            now,
        );
        set_condition(&mut status.conditions, ready);
        return (Next::Wait, Some(requeue::RESYNC));
    }
    status.safety_backups = rr
        .spec
        .rollback_on_failure
        .then(|| plan::safety_policy(&rr.spec.source.policy));
    let name = rr.metadata.name.clone().unwrap_or_default();
    let observed = progress::Observed {
        rr: &name,
        steps,
        has_checks: has_checks(rr, steps),
        rollback: rr.spec.rollback_on_failure,
        existing: &seen.existing,
        outcomes: &seen.outcomes,
    };
    let advanced = progress::advance(&observed, status, now);
    *status = advanced.status;
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
    let requeue = (!status.phase.is_finished()).then_some(requeue::RESTORE_POLL);
    (advanced.next, requeue)
}

/// Assets that write canary markers are checked for their backup's marker even when no check
/// is declared.
fn has_checks(rr: &RestoreRequest, steps: &[Step]) -> bool {
    !rr.spec.validation.checks.is_empty() || steps.iter().any(|s| s.asset.canary)
}

/// `; <why>` when the request names a ServiceAccount its Kubernetes-state steps will not use.
fn ignored_account_note(rr: &RestoreRequest, steps: &[Step]) -> String {
    let named = rr
        .spec
        .pod_template
        .as_ref()
        .is_some_and(|t| t.service_account_name.is_some());
    let state = steps
        .iter()
        .any(|s| s.asset.kind() == lifeboat_api::backup_policy::AssetKind::KubernetesState);
    if named && state {
        format!("; {}", kubestate::ignored_account_note(Access::Restore))
    } else {
        String::new()
    }
}

/// Whether a step's Job has ever been started.
fn started(state: Option<StepState>) -> bool {
    matches!(
        state,
        Some(StepState::Running | StepState::Done | StepState::Failed)
    )
}

/// The Events the transition from `old` to `new` owes, each with an id of its own: a step
/// started, the validation started (`validates`: the request runs checks), the request
/// finished, a problem appeared.
pub fn events(
    rr: &RestoreRequest,
    old: &RestoreRequestStatus,
    new: &RestoreRequestStatus,
    validates: bool,
    problem: Option<&Problem>,
) -> Vec<PendingEvent> {
    let mut out = Vec::new();
    // Reading the catalog or planning a point in time is progress, not a problem to warn about.
    if let Some(p) = problem
        && !matches!(
            p,
            Problem::ReadingCatalog(_) | Problem::PlanningPointInTime(_)
        )
        && let Some(e) = problem_event(&old.conditions, &new.conditions, p, "Plan")
    {
        out.push(e);
    }
    let before = |p: &PlannedRestore| old.plan.iter().find(|w| w.asset == p.asset);
    for p in &new.plan {
        let was = before(p);
        let asset = &p.asset;
        if started(p.safety_backup) && !started(was.and_then(|w| w.safety_backup)) {
            out.push(event(
                format!("SafetyBackupStarted/{asset}"),
                EventType::Normal,
                "SafetyBackupStarted",
                format!("SafetyBackup/{asset}"),
                format!(
                    "backing up {} before restoring into it, to roll back to if the restore fails",
                    p.target
                ),
            ));
        }
        if started(p.state) && !started(was.and_then(|w| w.state)) {
            out.push(event(
                format!("RestoreStarted/{asset}"),
                EventType::Normal,
                "RestoreStarted",
                format!("Restore/{asset}"),
                format!(
                    "restoring asset {asset} from backup {} into {}",
                    p.backup_id, p.target
                ),
            ));
        }
        if started(p.rollback) && !started(was.and_then(|w| w.rollback)) {
            out.push(event(
                format!("RollbackStarted/{asset}"),
                EventType::Warning,
                "RollbackStarted",
                format!("Rollback/{asset}"),
                format!(
                    "restoring safety backup {} into {}",
                    p.safety_backup_id.clone().unwrap_or_default(),
                    p.target
                ),
            ));
        }
    }
    let validating = |s: &RestoreRequestStatus| {
        validates
            && s.phase >= RestorePhase::Validating
            && !s.plan.is_empty()
            && s.plan.iter().all(|p| p.state == Some(StepState::Done))
    };
    if validating(new) && !validating(old) {
        out.push(event(
            "ValidationStarted",
            EventType::Normal,
            "ValidationStarted",
            "Validate",
            format!(
                "running {} validation checks",
                rr.spec.validation.checks.len()
            ),
        ));
    }
    if new.phase.is_finished() && !old.phase.is_finished() {
        let (type_, reason) = match new.phase {
            RestorePhase::Succeeded => (EventType::Normal, "RestoreSucceeded"),
            RestorePhase::RolledBack => (EventType::Warning, "RestoreRolledBack"),
            _ => (EventType::Warning, "RestoreFailed"),
        };
        let note = match (new.phase, find(&new.conditions, types::READY)) {
            (RestorePhase::Succeeded, _) | (_, None) => format!(
                "restored and validated; RTO {}",
                new.rto.clone().unwrap_or_default()
            ),
            (_, Some(c)) => format!("{}: {}", c.reason, c.message),
        };
        out.push(event("Finish", type_, reason, "Finish", note));
    }
    out
}

/// The Warning a problem owes when `Ready` turns to it (from another status or reason).
pub fn problem_event(
    old: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    new: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    problem: &Problem,
    action: &str,
) -> Option<PendingEvent> {
    let now = find(new, types::READY)?;
    let changed = find(old, types::READY)
        .is_none_or(|was| was.status != now.status || was.reason != now.reason);
    changed.then(|| {
        event(
            format!(
                "{}/{}",
                problem.reason(),
                now.last_transition_time.0.as_second()
            ),
            EventType::Warning,
            problem.reason(),
            action,
            problem.to_string(),
        )
    })
}
