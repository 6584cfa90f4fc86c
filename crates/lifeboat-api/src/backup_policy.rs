//! `BackupPolicy`: which assets to back up, when, where to, for how long, and the RPO objective.

// kube-derive takes one `printcolumn(...)` per column; clippy reads the repeated `type_ = ...`
// keys across them as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    Destination, PodTemplateOverride, PostgresConnection, RedisConnection, S3Location,
};
use crate::duration::Duration;

/// A backup plan for a set of application data assets: PostgreSQL databases, Redis, object
/// storage and Kubernetes objects. The operator runs one CronJob per asset; each run writes an
/// artifact and a `metadata.json` (written last, after every checksum) to the destination.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "lifeboat.dev",
    version = "v1alpha1",
    kind = "BackupPolicy",
    namespaced,
    status = "BackupPolicyStatus",
    shortname = "bp",
    category = "lifeboat",
    derive = "PartialEq",
    doc = "A backup plan: assets, cron schedule, retention, destination and RPO objective.",
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Assets", type_ = "integer", json_path = ".status.assetCount"),
    printcolumn(
        name = "Last Backup",
        type_ = "date",
        json_path = ".status.lastBackupTime"
    ),
    printcolumn(name = "RPO", type_ = "string", json_path = ".status.rpo"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.objectives.rpo"),
    printcolumn(
        name = "Last-Verified",
        type_ = "date",
        json_path = ".status.lastVerifiedTime"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(COPY_ELSEWHERE_RULE).message("a copy must be in another place than the destination: its endpoint, bucket or prefix must differ"))]
#[x_kube(validation = Rule::new("!has(self.copies) || size(self.copies) == 0 || self.assets.all(a, !has(a.postgres) || !has(a.postgres.pointInTime))").message("copies are not made of pointInTime assets yet (their base backups and WAL): put those in a policy without copies"))]
pub struct BackupPolicySpec {
    /// The assets to back up; names must be unique (they name CronJobs and backup files).
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    #[schemars(length(min = 1, max = 32))]
    pub assets: Vec<Asset>,
    /// When to back up: five-field cron (`0 * * * *` is hourly) or a macro such as `@daily`.
    #[schemars(length(min = 1, max = 100))]
    #[x_kube(validation = Rule::new(crate::schedule::SCHEDULE_RULE).message(crate::schedule::SCHEDULE_MESSAGE))]
    pub schedule: String,
    /// IANA time zone of the schedule, e.g. `Europe/Paris`; UTC when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new(crate::schedule::TIME_ZONE_RULE).message(crate::schedule::TIME_ZONE_MESSAGE))]
    pub time_zone: Option<String>,
    /// How long backups are kept.
    pub retention: Retention,
    /// Where backups are written.
    pub destination: Destination,
    /// Off-site copies: once a backup counts at `destination`, it is copied to each of these
    /// buckets and read back there (every checksum compared) before its metadata is written
    /// there, each copy with its own retention. A copy that fails leaves the backup counted; the
    /// next run copies what the copy lacks. A restore reads a copy through `source.location`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    #[schemars(length(max = 4))]
    pub copies: Vec<BackupCopy>,
    /// Recovery objectives this policy is held to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectives: Option<BackupObjectives>,
    /// Pause scheduled backups (on-demand backups still run).
    #[serde(default)]
    pub suspend: bool,
    #[serde(default)]
    pub compression: Compression,
    /// Client-side encryption of artifacts before they leave the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Longest one backup run may take before it is stopped and reported failed.
    #[serde(default = "default_backup_timeout")]
    pub timeout: Duration,
    /// Finished backup Jobs kept for inspection, per asset.
    #[serde(default)]
    pub history: JobHistory,
    /// Settings of the agent pods.
    // Boxed: most policies have none, and every policy is held in the operator's cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<Box<PodTemplateOverride>>,
}

/// One off-site copy of a policy's backups: another S3 bucket (a volume is in the same cluster,
/// so it is not off-site), with its own Object Lock and retention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupCopy {
    /// Names the copy in status, Events and metrics: a DNS label, unique in the policy.
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The bucket the copies are written to.
    pub s3: S3Location,
    /// S3 Object Lock on every object of each copy (see `destination.objectLock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<crate::common::ObjectLock>,
    /// How long copies are kept there; the policy's `retention` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
}

