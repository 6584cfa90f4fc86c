//! Events owed by a status, and publishing them exactly once.
//!
//! A decide function derives the Events a status transition owes and records them in the new
//! status (`pendingEvents`); the reconcile writes that status, then publishes each Event under a
//! name derived from the object's uid and the Event's id, then writes the status without them.
//! A crash or a failed write anywhere in between leaves them recorded, and the next pass's
//! create of the same name answers 409: already published. Never before the status write, never
//! twice. (kube-runtime's `Recorder` names Events by time and folds repeats into a series: a
//! retry would count twice.)
//!
//! BackupPolicies, thousands per cluster, skip the write that takes published Events out of the
//! status right away ([`Published`]): the operator remembers what it published, and the next
//! write the status needs anyway drops them; after a restart the 409 above keeps them from being
//! published twice. A 409 needs the Event to still exist, and kube-apiserver deletes Events after
//! `--event-ttl` (1 h by default), so Events still listed [`LINGER`] after their publication are
//! dropped by a write of their own. One status write per transition while a policy is busy, two
//! (the second minutes later) when it is not (docs/performance.md).

use jiff::Timestamp;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Resource, ResourceExt};
use lifeboat_api::common::{EventType, PendingEvent};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::names;

/// At most this many Events stay owed (the newest): a resource whose Events cannot be published
/// for a long time drops the oldest rather than grow its status without bound.
pub const MAX_PENDING: usize = 64;

/// Kubernetes' limit on an Event's note.
const NOTE_MAX: usize = 1024;

