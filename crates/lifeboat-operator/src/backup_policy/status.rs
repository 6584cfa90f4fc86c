//! The status of a BackupPolicy, computed from its previous status and the outcomes of the Jobs
//! still visible. Pure: the reconcile reads, this decides, the reconcile writes.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use lifeboat_api::BackupPolicy;
use lifeboat_api::agent_result::{CopyOutcome, ErrorClass};
use lifeboat_api::backup_policy::{
    AssetStatus, BackupFailure, BackupPolicyStatus, BackupRecord, CopyStatus, RpoBasis,
    WorstCaseRpo,
};
use lifeboat_api::common::{EventType, PendingEvent};
use lifeboat_api::conditions::{self, Status, condition, set_condition, set_kstatus, types};
use lifeboat_api::schedule::{CronSchedule, RPO_HORIZON};

use crate::controller::requeue::RESYNC;
use crate::effects::{self, event};
use crate::error::Problem;
use crate::jobs::JobOutcome;

/// The computed status and when the policy should be looked at again.
pub struct Decision {
    pub status: BackupPolicyStatus,
    /// Whether `status` differs from what is stored (else no write: one write per change).
    pub changed: bool,
    pub requeue_after: Duration,
    /// Per asset, the snapshot `RPOMet` measures from (none without an objective, or before
    /// the asset has one): what the RPO alert compares, so it fires on the same basis.
    pub measured_from: Vec<(String, Timestamp)>,
}

/// What the drills of a policy prove: each asset's newest verified backup, and which assets a
/// DrillSchedule drills at all (RPOMet measures those from verified backups unless the policy
/// says otherwise; an asset no drill covers is measured from its newest backup).
#[derive(Clone, Debug, Default)]
pub struct Verification {
    pub drilled: std::collections::BTreeSet<String>,
    pub backups: std::collections::BTreeMap<String, lifeboat_api::backup_policy::VerifiedBackup>,
}

/// Per `pointInTime` asset, the upper bound of its WAL archive lag in seconds
/// (`archiver::lag_bound`): what its RPO is measured from instead of its newest base backup.
pub type ArchiveLags = std::collections::BTreeMap<String, i64>;

/// Computes the next status, with the Events its transitions owe. `handled_token` is the
/// on-demand token acted upon in this pass.
pub fn decide(
    policy: &BackupPolicy,
    outcomes: &[JobOutcome],
    problem: Option<&Problem>,
    handled_token: Option<String>,
    verification: &Verification,
    lags: &ArchiveLags,
    now: Timestamp,
) -> Decision {
    let old = policy.status.clone().unwrap_or_default();
    let generation = policy.metadata.generation;
    let mut status = old.clone();
    status.observed_generation = generation;
    status.asset_count = u32::try_from(policy.spec.assets.len()).ok();
    let handled = handled_token.is_some();
    if handled {
        status.last_backup_now_token = handled_token;
    }
    status.assets = policy
        .spec
        .assets
        .iter()
        .map(|a| {
            let previous = old.assets.iter().find(|s| s.name == a.name).cloned();
            let mut status = asset_status(&a.name, previous, outcomes);
            status.wal_archive_lag_seconds = lags.get(&a.name).copied();
            // A copy taken out of the spec is no longer reported on.
            status
                .copies
                .retain(|c| policy.spec.copies.iter().any(|s| s.name == c.name));
            status
        })
        .collect();
    let worst = worst_snapshot(&status.assets);
    status.last_backup_time = worst.map(Time);
    set_verified(&mut status, &verification.backups);

    let ready = match problem {
        Some(p) => condition(
            types::READY,
            Status::False,
            p.reason(),
            p.to_string(),
            generation,
            now,
        ),
        None => ready_from_assets(&status.assets, generation, now),
    };
    set_condition(&mut status.conditions, ready);
    // A schedule is never "in progress": healthy or failed, as its last backups went.
    set_kstatus(&mut status.conditions, false, generation, now);
    let retention = retention_applied(&status.assets, generation, now);
    set_or_clear(&mut status.conditions, types::RETENTION_APPLIED, retention);
    let copies = copies_current(policy, &status.assets, generation, now);
    set_or_clear(&mut status.conditions, types::COPIES_CURRENT, copies);
    let rpo = rpo_met(policy, &status.assets, &old, verification, now);
    set_or_clear(&mut status.conditions, types::RPO_MET, rpo.condition);
    let (worst_case, achievable) = rpo_achievable(policy, &status.assets, generation, now);
    status.worst_case_rpo = worst_case;
    set_or_clear(&mut status.conditions, types::RPO_ACHIEVABLE, achievable);

    let owed = events(&old, &status, handled);
    status.pending_events = effects::owe(&old.pending_events, owed);
    // rpoSeconds is the age when the status is written; refreshing it alone is not a change.
    status.rpo_seconds = old.rpo_seconds;
    status.rpo = old.rpo.clone();
    if status != old || (worst.is_some() && old.rpo_seconds.is_none()) {
        let age = worst.map(|t| seconds_between(t, now));
        status.rpo_seconds = age.and_then(|a| i64::try_from(a).ok());
        status.rpo = age.map(human);
    }
    let changed = status != old;
    Decision {
        status,
        changed,
        requeue_after: rpo.crossing.map_or(RESYNC, |c| RESYNC.min(c)),
        measured_from: rpo.measured_from,
    }
}

/// `new` as the condition of its type, or, without one, no condition of that type at all.
fn set_or_clear(
    conditions: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    type_: &str,
    new: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
) {
    match new {
        Some(c) => {
            set_condition(conditions, c);
        }
        None => conditions.retain(|c| c.type_ != type_),
    }
}

/// The worst-off asset's newest good snapshot: the oldest of them, or none while an asset has
/// no good backup at all.
fn worst_snapshot(assets: &[AssetStatus]) -> Option<Timestamp> {
    let newest: Option<Vec<Timestamp>> = assets
        .iter()
        .map(|a| a.last_success.as_ref().map(|s| s.snapshot_time.0))
        .collect();
    newest?.into_iter().min()
}

/// `RPOMet` as measured now: its condition (none without an objective), how long until a met
/// objective turns missed, and per asset the snapshot it is measured from.
struct RpoMeasure {
    condition: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    crossing: Option<Duration>,
    measured_from: Vec<(String, Timestamp)>,
}

fn rpo_met(
    policy: &BackupPolicy,
    assets: &[AssetStatus],
    old: &BackupPolicyStatus,
    verification: &Verification,
    now: Timestamp,
) -> RpoMeasure {
    let Some(objectives) = policy.spec.objectives.as_ref() else {
        return RpoMeasure {
            condition: None,
            crossing: None,
            measured_from: Vec::new(),
        };
    };
    let objective = objectives.rpo.as_secs();
    let points = rpo_points(assets, objectives.rpo_basis, verification, now);
    let measured_from = points
        .iter()
        .filter_map(|(name, t, _)| t.map(|t| ((*name).to_owned(), t)))
        .collect();
    let was = conditions::find(&old.conditions, types::RPO_MET);
    let (met, reason, message, crossing) = rpo_verdict(&points, objective, was, now);
    // The message carries the age at the last transition only: rewriting it as time passes
    // would be a status write per reconcile.
    let keep_message = old
        .conditions
        .iter()
        .find(|c| c.type_ == types::RPO_MET)
        .filter(|c| c.status == Status::from(met).as_str() && c.reason == reason)
        .map(|c| c.message.clone());
    RpoMeasure {
        condition: Some(condition(
            types::RPO_MET,
            Status::from(met),
            reason,
            keep_message.unwrap_or(message),
            policy.metadata.generation,
            now,
        )),
        crossing,
        measured_from,
    }
}

/// Per asset, the snapshot its RPO is measured from, and whether that is a verified one (a
/// drill restored and validated it) rather than the newest good one.
fn rpo_points<'a>(
    assets: &'a [AssetStatus],
    basis: Option<RpoBasis>,
    verification: &Verification,
    now: Timestamp,
) -> Vec<(&'a str, Option<Timestamp>, bool)> {
    assets
        .iter()
        .map(|a| {
            let verified = match basis {
                Some(RpoBasis::Verified) => true,
                Some(RpoBasis::Newest) => false,
                None => verification.drilled.contains(&a.name),
            };
            let t = if verified {
                a.last_verified
                    .as_ref()
                    .and_then(|v| v.snapshot_time.as_ref())
                    .map(|t| t.0)
            } else if let Some(lag) = a.wal_archive_lag_seconds {
                // A pointInTime asset can be restored up to what its archive holds.
                Some(now - jiff::SignedDuration::from_secs(lag))
            } else {
                a.last_success.as_ref().map(|s| s.snapshot_time.0)
            };
            (a.name.as_str(), t, verified)
        })
        .collect()
}

