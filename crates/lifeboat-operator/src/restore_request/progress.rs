//! Where an executing RestoreRequest is, decided from the Jobs it owns. Pure. Phases only move
//! forward; steps run one at a time in the declared order (a drill restores PostgreSQL before
//! the services that read it).

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use lifeboat_api::restore_request::{CheckResult, RestorePhase, RestoreRequestStatus};

use super::plan::Step;
use crate::jobs::JobOutcome;

/// A Job the reconcile must create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// The safety backup of step `i`'s target (rollback asked), before anything is restored.
    SafetyBackup(usize),
    Restore(usize),
    Validate,
    /// Step `i`'s target restored from its safety backup.
    Rollback(usize),
    Wait,
    Done,
}

/// The failure that ended a request, for the Ready condition.
pub struct Outcome {
    pub status: RestoreRequestStatus,
    pub next: Next,
    pub failure: Option<(String, String)>,
}

pub fn restore_job_name(rr: &str, asset: &str) -> String {
    crate::names::bounded_name(&[rr, "restore", asset], crate::names::NAME_MAX)
}

pub fn validate_job_name(rr: &str) -> String {
    crate::names::bounded_name(&[rr, "validate"], crate::names::NAME_MAX)
}

pub fn safety_job_name(rr: &str, asset: &str) -> String {
    crate::names::bounded_name(&[rr, "safety", asset], crate::names::NAME_MAX)
}

pub fn rollback_job_name(rr: &str, asset: &str) -> String {
    crate::names::bounded_name(&[rr, "rollback", asset], crate::names::NAME_MAX)
}

/// What the reconcile knows about the request and its Jobs.
pub struct Observed<'a> {
    pub rr: &'a str,
    pub steps: &'a [Step],
    pub has_checks: bool,
    pub rollback: bool,
    pub existing: &'a BTreeSet<String>,
    pub outcomes: &'a BTreeMap<String, JobOutcome>,
}

impl Observed<'_> {
    /// Create the Job `name` unless it exists already; wait for it either way.
    fn create_or_wait(&self, name: &str, create: Next) -> Next {
        if self.existing.contains(name) {
            Next::Wait
        } else {
            create
        }
    }
}

