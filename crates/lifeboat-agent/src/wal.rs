//! Continuous protection of a PostgreSQL asset: physical base backups (`pg_basebackup`) and the
//! write-ahead log streamed from a replication slot Lifeboat owns (`pg_receivewal`), both in the
//! policy's store with the guarantees of every backup (checksums, encryption when the policy
//! encrypts, a signed record written after the data).
//!
//! A base backup is an ordinary backup (`<namespace>/<policy>/<id>/<asset>.base.tar`, its
//! metadata recording where its WAL begins). The WAL lies beside the backups, outside every
//! backup directory, so listing and retention of backups never see it:
//!
//! ```text
//! <namespace>/<policy>/wal/<asset>/<segment>[.zst][.age]               a completed segment
//! <namespace>/<policy>/wal/<asset>/<segment>.json                      its signed record, written after it
//! <namespace>/<policy>/wal/<asset>/<segment>.partial.<end>[.zst][.age] the segment being written, to <end>
//! <namespace>/<policy>/wal/<asset>/<segment>.partial.json              its record, naming the current copy
//! ```
//!
//! Segments are 16 MiB (PostgreSQL's default; the archiver refuses a server with another size).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use lifeboat_api::agent_result::{
    ArtifactInfo, BackupMetadata, BaseBackupWal, EncryptionInfo, METADATA_SCHEMA_VERSION,
    MetadataSignature,
};
use lifeboat_api::backup_policy::AssetKind;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::error::{AgentError, Result};
use crate::layout::{Prefix, Scope, Store};
use crate::postgres::Conn;
use crate::signing::SigningKey;
use crate::stream::{self, Encoding, Stored};
use crate::tools;

/// The directory of the WAL in a policy's store directory. Backup ids start with a digit, so it
/// is never one.
pub const WAL_DIR: &str = "wal";
/// Bytes in a WAL segment.
pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Version of a segment record.
pub const SEGMENT_RECORD_VERSION: u32 = 1;
/// What a segment record's MAC is taken under: it never verifies as backup metadata.
const RECORD_LABEL: &str = "lifeboat.dev/wal-segment/v1";
/// The artifact of a base backup: `<asset>.base.tar[.zst][.age]`, pg_basebackup's tar of the
/// data directory, WAL to its end included.
pub const BASE_SUFFIX: &str = ".base.tar";

/// A position in the write-ahead log (`0/3000148`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lsn(pub u64);

impl std::str::FromStr for Lsn {
    type Err = AgentError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || AgentError::integrity(format!("{s:?} is not a WAL position"));
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl Lsn {
    /// The number of the segment holding this position.
    pub fn segno(self) -> u64 {
        self.0 / SEGMENT_BYTES
    }
}

/// A segment's file name: timeline and segment number, `TTTTTTTTLLLLLLLLSSSSSSSS` in
/// uppercase hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment {
    pub timeline: u32,
    pub segno: u64,
}

impl Segment {
    const PER_LOG: u64 = 0x1_0000_0000 / SEGMENT_BYTES;

    /// The segment `name` is, if it is exactly a segment file name.
    pub fn parse(name: &str) -> Option<Self> {
        if name.len() != 24
            || !name
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        {
            return None;
        }
        let timeline = u32::from_str_radix(&name[..8], 16).ok()?;
        let log = u64::from_str_radix(&name[8..16], 16).ok()?;
        let seg = u64::from_str_radix(&name[16..], 16).ok()?;
        if seg >= Self::PER_LOG {
            return None;
        }
        Some(Self {
            timeline,
            segno: log * Self::PER_LOG + seg,
        })
    }

    pub fn name(&self) -> String {
        format!(
            "{:08X}{:08X}{:08X}",
            self.timeline,
            self.segno / Self::PER_LOG,
            self.segno % Self::PER_LOG
        )
    }
}

/// The name of the physical replication slot Lifeboat owns for an asset: a digest of the
/// asset's namespace, policy and name, so it is stable across restarts, distinct per asset, and
/// never made of user text (a slot name is `[a-z0-9_]`, at most 63 characters).
pub fn slot_name(scope: &Scope, asset: &str) -> String {
    let digest = sha2::Sha256::digest(
        format!(
            "{}/{}/{asset}",
            scope.namespace().unwrap_or_default(),
            scope.policy()
        )
        .as_bytes(),
    );
    format!("lifeboat_{}", &stream::hex(&digest)[..20])
}

/// How long a release waits for the slot's reader to go (`LIFEBOAT_SLOT_RELEASE_WAIT`). A
/// stopped archiver's connection can stay open on the server until `wal_sender_timeout` (60 s
/// by default) when its pod went without closing it; seen on the node: two release pods 10 s
/// apart both refused with 55006.
const RELEASE_WAIT: Duration = Duration::from_secs(150);

