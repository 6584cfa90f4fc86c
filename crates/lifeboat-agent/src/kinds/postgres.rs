//! PostgreSQL's driver: `pg_dump` per database, `pg_restore` from a verified, indexed copy.

use std::io::Write as _;
use std::time::Duration;

use jiff::Timestamp;
use lifeboat_api::agent_result::{ArtifactInfo, CanaryMarker, ErrorClass};
use lifeboat_api::backup_policy::PostgresAsset;
use lifeboat_api::common::Target;

use super::{Capture, Captured, Driver, Restore, not_its_kind};
use crate::error::{AgentError, Result};
use crate::jobs::{Env, PROBE_TIMEOUT, wait_until_serving};
use crate::{postgres, stream};

impl Driver for PostgresAsset {
    fn canary(&self, env: &Env, id: &str, now: Timestamp) -> Result<CanaryMarker> {
        crate::canary::write_postgres(&env.pg(&self.connection)?, &self.databases, id, now)
    }

    fn capture(&self, cx: &Capture, created: &mut Vec<String>) -> Result<Captured> {
        let conn = cx.env.pg(&self.connection)?;
        let mut extra = Vec::new();
        for s in &self.dump_options.schemas {
            extra.push(format!("--schema={s}"));
        }
        for s in &self.dump_options.exclude_schemas {
            extra.push(format!("--exclude-schema={s}"));
        }
        for t in &self.dump_options.exclude_tables {
            extra.push(format!("--exclude-table={t}"));
        }
        if self.dump_options.no_owner {
            extra.push("--no-owner".into());
        }
        if !self.allow_empty {
            for db in &self.databases {
                postgres::ensure_not_empty(&conn, db)?;
            }
        }
        let mut artifacts = Vec::new();
        let mut snapshot: Option<Timestamp> = None;
        let mut tool = None;
        for db in &self.databases {
            let name = format!("{}.{db}.pgdump{}", cx.asset.name, cx.suffix);
            created.push(name.clone());
            let (stored, at, ran) = postgres::backup(&conn, db, &extra, &mut |r| {
                cx.env.store.put(cx.slot, &name, r, cx.encoding)
            })?;
            snapshot = Some(snapshot.map_or(at, |s| s.min(at)));
            tool = Some(ran);
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
            self.databases.join(",")
        );
        Ok((
            artifacts,
            snapshot.unwrap_or_else(Timestamp::now),
            match tool {
                Some(t) => t,
                None => crate::tools::version("pg_dump")?,
            },
            source,
        ))
    }

    fn newest_canary(
        &self,
        env: &Env,
        to: Option<&Target>,
        backup_id: &str,
        bound: Duration,
    ) -> Result<Option<CanaryMarker>> {
        let target = match to {
            Some(Target::Postgres(t)) => Some(t),
            _ => None,
        };
        let conn = env.pg(target.map_or(&self.connection, |t| &t.connection))?;
        let databases = match target.and_then(|t| t.database.clone()) {
            Some(db) => vec![db],
            None => self.databases.clone(),
        };
        let mut oldest: Option<CanaryMarker> = None;
        for db in &databases {
            let Some(m) = crate::canary::newest_postgres(&conn, db, bound)? else {
                return Err(AgentError::new(
                    ErrorClass::Validation,
                    format!(
                        "database {db} holds no canary marker: the restore lacks the data written just before backup {backup_id}"
                    ),
                ));
            };
            if oldest.as_ref().is_none_or(|o| m.written_at < o.written_at) {
                oldest = Some(m);
            }
        }
        Ok(oldest)
    }

    fn restore(&self, cx: &Restore) -> Result<String> {
        let (conn, rename, create) = match cx.to {
            Some(Target::Postgres(t)) => (
                cx.env.pg(&t.connection)?,
                t.database.clone(),
                t.create_database,
            ),
            None => (cx.env.pg(&self.connection)?, None, false),
            Some(_) => return Err(not_its_kind(cx.asset, "PostgreSQL (postgres)")),
        };
        // Every database's dump is decoded and verified (one read of the stored bytes)
        // before the first pg_restore: a corrupt artifact never touches a target.
        let mut dumps = Vec::new();
        for a in &cx.listed.metadata.artifacts {
            let db = a
                .name
                .strip_prefix(&format!("{}.", cx.asset.name))
                .and_then(|rest| rest.split(".pgdump").next())
                .ok_or_else(|| {
                    AgentError::integrity(format!("unexpected artifact name {}", a.name))
                })?;
            // pg_restore --jobs needs a seekable file, so the dump is staged in TMPDIR,
            // indexed on the way so that its TOC gets the data offsets a streamed pg_dump
            // could not write (see pgarchive).
            let scratch = tempfile::NamedTempFile::new()
                .map_err(|e| AgentError::storage("temporary file", e))?;
            let tmp_err = |e| AgentError::storage("temporary file", e);
            let mut out = crate::pgarchive::Indexing {
                inner: std::io::BufWriter::with_capacity(
                    256 * 1024,
                    scratch.reopen().map_err(tmp_err)?,
                ),
                indexer: crate::pgarchive::Indexer::new(),
            };
            stream::unpack_verified(
                &cx.local.dir.join(&a.name),
                cx.decoding,
                &a.sha256,
                a.stored_bytes,
                &mut out,
            )?;
            out.inner.flush().map_err(tmp_err)?;
            let mut indexer = out.indexer;
            indexer.finish();
            let patched = indexer
                .patch(&mut scratch.reopen().map_err(tmp_err)?)
                .map_err(tmp_err)?;
            match indexer.failure() {
                None => eprintln!("{db}: {patched} data offsets written into the dump's TOC"),
                Some(why) => eprintln!(
                    "{db}: dump not indexed ({why}); pg_restore will scan it for its data"
                ),
            }
            dumps.push((db.to_owned(), scratch));
        }
        wait_until_serving(&format!("PostgreSQL {}:{}", conn.host, conn.port), || {
            postgres::query_within(&conn, "postgres", "SELECT 1", PROBE_TIMEOUT).map(drop)
        })?;
        let mut done = Vec::new();
        for (db, dump) in &dumps {
            let into = rename.clone().unwrap_or_else(|| db.clone());
            postgres::restore(
                &conn,
                dump.path(),
                &into,
                create,
                cx.options.postgres_jobs,
                cx.options.clean,
            )?;
            done.push(format!("postgres://{}:{}/{into}", conn.host, conn.port));
        }
        Ok(done.join(", "))
    }
}
