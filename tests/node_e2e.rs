//! End to end on a real node (hack/node/): the agent image runs in real pods on a real kubelet,
//! against PostgreSQL, Redis and an S3 server on this machine, which listen on loopback and on the
//! node's bridge gateway: the pods reach them over the pod network (the operator's Jobs in
//! namespaces enforcing Pod Security "restricted"; no pod uses the host's network). No pod status is played by hand here: what the
//! operator reads is what the kubelet wrote.
//!
//! Ignored by a plain `cargo test` (it needs root, containerd and runc, and the images
//! `hack/node/images.sh` assembles into target/node-images): `make e2e-node` builds those and
//! runs these tests with `--ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/digest.rs"]
mod digest;
#[path = "common/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use lifeboat_agent::local::{LocalPostgres, LocalRedis, free_port};
use lifeboat_agent::postgres;
use lifeboat_api::agent_result::AgentSummary;
use lifeboat_testenv::{Node, NodeOptions};
use serde_json::json;

const AGENT_IMAGE: &str = concat!(
    "ghcr.io/lifeboat-dev/lifeboat-agent:",
    env!("CARGO_PKG_VERSION")
);

/// The node of the shared control plane, started on first use with the assembled images.
fn node() -> &'static Node {
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/node-images");
    assert!(
        images.join("agent.tar").is_file(),
        "{} missing: run hack/node/images.sh (make e2e-node does)",
        images.join("agent.tar").display()
    );
    let node = lifeboat_testenv::node::shared(&NodeOptions {
        images: Some(images),
    })
    .expect("node")
    .expect("a node of our own: these tests do not run against an existing cluster");
    eprintln!("node {} Ready in {:?}", node.name(), node.start_time());
    node
}

/// Waits for the pod to end; returns its phase and the agent container's termination message.
async fn pod_outcome(pods: &Api<Pod>, name: &str, timeout: Duration) -> (String, String) {
    let deadline = Instant::now() + timeout;
    loop {
        let pod = pods.get(name).await.unwrap();
        let status = pod.status.unwrap_or_default();
        let phase = status.phase.clone().unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            let message = status
                .container_statuses
                .unwrap_or_default()
                .into_iter()
                .find_map(|c| c.state?.terminated?.message)
                .unwrap_or_default();
            return (phase, message);
        }
        assert!(
            Instant::now() < deadline,
            "pod {name} still {phase}: {:#?}",
            status.container_statuses
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The restricted security context the operator gives agent pods (crates/lifeboat-operator/src/pod.rs).
fn agent_pod(
    name: &str,
    args: &[&str],
    env: serde_json::Value,
    volumes: serde_json::Value,
    mounts: serde_json::Value,
) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                                "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "agent", "image": AGENT_IMAGE, "imagePullPolicy": "IfNotPresent",
                "args": args, "env": env,
                "terminationMessagePath": "/dev/termination-log",
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                    "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": mounts
            }],
            "volumes": volumes
        }
    }))
    .unwrap()
}

const FINGERPRINT: &str =
    "SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY id)) FROM t";

/// Runs the agent's blocking PostgreSQL helpers (each drives a runtime of its own) off the
/// test's async runtime.
fn blocking<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

fn sample_database(pg: &LocalPostgres) -> String {
    let conn = pg.conn();
    postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
    postgres::query(
        &conn,
        "shop",
        "CREATE TABLE t (id serial PRIMARY KEY, v text); \
         INSERT INTO t (v) SELECT md5(i::text) FROM generate_series(1, 5000) i",
    )
    .unwrap();
    postgres::query(&conn, "shop", FINGERPRINT).unwrap()
}

fn files_named(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_named(&p, suffix));
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
#[ignore = "needs root and a local node: make e2e-node"]
async fn an_agent_pod_backs_up_postgres_to_a_host_path_and_its_summary_reaches_the_api() {
    let node = node();
    let env = lifeboat_testenv::shared().unwrap();
    let client = env.client().await.unwrap();
    // No Pod Security label here: the pod writes to a hostPath volume so that the test can look
    // at the files, which only "privileged" admits. It uses the pod network like every other.
    let ns = env.namespace(&client, "node-pod").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    // The image starts, and `kubectl logs` works (API server -> kubelet, client certificate).
    let t0 = Instant::now();
    pods.create(
        &PostParams::default(),
        &agent_pod("version", &["--version"], json!([]), json!([]), json!([])),
    )
    .await
    .unwrap();
    let (phase, _) = pod_outcome(&pods, "version", Duration::from_secs(60)).await;
    let pod_start = t0.elapsed();
    assert_eq!(phase, "Succeeded", "{}", node.log_tail(20));
    let logs = pods.logs("version", &LogParams::default()).await.unwrap();
    assert!(logs.starts_with("lifeboat-agent "), "{logs}");
    eprintln!("pod create -> Succeeded: {pod_start:?}");

    // A real backup of a real database, written to a directory of this machine.
    let pg = blocking(|| LocalPostgres::start_on(Some(node.gateway())).unwrap());
    let _fingerprint = blocking(|| sample_database(&pg));
    let out = tempfile::tempdir().unwrap();
    // The pod runs as 65532: let it write.
    std::fs::set_permissions(
        out.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    // The namespace's signing key, as the operator would keep it there.
    let key: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "lifeboat-signing-key"},
        "data": {"key": k8s_openapi::ByteString(harness::namespace_key(&ns))}
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &key)
        .await
        .unwrap();
    let job = json!({"namespace": ns, "policy": "shop",
        "asset": {"name": "orders-db", "postgres": {"host": node.gateway().to_string(), "port": pg.port,
                                                     "user": "lifeboat", "sslMode": "disable", "databases": ["shop"]}},
        "destination": {"volume": {"claimName": "unused"}},
        "compression": {"algorithm": "zstd", "level": 3}, "retention": {"keepLast": 5, "minKeep": 1},
        "signingKey": {"name": "lifeboat-signing-key", "key": "key"}});
    let env_vars = json!([
        {"name": "LIFEBOAT_JOB", "value": job.to_string()},
        {"name": "LIFEBOAT_TERMINATION_LOG", "value": "/dev/termination-log"},
        {"name": "HOME", "value": "/tmp"}
    ]);
    let volumes = json!([
        {"name": "backups", "hostPath": {"path": out.path(), "type": "Directory"}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "signing-key", "secret": {"secretName": "lifeboat-signing-key", "defaultMode": 0o440}}
    ]);
    let mounts = json!([
        {"name": "backups", "mountPath": "/var/lib/lifeboat/backups"},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "signing-key", "mountPath": "/var/run/lifeboat/secrets/lifeboat-signing-key", "readOnly": true}
    ]);
    let t0 = Instant::now();
    pods.create(
        &PostParams::default(),
        &agent_pod("backup", &["backup"], env_vars, volumes, mounts),
    )
    .await
    .unwrap();
    let (phase, message) = pod_outcome(&pods, "backup", Duration::from_secs(120)).await;
    let logs = pods
        .logs("backup", &LogParams::default())
        .await
        .unwrap_or_default();
    assert_eq!(
        phase,
        "Succeeded",
        "{message}\n{logs}\n{}",
        node.log_tail(20)
    );
    eprintln!("backup pod create -> Succeeded: {:?}", t0.elapsed());
    let summary = AgentSummary::from_termination_message(&message)
        .unwrap_or_else(|| panic!("an agent summary in the termination message: {message}"));
    assert!(summary.ok, "{summary:?}");
    let metadata = files_named(out.path(), "orders-db.metadata.json");
    assert_eq!(metadata.len(), 1, "metadata.json on the host: {metadata:?}");
    let artifact = files_named(out.path(), ".pgdump.zst");
    assert_eq!(artifact.len(), 1, "{artifact:?}");
    assert_eq!(
        summary.stored_bytes,
        Some(std::fs::metadata(&artifact[0]).unwrap().len())
    );
}

/// `rclone serve s3`, as the agent's own tests use it, on loopback and the node's gateway.
struct S3Server {
    child: Child,
    port: u16,
    gateway: std::net::Ipv4Addr,
    root: tempfile::TempDir,
}

