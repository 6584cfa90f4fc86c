//! Settings of the operator process that shape what it creates.

use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, ResourceRequirements, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use lifeboat_api::identity::AmbientIdentity;
use std::collections::BTreeMap;

/// The unprivileged user of agent pods unless the platform team chooses (the distroless
/// "nonroot" user).
pub const AGENT_UID: i64 = 65532;

/// The field manager of every server-side apply: one manager owns every field Lifeboat writes.
pub const FIELD_MANAGER: &str = "lifeboat-operator";

/// How agent pods are built.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The agent image, e.g. `ghcr.io/lifeboat-dev/lifeboat-agent:0.1.0`.
    pub image: String,
    /// `IfNotPresent` by default; `Always` for mutable tags.
    pub image_pull_policy: String,
    /// Service account of agent pods unless a resource overrides it; the namespace's `default`
    /// when unset (agent pods run in the resource's namespace, where an operator-wide account
    /// does not exist; their token is not mounted unless the asset needs the Kubernetes API).
    pub service_account: Option<String>,
    /// Requests and limits unless a resource overrides them.
    pub resources: ResourceRequirements,
    /// Secrets every agent pod pulls its image with (`agent.imagePullSecrets`), before a
    /// resource's own.
    pub image_pull_secrets: Vec<String>,
    /// The agent pod's security context (`agent.podSecurityContext`); a resource may set its
    /// ids over it.
    pub pod_security_context: PodSecurityContext,
    /// The agent container's security context (`agent.containerSecurityContext`).
    pub container_security_context: SecurityContext,
    /// Hosts a drill's webhook may be on (`drills.webhookAllowedHosts`: exact or `*.suffix`);
    /// any host when empty. Handed to the notify Job's agent, which refuses the others.
    pub webhook_allowed_hosts: Vec<String>,
    /// The prefix of the chart's ClusterRoles that Kubernetes-state accounts are bound to
    /// (`<prefix>-backup`, `<prefix>-restore`, and `-cluster` variants of each).
    pub kubestate_roles: String,
    /// Agents log JSON lines, as the operator does (`logJson`): one format for the log
    /// collector whichever process wrote the line.
    pub log_json: bool,
    /// What an S3 location without `credentialsSecret` may act as (`agent.s3AmbientIdentity`):
    /// such locations are refused before any Job under `none`; the agent is told the mode too.
    pub s3_ambient_identity: AmbientIdentity,
}

impl Default for AgentConfig {
    fn default() -> Self {
        let q = |s: &str| Quantity(s.to_owned());
        Self {
            image: format!(
                "ghcr.io/lifeboat-dev/lifeboat-agent:{}",
                env!("CARGO_PKG_VERSION")
            ),
            image_pull_policy: "IfNotPresent".into(),
            service_account: None,
            // The agent streams: its memory does not grow with the size of the data.
            resources: ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".into(), q("100m")),
                    ("memory".into(), q("64Mi")),
                ])),
                limits: Some(BTreeMap::from([("memory".into(), q("256Mi"))])),
                ..Default::default()
            },
            image_pull_secrets: Vec::new(),
            pod_security_context: restricted_pod(),
            container_security_context: restricted_container(),
            webhook_allowed_hosts: Vec::new(),
            kubestate_roles: "lifeboat-kubestate".into(),
            log_json: false,
            s3_ambient_identity: AmbientIdentity::None,
        }
    }
}

/// Pod Security "restricted" with fixed ids: the chart's default.
pub fn restricted_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(AGENT_UID),
        run_as_group: Some(AGENT_UID),
        fs_group: Some(AGENT_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

/// Pod Security "restricted" for the container, and a read-only root filesystem.
pub fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..Default::default()
    }
}

/// The operator's flags that shape agent pods, as the chart passes them.
#[derive(Clone, Debug, clap::Args)]
pub struct AgentFlags {
    /// Image of the agent that runs inside backup and restore Jobs.
    #[arg(long, env = "LIFEBOAT_AGENT_IMAGE")]
    pub agent_image: Option<String>,
    #[arg(
        long,
        env = "LIFEBOAT_AGENT_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    pub agent_image_pull_policy: String,
    /// Service account of agent pods unless a resource names another (default: the namespace's
    /// `default` account, with no token mounted).
    #[arg(long, env = "LIFEBOAT_AGENT_SERVICE_ACCOUNT")]
    pub agent_service_account: Option<String>,
    /// Secrets (in each resource's namespace) agent pods pull their image with, comma-separated.
    #[arg(long, env = "LIFEBOAT_AGENT_IMAGE_PULL_SECRETS", value_delimiter = ',')]
    pub agent_image_pull_secrets: Vec<String>,
    /// The agent pods' security context as JSON (a PodSecurityContext); Pod Security
    /// "restricted" with UID 65532 when absent.
    #[arg(long, env = "LIFEBOAT_AGENT_POD_SECURITY_CONTEXT", value_parser = json::<PodSecurityContext>)]
    pub agent_pod_security_context: Option<PodSecurityContext>,
    /// The agent container's security context as JSON (a SecurityContext).
    #[arg(long, env = "LIFEBOAT_AGENT_CONTAINER_SECURITY_CONTEXT", value_parser = json::<SecurityContext>)]
    pub agent_container_security_context: Option<SecurityContext>,
    /// Hosts a drill's webhook may be on, comma-separated: exact (`hooks.slack.com`) or a
    /// suffix pattern (`*.example.com`). Any host when empty.
    #[arg(long, env = "LIFEBOAT_WEBHOOK_ALLOWED_HOSTS", value_delimiter = ',')]
    pub webhook_allowed_hosts: Vec<String>,
    /// Prefix of the chart's ClusterRoles Kubernetes-state accounts are bound to.
    #[arg(
        long,
        env = "LIFEBOAT_KUBESTATE_ROLES",
        default_value = "lifeboat-kubestate"
    )]
    pub kubestate_roles: String,
    /// What an S3 location without `credentialsSecret` may use: `none` (refused) or
    /// `webIdentity` (only the pod's web identity token, never instance metadata).
    #[arg(
        long,
        env = "LIFEBOAT_AGENT_S3_AMBIENT_IDENTITY",
        default_value = "none",
        value_parser = str::parse::<AmbientIdentity>
    )]
    pub agent_s3_ambient_identity: AmbientIdentity,
}

fn json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, serde_json::Error> {
    serde_json::from_str(s)
}

impl From<AgentFlags> for AgentConfig {
    fn from(f: AgentFlags) -> Self {
        let d = AgentConfig::default();
        AgentConfig {
            image: f.agent_image.unwrap_or(d.image),
            image_pull_policy: f.agent_image_pull_policy,
            service_account: f.agent_service_account,
            resources: d.resources,
            image_pull_secrets: f.agent_image_pull_secrets,
            pod_security_context: f
                .agent_pod_security_context
                .unwrap_or(d.pod_security_context),
            container_security_context: f
                .agent_container_security_context
                .unwrap_or(d.container_security_context),
            webhook_allowed_hosts: f.webhook_allowed_hosts,
            kubestate_roles: f.kubestate_roles,
            log_json: d.log_json,
            s3_ambient_identity: f.agent_s3_ambient_identity,
        }
    }
}
