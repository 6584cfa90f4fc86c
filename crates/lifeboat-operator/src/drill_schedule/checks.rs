//! What a drill's spec must satisfy before anything runs, checked on every reconcile. Pure.

use lifeboat_api::{BackupPolicy, DrillSchedule};

use crate::error::Problem;

/// A drill never restores over its source: every drilled asset needs a staging target of its
/// kind, and no target may be the asset's own source.
pub fn check_targets(ds: &DrillSchedule, policy: &BackupPolicy) -> Result<(), Problem> {
    for name in &ds.spec.assets {
        let asset = policy
            .spec
            .assets
            .iter()
            .find(|a| &a.name == name)
            .ok_or_else(|| Problem::DrilledAssetUnknown {
                asset: name.clone(),
                policy: ds.spec.policy.clone(),
            })?;
        let target = ds
            .spec
            .staging
            .targets
            .iter()
            .find(|t| &t.asset == name)
            .ok_or_else(|| Problem::NoStagingTarget(name.clone()))?;
        let same = asset
            .source
            .settings()
            .is_same_place(&target.to)
            .ok_or_else(|| Problem::StagingTargetKind(name.clone()))?;
        if same {
            return Err(Problem::StagingTargetIsSource(name.clone()));
        }
    }
    Ok(())
}

/// Every staging target inside the scope the drill declares (when it declares one): a drill
/// never writes anywhere else.
pub fn check_staging_scope(ds: &DrillSchedule) -> Result<(), Problem> {
    let Some(scope) = &ds.spec.staging.scope else {
        return Ok(());
    };
    match ds
        .spec
        .staging
        .targets
        .iter()
        .find_map(|t| Some((t, t.to.settings().outside(scope)?)))
    {
        Some((t, what)) => Err(Problem::OutOfStagingScope {
            asset: t.asset.clone(),
            what,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn drill(staging: serde_json::Value) -> DrillSchedule {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DrillSchedule",
            "metadata": {"name": "q", "namespace": "shop"},
            "spec": {"schedule": "0 6 1 * *", "policy": "shop", "assets": ["db", "cache", "media", "state"],
                     "staging": staging, "objectives": {"rto": "30m", "rpo": "15m"}}
        }))
        .unwrap()
    }

    fn targets(pg_host: &str, endpoint: &str, ns: &str) -> serde_json::Value {
        serde_json::json!([
            {"asset": "db", "postgres": {"host": pg_host, "user": "u", "database": "d"}},
            {"asset": "cache", "redis": {"host": "cache.drills.svc"}},
            {"asset": "media", "objectStorage": {"endpoint": endpoint, "bucket": "drill-media",
                                                  "credentialsSecret": {"name": "s"}}},
            {"asset": "state", "kubernetesState": {"namespaceMapping": {"prod": ns}}}
        ])
    }

    fn scope() -> serde_json::Value {
        serde_json::json!({"hosts": ["*.drills.svc", "minio.drills.example.com"],
                           "buckets": ["drill-media"], "namespaces": ["prod-drill"]})
    }

    fn policy() -> BackupPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "shop", "namespace": "shop"},
            "spec": {"schedule": "@daily", "retention": {"keepLast": 3},
                     "destination": {"volume": {"claimName": "b"}},
                     "assets": [
                {"name": "db", "postgres": {"host": "prod-db", "user": "u", "databases": ["d"]}},
                {"name": "cache", "redis": {"host": "cache.prod.svc"}},
                {"name": "media", "objectStorage": {"endpoint": "https://s3.example.com", "bucket": "media",
                                                     "credentialsSecret": {"name": "s"}}},
                {"name": "state", "kubernetesState": {}}]}
        }))
        .unwrap()
    }

    #[test]
    fn every_target_inside_the_declared_scope_passes() {
        let d = drill(serde_json::json!({"targets": targets("pg.drills.svc",
            "https://minio.drills.example.com:9000", "prod-drill"), "scope": scope()}));
        assert_eq!(check_staging_scope(&d), Ok(()));
        // Without a scope only the own-source rule applies.
        let d = drill(
            serde_json::json!({"targets": targets("prod-db", "https://s3.amazonaws.com", "prod")}),
        );
        assert_eq!(check_staging_scope(&d), Ok(()));
    }

    #[test]
    fn a_target_outside_the_scope_is_refused_with_what_is_outside() {
        for (pg, endpoint, ns, expect) in [
            (
                "prod-db.shop.svc",
                "https://minio.drills.example.com",
                "prod-drill",
                "host prod-db.shop.svc",
            ),
            // A suffix pattern does not match the bare suffix or a lookalike.
            (
                "drills.svc",
                "https://minio.drills.example.com",
                "prod-drill",
                "host drills.svc",
            ),
            (
                "pg.evil-drills.svc",
                "https://minio.drills.example.com",
                "prod-drill",
                "host pg.evil-drills.svc",
            ),
            (
                "pg.drills.svc",
                "https://s3.amazonaws.com",
                "prod-drill",
                "endpoint https://s3.amazonaws.com",
            ),
            (
                "pg.drills.svc",
                "https://minio.drills.example.com",
                "prod",
                "namespace prod",
            ),
        ] {
            let d =
                drill(serde_json::json!({"targets": targets(pg, endpoint, ns), "scope": scope()}));
            let err = check_staging_scope(&d).unwrap_err();
            assert_eq!(err.reason(), "OutOfStagingScope");
            let err = err.to_string();
            assert!(
                err.contains(expect) && err.contains("outside the drill's staging scope"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_target_that_is_its_own_source_or_of_another_kind_is_refused() {
        let p = policy();
        let ok = drill(serde_json::json!({"targets": targets("pg.drills.svc",
            "https://minio.drills.example.com", "prod-drill")}));
        assert_eq!(check_targets(&ok, &p), Ok(()));
        let own = drill(serde_json::json!({"targets": targets("prod-db",
            "https://minio.drills.example.com", "prod-drill")}));
        assert_eq!(
            check_targets(&own, &p),
            Err(Problem::StagingTargetIsSource("db".into()))
        );
        let mut swapped = targets("pg.drills.svc", "https://m.example.com", "prod-drill");
        swapped[1] = serde_json::json!({"asset": "cache", "postgres": {"host": "x", "user": "u"}});
        let d = drill(serde_json::json!({ "targets": swapped }));
        assert_eq!(
            check_targets(&d, &p),
            Err(Problem::StagingTargetKind("cache".into()))
        );
        // A drill does not restore to a point in time (yet): a new data directory is refused.
        let mut pitr = targets("pg.drills.svc", "https://m.example.com", "prod-drill");
        pitr[0] = serde_json::json!({"asset": "db", "dataVolume": {"claimName": "c",
            "subPath": "pgdata", "runAsUser": 999, "pointInTime": "latest"}});
        let d = drill(serde_json::json!({ "targets": pitr }));
        assert_eq!(
            check_targets(&d, &p),
            Err(Problem::StagingTargetKind("db".into()))
        );
    }
}
