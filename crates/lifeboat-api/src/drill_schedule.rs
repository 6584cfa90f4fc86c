//! `DrillSchedule`: periodic backup → restore into staging → validate, with RTO and RPO measured
//! against objectives. An untested backup is no backup; this is the resource that tests them.

// kube-derive takes one `printcolumn(...)` per column; clippy reads the repeated `type_ = ...`
// keys across them as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{PendingEvent, PodTemplateOverride, RestoreTarget, SecretKeyRef};
use crate::duration::Duration;
use crate::restore_request::{CheckResult, Validation};

/// A recurring disaster-recovery drill of a BackupPolicy's assets into a staging target.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "lifeboat.dev",
    version = "v1alpha1",
    kind = "DrillSchedule",
    namespaced,
    status = "DrillScheduleStatus",
    shortname = "drill",
    category = "lifeboat",
    derive = "PartialEq",
    doc = "A recurring backup-restore-validate drill with RTO and RPO objectives.",
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(
        name = "Last Drill",
        type_ = "date",
        json_path = ".status.lastRun.startedAt"
    ),
    printcolumn(
        name = "Verdict",
        type_ = "string",
        json_path = ".status.lastRun.verdict"
    ),
    printcolumn(name = "RTO", type_ = "string", json_path = ".status.lastRun.rto"),
    printcolumn(name = "RPO", type_ = "string", json_path = ".status.lastRun.rpo"),
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
#[x_kube(validation = Rule::new("self.assets.all(a, self.staging.targets.exists(t, t.asset == a))").message("every drilled asset needs a staging target: a drill never restores over its source"))]
#[serde(rename_all = "camelCase")]
pub struct DrillScheduleSpec {
    /// When to drill: five-field cron, e.g. `0 6 1 1,4,7,10 *` for quarterly.
    #[schemars(length(min = 1, max = 100))]
    #[x_kube(validation = Rule::new(crate::schedule::SCHEDULE_RULE).message(crate::schedule::SCHEDULE_MESSAGE))]
    pub schedule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new(crate::schedule::TIME_ZONE_RULE).message(crate::schedule::TIME_ZONE_MESSAGE))]
    pub time_zone: Option<String>,
    /// Pause scheduled drills (an on-demand drill still runs).
    #[serde(default)]
    pub suspend: bool,
    /// The BackupPolicy drilled, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub policy: String,
    /// Assets drilled, restored in this order; each needs a staging target.
    #[schemars(length(min = 1, max = 32))]
    pub assets: Vec<String>,
    /// What the drill restores: the newest backup the schedule made before the simulated
    /// disaster at drill start (`Latest`, the default: what a real disaster gets, so the RPO is
    /// measured), or one it takes itself at drill start (`Fresh`: proves restorability only).
    #[serde(default)]
    pub backup: DrillBackupMode,
    /// Where the drill restores to. Never the policy's own sources.
    pub staging: Staging,
    #[serde(default)]
    pub validation: Validation,
    /// The objectives the drill is judged against.
    pub objectives: DrillObjectives,
    /// Finished drills kept in status.
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: u8,
    /// Longest a whole drill may take before it is stopped and failed.
    #[serde(default = "default_drill_timeout")]
    pub timeout: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<Notification>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplateOverride>,
}

fn default_history_limit() -> u8 {
    10
}

fn default_drill_timeout() -> Duration {
    Duration::from_secs(2 * 3600)
}

/// Which backup a drill restores. The default changed from `Fresh` to `Latest`: a drill that
/// restores a backup it just took achieves an RPO of 0 whatever the schedule, which proves
/// nothing about the data a disaster loses. Both names stay accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DrillBackupMode {
    /// The drill start is the simulated disaster: restore each asset's newest good backup taken
    /// before it. Achieved RPO = drill start − that backup's snapshot time, checked against the
    /// canary marker read back from the restored data. No backup yet: the drill fails with
    /// `NoBackupYet`, it never takes one itself.
    #[default]
    Latest,
    /// Back up the assets at drill start, then restore that backup: proves restorability only.
    /// The RPO is not measured (condition `RPOMet` Unknown, `RPONotMeasured`).
    Fresh,
}

