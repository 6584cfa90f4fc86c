//! `RestoreRequest`: restore a backup (plan first, execute when asked), validate, roll back.

// kube-derive takes one `printcolumn(...)` per column; clippy reads the repeated `type_ = ...`
// keys across them as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::backup_policy::AssetKind;
use crate::common::{
    Destination, PendingEvent, PodTemplateOverride, RestoreTarget, SecretKeyRef, ValidationCheck,
};
use crate::duration::Duration;

/// A one-off restore. With `execute: false` (the default) the operator only resolves the backup
/// and shows the plan in status, like the playbook's restore without `--execute`.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "lifeboat.dev",
    version = "v1alpha1",
    kind = "RestoreRequest",
    namespaced,
    status = "RestoreRequestStatus",
    shortname = "rr",
    category = "lifeboat",
    derive = "PartialEq",
    doc = "A restore of a backup into its source or another target, with validation and rollback.",
    printcolumn(name = "Policy", type_ = "string", json_path = ".spec.source.policy"),
    printcolumn(name = "Backup", type_ = "string", json_path = ".status.backupId"),
    printcolumn(name = "Execute", type_ = "boolean", json_path = ".spec.execute"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "RTO", type_ = "string", json_path = ".status.rto"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!oldSelf.execute || self == oldSelf").message("the spec is frozen once execute is true; create a new RestoreRequest instead"))]
#[x_kube(validation = Rule::new("!has(self.assets) || !has(self.targets) || self.targets.all(t, t.asset in self.assets)").message("every target must name an asset listed in assets"))]
#[x_kube(validation = Rule::new("!has(self.source.takenBefore) || !has(self.source.backupId) || self.source.backupId == 'latest'").message("source.takenBefore chooses among each asset's backups: leave source.backupId at latest"))]
#[serde(rename_all = "camelCase")]
pub struct RestoreRequestSpec {
    /// Which backup to restore.
    pub source: RestoreSource,
    /// Assets to restore, in this order; every asset of the backup when omitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub assets: Vec<String>,
    /// Restore somewhere else than the original source (another host, database, namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["asset".into()]))]
    #[schemars(length(max = 32))]
    pub targets: Vec<RestoreTarget>,
    /// Carry out the restore. While false, the operator only resolves and shows the plan.
    #[serde(default)]
    pub execute: bool,
    /// Checks that must pass after the restore for it to count as done.
    #[serde(default)]
    pub validation: Validation,
    /// Take a safety backup of each target first, and restore it if validation fails.
    #[serde(default)]
    pub rollback_on_failure: bool,
    #[serde(default)]
    pub options: RestoreOptions,
    /// Longest the restore (without validation) may take.
    #[serde(default = "default_restore_timeout")]
    pub timeout: Duration,
    /// Delete this request this long after it finished; kept when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_after_finished: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplateOverride>,
}

fn default_restore_timeout() -> Duration {
    Duration::from_secs(3600)
}

/// The backup to restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSource {
    /// The BackupPolicy whose backups are used (its name is also the backups' directory). With
    /// `location` set the policy need not exist: this only names the directory there, and the
    /// operator reads the backups' catalog from the location itself.
    #[schemars(length(min = 1, max = 253))]
    pub policy: String,
    /// A backup id, or `latest` for the newest complete backup of each asset.
    #[serde(default = "default_backup_id")]
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^(latest|[0-9A-Za-z][0-9A-Za-z._-]*)$")
    )]
    pub backup_id: String,
    /// With `latest`: the newest complete backup of each asset snapshotted at or before this
    /// instant (restore to before a bad change; a drill pins the backups a disaster at its start
    /// would find). When the policy's status names a newer one, the backups are listed at the
    /// policy's destination by a catalog Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_before: Option<Time>,
    /// Read backups from here instead of the policy's destination (restore in another cluster).
    /// Its backups must still be signed with this namespace's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Destination>,
    /// The age identity of encrypted backups when no BackupPolicy names one (a rebuilt cluster);
    /// the policy's `encryption.identitySecret` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_secret: Option<SecretKeyRef>,
    /// For legacy backups only (written before metadata was signed): accept metadata without a
    /// signature. Anyone who can write to the store can forge such a backup, so leave it off
    /// unless restoring a backup taken before the upgrade.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unsigned: bool,
}

fn default_backup_id() -> String {
    "latest".into()
}

