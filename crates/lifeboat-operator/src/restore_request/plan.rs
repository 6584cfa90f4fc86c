//! Resolving what a RestoreRequest restores: which assets, which backup of each, and where to.
//! Pure. Without `source.location`, `latest` comes from the policy's own record of its newest
//! good backups ([`resolve`]); with it, from the catalog a Job read at that location
//! ([`from_catalog`]), which needs no BackupPolicy at all: a rebuilt cluster has none.

use lifeboat_api::agent_job::KubernetesStateScope;
use lifeboat_api::agent_result::{Catalog, CatalogEntry};
use lifeboat_api::backup_policy::{Asset, AssetKind, AssetSource, KubernetesStateAsset};
use lifeboat_api::common::{RestoreTarget, Target};
use lifeboat_api::restore_request::{PlannedRestore, RestorePhase};
use lifeboat_api::{BackupPolicy, RestoreRequest};

/// One asset's restore.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub asset: Asset,
    pub backup_id: String,
    pub target: Option<RestoreTarget>,
    pub planned: PlannedRestore,
    /// What a Kubernetes-state restore may write: decided by the reconcile from Namespace
    /// labels ([`crate::kubestate::scope`]), unset by [`resolve`] and for other assets.
    pub scope: Option<KubernetesStateScope>,
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
    #[error("asset {0:?}: no complete backup of it at the location")]
    NoBackupAtLocation(String),
    #[error(
        "the location holds more assets than one catalog reports ({0} left out): name the assets to restore in spec.assets"
    )]
    CatalogTooLarge(u32),
    #[error(
        "asset {0:?} is {1} in its backup's metadata and {2} in BackupPolicy {3:?}: not the same asset"
    )]
    KindMismatch(String, &'static str, &'static str, String),
    #[error(
        "asset {0:?} ({1}): no BackupPolicy defines it here, so say where it goes with a target of that kind in spec.targets"
    )]
    TargetRequired(String, &'static str),
    #[error("asset {0:?}: its target is not {1}, the kind of its backup")]
    TargetKind(String, &'static str),
    #[error(
        "rollbackOnFailure needs BackupPolicy {0:?} (its compression and encryption for the safety backups), which does not exist here: restore without rollback"
    )]
    RollbackWithoutPolicy(String),
    #[error(
        "asset {0:?}: its backup is encrypted and no identity is named: set source.identitySecret"
    )]
    IdentityRequired(String),
    #[error(
        "asset {0:?}: a dataVolume target restores a PostgreSQL asset with pointInTime only (base backups and WAL)"
    )]
    NotPointInTime(String),
    #[error(
        "check {0:?}: asset {1:?} is restored into a new data directory, where no server runs until you start one: it cannot be checked"
    )]
    CheckWithoutServer(String, String),
    #[error("asset {0:?}: pointInTime {1:?} is not an RFC 3339 time")]
    BadPointInTime(String, String),
    #[error(
        "asset {0:?}: rollbackOnFailure needs a safety backup of the target, which Lifeboat does not take for {1} assets; restore without rollback or leave this asset out"
    )]
    RollbackUnsupported(String, &'static str),
}

