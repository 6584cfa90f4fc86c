//! Pure builders of a RestoreRequest's Jobs: one restore Job per asset, one validation Job.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{ContainerPort, EnvVar, EnvVarSource, ObjectFieldSelector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use lifeboat_api::agent_job::{
    AgentCatalogJob, AgentJob, AgentRestoreJob, AgentValidateJob, JOB_ENV, POD_IP_ENV,
    REDIS_LOAD_PORT, signing_key_ref,
};
use lifeboat_api::backup_policy::{AssetKind, AssetSource, Retention};
use lifeboat_api::common::{DataVolumeTarget, Destination, RestoreTarget, SecretKeyRef};
use lifeboat_api::kinds::object_storage::s3_secrets;
use lifeboat_api::restore_request::RestoreOptions;
use lifeboat_api::{BackupPolicy, RestoreRequest};

use super::plan::{Step, safety_asset, safety_policy};
use super::progress::{restore_job_name, rollback_job_name, safety_job_name, validate_job_name};
use crate::config::AgentConfig;
use crate::error::{Error, Problem, Result};
use crate::kubestate::Access;
use crate::names;
use crate::pod::AgentPod;

/// The label value of the validation Job's "asset".
pub const VALIDATION: &str = "validation";

/// The label value of the catalog Job's "asset".
pub const CATALOG: &str = "catalog";

/// What the catalog Job reads: the request's source (directory, id, location, trust) and
/// assets. Its name carries a hash of it, so an edit of any of them (allowed until `execute`)
/// reads a new catalog instead of applying a changed pod template to a Job that cannot change.
pub fn catalog_document(rr: &RestoreRequest, location: Destination) -> Result<AgentCatalogJob> {
    Ok(AgentCatalogJob {
        namespace: rr.namespace().ok_or(Error::MissingObjectKey("namespace"))?,
        policy: rr.spec.source.policy.clone(),
        backup_id: rr.spec.source.backup_id.clone(),
        taken_before: rr.spec.source.taken_before.as_ref().map(|t| t.0),
        assets: rr.spec.assets.clone(),
        location,
        signing_key: Some(signing_key_ref()),
        allow_unsigned: rr.spec.source.allow_unsigned,
    })
}

/// The catalog Job's name for `doc`.
pub fn catalog_job_name(rr: &RestoreRequest, doc: &AgentCatalogJob) -> Result<String> {
    let hash = names::short_hash(&serde_json::to_string(doc)?, 4);
    Ok(names::bounded_name(
        &[&rr.name_any(), CATALOG, &hash],
        names::NAME_MAX,
    ))
}

/// The Job that reads the catalog at the request's location: mounted exactly as a restore Job
/// of that location is (the store's keys, the namespace's signing key), so the operator itself
/// never holds the store's credentials.
pub fn catalog_job(rr: &RestoreRequest, location: Destination, agent: &AgentConfig) -> Result<Job> {
    let doc = catalog_document(rr, location)?;
    let mut secrets = location_secrets(&doc.location);
    secrets.push(signing_key_ref());
    job(
        rr,
        &catalog_job_name(rr, &doc)?,
        CATALOG,
        Role::Catalog,
        serde_json::to_string(&doc)?,
        secrets,
        &doc.location,
        agent,
        None,
        false,
        None,
    )
}

/// Where the backups are read from: the request's explicit location, else the policy's
/// destination (without either there is nothing to read: the policy is missing).
pub fn location(rr: &RestoreRequest, policy: Option<&BackupPolicy>) -> Result<Destination> {
    rr.spec
        .source
        .location
        .clone()
        .or_else(|| policy.map(|p| p.spec.destination.clone()))
        .ok_or_else(|| {
            Error::Problem(Problem::PolicyNotFound {
                policy: rr.spec.source.policy.clone(),
                namespace: rr.namespace().unwrap_or_default(),
            })
        })
}

/// The age identity of encrypted backups: the request's own, else the policy's.
fn identity(rr: &RestoreRequest, policy: Option<&BackupPolicy>) -> Option<SecretKeyRef> {
    rr.spec.source.identity_secret.clone().or_else(|| {
        policy
            .and_then(|p| p.spec.encryption.as_ref())
            .and_then(|e| e.identity_secret.clone())
    })
}