/// Drops the asset's replication slot on the source once its archiver is stopped (`lifeboat-agent
/// wal-release`): a slot nobody reads keeps WAL on the source until its disk is full. Whether a
/// slot was dropped; a slot that does not exist is released already. One still in use (the
/// archiver's connection not closed on the server yet) is refused by the server (SQLSTATE
/// 55006): the drop is tried again every 2 s for [`RELEASE_WAIT`], then the error is returned.
pub fn release_slot(conn: &Conn, place: &WalPlace) -> Result<bool> {
    let slot = slot_name(&place.scope, &place.asset);
    let deadline =
        Instant::now() + crate::layout::env_duration("LIFEBOAT_SLOT_RELEASE_WAIT", RELEASE_WAIT)?;
    loop {
        // The slot's name is ours (`[a-z0-9_]`), never user text.
        let dropped = crate::postgres::query(
            conn,
            "postgres",
            &format!(
                "WITH d AS (SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = '{slot}') SELECT count(*) FROM d"
            ),
        );
        match dropped {
            Err(e) if still_in_use(&e) && Instant::now() < deadline => {
                eprintln!(
                    "lifeboat-agent: replication slot {slot} still in use (its archiver's connection is not closed on the server yet): trying again"
                );
                std::thread::sleep(Duration::from_secs(2));
            }
            dropped => return Ok(dropped?.trim() == "1"),
        }
    }
}

/// Whether `e` is the server refusing to drop a slot that a connection still uses.
fn still_in_use(e: &AgentError) -> bool {
    e.message.contains("SQLSTATE 55006")
}

/// One asset's WAL in a policy's store directory.
#[derive(Clone, Debug)]
pub struct WalPlace {
    pub scope: Scope,
    pub asset: String,
}

impl WalPlace {
    /// The asset's name becomes a path segment: a Kubernetes-style name only.
    pub fn new(scope: Scope, asset: &str) -> Result<Self> {
        let ok = !asset.is_empty()
            && asset.len() <= 63
            && asset
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !asset.starts_with('-');
        if !ok {
            return Err(AgentError::config(format!("invalid asset name {asset:?}")));
        }
        Ok(Self {
            scope,
            asset: asset.to_owned(),
        })
    }
}

impl Prefix for WalPlace {
    fn parts(&self) -> Vec<&str> {
        let mut p = self.scope.parts();
        p.extend([WAL_DIR, self.asset.as_str()]);
        p
    }

    fn dir(&self, root: &Path) -> PathBuf {
        self.scope.dir(root).join(WAL_DIR).join(&self.asset)
    }
}

impl std::fmt::Display for WalPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{WAL_DIR}/{}", self.scope, self.asset)
    }
}

/// The record of one archived segment, signed with the namespace's key and written after the
/// segment's object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SegmentRecord {
    pub schema_version: u32,
    pub namespace: String,
    pub policy: String,
    pub asset: String,
    /// The segment's file name.
    pub segment: String,
    /// The segment being written: only its first `valid_bytes` are WAL the source had flushed
    /// when it was copied, and a restore zeroes the rest.
    pub partial: bool,
    pub valid_bytes: u64,
    /// When it was archived: every WAL record in it was written before.
    pub archived_at: Timestamp,
    /// sha256 of the segment's plaintext.
    pub raw_sha256: String,
    /// The stored object (name, sizes, sha256 of the stored bytes).
    pub artifact: ArtifactInfo,
    /// `zstd:<level>` or `none`.
    pub compression: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<MetadataSignature>,
}

impl SegmentRecord {
    pub fn segment(&self) -> Option<Segment> {
        Segment::parse(&self.segment)
    }

    /// The record's own object name.
    pub fn file_name(&self) -> String {
        record_name(&self.segment, self.partial)
    }
}

fn record_name(segment: &str, partial: bool) -> String {
    if partial {
        format!("{segment}.partial.json")
    } else {
        format!("{segment}.json")
    }
}