impl S3Server {
    fn start(node: &Node) -> S3Server {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("backups")).unwrap();
        let port = free_port().unwrap();
        let gateway = node.gateway();
        let child = Command::new("rclone")
            .args(["serve", "s3", "--addr"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--addr")
            .arg(format!("{gateway}:{port}"))
            .args([
                "--auth-key",
                &format!("lifeboat-ak,{S3_SECRET_KEY}"),
                "--config",
                "/dev/null",
            ])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rclone (installed by hack/install-deps.sh)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "rclone serve s3 did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        S3Server {
            child,
            port,
            gateway,
            root,
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const S3_SECRET_KEY: &str = "lifeboat-sk-0123456789";

/// A BackupPolicy "shop" backing up `assets` to `s3`.
async fn apply_shop_policy(h: &harness::Harness, s3: &S3Server, assets: serde_json::Value) {
    let creds: Secret = serde_json::from_value(json!({"metadata": {"name": "s3-creds"},
        "stringData": {"AWS_ACCESS_KEY_ID": "lifeboat-ak", "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}}))
    .unwrap();
    h.api::<Secret>()
        .create(&PostParams::default(), &creds)
        .await
        .unwrap();
    apply_shop_policy_spec(h, s3, assets).await;
}

/// The BackupPolicy "shop" of [`apply_shop_policy`] applied again with `assets`.
async fn apply_shop_policy_spec(h: &harness::Harness, s3: &S3Server, assets: serde_json::Value) {
    h.apply_policy(
        "shop",
        json!({
            "schedule": "0 3 * * *",
            "assets": assets,
            "retention": {"keepLast": 5},
            "destination": {"s3": {"endpoint": format!("http://{}:{}", s3.gateway, s3.port),
                                   "bucket": "backups", "prefix": "lifeboat", "forcePathStyle": true,
                                   "credentialsSecret": {"name": "s3-creds"}}},
            "objectives": {"rpo": "1h"}
        }),
    )
    .await;
}

fn postgres_asset(node: &Node, pg: &LocalPostgres) -> serde_json::Value {
    json!({"name": "orders-db", "postgres": {"host": node.gateway().to_string(), "port": pg.port,
                                            "user": "lifeboat", "sslMode": "disable", "databases": ["shop"]}})
}

/// The Jobs, pods (with their logs) and the node's log tail, for a failure message.
async fn report(h: &harness::Harness, node: &Node) -> String {
    let mut out = String::new();
    for j in h.api::<Job>().list(&ListParams::default()).await.unwrap() {
        out += &format!("job {}: {:?}\n", j.name_any(), j.status);
    }
    let pods = h.api::<Pod>();
    for pod in pods.list(&ListParams::default()).await.unwrap() {
        let logs = pods
            .logs(&pod.name_any(), &LogParams::default())
            .await
            .unwrap_or_default();
        out += &format!("pod {}: {:?}\n{logs}\n", pod.name_any(), pod.status);
    }
    out + &node.log_tail(30)
}

/// Asks for an on-demand backup and waits until every asset of the policy has a good one.
async fn backup_now(h: &harness::Harness, node: &Node, token: &str) -> lifeboat_api::BackupPolicy {
    h.api::<lifeboat_api::BackupPolicy>()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"lifeboat.dev/backup-now": token}}})),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let p = h
            .api::<lifeboat_api::BackupPolicy>()
            .get("shop")
            .await
            .unwrap();
        let done = p.status.as_ref().is_some_and(|s| {
            !s.assets.is_empty() && s.assets.iter().all(|a| a.last_success.is_some())
        });
        if done {
            return p;
        }
        if Instant::now() > deadline {
            panic!(
                "backups not in status in time: {:#?}\n{}",
                p.status,
                report(h, node).await
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every pod of the namespace ran on the node and succeeded: nothing was finished by hand.
async fn all_pods_ran_on(h: &harness::Harness, node: &Node) {
    let pods = h.api::<Pod>().list(&ListParams::default()).await.unwrap();
    assert!(!pods.items.is_empty());
    for pod in pods {
        assert_eq!(
            pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some(node.name())
        );
        // A failed pod says why: its agent's termination message (the failure class).
        let message = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.message.clone())
            .unwrap_or_default();
        assert_eq!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded"),
            "{}: {message}",
            pod.name_any()
        );
    }
}

#[tokio::test]
#[ignore = "needs root and a local node: make e2e-node"]
async fn a_backup_policy_runs_real_jobs_on_the_node_and_its_status_shows_the_backups() {
    let node = node();
    let h = harness::harness("node-bp").await;
    let s3 = S3Server::start(node);
    let pg = blocking(|| LocalPostgres::start_on(Some(node.gateway())).unwrap());
    blocking(|| sample_database(&pg));
    let redis = LocalRedis::start_on(Some(node.gateway())).unwrap();
    redis.conn().run(0, &["SET", "session:1", "alice"]).unwrap();
    // A password the agent pods read from a mounted Secret: it must never leave it.
    redis
        .conn()
        .run(0, &["CONFIG", "SET", "requirepass", REDIS_PASSWORD])
        .unwrap();
    let auth: Secret = serde_json::from_value(json!({"metadata": {"name": "redis-auth"},
        "stringData": {"password": REDIS_PASSWORD}}))
    .unwrap();
    h.api::<Secret>()
        .create(&PostParams::default(), &auth)
        .await
        .unwrap();
    apply_shop_policy(
        &h,
        &s3,
        json!([postgres_asset(node, &pg),
               {"name": "sessions", "redis": {"host": node.gateway().to_string(), "port": redis.port,
                                              "passwordSecret": {"name": "redis-auth", "key": "password"}}}]),
    )
    .await;
    let t0 = Instant::now();
    let policy = backup_now(&h, node, "e2e-1").await;
    eprintln!("backup-now -> both backups in status: {:?}", t0.elapsed());
    let status = policy.status.unwrap();
    assert_eq!(status.assets.len(), 2);
    assert!(status.rpo_seconds.is_some_and(|s| s < 600), "{status:?}");
    for asset in &status.assets {
        let id = asset.last_success.as_ref().unwrap().id.clone();
        let dir = s3
            .root
            .path()
            .join("backups/lifeboat")
            .join(&h.ns)
            .join("shop")
            .join(&id);
        assert!(
            dir.join(format!("{}.metadata.json", asset.name)).is_file(),
            "{} committed in the bucket",
            dir.display()
        );
    }
    all_pods_ran_on(&h, node).await;

    // The failure path in a real pod: a wrong password in the Secret fails the Redis backup
    // with AuthFailed, and neither password reaches a pod's log, termination message or spec.
    h.api::<Secret>()
        .patch(
            "redis-auth",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": WRONG_REDIS_PASSWORD}})),
        )
        .await
        .unwrap();
    h.api::<lifeboat_api::BackupPolicy>()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"lifeboat.dev/backup-now": "e2e-2"}}}),
            ),
        )
        .await
        .unwrap();
    let pods = h.api::<Pod>();
    let deadline = Instant::now() + Duration::from_secs(180);
    let refused = loop {
        let failed = pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .into_iter()
            .find_map(|p| {
                let status = p.status?;
                (status.phase.as_deref() == Some("Failed")).then_some(())?;
                let message = status
                    .container_statuses?
                    .into_iter()
                    .find_map(|c| c.state?.terminated?.message)?;
                AgentSummary::from_termination_message(&message)
            });
        if let Some(summary) = failed {
            break summary;
        }
        assert!(
            Instant::now() < deadline,
            "no failed backup pod in time\n{}",
            report(&h, node).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(!refused.ok);
    assert_eq!(
        refused.error_class,
        Some(lifeboat_api::agent_result::ErrorClass::Auth),
        "{refused:?}"
    );
    pods_keep_secrets(&h, &[REDIS_PASSWORD, WRONG_REDIS_PASSWORD, S3_SECRET_KEY]).await;
}

const REDIS_PASSWORD: &str = "redis-pass-e2e-4c1d9b";
const WRONG_REDIS_PASSWORD: &str = "redis-wrong-e2e-77a0f2";

/// No value of `secrets` (nor its base64) in any pod's spec, status (termination messages
/// included) or log, of every container: read from what the kubelet reported. Fails when there
/// is nothing to read (no pod, no termination message), so it cannot pass vacuously.
async fn pods_keep_secrets(h: &harness::Harness, secrets: &[&str]) {
    let pods = h.api::<Pod>();
    let list = pods.list(&ListParams::default()).await.unwrap();
    let mut messages = 0;
    let mut log_bytes = 0;
    for pod in &list {
        let mut seen = serde_json::to_string(pod).unwrap();
        messages += pod
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
            .filter(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .is_some_and(|t| t.message.as_ref().is_some_and(|m| !m.is_empty()))
            })
            .count();
        for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
            let logs = pods
                .logs(
                    &pod.name_any(),
                    &LogParams {
                        container: Some(c.name.clone()),
                        ..LogParams::default()
                    },
                )
                .await
                .unwrap_or_default();
            log_bytes += logs.len();
            seen += &logs;
        }
        for value in secrets {
            harness::assert_absent(&seen, value, &format!("pod {}", pod.name_any()));
        }
    }
    assert!(list.items.len() >= 3, "pods to read: {}", list.items.len());
    assert!(messages >= 3, "termination messages read: {messages}");
    assert!(log_bytes > 0, "the agent pods logged something to read");
}

