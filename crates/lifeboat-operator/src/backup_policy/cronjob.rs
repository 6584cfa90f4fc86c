//! Pure builders of a BackupPolicy's children: one CronJob per asset, and on-demand Jobs made from
//! the same template. No I/O: unit-tested from the spec alone.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use lifeboat_api::BackupPolicy;
use lifeboat_api::agent_job::{AgentJob, KubernetesStateScope, signing_key_ref};
use lifeboat_api::backup_policy::{Asset, AssetKind};
use lifeboat_api::common::{Destination, SecretKeyRef};
use lifeboat_api::kinds::object_storage::s3_secrets;

use crate::config::AgentConfig;
use crate::error::{Error, Result};
use crate::kubestate::Access;
use crate::names;
use crate::pod::AgentPod;

/// Missed schedules older than this are skipped rather than run late in a burst.
const STARTING_DEADLINE_SECONDS: i64 = 600;

/// The annotation holding a digest of the CronJob as the operator built it.
pub const SPEC_HASH: &str = "lifeboat.dev/spec-hash";

/// The scope of each Kubernetes-state asset of a policy, by asset name.
pub type Scopes = BTreeMap<String, KubernetesStateScope>;

/// The desired CronJob of every asset of `policy`, each annotated with [`SPEC_HASH`].
pub fn desired_cronjobs(
    policy: &BackupPolicy,
    agent: &AgentConfig,
    scopes: &Scopes,
) -> Result<Vec<CronJob>> {
    policy
        .spec
        .assets
        .iter()
        .map(|asset| backup_cronjob(policy, asset, agent, scopes).and_then(with_spec_hash))
        .collect()
}

/// Adds a digest of everything the operator sets in `cj`: a reconcile whose CronJob already
/// carries the same digest has nothing to apply (most reconciles are triggered by unrelated
/// changes, and an apply per asset per reconcile is most of an idle operator's API traffic).
pub fn with_spec_hash(mut cj: CronJob) -> Result<CronJob> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(serde_json::to_vec(&cj)?);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    cj.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(SPEC_HASH.to_owned(), hex);
    Ok(cj)
}

/// Whether `existing` is the CronJob `desired` describes: built from the same spec, and with the
/// fields people most often change by hand (schedule, time zone, suspend) not edited since — an
/// edit of those is reverted at the next reconcile, as an apply would.
pub fn up_to_date(existing: &CronJob, desired: &CronJob) -> bool {
    let hash = |c: &CronJob| c.metadata.annotations.as_ref()?.get(SPEC_HASH).cloned();
    let knobs = |c: &CronJob| {
        c.spec
            .as_ref()
            .map(|s| (s.schedule.clone(), s.time_zone.clone(), s.suspend))
    };
    hash(desired).is_some() && hash(existing) == hash(desired) && knobs(existing) == knobs(desired)
}

fn backup_cronjob(
    policy: &BackupPolicy,
    asset: &Asset,
    agent: &AgentConfig,
    scopes: &Scopes,
) -> Result<CronJob> {
    let name = policy.name_any();
    let spec = &policy.spec;
    Ok(CronJob {
        metadata: ObjectMeta {
            name: Some(names::backup_cronjob(&name, &asset.name)),
            namespace: policy.namespace(),
            labels: Some(names::backup_labels(&name, &asset.name)),
            annotations: Some(parent_annotation(&name)),
            owner_references: Some(vec![
                policy
                    .controller_owner_ref(&())
                    .ok_or(Error::MissingObjectKey("uid"))?,
            ]),
            ..Default::default()
        },
        spec: Some(CronJobSpec {
            schedule: spec.schedule.clone(),
            time_zone: spec.time_zone.clone(),
            suspend: Some(spec.suspend),
            concurrency_policy: Some("Forbid".into()),
            starting_deadline_seconds: Some(STARTING_DEADLINE_SECONDS),
            successful_jobs_history_limit: Some(i32::from(spec.history.successful)),
            failed_jobs_history_limit: Some(i32::from(spec.history.failed)),
            job_template: backup_job_template(policy, asset, agent, scopes)?,
        }),
        status: None,
    })
}

