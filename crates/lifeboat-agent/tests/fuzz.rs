//! Property tests over what the agent reads from storage and from the operator, and over
//! retention: 10,000 cases each. A malformed metadata.json or summary is an error, never a panic;
//! retention never deletes the newest backup, whatever the rules, the history or a clock that is
//! a day off either way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use jiff::{SignedDuration, Timestamp};
use lifeboat_agent::retention::{Candidate, select};
use lifeboat_agent::signing::{SigningKey, Trust, Unsigned};
use lifeboat_api::agent_result::AgentSummary;
use lifeboat_api::backup_policy::Retention;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const METADATA: &str = r#"{"schemaVersion":1,"backupId":"20261124T100000Z","policy":"shop","asset":"db","kind":"postgres","tool":{"name":"pg_dump","version":"15.18"},"agentVersion":"0.1.0","source":"postgres://db:5432/shop","startedAt":"2026-11-24T10:00:00Z","finishedAt":"2026-11-24T10:00:05Z","snapshotTime":"2026-11-24T10:00:00Z","artifacts":[{"name":"db.shop.pgdump.zst","rawBytes":10,"storedBytes":8,"sha256":"ab"}],"compression":"zstd:3"}"#;

/// Legacy metadata as version 1 agents wrote it: read only with the opt-in.
fn parse_metadata(
    bytes: &[u8],
    what: &str,
) -> lifeboat_agent::error::Result<lifeboat_api::agent_result::BackupMetadata> {
    let trust = Trust {
        key: None,
        unsigned: Unsigned::Accept,
    };
    lifeboat_agent::signing::open(bytes, what, trust)
}

fn key() -> SigningKey {
    SigningKey::from_bytes(b"the fuzz tests' signing key, 32+".to_vec(), "fuzz").unwrap()
}

/// METADATA as version 2, signed with [`key`], as the agent writes it.
fn signed() -> (Vec<u8>, lifeboat_api::agent_result::BackupMetadata) {
    let mut m = parse_metadata(METADATA.as_bytes(), "fixture").unwrap();
    m.schema_version = lifeboat_api::agent_result::METADATA_SCHEMA_VERSION;
    m.namespace = "team".into();
    key().sign(&mut m).unwrap();
    (serde_json::to_vec_pretty(&m).unwrap(), m)
}

/// Every JSON pointer in `v` (the root is `""`).
fn json_paths(v: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
        out.push(at.clone());
        match v {
            serde_json::Value::Object(m) => m
                .iter()
                .for_each(|(k, c)| walk(c, format!("{at}/{k}"), out)),
            serde_json::Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, c)| walk(c, format!("{at}/{i}"), out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, String::new(), &mut out);
    out
}

