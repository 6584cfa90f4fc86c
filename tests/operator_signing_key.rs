//! Each namespace's signing key, on the real control plane with the controllers running as the
//! chart's ServiceAccount: derived from the master key and applied as `lifeboat-signing-key`
//! before any Job of the namespace can run, different in every namespace, mounted by every agent
//! Job, put back when someone changes it; and without the master key, no CronJob or Job at all
//! and `Ready=False` with reason `SigningKeyMissing` on policies, requests and drills.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/harness.rs"]
mod harness;

use harness::{Harness, harness, harness_with_master_key, namespace_key};
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use lifeboat_api::agent_job::{AgentJob, SIGNING_KEY_SECRET};
use lifeboat_api::conditions::{find, types};
use lifeboat_api::{BackupPolicy, DrillSchedule, RestoreRequest};
use serde_json::{Value, json};

fn spec() -> Value {
    json!({"schedule": "0 * * * *",
           "assets": [{"name": "sessions", "redis": {"host": "cache", "dataDir": "/data"}}],
           "retention": {"keepLast": 3}, "destination": {"volume": {"claimName": "backups"}}})
}

async fn derived(h: &Harness) -> Option<Vec<u8>> {
    h.api::<Secret>()
        .get_opt(SIGNING_KEY_SECRET)
        .await
        .unwrap()?
        .data?
        .get("key")
        .map(|k| k.0.clone())
}

#[tokio::test]
async fn every_namespace_gets_its_own_key_before_its_jobs_and_every_job_mounts_it() {
    let (a, b) = (harness("sign-a").await, harness("sign-b").await);
    for h in [&a, &b] {
        h.apply_policy("shop", spec()).await;
        h.until("the CronJob", async || {
            h.api::<CronJob>().get_opt("shop-sessions").await.unwrap()
        })
        .await;
        // Applied before the CronJob: by the time it exists, so does the key.
        assert_eq!(derived(h).await, Some(namespace_key(&h.ns)), "{}", h.ns);
    }
    assert_ne!(namespace_key(&a.ns), namespace_key(&b.ns));

    // The backup Job's pod mounts it, and its document names it.
    let cj = a.api::<CronJob>().get("shop-sessions").await.unwrap();
    let pod = cj
        .spec
        .unwrap()
        .job_template
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    assert!(
        pod.volumes.unwrap().iter().any(|v| v
            .secret
            .as_ref()
            .is_some_and(|s| s.secret_name.as_deref() == Some(SIGNING_KEY_SECRET))),
        "the signing key is mounted"
    );
    let env = pod.containers[0].env.clone().unwrap();
    let doc: AgentJob = serde_json::from_str(
        env.iter()
            .find(|e| e.name == "LIFEBOAT_JOB")
            .unwrap()
            .value
            .as_ref()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(doc.signing_key.unwrap().name, SIGNING_KEY_SECRET);

    // Someone writes another key into the Secret: the next reconcile puts the derived one back,
    // before the on-demand Job it makes.
    let tampered = json!({"data": {"key": ByteString(vec![0; 32])}});
    a.api::<Secret>()
        .patch(
            SIGNING_KEY_SECRET,
            &PatchParams::default(),
            &Patch::Merge(&tampered),
        )
        .await
        .unwrap();
    a.api::<BackupPolicy>()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"lifeboat.dev/backup-now": "t1"}}})),
        )
        .await
        .unwrap();
    a.until("the on-demand Job", async || {
        let jobs = a
            .api::<Job>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        (!jobs.is_empty()).then_some(())
    })
    .await;
    assert_eq!(derived(&a).await, Some(namespace_key(&a.ns)));

    // The operator's account may write that one Secret name, and no other.
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "db"}, "stringData": {"password": "x"}}),
    )
    .unwrap();
    a.api::<Secret>()
        .create(&Default::default(), &secret)
        .await
        .unwrap();
    let as_operator = Api::<Secret>::namespaced(a.operator.clone(), &a.ns);
    match as_operator
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": "y"}})),
        )
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("patching another Secret: expected 403, got {other:?}"),
    }
}

#[tokio::test]
async fn without_the_master_key_nothing_runs_and_every_kind_says_signing_key_missing() {
    let h = harness_with_master_key("sign-none", "no-such-master-key").await;
    h.apply_policy("shop", spec()).await;
    let rr = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
        "metadata": {"name": "now"},
        "spec": {"source": {"policy": "shop", "backupId": "20261124T100000Z-0a1b2c3d"}, "execute": true}});
    h.api::<RestoreRequest>()
        .patch("now", &PatchParams::apply("test-user"), &Patch::Apply(&rr))
        .await
        .unwrap();
    let ds = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "DrillSchedule",
        "metadata": {"name": "quarterly", "annotations": {"lifeboat.dev/drill-now": "d1"}},
        "spec": {"schedule": "0 6 1 * *", "policy": "shop", "assets": ["sessions"],
                 "staging": {"targets": [{"asset": "sessions", "redis": {"host": "staging", "dataDir": "/d"}}]},
                 "backup": "Fresh", "objectives": {"rto": "30m", "rpo": "15m"}}});
    h.api::<DrillSchedule>()
        .patch(
            "quarterly",
            &PatchParams::apply("test-user"),
            &Patch::Apply(&ds),
        )
        .await
        .unwrap();

    let reason =
        |conditions: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>>| {
            conditions
                .and_then(|c| find(c, types::READY))
                .filter(|c| c.status == "False")
                .map(|c| (c.reason.clone(), c.message.clone()))
        };
    let (why, message) = h
        .until("the policy to say why", async || {
            let p = h.api::<BackupPolicy>().get("shop").await.unwrap();
            reason(p.status.as_ref().map(|s| &s.conditions))
        })
        .await;
    assert_eq!(why, "SigningKeyMissing");
    assert!(message.contains("no-such-master-key"), "{message}");
    let (why, _) = h
        .until("the request to say why", async || {
            let r = h.api::<RestoreRequest>().get("now").await.unwrap();
            reason(r.status.as_ref().map(|s| &s.conditions))
        })
        .await;
    assert_eq!(why, "SigningKeyMissing");
    let (why, _) = h
        .until("the drill to say why", async || {
            let d = h.api::<DrillSchedule>().get("quarterly").await.unwrap();
            reason(d.status.as_ref().map(|s| &s.conditions))
        })
        .await;
    assert_eq!(why, "SigningKeyMissing");
    h.expect_events("SigningKeyMissing", 3).await;

    // Nothing was made that would run without a key.
    assert!(
        h.api::<CronJob>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        h.api::<Job>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        h.api::<Secret>()
            .get_opt(SIGNING_KEY_SECRET)
            .await
            .unwrap()
            .is_none()
    );
}
