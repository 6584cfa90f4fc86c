//! The Argo CD health scripts in deploy/gitops/argocd, run in Lua 5.1 (the dialect of the
//! gopher-lua interpreter Argo CD embeds) against objects shaped as the operator writes them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

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
