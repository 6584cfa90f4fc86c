//! Client-side age encryption end to end, as the operator runs the agent (LIFEBOAT_JOB documents,
//! the identity as a mounted Secret file), against real PostgreSQL and Redis servers: the stored
//! bytes are age ciphertext, `verify` needs no key, a restore with the right identity gives the
//! data back, a wrong or missing identity fails with its class before the target is touched, and
//! no private key shows up anywhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use age::secrecy::ExposeSecret;
use lifeboat_agent::local::{LocalPostgres, LocalRedis, free_port};
use lifeboat_agent::postgres;
use lifeboat_api::agent_result::{AgentSummary, BackupMetadata, ErrorClass};
use serde_json::{Value, json};

const AGE_HEADER: &[u8] = b"age-encryption.org/v1\n";
const MARKER: &str = "LIFEBOAT-PLAINTEXT-MARKER-5d41402a";
const FINGERPRINT: &str =
    "SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY id)) FROM t";

struct Keys {
    public: String,
    /// The private keys' text, to prove they never leak.
    secrets: Vec<String>,
}

/// An identity as `age-keygen` writes it (comments included) in Secret `age-key`, and another,
/// unrelated one in Secret `other-key`.
fn keys(secrets: &Path) -> Keys {
    let mut out = Vec::new();
    let mut public = String::new();
    for name in ["age-key", "other-key"] {
        let key = age::x25519::Identity::generate();
        let secret = key.to_string().expose_secret().to_owned();
        let dir = secrets.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("identity"),
            format!(
                "# created: 2026-11-24T10:00:00Z\n# public key: {}\n{secret}\n",
                key.to_public()
            ),
        )
        .unwrap();
        if public.is_empty() {
            public = key.to_public().to_string();
        }
        out.push(secret);
    }
    Keys {
        public,
        secrets: out,
    }
}

fn run(doc: &Value, verb: &[&str], secrets: &Path, dir: &Path) -> (Output, Option<AgentSummary>) {
    let term = dir.join("term");
    let _ = std::fs::remove_file(&term);
    let out = agent_command()
        .env("LIFEBOAT_JOB", doc.to_string())
        .env("LIFEBOAT_SECRETS_DIR", secrets)
        .env("LIFEBOAT_TERMINATION_LOG", &term)
        .args(verb)
        .arg("--dir")
        .arg(dir.join("backups"))
        .output()
        .unwrap();
    let summary = std::fs::read_to_string(&term)
        .ok()
        .and_then(|t| AgentSummary::from_termination_message(&t));
    (out, summary)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// No private key in the output, the summary, or any metadata file under `dir`.
fn assert_no_private_key(keys: &Keys, out: &Output, summary: Option<&AgentSummary>, dir: &Path) {
    let mut haystack = text(out);
    if let Some(s) = summary {
        haystack.push_str(&serde_json::to_string(s).unwrap());
    }
    for m in metadata_files(dir) {
        haystack.push_str(&std::fs::read_to_string(m).unwrap());
    }
    assert!(!haystack.contains("AGE-SECRET-KEY"), "{haystack}");
    for s in &keys.secrets {
        assert!(!haystack.contains(&s[15..]), "a private key leaked");
    }
}

fn metadata_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("backups")];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".metadata.json") {
                out.push(p);
            }
        }
    }
    out
}

/// The newest backup's metadata and directory.
fn newest(dir: &Path, policy: &str, asset: &str) -> (BackupMetadata, PathBuf) {
    let mut ids: Vec<PathBuf> = std::fs::read_dir(dir.join("backups/n").join(policy))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join(format!("{asset}.metadata.json")).is_file())
        .collect();
    ids.sort();
    let id = ids.pop().unwrap();
    let m =
        serde_json::from_slice(&std::fs::read(id.join(format!("{asset}.metadata.json"))).unwrap())
            .unwrap();
    (m, id)
}

fn verify(dir: &Path, policy: &str) -> Output {
    // No secrets directory at all: verification needs no key.
    agent_command()
        .env_remove("LIFEBOAT_JOB")
        .env("LIFEBOAT_SECRETS_DIR", "/nonexistent")
        .args(["verify", "--policy", policy, "--dir"])
        .arg(dir.join("backups"))
        .output()
        .unwrap()
}

