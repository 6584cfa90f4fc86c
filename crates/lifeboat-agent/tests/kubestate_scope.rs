//! The Kubernetes-state agent held to its scope, against the real API server: a dump reaching
//! cluster-scoped objects or another team's namespace is refused whole, before anything is
//! applied, whatever credentials the agent has (an admin's here: only the agent's own check stops
//! it); a namespace missing from the mapping is checked under its own name; and Lifeboat's own
//! accounts, bound to the chart's roles, back up and restore a namespace and nothing more.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use lifeboat_api::BackupPolicy;
use lifeboat_api::agent_job::{AgentJob, AgentRestoreJob, KubernetesStateScope};
use lifeboat_api::common::RestoreTarget;
use serde_json::{Value, json};

/// Runs the agent as a Job would (`job`: the LIFEBOAT_JOB document) or from the command line,
/// with `kubeconfig`'s credentials and `dir` as the backup volume.
fn agent(dir: &Path, args: &[&str], job: Option<String>, kubeconfig: &Path) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat-agent"));
    c.args(args)
        .arg("--dir")
        .arg(dir.join("backups"))
        .env_remove("LIFEBOAT_JOB")
        .env(
            "LIFEBOAT_SIGNING_KEY_FILE",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/signing.key"),
        )
        .env("KUBECONFIG", kubeconfig)
        .env("LIFEBOAT_TERMINATION_LOG", dir.join("termination-log"));
    if let Some(job) = job {
        c.env("LIFEBOAT_JOB", job);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn admin_kubeconfig() -> PathBuf {
    lifeboat_testenv::shared()
        .unwrap()
        .kubeconfig()
        .expect("a kubeconfig")
}

async fn apply(client: &Client, ns: Option<&str>, plural: &str, obj: Value) {
    let v = obj["apiVersion"].as_str().unwrap();
    let (group, version) = v.split_once('/').unwrap_or(("", v));
    let ar = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: v.into(),
        kind: obj["kind"].as_str().unwrap().into(),
        plural: plural.into(),
    };
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
    api.patch(
        &name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap();
}

fn policy(asset: Value) -> BackupPolicy {
    serde_json::from_value(json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
        "metadata": {"name": "state"},
        "spec": {"schedule": "@daily", "assets": [{"name": "objects", "kubernetesState": asset}],
                 "retention": {"keepLast": 3}, "destination": {"volume": {"claimName": "local"}}}
    }))
    .unwrap()
}

fn backup_job(ns: &str, p: &BackupPolicy, scope: KubernetesStateScope) -> String {
    serde_json::to_string(&AgentJob {
        namespace: ns.into(),
        policy: "state".into(),
        asset: p.spec.assets[0].clone(),
        destination: p.spec.destination.clone(),
        compression: p.spec.compression.clone(),
        encryption: None,
        retention: p.spec.retention.clone(),
        copies: Vec::new(),
        signing_key: None,
        kubernetes_state_scope: Some(scope),
    })
    .unwrap()
}

fn restore_job(
    ns: &str,
    p: &BackupPolicy,
    mapping: Value,
    scope: Option<KubernetesStateScope>,
) -> String {
    let target: RestoreTarget = serde_json::from_value(
        json!({"asset": "objects", "kubernetesState": {"namespaceMapping": mapping}}),
    )
    .unwrap();
    serde_json::to_string(&AgentRestoreJob {
        namespace: ns.into(),
        policy: "state".into(),
        backup_id: "latest".into(),
        asset: p.spec.assets[0].clone(),
        target: Some(target),
        location: p.spec.destination.clone(),
        options: Default::default(),
        identity_secret: None,
        signing_key: None,
        allow_unsigned: false,
        kubernetes_state_scope: scope,
    })
    .unwrap()
}

fn scope(namespaces: &[&str]) -> KubernetesStateScope {
    KubernetesStateScope::Namespaces(namespaces.iter().map(|n| (*n).to_owned()).collect())
}

