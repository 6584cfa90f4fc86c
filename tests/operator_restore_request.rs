//! The RestoreRequest controller on the real control plane: `latest` resolves to the policy's
//! newest good backups and the plan shows in status; with `execute: true` one restore Job per
//! asset runs in order, then the validation Job; the achieved RTO lands in status; a finished
//! request never runs again; what cannot work yet is reported with a reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/harness.rs"]
mod harness;

use harness::{Harness, harness};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use lifeboat_api::RestoreRequest;
use lifeboat_api::agent_result::{
    AgentSummary, ErrorClass, PointInTimePlan, SUMMARY_VERSION, TerminationMessage, Verb,
};
use lifeboat_api::conditions::{find, types};
use lifeboat_api::restore_request::{CheckResult, RestorePhase, StepState};
use serde_json::{Value, json};

fn policy_spec() -> Value {
    json!({
        "schedule": "0 * * * *",
        "assets": [
            {"name": "orders-db", "postgres": {"host": "db", "user": "backup", "databases": ["orders"]}},
            {"name": "sessions", "redis": {"host": "cache"}}
        ],
        "retention": {"maxAge": "7d"},
        "destination": {"volume": {"claimName": "backups"}}
    })
}

fn summary(verb: Verb, asset: &str, ok: bool, checks: Vec<CheckResult>) -> AgentSummary {
    let t = Timestamp::now();
    AgentSummary {
        version: SUMMARY_VERSION,
        verb,
        ok,
        asset: Some(asset.into()),
        backup_id: (verb == Verb::Backup).then(|| format!("20261124T0900{asset}")),
        started_at: t,
        finished_at: t,
        snapshot_time: (verb == Verb::Backup).then_some(t),
        stored_bytes: Some(2048),
        sha256: Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into()),
        error_class: (!ok).then_some(ErrorClass::Validation),
        message: (!ok).then(|| "1 of 1 checks failed".into()),
        checks,
        retention_refused: None,
        copies: Vec::new(),
    }
}

/// A policy with a good backup of each asset, made the way production makes one.
async fn policy_with_backups(h: &Harness) {
    h.apply_policy("shop", policy_spec()).await;
    h.policy_until("shop", "a first status", |p| p.status.is_some())
        .await;
    h.api::<lifeboat_api::BackupPolicy>()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"lifeboat.dev/backup-now": "seed"}}}),
            ),
        )
        .await
        .unwrap();
    for asset in ["orders-db", "sessions"] {
        let job = lifeboat_operator::names::backup_now_job("shop", asset, "seed");
        h.until("the on-demand Job", async || {
            h.api::<Job>().get_opt(&job).await.unwrap()
        })
        .await;
        h.finish_job(&job, &summary(Verb::Backup, asset, true, vec![]))
            .await;
    }
    h.policy_until("shop", "both backups in status", |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.assets.iter().all(|a| a.last_success.is_some()))
    })
    .await;
}

async fn apply_restore(h: &Harness, name: &str, spec: Value) {
    let obj = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest", "metadata": {"name": name}, "spec": spec});
    h.api::<RestoreRequest>()
        .patch(name, &PatchParams::apply("test-user"), &Patch::Apply(&obj))
        .await
        .unwrap();
}

async fn restore_until(
    h: &Harness,
    what: &str,
    name: &str,
    f: impl Fn(&RestoreRequest) -> bool,
) -> RestoreRequest {
    let api = h.api::<RestoreRequest>();
    h.until(what, async || {
        api.get_opt(name).await.unwrap().filter(|r| f(r))
    })
    .await
}

