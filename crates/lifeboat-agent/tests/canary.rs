//! RPO from the data itself, on real PostgreSQL and Redis: the local drill's assets write canary
//! markers just before the backup, the test makes a gap of writes after it, the drill writes the
//! disaster's marker, restores, and reads the newest marker back from each restored target. The
//! restore holds the backup's marker and not the disaster's (writes after the backup are not in
//! it), the canary RPO equals the gap the test created within a second, and the evidence record
//! the drill leaves validates against docs/drill-evidence.schema.json.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use lifeboat_api::evidence::{DrillEvidence, EvidenceVerdict};

#[test]
fn the_canary_round_trip_measures_the_gap_and_the_evidence_validates() {
    let dir = tempfile::tempdir().unwrap();
    let gap = 3.0;
    let out = agent_command()
        .env_remove("LIFEBOAT_JOB")
        .env_remove("LIFEBOAT_TERMINATION_LOG")
        .args([
            "drill",
            "--demo",
            "--json",
            "--traffic-seconds",
            "3",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // The canary RPO is the gap, within a second (the backup itself takes a fraction of one).
    let canary = report["rpoCanarySeconds"].as_f64().unwrap();
    assert!(
        (gap..gap + 1.0).contains(&canary),
        "canary RPO {canary}s for a {gap}s gap"
    );
    for asset in ["orders-db", "sessions"] {
        let check = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                c["name"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{asset} canary"))
            })
            .unwrap();
        assert_eq!(check["passed"], true, "{check}");
    }

    // The evidence: valid against the published schema, and what the drill measured.
    let path = Path::new(report["evidence"].as_str().unwrap());
    assert!(
        path.starts_with(dir.path()),
        "written next to the backups: {}",
        path.display()
    );
    let text = std::fs::read_to_string(path).unwrap();
    let instance: serde_json::Value = serde_json::from_str(&text).unwrap();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/drill-evidence.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // The schema is not vacuous: a record without its verdict, or with a bad checksum, fails.
    let mut broken = instance.clone();
    broken.as_object_mut().unwrap().remove("verdict");
    assert!(!validator.is_valid(&broken));
    let mut broken = instance.clone();
    broken["restored"][0]["artifacts"][0]["sha256"] = serde_json::json!("not-a-digest");
    assert!(!validator.is_valid(&broken));

    let evidence: DrillEvidence = serde_json::from_str(&text).unwrap();
    assert_eq!(evidence.verdict, EvidenceVerdict::Passed);
    assert_eq!(evidence.achieved.rpo_canary_seconds, Some(canary));
    assert_eq!(evidence.restored.len(), 2);
    for r in &evidence.restored {
        let written = r.canary_written.as_ref().unwrap();
        let found = r.canary_found.as_ref().unwrap();
        assert_eq!(
            found.id, r.backup_id,
            "{}: the backup's own marker",
            r.asset
        );
        assert_eq!(written.id, found.id);
        assert!(!r.artifacts.is_empty());
    }
    assert_eq!(
        evidence
            .steps
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["backup", "traffic after the backup", "restore", "validate"]
    );
}

/// The agent, signing with the tests' key (a fixture: any 32 bytes), in namespace `n` (a Job's
/// document names its own).
fn agent_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat-agent"));
    c.env(
        "LIFEBOAT_SIGNING_KEY_FILE",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/signing.key"),
    )
    .env("LIFEBOAT_NAMESPACE", "n");
    c
}
