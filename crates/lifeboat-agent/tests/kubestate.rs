//! The Kubernetes-state asset against the real API server (the test control plane): a dump by
//! discovery that leaves out what the cluster recreates and what it assigns, then a restore into
//! another namespace that is a dry run until --execute, in dependency order (a CRD before its
//! custom resources), and a corrupted or swapped dump refused before anything is applied.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};

fn agent(dir: &Path, args: &[&str]) -> Output {
    let env = lifeboat_testenv::shared().unwrap();
    let mut c = agent_command();
    c.args(args)
        .env_remove("LIFEBOAT_JOB")
        .env("LIFEBOAT_TERMINATION_LOG", dir.join("termination-log"));
    if let Some(k) = env.kubeconfig() {
        c.env("KUBECONFIG", k);
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

async fn apply(client: &Client, ns: Option<&str>, obj: Value) {
    let v = obj["apiVersion"].as_str().unwrap();
    let k = obj["kind"].as_str().unwrap();
    let (group, version) = v.split_once('/').unwrap_or(("", v));
    let plural = match k {
        "CustomResourceDefinition" => "customresourcedefinitions",
        "ConfigMap" => "configmaps",
        "Secret" => "secrets",
        "ServiceAccount" => "serviceaccounts",
        "Service" => "services",
        "Deployment" => "deployments",
        "RoleBinding" => "rolebindings",
        "Widget" => "widgets",
        other => panic!("no plural for {other}"),
    };
    let ar = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: v.into(),
        kind: k.into(),
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

async fn until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn dump_restore_into_another_namespace_dry_run_first() {
    let env = lifeboat_testenv::shared().unwrap();
    let client = env.client().await.unwrap();
    let ns = env.namespace(&client, "state").await.unwrap();
    let label = json!({"lifeboat-test": ns});
    let crd_name = format!("widgets.{ns}.lifeboat.dev");
    let group = format!("{ns}.lifeboat.dev");
    apply(&client, None, json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": crd_name, "labels": label},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                   "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]}})).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    until("the CRD to be Established", async || {
        let c = crds.get(&crd_name).await.unwrap();
        c.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
    apply(&client, Some(&ns), json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config", "labels": label}, "data": {"mode": "prod"}})).await;
    apply(&client, Some(&ns), json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-secret", "labels": label}, "stringData": {"token": "t0p-s3cret"}})).await;
    apply(&client, Some(&ns), json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "labels": label}})).await;
    apply(
        &client,
        Some(&ns),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": label},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    )
    .await;
    apply(&client, Some(&ns), json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": label},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web", "lifeboat-test": ns}},
                              "spec": {"serviceAccountName": "app", "containers": [{"name": "web", "image": "nginx:1.27"}]}}}})).await;
    apply(&client, Some(&ns), json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "app-view", "labels": label},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": ns}]})).await;
    apply(&client, Some(&ns), json!({"apiVersion": format!("{group}/v1"), "kind": "Widget", "metadata": {"name": "gear", "labels": label}, "spec": {"teeth": 12}})).await;
    // The Deployment controller (kube-controller-manager) makes a ReplicaSet it owns.
    let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    until("the Deployment's ReplicaSet", async || {
        (!rs.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty())
        .then_some(())
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, format!(
        "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: state}}\nspec:\n  schedule: '@daily'\n  assets:\n    - name: objects\n      kubernetesState: {{namespaces: [{ns}], includeClusterResources: true, labelSelector: 'lifeboat-test={ns}'}}\n  retention: {{keepLast: 3}}\n  destination: {{volume: {{claimName: local}}}}\n")).unwrap();
    let backups = dir.path().join("backups");
    let out = agent(
        dir.path(),
        &[
            "backup",
            "--policy-file",
            policy.to_str().unwrap(),
            "--dir",
            backups.to_str().unwrap(),
            "--cluster-scope",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    // What the dump holds.
    let artifact = std::fs::read_dir(backups.join("n/state"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("cluster_state.json.zst"))
        .unwrap();
    let dump: Value =
        serde_json::from_slice(&zstd::decode_all(std::fs::File::open(&artifact).unwrap()).unwrap())
            .unwrap();
    let kinds: Vec<String> = dump["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}.{}",
                r["plural"].as_str().unwrap(),
                r["group"].as_str().unwrap()
            )
        })
        .collect();
    for k in [
        "configmaps.",
        "serviceaccounts.",
        "services.",
        "deployments.apps",
        "rolebindings.rbac.authorization.k8s.io",
        "namespaces.",
        "customresourcedefinitions.apiextensions.k8s.io",
        &format!("widgets.{group}"),
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing from {kinds:?}");
    }
    assert!(
        !kinds.iter().any(|k| k == "secrets."),
        "no Secrets unless includeSecrets"
    );
    assert!(
        !kinds.iter().any(|k| k == "replicasets.apps"),
        "controller-owned objects are left out"
    );
    let raw = serde_json::to_string(&dump).unwrap();
    for server_field in [
        "\"uid\"",
        "\"resourceVersion\"",
        "\"managedFields\"",
        "\"clusterIP\"",
        "\"status\"",
        "\"creationTimestamp\"",
    ] {
        assert!(!raw.contains(server_field), "{server_field} kept");
    }
    assert!(!raw.contains("t0p-s3cret"));

    // Restore into another namespace: a dry run first.
    let copy = format!("{ns}-copy");
    let target = dir.path().join("target.yaml");
    std::fs::write(
        &target,
        format!("asset: objects\nkubernetesState:\n  namespaceMapping: {{{ns}: {copy}}}\n"),
    )
    .unwrap();
    let restore = |execute: bool| {
        let mut a = vec![
            "restore",
            "--policy-file",
            policy.to_str().unwrap(),
            "--asset",
            "objects",
            "--target-file",
            target.to_str().unwrap(),
            "--dir",
            backups.to_str().unwrap(),
            "--cluster-scope",
        ];
        if execute {
            a.push("--execute");
        }
        agent(dir.path(), &a)
    };
    let out = restore(false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("accepted by a server-side dry run"),
        "{}",
        text(&out)
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(
        namespaces.get_opt(&copy).await.unwrap().is_none(),
        "a dry run changes nothing"
    );
    // Into the original (existing) namespace, the API server validates every object.
    let out = agent(
        dir.path(),
        &[
            "restore",
            "--policy-file",
            policy.to_str().unwrap(),
            "--asset",
            "objects",
            "--dir",
            backups.to_str().unwrap(),
            "--cluster-scope",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("accepted by a server-side dry run") && !said.contains("wait for"),
        "{said}"
    );

    let out = restore(true);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("applied (server-side apply)"),
        "{}",
        text(&out)
    );
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &copy)
        .get("app-config")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["mode"], "prod");
    let d = Api::<Deployment>::namespaced(client.clone(), &copy)
        .get("web")
        .await
        .unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(2));
    let svc = Api::<Service>::namespaced(client.clone(), &copy)
        .get("web")
        .await
        .unwrap();
    assert!(
        svc.spec.unwrap().cluster_ip.is_some(),
        "a new address assigned by this cluster"
    );
    let rb = Api::<RoleBinding>::namespaced(client.clone(), &copy)
        .get("app-view")
        .await
        .unwrap();
    assert_eq!(
        rb.subjects.unwrap()[0].namespace.as_deref(),
        Some(copy.as_str()),
        "subjects follow the mapping"
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &copy,
        &ApiResource {
            group: group.clone(),
            version: "v1".into(),
            api_version: format!("{group}/v1"),
            kind: "Widget".into(),
            plural: "widgets".into(),
        },
    );
    assert_eq!(widgets.get("gear").await.unwrap().data["spec"]["teeth"], 12);

    // A flipped byte: refused before anything is applied.
    let mut bytes = std::fs::read(&artifact).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&artifact, bytes).unwrap();
    let elsewhere = format!("{ns}-corrupt");
    std::fs::write(
        &target,
        format!("asset: objects\nkubernetesState:\n  namespaceMapping: {{{ns}: {elsewhere}}}\n"),
    )
    .unwrap();
    let out = restore(true);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    assert!(namespaces.get_opt(&elsewhere).await.unwrap().is_none());
}

