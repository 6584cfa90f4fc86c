//! Restoring a PostgreSQL asset to a point in time: the newest base backup taken before the
//! target, and the archived WAL from its start, into an empty data directory that PostgreSQL
//! then recovers from on its first start (`recovery.signal`), replaying up to the target and
//! promoting.
//!
//! Everything is fetched and verified (signatures, checksums, the chain of segments without a
//! gap) into a staging directory first; the data directory is written only once all of it
//! holds. The `restore_command` is fixed text (`cp` from the data directory's own
//! `lifeboat-wal/`, relative to the data directory where PostgreSQL runs it): no path or name
//! from a request ever reaches a shell.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Seek, Write};
use std::path::Path;

use jiff::Timestamp;
use lifeboat_api::agent_result::ErrorClass;

use crate::crypto::Identities;
use crate::error::{AgentError, Result};
use crate::layout::{Listed, Store};
use crate::signing::{SigningKey, Trust, Unsigned};
use crate::stream::{self, Decoding};
use crate::wal::{Lsn, SEGMENT_BYTES, Segment, SegmentRecord, WalPlace};

/// Where the verified WAL lies inside the restored data directory.
pub const RESTORED_WAL_DIR: &str = "lifeboat-wal";
/// The restore command PostgreSQL runs (in the data directory) for each segment it needs.
const RESTORE_COMMAND: &str = "cp lifeboat-wal/%f \"%p\"";

/// How far to recover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointInTime {
    /// To the end of the archived WAL, the partial segment included.
    Latest,
    /// To the last transaction committed at or before this instant.
    At(Timestamp),
}

impl std::str::FromStr for PointInTime {
    type Err = AgentError;
    fn from_str(s: &str) -> Result<Self> {
        if s == "latest" {
            return Ok(Self::Latest);
        }
        s.parse::<Timestamp>().map(Self::At).map_err(|e| {
            AgentError::config(format!(
                "point in time {s:?}: neither latest nor an RFC 3339 time: {e}"
            ))
        })
    }
}

/// What a point-in-time restore will use, decided before anything is fetched.
#[derive(Debug)]
pub struct Plan {
    pub target: PointInTime,
    pub base: Listed,
    pub timeline: u32,
    pub start_lsn: Lsn,
    /// The segments to replay, in order: complete ones, then at most one partial copy.
    pub segments: Vec<SegmentRecord>,
    /// When the newest archived WAL was stored: the latest point this restore reaches.
    pub newest_wal: Option<Timestamp>,
}

impl Plan {
    /// What the operator shows of it in the request's plan.
    pub fn summary(&self) -> lifeboat_api::agent_result::PointInTimePlan {
        lifeboat_api::agent_result::PointInTimePlan {
            base_backup_id: self.base.id.clone(),
            timeline: self.timeline,
            first_segment: self.segments.first().map(|s| s.segment.clone()),
            last_segment: self.segments.last().map(|s| s.segment.clone()),
            segments: u32::try_from(self.segments.len()).unwrap_or(u32::MAX),
            partial: self.segments.last().is_some_and(|s| s.partial),
            recovers_to: match self.target {
                PointInTime::At(t) => Some(t),
                PointInTime::Latest => self.newest_wal,
            },
        }
    }
}

/// What was restored.
#[derive(Debug)]
pub struct Restored {
    pub backup_id: String,
    pub timeline: u32,
    pub segments: usize,
    pub partial: bool,
    /// The target, or for latest the time the newest WAL copy was archived.
    pub recovers_to: Option<Timestamp>,
}

