//! The test control plane is real: the API server serves Lifeboat's CRDs, enforces their schema
//! and CEL rules at admission, keeps status behind the status subresource, prints the printer
//! columns; kube-controller-manager runs CronJobs, Jobs and garbage collection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Api, Client, Resource, ResourceExt};
use lifeboat_api::{BackupPolicy, DrillSchedule, RestoreRequest};
use serde_json::{Value, json};

async fn setup(prefix: &str) -> (Client, String) {
    let env = lifeboat_testenv::shared().expect("control plane");
    let client = env.client().await.expect("client");
    let ns = env.namespace(&client, prefix).await.expect("namespace");
    (client, ns)
}

fn dynamic<K: Resource<DynamicType = ()>>(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<K>(&()))
}

async fn create(api: &Api<DynamicObject>, obj: Value) -> Result<DynamicObject, String> {
    let obj: DynamicObject = serde_json::from_value(obj).unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .map_err(|e| e.to_string())
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn policy(name: &str) -> Value {
    json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
        "metadata": {"name": name},
        "spec": {
            "schedule": "0 * * * *",
            "assets": [
                {"name": "db", "postgres": {"host": "db", "user": "u", "databases": ["app"]}},
                {"name": "cache", "redis": {"host": "cache", "dataDir": "/data"}}
            ],
            "retention": {"keepLast": 24, "maxAge": "7d"},
            "destination": {"volume": {"claimName": "backups"}},
            "objectives": {"rpo": "15m"}
        }
    })
}

fn restore(name: &str) -> Value {
    json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
        "metadata": {"name": name},
        "spec": {
            "source": {"policy": "p"},
            "assets": ["db"],
            "targets": [{"asset": "db", "postgres": {"host": "staging", "user": "u"}}]
        }
    })
}

fn drill(name: &str) -> Value {
    json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DrillSchedule",
        "metadata": {"name": name},
        "spec": {
            "schedule": "0 6 1 */3 *", "policy": "p", "assets": ["db"],
            "staging": {"targets": [{"asset": "db", "postgres": {"host": "staging", "user": "u"}}]},
            "objectives": {"rto": "30m", "rpo": "15m"}
        }
    })
}

