//! `kubectl lifeboat`: status, on-demand backups, restores, drills and the recovery report.
//! Installed as `kubectl-lifeboat` on the PATH, kubectl runs it as `kubectl lifeboat ...`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use kubectl_lifeboat::output::{self, render};
use kubectl_lifeboat::{BACKUP_NOW, DRILL_NOW, FIELD_MANAGER, logs, report, status, wait};
use lifeboat_api::common::RestoreTarget;
use lifeboat_api::drill_schedule::DrillVerdict;
use lifeboat_api::{BackupPolicy, DrillSchedule, RestoreRequest};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "kubectl-lifeboat",
    version,
    about = "Lifeboat from kubectl: backup status and RPO, on-demand backups, restores, drills, and the recovery report for auditors"
)]
struct Cli {
    #[command(flatten)]
    cluster: Cluster,
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    /// Every namespace (status, backups and report).
    #[arg(short = 'A', long, global = true)]
    all_namespaces: bool,
    #[command(subcommand)]
    command: Command,
}

/// Which cluster, as kubectl chooses it: kubectl hands every argument after the plugin's name
/// to the plugin, so these are the plugin's to honour.
#[derive(clap::Args)]
struct Cluster {
    /// The kubeconfig file (default: the files in $KUBECONFIG, merged, else ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current-context).
    #[arg(long, global = true)]
    context: Option<String>,
    /// The kubeconfig cluster, instead of the context's.
    #[arg(long, global = true)]
    cluster: Option<String>,
    /// The kubeconfig user, instead of the context's.
    #[arg(long, global = true)]
    user: Option<String>,
}

/// `-o`, on every command that reads.
#[derive(clap::Args)]
struct Out {
    /// table for people; json or yaml for scripts (the same rows).
    #[arg(short, long, value_enum, default_value_t)]
    output: output::Format,
}

#[derive(Subcommand)]
enum Command {
    /// One line per asset: newest good backup, RPO now against the objective, failures, Ready.
    Status {
        #[command(flatten)]
        out: Out,
    },
    /// On-demand backups.
    Backup {
        #[command(subcommand)]
        what: BackupCommand,
    },
    /// Create a RestoreRequest: a plan unless --execute (then it restores at once).
    Restore(RestoreArgs),
    /// Each asset's newest good backup and newest drill-verified one, from the policies' status
    /// (POLICY, or every policy). With --location: what a backup location holds, without any
    /// BackupPolicy (a rebuilt cluster): each asset's newest complete backup (or --from ID), its
    /// metadata verified in the cluster by a catalog Job, as a restore from it would see it.
    Backups(BackupsArgs),
    /// The agent logs of what KIND/NAME ran (backuppolicy/NAME, restorerequest/NAME,
    /// drillschedule/NAME): the pods of its Jobs still kept, oldest first, found in the namespace
    /// by the labels the operator sets.
    Logs {
        target: logs::Target,
        /// Only the last N lines of each pod.
        #[arg(long)]
        tail: Option<i64>,
    },
    /// A shell completion script: `source <(kubectl lifeboat completion bash)`.
    Completion { shell: clap_complete::Shell },
    /// Disaster-recovery drills.
    Drill {
        #[command(subcommand)]
        what: DrillCommand,
    },
    /// The recovery report: RPO per asset, drills' RTO/RPO against objectives, gaps. With
    /// --evidence, the drills over a period from their evidence records instead (no cluster).
    Report(ReportArgs),
}

#[derive(clap::Args)]
struct RestoreArgs {
    /// The BackupPolicy whose backups are restored.
    policy: String,
    /// A backup id, or latest.
    #[arg(long, default_value = "latest")]
    from: String,
    /// Restore somewhere else: a YAML list of targets (`[{asset: db, postgres: {...}}]`).
    #[arg(long)]
    into: Option<PathBuf>,
    /// Only these assets (repeatable); every asset of the policy by default.
    #[arg(long = "asset")]
    assets: Vec<String>,
    /// Name of the RestoreRequest (default: <policy>-restore-<time>).
    #[arg(long)]
    name: Option<String>,
    /// Restore now rather than only showing the plan.
    #[arg(long)]
    execute: bool,
    /// Back up each target first and put it back if the restore or a check fails.
    #[arg(long)]
    rollback_on_failure: bool,
}