impl BackupCopy {
    /// The copy's bucket as a destination, for the code that reads and writes any store.
    pub fn destination(&self) -> Destination {
        Destination {
            volume: None,
            s3: Some(self.s3.clone()),
            object_lock: self.object_lock.clone(),
        }
    }
}

/// Admission's rule that a copy is in another place than the policy's destination: the same
/// endpoint, bucket and prefix would make the copy the backup itself.
pub const COPY_ELSEWHERE_RULE: &str = "!has(self.copies) || !has(self.destination.s3) || self.copies.all(c, c.s3.endpoint != self.destination.s3.endpoint || c.s3.bucket != self.destination.s3.bucket || (has(c.s3.prefix) ? c.s3.prefix : '') != (has(self.destination.s3.prefix) ? self.destination.s3.prefix : ''))";

fn default_backup_timeout() -> Duration {
    Duration::from_secs(3600)
}

/// One data asset and how to reach it: its kind and that kind's settings, one of four.
///
/// On the wire (and in the CRD schema) an asset is [`AssetFields`], four optional fields of
/// which admission lets exactly one be set; in Rust it is this struct with an enum, so no code
/// ever handles an asset without settings or with two kinds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "AssetFields", into = "AssetFields")]
pub struct Asset {
    /// Short name, unique in the policy.
    pub name: String,
    pub source: AssetSource,
    /// Write a canary marker into the source just before each backup (see [`AssetFields`]).
    pub canary: bool,
}

/// What an asset is and how to reach it. Each kind's settings are boxed: inline, every asset
/// would be the size of the largest kind (~300 bytes), and the operator holds every policy's.
#[derive(Clone, Debug, PartialEq)]
pub enum AssetSource {
    Postgres(Box<PostgresAsset>),
    Redis(Box<RedisAsset>),
    ObjectStorage(Box<ObjectStorageAsset>),
    KubernetesState(Box<KubernetesStateAsset>),
}

/// Runs `$body` with `$s` bound to the settings of whichever kind `$source` (an
/// `&AssetSource`) holds: the one place besides the enum that lists the kinds, so code that
/// works on every kind (the operator's [`crate::kinds::SourceKind`], the agent's drivers)
/// never lists them itself.
#[macro_export]
macro_rules! each_source {
    ($source:expr, $s:ident => $body:expr) => {
        match $source {
            $crate::backup_policy::AssetSource::Postgres($s) => $body,
            $crate::backup_policy::AssetSource::Redis($s) => $body,
            $crate::backup_policy::AssetSource::ObjectStorage($s) => $body,
            $crate::backup_policy::AssetSource::KubernetesState($s) => $body,
        }
    };
}

impl AssetSource {
    pub fn kind(&self) -> AssetKind {
        match self {
            AssetSource::Postgres(_) => AssetKind::Postgres,
            AssetSource::Redis(_) => AssetKind::Redis,
            AssetSource::ObjectStorage(_) => AssetKind::ObjectStorage,
            AssetSource::KubernetesState(_) => AssetKind::KubernetesState,
        }
    }

    /// What every kind answers (identifiers, Secrets, descriptions, safety backups).
    pub fn settings(&self) -> &dyn crate::kinds::SourceKind {
        each_source!(self, s => &**s)
    }
}

/// One data asset and how to reach it. Exactly one kind is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.postgres), has(self.redis), has(self.objectStorage), has(self.kubernetesState)].filter(x, x).size() == 1").message("an asset needs exactly one of postgres, redis, objectStorage or kubernetesState"))]
#[x_kube(validation = Rule::new("!has(self.canary) || !self.canary || has(self.postgres) || has(self.redis) || has(self.objectStorage)").message("canary markers are written into PostgreSQL, Redis and bucket sources only"))]
pub struct AssetFields {
    /// Short name, unique in the policy (DNS label, at most 40 characters).
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresAsset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisAsset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_storage: Option<ObjectStorageAsset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_state: Option<KubernetesStateAsset>,
    /// Write a canary marker into the source just before each backup: a row in a
    /// `lifeboat_canary` table of each database (PostgreSQL), a member of the `lifeboat:canary`
    /// sorted set (Redis), an object under `.lifeboat-canary/` (bucket). A drill then measures
    /// RPO from the newest marker its restore holds,
    /// not from timestamps. Off by default: writing into a production source is the owner's call.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub canary: bool,
}

/// An asset read with no kind or with several: admission refuses both, so only an object stored
/// before the rule existed (or written around it) can be one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("asset {0:?} needs exactly one of postgres, redis, objectStorage or kubernetesState")]
pub struct NotOneKind(pub String);

