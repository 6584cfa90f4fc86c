//! Status conditions, Kubernetes style: keyed by type, with `observedGeneration`, and a
//! `lastTransitionTime` that moves only when the status really changes (kstatus, Flux and Argo CD
//! read them that way).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types Lifeboat writes.
pub mod types {
    /// The resource is reconciled and its last operation went well (what Argo CD's health
    /// scripts and `kubectl wait --for=condition=Ready` read; kstatus reads the two below).
    pub const READY: &str = "Ready";
    /// The newest good backup is younger than the RPO objective.
    pub const RPO_MET: &str = "RPOMet";
    /// The schedule's worst case (longest gap between due times plus the measured backup
    /// duration) is within the RPO objective: False (`ScheduleTooSparse`) when no backup
    /// discipline can meet it with this schedule.
    pub const RPO_ACHIEVABLE: &str = "RPOAchievable";
    /// The last drill restored and validated within the RTO objective.
    pub const RTO_MET: &str = "RTOMet";
    /// The recent drills' RTO is close to the objective: a warning before a drill misses it.
    pub const RTO_AT_RISK: &str = "RTOAtRisk";
    /// The last retention pass of every asset went through (False: the mass-deletion guard
    /// refused one, and nothing of that asset was deleted).
    pub const RETENTION_APPLIED: &str = "RetentionApplied";
    /// Every off-site copy holds each asset's newest good backup (False: `CopyFailing` when the
    /// newest run could not write one, `CopyPending` until a run has copied it).
    pub const COPIES_CURRENT: &str = "CopiesCurrent";
    /// Every `pointInTime` asset's WAL archiver (a Deployment of one) is available (False:
    /// `ArchiverUnavailable`, its replication slot then holds WAL on the source).
    pub const ARCHIVER_READY: &str = "ArchiverReady";
    /// kstatus' "in progress" (True: the resource is still working toward its goal, e.g. a
    /// restore under way). Derived from Ready by [`super::set_kstatus`].
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus' "failed" (True: Ready is False and nothing is in progress that could change
    /// it without an edit or a new run). Derived from Ready by [`super::set_kstatus`].
    pub const STALLED: &str = "Stalled";
}

/// The three condition statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }

    /// The status a condition carries; anything but `True` or `False` is `Unknown`, as
    /// Kubernetes reads it.
    pub fn of(condition: &Condition) -> Status {
        Status::parse(&condition.status)
    }

    /// A condition status as written on the wire, of any Kubernetes type (a Job's conditions are
    /// not `metav1.Condition`); anything but `True` or `False` is `Unknown`.
    pub fn parse(status: &str) -> Status {
        match status {
            "True" => Status::True,
            "False" => Status::False,
            _ => Status::Unknown,
        }
    }
}

impl From<bool> for Status {
    fn from(b: bool) -> Self {
        if b { Status::True } else { Status::False }
    }
}

