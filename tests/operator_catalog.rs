//! A RestoreRequest with `source.location` and no BackupPolicy (issue #15, "a catalog read from
//! storage"), on the real control plane, the controllers running as the chart's account in a
//! namespace enforcing Pod Security "restricted": the operator runs a catalog Job (never reading
//! the store itself), the Job's part is played by the agent's own code against a real S3 server
//! (`rclone serve s3`) holding real, signed backups, and the plan, then the restore, follow from
//! what it found. A location without backups and a tampered one end with their reasons, and no
//! restore Job.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/harness.rs"]
mod harness;

use harness::{Harness, harness, namespace_key};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use lifeboat_agent::jobs::Env;
use lifeboat_agent::layout::{S3Role, Scope, Store};
use lifeboat_agent::local::{LocalRedis, LocalS3};
use lifeboat_agent::signing::{SigningKey, Trust, Unsigned};
use lifeboat_api::RestoreRequest;
use lifeboat_api::agent_job::{AgentCatalogJob, AgentRestoreJob, JOB_ENV};
use lifeboat_api::agent_result::{AgentSummary, SUMMARY_VERSION, TerminationMessage, Verb};
use lifeboat_api::backup_policy::{Asset, AssetKind, Compression};
use lifeboat_api::common::Destination;
use lifeboat_api::conditions::{find, types};
use lifeboat_api::restore_request::RestorePhase;
use serde_json::{Value, json};

/// Runs `f` on a thread of its own: the agent's store and tools block on runtimes of their own.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.await.unwrap()
}

fn location(s3: &LocalS3) -> Value {
    json!({"s3": {"endpoint": s3.endpoint(), "bucket": "backups", "prefix": "lifeboat",
        "forcePathStyle": true, "credentialsSecret": {"name": "s3-creds"}}})
}

/// The agent's environment for `location`, with the namespace's key, Secrets read from `dir`.
fn env(dir: &std::path::Path, location: &Destination, key: Vec<u8>) -> Env {
    let mut env = Env::without_store(dir.to_owned());
    env.signing_key = Some(SigningKey::from_bytes(key, "the namespace's key").unwrap());
    env.unsigned = Unsigned::Refuse;
    env.store = Store::S3(
        env.s3(location.s3.as_ref().unwrap(), S3Role::Backups)
            .unwrap(),
    );
    env
}

/// Writes the S3 keys where the agent reads mounted Secrets: `<dir>/s3-creds/<key>`.
fn s3_keys_in(dir: &std::path::Path) {
    let creds = dir.join("s3-creds");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("AWS_ACCESS_KEY_ID"), LocalS3::ACCESS_KEY).unwrap();
    std::fs::write(creds.join("AWS_SECRET_ACCESS_KEY"), LocalS3::SECRET_KEY).unwrap();
}

/// A real backup of `redis` as asset `sessions` into `<ns>/shop` at the location, signed with
/// the namespace's key as the namespace's backup Jobs sign it: its id.
async fn backup(ns: &str, location: &Destination, redis_port: u16) -> String {
    let (ns, location) = (ns.to_owned(), location.clone());
    blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        s3_keys_in(dir.path());
        let env = env(dir.path(), &location, namespace_key(&ns));
        let asset: Asset = serde_json::from_value(
            json!({"name": "sessions", "redis": {"host": "127.0.0.1", "port": redis_port}}),
        )
        .unwrap();
        let slot = env
            .store
            .claim(&Scope::new(&ns, "shop").unwrap(), Timestamp::now())
            .unwrap();
        let m =
            lifeboat_agent::jobs::backup(&env, &slot, &asset, &Compression::default(), None, None);
        env.store.release(&slot);
        m.unwrap().backup_id
    })
    .await
}