impl TryFrom<AssetFields> for Asset {
    type Error = NotOneKind;

    fn try_from(f: AssetFields) -> Result<Self, NotOneKind> {
        let source = match (f.postgres, f.redis, f.object_storage, f.kubernetes_state) {
            (Some(pg), None, None, None) => AssetSource::Postgres(Box::new(pg)),
            (None, Some(r), None, None) => AssetSource::Redis(Box::new(r)),
            (None, None, Some(b), None) => AssetSource::ObjectStorage(Box::new(b)),
            (None, None, None, Some(k)) => AssetSource::KubernetesState(Box::new(k)),
            _ => return Err(NotOneKind(f.name)),
        };
        Ok(Asset {
            name: f.name,
            source,
            canary: f.canary,
        })
    }
}

impl From<Asset> for AssetFields {
    fn from(a: Asset) -> Self {
        let mut f = AssetFields {
            name: a.name,
            postgres: None,
            redis: None,
            object_storage: None,
            kubernetes_state: None,
            canary: a.canary,
        };
        match a.source {
            AssetSource::Postgres(pg) => f.postgres = Some(*pg),
            AssetSource::Redis(r) => f.redis = Some(*r),
            AssetSource::ObjectStorage(b) => f.object_storage = Some(*b),
            AssetSource::KubernetesState(k) => f.kubernetes_state = Some(*k),
        }
        f
    }
}

/// The schema is the wire format's: the CRD does not change with the Rust representation.
impl JsonSchema for Asset {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        AssetFields::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        AssetFields::schema_id()
    }

    fn inline_schema() -> bool {
        AssetFields::inline_schema()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        AssetFields::json_schema(generator)
    }
}

/// The kind of an asset, as recorded in metadata and labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AssetKind {
    Postgres,
    Redis,
    ObjectStorage,
    KubernetesState,
}

impl AssetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AssetKind::Postgres => "postgres",
            AssetKind::Redis => "redis",
            AssetKind::ObjectStorage => "objectStorage",
            AssetKind::KubernetesState => "kubernetesState",
        }
    }
}

impl Asset {
    /// The PostgreSQL settings, when it is a PostgreSQL asset.
    pub fn postgres(&self) -> Option<&PostgresAsset> {
        match &self.source {
            AssetSource::Postgres(pg) => Some(pg),
            _ => None,
        }
    }

    /// The Redis settings, when it is a Redis asset.
    pub fn redis(&self) -> Option<&RedisAsset> {
        match &self.source {
            AssetSource::Redis(r) => Some(r),
            _ => None,
        }
    }

    /// The bucket settings, when it is an object storage asset.
    pub fn object_storage(&self) -> Option<&ObjectStorageAsset> {
        match &self.source {
            AssetSource::ObjectStorage(b) => Some(b),
            _ => None,
        }
    }

    /// The kind of the asset.
    pub fn kind(&self) -> AssetKind {
        self.source.kind()
    }
}

/// A logical dump of PostgreSQL databases with `pg_dump`, restorable with `pg_restore`; or, with
/// `pointInTime`, physical base backups and a continuous WAL archive of the whole server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.pointInTime) || !has(self.dumpOptions) || (!has(self.dumpOptions.schemas) && !has(self.dumpOptions.excludeSchemas) && !has(self.dumpOptions.excludeTables) && (!has(self.dumpOptions.noOwner) || !self.dumpOptions.noOwner))").message("dumpOptions do not apply to pointInTime: a base backup copies the whole server"))]
pub struct PostgresAsset {
    #[serde(flatten)]
    pub connection: PostgresConnection,
    /// Databases to dump, one artifact each.
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 63)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new(crate::ident::DATABASES_RULE).message(crate::ident::DATABASE_MESSAGE))]
    pub databases: Vec<String>,
    #[serde(default)]
    pub dump_options: PgDumpOptions,
    /// Accept a database without user tables (Lifeboat's own `lifeboat_canary` aside) as a
    /// valid backup. Off by default: an empty database is far more often a fault (a wrong
    /// database, a failed migration) than the truth, and a backup of nothing must not pass as good.
    #[serde(default)]
    pub allow_empty: bool,
    /// Continuous protection: instead of `pg_dump`, the schedule takes base backups
    /// (`pg_basebackup`) and a long-running archiver streams the WAL from a replication slot it
    /// owns, so the asset can be restored to any instant the archive covers. Off by default: it
    /// needs a replication role, a slot on the server, and it copies every database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_in_time: Option<PointInTimeArchiving>,
}

