//! The plugin as kubectl users drive it, run through the real `kubectl` against the real control
//! plane: a kubeconfig of several contexts (its current one pointing at nothing), `--context`,
//! `--kubeconfig` over `$KUBECONFIG`, `$KUBECONFIG` of several files merged, `-n` over the
//! context's namespace, `-A`; every read command's `-o json` and `-o yaml` parsed; `logs` of a
//! resource's runs found by the operator's labels in its own namespace only; shell completion.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use lifeboat_api::BackupPolicy;
use serde_json::{Value, json};

/// `kubectl lifeboat ARGS` with `KUBECONFIG` set to `kubeconfig`.
fn kubectl(kubeconfig: &str, args: &[&str]) -> Output {
    let plugin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-lifeboat"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        plugin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(lifeboat_testenv::kubectl().unwrap())
        .arg("lifeboat")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).unwrap()
}

fn yaml_of(out: &Output) -> Value {
    serde_norway::from_str(&ok(out)).unwrap()
}

/// The namespaces of the rows of a `-o json|yaml` list.
fn namespaces(rows: &Value) -> Vec<String> {
    let mut out: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["namespace"].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The test environment's kubeconfig with four contexts: `dead` (current, a port where nothing
/// listens), `a` and `b` (the real cluster, namespaces `ns_a` and `ns_b`), and `a-as-nobody`
/// (as `a`, with a user the kubeconfig does not have).
fn contexts(dir: &Path, ns_a: &str, ns_b: &str) -> PathBuf {
    let env = lifeboat_testenv::shared().unwrap();
    let original = std::fs::read_to_string(env.kubeconfig().unwrap()).unwrap();
    let mut k: Value = serde_norway::from_str(&original).unwrap();
    let real = k["contexts"][0]["context"].clone();
    let user = real["user"].clone();
    k["clusters"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "dead", "cluster": {"server": "https://127.0.0.1:1"}}));
    let mut a = real.clone();
    a["namespace"] = ns_a.into();
    let mut b = real.clone();
    b["namespace"] = ns_b.into();
    let mut nobody = a.clone();
    nobody["user"] = "nobody".into();
    k["contexts"] = json!([
        {"name": "dead", "context": {"cluster": "dead", "user": user}},
        {"name": "a", "context": a},
        {"name": "b", "context": b},
        {"name": "a-as-nobody", "context": nobody},
    ]);
    k["current-context"] = "dead".into();
    let path = dir.join("contexts.yaml");
    std::fs::write(&path, serde_norway::to_string(&k).unwrap()).unwrap();
    path
}

/// The names of the real cluster and user in the kubeconfig `file`.
fn real_names(file: &Path) -> (String, String) {
    let k: Value = serde_norway::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let context = &k["contexts"][1]["context"];
    let name = |field: &str| context[field].as_str().unwrap().to_owned();
    (name("cluster"), name("user"))
}

