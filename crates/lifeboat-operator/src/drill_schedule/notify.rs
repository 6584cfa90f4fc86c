//! A drill's webhook notification, sent by a Job in the drill's own namespace that mounts the
//! webhook Secret: the operator never reads the URL (it holds no right to read Secrets). The Job
//! is named after the drill, created once and never retried (`backoffLimit: 0`), so the message
//! goes out at most once; its outcome comes back through the agent's termination message into
//! the drill's record, without the URL or the remote's answer.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use lifeboat_api::DrillSchedule;
use lifeboat_api::agent_job::AgentNotifyJob;
use lifeboat_api::agent_result::AgentSummary;
use lifeboat_api::common::Destination;
use lifeboat_api::conditions::Status;
use lifeboat_api::drill_schedule::{DrillVerdict, NotificationState, NotificationStatus, NotifyOn};

use crate::config::AgentConfig;
use crate::error::{Error, Result};
use crate::names;
use crate::pod::{AGENT_CONTAINER, AgentPod};

/// Finished notify Jobs are removed after a week, like the evidence Job; the outcome stays in
/// the drill's record.
const NOTIFY_JOB_TTL_SECONDS: i32 = 7 * 24 * 3600;

/// The notify Job of drill `drill_id`: one per drill, never re-made.
pub fn notify_job_name(drill_id: &str) -> String {
    names::bounded_name(&[drill_id, "notify"], names::NAME_MAX)
}

/// The notification a finished drill with `verdict` owes, if its spec asks for one: pending
/// until its Job reports.
pub fn owed(
    ds: &DrillSchedule,
    drill_id: &str,
    verdict: DrillVerdict,
) -> Option<NotificationStatus> {
    let n = ds.spec.notification.as_ref()?;
    if verdict == DrillVerdict::Passed && n.when == NotifyOn::Failure {
        return None;
    }
    Some(NotificationStatus {
        state: NotificationState::Pending,
        job: notify_job_name(drill_id),
        reason: None,
        message: String::new(),
    })
}

/// The Job that posts `text` to the drill's webhook, owned by the DrillSchedule. `None` when the
/// drill has no notification.
pub fn notify_job(
    ds: &DrillSchedule,
    drill_id: &str,
    text: String,
    agent: &AgentConfig,
) -> Result<Option<Job>> {
    let Some(n) = &ds.spec.notification else {
        return Ok(None);
    };
    let ns = ds.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let doc = AgentNotifyJob {
        namespace: ns.clone(),
        webhook_secret: n.webhook_secret.clone(),
        text,
        allowed_hosts: agent.webhook_allowed_hosts.clone(),
    };
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
        (names::LABEL_ROLE.to_owned(), "notify".to_owned()),
    ]);
    // No backup storage: the pod needs the webhook Secret and the network, nothing else.
    let nowhere = Destination {
        volume: None,
        s3: None,
        object_lock: None,
    };
    let pod = AgentPod {
        config: agent,
        args: vec!["notify".into()],
        env: vec![crate::pod::job_env(&doc)?],
        ports: Vec::new(),
        secrets: vec![n.webhook_secret.clone()],
        destination: &nowhere,
        overrides: ds.spec.pod_template.as_ref(),
        labels: labels.clone(),
        annotations: Default::default(),
        api_account: None,
        data_volume: None,
    };
    Ok(Some(Job {
        metadata: ObjectMeta {
            name: Some(notify_job_name(drill_id)),
            namespace: Some(ns),
            labels: Some(labels),
            owner_references: Some(vec![
                ds.controller_owner_ref(&())
                    .ok_or(Error::MissingObjectKey("uid"))?,
            ]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // At most once: a failed send is reported, never repeated.
            backoff_limit: Some(0),
            active_deadline_seconds: Some(120),
            ttl_seconds_after_finished: Some(NOTIFY_JOB_TTL_SECONDS),
            template: pod.template(),
            ..Default::default()
        }),
        status: None,
    }))
}

