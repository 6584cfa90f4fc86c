//! PostgreSQL: a logical dump per database, or (`pointInTime`) base backups and a WAL archive.

use crate::backup_policy::{AssetSource, PostgresAsset};
use crate::common::{DataVolumeTarget, PostgresTarget, SecretKeyRef, Target};
use crate::drill_schedule::StagingScope;
use crate::ident::{Ident, IdentError, Identifiers};

use super::{SourceKind, TargetKind};

impl Identifiers for PostgresAsset {
    fn check_identifiers(&self) -> Result<(), IdentError> {
        self.connection.check_identifiers()?;
        self.databases
            .iter()
            .try_for_each(|d| Ident::Database.check(d))?;
        self.dump_options.check_identifiers()
    }
}

impl SourceKind for PostgresAsset {
    fn secrets(&self) -> Vec<SecretKeyRef> {
        self.connection.password_secret.iter().cloned().collect()
    }

    fn describe(&self) -> String {
        format!(
            "postgres://{}:{}/{}",
            self.connection.host,
            self.connection.port,
            self.databases.join(",")
        )
    }

    /// A safety backup is a dump whatever the asset: it is restored by the dump path.
    fn safety(&self) -> Option<AssetSource> {
        Some(AssetSource::Postgres(Box::new(PostgresAsset {
            allow_empty: true,
            point_in_time: None,
            ..self.clone()
        })))
    }

    fn is_same_place(&self, target: &Target) -> Option<bool> {
        let Target::Postgres(dst) = target else {
            return None;
        };
        Some(
            self.connection.host == dst.connection.host
                && self.connection.port == dst.connection.port
                && dst
                    .database
                    .as_ref()
                    .is_none_or(|d| self.databases.contains(d)),
        )
    }
}

impl Identifiers for PostgresTarget {
    fn check_identifiers(&self) -> Result<(), IdentError> {
        self.connection.check_identifiers()?;
        self.database
            .iter()
            .try_for_each(|d| Ident::Database.check(d))
    }
}

impl TargetKind for PostgresTarget {
    fn as_source(&self, original: Option<&AssetSource>, allow_empty: bool) -> Option<AssetSource> {
        let databases = match (&self.database, original) {
            (Some(db), _) => vec![db.clone()],
            (None, Some(AssetSource::Postgres(p))) => p.databases.clone(),
            (None, _) => Vec::new(),
        };
        Some(AssetSource::Postgres(Box::new(PostgresAsset {
            connection: self.connection.clone(),
            databases,
            dump_options: Default::default(),
            allow_empty,
            point_in_time: None,
        })))
    }

    fn secrets(&self) -> Vec<SecretKeyRef> {
        self.connection.password_secret.iter().cloned().collect()
    }

    fn describe(&self, original: &AssetSource) -> String {
        let db = self.database.clone().unwrap_or_else(|| match original {
            AssetSource::Postgres(p) => p.databases.join(","),
            _ => String::new(),
        });
        format!(
            "postgres://{}:{}/{db}",
            self.connection.host, self.connection.port
        )
    }

    fn outside(&self, scope: &StagingScope) -> Option<String> {
        (!scope.allows_host(&self.connection.host))
            .then(|| format!("host {}", self.connection.host))
    }
}

/// A PVC and path inside it: mounted and joined by the agent, never syntax.
impl Identifiers for DataVolumeTarget {
    fn check_identifiers(&self) -> Result<(), IdentError> {
        Ok(())
    }
}

impl TargetKind for DataVolumeTarget {
    /// A new, empty data directory: there is nothing to read back.
    fn as_source(&self, _: Option<&AssetSource>, _: bool) -> Option<AssetSource> {
        None
    }

    fn secrets(&self) -> Vec<SecretKeyRef> {
        Vec::new()
    }

    fn describe(&self, _: &AssetSource) -> String {
        format!(
            "pvc/{}/{} (UID {}), recovering to {} from the base backup before it",
            self.claim_name, self.sub_path, self.run_as_user, self.point_in_time
        )
    }

    /// A drill does not restore to a point in time: the drill's own checks refuse this target.
    fn outside(&self, _: &StagingScope) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn source() -> AssetSource {
        let asset: crate::backup_policy::Asset = serde_json::from_value(serde_json::json!({
            "name": "orders", "postgres": {"host": "prod-db", "user": "u",
            "databases": ["orders", "billing"], "pointInTime": {"user": "repl"}}}))
        .unwrap();
        asset.source
    }

    fn target(json: serde_json::Value) -> Target {
        let t: crate::common::RestoreTarget =
            serde_json::from_value(serde_json::json!({"asset": "orders", "postgres": json}))
                .unwrap();
        t.to
    }

    #[test]
    fn a_target_read_as_a_source_keeps_the_original_databases_unless_it_names_one() {
        let original = source();
        let all = target(serde_json::json!({"host": "copy-db", "user": "u"}));
        let AssetSource::Postgres(pg) = all.settings().as_source(Some(&original), true).unwrap()
        else {
            panic!("not postgres")
        };
        assert_eq!(pg.databases, ["orders", "billing"]);
        assert_eq!(pg.connection.host, "copy-db");
        assert!(pg.allow_empty && pg.point_in_time.is_none());
        let one = target(serde_json::json!({"host": "copy-db", "user": "u", "database": "x"}));
        let AssetSource::Postgres(pg) = one.settings().as_source(None, false).unwrap() else {
            panic!("not postgres")
        };
        assert_eq!(pg.databases, ["x"]);
        assert!(!pg.allow_empty);
    }

    #[test]
    fn the_safety_backup_is_a_dump_and_the_same_server_is_the_same_place() {
        let original = source();
        let AssetSource::Postgres(safety) = original.settings().safety().unwrap() else {
            panic!("not postgres")
        };
        assert!(safety.allow_empty && safety.point_in_time.is_none());
        let same = target(serde_json::json!({"host": "prod-db", "user": "other"}));
        assert_eq!(original.settings().is_same_place(&same), Some(true));
        let elsewhere =
            target(serde_json::json!({"host": "prod-db", "user": "u", "database": "new"}));
        assert_eq!(original.settings().is_same_place(&elsewhere), Some(false));
        let redis: crate::common::RestoreTarget = serde_json::from_value(
            serde_json::json!({"asset": "orders", "redis": {"host": "prod-db"}}),
        )
        .unwrap();
        assert_eq!(original.settings().is_same_place(&redis.to), None);
        assert_eq!(
            original.settings().describe(),
            "postgres://prod-db:5432/orders,billing"
        );
    }
}
