//! The `evidence` Job an operator drill ends with, run as the operator runs it (the document in
//! `LIFEBOAT_JOB`), on real Redis backups in a directory and in an S3 bucket (`rclone serve s3`):
//! the record lands next to the backups as `drill-<id>.json`, completed from their metadata
//! (checksums, snapshot time, canary marker) and valid against docs/drill-evidence.schema.json;
//! a drill that restored and validated marks its backups verified, so the next backup Job's
//! retention keeps the newest of them where its rules alone would delete it; a failed drill
//! verifies nothing; listing and retention never take the record for a backup.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use lifeboat_agent::local::{LocalRedis, LocalS3};
use lifeboat_api::agent_result::{AgentSummary, BackupMetadata, VerificationRecord};
use lifeboat_api::evidence::DrillEvidence;
use serde_json::{Value, json};

struct World {
    dir: tempfile::TempDir,
    redis: LocalRedis,
    destination: Value,
    /// Where the policy's files are on disk (the bucket's directory for S3).
    policy_root: PathBuf,
}

impl World {
    fn new(s3: Option<&LocalS3>) -> World {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("secrets/s3-creds");
        std::fs::create_dir_all(&creds).unwrap();
        std::fs::write(creds.join("AWS_ACCESS_KEY_ID"), LocalS3::ACCESS_KEY).unwrap();
        std::fs::write(creds.join("AWS_SECRET_ACCESS_KEY"), LocalS3::SECRET_KEY).unwrap();
        let (destination, policy_root) = match s3 {
            Some(s3) => (
                json!({"s3": {"endpoint": s3.endpoint(), "bucket": "backups", "prefix": "team",
                              "forcePathStyle": true, "credentialsSecret": {"name": "s3-creds"}}}),
                s3.root().join("backups/team/n/shop"),
            ),
            None => (
                json!({"volume": {"claimName": "backups"}}),
                dir.path().join("backups/n/shop"),
            ),
        };
        World {
            redis: LocalRedis::start().unwrap(),
            dir,
            destination,
            policy_root,
        }
    }

    fn agent(&self, document: &Value) -> Command {
        let mut cmd = agent_command();
        cmd.env("LIFEBOAT_JOB", document.to_string())
            .env("LIFEBOAT_BACKUP_DIR", self.dir.path().join("backups"))
            .env("LIFEBOAT_SECRETS_DIR", self.dir.path().join("secrets"))
            .env("LIFEBOAT_TERMINATION_LOG", self.dir.path().join("term"));
        cmd
    }

    fn run(&self, verb: &str, document: &Value) -> AgentSummary {
        let out = self.agent(document).arg(verb).output().unwrap();
        assert!(
            out.status.success(),
            "{verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        AgentSummary::from_termination_message(
            &std::fs::read_to_string(self.dir.path().join("term")).unwrap(),
        )
        .unwrap()
    }

    fn backup(&self, retention: Value) -> String {
        let job = json!({"namespace": "n", "policy": "shop",
            "asset": {"name": "sessions", "canary": true,
                      "redis": {"host": "127.0.0.1", "port": self.redis.port, "allowEmpty": true}},
            "destination": self.destination,
            "compression": {"algorithm": "zstd", "level": 3}, "retention": retention});
        self.run("backup", &job).backup_id.unwrap()
    }

    /// The evidence document an operator drill would hand over: timings, verdict and checks;
    /// no artifacts, and a snapshot time the agent must replace with the metadata's.
    fn evidence_job(&self, drill: &str, verdict: &str, backup: &str) -> Value {
        json!({"namespace": "n", "policy": "shop", "location": self.destination,
            "evidence": {"schemaVersion": 2, "drillId": drill, "policy": "shop", "agentVersion": "",
                "startedAt": "2026-11-24T10:00:00Z", "disasterAt": "2026-11-24T10:00:00Z",
                "finishedAt": "2026-11-24T10:03:00Z", "verdict": verdict,
                "objectives": {"rtoSeconds": 1800, "rpoSeconds": 900},
                "achieved": {"rtoSeconds": 180.0, "rpoSeconds": 0.0, "rtoMet": true, "rpoMet": true},
                "restored": [{"asset": "sessions", "backupId": backup, "snapshotTime": "2026-11-24T10:00:00Z",
                              "target": "redis://staging:6379", "artifacts": []}],
                "checks": [{"name": "sessions-present", "passed": verdict != "Failed"}],
                "steps": [{"name": "backup", "startedAt": "2026-11-24T10:00:00Z", "seconds": 20.0},
                          {"name": "restore sessions", "startedAt": "2026-11-24T10:00:20Z", "seconds": 100.0},
                          {"name": "validate", "startedAt": "2026-11-24T10:02:00Z", "seconds": 60.0}]}})
    }

    fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.policy_root)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        ids
    }
}

fn schema_errors(instance: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/drill-evidence.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn the_record_lands_completed_and_verified_backups_outlive_retention(w: &World) {
    let keep_all = json!({"keepLast": 50});
    let drilled = w.backup(keep_all.clone());
    let failed_drill_backup = w.backup(keep_all.clone());
    let newest = w.backup(keep_all);

    // A drill that restored and validated the oldest of the three.
    let s = w.run(
        "evidence",
        &w.evidence_job("quarterly-20261124t100000z", "Passed", &drilled),
    );
    assert!(s.ok);
    let path = w.policy_root.join("drill-quarterly-20261124t100000z.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let instance: Value = serde_json::from_str(&text).unwrap();
    let errors = schema_errors(&instance);
    assert!(errors.is_empty(), "{errors:#?}");
    let evidence: DrillEvidence = serde_json::from_value(instance).unwrap();
    let metadata: BackupMetadata = serde_json::from_slice(
        &std::fs::read(w.policy_root.join(&drilled).join("sessions.metadata.json")).unwrap(),
    )
    .unwrap();
    let r = &evidence.restored[0];
    assert_eq!(r.snapshot_time, metadata.snapshot_time, "from the metadata");
    assert_eq!(
        r.artifacts
            .iter()
            .map(|a| (a.name.clone(), a.sha256.clone()))
            .collect::<Vec<_>>(),
        metadata
            .artifacts
            .iter()
            .map(|a| (a.name.clone(), a.sha256.clone()))
            .collect::<Vec<_>>()
    );
    assert!(!r.artifacts.is_empty());
    assert_eq!(r.canary_written, metadata.canary);
    assert!(r.canary_written.is_some(), "the asset writes canaries");
    assert_eq!(evidence.agent_version, env!("CARGO_PKG_VERSION"));
    let verified: VerificationRecord = serde_json::from_slice(
        &std::fs::read(w.policy_root.join(&drilled).join("sessions.verified.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        verified.drill_id.as_deref(),
        Some("quarterly-20261124t100000z")
    );

    // A failed drill leaves its record and verifies nothing.
    w.run(
        "evidence",
        &w.evidence_job("quarterly-20261125t100000z", "Failed", &failed_drill_backup),
    );
    assert!(
        w.policy_root
            .join("drill-quarterly-20261125t100000z.json")
            .exists()
    );
    assert!(
        !w.policy_root
            .join(&failed_drill_backup)
            .join("sessions.verified.json")
            .exists()
    );

    // keepLast 1 (guard off): the newest and the drill-verified backup stay, the records too.
    let last = w.backup(json!({"keepLast": 1, "maxDeletePercent": 100}));
    let mut expected = vec![drilled.clone(), last];
    expected.sort();
    assert_eq!(
        w.ids(),
        expected,
        "{newest} and {failed_drill_backup} deleted"
    );
    assert!(path.exists(), "retention never touches evidence records");

    // Evidence for a backup that is not there fails the Job and writes nothing.
    let out = w
        .agent(&w.evidence_job("quarterly-20261126t100000z", "Passed", "20200101T000000Z"))
        .arg("evidence")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "NotFound");
    assert!(
        !w.policy_root
            .join("drill-quarterly-20261126t100000z.json")
            .exists()
    );
}

#[test]
fn evidence_in_a_directory() {
    the_record_lands_completed_and_verified_backups_outlive_retention(&World::new(None));
}

#[test]
fn evidence_in_an_s3_bucket() {
    let s3 =
        LocalS3::start_with(|root| std::fs::create_dir_all(root.join("backups")).unwrap()).unwrap();
    the_record_lands_completed_and_verified_backups_outlive_retention(&World::new(Some(&s3)));
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