#[derive(clap::Args)]
struct BackupsArgs {
    /// The policy (every policy of the namespace without it).
    #[arg(conflicts_with = "policy")]
    name: Option<String>,
    /// The policy; with --location, the backups' directory there: the name of the policy
    /// that made them.
    #[arg(long)]
    policy: Option<String>,
    /// A YAML file with the location, as a RestoreRequest's `source.location`
    /// (`s3: {endpoint, bucket, prefix, credentialsSecret}` or `volume: {claimName}`).
    #[arg(long)]
    location: Option<PathBuf>,
    /// With --location: a backup id, or latest.
    #[arg(long, default_value = "latest", requires = "location")]
    from: String,
    /// With --location: only these assets (repeatable).
    #[arg(long = "asset", requires = "location")]
    assets: Vec<String>,
    #[command(flatten)]
    out: Out,
    /// With --location: how long to wait for the catalog Job.
    #[arg(long, default_value = "5m", requires = "location")]
    timeout: lifeboat_api::duration::Duration,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// The document `-o table` writes.
    #[arg(long, value_enum, default_value_t = Format::Markdown)]
    format: Format,
    #[command(flatten)]
    out: Out,
    /// Write to this file instead of standard output.
    #[arg(long)]
    output_file: Option<PathBuf>,
    /// A directory holding drills' evidence records (`drill-*.json`, at any depth): the
    /// backup volume, or a copy of the bucket (`rclone copy --include 'drill-*.json'`).
    #[arg(long)]
    evidence: Option<PathBuf>,
    /// With --evidence: only drills started within this long before now (`90d` a quarter).
    #[arg(long, requires = "evidence")]
    since: Option<lifeboat_api::duration::Duration>,
}

#[derive(Subcommand)]
enum BackupCommand {
    /// Back up every asset of POLICY now (the scheduled CronJobs are unaffected).
    Now {
        policy: String,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Subcommand)]
