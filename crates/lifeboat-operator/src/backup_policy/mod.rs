//! The BackupPolicy controller: one CronJob per asset; on-demand Jobs per `backup-now` token; a
//! WAL archiver Deployment per `pointInTime` asset; status, RPO, conditions, Events and metrics
//! from the Jobs' results and the archivers' availability.
//!
//! A reconcile reads (Jobs, their pods), decides (children and status, in pure functions), writes
//! (server-side apply with one field manager) and reports (status only when it changed, an Event
//! per transition).

pub mod archiver;
pub mod cached;
pub mod cronjob;
pub mod status;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use lifeboat_api::BackupPolicy;
use lifeboat_api::agent_job::KubernetesStateScope;
use lifeboat_api::backup_policy::{AssetKind, AssetSource, BackupPolicyStatus};
use lifeboat_api::conditions::{self, Status, types};
use lifeboat_api::identity;
use lifeboat_api::schedule::CronSchedule;
use tracing::{info, instrument};

use self::cached::CachedPolicy;
use crate::config::FIELD_MANAGER;
use crate::context::Context;
use crate::controller;
use crate::error::{Error, Problem, Result};
use crate::jobs::{JobOutcome, outcome};
use crate::kubestate::{self, Access};
use crate::names;
use crate::signing_key;

const KIND: &str = "BackupPolicy";

/// How soon a policy whose archiver is down is reconciled again (its lag metric is recomputed).
const ARCHIVER_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

#[instrument(skip_all, fields(namespace = obj.namespace().unwrap_or_default(), name = obj.name_any()))]
pub async fn reconcile(obj: Arc<CachedPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = controller::measure(&ctx, KIND);
    let policy = &obj.parse()?;
    let ns = policy
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    if policy.metadata.deletion_timestamp.is_some() {
        return finalize(policy, &ctx, &ns).await;
    }
    let now = Timestamp::now();
    let outcomes = read_outcomes(&ctx, &ns, &policy.name_any()).await?;
    let verification = verification(&ctx, &ns, &policy.name_any()).await?;
    let applied = apply(policy, &ctx, &ns).await?;
    let decision = decide(policy, &ctx, &outcomes, &verification, &applied, now);
    let stored = if decision.changed {
        ctx.apply_status(policy, &decision.status).await?;
        Some(&decision.status)
    } else {
        policy.status.as_ref()
    };
    perform(policy, &ctx, stored).await?;
    update_metrics(&ctx, policy, &ns, &decision, now);
    controller::succeeded(&ctx, policy);
    let requeue = requeue_after(policy, &ctx, &decision, applied.problem.as_ref());
    Ok(Action::requeue(if applied.retiring {
        requeue.min(RETIRE_RECHECK)
    } else {
        requeue
    }))
}

/// What applying the policy's children came to.
struct Applied {
    /// Why they could not all be applied.
    problem: Option<Problem>,
    /// The `backup-now` token whose Jobs were applied now.
    handled: Option<String>,
    /// The archiver Deployments as applied (none while there is a problem).
    archivers: Option<Vec<Deployment>>,
    /// An archiver whose asset no longer asks for one is being retired (its slot released).
    retiring: bool,
}

/// Applies the CronJobs, a new `backup-now` token's Jobs and, when those could be, the archivers
/// (they mount the signing key). A problem is returned in [`Applied`], not raised.
async fn apply(policy: &BackupPolicy, ctx: &Context, ns: &str) -> Result<Applied> {
    let token = new_backup_now_token(policy);
    let (mut problem, signing_key) = observe(policy, ctx, ns, token.is_some()).await?;
    let token = token.filter(|_| problem.is_none());
    if problem.is_none()
        && let Err(e) = apply_children(policy, ctx, ns, signing_key, token.as_deref()).await
    {
        match e {
            Error::Problem(p) => problem = Some(p),
            e => return Err(e),
        }
    }
    let (archivers, retiring) = match problem {
        None => {
            let (current, retiring) = apply_archivers(policy, ctx, ns).await?;
            (Some(current), retiring)
        }
        Some(_) => (None, false),
    };
    Ok(Applied {
        handled: token.filter(|_| problem.is_none()),
        problem,
        archivers,
        retiring,
    })
}