#[tokio::test]
async fn the_three_crds_are_served_and_the_examples_apply() {
    let (client, ns) = setup("served").await;
    let bp: Api<BackupPolicy> = Api::namespaced(client.clone(), &ns);
    let rr: Api<RestoreRequest> = Api::namespaced(client.clone(), &ns);
    let ds: Api<DrillSchedule> = Api::namespaced(client.clone(), &ns);
    assert!(
        bp.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        rr.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        ds.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Every example is accepted by the real API server (server-side apply, as GitOps does).
    let dir = lifeboat_testenv::assets::repo_root().join("deploy/examples");
    let mut applied = 0;
    // The files of the directory; prerequisites/ (Secrets' recipe, the PVC) is applied first, apart.
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        let mut obj: Value = serde_norway::from_str(&text).unwrap();
        obj["metadata"]["namespace"] = json!(ns);
        let obj: DynamicObject = serde_json::from_value(obj).unwrap();
        let ar = match obj.types.as_ref().unwrap().kind.as_str() {
            "BackupPolicy" => ApiResource::erase::<BackupPolicy>(&()),
            "RestoreRequest" => ApiResource::erase::<RestoreRequest>(&()),
            "DrillSchedule" => ApiResource::erase::<DrillSchedule>(&()),
            other => panic!("unexpected kind {other}"),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
        api.patch(
            &obj.name_any(),
            &PatchParams::apply("lifeboat-tests"),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", obj.name_any()));
        applied += 1;
    }
    assert_eq!(applied, 4);
    // Typed reads see the defaults the API server applied.
    let policy = bp.get("shop-databases").await.unwrap();
    assert_eq!(
        policy.spec.assets[0].postgres().unwrap().connection.port,
        5432
    );
    assert_eq!(
        policy.spec.history.successful, 3,
        "defaulted by the API server"
    );
}

/// Each case: (kind, object, expected words in the API server's refusal).
fn invalid_objects() -> Vec<(&'static str, Value, &'static str)> {
    let mut cases = Vec::new();
    let mut p = policy("two-kinds");
    p["spec"]["assets"][0]["redis"] = json!({"host": "x"});
    cases.push((
        "BackupPolicy",
        p,
        "an asset needs exactly one of postgres, redis, objectStorage or kubernetesState",
    ));
    let mut p = policy("no-kind");
    p["spec"]["assets"][1] = json!({"name": "nothing"});
    cases.push(("BackupPolicy", p, "an asset needs exactly one of"));
    let mut p = policy("dup-names");
    p["spec"]["assets"][1]["name"] = json!("db");
    cases.push(("BackupPolicy", p, "Duplicate value"));
    let mut p = policy("six-fields");
    p["spec"]["schedule"] = json!("0 0 0 * * *");
    cases.push(("BackupPolicy", p, "schedule must be 5 cron fields"));
    let mut p = policy("bad-duration");
    p["spec"]["retention"]["maxAge"] = json!("7days");
    cases.push((
        "BackupPolicy",
        p,
        "must be a duration such as 90s, 15m, 1h30m or 7d",
    ));
    let mut p = policy("two-destinations");
    p["spec"]["destination"]["s3"] =
        json!({"endpoint": "https://s3", "bucket": "bkt", "credentialsSecret": {"name": "s"}});
    cases.push((
        "BackupPolicy",
        p,
        "destination needs exactly one of volume or s3",
    ));
    let mut p = policy("lock-on-a-volume");
    p["spec"]["destination"]["objectLock"] = json!({"mode": "Compliance", "retainFor": "30d"});
    cases.push(("BackupPolicy", p, "objectLock needs an s3 destination"));
    let mut p = policy("lock-unknown-mode");
    p["spec"]["destination"] = json!({"s3": {"endpoint": "https://s3", "bucket": "bkt",
        "credentialsSecret": {"name": "s"}}, "objectLock": {"mode": "Forever", "retainFor": "30d"}});
    cases.push(("BackupPolicy", p, "Unsupported value: \"Forever\""));
    let bucket =
        json!({"endpoint": "https://s3", "bucket": "bkt", "credentialsSecret": {"name": "s"}});
    let mut p = policy("copy-in-place");
    p["spec"]["destination"] = json!({"s3": bucket.clone()});
    p["spec"]["copies"] = json!([{"name": "dr", "s3": bucket.clone()}]);
    cases.push((
        "BackupPolicy",
        p,
        "a copy must be in another place than the destination",
    ));
    let mut p = policy("copy-names-twice");
    let mut other = bucket.clone();
    other["bucket"] = json!("dr");
    p["spec"]["copies"] =
        json!([{"name": "dr", "s3": other.clone()}, {"name": "dr", "s3": bucket}]);
    cases.push(("BackupPolicy", p, "Duplicate value"));
    let mut p = policy("copy-of-pitr");
    p["spec"]["copies"] = json!([{"name": "dr", "s3": other}]);
    p["spec"]["assets"][0]["postgres"]["pointInTime"] =
        json!({"user": "wal", "partialUploadSeconds": 10});
    cases.push((
        "BackupPolicy",
        p,
        "copies are not made of pointInTime assets yet",
    ));
    let mut p = policy("no-retention");
    p["spec"]["retention"] = json!({"minKeep": 2});
    cases.push((
        "BackupPolicy",
        p,
        "retention needs keepLast, maxAge or both",
    ));
    let mut p = policy("pitr-with-dump-options");
    p["spec"]["assets"][0]["postgres"]["pointInTime"] = json!({"user": "wal"});
    p["spec"]["assets"][0]["postgres"]["dumpOptions"] = json!({"schemas": ["public"]});
    cases.push(("BackupPolicy", p, "dumpOptions do not apply to pointInTime"));
    let mut p = policy("pitr-no-upload-interval");
    p["spec"]["assets"][0]["postgres"]["pointInTime"] =
        json!({"user": "wal", "partialUploadSeconds": 0});
    cases.push(("BackupPolicy", p, "partialUploadSeconds"));
    let mut p = policy("pitr-option-user");
    p["spec"]["assets"][0]["postgres"]["pointInTime"] = json!({"user": "--help"});
    cases.push(("BackupPolicy", p, "user must be"));
    let mut p = policy("keep-below-floor");
    p["spec"]["retention"] = json!({"keepLast": 1, "minKeep": 3});
    cases.push(("BackupPolicy", p, "keepLast must be at least minKeep"));
    let mut p = policy("escape-path");
    p["spec"]["destination"]["volume"]["subPath"] = json!("../../etc");
    cases.push(("BackupPolicy", p, "subPath must be relative"));
    let mut p = policy("Upper-Name");
    p["metadata"]["name"] = json!("upper-asset");
    p["spec"]["assets"][0]["name"] = json!("Orders_DB");
    cases.push(("BackupPolicy", p, "spec.assets[0].name"));
    let mut p = policy("level-25");
    p["spec"]["compression"] = json!({"level": 25});
    cases.push(("BackupPolicy", p, "spec.compression.level"));
    let mut p = policy("ssh-recipient");
    p["spec"]["encryption"] = json!({"recipients": ["ssh-ed25519 AAAA"]});
    cases.push(("BackupPolicy", p, "recipients must be age public keys"));
    let mut p = policy("ftp-endpoint");
    p["spec"]["destination"] = json!({"s3": {"endpoint": "ftp://example.com", "bucket": "bkt", "credentialsSecret": {"name": "s"}}});
    cases.push((
        "BackupPolicy",
        p,
        "endpoint must be an http:// or https:// URL",
    ));
    let mut r = restore("stray-target");
    r["spec"]["assets"] = json!(["cache"]);
    cases.push((
        "RestoreRequest",
        r,
        "every target must name an asset listed in assets",
    ));
    let mut r = restore("two-check-kinds");
    r["spec"]["validation"] = json!({"checks": [{"name": "c", "http": {"url": "http://a/health"}, "sql": {"asset": "db", "query": "select 1", "expect": "1"}}]});
    cases.push((
        "RestoreRequest",
        r,
        "a check needs exactly one of http, sql or redis",
    ));
    let mut d = drill("no-staging-target");
    d["spec"]["assets"] = json!(["db", "cache"]);
    cases.push((
        "DrillSchedule",
        d,
        "every drilled asset needs a staging target",
    ));
    let mut d = drill("no-objectives");
    d["spec"].as_object_mut().unwrap().remove("objectives");
    cases.push(("DrillSchedule", d, "spec.objectives: Required value"));
    cases
}

#[tokio::test]
async fn invalid_objects_are_refused_at_admission_with_a_message_that_names_the_problem() {
    let (client, ns) = setup("invalid").await;
    let cases = invalid_objects();
    assert!(cases.len() >= 10);
    for (kind, obj, expected) in cases {
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        let api = match kind {
            "BackupPolicy" => dynamic::<BackupPolicy>(&client, &ns),
            "RestoreRequest" => dynamic::<RestoreRequest>(&client, &ns),
            _ => dynamic::<DrillSchedule>(&client, &ns),
        };
        match create(&api, obj).await {
            Ok(_) => {
                panic!("{kind} {name} was accepted; expected a refusal mentioning {expected:?}")
            }
            Err(e) => assert!(
                e.contains(expected),
                "{kind} {name}: expected {expected:?} in: {e}"
            ),
        }
    }
    // The valid bases are accepted, so each refusal above is due to its one edit.
    create(&dynamic::<BackupPolicy>(&client, &ns), policy("valid"))
        .await
        .unwrap();
    create(&dynamic::<RestoreRequest>(&client, &ns), restore("valid"))
        .await
        .unwrap();
    create(&dynamic::<DrillSchedule>(&client, &ns), drill("valid"))
        .await
        .unwrap();
}

/// Identifiers are data and check URLs are what the agent sends: the API server refuses what
/// the agent would refuse, with the rule's message (the same rules are evaluated client-side,
/// over a longer table, in crates/lifeboat-api/tests/schema.rs).
#[tokio::test]
async fn hostile_identifiers_and_check_urls_are_refused_at_admission() {
    let (client, ns) = setup("idents").await;
    let policies = dynamic::<BackupPolicy>(&client, &ns);
    let restores = dynamic::<RestoreRequest>(&client, &ns);
    let database = "database names are 1-63 ASCII letters";
    let host = "host must be a DNS name";
    let url = "url must be an absolute http:// or https:// URL";
    let mut cases: Vec<(Value, &str)> = Vec::new();
    for (i, name) in [
        "host=other dbname=payroll",
        "-c",
        "postgresql://x/y",
        "a/b",
        "..",
    ]
    .into_iter()
    .enumerate()
    {
        let mut p = policy(&format!("db-{i}"));
        p["spec"]["assets"][0]["postgres"]["databases"] = json!([name]);
        cases.push((p, database));
    }
    let mut p = policy("socket-host");
    p["spec"]["assets"][0]["postgres"]["host"] = json!("/var/run/postgresql");
    cases.push((p, host));
    let mut p = policy("option-user");
    p["spec"]["assets"][0]["postgres"]["user"] = json!("--help");
    cases.push((p, "user must be"));
    let mut p = policy("newline-pattern");
    p["spec"]["assets"][0]["postgres"]["dumpOptions"] = json!({"excludeTables": ["a\nb"]});
    cases.push((p, "schema and table patterns are"));
    let mut p = policy("dot-prefix");
    p["spec"]["destination"] = json!({"s3": {"endpoint": "http://s3:9000", "bucket": "bkt",
        "prefix": "team/../other", "credentialsSecret": {"name": "s"}}});
    cases.push((p, "prefix must be relative"));
    for (i, bad) in [
        "http://a/health\r\nX-Injected: 1",
        "ftp://a/health",
        "http://a/he alth",
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = restore(&format!("url-{i}"));
        r["spec"]["validation"] = json!({"checks": [{"name": "c", "http": {"url": bad}}]});
        cases.push((r, url));
    }
    let mut r = restore("sql-database");
    r["spec"]["validation"] = json!({"checks": [{"name": "c", "sql": {"asset": "db",
        "database": "dbname=postgres", "query": "SELECT true", "expect": "t"}}]});
    cases.push((r, database));
    let mut r = restore("mapping");
    r["spec"]["assets"] = json!(["state"]);
    r["spec"]["targets"] = json!([{"asset": "state",
        "kubernetesState": {"namespaceMapping": {"prod": "../kube-system"}}}]);
    cases.push((r, "namespace names are DNS labels"));
    for (obj, expected) in cases {
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        let api = if obj["kind"] == "BackupPolicy" {
            &policies
        } else {
            &restores
        };
        match create(api, obj).await {
            Ok(_) => panic!("{name} was accepted; expected a refusal mentioning {expected:?}"),
            Err(e) => assert!(
                e.contains(expected),
                "{name}: expected {expected:?} in: {e}"
            ),
        }
    }
    // What the rules allow: IP literals (IPv6 without brackets), https and IPv6 URLs.
    let mut p = policy("addresses");
    p["spec"]["assets"][0]["postgres"]["host"] = json!("fd00::5");
    p["spec"]["assets"][1]["redis"]["host"] = json!("10.0.0.7");
    create(&policies, p).await.unwrap();
    let mut r = restore("urls");
    r["spec"]["validation"] = json!({"checks": [
        {"name": "tls", "http": {"url": "https://shop.staging.svc/health", "caSecret": {"name": "ca", "key": "ca.crt"}}},
        {"name": "v6", "http": {"url": "http://[fd00::7]:8080/health"}}]});
    create(&restores, r).await.unwrap();
}

#[tokio::test]
async fn a_restore_request_is_frozen_once_it_executes() {
    let (client, ns) = setup("frozen").await;
    let api = dynamic::<RestoreRequest>(&client, &ns);
    create(&api, restore("r")).await.unwrap();
    let pp = PatchParams::default();
    // While plan-only, the spec may change, and execute may be switched on.
    api.patch(
        "r",
        &pp,
        &Patch::Merge(json!({"spec": {"options": {"postgresJobs": 4}}})),
    )
    .await
    .unwrap();
    api.patch("r", &pp, &Patch::Merge(json!({"spec": {"execute": true}})))
        .await
        .unwrap();
    for edit in [
        json!({"spec": {"source": {"backupId": "20260101T000000Z"}}}),
        json!({"spec": {"execute": false}}),
    ] {
        let err = api
            .patch("r", &pp, &Patch::Merge(edit))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the spec is frozen once execute is true"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn status_is_written_only_through_the_status_subresource() {
    let (client, ns) = setup("status").await;
    let api: Api<BackupPolicy> = Api::namespaced(client.clone(), &ns);
    let mut obj = policy("with-status");
    obj["status"] = json!({"rpo": "1m", "rpoSeconds": 60});
    let created = create(&dynamic::<BackupPolicy>(&client, &ns), obj)
        .await
        .unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status in a create body is dropped"
    );

    api.patch(
        "with-status",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"rpo": "2m"}})),
    )
    .await
    .unwrap();
    assert!(
        api.get("with-status").await.unwrap().status.is_none(),
        "main resource ignores status"
    );

    let before = api.get("with-status").await.unwrap();
    let patched = api
        .patch_status(
            "with-status",
            &PatchParams::apply("lifeboat-tests").force(),
            &Patch::Apply(json!({
                "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
                "status": {"rpo": "3m", "rpoSeconds": 180, "observedGeneration": 1}
            })),
        )
        .await
        .unwrap();
    let status = patched.status.unwrap();
    assert_eq!(status.rpo.as_deref(), Some("3m"));
    assert_eq!(status.rpo_seconds, Some(180));
    assert_eq!(
        patched.metadata.generation, before.metadata.generation,
        "status writes do not bump the generation"
    );
}

