//! `--wait` for on-demand backups and drills: decide from a resource's status alone whether the run
//! a token asked for has finished, so the same pure functions serve the polling loop and the tests.

use jiff::Timestamp;
use lifeboat_api::backup_policy::BackupPolicy;
use lifeboat_api::drill_schedule::{DrillRecord, DrillSchedule};

/// How one asset's on-demand backup ended.
#[derive(Clone, Debug, PartialEq)]
pub enum AssetOutcome {
    Succeeded {
        asset: String,
        id: String,
        stored_bytes: u64,
        seconds: f64,
    },
    Failed {
        asset: String,
        reason: String,
        message: String,
    },
}

impl AssetOutcome {
    pub fn failed(&self) -> bool {
        matches!(self, AssetOutcome::Failed { .. })
    }

    pub fn line(&self) -> String {
        match self {
            AssetOutcome::Succeeded {
                asset,
                id,
                stored_bytes,
                seconds,
            } => format!("{asset}: backup {id} ({stored_bytes} bytes stored, {seconds:.1}s)"),
            AssetOutcome::Failed {
                asset,
                reason,
                message,
            } => format!("{asset}: FAILED ({reason}) {message}"),
        }
    }
}

/// The outcome of every asset once the policy has taken the backup asked for by `token` at
/// `asked` (seconds precision: a run started in the same second counts), or `None` while any
/// asset is still running.
pub fn backup_outcome(
    policy: &BackupPolicy,
    token: &str,
    asked: Timestamp,
) -> Option<Vec<AssetOutcome>> {
    let status = policy.status.as_ref()?;
    if status.last_backup_now_token.as_deref() != Some(token) {
        return None;
    }
    let since = asked.as_second();
    let mut out = Vec::new();
    for asset in &policy.spec.assets {
        let s = status.assets.iter().find(|s| s.name == asset.name)?;
        let success = s
            .last_success
            .as_ref()
            .filter(|b| b.started_at.0.as_second() >= since);
        let failure = s
            .last_failure
            .as_ref()
            .filter(|f| f.time.0.as_second() >= since);
        let success = success.filter(|b| failure.is_none_or(|f| f.time.0 < b.finished_at.0));
        out.push(match (success, failure) {
            (Some(b), _) => AssetOutcome::Succeeded {
                asset: asset.name.clone(),
                id: b.id.clone(),
                stored_bytes: b.stored_bytes,
                seconds: b.duration_seconds,
            },
            (_, Some(f)) => AssetOutcome::Failed {
                asset: asset.name.clone(),
                reason: f.reason.clone(),
                message: f.message.clone(),
            },
            (None, None) => return None,
        });
    }
    Some(out)
}

