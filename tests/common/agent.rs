//! The agent's part of a Job the tests play by hand, where the agent's own code can run in the
//! test process: the tests crate links the agent; the operator's own tests (which share the
//! harness) do not.

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use lifeboat_api::agent_result::AgentSummary;

use crate::harness::Harness;

/// Runs a notify Job's pod as the kubelet and the agent would: the Secret keys its pod
/// mounts (optional: a missing one is no file) written as files, the agent's `notify` code
/// run on its LIFEBOAT_JOB document, and the Job finished with the summary the agent
/// writes. Returns that summary.
pub async fn run_notify_job(h: &Harness, job: &str) -> AgentSummary {
    use lifeboat_api::agent_job::{AgentNotifyJob, JOB_ENV};
    use lifeboat_api::agent_result::{SUMMARY_VERSION, Verb};
    let j = h.api::<Job>().get(job).await.unwrap();
    let pod = j.spec.unwrap().template.spec.unwrap();
    let doc = pod.containers[0]
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == JOB_ENV)
        .and_then(|e| e.value.clone())
        .unwrap();
    let doc: AgentNotifyJob = serde_json::from_str(&doc).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for v in pod.volumes.unwrap_or_default() {
        let Some(secret) = v.secret else { continue };
        let name = secret.secret_name.unwrap();
        let Some(found) = h.api::<Secret>().get_opt(&name).await.unwrap() else {
            assert_eq!(
                secret.optional,
                Some(true),
                "a missing Secret holds the pod"
            );
            continue;
        };
        let data = found.data.unwrap_or_default();
        for item in secret.items.unwrap_or_default() {
            if let Some(value) = data.get(&item.key) {
                std::fs::create_dir_all(dir.path().join(&name)).unwrap();
                std::fs::write(dir.path().join(&name).join(&item.path), &value.0).unwrap();
            }
        }
    }
    // The notify verb reads no backup: no store, no signing key.
    let env = lifeboat_agent::jobs::Env::without_store(dir.path().to_owned());
    let started = Timestamp::now();
    // The agent blocks on a runtime of its own: on a thread of its own, awaited without
    // blocking this test's runtime (a receiver on it may be what the agent calls).
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(lifeboat_agent::notify::send(&env, &doc));
    });
    let result = rx.await.unwrap();
    let summary = AgentSummary {
        version: SUMMARY_VERSION,
        verb: Verb::Notify,
        ok: result.is_ok(),
        asset: None,
        backup_id: None,
        started_at: started,
        finished_at: Timestamp::now(),
        snapshot_time: None,
        stored_bytes: None,
        sha256: None,
        error_class: result.as_ref().err().map(|e| e.class),
        message: result.err().map(|e| e.message),
        checks: Vec::new(),
        retention_refused: None,
        copies: Vec::new(),
    };
    h.finish_job(job, &summary).await;
    summary
}
