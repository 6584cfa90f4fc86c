//! The BackupPolicy controller: one CronJob per asset; on-demand Jobs per `backup-now` token;
//! status, RPO, conditions, Events and metrics from the Jobs' results.
//!
//! A reconcile reads (Jobs, their pods), decides (children and status, in pure functions), writes
//! (server-side apply with one field manager) and reports (status only when it changed, an Event
//! per transition).

pub mod cronjob;
pub mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::FutureExt;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use lifeboat_api::BackupPolicy;
use lifeboat_api::agent_job::KubernetesStateScope;
use lifeboat_api::backup_policy::BackupPolicyStatus;
use lifeboat_api::conditions::{self, types};
use lifeboat_api::schedule::CronSchedule;
use tracing::{info, instrument, warn};

use crate::config::FIELD_MANAGER;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::jobs::{JobOutcome, outcome};
use crate::kubestate::{self, Access};
use crate::names;
use status::Problem;

const KIND: &str = "BackupPolicy";

#[instrument(skip_all, fields(namespace = policy.namespace().unwrap_or_default(), name = policy.name_any()))]
pub async fn reconcile(policy: Arc<BackupPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx
        .metrics
        .reconcile_duration
        .with_label_values(&[KIND])
        .start_timer();
    ctx.metrics.reconciles.with_label_values(&[KIND]).inc();
    let ns = policy
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;

    let outcomes = read_outcomes(&ctx, &ns, &policy.name_any()).await?;
    let (problem, handled_token) = match apply_children(&policy, &ctx, &ns).await {
        Ok(token) => (None, token),
        Err(e @ (Error::InvalidSpec(_) | Error::SigningKeyMissing(_) | Error::Scope(_))) => (
            Some(Problem {
                reason: e.reason(),
                message: e.to_string(),
            }),
            None,
        ),
        Err(e) => return Err(e),
    };
    // The master key may appear any moment (the platform team restores it): look again soon.
    let retry_soon = problem
        .as_ref()
        .is_some_and(|p| p.reason == "SigningKeyMissing");
    let now = Timestamp::now();
    let verification = verification(&ctx, &ns, &policy.name_any()).await?;
    let mut decision = status::decide(
        &policy,
        &outcomes,
        problem,
        handled_token,
        &verification,
        now,
    );
    if note_ignored_account(&policy, &mut decision.status) {
        decision.changed = Some(&decision.status) != policy.status.as_ref();
    }
    if decision.changed && ctx.apply_status(policy.as_ref(), &decision.status).await? {
        publish_transitions(&ctx, &policy, &decision.status).await;
    }
    update_metrics(&ctx, &policy, &ns, &decision.status, now);
    let requeue = if retry_soon {
        decision
            .requeue_after
            .min(std::time::Duration::from_secs(30))
    } else {
        decision.requeue_after
    };
    Ok(Action::requeue(requeue))
}

/// Backoff by error kind: a spec that needs an edit waits for it; API trouble retries soon.
pub fn error_policy(policy: Arc<BackupPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[KIND, error.reason()])
        .inc();
    warn!(namespace = policy.namespace(), name = policy.name_any(), reason = error.reason(), %error, "reconcile failed");
    if error.needs_user() {
        Action::requeue(status::RESYNC)
    } else {
        Action::requeue(std::time::Duration::from_secs(15))
    }
}

/// Outcomes of the policy's finished Jobs (scheduled and on-demand), with their pods' reports.
async fn read_outcomes(ctx: &Context, ns: &str, policy: &str) -> Result<Vec<JobOutcome>> {
    let selector = ListParams::default().labels(&names::backup_selector(policy));
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), ns)
        .list(&selector)
        .await?;
    if jobs.items.is_empty() {
        return Ok(Vec::new());
    }
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&selector)
        .await?;
    let mut by_job: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for pod in pods {
        if let Some(job) = pod
            .labels()
            .get("batch.kubernetes.io/job-name")
            .or_else(|| pod.labels().get("job-name"))
        {
            by_job.entry(job.clone()).or_default().push(pod);
        }
    }
    Ok(jobs
        .iter()
        .filter_map(|job| {
            outcome(
                job,
                by_job
                    .get(&job.name_any())
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
            )
        })
        .collect())
}