/// The new status: [`status::decide`] from the stored status without the Events already
/// published (dropping them alone is not worth a write, until they linger:
/// crate::effects::LINGER), with the archivers' readiness and the ignored-account note.
fn decide(
    policy: &BackupPolicy,
    ctx: &Context,
    outcomes: &[JobOutcome],
    verification: &status::Verification,
    applied: &Applied,
    now: Timestamp,
) -> status::Decision {
    let lags = archive_lags(policy, applied.archivers.as_deref(), now);
    let seen = without_published(policy, ctx);
    let mut decision = status::decide(
        &seen,
        outcomes,
        applied.problem.as_ref(),
        applied.handled.clone(),
        verification,
        &lags,
        now,
    );
    let archiver_changed = applied.archivers.as_deref().is_some_and(|a| {
        set_archiver_ready(policy, &mut decision.status, a, applied.retiring, now)
    });
    if note_ignored_account(policy, &mut decision.status) || archiver_changed {
        decision.changed = Some(&decision.status) != seen.status.as_ref();
    }
    let drop_due = policy.uid().and_then(|u| ctx.published.drop_due(&u));
    if drop_due.is_some_and(|due| due <= now) {
        decision.changed = true;
    }
    decision
}

/// When to look again: the decision's time, sooner for a problem that may clear any moment (a
/// master key the platform team restores), published Events due to be dropped, or an archiver
/// that is down (its lag grows, and so may the alert).
fn requeue_after(
    policy: &BackupPolicy,
    ctx: &Context,
    decision: &status::Decision,
    problem: Option<&Problem>,
) -> std::time::Duration {
    let mut requeue = match problem {
        Some(p) => decision.requeue_after.min(p.recheck()),
        None => decision.requeue_after,
    };
    if let Some(due) = policy.uid().and_then(|u| ctx.published.drop_due(&u)) {
        let wait =
            std::time::Duration::try_from(Timestamp::now().duration_until(due)).unwrap_or_default();
        requeue = requeue.min(wait.max(std::time::Duration::from_secs(1)));
    }
    let archiver_down = conditions::status(&decision.status.conditions, types::ARCHIVER_READY)
        == Some(Status::False);
    if archiver_down {
        requeue = requeue.min(ARCHIVER_RECHECK);
    }
    requeue
}

pub use controller::error_policy;

/// What a policy needs before its children can be applied: a schedule croner takes, S3
/// locations the platform's identity setting allows, and the namespace's signing key (the
/// Secret to apply when it is missing or stale; read afresh when `makes_job`, for the on-demand
/// Jobs about to sign with it). A problem with any is returned, not raised.
async fn observe(
    policy: &BackupPolicy,
    ctx: &Context,
    ns: &str,
    makes_job: bool,
) -> Result<(Option<Problem>, Option<Secret>)> {
    if let Err(e) = CronSchedule::parse(&policy.spec.schedule, policy.spec.time_zone.as_deref()) {
        return Ok((Some(Problem::InvalidSchedule(e.to_string())), None));
    }
    if let Err(refused) = identity::check(
        identity::policy_locations(&policy.spec),
        ctx.agent.s3_ambient_identity,
    ) {
        return Ok((Some(refused.into()), None));
    }
    let check = if makes_job {
        signing_key::Check::Fresh
    } else {
        signing_key::Check::Recent
    };
    match signing_key::desired(ctx, ns, check).await {
        Ok(secret) => Ok((None, secret)),
        Err(Error::Problem(p)) => Ok((Some(p), None)),
        Err(e) => Err(e),
    }
}

/// A `lifeboat.dev/backup-now` token not acted upon yet.
fn new_backup_now_token(policy: &BackupPolicy) -> Option<String> {
    let token = policy.annotations().get(names::ANNOTATION_BACKUP_NOW)?;
    let already = policy
        .status
        .as_ref()
        .and_then(|s| s.last_backup_now_token.as_ref());
    (!token.is_empty() && Some(token) != already).then(|| token.clone())
}

