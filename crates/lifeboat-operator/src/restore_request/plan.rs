//! Resolving what a RestoreRequest restores: which assets, which backup of each (`latest` comes
//! from the policy's own record of its newest good backups), and where to. Pure.

use lifeboat_api::backup_policy::Asset;
use lifeboat_api::common::RestoreTarget;
use lifeboat_api::restore_request::PlannedRestore;
use lifeboat_api::{BackupPolicy, RestoreRequest};

/// One asset's restore.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub asset: Asset,
    pub backup_id: String,
    pub target: Option<RestoreTarget>,
    pub planned: PlannedRestore,
}

/// Why a plan cannot be made (yet).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("asset {0:?} is not in BackupPolicy {1:?}")]
    UnknownAsset(String, String),
    #[error("asset {0:?} has no good backup yet")]
    NoBackupYet(String),
    #[error("check {0:?} refers to asset {1:?}, which this request does not restore")]
    UnknownCheckAsset(String, String),
}

impl PlanError {
    pub fn reason(&self) -> &'static str {
        match self {
            PlanError::UnknownAsset(..) | PlanError::UnknownCheckAsset(..) => "InvalidSpec",
            PlanError::NoBackupYet(_) => "NoBackupYet",
        }
    }
}

/// The ordered steps of `rr` against `policy`.
pub fn resolve(rr: &RestoreRequest, policy: &BackupPolicy) -> Result<Vec<Step>, PlanError> {
    let spec = &rr.spec;
    let policy_name = rr.spec.source.policy.clone();
    let names: Vec<String> = if spec.assets.is_empty() {
        policy.spec.assets.iter().map(|a| a.name.clone()).collect()
    } else {
        spec.assets.clone()
    };
    let status = policy.status.clone().unwrap_or_default();
    let mut steps = Vec::new();
    for name in &names {
        let asset = policy
            .spec
            .assets
            .iter()
            .find(|a| &a.name == name)
            .ok_or_else(|| PlanError::UnknownAsset(name.clone(), policy_name.clone()))?;
        let latest = status
            .assets
            .iter()
            .find(|a| &a.name == name)
            .and_then(|a| a.last_success.clone());
        let (backup_id, known) = if spec.source.backup_id == "latest" {
            let l = latest.ok_or_else(|| PlanError::NoBackupYet(name.clone()))?;
            (l.id.clone(), Some(l))
        } else {
            let id = spec.source.backup_id.clone();
            let known = latest.filter(|l| l.id == id);
            (id, known)
        };
        let target = spec.targets.iter().find(|t| &t.asset == name).cloned();
        steps.push(Step {
            planned: PlannedRestore {
                asset: name.clone(),
                backup_id: backup_id.clone(),
                snapshot_time: known.as_ref().map(|k| k.snapshot_time.clone()),
                stored_bytes: known.as_ref().map(|k| k.stored_bytes),
                sha256: known.as_ref().map(|k| k.sha256.clone()),
                target: describe_target(asset, target.as_ref()),
                state: None,
                duration_seconds: None,
            },
            asset: asset.clone(),
            backup_id,
            target,
        });
    }
    for check in &spec.validation.checks {
        let asset = check
            .sql
            .as_ref()
            .map(|s| &s.asset)
            .or(check.redis.as_ref().map(|r| &r.asset));
        if let Some(asset) = asset
            && !names.contains(asset)
        {
            return Err(PlanError::UnknownCheckAsset(
                check.name.clone(),
                asset.clone(),
            ));
        }
    }
    Ok(steps)
}

/// Where an asset goes, for people, without credentials.
pub fn describe_target(asset: &Asset, target: Option<&RestoreTarget>) -> String {
    if let Some(t) = target {
        if let Some(pg) = &t.postgres {
            let db = pg.database.clone().unwrap_or_else(|| {
                asset
                    .postgres
                    .as_ref()
                    .map(|p| p.databases.join(","))
                    .unwrap_or_default()
            });
            return format!(
                "postgres://{}:{}/{db}",
                pg.connection.host, pg.connection.port
            );
        }
        if let Some(r) = &t.redis {
            return format!("redis://{}:{}", r.connection.host, r.connection.port);
        }
        if let Some(s3) = &t.object_storage {
            return format!("s3://{}/{} at {}", s3.bucket, s3.prefix, s3.endpoint);
        }
        if let Some(k) = &t.kubernetes_state {
            let map: Vec<String> = k
                .namespace_mapping
                .iter()
                .map(|(a, b)| format!("{a}→{b}"))
                .collect();
            return format!(
                "kubernetes (namespaces {})",
                if map.is_empty() {
                    "unchanged".into()
                } else {
                    map.join(", ")
                }
            );
        }
    }
    let original = if let Some(pg) = &asset.postgres {
        format!(
            "postgres://{}:{}/{}",
            pg.connection.host,
            pg.connection.port,
            pg.databases.join(",")
        )
    } else if let Some(r) = &asset.redis {
        format!("redis://{}:{}", r.connection.host, r.connection.port)
    } else if let Some(b) = &asset.object_storage {
        format!(
            "s3://{}/{} at {}",
            b.source.bucket, b.source.prefix, b.source.endpoint
        )
    } else {
        "kubernetes (original namespaces)".into()
    };
    format!("original source {original}")
}
