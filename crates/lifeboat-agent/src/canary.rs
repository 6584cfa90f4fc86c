//! Canary markers: RPO measured from the data itself. Just before a backup (when the asset asks)
//! the agent writes a marker carrying the backup id and the time into the source; a drill writes
//! one more at its simulated disaster. After a restore, the newest marker the target holds says
//! how recent the restored data really is: achieved RPO = disaster − that marker's time, and the
//! disaster's own marker must be absent (writes after the backup are not in it).
//!
//! PostgreSQL: a row of `lifeboat_canary (id, written_at)` in each backed-up database.
//! Redis: a member of the sorted set `lifeboat:canary` in database 0, scored by milliseconds.
//! A bucket: an object `.lifeboat-canary/<milliseconds, 13 digits>-<id>` under the asset's
//! prefix, so the newest is the last name in a listing and the restore copies it like any other.

use jiff::Timestamp;
use lifeboat_api::agent_result::{CanaryMarker, ErrorClass};

use crate::error::{AgentError, Result};
use object_store::ObjectStoreExt as _;

use crate::{postgres, redis};

/// The sorted set of Redis markers.
pub(crate) const REDIS_KEY: &str = "lifeboat:canary";

/// Ids go into SQL and commands as literals: only what backup ids are made of is accepted.
fn check_id(id: &str) -> Result<()> {
    if !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(())
    } else {
        Err(AgentError::config(format!(
            "canary id {id:?}: letters, digits, - and _ only"
        )))
    }
}

/// `at` to the millisecond, the precision markers are read back with: the marker a backup's
/// metadata records is then exactly the one a restore holds.
fn stored_precision(at: Timestamp) -> Timestamp {
    Timestamp::from_millisecond(at.as_millisecond()).unwrap_or(at)
}

/// Writes the marker `id` into every database of a PostgreSQL source.
pub fn write_postgres(
    conn: &postgres::Conn,
    databases: &[String],
    id: &str,
    at: Timestamp,
) -> Result<CanaryMarker> {
    check_id(id)?;
    let at = stored_precision(at);
    for db in databases {
        postgres::query(
            conn,
            db,
            &format!(
                "CREATE TABLE IF NOT EXISTS lifeboat_canary (id text PRIMARY KEY, written_at timestamptz NOT NULL); \
                 INSERT INTO lifeboat_canary (id, written_at) VALUES ('{id}', '{at}') \
                 ON CONFLICT (id) DO UPDATE SET written_at = EXCLUDED.written_at"
            ),
        )?;
    }
    Ok(CanaryMarker {
        id: id.to_owned(),
        written_at: at,
    })
}

/// Writes the marker `id` into a Redis source.
pub fn write_redis(conn: &redis::Conn, id: &str, at: Timestamp) -> Result<CanaryMarker> {
    check_id(id)?;
    let at = stored_precision(at);
    conn.run(
        0,
        &["ZADD", REDIS_KEY, &at.as_millisecond().to_string(), id],
    )?;
    Ok(CanaryMarker {
        id: id.to_owned(),
        written_at: at,
    })
}

/// The newest marker in a PostgreSQL database, read within `bound`; `None` when it holds none.
pub fn newest_postgres(
    conn: &postgres::Conn,
    database: &str,
    bound: std::time::Duration,
) -> Result<Option<CanaryMarker>> {
    let row = match postgres::query_within(
        conn,
        database,
        "SELECT id || ' ' || (extract(epoch FROM written_at) * 1000)::bigint FROM lifeboat_canary ORDER BY written_at DESC LIMIT 1",
        bound,
    ) {
        Ok(row) => row,
        // No table: no marker was ever restored here.
        Err(e) if e.class == ErrorClass::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    parse(&row)
}

/// The newest marker in a Redis server, read within `bound`; `None` when it holds none.
pub fn newest_redis(
    conn: &redis::Conn,
    bound: std::time::Duration,
) -> Result<Option<CanaryMarker>> {
    let out = conn.run_within(0, &["ZREVRANGE", REDIS_KEY, "0", "0", "WITHSCORES"], bound)?;
    parse(&out.lines().map(str::trim).collect::<Vec<_>>().join(" "))
}

/// Where bucket markers live under an asset's prefix.
pub const BUCKET_DIR: &str = ".lifeboat-canary";

/// Writes the marker `id` into a bucket (an S3 location, for a backup's source).
pub fn write_bucket(
    env: &crate::jobs::Env,
    location: &lifeboat_api::common::S3Location,
    id: &str,
    at: Timestamp,
) -> Result<CanaryMarker> {
    check_id(id)?;
    let at = stored_precision(at);
    let s3 = env.s3(location, crate::layout::S3Role::Data)?;
    let name = format!("{:013}-{id}", at.as_millisecond());
    let key = s3.key(&[BUCKET_DIR, &name]);
    let marker = CanaryMarker {
        id: id.to_owned(),
        written_at: at,
    };
    let body = serde_json::to_vec(&marker)
        .map_err(|e| AgentError::config(format!("serializing the canary marker: {e}")))?;
    s3.rt
        .block_on(s3.store.put(&key, object_store::PutPayload::from(body)))
        .map_err(|e| s3.err(e))?;
    Ok(marker)
}

/// The newest marker in a bucket; `None` when it holds none.
pub fn newest_bucket(
    env: &crate::jobs::Env,
    location: &lifeboat_api::common::S3Location,
) -> Result<Option<CanaryMarker>> {
    use futures::TryStreamExt as _;
    use object_store::ObjectStore as _;
    let s3 = env.s3(location, crate::layout::S3Role::Data)?;
    let dir = s3.key(&[BUCKET_DIR]);
    let listed: Vec<object_store::ObjectMeta> = s3
        .rt
        .block_on(s3.store.list(Some(&dir)).try_collect())
        .map_err(|e| s3.err(e))?;
    let newest = listed
        .iter()
        .filter_map(|m| m.location.filename().map(str::to_owned))
        .max();
    newest
        .map(|name| match name.split_once('-') {
            Some((ms, id)) => parse(&format!("{id} {ms}")),
            None => Err(AgentError::integrity(format!(
                "unreadable canary marker {name:?}"
            ))),
        })
        .transpose()
        .map(Option::flatten)
}

/// `"<id> <milliseconds>"`, or nothing.
fn parse(text: &str) -> Result<Option<CanaryMarker>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let bad = || AgentError::integrity(format!("unreadable canary marker {text:?}"));
    let (id, ms) = text.split_once(' ').ok_or_else(bad)?;
    let ms: i64 = ms.trim().parse().map_err(|_| bad())?;
    let written_at = Timestamp::from_millisecond(ms).map_err(|_| bad())?;
    Ok(Some(CanaryMarker {
        id: id.to_owned(),
        written_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_literals_only() {
        assert!(check_id("20261124T101500Z-2").is_ok());
        assert!(check_id("x'); DROP TABLE t; --").is_err());
        assert!(check_id("").is_err());
    }

    #[test]
    fn markers_parse_or_are_refused() {
        let m = parse("20261124T101500Z 1795000000123").unwrap().unwrap();
        assert_eq!(m.id, "20261124T101500Z");
        assert_eq!(m.written_at.as_millisecond(), 1_795_000_000_123);
        assert_eq!(parse("  ").unwrap(), None);
        assert!(parse("no-score").is_err());
    }
}
