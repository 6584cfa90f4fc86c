//! The work itself, shared by the CLI, the Jobs the operator creates and the local drill:
//! back up an asset, restore one, verify and list what is stored.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use lifeboat_api::agent_result::{ArtifactInfo, BackupMetadata, METADATA_SCHEMA_VERSION, ToolInfo};
use lifeboat_api::backup_policy::{Asset, AssetKind, Compression, CompressionAlgorithm};
use lifeboat_api::common::{PostgresConnection, RedisConnection, RestoreTarget, SecretKeyRef};
use lifeboat_api::restore_request::RestoreOptions;

use crate::error::{AgentError, Result};
use crate::layout::{Listed, Slot, Store};
use crate::{postgres, redis, stream};

/// Where secrets are read from and backups written to.
pub struct Env {
    pub store: Store,
    /// Secret `name`/`key` is the file `<secrets_dir>/<name>/<key>`.
    pub secrets_dir: PathBuf,
}

impl Env {
    pub fn secret(&self, r: &SecretKeyRef) -> Result<String> {
        let path = self.secrets_dir.join(&r.name).join(&r.key);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            AgentError::config(format!(
                "Secret {}/{} (expected at {}): {e}",
                r.name,
                r.key,
                path.display()
            ))
        })?;
        Ok(text.trim_end_matches(['\n', '\r']).to_owned())
    }

    pub fn pg(&self, c: &PostgresConnection) -> Result<postgres::Conn> {
        Ok(postgres::Conn {
            host: c.host.clone(),
            port: c.port,
            user: c.user.clone(),
            password: c
                .password_secret
                .as_ref()
                .map(|s| self.secret(s))
                .transpose()?,
            sslmode: serde_json::to_value(c.ssl_mode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "prefer".into()),
        })
    }

    pub fn redis(&self, c: &RedisConnection) -> Result<redis::Conn> {
        Ok(redis::Conn {
            host: c.host.clone(),
            port: c.port,
            username: c.username.clone(),
            password: c
                .password_secret
                .as_ref()
                .map(|s| self.secret(s))
                .transpose()?,
            tls: c.tls,
        })
    }
}

fn level(c: &Compression) -> Option<i32> {
    match c.algorithm {
        CompressionAlgorithm::Zstd => Some(i32::from(c.level)),
        CompressionAlgorithm::None => None,
    }
}

fn suffix(c: &Compression) -> &'static str {
    match c.algorithm {
        CompressionAlgorithm::Zstd => ".zst",
        CompressionAlgorithm::None => "",
    }
}

/// Backs up `asset` into the backup directory `dir` (already claimed as `id`) and commits its
/// metadata last. On failure the asset's partial files are removed: nothing half-written stays.
pub fn backup(
    env: &Env,
    slot: &Slot,
    asset: &Asset,
    compression: &Compression,
) -> Result<BackupMetadata> {
    let started = Timestamp::now();
    let mut created: Vec<String> = Vec::new();
    let result = backup_artifacts(env, slot, asset, compression, &mut created);
    let (artifacts, snapshot, tool, source) = match result {
        Ok(v) => v,
        Err(e) => {
            env.store.discard(slot, &created);
            return Err(e);
        }
    };
    let metadata = BackupMetadata {
        schema_version: METADATA_SCHEMA_VERSION,
        backup_id: slot.id.clone(),
        policy: slot.policy.clone(),
        asset: asset.name.clone(),
        kind: asset
            .kind()
            .ok_or_else(|| AgentError::config("asset has no kind"))?,
        tool,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        source,
        started_at: started,
        finished_at: Timestamp::now(),
        snapshot_time: snapshot,
        artifacts,
        compression: match compression.algorithm {
            CompressionAlgorithm::Zstd => format!("zstd:{}", compression.level),
            CompressionAlgorithm::None => "none".into(),
        },
        encryption: None,
    };
    env.store.commit(slot, &metadata)?;
    Ok(metadata)
}

type Artifacts = (Vec<ArtifactInfo>, Timestamp, ToolInfo, String);

