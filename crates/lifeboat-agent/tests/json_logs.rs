//! The agent's logs as a Job's pod writes them, with the operator's switch (`LIFEBOAT_LOG_JSON`):
//! a backup of a real Redis behind an ACL password, then the same with a wrong password; every
//! line on stderr parses as a JSON object, the outcome is an event with its fields, and the
//! password is in no line. Without the switch the same run logs text.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use lifeboat_agent::local::LocalRedis;
use serde_json::Value;

const PASSWORD: &str = "json-logs-Pa55:word";

fn backup(dir: &Path, port: u16, json: bool) -> Output {
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: shop}}\nspec:\n  schedule: '@hourly'\n  assets:\n    - name: sessions\n      redis: {{host: 127.0.0.1, port: {port}, username: backup, passwordSecret: {{name: redis-creds, key: password}}}}\n  retention: {{maxAge: 7d}}\n  destination: {{volume: {{claimName: local}}}}\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lifeboat-agent"));
    cmd.env(
        "LIFEBOAT_SIGNING_KEY_FILE",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/signing.key"),
    )
    .env("LIFEBOAT_NAMESPACE", "n")
    .env("LIFEBOAT_TERMINATION_LOG", dir.join("term"))
    .env_remove("LIFEBOAT_JOB")
    .env_remove("RUST_LOG")
    .args(["backup", "--asset", "sessions", "--secrets-dir"])
    .arg(dir.join("secrets"))
    .arg("--policy-file")
    .arg(&policy)
    .arg("--dir")
    .arg(dir.join("backups"));
    if json {
        cmd.env("LIFEBOAT_LOG_JSON", "true");
    } else {
        cmd.env_remove("LIFEBOAT_LOG_JSON");
    }
    cmd.output().unwrap()
}

/// Every stderr line as a JSON object (a line that is not one fails the test).
fn json_lines(out: &Output) -> Vec<Value> {
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    assert!(
        !stderr.contains(PASSWORD),
        "a password in the log: {stderr}"
    );
    stderr
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
            assert!(v.is_object() && v["timestamp"].is_string(), "{l}");
            v
        })
        .collect()
}

fn set_password(dir: &Path, password: &str) {
    let secret = dir.join("secrets/redis-creds");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("password"), password).unwrap();
}

#[test]
fn a_backup_logs_json_lines_with_its_outcome_and_no_secret() {
    let redis = LocalRedis::start().unwrap();
    let r = redis.conn();
    r.run(0, &["SET", "k", "v"]).unwrap();
    let acl = format!(">{PASSWORD}");
    r.run(
        0,
        &["ACL", "SETUSER", "backup", "on", &acl, "~*", "&*", "+@all"],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();

    set_password(dir.path(), PASSWORD);
    let out = backup(dir.path(), redis.port, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = json_lines(&out);
    let done = events
        .iter()
        .find(|e| e["fields"]["message"] == "done")
        .unwrap_or_else(|| panic!("no outcome event: {events:?}"));
    assert_eq!(done["level"], "INFO");
    assert_eq!(done["fields"]["verb"], "Backup");
    assert_eq!(done["fields"]["asset"], "sessions");
    assert!(done["fields"]["backup_id"].is_string(), "{done}");

    // A wrong password: the failure is an ERROR event with its class, and no password.
    set_password(dir.path(), "wrong-json-logs-password");
    let out = backup(dir.path(), redis.port, true);
    assert!(!out.status.success());
    let events = json_lines(&out);
    let failed = events
        .iter()
        .find(|e| e["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no error event: {events:?}"));
    assert_eq!(failed["fields"]["class"], "AuthFailed", "{failed}");
    assert!(
        !failed.to_string().contains("wrong-json-logs-password"),
        "{failed}"
    );

    // Without the switch: text for people, not JSON.
    set_password(dir.path(), PASSWORD);
    let out = backup(dir.path(), redis.port, false);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().find(|l| l.contains("done")).unwrap();
    assert!(serde_json::from_str::<Value>(line).is_err(), "{line}");
    assert!(line.contains("INFO") && !line.contains('\u{1b}'), "{line}");
}
