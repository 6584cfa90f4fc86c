//! Issue #15: the examples in `deploy/examples` pass as written on a real node.
//!
//! The test builds the application the examples name, as a team would run it: namespace `shop`
//! with PostgreSQL (`orders-db`, TLS on) and Redis (`sessions-redis`, a password) behind
//! Services, the S3-compatible object store (`object-store`, `rclone serve s3` on this machine
//! behind a Service without selector) holding the media bucket, and namespace `shop-staging` with
//! the drill's and the restore's targets and the `shop-api` its HTTP check calls. It applies
//! `deploy/examples/prerequisites/` and creates the Secrets as that directory's README says, then
//! applies every file of `deploy/examples` read from disk, with only the namespace given by the
//! API path (as `kubectl apply -n shop` does): no field is rewritten. Pods reach everything by
//! the names in the examples (`orders-db.shop.svc`, ...), through the node's CoreDNS and
//! kube-proxy.
//!
//! Then, with real agent pods: each BackupPolicy backed up on demand (`lifeboat.dev/backup-now`),
//! the RestoreRequest shown as a plan (`execute: false` as written) and then run as its comment
//! says (`execute: true`), and the drill (`lifeboat.dev/drill-now`); each reaches its documented
//! success.
//!
//! Ignored by a plain `cargo test` (root, containerd, the images of `hack/node/images.sh`):
//! `make e2e-node` runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{DynamicObject, GroupVersionKind, ListParams, LogParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use lifeboat_agent::local::free_port;
use lifeboat_agent::postgres;
use lifeboat_api::common::SslMode;
use lifeboat_api::drill_schedule::DrillVerdict;
use lifeboat_api::restore_request::RestorePhase;
use lifeboat_api::{BackupPolicy, DrillSchedule, RestoreRequest};
use lifeboat_testenv::{Node, NodeOptions};
use serde_json::{Value, json};

const SHOP: &str = "shop";
const STAGING: &str = "shop-staging";
const S3_ACCESS_KEY: &str = "examples-ak";
const S3_SECRET_KEY: &str = "examples-sk-0123456789abcdef";
const MEDIA_OBJECTS: usize = 3;
const ORDERS: i64 = 1200;

/// Runs the agent's blocking PostgreSQL and Redis helpers off the test's async runtime.
fn blocking<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn node() -> &'static Node {
    let images = repo().join("target/node-images");
    assert!(
        images.join("postgres.tar").is_file(),
        "{} missing: run hack/node/images.sh (make e2e-node does)",
        images.join("postgres.tar").display()
    );
    lifeboat_testenv::node::shared(&NodeOptions {
        images: Some(images),
    })
    .expect("node")
    .expect("a node of our own")
}

/// `rclone serve s3` on the node's gateway: the object store the examples reach as
/// `object-store.shop.svc:9000` (a Service without selector whose EndpointSlice names it).
struct S3Server {
    child: Child,
    port: u16,
    root: tempfile::TempDir,
}