/// The outcome of a finished notify Job from its conditions and its pod's termination message;
/// `None` while it runs. Only the agent's class and its fixed message are kept: they name
/// neither the URL nor the remote's answer.
pub fn outcome(job: &Job, pods: &[Pod]) -> Option<NotificationStatus> {
    let conditions = job
        .status
        .as_ref()?
        .conditions
        .as_deref()
        .unwrap_or_default();
    let done = conditions.iter().find(|c| {
        (c.type_ == "Complete" || c.type_ == "Failed") && Status::parse(&c.status) == Status::True
    })?;
    let summary = pods
        .iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .filter(|c| c.name == AGENT_CONTAINER)
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.message.as_deref())
        .find_map(AgentSummary::from_termination_message);
    let job = job.name_any();
    Some(match summary {
        Some(s) if s.ok && done.type_ == "Complete" => NotificationStatus {
            state: NotificationState::Sent,
            job,
            reason: None,
            message: "sent to the webhook".into(),
        },
        Some(s) => NotificationStatus {
            state: NotificationState::Failed,
            job,
            reason: Some(
                s.error_class
                    .map_or("AgentFailed", |c| c.reason())
                    .to_owned(),
            ),
            message: s.message.unwrap_or_default(),
        },
        None => NotificationStatus {
            state: NotificationState::Failed,
            job,
            reason: Some(
                done.reason
                    .clone()
                    .unwrap_or_else(|| "NoAgentReport".into()),
            ),
            message: "the notify Job ended without the agent's report: not sent again".into(),
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use lifeboat_api::agent_result::{ErrorClass, SUMMARY_VERSION, Verb};
    use serde_json::json;

    fn drill(notification: serde_json::Value) -> DrillSchedule {
        serde_json::from_value(json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DrillSchedule",
            "metadata": {"name": "quarterly", "namespace": "shop", "uid": "u-1"},
            "spec": {"schedule": "0 6 1 * *", "policy": "orders", "assets": ["db"],
                     "staging": {"targets": [{"asset": "db", "postgres": {"host": "s", "user": "u"}}]},
                     "objectives": {"rto": "30m", "rpo": "15m"},
                     "notification": notification}
        }))
        .unwrap()
    }

    #[test]
    fn owed_on_failure_by_default_and_always_when_asked() {
        let on_failure = drill(json!({"webhookSecret": {"name": "slack", "key": "url"}}));
        assert!(owed(&on_failure, "d1", DrillVerdict::Passed).is_none());
        let n = owed(&on_failure, "d1", DrillVerdict::ObjectivesMissed).unwrap();
        assert_eq!(
            (n.state, n.job.as_str()),
            (NotificationState::Pending, "d1-notify")
        );
        let always =
            drill(json!({"webhookSecret": {"name": "slack", "key": "url"}, "when": "Always"}));
        assert!(owed(&always, "d1", DrillVerdict::Passed).is_some());
    }

    #[test]
    fn the_job_runs_once_mounts_the_secret_and_carries_no_url() {
        let ds = drill(json!({"webhookSecret": {"name": "slack", "key": "url"}}));
        let agent = AgentConfig {
            webhook_allowed_hosts: vec!["hooks.slack.com".into()],
            ..AgentConfig::default()
        };
        let job = notify_job(
            &ds,
            "quarterly-20261124t100000z",
            "drill failed".into(),
            &agent,
        )
        .unwrap()
        .unwrap();
        assert_eq!(job.name_any(), "quarterly-20261124t100000z-notify");
        assert_eq!(job.owner_references()[0].kind, "DrillSchedule");
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0), "never retried");
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let c = &pod.containers[0];
        assert_eq!(c.args.as_deref(), Some(&["notify".to_owned()][..]));
        let doc = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == lifeboat_api::agent_job::JOB_ENV)
            .unwrap();
        let doc: AgentNotifyJob = serde_json::from_str(doc.value.as_deref().unwrap()).unwrap();
        assert_eq!(doc.text, "drill failed");
        assert_eq!(doc.allowed_hosts, ["hooks.slack.com"]);
        let volume = pod
            .volumes
            .unwrap()
            .into_iter()
            .find_map(|v| v.secret)
            .unwrap();
        assert_eq!(volume.secret_name.as_deref(), Some("slack"));
        assert_eq!(volume.optional, Some(true));
        assert!(
            notify_job(&drill(json!(null)), "d", String::new(), &agent)
                .unwrap()
                .is_none()
        );
    }

    fn finished(condition: &str, message: Option<String>) -> (Job, Vec<Pod>) {
        let job = serde_json::from_value(json!({
            "metadata": {"name": "d1-notify"},
            "status": {"conditions": [{"type": condition, "status": "True",
                "reason": if condition == "Failed" { "BackoffLimitExceeded" } else { "CompletionsReached" }}]}
        }))
        .unwrap();
        let pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": {"containerStatuses": [{"name": "agent", "image": "i", "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "message": message}}}]}
        }))
        .unwrap();
        (job, vec![pod])
    }

    fn summary(class: Option<ErrorClass>, message: &str) -> String {
        let t = jiff::Timestamp::UNIX_EPOCH;
        AgentSummary {
            version: SUMMARY_VERSION,
            verb: Verb::Notify,
            ok: class.is_none(),
            asset: None,
            backup_id: None,
            started_at: t,
            finished_at: t,
            snapshot_time: None,
            stored_bytes: None,
            sha256: None,
            error_class: class,
            message: (!message.is_empty()).then(|| message.to_owned()),
            checks: Vec::new(),
            retention_refused: None,
            copies: Vec::new(),
        }
        .to_termination_message()
        .unwrap()
    }

    #[test]
    fn outcomes_from_the_agents_report() {
        let (job, pods) = finished("Complete", Some(summary(None, "")));
        assert_eq!(outcome(&job, &pods).unwrap().state, NotificationState::Sent);
        let (job, pods) = finished(
            "Failed",
            Some(summary(
                Some(ErrorClass::SecretNotFound),
                "Secret \"slack\" with key \"url\" not found",
            )),
        );
        let o = outcome(&job, &pods).unwrap();
        assert_eq!(
            (o.state, o.reason.as_deref()),
            (NotificationState::Failed, Some("SecretNotFound"))
        );
        let (job, pods) = finished("Failed", None);
        let o = outcome(&job, &pods).unwrap();
        assert_eq!(
            (o.state, o.reason.as_deref()),
            (NotificationState::Failed, Some("BackoffLimitExceeded"))
        );
        let running: Job = serde_json::from_value(
            json!({"metadata": {"name": "d1-notify"}, "status": {"active": 1}}),
        )
        .unwrap();
        assert_eq!(outcome(&running, &[]), None);
    }
}