/// Reading and writing objects of a [`WalPlace`].
impl Store {
    /// Streams `produce` through `encoding` into object `name` of `place`; on a directory it
    /// appears whole (written aside, fsynced, renamed).
    pub fn wal_put(
        &self,
        place: &WalPlace,
        name: &str,
        encoding: &Encoding,
        produce: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> Result<Stored> {
        match self {
            Store::Local(root) => {
                let dir = place.dir(root);
                fs::create_dir_all(&dir).map_err(|e| AgentError::storage(dir.display(), e))?;
                let (tmp, path) = (dir.join(format!(".{name}.tmp")), dir.join(name));
                let what = path.display().to_string();
                let file =
                    fs::File::create(&tmp).map_err(|e| AgentError::storage(tmp.display(), e))?;
                let (stored, writer) = stream::store_with(file, encoding, &what, produce)?;
                writer
                    .sync_all()
                    .and_then(|()| fs::rename(&tmp, &path))
                    .and_then(|()| fs::File::open(&dir)?.sync_all())
                    .map_err(|e| AgentError::storage(&what, e))?;
                Ok(stored)
            }
            Store::S3(s3) => {
                let mut parts = place.parts();
                parts.push(name);
                let writer = s3.upload(s3.key(&parts));
                let (stored, writer) = stream::store_with(writer, encoding, &s3.what, produce)
                    .map_err(|e| s3.reclassify(e))?;
                writer.finish().map_err(|e| s3.err(e))?;
                Ok(stored)
            }
        }
    }

    /// The names of `place`'s objects.
    pub fn wal_names(&self, place: &WalPlace) -> Result<Vec<String>> {
        self.names_at(place)
    }

    /// The bytes of object `name` of `place`.
    pub fn wal_read(&self, place: &WalPlace, name: &str) -> Result<Vec<u8>> {
        self.read_at(place, name)
    }

    /// Deletes object `name` of `place` (gone already is fine).
    pub fn wal_delete(&self, place: &WalPlace, name: &str) -> Result<()> {
        self.delete_at(place, name, true)
    }

    /// Signs `record` and writes it (replacing any record of the same segment and kind).
    fn wal_commit(
        &self,
        place: &WalPlace,
        mut record: SegmentRecord,
        key: &SigningKey,
    ) -> Result<SegmentRecord> {
        record.signature = None;
        let value = serde_json::to_value(&record)
            .map_err(|e| AgentError::config(format!("serializing a segment record: {e}")))?;
        record.signature = Some(key.sign_record(RECORD_LABEL, &value)?);
        let json = serde_json::to_vec_pretty(&record)
            .map_err(|e| AgentError::config(format!("serializing a segment record: {e}")))?;
        self.wal_put(place, &record.file_name(), &Encoding::default(), &mut |w| {
            w.write_all(&json)
                .map_err(|e| AgentError::storage("segment record", e))
        })?;
        Ok(record)
    }

    /// Every segment record of `place`, each signature and place checked: a record that is
    /// unsigned, signed with another key, changed, or lying under another name, asset, policy or
    /// namespace is an Integrity failure, never skipped.
    pub fn wal_records(&self, place: &WalPlace, key: &SigningKey) -> Result<Vec<SegmentRecord>> {
        let mut out = Vec::new();
        for name in self.wal_names(place)? {
            if !name.ends_with(".json") {
                continue;
            }
            let what = format!("{place}/{name}");
            let bytes = self.wal_read(place, &name)?;
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| AgentError::integrity(format!("{what}: malformed record: {e}")))?;
            key.check_record(RECORD_LABEL, &value, &what)?;
            let record: SegmentRecord = serde_json::from_value(value)
                .map_err(|e| AgentError::integrity(format!("{what}: malformed record: {e}")))?;
            let placed = record.schema_version == SEGMENT_RECORD_VERSION
                && record.namespace == place.scope.namespace().unwrap_or_default()
                && record.policy == place.scope.policy()
                && record.asset == place.asset
                && record.segment().is_some()
                && record.file_name() == name
                && !record.artifact.name.contains('/')
                && !record.artifact.name.starts_with('.');
            if !placed {
                return Err(AgentError::integrity(format!(
                    "{what}: the record is for segment {:?} of {}/{}/{}: moved from another place, refused",
                    record.segment, record.namespace, record.policy, record.asset
                )));
            }
            out.push(record);
        }
        Ok(out)
    }
}

/// The encoding's label in records and metadata.
pub fn compression_label(encoding: &Encoding) -> String {
    encoding
        .level
        .map_or_else(|| "none".to_owned(), |l| format!("zstd:{l}"))
}