/// Chooses the base backup and the chain of segments for `target`. Refused: a target before
/// the oldest base backup or after the newest archived WAL (NotFound), a chain with a gap
/// between the base backup and the target (Integrity).
pub fn plan(
    store: &Store,
    key: &SigningKey,
    place: &WalPlace,
    target: PointInTime,
) -> Result<Plan> {
    let trust = Trust {
        key: Some(key),
        unsigned: Unsigned::Refuse,
    };
    let bases: Vec<Listed> = store
        .list_asset(&place.scope, &place.asset, trust)?
        .into_iter()
        .filter(|l| l.metadata.base_backup.is_some())
        .collect();
    let base = match target {
        PointInTime::Latest => bases.last(),
        PointInTime::At(t) => bases.iter().rev().find(|l| l.metadata.snapshot_time <= t),
    }
    .cloned()
    .ok_or_else(|| {
        AgentError::not_found(match (target, bases.first()) {
            (PointInTime::At(t), Some(oldest)) => format!(
                "{t} is before the oldest base backup of {place} ({}, consistent at {}): nothing to recover from",
                oldest.id, oldest.metadata.snapshot_time
            ),
            _ => format!("no base backup of {place}"),
        })
    })?;
    let Some(wal) = base.metadata.base_backup.clone() else {
        return Err(AgentError::not_found(format!("no base backup of {place}")));
    };
    let start_lsn: Lsn = wal.start_lsn.parse()?;
    let start = start_lsn.segno();
    let records = store.wal_records(place, key)?;
    let mut complete: BTreeMap<u64, SegmentRecord> = BTreeMap::new();
    let mut partial: BTreeMap<u64, SegmentRecord> = BTreeMap::new();
    for r in records {
        let Some(s) = r.segment() else { continue };
        if s.timeline != wal.timeline || s.segno < start {
            continue;
        }
        if r.partial {
            partial.insert(s.segno, r);
        } else {
            complete.insert(s.segno, r);
        }
    }
    let newest_wal = complete
        .values()
        .chain(partial.values())
        .map(|r| r.archived_at)
        .max();
    if let PointInTime::At(t) = target
        && newest_wal.is_none_or(|n| t > n)
    {
        return Err(AgentError::not_found(format!(
            "{t} is after the newest archived WAL of {place} ({}): it cannot be reached",
            newest_wal.map_or_else(|| "none".to_owned(), |n| n.to_string())
        )));
    }
    // The chain: consecutive complete segments from the base backup's start, then the copy of
    // the segment after them being written, if any.
    let mut segments = Vec::new();
    let mut next = start;
    while let Some(r) = complete.get(&next) {
        segments.push(r.clone());
        next += 1;
    }
    if let Some(p) = partial.get(&next) {
        segments.push(p.clone());
    }
    let reached = segments.iter().map(|r| r.archived_at).max();
    // Anything archived past the chain's end (a later segment, a copy of one being written)
    // means a segment between is missing.
    let beyond = complete
        .range(next..)
        .chain(partial.range(next + 1..))
        .next()
        .map(|(n, _)| *n);
    let covered = match target {
        PointInTime::Latest => beyond.is_none(),
        PointInTime::At(t) => reached.is_some_and(|r| r >= t),
    };
    if !covered {
        let missing = Segment {
            timeline: wal.timeline,
            segno: next,
        };
        return Err(AgentError::integrity(format!(
            "the WAL of {place} has a gap: segment {} is missing after base backup {}, so the chain does not reach the target",
            missing.name(),
            base.id
        )));
    }
    Ok(Plan {
        target,
        timeline: wal.timeline,
        start_lsn,
        segments,
        newest_wal,
        base,
    })
}

