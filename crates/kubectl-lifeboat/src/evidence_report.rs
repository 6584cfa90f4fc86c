//! `kubectl lifeboat report --evidence DIR`: the drills section of the playbook over a period,
//! from the evidence records the drills left next to the backups (`drill-<id>.json`, a mounted
//! backup volume or a copy of the bucket). Unlike the cluster's bounded drill history, the records
//! keep every drill, so a quarter's report shows all of them: pass rate, the RTO trend, MTTR (the
//! mean achieved RTO of the drills that restored) and the gaps they revealed. Needs no cluster.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use lifeboat_api::evidence::{
    DrillEvidence, EVIDENCE_SCHEMA_VERSION, EVIDENCE_SCHEMA_VERSION_MIN, EvidenceVerdict,
};

use crate::status::human;

/// One `drill-*.json` found: its record, or why it could not be read (a gap in itself).
pub struct Loaded {
    pub path: PathBuf,
    pub record: Result<DrillEvidence, String>,
}

/// Every `drill-*.json` under `dir`, at any depth, in path order.
pub fn load(dir: &Path) -> std::io::Result<Vec<Loaded>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if path.is_dir() {
                stack.push(path);
            } else if name.starts_with("drill-") && name.ends_with(".json") {
                let record = std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| parse(&bytes));
                out.push(Loaded { path, record });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Seconds for people, `-` for what was not measured.
fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| human(v.round() as u64))
}

fn parse(bytes: &[u8]) -> Result<DrillEvidence, String> {
    let version = serde_json::from_slice::<serde_json::Value>(bytes)
        .map_err(|e| format!("not JSON: {e}"))?
        .get("schemaVersion")
        .and_then(serde_json::Value::as_u64);
    let known = u64::from(EVIDENCE_SCHEMA_VERSION_MIN)..=u64::from(EVIDENCE_SCHEMA_VERSION);
    if !version.is_some_and(|v| known.contains(&v)) {
        return Err(format!(
            "schema version {version:?}, this plugin reads {EVIDENCE_SCHEMA_VERSION_MIN} to {EVIDENCE_SCHEMA_VERSION}"
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("not a drill evidence record: {e}"))
}

/// What the report says about the drills in a period.
pub struct Summary {
    pub from: Option<Timestamp>,
    pub to: Timestamp,
    /// The drills started in the period, oldest first.
    pub drills: Vec<(PathBuf, DrillEvidence)>,
    pub passed: usize,
    /// Mean achieved RTO of the drills that restored (not `Failed`), in seconds.
    pub mttr_seconds: Option<f64>,
    /// Mean achieved RTO of the older half of the restoring drills, and of the newer half.
    pub rto_trend: Option<(f64, f64)>,
    pub gaps: Vec<String>,
}

impl Summary {
    /// The summary for `-o json|yaml`: each drill's record with the file it was read from.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "from": self.from,
            "to": self.to,
            "drills": self.drills.iter()
                .map(|(file, record)| serde_json::json!({"file": file, "record": record}))
                .collect::<Vec<_>>(),
            "passed": self.passed,
            "passRate": self.pass_rate(),
            "mttrSeconds": self.mttr_seconds,
            "rtoTrend": self.rto_trend.map(|(older, newer)| serde_json::json!({"older": older, "newer": newer})),
            "gaps": self.gaps,
        })
    }

    /// Passed drills over all drills, in percent.
    pub fn pass_rate(&self) -> Option<f64> {
        (!self.drills.is_empty()).then(|| 100.0 * self.passed as f64 / self.drills.len() as f64)
    }
}

