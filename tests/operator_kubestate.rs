//! Kubernetes-state Jobs on the real control plane, the controllers running as the chart's
//! ServiceAccount: a restore or backup reaches only the namespaces the platform team's Namespace
//! labels allow (its own by default), cluster-scoped objects only with the cluster opt-in, and it
//! runs as Lifeboat's own account, bound exactly there, whatever account the spec names. What is
//! refused is refused before any Job exists; a label removed withdraws the binding.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/harness.rs"]
mod harness;

use std::collections::BTreeSet;

use harness::{Harness, harness};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use lifeboat_api::RestoreRequest;
use lifeboat_api::agent_job::{AgentJob, AgentRestoreJob, KubernetesStateScope};
use lifeboat_api::conditions::{find, types};
use serde_json::{Value, json};

const BACKUP_ID: &str = "20261124T090000Z";

fn state_policy(asset: Value) -> Value {
    json!({
        "schedule": "0 * * * *",
        "assets": [{"name": "objects", "kubernetesState": asset}],
        "retention": {"keepLast": 3},
        "destination": {"volume": {"claimName": "backups"}},
        "podTemplate": {"serviceAccountName": "team-admin"}
    })
}

async fn apply_restore(h: &Harness, name: &str, spec: Value) {
    let obj = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
                     "metadata": {"name": name}, "spec": spec});
    h.api::<RestoreRequest>()
        .patch(name, &PatchParams::apply("test-user"), &Patch::Apply(&obj))
        .await
        .unwrap();
}

fn restore_spec(mapping: Value) -> Value {
    json!({
        "source": {"policy": "state", "backupId": BACKUP_ID},
        "targets": [{"asset": "objects", "kubernetesState": {"namespaceMapping": mapping}}],
        "execute": true,
        // A namespace user's own account: never what a Kubernetes-state Job runs as.
        "podTemplate": {"serviceAccountName": "team-admin"}
    })
}

/// The request's Ready condition once its reason is `reason`.
async fn ready_with(
    h: &Harness,
    name: &str,
    reason: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let api = h.api::<RestoreRequest>();
    h.until(&format!("{name} Ready reason {reason}"), async || {
        let rr = api.get_opt(name).await.unwrap()?;
        find(&rr.status?.conditions, types::READY)
            .filter(|c| c.reason == reason)
            .cloned()
    })
    .await
}

/// A change that makes the controller look at the request again (labels on Namespaces are not
/// watched: a platform team's edit takes effect at the next reconcile).
async fn poke<K>(api: &Api<K>, name: &str, token: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"lifeboat.dev/test-poke": token}}})),
    )
    .await
    .unwrap();
}

async fn label(h: &Harness, ns: &str, key: &str, value: Option<&str>) {
    Api::<Namespace>::all(h.client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {key: value}}})),
        )
        .await
        .unwrap();
}

async fn restore_jobs(h: &Harness) -> Vec<Job> {
    h.api::<Job>()
        .list(&ListParams::default().labels("lifeboat.dev/restore"))
        .await
        .unwrap()
        .items
}

fn document<T: serde::de::DeserializeOwned>(spec: &k8s_openapi::api::core::v1::PodSpec) -> T {
    let env = spec.containers[0].env.as_ref().unwrap();
    let doc = env.iter().find(|e| e.name == "LIFEBOAT_JOB").unwrap();
    serde_json::from_str(doc.value.as_deref().unwrap()).unwrap()
}

async fn other_namespace(h: &Harness, prefix: &str) -> String {
    lifeboat_testenv::shared()
        .unwrap()
        .namespace(&h.client, prefix)
        .await
        .unwrap()
}

fn namespaces(names: &[&str]) -> KubernetesStateScope {
    KubernetesStateScope::Namespaces(names.iter().map(|n| (*n).to_owned()).collect())
}

#[tokio::test]
async fn a_restore_of_cluster_objects_and_another_team_s_namespace_is_refused_before_any_job() {
    let h = harness("ks-refused").await;
    let other = other_namespace(&h, "ks-other-team").await;
    h.apply_policy(
        "state",
        state_policy(json!({"namespaces": [h.ns, other], "includeClusterResources": true})),
    )
    .await;
    apply_restore(&h, "everything", restore_spec(json!({}))).await;
    let ready = ready_with(&h, "everything", "ClusterScopeNotAllowed").await;
    assert!(
        ready
            .message
            .contains("lifeboat.dev/allow-cluster-restore=true"),
        "{}",
        ready.message
    );
    // Without the cluster-scoped objects, the other team's namespace is still not this one's.
    h.apply_policy("state", state_policy(json!({"namespaces": [h.ns, other]})))
        .await;
    poke(&h.api::<RestoreRequest>(), "everything", "1").await;
    let ready = ready_with(&h, "everything", "NamespaceNotAllowed").await;
    assert!(
        ready.message.contains(&format!("namespace {other}"))
            && ready
                .message
                .contains(&format!("restores-from.lifeboat.dev/{}=true", h.ns)),
        "{}",
        ready.message
    );
    assert!(restore_jobs(&h).await.is_empty(), "no Job was created");
    assert!(
        Api::<RoleBinding>::namespaced(h.client.clone(), &other)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing was bound in the other team's namespace"
    );
}