/// Whether the worst point meets `objective` seconds now, with the reason, the message and,
/// when met (or not yet due), how long until it no longer is. An asset without a backup is
/// `NoBackupYet` (or `NoVerifiedBackupYet`) for one objective from when it was first seen
/// without one (`was`, the condition as stored), then `ObjectiveMissed`: a policy whose backups
/// never run is missed, not waiting forever.
fn rpo_verdict(
    points: &[(&str, Option<Timestamp>, bool)],
    objective: u64,
    was: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    now: Timestamp,
) -> (bool, &'static str, String, Option<Duration>) {
    let missing = points.iter().find(|p| p.1.is_none());
    let worst = points
        .iter()
        .filter_map(|(_, t, v)| t.map(|t| (t, *v)))
        .min_by_key(|p| p.0);
    let (t, what) = match (missing, worst) {
        (None, Some((t, true))) => (t, "newest verified backup"),
        (None, Some((t, false))) => (t, "newest good backup"),
        (missing, _) => return waiting(missing, objective, was, now),
    };
    let age = seconds_between(t, now);
    let message = format!(
        "{what} is {} old; objective {}",
        human(age),
        human(objective)
    );
    if age <= objective {
        let crossing = Duration::from_secs(objective.saturating_sub(age) + 1);
        (true, "WithinObjective", message, Some(crossing))
    } else {
        (false, "ObjectiveMissed", message, None)
    }
}

/// [`rpo_verdict`] while an asset has no backup to measure from.
fn waiting(
    missing: Option<&(&str, Option<Timestamp>, bool)>,
    objective: u64,
    was: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    now: Timestamp,
) -> (bool, &'static str, String, Option<Duration>) {
    let (reason, what) = match missing {
        Some((name, _, true)) => (
            "NoVerifiedBackupYet",
            format!("asset {name} has no backup a drill restored and validated"),
        ),
        Some((name, _, false)) => ("NoBackupYet", format!("asset {name} has no good backup")),
        None => ("NoBackupYet", "no asset has a good backup".to_owned()),
    };
    // How long it has been waiting: since the stored condition started waiting, if it was.
    let waited = match was {
        Some(c)
            if Status::of(c) == Status::False
                && matches!(c.reason.as_str(), "NoBackupYet" | "NoVerifiedBackupYet") =>
        {
            seconds_between(c.last_transition_time.0, now)
        }
        Some(c) if Status::of(c) == Status::False && c.reason == "ObjectiveMissed" => {
            objective.saturating_add(1)
        }
        _ => 0,
    };
    if waited > objective {
        let message = format!("{what}, longer than the objective {}", human(objective));
        return (false, "ObjectiveMissed", message, None);
    }
    let due = Duration::from_secs(objective - waited + 1);
    (false, reason, format!("{what} yet"), Some(due))
}

fn asset_status(name: &str, previous: Option<AssetStatus>, outcomes: &[JobOutcome]) -> AssetStatus {
    let mut status = previous.unwrap_or_else(|| AssetStatus {
        name: name.to_owned(),
        ..Default::default()
    });
    let mut mine: Vec<&JobOutcome> = outcomes.iter().filter(|o| o.asset == name).collect();
    mine.sort_by_key(|o| o.finished_at);
    let mut new_success = false;
    for o in &mine {
        match &o.result {
            Ok(s) => {
                let newer = status
                    .last_success
                    .as_ref()
                    .is_none_or(|l| o.finished_at > l.finished_at.0);
                if newer {
                    status.last_success = Some(BackupRecord {
                        id: s.backup_id.clone().unwrap_or_default(),
                        snapshot_time: Time(s.snapshot_time.unwrap_or(s.started_at)),
                        started_at: Time(s.started_at),
                        finished_at: Time(o.finished_at),
                        stored_bytes: s.stored_bytes.unwrap_or_default(),
                        sha256: s.sha256.clone().unwrap_or_default(),
                        duration_seconds: seconds_between(s.started_at, s.finished_at) as f64,
                    });
                    status.retention_refused = s.retention_refused.clone();
                    let snapshot = s.snapshot_time.unwrap_or(s.started_at);
                    status.copies = copy_statuses(&status.copies, &s.copies, snapshot);
                    new_success = true;
                }
            }
            Err(f) => {
                let newer = status
                    .last_failure
                    .as_ref()
                    .is_none_or(|l| o.finished_at > l.time.0);
                if newer {
                    status.last_failure = Some(BackupFailure {
                        time: Time(o.finished_at),
                        reason: f.reason.clone(),
                        message: f.message.clone(),
                        job_name: Some(o.job.clone()),
                    });
                }
            }
        }
    }
    let since = status.last_success.as_ref().map(|s| s.finished_at.0);
    let visible = mine
        .iter()
        .filter(|o| o.result.is_err() && since.is_none_or(|t| o.finished_at > t))
        .count();
    let visible = u32::try_from(visible).unwrap_or(u32::MAX);
    // Failed Jobs are garbage-collected by the history limit; never count down without a success.
    status.consecutive_failures = if new_success {
        visible
    } else {
        status.consecutive_failures.max(visible)
    };
    status
}

/// The copies of an asset after a run that reported `outcomes`, its backup snapshotted at
/// `snapshot`: each copy's newest backup (the one known before when the run could not list the
/// copy), how far it trails, and why it is behind.
fn copy_statuses(
    previous: &[CopyStatus],
    outcomes: &[CopyOutcome],
    snapshot: Timestamp,
) -> Vec<CopyStatus> {
    outcomes
        .iter()
        .map(|o| {
            let before = previous.iter().find(|p| p.name == o.name);
            let (newest_id, newest_snapshot_time) = match (&o.newest_id, o.newest_snapshot_time) {
                (Some(id), Some(t)) => (Some(id.clone()), Some(Time(t))),
                _ => (
                    before.and_then(|b| b.newest_id.clone()),
                    before.and_then(|b| b.newest_snapshot_time.clone()),
                ),
            };
            CopyStatus {
                name: o.name.clone(),
                behind_seconds: newest_snapshot_time
                    .as_ref()
                    .map(|t| (snapshot.as_second() - t.0.as_second()).max(0)),
                newest_id,
                newest_snapshot_time,
                last_error: o.error.as_ref().map(|e| {
                    let reason = o.error_class.map_or("CopyFailed", ErrorClass::reason);
                    format!("{reason}: {e}")
                }),
                retention_refused: o.retention_refused.clone(),
            }
        })
        .collect()
}

/// The copies the stored status (`before`) listed for asset `now.name` that `now` no longer
/// lists with a snapshot: taken out of the spec, their metric series must go.
pub(crate) fn copies_gone<'a>(
    before: Option<&'a BackupPolicyStatus>,
    now: &'a AssetStatus,
) -> impl Iterator<Item = &'a str> + 'a {
    before
        .and_then(|b| b.assets.iter().find(|a| a.name == now.name))
        .into_iter()
        .flat_map(|a| a.copies.iter())
        .filter(|c| {
            !now.copies
                .iter()
                .any(|n| n.name == c.name && n.newest_snapshot_time.is_some())
        })
        .map(|c| c.name.as_str())
}