/// Builds a condition observed at `now` for `generation`.
pub fn condition(
    type_: &str,
    status: Status,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.as_str().to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// Puts `new` into `conditions`, replacing the one of the same type. The transition time of the
/// old condition is kept when its status did not change, so re-asserting a condition is a no-op.
/// Returns whether anything changed (callers skip the status write otherwise).
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            if *old == new {
                return false;
            }
            *old = new;
            true
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// Sets `Reconciling` and `Stalled` from `Ready`, so that kstatus (sigs.k8s.io/cli-utils: Flux,
/// kpt and `kstatus`-based waits compute health from these two conditions and
/// `observedGeneration` only, never from Ready) agrees with Ready: `Reconciling` while
/// `progressing`, else `Stalled` while Ready is False, each carrying Ready's reason and message.
/// Both are written False otherwise, so their transitions are recorded. Nothing without Ready.
pub fn set_kstatus(
    conditions: &mut Vec<Condition>,
    progressing: bool,
    generation: Option<i64>,
    now: Timestamp,
) {
    let Some(ready) = find(conditions, types::READY).cloned() else {
        return;
    };
    let stalled = !progressing && Status::of(&ready) == Status::False;
    for (type_, on) in [(types::RECONCILING, progressing), (types::STALLED, stalled)] {
        let message = if on {
            ready.message.clone()
        } else {
            String::new()
        };
        set_condition(
            conditions,
            condition(
                type_,
                Status::from(on),
                &ready.reason,
                message,
                generation,
                now,
            ),
        );
    }
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// The status of the condition of `type_`, if present.
pub fn status(conditions: &[Condition], type_: &str) -> Option<Status> {
    find(conditions, type_).map(Status::of)
}

/// Whether the condition of `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    status(conditions, type_) == Some(Status::True)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn kstatus_conditions_follow_ready_and_progress() {
        let t0 = at("2026-11-24T10:00:00Z");
        let t1 = at("2026-11-24T11:00:00Z");
        let get = |c: &[Condition], t: &str| {
            let c = find(c, t).unwrap();
            (c.status.clone(), c.reason.clone(), c.message.clone())
        };
        let mut c = Vec::new();
        set_kstatus(&mut c, false, Some(1), t0);
        assert!(c.is_empty(), "nothing without Ready");

        set_condition(
            &mut c,
            condition(
                types::READY,
                Status::False,
                "InProgress",
                "Restoring",
                Some(1),
                t0,
            ),
        );
        set_kstatus(&mut c, true, Some(1), t0);
        assert_eq!(
            get(&c, types::RECONCILING),
            ("True".into(), "InProgress".into(), "Restoring".into())
        );
        assert_eq!(get(&c, types::STALLED).0, "False");

        set_condition(
            &mut c,
            condition(
                types::READY,
                Status::False,
                "BackupFailed",
                "disk full",
                Some(1),
                t1,
            ),
        );
        set_kstatus(&mut c, false, Some(1), t1);
        assert_eq!(get(&c, types::RECONCILING).0, "False");
        assert_eq!(
            get(&c, types::STALLED),
            ("True".into(), "BackupFailed".into(), "disk full".into())
        );
        assert_eq!(
            find(&c, types::STALLED).unwrap().last_transition_time,
            Time(t1)
        );

        set_condition(
            &mut c,
            condition(types::READY, Status::True, "Scheduled", "ok", Some(2), t1),
        );
        set_kstatus(&mut c, false, Some(2), t1);
        for t in [types::RECONCILING, types::STALLED] {
            assert_eq!(get(&c, t).0, "False", "{t}");
            assert_eq!(find(&c, t).unwrap().observed_generation, Some(2));
        }
        // Again with nothing new: nothing changes (no status write is owed).
        let before = c.clone();
        set_kstatus(&mut c, false, Some(2), at("2026-11-24T12:00:00Z"));
        assert_eq!(c, before);
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut cs = Vec::new();
        let t0 = at("2026-11-24T10:00:00Z");
        let t1 = at("2026-11-24T11:00:00Z");
        assert!(set_condition(
            &mut cs,
            condition(types::READY, Status::True, "Reconciled", "ok", Some(1), t0)
        ));
        // Same status and message later: nothing changes, no status write needed.
        assert!(!set_condition(
            &mut cs,
            condition(types::READY, Status::True, "Reconciled", "ok", Some(1), t1)
        ));
        assert_eq!(cs[0].last_transition_time, Time(t0));
        // New generation, same status: observedGeneration moves, transition time stays.
        assert!(set_condition(
            &mut cs,
            condition(types::READY, Status::True, "Reconciled", "ok", Some(2), t1)
        ));
        assert_eq!(cs[0].observed_generation, Some(2));
        assert_eq!(cs[0].last_transition_time, Time(t0));
        // Status flips: transition time moves.
        assert!(set_condition(
            &mut cs,
            condition(
                types::READY,
                Status::False,
                "SecretMissing",
                "x",
                Some(2),
                t1
            )
        ));
        assert_eq!(cs[0].last_transition_time, Time(t1));
        assert_eq!(cs.len(), 1);
        assert!(!is_true(&cs, types::READY));
        assert!(set_condition(
            &mut cs,
            condition(
                types::RPO_MET,
                Status::True,
                "WithinObjective",
                "",
                Some(2),
                t1
            )
        ));
        assert!(is_true(&cs, types::RPO_MET));
        assert_eq!(cs.len(), 2);
    }
}
