//! The local drill: the playbook's `drill --execute` on an embedded default, with no cluster and
//! no cloud. It starts PostgreSQL and Redis with sample data on loopback, backs them up to a local
//! directory, keeps writing (the traffic a real outage would lose), declares the disaster,
//! restores into scratch targets (a new database; a new Redis started on the restored RDB),
//! validates the data, and reports the achieved RPO and RTO against the objectives. Both assets
//! write canary markers (crate::canary), and one more is written at the disaster: the RPO is
//! also measured from the newest marker the restore holds. The evidence record
//! (`<dir>/<namespace>/local-drill/drill-<id>.json`, lifeboat_api::evidence) is written last.
//! Its metadata is signed like any backup's, with a key the caller keeps outside `dir`.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use lifeboat_api::Duration;
use lifeboat_api::agent_result::CanaryMarker;
use lifeboat_api::backup_policy::{Asset, AssetSource, Compression, PostgresAsset, RedisAsset};
use lifeboat_api::common::{PostgresConnection, RedisConnection, RestoreTarget, SslMode};
use lifeboat_api::evidence::{
    DrillEvidence, EVIDENCE_SCHEMA_VERSION, EvidenceAchieved, EvidenceArtifact, EvidenceCheck,
    EvidenceObjectives, EvidenceRestore, EvidenceStep, EvidenceVerdict,
};
use lifeboat_api::restore_request::RestoreOptions;
use serde::Serialize;

use crate::error::{AgentError, Result};
use crate::jobs::{self, Env};
use crate::layout::{Scope, Store};
use crate::local::{LocalPostgres, LocalRedis};
use crate::postgres;
use crate::signing::SigningKey;

pub const POLICY: &str = "local-drill";

/// What a drill measured, as printed and as JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub backup_id: String,
    pub backup_dir: String,
    pub drill_started_at: Timestamp,
    pub snapshot_time: Timestamp,
    pub disaster_at: Timestamp,
    pub validated_at: Timestamp,
    /// Disaster − snapshot: the writes a real outage would have lost.
    pub rpo_seconds: f64,
    /// Disaster → restored and validated.
    pub rto_seconds: f64,
    pub rpo_objective_seconds: u64,
    pub rto_objective_seconds: u64,
    pub rpo_met: bool,
    pub rto_met: bool,
    /// Disaster − the oldest of the newest canary markers the restored targets hold.
    pub rpo_canary_seconds: Option<f64>,
    pub checks: Vec<Check>,
    pub passed: bool,
    /// Where the evidence record was written.
    pub evidence: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// Runs the drill, writing backups of `scope` under `dir`, signed with `key`, with `traffic`
/// seconds of writes between the backup and the disaster.
pub fn run(
    dir: &Path,
    scope: &Scope,
    key: SigningKey,
    rto: &Duration,
    rpo: &Duration,
    traffic: std::time::Duration,
) -> Result<Report> {
    let drill_started_at = Timestamp::now();
    let mut env = Env::without_store(PathBuf::from("/nonexistent"));
    env.store = Store::Local(dir.to_path_buf());
    env.signing_key = Some(key);
    let sources = Sources::start()?;
    let mut steps = Steps::default();
    steps.start("backup");
    let backup = back_up(&env, scope, &sources)?;
    steps.start("traffic after the backup");
    let disaster_at = sources.disaster(&backup.id, traffic)?;
    steps.start("restore");
    let restored = restore_into_scratch(&env, scope, &backup.id, &sources)?;
    steps.start("validate");
    let (checks, found) = validate(&sources, &backup, &restored)?;
    let validated_at = Timestamp::now();
    steps.finish(validated_at);
    let times = Times {
        started: drill_started_at,
        snapshot: backup.snapshot,
        disaster: disaster_at,
        validated: validated_at,
    };
    let achieved = measure(&times, &found, rto, rpo);
    let objectives = EvidenceObjectives {
        rto_seconds: rto.as_secs(),
        rpo_seconds: rpo.as_secs(),
    };
    let evidence = evidence(
        &backup, found, &checks, steps.done, &times, &achieved, objectives,
    );
    let evidence_path = record(&env, scope, &sources.assets, &evidence)?;
    Ok(Report {
        backup_id: backup.id,
        backup_dir: backup.dir,
        drill_started_at,
        snapshot_time: backup.snapshot,
        disaster_at,
        validated_at,
        rpo_seconds: achieved.rpo_seconds.unwrap_or_default(),
        rto_seconds: achieved.rto_seconds,
        rpo_objective_seconds: rpo.as_secs(),
        rto_objective_seconds: rto.as_secs(),
        rpo_met: achieved.rpo_met.unwrap_or_default(),
        rto_met: achieved.rto_met,
        rpo_canary_seconds: achieved.rpo_canary_seconds,
        passed: achieved.rpo_met.unwrap_or_default()
            && achieved.rto_met
            && checks.iter().all(|c| c.passed),
        checks,
        evidence: evidence_path,
    })
}

