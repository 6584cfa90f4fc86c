//! The command line of continuous protection: `base-backup`, `wal-archive` and `pitr-restore`.

use std::path::PathBuf;

use lifeboat_agent::crypto::{Identities, Recipients};
use lifeboat_agent::error::{AgentError, Result};
use lifeboat_agent::layout::Scope;
use lifeboat_agent::pitr::{self, PointInTime};
use lifeboat_agent::stream::Encoding;
use lifeboat_agent::wal::{self, Archiver, WalPlace};
use lifeboat_api::Duration;
use lifeboat_api::common::{Destination, PostgresConnection};

use crate::{Done, Place, read_yaml};

/// Which asset's base backups and WAL: `<namespace>/<policy>/` in the store, the asset's name.
#[derive(clap::Args)]
pub(crate) struct AssetRef {
    /// The policy whose store directory holds the backups.
    #[arg(long)]
    policy: String,
    /// The PostgreSQL asset.
    #[arg(long)]
    asset: String,
    /// A Destination YAML (`s3: {...}` or `volume: {...}`); --dir when omitted.
    #[arg(long)]
    location_file: Option<PathBuf>,
    #[command(flatten)]
    place: Place,
}

impl AssetRef {
    fn open(&self) -> Result<(WalPlace, lifeboat_agent::jobs::Env)> {
        let scope = Scope::new(&self.place.namespace(None), &self.policy)?;
        let destination: Option<Destination> =
            self.location_file.as_ref().map(read_yaml).transpose()?;
        Ok((
            WalPlace::new(scope, &self.asset)?,
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
    connection_file: PathBuf,
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
        let c: PostgresConnection = read_yaml(&self.connection_file)?;
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
    let (place, env) = args.asset.open()?;
    let (conn, encoding) = args.source.open(&env)?;
    Archiver {
        store: &env.store,
        key: env.key()?,
        place,
        conn,
        work_dir: args.work_dir,
        partial_every: args.partial_every.as_std(),
        encoding,
    }
    .run()?;
    Ok(None)
}

pub(crate) fn pitr_restore(args: PitrRestoreArgs) -> Result<Option<Done>> {
    let (place, env) = args.asset.open()?;
    let plan = pitr::plan(&env.store, env.key()?, &place, args.point_in_time)?;
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
    if !args.execute {
        println!(
            "plan only: add --execute to restore into {}",
            args.data_dir.display()
        );
        return Ok(None);
    }
    let identities = args
        .identity_file
        .map(|p| {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| AgentError::config(format!("{}: {e}", p.display())))?;
            Identities::parse(&text, &p.display().to_string())
        })
        .transpose()?;
    let restored = pitr::restore(&env.store, &place, &plan, &args.data_dir, identities)?;
    println!(
        "restored {} with {} segment(s) into {}: start PostgreSQL on it to recover{}",
        restored.backup_id,
        restored.segments,
        args.data_dir.display(),
        restored
            .recovers_to
            .map_or_else(String::new, |t| format!(" to {t}"))
    );
    Ok(Some(Done {
        retention_refused: None,
        asset: place.asset,
        backup_id: restored.backup_id,
        snapshot_time: restored.recovers_to,
        stored_bytes: None,
        sha256: None,
    }))
}