#[tokio::test]
#[ignore = "needs root and a local node: make e2e-node"]
async fn a_restore_request_restores_into_a_second_database_validates_and_measures_the_rto() {
    use lifeboat_api::RestoreRequest;
    use lifeboat_api::restore_request::RestorePhase;
    let node = node();
    let h = harness::harness("node-rr").await;
    let s3 = S3Server::start(node);
    let pg = blocking(|| LocalPostgres::start_on(Some(node.gateway())).unwrap());
    let fingerprint = blocking(|| sample_database(&pg));
    apply_shop_policy(&h, &s3, json!([postgres_asset(node, &pg)])).await;
    backup_now(&h, node, "seed").await;

    let t0 = Instant::now();
    let rr = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
    "metadata": {"name": "to-copy"},
    "spec": {
        "source": {"policy": "shop", "backupId": "latest"},
        "targets": [{"asset": "orders-db", "postgres": {"host": node.gateway().to_string(), "port": pg.port,
                                                        "user": "lifeboat", "sslMode": "disable",
                                                        "database": "shop_copy", "createDatabase": true}}],
        "execute": true,
        "validation": {"checks": [{"name": "rows", "sql": {"asset": "orders-db",
                                    "query": "SELECT count(*) FROM t", "expect": "5000"}}]}
    }});
    let api = h.api::<RestoreRequest>();
    api.patch(
        "to-copy",
        &PatchParams::apply("test-user"),
        &Patch::Apply(&rr),
    )
    .await
    .unwrap();
    let status = restore_finished(&h, node, "to-copy").await;
    eprintln!("RestoreRequest -> {:?}: {:?}", status.phase, t0.elapsed());
    assert_eq!(
        status.phase,
        RestorePhase::Succeeded,
        "{status:#?}\n{}",
        report(&h, node).await
    );
    let rto = status.rto_seconds.unwrap();
    assert!(rto > 0.0 && rto < 180.0, "rto {rto}");
    assert_eq!(status.checks.len(), 1);
    assert!(status.checks[0].passed, "{:?}", status.checks);
    assert_eq!(
        blocking(|| postgres::query(&pg.conn(), "shop_copy", FINGERPRINT).unwrap()),
        fingerprint,
        "the second database holds the same rows"
    );
    all_pods_ran_on(&h, node).await;
}

