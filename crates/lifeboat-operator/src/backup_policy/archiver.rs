//! Pure builder of a BackupPolicy's WAL archivers: one Deployment of one replica per
//! `pointInTime` asset, running `lifeboat-agent wal-archive` for as long as the asset asks for
//! it, and the `ArchiverReady` condition read from those Deployments. No I/O.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{ExecAction, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::{Resource, ResourceExt};
use lifeboat_api::BackupPolicy;
use lifeboat_api::agent_job::signing_key_ref;
use lifeboat_api::backup_policy::Asset;
use lifeboat_api::common::{EventType, PendingEvent};
use lifeboat_api::conditions::Status;

use crate::config::AgentConfig;
use crate::error::{Error, Result};
use crate::jobs::JobOutcome;
use crate::names;
use crate::pod::AgentPod;

use super::cronjob::{agent_job, referenced_secrets};

/// pg_receivewal's directory: on the pod's `/tmp` volume, so it outlives a restart of the
/// container (what pg_receivewal flushed there is no longer held by the slot) but not the pod.
pub const WORK_DIR: &str = "/tmp/wal";

/// The finalizer of a policy that archives (or archived) WAL: deleting the policy stops its
/// archivers and drops their replication slots before it goes.
pub const SLOT_FINALIZER: &str = "lifeboat.dev/wal-slot";

/// The agent binary in its image: what the readiness probe runs.
const AGENT_BINARY: &str = "/usr/local/bin/lifeboat-agent";

/// What the archiver may take beyond `partialUploadSeconds` and still count as caught up: the
/// upload of a 16 MiB segment and a restart of pg_receivewal.
pub const CAUGHT_UP_SLACK_SECONDS: u32 = 30;

/// How often the kubelet runs the readiness probe.
const PROBE_PERIOD_SECONDS: u16 = 5;

/// The longest the archiver may go without being caught up and stay ready.
fn caught_up_within(asset: &Asset) -> u32 {
    asset
        .postgres()
        .and_then(|pg| pg.point_in_time.as_ref())
        .map_or(0, |a| a.partial_upload_seconds)
        + CAUGHT_UP_SLACK_SECONDS
}

/// Why `ArchiverReady` is what it is.
pub mod reasons {
    /// Every archiver Deployment has its replica available.
    pub const AVAILABLE: &str = "ArchiverAvailable";
    /// An archiver Deployment is missing or has no available replica: its slot keeps WAL on
    /// the source until it is back.
    pub const UNAVAILABLE: &str = "ArchiverUnavailable";
    /// An archiver whose asset no longer asks for one is stopping, then its slot is dropped.
    pub const RELEASING: &str = "ReleasingSlot";
}

/// The assets of `policy` that ask for a WAL archive.
pub fn archived_assets(policy: &BackupPolicy) -> impl Iterator<Item = &Asset> {
    policy
        .spec
        .assets
        .iter()
        .filter(|a| a.postgres().is_some_and(|pg| pg.point_in_time.is_some()))
}

/// The desired archiver of every `pointInTime` asset of `policy`.
pub fn desired_archivers(policy: &BackupPolicy, agent: &AgentConfig) -> Result<Vec<Deployment>> {
    archived_assets(policy)
        .map(|asset| archiver(policy, asset, agent))
        .collect()
}

