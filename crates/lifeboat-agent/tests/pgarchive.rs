//! Data offsets for a streamed pg_dump archive, checked against what pg_dump itself writes into
//! the same archive when its output is a file, on a real PostgreSQL with tables, a large object
//! and empty tables; the patched archive restores with `pg_restore --jobs=2`. And the indexer fed
//! a real archive mutated anywhere, in random chunkings: never a panic, the same verdict whatever
//! the chunking.

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

/// A real streamed archive (no offsets), made once: two tables' data, an empty table and a
/// large object, about 150 KB, so its TOC is parsed while the stream goes on (the indexer first
/// tries at 64 KiB) and data blocks cross every chunk boundary.
fn real_archive() -> &'static [u8] {
    static ARCHIVE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let server = LocalPostgres::start().unwrap();
        let conn = server.conn();
        postgres::query(&conn, "postgres", "CREATE DATABASE fuzz").unwrap();
        postgres::query(
            &conn,
            "fuzz",
            "CREATE TABLE orders (id int PRIMARY KEY, note text);
             INSERT INTO orders SELECT i, repeat(md5(i::text), 3) FROM generate_series(1, 1200) i;
             CREATE TABLE empty (id int);
             CREATE TABLE lines (order_id int REFERENCES orders, qty int);
             INSERT INTO lines SELECT i % 1200 + 1, i FROM generate_series(1, 3000) i;
             SELECT lo_from_bytea(0, decode(repeat('ab', 5000), 'hex'));",
        )
        .unwrap();
        let out = pg("pg_dump", &server)
            .args(["-Fc", "-Z0", "fuzz"])
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    })
}

/// What the indexer makes of `bytes` fed in chunks of the given sizes (repeated): whether it
/// failed, how many offsets it patched, and the patched archive.
fn index(bytes: &[u8], chunks: &[usize]) -> (bool, usize, Vec<u8>) {
    let mut indexer = Indexer::new();
    let mut rest = bytes;
    for n in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at((*n).min(rest.len()));
        indexer.feed(now);
        rest = later;
    }
    indexer.finish();
    let mut file = std::io::Cursor::new(bytes.to_vec());
    let patched = indexer.patch(&mut file).unwrap();
    (indexer.failure().is_some(), patched, file.into_inner())
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Truncate { at: usize },
}

fn mutation() -> impl proptest::strategy::Strategy<Value = Mutation> {
    use proptest::prelude::*;
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match m {
            Mutation::Flip { at, mask } => {
                if let Some(b) = bytes.get_mut(at % len) {
                    *b ^= mask;
                }
            }
            Mutation::Insert { at, bytes: new } => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Delete { at, len: n } => {
                let at = at % len;
                let end = (at + n).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            Mutation::Truncate { at } => bytes.truncate(at % len),
        }
    }
    bytes
}

#[test]
fn the_real_archive_indexes_whatever_the_chunking() {
    let archive = real_archive();
    assert!(archive.len() > 100_000, "{} bytes", archive.len());
    let whole = index(archive, &[archive.len()]);
    assert!(!whole.0, "the unmutated archive indexes");
    assert!(whole.1 >= 3, "two tables' data and the large object");
    for chunks in [&[1usize][..], &[7, 8191], &[65_535, 3]] {
        assert_eq!(index(archive, chunks), whole, "{chunks:?}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 1_000,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Flipped, inserted, deleted and cut bytes anywhere (the header, the TOC, the data blocks),
    /// fed in random chunks: never a panic, and the same verdict and the same patched bytes as
    /// the archive fed whole.
    #[test]
    fn a_mutated_archive_never_panics_and_chunking_never_changes_the_verdict(
        mutations in proptest::collection::vec(mutation(), 1..4),
        chunks in proptest::collection::vec(1usize..70_000, 1..8),
    ) {
        let bytes = mutate(real_archive().to_vec(), &mutations);
        let whole = index(&bytes, &[bytes.len().max(1)]);
        let chunked = index(&bytes, &chunks);
        proptest::prop_assert_eq!(whole.0, chunked.0);
        proptest::prop_assert_eq!(whole.1, chunked.1);
        proptest::prop_assert!(whole.2 == chunked.2, "the patched archives differ");
    }
}
