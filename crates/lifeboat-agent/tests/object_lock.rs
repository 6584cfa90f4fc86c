//! Immutable backups: S3 Object Lock, against an S3 server that implements it (moto's server
//! mode, installed by hack/install-deps.sh; rclone's does not). The attacker is boto3, the AWS
//! SDK, holding the writer's own keys: the store itself must refuse to delete or replace what
//! the agent locked, and the backup must restore after the attack.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lifeboat_agent::local::{LocalPostgres, free_port};
use lifeboat_agent::postgres;
use lifeboat_api::agent_result::{AgentSummary, BackupMetadata};
use serde_json::{Value, json};

const KEY_ID: &str = "lifeboat-ak";
const SECRET: &str = "lifeboat-sk-0123456789";

/// moto's virtualenv, where hack/install-deps.sh puts it.
fn moto_dir() -> PathBuf {
    lifeboat_testenv::assets::repo_root().join("target/tools/moto-5.2.5")
}

struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        let port = free_port().unwrap();
        let server = moto_dir().join("bin/moto_server");
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} (installed by hack/install-deps.sh): {e}",
                    server.display()
                )
            });
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        Moto { child, port }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The attacker's and the inspector's client: boto3 with the writer's keys, one operation per
/// call, its outcome as JSON on stdout (`{"ok": ...}` or `{"error": "<S3 error code>"}`).
const BOTO: &str = r#"
import base64, hashlib, json, sys
import boto3
from botocore.exceptions import ClientError
endpoint, op, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="lifeboat-ak", aws_secret_access_key="lifeboat-sk-0123456789")
def run():
    if op == "create-bucket":
        return s3.create_bucket(Bucket=args["bucket"], ObjectLockEnabledForBucket=args["lock"])["ResponseMetadata"]["HTTPStatusCode"]
    if op == "versions":
        r = s3.list_object_versions(Bucket=args["bucket"], Prefix=args["prefix"])
        return {"versions": [{"key": v["Key"], "id": v["VersionId"], "latest": v["IsLatest"]} for v in r.get("Versions", [])],
                "markers": [{"key": m["Key"], "id": m["VersionId"]} for m in r.get("DeleteMarkers", [])]}
    if op == "head":
        h = s3.head_object(Bucket=args["bucket"], Key=args["key"], **({"VersionId": args["id"]} if "id" in args else {}))
        return {"mode": h.get("ObjectLockMode"), "until": h["ObjectLockRetainUntilDate"].strftime("%Y-%m-%dT%H:%M:%SZ") if "ObjectLockRetainUntilDate" in h else None}
    if op == "get":
        open(args["to"], "wb").write(s3.get_object(Bucket=args["bucket"], Key=args["key"])["Body"].read())
        return 200
    if op == "sha256":
        body = s3.get_object(Bucket=args["bucket"], Key=args["key"], VersionId=args["id"])["Body"].read()
        return hashlib.sha256(body).hexdigest()
    if op == "delete":
        extra = {"VersionId": args["id"]} if "id" in args else {}
        if args.get("bypass"):
            extra["BypassGovernanceRetention"] = True
        return s3.delete_object(Bucket=args["bucket"], Key=args["key"], **extra)["ResponseMetadata"]["HTTPStatusCode"]
    if op == "put":
        return s3.put_object(Bucket=args["bucket"], Key=args["key"], Body=args["body"].encode())["ResponseMetadata"]["HTTPStatusCode"]
    raise SystemExit("unknown op " + op)
try:
    print(json.dumps({"ok": run()}))
except ClientError as e:
    print(json.dumps({"error": e.response["Error"]["Code"]}))
"#;

