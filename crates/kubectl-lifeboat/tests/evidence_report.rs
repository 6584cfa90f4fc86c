//! `kubectl lifeboat report --evidence`: the binary, on a directory laid out like a backup
//! volume, with no cluster at all (a kubeconfig that points nowhere).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::json;

fn record(id: &str, at: &str, verdict: &str, rto: f64) -> serde_json::Value {
    json!({"schemaVersion": 1, "drillId": id, "policy": "shop", "agentVersion": "0.1.0",
        "startedAt": at, "disasterAt": at, "finishedAt": at, "verdict": verdict,
        "objectives": {"rtoSeconds": 1800, "rpoSeconds": 900},
        "achieved": {"rtoSeconds": rto, "rpoSeconds": 30.0, "rtoMet": rto <= 1800.0, "rpoMet": true},
        "restored": [{"asset": "orders-db", "backupId": "20261124T060000Z",
                      "snapshotTime": at, "target": "postgres://staging:5432/shop",
                      "artifacts": [{"name": "orders-db.dump.zst", "storedBytes": 10,
                                     "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}]}],
        "checks": [{"name": "orders-present", "passed": verdict == "Passed"}],
        "steps": [{"name": "restore orders-db", "startedAt": at, "seconds": rto}],
        "message": if verdict == "Passed" { "" } else { "check orders-present failed" }})
}

#[test]
fn a_period_of_drills_is_reported_from_their_records_without_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let shop = dir.path().join("backups/shop");
    std::fs::create_dir_all(shop.join("20261124T060000Z")).unwrap();
    let now = jiff::Timestamp::now();
    let recent = |days: i64| (now - jiff::SignedDuration::from_hours(24 * days)).to_string();
    for (id, at, verdict, rto) in [
        ("q-a", recent(60), "Passed", 600.0),
        ("q-b", recent(30), "Passed", 700.0),
        ("q-c", recent(2), "Failed", 90.0),
        ("q-old", recent(400), "Passed", 100.0),
    ] {
        std::fs::write(
            shop.join(format!("drill-{id}.json")),
            serde_json::to_vec_pretty(&record(id, &at, verdict, rto)).unwrap(),
        )
        .unwrap();
    }
    // Not evidence: a backup's metadata is never read as a drill.
    std::fs::write(shop.join("20261124T060000Z/orders-db.metadata.json"), "{}").unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-lifeboat"))
        .env("KUBECONFIG", dir.path().join("no-such-kubeconfig"))
        .args(["report", "--since", "90d", "--evidence"])
        .arg(dir.path().join("backups"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("- Drills: 3"), "the quarter only: {stdout}");
    assert!(stdout.contains("- Passed: 2 (67%)"), "{stdout}");
    assert!(
        stdout.contains("- MTTR (mean achieved RTO of the drills that restored): 10m50s"),
        "{stdout}"
    );
    assert!(stdout.contains("q-c of shop"), "{stdout}");
    assert!(
        stdout.contains("failed: check orders-present failed"),
        "{stdout}"
    );
    assert!(!stdout.contains("q-old"), "{stdout}");

    // The same summary for scripts: JSON and YAML, each record with the file it came from.
    for format in ["json", "yaml"] {
        let out = Command::new(env!("CARGO_BIN_EXE_kubectl-lifeboat"))
            .env("KUBECONFIG", dir.path().join("no-such-kubeconfig"))
            .args(["report", "--since", "90d", "-o", format, "--evidence"])
            .arg(dir.path().join("backups"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value = serde_norway::from_slice(&out.stdout).unwrap();
        let drills = summary["drills"].as_array().unwrap();
        let ids: Vec<&str> = drills
            .iter()
            .map(|d| d["record"]["drillId"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["q-a", "q-b", "q-c"], "{format}");
        assert!(
            drills[0]["file"]
                .as_str()
                .unwrap()
                .ends_with("drill-q-a.json")
        );
        assert_eq!(summary["passed"], 2);
        assert_eq!(summary["mttrSeconds"], 650.0);
    }

    // An unreadable directory is an error that says which.
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-lifeboat"))
        .args(["report", "--evidence"])
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
}
