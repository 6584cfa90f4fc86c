//! A namespace with Lifeboat's controllers running in-process against the shared control plane,
//! and the kubelet's part of a Job's life played by hand (no node runs pods here).

#![allow(dead_code)] // each test binary uses a different part

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use lifeboat_api::BackupPolicy;
use lifeboat_api::agent_result::{AgentSummary, TerminationMessage};
use lifeboat_operator::config::AgentConfig;
use lifeboat_operator::context::Context;
use lifeboat_operator::metrics::Metrics;
use lifeboat_operator::signing_key::MasterKeySecret;
use serde_json::{Value, json};

pub struct Harness {
    pub client: Client,
    /// The operator's client: the chart's ServiceAccount, impersonated.
    pub operator: Client,
    pub ns: String,
    pub metrics: Metrics,
    /// The master signing key Secret the controllers read (in [`CHART_NAMESPACE`]).
    master_key: String,
    /// How the controllers build agent pods (the chart's defaults unless a test says).
    agent: AgentConfig,
    /// How long the controllers leave published Events listed (the operator's default if None).
    linger: Option<Duration>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A namespace with the controller running, scoped to it.
pub async fn harness(prefix: &str) -> Harness {
    harness_with_master_key(prefix, MASTER_KEY_SECRET).await
}

/// [`harness`] with controllers reading the master signing key from Secret `master_key` (one
/// that does not exist plays a platform team that has not provided it).
pub async fn harness_with_master_key(prefix: &str, master_key: &str) -> Harness {
    harness_with(prefix, master_key, AgentConfig::default()).await
}

/// [`harness`] with controllers building agent pods as `agent` says (the platform team's
/// settings, e.g. parsed from the chart's rendered flags).
pub async fn harness_with_agent(prefix: &str, agent: AgentConfig) -> Harness {
    harness_with(prefix, MASTER_KEY_SECRET, agent).await
}

async fn harness_with(prefix: &str, master_key: &str, agent: AgentConfig) -> Harness {
    // RUST_LOG=lifeboat_operator=debug shows the controllers' logs in a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let env = lifeboat_testenv::shared().expect("control plane");
    let client = env.client().await.unwrap();
    let ns = env.namespace(&client, prefix).await.unwrap();
    enforce_restricted_pod_security(&client, &ns).await;
    install_chart_rbac(&client).await;
    install_master_key(&client, CHART_NAMESPACE).await;
    let operator = env
        .client_as_service_account(CHART_NAMESPACE, CHART_SERVICE_ACCOUNT)
        .await
        .unwrap();
    start_operator(client, operator, ns, master_key.to_owned(), agent, None)
}

/// The controllers running scoped to namespace `ns`, which the test created itself because its
/// objects name it (the examples' `shop`), enforcing Pod Security "restricted" like [`harness`]'s.
pub async fn harness_named(ns: &str) -> Harness {
    let env = lifeboat_testenv::shared().expect("control plane");
    let client = env.client().await.unwrap();
    enforce_restricted_pod_security(&client, ns).await;
    install_chart_rbac(&client).await;
    install_master_key(&client, CHART_NAMESPACE).await;
    let operator = env
        .client_as_service_account(CHART_NAMESPACE, CHART_SERVICE_ACCOUNT)
        .await
        .unwrap();
    start_operator(
        client,
        operator,
        ns.to_owned(),
        MASTER_KEY_SECRET.to_owned(),
        AgentConfig::default(),
        None,
    )
}

/// The controllers on a new namespace of `env` (a control plane of the test's own), acting with
/// its admin client: no chart RBAC and no admission policy installed, so only the controllers
/// stand between a resource and its Jobs (a resource older than the policy, or a cluster
/// installed without it).
pub async fn harness_without_admission(
    env: &lifeboat_testenv::TestEnv,
    prefix: &str,
    agent: AgentConfig,
) -> Harness {
    let client = env.client().await.unwrap();
    let ns = env.namespace(&client, prefix).await.unwrap();
    install_master_key(&client, CHART_NAMESPACE).await;
    start_operator(
        client.clone(),
        client,
        ns,
        MASTER_KEY_SECRET.to_owned(),
        agent,
        None,
    )
}

/// A namespace like [`harness`]'s with no controllers in this process: for tests that run the
/// operator as a process of its own (and kill it). The Harness still plays the kubelet.
pub async fn without_operator(prefix: &str) -> Harness {
    let env = lifeboat_testenv::shared().expect("control plane");
    let client = env.client().await.unwrap();
    let ns = env.namespace(&client, prefix).await.unwrap();
    enforce_restricted_pod_security(&client, &ns).await;
    install_master_key(&client, CHART_NAMESPACE).await;
    let (stop, _) = tokio::sync::oneshot::channel::<()>();
    Harness {
        operator: client.clone(),
        client,
        ns,
        metrics: Metrics::new().unwrap(),
        master_key: MASTER_KEY_SECRET.to_owned(),
        agent: AgentConfig::default(),
        linger: None,
        _stop: stop,
    }
}

/// A harness on a control plane of the test's own (`client` is its admin), with no controllers
/// in this process: it plays the kubelet for an operator the test runs as a process.
pub fn on(client: Client, ns: &str) -> Harness {
    let (stop, _) = tokio::sync::oneshot::channel::<()>();
    Harness {
        operator: client.clone(),
        client,
        ns: ns.to_owned(),
        metrics: Metrics::new().unwrap(),
        master_key: MASTER_KEY_SECRET.to_owned(),
        agent: AgentConfig::default(),
        linger: None,
        _stop: stop,
    }
}

/// Labels `ns` so that the API server's PodSecurity admission refuses any pod that does not meet
/// the "restricted" standard: every pod the Jobs of these tests create must pass it, or the test
/// waiting for that pod fails.
pub async fn enforce_restricted_pod_security(admin: &Client, ns: &str) {
    use k8s_openapi::api::core::v1::Namespace;
    let labels = json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest"
    }}});
    Api::<Namespace>::all(admin.clone())
        .patch(ns, &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .unwrap();
}