/// A policy of one asset whose last backup is 5 minutes old and was verified by drill `q`.
async fn policy(client: &kube::Client, ns: &str, name: &str, id: &str) {
    let api: Api<BackupPolicy> = Api::namespaced(client.clone(), ns);
    api.patch(name, &PatchParams::apply("test-user"), &Patch::Apply(json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy", "metadata": {"name": name},
        "spec": {"schedule": "@hourly", "retention": {"keepLast": 3},
                 "destination": {"volume": {"claimName": "backups"}}, "objectives": {"rpo": "15m"},
                 "assets": [{"name": "db", "postgres": {"host": "db", "user": "u", "databases": ["orders"]}}]}})))
        .await
        .unwrap();
    let at = (Timestamp::now() - jiff::SignedDuration::from_secs(300)).to_string();
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
        "assets": [{"name": "db", "consecutiveFailures": 0,
            "lastSuccess": {"id": id, "snapshotTime": at, "startedAt": at, "finishedAt": at,
                            "storedBytes": 1024, "sha256": "ab", "durationSeconds": 2.0},
            "lastVerified": {"id": id, "time": at, "drill": "q/1"}}]}})),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn contexts_namespaces_and_every_read_in_json_and_yaml() {
    let env = lifeboat_testenv::shared().unwrap();
    let client = env.client().await.unwrap();
    let ns_a = env.namespace(&client, "ctx-a").await.unwrap();
    let ns_b = env.namespace(&client, "ctx-b").await.unwrap();
    policy(&client, &ns_a, "shop", "20261124T100000Z-1-aaaaaaaa").await;
    policy(&client, &ns_b, "erp", "20261124T110000Z-2-bbbbbbbb").await;
    let dir = tempfile::tempdir().unwrap();
    let file = contexts(dir.path(), &ns_a, &ns_b);
    let kc = file.to_str().unwrap();

    // The current context is used when none is named: it points at nothing.
    let out = kubectl(kc, &["status"]);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // --context picks the cluster and its namespace.
    let a = json_of(&kubectl(kc, &["--context", "a", "status", "-o", "json"]));
    assert_eq!(namespaces(&a), [ns_a.as_str()]);
    assert_eq!(a[0]["policy"], "shop");
    assert_eq!(a[0]["lastBackup"], "20261124T100000Z-1-aaaaaaaa");
    let b = yaml_of(&kubectl(kc, &["status", "--context", "b", "-o", "yaml"]));
    assert_eq!(namespaces(&b), [ns_b.as_str()]);
    assert_eq!(b[0]["policy"], "erp");

    // --cluster and --user over the context's.
    let dead_cluster = kubectl(kc, &["status", "-n", &ns_a, "-o", "json"]);
    assert!(!dead_cluster.status.success());
    let (cluster, user) = real_names(&file);
    let a = json_of(&kubectl(
        kc,
        &["--cluster", &cluster, "-n", &ns_a, "status", "-o", "json"],
    ));
    assert_eq!(namespaces(&a), [ns_a.as_str()]);
    assert!(
        !kubectl(kc, &["--context", "a-as-nobody", "status"])
            .status
            .success()
    );
    let a = json_of(&kubectl(
        kc,
        &[
            "--context",
            "a-as-nobody",
            "--user",
            &user,
            "status",
            "-o",
            "json",
        ],
    ));
    assert_eq!(namespaces(&a), [ns_a.as_str()]);

    // -n over the context's namespace; -A across namespaces.
    let b = json_of(&kubectl(
        kc,
        &["--context", "a", "-n", &ns_b, "status", "-o", "json"],
    ));
    assert_eq!(namespaces(&b), [ns_b.as_str()]);
    let all = json_of(&kubectl(
        kc,
        &["--context", "a", "-A", "status", "-o", "json"],
    ));
    let seen = namespaces(&all);
    assert!(seen.contains(&ns_a) && seen.contains(&ns_b), "{seen:?}");

    // --kubeconfig over $KUBECONFIG (whose only context points at nothing).
    let dead = dir.path().join("dead.yaml");
    let mut d: Value = serde_norway::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    d["contexts"] = json!([d["contexts"][0].clone()]);
    std::fs::write(&dead, serde_norway::to_string(&d).unwrap()).unwrap();
    let b = json_of(&kubectl(
        dead.to_str().unwrap(),
        &["--kubeconfig", kc, "--context", "b", "status", "-o", "json"],
    ));
    assert_eq!(namespaces(&b), [ns_b.as_str()]);

    // $KUBECONFIG of several files, merged as kubectl merges them: the first file's
    // current-context, the second's contexts.
    let first = dir.path().join("current-b.yaml");
    std::fs::write(&first, "apiVersion: v1\nkind: Config\ncurrent-context: b\n").unwrap();
    let merged = format!("{}:{kc}", first.display());
    let b = json_of(&kubectl(&merged, &["status", "-o", "json"]));
    assert_eq!(namespaces(&b), [ns_b.as_str()]);

    // backups from the policies' status: one policy, a namespace's, every namespace's.
    let rows = yaml_of(&kubectl(
        kc,
        &["--context", "a", "backups", "shop", "-o", "yaml"],
    ));
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["kind"], "postgres");
    assert_eq!(rows[0]["lastSuccess"]["id"], "20261124T100000Z-1-aaaaaaaa");
    assert_eq!(rows[0]["lastVerified"]["drill"], "q/1");
    let rows = json_of(&kubectl(kc, &["--context", "b", "backups", "-o", "json"]));
    assert_eq!(namespaces(&rows), [ns_b.as_str()]);
    assert_eq!(rows[0]["lastSuccess"]["id"], "20261124T110000Z-2-bbbbbbbb");
    let rows = json_of(&kubectl(
        kc,
        &["--context", "a", "-A", "backups", "-o", "json"],
    ));
    let seen = namespaces(&rows);
    assert!(seen.contains(&ns_a) && seen.contains(&ns_b), "{seen:?}");
    let table = ok(&kubectl(kc, &["--context", "a", "backups"]));
    let row = table.lines().find(|l| l.contains("shop")).unwrap();
    assert!(
        row.contains("20261124T100000Z-1-aaaaaaaa") && row.contains("yes (drill q/1)"),
        "{table}"
    );
    let out = kubectl(kc, &["--context", "a", "backups", "no-such-policy"]);
    assert!(!out.status.success());

    // The report in JSON and YAML: the same rows as its document.
    let r = json_of(&kubectl(kc, &["--context", "a", "report", "-o", "json"]));
    assert_eq!(r["scope"], format!("namespace {ns_a}"));
    assert_eq!(r["assets"][0]["policy"], "shop");
    let r = yaml_of(&kubectl(kc, &["--context", "b", "report", "-o", "yaml"]));
    assert_eq!(r["assets"][0]["policy"], "erp");
}

