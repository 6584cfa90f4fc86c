//! `lifeboat-agent`: backup, restore, verify, list, prune, adopt and drill.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jiff::Timestamp;
use lifeboat_agent::error::{AgentError, Result};
use lifeboat_agent::jobs::{self, Env};
use lifeboat_agent::layout::{S3Role, Scope, Store};
use lifeboat_agent::signing::{SigningKey, Unsigned};
use lifeboat_api::agent_job::{
    AgentCatalogJob, AgentJob, AgentRestoreJob, BACKUP_VOLUME_DIR, JOB_ENV, KubernetesStateScope,
    SECRETS_DIR,
};
use lifeboat_api::agent_result::{
    AgentSummary, ChecksReport, CopyOutcome, ErrorClass, SUMMARY_VERSION, TerminationMessage, Verb,
};
use lifeboat_api::common::{Destination, SecretKeyRef};
use lifeboat_api::ident::Identifiers;
use lifeboat_api::{BackupPolicy, Duration};

mod pitr_cli;

#[derive(Parser)]
#[command(
    version,
    about = "Lifeboat agent: backs up, restores, verifies and drills PostgreSQL, Redis and buckets",
    long_about = "Lifeboat agent: backs up, restores, verifies and drills PostgreSQL, Redis and S3 buckets.\n\n\
Inside a Job the operator passes a LIFEBOAT_JOB document and mounts Secrets as files. On a laptop, \
point it at the same resources as YAML files (--policy-file) and a backup directory (--dir).\n\n\
Backups live in <dir or bucket prefix>/<namespace>/<policy>/<id>/, their metadata signed with the \
namespace's key (--signing-key); `adopt` moves backups of earlier agents into that layout.\n\n\
Exit codes: 0 ok, 2 usage, 3 config, 4 source unreachable, 5 auth, 6 not found, 7 storage, \
8 integrity, 9 timeout, 10 validation or objective missed, 11 tool failed, 12 Secret not found, \
13 out of scope, 14 target unsupported."
)]
struct Cli {
    /// Log as JSON lines (for log collectors) instead of text: the operator's switch.
    #[arg(long, global = true, env = "LIFEBOAT_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

/// Logs go to stderr as the operator's do (stdout carries the commands' results): text for
/// people, JSON lines with `--log-json`; `RUST_LOG` filters. Colour only on a terminal, never in
/// a pod's log.
fn init_logging(json: bool) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[derive(Subcommand)]
enum Command {
    /// Back up the assets of a BackupPolicy (metadata is written last, after every checksum).
    Backup(BackupArgs),
    /// Restore a backup; shows the plan unless --execute. Checksums are verified first.
    Restore(RestoreArgs),
    /// Apply a policy's retention: dry run unless --execute. The newest backups (minKeep) are
    /// never deleted, and a pass deleting more than the policy's maxDeletePercent (default
    /// half) of an asset's backups is refused.
    Prune(PruneArgs),
    /// Recompute the checksums of stored backups.
    Verify(VerifyArgs),
    /// List complete backups.
    List(ListArgs),
    /// Each asset's newest complete backup (or the one asked for) at a location, every metadata
    /// verified, without any BackupPolicy: what a rebuilt cluster restores from. Inside a Job
    /// the document names the location; on a laptop, --dir or --location-file.
    Catalog(CatalogArgs),
    /// Move a policy's backups from the layout of earlier agents (`<policy>/<id>/`, unsigned)
    /// into `<namespace>/<policy>/<id>/` with signed metadata: dry run unless --execute. Each
    /// backup's checksums are re-read, the copy verified, and only then the old copy deleted;
    /// a rerun resumes. For the platform team, who knows which namespace they belong to.
    Adopt(AdoptArgs),
    /// Run the validation checks of a LIFEBOAT_JOB document (the operator's validation Job).
    Validate(ValidateArgs),
    /// Write a finished drill's evidence record next to the backups it restored (the
    /// `evidence` Job the operator runs; the record comes in LIFEBOAT_JOB).
    Evidence(EvidenceArgs),
    /// Post a finished drill's result to its webhook, once (the `notify` Job the operator runs;
    /// the message comes in LIFEBOAT_JOB, the URL from the mounted Secret file).
    Notify(NotifyArgs),
    /// A disaster-recovery drill: back up, lose the traffic after it, restore, validate, and
    /// report the achieved RPO and RTO against the objectives.
    Drill(DrillArgs),
    /// A physical base backup of a PostgreSQL asset (pg_basebackup over the replication
    /// protocol), stored as every backup is: what a point-in-time restore starts from.
    BaseBackup(pitr_cli::BaseBackupArgs),
    /// Stream a PostgreSQL asset's WAL into the store for ever, from a replication slot
    /// Lifeboat owns (pg_receivewal); the segment being written is stored every
    /// --partial-every.
    WalArchive(pitr_cli::WalArchiveArgs),
    /// Drop the replication slot of a PostgreSQL asset whose archiver is stopped (the release Job
    /// the operator runs when `pointInTime` goes); a slot already gone is not an error.
    WalRelease(pitr_cli::WalReleaseArgs),
    /// Exit 0 when the archiver writing into --work-dir stored everything it received within
    /// --within (the archiver's readiness probe; no termination message).
    WalCaughtUp(pitr_cli::WalCaughtUpArgs),
    /// Restore a PostgreSQL asset to a point in time into an empty data directory: the newest
    /// base backup before it and the WAL after it, all verified first; shows the plan unless
    /// --execute.
    PitrRestore(pitr_cli::PitrRestoreArgs),
    /// Delete a PostgreSQL asset's archived WAL that no base backup in the store needs (run
    /// after prune): dry run unless --execute.
    WalPrune(pitr_cli::WalPruneArgs),
}

// The arguments of `backup`: one struct per subcommand, each run by its own function.
#[derive(clap::Args)]
struct BackupArgs {
    /// A BackupPolicy YAML file (ignored when LIFEBOAT_JOB is set).
    #[arg(long)]
    policy_file: Option<PathBuf>,
    /// Only these assets (all by default).
    #[arg(long = "asset")]
    assets: Vec<String>,
    #[command(flatten)]
    scope: ScopeArgs,
    #[command(flatten)]
    place: Place,
}

// The arguments of `restore`: one struct per subcommand, each run by its own function.
#[derive(clap::Args)]
struct RestoreArgs {
    #[arg(long)]
    policy_file: Option<PathBuf>,
    #[arg(long)]
    asset: Option<String>,
    /// A backup id, or latest.
    #[arg(long, default_value = "latest")]
    backup: String,
    /// A RestoreTarget YAML (another host or database); the asset's own source otherwise.
    #[arg(long)]
    target_file: Option<PathBuf>,
    /// Carry out the restore (without it, only the plan is shown).
    #[arg(long)]
    execute: bool,
    /// For legacy backups only: accept metadata without a signature.
    #[arg(long)]
    allow_unsigned: bool,
    #[command(flatten)]
    scope: ScopeArgs,
    #[command(flatten)]
    place: Place,
}

// The arguments of `prune`: one struct per subcommand, each run by its own function.
#[derive(clap::Args)]
struct PruneArgs {
    #[arg(long)]
    policy_file: PathBuf,
    /// Only these assets (all by default).
    #[arg(long = "asset")]
    assets: Vec<String>,
    #[arg(long)]
    execute: bool,
    /// Allow a pass that deletes more than maxDeletePercent of an asset's backups.
    #[arg(long)]
    allow_mass_delete: bool,
    /// Clear what an unfinished backup left (a killed run) once idle this long. Shorter is
    /// only safe when no backup of the policy can be running.
    #[arg(long, default_value = "24h")]
    stale_after: lifeboat_api::duration::Duration,
    #[command(flatten)]
    place: Place,
}

// The arguments of `verify`: one struct per subcommand, each run by its own function.
#[derive(clap::Args)]
struct VerifyArgs {
    #[command(flatten)]
    policy: PolicyRef,
    /// One backup id (all by default).
    #[arg(long)]
    backup: Option<String>,
    /// Record each backup that verifies (`<asset>.verified.json`): retention then never
    /// deletes the newest verified backup of an asset.
    #[arg(long)]
    record: bool,
    /// For legacy backups only: accept metadata without a signature.
    #[arg(long)]
    allow_unsigned: bool,
    #[command(flatten)]
    place: Place,
}

// The arguments of `list`: one struct per subcommand, each run by its own function.
#[derive(clap::Args)]
struct ListArgs {
    #[command(flatten)]
    policy: PolicyRef,
    #[arg(long)]
    json: bool,
    /// For legacy backups only: accept metadata without a signature.
    #[arg(long)]
    allow_unsigned: bool,
    #[command(flatten)]
    place: Place,
}

// The arguments of `catalog`: one struct per subcommand, each run by its own function.
#[derive(clap::Args)]
struct CatalogArgs {
    /// The backups' directory (`<namespace>/<policy>/`); ignored when LIFEBOAT_JOB is set.
    #[arg(long)]
    policy: Option<String>,
    /// A Destination YAML (`s3: {...}` or `volume: {...}`); --dir when omitted.
    #[arg(long)]
    location_file: Option<PathBuf>,
    /// A backup id, or latest.
    #[arg(long, default_value = "latest")]
    backup: String,
    /// With latest: the newest backup snapshotted at or before this RFC 3339 instant.
    #[arg(long)]
    taken_before: Option<jiff::Timestamp>,
    /// Only these assets (all by default).
    #[arg(long = "asset")]
    assets: Vec<String>,
    #[arg(long)]
    json: bool,
    /// For legacy backups only: accept metadata without a signature.
    #[arg(long)]
    allow_unsigned: bool,
    #[command(flatten)]
    place: Place,
}

// The arguments of `adopt`: one struct per subcommand, each run by its own function.
#[derive(clap::Args)]
struct AdoptArgs {
    #[command(flatten)]
    policy: PolicyRef,
    #[arg(long)]
    execute: bool,
    #[command(flatten)]
    place: Place,
}

// The arguments of `validate`: one struct per subcommand, each run by its own function.
#[derive(clap::Args)]
struct ValidateArgs {
    /// Accepted for symmetry with restore: checks only read.
    #[arg(long)]
    execute: bool,
    /// Also write the full report of every check, for the restore of this name, beside the
    /// restored backups (`<namespace>/<policy>/restore-<name>.checks.json`): the termination
    /// message holds the counts and as many results as fit, failed ones first.
    #[arg(long, value_name = "RESTORE")]
    report: Option<String>,
    #[command(flatten)]
    place: Place,
}

// The arguments of `evidence`: one struct per subcommand, each run by its own function.
#[derive(clap::Args)]
struct EvidenceArgs {
    #[command(flatten)]
    place: Place,
}

// The arguments of `notify`: one struct per subcommand, each run by its own function.
#[derive(clap::Args)]
struct NotifyArgs {
    #[command(flatten)]
    place: Place,
}

// The arguments of `drill`: one struct per subcommand, each run by its own function.
#[derive(clap::Args)]
struct DrillArgs {
    /// Use the embedded default: PostgreSQL and Redis with sample data on loopback.
    #[arg(long)]
    demo: bool,
    #[arg(long, default_value = "30m")]
    rto: Duration,
    #[arg(long, default_value = "15m")]
    rpo: Duration,
    /// Writes between the backup and the simulated disaster, in seconds.
    #[arg(long, default_value_t = 3)]
    traffic_seconds: u64,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    place: Place,
}

/// Which policy's backups: by name in the backup directory, or from a policy file (its name and
/// destination: a directory or an S3 bucket).
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct PolicyRef {
    /// Policy name (backups in the backup directory).
    #[arg(long)]
    policy: Option<String>,
    /// A BackupPolicy YAML file: its name and destination.
    #[arg(long)]
    policy_file: Option<PathBuf>,
}

impl PolicyRef {
    /// The policy's directory and the store its backups are in.
    fn open(&self, place: &Place) -> Result<(Scope, Env)> {
        match (&self.policy, &self.policy_file) {
            (Some(name), _) => Ok((
                Scope::new(&place.namespace(None), name)?,
                place.env(None, None)?,
            )),
            (None, Some(file)) => {
                let policy: BackupPolicy = read_yaml(file)?;
                let name = policy
                    .metadata
                    .name
                    .clone()
                    .ok_or_else(|| AgentError::config("the policy has no metadata.name"))?;
                Ok((
                    Scope::new(&place.namespace(Some(&policy)), &name)?,
                    place.env(Some(&policy.spec.destination), None)?,
                ))
            }
            (None, None) => Err(AgentError::config("--policy or --policy-file is required")),
        }
    }
}

/// What a Kubernetes-state backup may read, or a restore write, when run from the command line.
/// Inside a Job the operator's document says, and these are ignored: nothing widens it.
#[derive(clap::Args)]
struct ScopeArgs {
    /// A namespace the Kubernetes-state asset may reach (repeatable).
    #[arg(long = "allow-namespace", value_name = "NS")]
    namespaces: Vec<String>,
    /// Cluster-scoped objects and every namespace.
    #[arg(long, conflicts_with = "namespaces")]
    cluster_scope: bool,
}

impl ScopeArgs {
    fn scope(&self) -> Option<KubernetesStateScope> {
        if self.cluster_scope {
            Some(KubernetesStateScope::Cluster)
        } else if self.namespaces.is_empty() {
            None
        } else {
            Some(KubernetesStateScope::Namespaces(
                self.namespaces.iter().cloned().collect(),
            ))
        }
    }
}

/// The scope of a Job's document: what the operator computed, else the document's own
/// namespace (an older operator's Job is never given more).
fn job_scope(scope: &Option<KubernetesStateScope>, namespace: &str) -> KubernetesStateScope {
    scope
        .clone()
        .unwrap_or_else(|| KubernetesStateScope::own(namespace))
}

#[derive(clap::Args)]
struct Place {
    /// Backup directory (a volume inside Jobs).
    #[arg(long, env = "LIFEBOAT_BACKUP_DIR")]
    dir: Option<PathBuf>,
    /// Where Secret keys are found as <dir>/<secret>/<key>.
    #[arg(long, env = "LIFEBOAT_SECRETS_DIR", default_value = SECRETS_DIR)]
    secrets_dir: PathBuf,
    /// The namespace whose backups these are (`<dir>/<namespace>/<policy>/`): else the policy
    /// file's metadata.namespace, else `default`. A Job's document names its own.
    #[arg(long, env = "LIFEBOAT_NAMESPACE")]
    namespace: Option<String>,
    /// The namespace's signing key, a file of at least 32 bytes: signs new backups' metadata and
    /// checks every backup read. In a Job, the mounted Secret its document names.
    #[arg(long, env = "LIFEBOAT_SIGNING_KEY_FILE")]
    signing_key: Option<PathBuf>,
}

impl Place {
    /// The namespace of backups named on the command line: `--namespace`, else the policy's
    /// own, else `default` (as kubectl would have created the policy).
    fn namespace(&self, policy: Option<&BackupPolicy>) -> String {
        self.namespace
            .clone()
            .or_else(|| policy.and_then(|p| p.metadata.namespace.clone()))
            .unwrap_or_else(|| "default".to_owned())
    }