/// The staging environment a drill restores into.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Staging {
    #[x_kube(merge_strategy = ListMerge::Map(vec!["asset".into()]))]
    #[schemars(length(min = 1, max = 32))]
    pub targets: Vec<RestoreTarget>,
    /// Where this drill may write, declared once: every target must be inside it, or no drill
    /// runs (condition `OutOfStagingScope`). Without it, only the asset's own source is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<StagingScope>,
    /// A namespace the drill creates for itself (the place for restored cluster state and
    /// staging workloads): egress denied except DNS and what is listed, a ResourceQuota, and
    /// deleted `ttl` after each drill. Needs the chart's `drills.stagingNamespaces` permission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<StagingNamespace>,
}

/// An isolated, self-cleaning staging namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StagingNamespace {
    /// Its name: a namespace that does not exist, or one this DrillSchedule created (any other is
    /// refused with `StagingNamespaceConflict`, never adopted or deleted).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// How long after a drill ends the namespace is deleted (default `1h`: time to look around).
    #[serde(default = "default_staging_ttl")]
    pub ttl: Duration,
    /// Egress allowed besides DNS; everything else leaving the namespace is denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub allow_egress: Vec<EgressAllowance>,
    /// The ResourceQuota's hard limits (default `pods: "20"`), e.g. `requests.cpu: "4"`.
    #[serde(default = "default_staging_quota")]
    pub quota: std::collections::BTreeMap<String, String>,
}

/// Where pods in a staging namespace may connect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressAllowance {
    /// An IP block, e.g. `10.0.12.7/32` (the staging database).
    #[schemars(length(min = 1, max = 64))]
    pub cidr: String,
    /// TCP ports; all ports when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
}

fn default_staging_ttl() -> Duration {
    Duration::from_secs(3600)
}

fn default_staging_quota() -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::from([("pods".to_owned(), "20".to_owned())])
}

/// The staging scope of a drill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StagingScope {
    /// Hosts a PostgreSQL or Redis target (or an object-storage endpoint) may name: exact
    /// (`staging-db.drills.svc`) or a suffix pattern (`*.drills.svc`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub hosts: Vec<String>,
    /// Buckets an object-storage target may name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub buckets: Vec<String>,
    /// Namespaces a Kubernetes-state target may map into.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub namespaces: Vec<String>,
}

impl StagingScope {
    /// Whether `host` is one of [`StagingScope::hosts`].
    pub fn allows_host(&self, host: &str) -> bool {
        host_matches(&self.hosts, host)
    }
}

/// Whether `host` matches one of `patterns`: exact (`hooks.slack.com`) or a suffix pattern
/// (`*.example.com`, which matches `a.example.com` but neither `example.com` nor
/// `evil-example.com`). Case-insensitive, as host names are.
pub fn host_matches(patterns: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    patterns.iter().any(|p| {
        let p = p.to_ascii_lowercase();
        match p.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => host == p,
        }
    })
}

/// Recovery objectives, e.g. the playbook's RTO 30 minutes and RPO 15 minutes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillObjectives {
    /// Recovery time objective: drill start → restored and validated.
    pub rto: Duration,
    /// Recovery point objective: drill start − snapshot time of the restored data.
    pub rpo: Duration,
}

/// Where drill results are announced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Secret key holding a Slack-compatible incoming webhook URL (the URL is a credential).
    pub webhook_secret: SecretKeyRef,
    /// When to notify. (Not named `on`: YAML 1.1 parsers, kubectl's among them, read `on` as `true`.)
    #[serde(default)]
    pub when: NotifyOn,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NotifyOn {
    /// A failed drill or a missed objective.
    #[default]
    Failure,
    Always,
}

/// The verdict of one drill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DrillVerdict {
    /// Restored, validated, and both objectives met.
    Passed,
    /// Restored and validated, but an objective was missed.
    ObjectivesMissed,
    /// The backup, the restore or a check failed.
    Failed,
}

/// What the operator observed of a DrillSchedule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillScheduleStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `RTOMet`, `RPOMet`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<Time>,
    /// The drill in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveDrill>,
    /// The last finished drill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<DrillRecord>,
    /// Finished drills, newest first, at most `historyLimit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<DrillRecord>,
    /// The last `lifeboat.dev/drill-now` token acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill_now_token: Option<String>,
    /// The staging namespace this DrillSchedule created, by uid: the only namespace it ever
    /// deletes (with the uid as a precondition). Written right after the create; a namespace of
    /// the same name with another uid, or one created before this was written, is never its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging_namespace: Option<StagingNamespaceStatus>,
    /// Events owed, published after the write that records them (see `PendingEvent`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub pending_events: Vec<PendingEvent>,
    /// Jobs owed for the last drill (`lastRun`): recorded with the write that ends the drill,
    /// created after it (a Job that exists already is that drill's), then removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub pending_jobs: Vec<DrillJob>,
}