/// How a PostgreSQL asset is archived for point-in-time recovery. The connection's host, port
/// and TLS mode are the asset's; the role is its own, since streaming WAL needs the
/// `REPLICATION` attribute, which the dump role should not have.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PointInTimeArchiving {
    /// The role with the `REPLICATION` attribute (and nothing else: it reads every database's
    /// WAL).
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(crate::ident::ROLE_RULE).message(crate::ident::ROLE_MESSAGE))]
    pub user: String,
    /// The role's password; omit for trust or certificate authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<crate::common::SecretKeyRef>,
    /// How often the WAL segment being written is stored, in seconds: the RPO, plus the upload.
    /// Each store is a PUT of up to 16 MiB, hence the floor.
    #[serde(default = "default_partial_upload_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub partial_upload_seconds: u32,
}

fn default_partial_upload_seconds() -> u32 {
    5
}

impl PointInTimeArchiving {
    /// The replication connection: the asset's server, this role.
    pub fn connection(&self, asset: &PostgresConnection) -> PostgresConnection {
        PostgresConnection {
            user: self.user.clone(),
            password_secret: self.password_secret.clone(),
            ..asset.clone()
        }
    }
}

/// Options passed to `pg_dump`, each as one `--option=value` argument.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PgDumpOptions {
    /// Dump only these schemas (`--schema`); all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 255)))]
    #[x_kube(validation = Rule::new(crate::ident::DUMP_PATTERNS_RULE).message(crate::ident::DUMP_PATTERNS_MESSAGE))]
    pub schemas: Vec<String>,
    /// Leave out these schemas (`--exclude-schema`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 255)))]
    #[x_kube(validation = Rule::new(crate::ident::DUMP_PATTERNS_RULE).message(crate::ident::DUMP_PATTERNS_MESSAGE))]
    pub exclude_schemas: Vec<String>,
    /// Leave out these tables' data and definitions (`--exclude-table`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 255)))]
    #[x_kube(validation = Rule::new(crate::ident::DUMP_PATTERNS_RULE).message(crate::ident::DUMP_PATTERNS_MESSAGE))]
    pub exclude_tables: Vec<String>,
    /// Do not dump ownership (`--no-owner`): restores into another role's database cleanly.
    #[serde(default)]
    pub no_owner: bool,
}

/// A point-in-time RDB snapshot of Redis via `redis-cli --rdb`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisAsset {
    #[serde(flatten)]
    pub connection: RedisConnection,
    /// The server's data directory, for a Redis on a host whose directory the agent can write:
    /// a restore places `dump.rdb` there and Redis loads it at its next restart. Omit it for a
    /// Redis in a pod (a StatefulSet with its own volume): the restore then loads the backup
    /// over the replication protocol into the running server, with no restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("dataDir must be an absolute path"))]
    pub data_dir: Option<String>,
    /// Accept a server without keys (Lifeboat's own `lifeboat:canary` aside) as a valid
    /// backup. Off by default, as for PostgreSQL and buckets.
    #[serde(default)]
    pub allow_empty: bool,
}

impl RedisAsset {
    /// Where a restore of this asset into `target` (its own server when `None`) places
    /// `dump.rdb`; `None` means a load over replication. A target decides alone: another
    /// server's data directory says nothing about this one's.
    pub fn restore_data_dir<'a>(
        &'a self,
        target: Option<&'a crate::common::RedisTarget>,
    ) -> Option<&'a str> {
        match target {
            Some(t) => t.data_dir.as_deref(),
            None => self.data_dir.as_deref(),
        }
    }
}

/// A copy of a bucket (or a prefix of it) on S3-compatible storage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStorageAsset {
    #[serde(flatten)]
    pub source: S3Location,
    /// Accept an empty source as a valid backup. Off by default: an empty or unmounted source
    /// is far more often a fault than the truth, and a backup of nothing must not pass as good.
    #[serde(default)]
    pub allow_empty: bool,
}