/// A drill of every data asset kind at once, by real pods: PostgreSQL, Redis and a bucket are
/// backed up (mode Fresh), restored into their staging servers and bucket in order, checked, and
/// the staging copies hold what the sources held, each with its own backup's canary marker.
#[tokio::test]
#[ignore = "needs root and a local node: make e2e-node"]
async fn a_drill_of_postgres_redis_and_a_bucket_restores_each_into_staging_and_reports_rto_metrics_and_events()
 {
    use lifeboat_api::DrillSchedule;
    use lifeboat_api::drill_schedule::DrillVerdict;
    let node = node();
    let h = harness::harness("node-drill").await;
    let s3 = S3Server::start(node);
    let pg = blocking(|| LocalPostgres::start_on(Some(node.gateway())).unwrap());
    let fingerprint = blocking(|| sample_database(&pg));
    let redis = LocalRedis::start_on(Some(node.gateway())).unwrap();
    let staging_redis = LocalRedis::start_on(Some(node.gateway())).unwrap();
    let c = redis.conn();
    for cmd in [
        &["SET", "s", "string value"][..],
        &["HSET", "h", "f1", "v1", "f2", "v2"],
        &["EXPIRE", "h", "5000"],
        &["RPUSH", "l", "a", "b", "a"],
    ] {
        c.run(0, cmd).unwrap();
    }
    let source_bucket = s3.root.path().join("assets");
    let staging_bucket = s3.root.path().join("assets-staging");
    std::fs::create_dir_all(source_bucket.join("img")).unwrap();
    std::fs::create_dir(&staging_bucket).unwrap();
    std::fs::write(source_bucket.join("index.html"), "<h1>shop</h1>").unwrap();
    std::fs::write(
        source_bucket.join("img/logo.bin"),
        (0..50_000u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let bucket = |name: &str| {
        json!({"endpoint": format!("http://{}:{}", s3.gateway, s3.port), "bucket": name,
               "forcePathStyle": true, "credentialsSecret": {"name": "s3-creds"}})
    };
    // Canary markers on: the drill reads each backup's marker back from staging.
    let mut asset = postgres_asset(node, &pg);
    asset["canary"] = json!(true);
    let gateway = node.gateway().to_string();
    apply_shop_policy(
        &h,
        &s3,
        json!([asset,
               {"name": "sessions", "redis": {"host": gateway, "port": redis.port}, "canary": true},
               {"name": "assets", "objectStorage": bucket("assets"), "canary": true}]),
    )
    .await;

    let drill = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "DrillSchedule",
    "metadata": {"name": "quarterly"},
    "spec": {
        "schedule": "0 6 1 1,4,7,10 *",
        "policy": "shop",
        "assets": ["orders-db", "sessions", "assets"],
        "staging": {"targets": [
            {"asset": "orders-db", "postgres": {"host": gateway, "port": pg.port, "user": "lifeboat",
                "sslMode": "disable", "database": "shop_drill", "createDatabase": true}},
            {"asset": "sessions", "redis": {"host": gateway, "port": staging_redis.port}},
            {"asset": "assets", "objectStorage": bucket("assets-staging")}
        ]},
        "validation": {"checks": [
            {"name": "rows", "sql": {"asset": "orders-db", "query": "SELECT count(*) FROM t",
                                     "expect": "5000"}},
            {"name": "session", "redis": {"asset": "sessions", "key": "s", "expect": "string value"}}
        ]},
        "backup": "Fresh", "objectives": {"rto": "30m", "rpo": "15m"}
    }});
    let api = h.api::<DrillSchedule>();
    api.patch(
        "quarterly",
        &PatchParams::apply("test-user"),
        &Patch::Apply(&drill),
    )
    .await
    .unwrap();
    let t0 = Instant::now();
    api.patch(
        "quarterly",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"lifeboat.dev/drill-now": "e2e"}}})),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        let d = api.get("quarterly").await.unwrap();
        let status = d.status.unwrap_or_default();
        if status.last_run.is_some() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no drill record: {status:#?}\n{}",
            report(&h, node).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("drill-now -> drill record: {:?}", t0.elapsed());
    let run = status.last_run.clone().unwrap();
    assert_eq!(
        run.verdict,
        DrillVerdict::Passed,
        "{}\n{}",
        run.message,
        report(&h, node).await
    );
    let rto = run.rto_seconds.unwrap();
    assert!(rto > 0.0 && rto < 240.0, "rto {rto}");
    // Mode Fresh backs up at the simulated disaster: restorability and RTO only, no RPO.
    assert_eq!(run.rpo_seconds, None, "{run:?}");
    assert!(run.rto_met && !run.rpo_met, "{run:?}");
    assert_eq!(run.backups.len(), 3, "{run:?}");
    eprintln!(
        "drill: RTO {} ({rto:.1}s), RPO {}",
        run.rto.clone().unwrap_or_default(),
        run.rpo.clone().unwrap_or_default()
    );
    assert_eq!(
        blocking(|| postgres::query(&pg.conn(), "shop_drill", FINGERPRINT).unwrap()),
        fingerprint,
        "staging holds the backed-up rows"
    );
    // The backups wrote their markers into the sources just before their snapshots, and nothing
    // was written after: staging holds exactly what the sources hold, markers included.
    assert_same_redis(
        &digest::redis_digest(&c),
        &digest::redis_digest(&staging_redis.conn()),
    );
    let objects = digest::bucket_digest(&source_bucket);
    assert!(
        objects.len() > 2,
        "the objects and the canary marker: {objects:?}"
    );
    assert_eq!(objects, digest::bucket_digest(&staging_bucket));
    // The evidence Job ran on the node and left the record next to the backups in the bucket,
    // completed from their metadata, and the restored backup is marked verified.
    let evidence_job = format!("{}-evidence", run.id);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = h
            .api::<Job>()
            .get_opt(&evidence_job)
            .await
            .unwrap()
            .and_then(|j| j.status)
            .is_some_and(|s| s.succeeded == Some(1));
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "evidence Job not done\n{}",
            report(&h, node).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let policy_root = s3
        .root
        .path()
        .join("backups/lifeboat")
        .join(&h.ns)
        .join("shop");
    let record: lifeboat_api::evidence::DrillEvidence = serde_json::from_slice(
        &std::fs::read(policy_root.join(format!("drill-{}.json", run.id))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        record.verdict,
        lifeboat_api::evidence::EvidenceVerdict::Passed
    );
    assert_eq!(record.restored.len(), 3, "{record:?}");
    assert_eq!(
        record.checks.len(),
        5,
        "the SQL and Redis checks and a canary check per asset"
    );
    for restored in &record.restored {
        assert!(!restored.artifacts.is_empty(), "{record:?}");
        let found = restored
            .canary_found
            .clone()
            .unwrap_or_else(|| panic!("{}: the marker read back", restored.asset));
        assert_eq!(
            found.id, restored.backup_id,
            "{}: the backup's own marker",
            restored.asset
        );
        assert_eq!(restored.canary_written.as_ref(), Some(&found));
        assert!(
            policy_root
                .join(&restored.backup_id)
                .join(format!("{}.verified.json", restored.asset))
                .exists(),
            "{} marked verified",
            restored.asset
        );
    }
    assert!(run.rpo_canary_seconds.is_some(), "{run:?}");
    eprintln!(
        "evidence: {} steps {:?}",
        run.evidence.clone().unwrap_or_default(),
        record
            .steps
            .iter()
            .map(|s| format!("{} {:.1}s", s.name, s.seconds))
            .collect::<Vec<_>>()
    );
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
    all_pods_ran_on(&h, node).await;
}

/// What a real disaster gets: the CronJob controller runs the policy's scheduled backup on the
/// node, rows are written after it, and a drill in the default mode (the disaster at its start)
/// restores that backup into staging. Its achieved RPO is the time between the backup's snapshot
/// (as the backup's own signed metadata in the bucket records it) and the drill's start, the
/// canary read back from staging is that backup's marker, and staging lacks the rows written
/// after it.
#[tokio::test]
#[ignore = "needs root and a local node: make e2e-node"]
async fn a_default_drill_restores_the_scheduled_backup_and_measures_a_real_rpo() {
    use lifeboat_api::DrillSchedule;
    use lifeboat_api::drill_schedule::DrillVerdict;
    let node = node();
    let h = harness::harness("node-rpo").await;
    let s3 = S3Server::start(node);
    let pg = blocking(|| LocalPostgres::start_on(Some(node.gateway())).unwrap());
    let fingerprint = blocking(|| sample_database(&pg));
    let mut asset = postgres_asset(node, &pg);
    asset["canary"] = json!(true);
    apply_shop_policy(&h, &s3, json!([asset])).await;
    let policies = h.api::<lifeboat_api::BackupPolicy>();
    // Every minute: the CronJob controller starts the next backup at the next minute boundary.
    policies
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"schedule": "* * * * *"}})),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let backup = loop {
        let p = policies.get("shop").await.unwrap();
        if let Some(b) = p
            .status
            .and_then(|s| s.assets.into_iter().next())
            .and_then(|a| a.last_success)
        {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled backup\n{}",
            report(&h, node).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // No further scheduled backups: the drill must find this one the newest.
    policies
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap();
    let scheduled = h
        .api::<Job>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|j| j.owner_references().iter().any(|o| o.kind == "CronJob"))
        .count();
    assert!(
        scheduled >= 1,
        "the backup came from the CronJob controller"
    );
    // The snapshot time in the backup's metadata, to the millisecond (status keeps seconds).
    let policy_root = s3
        .root
        .path()
        .join("backups/lifeboat")
        .join(&h.ns)
        .join("shop");
    let metadata: serde_json::Value = serde_json::from_slice(
        &std::fs::read(policy_root.join(&backup.id).join("orders-db.metadata.json")).unwrap(),
    )
    .unwrap();
    let snapshot: jiff::Timestamp = metadata
        .pointer("/snapshotTime")
        .or_else(|| metadata.pointer("/metadata/snapshotTime"))
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("no snapshot time in {metadata}"))
        .parse()
        .unwrap();

    // What the disaster loses: written after the backup.
    blocking(|| {
        postgres::query(
            &pg.conn(),
            "shop",
            "INSERT INTO t (v) VALUES ('after-backup')",
        )
        .unwrap()
    });
    tokio::time::sleep(Duration::from_secs(2)).await;

    let drill = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "DrillSchedule",
    "metadata": {"name": "quarterly", "annotations": {"lifeboat.dev/drill-now": "disaster"}},
    "spec": {
        "schedule": "0 6 1 1,4,7,10 *",
        "policy": "shop",
        "assets": ["orders-db"],
        "staging": {"targets": [{"asset": "orders-db", "postgres": {"host": node.gateway().to_string(),
            "port": pg.port, "user": "lifeboat", "sslMode": "disable", "database": "shop_drill",
            "createDatabase": true}}]},
        "validation": {"checks": [{"name": "rows", "sql": {"asset": "orders-db",
                                    "query": "SELECT count(*) FROM t", "expect": "5000"}}]},
        "objectives": {"rto": "30m", "rpo": "15m"}
    }});
    let api = h.api::<DrillSchedule>();
    api.patch(
        "quarterly",
        &PatchParams::apply("test-user"),
        &Patch::Apply(&drill),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        let status = api
            .get("quarterly")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        if status.last_run.is_some() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no drill record: {status:#?}\n{}",
            report(&h, node).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let run = status.last_run.clone().unwrap();
    assert_eq!(
        run.verdict,
        DrillVerdict::Passed,
        "{}\n{}",
        run.message,
        report(&h, node).await
    );
    assert_eq!(run.backups.len(), 1);
    assert_eq!(
        run.backups[0].id, backup.id,
        "the scheduled backup restored"
    );
    let started = run.started_at.0;
    let expected = (started.as_millisecond() - snapshot.as_millisecond()) as f64 / 1000.0;
    let rpo = run.rpo_seconds.unwrap();
    assert!(
        rpo >= 2.0,
        "non-zero: the rows after the backup are lost ({rpo})"
    );
    assert!(
        (rpo - expected).abs() <= 1.0,
        "RPO {rpo}s, snapshot {snapshot} to drill start {started}: {expected}s"
    );
    let canary = run.rpo_canary_seconds.expect("the marker read back");
    assert!(
        canary >= rpo - 1.0 && canary - expected < 1.0,
        "canary RPO {canary}s vs {expected}s"
    );
    let found = run
        .checks
        .iter()
        .find(|c| c.name == "canary/orders-db")
        .and_then(|c| c.canary.clone())
        .expect("the canary check");
    assert_eq!(found.id, backup.id, "the scheduled backup's own marker");
    assert!(found.written_at <= snapshot, "{found:?} after {snapshot}");
    // Staging holds the backup, not what came after it.
    assert_eq!(
        blocking(|| postgres::query(&pg.conn(), "shop_drill", FINGERPRINT).unwrap()),
        fingerprint
    );
    let after = blocking(|| {
        postgres::query(
            &pg.conn(),
            "shop_drill",
            "SELECT count(*) FROM t WHERE v = 'after-backup'",
        )
        .unwrap()
    });
    assert_eq!(after.trim(), "0");
    let rpo_met = lifeboat_api::conditions::find(
        &status.conditions,
        lifeboat_api::conditions::types::RPO_MET,
    )
    .unwrap();
    assert_eq!(
        (rpo_met.status.as_str(), rpo_met.reason.as_str()),
        ("True", "WithinObjective")
    );
    eprintln!(
        "default drill: restored {} (snapshot {snapshot}), drill start {started}, RPO {rpo}s (expected {expected:.3}s), canary RPO {canary}s",
        backup.id
    );
    // The drill's evidence Job runs last; every pod, that one included, ran on the node.
    let evidence_job = format!("{}-evidence", run.id);
    let deadline = Instant::now() + Duration::from_secs(120);
    while h
        .api::<Job>()
        .get_opt(&evidence_job)
        .await
        .unwrap()
        .and_then(|j| j.status)
        .is_none_or(|s| s.succeeded != Some(1))
    {
        assert!(
            Instant::now() < deadline,
            "evidence Job not done\n{}",
            report(&h, node).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    all_pods_ran_on(&h, node).await;
}

#[tokio::test]
#[ignore = "needs root and a local node: make e2e-node"]
async fn kubernetes_state_is_backed_up_and_restored_by_lifeboat_s_own_accounts_over_the_pod_network()
 {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    use lifeboat_api::RestoreRequest;
    use lifeboat_api::restore_request::RestorePhase;
    let node = node();
    let h = harness::harness("node-state").await;
    let s3 = S3Server::start(node);
    let env = lifeboat_testenv::shared().unwrap();
    let copy = env.namespace(&h.client, "node-state-copy").await.unwrap();
    harness::enforce_restricted_pod_security(&h.client, &copy).await;
    // The platform team lets this namespace's restores write into the copy.
    Api::<Namespace>::all(h.client.clone())
        .patch(
            &copy,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                format!("restores-from.lifeboat.dev/{}", h.ns): "true"}}})),
        )
        .await
        .unwrap();
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "app-config"}, "data": {"mode": "prod"}}),
    )
    .unwrap();
    h.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    apply_shop_policy(
        &h,
        &s3,
        json!([{"name": "objects",
                "kubernetesState": {"namespaces": [h.ns], "includeResources": ["configmaps"]}}]),
    )
    .await;
    let t0 = Instant::now();
    backup_now(&h, node, "state").await;
    eprintln!(
        "kubernetes-state backup-now -> in status: {:?}",
        t0.elapsed()
    );

    let t0 = Instant::now();
    let rr = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
    "metadata": {"name": "state-copy"},
    "spec": {
        "source": {"policy": "shop", "backupId": "latest"},
        "targets": [{"asset": "objects", "kubernetesState": {"namespaceMapping": {h.ns.clone(): copy.clone()}}}],
        "execute": true,
        // Not what the restore runs as: Lifeboat's own account does.
        "podTemplate": {"serviceAccountName": "default"}
    }});
    let api = h.api::<RestoreRequest>();
    api.patch(
        "state-copy",
        &PatchParams::apply("test-user"),
        &Patch::Apply(&rr),
    )
    .await
    .unwrap();
    let status = restore_finished(&h, node, "state-copy").await;
    eprintln!(
        "kubernetes-state RestoreRequest -> {:?}: {:?}",
        status.phase,
        t0.elapsed()
    );
    assert_eq!(
        status.phase,
        RestorePhase::Succeeded,
        "{status:#?}\n{}",
        report(&h, node).await
    );
    let restored = Api::<ConfigMap>::namespaced(h.client.clone(), &copy)
        .get("app-config")
        .await
        .unwrap();
    assert_eq!(restored.data.unwrap()["mode"], "prod");
    for pod in h.api::<Pod>().list(&ListParams::default()).await.unwrap() {
        let role = pod
            .labels()
            .get("lifeboat.dev/role")
            .cloned()
            .unwrap_or_default();
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone());
        let expected = match role.as_str() {
            "backup" => "lifeboat-kubestate-backup",
            "restore" => "lifeboat-kubestate-restore",
            other => panic!("unexpected pod role {other}"),
        };
        assert_eq!(account.as_deref(), Some(expected), "{}", pod.name_any());
    }
    all_pods_ran_on(&h, node).await;
}