/// A Job a finished drill owes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum DrillJob {
    /// `<drill id>-evidence`: writes the drill's evidence record next to the backups.
    Evidence,
    /// `<drill id>-notify`: sends the drill's webhook notification.
    Notify,
}

/// A staging namespace the operator created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StagingNamespaceStatus {
    pub name: String,
    /// `metadata.uid` of the namespace as the create returned it.
    pub uid: String,
}

/// A drill under way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActiveDrill {
    pub id: String,
    pub started_at: Time,
    pub step: DrillStep,
    /// The RestoreRequest the drill owns, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_request: Option<String>,
}

/// Where an active drill is.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum DrillStep {
    /// Taking the fresh backups (mode `Fresh`).
    Backup,
    /// Restoring into staging.
    Restore,
    /// Running the checks on what was restored.
    Validate,
}

/// A backup a drill restored.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoredBackup {
    pub asset: String,
    /// The backup id.
    pub id: String,
    /// When the backup captured its source (absent in records written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_time: Option<Time>,
    /// This asset's achieved RPO: drill start minus `snapshotTime` (mode `Latest` only: a
    /// `Fresh` drill's backup is taken at the disaster, so it measures none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<f64>,
}

/// `asset=id`, as reports show it.
impl std::fmt::Display for RestoredBackup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.asset, self.id)
    }
}

/// Reads the current `{asset, id}` and the `"asset=id"` strings drills recorded before, so a
/// stored history stays readable.
impl<'de> Deserialize<'de> for RestoredBackup {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            #[serde(rename_all = "camelCase")]
            Record {
                asset: String,
                id: String,
                #[serde(default)]
                snapshot_time: Option<Time>,
                #[serde(default)]
                rpo_seconds: Option<f64>,
            },
            Legacy(String),
        }
        match Wire::deserialize(d)? {
            Wire::Record {
                asset,
                id,
                snapshot_time,
                rpo_seconds,
            } => Ok(RestoredBackup {
                asset,
                id,
                snapshot_time,
                rpo_seconds,
            }),
            Wire::Legacy(s) => s
                .split_once('=')
                .map(|(asset, id)| RestoredBackup {
                    asset: asset.to_owned(),
                    id: id.to_owned(),
                    snapshot_time: None,
                    rpo_seconds: None,
                })
                .ok_or_else(|| {
                    serde::de::Error::custom(format!("a restored backup {s:?} is not asset=id"))
                }),
        }
    }
}

/// One finished drill: the evidence an auditor asks for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillRecord {
    pub id: String,
    pub started_at: Time,
    pub finished_at: Time,
    pub verdict: DrillVerdict,
    /// Achieved RTO in seconds (absent when the restore never completed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto: Option<String>,
    /// Achieved RPO in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo: Option<String>,
    /// RPO from the data itself: drill start minus the oldest canary marker read back from the
    /// restored targets (assets that write canaries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_canary_seconds: Option<f64>,
    pub rto_met: bool,
    pub rpo_met: bool,
    /// Backups restored, per asset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<RestoredBackup>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
    /// Why it failed or what was missed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Where its evidence record is written, relative to the policy's destination
    /// (`<namespace>/<policy>/drill-<id>.json`), by the Job `<id>-evidence`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// The webhook notification of this drill, when `notification` asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<NotificationStatus>,
}

/// What became of a drill's notification. The Job `<id>-notify` sends it once from the drill's
/// namespace; the operator never reads the webhook URL. Only the outcome is kept: never the
/// URL, the remote's status code or its answer (docs/security.md says why).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationStatus {
    pub state: NotificationState,
    /// The Job that sends it.
    pub job: String,
    /// Why it failed: the agent's failure class (`SecretNotFound`, `InvalidConfig`,
    /// `SourceUnreachable`) or the Job's own reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NotificationState {
    /// The Job is created and has not finished.
    Pending,
    /// The webhook answered 2xx.
    Sent,
    /// Not delivered; never retried (a notification is sent at most once).
    Failed,
}