#[tokio::test]
async fn once_the_platform_allows_it_the_restore_runs_as_lifeboat_s_account_bound_only_there() {
    let h = harness("ks-allowed").await;
    let other = other_namespace(&h, "ks-accepts").await;
    h.apply_policy("state", state_policy(json!({"namespaces": [h.ns, other]})))
        .await;
    apply_restore(&h, "both", restore_spec(json!({}))).await;
    ready_with(&h, "both", "NamespaceNotAllowed").await;
    let grant = format!("restores-from.lifeboat.dev/{}", h.ns);
    label(&h, &other, &grant, Some("true")).await;
    poke(&h.api::<RestoreRequest>(), "both", "1").await;

    let job = h
        .until("the restore Job", async || {
            restore_jobs(&h).await.into_iter().next()
        })
        .await;
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("lifeboat-kubestate-restore"),
        "Lifeboat's account, not the spec's team-admin"
    );
    assert_eq!(pod.automount_service_account_token, Some(true));
    let doc: AgentRestoreJob = document(&pod);
    assert_eq!(
        doc.kubernetes_state_scope,
        Some(namespaces(&[&h.ns, &other]))
    );
    // The Job is applied before the status is written (apply, then status): wait for the write.
    let rr = h.api::<RestoreRequest>();
    h.until("the note on the ignored serviceAccountName", async || {
        let status = rr.get("both").await.ok()?.status?;
        let ready = find(&status.conditions, types::READY)?;
        ready
            .message
            .contains("podTemplate.serviceAccountName is not used for Kubernetes-state assets")
            .then_some(())
    })
    .await;
    // The account exists in the request's namespace and is bound in exactly the two namespaces.
    Api::<ServiceAccount>::namespaced(h.client.clone(), &h.ns)
        .get("lifeboat-kubestate-restore")
        .await
        .unwrap();
    let binding_name = format!("lifeboat-kubestate-restore-{}", h.ns);
    for ns in [&h.ns, &other] {
        let rb = Api::<RoleBinding>::namespaced(h.client.clone(), ns)
            .get(&binding_name)
            .await
            .unwrap();
        assert_eq!(rb.role_ref.name, "lifeboat-kubestate-restore");
        let subject = &rb.subjects.unwrap()[0];
        assert_eq!(
            (subject.name.as_str(), subject.namespace.as_deref()),
            ("lifeboat-kubestate-restore", Some(h.ns.as_str()))
        );
    }

    // The platform team takes the label back: the next reconcile refuses and unbinds.
    label(&h, &other, &grant, None).await;
    poke(&h.api::<RestoreRequest>(), "both", "2").await;
    ready_with(&h, "both", "NamespaceNotAllowed").await;
    let rbs = Api::<RoleBinding>::namespaced(h.client.clone(), &other);
    h.until("the binding in the other namespace emptied", async || {
        let rb = rbs.get(&binding_name).await.unwrap();
        rb.subjects.unwrap_or_default().is_empty().then_some(())
    })
    .await;
    assert_eq!(restore_jobs(&h).await.len(), 1, "no second Job");
}

