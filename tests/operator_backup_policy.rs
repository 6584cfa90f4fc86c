//! The BackupPolicy controller on the real control plane: CronJobs appear as specified, a Job
//! finished the way a kubelet would finish it turns into status, RPO, conditions and Events;
//! assets removed take their CronJob with them; on-demand backups run once per token; specs that
//! pass admission but cannot work are reported, never a panic; a `pointInTime` asset gets a WAL
//! archiver Deployment, owned, reported by `ArchiverReady`, and removed with the field.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/harness.rs"]
mod harness;

use std::time::Duration;

use futures::StreamExt;
use harness::{Harness, harness};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Event;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use lifeboat_api::BackupPolicy;
use lifeboat_api::agent_result::{AgentSummary, ErrorClass, SUMMARY_VERSION, Verb};
use lifeboat_api::conditions::{find, types};
use serde_json::{Value, json};

fn spec() -> Value {
    json!({
        "schedule": "0 * * * *",
        "timeZone": "Europe/Paris",
        "assets": [
            {"name": "orders-db", "postgres": {"host": "db", "user": "backup", "databases": ["orders"],
                                              "passwordSecret": {"name": "db-creds", "key": "password"}}},
            {"name": "sessions", "redis": {"host": "cache", "dataDir": "/data"}}
        ],
        "retention": {"keepLast": 24, "maxAge": "7d"},
        "destination": {"volume": {"claimName": "backups", "subPath": "shop"}},
        "objectives": {"rpo": "15m"}
    })
}

fn summary(asset: &str, ok: bool, snapshot: Timestamp) -> AgentSummary {
    AgentSummary {
        version: SUMMARY_VERSION,
        verb: Verb::Backup,
        ok,
        asset: Some(asset.into()),
        backup_id: ok.then(|| format!("{asset}-{}", snapshot.as_second())),
        started_at: snapshot,
        finished_at: Timestamp::now(),
        snapshot_time: ok.then_some(snapshot),
        stored_bytes: ok.then_some(4096),
        sha256: ok
            .then(|| "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into()),
        error_class: (!ok).then_some(ErrorClass::Storage),
        message: (!ok).then(|| "no space left on device".into()),
        checks: Vec::new(),
        retention_refused: None,
        copies: Vec::new(),
    }
}

fn condition(p: &BackupPolicy, type_: &str) -> Option<(String, String)> {
    let s = p.status.as_ref()?;
    find(&s.conditions, type_).map(|c| (c.status.clone(), c.reason.clone()))
}

/// The operator restarted, once it reconciled policy `shop` again (poked by an annotation).
async fn restarted(h: harness::Harness, policies: &kube::Api<BackupPolicy>) -> harness::Harness {
    let h = h.restart().await;
    policies
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"poke": "1"}}})),
        )
        .await
        .unwrap();
    h.until("the restarted operator's reconciles", async || {
        h.metrics
            .render()
            .lines()
            .any(|l| {
                l.starts_with("lifeboat_reconciles_total{kind=\"BackupPolicy\"}")
                    && !l.ends_with(" 0")
            })
            .then_some(())
    })
    .await;
    h
}