fn boto(moto: &Moto, op: &str, args: Value) -> Value {
    let out = Command::new(moto_dir().join("bin/python"))
        .args(["-c", BOTO, &moto.endpoint(), op, &args.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "boto3 {op}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn secrets(dir: &Path) -> PathBuf {
    let s = dir.join("secrets/s3-creds");
    std::fs::create_dir_all(&s).unwrap();
    std::fs::write(s.join("AWS_ACCESS_KEY_ID"), KEY_ID).unwrap();
    std::fs::write(s.join("AWS_SECRET_ACCESS_KEY"), SECRET).unwrap();
    dir.join("secrets")
}

fn destination(moto: &Moto, bucket: &str, prefix: &str, lock: Option<Value>) -> Value {
    let mut d = json!({"s3": {"endpoint": moto.endpoint(), "bucket": bucket, "prefix": prefix,
        "forcePathStyle": true, "credentialsSecret": {"name": "s3-creds"}}});
    if let Some(lock) = lock {
        d["objectLock"] = lock;
    }
    d
}

fn agent(
    doc: &Value,
    verb: &[&str],
    secrets: &Path,
    term: &Path,
) -> (std::process::Output, AgentSummary) {
    let out = Command::new(env!("CARGO_BIN_EXE_lifeboat-agent"))
        .env(
            "LIFEBOAT_SIGNING_KEY_FILE",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/signing.key"),
        )
        .env("LIFEBOAT_NAMESPACE", "n")
        .env("LIFEBOAT_JOB", doc.to_string())
        .env("LIFEBOAT_SECRETS_DIR", secrets)
        .env("LIFEBOAT_TERMINATION_LOG", term)
        .args(verb)
        .output()
        .unwrap();
    let summary = AgentSummary::from_termination_message(&std::fs::read_to_string(term).unwrap())
        .expect("a summary");
    (out, summary)
}

const FINGERPRINT: &str =
    "SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY id)) FROM t";

/// The current version of each key under `prefix`: key → version id.
fn current_versions(moto: &Moto, bucket: &str, prefix: &str) -> Vec<(String, String)> {
    let v = boto(
        moto,
        "versions",
        json!({"bucket": bucket, "prefix": prefix}),
    );
    v["ok"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["latest"] == json!(true))
        .map(|v| {
            (
                v["key"].as_str().unwrap().to_owned(),
                v["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A moto server with one bucket (Object Lock enabled or not), PostgreSQL with database `shop`
/// holding table `t` of `rows` rows, the keys as Secret files, and the asset backing it up.
struct Fixture {
    dir: tempfile::TempDir,
    moto: Moto,
    pg: LocalPostgres,
    secrets: PathBuf,
    term: PathBuf,
    asset: Value,
}

impl Fixture {
    fn new(bucket: &str, lock: bool, rows: u32) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let moto = Moto::start();
        assert_eq!(
            boto(
                &moto,
                "create-bucket",
                json!({"bucket": bucket, "lock": lock})
            ),
            json!({"ok": 200})
        );
        let pg = LocalPostgres::start().unwrap();
        let conn = pg.conn();
        postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
        postgres::query(&conn, "shop", &format!("CREATE TABLE t (id serial PRIMARY KEY, v text); INSERT INTO t (v) SELECT md5(i::text) FROM generate_series(1, {rows}) i")).unwrap();
        let secrets = secrets(dir.path());
        let term = dir.path().join("term");
        let asset = json!({"name": "orders-db", "postgres": {"host": "127.0.0.1", "port": pg.port,
            "user": "lifeboat", "sslMode": "disable", "databases": ["shop"]}});
        Fixture {
            dir,
            moto,
            pg,
            secrets,
            term,
            asset,
        }
    }

    /// A backup Job's document to `destination` under `retention`.
    fn job(&self, destination: Value, retention: Value) -> Value {
        json!({"namespace": "n", "policy": "shop", "asset": self.asset, "destination": destination,
               "compression": {"algorithm": "zstd", "level": 3}, "retention": retention})
    }

    fn agent(&self, doc: &Value, verb: &[&str]) -> (std::process::Output, AgentSummary) {
        agent(doc, verb, &self.secrets, &self.term)
    }
}

#[test]
fn a_locked_backup_survives_its_writer_s_keys_and_restores_after_the_attack() {
    let f = Fixture::new("locked", true, 2000);
    let (moto, dir, asset) = (&f.moto, &f.dir, &f.asset);
    let conn = f.pg.conn();
    let expected = postgres::query(&conn, "shop", FINGERPRINT).unwrap();
    let lock = json!({"mode": "Compliance", "retainFor": "1d"});
    let keep_one = json!({"keepLast": 1, "minKeep": 1, "maxDeletePercent": 100});
    let locked = f.job(
        destination(moto, "locked", "lb", Some(lock)),
        keep_one.clone(),
    );

    // Two backups; keepLast 1 would delete the first, but its lock holds for a day.
    let before = jiff::Timestamp::now();
    let (out, first) = f.agent(&locked, &["backup"]);
    assert!(first.ok, "{}", String::from_utf8_lossy(&out.stderr));
    let (out, second) = f.agent(&locked, &["backup"]);
    assert!(second.ok, "{}", String::from_utf8_lossy(&out.stderr));
    let first_id = first.backup_id.clone().unwrap();
    let prefix = format!("lb/n/shop/{first_id}/");
    let objects = current_versions(moto, "locked", &prefix);
    let names: Vec<&str> = objects
        .iter()
        .map(|(k, _)| k.strip_prefix(&prefix).unwrap())
        .collect();
    assert!(
        names.contains(&"orders-db.metadata.json") && names.contains(&"orders-db.shop.pgdump.zst"),
        "the first backup is still there after the second's retention: {names:?}"
    );

    // Every object of it is locked in COMPLIANCE mode for a day, as its metadata records.
    let metadata_key = format!("{prefix}orders-db.metadata.json");
    let local = dir.path().join("meta.json");
    boto(
        moto,
        "get",
        json!({"bucket": "locked", "key": metadata_key, "to": local}),
    );
    let metadata: BackupMetadata = serde_json::from_slice(&std::fs::read(&local).unwrap()).unwrap();
    let recorded = metadata
        .object_lock
        .clone()
        .expect("the metadata records the lock");
    assert_eq!(
        recorded.mode,
        lifeboat_api::common::ObjectLockMode::Compliance
    );
    let day = jiff::SignedDuration::from_hours(24);
    assert!(recorded.retain_until >= before + day);
    assert!(
        recorded.retain_until <= jiff::Timestamp::now() + day + jiff::SignedDuration::from_secs(1)
    );
    for (key, id) in &objects {
        if key.ends_with(".lifeboat-claim") {
            continue;
        }
        let head = boto(
            moto,
            "head",
            json!({"bucket": "locked", "key": key, "id": id}),
        );
        assert_eq!(head["ok"]["mode"], json!("COMPLIANCE"), "{key}");
        let until: jiff::Timestamp = head["ok"]["until"].as_str().unwrap().parse().unwrap();
        assert!(
            until >= before + day && until <= recorded.retain_until,
            "{key} locked until {until}, the backup records {}",
            recorded.retain_until
        );
    }
    let digests: Vec<(String, String, Value)> = objects
        .iter()
        .map(|(k, id)| {
            (
                k.clone(),
                id.clone(),
                boto(
                    moto,
                    "sha256",
                    json!({"bucket": "locked", "key": k, "id": id}),
                ),
            )
        })
        .collect();

    // The attack, with the writer's own keys: deleting each locked version is refused by the
    // store, with or without a governance bypass; what a plain delete and an overwrite do is add
    // a delete marker or a newer version above it. (Shortening a Compliance lock is not tried:
    // AWS refuses it, moto 5.2.5 does not, and the test would only measure moto.)
    for (key, id) in &objects {
        if key.ends_with(".lifeboat-claim") {
            continue;
        }
        let refused = boto(
            moto,
            "delete",
            json!({"bucket": "locked", "key": key, "id": id}),
        );
        assert_eq!(refused, json!({"error": "AccessDenied"}), "{key}");
        let bypass = boto(
            moto,
            "delete",
            json!({"bucket": "locked", "key": key, "id": id, "bypass": true}),
        );
        assert_eq!(
            bypass,
            json!({"error": "AccessDenied"}),
            "compliance mode has no bypass: {key}"
        );
    }
    let artifact_key = format!("{prefix}orders-db.shop.pgdump.zst");
    assert_eq!(
        boto(
            moto,
            "put",
            json!({"bucket": "locked", "key": artifact_key, "body": "ransom"})
        ),
        json!({"ok": 200})
    );
    assert_eq!(
        boto(
            moto,
            "delete",
            json!({"bucket": "locked", "key": metadata_key})
        ),
        json!({"ok": 204})
    );
    // The backup's versions are intact, byte for byte.
    for (key, id, digest) in &digests {
        assert_eq!(
            &boto(
                moto,
                "sha256",
                json!({"bucket": "locked", "key": key, "id": id})
            ),
            digest,
            "{key}"
        );
    }

    // Recovery: the attacker's delete marker and unlocked version go (nothing locks them),
    // and the first backup restores, every row.
    let after = boto(
        moto,
        "versions",
        json!({"bucket": "locked", "prefix": prefix}),
    );
    for m in after["ok"]["markers"].as_array().unwrap() {
        assert_eq!(
            boto(
                moto,
                "delete",
                json!({"bucket": "locked", "key": m["key"], "id": m["id"]})
            ),
            json!({"ok": 204})
        );
    }
    let ours: Vec<&String> = objects.iter().map(|(_, id)| id).collect();
    for v in after["ok"]["versions"].as_array().unwrap() {
        if !ours.iter().any(|id| v["id"] == json!(id)) {
            assert_eq!(
                boto(
                    moto,
                    "delete",
                    json!({"bucket": "locked", "key": v["key"], "id": v["id"]})
                ),
                json!({"ok": 204}),
                "the attacker's version is not locked"
            );
        }
    }
    let restore = json!({"namespace": "n", "policy": "shop", "backupId": first_id, "asset": asset,
        "target": {"asset": "orders-db", "postgres": {"host": "127.0.0.1", "port": f.pg.port,
            "user": "lifeboat", "sslMode": "disable", "database": "shop_back", "createDatabase": true}},
        "location": destination(moto, "locked", "lb", None), "options": {}});
    let (out, summary) = f.agent(&restore, &["restore", "--execute"]);
    assert!(summary.ok, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        postgres::query(&conn, "shop_back", FINGERPRINT).unwrap(),
        expected
    );

    // The same retention without a lock, on the same server, does delete: keepLast 1 is live.
    let unlocked = f.job(destination(moto, "locked", "plain", None), keep_one);
    for _ in 0..2 {
        let (out, s) = f.agent(&unlocked, &["backup"]);
        assert!(s.ok, "{}", String::from_utf8_lossy(&out.stderr));
    }
    let kept: std::collections::BTreeSet<String> =
        current_versions(moto, "locked", "plain/n/shop/")
            .into_iter()
            .filter(|(k, _)| k.ends_with(".metadata.json"))
            .map(|(k, _)| k)
            .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
}

#[test]
fn a_bucket_that_cannot_lock_fails_the_backup_and_leaves_no_backup_that_counts() {
    let f = Fixture::new("plain", false, 10);
    let moto = &f.moto;
    let lock = json!({"mode": "Governance", "retainFor": "7d"});
    let job = f.job(
        destination(moto, "plain", "lb", Some(lock)),
        json!({"keepLast": 3, "minKeep": 1}),
    );
    let (out, summary) = f.agent(&job, &["backup"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!summary.ok, "{stderr}");
    assert!(
        summary
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("PutObjectRetention"),
        "{summary:?}"
    );
    // No metadata was left behind: nothing counts as a backup.
    let metadata: Vec<(String, String)> = current_versions(moto, "plain", "lb/")
        .into_iter()
        .filter(|(k, _)| k.ends_with(".metadata.json"))
        .collect();
    assert!(metadata.is_empty(), "{metadata:?}");
}
