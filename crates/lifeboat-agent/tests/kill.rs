//! The agent killed with SIGKILL in the middle of a backup, at 25 points: PostgreSQL, Redis and
//! bucket backups, to a directory and to S3; before the first byte, at the first byte, mid-stream
//! (for S3 past the first 8 MiB part, a multipart upload in flight), after the artifacts but
//! before the metadata, and during the metadata's commit. And the Kubernetes-state asset, against
//! the test control plane, at 10 more: after API discovery, midway through listing the kinds,
//! at the dump's first stored byte, after the artifact, during the metadata's commit.
//!
//! After each kill: `list` shows no new backup, `verify` of everything listed passes, `prune`
//! clears what the killed run left once it is stale, and the next backup succeeds.
//!
//! The agent is built with the `fault-injection` feature (src/fault.rs): at the named point it
//! announces itself on stderr and parks; this test then sends SIGKILL.
//! `cargo test -p lifeboat-agent --features fault-injection --test kill` (in `make test`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use lifeboat_agent::local::{LocalPostgres, LocalRedis, LocalS3};
use lifeboat_agent::postgres;
use serde_json::{Value, json};

const AK: &str = LocalS3::ACCESS_KEY;
const SK: &str = LocalS3::SECRET_KEY;

/// The S3 server, with the bucket asset's source: 5 objects of 3 MiB that do not compress.
fn s3_server() -> LocalS3 {
    LocalS3::start_with(|root| {
        std::fs::create_dir_all(root.join("backups")).unwrap();
        let data = root.join("source/media");
        std::fs::create_dir_all(&data).unwrap();
        for i in 0..5u64 {
            std::fs::write(
                data.join(format!("photo-{i}.bin")),
                noise_bytes(i + 7, 3 << 20),
            )
            .unwrap();
        }
    })
    .unwrap()
}

fn location(s3: &LocalS3, bucket: &str, prefix: &str, secret: &str) -> Value {
    json!({"endpoint": s3.endpoint(), "bucket": bucket, "prefix": prefix,
           "forcePathStyle": true, "credentialsSecret": {"name": secret}})
}

/// Bytes of a xorshift sequence: zstd cannot shrink them.
fn noise_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Store {
    Dir,
    S3,
}

struct World {
    dir: tempfile::TempDir,
    s3: LocalS3,
    pg: Option<LocalPostgres>,
    redis: Option<LocalRedis>,
    /// The Kubernetes-state asset's namespace on the test control plane, and its kubeconfig.
    kube: Option<(String, Option<PathBuf>)>,
}

impl World {
    fn backups_dir(&self) -> PathBuf {
        self.dir.path().join("backups")
    }

    fn secrets(&self) -> PathBuf {
        self.dir.path().join("secrets")
    }

    fn asset(&self, kind: &str) -> Value {
        match kind {
            "postgres" => {
                json!({"name": "orders-db", "postgres": {"host": "127.0.0.1", "port": self.pg.as_ref().unwrap().port,
                "user": "lifeboat", "sslMode": "disable", "databases": ["shop"]}})
            }
            "redis" => {
                json!({"name": "sessions", "redis": {"host": "127.0.0.1", "port": self.redis.as_ref().unwrap().port}})
            }
            "kubestate" => {
                json!({"name": "objects", "kubernetesState": {"namespaces": [self.kube.as_ref().unwrap().0]}})
            }
            _ => {
                json!({"name": "media", "objectStorage": location(&self.s3, "source", "media", "src-creds")})
            }
        }
    }

    fn destination(&self, store: Store) -> Value {
        match store {
            Store::Dir => json!({"volume": {"claimName": "backups"}}),
            Store::S3 => json!({"s3": location(&self.s3, "backups", "lifeboat", "s3-creds")}),
        }
    }