/// CopiesCurrent, absent without copies or before any good backup: False (`CopyFailing`) while
/// the newest run of an asset could not write a copy, False (`CopyPending`) while a copy does not
/// hold an asset's newest good backup yet (a copy added since), True once every copy holds it.
fn copies_current(
    policy: &BackupPolicy,
    assets: &[AssetStatus],
    generation: Option<i64>,
    now: Timestamp,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let copies = &policy.spec.copies;
    let (mut failing, mut pending) = (Vec::new(), Vec::new());
    let mut any = false;
    for a in assets {
        let Some(newest) = &a.last_success else {
            continue;
        };
        any = true;
        for c in copies {
            let at = a.copies.iter().find(|s| s.name == c.name);
            match at {
                Some(CopyStatus {
                    last_error: Some(e),
                    ..
                }) => failing.push(format!("{}: copy {}: {e}", a.name, c.name)),
                Some(s) if s.newest_id.as_deref() == Some(newest.id.as_str()) => {}
                _ => pending.push(format!("{} to {}", a.name, c.name)),
            }
        }
    }
    if copies.is_empty() || !any {
        return None;
    }
    let (status, reason, message) = if !failing.is_empty() {
        (Status::False, "CopyFailing", failing.join("; "))
    } else if !pending.is_empty() {
        let message = format!(
            "not copied yet (the next backup copies it): {}",
            pending.join(", ")
        );
        (Status::False, "CopyPending", message)
    } else {
        let message = "every copy holds each asset's newest good backup".to_owned();
        (Status::True, "CopiesCurrent", message)
    };
    Some(condition(
        types::COPIES_CURRENT,
        status,
        reason,
        message,
        generation,
        now,
    ))
}

fn ready_from_assets(
    assets: &[AssetStatus],
    generation: Option<i64>,
    now: Timestamp,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let failing: Vec<(&str, &BackupFailure)> = assets
        .iter()
        .filter_map(|a| {
            let f = a.last_failure.as_ref()?;
            let failed_last = a
                .last_success
                .as_ref()
                .is_none_or(|s| f.time.0 > s.finished_at.0);
            failed_last.then_some((a.name.as_str(), f))
        })
        .collect();
    if !failing.is_empty() {
        let message = failing
            .iter()
            .map(|(name, f)| format!("{name}: {}: {}", f.reason, f.message))
            .collect::<Vec<_>>()
            .join("; ");
        // A missing Secret is the user's to create: its own reason, as before the operator
        // stopped reading Secrets (the agent reports it from the first run that needs it).
        let secret = ErrorClass::SecretNotFound.reason();
        let reason = if failing.iter().any(|(_, f)| f.reason == secret) {
            secret
        } else {
            "BackupFailing"
        };
        return condition(
            types::READY,
            Status::False,
            reason,
            message,
            generation,
            now,
        );
    }
    if assets.iter().any(|a| a.last_success.is_none()) {
        return condition(
            types::READY,
            Status::True,
            "Scheduled",
            "backups scheduled; waiting for the first of every asset",
            generation,
            now,
        );
    }
    condition(
        types::READY,
        Status::True,
        "BackupsSucceeding",
        "the latest backup of every asset succeeded",
        generation,
        now,
    )
}

/// RetentionApplied: False while the mass-deletion guard refused an asset's last retention pass
/// (its backups stay until someone decides), True once every asset's last pass went through;
/// absent before the first good backup, when no pass has run.
fn retention_applied(
    assets: &[AssetStatus],
    generation: Option<i64>,
    now: Timestamp,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let refused: Vec<String> = assets
        .iter()
        .filter_map(|a| Some(format!("{}: {}", a.name, a.retention_refused.as_ref()?)))
        .collect();
    if !refused.is_empty() {
        return Some(condition(
            types::RETENTION_APPLIED,
            Status::False,
            "MassDeletionRefused",
            refused.join("; "),
            generation,
            now,
        ));
    }
    assets.iter().any(|a| a.last_success.is_some()).then(|| {
        condition(
            types::RETENTION_APPLIED,
            Status::True,
            "RetentionApplied",
            "the last retention pass of every backed-up asset went through",
            generation,
            now,
        )
    })
}

/// The Events the transition from `old` to `new` owes, each with an id of its own: a backup
/// asked for, a new good backup, a new failure, a condition that flipped.
pub fn events(
    old: &BackupPolicyStatus,
    new: &BackupPolicyStatus,
    backup_now: bool,
) -> Vec<PendingEvent> {
    let mut out = Vec::new();
    if backup_now && let Some(token) = &new.last_backup_now_token {
        let short = crate::names::short_hash(token, 4);
        out.push(event(
            format!("BackupRequested/{short}"),
            EventType::Normal,
            "BackupRequested",
            format!("BackupNow/{short}"),
            format!("on-demand backup {token:?} started for every asset"),
        ));
    }
    for asset in &new.assets {
        let before = old.assets.iter().find(|a| a.name == asset.name);
        if let Some(s) = &asset.last_success
            && before
                .and_then(|b| b.last_success.as_ref())
                .is_none_or(|b| b.id != s.id)
        {
            out.push(event(
                format!("BackupSucceeded/{}/{}", asset.name, s.id),
                EventType::Normal,
                "BackupSucceeded",
                format!("Backup/{}", asset.name),
                format!(
                    "asset {}: backup {} ({} bytes, sha256 {})",
                    asset.name, s.id, s.stored_bytes, s.sha256
                ),
            ));
        }
        if let Some(f) = &asset.last_failure
            && before
                .and_then(|b| b.last_failure.as_ref())
                .is_none_or(|b| b.time != f.time)
        {
            out.push(event(
                format!("BackupFailed/{}/{}", asset.name, f.time.0.as_second()),
                EventType::Warning,
                "BackupFailed",
                format!("Backup/{}", asset.name),
                format!("asset {}: {}: {}", asset.name, f.reason, f.message),
            ));
        }
    }
    for type_ in [
        types::READY,
        types::RPO_MET,
        types::RPO_ACHIEVABLE,
        types::RETENTION_APPLIED,
        types::COPIES_CURRENT,
    ] {
        let Some(c) = conditions::find(&new.conditions, type_) else {
            continue;
        };
        let was = conditions::find(&old.conditions, type_);
        // A derived condition that starts out True, or waiting for a first backup (RPOMet,
        // until one objective has passed: then `ObjectiveMissed` is a change and has its Event),
        // says nothing about a new policy the status does not; its Event would be one more per
        // policy (thousands at once, docs/performance.md). Ready's first state, a problem, and
        // every later change still get theirs.
        let quiet_start = was.is_none()
            && type_ != types::READY
            && (Status::of(c) == Status::True
                || matches!(c.reason.as_str(), "NoBackupYet" | "NoVerifiedBackupYet"));
        if !quiet_start && was.is_none_or(|w| w.status != c.status || w.reason != c.reason) {
            let kind = if Status::of(c) == Status::True {
                EventType::Normal
            } else {
                EventType::Warning
            };
            out.push(event(
                format!(
                    "{type_}/{}/{}/{}",
                    c.status,
                    c.reason,
                    c.last_transition_time.0.as_second()
                ),
                kind,
                &c.reason,
                format!("Condition/{type_}"),
                format!("{type_}={}: {}", c.status, c.message),
            ));
        }
    }
    out
}

