//! The Helm chart and the kustomize base, checked the way users install them: `helm lint`, the
//! values schema, then the rendered manifests and `kubectl apply -k deploy/` sent to the real API
//! server with a server-side dry-run (admission, schemas, RBAC validation). The chart's RBAC and
//! admission policy are what every operator test runs under (see `install_chart_rbac`); what
//! they must not allow is proven against the API server in tests/rbac.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use harness::{CHART_NAMESPACE, harness_with_agent, install_chart_rbac};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use lifeboat_operator::config::{self, AgentConfig, AgentFlags};
use serde_json::json;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// helm, built from its Go module by hack/tools/helm.sh (cached in target/tools).
fn helm() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join("hack/tools/helm.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
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

fn template(namespace: &str, set: &[&str]) -> Output {
    template_release("lifeboat", namespace, &[], set)
}

/// `helm template` of release `release` with values files (relative to the chart) and `--set`s.
fn template_release(release: &str, namespace: &str, files: &[&str], set: &[&str]) -> Output {
    let chart = repo().join("charts/lifeboat");
    let mut cmd = Command::new(helm());
    cmd.args(["template", release])
        .arg(&chart)
        .args(["--namespace", namespace]);
    for f in files {
        cmd.arg("-f").arg(chart.join(f));
    }
    for s in set {
        cmd.args(["--set", s]);
    }
    run(&mut cmd)
}

fn kubectl() -> Command {
    let env = lifeboat_testenv::shared().unwrap();
    let mut cmd = Command::new(lifeboat_testenv::kubectl().unwrap());
    if let Some(k) = env.kubeconfig() {
        cmd.env("KUBECONFIG", k);
    }
    cmd
}

/// `kubectl apply --server-side --dry-run=server` of `manifests`.
fn dry_run_apply(manifests: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("manifests.yaml");
    std::fs::write(&file, manifests).unwrap();
    ok(&run(kubectl()
        .args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
        ])
        .args(["--field-manager", "lifeboat-chart-test", "-f"])
        .arg(&file)))
}

#[test]
fn the_chart_lints_strictly() {
    ok(&run(Command::new(helm())
        .args(["lint", "--strict"])
        .arg(repo().join("charts/lifeboat"))));
}

#[test]
fn the_values_schema_refuses_what_cannot_work() {
    for (set, expect) in [
        ("replicaCount=0", "replicaCount"),
        (
            "leaderElection.leaseDurationSeconds=1",
            "leaseDurationSeconds",
        ),
        ("agent.image.pullPolicy=Sometimes", "pullPolicy"),
        ("watchNamespace=Not_A_Namespace", "watchNamespace"),
        ("typoedKey=1", "typoedKey"),
        (
            "agent.containerSecurityContext.privileged=true",
            "privileged",
        ),
        ("agent.podSecurityContext.runAsUser=0", "runAsUser"),
        (
            "agent.imagePullSecrets[0].name=Not_A_Secret",
            "imagePullSecrets",
        ),
    ] {
        let out = template("lifeboat-system", &[set]);
        assert!(!out.status.success(), "{set} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{set}: {err}");
    }
}

#[test]
fn deploy_generated_is_the_chart_rendered() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("lifeboat.yaml");
    ok(&run(Command::new("bash")
        .arg(repo().join("hack/render-manifests.sh"))
        .arg(&fresh)
        .env("HELM", helm())));
    let committed = std::fs::read_to_string(repo().join("deploy/generated/lifeboat.yaml")).unwrap();
    assert!(
        std::fs::read_to_string(&fresh).unwrap() == committed,
        "deploy/generated/lifeboat.yaml differs from the chart; run `make manifests` and commit"
    );
}

#[test]
fn the_rendered_chart_is_least_privilege_and_restricted() {
    let text = ok(&template("lifeboat-system", &[]));
    let docs: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let mut roles = 0;
    let kubestate = |d: &&serde_json::Value| {
        d["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("lifeboat-kubestate-"))
    };
    for doc in docs
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("ClusterRole" | "Role")))
        .filter(|d| !kubestate(d))
    {
        roles += 1;
        for rule in doc["rules"].as_array().unwrap() {
            for field in ["verbs", "resources", "apiGroups"] {
                assert!(
                    !rule[field].as_array().unwrap().iter().any(|v| v == "*"),
                    "wildcard {field} in {rule}"
                );
            }
            let resources = rule["resources"].as_array().unwrap();
            if resources.iter().any(|r| r == "secrets") {
                // No read of Secret data anywhere: only the signing keys, `create` (RBAC cannot
                // name what does not exist yet), and `get` or `patch` of the Secrets named: never
                // list, watch, update or delete, never an unnamed get.
                let named = rule["resourceNames"]
                    .as_array()
                    .is_some_and(|n| !n.is_empty());
                let verbs = rule["verbs"].as_array().unwrap();
                assert!(
                    verbs == &[json!("create")]
                        || (named && verbs.iter().all(|v| v == "get" || v == "patch")),
                    "secrets: {rule}"
                );
            }
        }
    }
    assert_eq!(
        roles, 3,
        "the operator's ClusterRole, the master key's Role and the leader-election Role"
    );
    // The operator may bind exactly the two Kubernetes-state roles, and nothing cluster-wide
    // unless kubernetesState.clusterScope is set.
    let operator = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "lifeboat")
        .unwrap();
    let binds: Vec<&serde_json::Value> = operator["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["verbs"].as_array().unwrap().iter().any(|v| v == "bind"))
        .collect();
    assert_eq!(binds.len(), 1, "{binds:?}");
    assert_eq!(
        binds[0]["resourceNames"],
        json!(["lifeboat-kubestate-backup", "lifeboat-kubestate-restore"])
    );
    assert!(
        !text.contains("clusterrolebindings"),
        "no cluster binding without kubernetesState.clusterScope"
    );
    // The Kubernetes-state accounts' roles: listed kinds, read or write, never what lets a
    // namespace relabel itself, raise its quota or grant more than it holds.
    let state: Vec<&serde_json::Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole")
        .filter(kubestate)
        .collect();
    assert_eq!(
        state.len(),
        2,
        "backup and restore; the cluster ones only when asked"
    );
    for doc in state {
        for rule in doc["rules"].as_array().unwrap() {
            for field in ["resources", "apiGroups"] {
                assert!(
                    !rule[field].as_array().unwrap().iter().any(|v| v == "*"),
                    "wildcard {field} in {rule}"
                );
            }
            for never in ["namespaces", "resourcequotas", "limitranges", "nodes"] {
                assert!(
                    !rule["resources"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|r| r == never),
                    "{never} in {rule}"
                );
            }
            assert!(
                rule["verbs"] == json!(["get", "list"])
                    || rule["verbs"] == json!(["create", "patch"]),
                "{rule}"
            );
        }
    }
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--leader-election"), "{args:?}");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert!(
        pod.get("hostNetwork").is_none(),
        "host network only when asked"
    );
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("--webhook-allowed-hosts")),
        "{args:?}"
    );
    // The admission policy holds the operator's account to the agent image.
    let policy = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .unwrap();
    assert_eq!(
        policy["spec"]["matchConditions"][0]["expression"],
        "request.userInfo.username == \"system:serviceaccount:lifeboat-system:lifeboat\""
    );
    let image = policy["spec"]["validations"][0]["expression"]
        .as_str()
        .unwrap();
    assert!(
        image.ends_with("c.image == \"ghcr.io/lifeboat-dev/lifeboat-agent:0.1.0\")"),
        "{image}"
    );
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicyBinding")
        .unwrap();
    assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
}