/// An owed Event; the note is cut to what an Event may carry.
pub fn event(
    id: impl Into<String>,
    type_: EventType,
    reason: &str,
    action: impl Into<String>,
    note: impl Into<String>,
) -> PendingEvent {
    let mut note = note.into();
    if note.len() > NOTE_MAX {
        let mut end = NOTE_MAX - 3;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    PendingEvent {
        id: id.into(),
        type_,
        reason: reason.to_owned(),
        action: action.into(),
        note,
    }
}

/// `pending` with `new` added, each id once (an Event decided again by a pass that saw an older
/// status is the same Event), the oldest dropped beyond [`MAX_PENDING`].
pub fn owe(pending: &[PendingEvent], new: Vec<PendingEvent>) -> Vec<PendingEvent> {
    let mut out = pending.to_vec();
    for e in new {
        if !out.iter().any(|p| p.id == e.id) {
            out.push(e);
        }
    }
    let excess = out.len().saturating_sub(MAX_PENDING);
    out.drain(..excess);
    out
}

/// The name of `obj`'s Event `id`: the same for every pass, distinct per object and Event.
pub fn event_name(obj_name: &str, uid: &str, id: &str) -> String {
    let hash = names::short_hash(&format!("{uid}/{id}"), 8);
    names::bounded_name(&[obj_name, &hash], 253)
}

/// Publishes the Events `pending` owes about `obj`; returns the ids published now or before.
/// Stops at the first that fails (it stays owed, with the ones after it).
pub async fn publish<K>(ctx: &Context, obj: &K, pending: &[PendingEvent]) -> Result<Vec<String>>
where
    K: Resource<DynamicType = ()>,
{
    let uid = obj.uid().ok_or(Error::MissingObjectKey("uid"))?;
    let ns = obj
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let events = Api::<Event>::namespaced(ctx.client.clone(), &ns);
    let instance =
        std::env::var("POD_NAME").unwrap_or_else(|_| crate::config::FIELD_MANAGER.into());
    let mut published = Vec::new();
    for p in pending {
        let event = Event {
            metadata: ObjectMeta {
                name: Some(event_name(&obj.name_any(), &uid, &p.id)),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(Timestamp::now())),
            type_: Some(
                match p.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            reason: Some(p.reason.clone()),
            action: Some(p.action.clone()),
            note: Some(p.note.clone()),
            regarding: Some(obj.object_ref(&())),
            reporting_controller: Some(crate::config::FIELD_MANAGER.into()),
            reporting_instance: Some(instance.clone()),
            ..Default::default()
        };
        match events.create(&PostParams::default(), &event).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(source) => {
                return Err(Error::PublishEvent {
                    id: p.id.clone(),
                    source,
                });
            }
        }
        published.push(p.id.clone());
    }
    Ok(published)
}

/// How long published Events may stay listed in a BackupPolicy's status before a write of its
/// own drops them: well inside kube-apiserver's default Event TTL (1 h), after which a restarted
/// operator could no longer tell a listed Event it published (409) from one it never did.
pub const LINGER: std::time::Duration = std::time::Duration::from_secs(300);

/// The Events this process published that the stored status of their object may still list,
/// by the object's uid, with when each went out. Not the source of truth (the status and the
/// Events' names are): it spares a status write per transition, and a restart only costs a 409
/// per Event still listed.
pub struct Published {
    /// Per object a few Events: a Vec, not a BTreeMap (whose first node has room for eleven:
    /// ~400 bytes per policy at 10,000 policies, measured with heaptrack).
    by_uid: std::sync::Mutex<std::collections::HashMap<String, Vec<(String, Timestamp)>>>,
    linger: std::time::Duration,
}

impl Default for Published {
    fn default() -> Self {
        Self::lingering(LINGER)
    }
}

impl Published {
    /// Published Events stay listed for `linger` at most ([`LINGER`] but in tests).
    pub fn lingering(linger: std::time::Duration) -> Self {
        Self {
            by_uid: Default::default(),
            linger,
        }
    }

    /// The ids of `uid`'s Events published by this process and maybe still listed.
    pub fn of(&self, uid: &str) -> std::collections::BTreeSet<String> {
        self.by_uid
            .lock()
            .ok()
            .and_then(|m| {
                m.get(uid)
                    .map(|e| e.iter().map(|(id, _)| id.clone()).collect())
            })
            .unwrap_or_default()
    }

    /// When `uid`'s stored status must be written without the Events published here: the
    /// oldest one's publication plus the linger. None while none is remembered.
    pub fn drop_due(&self, uid: &str) -> Option<Timestamp> {
        let m = self.by_uid.lock().ok()?;
        let oldest = m.get(uid)?.iter().map(|(_, at)| *at).min()?;
        let linger = jiff::SignedDuration::try_from(self.linger).ok()?;
        oldest.checked_add(linger).ok()
    }

    /// `now` were just published (at `at`); `listed` is what the stored status lists. Remembers
    /// the published ones still listed, and nothing for `uid` once none is.
    pub fn settle<'a>(
        &self,
        uid: &str,
        now: impl IntoIterator<Item = String>,
        at: Timestamp,
        listed: impl IntoIterator<Item = &'a str>,
    ) {
        let Ok(mut m) = self.by_uid.lock() else {
            return;
        };
        let mut known = m.remove(uid).unwrap_or_default();
        for id in now {
            // A 409 after a restart is the first this process knows of it: it lingers from now.
            if !known.iter().any(|(k, _)| *k == id) {
                known.push((id, at));
            }
        }
        let listed: std::collections::BTreeSet<&str> = listed.into_iter().collect();
        known.retain(|(id, _)| listed.contains(id.as_str()));
        if !known.is_empty() {
            known.shrink_to_fit();
            m.insert(uid.to_owned(), known);
        }
    }

    /// Forgets every object whose uid `live` does not hold (deleted ones).
    pub fn retain(&self, live: &std::collections::HashSet<String>) {
        if let Ok(mut m) = self.by_uid.lock() {
            m.retain(|uid, _| live.contains(uid));
        }
    }
}

