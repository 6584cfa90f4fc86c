//! The DrillSchedule controller on the real control plane: nothing fires on creation; a drill
//! (asked for with `lifeboat.dev/drill-now`) backs the policy up, restores into staging through a
//! RestoreRequest it owns, validates, and records the achieved RTO and RPO against its objectives,
//! with conditions, Events, history and metrics; a drill that would restore over its source is
//! refused; a failed fresh backup fails the drill without measuring anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/agent.rs"]
mod agent;
#[path = "common/harness.rs"]
mod harness;

use harness::{Harness, harness};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use lifeboat_api::DrillSchedule;
use lifeboat_api::agent_result::{AgentSummary, ErrorClass, SUMMARY_VERSION, Verb};
use lifeboat_api::conditions::{find, types};
use lifeboat_api::drill_schedule::{DrillVerdict, NotificationState};
use lifeboat_api::restore_request::CheckResult;
use lifeboat_operator::names::backup_now_job;
use lifeboat_operator::restore_request::progress::{restore_job_name, validate_job_name};
use serde_json::{Value, json};

fn policy_spec() -> Value {
    json!({
        "schedule": "0 * * * *",
        "assets": [
            {"name": "orders-db", "canary": true, "postgres": {"host": "db", "user": "backup", "databases": ["orders"]}},
            {"name": "sessions", "redis": {"host": "cache"}}
        ],
        "retention": {"maxAge": "7d"},
        "destination": {"volume": {"claimName": "backups"}},
        "objectives": {"rpo": "1h"}
    })
}

fn drill_spec() -> Value {
    json!({
        "schedule": "0 6 1 1,4,7,10 *",
        "policy": "shop",
        "assets": ["orders-db", "sessions"],
        "staging": {"targets": [
            {"asset": "orders-db", "postgres": {"host": "staging-db", "user": "restore", "database": "orders"}},
            {"asset": "sessions", "redis": {"host": "staging-cache"}}
        ]},
        "validation": {"checks": [{"name": "orders-present", "sql": {"asset": "orders-db", "query": "SELECT 1", "expect": "1"}}]},
        "backup": "Fresh", "objectives": {"rto": "30m", "rpo": "15m"}
    })
}

async fn apply_drill(h: &Harness, name: &str, spec: Value) {
    let obj = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "DrillSchedule", "metadata": {"name": name}, "spec": spec});
    h.api::<DrillSchedule>()
        .patch(name, &PatchParams::apply("test-user"), &Patch::Apply(&obj))
        .await
        .unwrap();
}

async fn drill_until(
    h: &Harness,
    what: &str,
    name: &str,
    f: impl Fn(&DrillSchedule) -> bool,
) -> DrillSchedule {
    let api = h.api::<DrillSchedule>();
    h.until(what, async || {
        api.get_opt(name).await.unwrap().filter(|d| f(d))
    })
    .await
}

async fn drill_now(h: &Harness, name: &str, token: &str) {
    h.api::<DrillSchedule>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"lifeboat.dev/drill-now": token}}})),
        )
        .await
        .unwrap();
}

fn summary(
    verb: Verb,
    asset: &str,
    ok: bool,
    snapshot: Timestamp,
    checks: Vec<CheckResult>,
) -> AgentSummary {
    AgentSummary {
        version: SUMMARY_VERSION,
        verb,
        ok,
        asset: Some(asset.into()),
        backup_id: (verb == Verb::Backup).then(|| format!("{asset}-{}", snapshot.as_second())),
        started_at: snapshot,
        finished_at: Timestamp::now(),
        snapshot_time: (verb == Verb::Backup).then_some(snapshot),
        stored_bytes: Some(1024),
        sha256: Some("ab".repeat(32)),
        error_class: (!ok).then_some(ErrorClass::SourceUnreachable),
        message: (!ok).then(|| "connection refused".into()),
        checks,
        retention_refused: None,
        copies: Vec::new(),
    }
}

