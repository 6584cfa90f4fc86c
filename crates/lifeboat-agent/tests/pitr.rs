//! Continuous protection of PostgreSQL (issue #20): `base-backup`, `wal-archive` and
//! `pitr-restore` through the agent binary, on real PostgreSQL servers (the source, and a
//! server started on each restored data directory), into a real S3 server (`rclone serve s3`)
//! and a backup directory.
//!
//! Rows written before an instant and after it: a restore to that instant holds exactly the
//! first; a restore to latest holds everything, rows that only the partial segment holds
//! included. A gap in the chain, a tampered segment, a non-empty data directory and targets out
//! of range are refused before the data directory is touched. The archiver SIGKILLed and
//! restarted loses nothing: the slot held the WAL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::store::{Kind, World, text};
use jiff::Timestamp;
use lifeboat_agent::layout::{Scope, Store};
use lifeboat_agent::local::LocalPostgres;
use lifeboat_agent::postgres;
use lifeboat_agent::signing::SigningKey;
use lifeboat_agent::wal::{Lsn, SEGMENT_BYTES, SegmentRecord, WalPlace};
use lifeboat_api::agent_result::ErrorClass;

const NS: &str = "n";
const POLICY: &str = "shop";
const ASSET: &str = "db";

/// The agent's sync PostgreSQL helpers start a runtime of their own; these tests have none.
fn sql(pg: &LocalPostgres, statement: &str) -> String {
    postgres::query(&pg.conn(), "postgres", statement).unwrap()
}

/// Lifeboat's replication slots a walsender is streaming from.
fn active_slots(pg: &LocalPostgres) -> u32 {
    sql(
        pg,
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'lifeboat_%' AND active",
    )
    .parse()
    .unwrap()
}

struct Setup {
    /// Set once the server requires it (and so does every server restored from it).
    password: Option<String>,
    w: World,
    kind: Kind,
    pg: LocalPostgres,
    connection: PathBuf,
    location: PathBuf,
}

impl Setup {
    fn new(kind: Kind) -> Setup {
        let w = World::new();
        let pg = LocalPostgres::start().unwrap();
        sql(&pg, "CREATE TABLE t (id int PRIMARY KEY)");
        let connection = w.dir.path().join("connection.yaml");
        std::fs::write(
            &connection,
            format!(
                "host: 127.0.0.1\nport: {}\nuser: lifeboat\nsslMode: disable\n",
                pg.port
            ),
        )
        .unwrap();
        let location = w.dir.path().join("location.yaml");
        std::fs::write(
            &location,
            serde_norway::to_string(&w.destination(kind)).unwrap(),
        )
        .unwrap();
        Setup {
            password: None,
            w,
            kind,
            pg,
            connection,
            location,
        }
    }

    fn agent(&self, verb: &str) -> Command {
        let mut cmd = self.w.agent(NS);
        cmd.arg(verb)
            .args(["--namespace", NS, "--policy", POLICY, "--asset", ASSET])
            .arg("--location-file")
            .arg(&self.location);
        cmd
    }

    /// The archiver, in a process group of its own: killing the group is what the death of
    /// its container does (pg_receivewal goes with it).
    fn archiver(&self) -> Archiver {
        self.archiver_with(&[])
    }

    fn archiver_with(&self, extra: &[&str]) -> Archiver {
        let child = self
            .agent("wal-archive")
            .args(extra)
            .arg("--connection-file")
            .arg(&self.connection)
            .arg("--work-dir")
            .arg(self.w.dir.path().join("receivewal"))
            .args(["--partial-every", "1s"])
            .process_group(0)
            .spawn()
            .unwrap();
        let archiver = Archiver(child);
        self.wait("the archiver's slot", || active_slots(&self.pg) == 1);
        archiver
    }

    fn base_backup(&self) -> String {
        self.base_backup_with(&[])
    }

