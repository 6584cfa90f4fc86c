//! Signed metadata bound to its place (issue #14 finding 5, issue #16 "metadata bound to its
//! place"), on a real S3 server and a directory, through the agent binary as Jobs run it. Each
//! refusal is `verify` and `restore --execute` failing with the integrity class, the target
//! checked untouched:
//!
//! - a forged backup: the artifact replaced by someone else's RDB, its checksum and size
//!   recomputed and written into the metadata by someone with store access and no key;
//! - an unsigned backup (the signature removed): refused, then accepted with the opt-in;
//! - namespace A's backup copied under namespace B's prefix (another key, another place);
//! - a metadata file moved into another backup's directory (a valid signature, the wrong place);
//! - a restore whose `source.location` is an attacker's bucket holding a self-consistent dump.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::store::{Kind, World, redis_of, refused, team_in, text};
use serde_json::{Value, json};
use sha2::Digest;

/// Reads and writes backup files the way someone with write access to the store would: on
/// disk for the directory, through the S3 API for the bucket.
struct Access<'a> {
    w: &'a World,
    kind: Kind,
}

impl Access<'_> {
    fn key(&self, ns: &str, rest: &str) -> String {
        format!("lifeboat/{ns}/shop/{rest}")
    }

    fn read(&self, ns: &str, rest: &str) -> Vec<u8> {
        match self.kind {
            Kind::Dir => std::fs::read(self.w.backups().join(ns).join("shop").join(rest)).unwrap(),
            Kind::S3 => self.w.bucket("backups").get(&self.key(ns, rest)),
        }
    }

    fn write(&self, ns: &str, rest: &str, bytes: Vec<u8>) {
        match self.kind {
            Kind::Dir => {
                let path = self.w.backups().join(ns).join("shop").join(rest);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
            Kind::S3 => self.w.bucket("backups").put(&self.key(ns, rest), bytes),
        }
    }

    /// Copies backup `id` of `from_ns` to backup `to_id` of `to_ns`, file by file.
    fn copy_backup(&self, from_ns: &str, id: &str, to_ns: &str, to_id: &str) {
        for name in ["sessions.metadata.json", "sessions.rdb.zst"] {
            let bytes = self.read(from_ns, &format!("{id}/{name}"));
            self.write(to_ns, &format!("{to_id}/{name}"), bytes);
        }
    }
}