/// Dumps `asset` with the admin's credentials and the whole cluster in scope, as namespace
/// `ns`'s backup (where a restore requested in `ns` looks for it).
fn admin_backup(dir: &Path, ns: &str, asset: Value) -> BackupPolicy {
    let p = policy(asset);
    let file = dir.join("policy.json");
    std::fs::write(&file, serde_json::to_vec(&p).unwrap()).unwrap();
    let out = agent(
        dir,
        &[
            "backup",
            "--policy-file",
            file.to_str().unwrap(),
            "--namespace",
            ns,
            "--cluster-scope",
        ],
        None,
        &admin_kubeconfig(),
    );
    assert!(out.status.success(), "{}", text(&out));
    p
}

async fn exists(client: &Client, ns: &str, name: &str) -> bool {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
        .is_some()
}

#[tokio::test]
async fn a_dump_with_cluster_objects_and_another_team_s_namespace_is_refused_whole() {
    let env = lifeboat_testenv::shared().unwrap();
    let client = env.client().await.unwrap();
    let ns = env.namespace(&client, "scope-mine").await.unwrap();
    let other = env.namespace(&client, "scope-theirs").await.unwrap();
    let label = json!({"lifeboat-scope-test": ns});
    let role = format!("{ns}-reader");
    apply(
        &client,
        Some(&ns),
        "configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "mine", "labels": label}, "data": {"a": "1"}}),
    )
    .await;
    apply(
        &client,
        Some(&other),
        "configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "theirs", "labels": label}, "data": {"b": "2"}}),
    )
    .await;
    apply(
        &client,
        None,
        "clusterroles",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole", "metadata": {"name": role, "labels": label},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]}),
    )
    .await;
    apply(
        &client,
        None,
        "clusterrolebindings",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding", "metadata": {"name": role, "labels": label},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let p = admin_backup(
        dir.path(),
        &ns,
        json!({"namespaces": [ns, other], "includeClusterResources": true,
               "labelSelector": format!("lifeboat-scope-test={ns}"),
               "includeResources": ["configmaps", "clusterroles.rbac.authorization.k8s.io",
                                    "clusterrolebindings.rbac.authorization.k8s.io"]}),
    );
    // Gone from the cluster: whatever the restore applies would show.
    let dp = DeleteParams::default();
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .delete("mine", &dp)
        .await
        .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &other)
        .delete("theirs", &dp)
        .await
        .unwrap();
    let roles = Api::<ClusterRole>::all(client.clone());
    let bindings = Api::<ClusterRoleBinding>::all(client.clone());
    roles.delete(&role, &dp).await.unwrap();
    bindings.delete(&role, &dp).await.unwrap();
    let nothing_applied = async || {
        assert!(
            !exists(&client, &ns, "mine").await,
            "nothing applied in {ns}"
        );
        assert!(!exists(&client, &other, "theirs").await);
        assert!(roles.get_opt(&role).await.unwrap().is_none());
        assert!(bindings.get_opt(&role).await.unwrap().is_none());
    };

    // A document without a scope (an older operator's) is held to its own namespace.
    for (given, execute) in [
        (None, true),
        (Some(scope(&[&ns])), false),
        (Some(scope(&[&ns, &other])), true),
    ] {
        let mut args = vec!["restore"];
        if execute {
            args.push("--execute");
        }
        let job = restore_job(&ns, &p, json!({}), given.clone());
        let out = agent(dir.path(), &args, Some(job), &admin_kubeconfig());
        assert_eq!(out.status.code(), Some(13), "{given:?}: {}", text(&out));
        let said = text(&out);
        assert!(
            said.contains(&format!("ClusterRole {role} (cluster-scoped)"))
                && said.contains("nothing was applied"),
            "{said}"
        );
        if given.is_none() {
            assert!(said.contains(&format!("(namespace {other})")), "{said}");
        }
        let summary: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("termination-log")).unwrap())
                .unwrap();
        assert_eq!(summary["errorClass"], "OutOfScope");
        nothing_applied().await;
    }

    // The platform's cluster opt-in (the operator's Cluster scope): the same dump applies.
    let job = restore_job(&ns, &p, json!({}), Some(KubernetesStateScope::Cluster));
    let out = agent(
        dir.path(),
        &["restore", "--execute"],
        Some(job),
        &admin_kubeconfig(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(exists(&client, &ns, "mine").await && exists(&client, &other, "theirs").await);
    assert!(roles.get_opt(&role).await.unwrap().is_some());
    assert!(bindings.get_opt(&role).await.unwrap().is_some());
    roles.delete(&role, &dp).await.unwrap();
    bindings.delete(&role, &dp).await.unwrap();
}

#[tokio::test]
async fn a_namespace_left_out_of_the_mapping_is_checked_under_its_own_name() {
    let env = lifeboat_testenv::shared().unwrap();
    let client = env.client().await.unwrap();
    let ns = env.namespace(&client, "map-a").await.unwrap();
    let other = env.namespace(&client, "map-b").await.unwrap();
    let copy = env.namespace(&client, "map-a-copy").await.unwrap();
    let copy2 = env.namespace(&client, "map-b-copy").await.unwrap();
    for (n, name) in [(&ns, "a"), (&other, "b")] {
        apply(
            &client,
            Some(n),
            "configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name}, "data": {"k": "v"}}),
        )
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = admin_backup(
        dir.path(),
        &ns,
        json!({"namespaces": [ns, other], "includeResources": ["configmaps"]}),
    );
    let job = restore_job(
        &ns,
        &p,
        json!({ns.clone(): copy.clone()}),
        Some(scope(&[&copy])),
    );
    let out = agent(
        dir.path(),
        &["restore", "--execute"],
        Some(job),
        &admin_kubeconfig(),
    );
    assert_eq!(out.status.code(), Some(13), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("ConfigMap b (namespace {other})")),
        "{}",
        text(&out)
    );
    assert!(!exists(&client, &copy, "a").await, "nothing applied");

    // Both mapped into namespaces of the scope: applied; the Namespace objects of the dump are
    // the platform's and left alone.
    let job = restore_job(
        &ns,
        &p,
        json!({ns.clone(): copy.clone(), other.clone(): copy2.clone()}),
        Some(scope(&[&copy, &copy2])),
    );
    let out = agent(
        dir.path(),
        &["restore", "--execute"],
        Some(job),
        &admin_kubeconfig(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("2 left to the platform team"),
        "{}",
        text(&out)
    );
    assert!(exists(&client, &copy, "a").await && exists(&client, &copy2, "b").await);
}

/// A kubeconfig that authenticates as `ns`/`account` with a token the API server issued.
async fn account_kubeconfig(client: &Client, dir: &Path, ns: &str, account: &str) -> PathBuf {
    let tr: TokenRequest = serde_json::from_value(
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"audiences": [], "expirationSeconds": 3600}}),
    )
    .unwrap();
    let token = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(account, &Default::default(), &tr)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let admin = kube::config::Kubeconfig::read_from(admin_kubeconfig()).unwrap();
    let cluster = admin.clusters[0].cluster.clone().unwrap();
    let ca = cluster
        .certificate_authority
        .map(|path| format!("certificate-authority: {path}"))
        .or(cluster
            .certificate_authority_data
            .map(|data| format!("certificate-authority-data: {data}")))
        .unwrap();
    let path = dir.join(format!("{account}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    {ca}\n\
             users:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\n\
             current-context: x\n",
            cluster.server.unwrap()
        ),
    )
    .unwrap();
    path
}

