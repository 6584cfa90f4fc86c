//! A drill's whole decision, from what the cluster shows: the fresh backups' Jobs, the policy's
//! record of its newest good backups, the RestoreRequest the drill owns, the notify Job and the
//! staging namespace. Pure: the next status (with the Events and Jobs its transitions owe), the
//! child to apply, what to do with the staging namespace, and when to look again.
//!
//! A drill is composed of the other two controllers' pieces, not a copy of them: on-demand backup
//! Jobs of the policy (the same builder, so the policy's status records them), then a
//! RestoreRequest of `latest` into the staging targets, with the drill's checks.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use lifeboat_api::DrillSchedule;
use lifeboat_api::backup_policy::BackupPolicyStatus;
use lifeboat_api::common::{EventType, PendingEvent};
use lifeboat_api::conditions::{self, Status, condition, set_condition, set_kstatus, types};
use lifeboat_api::drill_schedule::{
    ActiveDrill, DrillBackupMode, DrillJob, DrillRecord, DrillScheduleStatus, DrillStep,
    DrillVerdict, NotificationState, NotificationStatus, RestoredBackup,
};
use lifeboat_api::restore_request::{RestorePhase, RestoreRequestStatus, canary_check_name};

use crate::backup_policy::status::human;
use crate::controller::requeue;
use crate::effects::{self, event};
use crate::error::Problem;
use crate::jobs::JobOutcome;
use crate::restore_request::decide::problem_event;

/// The child a pass applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing due.
    Sleep,
    /// Start a drill now (status carries the new active drill): create its backup Jobs.
    Backup,
    /// The fresh backups are recorded: create the RestoreRequest.
    Restore,
    Wait,
    /// The drill finished (status carries the record and the Jobs it owes).
    Finished,
}

/// What became of the staging namespace the spec asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StagingSeen {
    /// The spec asks for none.
    #[default]
    NotAsked,
    /// No namespace of that name (and the operator may create one).
    Absent,
    /// The namespace this drill created (its recorded uid).
    Ours,
    /// This drill's namespace, being deleted after the last drill.
    Terminating,
}

/// What to do with the staging namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StagingAction {
    Nothing,
    /// A drill runs: create it when absent, and apply its isolation.
    Ensure,
    /// Its TTL after the last drill has passed: delete it (after the status write).
    Delete,
}

/// What the cluster shows of the drill.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// What keeps the drill from running, if anything.
    pub problem: Option<Problem>,
    /// The next due time of the cron after the last drill (or the resource's creation).
    pub due: Option<Timestamp>,
    /// An on-demand token not acted upon yet.
    pub run_now: Option<String>,
    /// Outcomes of the drill's backup Jobs, one per drilled asset once finished.
    pub backups: Vec<JobOutcome>,
    pub policy: Option<BackupPolicyStatus>,
    /// The drill's RestoreRequest, once created.
    pub restore: Option<RestoreRequestStatus>,
    /// The last drill's notify Job's outcome, once it finished (or vanished).
    pub notification: Option<NotificationStatus>,
    pub staging: StagingSeen,
}

/// What the reconcile does.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: DrillScheduleStatus,
    pub next: Next,
    pub staging: StagingAction,
    pub requeue: Duration,
}

/// How many recent drills the early warning looks at, and the share of the objective their RTO
/// must all exceed for it to fire (the "last three above 80%").
pub const RTO_RISK_DRILLS: usize = 3;
pub const RTO_RISK_SHARE: f64 = 0.8;

/// Whether the RTO trends towards the objective: the newest [`RTO_RISK_DRILLS`] drills (newest
/// first in `history`) all measured an RTO above [`RTO_RISK_SHARE`] of `objective_seconds`.
/// Returns their RTOs when it does. A drill that measured nothing breaks the streak: a failure is
/// already reported by its own condition.
pub fn rto_at_risk(history: &[DrillRecord], objective_seconds: f64) -> Option<Vec<f64>> {
    let recent: Vec<f64> = history
        .iter()
        .take(RTO_RISK_DRILLS)
        .map_while(|r| r.rto_seconds)
        .collect();
    (recent.len() == RTO_RISK_DRILLS
        && recent
            .iter()
            .all(|r| *r > RTO_RISK_SHARE * objective_seconds))
    .then_some(recent)
}

pub fn decide(ds: &DrillSchedule, seen: &Observed, now: Timestamp) -> Decision {
    let old = ds.status.clone().unwrap_or_default();
    let generation = ds.metadata.generation;
    let mut status = old.clone();
    status.observed_generation = generation;
    status.next_run_time = seen.due.map(Time);
    if let Some(p) = &seen.problem {
        set_condition(
            &mut status.conditions,
            condition(
                types::READY,
                Status::False,
                p.reason(),
                p.to_string(),
                generation,
                now,
            ),
        );
        set_kstatus(&mut status.conditions, false, generation, now);
        let owed = problem_event(&old.conditions, &status.conditions, p, "Validate");
        status.pending_events = effects::owe(&old.pending_events, owed.into_iter().collect());
        return Decision {
            status,
            next: Next::Sleep,
            staging: StagingAction::Nothing,
            requeue: p.recheck(),
        };
    }
    if seen.staging == StagingSeen::Terminating {
        // Its own namespace, still being deleted after the last drill: nothing starts until it
        // is gone.
        return Decision {
            status: old,
            next: Next::Wait,
            staging: StagingAction::Nothing,
            requeue: requeue::TERMINATING,
        };
    }
    if let Some(outcome) = &seen.notification {
        record_notification(&mut status, outcome);
    }
    let next = advance(ds, seen, &mut status, now);
    let ready = ready(ds, &status, now);
    set_condition(&mut status.conditions, ready);
    // A schedule, like a policy: its last drill's verdict, a running drill included.
    set_kstatus(&mut status.conditions, false, generation, now);
    if next == Next::Finished {
        let owed_notify = status
            .last_run
            .as_ref()
            .is_some_and(|r| r.notification.is_some());
        for job in
            std::iter::once(DrillJob::Evidence).chain(owed_notify.then_some(DrillJob::Notify))
        {
            if !status.pending_jobs.contains(&job) {
                status.pending_jobs.push(job);
            }
        }
    }
    let (staging, staging_wait) = staging(ds, &status, now);
    let owed = events(ds, &old, &status);
    status.pending_events = effects::owe(&old.pending_events, owed);
    let requeue = if status.active.is_some() {
        requeue::DRILL_POLL
    } else {
        let due = seen.due.map_or(requeue::IDLE_MAX, |d| {
            Duration::from_secs(u64::try_from(d.as_second() - now.as_second()).unwrap_or(0))
        });
        due.min(staging_wait)
            .clamp(Duration::from_secs(1), requeue::IDLE_MAX)
    };
    Decision {
        status,
        next,
        staging,
        requeue,
    }
}