/// Arbitrary JSON, a few levels deep.
fn any_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        "[0-9a-f]{0,64}".prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,10}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_signed_document_edited_anywhere_is_refused_or_reads_the_same(at in 0usize..2000, byte in any::<u8>()) {
        let (mut bytes, original) = signed();
        let at = at % bytes.len();
        prop_assume!(bytes[at] != byte);
        bytes[at] = byte;
        let k = key();
        let trust = Trust { key: Some(&k), unsigned: Unsigned::Refuse };
        match lifeboat_agent::signing::open(&bytes, "edited", trust) {
            // An edit of whitespace (or of a character JSON reads the same) changes nothing.
            Ok(m) => prop_assert_eq!(m, original),
            Err(e) => prop_assert!(e.to_string().starts_with("edited: ")),
        }
    }

    /// Any value of the signed document replaced (a checksum, a size, the place, the key id, a
    /// whole artifact list), a field removed or added, bytes inserted or cut: never read as
    /// intact unless it reads as exactly the signed document.
    #[test]
    fn a_signed_document_changed_in_any_value_is_never_read_as_intact(
        pick in any::<usize>(),
        with in any_json(),
        remove in any::<bool>(),
        cut in any::<usize>(),
        insert in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let (bytes, original) = signed();
        let mut doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let paths = json_paths(&doc);
        let path = &paths[pick % paths.len()];
        let (parent, field) = path.rsplit_once('/').unwrap_or(("", path));
        match doc.pointer_mut(parent) {
            Some(serde_json::Value::Object(m)) if remove => { m.remove(field); }
            _ => if let Some(slot) = doc.pointer_mut(path) { *slot = with; },
        }
        let mut edited = serde_json::to_vec(&doc).unwrap();
        let at = cut % (edited.len() + 1);
        edited.splice(at..at, insert);
        let k = key();
        let trust = Trust { key: Some(&k), unsigned: Unsigned::Refuse };
        match lifeboat_agent::signing::open(&edited, "edited", trust) {
            Ok(m) => prop_assert_eq!(m, original),
            Err(e) => prop_assert!(e.to_string().starts_with("edited: ")),
        }
    }

    #[test]
    fn arbitrary_bytes_are_never_valid_metadata_nor_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let e = parse_metadata(&bytes, "fuzz").unwrap_err();
        prop_assert!(e.to_string().contains("fuzz"));
    }

    #[test]
    fn edited_metadata_parses_or_is_an_integrity_error(at in 0usize..METADATA.len(), byte in any::<u8>(), cut in 0usize..METADATA.len()) {
        let mut bytes = METADATA.as_bytes().to_vec();
        bytes[at] = byte;
        for candidate in [bytes.clone(), bytes[..cut].to_vec()] {
            match parse_metadata(&candidate, "edited") {
                Ok(m) => prop_assert!(m.artifacts.iter().all(|a| !a.name.contains('/'))),
                Err(e) => prop_assert!(e.to_string().starts_with("edited: ")),
            }
        }
    }

    #[test]
    fn summaries_from_a_termination_message_never_panic(s in ".{0,200}") {
        let _ = serde_json::from_str::<AgentSummary>(&s);
    }

    #[test]
    fn retention_never_deletes_the_newest_backup(
        // Negative ages: backups stamped by a clock ahead of this one.
        ages in prop::collection::vec(-(2 * 86_400i64)..(400 * 86_400), 1..40),
        fresh in prop::option::of(0usize..40),
        keep_last in prop::option::of(1u32..10),
        max_age_days in prop::option::of(0u64..30),
        min_keep in 1u32..3,
        skew_hours in -24i64..=24,
        allow_mass_delete in any::<bool>(),
        verified in prop::collection::btree_set(0usize..40, 0..4),
        // Some backups locked by the store, each for its own time from its snapshot.
        locked in prop::collection::btree_map(0usize..40, 0i64..(30 * 86_400), 0..6),
    ) {
        let now = Timestamp::from_second(1_790_000_000).unwrap();
        let backups: Vec<Candidate> = ages
            .iter()
            .enumerate()
            .map(|(i, age)| Candidate {
                id: format!("b{i}"),
                snapshot_time: now - SignedDuration::from_secs(*age),
                verified: verified.contains(&i),
                fresh: fresh == Some(i),
                locked_until: locked
                    .get(&i)
                    .map(|secs| now - SignedDuration::from_secs(*age) + SignedDuration::from_secs(*secs)),
            })
            .collect();
        let rules = Retention {
            keep_last,
            max_age: max_age_days.map(|d| lifeboat_api::Duration::from_secs(d * 86_400)),
            min_keep,
            max_delete_percent: 50,
        };
        let newest = backups.iter().max_by_key(|b| b.snapshot_time).unwrap();
        let clock = now + SignedDuration::from_hours(skew_hours);
        match select("db", &backups, &rules, clock, allow_mass_delete) {
            Ok(doomed) => {
                prop_assert!(!doomed.contains(&newest.id), "deleted the newest: {doomed:?}");
                if let Some(v) = backups
                    .iter()
                    .filter(|b| b.verified)
                    .max_by_key(|b| (b.snapshot_time, b.id.clone()))
                {
                    prop_assert!(!doomed.contains(&v.id), "deleted the newest verified: {doomed:?}");
                }
                prop_assert!(doomed.len() < backups.len());
                for b in &backups {
                    if b.snapshot_time > clock {
                        prop_assert!(!doomed.contains(&b.id), "deleted {} from the future", b.id);
                    }
                    if b.fresh {
                        prop_assert!(!doomed.contains(&b.id), "the pass deleted its own backup");
                    }
                    if b.locked_until.is_some_and(|until| until > clock) {
                        prop_assert!(!doomed.contains(&b.id), "deleted {} while the store locks it", b.id);
                    }
                }
                // keepLast counts only backups dated up to now: without maxAge, the newest k of
                // them survive.
                if let (Some(k), None) = (keep_last, max_age_days) {
                    let mut past: Vec<&Candidate> =
                        backups.iter().filter(|b| b.snapshot_time <= clock).collect();
                    past.sort_by(|a, b| b.snapshot_time.cmp(&a.snapshot_time).then_with(|| b.id.cmp(&a.id)));
                    let kept = past.iter().filter(|b| !doomed.contains(&b.id)).count();
                    prop_assert!(kept >= past.len().min(k as usize), "kept {kept} of {} with keepLast {k}", past.len());
                }
            }
            // Refusing is always allowed; deleting the newest never is.
            Err(e) => prop_assert!(!allow_mass_delete, "{e}"),
        }
    }
}