impl S3Server {
    fn start(node: &Node) -> S3Server {
        let root = tempfile::tempdir().unwrap();
        let media = root.path().join("shop-media/uploads");
        std::fs::create_dir_all(&media).unwrap();
        for i in 0..MEDIA_OBJECTS {
            std::fs::write(media.join(format!("photo-{i}.jpg")), format!("pixels {i}")).unwrap();
        }
        std::fs::create_dir_all(root.path().join("shop-backups-offsite")).unwrap();
        let port = free_port().unwrap();
        let child = Command::new("rclone")
            .args(["serve", "s3", "--addr"])
            .arg(format!("{}:{port}", node.gateway()))
            .args([
                "--auth-key",
                &format!("{S3_ACCESS_KEY},{S3_SECRET_KEY}"),
                "--config",
                "/dev/null",
            ])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rclone (installed by hack/install-deps.sh)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect((node.gateway(), port)).is_err() {
            assert!(Instant::now() < deadline, "rclone serve s3 did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        S3Server { child, port, root }
    }

    /// Files stored under `bucket`, recursively.
    fn files(&self, bucket: &str) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    walk(&e.path(), out);
                } else {
                    out.push(e.path());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root.path().join(bucket), &mut out);
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Applies one object in namespace `ns` as `kubectl apply --server-side -n ns` does: the object
/// as given, its namespace only in the request's path.
async fn apply(client: &Client, ns: &str, obj: Value) -> (String, String) {
    let obj: DynamicObject = serde_json::from_value(obj).unwrap();
    let types = obj.types.clone().unwrap();
    let gvk = GroupVersionKind::try_from(&types).unwrap();
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
    let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
        Api::namespaced_with(client.clone(), ns, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    let name = obj.name_any();
    api.patch(
        &name,
        &PatchParams::apply("examples-test").force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {} {name}: {e}", types.kind));
    (types.kind, name)
}

/// Every YAML document of every `*.yaml` file directly in `dir`, read from disk and applied as
/// written into `ns`.
async fn apply_dir(client: &Client, ns: &str, dir: &Path) -> Vec<(String, String)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    let mut applied = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            if !value.is_null() {
                applied.push(apply(client, ns, value).await);
            }
        }
    }
    applied
}

async fn report(client: &Client, node: &Node) -> String {
    let mut out = String::new();
    for ns in [SHOP, STAGING] {
        for j in Api::<Job>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap()
        {
            out += &format!("job {ns}/{}: {:?}\n", j.name_any(), j.status);
        }
        for pvc in Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap()
        {
            out += &format!(
                "pvc {ns}/{}: {:?}\n",
                pvc.name_any(),
                pvc.status.and_then(|s| s.phase)
            );
        }
        let pods = Api::<Pod>::namespaced(client.clone(), ns);
        for pod in pods.list(&ListParams::default()).await.unwrap() {
            let logs = pods
                .logs(&pod.name_any(), &LogParams::default())
                .await
                .unwrap_or_default();
            let tail: Vec<&str> = logs.lines().rev().take(15).collect();
            let status = pod.status.clone().unwrap_or_default();
            let conditions: Vec<String> = status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .filter_map(|c| c.message)
                .collect();
            out += &format!(
                "pod {ns}/{}: {:?} {conditions:?}\n{}\n",
                pod.name_any(),
                status.phase,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    out + &node.log_tail(20)
}

/// The Secrets `deploy/examples/prerequisites/README.md` tells a team to create, with this
/// test's values.
fn secrets(pw: &Passwords, webhook: &str, identity: &str) -> Vec<Value> {
    let secret = |name: &str, data: Value| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data});
    let s3 = json!({"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY});
    vec![
        secret("orders-db-backup", json!({"password": pw.backup})),
        secret("sessions-redis", json!({"password": pw.redis})),
        secret("staging-db-admin", json!({"password": pw.restore})),
        secret("staging-redis", json!({"password": pw.staging_redis})),
        secret("slack-incident-webhook", json!({"url": webhook})),
        secret("shop-media-reader", s3.clone()),
        secret("offsite-backup-writer", s3),
        secret("lifeboat-age-identity", json!({"identity.txt": identity})),
    ]
}

struct Passwords {
    superuser: &'static str,
    backup: &'static str,
    redis: &'static str,
    restore: &'static str,
    staging_redis: &'static str,
}

const PASSWORDS: Passwords = Passwords {
    superuser: "examples-superuser-5b1e",
    backup: "examples-backup-93af",
    redis: "examples-sessions-7c2d",
    restore: "examples-restore-0e44",
    staging_redis: "examples-staging-redis-61f0",
};

/// The application as its own charts would deploy it (not Lifeboat's objects): PostgreSQL and
/// Redis StatefulSets behind Services, their passwords in Secrets of the app's own.
fn database_servers(redis_password: &str) -> Vec<Value> {
    let pod_security = json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                              "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}});
    let restricted = json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}});
    let service = |name: &str, port: u16| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"selector": {"app": name}, "ports": [{"name": "main", "port": port}]}})
    };
    vec![
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "orders-db-superuser"},
               "stringData": {"password": PASSWORDS.superuser}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sessions-redis-auth"},
               "stringData": {"password": redis_password}}),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "orders-db"},
               "spec": {"serviceName": "orders-db", "replicas": 1,
                        "selector": {"matchLabels": {"app": "orders-db"}},
                        "template": {"metadata": {"labels": {"app": "orders-db"}},
                                     "spec": {"automountServiceAccountToken": false,
                                              "securityContext": pod_security,
                                              "containers": [{"name": "postgres", "image": "lifeboat.test/postgres:local",
                                                              "imagePullPolicy": "Never",
                                                              "ports": [{"name": "main", "containerPort": 5432}],
                                                              "securityContext": restricted,
                                                              "volumeMounts": [{"name": "data", "mountPath": "/data"},
                                                                               {"name": "tmp", "mountPath": "/tmp"},
                                                                               {"name": "auth", "mountPath": "/run/secrets/postgres", "readOnly": true}]}],
                                              "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}},
                                                          {"name": "auth", "secret": {"secretName": "orders-db-superuser"}}]}}}}),
        service("orders-db", 5432),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "sessions-redis"},
               "spec": {"serviceName": "sessions-redis", "replicas": 1,
                        "selector": {"matchLabels": {"app": "sessions-redis"}},
                        "template": {"metadata": {"labels": {"app": "sessions-redis"}},
                                     "spec": {"automountServiceAccountToken": false,
                                              "securityContext": pod_security,
                                              "containers": [{"name": "redis", "image": "lifeboat.test/redis:local",
                                                              "imagePullPolicy": "Never",
                                                              "env": [{"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef":
                                                                  {"name": "sessions-redis-auth", "key": "password"}}}],
                                                              "args": ["--bind", "0.0.0.0", "--port", "6379", "--dir", "/data",
                                                                       "--requirepass", "$(REDIS_PASSWORD)"],
                                                              "ports": [{"name": "main", "containerPort": 6379}],
                                                              "securityContext": restricted,
                                                              "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                                              "volumes": [{"name": "data", "emptyDir": {}}]}}}}),
        service("sessions-redis", 6379),
    ]
}

/// `shop-api` in staging, what the drill's HTTP check calls: `rclone serve http` (the tests'
/// rclone image of `hack/node/images.sh`) of a ConfigMap holding `health`, on port 8080.
fn staging_api() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shop-api-content"},
               "data": {"health": "ok\n"}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop-api"},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "shop-api"}},
                        "template": {"metadata": {"labels": {"app": "shop-api"}},
                                     "spec": {"automountServiceAccountToken": false,
                                              "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                                                                  "seccompProfile": {"type": "RuntimeDefault"}},
                                              "containers": [{"name": "api",
                                                              "image": "lifeboat.test/rclone:local",
                                                              "imagePullPolicy": "Never",
                                                              "command": ["/usr/local/bin/rclone", "serve", "http", "--config", "/dev/null",
                                                                          "--copy-links", "--addr", ":8080", "/srv"],
                                                              "ports": [{"name": "http", "containerPort": 8080}],
                                                              "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                                                                  "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}},
                                                              "volumeMounts": [{"name": "content", "mountPath": "/srv", "readOnly": true},
                                                                               {"name": "tmp", "mountPath": "/tmp"}]}],
                                              "volumes": [{"name": "content", "configMap": {"name": "shop-api-content"}},
                                                          {"name": "tmp", "emptyDir": {}}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop-api"},
               "spec": {"selector": {"app": "shop-api"}, "ports": [{"name": "http", "port": 8080}]}}),
    ]
}