fn backup_artifacts(
    env: &Env,
    slot: &Slot,
    asset: &Asset,
    compression: &Compression,
    created: &mut Vec<String>,
) -> Result<Artifacts> {
    let lvl = level(compression);
    match asset.kind() {
        Some(AssetKind::Postgres) => {
            let pg = asset
                .postgres
                .as_ref()
                .ok_or_else(|| AgentError::config("postgres asset without settings"))?;
            let conn = env.pg(&pg.connection)?;
            let mut extra = Vec::new();
            for s in &pg.dump_options.schemas {
                extra.push(format!("--schema={s}"));
            }
            for s in &pg.dump_options.exclude_schemas {
                extra.push(format!("--exclude-schema={s}"));
            }
            for t in &pg.dump_options.exclude_tables {
                extra.push(format!("--exclude-table={t}"));
            }
            if pg.dump_options.no_owner {
                extra.push("--no-owner".into());
            }
            let mut artifacts = Vec::new();
            let mut snapshot: Option<Timestamp> = None;
            for db in &pg.databases {
                let name = format!("{}.{db}.pgdump{}", asset.name, suffix(compression));
                created.push(name.clone());
                let (stored, at) = postgres::backup(&conn, db, &extra, &mut |r| {
                    env.store.put(slot, &name, r, lvl)
                })?;
                snapshot = Some(snapshot.map_or(at, |s| s.min(at)));
                artifacts.push(ArtifactInfo {
                    name,
                    raw_bytes: stored.raw_bytes,
                    stored_bytes: stored.stored_bytes,
                    sha256: stored.sha256,
                });
            }
            let source = format!(
                "postgres://{}:{}/{}",
                conn.host,
                conn.port,
                pg.databases.join(",")
            );
            Ok((
                artifacts,
                snapshot.unwrap_or_else(Timestamp::now),
                crate::tools::version("pg_dump")?,
                source,
            ))
        }
        Some(AssetKind::Redis) => {
            let r = asset
                .redis
                .as_ref()
                .ok_or_else(|| AgentError::config("redis asset without settings"))?;
            let conn = env.redis(&r.connection)?;
            let name = format!("{}.rdb{}", asset.name, suffix(compression));
            created.push(name.clone());
            let (stored, at) = redis::backup(&conn, &mut |r| env.store.put(slot, &name, r, lvl))?;
            let artifact = ArtifactInfo {
                name,
                raw_bytes: stored.raw_bytes,
                stored_bytes: stored.stored_bytes,
                sha256: stored.sha256,
            };
            let source = format!("redis://{}:{}", conn.host, conn.port);
            Ok((
                vec![artifact],
                at,
                crate::tools::version("redis-cli")?,
                source,
            ))
        }
        Some(kind) => Err(AgentError::config(format!(
            "{} assets are not supported by this agent build yet (PostgreSQL and Redis are)",
            kind.as_str()
        ))),
        None => Err(AgentError::config(format!(
            "asset {} has no kind",
            asset.name
        ))),
    }
}

/// Checks every artifact of a listed backup against its metadata; returns the local copy.
pub fn verify(env: &Env, listed: &Listed) -> Result<crate::layout::Local> {
    let local = env.store.local(listed)?;
    for a in &listed.metadata.artifacts {
        stream::verify(&local.dir.join(&a.name), &a.sha256, a.stored_bytes)?;
    }
    Ok(local)
}

