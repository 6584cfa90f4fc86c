//! `adopt`: backups of the layout without namespaces moved into a namespace's directory, on a
//! real S3 server and a directory. The fixtures are written as agents before namespaces wrote
//! them: `<root>/<policy>/<id>/`, ids of the old form (`20260101T000000Z`), version 1 metadata
//! (the same document, field for field and in the same order, without namespace or signature),
//! real Redis RDBs, a verification record and a drill's evidence record.
//!
//! Before adoption nothing reads them; a dry run changes nothing; a corrupt backup is not
//! carried over and keeps its old copy while the others move; a rerun resumes (a copy an
//! interrupted run finished is verified, then its old copy deleted); afterwards every backup is
//! listed, signed, verifiable and restorable in the namespace, and nothing is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::store::{Kind, World, redis_of, team_in, text};
use lifeboat_api::agent_result::{BackupMetadata, ErrorClass};
use serde_json::json;

const NS: &str = "shop-team";

/// Files of the old layout, read and written as the store holds them.
struct Old<'a> {
    w: &'a World,
    kind: Kind,
}

impl Old<'_> {
    fn write(&self, rest: &str, bytes: Vec<u8>) {
        match self.kind {
            Kind::Dir => {
                let path = self.w.backups().join("shop").join(rest);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
            Kind::S3 => self
                .w
                .bucket("backups")
                .put(&format!("lifeboat/shop/{rest}"), bytes),
        }
    }

    fn read(&self, rest: &str) -> Vec<u8> {
        match self.kind {
            Kind::Dir => std::fs::read(self.w.backups().join("shop").join(rest)).unwrap(),
            Kind::S3 => self
                .w
                .bucket("backups")
                .get(&format!("lifeboat/shop/{rest}")),
        }
    }

    /// Every file of the old layout with its bytes.
    fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        match self.kind {
            Kind::Dir => {
                let root = self.w.backups().join("shop");
                let mut out = BTreeMap::new();
                let mut stack = vec![root.clone()];
                while let Some(d) = stack.pop() {
                    for e in std::fs::read_dir(&d).into_iter().flatten() {
                        let p = e.unwrap().path();
                        if p.is_dir() {
                            stack.push(p);
                        } else {
                            let rel = p.strip_prefix(&root).unwrap().display().to_string();
                            out.insert(rel, std::fs::read(&p).unwrap());
                        }
                    }
                }
                out
            }
            Kind::S3 => {
                let b = self.w.bucket("backups");
                b.keys("lifeboat/shop")
                    .into_iter()
                    .map(|k| {
                        let bytes = b.get(&k);
                        (k.trim_start_matches("lifeboat/shop/").to_owned(), bytes)
                    })
                    .collect()
            }
        }
    }
}

/// Three backups of policy `shop` in the old layout, made from real backups of `redis`: their
/// old ids and each artifact's sha256.
fn old_backups(
    w: &World,
    kind: Kind,
    redis: &lifeboat_agent::local::LocalRedis,
) -> Vec<(String, String)> {
    let old = Old { w, kind };
    let mut out = Vec::new();
    for i in 1..=3 {
        let id = w.backup(kind, "maker", "shop", redis, json!({"keepLast": 10}));
        let new_dir = w.policy_dir(kind, "maker", "shop").join(&id);
        let artifact = std::fs::read(new_dir.join("sessions.rdb.zst")).unwrap();
        let mut m: BackupMetadata =
            serde_json::from_slice(&std::fs::read(new_dir.join("sessions.metadata.json")).unwrap())
                .unwrap();
        let old_id = format!("2026010{i}T000000Z");
        m.schema_version = 1;
        m.namespace.clear();
        m.signature = None;
        m.backup_id = old_id.clone();
        old.write(&format!("{old_id}/sessions.rdb.zst"), artifact);
        old.write(
            &format!("{old_id}/sessions.metadata.json"),
            serde_json::to_vec_pretty(&m).unwrap(),
        );
        out.push((old_id, m.artifacts[0].sha256.clone()));
    }
    let (first, _) = &out[0];
    old.write(
        &format!("{first}/sessions.verified.json"),
        serde_json::to_vec_pretty(&json!({"backupId": first, "asset": "sessions",
            "verifiedAt": "2026-01-02T00:00:00Z", "method": "Drill", "drillId": "quarterly-1"}))
        .unwrap(),
    );
    old.write(
        "drill-quarterly-1.json",
        b"{\"drillId\": \"quarterly-1\"}".to_vec(),
    );
    out
}

