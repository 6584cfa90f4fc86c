//! The API server restarted and etcd stopped under a running operator process: it must keep
//! running, reconnect, relist and converge, with no crash loop and nothing done twice. On a
//! control plane of its own (the shared one serves the other tests of the suite).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../tests/common/harness.rs"]
mod harness;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use lifeboat_api::agent_result::{AgentSummary, SUMMARY_VERSION, Verb};
use lifeboat_api::drill_schedule::DrillVerdict;
use lifeboat_api::restore_request::{CheckResult, RestorePhase};
use lifeboat_api::{DrillSchedule, RestoreRequest};
use lifeboat_operator::names::backup_now_job;
use lifeboat_operator::restore_request::progress::{restore_job_name, validate_job_name};
use lifeboat_testenv::ControlPlane;
use serde_json::json;

const NS: &str = "outage";

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn apply_policy(client: &Client, name: &str, schedule: &str) {
    let obj = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
        "metadata": {"name": name},
        "spec": {"schedule": schedule,
                 "assets": [{"name": "db", "postgres": {"host": "db", "user": "u", "databases": ["app"]}}],
                 "retention": {"keepLast": 3},
                 "destination": {"volume": {"claimName": "backups"}}}});
    Api::<lifeboat_api::BackupPolicy>::namespaced(client.clone(), NS)
        .patch(name, &PatchParams::apply("test-user"), &Patch::Apply(&obj))
        .await
        .unwrap();
}

/// The CronJob of `policy`'s asset once its schedule is `schedule`; the operator must still run.
async fn converged(client: &Client, op: &mut Operator, policy: &str, schedule: &str) -> String {
    let api = Api::<CronJob>::namespaced(client.clone(), NS);
    let name = format!("{policy}-db");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            op.0.try_wait().unwrap().is_none(),
            "the operator exited during the outage"
        );
        if let Ok(Some(cj)) = api.get_opt(&name).await
            && cj.spec.as_ref().map(|s| s.schedule.as_str()) == Some(schedule)
        {
            return cj.uid().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not converge to {schedule:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_operator_rides_out_an_api_server_restart_and_an_etcd_outage() {
    let mut cp = ControlPlane::start(true).await.unwrap();
    let client = cp.client().await.unwrap();
    lifeboat_testenv::install_crds(&client).await.unwrap();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&Default::default(), &ns)
        .await
        .unwrap();
    // The master signing key, here in the watched namespace (the operator's own, for this test).
    let master: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "master-key"},
        "data": {"key": k8s_openapi::ByteString(vec![7; 32])}
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), NS)
        .create(&Default::default(), &master)
        .await
        .unwrap();
    let mut op = Operator(
        Command::new(env!("CARGO_BIN_EXE_lifeboat-operator"))
            .args(["--namespace", NS, "--metrics-addr", "127.0.0.1:0"])
            .args(["--signing-key-secret", "master-key"])
            .env("POD_NAMESPACE", NS)
            .env("KUBECONFIG", cp.kubeconfig())
            .env("POD_NAME", "outage-test")
            // LIFEBOAT_TEST_OPERATOR_LOG=FILE keeps the operator's log.
            .stdout(match std::env::var_os("LIFEBOAT_TEST_OPERATOR_LOG") {
                Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
                None => Stdio::null(),
            })
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    apply_policy(&client, "before", "0 1 * * *").await;
    let before = converged(&client, &mut op, "before", "0 1 * * *").await;

    // The API server goes away for a few seconds (every watch breaks) and comes back.
    cp.stop_component("kube-apiserver").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    cp.start_component("kube-apiserver").await.unwrap();
    let back = Instant::now();
    let client = cp.client().await.unwrap();
    // A policy made after the restart, and a change to one made before: both need live watches.
    apply_policy(&client, "after-apiserver", "0 2 * * *").await;
    converged(&client, &mut op, "after-apiserver", "0 2 * * *").await;
    eprintln!(
        "API server restart: a new policy reconciled {:?} after it answered again",
        back.elapsed()
    );
    apply_policy(&client, "before", "0 3 * * *").await;
    assert_eq!(
        converged(&client, &mut op, "before", "0 3 * * *").await,
        before,
        "updated in place, not made again"
    );

    // etcd stops: the API server answers with errors until it is back.
    cp.stop_component("etcd").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    cp.start_component("etcd").await.unwrap();
    let back = Instant::now();
    apply_policy(&client, "after-etcd", "0 4 * * *").await;
    converged(&client, &mut op, "after-etcd", "0 4 * * *").await;
    eprintln!(
        "etcd outage: a new policy reconciled {:?} after the API server was ready again",
        back.elapsed()
    );
    // A CronJob edited behind the operator's back is put back: the CronJob watch is live too.
    Api::<CronJob>::namespaced(client.clone(), NS)
        .patch(
            "before-db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"schedule": "0 5 * * *"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        converged(&client, &mut op, "before", "0 3 * * *").await,
        before
    );

    let all = Api::<CronJob>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(all.len(), 3, "one CronJob per policy, none twice");
}

