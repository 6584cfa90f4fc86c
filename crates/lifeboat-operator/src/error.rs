//! What can go wrong in a reconcile. [`Error`] is an operation that failed (retried with
//! backoff); [`Problem`] is what keeps a resource from working until someone changes something
//! (reported in its status, rechecked at its own pace).

use std::time::Duration;

use kube::Resource;

use crate::controller::requeue;
use crate::kubestate::ScopeError;
use crate::restore_request::plan::PlanError;

/// A failed operation, named after what it was doing. Each variant's [`Error::reason`] is the
/// metric label and the Event reason of an error that persists.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a list of objects the reconcile decides from.
    #[error("listing {kind}: {source}")]
    List {
        kind: String,
        #[source]
        source: kube::Error,
    },
    /// Reading one object the reconcile decides from.
    #[error("reading {kind} {name}: {source}")]
    Get {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Applying a child (CronJob, Job, RestoreRequest, Secret, account, binding, namespace
    /// object) by server-side apply.
    #[error("applying {kind} {name}: {source}")]
    ApplyChild {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Creating a child that must never be taken over or made twice.
    #[error("creating {kind} {name}: {source}")]
    CreateChild {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Writing the resource's status.
    #[error("writing the status: {source}")]
    ApplyStatus {
        #[source]
        source: kube::Error,
    },
    /// Deleting what is left over (a CronJob of a removed asset, a staging namespace, an
    /// expired request, a withdrawn binding).
    #[error("deleting {kind} {name}: {source}")]
    DeleteLeftover {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Adding or removing the resource's finalizer.
    #[error("updating the finalizers: {source}")]
    Finalizer {
        #[source]
        source: kube::Error,
    },
    /// Publishing an Event the status records as owed (it stays owed).
    #[error("publishing Event {id}: {source}")]
    PublishEvent {
        id: String,
        #[source]
        source: kube::Error,
    },
    /// Serializing an agent's Job document.
    #[error("serializing the agent's job: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The object lacks a name, namespace or uid (never for objects read from the API).
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),
    /// A Kubernetes-state Job was built without the scope its reconcile must decide first (a
    /// bug, never a user's doing).
    #[error("no Kubernetes-state scope was decided for asset {0}")]
    ScopeNotDecided(String),
    /// A watch this reconcile reads from has not listed yet (the API server is slow or down).
    #[error("the {0} watch has not synced yet")]
    CacheNotReady(&'static str),
    /// The stored object does not fit the Rust types (written before a schema change, or
    /// around admission): it waits for an edit, and the watch goes on with the others.
    #[error("the stored object cannot be read: {0}")]
    InvalidObject(String),
    /// A problem found by a builder or an API call rather than by observing (a scope the
    /// installation refuses): the reconcile reports it in status like an observed one.
    #[error(transparent)]
    Problem(#[from] Problem),
}

impl Error {
    /// The metric label and Event reason (CamelCase, a fixed set).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::List { .. } => "ListFailed",
            Error::Get { .. } => "GetFailed",
            Error::ApplyChild { .. } => "ApplyChildFailed",
            Error::CreateChild { .. } => "CreateChildFailed",
            Error::ApplyStatus { .. } => "ApplyStatusFailed",
            Error::DeleteLeftover { .. } => "DeleteFailed",
            Error::Finalizer { .. } => "FinalizerFailed",
            Error::PublishEvent { .. } => "PublishEventFailed",
            Error::Serialize(_) => "SerializeFailed",
            Error::MissingObjectKey(_) => "MissingObjectKey",
            Error::ScopeNotDecided(_) => "ScopeNotDecided",
            Error::CacheNotReady(_) => "CacheNotReady",
            Error::InvalidObject(_) => "InvalidObject",
            Error::Problem(p) => p.reason(),
        }
    }

    /// Whether only an edit of the object cures it: no fast retry.
    pub fn needs_user(&self) -> bool {
        match self {
            Error::InvalidObject(_) | Error::MissingObjectKey(_) => true,
            Error::Problem(p) => p.recheck() == requeue::RESYNC,
            _ => false,
        }
    }

    pub fn list<K: Resource<DynamicType = ()>>() -> impl FnOnce(kube::Error) -> Error {
        move |source| Error::List {
            kind: K::kind(&()).into_owned(),
            source,
        }
    }

    pub fn get<K: Resource<DynamicType = ()>>(name: &str) -> impl FnOnce(kube::Error) -> Error {
        let name = name.to_owned();
        move |source| Error::Get {
            kind: K::kind(&()).into_owned(),
            name,
            source,
        }
    }

    pub fn apply<K: Resource<DynamicType = ()>>(name: &str) -> impl FnOnce(kube::Error) -> Error {
        let name = name.to_owned();
        move |source| Error::ApplyChild {
            kind: K::kind(&()).into_owned(),
            name,
            source,
        }
    }

    pub fn create<K: Resource<DynamicType = ()>>(name: &str) -> impl FnOnce(kube::Error) -> Error {
        let name = name.to_owned();
        move |source| Error::CreateChild {
            kind: K::kind(&()).into_owned(),
            name,
            source,
        }
    }

    pub fn delete<K: Resource<DynamicType = ()>>(name: &str) -> impl FnOnce(kube::Error) -> Error {
        let name = name.to_owned();
        move |source| Error::DeleteLeftover {
            kind: K::kind(&()).into_owned(),
            name,
            source,
        }
    }
}

/// What keeps a resource from working until someone changes something: its spec, an object it
/// names, or what the platform team provides. Reported as `Ready=False` with [`Problem::reason`]
/// and a Warning Event when it appears; nothing runs meanwhile.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Problem {
    /// The schedule or time zone croner refuses.
    #[error("invalid schedule: {0}")]
    InvalidSchedule(String),
    /// The BackupPolicy the resource names does not exist.
    #[error("BackupPolicy {policy:?} not found in {namespace}")]
    PolicyNotFound { policy: String, namespace: String },
    /// What a RestoreRequest restores cannot be resolved.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A drilled asset is not in the policy.
    #[error("asset {asset:?} is not in BackupPolicy {policy:?}")]
    DrilledAssetUnknown { asset: String, policy: String },
    /// A drilled asset has no staging target.
    #[error("asset {0:?} has no staging target")]
    NoStagingTarget(String),
    /// A staging target of another kind than its asset.
    #[error("the staging target of {0:?} is not of the asset's kind")]
    StagingTargetKind(String),
    /// A staging target that is the asset's own source.
    #[error(
        "the staging target of {0:?} is its own source: a drill never restores over its source"
    )]
    StagingTargetIsSource(String),
    /// A staging target outside the drill's declared staging scope.
    #[error("the staging target of {asset:?} ({what}) is outside the drill's staging scope")]
    OutOfStagingScope { asset: String, what: String },
    /// The staging namespace exists and is not the one this drill created.
    #[error(
        "namespace {0:?} exists and was not created by this DrillSchedule (its uid is not the one in status.stagingNamespace): it is never adopted or deleted; choose another staging.namespace.name"
    )]
    StagingNamespaceConflict(String),
    /// The installation does not let the operator manage namespaces.
    #[error(
        "the operator may not manage staging namespaces: install the chart with drills.stagingNamespaces=true, or drop staging.namespace"
    )]
    StagingNamespaceForbidden,
    /// No master key to derive the namespace's signing key from: no Job can sign or check its
    /// backups, so none is created until the platform team provides it.
    #[error("no signing key: {0}")]
    SigningKeyMissing(String),
    /// A Kubernetes-state asset reaches beyond what the platform team allows its namespace.
    #[error(transparent)]
    Scope(#[from] ScopeError),
    /// The catalog Job that reads the backups at a RestoreRequest's location has not finished:
    /// nothing is planned or touched before it verified them.
    #[error("reading the backups at the location (Job {0})")]
    ReadingCatalog(String),
    /// The catalog Job failed: the location could not be read, holds no such backup, or its
    /// metadata did not verify.
    #[error("{message}")]
    Catalog {
        reason: CatalogFailure,
        message: String,
    },
    /// An S3 location without `credentialsSecret` while the platform allows no ambient
    /// identity: refused before any Job, which would otherwise act as the node's cloud role.
    #[error(transparent)]
    AmbientIdentityDisabled(#[from] lifeboat_api::identity::AmbientIdentityDisabled),
    /// A `dataVolume` target's plan Job (the agent choosing the base backup and WAL for the
    /// time) has not finished: the plan is shown once it has.
    #[error("planning the point-in-time restore (Job {0})")]
    PlanningPointInTime(String),
    /// The plan Job found no way to reach the time: no base backup before it, WAL that does not
    /// reach it, a gap or a changed segment (the agent's class and message).
    #[error("{0}")]
    PointInTimeUnavailable(String),
}

/// Why the catalog at a location could not be read, from the agent's error class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogFailure {
    /// The store refused or could not be reached (storage, credentials, timeout).
    LocationUnreadable,
    /// No complete backup (of the assets or id asked for) lies there.
    NoBackupAtLocation,
    /// A metadata there is unsigned, signed with another key, or lies where it does not say.
    MetadataInvalid,
    /// A Secret the Job mounts (the store's keys) does not exist.
    SecretNotFound,
    /// The Job ended without the agent's report, or with another class.
    CatalogFailed,
}