/// A WAL segment record as a hostile store may list it: any timeline and segment number, a
/// partial copy or not, or a name that is no segment at all.
fn segment_record(name: String, partial: bool) -> lifeboat_agent::wal::SegmentRecord {
    serde_json::from_value(serde_json::json!({"schemaVersion": 1, "namespace": "n",
        "policy": "shop", "asset": "db", "segment": name, "partial": partial,
        "validBytes": 0, "archivedAt": "2026-11-30T10:00:00Z", "rawSha256": "00",
        "artifact": {"name": "x", "rawBytes": 0, "storedBytes": 0, "sha256": "00"},
        "compression": "none"}))
    .unwrap()
}

fn any_segment_name() -> impl Strategy<Value = String> {
    prop_oneof![
        (1u32..4, 0u64..64).prop_map(|(timeline, segno)| {
            lifeboat_agent::wal::Segment { timeline, segno }.name()
        }),
        "[0-9a-fA-F./]{0,26}",
    ]
}

proptest! {
    #![proptest_config(config())]

    /// WAL retention never deletes a segment that a kept base backup replays from (at or after
    /// the oldest kept base backup's start), nor anything without a kept base backup, nor a
    /// record that names no segment; and it deletes every segment wholly before that start.
    #[test]
    fn wal_retention_never_breaks_the_chain_of_a_kept_base_backup(
        listing in proptest::collection::vec((any_segment_name(), any::<bool>()), 0..40),
        starts in proptest::collection::vec(0u64..(64 * 16 * 1024 * 1024), 0..4),
    ) {
        use lifeboat_agent::wal::{Lsn, Segment, removable_segments, SEGMENT_BYTES};
        let records: Vec<_> = listing.into_iter().map(|(n, p)| segment_record(n, p)).collect();
        let starts: Vec<Lsn> = starts.into_iter().map(Lsn).collect();
        let removed = removable_segments(&starts, &records);
        let Some(oldest) = starts.iter().map(|l| l.0 / SEGMENT_BYTES).min() else {
            prop_assert!(removed.is_empty());
            return Ok(());
        };
        for r in &records {
            let gone = removed.iter().any(|x| std::ptr::eq(*x, r));
            match Segment::parse(&r.segment) {
                Some(s) => prop_assert_eq!(gone, s.segno < oldest, "{:?}", r.segment),
                None => prop_assert!(!gone, "{:?} is no segment", r.segment),
            }
        }
    }
}