    /// The store of `destination`: its S3 bucket (credentials from the mounted Secret files), or
    /// the backup directory (`--dir`; the mounted volume inside Jobs; `./backups` on a laptop).
    /// The signing key is the mounted Secret `signing` (a Job's document), else `--signing-key`.
    fn env(
        &self,
        destination: Option<&Destination>,
        signing: Option<&SecretKeyRef>,
    ) -> Result<Env> {
        let mut env = Env::without_store(self.secrets_dir.clone());
        env.signing_key = match (signing, &self.signing_key) {
            (Some(r), _) => Some(SigningKey::read(
                &self.secrets_dir.join(&r.name).join(&r.key),
            )?),
            (None, Some(path)) => Some(SigningKey::read(path)?),
            (None, None) => None,
        };
        if let Some(d) = destination
            && let Some(s3) = &d.s3
        {
            env.store = Store::S3(
                env.s3(s3, S3Role::Backups)?
                    .with_object_lock(d.object_lock.as_ref())?,
            );
            return Ok(env);
        }
        let in_job = std::env::var_os(JOB_ENV).is_some();
        let root = self.dir.clone().unwrap_or_else(|| {
            if in_job {
                PathBuf::from(BACKUP_VOLUME_DIR)
            } else {
                PathBuf::from("./backups")
            }
        });
        env.store = Store::Local(root);
        Ok(env)
    }
}

fn unsigned(allow: bool) -> Unsigned {
    if allow {
        Unsigned::Accept
    } else {
        Unsigned::Refuse
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    let started = Timestamp::now();
    let verb = match &cli.command {
        Command::Backup(_) => Verb::Backup,
        Command::Restore(_) => Verb::Restore,
        Command::Verify(_) => Verb::Verify,
        Command::List(_) => Verb::List,
        Command::Drill(_) => Verb::Drill,
        Command::Validate(_) => Verb::Restore,
        Command::Prune(_) => Verb::Prune,
        Command::Evidence(_) => Verb::Evidence,
        Command::Adopt(_) => Verb::Adopt,
        Command::Notify(_) => Verb::Notify,
        Command::Catalog(_) => Verb::Catalog,
        Command::BaseBackup(_) | Command::WalArchive(_) => Verb::Backup,
        Command::WalRelease(_) => Verb::Prune,
        // The archiver's readiness probe, run in its container every few seconds: it leaves no
        // summary over the archiver's termination message.
        Command::WalCaughtUp(args) => return pitr_cli::wal_caught_up(args),
        Command::PitrRestore(_) => Verb::Restore,
        Command::WalPrune(_) => Verb::Prune,
    };
    let mut checks = Checks::default();
    let outcome = run(cli.command, &mut checks);
    let mut summary = AgentSummary {
        version: SUMMARY_VERSION,
        verb,
        ok: outcome.is_ok(),
        asset: None,
        backup_id: None,
        started_at: started,
        finished_at: Timestamp::now(),
        snapshot_time: None,
        stored_bytes: None,
        sha256: None,
        error_class: None,
        message: None,
        checks: checks.results,
        retention_refused: None,
        copies: Vec::new(),
    };
    let code = match outcome {
        Ok(Some(result)) => {
            summary.asset = Some(result.asset);
            summary.backup_id = Some(result.backup_id);
            summary.snapshot_time = result.snapshot_time;
            summary.stored_bytes = result.stored_bytes;
            summary.sha256 = result.sha256;
            summary.message = result.retention_refused.clone();
            summary.retention_refused = result.retention_refused;
            summary.copies = result.copies;
            tracing::info!(
                verb = ?summary.verb,
                asset = summary.asset.as_deref(),
                backup_id = summary.backup_id.as_deref(),
                stored_bytes = summary.stored_bytes,
                "done"
            );
            0
        }
        Ok(None) => {
            tracing::info!(verb = ?summary.verb, "done");
            0
        }
        Err(e) => {
            tracing::error!(verb = ?summary.verb, class = e.class.reason(), "{}", e.message);
            summary.error_class = Some(e.class);
            summary.message = Some(e.message.clone());
            e.class.exit_code()
        }
    };
    write_termination_message(&TerminationMessage {
        summary,
        checks_report: checks.report.map(|location| ChecksReport {
            location: Some(location),
            ..ChecksReport::default()
        }),
        catalog: checks.catalog,
        point_in_time: checks.point_in_time,
    });
    if std::env::var_os("LIFEBOAT_REPORT_PEAK_RSS").is_some() {
        // The agent's own high-water mark (not its children's): what the 64 MiB target is about.
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        if let Some(line) = status.lines().find(|l| l.starts_with("VmHWM:")) {
            tracing::info!("peak RSS {}", line.trim_start_matches("VmHWM:").trim());
        }
    }
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// What a backup or restore reports to the operator.
struct Done {
    /// Why retention deleted nothing after this backup (the operator surfaces it as a
    /// condition and an Event; the backup itself counts).
    retention_refused: Option<String>,
    /// Where each off-site copy stands after a backup.
    copies: Vec<CopyOutcome>,
    asset: String,
    backup_id: String,
    snapshot_time: Option<Timestamp>,
    stored_bytes: Option<u64>,
    sha256: Option<String>,
}

/// What a validation reports beyond its verdict.
#[derive(Default)]
struct Checks {
    results: Vec<lifeboat_api::restore_request::CheckResult>,
    /// Where the full report was written.
    report: Option<String>,
    /// What `catalog` found.
    catalog: Option<lifeboat_api::agent_result::Catalog>,
    /// What a point-in-time restore uses (or, planning, would use).
    point_in_time: Option<lifeboat_api::agent_result::PointInTimePlan>,
}

/// Writes the summary where the operator reads it: `LIFEBOAT_TERMINATION_LOG`, else Kubernetes'
/// default path if the kubelet created it (an existing, writable file). Never created elsewhere,
/// so a laptop run leaves nothing in /dev.
fn write_termination_message(message: &TerminationMessage) {
    let path = match std::env::var_os("LIFEBOAT_TERMINATION_LOG") {
        Some(path) => PathBuf::from(path),
        None => {
            let default = PathBuf::from("/dev/termination-log");
            if std::fs::OpenOptions::new()
                .append(true)
                .open(&default)
                .is_err()
            {
                return;
            }
            default
        }
    };
    if let Ok(text) = message.to_json()
        && let Err(e) = std::fs::write(&path, text)
    {
        tracing::error!("cannot write the termination message: {e}");
    }
}

fn read_yaml<T: serde::de::DeserializeOwned>(path: &PathBuf) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AgentError::config(format!("{}: {e}", path.display())))?;
    serde_json::from_value(
        serde_json::to_value(
            serde_norway_ng(&text)
                .map_err(|e| AgentError::config(format!("{}: {e}", path.display())))?,
        )
        .map_err(|e| AgentError::config(e.to_string()))?,
    )
    .map_err(|e| AgentError::config(format!("{}: {e}", path.display())))
}

/// YAML to JSON through serde_json's data model (the resources are plain YAML documents).
fn serde_norway_ng(text: &str) -> std::result::Result<serde_json::Value, String> {
    serde_norway::from_str(text).map_err(|e| e.to_string())
}

/// The job document, its identifiers checked as admission checks them: a document that skipped
/// admission fails here, before any tool runs or connection opens.
fn job_document<T: serde::de::DeserializeOwned + Identifiers>() -> Result<Option<T>> {
    match std::env::var(JOB_ENV) {
        Ok(text) => {
            let job: T = serde_json::from_str(&text)
                .map_err(|e| AgentError::config(format!("{JOB_ENV}: {e}")))?;
            job.check_identifiers()
                .map_err(|e| AgentError::config(format!("{JOB_ENV}: {e}")))?;
            Ok(Some(job))
        }
        Err(_) => Ok(None),
    }
}

/// Runs one subcommand.
fn run(command: Command, checks: &mut Checks) -> Result<Option<Done>> {
    match command {
        Command::Backup(args) => backup(args),
        Command::Restore(args) => restore(args, &mut checks.point_in_time),
        Command::Verify(args) => verify(args),
        Command::Catalog(args) => catalog(args, checks),
        Command::List(args) => list(args),
        Command::Prune(args) => prune(args),
        Command::Evidence(args) => evidence(args),
        Command::Notify(args) => notify(args),
        Command::Validate(args) => validate(args, checks),
        Command::Drill(args) => drill(args),
        Command::Adopt(args) => adopt(args),
        Command::BaseBackup(args) => pitr_cli::base_backup(args),
        Command::WalArchive(args) => pitr_cli::wal_archive(args),
        Command::WalRelease(args) => pitr_cli::wal_release(args),
        // Answered by main before any summary is made.
        Command::WalCaughtUp(_) => Ok(None),
        Command::PitrRestore(args) => pitr_cli::pitr_restore(args, &mut checks.point_in_time),
        Command::WalPrune(args) => pitr_cli::wal_prune(args),
    }
}

fn backup(
    BackupArgs {
        policy_file,
        assets,
        scope: k8s_scope,
        place,
    }: BackupArgs,
) -> Result<Option<Done>> {
    let job = match job_document::<AgentJob>()? {
        Some(job) => job,
        None => {
            let path = policy_file.ok_or_else(|| {
                AgentError::config("give --policy-file (or LIFEBOAT_JOB inside a Job)")
            })?;
            let policy: BackupPolicy = read_yaml(&path)?;
            let name = policy
                .metadata
                .name
                .clone()
                .ok_or_else(|| AgentError::config("the policy has no metadata.name"))?;
            let env = place.env(Some(&policy.spec.destination), None)?;
            env.key()?;
            let scope = Scope::new(&place.namespace(Some(&policy)), &name)?;
            let slot = env.store.claim(&scope, Timestamp::now())?;
            let run = || {
                let mut last = None;
                for asset in policy
                    .spec
                    .assets
                    .iter()
                    .filter(|a| assets.is_empty() || assets.contains(&a.name))
                {
                    let m = jobs::backup(
                        &env,
                        &slot,
                        asset,
                        &policy.spec.compression,
                        policy.spec.encryption.as_ref(),
                        k8s_scope.scope().as_ref(),
                    )?;
                    println!(
                        "{}: backup {} of {} committed ({} bytes)",
                        m.asset,
                        m.backup_id,
                        m.source,
                        m.stored_bytes()
                    );
                    last = Some(m);
                }
                Ok(last.map(done))
            };
            let result = run();
            env.store.release(&slot);
            return result;
        }
    };
    if job
        .asset
        .postgres()
        .is_some_and(|pg| pg.point_in_time.is_some())
    {
        return pitr_cli::scheduled_base_backup(&job, &place);
    }
    let env = place.env(Some(&job.destination), job.signing_key.as_ref())?;
    env.key()?;
    let scope = Scope::new(&job.namespace, &job.policy)?;
    let slot = env.store.claim(&scope, Timestamp::now())?;
    let m = jobs::backup(
        &env,
        &slot,
        &job.asset,
        &job.compression,
        job.encryption.as_ref(),
        Some(&job_scope(&job.kubernetes_state_scope, &job.namespace)),
    );
    env.store.release(&slot);
    let m = m?;
    println!(
        "{}: backup {} of {} committed ({} bytes)",
        m.asset,
        m.backup_id,
        m.source,
        m.stored_bytes()
    );
    // Retention after each success, inside this policy's own directory only. A refusal
    // (mass deletion) does not undo the good backup: it is reported in the summary.
    let fresh = m.backup_id.clone();
    let mut result = done(m);
    // One listing serves retention and then every copy (what retention deleted left out).
    let asset = &job.asset.name;
    let pruned = jobs::list_asset(&env, &scope, asset).and_then(|listed| {
        jobs::prune_listed(
            &env,
            &scope,
            asset,
            listed,
            Some(&fresh),
            &job.retention,
            true,
            false,
            lifeboat_agent::retention::STALE_AFTER,
        )
    });
    let primary = match pruned {
        Ok((ids, kept)) => {
            if !ids.is_empty() {
                println!("{asset}: retention deleted {}", ids.join(", "));
            }
            Some(kept)
        }
        Err(e) => {
            tracing::warn!(asset = %asset, "retention: {e}");
            result.retention_refused = Some(e.to_string());
            None
        }
    };
    result.copies = job
        .copies
        .iter()
        .map(|copy| copy_out(&env, primary.as_deref(), &place, &job, &scope, copy, &fresh))
        .collect();
    Ok(Some(result))
}

/// Brings off-site copy `copy` up to date after the backup `fresh` counted, then applies the
/// copy's retention there. Never fails the run: the backup counts at the destination, and the
/// outcome says where the copy stands and why.
fn copy_out(
    from: &Env,
    primary: Option<&[lifeboat_agent::layout::Listed]>,
    place: &Place,
    job: &AgentJob,
    scope: &Scope,
    copy: &lifeboat_api::backup_policy::BackupCopy,
    fresh: &str,
) -> CopyOutcome {
    let asset = &job.asset.name;
    let mut progress = lifeboat_agent::copies::Progress::default();
    let mut outcome = CopyOutcome {
        name: copy.name.clone(),
        ..CopyOutcome::default()
    };
    let copied = place
        .env(Some(&copy.destination()), job.signing_key.as_ref())
        .and_then(|to| {
            lifeboat_agent::copies::bring_up_to_date(
                from,
                primary,
                &to,
                scope,
                asset,
                fresh,
                &mut progress,
            )
            .map(|()| to)
        });
    match copied {
        Ok(to) => {
            println!(
                "{asset}: copy {}: {} backup(s) copied, up to date",
                copy.name, progress.copied
            );
            let rules = copy.retention.as_ref().unwrap_or(&job.retention);
            let stale = lifeboat_agent::retention::STALE_AFTER;
            match jobs::prune(&to, scope, asset, Some(fresh), rules, true, false, stale) {
                Ok(ids) if !ids.is_empty() => println!(
                    "{asset}: copy {}: retention deleted {}",
                    copy.name,
                    ids.join(", ")
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(asset = %asset, copy = %copy.name, "retention: {e}");
                    outcome.retention_refused = Some(e.to_string());
                }
            }
        }
        Err(e) => {
            tracing::error!(asset = %asset, copy = %copy.name, class = e.class.reason(), "copy: {}", e.message);
            outcome.error_class = Some(e.class);
            outcome.error = Some(e.message);
        }
    }
    outcome.copied = progress.copied;
    (outcome.newest_id, outcome.newest_snapshot_time) = progress.newest.unzip();
    outcome
}

fn restore(
    RestoreArgs {
        policy_file,
        asset,
        backup,
        target_file,
        execute,
        allow_unsigned,
        scope: k8s_scope,
        place,
    }: RestoreArgs,
    point_in_time: &mut Option<lifeboat_api::agent_result::PointInTimePlan>,
) -> Result<Option<Done>> {
    let (job, k8s_scope) = match job_document::<AgentRestoreJob>()? {
        Some(job) => {
            let scope = job_scope(&job.kubernetes_state_scope, &job.namespace);
            (job, Some(scope))
        }
        None => {
            let path = policy_file.ok_or_else(|| {
                AgentError::config("give --policy-file and --asset (or LIFEBOAT_JOB inside a Job)")
            })?;
            let policy: BackupPolicy = read_yaml(&path)?;
            let name = asset.ok_or_else(|| AgentError::config("give --asset"))?;
            let a = policy
                .spec
                .assets
                .iter()
                .find(|a| a.name == name)
                .cloned()
                .ok_or_else(|| AgentError::not_found(format!("no asset {name:?} in the policy")))?;
            let job = AgentRestoreJob {
                namespace: place.namespace(Some(&policy)),
                policy: policy.metadata.name.clone().unwrap_or_default(),
                backup_id: backup,
                asset: a,
                target: target_file.as_ref().map(read_yaml).transpose()?,
                location: policy.spec.destination.clone(),
                options: Default::default(),
                identity_secret: policy
                    .spec
                    .encryption
                    .as_ref()
                    .and_then(|e| e.identity_secret.clone()),
                signing_key: None,
                allow_unsigned,
                kubernetes_state_scope: k8s_scope.scope(),
            };
            (job, k8s_scope.scope())
        }
    };
    let mut env = place.env(Some(&job.location), job.signing_key.as_ref())?;
    env.unsigned = unsigned(job.allow_unsigned);
    if let Some(target) = job.target.as_ref().and_then(|t| t.data_volume()) {
        // A point in time: base backups and WAL, chosen by the time, not `backup_id`.
        return pitr_cli::restore_data_volume(&job, &env, target, execute, point_in_time);
    }
    let scope = Scope::new(&job.namespace, &job.policy)?;
    let listed = env
        .store
        .find(&scope, &job.backup_id, &job.asset.name, env.trust()?)?;
    let mut plan = format!(
        "{} backup {} ({}), checksums verified",
        job.asset.name, listed.id, listed.metadata.source
    );
    if !execute {
        let local = jobs::verify(&env, &listed)?;
        if listed.metadata.encryption.is_some() {
            jobs::decoding(&env, &listed, &local, job.identity_secret.as_ref())?;
            plan.push_str(", the identity decrypts it");
        }
        if job.asset.kind() == lifeboat_api::backup_policy::AssetKind::KubernetesState {
            let dry = jobs::plan_kubernetes_state(
                &env,
                &listed,
                job.target.as_ref(),
                job.identity_secret.as_ref(),
                k8s_scope.as_ref(),
            )?;
            plan.push_str(&format!("; {dry}"));
        }
        println!("plan: restore {plan}; run again with --execute to restore");
        return Ok(None);
    }
    // Each asset's restore verifies every checksum (in the one read that also decodes the
    // artifact) before it touches the target: no separate verification pass (and, from
    // S3, no second download) here.
    let into = jobs::restore(
        &env,
        &listed,
        &job.asset,
        job.target.as_ref(),
        &job.options,
        job.identity_secret.as_ref(),
        k8s_scope.as_ref(),
    )?;
    println!("restored {plan} into {into}");
    Ok(Some(done(listed.metadata)))
}

fn verify(
    VerifyArgs {
        policy,
        backup,
        record,
        allow_unsigned,
        place,
    }: VerifyArgs,
) -> Result<Option<Done>> {
    let (scope, mut env) = policy.open(&place)?;
    env.unsigned = unsigned(allow_unsigned);
    let all = env.store.list(&scope, env.trust()?)?;
    let chosen: Vec<_> = all
        .iter()
        .filter(|l| backup.as_ref().is_none_or(|b| &l.id == b))
        .collect();
    if chosen.is_empty() {
        return Err(AgentError::not_found(format!(
            "no complete backup to verify in {scope}"
        )));
    }
    for l in &chosen {
        jobs::verify(&env, l)?;
        if record {
            env.store.record_verification(
                l,
                &lifeboat_api::agent_result::VerificationRecord {
                    backup_id: l.id.clone(),
                    asset: l.metadata.asset.clone(),
                    verified_at: Timestamp::now(),
                    method: lifeboat_api::agent_result::VerificationMethod::Checksums,
                    drill_id: None,
                },
            )?;
        }
        println!(
            "ok {} {} ({} artifacts){}",
            l.id,
            l.metadata.asset,
            l.metadata.artifacts.len(),
            if record { ", recorded as verified" } else { "" }
        );
    }
    Ok(None)
}

fn catalog(
    CatalogArgs {
        policy,
        location_file,
        backup,
        taken_before,
        assets,
        json,
        allow_unsigned,
        place,
    }: CatalogArgs,
    checks: &mut Checks,
) -> Result<Option<Done>> {
    let job = match job_document::<AgentCatalogJob>()? {
        Some(job) => job,
        None => AgentCatalogJob {
            namespace: place.namespace(None),
            policy: policy.ok_or_else(|| {
                AgentError::config("give --policy (or LIFEBOAT_JOB inside a Job)")
            })?,
            backup_id: backup,
            taken_before,
            assets,
            location: match &location_file {
                Some(path) => read_yaml(path)?,
                None => Destination {
                    volume: None,
                    s3: None,
                    object_lock: None,
                },
            },
            signing_key: None,
            allow_unsigned,
        },
    };
    let mut env = place.env(Some(&job.location), job.signing_key.as_ref())?;
    env.unsigned = unsigned(job.allow_unsigned);
    let scope = Scope::new(&job.namespace, &job.policy)?;
    let catalog = lifeboat_agent::catalog::read(
        &env.store,
        &scope,
        env.trust()?,
        &lifeboat_agent::catalog::Wanted {
            backup_id: &job.backup_id,
            taken_before: job.taken_before,
            assets: &job.assets,
        },
    )?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&catalog)
                .map_err(|e| AgentError::config(e.to_string()))?
        );
    } else {
        for e in &catalog.entries {
            println!(
                "{} {} {} {} {} bytes{}{}",
                e.asset,
                e.kind.as_str(),
                e.backup_id,
                e.snapshot_time,
                e.stored_bytes,
                if e.encrypted { ", encrypted" } else { "" },
                if e.verified { ", verified" } else { "" }
            );
        }
    }
    checks.catalog = Some(catalog);
    Ok(None)
}