/// The drill's sources on loopback, with their sample data and the assets that back them up.
struct Sources {
    // Kept for its lifetime: the server stops when it is dropped.
    _pg: LocalPostgres,
    _redis: LocalRedis,
    pg: postgres::Conn,
    redis: crate::redis::Conn,
    assets: [Asset; 2],
    /// The orders table's fingerprint at the backup (the sample data is written before it).
    orders: String,
}

impl Sources {
    fn start() -> Result<Sources> {
        eprintln!("drill: starting PostgreSQL and Redis on loopback with sample data");
        let pg_server = LocalPostgres::start()?;
        let redis_server = LocalRedis::start()?;
        let pg = pg_server.conn();
        postgres::query(&pg, "postgres", "CREATE DATABASE shop")?;
        postgres::query(&pg, "shop", SAMPLE_SQL)?;
        let redis = redis_server.conn();
        for args in SAMPLE_REDIS {
            redis.run(0, args)?;
        }
        let assets = [
            Asset {
                name: "orders-db".into(),
                source: AssetSource::Postgres(Box::new(PostgresAsset {
                    connection: PostgresConnection {
                        host: pg.host.clone(),
                        port: pg.port,
                        user: pg.user.clone(),
                        password_secret: None,
                        ssl_mode: SslMode::Disable,
                    },
                    databases: vec!["shop".into()],
                    dump_options: Default::default(),
                    allow_empty: false,
                    point_in_time: None,
                })),
                canary: true,
            },
            Asset {
                name: "sessions".into(),
                source: AssetSource::Redis(Box::new(RedisAsset {
                    connection: RedisConnection {
                        host: redis.host.clone(),
                        port: redis.port,
                        username: None,
                        password_secret: None,
                        tls: false,
                    },
                    data_dir: None,
                    allow_empty: false,
                })),
                canary: true,
            },
        ];
        let orders = postgres::query(&pg, "shop", FINGERPRINT_SQL)?;
        Ok(Sources {
            _pg: pg_server,
            _redis: redis_server,
            pg,
            redis,
            assets,
            orders,
        })
    }

    /// Writes after the backup (what the disaster will cost), then declares the disaster and
    /// writes its own canary marker: a restore that holds it would hold writes made after the
    /// backup. Returns the disaster's time.
    fn disaster(&self, backup_id: &str, traffic: std::time::Duration) -> Result<Timestamp> {
        eprintln!(
            "drill: {}s of traffic after the backup, then the simulated disaster",
            traffic.as_secs()
        );
        std::thread::sleep(traffic);
        postgres::query(
            &self.pg,
            "shop",
            "INSERT INTO orders (customer, amount, payload) VALUES ('late', 1, '{\"after\":\"backup\"}')",
        )?;
        self.redis
            .run(0, &["SET", "session:late", "lost-in-the-disaster"])?;
        let disaster_at = Timestamp::now();
        let disaster_id = format!("disaster-{backup_id}");
        crate::canary::write_postgres(&self.pg, &["shop".to_owned()], &disaster_id, disaster_at)?;
        crate::canary::write_redis(&self.redis, &disaster_id, disaster_at)?;
        Ok(disaster_at)
    }
}

