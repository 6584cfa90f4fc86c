//! The agent pod every Job runs, built from the resource's settings: Pod Security "restricted",
//! a read-only root filesystem, secrets only as mounted files, the backup volume when the
//! destination is one.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, KeyToPath, LocalObjectReference,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    SELinuxOptions, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use lifeboat_api::agent_job::{BACKUP_VOLUME_DIR, RESTORE_VOLUME_DIR, SECRETS_DIR};
use lifeboat_api::common::{
    DataVolumeTarget, Destination, PodSecurityOverride, PodTemplateOverride, SecretKeyRef,
};
use lifeboat_api::identity::AMBIENT_IDENTITY_ENV;

use crate::config::AgentConfig;
use crate::names::short_hash;

/// The container name; the operator reads this container's termination message.
pub const AGENT_CONTAINER: &str = "agent";

/// The variable that hands an agent its job: the document as JSON (it holds Secret references,
/// never a secret).
pub fn job_env(document: &impl serde::Serialize) -> Result<EnvVar, serde_json::Error> {
    Ok(EnvVar {
        name: lifeboat_api::agent_job::JOB_ENV.into(),
        value: Some(serde_json::to_string(document)?),
        ..Default::default()
    })
}

/// What one agent pod needs.
pub struct AgentPod<'a> {
    pub config: &'a AgentConfig,
    pub args: Vec<String>,
    pub env: Vec<EnvVar>,
    /// Ports the agent listens on (a Redis load over replication), named for NetworkPolicies.
    pub ports: Vec<ContainerPort>,
    pub secrets: Vec<SecretKeyRef>,
    pub destination: &'a Destination,
    pub overrides: Option<&'a PodTemplateOverride>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The account of an agent that talks to the Kubernetes API (the kubernetesState asset):
    /// Lifeboat's own, whatever the resource names; only such a pod gets a token.
    pub api_account: Option<&'a str>,
    /// The PVC a point-in-time restore writes a new data directory into: mounted whole (the
    /// agent creates the subPath itself, owned by the server's UID, which the pod runs as).
    pub data_volume: Option<&'a DataVolumeTarget>,
}

impl AgentPod<'_> {
    pub fn template(&self) -> PodTemplateSpec {
        let o = self.overrides.cloned().unwrap_or_default();
        let mut labels = o.labels.clone();
        labels.extend(self.labels.clone()); // Lifeboat's own labels win over user labels.
        let mut annotations = o.annotations.clone();
        annotations.extend(self.annotations.clone());

        let (mut volumes, mut mounts) = secret_volumes(&self.secrets);
        volumes.push(Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        });
        if let Some(volume) = &self.destination.volume {
            volumes.push(Volume {
                name: "backups".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: volume.claim_name.clone(),
                    read_only: Some(false),
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: "backups".into(),
                mount_path: BACKUP_VOLUME_DIR.into(),
                sub_path: (!volume.sub_path.is_empty()).then(|| volume.sub_path.clone()),
                ..Default::default()
            });
        }
        if let Some(target) = self.data_volume {
            volumes.push(Volume {
                name: "restore-target".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: target.claim_name.clone(),
                    read_only: Some(false),
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: "restore-target".into(),
                mount_path: RESTORE_VOLUME_DIR.into(),
                ..Default::default()
            });
        }
        let mut env = vec![
            EnvVar {
                name: "HOME".into(),
                value: Some("/tmp".into()),
                ..Default::default()
            },
            EnvVar {
                name: "LIFEBOAT_TERMINATION_LOG".into(),
                value: Some("/dev/termination-log".into()),
                ..Default::default()
            },
            // The agent enforces the platform's choice itself, whoever made the Job.
            EnvVar {
                name: AMBIENT_IDENTITY_ENV.into(),
                value: Some(self.config.s3_ambient_identity.as_str().into()),
                ..Default::default()
            },
        ];
        if self.config.log_json {
            env.push(EnvVar {
                name: "LIFEBOAT_LOG_JSON".into(),
                value: Some("true".into()),
                ..Default::default()
            });
        }
        env.extend(self.env.clone());

        let container = Container {
            name: AGENT_CONTAINER.into(),
            image: Some(self.config.image.clone()),
            image_pull_policy: Some(self.config.image_pull_policy.clone()),
            args: Some(self.args.clone()),
            env: Some(env),
            ports: (!self.ports.is_empty()).then(|| self.ports.clone()),
            volume_mounts: Some(mounts),
            resources: Some(
                o.resources
                    .clone()
                    .unwrap_or_else(|| self.config.resources.clone()),
            ),
            termination_message_path: Some("/dev/termination-log".into()),
            termination_message_policy: Some("File".into()),
            security_context: Some(self.config.container_security_context.clone()),
            ..Default::default()
        };
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels),
                annotations: (!annotations.is_empty()).then_some(annotations),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                restart_policy: Some("Never".into()),
                service_account_name: match self.api_account {
                    Some(account) => Some(account.to_owned()),
                    None => o
                        .service_account_name
                        .clone()
                        .or_else(|| self.config.service_account.clone()),
                },
                automount_service_account_token: Some(self.api_account.is_some()),
                node_selector: (!o.node_selector.is_empty()).then(|| o.node_selector.clone()),
                tolerations: (!o.tolerations.is_empty()).then(|| o.tolerations.clone()),
                priority_class_name: o.priority_class_name.clone(),
                security_context: Some(data_volume_ids(
                    pod_security(
                        &self.config.pod_security_context,
                        o.security_context.as_ref(),
                    ),
                    self.data_volume,
                )),
                image_pull_secrets: pull_secrets(
                    &self.config.image_pull_secrets,
                    o.image_pull_secrets.iter().map(|s| s.name.as_str()),
                ),
                containers: vec![container],
                volumes: Some(volumes),
                ..Default::default()
            }),
        }
    }
}

