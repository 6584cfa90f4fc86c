//! Spec pieces shared by the three kinds: secret references, destinations, connections,
//! validation checks, restore targets and the agent pod override.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;

/// DNS-1123 label: what asset and check names become part of (Job names, labels, paths).
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A key in a Secret of the resource's own namespace. Secret values never appear in a spec,
/// a status, an Event or a log line: the agent reads them from a mounted file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Credentials of S3-compatible storage: a Secret holding an access key id and a secret key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3CredentialsRef {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key of the access key id.
    #[serde(default = "default_access_key_id_key")]
    pub access_key_id_key: String,
    /// Key of the secret access key.
    #[serde(default = "default_secret_access_key_key")]
    pub secret_access_key_key: String,
}

fn default_access_key_id_key() -> String {
    "AWS_ACCESS_KEY_ID".into()
}

fn default_secret_access_key_key() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}

/// A bucket and prefix on S3-compatible object storage (AWS S3, MinIO, Ceph RGW, rclone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Location {
    /// Endpoint URL, e.g. `https://s3.eu-west-1.amazonaws.com` or `http://minio.storage:9000`.
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("endpoint must be an http:// or https:// URL"))]
    #[schemars(length(min = 8, max = 2048))]
    pub endpoint: String,
    /// Bucket name.
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    )]
    pub bucket: String,
    /// Key prefix inside the bucket: relative segments separated by single `/`, e.g.
    /// `team-a/backups`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[x_kube(validation = Rule::new(crate::ident::PREFIX_RULE).message(crate::ident::PREFIX_MESSAGE))]
    #[schemars(length(max = 512))]
    pub prefix: String,
    /// Region; most S3-compatible servers accept the default.
    #[serde(default = "default_region")]
    pub region: String,
    /// Address buckets as `endpoint/bucket` rather than `bucket.endpoint` (MinIO and most
    /// self-hosted servers want this).
    #[serde(default)]
    pub force_path_style: bool,
    /// The Secret with the access keys. Absent: refused (`AmbientIdentityDisabled`) unless the
    /// platform installed Lifeboat with `agent.s3AmbientIdentity: webIdentity`; then only the
    /// agent pod's web identity token (IRSA), never the node's instance metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<S3CredentialsRef>,
    /// A Secret key holding the PEM certificates of the CA(s) the endpoint's certificate is
    /// checked against, besides the system's (a private CA). Verification is never turned off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret: Option<SecretKeyRef>,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// A PersistentVolumeClaim the agent mounts as its backup directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeDestination {
    /// Name of the PersistentVolumeClaim, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
    /// Directory inside the volume (relative, no `..`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[x_kube(validation = Rule::new("!self.startsWith('/') && !self.contains('..')").message("subPath must be relative (no leading '/') and must not contain '..'"))]
    #[schemars(length(max = 512))]
    pub sub_path: String,
}

/// Where backups are written: a volume (the default choice) or S3-compatible object storage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.volume) != has(self.s3)").message("destination needs exactly one of volume or s3"))]
#[x_kube(validation = Rule::new("!has(self.objectLock) || has(self.s3)").message("objectLock needs an s3 destination (a bucket with Object Lock enabled)"))]
pub struct Destination {
    /// A PersistentVolumeClaim mounted into the agent pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeDestination>,
    /// S3-compatible object storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Location>,
    /// Makes every object of a backup immutable in the store itself (S3 Object Lock), so the
    /// writer's own keys can neither delete nor overwrite it until `retainFor` has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLock>,
}

/// S3 Object Lock retention set on each object of a backup (the bucket must have been created
/// with Object Lock enabled, which also versions it). Retention keeps a locked backup until its
/// lock expires whatever its rules say; the store refuses to delete a locked object version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectLock {
    /// `Compliance`: nobody, not even the bucket's root account, can shorten or lift the lock.
    /// `Governance`: a principal with `s3:BypassGovernanceRetention` can.
    pub mode: ObjectLockMode,
    /// How long each object stays locked after its backup starts, e.g. `30d`; at least as long
    /// as retention should keep a backup, since retention cannot delete it earlier.
    pub retain_for: Duration,
}

/// The S3 Object Lock retention modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ObjectLockMode {
    Governance,
    Compliance,
}

