//! The backups at a location, read without any BackupPolicy, status or cluster history: what a
//! rebuilt cluster holding only the bucket and the keys restores from. Every metadata of the
//! directory is verified as a restore verifies it (its signature with the namespace's key, the
//! namespace, policy, id and asset it records equal to where it lies); a backup is complete when
//! its metadata is there, since the metadata is written last. One bad metadata fails the whole
//! catalog: a `latest` chosen around a forgery would be a guess, not a recovery point.

use std::collections::BTreeMap;

use lifeboat_api::agent_result::{Catalog, CatalogEntry};

use crate::error::{AgentError, Result};
use crate::layout::{Listed, Scope, Store};
use crate::signing::Trust;

/// Which backups a catalog names.
pub struct Wanted<'a> {
    /// A backup id, or `latest` for each asset's newest complete backup.
    pub backup_id: &'a str,
    /// With `latest`: the newest snapshotted at or before this instant.
    pub taken_before: Option<jiff::Timestamp>,
    /// Only these assets, each of which must be found; all when empty.
    pub assets: &'a [String],
}

/// Each asset's backup as `wanted` says, in `scope`, assets in name order.
pub fn read(
    store: &Store,
    scope: &Scope,
    trust: Trust<'_>,
    wanted: &Wanted<'_>,
) -> Result<Catalog> {
    let all = store.list(scope, trust)?;
    let entries = choose(all, wanted);
    let where_ = store.describe_scope(scope);
    let what = match wanted.taken_before {
        Some(t) => format!("{:?} taken at or before {t}", wanted.backup_id),
        None => format!("{:?}", wanted.backup_id),
    };
    if let Some(missing) = wanted.assets.iter().find(|a| !entries.contains_key(*a)) {
        return Err(AgentError::not_found(format!(
            "no complete backup {what} of asset {missing:?} in {where_}"
        )));
    }
    if entries.is_empty() {
        return Err(AgentError::not_found(format!(
            "no complete backup {what} in {where_}"
        )));
    }
    Ok(Catalog {
        entries: entries.into_values().map(entry).collect(),
        omitted: 0,
    })
}

/// The chosen backup of each asset. `all` is sorted oldest first (by snapshot time, then id), so
/// the last one seen of an asset is its newest.
fn choose(all: Vec<Listed>, wanted: &Wanted<'_>) -> BTreeMap<String, Listed> {
    let mut chosen = BTreeMap::new();
    for l in all {
        let asset_ok = wanted.assets.is_empty() || wanted.assets.contains(&l.metadata.asset);
        let id_ok = wanted.backup_id == "latest" || l.id == wanted.backup_id;
        let time_ok = wanted
            .taken_before
            .is_none_or(|t| l.metadata.snapshot_time <= t);
        if asset_ok && id_ok && time_ok {
            chosen.insert(l.metadata.asset.clone(), l);
        }
    }
    chosen
}

fn entry(l: Listed) -> CatalogEntry {
    CatalogEntry {
        stored_bytes: l.metadata.stored_bytes(),
        asset: l.metadata.asset,
        kind: l.metadata.kind,
        backup_id: l.id,
        snapshot_time: l.metadata.snapshot_time,
        encrypted: l.metadata.encryption.is_some(),
        verified: l.verified.is_some(),
    }
}
