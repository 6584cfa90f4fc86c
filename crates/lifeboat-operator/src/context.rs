//! What every reconcile is handed: the client, the Event recorder, metrics and settings.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tracing::warn;

use crate::config::AgentConfig;
use crate::events::{Event, Recorder, Reporter};
use crate::metrics::Metrics;
use crate::names;

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub agent: AgentConfig,
    written: StatusMemo,
    /// The policies' CronJobs, kept by a metadata-only watch (fed by the BackupPolicy
    /// controller): a reconcile reads them here instead of listing CronJobs, which at thousands
    /// of policies makes the API server filter every CronJob once per reconcile.
    pub cronjobs: CronJobIndex,
    /// The names of the policies' backup Jobs, kept by a metadata-only watch (fed by the
    /// BackupPolicy controller): a reconcile lists Jobs and pods only for a policy that has
    /// some, so a new policy costs no list.
    pub jobs: ChildIndex<()>,
    /// Every DrillSchedule in scope, kept by a watch (set by the BackupPolicy controller): a
    /// policy's verified backups are read from its drills' records without a list per reconcile.
    pub drills: std::sync::OnceLock<
        kube::runtime::reflector::Store<kube::core::DeserializeGuard<lifeboat_api::DrillSchedule>>,
    >,
    /// The master key the namespaces' signing keys are derived from; without it no Job is made.
    pub signing_key: Option<crate::signing_key::MasterKeySecret>,
    /// What was last read of the master key and of each namespace's derived key.
    pub signing_keys: crate::signing_key::KeyCache,
    /// The BackupPolicies' Events published by this process that their stored status still lists.
    pub published: crate::effects::Published,
    /// Failed reconciles in a row per object (crate::controller::error_policy).
    pub failures: crate::controller::Failures,
}

/// What a reconcile needs to know of an existing CronJob.
#[derive(Clone, Debug, PartialEq)]
pub struct CronJobMeta {
    pub uid: String,
    pub owners: Vec<String>,
    /// The digest of the spec it was applied with (`lifeboat.dev/spec-hash`).
    pub hash: Option<String>,
    pub generation: Option<i64>,
}

impl CronJobMeta {
    pub fn of(cj: &PartialObjectMeta<CronJob>) -> Self {
        Self {
            uid: cj.uid().unwrap_or_default(),
            owners: cj
                .owner_references()
                .iter()
                .map(|o| o.uid.clone())
                .collect(),
            hash: cj
                .annotations()
                .get(crate::backup_policy::cronjob::SPEC_HASH)
                .cloned(),
            generation: cj.metadata.generation,
        }
    }
}

/// The CronJobs' index, and the generation of each CronJob right after this operator applied
/// it: a different generation later means someone else changed the spec.
#[derive(Default)]
pub struct CronJobIndex {
    pub children: ChildIndex<CronJobMeta>,
    pub applied: Mutex<HashMap<String, i64>>,
}

/// A namespace and a policy's `lifeboat.dev/policy` label value.
type PolicyKey = (String, String);

/// Children of the policies by policy, from the events of a metadata-only watch, each reduced
/// to what a reconcile reads. kube-runtime's reflector store is keyed by object only: finding a
/// policy's children there means a scan of every child, per reconcile (quadratic at thousands
/// of policies); this index answers with one lookup and holds a few strings per child.
pub struct ChildIndex<T> {
    state: Mutex<IndexState<T>>,
}

struct IndexState<T> {
    /// A policy has a few children: a Vec sorted by name, not a BTreeMap, whose first node has
    /// room for eleven (about 1 KiB per policy for two CronJobs, measured with heaptrack).
    by_policy: HashMap<PolicyKey, Vec<(String, T)>>,
    /// The policy of each child, by namespace and name (a relabelled child moves).
    policy_of: HashMap<(String, String), String>,
    /// Children of a list in progress (a watch's start or restart), swapped in when it ends.
    listing: Option<Vec<(String, String, String, T)>>,
    /// Whether a first list has completed: before, the index knows nothing.
    synced: bool,
}

impl<T> Default for ChildIndex<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new(IndexState {
                by_policy: HashMap::new(),
                policy_of: HashMap::new(),
                listing: None,
                synced: false,
            }),
        }
    }
}

