//! The canary check of the validation Job (what an operator restore or drill runs after the
//! restore), on a real PostgreSQL, run as the operator runs it: the backup Job writes a marker
//! into the source just before its backup; after the restore into a staging database the
//! validation Job reads the newest marker back and passes only when it is that backup's own,
//! reporting it (the drill's canary RPO). A target without the marker, or holding an older
//! backup's, fails with a reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use lifeboat_agent::local::LocalPostgres;
use lifeboat_agent::postgres;
use lifeboat_api::agent_result::AgentSummary;
use lifeboat_api::restore_request::canary_check_name;
use serde_json::{Value, json};

struct World {
    dir: tempfile::TempDir,
    pg: LocalPostgres,
}

impl World {
    fn asset(&self) -> Value {
        json!({"name": "orders-db", "canary": true,
               "postgres": {"host": "127.0.0.1", "port": self.pg.port, "user": "lifeboat",
                            "sslMode": "disable", "databases": ["shop"]}})
    }

    fn run(&self, verb: &[&str], document: &Value) -> (bool, AgentSummary) {
        let out = agent_command()
            .env("LIFEBOAT_JOB", document.to_string())
            .env("LIFEBOAT_BACKUP_DIR", self.dir.path().join("backups"))
            .env("LIFEBOAT_TERMINATION_LOG", self.dir.path().join("term"))
            .args(verb)
            .output()
            .unwrap();
        let summary = AgentSummary::from_termination_message(
            &std::fs::read_to_string(self.dir.path().join("term")).unwrap(),
        )
        .unwrap();
        (out.status.success(), summary)
    }

    fn backup(&self) -> String {
        let job = json!({"namespace": "n", "policy": "shop", "asset": self.asset(),
            "destination": {"volume": {"claimName": "backups"}},
            "compression": {"algorithm": "zstd", "level": 3}, "retention": {"keepLast": 50}});
        let (ok, s) = self.run(&["backup"], &job);
        assert!(ok, "{s:?}");
        s.backup_id.unwrap()
    }

    fn restore_doc(&self, backup: &str, database: &str) -> Value {
        json!({"namespace": "n", "policy": "shop", "backupId": backup, "asset": self.asset(),
            "target": {"asset": "orders-db", "postgres": {"host": "127.0.0.1", "port": self.pg.port, "user": "lifeboat",
                                    "sslMode": "disable", "database": database, "createDatabase": true}},
            "location": {"volume": {"claimName": "backups"}}, "options": {}})
    }

    /// The validation Job over `restored` (no declared check: the canary check alone).
    fn validate(&self, restored: Value) -> (bool, AgentSummary) {
        let job = json!({"namespace": "n", "checks": [], "timeout": "3s", "assets": [restored]});
        self.run(&["validate", "--execute"], &job)
    }
}

#[test]
fn the_restore_must_hold_its_backups_own_marker() {
    let w = World {
        dir: tempfile::tempdir().unwrap(),
        pg: LocalPostgres::start().unwrap(),
    };
    let conn = w.pg.conn();
    postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
    postgres::query(
        &conn,
        "shop",
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1)",
    )
    .unwrap();

    let first = w.backup();
    let (ok, s) = w.run(
        &["restore", "--execute"],
        &w.restore_doc(&first, "shop_drill"),
    );
    assert!(ok, "{s:?}");

    let (ok, s) = w.validate(w.restore_doc(&first, "shop_drill"));
    assert!(ok, "{s:?}");
    let check = &s.checks[0];
    assert_eq!(check.name, canary_check_name("orders-db"));
    assert!(check.passed, "{check:?}");
    let marker = check.canary.clone().expect("the marker read back");
    assert_eq!(marker.id, first);

    // A newer backup the target was never restored from: its marker is not there.
    let second = w.backup();
    let (ok, s) = w.validate(w.restore_doc(&second, "shop_drill"));
    assert!(!ok);
    let check = &s.checks[0];
    assert!(!check.passed && check.canary.is_none());
    assert!(
        check.message.contains(&format!("{first:?}")) && check.message.contains(&second),
        "{}",
        check.message
    );

    // A target that holds no restored data at all.
    postgres::query(&conn, "postgres", "CREATE DATABASE empty").unwrap();
    let (ok, s) = w.validate(w.restore_doc(&first, "empty"));
    assert!(!ok);
    assert!(
        s.checks[0].message.contains("holds no canary marker"),
        "{}",
        s.checks[0].message
    );
}