/// Advances `old` given the steps, which Jobs exist and how the finished ones ended.
///
/// With rollback asked: a safety backup of every target first (a failed one stops the request
/// before anything is touched); then the restores and the checks; if a restore or a check fails,
/// every target touched so far is restored from its safety backup (`RolledBack`), or, if that
/// fails too, the request is `Failed` with both reasons and the safety backups are kept.
pub fn advance(o: &Observed<'_>, old: &RestoreRequestStatus, now: Timestamp) -> Outcome {
    let mut status = old.clone();
    let started = old.started_at.clone().unwrap_or(Time(now));
    status.started_at = Some(started.clone());
    status.plan = o.steps.iter().map(|s| s.planned.clone()).collect();
    let finish = |status: &mut RestoreRequestStatus, phase: RestorePhase, at: Timestamp| {
        status.phase = phase;
        status.finished_at = Some(Time(at));
        let rto = (at.as_millisecond() - started.0.as_millisecond()) as f64 / 1000.0;
        status.rto_seconds = Some(rto.max(0.0));
        status.rto = Some(crate::backup_policy::status::human(rto.max(0.0) as u64));
    };
    let waiting = |status: RestoreRequestStatus, next: Next| Outcome {
        status,
        next,
        failure: None,
    };

    if o.rollback {
        for (i, step) in o.steps.iter().enumerate() {
            let job = safety_job_name(o.rr, &step.asset.name);
            status.phase = status.phase.max(RestorePhase::SafetyBackup);
            let failed = |f: &str| {
                format!(
                    "safety backup of the target of asset {}: {f}; nothing was restored",
                    step.asset.name
                )
            };
            match o.outcomes.get(&job) {
                None => return waiting(status, o.create_or_wait(&job, Next::SafetyBackup(i))),
                Some(out) => match (
                    &out.result,
                    out.result.as_ref().ok().and_then(|s| s.backup_id.clone()),
                ) {
                    (Ok(_), Some(id)) => status.plan[i].safety_backup_id = Some(id),
                    (Ok(_), None) => {
                        finish(&mut status, RestorePhase::Failed, out.finished_at);
                        return Outcome {
                            status,
                            next: Next::Done,
                            failure: Some((
                                "SafetyBackupFailed".into(),
                                failed("the agent reported no backup id"),
                            )),
                        };
                    }
                    (Err(f), _) => {
                        finish(&mut status, RestorePhase::Failed, out.finished_at);
                        return Outcome {
                            status,
                            next: Next::Done,
                            failure: Some(("SafetyBackupFailed".into(), failed(&f.message))),
                        };
                    }
                },
            }
        }
    }

    // The restores, one at a time in order; the first failure stops them.
    let mut last_finished = started.0;
    let mut failure: Option<(String, String, Timestamp)> = None;
    let mut touched = o.steps.len();
    for (i, step) in o.steps.iter().enumerate() {
        let job = restore_job_name(o.rr, &step.asset.name);
        let entry = &mut status.plan[i];
        match o.outcomes.get(&job) {
            None => {
                entry.state = Some("Running".into());
                status.phase = status.phase.max(RestorePhase::Restoring);
                return waiting(status, o.create_or_wait(&job, Next::Restore(i)));
            }
            Some(out) => match &out.result {
                Ok(s) => {
                    entry.state = Some("Done".into());
                    entry.duration_seconds = Some(
                        ((s.finished_at.as_millisecond() - s.started_at.as_millisecond()) as f64
                            / 1000.0)
                            .max(0.0),
                    );
                    if entry.snapshot_time.is_none() {
                        entry.snapshot_time = s.snapshot_time.map(Time);
                    }
                    last_finished = last_finished.max(out.finished_at);
                }
                Err(f) => {
                    entry.state = Some("Failed".into());
                    let message = format!("restore of asset {}: {}", step.asset.name, f.message);
                    failure = Some((f.reason.clone(), message, out.finished_at));
                    touched = i + 1;
                    break;
                }
            },
        }
    }

    if failure.is_none() {
        if !o.has_checks {
            finish(&mut status, RestorePhase::Succeeded, last_finished);
            return waiting(status, Next::Done);
        }
        let job = validate_job_name(o.rr);
        status.phase = status.phase.max(RestorePhase::Validating);
        match o.outcomes.get(&job) {
            None => return waiting(status, o.create_or_wait(&job, Next::Validate)),
            Some(out) => match &out.result {
                Ok(s) => {
                    status.checks = s.checks.clone();
                    finish(&mut status, RestorePhase::Succeeded, out.finished_at);
                    return waiting(status, Next::Done);
                }
                Err(f) => {
                    status.checks = f.checks.clone();
                    let failed: Vec<&CheckResult> =
                        status.checks.iter().filter(|c| !c.passed).collect();
                    let message = if failed.is_empty() {
                        f.message.clone()
                    } else {
                        failed
                            .iter()
                            .map(|c| format!("{}: {}", c.name, c.message))
                            .collect::<Vec<_>>()
                            .join("; ")
                    };
                    failure = Some(("ValidationFailed".into(), message, out.finished_at));
                }
            },
        }
    }
    let Some((reason, message, failed_at)) = failure else {
        return waiting(status, Next::Wait);
    };
    if !o.rollback {
        finish(&mut status, RestorePhase::Failed, failed_at);
        return Outcome {
            status,
            next: Next::Done,
            failure: Some((reason, message)),
        };
    }

    // Roll back every target touched so far, one at a time, from its safety backup.
    status.phase = status.phase.max(RestorePhase::RollingBack);
    let mut rolled_back_at = failed_at;
    for (i, step) in o.steps.iter().enumerate().take(touched) {
        let job = rollback_job_name(o.rr, &step.asset.name);
        match o.outcomes.get(&job) {
            None => {
                status.plan[i].rollback = Some("Running".into());
                let note = format!("{reason}: {message}; restoring the targets' safety backups");
                return Outcome {
                    next: o.create_or_wait(&job, Next::Rollback(i)),
                    status,
                    failure: Some(("RollingBack".into(), note)),
                };
            }
            Some(out) => match &out.result {
                Ok(_) => {
                    status.plan[i].rollback = Some("Done".into());
                    rolled_back_at = rolled_back_at.max(out.finished_at);
                }
                Err(f) => {
                    status.plan[i].rollback = Some("Failed".into());
                    finish(&mut status, RestorePhase::Failed, out.finished_at);
                    let kept = status.plan[i].safety_backup_id.clone().unwrap_or_default();
                    let note = format!(
                        "{reason}: {message}; then the rollback of asset {} failed: {}; its safety backup {kept} is kept in {}",
                        step.asset.name,
                        f.message,
                        status.safety_backups.clone().unwrap_or_default()
                    );
                    return Outcome {
                        status,
                        next: Next::Done,
                        failure: Some(("RollbackFailed".into(), note)),
                    };
                }
            },
        }
    }
    finish(&mut status, RestorePhase::RolledBack, rolled_back_at);
    let note = format!("{reason}: {message}; the targets were restored from their safety backups");
    Outcome {
        status,
        next: Next::Done,
        failure: Some(("RolledBack".into(), note)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobFailure;
    use lifeboat_api::agent_result::{AgentSummary, SUMMARY_VERSION, Verb};
    use lifeboat_api::backup_policy::Asset;
    use lifeboat_api::restore_request::PlannedRestore;

    fn step(name: &str) -> Step {
        let asset: Asset = serde_json::from_value(serde_json::json!({
            "name": name, "postgres": {"host": "db", "user": "u", "databases": [name]}
        }))
        .unwrap();
        Step {
            asset,
            backup_id: "20261124T090000Z".into(),
            target: None,
            planned: PlannedRestore {
                asset: name.into(),
                backup_id: "20261124T090000Z".into(),
                snapshot_time: None,
                stored_bytes: None,
                sha256: None,
                target: format!("postgres://db:5432/{name}"),
                state: None,
                duration_seconds: None,
                safety_backup_id: None,
                rollback: None,
            },
            scope: None,
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_790_000_000 + s).unwrap()
    }

    fn ok(job: &str, s: i64, backup_id: Option<&str>) -> (String, JobOutcome) {
        let summary = AgentSummary {
            version: SUMMARY_VERSION,
            verb: Verb::Restore,
            ok: true,
            asset: None,
            backup_id: backup_id.map(str::to_owned),
            started_at: at(s - 1),
            finished_at: at(s),
            snapshot_time: None,
            stored_bytes: None,
            sha256: None,
            error_class: None,
            message: None,
            checks: vec![],
            retention_refused: None,
        };
        let o = JobOutcome {
            job: job.into(),
            asset: String::new(),
            finished_at: at(s),
            result: Ok(summary),
        };
        (job.into(), o)
    }

    fn failed(job: &str, s: i64, reason: &str) -> (String, JobOutcome) {
        let o = JobOutcome {
            job: job.into(),
            asset: String::new(),
            finished_at: at(s),
            result: Err(JobFailure {
                reason: reason.into(),
                message: "it broke".into(),
                checks: vec![],
            }),
        };
        (job.into(), o)
    }

    /// Runs `advance` as the reconcile would: what it asks to create, exists next time.
    fn run(
        steps: &[Step],
        checks: bool,
        rollback: bool,
        outcomes: &BTreeMap<String, JobOutcome>,
    ) -> Outcome {
        let existing: BTreeSet<String> = outcomes.keys().cloned().collect();
        let o = Observed {
            rr: "rr",
            steps,
            has_checks: checks,
            rollback,
            existing: &existing,
            outcomes,
        };
        advance(&o, &RestoreRequestStatus::default(), at(0))
    }

    #[test]
    fn with_rollback_every_target_is_backed_up_before_the_first_restore() {
        let steps = [step("a"), step("b")];
        let mut done = BTreeMap::new();
        let first = run(&steps, true, true, &done);
        assert_eq!(first.next, Next::SafetyBackup(0));
        assert_eq!(first.status.phase, RestorePhase::SafetyBackup);
        done.extend([ok(&safety_job_name("rr", "a"), 1, Some("S1"))]);
        assert_eq!(run(&steps, true, true, &done).next, Next::SafetyBackup(1));
        done.extend([ok(&safety_job_name("rr", "b"), 2, Some("S2"))]);
        let restoring = run(&steps, true, true, &done);
        assert_eq!(restoring.next, Next::Restore(0));
        assert_eq!(restoring.status.phase, RestorePhase::Restoring);
        let ids: Vec<_> = restoring
            .status
            .plan
            .iter()
            .map(|p| p.safety_backup_id.as_deref())
            .collect();
        assert_eq!(ids, [Some("S1"), Some("S2")]);
    }

    #[test]
    fn a_failed_safety_backup_stops_before_anything_is_touched() {
        let steps = [step("a")];
        let done = BTreeMap::from([failed(&safety_job_name("rr", "a"), 1, "SourceUnreachable")]);
        let out = run(&steps, true, true, &done);
        assert_eq!(out.next, Next::Done);
        assert_eq!(out.status.phase, RestorePhase::Failed);
        let (reason, message) = out.failure.unwrap();
        assert_eq!(reason, "SafetyBackupFailed");
        assert!(message.contains("nothing was restored"), "{message}");
    }

    #[test]
    fn failed_validation_rolls_back_every_target_then_ends_rolled_back() {
        let steps = [step("a"), step("b")];
        let mut done = BTreeMap::from([
            ok(&safety_job_name("rr", "a"), 1, Some("S1")),
            ok(&safety_job_name("rr", "b"), 2, Some("S2")),
            ok(&restore_job_name("rr", "a"), 3, None),
            ok(&restore_job_name("rr", "b"), 4, None),
            failed(&validate_job_name("rr"), 5, "Validation"),
        ]);
        let rolling = run(&steps, true, true, &done);
        assert_eq!(rolling.next, Next::Rollback(0));
        assert_eq!(rolling.status.phase, RestorePhase::RollingBack);
        assert_eq!(rolling.failure.unwrap().0, "RollingBack");
        done.extend([ok(&rollback_job_name("rr", "a"), 6, None)]);
        assert_eq!(run(&steps, true, true, &done).next, Next::Rollback(1));
        done.extend([ok(&rollback_job_name("rr", "b"), 7, None)]);
        let end = run(&steps, true, true, &done);
        assert_eq!(end.next, Next::Done);
        assert_eq!(end.status.phase, RestorePhase::RolledBack);
        assert_eq!(end.status.rto_seconds, Some(7.0));
        let (reason, message) = end.failure.unwrap();
        assert_eq!(reason, "RolledBack");
        assert!(message.starts_with("ValidationFailed"), "{message}");
    }

    #[test]
    fn a_failed_restore_rolls_back_only_what_it_touched() {
        let steps = [step("a"), step("b")];
        let mut done = BTreeMap::from([
            ok(&safety_job_name("rr", "a"), 1, Some("S1")),
            ok(&safety_job_name("rr", "b"), 2, Some("S2")),
            failed(&restore_job_name("rr", "a"), 3, "Integrity"),
        ]);
        assert_eq!(run(&steps, true, true, &done).next, Next::Rollback(0));
        done.extend([ok(&rollback_job_name("rr", "a"), 4, None)]);
        let end = run(&steps, true, true, &done);
        assert_eq!(end.status.phase, RestorePhase::RolledBack);
        assert_eq!(end.status.plan[1].rollback, None, "b was never touched");
    }

    #[test]
    fn a_failed_rollback_fails_the_request_and_names_the_kept_safety_backup() {
        let steps = [step("a")];
        let done = BTreeMap::from([
            ok(&safety_job_name("rr", "a"), 1, Some("S1")),
            failed(&restore_job_name("rr", "a"), 2, "Integrity"),
            failed(&rollback_job_name("rr", "a"), 3, "Storage"),
        ]);
        let end = run(&steps, true, true, &done);
        assert_eq!(end.status.phase, RestorePhase::Failed);
        let (reason, message) = end.failure.unwrap();
        assert_eq!(reason, "RollbackFailed");
        assert!(
            message.contains("Integrity") && message.contains("S1"),
            "{message}"
        );
    }

    #[test]
    fn without_rollback_a_failure_ends_the_request_and_no_safety_job_exists() {
        let steps = [step("a")];
        assert_eq!(
            run(&steps, false, false, &BTreeMap::new()).next,
            Next::Restore(0)
        );
        let done = BTreeMap::from([failed(&restore_job_name("rr", "a"), 2, "Integrity")]);
        let end = run(&steps, false, false, &done);
        assert_eq!(end.status.phase, RestorePhase::Failed);
        assert_eq!(end.failure.unwrap().0, "Integrity");
        let done = BTreeMap::from([ok(&restore_job_name("rr", "a"), 2, None)]);
        let end = run(&steps, false, false, &done);
        assert_eq!(end.status.phase, RestorePhase::Succeeded);
        assert_eq!(end.failure, None);
    }
}