fn summary(verb: Verb, checks: Vec<CheckResult>) -> AgentSummary {
    let now = Timestamp::now();
    AgentSummary {
        version: SUMMARY_VERSION,
        verb,
        ok: true,
        asset: Some("db".into()),
        backup_id: (verb == Verb::Backup).then(|| format!("db-{}", now.as_second())),
        started_at: now,
        finished_at: now,
        snapshot_time: (verb == Verb::Backup).then_some(now),
        stored_bytes: Some(1024),
        sha256: Some("ab".repeat(32)),
        error_class: None,
        message: None,
        checks,
        retention_refused: None,
        copies: Vec::new(),
    }
}

/// A control plane of its own with the operator process watching `ns`, and a policy with one
/// good backup (a seed, its Job finished by the harness): what the in-flight outage tests start
/// from.
async fn seeded(ns: &str, pod: &str) -> (ControlPlane, Operator, harness::Harness) {
    let cp = ControlPlane::start(true).await.unwrap();
    let client = cp.client().await.unwrap();
    lifeboat_testenv::install_crds(&client).await.unwrap();
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&Default::default(), &namespace)
        .await
        .unwrap();
    let master: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "master-key"},
        "data": {"key": k8s_openapi::ByteString(vec![7; 32])}
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .create(&Default::default(), &master)
        .await
        .unwrap();
    let op = Operator(
        Command::new(env!("CARGO_BIN_EXE_lifeboat-operator"))
            .args(["--namespace", ns, "--metrics-addr", "127.0.0.1:0"])
            .args(["--signing-key-secret", "master-key"])
            .env("POD_NAMESPACE", ns)
            .env("KUBECONFIG", cp.kubeconfig())
            .env("POD_NAME", pod)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let h = harness::on(client.clone(), ns);
    h.apply_policy(
        "shop",
        json!({"schedule": "0 1 * * *",
               "assets": [{"name": "db", "postgres": {"host": "db", "user": "u", "databases": ["app"]}}],
               "retention": {"keepLast": 3},
               "destination": {"volume": {"claimName": "backups"}}}),
    )
    .await;
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
    let seed = backup_now_job("shop", "db", "seed");
    h.until("the seed Job", async || {
        h.api::<Job>().get_opt(&seed).await.unwrap()
    })
    .await;
    h.finish_job(&seed, &summary(Verb::Backup, vec![])).await;
    h.policy_until("shop", "the seed backup in status", |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.assets.iter().all(|a| a.last_success.is_some()))
    })
    .await;
    (cp, op, h)
}

/// The outages under a RestoreRequest `rr` in flight (its own, or a drill's), its Jobs finished
/// by the harness: the API server restarted while the restore Job of asset `db` runs, etcd
/// stopped while the validation runs, which then passes. The operator must still run. Returns
/// a harness with a client made after the restart.
async fn ride_out_outages(
    cp: &mut ControlPlane,
    op: &mut Operator,
    ns: &str,
    rr: &str,
) -> harness::Harness {
    cp.stop_component("kube-apiserver").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    cp.start_component("kube-apiserver").await.unwrap();
    let h = harness::on(cp.client().await.unwrap(), ns);
    h.finish_job(&restore_job_name(rr, "db"), &summary(Verb::Restore, vec![]))
        .await;
    let validate = validate_job_name(rr);
    h.until("the validation Job", async || {
        h.api::<Job>().get_opt(&validate).await.unwrap()
    })
    .await;

    // etcd stops while the validation runs: the API server answers with errors meanwhile.
    cp.stop_component("etcd").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    cp.start_component("etcd").await.unwrap();
    assert!(
        op.0.try_wait().unwrap().is_none(),
        "the operator exited during the outages"
    );
    let check = CheckResult {
        name: "rows".into(),
        passed: true,
        message: String::new(),
        attempts: 1,
        duration_seconds: 0.1,
        canary: None,
    };
    h.finish_job(&validate, &summary(Verb::Restore, vec![check]))
        .await;
    h
}