/// The drill asked for by `token` at `asked`, once it has finished.
pub fn drill_outcome<'a>(
    drill: &'a DrillSchedule,
    token: &str,
    asked: Timestamp,
) -> Option<&'a DrillRecord> {
    let status = drill.status.as_ref()?;
    if status.last_drill_now_token.as_deref() != Some(token) || status.active.is_some() {
        return None;
    }
    status
        .last_run
        .as_ref()
        .filter(|r| r.started_at.0.as_second() >= asked.as_second())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn policy(status: serde_json::Value) -> BackupPolicy {
        serde_json::from_value(json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "shop", "namespace": "shop"},
            "spec": {"schedule": "0 3 * * *",
                     "assets": [{"name": "db", "postgres": {"host": "db", "user": "u", "databases": ["app"]}},
                                {"name": "cache", "redis": {"host": "cache"}}],
                     "retention": {"keepLast": 3},
                     "destination": {"volume": {"claimName": "backups"}}},
            "status": status
        }))
        .unwrap()
    }

    fn success(at: &str) -> serde_json::Value {
        json!({"id": "b", "snapshotTime": at, "startedAt": at, "finishedAt": at,
               "storedBytes": 10, "sha256": "ab", "durationSeconds": 1.5})
    }

    const ASKED: &str = "2026-11-24T10:00:00Z";

    #[test]
    fn a_backup_counts_once_every_asset_has_a_result_after_the_request() {
        let asked: Timestamp = ASKED.parse().unwrap();
        // The operator has not seen the token yet.
        let p = policy(json!({"assets": []}));
        assert_eq!(backup_outcome(&p, "t1", asked), None);
        // One asset done, the other still showing yesterday's backup.
        let p = policy(json!({"lastBackupNowToken": "t1", "assets": [
            {"name": "db", "lastSuccess": success("2026-11-24T10:00:05Z")},
            {"name": "cache", "lastSuccess": success("2026-11-23T03:00:00Z")}]}));
        assert_eq!(backup_outcome(&p, "t1", asked), None);
        // Both done; the cache failed.
        let p = policy(json!({"lastBackupNowToken": "t1", "assets": [
            {"name": "db", "lastSuccess": success("2026-11-24T10:00:05Z")},
            {"name": "cache", "lastSuccess": success("2026-11-23T03:00:00Z"),
             "lastFailure": {"time": "2026-11-24T10:00:07Z", "reason": "SourceUnreachable", "message": "refused"}}]}));
        let out = backup_outcome(&p, "t1", asked).unwrap();
        assert!(!out[0].failed() && out[1].failed(), "{out:?}");
        assert_eq!(out[1].line(), "cache: FAILED (SourceUnreachable) refused");
        // Another token's results do not answer this one.
        assert_eq!(backup_outcome(&p, "t2", asked), None);
    }

    #[test]
    fn a_success_after_an_earlier_failure_of_the_same_run_wins() {
        let asked: Timestamp = ASKED.parse().unwrap();
        let p = policy(json!({"lastBackupNowToken": "t1", "assets": [
            {"name": "db", "lastSuccess": success("2026-11-24T10:00:30Z"),
             "lastFailure": {"time": "2026-11-24T10:00:10Z", "reason": "Storage", "message": "retried"}},
            {"name": "cache", "lastSuccess": success("2026-11-24T10:00:02Z")}]}));
        let out = backup_outcome(&p, "t1", asked).unwrap();
        assert!(out.iter().all(|o| !o.failed()), "{out:?}");
    }

    fn drill(status: serde_json::Value) -> DrillSchedule {
        serde_json::from_value(json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DrillSchedule",
            "metadata": {"name": "q", "namespace": "shop"},
            "spec": {"schedule": "0 6 1 * *", "policy": "shop", "assets": ["db"],
                     "staging": {"targets": [{"asset": "db", "postgres": {"host": "s", "user": "u", "database": "d"}}]},
                     "objectives": {"rto": "30m", "rpo": "15m"}},
            "status": status
        }))
        .unwrap()
    }

    fn record(at: &str) -> serde_json::Value {
        json!({"id": "d", "startedAt": at, "finishedAt": at, "verdict": "Passed",
               "rtoSeconds": 12.0, "rto": "12s", "rpoSeconds": 3.0, "rpo": "3s",
               "rtoMet": true, "rpoMet": true})
    }

    #[test]
    fn a_drill_counts_once_it_is_no_longer_active_and_started_after_the_request() {
        let asked: Timestamp = ASKED.parse().unwrap();
        let running = drill(json!({"lastDrillNowToken": "t1",
            "active": {"id": "d", "startedAt": "2026-11-24T10:00:01Z", "step": "Restore"},
            "lastRun": record("2026-08-01T06:00:00Z")}));
        assert!(drill_outcome(&running, "t1", asked).is_none());
        let old =
            drill(json!({"lastDrillNowToken": "t1", "lastRun": record("2026-08-01T06:00:00Z")}));
        assert!(drill_outcome(&old, "t1", asked).is_none());
        let done =
            drill(json!({"lastDrillNowToken": "t1", "lastRun": record("2026-11-24T10:00:01Z")}));
        assert_eq!(
            drill_outcome(&done, "t1", asked).unwrap().rto_seconds,
            Some(12.0)
        );
        assert!(drill_outcome(&done, "t0", asked).is_none());
    }
}
