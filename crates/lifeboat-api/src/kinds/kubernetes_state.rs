//! Kubernetes state: the objects of chosen namespaces, re-applied with server-side apply.

use crate::backup_policy::{AssetSource, KubernetesStateAsset};
use crate::common::{KubernetesStateTarget, SecretKeyRef, Target};
use crate::drill_schedule::StagingScope;
use crate::ident::{Ident, IdentError, Identifiers};

use super::{SourceKind, TargetKind};

impl Identifiers for KubernetesStateAsset {
    fn check_identifiers(&self) -> Result<(), IdentError> {
        self.namespaces
            .iter()
            .chain(&self.exclude_namespaces)
            .try_for_each(|n| Ident::Namespace.check(n))
    }
}

impl SourceKind for KubernetesStateAsset {
    /// Read with the agent's own ServiceAccount, bound by the operator to the scope.
    fn secrets(&self) -> Vec<SecretKeyRef> {
        Vec::new()
    }

    fn describe(&self) -> String {
        "kubernetes (original namespaces)".into()
    }

    /// Objects are re-applied, never deleted: there is no state to roll back to.
    fn safety(&self) -> Option<AssetSource> {
        None
    }

    /// Without a namespace mapping the objects go back where they came from.
    fn is_same_place(&self, target: &Target) -> Option<bool> {
        let Target::KubernetesState(dst) = target else {
            return None;
        };
        Some(dst.namespace_mapping.is_empty())
    }
}

impl Identifiers for KubernetesStateTarget {
    fn check_identifiers(&self) -> Result<(), IdentError> {
        self.namespace_mapping.iter().try_for_each(|(from, to)| {
            Ident::Namespace.check(from)?;
            Ident::Namespace.check(to)
        })
    }
}

impl TargetKind for KubernetesStateTarget {
    /// What a restore applies is known only once the dump is read, in the agent.
    fn as_source(&self, _: Option<&AssetSource>, _: bool) -> Option<AssetSource> {
        None
    }

    fn secrets(&self) -> Vec<SecretKeyRef> {
        Vec::new()
    }

    fn describe(&self, _: &AssetSource) -> String {
        let map: Vec<String> = self
            .namespace_mapping
            .iter()
            .map(|(a, b)| format!("{a}→{b}"))
            .collect();
        format!(
            "kubernetes (namespaces {})",
            if map.is_empty() {
                "unchanged".into()
            } else {
                map.join(", ")
            }
        )
    }

    fn outside(&self, scope: &StagingScope) -> Option<String> {
        if self.namespace_mapping.is_empty() {
            return Some("no namespace mapping: the original namespaces".into());
        }
        self.namespace_mapping
            .values()
            .find(|ns| !scope.namespaces.contains(ns))
            .map(|ns| format!("namespace {ns}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn target(mapping: serde_json::Value) -> KubernetesStateTarget {
        serde_json::from_value(serde_json::json!({"namespaceMapping": mapping})).unwrap()
    }

    #[test]
    fn a_staging_target_maps_every_namespace_into_the_scope() {
        let scope: StagingScope =
            serde_json::from_value(serde_json::json!({"namespaces": ["drill"]})).unwrap();
        assert_eq!(
            target(serde_json::json!({"prod": "drill"})).outside(&scope),
            None
        );
        assert_eq!(
            target(serde_json::json!({"prod": "elsewhere"})).outside(&scope),
            Some("namespace elsewhere".into())
        );
        assert!(target(serde_json::json!({})).outside(&scope).is_some());
    }

    #[test]
    fn state_is_never_rolled_back_nor_read_back_as_a_source() {
        let source = KubernetesStateAsset::default();
        assert!(source.safety().is_none());
        let t = target(serde_json::json!({"prod": "drill"}));
        assert!(t.as_source(None, true).is_none());
        assert_eq!(
            source.is_same_place(&Target::KubernetesState(t)),
            Some(false)
        );
        assert_eq!(
            source.is_same_place(&Target::KubernetesState(KubernetesStateTarget::default())),
            Some(true)
        );
    }
}
