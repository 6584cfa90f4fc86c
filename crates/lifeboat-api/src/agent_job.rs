//! The contract between the operator and the agent inside a Job: the operator serializes an
//! [`AgentJob`] into the `LIFEBOAT_JOB` environment variable and mounts every referenced Secret
//! key as a file at [`secret_file_path`]. The document holds no secret, only references, so the
//! Job spec can be read by anyone who can read Jobs.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::backup_policy::{Asset, Compression, Encryption, Retention};
use crate::common::{Destination, RestoreTarget, SecretKeyRef, ValidationCheck};
use crate::duration::Duration;
use crate::restore_request::RestoreOptions;

/// The environment variable that carries the serialized [`AgentJob`].
pub const JOB_ENV: &str = "LIFEBOAT_JOB";

/// The environment variable with the agent pod's IP (from the downward API): where a Redis
/// target without `dataDir` connects to load the backup over replication.
pub const POD_IP_ENV: &str = "LIFEBOAT_POD_IP";

/// The port the restore agent serves a Redis target's replication on (the pod's
/// `containerPort`, so a NetworkPolicy can name it).
pub const REDIS_LOAD_PORT: u16 = 6380;

/// Where Secrets are mounted in agent pods.
pub const SECRETS_DIR: &str = "/var/run/lifeboat/secrets";

/// Where the backup volume is mounted in agent pods.
pub const BACKUP_VOLUME_DIR: &str = "/var/lib/lifeboat/backups";

/// Where a point-in-time restore's PVC (`dataVolume` target) is mounted in its agent pod.
pub const RESTORE_VOLUME_DIR: &str = "/var/lib/lifeboat/restore";

/// The Secret the operator keeps in every namespace it runs Jobs in: that namespace's signing
/// key, derived from the platform team's master key. A fixed name, so RBAC can name it.
pub const SIGNING_KEY_SECRET: &str = "lifeboat-signing-key";

/// The key of [`SIGNING_KEY_SECRET`] holding the key's bytes.
pub const SIGNING_KEY_KEY: &str = "key";

/// The reference every agent Job document carries to its namespace's signing key.
pub fn signing_key_ref() -> SecretKeyRef {
    SecretKeyRef {
        name: SIGNING_KEY_SECRET.to_owned(),
        key: SIGNING_KEY_KEY.to_owned(),
    }
}

/// The file holding `secret`'s key inside an agent pod.
pub fn secret_file_path(secret: &SecretKeyRef) -> String {
    format!("{SECRETS_DIR}/{}/{}", secret.name, secret.key)
}

/// One backup of one asset, as the operator asks the agent to run it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentJob {
    /// Namespace and name of the BackupPolicy (the backups' directory is named after it).
    pub namespace: String,
    pub policy: String,
    pub asset: Asset,
    pub destination: Destination,
    pub compression: Compression,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Retention applied after a successful backup, inside this policy's own prefix only.
    pub retention: Retention,
    /// The policy's off-site copies: written after the backup counts, each read back there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<crate::backup_policy::BackupCopy>,
    /// The namespace's signing key, which signs the backup's metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<SecretKeyRef>,
    /// What a Kubernetes-state backup may read; unset for other assets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_state_scope: Option<KubernetesStateScope>,
}

/// What a Kubernetes-state Job may read or write, as the operator computed it from the labels
/// the platform team puts on Namespaces. The agent refuses a selection or a dump that reaches
/// outside it before touching anything, and never widens it: a document without a scope is
/// held to its own namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum KubernetesStateScope {
    /// These namespaces only, and no cluster-scoped object.
    Namespaces(BTreeSet<String>),
    /// Cluster-scoped objects and every namespace: the platform's opt-in for one namespace. Its
    /// account can grant itself anything, so there is nothing narrower to hold it to.
    Cluster,
}

impl KubernetesStateScope {
    /// Only `namespace`: what a document without a scope gets.
    pub fn own(namespace: &str) -> Self {
        Self::Namespaces(BTreeSet::from([namespace.to_owned()]))
    }

    pub fn allows_namespace(&self, namespace: &str) -> bool {
        match self {
            Self::Namespaces(set) => set.contains(namespace),
            Self::Cluster => true,
        }
    }

    pub fn allows_cluster(&self) -> bool {
        matches!(self, Self::Cluster)
    }
}

/// One asset restored from one backup, as the operator asks the agent (`restore --execute`) to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRestoreJob {
    pub namespace: String,
    pub policy: String,
    /// A resolved backup id (never `latest`).
    pub backup_id: String,
    /// The asset as the policy defines it (its original source, and what was backed up).
    pub asset: Asset,
    /// Where to restore instead of the original source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RestoreTarget>,
    /// Where the backups are.
    pub location: Destination,
    pub options: RestoreOptions,
    /// The age identity that decrypts encrypted artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_secret: Option<SecretKeyRef>,
    /// The namespace's signing key: the backup's metadata must carry its signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<SecretKeyRef>,
    /// Accept unsigned legacy (version 1) metadata: the request's `source.allowUnsigned`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unsigned: bool,
    /// What a Kubernetes-state restore may write; unset for other assets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_state_scope: Option<KubernetesStateScope>,
}

/// The backups at a location, listed and verified without any BackupPolicy (`catalog`): what a
/// rebuilt cluster, holding only the bucket and the keys, restores from. The operator never
/// reads the store itself (it holds no store credentials), so a Job of the agent does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCatalogJob {
    pub namespace: String,
    /// The backups' directory at the location (`<namespace>/<policy>/`).
    pub policy: String,
    /// A backup id, or `latest` for each asset's newest complete backup.
    pub backup_id: String,
    /// With `latest`: the newest snapshotted at or before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_before: Option<jiff::Timestamp>,
    /// Only these assets; every asset found when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assets: Vec<String>,
    pub location: Destination,
    /// The namespace's signing key: every metadata listed must carry its signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<SecretKeyRef>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unsigned: bool,
}

/// A finished drill's evidence record, to be written next to the backups it restored as
/// `<namespace>/<policy>/drill-<id>.json` (`evidence`): the operator knows the timings, the verdict and the
/// checks; the agent fills in each restored backup's artifacts, checksums, snapshot time and
/// canary from its metadata, and records the backups as verified when the drill restored and
/// validated them (retention then never deletes the newest of them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentEvidenceJob {
    pub namespace: String,
    pub policy: String,
    /// Where the policy's backups are.
    pub location: Destination,
    pub evidence: crate::evidence::DrillEvidence,
    /// The namespace's signing key: the restored backups' metadata is read, so checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<SecretKeyRef>,
}

/// A drill's result sent to its webhook (`notify`), once, from the drill's own namespace: the
/// URL is read from the mounted Secret file, never by the operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentNotifyJob {
    pub namespace: String,
    /// The Secret key holding the webhook URL.
    pub webhook_secret: SecretKeyRef,
    /// The message, posted as `{"text": ...}` (a Slack-compatible incoming webhook).
    pub text: String,
    /// Hosts the webhook may be on (`drills.webhookAllowedHosts`): exact or `*.suffix`; any
    /// host when empty. Set by the platform team, never by the DrillSchedule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
}

/// Application checks after a restore (`validate`), retried until they pass or time runs out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentValidateJob {
    pub namespace: String,
    pub checks: Vec<ValidationCheck>,
    pub timeout: Duration,
    /// The assets checks refer to, with the targets they were restored into.
    pub assets: Vec<AgentRestoreJob>,
}