#[test]
fn the_platform_restricts_webhook_hosts_and_the_agent_image_and_account() {
    let text = ok(&template(
        "ops",
        &[
            "drills.webhookAllowedHosts={hooks.slack.com,*.chat.example.com}",
            "agent.image.repository=registry.example.com/lifeboat-agent",
            "agent.image.tag=1.2.3",
            "agent.serviceAccountName=backup-agent",
        ],
    ));
    let docs: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        args.as_array().unwrap().contains(&json!(
            "--webhook-allowed-hosts=hooks.slack.com,*.chat.example.com"
        )),
        "{args}"
    );
    let policy = docs
        .iter()
        .find(|d| {
            d["kind"] == "ValidatingAdmissionPolicy"
                && d["metadata"]["name"] == "lifeboat-agent-jobs"
        })
        .unwrap();
    let rules = serde_json::to_string(&policy["spec"]).unwrap();
    assert!(
        rules.contains(r#"c.image == \"registry.example.com/lifeboat-agent:1.2.3\""#),
        "{rules}"
    );
    assert!(
        rules.contains("system:serviceaccount:ops:lifeboat"),
        "{rules}"
    );
    assert!(
        rules.contains(
            r#"[\"backup-agent\",\"lifeboat-kubestate-backup\",\"lifeboat-kubestate-restore\"]"#
        ),
        "{rules}"
    );
    let out = template("ops", &["drills.webhookAllowedHosts={http://x/}"]);
    assert!(!out.status.success(), "a URL is not a host");
}

#[test]
fn host_network_and_extra_env_render_for_clusters_without_kube_proxy() {
    // What `make demo` sets on its local node (hack/demo.sh).
    let text = ok(&template(
        "lifeboat-system",
        &[
            "hostNetwork=true",
            "extraEnv[0].name=KUBERNETES_SERVICE_HOST",
            "extraEnv[0].value=127.0.0.1",
        ],
    ));
    let deployment: serde_json::Value = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .find(|d: &serde_json::Value| d["kind"] == "Deployment")
        .unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    let env = pod["containers"][0]["env"].as_array().unwrap();
    assert!(
        env.contains(&json!({"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"})),
        "{env:?}"
    );
    assert!(env.iter().any(|e| e["name"] == "POD_NAMESPACE"), "{env:?}");
    let out = template("lifeboat-system", &["extraEnv[0].value=x"]);
    assert!(
        !out.status.success(),
        "an env var without a name was accepted"
    );
}

