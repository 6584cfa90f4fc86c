//! Data offsets for a streamed pg_dump archive, checked against what pg_dump itself writes into
//! the same archive when its output is a file, on a real PostgreSQL with tables, a large object
//! and empty tables; the patched archive restores with `pg_restore --jobs=2`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use lifeboat_agent::local::LocalPostgres;
use lifeboat_agent::pgarchive::{Indexer, recorded_offsets};
use lifeboat_agent::{postgres, tools};

fn pg(tool: &str, pg: &LocalPostgres) -> Command {
    let mut c = Command::new(tools::find(tool).unwrap());
    c.env("PGHOST", "127.0.0.1")
        .env("PGPORT", pg.port.to_string())
        .env("PGUSER", "lifeboat");
    c
}

#[test]
fn a_streamed_dump_gets_the_offsets_pg_dump_writes_when_it_can_seek() {
    let server = LocalPostgres::start().unwrap();
    let conn = server.conn();
    postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
    postgres::query(
        &conn,
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, note text);
         INSERT INTO orders SELECT i, repeat(md5(i::text), 20) FROM generate_series(1, 50000) i;
         CREATE TABLE empty (id int);
         CREATE TABLE lines (order_id int REFERENCES orders, qty int);
         INSERT INTO lines SELECT i % 50000 + 1, i FROM generate_series(1, 100000) i;
         SELECT lo_from_bytea(0, decode(repeat('ab', 100000), 'hex'));",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let seekable = dir.path().join("seekable.dump");
    let status = pg("pg_dump", &server)
        .args(["-Fc", "-Z0", "-f"])
        .arg(&seekable)
        .arg("shop")
        .status()
        .unwrap();
    assert!(status.success());
    let streamed = pg("pg_dump", &server)
        .args(["-Fc", "-Z0", "shop"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap()
        .stdout;
    let expected = recorded_offsets(&std::fs::read(&seekable).unwrap()).unwrap();
    assert!(
        expected.len() >= 4,
        "three tables' data and the large objects: {expected:?}"
    );
    assert!(
        recorded_offsets(&streamed).unwrap().is_empty(),
        "a dump to a pipe has no offsets"
    );

    let mut indexer = Indexer::new();
    for chunk in streamed.chunks(8191) {
        indexer.feed(chunk);
    }
    indexer.finish();
    assert_eq!(indexer.failure(), None);
    let patched_path = dir.path().join("patched.dump");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&patched_path)
        .unwrap();
    file.write_all(&streamed).unwrap();
    assert_eq!(indexer.patch(&mut file).unwrap(), expected.len());
    drop(file);
    let patched = std::fs::read(&patched_path).unwrap();
    assert_eq!(recorded_offsets(&patched).unwrap(), expected);
    assert_eq!(patched.len(), streamed.len(), "patched in place");

    // And pg_restore -j2 reads it.
    postgres::query(&conn, "postgres", "CREATE DATABASE copy").unwrap();
    let out = pg("pg_restore", &server)
        .args(["-j2", "--exit-on-error", "-d", "copy"])
        .arg(&patched_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sum = "SELECT (SELECT count(*) FROM orders) || ':' || (SELECT sum(qty) FROM lines) || ':' || (SELECT count(*) FROM pg_largeobject_metadata)";
    assert_eq!(
        postgres::query(&conn, "copy", sum).unwrap(),
        postgres::query(&conn, "shop", sum).unwrap()
    );
}
