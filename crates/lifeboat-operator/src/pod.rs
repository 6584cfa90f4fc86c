//! The agent pod every Job runs, built from the resource's settings: Pod Security "restricted",
//! a read-only root filesystem, secrets only as mounted files, the backup volume when the
//! destination is one.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, KeyToPath,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use lifeboat_api::agent_job::{BACKUP_VOLUME_DIR, SECRETS_DIR};
use lifeboat_api::common::{Destination, PodTemplateOverride, SecretKeyRef};

use crate::config::AgentConfig;
use crate::names::short_hash;

/// The container name; the operator reads this container's termination message.
pub const AGENT_CONTAINER: &str = "agent";
/// The unprivileged user of agent pods (the distroless "nonroot" user).
pub const AGENT_UID: i64 = 65532;

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
        ];
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
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                run_as_non_root: Some(true),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    add: None,
                }),
                ..Default::default()
            }),
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
                security_context: Some(PodSecurityContext {
                    run_as_non_root: Some(true),
                    run_as_user: Some(AGENT_UID),
                    run_as_group: Some(AGENT_UID),
                    fs_group: Some(AGENT_UID),
                    seccomp_profile: Some(SeccompProfile {
                        type_: "RuntimeDefault".into(),
                        localhost_profile: None,
                    }),
                    ..Default::default()
                }),
                containers: vec![container],
                volumes: Some(volumes),
                ..Default::default()
            }),
        }
    }
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