#[test]
fn staging_namespace_permissions_are_rendered_only_when_asked() {
    let by_default = ok(&template("lifeboat-system", &[]));
    // By default Namespaces are only read (their labels scope Kubernetes-state Jobs), never
    // created, changed or deleted.
    for doc in serde_norway::Deserializer::from_str(&by_default) {
        let doc: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        for rule in doc["rules"].as_array().into_iter().flatten() {
            if rule["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "namespaces")
            {
                assert_eq!(rule["verbs"], json!(["get"]), "{rule}");
            }
        }
    }
    let text = ok(&template(
        "lifeboat-system",
        &["drills.stagingNamespaces=true"],
    ));
    let role: serde_json::Value = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .find(|d: &serde_json::Value| {
            d["kind"] == "ClusterRole" && d["metadata"]["name"] == "lifeboat-staging"
        })
        .unwrap();
    let rules: Vec<(String, Vec<String>)> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["resources"][0].as_str().unwrap().to_owned(),
                r["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        rules,
        [
            (
                "namespaces".to_owned(),
                vec!["get", "create", "delete"]
                    .into_iter()
                    .map(String::from)
                    .collect::<Vec<_>>()
            ),
            (
                "networkpolicies".to_owned(),
                vec!["create".to_owned(), "patch".to_owned()]
            ),
            (
                "resourcequotas".to_owned(),
                vec!["create".to_owned(), "patch".to_owned()]
            ),
        ]
    );
    let out = template(
        "lifeboat-system",
        &["drills.stagingNamespaces=true", "watchNamespace=shop"],
    );
    assert!(
        !out.status.success(),
        "a namespaced install cannot manage namespaces"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cluster-scoped"));
}

#[test]
fn alert_rules_refer_only_to_metrics_the_operator_exports() {
    let rendered = ok(&template(
        "lifeboat-system",
        &["metrics.prometheusRule.enabled=true"],
    ));
    // Only the PrometheusRule: CRD descriptions also mention lifeboat_ names (the canary table).
    let text: String = rendered
        .split("\n---")
        .filter(|doc| doc.contains("kind: PrometheusRule"))
        .collect();
    let exported: Vec<String> = lifeboat_operator::metrics::Metrics::new()
        .unwrap()
        .families()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let mut used = 0;
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("lifeboat_") {
            used += 1;
            assert!(
                exported.iter().any(|e| e == word),
                "{word} is not exported: {exported:?}"
            );
        }
    }
    assert!(used >= 5, "the rules use the operator's metrics");
    for alert in [
        "LifeboatRPOObjectiveMissed",
        "LifeboatBackupsFailing",
        "LifeboatDrillFailed",
        "LifeboatDrillRTOAtRisk",
        "LifeboatRetentionRefused",
        "LifeboatWalArchiveLagging",
    ] {
        assert!(text.contains(alert), "{alert}");
    }
}

/// Every `lifeboat_*` series a query names, with the label names its selectors and `by (...)`
/// clauses use. Hand-written: PromQL has no Rust parser worth a dependency for this check.
fn series_in(expr: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("lifeboat_") {
        let start = i + at;
        let end = start
            + expr[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len() - start);
        let mut labels = Vec::new();
        if bytes.get(end) == Some(&b'{') {
            let close = end + expr[end..].find('}').unwrap();
            for m in expr[end + 1..close].split(',') {
                let name = m.split(['=', '!', '~']).next().unwrap().trim();
                if !name.is_empty() {
                    labels.push(name.to_owned());
                }
            }
        }
        out.push((expr[start..end].to_owned(), labels));
        i = end;
    }
    out
}

#[test]
fn the_dashboard_queries_only_metrics_and_labels_the_operator_exports() {
    let path = repo().join("charts/lifeboat/files/dashboards/lifeboat.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let families = lifeboat_operator::metrics::Metrics::new()
        .unwrap()
        .families();
    let mut exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    exprs.extend(
        dash["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["type"] == "query")
            .map(|v| v["query"].as_str().unwrap().to_owned()),
    );
    let mut seen = std::collections::BTreeSet::new();
    for expr in &exprs {
        for (name, labels) in series_in(expr) {
            // Histograms expose <name>_bucket, _sum and _count.
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| families.iter().any(|(f, _)| f == b))
                .unwrap_or(&name);
            let (_, known) = families
                .iter()
                .find(|(f, _)| f == base)
                .unwrap_or_else(|| panic!("{name} (in {expr}) is not exported"));
            for l in labels {
                assert!(known.contains(&l), "{name} has no label {l} (in {expr})");
            }
            seen.insert(base.to_owned());
        }
    }
    for needed in [
        "lifeboat_backup_snapshot_timestamp_seconds",
        "lifeboat_rpo_objective_seconds",
        "lifeboat_backup_duration_seconds",
        "lifeboat_backup_bytes",
        "lifeboat_drill_rto_seconds",
        "lifeboat_drill_rpo_seconds",
        "lifeboat_backup_consecutive_failures",
    ] {
        assert!(seen.contains(needed), "the dashboard shows {needed}");
    }
    // And the chart ships it.
    let text = ok(&template(
        "lifeboat-system",
        &["grafanaDashboard.enabled=true"],
    ));
    assert!(text.contains("grafana_dashboard: \"1\""), "{text}");
    assert!(text.contains("lifeboat-overview"));
}

#[tokio::test]
async fn the_chart_and_the_kustomize_base_pass_the_api_servers_dry_run() {
    let env = lifeboat_testenv::shared().unwrap();
    let client = env.client().await.unwrap();
    // Cluster-wide (the default), and watching one namespace (a Role instead).
    let ns = env.namespace(&client, "chart").await.unwrap();
    let out = dry_run_apply(&ok(&template(&ns, &[])));
    assert!(
        out.contains("deployment.apps/lifeboat serverside-applied (server dry run)"),
        "{out}"
    );
    assert!(
        out.contains("clusterrole.rbac.authorization.k8s.io/lifeboat"),
        "{out}"
    );
    let out = dry_run_apply(&ok(&template(&ns, &[&format!("watchNamespace={ns}")])));
    assert!(
        out.contains("role.rbac.authorization.k8s.io/lifeboat "),
        "{out}"
    );
    let out = dry_run_apply(&ok(&template(
        &ns,
        &[
            "crds.install=false",
            "replicaCount=1",
            "leaderElection.enabled=false",
        ],
    )));
    assert!(!out.contains("customresourcedefinition"), "{out}");

    // kubectl apply -k deploy/: the namespace must exist for the dry-run of what goes in it.
    install_chart_rbac(&client).await;
    let out = ok(&run(kubectl()
        .args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "-k",
        ])
        .arg(repo().join("deploy"))));
    assert!(out.contains("namespace/lifeboat-system"), "{out}");
    assert!(out.contains("deployment.apps/lifeboat"), "{out}");
    // The examples apply cleanly on top.
    let out = ok(&run(kubectl()
        .args(["apply", "--dry-run=server", "-n", CHART_NAMESPACE, "-f"])
        .arg(repo().join("deploy/examples"))));
    assert_eq!(out.lines().count(), 4, "{out}");
}
/// The master signing key Secret in rendered manifests, if any.
fn master_key_secret(text: &str) -> Option<serde_json::Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .find(|d: &serde_json::Value| {
            d["kind"] == "Secret" && d["metadata"]["name"] == "lifeboat-signing-master-key"
        })
}

