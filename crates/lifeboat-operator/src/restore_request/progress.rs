//! Where an executing RestoreRequest is, decided from the Jobs it owns. Pure. Phases only move
//! forward; steps run one at a time in the declared order (a drill restores PostgreSQL before
//! the services that read it).

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use lifeboat_api::restore_request::{
    CheckResult, PlannedRestore, RestoreFailure, RestorePhase, RestoreRequestStatus, StepState,
};

use super::plan::Step;
use crate::jobs::JobOutcome;

/// A Job the reconcile must create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// The safety backup of step `i`'s target (rollback asked), before anything is restored.
    SafetyBackup(usize),
    Restore(usize),
    Validate,
    /// Step `i`'s target restored from its safety backup (the id).
    Rollback(usize, String),
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
///
/// Each step's result is recorded in status when its Job is first seen finished: a step
/// recorded `Done` never runs again, whether its Job is still there or not, and the failure a
/// rollback undoes is read from status, not from the failed Job.
pub fn advance(o: &Observed<'_>, old: &RestoreRequestStatus, now: Timestamp) -> Outcome {
    let mut status = old.clone();
    let started = old.started_at.clone().unwrap_or(Time(now));
    status.started_at = Some(started.clone());
    status.plan = o
        .steps
        .iter()
        .map(|s| {
            let mut p = s.planned.clone();
            if let Some(was) = old.plan.iter().find(|w| w.asset == p.asset) {
                p.state = was.state;
                p.duration_seconds = was.duration_seconds;
                p.snapshot_time = was.snapshot_time.clone().or(p.snapshot_time);
                p.safety_backup = was.safety_backup;
                p.safety_backup_id = was.safety_backup_id.clone();
                p.rollback = was.rollback;
            }
            p
        })
        .collect();
    let mut run = Run {
        o,
        status,
        started: started.0,
    };
    if o.rollback
        && let Some(stop) = run.safety_backups()
    {
        return run.outcome(stop);
    }
    if run.status.failure.is_none()
        && let Some(stop) = run.restores_and_checks()
    {
        return run.outcome(stop);
    }
    let Some(failure) = run.status.failure.clone() else {
        return run.outcome(Stop::Wait(Next::Wait));
    };
    if !o.rollback {
        run.finish(RestorePhase::Failed, failure.at.0);
        return run.outcome(Stop::End(Some((failure.reason, failure.message))));
    }
    let stop = run.rollbacks(&failure);
    run.outcome(stop)
}

/// Where a pass of [`advance`] stops.
enum Stop {
    /// A Job to create or wait for, with the Ready reason and message of a rollback under way.
    Wait(Next),
    Rollback(Next, String),
    /// The request is over, with why it failed.
    End(Option<(String, String)>),
}

/// One pass of [`advance`] over a request's steps.
struct Run<'a, 'o> {
    o: &'a Observed<'o>,
    status: RestoreRequestStatus,
    started: Timestamp,
}

impl Run<'_, '_> {
    fn finish(&mut self, phase: RestorePhase, at: Timestamp) {
        let status = &mut self.status;
        status.phase = phase;
        status.finished_at = Some(Time(at));
        let rto = ((at.as_millisecond() - self.started.as_millisecond()) as f64 / 1000.0).max(0.0);
        status.rto_seconds = Some(rto);
        status.rto = Some(crate::backup_policy::status::human(rto as u64));
    }

    fn outcome(self, stop: Stop) -> Outcome {
        let (next, failure) = match stop {
            Stop::Wait(next) => (next, None),
            Stop::Rollback(next, note) => (next, Some((ROLLING_BACK.to_owned(), note))),
            Stop::End(failure) => (Next::Done, failure),
        };
        Outcome {
            status: self.status,
            next,
            failure,
        }
    }

    /// Step `i` starts (its Job is created or found running): the later ones wait.
    fn running(&mut self, i: usize, field: fn(&mut PlannedRestore) -> &mut Option<StepState>) {
        for (j, p) in self.status.plan.iter_mut().enumerate() {
            let s = field(p);
            if j == i {
                *s = Some(StepState::Running);
            } else if j > i && s.is_none() {
                *s = Some(StepState::Pending);
            }
        }
    }

