//! The operator's reach, proven by impersonating the chart's ServiceAccount against the real API
//! server with the chart's RBAC and admission policy installed (deploy/generated, kept equal to
//! `helm template`): it reads no Secret anywhere, creates no pod, and the Jobs and CronJobs it
//! may create run only the agent image, on no host namespace, unprivileged, never as root,
//! without hostPath and as an account Lifeboat uses. Its own Jobs, from the operator's real builders, still pass (and
//! every operator test runs the controllers as this account).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::{CHART_NAMESPACE, CHART_SERVICE_ACCOUNT, install_chart_rbac};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use kube::{Api, Client, ResourceExt};
use lifeboat_api::BackupPolicy;
use lifeboat_operator::config::AgentConfig;
use serde_json::json;

/// The admission policy's name as the chart renders it for the release `lifeboat`.
const POLICY: &str = "lifeboat-agent-jobs";

fn forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>, what: &str) -> String {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => s.message,
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// An admin client, the operator's (the chart's ServiceAccount, impersonated) and a namespace.
async fn setup(prefix: &str) -> (Client, Client, String) {
    let env = lifeboat_testenv::shared().unwrap();
    let admin = env.client().await.unwrap();
    install_chart_rbac(&admin).await;
    let ns = env.namespace(&admin, prefix).await.unwrap();
    let sa = env
        .client_as_service_account(CHART_NAMESPACE, CHART_SERVICE_ACCOUNT)
        .await
        .unwrap();
    (admin, sa, ns)
}

fn policy(ns: &str) -> BackupPolicy {
    serde_json::from_value(json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
        "metadata": {"name": "shop", "namespace": ns, "uid": "3f1e0c2a-0000-4000-8000-000000000001"},
        "spec": {"schedule": "@daily",
                 "assets": [{"name": "db", "postgres": {"host": "db", "user": "u", "databases": ["shop"],
                             "passwordSecret": {"name": "db", "key": "password"}}}],
                 "retention": {"keepLast": 3},
                 "destination": {"s3": {"endpoint": "http://s3:9000", "bucket": "b",
                                        "credentialsSecret": {"name": "s3"}}}}
    }))
    .unwrap()
}

/// An on-demand backup Job exactly as the operator builds it, with the chart's agent image (the
/// operator's default is the chart's default).
fn agent_job(ns: &str, token: &str) -> Job {
    let p = policy(ns);
    let mut job = lifeboat_operator::backup_policy::cronjob::on_demand_job(
        &p,
        &p.spec.assets[0],
        token,
        &AgentConfig::default(),
        &Default::default(),
    )
    .unwrap();
    // No owner: the policy above is not stored (owner references to it would be dangling).
    job.metadata.owner_references = None;
    job
}

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

#[tokio::test]
async fn the_operators_account_reads_no_secret_anywhere() {
    let (admin, sa, ns) = setup("rbac-secrets").await;
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "db"}, "stringData": {"password": "s3cr3t"}}),
    )
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    // It can read what it needs there (so the 403s below are RBAC, not a broken client).
    assert_eq!(
        Api::<BackupPolicy>::namespaced(sa.clone(), &ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        0
    );
    for (api, place) in [
        (
            Api::<Secret>::namespaced(sa.clone(), &ns),
            "a watched namespace",
        ),
        (
            Api::<Secret>::namespaced(sa.clone(), "kube-system"),
            "another namespace",
        ),
        (
            Api::<Secret>::namespaced(sa.clone(), CHART_NAMESPACE),
            "its own namespace",
        ),
    ] {
        forbidden(api.get("db").await, &format!("get a Secret in {place}"));
        forbidden(
            api.get_metadata("db").await,
            &format!("get a Secret's metadata in {place}"),
        );
        forbidden(
            api.list(&ListParams::default()).await,
            &format!("list Secrets in {place}"),
        );
        forbidden(
            api.watch(&WatchParams::default(), "0").await.map(|_| ()),
            &format!("watch Secrets in {place}"),
        );
    }
    forbidden(
        Api::<Secret>::all(sa).list(&ListParams::default()).await,
        "list Secrets cluster-wide",
    );
}

