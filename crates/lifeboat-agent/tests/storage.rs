//! A destination that fills up mid-backup (a real filesystem out of space: a small tmpfs) fails
//! as Storage, promptly, with nothing half-written left behind or listed. The dump tool keeps
//! writing into its pipe when the store fails: the agent must not wait on it forever.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lifeboat_agent::local::{LocalPostgres, LocalRedis};
use lifeboat_agent::postgres;
use lifeboat_api::agent_result::{AgentSummary, ErrorClass};

/// A tmpfs of `size` mounted on a new directory, unmounted on drop.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// `None` where mounting is not allowed (not root): the test says so and passes.
    fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size}"))
            .arg("lifeboat-test")
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk {
            path: at.to_path_buf(),
        })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Runs the agent, killing it (and failing the test) if it does not finish in time.
fn run_with_deadline(args: &[&std::ffi::OsStr], term: &Path) -> Output {
    let mut child = agent_command()
        .env_remove("LIFEBOAT_JOB")
        .env("LIFEBOAT_TERMINATION_LOG", term)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent hung on a full destination: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// Hex of a simple pseudo-random sequence: compresses about 2:1, never to nothing.
fn noise(seed: u64, len: usize) -> String {
    let mut x = seed | 1;
    let mut s = String::with_capacity(len);
    while s.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(&format!("{x:016x}"));
    }
    s.truncate(len);
    s
}

#[test]
fn a_full_destination_fails_as_storage_promptly_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let Some(disk) = SmallDisk::mount(&backups, "256k") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let term = dir.path().join("termination-log");

    let pg = LocalPostgres::start().unwrap();
    let conn = pg.conn();
    postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
    // About 8 MB of hex noise: far more than the disk, and far more than a pipe's buffer.
    postgres::query(
        &conn,
        "shop",
        "CREATE TABLE t (id int, v text); INSERT INTO t SELECT i, string_agg(md5(i::text || j::text), '') FROM generate_series(1, 2000) i, generate_series(1, 128) j GROUP BY i",
    )
    .unwrap();
    let redis = LocalRedis::start().unwrap();
    for i in 0..12 {
        redis
            .conn()
            .run(0, &["SET", &format!("k{i}"), &noise(i + 1, 100_000)])
            .unwrap();
    }
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: shop}}\nspec:\n  schedule: '@hourly'\n  assets:\n    - name: orders-db\n      postgres: {{host: 127.0.0.1, port: {}, user: lifeboat, sslMode: disable, databases: [shop]}}\n    - name: sessions\n      redis: {{host: 127.0.0.1, port: {}}}\n  retention: {{maxAge: 7d}}\n  destination: {{volume: {{claimName: local}}}}\n",
            pg.port, redis.port
        ),
    )
    .unwrap();

    for asset in ["orders-db", "sessions"] {
        let out = run_with_deadline(
            &[
                "backup".as_ref(),
                "--asset".as_ref(),
                asset.as_ref(),
                "--policy-file".as_ref(),
                policy.as_os_str(),
                "--dir".as_ref(),
                backups.as_os_str(),
            ],
            &term,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(ErrorClass::Storage.exit_code()),
            "{asset}: {stderr}"
        );
        assert!(
            stderr.to_lowercase().contains("no space left"),
            "{asset}: {stderr}"
        );
        let summary =
            AgentSummary::from_termination_message(&std::fs::read_to_string(&term).unwrap())
                .unwrap();
        assert_eq!(summary.error_class, Some(ErrorClass::Storage), "{asset}");
        // Nothing half-written stays on the disk.
        let leftovers: Vec<_> = walk(&backups);
        assert!(leftovers.is_empty(), "{asset}: {leftovers:?}");
    }
    let list = agent_command()
        .args(["list", "--policy", "shop", "--json", "--dir"])
        .arg(&backups)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "[]");
    drop(disk);
}

/// Regular files under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
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
