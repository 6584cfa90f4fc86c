//! Corruption at rest that a flipped byte does not cover: an artifact swapped for the same
//! asset's artifact from another backup (a valid archive, only not this backup's), and a
//! metadata.json whose checksum was edited to a wrong value. For PostgreSQL dumps and Redis
//! RDBs: `verify` fails and `restore --execute` refuses with the integrity exit code before the
//! target is touched. (Buckets and Kubernetes state: tests/bucket.rs
//! `a_swapped_bucket_artifact_is_refused_before_the_target_is_touched` and tests/kubestate.rs
//! `a_swapped_dump_is_refused_before_anything_is_applied`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lifeboat_agent::local::{LocalPostgres, LocalRedis, free_port};
use lifeboat_agent::postgres;
use lifeboat_api::agent_result::ErrorClass;

fn agent() -> Command {
    let mut c = agent_command();
    c.env_remove("LIFEBOAT_JOB")
        .env_remove("LIFEBOAT_TERMINATION_LOG");
    c
}

struct Shop {
    dir: tempfile::TempDir,
    pg: LocalPostgres,
    redis: LocalRedis,
    policy: PathBuf,
}

impl Shop {
    fn backups(&self) -> PathBuf {
        self.dir.path().join("backups")
    }

    fn backup(&self, asset: &str) -> String {
        let out = agent()
            .args(["backup", "--asset", asset, "--policy-file"])
            .arg(&self.policy)
            .arg("--dir")
            .arg(self.backups())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The id is the newest directory holding this asset's metadata.
        let mut ids: Vec<String> = std::fs::read_dir(self.backups().join("n/shop"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|id| {
                self.backups()
                    .join("n/shop")
                    .join(id)
                    .join(format!("{asset}.metadata.json"))
                    .is_file()
            })
            .collect();
        ids.sort();
        ids.pop().unwrap()
    }

    fn slot(&self, id: &str) -> PathBuf {
        self.backups().join("n/shop").join(id)
    }

    fn verify(&self, id: &str) -> Output {
        agent()
            .args(["verify", "--policy", "shop", "--backup", id, "--dir"])
            .arg(self.backups())
            .output()
            .unwrap()
    }

    fn restore(&self, asset: &str, id: &str, target: &Path) -> Output {
        agent()
            .args([
                "restore",
                "--execute",
                "--asset",
                asset,
                "--backup",
                id,
                "--policy-file",
            ])
            .arg(&self.policy)
            .arg("--target-file")
            .arg(target)
            .arg("--dir")
            .arg(self.backups())
            .output()
            .unwrap()
    }
}

fn shop() -> Shop {
    let dir = tempfile::tempdir().unwrap();
    let pg = LocalPostgres::start().unwrap();
    let redis = LocalRedis::start().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: shop}}\nspec:\n  schedule: '@hourly'\n  assets:\n    - name: orders-db\n      postgres: {{host: 127.0.0.1, port: {}, user: lifeboat, sslMode: disable, databases: [shop]}}\n    - name: sessions\n      redis: {{host: 127.0.0.1, port: {}}}\n  retention: {{maxAge: 7d}}\n  destination: {{volume: {{claimName: local}}}}\n",
            pg.port, redis.port
        ),
    )
    .unwrap();
    Shop {
        dir,
        pg,
        redis,
        policy,
    }
}

/// The two tamperings of backup `a`'s `artifact`, each undone after its check.
fn tamperings(shop: &Shop, a: &str, b: &str, artifact: &str, mut refused: impl FnMut(&str)) {
    let target = shop.slot(a).join(artifact);
    let pristine = std::fs::read(&target).unwrap();
    let other = std::fs::read(shop.slot(b).join(artifact)).unwrap();
    assert_ne!(pristine, other, "the two backups must differ");

    // A swapped artifact: the same asset's artifact from another backup, intact in itself.
    std::fs::write(&target, &other).unwrap();
    refused("an artifact swapped from another backup");
    std::fs::write(&target, &pristine).unwrap();

    // The metadata's checksum edited to a wrong value (the artifact untouched).
    let meta_path = std::fs::read_dir(shop.slot(a))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".metadata.json"))
        .unwrap();
    let meta = std::fs::read_to_string(&meta_path).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&meta).unwrap();
    for art in doc["artifacts"].as_array_mut().unwrap() {
        if art["name"] == artifact {
            art["sha256"] = serde_json::Value::String("0".repeat(64));
        }
    }
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    refused("the metadata's checksum edited to a wrong value");
    std::fs::write(&meta_path, meta).unwrap();
}

