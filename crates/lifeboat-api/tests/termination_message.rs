//! The agent's termination message always fits the kubelet's 4 KiB, whatever the summary holds:
//! up to 64 checks with the longest names and long messages, long error texts, escaped characters.
//! It always parses back (as the bounded document and as the bare summary older operators
//! read), keeps `ok` and the counts of all checks, and shows the failed checks first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use jiff::Timestamp;
use lifeboat_api::agent_result::{
    AgentSummary, CanaryMarker, ChecksReport, CopyOutcome, ErrorClass, SUMMARY_VERSION,
    TERMINATION_MESSAGE_LIMIT, TerminationMessage, Verb,
};
use lifeboat_api::restore_request::CheckResult;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 800,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text up to `max` characters: plain, multi-byte, or characters JSON escapes (six bytes each).
fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex(&format!("[a-z0-9-]{{0,{max}}}")).unwrap(),
        proptest::string::string_regex(&format!("[é€😀a-z]{{0,{max}}}")).unwrap(),
        proptest::string::string_regex(&format!("[\u{0}-\u{1f}\"\\\\]{{0,{max}}}")).unwrap(),
        Just("x".repeat(max)),
    ]
}

fn check() -> impl Strategy<Value = CheckResult> {
    (
        // Check names are at most 63 characters; a canary check adds `canary/`.
        prop_oneof![
            Just("n".repeat(63)),
            "[a-z]{1,63}",
            Just(format!("canary/{}", "a".repeat(63)))
        ],
        any::<bool>(),
        // Agents cut a check's reason to 200 characters; longer still, to be sure.
        text(600),
        any::<u32>(),
        // Quarter seconds: exact in JSON, so a round trip compares equal.
        (0u32..4_000_000).prop_map(|q| f64::from(q) / 4.0),
        proptest::option::of(text(80)),
    )
        .prop_map(
            |(name, passed, message, attempts, duration_seconds, canary)| CheckResult {
                name,
                passed,
                message,
                attempts,
                duration_seconds,
                canary: canary.map(|id| CanaryMarker {
                    id,
                    written_at: Timestamp::UNIX_EPOCH,
                }),
            },
        )
}

/// An off-site copy's outcome, its texts as long as a store's error can make them.
fn copy() -> impl Strategy<Value = CopyOutcome> {
    (
        text(40),
        proptest::option::of(text(60)),
        any::<u32>(),
        proptest::option::of(text(3_000)),
        proptest::option::of(text(3_000)),
    )
        .prop_map(
            |(name, newest_id, copied, error, retention_refused)| CopyOutcome {
                name,
                newest_id,
                newest_snapshot_time: Some(Timestamp::UNIX_EPOCH),
                copied,
                error_class: error.as_ref().map(|_| ErrorClass::Storage),
                error,
                retention_refused,
            },
        )
}

fn summary() -> impl Strategy<Value = TerminationMessage> {
    (
        (
            any::<bool>(),
            proptest::option::of(text(300)),
            proptest::option::of(text(300)),
        ),
        proptest::option::of(text(200)),
        proptest::option::of(text(8_000)),
        proptest::option::of(text(2_000)),
        prop::collection::vec(check(), 0..=64),
        proptest::option::of(text(1_000)),
        any::<u64>(),
        prop::collection::vec(copy(), 0..=4),
    )
        .prop_map(
            |(
                (ok, asset, backup_id),
                sha256,
                message,
                retention_refused,
                checks,
                location,
                bytes,
                copies,
            )| {
                let t: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
                TerminationMessage {
                    summary: AgentSummary {
                        version: SUMMARY_VERSION,
                        verb: Verb::Restore,
                        ok,
                        asset,
                        backup_id,
                        started_at: t,
                        finished_at: t,
                        snapshot_time: Some(t),
                        stored_bytes: Some(bytes),
                        sha256,
                        error_class: (!ok).then_some(ErrorClass::Validation),
                        message,
                        checks,
                        retention_refused,
                        copies,
                    },
                    checks_report: location.map(|l| ChecksReport {
                        location: Some(l),
                        ..ChecksReport::default()
                    }),
                    catalog: None,
                    point_in_time: None,
                }
            },
        )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_summary_fits_parses_back_and_keeps_its_verdict_and_counts(m in summary()) {
        let json = m.to_json().unwrap();
        prop_assert!(json.len() <= TERMINATION_MESSAGE_LIMIT, "{} bytes", json.len());
        let back = TerminationMessage::parse(&json).unwrap();
        let bare = AgentSummary::from_termination_message(&json).unwrap();
        prop_assert_eq!(&bare, &back.summary);
        prop_assert_eq!(back.summary.ok, m.summary.ok);
        prop_assert_eq!(back.summary.error_class, m.summary.error_class);
        // Every copy stays, with its name, counts and verdict; only its texts may be cut.
        prop_assert_eq!(back.summary.copies.len(), m.summary.copies.len());
        for (b, c) in back.summary.copies.iter().zip(&m.summary.copies) {
            prop_assert_eq!(&b.name, &c.name);
            prop_assert_eq!((b.copied, b.error_class), (c.copied, c.error_class));
            prop_assert_eq!(b.error.is_some(), c.error.is_some());
        }
        let all = &m.summary.checks;
        let kept = &back.summary.checks;
        if all.is_empty() {
            prop_assert_eq!(back.checks_report.is_some(), m.checks_report.is_some());
            prop_assert!(kept.is_empty());
        } else {
            let report = back.checks_report.unwrap();
            let failed = all.iter().filter(|c| !c.passed).count() as u32;
            prop_assert_eq!(report.failed, failed);
            prop_assert_eq!(report.passed, all.len() as u32 - failed);
            prop_assert_eq!(kept.len() + report.omitted as usize, all.len());
            // Failed first: no passed check is shown before a failed one.
            prop_assert!(kept.windows(2).all(|w| !w[0].passed || w[1].passed));
            // What is shown is the checks themselves, only their messages shortened: the failed
            // ones, then the passed ones with a canary marker, each in their order.
            let mut failed_first = all.clone();
            failed_first.sort_by_key(|c| (c.passed, c.canary.is_none()));
            for (k, c) in kept.iter().zip(&failed_first) {
                prop_assert_eq!(&k.name, &c.name);
                prop_assert_eq!(k.passed, c.passed);
                prop_assert_eq!(k.attempts, c.attempts);
                let cut = k.message.trim_end_matches('…');
                prop_assert!(c.message.starts_with(cut));
            }
        }
        // A summary that fits is written unchanged (but for the counts).
        let mut plain = m.clone();
        plain.summary.checks.sort_by_key(|c| (c.passed, c.canary.is_none()));
        if serde_json::to_string(&plain).unwrap().len() + 64 <= TERMINATION_MESSAGE_LIMIT {
            prop_assert_eq!(&back.summary, &plain.summary);
        }
    }
}