fn archiver(policy: &BackupPolicy, asset: &Asset, agent: &AgentConfig) -> Result<Deployment> {
    let name = policy.name_any();
    let spec = &policy.spec;
    let job = agent_job(policy, asset, None)?;
    let mut secrets = referenced_secrets(asset, &spec.destination);
    secrets.push(signing_key_ref());
    let labels = names::wal_archiver_labels(&name, &asset.name);
    let annotations =
        std::collections::BTreeMap::from([(names::ANNOTATION_POLICY.to_owned(), name.clone())]);
    let pod = AgentPod {
        config: agent,
        args: vec!["wal-archive".into(), "--work-dir".into(), WORK_DIR.into()],
        env: vec![crate::pod::job_env(&job)?],
        ports: Vec::new(),
        secrets,
        destination: &spec.destination,
        overrides: spec.pod_template.as_deref(),
        labels: labels.clone(),
        annotations: annotations.clone(),
        api_account: None,
        data_volume: None,
    };
    let mut template = pod.template();
    if let Some(pod) = template.spec.as_mut() {
        // A Deployment's pods restart: an archiver that fails resumes from its slot.
        pod.restart_policy = Some("Always".into());
        // Ready only while it stores what it receives: Available is what ArchiverReady and
        // the lag read, with no exec or network call from the operator.
        for c in &mut pod.containers {
            c.readiness_probe = Some(Probe {
                exec: Some(ExecAction {
                    command: Some(vec![
                        AGENT_BINARY.into(),
                        "wal-caught-up".into(),
                        "--work-dir".into(),
                        WORK_DIR.into(),
                        "--within".into(),
                        format!("{}s", caught_up_within(asset)),
                    ]),
                }),
                period_seconds: Some(PROBE_PERIOD_SECONDS.into()),
                timeout_seconds: Some(PROBE_PERIOD_SECONDS.into()),
                failure_threshold: Some(1),
                success_threshold: Some(1),
                ..Default::default()
            });
        }
    }
    Ok(Deployment {
        metadata: ObjectMeta {
            name: Some(names::wal_archiver(&name, &asset.name)),
            namespace: policy.namespace(),
            labels: Some(labels.clone()),
            annotations: Some(annotations),
            owner_references: Some(vec![
                policy
                    .controller_owner_ref(&())
                    .ok_or(Error::MissingObjectKey("uid"))?,
            ]),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            // Never two archivers at once: the slot serves one stream, and a second would fail
            // and restart until the first is gone.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            }),
            revision_history_limit: Some(2),
            selector: LabelSelector {
                match_labels: Some(labels),
                match_expressions: None,
            },
            template,
            ..Default::default()
        }),
        status: None,
    })
}

/// The Job that drops the replication slot of `archiver`, a Deployment whose asset no longer
/// asks for a WAL archive, once it is scaled to zero (the server refuses to drop a slot in use):
/// the archiver's own pod (image, document, Secrets, security context) running `wal-release`
/// once.
pub fn release_job(policy: &BackupPolicy, archiver: &Deployment) -> Result<Job> {
    let spec = archiver
        .spec
        .as_ref()
        .ok_or(Error::MissingObjectKey("spec"))?;
    let mut template = spec.template.clone();
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    // Not the archiver's selector, nor a backup's role: its outcome is no backup.
    labels.insert(
        names::LABEL_ROLE.to_owned(),
        names::ROLE_WAL_RELEASE.to_owned(),
    );
    template.metadata.get_or_insert_default().labels = Some(labels.clone());
    if let Some(pod) = template.spec.as_mut() {
        pod.restart_policy = Some("Never".into());
        for c in &mut pod.containers {
            c.args = Some(vec!["wal-release".into()]);
            c.readiness_probe = None;
            c.liveness_probe = None;
            c.startup_probe = None;
        }
    }
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(names::wal_release(
                &archiver.name_any(),
                &archiver.uid().unwrap_or_default(),
            )),
            namespace: policy.namespace(),
            labels: Some(labels),
            annotations: archiver.metadata.annotations.clone(),
            owner_references: Some(vec![
                policy
                    .controller_owner_ref(&())
                    .ok_or(Error::MissingObjectKey("uid"))?,
            ]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // One retry, for a server that still counted the stopped archiver's connection.
            backoff_limit: Some(1),
            ttl_seconds_after_finished: Some(RELEASE_JOB_TTL_SECONDS),
            template,
            ..Default::default()
        }),
        status: None,
    })
}

/// How long a finished release Job stays to be read (`kubectl logs`) before it goes.
const RELEASE_JOB_TTL_SECONDS: i32 = 3600;

/// The Event that says how the release Job of the archiver Deployment `uid` ended: once per
/// Deployment, a Warning with the agent's error when the slot is still there.
pub fn release_event(outcome: &JobOutcome, uid: &str) -> PendingEvent {
    let asset = &outcome.asset;
    let id = format!("WalSlot/{uid}");
    match &outcome.result {
        Ok(_) => crate::effects::event(
            id,
            EventType::Normal,
            "WalSlotReleased",
            "Release",
            format!(
                "asset {asset} archives no WAL any more: its replication slot was dropped on the source"
            ),
        ),
        Err(f) => crate::effects::event(
            id,
            EventType::Warning,
            "WalSlotNotReleased",
            "Release",
            format!(
                "asset {asset} archives no WAL any more, but its replication slot could not be dropped ({}: {}): it keeps WAL on the source until dropped by hand (docs/operations.md)",
                f.reason, f.message
            ),
        ),
    }
}