/// The worst-case RPO the policy's schedule allows (its longest gap between due times from
/// `now` over [`RPO_HORIZON`], plus the longest duration among the assets' newest good backups),
/// and condition `RPOAchievable` comparing it with `objectives.rpo` (none without an objective).
/// The newest good backups stand for "recent" because they are what status keeps; before any
/// backup the gap alone is stated, and the message says so. An unparsable schedule has no worst
/// case (`Ready` reports it).
pub fn rpo_achievable(
    policy: &BackupPolicy,
    assets: &[AssetStatus],
    generation: Option<i64>,
    now: Timestamp,
) -> (
    Option<WorstCaseRpo>,
    Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
) {
    let Ok(schedule) = CronSchedule::parse(&policy.spec.schedule, policy.spec.time_zone.as_deref())
    else {
        return (None, None);
    };
    let gap = schedule
        .longest_gap(now, RPO_HORIZON)
        .map(|g| g.as_secs().max(0));
    // A pointInTime asset's worst case is its archive's lag, not the schedule of its base
    // backups (those only bound how much WAL a restore replays).
    let archived =
        |name: &str| {
            policy.spec.assets.iter().any(|a| {
                a.name == name && a.postgres().is_some_and(|pg| pg.point_in_time.is_some())
            })
        };
    let dumped = policy.spec.assets.iter().any(|a| !archived(&a.name));
    // The dumps' durations; a policy of archived assets only counts its base backups'.
    let backup = assets
        .iter()
        .filter(|a| !dumped || !archived(&a.name))
        .filter_map(|a| a.last_success.as_ref())
        .map(|s| s.duration_seconds.max(0.0).ceil() as i64)
        .max();
    let lag = assets
        .iter()
        .filter(|a| archived(&a.name))
        .filter_map(|a| a.wal_archive_lag_seconds)
        .max();
    let worst = gap.map(|gap| {
        let scheduled = gap.saturating_add(backup.unwrap_or(0));
        // Without a lag seen yet, an archived-only policy falls back on its base backups.
        let seconds = match (dumped, lag) {
            (true, l) => scheduled.max(l.unwrap_or(0)),
            (false, Some(l)) => l,
            (false, None) => scheduled,
        };
        WorstCaseRpo {
            seconds,
            rpo: human(u64::try_from(seconds).unwrap_or(0)),
            schedule_gap_seconds: gap,
            backup_seconds: backup,
            wal_archive_lag_seconds: lag,
        }
    });
    let Some(objective) = policy.spec.objectives.as_ref().map(|o| o.rpo.as_secs()) else {
        return (worst, None);
    };
    let objective = i64::try_from(objective).unwrap_or(i64::MAX);
    let Some(w) = &worst else {
        let c = condition(
            types::RPO_ACHIEVABLE,
            Status::False,
            "ScheduleTooSparse",
            format!(
                "the schedule {:?} has no due time after now; objective {}",
                policy.spec.schedule,
                human(u64::try_from(objective).unwrap_or(0))
            ),
            generation,
            now,
        );
        return (worst, Some(c));
    };
    let secs = |s: i64| human(u64::try_from(s).unwrap_or(0));
    let archive = w
        .wal_archive_lag_seconds
        .map(|l| format!("; WAL archive lag at most {}", secs(l)))
        .unwrap_or_default();
    let basis = match w.backup_seconds {
        _ if !dumped && w.wal_archive_lag_seconds.is_some() => "pointInTime assets only".to_owned(),
        Some(b) => format!(
            "longest gap between scheduled backups {} + longest backup {}",
            secs(w.schedule_gap_seconds),
            secs(b)
        ),
        None => format!(
            "longest gap between scheduled backups {}; no backup measured yet, so its duration is not counted",
            secs(w.schedule_gap_seconds)
        ),
    };
    let (met, reason) = if w.seconds <= objective {
        (true, "WithinObjective")
    } else if w.wal_archive_lag_seconds.is_some_and(|l| l > objective) {
        (false, "ArchiveLagging")
    } else if w.schedule_gap_seconds > objective {
        (false, "ScheduleTooSparse")
    } else {
        (false, "BackupTooSlow")
    };
    let c = condition(
        types::RPO_ACHIEVABLE,
        Status::from(met),
        reason,
        format!(
            "worst case {} ({basis}{archive}); objective {}",
            w.rpo,
            secs(objective)
        ),
        generation,
        now,
    );
    (worst, Some(c))
}

fn seconds_between(earlier: Timestamp, later: Timestamp) -> u64 {
    u64::try_from(later.as_second() - earlier.as_second()).unwrap_or(0)
}