/// The sample Redis data: every common type, and a TTL.
const SAMPLE_REDIS: &[&[&str]] = &[
    &["SET", "session:1", "alice"],
    &["SET", "session:2", "bob"],
    &["SET", "config:mode", "live"],
    &["EXPIRE", "session:1", "86400"],
    &["RPUSH", "queue:orders", "1", "2", "3"],
    &["HSET", "customer:42", "name", "Ada", "tier", "gold"],
    &["ZADD", "leaderboard", "10", "ada", "20", "bob"],
    &["SADD", "tags", "a", "b"],
];

/// One backup of every asset, in one slot.
struct Backup {
    id: String,
    dir: String,
    /// The oldest of the assets' snapshot times: the one a disaster loses most from.
    snapshot: Timestamp,
    metadata: Vec<lifeboat_api::agent_result::BackupMetadata>,
    /// The Redis key count at the backup (the sample and the canary set).
    redis_keys: String,
}

fn back_up(env: &Env, scope: &Scope, sources: &Sources) -> Result<Backup> {
    let slot = env.store.claim(scope, Timestamp::now())?;
    let dir = env.store.describe(&slot);
    eprintln!("drill: backing up to {dir}");
    let mut snapshot = Timestamp::now();
    let mut metadata = Vec::new();
    for asset in &sources.assets {
        let m = jobs::backup(env, &slot, asset, &Compression::default(), None, None)?;
        snapshot = snapshot.min(m.snapshot_time);
        eprintln!(
            "drill:   {} -> {dir} ({} bytes stored, sha256 {})",
            asset.name,
            m.stored_bytes(),
            m.artifacts.first().map_or("", |a| &a.sha256[..12])
        );
        metadata.push(m);
    }
    Ok(Backup {
        id: slot.id.clone(),
        dir,
        snapshot,
        metadata,
        redis_keys: sources.redis.run(0, &["DBSIZE"])?,
    })
}

/// Where the drill restored: a new database beside the source, a scratch Redis server started
/// on the restored RDB.
struct Restored {
    redis: LocalRedis,
    // Dropped after the server that runs in it (fields drop in order).
    _dir: tempfile::TempDir,
}

fn restore_into_scratch(env: &Env, scope: &Scope, id: &str, sources: &Sources) -> Result<Restored> {
    eprintln!("drill: restoring into scratch targets");
    let scratch_redis_dir = tempfile::Builder::new()
        .prefix("lifeboat-restored-redis-")
        .tempdir()
        .map_err(|e| AgentError::storage("temporary directory", e))?;
    let pg = &sources.pg;
    let targets = [
        serde_json::json!({"asset": "orders-db", "postgres": {"host": pg.host, "port": pg.port,
            "user": pg.user, "sslMode": "disable", "database": RESTORED_DB, "createDatabase": true}}),
        // The scratch server starts on the restored file afterwards: nothing listens on this
        // port yet (never the default 6379, which may be someone's real Redis).
        serde_json::json!({"asset": "sessions", "redis": {"host": "127.0.0.1",
            "port": crate::local::free_port()?, "dataDir": scratch_redis_dir.path()}}),
    ];
    for (asset, target) in sources.assets.iter().zip(targets) {
        let target: RestoreTarget =
            serde_json::from_value(target).map_err(|e| AgentError::config(e.to_string()))?;
        let listed = env.store.find(scope, id, &asset.name, env.trust()?)?;
        let placed = jobs::restore(
            env,
            &listed,
            asset,
            Some(&target),
            &RestoreOptions::default(),
            None,
            None,
        )?;
        eprintln!("drill:   {} -> {placed}", asset.name);
    }
    Ok(Restored {
        redis: LocalRedis::start_in(scratch_redis_dir.path(), None)?,
        _dir: scratch_redis_dir,
    })
}

const RESTORED_DB: &str = "shop_restored";

