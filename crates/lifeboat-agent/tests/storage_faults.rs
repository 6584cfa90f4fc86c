//! The backup destination failing: an S3 endpoint that refuses connections, one that answers
//! every request with 503, one that fails its first requests and then recovers, one that is slow,
//! and a read-only backup directory. A fault proxy in front of a real `rclone serve s3` injects
//! them. Each ends in a clear class (or, for transient faults, in a good backup after retries);
//! nothing is committed by a failed run and the backups made before it still verify.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lifeboat_agent::local::{LocalRedis, LocalS3};
use lifeboat_api::agent_result::ErrorClass;
use serde_json::json;

const AK: &str = LocalS3::ACCESS_KEY;
const SK: &str = LocalS3::SECRET_KEY;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Forward to the S3 server.
    Pass,
    /// Accept, then close at once (a crashed or restarting endpoint).
    Reset,
    /// Answer every request `503 Slow Down`.
    Unavailable,
    /// Answer the first `n` connections made after it is set with 503, then forward.
    FlakyFirst(u32),
    /// Forward, each response held back this long.
    Slow(Duration),
}

/// A TCP proxy that injects `mode` into the traffic to an S3 server.
struct FaultProxy {
    port: u16,
    mode: Arc<Mutex<Mode>>,
    failed: Arc<AtomicU32>,
    /// Connections since the mode was set.
    connections: Arc<AtomicU32>,
}

impl FaultProxy {
    fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(Mutex::new(Mode::Pass));
        let failed = Arc::new(AtomicU32::new(0));
        let connections = Arc::new(AtomicU32::new(0));
        let (m, f, count) = (mode.clone(), failed.clone(), connections.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let mode = *m.lock().unwrap();
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let f = f.clone();
                std::thread::spawn(move || match mode {
                    Mode::Reset => {
                        f.fetch_add(1, Ordering::SeqCst);
                        let _ = client.shutdown(Shutdown::Both);
                    }
                    Mode::Unavailable => unavailable(client, &f),
                    Mode::FlakyFirst(k) if n <= k => unavailable(client, &f),
                    Mode::FlakyFirst(_) | Mode::Pass => forward(client, upstream, None),
                    Mode::Slow(d) => forward(client, upstream, Some(d)),
                });
            }
        });
        FaultProxy {
            port,
            mode,
            failed,
            connections,
        }
    }

    fn set(&self, mode: Mode) {
        let mut m = self.mode.lock().unwrap();
        *m = mode;
        self.connections.store(0, Ordering::SeqCst);
    }
}

/// Reads request heads and answers each with 503 until the client goes.
fn unavailable(mut client: TcpStream, failed: &AtomicU32) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 65536];
    let mut seen = Vec::new();
    while let Ok(n) = client.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        if seen.windows(4).any(|w| w == b"\r\n\r\n") {
            failed.fetch_add(1, Ordering::SeqCst);
            let body = "<Error><Code>SlowDown</Code><Message>injected</Message></Error>";
            let _ = write!(
                client,
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
}

/// Copies both ways between the client and the S3 server; with `delay`, every chunk of the
/// response waits that long first.
fn forward(client: TcpStream, upstream: u16, delay: Option<Duration>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(Shutdown::Write);
    });
    let (mut s_read, mut c_write) = (server, client);
    let mut buf = [0u8; 65536];
    while let Ok(n) = s_read.read(&mut buf) {
        if n == 0 {
            break;
        }
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        if c_write.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = c_write.shutdown(Shutdown::Both);
    let _ = up.join();
}

struct Setup {
    dir: tempfile::TempDir,
    redis: LocalRedis,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("secrets/s3-creds");
    std::fs::create_dir_all(&s).unwrap();
    std::fs::write(s.join("AWS_ACCESS_KEY_ID"), AK).unwrap();
    std::fs::write(s.join("AWS_SECRET_ACCESS_KEY"), SK).unwrap();
    let redis = LocalRedis::start().unwrap();
    for i in 0..200 {
        redis
            .conn()
            .run(0, &["SET", &format!("session:{i}"), &format!("user-{i}")])
            .unwrap();
    }
    Setup { dir, redis }
}

impl Setup {
    fn asset(&self) -> serde_json::Value {
        json!({"name": "sessions", "redis": {"host": "127.0.0.1", "port": self.redis.port}})
    }