fn phase(r: &RestoreRequest) -> RestorePhase {
    r.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

fn restore_spec(execute: bool) -> Value {
    json!({
        "source": {"policy": "shop", "backupId": "latest"},
        "targets": [{"asset": "orders-db", "postgres": {"host": "staging-db", "user": "restore", "database": "orders_copy"}}],
        "execute": execute,
        "validation": {"checks": [{"name": "orders-present", "sql": {"asset": "orders-db", "query": "SELECT count(*) > 0 FROM orders", "expect": "t"}}]}
    })
}

#[tokio::test]
async fn plan_first_then_restore_in_order_validate_and_measure_the_rto() {
    let h = harness("rr-flow").await;
    policy_with_backups(&h).await;

    apply_restore(&h, "to-staging", restore_spec(false)).await;
    let rr = restore_until(&h, "the plan", "to-staging", |r| {
        phase(r) == RestorePhase::Planned
    })
    .await;
    let status = rr.status.unwrap();
    assert_eq!(
        status.plan.len(),
        2,
        "every asset of the policy, in its order"
    );
    assert_eq!(status.plan[0].asset, "orders-db");
    assert_eq!(
        status.plan[0].backup_id, "20261124T0900orders-db",
        "latest resolved from the policy"
    );
    assert_eq!(
        status.plan[0].target,
        "postgres://staging-db:5432/orders_copy"
    );
    assert!(status.plan[0].sha256.is_some());
    assert!(
        status.plan[1]
            .target
            .starts_with("original source redis://cache:6379")
    );
    assert!(
        h.api::<Job>()
            .list(&ListParams::default().labels("lifeboat.dev/restore"))
            .await
            .unwrap()
            .items
            .is_empty(),
        "plan only: no Job"
    );

    apply_restore(&h, "to-staging", restore_spec(true)).await;
    let first =
        lifeboat_operator::restore_request::progress::restore_job_name("to-staging", "orders-db");
    let second =
        lifeboat_operator::restore_request::progress::restore_job_name("to-staging", "sessions");
    let jobs = h.api::<Job>();
    let job = h
        .until("the first restore Job", async || {
            jobs.get_opt(&first).await.unwrap()
        })
        .await;
    assert_eq!(job.owner_references()[0].kind, "RestoreRequest");
    let args = job
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap();
    assert_eq!(args, ["restore", "--execute"]);
    assert!(
        jobs.get_opt(&second).await.unwrap().is_none(),
        "assets are restored one after the other"
    );
    // The Job is applied before the status is written: wait for the write.
    restore_until(&h, "phase Restoring", "to-staging", |r| {
        phase(r) == RestorePhase::Restoring
    })
    .await;

    h.finish_job(&first, &summary(Verb::Restore, "orders-db", true, vec![]))
        .await;
    h.until("the second restore Job", async || {
        jobs.get_opt(&second).await.unwrap()
    })
    .await;
    // A finished step's Job deleted while the request runs (by a person, a clean-up script, the
    // Job TTL) is not run again: its outcome is in status, not in the Job.
    let done_uid = jobs.get(&first).await.unwrap().uid();
    jobs.delete(&first, &DeleteParams::background())
        .await
        .unwrap();
    h.api::<RestoreRequest>()
        .patch(
            "to-staging",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"poke": "0"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let again = jobs.get_opt(&first).await.unwrap();
    assert!(
        again.as_ref().is_none_or(|j| j.uid() == done_uid),
        "the finished restore step ran again: {:?}",
        again.map(|j| j.uid())
    );
    let r = h.api::<RestoreRequest>().get("to-staging").await.unwrap();
    assert_eq!(phase(&r), RestorePhase::Restoring);
    assert_eq!(
        r.status.unwrap().plan[0].state,
        Some(StepState::Done),
        "the first asset's outcome is kept"
    );
    // The Redis asset has no dataDir: its restore pod, admitted under Pod Security "restricted"
    // by the Job controller, listens on a named port and learns its own IP from the kubelet.
    let pods = h.api::<Pod>();
    let selector = format!("batch.kubernetes.io/job-name={second}");
    let pod = h
        .until("the Redis restore pod", async || {
            pods.list(&ListParams::default().labels(&selector))
                .await
                .unwrap()
                .items
                .pop()
        })
        .await;
    let agent = &pod.spec.as_ref().unwrap().containers[0];
    let ip = agent
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == lifeboat_api::agent_job::POD_IP_ENV)
        .unwrap();
    assert_eq!(
        ip.value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "status.podIP"
    );
    let port = &agent.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.container_port),
        (
            Some("redis-load"),
            i32::from(lifeboat_api::agent_job::REDIS_LOAD_PORT)
        )
    );
    h.finish_job(&second, &summary(Verb::Restore, "sessions", true, vec![]))
        .await;
    let validate = lifeboat_operator::restore_request::progress::validate_job_name("to-staging");
    h.until("the validation Job", async || {
        jobs.get_opt(&validate).await.unwrap()
    })
    .await;
    let passed = CheckResult {
        name: "orders-present".into(),
        passed: true,
        message: String::new(),
        attempts: 1,
        duration_seconds: 0.1,
        canary: None,
    };
    h.finish_job(
        &validate,
        &summary(Verb::Restore, "validation", true, vec![passed]),
    )
    .await;

    let rr = restore_until(&h, "Succeeded", "to-staging", |r| {
        phase(r) == RestorePhase::Succeeded
    })
    .await;
    let status = rr.status.unwrap();
    let rto = status.rto_seconds.unwrap();
    assert!(rto > 0.0 && rto < 120.0, "rto {rto}");
    assert!(status.started_at.is_some() && status.finished_at.is_some());
    assert_eq!(status.checks.len(), 1);
    assert!(status.checks[0].passed);
    assert!(status.plan.iter().all(|p| p.state == Some(StepState::Done)));
    let ready = find(&status.conditions, types::READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Succeeded")
    );
    h.expect_events("RestoreSucceeded", 1).await;

    // Finished means finished: its Jobs deleted, nothing runs again.
    jobs.delete(&second, &DeleteParams::background())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    h.api::<RestoreRequest>()
        .patch(
            "to-staging",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"poke": "1"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        jobs.get_opt(&second)
            .await
            .unwrap()
            .is_none_or(|j| j.metadata.deletion_timestamp.is_some())
    );
    assert_eq!(
        phase(&h.api::<RestoreRequest>().get("to-staging").await.unwrap()),
        RestorePhase::Succeeded
    );
}