fn list(
    ListArgs {
        policy,
        json,
        allow_unsigned,
        place,
    }: ListArgs,
) -> Result<Option<Done>> {
    let (scope, mut env) = policy.open(&place)?;
    env.unsigned = unsigned(allow_unsigned);
    let all = env.store.list(&scope, env.trust()?)?;
    if json {
        let ms: Vec<_> = all.iter().map(|l| &l.metadata).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&ms).map_err(|e| AgentError::config(e.to_string()))?
        );
    } else {
        println!(
            "{:<26} {:<16} {:<10} {:>12}  {:<32} VERIFIED",
            "BACKUP", "ASSET", "KIND", "BYTES", "SNAPSHOT"
        );
        for l in &all {
            let m = &l.metadata;
            let verified = l.verified.as_ref().map_or("-".to_owned(), |v| {
                format!("{} ({:?})", v.verified_at, v.method)
            });
            println!(
                "{:<26} {:<16} {:<10} {:>12}  {:<32} {verified}",
                l.id,
                m.asset,
                m.kind.as_str(),
                m.stored_bytes(),
                m.snapshot_time.to_string()
            );
        }
    }
    Ok(None)
}

fn prune(
    PruneArgs {
        policy_file,
        assets,
        execute,
        allow_mass_delete,
        stale_after,
        place,
    }: PruneArgs,
) -> Result<Option<Done>> {
    let policy: BackupPolicy = read_yaml(&policy_file)?;
    let name = policy
        .metadata
        .name
        .clone()
        .ok_or_else(|| AgentError::config("the policy has no metadata.name"))?;
    let env = place.env(Some(&policy.spec.destination), None)?;
    let scope = Scope::new(&place.namespace(Some(&policy)), &name)?;
    for asset in policy
        .spec
        .assets
        .iter()
        .filter(|a| assets.is_empty() || assets.contains(&a.name))
    {
        let ids = jobs::prune(
            &env,
            &scope,
            &asset.name,
            None,
            &policy.spec.retention,
            execute,
            allow_mass_delete,
            jiff::SignedDuration::try_from(stale_after.as_std())
                .map_err(|e| AgentError::config(format!("--stale-after: {e}")))?,
        )?;
        let verb = if execute { "deleted" } else { "would delete" };
        if ids.is_empty() {
            println!("{}: nothing to delete", asset.name);
        }
        for id in ids {
            println!("{}: {verb} {id}", asset.name);
        }
    }
    if !execute {
        println!("dry run: rerun with --execute to delete");
    }
    Ok(None)
}