/// `754` → `12m34s`.
pub fn human(seconds: u64) -> String {
    lifeboat_api::Duration::from_secs(seconds).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobFailure;
    use lifeboat_api::agent_result::{AgentSummary, SUMMARY_VERSION, Verb};
    use lifeboat_api::conditions::find;
    use serde_json::json;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    pub(super) fn policy(rpo: Option<&str>) -> BackupPolicy {
        let mut spec = json!({
            "schedule": "0 * * * *",
            "assets": [
                {"name": "db", "postgres": {"host": "db", "user": "u", "databases": ["app"]}},
                {"name": "cache", "redis": {"host": "cache"}}
            ],
            "retention": {"maxAge": "7d"},
            "destination": {"volume": {"claimName": "b"}}
        });
        if let Some(rpo) = rpo {
            spec["objectives"] = json!({"rpo": rpo});
        }
        serde_json::from_value(json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "p", "namespace": "n", "generation": 3}, "spec": spec
        }))
        .unwrap()
    }

    pub(super) fn ok(asset: &str, snapshot: &str, finished: &str) -> JobOutcome {
        JobOutcome {
            job: format!("{asset}-{finished}"),
            asset: asset.into(),
            finished_at: at(finished),
            result: Ok(AgentSummary {
                version: SUMMARY_VERSION,
                verb: Verb::Backup,
                ok: true,
                asset: Some(asset.into()),
                backup_id: Some(format!("id-{snapshot}")),
                started_at: at(snapshot),
                finished_at: at(finished),
                snapshot_time: Some(at(snapshot)),
                stored_bytes: Some(1000),
                sha256: Some("abc".into()),
                error_class: None,
                message: None,
                checks: Vec::new(),
                retention_refused: None,
                copies: Vec::new(),
            }),
            checks_report: None,
        }
    }

    /// A good backup whose retention pass the mass-deletion guard refused.
    fn ok_refused(asset: &str, snapshot: &str, finished: &str) -> JobOutcome {
        let mut o = ok(asset, snapshot, finished);
        if let Ok(s) = &mut o.result {
            s.retention_refused = Some("refusing to delete 23 of 30 backups".into());
        }
        o
    }

    pub(super) fn failed(asset: &str, finished: &str) -> JobOutcome {
        JobOutcome {
            job: format!("{asset}-{finished}"),
            asset: asset.into(),
            finished_at: at(finished),
            result: Err(JobFailure {
                reason: "StorageFailed".into(),
                message: "no space left on device".into(),
                checks: Vec::new(),
            }),
            checks_report: None,
        }
    }

    fn with_status(mut p: BackupPolicy, d: &Decision) -> BackupPolicy {
        p.status = Some(d.status.clone());
        p
    }

    /// `decide` with no problem, token, verification or archive.
    fn decide_at(p: &BackupPolicy, now: Timestamp) -> Decision {
        decide(
            p,
            &[],
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            now,
        )
    }

    /// `p` as stored once `d` is written and its Events published.
    fn written(p: &BackupPolicy, d: &Decision) -> BackupPolicy {
        let mut q = p.clone();
        let mut status = d.status.clone();
        status.pending_events.clear();
        q.status = Some(status);
        q
    }

    /// The `type/status/reason` of each Event `d` owes.
    fn owed(d: &Decision) -> Vec<String> {
        d.status
            .pending_events
            .iter()
            .map(|e| e.id.split('/').take(3).collect::<Vec<_>>().join("/"))
            .collect()
    }

    #[test]
    fn an_asset_without_a_backup_waits_one_objective_then_the_objective_is_missed() {
        let p = policy(Some("1h"));
        let created = at("2026-11-24T10:00:00Z");
        let rpo = |d: &Decision| {
            let c = find(&d.status.conditions, types::RPO_MET).unwrap();
            (c.status.clone(), c.reason.clone(), c.message.clone())
        };
        let first = decide_at(&p, created);
        let (_, reason, message) = rpo(&first);
        assert_eq!(reason, "NoBackupYet");
        assert!(
            message.contains("asset db has no good backup yet"),
            "{message}"
        );
        // Within the hour: still waiting, no write, looked at again when the hour is up.
        let still = decide_at(
            &written(&p, &first),
            created + jiff::SignedDuration::from_secs(3500),
        );
        assert!(!still.changed, "{:?}", still.status);
        assert_eq!(still.requeue_after, Duration::from_secs(101));
        // Past it: missed, with a Warning, and missed it stays.
        let past = created + jiff::SignedDuration::from_secs(3601);
        let missed = decide_at(&written(&p, &first), past);
        let (status, reason, _) = rpo(&missed);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "ObjectiveMissed")
        );
        assert!(owed(&missed).contains(&"RPOMet/False/ObjectiveMissed".to_owned()));
        let again = decide_at(
            &written(&p, &missed),
            past + jiff::SignedDuration::from_secs(60),
        );
        assert!(!again.changed, "{:?}", again.status);
    }

    #[test]
    fn a_derived_condition_that_starts_true_or_waiting_owes_no_event_but_its_changes_do() {
        let now = at("2026-11-24T10:00:00Z");
        let p = policy(Some("1h"));
        let first = decide_at(&p, now);
        let achievable = find(&first.status.conditions, types::RPO_ACHIEVABLE).unwrap();
        assert_eq!(achievable.status, "True", "an hourly schedule can meet 1h");
        assert_eq!(
            owed(&first),
            ["Ready/True/Scheduled"],
            "waiting for a first backup, or achievable from the start, is not news"
        );
        // The objective tightened below what the schedule allows: a Warning; and back: news too.
        let mut stored = written(&p, &first);
        stored.spec.objectives = policy(Some("15m")).spec.objectives;
        let tighter = decide_at(&stored, now);
        assert!(owed(&tighter).contains(&"RPOAchievable/False/ScheduleTooSparse".to_owned()));
        let mut stored = written(&stored, &tighter);
        stored.spec.objectives = p.spec.objectives.clone();
        let back = decide_at(&stored, now);
        assert!(owed(&back).contains(&"RPOAchievable/True/WithinObjective".to_owned()));
    }

    /// A good backup of `asset` whose copy `dr` holds `newest` (snapshotted at `held_at`), or
    /// failed with `error`.
    fn ok_copied(
        asset: &str,
        snapshot: &str,
        finished: &str,
        held: Option<(&str, &str)>,
        error: Option<&str>,
    ) -> JobOutcome {
        let mut o = ok(asset, snapshot, finished);
        if let Ok(s) = &mut o.result {
            s.copies = vec![CopyOutcome {
                name: "dr".into(),
                newest_id: held.map(|(id, _)| id.to_owned()),
                newest_snapshot_time: held.map(|(_, t)| at(t)),
                copied: u32::from(error.is_none()),
                error: error.map(str::to_owned),
                error_class: error.map(|_| ErrorClass::Auth),
                retention_refused: None,
            }];
        }
        o
    }

    #[test]
    fn off_site_copies_are_reported_per_asset_with_how_far_behind_and_a_condition() {
        let mut p = policy(None);
        p.spec.copies = serde_json::from_value(json!([{"name": "dr", "s3": {
            "endpoint": "https://s3.other.example", "bucket": "dr"}}]))
        .unwrap();
        let decide_with = |p: &BackupPolicy, outcomes: &[JobOutcome], now: &str| {
            decide(
                p,
                outcomes,
                None,
                None,
                &Verification::default(),
                &ArchiveLags::new(),
                at(now),
            )
        };
        let copies = |d: &Decision| {
            let c = find(&d.status.conditions, types::COPIES_CURRENT).unwrap();
            (c.status.clone(), c.reason.clone(), c.message.clone())
        };
        assert!(
            find(
                &decide_at(&p, at("2026-11-24T10:00:00Z")).status.conditions,
                types::COPIES_CURRENT
            )
            .is_none(),
            "no backup, nothing to copy yet"
        );
        // Both assets copied: current, and no Event for a condition that starts True.
        let t0 = "2026-11-24T10:00:00Z";
        let outcomes = [
            ok_copied(
                "db",
                t0,
                "2026-11-24T10:01:00Z",
                Some(("id-2026-11-24T10:00:00Z", t0)),
                None,
            ),
            ok_copied(
                "cache",
                t0,
                "2026-11-24T10:01:00Z",
                Some(("id-2026-11-24T10:00:00Z", t0)),
                None,
            ),
        ];
        let d = decide_with(&p, &outcomes, "2026-11-24T10:02:00Z");
        assert_eq!(copies(&d).0, "True");
        assert!(!owed(&d).iter().any(|e| e.starts_with("CopiesCurrent")));
        assert_eq!(d.status.assets[0].copies[0].behind_seconds, Some(0));
        // The next run cannot write db's copy: the backup counts (Ready stays True), the copy
        // is an hour behind, CopyFailing says why, with a Warning.
        let p = written(&p, &d);
        let t1 = "2026-11-24T11:00:00Z";
        let outcomes = [ok_copied(
            "db",
            t1,
            "2026-11-24T11:01:00Z",
            Some(("id-2026-11-24T10:00:00Z", t0)),
            Some("403 Forbidden"),
        )];
        let d = decide_with(&p, &outcomes, "2026-11-24T11:02:00Z");
        let (status, reason, message) = copies(&d);
        assert_eq!((status.as_str(), reason.as_str()), ("False", "CopyFailing"));
        assert_eq!(message, "db: copy dr: AuthFailed: 403 Forbidden");
        assert!(owed(&d).contains(&"CopiesCurrent/False/CopyFailing".to_owned()));
        let db = &d.status.assets[0].copies[0];
        assert_eq!(db.behind_seconds, Some(3600));
        assert_eq!(db.newest_id.as_deref(), Some("id-2026-11-24T10:00:00Z"));
        assert_eq!(
            find(&d.status.conditions, types::READY).unwrap().status,
            "True"
        );
        // Caught up by the run after: True again, with its Event.
        let p = written(&p, &d);
        let t2 = "2026-11-24T12:00:00Z";
        let outcomes = [ok_copied(
            "db",
            t2,
            "2026-11-24T12:01:00Z",
            Some(("id-2026-11-24T12:00:00Z", t2)),
            None,
        )];
        let d = decide_with(&p, &outcomes, "2026-11-24T12:02:00Z");
        assert_eq!(copies(&d).1, "CopiesCurrent");
        assert!(owed(&d).contains(&"CopiesCurrent/True/CopiesCurrent".to_owned()));
        // While the spec keeps the copy, no series is named for removal.
        let mut p = written(&p, &d);
        let kept = decide_at(&p, at("2026-11-24T12:02:30Z"));
        assert!(kept.status.assets.iter().all(|a| a.copies.len() == 1));
        assert!(
            kept.status
                .assets
                .iter()
                .all(|a| copies_gone(p.status.as_ref(), a).next().is_none())
        );
        // A second copy added since: pending until a run copies to it; a copy taken out of the
        // spec is no longer reported.
        p.spec.copies[0].name = "vault".into();
        let d = decide_at(&p, at("2026-11-24T12:03:00Z"));
        let (status, reason, message) = copies(&d);
        assert_eq!((status.as_str(), reason.as_str()), ("False", "CopyPending"));
        assert!(
            message.contains("db to vault") && message.contains("cache to vault"),
            "{message}"
        );
        assert!(d.status.assets.iter().all(|a| a.copies.is_empty()));
        // ...and its metric series is named for removal, once per asset that listed it.
        let gone: Vec<_> = d
            .status
            .assets
            .iter()
            .flat_map(|a| copies_gone(p.status.as_ref(), a).map(|c| (a.name.clone(), c)))
            .collect();
        assert_eq!(gone, [("db".into(), "dr"), ("cache".into(), "dr")]);
    }

    #[test]
    fn a_refused_retention_pass_is_a_condition_until_a_later_pass_goes_through() {
        let p = policy(None);
        let d = decide(
            &p,
            &[],
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            at("2026-11-24T10:00:00Z"),
        );
        assert!(
            find(&d.status.conditions, types::RETENTION_APPLIED).is_none(),
            "no backup, no pass yet"
        );

        let outcomes = [
            ok("db", "2026-11-24T10:00:00Z", "2026-11-24T10:01:00Z"),
            ok_refused("cache", "2026-11-24T10:00:00Z", "2026-11-24T10:00:10Z"),
        ];
        let d = decide(
            &p,
            &outcomes,
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            at("2026-11-24T10:02:00Z"),
        );
        let c = find(&d.status.conditions, types::RETENTION_APPLIED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "MassDeletionRefused")
        );
        assert_eq!(c.message, "cache: refusing to delete 23 of 30 backups");
        assert!(d.status.assets[1].retention_refused.is_some());
        // The backup itself counts: Ready stays True.
        let ready = find(&d.status.conditions, types::READY).unwrap();
        assert_eq!(ready.status, "True");

        // The refusal outlives its Job (garbage-collected) ...
        let p = with_status(p, &d);
        let d = decide(
            &p,
            &[],
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            at("2026-11-24T10:30:00Z"),
        );
        let c = find(&d.status.conditions, types::RETENTION_APPLIED).unwrap();
        assert_eq!(c.reason, "MassDeletionRefused");
        // ... until the next backup's pass goes through.
        let p = with_status(p, &d);
        let outcomes = [ok("cache", "2026-11-24T11:00:00Z", "2026-11-24T11:00:10Z")];
        let d = decide(
            &p,
            &outcomes,
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            at("2026-11-24T11:01:00Z"),
        );
        let c = find(&d.status.conditions, types::RETENTION_APPLIED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "RetentionApplied")
        );
        assert!(
            d.status
                .assets
                .iter()
                .all(|a| a.retention_refused.is_none())
        );
    }

    fn drilled(assets: &[&str]) -> std::collections::BTreeSet<String> {
        assets.iter().map(|a| (*a).to_owned()).collect()
    }

    fn verified(assets: &[(&str, &str)]) -> Verification {
        Verification {
            drilled: drilled(&["db", "cache"]),
            backups: assets
                .iter()
                .map(|(asset, snapshot)| {
                    (
                        (*asset).to_owned(),
                        lifeboat_api::backup_policy::VerifiedBackup {
                            id: format!("{asset}-v"),
                            time: Time(at("2026-11-24T09:00:00Z")),
                            snapshot_time: Some(Time(at(snapshot))),
                            drill: "q/d1".into(),
                        },
                    )
                })
                .collect(),
        }
    }

    fn rpo_met(d: &Decision) -> (String, String, String) {
        let c = find(&d.status.conditions, types::RPO_MET).unwrap();
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    #[test]
    fn a_drilled_policy_measures_rpo_from_its_verified_backups_unless_it_says_otherwise() {
        let p = policy(Some("1h"));
        let fresh = [
            ok("db", "2026-11-24T10:00:00Z", "2026-11-24T10:01:00Z"),
            ok("cache", "2026-11-24T10:00:00Z", "2026-11-24T10:00:30Z"),
        ];
        let now = at("2026-11-24T10:10:00Z");
        // Not drilled: the newest good backups count.
        let d = decide(
            &p,
            &fresh,
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            now,
        );
        assert_eq!(rpo_met(&d).0, "True");

        // Drilled, but nothing restored yet: fresh backups prove nothing.
        let none = Verification {
            drilled: drilled(&["db", "cache"]),
            ..Default::default()
        };
        let d = decide(&p, &fresh, None, None, &none, &ArchiveLags::new(), now);
        assert_eq!(
            rpo_met(&d),
            (
                "False".into(),
                "NoVerifiedBackupYet".into(),
                "asset db has no backup a drill restored and validated yet".into()
            )
        );
        // Only one asset verified: still none for the policy.
        let d = decide(
            &p,
            &fresh,
            None,
            None,
            &verified(&[("db", "2026-11-24T09:30:00Z")]),
            &ArchiveLags::new(),
            now,
        );
        assert_eq!(rpo_met(&d).1, "NoVerifiedBackupYet");

        // Both verified; the worst-off asset's verified snapshot (09:20) is 50m old.
        let v = verified(&[
            ("db", "2026-11-24T09:30:00Z"),
            ("cache", "2026-11-24T09:20:00Z"),
        ]);
        let d = decide(&p, &fresh, None, None, &v, &ArchiveLags::new(), now);
        assert_eq!(
            rpo_met(&d),
            (
                "True".into(),
                "WithinObjective".into(),
                "newest verified backup is 50m old; objective 1h".into()
            )
        );
        assert_eq!(
            d.status.rpo_seconds,
            Some(10 * 60),
            "rpo stays the newest backup's age"
        );
        assert_eq!(
            d.status.last_verified_time,
            Some(Time(at("2026-11-24T09:00:00Z")))
        );
        // Requeued as the verified snapshot crosses the objective (09:20 + 1h = 10:20).
        let soon = decide(
            &p,
            &fresh,
            None,
            None,
            &v,
            &ArchiveLags::new(),
            at("2026-11-24T10:17:00Z"),
        );
        assert_eq!(soon.requeue_after, Duration::from_secs(3 * 60 + 1));
        let d = decide(
            &with_status(p.clone(), &d),
            &fresh,
            None,
            None,
            &v,
            &ArchiveLags::new(),
            at("2026-11-24T10:21:00Z"),
        );
        assert_eq!(
            rpo_met(&d).1,
            "ObjectiveMissed",
            "backups are fresh, the proof is old"
        );

        // A drill that covers only db: cache (fresh) is measured from its newest backup, db from
        // its verified one (09:30, 40m old).
        let only_db = Verification {
            drilled: drilled(&["db"]),
            ..verified(&[("db", "2026-11-24T09:30:00Z")])
        };
        let d = decide(&p, &fresh, None, None, &only_db, &ArchiveLags::new(), now);
        assert_eq!(
            rpo_met(&d).2,
            "newest verified backup is 40m old; objective 1h"
        );

        // The policy chooses the newest backup explicitly.
        let mut newest = policy(Some("1h"));
        newest.spec.objectives.as_mut().unwrap().rpo_basis =
            Some(lifeboat_api::backup_policy::RpoBasis::Newest);
        let d = decide(&newest, &fresh, None, None, &none, &ArchiveLags::new(), now);
        assert_eq!(rpo_met(&d).1, "WithinObjective");
        assert!(rpo_met(&d).2.starts_with("newest good backup"));
    }

    #[test]
    fn rpo_is_the_age_of_the_worst_assets_newest_good_backup() {
        let p = policy(Some("15m"));
        let outcomes = [
            ok("db", "2026-11-24T10:00:00Z", "2026-11-24T10:01:00Z"),
            ok("db", "2026-11-24T10:10:00Z", "2026-11-24T10:11:00Z"),
            ok("cache", "2026-11-24T10:05:00Z", "2026-11-24T10:05:10Z"),
        ];
        let d = decide(
            &p,
            &outcomes,
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            at("2026-11-24T10:17:00Z"),
        );
        assert!(d.changed);
        assert_eq!(
            d.status.rpo_seconds,
            Some(12 * 60),
            "cache's 10:05 snapshot is the worst"
        );
        assert_eq!(d.status.rpo.as_deref(), Some("12m"));
        assert_eq!(
            d.status.last_backup_time,
            Some(Time(at("2026-11-24T10:05:00Z")))
        );
        assert_eq!(d.status.observed_generation, Some(3));
        assert_eq!(
            d.status.assets[0].last_success.as_ref().unwrap().id,
            "id-2026-11-24T10:10:00Z"
        );
        let rpo = find(&d.status.conditions, types::RPO_MET).unwrap();
        assert_eq!(
            (rpo.status.as_str(), rpo.reason.as_str()),
            ("True", "WithinObjective")
        );
        // Requeued just after the objective would be crossed (10:05 + 15m = 10:20).
        assert_eq!(d.requeue_after, Duration::from_secs(3 * 60 + 1));
    }

    #[test]
    fn rpo_met_turns_false_when_time_passes_without_a_backup() {
        let p = policy(Some("15m"));
        let outcomes = [
            ok("db", "2026-11-24T10:00:00Z", "2026-11-24T10:01:00Z"),
            ok("cache", "2026-11-24T10:00:00Z", "2026-11-24T10:00:30Z"),
        ];
        let first = decide(
            &p,
            &outcomes,
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            at("2026-11-24T10:02:00Z"),
        );
        let p = with_status(p, &first);
        // Nothing new, still within the objective: no status write.
        let again = decide(
            &p,
            &outcomes,
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            at("2026-11-24T10:10:00Z"),
        );
        assert!(
            !again.changed,
            "re-asserting the same state is not a change"
        );
        // Past the objective: RPOMet flips, and that is a change.
        let late = decide(
            &p,
            &outcomes,
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            at("2026-11-24T10:16:00Z"),
        );
        assert!(late.changed);
        let c = find(&late.status.conditions, types::RPO_MET).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "ObjectiveMissed")
        );
        assert_eq!(late.status.rpo_seconds, Some(16 * 60));
    }

    #[test]
    fn a_point_in_time_asset_is_held_to_its_archive_lag_not_its_base_backups() {
        let now = at("2026-11-24T10:02:00Z");
        let mut p = policy(Some("1m"));
        p.spec.assets.pop();
        let mut spec = serde_json::to_value(&p.spec).unwrap();
        spec["assets"][0]["postgres"]["pointInTime"] = json!({"user": "wal"});
        p.spec = serde_json::from_value(spec).unwrap();
        // Its newest base backup is a day old; its archive is at most 40 s behind.
        let outcomes = [ok("db", "2026-11-23T10:00:00Z", "2026-11-23T10:05:00Z")];
        let lags = ArchiveLags::from([("db".to_owned(), 40)]);
        let d = decide(
            &p,
            &outcomes,
            None,
            None,
            &Verification::default(),
            &lags,
            now,
        );
        assert_eq!(d.status.assets[0].wal_archive_lag_seconds, Some(40));
        let w = d.status.worst_case_rpo.clone().unwrap();
        assert_eq!((w.seconds, w.wal_archive_lag_seconds), (40, Some(40)));
        let achievable = find(&d.status.conditions, types::RPO_ACHIEVABLE).unwrap();
        assert_eq!(
            (achievable.status.as_str(), achievable.reason.as_str()),
            ("True", "WithinObjective"),
            "{}",
            achievable.message
        );
        assert_eq!(rpo_met(&d).0, "True");

        // Its archiver down for ten minutes: both conditions say so.
        let lags = ArchiveLags::from([("db".to_owned(), 640)]);
        let d = decide(
            &p,
            &outcomes,
            None,
            None,
            &Verification::default(),
            &lags,
            now,
        );
        let achievable = find(&d.status.conditions, types::RPO_ACHIEVABLE).unwrap();
        assert_eq!(
            achievable.reason, "ArchiveLagging",
            "{}",
            achievable.message
        );
        assert_eq!(rpo_met(&d).1, "ObjectiveMissed");

        // No lag seen yet: measured from the base backup, as any backup.
        let d = decide(
            &p,
            &outcomes,
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            now,
        );
        assert_eq!(rpo_met(&d).1, "ObjectiveMissed");
        assert_eq!(d.status.worst_case_rpo.unwrap().seconds, 3600 + 300);
    }

    #[test]
    fn an_hourly_schedule_cannot_meet_a_15_minute_objective() {
        let now = "2026-11-24T10:02:00Z";
        let achievable = |d: &Decision| {
            let c = find(&d.status.conditions, types::RPO_ACHIEVABLE).unwrap();
            (c.status.clone(), c.reason.clone(), c.message.clone())
        };
        // Before any backup: the gap alone, and the message says so.
        let d = decide(
            &policy(Some("15m")),
            &[],
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            at(now),
        );
        let w = d.status.worst_case_rpo.clone().unwrap();
        assert_eq!(
            (w.seconds, w.schedule_gap_seconds, w.backup_seconds),
            (3600, 3600, None)
        );
        let (status, reason, message) = achievable(&d);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "ScheduleTooSparse")
        );
        assert!(message.contains("no backup measured yet"), "{message}");
        assert!(message.contains("objective 15m"), "{message}");

        // Within a 2h objective; the longest backup (db 90s, cache 30s) is added.
        let outcomes = [
            ok("db", "2026-11-24T10:00:00Z", "2026-11-24T10:01:30Z"),
            ok("cache", "2026-11-24T10:00:00Z", "2026-11-24T10:00:30Z"),
        ];
        let d = decide(
            &policy(Some("2h")),
            &outcomes,
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            at(now),
        );
        let w = d.status.worst_case_rpo.clone().unwrap();
        assert_eq!(
            (w.seconds, w.schedule_gap_seconds, w.backup_seconds),
            (3690, 3600, Some(90))
        );
        assert_eq!(w.rpo, "1h1m30s");
        let (status, reason, _) = achievable(&d);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "WithinObjective")
        );

        // The gap fits an objective of exactly one hour; the backup's own time does not.
        let d = decide(
            &policy(Some("1h")),
            &outcomes,
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            at(now),
        );
        let (status, reason, _) = achievable(&d);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "BackupTooSlow")
        );

        // Without an objective the worst case is stated and no condition is written.
        let d = decide(
            &policy(None),
            &outcomes,
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            at(now),
        );
        assert_eq!(d.status.worst_case_rpo.unwrap().seconds, 3690);
        assert!(find(&d.status.conditions, types::RPO_ACHIEVABLE).is_none());
    }

    #[test]
    fn no_backup_yet_is_not_within_the_objective() {
        let d = decide(
            &policy(Some("1h")),
            &[ok("db", "2026-11-24T10:00:00Z", "2026-11-24T10:01:00Z")],
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            at("2026-11-24T10:02:00Z"),
        );
        let c = find(&d.status.conditions, types::RPO_MET).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "NoBackupYet")
        );
        assert_eq!(d.status.rpo_seconds, None);
        let ready = find(&d.status.conditions, types::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Scheduled")
        );
        // Without an objective there is no RPOMet condition at all.
        let d = decide(
            &policy(None),
            &[],
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            at("2026-11-24T10:02:00Z"),
        );
        assert!(find(&d.status.conditions, types::RPO_MET).is_none());
    }

    #[test]
    fn a_failure_after_the_last_success_makes_the_policy_not_ready() {
        let outcomes = [
            ok("db", "2026-11-24T10:00:00Z", "2026-11-24T10:01:00Z"),
            ok("cache", "2026-11-24T10:00:00Z", "2026-11-24T10:00:30Z"),
            failed("db", "2026-11-24T11:01:00Z"),
            failed("db", "2026-11-24T12:01:00Z"),
        ];
        let d = decide(
            &policy(None),
            &outcomes,
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            at("2026-11-24T12:02:00Z"),
        );
        let db = &d.status.assets[0];
        assert_eq!(db.consecutive_failures, 2);
        assert_eq!(db.last_failure.as_ref().unwrap().reason, "StorageFailed");
        let ready = find(&d.status.conditions, types::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "BackupFailing")
        );
        assert!(
            ready
                .message
                .contains("db: StorageFailed: no space left on device"),
            "{}",
            ready.message
        );
        // The failed Jobs are garbage-collected: the count does not go down without a success.
        let p = with_status(policy(None), &d);
        let d = decide(
            &p,
            &outcomes[..2],
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            at("2026-11-24T12:03:00Z"),
        );
        assert_eq!(d.status.assets[0].consecutive_failures, 2);
        // A later success resets it and makes the policy ready again.
        let mut later = outcomes[..2].to_vec();
        later.push(ok("db", "2026-11-24T13:00:00Z", "2026-11-24T13:01:00Z"));
        let d = decide(
            &with_status(policy(None), &d),
            &later,
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            at("2026-11-24T13:02:00Z"),
        );
        assert_eq!(d.status.assets[0].consecutive_failures, 0);
        assert_eq!(
            find(&d.status.conditions, types::READY).unwrap().status,
            "True"
        );
    }

    #[test]
    fn a_problem_is_reported_without_losing_what_is_known() {
        let p = policy(Some("1h"));
        let outcomes = [
            ok("db", "2026-11-24T10:00:00Z", "2026-11-24T10:01:00Z"),
            ok("cache", "2026-11-24T10:00:00Z", "2026-11-24T10:00:30Z"),
        ];
        let d = decide(
            &p,
            &outcomes,
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            at("2026-11-24T10:02:00Z"),
        );
        let problem = Problem::InvalidSchedule("the schedule names no minute".into());
        let d = decide(
            &with_status(p, &d),
            &[],
            Some(&problem),
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            at("2026-11-24T10:03:00Z"),
        );
        let ready = find(&d.status.conditions, types::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidSpec")
        );
        assert!(
            d.status.assets[0].last_success.is_some(),
            "known backups stay in status"
        );
    }

    #[test]
    fn a_secret_the_agent_did_not_find_is_the_ready_reason() {
        let p = policy(None);
        let mut missing = failed("db", "2026-11-24T10:01:00Z");
        if let Err(f) = &mut missing.result {
            f.reason = "SecretNotFound".into();
            f.message =
                "Secret \"db-creds\" with key \"password\" not found in the namespace".into();
        }
        let outcomes = [failed("cache", "2026-11-24T10:00:30Z"), missing];
        let d = decide(
            &p,
            &outcomes,
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            at("2026-11-24T10:02:00Z"),
        );
        let ready = find(&d.status.conditions, types::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "SecretNotFound")
        );
        assert!(
            ready
                .message
                .contains("db: SecretNotFound: Secret \"db-creds\"")
                && ready.message.contains("cache: StorageFailed"),
            "{}",
            ready.message
        );
        // Without it, a failure is a failure.
        let d = decide(
            &p,
            &outcomes[..1],
            None,
            None,
            &Verification::default(),
            &ArchiveLags::new(),
            at("2026-11-24T10:02:00Z"),
        );
        assert_eq!(
            find(&d.status.conditions, types::READY).unwrap().reason,
            "BackupFailing"
        );
    }
}