/// The checks on the restored data, and the newest canary marker each asset holds.
fn validate(
    sources: &Sources,
    backup: &Backup,
    restored: &Restored,
) -> Result<(Vec<Check>, Vec<Option<CanaryMarker>>)> {
    eprintln!("drill: validating");
    let pg = &sources.pg;
    let r = restored.redis.conn();
    let check = |name: &str, passed: bool, detail: String| Check {
        name: name.into(),
        passed,
        detail,
    };
    let restored_orders = postgres::query(pg, RESTORED_DB, FINGERPRINT_SQL)?;
    let late = "SELECT count(*) FROM orders WHERE customer = 'late'";
    let keys = r.run(0, &["DBSIZE"])?;
    let ttl: i64 = r.run(0, &["TTL", "session:1"])?.parse().unwrap_or(-2);
    let types = [
        ("queue:orders", "list"),
        ("customer:42", "hash"),
        ("leaderboard", "zset"),
        ("tags", "set"),
    ];
    let mut checks = vec![
        check(
            "orders rows and content",
            restored_orders == sources.orders,
            format!("restored {restored_orders}, backed up {}", sources.orders),
        ),
        check(
            "orders written after the backup are absent",
            postgres::query(pg, RESTORED_DB, late)? == "0",
            "the restore holds exactly the snapshot".into(),
        ),
        check(
            "redis keys",
            keys == backup.redis_keys,
            format!("restored {keys}, backed up {}", backup.redis_keys),
        ),
        check("redis TTLs kept", ttl > 0, format!("session:1 TTL {ttl}s")),
        check(
            "redis types kept",
            types
                .iter()
                .all(|(k, t)| r.run(0, &["TYPE", k]).is_ok_and(|got| got == *t)),
            "list, hash, zset, set".into(),
        ),
    ];
    let bound = std::time::Duration::from_secs(60);
    let found = vec![
        crate::canary::newest_postgres(pg, RESTORED_DB, bound)?,
        crate::canary::newest_redis(&r, bound)?,
    ];
    for (asset, found) in sources.assets.iter().zip(&found) {
        checks.push(check(
            &format!(
                "{} canary: the backup's marker, not the disaster's",
                asset.name
            ),
            found.as_ref().is_some_and(|m| m.id == backup.id),
            match found {
                Some(m) => format!("newest marker {} written {}", m.id, m.written_at),
                None => "no marker in the restore".into(),
            },
        ));
    }
    Ok((checks, found))
}

/// The drill's moments.
struct Times {
    started: Timestamp,
    snapshot: Timestamp,
    disaster: Timestamp,
    validated: Timestamp,
}

/// What the drill achieved against its objectives. Pure: unit-tested below.
fn measure(
    times: &Times,
    found: &[Option<CanaryMarker>],
    rto: &Duration,
    rpo: &Duration,
) -> EvidenceAchieved {
    let secs = |a: Timestamp, b: Timestamp| {
        ((b.as_millisecond() - a.as_millisecond()) as f64 / 1000.0).max(0.0)
    };
    let rpo_seconds = secs(times.snapshot, times.disaster);
    let rto_seconds = secs(times.disaster, times.validated);
    // The oldest of the newest markers: the asset that lost the most decides. Any asset
    // without a marker leaves the canary RPO unmeasured.
    let rpo_canary_seconds = found
        .iter()
        .map(|m| m.as_ref().map(|m| secs(m.written_at, times.disaster)))
        .collect::<Option<Vec<f64>>>()
        .and_then(|v| v.into_iter().reduce(f64::max));
    let objective = rpo.as_secs() as f64;
    EvidenceAchieved {
        rto_seconds,
        rpo_seconds: Some(rpo_seconds),
        rpo_canary_seconds,
        rto_met: rto_seconds <= rto.as_secs() as f64,
        rpo_met: Some(
            rpo_seconds <= objective && rpo_canary_seconds.is_none_or(|c| c <= objective),
        ),
    }
}

/// A failed check fails the drill; objectives missed on good data are their own verdict.
fn verdict(checks: &[Check], achieved: &EvidenceAchieved) -> EvidenceVerdict {
    if !checks.iter().all(|c| c.passed) {
        EvidenceVerdict::Failed
    } else if achieved.rto_met && achieved.rpo_met.unwrap_or_default() {
        EvidenceVerdict::Passed
    } else {
        EvidenceVerdict::ObjectivesMissed
    }
}