/// A new policy's status is written once: its Events go out after that write, and stay listed in
/// `pendingEvents` until the next write the status needs anyway drops them. A restarted operator,
/// which does not remember publishing them, does not publish them twice (their names answer 409).
#[tokio::test]
async fn a_new_policy_costs_one_status_write_and_its_events_go_out_once_across_a_restart() {
    let h = harness("bp-once").await;
    h.secret("db-creds").await;
    let policies = h.api::<BackupPolicy>();
    // Every change of the policy from before it exists: its creation, then each status write.
    let mut changes = policies
        .watch(&WatchParams::default().fields("metadata.name=shop"), "0")
        .await
        .unwrap()
        .boxed();
    h.apply_policy("shop", spec()).await;
    h.expect_events("Scheduled", 1).await;
    let mut versions = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(3), changes.next()).await {
        match event.unwrap() {
            WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                versions.push((p.resource_version(), p.status.is_some()))
            }
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let writes = versions.iter().filter(|(_, status)| *status).count();
    assert_eq!(writes, 1, "status writes: {versions:?}");
    let listed = |p: &BackupPolicy| -> Vec<String> {
        p.status
            .as_ref()
            .unwrap()
            .pending_events
            .iter()
            .map(|e| e.id.clone())
            .collect()
    };
    let before = listed(&policies.get("shop").await.unwrap());
    assert!(
        before
            .iter()
            .any(|id| id.starts_with("Ready/True/Scheduled/")),
        "the published Events stay listed until the next write: {before:?}"
    );

    // Restarted, it reconciles the policy again: nothing is published twice.
    let h = restarted(h, &policies).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.expect_events("Scheduled", 1).await;

    // The next change of the status is written without them.
    let snapshot = Timestamp::now() - jiff::SignedDuration::from_secs(60);
    h.run_cronjob("shop-orders-db", "shop-orders-db-1").await;
    h.finish_job("shop-orders-db-1", &summary("orders-db", true, snapshot))
        .await;
    h.expect_events("BackupSucceeded", 1).await;
    let after = listed(&policies.get("shop").await.unwrap());
    assert!(
        after.iter().all(|id| !before.contains(id)),
        "dropped by the next write: {after:?}"
    );
    h.expect_events("Scheduled", 1).await;
}

/// Published Events are not left listed until kube-apiserver forgets them (`--event-ttl`): once
/// they have lingered, a write of their own drops them from the status, so an operator restarted
/// after the API server deleted them does not publish them again. Here they linger 3 s, not the
/// operator's minutes, and the test deletes the Events as the TTL would.
#[tokio::test]
async fn listed_events_are_dropped_before_the_api_server_forgets_them_and_not_published_again() {
    let h = harness("bp-linger")
        .await
        .restart_with_linger(Duration::from_secs(3))
        .await;
    h.secret("db-creds").await;
    let policies = h.api::<BackupPolicy>();
    h.apply_policy("shop", spec()).await;
    h.expect_events("Scheduled", 1).await;
    let published: Vec<String> = h
        .events("Scheduled")
        .await
        .iter()
        .filter_map(|e| e.metadata.name.clone())
        .collect();
    h.until("the published Events dropped from the status", async || {
        let p = policies.get("shop").await.unwrap();
        let s = p.status?;
        let ready = find(&s.conditions, types::READY)?;
        (ready.reason == "Scheduled"
            && !s
                .pending_events
                .iter()
                .any(|e| e.id.starts_with("Ready/True/Scheduled/")))
        .then_some(())
    })
    .await;

    // kube-apiserver's Event TTL: the Events are gone. A restarted operator publishes none again.
    for name in &published {
        h.api::<Event>()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    assert!(h.events("Scheduled").await.is_empty());
    let h = restarted(h, &policies).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        h.events("Scheduled").await.is_empty(),
        "published again after a restart"
    );
}