#[tokio::test]
async fn a_drill_backs_up_restores_into_staging_validates_and_measures_rto_and_rpo() {
    let h = harness("drill-flow").await;
    h.apply_policy("shop", policy_spec()).await;
    apply_drill(&h, "quarterly", drill_spec()).await;

    // Nothing fires on creation: the next run is the next quarter.
    let d = drill_until(&h, "a first status", "quarterly", |d| d.status.is_some()).await;
    let status = d.status.unwrap();
    assert!(status.active.is_none() && status.history.is_empty());
    assert!(status.next_run_time.unwrap().0 > Timestamp::now());
    let ready = find(&status.conditions, types::READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Scheduled")
    );

    // A drilled policy's RPO is measured from verified backups: none yet.
    let rpo_met = |p: &lifeboat_api::BackupPolicy| {
        p.status
            .as_ref()
            .and_then(|s| find(&s.conditions, types::RPO_MET))
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    h.policy_until("shop", "RPOMet=False, nothing verified", |p| {
        rpo_met(p).is_some_and(|c| c.1 == "NoVerifiedBackupYet")
    })
    .await;

    drill_now(&h, "quarterly", "audit-2026-q4").await;
    let d = drill_until(&h, "an active drill", "quarterly", |d| {
        d.status.as_ref().is_some_and(|s| s.active.is_some())
    })
    .await;
    let active = d.status.unwrap().active.unwrap();
    let start = active.started_at.0;

    // The fresh backups: the policy's own on-demand Jobs, so the policy records them too.
    for asset in ["orders-db", "sessions"] {
        let job = backup_now_job("shop", asset, &active.id);
        let j = h
            .until("the drill's backup Job", async || {
                h.api::<Job>().get_opt(&job).await.unwrap()
            })
            .await;
        assert_eq!(j.owner_references()[0].kind, "BackupPolicy");
        let snapshot = start + SignedDuration::from_secs(2);
        h.finish_job(&job, &summary(Verb::Backup, asset, true, snapshot, vec![]))
            .await;
    }
    // Then a RestoreRequest the drill owns restores into staging, asset by asset, and validates.
    let rr = h
        .until("the drill's RestoreRequest", async || {
            h.api::<lifeboat_api::RestoreRequest>()
                .get_opt(&active.id)
                .await
                .unwrap()
        })
        .await;
    assert_eq!(rr.owner_references()[0].kind, "DrillSchedule");
    assert!(rr.spec.execute);
    assert_eq!(rr.spec.targets.len(), 2);
    for asset in ["orders-db", "sessions"] {
        let job = restore_job_name(&active.id, asset);
        h.until("a restore Job", async || {
            h.api::<Job>().get_opt(&job).await.unwrap()
        })
        .await;
        h.finish_job(
            &job,
            &summary(Verb::Restore, asset, true, Timestamp::now(), vec![]),
        )
        .await;
    }
    let validate = validate_job_name(&active.id);
    h.until("the validation Job", async || {
        h.api::<Job>().get_opt(&validate).await.unwrap()
    })
    .await;
    let check = CheckResult {
        name: "orders-present".into(),
        passed: true,
        message: String::new(),
        attempts: 1,
        duration_seconds: 0.2,
        canary: None,
    };
    // The agent read the canary marker back from the restored orders-db: written 30 s before
    // the simulated disaster (as a `latest`-mode drill would find it).
    let marker = lifeboat_api::agent_result::CanaryMarker {
        id: format!(
            "orders-db-{}",
            (start + SignedDuration::from_secs(2)).as_second()
        ),
        written_at: start - SignedDuration::from_secs(30),
    };
    let canary = CheckResult {
        name: lifeboat_api::restore_request::canary_check_name("orders-db"),
        passed: true,
        message: String::new(),
        attempts: 1,
        duration_seconds: 0.01,
        canary: Some(marker.clone()),
    };
    h.finish_job(
        &validate,
        &summary(
            Verb::Restore,
            "validation",
            true,
            Timestamp::now(),
            vec![check, canary],
        ),
    )
    .await;

    let d = drill_until(&h, "the drill record", "quarterly", |d| {
        d.status.as_ref().is_some_and(|s| s.last_run.is_some())
    })
    .await;
    let status = d.status.unwrap();
    let run = status.last_run.clone().unwrap();
    // One fast drill: the early warning is written, and does not fire.
    let risk = find(&status.conditions, types::RTO_AT_RISK).unwrap();
    assert_eq!(
        (risk.status.as_str(), risk.reason.as_str()),
        ("False", "WithinMargin")
    );
    // The backups it restored are now proven restorable, in the policy's status.
    let p = h
        .policy_until("shop", "the drill's backups verified", |p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.last_verified_time.is_some())
        })
        .await;
    for a in p.status.unwrap().assets {
        let v = a.last_verified.unwrap();
        assert!(
            run.backups
                .iter()
                .any(|b| b.asset == a.name && b.id == v.id),
            "{}: {v:?} not in {:?}",
            a.name,
            run.backups
        );
        assert_eq!(v.drill, format!("quarterly/{}", run.id));
        assert!(v.snapshot_time.is_some(), "{v:?}");
    }
    let p = h
        .policy_until("shop", "RPOMet=True on verified backups", |p| {
            rpo_met(p).is_some_and(|c| c.0 == "True")
        })
        .await;
    let (_, reason, message) = rpo_met(&p).unwrap();
    assert_eq!(reason, "WithinObjective");
    assert!(
        message.starts_with("newest verified backup is"),
        "{message}"
    );
    assert!(
        h.metrics
            .render()
            .contains("lifeboat_backup_verified_snapshot_timestamp_seconds{asset=\"orders-db\""),
        "the verified RPO is exported"
    );
    assert_eq!(run.verdict, DrillVerdict::Passed, "{}", run.message);
    // The evidence: a Job the drill owns has the agent write it next to the policy's backups.
    assert_eq!(
        run.evidence.as_deref(),
        Some(format!("{}/shop/drill-{}.json", h.ns, run.id).as_str())
    );
    let evidence_job = h
        .api::<Job>()
        .get(&format!("{}-evidence", run.id))
        .await
        .unwrap();
    assert_eq!(evidence_job.owner_references()[0].kind, "DrillSchedule");
    let pod = evidence_job.spec.unwrap().template.spec.unwrap();
    let doc = pod.containers[0]
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "LIFEBOAT_JOB")
        .and_then(|e| e.value.clone())
        .unwrap();
    let doc: lifeboat_api::agent_job::AgentEvidenceJob = serde_json::from_str(&doc).unwrap();
    let e = &doc.evidence;
    assert_eq!(
        (e.drill_id.as_str(), e.policy.as_str()),
        (run.id.as_str(), "shop")
    );
    assert_eq!(e.verdict, lifeboat_api::evidence::EvidenceVerdict::Passed);
    assert_eq!(
        e.restored
            .iter()
            .map(|r| r.asset.as_str())
            .collect::<Vec<_>>(),
        ["orders-db", "sessions"]
    );
    assert_eq!(
        e.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        [
            "backup",
            "restore orders-db",
            "restore sessions",
            "validate and Job start-up"
        ]
    );
    assert_eq!(e.checks.len(), 2, "the declared check and the canary check");
    assert_eq!(e.restored[0].canary_found.as_ref(), Some(&marker));
    assert_eq!(
        e.restored[1].canary_found, None,
        "sessions writes no canaries"
    );
    assert_eq!(e.achieved.rpo_canary_seconds, run.rpo_canary_seconds);
    let rto = run.rto_seconds.unwrap();
    assert!(rto > 0.0 && rto < 300.0, "rto {rto}");
    assert_eq!(
        (run.rpo_seconds, run.rpo.as_deref()),
        (None, None),
        "a Fresh drill's backup is taken at the simulated disaster: it measures no RPO"
    );
    assert!(run.rto_met && !run.rpo_met);
    assert_eq!(run.checks.len(), 2);
    let canary_rpo = run.rpo_canary_seconds.expect("measured from the marker");
    assert!((canary_rpo - 30.0).abs() < 0.01, "canary RPO {canary_rpo}");
    assert_eq!(run.backups.len(), 2);
    assert!(status.active.is_none());
    assert_eq!(status.history.len(), 1);
    assert_eq!(
        status.last_drill_now_token.as_deref(),
        Some("audit-2026-q4")
    );
    for (type_, status_, reason) in [
        (types::READY, "True", "DrillPassed"),
        (types::RTO_MET, "True", "WithinObjective"),
        (types::RPO_MET, "Unknown", "RPONotMeasured"),
    ] {
        let c = find(&status.conditions, type_).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            (status_, reason),
            "{type_}"
        );
    }
    h.expect_events("DrillStarted", 1).await;
    h.expect_events("DrillPassed", 1).await;
    let metrics = h.metrics.render();
    assert!(
        metrics.contains("lifeboat_drill_rto_seconds{drill=\"quarterly\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("lifeboat_drill_objective_met{drill=\"quarterly\""),
        "{metrics}"
    );
    // The policy recorded the drill's fresh backups as its newest good ones.
    let policy = h
        .api::<lifeboat_api::BackupPolicy>()
        .get("shop")
        .await
        .unwrap();
    assert!(
        policy
            .status
            .unwrap()
            .assets
            .iter()
            .all(|a| a.last_success.is_some())
    );
}

