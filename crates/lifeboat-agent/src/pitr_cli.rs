//! The command line of continuous protection: `base-backup`, `wal-archive` and `pitr-restore`.
//! Inside the operator's pods (`LIFEBOAT_JOB` set) the base backup and the archiver take
//! everything from the document instead: the asset, its `pointInTime` role, the destination.

use std::path::{Path, PathBuf};

use lifeboat_agent::crypto::{Identities, Recipients};
use lifeboat_agent::error::{AgentError, Result};
use lifeboat_agent::layout::Scope;
use lifeboat_agent::pitr::{self, PointInTime};
use lifeboat_agent::stream::Encoding;
use lifeboat_agent::wal::{self, Archiver, WalPlace};
use lifeboat_api::Duration;
use lifeboat_api::agent_job::{AgentJob, AgentRestoreJob, JOB_ENV, RESTORE_VOLUME_DIR};
use lifeboat_api::agent_result::PointInTimePlan;
use lifeboat_api::backup_policy::PointInTimeArchiving;
use lifeboat_api::common::{DataVolumeTarget, Destination, PostgresConnection};

use crate::{Done, Place, read_yaml};

/// Which asset's base backups and WAL: `<namespace>/<policy>/` in the store, the asset's name.
#[derive(clap::Args)]
pub(crate) struct AssetRef {
    /// The policy whose store directory holds the backups (from LIFEBOAT_JOB when set).
    #[arg(long)]
    policy: Option<String>,
    /// The PostgreSQL asset (from LIFEBOAT_JOB when set).
    #[arg(long)]
    asset: Option<String>,
    /// A Destination YAML (`s3: {...}` or `volume: {...}`); --dir when omitted.
    #[arg(long)]
    location_file: Option<PathBuf>,
    #[command(flatten)]
    place: Place,
}

impl AssetRef {
    fn open(&self) -> Result<(WalPlace, lifeboat_agent::jobs::Env)> {
        let (Some(policy), Some(asset)) = (&self.policy, &self.asset) else {
            return Err(AgentError::config("give --policy and --asset"));
        };
        let scope = Scope::new(&self.place.namespace(None), policy)?;
        let destination: Option<Destination> =
            self.location_file.as_ref().map(read_yaml).transpose()?;
        Ok((
            WalPlace::new(scope, asset)?,
            self.place.env(destination.as_ref(), None)?,
        ))
    }
}

/// How to reach the server: a PostgresConnection YAML (host, port, user, passwordSecret read
/// from the mounted Secret files, sslMode), and how to encode what is stored.
#[derive(clap::Args)]
pub(crate) struct Source {
    /// A PostgresConnection YAML file; its role needs the REPLICATION attribute.
    #[arg(long)]
    connection_file: Option<PathBuf>,
    /// zstd level (0 stores uncompressed).
    #[arg(long, default_value_t = 3)]
    compression_level: i32,
    /// Encrypt to this age recipient (repeatable), as a policy's `encryption` does.
    #[arg(long = "recipient")]
    recipients: Vec<String>,
}

impl Source {
    fn open(
        &self,
        env: &lifeboat_agent::jobs::Env,
    ) -> Result<(lifeboat_agent::postgres::Conn, Encoding)> {
        let path = self
            .connection_file
            .as_ref()
            .ok_or_else(|| AgentError::config("give --connection-file"))?;
        let c: PostgresConnection = read_yaml(path)?;
        let encoding = Encoding {
            level: (self.compression_level > 0).then_some(self.compression_level),
            recipients: if self.recipients.is_empty() {
                None
            } else {
                Some(Recipients::parse(&self.recipients)?)
            },
        };
        Ok((env.pg(&c)?, encoding))
    }
}

#[derive(clap::Args)]
pub(crate) struct BaseBackupArgs {
    #[command(flatten)]
    asset: AssetRef,
    #[command(flatten)]
    source: Source,
}

#[derive(clap::Args)]
pub(crate) struct WalArchiveArgs {
    #[command(flatten)]
    asset: AssetRef,
    #[command(flatten)]
    source: Source,
    /// pg_receivewal's directory: keep it across restarts of the archiver.
    #[arg(long)]
    work_dir: PathBuf,
    /// How often the segment being written is stored (the RPO).
    #[arg(long, default_value = "10s")]
    partial_every: Duration,
}