    /// The safety backups, in order; `Some` while one runs or when one failed.
    fn safety_backups(&mut self) -> Option<Stop> {
        let o = self.o;
        self.status.phase = self.status.phase.max(RestorePhase::SafetyBackup);
        for (i, step) in o.steps.iter().enumerate() {
            let entry = &self.status.plan[i];
            if entry.safety_backup == Some(StepState::Done) && entry.safety_backup_id.is_some() {
                continue;
            }
            let job = safety_job_name(o.rr, &step.asset.name);
            let Some(out) = o.outcomes.get(&job) else {
                self.running(i, |p| &mut p.safety_backup);
                return Some(Stop::Wait(o.create_or_wait(&job, Next::SafetyBackup(i))));
            };
            let why = match &out.result {
                Ok(s) => match &s.backup_id {
                    Some(id) => {
                        let entry = &mut self.status.plan[i];
                        entry.safety_backup = Some(StepState::Done);
                        entry.safety_backup_id = Some(id.clone());
                        continue;
                    }
                    None => "the agent reported no backup id".to_owned(),
                },
                Err(f) => f.message.clone(),
            };
            self.status.plan[i].safety_backup = Some(StepState::Failed);
            let message = format!(
                "safety backup of the target of asset {}: {why}; nothing was restored",
                step.asset.name
            );
            self.status.failure = Some(RestoreFailure {
                reason: SAFETY_BACKUP_FAILED.into(),
                message: message.clone(),
                at: Time(out.finished_at),
            });
            self.finish(RestorePhase::Failed, out.finished_at);
            return Some(Stop::End(Some((SAFETY_BACKUP_FAILED.into(), message))));
        }
        None
    }

