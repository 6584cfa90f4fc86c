//! The agent against real PostgreSQL and Redis servers on loopback: round trips that prove the
//! data comes back, integrity failures that stop a restore before it touches the target, and bad
//! input that fails with the right class and leaves no backup behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use lifeboat_agent::local::{LocalPostgres, LocalRedis};
use lifeboat_agent::postgres;

fn agent() -> Command {
    let mut c = agent_command();
    c.env_remove("LIFEBOAT_JOB")
        .env_remove("LIFEBOAT_TERMINATION_LOG");
    c
}

fn write_policy(dir: &Path, pg: &LocalPostgres, redis: &LocalRedis) -> std::path::PathBuf {
    let path = dir.join("policy.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: shop}}\nspec:\n  schedule: '@hourly'\n  assets:\n    - name: orders-db\n      postgres: {{host: 127.0.0.1, port: {}, user: lifeboat, sslMode: disable, databases: [shop]}}\n    - name: sessions\n      redis: {{host: 127.0.0.1, port: {}, dataDir: /nonexistent}}\n  retention: {{maxAge: 7d}}\n  destination: {{volume: {{claimName: local}}}}\n",
            pg.port, redis.port
        ),
    )
    .unwrap();
    path
}

const SCHEMA: &str = "
CREATE TABLE t (id serial PRIMARY KEY, txt text, doc jsonb, bin bytea, num numeric(30,10), at timestamptz, big text);
INSERT INTO t (txt, doc, bin, num, at, big)
SELECT 'row ' || i || ' ünïcødé', jsonb_build_object('i', i, 'arr', jsonb_build_array(i, i*2)),
       decode(repeat(md5(i::text), 4), 'hex'), i * 3.1415926535, '2026-11-24 10:00+00'::timestamptz + i * interval '1 s',
       CASE WHEN i % 1000 = 0 THEN repeat('L', 3000000) ELSE NULL END
FROM generate_series(1, 5000) i;";

const FINGERPRINT: &str =
    "SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY id)) FROM t";

#[test]
fn postgres_and_redis_round_trip_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let pg = LocalPostgres::start().unwrap();
    let redis = LocalRedis::start().unwrap();
    let conn = pg.conn();
    postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
    postgres::query(&conn, "shop", SCHEMA).unwrap();
    let expected = postgres::query(&conn, "shop", FINGERPRINT).unwrap();
    let r = redis.conn();
    r.run(0, &["SET", "s", "v"]).unwrap();
    r.run(0, &["SET", "ttl", "x", "EX", "3600"]).unwrap();
    r.run(0, &["RPUSH", "l", "a", "b"]).unwrap();
    r.run(0, &["HSET", "h", "f", "v"]).unwrap();
    r.run(0, &["SADD", "set", "m"]).unwrap();
    r.run(0, &["ZADD", "z", "1", "m"]).unwrap();
    let policy = write_policy(dir.path(), &pg, &redis);

    let out = agent()
        .args(["backup", "--policy-file"])
        .arg(&policy)
        .arg("--dir")
        .arg(&backups)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = agent()
        .args(["list", "--policy", "shop", "--json", "--dir"])
        .arg(&backups)
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let raw = listed[0]["artifacts"][0]["rawBytes"].as_u64().unwrap();
    let stored = listed[0]["artifacts"][0]["storedBytes"].as_u64().unwrap();
    assert!(stored < raw, "compressed: {stored} < {raw}");

    // PostgreSQL into another database; the content is identical, to the byte.
    let target = dir.path().join("target.yaml");
    std::fs::write(&target, format!("asset: orders-db\npostgres: {{host: 127.0.0.1, port: {}, user: lifeboat, sslMode: disable, database: shop_copy, createDatabase: true}}\n", pg.port)).unwrap();
    let plan = agent()
        .args(["restore", "--asset", "orders-db", "--policy-file"])
        .arg(&policy)
        .arg("--target-file")
        .arg(&target)
        .arg("--dir")
        .arg(&backups)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&plan.stdout).contains("run again with --execute"));
    assert!(
        postgres::query(&conn, "shop_copy", "SELECT 1").is_err(),
        "plan only: nothing created"
    );
    let out = agent()
        .args([
            "restore",
            "--execute",
            "--asset",
            "orders-db",
            "--policy-file",
        ])
        .arg(&policy)
        .arg("--target-file")
        .arg(&target)
        .arg("--dir")
        .arg(&backups)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        postgres::query(&conn, "shop_copy", FINGERPRINT).unwrap(),
        expected
    );

    // Redis: the RDB placed in a data directory, then a real restart finds every key, type, TTL.
    // The target names a free port: nothing runs there (the restore checks a running target).
    let data = tempfile::tempdir().unwrap();
    let rtarget = dir.path().join("rtarget.yaml");
    let stopped_port = lifeboat_agent::local::free_port().unwrap();
    std::fs::write(
        &rtarget,
        format!(
            "asset: sessions\nredis: {{host: 127.0.0.1, port: {stopped_port}, dataDir: {}}}\n",
            data.path().display()
        ),
    )
    .unwrap();
    let out = agent()
        .args([
            "restore",
            "--execute",
            "--asset",
            "sessions",
            "--policy-file",
        ])
        .arg(&policy)
        .arg("--target-file")
        .arg(&rtarget)
        .arg("--dir")
        .arg(&backups)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restarted = LocalRedis::start_in(data.path(), None).unwrap();
    let c = restarted.conn();
    assert_eq!(c.run(0, &["DBSIZE"]).unwrap(), "6");
    assert_eq!(c.run(0, &["GET", "s"]).unwrap(), "v");
    for (k, t) in [("l", "list"), ("h", "hash"), ("set", "set"), ("z", "zset")] {
        assert_eq!(c.run(0, &["TYPE", k]).unwrap(), t);
    }
    let ttl: i64 = c.run(0, &["TTL", "ttl"]).unwrap().parse().unwrap();
    assert!(ttl > 3000 && ttl <= 3600, "{ttl}");
}

