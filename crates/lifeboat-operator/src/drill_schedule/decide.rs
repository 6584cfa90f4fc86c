//! A drill's progress, decided from what the cluster shows: the fresh backups' Jobs, the policy's
//! record of its newest good backups, and the RestoreRequest the drill owns. Pure.
//!
//! A drill is composed of the other two controllers' pieces, not a copy of them: on-demand backup
//! Jobs of the policy (the same builder, so the policy's status records them), then a
//! RestoreRequest of `latest` into the staging targets, with the drill's checks.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use lifeboat_api::DrillSchedule;
use lifeboat_api::backup_policy::BackupPolicyStatus;
use lifeboat_api::conditions::{Status, condition, find, set_condition, types};
use lifeboat_api::drill_schedule::{
    ActiveDrill, DrillBackupMode, DrillRecord, DrillScheduleStatus, DrillVerdict,
};
use lifeboat_api::restore_request::{RestorePhase, RestoreRequestStatus};

use crate::backup_policy::status::human;
use crate::jobs::JobOutcome;

/// What the reconcile must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing due: look again at this time.
    Sleep,
    /// Start a drill now (status carries the new active drill): create its backup Jobs.
    Backup,
    /// The fresh backups are recorded: create the RestoreRequest.
    Restore,
    Wait,
    /// The drill finished (status carries the record).
    Finished,
}

/// What the cluster shows of the active drill.
#[derive(Default)]
pub struct Observed<'a> {
    /// Outcomes of the drill's backup Jobs, one per drilled asset once finished.
    pub backups: Vec<JobOutcome>,
    pub policy: Option<&'a BackupPolicyStatus>,
    /// The drill's RestoreRequest, once created.
    pub restore: Option<&'a RestoreRequestStatus>,
}

/// Ready reasons of the spec checks made before `advance` (drill_schedule/mod.rs).
pub const SPEC_PROBLEMS: [&str; 5] = [
    "InvalidSpec",
    "PolicyNotFound",
    "OutOfStagingScope",
    "StagingNamespaceConflict",
    "StagingNamespaceForbidden",
];

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

pub struct Decision {
    pub status: DrillScheduleStatus,
    pub next: Next,
}