/// Kubernetes objects found by API discovery, stored restorable (server-managed fields removed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesStateAsset {
    /// Namespaces to include; every namespace when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 63)))]
    #[x_kube(validation = Rule::new(crate::ident::NAMESPACES_RULE).message(crate::ident::NAMESPACE_MESSAGE))]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 63)))]
    #[x_kube(validation = Rule::new(crate::ident::NAMESPACES_RULE).message(crate::ident::NAMESPACE_MESSAGE))]
    pub exclude_namespaces: Vec<String>,
    /// Resources to include as `plural.group` (`deployments.apps`, `configmaps`); all listable
    /// resources when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_resources: Vec<String>,
    /// Only objects matching this label selector, e.g. `app.kubernetes.io/part-of=shop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
    /// Also cluster-scoped objects (CRDs, ClusterRoles, ...).
    #[serde(default)]
    pub include_cluster_resources: bool,
    /// Also Secrets. Off by default: a state dump is often read by more people than the Secrets.
    #[serde(default)]
    pub include_secrets: bool,
}

/// How long backups are kept. The newest good backup of each asset is never deleted, whatever
/// the rules say.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.keepLast) || has(self.maxAge)").message("retention needs keepLast, maxAge or both"))]
#[x_kube(validation = Rule::new("!has(self.keepLast) || self.keepLast >= self.minKeep").message("keepLast must be at least minKeep"))]
pub struct Retention {
    /// Keep at most this many backups per asset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub keep_last: Option<u32>,
    /// Delete backups older than this, e.g. `7d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    /// The floor: always keep at least this many newest good backups per asset, even past maxAge.
    #[serde(default = "default_min_keep")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_keep: u32,
    /// The mass-deletion guard: a pass that would delete more than this share (percent) of an
    /// asset's backups deletes nothing, and the policy says so (condition RetentionApplied=False,
    /// reason MassDeletionRefused, and an Event). A wrong clock or a mistyped maxAge then costs a
    /// warning, not the history. 100 switches the guard off.
    #[serde(default = "default_max_delete_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub max_delete_percent: u32,
}

fn default_min_keep() -> u32 {
    1
}

/// Half: a routine pass deletes one or two backups of many, never most of them.
pub const DEFAULT_MAX_DELETE_PERCENT: u32 = 50;

fn default_max_delete_percent() -> u32 {
    DEFAULT_MAX_DELETE_PERCENT
}

/// Objectives a BackupPolicy is held to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupObjectives {
    /// Recovery point objective: the newest good backup must never be older than this.
    pub rpo: Duration,
    /// Which backup RPOMet measures from: `Newest` (the newest good backup) or `Verified` (the
    /// newest backup a drill restored and validated: data proven recoverable). Unset: `Verified`
    /// for the assets a DrillSchedule drills, `Newest` for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_basis: Option<RpoBasis>,
}

/// What the RPO objective is measured against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RpoBasis {
    /// The newest backup whose metadata was committed (checksummed, never restored).
    Newest,
    /// The newest backup a drill restored and validated.
    Verified,
}

/// Compression of artifacts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Compression {
    #[serde(default)]
    pub algorithm: CompressionAlgorithm,
    /// zstd level, 1 (fastest) to 19 (smallest). The default, 1, keeps a backup at the
    /// source's own speed on two cores (level 3 measured 1.2–1.7 × pg_dump's limit) and its
    /// artifacts no larger than gzip's.
    #[serde(default = "default_zstd_level")]
    #[schemars(range(min = 1, max = 19))]
    pub level: u8,
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            algorithm: CompressionAlgorithm::default(),
            level: default_zstd_level(),
        }
    }
}

fn default_zstd_level() -> u8 {
    1
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CompressionAlgorithm {
    #[default]
    Zstd,
    None,
}

/// Client-side encryption with age: artifacts are encrypted to public recipients, so the backup
/// pod needs no secret at all; restores read the identity (private key) from a Secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    /// age public keys (`age1...`) that can decrypt the artifacts.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(validation = Rule::new("self.all(r, r.startsWith('age1'))").message("recipients must be age public keys starting with age1"))]
    pub recipients: Vec<String>,
    /// Secret key holding the age identity used by restores and verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_secret: Option<crate::common::SecretKeyRef>,
}

/// Finished Jobs kept per asset. Bounded: history that grows without limit is how operators
/// run out of memory (CloudNativePG once accumulated ~17k Backup objects).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobHistory {
    #[serde(default = "default_history")]
    #[schemars(range(min = 0, max = 20))]
    pub successful: u8,
    #[serde(default = "default_history")]
    #[schemars(range(min = 0, max = 20))]
    pub failed: u8,
}

impl Default for JobHistory {
    fn default() -> Self {
        Self {
            successful: default_history(),
            failed: default_history(),
        }
    }
}

fn default_history() -> u8 {
    3
}