#[tokio::test]
async fn a_policy_becomes_cronjobs_and_finished_jobs_become_status_rpo_and_events() {
    let h = harness("bp-flow").await;
    h.secret("db-creds").await;
    h.apply_policy("shop", spec()).await;

    let cronjobs = h.api::<CronJob>();
    let cj = h
        .until("two CronJobs", async || {
            let l = cronjobs.list(&ListParams::default()).await.unwrap().items;
            (l.len() == 2).then_some(l)
        })
        .await;
    let db = cj
        .iter()
        .find(|c| c.name_any() == "shop-orders-db")
        .expect("deterministic name");
    let s = db.spec.as_ref().unwrap();
    assert_eq!(
        (s.schedule.as_str(), s.time_zone.as_deref()),
        ("0 * * * *", Some("Europe/Paris"))
    );
    assert_eq!(s.concurrency_policy.as_deref(), Some("Forbid"));
    assert_eq!(db.owner_references()[0].kind, "BackupPolicy");

    let p = h
        .policy_until("shop", "a first status", |p| {
            condition(p, types::READY).is_some()
        })
        .await;
    assert_eq!(
        condition(&p, types::READY),
        Some(("True".into(), "Scheduled".into()))
    );
    assert_eq!(
        condition(&p, types::RPO_MET),
        Some(("False".into(), "NoBackupYet".into()))
    );
    assert_eq!(
        p.status.as_ref().unwrap().observed_generation,
        p.metadata.generation
    );

    // The scheduled run of each asset, finished with the agent's report.
    let snapshot = Timestamp::now() - jiff::SignedDuration::from_secs(120);
    h.run_cronjob("shop-orders-db", "shop-orders-db-1").await;
    h.finish_job("shop-orders-db-1", &summary("orders-db", true, snapshot))
        .await;
    h.run_cronjob("shop-sessions", "shop-sessions-1").await;
    h.finish_job("shop-sessions-1", &summary("sessions", true, snapshot))
        .await;

    let p = h
        .policy_until("shop", "RPOMet=True", |p| {
            condition(p, types::RPO_MET).is_some_and(|c| c.0 == "True")
        })
        .await;
    let status = p.status.unwrap();
    let db = &status.assets[0];
    let last = db.last_success.as_ref().unwrap();
    assert_eq!(last.id, format!("orders-db-{}", snapshot.as_second()));
    assert_eq!(last.stored_bytes, 4096);
    assert_eq!(last.snapshot_time.0.as_second(), snapshot.as_second());
    let rpo = status.rpo_seconds.unwrap();
    assert!((120..180).contains(&rpo), "rpo {rpo}");
    assert_eq!(status.asset_count, Some(2));
    h.expect_events("BackupSucceeded", 2).await;
    let metrics = h.metrics.render();
    assert!(
        metrics.contains("lifeboat_backup_bytes{asset=\"orders-db\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("lifeboat_rpo_objective_seconds"),
        "{metrics}"
    );
    let metric = |name: &str| {
        let m = h.metrics.render();
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let rpo_metric = metric("lifeboat_rpo_seconds{asset=\"orders-db\"").unwrap();
    assert!(
        (120.0..180.0).contains(&rpo_metric),
        "rpo metric {rpo_metric}"
    );
    assert_eq!(metric("lifeboat_rpo_objective_met{"), Some(1.0));

    // A failed run: Ready turns False with the agent's failure class; the good backup stays.
    h.run_cronjob("shop-orders-db", "shop-orders-db-2").await;
    h.finish_job(
        "shop-orders-db-2",
        &summary("orders-db", false, Timestamp::now()),
    )
    .await;
    let p = h
        .policy_until("shop", "Ready=False", |p| {
            condition(p, types::READY).is_some_and(|c| c.0 == "False")
        })
        .await;
    assert_eq!(condition(&p, types::READY).unwrap().1, "BackupFailing");
    let db = &p.status.as_ref().unwrap().assets[0];
    assert_eq!(db.last_failure.as_ref().unwrap().reason, "StorageFailed");
    assert_eq!(db.consecutive_failures, 1);
    assert!(db.last_success.is_some());
    // Events are published after the status write this test waited for: await them too.
    h.expect_events("BackupFailed", 1).await;
    let warnings = h.events("BackupFailed").await;
    assert_eq!(warnings[0].type_.as_deref(), Some("Warning"));
    // No secret value anywhere the controller writes.
    let everything = format!(
        "{:?}{:?}{:?}",
        p,
        cronjobs.list(&ListParams::default()).await.unwrap(),
        h.api::<Event>().list(&ListParams::default()).await.unwrap()
    );
    assert!(!everything.contains("s3cr3t-value"));

    // Removing an asset removes its CronJob; deleting the policy collects the rest.
    let mut one = spec();
    one["assets"].as_array_mut().unwrap().pop();
    h.apply_policy("shop", one).await;
    h.until("the sessions CronJob to go", async || {
        cronjobs
            .get_opt("shop-sessions")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(cronjobs.get_opt("shop-orders-db").await.unwrap().is_some());
}

#[tokio::test]
async fn a_retention_pass_the_guard_refused_is_a_condition_an_event_and_a_metric() {
    let h = harness("bp-guard").await;
    h.secret("db-creds").await;
    h.apply_policy("shop", spec()).await;
    let gauge = || {
        let m = h.metrics.render();
        m.lines()
            .find(|l| {
                l.starts_with("lifeboat_retention_refused{")
                    && l.contains("asset=\"orders-db\"")
                    && l.contains("namespace=\"bp-guard")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };

    let cronjobs = h.api::<CronJob>();
    h.until("the orders-db CronJob", async || {
        cronjobs
            .get_opt("shop-orders-db")
            .await
            .unwrap()
            .map(|_| ())
    })
    .await;
    // The agent's summary of a good backup whose retention pass the guard refused.
    let mut refused = summary("orders-db", true, Timestamp::now());
    refused.retention_refused = Some(
        "refusing to delete 23 of 30 backups of asset orders-db in one pass (more than 50%)".into(),
    );
    h.run_cronjob("shop-orders-db", "shop-orders-db-1").await;
    h.finish_job("shop-orders-db-1", &refused).await;
    let p = h
        .policy_until("shop", "RetentionApplied=False", |p| {
            condition(p, types::RETENTION_APPLIED).is_some_and(|c| c.0 == "False")
        })
        .await;
    assert_eq!(
        condition(&p, types::RETENTION_APPLIED).unwrap().1,
        "MassDeletionRefused"
    );
    let status = p.status.unwrap();
    assert!(status.assets[0].last_success.is_some(), "the backup counts");
    assert_eq!(condition_of(&status, types::READY), "True");
    h.expect_events("MassDeletionRefused", 1).await;
    let event = &h.events("MassDeletionRefused").await[0];
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(
        event
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("23 of 30"),
        "{event:?}"
    );
    assert_eq!(gauge(), Some(1.0));

    // The next backup's pass goes through: the condition turns True, one Event, gauge 0.
    h.run_cronjob("shop-orders-db", "shop-orders-db-2").await;
    h.finish_job(
        "shop-orders-db-2",
        &summary("orders-db", true, Timestamp::now()),
    )
    .await;
    h.policy_until("shop", "RetentionApplied=True", |p| {
        condition(p, types::RETENTION_APPLIED).is_some_and(|c| c.0 == "True")
    })
    .await;
    h.expect_events("RetentionApplied", 1).await;
    h.expect_events("MassDeletionRefused", 1).await;
    assert_eq!(gauge(), Some(0.0));
}

fn condition_of(s: &lifeboat_api::backup_policy::BackupPolicyStatus, type_: &str) -> String {
    find(&s.conditions, type_)
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn an_on_demand_backup_runs_once_per_token() {
    let h = harness("bp-now").await;
    h.secret("db-creds").await;
    h.apply_policy("shop", spec()).await;
    h.policy_until("shop", "a first status", |p| p.status.is_some())
        .await;
    let policies = h.api::<BackupPolicy>();
    let annotate = |token: &'static str| {
        let policies = policies.clone();
        async move {
            policies
                .patch(
                    "shop",
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"annotations": {"lifeboat.dev/backup-now": token}}}),
                    ),
                )
                .await
                .unwrap();
        }
    };
    annotate("first").await;
    h.policy_until("shop", "the token recorded", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.last_backup_now_token.as_deref())
            == Some("first")
    })
    .await;
    let jobs = h.api::<Job>();
    let listed = jobs.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(listed.len(), 2, "one Job per asset");
    assert!(
        listed
            .iter()
            .all(|j| j.owner_references()[0].kind == "BackupPolicy")
    );
    // Reconciles after the token was handled create nothing more.
    h.apply_policy("shop", {
        let mut s = spec();
        s["suspend"] = json!(true);
        s
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        jobs.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
    annotate("second").await;
    h.until("two more Jobs", async || {
        (jobs.list(&ListParams::default()).await.unwrap().items.len() == 4).then_some(())
    })
    .await;
    h.expect_events("BackupRequested", 2).await;
    // suspend reached the CronJobs.
    let cj = h.api::<CronJob>().get("shop-orders-db").await.unwrap();
    assert_eq!(cj.spec.unwrap().suspend, Some(true));
}

#[tokio::test]
async fn specs_that_pass_admission_but_cannot_work_are_reported_not_fatal() {
    let h = harness("bp-bad").await;
    // The Secret is missing. The operator cannot read Secrets, not even to see that one exists:
    // the CronJob is made, its Secret volume optional, and the first run says what is missing.
    h.apply_policy("needs-secret", spec()).await;
    let cronjob = "needs-secret-orders-db";
    let cj = h
        .until("the CronJob", async || {
            h.api::<CronJob>().get_opt(cronjob).await.unwrap()
        })
        .await;
    let pod = cj
        .spec
        .unwrap()
        .job_template
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let volume = pod
        .volumes
        .unwrap()
        .into_iter()
        .find_map(|v| v.secret)
        .unwrap();
    assert_eq!(
        (volume.secret_name.as_deref(), volume.optional),
        (Some("db-creds"), Some(true))
    );
    h.run_cronjob(cronjob, "needs-secret-run-1").await;
    let mut missing = summary("orders-db", false, Timestamp::now());
    missing.error_class = Some(ErrorClass::SecretNotFound);
    missing.message =
        Some("Secret \"db-creds\" with key \"password\" not found in the namespace".into());
    h.finish_job("needs-secret-run-1", &missing).await;
    let p = h
        .policy_until("needs-secret", "SecretNotFound", |p| {
            condition(p, types::READY).is_some_and(|c| c.1 == "SecretNotFound")
        })
        .await;
    let ready = find(&p.status.as_ref().unwrap().conditions, types::READY).unwrap();
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("db-creds"), "{}", ready.message);
    h.expect_events("SecretNotFound", 1).await;
    // Creating it lets the next run, and the policy, converge without any edit.
    h.secret("db-creds").await;
    h.run_cronjob(cronjob, "needs-secret-run-2").await;
    h.finish_job(
        "needs-secret-run-2",
        &summary("orders-db", true, Timestamp::now()),
    )
    .await;
    h.policy_until("needs-secret", "Ready=True after the Secret appears", |p| {
        condition(p, types::READY).is_some_and(|c| c.0 == "True")
    })
    .await;

    // A schedule of the right shape that no cron accepts: InvalidSpec, nothing created.
    let mut s = spec();
    s["schedule"] = json!("61 * * * *");
    h.apply_policy("bad-minute", s).await;
    let p = h
        .policy_until("bad-minute", "InvalidSpec", |p| {
            condition(p, types::READY).is_some_and(|c| c.1 == "InvalidSpec")
        })
        .await;
    let message = &find(&p.status.as_ref().unwrap().conditions, types::READY)
        .unwrap()
        .message;
    assert!(message.contains("61 * * * *"), "{message}");
    assert!(
        h.api::<CronJob>()
            .get_opt("bad-minute-orders-db")
            .await
            .unwrap()
            .is_none()
    );
    h.until("the InvalidSpec Warning", async || {
        (!h.events("InvalidSpec").await.is_empty()).then_some(())
    })
    .await;

    // Deleting a policy garbage-collects its CronJobs (owner references).
    h.api::<BackupPolicy>()
        .delete("needs-secret", &DeleteParams::foreground())
        .await
        .unwrap();
    let cronjobs = h.api::<CronJob>();
    h.until("the CronJobs to be collected", async || {
        cronjobs
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
}

/// The namespaces of these tests enforce Pod Security "restricted" (see the harness), so every
/// agent pod the operator's Jobs created above passed it; here, proof that the enforcement bites.
#[tokio::test]
async fn the_test_namespaces_refuse_pods_that_are_not_restricted() {
    let h = harness("bp-pss").await;
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "lax"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    let err = h
        .api::<k8s_openapi::api::core::v1::Pod>()
        .create(&kube::api::PostParams::default(), &pod)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("violates PodSecurity \"restricted:latest\""),
        "{err}"
    );
}

#[tokio::test]
async fn a_host_network_asked_for_in_the_pod_template_never_reaches_an_agent_pod() {
    use kube::api::{ApiResource, DynamicObject, PostParams};
    let h = harness("bp-hostnet").await;
    let policy = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
    "metadata": {"name": "shop"},
    "spec": {
        "schedule": "0 * * * *",
        "assets": [{"name": "sessions", "redis": {"host": "cache", "dataDir": "/data"}}],
        "retention": {"keepLast": 3},
        "destination": {"volume": {"claimName": "backups"}},
        "podTemplate": {"hostNetwork": true, "labels": {"team": "shop"}}
    }});
    let api = kube::Api::<DynamicObject>::namespaced_with(
        h.client.clone(),
        &h.ns,
        &ApiResource::erase::<BackupPolicy>(&()),
    );
    // A server-side apply names the field the schema does not have.
    let refused = api
        .patch(
            "shop",
            &PatchParams::apply("test-user"),
            &Patch::Apply(&policy),
        )
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains(".spec.podTemplate.hostNetwork"),
        "{refused}"
    );
    // A plain create is pruned: neither the stored policy nor its agent pods carry it.
    api.create(
        &PostParams::default(),
        &serde_json::from_value(policy).unwrap(),
    )
    .await
    .unwrap();
    let stored = api.get("shop").await.unwrap();
    assert!(
        stored.data["spec"]["podTemplate"]
            .get("hostNetwork")
            .is_none(),
        "{:?}",
        stored.data["spec"]["podTemplate"]
    );
    let cj = h
        .until("the CronJob", async || {
            h.api::<CronJob>()
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .next()
        })
        .await;
    let template = cj.spec.unwrap().job_template.spec.unwrap().template;
    assert_eq!(
        template.metadata.unwrap().labels.unwrap()["team"],
        "shop",
        "the rest of the pod template is honoured"
    );
    assert_eq!(template.spec.unwrap().host_network, None);
}