#[test]
fn old_backups_are_adopted_only_when_asked_verified_resumably_and_nothing_is_lost() {
    let w = World::new();
    let redis = redis_of("old");
    for kind in [Kind::Dir, Kind::S3] {
        let old = Old { w: &w, kind };
        let fixtures = old_backups(&w, kind, &redis);
        let policy = w.policy_file(kind, NS, "shop", &redis);
        let adopt = |execute: bool| {
            let mut cmd = w.agent(NS);
            cmd.args(["adopt", "--namespace", NS, "--policy-file"])
                .arg(&policy);
            if execute {
                cmd.arg("--execute");
            }
            cmd.output().unwrap()
        };

        // Never read implicitly: the namespace sees nothing, a restore finds nothing.
        assert_eq!(w.ids(NS, &policy), Vec::<String>::new(), "{kind:?}");
        let into = w.dir.path().join(format!("not-found-{kind:?}"));
        let doc = w.restore_doc(w.destination(kind), NS, "shop", "latest", &redis, &into);
        let (out, _) = w.job(&doc, &["restore", "--execute"]);
        assert_eq!(
            out.status.code(),
            Some(ErrorClass::NotFound.exit_code()),
            "{}",
            text(&out)
        );

        // A dry run says what it would do and changes nothing.
        let before = old.snapshot();
        let out = adopt(false);
        assert!(out.status.success(), "{kind:?}: {}", text(&out));
        assert_eq!(
            text(&out).matches("would adopt").count(),
            3,
            "{}",
            text(&out)
        );
        assert_eq!(
            old.snapshot(),
            before,
            "{kind:?}: the dry run changed the store"
        );

        // One old backup is corrupt: it is not carried over and keeps its old copy.
        let (bad, _) = &fixtures[1];
        let bad_artifact = format!("{bad}/sessions.rdb.zst");
        let good_bytes = old.read(&bad_artifact);
        let mut flipped = good_bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        old.write(&bad_artifact, flipped.clone());
        let out = adopt(true);
        assert_eq!(
            out.status.code(),
            Some(ErrorClass::Integrity.exit_code()),
            "{kind:?}: {}",
            text(&out)
        );
        assert!(
            text(&out).contains(&format!("{bad} sessions: NOT adopted")),
            "{}",
            text(&out)
        );
        assert_eq!(
            old.read(&bad_artifact),
            flipped,
            "the corrupt copy is kept as it was"
        );
        assert!(
            !old.read(&format!("{bad}/sessions.metadata.json"))
                .is_empty()
        );
        let adopted = w.ids(NS, &policy);
        assert_eq!(
            adopted,
            vec![fixtures[0].0.clone(), fixtures[2].0.clone()],
            "{kind:?}"
        );
        assert!(
            old.snapshot().contains_key("drill-quarterly-1.json"),
            "evidence moves only once every backup has"
        );

        // An interrupted run: the third backup's copy was made but its old copy not deleted.
        let (third, _) = &fixtures[2];
        for name in ["sessions.rdb.zst", "sessions.metadata.json"] {
            old.write(
                &format!("{third}/{name}"),
                before[&format!("{third}/{name}")].clone(),
            );
        }
        // The corruption repaired, a rerun finishes the job.
        old.write(&bad_artifact, good_bytes);
        let out = adopt(true);
        assert!(out.status.success(), "{kind:?}: {}", text(&out));
        assert!(
            text(&out).contains(&format!("{bad} sessions: adopted")),
            "{}",
            text(&out)
        );
        assert!(
            text(&out).contains(&format!(
                "{third} sessions: adopted (copied by an earlier run)"
            )),
            "{}",
            text(&out)
        );
        assert_eq!(
            old.snapshot().keys().collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "{kind:?}: nothing left in the old layout"
        );

        // Everything is there, signed for the namespace, verifiable and restorable.
        let listed = w.list(NS, &policy).unwrap();
        let found: Vec<(String, String)> = listed
            .iter()
            .map(|m| {
                assert_eq!(m["schemaVersion"], 2);
                assert_eq!(m["namespace"], NS);
                assert_eq!(m["signature"]["algorithm"], "HMAC-SHA256");
                let id = m["backupId"].as_str().unwrap();
                assert!(
                    m["adoptedFrom"]["location"]
                        .as_str()
                        .unwrap()
                        .ends_with(&format!("shop/{id}")),
                    "{m}"
                );
                (
                    id.to_owned(),
                    m["artifacts"][0]["sha256"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(found, fixtures, "{kind:?}: every backup, every checksum");
        let out = w
            .agent(NS)
            .args(["verify", "--policy-file"])
            .arg(&policy)
            .output()
            .unwrap();
        assert!(out.status.success(), "{kind:?}: {}", text(&out));
        let new_dir = w.policy_dir(kind, NS, "shop");
        assert!(
            new_dir
                .join(&fixtures[0].0)
                .join("sessions.verified.json")
                .is_file()
        );
        assert!(new_dir.join("drill-quarterly-1.json").is_file());
        let into = w.dir.path().join(format!("restored-{kind:?}"));
        let doc = w.restore_doc(
            w.destination(kind),
            NS,
            "shop",
            &fixtures[1].0,
            &redis,
            &into,
        );
        let (out, _) = w.job(&doc, &["restore", "--execute"]);
        assert!(out.status.success(), "{kind:?}: {}", text(&out));
        assert_eq!(team_in(&into), "old");

        // Adopting again finds nothing to do.
        let out = adopt(true);
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains("no backup of shop in the old layout"),
            "{}",
            text(&out)
        );
    }
}
