//! The Argo CD health scripts in deploy/gitops/argocd, run in Lua 5.1 (the dialect of the
//! gopher-lua interpreter Argo CD embeds) against objects shaped as the operator writes them;
//! the Flux HelmRelease example applied on the real control plane under Flux's own CRDs (a
//! control plane of this binary's own: CRDs registered while other tests ask helm for the API
//! server's discovery would race them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mlua::{Lua, LuaSerdeExt, SerializeOptions};
use serde_json::{Value, json};

fn health(kind: &str, obj: &Value) -> (String, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/gitops/argocd")
        .join(format!("{kind}.lua"));
    let script = std::fs::read_to_string(&path).unwrap();
    let lua = Lua::new();
    // Absent fields are nil, as Argo CD hands objects to the scripts.
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    lua.globals()
        .set("obj", lua.to_value_with(obj, options).unwrap())
        .unwrap();
    let hs: mlua::Table = lua.load(&script).set_name(kind).eval().unwrap();
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}

fn ready(status: &str, reason: &str, message: &str) -> Value {
    json!({"type": "Ready", "status": status, "reason": reason, "message": message})
}

#[test]
fn backup_policy_health_follows_ready_and_observed_generation() {
    let fresh = json!({"metadata": {"generation": 1}});
    assert_eq!(health("backuppolicy", &fresh).0, "Progressing");
    let good = json!({"metadata": {"generation": 2}, "status": {"observedGeneration": 2,
        "conditions": [ready("True", "BackupsSucceeding", "every asset backed up"),
                       {"type": "RPOMet", "status": "True", "reason": "WithinObjective", "message": ""}]}});
    assert_eq!(health("backuppolicy", &good).0, "Healthy");
    let stale = json!({"metadata": {"generation": 3}, "status": good["status"].clone()});
    assert_eq!(health("backuppolicy", &stale).0, "Progressing");
    let failing = json!({"metadata": {"generation": 2}, "status": {"observedGeneration": 2,
        "conditions": [ready("False", "SecretNotFound", "Secret \"db\" not found"),
                       {"type": "RPOMet", "status": "False", "reason": "NoBackupYet", "message": "no good backup yet"}]}});
    let (status, message) = health("backuppolicy", &failing);
    assert_eq!(status, "Degraded");
    assert!(
        message.starts_with("SecretNotFound: Secret \"db\" not found"),
        "{message}"
    );
    assert!(message.contains("RPO: no good backup yet"), "{message}");
}

#[test]
fn restore_request_health_follows_its_phase() {
    let phase = |p: &str| {
        json!({"metadata": {"generation": 1}, "status": {"phase": p, "rto": "4m10s",
            "conditions": [ready("False", "RolledBack", "ValidationFailed: orders-present")]}})
    };
    assert_eq!(
        health("restorerequest", &json!({"metadata": {}})).0,
        "Progressing"
    );
    assert_eq!(health("restorerequest", &phase("Planned")).0, "Suspended");
    assert_eq!(
        health("restorerequest", &phase("Restoring")).0,
        "Progressing"
    );
    assert_eq!(
        health("restorerequest", &phase("RollingBack")).0,
        "Progressing"
    );
    let (s, m) = health("restorerequest", &phase("Succeeded"));
    assert_eq!(
        (s.as_str(), m.as_str()),
        ("Healthy", "restored and validated in 4m10s")
    );
    let (s, m) = health("restorerequest", &phase("RolledBack"));
    assert_eq!(s, "Degraded");
    assert!(m.contains("ValidationFailed: orders-present"), "{m}");
    assert_eq!(health("restorerequest", &phase("Failed")).0, "Degraded");
}