/// The platform team's pod context with the ids a resource chose set over it; nothing else of
/// the platform's context can be changed from a resource.
fn pod_security(
    platform: &PodSecurityContext,
    ids: Option<&PodSecurityOverride>,
) -> PodSecurityContext {
    let mut psc = platform.clone();
    let Some(ids) = ids else { return psc };
    if let Some(uid) = ids.run_as_user {
        psc.run_as_user = Some(uid);
    }
    if let Some(gid) = ids.run_as_group {
        psc.run_as_group = Some(gid);
    }
    if let Some(gid) = ids.fs_group {
        psc.fs_group = Some(gid);
    }
    if let Some(level) = &ids.se_linux_level {
        // Only the level: the rest stays the platform's.
        let mut se: SELinuxOptions = psc.se_linux_options.take().unwrap_or_default();
        se.level = Some(level.clone());
        psc.se_linux_options = Some(se);
    }
    psc
}

/// The ids of the server a new data directory is restored for, over everything else: PostgreSQL
/// refuses a data directory that is not its own. The UID is never 0 (the schema's minimum).
fn data_volume_ids(
    mut psc: PodSecurityContext,
    target: Option<&DataVolumeTarget>,
) -> PodSecurityContext {
    if let Some(t) = target {
        psc.run_as_user = Some(t.run_as_user);
        psc.run_as_non_root = Some(true);
        if t.fs_group.is_some() {
            psc.fs_group = t.fs_group;
        }
    }
    psc
}

/// The platform's pull secrets, then the resource's, each once.
fn pull_secrets<'a>(
    platform: &'a [String],
    resource: impl Iterator<Item = &'a str>,
) -> Option<Vec<LocalObjectReference>> {
    let mut seen = BTreeSet::new();
    let refs: Vec<LocalObjectReference> = platform
        .iter()
        .map(String::as_str)
        .chain(resource)
        .filter(|name| seen.insert(*name))
        .map(|name| LocalObjectReference {
            name: name.to_owned(),
        })
        .collect();
    (!refs.is_empty()).then_some(refs)
}

/// One read-only Secret volume per Secret, projecting only the referenced keys, mounted where
/// [`lifeboat_api::agent_job::secret_file_path`] says the agent finds them.
fn secret_volumes(secrets: &[SecretKeyRef]) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut keys: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for s in secrets {
        keys.entry(&s.name).or_default().insert(&s.key);
    }
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for (name, keys) in keys {
        let volume = format!("secret-{}", short_hash(name, 6));
        volumes.push(Volume {
            name: volume.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(name.to_owned()),
                items: Some(
                    keys.iter()
                        .map(|k| KeyToPath {
                            key: (*k).to_owned(),
                            path: (*k).to_owned(),
                            mode: None,
                        })
                        .collect(),
                ),
                default_mode: Some(0o440),
                // Optional: a missing Secret (or key) does not hold the pod in ContainerCreating;
                // the agent finds no file and fails with SecretNotFound, naming it. The operator
                // itself never reads Secrets, not even to see whether they exist.
                optional: Some(true),
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: volume,
            mount_path: format!("{SECRETS_DIR}/{name}"),
            read_only: Some(true),
            ..Default::default()
        });
    }
    (volumes, mounts)
}
