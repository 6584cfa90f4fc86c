//! `kubectl lifeboat status`: one line per asset of every policy, its last good backup and its
//! RPO against the policy's objective, computed now (not the age written at the last reconcile).

use jiff::Timestamp;
use lifeboat_api::BackupPolicy;
use lifeboat_api::conditions::{find, types};

/// One asset's line.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssetLine {
    pub namespace: String,
    pub policy: String,
    pub asset: String,
    pub last_backup: Option<String>,
    /// Seconds since the newest good snapshot.
    pub rpo_seconds: Option<i64>,
    pub objective_seconds: Option<u64>,
    pub consecutive_failures: u32,
    pub last_failure: Option<String>,
    pub ready: String,
}

impl AssetLine {
    /// Whether the asset is within its RPO objective (`None` when the policy declares none).
    pub fn rpo_met(&self) -> Option<bool> {
        let objective = self.objective_seconds?;
        Some(
            self.rpo_seconds
                .is_some_and(|rpo| u64::try_from(rpo).is_ok_and(|r| r <= objective)),
        )
    }
}

/// The lines of every asset of `policies`, in the order given, as of `now`.
pub fn asset_lines(policies: &[BackupPolicy], now: Timestamp) -> Vec<AssetLine> {
    let mut out = Vec::new();
    for p in policies {
        let status = p.status.clone().unwrap_or_default();
        let ready = find(&status.conditions, types::READY)
            .map(|c| format!("{} ({})", c.status, c.reason))
            .unwrap_or_else(|| "Unknown".into());
        for asset in &p.spec.assets {
            let s = status.assets.iter().find(|a| a.name == asset.name);
            let success = s.and_then(|s| s.last_success.as_ref());
            out.push(AssetLine {
                namespace: p.metadata.namespace.clone().unwrap_or_default(),
                policy: p.metadata.name.clone().unwrap_or_default(),
                asset: asset.name.clone(),
                last_backup: success.map(|b| b.id.clone()),
                rpo_seconds: success
                    .map(|b| (now.as_second() - b.snapshot_time.0.as_second()).max(0)),
                objective_seconds: p.spec.objectives.as_ref().map(|o| o.rpo.as_secs()),
                consecutive_failures: s.map_or(0, |s| s.consecutive_failures),
                last_failure: s
                    .and_then(|s| s.last_failure.as_ref())
                    .map(|f| format!("{}: {}", f.reason, f.message)),
                ready: ready.clone(),
            });
        }
    }
    out
}

/// Seconds for people: `42s`, `12m30s`, `3h`, `2d4h`.
pub fn human(seconds: u64) -> String {
    lifeboat_api::Duration::from_secs(seconds).to_string()
}

/// The `status` table.
pub fn table(lines: &[AssetLine]) -> String {
    let mut rows = vec![
        [
            "NAMESPACE",
            "POLICY",
            "ASSET",
            "LAST BACKUP",
            "RPO",
            "OBJECTIVE",
            "VERDICT",
            "READY",
        ]
        .map(str::to_owned),
    ];
    for l in lines {
        let verdict = match (l.rpo_met(), l.last_backup.is_some()) {
            (_, false) => "NO BACKUP".to_owned(),
            (Some(true), _) => "ok".to_owned(),
            (Some(false), _) => "MISSED".to_owned(),
            (None, _) => "no objective".to_owned(),
        };
        let verdict = if l.consecutive_failures > 0 {
            format!("{verdict}, {} failing", l.consecutive_failures)
        } else {
            verdict
        };
        rows.push([
            l.namespace.clone(),
            l.policy.clone(),
            l.asset.clone(),
            l.last_backup.clone().unwrap_or_else(|| "-".into()),
            l.rpo_seconds
                .map(|s| human(u64::try_from(s).unwrap_or(0)))
                .unwrap_or_else(|| "-".into()),
            l.objective_seconds.map(human).unwrap_or_else(|| "-".into()),
            verdict,
            l.ready.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn policy(name: &str, snapshot_age: Option<i64>, now: Timestamp) -> BackupPolicy {
        let mut status = serde_json::json!({"conditions": [{"type": "Ready", "status": "True",
            "reason": "BackupsSucceeding", "message": "", "lastTransitionTime": "2026-11-24T00:00:00Z"}],
            "assets": [{"name": "db", "consecutiveFailures": 0}]});
        if let Some(age) = snapshot_age {
            let at = Timestamp::from_second(now.as_second() - age)
                .unwrap()
                .to_string();
            status["assets"][0]["lastSuccess"] = serde_json::json!({"id": "20261124T090000Z",
                "snapshotTime": at, "startedAt": at, "finishedAt": at, "storedBytes": 10,
                "sha256": "ab", "durationSeconds": 1.5});
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"schedule": "@hourly", "assets": [
                {"name": "db", "postgres": {"host": "db", "user": "u", "databases": ["orders"]}},
                {"name": "cache", "redis": {"host": "cache"}}],
                "retention": {"keepLast": 3}, "destination": {"volume": {"claimName": "b"}},
                "objectives": {"rpo": "15m"}},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn rpo_is_measured_now_and_judged_against_the_objective() {
        let now = Timestamp::from_second(1_790_000_000).unwrap();
        let lines = asset_lines(
            &[
                policy("fresh", Some(300), now),
                policy("stale", Some(3600), now),
            ],
            now,
        );
        assert_eq!(lines.len(), 4, "every asset, backed up or not");
        assert_eq!(lines[0].rpo_seconds, Some(300));
        assert_eq!(lines[0].rpo_met(), Some(true));
        assert_eq!(lines[1].last_backup, None);
        assert_eq!(
            lines[1].rpo_met(),
            Some(false),
            "no backup misses the objective"
        );
        assert_eq!(lines[2].rpo_met(), Some(false));
        let t = table(&lines);
        let row = t
            .lines()
            .find(|l| l.contains("stale") && l.contains("db"))
            .unwrap();
        assert!(
            row.contains("1h") && row.contains("15m") && row.contains("MISSED"),
            "{t}"
        );
        assert!(
            t.lines()
                .any(|l| l.contains("cache") && l.contains("NO BACKUP")),
            "{t}"
        );
    }
}
