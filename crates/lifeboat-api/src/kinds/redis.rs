//! Redis: an RDB snapshot, restored into a data directory or loaded over replication.

use crate::backup_policy::{AssetSource, RedisAsset};
use crate::common::{RedisTarget, SecretKeyRef, Target};
use crate::drill_schedule::StagingScope;
use crate::ident::{IdentError, Identifiers};

use super::{SourceKind, TargetKind};

impl Identifiers for RedisAsset {
    fn check_identifiers(&self) -> Result<(), IdentError> {
        self.connection.check_identifiers()
    }
}

impl SourceKind for RedisAsset {
    fn secrets(&self) -> Vec<SecretKeyRef> {
        self.connection.password_secret.iter().cloned().collect()
    }

    fn describe(&self) -> String {
        format!("redis://{}:{}", self.connection.host, self.connection.port)
    }

    fn safety(&self) -> Option<AssetSource> {
        Some(AssetSource::Redis(Box::new(RedisAsset {
            allow_empty: true,
            ..self.clone()
        })))
    }

    fn is_same_place(&self, target: &Target) -> Option<bool> {
        let Target::Redis(dst) = target else {
            return None;
        };
        Some(
            self.connection.host == dst.connection.host
                && self.connection.port == dst.connection.port,
        )
    }
}

impl Identifiers for RedisTarget {
    fn check_identifiers(&self) -> Result<(), IdentError> {
        self.connection.check_identifiers()
    }
}

impl TargetKind for RedisTarget {
    fn as_source(&self, _: Option<&AssetSource>, allow_empty: bool) -> Option<AssetSource> {
        Some(AssetSource::Redis(Box::new(RedisAsset {
            connection: self.connection.clone(),
            data_dir: self.data_dir.clone(),
            allow_empty,
        })))
    }

    fn secrets(&self) -> Vec<SecretKeyRef> {
        self.connection.password_secret.iter().cloned().collect()
    }

    fn describe(&self, _: &AssetSource) -> String {
        format!("redis://{}:{}", self.connection.host, self.connection.port)
    }

    fn outside(&self, scope: &StagingScope) -> Option<String> {
        (!scope.allows_host(&self.connection.host))
            .then(|| format!("host {}", self.connection.host))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_redis_target_is_the_source_when_host_and_port_match() {
        let source: RedisAsset =
            serde_json::from_value(serde_json::json!({"host": "cache", "port": 6380})).unwrap();
        let target = |json| -> Target {
            let t: crate::common::RestoreTarget =
                serde_json::from_value(serde_json::json!({"asset": "s", "redis": json})).unwrap();
            t.to
        };
        let same = target(serde_json::json!({"host": "cache", "port": 6380, "dataDir": "/d"}));
        assert_eq!(source.is_same_place(&same), Some(true));
        let other = target(serde_json::json!({"host": "cache"}));
        assert_eq!(source.is_same_place(&other), Some(false));
        let AssetSource::Redis(copy) = other.settings().as_source(None, false).unwrap() else {
            panic!("not redis")
        };
        assert_eq!(copy.connection.port, 6379);
        assert_eq!(source.describe(), "redis://cache:6380");
        let Some(AssetSource::Redis(safety)) = source.safety() else {
            panic!("no safety source")
        };
        assert!(safety.allow_empty);
    }
}