#[test]
fn an_encrypted_postgres_backup_round_trips_and_refuses_wrong_or_missing_identities() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    let keys = keys(&secrets);
    let pg = LocalPostgres::start().unwrap();
    let conn = pg.conn();
    postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
    postgres::query(
        &conn,
        "shop",
        &format!("CREATE TABLE t (id serial PRIMARY KEY, v text); INSERT INTO t (v) SELECT '{MARKER} ' || i FROM generate_series(1, 2000) i"),
    )
    .unwrap();
    let expected = postgres::query(&conn, "shop", FINGERPRINT).unwrap();
    let asset = json!({"name": "orders-db", "postgres": {"host": "127.0.0.1", "port": pg.port, "user": "lifeboat", "sslMode": "disable", "databases": ["shop"]}});
    let encryption = json!({"recipients": [keys.public], "identitySecret": {"name": "age-key", "key": "identity"}});
    let backup = |compression: Value| {
        json!({"namespace": "n", "policy": "shop", "asset": asset, "destination": {"volume": {"claimName": "b"}},
               "compression": compression, "encryption": encryption, "retention": {"keepLast": 5, "minKeep": 1}})
    };

    // Without compression the plaintext would be in the dump verbatim: the marker proves it is not.
    for (compression, artifact) in [
        (json!({"algorithm": "none"}), "orders-db.shop.pgdump.age"),
        (
            json!({"algorithm": "zstd", "level": 3}),
            "orders-db.shop.pgdump.zst.age",
        ),
    ] {
        let (out, summary) = run(&backup(compression), &["backup"], &secrets, dir.path());
        assert!(out.status.success(), "{}", text(&out));
        assert_no_private_key(&keys, &out, summary.as_ref(), dir.path());
        let (m, id_dir) = newest(dir.path(), "shop", "orders-db");
        assert_eq!(m.artifacts[0].name, artifact);
        let info = m.encryption.clone().unwrap();
        assert_eq!(
            (info.algorithm.as_str(), info.recipients),
            ("age", vec![keys.public.clone()])
        );
        let bytes = std::fs::read(id_dir.join(artifact)).unwrap();
        assert!(bytes.starts_with(AGE_HEADER), "{artifact}: not age");
        assert!(!bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]));
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "{artifact}: plaintext stored"
        );
    }
    let ok = verify(dir.path(), "shop");
    assert!(ok.status.success(), "{}", text(&ok));

    let restore = |database: &str, identity: Option<Value>| {
        let mut doc = json!({"namespace": "n", "policy": "shop", "backupId": "latest", "asset": asset,
            "target": {"asset": "orders-db", "postgres": {"host": "127.0.0.1", "port": pg.port, "user": "lifeboat", "sslMode": "disable", "database": database, "createDatabase": true}},
            "location": {"volume": {"claimName": "b"}}, "options": {}});
        if let Some(i) = identity {
            doc["identitySecret"] = i;
        }
        doc
    };
    let refusals = [
        (
            "wrong identity",
            Some(json!({"name": "other-key", "key": "identity"})),
            ErrorClass::Auth,
        ),
        (
            "identity Secret not mounted",
            Some(json!({"name": "absent", "key": "identity"})),
            ErrorClass::SecretNotFound,
        ),
        ("no identitySecret", None, ErrorClass::Config),
    ];
    for (case, identity, class) in refusals {
        for verb in [&["restore"][..], &["restore", "--execute"][..]] {
            let (out, summary) = run(
                &restore("shop_never", identity.clone()),
                verb,
                &secrets,
                dir.path(),
            );
            assert_eq!(
                out.status.code(),
                Some(class.exit_code()),
                "{case} {verb:?}: {}",
                text(&out)
            );
            assert_eq!(summary.as_ref().unwrap().error_class, Some(class), "{case}");
            assert_no_private_key(&keys, &out, summary.as_ref(), dir.path());
            assert!(
                postgres::query(&conn, "shop_never", "SELECT 1").is_err(),
                "{case}: the target was created"
            );
        }
    }
    let right = Some(json!({"name": "age-key", "key": "identity"}));
    let (plan, _) = run(
        &restore("shop_copy", right.clone()),
        &["restore"],
        &secrets,
        dir.path(),
    );
    assert!(plan.status.success(), "{}", text(&plan));
    assert!(
        text(&plan).contains("the identity decrypts it"),
        "{}",
        text(&plan)
    );
    let (out, summary) = run(
        &restore("shop_copy", right),
        &["restore", "--execute"],
        &secrets,
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_no_private_key(&keys, &out, summary.as_ref(), dir.path());
    assert_eq!(
        postgres::query(&conn, "shop_copy", FINGERPRINT).unwrap(),
        expected
    );
}

#[test]
fn an_encrypted_redis_backup_is_placed_only_with_the_right_identity() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    let keys = keys(&secrets);
    let redis = LocalRedis::start().unwrap();
    for i in 0..100 {
        redis
            .conn()
            .run(0, &["SET", &format!("k:{i}"), &format!("{MARKER} {i}")])
            .unwrap();
    }
    let asset = json!({"name": "sessions", "redis": {"host": "127.0.0.1", "port": redis.port}});
    let job = json!({"namespace": "n", "policy": "cache", "asset": asset, "destination": {"volume": {"claimName": "b"}},
        "compression": {"algorithm": "none"}, "encryption": {"recipients": [keys.public]},
        "retention": {"keepLast": 5, "minKeep": 1}});
    let (out, _) = run(&job, &["backup"], &secrets, dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let (m, id_dir) = newest(dir.path(), "cache", "sessions");
    let bytes = std::fs::read(id_dir.join(&m.artifacts[0].name)).unwrap();
    assert!(bytes.starts_with(AGE_HEADER));
    assert!(!bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()));
    assert!(verify(dir.path(), "cache").status.success());

    // The target is a stopped server (a free port) with an empty data directory.
    let data = tempfile::tempdir().unwrap();
    let restore = |identity: &str| {
        json!({"namespace": "n", "policy": "cache", "backupId": "latest", "asset": asset,
            "target": {"asset": "sessions", "redis": {"host": "127.0.0.1", "port": free_port().unwrap(), "dataDir": data.path()}},
            "location": {"volume": {"claimName": "b"}}, "options": {},
            "identitySecret": {"name": identity, "key": "identity"}})
    };
    let (out, _) = run(
        &restore("other-key"),
        &["restore", "--execute"],
        &secrets,
        dir.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(ErrorClass::Auth.exit_code()),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_dir(data.path()).unwrap().count(),
        0,
        "nothing placed"
    );
    let (out, _) = run(
        &restore("age-key"),
        &["restore", "--execute"],
        &secrets,
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let restarted = LocalRedis::start_in(data.path(), None).unwrap();
    assert_eq!(restarted.conn().run(0, &["DBSIZE"]).unwrap(), "100");
    assert_eq!(
        restarted.conn().run(0, &["GET", "k:7"]).unwrap(),
        format!("{MARKER} 7")
    );
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