impl<T: Clone> ChildIndex<T> {
    /// Applies one watch event; `entry` reduces a child to what is kept of it.
    pub fn apply<K>(
        &self,
        event: &watcher::Event<PartialObjectMeta<K>>,
        entry: impl Fn(&PartialObjectMeta<K>) -> T,
    ) {
        let key = |o: &PartialObjectMeta<K>| {
            Some((
                o.metadata.namespace.clone()?,
                o.metadata.name.clone()?,
                o.metadata
                    .labels
                    .as_ref()?
                    .get(names::LABEL_POLICY)?
                    .clone(),
            ))
        };
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        match event {
            watcher::Event::Init => s.listing = Some(Vec::new()),
            watcher::Event::InitApply(o) => {
                if let (Some((ns, name, policy)), Some(listing)) = (key(o), s.listing.as_mut()) {
                    listing.push((ns, name, policy, entry(o)));
                }
            }
            watcher::Event::InitDone => {
                let listed = s.listing.take().unwrap_or_default();
                s.by_policy.clear();
                s.policy_of.clear();
                for (ns, name, policy, e) in listed {
                    s.insert(ns, name, policy, e);
                }
                s.synced = true;
            }
            watcher::Event::Apply(o) => {
                if let Some((ns, name, policy)) = key(o) {
                    s.remove(&ns, &name);
                    s.insert(ns, name, policy, entry(o));
                }
            }
            watcher::Event::Delete(o) => {
                if let (Some(ns), Some(name)) =
                    (o.metadata.namespace.as_deref(), o.metadata.name.as_deref())
                {
                    s.remove(ns, name);
                }
            }
        }
    }

    /// The children of `policy` in `ns` by name; `None` until the watch's first list is in.
    pub fn get(&self, ns: &str, policy: &str) -> Option<BTreeMap<String, T>> {
        let s = self.state.lock().ok()?;
        if !s.synced {
            return None;
        }
        let key = (ns.to_owned(), names::label_value(policy));
        Some(
            s.by_policy
                .get(&key)
                .map(|children| children.iter().cloned().collect())
                .unwrap_or_default(),
        )
    }
}

impl<T> IndexState<T> {
    fn insert(&mut self, ns: String, name: String, policy: String, entry: T) {
        self.policy_of
            .insert((ns.clone(), name.clone()), policy.clone());
        let children = self.by_policy.entry((ns, policy)).or_default();
        match children.binary_search_by(|(n, _)| n.as_str().cmp(&name)) {
            Ok(i) => children[i].1 = entry,
            Err(i) => {
                children.insert(i, (name, entry));
                children.shrink_to_fit();
            }
        }
    }

    fn remove(&mut self, ns: &str, name: &str) {
        let Some(policy) = self.policy_of.remove(&(ns.to_owned(), name.to_owned())) else {
            return;
        };
        let key = (ns.to_owned(), policy);
        if let Some(children) = self.by_policy.get_mut(&key) {
            children.retain(|(n, _)| n != name);
            if children.is_empty() {
                self.by_policy.remove(&key);
            }
        }
    }
}

/// The statuses this operator wrote in the last moments, by object uid. A reconcile triggered by
/// the operator's own writes (its CronJobs appearing, its status landing) often sees the object
/// from a cache that does not hold that status yet; without this it would write the same status
/// again and publish the same transitions twice. An entry expires after [`StatusMemo::FOR`], so an
/// outside edit of a status is corrected at the next reconcile after that.
#[derive(Default)]
struct StatusMemo {
    entries: std::sync::Mutex<std::collections::HashMap<String, (u64, std::time::Instant)>>,
}

impl StatusMemo {
    const FOR: std::time::Duration = std::time::Duration::from_secs(30);

    fn fingerprint(status: &[u8]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        status.hash(&mut h);
        h.finish()
    }

    /// Whether `status` is what was written for `uid` moments ago.
    fn recent(&self, uid: &str, status: &[u8]) -> bool {
        let Ok(entries) = self.entries.lock() else {
            return false;
        };
        entries
            .get(uid)
            .is_some_and(|(f, at)| *f == Self::fingerprint(status) && at.elapsed() < Self::FOR)
    }

    fn record(&self, uid: &str, status: &[u8]) {
        if let Ok(mut entries) = self.entries.lock() {
            let now = std::time::Instant::now();
            // Bounded: stale entries go whenever the map has grown.
            if entries.len() > 4096 {
                entries.retain(|_, (_, at)| at.elapsed() < Self::FOR);
            }
            entries.insert(uid.to_owned(), (Self::fingerprint(status), now));
        }
    }
}

impl Context {
    pub fn new(client: Client, metrics: Metrics, agent: AgentConfig) -> Self {
        let reporter = Reporter {
            controller: crate::config::FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            agent,
            written: StatusMemo::default(),
            cronjobs: CronJobIndex::default(),
            jobs: ChildIndex::default(),
            drills: std::sync::OnceLock::new(),
            signing_key: None,
            signing_keys: Default::default(),
            published: Default::default(),
            failures: Default::default(),
        }
    }

    /// Where the master signing key is (`--signing-key-secret`).
    pub fn with_signing_key(mut self, secret: crate::signing_key::MasterKeySecret) -> Self {
        self.signing_key = Some(secret);
        self
    }
}

impl Context {
    /// Publishes an Event about `regarding`. `action` names what the Event is about
    /// (`Backup/orders-db`): the recorder folds repeats of the same type, reason and action into
    /// one series, so distinct subjects need distinct actions to stay distinct Events. A failure
    /// to publish is logged, never fatal.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: String,
        note: String,
    ) {
        let event = Event {
            type_,
            reason,
            action: &action,
            note,
        };
        if let Err(e) = self.recorder.publish(&event, regarding).await {
            warn!(error = %e, reason, "publishing an Event");
        }
    }
}

