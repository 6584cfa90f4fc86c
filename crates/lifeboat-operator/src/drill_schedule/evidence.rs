//! The audit evidence of a finished drill: the record (pure, from the drill's record and its
//! RestoreRequest's status) and the Job that has the agent write it next to the policy's backups
//! as `drill-<id>.json`, completed with each restored backup's artifacts and checksums from their
//! metadata. The operator never reads or writes backup storage itself: the agent, with the
//! policy's own destination and credentials, does.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use lifeboat_api::agent_job::{AgentEvidenceJob, signing_key_ref};
use lifeboat_api::drill_schedule::{DrillRecord, DrillVerdict};
use lifeboat_api::evidence::{
    DrillEvidence, EVIDENCE_SCHEMA_VERSION, EvidenceAchieved, EvidenceCheck, EvidenceObjectives,
    EvidenceRestore, EvidenceStep, EvidenceVerdict,
};
use lifeboat_api::restore_request::{
    PlannedRestore, RestoreRequestStatus, StepState, canary_check_name,
};
use lifeboat_api::{BackupPolicy, DrillSchedule};

use crate::config::AgentConfig;
use crate::error::{Error, Result};
use crate::names;
use crate::pod::AgentPod;
use lifeboat_api::kinds::object_storage::s3_secrets;

/// The last step's name: the checks, plus the Jobs' start-up the restore steps do not count.
pub const VALIDATE_STEP: &str = "validate and Job start-up";

/// Finished evidence Jobs are removed after a week; the record they wrote stays with the backups.
const EVIDENCE_JOB_TTL_SECONDS: i32 = 7 * 24 * 3600;

/// The evidence Job of drill `drill_id`: one per drill, never re-made.
pub fn evidence_job_name(drill_id: &str) -> String {
    names::bounded_name(&[drill_id, "evidence"], names::NAME_MAX)
}

/// Seconds from `from` to `to`, never negative (clocks of different pods).
fn seconds(from: Timestamp, to: Timestamp) -> f64 {
    ((to.as_millisecond() - from.as_millisecond()).max(0) as f64) / 1000.0
}

/// The assets the drill restored, with the canary marker each check found.
fn restored(plan: &[PlannedRestore], record: &DrillRecord) -> Vec<EvidenceRestore> {
    let started = record.started_at.0;
    plan.iter()
        .filter(|p| p.state == Some(StepState::Done))
        .map(|p| EvidenceRestore {
            asset: p.asset.clone(),
            backup_id: p.backup_id.clone(),
            snapshot_time: p.snapshot_time.as_ref().map_or(started, |t| t.0),
            target: p.target.clone(),
            artifacts: Vec::new(),
            canary_written: None,
            canary_found: record
                .checks
                .iter()
                .find(|c| c.name == canary_check_name(&p.asset))
                .and_then(|c| c.canary.clone()),
        })
        .collect()
}

/// Steps in the order they ran: the fresh backups until the restore was accepted, each asset's
/// restore (sequential; the agent's own time, as the RestoreRequest measured it), then the rest
/// until the restore request finished: the checks, and every agent pod's scheduling and
/// start-up, which no step above counts.
fn steps(
    plan: &[PlannedRestore],
    record: &DrillRecord,
    restore: Option<&RestoreRequestStatus>,
) -> Vec<EvidenceStep> {
    let started = record.started_at.0;
    let finished = record.finished_at.0;
    let mut steps = Vec::new();
    let restore_start = restore.and_then(|r| r.started_at.as_ref()).map(|t| t.0);
    let restore_end = restore.and_then(|r| r.finished_at.as_ref()).map(|t| t.0);
    if let Some(rs) = restore_start {
        steps.push(EvidenceStep {
            name: "backup".into(),
            started_at: started,
            seconds: seconds(started, rs),
        });
        let mut cursor = rs;
        for p in plan {
            let Some(d) = p.duration_seconds else {
                continue;
            };
            steps.push(EvidenceStep {
                name: format!("restore {}", p.asset),
                started_at: cursor,
                seconds: d,
            });
            if let Ok(next) = cursor.checked_add(jiff::SignedDuration::from_secs_f64(d.max(0.0))) {
                cursor = next;
            }
        }
        if !record.checks.is_empty() {
            let end = restore_end.unwrap_or(finished);
            steps.push(EvidenceStep {
                name: VALIDATE_STEP.into(),
                started_at: cursor.min(end),
                seconds: seconds(cursor.min(end), end),
            });
        }
    } else {
        steps.push(EvidenceStep {
            name: "backup".into(),
            started_at: started,
            seconds: seconds(started, finished),
        });
    }
    steps
}

/// Where the record of `drill_id` lands, relative to the policy's destination.
pub fn evidence_path(namespace: &str, policy: &str, drill_id: &str) -> String {
    format!("{namespace}/{policy}/drill-{drill_id}.json")
}