#[tokio::test]
async fn a_drill_never_restores_over_its_source() {
    let h = harness("drill-scope").await;
    h.apply_policy("shop", policy_spec()).await;
    let mut spec = drill_spec();
    spec["staging"]["targets"][0]["postgres"] =
        json!({"host": "db", "user": "restore", "database": "orders"});
    apply_drill(&h, "over-prod", spec).await;
    let d = drill_until(&h, "InvalidSpec", "over-prod", |d| {
        d.status
            .as_ref()
            .and_then(|s| find(&s.conditions, types::READY))
            .is_some_and(|c| c.reason == "InvalidSpec")
    })
    .await;
    let message = find(&d.status.unwrap().conditions, types::READY)
        .unwrap()
        .message
        .clone();
    assert!(message.contains("is its own source"), "{message}");
    drill_now(&h, "over-prod", "try-anyway").await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let d = h.api::<DrillSchedule>().get("over-prod").await.unwrap();
    assert!(
        d.status.unwrap().active.is_none(),
        "no drill starts against its own source"
    );
    assert!(
        h.api::<Job>()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn a_drill_refuses_a_target_outside_its_staging_scope() {
    let h = harness("drill-out-of-scope").await;
    h.apply_policy("shop", policy_spec()).await;
    let mut spec = drill_spec();
    spec["staging"]["scope"] = json!({"hosts": ["*.drills.svc"]});
    // staging-db and staging-cache are not in *.drills.svc.
    apply_drill(&h, "scoped", spec.clone()).await;
    let reason_is = |reason: &'static str| {
        move |d: &DrillSchedule| {
            d.status
                .as_ref()
                .and_then(|s| find(&s.conditions, types::READY))
                .is_some_and(|c| c.reason == reason)
        }
    };
    let d = drill_until(
        &h,
        "OutOfStagingScope",
        "scoped",
        reason_is("OutOfStagingScope"),
    )
    .await;
    let message = find(&d.status.unwrap().conditions, types::READY)
        .unwrap()
        .message
        .clone();
    assert!(
        message.contains("host staging-db")
            && message.contains("outside the drill's staging scope"),
        "{message}"
    );
    drill_now(&h, "scoped", "try-anyway").await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let d = h.api::<DrillSchedule>().get("scoped").await.unwrap();
    assert!(
        d.status.unwrap().active.is_none(),
        "no drill starts out of scope"
    );
    assert!(
        h.api::<Job>()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing ran"
    );
    // Targets moved inside the scope: the refusal is lifted (and the drill asked for while it
    // was refused starts now: its token was never handled).
    spec["staging"]["targets"][0]["postgres"]["host"] = json!("pg.drills.svc");
    spec["staging"]["targets"][1]["redis"]["host"] = json!("cache.drills.svc");
    apply_drill(&h, "scoped", spec).await;
    let d = drill_until(&h, "the refusal lifted", "scoped", |d| {
        d.status
            .as_ref()
            .and_then(|s| find(&s.conditions, types::READY))
            .is_some_and(|c| c.status == "True")
    })
    .await;
    assert!(
        d.status.unwrap().active.is_some(),
        "the pending drill-now runs"
    );
}

#[tokio::test]
async fn a_failed_fresh_backup_fails_the_drill_without_measuring() {
    let h = harness("drill-fail").await;
    h.apply_policy("shop", policy_spec()).await;
    apply_drill(&h, "quarterly", drill_spec()).await;
    drill_until(&h, "a first status", "quarterly", |d| d.status.is_some()).await;
    drill_now(&h, "quarterly", "t1").await;
    let d = drill_until(&h, "an active drill", "quarterly", |d| {
        d.status.as_ref().is_some_and(|s| s.active.is_some())
    })
    .await;
    let id = d.status.unwrap().active.unwrap().id;
    let job = backup_now_job("shop", "orders-db", &id);
    h.until("the drill's backup Job", async || {
        h.api::<Job>().get_opt(&job).await.unwrap()
    })
    .await;
    h.finish_job(
        &job,
        &summary(Verb::Backup, "orders-db", false, Timestamp::now(), vec![]),
    )
    .await;
    let d = drill_until(&h, "the failed record", "quarterly", |d| {
        d.status.as_ref().is_some_and(|s| s.last_run.is_some())
    })
    .await;
    let status = d.status.unwrap();
    let run = status.last_run.unwrap();
    assert_eq!(run.verdict, DrillVerdict::Failed);
    assert!(
        run.message
            .contains("the fresh backup of orders-db failed: SourceUnreachable"),
        "{}",
        run.message
    );
    assert_eq!((run.rto_seconds, run.rpo_seconds), (None, None));
    let rto = find(&status.conditions, types::RTO_MET).unwrap();
    assert_eq!(
        (rto.status.as_str(), rto.reason.as_str()),
        ("False", "NotMeasured")
    );
    assert!(
        h.api::<lifeboat_api::RestoreRequest>()
            .get_opt(&id)
            .await
            .unwrap()
            .is_none(),
        "no restore of a failed backup"
    );
    h.expect_events("DrillFailed", 1).await;
}

#[tokio::test]
async fn a_failed_drill_is_announced_once_by_a_job_in_its_namespace_that_keeps_the_url_secret() {
    let h = harness("drill-notify").await;
    let (url, bodies) = harness::webhook_receiver("secret-token").await;
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(json!({"metadata": {"name": "slack"}, "stringData": {"url": url}}))
            .unwrap();
    h.api::<k8s_openapi::api::core::v1::Secret>()
        .create(&Default::default(), &secret)
        .await
        .unwrap();
    h.apply_policy("shop", policy_spec()).await;
    let mut spec = drill_spec();
    spec["notification"] = json!({"webhookSecret": {"name": "slack", "key": "url"}});
    apply_drill(&h, "quarterly", spec).await;
    drill_until(&h, "a first status", "quarterly", |d| d.status.is_some()).await;
    drill_now(&h, "quarterly", "t1").await;
    let d = drill_until(&h, "an active drill", "quarterly", |d| {
        d.status.as_ref().is_some_and(|s| s.active.is_some())
    })
    .await;
    let id = d.status.unwrap().active.unwrap().id;
    let job = backup_now_job("shop", "orders-db", &id);
    h.until("the drill's backup Job", async || {
        h.api::<Job>().get_opt(&job).await.unwrap()
    })
    .await;
    h.finish_job(
        &job,
        &summary(Verb::Backup, "orders-db", false, Timestamp::now(), vec![]),
    )
    .await;
    // The record says a notification is owed; a Job in the drill's namespace will send it.
    let d = drill_until(&h, "the record", "quarterly", |d| {
        d.status.as_ref().is_some_and(|s| s.last_run.is_some())
    })
    .await;
    let n = d.status.unwrap().last_run.unwrap().notification.unwrap();
    assert_eq!(
        (n.state, n.job.clone()),
        (NotificationState::Pending, format!("{id}-notify"))
    );
    let notify = h
        .until("the notify Job", async || {
            h.api::<Job>().get_opt(&n.job).await.unwrap()
        })
        .await;
    assert_eq!(notify.owner_references()[0].kind, "DrillSchedule");
    assert_eq!(notify.spec.as_ref().unwrap().backoff_limit, Some(0));
    assert!(
        bodies.lock().unwrap().is_empty(),
        "the operator sends nothing itself"
    );
    let sent = agent::run_notify_job(&h, &n.job).await;
    assert!(sent.ok, "{sent:?}");
    let d = drill_until(&h, "the notification's outcome", "quarterly", |d| {
        d.status
            .as_ref()
            .and_then(|s| s.last_run.as_ref()?.notification.as_ref())
            .is_some_and(|n| n.state != NotificationState::Pending)
    })
    .await;
    let status = d.status.unwrap();
    let n = status
        .last_run
        .as_ref()
        .unwrap()
        .notification
        .clone()
        .unwrap();
    assert_eq!(n.state, NotificationState::Sent, "{n:?}");
    assert_eq!(status.history[0].notification.as_ref(), Some(&n));
    h.expect_events("NotificationSent", 1).await;
    // Exactly one message, with the verdict and the reason.
    let got = bodies.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let payload: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
    let message = payload["text"].as_str().unwrap();
    assert!(
        message.contains("DrillFailed") && message.contains(&id),
        "{message}"
    );
    assert!(message.contains("SourceUnreachable"), "{message}");
    // A restarted operator (new controllers, same cluster) neither re-creates nor re-sends.
    let h = h.restart().await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(bodies.lock().unwrap().len(), 1);
    h.expect_events("NotificationSent", 1).await;
    let jobs = h.api::<Job>().list(&Default::default()).await.unwrap();
    assert_eq!(
        jobs.items
            .iter()
            .filter(|j| j.name_any().ends_with("-notify"))
            .count(),
        1
    );
    let d = h.api::<DrillSchedule>().get("quarterly").await.unwrap();
    let events = h
        .api::<k8s_openapi::api::core::v1::Event>()
        .list(&Default::default())
        .await
        .unwrap();
    let visible = format!("{d:?}{events:?}{:?}", jobs.items);
    assert!(!visible.contains("secret-token"), "the webhook URL leaked");
    assert!(!visible.contains(&url), "the webhook URL leaked");
}

#[tokio::test]
async fn a_notification_whose_secret_is_missing_fails_once_naming_the_secret() {
    let h = harness("drill-notify-missing").await;
    h.apply_policy("shop", policy_spec()).await;
    let mut spec = drill_spec();
    // The Secret does not exist: the operator cannot tell (it reads no Secret); the Job can.
    spec["notification"] =
        json!({"webhookSecret": {"name": "absent", "key": "url"}, "when": "Always"});
    apply_drill(&h, "quarterly", spec).await;
    drill_until(&h, "a first status", "quarterly", |d| d.status.is_some()).await;
    drill_now(&h, "quarterly", "t1").await;
    let d = drill_until(&h, "an active drill", "quarterly", |d| {
        d.status.as_ref().is_some_and(|s| s.active.is_some())
    })
    .await;
    let id = d.status.unwrap().active.unwrap().id;
    let job = backup_now_job("shop", "orders-db", &id);
    h.until("the drill's backup Job", async || {
        h.api::<Job>().get_opt(&job).await.unwrap()
    })
    .await;
    h.finish_job(
        &job,
        &summary(Verb::Backup, "orders-db", false, Timestamp::now(), vec![]),
    )
    .await;
    let notify = format!("{id}-notify");
    h.until("the notify Job", async || {
        h.api::<Job>().get_opt(&notify).await.unwrap()
    })
    .await;
    let failed = agent::run_notify_job(&h, &notify).await;
    assert_eq!(failed.error_class, Some(ErrorClass::SecretNotFound));
    let d = drill_until(&h, "the notification's outcome", "quarterly", |d| {
        d.status
            .as_ref()
            .and_then(|s| s.last_run.as_ref()?.notification.as_ref())
            .is_some_and(|n| n.state != NotificationState::Pending)
    })
    .await;
    let n = d.status.unwrap().last_run.unwrap().notification.unwrap();
    assert_eq!(
        (n.state, n.reason.as_deref()),
        (NotificationState::Failed, Some("SecretNotFound"))
    );
    assert!(n.message.contains("\"absent\""), "{}", n.message);
    h.expect_events("NotificationFailed", 1).await;
    // Never retried: the Job failed for good and no second one appears.
    let j = h.api::<Job>().get(&notify).await.unwrap();
    assert_eq!(j.spec.unwrap().backoff_limit, Some(0));
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let pods = h
        .api::<k8s_openapi::api::core::v1::Pod>()
        .list(
            &kube::api::ListParams::default()
                .labels(&format!("batch.kubernetes.io/job-name={notify}")),
        )
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 1, "one pod, one attempt");
}

