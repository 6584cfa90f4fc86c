//! The contract between the operator and the agent inside a Job: the operator serializes an
//! [`AgentJob`] into the `LIFEBOAT_JOB` environment variable and mounts every referenced Secret
//! key as a file at [`secret_file_path`]. The document holds no secret, only references, so the
//! Job spec can be read by anyone who can read Jobs.

use serde::{Deserialize, Serialize};

use crate::backup_policy::{Asset, Compression, Encryption, Retention};
use crate::common::{Destination, SecretKeyRef};

/// The environment variable that carries the serialized [`AgentJob`].
pub const JOB_ENV: &str = "LIFEBOAT_JOB";

/// Where Secrets are mounted in agent pods.
pub const SECRETS_DIR: &str = "/var/run/lifeboat/secrets";

/// Where the backup volume is mounted in agent pods.
pub const BACKUP_VOLUME_DIR: &str = "/var/lib/lifeboat/backups";

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
}