/// A pod as the operator's Jobs leave them, labelled `labels` (never scheduled here: no node).
async fn pod(client: &kube::Client, ns: &str, name: &str, labels: Value) {
    use k8s_openapi::api::core::v1::Pod;
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "agent", "image": "lifeboat-agent"}]}}))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

/// The `==> pod/NAME (...) <==` headers `logs` printed: which pods it chose.
fn pods_shown(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("==> pod/"))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn logs_read_the_pods_a_resource_ran_in_its_namespace_only() {
    use lifeboat_api::RestoreRequest;
    let env = lifeboat_testenv::shared().unwrap();
    let client = env.client().await.unwrap();
    let ns = env.namespace(&client, "logs").await.unwrap();
    let other = env.namespace(&client, "logs-other").await.unwrap();
    let managed = "app.kubernetes.io/managed-by";
    let backup = |policy: &str| {
        json!({managed: "lifeboat-operator", "lifeboat.dev/role": "backup",
               "lifeboat.dev/policy": policy, "lifeboat.dev/asset": "db"})
    };
    pod(&client, &ns, "shop-db-29000000-a", backup("shop")).await;
    pod(&client, &ns, "shop-db-now-b", backup("shop")).await;
    pod(&client, &ns, "erp-db-c", backup("erp")).await;
    // The same labels in another namespace, and a look-alike the operator did not make.
    pod(&client, &other, "shop-db-elsewhere", backup("shop")).await;
    pod(
        &client,
        &ns,
        "shop-db-by-hand",
        json!({"lifeboat.dev/role": "backup", "lifeboat.dev/policy": "shop"}),
    )
    .await;
    // A drill: its evidence Job's pod, and the pods of the RestoreRequest it made.
    let rrs: Api<RestoreRequest> = Api::namespaced(client.clone(), &ns);
    let rr: RestoreRequest = serde_json::from_value(json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
        "metadata": {"name": "quarterly-20261124", "labels": {managed: "lifeboat-operator", "lifeboat.dev/drill": "quarterly"}},
        "spec": {"source": {"policy": "shop"}, "execute": true}}))
    .unwrap();
    rrs.create(&PostParams::default(), &rr).await.unwrap();
    pod(&client, &ns, "quarterly-20261124-db-restore", json!({managed: "lifeboat-operator",
        "lifeboat.dev/restore": "quarterly-20261124", "lifeboat.dev/role": "restore", "lifeboat.dev/asset": "db"})).await;
    pod(
        &client,
        &ns,
        "quarterly-evidence",
        json!({managed: "lifeboat-operator",
        "lifeboat.dev/drill": "quarterly", "lifeboat.dev/role": "evidence"}),
    )
    .await;

    let kc = env.kubeconfig().unwrap();
    let kc = kc.to_str().unwrap();
    // Which pods were read (no kubelet runs these pods here, so their logs are empty).
    let out = kubectl(kc, &["-n", &ns, "logs", "backuppolicy/shop"]);
    ok(&out);
    let mut shown = pods_shown(&out);
    shown.sort();
    assert_eq!(shown, ["shop-db-29000000-a", "shop-db-now-b"]);

    let mut shown = pods_shown(&kubectl(kc, &["-n", &ns, "logs", "drill/quarterly"]));
    shown.sort();
    assert_eq!(
        shown,
        ["quarterly-20261124-db-restore", "quarterly-evidence"]
    );
    let shown = pods_shown(&kubectl(
        kc,
        &["-n", &ns, "logs", "rr/quarterly-20261124", "--tail", "5"],
    ));
    assert_eq!(shown, ["quarterly-20261124-db-restore"]);

    let out = kubectl(kc, &["-n", &ns, "logs", "bp/nothing-ran"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no agent pods of backuppolicy/nothing-ran")
    );
    let out = kubectl(kc, &["-n", &ns, "logs", "pod/shop-db-now-b"]);
    assert!(!out.status.success());
    assert!(pods_shown(&out).is_empty());
}