/// The Job template shared by scheduled and on-demand backups of `asset`. A Kubernetes-state
/// asset runs as Lifeboat's backup account with its scope (from `scopes`) in the document.
pub fn backup_job_template(
    policy: &BackupPolicy,
    asset: &Asset,
    agent: &AgentConfig,
    scopes: &Scopes,
) -> Result<JobTemplateSpec> {
    let name = policy.name_any();
    let spec = &policy.spec;
    let state = asset.kind() == AssetKind::KubernetesState;
    let scope = match scopes.get(&asset.name) {
        Some(scope) => Some(scope.clone()),
        None if state => {
            return Err(Error::ScopeNotDecided(asset.name.clone()));
        }
        None => None,
    };
    let job = agent_job(policy, asset, scope)?;
    let mut secrets = backup_secrets(asset, spec);
    secrets.push(signing_key_ref());
    let overrides = spec.pod_template.as_deref();
    let mut labels = overrides.map(|o| o.labels.clone()).unwrap_or_default();
    labels.extend(names::backup_labels(&name, &asset.name));
    let mut annotations = overrides.map(|o| o.annotations.clone()).unwrap_or_default();
    annotations.extend(parent_annotation(&name));
    let pod = AgentPod {
        config: agent,
        args: vec!["backup".into()],
        env: vec![crate::pod::job_env(&job)?],
        ports: Vec::new(),
        secrets,
        destination: &spec.destination,
        overrides,
        labels: names::backup_labels(&name, &asset.name),
        annotations: parent_annotation(&name),
        api_account: state.then_some(Access::Backup.service_account()),
        data_volume: None,
    };
    Ok(JobTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        }),
        spec: Some(JobSpec {
            // One retry: a backup is committed only by its metadata, so a rerun is safe.
            backoff_limit: Some(1),
            active_deadline_seconds: i64::try_from(spec.timeout.as_secs()).ok(),
            template: pod.template(),
            ..Default::default()
        }),
    })
}

/// The document of every agent that backs up `asset`: its Jobs and its WAL archiver.
pub(crate) fn agent_job(
    policy: &BackupPolicy,
    asset: &Asset,
    kubernetes_state_scope: Option<KubernetesStateScope>,
) -> Result<AgentJob> {
    let spec = &policy.spec;
    Ok(AgentJob {
        namespace: policy
            .namespace()
            .ok_or(Error::MissingObjectKey("namespace"))?,
        policy: policy.name_any(),
        asset: asset.clone(),
        destination: spec.destination.clone(),
        compression: spec.compression.clone(),
        encryption: spec.encryption.clone(),
        retention: spec.retention.clone(),
        copies: spec.copies.clone(),
        signing_key: Some(signing_key_ref()),
        kubernetes_state_scope,
    })
}

/// The Job of an on-demand backup of `asset`, named after `token` so that it runs once.
pub fn on_demand_job(
    policy: &BackupPolicy,
    asset: &Asset,
    token: &str,
    agent: &AgentConfig,
    scopes: &Scopes,
) -> Result<Job> {
    let name = policy.name_any();
    let template = backup_job_template(policy, asset, agent, scopes)?;
    let mut metadata = template.metadata.unwrap_or_default();
    metadata.name = Some(names::backup_now_job(&name, &asset.name, token));
    metadata.namespace = policy.namespace();
    metadata.owner_references = Some(vec![
        policy
            .controller_owner_ref(&())
            .ok_or(Error::MissingObjectKey("uid"))?,
    ]);
    Ok(Job {
        metadata,
        spec: template.spec,
        status: None,
    })
}

fn parent_annotation(policy: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(names::ANNOTATION_POLICY.to_owned(), policy.to_owned())])
}

/// Every Secret key a backup of `asset` to `destination` reads.
pub fn referenced_secrets(asset: &Asset, destination: &Destination) -> Vec<SecretKeyRef> {
    let mut out = asset.source.settings().secrets();
    // A pointInTime asset's base backups and archiver connect as its replication role.
    if let Some(archiving) = asset.postgres().and_then(|pg| pg.point_in_time.as_ref()) {
        out.extend(archiving.password_secret.iter().cloned());
    }
    if let Some(s3) = &destination.s3 {
        out.extend(s3_secrets(s3));
    }
    out
}

