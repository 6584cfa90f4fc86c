//! The `notify` Job a finished operator drill may end with, run as the operator runs it (the
//! document in `LIFEBOAT_JOB`, the webhook URL in a Secret file) against webhook receivers on
//! loopback: one POST of `{"text": ...}`, never retried, never redirected; a host the platform
//! did not allow, or a missing Secret, sends nothing; and whatever the remote answers, nothing
//! the agent prints or reports names the URL or the remote's status code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use lifeboat_api::agent_result::{AgentSummary, ErrorClass};
use serde_json::json;

/// A receiver on loopback answering every request with `answer` (a status line and headers);
/// keeps each request's body.
fn receiver(answer: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).unwrap_or(0);
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        kept.lock().unwrap().push(body.to_owned());
                        let _ = s.write_all(answer.as_bytes());
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
        }
    });
    (format!("http://127.0.0.1:{port}"), bodies)
}

const TOKEN: &str = "T0001/B0002/url-token-77ab31";

struct Run {
    out: Output,
    summary: AgentSummary,
    /// Everything the agent wrote: stdout, stderr and its termination message.
    said: String,
}

/// Runs `lifeboat-agent notify` with `url` in the Secret file (none when `None`) and the platform's
/// `allowed` hosts.
fn notify(url: Option<&str>, allowed: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    if let Some(url) = url {
        std::fs::create_dir_all(dir.path().join("secrets/slack")).unwrap();
        std::fs::write(dir.path().join("secrets/slack/url"), format!("{url}\n")).unwrap();
    }
    let doc = json!({"namespace": "shop", "webhookSecret": {"name": "slack", "key": "url"},
                     "text": "Lifeboat DrillFailed shop/quarterly: drill d1", "allowedHosts": allowed});
    let term = dir.path().join("term");
    let out = Command::new(env!("CARGO_BIN_EXE_lifeboat-agent"))
        .env("LIFEBOAT_JOB", doc.to_string())
        .env("LIFEBOAT_SECRETS_DIR", dir.path().join("secrets"))
        .env("LIFEBOAT_TERMINATION_LOG", &term)
        .arg("notify")
        .output()
        .unwrap();
    let message = std::fs::read_to_string(&term).unwrap();
    let summary = AgentSummary::from_termination_message(&message).unwrap();
    let said = format!(
        "{}{}{message}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Run { out, summary, said }
}

fn assert_quiet(run: &Run, url: &str) {
    assert!(
        !run.said.contains(TOKEN),
        "the URL's token leaked: {}",
        run.said
    );
    assert!(!run.said.contains(url), "the URL leaked: {}", run.said);
}

#[test]
fn a_drill_result_is_posted_once_as_json() {
    let (base, bodies) = receiver("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    let url = format!("{base}/services/{TOKEN}");
    let run = notify(Some(&url), &[]);
    assert!(run.out.status.success(), "{}", run.said);
    assert!(run.summary.ok);
    assert_quiet(&run, &url);
    let got = bodies.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let payload: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
    assert_eq!(
        payload,
        json!({"text": "Lifeboat DrillFailed shop/quarterly: drill d1"})
    );
    // An allowed host passes the platform's list the same way.
    let run = notify(Some(&url), &["127.0.0.1"]);
    assert!(run.summary.ok, "{}", run.said);
    assert_eq!(bodies.lock().unwrap().len(), 2);
}

#[test]
fn a_refusing_remote_is_not_delivered_and_its_answer_is_not_reported() {
    // An internal service answering 403 with a body: neither reaches the report.
    let (base, bodies) =
        receiver("HTTP/1.1 403 Forbidden\r\ncontent-length: 21\r\n\r\ninternal-admin-secret");
    let url = format!("{base}/services/{TOKEN}");
    let run = notify(Some(&url), &[]);
    assert_eq!(
        run.out.status.code(),
        Some(ErrorClass::SourceUnreachable.exit_code()),
        "{}",
        run.said
    );
    assert_eq!(run.summary.error_class, Some(ErrorClass::SourceUnreachable));
    assert_quiet(&run, &url);
    assert!(
        !run.said.contains("403") && !run.said.contains("internal-admin-secret"),
        "the remote's answer leaked: {}",
        run.said
    );
    assert_eq!(bodies.lock().unwrap().len(), 1, "sent once, not retried");
    // Nobody listening says the same, word for word: no oracle between the two.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!(
            "http://127.0.0.1:{}/services/{TOKEN}",
            l.local_addr().unwrap().port()
        )
    };
    let unreachable = notify(Some(&closed), &[]);
    assert_eq!(unreachable.summary.error_class, run.summary.error_class);
    assert_eq!(unreachable.summary.message, run.summary.message);
    assert_quiet(&unreachable, &closed);
}

#[test]
fn a_redirect_is_not_followed() {
    let (elsewhere, followed) = receiver("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    let answer: &'static str = Box::leak(
        format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: {elsewhere}/x\r\ncontent-length: 0\r\n\r\n"
        )
        .into_boxed_str(),
    );
    let (base, bodies) = receiver(answer);
    let run = notify(Some(&format!("{base}/services/{TOKEN}")), &[]);
    assert_eq!(run.summary.error_class, Some(ErrorClass::SourceUnreachable));
    assert_eq!(bodies.lock().unwrap().len(), 1);
    assert!(
        followed.lock().unwrap().is_empty(),
        "the redirect was followed"
    );
}

#[test]
fn a_host_the_platform_did_not_allow_or_a_missing_secret_sends_nothing() {
    let (base, bodies) = receiver("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    let url = format!("{base}/services/{TOKEN}");
    let run = notify(Some(&url), &["hooks.slack.com", "*.chat.example.com"]);
    assert_eq!(
        run.out.status.code(),
        Some(ErrorClass::Config.exit_code()),
        "{}",
        run.said
    );
    assert!(
        run.said.contains("drills.webhookAllowedHosts"),
        "{}",
        run.said
    );
    assert!(
        !run.said.contains("127.0.0.1"),
        "the host leaked: {}",
        run.said
    );
    assert_quiet(&run, &url);
    for not_http in ["file:///etc/passwd", "not a url"] {
        let run = notify(Some(not_http), &[]);
        assert_eq!(run.summary.error_class, Some(ErrorClass::Config));
        assert!(!run.said.contains(not_http), "{}", run.said);
    }
    let run = notify(None, &[]);
    assert_eq!(
        run.out.status.code(),
        Some(ErrorClass::SecretNotFound.exit_code())
    );
    assert!(
        run.summary
            .message
            .as_deref()
            .unwrap()
            .contains(r#"Secret "slack" with key "url" not found"#),
        "{:?}",
        run.summary
    );
    assert!(bodies.lock().unwrap().is_empty(), "nothing was sent");
}