fn assert_integrity(out: &Output, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(ErrorClass::Integrity.exit_code()),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_swapped_dump_or_an_edited_checksum_is_refused_before_the_database_is_touched() {
    let shop = shop();
    let conn = shop.pg.conn();
    postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
    postgres::query(
        &conn,
        "shop",
        "CREATE TABLE orders (id int); INSERT INTO orders SELECT generate_series(1, 100)",
    )
    .unwrap();
    let a = shop.backup("orders-db");
    postgres::query(
        &conn,
        "shop",
        "INSERT INTO orders SELECT generate_series(101, 300)",
    )
    .unwrap();
    let b = shop.backup("orders-db");
    assert_ne!(a, b);

    postgres::query(&conn, "postgres", "CREATE DATABASE target").unwrap();
    postgres::query(
        &conn,
        "target",
        "CREATE TABLE precious (v text); INSERT INTO precious VALUES ('keep me')",
    )
    .unwrap();
    let target = shop.dir.path().join("target.yaml");
    std::fs::write(
        &target,
        format!(
            "asset: orders-db\npostgres: {{host: 127.0.0.1, port: {}, user: lifeboat, sslMode: disable, database: target}}\n",
            shop.pg.port
        ),
    )
    .unwrap();
    tamperings(&shop, &a, &b, "orders-db.shop.pgdump.zst", |what| {
        assert_integrity(&shop.verify(&a), what);
        assert_integrity(&shop.restore("orders-db", &a, &target), what);
        assert_eq!(
            postgres::query(&conn, "target", "SELECT v FROM precious").unwrap(),
            "keep me",
            "{what}: target touched"
        );
        assert!(
            postgres::query(&conn, "target", "SELECT count(*) FROM orders").is_err(),
            "{what}: restored anyway"
        );
    });
    // Untampered, the same backup restores: the refusals were the tampering.
    let out = shop.restore("orders-db", &a, &target);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        postgres::query(&conn, "target", "SELECT count(*) FROM orders").unwrap(),
        "100"
    );
}

#[test]
fn a_swapped_rdb_or_an_edited_checksum_is_refused_before_the_data_directory_is_touched() {
    let shop = shop();
    let r = shop.redis.conn();
    r.run(0, &["SET", "session:1", "a"]).unwrap();
    let a = shop.backup("sessions");
    r.run(0, &["SET", "session:2", "b"]).unwrap();
    let b = shop.backup("sessions");
    assert_ne!(a, b);

    // The target: a data directory whose current dump.rdb must survive a refusal.
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("dump.rdb"), b"the target's own snapshot").unwrap();
    let target = shop.dir.path().join("rtarget.yaml");
    std::fs::write(
        &target,
        format!(
            "asset: sessions\nredis: {{host: 127.0.0.1, port: {}, dataDir: {}}}\n",
            free_port().unwrap(),
            data.path().display()
        ),
    )
    .unwrap();
    let untouched = |what: &str| {
        let mut names: Vec<String> = std::fs::read_dir(data.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["dump.rdb"], "{what}: files added to the target");
        assert_eq!(
            std::fs::read(data.path().join("dump.rdb")).unwrap(),
            b"the target's own snapshot",
            "{what}: target touched"
        );
    };
    tamperings(&shop, &a, &b, "sessions.rdb.zst", |what| {
        assert_integrity(&shop.verify(&a), what);
        assert_integrity(&shop.restore("sessions", &a, &target), what);
        untouched(what);
    });
    let out = shop.restore("sessions", &a, &target);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(
        std::fs::read(data.path().join("dump.rdb")).unwrap(),
        b"the target's own snapshot"
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