impl PlanError {
    pub fn reason(&self) -> &'static str {
        match self {
            PlanError::UnknownAsset(..)
            | PlanError::UnknownCheckAsset(..)
            | PlanError::BadPointInTime(..) => "InvalidSpec",
            PlanError::NotPointInTime(_) | PlanError::CheckWithoutServer(..) => "TargetUnsupported",
            PlanError::RollbackUnsupported(..) | PlanError::RollbackWithoutPolicy(_) => {
                "RollbackUnsupported"
            }
            PlanError::NoBackupYet(_) => "NoBackupYet",
            PlanError::NoBackupAtLocation(_) => "NoBackupAtLocation",
            PlanError::CatalogTooLarge(_) => "CatalogTooLarge",
            PlanError::KindMismatch(..) => "MetadataInvalid",
            PlanError::TargetRequired(..) => "TargetRequired",
            PlanError::TargetKind(..) => "InvalidSpec",
            PlanError::IdentityRequired(_) => "IdentityRequired",
        }
    }

    /// Whether only an edit of the request cures it (a backup may still appear for the others).
    pub fn needs_edit(&self) -> bool {
        !matches!(
            self,
            PlanError::NoBackupYet(_) | PlanError::KindMismatch(..)
        )
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
        let known = if let Some(p) = executing_plan(rr, name) {
            // `latest` was resolved when the request started: a backup recorded since is not
            // restored in its place, and the status keeps naming what the Jobs restore.
            Known {
                backup_id: p.backup_id.clone(),
                snapshot_time: p.snapshot_time.clone(),
                stored_bytes: p.stored_bytes,
                sha256: p.sha256.clone(),
            }
        } else if spec.source.backup_id == "latest" {
            let l = latest.ok_or_else(|| PlanError::NoBackupYet(name.clone()))?;
            Known::from(l)
        } else {
            let id = spec.source.backup_id.clone();
            match latest.filter(|l| l.id == id) {
                Some(l) => Known::from(l),
                None => Known {
                    backup_id: id,
                    snapshot_time: None,
                    stored_bytes: None,
                    sha256: None,
                },
            }
        };
        let target = spec.targets.iter().find(|t| &t.asset == name).cloned();
        if spec.rollback_on_failure {
            safety_asset(asset, target.as_ref())?;
        }
        let backup_id = known.backup_id;
        steps.push(Step {
            planned: PlannedRestore {
                asset: name.clone(),
                kind: Some(asset.kind()),
                backup_id: backup_id.clone(),
                snapshot_time: known.snapshot_time,
                stored_bytes: known.stored_bytes,
                sha256: known.sha256,
                target: describe_target(asset, target.as_ref()),
                state: None,
                duration_seconds: None,
                safety_backup: None,
                safety_backup_id: None,
                rollback: None,
                point_in_time: None,
            },
            asset: asset.clone(),
            backup_id,
            target,
            scope: None,
        });
    }
    checked(rr, &names)?;
    checked_data_volumes(rr, &mut steps)?;
    Ok(steps)
}

/// What the plan says of the backup an asset restores.
struct Known {
    backup_id: String,
    snapshot_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    stored_bytes: Option<u64>,
    sha256: Option<String>,
}

impl From<lifeboat_api::backup_policy::BackupRecord> for Known {
    fn from(l: lifeboat_api::backup_policy::BackupRecord) -> Self {
        Self {
            backup_id: l.id,
            snapshot_time: Some(l.snapshot_time),
            stored_bytes: Some(l.stored_bytes),
            sha256: Some(l.sha256),
        }
    }
}

/// The step an executing request planned for `asset`, as its status records it; `None` before
/// a step may have run.
fn executing_plan<'a>(rr: &'a RestoreRequest, asset: &str) -> Option<&'a PlannedRestore> {
    let status = rr.status.as_ref()?;
    if !rr.spec.execute || status.phase <= RestorePhase::Planned {
        return None;
    }
    status.plan.iter().find(|p| p.asset == asset)
}

/// A `dataVolume` target restores a `pointInTime` asset to a time the agent can read, and no
/// check names its asset: nothing serves the new data directory until the user starts a server
/// (so its canary is not checked either).
fn checked_data_volumes(rr: &RestoreRequest, steps: &mut [Step]) -> Result<(), PlanError> {
    for step in steps {
        let Some(d) = step.target.as_ref().and_then(RestoreTarget::data_volume) else {
            continue;
        };
        let name = &step.asset.name;
        if !matches!(&step.asset.source, AssetSource::Postgres(pg) if pg.point_in_time.is_some()) {
            return Err(PlanError::NotPointInTime(name.clone()));
        }
        if d.point_in_time != "latest" && d.point_in_time.parse::<jiff::Timestamp>().is_err() {
            return Err(PlanError::BadPointInTime(
                name.clone(),
                d.point_in_time.clone(),
            ));
        }
        let checked = |c: &lifeboat_api::common::ValidationCheck| {
            c.sql.as_ref().map(|s| &s.asset) == Some(name)
                || c.redis.as_ref().map(|r| &r.asset) == Some(name)
        };
        if let Some(check) = rr.spec.validation.checks.iter().find(|c| checked(c)) {
            return Err(PlanError::CheckWithoutServer(
                check.name.clone(),
                name.clone(),
            ));
        }
        step.asset.canary = false;
    }
    Ok(())
}

