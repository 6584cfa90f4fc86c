//! Retention under a skewed clock, with a real skewed clock: `faketime` runs one backup Job two
//! days ahead, then the agent runs at the machine's time with `keepLast: 1`. The backup from
//! "the future" sorts first; it must neither count towards `keepLast` nor push each later backup
//! out as soon as it lands (before the fix, every later backup was deleted by its own Job's
//! prune while its summary reported it as the last success). Real PostgreSQL (pg_dump runs under
//! the skewed clock too: the whole Job is skewed), a real backup volume. Redis is not the source
//! here: redis-cli deadlocks under libfaketime's clock_gettime interposition.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use lifeboat_agent::local::LocalPostgres;
use lifeboat_api::agent_result::AgentSummary;
use serde_json::{Value, json};

struct World {
    dir: tempfile::TempDir,
    pg: LocalPostgres,
}

impl World {
    fn term(&self) -> std::path::PathBuf {
        self.dir.path().join("termination-log")
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env_remove("LIFEBOAT_JOB")
            .env(
                "LIFEBOAT_SIGNING_KEY_FILE",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/signing.key"),
            )
            .env("LIFEBOAT_BACKUP_DIR", self.dir.path().join("backups"))
            .env("LIFEBOAT_TERMINATION_LOG", self.term());
    }

    /// One backup Job with `keepLast: 1`, run by `cmd` (the agent, or faketime around it).
    fn backup_job(&self, mut cmd: Command) -> AgentSummary {
        let job = json!({"namespace": "shop", "policy": "sessions",
            "asset": {"name": "orders", "postgres": {"host": "127.0.0.1", "port": self.pg.port,
                "user": "lifeboat", "sslMode": "disable", "databases": ["postgres"]}},
            "destination": {"volume": {"claimName": "backups"}},
            "compression": {"algorithm": "zstd", "level": 3},
            "retention": {"keepLast": 1}});
        self.env(&mut cmd);
        let out = cmd
            .env("LIFEBOAT_JOB", job.to_string())
            .arg("backup")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s =
            AgentSummary::from_termination_message(&std::fs::read_to_string(self.term()).unwrap())
                .unwrap();
        assert!(s.ok, "{s:?}");
        assert_eq!(s.retention_refused, None, "{s:?}");
        s
    }

    /// Committed backups: (id, snapshot time), sorted by id.
    fn listed(&self) -> Vec<(String, String)> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lifeboat-agent"));
        self.env(&mut cmd);
        let out = cmd
            .args([
                "list",
                "--json",
                "--namespace",
                "shop",
                "--policy",
                "sessions",
                "--dir",
            ])
            .arg(self.dir.path().join("backups"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        let mut l: Vec<(String, String)> = all
            .iter()
            .map(|m| {
                (
                    m["backupId"].as_str().unwrap().to_owned(),
                    m["snapshotTime"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        l.sort();
        l
    }
}

fn faketime() -> Command {
    let found = Command::new("faketime").arg("--version").output();
    assert!(
        found.is_ok(),
        "faketime is missing: hack/install-deps.sh installs it (Debian package faketime)"
    );
    let mut cmd = Command::new("faketime");
    cmd.args(["-f", "+2d", env!("CARGO_BIN_EXE_lifeboat-agent")]);
    cmd
}

#[test]
fn a_backup_stamped_two_days_ahead_never_makes_later_backups_delete_themselves() {
    let w = World {
        dir: tempfile::tempdir().unwrap(),
        pg: LocalPostgres::start().unwrap(),
    };
    let made = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "lifeboat", "-d", "postgres", "-p"])
        .arg(w.pg.port.to_string())
        .args([
            "-c",
            "CREATE TABLE orders AS SELECT generate_series(1, 100) AS id",
        ])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let ahead = w.backup_job(faketime());
    let ahead_id = ahead.backup_id.clone().unwrap();
    let listed = w.listed();
    assert_eq!(listed.len(), 1);
    // The clock really was skewed: the snapshot is dated about two days from now.
    let snapshot: jiff::Timestamp = listed[0].1.parse().unwrap();
    let ahead_by = snapshot.duration_since(jiff::Timestamp::now());
    assert!(
        ahead_by > jiff::SignedDuration::from_hours(47),
        "faketime did not skew the agent's clock: snapshot {snapshot}"
    );

    let mut previous: Option<String> = None;
    for run in 0..3 {
        let s = w.backup_job(Command::new(env!("CARGO_BIN_EXE_lifeboat-agent")));
        let fresh = s.backup_id.clone().unwrap();
        let ids: Vec<String> = w.listed().into_iter().map(|(id, _)| id).collect();
        assert!(
            ids.contains(&fresh),
            "run {run}: backup {fresh} was deleted by its own Job's retention, which reported it as the last success; left: {ids:?}"
        );
        assert!(
            ids.contains(&ahead_id),
            "run {run}: the future backup was deleted: {ids:?}"
        );
        // keepLast 1 over the backups dated up to now: the previous real one goes.
        if let Some(p) = &previous {
            assert!(
                !ids.contains(p),
                "run {run}: keepLast 1 kept {p} too: {ids:?}"
            );
        }
        assert_eq!(ids.len(), 2, "run {run}: {ids:?}");
        previous = Some(fresh);
    }
}
