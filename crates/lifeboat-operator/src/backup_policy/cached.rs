//! A BackupPolicy as the controller's cache holds it: its metadata, and its spec and status as
//! the JSON text the API server sent, parsed into a [`BackupPolicy`] by the reconcile that needs
//! it. Typed, every policy of the cache cost about 4.8 KB at 10,000 policies (heaptrack: the
//! largest thing the operator held); as text, a policy costs well under half of that, and a
//! parse of a few kilobytes per reconcile is nothing beside its API calls.
//!
//! A stored object that no longer fits the Rust types fails its own reconcile with
//! `InvalidObject` (what kube's `DeserializeGuard` gave before), and the watch goes on with every
//! other object: spec and status are only text until then.

use std::borrow::Cow;
use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use lifeboat_api::BackupPolicy;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{Error, Result};

/// See the module's documentation.
#[derive(Clone, Debug, Deserialize)]
pub struct CachedPolicy {
    pub metadata: ObjectMeta,
    spec: Box<RawValue>,
    #[serde(default)]
    status: Option<Box<RawValue>>,
}

impl CachedPolicy {
    /// The typed policy, or [`Error::InvalidObject`] saying which part does not fit.
    pub fn parse(&self) -> Result<BackupPolicy> {
        let invalid =
            |part: &str, e: serde_json::Error| Error::InvalidObject(format!("{part}: {e}"));
        let spec = serde_json::from_str(self.spec.get()).map_err(|e| invalid("spec", e))?;
        let status = self
            .status
            .as_ref()
            .map(|s| serde_json::from_str(s.get()))
            .transpose()
            .map_err(|e| invalid("status", e))?;
        Ok(BackupPolicy {
            metadata: self.metadata.clone(),
            spec,
            status,
        })
    }

    /// The names of its assets, read without the rest of the spec; none when the spec does not
    /// parse (its series then go, like a deleted policy's).
    pub fn asset_names(&self) -> BTreeSet<String> {
        #[derive(Deserialize)]
        struct Named {
            name: String,
        }
        #[derive(Deserialize)]
        struct Assets {
            #[serde(default)]
            assets: Vec<Named>,
        }
        serde_json::from_str::<Assets>(self.spec.get())
            .map(|a| a.assets.into_iter().map(|n| n.name).collect())
            .unwrap_or_default()
    }
}

/// The API of a BackupPolicy: the cache watches the same resource.
impl Resource for CachedPolicy {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        BackupPolicy::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        BackupPolicy::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        BackupPolicy::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        BackupPolicy::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cached(spec: serde_json::Value, status: Option<serde_json::Value>) -> CachedPolicy {
        let mut obj = json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "shop", "namespace": "a", "uid": "u1", "generation": 2},
            "spec": spec,
        });
        if let Some(s) = status {
            obj["status"] = s;
        }
        serde_json::from_str(&obj.to_string()).unwrap()
    }

    fn spec() -> serde_json::Value {
        json!({"schedule": "0 * * * *", "retention": {"keepLast": 3},
               "destination": {"volume": {"claimName": "backups"}},
               "assets": [{"name": "db", "postgres": {"host": "db", "user": "u", "databases": ["app"]}},
                          {"name": "cache", "redis": {"host": "cache"}}]})
    }

    #[test]
    fn a_cached_policy_parses_into_the_policy_the_api_server_stored() {
        let status = json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Scheduled",
            "message": "m", "lastTransitionTime": "2026-12-02T10:00:00Z", "observedGeneration": 2}]});
        let c = cached(spec(), Some(status.clone()));
        let typed: BackupPolicy = serde_json::from_value(json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "shop", "namespace": "a", "uid": "u1", "generation": 2},
            "spec": spec(), "status": status,
        }))
        .unwrap();
        assert_eq!(c.parse().unwrap(), typed);
        assert_eq!(
            c.asset_names(),
            BTreeSet::from(["db".into(), "cache".into()])
        );
        assert_eq!(kube::ResourceExt::name_any(&c), "shop");
        // No status yet.
        assert!(cached(spec(), None).parse().unwrap().status.is_none());
    }

    #[test]
    fn a_stored_policy_that_no_longer_fits_fails_its_own_parse_not_the_watch() {
        // An asset with two kinds: admission refuses it, an old object may still hold it.
        let mut bad = spec();
        bad["assets"][0]["redis"] = json!({"host": "x"});
        let c = cached(bad, None);
        match c.parse() {
            Err(Error::InvalidObject(m)) => assert!(m.starts_with("spec: "), "{m}"),
            other => panic!("expected InvalidObject, got {other:?}"),
        }
        // Its asset names still read (its metric series are kept while it exists).
        assert_eq!(c.asset_names().len(), 2);
        let c = cached(spec(), Some(json!({"conditions": "not a list"})));
        assert!(matches!(c.parse(), Err(Error::InvalidObject(m)) if m.starts_with("status: ")));
    }
}