#[tokio::test]
async fn a_failing_check_fails_the_request_with_the_check_named() {
    let h = harness("rr-check").await;
    policy_with_backups(&h).await;
    let mut spec = restore_spec(true);
    spec["assets"] = json!(["orders-db"]);
    apply_restore(&h, "bad-data", spec).await;
    let jobs = h.api::<Job>();
    let restore =
        lifeboat_operator::restore_request::progress::restore_job_name("bad-data", "orders-db");
    h.until("the restore Job", async || {
        jobs.get_opt(&restore).await.unwrap()
    })
    .await;
    h.finish_job(&restore, &summary(Verb::Restore, "orders-db", true, vec![]))
        .await;
    let validate = lifeboat_operator::restore_request::progress::validate_job_name("bad-data");
    h.until("the validation Job", async || {
        jobs.get_opt(&validate).await.unwrap()
    })
    .await;
    let failed = CheckResult {
        name: "orders-present".into(),
        passed: false,
        message: "expected t, got f".into(),
        attempts: 5,
        duration_seconds: 300.0,
        canary: None,
    };
    h.finish_job(
        &validate,
        &summary(Verb::Restore, "validation", false, vec![failed]),
    )
    .await;
    let rr = restore_until(&h, "Failed", "bad-data", |r| {
        phase(r) == RestorePhase::Failed
    })
    .await;
    let status = rr.status.unwrap();
    let ready = find(&status.conditions, types::READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ValidationFailed")
    );
    assert!(
        ready.message.contains("orders-present: expected t, got f"),
        "{}",
        ready.message
    );
    assert!(
        status.rto_seconds.is_some(),
        "a failed restore still records how long it took"
    );
    // The counts of every check, read from the agent's termination message.
    let counts = status.checks_report.expect("checksReport");
    assert_eq!((counts.passed, counts.failed, counts.omitted), (0, 1, 0));
    h.expect_events("RestoreFailed", 1).await;
}

