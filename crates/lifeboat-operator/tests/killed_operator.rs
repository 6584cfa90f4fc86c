//! The operator process killed with SIGKILL in every phase of a drill (which covers a backup, a
//! restore and the drill itself), then started again: it converges to the right status with no
//! duplicate child, no lost result, no second restore of a finished request, and its metrics are
//! rebuilt from status alone (velero #1777: gauges that came back empty after a restart).
//!
//! The kubelet's part (pods ending with the agent's summary) is played by the shared harness, as
//! in the in-process operator tests; here the operator is the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../tests/common/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};
use lifeboat_api::agent_result::{AgentSummary, ErrorClass, SUMMARY_VERSION, Verb};
use lifeboat_api::drill_schedule::DrillVerdict;
use lifeboat_api::restore_request::{CheckResult, RestorePhase};
use lifeboat_api::{DrillSchedule, RestoreRequest};
use lifeboat_operator::names::backup_now_job;
use lifeboat_operator::restore_request::progress::{
    restore_job_name, rollback_job_name, safety_job_name, validate_job_name,
};
use serde_json::json;

/// The operator binary on the shared control plane, scoped to one namespace.
struct Operator {
    child: Child,
    metrics_port: u16,
    ns: String,
    starts: u32,
}

impl Operator {
    fn start(ns: &str) -> Operator {
        let (child, metrics_port) = spawn(ns, 0);
        Operator {
            child,
            metrics_port,
            ns: ns.to_owned(),
            starts: 1,
        }
    }

    /// SIGKILL, then a new process.
    fn kill_and_restart(&mut self, phase: &str) {
        eprintln!("kill -9 of the operator: {phase}");
        // std's Child::kill is SIGKILL: no shutdown hook, no final status write.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let (child, port) = spawn(&self.ns, self.starts);
        self.child = child;
        self.metrics_port = port;
        self.starts += 1;
    }

    fn metrics(&self) -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(ns: &str, generation: u32) -> (Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lifeboat-operator"));
    cmd.args(["--namespace", ns])
        // The master signing key the harness installed, in the chart's namespace.
        .args(["--signing-key-secret", harness::MASTER_KEY_SECRET])
        .env("POD_NAMESPACE", harness::CHART_NAMESPACE)
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{port}"))
        .env("POD_NAME", format!("killed-operator-{generation}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(kubeconfig) = lifeboat_testenv::shared().unwrap().kubeconfig() {
        cmd.env("KUBECONFIG", kubeconfig);
    }
    (cmd.spawn().unwrap(), port)
}

fn summary(verb: Verb, asset: &str, snapshot: Timestamp, checks: Vec<CheckResult>) -> AgentSummary {
    AgentSummary {
        version: SUMMARY_VERSION,
        verb,
        ok: true,
        asset: Some(asset.into()),
        backup_id: (verb == Verb::Backup).then(|| format!("{asset}-{}", snapshot.as_second())),
        started_at: snapshot,
        finished_at: Timestamp::now(),
        snapshot_time: (verb == Verb::Backup).then_some(snapshot),
        stored_bytes: Some(1024),
        sha256: Some("ab".repeat(32)),
        error_class: None,
        message: None,
        checks,
        retention_refused: None,
        copies: Vec::new(),
    }
}

/// Every Job and CronJob of the namespace by name, with its uid: a child deleted and made again
/// (or made twice) shows up as a changed or extra entry.
async fn children(h: &harness::Harness) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for j in h.api::<Job>().list(&ListParams::default()).await.unwrap() {
        out.insert(format!("job/{}", j.name_any()), j.uid().unwrap());
    }
    for c in h
        .api::<CronJob>()
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        out.insert(format!("cronjob/{}", c.name_any()), c.uid().unwrap());
    }
    for r in h
        .api::<RestoreRequest>()
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        out.insert(format!("restorerequest/{}", r.name_any()), r.uid().unwrap());
    }
    out
}

/// After a restart: what existed still exists with the same uid, and two seconds later nothing
/// has been added but what `allowed_new` names.
async fn assert_no_duplicates(
    h: &harness::Harness,
    before: &BTreeMap<String, String>,
    phase: &str,
) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = children(h).await;
    for (name, uid) in before {
        assert_eq!(
            after.get(name),
            Some(uid),
            "{name} was deleted or replaced after a kill {phase}"
        );
    }
}

