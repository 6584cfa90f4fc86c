//! Verification-aware retention on real backups: `verify --record` marks a backup as proven
//! readable, and `prune` keeps an asset's newest verified backup even when every rule would delete
//! it; once a newer backup is verified, the older one is ordinary again. Nothing else changes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use lifeboat_agent::local::LocalRedis;

fn agent(dir: &Path) -> Command {
    let mut c = agent_command();
    c.env_remove("LIFEBOAT_JOB")
        .env_remove("LIFEBOAT_TERMINATION_LOG")
        .env("LIFEBOAT_BACKUP_DIR", dir.join("backups"));
    c
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ids(dir: &Path, policy: &Path) -> Vec<String> {
    let out = ok(agent(dir)
        .args(["list", "--json", "--policy-file"])
        .arg(policy)
        .output()
        .unwrap());
    serde_json::from_str::<Vec<serde_json::Value>>(&out)
        .unwrap()
        .iter()
        .map(|m| m["backupId"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_newest_verified_backup_outlives_every_rule_until_a_newer_one_is_verified() {
    let dir = tempfile::tempdir().unwrap();
    let redis = LocalRedis::start().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: shop}}\nspec:\n  schedule: '@hourly'\n  assets:\n    - {{name: sessions, redis: {{host: 127.0.0.1, port: {}, allowEmpty: true}}}}\n  retention: {{keepLast: 1}}\n  destination: {{volume: {{claimName: local}}}}\n",
            redis.port
        ),
    )
    .unwrap();
    for i in 0..4 {
        redis.conn().run(0, &["SET", "k", &i.to_string()]).unwrap();
        ok(agent(dir.path())
            .args(["backup", "--asset", "sessions", "--policy-file"])
            .arg(&policy)
            .output()
            .unwrap());
    }
    let all = ids(dir.path(), &policy);
    assert_eq!(all.len(), 4);

    // The oldest is proven readable; keepLast: 1 would delete it with the two in between.
    let out = ok(agent(dir.path())
        .args([
            "verify", "--record", "--policy", "shop", "--backup", &all[0],
        ])
        .output()
        .unwrap());
    assert!(out.contains("recorded as verified"), "{out}");
    let listing = ok(agent(dir.path())
        .args(["list", "--policy", "shop"])
        .output()
        .unwrap());
    let oldest_line = listing.lines().find(|l| l.starts_with(&all[0])).unwrap();
    assert!(oldest_line.contains("(Checksums)"), "{listing}");
    let prune = |dir: &Path| {
        ok(agent(dir)
            .args(["prune", "--execute", "--allow-mass-delete", "--policy-file"])
            .arg(&policy)
            .output()
            .unwrap())
    };
    prune(dir.path());
    assert_eq!(
        ids(dir.path(), &policy),
        [all[0].clone(), all[3].clone()],
        "the newest (keepLast) and the newest verified are kept"
    );

    // A newer backup is verified: the old one is no longer the newest verified, and goes.
    ok(agent(dir.path())
        .args([
            "verify", "--record", "--policy", "shop", "--backup", &all[3],
        ])
        .output()
        .unwrap());
    prune(dir.path());
    assert_eq!(ids(dir.path(), &policy), [all[3].clone()]);
    // Its verification record went with it: nothing of the deleted backup is left.
    assert!(!dir.path().join("backups/n/shop").join(&all[0]).exists());
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