/// Another backup's dump (valid in itself: the same namespace a moment later) put in place of
/// one backup's: `verify` and `restore --execute` refuse it with the integrity exit code, and
/// the namespace it would restore into is never created.
#[tokio::test]
async fn a_swapped_dump_is_refused_before_anything_is_applied() {
    let env = lifeboat_testenv::shared().unwrap();
    let client = env.client().await.unwrap();
    let ns = env.namespace(&client, "swap").await.unwrap();
    let config = |mode: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config"}, "data": {"mode": mode}});
    apply(&client, Some(&ns), config("first")).await;

    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, format!(
        "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: state}}\nspec:\n  schedule: '@daily'\n  assets:\n    - name: objects\n      kubernetesState: {{namespaces: [{ns}]}}\n  retention: {{keepLast: 3}}\n  destination: {{volume: {{claimName: local}}}}\n")).unwrap();
    let backups = dir.path().join("backups");
    let backup = || {
        let out = agent(
            dir.path(),
            &[
                "backup",
                "--policy-file",
                policy.to_str().unwrap(),
                "--dir",
                backups.to_str().unwrap(),
                "--allow-namespace",
                &ns,
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
    };
    backup();
    apply(&client, Some(&ns), config("second")).await;
    backup();
    let mut ids: Vec<String> = std::fs::read_dir(backups.join("n/state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let artifact = |id: &str| {
        backups
            .join("n/state")
            .join(id)
            .join("objects.cluster_state.json.zst")
    };
    let pristine = std::fs::read(artifact(&ids[0])).unwrap();
    let other = std::fs::read(artifact(&ids[1])).unwrap();
    assert_ne!(pristine, other);
    std::fs::write(artifact(&ids[0]), &other).unwrap();

    // The restore's target namespace exists, empty: a refused restore leaves it so.
    let elsewhere = env.namespace(&client, "swapped").await.unwrap();
    let target = dir.path().join("target.yaml");
    std::fs::write(
        &target,
        format!("asset: objects\nkubernetesState:\n  namespaceMapping: {{{ns}: {elsewhere}}}\n"),
    )
    .unwrap();
    let restore = || {
        agent(
            dir.path(),
            &[
                "restore",
                "--execute",
                "--policy-file",
                policy.to_str().unwrap(),
                "--asset",
                "objects",
                "--backup",
                &ids[0],
                "--target-file",
                target.to_str().unwrap(),
                "--dir",
                backups.to_str().unwrap(),
                "--cluster-scope",
            ],
        )
    };
    let verify = || {
        agent(
            dir.path(),
            &[
                "verify",
                "--policy",
                "state",
                "--backup",
                &ids[0],
                "--dir",
                backups.to_str().unwrap(),
            ],
        )
    };
    let out = verify();
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    let out = restore();
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    let restored = Api::<ConfigMap>::namespaced(client.clone(), &elsewhere);
    assert!(
        restored.get_opt("app-config").await.unwrap().is_none(),
        "the swapped dump was applied"
    );

    // Put back, the same backup verifies and restores its own state: the refusal was the swap.
    std::fs::write(artifact(&ids[0]), &pristine).unwrap();
    let out = verify();
    assert!(out.status.success(), "{}", text(&out));
    let out = restore();
    assert!(out.status.success(), "{}", text(&out));
    let cm = restored.get("app-config").await.unwrap();
    assert_eq!(cm.data.unwrap()["mode"], "first");
}

/// The agent, signing with the tests' key (a fixture: any 32 bytes), in namespace `n` (a Job's
/// document names its own).
fn agent_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat-agent"));
    c.env(
        "LIFEBOAT_SIGNING_KEY_FILE",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/signing.key"),
    )
    .env("LIFEBOAT_NAMESPACE", "n");
    c
}
