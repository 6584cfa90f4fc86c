//! Issue #15, "Recover from the real disaster", end to end on real nodes, following
//! docs/disaster-recovery.md step by step.
//!
//! Cluster A (a control plane and a node of its own) runs the application namespace `shop`: a
//! Deployment, a Service, ConfigMaps and Secrets, PostgreSQL and Redis as StatefulSets with
//! PVCs on hostPath PersistentVolumes, and a bucket on the loopback S3 server. A BackupPolicy
//! backs it all up (Kubernetes state, PostgreSQL, Redis, the bucket), encrypted with age, to a
//! backup bucket, through real Job pods, which copy each backup to an off-site bucket and read it
//! back there (`spec.copies`). Then cluster A is destroyed: node and control plane stopped,
//! etcd's data directory deleted, the volumes' host directories, the application bucket's
//! objects and the backup bucket itself (the region is lost) deleted. What is kept is what the
//! runbook keeps outside: the off-site bucket, its keys, the master signing key (read from the
//! Secret the chart made, as the runbook says) and the age identity. Cluster B starts from nothing; the admin `helm install`s Lifeboat with
//! the old master key, creates the namespace, the Secrets the runbook lists and empty volumes,
//! and ONE RestoreRequest with `source.location` naming the off-site copy. It recreates
//! the workloads, loads the data into the servers they run and checks them; the contents equal
//! those taken before the disaster.
//!
//! In both clusters Lifeboat is the chart's release (`helm install`, CRDs included; the
//! operator a pod on the node). The operator and the databases' pods use the host's network (as
//! `hack/demo.sh` does for the operator), written before the node had cluster DNS and
//! kube-proxy: a restore target is an address known before the restore recreates the pods (in a
//! real cluster, and in `tests/node_examples.rs`, it is the Service's DNS name).
//!
//! Ignored by a plain `cargo test` (root, containerd, the images of `hack/node/images.sh`):
//! `make e2e-node` runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/digest.rs"]
mod digest;
#[path = "common/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use kube::api::{ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use lifeboat_agent::local::free_port;
use lifeboat_agent::postgres;
use lifeboat_api::restore_request::{RestorePhase, RestoreRequestStatus};
use lifeboat_testenv::{ControlPlane, Node, NodeOptions};
use serde_json::{Value, json};

/// The application's namespace: the same name in both clusters (its backups lie under it and
/// are signed with its key).
const NS: &str = "shop";
const PART_OF: &str = "app.kubernetes.io/part-of";
const S3_ACCESS_KEY: &str = "lifeboat-ak";
const S3_SECRET_KEY: &str = "lifeboat-sk-disaster-0123456789";
const PG_PASSWORD: &str = "pg-disaster-pass-51c7";
const FINGERPRINT: &str =
    "SELECT count(*) || ':' || md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o";

/// Runs the agent's blocking PostgreSQL and Redis helpers off the test's async runtime.
fn blocking<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

/// `rclone serve s3` on loopback and a node's gateway, serving `root` (one directory a bucket).
struct S3Server {
    child: Child,
    port: u16,
    gateway: std::net::Ipv4Addr,
}