/// The drills of `loaded` started at or after `from` (all without it), as of `now`.
pub fn summarize(loaded: Vec<Loaded>, from: Option<Timestamp>, now: Timestamp) -> Summary {
    let mut gaps = Vec::new();
    let mut drills = Vec::new();
    for l in loaded {
        match l.record {
            Ok(r) if from.is_none_or(|f| r.started_at >= f) => drills.push((l.path, r)),
            Ok(_) => {}
            Err(e) => gaps.push(format!("{} cannot be read: {e}", l.path.display())),
        }
    }
    drills.sort_by_key(|(_, r)| r.started_at);
    if drills.is_empty() {
        gaps.push("no drill in the period: recovery was not proven".into());
    }
    let restored: Vec<f64> = drills
        .iter()
        .filter(|(_, r)| r.verdict != EvidenceVerdict::Failed)
        .map(|(_, r)| r.achieved.rto_seconds)
        .collect();
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let mttr_seconds = mean(&restored);
    let rto_trend = (restored.len() >= 2).then(|| {
        let (older, newer) = restored.split_at(restored.len() / 2);
        (mean(older).unwrap_or(0.0), mean(newer).unwrap_or(0.0))
    });
    if let Some((older, newer)) = rto_trend
        && newer > older * 1.2
    {
        gaps.push(format!(
            "RTO is trending up: mean {} in the older half of the drills, {} in the newer",
            human(older.round() as u64),
            human(newer.round() as u64)
        ));
    }
    for (_, r) in &drills {
        let what = format!(
            "drill {} of {} ({})",
            r.drill_id,
            r.policy,
            r.started_at.strftime("%Y-%m-%d")
        );
        match r.verdict {
            EvidenceVerdict::Failed => gaps.push(format!("{what} failed: {}", r.message)),
            EvidenceVerdict::ObjectivesMissed => {
                if !r.achieved.rto_met {
                    gaps.push(format!(
                        "{what} missed its RTO: {} against {}",
                        human(r.achieved.rto_seconds.round() as u64),
                        human(r.objectives.rto_seconds)
                    ));
                }
                if r.achieved.rpo_met == Some(false) {
                    gaps.push(format!(
                        "{what} missed its RPO: {} against {}",
                        secs(r.achieved.rpo_seconds),
                        human(r.objectives.rpo_seconds)
                    ));
                }
            }
            EvidenceVerdict::Passed => {}
        }
        for c in r.checks.iter().filter(|c| !c.passed) {
            gaps.push(
                format!("{what}: check {} failed {}", c.name, c.detail)
                    .trim_end()
                    .to_owned(),
            );
        }
        for a in &r.restored {
            if a.canary_written.is_some()
                && a.canary_found.is_none()
                && r.verdict != EvidenceVerdict::Failed
            {
                gaps.push(format!(
                    "{what}: asset {} wrote a canary before its backup, none was read back from the restore",
                    a.asset
                ));
            }
        }
        if let Some(canary) = r.achieved.rpo_canary_seconds
            && canary > r.objectives.rpo_seconds as f64
        {
            gaps.push(format!(
                "{what}: the data itself is {} old at the disaster (canary), objective {}",
                human(canary.round() as u64),
                human(r.objectives.rpo_seconds)
            ));
        }
    }
    let passed = drills
        .iter()
        .filter(|(_, r)| r.verdict == EvidenceVerdict::Passed)
        .count();
    Summary {
        from,
        to: now,
        drills,
        passed,
        mttr_seconds,
        rto_trend,
        gaps,
    }
}

