//! Pure builder of a BackupPolicy's WAL archivers: one Deployment of one replica per
//! `pointInTime` asset, running `lifeboat-agent wal-archive` for as long as the asset asks for
//! it, and the `ArchiverReady` condition read from those Deployments. No I/O.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::{Resource, ResourceExt};
use lifeboat_api::BackupPolicy;
use lifeboat_api::agent_job::{JOB_ENV, signing_key_ref};
use lifeboat_api::backup_policy::Asset;
use lifeboat_api::conditions::Status;

use crate::config::AgentConfig;
use crate::error::{Error, Result};
use crate::names;
use crate::pod::AgentPod;

use super::cronjob::{agent_job, referenced_secrets};

/// pg_receivewal's directory: on the pod's `/tmp` volume, so it outlives a restart of the
/// container (what pg_receivewal flushed there is no longer held by the slot) but not the pod.
pub const WORK_DIR: &str = "/tmp/wal";

/// Why `ArchiverReady` is what it is.
pub mod reasons {
    /// Every archiver Deployment has its replica available.
    pub const AVAILABLE: &str = "ArchiverAvailable";
    /// An archiver Deployment is missing or has no available replica: its slot keeps WAL on
    /// the source until it is back.
    pub const UNAVAILABLE: &str = "ArchiverUnavailable";
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
        env: vec![EnvVar {
            name: JOB_ENV.into(),
            value: Some(serde_json::to_string(&job)?),
            ..Default::default()
        }],
        ports: Vec::new(),
        secrets,
        destination: &spec.destination,
        overrides: spec.pod_template.as_ref(),
        labels: labels.clone(),
        annotations: annotations.clone(),
        api_account: None,
    };
    let mut template = pod.template();
    if let Some(pod) = template.spec.as_mut() {
        // A Deployment's pods restart: an archiver that fails resumes from its slot.
        pod.restart_policy = Some("Always".into());
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
                "no WAL archiver is running for {}: its replication slot keeps WAL on the server \
                 until it is back (max_slot_wal_keep_size bounds it)",
                down.join(", ")
            ),
        )
    })
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
        let doc = env.iter().find(|e| e.name == JOB_ENV).unwrap();
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
