//! Pure builders of a RestoreRequest's Jobs: one restore Job per asset, one validation Job.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use lifeboat_api::agent_job::{AgentRestoreJob, AgentValidateJob, JOB_ENV};
use lifeboat_api::common::{Destination, RestoreTarget, SecretKeyRef};
use lifeboat_api::{BackupPolicy, RestoreRequest};

use super::plan::Step;
use super::progress::{restore_job_name, validate_job_name};
use crate::backup_policy::cronjob::s3_keys;
use crate::config::AgentConfig;
use crate::error::{Error, Result};
use crate::names;
use crate::pod::AgentPod;

/// The label value of the validation Job's "asset".
pub const VALIDATION: &str = "validation";

/// Where the backups are read from: the request's explicit location, else the policy's destination.
pub fn location(rr: &RestoreRequest, policy: &BackupPolicy) -> Destination {
    rr.spec
        .source
        .location
        .clone()
        .unwrap_or_else(|| policy.spec.destination.clone())
}

pub fn restore_document(
    rr: &RestoreRequest,
    policy: &BackupPolicy,
    step: &Step,
) -> Result<AgentRestoreJob> {
    Ok(AgentRestoreJob {
        namespace: rr.namespace().ok_or(Error::MissingObjectKey("namespace"))?,
        policy: rr.spec.source.policy.clone(),
        backup_id: step.backup_id.clone(),
        asset: step.asset.clone(),
        target: step.target.clone(),
        location: location(rr, policy),
        options: rr.spec.options.clone(),
        identity_secret: policy
            .spec
            .encryption
            .as_ref()
            .and_then(|e| e.identity_secret.clone()),
    })
}

pub fn restore_job(
    rr: &RestoreRequest,
    policy: &BackupPolicy,
    step: &Step,
    agent: &AgentConfig,
) -> Result<Job> {
    let doc = restore_document(rr, policy, step)?;
    let mut secrets = target_secrets(step);
    secrets.extend(location_secrets(&doc.location));
    secrets.extend(doc.identity_secret.clone());
    job(
        rr,
        &restore_job_name(&rr.name_any(), &step.asset.name),
        &step.asset.name,
        "restore",
        serde_json::to_string(&doc)?,
        secrets,
        &doc.location,
        agent,
    )
}

pub fn validate_job(
    rr: &RestoreRequest,
    policy: &BackupPolicy,
    steps: &[Step],
    agent: &AgentConfig,
) -> Result<Job> {
    let assets = steps
        .iter()
        .map(|s| restore_document(rr, policy, s))
        .collect::<Result<Vec<_>>>()?;
    let doc = AgentValidateJob {
        namespace: rr.namespace().ok_or(Error::MissingObjectKey("namespace"))?,
        checks: rr.spec.validation.checks.clone(),
        timeout: rr.spec.validation.timeout.clone(),
        assets,
    };
    let secrets = steps.iter().flat_map(target_secrets).collect();
    // Checks need no backup location: mount none.
    let no_location = Destination {
        volume: None,
        s3: None,
    };
    job(
        rr,
        &validate_job_name(&rr.name_any()),
        VALIDATION,
        "validate",
        serde_json::to_string(&doc)?,
        secrets,
        &no_location,
        agent,
    )
}

#[allow(clippy::too_many_arguments)] // one private constructor behind the two public builders
fn job(
    rr: &RestoreRequest,
    name: &str,
    asset: &str,
    verb: &str,
    document: String,
    secrets: Vec<SecretKeyRef>,
    location: &Destination,
    agent: &AgentConfig,
) -> Result<Job> {
    let rr_name = rr.name_any();
    let labels = std::collections::BTreeMap::from([
        (names::LABEL_NAME.to_owned(), "lifeboat-agent".to_owned()),
        (
            names::LABEL_MANAGED_BY.to_owned(),
            names::MANAGED_BY.to_owned(),
        ),
        (
            "lifeboat.dev/restore".to_owned(),
            names::label_value(&rr_name),
        ),
        (names::LABEL_ASSET.to_owned(), asset.to_owned()),
        (names::LABEL_ROLE.to_owned(), verb.to_owned()),
    ]);
    let overrides = rr.spec.pod_template.as_ref();
    let mut job_labels = overrides.map(|o| o.labels.clone()).unwrap_or_default();
    job_labels.extend(labels.clone());
    let pod = AgentPod {
        config: agent,
        args: vec![verb.to_owned(), "--execute".to_owned()],
        env: vec![EnvVar {
            name: JOB_ENV.into(),
            value: Some(document),
            ..Default::default()
        }],
        secrets,
        destination: location,
        overrides,
        labels,
        annotations: Default::default(),
        needs_api: false,
    };
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: rr.namespace(),
            labels: Some(job_labels),
            owner_references: Some(vec![
                rr.controller_owner_ref(&())
                    .ok_or(Error::MissingObjectKey("uid"))?,
            ]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // A restore that failed half-way is not retried blindly: the user decides.
            backoff_limit: Some(0),
            active_deadline_seconds: i64::try_from(rr.spec.timeout.as_secs()).ok(),
            template: pod.template(),
            ..Default::default()
        }),
        status: None,
    })
}

/// Secrets the restore target needs: the target override's, else the original source's.
fn target_secrets(step: &Step) -> Vec<SecretKeyRef> {
    let mut out = Vec::new();
    match &step.target {
        Some(RestoreTarget {
            postgres: Some(pg), ..
        }) => out.extend(pg.connection.password_secret.clone()),
        Some(RestoreTarget { redis: Some(r), .. }) => {
            out.extend(r.connection.password_secret.clone())
        }
        Some(RestoreTarget {
            object_storage: Some(s3),
            ..
        }) => out.extend(s3_keys(&s3.credentials_secret)),
        Some(_) => {}
        None => {
            if let Some(pg) = &step.asset.postgres {
                out.extend(pg.connection.password_secret.clone());
            }
            if let Some(r) = &step.asset.redis {
                out.extend(r.connection.password_secret.clone());
            }
            if let Some(b) = &step.asset.object_storage {
                out.extend(s3_keys(&b.source.credentials_secret));
            }
        }
    }
    out
}

fn location_secrets(location: &Destination) -> Vec<SecretKeyRef> {
    location
        .s3
        .as_ref()
        .map(|s| s3_keys(&s.credentials_secret).to_vec())
        .unwrap_or_default()
}