/// What the operator observed of a BackupPolicy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicyStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `RPOMet`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Number of assets in the spec (a printer column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_count: Option<u32>,
    /// Per asset: the last good backup and the last failure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assets: Vec<AssetStatus>,
    /// Snapshot time of the newest good backup of the worst-off asset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_time: Option<Time>,
    /// Age of that backup when the status was written, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<i64>,
    /// The same, for people (`12m30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo: Option<String>,
    /// The last `lifeboat.dev/backup-now` token acted upon (each token runs once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_now_token: Option<String>,
    /// When the worst-off asset's newest verified backup was verified (restored and validated by
    /// a drill); absent while an asset has never been. The `Last-Verified` column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_time: Option<Time>,
    /// Events owed, published after the write that records them (see `PendingEvent`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub pending_events: Vec<crate::common::PendingEvent>,
    /// The oldest the newest backup can be just before a scheduled one lands: what a disaster at
    /// the worst moment loses. Compared with `objectives.rpo` in condition `RPOAchievable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst_case_rpo: Option<WorstCaseRpo>,
}

/// The worst-case RPO a schedule allows: its longest gap between two due times (walked over the
/// next eight days in its time zone) plus the time a backup takes to capture and commit; with
/// `pointInTime` assets, at least their WAL archive lag (and only that when all are).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorstCaseRpo {
    /// `scheduleGapSeconds + backupSeconds`, or more: `walArchiveLagSeconds` when larger, and
    /// alone when every asset is `pointInTime`.
    pub seconds: i64,
    /// The same, for people (`1h5m`).
    pub rpo: String,
    /// The longest gap between consecutive due times.
    pub schedule_gap_seconds: i64,
    /// The longest duration among the assets' newest good backups; absent before any backup
    /// (the gap alone is then a lower bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_seconds: Option<i64>,
    /// The largest WAL archive lag bound among `pointInTime` assets: their worst case, in place
    /// of the schedule's (a policy of such assets only is held to this alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_archive_lag_seconds: Option<i64>,
}

/// Backup state of one asset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssetStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<BackupRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<BackupFailure>,
    /// Failures since the last success.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// The newest backup of this asset a drill restored and validated: proven restorable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified: Option<VerifiedBackup>,
    /// Why retention deleted nothing after the newest good backup (the mass-deletion guard);
    /// cleared by the next backup whose retention pass went through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_refused: Option<String>,
    /// For a `pointInTime` asset, an upper bound of its WAL archive lag in seconds: what its
    /// archiver's readiness allows while it is Available, plus the time since it stopped being.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_archive_lag_seconds: Option<i64>,
    /// Where each off-site copy of this asset stands, as the newest backup run reported it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<CopyStatus>,
}

/// One off-site copy of an asset, as the newest backup run left it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CopyStatus {
    /// The copy's name in `spec.copies`.
    pub name: String,
    /// The newest backup of the asset the copy holds, read back and committed there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_snapshot_time: Option<Time>,
    /// How far the copy trails the asset's newest good backup: the difference of their snapshot
    /// times (0 when the copy holds it); absent while the copy holds none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind_seconds: Option<i64>,
    /// Why the newest run could not bring the copy up to date (`<reason>: <message>`); the
    /// next run copies what it lacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Why the copy's retention deleted nothing (the mass-deletion guard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_refused: Option<String>,
}

/// A backup proven restorable by a drill.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedBackup {
    pub id: String,
    /// When the drill that restored it finished.
    pub time: Time,
    /// When its data was captured, as the drill measured it (drill start minus achieved RPO,
    /// the oldest restored asset's): the verified RPO is measured from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_time: Option<Time>,
    /// The DrillSchedule (same namespace) and its drill id.
    pub drill: String,
}

/// A committed backup, as its metadata describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// Backup id: the timestamped directory name under the policy's prefix.
    pub id: String,
    /// When the source was captured: what RPO is measured from.
    pub snapshot_time: Time,
    pub started_at: Time,
    pub finished_at: Time,
    /// Bytes stored (after compression and encryption).
    pub stored_bytes: u64,
    /// sha256 of the stored artifact (of the manifest, for multi-file assets).
    pub sha256: String,
    pub duration_seconds: f64,
}

/// The last failed backup of an asset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupFailure {
    pub time: Time,
    /// Failure class, e.g. `SourceUnreachable`, `Auth`, `Storage`, `Integrity`, `Timeout`.
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
}