/// 40 checks, half of them failing with long messages: the old summary passed the limit and
/// was lost; every failure still shows, the passed ones are counted.
#[test]
fn forty_checks_half_failing_keep_every_failure() {
    let t: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
    let checks: Vec<CheckResult> = (0..40)
        .map(|i| CheckResult {
            name: format!("check-{i:02}-{}", "n".repeat(50)),
            passed: i % 2 == 0,
            message: if i % 2 == 0 {
                String::new()
            } else {
                format!("expected t, got f: {}", "detail ".repeat(40))
            },
            attempts: 3,
            duration_seconds: 1.5,
            canary: None,
        })
        .collect();
    let s = AgentSummary {
        version: SUMMARY_VERSION,
        verb: Verb::Restore,
        ok: false,
        asset: None,
        backup_id: None,
        started_at: t,
        finished_at: t,
        snapshot_time: None,
        stored_bytes: None,
        sha256: None,
        error_class: Some(ErrorClass::Validation),
        message: Some("20 of 40 checks failed".into()),
        checks: checks.clone(),
        retention_refused: None,
        copies: Vec::new(),
    };
    assert!(serde_json::to_string(&s).unwrap().len() > TERMINATION_MESSAGE_LIMIT);
    let json = s.to_termination_message().unwrap();
    assert!(json.len() <= TERMINATION_MESSAGE_LIMIT, "{}", json.len());
    let back = TerminationMessage::parse(&json).unwrap();
    let report = back.checks_report.unwrap();
    assert_eq!((report.passed, report.failed), (20, 20));
    let shown_failed = back.summary.checks.iter().filter(|c| !c.passed).count();
    assert_eq!(shown_failed, 20, "{json}");
    assert_eq!(back.summary.checks.len() + report.omitted as usize, 40);
}

/// A catalog of many assets is cut to the limit, and what was left out is counted, so the
/// operator never takes the rest for the whole backup set.
#[test]
fn a_catalog_too_large_for_the_limit_keeps_what_fits_and_counts_the_rest() {
    use lifeboat_api::agent_result::{Catalog, CatalogEntry};
    use lifeboat_api::backup_policy::AssetKind;
    let t: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
    let entries: Vec<CatalogEntry> = (0..40)
        .map(|i| CatalogEntry {
            asset: format!("asset-with-a-rather-long-name-{i:02}"),
            kind: AssetKind::Postgres,
            backup_id: format!("20261124T100000Z-123-{i:08x}"),
            snapshot_time: t,
            stored_bytes: 1 << 40,
            encrypted: true,
            verified: true,
        })
        .collect();
    let m = TerminationMessage {
        summary: AgentSummary {
            version: SUMMARY_VERSION,
            verb: Verb::Catalog,
            ok: true,
            asset: None,
            backup_id: None,
            started_at: t,
            finished_at: t,
            snapshot_time: None,
            stored_bytes: None,
            sha256: None,
            error_class: None,
            message: None,
            checks: Vec::new(),
            retention_refused: None,
            copies: Vec::new(),
        },
        checks_report: None,
        catalog: Some(Catalog {
            entries: entries.clone(),
            omitted: 0,
        }),
        point_in_time: None,
    };
    assert!(serde_json::to_string(&m).unwrap().len() > TERMINATION_MESSAGE_LIMIT);
    let json = m.to_json().unwrap();
    assert!(json.len() <= TERMINATION_MESSAGE_LIMIT, "{}", json.len());
    let back = TerminationMessage::parse(&json).unwrap().catalog.unwrap();
    assert!(!back.entries.is_empty());
    assert_eq!(back.entries.len() + back.omitted as usize, 40);
    assert_eq!(back.entries[..], entries[..back.entries.len()]);
}