#[tokio::test]
async fn the_master_signing_key_is_made_once_kept_on_upgrade_and_never_committed() {
    // A first install: 32 random bytes, kept on uninstall, new in every fresh render.
    let key = |s: &serde_json::Value| {
        serde_json::from_value::<k8s_openapi::ByteString>(s["data"]["key"].clone())
            .unwrap()
            .0
    };
    let first = master_key_secret(&ok(&template("lifeboat-system", &[]))).unwrap();
    assert_eq!(
        first["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    assert_eq!(key(&first).len(), 32);
    let second = master_key_secret(&ok(&template("lifeboat-system", &[]))).unwrap();
    assert_ne!(key(&first), key(&second), "random, never a fixed key");

    // An upgrade keeps the key the cluster holds: helm's lookup, against the real API server.
    let env = lifeboat_testenv::shared().unwrap();
    let client = env.client().await.unwrap();
    let ns = env.namespace(&client, "master-key").await.unwrap();
    // As the release's first install left it.
    let existing: Secret = serde_json::from_value(json!({
        "metadata": {"name": "lifeboat-signing-master-key",
                     "labels": {"app.kubernetes.io/managed-by": "Helm"},
                     "annotations": {"meta.helm.sh/release-name": "lifeboat",
                                     "meta.helm.sh/release-namespace": ns}},
        "data": {"key": k8s_openapi::ByteString(vec![9; 32])}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &existing)
        .await
        .unwrap();
    // Nothing cluster-scoped (the shared control plane holds the CRDs and other tests' RBAC,
    // which helm would refuse to take over).
    let mut upgrade = Command::new(helm());
    upgrade
        .args(["template", "lifeboat", "--dry-run=server"])
        .arg(repo().join("charts/lifeboat"))
        .args(["--namespace", &ns, "--set", "crds.install=false"])
        .args(["--set", &format!("watchNamespace={ns}")]);
    if let Some(k) = env.kubeconfig() {
        upgrade.env("KUBECONFIG", k);
    }
    let kept = master_key_secret(&ok(&run(&mut upgrade))).unwrap();
    assert_eq!(key(&kept), vec![9; 32], "the cluster's key, not a new one");

    // The plain manifests of deploy/ never hold a key (it would be every install's).
    let committed = std::fs::read_to_string(repo().join("deploy/generated/lifeboat.yaml")).unwrap();
    assert!(master_key_secret(&committed).is_none());
    assert!(committed.contains("--signing-key-secret=lifeboat-signing-master-key"));
    // The derived keys' name is not the master's.
    let out = template(
        "lifeboat-system",
        &["signing.masterKeySecret=lifeboat-signing-key"],
    );
    assert!(!out.status.success(), "the derived keys' name was accepted");
}

/// promtool, built from the Prometheus Go module by hack/tools/promtool.sh (cached in
/// target/tools).
fn promtool() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join("hack/tools/promtool.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Rendered manifests as JSON documents.
fn docs(text: &str) -> Vec<serde_json::Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|d: &serde_json::Value| !d.is_null())
        .collect()
}

/// The labels Prometheus stores for one sample of the operator's text exposition, scraped
/// through the chart's ServiceMonitor: the target labels the Prometheus Operator sets for a
/// Service endpoint, and the metric's own. On a clash the metric's label wins with
/// `honorLabels`, and is renamed `exported_<name>` without it (Prometheus's `honor_labels`).
fn scraped(line: &str, honor: bool, target: &[(&str, &str)]) -> (String, String) {
    let (series, value) = line.rsplit_once(' ').unwrap();
    let (name, own) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}').unwrap()),
        None => (series, ""),
    };
    let mut labels: std::collections::BTreeMap<String, String> = target
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    // The values here are plain names: no escaped quote or comma inside one.
    for pair in own.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap();
        let v = v.trim_matches('"').to_owned();
        if labels.contains_key(k) && !honor {
            labels.insert(format!("exported_{k}"), v);
        } else {
            labels.insert(k.to_owned(), v);
        }
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    (format!("{name}{{{}}}", inner.join(",")), value.to_owned())
}

const NS: &str = "lifeboat-system";
/// The test's time zero, 2026-01-01T00:00:00Z.
const START: f64 = 1_767_225_600.0;
const DAY: f64 = 86_400.0;

/// The chart's monitoring objects and the labels Prometheus adds to what it scrapes through the
/// ServiceMonitor (`honor` overrides its `honorLabels`, to show what breaks without it).
struct Scrape {
    rendered: Vec<serde_json::Value>,
    honor: bool,
    target: Vec<(&'static str, String)>,
}

impl Scrape {
    fn new(honor: Option<bool>) -> Scrape {
        let rendered = docs(&ok(&template(
            NS,
            &[
                "metrics.serviceMonitor.enabled=true",
                "metrics.prometheusRule.enabled=true",
            ],
        )));
        let find = |kind: &str| rendered.iter().find(|d| d["kind"] == kind).unwrap().clone();
        let monitor = find("ServiceMonitor");
        let service = find("Service");
        let honor = honor.unwrap_or(monitor["spec"]["endpoints"][0]["honorLabels"] == true);
        let service_name = service["metadata"]["name"].as_str().unwrap().to_owned();
        let endpoint = monitor["spec"]["endpoints"][0]["port"]
            .as_str()
            .unwrap()
            .to_owned();
        let target = vec![
            ("namespace", NS.to_owned()),
            ("service", service_name.clone()),
            ("job", service_name),
            ("endpoint", endpoint),
            ("pod", "lifeboat-7d9f8b6c5-x2x4q".to_owned()),
            ("container", "operator".to_owned()),
            ("instance", "10.244.1.7:8080".to_owned()),
        ];
        Scrape {
            rendered,
            honor,
            target,
        }
    }

    fn find(&self, kind: &str) -> &serde_json::Value {
        self.rendered.iter().find(|d| d["kind"] == kind).unwrap()
    }

    /// The registry's /metrics as promtool input series: the same sample at every scrape for
    /// the test's hour.
    fn series(&self, m: &lifeboat_operator::metrics::Metrics) -> Vec<serde_json::Value> {
        let target: Vec<(&str, &str)> = self.target.iter().map(|(k, v)| (*k, v.as_str())).collect();
        m.render()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (series, value) = scraped(l, self.honor, &target);
                json!({"series": series, "values": format!("{value}x60")})
            })
            .collect()
    }
}

/// The operator's own registry, set as its reconcilers set it: a policy `db` and a DrillSchedule
/// `quarterly` in two namespaces. In `shop` every alert's condition holds; in `billing` none does.
fn alerting_metrics() -> lifeboat_operator::metrics::Metrics {
    let m = lifeboat_operator::metrics::Metrics::new().unwrap();
    m.rpo_objective
        .with_label_values(&["shop", "db"])
        .set(600.0);
    m.rpo_objective
        .with_label_values(&["billing", "db"])
        .set(DAY);
    for ns in ["shop", "billing"] {
        m.backup_snapshot
            .with_label_values(&[ns, "db", "pg"])
            .set(START);
        m.rpo_measured_snapshot
            .with_label_values(&[ns, "db", "pg"])
            .set(START);
    }
    // shop's hourly schedule cannot keep 10 minutes; billing's keeps a day.
    for (ns, worst) in [("shop", 3630.0), ("billing", 3630.0)] {
        m.rpo_worst_case.with_label_values(&[ns, "db"]).set(worst);
    }
    // shop's drill was due two days ago and has not run; billing's is due tomorrow.
    m.drill_next_run
        .with_label_values(&["shop", "quarterly"])
        .set(START - 2.0 * DAY);
    m.drill_next_run
        .with_label_values(&["billing", "quarterly"])
        .set(START + DAY);
    m.backup_consecutive_failures
        .with_label_values(&["shop", "db", "pg"])
        .set(3.0);
    m.backup_consecutive_failures
        .with_label_values(&["billing", "db", "pg"])
        .set(0.0);
    m.retention_refused
        .with_label_values(&["shop", "db", "pg"])
        .set(1.0);
    m.retention_refused
        .with_label_values(&["billing", "db", "pg"])
        .set(0.0);
    // shop's archiver has been down for 20 minutes; billing's runs.
    m.wal_archive_lag
        .with_label_values(&["shop", "db", "pg"])
        .set(1240.0);
    m.wal_archive_lag
        .with_label_values(&["billing", "db", "pg"])
        .set(40.0);
    // shop's off-site copy holds a backup 7 hours older than its newest; billing's is current.
    m.copy_snapshot
        .with_label_values(&["shop", "db", "pg", "dr"])
        .set(START - 7.0 * 3600.0);
    m.copy_snapshot
        .with_label_values(&["billing", "db", "pg", "dr"])
        .set(START);
    // shop's last drill failed 40 days ago (overdue); billing's passed yesterday.
    m.drill_last_run
        .with_label_values(&["shop", "quarterly", "Failed"])
        .set(START - 40.0 * DAY);
    m.drill_last_run
        .with_label_values(&["billing", "quarterly", "Passed"])
        .set(START - DAY);
    for (ns, rto_met) in [("shop", 0.0), ("billing", 1.0)] {
        m.drill_objective_met
            .with_label_values(&[ns, "quarterly", "rto"])
            .set(rto_met);
        m.drill_objective_met
            .with_label_values(&[ns, "quarterly", "rpo"])
            .set(1.0);
        m.drill_rto_at_risk
            .with_label_values(&[ns, "quarterly"])
            .set(1.0 - rto_met);
    }
    m
}