/// Carries out `plan` into `data_dir`, which must be empty (created when absent). Every
/// artifact is fetched, its checksum and (for encrypted ones) its identity checked, and every
/// segment decoded and checked against its record, into a staging directory first; only then
/// is the base backup unpacked into `data_dir`, the segments placed in its
/// [`RESTORED_WAL_DIR`], and recovery configured.
pub fn restore(
    store: &Store,
    place: &WalPlace,
    plan: &Plan,
    data_dir: &Path,
    identities: Option<Identities>,
) -> Result<Restored> {
    check_empty(data_dir)?;
    let mut decoding = Decoding {
        compressed: false,
        identities,
    };
    let encrypted = plan.base.metadata.encryption.is_some()
        || plan.segments.iter().any(|s| s.encryption.is_some());
    if encrypted && decoding.identities.is_none() {
        return Err(AgentError::config(format!(
            "the backups of {place} are encrypted: restoring them needs the identity"
        )));
    }
    let staging = tempfile::Builder::new()
        .prefix("lifeboat-pitr-")
        .tempdir()
        .map_err(|e| AgentError::storage("temporary directory", e))?;
    // The base backup: its checksum first (a download from S3, or the stored file).
    let local = store.local(&plan.base)?;
    let [artifact] = plan.base.metadata.artifacts.as_slice() else {
        return Err(AgentError::integrity(format!(
            "base backup {} has {} artifacts, not one",
            plan.base.id,
            plan.base.metadata.artifacts.len()
        )));
    };
    let tar_path = local.dir.join(&artifact.name);
    stream::verify(&tar_path, &artifact.sha256, artifact.stored_bytes)?;
    if let Some(ids) = &decoding.identities {
        stream::check_identity(&tar_path, ids)?;
    }
    // Each segment: stored bytes against the record, then the plaintext against the record.
    let wal = staging.path().join("wal");
    fs::create_dir(&wal).map_err(|e| AgentError::storage(wal.display(), e))?;
    for r in &plan.segments {
        let what = format!("{place}/{}", r.artifact.name);
        let stored = staging.path().join("stored");
        fs::write(&stored, store.wal_read(place, &r.artifact.name)?)
            .map_err(|e| AgentError::storage(stored.display(), e))?;
        decoding.compressed = r.compression.starts_with("zstd");
        let out_path = wal.join(&r.segment);
        let out =
            fs::File::create(&out_path).map_err(|e| AgentError::storage(out_path.display(), e))?;
        stream::unpack_verified(
            &stored,
            &decoding,
            &r.artifact.sha256,
            r.artifact.stored_bytes,
            std::io::BufWriter::new(out),
        )
        .map_err(|e| AgentError::new(e.class, format!("{what}: {}", e.message)))?;
        let (raw, size) = stream::checksum(&out_path)?;
        if raw != r.raw_sha256 || size != SEGMENT_BYTES || r.valid_bytes > SEGMENT_BYTES {
            return Err(AgentError::integrity(format!(
                "{what}: the segment is not what its record says (sha256 {raw}, {size} bytes): refused"
            )));
        }
        if r.partial {
            // Never replay past what the source had flushed when the copy was taken.
            zero_from(&out_path, r.valid_bytes)?;
        }
    }
    // All verified: now the data directory.
    fs::create_dir_all(data_dir).map_err(|e| AgentError::storage(data_dir.display(), e))?;
    decoding.compressed = plan.base.metadata.compression.starts_with("zstd");
    let plain = stream::open(&tar_path, &decoding)?;
    tar::Archive::new(plain)
        .unpack(data_dir)
        .map_err(|e| AgentError::storage(data_dir.display(), e))?;
    let restored_wal = data_dir.join(RESTORED_WAL_DIR);
    fs::create_dir(&restored_wal).map_err(|e| AgentError::storage(restored_wal.display(), e))?;
    for r in &plan.segments {
        let (from, to) = (wal.join(&r.segment), restored_wal.join(&r.segment));
        fs::copy(&from, &to).map_err(|e| AgentError::storage(to.display(), e))?;
    }
    let mut settings = format!(
        "\n# Written by lifeboat-agent: recovery from base backup {}\nrestore_command = '{RESTORE_COMMAND}'\nrecovery_target_action = 'promote'\nrecovery_target_timeline = 'current'\n",
        plan.base.id
    );
    if let PointInTime::At(t) = plan.target {
        // A Timestamp the agent formatted, never the request's text.
        settings.push_str(&format!(
            "recovery_target_time = '{}'\n",
            t.strftime("%Y-%m-%d %H:%M:%S%.6f+00")
        ));
    }
    let auto = data_dir.join("postgresql.auto.conf");
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&auto)
        .and_then(|mut f| f.write_all(settings.as_bytes()))
        .map_err(|e| AgentError::storage(auto.display(), e))?;
    let signal = data_dir.join("recovery.signal");
    fs::write(&signal, b"").map_err(|e| AgentError::storage(signal.display(), e))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| AgentError::storage(data_dir.display(), e))?;
    Ok(Restored {
        backup_id: plan.base.id.clone(),
        timeline: plan.timeline,
        segments: plan.segments.len(),
        partial: plan.segments.last().is_some_and(|r| r.partial),
        recovers_to: match plan.target {
            PointInTime::At(t) => Some(t),
            PointInTime::Latest => plan.newest_wal,
        },
    })
}

/// A data directory is restored into only when it holds nothing: never over a server's files.
fn check_empty(dir: &Path) -> Result<()> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(AgentError::new(
                    ErrorClass::TargetUnsupported,
                    format!(
                        "{} is not empty: a point-in-time restore writes only into an empty data directory",
                        dir.display()
                    ),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(AgentError::storage(dir.display(), e)),
    }
}

/// Overwrites the file at `path` with zeros from byte `from` to its end.
fn zero_from(path: &Path, from: u64) -> Result<()> {
    let io = |e| AgentError::storage(path.display(), e);
    let mut f = fs::OpenOptions::new().write(true).open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    f.seek(std::io::SeekFrom::Start(from)).map_err(io)?;
    let zeros = vec![0u8; 64 * 1024];
    let mut left = len.saturating_sub(from);
    while left > 0 {
        let n = usize::try_from(left.min(zeros.len() as u64)).unwrap_or(zeros.len());
        f.write_all(&zeros[..n]).map_err(io)?;
        left -= n as u64;
    }
    f.sync_all().map_err(io)
}