    /// Where this policy's backups are on disk (the S3 server's buckets are directories).
    fn policy_root(&self, store: Store, policy: &str) -> PathBuf {
        match store {
            Store::Dir => self.backups_dir().join("n").join(policy),
            Store::S3 => self.s3.root().join("backups/lifeboat/n").join(policy),
        }
    }

    fn policy_file(&self, kind: &str, store: Store, policy: &str) -> PathBuf {
        let doc = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": policy},
            "spec": {"schedule": "@hourly", "assets": [self.asset(kind)],
                     "retention": {"keepLast": 50}, "destination": self.destination(store)}});
        let path = self.dir.path().join(format!("{policy}.yaml"));
        std::fs::write(&path, serde_norway::to_string(&doc).unwrap()).unwrap();
        path
    }

    fn agent(&self) -> Command {
        let mut cmd = agent_command();
        cmd.env_remove("LIFEBOAT_JOB")
            .env_remove("LIFEBOAT_FAULT_POINT")
            .env("LIFEBOAT_SECRETS_DIR", self.secrets())
            .env("LIFEBOAT_BACKUP_DIR", self.backups_dir())
            .env(
                "LIFEBOAT_TERMINATION_LOG",
                self.dir.path().join("termination-log"),
            );
        if let Some((_, Some(kubeconfig))) = &self.kube {
            cmd.env("KUBECONFIG", kubeconfig);
        }
        cmd
    }

    fn backup(&self, kind: &str, store: Store, policy: &str) -> Command {
        let job = json!({"namespace": "n", "policy": policy, "asset": self.asset(kind),
            "destination": self.destination(store),
            "compression": {"algorithm": "zstd", "level": 3}, "retention": {"keepLast": 50, "minKeep": 1},
            "kubernetesStateScope": self.kube.as_ref().map(|(ns, _)| json!({"namespaces": [ns]}))});
        let mut cmd = self.agent();
        cmd.env("LIFEBOAT_JOB", job.to_string()).arg("backup");
        cmd
    }

    /// Ids of the committed backups (`list --json`).
    fn listed(&self, policy_file: &Path) -> Vec<String> {
        let out = self
            .agent()
            .args(["list", "--json", "--policy-file"])
            .arg(policy_file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        all.iter()
            .map(|m| m["backupId"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn world() -> World {
    let dir = secrets_dir();
    let s3 = s3_server();
    let pg = LocalPostgres::start().unwrap();
    let conn = pg.conn();
    postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
    // About 32 MB of hex text, about 16 MB once compressed: more than two S3 parts.
    postgres::query(
        &conn,
        "shop",
        "CREATE TABLE t (id int, v text); INSERT INTO t SELECT i, string_agg(md5(random()::text), '') FROM generate_series(1, 100) j, generate_series(1, 10000) i GROUP BY i",
    )
    .unwrap();
    let redis = LocalRedis::start().unwrap();
    for i in 0..20u64 {
        let value: String = noise_bytes(i + 1, 50_000)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        redis
            .conn()
            .run(0, &["SET", &format!("session:{i}"), &value])
            .unwrap();
    }
    World {
        dir,
        s3,
        pg: Some(pg),
        redis: Some(redis),
        kube: None,
    }
}

fn secrets_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, key) in [("s3-creds", SK), ("src-creds", SK)] {
        let s = dir.path().join("secrets").join(name);
        std::fs::create_dir_all(&s).unwrap();
        std::fs::write(s.join("AWS_ACCESS_KEY_ID"), AK).unwrap();
        std::fs::write(s.join("AWS_SECRET_ACCESS_KEY"), key).unwrap();
    }
    dir
}

/// Runs a backup that stops at `point`, then kills it with SIGKILL. Panics if the agent ends
/// without reaching the point (a point the run never passes proves nothing).
fn kill_at(w: &World, kind: &str, store: Store, policy: &str, point: &str) -> Duration {
    let mut child = w
        .backup(kind, store, policy)
        .env("LIFEBOAT_FAULT_POINT", point)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("lifeboat-fault: reached") {
                let _ = tx.send(Ok(()));
            }
            all.push_str(&line);
            all.push('\n');
        }
        let _ = tx.send(Err(all));
    });
    let t0 = Instant::now();
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(Ok(())) => {}
        Ok(Err(stderr)) => panic!("{kind}/{store:?}: the run ended before {point}:\n{stderr}"),
        Err(_) => panic!("{kind}/{store:?}: {point} not reached in 120 s"),
    }
    let reached = t0.elapsed();
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed by SIGKILL"
    );
    reached
}

