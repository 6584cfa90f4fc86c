//! The operator at scale, on the local control plane: N BackupPolicies of two assets each are
//! created at once; measured are the time until every policy has its two CronJobs and a status
//! for its generation, the operator's peak RSS (VmHWM of its process), and the API requests it
//! made per policy — status writes separately — from kube-apiserver's own request counters
//! (`apiserver_request_total`), minus the requests this driver made itself, which it counts.
//!
//! `make bench-operator` builds the release operator and runs this for 1,000 and 10,000.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{StreamExt, stream};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use lifeboat_testenv::{ControlPlane, Error, install_crds};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "Benchmark: the Lifeboat operator reconciling N BackupPolicies at once")]
struct Cli {
    /// How many BackupPolicies (two assets each).
    #[arg(long, default_value_t = 1000)]
    policies: usize,
    /// The operator binary (a release build).
    #[arg(long, default_value = "target/release/lifeboat-operator")]
    operator: PathBuf,
    /// Concurrent creates.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-operator: {e}");
            ExitCode::FAILURE
        }
    }
}

fn err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Kube(format!("{what}: {e}"))
}

fn policies_resource() -> ApiResource {
    ApiResource {
        group: "lifeboat.dev".into(),
        version: "v1alpha1".into(),
        api_version: "lifeboat.dev/v1alpha1".into(),
        kind: "BackupPolicy".into(),
        plural: "backuppolicies".into(),
    }
}

/// `apiserver_request_total` summed by (verb, resource, subresource).
async fn request_counts(client: &Client) -> Result<BTreeMap<(String, String, String), f64>, Error> {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .map_err(|e| err("metrics request", e))?;
    let text = client
        .request_text(req)
        .await
        .map_err(|e| err("reading kube-apiserver /metrics", e))?;
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let (labels, value) = match line.rsplit_once(' ') {
            Some(v) => v,
            None => continue,
        };
        let label = |name: &str| {
            labels
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_default()
                .to_owned()
        };
        *out.entry((label("verb"), label("resource"), label("subresource")))
            .or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(out)
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn run(cli: Cli) -> Result<(), Error> {
    let n = cli.policies;
    let cp = ControlPlane::start(true).await?;
    let client = cp.client().await?;
    install_crds(&client).await?;
    let ns = "scale";
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))
        .map_err(|e| err("namespace", e))?;
    nss.create(&PostParams::default(), &namespace)
        .await
        .map_err(|e| err("creating the namespace", e))?;

    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::Io("a free port".into(), e))?;
    let mut operator = Command::new(&cli.operator)
        .args(["--namespace", ns, "--metrics-addr"])
        .arg(format!("127.0.0.1:{metrics_port}"))
        .env("KUBECONFIG", cp.kubeconfig())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::Io(cli.operator.display().to_string(), e))?;
    // Let it start its watches before the flood.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = request_counts(&client).await?;

    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &policies_resource());
    let t0 = Instant::now();
    let created = stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let obj: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
                    "metadata": {"name": format!("p{i:05}")},
                    "spec": {
                        "schedule": format!("{} 3 1 1 *", i % 60),
                        "assets": [
                            {"name": "db", "postgres": {"host": format!("db-{i}"), "user": "backup", "databases": ["app"]}},
                            {"name": "cache", "redis": {"host": format!("cache-{i}")}}
                        ],
                        "retention": {"keepLast": 7},
                        "destination": {"volume": {"claimName": "backups"}},
                        "objectives": {"rpo": "2h"}
                    }
                }))
                .map_err(|e| err("policy", e))?;
                api.create(&PostParams::default(), &obj)
                    .await
                    .map_err(|e| err("creating a policy", e))
            }
        })
        .buffer_unordered(cli.concurrency)
        .filter(|r| futures::future::ready(r.is_ok()))
        .count()
        .await;
    let created_in = t0.elapsed();
    if created != n {
        return Err(err(
            "creating policies",
            format!("{created} of {n} created"),
        ));
    }

    let cronjobs: Api<k8s_openapi::api::batch::v1::CronJob> = Api::namespaced(client.clone(), ns);
    let mut polls = 0u32;
    let converged_in = loop {
        polls += 1;
        let cj = cronjobs
            .list_metadata(&ListParams::default())
            .await
            .map_err(|e| err("listing CronJobs", e))?
            .items
            .len();
        let done = api
            .list(&ListParams::default())
            .await
            .map_err(|e| err("listing policies", e))?
            .items
            .iter()
            .filter(|p| {
                let status: &Value = &p.data["status"];
                status["observedGeneration"].as_i64() == p.metadata.generation
                    && status["assetCount"] == 2
            })
            .count();
        if cj == 2 * n && done == n {
            break t0.elapsed();
        }
        if t0.elapsed() > Duration::from_secs(cli.timeout) {
            let _ = operator.kill();
            return Err(err(
                "converging",
                format!("after {}s: {cj} CronJobs, {done} statuses", cli.timeout),
            ));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    // Anything the operator still does after convergence counts too (requeues, late writes).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = request_counts(&client).await?;
    let rss = peak_rss_kib(operator.id()).unwrap_or(0);
    let _ = operator.kill();
    let _ = operator.wait();

    let mut by_kind: BTreeMap<String, f64> = BTreeMap::new();
    for (key, v) in &after {
        let d = v - before.get(key).copied().unwrap_or(0.0);
        if d > 0.0 {
            let (verb, resource, sub) = key;
            let name = if sub.is_empty() {
                format!("{verb} {resource}")
            } else {
                format!("{verb} {resource}/{sub}")
            };
            *by_kind.entry(name).or_insert(0.0) += d;
        }
    }
    // This driver's own requests: n creates, and per poll one list of each kind.
    let mine = [
        ("POST backuppolicies", n as f64),
        ("LIST backuppolicies", f64::from(polls)),
        ("LIST cronjobs", f64::from(polls)),
    ];
    for (k, v) in mine {
        if let Some(x) = by_kind.get_mut(k) {
            *x = (*x - v).max(0.0);
        }
    }
    // The controller-manager (CronJob controller, GC) and this driver's metrics reads are not
    // the operator's either; they are listed, and only the operator's verbs are summed.
    let operator_total: f64 = by_kind
        .iter()
        .filter(|(k, _)| {
            k.contains("backuppolicies")
                || k.ends_with(" cronjobs")
                || k.contains(" jobs")
                || k.contains(" pods")
                || k.contains(" secrets")
                || k.contains(" events")
        })
        .filter(|(k, _)| !k.starts_with("WATCH"))
        .map(|(_, v)| v)
        .sum();
    // Server-side apply is counted as verb APPLY; merge patches as PATCH.
    let status_writes: f64 = ["APPLY backuppolicies/status", "PATCH backuppolicies/status"]
        .iter()
        .filter_map(|k| by_kind.get(*k))
        .sum();
    println!(
        "| Policies | Created in | Converged in | Operator peak RSS | API requests per policy | Status writes per policy |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {n} | {:.1} s | {:.1} s | {:.0} MiB | {:.2} | {:.2} |",
        created_in.as_secs_f64(),
        converged_in.as_secs_f64(),
        rss as f64 / 1024.0,
        operator_total / n as f64,
        status_writes / n as f64
    );
    println!();
    println!("Requests during the run (kube-apiserver counters, this driver's own removed):");
    for (k, v) in &by_kind {
        println!("  {k:<40} {v:>10.0}");
    }
    Ok(())
}
