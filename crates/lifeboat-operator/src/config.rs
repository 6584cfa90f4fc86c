//! Settings of the operator process that shape what it creates.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;

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
    /// Hosts a drill's webhook may be on (`drills.webhookAllowedHosts`: exact or `*.suffix`);
    /// any host when empty. Handed to the notify Job's agent, which refuses the others.
    pub webhook_allowed_hosts: Vec<String>,
    /// The prefix of the chart's ClusterRoles that Kubernetes-state accounts are bound to
    /// (`<prefix>-backup`, `<prefix>-restore`, and `-cluster` variants of each).
    pub kubestate_roles: String,
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
            webhook_allowed_hosts: Vec::new(),
            kubestate_roles: "lifeboat-kubestate".into(),
        }
    }
}
