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
        &[
            "report",
            "--format",
            "html",
            "--output-file",
            html.to_str().unwrap(),
        ],
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

/// Plays what the operator's catalog Job leaves for request `rr`: its pod, ended with `message`
/// as the agent's termination message (as the kubelet writes it).
async fn catalog_pod_ends(client: &kube::Client, ns: &str, rr: &str, message: &str) {
    use k8s_openapi::api::core::v1::Pod;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let name = format!("{rr}-catalog-pod");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name,
        "labels": {"lifeboat.dev/restore": rr, "lifeboat.dev/role": "catalog"}},
        "spec": {"containers": [{"name": "agent", "image": "lifeboat-agent"}]}}))
    .unwrap();
    pods.create(&Default::default(), &pod).await.unwrap();
    let now = Timestamp::now().to_string();
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {
        "phase": "Succeeded",
        "containerStatuses": [{"name": "agent", "image": "lifeboat-agent", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed",
            "startedAt": now, "finishedAt": now, "message": message}}}]}})))
        .await
        .unwrap();
}

/// Starts `kubectl lifeboat backups` in the background, waits for the plan-only RestoreRequest
/// it creates, and returns the process and the request.
async fn backups_started(
    client: &kube::Client,
    ns: &str,
    args: &[&str],
) -> (std::process::Child, RestoreRequest) {
    let env = lifeboat_testenv::shared().unwrap();
    let plugin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-lifeboat"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        plugin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(lifeboat_testenv::kubectl().unwrap());
    cmd.arg("lifeboat")
        .args(["-n", ns, "backups"])
        .args(args)
        .env("PATH", path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(k) = env.kubeconfig() {
        cmd.env("KUBECONFIG", k);
    }
    let mut child = cmd.spawn().unwrap();
    let api: Api<RestoreRequest> = Api::namespaced(client.clone(), ns);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let rr = loop {
        let list = api.list(&Default::default()).await.unwrap().items;
        if let Some(rr) = list.into_iter().next() {
            break rr;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "no RestoreRequest: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    (child, rr)
}

#[tokio::test]
async fn backups_at_a_location_are_listed_from_the_catalog_job_and_the_request_is_removed() {
    use kube::ResourceExt;
    use lifeboat_api::agent_result::{
        AgentSummary, Catalog, CatalogEntry, ErrorClass, SUMMARY_VERSION, TerminationMessage, Verb,
    };
    use lifeboat_api::backup_policy::AssetKind;
    let env = lifeboat_testenv::shared().unwrap();
    let client = env.client().await.unwrap();
    let ns = env.namespace(&client, "plugin-backups").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().join("location.yaml");
    std::fs::write(
        &location,
        "s3: {endpoint: 'http://s3:9000', bucket: backups, prefix: lifeboat, credentialsSecret: {name: s3-creds}}\n",
    )
    .unwrap();
    let t = Timestamp::now();
    let summary = |ok: bool| AgentSummary {
        version: SUMMARY_VERSION,
        verb: Verb::Catalog,
        ok,
        asset: None,
        backup_id: None,
        started_at: t,
        finished_at: t,
        snapshot_time: None,
        stored_bytes: None,
        sha256: None,
        error_class: (!ok).then_some(ErrorClass::Integrity),
        message: (!ok).then(|| {
            "lifeboat/x/shop/b/db.metadata.json: moved from another place, refused".into()
        }),
        checks: Vec::new(),
        retention_refused: None,
        copies: Vec::new(),
    };
    let catalog = Catalog {
        entries: vec![CatalogEntry {
            asset: "db".into(),
            kind: AssetKind::Postgres,
            backup_id: "20261124T100000Z-123-0a1b2c3d".into(),
            snapshot_time: t,
            stored_bytes: 4096,
            encrypted: false,
            verified: true,
        }],
        omitted: 0,
    };
    let loc = location.to_str().unwrap();
    let (child, rr) = backups_started(
        &client,
        &ns,
        &["--policy", "shop", "--location", loc, "-o", "json"],
    )
    .await;
    assert!(!rr.spec.execute, "a plan only");
    assert_eq!(rr.spec.source.policy, "shop");
    assert_eq!(
        rr.spec
            .source
            .location
            .as_ref()
            .and_then(|l| l.s3.as_ref())
            .map(|s| s.bucket.as_str()),
        Some("backups")
    );
    let message = TerminationMessage {
        summary: summary(true),
        checks_report: None,
        catalog: Some(catalog.clone()),
        point_in_time: None,
    };
    catalog_pod_ends(&client, &ns, &rr.name_any(), &message.to_json().unwrap()).await;
    let out = child.wait_with_output().unwrap();
    let printed: Catalog = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(printed, catalog);
    let api: Api<RestoreRequest> = Api::namespaced(client.clone(), &ns);
    assert!(
        api.get_opt(&rr.name_any()).await.unwrap().is_none(),
        "the request is removed once read"
    );

    // A catalog that did not verify: the agent's reason and message, and a failure.
    let (child, rr) = backups_started(&client, &ns, &["--policy", "shop", "--location", loc]).await;
    let message = TerminationMessage {
        summary: summary(false),
        checks_report: None,
        catalog: None,
        point_in_time: None,
    };
    catalog_pod_ends(&client, &ns, &rr.name_any(), &message.to_json().unwrap()).await;
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("IntegrityCheckFailed") && err.contains("moved from another place"),
        "{err}"
    );
    assert!(api.get_opt(&rr.name_any()).await.unwrap().is_none());
}
