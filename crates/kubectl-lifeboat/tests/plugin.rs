//! The plugin against the real control plane, run as kubectl runs it (`kubectl lifeboat ...`
//! finds `kubectl-lifeboat` on the PATH): status, on-demand backup and drill, a restore plan, the
//! report, and a clear error for what does not exist.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use lifeboat_api::{BackupPolicy, DrillSchedule, RestoreRequest};
use serde_json::json;

fn kubectl(ns: &str, args: &[&str]) -> Output {
    let env = lifeboat_testenv::shared().unwrap();
    let plugin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-lifeboat"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        plugin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(lifeboat_testenv::kubectl().unwrap());
    cmd.arg("lifeboat")
        .args(["-n", ns])
        .args(args)
        .env("PATH", path);
    if let Some(k) = env.kubeconfig() {
        cmd.env("KUBECONFIG", k);
    }
    cmd.output().unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn status_backup_restore_drill_and_report_through_kubectl() {
    let env = lifeboat_testenv::shared().unwrap();
    let client = env.client().await.unwrap();
    let ns = env.namespace(&client, "plugin").await.unwrap();
    let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), &ns);
    let drills: Api<DrillSchedule> = Api::namespaced(client.clone(), &ns);
    let pp = PatchParams::apply("test-user");

    // A policy whose database was backed up 5 minutes ago and whose cache never was, and a
    // drill of the database that missed its RTO last time: what the operator would have written.
    policies
        .patch("shop", &pp, &Patch::Apply(json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy", "metadata": {"name": "shop"},
            "spec": {"schedule": "@hourly", "retention": {"keepLast": 3},
                     "destination": {"volume": {"claimName": "backups"}}, "objectives": {"rpo": "15m"},
                     "assets": [{"name": "db", "postgres": {"host": "db", "user": "u", "databases": ["orders"]}},
                                {"name": "cache", "redis": {"host": "cache"}}]}})))
        .await
        .unwrap();
    let at = (Timestamp::now() - jiff::SignedDuration::from_secs(300)).to_string();
    policies
        .patch_status("shop", &PatchParams::default(), &Patch::Merge(json!({"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "Scheduled", "message": "", "lastTransitionTime": at}],
            "assets": [{"name": "db", "consecutiveFailures": 0, "lastSuccess": {"id": "20261124T1000Z",
                "snapshotTime": at, "startedAt": at, "finishedAt": at, "storedBytes": 1024, "sha256": "ab", "durationSeconds": 2.0}}]}})))
        .await
        .unwrap();
    drills
        .patch("quarterly", &pp, &Patch::Apply(json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DrillSchedule", "metadata": {"name": "quarterly"},
            "spec": {"schedule": "0 6 1 */3 *", "policy": "shop", "assets": ["db"],
                     "staging": {"targets": [{"asset": "db", "postgres": {"host": "staging", "user": "u"}}]},
                     "objectives": {"rto": "30m", "rpo": "15m"}}})))
        .await
        .unwrap();
    drills
        .patch_status("quarterly", &PatchParams::default(), &Patch::Merge(json!({"status": {"history": [
            {"id": "q3", "startedAt": "2026-10-01T06:00:00Z", "finishedAt": "2026-10-01T06:41:00Z",
             "verdict": "ObjectivesMissed", "rtoSeconds": 2460.0, "rpoSeconds": 120.0, "rtoMet": false,
             "rpoMet": true, "backups": [{"asset": "db", "id": "20261001T0600Z"}], "message": "RTO 41m over 30m"}]}})))
        .await
        .unwrap();

    let table = stdout(&kubectl(&ns, &["status"]));
    let db = table.lines().find(|l| l.contains(" db ")).unwrap();
    assert!(
        db.contains("20261124T1000Z") && db.contains("15m") && db.contains("ok"),
        "{table}"
    );
    let rpo = db.split_whitespace().nth(4).unwrap();
    assert!(rpo.starts_with('5'), "RPO measured now, about 5m: {table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("cache") && l.contains("NO BACKUP")),
        "{table}"
    );

    stdout(&kubectl(&ns, &["backup", "now", "shop"]));
    let p = policies.get("shop").await.unwrap();
    assert!(
        p.metadata
            .annotations
            .unwrap()
            .contains_key("lifeboat.dev/backup-now")
    );
    stdout(&kubectl(&ns, &["drill", "run", "quarterly"]));
    let d = drills.get("quarterly").await.unwrap();
    assert!(
        d.metadata
            .annotations
            .unwrap()
            .contains_key("lifeboat.dev/drill-now")
    );

    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("targets.yaml");
    std::fs::write(
        &targets,
        "- asset: db\n  postgres: {host: staging-db, user: restore, database: orders_copy, createDatabase: true}\n",
    )
    .unwrap();
    let out = stdout(&kubectl(
        &ns,
        &[
            "restore",
            "shop",
            "--from",
            "latest",
            "--asset",
            "db",
            "--name",
            "to-staging",
            "--into",
            targets.to_str().unwrap(),
        ],
    ));
    assert!(out.contains("a plan only"), "{out}");
    let rr = Api::<RestoreRequest>::namespaced(client.clone(), &ns)
        .get("to-staging")
        .await
        .unwrap();
    assert!(!rr.spec.execute);
    assert_eq!(
        rr.spec.targets[0].postgres().unwrap().database.as_deref(),
        Some("orders_copy")
    );

    let html = dir.path().join("report.html");
    stdout(&kubectl(
        &ns,
        &["report", "--format", "html", "-o", html.to_str().unwrap()],
    ));
    let html = std::fs::read_to_string(html).unwrap();
    assert!(html.contains("asset cache has no good backup"), "{html}");
    assert!(
        html.contains("missed its objectives: RTO 41m over 30m"),
        "{html}"
    );
    assert!(html.contains("<svg"), "the RTO/RPO chart");
    let md = stdout(&kubectl(&ns, &["report"]));
    assert!(
        md.contains("| q3 | 2026-10-01 06:00 | Objectives missed | 41m | no | 2m | yes |"),
        "{md}"
    );

    // What does not exist is a clear error and a non-zero exit.
    let out = kubectl(&ns, &["backup", "now", "no-such-policy"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-policy") && err.contains("not found"),
        "{err}"
    );
}