enum DrillCommand {
    /// Run the DrillSchedule NAME now.
    Run {
        name: String,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(clap::Args)]
struct Wait {
    /// Wait for the run to end, print its result, and exit non-zero if it failed.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits (`90s`, `15m`, `1h`).
    #[arg(long, default_value = "15m")]
    timeout: lifeboat_api::duration::Duration,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Markdown,
    Html,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("no cluster configured: {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("{0}")]
    Output(#[from] output::OutputError),
    #[error("{0}")]
    Target(#[from] logs::TargetError),
    #[error("{0}")]
    Input(String),
    #[error("writing {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("{0}")]
    Failed(String),
    #[error("no result within {0}; the run goes on: follow it with `kubectl lifeboat status`")]
    Timeout(String),
}

/// The name kubectl (1.26 and later) runs to complete `kubectl lifeboat ...`: an executable of
/// that name on the PATH, given the words after `lifeboat` (the last one being completed). A
/// link to this binary under that name answers it.
const KUBECTL_COMPLETER: &str = "kubectl_complete-lifeboat";

/// Answers kubectl's completion request: one candidate per line (clap_complete's engine, which
/// knows the subcommands, flags and values from the same definitions as the parser).
fn kubectl_completion() -> ExitCode {
    let mut words = vec![std::ffi::OsString::from("kubectl-lifeboat")];
    words.extend(std::env::args_os().skip(1));
    let index = words.len() - 1;
    let cwd = std::env::current_dir().ok();
    match clap_complete::engine::complete(&mut Cli::command(), words, index, cwd.as_deref()) {
        Ok(candidates) => {
            for c in candidates {
                println!("{}", c.get_value().to_string_lossy());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let invoked_as = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_owned()));
    if invoked_as.as_deref() == Some(std::ffi::OsStr::new(KUBECTL_COMPLETER)) {
        return kubectl_completion();
    }
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A run-once token: the time, so that `kubectl get -o yaml` shows when it was asked.
fn token() -> String {
    Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// Polls `check` every second until it answers or `--timeout` passes.
async fn poll<T>(
    wait: &Wait,
    mut check: impl AsyncFnMut() -> Result<Option<T>, Error>,
) -> Result<T, Error> {
    let deadline = tokio::time::Instant::now() + wait.timeout.as_std();
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout(wait.timeout.to_string()));
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// The client kubectl would use with the same flags: `--kubeconfig` over `$KUBECONFIG` (whose
/// files are merged) over `~/.kube/config`, then `--context`/`--cluster`/`--user` over the
/// current context; in a pod with none of these, its service account.
async fn client(c: &Cluster) -> Result<Client, Error> {
    let config =
        if c.kubeconfig.is_none() && c.context.is_none() && c.cluster.is_none() && c.user.is_none()
        {
            Config::infer().await?
        } else {
            let kubeconfig = match &c.kubeconfig {
                Some(path) => Kubeconfig::read_from(path)?,
                None => Kubeconfig::read()?,
            };
            let options = KubeConfigOptions {
                context: c.context.clone(),
                cluster: c.cluster.clone(),
                user: c.user.clone(),
            };
            Config::from_custom_kubeconfig(kubeconfig, &options).await?
        };
    Ok(Client::try_from(config)?)
}

/// Where a command reads and writes: the client, the namespace and whether `-A` asked for all.
struct Scope {
    client: Client,
    ns: String,
    all: bool,
}

impl Scope {
    /// BackupPolicies of the namespace, or of every namespace under `-A`.
    fn policies(&self) -> Api<BackupPolicy> {
        self.api()
    }

    fn drills(&self) -> Api<DrillSchedule> {
        self.api()
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        if self.all {
            Api::all(self.client.clone())
        } else {
            Api::namespaced(self.client.clone(), &self.ns)
        }
    }

    /// An Api of the one namespace, for commands that write or read through its Secrets.
    fn namespaced<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }
}

/// One function per subcommand; the two that need no cluster are answered before connecting.
async fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Completion { shell } => return completion(shell),
        Command::Report(ReportArgs {
            evidence: Some(dir),
            format,
            out,
            output_file,
            since,
        }) => {
            return evidence_report(
                &dir,
                since.as_ref(),
                format,
                out.output,
                output_file.as_deref(),
            );
        }
        _ => {}
    }
    let client = client(&cli.cluster).await?;
    let scope = Scope {
        ns: cli
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned()),
        client,
        all: cli.all_namespaces,
    };
    match cli.command {
        Command::Status { out } => status(&scope, out).await,
        Command::Backups(args) => match args.location.clone() {
            None => backups_from_status(&scope, args).await,
            Some(location) => backups_from_location(&scope, &location, args).await,
        },
        Command::Logs { target, tail } => {
            if scope.all {
                return Err(Error::Input(
                    "logs reads one namespace: name it with -n".into(),
                ));
            }
            agent_logs(&scope.client, &scope.ns, &target, tail).await
        }
        Command::Backup {
            what: BackupCommand::Now { policy, wait },
        } => backup_now(&scope, &policy, &wait).await,
        Command::Drill {
            what: DrillCommand::Run { name, wait },
        } => drill_run(&scope, &name, &wait).await,
        Command::Restore(args) => restore(&scope, args).await,
        Command::Report(args) => report(&scope, args).await,
        // Answered above: they need no cluster.
        Command::Completion { .. } => Ok(()),
    }
}

/// The completion script for `shell`, on standard output.
fn completion(shell: clap_complete::Shell) -> Result<(), Error> {
    // Into memory first: clap_complete panics on a failed write (a closed pipe).
    let mut script = Vec::new();
    if shell == clap_complete::Shell::Bash {
        // clap_complete's bash script never completes past a subcommand when the binary's name
        // has a hyphen (clap-rs/clap#6421): generated for a name without one, then registered
        // for the real name too.
        clap_complete::generate(shell, &mut Cli::command(), "kubectl_lifeboat", &mut script);
        script.extend_from_slice(
            b"complete -F _kubectl_lifeboat -o nosort -o bashdefault -o default kubectl-lifeboat\n",
        );
    } else {
        clap_complete::generate(shell, &mut Cli::command(), "kubectl-lifeboat", &mut script);
    }
    std::io::Write::write_all(&mut std::io::stdout(), &script)
        .map_err(|e| Error::Write("standard output".into(), e))
}

async fn status(scope: &Scope, out: Out) -> Result<(), Error> {
    let list = scope.policies().list(&ListParams::default()).await?.items;
    if list.is_empty() && out.output == output::Format::Table {
        println!("No BackupPolicies found.");
        return Ok(());
    }
    let lines = status::asset_lines(&list, Timestamp::now());
    print!("{}", render(&lines, out.output, || status::table(&lines))?);
    Ok(())
}

/// Each asset's newest backups as the policies' status records them.
async fn backups_from_status(scope: &Scope, args: BackupsArgs) -> Result<(), Error> {
    let policies = scope.policies();
    let list = match args.name.or(args.policy) {
        Some(name) if !scope.all => vec![policies.get(&name).await?],
        Some(name) => policies
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|p| p.name_any() == name)
            .collect(),
        None => policies.list(&ListParams::default()).await?.items,
    };
    let rows = kubectl_lifeboat::backups::from_status(&list);
    print!(
        "{}",
        render(&rows, args.out.output, || {
            kubectl_lifeboat::backups::status_table(&rows, Timestamp::now())
        })?
    );
    Ok(())
}

/// What a location holds, read in the cluster by the catalog Job of a short-lived
/// RestoreRequest (the Job has the namespace's Secrets; this process never sees them).
async fn backups_from_location(
    scope: &Scope,
    location: &std::path::Path,
    args: BackupsArgs,
) -> Result<(), Error> {
    let Some(policy) = args.name.or(args.policy) else {
        return Err(Error::Input(
            "--location needs the policy whose backups it holds".into(),
        ));
    };
    if scope.all {
        return Err(Error::Input(
            "--location reads through one namespace's Secrets: name it with -n".into(),
        ));
    }
    let input = |e: &dyn std::fmt::Display| Error::Input(format!("{}: {e}", location.display()));
    let text = std::fs::read_to_string(location).map_err(|e| input(&e))?;
    let value: serde_json::Value = serde_norway::from_str(&text).map_err(|e| input(&e))?;
    serde_json::from_value::<lifeboat_api::common::Destination>(value.clone())
        .map_err(|e| input(&e))?;
    let name = format!(
        "lifeboat-backups-{}",
        Timestamp::now().strftime("%Y%m%d-%H%M%S")
    );
    let api: Api<RestoreRequest> = scope.namespaced();
    let obj = kubectl_lifeboat::backups::request(&name, &policy, &args.from, &value, &args.assets);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Apply(&obj),
    )
    .await?;
    let found = catalog_message(scope, &api, &name, args.timeout).await;
    // The request only carried the catalog Job: it goes (and its Job with it) whatever the
    // outcome.
    let _ = api
        .delete(&name, &kube::api::DeleteParams::background())
        .await;
    let message = found?.map_err(Error::Failed)?;
    let Some(catalog) = message.catalog.filter(|_| message.summary.ok) else {
        return Err(Error::Failed(format!(
            "{}: {}",
            message
                .summary
                .error_class
                .map_or("CatalogFailed", |c| c.reason()),
            message.summary.message.unwrap_or_default()
        )));
    };
    print!(
        "{}",
        render(&catalog, args.out.output, || {
            kubectl_lifeboat::backups::table(&catalog, Timestamp::now())
        })?
    );
    Ok(())
}

/// Waits for the catalog Job's report of request `name`, or for the condition that stops the
/// request before its Job (no signing key, ...), as `Err(reason: message)`.
async fn catalog_message(
    scope: &Scope,
    api: &Api<RestoreRequest>,
    name: &str,
    timeout: lifeboat_api::duration::Duration,
) -> Result<Result<lifeboat_api::agent_result::TerminationMessage, String>, Error> {
    let pods: Api<Pod> = scope.namespaced();
    let selector = kubectl_lifeboat::backups::catalog_pods(name);
    let wait = Wait {
        wait: true,
        timeout,
    };
    poll(&wait, async || {
        let list = pods.list(&ListParams::default().labels(&selector)).await?;
        if let Some(m) = kubectl_lifeboat::backups::report(&list.items) {
            return Ok(Some(Ok(m)));
        }
        let ready = api.get(name).await?.status.and_then(|s| {
            lifeboat_api::conditions::find(&s.conditions, lifeboat_api::conditions::types::READY)
                .cloned()
        });
        Ok(ready
            .filter(|c| {
                lifeboat_api::conditions::Status::of(c) == lifeboat_api::conditions::Status::False
                    && c.reason != "ReadingCatalog"
            })
            .map(|c| Err(format!("{}: {}", c.reason, c.message))))
    })
    .await
}

/// Asks for a backup of every asset of `policy` now (an annotation the operator answers).
async fn backup_now(scope: &Scope, policy: &str, wait: &Wait) -> Result<(), Error> {
    let ns = &scope.ns;
    let api: Api<BackupPolicy> = scope.namespaced();
    let asked = Timestamp::now();
    let t = token();
    api.patch(
        policy,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {BACKUP_NOW: t}}})),
    )
    .await?;
    if !wait.wait {
        println!(
            "backup of {ns}/{policy} requested (token {t}); follow it with `kubectl lifeboat status`"
        );
        return Ok(());
    }
    println!("backup of {ns}/{policy} requested (token {t}); waiting");
    let outcome = poll(wait, async || {
        Ok(wait::backup_outcome(&api.get(policy).await?, &t, asked))
    })
    .await?;
    for o in &outcome {
        println!("  {}", o.line());
    }
    if outcome.iter().any(wait::AssetOutcome::failed) {
        return Err(Error::Failed(format!("backup of {ns}/{policy} failed")));
    }
    Ok(())
}