/// Takes a base backup of the server `conn` reaches: `pg_basebackup` over the replication
/// protocol, a tar of the data directory streamed to stdout (WAL to the backup's end fetched
/// into it, so it is consistent alone), after a fast checkpoint, stored as every artifact is.
/// The metadata records the WAL position and timeline pg_basebackup reported.
pub fn base_backup(
    store: &Store,
    key: &SigningKey,
    place: &WalPlace,
    conn: &Conn,
    encoding: &Encoding,
) -> Result<BackupMetadata> {
    let started = Timestamp::now();
    let slot = store.claim(&place.scope, started)?;
    let name = format!(
        "{}{BASE_SUFFIX}{}",
        place.asset,
        crate::jobs::suffix(encoding)
    );
    let result = (|| {
        let mut cmd = Command::new(tools::find("pg_basebackup")?);
        let _pass = conn.env(&mut cmd, "replication")?;
        cmd.args([
            "--pgdata=-",
            "--format=tar",
            "--wal-method=fetch",
            "--checkpoint=fast",
            "--verbose",
            "--no-password",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| AgentError::config(format!("pg_basebackup: {e}")))?;
        let errors = drain(child.stderr.take());
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| AgentError::config("pg_basebackup: no stdout"))?;
        let stored = store.put(&slot, &name, &mut stdout, encoding);
        drop(stdout);
        if stored.is_err() {
            let _ = child.kill();
        }
        let status = child
            .wait()
            .map_err(|e| AgentError::config(format!("pg_basebackup: {e}")))?;
        let stderr = errors.join().unwrap_or_default();
        if !status.success() {
            stored?;
            return Err(AgentError::new(
                tools::classify(&stderr),
                format!("pg_basebackup failed: {}", tools::tail(&stderr)),
            ));
        }
        let stored = stored?;
        let wal = parse_basebackup_log(&stderr)?;
        Ok((stored, wal, Timestamp::now()))
    })();
    let (stored, wal, finished) = match result {
        Ok(v) => v,
        Err(e) => {
            store.discard(&slot, std::slice::from_ref(&name));
            store.release(&slot);
            return Err(e);
        }
    };
    let metadata = BackupMetadata {
        schema_version: METADATA_SCHEMA_VERSION,
        namespace: String::new(),
        backup_id: slot.id.clone(),
        policy: place.scope.policy().to_owned(),
        asset: place.asset.clone(),
        kind: AssetKind::Postgres,
        tool: tools::version("pg_basebackup")?,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        source: format!("postgres://{}:{}", conn.host, conn.port),
        started_at: started,
        finished_at: finished,
        // Replay is consistent once past the backup's end, which pg_basebackup reached before
        // it exited: a target at or after this instant is after it.
        snapshot_time: finished,
        artifacts: vec![ArtifactInfo {
            name,
            raw_bytes: stored.raw_bytes,
            stored_bytes: stored.stored_bytes,
            sha256: stored.sha256,
        }],
        compression: compression_label(encoding),
        encryption: encoding
            .recipients
            .as_ref()
            .map(crate::crypto::Recipients::info),
        canary: None,
        adopted_from: None,
        object_lock: None,
        base_backup: Some(wal),
        signature: None,
    };
    let committed = store.commit(&slot, metadata, key);
    store.release(&slot);
    committed
}

/// The start and end positions and the timeline from `pg_basebackup --verbose`'s log
/// ("write-ahead log start point: 0/2000028 on timeline 1", "write-ahead log end point:
/// 0/2000100"): the only place it reports them when the tar goes to stdout.
fn parse_basebackup_log(stderr: &str) -> Result<BaseBackupWal> {
    let after = |marker: &str| {
        stderr
            .lines()
            .find_map(|l| l.split_once(marker).map(|(_, rest)| rest.trim().to_owned()))
    };
    let missing = |what: &str| {
        AgentError::new(
            lifeboat_api::agent_result::ErrorClass::ToolFailed,
            format!("pg_basebackup did not report its {what}"),
        )
    };
    let start = after("write-ahead log start point:").ok_or_else(|| missing("start point"))?;
    let (start_lsn, timeline) = start
        .split_once(" on timeline ")
        .ok_or_else(|| missing("start timeline"))?;
    let end = after("write-ahead log end point:").ok_or_else(|| missing("end point"))?;
    let timeline: u32 = timeline
        .trim()
        .parse()
        .map_err(|_| missing("start timeline"))?;
    Ok(BaseBackupWal {
        timeline,
        start_lsn: start_lsn.trim().parse::<Lsn>()?.to_string(),
        end_lsn: end.parse::<Lsn>()?.to_string(),
    })
}

fn drain(stderr: Option<std::process::ChildStderr>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut s);
        }
        s
    })
}

/// The long-running archiver of one asset's WAL (`lifeboat-agent wal-archive`).
pub struct Archiver<'a> {
    pub store: &'a Store,
    pub key: &'a SigningKey,
    pub place: WalPlace,
    pub conn: Conn,
    /// pg_receivewal's directory. It should outlive a restart of the archiver: what pg_receivewal
    /// flushed there is what the slot no longer holds.
    pub work_dir: PathBuf,
    /// How often the segment being written is copied to the store: the RPO, in seconds.
    pub partial_every: Duration,
    pub encoding: Encoding,
    /// Set when the archiver is asked to stop ([`stop_on_sigterm`]).
    pub stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// A flag set when the process gets SIGTERM (its pod stopping). The archiver then stores the