fn evidence(EvidenceArgs { place }: EvidenceArgs) -> Result<Option<Done>> {
    let job = job_document::<lifeboat_api::agent_job::AgentEvidenceJob>()?.ok_or_else(|| {
        AgentError::config("evidence writes the record of a LIFEBOAT_JOB document")
    })?;
    let env = place.env(Some(&job.location), job.signing_key.as_ref())?;
    let written = lifeboat_agent::evidence::write(&env, &job)?;
    println!(
        "drill {}: evidence written to {written}",
        job.evidence.drill_id
    );
    Ok(None)
}

fn notify(NotifyArgs { place }: NotifyArgs) -> Result<Option<Done>> {
    let job = job_document::<lifeboat_api::agent_job::AgentNotifyJob>()?
        .ok_or_else(|| AgentError::config("notify sends the message of a LIFEBOAT_JOB document"))?;
    lifeboat_agent::notify::send(&place.env(None, None)?, &job)?;
    println!("the drill's result was sent to the webhook");
    Ok(None)
}

fn validate(
    ValidateArgs {
        execute: _,
        report,
        place,
    }: ValidateArgs,
    checks: &mut Checks,
) -> Result<Option<Done>> {
    let job = job_document::<lifeboat_api::agent_job::AgentValidateJob>()?
        .ok_or_else(|| AgentError::config("validate runs the checks of a LIFEBOAT_JOB document"))?;
    let env = Env::without_store(place.secrets_dir.clone());
    let results = lifeboat_agent::validate::run(&env, &job);
    if let Some(name) = report {
        // The checks' verdict stands whether or not their report could be stored.
        let written = job
            .assets
            .first()
            .ok_or_else(|| AgentError::config("no restored asset to report beside"))
            .and_then(|a| place.env(Some(&a.location), None))
            .and_then(|env| lifeboat_agent::validate::write_report(&env, &job, &name, &results));
        match written {
            Ok(location) => {
                println!("report of every check written to {location}");
                checks.report = Some(location);
            }
            Err(e) => tracing::warn!("the report was not written: {e}"),
        }
    }
    checks.results = results;
    let checks = &checks.results;
    for c in checks.iter() {
        let note = if c.message.is_empty() {
            String::new()
        } else {
            format!(": {}", c.message)
        };
        println!(
            "{} {} ({} attempts){note}",
            if c.passed { "ok  " } else { "FAIL" },
            c.name,
            c.attempts
        );
    }
    let failed = checks.iter().filter(|c| !c.passed).count();
    if failed > 0 {
        return Err(AgentError::new(
            ErrorClass::Validation,
            format!("{failed} of {} checks failed", checks.len()),
        ));
    }
    Ok(None)
}