#[test]
fn bash_completes_the_subcommands_and_the_output_formats() {
    let script = Command::new(env!("CARGO_BIN_EXE_kubectl-lifeboat"))
        .args(["completion", "bash"])
        .output()
        .unwrap();
    assert!(script.status.success());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("completion.bash");
    std::fs::write(&file, &script.stdout).unwrap();
    // Sourced by a real bash, then asked what follows `kubectl-lifeboat lo` and `status -o `.
    let complete = |words: &str, cword: usize| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; f=$(complete -p kubectl-lifeboat | sed -E 's/.*-F ([^ ]+).*/\\1/'); \
                 COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; \
                 $f kubectl-lifeboat \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; \
                 printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                file.display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let words = complete("kubectl-lifeboat lo", 1);
    assert_eq!(words.trim(), "logs", "{words}");
    let words = complete("kubectl-lifeboat status -o ''", 3);
    let mut words: Vec<&str> = words.split_whitespace().collect();
    words.sort();
    assert_eq!(words, ["json", "table", "yaml"]);
    for shell in ["zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_kubectl-lifeboat"))
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("logs"));
    }
}

#[test]
fn kubectl_completes_the_plugin_through_its_completer() {
    // kubectl finds the plugin and `kubectl_complete-lifeboat` on the PATH: both links to the
    // binary, as a user installs them.
    let dir = tempfile::tempdir().unwrap();
    for name in ["kubectl-lifeboat", "kubectl_complete-lifeboat"] {
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_kubectl-lifeboat"),
            dir.path().join(name),
        )
        .unwrap();
    }
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // `kubectl __complete` is what kubectl's own shell completion runs on <TAB>.
    let complete = |words: &[&str]| {
        let out = Command::new(lifeboat_testenv::kubectl().unwrap())
            .args(["__complete", "lifeboat"])
            .args(words)
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut words: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with(':'))
            .map(str::to_owned)
            .collect();
        words.sort();
        words
    };
    assert_eq!(complete(&["st"]), ["status"]);
    assert_eq!(complete(&["backups", "-o", ""]), ["json", "table", "yaml"]);
    assert!(complete(&["--cont"]).contains(&"--context".to_owned()));
}
