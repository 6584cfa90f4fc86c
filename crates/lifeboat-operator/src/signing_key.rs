//! The signing keys of agent Jobs. The platform team holds one master key, a Secret in the
//! operator's own namespace (the chart creates it); each namespace gets a key of its own derived
//! from it, HMAC-SHA256(master, "lifeboat.dev/signing/v1" || 0x00 || namespace), which the
//! operator applies as the Secret `lifeboat-signing-key` there before it creates a Job, and which
//! every agent Job mounts to sign and check backup metadata. A namespace user who reads that
//! Secret can sign only for its own namespace; the master key never leaves the operator.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// How long a reconcile that makes no Job may trust what the operator last read: the master
/// key, and that a namespace holds its derived key. Shorter than the periodic resync, so every
/// resync of a policy still reads both; a reconcile about to make a Job always reads them.
pub const TRUST_FOR: Duration = Duration::from_secs(60);

/// Whether a reconcile may use what [`KeyCache`] remembers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Read the master key and the namespace's Secret: the reconcile is about to make a Job that
    /// signs with the key (a changed or deleted Secret is put back first).
    Fresh,
    /// A reconcile that makes no Job itself (a policy's CronJobs, whose Jobs start later): what
    /// was read within [`TRUST_FOR`] will do. At thousands of policies this is what keeps a
    /// reconcile from costing two Secret GETs (measured in docs/performance.md).
    Recent,
}

/// What the operator last read of the signing keys, and when. Not a watch: the chart grants
/// `get` on the one master key Secret by name, and a watch of every namespace's Secrets would
/// need `list` on all of them.
#[derive(Default)]
pub struct KeyCache {
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    master: Option<(Vec<u8>, Instant)>,
    /// Namespaces seen holding the key derived from `master` (cleared when it changes).
    held: HashMap<String, Instant>,
}

impl KeyCache {
    /// The master key read within [`TRUST_FOR`] of `now`.
    fn master(&self, now: Instant) -> Option<Vec<u8>> {
        let s = self.state.lock().ok()?;
        let (key, at) = s.master.as_ref()?;
        (now.saturating_duration_since(*at) < TRUST_FOR).then(|| key.clone())
    }

    /// Remembers the master key read at `now`; a different key forgets every namespace.
    fn read_master(&self, key: &[u8], now: Instant) {
        if let Ok(mut s) = self.state.lock() {
            if s.master.as_ref().is_none_or(|(k, _)| k.as_slice() != key) {
                s.held.clear();
            }
            s.master = Some((key.to_vec(), now));
        }
    }

    /// Whether `namespace` was seen holding its key within [`TRUST_FOR`] of `now`.
    fn holds(&self, namespace: &str, now: Instant) -> bool {
        self.state.lock().is_ok_and(|s| {
            s.held
                .get(namespace)
                .is_some_and(|at| now.saturating_duration_since(*at) < TRUST_FOR)
        })
    }

    /// `namespace` holds the key derived from the current master key, as of `now`.
    fn saw_held(&self, namespace: &str, now: Instant) {
        if let Ok(mut s) = self.state.lock() {
            s.held.insert(namespace.to_owned(), now);
        }
    }

    /// Forgets `namespace` (its Secret is about to be written, or could not be).
    fn forget(&self, namespace: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.held.remove(namespace);
        }
    }
}

/// The derived key Secret `namespace` must hold before a Job there needs it: read the master
/// key, derive, and compare with what the namespace holds. `Ok(None)` when it holds it already;
/// without a master key it is [`Problem::SigningKeyMissing`], and the caller creates no Job.
/// With [`Check::Recent`], what was read within [`TRUST_FOR`] stands in for both reads.
pub async fn desired(ctx: &Context, namespace: &str, check: Check) -> Result<Option<Secret>> {
    let now = Instant::now();
    let cache = &ctx.signing_keys;
    if check == Check::Recent && cache.master(now).is_some() && cache.holds(namespace, now) {
        return Ok(None);
    }
    let master = match cache.master(now).filter(|_| check == Check::Recent) {
        Some(key) => key,
        None => {
            let key = read_master(ctx).await?;
            cache.read_master(&key, now);
            key
        }
    };
    let key = derive(&master, namespace)?;
    let current = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(SIGNING_KEY_SECRET)
        .await
        .map_err(Error::get::<Secret>(SIGNING_KEY_SECRET))?;
    let held = current
        .and_then(|s| s.data)
        .and_then(|d| d.get(SIGNING_KEY_KEY).cloned())
        .is_some_and(|k| k.0 == key);
    if held {
        cache.saw_held(namespace, now);
        return Ok(None);
    }
    cache.forget(namespace);
    Ok(Some(derived_secret(namespace, key)))
}

/// The master key's bytes, read from its Secret.
async fn read_master(ctx: &Context) -> Result<Vec<u8>> {
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
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(SIGNING_KEY_KEY))
        .map(|b| b.0.clone())
        .filter(|b| b.len() >= MIN_MASTER_BYTES)
        .ok_or_else(|| {
            missing(format!(
                "the master key Secret {place} has no key {SIGNING_KEY_KEY:?} of at least {MIN_MASTER_BYTES} bytes"
            ))
        })
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
    ctx.signing_keys.saw_held(namespace, Instant::now());
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
    fn what_was_read_is_trusted_for_a_while_and_a_new_master_key_forgets_every_namespace() {
        let cache = KeyCache::default();
        let t0 = Instant::now();
        assert_eq!(cache.master(t0), None, "nothing read yet");
        assert!(!cache.holds("shop", t0));

        cache.read_master(&[1; 32], t0);
        cache.saw_held("shop", t0);
        let soon = t0 + TRUST_FOR - Duration::from_secs(1);
        assert_eq!(cache.master(soon), Some(vec![1; 32]));
        assert!(cache.holds("shop", soon));
        assert!(
            !cache.holds("billing", soon),
            "another namespace was never seen"
        );

        let later = t0 + TRUST_FOR;
        assert_eq!(cache.master(later), None, "read again after TRUST_FOR");
        assert!(!cache.holds("shop", later));

        // The same master read again keeps what namespaces hold; a rotated one drops it all.
        cache.read_master(&[1; 32], soon);
        assert!(cache.holds("shop", soon));
        cache.read_master(&[2; 32], soon);
        assert!(
            !cache.holds("shop", soon),
            "its key was derived from the old master"
        );
        assert_eq!(cache.master(soon), Some(vec![2; 32]));

        cache.saw_held("shop", soon);
        cache.forget("shop");
        assert!(!cache.holds("shop", soon));
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