#[tokio::test]
async fn a_mapping_into_an_unlabelled_namespace_is_refused_until_it_allows_the_restore() {
    let h = harness("ks-mapping").await;
    let copy = other_namespace(&h, "ks-copy").await;
    h.apply_policy("state", state_policy(json!({"namespaces": [h.ns]})))
        .await;
    apply_restore(
        &h,
        "to-copy",
        restore_spec(json!({h.ns.clone(): copy.clone()})),
    )
    .await;
    let ready = ready_with(&h, "to-copy", "NamespaceNotAllowed").await;
    assert!(
        ready.message.contains(&format!("namespace {copy}")),
        "{}",
        ready.message
    );
    assert!(restore_jobs(&h).await.is_empty());
    // A label for another source namespace, or for backups, does not allow this restore.
    label(
        &h,
        &copy,
        "restores-from.lifeboat.dev/someone-else",
        Some("true"),
    )
    .await;
    label(
        &h,
        &copy,
        &format!("backups-by.lifeboat.dev/{}", h.ns),
        Some("true"),
    )
    .await;
    poke(&h.api::<RestoreRequest>(), "to-copy", "1").await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    ready_with(&h, "to-copy", "NamespaceNotAllowed").await;
    assert!(restore_jobs(&h).await.is_empty());

    label(
        &h,
        &copy,
        &format!("restores-from.lifeboat.dev/{}", h.ns),
        Some("true"),
    )
    .await;
    poke(&h.api::<RestoreRequest>(), "to-copy", "2").await;
    let job = h
        .until("the restore Job", async || {
            restore_jobs(&h).await.into_iter().next()
        })
        .await;
    let doc: AgentRestoreJob = document(&job.spec.unwrap().template.spec.unwrap());
    assert_eq!(
        doc.kubernetes_state_scope,
        Some(namespaces(&[&h.ns, &copy]))
    );
}

#[tokio::test]
async fn a_namespace_missing_from_the_mapping_keeps_its_name_and_is_refused() {
    let h = harness("ks-unmapped").await;
    let copy = other_namespace(&h, "ks-copy").await;
    let billing = other_namespace(&h, "ks-billing").await;
    label(
        &h,
        &copy,
        &format!("restores-from.lifeboat.dev/{}", h.ns),
        Some("true"),
    )
    .await;
    h.apply_policy(
        "state",
        state_policy(json!({"namespaces": [h.ns, billing]})),
    )
    .await;
    // Only the request's own namespace is renamed: billing's objects would land in billing.
    apply_restore(
        &h,
        "half-mapped",
        restore_spec(json!({h.ns.clone(): copy.clone()})),
    )
    .await;
    let ready = ready_with(&h, "half-mapped", "NamespaceNotAllowed").await;
    assert!(
        ready.message.contains(&format!("namespace {billing}")),
        "{}",
        ready.message
    );
    assert!(restore_jobs(&h).await.is_empty());
}