impl ObjectLockMode {
    /// The name S3 uses on the wire (`x-amz-object-lock-mode`, `<Mode>`).
    pub fn as_s3(self) -> &'static str {
        match self {
            Self::Governance => "GOVERNANCE",
            Self::Compliance => "COMPLIANCE",
        }
    }
}

/// TLS mode of a PostgreSQL connection (libpq's `sslmode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    Allow,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// How to reach a PostgreSQL server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresConnection {
    /// Host name or IP address, e.g. `db.prod.svc` (never a socket directory or a list).
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(crate::ident::HOST_RULE).message(crate::ident::HOST_MESSAGE))]
    pub host: String,
    #[serde(default = "default_postgres_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Role to connect as.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(crate::ident::ROLE_RULE).message(crate::ident::ROLE_MESSAGE))]
    pub user: String,
    /// The role's password; omit for trust or certificate authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretKeyRef>,
    /// TLS as libpq's `sslmode`: `require` encrypts without checking the certificate,
    /// `verify-ca` and `verify-full` check it against the system's trust store.
    #[serde(default)]
    pub ssl_mode: SslMode,
}

fn default_postgres_port() -> u16 {
    5432
}

/// How to reach a Redis server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisConnection {
    /// Host name or IP address.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(crate::ident::HOST_RULE).message(crate::ident::HOST_MESSAGE))]
    pub host: String,
    #[serde(default = "default_redis_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// ACL user name; omit for the default user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new(crate::ident::REDIS_USER_RULE).message(crate::ident::REDIS_USER_MESSAGE))]
    pub username: Option<String>,
    /// The password (`requirepass` or the ACL user's); never passed on a command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretKeyRef>,
    /// Connect with TLS.
    #[serde(default)]
    pub tls: bool,
}

fn default_redis_port() -> u16 {
    6379
}

/// An application check run after a restore: the playbook's `/health` step, generalised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.http), has(self.sql), has(self.redis)].filter(x, x).size() == 1").message("a check needs exactly one of http, sql or redis"))]
pub struct ValidationCheck {
    /// Name shown in status and reports.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<SqlCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisCheck>,
}

/// GET a URL and expect a status code, e.g. a service's `/health`. Redirects are not followed:
/// a 3xx is the status compared with `expectedStatus`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpCheck {
    /// An absolute `http://` or `https://` URL, e.g. `http://shop.staging.svc:8080/health`.
    #[x_kube(validation = Rule::new(HTTP_URL_RULE).message(HTTP_URL_MESSAGE))]
    #[schemars(length(min = 8, max = 2048))]
    pub url: String,
    #[serde(default = "default_expected_status")]
    #[schemars(range(min = 100, max = 599))]
    pub expected_status: u16,
    /// Time allowed for one attempt, connection and TLS handshake included.
    #[serde(default = "default_check_timeout")]
    pub timeout: Duration,
    /// A PEM bundle of the CAs an `https` server's certificate must chain to, instead of the
    /// system's (a cluster-internal CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretKeyRef>,
}

/// An HTTP check's URL at admission: absolute, http or https, printable ASCII only (a space,
/// a line break or a control character would end a request line). The agent refuses the same.
pub const HTTP_URL_RULE: &str = "self.matches('^[!-~]+$') && isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''";
pub const HTTP_URL_MESSAGE: &str = "url must be an absolute http:// or https:// URL with a host, in printable ASCII: no spaces, line breaks or control characters (percent-encode them)";

fn default_expected_status() -> u16 {
    200
}

