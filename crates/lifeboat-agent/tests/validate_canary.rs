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
        let out = Command::new(env!("CARGO_BIN_EXE_lifeboat-agent"))
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