/// Every check refers to an asset the request restores.
fn checked(rr: &RestoreRequest, names: &[String]) -> Result<(), PlanError> {
    for check in &rr.spec.validation.checks {
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
    Ok(())
}

/// The ordered steps of `rr` from the `catalog` a Job read at `source.location`: each asset's
/// backup is the one the catalog chose (its metadata verified there), so no policy status is
/// needed. An asset is the policy's when a policy of that name exists here (its kind must be
/// the one its metadata records); else it is made from the request's target of the backup's
/// kind. The target is never taken from the metadata's `source`: that names a host of the lost
/// cluster and no credentials, and restoring over whatever answers at that name in a new
/// cluster is not a guess Lifeboat makes. A Kubernetes-state asset needs no target (its
/// objects go back to their namespaces, or `namespaceMapping`'s), and restores first: the data
/// assets go into what it recreated, then the checks run.
pub fn from_catalog(
    rr: &RestoreRequest,
    policy: Option<&BackupPolicy>,
    catalog: &Catalog,
) -> Result<Vec<Step>, PlanError> {
    if catalog.omitted > 0 {
        return Err(PlanError::CatalogTooLarge(catalog.omitted));
    }
    let spec = &rr.spec;
    if spec.rollback_on_failure && policy.is_none() {
        // Safety backups are written with the policy's compression and encryption: without
        // it they would lie unencrypted beside encrypted backups.
        return Err(PlanError::RollbackWithoutPolicy(spec.source.policy.clone()));
    }
    let names: Vec<String> = if spec.assets.is_empty() {
        catalog.entries.iter().map(|e| e.asset.clone()).collect()
    } else {
        spec.assets.clone()
    };
    let identity = spec.source.identity_secret.is_some()
        || policy.is_some_and(|p| {
            p.spec
                .encryption
                .as_ref()
                .is_some_and(|e| e.identity_secret.is_some())
        });
    let mut steps = Vec::new();
    for name in &names {
        let entry = catalog
            .entries
            .iter()
            .find(|e| &e.asset == name)
            .ok_or_else(|| PlanError::NoBackupAtLocation(name.clone()))?;
        let target = spec.targets.iter().find(|t| &t.asset == name).cloned();
        let asset = catalog_asset(rr, policy, entry, target.as_ref())?;
        if entry.encrypted && !identity {
            return Err(PlanError::IdentityRequired(name.clone()));
        }
        if spec.rollback_on_failure {
            safety_asset(&asset, target.as_ref())?;
        }
        steps.push(Step {
            planned: PlannedRestore {
                asset: name.clone(),
                kind: Some(entry.kind),
                backup_id: entry.backup_id.clone(),
                snapshot_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    entry.snapshot_time,
                )),
                stored_bytes: Some(entry.stored_bytes),
                sha256: None,
                target: describe_target(&asset, target.as_ref()),
                state: None,
                duration_seconds: None,
                safety_backup: None,
                safety_backup_id: None,
                rollback: None,
                point_in_time: None,
            },
            asset,
            backup_id: entry.backup_id.clone(),
            target,
            scope: None,
        });
    }
    // Kubernetes state first; the rest keep their order (a stable sort).
    steps.sort_by_key(|s| s.asset.kind() != AssetKind::KubernetesState);
    checked(rr, &names)?;
    checked_data_volumes(rr, &mut steps)?;
    Ok(steps)
}