#[tokio::test]
async fn killed_in_every_phase_of_a_drill_the_operator_converges_without_duplicates() {
    let h = harness::without_operator("killed").await;
    let mut op = Operator::start(&h.ns);

    // Phase 1: the resources applied, the operator killed before or while it acts on them.
    h.apply_policy(
        "shop",
        json!({
            "schedule": "0 * * * *",
            "assets": [
                {"name": "orders-db", "postgres": {"host": "db", "user": "backup", "databases": ["orders"]}},
                {"name": "sessions", "redis": {"host": "cache"}}
            ],
            "retention": {"maxAge": "7d"},
            "destination": {"volume": {"claimName": "backups"}},
            "objectives": {"rpo": "1h"}
        }),
    )
    .await;
    let drill = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "DrillSchedule",
    "metadata": {"name": "quarterly"},
    "spec": {
        "schedule": "0 6 1 1,4,7,10 *",
        "policy": "shop",
        "assets": ["orders-db", "sessions"],
        "staging": {"targets": [
            {"asset": "orders-db", "postgres": {"host": "staging-db", "user": "restore", "database": "orders"}},
            {"asset": "sessions", "redis": {"host": "staging-cache"}}
        ]},
        "validation": {"checks": [{"name": "orders-present", "sql": {"asset": "orders-db", "query": "SELECT 1", "expect": "1"}}]},
        "backup": "Fresh", "objectives": {"rto": "30m", "rpo": "15m"}
    }});
    let drills = h.api::<DrillSchedule>();
    drills
        .patch(
            "quarterly",
            &PatchParams::apply("test-user"),
            &Patch::Apply(&drill),
        )
        .await
        .unwrap();
    op.kill_and_restart("right after the policy and the drill were applied");

    // Phase 2: CronJobs and statuses written.
    let cronjobs = h.api::<CronJob>();
    h.until("two CronJobs", async || {
        (cronjobs
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len()
            == 2)
            .then_some(())
    })
    .await;
    h.until("the drill's first status", async || {
        drills.get("quarterly").await.unwrap().status.map(|_| ())
    })
    .await;
    let seen = children(&h).await;
    op.kill_and_restart("with the CronJobs made");
    assert_no_duplicates(&h, &seen, "with the CronJobs made").await;

    // Phase 3: a drill asked for; killed once its backup Jobs exist.
    drills
        .patch(
            "quarterly",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"lifeboat.dev/drill-now": "k1"}}})),
        )
        .await
        .unwrap();
    let active = h
        .until("an active drill", async || {
            drills.get("quarterly").await.unwrap().status?.active
        })
        .await;
    let jobs = h.api::<Job>();
    let backup_jobs: Vec<String> = ["orders-db", "sessions"]
        .iter()
        .map(|a| backup_now_job("shop", a, &active.id))
        .collect();
    for job in &backup_jobs {
        h.until("the drill's backup Job", async || {
            jobs.get_opt(job).await.unwrap()
        })
        .await;
    }
    let seen = children(&h).await;
    op.kill_and_restart("with the drill's backup Jobs running");
    assert_no_duplicates(&h, &seen, "with the backup Jobs running").await;

    // Phase 4: each backup finished, the operator killed right after (before or after it wrote
    // the result: either way the result must not be lost).
    let snapshot = active.started_at.0;
    for (job, asset) in backup_jobs.iter().zip(["orders-db", "sessions"]) {
        h.finish_job(job, &summary(Verb::Backup, asset, snapshot, vec![]))
            .await;
        op.kill_and_restart(&format!("right after the {asset} backup finished"));
    }
    h.policy_until("shop", "both drill backups in the policy's status", |p| {
        p.status.as_ref().is_some_and(|s| {
            s.assets.iter().all(|a| {
                a.last_success
                    .as_ref()
                    .is_some_and(|b| b.id.ends_with(&snapshot.as_second().to_string()))
            })
        })
    })
    .await;

    // Phase 5: the drill's RestoreRequest, its restore Jobs and the validation Job, a kill after
    // each appears and after each finishes.
    let rrs = h.api::<RestoreRequest>();
    h.until("the drill's RestoreRequest", async || {
        rrs.get_opt(&active.id).await.unwrap()
    })
    .await;
    let seen = children(&h).await;
    op.kill_and_restart("with the RestoreRequest made");
    assert_no_duplicates(&h, &seen, "with the RestoreRequest made").await;
    for asset in ["orders-db", "sessions"] {
        let job = restore_job_name(&active.id, asset);
        h.until("a restore Job", async || jobs.get_opt(&job).await.unwrap())
            .await;
        let seen = children(&h).await;
        op.kill_and_restart(&format!("with the {asset} restore Job running"));
        assert_no_duplicates(&h, &seen, "with a restore Job running").await;
        h.finish_job(
            &job,
            &summary(Verb::Restore, asset, Timestamp::now(), vec![]),
        )
        .await;
        op.kill_and_restart(&format!("right after the {asset} restore finished"));
    }
    let validate = validate_job_name(&active.id);
    h.until("the validation Job", async || {
        jobs.get_opt(&validate).await.unwrap()
    })
    .await;
    let seen = children(&h).await;
    op.kill_and_restart("with the validation Job running");
    assert_no_duplicates(&h, &seen, "with the validation Job running").await;
    let check = CheckResult {
        name: "orders-present".into(),
        passed: true,
        message: String::new(),
        attempts: 1,
        duration_seconds: 0.2,
        canary: None,
    };
    h.finish_job(
        &validate,
        &summary(Verb::Restore, "validation", Timestamp::now(), vec![check]),
    )
    .await;
    op.kill_and_restart("right after the validation finished");

    // The drill concludes once, with its measurements.
    let d = h
        .until("the drill record", async || {
            let d = drills.get("quarterly").await.unwrap();
            d.status.as_ref()?.last_run.as_ref()?;
            Some(d)
        })
        .await;
    let status = d.status.unwrap();
    let run = status.last_run.clone().unwrap();
    assert_eq!(run.verdict, DrillVerdict::Passed, "{}", run.message);
    // Mode Fresh: the RTO is measured, the RPO is not (its backup is taken at the disaster).
    assert!(run.rto_seconds.is_some() && run.rpo_seconds.is_none());
    let rr = rrs.get(&active.id).await.unwrap();
    assert_eq!(
        rr.status.as_ref().map(|s| s.phase),
        Some(RestorePhase::Succeeded)
    );

    // Phase 6: killed after the end, while the drill's evidence Job runs, and again once it
    // finished. Nothing runs again; the metrics come back from status.
    let evidence = format!("{}-evidence", active.id);
    let running = h
        .until("the evidence Job", async || {
            jobs.get_opt(&evidence).await.unwrap()
        })
        .await;
    assert!(
        running
            .status
            .as_ref()
            .and_then(|s| s.completion_time.as_ref())
            .is_none(),
        "the evidence Job is still running at the kill"
    );
    let seen = children(&h).await;
    op.kill_and_restart("after the drill ended, with its evidence Job running");
    assert_no_duplicates(&h, &seen, "with the evidence Job running").await;
    h.finish_job(
        &evidence,
        &summary(Verb::Evidence, "evidence", Timestamp::now(), vec![]),
    )
    .await;
    let seen = children(&h).await;
    op.kill_and_restart("right after the evidence Job finished");
    assert_no_duplicates(&h, &seen, "after the evidence Job finished").await;
    let metrics = h
        .until("the restarted operator's drill metrics", async || {
            op.metrics().filter(|m| {
                m.contains("lifeboat_drill_rto_seconds{") && m.contains("lifeboat_rpo_seconds{")
            })
        })
        .await;
    for family in [
        "lifeboat_drill_rto_seconds",
        "lifeboat_drill_objective_met",
        "lifeboat_rpo_seconds",
        "lifeboat_backup_last_success_timestamp_seconds",
    ] {
        assert!(
            metrics.contains(&format!("{family}{{")),
            "{family} not rebuilt after a restart:\n{metrics}"
        );
    }

    let all = children(&h).await;
    let count = |prefix: &str| all.keys().filter(|k| k.starts_with(prefix)).count();
    assert_eq!(count("cronjob/"), 2, "{all:?}");
    assert_eq!(count("restorerequest/"), 1, "{all:?}");
    // Two backups, two restores, one validation, one evidence writer: nothing twice.
    assert_eq!(count("job/"), 6, "{all:?}");
    assert!(
        all.keys()
            .any(|k| k.starts_with("job/") && k.ends_with("-evidence")),
        "{all:?}"
    );
    let d = drills.get("quarterly").await.unwrap().status.unwrap();
    assert_eq!(d.history.len(), 1, "one drill recorded once");
    assert!(d.active.is_none());
    // Events exactly once: each is owed in the status write that records its transition and
    // published after it under a name of its own, so a kill on either side of the publish
    // neither loses nor repeats it.
    for (reason, n) in [
        ("DrillStarted", 1),
        ("DrillPassed", 1),
        ("RestoreStarted", 2),
        ("ValidationStarted", 1),
        ("RestoreSucceeded", 1),
    ] {
        h.expect_events(reason, n).await;
    }
    eprintln!(
        "{} operator processes, {} killed with SIGKILL mid-flight",
        op.starts,
        op.starts - 1
    );
}