/// The chart's Kubernetes-state ClusterRoles, from the manifests `kubectl apply -k deploy/` installs.
async fn install_chart_roles(client: &Client) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/generated/lifeboat.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let obj: Value = serde::Deserialize::deserialize(doc).unwrap();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        if obj["kind"] == "ClusterRole" && name.starts_with("lifeboat-kubestate-") {
            Api::<ClusterRole>::all(client.clone())
                .patch(
                    name,
                    &PatchParams::apply("test").force(),
                    &Patch::Apply(&obj),
                )
                .await
                .unwrap();
        }
    }
}

/// What the operator applies for `access` ("backup" or "restore"): the account in `ns`, bound to
/// the chart's role in each of `into`.
async fn lifeboat_account(client: &Client, ns: &str, access: &str, into: &[&str]) -> String {
    let account = format!("lifeboat-kubestate-{access}");
    let managed = json!({"app.kubernetes.io/managed-by": "lifeboat-operator"});
    apply(
        client,
        Some(ns),
        "serviceaccounts",
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": account, "labels": managed}}),
    )
    .await;
    for target in into {
        apply(client, Some(target), "rolebindings", json!({"apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding", "metadata": {"name": format!("{account}-{ns}"), "labels": managed},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": account},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}]})).await;
    }
    account
}

#[tokio::test]
async fn lifeboat_s_accounts_do_what_the_chart_s_roles_allow_and_nothing_more() {
    let env = lifeboat_testenv::shared().unwrap();
    let client = env.client().await.unwrap();
    install_chart_roles(&client).await;
    let ns = env.namespace(&client, "acct").await.unwrap();
    let copy = env.namespace(&client, "acct-copy").await.unwrap();
    let untouched = env.namespace(&client, "acct-untouched").await.unwrap();
    // A custom resource the chart's roles do not cover (no kubernetesState.extraResources).
    let group = format!("{ns}.lifeboat.dev");
    apply(&client, None, "customresourcedefinitions", json!({"apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition", "metadata": {"name": format!("gadgets.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                   "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})).await;
    apply(
        &client,
        Some(&ns),
        "configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "app-config"}, "data": {"mode": "prod"}}),
    )
    .await;
    apply(
        &client,
        Some(&ns),
        "deployments",
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}),
    )
    .await;
    let gadgets = ApiResource {
        group: group.clone(),
        version: "v1".into(),
        api_version: format!("{group}/v1"),
        kind: "Gadget".into(),
        plural: "gadgets".into(),
    };
    let crd_ready = async || {
        for _ in 0..100 {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &gadgets);
            if api.list(&Default::default()).await.is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("gadgets not served");
    };
    crd_ready().await;
    apply(
        &client,
        Some(&ns),
        "gadgets",
        json!({"apiVersion": format!("{group}/v1"), "kind": "Gadget",
        "metadata": {"name": "g1"}, "spec": {"size": 3}}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();

    // The backup account, bound in its namespace only, dumps it: every kind the role reads, and
    // the record names the kind it may not read instead of failing or hiding it.
    let reader = lifeboat_account(&client, &ns, "backup", &[&ns]).await;
    let reader_config = account_kubeconfig(&client, dir.path(), &ns, &reader).await;
    let p = policy(json!({"namespaces": [ns]}));
    let out = agent(
        dir.path(),
        &["backup"],
        Some(backup_job(&ns, &p, scope(&[&ns]))),
        &reader_config,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("not in the dump: gadgets.{group}")),
        "{}",
        text(&out)
    );
    // Another namespace is beyond its bindings, whatever a document says: the API refuses.
    let p_other = policy(json!({"namespaces": [untouched]}));
    let out = agent(
        dir.path(),
        &["backup"],
        Some(backup_job(&ns, &p_other, scope(&[&untouched]))),
        &reader_config,
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("may read nothing in namespace {untouched}")),
        "{}",
        text(&out)
    );

    // The restore account, bound in its namespace and the copy, restores the dump there.
    let writer = lifeboat_account(&client, &ns, "restore", &[&ns, &copy]).await;
    let writer_config = account_kubeconfig(&client, dir.path(), &ns, &writer).await;
    let job = restore_job(
        &ns,
        &p,
        json!({ns.clone(): copy.clone()}),
        Some(scope(&[&ns, &copy])),
    );
    let out = agent(
        dir.path(),
        &["restore", "--execute"],
        Some(job),
        &writer_config,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(exists(&client, &copy, "app-config").await);
    Api::<Deployment>::namespaced(client.clone(), &copy)
        .get("web")
        .await
        .unwrap();

    // A dump holding a kind the restore role does not write (taken by an admin): the API
    // server's dry run of the whole dump refuses it before the first write, so nothing lands.
    let admin_dir = tempfile::tempdir().unwrap();
    let p = admin_backup(admin_dir.path(), &ns, json!({"namespaces": [ns]}));
    lifeboat_account(&client, &ns, "restore", &[&untouched]).await;
    let job = restore_job(
        &ns,
        &p,
        json!({ns.clone(): untouched.clone()}),
        Some(scope(&[&ns, &untouched])),
    );
    let out = agent(
        admin_dir.path(),
        &["restore", "--execute"],
        Some(job),
        &writer_config,
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("applying gadgets.{group} g1")),
        "{}",
        text(&out)
    );
    assert!(
        !exists(&client, &untouched, "app-config").await,
        "nothing applied"
    );
}