#[tokio::test]
async fn the_operators_account_cannot_do_what_it_does_not_need() {
    let (admin, sa, ns) = setup("rbac-verbs").await;
    let p = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
        "metadata": {"name": "shop"},
        "spec": {"schedule": "@daily", "assets": [{"name": "cache", "redis": {"host": "cache"}}],
                 "retention": {"keepLast": 3}, "destination": {"volume": {"claimName": "backups"}}}});
    Api::<BackupPolicy>::namespaced(admin.clone(), &ns)
        .patch("shop", &PatchParams::apply("test-user"), &Patch::Apply(&p))
        .await
        .unwrap();
    let policies = Api::<BackupPolicy>::namespaced(sa.clone(), &ns);
    assert!(policies.get("shop").await.is_ok(), "what it needs works");
    forbidden(
        policies.delete("shop", &DeleteParams::default()).await,
        "delete a BackupPolicy",
    );
    forbidden(
        policies
            .patch(
                "shop",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"suspend": true}})),
            )
            .await,
        "change a BackupPolicy's spec",
    );
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "x"},
        "spec": {"containers": [{"name": "x", "image": "busybox"}]}}))
    .unwrap();
    forbidden(
        Api::<Pod>::namespaced(sa.clone(), &ns)
            .create(&PostParams::default(), &pod)
            .await,
        "create a Pod",
    );
    forbidden(
        Api::<Job>::namespaced(sa.clone(), &ns)
            .delete("any", &DeleteParams::default())
            .await,
        "delete a Job",
    );
    forbidden(
        Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(sa)
            .list(&ListParams::default())
            .await,
        "read RBAC",
    );
}

