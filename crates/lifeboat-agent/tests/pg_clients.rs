//! The PostgreSQL client is the server's major, on a real server: a tree of clients laid out as
//! the agent image lays them out (`<root>/<major>/bin`, `LIFEBOAT_PG_ROOT`) holds this machine's
//! real client at the server's major and, around it, programs that fail and leave a mark if they
//! run. A backup and a restore through the Job's agent both succeed, so neither ran the wrong
//! major; with only an older client in the tree, the backup is refused before any program runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::store::{Kind, World, text};
use lifeboat_agent::local::LocalPostgres;
use lifeboat_agent::{postgres, tools};
use lifeboat_api::agent_result::ErrorClass;
use serde_json::{Value, json};

/// Installs `program` at `<root>/<major>/bin/<name>`.
fn install(root: &Path, major: u32, name: &str, program: &Path) {
    let bin = root.join(major.to_string()).join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(program, bin.join(name)).unwrap();
}

/// A program that records that it ran (in `marks`) and fails.
fn wrong_client(dir: &Path, marks: &Path) -> PathBuf {
    let path = dir.join("wrong-client");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"$0\" >> {}\necho 'the wrong client ran' >&2\nexit 3\n",
            marks.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn asset(pg: &LocalPostgres) -> Value {
    json!({"name": "orders", "postgres": {"host": "127.0.0.1", "port": pg.port,
        "user": "lifeboat", "sslMode": "disable", "databases": ["shop"]}})
}

#[test]
fn the_client_of_the_server_s_major_dumps_and_restores_and_an_older_one_is_refused() {
    let w = World::new();
    let pg = LocalPostgres::start().unwrap();
    let conn = pg.conn();
    postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
    postgres::query(
        &conn,
        "shop",
        "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .unwrap();
    let major = postgres::server_major(&conn, "postgres").unwrap();
    assert!(major >= 10, "server major {major}");

    let tree = tempfile::tempdir().unwrap();
    let marks = tree.path().join("marks");
    let wrong = wrong_client(tree.path(), &marks);
    let root = tree.path().join("clients");
    for name in ["pg_dump", "pg_restore"] {
        // Debian's own binary, not PATH's pg_wrapper, which would pick a major by itself.
        let own = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin/{name}"));
        let real = if own.is_file() {
            own
        } else {
            tools::find(name).unwrap()
        };
        install(&root, major, name, &real);
        install(&root, major - 1, name, &wrong);
        install(&root, major + 1, name, &wrong);
    }
    let env = [("LIFEBOAT_PG_ROOT", root.to_str().unwrap())];

    let doc = json!({"namespace": "n", "policy": "shop", "asset": asset(&pg),
        "destination": w.destination(Kind::Dir), "compression": {"algorithm": "zstd", "level": 3},
        "retention": {"keepLast": 5}});
    let (out, summary) = w.job_with(&doc, &["backup"], &env);
    assert!(out.status.success(), "{}", text(&out));
    let id = summary.unwrap().backup_id.unwrap();

    let restore = json!({"namespace": "n", "policy": "shop", "backupId": id, "asset": asset(&pg),
        "target": {"asset": "orders", "postgres": {"host": "127.0.0.1", "port": pg.port,
            "user": "lifeboat", "sslMode": "disable", "database": "copy", "createDatabase": true}},
        "location": w.destination(Kind::Dir), "options": {}});
    let (out, _) = w.job_with(&restore, &["restore", "--execute"], &env);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        postgres::query(&conn, "copy", "SELECT sum(v) FROM t").unwrap(),
        "5050"
    );
    assert!(
        !marks.exists(),
        "a client of another major ran: {}",
        std::fs::read_to_string(&marks).unwrap_or_default()
    );

    // Only an older client: pg_dump would refuse the server anyway; the agent says so first.
    let older = tree.path().join("older");
    install(&older, major - 1, "pg_dump", &wrong);
    let (out, summary) = w.job_with(
        &doc,
        &["backup"],
        &[("LIFEBOAT_PG_ROOT", older.to_str().unwrap())],
    );
    assert!(!out.status.success());
    let summary = summary.unwrap();
    assert_eq!(summary.error_class, Some(ErrorClass::Config), "{summary:?}");
    let message = summary.message.unwrap_or_default();
    assert!(
        message.contains(&format!(
            "the server is PostgreSQL {major}, newer than every pg_dump here ({})",
            major - 1
        )),
        "{message}"
    );
    assert!(!marks.exists(), "the older client ran");
}