/// `promtool test rules` of the chart's PrometheusRule against the operator's /metrics as
/// scraped through the chart's ServiceMonitor (`honor` overrides the ServiceMonitor's
/// `honorLabels` to show what breaks without it). Returns promtool's output and success.
fn promtool_test_rules(honor: Option<bool>) -> (bool, String) {
    let scrape = Scrape::new(honor);
    let target = &scrape.target;
    let start = START;
    let input_series = scrape.series(&alerting_metrics());

    // What fires at 30 minutes, `shop` only, with the labels a receiver routes on.
    let per_asset = |severity: &str| {
        let mut l: serde_json::Map<String, serde_json::Value> = target
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        l.insert("namespace".into(), json!("shop"));
        l.insert("policy".into(), json!("db"));
        l.insert("asset".into(), json!("pg"));
        l.insert("severity".into(), json!(severity));
        serde_json::Value::Object(l)
    };
    let mut per_copy = per_asset("warning");
    per_copy["copy"] = json!("dr");
    let per_drill =
        |severity: &str| json!({"namespace": "shop", "drill": "quarterly", "severity": severity});
    let mut objective = per_drill("warning");
    objective["objective"] = json!("rto");
    for (k, v) in target {
        objective[*k] = json!(v);
    }
    objective["namespace"] = json!("shop");
    let mut at_risk = per_drill("warning");
    for (k, v) in target {
        at_risk[*k] = json!(v);
    }
    at_risk["namespace"] = json!("shop");
    let mut not_run = per_drill("warning");
    for (k, v) in target {
        not_run[*k] = json!(v);
    }
    not_run["namespace"] = json!("shop");
    let alert = |name: &str, labels: serde_json::Value, annotations: serde_json::Value| {
        json!({"eval_time": "30m", "alertname": name,
               "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations}]})
    };
    let tests = json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "start_timestamp": format!("{start}"),
            "input_series": input_series,
            "alert_rule_test": [
                alert("LifeboatRPOObjectiveMissed", per_asset("critical"), json!({
                    "summary": "Backups of shop/db asset pg are older than the RPO objective",
                    "description": "The snapshot RPOMet measures from is 30m 0s old. See `kubectl describe bp -n shop db`."})),
                alert("LifeboatRPONotAchievable", json!({"namespace": "shop", "policy": "db", "severity": "warning"}), json!({
                    "summary": "The schedule of shop/db allows an RPO of 1h 0m 30s, over its objective"})),
                alert("LifeboatDrillNotRun", not_run, json!({
                    "summary": "The drill of shop/quarterly due 2d 0h 30m 0s ago has not run"})),
                alert("LifeboatBackupsFailing", per_asset("warning"), json!({
                    "summary": "3 backups in a row of shop/db asset pg failed"})),
                alert("LifeboatRetentionRefused", per_asset("warning"), json!({
                    "summary": "Retention of shop/db asset pg would delete more than its maxDeletePercent in one pass and deleted nothing: check the rules and the clock"})),
                alert("LifeboatWalArchiveLagging", per_asset("critical"), json!({
                    "summary": "The WAL archive of shop/db asset pg may be 20m 40s behind: its archiver is not running or not storing"})),
                alert("LifeboatCopyBehind", per_copy, json!({
                    "summary": "Off-site copy dr of shop/db asset pg is 7h 0m 0s behind its newest backup"})),
                alert("LifeboatDrillFailed", per_drill("critical"), json!({
                    "summary": "The last disaster-recovery drill shop/quarterly failed"})),
                alert("LifeboatDrillOverdue", per_drill("warning"), json!({
                    "summary": "No drill of shop/quarterly has finished for 40d 0h 30m 0s"})),
                alert("LifeboatDrillObjectiveMissed", objective, json!({
                    "summary": "Drill shop/quarterly missed its rto objective"})),
                alert("LifeboatDrillRTOAtRisk", at_risk, json!({
                    "summary": "The last 3 drills of shop/quarterly took over 80% of the RTO objective: the next may miss it"})),
                {"eval_time": "30m", "alertname": "LifeboatOperatorReconcileErrors", "exp_alerts": []},
            ],
        }],
    });

    let rule = scrape.find("PrometheusRule");
    promtool_test(&rule["spec"]["groups"], &tests)
}

/// Runs `promtool test rules` of `tests` against `groups` of rules: whether it passed, and what
/// it printed.
fn promtool_test(groups: &serde_json::Value, tests: &serde_json::Value) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_json::to_string(&json!({ "groups": groups })).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tests.yaml"),
        serde_json::to_string_pretty(tests).unwrap(),
    )
    .unwrap();
    let out = run(Command::new(promtool())
        .args(["test", "rules", "tests.yaml"])
        .current_dir(dir.path()));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_alert_rules_fire_for_the_right_namespace_as_scraped_through_the_service_monitor() {
    let (passed, out) = promtool_test_rules(None);
    assert!(passed, "{out}");
    assert!(out.contains("SUCCESS"), "{out}");
    // The same rules and series, scraped without honorLabels (what the chart shipped before):
    // every series has the operator's namespace, so the RPO alert's join finds the two `db`
    // policies in one group and fails.
    let (passed, out) = promtool_test_rules(Some(false));
    assert!(!passed, "{out}");
    assert!(out.contains("many-to-many matching not allowed"), "{out}");
}

