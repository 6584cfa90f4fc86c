//! `lifeboat-agent catalog` (issue #15, "a catalog read from storage"): the backups at a
//! location listed and verified with no BackupPolicy, on a real S3 server (`rclone serve s3`)
//! and a directory, through the agent binary as the operator's catalog Job runs it (a
//! `LIFEBOAT_JOB` document, the namespace's key and the store's keys as files). The catalog is
//! read back from the termination message, where the operator reads it.
//!
//! Hostile stores: an incomplete backup (artifacts, no metadata) is never chosen as latest; a
//! metadata moved into another backup's directory, an unsigned one and one signed with another
//! namespace's key fail the whole catalog as an integrity failure, naming why.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::store::{Kind, World, redis_of, text};
use lifeboat_api::agent_result::{Catalog, ErrorClass, TerminationMessage};
use lifeboat_api::backup_policy::AssetKind;
use serde_json::{Value, json};

/// A catalog Job of `namespace`/`shop` at `kind`'s location: its output and what its
/// termination message says.
fn catalog(
    w: &World,
    kind: Kind,
    namespace: &str,
    backup: &str,
) -> (std::process::Output, TerminationMessage) {
    let doc = json!({"namespace": namespace, "policy": "shop", "backupId": backup,
        "location": w.destination(kind)});
    catalog_of(w, namespace, doc)
}

/// The catalog Job of `namespace`/`shop` for the newest backups taken at or before `at`.
fn catalog_before(
    w: &World,
    kind: Kind,
    namespace: &str,
    at: jiff::Timestamp,
) -> (std::process::Output, TerminationMessage) {
    let doc = json!({"namespace": namespace, "policy": "shop", "backupId": "latest",
        "takenBefore": at, "location": w.destination(kind)});
    catalog_of(w, namespace, doc)
}

fn catalog_of(
    w: &World,
    namespace: &str,
    doc: Value,
) -> (std::process::Output, TerminationMessage) {
    let term = w.dir.path().join("term");
    let _ = std::fs::remove_file(&term);
    let out = w
        .agent(namespace)
        .env("LIFEBOAT_JOB", doc.to_string())
        .arg("catalog")
        .output()
        .unwrap();
    let message = TerminationMessage::parse(&std::fs::read_to_string(&term).unwrap())
        .unwrap_or_else(|| panic!("no termination message: {}", text(&out)));
    (out, message)
}

fn found(kind: Kind, out: &std::process::Output, m: &TerminationMessage) -> Catalog {
    assert!(out.status.success(), "{kind:?}: {}", text(out));
    assert!(m.summary.ok);
    m.catalog
        .clone()
        .expect("a catalog in the termination message")
}

fn failed(
    kind: Kind,
    out: &std::process::Output,
    m: &TerminationMessage,
    class: ErrorClass,
    why: &str,
) {
    assert_eq!(
        out.status.code(),
        Some(class.exit_code()),
        "{kind:?}: {}",
        text(out)
    );
    assert_eq!(m.summary.error_class, Some(class), "{kind:?}");
    let message = m.summary.message.clone().unwrap_or_default();
    assert!(
        message.contains(why),
        "{kind:?}: expected {why:?} in {message}"
    );
    assert!(
        m.catalog.is_none(),
        "{kind:?}: a failed catalog chose {:?}",
        m.catalog
    );
}