fn metadata(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `verify` of `namespace`'s policy, and `restore --execute` of backup `id` into a fresh data
/// directory: both refused with `why`, and nothing written where the restore would go.
fn both_refused(w: &World, kind: Kind, namespace: &str, id: &str, why: &str, what: &str) {
    let redis = redis_of("target");
    let policy = w.policy_file(kind, namespace, "shop", &redis);
    let out = w
        .agent(namespace)
        .args(["verify", "--policy-file"])
        .arg(&policy)
        .output()
        .unwrap();
    refused(&out, None, why, &format!("{kind:?} {what}: verify"));
    let into = w
        .dir
        .path()
        .join(format!("target-{what}-{kind:?}").replace(' ', "-"));
    let doc = w.restore_doc(w.destination(kind), namespace, "shop", id, &redis, &into);
    let (out, summary) = w.job(&doc, &["restore", "--execute"]);
    refused(
        &out,
        summary.as_ref(),
        why,
        &format!("{kind:?} {what}: restore"),
    );
    assert!(!into.exists(), "{kind:?} {what}: the target was touched");
}

#[test]
fn forged_unsigned_foreign_and_moved_metadata_are_refused_before_any_restore() {
    let w = World::new();
    for kind in [Kind::Dir, Kind::S3] {
        let s = Access { w: &w, kind };
        let redis = redis_of("b");
        let first = w.backup(kind, "team-b", "shop", &redis, json!({"keepLast": 10}));
        let second = w.backup(kind, "team-b", "shop", &redis, json!({"keepLast": 10}));
        let meta_path = format!("{second}/sessions.metadata.json");
        let artifact_path = format!("{second}/sessions.rdb.zst");
        let (good_meta, good_artifact) = (
            s.read("team-b", &meta_path),
            s.read("team-b", &artifact_path),
        );

        // Forged: someone else's data, with a checksum that matches it.
        let evil = redis_of("evil");
        let evil_id = w.backup(kind, "attacker", "shop", &evil, json!({"keepLast": 10}));
        let forged_artifact =
            Access { w: &w, kind }.read("attacker", &format!("{evil_id}/sessions.rdb.zst"));
        let mut forged = metadata(&good_meta);
        forged["artifacts"][0]["sha256"] = json!(sha256_hex(&forged_artifact));
        forged["artifacts"][0]["storedBytes"] = json!(forged_artifact.len());
        s.write("team-b", &artifact_path, forged_artifact.clone());
        s.write(
            "team-b",
            &meta_path,
            serde_json::to_vec_pretty(&forged).unwrap(),
        );
        both_refused(
            &w,
            kind,
            "team-b",
            &second,
            "signature does not match",
            "forged",
        );
        // The same forgery without the signature at all.
        forged.as_object_mut().unwrap().remove("signature");
        s.write(
            "team-b",
            &meta_path,
            serde_json::to_vec_pretty(&forged).unwrap(),
        );
        both_refused(&w, kind, "team-b", &second, "not signed", "forged unsigned");
        s.write("team-b", &artifact_path, good_artifact.clone());

        // Unsigned: refused, and accepted only with the opt-in for legacy backups.
        let mut unsigned = metadata(&good_meta);
        unsigned.as_object_mut().unwrap().remove("signature");
        s.write(
            "team-b",
            &meta_path,
            serde_json::to_vec_pretty(&unsigned).unwrap(),
        );
        both_refused(&w, kind, "team-b", &second, "not signed", "unsigned");
        let policy = w.policy_file(kind, "team-b", "shop", &redis);
        let out = w
            .agent("team-b")
            .args(["verify", "--allow-unsigned", "--policy-file"])
            .arg(&policy)
            .output()
            .unwrap();
        assert!(out.status.success(), "{kind:?}: {}", text(&out));
        let into = w.dir.path().join(format!("opted-in-{kind:?}"));
        let mut doc = w.restore_doc(
            w.destination(kind),
            "team-b",
            "shop",
            &second,
            &redis,
            &into,
        );
        doc["allowUnsigned"] = json!(true);
        let (out, _) = w.job(&doc, &["restore", "--execute"]);
        assert!(out.status.success(), "{kind:?}: {}", text(&out));
        assert_eq!(team_in(&into), "b");
        s.write("team-b", &meta_path, good_meta.clone());

        // Namespace A's backup copied under B's prefix: another namespace's key.
        let redis_a = redis_of("a");
        let a_id = w.backup(kind, "team-a", "shop", &redis_a, json!({"keepLast": 10}));
        s.copy_backup("team-a", &a_id, "team-b", &a_id);
        both_refused(
            &w,
            kind,
            "team-b",
            &a_id,
            "signed with another key",
            "copied from team-a",
        );
        remove_backup(&w, kind, "team-b", &a_id);

        // A metadata file moved into another backup's directory: validly signed, but it says
        // it is `first`'s.
        s.write(
            "team-b",
            &meta_path,
            s.read("team-b", &format!("{first}/sessions.metadata.json")),
        );
        both_refused(
            &w,
            kind,
            "team-b",
            &second,
            "moved from another place",
            "moved metadata",
        );
        s.write("team-b", &meta_path, good_meta);

        // Everything back as it was: both backups verify and restore.
        let policy = w.policy_file(kind, "team-b", "shop", &redis);
        let out = w
            .agent("team-b")
            .args(["verify", "--policy-file"])
            .arg(&policy)
            .output()
            .unwrap();
        assert!(out.status.success(), "{kind:?}: {}", text(&out));
        assert_eq!(w.ids("team-b", &policy), {
            let mut ids = vec![first.clone(), second.clone()];
            ids.sort();
            ids
        });
    }
}

#[test]
fn a_restore_from_an_attackers_bucket_is_refused_before_the_target_is_touched() {
    let w = World::new();
    let victim = redis_of("b");
    // The attacker's bucket holds, where team B's restore will look, a dump of their own with
    // metadata that checks out (right checksum, right size): as their agent signed it, rewritten
    // to claim team B's namespace (still signed with the only key they have, their own
    // namespace's), or not signed at all.
    let evil = redis_of("evil");
    let id = w.backup(Kind::S3, "attacker", "shop", &evil, json!({"keepLast": 10}));
    let theirs = w.bucket("backups");
    let attacker = w.bucket("attacker");
    let artifact = theirs.get(&format!("lifeboat/attacker/shop/{id}/sessions.rdb.zst"));
    let mut meta = metadata(&theirs.get(&format!(
        "lifeboat/attacker/shop/{id}/sessions.metadata.json"
    )));
    attacker.put(
        &format!("lifeboat/team-b/shop/{id}/sessions.rdb.zst"),
        artifact.clone(),
    );
    assert_eq!(
        meta["artifacts"][0]["sha256"],
        json!(sha256_hex(&artifact)),
        "self-consistent"
    );

    let location = w.destination_in(Kind::S3, "attacker");
    let key = format!("lifeboat/team-b/shop/{id}/sessions.metadata.json");
    let own = meta.clone();
    meta["namespace"] = json!("team-b");
    let mut unsigned = meta.clone();
    unsigned.as_object_mut().unwrap().remove("signature");
    for (variant, doc, why) in [
        ("their metadata as made", own, "signed with another key"),
        ("rewritten for team-b", meta, "signed with another key"),
        ("unsigned", unsigned, "not signed"),
    ] {
        attacker.put(&key, serde_json::to_vec_pretty(&doc).unwrap());
        let into = w
            .dir
            .path()
            .join(format!("target-{}", variant.replace(' ', "-")));
        let doc = w.restore_doc(location.clone(), "team-b", "shop", &id, &victim, &into);
        let (out, summary) = w.job(&doc, &["restore", "--execute"]);
        refused(&out, summary.as_ref(), why, variant);
        assert!(!into.exists(), "{variant}: the target was touched");
    }
}

fn remove_backup(w: &World, kind: Kind, ns: &str, id: &str) {
    match kind {
        Kind::Dir => std::fs::remove_dir_all(w.backups().join(ns).join("shop").join(id)).unwrap(),
        Kind::S3 => {
            let b = w.bucket("backups");
            for key in b.keys(&format!("lifeboat/{ns}/shop/{id}")) {
                b.delete(&key);
            }
        }
    }
}
