//! Results that survive the termination message's 4 KiB: 40 checks, half of them failing, run
//! by the agent binary as the validation Job runs it, against a real PostgreSQL server. The
//! summary fits and parses, every failure is in it with the counts, and the full report written
//! beside the backups holds all 40 with their messages uncut.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use lifeboat_agent::local::LocalPostgres;
use lifeboat_agent::postgres;
use lifeboat_agent::validate::{Report, report_file_name};
use lifeboat_api::agent_result::{
    AgentSummary, ErrorClass, TERMINATION_MESSAGE_LIMIT, TerminationMessage,
};
use serde_json::{Value, json};

/// Check `i`'s name, 30 characters.
fn name(i: usize) -> String {
    format!("check-{i:02}-{}", "x".repeat(21))
}

#[test]
fn forty_checks_fit_the_termination_message_and_all_are_in_the_report() {
    let pg = LocalPostgres::start().unwrap();
    postgres::query(&pg.conn(), "postgres", "CREATE DATABASE shop").unwrap();
    // Even checks pass; odd ones fail, half by a wrong value and half by an error.
    let checks: Vec<Value> = (0..40)
        .map(|i| {
            let (query, expect) = match i % 4 {
                1 => ("SELECT false", "t"),
                3 => ("SELECT 1/0 = 1", "t"),
                _ => ("SELECT true", "t"),
            };
            json!({"name": name(i), "sql": {"asset": "orders-db", "query": query, "expect": expect}})
        })
        .collect();
    let asset = json!({"name": "orders-db", "postgres": {"host": "127.0.0.1", "port": pg.port,
        "user": "lifeboat", "sslMode": "disable", "databases": ["shop"]}});
    let document = json!({"namespace": "team-a", "checks": checks, "timeout": "3s",
        "assets": [{"namespace": "team-a", "policy": "orders", "backupId": "20261124T100000Z",
            "asset": asset, "location": {"volume": {"claimName": "backups"}}, "options": {}}]});
    let dir = tempfile::tempdir().unwrap();
    let term = dir.path().join("termination-log");
    let backups = dir.path().join("backups");
    let status = Command::new(env!("CARGO_BIN_EXE_lifeboat-agent"))
        .env("LIFEBOAT_JOB", document.to_string())
        .env("LIFEBOAT_BACKUP_DIR", &backups)
        .env("LIFEBOAT_TERMINATION_LOG", &term)
        .args(["validate", "--execute", "--report", "restore-orders.1"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(ErrorClass::Validation.exit_code()));

    let text = std::fs::read_to_string(&term).unwrap();
    assert!(
        text.len() <= TERMINATION_MESSAGE_LIMIT,
        "{} bytes: the kubelet would cut it",
        text.len()
    );
    // Older readers of the bare summary read it too.
    let bare = AgentSummary::from_termination_message(&text).unwrap();
    let m = TerminationMessage::parse(&text).unwrap();
    assert_eq!(bare, m.summary);
    assert!(!m.summary.ok);
    assert_eq!(m.summary.error_class, Some(ErrorClass::Validation));
    let counts = m.checks_report.unwrap();
    assert_eq!((counts.passed, counts.failed), (20, 20), "{text}");
    // Not everything fitted: the limit was really in play.
    assert!(counts.omitted > 0, "{text}");
    assert_eq!(m.summary.checks.len() + counts.omitted as usize, 40);
    let failed: Vec<&str> = m
        .summary
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.as_str())
        .collect();
    let expected: Vec<String> = (0..40).filter(|i| i % 2 == 1).map(name).collect();
    assert_eq!(failed, expected, "every failure shows, first");
    let division = m.summary.checks.iter().find(|c| c.name == name(3)).unwrap();
    assert!(division.message.contains("22012"), "{division:?}");

    // The report beside the backups holds all 40, messages uncut.
    let path = backups
        .join("team-a")
        .join("orders")
        .join(report_file_name("restore-orders.1"));
    assert_eq!(counts.location.as_deref(), Some(path.to_str().unwrap()));
    let report: Report = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(report.restore, "restore-orders.1");
    assert_eq!(report.backups, ["orders-db/20261124T100000Z"]);
    assert_eq!(report.checks.len(), 40);
    for (i, c) in report.checks.iter().enumerate() {
        assert_eq!(c.name, name(i));
        assert_eq!(c.passed, i % 2 == 0, "{c:?}");
        assert!(c.attempts >= 1, "{c:?}");
        match i % 4 {
            1 => assert_eq!(
                c.message,
                "the first column of the first row is not the expected value"
            ),
            3 => assert!(c.message.contains("22012"), "{c:?}"),
            _ => assert!(c.message.is_empty(), "{c:?}"),
        }
    }
    for shown in &m.summary.checks {
        let full = report.checks.iter().find(|c| c.name == shown.name).unwrap();
        assert!(
            full.message
                .starts_with(shown.message.trim_end_matches('…'))
        );
    }

    // A name that is not an object name is refused, and the checks' verdict stands.
    let status = Command::new(env!("CARGO_BIN_EXE_lifeboat-agent"))
        .env("LIFEBOAT_JOB", document.to_string())
        .env("LIFEBOAT_BACKUP_DIR", &backups)
        .env("LIFEBOAT_TERMINATION_LOG", &term)
        .args(["validate", "--execute", "--report", "../../escape"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(ErrorClass::Validation.exit_code()));
    let m = TerminationMessage::parse(&std::fs::read_to_string(&term).unwrap()).unwrap();
    assert_eq!(m.checks_report.unwrap().location, None);
    assert!(!dir.path().join("escape").exists());
    assert!(!backups.join("escape").exists());
}