#[derive(clap::Args)]
pub(crate) struct WalReleaseArgs {
    #[command(flatten)]
    asset: AssetRef,
    #[command(flatten)]
    source: Source,
}

#[derive(clap::Args)]
pub(crate) struct WalCaughtUpArgs {
    /// The archiver's --work-dir.
    #[arg(long)]
    work_dir: PathBuf,
    /// The longest time since the archiver was last caught up that still counts as caught up.
    #[arg(long)]
    within: Duration,
}

/// The archiver's readiness probe: success when it was caught up within `--within`. It writes
/// no termination message (it runs beside the archiver, in its container).
pub(crate) fn wal_caught_up(args: &WalCaughtUpArgs) -> std::process::ExitCode {
    let now = jiff::Timestamp::now();
    match wal::caught_up_at(&args.work_dir) {
        Ok(Some(at)) => {
            let ago = now.duration_since(at);
            if ago <= jiff::SignedDuration::from_secs(args.within.as_secs() as i64) {
                println!("caught up {}s ago", ago.as_secs());
                std::process::ExitCode::SUCCESS
            } else {
                println!(
                    "last caught up {}s ago, more than {}",
                    ago.as_secs(),
                    args.within
                );
                std::process::ExitCode::FAILURE
            }
        }
        Ok(None) => {
            println!("not caught up since the archiver started");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            println!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[derive(clap::Args)]
pub(crate) struct PitrRestoreArgs {
    #[command(flatten)]
    asset: AssetRef,
    /// An RFC 3339 time, or latest.
    #[arg(long)]
    point_in_time: PointInTime,
    /// The empty data directory to restore into.
    #[arg(long)]
    data_dir: PathBuf,
    /// An age identity file, for encrypted backups.
    #[arg(long)]
    identity_file: Option<PathBuf>,
    /// Carry out the restore (without it, only the plan is shown).
    #[arg(long)]
    execute: bool,
}

#[derive(clap::Args)]
pub(crate) struct WalPruneArgs {
    #[command(flatten)]
    asset: AssetRef,
    /// Delete (without it, only list what would go).
    #[arg(long)]
    execute: bool,
}

pub(crate) fn wal_prune(args: WalPruneArgs) -> Result<Option<Done>> {
    let (place, env) = args.asset.open()?;
    for name in wal::prune(&env.store, env.key()?, &place, args.execute)? {
        println!(
            "{} {name}",
            if args.execute {
                "deleted"
            } else {
                "would delete"
            }
        );
    }
    Ok(None)
}

pub(crate) fn base_backup(args: BaseBackupArgs) -> Result<Option<Done>> {
    let (place, env) = args.asset.open()?;
    let (conn, encoding) = args.source.open(&env)?;
    let m = wal::base_backup(&env.store, env.key()?, &place, &conn, &encoding)?;
    println!("{}", m.backup_id);
    Ok(Some(crate::done(m)))
}

pub(crate) fn wal_archive(args: WalArchiveArgs) -> Result<Option<Done>> {
    let (place, env, conn, encoding, partial_every) = match crate::job_document::<AgentJob>()? {
        Some(job) => {
            let j = from_job(&job, &args.asset.place)?;
            let every =
                std::time::Duration::from_secs(u64::from(j.archiving.partial_upload_seconds));
            (j.place, j.env, j.conn, j.encoding, every)
        }
        None => {
            let (place, env) = args.asset.open()?;
            let (conn, encoding) = args.source.open(&env)?;
            (place, env, conn, encoding, args.partial_every.as_std())
        }
    };
    Archiver {
        store: &env.store,
        key: env.key()?,
        place,
        conn,
        work_dir: args.work_dir,
        partial_every,
        encoding,
        stop: wal::stop_on_sigterm()?,
    }
    .run()?;
    Ok(None)
}

/// Drops the slot of an asset whose archiver is gone, with the archiver's own document and
/// connection (the release Job the operator makes from the archiver's pod template).
pub(crate) fn wal_release(args: WalReleaseArgs) -> Result<Option<Done>> {
    let (place, conn) = match crate::job_document::<AgentJob>()? {
        Some(job) => {
            let j = from_job(&job, &args.asset.place)?;
            (j.place, j.conn)
        }
        None => {
            let (place, env) = args.asset.open()?;
            (place, args.source.open(&env)?.0)
        }
    };
    let slot = wal::slot_name(&place.scope, &place.asset);
    if wal::release_slot(&conn, &place)? {
        println!("dropped the replication slot {slot}");
    } else {
        println!("no replication slot {slot}: released already");
    }
    Ok(None)
}

/// What a base backup or the archiver of a `pointInTime` asset needs, read from its document.
struct FromJob<'a> {
    place: WalPlace,
    env: lifeboat_agent::jobs::Env,
    conn: lifeboat_agent::postgres::Conn,
    encoding: Encoding,
    archiving: &'a PointInTimeArchiving,
}

fn from_job<'a>(job: &'a AgentJob, place: &Place) -> Result<FromJob<'a>> {
    let pg = job.asset.postgres().ok_or_else(|| {
        AgentError::config(format!(
            "{JOB_ENV}: asset {} is not PostgreSQL",
            job.asset.name
        ))
    })?;
    let archiving = pg.point_in_time.as_ref().ok_or_else(|| {
        AgentError::config(format!(
            "{JOB_ENV}: asset {} has no pointInTime",
            job.asset.name
        ))
    })?;
    let env = place.env(Some(&job.destination), job.signing_key.as_ref())?;
    let conn = env.pg(&archiving.connection(&pg.connection))?;
    let encoding = Encoding {
        level: lifeboat_agent::jobs::level(&job.compression),
        recipients: job
            .encryption
            .as_ref()
            .map(|e| Recipients::parse(&e.recipients))
            .transpose()?,
    };
    Ok(FromJob {
        place: WalPlace::new(Scope::new(&job.namespace, &job.policy)?, &job.asset.name)?,
        env,
        conn,
        encoding,
        archiving,
    })
}