/// Per asset of `policy`, the newest backup a drill of it restored and validated (a record whose
/// verdict is not `Failed`), from the DrillSchedules of its namespace.
pub fn verified_backups<'a>(
    policy: &str,
    drills: impl IntoIterator<Item = &'a lifeboat_api::DrillSchedule>,
) -> std::collections::BTreeMap<String, lifeboat_api::backup_policy::VerifiedBackup> {
    use kube::ResourceExt;
    use lifeboat_api::drill_schedule::DrillVerdict;
    let mut out = std::collections::BTreeMap::new();
    for drill in drills.into_iter().filter(|d| d.spec.policy == policy) {
        let Some(status) = &drill.status else {
            continue;
        };
        for record in status.history.iter().chain(status.last_run.iter()) {
            if record.verdict == DrillVerdict::Failed {
                continue;
            }
            for restored in &record.backups {
                let (asset, id) = (&restored.asset, &restored.id);
                let newer =
                    out.get(asset)
                        .is_none_or(|v: &lifeboat_api::backup_policy::VerifiedBackup| {
                            record.finished_at.0 > v.time.0
                        });
                if newer {
                    // The backup's own snapshot time; in records written before it was kept,
                    // drill start minus the drill's RPO (the oldest restored snapshot:
                    // conservative for every asset it restored).
                    let snapshot_time = restored.snapshot_time.clone().or_else(|| {
                        record
                            .rpo_seconds
                            .and_then(|r| jiff::SignedDuration::try_from_secs_f64(r).ok())
                            .and_then(|r| record.started_at.0.checked_sub(r).ok())
                            .map(Time)
                    });
                    out.insert(
                        asset.clone(),
                        lifeboat_api::backup_policy::VerifiedBackup {
                            id: id.clone(),
                            time: record.finished_at.clone(),
                            snapshot_time,
                            drill: format!("{}/{}", drill.name_any(), record.id),
                        },
                    );
                }
            }
        }
    }
    out
}