fn evidence(
    backup: &Backup,
    found: Vec<Option<CanaryMarker>>,
    checks: &[Check],
    steps: Vec<EvidenceStep>,
    times: &Times,
    achieved: &EvidenceAchieved,
    objectives: EvidenceObjectives,
) -> DrillEvidence {
    let targets = ["postgres://127.0.0.1/shop_restored", "redis scratch server"];
    DrillEvidence {
        schema_version: EVIDENCE_SCHEMA_VERSION,
        drill_id: backup.id.clone(),
        policy: POLICY.into(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        started_at: times.started,
        disaster_at: times.disaster,
        finished_at: Timestamp::now(),
        verdict: verdict(checks, achieved),
        objectives,
        achieved: achieved.clone(),
        restored: backup
            .metadata
            .iter()
            .zip(found)
            .zip(targets)
            .map(|((m, found), target)| EvidenceRestore {
                asset: m.asset.clone(),
                backup_id: m.backup_id.clone(),
                snapshot_time: m.snapshot_time,
                target: target.into(),
                artifacts: m.artifacts.iter().map(EvidenceArtifact::from).collect(),
                canary_written: m.canary.clone(),
                canary_found: found,
            })
            .collect(),
        checks: checks
            .iter()
            .map(|c| EvidenceCheck {
                name: c.name.clone(),
                passed: c.passed,
                detail: c.detail.clone(),
            })
            .collect(),
        steps,
        message: checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// Writes the evidence record; a drill that did not fail also records each backup as verified
/// (restored and validated: the strongest proof a backup can have, which retention keeps).
fn record(env: &Env, scope: &Scope, assets: &[Asset], evidence: &DrillEvidence) -> Result<PathBuf> {
    let json = serde_json::to_vec_pretty(evidence)
        .map_err(|e| AgentError::config(format!("serializing the evidence: {e}")))?;
    let id = &evidence.drill_id;
    let path = env
        .store
        .put_policy_file(scope, &crate::evidence::file_name(id), json)?;
    if evidence.verdict != EvidenceVerdict::Failed {
        for asset in assets {
            let listed = env.store.find(scope, id, &asset.name, env.trust()?)?;
            env.store.record_verification(
                &listed,
                &lifeboat_api::agent_result::VerificationRecord {
                    backup_id: id.clone(),
                    asset: asset.name.clone(),
                    verified_at: Timestamp::now(),
                    method: lifeboat_api::agent_result::VerificationMethod::Drill,
                    drill_id: Some(id.clone()),
                },
            )?;
        }
    }
    Ok(PathBuf::from(path))
}

/// Step timings for the evidence record.
#[derive(Default)]
struct Steps {
    done: Vec<EvidenceStep>,
    current: Option<(String, Timestamp)>,
}

impl Steps {
    fn start(&mut self, name: &str) {
        let now = Timestamp::now();
        self.finish(now);
        self.current = Some((name.to_owned(), now));
    }

    fn finish(&mut self, now: Timestamp) {
        if let Some((name, started_at)) = self.current.take() {
            self.done.push(EvidenceStep {
                name,
                started_at,
                seconds: (now.as_millisecond() - started_at.as_millisecond()).max(0) as f64
                    / 1000.0,
            });
        }
    }
}

impl Report {
    pub fn text(&self) -> String {
        let mut s = String::new();
        let mark = |b: bool| if b { "ok  " } else { "FAIL" };
        s.push_str(&format!(
            "Lifeboat drill {}: {}\n",
            self.backup_id,
            if self.passed { "PASSED" } else { "FAILED" }
        ));
        s.push_str(&format!("  backup     {}\n", self.backup_dir));
        for c in &self.checks {
            s.push_str(&format!("  {} {} ({})\n", mark(c.passed), c.name, c.detail));
        }
        s.push_str(&format!(
            "  {} RPO achieved {:.1}s (objective {}): writes after the snapshot were lost, as in a real outage\n",
            mark(self.rpo_met),
            self.rpo_seconds,
            Duration::from_secs(self.rpo_objective_seconds)
        ));
        if let Some(c) = self.rpo_canary_seconds {
            s.push_str(&format!(
                "  {} RPO from canary markers {:.1}s: the newest marker the restore holds was written {:.1}s before the disaster\n",
                mark(c <= self.rpo_objective_seconds as f64),
                c,
                c
            ));
        }
        s.push_str(&format!(
            "  {} RTO achieved {:.1}s (objective {}): disaster -> restored and validated\n",
            mark(self.rto_met),
            self.rto_seconds,
            Duration::from_secs(self.rto_objective_seconds)
        ));
        s.push_str(&format!("  evidence   {}\n", self.evidence.display()));
        s
    }
}

const SAMPLE_SQL: &str = "
CREATE TABLE orders (
  id bigserial PRIMARY KEY,
  customer text NOT NULL,
  amount numeric(12,2) NOT NULL,
  payload jsonb NOT NULL,
  placed_at timestamptz NOT NULL DEFAULT now(),
  receipt bytea
);
INSERT INTO orders (customer, amount, payload, placed_at, receipt)
SELECT 'customer-' || (i % 500), (i * 37 % 100000) / 100.0,
       jsonb_build_object('items', i % 7, 'note', repeat('x', i % 50)),
       '2026-01-01'::timestamptz + i * interval '1 minute',
       decode(md5(i::text), 'hex')
FROM generate_series(1, 20000) AS i;";

/// Row count and a checksum of the whole table's content.
const FINGERPRINT_SQL: &str =
    "SELECT count(*) || ' rows, md5 ' || md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o";

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn marker(secs: i64) -> Option<CanaryMarker> {
        Some(CanaryMarker {
            id: "b".into(),
            written_at: at(secs),
        })
    }

    fn times() -> Times {
        Times {
            started: at(0),
            snapshot: at(10),
            disaster: at(70),
            validated: at(100),
        }
    }

    fn check(passed: bool) -> Check {
        Check {
            name: "c".into(),
            passed,
            detail: String::new(),
        }
    }

    #[test]
    fn rpo_is_disaster_minus_snapshot_and_rto_disaster_to_validated() {
        let a = measure(
            &times(),
            &[marker(12), marker(15)],
            &Duration::from_secs(30),
            &Duration::from_secs(60),
        );
        assert_eq!(a.rpo_seconds, Some(60.0));
        assert_eq!(a.rto_seconds, 30.0);
        // The asset that lost the most decides: its newest marker is the oldest.
        assert_eq!(a.rpo_canary_seconds, Some(58.0));
        assert!(a.rto_met);
        assert_eq!(a.rpo_met, Some(true));
        assert_eq!(verdict(&[check(true)], &a), EvidenceVerdict::Passed);
    }

    #[test]
    fn a_canary_older_than_the_objective_misses_it_even_when_the_snapshot_meets_it() {
        let a = measure(
            &times(),
            &[marker(5), marker(15)],
            &Duration::from_secs(30),
            &Duration::from_secs(60),
        );
        assert_eq!(a.rpo_canary_seconds, Some(65.0));
        assert_eq!(a.rpo_met, Some(false));
        assert_eq!(
            verdict(&[check(true)], &a),
            EvidenceVerdict::ObjectivesMissed
        );
    }

    #[test]
    fn an_asset_without_a_marker_leaves_the_canary_rpo_unmeasured() {
        let a = measure(
            &times(),
            &[marker(12), None],
            &Duration::from_secs(30),
            &Duration::from_secs(60),
        );
        assert_eq!(a.rpo_canary_seconds, None);
        assert_eq!(a.rpo_met, Some(true));
    }

    #[test]
    fn a_failed_check_fails_the_drill_whatever_the_objectives() {
        let missed = measure(
            &times(),
            &[],
            &Duration::from_secs(1),
            &Duration::from_secs(1),
        );
        assert!(!missed.rto_met);
        assert_eq!(
            verdict(&[check(true), check(false)], &missed),
            EvidenceVerdict::Failed
        );
        let met = measure(
            &times(),
            &[],
            &Duration::from_secs(60),
            &Duration::from_secs(60),
        );
        assert_eq!(verdict(&[check(false)], &met), EvidenceVerdict::Failed);
        assert_eq!(verdict(&[check(true)], &met), EvidenceVerdict::Passed);
    }
}