fn default_check_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Run a query and compare the first column of the first row with `expect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SqlCheck {
    /// The restore target asset whose (possibly overridden) connection runs the query.
    #[schemars(length(min = 1, max = 40))]
    pub asset: String,
    /// Database to connect to; defaults to the first database of the asset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(crate::ident::DATABASE_RULE).message(crate::ident::DATABASE_MESSAGE))]
    pub database: Option<String>,
    /// One read-only statement, e.g. `SELECT count(*) > 0 FROM orders`: run in a read-only
    /// transaction that is rolled back, within the check's `timeout` (at most 5 minutes).
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// Expected text of the first column of the first row as psql prints it, e.g. `t` or `42`.
    #[schemars(length(max = 1024))]
    pub expect: String,
    /// Time allowed for one attempt (the statement timeout too).
    #[serde(default = "default_check_timeout")]
    pub timeout: Duration,
}

/// Check that a key exists in the restored Redis (optionally with a value).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisCheck {
    /// The restore target asset whose connection is used.
    #[schemars(length(min = 1, max = 40))]
    pub asset: String,
    #[serde(default)]
    #[schemars(range(min = 0, max = 15))]
    pub db: u8,
    #[schemars(length(min = 1, max = 1024))]
    pub key: String,
    /// Expected string value; omit to check only that the key exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub expect: Option<String>,
    /// Time allowed for one attempt, connection included.
    #[serde(default = "default_check_timeout")]
    pub timeout: Duration,
}

/// Where one asset of a backup is restored to, when not to its original source.
///
/// On the wire (and in the CRD schema) a target is [`RestoreTargetFields`], four optional
/// fields of which admission lets exactly one be set; in Rust the kind is an enum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RestoreTargetFields", into = "RestoreTargetFields")]
pub struct RestoreTarget {
    /// Name of the asset in the BackupPolicy.
    pub asset: String,
    pub to: Target,
}

impl RestoreTarget {
    /// The PostgreSQL target, when it is one.
    pub fn postgres(&self) -> Option<&PostgresTarget> {
        match &self.to {
            Target::Postgres(pg) => Some(pg),
            _ => None,
        }
    }

    /// The Redis target, when it is one.
    pub fn redis(&self) -> Option<&RedisTarget> {
        match &self.to {
            Target::Redis(r) => Some(r),
            _ => None,
        }
    }

    /// The new data directory of a point-in-time restore, when it is one.
    pub fn data_volume(&self) -> Option<&DataVolumeTarget> {
        match &self.to {
            Target::DataVolume(d) => Some(d),
            _ => None,
        }
    }

    /// The bucket target, when it is one.
    pub fn object_storage(&self) -> Option<&S3Location> {
        match &self.to {
            Target::ObjectStorage(s3) => Some(s3),
            _ => None,
        }
    }
}

/// What a restore target is, with its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Postgres(PostgresTarget),
    Redis(RedisTarget),
    ObjectStorage(S3Location),
    KubernetesState(KubernetesStateTarget),
    DataVolume(DataVolumeTarget),
}

/// Runs `$body` with `$t` bound to whichever target `$target` (an `&Target`) holds: the one
/// place besides the enum that lists the target kinds.
#[macro_export]
macro_rules! each_target {
    ($target:expr, $t:ident => $body:expr) => {
        match $target {
            $crate::common::Target::Postgres($t) => $body,
            $crate::common::Target::Redis($t) => $body,
            $crate::common::Target::ObjectStorage($t) => $body,
            $crate::common::Target::KubernetesState($t) => $body,
            $crate::common::Target::DataVolume($t) => $body,
        }
    };
}

impl Target {
    /// What every target answers (identifiers, Secrets, descriptions, staging scope).
    pub fn settings(&self) -> &dyn crate::kinds::TargetKind {
        each_target!(self, t => t)
    }

    /// The target's field name in a RestoreRequest, for messages.
    pub fn field(&self) -> &'static str {
        match self {
            Target::Postgres(_) => "postgres",
            Target::Redis(_) => "redis",
            Target::ObjectStorage(_) => "objectStorage",
            Target::KubernetesState(_) => "kubernetesState",
            Target::DataVolume(_) => "dataVolume",
        }
    }
}

/// Where one asset of a backup is restored to, when not to its original source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.postgres), has(self.redis), has(self.objectStorage), has(self.kubernetesState), has(self.dataVolume)].filter(x, x).size() == 1").message("a target needs exactly one of postgres, redis, objectStorage, kubernetesState or dataVolume"))]
pub struct RestoreTargetFields {
    /// Name of the asset in the BackupPolicy.
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub asset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_storage: Option<S3Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_state: Option<KubernetesStateTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_volume: Option<DataVolumeTarget>,
}

/// A target read with no kind or with several (admission refuses both).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the target of asset {0:?} needs exactly one of postgres, redis, objectStorage, kubernetesState or dataVolume"
)]
pub struct NotOneTarget(pub String);

impl TryFrom<RestoreTargetFields> for RestoreTarget {
    type Error = NotOneTarget;

    fn try_from(f: RestoreTargetFields) -> Result<Self, NotOneTarget> {
        let to = match (
            f.postgres,
            f.redis,
            f.object_storage,
            f.kubernetes_state,
            f.data_volume,
        ) {
            (Some(pg), None, None, None, None) => Target::Postgres(pg),
            (None, Some(r), None, None, None) => Target::Redis(r),
            (None, None, Some(s3), None, None) => Target::ObjectStorage(s3),
            (None, None, None, Some(k), None) => Target::KubernetesState(k),
            (None, None, None, None, Some(d)) => Target::DataVolume(d),
            _ => return Err(NotOneTarget(f.asset)),
        };
        Ok(RestoreTarget { asset: f.asset, to })
    }
}

impl From<RestoreTarget> for RestoreTargetFields {
    fn from(t: RestoreTarget) -> Self {
        let mut f = RestoreTargetFields {
            asset: t.asset,
            postgres: None,
            redis: None,
            object_storage: None,
            kubernetes_state: None,
            data_volume: None,
        };
        match t.to {
            Target::Postgres(pg) => f.postgres = Some(pg),
            Target::Redis(r) => f.redis = Some(r),
            Target::ObjectStorage(s3) => f.object_storage = Some(s3),
            Target::KubernetesState(k) => f.kubernetes_state = Some(k),
            Target::DataVolume(d) => f.data_volume = Some(d),
        }
        f
    }
}

/// The schema is the wire format's: the CRD does not change with the Rust representation.
impl JsonSchema for RestoreTarget {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        RestoreTargetFields::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        RestoreTargetFields::schema_id()
    }

    fn inline_schema() -> bool {
        RestoreTargetFields::inline_schema()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        RestoreTargetFields::json_schema(generator)
    }
}

/// A new PostgreSQL data directory for a point-in-time restore of a `pointInTime` asset: a base
/// backup and the WAL to replay, written into `subPath` of a PVC, which must be empty or absent
/// (never a live server's files). The user's PostgreSQL then starts on it, replays WAL from
/// `lifeboat-wal/` up to `pointInTime` and promotes; Lifeboat starts and scales nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeTarget {
    /// The PVC, in the request's namespace, the server will run on.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub claim_name: String,
    /// The data directory inside the PVC (the server's PGDATA there): relative, no `..`.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("!self.startsWith('/') && !self.contains('..')").message("subPath must be relative (no leading '/') and must not contain '..'"))]
    pub sub_path: String,
    /// The UID the server runs as (999 in the official image): the restore pod runs as it, so
    /// the files are the server's own, as PostgreSQL demands. Never root.
    #[schemars(range(min = 1, max = 2147483647))]
    pub run_as_user: i64,
    /// The pod's fsGroup, for a volume whose root only a group may write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub fs_group: Option<i64>,
    /// Recover to the last transaction committed at or before this RFC 3339 instant, or to the
    /// end of the archived WAL (`latest`). Per target, not per request: only a `pointInTime`
    /// asset restored into a new data directory has one.
    #[schemars(
        length(min = 1, max = 64),
        regex(
            pattern = r"^(latest|[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2}))$"
        )
    )]
    pub point_in_time: String,
}

/// A PostgreSQL server and database to restore into.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresTarget {
    #[serde(flatten)]
    pub connection: PostgresConnection,
    /// Database to restore into; defaults to the backed-up database's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(crate::ident::DATABASE_RULE).message(crate::ident::DATABASE_MESSAGE))]
    pub database: Option<String>,
    /// Create the database when it does not exist.
    #[serde(default)]
    pub create_database: bool,
}

/// A Redis server to restore into. With `dataDir` (a Redis on a host) the RDB is placed there
/// for Redis to load at its restart; without it (a Redis in a pod, e.g. a StatefulSet with a
/// PVC) the restore Job serves the RDB over the replication protocol and the running server
/// loads it as a replica does, then becomes a master again: no restart, no shared volume.
/// The target must reach the restore pod on port 6380 (NetworkPolicy), be a master, accept
/// CONFIG and REPLICAOF from this user, and replicate without TLS; otherwise the restore is
/// refused (`TargetUnsupported`) before the server is changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisTarget {
    #[serde(flatten)]
    pub connection: RedisConnection,
    /// The Redis data directory the agent writes `dump.rdb` into (Redis on a host); omit it to
    /// load over replication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("dataDir must be an absolute path"))]
    pub data_dir: Option<String>,
}

/// Where Kubernetes objects are re-applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesStateTarget {
    /// Rename namespaces on the way back, e.g. `{prod: prod-drill}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 63}))]
    #[x_kube(validation = Rule::new(crate::ident::NAMESPACE_MAPPING_RULE).message(crate::ident::NAMESPACE_MESSAGE))]
    pub namespace_mapping: BTreeMap<String, String>,
}