#[tokio::test]
async fn cluster_scope_needs_the_platform_label_and_the_chart_s_opt_in() {
    let h = harness("ks-cluster").await;
    h.apply_policy(
        "state",
        state_policy(json!({"namespaces": [h.ns], "includeClusterResources": true})),
    )
    .await;
    apply_restore(&h, "with-rbac", restore_spec(json!({}))).await;
    ready_with(&h, "with-rbac", "ClusterScopeNotAllowed").await;
    // The namespace allowed, the chart not: the message says what to install.
    label(
        &h,
        &h.ns,
        "lifeboat.dev/allow-cluster-restore",
        Some("true"),
    )
    .await;
    poke(&h.api::<RestoreRequest>(), "with-rbac", "1").await;
    let api = h.api::<RestoreRequest>();
    let ready = h
        .until("the chart's opt-in named", async || {
            let rr = api.get("with-rbac").await.unwrap();
            find(&rr.status?.conditions, types::READY)
                .filter(|c| c.message.contains("kubernetesState.clusterScope=true"))
                .cloned()
        })
        .await;
    assert_eq!(ready.reason, "ClusterScopeNotAllowed");
    assert!(restore_jobs(&h).await.is_empty());

    // With the chart's opt-in: bound cluster-wide, and the document says so.
    install_cluster_scope_rbac(&h).await;
    poke(&api, "with-rbac", "2").await;
    let job = h
        .until("the restore Job", async || {
            restore_jobs(&h).await.into_iter().next()
        })
        .await;
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("lifeboat-kubestate-restore")
    );
    let doc: AgentRestoreJob = document(&pod);
    assert_eq!(
        doc.kubernetes_state_scope,
        Some(KubernetesStateScope::Cluster)
    );
    let crbs = Api::<ClusterRoleBinding>::all(h.client.clone());
    let name = format!("lifeboat-kubestate-restore-{}", h.ns);
    let crb = crbs.get(&name).await.unwrap();
    assert_eq!(crb.role_ref.name, "lifeboat-kubestate-restore-cluster");
    assert_eq!(
        crb.subjects.unwrap()[0].namespace.as_deref(),
        Some(h.ns.as_str())
    );

    // The label taken back: the cluster binding loses its subject at the next reconcile.
    label(&h, &h.ns, "lifeboat.dev/allow-cluster-restore", None).await;
    poke(&api, "with-rbac", "3").await;
    ready_with(&h, "with-rbac", "ClusterScopeNotAllowed").await;
    h.until("the cluster binding emptied", async || {
        let crb = crbs.get(&name).await.unwrap();
        crb.subjects.unwrap_or_default().is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_backup_reads_only_its_allowed_namespaces_as_lifeboat_s_account() {
    let h = harness("ks-backup").await;
    let other = other_namespace(&h, "ks-read").await;
    h.apply_policy("state", state_policy(json!({"namespaces": [h.ns, other]})))
        .await;
    let p = h
        .policy_until("state", "NamespaceNotAllowed", |p| {
            p.status
                .as_ref()
                .and_then(|s| find(&s.conditions, types::READY))
                .is_some_and(|c| c.reason == "NamespaceNotAllowed")
        })
        .await;
    let ready = find(&p.status.unwrap().conditions, types::READY)
        .unwrap()
        .clone();
    assert!(
        ready
            .message
            .contains(&format!("backups-by.lifeboat.dev/{}=true", h.ns)),
        "{}",
        ready.message
    );
    assert!(
        h.api::<CronJob>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    label(
        &h,
        &other,
        &format!("backups-by.lifeboat.dev/{}", h.ns),
        Some("true"),
    )
    .await;
    poke(&h.api::<lifeboat_api::BackupPolicy>(), "state", "1").await;
    let cj = h
        .until("the CronJob", async || {
            h.api::<CronJob>()
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .next()
        })
        .await;
    let pod = cj
        .spec
        .unwrap()
        .job_template
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("lifeboat-kubestate-backup")
    );
    let doc: AgentJob = document(&pod);
    assert_eq!(
        doc.kubernetes_state_scope,
        Some(namespaces(&[&h.ns, &other]))
    );
    let rb = Api::<RoleBinding>::namespaced(h.client.clone(), &other)
        .get(&format!("lifeboat-kubestate-backup-{}", h.ns))
        .await
        .unwrap();
    assert_eq!(rb.role_ref.name, "lifeboat-kubestate-backup");
    let p = h
        .policy_until("state", "the note on the account", |p| {
            p.status
                .as_ref()
                .and_then(|s| find(&s.conditions, types::READY))
                .is_some_and(|c| c.message.contains("they run as lifeboat-kubestate-backup"))
        })
        .await;
    assert_ne!(
        find(&p.status.unwrap().conditions, types::READY)
            .unwrap()
            .reason,
        "NamespaceNotAllowed"
    );
}

/// The chart rendered with `kubernetesState.clusterScope=true`: its cluster roles, and its
/// operator rules given to the operator's account under another name (the union is what the
/// chart grants; the default ClusterRole the other tests of this binary apply stays untouched).
async fn install_cluster_scope_rbac(h: &Harness) {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let helm = std::process::Command::new("bash")
        .arg(repo.join("hack/tools/helm.sh"))
        .output()
        .unwrap();
    assert!(helm.status.success());
    let out = std::process::Command::new(String::from_utf8(helm.stdout).unwrap().trim())
        .args(["template", "lifeboat"])
        .arg(repo.join("charts/lifeboat"))
        .args([
            "--namespace",
            harness::CHART_NAMESPACE,
            "--set",
            "kubernetesState.clusterScope=true",
            "--show-only",
            "templates/rbac-kubestate.yaml",
            "--show-only",
            "templates/rbac.yaml",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> =
        serde_norway::Deserializer::from_str(&String::from_utf8(out.stdout).unwrap())
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
    let pp = PatchParams::apply("lifeboat-tests").force();
    let roles = Api::<ClusterRole>::all(h.client.clone());
    let mut applied = BTreeSet::new();
    for mut doc in docs {
        if doc["kind"] != "ClusterRole" {
            continue;
        }
        let mut name = doc["metadata"]["name"].as_str().unwrap().to_owned();
        if name == "lifeboat" {
            name = "lifeboat-test-cluster-scope".into();
            doc["metadata"]["name"] = json!(name);
        }
        roles.patch(&name, &pp, &Patch::Apply(&doc)).await.unwrap();
        applied.insert(name);
    }
    assert!(
        applied.contains("lifeboat-kubestate-restore-cluster"),
        "{applied:?}"
    );
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "lifeboat-test-cluster-scope"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "lifeboat-test-cluster-scope"},
        "subjects": [{"kind": "ServiceAccount", "name": harness::CHART_SERVICE_ACCOUNT,
                      "namespace": harness::CHART_NAMESPACE}]});
    Api::<ClusterRoleBinding>::all(h.client.clone())
        .patch("lifeboat-test-cluster-scope", &pp, &Patch::Apply(&binding))
        .await
        .unwrap();
}
