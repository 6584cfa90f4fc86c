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