/// Issue #15, "a catalog read from storage": PostgreSQL backed up by a BackupPolicy to the S3
/// server, then the policy deleted (its CronJobs and status with it), as on a rebuilt cluster
/// that has only the bucket and the keys. A RestoreRequest with `source.location` and
/// `backupId: latest` restores the data anyway: the operator's catalog Job reads and verifies
/// the backups at the location in a real agent pod, the plan names the newest backup, and a
/// real restore pod restores it; the restored table's checksum equals the one taken before.
#[tokio::test]
#[ignore = "needs root and a local node: make e2e-node"]
async fn a_restore_from_a_location_needs_no_backup_policy() {
    use lifeboat_api::RestoreRequest;
    use lifeboat_api::backup_policy::AssetKind;
    use lifeboat_api::restore_request::RestorePhase;
    let node = node();
    let h = harness::harness("node-catalog").await;
    let s3 = S3Server::start(node);
    let pg = blocking(|| LocalPostgres::start_on(Some(node.gateway())).unwrap());
    let fingerprint = blocking(|| sample_database(&pg));
    apply_shop_policy(&h, &s3, json!([postgres_asset(node, &pg)])).await;
    let policy = backup_now(&h, node, "seed").await;
    let backed_up = policy.status.unwrap().assets[0]
        .last_success
        .clone()
        .unwrap()
        .id;
    let location = policy.spec.destination.clone();
    // The disaster, for Lifeboat's part: no policy, no status, no history.
    h.api::<lifeboat_api::BackupPolicy>()
        .delete("shop", &Default::default())
        .await
        .unwrap();
    h.until("the BackupPolicy gone", async || {
        h.api::<lifeboat_api::BackupPolicy>()
            .get_opt("shop")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;

    let t0 = Instant::now();
    let rr = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
    "metadata": {"name": "from-bucket"},
    "spec": {
        "source": {"policy": "shop", "backupId": "latest", "location": location},
        "targets": [{"asset": "orders-db", "postgres": {"host": node.gateway().to_string(), "port": pg.port,
                                                        "user": "lifeboat", "sslMode": "disable",
                                                        "database": "shop_restored", "createDatabase": true}}],
        "execute": true
    }});
    let api = h.api::<RestoreRequest>();
    api.patch(
        "from-bucket",
        &PatchParams::apply("test-user"),
        &Patch::Apply(&rr),
    )
    .await
    .unwrap();
    let status = restore_finished(&h, node, "from-bucket").await;
    eprintln!(
        "RestoreRequest from the location -> {:?}: {:?}",
        status.phase,
        t0.elapsed()
    );
    assert_eq!(
        status.phase,
        RestorePhase::Succeeded,
        "{status:#?}\n{}",
        report(&h, node).await
    );
    assert_eq!(status.plan.len(), 1);
    assert_eq!(
        status.plan[0].backup_id, backed_up,
        "latest, read from the bucket"
    );
    assert_eq!(status.plan[0].kind, Some(AssetKind::Postgres));
    assert_eq!(
        blocking(|| postgres::query(&pg.conn(), "shop_restored", FINGERPRINT).unwrap()),
        fingerprint,
        "the restored table holds the rows backed up"
    );
    // The catalog ran as a real agent pod, like the restore: nothing finished by hand.
    let roles: Vec<String> = h
        .api::<Job>()
        .list(&ListParams::default().labels("lifeboat.dev/restore"))
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|j| j.labels().get("lifeboat.dev/role").cloned())
        .collect();
    assert!(roles.contains(&"catalog".to_owned()), "{roles:?}");
    assert!(roles.contains(&"restore".to_owned()), "{roles:?}");
    all_pods_ran_on(&h, node).await;
}

/// Same keys, types and values; the same expiry, to the second (rounding aside).
fn assert_same_redis(
    before: &std::collections::BTreeMap<String, (String, String, i64)>,
    after: &std::collections::BTreeMap<String, (String, String, i64)>,
) {
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (k, (t, v, ttl)) in before {
        let (t2, v2, ttl2) = &after[k];
        assert_eq!((t, v), (t2, v2), "{k}");
        assert!((ttl - ttl2).abs() <= 1, "{k}: expires at {ttl} vs {ttl2}");
    }
}

async fn restore_finished(
    h: &harness::Harness,
    node: &Node,
    name: &str,
) -> lifeboat_api::restore_request::RestoreRequestStatus {
    let api = h.api::<lifeboat_api::RestoreRequest>();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let status = api.get(name).await.unwrap().status.unwrap_or_default();
        if status.phase.is_finished() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "restore {name} still {:?}: {status:#?}\n{}",
            status.phase,
            report(h, node).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A Redis without `dataDir` (what a Redis in a pod is to Lifeboat) restored by a real agent
/// pod: the pod listens on its own IP (downward API) under Pod Security "restricted", the
/// server connects to it over the pod network as a replica and loads the backup; every key type
/// and TTL comes back. Then a restore whose validation fails with `rollbackOnFailure` puts the
/// data the server held before it back, through the same path.
#[tokio::test]
#[ignore = "needs root and a local node: make e2e-node"]
async fn a_redis_without_data_dir_is_loaded_over_replication_by_a_real_pod_and_rolled_back() {
    use lifeboat_api::restore_request::RestorePhase;
    let node = node();
    let h = harness::harness("node-redis").await;
    let s3 = S3Server::start(node);
    let redis = LocalRedis::start_on(Some(node.gateway())).unwrap();
    let c = redis.conn();
    for cmd in [
        &["SET", "s", "string value"][..],
        &["SET", "s:ttl", "short-lived", "EX", "3000"],
        &["RPUSH", "l", "a", "b", "c", "a"],
        &["SADD", "set", "x", "y", "z"],
        &["ZADD", "z", "1.5", "one", "-2", "two"],
        &["HSET", "h", "f1", "v1", "f2", "v2"],
        &["EXPIRE", "h", "5000"],
        &["XADD", "stream", "1-1", "k", "v"],
    ] {
        c.run(0, cmd).unwrap();
    }
    c.run(3, &["SET", "db3", "other db"]).unwrap();
    let before = digest::redis_digest(&c);
    apply_shop_policy(
        &h,
        &s3,
        json!([{"name": "sessions", "redis": {"host": node.gateway().to_string(), "port": redis.port}}]),
    )
    .await;
    backup_now(&h, node, "redis-1").await;

    // The data changes after the backup: a key gone, one changed, one added.
    c.run(0, &["DEL", "l"]).unwrap();
    c.run(0, &["SET", "s", "changed"]).unwrap();
    c.run(0, &["SET", "new", "after the backup"]).unwrap();
    assert_ne!(digest::redis_digest(&c), before);

    let t0 = Instant::now();
    let rr = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
        "metadata": {"name": "back"},
        "spec": {"source": {"policy": "shop", "backupId": "latest"}, "execute": true,
                 "validation": {"checks": [{"name": "session", "redis": {"asset": "sessions", "key": "s",
                                                                          "expect": "string value"}}]}}});
    h.api::<lifeboat_api::RestoreRequest>()
        .patch("back", &PatchParams::apply("test-user"), &Patch::Apply(&rr))
        .await
        .unwrap();
    let status = restore_finished(&h, node, "back").await;
    eprintln!(
        "Redis RestoreRequest -> {:?}: {:?}",
        status.phase,
        t0.elapsed()
    );
    assert_eq!(
        status.phase,
        RestorePhase::Succeeded,
        "{status:#?}\n{}",
        report(&h, node).await
    );
    assert_same_redis(&before, &digest::redis_digest(&c));
    assert!(
        c.run(0, &["INFO", "replication"])
            .unwrap()
            .contains("role:master"),
        "the server is a master again"
    );
    assert_eq!(
        c.run(0, &["CONFIG", "GET", "masterauth"])
            .unwrap()
            .lines()
            .nth(1)
            .unwrap_or_default(),
        ""
    );
    all_pods_ran_on(&h, node).await;

    // Rollback on real data: the server's current data, then a restore whose check fails.
    c.run(0, &["SET", "s", "kept by the rollback"]).unwrap();
    c.run(0, &["SET", "only-now", "x", "EX", "4000"]).unwrap();
    let current = digest::redis_digest(&c);
    let rr = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
        "metadata": {"name": "bad"},
        "spec": {"source": {"policy": "shop", "backupId": "latest"}, "execute": true,
                 "rollbackOnFailure": true,
                 "validation": {"timeout": "20s",
                                "checks": [{"name": "missing", "redis": {"asset": "sessions",
                                                                          "key": "no-such-key"}}]}}});
    h.api::<lifeboat_api::RestoreRequest>()
        .patch("bad", &PatchParams::apply("test-user"), &Patch::Apply(&rr))
        .await
        .unwrap();
    let status = restore_finished(&h, node, "bad").await;
    assert_eq!(
        status.phase,
        RestorePhase::RolledBack,
        "{status:#?}\n{}",
        report(&h, node).await
    );
    assert_same_redis(&current, &digest::redis_digest(&c));
}