/// The evidence of `record` as far as the operator knows it. `restore` is the drill's
/// RestoreRequest status (absent when the drill failed before restoring). The agent fills in
/// what the backups hold; the snapshot times here are the plan's, replaced by the metadata's.
pub fn evidence(
    ds: &DrillSchedule,
    record: &DrillRecord,
    restore: Option<&RestoreRequestStatus>,
) -> DrillEvidence {
    let started = record.started_at.0;
    let finished = record.finished_at.0;
    let plan = restore.map(|r| r.plan.as_slice()).unwrap_or_default();
    let restored = restored(plan, record);
    let steps = steps(plan, record, restore);
    DrillEvidence {
        schema_version: EVIDENCE_SCHEMA_VERSION,
        drill_id: record.id.clone(),
        policy: ds.spec.policy.clone(),
        agent_version: String::new(),
        started_at: started,
        disaster_at: started,
        finished_at: finished,
        verdict: match record.verdict {
            DrillVerdict::Passed => EvidenceVerdict::Passed,
            DrillVerdict::ObjectivesMissed => EvidenceVerdict::ObjectivesMissed,
            DrillVerdict::Failed => EvidenceVerdict::Failed,
        },
        objectives: EvidenceObjectives {
            rto_seconds: ds.spec.objectives.rto.as_secs(),
            rpo_seconds: ds.spec.objectives.rpo.as_secs(),
        },
        achieved: EvidenceAchieved {
            // Not restored: the time until the drill gave up, a lower bound of the RTO.
            rto_seconds: record
                .rto_seconds
                .unwrap_or_else(|| seconds(started, finished)),
            rpo_seconds: record.rpo_seconds,
            rpo_canary_seconds: record.rpo_canary_seconds,
            rto_met: record.rto_met,
            rpo_met: record.rpo_seconds.map(|_| record.rpo_met),
        },
        restored,
        checks: record
            .checks
            .iter()
            .map(|c| EvidenceCheck {
                name: c.name.clone(),
                passed: c.passed,
                detail: c.message.clone(),
            })
            .collect(),
        steps,
        message: record.message.clone(),
    }
}

