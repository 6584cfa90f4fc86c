//! Identifiers are data: a database name reaches pg_dump and pg_restore through PGDATABASE
//! (taken literally) and `CREATE DATABASE` as a quoted identifier, so it is never a connection
//! string or an option; and a job document that skipped admission is refused by the agent,
//! with the class InvalidConfig, before any connection opens.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use lifeboat_agent::local::LocalPostgres;
use lifeboat_agent::postgres;
use lifeboat_agent::stream::Stored;
use lifeboat_api::agent_result::{AgentSummary, ErrorClass};
use serde_json::{Value, json};

/// Stores what the dump wrote into `file`.
fn into_file(
    file: &std::path::Path,
) -> impl FnMut(&mut dyn std::io::Read) -> lifeboat_agent::error::Result<Stored> + '_ {
    move |r| {
        let mut f = std::fs::File::create(file).unwrap();
        let n = std::io::copy(r, &mut f).unwrap();
        Ok(Stored {
            raw_bytes: n,
            stored_bytes: n,
            sha256: String::new(),
        })
    }
}

#[test]
fn database_names_are_looked_up_literally_never_expanded() {
    let pg = LocalPostgres::start().unwrap();
    let conn = pg.conn();
    postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
    postgres::query(
        &conn,
        "shop",
        "CREATE TABLE t (v int); INSERT INTO t VALUES (7)",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("shop.pgdump");

    // As a --dbname value, each of these would connect to the database `postgres` (the second
    // on a host and port of its own choosing) and dump it.
    for name in [
        "dbname=postgres",
        &format!("host=127.0.0.1 port={} dbname=postgres", pg.port),
        "postgresql:///postgres",
    ] {
        let e = postgres::backup(&conn, name, &[], &mut into_file(&dump)).unwrap_err();
        assert_eq!(e.class, ErrorClass::NotFound, "{name}: {e}");
        assert!(
            e.message
                .contains(&format!("database \"{name}\" does not exist")),
            "{name}: {e}"
        );
    }

    postgres::backup(&conn, "shop", &[], &mut into_file(&dump)).unwrap();
    let e = postgres::restore(&conn, &dump, "dbname=shop", false, 2, false).unwrap_err();
    assert_eq!(e.class, ErrorClass::NotFound, "{e}");

    // A name that starts with '-' is a database, not an option: created as a quoted
    // identifier and restored into through PGDATABASE.
    postgres::restore(&conn, &dump, "-shop copy", true, 2, false).unwrap();
    assert_eq!(
        postgres::query(&conn, "-shop copy", "SELECT v FROM t").unwrap(),
        "7"
    );
}

/// A loopback listener that counts the connections it accepts (and answers none).
fn listener() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    (port, n)
}

fn run(verb: &[&str], document: &Value) -> (i32, AgentSummary) {
    let dir = tempfile::tempdir().unwrap();
    let term = dir.path().join("term");
    let out = Command::new(env!("CARGO_BIN_EXE_lifeboat-agent"))
        .env("LIFEBOAT_JOB", document.to_string())
        .env(
            "LIFEBOAT_SIGNING_KEY_FILE",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/signing.key"),
        )
        .env("LIFEBOAT_NAMESPACE", "n")
        .env("LIFEBOAT_BACKUP_DIR", dir.path().join("backups"))
        .env("LIFEBOAT_TERMINATION_LOG", &term)
        .args(verb)
        .output()
        .unwrap();
    let summary =
        AgentSummary::from_termination_message(&std::fs::read_to_string(&term).unwrap()).unwrap();
    (out.status.code().unwrap(), summary)
}

#[test]
fn a_job_document_with_a_hostile_identifier_is_refused_before_any_connection() {
    let (port, accepted) = listener();
    let pg = |databases: Value, user: &str, host: &str| {
        json!({"name": "db", "postgres": {"host": host, "port": port, "user": user,
            "sslMode": "disable", "databases": databases}})
    };
    let backup = |asset: Value| {
        json!({"namespace": "n", "policy": "p", "asset": asset,
            "destination": {"volume": {"claimName": "backups"}},
            "compression": {"algorithm": "zstd", "level": 3}, "retention": {"keepLast": 5}})
    };
    let good = pg(json!(["shop"]), "app", "127.0.0.1");
    let cases = [
        (
            "database",
            backup(pg(
                json!(["host=127.0.0.1 dbname=payroll"]),
                "app",
                "127.0.0.1",
            )),
        ),
        (
            "database",
            backup(pg(json!(["--help"]), "app", "127.0.0.1")),
        ),
        ("user", backup(pg(json!(["shop"]), "-c", "127.0.0.1"))),
        (
            "host",
            backup(pg(json!(["shop"]), "app", "/var/run/postgresql")),
        ),
        (
            "host",
            backup(pg(json!(["shop"]), "app", "127.0.0.1 dbname=payroll")),
        ),
        (
            "dump pattern",
            backup({
                let mut a = good.clone();
                a["postgres"]["dumpOptions"] = json!({"excludeTables": ["x\n--file=/tmp/x"]});
                a
            }),
        ),
        (
            "Redis user",
            backup(
                json!({"name": "r", "redis": {"host": "127.0.0.1", "port": port, "username": "--help"}}),
            ),
        ),
        (
            "S3 prefix",
            json!({"namespace": "n", "policy": "p", "asset": good,
                "destination": {"s3": {"endpoint": format!("http://127.0.0.1:{port}"), "bucket": "backups",
                    "prefix": "../other-team", "credentialsSecret": {"name": "s3"}}},
                "compression": {"algorithm": "zstd", "level": 3}, "retention": {"keepLast": 5}}),
        ),
    ];
    for (kind, document) in &cases {
        let (code, s) = run(&["backup"], document);
        assert_eq!(code, 3, "{kind}: {s:?}");
        assert_eq!(s.error_class, Some(ErrorClass::Config), "{kind}");
        assert!(
            s.message.as_deref().unwrap_or_default().contains(kind),
            "{kind}: {s:?}"
        );
    }
    // A restore into a hostile database, a check of one.
    let restore = json!({"namespace": "n", "policy": "p", "backupId": "20261124T100000Z", "asset": good,
        "target": {"asset": "db", "postgres": {"host": "127.0.0.1", "port": port, "user": "app",
            "database": "postgresql://127.0.0.1/payroll", "createDatabase": true}},
        "location": {"volume": {"claimName": "backups"}}, "options": {}});
    let (code, s) = run(&["restore", "--execute"], &restore);
    assert_eq!(
        (code, s.error_class),
        (3, Some(ErrorClass::Config)),
        "{s:?}"
    );
    let validate = json!({"namespace": "n", "timeout": "2s", "assets": [],
        "checks": [{"name": "c", "sql": {"asset": "db", "database": "a/b", "query": "SELECT 1", "expect": "1"}}]});
    let (code, s) = run(&["validate", "--execute"], &validate);
    assert_eq!(
        (code, s.error_class),
        (3, Some(ErrorClass::Config)),
        "{s:?}"
    );

    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "a connection was opened"
    );
}