/// An hourly schedule cannot meet a 15-minute objective whatever the backups do: the policy says
/// so before its first backup (the gap alone), adds the measured backup duration once there is
/// one, and a schedule dense enough turns the condition True.
#[tokio::test]
async fn a_schedule_too_sparse_for_the_rpo_objective_is_a_condition() {
    let h = harness("bp-achievable").await;
    h.secret("db-creds").await;
    // Hourly in Europe/Paris, objective 15m (spec()).
    h.apply_policy("shop", spec()).await;
    let p = h
        .policy_until("shop", "RPOAchievable=False", |p| {
            condition(p, types::RPO_ACHIEVABLE).is_some_and(|c| c.0 == "False")
        })
        .await;
    let status = p.status.unwrap();
    let c = find(&status.conditions, types::RPO_ACHIEVABLE).unwrap();
    assert_eq!(c.reason, "ScheduleTooSparse");
    assert!(
        c.message.contains("worst case 1h") && c.message.contains("objective 15m"),
        "{}",
        c.message
    );
    assert!(
        c.message.contains("no backup measured yet"),
        "{}",
        c.message
    );
    let w = status.worst_case_rpo.unwrap();
    assert_eq!(
        (w.seconds, w.schedule_gap_seconds, w.backup_seconds),
        (3600, 3600, None)
    );
    h.expect_events("ScheduleTooSparse", 1).await;

    // A backup that took 40 s from its snapshot to its metadata: counted in the worst case.
    h.until("the CronJob", async || {
        h.api::<CronJob>().get_opt("shop-orders-db").await.unwrap()
    })
    .await;
    h.run_cronjob("shop-orders-db", "shop-run-1").await;
    let mut took = summary(
        "orders-db",
        true,
        Timestamp::now() - jiff::SignedDuration::from_secs(40),
    );
    took.finished_at = Timestamp::now();
    h.finish_job("shop-run-1", &took).await;
    let p = h
        .policy_until("shop", "the backup's duration in the worst case", |p| {
            p.status
                .as_ref()
                .and_then(|s| s.worst_case_rpo.as_ref())
                .is_some_and(|w| w.backup_seconds.is_some())
        })
        .await;
    let w = p.status.unwrap().worst_case_rpo.unwrap();
    let backup = w.backup_seconds.unwrap();
    assert!((40..=42).contains(&backup), "{w:?}");
    assert_eq!(w.seconds, 3600 + backup);

    // Every five minutes meets it: True, the gap and the backup within 15 minutes.
    let mut dense = spec();
    dense["schedule"] = json!("*/5 * * * *");
    h.apply_policy("shop", dense).await;
    let p = h
        .policy_until("shop", "RPOAchievable=True", |p| {
            condition(p, types::RPO_ACHIEVABLE).is_some_and(|c| c.0 == "True")
        })
        .await;
    let status = p.status.unwrap();
    assert_eq!(
        find(&status.conditions, types::RPO_ACHIEVABLE)
            .unwrap()
            .reason,
        "WithinObjective"
    );
    assert_eq!(status.worst_case_rpo.unwrap().schedule_gap_seconds, 300);
}

