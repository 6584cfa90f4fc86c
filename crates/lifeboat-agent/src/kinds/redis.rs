//! Redis's driver: an RDB from a replica's full sync; restored into a data directory or
//! loaded over replication.

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use lifeboat_api::agent_job::{POD_IP_ENV, REDIS_LOAD_PORT};
use lifeboat_api::agent_result::{ArtifactInfo, CanaryMarker};
use lifeboat_api::backup_policy::RedisAsset;
use lifeboat_api::common::Target;

use super::{Capture, Captured, Driver, Restore, not_its_kind};
use crate::error::{AgentError, Result};
use crate::jobs::{Env, PROBE_TIMEOUT, wait_until_serving};
use crate::{redis, stream};

impl Driver for RedisAsset {
    fn canary(&self, env: &Env, id: &str, now: Timestamp) -> Result<CanaryMarker> {
        crate::canary::write_redis(&env.redis(&self.connection)?, id, now)
    }

    fn capture(&self, cx: &Capture, created: &mut Vec<String>) -> Result<Captured> {
        let conn = cx.env.redis(&self.connection)?;
        if !self.allow_empty {
            redis::ensure_not_empty(&conn)?;
        }
        let name = format!("{}.rdb{}", cx.asset.name, cx.suffix);
        created.push(name.clone());
        let (stored, at) = redis::backup(&conn, &mut |r| {
            cx.env.store.put(cx.slot, &name, r, cx.encoding)
        })?;
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

    fn newest_canary(
        &self,
        env: &Env,
        to: Option<&Target>,
        _: &str,
        bound: Duration,
    ) -> Result<Option<CanaryMarker>> {
        let conn = match to {
            Some(Target::Redis(t)) => &t.connection,
            _ => &self.connection,
        };
        crate::canary::newest_redis(&env.redis(conn)?, bound)
    }

    fn restore(&self, cx: &Restore) -> Result<String> {
        let into = match cx.to {
            Some(Target::Redis(t)) => Some(t),
            None => None,
            Some(_) => return Err(not_its_kind(cx.asset, "Redis (redis)")),
        };
        let artifact = cx
            .listed
            .metadata
            .artifacts
            .first()
            .ok_or_else(|| AgentError::integrity("backup has no artifact"))?;
        for a in &cx.listed.metadata.artifacts {
            stream::verify(&cx.local.dir.join(&a.name), &a.sha256, a.stored_bytes)?;
        }
        let conn = cx
            .env
            .redis(into.map_or(&self.connection, |t| &t.connection))?;
        let stored = cx.local.dir.join(&artifact.name);
        // dataDir names a directory the agent writes (Redis on a host); without it the
        // target is a server the agent reaches only over the network (a pod with its own
        // volume), loaded over replication.
        match self.restore_data_dir(into) {
            Some(data_dir) => {
                redis::restore(
                    &conn,
                    &stored,
                    cx.decoding,
                    Path::new(&data_dir),
                    "dump.rdb",
                )?;
                Ok(format!("{data_dir}/dump.rdb (restart Redis to load it)"))
            }
            None => {
                let rdb = tempfile::NamedTempFile::new()
                    .map_err(|e| AgentError::storage("temporary file", e))?;
                {
                    let file = rdb
                        .reopen()
                        .map_err(|e| AgentError::storage("temporary file", e))?;
                    stream::unpack(&stored, cx.decoding, std::io::BufWriter::new(&file))?;
                    file.sync_all()
                        .map_err(|e| AgentError::storage("temporary file", e))?;
                }
                let keys = redis::check_rdb(rdb.path())?;
                wait_until_serving(&format!("Redis {}:{}", conn.host, conn.port), || {
                    conn.run_within(0, &["PING"], PROBE_TIMEOUT).map(drop)
                })?;
                let loaded = crate::redis_load::load(&conn, rdb.path(), keys, load_listener()?)?;
                Ok(format!(
                    "redis://{}:{}: {} keys loaded over replication, {}",
                    conn.host,
                    conn.port,
                    loaded.keys,
                    loaded.durable.describe()
                ))
            }
        }
    }
}

/// Where a Redis load listens: every address of the pod on [`REDIS_LOAD_PORT`], advertised
/// as the pod's IP from the downward API.
fn load_listener() -> Result<crate::redis_load::Listener> {
    let ip = std::env::var(POD_IP_ENV)
        .ok()
        .and_then(|v| v.parse::<std::net::IpAddr>().ok())
        .ok_or_else(|| {
            AgentError::config(format!(
                "a Redis target without dataDir is loaded over replication, which needs the pod's IP in {POD_IP_ENV}"
            ))
        })?;
    let any: std::net::IpAddr = if ip.is_ipv6() {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    };
    crate::redis_load::Listener::bind(std::net::SocketAddr::new(any, REDIS_LOAD_PORT), ip)
}