/// A webhook receiver on loopback that answers every request 200 and keeps each body: returns
/// its URL (with a token in the path, as a Slack webhook has) and the bodies so far.
pub async fn webhook_receiver(token: &str) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/services/T000/B000/{token}",
        listener.local_addr().unwrap()
    );
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = bodies.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        kept.lock().unwrap().push(body.to_owned());
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
        }
    });
    (url, bodies)
}

/// Where `kubectl apply -k deploy/` (and the chart with the same release) puts the operator.
pub const CHART_NAMESPACE: &str = "lifeboat-system";
pub const CHART_SERVICE_ACCOUNT: &str = "lifeboat";
/// The master signing key Secret of the chart's release (deploy/ leaves it to the platform team,
/// as every test here plays it).
pub const MASTER_KEY_SECRET: &str = "lifeboat-signing-master-key";
/// The tests' master key: any 32 bytes or more.
pub const MASTER_KEY: &[u8] = b"the lifeboat tests' master signing key, 32 bytes or more";

/// Creates the master signing key Secret in `namespace` (and the namespace) unless it is there.
pub async fn install_master_key(admin: &Client, namespace: &str) {
    use k8s_openapi::api::core::v1::Namespace;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
    Api::<Namespace>::all(admin.clone())
        .patch(
            namespace,
            &PatchParams::apply("lifeboat-tests"),
            &Patch::Apply(&ns),
        )
        .await
        .unwrap();
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": MASTER_KEY_SECRET},
        "data": {"key": k8s_openapi::ByteString(MASTER_KEY.to_vec())}
    }))
    .unwrap();
    match Api::<Secret>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &s)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating the master signing key: {e}"),
    }
}

/// The signing key the operator derives for `namespace` from [`MASTER_KEY`]: what its agent
/// Jobs sign with.
pub fn namespace_key(namespace: &str) -> Vec<u8> {
    lifeboat_operator::signing_key::derive(MASTER_KEY, namespace).unwrap()
}