pub fn restore_document(
    rr: &RestoreRequest,
    policy: Option<&BackupPolicy>,
    step: &Step,
) -> Result<AgentRestoreJob> {
    Ok(AgentRestoreJob {
        namespace: rr.namespace().ok_or(Error::MissingObjectKey("namespace"))?,
        policy: rr.spec.source.policy.clone(),
        backup_id: step.backup_id.clone(),
        asset: step.asset.clone(),
        target: step.target.clone(),
        location: location(rr, policy)?,
        options: rr.spec.options.clone(),
        identity_secret: identity(rr, policy),
        signing_key: Some(signing_key_ref()),
        allow_unsigned: rr.spec.source.allow_unsigned,
        kubernetes_state_scope: step.scope.clone(),
    })
}

pub fn restore_job(
    rr: &RestoreRequest,
    policy: Option<&BackupPolicy>,
    step: &Step,
    agent: &AgentConfig,
) -> Result<Job> {
    let doc = restore_document(rr, policy, step)?;
    let secrets = restore_secrets(step, &doc);
    job(
        rr,
        &restore_job_name(&rr.name_any(), &step.asset.name),
        &step.asset.name,
        Role::Restore,
        serde_json::to_string(&doc)?,
        secrets,
        &doc.location,
        agent,
        // A Kubernetes-state restore applies objects through the API: its pod gets a token, of
        // Lifeboat's restore account (bound to the step's scope), never the user's.
        (step.asset.kind() == AssetKind::KubernetesState)
            .then_some(Access::Restore.service_account()),
        loads_redis_over_replication(step),
        step.target.as_ref().and_then(RestoreTarget::data_volume),
    )
}

/// The label value of a point-in-time plan Job's role.
const PLAN: &str = "plan";

/// The Job that plans `step`'s point-in-time restore without writing anything (`restore`
/// without `--execute`): the agent chooses the base backup and WAL for the time from the store,
/// which the operator never reads, and reports them. Its name carries a hash of its document,
/// so an edit (allowed until `execute`) plans again. It mounts no target volume and runs as the
/// platform's UID: it writes nothing.
pub fn plan_job(
    rr: &RestoreRequest,
    policy: Option<&BackupPolicy>,
    step: &Step,
    agent: &AgentConfig,
) -> Result<Job> {
    let doc = restore_document(rr, policy, step)?;
    let text = serde_json::to_string(&doc)?;
    let hash = names::short_hash(&text, 4);
    let mut secrets = location_secrets(&doc.location);
    secrets.extend(doc.identity_secret.clone());
    secrets.push(signing_key_ref());
    job(
        rr,
        &names::bounded_name(
            &[&rr.name_any(), PLAN, &step.asset.name, &hash],
            names::NAME_MAX,
        ),
        &step.asset.name,
        Role::Plan,
        text,
        secrets,
        &doc.location,
        agent,
        None,
        false,
        None,
    )
}

/// The safety backup of `step`'s target, taken before the restore touches it (rollback asked):
/// the policy's own backup settings, into `<policy>_safety` at the backup location.
pub fn safety_job(
    rr: &RestoreRequest,
    policy: &BackupPolicy,
    step: &Step,
    agent: &AgentConfig,
) -> Result<Job> {
    let asset = safety_asset(&step.asset, step.target.as_ref()).map_err(Problem::Plan)?;
    let location = location(rr, Some(policy))?;
    let doc = AgentJob {
        namespace: rr.namespace().ok_or(Error::MissingObjectKey("namespace"))?,
        policy: safety_policy(&rr.spec.source.policy),
        asset,
        destination: location.clone(),
        compression: policy.spec.compression.clone(),
        encryption: policy.spec.encryption.clone(),
        // Keep every safety backup: they are deleted by people, not by a rule.
        retention: Retention {
            keep_last: None,
            max_age: None,
            min_keep: 1,
            max_delete_percent: lifeboat_api::backup_policy::DEFAULT_MAX_DELETE_PERCENT,
        },
        // A safety backup stays where the restore reads: it is not a backup of the policy.
        copies: Vec::new(),
        signing_key: Some(signing_key_ref()),
        kubernetes_state_scope: None,
    };
    let mut secrets = target_secrets(step);
    secrets.extend(location_secrets(&location));
    secrets.push(signing_key_ref());
    job(
        rr,
        &safety_job_name(&rr.name_any(), &step.asset.name),
        &step.asset.name,
        Role::SafetyBackup,
        serde_json::to_string(&doc)?,
        secrets,
        &location,
        agent,
        None,
        false,
        None,
    )
}