/// `ArchiverReady` for `policy` given its archivers as they are (`None`: the policy archives
/// nothing, and the condition is removed): True when each desired one has an available replica.
pub fn readiness(
    policy: &BackupPolicy,
    existing: &[Deployment],
) -> Option<(Status, &'static str, String)> {
    let policy_name = policy.name_any();
    let wanted: Vec<&Asset> = archived_assets(policy).collect();
    if wanted.is_empty() {
        return None;
    }
    let down: Vec<&str> = wanted
        .iter()
        .filter(|a| {
            let name = names::wal_archiver(&policy_name, &a.name);
            !existing.iter().any(|d| {
                d.name_any() == name
                    && d.status
                        .as_ref()
                        .and_then(|s| s.available_replicas)
                        .is_some_and(|n| n >= 1)
            })
        })
        .map(|a| a.name.as_str())
        .collect();
    Some(if down.is_empty() {
        (
            Status::True,
            reasons::AVAILABLE,
            format!("the WAL archiver of {} is running", names_of(&wanted)),
        )
    } else {
        (
            Status::False,
            reasons::UNAVAILABLE,
            format!(
                "the WAL archiver of {} is not running or has not stored what it received \
                 lately: its replication slot keeps WAL on the server until it catches up \
                 (max_slot_wal_keep_size bounds it)",
                down.join(", ")
            ),
        )
    })
}

