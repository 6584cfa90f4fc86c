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