impl CatalogFailure {
    pub fn from_class(class: Option<lifeboat_api::agent_result::ErrorClass>) -> Self {
        use lifeboat_api::agent_result::ErrorClass as C;
        match class {
            Some(
                C::Storage
                | C::Auth
                | C::SourceUnreachable
                | C::Timeout
                | C::TlsUntrusted
                | C::AmbientIdentityDisabled
                | C::WebIdentityMissing,
            ) => Self::LocationUnreadable,
            Some(C::NotFound) => Self::NoBackupAtLocation,
            Some(C::Integrity) => Self::MetadataInvalid,
            Some(C::SecretNotFound) => Self::SecretNotFound,
            Some(
                C::Config | C::Validation | C::ToolFailed | C::OutOfScope | C::TargetUnsupported,
            )
            | None => Self::CatalogFailed,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Self::LocationUnreadable => "LocationUnreadable",
            Self::NoBackupAtLocation => "NoBackupAtLocation",
            Self::MetadataInvalid => "MetadataInvalid",
            Self::SecretNotFound => "SecretNotFound",
            Self::CatalogFailed => "CatalogFailed",
        }
    }
}

impl Problem {
    /// The condition and Event reason (CamelCase, a fixed set).
    pub fn reason(&self) -> &'static str {
        match self {
            Problem::InvalidSchedule(_)
            | Problem::DrilledAssetUnknown { .. }
            | Problem::NoStagingTarget(_)
            | Problem::StagingTargetKind(_)
            | Problem::StagingTargetIsSource(_) => "InvalidSpec",
            Problem::PolicyNotFound { .. } => "PolicyNotFound",
            Problem::Plan(e) => e.reason(),
            Problem::OutOfStagingScope { .. } => "OutOfStagingScope",
            Problem::StagingNamespaceConflict(_) => "StagingNamespaceConflict",
            Problem::StagingNamespaceForbidden => "StagingNamespaceForbidden",
            Problem::SigningKeyMissing(_) => "SigningKeyMissing",
            Problem::Scope(e) => e.reason(),
            Problem::ReadingCatalog(_) => "ReadingCatalog",
            Problem::Catalog { reason, .. } => reason.reason(),
            Problem::AmbientIdentityDisabled(_) => "AmbientIdentityDisabled",
            Problem::PlanningPointInTime(_) => "PlanningPointInTime",
            Problem::PointInTimeUnavailable(_) => "PointInTimeUnavailable",
        }
    }

    /// When to look again: a spec only its edit can cure is rechecked at the slow resync (the
    /// edit itself triggers a reconcile); what others fix (a policy created, a backup taken, a
    /// key or a label provided, a namespace freed) is looked at again soon.
    pub fn recheck(&self) -> Duration {
        match self {
            Problem::InvalidSchedule(_)
            | Problem::DrilledAssetUnknown { .. }
            | Problem::NoStagingTarget(_)
            | Problem::StagingTargetKind(_)
            | Problem::StagingTargetIsSource(_)
            | Problem::OutOfStagingScope { .. }
            // Cured by the resource's edit, or by the platform's setting, which restarts the
            // operator and with it every reconcile.
            | Problem::AmbientIdentityDisabled(_) => requeue::RESYNC,
            Problem::Plan(e) if e.needs_edit() => requeue::RESYNC,
            // A finished catalog Job is not run again: only an edit (a new catalog) or a new
            // request reads the location again.
            Problem::Catalog { .. } | Problem::PointInTimeUnavailable(_) => requeue::RESYNC,
            _ => requeue::PROBLEM,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_has_a_reason_and_a_recheck() {
        let spec = Problem::InvalidSchedule("x".into());
        assert_eq!(spec.reason(), "InvalidSpec");
        assert_eq!(spec.recheck(), requeue::RESYNC);
        assert!(Error::from(spec).needs_user());
        let external = Problem::SigningKeyMissing("no Secret".into());
        assert_eq!(external.recheck(), requeue::PROBLEM);
        assert!(!Error::from(external).needs_user());
        assert_eq!(
            Problem::Plan(PlanError::NoBackupYet("db".into())).recheck(),
            requeue::PROBLEM
        );
        assert_eq!(
            Problem::Plan(PlanError::UnknownAsset("db".into(), "p".into())).recheck(),
            requeue::RESYNC
        );
    }
}
