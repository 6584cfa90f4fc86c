//! Health as kstatus computes it (sigs.k8s.io/cli-utils' `status.Compute`: what Flux's health
//! checks and cli-utils-based waits report), built from its Go module by hack/tools/kstatus.sh
//! and run on what `kubectl get -o json` returns for objects the operator wrote on the real
//! control plane. kstatus reads `observedGeneration` and the conditions `Reconciling` and
//! `Stalled` only, never Ready.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use harness::{Harness, harness};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Patch, PatchParams};
use lifeboat_api::agent_result::{AgentSummary, ErrorClass, SUMMARY_VERSION, Verb};
use lifeboat_api::conditions::{find, types};
use lifeboat_api::restore_request::RestorePhase;
use lifeboat_api::{BackupPolicy, DrillSchedule, RestoreRequest};
use serde_json::{Value, json};

/// The kstatus command, built once into target/tools.
fn kstatus() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/tools/kstatus.sh");
    let out = Command::new("bash").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// kstatus' verdict and message for every Lifeboat object of the namespace, by `Kind/name`.
fn health(h: &Harness) -> BTreeMap<String, (String, String)> {
    let env = lifeboat_testenv::shared().unwrap();
    let mut get = Command::new(lifeboat_testenv::kubectl().unwrap());
    if let Some(k) = env.kubeconfig() {
        get.env("KUBECONFIG", k);
    }
    let listed = get
        .args([
            "get",
            "backuppolicies,restorerequests,drillschedules",
            "-o",
            "json",
            "-n",
        ])
        .arg(&h.ns)
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let mut run = Command::new(kstatus())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut run.stdin.take().unwrap(), &listed.stdout).unwrap();
    let out = run.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let object = parts.next().unwrap().to_owned();
            let status = parts.next().unwrap().to_owned();
            (
                object,
                (status, parts.next().unwrap_or_default().to_owned()),
            )
        })
        .collect()
}

/// Waits until kstatus says `want` of `object`; returns its message.
async fn until_health(h: &Harness, object: &str, want: &str) -> String {
    h.until(&format!("{object} {want}"), async || {
        health(h)
            .remove(object)
            .filter(|(status, _)| status == want)
            .map(|(_, message)| message)
    })
    .await
}

fn summary(verb: Verb, asset: &str, ok: bool) -> AgentSummary {
    let t = Timestamp::now();
    AgentSummary {
        version: SUMMARY_VERSION,
        verb,
        ok,
        asset: Some(asset.into()),
        backup_id: (verb == Verb::Backup && ok).then(|| format!("20261124T0900{asset}")),
        started_at: t,
        finished_at: t,
        snapshot_time: (verb == Verb::Backup && ok).then_some(t),
        stored_bytes: ok.then_some(2048),
        sha256: ok
            .then(|| "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into()),
        error_class: (!ok).then_some(ErrorClass::Storage),
        message: (!ok).then(|| "no space left on device".into()),
        checks: Vec::new(),
        retention_refused: None,
        copies: Vec::new(),
    }
}

fn policy_spec() -> Value {
    json!({
        "schedule": "0 * * * *",
        "assets": [{"name": "orders-db", "postgres": {"host": "db", "user": "backup", "databases": ["orders"]}}],
        "retention": {"maxAge": "7d"},
        "destination": {"volume": {"claimName": "backups"}}
    })
}

/// Runs an on-demand backup of `policy`'s one asset and finishes it `ok` or not.
async fn backup_now(h: &Harness, policy: &str, ok: bool) {
    h.api::<BackupPolicy>()
        .patch(
            policy,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"lifeboat.dev/backup-now": "t1"}}})),
        )
        .await
        .unwrap();
    let job = lifeboat_operator::names::backup_now_job(policy, "orders-db", "t1");
    h.until("the on-demand Job", async || {
        h.api::<Job>().get_opt(&job).await.unwrap()
    })
    .await;
    h.finish_job(&job, &summary(Verb::Backup, "orders-db", ok))
        .await;
}

async fn apply(h: &Harness, kind: &str, name: &str, spec: Value) {
    let obj = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec});
    let pp = PatchParams::apply("test-user");
    match kind {
        "RestoreRequest" => h
            .api::<RestoreRequest>()
            .patch(name, &pp, &Patch::Apply(&obj))
            .await
            .map(|_| ()),
        "DrillSchedule" => h
            .api::<DrillSchedule>()
            .patch(name, &pp, &Patch::Apply(&obj))
            .await
            .map(|_| ()),
        _ => unreachable!(),
    }
    .unwrap();
}