#[tokio::test]
async fn what_cannot_be_restored_yet_is_reported_with_a_reason() {
    let h = harness("rr-wait").await;
    apply_restore(&h, "no-policy", restore_spec(true)).await;
    let rr = restore_until(&h, "PolicyNotFound", "no-policy", |r| {
        r.status
            .as_ref()
            .and_then(|s| find(&s.conditions, types::READY))
            .is_some_and(|c| c.reason == "PolicyNotFound")
    })
    .await;
    assert_eq!(phase(&rr), RestorePhase::Pending);
    // The policy exists but has never backed up: NoBackupYet, and no Job.
    h.apply_policy("shop", policy_spec()).await;
    restore_until(&h, "NoBackupYet", "no-policy", |r| {
        r.status
            .as_ref()
            .and_then(|s| find(&s.conditions, types::READY))
            .is_some_and(|c| c.reason == "NoBackupYet")
    })
    .await;
    assert!(
        h.api::<Job>()
            .list(&ListParams::default().labels("lifeboat.dev/restore"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn a_restarted_operator_converges_without_duplicating_work() {
    // First operator: starts the restore; it is stopped while the first restore Job runs.
    let h = harness("rr-restart").await;
    policy_with_backups(&h).await;
    apply_restore(&h, "mid-flight", restore_spec(true)).await;
    let first =
        lifeboat_operator::restore_request::progress::restore_job_name("mid-flight", "orders-db");
    let jobs = h.api::<Job>();
    let job = h
        .until("the first restore Job", async || {
            jobs.get_opt(&first).await.unwrap()
        })
        .await;
    let uid = job.uid().unwrap();
    let h2 = h.restart().await;
    // The second operator finds the same Job (same name, same uid: not recreated) and goes on.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(jobs.get(&first).await.unwrap().uid().unwrap(), uid);
    h2.finish_job(&first, &summary(Verb::Restore, "orders-db", true, vec![]))
        .await;
    let second =
        lifeboat_operator::restore_request::progress::restore_job_name("mid-flight", "sessions");
    h2.until("the second restore Job", async || {
        jobs.get_opt(&second).await.unwrap()
    })
    .await;
    h2.finish_job(&second, &summary(Verb::Restore, "sessions", true, vec![]))
        .await;
    let validate = lifeboat_operator::restore_request::progress::validate_job_name("mid-flight");
    h2.until("the validation Job", async || {
        jobs.get_opt(&validate).await.unwrap()
    })
    .await;
    let check = CheckResult {
        name: "orders-present".into(),
        passed: true,
        message: String::new(),
        attempts: 1,
        duration_seconds: 0.1,
        canary: None,
    };
    h2.finish_job(
        &validate,
        &summary(Verb::Restore, "validation", true, vec![check]),
    )
    .await;
    let rr = restore_until(&h2, "Succeeded", "mid-flight", |r| {
        phase(r) == RestorePhase::Succeeded
    })
    .await;
    assert!(rr.status.unwrap().rto_seconds.is_some());
    let restore_jobs = jobs
        .list(&ListParams::default().labels("lifeboat.dev/restore"))
        .await
        .unwrap()
        .items;
    assert_eq!(
        restore_jobs.len(),
        3,
        "two restores and one validation, none twice"
    );
    // A third start after the end changes nothing: a finished request never runs again.
    let h3 = h2.restart().await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        jobs.list(&ListParams::default().labels("lifeboat.dev/restore"))
            .await
            .unwrap()
            .items
            .len(),
        3
    );
    assert_eq!(h3.events("RestoreSucceeded").await.len(), 1);
}

fn job_document(job: &Job) -> Value {
    let env = job
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .env
        .clone()
        .unwrap();
    let doc = env.iter().find(|e| e.name == "LIFEBOAT_JOB").unwrap();
    serde_json::from_str(doc.value.as_deref().unwrap()).unwrap()
}

fn job_args(job: &Job) -> Vec<String> {
    job.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap()
}

#[tokio::test]
async fn a_failed_validation_rolls_the_target_back_to_its_safety_backup() {
    use lifeboat_operator::restore_request::progress::{
        restore_job_name, rollback_job_name, safety_job_name, validate_job_name,
    };
    let h = harness("rr-rollback").await;
    policy_with_backups(&h).await;
    let mut spec = restore_spec(true);
    spec["assets"] = json!(["orders-db"]);
    spec["rollbackOnFailure"] = json!(true);
    apply_restore(&h, "careful", spec).await;
    let jobs = h.api::<Job>();

    // First a backup of what is in the target now, before anything touches it.
    let safety_name = safety_job_name("careful", "orders-db");
    let safety = h
        .until("the safety backup Job", async || {
            jobs.get_opt(&safety_name).await.unwrap()
        })
        .await;
    assert_eq!(job_args(&safety), ["backup"]);
    let doc = job_document(&safety);
    assert_eq!(
        doc["policy"], "shop_safety",
        "never mixed with the policy's own backups"
    );
    assert_eq!(
        doc["asset"]["postgres"]["host"], "staging-db",
        "the target, not the source"
    );
    assert_eq!(
        doc["asset"]["postgres"]["databases"],
        json!(["orders_copy"])
    );
    assert!(
        jobs.get_opt(&restore_job_name("careful", "orders-db"))
            .await
            .unwrap()
            .is_none(),
        "no restore before the safety backup is done"
    );
    restore_until(&h, "phase SafetyBackup", "careful", |r| {
        phase(r) == RestorePhase::SafetyBackup
    })
    .await;
    let mut safety_summary = summary(Verb::Backup, "orders-db", true, vec![]);
    safety_summary.backup_id = Some("20261124T1000safety".into());
    h.finish_job(&safety_name, &safety_summary).await;

    let restore = restore_job_name("careful", "orders-db");
    h.until("the restore Job", async || {
        jobs.get_opt(&restore).await.unwrap()
    })
    .await;
    h.finish_job(&restore, &summary(Verb::Restore, "orders-db", true, vec![]))
        .await;
    let validate = validate_job_name("careful");
    h.until("the validation Job", async || {
        jobs.get_opt(&validate).await.unwrap()
    })
    .await;
    let failed = CheckResult {
        name: "orders-present".into(),
        passed: false,
        message: "expected t, got f".into(),
        attempts: 3,
        duration_seconds: 30.0,
        canary: None,
    };
    h.finish_job(
        &validate,
        &summary(Verb::Restore, "validation", false, vec![failed]),
    )
    .await;

    // Validation failed: the safety backup goes back into the target.
    let rollback_name = rollback_job_name("careful", "orders-db");
    let rollback = h
        .until("the rollback Job", async || {
            jobs.get_opt(&rollback_name).await.unwrap()
        })
        .await;
    assert_eq!(job_args(&rollback), ["restore", "--execute"]);
    let doc = job_document(&rollback);
    assert_eq!(doc["policy"], "shop_safety");
    assert_eq!(doc["backupId"], "20261124T1000safety");
    assert_eq!(doc["asset"]["postgres"]["host"], "staging-db");
    assert!(
        doc["target"].is_null(),
        "the safety asset's source is the target"
    );
    assert_eq!(doc["options"]["clean"], true);
    restore_until(&h, "phase RollingBack", "careful", |r| {
        phase(r) == RestorePhase::RollingBack
    })
    .await;
    h.finish_job(
        &rollback_name,
        &summary(Verb::Restore, "orders-db", true, vec![]),
    )
    .await;

    let rr = restore_until(&h, "RolledBack", "careful", |r| {
        phase(r) == RestorePhase::RolledBack
    })
    .await;
    let status = rr.status.unwrap();
    assert_eq!(status.safety_backups.as_deref(), Some("shop_safety"));
    assert_eq!(
        status.plan[0].safety_backup_id.as_deref(),
        Some("20261124T1000safety")
    );
    assert_eq!(status.plan[0].rollback, Some(StepState::Done));
    let ready = find(&status.conditions, types::READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "RolledBack")
    );
    assert!(
        ready.message.contains("orders-present: expected t, got f"),
        "{}",
        ready.message
    );
    h.expect_events("RestoreRolledBack", 1).await;
    h.expect_events("RollbackStarted", 1).await;
}

#[tokio::test]
async fn a_rollback_of_kubernetes_state_is_refused_with_a_reason() {
    let h = harness("rr-norollback").await;
    let mut spec = policy_spec();
    spec["assets"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "objects", "kubernetesState": {"namespaces": ["shop"]}}));
    h.apply_policy("shop", spec).await;
    apply_restore(
        &h,
        "objects-back",
        json!({"source": {"policy": "shop", "backupId": "20261124T090000Z"}, "assets": ["objects"],
               "execute": true, "rollbackOnFailure": true}),
    )
    .await;
    let rr = restore_until(&h, "RollbackUnsupported", "objects-back", |r| {
        r.status
            .as_ref()
            .and_then(|s| find(&s.conditions, types::READY))
            .is_some_and(|c| c.reason == "RollbackUnsupported")
    })
    .await;
    let ready = find(&rr.status.unwrap().conditions, types::READY)
        .unwrap()
        .clone();
    assert!(ready.message.contains("objects"), "{}", ready.message);
    assert!(
        h.api::<Job>()
            .list(&ListParams::default().labels("lifeboat.dev/restore"))
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing started"
    );
}