    fn policy_file(&self, destination: serde_json::Value) -> PathBuf {
        let doc = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "shop"},
            "spec": {"schedule": "@hourly", "assets": [self.asset()],
                     "retention": {"keepLast": 50}, "destination": destination}});
        let path = self.dir.path().join("policy.yaml");
        std::fs::write(&path, serde_norway::to_string(&doc).unwrap()).unwrap();
        path
    }

    fn agent(&self) -> Command {
        let mut cmd = agent_command();
        cmd.env_remove("LIFEBOAT_JOB")
            .env("LIFEBOAT_SECRETS_DIR", self.dir.path().join("secrets"))
            .env("LIFEBOAT_TERMINATION_LOG", self.dir.path().join("term"));
        cmd
    }

    fn backup(&self, destination: &serde_json::Value, dir: Option<&Path>) -> (Output, Duration) {
        let job = json!({"namespace": "n", "policy": "shop", "asset": self.asset(),
            "destination": destination,
            "compression": {"algorithm": "zstd", "level": 3}, "retention": {"keepLast": 50, "minKeep": 1}});
        let mut cmd = self.agent();
        cmd.env("LIFEBOAT_JOB", job.to_string()).arg("backup");
        if let Some(d) = dir {
            cmd.env("LIFEBOAT_BACKUP_DIR", d);
        }
        let t0 = Instant::now();
        let out = cmd.output().unwrap();
        (out, t0.elapsed())
    }

    fn listed(&self, policy_file: &Path, dir: Option<&Path>) -> usize {
        let mut cmd = self.agent();
        cmd.args(["list", "--json", "--policy-file"])
            .arg(policy_file);
        if let Some(d) = dir {
            cmd.arg("--dir").arg(d);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
            .unwrap()
            .len()
    }

    fn verify(&self, policy_file: &Path, dir: Option<&Path>) {
        let mut cmd = self.agent();
        cmd.args(["verify", "--policy-file"]).arg(policy_file);
        if let Some(d) = dir {
            cmd.arg("--dir").arg(d);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn s3_destination(port: u16) -> serde_json::Value {
    json!({"s3": {"endpoint": format!("http://127.0.0.1:{port}"), "bucket": "backups", "prefix": "lifeboat",
                  "forcePathStyle": true, "credentialsSecret": {"name": "s3-creds"}}})
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn s3_refusing_erroring_flaky_or_slow_never_commits_a_bad_backup() {
    let setup = setup();
    let s3 =
        LocalS3::start_with(|root| std::fs::create_dir_all(root.join("backups")).unwrap()).unwrap();
    let proxy = FaultProxy::start(s3.port);
    let destination = s3_destination(proxy.port);
    let direct = setup.policy_file(s3_destination(s3.port));

    // A good backup first, through the proxy.
    let (out, _) = setup.backup(&destination, None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(setup.listed(&direct, None), 1);
    let objects_before = std::fs::read_dir(s3.root().join("backups/lifeboat/n/shop"))
        .unwrap()
        .count();

    let mut report = Vec::new();
    for (mode, name) in [
        (Mode::Reset, "connections reset"),
        (Mode::Unavailable, "every request 503"),
    ] {
        proxy.set(mode);
        let before = proxy.failed.load(Ordering::SeqCst);
        let (out, took) = setup.backup(&destination, None);
        let refused = proxy.failed.load(Ordering::SeqCst) - before;
        assert_eq!(
            out.status.code(),
            Some(ErrorClass::Storage.exit_code()),
            "{name}: {}",
            stderr(&out)
        );
        assert!(refused > 1, "{name}: not retried ({refused} attempts)");
        report.push(format!(
            "{name}: Storage after {took:.1?}, {refused} attempts"
        ));
        proxy.set(Mode::Pass);
        // Nothing committed, nothing left in the bucket; the earlier backup still verifies.
        assert_eq!(setup.listed(&direct, None), 1, "{name}");
        assert_eq!(
            std::fs::read_dir(s3.root().join("backups/lifeboat/n/shop"))
                .unwrap()
                .count(),
            objects_before,
            "{name}: something was left in the bucket"
        );
        setup.verify(&direct, None);
    }

    // Transient: the first connections fail, the retries succeed.
    proxy.set(Mode::FlakyFirst(2));
    let before = proxy.failed.load(Ordering::SeqCst);
    let (out, took) = setup.backup(&destination, None);
    assert!(out.status.success(), "flaky: {}", stderr(&out));
    let refused = proxy.failed.load(Ordering::SeqCst) - before;
    assert!(refused >= 1, "the fault was not injected");
    report.push(format!(
        "first 2 connections 503: committed after {took:.1?} ({refused} retried)"
    ));
    assert_eq!(setup.listed(&direct, None), 2);

    // Slow: every response chunk held back 300 ms; slower, still a good backup.
    proxy.set(Mode::Slow(Duration::from_millis(300)));
    let (out, took) = setup.backup(&destination, None);
    assert!(out.status.success(), "slow: {}", stderr(&out));
    report.push(format!(
        "responses delayed 300 ms: committed after {took:.1?}"
    ));
    proxy.set(Mode::Pass);
    assert_eq!(setup.listed(&direct, None), 3);
    setup.verify(&direct, None);
    eprintln!("{}", report.join("\n"));
}

/// A bind mount of `dir` onto itself, read-only; `None` where mounting needs root we lack.
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn mount(dir: &Path) -> Option<ReadOnly> {
        let ok = |args: &[&str]| {
            Command::new("mount")
                .args(args)
                .arg(dir)
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ok(&["--bind"]) {
            return None;
        }
        let guard = ReadOnly(dir.to_path_buf());
        ok(&["-o", "remount,ro,bind"]).then_some(guard)
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_backup_directory_fails_as_storage_and_keeps_its_backups() {
    let setup = setup();
    let backups = setup.dir.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let destination = json!({"volume": {"claimName": "backups"}});
    let policy = setup.policy_file(destination.clone());
    let (out, _) = setup.backup(&destination, Some(&backups));
    assert!(out.status.success(), "{}", stderr(&out));
    let Some(ro) = ReadOnly::mount(&backups) else {
        eprintln!("skipped: cannot bind-mount read-only here (needs root)");
        return;
    };
    let (out, _) = setup.backup(&destination, Some(&backups));
    assert_eq!(
        out.status.code(),
        Some(ErrorClass::Storage.exit_code()),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).to_lowercase().contains("read-only"),
        "{}",
        stderr(&out)
    );
    assert_eq!(setup.listed(&policy, Some(&backups)), 1);
    setup.verify(&policy, Some(&backups));
    // prune has nothing to do and says so; it does not fail on a read-only disk it need not touch.
    let out = setup
        .agent()
        .args(["prune", "--execute", "--policy-file"])
        .arg(&policy)
        .arg("--dir")
        .arg(&backups)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    drop(ro);
    let (out, _) = setup.backup(&destination, Some(&backups));
    assert!(out.status.success(), "writable again: {}", stderr(&out));
    assert_eq!(setup.listed(&policy, Some(&backups)), 2);
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