/// Asks for a run of the DrillSchedule `name` now; with --wait, prints its record.
async fn drill_run(scope: &Scope, name: &str, wait: &Wait) -> Result<(), Error> {
    let ns = &scope.ns;
    let api: Api<DrillSchedule> = scope.namespaced();
    let asked = Timestamp::now();
    let t = token();
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {DRILL_NOW: t}}})),
    )
    .await?;
    if !wait.wait {
        println!(
            "drill {ns}/{name} requested (token {t}); follow it with `kubectl get drill -n {ns} {name} -w`"
        );
        return Ok(());
    }
    println!("drill {ns}/{name} requested (token {t}); waiting");
    let record = poll(wait, async || {
        Ok(wait::drill_outcome(&api.get(name).await?, &t, asked).cloned())
    })
    .await?;
    let spec = api.get(name).await?.spec;
    print_drill_record(&record, &spec);
    if record.verdict != DrillVerdict::Passed {
        return Err(Error::Failed(format!(
            "drill {ns}/{name}: {:?}",
            record.verdict
        )));
    }
    Ok(())
}

fn print_drill_record(
    record: &lifeboat_api::drill_schedule::DrillRecord,
    spec: &lifeboat_api::drill_schedule::DrillScheduleSpec,
) {
    let objectives = &spec.objectives;
    println!("  verdict: {:?}", record.verdict);
    println!(
        "  RTO achieved: {} (objective {}) {}",
        record.rto.as_deref().unwrap_or("-"),
        objectives.rto,
        if record.rto_met { "met" } else { "MISSED" }
    );
    match (&record.rpo, &spec.backup) {
        (Some(rpo), _) => println!(
            "  RPO achieved: {rpo} (objective {}) {}",
            objectives.rpo,
            if record.rpo_met { "met" } else { "MISSED" }
        ),
        (None, lifeboat_api::drill_schedule::DrillBackupMode::Fresh) => println!(
            "  RPO: not measured (mode Fresh backs up at the drill start: restorability only)"
        ),
        (None, lifeboat_api::drill_schedule::DrillBackupMode::Latest) => {
            println!("  RPO: not measured (objective {})", objectives.rpo)
        }
    }
    for b in &record.backups {
        println!("  restored: {b}");
    }
    for c in &record.checks {
        println!(
            "  check {}: {}",
            c.name,
            if c.passed { "passed" } else { "FAILED" }
        );
    }
    if !record.message.is_empty() {
        println!("  {}", record.message);
    }
}

