//! Two backups of the same asset claiming an id in the same second (issue #14, finding 10) on
//! `rclone serve s3`, which ignores `If-None-Match: *` (a conditional PUT of an existing key
//! answers 200 and overwrites), so only ids unique by construction keep them apart: two agent
//! processes end with two ids and two complete, verifiable backups.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::store::{Kind, World, asset, redis_of, text};
use lifeboat_api::agent_result::AgentSummary;
use serde_json::json;

#[test]
fn two_runs_in_the_same_second_get_two_ids_and_two_good_backups() {
    let w = World::new();
    let redis = redis_of("a");
    let doc = json!({"namespace": "team-a", "policy": "shop", "asset": asset(&redis),
        "destination": w.destination(Kind::S3), "compression": {"algorithm": "zstd", "level": 3},
        "retention": {"keepLast": 100}});
    let policy = w.policy_file(Kind::S3, "team-a", "shop", &redis);
    // The two runs start together; a pair that straddles a second boundary proves nothing and
    // is tried again.
    for attempt in 1..=10 {
        let runs: Vec<_> = (0..2)
            .map(|i| {
                let term = w.dir.path().join(format!("term-{attempt}-{i}"));
                let child = w
                    .agent("team-a")
                    .env("LIFEBOAT_JOB", doc.to_string())
                    .env("LIFEBOAT_TERMINATION_LOG", &term)
                    .arg("backup")
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                (child, term)
            })
            .collect();
        let ids: Vec<String> = runs
            .into_iter()
            .map(|(child, term)| {
                let out = child.wait_with_output().unwrap();
                assert!(out.status.success(), "{}", text(&out));
                let s =
                    AgentSummary::from_termination_message(&std::fs::read_to_string(term).unwrap())
                        .unwrap();
                s.backup_id.unwrap()
            })
            .collect();
        // `20261124T101500Z-123-3fa9c2d1`: the second comes first (an id of earlier agents,
        // `20261124T101500Z`, is the second itself).
        let second = |id: &str| id.split('-').next().unwrap().to_owned();
        if second(&ids[0]) != second(&ids[1]) {
            eprintln!("attempt {attempt}: {ids:?} straddle a second, again");
            continue;
        }
        assert_ne!(ids[0], ids[1], "the same second, two ids");
        let listed = w.ids("team-a", &policy);
        for id in &ids {
            assert!(listed.contains(id), "{id} listed: {listed:?}");
        }
        let out = w
            .agent("team-a")
            .args(["verify", "--policy-file"])
            .arg(&policy)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        for id in &ids {
            assert!(
                text(&out).contains(&format!("ok {id} sessions")),
                "{}",
                text(&out)
            );
        }
        // No claim marker outlives its run.
        let left: Vec<String> = w
            .bucket("backups")
            .keys("lifeboat/team-a/shop")
            .into_iter()
            .filter(|k| k.contains(".lifeboat-claim"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        return;
    }
    panic!("no two runs claimed in the same second in 10 attempts");
}