/// An upper bound of the archive lag of `asset` (seconds of WAL the store may not hold yet),
/// from its archiver Deployment: while Available, what the probe allows plus one probe period;
/// otherwise that plus the time since it stopped being Available (or since it was made).
/// `None` for an asset without an archiver, or one whose Deployment is not seen yet.
pub fn lag_bound(
    policy: &BackupPolicy,
    asset: &Asset,
    existing: &[Deployment],
    now: Timestamp,
) -> Option<i64> {
    let ready_bound = i64::from(caught_up_within(asset)) + i64::from(PROBE_PERIOD_SECONDS);
    let name = names::wal_archiver(&policy.name_any(), &asset.name);
    let d = existing.iter().find(|d| d.name_any() == name)?;
    let available = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Available"));
    let since = match available {
        Some(c) if Status::parse(&c.status) == Status::True => return Some(ready_bound),
        Some(c) => c.last_transition_time.as_ref().map(|t| t.0),
        None => None,
    }
    .or_else(|| d.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
    Some(ready_bound + now.duration_since(since).as_secs().max(0))
}

fn names_of(assets: &[&Asset]) -> String {
    assets
        .iter()
        .map(|a| a.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use lifeboat_api::agent_job::AgentJob;
    use serde_json::json;

    fn policy(point_in_time: serde_json::Value) -> BackupPolicy {
        serde_json::from_value(json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "shop", "namespace": "prod", "uid": "1234", "generation": 1},
            "spec": {
                "schedule": "0 * * * *",
                "assets": [
                    {"name": "orders", "postgres": {"host": "db", "user": "backup", "databases": ["orders"],
                        "passwordSecret": {"name": "db-creds", "key": "password"},
                        "pointInTime": point_in_time}},
                    {"name": "sessions", "redis": {"host": "cache"}}
                ],
                "retention": {"keepLast": 7},
                "destination": {"s3": {"endpoint": "http://s3:9000", "bucket": "backups",
                                       "credentialsSecret": {"name": "s3-creds"}}}
            }
        }))
        .unwrap()
    }

    fn archiving() -> serde_json::Value {
        json!({"user": "lifeboat_wal", "passwordSecret": {"name": "wal-creds", "key": "pw"}})
    }

    #[test]
    fn a_retired_archiver_s_release_job_is_its_own_pod_dropping_the_slot_once() {
        let p = policy(archiving());
        let mut d = desired_archivers(&p, &AgentConfig::default()).unwrap()[0].clone();
        d.metadata.uid = Some("archiver-1".into());
        let d = &d;
        let job = release_job(&p, d).unwrap();
        // Named after the archiver it releases, so a later archiver of the
        // same asset gets its own release instead of finding this one done.
        let name = job.metadata.name.clone().unwrap();
        assert!(name.starts_with("shop-orders-wal-release-"), "{name}");
        let mut later = d.clone();
        later.metadata.uid = Some("archiver-2".into());
        assert_ne!(release_job(&p, &later).unwrap().metadata.name, Some(name));
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("BackupPolicy", "1234")
        );
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(
            labels.get(names::LABEL_ROLE).unwrap(),
            names::ROLE_WAL_RELEASE
        );
        assert_eq!(labels.get(names::LABEL_ASSET).unwrap(), "orders");
        let spec = job.spec.as_ref().unwrap();
        let pod = spec.template.spec.as_ref().unwrap();
        let archiver_pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(
            spec.template.metadata.as_ref().unwrap().labels.as_ref(),
            Some(labels)
        );
        let (c, a) = (&pod.containers[0], &archiver_pod.containers[0]);
        assert_eq!(c.args.as_deref(), Some(&["wal-release".to_owned()][..]));
        assert!(c.readiness_probe.is_none() && a.readiness_probe.is_some());
        // The archiver's document, Secrets and restrictions, unchanged.
        assert_eq!(
            (&c.env, &c.image, &c.security_context),
            (&a.env, &a.image, &a.security_context)
        );
        assert_eq!(pod.volumes, archiver_pod.volumes);
        assert_eq!(pod.security_context, archiver_pod.security_context);
    }

    #[test]
    fn a_release_says_once_whether_the_slot_went_and_the_agent_s_error_when_not() {
        let outcome = |result| JobOutcome {
            job: "shop-orders-wal-release".into(),
            asset: "orders".into(),
            finished_at: "2026-12-01T10:00:00Z".parse().unwrap(),
            result,
            checks_report: None,
        };
        let failed = outcome(Err(crate::jobs::JobFailure {
            reason: "AuthFailed".into(),
            message: "password authentication failed".into(),
            checks: Vec::new(),
        }));
        let e = release_event(&failed, "u-1");
        assert_eq!(
            (e.type_, e.reason.as_str()),
            (EventType::Warning, "WalSlotNotReleased")
        );
        assert!(
            e.note
                .contains("AuthFailed: password authentication failed"),
            "{}",
            e.note
        );
        assert!(
            e.note.contains("asset orders") && e.note.contains("by hand"),
            "{}",
            e.note
        );
        let ok = outcome(Ok(serde_json::from_value(json!({
            "version": 1, "verb": "prune", "ok": true,
            "startedAt": "2026-12-01T10:00:00Z", "finishedAt": "2026-12-01T10:00:01Z"
        }))
        .unwrap()));
        let e2 = release_event(&ok, "u-1");
        assert_eq!(
            (e2.type_, e2.reason.as_str()),
            (EventType::Normal, "WalSlotReleased")
        );
        assert_eq!(e.id, e2.id, "one Event per archiver, whatever the outcome");
        assert_ne!(e.id, release_event(&ok, "u-2").id);
    }

    #[test]
    fn one_archiver_per_point_in_time_asset_owned_and_restarted_alone() {
        let p = policy(archiving());
        let ds = desired_archivers(&p, &AgentConfig::default()).unwrap();
        assert_eq!(ds.len(), 1, "the Redis asset has none");
        let d = &ds[0];
        assert_eq!(d.metadata.name.as_deref(), Some("shop-orders-wal"));
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("BackupPolicy", "1234", Some(true))
        );
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(
            spec.strategy.as_ref().unwrap().type_.as_deref(),
            Some("Recreate")
        );
        let labels = spec.selector.match_labels.as_ref().unwrap();
        let pod_labels = spec.template.metadata.as_ref().unwrap().labels.as_ref();
        for (k, v) in labels {
            assert_eq!(
                pod_labels.unwrap().get(k),
                Some(v),
                "the selector selects the pods"
            );
        }
        assert_eq!(
            labels.get(names::LABEL_ROLE).unwrap(),
            names::ROLE_WAL_ARCHIVE
        );
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Always"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let c = &pod.containers[0];
        assert_eq!(
            c.args.as_ref().unwrap(),
            &["wal-archive", "--work-dir", WORK_DIR]
        );
        let probe = c.readiness_probe.as_ref().unwrap();
        assert_eq!(
            probe.exec.as_ref().unwrap().command.as_ref().unwrap()[1..],
            ["wal-caught-up", "--work-dir", WORK_DIR, "--within", "35s"]
        );
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
    }

    #[test]
    fn the_archiver_reads_its_asset_from_the_document_and_mounts_only_referenced_secrets() {
        let p = policy(archiving());
        let d = &desired_archivers(&p, &AgentConfig::default()).unwrap()[0];
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let env = pod.containers[0].env.as_ref().unwrap();
        let doc = env
            .iter()
            .find(|e| e.name == lifeboat_api::agent_job::JOB_ENV)
            .unwrap();
        let job: AgentJob = serde_json::from_str(doc.value.as_ref().unwrap()).unwrap();
        assert_eq!(
            (job.policy.as_str(), job.asset.name.as_str()),
            ("shop", "orders")
        );
        let archiving = job
            .asset
            .postgres()
            .unwrap()
            .point_in_time
            .as_ref()
            .unwrap();
        assert_eq!(archiving.user, "lifeboat_wal");
        assert_eq!(archiving.partial_upload_seconds, 5, "the default");
        let mounted: Vec<&str> = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .filter_map(|v| v.secret.as_ref()?.secret_name.as_deref())
            .collect();
        for secret in ["wal-creds", "db-creds", "s3-creds", "lifeboat-signing-key"] {
            assert!(mounted.contains(&secret), "{secret} in {mounted:?}");
        }
        assert!(
            !serde_json::to_string(d).unwrap().contains("\"data\""),
            "no Secret content in the Deployment"
        );
    }

    #[test]
    fn the_lag_bound_is_the_probes_allowance_while_available_and_grows_once_not() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let p = policy(archiving());
        let asset = &p.spec.assets[0];
        let now: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        assert_eq!(
            lag_bound(&p, asset, &[], now),
            None,
            "no Deployment seen yet"
        );
        let mut d = desired_archivers(&p, &AgentConfig::default())
            .unwrap()
            .remove(0);
        let available = |status: &str, at: &str| DeploymentStatus {
            conditions: Some(vec![k8s_openapi::api::apps::v1::DeploymentCondition {
                type_: "Available".into(),
                status: status.into(),
                last_transition_time: Some(Time(at.parse().unwrap())),
                ..Default::default()
            }]),
            ..Default::default()
        };
        d.status = Some(available("True", "2026-12-01T09:00:00Z"));
        assert_eq!(lag_bound(&p, asset, &[d.clone()], now), Some(5 + 30 + 5));
        d.status = Some(available("False", "2026-12-01T09:58:00Z"));
        assert_eq!(lag_bound(&p, asset, &[d.clone()], now), Some(40 + 120));
        d.status = None;
        d.metadata.creation_timestamp = Some(Time("2026-12-01T09:59:00Z".parse().unwrap()));
        assert_eq!(
            lag_bound(&p, asset, &[d], now),
            Some(40 + 60),
            "never ready yet"
        );
    }

    #[test]
    fn an_asset_without_point_in_time_has_no_archiver_and_no_condition() {
        let p = policy(serde_json::Value::Null);
        assert!(
            desired_archivers(&p, &AgentConfig::default())
                .unwrap()
                .is_empty()
        );
        assert_eq!(readiness(&p, &[]), None);
    }

    #[test]
    fn ready_only_when_the_archiver_has_an_available_replica() {
        let p = policy(archiving());
        let (status, reason, message) = readiness(&p, &[]).unwrap();
        assert_eq!((status, reason), (Status::False, reasons::UNAVAILABLE));
        assert!(message.contains("orders"), "{message}");

        let mut d = desired_archivers(&p, &AgentConfig::default())
            .unwrap()
            .remove(0);
        d.status = Some(DeploymentStatus {
            available_replicas: Some(0),
            ..Default::default()
        });
        assert_eq!(readiness(&p, &[d.clone()]).unwrap().0, Status::False);
        d.status = Some(DeploymentStatus {
            available_replicas: Some(1),
            ..Default::default()
        });
        let (status, reason, _) = readiness(&p, &[d]).unwrap();
        assert_eq!((status, reason), (Status::True, reasons::AVAILABLE));
    }
}