/// Creates the RestoreRequest: a plan unless --execute.
async fn restore(scope: &Scope, args: RestoreArgs) -> Result<(), Error> {
    let ns = &scope.ns;
    let targets: Vec<RestoreTarget> = match &args.into {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
            serde_norway::from_str(&text)
                .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?
        }
        None => Vec::new(),
    };
    let name = args.name.unwrap_or_else(|| {
        format!(
            "{}-restore-{}",
            args.policy,
            Timestamp::now().strftime("%Y%m%d-%H%M%S")
        )
    });
    let obj = json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
        "metadata": {"name": name},
        "spec": {"source": {"policy": args.policy, "backupId": args.from}, "assets": args.assets,
                 "targets": targets, "execute": args.execute,
                 "rollbackOnFailure": args.rollback_on_failure}
    });
    let api: Api<RestoreRequest> = scope.namespaced();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Apply(&obj),
    )
    .await?;
    if args.execute {
        println!(
            "restorerequest {ns}/{name} created and executing; follow it with `kubectl get rr -n {ns} {name} -w`"
        );
    } else {
        println!(
            "restorerequest {ns}/{name} created: a plan only. Read it with `kubectl get rr -n {ns} {name} -o yaml`, then restore with `kubectl patch rr -n {ns} {name} --type merge -p '{{\"spec\":{{\"execute\":true}}}}'`"
        );
    }
    Ok(())
}