/// Applies the ServiceAccount, RBAC and admission policy the chart renders
/// (deploy/generated/lifeboat.yaml, kept equal to `helm template` by tests/helm_chart.rs). Every
/// operator test then runs the controllers as that account, so a permission the chart lacks, or
/// a Job its admission policy refuses, fails the tests that need it.
pub async fn install_chart_rbac(admin: &Client) {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    let pp = PatchParams::apply("lifeboat-tests").force();
    let ns =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CHART_NAMESPACE}});
    Api::<Namespace>::all(admin.clone())
        .patch(CHART_NAMESPACE, &pp, &Patch::Apply(&ns))
        .await
        .unwrap();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/generated/lifeboat.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let obj: Value = serde::Deserialize::deserialize(doc).unwrap();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let namespaced = |c: &Client| (c.clone(), CHART_NAMESPACE);
        match obj["kind"].as_str() {
            Some("ServiceAccount") => {
                let (c, ns) = namespaced(admin);
                Api::<ServiceAccount>::namespaced(c, ns)
                    .patch(&name, &pp, &Patch::Apply(&obj))
                    .await
                    .map(|_| ())
            }
            Some("ClusterRole") => Api::<ClusterRole>::all(admin.clone())
                .patch(&name, &pp, &Patch::Apply(&obj))
                .await
                .map(|_| ()),
            Some("ClusterRoleBinding") => Api::<ClusterRoleBinding>::all(admin.clone())
                .patch(&name, &pp, &Patch::Apply(&obj))
                .await
                .map(|_| ()),
            Some("Role") => {
                let (c, ns) = namespaced(admin);
                Api::<Role>::namespaced(c, ns)
                    .patch(&name, &pp, &Patch::Apply(&obj))
                    .await
                    .map(|_| ())
            }
            Some("RoleBinding") => {
                let (c, ns) = namespaced(admin);
                Api::<RoleBinding>::namespaced(c, ns)
                    .patch(&name, &pp, &Patch::Apply(&obj))
                    .await
                    .map(|_| ())
            }
            Some("ValidatingAdmissionPolicy") => {
                Api::<ValidatingAdmissionPolicy>::all(admin.clone())
                    .patch(&name, &pp, &Patch::Apply(&obj))
                    .await
                    .map(|_| ())
            }
            Some("ValidatingAdmissionPolicyBinding") => {
                Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone())
                    .patch(&name, &pp, &Patch::Apply(&obj))
                    .await
                    .map(|_| ())
            }
            _ => Ok(()),
        }
        .unwrap();
    }
}

/// The operator's controllers on `ns`, in this test's runtime, until the Harness is dropped.
/// `client` is the test's own (admin, playing the kubelet); `operator` is the controllers'.
fn start_operator(
    client: Client,
    operator: Client,
    ns: String,
    master_key: String,
    agent: AgentConfig,
    linger: Option<Duration>,
) -> Harness {
    let metrics = Metrics::new().unwrap();
    let mut ctx = Context::new(operator.clone(), metrics.clone(), agent.clone())
        .with_signing_key(MasterKeySecret::new(CHART_NAMESPACE, &master_key).unwrap());
    if let Some(linger) = linger {
        ctx.published = lifeboat_operator::effects::Published::lingering(linger);
    }
    let ctx = Arc::new(ctx);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(lifeboat_operator::run(ctx, Some(ns.clone()), async move {
        let _ = stopped.await;
    }));
    Harness {
        client,
        operator,
        ns,
        metrics,
        master_key,
        agent,
        linger,
        _stop: stop,
    }
}

impl Harness {
    /// Stops this harness's controllers and starts new ones on the same namespace: an operator
    /// restart (kill and start) without losing the cluster's state.
    pub async fn restart(self) -> Harness {
        let Harness {
            client,
            operator,
            ns,
            master_key,
            agent,
            linger,
            _stop,
            ..
        } = self;
        drop(_stop);
        // Let the old controllers see the shutdown before the new ones start.
        tokio::time::sleep(Duration::from_millis(300)).await;
        start_operator(client, operator, ns, master_key, agent, linger)
    }

    /// [`Harness::restart`] with controllers that leave published Events listed for `linger`
    /// (crate `lifeboat_operator::effects::LINGER`) instead of minutes.
    pub async fn restart_with_linger(mut self, linger: Duration) -> Harness {
        self.linger = Some(linger);
        self.restart().await
    }

    pub fn api<K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>>(
        &self,
    ) -> Api<K> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn secret(&self, name: &str) {
        let s: Secret = serde_json::from_value(
            json!({"metadata": {"name": name}, "stringData": {"password": "s3cr3t-value"}}),
        )
        .unwrap();
        self.api::<Secret>()
            .create(&PostParams::default(), &s)
            .await
            .unwrap();
    }

    pub async fn apply_policy(&self, name: &str, spec: Value) {
        let obj = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy", "metadata": {"name": name}, "spec": spec});
        self.api::<BackupPolicy>()
            .patch(name, &PatchParams::apply("test-user"), &Patch::Apply(&obj))
            .await
            .unwrap();
    }