/// `pending` without the Events `published` names.
pub fn unpublished(
    pending: &[PendingEvent],
    published: &std::collections::BTreeSet<String>,
) -> Vec<PendingEvent> {
    pending
        .iter()
        .filter(|e| !published.contains(&e.id))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_events_are_remembered_while_the_status_lists_them() {
        let p = Published::default();
        let t0: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        assert!(p.of("u1").is_empty());
        p.settle("u1", ["a".to_owned(), "b".to_owned()], t0, ["a", "b", "c"]);
        assert_eq!(p.of("u1").into_iter().collect::<Vec<_>>(), ["a", "b"]);
        // A write dropped "a": it is forgotten; "c" was never published here.
        p.settle("u1", [], t0, ["b", "c"]);
        assert_eq!(p.of("u1").into_iter().collect::<Vec<_>>(), ["b"]);
        // Nothing listed any more: nothing kept for the object.
        p.settle("u1", ["c".to_owned()], t0, []);
        assert!(p.of("u1").is_empty());
        assert!(p.by_uid.lock().unwrap().is_empty());
        // Deleted objects are forgotten.
        p.settle("u2", ["x".to_owned()], t0, ["x"]);
        p.settle("u3", ["y".to_owned()], t0, ["y"]);
        p.retain(&["u3".to_owned()].into_iter().collect());
        assert!(p.of("u2").is_empty());
        assert_eq!(p.of("u3").len(), 1);
        let e = |id: &str| event(id, EventType::Normal, "R", "A", "n");
        let left = unpublished(&[e("x"), e("y")], &p.of("u3"));
        assert_eq!(
            left.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["x"]
        );
    }

    #[test]
    fn listed_published_events_are_due_to_be_dropped_one_linger_after_the_oldest_went_out() {
        let p = Published::lingering(std::time::Duration::from_secs(300));
        let t0: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let later = t0 + jiff::SignedDuration::from_secs(120);
        assert_eq!(p.drop_due("u1"), None, "nothing published");
        p.settle("u1", ["a".to_owned()], t0, ["a"]);
        // Published again (a 409 after a restart) or joined by a newer one: the oldest counts.
        p.settle("u1", ["a".to_owned(), "b".to_owned()], later, ["a", "b"]);
        let due = t0 + jiff::SignedDuration::from_secs(300);
        assert_eq!(p.drop_due("u1"), Some(due));
        // "a" dropped by a write: "b" is due one linger after its own publication.
        p.settle("u1", [], later, ["b"]);
        assert_eq!(
            p.drop_due("u1"),
            Some(later + jiff::SignedDuration::from_secs(300))
        );
        p.settle("u1", [], later, []);
        assert_eq!(
            p.drop_due("u1"),
            None,
            "dropped from the status: nothing due"
        );
    }

    #[test]
    fn an_event_decided_twice_is_owed_once_and_the_list_is_bounded() {
        let e = |id: &str| event(id, EventType::Normal, "R", "A", "n");
        let owed = owe(&[e("a")], vec![e("a"), e("b")]);
        assert_eq!(
            owed.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let many: Vec<_> = (0..100).map(|i| e(&i.to_string())).collect();
        let owed = owe(&[], many);
        assert_eq!(owed.len(), MAX_PENDING);
        assert_eq!(owed[0].id, "36", "the oldest go first");
    }

    #[test]
    fn names_are_stable_distinct_and_valid() {
        let a = event_name("shop", "uid-1", "RestoreStarted/db");
        assert_eq!(a, event_name("shop", "uid-1", "RestoreStarted/db"));
        assert_ne!(a, event_name("shop", "uid-2", "RestoreStarted/db"));
        assert_ne!(a, event_name("shop", "uid-1", "RestoreStarted/cache"));
        assert!(event_name(&"x".repeat(300), "u", "i").len() <= 253);
        let long = event("i", EventType::Warning, "R", "A", "é".repeat(NOTE_MAX));
        assert!(long.note.len() <= NOTE_MAX && long.note.ends_with("..."));
    }
}
