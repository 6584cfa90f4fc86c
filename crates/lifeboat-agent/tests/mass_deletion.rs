//! The mass-deletion guard, end to end through the agent as a backup Job runs it (the job
//! document in `LIFEBOAT_JOB`, the summary in the termination log) on a real Redis: a retention
//! pass that would delete more than the policy's share deletes nothing, the backup still counts,
//! and the summary says why (what the operator turns into RetentionApplied=False and an Event).
//! Raising `maxDeletePercent` lets the same pass through, and only inside the policy's own prefix.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use lifeboat_agent::local::LocalRedis;
use lifeboat_api::agent_result::AgentSummary;
use serde_json::{Value, json};

struct World {
    dir: tempfile::TempDir,
    redis: LocalRedis,
}

impl World {
    fn backups(&self) -> std::path::PathBuf {
        self.dir.path().join("backups")
    }

    fn term(&self) -> std::path::PathBuf {
        self.dir.path().join("termination-log")
    }

    fn agent(&self) -> Command {
        let mut cmd = agent_command();
        cmd.env_remove("LIFEBOAT_JOB")
            .env("LIFEBOAT_BACKUP_DIR", self.backups())
            .env("LIFEBOAT_TERMINATION_LOG", self.term());
        cmd
    }

    /// One backup Job of `policy` with `retention`: its summary, after asserting it succeeded.
    fn backup_job(&self, policy: &str, retention: Value) -> AgentSummary {
        let job = json!({"namespace": "n", "policy": policy,
            "asset": {"name": "sessions", "redis": {"host": "127.0.0.1", "port": self.redis.port, "allowEmpty": true}},
            "destination": {"volume": {"claimName": "backups"}},
            "compression": {"algorithm": "zstd", "level": 3}, "retention": retention});
        let out = self
            .agent()
            .env("LIFEBOAT_JOB", job.to_string())
            .arg("backup")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let s =
            AgentSummary::from_termination_message(&std::fs::read_to_string(self.term()).unwrap())
                .unwrap();
        assert!(s.ok, "{s:?}");
        s
    }

    /// Committed backup ids of `policy`, newest last.
    fn listed(&self, policy: &str) -> Vec<String> {
        let out = self
            .agent()
            .args(["list", "--json", "--policy", policy, "--dir"])
            .arg(self.backups())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        let mut ids: Vec<String> = all
            .iter()
            .map(|m| m["backupId"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }
}

fn dirs(root: &Path) -> usize {
    std::fs::read_dir(root).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn a_pass_over_the_policys_share_deletes_nothing_and_says_why_until_the_policy_allows_it() {
    let w = World {
        dir: tempfile::tempdir().unwrap(),
        redis: LocalRedis::start().unwrap(),
    };
    let keep_all = json!({"keepLast": 50});
    // Another policy's backups in the same volume: never retention's business.
    for _ in 0..2 {
        w.backup_job("other", keep_all.clone());
    }
    for _ in 0..5 {
        let s = w.backup_job("shop", keep_all.clone());
        assert_eq!(s.retention_refused, None);
    }
    assert_eq!(w.listed("shop").len(), 5);

    // keepLast 1 would now delete 5 of 6 (83%): over the default 50%, so nothing goes.
    let s = w.backup_job("shop", json!({"keepLast": 1}));
    let why = s.retention_refused.expect("the refusal is reported");
    assert!(
        why.contains("refusing to delete 5 of 6 backups of asset sessions")
            && why.contains("maxDeletePercent"),
        "{why}"
    );
    assert_eq!(s.message.as_deref(), Some(why.as_str()));
    assert!(s.backup_id.is_some(), "the new backup counts");
    assert_eq!(w.listed("shop").len(), 6, "nothing deleted");

    // The same rule under a policy-set share of 90% goes through, and keeps the newest.
    let before = w.listed("shop");
    let s = w.backup_job("shop", json!({"keepLast": 1, "maxDeletePercent": 90}));
    assert_eq!(s.retention_refused, None);
    let after = w.listed("shop");
    assert_eq!(
        after,
        vec![s.backup_id.clone().unwrap()],
        "only the newest is left"
    );
    assert!(!before.contains(&after[0]));
    assert_eq!(
        dirs(&w.backups().join("n/shop")),
        1,
        "no directory left behind"
    );
    assert_eq!(
        w.listed("other").len(),
        2,
        "the other policy's backups are untouched"
    );
}

/// The agent, signing with the tests' key (a fixture: any 32 bytes), in namespace `n` (a Job's
/// document names its own).
fn agent_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat-agent"));
    c.env(
        "LIFEBOAT_SIGNING_KEY_FILE",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/signing.key"),
    )
    .env("LIFEBOAT_NAMESPACE", "n");
    c
}
