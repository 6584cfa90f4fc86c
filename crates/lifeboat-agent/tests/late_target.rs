//! A restore whose target starts serving only after the restore began, as a database does whose
//! StatefulSet the Kubernetes-state step of the same restore just recreated (issue #15): the
//! agent waits for it instead of failing `SourceUnreachable` at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use lifeboat_agent::local::{LocalPostgres, LocalRedis, free_port};
use lifeboat_agent::postgres;

fn agent() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat-agent"));
    c.env(
        "LIFEBOAT_SIGNING_KEY_FILE",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/signing.key"),
    )
    .env("LIFEBOAT_NAMESPACE", "n")
    .env_remove("LIFEBOAT_JOB")
    .env_remove("LIFEBOAT_TERMINATION_LOG");
    c
}

/// From `after` on, a listener on `port` that forwards every connection to `to`: a server
/// that comes up late at the address the restore was given.
fn serve_late(port: u16, to: u16, after: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let server = TcpStream::connect(("127.0.0.1", to)).unwrap();
            for (mut from, mut into) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut into);
                    let _ = into.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
}

#[test]
fn a_postgres_restore_waits_for_a_target_that_starts_serving_after_it_began() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let pg = LocalPostgres::start().unwrap();
    let conn = pg.conn();
    postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
    postgres::query(
        &conn,
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 500) i",
    )
    .unwrap();
    let fingerprint = "SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY id)) FROM t";
    let expected = postgres::query(&conn, "shop", fingerprint).unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: shop}}\nspec:\n  schedule: '@hourly'\n  assets:\n    - name: orders-db\n      postgres: {{host: 127.0.0.1, port: {}, user: lifeboat, sslMode: disable, databases: [shop]}}\n  retention: {{maxAge: 7d}}\n  destination: {{volume: {{claimName: local}}}}\n",
            pg.port
        ),
    )
    .unwrap();
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

    // Nothing listens at the target's port when the restore starts; the server comes 4 s later.
    let late = free_port().unwrap();
    let target = dir.path().join("target.yaml");
    std::fs::write(
        &target,
        format!("asset: orders-db\npostgres: {{host: 127.0.0.1, port: {late}, user: lifeboat, sslMode: disable, database: shop_copy, createDatabase: true}}\n"),
    )
    .unwrap();
    serve_late(late, pg.port, Duration::from_secs(4));
    let t0 = Instant::now();
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
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        t0.elapsed() >= Duration::from_secs(3),
        "it waited: {:?}",
        t0.elapsed()
    );
    assert!(stderr.contains("not serving yet"), "{stderr}");
    assert_eq!(
        postgres::query(&conn, "shop_copy", fingerprint).unwrap(),
        expected
    );
}

#[test]
fn a_redis_load_waits_for_a_target_that_starts_serving_after_it_began() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let redis = LocalRedis::start().unwrap();
    let c = redis.conn();
    c.run(0, &["SET", "s", "backed up"]).unwrap();
    c.run(0, &["RPUSH", "l", "a", "b"]).unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: shop}}\nspec:\n  schedule: '@hourly'\n  assets:\n    - name: sessions\n      redis: {{host: 127.0.0.1, port: {}}}\n  retention: {{maxAge: 7d}}\n  destination: {{volume: {{claimName: local}}}}\n",
            redis.port
        ),
    )
    .unwrap();
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
    c.run(0, &["SET", "s", "changed after the backup"]).unwrap();

    // No dataDir: a load over replication into the server at `late`, which answers 4 s later.
    let late = free_port().unwrap();
    let target = dir.path().join("target.yaml");
    std::fs::write(
        &target,
        format!("asset: sessions\nredis: {{host: 127.0.0.1, port: {late}}}\n"),
    )
    .unwrap();
    serve_late(late, redis.port, Duration::from_secs(4));
    let t0 = Instant::now();
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
        .arg(&target)
        .arg("--dir")
        .arg(&backups)
        .env("LIFEBOAT_POD_IP", "127.0.0.1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        t0.elapsed() >= Duration::from_secs(3),
        "it waited: {:?}",
        t0.elapsed()
    );
    assert!(stderr.contains("not serving yet"), "{stderr}");
    assert_eq!(c.run(0, &["GET", "s"]).unwrap(), "backed up");
    assert_eq!(c.run(0, &["LRANGE", "l", "0", "-1"]).unwrap(), "a\nb");
}
