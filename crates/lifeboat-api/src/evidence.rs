//! The audit evidence a drill leaves next to the backups it restored, as `drill-<id>.json`: what
//! was restored (backup ids and checksums), which checks ran and how they ended, the achieved RTO
//! and RPO (from timestamps and from canary markers) against the objectives, the verdict and how
//! long each step took. Its JSON Schema is docs/drill-evidence.schema.json, generated from these
//! types (`make crds`) and checked for drift by the tests.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::agent_result::CanaryMarker;

/// The schema version written by this agent; a reader refuses versions it does not know.
/// Version 2: the achieved RPO and whether it met its objective are absent when the drill
/// measured none (mode `Fresh`, or nothing restored); version 1 wrote 0 and `false` there.
pub const EVIDENCE_SCHEMA_VERSION: u32 = 2;

/// The oldest schema version readers still accept (its records read as version 2's).
pub const EVIDENCE_SCHEMA_VERSION_MIN: u32 = 1;

/// One drill's evidence record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Lifeboat drill evidence", extend("$id" = "https://lifeboat.dev/schemas/drill-evidence-v2.json"))]
pub struct DrillEvidence {
    #[schemars(range(min = 1, max = 2))]
    pub schema_version: u32,
    /// The drill's id (its backup's id for a local drill).
    pub drill_id: String,
    /// The BackupPolicy (or local drill) whose backups were restored.
    pub policy: String,
    pub agent_version: String,
    pub started_at: Timestamp,
    /// The simulated disaster: what RPO and RTO are measured against.
    pub disaster_at: Timestamp,
    pub finished_at: Timestamp,
    pub verdict: EvidenceVerdict,
    pub objectives: EvidenceObjectives,
    pub achieved: EvidenceAchieved,
    /// What was restored, per asset, in restore order.
    pub restored: Vec<EvidenceRestore>,
    /// The checks run against the restored data.
    pub checks: Vec<EvidenceCheck>,
    /// Each step and its duration, in order.
    pub steps: Vec<EvidenceStep>,
    /// Why the drill failed or what it missed; empty when it passed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EvidenceVerdict {
    /// Restored, validated, both objectives met.
    Passed,
    /// Restored and validated, an objective missed.
    ObjectivesMissed,
    /// A restore or a check failed.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvidenceObjectives {
    pub rto_seconds: u64,
    pub rpo_seconds: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvidenceAchieved {
    /// Disaster → restored and validated.
    #[schemars(range(min = 0.0))]
    pub rto_seconds: f64,
    /// Disaster − the oldest snapshot restored (timestamps from the metadata). Absent when the
    /// drill measured no RPO: mode `Fresh` backs up at the disaster itself (restorability only),
    /// or nothing was restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub rpo_seconds: Option<f64>,
    /// Disaster − the oldest of the newest canary markers found in the restored targets: RPO
    /// measured from the data itself. Absent when no asset writes canaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub rpo_canary_seconds: Option<f64>,
    pub rto_met: bool,
    /// Absent with `rpoSeconds`: an RPO not measured is neither met nor missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_met: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvidenceRestore {
    pub asset: String,
    pub backup_id: String,
    pub snapshot_time: Timestamp,
    /// Where it was restored to, without credentials.
    pub target: String,
    pub artifacts: Vec<EvidenceArtifact>,
    /// The marker written just before the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_written: Option<CanaryMarker>,
    /// The newest marker the restored target holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_found: Option<CanaryMarker>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvidenceArtifact {
    pub name: String,
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: String,
    pub stored_bytes: u64,
}

impl From<&crate::agent_result::ArtifactInfo> for EvidenceArtifact {
    /// What the evidence keeps of a stored artifact: its name, checksum and size.
    fn from(a: &crate::agent_result::ArtifactInfo) -> Self {
        Self {
            name: a.name.clone(),
            sha256: a.sha256.clone(),
            stored_bytes: a.stored_bytes,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvidenceCheck {
    pub name: String,
    pub passed: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvidenceStep {
    pub name: String,
    pub started_at: Timestamp,
    #[schemars(range(min = 0.0))]
    pub seconds: f64,
}

/// The JSON Schema of [`DrillEvidence`], as committed in docs/drill-evidence.schema.json.
pub fn schema_json() -> Result<String, serde_json::Error> {
    let schema = schemars::schema_for!(DrillEvidence);
    let mut text = serde_json::to_string_pretty(&schema)?;
    text.push('\n');
    Ok(text)
}