#[test]
fn drill_schedule_health_is_degraded_when_a_drill_misses_its_objectives() {
    let drill = |c: Value| json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [c]}});
    assert_eq!(
        health(
            "drillschedule",
            &drill(ready("True", "DrillPassed", "RTO 4m, RPO 2m"))
        )
        .0,
        "Healthy"
    );
    let (s, m) = health(
        "drillschedule",
        &drill(ready("False", "ObjectivesMissed", "RTO 41m over 30m")),
    );
    assert_eq!(s, "Degraded");
    assert_eq!(m, "ObjectivesMissed: RTO 41m over 30m");
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The path a hack/tools script prints, after it built or fetched what it names.
fn tool(script: &str) -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join("hack/tools").join(script))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn kubectl() -> Command {
    let env = lifeboat_testenv::shared().unwrap();
    let mut cmd = Command::new(lifeboat_testenv::kubectl().unwrap());
    if let Some(k) = env.kubeconfig() {
        cmd.env("KUBECONFIG", k);
    }
    cmd
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespace the example installs Lifeboat in.
const RELEASE_NAMESPACE: &str = "lifeboat-system";

#[tokio::test]
async fn the_flux_helm_release_is_accepted_by_flux_s_crds_and_its_chart_and_values_exist() {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::Api;
    use kube::api::{Patch, PatchParams};
    let env = lifeboat_testenv::shared().unwrap();
    let client = env.client().await.unwrap();
    let crds = tool("flux-crds.sh");
    ok(kubectl()
        .args(["apply", "--server-side", "-f"])
        .arg(crds.join("helm.toolkit.fluxcd.io_helmreleases.yaml"))
        .arg("-f")
        .arg(crds.join("source.toolkit.fluxcd.io_gitrepositories.yaml"))
        .output()
        .unwrap());
    ok(kubectl()
        .args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/helmreleases.helm.toolkit.fluxcd.io",
            "crd/gitrepositories.source.toolkit.fluxcd.io",
        ])
        .output()
        .unwrap());
    for ns in ["flux-system", RELEASE_NAMESPACE] {
        Api::<Namespace>::all(client.clone())
            .patch(
                ns,
                &PatchParams::apply("lifeboat-gitops-test"),
                &Patch::Apply(
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                ),
            )
            .await
            .unwrap();
    }
    let example = repo().join("deploy/gitops/flux-helmrelease.yaml");
    let out = ok(kubectl()
        .args([
            "apply",
            "--server-side",
            "--field-manager",
            "lifeboat-gitops-test",
            "-f",
        ])
        .arg(&example)
        .output()
        .unwrap());
    assert!(
        out.contains("gitrepository.source.toolkit.fluxcd.io/lifeboat serverside-applied"),
        "{out}"
    );
    assert!(
        out.contains("helmrelease.helm.toolkit.fluxcd.io/lifeboat serverside-applied"),
        "{out}"
    );

    // As stored: the HelmRelease's source is the GitRepository applied with it, and its chart
    // is this repository's chart at that path, which the source's ignore rules keep.
    let get = |what: &[&str]| -> Value {
        serde_json::from_str(&ok(kubectl()
            .args(what)
            .args(["-o", "json"])
            .output()
            .unwrap()))
        .unwrap()
    };
    let release = get(&["get", "helmrelease", "lifeboat", "-n", RELEASE_NAMESPACE]);
    let chart = &release["spec"]["chart"]["spec"];
    let source = &chart["sourceRef"];
    assert_eq!(source["kind"], "GitRepository");
    let git = get(&[
        "get",
        "gitrepository",
        source["name"].as_str().unwrap(),
        "-n",
        source["namespace"].as_str().unwrap(),
    ]);
    assert_eq!(git["spec"]["ref"]["branch"], "main");
    let chart_path = chart["chart"].as_str().unwrap();
    let chart_dir = repo().join(chart_path);
    let chart_yaml = std::fs::read_to_string(chart_dir.join("Chart.yaml")).unwrap();
    assert!(chart_yaml.contains("name: lifeboat"), "{chart_yaml}");
    let ignore = git["spec"]["ignore"].as_str().unwrap();
    assert!(
        ignore.contains(&format!("!/{}/", chart_path.trim_start_matches("./"))),
        "{ignore}"
    );

    // Its values render with the chart (values.schema.json included), as helm-controller would.
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.json");
    std::fs::write(&values, release["spec"]["values"].to_string()).unwrap();
    let rendered = ok(Command::new(tool("helm.sh"))
        .args(["template", "lifeboat"])
        .arg(&chart_dir)
        .args(["--namespace", RELEASE_NAMESPACE, "-f"])
        .arg(&values)
        .output()
        .unwrap());
    assert!(
        rendered.contains("--webhook-allowed-hosts=hooks.slack.com"),
        "the release's values reach the operator"
    );

    // Flux's schema is the real one: a source kind it does not know is refused.
    let text = std::fs::read_to_string(&example).unwrap().replace(
        "kind: GitRepository\n        name: lifeboat",
        "kind: GitRepo\n        name: lifeboat",
    );
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, text).unwrap();
    let out = kubectl()
        .args(["apply", "--server-side", "--dry-run=server", "-f"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.chart.spec.sourceRef.kind"), "{err}");
}