/// A RestoreRequest with rollback, the operator killed before and after each of its Jobs: the
/// safety backup, the restore, the failing validation and the rollback. Each Job is made once,
/// the request ends `RolledBack` naming the failed check, and each Event is published once.
#[tokio::test]
async fn killed_in_every_phase_of_a_rolled_back_restore_the_operator_repeats_nothing() {
    let h = harness::without_operator("killed-rb").await;
    let mut op = Operator::start(&h.ns);
    h.apply_policy(
        "shop",
        json!({
            "schedule": "0 * * * *",
            "assets": [{"name": "orders-db", "postgres": {"host": "db", "user": "backup", "databases": ["orders"]}}],
            "retention": {"maxAge": "7d"},
            "destination": {"volume": {"claimName": "backups"}}
        }),
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
    let jobs = h.api::<Job>();
    let seed = backup_now_job("shop", "orders-db", "seed");
    h.until("the seed backup Job", async || {
        jobs.get_opt(&seed).await.unwrap()
    })
    .await;
    h.finish_job(
        &seed,
        &summary(Verb::Backup, "orders-db", Timestamp::now(), vec![]),
    )
    .await;
    h.policy_until("shop", "the seed backup in status", |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.assets.iter().all(|a| a.last_success.is_some()))
    })
    .await;

    let rr = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
    "metadata": {"name": "fix"},
    "spec": {
        "source": {"policy": "shop", "backupId": "latest"},
        "targets": [{"asset": "orders-db", "postgres": {"host": "prod-db", "user": "restore", "database": "orders"}}],
        "execute": true,
        "rollbackOnFailure": true,
        "validation": {"checks": [{"name": "orders-present", "sql": {"asset": "orders-db", "query": "SELECT 1", "expect": "1"}}]}
    }});
    let rrs = h.api::<RestoreRequest>();
    rrs.patch("fix", &PatchParams::apply("test-user"), &Patch::Apply(&rr))
        .await
        .unwrap();
    op.kill_and_restart("right after the RestoreRequest was applied");

    // Each Job of the request: killed while it runs, then right after it finished.
    let safety = safety_job_name("fix", "orders-db");
    let restore = restore_job_name("fix", "orders-db");
    let validate = validate_job_name("fix");
    let rollback = rollback_job_name("fix", "orders-db");
    let failed_check = CheckResult {
        name: "orders-present".into(),
        passed: false,
        message: "expected 1, got 0".into(),
        attempts: 1,
        duration_seconds: 0.2,
        canary: None,
    };
    let steps = [
        (&safety, Verb::Backup, true, vec![]),
        (&restore, Verb::Restore, true, vec![]),
        (&validate, Verb::Restore, false, vec![failed_check]),
        (&rollback, Verb::Restore, true, vec![]),
    ];
    for (job, verb, ok, checks) in steps {
        h.until("the next Job of the request", async || {
            jobs.get_opt(job).await.unwrap()
        })
        .await;
        let seen = children(&h).await;
        op.kill_and_restart(&format!("with {job} running"));
        assert_no_duplicates(&h, &seen, &format!("with {job} running")).await;
        let mut s = summary(verb, "orders-db", Timestamp::now(), checks);
        if verb == Verb::Backup {
            s.backup_id = Some("safety-1".into());
        }
        if !ok {
            s.ok = false;
            s.error_class = Some(ErrorClass::Validation);
            s.message = Some("1 of 1 checks failed".into());
        }
        h.finish_job(job, &s).await;
        op.kill_and_restart(&format!("right after {job} finished"));
    }

    let done = h
        .until("the request ended", async || {
            rrs.get("fix")
                .await
                .unwrap()
                .status
                .filter(|s| s.phase.is_finished())
        })
        .await;
    assert_eq!(done.phase, RestorePhase::RolledBack, "{done:?}");
    assert!(
        done.failure
            .as_ref()
            .is_some_and(|f| f.message.contains("orders-present")),
        "{:?}",
        done.failure
    );
    let seen = children(&h).await;
    op.kill_and_restart("after the request ended");
    assert_no_duplicates(&h, &seen, "after the request ended").await;
    let all = children(&h).await;
    let restore_jobs: Vec<&String> = all.keys().filter(|k| k.starts_with("job/fix-")).collect();
    assert_eq!(restore_jobs.len(), 4, "{all:?}");
    for (reason, n) in [
        ("SafetyBackupStarted", 1),
        ("RestoreStarted", 1),
        ("ValidationStarted", 1),
        ("RollbackStarted", 1),
        ("RestoreRolledBack", 1),
    ] {
        h.expect_events(reason, n).await;
    }
    eprintln!(
        "{} operator processes, {} killed with SIGKILL mid-flight",
        op.starts,
        op.starts - 1
    );
}