/// Writes `bytes` at `<namespace>/shop/<rest>` the way someone with the store's keys would.
fn write(w: &World, kind: Kind, namespace: &str, rest: &str, bytes: Vec<u8>) {
    match kind {
        Kind::Dir => {
            let path = w.backups().join(namespace).join("shop").join(rest);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        Kind::S3 => w
            .bucket("backups")
            .put(&format!("lifeboat/{namespace}/shop/{rest}"), bytes),
    }
}

fn read(w: &World, kind: Kind, namespace: &str, rest: &str) -> Vec<u8> {
    match kind {
        Kind::Dir => std::fs::read(w.backups().join(namespace).join("shop").join(rest)).unwrap(),
        Kind::S3 => w
            .bucket("backups")
            .get(&format!("lifeboat/{namespace}/shop/{rest}")),
    }
}

fn remove(w: &World, kind: Kind, namespace: &str, rest: &str) {
    match kind {
        Kind::Dir => {
            std::fs::remove_file(w.backups().join(namespace).join("shop").join(rest)).unwrap()
        }
        Kind::S3 => w
            .bucket("backups")
            .delete(&format!("lifeboat/{namespace}/shop/{rest}")),
    }
}

/// An id later than any real one: a backup that claims to be the newest.
const LATER: &str = "20991231T235959Z-999-ffffffff";

#[test]
fn the_catalog_chooses_each_assets_newest_complete_backup_and_refuses_a_tampered_store() {
    let w = World::new();
    for kind in [Kind::Dir, Kind::S3] {
        let ns = match kind {
            Kind::Dir => "team-dir",
            Kind::S3 => "team-s3",
        };
        // Nothing there yet: not found, nothing chosen.
        let (out, m) = catalog(&w, kind, ns, "latest");
        failed(kind, &out, &m, ErrorClass::NotFound, "no complete backup");

        let redis = redis_of("b");
        let first = w.backup(kind, ns, "shop", &redis, json!({"keepLast": 10}));
        let second = w.backup(kind, ns, "shop", &redis, json!({"keepLast": 10}));
        // An incomplete backup: its artifact written, its metadata never (killed before the
        // commit), under an id that sorts after every real one.
        let artifact = read(&w, kind, ns, &format!("{second}/sessions.rdb.zst"));
        write(&w, kind, ns, &format!("{LATER}/sessions.rdb.zst"), artifact);

        let (out, m) = catalog(&w, kind, ns, "latest");
        let c = found(kind, &out, &m);
        assert_eq!(c.omitted, 0);
        assert_eq!(c.entries.len(), 1, "{kind:?}: {c:?}");
        let e = &c.entries[0];
        assert_eq!(
            (e.asset.as_str(), e.kind, e.backup_id.as_str()),
            ("sessions", AssetKind::Redis, second.as_str()),
            "{kind:?}: the newest complete backup, never the incomplete one"
        );
        assert!(e.stored_bytes > 0 && !e.encrypted && !e.verified, "{e:?}");
        // An explicit id is that backup; one that does not exist is not found.
        let (out, m) = catalog(&w, kind, ns, &first);
        assert_eq!(found(kind, &out, &m).entries[0].backup_id, first);
        let (out, m) = catalog(&w, kind, ns, LATER);
        failed(kind, &out, &m, ErrorClass::NotFound, LATER);
        // The newest taken at or before an instant: the first at its own snapshot time, none
        // before it.
        let (out, m) = catalog(&w, kind, ns, &first);
        let first_at = found(kind, &out, &m).entries[0].snapshot_time;
        assert!(first_at < e.snapshot_time, "{kind:?}: {first_at} {e:?}");
        let (out, m) = catalog_before(&w, kind, ns, first_at);
        assert_eq!(found(kind, &out, &m).entries[0].backup_id, first);
        let (out, m) = catalog_before(&w, kind, ns, e.snapshot_time);
        assert_eq!(found(kind, &out, &m).entries[0].backup_id, second);
        let before_both = first_at - jiff::SignedDuration::from_millis(1);
        let (out, m) = catalog_before(&w, kind, ns, before_both);
        failed(kind, &out, &m, ErrorClass::NotFound, "taken at or before");

        // A metadata moved into another backup's directory (validly signed, the wrong place):
        // the incomplete backup "completed" with the first backup's metadata.
        let first_meta = read(&w, kind, ns, &format!("{first}/sessions.metadata.json"));
        let meta_path = format!("{LATER}/sessions.metadata.json");
        write(&w, kind, ns, &meta_path, first_meta);
        let (out, m) = catalog(&w, kind, ns, "latest");
        failed(
            kind,
            &out,
            &m,
            ErrorClass::Integrity,
            "moved from another place",
        );

        // The second backup's metadata copied there with its place rewritten and no signature.
        let mut forged: Value = serde_json::from_slice(&read(
            &w,
            kind,
            ns,
            &format!("{second}/sessions.metadata.json"),
        ))
        .unwrap();
        forged["backupId"] = json!(LATER);
        forged["snapshotTime"] = json!("2099-12-31T23:59:59Z");
        forged.as_object_mut().unwrap().remove("signature");
        write(
            &w,
            kind,
            ns,
            &meta_path,
            serde_json::to_vec(&forged).unwrap(),
        );
        let (out, m) = catalog(&w, kind, ns, "latest");
        failed(kind, &out, &m, ErrorClass::Integrity, "not signed");

        // The same place, signed with another namespace's key.
        let other = redis_of("other");
        let foreign_id = w.backup(kind, "team-other", "shop", &other, json!({"keepLast": 10}));
        let foreign = read(
            &w,
            kind,
            "team-other",
            &format!("{foreign_id}/sessions.metadata.json"),
        );
        write(
            &w,
            kind,
            ns,
            &format!("{foreign_id}/sessions.metadata.json"),
            foreign,
        );
        remove(&w, kind, ns, &meta_path);
        let (out, m) = catalog(&w, kind, ns, "latest");
        failed(
            kind,
            &out,
            &m,
            ErrorClass::Integrity,
            "signed with another key",
        );
        remove(
            &w,
            kind,
            ns,
            &format!("{foreign_id}/sessions.metadata.json"),
        );

        // The store as it was: the second backup again.
        let (out, m) = catalog(&w, kind, ns, "latest");
        assert_eq!(found(kind, &out, &m).entries[0].backup_id, second);
    }
}

#[test]
fn a_missing_bucket_or_refused_keys_fail_the_catalog_with_their_class() {
    let w = World::new();
    // A bucket that does not exist.
    let doc = json!({"namespace": "team", "policy": "shop", "backupId": "latest",
        "location": w.destination_in(Kind::S3, "no-such-bucket")});
    let term = w.dir.path().join("term");
    let out = w
        .agent("team")
        .env("LIFEBOAT_JOB", doc.to_string())
        .arg("catalog")
        .output()
        .unwrap();
    let m = TerminationMessage::parse(&std::fs::read_to_string(&term).unwrap()).unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    // The store answers 404 for the bucket: not found, and the message names the bucket.
    assert_eq!(
        m.summary.error_class,
        Some(ErrorClass::NotFound),
        "{}",
        text(&out)
    );
    assert!(
        m.summary
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("no-such-bucket"),
        "{m:?}"
    );
    assert!(m.catalog.is_none());
    // Keys the server refuses.
    let creds = w.dir.path().join("secrets/bad-creds");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("AWS_ACCESS_KEY_ID"), "nobody").unwrap();
    std::fs::write(creds.join("AWS_SECRET_ACCESS_KEY"), "wrong").unwrap();
    let mut location = w.destination(Kind::S3);
    location["s3"]["credentialsSecret"]["name"] = json!("bad-creds");
    let doc = json!({"namespace": "team", "policy": "shop", "backupId": "latest",
        "location": location});
    let out = w
        .agent("team")
        .env("LIFEBOAT_JOB", doc.to_string())
        .arg("catalog")
        .output()
        .unwrap();
    let m = TerminationMessage::parse(&std::fs::read_to_string(&term).unwrap()).unwrap();
    assert_eq!(
        m.summary.error_class,
        Some(ErrorClass::Auth),
        "{}",
        text(&out)
    );
}
