//! The operator at scale, on the local control plane, against a Go peer: N BackupPolicies of two
//! assets each are created at once, and measured are the time until every policy has its two
//! CronJobs and a status for its generation, the operator's peak RSS (VmHWM of its process) and
//! CPU time, and the API requests it made per policy (status writes and Events separately), from
//! kube-apiserver's own request counters (`apiserver_request_total`) minus the requests this
//! driver made itself, which it counts.
//!
//! Convergence is seen through two watches (the policies, and the CronJobs' metadata), so the
//! driver costs the API server one event per change, not a list of every policy per poll; its own
//! CPU time and requests are reported beside the operator's, with the API server's and etcd's.
//!
//! Every run gets a fresh control plane. With `--peer` (the controller-runtime operator of
//! shared/peers/cr-baseline) the two operators alternate, run by run, and each figure is the
//! median of `--runs` runs with its min and max; the Rust/Go ratios are of the medians.
//!
//! `make bench-operator` builds both and runs this for 1,000 and 10,000 policies.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{StreamExt, stream};
use k8s_openapi::api::batch::v1::CronJob;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use lifeboat_testenv::{ControlPlane, Error, install_crds};
use serde_json::json;

#[derive(Parser)]
#[command(about = "Benchmark: the Lifeboat operator (and a Go peer) reconciling N BackupPolicies")]
struct Cli {
    /// How many BackupPolicies (two assets each); several sizes separated by commas.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    policies: Vec<usize>,
    /// Runs per operator and size (each on a fresh control plane).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The operator binary (a release build).
    #[arg(long, default_value = "target/release/lifeboat-operator")]
    operator: PathBuf,
    /// The Go peer (cr-baseline) to run alternately with the operator, same flags.
    #[arg(long)]
    peer: Option<PathBuf>,
    /// Concurrent creates.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Give up on a run after this many seconds.
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

/// What one run measured.
#[derive(Clone, Debug, Default)]
struct Sample {
    created_s: f64,
    converged_s: f64,
    rss_mib: f64,
    cpu_s: f64,
    requests_per_policy: f64,
    status_writes_per_policy: f64,
    events_per_policy: f64,
    apiserver_cpu_s: f64,
    etcd_cpu_s: f64,
    driver_cpu_s: f64,
    driver_requests: f64,
    by_kind: BTreeMap<String, f64>,
}

async fn run(cli: Cli) -> Result<(), Error> {
    let mut operators = vec![("lifeboat-operator", cli.operator.clone())];
    if let Some(peer) = &cli.peer {
        operators.push(("cr-baseline", peer.clone()));
    }
    for (_, path) in &operators {
        if !path.is_file() {
            return Err(Error::Assets(format!("{} is not built", path.display())));
        }
    }
    let mut results: BTreeMap<(usize, &str), Vec<Sample>> = BTreeMap::new();
    for &n in &cli.policies {
        for r in 0..cli.runs {
            // Alternate which goes first, so neither always meets a machine the other warmed.
            let mut order: Vec<_> = operators.iter().collect();
            if r % 2 == 1 {
                order.reverse();
            }
            for (name, path) in order {
                // Only lifeboat-operator takes a signing key (the peer makes no Jobs).
                let signing = (*name == "lifeboat-operator").then_some(MASTER_KEY_SECRET);
                let s = one_run(&cli, path, signing, n).await?;
                eprintln!(
                    "bench-operator: {n} policies, {name}, run {}: converged in {:.1} s, peak RSS {:.0} MiB, \
                     CPU {:.1} s, {:.2} requests per policy; driver CPU {:.1} s, kube-apiserver CPU {:.1} s",
                    r + 1,
                    s.converged_s,
                    s.rss_mib,
                    s.cpu_s,
                    s.requests_per_policy,
                    s.driver_cpu_s,
                    s.apiserver_cpu_s
                );
                results.entry((n, name)).or_default().push(s);
            }
        }
    }
    print_report(&cli, &operators, &results);
    Ok(())
}

/// The median, min and max of `f` over `samples`.
fn stats(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> (f64, f64, f64) {
    let mut v: Vec<f64> = samples.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    let median = match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    (
        median,
        v.first().copied().unwrap_or(f64::NAN),
        v.last().copied().unwrap_or(f64::NAN),
    )
}

fn cell(samples: &[Sample], decimals: usize, f: impl Fn(&Sample) -> f64) -> String {
    let (m, lo, hi) = stats(samples, f);
    format!("{m:.decimals$} ({lo:.decimals$}–{hi:.decimals$})")
}

fn print_report(
    cli: &Cli,
    operators: &[(&str, PathBuf)],
    results: &BTreeMap<(usize, &str), Vec<Sample>>,
) {
    println!(
        "Operator at scale: medians of {} runs (min–max), each on a fresh control plane; {} cores.",
        cli.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "| Policies | Operator | Created in (s) | Converged in (s) | Peak RSS (MiB) | Operator CPU (s) | API requests per policy | Events per policy | Status writes per policy | kube-apiserver CPU (s) | etcd CPU (s) | Driver CPU (s) | Driver requests |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for ((n, name), s) in results {
        println!(
            "| {n} | {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(s, 1, |s| s.created_s),
            cell(s, 1, |s| s.converged_s),
            cell(s, 0, |s| s.rss_mib),
            cell(s, 1, |s| s.cpu_s),
            cell(s, 2, |s| s.requests_per_policy),
            cell(s, 2, |s| s.events_per_policy),
            cell(s, 2, |s| s.status_writes_per_policy),
            cell(s, 1, |s| s.apiserver_cpu_s),
            cell(s, 1, |s| s.etcd_cpu_s),
            cell(s, 1, |s| s.driver_cpu_s),
            cell(s, 0, |s| s.driver_requests),
        );
    }
    println!();
    if operators.len() == 2 {
        println!("| Policies | Time Rust/Go (target ≤ 1.00) | Peak RSS Rust/Go (target ≤ 0.50) |");
        println!("|---|---|---|");
        for &n in &cli.policies {
            let (Some(rust), Some(go)) = (
                results.get(&(n, operators[0].0)),
                results.get(&(n, operators[1].0)),
            ) else {
                continue;
            };
            let t = stats(rust, |s| s.converged_s).0 / stats(go, |s| s.converged_s).0;
            let m = stats(rust, |s| s.rss_mib).0 / stats(go, |s| s.rss_mib).0;
            println!(
                "| {n} | {t:.2} {} | {m:.2} {} |",
                verdict(t <= 1.0),
                verdict(m <= 0.5)
            );
        }
        println!();
    }
    if let Some(rust) = results.get(&(10_000, operators[0].0)) {
        let t = stats(rust, |s| s.converged_s).0;
        let m = stats(rust, |s| s.rss_mib).0;
        println!(
            "lifeboat-operator at 10,000 policies: converged in {t:.1} s (target ≤ 120) {}, peak RSS {m:.0} MiB (target ≤ 100) {}",
            verdict(t <= 120.0),
            verdict(m <= 100.0)
        );
        println!();
    }
    for ((n, name), s) in results {
        if let Some(last) = s.last() {
            println!(
                "Requests of {name} at {n} policies, last run (kube-apiserver counters, this driver's own removed):"
            );
            for (k, v) in &last.by_kind {
                println!("  {k:<44} {v:>10.0}");
            }
        }
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
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
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
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

/// User plus system CPU seconds of a process so far.
fn cpu_seconds(pid: u32, ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces and ends with the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds of this process's descendants, by command name (etcd, kube-apiserver, ...).
fn descendants_cpu(ticks: f64) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    let mut todo = vec![std::process::id()];
    let mut seen = HashSet::new();
    while let Some(pid) = todo.pop() {
        if !seen.insert(pid) {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if let Ok(children) = std::fs::read_to_string(task.path().join("children")) {
                todo.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        if pid == std::process::id() {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if let Some(cpu) = cpu_seconds(pid, ticks) {
            *out.entry(comm.trim().to_owned()).or_insert(0.0) += cpu;
        }
    }
    out
}

/// The operator's process, killed when the run ends, however it ends.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How far the operator has come: policies with a status for their generation, and CronJobs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Progress {
    done: usize,
    cronjobs: usize,
}

/// Watches the policies and the CronJobs' metadata and publishes the progress; counts the list
/// requests the watches make (a list is paged by 500, kube's default).
fn watch_progress(
    client: &Client,
    ns: &str,
    lists: Arc<[AtomicU64; 2]>,
) -> (
    tokio::sync::watch::Receiver<Progress>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::watch::channel(Progress::default());
    let policies: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &policies_resource());
    let cronjobs: Api<PartialObjectMeta<CronJob>> = Api::namespaced(client.clone(), ns);
    enum Change {
        Policy(watcher::Event<DynamicObject>),
        CronJob(watcher::Event<PartialObjectMeta<CronJob>>),
    }
    let merged = futures::stream::select(
        watcher::watcher(policies, watcher::Config::default())
            .default_backoff()
            .map(|e| e.map(Change::Policy)),
        watcher::watcher(cronjobs, watcher::Config::default())
            .default_backoff()
            .map(|e| e.map(Change::CronJob)),
    );
    let task = tokio::spawn(async move {
        let mut done: HashMap<String, bool> = HashMap::new();
        let mut cjs: HashSet<String> = HashSet::new();
        let converged = |p: &DynamicObject| {
            let status = &p.data["status"];
            status["observedGeneration"].as_i64() == p.metadata.generation
                && status["assetCount"] == 2
        };
        let pages = |held: usize| held.div_ceil(500).max(1) as u64;
        futures::pin_mut!(merged);
        while let Some(change) = merged.next().await {
            match change {
                Ok(Change::Policy(e)) => match e {
                    watcher::Event::Init => {
                        lists[0].fetch_add(pages(done.len()), Ordering::Relaxed);
                    }
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                        done.insert(p.metadata.name.clone().unwrap_or_default(), converged(&p));
                    }
                    watcher::Event::Delete(p) => {
                        done.remove(p.metadata.name.as_deref().unwrap_or_default());
                    }
                    watcher::Event::InitDone => {}
                },
                Ok(Change::CronJob(e)) => match e {
                    watcher::Event::Init => {
                        lists[1].fetch_add(pages(cjs.len()), Ordering::Relaxed);
                    }
                    watcher::Event::Apply(c) | watcher::Event::InitApply(c) => {
                        cjs.insert(c.metadata.name.unwrap_or_default());
                    }
                    watcher::Event::Delete(c) => {
                        cjs.remove(c.metadata.name.as_deref().unwrap_or_default());
                    }
                    watcher::Event::InitDone => {}
                },
                Err(e) => eprintln!("bench-operator: watch: {e}"),
            }
            let now = Progress {
                done: done.values().filter(|d| **d).count(),
                cronjobs: cjs.len(),
            };
            tx.send_if_modified(|p| {
                let changed = *p != now;
                *p = now;
                changed
            });
        }
    });
    (rx, task)
}

/// The master signing key Secret the driver makes for lifeboat-operator, in its namespace.
const MASTER_KEY_SECRET: &str = "bench-master-key";

/// The namespace the policies go to, and (in the operator's namespace) the master signing key.
async fn prepare(client: &Client, ns: &str) -> Result<(), Error> {
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))
        .map_err(|e| err("namespace", e))?;
    nss.create(&PostParams::default(), &namespace)
        .await
        .map_err(|e| err("creating the namespace", e))?;

    // lifeboat-operator makes no Job (so no CronJob) without a master signing key: one in its
    // own namespace, as the chart installs it; the key itself is not secret here.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "default");
    let master = serde_json::from_value(json!({
        "metadata": {"name": MASTER_KEY_SECRET},
        "stringData": {"key": "bench-operator-master-signing-key-not-a-secret-0123456789"}
    }))
    .map_err(|e| err("master key", e))?;
    secrets
        .create(&PostParams::default(), &master)
        .await
        .map_err(|e| err("creating the master signing key", e))?;

    Ok(())
}

/// Starts `operator_bin` against the control plane behind `kubeconfig`, watching `ns`.
fn spawn_operator(
    operator_bin: &Path,
    signing_key_secret: Option<&str>,
    ns: &str,
    kubeconfig: &Path,
) -> Result<Stopped, Error> {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::Io("a free port".into(), e))?;
    let operator = Command::new(operator_bin)
        .args(["--namespace", ns])
        .args(
            signing_key_secret
                .map(|name| ["--signing-key-secret", name])
                .iter()
                .flatten(),
        )
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::Io(operator_bin.display().to_string(), e))?;
    Ok(Stopped(operator))
}