/// A drill with a staging namespace of its own, the operator killed right after the drill
/// started (the namespace being made) and then again and again through the clean-up after the
/// TTL: the namespace is made once (the uid in status is the one that exists), deleted once
/// the TTL passed, never made again, and the record of it and the finalizer go with it.
#[tokio::test]
async fn killed_while_its_staging_namespace_is_made_and_cleaned_up() {
    use k8s_openapi::api::core::v1::Namespace;

    let h = harness::without_operator("killed-stg").await;
    let mut op = Operator::start(&h.ns);
    h.apply_policy(
        "shop",
        json!({"schedule": "0 * * * *",
               "assets": [{"name": "orders-db", "postgres": {"host": "db", "user": "backup", "databases": ["orders"]}}],
               "retention": {"maxAge": "7d"},
               "destination": {"volume": {"claimName": "backups"}}}),
    )
    .await;
    let staging = format!("{}-staging", h.ns);
    let drill = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "DrillSchedule",
        "metadata": {"name": "quarterly"},
        "spec": {"schedule": "0 6 1 1,4,7,10 *", "policy": "shop", "assets": ["orders-db"],
                 "backup": "Fresh",
                 "staging": {"targets": [{"asset": "orders-db", "postgres": {"host": "staging-db", "user": "restore", "database": "orders"}}],
                             "namespace": {"name": staging, "ttl": "2s"}},
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
            &Patch::Merge(json!({"metadata": {"annotations": {"lifeboat.dev/drill-now": "s1"}}})),
        )
        .await
        .unwrap();
    let active = h
        .until("an active drill", async || {
            drills.get("quarterly").await.unwrap().status?.active
        })
        .await;
    op.kill_and_restart("right after the drill started, its staging namespace being made");

    let namespaces = kube::Api::<Namespace>::all(h.client.clone());
    let recorded = h
        .until("the staging namespace recorded", async || {
            drills
                .get("quarterly")
                .await
                .unwrap()
                .status?
                .staging_namespace
        })
        .await;
    let made = namespaces.get(&staging).await.unwrap();
    assert_eq!(
        made.uid(),
        Some(recorded.uid.clone()),
        "the namespace is the one recorded"
    );

    // The drill ends (its backup failed); the namespace goes 2 s later.
    let job = backup_now_job("shop", "orders-db", &active.id);
    h.until("the drill's backup Job", async || {
        h.api::<Job>().get_opt(&job).await.unwrap()
    })
    .await;
    let mut failed = summary(Verb::Backup, "orders-db", Timestamp::now(), vec![]);
    failed.ok = false;
    failed.backup_id = None;
    failed.error_class = Some(ErrorClass::SourceUnreachable);
    failed.message = Some("connection refused".into());
    h.finish_job(&job, &failed).await;
    h.until("the record", async || {
        drills
            .get("quarterly")
            .await
            .unwrap()
            .status?
            .last_run
            .map(|_| ())
    })
    .await;
    // Killed at growing intervals across the TTL and the clean-up, then left to run.
    let mut kills_while_recorded = 0;
    for i in 1..=8u64 {
        tokio::time::sleep(Duration::from_millis(300 * i)).await;
        let still = drills
            .get("quarterly")
            .await
            .unwrap()
            .status
            .is_some_and(|s| s.staging_namespace.is_some());
        if !still {
            break;
        }
        kills_while_recorded += 1;
        op.kill_and_restart("during the staging namespace's clean-up");
    }
    assert!(
        kills_while_recorded >= 3,
        "the kills must reach past the TTL: {kills_while_recorded}"
    );
    let d = h
        .until("the staging record cleared", async || {
            let d = drills.get("quarterly").await.unwrap();
            d.status.as_ref()?.staging_namespace.is_none().then_some(d)
        })
        .await;
    assert!(
        !d.finalizers()
            .iter()
            .any(|f| f == "lifeboat.dev/staging-namespace"),
        "{:?}",
        d.finalizers()
    );
    // Deleted, and never made again under the same name.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let left = namespaces.get_opt(&staging).await.unwrap();
    assert!(
        left.as_ref()
            .is_none_or(|n| n.uid() == Some(recorded.uid.clone())
                && n.metadata.deletion_timestamp.is_some()),
        "the staging namespace outlived its drill or was made again: {:?}",
        left.map(|n| (n.uid(), n.metadata.deletion_timestamp))
    );
    eprintln!(
        "{} operator processes, {kills_while_recorded} kills with the namespace still recorded",
        op.starts
    );
}
