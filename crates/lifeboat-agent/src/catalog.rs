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

/// Each asset's backup `backup_id` (or, for `latest`, its newest complete one) in `scope`,
/// assets in name order; only `assets` when some are named, each of which must be found.
pub fn read(
    store: &Store,
    scope: &Scope,
    trust: Trust<'_>,
    backup_id: &str,
    assets: &[String],
) -> Result<Catalog> {
    let all = store.list(scope, trust)?;
    let entries = choose(all, backup_id, assets);
    let where_ = store.describe_scope(scope);
    if let Some(missing) = assets.iter().find(|a| !entries.contains_key(*a)) {
        return Err(AgentError::not_found(format!(
            "no complete backup {backup_id:?} of asset {missing:?} in {where_}"
        )));
    }
    if entries.is_empty() {
        return Err(AgentError::not_found(format!(
            "no complete backup {backup_id:?} in {where_}"
        )));
    }
    Ok(Catalog {
        entries: entries.into_values().map(entry).collect(),
        omitted: 0,
    })
}

/// The chosen backup of each asset. `all` is sorted oldest first (by snapshot time, then id), so
/// the last one seen of an asset is its newest.
fn choose(all: Vec<Listed>, backup_id: &str, assets: &[String]) -> BTreeMap<String, Listed> {
    let mut chosen = BTreeMap::new();
    for l in all {
        let wanted = assets.is_empty() || assets.contains(&l.metadata.asset);
        let id_ok = backup_id == "latest" || l.id == backup_id;
        if wanted && id_ok {
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