/// The Job that writes `evidence` next to `policy`'s backups, owned by the DrillSchedule.
pub fn evidence_job(
    ds: &DrillSchedule,
    policy: &BackupPolicy,
    evidence: DrillEvidence,
    agent: &AgentConfig,
) -> Result<Job> {
    let ns = ds.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let name = evidence_job_name(&evidence.drill_id);
    let location = policy.spec.destination.clone();
    let doc = AgentEvidenceJob {
        namespace: ns.clone(),
        policy: policy.name_any(),
        location: location.clone(),
        evidence,
        signing_key: Some(signing_key_ref()),
    };
    let mut secrets = location.s3.as_ref().map(s3_secrets).unwrap_or_default();
    secrets.push(signing_key_ref());
    let labels = BTreeMap::from([
        (names::LABEL_NAME.to_owned(), "lifeboat-agent".to_owned()),
        (
            names::LABEL_MANAGED_BY.to_owned(),
            names::MANAGED_BY.to_owned(),
        ),
        (
            names::LABEL_DRILL.to_owned(),
            names::label_value(&ds.name_any()),
        ),
        (names::LABEL_ROLE.to_owned(), "evidence".to_owned()),
    ]);
    let overrides = ds.spec.pod_template.as_ref();
    let pod = AgentPod {
        config: agent,
        args: vec!["evidence".into()],
        env: vec![crate::pod::job_env(&doc)?],
        ports: Vec::new(),
        secrets,
        destination: &location,
        overrides,
        labels: labels.clone(),
        annotations: Default::default(),
        api_account: None,
        data_volume: None,
    };
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(ns),
            labels: Some(labels),
            owner_references: Some(vec![
                ds.controller_owner_ref(&())
                    .ok_or(Error::MissingObjectKey("uid"))?,
            ]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // Writing a small file is retried a few times (a storage blip), then left to be seen.
            backoff_limit: Some(3),
            active_deadline_seconds: Some(600),
            ttl_seconds_after_finished: Some(EVIDENCE_JOB_TTL_SECONDS),
            template: pod.template(),
            ..Default::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn drill() -> DrillSchedule {
        serde_json::from_value(json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DrillSchedule",
            "metadata": {"name": "quarterly", "namespace": "shop", "uid": "u-1"},
            "spec": {"schedule": "0 6 1 * *", "policy": "orders", "assets": ["db", "cache"],
                     "staging": {"targets": [
                         {"asset": "db", "postgres": {"host": "s", "user": "u", "database": "d"}},
                         {"asset": "cache", "redis": {"host": "c"}}]},
                     "objectives": {"rto": "30m", "rpo": "15m"}}
        }))
        .unwrap()
    }

    fn policy(destination: serde_json::Value) -> BackupPolicy {
        serde_json::from_value(json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "orders", "namespace": "shop", "uid": "p-1"},
            "spec": {"schedule": "@hourly", "retention": {"keepLast": 3},
                     "assets": [{"name": "db", "postgres": {"host": "db", "user": "u", "databases": ["d"]}}],
                     "destination": destination}
        }))
        .unwrap()
    }

    fn record(verdict: &str, extra: serde_json::Value) -> DrillRecord {
        let mut r = json!({"id": "quarterly-20261124t100000z",
            "startedAt": "2026-11-24T10:00:00Z", "finishedAt": "2026-11-24T10:05:00Z",
            "verdict": verdict, "rtoMet": verdict == "Passed", "rpoMet": verdict == "Passed"});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        serde_json::from_value(r).unwrap()
    }

    fn restore() -> RestoreRequestStatus {
        serde_json::from_value(json!({
            "phase": "Succeeded",
            "startedAt": "2026-11-24T10:00:40Z", "finishedAt": "2026-11-24T10:05:00Z",
            "plan": [
                {"asset": "db", "backupId": "b1", "target": "postgres://s:5432/d", "state": "Done",
                 "durationSeconds": 200.0, "snapshotTime": "2026-11-24T10:00:10Z"},
                {"asset": "cache", "backupId": "b1", "target": "redis://c:6379", "state": "Done",
                 "durationSeconds": 20.0}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn a_passed_drill_becomes_evidence_with_every_step_in_order() {
        let r = record(
            "Passed",
            json!({"rtoSeconds": 300.0, "rpoSeconds": 0.0, "backups": ["db=b1", "cache=b1"],
                   "checks": [{"name": "orders", "passed": true, "message": "", "attempts": 1, "durationSeconds": 0.5}]}),
        );
        let e = evidence(&drill(), &r, Some(&restore()));
        assert_eq!(e.verdict, EvidenceVerdict::Passed);
        assert_eq!(e.policy, "orders");
        assert_eq!(
            (e.objectives.rto_seconds, e.objectives.rpo_seconds),
            (1800, 900)
        );
        assert_eq!(e.achieved.rto_seconds, 300.0);
        let steps: Vec<(&str, f64)> = e
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.seconds))
            .collect();
        assert_eq!(
            steps,
            vec![
                ("backup", 40.0),
                ("restore db", 200.0),
                ("restore cache", 20.0),
                (VALIDATE_STEP, 40.0)
            ]
        );
        assert_eq!(
            e.steps[2].started_at,
            "2026-11-24T10:04:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            e.restored
                .iter()
                .map(|r| r.asset.as_str())
                .collect::<Vec<_>>(),
            ["db", "cache"]
        );
        assert_eq!(e.checks[0].name, "orders");
        assert!(e.message.is_empty());
    }

    #[test]
    fn a_drill_that_never_restored_says_what_it_did_not_measure() {
        let r = record(
            "Failed",
            json!({"message": "backup of db: SourceUnreachable"}),
        );
        let e = evidence(&drill(), &r, None);
        assert_eq!(e.verdict, EvidenceVerdict::Failed);
        assert!(e.restored.is_empty());
        assert_eq!(e.achieved.rto_seconds, 300.0, "until the drill gave up");
        assert_eq!(e.message, "backup of db: SourceUnreachable");
        assert_eq!(
            (e.achieved.rpo_seconds, e.achieved.rpo_met),
            (None, None),
            "an RPO not measured is absent, neither 0 nor missed"
        );
        assert_eq!(e.steps.len(), 1);
    }

    #[test]
    fn the_job_is_named_after_the_drill_owned_by_it_and_holds_no_secret() {
        let ds = drill();
        let r = record("Passed", json!({"rtoSeconds": 300.0, "rpoSeconds": 0.0}));
        let p = policy(json!({"s3": {"endpoint": "http://s3:9000", "bucket": "b",
            "credentialsSecret": {"name": "s3-creds"}}}));
        let job = evidence_job(
            &ds,
            &p,
            evidence(&ds, &r, Some(&restore())),
            &AgentConfig::default(),
        )
        .unwrap();
        assert_eq!(job.name_any(), "quarterly-20261124t100000z-evidence");
        assert_eq!(job.owner_references()[0].kind, "DrillSchedule");
        let spec = job.spec.unwrap();
        let pod = spec.template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.args.as_deref(), Some(&["evidence".to_owned()][..]));
        let env = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == lifeboat_api::agent_job::JOB_ENV)
            .unwrap();
        let doc: AgentEvidenceJob = serde_json::from_str(env.value.as_deref().unwrap()).unwrap();
        assert_eq!(doc.policy, "orders");
        assert_eq!(doc.evidence.drill_id, "quarterly-20261124t100000z");
        // The S3 keys and the namespace's signing key are mounted files, referenced by name.
        let volumes = pod.volumes.unwrap();
        for secret in ["s3-creds", "lifeboat-signing-key"] {
            assert!(volumes.iter().any(|v| {
                v.secret
                    .as_ref()
                    .is_some_and(|s| s.secret_name.as_deref() == Some(secret))
            }));
        }
        assert_eq!(
            doc.signing_key.unwrap().name,
            lifeboat_api::agent_job::SIGNING_KEY_SECRET
        );
        assert_eq!(
            evidence_path("shop", "orders", "quarterly-20261124t100000z"),
            "shop/orders/drill-quarterly-20261124t100000z.json"
        );
    }
}