/// The Redis pod of the StatefulSet `redis` (another than the pod `not_uid`), once it runs a
/// server that answers: its connection from this machine (over the node's pod network), its IP
/// and its uid.
async fn redis_pod_ready(
    h: &harness::Harness,
    node: &Node,
    not_uid: Option<&str>,
) -> (lifeboat_agent::redis::Conn, String, String) {
    let pods = h.api::<Pod>();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(pod) = pods.get_opt("redis-0").await.unwrap() {
            let status = pod.status.clone().unwrap_or_default();
            if let (Some("Running"), Some(ip)) = (status.phase.as_deref(), status.pod_ip.clone())
                && pod.metadata.uid.as_deref() != not_uid
                && pod.metadata.deletion_timestamp.is_none()
            {
                let conn = lifeboat_agent::redis::Conn {
                    host: ip.clone(),
                    port: 6379,
                    username: None,
                    password: None,
                    tls: false,
                };
                let answered = {
                    let conn = conn.clone();
                    blocking(move || conn.run(0, &["PING"]).ok())
                };
                if answered.as_deref() == Some("PONG") {
                    return (conn, ip, pod.metadata.uid.clone().unwrap_or_default());
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "redis-0 not serving\n{}",
            report(h, node).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Redis as common charts deploy it: a StatefulSet with appendonly on, its data on a PVC bound
/// to a PersistentVolume on the node. A BackupPolicy backs it up with real Jobs, the data
/// changes, and a RestoreRequest restores it in place through a real agent pod over the
/// replication protocol: every key, type and expiry comes back, then the pod is deleted and the
/// restored data is what its successor loads from the PVC.
#[tokio::test]
#[ignore = "needs root and a local node: make e2e-node"]
async fn a_redis_statefulset_with_a_pvc_is_restored_in_place_and_survives_its_pod_s_restart() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::PersistentVolume;
    use lifeboat_api::restore_request::RestorePhase;
    let node = node();
    let h = harness::harness("node-sts").await;
    let s3 = S3Server::start(node);
    // The volume's directory belongs to the unprivileged user the Redis pod runs as.
    let data = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(data.path(), Some(65532), Some(65532)).unwrap();
    let pv_name = format!("{}-redis", h.ns);
    let pvs: Api<PersistentVolume> = Api::all(h.client.clone());
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": pv_name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": "lifeboat-test-manual", "persistentVolumeReclaimPolicy": "Retain",
                 "hostPath": {"path": data.path().to_str().unwrap(), "type": "Directory"},
                 "claimRef": {"namespace": h.ns, "name": "data-redis-0"}}
    }))
    .unwrap();
    pvs.create(&PostParams::default(), &pv).await.unwrap();
    let restricted = json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}});
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "redis"},
        "spec": {
            "serviceName": "redis", "replicas": 1,
            "selector": {"matchLabels": {"app": "redis"}},
            "template": {
                "metadata": {"labels": {"app": "redis"}},
                "spec": {
                    "automountServiceAccountToken": false,
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                                        "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "redis", "image": "lifeboat.test/redis:local", "imagePullPolicy": "Never",
                        "args": ["--bind", "0.0.0.0", "--protected-mode", "no", "--port", "6379",
                                 "--dir", "/data", "--appendonly", "yes", "--save", "3600 1"],
                        "ports": [{"name": "redis", "containerPort": 6379}],
                        "securityContext": restricted,
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]
                    }]
                }
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "lifeboat-test-manual",
                         "resources": {"requests": {"storage": "1Gi"}}}
            }]
        }
    }))
    .unwrap();
    h.api::<StatefulSet>()
        .create(&PostParams::default(), &sts)
        .await
        .unwrap();
    let (c, ip, uid) = redis_pod_ready(&h, node, None).await;

    let before = blocking(|| {
        for cmd in [
            &["SET", "s", "string value"][..],
            &["SET", "s:ttl", "short-lived", "EX", "3000"],
            &["RPUSH", "l", "a", "b", "c", "a"],
            &["SADD", "set", "x", "y", "z"],
            &["ZADD", "z", "1.5", "one", "-2", "two"],
            &["HSET", "h", "f1", "v1", "f2", "v2"],
            &["EXPIRE", "h", "5000"],
            &["XADD", "stream", "1-1", "k", "v"],
        ] {
            c.run(0, cmd).unwrap();
        }
        c.run(3, &["SET", "db3", "other db"]).unwrap();
        digest::redis_digest(&c)
    });
    apply_shop_policy(
        &h,
        &s3,
        json!([{"name": "sessions", "redis": {"host": ip, "port": 6379}}]),
    )
    .await;
    backup_now(&h, node, "sts-1").await;
    blocking(|| {
        c.run(0, &["DEL", "l"]).unwrap();
        c.run(0, &["SET", "s", "changed"]).unwrap();
        c.run(0, &["SET", "new", "after the backup"]).unwrap();
        assert_ne!(digest::redis_digest(&c), before);
    });

    let rr = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
        "metadata": {"name": "in-place"},
        "spec": {"source": {"policy": "shop", "backupId": "latest"}, "execute": true}});
    h.api::<lifeboat_api::RestoreRequest>()
        .patch(
            "in-place",
            &PatchParams::apply("test-user"),
            &Patch::Apply(&rr),
        )
        .await
        .unwrap();
    let status = restore_finished(&h, node, "in-place").await;
    assert_eq!(
        status.phase,
        RestorePhase::Succeeded,
        "{status:#?}\n{}",
        report(&h, node).await
    );
    eprintln!(
        "restore: {:?}",
        status.plan.iter().map(|p| &p.target).collect::<Vec<_>>()
    );
    let restored = blocking(|| digest::redis_digest(&c));
    assert_same_redis(&before, &restored);

    // The pod goes; its successor loads the PVC: the restored data, not the changed data.
    h.api::<Pod>()
        .delete("redis-0", &Default::default())
        .await
        .unwrap();
    let (c, _, _) = redis_pod_ready(&h, node, Some(&uid)).await;
    assert_same_redis(&before, &blocking(|| digest::redis_digest(&c)));

    h.api::<StatefulSet>()
        .delete("redis", &Default::default())
        .await
        .unwrap();
    let _ = pvs.delete(&pv_name, &Default::default()).await;
}

/// The programs images/agent-tools.txt lists: what the agent image must hold.
fn agent_tools() -> std::collections::BTreeSet<String> {
    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/agent-tools.txt");
    std::fs::read_to_string(list)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_agent_image_s_tool_list_is_what_the_agent_runs_and_the_dockerfile_checks() {
    // Every program the agent starts in its pods, read from its source; local.rs starts the
    // throwaway servers of the local drill and tests on a workstation, never in a pod.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/lifeboat-agent/src");
    let call =
        regex::Regex::new(r#"tools::(?:find|find_pg|version|version_of)\(\s*"([^"]+)""#).unwrap();
    let mut used = std::collections::BTreeSet::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.file_name().is_some_and(|n| n == "local.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            used.extend(call.captures_iter(&text).map(|c| c[1].to_owned()));
        }
    }
    assert!(
        !used.is_empty(),
        "no tools::find call found under {}",
        src.display()
    );
    assert_eq!(
        used,
        agent_tools(),
        "images/agent-tools.txt against the agent's source"
    );

    let dockerfile = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/agent.Dockerfile"),
    )
    .unwrap();
    assert!(
        dockerfile.contains("COPY images/agent-tools.txt "),
        "{dockerfile}"
    );
    assert!(dockerfile.contains("missing\" >&2; exit 1"), "{dockerfile}");
    assert!(
        !dockerfile.contains("rclone"),
        "nothing the agent does not run"
    );
}

/// Every stage of both Dockerfiles takes its image from a build argument with a default, so a
/// release pins the bases by digest without editing the files (images/README.md).
#[test]
fn the_images_take_their_bases_from_build_arguments_a_release_pins_by_digest() {
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
    let readme = std::fs::read_to_string(images.join("README.md")).unwrap();
    for name in ["agent.Dockerfile", "operator.Dockerfile"] {
        let text = std::fs::read_to_string(images.join(name)).unwrap();
        let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
        assert_eq!(froms.len(), 2, "{name}: a build stage and the image");
        for from in froms {
            let image = from["FROM ".len()..].split_whitespace().next().unwrap();
            let arg = image
                .strip_prefix("${")
                .and_then(|a| a.strip_suffix('}'))
                .unwrap_or_else(|| panic!("{name}: {from:?} names its image, not an argument"));
            let default = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("ARG {arg}=")))
                .unwrap_or_else(|| panic!("{name}: no default for {arg} before its FROM"));
            assert!(
                readme.contains(&format!("--build-arg {arg}=")) || readme.contains(default),
                "{name}: images/README.md says how to pin {arg} ({default})"
            );
        }
    }
    assert!(readme.contains("docker buildx imagetools inspect"));
}