/// Waits until the admission policy is in force (policies compile and sync asynchronously):
/// the first refusal of a Job with a foreign image, as the operator.
async fn policy_in_force(jobs: &Api<Job>, ns: &str) {
    let mut probe = agent_job(ns, "probe");
    probe
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .image = Some("busybox".into());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match jobs.create(&dry_run(), &probe).await {
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains(POLICY) => return,
            other => assert!(
                Instant::now() < deadline,
                "the admission policy is not in force: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn jobs_other_than_the_agents_are_refused_by_the_admission_policy() {
    let (admin, sa, ns) = setup("rbac-vap").await;
    let jobs = Api::<Job>::namespaced(sa.clone(), &ns);
    policy_in_force(&jobs, &ns).await;

    // The operator's own Jobs pass, created for real: the builders' output as it is.
    let good = agent_job(&ns, "t1");
    jobs.create(&PostParams::default(), &good).await.unwrap();
    let p = policy(&ns);
    for cj in lifeboat_operator::backup_policy::cronjob::desired_cronjobs(
        &p,
        &AgentConfig::default(),
        &Default::default(),
    )
    .unwrap()
    {
        let mut cj = cj;
        cj.metadata.owner_references = None;
        Api::<CronJob>::namespaced(sa.clone(), &ns)
            .create(&PostParams::default(), &cj)
            .await
            .unwrap();
    }

    // The same Job with one thing changed is refused, with the rule that refuses it.
    type Change = fn(&mut k8s_openapi::api::core::v1::PodSpec);
    let cases: [(&str, Change, &str); 14] = [
        (
            "a foreign image",
            |p| p.containers[0].image = Some("busybox:latest".into()),
            "runs only the agent image",
        ),
        (
            "a foreign init container",
            |p| {
                let mut c = p.containers[0].clone();
                c.name = "init".into();
                c.image = Some("alpine".into());
                p.init_containers = Some(vec![c]);
            },
            "runs only the agent image",
        ),
        (
            "hostNetwork",
            |p| p.host_network = Some(true),
            "node's network, PID or IPC",
        ),
        (
            "hostPID",
            |p| p.host_pid = Some(true),
            "node's network, PID or IPC",
        ),
        (
            "hostIPC",
            |p| p.host_ipc = Some(true),
            "node's network, PID or IPC",
        ),
        (
            "a privileged container",
            |p| {
                let sc = p.containers[0].security_context.get_or_insert_default();
                sc.privileged = Some(true);
                // Else the API server's own validation refuses the pair first.
                sc.allow_privilege_escalation = None;
            },
            "privileged containers or add capabilities",
        ),
        (
            "an added capability",
            |p| {
                p.containers[0]
                    .security_context
                    .get_or_insert_default()
                    .capabilities
                    .get_or_insert_default()
                    .add = Some(vec!["NET_ADMIN".into()])
            },
            "privileged containers or add capabilities",
        ),
        (
            "root for the pod",
            |p| {
                let sc = p.security_context.get_or_insert_default();
                sc.run_as_user = Some(0);
                sc.run_as_non_root = None;
                p.containers[0]
                    .security_context
                    .get_or_insert_default()
                    .run_as_non_root = None;
            },
            "never run as root",
        ),
        (
            "root for the container",
            |p| {
                let sc = p.containers[0].security_context.get_or_insert_default();
                sc.run_as_non_root = Some(false);
            },
            "never run as root",
        ),
        (
            "privilege escalation",
            |p| {
                p.containers[0]
                    .security_context
                    .get_or_insert_default()
                    .allow_privilege_escalation = Some(true)
            },
            "never run as root or allow privilege escalation",
        ),
        (
            "a hostPath volume",
            |p| {
                p.volumes.get_or_insert_default().push(
                    serde_json::from_value(json!({"name": "root", "hostPath": {"path": "/"}}))
                        .unwrap(),
                )
            },
            "hostPath",
        ),
        (
            "another ServiceAccount",
            |p| p.service_account_name = Some("cluster-admin-sa".into()),
            "run only as default or lifeboat-kubestate-backup or lifeboat-kubestate-restore",
        ),
        (
            "an S3 identity the platform did not choose",
            |p| {
                let env = p.containers[0].env.get_or_insert_default();
                for e in env.iter_mut() {
                    if e.name == lifeboat_api::identity::AMBIENT_IDENTITY_ENV {
                        e.value = Some("webIdentity".into());
                    }
                }
            },
            "S3 ambient identity none only",
        ),
        (
            "the S3 identity from elsewhere than the Job",
            |p| {
                let env = p.containers[0].env.get_or_insert_default();
                for e in env.iter_mut() {
                    if e.name == lifeboat_api::identity::AMBIENT_IDENTITY_ENV {
                        e.value = None;
                        e.value_from = Some(
                            serde_json::from_value(json!({"configMapKeyRef":
                                {"name": "mine", "key": "mode"}}))
                            .unwrap(),
                        );
                    }
                }
            },
            "S3 ambient identity none only",
        ),
    ];
    for (case, change, rule) in cases {
        let mut job = agent_job(&ns, "bad");
        change(job.spec.as_mut().unwrap().template.spec.as_mut().unwrap());
        let message = forbidden(jobs.create(&dry_run(), &job).await, case);
        assert!(
            message.contains(POLICY) && message.contains(rule),
            "{case}: {message}"
        );
    }
    // A CronJob's pod template is checked the same way.
    let mut cj = lifeboat_operator::backup_policy::cronjob::desired_cronjobs(
        &p,
        &AgentConfig::default(),
        &Default::default(),
    )
    .unwrap()
    .remove(0);
    cj.metadata.owner_references = None;
    cj.metadata.name = Some("other".into());
    cj.spec
        .as_mut()
        .unwrap()
        .job_template
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .image = Some("busybox".into());
    let message = forbidden(
        Api::<CronJob>::namespaced(sa.clone(), &ns)
            .create(&dry_run(), &cj)
            .await,
        "a CronJob with a foreign image",
    );
    assert!(message.contains(POLICY), "{message}");
    // And an update, as the operator makes one (a server-side apply of an existing object):
    // the stored CronJob's template changed to another image.
    let cronjobs = Api::<CronJob>::namespaced(sa.clone(), &ns);
    let stored = cronjobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .remove(0);
    let mut changed = stored.clone();
    changed.metadata.managed_fields = None;
    changed.metadata.resource_version = None;
    changed
        .spec
        .as_mut()
        .unwrap()
        .job_template
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .image = Some("busybox".into());
    let mut apply = PatchParams::apply("lifeboat-operator").force();
    apply.dry_run = true;
    let message = forbidden(
        cronjobs
            .patch(&stored.name_any(), &apply, &Patch::Apply(&changed))
            .await,
        "an update to a foreign image",
    );
    assert!(message.contains(POLICY), "{message}");
    // Only the operator is held to it: an admin's Job of any image is not its business.
    let mut theirs = agent_job(&ns, "admin");
    theirs
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .image = Some("busybox".into());
    Api::<Job>::namespaced(admin, &ns)
        .create(&dry_run(), &theirs)
        .await
        .unwrap();
}

/// `patch` of DrillSchedules and BackupPolicies is granted for their finalizers only (a staging
/// namespace's, a replication slot's): as the operator, adding and removing a finalizer works,
/// and a change to the spec, the labels or the annotations is refused by the admission policy
/// (probed with dry runs until it is in force).
#[tokio::test]
async fn the_operator_changes_only_the_finalizers_of_drill_schedules_and_policies() {
    use lifeboat_api::DrillSchedule;
    let (admin, sa, ns) = setup("rbac-finalizers").await;
    let d = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "DrillSchedule",
        "metadata": {"name": "quarterly"},
        "spec": {"schedule": "0 6 1 * *", "policy": "shop", "assets": ["cache"],
                 "staging": {"targets": [{"asset": "cache", "redis": {"host": "staging"}}]},
                 "objectives": {"rto": "30m", "rpo": "15m"}}});
    let p = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
        "metadata": {"name": "shop"},
        "spec": {"schedule": "@hourly", "assets": [{"name": "cache", "redis": {"host": "cache"}}],
                 "retention": {"keepLast": 3}, "destination": {"volume": {"claimName": "b"}}}});
    let apply = PatchParams::apply("test-user");
    Api::<DrillSchedule>::namespaced(admin.clone(), &ns)
        .patch("quarterly", &apply, &Patch::Apply(&d))
        .await
        .unwrap();
    Api::<BackupPolicy>::namespaced(admin, &ns)
        .patch("shop", &apply, &Patch::Apply(&p))
        .await
        .unwrap();
    changes_only_finalizers(
        &Api::<DrillSchedule>::namespaced(sa.clone(), &ns),
        "quarterly",
        "lifeboat.dev/drill-now",
        "lifeboat.dev/staging-namespace",
    )
    .await;
    changes_only_finalizers(
        &Api::<BackupPolicy>::namespaced(sa, &ns),
        "shop",
        "lifeboat.dev/backup-now",
        "lifeboat.dev/wal-slot",
    )
    .await;
}