/// The dashboard's queries as Grafana sends them with `$namespace` = shop and `$policy` = All
/// (its `allValue`), evaluated by promtool against the operator's series as scraped through the
/// ServiceMonitor (`honor` as in `promtool_test_rules`). Each panel's query is wrapped so the
/// expected result is exact: how many series it shows per namespace, or its value.
fn dashboard_queries_test(honor: Option<bool>) -> (bool, String) {
    let scrape = Scrape::new(honor);
    let m = alerting_metrics();
    // What the remaining panels show: shop has a second policy whose RPO objective is missed;
    // billing's figures would change every result below if its series leaked in.
    for (ns, policy, met) in [
        ("shop", "db", 1.0),
        ("shop", "cache", 0.0),
        ("billing", "db", 1.0),
    ] {
        m.rpo_objective_met
            .with_label_values(&[ns, policy])
            .set(met);
    }
    for ns in ["shop", "billing"] {
        m.backup_duration
            .with_label_values(&[ns, "db", "pg"])
            .set(12.0);
        m.backup_bytes.with_label_values(&[ns, "db", "pg"]).set(1e6);
        m.drill_rto.with_label_values(&[ns, "quarterly"]).set(300.0);
        m.drill_rpo
            .with_label_values(&[ns, "quarterly"])
            .set(1800.0);
    }
    m.reconcile_errors
        .with_label_values(&["BackupPolicy", "ApplyChild"])
        .inc_by(5);
    m.reconcile_duration
        .with_label_values(&["BackupPolicy"])
        .observe(0.02);

    let path = repo().join("charts/lifeboat/files/dashboards/lifeboat.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let grafana = |expr: &str| expr.replace("$namespace", "shop").replace("$policy", ".*");
    let per_namespace = |n: u32| json!([{"labels": "{namespace=\"shop\"}", "value": n}]);
    let value = |v: f64| json!([{"labels": "{}", "value": v}]);
    // Each query by the series it reads -> how it is wrapped, what it must return.
    let expected: Vec<(&str, &str, serde_json::Value)> = vec![
        (
            "time() - lifeboat_backup_snapshot_timestamp_seconds{",
            "count by (namespace) (EXPR)",
            per_namespace(1),
        ),
        (
            "lifeboat_rpo_objective_seconds{",
            "count by (namespace) (EXPR)",
            per_namespace(1),
        ),
        // One of shop's two policies meets its objective (billing's would make it 2 of 3).
        ("sum(lifeboat_rpo_objective_met{", "EXPR", value(0.5)),
        (
            "count(lifeboat_backup_consecutive_failures{",
            "EXPR",
            value(1.0),
        ),
        (
            "lifeboat_backup_consecutive_failures{",
            "count by (namespace) (EXPR)",
            per_namespace(1),
        ),
        (
            "lifeboat_backup_duration_seconds{",
            "count by (namespace) (EXPR)",
            per_namespace(1),
        ),
        (
            "lifeboat_backup_bytes{",
            "count by (namespace) (EXPR)",
            per_namespace(1),
        ),
        (
            "lifeboat_drill_rto_seconds{",
            "count by (namespace) (EXPR)",
            per_namespace(1),
        ),
        (
            "lifeboat_drill_rpo_seconds{",
            "count by (namespace) (EXPR)",
            per_namespace(1),
        ),
        // rto and rpo.
        (
            "lifeboat_drill_objective_met{",
            "count by (namespace) (EXPR)",
            per_namespace(2),
        ),
        (
            "lifeboat_drill_last_run_timestamp_seconds{",
            "count by (namespace) (EXPR)",
            per_namespace(1),
        ),
        (
            "(rate(lifeboat_reconcile_errors_total[5m]))",
            "count(EXPR)",
            value(1.0),
        ),
        (
            "(rate(lifeboat_reconcile_duration_seconds_bucket[5m]))",
            "count(EXPR)",
            value(1.0),
        ),
    ];
    let mut exprs = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for target in dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
    {
        let expr = grafana(target["expr"].as_str().unwrap());
        // The longest key that starts the query, or stands in it: the most specific row.
        let (key, wrap, samples) = expected
            .iter()
            .filter(|(k, _, _)| expr.starts_with(k) || (k.starts_with('(') && expr.contains(k)))
            .max_by_key(|(k, _, _)| k.len())
            .unwrap_or_else(|| panic!("{expr} has no expected result here"));
        assert!(used.insert(*key), "two queries match {key}");
        exprs.push(
            json!({"expr": wrap.replace("EXPR", &expr), "eval_time": "30m",
                          "exp_samples": samples}),
        );
    }
    assert_eq!(
        exprs.len(),
        expected.len(),
        "every row is a query of the dashboard"
    );
    // The two variables' choices: both namespaces, and shop's policy.
    exprs.push(json!({"expr": "count by (namespace) (lifeboat_rpo_objective_seconds)", "eval_time": "30m",
        "exp_samples": [{"labels": "{namespace=\"billing\"}", "value": 1}, {"labels": "{namespace=\"shop\"}", "value": 1}]}));
    exprs.push(json!({"expr": grafana("count by (policy) (lifeboat_backup_snapshot_timestamp_seconds{namespace=~\"$namespace\"})"),
        "eval_time": "30m", "exp_samples": [{"labels": "{policy=\"db\"}", "value": 1}]}));
    let tests = json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "start_timestamp": format!("{START}"),
            "input_series": scrape.series(&m),
            "promql_expr_test": exprs,
        }],
    });
    // No rules: only the dashboard's queries are evaluated.
    promtool_test(&json!([]), &tests)
}

#[test]
fn the_dashboard_s_queries_show_the_chosen_namespace_s_series_as_scraped() {
    let (passed, out) = dashboard_queries_test(None);
    assert!(passed, "{out}");
    assert!(out.contains("SUCCESS"), "{out}");
    // Without honorLabels every series carries the operator's namespace: the namespace
    // filter finds nothing.
    let (passed, out) = dashboard_queries_test(Some(false));
    assert!(!passed, "{out}");
    assert!(out.contains("got: nil"), "{out}");
}

/// The Deployment of rendered manifests.
fn deployment(docs: &[serde_json::Value]) -> &serde_json::Value {
    docs.iter().find(|d| d["kind"] == "Deployment").unwrap()
}

#[test]
fn replicas_spread_over_nodes_and_zones_and_a_drain_keeps_one() {
    let rendered = docs(&ok(&template("lifeboat-system", &[])));
    let deploy = deployment(&rendered);
    let selector = &deploy["spec"]["selector"]["matchLabels"];
    assert_eq!(selector["app.kubernetes.io/instance"], "lifeboat");
    let spread = deploy["spec"]["template"]["spec"]["topologySpreadConstraints"]
        .as_array()
        .unwrap();
    let keys: Vec<&str> = spread
        .iter()
        .map(|c| c["topologyKey"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    );
    for c in spread {
        // The release's own pods, of one revision: a rollout's new pods are not skewed by the old.
        assert_eq!(&c["labelSelector"]["matchLabels"], selector, "{c}");
        assert_eq!(c["matchLabelKeys"], json!(["pod-template-hash"]), "{c}");
        assert_eq!(c["whenUnsatisfiable"], "ScheduleAnyway", "{c}");
    }
    let pdb = rendered
        .iter()
        .find(|d| d["kind"] == "PodDisruptionBudget")
        .unwrap();
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], selector);
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    // One replica: a budget would block every drain, so there is none.
    let single = docs(&ok(&template("lifeboat-system", &["replicaCount=1"])));
    assert!(!single.iter().any(|d| d["kind"] == "PodDisruptionBudget"));
    // A constraint of the platform team's own is kept as written.
    let own = docs(&ok(&template_release(
        "lifeboat",
        "lifeboat-system",
        &[],
        &[
            "topologySpreadConstraints[0].maxSkew=2",
            "topologySpreadConstraints[0].topologyKey=rack",
            "topologySpreadConstraints[0].whenUnsatisfiable=DoNotSchedule",
            "topologySpreadConstraints[0].labelSelector.matchLabels.team=ops",
        ],
    )));
    assert_eq!(
        deployment(&own)["spec"]["template"]["spec"]["topologySpreadConstraints"],
        json!([{"maxSkew": 2, "topologyKey": "rack", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"team": "ops"}}}])
    );
}

