//! What the agent hands back: the per-backup `metadata.json` (the audit trail, written last as the
//! commit marker) and the small JSON summary it writes to the container's termination message,
//! which the operator reads from the finished pod.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::backup_policy::AssetKind;

/// Version of the `metadata.json` layout; readers refuse versions they do not know. Version 2
/// records the namespace and carries a signature.
pub const METADATA_SCHEMA_VERSION: u32 = 2;

/// The unsigned metadata of agents before version 2, without a namespace: read only when a
/// restore or a verification opts in to legacy backups.
pub const LEGACY_METADATA_SCHEMA_VERSION: u32 = 1;

/// Version of the termination-message summary.
pub const SUMMARY_VERSION: u32 = 1;

/// Kubernetes keeps at most 4096 bytes of a termination message.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// The audit record of one asset's backup, stored as
/// `<root>/<namespace>/<policy>/<id>/<asset>.metadata.json`. Never holds a secret: connection
/// details are host, port and names only. Its place (namespace, policy, id, asset) is recorded
/// and signed, so a copy moved elsewhere is refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupMetadata {
    pub schema_version: u32,
    /// The namespace of the policy (empty in legacy, version 1, metadata).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub backup_id: String,
    pub policy: String,
    pub asset: String,
    pub kind: AssetKind,
    /// The tool that captured the data (`pg_dump`, `redis-cli`, `rclone`, `lifeboat-agent`).
    pub tool: ToolInfo,
    pub agent_version: String,
    /// Where the data came from, without credentials (`postgres://db:5432/shop`).
    pub source: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    /// When the source was captured: what RPO is measured from.
    pub snapshot_time: Timestamp,
    pub artifacts: Vec<ArtifactInfo>,
    pub compression: String,
    /// Set when the artifacts are encrypted: a restore then needs an identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionInfo>,
    /// The canary marker written into the source just before this backup, when the asset asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryMarker>,
    /// Set on a backup `adopt` copied from the layout without namespaces: where it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted_from: Option<AdoptedFrom>,
    /// Set on a PostgreSQL base backup (`lifeboat-agent base-backup`): where its WAL begins,
    /// which a point-in-time restore replays from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_backup: Option<BaseBackupWal>,
    /// Set when the destination locks backups (S3 Object Lock): every object of this backup,
    /// this document included, is locked until then, so retention keeps it at least as long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLockInfo>,
    /// The MAC over everything else in this document (absent only in legacy metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<MetadataSignature>,
}

/// The Object Lock retention of a backup's objects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectLockInfo {
    pub mode: crate::common::ObjectLockMode,
    /// No object of the backup can be deleted or overwritten before this instant.
    pub retain_until: Timestamp,
}

/// The write-ahead-log position of a physical base backup, as `pg_basebackup` reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BaseBackupWal {
    /// The timeline the backup was taken on.
    pub timeline: u32,
    /// The checkpoint the backup starts from (`0/2000028`): replay begins at its segment.
    pub start_lsn: String,
    /// Where the backup ends: a restore is consistent only once replay has passed it.
    pub end_lsn: String,
}

/// Where an adopted backup lay before `adopt` copied it into its namespace's directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdoptedFrom {
    /// The old backup directory or key prefix (`<root>/<policy>/<id>`).
    pub location: String,
    /// The schema version of the metadata it had there.
    pub schema_version: u32,
    pub adopted_at: Timestamp,
}

/// The signature of a metadata document: a MAC over its canonical JSON without this field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetadataSignature {
    pub algorithm: SignatureAlgorithm,
    /// Names the key without revealing it (a MAC of a fixed label), so a backup signed with
    /// another namespace's key is told apart from a tampered one.
    pub key_id: String,
    /// The MAC, lowercase hex.
    pub value: String,
}

/// How metadata is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignatureAlgorithm {
    /// HMAC-SHA256 with the namespace's key.
    #[serde(rename = "HMAC-SHA256")]
    HmacSha256,
}