#[tokio::test]
async fn kstatus_reports_healthy_resources_current_failing_ones_failed_and_a_restore_in_progress() {
    let h = harness("kstatus").await;

    // A policy whose backups succeed: Current.
    h.apply_policy("shop", policy_spec()).await;
    h.policy_until("shop", "a first status", |p| p.status.is_some())
        .await;
    backup_now(&h, "shop", true).await;
    h.policy_until("shop", "its backup in status", |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.assets.iter().all(|a| a.last_success.is_some()))
    })
    .await;
    until_health(&h, "BackupPolicy/shop", "Current").await;

    // A policy whose backup failed: Failed, with Ready's message (before: Current, since
    // kstatus never reads Ready).
    h.apply_policy("broken", policy_spec()).await;
    h.policy_until("broken", "a first status", |p| p.status.is_some())
        .await;
    backup_now(&h, "broken", false).await;
    let message = until_health(&h, "BackupPolicy/broken", "Failed").await;
    assert!(message.contains("no space left on device"), "{message}");

    // A restore under way: InProgress (before: Current at once, so a GitOps tool waiting for
    // health moved on while the data was still being restored); then Current once it succeeded.
    apply(
        &h,
        "RestoreRequest",
        "to-staging",
        json!({
            "source": {"policy": "shop", "backupId": "latest"},
            "targets": [{"asset": "orders-db", "postgres": {"host": "staging-db", "user": "restore", "database": "orders_copy"}}],
            "execute": true
        }),
    )
    .await;
    let job =
        lifeboat_operator::restore_request::progress::restore_job_name("to-staging", "orders-db");
    h.until("the restore Job", async || {
        h.api::<Job>().get_opt(&job).await.unwrap()
    })
    .await;
    until_health(&h, "RestoreRequest/to-staging", "InProgress").await;
    h.finish_job(&job, &summary(Verb::Restore, "orders-db", true))
        .await;
    h.until("the restore succeeded", async || {
        h.api::<RestoreRequest>()
            .get("to-staging")
            .await
            .unwrap()
            .status
            .filter(|s| s.phase == RestorePhase::Succeeded)
    })
    .await;
    until_health(&h, "RestoreRequest/to-staging", "Current").await;

    // A restore that cannot run (its policy has no good backup): Failed.
    apply(
        &h,
        "RestoreRequest",
        "nothing-to-restore",
        json!({"source": {"policy": "broken", "backupId": "latest"}, "execute": true}),
    )
    .await;
    until_health(&h, "RestoreRequest/nothing-to-restore", "Failed").await;

    // A drill schedule waiting for its next drill: Current; one that would restore over its
    // source: Failed.
    let drill = json!({
        "schedule": "0 6 1 1,4,7,10 *",
        "policy": "shop",
        "assets": ["orders-db"],
        "staging": {"targets": [{"asset": "orders-db", "postgres": {"host": "staging-db", "user": "restore", "database": "orders"}}]},
        "backup": "Fresh",
        "objectives": {"rto": "30m", "rpo": "1h"}
    });
    apply(&h, "DrillSchedule", "quarterly", drill.clone()).await;
    until_health(&h, "DrillSchedule/quarterly", "Current").await;
    let mut over_prod = drill;
    over_prod["staging"]["targets"][0]["postgres"]["host"] = json!("db");
    apply(&h, "DrillSchedule", "over-prod", over_prod).await;
    let message = until_health(&h, "DrillSchedule/over-prod", "Failed").await;
    let ds = h.api::<DrillSchedule>().get("over-prod").await.unwrap();
    let ready = find(&ds.status.as_ref().unwrap().conditions, types::READY).unwrap();
    assert_eq!(ready.reason, "InvalidSpec");
    assert_eq!(message, ready.message, "kstatus shows Ready's message");

    // Everything at once, as a Flux Kustomization's health check would see the namespace.
    let all = health(&h);
    let verdicts: BTreeMap<&str, &str> = all
        .iter()
        .map(|(k, (s, _))| (k.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        verdicts,
        BTreeMap::from([
            ("BackupPolicy/broken", "Failed"),
            ("BackupPolicy/shop", "Current"),
            ("DrillSchedule/over-prod", "Failed"),
            ("DrillSchedule/quarterly", "Current"),
            ("RestoreRequest/nothing-to-restore", "Failed"),
            ("RestoreRequest/to-staging", "Current"),
        ])
    );
}