#[tokio::test]
async fn kubectl_get_lifeboat_lists_all_three_kinds_with_their_columns() {
    let (client, ns) = setup("kubectl").await;
    create(&dynamic::<BackupPolicy>(&client, &ns), policy("orders"))
        .await
        .unwrap();
    create(
        &dynamic::<RestoreRequest>(&client, &ns),
        restore("to-staging"),
    )
    .await
    .unwrap();
    create(&dynamic::<DrillSchedule>(&client, &ns), drill("quarterly"))
        .await
        .unwrap();
    let env = lifeboat_testenv::shared().unwrap();
    let mut cmd = std::process::Command::new(lifeboat_testenv::kubectl().unwrap());
    if let Some(kc) = env.kubeconfig() {
        cmd.arg("--kubeconfig").arg(kc);
    }
    // Go's YAML (what kubectl, Argo CD and Flux parse with) accepts every example too.
    let examples = lifeboat_testenv::assets::repo_root().join("deploy/examples");
    let mut dry_run = std::process::Command::new(lifeboat_testenv::kubectl().unwrap());
    if let Some(kc) = env.kubeconfig() {
        dry_run.arg("--kubeconfig").arg(kc);
    }
    let out = dry_run
        .args([
            "apply",
            "--server-side",
            "--dry-run=server",
            "-n",
            &ns,
            "-f",
        ])
        .arg(&examples)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl apply of the examples: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cmd.args(["get", "lifeboat", "-n", &ns]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "backuppolicy.lifeboat.dev/orders",
        "restorerequest.lifeboat.dev/to-staging",
        "drillschedule.lifeboat.dev/quarterly",
        "SCHEDULE",
        "LAST BACKUP",
        "RPO",
        "TARGET",
        "PHASE",
        "EXECUTE",
        "VERDICT",
        "RTO",
        "READY",
        "0 * * * *",
        "15m",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[tokio::test]
async fn the_controller_manager_runs_jobs_and_a_cronjob_fires() {
    let (client, ns) = setup("cronjob").await;
    let cronjobs: Api<CronJob> = Api::namespaced(client.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let cj: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "every-minute"},
        "spec": {
            "schedule": "* * * * *",
            "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]
            }}}}
        }
    }))
    .unwrap();
    cronjobs.create(&PostParams::default(), &cj).await.unwrap();
    // CronJobs fire on the minute: allow for one full minute plus the controller's sync.
    eventually(
        "the CronJob to create a Job",
        Duration::from_secs(90),
        || async {
            !jobs
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty()
        },
    )
    .await;
    let job = jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .remove(0);
    let owner = job.owner_references().first().cloned().unwrap();
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("CronJob", "every-minute")
    );
    // The Job controller turns the Job into a Pod (no node runs it: there is no kubelet).
    eventually(
        "the Job controller to create a Pod",
        Duration::from_secs(30),
        || async {
            !pods
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty()
        },
    )
    .await;
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_children() {
    let (client, ns) = setup("gc").await;
    let created = create(&dynamic::<BackupPolicy>(&client, &ns), policy("owner"))
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let child: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "child", "ownerReferences": [{
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
            "name": "owner", "uid": created.uid().unwrap(), "controller": true
        }]},
        "data": {"k": "v"}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &child).await.unwrap();
    let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), &ns);
    policies
        .delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    eventually(
        "the garbage collector to delete the child",
        Duration::from_secs(60),
        || async { cms.get_opt("child").await.unwrap().is_none() },
    )
    .await;
}
