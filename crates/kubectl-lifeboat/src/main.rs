//! `kubectl lifeboat`: status, on-demand backups, restores, drills and the recovery report.
//! Installed as `kubectl-lifeboat` on the PATH, kubectl runs it as `kubectl lifeboat ...`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use kubectl_lifeboat::{BACKUP_NOW, DRILL_NOW, FIELD_MANAGER, report, status};
use lifeboat_api::common::RestoreTarget;
use lifeboat_api::{BackupPolicy, DrillSchedule, RestoreRequest};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "kubectl-lifeboat",
    version,
    about = "Lifeboat from kubectl: backup status and RPO, on-demand backups, restores, drills, and the recovery report for auditors"
)]
struct Cli {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    /// Every namespace (status and report).
    #[arg(short = 'A', long, global = true)]
    all_namespaces: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One line per asset: newest good backup, RPO now against the objective, failures, Ready.
    Status,
    /// On-demand backups.
    Backup {
        #[command(subcommand)]
        what: BackupCommand,
    },
    /// Create a RestoreRequest: a plan unless --execute (then it restores at once).
    Restore {
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
    },
    /// Disaster-recovery drills.
    Drill {
        #[command(subcommand)]
        what: DrillCommand,
    },
    /// The recovery report: RPO per asset, drills' RTO/RPO against objectives, gaps.
    Report {
        #[arg(long, value_enum, default_value_t = Format::Markdown)]
        format: Format,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BackupCommand {
    /// Back up every asset of POLICY now (the scheduled CronJobs are unaffected).
    Now { policy: String },
}

#[derive(Subcommand)]
enum DrillCommand {
    /// Run the DrillSchedule NAME now.
    Run { name: String },
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
    #[error("{0}")]
    Input(String),
    #[error("writing {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
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

async fn run(cli: Cli) -> Result<(), Error> {
    let client = Client::try_default().await?;
    let ns = cli
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let scoped = |c: &Client| -> (Api<BackupPolicy>, Api<DrillSchedule>) {
        if cli.all_namespaces {
            (Api::all(c.clone()), Api::all(c.clone()))
        } else {
            (
                Api::namespaced(c.clone(), &ns),
                Api::namespaced(c.clone(), &ns),
            )
        }
    };
    match cli.command {
        Command::Status => {
            let (policies, _) = scoped(&client);
            let list = policies.list(&ListParams::default()).await?.items;
            if list.is_empty() {
                println!("No BackupPolicies found.");
                return Ok(());
            }
            print!(
                "{}",
                status::table(&status::asset_lines(&list, Timestamp::now()))
            );
        }
        Command::Backup {
            what: BackupCommand::Now { policy },
        } => {
            let api: Api<BackupPolicy> = Api::namespaced(client, &ns);
            let t = token();
            api.patch(
                &policy,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {BACKUP_NOW: t}}})),
            )
            .await?;
            println!(
                "backup of {ns}/{policy} requested (token {t}); follow it with `kubectl lifeboat status`"
            );
        }
        Command::Drill {
            what: DrillCommand::Run { name },
        } => {
            let api: Api<DrillSchedule> = Api::namespaced(client, &ns);
            let t = token();
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {DRILL_NOW: t}}})),
            )
            .await?;
            println!(
                "drill {ns}/{name} requested (token {t}); follow it with `kubectl get drill -n {ns} {name} -w`"
            );
        }
        Command::Restore {
            policy,
            from,
            into,
            assets,
            name,
            execute,
            rollback_on_failure,
        } => {
            let targets: Vec<RestoreTarget> = match into {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
                    serde_yaml::from_str(&text)
                        .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?
                }
                None => Vec::new(),
            };
            let name = name.unwrap_or_else(|| {
                format!(
                    "{policy}-restore-{}",
                    Timestamp::now().strftime("%Y%m%d-%H%M%S")
                )
            });
            let obj = json!({
                "apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
                "metadata": {"name": name},
                "spec": {"source": {"policy": policy, "backupId": from}, "assets": assets,
                         "targets": targets, "execute": execute,
                         "rollbackOnFailure": rollback_on_failure}
            });
            let api: Api<RestoreRequest> = Api::namespaced(client, &ns);
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Apply(&obj),
            )
            .await?;
            if execute {
                println!(
                    "restorerequest {ns}/{name} created and executing; follow it with `kubectl get rr -n {ns} {name} -w`"
                );
            } else {
                println!(
                    "restorerequest {ns}/{name} created: a plan only. Read it with `kubectl get rr -n {ns} {name} -o yaml`, then restore with `kubectl patch rr -n {ns} {name} --type merge -p '{{\"spec\":{{\"execute\":true}}}}'`"
                );
            }
        }
        Command::Report { format, output } => {
            let (policies, drills) = scoped(&client);
            let p = policies.list(&ListParams::default()).await?.items;
            let d = drills.list(&ListParams::default()).await?.items;
            let scope = if cli.all_namespaces {
                "every namespace".to_owned()
            } else {
                format!("namespace {ns}")
            };
            let r = report::build(&scope, &p, &d, Timestamp::now());
            let text = match format {
                Format::Markdown => report::markdown(&r),
                Format::Html => report::html(&r),
            };
            match output {
                Some(path) => {
                    std::fs::write(&path, text).map_err(|e| Error::Write(path.clone(), e))?;
                    eprintln!("wrote {}", path.display());
                }
                None => print!("{text}"),
            }
        }
    }
    Ok(())
}