/// Where the request's backups are listed by a catalog Job, if they are: its `location`, or its
/// policy's destination when `takenBefore` excludes a backup the policy's status names as the
/// newest (the status knows no older one). Otherwise the policy's status resolves `latest`.
pub fn catalog_location(
    rr: &RestoreRequest,
    policy: Option<&BackupPolicy>,
) -> Option<lifeboat_api::common::Destination> {
    if let Some(location) = &rr.spec.source.location {
        return Some(location.clone());
    }
    let policy = policy?;
    let before = rr.spec.source.taken_before.as_ref()?.0;
    let status = policy.status.clone().unwrap_or_default();
    let names: Vec<&String> = if rr.spec.assets.is_empty() {
        policy.spec.assets.iter().map(|a| &a.name).collect()
    } else {
        rr.spec.assets.iter().collect()
    };
    let newer = names.iter().any(|name| {
        status
            .assets
            .iter()
            .find(|a| &&a.name == name)
            .and_then(|a| a.last_success.as_ref())
            .is_none_or(|l| l.snapshot_time.0 > before)
    });
    newer.then(|| policy.spec.destination.clone())
}

/// The catalog an executing request already planned from, as its status records it: once a
/// step may have run, the backups restored are those of the plan, never those of a catalog read
/// again (a newer backup taken meanwhile, or the catalog Job's pod gone). `None` before.
pub fn executing_catalog(rr: &RestoreRequest) -> Option<Catalog> {
    let status = rr.status.as_ref()?;
    let executing = status.phase > RestorePhase::Planned;
    if !rr.spec.execute || !executing || status.plan.is_empty() {
        return None;
    }
    let entries = status
        .plan
        .iter()
        .map(|p| {
            Some(CatalogEntry {
                asset: p.asset.clone(),
                kind: p.kind?,
                backup_id: p.backup_id.clone(),
                snapshot_time: p.snapshot_time.as_ref()?.0,
                stored_bytes: p.stored_bytes?,
                // Checked when the plan was made; the spec has been frozen since.
                encrypted: false,
                verified: false,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Catalog {
        entries,
        omitted: 0,
    })
}

/// The asset a catalog entry restores: the policy's, or one made from the request's target.
fn catalog_asset(
    rr: &RestoreRequest,
    policy: Option<&BackupPolicy>,
    entry: &CatalogEntry,
    target: Option<&RestoreTarget>,
) -> Result<Asset, PlanError> {
    let name = &entry.asset;
    if let Some(p) = policy
        && let Some(asset) = p.spec.assets.iter().find(|a| &a.name == name)
    {
        if asset.kind() != entry.kind {
            return Err(PlanError::KindMismatch(
                name.clone(),
                entry.kind.as_str(),
                asset.kind().as_str(),
                p.metadata.name.clone().unwrap_or_default(),
            ));
        }
        return Ok(asset.clone());
    }
    let kind = entry.kind.as_str();
    let source = match target.map(|t| &t.to) {
        // Held to the request's own namespace: the operator cannot see what the dump holds,
        // and the agent refuses a dump reaching beyond the scope before applying anything.
        None | Some(Target::KubernetesState(_)) if entry.kind == AssetKind::KubernetesState => {
            AssetSource::KubernetesState(Box::new(KubernetesStateAsset {
                namespaces: rr.metadata.namespace.iter().cloned().collect(),
                ..KubernetesStateAsset::default()
            }))
        }
        None => return Err(PlanError::TargetRequired(name.clone(), kind)),
        Some(to) => to
            .settings()
            .as_source(None, false)
            .filter(|s| s.kind() == entry.kind)
            .ok_or_else(|| PlanError::TargetKind(name.clone(), kind))?,
    };
    Ok(Asset {
        name: name.clone(),
        source,
        canary: false,
    })
}

/// The directory of a policy's safety backups: `_` cannot appear in a Kubernetes name, so it
/// never collides with another policy's directory, and the policy's retention (which prunes
/// only its own directory) never deletes a safety backup.
pub fn safety_policy(policy: &str) -> String {
    format!("{policy}_safety")
}

/// What is in the restore target right now, as an asset the agent can back up: the safety
/// backup of a rollback. With no target, the target is the asset's own source. An empty target
/// is a fine state to return to (it may be the disaster itself), and a safety backup never
/// writes a canary marker into what it is about to protect.
pub fn safety_asset(asset: &Asset, target: Option<&RestoreTarget>) -> Result<Asset, PlanError> {
    let (source, kind) = match target.map(|t| &t.to) {
        None => (asset.source.settings().safety(), asset.kind().as_str()),
        Some(to) => (
            to.settings().as_source(Some(&asset.source), true),
            to.field(),
        ),
    };
    let source = source.ok_or_else(|| PlanError::RollbackUnsupported(asset.name.clone(), kind))?;
    Ok(Asset {
        name: asset.name.clone(),
        source,
        canary: false,
    })
}

/// Where an asset goes, for people, without credentials.
pub fn describe_target(asset: &Asset, target: Option<&RestoreTarget>) -> String {
    match target {
        None => format!("original source {}", asset.source.settings().describe()),
        Some(t) => t.to.settings().describe(&asset.source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(json: serde_json::Value) -> Asset {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_safety_asset_is_the_target_not_the_original_source() {
        let orders = asset(serde_json::json!({
            "name": "orders", "postgres": {"host": "prod-db", "user": "u", "databases": ["orders"]}
        }));
        let target: RestoreTarget = serde_json::from_value(serde_json::json!({
            "asset": "orders", "postgres": {"host": "staging-db", "user": "s", "database": "orders_copy"}
        }))
        .unwrap();
        let safety = safety_asset(&orders, Some(&target)).unwrap();
        let AssetSource::Postgres(pg) = safety.source else {
            panic!("{safety:?}")
        };
        assert_eq!(pg.connection.host, "staging-db");
        assert_eq!(pg.databases, ["orders_copy"]);
        assert!(pg.allow_empty, "an empty target is a state to return to");
        // Without a target, the target is the source itself, empty or not.
        let own = safety_asset(&orders, None).unwrap();
        let (AssetSource::Postgres(own), AssetSource::Postgres(source)) =
            (own.source, orders.source)
        else {
            panic!("not postgres")
        };
        assert!(own.allow_empty);
        assert_eq!(own.connection, source.connection);
    }

    fn entry(asset: &str, kind: AssetKind, encrypted: bool) -> CatalogEntry {
        CatalogEntry {
            asset: asset.into(),
            kind,
            backup_id: format!("20261124T100000Z-123-{asset}"),
            snapshot_time: "2026-11-24T10:00:00Z".parse().unwrap(),
            stored_bytes: 2048,
            encrypted,
            verified: false,
        }
    }

    fn request(spec: serde_json::Value) -> RestoreRequest {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
            "metadata": {"name": "back", "namespace": "shop", "uid": "r-1"},
            "spec": spec
        }))
        .unwrap()
    }

    fn location() -> serde_json::Value {
        serde_json::json!({"s3": {"endpoint": "http://s3:9000", "bucket": "backups",
            "credentialsSecret": {"name": "s3-creds"}}})
    }

    #[test]
    fn without_a_policy_kubernetes_state_restores_first_and_data_goes_into_its_targets() {
        let rr = request(serde_json::json!({
            "source": {"policy": "shop", "location": location()},
            "targets": [{"asset": "orders", "postgres": {"host": "db-new", "user": "restore", "database": "orders"}}]
        }));
        let catalog = Catalog {
            entries: vec![
                entry("orders", AssetKind::Postgres, false),
                entry("state", AssetKind::KubernetesState, false),
            ],
            omitted: 0,
        };
        let steps = from_catalog(&rr, None, &catalog).unwrap();
        let order: Vec<&str> = steps.iter().map(|s| s.asset.name.as_str()).collect();
        assert_eq!(order, ["state", "orders"]);
        let AssetSource::KubernetesState(state) = &steps[0].asset.source else {
            panic!("{:?}", steps[0].asset)
        };
        assert_eq!(
            state.namespaces,
            ["shop"],
            "held to the request's namespace"
        );
        assert!(!state.include_cluster_resources);
        let AssetSource::Postgres(pg) = &steps[1].asset.source else {
            panic!("{:?}", steps[1].asset)
        };
        assert_eq!(pg.connection.host, "db-new");
        let planned = &steps[1].planned;
        assert_eq!(planned.kind, Some(AssetKind::Postgres));
        assert_eq!(planned.backup_id, "20261124T100000Z-123-orders");
        assert_eq!(planned.stored_bytes, Some(2048));
        assert!(planned.snapshot_time.is_some());
    }

    #[test]
    fn without_a_policy_what_cannot_be_resolved_is_refused_with_a_reason() {
        let data = Catalog {
            entries: vec![entry("orders", AssetKind::Postgres, false)],
            omitted: 0,
        };
        // No target for a data asset: the metadata names the lost cluster's host, never used.
        let rr = request(serde_json::json!({"source": {"policy": "shop", "location": location()}}));
        let e = from_catalog(&rr, None, &data).unwrap_err();
        assert_eq!(e.reason(), "TargetRequired", "{e}");
        // A target of another kind.
        let rr = request(serde_json::json!({
            "source": {"policy": "shop", "location": location()},
            "targets": [{"asset": "orders", "redis": {"host": "cache"}}]
        }));
        assert_eq!(
            from_catalog(&rr, None, &data).unwrap_err().reason(),
            "InvalidSpec"
        );
        // Encrypted, and no identity named.
        let rr = request(serde_json::json!({
            "source": {"policy": "shop", "location": location()},
            "targets": [{"asset": "orders", "postgres": {"host": "db", "user": "u"}}]
        }));
        let encrypted = Catalog {
            entries: vec![entry("orders", AssetKind::Postgres, true)],
            omitted: 0,
        };
        assert_eq!(
            from_catalog(&rr, None, &encrypted).unwrap_err().reason(),
            "IdentityRequired"
        );
        // A catalog cut to fit its termination message is not the whole set.
        let cut = Catalog {
            entries: data.entries.clone(),
            omitted: 3,
        };
        assert_eq!(
            from_catalog(&rr, None, &cut).unwrap_err().reason(),
            "CatalogTooLarge"
        );
        // An asset asked for that the location does not hold.
        let rr = request(serde_json::json!({
            "source": {"policy": "shop", "location": location()}, "assets": ["sessions"]
        }));
        assert_eq!(
            from_catalog(&rr, None, &data).unwrap_err().reason(),
            "NoBackupAtLocation"
        );
        // Rollback writes safety backups with the policy's settings: none here.
        let rr = request(serde_json::json!({
            "source": {"policy": "shop", "location": location()}, "rollbackOnFailure": true,
            "targets": [{"asset": "orders", "postgres": {"host": "db", "user": "u"}}]
        }));
        assert_eq!(
            from_catalog(&rr, None, &data).unwrap_err().reason(),
            "RollbackUnsupported"
        );
    }

    #[test]
    fn with_a_policy_its_asset_is_used_and_must_be_the_kind_the_metadata_records() {
        let policy: BackupPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "shop", "namespace": "shop"},
            "spec": {"schedule": "@daily",
                "assets": [{"name": "orders", "redis": {"host": "cache", "dataDir": "/data"}}],
                "retention": {"keepLast": 7},
                "destination": {"volume": {"claimName": "backups"}}}
        }))
        .unwrap();
        let rr = request(serde_json::json!({"source": {"policy": "shop", "location": location()}}));
        let postgres = Catalog {
            entries: vec![entry("orders", AssetKind::Postgres, false)],
            omitted: 0,
        };
        assert_eq!(
            from_catalog(&rr, Some(&policy), &postgres)
                .unwrap_err()
                .reason(),
            "MetadataInvalid"
        );
        let redis = Catalog {
            entries: vec![entry("orders", AssetKind::Redis, false)],
            omitted: 0,
        };
        let steps = from_catalog(&rr, Some(&policy), &redis).unwrap();
        assert_eq!(steps[0].asset, policy.spec.assets[0]);
    }

    #[test]
    fn kubernetes_state_cannot_be_rolled_back_and_says_so() {
        let state = asset(serde_json::json!({"name": "objects", "kubernetesState": {}}));
        let e = safety_asset(&state, None).unwrap_err();
        assert_eq!(e.reason(), "RollbackUnsupported");
        assert!(e.to_string().contains("objects"), "{e}");
        assert_eq!(safety_policy("shop"), "shop_safety");
    }

    fn pitr_policy() -> BackupPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "shop", "namespace": "prod"},
            "spec": {
                "schedule": "@daily",
                "assets": [
                    {"name": "orders", "canary": true, "postgres": {"host": "db", "user": "backup", "databases": ["orders"],
                        "pointInTime": {"user": "archiver"}}},
                    {"name": "plain", "postgres": {"host": "db", "user": "backup", "databases": ["plain"]}}
                ],
                "retention": {"keepLast": 7},
                "destination": {"volume": {"claimName": "backups"}}
            },
            "status": {"assets": [
                {"name": "orders", "lastSuccess": {"id": "20261201T010000Z", "snapshotTime": "2026-12-01T01:00:00Z",
                    "startedAt": "2026-12-01T01:00:00Z", "finishedAt": "2026-12-01T01:00:00Z",
                    "storedBytes": 1, "sha256": "00", "durationSeconds": 1.0}},
                {"name": "plain", "lastSuccess": {"id": "20261201T010000Z", "snapshotTime": "2026-12-01T01:00:00Z",
                    "startedAt": "2026-12-01T01:00:00Z", "finishedAt": "2026-12-01T01:00:00Z",
                    "storedBytes": 1, "sha256": "00", "durationSeconds": 1.0}}
            ]}
        }))
        .unwrap()
    }

    fn pitr_request(asset: &str, point_in_time: &str, extra: serde_json::Value) -> RestoreRequest {
        let mut spec = serde_json::json!({
            "source": {"policy": "shop"}, "assets": [asset],
            "targets": [{"asset": asset, "dataVolume": {"claimName": "pgdata-new", "subPath": "pgdata",
                "runAsUser": 999, "pointInTime": point_in_time}}]
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
            "metadata": {"name": "to-instant", "namespace": "prod"}, "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn latest_is_resolved_once_a_backup_recorded_while_the_request_executes_is_not_restored() {
        let mut policy = pitr_policy();
        let mut rr: RestoreRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
            "metadata": {"name": "back", "namespace": "prod"},
            "spec": {"source": {"policy": "shop"}, "assets": ["plain"], "execute": true}
        }))
        .unwrap();
        let first = resolve(&rr, &policy).unwrap();
        assert_eq!(first[0].backup_id, "20261201T010000Z");
        // Restoring from that plan, when the next scheduled backup is recorded.
        rr.status = Some(lifeboat_api::restore_request::RestoreRequestStatus {
            phase: RestorePhase::Restoring,
            plan: vec![first[0].planned.clone()],
            ..Default::default()
        });
        let newer = &mut policy.status.as_mut().unwrap().assets[1];
        let record = newer.last_success.as_mut().unwrap();
        record.id = "20261201T020000Z".into();
        record.snapshot_time.0 = "2026-12-01T02:00:00Z".parse().unwrap();
        let again = resolve(&rr, &policy).unwrap();
        assert_eq!(again[0].backup_id, "20261201T010000Z");
        assert_eq!(
            again[0].planned, first[0].planned,
            "the status names what runs"
        );
        // A request only planned (not executing yet) follows the policy.
        rr.status.as_mut().unwrap().phase = RestorePhase::Planned;
        assert_eq!(
            resolve(&rr, &policy).unwrap()[0].backup_id,
            "20261201T020000Z"
        );
    }

    #[test]
    fn taken_before_reads_the_catalog_only_when_the_policy_names_a_newer_backup() {
        let policy = pitr_policy();
        let rr = |spec: serde_json::Value| -> RestoreRequest {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
                "metadata": {"name": "back", "namespace": "prod"}, "spec": spec
            }))
            .unwrap()
        };
        // The policy's newest backups are from 01:00.
        let at = |t: &str| {
            rr(
                serde_json::json!({"source": {"policy": "shop", "takenBefore": t},
                                   "assets": ["plain"]}),
            )
        };
        assert_eq!(
            catalog_location(&at("2026-12-01T01:00:00Z"), Some(&policy)),
            None
        );
        let plan = resolve(&at("2026-12-01T01:30:00Z"), &policy).unwrap();
        assert_eq!(plan[0].backup_id, "20261201T010000Z");
        // Before it: the status knows no older backup, the policy's destination is listed.
        assert_eq!(
            catalog_location(&at("2026-12-01T00:59:59Z"), Some(&policy)),
            Some(policy.spec.destination.clone())
        );
        // Without takenBefore the status resolves; with a location, the location is read.
        let plain = rr(serde_json::json!({"source": {"policy": "shop"}}));
        assert_eq!(catalog_location(&plain, Some(&policy)), None);
        let elsewhere =
            rr(serde_json::json!({"source": {"policy": "shop", "location": location()}}));
        assert!(catalog_location(&elsewhere, None).unwrap().s3.is_some());
        assert_eq!(catalog_location(&at("2026-12-01T00:00:00Z"), None), None);
    }

    #[test]
    fn a_point_in_time_asset_restores_into_a_data_volume_without_its_canary_check() {
        let rr = pitr_request("orders", "2026-12-01T01:30:00Z", serde_json::json!({}));
        let steps = resolve(&rr, &pitr_policy()).unwrap();
        assert_eq!(steps.len(), 1);
        let step = &steps[0];
        assert!(
            !step.asset.canary,
            "nothing serves the new data directory to check"
        );
        assert_eq!(
            step.planned.target,
            "pvc/pgdata-new/pgdata (UID 999), recovering to 2026-12-01T01:30:00Z from the base backup before it"
        );
        assert!(
            resolve(
                &pitr_request("orders", "latest", serde_json::json!({})),
                &pitr_policy()
            )
            .is_ok()
        );
    }

    #[test]
    fn what_a_data_volume_cannot_do_is_refused_with_a_reason() {
        let p = pitr_policy();
        let cases = [
            (
                pitr_request("plain", "latest", serde_json::json!({})),
                "TargetUnsupported",
            ),
            (
                pitr_request("orders", "2026-13-45T01:00:00Z", serde_json::json!({})),
                "InvalidSpec",
            ),
            (
                pitr_request(
                    "orders",
                    "latest",
                    serde_json::json!({"rollbackOnFailure": true}),
                ),
                "RollbackUnsupported",
            ),
            (
                pitr_request(
                    "orders",
                    "latest",
                    serde_json::json!({"validation": {"checks": [
                    {"name": "rows", "sql": {"asset": "orders", "database": "orders", "query": "SELECT 1", "expect": "1"}}]}}),
                ),
                "TargetUnsupported",
            ),
        ];
        for (rr, reason) in cases {
            let e = resolve(&rr, &p).unwrap_err();
            assert_eq!(e.reason(), reason, "{e}");
        }
    }
}