    pub async fn policy_until(
        &self,
        name: &str,
        what: &str,
        f: impl Fn(&BackupPolicy) -> bool,
    ) -> BackupPolicy {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(p) = self.api::<BackupPolicy>().get_opt(name).await.unwrap()
                && f(&p)
            {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:#?}",
                self.api::<BackupPolicy>().get(name).await.unwrap().status
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn until<T>(&self, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = f().await {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What `kubectl create job --from=cronjob/NAME` does: a Job from the CronJob's template.
    pub async fn run_cronjob(&self, cronjob: &str, job: &str) {
        let cj = self.api::<CronJob>().get(cronjob).await.unwrap();
        let owner = cj.controller_owner_ref(&()).unwrap();
        let template = cj.spec.unwrap().job_template;
        let j = Job {
            metadata: kube::api::ObjectMeta {
                name: Some(job.into()),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                annotations: template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.annotations.clone()),
                owner_references: Some(vec![owner]),
                ..Default::default()
            },
            spec: template.spec,
            status: None,
        };
        self.api::<Job>()
            .create(&PostParams::default(), &j)
            .await
            .unwrap();
    }

    /// Finishes the Job's pods as a kubelet would: the agent container terminated with `summary`
    /// as its termination message. Retried pods (the backoff limit) are finished the same way
    /// until the Job controller concludes the Job.
    pub async fn finish_job(&self, job: &str, summary: &AgentSummary) {
        self.finish_job_with(
            job,
            &TerminationMessage {
                summary: summary.clone(),
                checks_report: None,
                catalog: None,
                point_in_time: None,
            },
        )
        .await;
    }

    /// [`Harness::finish_job`] with the whole termination message (a catalog Job's catalog).
    pub async fn finish_job_with(&self, job: &str, message: &TerminationMessage) {
        let summary = &message.summary;
        let pods = self.api::<Pod>();
        let jobs = self.api::<Job>();
        let selector = format!("batch.kubernetes.io/job-name={job}");
        let (phase, code, reason) = if summary.ok {
            ("Succeeded", 0, "Completed")
        } else {
            ("Failed", summary.error_class.unwrap().exit_code(), "Error")
        };
        let message = message.to_json().unwrap();
        self.until("the Job controller to conclude the Job", async || {
            let done = jobs.get(job).await.unwrap().status.and_then(|s| s.conditions).unwrap_or_default();
            if done.iter().any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True") {
                return Some(());
            }
            for pod in pods.list(&ListParams::default().labels(&selector)).await.unwrap() {
                if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase) {
                    continue;
                }
                let now = Timestamp::now().to_string();
                let status = json!({"status": {
                    "phase": phase,
                    "startTime": now,
                    "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
                    "containerStatuses": [{
                        "name": "agent", "image": "lifeboat-agent", "imageID": "", "ready": false,
                        "restartCount": 0, "started": false,
                        "state": {"terminated": {"exitCode": code, "reason": reason, "startedAt": now,
                                                 "finishedAt": now, "message": message}}
                    }]
                }});
                pods.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
            }
            None
        })
        .await;
    }

    /// Waits until exactly `n` Events with `reason` exist, and still `n` a moment later: Events
    /// are published after the status write a test waits for, so they are awaited too, and a
    /// duplicate arriving late still fails.
    pub async fn expect_events(&self, reason: &str, n: usize) {
        self.until(&format!("{n} {reason} Events"), async || {
            (self.events(reason).await.len() == n).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(self.events(reason).await.len(), n, "{reason} Events");
    }

    pub async fn events(&self, reason: &str) -> Vec<Event> {
        self.api::<Event>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    }
}

/// `value` and its base64 (how Secret data travels): neither may appear in `haystack`.
pub fn assert_absent(haystack: &str, value: &str, where_: &str) {
    use k8s_openapi::ByteString;
    let encoded = serde_json::to_value(ByteString(value.as_bytes().to_vec())).unwrap();
    let encoded = encoded.as_str().unwrap().trim_end_matches('=');
    assert!(!haystack.contains(value), "{value} leaked into {where_}");
    assert!(
        !haystack.contains(encoded),
        "{value} (base64) leaked into {where_}"
    );
}