/// The policy as decide sees it: its stored status without the Events this process published.
fn without_published<'a>(policy: &'a BackupPolicy, ctx: &Context) -> Cow<'a, BackupPolicy> {
    let published = policy
        .uid()
        .map(|u| ctx.published.of(&u))
        .unwrap_or_default();
    match &policy.status {
        Some(s) if s.pending_events.iter().any(|e| published.contains(&e.id)) => {
            let mut seen = policy.clone();
            if let Some(s) = seen.status.as_mut() {
                s.pending_events = crate::effects::unpublished(&s.pending_events, &published);
            }
            Cow::Owned(seen)
        }
        _ => Cow::Borrowed(policy),
    }
}

/// Publishes the Events the stored status owes that this process has not published yet. The
/// status is not written again to drop them: the next write that is needed anyway does.
async fn perform(
    policy: &BackupPolicy,
    ctx: &Context,
    stored: Option<&BackupPolicyStatus>,
) -> Result<()> {
    let (Some(uid), Some(stored)) = (policy.uid(), stored) else {
        return Ok(());
    };
    let listed = || stored.pending_events.iter().map(|e| e.id.as_str());
    let owed = crate::effects::unpublished(&stored.pending_events, &ctx.published.of(&uid));
    let at = Timestamp::now();
    if owed.is_empty() {
        ctx.published.settle(&uid, [], at, listed());
        return Ok(());
    }
    let published = crate::effects::publish(ctx, policy, &owed).await;
    // After a failure nothing is remembered: what went out before it answers 409 next time.
    let now = published.as_ref().map(Clone::clone).unwrap_or_default();
    ctx.published.settle(&uid, now, at, listed());
    published.map(|_| ())
}

/// Outcomes of the policy's finished Jobs (scheduled and on-demand), with their pods' reports.
async fn read_outcomes(ctx: &Context, ns: &str, policy: &str) -> Result<Vec<JobOutcome>> {
    // The watched index knows whether the policy has Jobs at all: most reconciles (a policy
    // created, its CronJobs appearing) need no list then.
    if ctx.jobs.get(ns, policy).is_some_and(|jobs| jobs.is_empty()) {
        return Ok(Vec::new());
    }
    let selector = ListParams::default().labels(&names::backup_selector(policy));
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), ns)
        .list(&selector)
        .await
        .map_err(Error::list::<Job>())?;
    if jobs.items.is_empty() {
        return Ok(Vec::new());
    }
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&selector)
        .await
        .map_err(Error::list::<Pod>())?;
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

/// Applies the namespace's signing key, the CronJobs, removes those of deleted assets, and runs
/// the on-demand Jobs of `token`. A problem an API call reveals (a Kubernetes-state scope) is
/// [`Error::Problem`], before anything else is applied.
async fn apply_children(
    policy: &BackupPolicy,
    ctx: &Context,
    ns: &str,
    signing_key: Option<Secret>,
    token: Option<&str>,
) -> Result<()> {
    // Its CronJobs' Jobs mount the namespace's signing key: it exists before they can run.
    if let Some(secret) = &signing_key {
        crate::signing_key::apply(ctx, secret).await?;
    }
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
            .await
            .map_err(Error::apply::<CronJob>(&cj.name_any()))?;
        if let (Some(uid), Some(generation)) = (applied.uid(), applied.metadata.generation)
            && let Ok(mut m) = ctx.cronjobs.applied.lock()
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
                Err(e) => return Err(Error::delete::<CronJob>(&cj.name)(e)),
            }
        }
    }
    if let Some(token) = token {
        let jobs = Api::<Job>::namespaced(ctx.client.clone(), ns);
        for asset in &policy.spec.assets {
            let job = cronjob::on_demand_job(policy, asset, token, &ctx.agent, &scopes)?;
            // Apply, not create: a restarted operator re-applies the same Job, never a second one.
            jobs.patch(&job.name_any(), &apply, &Patch::Apply(&job))
                .await
                .map_err(Error::apply::<Job>(&job.name_any()))?;
        }
    }
    Ok(())
}

