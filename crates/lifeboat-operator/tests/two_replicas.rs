//! Two operator processes with `--leader-election` on the real control plane: only the Lease
//! holder reconciles; when it is killed, the other takes over within a Lease duration and acts;
//! SIGTERM stops a replica cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams};
use lifeboat_api::BackupPolicy;
use serde_json::json;

const LEASE_SECONDS: u64 = 3;

struct Replica {
    child: Child,
    metrics_port: u16,
}

impl Replica {
    fn start(identity: &str, ns: &str) -> Replica {
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lifeboat-operator"));
        cmd.args(["--namespace", ns, "--leader-election"])
            .args(["--leader-election-namespace", ns])
            // In the Lease's namespace, the operator's own for this test.
            .args(["--signing-key-secret", "master-key"])
            .args(["--lease-duration-seconds", &LEASE_SECONDS.to_string()])
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .env("POD_NAME", identity)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(kubeconfig) = lifeboat_testenv::shared().unwrap().kubeconfig() {
            cmd.env("KUBECONFIG", kubeconfig);
        }
        Replica {
            child: cmd.spawn().unwrap(),
            metrics_port,
        }
    }

    /// Reconciles this replica has run, from its own /metrics; `None` while it does not answer.
    fn reconciles(&self) -> Option<u64> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        Some(
            body.lines()
                .filter(|l| l.starts_with("lifeboat_reconciles_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum(),
        )
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn until<T>(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn apply_policy(api: &Api<BackupPolicy>, name: &str) {
    let obj = json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy", "metadata": {"name": name},
        "spec": {"schedule": "0 * * * *", "assets": [{"name": "cache", "redis": {"host": "cache"}}],
                 "retention": {"keepLast": 3}, "destination": {"volume": {"claimName": "backups"}}}
    });
    api.patch(name, &PatchParams::apply("test-user"), &Patch::Apply(&obj))
        .await
        .unwrap();
}

#[tokio::test]
async fn only_the_lease_holder_acts_and_the_other_takes_over_when_it_dies() {
    let env = lifeboat_testenv::shared().unwrap();
    let client = env.client().await.unwrap();
    let ns = env.namespace(&client, "replicas").await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), &ns);
    let cronjobs: Api<CronJob> = Api::namespaced(client.clone(), &ns);
    let master: k8s_openapi::api::core::v1::Secret = serde_json::from_value(
        json!({"metadata": {"name": "master-key"}, "data": {"key": k8s_openapi::ByteString(vec![7; 32])}}),
    )
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
        .create(&Default::default(), &master)
        .await
        .unwrap();
    let holder = async || {
        leases
            .get_opt("lifeboat-operator")
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity)
    };

    let mut a = Replica::start("replica-a", &ns);
    until("replica-a to lead", Duration::from_secs(30), async || {
        (holder().await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let b = Replica::start("replica-b", &ns);
    apply_policy(&policies, "first").await;
    until(
        "the leader to create the CronJob",
        Duration::from_secs(30),
        async || cronjobs.get_opt("first-cache").await.unwrap(),
    )
    .await;
    // Several Lease durations with B up: B never acts and never takes the Lease.
    tokio::time::sleep(Duration::from_secs(2 * LEASE_SECONDS)).await;
    assert_eq!(holder().await.as_deref(), Some("replica-a"));
    assert!(a.reconciles() > Some(0), "the leader reconciles");
    assert_eq!(
        b.reconciles(),
        Some(0),
        "the standby serves /metrics but must not reconcile"
    );

    // The leader dies without releasing anything: B takes over once the Lease has lapsed.
    let killed = Instant::now();
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    until("replica-b to lead", Duration::from_secs(30), async || {
        (holder().await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    let takeover = killed.elapsed();
    assert!(
        takeover < Duration::from_secs(3 * LEASE_SECONDS),
        "takeover took {takeover:?}"
    );
    apply_policy(&policies, "second").await;
    until(
        "the new leader to create the CronJob",
        Duration::from_secs(30),
        async || cronjobs.get_opt("second-cache").await.unwrap(),
    )
    .await;
    assert!(b.reconciles() > Some(0), "the new leader reconciles");

    // SIGTERM: a clean, prompt exit.
    let mut b = b;
    let term = Command::new("kill")
        .args(["-TERM", &b.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = b.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit 15 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "exit after SIGTERM: {status}");
}