/// Applies the CronJobs, removes those of deleted assets, and runs on-demand Jobs. Returns the
/// on-demand token acted upon, if a new one was.
async fn apply_children(policy: &BackupPolicy, ctx: &Context, ns: &str) -> Result<Option<String>> {
    CronSchedule::parse(&policy.spec.schedule, policy.spec.time_zone.as_deref())
        .map_err(|e| Error::InvalidSpec(e.to_string()))?;
    // Its CronJobs' Jobs mount the namespace's signing key: it exists before they can run.
    crate::signing_key::ensure(ctx, ns).await?;
    let scopes = kubestate_scopes(ctx, policy, ns).await?;

    let desired = cronjob::desired_cronjobs(policy, &ctx.agent, &scopes)?;
    let cronjobs = Api::<CronJob>::namespaced(ctx.client.clone(), ns);
    let existing = existing_cronjobs(ctx, ns, &policy.name_any()).await?;
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    for cj in &desired {
        let current = existing.iter().find(|e| e.name == cj.name_any());
        if current.is_some_and(|c| c.up_to_date(cj)) {
            continue;
        }
        let applied = cronjobs
            .patch(&cj.name_any(), &apply, &Patch::Apply(cj))
            .await?;
        if let (Some(index), Some(uid), Some(generation)) = (
            ctx.cronjobs.get(),
            applied.uid(),
            applied.metadata.generation,
        ) && let Ok(mut m) = index.applied.lock()
        {
            m.insert(uid, generation);
        }
    }
    // Leftovers: CronJobs this policy owns that no asset asks for any more.
    let wanted: BTreeSet<String> = desired.iter().map(ResourceExt::name_any).collect();
    let uid = policy.uid().ok_or(Error::MissingObjectKey("uid"))?;
    for cj in existing {
        let ours = cj.owners.iter().any(|o| o == &uid);
        if ours && !wanted.contains(&cj.name) {
            info!(cronjob = cj.name, "deleting the CronJob of a removed asset");
            match cronjobs.delete(&cj.name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    let token = policy
        .annotations()
        .get(names::ANNOTATION_BACKUP_NOW)
        .cloned();
    let already = policy
        .status
        .as_ref()
        .and_then(|s| s.last_backup_now_token.as_ref());
    match token {
        Some(token) if Some(&token) != already && !token.is_empty() => {
            let jobs = Api::<Job>::namespaced(ctx.client.clone(), ns);
            for asset in &policy.spec.assets {
                let job = cronjob::on_demand_job(policy, asset, &token, &ctx.agent, &scopes)?;
                // Apply, not create: a restarted operator re-applies the same Job, never a second one.
                jobs.patch(&job.name_any(), &apply, &Patch::Apply(&job))
                    .await?;
            }
            ctx.publish(
                &policy.object_ref(&()),
                EventType::Normal,
                "BackupRequested",
                format!("BackupNow/{}", names::short_hash(&token, 4)),
                format!("on-demand backup {token:?} started for every asset"),
            )
            .await;
            Ok(Some(token))
        }
        _ => Ok(None),
    }
}

/// The scope of each Kubernetes-state asset of `policy`, its namespace's backup account bound to
/// all of them. An asset reaching beyond what the platform team allows is an error
/// ([`Error::Scope`]) before any CronJob or Job is applied.
pub async fn kubestate_scopes(
    ctx: &Context,
    policy: &BackupPolicy,
    ns: &str,
) -> Result<cronjob::Scopes> {
    let mut scopes = cronjob::Scopes::new();
    for asset in &policy.spec.assets {
        if let Some(k) = &asset.kubernetes_state {
            let reach = kubestate::backup_reach(k);
            match kubestate::scope(&ctx.client, Access::Backup, ns, &reach).await {
                Ok(scope) => scopes.insert(asset.name.clone(), scope),
                Err(e @ Error::Scope(_)) => {
                    kubestate::revoke_withdrawn(&ctx.client, Access::Backup, ns).await?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
        }
    }
    // One account per namespace: bound to what every asset reaches (all the same kind, since
    // the cluster label gives every asset cluster scope).
    let bound = scopes.values().cloned().reduce(|a, b| match (a, b) {
        (KubernetesStateScope::Namespaces(mut x), KubernetesStateScope::Namespaces(y)) => {
            x.extend(y);
            KubernetesStateScope::Namespaces(x)
        }
        _ => KubernetesStateScope::Cluster,
    });
    if let Some(bound) = bound {
        kubestate::grant(
            &ctx.client,
            &ctx.agent.kubestate_roles,
            Access::Backup,
            ns,
            &bound,
        )
        .await?;
    }
    Ok(scopes)
}

/// Says in the Ready message that `podTemplate.serviceAccountName` is not what Kubernetes-state
/// assets run as. Returns whether the message changed.
fn note_ignored_account(policy: &BackupPolicy, status: &mut BackupPolicyStatus) -> bool {
    let named = policy
        .spec
        .pod_template
        .as_ref()
        .is_some_and(|t| t.service_account_name.is_some());
    let state = policy
        .spec
        .assets
        .iter()
        .any(|a| a.kubernetes_state.is_some());
    if !(named && state) {
        return false;
    }
    let note = kubestate::ignored_account_note(Access::Backup);
    match status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == types::READY)
    {
        Some(c) if !c.message.contains(&note) => {
            c.message = format!("{}; {note}", c.message);
            true
        }
        _ => false,
    }
}

/// What a reconcile needs to know of an existing CronJob.
struct ExistingCronJob {
    name: String,
    owners: Vec<String>,
    hash: Option<String>,
    /// Whether its spec is still the one this operator applied (`None`: not known, e.g. after a
    /// restart, or read by a list).
    unchanged: Option<bool>,
    /// From a list: the full object, compared field by field.
    full: Option<CronJob>,
}

impl ExistingCronJob {
    fn up_to_date(&self, desired: &CronJob) -> bool {
        if let Some(full) = &self.full {
            return cronjob::up_to_date(full, desired);
        }
        let wanted = desired
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(cronjob::SPEC_HASH));
        self.unchanged == Some(true) && wanted.is_some() && self.hash.as_ref() == wanted
    }
}

/// The policy's CronJobs: from the watched index once it has synced, else by a list.
async fn existing_cronjobs(ctx: &Context, ns: &str, policy: &str) -> Result<Vec<ExistingCronJob>> {
    let policy_label = names::label_value(policy);
    if let Some(index) = ctx.cronjobs.get()
        && index.store.wait_until_ready().now_or_never().is_some()
    {
        let applied = index.applied.lock().map(|m| m.clone()).unwrap_or_default();
        return Ok(index
            .store
            .state()
            .iter()
            .filter(|m| {
                m.metadata.namespace.as_deref() == Some(ns)
                    && m.labels().get(names::LABEL_POLICY) == Some(&policy_label)
            })
            .map(|m| {
                let uid = m.uid().unwrap_or_default();
                ExistingCronJob {
                    name: m.name_any(),
                    owners: m.owner_references().iter().map(|o| o.uid.clone()).collect(),
                    hash: m.annotations().get(cronjob::SPEC_HASH).cloned(),
                    unchanged: applied.get(&uid).map(|g| Some(*g) == m.metadata.generation),
                    full: None,
                }
            })
            .collect());
    }
    let list = Api::<CronJob>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().labels(&names::backup_selector(policy)))
        .await?;
    Ok(list
        .items
        .into_iter()
        .map(|c| ExistingCronJob {
            name: c.name_any(),
            owners: c.owner_references().iter().map(|o| o.uid.clone()).collect(),
            hash: None,
            unchanged: None,
            full: Some(c),
        })
        .collect())
}

/// What the DrillSchedules of `policy` prove, from the watch of every DrillSchedule. Waits for the
/// watch's first list: a status computed from an empty cache would drop every `lastVerified` and
/// flip a verified-basis RPOMet at each operator start.
async fn verification(ctx: &Context, ns: &str, policy: &str) -> Result<status::Verification> {
    let Some(drills) = ctx.drills.get() else {
        return Ok(status::Verification::default());
    };
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        drills.wait_until_ready(),
    )
    .await
    .map_err(|_| Error::CacheNotReady("DrillSchedule"))?
    .map_err(|_| Error::CacheNotReady("DrillSchedule"))?;
    let mine: Vec<_> = drills
        .state()
        .into_iter()
        .filter(|d| d.namespace().as_deref() == Some(ns) && d.spec.policy == policy)
        .collect();
    Ok(status::Verification {
        drilled: mine
            .iter()
            .flat_map(|d| d.spec.assets.iter().cloned())
            .collect(),
        backups: status::verified_backups(policy, mine.iter().map(|d| d.as_ref())),
    })
}

/// One Event per transition: a new good backup, a new failure, a condition that flipped.
async fn publish_transitions(ctx: &Context, policy: &BackupPolicy, new: &BackupPolicyStatus) {
    let old = policy.status.clone().unwrap_or_default();
    for asset in &new.assets {
        let before = old.assets.iter().find(|a| a.name == asset.name);
        if let Some(s) = &asset.last_success
            && before
                .and_then(|b| b.last_success.as_ref())
                .is_none_or(|b| b.id != s.id)
        {
            let note = format!(
                "asset {}: backup {} ({} bytes, sha256 {})",
                asset.name, s.id, s.stored_bytes, s.sha256
            );
            ctx.publish(
                &policy.object_ref(&()),
                EventType::Normal,
                "BackupSucceeded",
                format!("Backup/{}", asset.name),
                note,
            )
            .await;
        }
        if let Some(f) = &asset.last_failure
            && before
                .and_then(|b| b.last_failure.as_ref())
                .is_none_or(|b| b.time != f.time)
        {
            let note = format!("asset {}: {}: {}", asset.name, f.reason, f.message);
            ctx.publish(
                &policy.object_ref(&()),
                EventType::Warning,
                "BackupFailed",
                format!("Backup/{}", asset.name),
                note,
            )
            .await;
        }
    }
    for type_ in [types::READY, types::RPO_MET, types::RETENTION_APPLIED] {
        let Some(c) = conditions::find(&new.conditions, type_) else {
            continue;
        };
        let was = conditions::find(&old.conditions, type_);
        if was.is_none_or(|w| w.status != c.status || w.reason != c.reason) {
            let kind = if c.status == "True" {
                EventType::Normal
            } else {
                EventType::Warning
            };
            ctx.publish(
                &policy.object_ref(&()),
                kind,
                &c.reason,
                format!("Condition/{type_}"),
                format!("{type_}={}: {}", c.status, c.message),
            )
            .await;
        }
    }
}

fn update_metrics(
    ctx: &Context,
    policy: &BackupPolicy,
    ns: &str,
    status: &BackupPolicyStatus,
    now: Timestamp,
) {
    let name = policy.name_any();
    let m = &ctx.metrics;
    if let Some(o) = &policy.spec.objectives {
        m.rpo_objective
            .with_label_values(&[ns, &name])
            .set(o.rpo.as_secs() as f64);
    }
    if let Some(c) = conditions::find(&status.conditions, types::RPO_MET) {
        m.rpo_objective_met
            .with_label_values(&[ns, &name])
            .set(if c.status == "True" { 1.0 } else { 0.0 });
    }
    for a in &status.assets {
        let labels = [ns, name.as_str(), a.name.as_str()];
        m.backup_consecutive_failures
            .with_label_values(&labels)
            .set(f64::from(a.consecutive_failures));
        if let Some(s) = &a.last_success {
            m.backup_last_success
                .with_label_values(&labels)
                .set(s.finished_at.0.as_second() as f64);
            m.backup_snapshot
                .with_label_values(&labels)
                .set(s.snapshot_time.0.as_second() as f64);
            m.rpo
                .with_label_values(&labels)
                .set((now.as_second() - s.snapshot_time.0.as_second()).max(0) as f64);
            m.backup_bytes
                .with_label_values(&labels)
                .set(s.stored_bytes as f64);
            m.backup_duration
                .with_label_values(&labels)
                .set(s.duration_seconds);
        }
        m.retention_refused
            .with_label_values(&labels)
            .set(if a.retention_refused.is_some() {
                1.0
            } else {
                0.0
            });
        if let Some(v) = &a.last_verified {
            m.backup_last_verified
                .with_label_values(&labels)
                .set(v.time.0.as_second() as f64);
            if let Some(t) = &v.snapshot_time {
                m.backup_verified_snapshot
                    .with_label_values(&labels)
                    .set(t.0.as_second() as f64);
            }
        }
    }
}