impl Context {
    /// Writes `status` to `obj`'s status subresource by server-side apply, with the operator's
    /// one field manager (the same for every kind). Returns false, writing nothing, when this
    /// exact status was written moments ago (the reconcile saw a cache that lags its own write).
    pub async fn apply_status<K>(
        &self,
        obj: &K,
        status: &impl serde::Serialize,
    ) -> crate::error::Result<bool>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let patch = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
        let key = format!(
            "{}/{}",
            obj.uid().unwrap_or_default(),
            obj.meta().generation.unwrap_or_default()
        );
        let body = serde_json::to_vec(&patch)?;
        if self.written.recent(&key, &body) {
            return Ok(false);
        }
        let api = Api::<K>::namespaced(self.client.clone(), &obj.namespace().unwrap_or_default());
        let params = PatchParams::apply(crate::config::FIELD_MANAGER).force();
        api.patch_status(&obj.name_any(), &params, &Patch::Apply(&patch))
            .await
            .map_err(|source| crate::error::Error::ApplyStatus { source })?;
        self.written.record(&key, &body);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cj(ns: &str, name: &str, policy: &str, hash: &str) -> PartialObjectMeta<CronJob> {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {
                "namespace": ns, "name": name, "uid": format!("uid-{name}"), "generation": 1,
                "labels": {names::LABEL_POLICY: policy},
                "annotations": {crate::backup_policy::cronjob::SPEC_HASH: hash}
            }
        }))
        .unwrap()
    }

    fn names_of(index: &ChildIndex<CronJobMeta>, ns: &str, policy: &str) -> Option<Vec<String>> {
        index
            .get(ns, policy)
            .map(|c| c.into_keys().collect::<Vec<_>>())
    }

    #[test]
    fn the_child_index_answers_by_policy_after_its_first_list() {
        let index = ChildIndex::<CronJobMeta>::default();
        let apply = |e: watcher::Event<PartialObjectMeta<CronJob>>| {
            index.apply(&e, CronJobMeta::of);
        };
        assert_eq!(names_of(&index, "a", "shop"), None, "unknown before a list");
        apply(watcher::Event::Init);
        apply(watcher::Event::InitApply(cj("a", "shop-db", "shop", "h1")));
        assert_eq!(names_of(&index, "a", "shop"), None, "a list in progress");
        apply(watcher::Event::InitApply(cj(
            "a",
            "shop-cache",
            "shop",
            "h1",
        )));
        apply(watcher::Event::InitApply(cj("b", "shop-db", "shop", "h1")));
        apply(watcher::Event::InitDone);
        assert_eq!(
            names_of(&index, "a", "shop").unwrap(),
            ["shop-cache", "shop-db"]
        );
        assert_eq!(names_of(&index, "b", "shop").unwrap(), ["shop-db"]);
        assert_eq!(
            names_of(&index, "a", "other").unwrap(),
            Vec::<String>::new()
        );

        // A change replaces, a relabel moves, a deletion removes.
        apply(watcher::Event::Apply(cj("a", "shop-db", "shop", "h2")));
        let db = index.get("a", "shop").unwrap()["shop-db"].clone();
        assert_eq!(db.hash.as_deref(), Some("h2"));
        assert_eq!(db.uid, "uid-shop-db");
        apply(watcher::Event::Apply(cj("a", "shop-cache", "other", "h1")));
        assert_eq!(names_of(&index, "a", "shop").unwrap(), ["shop-db"]);
        assert_eq!(names_of(&index, "a", "other").unwrap(), ["shop-cache"]);
        apply(watcher::Event::Delete(cj("a", "shop-db", "shop", "h2")));
        assert_eq!(names_of(&index, "a", "shop").unwrap(), Vec::<String>::new());

        // A relist replaces everything: what it no longer lists is gone.
        apply(watcher::Event::Init);
        apply(watcher::Event::InitApply(cj("a", "new-db", "new", "h1")));
        assert_eq!(
            names_of(&index, "a", "other").unwrap(),
            ["shop-cache"],
            "the old state answers until the relist is done"
        );
        apply(watcher::Event::InitDone);
        assert_eq!(
            names_of(&index, "a", "other").unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(names_of(&index, "b", "shop").unwrap(), Vec::<String>::new());
        assert_eq!(names_of(&index, "a", "new").unwrap(), ["new-db"]);
    }

    #[test]
    fn the_child_index_finds_a_long_policy_name_by_its_label_value() {
        let index = ChildIndex::<CronJobMeta>::default();
        let long = "p".repeat(80);
        index.apply(&watcher::Event::Init, CronJobMeta::of);
        index.apply(
            &watcher::Event::InitApply(cj("a", "c", &names::label_value(&long), "h")),
            CronJobMeta::of,
        );
        index.apply(&watcher::Event::InitDone, CronJobMeta::of);
        assert_eq!(names_of(&index, "a", &long).unwrap(), ["c"]);
    }
}