/// The scheduled backup of a `pointInTime` asset: a base backup, then the policy's retention
/// over the asset's base backups, then the WAL that no kept base backup needs (so the chain from
/// the oldest kept base backup to now is never broken). A refused retention pass deletes no
/// WAL either, and does not undo the good base backup.
///
/// Refused (`NotFound`) while the archiver's slot does not exist: a base backup started before
/// it begins in WAL nobody archives, and would stand as a chain with a gap.
pub(crate) fn scheduled_base_backup(job: &AgentJob, place: &Place) -> Result<Option<Done>> {
    let j = from_job(job, place)?;
    let key = j.env.key()?;
    // The slot's name is ours (`wal::slot_name`: `[a-z0-9_]`), never user text.
    let slot = wal::slot_name(&j.place.scope, &j.place.asset);
    let found = lifeboat_agent::postgres::query(
        &j.conn,
        "postgres",
        &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'"),
    )?;
    if found.trim() != "1" {
        return Err(AgentError::new(
            lifeboat_api::agent_result::ErrorClass::NotFound,
            format!(
                "the WAL archiver's slot {slot} does not exist yet: a base backup now would \
                 start in WAL nobody archives (wait for ArchiverReady, then back up)"
            ),
        ));
    }
    let m = wal::base_backup(&j.env.store, key, &j.place, &j.conn, &j.encoding)?;
    println!(
        "{}: base backup {} committed ({} bytes)",
        m.asset,
        m.backup_id,
        m.stored_bytes()
    );
    let fresh = m.backup_id.clone();
    let mut result = crate::done(m);
    let pruned = lifeboat_agent::jobs::prune(
        &j.env,
        &j.place.scope,
        &job.asset.name,
        Some(&fresh),
        &job.retention,
        true,
        false,
        lifeboat_agent::retention::STALE_AFTER,
    )
    .and_then(|ids| {
        if !ids.is_empty() {
            println!("{}: retention deleted {}", job.asset.name, ids.join(", "));
        }
        wal::prune(&j.env.store, key, &j.place, true)
    });
    match pruned {
        Ok(segments) if !segments.is_empty() => println!(
            "{}: retention deleted {} WAL segment(s)",
            job.asset.name,
            segments.len()
        ),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(asset = %job.asset.name, "retention: {e}");
            result.retention_refused = Some(e.to_string());
        }
    }
    Ok(Some(result))
}