#[test]
fn corruption_is_refused_before_the_target_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let pg = LocalPostgres::start().unwrap();
    let redis = LocalRedis::start().unwrap();
    let conn = pg.conn();
    postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
    postgres::query(
        &conn,
        "shop",
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)",
    )
    .unwrap();
    let policy = write_policy(dir.path(), &pg, &redis);
    assert!(
        agent()
            .args(["backup", "--asset", "orders-db", "--policy-file"])
            .arg(&policy)
            .arg("--dir")
            .arg(&backups)
            .status()
            .unwrap()
            .success()
    );
    let backup_dir = std::fs::read_dir(backups.join("n/shop"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let artifact = backup_dir.join("orders-db.shop.pgdump.zst");
    let pristine = std::fs::read(&artifact).unwrap();
    // The target holds data the restore must not touch when it refuses.
    postgres::query(&conn, "postgres", "CREATE DATABASE target").unwrap();
    postgres::query(
        &conn,
        "target",
        "CREATE TABLE precious (v text); INSERT INTO precious VALUES ('keep me')",
    )
    .unwrap();
    let target = dir.path().join("target.yaml");
    std::fs::write(&target, format!("asset: orders-db\npostgres: {{host: 127.0.0.1, port: {}, user: lifeboat, sslMode: disable, database: target}}\n", pg.port)).unwrap();
    let restore = || {
        agent()
            .args([
                "restore",
                "--execute",
                "--asset",
                "orders-db",
                "--policy-file",
            ])
            .arg(&policy)
            .arg("--target-file")
            .arg(&target)
            .arg("--dir")
            .arg(&backups)
            .output()
            .unwrap()
    };
    type Damage<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Damage, i32)> = vec![
        (
            "flipped byte",
            Box::new(|| {
                let mut b = pristine.clone();
                let mid = b.len() / 2;
                b[mid] ^= 0x40;
                std::fs::write(&artifact, b).unwrap();
            }),
            8,
        ),
        (
            "truncated tail",
            Box::new(|| std::fs::write(&artifact, &pristine[..pristine.len() - 10]).unwrap()),
            8,
        ),
        (
            "malformed metadata",
            Box::new(|| {
                std::fs::write(&artifact, &pristine).unwrap();
                std::fs::write(backup_dir.join("orders-db.metadata.json"), "{not json").unwrap();
            }),
            8,
        ),
        (
            "missing metadata",
            Box::new(|| std::fs::remove_file(backup_dir.join("orders-db.metadata.json")).unwrap()),
            6,
        ),
    ];
    for (name, break_it, code) in cases {
        break_it();
        let out = restore();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            postgres::query(&conn, "target", "SELECT v FROM precious").unwrap(),
            "keep me",
            "{name}: target touched"
        );
        assert!(
            postgres::query(&conn, "target", "SELECT count(*) FROM t").is_err(),
            "{name}: restored anyway"
        );
    }
}

