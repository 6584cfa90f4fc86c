//! What each asset kind answers for the code that handles every kind: one module per kind,
//! each implementing [`SourceKind`] for its source settings and [`TargetKind`] for its restore
//! target. The operator and the plugin ask these traits, never a `match` over the kinds, so a
//! fifth kind is its variant in [`AssetSource`] (and [`Target`]), its module here, its driver
//! module in the agent, and their tests (docs/architecture.md, "Adding an asset kind"; the
//! test `tests/kinds.rs` holds every other file to it).

pub mod kubernetes_state;
pub mod object_storage;
pub mod postgres;
pub mod redis;

use crate::backup_policy::AssetSource;
use crate::common::{SecretKeyRef, Target};
use crate::drill_schedule::StagingScope;
use crate::ident::Identifiers;

/// An asset's source settings (`PostgresAsset`, `RedisAsset`, ...).
pub trait SourceKind: Identifiers {
    /// The Secret keys a client of this source reads (backups, and restores into the source).
    fn secrets(&self) -> Vec<SecretKeyRef>;
    /// Where the source is, for people: never a credential.
    fn describe(&self) -> String;
    /// The source as the safety backup before a restore into it reads it: a dump that accepts
    /// an empty source (the empty state may be the disaster itself) and writes no canary into
    /// what it protects. `None`: the kind has nothing a rollback could go back to.
    fn safety(&self) -> Option<AssetSource>;
    /// Whether `target` is this very source; `None` when `target` is of another kind.
    fn is_same_place(&self, target: &Target) -> Option<bool>;
}

/// A restore target (`PostgresTarget`, `RedisTarget`, ...).
pub trait TargetKind: Identifiers {
    /// The target read as a source, for a safety backup of what it holds or for a restore with
    /// no policy. `original` is the asset restored there, for the defaults the target leaves
    /// out. `None` when the target cannot be read as a source.
    fn as_source(&self, original: Option<&AssetSource>, allow_empty: bool) -> Option<AssetSource>;
    /// The Secret keys a restore into the target reads.
    fn secrets(&self) -> Vec<SecretKeyRef>;
    /// Where a restore into the target writes, for people; `original` is the asset restored.
    fn describe(&self, original: &AssetSource) -> String;
    /// What of the target lies outside a drill's staging scope, said for people; `None` when
    /// all of it is inside.
    fn outside(&self, scope: &StagingScope) -> Option<String>;
}