fn drill(
    DrillArgs {
        demo,
        rto,
        rpo,
        traffic_seconds,
        json,
        place,
    }: DrillArgs,
) -> Result<Option<Done>> {
    if !demo {
        return Err(AgentError::config(
            "only the embedded default is available here: run `lifeboat-agent drill --demo` (drills of your own resources run as DrillSchedules)",
        ));
    }
    let namespace = place.namespace(None);
    let key_file = place
        .signing_key
        .clone()
        .or_else(lifeboat_agent::signing::default_key_file)
        .ok_or_else(|| {
            AgentError::config("no HOME to keep the signing key in: give --signing-key")
        })?;
    let key = SigningKey::read_or_create(&key_file)?;
    let dir = place.dir.unwrap_or_else(|| PathBuf::from("./backups"));
    let report = lifeboat_agent::drill::run(
        &dir,
        &Scope::new(&namespace, lifeboat_agent::drill::POLICY)?,
        key,
        &rto,
        &rpo,
        std::time::Duration::from_secs(traffic_seconds),
    )?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| AgentError::config(e.to_string()))?
        );
    } else {
        print!("{}", report.text());
    }
    if !report.passed {
        return Err(AgentError::new(
            ErrorClass::Validation,
            "the drill failed a check or missed an objective",
        ));
    }
    Ok(None)
}

