//! What a finished agent Job says: its conditions and the JSON summary the agent left in its
//! container's termination message. A Job counts as a good backup only when it completed *and*
//! the agent reported success: "the tool exited 0" is not enough.

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use lifeboat_api::agent_result::{AgentSummary, ChecksReport, TerminationMessage};
use lifeboat_api::conditions::Status;

use crate::names;
use crate::pod::AGENT_CONTAINER;

/// The result of one finished Job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobOutcome {
    pub job: String,
    pub asset: String,
    pub finished_at: Timestamp,
    pub result: Result<AgentSummary, JobFailure>,
    /// A validation's counts of its checks (all of them, when `checks` could not carry all).
    pub checks_report: Option<ChecksReport>,
}

/// Why a Job did not produce a good backup.
#[derive(Clone, Debug, PartialEq)]
pub struct JobFailure {
    /// CamelCase reason: the agent's error class, or the Job's/container's own reason.
    pub reason: String,
    pub message: String,
    /// Validation check results the agent reported, if any.
    pub checks: Vec<lifeboat_api::restore_request::CheckResult>,
}

/// `Some((succeeded, finished_at, reason, message))` once the Job has finished.
fn finished(job: &Job) -> Option<(bool, Timestamp, String, String)> {
    let status = job.status.as_ref()?;
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let done = conditions.iter().find(|c| {
        (c.type_ == "Complete" || c.type_ == "Failed") && Status::parse(&c.status) == Status::True
    })?;
    let at = status
        .completion_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| done.last_transition_time.as_ref().map(|t| t.0))?;
    Some((
        done.type_ == "Complete",
        at,
        done.reason.clone().unwrap_or_default(),
        done.message.clone().unwrap_or_default(),
    ))
}

/// The catalog a finished catalog Job's agent reported in its termination message.
pub fn catalog(pods: &[Pod]) -> Option<lifeboat_api::agent_result::Catalog> {
    terminated(pods)?
        .message
        .as_deref()
        .and_then(TerminationMessage::parse)?
        .catalog
}

/// What a finished point-in-time plan Job's agent reported it would use.
pub fn point_in_time(pods: &[Pod]) -> Option<lifeboat_api::agent_result::PointInTimePlan> {
    terminated(pods)?
        .message
        .as_deref()
        .and_then(TerminationMessage::parse)?
        .point_in_time
}

/// The agent container's terminated state in the newest pod.
fn terminated(pods: &[Pod]) -> Option<&k8s_openapi::api::core::v1::ContainerStateTerminated> {
    let mut newest: Option<(&Pod, Timestamp)> = None;
    for pod in pods {
        let started = pod
            .creation_timestamp()
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH);
        if newest.is_none_or(|(_, t)| started >= t) {
            newest = Some((pod, started));
        }
    }
    newest
        .and_then(|(p, _)| p.status.as_ref())
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == AGENT_CONTAINER))
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
}

/// The agent's termination message and the container's terminated reason, from the newest pod.
fn agent_report(pods: &[Pod]) -> (Option<TerminationMessage>, Option<String>) {
    let terminated = terminated(pods);
    let message = terminated
        .and_then(|t| t.message.as_deref())
        .and_then(TerminationMessage::parse);
    (message, terminated.and_then(|t| t.reason.clone()))
}

