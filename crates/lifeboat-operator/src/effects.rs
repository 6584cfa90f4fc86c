//! Events owed by a status, and publishing them exactly once.
//!
//! A decide function derives the Events a status transition owes and records them in the new
//! status (`pendingEvents`); the reconcile writes that status, then publishes each Event under a
//! name derived from the object's uid and the Event's id, then writes the status without them.
//! A crash or a failed write anywhere in between leaves them recorded, and the next pass's
//! create of the same name answers 409: already published. Never before the status write, never
//! twice. (kube-runtime's `Recorder` names Events by time and folds repeats into a series: a
//! retry would count twice.)

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

#[cfg(test)]
mod tests {
    use super::*;

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
