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
    eprintln!("drill: starting PostgreSQL and Redis on loopback with sample data");
    let pg = LocalPostgres::start()?;
    let source_redis = LocalRedis::start()?;
    let conn = pg.conn();
    postgres::query(&conn, "postgres", "CREATE DATABASE shop")?;
    postgres::query(&conn, "shop", SAMPLE_SQL)?;
    let rconn = source_redis.conn();
    for (k, v) in [
        ("session:1", "alice"),
        ("session:2", "bob"),
        ("config:mode", "live"),
    ] {
        rconn.run(0, &["SET", k, v])?;
    }
    rconn.run(0, &["EXPIRE", "session:1", "86400"])?;
    rconn.run(0, &["RPUSH", "queue:orders", "1", "2", "3"])?;
    rconn.run(0, &["HSET", "customer:42", "name", "Ada", "tier", "gold"])?;
    rconn.run(0, &["ZADD", "leaderboard", "10", "ada", "20", "bob"])?;
    rconn.run(0, &["SADD", "tags", "a", "b"])?;

    let assets = [
        Asset {
            name: "orders-db".into(),
            source: AssetSource::Postgres(PostgresAsset {
                connection: PostgresConnection {
                    host: conn.host.clone(),
                    port: conn.port,
                    user: conn.user.clone(),
                    password_secret: None,
                    ssl_mode: SslMode::Disable,
                },
                databases: vec!["shop".into()],
                dump_options: Default::default(),
                allow_empty: false,
            }),
            canary: true,
        },
        Asset {
            name: "sessions".into(),
            source: AssetSource::Redis(RedisAsset {
                connection: RedisConnection {
                    host: rconn.host.clone(),
                    port: rconn.port,
                    username: None,
                    password_secret: None,
                    tls: false,
                },
                data_dir: None,
                allow_empty: false,
            }),
            canary: true,
        },
    ];
    let expected_orders = postgres::query(&conn, "shop", FINGERPRINT_SQL)?;

    eprintln!("drill: backing up to {}", dir.display());
    let mut steps = Steps::default();
    steps.start("backup");
    let slot = env.store.claim(scope, Timestamp::now())?;
    let id = slot.id.clone();
    let backup_dir = env.store.describe(&slot);
    let mut snapshot = Timestamp::now();
    let mut backed_up = Vec::new();
    for asset in &assets {
        let m = jobs::backup(&env, &slot, asset, &Compression::default(), None, None)?;
        snapshot = snapshot.min(m.snapshot_time);
        backed_up.push(m.clone());
        eprintln!(
            "drill:   {} -> {backup_dir} ({} bytes stored, sha256 {})",
            asset.name,
            m.stored_bytes(),
            &m.artifacts[0].sha256[..12]
        );
    }

    // What the restore must hold: the keys at the backup (the sample and the canary set).
    let expected_keys = rconn.run(0, &["DBSIZE"])?;
    // Traffic after the backup: what the disaster will cost.
    steps.start("traffic after the backup");
    eprintln!(
        "drill: {}s of traffic after the backup, then the simulated disaster",
        traffic.as_secs()
    );
    std::thread::sleep(traffic);
    postgres::query(
        &conn,
        "shop",
        "INSERT INTO orders (customer, amount, payload) VALUES ('late', 1, '{\"after\":\"backup\"}')",
    )?;
    rconn.run(0, &["SET", "session:late", "lost-in-the-disaster"])?;
    let disaster_at = Timestamp::now();
    // The disaster's own marker: a restore that holds it would hold writes made after the backup.
    let disaster_id = format!("disaster-{id}");
    crate::canary::write_postgres(&conn, &["shop".to_owned()], &disaster_id, disaster_at)?;
    crate::canary::write_redis(&rconn, &disaster_id, disaster_at)?;
    steps.start("restore");

    eprintln!("drill: restoring into scratch targets");
    let restore = |asset: &Asset, target: Option<RestoreTarget>| -> Result<String> {
        let listed = env.store.find(scope, &id, &asset.name, env.trust()?)?;
        jobs::restore(
            &env,
            &listed,
            asset,
            target.as_ref(),
            &RestoreOptions::default(),
            None,
            None,
        )
    };
    let scratch_redis_dir = tempfile::Builder::new()
        .prefix("lifeboat-restored-redis-")
        .tempdir()
        .map_err(|e| AgentError::storage("temporary directory", e))?;
    let pg_target: RestoreTarget = serde_json::from_value(serde_json::json!({
        "asset": "orders-db",
        "postgres": {"host": conn.host, "port": conn.port, "user": conn.user, "sslMode": "disable", "database": "shop_restored", "createDatabase": true}
    }))
    .map_err(|e| AgentError::config(e.to_string()))?;
    let redis_target: RestoreTarget = serde_json::from_value(serde_json::json!({
        // The scratch server starts on the restored file afterwards: nothing listens on this
        // port yet (never the default 6379, which may be someone's real Redis).
        "asset": "sessions", "redis": {"host": "127.0.0.1", "port": crate::local::free_port()?, "dataDir": scratch_redis_dir.path()}
    }))
    .map_err(|e| AgentError::config(e.to_string()))?;
    eprintln!(
        "drill:   orders-db -> {}",
        restore(&assets[0], Some(pg_target))?
    );
    eprintln!(
        "drill:   sessions  -> {}",
        restore(&assets[1], Some(redis_target))?
    );
    let restored_redis = LocalRedis::start_in(scratch_redis_dir.path(), None)?;

    eprintln!("drill: validating");
    steps.start("validate");
    let restored_orders = postgres::query(&conn, "shop_restored", FINGERPRINT_SQL)?;
    let r = restored_redis.conn();
    let mut checks = vec![
        Check {
            name: "orders rows and content".into(),
            passed: restored_orders == expected_orders,
            detail: format!("restored {restored_orders}, backed up {expected_orders}"),
        },
        Check {
            name: "orders written after the backup are absent".into(),
            passed: postgres::query(
                &conn,
                "shop_restored",
                "SELECT count(*) FROM orders WHERE customer = 'late'",
            )? == "0",
            detail: "the restore holds exactly the snapshot".into(),
        },
    ];
    let keys = r.run(0, &["DBSIZE"])?;
    checks.push(Check {
        name: "redis keys".into(),
        passed: keys == expected_keys,
        detail: format!("restored {keys}, backed up {expected_keys}"),
    });
    let ttl: i64 = r.run(0, &["TTL", "session:1"])?.parse().unwrap_or(-2);
    checks.push(Check {
        name: "redis TTLs kept".into(),
        passed: ttl > 0,
        detail: format!("session:1 TTL {ttl}s"),
    });
    let types_ok = [
        ("queue:orders", "list"),
        ("customer:42", "hash"),
        ("leaderboard", "zset"),
        ("tags", "set"),
    ]
    .iter()
    .all(|(k, t)| r.run(0, &["TYPE", k]).is_ok_and(|got| got == *t));
    checks.push(Check {
        name: "redis types kept".into(),
        passed: types_ok,
        detail: "list, hash, zset, set".into(),
    });
    let found = [
        crate::canary::newest_postgres(&conn, "shop_restored", std::time::Duration::from_secs(60))?,
        crate::canary::newest_redis(&r, std::time::Duration::from_secs(60))?,
    ];
    for (asset, found) in assets.iter().zip(&found) {
        checks.push(Check {
            name: format!(
                "{} canary: the backup's marker, not the disaster's",
                asset.name
            ),
            passed: found.as_ref().is_some_and(|m| m.id == id),
            detail: match found {
                Some(m) => format!("newest marker {} written {}", m.id, m.written_at),
                None => "no marker in the restore".into(),
            },
        });
    }
    let validated_at = Timestamp::now();
    steps.finish(validated_at);

    let secs = |a: Timestamp, b: Timestamp| {
        ((b.as_millisecond() - a.as_millisecond()) as f64 / 1000.0).max(0.0)
    };
    let rpo_seconds = secs(snapshot, disaster_at);
    let rto_seconds = secs(disaster_at, validated_at);
    // The oldest of the newest markers: the asset that lost the most decides.
    let rpo_canary_seconds = found
        .iter()
        .map(|m| m.as_ref().map(|m| secs(m.written_at, disaster_at)))
        .collect::<Option<Vec<f64>>>()
        .and_then(|v| v.into_iter().reduce(f64::max));
    let rpo_met = rpo_seconds <= rpo.as_secs() as f64
        && rpo_canary_seconds.is_none_or(|c| c <= rpo.as_secs() as f64);
    let rto_met = rto_seconds <= rto.as_secs() as f64;
    let passed = rpo_met && rto_met && checks.iter().all(|c| c.passed);

    let evidence = DrillEvidence {
        schema_version: EVIDENCE_SCHEMA_VERSION,
        drill_id: id.clone(),
        policy: POLICY.into(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        started_at: drill_started_at,
        disaster_at,
        finished_at: Timestamp::now(),
        verdict: if !checks.iter().all(|c| c.passed) {
            EvidenceVerdict::Failed
        } else if rpo_met && rto_met {
            EvidenceVerdict::Passed
        } else {
            EvidenceVerdict::ObjectivesMissed
        },
        objectives: EvidenceObjectives {
            rto_seconds: rto.as_secs(),
            rpo_seconds: rpo.as_secs(),
        },
        achieved: EvidenceAchieved {
            rto_seconds,
            rpo_seconds: Some(rpo_seconds),
            rpo_canary_seconds,
            rto_met,
            rpo_met: Some(rpo_met),
        },
        restored: backed_up
            .iter()
            .zip(found)
            .zip(["postgres://127.0.0.1/shop_restored", "redis scratch server"])
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
        steps: steps.done,
        message: checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
            .join("; "),
    };
    let json = serde_json::to_vec_pretty(&evidence)
        .map_err(|e| AgentError::config(format!("serializing the evidence: {e}")))?;
    let evidence_path = PathBuf::from(env.store.put_policy_file(
        scope,
        &crate::evidence::file_name(&id),
        json,
    )?);
    // Restored and validated: the strongest proof a backup can have, recorded for retention.
    if evidence.verdict != EvidenceVerdict::Failed {
        for asset in &assets {
            let listed = env.store.find(scope, &id, &asset.name, env.trust()?)?;
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
    Ok(Report {
        backup_id: id,
        backup_dir,
        drill_started_at,
        snapshot_time: snapshot,
        disaster_at,
        validated_at,
        rpo_seconds,
        rto_seconds,
        rpo_objective_seconds: rpo.as_secs(),
        rto_objective_seconds: rto.as_secs(),
        rpo_met,
        rto_met,
        rpo_canary_seconds,
        checks,
        passed,
        evidence: evidence_path,
    })
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