/// The staging tests grant and revoke one cluster-wide permission (the chart's staging
/// ClusterRoleBinding of the operator's account), and one of them needs it absent: they take
/// turns.
static STAGING_RBAC: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The chart's opt-in staging-namespace RBAC (`drills.stagingNamespaces=true`), rendered by helm.
fn staging_rbac() -> Vec<Value> {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let helm = std::process::Command::new("bash")
        .arg(repo.join("hack/tools/helm.sh"))
        .output()
        .unwrap();
    assert!(helm.status.success());
    let out = std::process::Command::new(String::from_utf8(helm.stdout).unwrap().trim())
        .args(["template", "lifeboat"])
        .arg(repo.join("charts/lifeboat"))
        .args([
            "--namespace",
            harness::CHART_NAMESPACE,
            "--set",
            "drills.stagingNamespaces=true",
            "--show-only",
            "templates/rbac-staging.yaml",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_norway::Deserializer::from_str(&String::from_utf8(out.stdout).unwrap())
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

#[tokio::test]
async fn a_drill_gets_an_isolated_staging_namespace_that_goes_after_its_ttl() {
    use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kube::Api;

    let _turn = STAGING_RBAC.lock().await;
    let h = harness("drill-staging").await;
    let staging = format!("{}-staging", h.ns);
    let rbac = staging_rbac();
    let binding_name = rbac[1]["metadata"]["name"].as_str().unwrap().to_owned();
    let bindings = Api::<ClusterRoleBinding>::all(h.client.clone());
    // Without the opt-in permission (the chart's default) the drill says what is missing.
    let _ = bindings.delete(&binding_name, &Default::default()).await;
    h.apply_policy("shop", policy_spec()).await;
    let mut spec = drill_spec();
    spec["staging"]["namespace"] = json!({"name": staging, "ttl": "3s",
        "allowEgress": [{"cidr": "10.0.12.7/32", "ports": [5432]}],
        "quota": {"pods": "5", "requests.cpu": "2"}});
    apply_drill(&h, "quarterly", spec).await;
    let d = drill_until(&h, "StagingNamespaceForbidden", "quarterly", |d| {
        d.status
            .as_ref()
            .and_then(|s| find(&s.conditions, types::READY))
            .is_some_and(|c| c.reason == "StagingNamespaceForbidden")
    })
    .await;
    let ready = find(&d.status.unwrap().conditions, types::READY)
        .unwrap()
        .clone();
    assert!(
        ready.message.contains("drills.stagingNamespaces=true"),
        "{}",
        ready.message
    );

    // With it: a drill creates the namespace, isolated, ...
    let pp = PatchParams::apply("lifeboat-tests").force();
    Api::<ClusterRole>::all(h.client.clone())
        .patch(
            rbac[0]["metadata"]["name"].as_str().unwrap(),
            &pp,
            &Patch::Apply(&rbac[0]),
        )
        .await
        .unwrap();
    bindings
        .patch(&binding_name, &pp, &Patch::Apply(&rbac[1]))
        .await
        .unwrap();
    drill_now(&h, "quarterly", "t1").await;
    let d = drill_until(&h, "an active drill", "quarterly", |d| {
        d.status.as_ref().is_some_and(|s| s.active.is_some())
    })
    .await;
    let namespaces = Api::<Namespace>::all(h.client.clone());
    let ns = h
        .until("the staging namespace", async || {
            namespaces.get_opt(&staging).await.unwrap()
        })
        .await;
    assert_eq!(
        ns.labels()["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    // Its uid, as the create returned it, is what makes it this drill's.
    let recorded = drill_until(&h, "the recorded uid", "quarterly", |d| {
        d.status
            .as_ref()
            .is_some_and(|s| s.staging_namespace.is_some())
    })
    .await
    .status
    .unwrap()
    .staging_namespace
    .unwrap();
    assert_eq!(
        (recorded.name.as_str(), Some(&recorded.uid)),
        (staging.as_str(), ns.metadata.uid.as_ref())
    );
    let np = h
        .until("its NetworkPolicy", async || {
            Api::<NetworkPolicy>::namespaced(h.client.clone(), &staging)
                .get_opt("lifeboat-staging")
                .await
                .unwrap()
        })
        .await;
    let np = np.spec.unwrap();
    assert_eq!(np.policy_types.unwrap(), ["Egress"]);
    assert_eq!(
        np.egress.unwrap().len(),
        2,
        "DNS and the staging database only"
    );
    let quota = h
        .until("its ResourceQuota", async || {
            Api::<ResourceQuota>::namespaced(h.client.clone(), &staging)
                .get_opt("lifeboat-staging")
                .await
                .unwrap()
        })
        .await;
    assert_eq!(quota.spec.unwrap().hard.unwrap()["pods"].0, "5");

    // ... and deletes it 3 s after the drill ends (here: its fresh backup failed).
    let id = d.status.unwrap().active.unwrap().id;
    let job = backup_now_job("shop", "orders-db", &id);
    h.until("the drill's backup Job", async || {
        h.api::<Job>().get_opt(&job).await.unwrap()
    })
    .await;
    h.finish_job(
        &job,
        &summary(Verb::Backup, "orders-db", false, Timestamp::now(), vec![]),
    )
    .await;
    drill_until(&h, "the record", "quarterly", |d| {
        d.status.as_ref().is_some_and(|s| s.last_run.is_some())
    })
    .await;
    assert!(
        namespaces.get_opt(&staging).await.unwrap().is_some(),
        "kept for its TTL"
    );
    h.until("the staging namespace to go", async || {
        namespaces
            .get_opt(&staging)
            .await
            .unwrap()
            .is_none_or(|n| n.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;

    // A namespace it did not make is refused, never adopted or deleted.
    let theirs = format!("{}-theirs", h.ns);
    namespaces
        .create(
            &Default::default(),
            &serde_json::from_value(json!({"metadata": {"name": theirs}})).unwrap(),
        )
        .await
        .unwrap();
    let mut spec = drill_spec();
    spec["staging"]["namespace"] = json!({"name": theirs, "ttl": "1s"});
    apply_drill(&h, "quarterly", spec).await;
    let d = drill_until(&h, "StagingNamespaceConflict", "quarterly", |d| {
        d.status
            .as_ref()
            .and_then(|s| find(&s.conditions, types::READY))
            .is_some_and(|c| c.reason == "StagingNamespaceConflict")
    })
    .await;
    drill_now(&h, "quarterly", "t2").await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let ns = namespaces.get(&theirs).await.unwrap();
    assert!(ns.metadata.deletion_timestamp.is_none(), "not deleted");
    assert!(
        d.status.unwrap().active.is_none(),
        "no drill runs against a namespace it does not own"
    );
    let _ = namespaces.delete(&theirs, &Default::default()).await;
    let _ = bindings.delete(&binding_name, &Default::default()).await;
}

/// The chart's staging RBAC applied (and removed with the returned guard's binding name).
async fn grant_staging(h: &Harness) -> String {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kube::Api;
    let rbac = staging_rbac();
    let pp = PatchParams::apply("lifeboat-tests").force();
    Api::<ClusterRole>::all(h.client.clone())
        .patch(
            rbac[0]["metadata"]["name"].as_str().unwrap(),
            &pp,
            &Patch::Apply(&rbac[0]),
        )
        .await
        .unwrap();
    let binding = rbac[1]["metadata"]["name"].as_str().unwrap().to_owned();
    Api::<ClusterRoleBinding>::all(h.client.clone())
        .patch(&binding, &pp, &Patch::Apply(&rbac[1]))
        .await
        .unwrap();
    binding
}

/// A namespace `name` made by someone else, dressed as the staging namespace of `drill` in
/// `h.ns` (the operator's labels and annotation), with a ConfigMap of theirs in it.
async fn squat(h: &Harness, name: &str, drill: &str) {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    use kube::Api;
    let ns = json!({"metadata": {"name": name,
        "labels": {"app.kubernetes.io/managed-by": "lifeboat-operator",
                   "lifeboat.dev/staging-for": format!("{}.{drill}", h.ns),
                   "pod-security.kubernetes.io/enforce": "restricted"},
        "annotations": {"lifeboat.dev/staging-for": format!("{}/{drill}", h.ns)}}});
    Api::<Namespace>::all(h.client.clone())
        .create(&Default::default(), &serde_json::from_value(ns).unwrap())
        .await
        .unwrap();
    let cm = json!({"metadata": {"name": "theirs"}, "data": {"k": "v"}});
    Api::<ConfigMap>::namespaced(h.client.clone(), name)
        .create(&Default::default(), &serde_json::from_value(cm).unwrap())
        .await
        .unwrap();
}

/// Whether namespace `name` and the squatter's ConfigMap in it are still there, not deleted.
async fn still_there(h: &Harness, name: &str) -> bool {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    use kube::Api;
    let ns = Api::<Namespace>::all(h.client.clone())
        .get_opt(name)
        .await
        .unwrap();
    let cm = Api::<ConfigMap>::namespaced(h.client.clone(), name)
        .get_opt("theirs")
        .await
        .unwrap();
    ns.is_some_and(|n| n.metadata.deletion_timestamp.is_none()) && cm.is_some()
}

async fn conflict(h: &Harness) -> DrillSchedule {
    drill_until(h, "StagingNamespaceConflict", "quarterly", |d| {
        d.status
            .as_ref()
            .and_then(|s| find(&s.conditions, types::READY))
            .is_some_and(|c| c.reason == "StagingNamespaceConflict")
    })
    .await
}

#[tokio::test]
async fn a_squatted_staging_namespace_is_refused_and_outlives_the_ttl() {
    let _turn = STAGING_RBAC.lock().await;
    let h = harness("drill-squat").await;
    let binding = grant_staging(&h).await;
    let name = format!("{}-staging", h.ns);
    // Someone creates the namespace first, with the labels and annotation the operator writes.
    squat(&h, &name, "quarterly").await;
    h.apply_policy("shop", policy_spec()).await;
    let mut spec = drill_spec();
    spec["staging"]["namespace"] = json!({"name": name, "ttl": "1s"});
    apply_drill(&h, "quarterly", spec).await;
    drill_now(&h, "quarterly", "t1").await;
    let d = conflict(&h).await;
    let ready = find(&d.status.as_ref().unwrap().conditions, types::READY)
        .unwrap()
        .clone();
    assert!(
        ready.message.contains("never adopted or deleted"),
        "{}",
        ready.message
    );
    // Well past the TTL: no drill ran in it, and it and what it holds are still there.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let d = h.api::<DrillSchedule>().get("quarterly").await.unwrap();
    let status = d.status.unwrap();
    assert!(
        status.active.is_none() && status.last_run.is_none(),
        "no drill ran"
    );
    assert!(
        status.staging_namespace.is_none(),
        "never recorded as its own"
    );
    assert!(
        still_there(&h, &name).await,
        "the squatter's namespace was deleted"
    );
    assert!(
        h.api::<Job>()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing started"
    );
    let _ = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(h.client.clone())
        .delete(&name, &Default::default())
        .await;
    let _ = kube::Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(h.client.clone())
        .delete(&binding, &Default::default())
        .await;
}

#[tokio::test]
async fn a_staging_namespace_recreated_by_someone_else_is_not_deleted() {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::Api;
    let _turn = STAGING_RBAC.lock().await;
    let h = harness("drill-recreated").await;
    let binding = grant_staging(&h).await;
    let name = format!("{}-staging", h.ns);
    h.apply_policy("shop", policy_spec()).await;
    let mut spec = drill_spec();
    spec["staging"]["namespace"] = json!({"name": name, "ttl": "30s"});
    apply_drill(&h, "quarterly", spec).await;
    drill_now(&h, "quarterly", "t1").await;
    let d = drill_until(&h, "the staging namespace recorded", "quarterly", |d| {
        d.status
            .as_ref()
            .is_some_and(|s| s.active.is_some() && s.staging_namespace.is_some())
    })
    .await;
    let status = d.status.unwrap();
    let ours = status.staging_namespace.unwrap();
    let id = status.active.unwrap().id;
    let job = backup_now_job("shop", "orders-db", &id);
    h.until("the drill's backup Job", async || {
        h.api::<Job>().get_opt(&job).await.unwrap()
    })
    .await;
    h.finish_job(
        &job,
        &summary(Verb::Backup, "orders-db", false, Timestamp::now(), vec![]),
    )
    .await;
    drill_until(&h, "the record", "quarterly", |d| {
        d.status.as_ref().is_some_and(|s| s.last_run.is_some())
    })
    .await;
    // Within the TTL, someone deletes it and makes a namespace of the same name: a new uid.
    let namespaces = Api::<Namespace>::all(h.client.clone());
    namespaces.delete(&name, &Default::default()).await.unwrap();
    h.until("the namespace to go", async || {
        namespaces
            .get_opt(&name)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    squat(&h, &name, "quarterly").await;
    let theirs = namespaces.get(&name).await.unwrap();
    assert_ne!(theirs.metadata.uid.as_ref(), Some(&ours.uid));
    // After the TTL the drill refuses it as not its own, and never deletes it.
    conflict(&h).await;
    let finished = h
        .api::<DrillSchedule>()
        .get("quarterly")
        .await
        .unwrap()
        .status
        .unwrap()
        .last_run
        .unwrap()
        .finished_at
        .0;
    let past_ttl = finished + SignedDuration::from_secs(35);
    while Timestamp::now() < past_ttl {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(
        still_there(&h, &name).await,
        "someone else's namespace was deleted"
    );
    let _ = namespaces.delete(&name, &Default::default()).await;
    let _ = Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(h.client.clone())
        .delete(&binding, &Default::default())
        .await;
}

/// The delete itself carries the recorded uid as a precondition: a namespace replaced between
/// the operator's read and its delete is refused by the API server, not deleted.
#[tokio::test]
async fn the_staging_delete_is_refused_for_a_namespace_with_another_uid() {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::Api;
    use lifeboat_api::drill_schedule::StagingNamespaceStatus;
    use lifeboat_operator::drill_schedule::staging::{Deleted, delete_owned};
    let h = harness("drill-precondition").await;
    let name = format!("{}-other", h.ns);
    squat(&h, &name, "quarterly").await;
    let namespaces = Api::<Namespace>::all(h.client.clone());
    let uid = namespaces.get(&name).await.unwrap().metadata.uid.unwrap();
    let stale = StagingNamespaceStatus {
        name: name.clone(),
        uid: "00000000-0000-0000-0000-000000000000".into(),
    };
    assert_eq!(
        delete_owned(&namespaces, &stale).await.unwrap(),
        Deleted::NotOurs
    );
    assert!(still_there(&h, &name).await);
    let right = StagingNamespaceStatus {
        name: name.clone(),
        uid,
    };
    assert_eq!(
        delete_owned(&namespaces, &right).await.unwrap(),
        Deleted::Deleted
    );
    h.until("the namespace to go", async || {
        namespaces
            .get_opt(&name)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(
        delete_owned(&namespaces, &right).await.unwrap(),
        Deleted::Gone
    );
}

/// The default drill is the disaster at its start: with no backup yet it fails with
/// `NoBackupYet` and takes none itself; once the CronJob controller has run a scheduled backup,
/// it restores that backup and measures the RPO as the time between its snapshot and the drill's
/// start, which the canary read back from the restored data (that backup's own marker, written
/// before its snapshot) confirms.
#[tokio::test]
async fn a_default_drill_restores_the_newest_scheduled_backup_and_measures_its_age() {
    let h = harness("drill-latest").await;
    let mut policy = policy_spec();
    policy["schedule"] = json!("* * * * *");
    policy["assets"] = json!([policy["assets"][0].clone()]);
    h.apply_policy("shop", policy).await;
    let mut spec = drill_spec();
    spec.as_object_mut().unwrap().remove("backup");
    spec["assets"] = json!(["orders-db"]);
    spec["staging"]["targets"] = json!([spec["staging"]["targets"][0].clone()]);
    apply_drill(&h, "quarterly", spec).await;

    // Nothing to restore yet: the drill fails at once and says why; no backup Job of its own.
    drill_now(&h, "quarterly", "before-any-backup").await;
    let d = drill_until(&h, "the NoBackupYet record", "quarterly", |d| {
        d.status.as_ref().is_some_and(|s| s.last_run.is_some())
    })
    .await;
    let status = d.status.unwrap();
    let run = status.last_run.unwrap();
    assert_eq!(run.verdict, DrillVerdict::Failed);
    assert!(
        run.message.contains("asset orders-db has no good backup"),
        "{}",
        run.message
    );
    let rpo = find(&status.conditions, types::RPO_MET).unwrap();
    assert_eq!(
        (rpo.status.as_str(), rpo.reason.as_str()),
        ("False", "NoBackupYet")
    );
    assert!(
        h.api::<Job>()
            .get_opt(&backup_now_job("shop", "orders-db", &run.id))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        h.api::<lifeboat_api::RestoreRequest>()
            .get_opt(&run.id)
            .await
            .unwrap()
            .is_none()
    );

    // The CronJob controller starts the scheduled backup (within a minute); it finishes the way
    // the agent reports it.
    let jobs = h.api::<Job>();
    let scheduled = h
        .until("a Job the CronJob made", async || {
            jobs.list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .find(|j| j.owner_references().iter().any(|o| o.kind == "CronJob"))
        })
        .await;
    // A whole second: status times (`metav1.Time`) keep no fraction.
    let snapshot = Timestamp::from_second(Timestamp::now().as_second()).unwrap();
    let backup = summary(Verb::Backup, "orders-db", true, snapshot, vec![]);
    let backup_id = backup.backup_id.clone().unwrap();
    h.finish_job(&scheduled.name_any(), &backup).await;
    h.policy_until("shop", "the scheduled backup recorded", |p| {
        p.status.as_ref().is_some_and(|s| {
            s.assets
                .iter()
                .any(|a| a.last_success.as_ref().is_some_and(|l| l.id == backup_id))
        })
    })
    .await;
    // Writes after the backup are what the disaster loses.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;

    drill_now(&h, "quarterly", "after-the-backup").await;
    let d = drill_until(&h, "an active drill", "quarterly", |d| {
        d.status.as_ref().is_some_and(|s| {
            s.active
                .as_ref()
                .is_some_and(|a| a.step == lifeboat_api::drill_schedule::DrillStep::Restore)
        })
    })
    .await;
    let active = d.status.unwrap().active.unwrap();
    let start = active.started_at.0;
    assert!(
        jobs.get_opt(&backup_now_job("shop", "orders-db", &active.id))
            .await
            .unwrap()
            .is_none(),
        "the default drill takes no backup of its own"
    );
    // Its RestoreRequest is pinned to the backups taken before the simulated disaster: one the
    // schedule records before the request is planned is not restored in their place.
    let rr = h
        .api::<lifeboat_api::RestoreRequest>()
        .get(&active.id)
        .await
        .unwrap();
    assert_eq!(
        rr.spec.source.taken_before.as_ref(),
        Some(&active.started_at)
    );
    let job = restore_job_name(&active.id, "orders-db");
    h.until("the restore Job", async || {
        jobs.get_opt(&job).await.unwrap()
    })
    .await;
    h.finish_job(
        &job,
        &summary(Verb::Restore, "orders-db", true, Timestamp::now(), vec![]),
    )
    .await;
    let validate = validate_job_name(&active.id);
    h.until("the validation Job", async || {
        jobs.get_opt(&validate).await.unwrap()
    })
    .await;
    // The newest marker in the restored data: the one the scheduled backup wrote just before
    // its snapshot.
    let marker = lifeboat_api::agent_result::CanaryMarker {
        id: backup_id.clone(),
        written_at: snapshot - SignedDuration::from_millis(200),
    };
    let checks = vec![
        CheckResult {
            name: "orders-present".into(),
            passed: true,
            message: String::new(),
            attempts: 1,
            duration_seconds: 0.1,
            canary: None,
        },
        CheckResult {
            name: lifeboat_api::restore_request::canary_check_name("orders-db"),
            passed: true,
            message: String::new(),
            attempts: 1,
            duration_seconds: 0.01,
            canary: Some(marker),
        },
    ];
    h.finish_job(
        &validate,
        &summary(Verb::Restore, "validation", true, Timestamp::now(), checks),
    )
    .await;
    let d = drill_until(&h, "the drill record", "quarterly", |d| {
        d.status
            .as_ref()
            .and_then(|s| s.last_run.as_ref())
            .is_some_and(|r| r.id == active.id)
    })
    .await;
    let status = d.status.unwrap();
    let run = status.last_run.unwrap();
    assert_eq!(run.verdict, DrillVerdict::Passed, "{}", run.message);
    let expected = (start.as_millisecond() - snapshot.as_millisecond()) as f64 / 1000.0;
    let rpo = run.rpo_seconds.unwrap();
    assert!(rpo >= 3.0, "the writes after the backup are lost: {rpo}");
    assert!((rpo - expected).abs() < 0.001, "{rpo} vs {expected}");
    let canary = run.rpo_canary_seconds.unwrap();
    assert!(
        (canary - rpo - 0.2).abs() < 0.001,
        "canary {canary} = RPO {rpo} + the 200 ms before the snapshot"
    );
    assert_eq!(run.backups.len(), 1);
    assert_eq!(run.backups[0].id, backup_id);
    assert_eq!(run.backups[0].snapshot_time.as_ref().unwrap().0, snapshot);
    assert_eq!(run.backups[0].rpo_seconds, Some(rpo));
    let c = find(&status.conditions, types::RPO_MET).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "WithinObjective")
    );
}