/// Applies the archiver of every `pointInTime` asset and deletes those of assets that no longer
/// ask for one; returns the archivers as the API server has them (their availability).
/// A policy that archives nothing and never did (no `ArchiverReady` in its status) costs no call.
async fn apply_archivers(
    policy: &BackupPolicy,
    ctx: &Context,
    ns: &str,
) -> Result<(Vec<Deployment>, bool)> {
    let desired = archiver::desired_archivers(policy, &ctx.agent)?;
    let had = policy
        .status
        .as_ref()
        .is_some_and(|s| conditions::find(&s.conditions, types::ARCHIVER_READY).is_some());
    let held = holds_slot_finalizer(policy);
    if desired.is_empty() && !had {
        if held {
            set_slot_finalizer(ctx, policy, false).await?;
        }
        return Ok((Vec::new(), false));
    }
    // Before any archiver (and so any slot) exists: deleting the policy then releases the slot.
    if !desired.is_empty() && !held {
        set_slot_finalizer(ctx, policy, true).await?;
    }
    let api = Api::<Deployment>::namespaced(ctx.client.clone(), ns);
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let mut current = Vec::new();
    for d in &desired {
        current.push(
            api.patch(&d.name_any(), &apply, &Patch::Apply(d))
                .await
                .map_err(Error::apply::<Deployment>(&d.name_any()))?,
        );
    }
    let retiring = retire_unwanted(policy, ctx, ns, &desired).await?;
    if desired.is_empty() && !retiring && held {
        set_slot_finalizer(ctx, policy, false).await?;
    }
    Ok((current, retiring))
}

/// Retires every archiver of `policy` not in `desired` ([`retire`]): whether one still is.
async fn retire_unwanted(
    policy: &BackupPolicy,
    ctx: &Context,
    ns: &str,
    desired: &[Deployment],
) -> Result<bool> {
    let api = Api::<Deployment>::namespaced(ctx.client.clone(), ns);
    let uid = policy.uid().ok_or(Error::MissingObjectKey("uid"))?;
    // Whole objects (a retired one's template makes its release Job): only policies that
    // archive, or did, get here.
    let existing = api
        .list(&ListParams::default().labels(&names::wal_archiver_selector(&policy.name_any())))
        .await
        .map_err(Error::list::<Deployment>())?;
    let mut retiring = false;
    for d in existing {
        let ours = d.owner_references().iter().any(|o| o.uid == uid);
        let name = d.name_any();
        if ours && !desired.iter().any(|w| w.name_any() == name) {
            retiring |= retire(policy, ctx, ns, &d).await?;
        }
    }
    Ok(retiring)
}

fn holds_slot_finalizer(policy: &BackupPolicy) -> bool {
    policy
        .finalizers()
        .iter()
        .any(|f| f == archiver::SLOT_FINALIZER)
}

async fn set_slot_finalizer(ctx: &Context, policy: &BackupPolicy, present: bool) -> Result<()> {
    controller::set_finalizer(ctx, policy, archiver::SLOT_FINALIZER, present).await
}

/// A policy being deleted. While it holds [`archiver::SLOT_FINALIZER`] (it has archived WAL),
/// each of its archivers is retired first (stopped, its replication slot dropped by a release
/// Job, then deleted), then the finalizer goes and the policy with it: the owner references
/// alone would delete the archiver and leave its slot keeping WAL on the source for ever.
async fn finalize(policy: &BackupPolicy, ctx: &Context, ns: &str) -> Result<Action> {
    if !holds_slot_finalizer(policy) {
        return Ok(Action::await_change());
    }
    if retire_unwanted(policy, ctx, ns, &[]).await? {
        return Ok(Action::requeue(RETIRE_RECHECK));
    }
    set_slot_finalizer(ctx, policy, false).await?;
    Ok(Action::await_change())
}

