//! Off-site copies: once a backup counts at the policy's destination, each copy's bucket gets
//! the backups of the asset it lacks. Each is read back from the copy's store (every checksum
//! compared with the metadata) before its metadata is written there, signed again with the
//! namespace's key and carrying the copy's own Object Lock: a copy is a backup of its own, which
//! `catalog` and a restore from `source.location` read like any other, with no access to the
//! primary store at all.

use std::collections::HashSet;

use jiff::Timestamp;

use crate::error::{AgentError, Result};
use crate::jobs::Env;
use crate::layout::{Listed, Scope};
use crate::stream::Encoding;

/// How far a copy got: kept when a later backup fails to copy, so the report says what the copy
/// holds whatever happened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Backups copied by this run.
    pub copied: u32,
    /// The newest backup of the asset the copy holds: its id and snapshot time.
    pub newest: Option<(String, Timestamp)>,
}

/// The backups (ids, oldest first) a copy lacks: each primary backup newer than the newest the
/// copy holds, and `fresh` (the backup just taken) when the copy lacks it. A copy that holds none
/// starts from `fresh`: adding a copy to a policy does not upload its whole history in one run.
/// `primary` and `held` are (id, snapshot time), oldest first.
pub fn lacking(
    primary: &[(String, Timestamp)],
    held: &[(String, Timestamp)],
    fresh: &str,
) -> Vec<String> {
    let ids: HashSet<&str> = held.iter().map(|(id, _)| id.as_str()).collect();
    let newest = held.iter().map(|(_, t)| *t).max();
    primary
        .iter()
        .filter(|(id, _)| !ids.contains(id.as_str()))
        .filter(|(id, t)| id == fresh || newest.is_some_and(|n| *t > n))
        .map(|(id, _)| id.clone())
        .collect()
}

/// Copies to `to` every backup of `asset` in `scope` at `from` that the copy lacks (see
/// [`lacking`]), oldest first; stops at the first failure, which is returned with the progress
/// made so far in `progress`. `primary` is the asset's listing at `from` when the caller holds
/// one (the run's retention pass just read it); otherwise `from` is listed here.
pub fn bring_up_to_date(
    from: &Env,
    primary: Option<&[Listed]>,
    to: &Env,
    scope: &Scope,
    asset: &str,
    fresh: &str,
    progress: &mut Progress,
) -> Result<()> {
    let listed;
    let primary = match primary {
        Some(p) => p,
        None => {
            listed = crate::jobs::list_asset(from, scope, asset)?;
            &listed
        }
    };
    let held = crate::jobs::list_asset(to, scope, asset)?;
    let stamps = |l: &[Listed]| -> Vec<(String, Timestamp)> {
        l.iter()
            .map(|l| (l.id.clone(), l.metadata.snapshot_time))
            .collect()
    };
    progress.newest = held
        .last()
        .map(|l| (l.id.clone(), l.metadata.snapshot_time));
    for id in lacking(&stamps(primary), &stamps(&held), fresh) {
        let Some(listed) = primary.iter().find(|l| l.id == id) else {
            continue;
        };
        copy_one(from, to, listed)?;
        progress.copied += 1;
        if progress
            .newest
            .as_ref()
            .is_none_or(|(_, t)| listed.metadata.snapshot_time >= *t)
        {
            progress.newest = Some((listed.id.clone(), listed.metadata.snapshot_time));
        }
    }
    Ok(())
}

/// Copies one backup: its artifacts checked at `from`, written unchanged to `to`, read back
/// there and checked again, then its metadata committed last. On failure what was written goes:
/// the copy never holds a backup without all of its artifacts.
fn copy_one(from: &Env, to: &Env, listed: &Listed) -> Result<()> {
    let key = to.key()?;
    let local = crate::jobs::verify(from, listed)?;
    let slot = listed.slot.clone();
    to.store.prepare(&slot)?;
    let mut written = Vec::new();
    let result = (|| {
        for a in &listed.metadata.artifacts {
            let path = local.dir.join(&a.name);
            let mut file =
                std::fs::File::open(&path).map_err(|e| AgentError::storage(path.display(), e))?;
            written.push(a.name.clone());
            let stored = to
                .store
                .put(&slot, &a.name, &mut file, &Encoding::default())?;
            if (stored.sha256.as_str(), stored.stored_bytes) != (a.sha256.as_str(), a.stored_bytes)
            {
                return Err(AgentError::integrity(format!(
                    "{}/{}: {} bytes with sha256 {} written, {} bytes with sha256 {} expected",
                    to.store.describe(&slot),
                    a.name,
                    stored.stored_bytes,
                    stored.sha256,
                    a.stored_bytes,
                    a.sha256
                )));
            }
        }
        // What the copy's store serves, not what was sent to it: read back and checked before
        // the metadata makes the copy count.
        crate::jobs::verify(to, listed)?;
        crate::fault::point("copy.before-commit");
        to.store.commit(&slot, listed.metadata.clone(), key)
    })();
    if result.is_err() {
        to.store.discard(&slot, &written);
    }
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn backups(times: &[i64]) -> Vec<(String, Timestamp)> {
        times.iter().map(|t| (format!("b{t}"), at(*t))).collect()
    }

    #[test]
    fn an_empty_copy_starts_from_the_fresh_backup() {
        assert_eq!(lacking(&backups(&[1, 2, 3]), &[], "b3"), vec!["b3"]);
    }

    #[test]
    fn a_copy_behind_gets_every_newer_backup_oldest_first() {
        let primary = backups(&[1, 2, 3, 4]);
        assert_eq!(lacking(&primary, &backups(&[1, 2]), "b4"), vec!["b3", "b4"]);
        // Up to date: nothing; an older backup the copy's retention deleted is not copied back.
        assert!(lacking(&primary, &backups(&[3, 4]), "b4").is_empty());
    }

    proptest! {
        /// Whatever the two stores hold: nothing the copy holds is copied again, the fresh
        /// backup is always copied when lacking, and nothing older than the copy's newest is.
        #[test]
        fn lacking_is_what_the_copy_needs(
            primary in proptest::collection::btree_set(0i64..50, 1..20),
            held in proptest::collection::btree_set(0i64..50, 0..20),
            pick in any::<prop::sample::Index>(),
        ) {
            let primary = backups(&primary.into_iter().collect::<Vec<_>>());
            let held = backups(&held.into_iter().collect::<Vec<_>>());
            let fresh = primary[pick.index(primary.len())].0.clone();
            let out = lacking(&primary, &held, &fresh);
            let newest = held.iter().map(|(_, t)| *t).max();
            for id in &out {
                prop_assert!(!held.iter().any(|(h, _)| h == id));
                let t = primary.iter().find(|(p, _)| p == id).unwrap().1;
                prop_assert!(*id == fresh || newest.is_some_and(|n| t > n));
            }
            if !held.iter().any(|(h, _)| *h == fresh) {
                prop_assert!(out.contains(&fresh));
            }
            let mut sorted = out.clone();
            sorted.sort_by_key(|id| primary.iter().position(|(p, _)| p == id));
            prop_assert_eq!(sorted, out);
        }
    }
}