/// The Job document of `job` and, as files in a temporary directory, the Secret keys its pod
/// mounts (what the kubelet would project).
async fn pod_of<T: serde::de::DeserializeOwned>(h: &Harness, job: &Job) -> (T, tempfile::TempDir) {
    let pod = job.spec.clone().unwrap().template.spec.unwrap();
    let doc = pod.containers[0]
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == JOB_ENV)
        .and_then(|e| e.value.clone())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for v in pod.volumes.unwrap_or_default() {
        let Some(secret) = v.secret else { continue };
        let name = secret.secret_name.unwrap();
        let Some(found) = h.api::<Secret>().get_opt(&name).await.unwrap() else {
            continue;
        };
        let data = found.data.unwrap_or_default();
        for item in secret.items.unwrap_or_default() {
            if let Some(value) = data.get(&item.key) {
                std::fs::create_dir_all(dir.path().join(&name)).unwrap();
                std::fs::write(dir.path().join(&name).join(&item.path), &value.0).unwrap();
            }
        }
    }
    (serde_json::from_str(&doc).unwrap(), dir)
}

fn summary(verb: Verb, ok: bool) -> AgentSummary {
    let t = Timestamp::now();
    AgentSummary {
        version: SUMMARY_VERSION,
        verb,
        ok,
        asset: None,
        backup_id: None,
        started_at: t,
        finished_at: t,
        snapshot_time: None,
        stored_bytes: None,
        sha256: None,
        error_class: None,
        message: None,
        checks: Vec::new(),
        retention_refused: None,
        copies: Vec::new(),
    }
}

/// The catalog Jobs of every request.
async fn catalog_jobs(h: &Harness) -> kube::core::ObjectList<Job> {
    h.api::<Job>()
        .list(&ListParams::default().labels("lifeboat.dev/role=catalog"))
        .await
        .unwrap()
}

/// Plays the request's catalog Job: waits for it, checks what its pod mounts, runs the agent's
/// catalog code on its document with those files, and finishes it with what the agent reports.
async fn run_catalog_job(h: &Harness, rr: &str) -> TerminationMessage {
    let jobs = h.api::<Job>();
    let job = h
        .until("the catalog Job", async || {
            jobs.list(&ListParams::default().labels("lifeboat.dev/role=catalog"))
                .await
                .unwrap()
                .items
                .into_iter()
                .find(|j| j.name_any().starts_with(&format!("{rr}-catalog-")))
        })
        .await;
    let pod = job.spec.clone().unwrap().template.spec.unwrap();
    let mut mounted: Vec<String> = pod
        .volumes
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.secret?.secret_name)
        .collect();
    mounted.sort();
    assert_eq!(
        mounted,
        ["lifeboat-signing-key", "s3-creds"],
        "the location's keys and the namespace's signing key, nothing else"
    );
    assert_eq!(pod.containers[0].args.clone().unwrap(), ["catalog"]);
    let (doc, dir): (AgentCatalogJob, _) = pod_of(h, &job).await;
    let result = blocking(move || {
        let mut env = Env::without_store(dir.path().to_owned());
        env.signing_key =
            Some(SigningKey::read(&dir.path().join("lifeboat-signing-key/key")).unwrap());
        env.store = Store::S3(env.s3(doc.location.s3.as_ref().unwrap(), S3Role::Backups)?);
        let trust = Trust {
            key: env.signing_key.as_ref(),
            unsigned: Unsigned::Refuse,
        };
        lifeboat_agent::catalog::read(
            &env.store,
            &Scope::new(&doc.namespace, &doc.policy)?,
            trust,
            &lifeboat_agent::catalog::Wanted {
                backup_id: &doc.backup_id,
                taken_before: doc.taken_before,
                assets: &doc.assets,
            },
        )
    })
    .await;
    let mut s = summary(Verb::Catalog, result.is_ok());
    if let Err(e) = &result {
        s.error_class = Some(e.class);
        s.message = Some(e.message.clone());
    }
    let message = TerminationMessage {
        summary: s,
        checks_report: None,
        catalog: result.ok(),
        point_in_time: None,
    };
    h.finish_job_with(&job.name_any(), &message).await;
    message
}