/// The same for a bucket: the marker is an object under `.lifeboat-canary/`, copied by the
/// restore like any other; a source holding nothing but markers is still an empty source.
#[test]
fn a_restored_bucket_holds_its_backups_marker_object() {
    use lifeboat_agent::local::LocalS3;
    let dir = tempfile::tempdir().unwrap();
    let s3 = LocalS3::start_with(|root| {
        std::fs::create_dir_all(root.join("source/media")).unwrap();
        std::fs::write(root.join("source/media/a.txt"), "a").unwrap();
        std::fs::create_dir_all(root.join("staging")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
    })
    .unwrap();
    let creds = dir.path().join("secrets/s3-creds");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("AWS_ACCESS_KEY_ID"), LocalS3::ACCESS_KEY).unwrap();
    std::fs::write(creds.join("AWS_SECRET_ACCESS_KEY"), LocalS3::SECRET_KEY).unwrap();
    let location = |bucket: &str, prefix: &str| {
        json!({"endpoint": s3.endpoint(), "bucket": bucket, "prefix": prefix,
               "forcePathStyle": true, "credentialsSecret": {"name": "s3-creds"}})
    };
    let run = |verb: &[&str], doc: &Value| {
        let out = agent_command()
            .env("LIFEBOAT_JOB", doc.to_string())
            .env("LIFEBOAT_BACKUP_DIR", dir.path().join("backups"))
            .env("LIFEBOAT_SECRETS_DIR", dir.path().join("secrets"))
            .env("LIFEBOAT_TERMINATION_LOG", dir.path().join("term"))
            .args(verb)
            .output()
            .unwrap();
        let s = AgentSummary::from_termination_message(
            &std::fs::read_to_string(dir.path().join("term")).unwrap(),
        )
        .unwrap();
        (out.status.success(), s)
    };
    let asset = |bucket: &str| json!({"name": "media", "canary": true, "objectStorage": location(bucket, "media")});
    let backup = |bucket: &str| {
        run(
            &["backup"],
            &json!({"namespace": "n", "policy": "shop", "asset": asset(bucket),
                "destination": {"volume": {"claimName": "backups"}},
                "compression": {"algorithm": "zstd", "level": 3}, "retention": {"keepLast": 50}}),
        )
    };

    let (ok, s) = backup("source");
    assert!(ok, "{s:?}");
    let id = s.backup_id.unwrap();
    let restored = json!({"namespace": "n", "policy": "shop", "backupId": id, "asset": asset("source"),
        "target": {"asset": "media", "objectStorage": location("staging", "media")},
        "location": {"volume": {"claimName": "backups"}}, "options": {}});
    let (ok, s) = run(&["restore", "--execute"], &restored);
    assert!(ok, "{s:?}");
    let (ok, s) = run(
        &["validate", "--execute"],
        &json!({"namespace": "n", "checks": [], "timeout": "3s", "assets": [restored]}),
    );
    assert!(ok, "{s:?}");
    assert_eq!(
        s.checks[0].canary.as_ref().map(|m| m.id.as_str()),
        Some(id.as_str())
    );
    assert!(s3.root().join("staging/media/a.txt").exists());

    // Nothing in the source but the marker the backup writes: refused as empty.
    let (ok, s) = backup("empty");
    assert!(!ok);
    assert_eq!(
        s.error_class,
        Some(lifeboat_api::agent_result::ErrorClass::NotFound)
    );
    assert!(
        s.message
            .as_deref()
            .unwrap_or_default()
            .contains("no objects but canary markers"),
        "{s:?}"
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