#[test]
fn bad_input_fails_with_its_class_and_leaves_no_backup() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let pg = LocalPostgres::start().unwrap();
    let redis = LocalRedis::start().unwrap();
    let policy = write_policy(dir.path(), &pg, &redis);
    // Missing database.
    let out = agent()
        .args(["backup", "--asset", "orders-db", "--policy-file"])
        .arg(&policy)
        .arg("--dir")
        .arg(&backups)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    // Unreachable host.
    let text = std::fs::read_to_string(&policy)
        .unwrap()
        .replace(&format!("port: {}", pg.port), "port: 1");
    std::fs::write(&policy, text).unwrap();
    let term = dir.path().join("termination-log");
    let out = agent()
        .env("LIFEBOAT_TERMINATION_LOG", &term)
        .args(["backup", "--asset", "orders-db", "--policy-file"])
        .arg(&policy)
        .arg("--dir")
        .arg(&backups)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = lifeboat_api::agent_result::AgentSummary::from_termination_message(
        &std::fs::read_to_string(&term).unwrap(),
    )
    .unwrap();
    assert!(!summary.ok);
    assert_eq!(
        summary.error_class,
        Some(lifeboat_api::agent_result::ErrorClass::SourceUnreachable)
    );
    // Nothing half-written is left, and nothing is listed.
    let list = agent()
        .args(["list", "--policy", "shop", "--json", "--dir"])
        .arg(&backups)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "[]");
    let leftovers: Vec<_> = std::fs::read_dir(backups.join("n/shop")).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Unknown backup id.
    let out = agent()
        .args([
            "restore",
            "--asset",
            "orders-db",
            "--backup",
            "20200101T000000Z",
            "--policy-file",
        ])
        .arg(&policy)
        .arg("--dir")
        .arg(&backups)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6));
}

#[test]
fn the_local_drill_reports_rpo_and_rto_against_objectives() {
    let dir = tempfile::tempdir().unwrap();
    let out = agent()
        .args([
            "drill",
            "--demo",
            "--json",
            "--traffic-seconds",
            "1",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], true);
    let rpo = report["rpoSeconds"].as_f64().unwrap();
    assert!(
        rpo >= 1.0,
        "the traffic after the backup is the data lost: {rpo}"
    );
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["passed"] == true)
    );
    // An objective the drill cannot meet fails it, with the validation exit code.
    let out = agent()
        .args([
            "drill",
            "--demo",
            "--rpo",
            "1s",
            "--traffic-seconds",
            "2",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(10));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL RPO achieved"));
}