/// The record that a backup was proven readable, stored as `<asset>.verified.json` beside its
/// metadata: by `verify --record` (every checksum re-read) or by a drill (restored and
/// validated). Retention never deletes an asset's newest verified backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerificationRecord {
    pub backup_id: String,
    pub asset: String,
    pub verified_at: Timestamp,
    pub method: VerificationMethod,
    /// The drill that restored it, for `Drill`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VerificationMethod {
    /// Every artifact re-read against its checksum.
    Checksums,
    /// Restored and validated by a drill: the stronger proof.
    Drill,
}

/// A canary marker: what was written into a source (or read back from a restore) and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryMarker {
    /// The backup (or drill disaster) the marker was written for.
    pub id: String,
    /// When it was written, by the agent's clock.
    pub written_at: Timestamp,
}

/// How the artifacts of a backup were encrypted. Public keys only: enough to tell which
/// identity a restore needs, nothing that decrypts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncryptionInfo {
    /// `age` (age-encryption.org/v1, applied after compression).
    pub algorithm: String,
    /// The age public keys (`age1...`) the artifacts were encrypted to.
    pub recipients: Vec<String>,
}

impl BackupMetadata {
    /// Stored bytes over all artifacts.
    pub fn stored_bytes(&self) -> u64 {
        self.artifacts.iter().map(|a| a.stored_bytes).sum()
    }
}

/// Name and version of an external tool, as it reported itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolInfo {
    pub name: String,
    pub version: String,
}

/// One stored file of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArtifactInfo {
    /// File name relative to the backup directory.
    pub name: String,
    /// Bytes the tool produced, before compression and encryption.
    pub raw_bytes: u64,
    /// Bytes stored.
    pub stored_bytes: u64,
    /// sha256 of the stored bytes, lowercase hex.
    pub sha256: String,
}

/// Failure classes, each with its own exit code so scripts and the operator can tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorClass {
    /// The configuration or the command line is wrong.
    Config,
    /// The source or target could not be reached.
    SourceUnreachable,
    /// Credentials were refused.
    Auth,
    /// A named backup, database or object does not exist.
    NotFound,
    /// The destination failed (full, read-only, unreachable, refused).
    Storage,
    /// A checksum, size or format check failed: the data is not trustworthy.
    Integrity,
    /// A deadline passed.
    Timeout,
    /// A validation check or an objective failed.
    Validation,
    /// A tool failed in a way not classified above.
    ToolFailed,
    /// A Secret (or one of its keys) the job references is not mounted: it does not exist in
    /// the namespace. Secret volumes are optional, so the pod starts and says which one.
    SecretNotFound,
    /// What the job would touch lies outside what it may (a Kubernetes-state selection or dump
    /// beyond its allowed namespaces, or cluster-scoped without the platform's opt-in): refused
    /// before anything was read or written.
    OutOfScope,
    /// The target is running in a way the restore cannot serve safely (a Redis that is itself a
    /// replica, replicates over TLS, refuses CONFIG or REPLICAOF, or reads an older RDB format
    /// than the backup's): refused before it was changed.
    TargetUnsupported,
    /// The server's TLS certificate was not trusted (a private CA without its bundle, or
    /// another server answering): nothing was sent.
    TlsUntrusted,
    /// An S3 location has no `credentialsSecret` and the platform allows no ambient identity
    /// (`LIFEBOAT_S3_AMBIENT_IDENTITY` unset or `none`): nothing was contacted.
    AmbientIdentityDisabled,
    /// Web identity is the platform's choice but the pod has no token file or role
    /// (`AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN`): nothing was contacted, no other
    /// credential source tried.
    WebIdentityMissing,
}

