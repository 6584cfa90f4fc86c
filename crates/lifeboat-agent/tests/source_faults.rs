//! Faults of the source during a backup: PostgreSQL restarted while pg_dump streams, and a Redis
//! that serves a corrupt or truncated RDB (a fake source speaking the replication handshake that
//! `redis-cli --rdb` uses, serving bytes taken from a real RDB and then damaged). Neither may ever
//! be committed as a good backup; the next backup of a healthy source must succeed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lifeboat_agent::local::{LocalPostgres, LocalRedis, free_port};
use lifeboat_agent::postgres;
use lifeboat_api::agent_result::{AgentSummary, ErrorClass};

fn agent() -> Command {
    let mut cmd = agent_command();
    cmd.env_remove("LIFEBOAT_JOB");
    cmd
}

fn policy_file(dir: &Path, asset: &str) -> PathBuf {
    let path = dir.join("policy.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: shop}}\nspec:\n  schedule: '@hourly'\n  assets:\n    - {asset}\n  retention: {{maxAge: 7d}}\n  destination: {{volume: {{claimName: local}}}}\n"
        ),
    )
    .unwrap();
    path
}

fn backup(asset: &str, policy: &Path, dir: &Path, term: &Path) -> Command {
    let mut cmd = agent();
    cmd.env("LIFEBOAT_TERMINATION_LOG", term)
        .args(["backup", "--asset", asset, "--policy-file"])
        .arg(policy)
        .arg("--dir")
        .arg(dir);
    cmd
}

fn listed(dir: &Path) -> Vec<serde_json::Value> {
    let out = agent()
        .args(["list", "--policy", "shop", "--json", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Regular files under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn summary(term: &Path) -> AgentSummary {
    AgentSummary::from_termination_message(&std::fs::read_to_string(term).unwrap()).unwrap()
}

/// The failed run left no backup and no file; the class is one of `allowed`.
fn assert_refused(out: &Output, term: &Path, backups: &Path, allowed: &[ErrorClass]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "committed: {stderr}");
    let s = summary(term);
    let class = s.error_class.unwrap();
    assert!(allowed.contains(&class), "class {class:?}: {stderr}");
    assert_eq!(out.status.code(), Some(class.exit_code()));
    assert!(listed(backups).is_empty(), "a backup was listed");
    assert!(
        files(backups).is_empty(),
        "left behind: {:?}",
        files(backups)
    );
}

#[test]
fn postgres_restarted_mid_dump_is_never_committed_and_the_next_backup_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let term = dir.path().join("termination-log");
    let mut pg = LocalPostgres::start().unwrap();
    let conn = pg.conn();
    postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
    // About 130 MB: pg_dump streams for seconds, long enough to be cut in the middle.
    postgres::query(
        &conn,
        "shop",
        "CREATE TABLE t (id int, v text); INSERT INTO t SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, 1000000) i",
    )
    .unwrap();
    let policy = policy_file(
        dir.path(),
        &format!(
            "{{name: orders-db, postgres: {{host: 127.0.0.1, port: {}, user: lifeboat, sslMode: disable, databases: [shop]}}}}",
            pg.port
        ),
    );

    let mut child = backup("orders-db", &policy, &backups, &term)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Restart once the dump has visibly started streaming into the artifact.
    let deadline = Instant::now() + Duration::from_secs(60);
    let streamed = loop {
        let size: u64 = files(&backups)
            .iter()
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum();
        if size > 256 * 1024 {
            break size;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the dump ended before it could be cut"
        );
        assert!(Instant::now() < deadline, "the dump never started");
        std::thread::sleep(Duration::from_millis(10));
    };
    pg.restart().unwrap();
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "restarted after {streamed} bytes; the agent said ({:?}): {}",
        summary(&term).error_class,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    assert_refused(&out, &term, &backups, &[ErrorClass::SourceUnreachable]);

    // The source is back: the next run succeeds and verifies.
    let out = backup("orders-db", &policy, &backups, &term)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(listed(&backups).len(), 1);
    let verify = agent()
        .args(["verify", "--policy", "shop", "--dir"])
        .arg(&backups)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// A fake Redis master: answers the agent's `PING` with `+PONG`, the `REPLCONF`s of
/// `redis-cli --rdb` with `+OK` and `SYNC` with `payload` as the RDB bulk, for `connections`
/// connections (a backup makes two: the PING, then redis-cli's).
fn fake_master(payload: Vec<u8>, connections: usize) -> u16 {
    let port = free_port().unwrap();
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok((mut c, _)) = listener.accept() else {
                return;
            };
            let mut seen = Vec::new();
            let mut answered = 0;
            let mut buf = [0u8; 4096];
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen).into_owned();
                if text.ends_with("PING\r\n") {
                    c.write_all(b"+PONG\r\n").unwrap();
                }
                let replconfs = text.matches("REPLCONF").count();
                for _ in answered..replconfs {
                    c.write_all(b"+OK\r\n").unwrap();
                }
                answered = replconfs;
                if text.contains("SYNC\r\n") {
                    let _ = c.write_all(format!("${}\r\n", payload.len()).as_bytes());
                    let _ = c.write_all(&payload);
                    break;
                }
            }
        }
    });
    port
}

#[test]
fn a_corrupt_or_truncated_rdb_from_the_source_is_never_committed() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let term = dir.path().join("termination-log");
    // A real RDB to damage.
    let redis = LocalRedis::start().unwrap();
    for i in 0..500 {
        redis
            .conn()
            .run(0, &["SET", &format!("session:{i}"), &format!("user-{i}")])
            .unwrap();
    }
    let real = dir.path().join("real.rdb");
    let status = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "--rdb"])
        .arg(&real)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let rdb = std::fs::read(&real).unwrap();
    assert!(rdb.starts_with(b"REDIS"), "not an RDB");

    let mut flipped = rdb.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x55;
    let truncated = rdb[..rdb.len() * 2 / 3].to_vec();
    let mut wrong_version = rdb.clone();
    wrong_version[5..9].copy_from_slice(b"0099");
    for (case, payload) in [
        ("a flipped byte", flipped),
        ("a truncated tail", truncated),
        ("an unknown RDB version", wrong_version),
    ] {
        let port = fake_master(payload, 2);
        let policy = policy_file(
            dir.path(),
            &format!(
                "{{name: sessions, redis: {{host: 127.0.0.1, port: {port}, allowEmpty: true}}}}"
            ),
        );
        let out = backup("sessions", &policy, &backups, &term)
            .output()
            .unwrap();
        eprintln!(
            "{case}: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        assert_refused(&out, &term, &backups, &[ErrorClass::Integrity]);
    }

    // The same fake source serving the undamaged RDB is committed: the refusals were the damage.
    let port = fake_master(rdb, 2);
    let policy = policy_file(
        dir.path(),
        &format!("{{name: sessions, redis: {{host: 127.0.0.1, port: {port}, allowEmpty: true}}}}"),
    );
    let out = backup("sessions", &policy, &backups, &term)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(listed(&backups).len(), 1);
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