#[test]
fn an_openshift_values_file_leaves_the_ids_to_the_platform_and_stays_restricted() {
    let pod_of = |files: &[&str], set: &[&str]| {
        deployment(&docs(&ok(&template_release(
            "lifeboat",
            "lifeboat-system",
            files,
            set,
        ))))["spec"]["template"]["spec"]
            .clone()
    };
    let default = pod_of(&[], &[]);
    assert_eq!(default["securityContext"]["runAsUser"], 65532);
    let openshift = pod_of(&["ci/openshift-values.yaml"], &[]);
    let sc = &openshift["securityContext"];
    for fixed in ["runAsUser", "runAsGroup", "fsGroup"] {
        assert!(sc.get(fixed).is_none(), "{fixed} in {sc}");
    }
    // Still Pod Security Standard "restricted".
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    let c = &openshift["containers"][0]["securityContext"];
    assert_eq!(c["allowPrivilegeEscalation"], false);
    assert_eq!(c["readOnlyRootFilesystem"], true);
    assert_eq!(c["capabilities"]["drop"], json!(["ALL"]));
    // The container's context is the platform team's to extend.
    let custom = pod_of(&[], &["securityContext.seLinuxOptions.level=s0:c26\\,c5"]);
    let c = &custom["containers"][0]["securityContext"];
    assert_eq!(c["seLinuxOptions"]["level"], "s0:c26,c5");
    assert_eq!(c["readOnlyRootFilesystem"], true);
}

/// The agent settings rendered manifests pass the operator, read as the operator reads its flags.
fn agent_config(rendered: &[serde_json::Value]) -> AgentConfig {
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        agent: AgentFlags,
    }
    let args = deployment(rendered)["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .filter(|a| a.starts_with("--agent-"));
    let flags: Flags =
        clap::Parser::try_parse_from(std::iter::once("operator".into()).chain(args)).unwrap();
    flags.agent.into()
}

