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