/// The outcome of `job`, given its pods; `None` while it runs or when it is not a backup Job.
pub fn outcome(job: &Job, pods: &[Pod]) -> Option<JobOutcome> {
    let asset = job.labels().get(names::LABEL_ASSET)?.clone();
    let (completed, finished_at, job_reason, job_message) = finished(job)?;
    let (message, container_reason) = agent_report(pods);
    let (summary, checks_report) = match message {
        Some(m) => (Some(m.summary), m.checks_report),
        None => (None, None),
    };
    let result = match (completed, summary) {
        (true, Some(s)) if s.ok => Ok(s),
        (_, Some(s)) => Err(JobFailure {
            reason: s
                .error_class
                .map_or("AgentFailed", |c| c.reason())
                .to_owned(),
            message: s.message.unwrap_or_default(),
            checks: s.checks,
        }),
        (true, None) => Err(JobFailure {
            reason: "NoAgentReport".into(),
            message: "the Job completed but the agent left no result: not counted as a backup"
                .into(),
            checks: Vec::new(),
        }),
        (false, None) => Err(JobFailure {
            reason: container_reason
                .filter(|r| r != "Error")
                .unwrap_or_else(|| {
                    if job_reason.is_empty() {
                        "JobFailed".into()
                    } else {
                        job_reason
                    }
                }),
            message: job_message,
            checks: Vec::new(),
        }),
    };
    Some(JobOutcome {
        job: job.name_any(),
        asset,
        finished_at,
        result,
        checks_report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_api::agent_result::{ErrorClass, SUMMARY_VERSION, Verb};
    use serde_json::json;

    fn job(condition: &str, reason: &str) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "shop-db-123", "labels": {"lifeboat.dev/asset": "db"}},
            "status": {
                "conditions": [{"type": condition, "status": "True", "reason": reason, "message": "m",
                                "lastTransitionTime": "2026-11-24T10:05:00Z"}],
                "completionTime": if condition == "Complete" { json!("2026-11-24T10:05:00Z") } else { json!(null) }
            }
        }))
        .unwrap()
    }

    fn pod(message: Option<String>, reason: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "creationTimestamp": "2026-11-24T10:00:00Z"},
            "status": {"containerStatuses": [{
                "name": "agent", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": reason, "message": message}}
            }]}
        }))
        .unwrap()
    }

    fn summary(ok: bool) -> AgentSummary {
        let t: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        AgentSummary {
            version: SUMMARY_VERSION,
            verb: Verb::Backup,
            ok,
            asset: Some("db".into()),
            backup_id: Some("20261124T100000Z".into()),
            started_at: t,
            finished_at: t,
            snapshot_time: Some(t),
            stored_bytes: Some(10),
            sha256: Some("ab".into()),
            error_class: (!ok).then_some(ErrorClass::Auth),
            message: (!ok).then(|| "password authentication failed".into()),
            checks: Vec::new(),
            retention_refused: None,
            copies: Vec::new(),
        }
    }

    #[test]
    fn a_completed_job_with_a_good_report_is_a_backup() {
        let msg = summary(true).to_termination_message().unwrap();
        let o = outcome(
            &job("Complete", "CompletionsReached"),
            &[pod(Some(msg), "Completed")],
        )
        .unwrap();
        assert_eq!(o.asset, "db");
        assert_eq!(
            o.result.unwrap().backup_id.as_deref(),
            Some("20261124T100000Z")
        );
    }

    #[test]
    fn exit_zero_without_a_report_is_not_a_backup() {
        let o = outcome(
            &job("Complete", "CompletionsReached"),
            &[pod(None, "Completed")],
        )
        .unwrap();
        assert_eq!(o.result.unwrap_err().reason, "NoAgentReport");
        let o = outcome(
            &job("Complete", "CompletionsReached"),
            &[pod(Some("garbage".into()), "Completed")],
        )
        .unwrap();
        assert_eq!(o.result.unwrap_err().reason, "NoAgentReport");
    }

    #[test]
    fn failures_carry_the_agents_class_or_the_kubernetes_reason() {
        let msg = summary(false).to_termination_message().unwrap();
        let o = outcome(
            &job("Failed", "BackoffLimitExceeded"),
            &[pod(Some(msg), "Error")],
        )
        .unwrap();
        let f = o.result.unwrap_err();
        assert_eq!(
            (f.reason.as_str(), f.message.as_str()),
            ("AuthFailed", "password authentication failed")
        );
        let o = outcome(&job("Failed", "DeadlineExceeded"), &[]).unwrap();
        assert_eq!(o.result.unwrap_err().reason, "DeadlineExceeded");
        let o = outcome(
            &job("Failed", "BackoffLimitExceeded"),
            &[pod(None, "OOMKilled")],
        )
        .unwrap();
        assert_eq!(o.result.unwrap_err().reason, "OOMKilled");
    }

    #[test]
    fn a_validation_too_large_for_its_message_keeps_the_counts_of_every_check() {
        let mut s = summary(false);
        s.verb = Verb::Restore;
        s.checks = (0..60)
            .map(|i| lifeboat_api::restore_request::CheckResult {
                name: format!("check-{i}"),
                passed: i % 3 != 0,
                message: "x".repeat(300),
                attempts: 1,
                duration_seconds: 0.5,
                canary: None,
            })
            .collect();
        let msg = s.to_termination_message().unwrap();
        let o = outcome(
            &job("Failed", "BackoffLimitExceeded"),
            &[pod(Some(msg), "Error")],
        )
        .unwrap();
        let report = o.checks_report.expect("the counts");
        assert_eq!((report.passed, report.failed), (40, 20));
        let kept = o.result.unwrap_err().checks;
        assert!(report.omitted > 0, "60 long results fit in 4 KiB?");
        assert_eq!(kept.len() as u32 + report.omitted, 60);
        assert!(kept.iter().take(20).all(|c| !c.passed), "failed ones first");
    }

    #[test]
    fn running_jobs_have_no_outcome() {
        let running: Job = serde_json::from_value(json!({
            "metadata": {"name": "j", "labels": {"lifeboat.dev/asset": "db"}}, "status": {"active": 1}
        }))
        .unwrap();
        assert_eq!(outcome(&running, &[]), None);
    }
}