/// Advances the drill schedule. `due` is the next scheduled time (from the cron), `run_now` an
/// unhandled on-demand token.
pub fn advance(
    ds: &DrillSchedule,
    due: Option<Timestamp>,
    run_now: Option<&str>,
    seen: &Observed,
    now: Timestamp,
) -> Decision {
    let spec = &ds.spec;
    let generation = ds.metadata.generation;
    let mut status = ds.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    status.next_run_time = due.map(Time);

    // `advance` runs only once the spec checks pass: a Ready=False left by one of them is lifted
    // here (it stayed False through the next drill, found by the staging-scope test).
    let lifted = find(&status.conditions, types::READY)
        .is_some_and(|c| SPEC_PROBLEMS.contains(&c.reason.as_str()));
    let Some(active) = status.active.clone() else {
        let start = run_now.is_some() || (!spec.suspend && due.is_some_and(|d| d <= now));
        if !start {
            let ready = condition(
                types::READY,
                Status::True,
                "Scheduled",
                "waiting for the next drill",
                generation,
                now,
            );
            if status.last_run.is_none() || lifted {
                set_condition(&mut status.conditions, ready);
            }
            return Decision {
                status,
                next: Next::Sleep,
            };
        }
        if lifted {
            set_condition(
                &mut status.conditions,
                condition(
                    types::READY,
                    Status::True,
                    "DrillRunning",
                    "a drill is running",
                    generation,
                    now,
                ),
            );
        }
        if let Some(token) = run_now {
            status.last_drill_now_token = Some(token.to_owned());
        }
        status.active = Some(ActiveDrill {
            id: drill_id(&ds.metadata.name.clone().unwrap_or_default(), now),
            started_at: Time(now),
            step: if spec.backup == DrillBackupMode::Fresh {
                "Backup".into()
            } else {
                "Restore".into()
            },
            restore_request: None,
        });
        let next = if spec.backup == DrillBackupMode::Fresh {
            Next::Backup
        } else {
            Next::Restore
        };
        return Decision { status, next };
    };

    let started = active.started_at.0;
    let elapsed = (now.as_second() - started.as_second()).max(0) as u64;
    if elapsed > spec.timeout.as_secs() {
        return finish(
            ds,
            status,
            &active,
            None,
            Some(format!(
                "the drill did not finish within its timeout of {}",
                spec.timeout
            )),
            now,
        );
    }

    if active.step == "Backup" {
        // Every drilled asset's fresh backup must be finished and good, and recorded by the policy.
        for asset in &spec.assets {
            match seen.backups.iter().find(|o| &o.asset == asset) {
                None => {
                    return Decision {
                        status,
                        next: Next::Wait,
                    };
                }
                Some(o) => match &o.result {
                    Err(f) => {
                        let why = format!(
                            "the fresh backup of {asset} failed: {}: {}",
                            f.reason, f.message
                        );
                        return finish(ds, status, &active, None, Some(why), now);
                    }
                    Ok(s) => {
                        let recorded = seen
                            .policy
                            .and_then(|p| p.assets.iter().find(|a| &a.name == asset))
                            .and_then(|a| a.last_success.as_ref())
                            .is_some_and(|l| Some(&l.id) == s.backup_id.as_ref());
                        if !recorded {
                            return Decision {
                                status,
                                next: Next::Wait,
                            };
                        }
                    }
                },
            }
        }
        if let Some(a) = status.active.as_mut() {
            a.step = "Restore".into();
        }
        return Decision {
            status,
            next: Next::Restore,
        };
    }

    match seen.restore {
        Some(rr) if rr.phase.is_finished() => finish(ds, status, &active, Some(rr), None, now),
        Some(_) => {
            if let Some(a) = status.active.as_mut() {
                a.step = "Restore".into();
            }
            Decision {
                status,
                next: Next::Wait,
            }
        }
        None if active.restore_request.is_some() => Decision {
            status,
            next: Next::Wait,
        },
        None => Decision {
            status,
            next: Next::Restore,
        },
    }
}

/// `name-20261124t100000z`: a drill id that sorts by time and is a valid object name.
pub fn drill_id(name: &str, at: Timestamp) -> String {
    let stamp = at.strftime("%Y%m%dt%H%M%Sz").to_string();
    crate::names::bounded_name(&[name, &stamp], crate::names::NAME_MAX)
}

