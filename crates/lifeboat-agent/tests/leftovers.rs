//! What a crashed or killed backup leaves behind (artifacts without metadata) is never listed,
//! never restored, and cleared by prune once it has been idle for a day; a backup still being
//! written, and other assets' committed backups in the same directory, are left alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use lifeboat_agent::local::LocalRedis;

fn agent(args: &[&std::ffi::OsStr]) -> Output {
    agent_command()
        .env_remove("LIFEBOAT_JOB")
        .env_remove("LIFEBOAT_TERMINATION_LOG")
        .args(args)
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

/// A file with a modification time in the past (`touch -d`).
fn old_file(path: &Path, ago: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"half a dump").unwrap();
    assert!(
        Command::new("touch")
            .arg("-d")
            .arg(ago)
            .arg(path)
            .status()
            .unwrap()
            .success()
    );
}

#[test]
fn prune_clears_stale_unfinished_backups_only() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let redis = LocalRedis::start().unwrap();
    redis.conn().run(0, &["SET", "k", "v"]).unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: shop}}\nspec:\n  schedule: '@hourly'\n  assets:\n    - name: sessions\n      redis: {{host: 127.0.0.1, port: {}}}\n  retention: {{maxAge: 30d}}\n  destination: {{volume: {{claimName: local}}}}\n",
            redis.port
        ),
    )
    .unwrap();
    let out = agent(&[
        "backup".as_ref(),
        "--policy-file".as_ref(),
        policy.as_os_str(),
        "--dir".as_ref(),
        backups.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", text(&out));

    let shop = backups.join("n/shop");
    // A run killed two days ago: an artifact and a temporary metadata file, no metadata.
    old_file(
        &shop.join("20261122T100000Z/sessions.rdb.zst"),
        "2 days ago",
    );
    old_file(
        &shop.join("20261122T100000Z/.sessions.metadata.json.tmp"),
        "2 days ago",
    );
    // A run still going: its first artifact is old, but another file was written just now.
    old_file(
        &shop.join("20261123T100000Z/sessions.rdb.zst"),
        "2 days ago",
    );
    std::fs::write(shop.join("20261123T100000Z/other.db2.pgdump.zst"), b"..").unwrap();
    // Another asset's file in a directory where this one died: only ours goes.
    old_file(
        &shop.join("20261121T100000Z/sessions.rdb.zst"),
        "3 days ago",
    );
    old_file(
        &shop.join("20261121T100000Z/other.metadata.json.keep"),
        "3 days ago",
    );

    let prune = |execute: bool| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "prune".as_ref(),
            "--policy-file".as_ref(),
            policy.as_os_str(),
            "--dir".as_ref(),
            backups.as_os_str(),
        ];
        if execute {
            args.push("--execute".as_ref());
        }
        agent(&args)
    };
    let dry = prune(false);
    let t = text(&dry);
    assert!(dry.status.success(), "{t}");
    assert!(
        t.contains("would delete 20261122T100000Z (unfinished"),
        "{t}"
    );
    assert!(
        t.contains("would delete 20261121T100000Z (unfinished"),
        "{t}"
    );
    assert!(!t.contains("20261123T100000Z"), "in progress: {t}");
    assert!(
        shop.join("20261122T100000Z/sessions.rdb.zst").exists(),
        "dry run"
    );

    let run = prune(true);
    assert!(run.status.success(), "{}", text(&run));
    assert!(!shop.join("20261122T100000Z").exists(), "stale run removed");
    assert!(!shop.join("20261121T100000Z/sessions.rdb.zst").exists());
    assert!(
        shop.join("20261121T100000Z/other.metadata.json.keep")
            .exists(),
        "another asset's files stay"
    );
    assert!(
        shop.join("20261123T100000Z/sessions.rdb.zst").exists(),
        "a backup in progress is never deleted"
    );

    // The committed backup is still there, listed and intact.
    let verify = agent(&[
        "verify".as_ref(),
        "--policy".as_ref(),
        "shop".as_ref(),
        "--dir".as_ref(),
        backups.as_os_str(),
    ]);
    assert!(verify.status.success(), "{}", text(&verify));
    assert_eq!(text(&verify).matches("ok ").count(), 1, "{}", text(&verify));
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
