//! The signing keys of agent Jobs. The platform team holds one master key, a Secret in the
//! operator's own namespace (the chart creates it); each namespace gets a key of its own derived
//! from it, HMAC-SHA256(master, "lifeboat.dev/signing/v1" || 0x00 || namespace), which the
//! operator applies as the Secret `lifeboat-signing-key` there before it creates a Job, and which
//! every agent Job mounts to sign and check backup metadata. A namespace user who reads that
//! Secret can sign only for its own namespace; the master key never leaves the operator.

use std::collections::BTreeMap;

use hmac::{KeyInit, Mac};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams};
use lifeboat_api::agent_job::{SIGNING_KEY_KEY, SIGNING_KEY_SECRET};

use crate::config::FIELD_MANAGER;
use crate::context::Context;
use crate::error::{Error, Problem, Result};
use crate::names;

/// What the derivation is for: a new scheme gets a new label, never a reuse of this one.
const DERIVATION_LABEL: &[u8] = b"lifeboat.dev/signing/v1";

/// Shortest master key accepted: the derived keys' own size.
const MIN_MASTER_BYTES: usize = 32;

/// Where the master key is: a Secret in the operator's namespace, its value under `key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterKeySecret {
    pub namespace: String,
    pub name: String,
}

/// Why a master key Secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    /// In the operator's own namespace a derived key would overwrite it.
    #[error(
        "the master key Secret cannot be named {SIGNING_KEY_SECRET}, the name of the derived keys"
    )]
    NamedLikeTheDerivedKeys,
}

impl MasterKeySecret {
    /// The master key Secret `name` in the operator's namespace.
    pub fn new(namespace: &str, name: &str) -> std::result::Result<Self, MasterKeyError> {
        if name == SIGNING_KEY_SECRET {
            return Err(MasterKeyError::NamedLikeTheDerivedKeys);
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// The signing key of `namespace`.
pub fn derive(master: &[u8], namespace: &str) -> Result<Vec<u8>> {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(master)
        .map_err(|e| Problem::SigningKeyMissing(format!("the master key: {e}")))?;
    mac.update(DERIVATION_LABEL);
    mac.update(&[0]);
    mac.update(namespace.as_bytes());
    Ok(mac.finalize().into_bytes().to_vec())
}

/// The Secret holding `namespace`'s derived key.
fn derived_secret(namespace: &str, key: Vec<u8>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(SIGNING_KEY_SECRET.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                names::LABEL_MANAGED_BY.to_owned(),
                names::MANAGED_BY.to_owned(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            SIGNING_KEY_KEY.to_owned(),
            ByteString(key),
        )])),
        ..Default::default()
    }
}

/// The derived key Secret `namespace` must hold before a Job there needs it: read the master
/// key, derive, and compare with what the namespace holds. `Ok(None)` when it holds it already;
/// without a master key it is [`Problem::SigningKeyMissing`], and the caller creates no Job.
pub async fn desired(ctx: &Context, namespace: &str) -> Result<Option<Secret>> {
    let missing = |why: String| Error::Problem(Problem::SigningKeyMissing(why));
    let master = ctx.signing_key.as_ref().ok_or_else(|| {
        missing(
            "the operator runs without --signing-key-secret: no Job can sign its backups".into(),
        )
    })?;
    // The chart lets the operator read its master key by name only: a name the chart did not
    // grant is refused (403), which is the same configuration problem as a missing Secret.
    let found = Api::<Secret>::namespaced(ctx.client.clone(), &master.namespace)
        .get_opt(&master.name)
        .await;
    let place = format!("{}/{}", master.namespace, master.name);
    let secret = match found {
        Err(kube::Error::Api(e)) if e.code == 403 => {
            return Err(missing(format!(
                "the operator may not read the master key Secret {place} \
                 (the chart grants `get` on the one it names only)"
            )));
        }
        other => other.map_err(Error::get::<Secret>(&master.name))?,
    }
    .ok_or_else(|| missing(format!("the master key Secret {place} does not exist")))?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(SIGNING_KEY_KEY))
        .map(|b| b.0.as_slice())
        .filter(|b| b.len() >= MIN_MASTER_BYTES)
        .ok_or_else(|| {
            missing(format!(
                "the master key Secret {}/{} has no key {SIGNING_KEY_KEY:?} of at least {MIN_MASTER_BYTES} bytes",
                master.namespace, master.name
            ))
        })?;
    let key = derive(bytes, namespace)?;
    let current = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(SIGNING_KEY_SECRET)
        .await
        .map_err(Error::get::<Secret>(SIGNING_KEY_SECRET))?;
    let held = current
        .and_then(|s| s.data)
        .and_then(|d| d.get(SIGNING_KEY_KEY).cloned())
        .is_some_and(|k| k.0 == key);
    Ok((!held).then(|| derived_secret(namespace, key)))
}

/// Applies a derived key Secret [`desired`] returned.
pub async fn apply(ctx: &Context, secret: &Secret) -> Result<()> {
    let namespace = secret
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .patch(
            SIGNING_KEY_SECRET,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(secret),
        )
        .await
        .map_err(Error::apply::<Secret>(SIGNING_KEY_SECRET))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn each_namespace_gets_its_own_key_and_a_prefix_is_not_a_namespace() {
        let master = [7u8; 32];
        let a = derive(&master, "team-a").unwrap();
        assert_eq!(a.len(), 32);
        assert_eq!(a, derive(&master, "team-a").unwrap());
        assert_ne!(a, derive(&master, "team-b").unwrap());
        assert_ne!(a, derive(&[8u8; 32], "team-a").unwrap());
        // The separator: "team" + "-a" is not confused with another split of the same bytes.
        assert_ne!(derive(&master, "team").unwrap(), a);
    }

    #[test]
    fn the_master_key_cannot_take_the_derived_keys_name() {
        assert!(MasterKeySecret::new("lifeboat-system", SIGNING_KEY_SECRET).is_err());
        assert!(MasterKeySecret::new("lifeboat-system", "lifeboat-signing-master-key").is_ok());
    }

    #[test]
    fn the_derived_secret_holds_the_key_under_its_fixed_name() {
        let s = derived_secret("shop", vec![1; 32]);
        assert_eq!(s.metadata.name.as_deref(), Some(SIGNING_KEY_SECRET));
        assert_eq!(s.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(s.data.unwrap()[SIGNING_KEY_KEY].0, vec![1; 32]);
    }
}