/// The restore of `step`'s safety backup `backup_id` into the target it was taken from.
pub fn rollback_job(
    rr: &RestoreRequest,
    policy: &BackupPolicy,
    step: &Step,
    backup_id: &str,
    agent: &AgentConfig,
) -> Result<Job> {
    let asset = safety_asset(&step.asset, step.target.as_ref()).map_err(Problem::Plan)?;
    let doc = AgentRestoreJob {
        namespace: rr.namespace().ok_or(Error::MissingObjectKey("namespace"))?,
        policy: safety_policy(&rr.spec.source.policy),
        backup_id: backup_id.to_owned(),
        asset,
        // The safety asset's source *is* the target.
        target: None,
        location: location(rr, Some(policy))?,
        options: RestoreOptions {
            // What the failed restore created must go, whatever the request asked.
            clean: true,
            ..rr.spec.options.clone()
        },
        identity_secret: identity(rr, Some(policy)),
        // The safety backup was signed moments ago by this namespace's key.
        signing_key: Some(signing_key_ref()),
        allow_unsigned: false,
        // Kubernetes state is never rolled back (plan::safety_asset refuses it).
        kubernetes_state_scope: None,
    };
    let secrets = restore_secrets(step, &doc);
    job(
        rr,
        &rollback_job_name(&rr.name_any(), &step.asset.name),
        &step.asset.name,
        Role::Rollback,
        serde_json::to_string(&doc)?,
        secrets,
        &doc.location,
        agent,
        None,
        // The safety backup goes back the way the restore came.
        loads_redis_over_replication(step),
        None,
    )
}

/// What a Job of a RestoreRequest does: its agent verb and its `lifeboat.dev/role` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Catalog,
    Plan,
    SafetyBackup,
    Restore,
    Validate,
    Rollback,
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Role::Catalog => "catalog",
            Role::Plan => PLAN,
            Role::SafetyBackup => "safety-backup",
            Role::Restore => "restore",
            Role::Validate => "validate",
            Role::Rollback => "rollback",
        }
    }

    fn args(self) -> Vec<String> {
        let args: &[&str] = match self {
            Role::Catalog => &["catalog"],
            Role::Plan => &["restore"],
            Role::SafetyBackup => &["backup"],
            Role::Restore | Role::Rollback => &["restore", "--execute"],
            Role::Validate => &["validate", "--execute"],
        };
        args.iter().map(|a| (*a).to_owned()).collect()
    }
}

pub fn validate_job(
    rr: &RestoreRequest,
    policy: Option<&BackupPolicy>,
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
    // The targets' credentials, and the CA bundles of HTTPS checks.
    let secrets = steps
        .iter()
        .flat_map(target_secrets)
        .chain(
            rr.spec
                .validation
                .checks
                .iter()
                .filter_map(|c| c.http.as_ref()?.ca_secret.clone()),
        )
        .collect();
    // Checks read no backup: no location and no signing key are mounted.
    let no_location = Destination {
        volume: None,
        s3: None,
        object_lock: None,
    };
    job(
        rr,
        &validate_job_name(&rr.name_any()),
        VALIDATION,
        Role::Validate,
        serde_json::to_string(&doc)?,
        secrets,
        &no_location,
        agent,
        None,
        false,
        None,
    )
}

