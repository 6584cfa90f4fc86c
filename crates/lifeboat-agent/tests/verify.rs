//! `verify` recomputes what is stored against the metadata: a clean backup passes, a flipped
//! byte or a truncation fails as Integrity (exit 8) naming the artifact, an unknown backup id is
//! NotFound; an unreachable Redis fails as SourceUnreachable and commits nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use lifeboat_agent::local::LocalRedis;
use lifeboat_api::agent_result::ErrorClass;

fn agent(args: &[&str], dir: &Path) -> Output {
    agent_command()
        .env_remove("LIFEBOAT_JOB")
        .env_remove("LIFEBOAT_TERMINATION_LOG")
        .args(args)
        .arg("--dir")
        .arg(dir)
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

fn policy(dir: &Path, port: u16) -> String {
    let path = dir.join(format!("policy-{port}.yaml"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: shop}}\nspec:\n  schedule: '@hourly'\n  assets:\n    - name: sessions\n      redis: {{host: 127.0.0.1, port: {port}}}\n  retention: {{maxAge: 30d}}\n  destination: {{volume: {{claimName: local}}}}\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn verify_catches_damage_and_unknown_ids() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let redis = LocalRedis::start().unwrap();
    for i in 0..200 {
        redis
            .conn()
            .run(0, &["SET", &format!("key:{i}"), &format!("value {i}")])
            .unwrap();
    }
    let p = policy(dir.path(), redis.port);
    let out = agent(&["backup", "--policy-file", &p], &backups);
    assert!(out.status.success(), "{}", text(&out));
    let ok = agent(&["verify", "--policy", "shop"], &backups);
    assert!(ok.status.success(), "{}", text(&ok));

    let id_dir = std::fs::read_dir(backups.join("n/shop"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let artifact = id_dir.join("sessions.rdb.zst");
    let pristine = std::fs::read(&artifact).unwrap();
    let mut flipped = pristine.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    for (damage, bytes, word) in [
        ("flipped byte", flipped, "corrupt"),
        (
            "truncated",
            pristine[..pristine.len() - 1].to_vec(),
            "truncated",
        ),
    ] {
        std::fs::write(&artifact, bytes).unwrap();
        let out = agent(&["verify", "--policy", "shop"], &backups);
        assert_eq!(
            out.status.code(),
            Some(ErrorClass::Integrity.exit_code()),
            "{damage}: {}",
            text(&out)
        );
        assert!(
            text(&out).contains(word) && text(&out).contains("sessions.rdb.zst"),
            "{damage}: {}",
            text(&out)
        );
    }
    std::fs::write(&artifact, &pristine).unwrap();
    let out = agent(
        &["verify", "--policy", "shop", "--backup", "20200101T000000Z"],
        &backups,
    );
    assert_eq!(
        out.status.code(),
        Some(ErrorClass::NotFound.exit_code()),
        "{}",
        text(&out)
    );

    // An unreachable source: exit 4, and still exactly one backup listed.
    let unreachable = policy(dir.path(), lifeboat_agent::local::free_port().unwrap());
    let out = agent(&["backup", "--policy-file", &unreachable], &backups);
    assert_eq!(
        out.status.code(),
        Some(ErrorClass::SourceUnreachable.exit_code()),
        "{}",
        text(&out)
    );
    let list = agent(&["list", "--policy", "shop", "--json"], &backups);
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(
        agent(&["verify", "--policy", "shop"], &backups)
            .status
            .success()
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