/// Puts `verified` into `status` (each asset's newest verified backup, and the worst-off asset's
/// verification time); returns whether anything changed.
pub fn set_verified(
    status: &mut BackupPolicyStatus,
    verified: &std::collections::BTreeMap<String, lifeboat_api::backup_policy::VerifiedBackup>,
) -> bool {
    let before = status.clone();
    for a in &mut status.assets {
        a.last_verified = verified.get(&a.name).cloned();
    }
    let times: Vec<Option<Timestamp>> = status
        .assets
        .iter()
        .map(|a| a.last_verified.as_ref().map(|v| v.time.0))
        .collect();
    status.last_verified_time = if times.is_empty() || times.iter().any(Option::is_none) {
        None
    } else {
        times.iter().flatten().min().copied().map(Time)
    };
    *status != before
}

#[cfg(test)]
mod verified_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn drill(policy: &str, records: serde_json::Value) -> lifeboat_api::DrillSchedule {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DrillSchedule",
            "metadata": {"name": "q", "namespace": "shop"},
            "spec": {"schedule": "0 6 1 * *", "policy": policy, "assets": ["db"],
                     "staging": {"targets": [{"asset": "db", "postgres": {"host": "s", "user": "u", "database": "d"}}]},
                     "objectives": {"rto": "30m", "rpo": "15m"}},
            "status": {"history": records}
        }))
        .unwrap()
    }

    fn rec(id: &str, at: &str, verdict: &str, backups: &[&str]) -> serde_json::Value {
        serde_json::json!({"id": id, "startedAt": at, "finishedAt": at, "verdict": verdict,
                           "rtoMet": true, "rpoMet": true, "backups": backups, "rpoSeconds": 90.5})
    }

    #[test]
    fn the_newest_restored_and_validated_backup_of_each_asset_counts() {
        let drills = [
            drill(
                "shop",
                serde_json::json!([
                    rec(
                        "d3",
                        "2026-11-03T06:00:00Z",
                        "Failed",
                        &["db=b3", "cache=c3"]
                    ),
                    rec("d2", "2026-11-02T06:00:00Z", "ObjectivesMissed", &["db=b2"]),
                    rec(
                        "d1",
                        "2026-11-01T06:00:00Z",
                        "Passed",
                        &["db=b1", "cache=c1"]
                    ),
                ]),
            ),
            drill(
                "other",
                serde_json::json!([rec("x", "2026-11-05T06:00:00Z", "Passed", &["db=z"])]),
            ),
        ];
        let v = verified_backups("shop", &drills);
        assert_eq!(
            v["db"].id, "b2",
            "a missed objective still restored and validated"
        );
        assert_eq!(v["cache"].id, "c1", "a failed drill verifies nothing");
        assert_eq!(v["db"].drill, "q/d2");
        assert_eq!(
            v["db"].snapshot_time.clone().unwrap().0,
            "2026-11-02T05:58:29.5Z".parse::<Timestamp>().unwrap(),
            "drill start minus its achieved RPO"
        );

        let mut status = BackupPolicyStatus {
            assets: vec![
                AssetStatus {
                    name: "db".into(),
                    ..Default::default()
                },
                AssetStatus {
                    name: "cache".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert!(set_verified(&mut status, &v));
        assert_eq!(
            status.last_verified_time.clone().unwrap().0,
            "2026-11-01T06:00:00Z".parse::<Timestamp>().unwrap(),
            "the worst-off asset's"
        );
        assert!(!set_verified(&mut status, &v), "no change, no write");
        // An asset never verified: no policy-wide time.
        let only_db: std::collections::BTreeMap<_, _> =
            v.into_iter().filter(|(k, _)| k == "db").collect();
        assert!(set_verified(&mut status, &only_db));
        assert!(status.last_verified_time.is_none());
    }

    /// The status decided from any sequence of Job outcomes (any asset, good or failed, in any
    /// order, finishing at any time) and at any later time: never a panic, and deciding again
    /// from the status just written, with nothing new, changes nothing and owes no Event (each
    /// transition's Event is decided once).
    mod hostile {
        use proptest::prelude::*;

        use super::super::*;
        use crate::backup_policy::status::tests::{failed, ok, policy};

        fn stamp(offset: i64) -> String {
            Timestamp::from_second(1_795_000_000 + offset)
                .unwrap_or(Timestamp::UNIX_EPOCH)
                .to_string()
        }

        /// The policy as it is stored after the status is written and its Events published.
        fn stored(p: &BackupPolicy, d: &Decision) -> BackupPolicy {
            let mut status = d.status.clone();
            status.pending_events.clear();
            let mut p = p.clone();
            p.status = Some(status);
            p
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]
            #[test]
            fn deciding_again_with_nothing_new_owes_nothing(
                rpo in proptest::option::of(prop_oneof![Just("15m"), Just("1h"), Just("1d")]),
                outcomes in proptest::collection::vec(
                    (any::<bool>(), any::<bool>(), 0i64..7200, 0i64..600), 0..12),
                later in 0i64..200_000,
            ) {
                let mut p = policy(rpo);
                let now = Timestamp::from_second(1_795_000_000 + 7800).unwrap();
                let mut seen = Vec::new();
                for (db, good, finished, took) in outcomes {
                    let asset = if db { "db" } else { "cache" };
                    seen.push(if good {
                        ok(asset, &stamp(finished - took), &stamp(finished))
                    } else {
                        failed(asset, &stamp(finished))
                    });
                    let d = decide(&p, &seen, None, None, &Verification::default(), &ArchiveLags::new(), now);
                    p = stored(&p, &d);
                    let again = decide(&p, &seen, None, None, &Verification::default(), &ArchiveLags::new(), now);
                    prop_assert!(!again.changed, "{:?}", again.status);
                    prop_assert!(again.status.pending_events.is_empty(), "{:?}", again.status.pending_events);
                }
                // Time passes: an objective may turn missed, once.
                let then = Timestamp::from_second(1_795_000_000 + 7800 + later).unwrap();
                let d = decide(&p, &seen, None, None, &Verification::default(), &ArchiveLags::new(), then);
                let p = stored(&p, &d);
                let again = decide(&p, &seen, None, None, &Verification::default(), &ArchiveLags::new(), then);
                prop_assert!(!again.changed, "{:?}", again.status);
                prop_assert!(again.status.pending_events.is_empty());
                if let Some(age) = d.status.rpo_seconds {
                    prop_assert!(age >= 0);
                }
            }
        }
    }
}