fn adopt(
    AdoptArgs {
        policy,
        execute,
        place,
    }: AdoptArgs,
) -> Result<Option<Done>> {
    let namespace = place.namespace.clone().ok_or_else(|| {
        AgentError::config("adopt needs --namespace: the namespace the old backups belong to")
    })?;
    let (scope, env) = policy.open(&place)?;
    let adopted = lifeboat_agent::adopt::adopt(&env, &namespace, scope.policy(), execute)?;
    let mut failed = 0;
    for a in &adopted {
        use lifeboat_agent::adopt::Outcome;
        let what = match &a.outcome {
            Outcome::Planned => "would adopt".to_owned(),
            Outcome::Adopted => "adopted".to_owned(),
            Outcome::Resumed => "adopted (copied by an earlier run)".to_owned(),
            Outcome::Failed(e) => {
                failed += 1;
                format!("NOT adopted, the old copy is kept: {e}")
            }
        };
        println!("{} {}: {what}", a.id, a.asset);
    }
    if adopted.is_empty() {
        println!("no backup of {} in the old layout", scope.policy());
    }
    if !execute {
        println!(
            "dry run: rerun with --execute to move them into {}",
            env.store.describe_scope(&scope)
        );
    }
    if failed > 0 {
        return Err(AgentError::integrity(format!(
            "{failed} of {} backups not adopted (their old copies are kept); rerun once fixed",
            adopted.len()
        )));
    }
    Ok(None)
}

fn done(m: lifeboat_api::agent_result::BackupMetadata) -> Done {
    Done {
        retention_refused: None,
        copies: Vec::new(),
        stored_bytes: Some(m.stored_bytes()),
        sha256: m.artifacts.first().map(|a| a.sha256.clone()),
        snapshot_time: Some(m.snapshot_time),
        backup_id: m.backup_id,
        asset: m.asset,
    }
}