/// Application checks after a restore.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Validation {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    #[schemars(length(max = 32))]
    pub checks: Vec<ValidationCheck>,
    /// How long the checks may keep retrying until they all pass.
    #[serde(default = "default_validation_timeout")]
    pub timeout: Duration,
}

impl Default for Validation {
    fn default() -> Self {
        Self {
            checks: Vec::new(),
            timeout: default_validation_timeout(),
        }
    }
}

fn default_validation_timeout() -> Duration {
    Duration::from_secs(300)
}

/// Tuning of the restore tools.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreOptions {
    /// Parallel jobs of `pg_restore`.
    #[serde(default = "default_pg_jobs")]
    #[schemars(range(min = 1, max = 16))]
    pub postgres_jobs: u8,
    /// Drop objects before recreating them (`pg_restore --clean --if-exists`).
    #[serde(default = "default_true")]
    pub clean: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            postgres_jobs: default_pg_jobs(),
            clean: true,
        }
    }
}

fn default_pg_jobs() -> u8 {
    2
}

fn default_true() -> bool {
    true
}

/// Where a RestoreRequest is. Phases only move forward; a finished request is never re-run.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum RestorePhase {
    #[default]
    Pending,
    /// The backup is resolved and the plan is in status; waiting for `execute: true`.
    Planned,
    /// Taking the safety backup of the targets (rollback asked).
    SafetyBackup,
    Restoring,
    Validating,
    RollingBack,
    Succeeded,
    Failed,
    RolledBack,
}

impl RestorePhase {
    /// Whether the request is over and must never run again.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RestorePhase::Succeeded | RestorePhase::Failed | RestorePhase::RolledBack
        )
    }
}

/// What the operator observed of a RestoreRequest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRequestStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub phase: RestorePhase,
    /// The resolved backup id (`latest` resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// What will be (or was) restored where.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<PlannedRestore>,
    /// When the request was accepted for execution: the start of the RTO clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Achieved recovery time: accepted → validated, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    /// The same, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto: Option<String>,
    /// The validation's checks, as many as the agent's report could carry (failed ones first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
    /// How many checks passed and failed, counted over all of them, and how many results were
    /// left out of `checks` to fit the agent's report: `checks` alone can hide that there were
    /// more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks_report: Option<crate::agent_result::ChecksReport>,
    /// Where the safety backups of the targets are kept (rollback asked): a directory next to
    /// the policy's own, `<policy>_safety`, that the policy's retention never prunes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_backups: Option<String>,
    /// The failure that ended the request, or that its rollback is undoing: recorded when seen,
    /// so the rest of the request never depends on the failed Job still existing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<RestoreFailure>,
    /// Events owed, published after the write that records them (see `PendingEvent`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub pending_events: Vec<PendingEvent>,
}

/// Why a restore failed: the step's class (`Integrity`, `ValidationFailed`, ...) and message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreFailure {
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When the failed Job finished.
    pub at: Time,
}

/// Where one step of a restore (its safety backup, restore or rollback) is.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum StepState {
    /// Not started: an earlier step runs first.
    #[default]
    Pending,
    /// Its Job exists and has not finished.
    Running,
    /// Finished well; its result is in status and it never runs again, Job or no Job.
    Done,
    Failed,
}

/// One asset's part of a restore plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedRestore {
    pub asset: String,
    /// The asset's kind: from the policy, or (no policy) from the backup's verified metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<AssetKind>,
    pub backup_id: String,
    /// Snapshot time, size and checksum, when the operator knows the backup (the policy's latest
    /// good one); the agent verifies the checksum before it touches the target either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Where it goes, without credentials (`postgres://host:5432/db`, `redis://host:6379`).
    pub target: String,
    /// The restore's state, once the request executes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StepState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// The state of the safety backup of the target (rollback asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_backup: Option<StepState>,
    /// The backup of the target taken before it was touched (rollback asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_backup_id: Option<String>,
    /// The state of the rollback, when one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<StepState>,
    /// A `dataVolume` target's plan: the base backup and WAL the agent chose for the time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_in_time: Option<crate::agent_result::PointInTimePlan>,
}

/// The result of one validation check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub attempts: u32,
    pub duration_seconds: f64,
    /// For the canary check of an asset that writes canaries (`canary/<asset>`): the newest
    /// marker the restored target holds, which must be its backup's own. A drill measures its
    /// RPO from the data itself with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<crate::agent_result::CanaryMarker>,
}

/// The name of the canary check of `asset`.
pub fn canary_check_name(asset: &str) -> String {
    format!("canary/{asset}")
}