/// An Event the operator owes about a resource: recorded in its status with the write that makes
/// it due, published after that write under a name derived from `id` (so a retry after a crash
/// or a failed write finds it published already, and publishes nothing), then removed. Events
/// are therefore published once each, never before the status that explains them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingEvent {
    /// What happened, unique for the resource, e.g. `RestoreStarted/orders-db`.
    #[schemars(length(min = 1, max = 256))]
    pub id: String,
    #[serde(rename = "type")]
    pub type_: EventType,
    /// CamelCase, e.g. `DrillPassed`.
    #[schemars(length(min = 1, max = 128))]
    pub reason: String,
    /// What the Event is about, e.g. `Restore/orders-db`.
    #[schemars(length(min = 1, max = 128))]
    pub action: String,
    #[schemars(length(max = 1024))]
    pub note: String,
}

/// The two Event types Kubernetes knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EventType {
    Normal,
    Warning,
}

/// Settings of the agent pods a resource creates, merged over the operator's defaults. There is
/// no `hostNetwork`: a namespace user must not put pods on the node's network. A `hostNetwork`
/// stored before it was removed is ignored when read (unknown fields are) and pruned by the
/// structural schema on the next write.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Service account of the agent pod (e.g. one bound to a cloud IAM role). Not used by
    /// Kubernetes-state Jobs: they run as Lifeboat's own account, bound only to the namespaces
    /// the platform team allows, since an account named here could reach whatever its bindings
    /// reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Extra labels on the pods (and their Jobs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on the pods (and their Jobs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Secrets of this namespace the kubelet pulls the agent image with (a private registry
    /// mirror), added to the platform team's `agent.imagePullSecrets`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Vec<ImagePullSecret>,
    /// The pod-level ids a namespace may need (a UID range, an SELinux level assigned to the
    /// namespace), set over the platform team's `agent.podSecurityContext`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityOverride>,
}