/// Creates `n` policies of two assets each, `concurrency` at a time; returns how many were.
async fn create_policies(client: &Client, ns: &str, n: usize, concurrency: usize) -> usize {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &policies_resource());
    stream::iter(0..n)
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
        .buffer_unordered(concurrency)
        .filter(|r| futures::future::ready(r.is_ok()))
        .count()
        .await
}

/// The API server's request counts between `before` and `after` by verb and resource, with
/// this driver's own (`mine`) taken out.
fn requests_by_kind(
    before: &BTreeMap<(String, String, String), f64>,
    after: &BTreeMap<(String, String, String), f64>,
    mine: &[(&str, f64)],
) -> BTreeMap<String, f64> {
    let mut by_kind: BTreeMap<String, f64> = BTreeMap::new();
    for (key, v) in after {
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
    for (k, v) in mine {
        if let Some(x) = by_kind.get_mut(*k) {
            *x = (*x - v).max(0.0);
        }
    }
    by_kind
}

/// The operator's requests in `by_kind`. The controller-manager's (CronJob controller, GC) and
/// this driver's metrics reads are not the operator's: they are listed, and only the verbs on
/// what the operator touches are summed.
fn operator_requests(by_kind: &BTreeMap<String, f64>) -> f64 {
    by_kind
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
        .sum()
}

async fn one_run(
    cli: &Cli,
    operator_bin: &Path,
    signing_key_secret: Option<&str>,
    n: usize,
) -> Result<Sample, Error> {
    let ticks = clock_ticks();
    let cp = ControlPlane::start(true).await?;
    let client = cp.client().await?;
    install_crds(&client).await?;
    let ns = "scale";
    prepare(&client, ns).await?;

    let operator = spawn_operator(operator_bin, signing_key_secret, ns, cp.kubeconfig())?;
    let lists = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let (mut progress, watching) = watch_progress(&client, ns, lists.clone());
    // Let both start their watches before the flood.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = request_counts(&client).await?;
    let lists_before = lists.each_ref().map(|l| l.load(Ordering::Relaxed));
    let cpu_before = descendants_cpu(ticks);
    let own_before = cpu_seconds(std::process::id(), ticks).unwrap_or(0.0);

    let t0 = Instant::now();
    let created = create_policies(&client, ns, n, cli.concurrency).await;
    let created_in = t0.elapsed();
    if created != n {
        watching.abort();
        return Err(err(
            "creating policies",
            format!("{created} of {n} created"),
        ));
    }

    let deadline = tokio::time::Instant::from_std(t0 + Duration::from_secs(cli.timeout));
    let wanted = |p: &Progress| p.done == n && p.cronjobs == 2 * n;
    let converged = tokio::time::timeout_at(deadline, progress.wait_for(wanted))
        .await
        .is_ok_and(|r| r.is_ok());
    let converged_in = t0.elapsed();
    if !converged {
        let p = *progress.borrow();
        watching.abort();
        return Err(err(
            "converging",
            format!(
                "after {}s: {} CronJobs, {} statuses",
                cli.timeout, p.cronjobs, p.done
            ),
        ));
    }
    watching.abort();
    // Anything the operator still does after convergence counts too (requeues, late writes).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = request_counts(&client).await?;
    let cpu_after = descendants_cpu(ticks);
    let own_after = cpu_seconds(std::process::id(), ticks).unwrap_or(0.0);
    let rss = peak_rss_kib(operator.0.id()).unwrap_or(0);
    let op_cpu = cpu_seconds(operator.0.id(), ticks).unwrap_or(0.0);
    drop(operator);
    drop(cp);

    // This driver's own requests during the run: n creates and its watches' lists, if a watch
    // had to list again (the watches themselves, like every WATCH, are not summed).
    let [policy_lists, cronjob_lists] = [0, 1].map(|i| {
        lists[i]
            .load(Ordering::Relaxed)
            .saturating_sub(lists_before[i]) as f64
    });
    let mine = [
        ("POST backuppolicies", n as f64),
        ("LIST backuppolicies", policy_lists),
        ("LIST cronjobs", cronjob_lists),
    ];
    let by_kind = requests_by_kind(&before, &after, &mine);
    let operator_total = operator_requests(&by_kind);
    // Server-side apply is counted as verb APPLY; merge patches as PATCH.
    let sum = |keys: &[&str]| -> f64 { keys.iter().filter_map(|k| by_kind.get(*k)).sum() };
    let status_writes = sum(&["APPLY backuppolicies/status", "PATCH backuppolicies/status"]);
    let events = sum(&["POST events", "PATCH events"]);
    let cpu = |comm: &str| {
        cpu_after.get(comm).copied().unwrap_or(0.0) - cpu_before.get(comm).copied().unwrap_or(0.0)
    };
    Ok(Sample {
        created_s: created_in.as_secs_f64(),
        converged_s: converged_in.as_secs_f64(),
        rss_mib: rss as f64 / 1024.0,
        cpu_s: op_cpu,
        requests_per_policy: operator_total / n as f64,
        status_writes_per_policy: status_writes / n as f64,
        events_per_policy: events / n as f64,
        apiserver_cpu_s: cpu("kube-apiserver"),
        etcd_cpu_s: cpu("etcd"),
        driver_cpu_s: own_after - own_before,
        // Creates, lists, and the two reads of the API server's metrics.
        driver_requests: n as f64 + policy_lists + cronjob_lists + 2.0,
        by_kind,
    })
}
