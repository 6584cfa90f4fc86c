//! A control plane owned by a test stops every process it started when dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

/// Pids of live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(Path::new("/proc").join(pid.to_string()).join("cmdline"))
        else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            out.push(pid);
        }
    }
    out
}

#[tokio::test]
async fn dropping_a_control_plane_stops_its_processes_and_removes_its_files() {
    if lifeboat_testenv::use_existing_cluster() {
        return; // nothing of ours to tear down
    }
    let cp = lifeboat_testenv::ControlPlane::start(true).await.unwrap();
    let client = cp.client().await.unwrap();
    assert!(
        client
            .apiserver_version()
            .await
            .unwrap()
            .git_version
            .starts_with("v1.")
    );
    let kubeconfig = cp.kubeconfig().to_path_buf();
    let dir = kubeconfig.parent().unwrap().to_path_buf();
    let marker = dir.display().to_string();
    assert!(
        processes_mentioning(&marker).len() >= 3,
        "etcd, apiserver and controller-manager run"
    );
    drop(cp);
    assert!(
        processes_mentioning(&marker).is_empty(),
        "processes survived the drop"
    );
    assert!(!dir.exists(), "{} survived the drop", dir.display());
}