impl ErrorClass {
    /// Process exit code of the agent for this class (0 is success, 1 is left to panics and
    /// the runtime, 2 to argument parsing).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorClass::Config => 3,
            ErrorClass::SourceUnreachable => 4,
            ErrorClass::Auth => 5,
            ErrorClass::NotFound => 6,
            ErrorClass::Storage => 7,
            ErrorClass::Integrity => 8,
            ErrorClass::Timeout => 9,
            ErrorClass::Validation => 10,
            ErrorClass::ToolFailed => 11,
            ErrorClass::SecretNotFound => 12,
            ErrorClass::OutOfScope => 13,
            ErrorClass::TargetUnsupported => 14,
            ErrorClass::TlsUntrusted => 15,
            ErrorClass::AmbientIdentityDisabled => 16,
            ErrorClass::WebIdentityMissing => 17,
        }
    }

    /// Every class, for [`ErrorClass::from_reason`].
    const ALL: [ErrorClass; 15] = [
        ErrorClass::Config,
        ErrorClass::SourceUnreachable,
        ErrorClass::Auth,
        ErrorClass::NotFound,
        ErrorClass::Storage,
        ErrorClass::Integrity,
        ErrorClass::Timeout,
        ErrorClass::Validation,
        ErrorClass::ToolFailed,
        ErrorClass::SecretNotFound,
        ErrorClass::OutOfScope,
        ErrorClass::TargetUnsupported,
        ErrorClass::TlsUntrusted,
        ErrorClass::AmbientIdentityDisabled,
        ErrorClass::WebIdentityMissing,
    ];

    /// The class whose [`ErrorClass::reason`] is `reason` (a Job outcome records the reason).
    pub fn from_reason(reason: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.reason() == reason)
    }

    /// The condition reason the operator reports for this class.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorClass::Config => "InvalidConfig",
            ErrorClass::SourceUnreachable => "SourceUnreachable",
            ErrorClass::Auth => "AuthFailed",
            ErrorClass::NotFound => "NotFound",
            ErrorClass::Storage => "StorageFailed",
            ErrorClass::Integrity => "IntegrityCheckFailed",
            ErrorClass::Timeout => "Timeout",
            ErrorClass::Validation => "ValidationFailed",
            ErrorClass::ToolFailed => "ToolFailed",
            ErrorClass::SecretNotFound => "SecretNotFound",
            ErrorClass::OutOfScope => "OutOfScope",
            ErrorClass::TargetUnsupported => "TargetUnsupported",
            ErrorClass::TlsUntrusted => "TlsUntrusted",
            ErrorClass::AmbientIdentityDisabled => "AmbientIdentityDisabled",
            ErrorClass::WebIdentityMissing => "WebIdentityMissing",
        }
    }
}

/// The agent's verbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Backup,
    Restore,
    Verify,
    Prune,
    List,
    Drill,
    /// A drill's evidence record written next to its backups.
    Evidence,
    /// Backups of the layout without namespaces moved into a namespace's directory.
    Adopt,
    /// A drill's result sent to its webhook.
    Notify,
    /// The backups at a location listed and verified, without any BackupPolicy.
    Catalog,
}

/// The agent's result, small enough for a termination message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSummary {
    pub version: u32,
    pub verb: Verb,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Results of validation checks (`validate`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::restore_request::CheckResult>,
    /// Set when a backup succeeded but its retention pass deleted nothing: why (the
    /// mass-deletion guard). The backup itself counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_refused: Option<String>,
    /// After a backup: where each off-site copy of the asset stands (one per copy the policy
    /// names). A copy that failed does not fail the backup, which counts at the destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<CopyOutcome>,
}

/// One off-site copy after a backup run: the newest backup of the asset it holds, and why this
/// run could not bring it up to date when it could not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyOutcome {
    /// The copy's name in the policy.
    pub name: String,
    /// The newest backup of the asset the copy holds, read back and committed there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_snapshot_time: Option<Timestamp>,
    /// Backups this run copied.
    #[serde(default)]
    pub copied: u32,
    /// Why the copy is not up to date (unreachable, refused, a checksum read back wrong).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What made the copy fail, for the operator's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    /// Why the copy's retention deleted nothing (the mass-deletion guard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_refused: Option<String>,
}

impl AgentSummary {
    /// JSON that fits a termination message: see [`TerminationMessage::to_json`].
    pub fn to_termination_message(&self) -> serde_json::Result<String> {
        TerminationMessage {
            summary: self.clone(),
            checks_report: None,
            catalog: None,
            point_in_time: None,
        }
        .to_json()
    }

