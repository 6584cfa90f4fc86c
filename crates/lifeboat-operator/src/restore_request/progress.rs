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
    Restore(usize),
    Validate,
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

/// Advances `old` given the steps, which Jobs exist and how the finished ones ended.
pub fn advance(
    rr: &str,
    old: &RestoreRequestStatus,
    steps: &[Step],
    has_checks: bool,
    existing: &BTreeSet<String>,
    outcomes: &BTreeMap<String, JobOutcome>,
    now: Timestamp,
) -> Outcome {
    let mut status = old.clone();
    let started = old.started_at.clone().unwrap_or(Time(now));
    status.started_at = Some(started.clone());
    status.plan = steps.iter().map(|s| s.planned.clone()).collect();
    let finish = |status: &mut RestoreRequestStatus, phase: RestorePhase, at: Timestamp| {
        status.phase = phase;
        status.finished_at = Some(Time(at));
        let rto = (at.as_millisecond() - started.0.as_millisecond()) as f64 / 1000.0;
        status.rto_seconds = Some(rto.max(0.0));
        status.rto = Some(crate::backup_policy::status::human(rto.max(0.0) as u64));
    };

    let mut last_finished = started.0;
    for (i, step) in steps.iter().enumerate() {
        let job = restore_job_name(rr, &step.asset.name);
        let entry = &mut status.plan[i];
        match outcomes.get(&job) {
            None => {
                entry.state = Some("Running".into());
                status.phase = status.phase.max(RestorePhase::Restoring);
                let next = if existing.contains(&job) {
                    Next::Wait
                } else {
                    Next::Restore(i)
                };
                return Outcome {
                    status,
                    next,
                    failure: None,
                };
            }
            Some(o) => match &o.result {
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
                    last_finished = last_finished.max(o.finished_at);
                }
                Err(f) => {
                    entry.state = Some("Failed".into());
                    finish(&mut status, RestorePhase::Failed, o.finished_at);
                    let message = format!("restore of asset {}: {}", step.asset.name, f.message);
                    return Outcome {
                        status,
                        next: Next::Done,
                        failure: Some((f.reason.clone(), message)),
                    };
                }
            },
        }
    }
    if !has_checks {
        finish(&mut status, RestorePhase::Succeeded, last_finished);
        return Outcome {
            status,
            next: Next::Done,
            failure: None,
        };
    }
    let job = validate_job_name(rr);
    status.phase = status.phase.max(RestorePhase::Validating);
    match outcomes.get(&job) {
        None => {
            let next = if existing.contains(&job) {
                Next::Wait
            } else {
                Next::Validate
            };
            Outcome {
                status,
                next,
                failure: None,
            }
        }
        Some(o) => match &o.result {
            Ok(s) => {
                status.checks = s.checks.clone();
                finish(&mut status, RestorePhase::Succeeded, o.finished_at);
                Outcome {
                    status,
                    next: Next::Done,
                    failure: None,
                }
            }
            Err(f) => {
                status.checks = f.checks.clone();
                finish(&mut status, RestorePhase::Failed, o.finished_at);
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
                Outcome {
                    status,
                    next: Next::Done,
                    failure: Some(("ValidationFailed".into(), message)),
                }
            }
        },
    }
}