/// The IP of the Running, ready pod `name` in `ns`.
async fn pod_ip(client: &Client, node: &Node, ns: &str, name: &str) -> String {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(pod) = pods.get_opt(name).await.unwrap() {
            let status = pod.status.unwrap_or_default();
            if let (Some("Running"), Some(ip)) = (status.phase.as_deref(), status.pod_ip) {
                return ip;
            }
        }
        assert!(
            Instant::now() < deadline,
            "pod {ns}/{name} not running\n{}",
            report(client, node).await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn superuser(ip: &str) -> postgres::Conn {
    postgres::Conn {
        host: ip.into(),
        port: 5432,
        user: "postgres".into(),
        password: Some(PASSWORDS.superuser.into()),
        ssl_mode: SslMode::Require,
    }
}

/// Runs `sql` as the superuser once the server accepts connections (its first start runs
/// initdb); a failing statement fails at once.
async fn psql(client: &Client, node: &Node, ns: &str, db: &str, sql: &str) -> String {
    let ip = pod_ip(client, node, ns, "orders-db-0").await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let conn = superuser(&ip);
        let out = blocking(|| postgres::query(&conn, db, sql));
        match out {
            Ok(out) => return out,
            Err(e) if !e.to_string().starts_with("connecting") => panic!("{ns}/orders-db: {e}"),
            Err(e) => assert!(
                Instant::now() < deadline,
                "{ns}/orders-db: {e}\n{}",
                report(client, node).await
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn redis(ip: &str, password: &str) -> lifeboat_agent::redis::Conn {
    lifeboat_agent::redis::Conn {
        host: ip.into(),
        port: 6379,
        username: None,
        password: Some(password.into()),
        tls: false,
    }
}

async fn wait_for<T, F, Fut>(what: &str, client: &Client, node: &Node, timeout: Duration, f: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            report(client, node).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
#[ignore = "needs root and a local node: make e2e-node"]
async fn the_examples_pass_as_written_against_the_application_they_describe() {
    let t_start = Instant::now();
    let node = node();
    let env = lifeboat_testenv::shared().unwrap();
    let client = env.client().await.unwrap();
    for ns in [SHOP, STAGING] {
        apply(
            &client,
            "",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await;
        harness::enforce_restricted_pod_security(&client, ns).await;
    }
    let h = harness::harness_named(SHOP).await;
    let s3 = S3Server::start(node);

    // The object store, in the cluster by name: a Service without selector and the
    // EndpointSlice that says where it runs (here, on this machine at the node's gateway).
    apply(
        &client,
        SHOP,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "object-store"},
               "spec": {"ports": [{"name": "s3", "port": 9000, "targetPort": s3.port}]}}),
    )
    .await;
    apply(
        &client,
        SHOP,
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "object-store-1", "labels": {"kubernetes.io/service-name": "object-store"}},
               "addressType": "IPv4",
               "endpoints": [{"addresses": [node.gateway().to_string()]}],
               "ports": [{"name": "s3", "port": s3.port, "protocol": "TCP"}]}),
    )
    .await;

    // The application and its staging copy.
    for obj in database_servers(PASSWORDS.redis) {
        apply(&client, SHOP, obj).await;
    }
    for obj in database_servers(PASSWORDS.staging_redis)
        .into_iter()
        .chain(staging_api())
    {
        apply(&client, STAGING, obj).await;
    }

    // The prerequisites: the volume's claim as written (bound here to a directory of this
    // machine), and the Secrets the README lists.
    // The volume's directory, and the policy's subPath in it, belong to the unprivileged user the
    // agent pods run as (a hostPath volume gets no fsGroup; a missing subPath would be made by the
    // kubelet, owned by root).
    let backups = tempfile::tempdir().unwrap();
    std::fs::create_dir(backups.path().join(SHOP)).unwrap();
    for dir in [backups.path().to_owned(), backups.path().join(SHOP)] {
        std::os::unix::fs::chown(dir, Some(65532), Some(65532)).unwrap();
    }
    let pv_name = "examples-lifeboat-backups";
    apply(
        &client,
        "",
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
               "spec": {"capacity": {"storage": "100Gi"}, "accessModes": ["ReadWriteMany"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "hostPath": {"path": backups.path().to_str().unwrap(), "type": "Directory"},
                        "claimRef": {"namespace": SHOP, "name": "lifeboat-backups"}}}),
    )
    .await;
    let prerequisites =
        apply_dir(&client, SHOP, &repo().join("deploy/examples/prerequisites")).await;
    assert_eq!(
        prerequisites,
        [(
            "PersistentVolumeClaim".to_owned(),
            "lifeboat-backups".to_owned()
        )]
    );
    let (webhook, notifications) = harness::webhook_receiver("examples").await;
    let identity = {
        use age::secrecy::ExposeSecret;
        age::x25519::Identity::generate()
            .to_string()
            .expose_secret()
            .to_owned()
    };
    for obj in secrets(&PASSWORDS, &webhook, &identity) {
        apply(&client, SHOP, obj).await;
    }

    // The roles the examples log in as: `backup` owns the orders database (it writes the
    // canary), `restore` may create databases in staging.
    psql(
        &client,
        node,
        SHOP,
        "postgres",
        &format!("CREATE ROLE backup LOGIN PASSWORD '{}'", PASSWORDS.backup),
    )
    .await;
    psql(
        &client,
        node,
        SHOP,
        "postgres",
        "CREATE DATABASE orders OWNER backup",
    )
    .await;
    psql(
        &client,
        node,
        SHOP,
        "orders",
        &format!(
            "CREATE TABLE orders (id serial PRIMARY KEY, item text, cents int); \
             INSERT INTO orders (item, cents) SELECT 'item ' || i, i * 7 FROM generate_series(1, {ORDERS}) i; \
             ALTER TABLE orders OWNER TO backup"
        ),
    )
    .await;
    psql(
        &client,
        node,
        STAGING,
        "postgres",
        &format!(
            "CREATE ROLE restore LOGIN CREATEDB PASSWORD '{}'",
            PASSWORDS.restore
        ),
    )
    .await;
    let sessions_ip = pod_ip(&client, node, SHOP, "sessions-redis-0").await;
    let sessions = redis(&sessions_ip, PASSWORDS.redis);
    wait_for(
        "sessions-redis serving",
        &client,
        node,
        Duration::from_secs(60),
        || {
            let c = sessions.clone();
            async move { blocking(move || c.run(0, &["SET", "session:1", "alice"]).ok()) }
        },
    )
    .await;
    eprintln!("application ready: {:?}", t_start.elapsed());

    // The examples, as written.
    let applied = apply_dir(&client, SHOP, &repo().join("deploy/examples")).await;
    assert_eq!(applied.len(), 4, "{applied:?}");

    // Each BackupPolicy, on demand: every asset gets a good backup from a real pod.
    let policies = h.api::<BackupPolicy>();
    for (policy, assets) in [("shop-databases", 2), ("shop-storage-and-state", 2)] {
        let t0 = Instant::now();
        policies
            .patch(
                policy,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {"lifeboat.dev/backup-now": "examples"}}}),
                ),
            )
            .await
            .unwrap();
        let status = wait_for(
            &format!("{policy}: a good backup of each asset"),
            &client,
            node,
            Duration::from_secs(240),
            || async {
                let p = policies.get(policy).await.unwrap();
                let status = p.status.unwrap_or_default();
                let done = status
                    .assets
                    .iter()
                    .filter(|a| a.last_success.is_some() || a.last_failure.is_some())
                    .count();
                (done == assets).then_some(status)
            },
        )
        .await;
        let failed: Vec<_> = status
            .assets
            .iter()
            .filter_map(|a| a.last_failure.as_ref().map(|f| (&a.name, f)))
            .collect();
        assert!(
            failed.is_empty(),
            "{policy}: {failed:#?}\n{}",
            report(&client, node).await
        );
        eprintln!(
            "{policy}: backup-now -> {assets} backups in {:?}: {:?}",
            t0.elapsed(),
            status
                .assets
                .iter()
                .map(|a| (&a.name, a.last_success.as_ref().map(|b| b.stored_bytes)))
                .collect::<Vec<_>>()
        );
    }
    assert!(
        !s3.files("shop-backups-offsite").is_empty(),
        "the daily policy stored nothing in the object store"
    );

    // The RestoreRequest as written only shows its plan; set to execute, as its comment says,
    // it restores into staging and its check passes.
    let requests = h.api::<RestoreRequest>();
    let planned = wait_for(
        "the restore's plan",
        &client,
        node,
        Duration::from_secs(60),
        || async {
            let rr = requests.get("orders-to-staging").await.unwrap();
            rr.status
                .filter(|s| s.phase == RestorePhase::Planned && !s.plan.is_empty())
        },
    )
    .await;
    eprintln!("restore plan (execute: false): {:?}", planned.phase);
    let t0 = Instant::now();
    requests
        .patch(
            "orders-to-staging",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"execute": true}})),
        )
        .await
        .unwrap();
    let restored = wait_for(
        "the restore to finish",
        &client,
        node,
        Duration::from_secs(240),
        || async {
            let rr = requests.get("orders-to-staging").await.unwrap();
            rr.status.filter(|s| {
                matches!(
                    s.phase,
                    RestorePhase::Succeeded | RestorePhase::Failed | RestorePhase::RolledBack
                )
            })
        },
    )
    .await;
    assert_eq!(
        restored.phase,
        RestorePhase::Succeeded,
        "{restored:#?}\n{}",
        report(&client, node).await
    );
    eprintln!("restore executed -> Succeeded in {:?}", t0.elapsed());
    let count = "SELECT count(*) FROM orders";
    assert_eq!(
        psql(&client, node, STAGING, "orders", count).await,
        ORDERS.to_string()
    );

    // The quarterly drill, now.
    let drills = h.api::<DrillSchedule>();
    let t0 = Instant::now();
    drills
        .patch(
            "shop-quarterly",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"lifeboat.dev/drill-now": "examples"}}}),
            ),
        )
        .await
        .unwrap();
    let run = wait_for(
        "the drill's verdict",
        &client,
        node,
        Duration::from_secs(300),
        || async {
            let d = drills.get("shop-quarterly").await.unwrap();
            d.status.and_then(|s| s.last_run)
        },
    )
    .await;
    eprintln!("drill-now -> verdict in {:?}: {run:#?}", t0.elapsed());
    assert!(
        matches!(run.verdict, DrillVerdict::Passed),
        "{run:#?}\n{}",
        report(&client, node).await
    );
    assert!(
        notifications.lock().unwrap().is_empty(),
        "a passed drill notifies nobody (when: Failure)"
    );
    let _ = Api::<PersistentVolume>::all(client.clone())
        .delete(pv_name, &Default::default())
        .await;
    let _ = Api::<Namespace>::all(client.clone())
        .delete(STAGING, &Default::default())
        .await;
    eprintln!("examples test: {:?}", t_start.elapsed());
}