/// Effects come after the status write that records them (issue #19): while the API server
/// refuses every status write of this namespace's RestoreRequests (an admission policy playing a
/// failing etcd or a conflict), the controller retries and publishes nothing; once writes go
/// through, the Warning it owes is published once, although each retry decided it anew with a
/// new transition time (the Event's id).
#[tokio::test]
async fn a_failed_status_write_then_a_retry_publishes_the_event_once() {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    use k8s_openapi::api::core::v1::Event;

    let h = harness("rr-once").await;
    let name = format!("{}-refuse-restore-status", h.ns);
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": h.ns}},
                "resourceRules": [{"apiGroups": ["lifeboat.dev"], "apiVersions": ["*"],
                    "operations": ["UPDATE"], "resources": ["restorerequests/status"]}]
            },
            "validations": [{"expression": "false", "message": "status writes refused by the test"}]
        }
    }))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]}
    }))
    .unwrap();
    let policies = kube::Api::<ValidatingAdmissionPolicy>::all(h.client.clone());
    let bindings = kube::Api::<ValidatingAdmissionPolicyBinding>::all(h.client.clone());
    policies.create(&Default::default(), &policy).await.unwrap();
    bindings
        .create(&Default::default(), &binding)
        .await
        .unwrap();

    // The policy is in force once a status write of a probe request is refused.
    apply_restore(&h, "probe", restore_spec(false)).await;
    let probe_status = json!({"status": {"phase": "Pending"}});
    h.until("the admission policy in force", async || {
        h.api::<RestoreRequest>()
            .patch_status(
                "probe",
                &PatchParams::default().dry_run(),
                &Patch::Merge(&probe_status),
            )
            .await
            .err()
            .filter(|e| e.to_string().contains("status writes refused by the test"))
    })
    .await;

    let failed = || {
        h.metrics
            .reconcile_errors
            .with_label_values(&["RestoreRequest", "ApplyStatusFailed"])
            .get()
    };
    let before = failed();
    apply_restore(&h, "lost", restore_spec(true)).await;
    // The request is decided (PolicyNotFound owes a Warning) and written at least twice: the
    // first write and a retry, both refused.
    h.until("two refused status writes", async || {
        (failed() >= before + 2).then_some(())
    })
    .await;
    let about_lost = async || {
        h.api::<Event>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| {
                e.involved_object.name.as_deref() == Some("lost")
                    && e.reason.as_deref() == Some("PolicyNotFound")
            })
            .count()
    };
    assert_eq!(
        about_lost().await,
        0,
        "an Event before its status was written"
    );
    let rr = h.api::<RestoreRequest>().get("lost").await.unwrap();
    assert!(rr.status.is_none(), "{:?}", rr.status);

    bindings
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    policies
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    restore_until(&h, "PolicyNotFound written", "lost", |r| {
        r.status
            .as_ref()
            .and_then(|s| find(&s.conditions, types::READY))
            .is_some_and(|c| c.reason == "PolicyNotFound")
    })
    .await;
    h.until("the owed Warning", async || {
        (about_lost().await == 1).then_some(())
    })
    .await;
    // Later passes (and the status write that clears the owed list) publish nothing more.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(about_lost().await, 1, "PolicyNotFound Events about lost");
    let rr = h.api::<RestoreRequest>().get("lost").await.unwrap();
    assert!(rr.status.unwrap().pending_events.is_empty());
}