    /// Parses a termination message; `None` for anything that is not a summary this operator
    /// understands (a crashed agent, a foreign container, a newer version).
    pub fn from_termination_message(text: &str) -> Option<Self> {
        serde_json::from_str::<Self>(text.trim())
            .ok()
            .filter(|s| s.version == SUMMARY_VERSION)
    }
}

/// Bytes a check's message may keep in a termination message, tried in turn until every failed
/// check fits: room for many checks, and the names of the failed ones before their reasons.
const CHECK_MESSAGE_LIMITS: [usize; 3] = [160, 80, 32];

/// Bytes the summary's own message (and the retention note) may keep before any check is left out.
const SUMMARY_MESSAGE_LIMIT: usize = 1024;

/// Bytes any other text keeps when nothing else is left to shorten (a pathological summary).
const LAST_RESORT_LIMIT: usize = 64;

/// The counts of a validation's checks and where all their results are, for when the summary's
/// `checks` cannot hold them all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChecksReport {
    pub passed: u32,
    pub failed: u32,
    /// Results left out of the summary's `checks` to fit the limit (passed ones first).
    pub omitted: u32,
    /// Where the report of every check, messages in full, was written (absent when it was not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// What the agent writes as its termination message: the summary, and the counts of its checks.
/// A separate document with the summary's fields at its top level, so that readers of the bare
/// summary (which ignores unknown fields) read it unchanged, and summaries without the counts
/// still parse.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminationMessage {
    #[serde(flatten)]
    pub summary: AgentSummary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks_report: Option<ChecksReport>,
    /// What `catalog` found: one entry per asset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<Catalog>,
    /// What a point-in-time restore uses, or would use (its plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_in_time: Option<PointInTimePlan>,
}

/// What a point-in-time restore replays: chosen by the agent from the store (the operator reads
/// no store), shown in the request's plan before anything is written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PointInTimePlan {
    /// The newest base backup consistent at or before the time.
    pub base_backup_id: String,
    pub timeline: u32,
    /// The WAL segments replayed after it, first and last (file names), and how many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_segment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_segment: Option<String>,
    pub segments: u32,
    /// The last segment is a partial copy (the one being written when it was stored).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// The instant recovered to: the time asked for, or (latest) when the newest WAL was stored.
    /// RFC 3339 with its fraction: a `Time` would keep whole seconds, and a point in time is
    /// often finer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovers_to: Option<Timestamp>,
}

/// Each asset's chosen backup at a location (the newest complete one, or the id asked for),
/// its metadata verified (signature, and the place it records equal to where it lies).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Catalog {
    pub entries: Vec<CatalogEntry>,
    /// Entries left out to fit the termination message: a reader must not take the rest for
    /// the whole backup set.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One asset's backup in a [`Catalog`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogEntry {
    pub asset: String,
    pub kind: AssetKind,
    pub backup_id: String,
    pub snapshot_time: Timestamp,
    pub stored_bytes: u64,
    /// Its artifacts are age-encrypted: a restore needs the identity.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    /// Proven readable before (`verify --record`, a drill).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verified: bool,
}

