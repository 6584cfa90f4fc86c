//! S3 locations without `credentialsSecret` under the chart's default `agent.s3AmbientIdentity:
//! none`, on the real control plane: refused by the chart's admission policy when written, and,
//! where that policy is absent, by the controllers (`Ready=False`, reason
//! `AmbientIdentityDisabled`) before any CronJob or Job exists. The agent's own refusal is
//! `crates/lifeboat-agent/tests/s3.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::{Harness, harness_without_admission, install_chart_rbac};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::discovery::ApiResource;
use kube::{Api, Client};
use lifeboat_api::conditions::{find, types};
use lifeboat_api::identity::AmbientIdentity;
use lifeboat_api::{BackupPolicy, DrillSchedule, RestoreRequest};
use lifeboat_operator::config::AgentConfig;
use serde_json::{Value, json};

/// The name the chart gives the policy for the release `lifeboat`.
const POLICY: &str = "lifeboat-s3-credentials";

fn keyless() -> Value {
    json!({"endpoint": "https://s3.example.com", "bucket": "backups"})
}

fn keyed() -> Value {
    json!({"endpoint": "https://s3.example.com", "bucket": "backups",
           "credentialsSecret": {"name": "s3"}})
}

fn policy(destination: Value, bucket_asset: Value) -> Value {
    json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
        "metadata": {"name": "shop", "annotations": {"lifeboat.dev/backup-now": "t1"}},
        "spec": {"schedule": "0 * * * *",
                 "assets": [{"name": "sessions", "redis": {"host": "cache", "dataDir": "/data"}},
                            {"name": "media", "objectStorage": bucket_asset}],
                 "retention": {"keepLast": 3}, "destination": {"s3": destination}}})
}

fn restore(location: Value) -> Value {
    json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
        "metadata": {"name": "back"},
        "spec": {"source": {"policy": "gone", "location": {"s3": location}}, "execute": true}})
}

fn drill(mut target: Value) -> Value {
    // Never the asset's own bucket: a drill does not restore over its source.
    target["bucket"] = json!("staging");
    json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "DrillSchedule",
        "metadata": {"name": "quarterly"},
        "spec": {"schedule": "0 6 1 * *", "policy": "shop", "assets": ["media"],
                 "staging": {"targets": [{"asset": "media", "objectStorage": target}]},
                 "backup": "Fresh", "objectives": {"rto": "30m", "rpo": "15m"}}})
}