/// The recovery report from the policies' and drills' status.
async fn report(scope: &Scope, args: ReportArgs) -> Result<(), Error> {
    let p = scope.policies().list(&ListParams::default()).await?.items;
    let d = scope.drills().list(&ListParams::default()).await?.items;
    let title = if scope.all {
        "every namespace".to_owned()
    } else {
        format!("namespace {}", scope.ns)
    };
    let r = report::build(&title, &p, &d, Timestamp::now());
    let text = render(&r, args.out.output, || match args.format {
        Format::Markdown => report::markdown(&r),
        Format::Html => report::html(&r),
    })?;
    match args.output_file {
        Some(path) => {
            std::fs::write(&path, text).map_err(|e| Error::Write(path.clone(), e))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// Prints the agent logs of every pod `target` ran in `ns`, oldest first, each under a header
/// naming the pod. Fails when none is found or a pod's log could not be read (the others are
/// still printed).
async fn agent_logs(
    client: &Client,
    ns: &str,
    target: &logs::Target,
    tail: Option<i64>,
) -> Result<(), Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut selectors = vec![logs::pod_selector(target)];
    if target.kind == logs::Kind::DrillSchedule {
        let requests: Api<RestoreRequest> = Api::namespaced(client.clone(), ns);
        let made = requests
            .list(&ListParams::default().labels(&logs::drill_requests(&target.name)))
            .await?;
        selectors.extend(made.items.iter().map(|rr| {
            logs::pod_selector(&logs::Target {
                kind: logs::Kind::RestoreRequest,
                name: rr.name_any(),
            })
        }));
    }
    let mut found: Vec<Pod> = Vec::new();
    for selector in &selectors {
        for pod in pods
            .list(&ListParams::default().labels(selector))
            .await?
            .items
        {
            if !found.iter().any(|p| p.name_any() == pod.name_any()) {
                found.push(pod);
            }
        }
    }
    if found.is_empty() {
        return Err(Error::Failed(format!(
            "no agent pods of {target} in namespace {ns} (a Job's pods go with the Job's history)"
        )));
    }
    found.sort_by_key(|p| (p.creation_timestamp().map(|t| t.0), p.name_any()));
    let params = LogParams {
        container: Some("agent".into()),
        tail_lines: tail,
        ..LogParams::default()
    };
    let mut unread = Vec::new();
    for pod in &found {
        let labels = pod.labels();
        let label = |k: &str| labels.get(k).map_or("-", String::as_str);
        println!(
            "==> pod/{} ({} {}) <==",
            pod.name_any(),
            label(lifeboat_api::names::LABEL_ROLE),
            label(lifeboat_api::names::LABEL_ASSET)
        );
        match pods.logs(&pod.name_any(), &params).await {
            Ok(text) => print!("{text}"),
            Err(e) => {
                eprintln!("pod/{}: {e}", pod.name_any());
                unread.push(pod.name_any());
            }
        }
    }
    if unread.is_empty() {
        Ok(())
    } else {
        Err(Error::Failed(format!(
            "the logs of {} could not be read",
            unread.join(", ")
        )))
    }
}

/// The drills over a period, from their evidence records: needs no cluster.
fn evidence_report(
    dir: &std::path::Path,
    since: Option<&lifeboat_api::duration::Duration>,
    format: Format,
    out: output::Format,
    output: Option<&std::path::Path>,
) -> Result<(), Error> {
    use kubectl_lifeboat::evidence_report;
    if out == output::Format::Table && matches!(format, Format::Html) {
        return Err(Error::Input(
            "--evidence writes Markdown only (--format markdown)".into(),
        ));
    }
    let loaded = evidence_report::load(dir)
        .map_err(|e| Error::Input(format!("reading {}: {e}", dir.display())))?;
    let now = Timestamp::now();
    let from = match since {
        Some(d) => Some(
            jiff::SignedDuration::try_from(d.as_std())
                .ok()
                .and_then(|d| now.checked_sub(d).ok())
                .ok_or_else(|| Error::Input(format!("--since {d}: too long")))?,
        ),
        None => None,
    };
    let summary = evidence_report::summarize(loaded, from, now);
    let text = render(&summary.to_json(), out, || {
        evidence_report::markdown(&summary)
    })?;
    match output {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| Error::Write(path.to_owned(), e))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}