/// As the operator: `suspend`, a label and the `annotation` refused; `finalizer` added and
/// removed.
async fn changes_only_finalizers<K>(objects: &Api<K>, name: &str, annotation: &str, finalizer: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let dry = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    let spec_change = Patch::Merge(json!({"spec": {"suspend": true}}));
    let deadline = Instant::now() + Duration::from_secs(30);
    let message = loop {
        match objects.patch(name, &dry, &spec_change).await {
            Err(kube::Error::Api(s)) if s.code == 403 => break s.message,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => panic!("a spec change of {name} by the operator: expected 403, got {other:?}"),
        }
    };
    assert!(message.contains("only the finalizers"), "{message}");
    for (what, change) in [
        ("labels", json!({"metadata": {"labels": {"team": "x"}}})),
        (
            "annotations",
            json!({"metadata": {"annotations": {annotation: "x"}}}),
        ),
    ] {
        let message = forbidden(objects.patch(name, &dry, &Patch::Merge(change)).await, what);
        assert!(
            message.contains("only the finalizers"),
            "{name} {what}: {message}"
        );
    }
    for finalizers in [json!([finalizer]), json!([])] {
        let o = objects
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": finalizers}})),
            )
            .await
            .unwrap();
        assert_eq!(json!(o.finalizers()), finalizers);
    }
}