/// segments pg_receivewal completed and returns, which stops pg_receivewal and frees the slot,
/// instead of being killed at the end of the grace period: as PID 1 of its container, a process
/// without a handler ignores SIGTERM. A retired archiver's slot can then be dropped at once, and
/// an updated one (`Recreate`) is back seconds later, not 30.
pub fn stop_on_sigterm() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| AgentError::config(format!("a runtime for signals: {e}")))?;
    // Registered here, before the archiver starts: a SIGTERM from now on is seen.
    let mut term = rt
        .block_on(async { signal(SignalKind::terminate()) })
        .map_err(|e| AgentError::config(format!("handling SIGTERM: {e}")))?;
    let flag = stop.clone();
    std::thread::spawn(move || {
        rt.block_on(async move {
            term.recv().await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    });
    Ok(stop)
}

/// The first pause before pg_receivewal is started again after it exited, and the longest.
const RESTART_FIRST: Duration = Duration::from_millis(500);
const RESTART_MAX: Duration = Duration::from_secs(30);

/// pg_receivewal, killed when the archiver returns, and its private password file (libpq reads
/// it at each connection attempt).
struct Receiver {
    child: Child,
    _pass: Option<tempfile::TempDir>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Archiver<'_> {
    /// Creates the slot if absent, then streams WAL for ever: pg_receivewal (restarted when it
    /// exits) writes segments into the work directory; each completed one is stored, recorded
    /// and only then removed locally; every `partial_every` the segment being written is stored
    /// up to the position the slot confirms flushed. Returns only on a failure the archiver
    /// cannot retry (its process is then restarted by its Deployment, and resumes from the slot
    /// and the work directory).
    pub fn run(&self) -> Result<()> {
        let size = crate::postgres::query(&self.conn, "postgres", "SHOW wal_segment_size")?;
        if size.trim() != "16MB" {
            return Err(AgentError::new(
                lifeboat_api::agent_result::ErrorClass::TargetUnsupported,
                format!(
                    "the server's WAL segments are {}, the archiver handles 16MB",
                    size.trim()
                ),
            ));
        }
        fs::create_dir_all(&self.work_dir)
            .map_err(|e| AgentError::storage(self.work_dir.display(), e))?;
        let slot = slot_name(&self.place.scope, &self.place.asset);
        self.receivewal(&slot, &["--create-slot", "--if-not-exists"])?
            .child
            .wait()
            .map_err(|e| AgentError::config(format!("pg_receivewal --create-slot: {e}")))
            .and_then(|s| {
                if s.success() {
                    Ok(())
                } else {
                    Err(AgentError::new(
                        lifeboat_api::agent_result::ErrorClass::ToolFailed,
                        format!("pg_receivewal could not create the slot {slot}"),
                    ))
                }
            })?;
        tracing::info!(slot = %slot, place = %self.place, "archiving WAL");
        let (partials, complete): (Vec<SegmentRecord>, Vec<SegmentRecord>) = self
            .store
            .wal_records(&self.place, self.key)?
            .into_iter()
            .partition(|r| r.partial);
        let mut archived: BTreeMap<String, SegmentRecord> = complete
            .into_iter()
            .map(|r| (r.segment.clone(), r))
            .collect();
        let mut receiver: Option<Receiver> = None;
        // The newest copy a previous run stored: what has been reported archived.
        let mut last_partial: Option<(String, u64)> = partials
            .into_iter()
            .map(|r| (r.segment, r.valid_bytes))
            .max();
        let mut next_partial = Instant::now();
        // pg_receivewal exiting again and again (the source down, the slot's WAL removed) is
        // restarted after a doubling pause, not in a tight loop.
        let mut pause = RESTART_FIRST;
        let mut restart_at = Instant::now();
        loop {
            if self.stop.load(std::sync::atomic::Ordering::SeqCst) {
                // What the slot let go of is stored before the pod (and its work directory) go:
                // the segment being written while pg_receivewal still reports its position, then
                // pg_receivewal stopped, then the completed segments. A partial copy is stored
                // only once no completed segment waits before it (no gap in the archive), so
                // those go first: a segment completed by a switch just before the SIGTERM (a
                // base backup ends with one) would otherwise leave the partial unstored. One
                // completed meanwhile is caught by the next round.
                if receiver.is_some() {
                    for _ in 0..3 {
                        self.ship_completed(&mut archived)?;
                        if self.ship_partial(&slot, &mut last_partial)? {
                            break;
                        }
                    }
                }
                drop(receiver.take());
                self.ship_completed(&mut archived)?;
                tracing::info!(slot = %slot, "stopped (SIGTERM)");
                return Ok(());
            }
            let running = match receiver.as_mut().map(|r| r.child.try_wait()) {
                Some(Ok(None)) => true,
                Some(Ok(Some(status))) => {
                    tracing::warn!("pg_receivewal exited ({status}); restarting it in {pause:?}");
                    receiver = None;
                    restart_at = Instant::now() + pause;
                    pause = (pause * 2).min(RESTART_MAX);
                    false
                }
                Some(Err(e)) => return Err(AgentError::config(format!("pg_receivewal: {e}"))),
                None => false,
            };
            if !running && Instant::now() >= restart_at {
                receiver = Some(self.receivewal(&slot, &["--synchronous", "--no-loop"])?);
            } else if running {
                pause = RESTART_FIRST;
            }
            self.ship_completed(&mut archived)?;
            if Instant::now() >= next_partial {
                next_partial = Instant::now() + self.partial_every;
                if self.ship_partial(&slot, &mut last_partial)? {
                    mark_caught_up(&self.work_dir, Timestamp::now())?;
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `pg_receivewal` on the work directory and the slot, with `extra` options.
    fn receivewal(&self, slot: &str, extra: &[&str]) -> Result<Receiver> {
        let mut cmd = Command::new(tools::find("pg_receivewal")?);
        let pass = self.conn.env(&mut cmd, "replication")?;
        cmd.arg("--directory")
            .arg(&self.work_dir)
            .arg("--slot")
            .arg(slot)
            .arg("--no-password")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|e| AgentError::config(format!("pg_receivewal: {e}")))?;
        Ok(Receiver { child, _pass: pass })
    }

    /// Stores every completed segment in the work directory, oldest first: the object, then its
    /// record, then the local file goes. One already recorded with the same content is not
    /// stored again; one recorded with other content is refused (it would rewrite history).
    fn ship_completed(&self, archived: &mut BTreeMap<String, SegmentRecord>) -> Result<()> {
        let mut names: Vec<String> = fs::read_dir(&self.work_dir)
            .map_err(|e| AgentError::storage(self.work_dir.display(), e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| Segment::parse(n).is_some())
            .collect();
        names.sort();
        for name in names {
            let path = self.work_dir.join(&name);
            let (raw_sha256, size) = stream::checksum(&path)?;
            if let Some(done) = archived.get(&name) {
                if done.raw_sha256 != raw_sha256 {
                    return Err(AgentError::integrity(format!(
                        "{}/{name} is archived with other content: refused to replace it",
                        self.place
                    )));
                }
            } else {
                let object = format!("{name}{}", crate::jobs::suffix(&self.encoding));
                let mut file =
                    fs::File::open(&path).map_err(|e| AgentError::storage(path.display(), e))?;
                let record =
                    self.store_segment(&name, &mut file, &object, false, size, raw_sha256)?;
                archived.insert(name.clone(), record);
                tracing::info!(segment = %name, "archived");
            }
            // The copy of the segment being written is superseded.
            self.drop_partial(&name)?;
            fs::remove_file(&path).map_err(|e| AgentError::storage(path.display(), e))?;
        }
        Ok(())
    }

    /// Stores the segment being written, up to what pg_receivewal reported flushed (read before
    /// the copy, so the copy holds at least that much), when it grew past the last copy stored:
    /// a restarted archiver never replaces a copy with a shorter one.
    /// The new copy gets a name of its own and the record points at it, so a failure between
    /// the two leaves the previous, consistent pair.
    ///
    /// Returns whether the store now holds everything pg_receivewal reported flushed: the
    /// archiver is caught up (what [`caught_up_at`] reports).
    fn ship_partial(&self, slot: &str, last: &mut Option<(String, u64)>) -> Result<bool> {
        let names: Vec<String> = fs::read_dir(&self.work_dir)
            .map_err(|e| AgentError::storage(self.work_dir.display(), e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        // A copy of a later segment while an earlier one is not stored yet would let the archive
        // claim a reach it does not have without a gap: those go first (next round).
        if names.iter().any(|n| Segment::parse(n).is_some()) {
            return Ok(false);
        }
        let Some(file) = names.into_iter().find(|n| {
            n.strip_suffix(".partial")
                .and_then(Segment::parse)
                .is_some()
        }) else {
            return Ok(false);
        };
        let name = file.trim_end_matches(".partial").to_owned();
        let Some(segment) = Segment::parse(&name) else {
            return Ok(false);
        };
        // What the running pg_receivewal reported flushed on its own connection: the slot's
        // restart_lsn would not do, it still holds an earlier stream's position while a
        // restarted pg_receivewal fills the segment again from its start. The slot's name is
        // ours (slot_name: `[a-z0-9_]`), never user text.
        let flushed = crate::postgres::query(
            &self.conn,
            "postgres",
            &format!(
                "SELECT r.flush_lsn FROM pg_stat_replication r JOIN pg_replication_slots s \
                 ON s.active_pid = r.pid WHERE s.slot_name = '{slot}'"
            ),
        )?;
        let Ok(flushed) = flushed.trim().parse::<Lsn>() else {
            return Ok(false);
        };
        if flushed.segno() != segment.segno {
            return Ok(false);
        }
        let valid = flushed.0 - segment.segno * SEGMENT_BYTES;
        if valid == 0
            || last
                .as_ref()
                .is_some_and(|(n, v)| *n == name && *v >= valid)
        {
            // Nothing new since the last copy (or the segment just began): all is stored.
            return Ok(true);
        }
        let path = self.work_dir.join(&file);
        // One read, checksummed and stored as read: pg_receivewal goes on writing the file, and
        // renames it once the segment is complete (then it is shipped as such).
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(AgentError::storage(path.display(), e)),
        };
        let raw_sha256 = stream::hex(&sha2::Sha256::digest(&bytes));
        let suffix = crate::jobs::suffix(&self.encoding);
        let object = format!("{name}.partial.{valid:08x}{suffix}");
        self.store_segment(
            &name,
            &mut bytes.as_slice(),
            &object,
            true,
            valid,
            raw_sha256,
        )?;
        // The copy the record no longer names; one a restarted archiver does not know of goes
        // with the segment's other copies once it completes (drop_partial).
        if let Some((previous, before)) = last.as_ref()
            && *previous == name
        {
            self.store
                .wal_delete(&self.place, &format!("{name}.partial.{before:08x}{suffix}"))?;
        }
        *last = Some((name, valid));
        Ok(true)
    }

    /// Removes the stored copy of `segment` while it was being written: its record first.
    fn drop_partial(&self, segment: &str) -> Result<()> {
        let names = self.store.wal_names(&self.place)?;
        let prefix = format!("{segment}.partial");
        if !names.iter().any(|n| n.starts_with(&prefix)) {
            return Ok(());
        }
        self.store
            .wal_delete(&self.place, &record_name(segment, true))?;
        for n in names
            .iter()
            .filter(|n| n.starts_with(&prefix) && !n.ends_with(".json"))
        {
            self.store.wal_delete(&self.place, n)?;
        }
        Ok(())
    }

    fn store_segment(
        &self,
        segment: &str,
        source: &mut dyn Read,
        object: &str,
        partial: bool,
        valid_bytes: u64,
        raw_sha256: String,
    ) -> Result<SegmentRecord> {
        let what = format!("{}/{object}", self.place);
        let stored = self
            .store
            .wal_put(&self.place, object, &self.encoding, &mut |w| {
                stream::copy_from(source, w, &what)
            })?;
        let record = SegmentRecord {
            schema_version: SEGMENT_RECORD_VERSION,
            namespace: self.place.scope.namespace().unwrap_or_default().to_owned(),
            policy: self.place.scope.policy().to_owned(),
            asset: self.place.asset.clone(),
            segment: segment.to_owned(),
            partial,
            valid_bytes,
            archived_at: Timestamp::now(),
            raw_sha256,
            artifact: ArtifactInfo {
                name: object.to_owned(),
                raw_bytes: stored.raw_bytes,
                stored_bytes: stored.stored_bytes,
                sha256: stored.sha256,
            },
            compression: compression_label(&self.encoding),
            encryption: self
                .encoding
                .recipients
                .as_ref()
                .map(crate::crypto::Recipients::info),
            signature: None,
        };
        self.store.wal_commit(&self.place, record, self.key)
    }
}

/// What retention may delete of an asset's WAL: the segments (complete or partial copies)
/// wholly before the start of the oldest base backup kept, so the chain from every kept base
/// backup to now stays whole. With no base backup kept, nothing: WAL alone restores nothing,
/// but deleting it could break a base backup retention has not listed yet. A record that names
/// no segment is never a candidate.
pub fn removable_segments<'a>(
    kept_base_starts: &[Lsn],
    records: &'a [SegmentRecord],
) -> Vec<&'a SegmentRecord> {
    let Some(oldest) = kept_base_starts.iter().map(|l| l.segno()).min() else {
        return Vec::new();
    };
    records
        .iter()
        .filter(|r| r.segment().is_some_and(|s| s.segno < oldest))
        .collect()
}

/// Where the archiver writing into `work_dir` records when it was last caught up: beside the
/// directory, not in it (pg_receivewal owns that one).
pub fn caught_up_file(work_dir: &Path) -> PathBuf {
    work_dir.with_extension("caught-up")
}

/// Records that at `now` the store held everything pg_receivewal had flushed. Written to a
/// temporary file and renamed, so a reader never sees half a time.
pub fn mark_caught_up(work_dir: &Path, now: Timestamp) -> Result<()> {
    let path = caught_up_file(work_dir);
    let tmp = path.with_extension("caught-up.tmp");
    fs::write(&tmp, now.to_string()).map_err(|e| AgentError::storage(tmp.display(), e))?;
    fs::rename(&tmp, &path).map_err(|e| AgentError::storage(path.display(), e))
}

/// When the archiver writing into `work_dir` was last caught up (`None`: not yet, since its
/// pod started). What its readiness probe compares with the time the policy allows.
pub fn caught_up_at(work_dir: &Path) -> Result<Option<Timestamp>> {
    let path = caught_up_file(work_dir);
    match fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| AgentError::integrity(format!("{}: not a time: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AgentError::storage(path.display(), e)),
    }
}

/// Deletes (with `execute`; lists otherwise) the WAL of `place` that no base backup still in
/// the store needs ([`removable_segments`]): each record first, then its object, so a
/// half-deleted segment is never listed. Returns the segments concerned.
pub fn prune(
    store: &Store,
    key: &SigningKey,
    place: &WalPlace,
    execute: bool,
) -> Result<Vec<String>> {
    let trust = crate::signing::Trust {
        key: Some(key),
        unsigned: crate::signing::Unsigned::Refuse,
    };
    let starts = store
        .list_asset(&place.scope, &place.asset, trust)?
        .into_iter()
        .filter_map(|l| l.metadata.base_backup)
        .map(|w| w.start_lsn.parse::<Lsn>())
        .collect::<Result<Vec<_>>>()?;
    let records = store.wal_records(place, key)?;
    let removable = removable_segments(&starts, &records);
    if execute {
        for r in &removable {
            store.wal_delete(place, &r.file_name())?;
            store.wal_delete(place, &r.artifact.name)?;
        }
    }
    Ok(removable.iter().map(|r| r.file_name()).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_a_slot_in_use_is_waited_for() {
        use lifeboat_api::agent_result::ErrorClass;
        let busy = AgentError::new(
            ErrorClass::ToolFailed,
            "query failed: SQLSTATE 55006 (object_not_in_prerequisite_state): replication slot \"lifeboat_x\" is active for PID 1531".to_owned(),
        );
        assert!(still_in_use(&busy));
        let refused = AgentError::new(
            ErrorClass::ToolFailed,
            "query failed: SQLSTATE 42501 (insufficient_privilege): must be superuser or replication role".to_owned(),
        );
        assert!(!still_in_use(&refused));
    }

    #[test]
    fn positions_and_segment_names_are_postgresql_s() {
        let l: Lsn = "1/3000148".parse().unwrap();
        assert_eq!(l.to_string(), "1/3000148");
        assert_eq!(l.segno(), 256 + 3);
        let s = Segment {
            timeline: 1,
            segno: l.segno(),
        };
        assert_eq!(s.name(), "000000010000000100000003");
        assert_eq!(Segment::parse(&s.name()), Some(s));
        for bad in [
            "00000001000000010000000",
            "000000010000000100000100",
            "00000001000000010000000g",
            "000000010000000100000003.partial",
            "../00000001000000010000003",
        ] {
            assert_eq!(Segment::parse(bad), None, "{bad}");
        }
        assert!("0/zz".parse::<Lsn>().is_err());
    }

    #[test]
    fn slot_names_are_stable_distinct_and_valid() {
        let a = slot_name(&Scope::new("shop", "orders").unwrap(), "db");
        assert_eq!(a, slot_name(&Scope::new("shop", "orders").unwrap(), "db"));
        assert_ne!(a, slot_name(&Scope::new("shop", "orders").unwrap(), "db2"));
        assert_ne!(a, slot_name(&Scope::new("shop2", "orders").unwrap(), "db"));
        assert!(a.len() <= 63);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        );
        assert!(WalPlace::new(Scope::new("shop", "orders").unwrap(), "../x").is_err());
    }

    #[test]
    fn the_base_backup_log_gives_the_start_end_and_timeline() {
        let log = "pg_basebackup: initiating base backup, waiting for checkpoint to complete\n\
                   pg_basebackup: checkpoint completed\n\
                   pg_basebackup: write-ahead log start point: 0/2000028 on timeline 1\n\
                   pg_basebackup: write-ahead log end point: 0/2000100\n\
                   pg_basebackup: base backup completed\n";
        let w = parse_basebackup_log(log).unwrap();
        assert_eq!(
            (w.timeline, w.start_lsn.as_str(), w.end_lsn.as_str()),
            (1, "0/2000028", "0/2000100")
        );
        assert!(parse_basebackup_log("pg_basebackup: base backup completed\n").is_err());
    }
}