/// An S3 server with a `backups` bucket, its keys in Secret `s3-creds` of the test's namespace,
/// and the location of that bucket.
async fn bucket_with_keys(h: &Harness) -> (LocalS3, Destination) {
    let s3 =
        LocalS3::start_with(|root| std::fs::create_dir_all(root.join("backups")).unwrap()).unwrap();
    let s3_secret: Secret = serde_json::from_value(json!({"metadata": {"name": "s3-creds"},
        "stringData": {"AWS_ACCESS_KEY_ID": LocalS3::ACCESS_KEY,
                       "AWS_SECRET_ACCESS_KEY": LocalS3::SECRET_KEY}}))
    .unwrap();
    h.api::<Secret>()
        .create(&PostParams::default(), &s3_secret)
        .await
        .unwrap();
    let loc = serde_json::from_value(location(&s3)).unwrap();
    (s3, loc)
}

/// A Redis server whose key `team` holds `value`.
async fn redis_holding(value: &'static str) -> LocalRedis {
    blocking(move || {
        let r = LocalRedis::start().unwrap();
        r.conn().run(0, &["SET", "team", value]).unwrap();
        r
    })
    .await
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

fn reason(r: &RestoreRequest) -> Option<String> {
    r.status
        .as_ref()
        .and_then(|s| find(&s.conditions, types::READY))
        .map(|c| c.reason.clone())
}

fn phase(r: &RestoreRequest) -> RestorePhase {
    r.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

async fn restore_jobs(h: &Harness, rr: &str) -> Vec<String> {
    h.api::<Job>()
        .list(&ListParams::default().labels("lifeboat.dev/role=restore"))
        .await
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .filter(|n| n.starts_with(rr))
        .collect()
}

#[tokio::test]
async fn a_request_with_a_location_and_no_policy_plans_from_the_catalog_and_restores_the_newest_backup()
 {
    let h = harness("rr-catalog").await;
    let (s3, loc) = bucket_with_keys(&h).await;
    // Two real backups in the namespace's directory at the location; the second is `latest`.
    let redis = redis_holding("first").await;
    let first = backup(&h.ns, &loc, redis.port).await;
    redis.conn().run(0, &["SET", "team", "second"]).unwrap();
    let second = backup(&h.ns, &loc, redis.port).await;
    assert_ne!(first, second);

    // No BackupPolicy exists: only the location, and a target for the data.
    let data_dir = tempfile::tempdir().unwrap();
    let spec = json!({
        "source": {"policy": "shop", "backupId": "latest", "location": location(&s3)},
        "targets": [{"asset": "sessions", "redis": {"host": "127.0.0.1", "port": redis.port,
                                                     "dataDir": data_dir.path()}}]
    });
    apply_restore(&h, "from-bucket", spec.clone()).await;
    restore_until(&h, "ReadingCatalog", "from-bucket", |r| {
        reason(r).as_deref() == Some("ReadingCatalog")
    })
    .await;
    let message = run_catalog_job(&h, "from-bucket").await;
    assert!(message.summary.ok, "{message:?}");
    let rr = restore_until(&h, "the plan", "from-bucket", |r| {
        phase(r) == RestorePhase::Planned
    })
    .await;
    let status = rr.status.unwrap();
    assert_eq!(status.plan.len(), 1);
    let p = &status.plan[0];
    assert_eq!(p.asset, "sessions");
    assert_eq!(p.kind, Some(AssetKind::Redis));
    assert_eq!(
        p.backup_id, second,
        "the newest complete backup at the location"
    );
    assert!(
        p.snapshot_time.is_some() && p.stored_bytes.unwrap() > 0,
        "{p:?}"
    );
    assert_eq!(p.target, format!("redis://127.0.0.1:{}", redis.port));
    assert!(
        restore_jobs(&h, "from-bucket").await.is_empty(),
        "nothing runs before execute"
    );

    // Execute: one restore Job of that id from the location, run here by the agent's code.
    let mut exec = spec.clone();
    exec["execute"] = json!(true);
    apply_restore(&h, "from-bucket", exec).await;
    let job_name =
        lifeboat_operator::restore_request::progress::restore_job_name("from-bucket", "sessions");
    let job = h
        .until("the restore Job", async || {
            h.api::<Job>().get_opt(&job_name).await.unwrap()
        })
        .await;
    // The catalog Job and its pod are gone mid-restore (a cleanup, a node's pod GC) and a newer
    // backup appears: the executing request keeps the plan it showed.
    for j in catalog_jobs(&h).await {
        h.api::<Job>()
            .delete(&j.name_any(), &DeleteParams::background())
            .await
            .unwrap();
    }
    let catalog_pods = ListParams::default().labels("lifeboat.dev/role=catalog");
    for p in h.api::<Pod>().list(&catalog_pods).await.unwrap() {
        // The garbage collector may be first: gone either way.
        let _ = h
            .api::<Pod>()
            .delete(&p.name_any(), &DeleteParams::default())
            .await;
    }
    h.until("the catalog Job and pod gone", async || {
        let jobs = catalog_jobs(&h).await;
        let pods = h.api::<Pod>().list(&catalog_pods).await.unwrap();
        (jobs.items.is_empty() && pods.items.is_empty()).then_some(())
    })
    .await;
    redis.conn().run(0, &["SET", "team", "third"]).unwrap();
    let third = backup(&h.ns, &loc, redis.port).await;
    assert_ne!(third, second);
    let (doc, dir): (AgentRestoreJob, _) = pod_of(&h, &job).await;
    assert_eq!(doc.backup_id, second);
    assert_eq!(doc.location, loc);
    assert_eq!(doc.asset.kind(), AssetKind::Redis);
    let restored = blocking(move || {
        let mut env = Env::without_store(dir.path().to_owned());
        env.signing_key =
            Some(SigningKey::read(&dir.path().join("lifeboat-signing-key/key")).unwrap());
        env.store = Store::S3(env.s3(doc.location.s3.as_ref().unwrap(), S3Role::Backups)?);
        let listed = env.store.find(
            &Scope::new(&doc.namespace, &doc.policy)?,
            &doc.backup_id,
            &doc.asset.name,
            env.trust()?,
        )?;
        lifeboat_agent::jobs::restore(
            &env,
            &listed,
            &doc.asset,
            doc.target.as_ref(),
            &doc.options,
            doc.identity_secret.as_ref(),
            None,
        )
    })
    .await;
    restored.unwrap();
    let path = data_dir.path().to_owned();
    let team = blocking(move || {
        let r = LocalRedis::start_in(&path, None).unwrap();
        r.conn().run(0, &["GET", "team"]).unwrap()
    })
    .await;
    assert_eq!(team, "second", "the restored RDB is the newest backup's");
    h.finish_job(&job_name, &summary(Verb::Restore, true)).await;
    let done = restore_until(&h, "Succeeded", "from-bucket", |r| {
        phase(r) == RestorePhase::Succeeded
    })
    .await;
    assert_eq!(done.status.unwrap().plan[0].backup_id, second);
    assert!(
        catalog_jobs(&h).await.items.is_empty(),
        "no second catalog was read for an executing request"
    );
    assert!(
        h.api::<lifeboat_api::BackupPolicy>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "no BackupPolicy was ever needed"
    );

    // A directory without backups at the location: NoBackupAtLocation, nothing restored.
    let mut empty = spec.clone();
    empty["source"]["policy"] = json!("nothing-here");
    apply_restore(&h, "empty", empty).await;
    run_catalog_job(&h, "empty").await;
    restore_until(&h, "NoBackupAtLocation", "empty", |r| {
        reason(r).as_deref() == Some("NoBackupAtLocation")
    })
    .await;

    // The newest metadata replaced by the first backup's (validly signed, the wrong place):
    // MetadataInvalid, and neither backup is restored.
    {
        use object_store::ObjectStoreExt;
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(s3.endpoint())
            .with_bucket_name("backups")
            .with_region("us-east-1")
            .with_access_key_id(LocalS3::ACCESS_KEY)
            .with_secret_access_key(LocalS3::SECRET_KEY)
            .with_allow_http(true)
            .build()
            .unwrap();
        let key = |id: &str| {
            object_store::path::Path::from(format!(
                "lifeboat/{}/shop/{id}/sessions.metadata.json",
                h.ns
            ))
        };
        let moved = store
            .get(&key(&first))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        store.put(&key(&second), moved.into()).await.unwrap();
    }
    apply_restore(&h, "tampered", spec.clone()).await;
    run_catalog_job(&h, "tampered").await;
    let rr = restore_until(&h, "MetadataInvalid", "tampered", |r| {
        reason(r).as_deref() == Some("MetadataInvalid")
    })
    .await;
    assert_eq!(phase(&rr), RestorePhase::Pending);
    assert!(restore_jobs(&h, "empty").await.is_empty());
    assert!(restore_jobs(&h, "tampered").await.is_empty());
}

/// `takenBefore` with a policy whose status names a newer backup (the status knows no older
/// one): the request lists the policy's own destination through a catalog Job and plans the
/// newest backup taken before the instant. What a drill's RestoreRequest does when a scheduled
/// backup lands between the drill's start and its plan.
#[tokio::test]
async fn taken_before_a_newer_recorded_backup_plans_the_older_one_from_the_policy_s_destination() {
    let h = harness("rr-before").await;
    let (s3, loc) = bucket_with_keys(&h).await;
    let redis = redis_holding("first").await;
    let first = backup(&h.ns, &loc, redis.port).await;
    // Whole seconds, as status times keep them.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let between = Timestamp::from_second(Timestamp::now().as_second()).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let second = backup(&h.ns, &loc, redis.port).await;

    // The policy records the second as its newest backup (its scheduled Job reports it).
    h.apply_policy(
        "shop",
        json!({"schedule": "0 3 * * *", "retention": {"keepLast": 5}, "destination": location(&s3),
               "assets": [{"name": "sessions", "redis": {"host": "127.0.0.1", "port": redis.port}}]}),
    )
    .await;
    h.until("the policy's CronJob", async || {
        h.api::<k8s_openapi::api::batch::v1::CronJob>()
            .get_opt("shop-sessions")
            .await
            .unwrap()
    })
    .await;
    h.run_cronjob("shop-sessions", "shop-sessions-1").await;
    let mut recorded = summary(Verb::Backup, true);
    recorded.asset = Some("sessions".into());
    recorded.backup_id = Some(second.clone());
    recorded.snapshot_time = Some(Timestamp::now());
    recorded.stored_bytes = Some(1);
    recorded.sha256 = Some("00".repeat(32));
    h.finish_job("shop-sessions-1", &recorded).await;
    h.policy_until("shop", "the second backup recorded", |p| {
        p.status.as_ref().is_some_and(|s| {
            s.assets
                .iter()
                .any(|a| a.last_success.as_ref().is_some_and(|l| l.id == second))
        })
    })
    .await;

    let spec = json!({
        "source": {"policy": "shop", "takenBefore": between},
        "assets": ["sessions"]
    });
    apply_restore(&h, "before", spec).await;
    restore_until(&h, "ReadingCatalog", "before", |r| {
        reason(r).as_deref() == Some("ReadingCatalog")
    })
    .await;
    let message = run_catalog_job(&h, "before").await;
    assert!(message.summary.ok, "{message:?}");
    let rr = restore_until(&h, "the plan", "before", |r| {
        phase(r) == RestorePhase::Planned
    })
    .await;
    let plan = rr.status.unwrap().plan;
    assert_eq!(plan.len(), 1);
    assert_eq!(
        plan[0].backup_id, first,
        "the newest taken before {between}"
    );
    assert!(plan[0].snapshot_time.as_ref().unwrap().0 <= between);

    // Without takenBefore the policy's status resolves latest: no catalog Job.
    apply_restore(
        &h,
        "newest",
        json!({"source": {"policy": "shop"}, "assets": ["sessions"]}),
    )
    .await;
    let rr = restore_until(&h, "the plan", "newest", |r| {
        phase(r) == RestorePhase::Planned
    })
    .await;
    assert_eq!(rr.status.unwrap().plan[0].backup_id, second);
    assert!(
        catalog_jobs(&h)
            .await
            .items
            .iter()
            .all(|j| !j.name_any().starts_with("newest")),
        "no catalog for a request the status resolves"
    );
}