#[tokio::test]
async fn a_point_in_time_asset_gets_an_owned_archiver_that_goes_with_the_field() {
    let h = harness("bp-pitr").await;
    let d = apply_point_in_time_policy(&h).await;
    let deployments = h.api::<Deployment>();
    let policy = h.api::<BackupPolicy>().get("shop").await.unwrap();
    let owner = &d.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("BackupPolicy", policy.uid().unwrap().as_str(), Some(true))
    );
    assert!(
        d.managed_fields().iter().any(|f| f.manager.as_deref()
            == Some(lifeboat_operator::config::FIELD_MANAGER)
            && f.operation.as_deref() == Some("Apply")),
        "server-side applied by the operator"
    );
    let ds = d.spec.as_ref().unwrap();
    assert_eq!(ds.replicas, Some(1));
    let pod = ds.template.spec.as_ref().unwrap();
    assert_eq!(pod.containers[0].args.as_ref().unwrap()[0], "wal-archive");
    let mounted: Vec<&str> = pod
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.secret.as_ref()?.secret_name.as_deref())
        .collect();
    assert!(mounted.contains(&"wal-creds"), "{mounted:?}");
    assert!(
        deployments
            .get_opt("shop-sessions-wal")
            .await
            .unwrap()
            .is_none()
    );
    // The namespace enforces Pod Security "restricted": the ReplicaSet's pod was admitted.
    let pods = h
        .until("the archiver's pod", async || {
            let l = h
                .api::<k8s_openapi::api::core::v1::Pod>()
                .list(&ListParams::default().labels("lifeboat.dev/role=wal-archive"))
                .await
                .unwrap()
                .items;
            (!l.is_empty()).then_some(l)
        })
        .await;
    assert_eq!(pods.len(), 1);

    // No node runs the pod here: the archiver is not available, and the policy says so.
    let p = h
        .policy_until("shop", "ArchiverReady", |p| {
            condition(p, types::ARCHIVER_READY).is_some()
        })
        .await;
    assert_eq!(
        condition(&p, types::ARCHIVER_READY),
        Some(("False".into(), "ArchiverUnavailable".into()))
    );
    // Its lag bound: the readiness allowance (3 + 30 + 5 s) plus the time it has been down.
    let lag = p.status.as_ref().unwrap().assets[0]
        .wal_archive_lag_seconds
        .unwrap();
    assert!((38..120).contains(&lag), "lag {lag}");
    assert!(
        p.status.as_ref().unwrap().assets[1]
            .wal_archive_lag_seconds
            .is_none()
    );
    let metrics = h.metrics.render();
    assert!(
        metrics.contains("lifeboat_wal_archive_lag_seconds{asset=\"orders-db\""),
        "{metrics}"
    );

    // The field dropped: the archiver is scaled to zero, then a Job of its own pod drops its
    // slot (played here: no node), then the Deployment and the Job go, and so does the condition.
    h.apply_policy("shop", spec()).await;
    h.until("the archiver scaled to zero", async || {
        let d = deployments.get("shop-orders-db-wal").await.unwrap();
        (d.spec.unwrap().replicas == Some(0)).then_some(())
    })
    .await;
    let p = h
        .policy_until("shop", "ReleasingSlot", |p| {
            condition(p, types::ARCHIVER_READY).is_some_and(|(_, r)| r == "ReleasingSlot")
        })
        .await;
    assert_eq!(
        condition(&p, types::ARCHIVER_READY).unwrap().0,
        "False",
        "its slot still holds WAL"
    );
    let release = release_job(&h).await;
    let release_name = release.name_any();
    assert!(
        release_name.starts_with("shop-orders-db-wal-release-"),
        "{release_name}"
    );
    let pod = release.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.containers[0].args.as_deref(),
        Some(&["wal-release".to_owned()][..])
    );
    h.finish_job(&release_name, &summary("orders-db", true, Timestamp::now()))
        .await;
    h.expect_events("WalSlotReleased", 1).await;
    h.until("the archiver to go", async || {
        deployments
            .get_opt("shop-orders-db-wal")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let p = h
        .policy_until("shop", "no ArchiverReady", |p| {
            condition(p, types::ARCHIVER_READY).is_none()
        })
        .await;
    assert!(
        p.status.unwrap().assets[0]
            .wal_archive_lag_seconds
            .is_none()
    );
    assert!(
        !h.metrics
            .render()
            .contains("lifeboat_wal_archive_lag_seconds{"),
        "the lag series goes with the archiver"
    );
    let p = h.api::<BackupPolicy>().get("shop").await.unwrap();
    assert!(
        p.finalizers().is_empty(),
        "nothing left to release: {:?}",
        p.finalizers()
    );
}

/// Policy `shop` whose `orders-db` archives WAL (`pointInTime`): its archiver Deployment.
async fn apply_point_in_time_policy(h: &Harness) -> Deployment {
    let mut with = spec();
    with["assets"][0]["postgres"]["pointInTime"] = json!({
        "user": "lifeboat_wal",
        "passwordSecret": {"name": "wal-creds", "key": "password"},
        "partialUploadSeconds": 3
    });
    h.apply_policy("shop", with).await;
    let deployments = h.api::<Deployment>();
    h.until("the archiver Deployment", async || {
        deployments.get_opt("shop-orders-db-wal").await.unwrap()
    })
    .await
}

/// The Job that releases a retired archiver's slot, once made.
async fn release_job(h: &Harness) -> Job {
    h.until("the release Job", async || {
        h.api::<Job>()
            .list(&ListParams::default().labels("lifeboat.dev/role=wal-release"))
            .await
            .unwrap()
            .items
            .pop()
    })
    .await
}

/// Deleting a policy whose asset archives WAL: its finalizer (added before the archiver existed)
/// holds it until the archiver is stopped and a release Job (played here: no node) dropped the
/// slot; only then does the policy go. Owner references alone would delete the archiver and leave
/// its slot keeping WAL on the source.
#[tokio::test]
async fn deleting_a_point_in_time_policy_releases_its_slot_before_the_policy_goes() {
    let h = harness("bp-pitr-del").await;
    apply_point_in_time_policy(&h).await;
    let deployments = h.api::<Deployment>();
    let policies = h.api::<BackupPolicy>();
    let p = policies.get("shop").await.unwrap();
    assert_eq!(p.finalizers(), ["lifeboat.dev/wal-slot"]);

    policies
        .delete("shop", &DeleteParams::background())
        .await
        .unwrap();
    h.until("the archiver scaled to zero", async || {
        let d = deployments.get("shop-orders-db-wal").await.unwrap();
        (d.spec.unwrap().replicas == Some(0)).then_some(())
    })
    .await;
    let release = release_job(&h).await;
    let held = policies.get_opt("shop").await.unwrap();
    assert!(
        held.is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
        "the policy waits for its slot"
    );
    h.finish_job(
        &release.name_any(),
        &summary("orders-db", true, Timestamp::now()),
    )
    .await;
    h.expect_events("WalSlotReleased", 1).await;
    h.until("the policy to go", async || {
        policies
            .get_opt("shop")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}