#[test]
fn validate_runs_sql_and_redis_checks_against_the_restore_targets() {
    let dir = tempfile::tempdir().unwrap();
    let pg = LocalPostgres::start().unwrap();
    let redis = LocalRedis::start().unwrap();
    postgres::query(&pg.conn(), "postgres", "CREATE DATABASE staging").unwrap();
    postgres::query(
        &pg.conn(),
        "staging",
        "CREATE TABLE orders (id int); INSERT INTO orders VALUES (1)",
    )
    .unwrap();
    redis
        .conn()
        .run(0, &["SET", "lifeboat:canary", "here"])
        .unwrap();
    let job = |expect: &str| {
        serde_json::json!({
            "namespace": "n",
            "timeout": "3s",
            "checks": [
                {"name": "orders", "sql": {"asset": "db", "query": "SELECT count(*) > 0 FROM orders", "expect": expect}},
                {"name": "canary", "redis": {"asset": "cache", "key": "lifeboat:canary", "expect": "here"}}
            ],
            "assets": [
                {"namespace": "n", "policy": "p", "backupId": "x",
                 "asset": {"name": "db", "postgres": {"host": "prod", "user": "u", "databases": ["orders"]}},
                 "target": {"asset": "db", "postgres": {"host": "127.0.0.1", "port": pg.port, "user": "lifeboat", "sslMode": "disable", "database": "staging"}},
                 "location": {"volume": {"claimName": "b"}}, "options": {}},
                {"namespace": "n", "policy": "p", "backupId": "x",
                 "asset": {"name": "cache", "redis": {"host": "prod"}},
                 "target": {"asset": "cache", "redis": {"host": "127.0.0.1", "port": redis.port}},
                 "location": {"volume": {"claimName": "b"}}, "options": {}}
            ]
        })
        .to_string()
    };
    let term = dir.path().join("term");
    let run = |doc: String| {
        agent()
            .env("LIFEBOAT_JOB", doc)
            .env("LIFEBOAT_TERMINATION_LOG", &term)
            .args(["validate", "--execute", "--dir"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let ok = run(job("t"));
    assert!(
        ok.status.success(),
        "{}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    let summary = lifeboat_api::agent_result::AgentSummary::from_termination_message(
        &std::fs::read_to_string(&term).unwrap(),
    )
    .unwrap();
    assert_eq!(summary.checks.len(), 2);
    assert!(summary.checks.iter().all(|c| c.passed));
    // A check that cannot pass is retried until the timeout, then fails the run with its reason.
    let bad = run(job("f"));
    assert_eq!(bad.status.code(), Some(10));
    let summary = lifeboat_api::agent_result::AgentSummary::from_termination_message(
        &std::fs::read_to_string(&term).unwrap(),
    )
    .unwrap();
    let orders = summary.checks.iter().find(|c| c.name == "orders").unwrap();
    assert!(!orders.passed && orders.attempts >= 2, "{orders:?}");
    // The reason, never the value read (what a query returns may be a secret).
    assert_eq!(
        orders.message,
        "the first column of the first row is not the expected value"
    );
}

#[test]
fn prune_applies_retention_dry_run_first_and_refuses_a_mass_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let pg = LocalPostgres::start().unwrap();
    let redis = LocalRedis::start().unwrap();
    redis.conn().run(0, &["SET", "k", "v"]).unwrap();
    let policy = write_policy(dir.path(), &pg, &redis);
    for _ in 0..4 {
        let out = agent()
            .args(["backup", "--asset", "sessions", "--policy-file"])
            .arg(&policy)
            .arg("--dir")
            .arg(&backups)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let count = || {
        let list = agent()
            .args(["list", "--policy", "shop", "--json", "--dir"])
            .arg(&backups)
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&list.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count(), 4);
    let with_retention = |r: &str| {
        let text = std::fs::read_to_string(&policy).unwrap();
        let start = text.find("  retention:").unwrap();
        let end = start + text[start..].find('\n').unwrap();
        std::fs::write(
            &policy,
            format!("{}  retention: {r}{}", &text[..start], &text[end..]),
        )
        .unwrap();
    };
    with_retention("{keepLast: 2}");
    let dry = agent()
        .args(["prune", "--policy-file"])
        .arg(&policy)
        .arg("--dir")
        .arg(&backups)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert_eq!(text.matches("sessions: would delete").count(), 2, "{text}");
    assert_eq!(count(), 4, "a dry run deletes nothing");
    let run = agent()
        .args(["prune", "--execute", "--policy-file"])
        .arg(&policy)
        .arg("--dir")
        .arg(&backups)
        .output()
        .unwrap();
    assert!(run.status.success());
    assert_eq!(count(), 2);
    assert!(
        agent()
            .args(["verify", "--policy", "shop", "--dir"])
            .arg(&backups)
            .status()
            .unwrap()
            .success()
    );
    // Two more backups, then a rule that would delete 3 of 4: refused, nothing deleted.
    for _ in 0..2 {
        assert!(
            agent()
                .args(["backup", "--asset", "sessions", "--policy-file"])
                .arg(&policy)
                .arg("--dir")
                .arg(&backups)
                .status()
                .unwrap()
                .success()
        );
    }
    with_retention("{keepLast: 1}");
    let refused = agent()
        .args(["prune", "--execute", "--policy-file"])
        .arg(&policy)
        .arg("--dir")
        .arg(&backups)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("refusing to delete 3 of 4"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(count(), 4);
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