/// How soon a policy retiring an archiver looks again (its pod stopping, its release Job).
const RETIRE_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Retires the archiver Deployment `d`, whose asset no longer asks for one: scaled to zero,
/// then its replication slot dropped by a release Job (a slot nobody reads keeps WAL on the
/// source until its disk is full), then deleted, with an Event saying whether the slot went (a
/// Warning naming the agent's error when it did not: drop it by hand). The Job, named after
/// the Deployment's uid so that a later archiver of the same asset gets a Job of its own, goes
/// after its TTL. Whether it is still retiring.
async fn retire(policy: &BackupPolicy, ctx: &Context, ns: &str, d: &Deployment) -> Result<bool> {
    let name = d.name_any();
    let deployments = Api::<Deployment>::namespaced(ctx.client.clone(), ns);
    if d.spec.as_ref().and_then(|s| s.replicas) != Some(0) {
        info!(
            deployment = name,
            "stopping the WAL archiver of an asset that no longer asks for one"
        );
        let zero = Patch::Merge(serde_json::json!({"spec": {"replicas": 0}}));
        deployments
            .patch(&name, &PatchParams::default(), &zero)
            .await
            .map_err(Error::apply::<Deployment>(&name))?;
        return Ok(true);
    }
    // Its pod gone, not only counted out: a terminating archiver still streams from the slot,
    // and the server refuses to drop a slot in use.
    let selector = d
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns);
    if !selector.is_empty()
        && !pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(Error::list::<Pod>())?
            .items
            .is_empty()
    {
        return Ok(true);
    }
    let job = archiver::release_job(policy, d)?;
    let job_name = job.name_any();
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), ns);
    let Some(existing) = jobs
        .get_opt(&job_name)
        .await
        .map_err(Error::get::<Job>(&job_name))?
    else {
        match jobs.create(&PostParams::default(), &job).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(Error::apply::<Job>(&job_name)(e)),
        }
        return Ok(true);
    };
    let job_pods = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job_name}")))
        .await
        .map_err(Error::list::<Pod>())?;
    let Some(outcome) = outcome(&existing, &job_pods.items) else {
        return Ok(true);
    };
    let event = archiver::release_event(&outcome, &d.uid().unwrap_or_default());
    crate::effects::publish(ctx, policy, &[event]).await?;
    match deployments.delete(&name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(Error::delete::<Deployment>(&name)(e)),
    }
    Ok(false)
}

/// Each `pointInTime` asset's lag bound, from its archiver as this pass saw it; when the pass
/// could not look (a problem), the lags the status already holds.
fn archive_lags(
    policy: &BackupPolicy,
    archivers: Option<&[Deployment]>,
    now: Timestamp,
) -> status::ArchiveLags {
    archiver::archived_assets(policy)
        .filter_map(|asset| {
            let lag = match archivers {
                Some(current) => archiver::lag_bound(policy, asset, current, now),
                None => {
                    policy
                        .status
                        .as_ref()?
                        .assets
                        .iter()
                        .find(|a| a.name == asset.name)?
                        .wal_archive_lag_seconds
                }
            }?;
            Some((asset.name.clone(), lag))
        })
        .collect()
}

/// Writes (or removes, when nothing is archived) `ArchiverReady`. Returns whether it changed.
fn set_archiver_ready(
    policy: &BackupPolicy,
    status: &mut BackupPolicyStatus,
    archivers: &[Deployment],
    retiring: bool,
    now: Timestamp,
) -> bool {
    let ready = match archiver::readiness(policy, archivers) {
        Some((Status::False, reason, message)) => Some((Status::False, reason, message)),
        _ if retiring => Some((
            Status::False,
            archiver::reasons::RELEASING,
            "an archiver whose asset no longer asks for one is stopping, then its replication \
             slot is dropped on the source"
                .to_owned(),
        )),
        ready => ready,
    };
    match ready {
        Some((state, reason, message)) => conditions::set_condition(
            &mut status.conditions,
            conditions::condition(
                types::ARCHIVER_READY,
                state,
                reason,
                message,
                policy.metadata.generation,
                now,
            ),
        ),
        None => {
            let before = status.conditions.len();
            status
                .conditions
                .retain(|c| c.type_ != types::ARCHIVER_READY);
            before != status.conditions.len()
        }
    }
}