/// The notify Job's outcome in the last drill's record and its copy in history, while pending.
fn record_notification(status: &mut DrillScheduleStatus, outcome: &NotificationStatus) {
    let Some(record) = status.last_run.as_mut() else {
        return;
    };
    let pending = record
        .notification
        .as_ref()
        .is_some_and(|n| n.state == NotificationState::Pending && n.job == outcome.job);
    if !pending {
        return;
    }
    record.notification = Some(outcome.clone());
    let id = record.id.clone();
    if let Some(h) = status.history.iter_mut().find(|h| h.id == id) {
        h.notification = Some(outcome.clone());
    }
}

/// The staging namespace's fate: there (with its isolation) while a drill runs, deleted `ttl`
/// after the last one; with how long until that is due.
fn staging(
    ds: &DrillSchedule,
    status: &DrillScheduleStatus,
    now: Timestamp,
) -> (StagingAction, Duration) {
    let spec = ds.spec.staging.namespace.as_ref();
    if status.active.is_some() {
        let action = if spec.is_some() {
            StagingAction::Ensure
        } else {
            StagingAction::Nothing
        };
        return (action, requeue::IDLE_MAX);
    }
    let Some(recorded) = &status.staging_namespace else {
        return (StagingAction::Nothing, requeue::IDLE_MAX);
    };
    let ttl = spec
        .filter(|sn| sn.name == recorded.name)
        .map_or(Duration::ZERO, |sn| sn.ttl.as_std());
    let finished = status.last_run.as_ref().map(|r| r.finished_at.0);
    match super::staging::cleanup(finished, ttl, now) {
        super::staging::Cleanup::Wait(s) => (StagingAction::Nothing, Duration::from_secs(s)),
        // Also when it is gone already: the delete finds nothing, and the record goes.
        super::staging::Cleanup::Delete => (StagingAction::Delete, requeue::TERMINATING),
    }
}

/// Advances the drill: starts one when due, follows it step by step, finishes it.
fn advance(
    ds: &DrillSchedule,
    seen: &Observed,
    status: &mut DrillScheduleStatus,
    now: Timestamp,
) -> Next {
    let spec = &ds.spec;
    let Some(active) = status.active.clone() else {
        return start(ds, seen, status, now);
    };
    let elapsed = (now.as_second() - active.started_at.0.as_second()).max(0);
    if u64::try_from(elapsed).unwrap_or(0) > spec.timeout.as_secs() {
        let why = format!(
            "the drill did not finish within its timeout of {}",
            spec.timeout
        );
        finish(ds, status, &active, None, Some(Ended::Failed(why)), now);
        return Next::Finished;
    }
    if active.step == DrillStep::Backup {
        return match fresh_backups(spec, seen) {
            Err(why) => {
                finish(ds, status, &active, None, Some(Ended::Failed(why)), now);
                Next::Finished
            }
            Ok(false) => Next::Wait,
            Ok(true) => {
                set_step(status, DrillStep::Restore);
                Next::Restore
            }
        };
    }
    match &seen.restore {
        Some(rr) if rr.phase.is_finished() => {
            finish(ds, status, &active, Some(rr), None, now);
            Next::Finished
        }
        Some(rr) => {
            let step = if rr.phase == RestorePhase::Validating {
                DrillStep::Validate
            } else {
                DrillStep::Restore
            };
            set_step(status, step);
            Next::Wait
        }
        None if active.restore_request.is_some() => Next::Wait,
        None => Next::Restore,
    }
}

/// Starts a drill when one is due or asked for: with fresh backups, or (by default) straight
/// to restoring what the schedule made, which ends the drill at once when there is nothing.
fn start(
    ds: &DrillSchedule,
    seen: &Observed,
    status: &mut DrillScheduleStatus,
    now: Timestamp,
) -> Next {
    let spec = &ds.spec;
    let due = seen.run_now.is_some() || (!spec.suspend && seen.due.is_some_and(|d| d <= now));
    if !due {
        return Next::Sleep;
    }
    if let Some(token) = &seen.run_now {
        status.last_drill_now_token = Some(token.clone());
    }
    let fresh = spec.backup == DrillBackupMode::Fresh;
    let active = ActiveDrill {
        id: drill_id(ds.metadata.name.as_deref().unwrap_or_default(), now),
        started_at: Time(now),
        step: if fresh {
            DrillStep::Backup
        } else {
            DrillStep::Restore
        },
        restore_request: None,
    };
    if !fresh && let Some(asset) = without_backup(spec, seen.policy.as_ref(), now) {
        // A disaster now would find nothing to restore: that is the drill's result, not a
        // reason to take a backup in its place.
        status.active = Some(active.clone());
        let why = format!(
            "asset {asset} has no good backup taken before the simulated disaster: nothing to restore"
        );
        finish(
            ds,
            status,
            &active,
            None,
            Some(Ended::NoBackupYet(why)),
            now,
        );
        return Next::Finished;
    }
    status.active = Some(active);
    if fresh { Next::Backup } else { Next::Restore }
}

