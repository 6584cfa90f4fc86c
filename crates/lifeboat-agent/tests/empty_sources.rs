//! An empty PostgreSQL database or Redis server is refused as a backup source (NotFound), as an
//! empty bucket is, unless the asset says `allowEmpty: true`; Lifeboat's own canary markers do
//! not make a source non-empty. On real servers, through the backup Job's agent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use lifeboat_agent::local::{LocalPostgres, LocalRedis};
use lifeboat_agent::postgres;
use lifeboat_api::agent_result::{AgentSummary, ErrorClass};
use serde_json::{Value, json};

fn backup(dir: &std::path::Path, asset: Value) -> (bool, AgentSummary) {
    let term = dir.join("term");
    let job = json!({"namespace": "n", "policy": "p", "asset": asset,
        "destination": {"volume": {"claimName": "backups"}},
        "compression": {"algorithm": "zstd", "level": 3}, "retention": {"keepLast": 50}});
    let out = Command::new(env!("CARGO_BIN_EXE_lifeboat-agent"))
        .env("LIFEBOAT_JOB", job.to_string())
        .env(
            "LIFEBOAT_SIGNING_KEY_FILE",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/signing.key"),
        )
        .env("LIFEBOAT_NAMESPACE", "n")
        .env("LIFEBOAT_BACKUP_DIR", dir.join("backups"))
        .env("LIFEBOAT_TERMINATION_LOG", &term)
        .arg("backup")
        .output()
        .unwrap();
    let summary =
        AgentSummary::from_termination_message(&std::fs::read_to_string(&term).unwrap()).unwrap();
    (out.status.success(), summary)
}

fn refused_as_empty(ok: bool, s: &AgentSummary) {
    assert!(!ok, "{s:?}");
    assert_eq!(s.error_class, Some(ErrorClass::NotFound), "{s:?}");
    assert!(
        s.message
            .as_deref()
            .unwrap_or_default()
            .contains("allowEmpty"),
        "{s:?}"
    );
}

#[test]
fn an_empty_database_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let pg = LocalPostgres::start().unwrap();
    let conn = pg.conn();
    postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
    let asset = |allow_empty: bool| {
        json!({"name": "orders-db", "canary": true, "postgres": {"host": "127.0.0.1", "port": pg.port,
            "user": "lifeboat", "sslMode": "disable", "databases": ["shop"], "allowEmpty": allow_empty}})
    };
    // Empty but for the canary table the backup itself writes first.
    let (ok, s) = backup(dir.path(), asset(false));
    refused_as_empty(ok, &s);
    assert_eq!(
        postgres::query(&conn, "shop", "SELECT count(*) FROM lifeboat_canary").unwrap(),
        "1"
    );
    let (ok, s) = backup(dir.path(), asset(true));
    assert!(ok, "{s:?}");
    postgres::query(&conn, "shop", "CREATE TABLE orders (id int)").unwrap();
    let (ok, s) = backup(dir.path(), asset(false));
    assert!(ok, "{s:?}");
}

#[test]
fn an_empty_redis_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let redis = LocalRedis::start().unwrap();
    let asset = |allow_empty: bool, canary: bool| {
        json!({"name": "sessions", "canary": canary,
            "redis": {"host": "127.0.0.1", "port": redis.port, "allowEmpty": allow_empty}})
    };
    let (ok, s) = backup(dir.path(), asset(false, false));
    refused_as_empty(ok, &s);
    // The canary set alone is not data.
    let (ok, s) = backup(dir.path(), asset(false, true));
    refused_as_empty(ok, &s);
    assert_eq!(
        redis.conn().run(0, &["EXISTS", "lifeboat:canary"]).unwrap(),
        "1"
    );
    let (ok, s) = backup(dir.path(), asset(true, false));
    assert!(ok, "{s:?}");
    // Any key in any database counts.
    redis.conn().run(3, &["SET", "k", "v"]).unwrap();
    let (ok, s) = backup(dir.path(), asset(false, false));
    assert!(ok, "{s:?}");
}