    /// The restores one at a time in order, then the checks; `Some` while one runs or when
    /// the request succeeded. A failure is recorded in status and returns `None`.
    fn restores_and_checks(&mut self) -> Option<Stop> {
        let o = self.o;
        let mut last_finished = self.started;
        for (i, step) in o.steps.iter().enumerate() {
            if self.status.plan[i].state == Some(StepState::Done) {
                continue;
            }
            let job = restore_job_name(o.rr, &step.asset.name);
            let Some(out) = o.outcomes.get(&job) else {
                self.running(i, |p| &mut p.state);
                self.status.phase = self.status.phase.max(RestorePhase::Restoring);
                return Some(Stop::Wait(o.create_or_wait(&job, Next::Restore(i))));
            };
            let entry = &mut self.status.plan[i];
            match &out.result {
                Ok(s) => {
                    entry.state = Some(StepState::Done);
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
                    entry.state = Some(StepState::Failed);
                    self.status.failure = Some(RestoreFailure {
                        reason: f.reason.clone(),
                        message: format!("restore of asset {}: {}", step.asset.name, f.message),
                        at: Time(out.finished_at),
                    });
                    return None;
                }
            }
        }
        if !o.has_checks {
            self.finish(RestorePhase::Succeeded, last_finished);
            return Some(Stop::End(None));
        }
        self.status.phase = self.status.phase.max(RestorePhase::Validating);
        let job = validate_job_name(o.rr);
        let Some(out) = o.outcomes.get(&job) else {
            return Some(Stop::Wait(o.create_or_wait(&job, Next::Validate)));
        };
        self.status.checks_report = out.checks_report.clone();
        match &out.result {
            Ok(s) => {
                self.status.checks = s.checks.clone();
                self.finish(RestorePhase::Succeeded, out.finished_at);
                Some(Stop::End(None))
            }
            Err(f) => {
                self.status.checks = f.checks.clone();
                let failed: Vec<&CheckResult> =
                    self.status.checks.iter().filter(|c| !c.passed).collect();
                let message = if failed.is_empty() {
                    f.message.clone()
                } else {
                    failed
                        .iter()
                        .map(|c| format!("{}: {}", c.name, c.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                self.status.failure = Some(RestoreFailure {
                    reason: VALIDATION_FAILED.into(),
                    message,
                    at: Time(out.finished_at),
                });
                None
            }
        }
    }

    /// Every target touched so far restored from its safety backup, one at a time.
    fn rollbacks(&mut self, failure: &RestoreFailure) -> Stop {
        let o = self.o;
        self.status.phase = self.status.phase.max(RestorePhase::RollingBack);
        let what = format!("{}: {}", failure.reason, failure.message);
        let mut rolled_back_at = failure.at.0;
        for (i, step) in o.steps.iter().enumerate() {
            let entry = &self.status.plan[i];
            let touched = matches!(entry.state, Some(StepState::Done | StepState::Failed));
            if !touched || entry.rollback == Some(StepState::Done) {
                continue;
            }
            let kept = entry.safety_backup_id.clone();
            let job = rollback_job_name(o.rr, &step.asset.name);
            let result = match (o.outcomes.get(&job), &kept) {
                (_, None) => Err("no safety backup was recorded for it".to_owned()),
                (None, Some(id)) => {
                    self.running(i, |p| &mut p.rollback);
                    let next = o.create_or_wait(&job, Next::Rollback(i, id.clone()));
                    let note = format!("{what}; restoring the targets' safety backups");
                    return Stop::Rollback(next, note);
                }
                (Some(out), Some(_)) => {
                    rolled_back_at = rolled_back_at.max(out.finished_at);
                    out.result
                        .as_ref()
                        .map(|_| ())
                        .map_err(|f| f.message.clone())
                }
            };
            match result {
                Ok(()) => self.status.plan[i].rollback = Some(StepState::Done),
                Err(why) => {
                    self.status.plan[i].rollback = Some(StepState::Failed);
                    self.finish(RestorePhase::Failed, rolled_back_at);
                    let note = format!(
                        "{what}; then the rollback of asset {} failed: {why}; its safety backup {} is kept in {}",
                        step.asset.name,
                        kept.unwrap_or_default(),
                        self.status.safety_backups.clone().unwrap_or_default()
                    );
                    return Stop::End(Some((ROLLBACK_FAILED.into(), note)));
                }
            }
        }
        self.finish(RestorePhase::RolledBack, rolled_back_at);
        let note = format!("{what}; the targets were restored from their safety backups");
        Stop::End(Some((ROLLED_BACK.into(), note)))
    }
}

/// Ready reasons of a request that failed or is undoing a failure.
pub const SAFETY_BACKUP_FAILED: &str = "SafetyBackupFailed";
pub const VALIDATION_FAILED: &str = "ValidationFailed";
pub const ROLLING_BACK: &str = "RollingBack";
pub const ROLLED_BACK: &str = "RolledBack";
pub const ROLLBACK_FAILED: &str = "RollbackFailed";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobFailure;
    use lifeboat_api::agent_result::{AgentSummary, SUMMARY_VERSION, Verb};
    use lifeboat_api::backup_policy::Asset;
    use lifeboat_api::restore_request::PlannedRestore;

    pub(super) fn step(name: &str) -> Step {
        let asset: Asset = serde_json::from_value(serde_json::json!({
            "name": name, "postgres": {"host": "db", "user": "u", "databases": [name]}
        }))
        .unwrap();
        Step {
            asset,
            backup_id: "20261124T090000Z".into(),
            target: None,
            planned: PlannedRestore {
                kind: None,
                asset: name.into(),
                backup_id: "20261124T090000Z".into(),
                snapshot_time: None,
                stored_bytes: None,
                sha256: None,
                target: format!("postgres://db:5432/{name}"),
                state: None,
                duration_seconds: None,
                safety_backup: None,
                safety_backup_id: None,
                rollback: None,
                point_in_time: None,
            },
            scope: None,
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_790_000_000 + s).unwrap()
    }

    pub(super) fn ok(job: &str, s: i64, backup_id: Option<&str>) -> (String, JobOutcome) {
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
            copies: Vec::new(),
        };
        let o = JobOutcome {
            job: job.into(),
            asset: String::new(),
            finished_at: at(s),
            result: Ok(summary),
            checks_report: None,
        };
        (job.into(), o)
    }

    pub(super) fn failed(job: &str, s: i64, reason: &str) -> (String, JobOutcome) {
        let o = JobOutcome {
            job: job.into(),
            asset: String::new(),
            finished_at: at(s),
            result: Err(JobFailure {
                reason: reason.into(),
                message: "it broke".into(),
                checks: vec![],
            }),
            checks_report: None,
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
        assert_eq!(rolling.next, Next::Rollback(0, "S1".into()));
        assert_eq!(rolling.status.phase, RestorePhase::RollingBack);
        assert_eq!(rolling.failure.unwrap().0, "RollingBack");
        done.extend([ok(&rollback_job_name("rr", "a"), 6, None)]);
        assert_eq!(
            run(&steps, true, true, &done).next,
            Next::Rollback(1, "S2".into())
        );
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
        assert_eq!(
            run(&steps, true, true, &done).next,
            Next::Rollback(0, "S1".into())
        );
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

/// [`advance`] driven through whole requests by a hostile world: Jobs finish in any order with
/// any result, finished Jobs are deleted, reconciles repeat with nothing new. Whatever happens,
/// each Job is asked for once, phases only move forward, `Done` comes with a finished phase and
/// its failure, and once every Job succeeds the request ends.
#[cfg(test)]
mod world {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::tests::{failed, ok, step};
    use super::*;

    /// What the world does between two reconciles.
    #[derive(Clone, Debug)]
    enum Event {
        /// The oldest running Job ends, well or not.
        Finish(bool),
        /// A finished Job is deleted (by a person, a TTL).
        Delete(usize),
        /// A reconcile with nothing new (a resync, a restart).
        Nothing,
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => any::<bool>().prop_map(Event::Finish),
            1 => any::<usize>().prop_map(Event::Delete),
            1 => Just(Event::Nothing),
        ]
    }

    /// The Job name `next` asks for.
    fn job_of(next: &Next, steps: &[Step]) -> Option<String> {
        Some(match next {
            Next::SafetyBackup(i) => safety_job_name("rr", &steps[*i].asset.name),
            Next::Restore(i) => restore_job_name("rr", &steps[*i].asset.name),
            Next::Validate => validate_job_name("rr"),
            Next::Rollback(i, _) => rollback_job_name("rr", &steps[*i].asset.name),
            Next::Wait | Next::Done => return None,
        })
    }

    struct World {
        steps: Vec<Step>,
        checks: bool,
        rollback: bool,
        existing: BTreeSet<String>,
        outcomes: BTreeMap<String, JobOutcome>,
        running: Vec<String>,
        created: BTreeSet<String>,
        status: RestoreRequestStatus,
        clock: i64,
    }

    impl World {
        /// One reconcile: decide, create what is asked for, keep the status.
        fn reconcile(&mut self) -> Next {
            let o = Observed {
                rr: "rr",
                steps: &self.steps,
                has_checks: self.checks,
                rollback: self.rollback,
                existing: &self.existing,
                outcomes: &self.outcomes,
            };
            let old = self.status.clone();
            // `decide` never advances a finished request: it only expires it.
            if old.phase.is_finished() {
                return Next::Done;
            }
            let out = advance(&o, &old, at(self.clock));
            assert!(
                out.status.phase >= old.phase,
                "{:?} after {:?}",
                out.status.phase,
                old.phase
            );
            assert_eq!(
                out.next == Next::Done,
                out.status.phase.is_finished(),
                "Done and a finished phase go together: {:?}",
                out.status.phase
            );
            if !self.rollback {
                assert!(!matches!(
                    out.next,
                    Next::SafetyBackup(_) | Next::Rollback(..)
                ));
                assert_ne!(out.status.phase, RestorePhase::RolledBack);
            }
            if let Some(job) = job_of(&out.next, &self.steps) {
                assert!(self.created.insert(job.clone()), "{job} asked for twice");
                self.existing.insert(job.clone());
                self.running.push(job);
            }
            self.status = out.status;
            out.next
        }

        fn apply(&mut self, e: &Event) {
            self.clock += 1;
            match e {
                Event::Finish(good) if !self.running.is_empty() => {
                    let job = self.running.remove(0);
                    let safety = job.contains("-safety-").then_some("S");
                    let (name, outcome) = if *good {
                        ok(&job, self.clock, safety)
                    } else {
                        failed(&job, self.clock, "StorageFailed")
                    };
                    self.outcomes.insert(name, outcome);
                }
                Event::Delete(i) if !self.outcomes.is_empty() => {
                    let job = self.outcomes.keys().nth(i % self.outcomes.len()).cloned();
                    if let Some(job) = job {
                        self.outcomes.remove(&job);
                        self.existing.remove(&job);
                    }
                }
                _ => {}
            }
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_790_000_000 + s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn any_world_ends_the_request_once_with_each_job_asked_for_once(
            n in 1usize..4,
            checks: bool,
            rollback: bool,
            events in proptest::collection::vec(event(), 0..40),
        ) {
            let names = ["db", "cache", "bucket"];
            let mut w = World {
                steps: names[..n].iter().map(|a| step(a)).collect(),
                checks,
                rollback,
                existing: BTreeSet::new(),
                outcomes: BTreeMap::new(),
                running: Vec::new(),
                created: BTreeSet::new(),
                status: RestoreRequestStatus::default(),
                clock: 0,
            };
            w.reconcile();
            for e in &events {
                w.apply(e);
                w.reconcile();
            }
            // Then every Job the request asks for succeeds: it ends, within a bound.
            let mut rounds = 0;
            while w.reconcile() != Next::Done {
                w.apply(&Event::Finish(true));
                rounds += 1;
                prop_assert!(rounds < 40, "no end: {:?}", w.status.phase);
            }
            let end = w.status.phase;
            prop_assert!(end.is_finished(), "{end:?}");
            if end == RestorePhase::Succeeded {
                prop_assert!(w.status.plan.iter().all(|p| p.state == Some(StepState::Done)));
                prop_assert!(w.status.failure.is_none());
                prop_assert_eq!(w.created.contains(&validate_job_name("rr")), checks);
            } else {
                prop_assert!(w.status.failure.is_some(), "{end:?} without its failure");
            }
        }
    }
}