/// Restores `listed` (a backup of `asset`) into `target`, or into the asset's own source when
/// there is no target. Checksums are verified first: a corrupt backup never touches the target.
pub fn restore(
    env: &Env,
    listed: &Listed,
    asset: &Asset,
    target: Option<&RestoreTarget>,
    options: &RestoreOptions,
) -> Result<String> {
    let compressed = listed.metadata.compression.starts_with("zstd");
    match asset.kind() {
        Some(AssetKind::Postgres) => {
            let pg = asset
                .postgres
                .as_ref()
                .ok_or_else(|| AgentError::config("postgres asset without settings"))?;
            let (conn, rename, create) = match target.and_then(|t| t.postgres.as_ref()) {
                Some(t) => (
                    env.pg(&t.connection)?,
                    t.database.clone(),
                    t.create_database,
                ),
                None => (env.pg(&pg.connection)?, None, false),
            };
            // Every database's dump is decompressed and verified (one read of the stored bytes)
            // before the first pg_restore: a corrupt artifact never touches a target.
            let local = env.store.local(listed)?;
            let mut dumps = Vec::new();
            for a in &listed.metadata.artifacts {
                let db = a
                    .name
                    .strip_prefix(&format!("{}.", asset.name))
                    .and_then(|rest| rest.split(".pgdump").next())
                    .ok_or_else(|| {
                        AgentError::integrity(format!("unexpected artifact name {}", a.name))
                    })?;
                // pg_restore --jobs needs a seekable file, so the dump is staged in TMPDIR.
                let scratch = tempfile::NamedTempFile::new()
                    .map_err(|e| AgentError::storage("temporary file", e))?;
                stream::unpack_verified(
                    &local.dir.join(&a.name),
                    compressed,
                    &a.sha256,
                    a.stored_bytes,
                    std::io::BufWriter::with_capacity(256 * 1024, scratch.as_file()),
                )?;
                dumps.push((db.to_owned(), scratch));
            }
            let mut done = Vec::new();
            for (db, dump) in &dumps {
                let into = rename.clone().unwrap_or_else(|| db.clone());
                postgres::restore(
                    &conn,
                    dump.path(),
                    &into,
                    create,
                    options.postgres_jobs,
                    options.clean,
                )?;
                done.push(format!("postgres://{}:{}/{into}", conn.host, conn.port));
            }
            Ok(done.join(", "))
        }
        Some(AssetKind::Redis) => {
            let r = asset
                .redis
                .as_ref()
                .ok_or_else(|| AgentError::config("redis asset without settings"))?;
            let data_dir = target
                .and_then(|t| t.redis.as_ref())
                .and_then(|t| t.data_dir.clone())
                .or_else(|| r.data_dir.clone())
                .ok_or_else(|| {
                    AgentError::config(format!(
                        "asset {}: a Redis restore needs a dataDir to place dump.rdb in",
                        asset.name
                    ))
                })?;
            let artifact = listed
                .metadata
                .artifacts
                .first()
                .ok_or_else(|| AgentError::integrity("backup has no artifact"))?;
            let local = verify(env, listed)?;
            let conn = match target.and_then(|t| t.redis.as_ref()) {
                Some(t) => env.redis(&t.connection)?,
                None => env.redis(&r.connection)?,
            };
            redis::restore(
                &conn,
                &local.dir.join(&artifact.name),
                compressed,
                Path::new(&data_dir),
                "dump.rdb",
            )?;
            Ok(format!("{data_dir}/dump.rdb (restart Redis to load it)"))
        }
        Some(kind) => Err(AgentError::config(format!(
            "{} restores are not supported by this agent build yet",
            kind.as_str()
        ))),
        None => Err(AgentError::config(format!(
            "asset {} has no kind",
            asset.name
        ))),
    }
}

/// Applies `rules` to the backups of `asset`, and clears what unfinished backups of it left once
/// they have been idle for [`crate::retention::STALE_AFTER`]: returns what was deleted (or,
/// without `execute`, would be). A listing that fails aborts everything: an unreadable history
/// is never permission to delete.
pub fn prune(
    env: &Env,
    policy: &str,
    asset: &str,
    rules: &lifeboat_api::backup_policy::Retention,
    execute: bool,
    allow_mass_delete: bool,
) -> Result<Vec<String>> {
    let listed: Vec<Listed> = env
        .store
        .list(policy)?
        .into_iter()
        .filter(|l| l.metadata.asset == asset)
        .collect();
    let candidates: Vec<crate::retention::Candidate> = listed
        .iter()
        .map(|l| crate::retention::Candidate {
            id: l.id.clone(),
            snapshot_time: l.metadata.snapshot_time,
        })
        .collect();
    let doomed = crate::retention::select(
        asset,
        &candidates,
        rules,
        Timestamp::now(),
        50,
        allow_mass_delete,
    )
    .map_err(|e| AgentError::config(e.to_string()))?;
    // Unfinished backups (no metadata) of this asset, once idle for a day: never one in progress.
    let now = Timestamp::now();
    let stale: Vec<_> = env
        .store
        .leftovers(policy, asset)?
        .into_iter()
        .filter(|l| crate::retention::is_stale(l.newest, now, crate::retention::STALE_AFTER))
        .collect();
    if execute {
        for l in listed.iter().filter(|l| doomed.contains(&l.id)) {
            env.store.remove(l)?;
        }
        for l in &stale {
            env.store.discard(&l.slot, &l.files);
        }
    }
    Ok(doomed
        .into_iter()
        .chain(
            stale
                .iter()
                .map(|l| format!("{} (unfinished: {})", l.slot.id, l.files.join(", "))),
        )
        .collect())
}