impl TerminationMessage {
    /// JSON within [`TERMINATION_MESSAGE_LIMIT`], whatever the summary holds, so the result is
    /// never lost to the kubelet's cut. With checks, the counts are taken from all of them, the
    /// failed ones go first and those with a canary marker next; each check's message is
    /// shortened, then checks are left out from the end (counted in `omitted`), then the
    /// summary's message, then any other text.
    pub fn to_json(&self) -> serde_json::Result<String> {
        let mut m = self.clone();
        let checks = &mut m.summary.checks;
        if !checks.is_empty() {
            let failed = checks.iter().filter(|c| !c.passed).count();
            let report = m.checks_report.get_or_insert_with(ChecksReport::default);
            report.failed = u32::try_from(failed).unwrap_or(u32::MAX);
            report.passed = u32::try_from(checks.len() - failed).unwrap_or(u32::MAX);
            report.omitted = 0;
            // Failed first, then those carrying a canary marker (a drill measures its RPO from
            // them); stable, so the checks keep their order otherwise.
            checks.sort_by_key(|c| (c.passed, c.canary.is_none()));
        }
        let json = serde_json::to_string(&m)?;
        if json.len() <= TERMINATION_MESSAGE_LIMIT {
            return Ok(json);
        }
        for text in [&mut m.summary.message, &mut m.summary.retention_refused]
            .into_iter()
            .flatten()
        {
            shorten(text, SUMMARY_MESSAGE_LIMIT);
        }
        for c in &mut m.summary.copies {
            for text in [&mut c.error, &mut c.retention_refused]
                .into_iter()
                .flatten()
            {
                shorten(text, SUMMARY_MESSAGE_LIMIT / 4);
            }
        }
        let mut json = serde_json::to_string(&m)?;
        if json.len() > TERMINATION_MESSAGE_LIMIT && !m.summary.checks.is_empty() {
            // Measured rather than by serializing after each left-out check: the rest with the
            // widest count, plus `,"checks":[` and `]`, plus each check and its comma.
            let mut all = std::mem::take(&mut m.summary.checks);
            let failed = all.iter().filter(|c| !c.passed).count();
            let report = m.checks_report.get_or_insert_with(ChecksReport::default);
            report.omitted = u32::MAX;
            let room = TERMINATION_MESSAGE_LIMIT
                .saturating_sub(serde_json::to_string(&m)?.len() + r#","checks":[]"#.len());
            let mut keep = 0;
            // Shorter messages until every failed check fits, or the shortest.
            for limit in CHECK_MESSAGE_LIMITS {
                for c in &mut all {
                    shorten(&mut c.message, limit);
                }
                keep = 0;
                let mut left = room;
                for c in &all {
                    let len = serde_json::to_string(c)?.len() + 1;
                    if len > left {
                        break;
                    }
                    left -= len;
                    keep += 1;
                }
                if keep >= failed {
                    break;
                }
            }
            let omitted = all.split_off(keep).len();
            m.summary.checks = all;
            if let Some(report) = m.checks_report.as_mut() {
                report.omitted = u32::try_from(omitted).unwrap_or(u32::MAX);
            }
            json = serde_json::to_string(&m)?;
        }
        // A catalog's entries are left out from the end, counted, until the rest fits.
        while json.len() > TERMINATION_MESSAGE_LIMIT {
            let Some(c) = m.catalog.as_mut() else { break };
            if c.entries.pop().is_none() {
                break;
            }
            c.omitted = c.omitted.saturating_add(1);
            json = serde_json::to_string(&m)?;
        }
        // Rarely reached: what is left is the summary's own text.
        for limit in [SUMMARY_MESSAGE_LIMIT / 4, LAST_RESORT_LIMIT, 0] {
            if json.len() <= TERMINATION_MESSAGE_LIMIT {
                break;
            }
            let s = &mut m.summary;
            let texts = [&mut s.message, &mut s.retention_refused]
                .into_iter()
                .flatten()
                .chain(
                    s.copies
                        .iter_mut()
                        .flat_map(|c| [&mut c.error, &mut c.retention_refused])
                        .flatten(),
                )
                .chain(m.checks_report.as_mut().and_then(|r| r.location.as_mut()));
            for text in texts {
                shorten(text, limit);
            }
            if limit <= LAST_RESORT_LIMIT {
                for text in [&mut s.asset, &mut s.backup_id, &mut s.sha256]
                    .into_iter()
                    .flatten()
                {
                    shorten(text, limit);
                }
            }
            json = serde_json::to_string(&m)?;
        }
        Ok(json)
    }

    /// Parses a termination message; `None` for anything that is not a summary this operator
    /// understands (a crashed agent, a foreign container, a newer version).
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str::<Self>(text.trim())
            .ok()
            .filter(|m| m.summary.version == SUMMARY_VERSION)
    }
}