pub(crate) fn pitr_restore(
    args: PitrRestoreArgs,
    reported: &mut Option<PointInTimePlan>,
) -> Result<Option<Done>> {
    let (place, env) = args.asset.open()?;
    let identities = args
        .identity_file
        .map(|p| {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| AgentError::config(format!("{}: {e}", p.display())))?;
            Identities::parse(&text, &p.display().to_string())
        })
        .transpose()?;
    restore_point_in_time(
        &env,
        &place,
        args.point_in_time,
        &args.data_dir,
        identities,
        args.execute,
        reported,
    )
}

/// A RestoreRequest's `dataVolume` target (`restore` with the operator's document): the
/// asset's base backup and WAL into `subPath` of the PVC the operator mounted at
/// [`RESTORE_VOLUME_DIR`], as the server's UID the pod runs as.
pub(crate) fn restore_data_volume(
    job: &AgentRestoreJob,
    env: &lifeboat_agent::jobs::Env,
    target: &DataVolumeTarget,
    execute: bool,
    reported: &mut Option<PointInTimePlan>,
) -> Result<Option<Done>> {
    let place = WalPlace::new(Scope::new(&job.namespace, &job.policy)?, &job.asset.name)?;
    let point_in_time: PointInTime = target.point_in_time.parse()?;
    let data_dir = data_dir_in(Path::new(RESTORE_VOLUME_DIR), &target.sub_path)?;
    let identities = job
        .identity_secret
        .as_ref()
        .map(|r| env.identities(r))
        .transpose()?;
    restore_point_in_time(
        env,
        &place,
        point_in_time,
        &data_dir,
        identities,
        execute,
        reported,
    )
}

/// `sub_path` under `root`, refused unless it only descends (admission's rule, held again here
/// because the agent writes there).
fn data_dir_in(root: &Path, sub_path: &str) -> Result<PathBuf> {
    let relative = Path::new(sub_path);
    let descends = relative
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if sub_path.is_empty() || !descends {
        return Err(AgentError::config(format!(
            "subPath {sub_path:?} must be a relative path without '..'"
        )));
    }
    Ok(root.join(relative))
}

/// Plans the restore to `point_in_time` and reports the plan (the operator shows it); with
/// `execute`, writes the data directory.
fn restore_point_in_time(
    env: &lifeboat_agent::jobs::Env,
    place: &WalPlace,
    point_in_time: PointInTime,
    data_dir: &Path,
    identities: Option<Identities>,
    execute: bool,
    reported: &mut Option<PointInTimePlan>,
) -> Result<Option<Done>> {
    let plan = pitr::plan(&env.store, env.key()?, place, point_in_time)?;
    *reported = Some(plan.summary());
    println!(
        "base backup {} (timeline {}, from {}), {} WAL segment(s){}, to {}",
        plan.base.id,
        plan.timeline,
        plan.start_lsn,
        plan.segments.len(),
        if plan.segments.last().is_some_and(|s| s.partial) {
            " (the last a partial copy)"
        } else {
            ""
        },
        match plan.target {
            PointInTime::Latest => "the end of the archived WAL".to_owned(),
            PointInTime::At(t) => t.to_string(),
        }
    );
    if !execute {
        println!(
            "plan only: add --execute to restore into {}",
            data_dir.display()
        );
        return Ok(None);
    }
    let restored = pitr::restore(&env.store, place, &plan, data_dir, identities)?;
    println!(
        "restored {} with {} segment(s) into {}: start PostgreSQL on it to recover{}",
        restored.backup_id,
        restored.segments,
        data_dir.display(),
        restored
            .recovers_to
            .map_or_else(String::new, |t| format!(" to {t}"))
    );
    Ok(Some(Done {
        retention_refused: None,
        copies: Vec::new(),
        asset: place.asset.clone(),
        backup_id: restored.backup_id,
        snapshot_time: restored.recovers_to,
        stored_bytes: None,
        sha256: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sub_path_only_descends_into_the_volume() {
        let root = Path::new(RESTORE_VOLUME_DIR);
        assert_eq!(
            data_dir_in(root, "pgdata/16").unwrap(),
            root.join("pgdata/16")
        );
        for bad in ["", "/etc", "../other", "pgdata/../../x", "./."] {
            assert!(data_dir_in(root, bad).is_err(), "{bad:?} accepted");
        }
    }
}
