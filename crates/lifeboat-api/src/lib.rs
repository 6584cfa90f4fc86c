//! Lifeboat's API: the `lifeboat.dev/v1alpha1` custom resources and the pure helpers the
//! operator, the agent and the kubectl plugin share. No I/O lives here.

pub mod agent_job;
pub mod agent_result;
pub mod backup_policy;
pub mod common;
pub mod conditions;
pub mod drill_schedule;
pub mod duration;
pub mod evidence;
pub mod ident;
pub mod identity;
pub mod kinds;
pub mod names;
pub mod reference;
pub mod restore_request;
pub mod schedule;

pub use backup_policy::{BackupPolicy, BackupPolicySpec, BackupPolicyStatus};
pub use drill_schedule::{DrillSchedule, DrillScheduleSpec, DrillScheduleStatus};
pub use duration::Duration;
pub use restore_request::{RestoreRequest, RestoreRequestSpec, RestoreRequestStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every Lifeboat kind.
pub const GROUP: &str = "lifeboat.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";

/// The CRDs of all kinds, in the order they are installed, with the file name each has in crds/.
pub fn crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("backuppolicies.yaml", BackupPolicy::crd()),
        ("restorerequests.yaml", RestoreRequest::crd()),
        ("drillschedules.yaml", DrillSchedule::crd()),
    ]
}

/// A CRD as the YAML committed in crds/ (a header, then the document).
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_norway::Error> {
    let body = serde_norway::to_string(crd)?;
    Ok(format!(
        "# Generated from the Rust types in crates/lifeboat-api by `make crds`. Do not edit.\n{body}"
    ))
}
