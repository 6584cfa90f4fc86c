//! Property tests over every parser of user input in the API: durations, cron schedules and the
//! three specs, 10,000 cases each. Nothing panics; every rejection says what is wrong; what is
//! accepted round-trips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use lifeboat_api::schedule::CronSchedule;
use lifeboat_api::{BackupPolicySpec, DrillScheduleSpec, Duration, RestoreRequestSpec};
use proptest::prelude::*;
use serde_json::{Value, json};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Arbitrary JSON, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn valid_policy() -> Value {
    json!({
        "schedule": "0 * * * *",
        "assets": [{"name": "db", "postgres": {"host": "db", "user": "u", "databases": ["shop"]}}],
        "retention": {"keepLast": 7, "maxAge": "7d"},
        "destination": {"volume": {"claimName": "backups"}},
        "objectives": {"rpo": "15m"}
    })
}

/// `base` with the value at one of its paths replaced by `with`.
fn mutate(mut base: Value, pick: usize, with: Value) -> Value {
    fn paths(v: &Value, at: String, out: &mut Vec<String>) {
        out.push(at.clone());
        match v {
            Value::Object(m) => m
                .iter()
                .for_each(|(k, c)| paths(c, format!("{at}/{k}"), out)),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, c)| paths(c, format!("{at}/{i}"), out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    paths(&base, String::new(), &mut all);
    let path = &all[pick % all.len()];
    if let Some(slot) = base.pointer_mut(path) {
        *slot = with;
    }
    base
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn durations_never_panic_and_what_parses_round_trips(s in "[0-9a-zA-Z .:+-]{0,16}") {
        match s.parse::<Duration>() {
            Ok(d) => {
                let again: Duration = d.to_string().parse().unwrap();
                prop_assert_eq!(again.as_secs(), d.as_secs());
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn durations_built_from_parts_parse_to_their_sum(d in 0u64..400, h in 0u64..48, m in 0u64..120, s in 0u64..120) {
        let text = format!("{d}d{h}h{m}m{s}s");
        let parsed: Duration = text.parse().unwrap();
        prop_assert_eq!(parsed.as_secs(), ((d * 24 + h) * 60 + m) * 60 + s);
    }

    #[test]
    fn cron_strings_never_panic(s in "[0-9*/,@ a-zA-Z?LW#-]{0,30}", tz in prop::option::of("[A-Za-z_/+-]{0,20}")) {
        match CronSchedule::parse(&s, tz.as_deref()) {
            Ok(c) => { let _ = c.next_after(jiff::Timestamp::UNIX_EPOCH); }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn arbitrary_json_is_never_a_panic_for_any_spec(v in any_json()) {
        let _ = serde_json::from_value::<BackupPolicySpec>(v.clone());
        let _ = serde_json::from_value::<RestoreRequestSpec>(v.clone());
        let _ = serde_json::from_value::<DrillScheduleSpec>(v);
    }

    #[test]
    fn a_policy_with_one_field_replaced_parses_or_says_why(pick in any::<usize>(), with in any_json()) {
        let v = mutate(valid_policy(), pick, with);
        match serde_json::from_value::<BackupPolicySpec>(v) {
            Ok(p) => {
                // Whatever parses serializes back to something that parses the same.
                let again: BackupPolicySpec = serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
                prop_assert_eq!(again, p);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

/// The same property as above, driven by hand to show the case count is real.
#[test]
fn ten_thousand_mutated_policies_really_run() {
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::new(config());
    let seen = std::cell::Cell::new(0u32);
    let rejected = std::cell::Cell::new(0u32);
    runner
        .run(&(any::<usize>(), any_json()), |(pick, with)| {
            seen.set(seen.get() + 1);
            if serde_json::from_value::<BackupPolicySpec>(mutate(valid_policy(), pick, with))
                .is_err()
            {
                rejected.set(rejected.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(seen.get(), 10_000);
    assert!(
        rejected.get() > 1_000,
        "most mutations are invalid: {}",
        rejected.get()
    );
}

/// A cron field as a hostile user could write it within `lo..=hi`: a value, a range, a step,
/// a list (sparse days such as 29-31 and single months included).
fn cron_field(lo: u32, hi: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_owned()),
        (lo..=hi).prop_map(|v| v.to_string()),
        (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        (1..=hi).prop_map(|s| format!("*/{s}")),
        prop::collection::vec(lo..=hi, 1..4).prop_map(|v| v
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")),
    ]
}

fn hostile_schedule() -> impl Strategy<Value = String> {
    (
        cron_field(0, 59),
        cron_field(0, 23),
        cron_field(1, 31),
        cron_field(1, 12),
        cron_field(0, 6),
    )
        .prop_map(|(m, h, dom, mon, dow)| format!("{m} {h} {dom} {mon} {dow}"))
}

const ZONES: [&str; 5] = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
];

proptest! {
    // Fewer cases than the parsers: an every-minute schedule walks 11,520 due times.
    #![proptest_config(ProptestConfig { cases: 500, ..config() })]

    /// The worst-case gap of any schedule the API accepts, in zones with DST jumps of an hour
    /// and of half an hour: it exists, it is positive, no pair of consecutive due times within
    /// the horizon is further apart, a longer horizon never shrinks it, and it is a real gap
    /// between two due times.
    #[test]
    fn the_longest_gap_bounds_every_gap_of_any_schedule(
        expr in hostile_schedule(),
        zone in 0..ZONES.len(),
        from in 946_684_800i64..4_102_444_800,
    ) {
        let Ok(s) = CronSchedule::parse(&expr, Some(ZONES[zone])) else {
            return Ok(());
        };
        let from = jiff::Timestamp::from_second(from).unwrap();
        let horizon = lifeboat_api::schedule::RPO_HORIZON;
        let gap = s.longest_gap(from, horizon).expect("an accepted schedule fires again");
        prop_assert!(gap > jiff::SignedDuration::ZERO, "{expr}: {gap:?}");
        let end = from.checked_add(horizon).unwrap();
        let mut at = s.next_after(from).unwrap();
        let mut seen = false;
        for _ in 0..200 {
            if at > end { break; }
            let next = s.next_after(at).unwrap();
            prop_assert!(next.duration_since(at) <= gap, "{expr} {at} → {next} exceeds {gap:?}");
            seen |= next.duration_since(at) == gap;
            at = next;
        }
        let shorter = s.longest_gap(from, jiff::SignedDuration::from_hours(24)).unwrap();
        prop_assert!(shorter <= gap, "{expr}: a day's {shorter:?} > eight days' {gap:?}");
        // Realised: the walk above found it, or it straddles `from` (the due time before it to
        // the first after it) or lies past the 200 due times walked.
        let before = s.previous_at_or_before(from);
        let first = s.next_after(before.unwrap_or(from)).unwrap();
        prop_assert!(
            seen || before.is_some_and(|b| first.duration_since(b) == gap) || at <= end,
            "{expr}: {gap:?} is no gap between two due times"
        );
    }

    /// Regular schedules in UTC have their interval as the longest gap.
    #[test]
    fn regular_schedules_have_their_interval_as_the_gap(
        step in prop::sample::select(vec![1u32, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30]),
        minute in 0u32..60,
        hour in 0u32..24,
        from in 946_684_800i64..4_102_444_800,
    ) {
        let from = jiff::Timestamp::from_second(from).unwrap();
        let horizon = lifeboat_api::schedule::RPO_HORIZON;
        let every = CronSchedule::parse(&format!("*/{step} * * * *"), None).unwrap();
        prop_assert_eq!(every.longest_gap(from, horizon).unwrap().as_secs(), i64::from(step) * 60);
        let daily = CronSchedule::parse(&format!("{minute} {hour} * * *"), None).unwrap();
        prop_assert_eq!(daily.longest_gap(from, horizon).unwrap().as_secs(), 86_400);
    }
}
