//! Two namespaces whose policies share a name and a bucket (issue #14, finding 3): backups live
//! under `<prefix>/<namespace>/<policy>/`, so team B's backup Jobs with `keepLast: 1` (the
//! mass-deletion guard out of the way) leave team A's three backups intact, and B's list and
//! restore never see A's. Through the agent binary fed Job documents, on a real S3 server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::store::{Kind, World, redis_of, team_in, text};
use lifeboat_api::agent_result::ErrorClass;
use serde_json::json;

#[test]
fn team_b_with_keep_last_one_never_deletes_lists_or_restores_team_a_s_backups() {
    let w = World::new();
    let (redis_a, redis_b) = (redis_of("a"), redis_of("b"));
    let keep = json!({"keepLast": 10});
    let a_ids: Vec<String> = (0..3)
        .map(|_| w.backup(Kind::S3, "team-a", "shop", &redis_a, keep.clone()))
        .collect();
    let bucket = w.bucket("backups");
    let a_objects = bucket.keys("lifeboat/team-a/shop");
    assert_eq!(
        a_objects.len(),
        6,
        "three metadata files and three RDBs: {a_objects:?}"
    );

    // Team B: same policy name, same bucket and prefix, a rule that keeps one and may delete
    // everything else.
    let only_one = json!({"keepLast": 1, "maxDeletePercent": 100});
    let mut b_ids = Vec::new();
    for _ in 0..3 {
        b_ids.push(w.backup(Kind::S3, "team-b", "shop", &redis_b, only_one.clone()));
    }

    assert_eq!(
        bucket.keys("lifeboat/team-a/shop"),
        a_objects,
        "team A's objects are exactly as they were"
    );
    let a_file = w.policy_file(Kind::S3, "team-a", "shop", &redis_a);
    let b_file = w.policy_file(Kind::S3, "team-b", "shop", &redis_b);
    let mut sorted_a = a_ids.clone();
    sorted_a.sort();
    assert_eq!(w.ids("team-a", &a_file), sorted_a, "A lists its three");
    let verify = w
        .agent("team-a")
        .args(["verify", "--policy-file"])
        .arg(&a_file)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", text(&verify));
    assert_eq!(
        w.ids("team-b", &b_file),
        vec![b_ids[2].clone()],
        "B lists its newest only, none of A's"
    );

    // B's latest is B's data.
    let into = w.dir.path().join("restored-b");
    let location = w.destination(Kind::S3);
    let doc = w.restore_doc(
        location.clone(),
        "team-b",
        "shop",
        "latest",
        &redis_b,
        &into,
    );
    let (out, summary) = w.job(&doc, &["restore", "--execute"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        summary.unwrap().backup_id.as_deref(),
        Some(b_ids[2].as_str())
    );
    assert_eq!(team_in(&into), "b");

    // A's backup, asked for by id in B's namespace, does not exist there; nothing is touched.
    let never = w.dir.path().join("never");
    let doc = w.restore_doc(location, "team-b", "shop", &a_ids[0], &redis_b, &never);
    let (out, summary) = w.job(&doc, &["restore", "--execute"]);
    assert_eq!(
        out.status.code(),
        Some(ErrorClass::NotFound.exit_code()),
        "{}",
        text(&out)
    );
    assert_eq!(summary.unwrap().error_class, Some(ErrorClass::NotFound));
    assert!(!never.exists(), "the target was never touched");
}

#[test]
fn a_directory_store_keeps_namespaces_apart_too() {
    let w = World::new();
    let (redis_a, redis_b) = (redis_of("a"), redis_of("b"));
    for _ in 0..3 {
        w.backup(
            Kind::Dir,
            "team-a",
            "shop",
            &redis_a,
            json!({"keepLast": 10}),
        );
    }
    let only_one = json!({"keepLast": 1, "maxDeletePercent": 100});
    for _ in 0..2 {
        w.backup(Kind::Dir, "team-b", "shop", &redis_b, only_one.clone());
    }
    let a_file = w.policy_file(Kind::Dir, "team-a", "shop", &redis_a);
    let b_file = w.policy_file(Kind::Dir, "team-b", "shop", &redis_b);
    assert_eq!(w.ids("team-a", &a_file).len(), 3);
    assert_eq!(w.ids("team-b", &b_file).len(), 1);
    assert_eq!(
        std::fs::read_dir(w.policy_dir(Kind::Dir, "team-a", "shop"))
            .unwrap()
            .count(),
        3
    );
}