#[test]
fn the_s3_ambient_identity_reaches_the_operator_and_keyless_locations_are_refused_unless_web_identity()
 {
    let s3_policy = |docs: &[serde_json::Value]| {
        docs.iter()
            .filter(|d| d["metadata"]["name"] == "lifeboat-s3-credentials")
            .map(|d| d["kind"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let default = docs(&ok(&template("lifeboat-system", &[])));
    assert_eq!(
        agent_config(&default).s3_ambient_identity,
        lifeboat_api::identity::AmbientIdentity::None
    );
    assert_eq!(
        s3_policy(&default),
        [
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ]
    );
    let web = docs(&ok(&template(
        "lifeboat-system",
        &["agent.s3AmbientIdentity=webIdentity"],
    )));
    assert_eq!(
        agent_config(&web).s3_ambient_identity,
        lifeboat_api::identity::AmbientIdentity::WebIdentity
    );
    assert!(s3_policy(&web).is_empty());
    // The operator's Jobs may hand agents only the chosen mode.
    let jobs = web
        .iter()
        .find(|d| d["metadata"]["name"] == "lifeboat-agent-jobs")
        .unwrap();
    let rules = serde_json::to_string(&jobs["spec"]["validations"]).unwrap();
    assert!(rules.contains(r#"e.value == \"webIdentity\""#), "{rules}");
    // Anything else is refused by the values' schema.
    let out = template("lifeboat-system", &["agent.s3AmbientIdentity=imds"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("s3AmbientIdentity"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The OpenShift values with a pull secret for the agent image, rendered.
fn openshift_with_pull_secret() -> Vec<serde_json::Value> {
    docs(&ok(&template_release(
        "lifeboat",
        "lifeboat-system",
        &["ci/openshift-values.yaml"],
        &["agent.imagePullSecrets[0].name=regcred"],
    )))
}

#[test]
fn the_agent_pods_settings_reach_the_operator_and_openshift_s_leave_the_ids_to_the_platform() {
    let default = agent_config(&docs(&ok(&template("lifeboat-system", &[]))));
    assert_eq!(default.pod_security_context, config::restricted_pod());
    assert_eq!(
        default.container_security_context,
        config::restricted_container()
    );
    assert!(default.image_pull_secrets.is_empty());

    let openshift = agent_config(&openshift_with_pull_secret());
    let psc = &openshift.pod_security_context;
    assert_eq!(
        (psc.run_as_user, psc.run_as_group, psc.fs_group),
        (None, None, None),
        "the SCC assigns the ids"
    );
    // Still Pod Security Standard "restricted".
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    assert_eq!(
        openshift.container_security_context,
        config::restricted_container()
    );
    assert_eq!(openshift.image_pull_secrets, ["regcred"]);
}

#[tokio::test]
async fn under_openshift_values_the_operator_s_job_is_admitted_as_restricted_and_pulls_with_the_secrets()
 {
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::{Event, Pod};
    use kube::api::{ListParams, Patch, PatchParams};

    // The operator's controllers, as the chart's account, with the flags the chart renders; the
    // namespace enforces Pod Security "restricted".
    let h = harness_with_agent(
        "pods-openshift",
        agent_config(&openshift_with_pull_secret()),
    )
    .await;
    let spec = json!({
        "schedule": "0 3 * * *",
        "assets": [{"name": "orders", "postgres": {"host": "db", "user": "backup",
                    "databases": ["orders"], "passwordSecret": {"name": "db", "key": "pw"}}}],
        "retention": {"keepLast": 3},
        "destination": {"volume": {"claimName": "backups"}},
        "podTemplate": {
            "imagePullSecrets": [{"name": "team-mirror"}, {"name": "regcred"}],
            "securityContext": {"runAsUser": 1000680000, "fsGroup": 1000680000,
                                "seLinuxLevel": "s0:c26,c5"}
        }
    });
    h.apply_policy("shop", spec.clone()).await;
    h.api::<lifeboat_api::BackupPolicy>()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"lifeboat.dev/backup-now": "now"}}})),
        )
        .await
        .unwrap();
    let jobs = h.api::<Job>();
    let job = h
        .until("the operator's on-demand Job", async || {
            jobs.list(&ListParams::default()).await.unwrap().items.pop()
        })
        .await;
    let job_name = job.metadata.name.clone().unwrap();
    // The Job controller made its pod: PodSecurity admission let it in.
    let pods = h.api::<Pod>();
    let pod = h
        .until("the Job's pod, admitted", async || {
            pods.list(&ListParams::default().labels(&format!("job-name={job_name}")))
                .await
                .unwrap()
                .items
                .pop()
        })
        .await;
    let pod = pod.spec.unwrap();
    let pull: Vec<&str> = pod
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(pull, ["regcred", "team-mirror"]);
    let psc = pod.security_context.unwrap();
    assert_eq!(psc.run_as_user, Some(1000680000));
    assert_eq!(psc.fs_group, Some(1000680000));
    assert_eq!(psc.run_as_group, None);
    assert_eq!(
        psc.se_linux_options.unwrap().level.as_deref(),
        Some("s0:c26,c5")
    );

    // The namespace does refuse what is not "restricted": the same pod template without its
    // seccomp profile, as a Job of the test's own, gets no pod.
    let mut job_spec = job.spec.clone().unwrap();
    // The server's selector and labels name the operator's Job; the controller sets new ones.
    job_spec.selector = None;
    job_spec.template.metadata = None;
    let pod_context = job_spec.template.spec.as_mut().unwrap();
    pod_context
        .security_context
        .as_mut()
        .unwrap()
        .seccomp_profile = None;
    let unconfined = Job {
        metadata: kube::api::ObjectMeta {
            name: Some("not-restricted".into()),
            ..Default::default()
        },
        spec: Some(job_spec),
        status: None,
    };
    jobs.create(&Default::default(), &unconfined).await.unwrap();
    let refused = h
        .until("the Job controller's FailedCreate", async || {
            h.api::<Event>()
                .list(&ListParams::default().fields("involvedObject.name=not-restricted"))
                .await
                .unwrap()
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("FailedCreate"))
        })
        .await;
    assert!(
        refused
            .message
            .unwrap_or_default()
            .contains("violates PodSecurity \"restricted"),
    );

    // A team cannot write root or privileged mode into its pods: the schema refuses them.
    for (field, value) in [("runAsUser", json!(0)), ("privileged", json!(true))] {
        let mut hostile = spec.clone();
        hostile["podTemplate"]["securityContext"][field] = value;
        let refused = h
            .api::<lifeboat_api::BackupPolicy>()
            .patch(
                "shop",
                &PatchParams::apply("test-user").validation_strict(),
                &Patch::Apply(json!({
                    "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
                    "metadata": {"name": "shop"}, "spec": hostile
                })),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains(field), "{refused}");
    }
}

#[test]
fn two_releases_in_one_namespace_elect_their_leaders_on_different_leases() {
    let lease = |release: &str, set: &[&str]| -> Option<String> {
        let rendered = docs(&ok(&template_release(release, "ops", &[], set)));
        deployment(&rendered)["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a.as_str()?.strip_prefix("--lease-name="))
            .map(str::to_owned)
            .next()
    };
    let a = lease("team-a", &[]).unwrap();
    let b = lease("team-b", &[]).unwrap();
    assert_ne!(a, b);
    // The default release keeps the Lease earlier versions held: an upgrade has one leader.
    assert_eq!(lease("lifeboat", &[]).unwrap(), "lifeboat-operator");
    assert_eq!(lease("lifeboat", &["leaderElection.enabled=false"]), None);
}

/// Mebibytes of a Kubernetes memory quantity with a binary suffix.
fn mib(quantity: &str) -> f64 {
    let (n, unit) = quantity.split_at(quantity.find(|c: char| c.is_alphabetic()).unwrap());
    let n: f64 = n.parse().unwrap();
    match unit {
        "Mi" => n,
        "Gi" => n * 1024.0,
        other => panic!("unexpected unit {other}"),
    }
}

#[test]
fn the_operators_memory_limit_is_above_its_measured_peak_at_10000_policies() {
    // The peak is the highest of the lifeboat-operator's 10,000-policy runs in the benchmark
    // table of docs/performance.md (`make bench-operator`): the cell reads `median (min–max)`.
    let perf = std::fs::read_to_string(repo().join("docs/performance.md")).unwrap();
    let header = perf
        .lines()
        .find(|l| l.starts_with("| Policies | Operator |"))
        .expect("the operator benchmark table");
    let column = header
        .split('|')
        .position(|c| c.trim() == "Peak RSS (MiB)")
        .expect("a Peak RSS column");
    let peak = perf
        .lines()
        .filter(|l| l.starts_with("| 10000 | lifeboat-operator |"))
        .filter_map(|l| l.split('|').nth(column))
        .flat_map(|cell| cell.split(|c: char| !c.is_ascii_digit() && c != '.'))
        .filter_map(|n| n.parse::<f64>().ok())
        .fold(0.0, f64::max);
    assert!(peak >= 50.0, "no 10,000-policy peak found: {peak}");
    let rendered = docs(&ok(&template("lifeboat-system", &[])));
    let resources =
        &deployment(&rendered)["spec"]["template"]["spec"]["containers"][0]["resources"];
    let limit = mib(resources["limits"]["memory"].as_str().unwrap());
    assert!(
        limit >= peak * 1.25,
        "limit {limit} MiB leaves under 25% over the measured peak {peak} MiB"
    );
}

/// `hack/chart-readme.sh OUT VALUES`.
fn chart_readme(out: &Path, values: &Path) -> Output {
    run(Command::new("bash")
        .arg(repo().join("hack/chart-readme.sh"))
        .arg(out)
        .arg(values))
}

#[test]
fn the_chart_readme_lists_every_value_with_its_default_and_is_generated() {
    let values_path = repo().join("charts/lifeboat/values.yaml");
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("README.md");
    ok(&chart_readme(&fresh, &values_path));
    let committed = std::fs::read_to_string(repo().join("charts/lifeboat/README.md")).unwrap();
    assert!(
        std::fs::read_to_string(&fresh).unwrap() == committed,
        "charts/lifeboat/README.md differs from values.yaml; run `bash hack/chart-readme.sh` and commit"
    );

    // The generator reads values.yaml line by line; a YAML parser checks what it wrote: every
    // value is listed, and each default is the value's.
    let text = std::fs::read_to_string(&values_path).unwrap();
    let values: serde_json::Value = serde_norway::from_str(&text).unwrap();
    let rows: Vec<(String, String)> = committed
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .map(|l| {
            let (key, rest) = l.split_once("` | ").unwrap();
            let default = rest.split(" | ").next().unwrap().trim_matches('`');
            (key.to_owned(), default.to_owned())
        })
        .collect();
    let at = |key: &str| {
        key.split('.')
            .fold(&values, |v, k| v.get(k).unwrap_or_else(|| panic!("{key}")))
    };
    let mut listed = 0;
    for (key, default) in rows.iter().filter(|(_, d)| !d.is_empty()) {
        let parsed: serde_json::Value = serde_norway::from_str(default).unwrap();
        assert_eq!(&parsed, at(key), "the default of {key}");
        listed += 1;
    }
    fn leaves(v: &serde_json::Value, path: String, out: &mut Vec<String>) {
        match v.as_object() {
            Some(map) if !map.is_empty() => {
                for (k, child) in map {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    leaves(child, p, out);
                }
            }
            _ => out.push(path),
        }
    }
    let mut all = Vec::new();
    leaves(&values, String::new(), &mut all);
    for leaf in &all {
        assert!(
            rows.iter().any(|(key, default)| !default.is_empty()
                && (leaf == key || leaf.starts_with(&format!("{key}.")))),
            "{leaf} is not in the chart README"
        );
    }
    assert!(listed >= 40, "{listed} values listed");

    // A value without a comment is refused, not listed without a description.
    let bare = dir.path().join("values.yaml");
    std::fs::write(&bare, format!("{text}\nundocumented: 1\n")).unwrap();
    let out = chart_readme(&dir.path().join("bare.md"), &bare);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("undocumented has no comment"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