/// A policy whose `orders-db` archives its WAL (`pointInTime`), with one base backup recorded
/// the way production records one.
async fn point_in_time_policy(h: &Harness) {
    let mut spec = policy_spec();
    spec["assets"][0]["postgres"]["pointInTime"] = json!({"user": "archiver"});
    spec["assets"][0]["canary"] = json!(true);
    h.apply_policy("shop", spec).await;
    h.policy_until("shop", "a first status", |p| p.status.is_some())
        .await;
    h.api::<lifeboat_api::BackupPolicy>()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"lifeboat.dev/backup-now": "seed"}}}),
            ),
        )
        .await
        .unwrap();
    let job = lifeboat_operator::names::backup_now_job("shop", "orders-db", "seed");
    h.until("the on-demand Job", async || {
        h.api::<Job>().get_opt(&job).await.unwrap()
    })
    .await;
    h.finish_job(&job, &summary(Verb::Backup, "orders-db", true, vec![]))
        .await;
    h.policy_until("shop", "the base backup in status", |p| {
        p.status.as_ref().is_some_and(|s| {
            s.assets
                .iter()
                .any(|a| a.name == "orders-db" && a.last_success.is_some())
        })
    })
    .await;
}

fn point_in_time_spec(data_volume: Value, execute: bool) -> Value {
    json!({
        "source": {"policy": "shop"}, "assets": ["orders-db"], "execute": execute,
        "targets": [{"asset": "orders-db", "dataVolume": data_volume}]
    })
}