/// Files under `root`, relative, sorted.
fn files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// Kills a backup of `kind` to `store` at `point`, then checks what a killed run must leave:
/// nothing new listed, everything listed verifying, nothing left once `prune` has run, and a
/// next run that succeeds. Returns the row of the table of what the kill left.
fn kill_and_recover(w: &World, kind: &str, store: Store, point: &str) -> String {
    let policy = format!("{kind}-{}", format!("{store:?}").to_lowercase());
    let policy_file = w.policy_file(kind, store, &policy);
    let before = w.listed(&policy_file);
    let committed_files = files(&w.policy_root(store, &policy));

    let reached = kill_at(w, kind, store, &policy, point);

    // Nothing new is listed; everything listed still verifies.
    assert_eq!(
        w.listed(&policy_file),
        before,
        "{kind}/{store:?}/{point}: a killed run was listed"
    );
    if !before.is_empty() {
        let out = w
            .agent()
            .args(["verify", "--policy-file"])
            .arg(&policy_file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{kind}/{store:?}/{point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let left: Vec<String> = files(&w.policy_root(store, &policy))
        .into_iter()
        .filter(|f| !committed_files.contains(f))
        .collect();

    // prune clears what is left once it is stale (here: after a second).
    std::thread::sleep(Duration::from_millis(1100));
    let out = w
        .agent()
        .args(["prune", "--execute", "--stale-after", "1s", "--policy-file"])
        .arg(&policy_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{kind}/{store:?}/{point}: prune: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after: Vec<String> = files(&w.policy_root(store, &policy))
        .into_iter()
        .filter(|f| !committed_files.contains(f))
        .collect();
    // What the S3 server keeps of an unfinished multipart upload is not an object (see
    // docs/reliability.md); everything else the kill left must be gone.
    let visible: Vec<&String> = after
        .iter()
        .filter(|f| !f.contains(".rclone_temp_multipart_"))
        .collect();
    assert!(
        visible.is_empty(),
        "{kind}/{store:?}/{point}: prune left {visible:?}"
    );

    // The next run succeeds and is listed.
    let out = w.backup(kind, store, &policy).output().unwrap();
    assert!(
        out.status.success(),
        "{kind}/{store:?}/{point}: next run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        w.listed(&policy_file).len(),
        before.len() + 1,
        "{kind}/{store:?}/{point}"
    );
    format!(
        "| {kind} | {store:?} | `{point}` | {:.2} s | {} | {} |",
        reached.as_secs_f64(),
        if left.is_empty() {
            "nothing".to_owned()
        } else {
            left.join(", ")
        },
        if after.is_empty() {
            "nothing".to_owned()
        } else {
            after.join(", ")
        }
    )
}

#[test]
fn killed_at_25_points_nothing_half_written_is_ever_listed_and_the_next_run_succeeds() {
    let w = world();
    let cases: &[(&str, Store, &str)] = &[
        ("postgres", Store::Dir, "backup.claimed"),
        ("postgres", Store::Dir, "store.bytes@1"),
        ("postgres", Store::Dir, "store.bytes@4000000"),
        ("postgres", Store::Dir, "backup.artifacts-stored"),
        ("postgres", Store::Dir, "commit.tmp-written"),
        ("postgres", Store::S3, "backup.claimed"),
        ("postgres", Store::S3, "store.bytes@1"),
        ("postgres", Store::S3, "store.bytes@9000000"),
        ("postgres", Store::S3, "backup.artifacts-stored"),
        ("postgres", Store::S3, "commit.before-put"),
        ("redis", Store::Dir, "redis.rdb-fetched"),
        ("redis", Store::Dir, "store.bytes@1"),
        ("redis", Store::Dir, "backup.artifacts-stored"),
        ("redis", Store::Dir, "commit.tmp-written"),
        ("redis", Store::S3, "redis.rdb-fetched"),
        ("redis", Store::S3, "store.bytes@1"),
        ("redis", Store::S3, "backup.artifacts-stored"),
        ("redis", Store::S3, "commit.before-put"),
        ("bucket", Store::Dir, "bucket.object@3"),
        ("bucket", Store::Dir, "backup.artifacts-stored"),
        ("bucket", Store::Dir, "commit.tmp-written"),
        ("bucket", Store::S3, "bucket.object@3"),
        ("bucket", Store::S3, "store.bytes@9000000"),
        ("bucket", Store::S3, "backup.artifacts-stored"),
        ("bucket", Store::S3, "commit.before-put"),
    ];
    let mut table = vec![
        "| asset | store | killed at | reached after | left by the kill | after prune |".to_owned(),
        "|---|---|---|---|---|---|".to_owned(),
    ];
    for &(kind, store, point) in cases {
        table.push(kill_and_recover(&w, kind, store, point));
    }
    eprintln!("{}", table.join("\n"));
    assert_eq!(cases.len(), 25);
}

#[tokio::test]
async fn killed_kubernetes_state_backups_are_never_listed_and_the_next_run_succeeds() {
    let env = lifeboat_testenv::shared().unwrap();
    let client = env.client().await.unwrap();
    let ns = env.namespace(&client, "killed").await.unwrap();
    let config_maps: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), &ns);
    for i in 0..20 {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("config-{i}")},
            "data": {"value": "x".repeat(10_000)}}))
            .unwrap();
        config_maps
            .create(&kube::api::PostParams::default(), &cm)
            .await
            .unwrap();
    }
    let dir = secrets_dir();
    let w = World {
        dir,
        s3: s3_server(),
        pg: None,
        redis: None,
        kube: Some((ns, env.kubeconfig())),
    };
    let cases: &[(Store, &str)] = &[
        (Store::Dir, "kubestate.discovered"),
        (Store::Dir, "kubestate.listed@3"),
        (Store::Dir, "store.bytes@1"),
        (Store::Dir, "backup.artifacts-stored"),
        (Store::Dir, "commit.tmp-written"),
        (Store::S3, "kubestate.discovered"),
        (Store::S3, "kubestate.listed@3"),
        (Store::S3, "store.bytes@1"),
        (Store::S3, "backup.artifacts-stored"),
        (Store::S3, "commit.before-put"),
    ];
    let mut table = vec![
        "| asset | store | killed at | reached after | left by the kill | after prune |".to_owned(),
        "|---|---|---|---|---|---|".to_owned(),
    ];
    for &(store, point) in cases {
        table.push(kill_and_recover(&w, "kubestate", store, point));
    }
    eprintln!("{}", table.join("\n"));
    // Every policy ends with exactly the backups of its next runs, each holding the objects.
    for store in [Store::Dir, Store::S3] {
        let policy = format!("kubestate-{}", format!("{store:?}").to_lowercase());
        let listed = w.listed(&w.policy_file("kubestate", store, &policy));
        assert_eq!(listed.len(), 5, "{store:?}: {listed:?}");
    }
}

/// The agent, signing with the tests' key (a fixture: any 32 bytes), in namespace `n` (a Job's
/// document names its own).
fn agent_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat-agent"));
    c.env(
        "LIFEBOAT_SIGNING_KEY_FILE",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/signing.key"),
    )
    .env("LIFEBOAT_NAMESPACE", "n");
    c
}
