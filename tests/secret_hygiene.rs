//! Secret values never leave their Secrets: after a backup, a restore and a drill driven through
//! the operator with recognisable secret values (database and Redis passwords, S3 keys, an age
//! identity, a webhook URL's token), none of them appears in any CronJob, Job or Pod spec,
//! status, Event, condition or metric, in anything the operator logs (every level, the Kubernetes
//! client's included), or in what the drill's webhook receives. (The agent's side — output,
//! termination message, metadata, argv — is crates/lifeboat-agent/tests/auth.rs and notify.rs.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/agent.rs"]
mod agent;
#[path = "common/harness.rs"]
mod harness;

use std::sync::{Arc, Mutex, OnceLock};

use harness::{assert_absent, harness};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use lifeboat_api::agent_result::{AgentSummary, SUMMARY_VERSION, Verb};
use lifeboat_api::{BackupPolicy, DrillSchedule, RestoreRequest};
use serde_json::json;

const VALUES: [&str; 5] = [
    "pg-pass-7f3a9c21-canary",
    "redis-pass-51be0d77-canary",
    "AKIA-canary-0d6e",
    "s3-secret-key-9a1f4e-canary",
    "AGE-SECRET-KEY-1CANARY0QQQQ",
];

/// Everything the controllers of this test binary log, at every level, the Kubernetes client's
/// and runtime's included: installed before any harness (whose own subscriber then stays out).
fn operator_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "lifeboat_operator=trace,kube=trace,kube_runtime=trace,kube_client=trace,info",
            ))
            .with_writer(move || Sink(sink.clone()))
            .with_ansi(false)
            .init();
        logs
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut logs) = self.0.lock() {
            logs.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_value_reaches_specs_status_events_or_metrics() {
    let logs = operator_logs();
    let h = harness("secrets").await;
    for (name, data) in [
        ("pg", json!({"password": VALUES[0]})),
        ("cache", json!({"password": VALUES[1]})),
        (
            "s3",
            json!({"AWS_ACCESS_KEY_ID": VALUES[2], "AWS_SECRET_ACCESS_KEY": VALUES[3]}),
        ),
        ("age", json!({"identity": VALUES[4]})),
    ] {
        let s: Secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
                .unwrap();
        h.api::<Secret>()
            .create(&PostParams::default(), &s)
            .await
            .unwrap();
    }
    h.apply_policy(
        "shop",
        json!({
            "schedule": "0 * * * *",
            "assets": [
                {"name": "db", "postgres": {"host": "db", "user": "u", "databases": ["shop"],
                                           "passwordSecret": {"name": "pg", "key": "password"}}},
                {"name": "cache", "redis": {"host": "cache", "passwordSecret": {"name": "cache", "key": "password"}}}
            ],
            "retention": {"keepLast": 3},
            "destination": {"s3": {"endpoint": "http://s3:9000", "bucket": "backups", "forcePathStyle": true,
                                   "credentialsSecret": {"name": "s3"}}},
            "encryption": {"recipients": ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"],
                           "identitySecret": {"name": "age", "key": "identity"}},
            "objectives": {"rpo": "15m"}
        }),
    )
    .await;
    h.policy_until("shop", "a status", |p| p.status.is_some())
        .await;
    h.api::<BackupPolicy>()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"lifeboat.dev/backup-now": "t1"}}})),
        )
        .await
        .unwrap();
    for asset in ["db", "cache"] {
        let job = lifeboat_operator::names::backup_now_job("shop", asset, "t1");
        h.until("the on-demand Job", async || {
            h.api::<Job>().get_opt(&job).await.unwrap()
        })
        .await;
        let t = Timestamp::now();
        let summary = AgentSummary {
            version: SUMMARY_VERSION,
            verb: Verb::Backup,
            ok: true,
            asset: Some(asset.into()),
            backup_id: Some(format!("20261124T1000{asset}")),
            started_at: t,
            finished_at: t,
            snapshot_time: Some(t),
            stored_bytes: Some(10),
            sha256: Some("ab".into()),
            error_class: None,
            message: None,
            checks: vec![],
            retention_refused: None,
            copies: Vec::new(),
        };
        h.finish_job(&job, &summary).await;
    }
    h.policy_until("shop", "both backups", |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.assets.iter().all(|a| a.last_success.is_some()))
    })
    .await;
    let restore = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
        "metadata": {"name": "back"},
        "spec": {"source": {"policy": "shop"}, "execute": true, "rollbackOnFailure": true,
                 "targets": [{"asset": "db", "postgres": {"host": "staging", "user": "u",
                              "passwordSecret": {"name": "pg", "key": "password"}}}]}});
    h.api::<RestoreRequest>()
        .patch("back", &PatchParams::apply("test"), &Patch::Apply(&restore))
        .await
        .unwrap();
    let drill = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "DrillSchedule",
        "metadata": {"name": "weekly", "annotations": {"lifeboat.dev/drill-now": "d1"}},
        "spec": {"schedule": "0 6 * * 1", "policy": "shop", "assets": ["db"],
                 "staging": {"targets": [{"asset": "db", "postgres": {"host": "staging", "user": "u",
                              "passwordSecret": {"name": "pg", "key": "password"}}}]},
                 "backup": "Fresh", "objectives": {"rto": "30m", "rpo": "15m"}}});
    h.api::<DrillSchedule>()
        .patch("weekly", &PatchParams::apply("test"), &Patch::Apply(&drill))
        .await
        .unwrap();
    // Wait until the restore's safety backup and the drill's fresh backups exist: every kind of
    // Job the operator makes is then in the namespace.
    let jobs = h.api::<Job>();
    h.until("restore and drill Jobs", async || {
        let names: Vec<String> = jobs
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|j| j.metadata.name)
            .collect();
        (names.iter().any(|n| n.starts_with("back-safety")) && names.len() >= 4).then_some(names)
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;

    let lp = ListParams::default();
    let mut haystack = String::new();
    haystack += &serde_json::to_string(&h.api::<CronJob>().list(&lp).await.unwrap().items).unwrap();
    haystack += &serde_json::to_string(&jobs.list(&lp).await.unwrap().items).unwrap();
    haystack += &serde_json::to_string(&h.api::<Pod>().list(&lp).await.unwrap().items).unwrap();
    haystack += &serde_json::to_string(&h.api::<Event>().list(&lp).await.unwrap().items).unwrap();
    haystack +=
        &serde_json::to_string(&h.api::<BackupPolicy>().list(&lp).await.unwrap().items).unwrap();
    haystack +=
        &serde_json::to_string(&h.api::<RestoreRequest>().list(&lp).await.unwrap().items).unwrap();
    haystack +=
        &serde_json::to_string(&h.api::<DrillSchedule>().list(&lp).await.unwrap().items).unwrap();
    haystack += &h.metrics.render();
    assert!(haystack.len() > 10_000, "the haystack holds the objects");
    assert!(
        haystack.contains("\"secretName\":\"pg\"") || haystack.contains("\"name\":\"pg\""),
        "the Secrets are referenced by name"
    );
    for v in VALUES {
        assert!(!haystack.contains(v), "{v} leaked");
    }
    // The signing keys: the master key and the namespace's derived key, in every form a leak
    // would take (the text, base64 as in a Secret, hex); the derived key's Secret is referenced.
    assert!(haystack.contains("\"secretName\":\"lifeboat-signing-key\""));
    let derived = harness::namespace_key(&h.ns);
    let master_text = String::from_utf8(harness::MASTER_KEY.to_vec()).unwrap();
    assert!(
        !haystack.contains(&master_text),
        "the master signing key leaked"
    );
    for (what, key) in [
        ("master", harness::MASTER_KEY.to_vec()),
        ("derived", derived),
    ] {
        let base64 = serde_json::to_value(k8s_openapi::ByteString(key.clone())).unwrap();
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        for form in [base64.as_str().unwrap().to_owned(), hex] {
            assert!(!haystack.contains(&form), "the {what} signing key leaked");
        }
    }
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logged.contains("reconcile"),
        "the operator's logs are captured"
    );
    for v in VALUES {
        assert_absent(&logged, v, "the operator's logs");
    }
}