/// Issue #16: the API server restarted while a restore Job runs, and etcd stopped while the
/// validation runs. The request finishes `Succeeded`; no Job is made twice (each keeps its
/// uid); every Event is published exactly once.
#[tokio::test]
async fn a_restore_in_flight_rides_out_an_api_server_restart_and_an_etcd_outage() {
    const NS: &str = "outage-restore";
    let (mut cp, mut op, h) = seeded(NS, "outage-restore-test").await;

    let rr = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
        "metadata": {"name": "fix"},
        "spec": {"source": {"policy": "shop", "backupId": "latest"},
                 "targets": [{"asset": "db", "postgres": {"host": "copy", "user": "u", "database": "app"}}],
                 "execute": true,
                 "validation": {"checks": [{"name": "rows", "sql": {"asset": "db", "query": "SELECT 1", "expect": "1"}}]}}});
    h.api::<RestoreRequest>()
        .patch("fix", &PatchParams::apply("test-user"), &Patch::Apply(&rr))
        .await
        .unwrap();
    let restore = restore_job_name("fix", "db");
    let restore_uid = h
        .until("the restore Job", async || {
            h.api::<Job>().get_opt(&restore).await.unwrap()?.uid()
        })
        .await;

    let h = ride_out_outages(&mut cp, &mut op, NS, "fix").await;
    let done = h
        .until("the request succeeded", async || {
            h.api::<RestoreRequest>()
                .get("fix")
                .await
                .unwrap()
                .status
                .filter(|s| s.phase.is_finished())
        })
        .await;
    assert_eq!(done.phase, RestorePhase::Succeeded, "{done:?}");
    assert_eq!(
        h.api::<Job>().get(&restore).await.unwrap().uid(),
        Some(restore_uid),
        "the restore Job was made again"
    );
    let jobs = h.api::<Job>().list(&ListParams::default()).await.unwrap();
    let names: Vec<String> = jobs.items.iter().map(|j| j.name_any()).collect();
    assert_eq!(names.len(), 3, "seed, restore, validation: {names:?}");
    for reason in ["RestoreStarted", "ValidationStarted", "RestoreSucceeded"] {
        h.expect_events(reason, 1).await;
    }
}

/// Issue #16, the same outages under a drill in flight (mode `Latest`: the newest backup taken
/// before the drill restored into staging): the API server restarted while the drill's restore
/// Job runs, etcd stopped while its validation runs. The drill ends `Passed` with one history
/// entry; no Job or RestoreRequest is made twice; DrillStarted and DrillPassed once each.
#[tokio::test]
async fn a_drill_in_flight_rides_out_an_api_server_restart_and_an_etcd_outage() {
    const NS: &str = "outage-drill";
    let (mut cp, mut op, h) = seeded(NS, "outage-drill-test").await;

    let drill = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "DrillSchedule",
        "metadata": {"name": "quarterly"},
        "spec": {"schedule": "0 6 1 1,4,7,10 *", "policy": "shop", "assets": ["db"],
                 "staging": {"targets": [{"asset": "db", "postgres": {"host": "staging-db", "user": "u", "database": "app"}}]},
                 "validation": {"checks": [{"name": "rows", "sql": {"asset": "db", "query": "SELECT 1", "expect": "1"}}]},
                 "objectives": {"rto": "30m", "rpo": "15m"}}});
    let drills = h.api::<DrillSchedule>();
    drills
        .patch(
            "quarterly",
            &PatchParams::apply("test-user"),
            &Patch::Apply(&drill),
        )
        .await
        .unwrap();
    h.until("the drill's first status", async || {
        drills.get("quarterly").await.unwrap().status.map(|_| ())
    })
    .await;
    drills
        .patch(
            "quarterly",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"lifeboat.dev/drill-now": "d1"}}})),
        )
        .await
        .unwrap();
    let active = h
        .until("an active drill", async || {
            drills.get("quarterly").await.unwrap().status?.active
        })
        .await;
    let restore = restore_job_name(&active.id, "db");
    let restore_uid = h
        .until("the drill's restore Job", async || {
            h.api::<Job>().get_opt(&restore).await.unwrap()?.uid()
        })
        .await;
    let rr_uid = h
        .api::<RestoreRequest>()
        .get(&active.id)
        .await
        .unwrap()
        .uid();

    let h = ride_out_outages(&mut cp, &mut op, NS, &active.id).await;
    let drills = h.api::<DrillSchedule>();
    let status = h
        .until("the drill's record", async || {
            drills
                .get("quarterly")
                .await
                .unwrap()
                .status
                .filter(|s| s.last_run.is_some() && s.active.is_none())
        })
        .await;
    let run = status.last_run.clone().unwrap();
    assert_eq!(run.verdict, DrillVerdict::Passed, "{}", run.message);
    assert!(run.rpo_seconds.is_some(), "mode Latest measures the RPO");
    assert_eq!(status.history.len(), 1, "one drill recorded once");
    assert_eq!(
        h.api::<Job>().get(&restore).await.unwrap().uid(),
        Some(restore_uid),
        "the restore Job was made again"
    );
    assert_eq!(
        h.api::<RestoreRequest>()
            .get(&active.id)
            .await
            .unwrap()
            .uid(),
        rr_uid,
        "the drill's RestoreRequest was made again"
    );
    for reason in ["DrillStarted", "DrillPassed"] {
        h.expect_events(reason, 1).await;
    }
}