/// Whether every drilled asset's fresh backup is finished, good and recorded by the policy;
/// why the drill fails when one of them failed.
fn fresh_backups(
    spec: &lifeboat_api::drill_schedule::DrillScheduleSpec,
    seen: &Observed,
) -> Result<bool, String> {
    for asset in &spec.assets {
        let Some(o) = seen.backups.iter().find(|o| &o.asset == asset) else {
            return Ok(false);
        };
        let s = o.result.as_ref().map_err(|f| {
            format!(
                "the fresh backup of {asset} failed: {}: {}",
                f.reason, f.message
            )
        })?;
        let recorded = seen
            .policy
            .as_ref()
            .and_then(|p| p.assets.iter().find(|a| &a.name == asset))
            .and_then(|a| a.last_success.as_ref())
            .is_some_and(|l| Some(&l.id) == s.backup_id.as_ref());
        if !recorded {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The first drilled asset the policy has no good backup of, snapshotted at or before `at` (the
/// simulated disaster), if any.
fn without_backup<'a>(
    spec: &'a lifeboat_api::drill_schedule::DrillScheduleSpec,
    policy: Option<&BackupPolicyStatus>,
    at: Timestamp,
) -> Option<&'a str> {
    spec.assets
        .iter()
        .find(|asset| {
            policy
                .and_then(|p| p.assets.iter().find(|a| &a.name == *asset))
                .and_then(|a| a.last_success.as_ref())
                .is_none_or(|l| l.snapshot_time.0 > at)
        })
        .map(String::as_str)
}

/// Why a drill ended without its RestoreRequest's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ended {
    /// A backup failed, or the drill ran out of time.
    Failed(String),
    /// Mode `Latest` found an asset with no backup before the simulated disaster.
    NoBackupYet(String),
}

fn set_step(status: &mut DrillScheduleStatus, step: DrillStep) {
    if let Some(a) = status.active.as_mut() {
        a.step = a.step.max(step);
    }
}

/// `name-20261124t100000z`: a drill id that sorts by time and is a valid object name.
pub fn drill_id(name: &str, at: Timestamp) -> String {
    let stamp = at.strftime("%Y%m%dt%H%M%Sz").to_string();
    crate::names::bounded_name(&[name, &stamp], crate::names::NAME_MAX)
}

/// Ready from the state alone: the last drill's verdict, else running or scheduled.
fn ready(ds: &DrillSchedule, status: &DrillScheduleStatus, now: Timestamp) -> Condition {
    let generation = ds.metadata.generation;
    let Some(record) = &status.last_run else {
        let (reason, message) = if status.active.is_some() {
            ("DrillRunning", "a drill is running")
        } else {
            ("Scheduled", "waiting for the next drill")
        };
        return condition(types::READY, Status::True, reason, message, generation, now);
    };
    match record.verdict {
        DrillVerdict::Passed => condition(
            types::READY,
            Status::True,
            "DrillPassed",
            format!(
                "restored and validated; RTO {}, RPO {}",
                record.rto.clone().unwrap_or_default(),
                record.rpo.clone().unwrap_or_else(|| "not measured".into())
            ),
            generation,
            now,
        ),
        DrillVerdict::ObjectivesMissed => condition(
            types::READY,
            Status::False,
            "ObjectivesMissed",
            record.message.clone(),
            generation,
            now,
        ),
        DrillVerdict::Failed => condition(
            types::READY,
            Status::False,
            "DrillFailed",
            record.message.clone(),
            generation,
            now,
        ),
    }
}

/// Ends the active drill: its record (first in history), the objective conditions and the
/// early warning.
fn finish(
    ds: &DrillSchedule,
    status: &mut DrillScheduleStatus,
    active: &ActiveDrill,
    rr: Option<&RestoreRequestStatus>,
    ended: Option<Ended>,
    now: Timestamp,
) {
    let spec = &ds.spec;
    let generation = ds.metadata.generation;
    let no_backup = matches!(ended, Some(Ended::NoBackupYet(_)));
    let record = record(ds, active, rr, ended, now);
    status.active = None;
    status.history.insert(0, record.clone());
    status.history.truncate(usize::from(spec.history_limit));
    status.last_run = Some(record.clone());
    let rto_met = objective_condition(
        types::RTO_MET,
        record.rto_met,
        record.rto.as_ref(),
        &spec.objectives.rto,
        generation,
        now,
    );
    let rpo_met = if no_backup {
        let why = record.message.clone();
        condition(
            types::RPO_MET,
            Status::False,
            "NoBackupYet",
            why,
            generation,
            now,
        )
    } else if spec.backup == DrillBackupMode::Fresh && record.rto.is_some() {
        let why = "mode Fresh restores a backup taken at drill start: it proves restorability \
                   only; mode Latest measures the RPO a disaster gets";
        condition(
            types::RPO_MET,
            Status::Unknown,
            "RPONotMeasured",
            why.to_owned(),
            generation,
            now,
        )
    } else {
        objective_condition(
            types::RPO_MET,
            record.rpo_met,
            record.rpo.as_ref(),
            &spec.objectives.rpo,
            generation,
            now,
        )
    };
    let risk = rto_risk_condition(ds, &status.history, now);
    for c in [rto_met, rpo_met, risk] {
        set_condition(&mut status.conditions, c);
    }
}

/// RTOMet or RPOMet from what the last drill achieved (`value`, absent when it did not restore).
fn objective_condition(
    type_: &str,
    met: bool,
    value: Option<&String>,
    objective: &lifeboat_api::Duration,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let (reason, message) = match (met, value) {
        (true, Some(v)) => (
            "WithinObjective",
            format!("achieved {v}; objective {objective}"),
        ),
        (false, Some(v)) => (
            "ObjectiveMissed",
            format!("achieved {v}; objective {objective}"),
        ),
        (_, None) => (
            "NotMeasured",
            "the last drill did not restore, so nothing was measured".to_owned(),
        ),
    };
    condition(type_, Status::from(met), reason, message, generation, now)
}

/// The early warning: the last drills all took most of the RTO objective.
fn rto_risk_condition(ds: &DrillSchedule, history: &[DrillRecord], now: Timestamp) -> Condition {
    let generation = ds.metadata.generation;
    let rto = &ds.spec.objectives.rto;
    match rto_at_risk(history, rto.as_secs() as f64) {
        Some(rtos) => condition(
            types::RTO_AT_RISK,
            Status::True,
            "RTOTrendingToObjective",
            format!(
                "the last {RTO_RISK_DRILLS} drills took {} of an RTO objective of {rto}: above {:.0}%",
                rtos.iter()
                    .map(|r| human(*r as u64))
                    .collect::<Vec<_>>()
                    .join(", "),
                RTO_RISK_SHARE * 100.0
            ),
            generation,
            now,
        ),
        None => condition(
            types::RTO_AT_RISK,
            Status::False,
            "WithinMargin",
            format!(
                "not every one of the last {RTO_RISK_DRILLS} drills took over {:.0}% of the RTO objective",
                RTO_RISK_SHARE * 100.0
            ),
            generation,
            now,
        ),
    }
}

/// The record of a drill that ends now: what its RestoreRequest achieved against the objectives.
fn record(
    ds: &DrillSchedule,
    active: &ActiveDrill,
    rr: Option<&RestoreRequestStatus>,
    ended: Option<Ended>,
    now: Timestamp,
) -> DrillRecord {
    let spec = &ds.spec;
    let m = measure(spec, active, rr, now);
    let latest = spec.backup == DrillBackupMode::Latest;
    let rto_met = m
        .rto
        .is_some_and(|r| r <= spec.objectives.rto.as_secs() as f64);
    let rpo_met = m
        .rpo
        .is_some_and(|r| r <= spec.objectives.rpo.as_secs() as f64);
    // Mode Fresh is judged on what it measures: restorability and the RTO.
    let objectives_met = rto_met && (rpo_met || !latest);
    let rr_failure = rr.filter(|r| r.phase != RestorePhase::Succeeded).map(|r| {
        conditions::find(&r.conditions, types::READY).map_or_else(
            || format!("restore {:?}", r.phase),
            |c| format!("{}: {}", c.reason, c.message),
        )
    });
    let failure = ended.map(|e| match e {
        Ended::Failed(m) | Ended::NoBackupYet(m) => m,
    });
    let message = failure.or(rr_failure).or(m.evidence_failure);
    let verdict = match (&message, objectives_met) {
        (Some(_), _) => DrillVerdict::Failed,
        (None, true) => DrillVerdict::Passed,
        (None, false) => DrillVerdict::ObjectivesMissed,
    };
    let missed = if verdict == DrillVerdict::ObjectivesMissed {
        missed_objectives(spec, (m.rto, !rto_met), (m.rpo, !rpo_met && latest))
    } else {
        String::new()
    };
    DrillRecord {
        id: active.id.clone(),
        started_at: active.started_at.clone(),
        finished_at: Time(m.finished_at),
        verdict,
        rto_seconds: m.rto,
        rto: m.rto.map(|r| human(r as u64)),
        rpo_seconds: m.rpo,
        rpo: m.rpo.map(|r| human(r as u64)),
        rpo_canary_seconds: m.rpo_canary,
        rto_met,
        rpo_met,
        backups: m.backups,
        checks: rr.map(|r| r.checks.clone()).unwrap_or_default(),
        message: message.unwrap_or(missed),
        evidence: Some(super::evidence::evidence_path(
            ds.metadata.namespace.as_deref().unwrap_or_default(),
            &spec.policy,
            &active.id,
        )),
        notification: super::notify::owed(ds, &active.id, verdict),
    }
}

/// Seconds from `from` to `to`, never negative.
fn elapsed(from: Timestamp, to: Timestamp) -> f64 {
    ((to.as_millisecond() - from.as_millisecond()) as f64 / 1000.0).max(0.0)
}

/// What a drill measured, from its restore's status.
struct Measured {
    finished_at: Timestamp,
    /// The simulated disaster (drill start) until restored and validated.
    rto: Option<f64>,
    /// The disaster minus the snapshot time of the oldest restored data; not measured in mode
    /// Fresh, whose backup is taken at the disaster by construction.
    rpo: Option<f64>,
    /// The same from the data: the oldest of the canary markers the restored targets hold.
    rpo_canary: Option<f64>,
    /// How the restored data contradicts the backups it says it came from (mode Latest).
    evidence_failure: Option<String>,
    backups: Vec<RestoredBackup>,
}

fn measure(
    spec: &lifeboat_api::drill_schedule::DrillScheduleSpec,
    active: &ActiveDrill,
    rr: Option<&RestoreRequestStatus>,
    now: Timestamp,
) -> Measured {
    let started = active.started_at.0;
    let restored = rr.is_some_and(|r| r.phase == RestorePhase::Succeeded);
    let latest = spec.backup == DrillBackupMode::Latest;
    let finished_at = rr.and_then(|r| r.finished_at.as_ref()).map_or(now, |t| t.0);
    let oldest = rr.and_then(|r| {
        r.plan
            .iter()
            .filter_map(|p| p.snapshot_time.as_ref().map(|t| t.0))
            .min()
    });
    let backups = rr
        .map(|r| {
            r.plan
                .iter()
                .map(|p| RestoredBackup {
                    asset: p.asset.clone(),
                    id: p.backup_id.clone(),
                    snapshot_time: p.snapshot_time.clone(),
                    rpo_seconds: p
                        .snapshot_time
                        .as_ref()
                        .filter(|_| restored && latest)
                        .map(|t| elapsed(t.0, started)),
                })
                .collect()
        })
        .unwrap_or_default();
    Measured {
        finished_at,
        rto: restored.then(|| elapsed(started, finished_at)),
        rpo: oldest
            .filter(|_| restored && latest)
            .map(|s| elapsed(s, started)),
        rpo_canary: rr
            .iter()
            .flat_map(|r| r.checks.iter())
            .filter_map(|c| c.canary.as_ref().map(|m| m.written_at))
            .min()
            .filter(|_| restored)
            .map(|w| elapsed(w, started)),
        evidence_failure: rr
            .filter(|_| restored && latest)
            .and_then(|r| contradiction(r, started)),
        backups,
    }
}

/// What a drill that restored and validated missed: each measure (unknown when not measured)
/// with whether it missed its objective.
fn missed_objectives(
    spec: &lifeboat_api::drill_schedule::DrillScheduleSpec,
    (rto, rto_missed): (Option<f64>, bool),
    (rpo, rpo_missed): (Option<f64>, bool),
) -> String {
    let human = |v: Option<f64>| v.map_or("?".into(), |r| human(r as u64));
    let mut m = Vec::new();
    if rto_missed {
        m.push(format!(
            "RTO {} > objective {}",
            human(rto),
            spec.objectives.rto
        ));
    }
    if rpo_missed {
        m.push(format!(
            "RPO {} > objective {}",
            human(rpo),
            spec.objectives.rpo
        ));
    }
    m.join("; ")
}

/// Why the restored data contradicts the backups a drill in mode `Latest` says it restored,
/// if it does. Each restored backup was taken before the simulated disaster, and the newest
/// canary marker read back from an asset that writes them is the one that backup wrote just
/// before its snapshot: nothing newer (no write after the backup, no later backup) is in the
/// restored data. The canary is what makes the measured RPO evidence rather than arithmetic.
fn contradiction(rr: &RestoreRequestStatus, disaster: Timestamp) -> Option<String> {
    for p in &rr.plan {
        let snapshot = p.snapshot_time.as_ref().map(|t| t.0);
        if let Some(s) = snapshot
            && s > disaster
        {
            return Some(format!(
                "restored backup {}={} was taken at {s}, after the simulated disaster at {disaster}",
                p.asset, p.backup_id
            ));
        }
        let canary = rr
            .checks
            .iter()
            .find(|c| c.name == canary_check_name(&p.asset))
            .and_then(|c| c.canary.as_ref());
        let (Some(m), Some(s)) = (canary, snapshot) else {
            continue;
        };
        // Status times (`metav1.Time`) keep whole seconds; the marker keeps milliseconds.
        if m.id != p.backup_id || m.written_at.as_second() > s.as_second() {
            return Some(format!(
                "the newest canary marker restored for {} is {} written at {}, not the one backup {} wrote before its snapshot at {s}: the restored data is not that backup's",
                p.asset, m.id, m.written_at, p.backup_id
            ));
        }
    }
    None
}

/// The Event reason of a drill's verdict.
pub fn verdict_reason(verdict: DrillVerdict) -> (EventType, &'static str) {
    match verdict {
        DrillVerdict::Passed => (EventType::Normal, "DrillPassed"),
        DrillVerdict::ObjectivesMissed => (EventType::Warning, "DrillObjectivesMissed"),
        DrillVerdict::Failed => (EventType::Warning, "DrillFailed"),
    }
}

/// What a drill's verdict says, for its Event and its notification.
pub fn verdict_note(ds: &DrillSchedule, record: &DrillRecord) -> String {
    format!(
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
    )
}

/// The Events the transition from `old` to `new` owes, each with an id of its own: a drill
/// started, its verdict, the early warning, its notification's outcome.
pub fn events(
    ds: &DrillSchedule,
    old: &DrillScheduleStatus,
    new: &DrillScheduleStatus,
) -> Vec<PendingEvent> {
    let mut out = Vec::new();
    if let Some(a) = &new.active
        && old.active.as_ref().is_none_or(|o| o.id != a.id)
    {
        let note = match ds.spec.backup {
            DrillBackupMode::Fresh => format!(
                "drill {}: backing up {} as the simulated disaster",
                a.id,
                ds.spec.assets.join(", ")
            ),
            DrillBackupMode::Latest => format!(
                "drill {}: simulating the disaster now; restoring the newest backups taken before it into staging",
                a.id
            ),
        };
        out.push(event(
            format!("DrillStarted/{}", a.id),
            EventType::Normal,
            "DrillStarted",
            format!("Drill/{}", a.id),
            note,
        ));
    }
    let Some(record) = &new.last_run else {
        return out;
    };
    let same = |o: &DrillRecord| o.id == record.id;
    if !old.last_run.as_ref().is_some_and(same) {
        let (type_, reason) = verdict_reason(record.verdict);
        out.push(event(
            format!("{reason}/{}", record.id),
            type_,
            reason,
            format!("Drill/{}", record.id),
            verdict_note(ds, record),
        ));
        let at_risk = |s: &DrillScheduleStatus| {
            conditions::status(&s.conditions, types::RTO_AT_RISK) == Some(Status::True)
        };
        if at_risk(new)
            && !at_risk(old)
            && let Some(c) = conditions::find(&new.conditions, types::RTO_AT_RISK)
        {
            out.push(event(
                format!("RTOAtRisk/{}", record.id),
                EventType::Warning,
                "RTOAtRisk",
                format!("Drill/{}", record.id),
                c.message.clone(),
            ));
        }
    }
    let was_pending = old
        .last_run
        .as_ref()
        .filter(|o| same(o))
        .and_then(|o| o.notification.as_ref())
        .is_some_and(|n| n.state == NotificationState::Pending);
    if let Some(n) = &record.notification
        && was_pending
        && n.state != NotificationState::Pending
    {
        let (type_, reason) = match n.state {
            NotificationState::Sent => (EventType::Normal, "NotificationSent"),
            _ => (EventType::Warning, "NotificationFailed"),
        };
        let note = match &n.reason {
            Some(r) => format!("{r}: {}", n.message),
            None => n.message.clone(),
        };
        out.push(event(
            format!("{reason}/{}", record.id),
            type_,
            reason,
            format!("Notify/{}", n.job),
            note,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn record(rto: Option<f64>) -> DrillRecord {
        serde_json::from_value(serde_json::json!({
            "id": "d", "startedAt": "2026-11-24T06:00:00Z", "finishedAt": "2026-11-24T06:20:00Z",
            "verdict": "Passed", "rtoSeconds": rto, "rtoMet": true, "rpoMet": true
        }))
        .unwrap()
    }

    #[test]
    fn rto_is_at_risk_when_the_last_three_drills_all_took_over_80_percent() {
        let objective = 1800.0; // 30 minutes: 80% is 24 minutes
        let h = |rtos: &[Option<f64>]| rtos.iter().map(|r| record(*r)).collect::<Vec<_>>();
        assert_eq!(
            rto_at_risk(
                &h(&[Some(1500.0), Some(1450.0), Some(1700.0), Some(100.0)]),
                objective
            ),
            Some(vec![1500.0, 1450.0, 1700.0])
        );
        // One of the three within the margin: no warning.
        assert_eq!(
            rto_at_risk(&h(&[Some(1500.0), Some(1400.0), Some(1700.0)]), objective),
            None
        );
        // Fewer than three drills, or one that measured nothing: no warning.
        assert_eq!(
            rto_at_risk(&h(&[Some(1500.0), Some(1500.0)]), objective),
            None
        );
        assert_eq!(
            rto_at_risk(&h(&[Some(1500.0), None, Some(1500.0)]), objective),
            None
        );
    }

    fn drill(mode: Option<&str>, status: serde_json::Value) -> DrillSchedule {
        let mut spec = serde_json::json!({
            "schedule": "0 6 * * *", "policy": "shop", "assets": ["db"],
            "staging": {"targets": [{"asset": "db", "postgres": {"host": "staging", "user": "u"}}]},
            "objectives": {"rto": "30m", "rpo": "15m"}
        });
        if let Some(m) = mode {
            spec["backup"] = m.into();
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DrillSchedule",
            "metadata": {"name": "q", "namespace": "shop", "generation": 1},
            "spec": spec, "status": status
        }))
        .unwrap()
    }

    fn policy_with_backup(snapshot: &str) -> BackupPolicyStatus {
        serde_json::from_value(
            serde_json::json!({"assets": [{"name": "db", "lastSuccess": {
            "id": "b1", "snapshotTime": snapshot, "startedAt": snapshot, "finishedAt": snapshot,
            "storedBytes": 1, "sha256": "x", "durationSeconds": 1.0}}]}),
        )
        .unwrap()
    }

    /// The RestoreRequest of a drill that started at 06:00, restored backup `b1` (snapshot
    /// 05:40) and read back the canary marker `marker` written at `written`.
    fn restored(marker: &str, written: &str) -> RestoreRequestStatus {
        serde_json::from_value(serde_json::json!({
            "phase": "Succeeded", "startedAt": "2026-11-24T06:00:01Z",
            "finishedAt": "2026-11-24T06:05:00Z",
            "plan": [{"asset": "db", "backupId": "b1", "snapshotTime": "2026-11-24T05:40:00Z",
                      "target": "staging", "state": "Done"}],
            "checks": [{"name": "canary/db", "passed": true, "attempts": 1, "durationSeconds": 0.1,
                        "canary": {"id": marker, "writtenAt": written}}]
        }))
        .unwrap()
    }

    fn running() -> serde_json::Value {
        serde_json::json!({"active": {"id": "q-1", "startedAt": "2026-11-24T06:00:00Z",
                                      "step": "Restore", "restoreRequest": "q-1"}})
    }

    fn cond(s: &DrillScheduleStatus, t: &str) -> (String, String) {
        let c = conditions::find(&s.conditions, t).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_drill_restores_the_newest_backup_and_measures_its_age_as_the_rpo() {
        let ds = drill(None, running());
        let seen = Observed {
            restore: Some(restored("b1", "2026-11-24T05:39:59.500Z")),
            ..Default::default()
        };
        let d = decide(&ds, &seen, at("2026-11-24T06:05:01Z"));
        assert_eq!(d.next, Next::Finished);
        let r = d.status.last_run.clone().unwrap();
        // Disaster 06:00 − snapshot 05:40: 20 minutes lost, over the 15-minute objective.
        assert_eq!(r.rpo_seconds, Some(1200.0));
        assert_eq!(r.rpo_canary_seconds, Some(1200.5));
        assert_eq!(r.verdict, DrillVerdict::ObjectivesMissed);
        assert!(
            r.message.contains("RPO 20m > objective 15m"),
            "{}",
            r.message
        );
        assert_eq!(
            cond(&d.status, types::RPO_MET),
            ("False".into(), "ObjectiveMissed".into())
        );
    }

    #[test]
    fn a_canary_that_is_not_the_restored_backups_own_fails_the_drill() {
        for (marker, written) in [
            // A later backup's marker: the data is newer than the backup claimed.
            ("b2", "2026-11-24T05:50:00Z"),
            // The backup's own id, but written after its snapshot.
            ("b1", "2026-11-24T05:41:00Z"),
        ] {
            let seen = Observed {
                restore: Some(restored(marker, written)),
                ..Default::default()
            };
            let d = decide(&drill(None, running()), &seen, at("2026-11-24T06:05:01Z"));
            let r = d.status.last_run.clone().unwrap();
            assert_eq!(r.verdict, DrillVerdict::Failed, "{marker}");
            assert!(r.message.contains("not that backup's"), "{}", r.message);
        }
    }

    #[test]
    fn a_default_drill_with_no_backup_before_the_disaster_fails_with_no_backup_yet() {
        let ds = drill(None, serde_json::json!({}));
        let now = at("2026-11-24T06:00:00Z");
        for policy in [None, Some(policy_with_backup("2026-11-24T06:00:05Z"))] {
            let seen = Observed {
                run_now: Some("t".into()),
                policy: policy.clone(),
                ..Default::default()
            };
            let d = decide(&ds, &seen, now);
            assert_eq!(d.next, Next::Finished, "no backup Job, no restore");
            assert!(d.status.active.is_none());
            let r = d.status.last_run.clone().unwrap();
            assert_eq!(r.verdict, DrillVerdict::Failed);
            assert!(
                r.message.contains("asset db has no good backup"),
                "{}",
                r.message
            );
            assert_eq!(r.rpo_seconds, None);
            assert_eq!(
                cond(&d.status, types::RPO_MET),
                ("False".into(), "NoBackupYet".into())
            );
        }
        // With a backup from before the disaster it restores.
        let seen = Observed {
            run_now: Some("t".into()),
            policy: Some(policy_with_backup("2026-11-24T05:40:00Z")),
            ..Default::default()
        };
        assert_eq!(decide(&ds, &seen, now).next, Next::Restore);
    }

    #[test]
    fn a_fresh_drill_proves_restorability_and_does_not_report_an_rpo() {
        let mut status = running();
        status["active"]["step"] = "Restore".into();
        let ds = drill(Some("Fresh"), status);
        let seen = Observed {
            restore: Some(restored("b1", "2026-11-24T05:39:59.500Z")),
            ..Default::default()
        };
        let d = decide(&ds, &seen, at("2026-11-24T06:05:01Z"));
        let r = d.status.last_run.clone().unwrap();
        assert_eq!((r.rpo_seconds, r.rpo.clone()), (None, None));
        assert_eq!(r.verdict, DrillVerdict::Passed, "judged on its RTO");
        assert_eq!(
            cond(&d.status, types::RPO_MET),
            ("Unknown".into(), "RPONotMeasured".into())
        );
        assert!(verdict_note(&ds, &r).contains("RPO not measured"));
    }

    /// A drill's record from any way a drill can end: hostile timestamps (snapshots after the
    /// disaster, a finish before the start), any end of its restore, any canary, or a drill
    /// that ended before restoring.
    mod hostile {
        use proptest::prelude::*;

        use super::super::*;
        use super::drill;

        /// How a restore can end: `finish` is called with a finished request only.
        const PHASES: [&str; 3] = ["Succeeded", "Failed", "RolledBack"];

        fn at(offset: i64) -> String {
            Timestamp::from_second(1_795_000_000 + offset)
                .unwrap_or(Timestamp::UNIX_EPOCH)
                .to_string()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn a_record_never_claims_what_it_did_not_measure(
                latest: bool,
                phase in 0usize..PHASES.len(),
                snapshots in proptest::collection::vec(proptest::option::of(-7200i64..7200), 1..4),
                finished in proptest::option::of(-600i64..7200),
                canary in proptest::option::of(-7200i64..7200),
                ended in proptest::option::of(any::<bool>()),
            ) {
                // What `finish` is called with: a drill that ended before its restore (no
                // request), or one whose request finished.
                let with_rr = ended.is_none();
                let ds = drill(Some(if latest { "Latest" } else { "Fresh" }), serde_json::json!({}));
                let active: ActiveDrill = serde_json::from_value(serde_json::json!({
                    "id": "q-1", "startedAt": at(0), "step": "Restore"})).unwrap();
                let plan: Vec<serde_json::Value> = snapshots.iter().enumerate().map(|(i, s)| {
                    let mut p = serde_json::json!({"asset": format!("a{i}"), "backupId": format!("b{i}"),
                        "target": "staging", "state": "Done"});
                    if let Some(s) = s {
                        p["snapshotTime"] = at(*s).into();
                    }
                    p
                }).collect();
                let mut rr = serde_json::json!({"phase": PHASES[phase], "plan": plan});
                if let Some(f) = finished {
                    rr["finishedAt"] = at(f).into();
                }
                if let Some(c) = canary {
                    rr["checks"] = serde_json::json!([{"name": "canary/a0", "passed": true,
                        "attempts": 1, "durationSeconds": 0.1,
                        "canary": {"id": "b0", "writtenAt": at(c)}}]);
                }
                let rr: RestoreRequestStatus = serde_json::from_value(rr).unwrap();
                let ended = ended.map(|nb| if nb {
                    Ended::NoBackupYet("no backup".into())
                } else {
                    Ended::Failed("backup failed".into())
                });
                let early = ended.is_some();
                let rr = with_rr.then_some(&rr);
                let r = record(&ds, &active, rr, ended, Timestamp::from_second(1_795_000_300).unwrap());

                let restored = rr.is_some_and(|r| r.phase == RestorePhase::Succeeded);
                for v in [r.rto_seconds, r.rpo_seconds, r.rpo_canary_seconds].into_iter().flatten() {
                    prop_assert!(v >= 0.0 && v.is_finite(), "{v}");
                }
                prop_assert_eq!(r.rto_seconds.is_some(), restored);
                prop_assert_eq!(r.rpo_seconds.is_some(), restored && latest && snapshots.iter().any(Option::is_some));
                if !latest {
                    prop_assert!(r.backups.iter().all(|b| b.rpo_seconds.is_none()), "Fresh measured an RPO");
                }
                prop_assert_eq!(r.backups.len(), if with_rr { snapshots.len() } else { 0 });
                if r.rto_met {
                    prop_assert!(r.rto_seconds.is_some_and(|v| v <= 1800.0));
                }
                if r.rpo_met {
                    prop_assert!(r.rpo_seconds.is_some_and(|v| v <= 900.0));
                }
                match r.verdict {
                    DrillVerdict::Passed => {
                        prop_assert!(r.message.is_empty(), "{}", r.message);
                        prop_assert!(r.rto_met && (r.rpo_met || !latest));
                    }
                    DrillVerdict::ObjectivesMissed => {
                        prop_assert!(restored && !early);
                        prop_assert!(!r.message.is_empty(), "what was missed is said");
                    }
                    DrillVerdict::Failed => prop_assert!(!r.message.is_empty()),
                }
                if early || !restored {
                    prop_assert_eq!(r.verdict, DrillVerdict::Failed);
                }
            }
        }
    }

    /// The drill controller's decisions driven by a hostile world, the reconcile's part played
    /// as `mod.rs` does (the RestoreRequest's name into status, the Events published): drills
    /// asked for at any moment, backups failing or recorded late, restores ending any way, time
    /// jumping past the timeout. Each started drill is recorded once, its backups and its
    /// RestoreRequest are asked for once, and no Event is owed twice.
    mod world {
        use std::collections::BTreeSet;

        use proptest::prelude::*;

        use super::super::*;
        use super::drill;
        use crate::jobs::JobFailure;
        use lifeboat_api::agent_result::{AgentSummary, SUMMARY_VERSION, Verb};

        #[derive(Clone, Debug)]
        enum Event {
            /// Someone asks for a drill (a new token).
            DrillNow,
            /// The drill's backup Job ends.
            Backup(bool),
            /// The policy's status records the drill's backup.
            Recorded,
            /// The drill's RestoreRequest ends: Succeeded, Failed or RolledBack.
            Restore(u8),
            /// Time passes, in seconds.
            Wait(u16),
        }

        fn event() -> impl Strategy<Value = Event> {
            prop_oneof![
                2 => Just(Event::DrillNow),
                2 => any::<bool>().prop_map(Event::Backup),
                2 => Just(Event::Recorded),
                2 => (0u8..3).prop_map(Event::Restore),
                3 => any::<u16>().prop_map(Event::Wait),
            ]
        }

        fn at(offset: i64) -> Timestamp {
            Timestamp::from_second(1_795_000_000 + offset).unwrap_or(Timestamp::UNIX_EPOCH)
        }

        fn policy(backup: Option<(&str, i64)>) -> BackupPolicyStatus {
            let assets = match backup {
                Some((id, t)) => serde_json::json!([{"name": "db", "lastSuccess": {
                    "id": id, "snapshotTime": at(t).to_string(), "startedAt": at(t).to_string(),
                    "finishedAt": at(t).to_string(), "storedBytes": 1, "sha256": "x",
                    "durationSeconds": 1.0}}]),
                None => serde_json::json!([{"name": "db"}]),
            };
            serde_json::from_value(serde_json::json!({"assets": assets})).unwrap()
        }

        struct World {
            ds: DrillSchedule,
            clock: i64,
            tokens: u32,
            run_now: Option<String>,
            backup: Option<JobOutcome>,
            recorded: Option<(String, i64)>,
            restore: Option<RestoreRequestStatus>,
            started: Vec<String>,
            backups_asked: BTreeSet<String>,
            restores_asked: BTreeSet<String>,
            owed: BTreeSet<String>,
        }

        impl World {
            fn reconcile(&mut self) -> Result<(), TestCaseError> {
                let seen = Observed {
                    run_now: self.run_now.clone(),
                    backups: self.backup.iter().cloned().collect(),
                    policy: Some(policy(
                        self.recorded.as_ref().map(|(id, t)| (id.as_str(), *t)),
                    )),
                    restore: self.restore.clone(),
                    ..Default::default()
                };
                let before = self.ds.status.clone().unwrap_or_default();
                let mut d = decide(&self.ds, &seen, at(self.clock));
                let id = d.status.active.as_ref().map(|a| a.id.clone());
                if before.active.is_none()
                    && let Some(id) = &id
                {
                    self.started.push(id.clone());
                }
                if d.next == Next::Finished && before.active.is_none() {
                    // Started and ended in one pass (no backup before the disaster).
                    let last = d.status.last_run.as_ref().map(|r| r.id.clone());
                    if let Some(last) = last
                        && !self.started.contains(&last)
                    {
                        self.started.push(last);
                    }
                }
                match (&d.next, &id) {
                    (Next::Backup, Some(id)) => {
                        prop_assert!(
                            self.backups_asked.insert(id.clone()),
                            "backups of {id} asked for twice"
                        );
                    }
                    (Next::Restore, Some(id)) => {
                        prop_assert!(
                            self.restores_asked.insert(id.clone()),
                            "RestoreRequest {id} asked for twice"
                        );
                        if let Some(a) = d.status.active.as_mut() {
                            a.restore_request = Some(id.clone());
                        }
                        self.restore = Some(
                            serde_json::from_value(serde_json::json!({"phase": "Restoring"}))
                                .unwrap(),
                        );
                    }
                    _ => {}
                }
                for e in &d.status.pending_events {
                    prop_assert!(self.owed.insert(e.id.clone()), "Event {} owed again", e.id);
                }
                if d.next == Next::Finished {
                    self.backup = None;
                    self.restore = None;
                }
                if let Some(token) = &d.status.last_drill_now_token
                    && self.run_now.as_ref() == Some(token)
                {
                    self.run_now = None;
                }
                // Written, then its Events published and its Jobs made.
                d.status.pending_events.clear();
                d.status.pending_jobs.clear();
                self.ds.status = Some(d.status);
                Ok(())
            }

            fn apply(&mut self, e: &Event) {
                self.clock += 1;
                let active = self.ds.status.as_ref().and_then(|s| s.active.clone());
                match e {
                    Event::DrillNow => {
                        self.tokens += 1;
                        self.run_now = Some(format!("t{}", self.tokens));
                    }
                    Event::Backup(good) => {
                        if let Some(a) = active.filter(|a| self.backups_asked.contains(&a.id)) {
                            let bid = format!("{}-db", a.id);
                            let result = if *good {
                                Ok(AgentSummary {
                                    version: SUMMARY_VERSION,
                                    verb: Verb::Backup,
                                    ok: true,
                                    asset: Some("db".into()),
                                    backup_id: Some(bid),
                                    started_at: at(self.clock),
                                    finished_at: at(self.clock),
                                    snapshot_time: Some(at(self.clock)),
                                    stored_bytes: Some(1),
                                    sha256: Some("x".into()),
                                    error_class: None,
                                    message: None,
                                    checks: vec![],
                                    retention_refused: None,
                                    copies: Vec::new(),
                                })
                            } else {
                                Err(JobFailure {
                                    reason: "StorageFailed".into(),
                                    message: "full".into(),
                                    checks: vec![],
                                })
                            };
                            self.backup = Some(JobOutcome {
                                job: format!("{}-backup", a.id),
                                asset: "db".into(),
                                finished_at: at(self.clock),
                                result,
                                checks_report: None,
                            });
                        }
                    }
                    Event::Recorded => {
                        let id = self
                            .backup
                            .as_ref()
                            .and_then(|b| b.result.as_ref().ok()?.backup_id.clone());
                        if let Some(id) = id {
                            self.recorded = Some((id, self.clock - 1));
                        } else if self.recorded.is_none() {
                            // A scheduled backup, for drills that restore the newest one.
                            self.recorded = Some(("scheduled".into(), self.clock - 1));
                        }
                    }
                    Event::Restore(end) => {
                        if self.restore.is_some() {
                            let phase = ["Succeeded", "Failed", "RolledBack"][usize::from(*end)];
                            let snapshot = self.recorded.as_ref().map_or(self.clock - 60, |r| r.1);
                            self.restore = Some(serde_json::from_value(serde_json::json!({
                                "phase": phase, "finishedAt": at(self.clock).to_string(),
                                "plan": [{"asset": "db", "backupId": "b", "target": "staging",
                                          "snapshotTime": at(snapshot).to_string(), "state": "Done"}]
                            })).unwrap());
                        }
                    }
                    Event::Wait(secs) => self.clock += i64::from(*secs),
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            #[test]
            fn each_drill_is_started_and_recorded_once_with_nothing_asked_for_twice(
                latest: bool,
                events in proptest::collection::vec(event(), 0..40),
            ) {
                let mut w = World {
                    ds: drill(Some(if latest { "Latest" } else { "Fresh" }), serde_json::json!({})),
                    clock: 0,
                    tokens: 0,
                    run_now: None,
                    backup: None,
                    recorded: None,
                    restore: None,
                    started: Vec::new(),
                    backups_asked: BTreeSet::new(),
                    restores_asked: BTreeSet::new(),
                    owed: BTreeSet::new(),
                };
                w.reconcile()?;
                for e in &events {
                    w.apply(e);
                    w.reconcile()?;
                }
                let status = w.ds.status.clone().unwrap_or_default();
                // Nothing is due by the schedule here: each drill is one token's.
                prop_assert!(w.started.len() <= w.tokens as usize, "{} drills for {} tokens", w.started.len(), w.tokens);
                let finished = w.started.len() - usize::from(status.active.is_some());
                prop_assert_eq!(status.history.len(), finished.min(10), "{:?}", w.started);
                let ids: BTreeSet<&String> = status.history.iter().map(|r| &r.id).collect();
                prop_assert_eq!(ids.len(), status.history.len(), "a drill recorded twice");
                if !latest {
                    prop_assert!(status.history.iter().all(|r| r.rpo_seconds.is_none()));
                }
            }
        }
    }
}