fn finish(
    ds: &DrillSchedule,
    mut status: DrillScheduleStatus,
    active: &ActiveDrill,
    rr: Option<&RestoreRequestStatus>,
    failure: Option<String>,
    now: Timestamp,
) -> Decision {
    let spec = &ds.spec;
    let generation = ds.metadata.generation;
    let started = active.started_at.0;
    let restored = rr.is_some_and(|r| r.phase == RestorePhase::Succeeded);
    let finished_at = rr.and_then(|r| r.finished_at.as_ref()).map_or(now, |t| t.0);
    // RTO: the simulated disaster (drill start) until restored and validated.
    let rto = restored.then(|| {
        ((finished_at.as_millisecond() - started.as_millisecond()) as f64 / 1000.0).max(0.0)
    });
    // RPO: drill start minus the snapshot time of the oldest restored data.
    let oldest = rr.and_then(|r| {
        r.plan
            .iter()
            .filter_map(|p| p.snapshot_time.as_ref().map(|t| t.0))
            .min()
    });
    let rpo = restored
        .then_some(())
        .and(oldest)
        .map(|s| ((started.as_millisecond() - s.as_millisecond()) as f64 / 1000.0).max(0.0));
    // The same from the data: the oldest of the canary markers the restored targets hold.
    let rpo_canary = rr
        .iter()
        .flat_map(|r| r.checks.iter())
        .filter_map(|c| c.canary.as_ref().map(|m| m.written_at))
        .min()
        .filter(|_| restored)
        .map(|w| ((started.as_millisecond() - w.as_millisecond()) as f64 / 1000.0).max(0.0));
    let rto_met = rto.is_some_and(|r| r <= spec.objectives.rto.as_secs() as f64);
    let rpo_met = rpo.is_some_and(|r| r <= spec.objectives.rpo.as_secs() as f64);
    let rr_failure = rr.filter(|r| r.phase != RestorePhase::Succeeded).map(|r| {
        r.conditions
            .iter()
            .find(|c| c.type_ == types::READY)
            .map_or_else(
                || format!("restore {:?}", r.phase),
                |c| format!("{}: {}", c.reason, c.message),
            )
    });
    let message = failure.or(rr_failure);
    let verdict = match (&message, rto_met && rpo_met) {
        (Some(_), _) => DrillVerdict::Failed,
        (None, true) => DrillVerdict::Passed,
        (None, false) => DrillVerdict::ObjectivesMissed,
    };
    let missed = match verdict {
        DrillVerdict::ObjectivesMissed => {
            let mut m = Vec::new();
            if !rto_met {
                m.push(format!(
                    "RTO {} > objective {}",
                    rto.map_or("?".into(), |r| human(r as u64)),
                    spec.objectives.rto
                ));
            }
            if !rpo_met {
                m.push(format!(
                    "RPO {} > objective {}",
                    rpo.map_or("?".into(), |r| human(r as u64)),
                    spec.objectives.rpo
                ));
            }
            m.join("; ")
        }
        _ => String::new(),
    };
    let record = DrillRecord {
        id: active.id.clone(),
        started_at: active.started_at.clone(),
        finished_at: Time(finished_at),
        verdict,
        rto_seconds: rto,
        rto: rto.map(|r| human(r as u64)),
        rpo_seconds: rpo,
        rpo: rpo.map(|r| human(r as u64)),
        rpo_canary_seconds: rpo_canary,
        rto_met,
        rpo_met,
        backups: rr
            .map(|r| {
                r.plan
                    .iter()
                    .map(|p| format!("{}={}", p.asset, p.backup_id))
                    .collect()
            })
            .unwrap_or_default(),
        checks: rr.map(|r| r.checks.clone()).unwrap_or_default(),
        message: message.clone().unwrap_or(missed.clone()),
        evidence: Some(super::evidence::evidence_path(
            ds.metadata.namespace.as_deref().unwrap_or_default(),
            &spec.policy,
            &active.id,
        )),
        notification: super::notify::owed(ds, &active.id, verdict),
    };
    status.active = None;
    status.history.insert(0, record.clone());
    status.history.truncate(usize::from(spec.history_limit));
    status.last_run = Some(record.clone());
    let ready = match verdict {
        DrillVerdict::Passed => condition(
            types::READY,
            Status::True,
            "DrillPassed",
            format!(
                "restored and validated; RTO {}, RPO {}",
                record.rto.clone().unwrap_or_default(),
                record.rpo.clone().unwrap_or_default()
            ),
            generation,
            now,
        ),
        DrillVerdict::ObjectivesMissed => condition(
            types::READY,
            Status::False,
            "ObjectivesMissed",
            missed,
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
    };
    set_condition(&mut status.conditions, ready);
    let objective_condition =
        |type_: &str, met: bool, value: Option<&String>, objective: String| {
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
        };
    set_condition(
        &mut status.conditions,
        objective_condition(
            types::RTO_MET,
            rto_met,
            record.rto.as_ref(),
            spec.objectives.rto.to_string(),
        ),
    );
    set_condition(
        &mut status.conditions,
        objective_condition(
            types::RPO_MET,
            rpo_met,
            record.rpo.as_ref(),
            spec.objectives.rpo.to_string(),
        ),
    );
    let objective = spec.objectives.rto.as_secs() as f64;
    let risk = match rto_at_risk(&status.history, objective) {
        Some(rtos) => condition(
            types::RTO_AT_RISK,
            Status::True,
            "RTOTrendingToObjective",
            format!(
                "the last {RTO_RISK_DRILLS} drills took {} of an RTO objective of {}: above {:.0}%",
                rtos.iter()
                    .map(|r| human(*r as u64))
                    .collect::<Vec<_>>()
                    .join(", "),
                spec.objectives.rto,
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
    };
    set_condition(&mut status.conditions, risk);
    Decision {
        status,
        next: Next::Finished,
    }
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
}