/// Every Secret key a backup of `asset` reads: [`referenced_secrets`] at the policy's
/// destination, and each off-site copy's bucket keys (a Secret named twice is mounted once).
fn backup_secrets(
    asset: &Asset,
    spec: &lifeboat_api::backup_policy::BackupPolicySpec,
) -> Vec<SecretKeyRef> {
    let mut out = referenced_secrets(asset, &spec.destination);
    for copy in &spec.copies {
        out.extend(s3_secrets(&copy.s3));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(spec: serde_json::Value) -> BackupPolicy {
        serde_json::from_value(json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "shop", "namespace": "prod", "uid": "1234", "generation": 1,
                         "labels": {"argocd.argoproj.io/instance": "shop", "app.kubernetes.io/instance": "shop"}},
            "spec": spec
        }))
        .unwrap()
    }

    fn spec() -> serde_json::Value {
        json!({
            "schedule": "0 * * * *", "timeZone": "Europe/Paris",
            "assets": [
                {"name": "orders-db", "postgres": {"host": "db", "user": "backup", "databases": ["orders"],
                    "passwordSecret": {"name": "db-creds", "key": "password"}}},
                {"name": "sessions", "redis": {"host": "cache", "passwordSecret": {"name": "redis", "key": "pw"}}}
            ],
            "retention": {"keepLast": 168, "maxAge": "7d"},
            "destination": {"s3": {"endpoint": "http://s3:9000", "bucket": "backups",
                                   "credentialsSecret": {"name": "s3-creds"}}},
            "timeout": "45m",
            "history": {"successful": 2, "failed": 5},
            "podTemplate": {"labels": {"team": "shop"}, "nodeSelector": {"pool": "backup"},
                            "serviceAccountName": "backup-sa"}
        })
    }

    #[test]
    fn one_cronjob_per_asset_with_the_policys_schedule_and_safe_defaults() {
        let cjs =
            desired_cronjobs(&policy(spec()), &AgentConfig::default(), &Scopes::new()).unwrap();
        assert_eq!(cjs.len(), 2);
        let cj = &cjs[0];
        assert_eq!(cj.metadata.name.as_deref(), Some("shop-orders-db"));
        let owner = &cj.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("BackupPolicy", "1234", Some(true))
        );
        let s = cj.spec.as_ref().unwrap();
        assert_eq!(s.schedule, "0 * * * *");
        assert_eq!(s.time_zone.as_deref(), Some("Europe/Paris"));
        assert_eq!(s.concurrency_policy.as_deref(), Some("Forbid"));
        assert_eq!(s.suspend, Some(false));
        assert_eq!(
            (s.successful_jobs_history_limit, s.failed_jobs_history_limit),
            (Some(2), Some(5))
        );
        assert!(s.starting_deadline_seconds.is_some());
        let job = s.job_template.spec.as_ref().unwrap();
        assert_eq!(job.active_deadline_seconds, Some(45 * 60));
    }

    #[test]
    fn an_off_site_copy_is_in_the_document_and_its_keys_are_mounted_files() {
        let mut s = spec();
        s["copies"] = json!([{"name": "dr", "s3": {"endpoint": "https://s3.eu-central-1.amazonaws.com",
            "bucket": "dr-backups", "credentialsSecret": {"name": "dr-creds"}},
            "retention": {"keepLast": 30}}]);
        let cjs = desired_cronjobs(&policy(s), &AgentConfig::default(), &Scopes::new()).unwrap();
        let pod = pod_spec(cjs[0].clone());
        let doc = document(&pod.containers[0]);
        assert_eq!(doc.copies.len(), 1);
        assert_eq!(doc.copies[0].s3.bucket, "dr-backups");
        assert_eq!(
            doc.copies[0].retention.as_ref().unwrap().keep_last,
            Some(30)
        );
        let secret = pod
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.secret.as_ref())
            .find(|s| s.secret_name.as_deref() == Some("dr-creds"))
            .expect("the copy's Secret is mounted");
        let keys: Vec<&str> = secret
            .items
            .iter()
            .flatten()
            .map(|i| i.key.as_str())
            .collect();
        assert_eq!(keys, ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]);
    }

    #[test]
    fn agents_log_json_when_the_operator_does() {
        let env = |config: &AgentConfig| {
            let cjs = desired_cronjobs(&policy(spec()), config, &Scopes::new()).unwrap();
            let pod = pod_spec(cjs[0].clone());
            pod.containers[0].env.clone().unwrap_or_default()
        };
        let json = |env: &[k8s_openapi::api::core::v1::EnvVar]| {
            env.iter()
                .find(|e| e.name == "LIFEBOAT_LOG_JSON")
                .and_then(|e| e.value.clone())
        };
        assert_eq!(json(&env(&AgentConfig::default())), None);
        let config = AgentConfig {
            log_json: true,
            ..AgentConfig::default()
        };
        assert_eq!(json(&env(&config)).as_deref(), Some("true"));
        // Every agent is told the platform's S3 identity mode, which it enforces itself.
        let mode = |env: &[k8s_openapi::api::core::v1::EnvVar]| {
            env.iter()
                .find(|e| e.name == lifeboat_api::identity::AMBIENT_IDENTITY_ENV)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(mode(&env(&AgentConfig::default())).as_deref(), Some("none"));
        let config = AgentConfig {
            s3_ambient_identity: lifeboat_api::identity::AmbientIdentity::WebIdentity,
            ..AgentConfig::default()
        };
        assert_eq!(mode(&env(&config)).as_deref(), Some("webIdentity"));
    }

    #[test]
    fn children_never_inherit_gitops_labels() {
        let cjs =
            desired_cronjobs(&policy(spec()), &AgentConfig::default(), &Scopes::new()).unwrap();
        let text = serde_json::to_string(&cjs).unwrap();
        assert!(!text.contains("argocd.argoproj.io"), "{text}");
        assert!(!text.contains("app.kubernetes.io/instance"), "{text}");
        // The user's explicit pod labels do reach the Jobs and pods.
        let tpl = &cjs[0].spec.as_ref().unwrap().job_template;
        assert_eq!(
            tpl.metadata.as_ref().unwrap().labels.as_ref().unwrap()["team"],
            "shop"
        );
    }

    #[test]
    fn a_kubernetes_state_backup_runs_as_lifeboat_s_account_with_its_scope_or_not_at_all() {
        let mut s = spec();
        s["assets"] = json!([{"name": "objects", "kubernetesState": {"namespaces": ["prod"]}}]);
        let p = policy(s);
        let agent = AgentConfig::default();
        let e = desired_cronjobs(&p, &agent, &Scopes::new()).unwrap_err();
        assert!(e.to_string().contains("objects"), "{e}");
        let scopes = Scopes::from([("objects".to_owned(), KubernetesStateScope::own("prod"))]);
        let cj = &desired_cronjobs(&p, &agent, &scopes).unwrap()[0];
        let pod = cj
            .spec
            .clone()
            .unwrap()
            .job_template
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("lifeboat-kubestate-backup"),
            "not the spec's backup-sa"
        );
        assert_eq!(pod.automount_service_account_token, Some(true));
        let doc: AgentJob = document(&pod.containers[0]);
        assert_eq!(
            doc.kubernetes_state_scope,
            Some(KubernetesStateScope::own("prod"))
        );
    }

    #[test]
    fn agent_pods_meet_the_restricted_pod_security_standard() {
        let cjs =
            desired_cronjobs(&policy(spec()), &AgentConfig::default(), &Scopes::new()).unwrap();
        for cj in cjs {
            let pod = cj
                .spec
                .unwrap()
                .job_template
                .spec
                .unwrap()
                .template
                .spec
                .unwrap();
            let psc = pod.security_context.unwrap();
            assert_eq!(psc.run_as_non_root, Some(true));
            assert_eq!(psc.run_as_user, Some(crate::config::AGENT_UID));
            assert_eq!(pod.image_pull_secrets, None);
            assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
            assert_eq!(pod.host_network, None);
            assert_eq!(pod.automount_service_account_token, Some(false));
            for c in pod.containers {
                let sc = c.security_context.unwrap();
                assert_eq!(sc.allow_privilege_escalation, Some(false));
                assert_eq!(sc.read_only_root_filesystem, Some(true));
                assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
                assert!(sc.privileged.is_none());
            }
            for v in pod.volumes.unwrap() {
                assert!(v.host_path.is_none());
            }
        }
    }

    /// The agent's document in `container`'s environment.
    fn document(container: &k8s_openapi::api::core::v1::Container) -> AgentJob {
        let env = container.env.as_ref().unwrap();
        let var = env
            .iter()
            .find(|e| e.name == lifeboat_api::agent_job::JOB_ENV)
            .unwrap();
        serde_json::from_str(var.value.as_deref().unwrap()).unwrap()
    }

    fn pod_spec(cj: CronJob) -> k8s_openapi::api::core::v1::PodSpec {
        cj.spec
            .unwrap()
            .job_template
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
    }

    #[test]
    fn the_platform_s_contexts_and_pull_secrets_with_a_resource_s_ids_and_secrets_over_them() {
        // An OpenShift-style platform: no fixed ids (the SCC assigns them), seccomp kept.
        let mut openshift = crate::config::restricted_pod();
        openshift.run_as_user = None;
        openshift.run_as_group = None;
        openshift.fs_group = None;
        let mut container = crate::config::restricted_container();
        container.run_as_non_root = None;
        let agent = AgentConfig {
            image_pull_secrets: vec!["mirror".into(), "shared".into()],
            pod_security_context: openshift.clone(),
            container_security_context: container.clone(),
            ..AgentConfig::default()
        };
        let pod =
            pod_spec(desired_cronjobs(&policy(spec()), &agent, &Scopes::new()).unwrap()[0].clone());
        assert_eq!(pod.security_context.as_ref(), Some(&openshift));
        assert_eq!(
            pod.containers[0].security_context.as_ref(),
            Some(&container)
        );
        let names = |pod: &k8s_openapi::api::core::v1::PodSpec| -> Vec<String> {
            pod.image_pull_secrets
                .iter()
                .flatten()
                .map(|r| r.name.clone())
                .collect()
        };
        assert_eq!(names(&pod), ["mirror", "shared"]);

        // A team adds its own pull secret and the ids its namespace was given.
        let mut team = spec();
        team["podTemplate"]["imagePullSecrets"] =
            json!([{"name": "team-registry"}, {"name": "shared"}]);
        team["podTemplate"]["securityContext"] =
            json!({"runAsUser": 1000680000, "fsGroup": 1000680000, "seLinuxLevel": "s0:c26,c5"});
        let pod =
            pod_spec(desired_cronjobs(&policy(team), &agent, &Scopes::new()).unwrap()[0].clone());
        assert_eq!(names(&pod), ["mirror", "shared", "team-registry"]);
        let psc = pod.security_context.unwrap();
        assert_eq!(psc.run_as_user, Some(1000680000));
        assert_eq!(psc.fs_group, Some(1000680000));
        assert_eq!(psc.run_as_group, None);
        assert_eq!(
            psc.se_linux_options.unwrap().level.as_deref(),
            Some("s0:c26,c5")
        );
        // What the platform chose for "restricted" stays.
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        assert_eq!(
            pod.containers[0].security_context.as_ref(),
            Some(&container)
        );
    }

    #[test]
    fn a_resource_cannot_write_privileged_capabilities_or_root_into_its_pods() {
        let mut team = spec();
        team["podTemplate"]["securityContext"] = json!({
            "runAsUser": 2000, "runAsNonRoot": false, "privileged": true,
            "capabilities": {"add": ["SYS_ADMIN"]}, "seccompProfile": {"type": "Unconfined"}
        });
        let pod = pod_spec(
            desired_cronjobs(&policy(team), &AgentConfig::default(), &Scopes::new()).unwrap()[0]
                .clone(),
        );
        let psc = pod.security_context.unwrap();
        assert_eq!(psc.run_as_user, Some(2000));
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let sc = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.privileged, None);
        assert_eq!(sc.capabilities.unwrap().add, None);
    }

    #[test]
    fn secrets_are_mounted_files_never_values_or_arguments() {
        let cjs =
            desired_cronjobs(&policy(spec()), &AgentConfig::default(), &Scopes::new()).unwrap();
        let pod = cjs[0]
            .spec
            .clone()
            .unwrap()
            .job_template
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let container = &pod.containers[0];
        assert_eq!(container.args.as_deref(), Some(&["backup".to_string()][..]));
        for e in container.env.as_ref().unwrap() {
            assert!(e.value_from.is_none(), "no secret through env: {}", e.name);
        }
        let mounts: Vec<&str> = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert!(
            mounts.contains(&"/var/run/lifeboat/secrets/db-creds"),
            "{mounts:?}"
        );
        assert!(
            mounts.contains(&"/var/run/lifeboat/secrets/s3-creds"),
            "{mounts:?}"
        );
        let volumes = pod.volumes.unwrap();
        let s3 = volumes
            .iter()
            .find_map(|v| {
                v.secret
                    .as_ref()
                    .filter(|s| s.secret_name.as_deref() == Some("s3-creds"))
            })
            .unwrap();
        let keys: Vec<&str> = s3
            .items
            .as_ref()
            .unwrap()
            .iter()
            .map(|i| i.key.as_str())
            .collect();
        assert_eq!(keys, ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]);
        // The job document names the secret references only.
        let job: AgentJob = document(container);
        assert_eq!(job.policy, "shop");
        assert_eq!(job.asset.name, "orders-db");
        assert_eq!(pod.service_account_name.as_deref(), Some("backup-sa"));
        assert_eq!(pod.node_selector.unwrap()["pool"], "backup");
    }

    #[test]
    fn a_volume_destination_is_mounted_with_its_sub_path() {
        let mut s = spec();
        s["destination"] = json!({"volume": {"claimName": "backups", "subPath": "shop"}});
        let cjs = desired_cronjobs(&policy(s), &AgentConfig::default(), &Scopes::new()).unwrap();
        let pod = cjs[0]
            .spec
            .clone()
            .unwrap()
            .job_template
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let pvc = pod
            .volumes
            .unwrap()
            .into_iter()
            .find_map(|v| v.persistent_volume_claim)
            .unwrap();
        assert_eq!(pvc.claim_name, "backups");
        let mount = pod.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "backups")
            .cloned()
            .unwrap();
        assert_eq!(mount.mount_path, lifeboat_api::agent_job::BACKUP_VOLUME_DIR);
        assert_eq!(mount.sub_path.as_deref(), Some("shop"));
    }

    #[test]
    fn on_demand_jobs_share_the_template_and_are_owned_by_the_policy() {
        let p = policy(spec());
        let job = on_demand_job(
            &p,
            &p.spec.assets[1],
            "t1",
            &AgentConfig::default(),
            &Scopes::new(),
        )
        .unwrap();
        assert_eq!(
            job.metadata.name.as_deref(),
            Some(names::backup_now_job("shop", "sessions", "t1").as_str())
        );
        assert_eq!(
            job.metadata.owner_references.as_ref().unwrap()[0].kind,
            "BackupPolicy"
        );
        assert_eq!(
            job.metadata.labels.as_ref().unwrap()[names::LABEL_ASSET],
            "sessions"
        );
        assert_eq!(
            job.metadata.annotations.as_ref().unwrap()[names::ANNOTATION_POLICY],
            "shop"
        );
    }

    #[test]
    fn an_object_lock_reaches_the_agent_s_document_as_written() {
        let mut s = spec();
        s["destination"] = json!({"s3": {"endpoint": "https://s3.eu-west-1.amazonaws.com",
            "bucket": "backups", "credentialsSecret": {"name": "s3"}},
            "objectLock": {"mode": "Compliance", "retainFor": "30d"}});
        let pod = pod_spec(
            desired_cronjobs(&policy(s), &AgentConfig::default(), &Scopes::new()).unwrap()[0]
                .clone(),
        );
        let doc: AgentJob = document(&pod.containers[0]);
        let lock = doc.destination.object_lock.unwrap();
        assert_eq!(lock.mode, lifeboat_api::common::ObjectLockMode::Compliance);
        assert_eq!(lock.retain_for.as_secs(), 30 * 86_400);
    }

    #[test]
    fn a_bucket_without_keys_mounts_none_and_its_ca_bundle_is_a_mounted_key() {
        let mut s = spec();
        s["destination"] = json!({"s3": {"endpoint": "https://s3.eu-west-1.amazonaws.com",
            "bucket": "backups", "caBundleSecret": {"name": "store-ca", "key": "ca.crt"}}});
        let pod = pod_spec(
            desired_cronjobs(&policy(s), &AgentConfig::default(), &Scopes::new()).unwrap()[0]
                .clone(),
        );
        let secrets: Vec<(&str, Vec<&str>)> = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .filter_map(|v| {
                let s = v.secret.as_ref()?;
                Some((
                    s.secret_name.as_deref()?,
                    s.items.iter().flatten().map(|i| i.key.as_str()).collect(),
                ))
            })
            .collect();
        // The database password, the signing key and the CA: no access keys to mount.
        assert_eq!(
            secrets,
            [
                ("db-creds", vec!["password"]),
                ("lifeboat-signing-key", vec!["key"]),
                ("store-ca", vec!["ca.crt"])
            ]
        );
    }

    #[test]
    fn a_bucket_backup_mounts_the_source_keys_and_carries_recipients_but_no_identity() {
        let mut s = spec();
        s["assets"] = json!([{"name": "media", "objectStorage": {"endpoint": "http://s3:9000",
            "bucket": "media", "credentialsSecret": {"name": "src-creds"}, "allowEmpty": true}}]);
        s["encryption"] = json!({"recipients": ["age1t7rxyev2z3rw82stdlrrepyc39nvn86l5078zqkf5uasdy86jp6svpy7pa"],
                                 "identitySecret": {"name": "age-key", "key": "identity"}});
        let cjs = desired_cronjobs(&policy(s), &AgentConfig::default(), &Scopes::new()).unwrap();
        let pod = cjs[0]
            .spec
            .clone()
            .unwrap()
            .job_template
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let secrets: Vec<&str> = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .filter_map(|v| v.secret.as_ref()?.secret_name.as_deref())
            .collect();
        // The namespace's signing key, which signs the backup's metadata, and the buckets' keys.
        assert_eq!(secrets, ["lifeboat-signing-key", "s3-creds", "src-creds"]);
        let mounts: Vec<&str> = pod.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert!(mounts.contains(&"/var/run/lifeboat/secrets/src-creds"));
        let job: AgentJob = document(&pod.containers[0]);
        let encryption = job.encryption.unwrap();
        assert_eq!(encryption.recipients.len(), 1);
        let lifeboat_api::backup_policy::AssetSource::ObjectStorage(bucket) = job.asset.source
        else {
            panic!("not a bucket")
        };
        assert!(bucket.allow_empty);
    }

    #[test]
    fn the_spec_hash_changes_with_the_spec_and_marks_a_cronjob_up_to_date() {
        let agent = AgentConfig::default();
        let mut p = policy(spec());
        let a = desired_cronjobs(&p, &agent, &Scopes::new()).unwrap();
        let again = desired_cronjobs(&p, &agent, &Scopes::new()).unwrap();
        assert!(up_to_date(&again[0], &a[0]), "same spec, same digest");
        p.spec.schedule = "5 * * * *".into();
        let b = desired_cronjobs(&p, &agent, &Scopes::new()).unwrap();
        assert!(!up_to_date(&a[0], &b[0]), "a changed spec is applied");
        let mut suspended_by_hand = a[0].clone();
        suspended_by_hand.spec.as_mut().unwrap().suspend = Some(true);
        assert!(
            !up_to_date(&suspended_by_hand, &a[0]),
            "a hand edit is reverted"
        );
    }
}