#[tokio::test]
async fn no_secret_reaches_the_operators_logs_or_the_webhook() {
    let logs = operator_logs();
    let h = harness("secrets-hook").await;
    let token = "hook-token-5c1d0e-canary";
    let (url, bodies) = harness::webhook_receiver(token).await;
    for (name, data) in [
        ("pg", json!({"password": VALUES[0]})),
        ("slack", json!({"url": url})),
    ] {
        let s: Secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
                .unwrap();
        h.api::<Secret>()
            .create(&PostParams::default(), &s)
            .await
            .unwrap();
    }
    h.apply_policy(
        "shop",
        json!({
            "schedule": "0 * * * *",
            "assets": [{"name": "db", "postgres": {"host": "db", "user": "u", "databases": ["shop"],
                                                  "passwordSecret": {"name": "pg", "key": "password"}}}],
            "retention": {"keepLast": 3},
            "destination": {"volume": {"claimName": "backups"}}
        }),
    )
    .await;
    let drill = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "DrillSchedule",
        "metadata": {"name": "weekly", "annotations": {"lifeboat.dev/drill-now": "d1"}},
        "spec": {"schedule": "0 6 * * 1", "policy": "shop", "assets": ["db"],
                 "staging": {"targets": [{"asset": "db", "postgres": {"host": "staging", "user": "u",
                              "passwordSecret": {"name": "pg", "key": "password"}}}]},
                 "backup": "Fresh", "objectives": {"rto": "30m", "rpo": "15m"},
                 "notification": {"webhookSecret": {"name": "slack", "key": "url"}, "when": "Always"}}});
    h.api::<DrillSchedule>()
        .patch("weekly", &PatchParams::apply("test"), &Patch::Apply(&drill))
        .await
        .unwrap();
    let api = h.api::<DrillSchedule>();
    let id = h
        .until("the active drill", async || {
            api.get("weekly")
                .await
                .unwrap()
                .status?
                .active
                .map(|a| a.id)
        })
        .await;
    // The fresh backup fails the way an agent reports a refused password: the drill's record,
    // Events and webhook message carry that message.
    let job = lifeboat_operator::names::backup_now_job("shop", "db", &id);
    h.until("the drill's backup Job", async || {
        h.api::<Job>().get_opt(&job).await.unwrap()
    })
    .await;
    let t = Timestamp::now();
    let failed = AgentSummary {
        version: SUMMARY_VERSION,
        verb: Verb::Backup,
        ok: false,
        asset: Some("db".into()),
        backup_id: None,
        started_at: t,
        finished_at: t,
        snapshot_time: None,
        stored_bytes: None,
        sha256: None,
        error_class: Some(lifeboat_api::agent_result::ErrorClass::Auth),
        message: Some("password authentication failed for user \"u\"".into()),
        checks: vec![],
        retention_refused: None,
        copies: Vec::new(),
    };
    h.finish_job(&job, &failed).await;
    let notify = format!("{id}-notify");
    h.until("the notify Job", async || {
        h.api::<Job>().get_opt(&notify).await.unwrap()
    })
    .await;
    let sent = agent::run_notify_job(&h, &notify).await;
    assert!(sent.ok, "{sent:?}");
    h.until("the notification recorded", async || {
        let n = api
            .get("weekly")
            .await
            .unwrap()
            .status?
            .last_run?
            .notification?;
        (n.state == lifeboat_api::drill_schedule::NotificationState::Sent).then_some(())
    })
    .await;
    // Let the reconciles after the outcome log too.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;

    let payloads = bodies.lock().unwrap().join("\n");
    assert!(payloads.contains("AuthFailed"), "{payloads}");
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logged.contains("weekly") && logged.contains("reconcile"),
        "the operator's logs are captured"
    );
    let lp = ListParams::default();
    let mut visible = serde_json::to_string(&api.list(&lp).await.unwrap().items).unwrap();
    visible += &serde_json::to_string(&h.api::<Job>().list(&lp).await.unwrap().items).unwrap();
    visible += &serde_json::to_string(&h.api::<Event>().list(&lp).await.unwrap().items).unwrap();
    for (where_, haystack) in [
        ("the webhook's payloads", &payloads),
        ("the operator's logs", &logged),
        ("status, Jobs and Events", &visible),
    ] {
        for v in [VALUES[0], token, url.as_str()] {
            assert_absent(haystack, v, where_);
        }
    }
}
