//! `adopt`: moves the backups of one policy from the layout without namespaces
//! (`<root>/<policy>/<id>/`, unsigned metadata) into `<root>/<namespace>/<policy>/<id>/`. Agents
//! never read the old layout by themselves: which namespace a policy name belonged to is known
//! to the platform team that runs this, not to the store. Each backup keeps its id; its
//! checksums are re-read, its artifacts copied, the copy verified, new signed metadata written
//! (recording where it came from) and read back, and only then is the old copy deleted. A
//! backup that fails any step keeps its old copy; a rerun resumes where the last one stopped.

use jiff::Timestamp;
use lifeboat_api::agent_result::AdoptedFrom;

use crate::error::{AgentError, Result};
use crate::jobs::{self, Env};
use crate::layout::{Listed, Scope, Slot};
use crate::signing::{Trust, Unsigned};

/// What became of one old backup of one asset.
#[derive(Debug)]
pub struct Adoption {
    pub id: String,
    pub asset: String,
    pub outcome: Outcome,
}

#[derive(Debug)]
pub enum Outcome {
    /// Dry run: it would be adopted.
    Planned,
    /// Copied, verified, signed; the old copy deleted.
    Adopted,
    /// An earlier run had copied it: the copy verified, the old copy deleted now.
    Resumed,
    /// Left where it was, with why.
    Failed(AgentError),
}

/// Adopts every old backup of `policy` into `namespace` (a dry run unless `execute`), then moves
/// the policy's drill evidence records. Returns one entry per backup and asset.
pub fn adopt(env: &Env, namespace: &str, policy: &str, execute: bool) -> Result<Vec<Adoption>> {
    let old = Scope::legacy(policy)?;
    let new = Scope::new(namespace, policy)?;
    let key = env.key()?;
    // The old metadata is unsigned by construction: read as such, here only.
    let legacy = Trust {
        key: None,
        unsigned: Unsigned::Accept,
    };
    let backups = env.store.list(&old, legacy)?;
    let present = env.store.list(&new, env.trust()?)?;
    let mut out = Vec::new();
    for l in &backups {
        let outcome = if execute {
            let copy = present
                .iter()
                .find(|p| p.id == l.id && p.metadata.asset == l.metadata.asset);
            match adopt_one(env, l, &new, copy, key) {
                Ok(outcome) => outcome,
                Err(e) => Outcome::Failed(e),
            }
        } else {
            Outcome::Planned
        };
        out.push(Adoption {
            id: l.id.clone(),
            asset: l.metadata.asset.clone(),
            outcome,
        });
    }
    if execute && out.iter().all(|a| !matches!(a.outcome, Outcome::Failed(_))) {
        move_evidence(env, &old, &new)?;
    }
    Ok(out)
}

fn adopt_one(
    env: &Env,
    old: &Listed,
    new: &Scope,
    copy: Option<&Listed>,
    key: &crate::signing::SigningKey,
) -> Result<Outcome> {
    let from = env.store.describe(&old.slot);
    let outcome = match copy {
        Some(c) => {
            let same = c
                .metadata
                .adopted_from
                .as_ref()
                .is_some_and(|a| a.location == from)
                && c.metadata.artifacts == old.metadata.artifacts;
            if !same {
                return Err(AgentError::config(format!(
                    "{} already holds a backup {} of {} that is not a copy of {from}: both left as they are",
                    env.store.describe_scope(new),
                    old.id,
                    old.metadata.asset
                )));
            }
            jobs::verify(env, c)?;
            if let (None, Some(record)) = (&c.verified, &old.verified) {
                env.store.record_verification(c, record)?;
            }
            Outcome::Resumed
        }
        None => {
            // Every checksum of the old copy first: a corrupt backup is not carried over.
            jobs::verify(env, old)?;
            let target = Slot {
                id: old.id.clone(),
                scope: new.clone(),
            };
            for a in &old.metadata.artifacts {
                env.store.copy_artifact(&old.slot, &target, &a.name)?;
            }
            let staged = Listed {
                id: old.id.clone(),
                slot: target.clone(),
                metadata: old.metadata.clone(),
                verified: None,
            };
            jobs::verify(env, &staged)?;
            let mut metadata = old.metadata.clone();
            metadata.schema_version = lifeboat_api::agent_result::METADATA_SCHEMA_VERSION;
            metadata.signature = None;
            metadata.adopted_from = Some(AdoptedFrom {
                location: from.clone(),
                schema_version: old.metadata.schema_version,
                adopted_at: Timestamp::now(),
            });
            env.store.commit(&target, metadata, key)?;
            // Read back the way every restore will: signature and place.
            let adopted = env
                .store
                .find(new, &old.id, &old.metadata.asset, env.trust()?)?;
            if let Some(record) = &old.verified {
                env.store.record_verification(&adopted, record)?;
            }
            Outcome::Adopted
        }
    };
    env.store.remove(old)?;
    Ok(outcome)
}

/// Moves the policy's drill evidence records (`drill-<id>.json`) next to the adopted backups.
fn move_evidence(env: &Env, old: &Scope, new: &Scope) -> Result<()> {
    for name in env.store.policy_files(old)? {
        if !(name.starts_with("drill-") && name.ends_with(".json")) {
            continue;
        }
        let bytes = env.store.read_policy_file(old, &name)?;
        env.store.put_policy_file(new, &name, bytes.clone())?;
        if env.store.read_policy_file(new, &name)? != bytes {
            return Err(AgentError::integrity(format!(
                "{}/{name}: the copy differs from the original, which is kept",
                env.store.describe_scope(new)
            )));
        }
        env.store.remove_policy_file(old, &name)?;
    }
    Ok(())
}