#[test]
#[ignore = "needs the node's images: hack/node/images.sh (make e2e-node)"]
fn the_node_s_agent_image_holds_the_listed_tools_and_nothing_unused() {
    let tar = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/node-images/agent.tar");
    // An OCI layout in a tar: each blob is a file; the layer is the blob that is itself a tar.
    let mut outer = ::tar::Archive::new(std::fs::File::open(&tar).unwrap());
    let mut files = Vec::new();
    for blob in outer.entries().unwrap() {
        let mut blob = blob.unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut blob, &mut bytes).unwrap();
        let mut layer = ::tar::Archive::new(bytes.as_slice());
        if let Ok(entries) = layer.entries() {
            for e in entries.flatten() {
                files.push(e.path().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let programs: std::collections::BTreeSet<String> = files
        .iter()
        .filter(|f| f.contains("/bin/"))
        .filter_map(|f| f.rsplit('/').next().map(str::to_owned))
        .filter(|n| !n.is_empty())
        .collect();
    let mut expected = agent_tools();
    expected.insert("lifeboat-agent".into());
    assert_eq!(programs, expected, "the programs in {}", tar.display());
}

#[tokio::test]
#[ignore = "needs root and a local node: make e2e-node"]
async fn under_openshift_style_settings_agent_pods_run_as_the_namespace_s_uid_and_back_up() {
    let node = node();
    // The platform's settings as charts/lifeboat/ci/openshift-values.yaml gives them (no fixed
    // ids, Pod Security "restricted" otherwise) and a pull secret for the agent image.
    let mut agent = lifeboat_operator::config::AgentConfig::default();
    agent.pod_security_context.run_as_user = None;
    agent.pod_security_context.run_as_group = None;
    agent.pod_security_context.fs_group = None;
    agent.image_pull_secrets = vec!["regcred".into()];
    let h = harness::harness_with_agent("node-ids", agent).await;
    let s3 = S3Server::start(node);
    let pg = blocking(|| LocalPostgres::start_on(Some(node.gateway())).unwrap());
    blocking(|| sample_database(&pg));
    for secret in [
        json!({"metadata": {"name": "regcred"}, "type": "kubernetes.io/dockerconfigjson",
               "stringData": {".dockerconfigjson": "{\"auths\": {}}"}}),
        json!({"metadata": {"name": "s3-creds"},
               "stringData": {"AWS_ACCESS_KEY_ID": "lifeboat-ak", "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}}),
    ] {
        h.api::<Secret>()
            .create(
                &PostParams::default(),
                &serde_json::from_value(secret).unwrap(),
            )
            .await
            .unwrap();
    }
    // The ids the namespace was given (as an SCC assigns them from its range), set by the team.
    h.apply_policy(
        "shop",
        json!({
            "schedule": "0 3 * * *",
            "assets": [postgres_asset(node, &pg)],
            "retention": {"keepLast": 5},
            "destination": {"s3": {"endpoint": format!("http://{}:{}", s3.gateway, s3.port),
                                   "bucket": "backups", "prefix": "lifeboat", "forcePathStyle": true,
                                   "credentialsSecret": {"name": "s3-creds"}}},
            "podTemplate": {"imagePullSecrets": [{"name": "regcred"}],
                            "securityContext": {"runAsUser": 1000680000, "fsGroup": 1000680000}}
        }),
    )
    .await;
    let policy = backup_now(&h, node, "ids-1").await;
    let id = policy.status.unwrap().assets[0]
        .last_success
        .as_ref()
        .unwrap()
        .id
        .clone();
    assert!(
        s3.root
            .path()
            .join("backups/lifeboat")
            .join(&h.ns)
            .join("shop")
            .join(&id)
            .join("orders-db.metadata.json")
            .is_file()
    );
    // Run by the kubelet as that UID (not the image's 65532) with its read-only root, in a
    // namespace enforcing "restricted".
    all_pods_ran_on(&h, node).await;
    for pod in h.api::<Pod>().list(&ListParams::default()).await.unwrap() {
        let spec = pod.spec.unwrap();
        let psc = spec.security_context.unwrap();
        assert_eq!(psc.run_as_user, Some(1000680000));
        assert_eq!(psc.run_as_group, None);
        let pull: Vec<String> = spec
            .image_pull_secrets
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(pull, ["regcred"], "the platform's and the team's, once");
    }
}

/// Services and cluster DNS as a real cluster has them (kube-proxy and CoreDNS on the node): a
/// pod reaches a Redis behind a Service by the name `<service>.<namespace>.svc`, on the Service's
/// port 80, which only kube-proxy's translation of the Service IP maps to the backend's 6379
/// (nothing listens on port 80 anywhere). What the client wrote is read back from the backend pod
/// directly.
#[tokio::test]
#[ignore = "needs root and a local node: make e2e-node"]
async fn a_pod_reaches_a_service_by_its_dns_name_through_the_service_ip() {
    use k8s_openapi::api::core::v1::Service;
    let node = node();
    let h = harness::harness("node-svc").await;
    let restricted = json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}});
    let pod_security = json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                              "seccompProfile": {"type": "RuntimeDefault"}});
    let backend: Pod = serde_json::from_value(json!({
        "metadata": {"name": "backend", "labels": {"app": "backend"}},
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": pod_security,
            "containers": [{
                "name": "redis", "image": "lifeboat.test/redis:local", "imagePullPolicy": "Never",
                "args": ["--bind", "0.0.0.0", "--protected-mode", "no", "--port", "6379",
                         "--save", "", "--appendonly", "no"],
                "ports": [{"name": "redis", "containerPort": 6379}],
                "securityContext": restricted
            }]
        }
    }))
    .unwrap();
    let pods = h.api::<Pod>();
    pods.create(&PostParams::default(), &backend).await.unwrap();
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "cache"},
        "spec": {"selector": {"app": "backend"},
                 "ports": [{"name": "redis", "port": 80, "targetPort": 6379}]}
    }))
    .unwrap();
    let service = h
        .api::<Service>()
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let cluster_ip = service.spec.unwrap().cluster_ip.unwrap();

    // The backend serving, by its pod IP, from the host.
    let deadline = Instant::now() + Duration::from_secs(120);
    let backend_ip = loop {
        let status = pods
            .get("backend")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        if let (Some("Running"), Some(ip)) = (status.phase.as_deref(), status.pod_ip) {
            let conn = lifeboat_agent::redis::Conn {
                host: ip.clone(),
                port: 6379,
                username: None,
                password: None,
                tls: false,
            };
            if blocking(|| conn.run(0, &["PING"]).ok()).as_deref() == Some("PONG") {
                break ip;
            }
        }
        assert!(
            Instant::now() < deadline,
            "backend not serving\n{}",
            report(&h, node).await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_ne!(cluster_ip, backend_ip);
    // kube-proxy programs the Service when it sees its EndpointSlice, a moment after the backend
    // is ready (as on any cluster): the host's own connections go through the same rules.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ip: std::net::Ipv4Addr = cluster_ip.parse().unwrap();
    while std::net::TcpStream::connect_timeout(&(ip, 80).into(), Duration::from_secs(1)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{cluster_ip}:80 not translated\n{}",
            report(&h, node).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let t0 = Instant::now();
    let host = format!("cache.{}.svc", h.ns);
    let client: Pod = serde_json::from_value(json!({
        "metadata": {"name": "client"},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "securityContext": pod_security,
            "containers": [{
                "name": "client", "image": AGENT_IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["/usr/bin/redis-cli", "-h", host, "-p", "80",
                            "SET", "written-through", "cache-service"],
                "securityContext": restricted
            }]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &client).await.unwrap();
    let (phase, _) = pod_outcome(&pods, "client", Duration::from_secs(120)).await;
    let logs = pods
        .logs("client", &LogParams::default())
        .await
        .unwrap_or_default();
    assert_eq!(
        (phase.as_str(), logs.trim()),
        ("Succeeded", "OK"),
        "{}",
        report(&h, node).await
    );
    eprintln!(
        "client pod created -> Succeeded through {host}:80 in {:?}",
        t0.elapsed()
    );
    let conn = lifeboat_agent::redis::Conn {
        host: backend_ip,
        port: 6379,
        username: None,
        password: None,
        tls: false,
    };
    let written = blocking(|| conn.run(0, &["GET", "written-through"]).unwrap());
    assert_eq!(written, "cache-service");
}

/// Continuous protection through the operator on the node: a `pointInTime` asset's archiver is a
/// real pod (restricted, its readiness the agent's `wal-caught-up`) streaming a PostgreSQL
/// server's WAL into S3; the policy reports it ready and promises the archive's lag as its RPO;
/// rows written up to an instant and after it: the base backup (taken by the operator's Job) and
/// the WAL the pod archived restore exactly the first set, through a RestoreRequest whose Job
/// (as the server's UID) writes a new data directory into a fresh PVC, and a PostgreSQL
/// StatefulSet that then starts on it.
#[tokio::test]
#[ignore = "needs root and a local node: make e2e-node"]
async fn a_point_in_time_asset_is_archived_by_a_real_pod_and_restores_to_an_instant() {
    use lifeboat_agent::layout::{Scope, Store};
    use lifeboat_agent::signing::SigningKey;
    use lifeboat_agent::wal::{Lsn, SEGMENT_BYTES, WalPlace};
    use lifeboat_api::conditions::{find, types};

    let node = node();
    let h = harness::harness("node-pitr").await;
    let s3 = S3Server::start(node);
    let pg = blocking(|| LocalPostgres::start_on(Some(node.gateway())).unwrap());
    let sql = |db: &'static str, q: String| {
        let conn = pg.conn();
        blocking(move || postgres::query(&conn, db, &q).unwrap())
    };
    sql("postgres", "CREATE DATABASE shop".into());
    sql("shop", "CREATE TABLE t (id int PRIMARY KEY, v text)".into());
    let mut asset = postgres_asset(node, &pg);
    asset["postgres"]["pointInTime"] = json!({"user": "lifeboat", "partialUploadSeconds": 2});
    apply_shop_policy(&h, &s3, json!([asset])).await;

    let policies = h.api::<lifeboat_api::BackupPolicy>();
    let ready = |p: &lifeboat_api::BackupPolicy| {
        p.status
            .as_ref()
            .and_then(|s| find(&s.conditions, types::ARCHIVER_READY))
            .is_some_and(|c| c.status == "True")
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready(&policies.get("shop").await.unwrap()) {
        assert!(
            Instant::now() < deadline,
            "the archiver not ready: {:#?}\n{}",
            policies.get("shop").await.unwrap().status,
            report(&h, node).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The first base backup, by the operator's on-demand Job (the asset's CronJob template).
    backup_now(&h, node, "base-1").await;

    sql(
        "shop",
        "INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 100) i".into(),
    );
    let before = sql("shop", FINGERPRINT.into());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let instant = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sql(
        "shop",
        "INSERT INTO t SELECT i, md5(i::text) FROM generate_series(101, 200) i".into(),
    );
    assert_ne!(sql("shop", FINGERPRINT.into()), before);

    // The pod stores the segment being written every 2 s: wait until the store holds what the
    // server flushed (the S3 server's bucket is a directory here).
    let flushed: Lsn = sql("postgres", "SELECT pg_current_wal_flush_lsn()".into())
        .parse()
        .unwrap();
    let store = Store::Local(s3.root.path().join("backups/lifeboat"));
    let key = SigningKey::from_bytes(harness::namespace_key(&h.ns), "the namespace's key").unwrap();
    let place = WalPlace::new(Scope::new(&h.ns, "shop").unwrap(), "orders-db").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let records = store.wal_records(&place, &key).unwrap();
        if records.iter().any(|r| {
            let s = r.segment().unwrap();
            s.segno * SEGMENT_BYTES + r.valid_bytes >= flushed.0
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not archived: {records:?}\n{}",
            report(&h, node).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The policy promises the archive's lag, not the daily schedule of its base backups.
    let p = policies.get("shop").await.unwrap();
    let status = p.status.clone().unwrap();
    assert_eq!(status.assets[0].wal_archive_lag_seconds, Some(2 + 35));
    assert_eq!(status.worst_case_rpo.as_ref().unwrap().seconds, 37);
    assert_eq!(
        find(&status.conditions, types::RPO_MET).map(|c| c.status.as_str()),
        Some("True")
    );
    let archiver = h
        .api::<Pod>()
        .list(&ListParams::default().labels("lifeboat.dev/role=wal-archive"))
        .await
        .unwrap()
        .items;
    assert_eq!(archiver.len(), 1);
    assert_eq!(
        archiver[0].spec.as_ref().unwrap().node_name.as_deref(),
        Some(node.name())
    );

    // Restored to the instant by a RestoreRequest: the operator's Job, running as the server's
    // UID (999), writes a new data directory into a fresh PVC; a PostgreSQL StatefulSet started
    // on it replays the WAL to the instant and promotes: exactly the first hundred rows.
    let restore_started = Instant::now();
    let volume = tempfile::Builder::new()
        .prefix("lifeboat-pitr-node-")
        .tempdir()
        .unwrap();
    std::os::unix::fs::chown(volume.path(), Some(999), Some(999)).unwrap();
    let pv_name = format!("{}-pgdata", h.ns);
    let pv: k8s_openapi::api::core::v1::PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": pv_name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": "lifeboat-test-manual", "persistentVolumeReclaimPolicy": "Retain",
                 "hostPath": {"path": volume.path().to_str().unwrap(), "type": "Directory"},
                 "claimRef": {"namespace": h.ns, "name": "data-restored-0"}}
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(h.client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .unwrap();
    h.api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "data-restored-0"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "lifeboat-test-manual",
                         "volumeName": pv_name, "resources": {"requests": {"storage": "1Gi"}}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let spec = |execute: bool| {
        json!({"source": {"policy": "shop"}, "assets": ["orders-db"], "execute": execute,
               "targets": [{"asset": "orders-db", "dataVolume": {
                   "claimName": "data-restored-0", "subPath": "pgdata", "runAsUser": 999,
                   "pointInTime": instant.to_string()}}]})
    };
    let requests = h.api::<lifeboat_api::RestoreRequest>();
    let apply = |execute: bool| {
        let obj = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
                         "metadata": {"name": "to-instant"}, "spec": spec(execute)});
        let requests = requests.clone();
        async move {
            requests
                .patch(
                    "to-instant",
                    &PatchParams::apply("test-user"),
                    &Patch::Apply(&obj),
                )
                .await
                .unwrap();
        }
    };
    // The plan first: a real plan Job chooses the base backup and the WAL from the store.
    apply(false).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let planned = loop {
        let status = requests.get("to-instant").await.unwrap().status;
        if let Some(s) = status
            .as_ref()
            .filter(|s| s.phase == lifeboat_api::restore_request::RestorePhase::Planned)
        {
            break s.plan[0].point_in_time.clone().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no plan: {status:#?}\n{}",
            report(&h, node).await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let base = status.assets[0].last_success.clone().unwrap();
    assert_eq!(planned.base_backup_id, base.id, "{planned:?}");
    assert_eq!(planned.recovers_to, Some(instant));
    assert!(planned.segments >= 1, "{planned:?}");
    apply(true).await;
    let status = restore_finished(&h, node, "to-instant").await;
    assert_eq!(
        status.phase,
        lifeboat_api::restore_request::RestorePhase::Succeeded,
        "{status:#?}\n{}",
        report(&h, node).await
    );
    let data = volume.path().join("pgdata");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&data).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (999, 0o700));

    let restricted = json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}});
    let sts: k8s_openapi::api::apps::v1::StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "restored"},
        "spec": {
            "serviceName": "restored", "replicas": 1,
            "selector": {"matchLabels": {"app": "restored"}},
            "template": {
                "metadata": {"labels": {"app": "restored"}},
                "spec": {
                    "automountServiceAccountToken": false,
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 999, "runAsGroup": 999,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "postgres", "image": "lifeboat.test/postgres:local",
                        "imagePullPolicy": "Never",
                        "env": [{"name": "PGDATA", "value": "/data/pgdata"}],
                        "securityContext": restricted,
                        "volumeMounts": [{"name": "data", "mountPath": "/data"},
                                         {"name": "tmp", "mountPath": "/tmp"}]
                    }],
                    "volumes": [{"name": "tmp", "emptyDir": {}}]
                }
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "lifeboat-test-manual",
                         "resources": {"requests": {"storage": "1Gi"}}}
            }]
        }
    }))
    .unwrap();
    h.api::<k8s_openapi::api::apps::v1::StatefulSet>()
        .create(&PostParams::default(), &sts)
        .await
        .unwrap();
    let pods = h.api::<Pod>();
    let deadline = Instant::now() + Duration::from_secs(120);
    let ip = loop {
        let pod = pods.get_opt("restored-0").await.unwrap();
        let status = pod.as_ref().and_then(|p| p.status.clone());
        let running = status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        if let (true, Some(ip)) = (running, status.as_ref().and_then(|s| s.pod_ip.clone())) {
            break ip;
        }
        assert!(
            Instant::now() < deadline,
            "the restored server's pod: {status:#?}\n{}",
            report(&h, node).await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // The source's role and pg_hba.conf came with the base backup: the node's /24 is trusted.
    let mut conn = pg.conn();
    (conn.host, conn.port) = (ip, 5432);
    let rows = blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match postgres::query(&conn, "postgres", "SELECT pg_is_in_recovery()") {
                Ok(r) if r == "f" => break,
                other => assert!(Instant::now() < deadline, "still recovering: {other:?}"),
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        postgres::query(&conn, "shop", FINGERPRINT).unwrap()
    });
    assert_eq!(rows, before);
    eprintln!(
        "point-in-time restore through the operator and the restored server's start: {:.1}s",
        restore_started.elapsed().as_secs_f64()
    );

    // The field removed: the archiver stops, and a real pod drops its slot on the server, which
    // would otherwise keep WAL for ever.
    let slots = || {
        sql(
            "postgres",
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'lifeboat_%'".into(),
        )
    };
    assert_eq!(slots(), "1");
    apply_shop_policy_spec(&h, &s3, json!([postgres_asset(node, &pg)])).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let gone = h
            .api::<k8s_openapi::api::apps::v1::Deployment>()
            .get_opt("shop-orders-db-wal")
            .await
            .unwrap()
            .is_none();
        if gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the archiver not retired: {:#?}\n{}",
            policies.get("shop").await.unwrap().status,
            report(&h, node).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        slots(),
        "0",
        "the slot dropped on the server: {:?}\n{}",
        h.events("WalSlotNotReleased").await,
        report(&h, node).await
    );
    h.expect_events("WalSlotReleased", 1).await;
}
