//! The playbook's Redis restore is "copy the RDB into the data directory, restart Redis". Two
//! ways that silently loses the restore on a real server: a running Redis with save points writes
//! its own dataset over `dump.rdb` when it is stopped (SIGTERM, what Kubernetes sends), and a Redis
//! with AOF on loads its append-only file at start and ignores `dump.rdb`. These tests restart
//! real servers the way a pod restart does and check which data comes back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lifeboat_agent::local::free_port;
use lifeboat_agent::redis::Conn;
use lifeboat_api::agent_result::ErrorClass;

/// A redis-server configured like a production one (save points on), stopped like a pod.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        let port = free_port().unwrap();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--dir")
            .arg(dir)
            .args([
                "--save",
                "3600 1 300 100 60 10000",
                "--dbfilename",
                "dump.rdb",
            ])
            .args(["--repl-diskless-sync-delay", "0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while s.conn().run(0, &["PING"]).ok().as_deref() != Some("PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    fn conn(&self) -> Conn {
        Conn {
            host: "127.0.0.1".into(),
            port: self.port,
            username: None,
            password: None,
            tls: false,
        }
    }

    /// SIGTERM, as the kubelet stops a container, and wait for the exit.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "redis-server did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn policy(dir: &Path, port: u16, data: &Path) -> PathBuf {
    let path = dir.join("policy.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: cache}}\nspec:\n  schedule: '@hourly'\n  assets:\n    - name: sessions\n      redis: {{host: 127.0.0.1, port: {port}, dataDir: {}}}\n  retention: {{maxAge: 7d}}\n  destination: {{volume: {{claimName: local}}}}\n",
            data.display()
        ),
    )
    .unwrap();
    path
}

fn agent(verb: &str, policy: &Path, backups: &Path, extra: &[&str]) -> Output {
    agent_command()
        .env_remove("LIFEBOAT_JOB")
        .env_remove("LIFEBOAT_TERMINATION_LOG")
        .arg(verb)
        .args(["--asset", "sessions", "--policy-file"])
        .arg(policy)
        .arg("--dir")
        .arg(backups)
        .args(extra)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_restore_into_a_running_redis_survives_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let backups = dir.path().join("backups");
    let server = Server::start(&data, &[]);
    let c = server.conn();
    c.run(0, &["SET", "balance", "100"]).unwrap();
    c.run(0, &["RPUSH", "orders", "a", "b"]).unwrap();
    let policy = policy(dir.path(), server.port, &data);
    let out = agent("backup", &policy, &backups, &[]);
    assert!(out.status.success(), "{}", text(&out));

    // Life goes on after the backup; then the incident, and a restore of the backup.
    c.run(0, &["SET", "balance", "-999"]).unwrap();
    c.run(0, &["SET", "corrupted", "yes"]).unwrap();
    let out = agent("restore", &policy, &backups, &["--execute"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("restart"), "{}", text(&out));

    // The pod restarts: SIGTERM, then a new server on the same data directory.
    server.stop();
    let restarted = Server::start(&data, &[]);
    let c = restarted.conn();
    assert_eq!(
        c.run(0, &["GET", "balance"]).unwrap(),
        "100",
        "the restored dataset, not the one Redis held when it stopped"
    );
    assert_eq!(c.run(0, &["EXISTS", "corrupted"]).unwrap(), "0");
    assert_eq!(c.run(0, &["LLEN", "orders"]).unwrap(), "2");
}

#[test]
fn a_redis_that_would_load_its_aof_instead_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let backups = dir.path().join("backups");
    let server = Server::start(&data, &["--appendonly", "yes"]);
    let c = server.conn();
    c.run(0, &["SET", "balance", "100"]).unwrap();
    let policy = policy(dir.path(), server.port, &data);
    let out = agent("backup", &policy, &backups, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let before: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let out = agent("restore", &policy, &backups, &["--execute"]);
    assert_eq!(
        out.status.code(),
        Some(ErrorClass::Config.exit_code()),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("appendonly"), "{}", text(&out));
    let after: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "the data directory is untouched");
    // The server still saves as configured: the refusal changed nothing.
    assert_eq!(
        c.run(0, &["CONFIG", "GET", "save"]).unwrap(),
        "save\n3600 1 300 100 60 10000"
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