impl S3Server {
    fn start(root: &Path, gateway: std::net::Ipv4Addr) -> S3Server {
        let port = free_port().unwrap();
        let child = Command::new("rclone")
            .args(["serve", "s3", "--addr"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--addr")
            .arg(format!("{gateway}:{port}"))
            .args([
                "--auth-key",
                &format!("{S3_ACCESS_KEY},{S3_SECRET_KEY}"),
                "--config",
                "/dev/null",
            ])
            .arg(root)
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
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}:{}", self.gateway, self.port)
    }

    /// The bucket `bucket` here, with the keys of Secret `s3-creds`.
    fn location(&self, bucket: &str) -> Value {
        json!({"endpoint": self.endpoint(), "bucket": bucket, "forcePathStyle": true,
               "credentialsSecret": {"name": "s3-creds"}})
    }

    /// Where the backups lie: the backup bucket, under prefix `lifeboat`.
    fn backups(&self) -> Value {
        let mut s3 = self.location("backups");
        s3["prefix"] = json!("lifeboat");
        json!({"s3": s3})
    }

    /// The off-site copy: bucket `offsite`, under prefix `dr` (another region's bucket in
    /// production; another bucket of the same server here).
    fn offsite(&self) -> Value {
        let mut s3 = self.location("offsite");
        s3["prefix"] = json!("dr");
        s3
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One cluster: its control plane (etcd in its own temporary directory), its node, and
/// Lifeboat installed by `helm install` (the operator a pod on the node).
struct Cluster {
    h: harness::Harness,
    node: Node,
    cp: ControlPlane,
}

/// The chart's release and namespace, and its master key Secret (docs/disaster-recovery.md).
const RELEASE_NS: &str = "lifeboat-system";
const MASTER_KEY_SECRET: &str = "lifeboat-signing-master-key";

fn helm() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash")
        .arg(repo.join("hack/tools/helm.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

impl Cluster {
    /// A new cluster with Lifeboat installed: with the chart's own new master key, or with
    /// `master_key` (the old cluster's, kept outside) put in place first as the runbook says.
    async fn start(name: &str, master_key: Option<&[u8]>) -> Cluster {
        let t0 = Instant::now();
        let cp = ControlPlane::start(true).await.unwrap();
        let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/node-images");
        assert!(
            images.join("postgres.tar").is_file(),
            "{} missing: run hack/node/images.sh (make e2e-node does)",
            images.join("postgres.tar").display()
        );
        let node = Node::start(
            &cp,
            &NodeOptions {
                images: Some(images),
            },
        )
        .await
        .unwrap();
        let client = cp.client().await.unwrap();
        let namespaces = Api::<Namespace>::all(client.clone());
        let mut set = vec![
            "--set".to_owned(),
            "replicaCount=1".into(),
            "--set".into(),
            "hostNetwork=true".into(),
            "--set".into(),
            format!("metrics.port={}", free_port().unwrap()),
            "--set".into(),
            "extraEnv[0].name=KUBERNETES_SERVICE_HOST".into(),
            "--set".into(),
            "extraEnv[0].value=127.0.0.1".into(),
            "--set".into(),
            "extraEnv[1].name=KUBERNETES_SERVICE_PORT".into(),
            "--set-string".into(),
            format!(
                "extraEnv[1].value={}",
                cp.server().rsplit(':').next().unwrap()
            ),
        ];
        if let Some(key) = master_key {
            // Step 1: the master key Secret first, then the chart told not to make one.
            namespaces
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({"metadata": {"name": RELEASE_NS}})).unwrap(),
                )
                .await
                .unwrap();
            let secret: Secret = serde_json::from_value(json!({
                "metadata": {"name": MASTER_KEY_SECRET},
                "data": {"key": k8s_openapi::ByteString(key.to_vec())}
            }))
            .unwrap();
            Api::<Secret>::namespaced(client.clone(), RELEASE_NS)
                .create(&PostParams::default(), &secret)
                .await
                .unwrap();
            set.extend([
                "--set".into(),
                "signing.createMasterKey=false".into(),
                "--set".into(),
                format!("signing.masterKeySecret={MASTER_KEY_SECRET}"),
            ]);
        }
        let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/lifeboat");
        let kubeconfig = cp.kubeconfig().to_owned();
        let out = blocking(|| {
            Command::new(helm())
                .args(["install", "lifeboat"])
                .arg(&chart)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args([
                    "--namespace",
                    RELEASE_NS,
                    "--create-namespace",
                    "--wait",
                    "--timeout",
                    "3m",
                ])
                .args(&set)
                .output()
                .unwrap()
        });
        assert!(
            out.status.success(),
            "helm install: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            node.log_tail(30)
        );
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
            )
            .await
            .unwrap();
        let h = harness::on(client, NS);
        h.until("the chart's CRDs served", async || {
            h.api::<lifeboat_api::BackupPolicy>()
                .list(&ListParams::default())
                .await
                .ok()
                .map(drop)
        })
        .await;
        eprintln!(
            "cluster {name}: control plane, node {} (gateway {}) and helm install in {:?}",
            node.name(),
            node.gateway(),
            t0.elapsed()
        );
        Cluster { h, node, cp }
    }

    /// The master key the chart's release signs with: what the runbook keeps outside.
    async fn master_key(&self) -> Vec<u8> {
        Api::<Secret>::namespaced(self.h.client.clone(), RELEASE_NS)
            .get(MASTER_KEY_SECRET)
            .await
            .unwrap()
            .data
            .unwrap()["key"]
            .0
            .clone()
    }

    /// etcd's data directory.
    fn etcd_dir(&self) -> PathBuf {
        self.cp.kubeconfig().parent().unwrap().join("etcd")
    }

    async fn create<K>(&self, obj: Value)
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let k: K = serde_json::from_value(obj).unwrap();
        self.h
            .api::<K>()
            .create(&PostParams::default(), &k)
            .await
            .unwrap();
    }

    async fn secret(&self, name: &str, data: Value, labelled: bool) {
        let labels = if labelled {
            json!({PART_OF: "shop"})
        } else {
            json!({})
        };
        self.create::<Secret>(
            json!({"metadata": {"name": name, "labels": labels}, "stringData": data}),
        )
        .await;
    }

    /// A PersistentVolume on a new host directory, and its claim `claim` in [`NS`] bound to it
    /// (the name the StatefulSet gives its claim, which it then adopts), as an admin provides
    /// storage where no provisioner runs. Returns once the claim is Bound.
    async fn volume(&self, name: &str, claim: &str) -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-disaster-pv-")
            .tempdir()
            .unwrap();
        // The application's pods run unprivileged (65532): their volume is theirs.
        std::os::unix::fs::chown(dir.path(), Some(65532), Some(65532)).unwrap();
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "storageClassName": "manual", "persistentVolumeReclaimPolicy": "Retain",
                     "hostPath": {"path": dir.path().to_str().unwrap(), "type": "Directory"},
                     "claimRef": {"namespace": NS, "name": claim}}
        }))
        .unwrap();
        Api::<PersistentVolume>::all(self.h.client.clone())
            .create(&PostParams::default(), &pv)
            .await
            .unwrap();
        self.create::<PersistentVolumeClaim>(json!({
            "metadata": {"name": claim},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "manual", "volumeName": name,
                     "resources": {"requests": {"storage": "1Gi"}}}
        }))
        .await;
        let claims = self.h.api::<PersistentVolumeClaim>();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let phase = claims
                .get(claim)
                .await
                .unwrap()
                .status
                .and_then(|s| s.phase);
            if phase.as_deref() == Some("Bound") {
                return dir;
            }
            assert!(Instant::now() < deadline, "claim {claim} still {phase:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The Jobs, pods (with their logs) and the node's log tail, for a failure message.
    async fn report(&self) -> String {
        let mut out = String::new();
        for j in self
            .h
            .api::<Job>()
            .list(&ListParams::default())
            .await
            .unwrap()
        {
            out += &format!("job {}: {:?}\n", j.name_any(), j.status);
        }
        for c in self
            .h
            .api::<PersistentVolumeClaim>()
            .list(&ListParams::default())
            .await
            .unwrap()
        {
            out += &format!("claim {}: {:?}\n", c.name_any(), c.status);
        }
        let pods = self.h.api::<Pod>();
        for pod in pods.list(&ListParams::default()).await.unwrap() {
            let logs = pods
                .logs(&pod.name_any(), &LogParams::default())
                .await
                .unwrap_or_default();
            out += &format!("pod {}: {:?}\n{logs}\n", pod.name_any(), pod.status);
        }
        out + &self.node.log_tail(30)
    }

    /// Waits until the pod `name` runs and `serves` answers (it is called on a thread).
    async fn serving(&self, name: &str, serves: impl Fn() -> bool + Send + Sync) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let running = self
                .h
                .api::<Pod>()
                .get_opt(name)
                .await
                .unwrap()
                .and_then(|p| p.status?.phase)
                .is_some_and(|p| p == "Running");
            if running && blocking(&serves) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} not serving\n{}",
                self.report().await
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The application's own objects, as its chart would install them. PostgreSQL and Redis listen
/// on the host's network at `pg_port` and `redis_port` (see the module's comment).
fn application(pg_port: u16, redis_port: u16) -> Vec<(&'static str, Value)> {
    let labels = |app: &str| json!({"app": app, PART_OF: "shop"});
    let pod_security = json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                              "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}});
    let restricted = json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}});
    let claim = json!([{"metadata": {"name": "data"},
                        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                                 "resources": {"requests": {"storage": "1Gi"}}}}]);
    vec![
        (
            "ConfigMap",
            json!({"metadata": {"name": "web-config", "labels": labels("web")},
                   "data": {"mode": "prod", "orders.url": format!("postgres://postgres.shop.svc:{pg_port}/shop")}}),
        ),
        (
            "ConfigMap",
            json!({"metadata": {"name": "feature-flags", "labels": labels("web")},
                   "data": {"checkout-v2": "on"}}),
        ),
        (
            "Service",
            json!({"metadata": {"name": "web", "labels": labels("web")},
                   "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
        ),
        (
            "Deployment",
            json!({"metadata": {"name": "web", "labels": labels("web")},
                   "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                            "template": {"metadata": {"labels": labels("web")},
                                         "spec": {"automountServiceAccountToken": false,
                                                  "securityContext": pod_security,
                                                  "containers": [{"name": "web", "image": "lifeboat.test/redis:local",
                                                                  "imagePullPolicy": "Never",
                                                                  "args": ["--port", "8080", "--save", ""],
                                                                  "envFrom": [{"configMapRef": {"name": "web-config"}}],
                                                                  "securityContext": restricted}]}}}}),
        ),
        (
            "StatefulSet",
            json!({"metadata": {"name": "postgres", "labels": labels("postgres")},
                   "spec": {"serviceName": "postgres", "replicas": 1,
                            "selector": {"matchLabels": {"app": "postgres"}},
                            "template": {"metadata": {"labels": labels("postgres")},
                                         "spec": {"automountServiceAccountToken": false, "hostNetwork": true,
                                                  "securityContext": pod_security,
                                                  "containers": [{"name": "postgres", "image": "lifeboat.test/postgres:local",
                                                                  "imagePullPolicy": "Never",
                                                                  "env": [{"name": "PGPORT", "value": pg_port.to_string()},
                                                                          {"name": "PGDATA", "value": "/data/pgdata"}],
                                                                  "ports": [{"name": "postgres", "containerPort": pg_port}],
                                                                  "securityContext": restricted,
                                                                  "volumeMounts": [{"name": "data", "mountPath": "/data"},
                                                                                   {"name": "tmp", "mountPath": "/tmp"},
                                                                                   {"name": "auth", "mountPath": "/run/secrets/postgres", "readOnly": true}]}],
                                                  "volumes": [{"name": "tmp", "emptyDir": {}},
                                                              {"name": "auth", "secret": {"secretName": "postgres-auth"}}]}},
                            "volumeClaimTemplates": claim}}),
        ),
        (
            "StatefulSet",
            json!({"metadata": {"name": "redis", "labels": labels("redis")},
                   "spec": {"serviceName": "redis", "replicas": 1,
                            "selector": {"matchLabels": {"app": "redis"}},
                            "template": {"metadata": {"labels": labels("redis")},
                                         "spec": {"automountServiceAccountToken": false, "hostNetwork": true,
                                                  "securityContext": pod_security,
                                                  "containers": [{"name": "redis", "image": "lifeboat.test/redis:local",
                                                                  "imagePullPolicy": "Never",
                                                                  "args": ["--bind", "0.0.0.0", "--protected-mode", "no",
                                                                           "--port", redis_port.to_string(), "--dir", "/data",
                                                                           "--appendonly", "yes", "--save", "3600 1"],
                                                                  "ports": [{"name": "redis", "containerPort": redis_port}],
                                                                  "securityContext": restricted,
                                                                  "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
                            "volumeClaimTemplates": claim}}),
        ),
    ]
}

async fn install_application(c: &Cluster, pg_port: u16, redis_port: u16) {
    for (kind, obj) in application(pg_port, redis_port) {
        match kind {
            "ConfigMap" => c.create::<ConfigMap>(obj).await,
            "Service" => c.create::<Service>(obj).await,
            "Deployment" => c.create::<Deployment>(obj).await,
            "StatefulSet" => c.create::<StatefulSet>(obj).await,
            other => unreachable!("{other}"),
        }
    }
}

fn pg_conn(port: u16) -> postgres::Conn {
    postgres::Conn {
        host: "127.0.0.1".into(),
        port,
        user: "postgres".into(),
        password: Some(PG_PASSWORD.into()),
        ssl_mode: lifeboat_api::common::SslMode::Disable,
    }
}

fn redis_conn(port: u16) -> lifeboat_agent::redis::Conn {
    lifeboat_agent::redis::Conn {
        host: "127.0.0.1".into(),
        port,
        username: None,
        password: None,
        tls: false,
    }
}

async fn restore_finished(c: &Cluster, name: &str) -> RestoreRequestStatus {
    let api = c.h.api::<lifeboat_api::RestoreRequest>();
    let deadline = Instant::now() + Duration::from_secs(420);
    let mut last = None;
    loop {
        let status = api.get(name).await.unwrap().status.unwrap_or_default();
        if status.phase.is_finished() {
            return status;
        }
        if last != Some(status.phase) {
            eprintln!("restore {name}: {:?}", status.phase);
            last = Some(status.phase);
        }
        assert!(
            Instant::now() < deadline,
            "restore {name} still {:?}: {status:#?}\n{}",
            status.phase,
            c.report().await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
#[ignore = "needs root and local nodes: make e2e-node"]
async fn a_lost_cluster_comes_back_from_the_bucket_and_the_keys_alone() {
    let test_start = Instant::now();
    // Outside both clusters: the S3 server's directory (the backup bucket, and the
    // application's bucket, which is lost with cluster A).
    let s3_root = tempfile::Builder::new()
        .prefix("lifeboat-disaster-s3-")
        .tempdir()
        .unwrap();
    std::fs::create_dir(s3_root.path().join("backups")).unwrap();
    std::fs::create_dir(s3_root.path().join("offsite")).unwrap();
    let assets_dir = s3_root.path().join("assets");
    std::fs::create_dir_all(assets_dir.join("img")).unwrap();
    let pg_port = free_port().unwrap();
    let redis_port = free_port().unwrap();
    // What the platform team keeps outside: the age identity, the S3 keys (the constants
    // above) and, once cluster A's chart made it, the master key.
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let identity_text = {
        use age::secrecy::ExposeSecret;
        identity.to_string().expose_secret().to_owned()
    };

    // ---------------------------------------------------------------- cluster A --
    let a = Cluster::start("A", None).await;
    let s3 = S3Server::start(s3_root.path(), a.node.gateway());
    a.secret(
        "s3-creds",
        json!({"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}),
        false,
    )
    .await;
    a.secret("postgres-auth", json!({"password": PG_PASSWORD}), true)
        .await;
    a.secret("web-secret", json!({"token": "web-token-2f9a"}), true)
        .await;
    let pv_pg_a = a.volume("shop-postgres", "data-postgres-0").await;
    let pv_redis_a = a.volume("shop-redis", "data-redis-0").await;
    install_application(&a, pg_port, redis_port).await;
    a.serving("postgres-0", || {
        postgres::query(&pg_conn(pg_port), "postgres", "SELECT 1").is_ok()
    })
    .await;
    a.serving("redis-0", || {
        redis_conn(redis_port).run(0, &["PING"]).is_ok()
    })
    .await;

    // The application's data.
    let pg_before = blocking(|| {
        let conn = pg_conn(pg_port);
        postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
        postgres::query(
            &conn,
            "shop",
            "CREATE TABLE orders (id serial PRIMARY KEY, customer text, total numeric(12,2), at timestamptz); \
             INSERT INTO orders (customer, total, at) SELECT 'c' || (i % 97), i * 1.25, \
             '2026-11-30 12:00+00'::timestamptz + i * interval '1 min' FROM generate_series(1, 2000) i",
        )
        .unwrap();
        postgres::query(&conn, "shop", FINGERPRINT).unwrap()
    });
    let redis_before = blocking(|| {
        let c = redis_conn(redis_port);
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
    std::fs::write(assets_dir.join("index.html"), b"<h1>shop</h1>").unwrap();
    std::fs::write(assets_dir.join("img/logo.bin"), vec![7u8; 300_000]).unwrap();
    std::fs::write(
        assets_dir.join("img/banner.bin"),
        (0..50_000u32)
            .flat_map(|i| i.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let bucket_before = digest::bucket_digest(&assets_dir);
    assert_eq!(bucket_before.len(), 3);

    // The BackupPolicy, and a backup of everything through real Job pods.
    a.h.apply_policy(
        "shop",
        json!({
            "schedule": "0 3 * * *",
            "assets": [
                {"name": "objects", "kubernetesState": {"namespaces": [NS], "includeSecrets": true,
                    "labelSelector": format!("{PART_OF}=shop"),
                    "includeResources": ["configmaps", "secrets", "services", "deployments.apps", "statefulsets.apps"]}},
                {"name": "orders-db", "postgres": {"host": a.node.gateway().to_string(), "port": pg_port,
                    "user": "postgres", "passwordSecret": {"name": "postgres-auth", "key": "password"},
                    "sslMode": "disable", "databases": ["shop"]}},
                {"name": "sessions", "redis": {"host": a.node.gateway().to_string(), "port": redis_port}},
                {"name": "assets", "objectStorage": s3.location("assets")}
            ],
            "retention": {"keepLast": 5},
            "encryption": {"recipients": [recipient]},
            "destination": s3.backups(),
            "copies": [{"name": "dr-site", "s3": s3.offsite()}],
            "objectives": {"rpo": "1d"}
        }),
    )
    .await;
    a.h.api::<lifeboat_api::BackupPolicy>()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"lifeboat.dev/backup-now": "before-the-disaster"}}})),
        )
        .await
        .unwrap();
    let t0 = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(300);
    let policy = loop {
        let p =
            a.h.api::<lifeboat_api::BackupPolicy>()
                .get("shop")
                .await
                .unwrap();
        let done = p.status.as_ref().is_some_and(|s| {
            s.assets.len() == 4 && s.assets.iter().all(|a| a.last_success.is_some())
        });
        // Each backup counts at the destination, then is copied off site by the same pod.
        if done {
            let status = p.status.as_ref().unwrap();
            for a in &status.assets {
                let copy = &a.copies[0];
                assert_eq!(copy.name, "dr-site");
                assert_eq!(
                    copy.newest_id.as_ref(),
                    a.last_success.as_ref().map(|s| &s.id),
                    "{copy:?}"
                );
                assert_eq!(
                    (copy.behind_seconds, copy.last_error.as_deref()),
                    (Some(0), None)
                );
            }
            let current = lifeboat_api::conditions::find(
                &status.conditions,
                lifeboat_api::conditions::types::COPIES_CURRENT,
            );
            assert_eq!(
                current.map(|c| c.status.as_str()),
                Some("True"),
                "{status:#?}"
            );
        }
        if done {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "backups not in status in time: {:#?}\n{}",
            p.status,
            a.report().await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("cluster A: four assets backed up in {:?}", t0.elapsed());
    let backed_up: BTreeMap<String, String> = policy
        .status
        .unwrap()
        .assets
        .into_iter()
        .map(|s| (s.name, s.last_success.unwrap().id))
        .collect();
    // Nothing changed since the backup: what B must get back is what A holds now.
    assert_eq!(
        blocking(|| postgres::query(&pg_conn(pg_port), "shop", FINGERPRINT).unwrap()),
        pg_before
    );
    for pod in
        a.h.api::<Pod>()
            .list(&ListParams::default().labels("lifeboat.dev/role"))
            .await
            .unwrap()
    {
        assert_eq!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded"),
            "{}",
            pod.name_any()
        );
    }

    // ------------------------------------------------------------- the disaster --
    let master_key = a.master_key().await;
    assert!(master_key.len() >= 32);
    let etcd_a = a.etcd_dir();
    assert!(etcd_a.join("member").is_dir(), "{}", etcd_a.display());
    drop(s3);
    let Cluster { h, node, cp } = a;
    drop(h);
    drop(node);
    drop(cp);
    assert!(!etcd_a.exists(), "etcd's data of cluster A is gone");
    let pv_dirs = [pv_pg_a.path().to_owned(), pv_redis_a.path().to_owned()];
    assert!(pv_dirs[0].join("pgdata/PG_VERSION").is_file());
    drop(pv_pg_a);
    drop(pv_redis_a);
    std::fs::remove_dir_all(&assets_dir).unwrap();
    // The region's backup bucket goes with it: only the off-site copy is left.
    let primary = s3_root.path().join("backups");
    std::fs::remove_dir_all(&primary).unwrap();
    for dir in pv_dirs.iter().chain([&assets_dir, &primary]) {
        assert!(!dir.exists(), "{} is gone", dir.display());
    }
    eprintln!("cluster A destroyed at {:?}", test_start.elapsed());

    // ---------------------------------------------------------------- cluster B --
    // docs/disaster-recovery.md, "On the new cluster", step by step.
    let b = Cluster::start("B", Some(&master_key)).await;
    let s3 = S3Server::start(s3_root.path(), b.node.gateway());
    // Step 2: the namespace (Cluster::start created it) and the Secrets the runbook lists.
    b.secret(
        "s3-creds",
        json!({"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}),
        false,
    )
    .await;
    b.secret("age-identity", json!({"identity": identity_text}), false)
        .await;
    // Empty volumes for the claims the StatefulSets will make, and the empty bucket.
    let pv_pg_b = b.volume("shop-postgres", "data-postgres-0").await;
    let pv_redis_b = b.volume("shop-redis", "data-redis-0").await;
    std::fs::create_dir(&assets_dir).unwrap();
    assert!(
        b.h.api::<StatefulSet>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Step 4: one RestoreRequest, from the off-site copy (the primary bucket is lost).
    let location = json!({"s3": s3.offsite()});
    let gateway = b.node.gateway().to_string();
    let rr = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
    "metadata": {"name": "recover"},
    "spec": {
        "source": {"policy": "shop", "backupId": "latest", "location": location,
                   "identitySecret": {"name": "age-identity", "key": "identity"}},
        "targets": [
            {"asset": "orders-db", "postgres": {"host": gateway, "port": pg_port, "user": "postgres",
                "passwordSecret": {"name": "postgres-auth", "key": "password"}, "sslMode": "disable",
                "database": "shop", "createDatabase": true}},
            {"asset": "sessions", "redis": {"host": gateway, "port": redis_port}},
            {"asset": "assets", "objectStorage": s3.location("assets")}
        ],
        // The data right after the state that recreates its servers: the PostgreSQL pod may
        // still be starting when its step's pod runs (seen in one run of three: the agent
        // waited 'not serving yet'; in the others it already served). The wait itself is
        // proven deterministically by crates/lifeboat-agent/tests/late_target.rs.
        "assets": ["objects", "orders-db", "sessions", "assets"],
        "execute": true,
        "validation": {"checks": [
            {"name": "orders", "sql": {"asset": "orders-db", "database": "shop",
                                       "query": "SELECT count(*) FROM orders", "expect": "2000"}},
            {"name": "session", "redis": {"asset": "sessions", "key": "s", "expect": "string value"}}
        ]}
    }});
    let created = Instant::now();
    b.h.api::<lifeboat_api::RestoreRequest>()
        .patch(
            "recover",
            &PatchParams::apply("test-user"),
            &Patch::Apply(&rr),
        )
        .await
        .unwrap();
    let status = restore_finished(&b, "recover").await;
    let restore_took = created.elapsed();
    eprintln!(
        "cluster B: RestoreRequest {:?} in {restore_took:?}",
        status.phase
    );
    assert_eq!(
        status.phase,
        RestorePhase::Succeeded,
        "{status:#?}\n{}",
        b.report().await
    );

    // What each data step saw of its target: whether it waited for a recreated server.
    let pods = b.h.api::<Pod>();
    for pod in pods
        .list(&ListParams::default().labels("lifeboat.dev/role=restore"))
        .await
        .unwrap()
    {
        let logs = pods
            .logs(&pod.name_any(), &LogParams::default())
            .await
            .unwrap_or_default();
        let said: Vec<&str> = logs.lines().filter(|l| l.contains("serving")).collect();
        eprintln!(
            "{} ({} log lines): {said:?}",
            pod.name_any(),
            logs.lines().count()
        );
    }

    // The plan is the bucket's newest backups, Kubernetes state first.
    let planned: Vec<(&str, &str)> = status
        .plan
        .iter()
        .map(|p| (p.asset.as_str(), p.backup_id.as_str()))
        .collect();
    assert_eq!(planned[0].0, "objects", "{planned:?}");
    assert_eq!(planned.len(), 4, "{planned:?}");
    for (asset, id) in &planned {
        assert_eq!(Some(&id.to_string()), backed_up.get(*asset), "{asset}");
    }

    // The objects came back, and the workloads run again.
    let cms = b.h.api::<ConfigMap>();
    assert_eq!(
        cms.get("web-config").await.unwrap().data.unwrap()["mode"],
        "prod"
    );
    assert_eq!(
        cms.get("feature-flags").await.unwrap().data.unwrap()["checkout-v2"],
        "on"
    );
    let secret = b.h.api::<Secret>().get("web-secret").await.unwrap();
    assert_eq!(secret.data.unwrap()["token"].0, b"web-token-2f9a");
    assert!(
        b.h.api::<Secret>()
            .get_opt("postgres-auth")
            .await
            .unwrap()
            .is_some()
    );
    let svc = b.h.api::<Service>().get("web").await.unwrap();
    assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 80);
    assert!(
        b.h.api::<Deployment>()
            .get_opt("web")
            .await
            .unwrap()
            .is_some()
    );
    for sts in ["postgres", "redis"] {
        assert!(
            b.h.api::<StatefulSet>()
                .get_opt(sts)
                .await
                .unwrap()
                .is_some(),
            "{sts}"
        );
    }

    // The data equals what cluster A held before the disaster.
    assert_eq!(
        blocking(|| postgres::query(&pg_conn(pg_port), "shop", FINGERPRINT).unwrap()),
        pg_before,
        "PostgreSQL: the orders table"
    );
    let redis_after = blocking(|| digest::redis_digest(&redis_conn(redis_port)));
    assert_eq!(
        redis_before.keys().collect::<Vec<_>>(),
        redis_after.keys().collect::<Vec<_>>()
    );
    for (k, (t, v, ttl)) in &redis_before {
        let (t2, v2, ttl2) = &redis_after[k];
        assert_eq!((t, v), (t2, v2), "{k}");
        assert!((ttl - ttl2).abs() <= 1, "{k}: expires at {ttl} vs {ttl2}");
    }
    assert_eq!(
        digest::bucket_digest(&assets_dir),
        bucket_before,
        "the bucket's objects"
    );
    // The data lives in the new volumes, not anywhere else.
    assert!(pv_pg_b.path().join("pgdata/PG_VERSION").is_file());
    assert!(
        std::fs::read_dir(pv_redis_b.path())
            .unwrap()
            .next()
            .is_some()
    );

    // The achieved RTO: from the request's creation to its checks passing.
    assert!(
        status.checks.iter().all(|c| c.passed),
        "{:?}",
        status.checks
    );
    assert_eq!(status.checks.len(), 2);
    let rto = status.rto_seconds.expect("status.rtoSeconds");
    assert!(
        rto > 0.0 && rto <= restore_took.as_secs_f64() + 1.0,
        "RTO {rto}s, the request took {restore_took:?}"
    );
    eprintln!(
        "disaster test: RTO {rto:.1}s; whole test {:?}",
        test_start.elapsed()
    );
}
