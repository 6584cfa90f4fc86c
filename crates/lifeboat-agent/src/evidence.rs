//! A drill's evidence record, written by the `evidence` Job the operator runs once a drill has
//! finished: the operator knows the timings, the verdict and the checks; what the backups hold
//! (artifacts, checksums, snapshot times, canary markers) is read here from their committed
//! metadata, so the record says what was really restored. A drill that restored and validated
//! also leaves a verification record beside each backup, which retention honours.

use jiff::Timestamp;
use lifeboat_api::agent_job::AgentEvidenceJob;
use lifeboat_api::agent_result::{VerificationMethod, VerificationRecord};
use lifeboat_api::evidence::{EVIDENCE_SCHEMA_VERSION, EvidenceArtifact, EvidenceVerdict};

use crate::error::{AgentError, Result};
use crate::jobs::Env;

/// The file name of a drill's evidence record, next to the policy's backups
/// (`<namespace>/<policy>/drill-<id>.json`).
pub fn file_name(drill_id: &str) -> String {
    format!("drill-{drill_id}.json")
}

/// Completes `job`'s evidence from the backups' metadata, writes it next to them and, for a drill
/// that restored and validated, records each restored backup as verified. Returns where the
/// record was written. A restored backup that cannot be found fails the Job: evidence that cannot
/// name its checksums is no evidence.
pub fn write(env: &Env, job: &AgentEvidenceJob) -> Result<String> {
    let mut evidence = job.evidence.clone();
    if evidence.schema_version != EVIDENCE_SCHEMA_VERSION {
        return Err(AgentError::config(format!(
            "evidence schema version {} (this agent writes {EVIDENCE_SCHEMA_VERSION})",
            evidence.schema_version
        )));
    }
    let id = &evidence.drill_id;
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    {
        return Err(AgentError::config(format!("invalid drill id {id:?}")));
    }
    evidence.agent_version = env!("CARGO_PKG_VERSION").to_owned();
    let scope = crate::layout::Scope::new(&job.namespace, &job.policy)?;
    let mut found = Vec::new();
    for restored in &mut evidence.restored {
        let listed = env
            .store
            .find(&scope, &restored.backup_id, &restored.asset, env.trust()?)?;
        let m = &listed.metadata;
        restored.snapshot_time = m.snapshot_time;
        restored.artifacts = m.artifacts.iter().map(EvidenceArtifact::from).collect();
        restored.canary_written = m.canary.clone();
        found.push(listed);
    }
    let json = serde_json::to_vec_pretty(&evidence)
        .map_err(|e| AgentError::config(format!("serializing the evidence: {e}")))?;
    let written = env.store.put_policy_file(&scope, &file_name(id), json)?;
    if evidence.verdict != EvidenceVerdict::Failed {
        for listed in &found {
            env.store.record_verification(
                listed,
                &VerificationRecord {
                    backup_id: listed.id.clone(),
                    asset: listed.metadata.asset.clone(),
                    verified_at: Timestamp::now(),
                    method: VerificationMethod::Drill,
                    drill_id: Some(id.clone()),
                },
            )?;
        }
    }
    Ok(written)
}
