//! A backup store shared by the tests of the namespaced layout and of signed metadata: a real
//! S3 server (`rclone serve s3`, buckets `backups`, `attacker` and `offsite`) and a backup directory, with
//! the agent run as a Job runs it (a `LIFEBOAT_JOB` document, Secret keys as files, each
//! namespace's signing key as a file) or as a person runs it (a policy file).

#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;

use lifeboat_agent::local::{LocalRedis, LocalS3};
use lifeboat_agent::signing::SigningKey;
use lifeboat_api::agent_result::{AgentSummary, ErrorClass};
use object_store::ObjectStoreExt;
use serde_json::{Value, json};

/// Where backups go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    S3,
}

pub struct World {
    pub dir: tempfile::TempDir,
    pub s3: LocalS3,
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("secrets/s3-creds");
        std::fs::create_dir_all(&creds).unwrap();
        std::fs::write(creds.join("AWS_ACCESS_KEY_ID"), LocalS3::ACCESS_KEY).unwrap();
        std::fs::write(creds.join("AWS_SECRET_ACCESS_KEY"), LocalS3::SECRET_KEY).unwrap();
        let s3 = LocalS3::start_with(|root| {
            for bucket in ["backups", "attacker", "offsite"] {
                std::fs::create_dir_all(root.join(bucket)).unwrap();
            }
        })
        .unwrap();
        World { dir, s3 }
    }

    /// The backup directory of [`Kind::Dir`].
    pub fn backups(&self) -> PathBuf {
        self.dir.path().join("backups")
    }

    /// The signing key file of `namespace` (each namespace its own, as the operator derives
    /// them), made on first use.
    pub fn key(&self, namespace: &str) -> PathBuf {
        let path = self.dir.path().join("keys").join(namespace);
        SigningKey::read_or_create(&path).unwrap();
        path
    }

    pub fn destination(&self, kind: Kind) -> Value {
        self.destination_in(kind, "backups")
    }

    /// A destination in `bucket` (for S3; the directory otherwise).
    pub fn destination_in(&self, kind: Kind, bucket: &str) -> Value {
        match kind {
            Kind::Dir => json!({"volume": {"claimName": "backups"}}),
            Kind::S3 => json!({"s3": {"endpoint": self.s3.endpoint(), "bucket": bucket,
                "prefix": "lifeboat", "forcePathStyle": true,
                "credentialsSecret": {"name": "s3-creds"}}}),
        }
    }

    /// Where `<namespace>/<policy>` is on disk (the S3 server's buckets are directories).
    pub fn policy_dir(&self, kind: Kind, namespace: &str, policy: &str) -> PathBuf {
        match kind {
            Kind::Dir => self.backups().join(namespace).join(policy),
            Kind::S3 => self
                .s3
                .root()
                .join("backups/lifeboat")
                .join(namespace)
                .join(policy),
        }
    }

    /// The agent with `namespace`'s key (and no Job document).
    pub fn agent(&self, namespace: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lifeboat-agent"));
        cmd.env_remove("LIFEBOAT_JOB")
            .env_remove("LIFEBOAT_NAMESPACE")
            .env("LIFEBOAT_BACKUP_DIR", self.backups())
            .env("LIFEBOAT_SECRETS_DIR", self.dir.path().join("secrets"))
            .env("LIFEBOAT_SIGNING_KEY_FILE", self.key(namespace))
            .env("LIFEBOAT_TERMINATION_LOG", self.dir.path().join("term"));
        cmd
    }

    /// Runs `verb` on the Job document `doc` with its namespace's key; the summary it left.
    pub fn job(&self, doc: &Value, verb: &[&str]) -> (Output, Option<AgentSummary>) {
        self.job_with(doc, verb, &[])
    }

    /// [`Self::job`] with more environment variables for the agent.
    pub fn job_with(
        &self,
        doc: &Value,
        verb: &[&str],
        env: &[(&str, &str)],
    ) -> (Output, Option<AgentSummary>) {
        let term = self.dir.path().join("term");
        let _ = std::fs::remove_file(&term);
        let namespace = doc["namespace"].as_str().unwrap();
        let out = self
            .agent(namespace)
            .env("LIFEBOAT_JOB", doc.to_string())
            .envs(env.iter().copied())
            .args(verb)
            .output()
            .unwrap();
        let summary = std::fs::read_to_string(&term)
            .ok()
            .and_then(|t| AgentSummary::from_termination_message(&t));
        (out, summary)
    }

    /// One backup Job of Redis `redis` for `namespace`/`policy`: its id, after asserting it
    /// succeeded.
    pub fn backup(
        &self,
        kind: Kind,
        namespace: &str,
        policy: &str,
        redis: &LocalRedis,
        retention: Value,
    ) -> String {
        let doc = json!({"namespace": namespace, "policy": policy, "asset": asset(redis),
            "destination": self.destination(kind), "compression": {"algorithm": "zstd", "level": 3},
            "retention": retention});
        let (out, summary) = self.job(&doc, &["backup"]);
        assert!(out.status.success(), "{}", text(&out));
        let summary = summary.unwrap();
        assert!(summary.ok, "{summary:?}");
        summary.backup_id.unwrap()
    }

    /// The restore Job document of backup `id` of `namespace`/`policy` from `location` into a
    /// Redis data directory (no server runs there: the file is what is checked).
    pub fn restore_doc(
        &self,
        location: Value,
        namespace: &str,
        policy: &str,
        id: &str,
        redis: &LocalRedis,
        into: &std::path::Path,
    ) -> Value {
        json!({"namespace": namespace, "policy": policy, "backupId": id, "asset": asset(redis),
            "target": {"asset": "sessions", "redis": {"host": "127.0.0.1",
                "port": lifeboat_agent::local::free_port().unwrap(), "dataDir": into}},
            "location": location, "options": {}})
    }

    /// A BackupPolicy file of `namespace`/`policy` with the Redis asset, for the CLI verbs.
    pub fn policy_file(
        &self,
        kind: Kind,
        namespace: &str,
        policy: &str,
        redis: &LocalRedis,
    ) -> PathBuf {
        let doc = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": policy, "namespace": namespace},
            "spec": {"schedule": "@hourly", "assets": [asset(redis)],
                     "retention": {"keepLast": 50}, "destination": self.destination(kind)}});
        let path = self
            .dir
            .path()
            .join(format!("{namespace}-{policy}-{kind:?}.yaml"));
        std::fs::write(&path, serde_norway::to_string(&doc).unwrap()).unwrap();
        path
    }

    /// `list --json` of a policy file, as `namespace` (its key): the metadata listed, or the
    /// failed run.
    pub fn list(
        &self,
        namespace: &str,
        policy_file: &std::path::Path,
    ) -> Result<Vec<Value>, Output> {
        let out = self
            .agent(namespace)
            .args(["list", "--json", "--policy-file"])
            .arg(policy_file)
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(out);
        }
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    }

    /// The backup ids `list` shows, sorted.
    pub fn ids(&self, namespace: &str, policy_file: &std::path::Path) -> Vec<String> {
        let mut ids: Vec<String> = self
            .list(namespace, policy_file)
            .unwrap_or_else(|out| panic!("list: {}", text(&out)))
            .iter()
            .map(|m| m["backupId"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// A client of `bucket`, to change objects the way someone with the bucket's keys would
    /// (files written behind rclone's back are hidden by its directory cache).
    pub fn bucket(&self, bucket: &str) -> Bucket {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(self.s3.endpoint())
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id(LocalS3::ACCESS_KEY)
            .with_secret_access_key(LocalS3::SECRET_KEY)
            .with_allow_http(true)
            .build()
            .unwrap();
        Bucket {
            store: Arc::new(store),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }
}

/// A bucket, driven synchronously.
pub struct Bucket {
    store: Arc<dyn object_store::ObjectStore>,
    rt: tokio::runtime::Runtime,
}

impl Bucket {
    pub fn get(&self, key: &str) -> Vec<u8> {
        let key = object_store::path::Path::from(key);
        self.rt
            .block_on(async { self.store.get(&key).await.unwrap().bytes().await })
            .unwrap()
            .to_vec()
    }

    pub fn put(&self, key: &str, bytes: Vec<u8>) {
        let key = object_store::path::Path::from(key);
        self.rt
            .block_on(self.store.put(&key, bytes.into()))
            .unwrap();
    }

    pub fn delete(&self, key: &str) {
        let key = object_store::path::Path::from(key);
        self.rt.block_on(self.store.delete(&key)).unwrap();
    }

    /// Every key under `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        use futures::TryStreamExt;
        let prefix = object_store::path::Path::from(prefix);
        let mut keys: Vec<String> = self
            .rt
            .block_on(self.store.list(Some(&prefix)).try_collect::<Vec<_>>())
            .unwrap()
            .into_iter()
            .map(|o| o.location.to_string())
            .collect();
        keys.sort();
        keys
    }
}

/// The Redis asset `sessions`.
pub fn asset(redis: &LocalRedis) -> Value {
    json!({"name": "sessions", "redis": {"host": "127.0.0.1", "port": redis.port}})
}

/// A Redis server whose key `team` says whose data it is.
pub fn redis_of(team: &str) -> LocalRedis {
    let r = LocalRedis::start().unwrap();
    r.conn().run(0, &["SET", "team", team]).unwrap();
    r
}

/// The value of `team` in the RDB a restore placed in `dir`.
pub fn team_in(dir: &std::path::Path) -> String {
    let r = LocalRedis::start_in(dir, None).unwrap();
    r.conn().run(0, &["GET", "team"]).unwrap()
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts the run was refused as an integrity failure whose message says `why`.
pub fn refused(out: &Output, summary: Option<&AgentSummary>, why: &str, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(ErrorClass::Integrity.exit_code()),
        "{what}: {}",
        text(out)
    );
    assert!(
        text(out).contains(why),
        "{what}: expected {why:?} in {}",
        text(out)
    );
    if let Some(s) = summary {
        assert_eq!(s.error_class, Some(ErrorClass::Integrity), "{what}");
    }
}