#[allow(clippy::too_many_arguments)] // one private constructor behind the two public builders
fn job(
    rr: &RestoreRequest,
    name: &str,
    asset: &str,
    role: Role,
    document: String,
    secrets: Vec<SecretKeyRef>,
    location: &Destination,
    agent: &AgentConfig,
    api_account: Option<&str>,
    redis_load: bool,
    data_volume: Option<&DataVolumeTarget>,
) -> Result<Job> {
    let rr_name = rr.name_any();
    let labels = std::collections::BTreeMap::from([
        (names::LABEL_NAME.to_owned(), "lifeboat-agent".to_owned()),
        (
            names::LABEL_MANAGED_BY.to_owned(),
            names::MANAGED_BY.to_owned(),
        ),
        (
            names::LABEL_RESTORE.to_owned(),
            names::label_value(&rr_name),
        ),
        (names::LABEL_ASSET.to_owned(), asset.to_owned()),
        (names::LABEL_ROLE.to_owned(), role.label().to_owned()),
    ]);
    let overrides = rr.spec.pod_template.as_ref();
    let mut job_labels = overrides.map(|o| o.labels.clone()).unwrap_or_default();
    job_labels.extend(labels.clone());
    let mut env = vec![EnvVar {
        name: JOB_ENV.into(),
        value: Some(document),
        ..Default::default()
    }];
    let mut ports = Vec::new();
    if redis_load {
        // The address the target replicates from: the pod's own, from the kubelet.
        env.push(EnvVar {
            name: POD_IP_ENV.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "status.podIP".into(),
                    api_version: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        ports.push(ContainerPort {
            name: Some(REDIS_LOAD_PORT_NAME.into()),
            container_port: i32::from(REDIS_LOAD_PORT),
            protocol: Some("TCP".into()),
            ..Default::default()
        });
    }
    let pod = AgentPod {
        config: agent,
        args: role.args(),
        env,
        ports,
        secrets,
        destination: location,
        overrides,
        labels,
        annotations: Default::default(),
        api_account,
        data_volume,
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

/// The name of the restore pod's port a Redis target replicates from.
pub const REDIS_LOAD_PORT_NAME: &str = "redis-load";

/// Whether restoring `step` loads a Redis over replication (no `dataDir` decides it), so its
/// pod listens for the target and needs its own IP.
fn loads_redis_over_replication(step: &Step) -> bool {
    match &step.asset.source {
        AssetSource::Redis(r) => r
            .restore_data_dir(step.target.as_ref().and_then(|t| t.redis()))
            .is_none(),
        _ => false,
    }
}

/// Secrets the restore target needs: the target override's, else the original source's.
fn target_secrets(step: &Step) -> Vec<SecretKeyRef> {
    match &step.target {
        Some(t) => t.to.settings().secrets(),
        None => step.asset.source.settings().secrets(),
    }
}

/// Secrets a Job writing into `step`'s target from `doc`'s location reads (a restore, or the
/// rollback that restores the safety backup): the target's, the location's, the age identity and
/// the namespace's signing key.
fn restore_secrets(step: &Step, doc: &AgentRestoreJob) -> Vec<SecretKeyRef> {
    let mut secrets = target_secrets(step);
    secrets.extend(location_secrets(&doc.location));
    secrets.extend(doc.identity_secret.clone());
    secrets.push(signing_key_ref());
    secrets
}

fn location_secrets(location: &Destination) -> Vec<SecretKeyRef> {
    location.s3.as_ref().map(s3_secrets).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use lifeboat_api::common::RestoreTarget;
    use lifeboat_api::restore_request::PlannedRestore;
    use serde_json::json;

    use super::*;

    fn policy() -> BackupPolicy {
        serde_json::from_value(json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "media", "namespace": "prod", "uid": "p-1"},
            "spec": {
                "schedule": "@daily",
                "assets": [{"name": "assets", "objectStorage": {"endpoint": "http://s3:9000", "bucket": "media",
                    "prefix": "public", "credentialsSecret": {"name": "src-creds"}}}],
                "retention": {"keepLast": 7},
                "destination": {"s3": {"endpoint": "http://s3:9000", "bucket": "backups",
                                       "credentialsSecret": {"name": "s3-creds"}}},
                "encryption": {"recipients": ["age1t7rxyev2z3rw82stdlrrepyc39nvn86l5078zqkf5uasdy86jp6svpy7pa"],
                               "identitySecret": {"name": "age-key", "key": "identity"}}
            }
        }))
        .unwrap()
    }

    fn request() -> RestoreRequest {
        serde_json::from_value(json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
            "metadata": {"name": "back", "namespace": "prod", "uid": "r-1"},
            "spec": {"source": {"policy": "media"}, "execute": true}
        }))
        .unwrap()
    }

    fn step(target: Option<RestoreTarget>) -> Step {
        let p = policy();
        Step {
            asset: p.spec.assets[0].clone(),
            backup_id: "20261124T100000Z".into(),
            target,
            planned: PlannedRestore {
                kind: None,
                asset: "assets".into(),
                backup_id: "20261124T100000Z".into(),
                snapshot_time: None,
                stored_bytes: None,
                sha256: None,
                target: String::new(),
                state: None,
                duration_seconds: None,
                safety_backup: None,
                safety_backup_id: None,
                rollback: None,
                point_in_time: None,
            },
            scope: None,
        }
    }

    /// Secret name → the keys projected from it, and where each Secret is mounted.
    fn mounted(job: &Job) -> BTreeMap<String, Vec<String>> {
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let mounts: Vec<String> = pod.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.mount_path.clone())
            .collect();
        pod.volumes
            .as_ref()
            .unwrap()
            .iter()
            .filter_map(|v| v.secret.as_ref())
            .map(|s| {
                let name = s.secret_name.clone().unwrap();
                assert!(
                    mounts.contains(&format!("/var/run/lifeboat/secrets/{name}")),
                    "{name} not mounted: {mounts:?}"
                );
                let keys = s.items.as_ref().unwrap().iter().map(|i| i.key.clone());
                (name, keys.collect())
            })
            .collect()
    }

    fn document(job: &Job) -> String {
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        pod.containers[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == JOB_ENV)
            .and_then(|e| e.value.clone())
            .unwrap()
    }

    #[test]
    fn a_bucket_restore_into_its_source_mounts_its_keys_the_backups_and_the_identity() {
        let job = restore_job(
            &request(),
            Some(&policy()),
            &step(None),
            &AgentConfig::default(),
        )
        .unwrap();
        let s3 = vec![
            "AWS_ACCESS_KEY_ID".to_owned(),
            "AWS_SECRET_ACCESS_KEY".to_owned(),
        ];
        assert_eq!(
            mounted(&job),
            BTreeMap::from([
                ("age-key".to_owned(), vec!["identity".to_owned()]),
                ("lifeboat-signing-key".to_owned(), vec!["key".to_owned()]),
                ("s3-creds".to_owned(), s3.clone()),
                ("src-creds".to_owned(), s3),
            ])
        );
        let doc: AgentRestoreJob = serde_json::from_str(&document(&job)).unwrap();
        assert_eq!(
            doc.signing_key,
            Some(lifeboat_api::agent_job::signing_key_ref())
        );
        assert!(!doc.allow_unsigned);
        assert_eq!(
            doc.identity_secret,
            Some(SecretKeyRef {
                name: "age-key".into(),
                key: "identity".into()
            })
        );
        assert_eq!(doc.asset.kind(), AssetKind::ObjectStorage);
    }

    #[test]
    fn a_bucket_restore_into_another_bucket_mounts_that_bucket_s_keys_only() {
        let target: RestoreTarget = serde_json::from_value(json!({"asset": "assets",
            "objectStorage": {"endpoint": "http://staging:9000", "bucket": "staging",
                              "credentialsSecret": {"name": "staging-creds", "accessKeyIdKey": "id", "secretAccessKeyKey": "key"}}}))
        .unwrap();
        let job = restore_job(
            &request(),
            Some(&policy()),
            &step(Some(target)),
            &AgentConfig::default(),
        )
        .unwrap();
        let secrets = mounted(&job);
        assert_eq!(secrets["staging-creds"], ["id", "key"]);
        assert!(!secrets.contains_key("src-creds"), "{secrets:?}");
        assert!(secrets.contains_key("age-key"));
    }

    #[test]
    fn validation_reads_no_backup_and_mounts_no_identity() {
        let job = validate_job(
            &request(),
            Some(&policy()),
            &[step(None)],
            &AgentConfig::default(),
        )
        .unwrap();
        let secrets = mounted(&job);
        assert!(!secrets.contains_key("age-key"), "{secrets:?}");
        assert!(!secrets.contains_key("s3-creds"), "{secrets:?}");
        assert!(!secrets.contains_key("lifeboat-signing-key"), "{secrets:?}");
    }

    #[test]
    fn safety_backups_and_rollbacks_sign_and_check_with_the_namespace_key() {
        let mut rr = request();
        rr.spec.source.allow_unsigned = true;
        for job in [
            safety_job(&rr, &policy(), &step(None), &AgentConfig::default()).unwrap(),
            rollback_job(
                &rr,
                &policy(),
                &step(None),
                "20261124T100000Z-0a1b2c3d",
                &AgentConfig::default(),
            )
            .unwrap(),
        ] {
            assert_eq!(mounted(&job)["lifeboat-signing-key"], ["key"]);
            let doc: serde_json::Value = serde_json::from_str(&document(&job)).unwrap();
            assert_eq!(doc["signingKey"]["name"], "lifeboat-signing-key");
            // The opt-in for legacy backups never reaches a safety backup's own restore.
            assert!(doc.get("allowUnsigned").is_none(), "{doc}");
        }
        // It reaches the restore itself.
        let doc: AgentRestoreJob = serde_json::from_str(&document(
            &restore_job(&rr, Some(&policy()), &step(None), &AgentConfig::default()).unwrap(),
        ))
        .unwrap();
        assert!(doc.allow_unsigned);
    }

    #[test]
    fn validation_mounts_the_ca_bundle_of_an_https_check() {
        let mut rr = request();
        rr.spec.validation.checks = vec![
            serde_json::from_value(json!({"name": "web", "http": {
                "url": "https://shop.staging.svc/health",
                "caSecret": {"name": "internal-ca", "key": "ca.crt"}}}))
            .unwrap(),
        ];
        let job =
            validate_job(&rr, Some(&policy()), &[step(None)], &AgentConfig::default()).unwrap();
        assert_eq!(mounted(&job)["internal-ca"], ["ca.crt"]);
    }

    #[test]
    fn a_kubernetes_state_restore_runs_as_lifeboat_s_account_with_its_scope() {
        use lifeboat_api::agent_job::KubernetesStateScope;
        let mut rr = request();
        rr.spec.pod_template =
            Some(serde_json::from_value(json!({"serviceAccountName": "team-admin"})).unwrap());
        let mut state = step(None);
        state.asset =
            serde_json::from_value(json!({"name": "objects", "kubernetesState": {}})).unwrap();
        state.scope = Some(KubernetesStateScope::own("prod"));
        let pod = |s: &Step| {
            restore_job(&rr, Some(&policy()), s, &AgentConfig::default())
                .unwrap()
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
        };
        let job = restore_job(&rr, Some(&policy()), &state, &AgentConfig::default()).unwrap();
        let doc: AgentRestoreJob = serde_json::from_str(&document(&job)).unwrap();
        assert_eq!(
            doc.kubernetes_state_scope,
            Some(KubernetesStateScope::own("prod"))
        );
        assert_eq!(
            pod(&state).service_account_name.as_deref(),
            Some("lifeboat-kubestate-restore")
        );
        // Other assets keep the account the spec names, without a token.
        let bucket = pod(&step(None));
        assert_eq!(bucket.service_account_name.as_deref(), Some("team-admin"));
        assert_eq!(bucket.automount_service_account_token, Some(false));
    }

    #[test]
    fn only_a_kubernetes_state_restore_gets_an_api_token() {
        let policy = policy();
        let token = |s: &Step| {
            restore_job(&request(), Some(&policy), s, &AgentConfig::default())
                .unwrap()
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
                .automount_service_account_token
        };
        let mut state = step(None);
        state.asset =
            serde_json::from_value(json!({"name": "objects", "kubernetesState": {}})).unwrap();
        assert_eq!(token(&state), Some(true));
        assert_eq!(token(&step(None)), Some(false));
    }

    /// A Redis policy's step, its asset on a host (`dataDir`) or in a pod (none).
    fn redis_step(data_dir: Option<&str>, target: Option<RestoreTarget>) -> Step {
        let mut redis = json!({"host": "redis-0.redis", "passwordSecret": {"name": "redis-pw", "key": "password"}});
        if let Some(d) = data_dir {
            redis["dataDir"] = json!(d);
        }
        let asset: lifeboat_api::backup_policy::Asset =
            serde_json::from_value(json!({"name": "cache", "redis": redis})).unwrap();
        Step {
            asset,
            ..step(target)
        }
    }

    /// The pod IP variable (from the downward API) and the listening port, when present.
    fn listens(job: &Job) -> Option<(String, i32, String)> {
        let c = &job
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0];
        let ip = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == POD_IP_ENV);
        let port = c.ports.as_ref().and_then(|p| p.first());
        match (ip, port) {
            (None, None) => None,
            (Some(ip), Some(port)) => {
                assert!(
                    ip.value.is_none(),
                    "the IP comes from the kubelet, not the spec"
                );
                Some((
                    ip.value_from
                        .as_ref()?
                        .field_ref
                        .as_ref()?
                        .field_path
                        .clone(),
                    port.container_port,
                    port.name.clone()?,
                ))
            }
            other => panic!("the IP and the port go together: {other:?}"),
        }
    }

    #[test]
    fn a_redis_in_a_pod_is_restored_and_rolled_back_by_a_pod_that_listens_on_its_own_ip() {
        let expected = Some((
            "status.podIP".to_owned(),
            i32::from(REDIS_LOAD_PORT),
            REDIS_LOAD_PORT_NAME.to_owned(),
        ));
        let (rr, p, a) = (request(), policy(), AgentConfig::default());
        let in_pod = redis_step(None, None);
        assert_eq!(
            listens(&restore_job(&rr, Some(&p), &in_pod, &a).unwrap()),
            expected
        );
        assert_eq!(
            listens(&rollback_job(&rr, &p, &in_pod, "x", &a).unwrap()),
            expected
        );
        assert_eq!(listens(&safety_job(&rr, &p, &in_pod, &a).unwrap()), None);
        assert_eq!(
            listens(&validate_job(&rr, Some(&p), &[in_pod], &a).unwrap()),
            None
        );

        // A host's Redis is written on disk: nothing listens.
        let on_host = redis_step(Some("/var/lib/redis"), None);
        assert_eq!(
            listens(&restore_job(&rr, Some(&p), &on_host, &a).unwrap()),
            None
        );
        assert_eq!(
            listens(&rollback_job(&rr, &p, &on_host, "x", &a).unwrap()),
            None
        );

        // The target decides: a host asset restored into a Redis in a pod is loaded over
        // replication, and so is its rollback.
        let target: RestoreTarget =
            serde_json::from_value(json!({"asset": "cache", "redis": {"host": "redis-0.copy"}}))
                .unwrap();
        let into_pod = redis_step(Some("/var/lib/redis"), Some(target));
        assert_eq!(
            listens(&restore_job(&rr, Some(&p), &into_pod, &a).unwrap()),
            expected
        );
        assert_eq!(
            listens(&rollback_job(&rr, &p, &into_pod, "x", &a).unwrap()),
            expected
        );
    }

    #[test]
    fn a_data_volume_restore_mounts_the_claim_and_runs_as_the_servers_uid() {
        let target: RestoreTarget = serde_json::from_value(json!({
            "asset": "assets", "dataVolume": {"claimName": "pgdata-new", "subPath": "pgdata",
                "runAsUser": 999, "fsGroup": 999, "pointInTime": "latest"}
        }))
        .unwrap();
        let job = restore_job(
            &request(),
            Some(&policy()),
            &step(Some(target)),
            &AgentConfig::default(),
        )
        .unwrap();
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let ids = pod.security_context.as_ref().unwrap();
        assert_eq!(
            (ids.run_as_user, ids.fs_group, ids.run_as_non_root),
            (Some(999), Some(999), Some(true))
        );
        let claim = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find_map(|v| v.persistent_volume_claim.as_ref().map(|c| (&v.name, c)))
            .unwrap();
        assert_eq!(claim.1.claim_name, "pgdata-new");
        let mount = pod.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| &m.name == claim.0)
            .unwrap();
        // The whole claim: the agent makes the subPath itself, as the server's UID.
        assert_eq!(
            (mount.mount_path.as_str(), mount.sub_path.as_deref()),
            (lifeboat_api::agent_job::RESTORE_VOLUME_DIR, None)
        );
        assert!(document(&job).contains("\"dataVolume\""));
        // Another restore's pod keeps the platform's ids.
        let plain = restore_job(
            &request(),
            Some(&policy()),
            &step(None),
            &AgentConfig::default(),
        )
        .unwrap();
        let ids = plain
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .security_context
            .unwrap();
        assert_eq!(ids.run_as_user, Some(crate::config::AGENT_UID));
    }
}