/// A Secret of type `kubernetes.io/dockerconfigjson` in the resource's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImagePullSecret {
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// What a namespace user may change of its agent pods' security context: only ids Pod Security
/// "restricted" leaves to the pod. Privileged mode, capabilities, host access, another seccomp
/// profile or SELinux type cannot be written here (the schema has no field for them; the API
/// server refuses unknown fields under strict validation and prunes them otherwise), and root
/// is refused by the schema.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityOverride {
    /// Never 0: "restricted" refuses root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2147483647))]
    pub run_as_user: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub run_as_group: Option<i64>,
    /// The group that owns the backup volume's files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub fs_group: Option<i64>,
    /// The SELinux level (MCS categories) only, e.g. `s0:c26,c5`: "restricted" forbids a
    /// user, a role, and any type but the container runtime's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 2, max = 128),
        regex(pattern = r"^s[0-9]+(-s[0-9]+)?(:c[0-9]+([.,]c[0-9]+)*)?$")
    )]
    pub se_linux_level: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_host_network_is_read_and_dropped() {
        let o: PodTemplateOverride = serde_json::from_value(serde_json::json!({
            "hostNetwork": true, "serviceAccountName": "backup-sa"
        }))
        .unwrap();
        assert_eq!(o.service_account_name.as_deref(), Some("backup-sa"));
        assert!(
            !serde_json::to_string(&o).unwrap().contains("hostNetwork"),
            "never written back"
        );
    }
}