/// The request's point-in-time plan Job, once the operator made it.
async fn plan_job(h: &Harness, rr: &str) -> Job {
    let jobs = h.api::<Job>();
    let selector = format!("lifeboat.dev/restore={rr},lifeboat.dev/role=plan");
    h.until("the plan Job", async || {
        jobs.list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .into_iter()
            .next()
    })
    .await
}

fn ready_reason(r: &RestoreRequest) -> Option<String> {
    r.status
        .as_ref()
        .and_then(|s| find(&s.conditions, types::READY))
        .map(|c| c.reason.clone())
}

/// A point-in-time restore through the operator: admission refuses a subPath that climbs out,
/// root, a time that is not RFC 3339, and a second target kind; the plan names the PVC and the
/// time; executing runs one restore Job as the server's UID with the PVC mounted (in a
/// namespace enforcing Pod Security "restricted", under the chart's admission policy), and no
/// validation Job (nothing serves the new data directory yet). Rollback and checks of that
/// asset are refused with a reason, before any Job.
#[tokio::test]
async fn a_point_in_time_restore_runs_as_the_servers_uid_into_a_new_data_volume() {
    let h = harness("rr-pitr").await;
    harness::enforce_restricted_pod_security(&h.client, &h.ns).await;
    point_in_time_policy(&h).await;

    let good = json!({"claimName": "pgdata-restored", "subPath": "pgdata", "runAsUser": 999,
                      "pointInTime": "2026-12-01T02:30:00.250Z"});
    let api = h.api::<RestoreRequest>();
    for (field, bad) in [
        ("subPath", json!("../escape")),
        ("subPath", json!("/var/lib/postgresql")),
        ("runAsUser", json!(0)),
        ("pointInTime", json!("yesterday")),
        ("pointInTime", json!("2026-12-01 02:30:00")),
    ] {
        let mut dv = good.clone();
        dv[field] = bad.clone();
        let obj = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
                         "metadata": {"name": "refused"}, "spec": point_in_time_spec(dv, false)});
        let r = api
            .patch(
                "refused",
                &PatchParams::apply("test-user"),
                &Patch::Apply(&obj),
            )
            .await;
        match r {
            Err(kube::Error::Api(e)) if e.code == 422 => {}
            other => panic!("{field}: {bad}: {other:?}"),
        }
    }
    let mut two = point_in_time_spec(good.clone(), false);
    two["targets"][0]["postgres"] = json!({"host": "db", "user": "restore"});
    let obj = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
                     "metadata": {"name": "refused"}, "spec": two});
    assert!(
        api.patch(
            "refused",
            &PatchParams::apply("test-user"),
            &Patch::Apply(&obj)
        )
        .await
        .is_err(),
        "two target kinds accepted"
    );

    // The plan: a Job of the agent chooses the base backup and WAL (the operator reads no
    // store); it writes nothing, so it mounts no target and runs as the platform's UID.
    apply_restore(&h, "to-instant", point_in_time_spec(good.clone(), false)).await;
    let planning = plan_job(&h, "to-instant").await;
    assert_eq!(job_args(&planning), ["restore"]);
    assert_eq!(job_document(&planning)["target"]["dataVolume"], good);
    let pod = planning.spec.clone().unwrap().template.spec.unwrap();
    assert_ne!(pod.security_context.unwrap().run_as_user, Some(999));
    assert!(
        pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .all(|m| m.mount_path != "/var/lib/lifeboat/restore")
    );
    let r = h.api::<RestoreRequest>().get("to-instant").await.unwrap();
    assert_eq!(ready_reason(&r).as_deref(), Some("PlanningPointInTime"));
    let chosen = PointInTimePlan {
        base_backup_id: "20261201T020000Z".into(),
        timeline: 1,
        first_segment: Some("000000010000000000000003".into()),
        last_segment: Some("000000010000000000000005".into()),
        segments: 3,
        partial: true,
        recovers_to: Some("2026-12-01T02:30:00.250Z".parse().unwrap()),
    };
    let mut report = summary(Verb::Restore, "orders-db", true, vec![]);
    report.backup_id = Some(chosen.base_backup_id.clone());
    h.finish_job_with(
        &planning.name_any(),
        &TerminationMessage {
            summary: report,
            checks_report: None,
            catalog: None,
            point_in_time: Some(chosen.clone()),
        },
    )
    .await;
    let rr = restore_until(&h, "the plan", "to-instant", |r| {
        phase(r) == RestorePhase::Planned
    })
    .await;
    let plan = &rr.status.unwrap().plan;
    assert_eq!(
        plan[0].target,
        "pvc/pgdata-restored/pgdata (UID 999), recovering to 2026-12-01T02:30:00.250Z from the base backup before it"
    );
    assert_eq!(plan[0].point_in_time.as_ref(), Some(&chosen));
    assert_eq!(plan[0].backup_id, "20261201T020000Z");
    let restores = ListParams::default().labels("lifeboat.dev/role=restore");
    assert!(
        h.api::<Job>()
            .list(&restores)
            .await
            .unwrap()
            .items
            .is_empty()
    );

    apply_restore(&h, "to-instant", point_in_time_spec(good.clone(), true)).await;
    let name =
        lifeboat_operator::restore_request::progress::restore_job_name("to-instant", "orders-db");
    let jobs = h.api::<Job>();
    let job = h
        .until("the restore Job", async || {
            jobs.get_opt(&name).await.unwrap()
        })
        .await;
    assert_eq!(job_args(&job), ["restore", "--execute"]);
    assert_eq!(job_document(&job)["target"]["dataVolume"], good);
    let pod = job.spec.unwrap().template.spec.unwrap();
    let ids = pod.security_context.unwrap();
    assert_eq!(
        (ids.run_as_user, ids.run_as_non_root),
        (Some(999), Some(true))
    );
    let mount = pod.containers[0]
        .volume_mounts
        .clone()
        .unwrap()
        .into_iter()
        .find(|m| m.mount_path == "/var/lib/lifeboat/restore")
        .unwrap();
    assert_eq!(
        mount.sub_path, None,
        "the agent makes the subPath, as UID 999"
    );
    let volume = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == mount.name)
        .unwrap();
    assert_eq!(
        volume.persistent_volume_claim.unwrap().claim_name,
        "pgdata-restored"
    );
    // The pod passes "restricted": the Job controller made it and the request finishes.
    h.finish_job(&name, &summary(Verb::Restore, "orders-db", true, vec![]))
        .await;
    let rr = restore_until(&h, "Succeeded", "to-instant", |r| {
        phase(r) == RestorePhase::Succeeded
    })
    .await;
    assert!(rr.status.unwrap().rto_seconds.is_some());
    let validations = ListParams::default().labels("lifeboat.dev/role=validate");
    assert!(
        jobs.list(&validations).await.unwrap().items.is_empty(),
        "no check of a data directory nothing serves"
    );

    // A time the archive cannot reach: the plan Job's failure, before anything is written.
    let mut late = good.clone();
    late["pointInTime"] = json!("latest");
    apply_restore(&h, "too-late", point_in_time_spec(late, false)).await;
    let planning = plan_job(&h, "too-late").await;
    let mut failed = summary(Verb::Restore, "orders-db", false, vec![]);
    failed.error_class = Some(ErrorClass::Integrity);
    failed.message = Some("segment 000000010000000000000004 is missing: a gap".into());
    h.finish_job(&planning.name_any(), &failed).await;
    let rr = restore_until(&h, "PointInTimeUnavailable", "too-late", |r| {
        ready_reason(r).as_deref() == Some("PointInTimeUnavailable")
    })
    .await;
    let ready = find(&rr.status.unwrap().conditions, types::READY)
        .unwrap()
        .clone();
    assert!(ready.message.contains("a gap"), "{}", ready.message);

    for (name, extra, reason) in [
        (
            "with-rollback",
            json!({"rollbackOnFailure": true}),
            "RollbackUnsupported",
        ),
        (
            "with-check",
            json!({"validation": {"checks": [{"name": "rows", "sql": {"asset": "orders-db",
                   "query": "SELECT 1", "expect": "1"}}]}}),
            "TargetUnsupported",
        ),
    ] {
        let mut spec = point_in_time_spec(good.clone(), true);
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        apply_restore(&h, name, spec).await;
        restore_until(&h, reason, name, |r| {
            ready_reason(r).as_deref() == Some(reason)
        })
        .await;
        let job = lifeboat_operator::restore_request::progress::restore_job_name(name, "orders-db");
        assert!(jobs.get_opt(&job).await.unwrap().is_none(), "{name}: a Job");
    }
}