/// The summary as Markdown.
pub fn markdown(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Lifeboat drills: evidence report\n");
    let period = match s.from {
        Some(f) => format!(
            "{} to {}",
            f.strftime("%Y-%m-%d"),
            s.to.strftime("%Y-%m-%d")
        ),
        None => format!("every record, as of {}", s.to.strftime("%Y-%m-%d")),
    };
    let _ = writeln!(
        out,
        "Period: {period}. From the drills' evidence records: RTO is disaster declared → \
         restored and validated; RPO is the disaster − the snapshot time of the restored data \
         (and, with canaries, − the newest marker found in the restore).\n"
    );
    let rate = s
        .pass_rate()
        .map_or_else(|| "-".into(), |r| format!("{r:.0}%"));
    let _ = writeln!(out, "## Summary\n");
    let _ = writeln!(out, "- Drills: {}", s.drills.len());
    let _ = writeln!(out, "- Passed: {} ({rate})", s.passed);
    let _ = writeln!(
        out,
        "- MTTR (mean achieved RTO of the drills that restored): {}",
        secs(s.mttr_seconds)
    );
    if let Some((older, newer)) = s.rto_trend {
        let _ = writeln!(
            out,
            "- RTO trend: {} (older half) → {} (newer half)",
            human(older.round() as u64),
            human(newer.round() as u64)
        );
    }
    let _ = writeln!(out, "\n## Gaps\n");
    if s.gaps.is_empty() {
        let _ = writeln!(out, "None found.");
    }
    for g in &s.gaps {
        let _ = writeln!(out, "- {g}");
    }
    let _ = writeln!(
        out,
        "\n## Every drill\n\n| Started | Drill | Policy | Verdict | RTO / objective | RPO / objective | Canary RPO | Checks | Slowest step | Record |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for (path, r) in &s.drills {
        let passed = r.checks.iter().filter(|c| c.passed).count();
        let slowest = r
            .steps
            .iter()
            .max_by(|a, b| a.seconds.total_cmp(&b.seconds))
            .map_or_else(
                || "-".into(),
                |st| format!("{} {}", st.name, human(st.seconds.round() as u64)),
            );
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:?} | {} / {} | {} / {} | {} | {passed}/{} | {slowest} | {} |",
            r.started_at.strftime("%Y-%m-%d %H:%M"),
            r.drill_id,
            r.policy,
            r.verdict,
            human(r.achieved.rto_seconds.round() as u64),
            human(r.objectives.rto_seconds),
            secs(r.achieved.rpo_seconds),
            human(r.objectives.rpo_seconds),
            secs(r.achieved.rpo_canary_seconds),
            r.checks.len(),
            path.display()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn record(id: &str, at: &str, verdict: &str, rto: f64, extra: serde_json::Value) -> Loaded {
        let mut r = json!({"schemaVersion": 1, "drillId": id, "policy": "shop", "agentVersion": "0.1.0",
            "startedAt": at, "disasterAt": at, "finishedAt": at, "verdict": verdict,
            "objectives": {"rtoSeconds": 1800, "rpoSeconds": 900},
            "achieved": {"rtoSeconds": rto, "rpoSeconds": 60.0,
                         "rtoMet": rto <= 1800.0, "rpoMet": true},
            "restored": [], "checks": [{"name": "orders", "passed": verdict != "Failed"}],
            "steps": [{"name": "backup", "startedAt": at, "seconds": 20.0},
                      {"name": "restore db", "startedAt": at, "seconds": rto - 20.0}]});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        Loaded {
            path: PathBuf::from(format!("shop/drill-{id}.json")),
            record: parse(r.to_string().as_bytes()),
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_quarter_of_drills_gives_pass_rate_mttr_trend_and_gaps() {
        let loaded = vec![
            record("q-old", "2026-06-01T06:00:00Z", "Passed", 100.0, json!({})),
            record("q-1", "2026-09-01T06:00:00Z", "Passed", 600.0, json!({})),
            record("q-2", "2026-10-01T06:00:00Z", "Passed", 900.0, json!({})),
            record(
                "q-3",
                "2026-11-01T06:00:00Z",
                "Failed",
                300.0,
                json!({"message": "restore of db: AuthFailed"}),
            ),
            record(
                "q-4",
                "2026-11-15T06:00:00Z",
                "ObjectivesMissed",
                2400.0,
                json!({"restored": [{"asset": "cache", "backupId": "b", "snapshotTime": "2026-11-15T05:59:00Z",
                        "target": "redis://s:6379", "artifacts": [],
                        "canaryWritten": {"id": "b", "writtenAt": "2026-11-15T05:59:00Z"}}]}),
            ),
            Loaded {
                path: PathBuf::from("shop/drill-broken.json"),
                record: parse(b"{\"schemaVersion\": 3}"),
            },
        ];
        let s = summarize(
            loaded,
            Some(at("2026-08-26T00:00:00Z")),
            at("2026-11-24T00:00:00Z"),
        );
        assert_eq!(
            s.drills
                .iter()
                .map(|(_, r)| r.drill_id.as_str())
                .collect::<Vec<_>>(),
            ["q-1", "q-2", "q-3", "q-4"],
            "the period, oldest first"
        );
        assert_eq!(s.passed, 2);
        assert_eq!(s.pass_rate(), Some(50.0));
        // MTTR over the drills that restored: (600 + 900 + 2400) / 3.
        assert_eq!(s.mttr_seconds, Some(1300.0));
        assert_eq!(s.rto_trend, Some((600.0, 1650.0)));
        let gaps = s.gaps.join("\n");
        for expected in [
            "drill-broken.json cannot be read: schema version Some(3)",
            "RTO is trending up: mean 10m in the older half of the drills, 27m30s in the newer",
            "drill q-3 of shop (2026-11-01) failed: restore of db: AuthFailed",
            "drill q-3 of shop (2026-11-01): check orders failed",
            "drill q-4 of shop (2026-11-15) missed its RTO: 40m against 30m",
            "asset cache wrote a canary before its backup, none was read back",
        ] {
            assert!(gaps.contains(expected), "{expected:?} not in:\n{gaps}");
        }
        let md = markdown(&s);
        assert!(md.contains("- Drills: 4"), "{md}");
        assert!(md.contains("- Passed: 2 (50%)"), "{md}");
        assert!(
            md.contains("| q-4 | shop | ObjectivesMissed | 40m / 30m |"),
            "{md}"
        );
        assert!(md.contains("restore db 39m40s"), "the slowest step: {md}");
    }

    #[test]
    fn an_rpo_not_measured_is_neither_met_nor_missed() {
        // Version 2, mode Fresh: restorability and the RTO only; the RTO missed.
        let mut r = record(
            "fresh",
            "2026-11-15T06:00:00Z",
            "ObjectivesMissed",
            2400.0,
            json!({"schemaVersion": 2}),
        );
        let e = r.record.as_mut().unwrap();
        (e.achieved.rpo_seconds, e.achieved.rpo_met) = (None, None);
        let s = summarize(vec![r], None, at("2026-11-24T00:00:00Z"));
        let gaps = s.gaps.join("\n");
        assert!(gaps.contains("missed its RTO: 40m against 30m"), "{gaps}");
        assert!(
            !gaps.contains("RPO"),
            "an RPO not measured is not missed: {gaps}"
        );
        let md = markdown(&s);
        assert!(
            md.contains("| fresh | shop | ObjectivesMissed | 40m / 30m | - / 15m |"),
            "{md}"
        );
    }

    #[test]
    fn no_drill_in_the_period_is_a_gap_not_a_clean_report() {
        let s = summarize(
            vec![record(
                "q-old",
                "2026-01-01T06:00:00Z",
                "Passed",
                100.0,
                json!({}),
            )],
            Some(at("2026-08-26T00:00:00Z")),
            at("2026-11-24T00:00:00Z"),
        );
        assert!(s.drills.is_empty());
        assert_eq!(s.pass_rate(), None);
        assert_eq!(
            s.gaps,
            vec!["no drill in the period: recovery was not proven".to_owned()]
        );
    }
}