    fn base_backup_with(&self, extra: &[&str]) -> String {
        let out = self
            .agent("base-backup")
            .args(extra)
            .arg("--connection-file")
            .arg(&self.connection)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn insert(&self, from: i32, to: i32) {
        sql(
            &self.pg,
            &format!("INSERT INTO t SELECT generate_series({from}, {to})"),
        );
    }

    fn store(&self) -> Store {
        match self.kind {
            Kind::Dir => Store::Local(self.w.backups()),
            Kind::S3 => Store::Local(self.w.s3.root().join("backups/lifeboat")),
        }
    }

    fn place(&self) -> WalPlace {
        WalPlace::new(Scope::new(NS, POLICY).unwrap(), ASSET).unwrap()
    }

    /// The WAL directory of the asset on disk (the S3 server's bucket is a directory too).
    fn wal_dir(&self) -> PathBuf {
        self.w
            .policy_dir(self.kind, NS, POLICY)
            .join("wal")
            .join(ASSET)
    }

    fn records(&self) -> Vec<SegmentRecord> {
        let key = SigningKey::read(&self.w.key(NS)).unwrap();
        self.store().wal_records(&self.place(), &key).unwrap()
    }

    /// Waits until the archive holds the WAL the server has flushed so far (a complete
    /// segment past it, or a copy of the segment being written that reaches it).
    fn wait_archived(&self) {
        let flushed: Lsn = sql(&self.pg, "SELECT pg_current_wal_flush_lsn()")
            .parse()
            .unwrap();
        self.wait("the WAL written so far archived", || {
            self.records().iter().any(|r| {
                let s = r.segment().unwrap();
                s.segno * SEGMENT_BYTES + r.valid_bytes >= flushed.0
            })
        });
    }

    fn wait(&self, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready() {
            assert!(Instant::now() < deadline, "{what}: not within 60s");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `pitr-restore --execute` to `target` into `data`.
    fn restore(&self, target: &str, data: &Path) -> std::process::Output {
        self.restore_with(target, data, &[])
    }

    fn restore_with(&self, target: &str, data: &Path, extra: &[&str]) -> std::process::Output {
        self.agent("pitr-restore")
            .args(extra)
            .args(["--point-in-time", target, "--execute", "--data-dir"])
            .arg(data)
            .output()
            .unwrap()
    }

    /// Restores to `target` into a new data directory, starts a server on it, waits for
    /// recovery to end, and returns the ids it holds.
    fn restored_rows(&self, target: &str) -> String {
        self.restored_rows_with(target, &[])
    }

    fn restored_rows_with(&self, target: &str, extra: &[&str]) -> String {
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-pitr-target-")
            .tempdir()
            .unwrap();
        let out = self.restore_with(target, &dir.path().join("data"), extra);
        assert!(out.status.success(), "{}", text(&out));
        let pg = LocalPostgres::start_existing(dir, self.password.as_deref()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while sql(&pg, "SELECT pg_is_in_recovery()") != "f" {
            assert!(Instant::now() < deadline, "still recovering: {}", pg.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        sql(
            &pg,
            "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM t",
        )
    }
}

struct Archiver(Child);

impl Archiver {
    /// SIGTERM to the archiver alone (what the kubelet sends a container's PID 1): how long it
    /// took to exit, and how.
    fn terminate(&mut self) -> (Duration, std::process::ExitStatus) {
        let started = Instant::now();
        let pid = self.0.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return (started.elapsed(), status);
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "still running after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let group = format!("-{}", self.0.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = self.0.wait();
        }
    }
}

impl Drop for Archiver {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ids(from: i32, to: i32) -> String {
    (from..=to)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn refused(out: &std::process::Output, class: ErrorClass, why: &str) {
    assert_eq!(out.status.code(), Some(class.exit_code()), "{}", text(out));
    assert!(text(out).contains(why), "{why:?} not in {}", text(out));
}

#[test]
fn a_restore_to_an_instant_holds_exactly_the_rows_before_it_and_latest_the_partial_segment_too() {
    let s = Setup::new(Kind::S3);
    let _archiver = s.archiver();
    s.base_backup();
    s.insert(1, 3);
    sql(&s.pg, "SELECT pg_switch_wal()");
    std::thread::sleep(Duration::from_millis(1500));
    let t2 = Timestamp::now();
    std::thread::sleep(Duration::from_millis(1500));
    s.insert(4, 6);
    let t3 = Timestamp::now();
    s.wait_archived();
    // Rows 4..6 are only in the segment being written: no complete segment was archived after
    // they were committed.
    assert!(
        s.records()
            .iter()
            .filter(|r| !r.partial)
            .all(|r| r.archived_at < t3),
        "a segment completed after the last write"
    );
    assert_eq!(s.restored_rows(&t2.to_string()), ids(1, 3));
    assert_eq!(s.restored_rows("latest"), ids(1, 6));
}

#[test]
fn a_gap_a_tampered_segment_a_used_directory_and_targets_out_of_range_are_refused_untouched() {
    let s = Setup::new(Kind::Dir);
    let before_any = Timestamp::now();
    let mut archiver = s.archiver();
    s.base_backup();
    for i in 0..3 {
        s.insert(i * 10, i * 10 + 5);
        sql(&s.pg, "SELECT pg_switch_wal()");
    }
    // And some in the segment being written.
    s.insert(30, 35);
    s.wait_archived();
    archiver.kill();
    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("data");

    // A missing segment in the middle of the chain (its object and its record).
    let mut complete: Vec<SegmentRecord> = s.records().into_iter().filter(|r| !r.partial).collect();
    complete.sort_by(|a, b| a.segment.cmp(&b.segment));
    let middle = &complete[1];
    let aside = s.w.dir.path().join("aside");
    std::fs::create_dir_all(&aside).unwrap();
    for name in [
        middle.artifact.name.clone(),
        format!("{}.json", middle.segment),
    ] {
        std::fs::rename(s.wal_dir().join(&name), aside.join(&name)).unwrap();
    }
    let newest = complete.last().unwrap().archived_at;
    for t in ["latest".to_owned(), newest.to_string()] {
        refused(&s.restore(&t, &data), ErrorClass::Integrity, "has a gap");
        assert!(!data.exists(), "the data directory was written");
    }
    for name in [
        middle.artifact.name.clone(),
        format!("{}.json", middle.segment),
    ] {
        std::fs::rename(aside.join(&name), s.wal_dir().join(&name)).unwrap();
    }
    // The newest complete segment missing: only the copy of the one after it lies beyond.
    let newest_complete = complete.last().unwrap();
    let newest_names = [
        newest_complete.artifact.name.clone(),
        format!("{}.json", newest_complete.segment),
    ];
    for name in &newest_names {
        std::fs::rename(s.wal_dir().join(name), aside.join(name)).unwrap();
    }
    assert!(s.records().iter().any(|r| r.partial));
    refused(
        &s.restore("latest", &data),
        ErrorClass::Integrity,
        "has a gap",
    );
    assert!(!data.exists(), "the data directory was written");
    for name in &newest_names {
        std::fs::rename(aside.join(name), s.wal_dir().join(name)).unwrap();
    }

    // A segment whose bytes were changed.
    let object = s.wal_dir().join(&middle.artifact.name);
    let original = std::fs::read(&object).unwrap();
    let mut tampered = original.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x40;
    std::fs::write(&object, &tampered).unwrap();
    refused(&s.restore("latest", &data), ErrorClass::Integrity, "sha256");
    assert!(!data.exists(), "the data directory was written");
    // A record that was changed (its segment's size) no longer verifies.
    std::fs::write(&object, &original).unwrap();
    let record = s.wal_dir().join(format!("{}.json", middle.segment));
    let good = std::fs::read_to_string(&record).unwrap();
    std::fs::write(
        &record,
        good.replace("\"validBytes\": 16777216", "\"validBytes\": 1677721"),
    )
    .unwrap();
    refused(
        &s.restore("latest", &data),
        ErrorClass::Integrity,
        "signature does not match",
    );
    std::fs::write(&record, good).unwrap();

    // Targets out of range.
    refused(
        &s.restore(&before_any.to_string(), &data),
        ErrorClass::NotFound,
        "before the oldest base backup",
    );
    let later = Timestamp::now() + jiff::SignedDuration::from_secs(3600);
    refused(
        &s.restore(&later.to_string(), &data),
        ErrorClass::NotFound,
        "after the newest archived WAL",
    );
    assert!(!data.exists(), "the data directory was written");

    // A data directory that holds anything.
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    refused(
        &s.restore("latest", &data),
        ErrorClass::TargetUnsupported,
        "not empty",
    );
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 1);
    std::fs::remove_dir_all(&data).unwrap();

    // Intact again, it restores.
    assert_eq!(
        s.restored_rows("latest"),
        [ids(0, 5), ids(10, 15), ids(20, 25), ids(30, 35)].join(",")
    );
}

#[test]
fn an_archiver_killed_mid_stream_and_restarted_loses_nothing() {
    let s = Setup::new(Kind::Dir);
    let mut archiver = s.archiver();
    let first = s.base_backup();
    s.insert(1, 10);
    s.wait_archived();
    archiver.kill();
    // Written while no archiver runs: completed segments and more in the next.
    s.insert(11, 20);
    sql(&s.pg, "SELECT pg_switch_wal()");
    s.insert(21, 30);
    // Checkpoints recycle every segment nothing holds: only the slot keeps these.
    for _ in 0..3 {
        sql(&s.pg, "SELECT pg_switch_wal()");
        sql(&s.pg, "CHECKPOINT");
    }
    let _archiver = s.archiver();
    s.insert(31, 40);
    s.wait_archived();
    assert_eq!(s.restored_rows("latest"), ids(1, 40));

    // Once the first base backup is gone (the policy's retention), the WAL only it needed
    // goes too, and the newer base backup still restores everything.
    s.base_backup();
    s.insert(41, 50);
    s.wait_archived();
    std::fs::remove_dir_all(s.w.policy_dir(s.kind, NS, POLICY).join(&first)).unwrap();
    let before = s.records().len();
    let out = s.agent("wal-prune").arg("--execute").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let deleted = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(deleted > 0, "nothing pruned: {}", text(&out));
    assert_eq!(s.records().len(), before - deleted);
    assert_eq!(s.restored_rows("latest"), ids(1, 50));
}

/// A pod stopping: SIGTERM to the archiver alone, then its work directory gone with the pod.
/// What pg_receivewal flushed (and so the slot let go of) is stored before the archiver exits,
/// minutes before its next copy of the segment being written was due.
#[test]
fn an_archiver_stopped_stores_what_the_slot_let_go_of_before_it_exits() {
    stopped_archiver_keeps_every_row(false);
}

/// The same stop just after a segment switch (a base backup ends with one), before the archiver's
/// loop stored the completed segment: the archiver is frozen (SIGSTOP) across the base backup and
/// the inserts, then gets SIGTERM and SIGCONT. The partial copy, refused while a completed
/// segment waits before it, must still be stored (it was not, before the stop stored the
/// completed segments first: tried).
#[test]
fn an_archiver_stopped_right_after_a_segment_switch_stores_both() {
    stopped_archiver_keeps_every_row(true);
}

fn stopped_archiver_keeps_every_row(frozen_across_the_switch: bool) {
    let s = Setup::new(Kind::Dir);
    let work = s.w.dir.path().join("receivewal-stopped");
    let child = s
        .agent("wal-archive")
        .arg("--connection-file")
        .arg(&s.connection)
        .arg("--work-dir")
        .arg(&work)
        .args(["--partial-every", "300s"])
        .process_group(0)
        .spawn()
        .unwrap();
    let mut archiver = Archiver(child);
    s.wait("the archiver's slot", || active_slots(&s.pg) == 1);
    let signal = |sig: &str| {
        let pid = archiver.0.id().to_string();
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    if frozen_across_the_switch {
        // The archiver alone: pg_receivewal, its child, keeps streaming.
        signal("-STOP");
    }
    s.base_backup();
    s.insert(1, 10);
    let flushed = sql(&s.pg, "SELECT pg_current_wal_flush_lsn()");
    s.wait("the rows flushed by pg_receivewal", || {
        sql(
            &s.pg,
            &format!(
                "SELECT coalesce(bool_and(r.flush_lsn >= '{flushed}'), false) FROM pg_stat_replication r \
                 JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name LIKE 'lifeboat_%'"
            ),
        ) == "t"
    });
    if frozen_across_the_switch {
        assert!(
            std::fs::read_dir(&work).unwrap().any(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains('.')),
            "a completed segment waits in the work directory"
        );
        signal("-TERM");
        signal("-CONT");
    }
    let (took, status) = archiver.terminate();
    assert!(
        status.success() && took < Duration::from_secs(5),
        "{status:?} {took:?}"
    );
    std::fs::remove_dir_all(&work).unwrap();
    assert_eq!(s.restored_rows("latest"), ids(1, 10));
}

#[test]
fn encrypted_base_backups_and_wal_are_stored_sealed_and_restore_only_with_the_identity() {
    use age::secrecy::ExposeSecret;
    let s = Setup::new(Kind::Dir);
    let key = age::x25519::Identity::generate();
    let identity = s.w.dir.path().join("identity");
    std::fs::write(&identity, format!("{}\n", key.to_string().expose_secret())).unwrap();
    let recipient = key.to_public().to_string();
    let _archiver = s.archiver_with(&["--recipient", &recipient]);
    s.base_backup_with(&["--recipient", &recipient]);
    s.insert(1, 5);
    sql(&s.pg, "SELECT pg_switch_wal()");
    s.insert(6, 8);
    s.wait_archived();
    let records = s.records();
    assert!(records.iter().any(|r| !r.partial) && records.iter().any(|r| r.partial));
    for r in &records {
        assert!(r.encryption.is_some(), "{} recorded unencrypted", r.segment);
        let stored = std::fs::read(s.wal_dir().join(&r.artifact.name)).unwrap();
        assert!(
            stored.starts_with(b"age-encryption.org/v1"),
            "{} is not sealed",
            r.artifact.name
        );
    }
    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("data");
    refused(
        &s.restore("latest", &data),
        ErrorClass::Config,
        "needs the identity",
    );
    assert!(!data.exists(), "the data directory was written");
    let identity = identity.to_str().unwrap();
    assert_eq!(
        s.restored_rows_with("latest", &["--identity-file", identity]),
        ids(1, 8)
    );
}

#[test]
fn the_replication_password_comes_from_its_secret_file_and_is_in_no_argument_or_environment() {
    const PASSWORD: &str = "wal-Secret-4u7bQ";
    let mut s = Setup::new(Kind::Dir);
    s.pg.require_password(PASSWORD).unwrap();
    s.password = Some(PASSWORD.to_owned());
    let secret = s.w.dir.path().join("secrets/pg-creds");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("password"), PASSWORD).unwrap();
    // Without the password the server refuses the agent: it is needed, and it comes from the file.
    let out = s
        .agent("base-backup")
        .arg("--connection-file")
        .arg(&s.connection)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(ErrorClass::Auth.exit_code()),
        "{}",
        text(&out)
    );
    let yaml = std::fs::read_to_string(&s.connection).unwrap();
    std::fs::write(
        &s.connection,
        format!("{yaml}passwordSecret:\n  name: pg-creds\n  key: password\n"),
    )
    .unwrap();
    let archiver = s.archiver();
    s.base_backup();
    s.insert(1, 3);
    s.wait_archived();
    // Neither the agent nor pg_receivewal carries the password in its arguments or environment.
    let agent = archiver.0.id();
    let children = std::fs::read_to_string(format!("/proc/{agent}/task/{agent}/children")).unwrap();
    let mut pids: Vec<String> = children.split_whitespace().map(str::to_owned).collect();
    assert!(!pids.is_empty(), "pg_receivewal is not running");
    pids.push(agent.to_string());
    for pid in pids {
        for what in ["cmdline", "environ"] {
            let bytes = std::fs::read(format!("/proc/{pid}/{what}")).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(PASSWORD),
                "the password is in /proc/{pid}/{what}"
            );
        }
    }
    assert_eq!(s.restored_rows("latest"), ids(1, 3));
}

/// The document the operator gives a `pointInTime` asset's CronJob Jobs and archiver.
fn document(s: &Setup) -> serde_json::Value {
    serde_json::json!({
        "namespace": NS, "policy": POLICY,
        "asset": {"name": ASSET, "postgres": {
            "host": "127.0.0.1", "port": s.pg.port, "user": "nobody", "sslMode": "disable",
            "databases": ["postgres"], "pointInTime": {"user": "lifeboat", "partialUploadSeconds": 1}}},
        "destination": s.w.destination(s.kind),
        "compression": {},
        "retention": {"keepLast": 1, "minKeep": 1, "maxDeletePercent": 100}
    })
}

#[test]
fn the_operators_document_runs_the_archiver_and_scheduled_base_backups_whose_retention_keeps_the_chain()
 {
    let s = Setup::new(Kind::Dir);
    let doc = document(&s);
    // Before the archiver has made its slot, a scheduled run takes nothing.
    let (out, summary) = s.w.job(&doc, &["backup"]);
    refused(&out, ErrorClass::NotFound, "slot");
    assert!(!summary.unwrap().ok);
    assert!(
        !s.w.policy_dir(s.kind, NS, POLICY).exists()
            || std::fs::read_dir(s.w.policy_dir(s.kind, NS, POLICY))
                .unwrap()
                .all(|e| e.unwrap().file_name() == "wal"),
        "no base backup stored"
    );
    // The archiver as its Deployment runs it: everything from the document, as the
    // pointInTime role (the asset's own role does not exist on this server).
    let child =
        s.w.agent(NS)
            .env("LIFEBOAT_JOB", doc.to_string())
            .arg("wal-archive")
            .arg("--work-dir")
            .arg(s.w.dir.path().join("receivewal"))
            .process_group(0)
            .spawn()
            .unwrap();
    let mut archiver = Archiver(child);
    s.wait("the archiver's slot", || active_slots(&s.pg) == 1);
    // Two scheduled runs: each is a base backup, and the second's retention (keepLast 1)
    // deletes the first and then the WAL only the first needed.
    let (out, summary) = s.w.job(&doc, &["backup"]);
    assert!(out.status.success(), "{}", text(&out));
    let first = summary.unwrap().backup_id.unwrap();
    s.insert(1, 10);
    sql(&s.pg, "SELECT pg_switch_wal()");
    s.insert(11, 20);
    s.wait_archived();
    let before = s.records().len();
    let (out, summary) = s.w.job(&doc, &["backup"]);
    assert!(out.status.success(), "{}", text(&out));
    let summary = summary.unwrap();
    assert!(
        summary.ok && summary.retention_refused.is_none(),
        "{summary:?}"
    );
    let second = summary.backup_id.unwrap();
    assert!(text(&out).contains("WAL segment(s)"), "{}", text(&out));
    let policy_dir = s.w.policy_dir(s.kind, NS, POLICY);
    assert!(
        !policy_dir.join(&first).exists(),
        "the first base backup went"
    );
    assert!(policy_dir.join(&second).exists());
    assert!(
        s.records().len() < before,
        "the WAL before the kept base backup went"
    );
    // What is kept still restores everything, up to the newest row.
    s.insert(21, 30);
    s.wait_archived();
    assert_eq!(s.restored_rows("latest"), ids(1, 30));

    // The field removed: the release Job's document is the archiver's. While the archiver
    // streams, the server refuses to drop its slot: the release tries again until its wait
    // (here 5 s) is over, then fails; once the archiver is stopped, the slot goes, and a second
    // release finds nothing to do.
    let slots = || {
        sql(
            &s.pg,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'lifeboat_%'",
        )
    };
    let started = Instant::now();
    let (out, _) = s.w.job_with(
        &doc,
        &["wal-release"],
        &[("LIFEBOAT_SLOT_RELEASE_WAIT", "5s")],
    );
    assert!(
        !out.status.success(),
        "dropped an active slot: {}",
        text(&out)
    );
    assert!(text(&out).contains("is active"), "{}", text(&out));
    assert!(
        text(&out).contains("still in use"),
        "it waited: {}",
        text(&out)
    );
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(slots(), "1");
    // Stopped as a pod is: it exits at once and lets go of the slot (it used to ignore SIGTERM
    // as a container's PID 1, until the kubelet killed it 30 s later).
    let (took, status) = archiver.terminate();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    s.wait("pg_receivewal stopped with the archiver", || {
        active_slots(&s.pg) == 0
    });
    let (out, summary) = s.w.job(&doc, &["wal-release"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(summary.unwrap().ok);
    assert!(
        text(&out).contains("dropped the replication slot lifeboat_"),
        "{}",
        text(&out)
    );
    assert_eq!(slots(), "0");
    let (out, _) = s.w.job(&doc, &["wal-release"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("released already"), "{}", text(&out));
}

#[test]
fn the_readiness_probe_passes_only_while_the_archiver_stores_what_it_receives() {
    let s = Setup::new(Kind::Dir);
    let work = s.w.dir.path().join("receivewal");
    let probe = |within: &str| {
        s.w.agent(NS)
            .arg("wal-caught-up")
            .arg("--work-dir")
            .arg(&work)
            .args(["--within", within])
            .output()
            .unwrap()
    };
    assert!(!probe("1h").status.success(), "no archiver has run");
    let mut archiver = s.archiver();
    s.insert(1, 10);
    s.wait_archived();
    s.wait("the probe to pass", || probe("3s").status.success());
    archiver.kill();
    std::thread::sleep(Duration::from_secs(4));
    let out = probe("3s");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("last caught up"), "{}", text(&out));
    assert!(
        !s.w.dir.path().join("term").exists(),
        "the probe leaves no termination message"
    );
}