fn api(client: &Client, ns: &str, obj: &Value) -> Api<DynamicObject> {
    let kind = obj["kind"].as_str().unwrap();
    let plural = match kind {
        "BackupPolicy" => "backuppolicies",
        "RestoreRequest" => "restorerequests",
        _ => "drillschedules",
    };
    let ar = ApiResource {
        group: "lifeboat.dev".into(),
        version: "v1alpha1".into(),
        api_version: "lifeboat.dev/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    Api::namespaced_with(client.clone(), ns, &ar)
}

async fn create(client: &Client, ns: &str, obj: &Value) -> Result<DynamicObject, kube::Error> {
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    api(client, ns, obj)
        .create(&params, &serde_json::from_value(obj.clone()).unwrap())
        .await
}

#[tokio::test]
async fn the_chart_s_admission_policy_refuses_keyless_locations_of_every_kind() {
    let env = lifeboat_testenv::shared().unwrap();
    let admin = env.client().await.unwrap();
    install_chart_rbac(&admin).await;
    let ns = env.namespace(&admin, "ambient-vap").await.unwrap();

    // Policies compile and sync asynchronously: wait for the first refusal.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        match create(&admin, &ns, &policy(keyless(), keyed())).await {
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains(POLICY) => {
                break s.message;
            }
            other => assert!(
                Instant::now() < deadline,
                "the admission policy is not in force: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(first.contains("agent.s3AmbientIdentity: none"), "{first}");

    let mut keyless_copy = policy(keyed(), keyed());
    keyless_copy["spec"]["copies"] = json!([{"name": "offsite",
        "s3": {"endpoint": "https://s3.elsewhere.example.com", "bucket": "far"}}]);
    let mut keyed_copy = keyless_copy.clone();
    keyed_copy["spec"]["copies"][0]["s3"]["credentialsSecret"] = json!({"name": "far"});
    let refused = [
        ("a bucket asset", policy(keyed(), keyless()), "BackupPolicy"),
        ("an off-site copy", keyless_copy, "BackupPolicy"),
        ("a restore's location", restore(keyless()), "RestoreRequest"),
        (
            "a drill's staging bucket",
            drill(keyless()),
            "DrillSchedule",
        ),
    ];
    for (what, obj, kind) in refused {
        match create(&admin, &ns, &obj).await {
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains(POLICY) => {
                assert!(s.message.contains(kind), "{what}: {}", s.message);
            }
            other => panic!("{what}: expected the admission policy's 403, got {other:?}"),
        }
    }
    // With keys everywhere, each is admitted.
    for obj in [
        policy(keyed(), keyed()),
        keyed_copy,
        restore(keyed()),
        drill(keyed()),
    ] {
        create(&admin, &ns, &obj)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", obj["kind"]));
    }
}

/// `Ready=False`'s reason and message, once the controller wrote one.
fn refusal(
    conditions: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>>,
) -> Option<(String, String)> {
    conditions
        .and_then(|c| find(c, types::READY))
        .filter(|c| c.status == "False")
        .map(|c| (c.reason.clone(), c.message.clone()))
}

async fn apply(h: &Harness, obj: &Value) {
    let name = obj["metadata"]["name"].as_str().unwrap();
    api(&h.client, &h.ns, obj)
        .patch(
            name,
            &PatchParams::apply("test-user"),
            &Patch::Apply(obj.clone()),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn without_admission_the_controllers_refuse_keyless_locations_before_any_job() {
    // A control plane of its own: the shared one carries the chart's admission policy, which
    // would refuse these resources before the controllers see them.
    let env = lifeboat_testenv::TestEnv::start().await.unwrap();
    let h = harness_without_admission(&env, "ambient", AgentConfig::default()).await;
    apply(&h, &policy(keyless(), keyed())).await;
    apply(&h, &restore(keyless())).await;
    apply(&h, &drill(keyed())).await;

    let (why, message) = h
        .until("the policy to say why", async || {
            let p = h.api::<BackupPolicy>().get("shop").await.unwrap();
            refusal(p.status.as_ref().map(|s| &s.conditions))
        })
        .await;
    assert_eq!(why, "AmbientIdentityDisabled", "{message}");
    assert!(message.contains("destination.s3"), "{message}");
    let (why, message) = h
        .until("the request to say why", async || {
            let r = h.api::<RestoreRequest>().get("back").await.unwrap();
            refusal(r.status.as_ref().map(|s| &s.conditions))
        })
        .await;
    assert_eq!(why, "AmbientIdentityDisabled", "{message}");
    assert!(message.contains("source.location.s3"), "{message}");
    // The drill's own staging bucket has keys: the policy it backs up has none.
    let (why, message) = h
        .until("the drill to say why", async || {
            let d = h.api::<DrillSchedule>().get("quarterly").await.unwrap();
            refusal(d.status.as_ref().map(|s| &s.conditions))
        })
        .await;
    assert_eq!(why, "AmbientIdentityDisabled", "{message}");
    h.expect_events("AmbientIdentityDisabled", 3).await;

    // No CronJob, no on-demand backup (the policy asked for one), no catalog Job.
    let lp = ListParams::default();
    assert!(h.api::<CronJob>().list(&lp).await.unwrap().items.is_empty());
    assert!(h.api::<Job>().list(&lp).await.unwrap().items.is_empty());

    // The same policy with keys for every location runs.
    apply(&h, &policy(keyed(), keyed())).await;
    h.until("the policy's CronJobs", async || {
        let n = h.api::<CronJob>().list(&lp).await.unwrap().items.len();
        (n == 2).then_some(())
    })
    .await;
}

/// `webIdentity` lets a keyless location through the controllers (the agent then uses the pod's
/// token only), and tells every agent pod so.
#[tokio::test]
async fn under_web_identity_the_controllers_make_the_jobs_and_tell_the_agent() {
    let env = lifeboat_testenv::TestEnv::start().await.unwrap();
    let agent = AgentConfig {
        s3_ambient_identity: AmbientIdentity::WebIdentity,
        ..AgentConfig::default()
    };
    let h = harness_without_admission(&env, "ambient-web", agent).await;
    apply(&h, &policy(keyless(), keyless())).await;
    let lp = ListParams::default();
    let cronjobs = h
        .until("the policy's CronJobs", async || {
            let items = h.api::<CronJob>().list(&lp).await.unwrap().items;
            (items.len() == 2).then_some(items)
        })
        .await;
    for cj in cronjobs {
        let pod = cj
            .spec
            .unwrap()
            .job_template
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let env = pod.containers[0].env.clone().unwrap_or_default();
        let mode = env
            .iter()
            .find(|e| e.name == lifeboat_api::identity::AMBIENT_IDENTITY_ENV)
            .and_then(|e| e.value.clone());
        assert_eq!(mode.as_deref(), Some("webIdentity"));
    }
}