/// Cuts `text` to at most `limit` bytes on a character boundary, marking the cut with `…`.
fn shorten(text: &mut String, limit: usize) {
    if text.len() <= limit {
        return;
    }
    let ellipsis = '…';
    let mut keep = limit.saturating_sub(ellipsis.len_utf8());
    while !text.is_char_boundary(keep) {
        keep -= 1;
    }
    text.truncate(keep);
    if text.len() + ellipsis.len_utf8() <= limit {
        text.push(ellipsis);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(message: Option<String>) -> AgentSummary {
        let t: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        AgentSummary {
            version: SUMMARY_VERSION,
            verb: Verb::Backup,
            ok: false,
            asset: Some("orders-db".into()),
            backup_id: Some("20261124T100000Z".into()),
            started_at: t,
            finished_at: t,
            snapshot_time: None,
            stored_bytes: None,
            sha256: None,
            error_class: Some(ErrorClass::Storage),
            message,
            checks: Vec::new(),
            retention_refused: None,
            copies: Vec::new(),
        }
    }

    #[test]
    fn long_messages_are_cut_to_fit_a_termination_message() {
        for len in [10, 4000, 4096, 100_000] {
            let s = summary(Some("é".repeat(len)));
            let json = s.to_termination_message().unwrap();
            assert!(
                json.len() <= TERMINATION_MESSAGE_LIMIT,
                "{len}: {}",
                json.len()
            );
            let back = AgentSummary::from_termination_message(&json).unwrap();
            assert_eq!(back.error_class, Some(ErrorClass::Storage));
            assert_eq!(back.asset.as_deref(), Some("orders-db"));
        }
        let short = summary(Some("disk full".into()));
        assert_eq!(
            AgentSummary::from_termination_message(&short.to_termination_message().unwrap()),
            Some(short)
        );
    }

    #[test]
    fn foreign_or_future_messages_are_ignored() {
        assert_eq!(
            AgentSummary::from_termination_message("Error: OOMKilled"),
            None
        );
        let mut future = summary(None);
        future.version = SUMMARY_VERSION + 1;
        let json = serde_json::to_string(&future).unwrap();
        assert_eq!(AgentSummary::from_termination_message(&json), None);
    }

    #[test]
    fn exit_codes_are_distinct_and_clear_of_reserved_codes() {
        let all = [
            ErrorClass::Config,
            ErrorClass::SourceUnreachable,
            ErrorClass::Auth,
            ErrorClass::NotFound,
            ErrorClass::Storage,
            ErrorClass::Integrity,
            ErrorClass::Timeout,
            ErrorClass::Validation,
            ErrorClass::ToolFailed,
            ErrorClass::SecretNotFound,
            ErrorClass::OutOfScope,
            ErrorClass::TargetUnsupported,
            ErrorClass::TlsUntrusted,
        ];
        let mut codes: Vec<i32> = all.iter().map(|c| c.exit_code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        assert!(codes.iter().all(|c| *c > 2 && *c < 126));
        // Every class is read back from the reason it is reported under (a Job's condition).
        for c in all {
            assert_eq!(ErrorClass::from_reason(c.reason()), Some(c), "{c:?}");
        }
    }

    #[test]
    fn metadata_refuses_unknown_fields() {
        let json = r#"{"schemaVersion":1,"backupId":"x","policy":"p","asset":"a","kind":"postgres",
            "tool":{"name":"pg_dump","version":"15"},"agentVersion":"0.1.0","source":"postgres://h:5432/d",
            "startedAt":"2026-11-24T10:00:00Z","finishedAt":"2026-11-24T10:01:00Z",
            "snapshotTime":"2026-11-24T10:00:00Z","artifacts":[{"name":"a.dump.zst","rawBytes":10,
            "storedBytes":5,"sha256":"00"}],"compression":"zstd:3"}"#;
        let m: BackupMetadata = serde_json::from_str(json).unwrap();
        assert_eq!(m.stored_bytes(), 5);
        let tampered = json.replace("\"compression\"", "\"password\":\"x\",\"compression\"");
        assert!(serde_json::from_str::<BackupMetadata>(&tampered).is_err());
    }
}
