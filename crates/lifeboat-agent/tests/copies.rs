//! Off-site copies (issue #20): a backup Job whose policy names a copy writes the backup to its
//! destination, then copies it to a second bucket and reads it back there before the copy's
//! metadata is written. A copy that cannot be written leaves the backup counted, and the next
//! run copies what it missed; the copy keeps its own retention; with the primary store emptied,
//! the copy alone restores. Through the agent binary fed Job documents, on a real S3 server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::store::{Kind, World, asset, redis_of, team_in, text};
use lifeboat_agent::local::LocalS3;
use lifeboat_api::agent_result::{AgentSummary, ErrorClass};
use serde_json::{Value, json};

/// The `offsite` bucket, read with its own Secret `offsite-creds`.
fn offsite(w: &World) -> Value {
    json!({"endpoint": w.s3.endpoint(), "bucket": "offsite", "prefix": "dr",
           "forcePathStyle": true, "credentialsSecret": {"name": "offsite-creds"}})
}

/// Writes the copy's keys; a wrong secret key makes the store refuse every request.
fn offsite_keys(w: &World, secret_key: &str) {
    let dir = w.dir.path().join("secrets/offsite-creds");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("AWS_ACCESS_KEY_ID"), LocalS3::ACCESS_KEY).unwrap();
    std::fs::write(dir.join("AWS_SECRET_ACCESS_KEY"), secret_key).unwrap();
}

fn backup_with_copy(w: &World, doc: &Value) -> AgentSummary {
    let (out, summary) = w.job(doc, &["backup"]);
    assert!(out.status.success(), "{}", text(&out));
    let summary = summary.unwrap();
    assert!(summary.ok, "{summary:?}");
    summary
}

#[test]
fn a_backup_is_copied_off_site_catches_up_after_a_failure_and_restores_from_the_copy_alone() {
    let w = World::new();
    offsite_keys(&w, LocalS3::SECRET_KEY);
    let redis = redis_of("a");
    // The primary keeps ten; the copy keeps two, and may delete all the rest.
    let doc = json!({"namespace": "team-a", "policy": "shop", "asset": asset(&redis),
        "destination": w.destination(Kind::S3), "compression": {"algorithm": "zstd", "level": 3},
        "retention": {"keepLast": 10},
        "copies": [{"name": "dr-site", "s3": offsite(&w),
                    "retention": {"keepLast": 2, "maxDeletePercent": 100}}]});

    // 1: copied at once, read back, committed there.
    let first = backup_with_copy(&w, &doc);
    let id1 = first.backup_id.clone().unwrap();
    let copy = &first.copies[0];
    assert_eq!(copy.name, "dr-site");
    assert_eq!((copy.copied, copy.error.as_deref()), (1, None), "{copy:?}");
    assert_eq!(copy.newest_id.as_deref(), Some(id1.as_str()));
    assert_eq!(copy.newest_snapshot_time, first.snapshot_time);
    let remote = w.bucket("offsite");
    assert_eq!(
        remote.keys("dr/team-a/shop").len(),
        2,
        "the RDB and its metadata: {:?}",
        remote.keys("dr")
    );

    // 2: the copy's keys are refused. The backup still counts; the copy says why it is behind.
    offsite_keys(&w, "not-the-key");
    let second = backup_with_copy(&w, &doc);
    let copy = &second.copies[0];
    assert_eq!(copy.copied, 0, "{copy:?}");
    assert_eq!(copy.error_class, Some(ErrorClass::Auth), "{copy:?}");
    assert!(copy.error.is_some());
    assert!(
        !copy.error.as_deref().unwrap().contains("not-the-key"),
        "{copy:?}"
    );
    assert_eq!(
        remote.keys("dr/team-a/shop").len(),
        2,
        "nothing half-copied"
    );

    // 3: keys fixed: the backup it missed and the new one, oldest first; the copy's retention
    // then keeps its two newest while the primary keeps all three.
    offsite_keys(&w, LocalS3::SECRET_KEY);
    let third = backup_with_copy(&w, &doc);
    let id3 = third.backup_id.clone().unwrap();
    let copy = &third.copies[0];
    assert_eq!((copy.copied, copy.error.as_deref()), (2, None), "{copy:?}");
    assert_eq!(copy.newest_id.as_deref(), Some(id3.as_str()));
    let ids_in = |bucket: &str, prefix: &str| {
        let mut ids: Vec<String> = w
            .bucket(bucket)
            .keys(prefix)
            .iter()
            .filter(|k| k.ends_with(".metadata.json"))
            .map(|k| k.split('/').nth_back(1).unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let id2 = second.backup_id.clone().unwrap();
    assert_eq!(
        ids_in("backups", "lifeboat/team-a/shop"),
        vec![id1.clone(), id2.clone(), id3.clone()]
    );
    assert_eq!(ids_in("offsite", "dr/team-a/shop"), vec![id2, id3.clone()]);

    // The primary store loses everything; the copy alone restores the newest backup, checked
    // against its metadata (signed again for the copy with the namespace's key).
    let primary = w.bucket("backups");
    for key in primary.keys("lifeboat/team-a") {
        primary.delete(&key);
    }
    let location = json!({"s3": offsite(&w)});
    let into = w.dir.path().join("restored");
    let restore = w.restore_doc(location, "team-a", "shop", "latest", &redis, &into);
    let (out, summary) = w.job(&restore, &["restore", "--execute"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(summary.unwrap().backup_id.as_deref(), Some(id3.as_str()));
    assert_eq!(team_in(&into), "a");
}

#[test]
fn a_copy_whose_bytes_are_changed_in_the_store_is_refused_by_verify_and_restore() {
    let w = World::new();
    offsite_keys(&w, LocalS3::SECRET_KEY);
    let redis = redis_of("a");
    let doc = json!({"namespace": "team-a", "policy": "shop", "asset": asset(&redis),
        "destination": w.destination(Kind::S3), "compression": {"algorithm": "none", "level": 3},
        "retention": {"keepLast": 10}, "copies": [{"name": "dr-site", "s3": offsite(&w)}]});
    let summary = backup_with_copy(&w, &doc);
    assert_eq!(summary.copies[0].copied, 1, "{:?}", summary.copies);
    let remote = w.bucket("offsite");
    let rdb = remote
        .keys("dr/team-a/shop")
        .into_iter()
        .find(|k| !k.ends_with(".metadata.json"))
        .unwrap();
    let mut bytes = remote.get(&rdb);
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    remote.put(&rdb, bytes);

    let into = w.dir.path().join("restored");
    let location = json!({"s3": offsite(&w)});
    let restore = w.restore_doc(location, "team-a", "shop", "latest", &redis, &into);
    let (out, summary) = w.job(&restore, &["restore", "--execute"]);
    common::store::refused(&out, summary.as_ref(), "sha256", "a changed copy");
    assert!(!into.exists(), "the target was never touched");
}