/// The scope of each Kubernetes-state asset of `policy`, its namespace's backup account bound to
/// all of them. An asset reaching beyond what the platform team allows is an error
/// ([`Problem::Scope`]) before any CronJob or Job is applied.
pub async fn kubestate_scopes(
    ctx: &Context,
    policy: &BackupPolicy,
    ns: &str,
) -> Result<cronjob::Scopes> {
    let mut scopes = cronjob::Scopes::new();
    for asset in &policy.spec.assets {
        if let AssetSource::KubernetesState(k) = &asset.source {
            let reach = kubestate::backup_reach(k);
            match kubestate::scope(&ctx.client, Access::Backup, ns, &reach).await {
                Ok(scope) => scopes.insert(asset.name.clone(), scope),
                Err(e @ Error::Problem(Problem::Scope(_))) => {
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
        .any(|a| a.kind() == AssetKind::KubernetesState);
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
    if let Some(children) = ctx.cronjobs.children.get(ns, policy) {
        let applied = ctx.cronjobs.applied.lock().ok();
        return Ok(children
            .into_iter()
            .map(|(name, m)| ExistingCronJob {
                unchanged: applied
                    .as_ref()
                    .and_then(|a| a.get(&m.uid))
                    .map(|g| Some(*g) == m.generation),
                name,
                owners: m.owners,
                hash: m.hash,
                full: None,
            })
            .collect());
    }
    let list = Api::<CronJob>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().labels(&names::backup_selector(policy)))
        .await
        .map_err(Error::list::<CronJob>())?;
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
    // A DrillSchedule that no longer deserializes verifies nothing (its own reconcile says so).
    let all = drills.state();
    let mine: Vec<&lifeboat_api::DrillSchedule> = all
        .iter()
        .filter_map(|d| d.0.as_ref().ok())
        .filter(|d| d.namespace().as_deref() == Some(ns) && d.spec.policy == policy)
        .collect();
    Ok(status::Verification {
        drilled: mine
            .iter()
            .flat_map(|d| d.spec.assets.iter().cloned())
            .collect(),
        backups: status::verified_backups(policy, mine.iter().copied()),
    })
}

fn update_metrics(
    ctx: &Context,
    policy: &BackupPolicy,
    ns: &str,
    decision: &status::Decision,
    now: Timestamp,
) {
    let status = &decision.status;
    let name = policy.name_any();
    let m = &ctx.metrics;
    match &status.worst_case_rpo {
        Some(w) => m
            .rpo_worst_case
            .with_label_values(&[ns, &name])
            .set(w.seconds as f64),
        None => {
            let _ = m.rpo_worst_case.remove_label_values(&[ns, &name]);
        }
    }
    for a in &status.assets {
        let labels = [ns, name.as_str(), a.name.as_str()];
        match decision.measured_from.iter().find(|(n, _)| n == &a.name) {
            Some((_, t)) => m
                .rpo_measured_snapshot
                .with_label_values(&labels)
                .set(t.as_second() as f64),
            None => {
                let _ = m.rpo_measured_snapshot.remove_label_values(&labels);
            }
        }
    }
    if let Some(o) = &policy.spec.objectives {
        m.rpo_objective
            .with_label_values(&[ns, &name])
            .set(o.rpo.as_secs() as f64);
    }
    if let Some(c) = conditions::find(&status.conditions, types::RPO_MET) {
        m.rpo_objective_met
            .with_label_values(&[ns, &name])
            .set(if Status::of(c) == Status::True {
                1.0
            } else {
                0.0
            });
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
        match a.wal_archive_lag_seconds {
            Some(lag) => m.wal_archive_lag.with_label_values(&labels).set(lag as f64),
            None => {
                let _ = m.wal_archive_lag.remove_label_values(&labels);
            }
        }
        for c in &a.copies {
            if let Some(t) = &c.newest_snapshot_time {
                m.copy_snapshot
                    .with_label_values(&[ns, name.as_str(), a.name.as_str(), c.name.as_str()])
                    .set(t.0.as_second() as f64);
            }
        }
        // A copy taken out of the spec leaves the status: its series goes with it, or the
        // frozen timestamp would keep LifeboatCopyBehind firing for a copy that is gone.
        for gone in status::copies_gone(policy.status.as_ref(), a) {
            let _ =
                m.copy_snapshot
                    .remove_label_values(&[ns, name.as_str(), a.name.as_str(), gone]);
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
