//! Credentials, end to end against real servers that enforce them: a PostgreSQL role behind
//! scram-sha-256 and a Redis ACL user behind `requirepass`. The passwords reach the tools only
//! through the mounted Secret files (PGPASSFILE, REDISCLI_AUTH), a right password backs up and
//! restores, a wrong one fails as Auth with nothing committed, and no password ever shows up in
//! the output, the termination summary or the stored metadata.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lifeboat_agent::local::{LocalPostgres, LocalRedis};
use lifeboat_agent::postgres;
use lifeboat_api::agent_result::{AgentSummary, ErrorClass};

/// Characters that need escaping in a pgpass line (`:` and `\`) and in a shell.
const PG_PASSWORD: &str = r"pg:S3cret\with$pecials 'q'";
const REDIS_PASSWORD: &str = "r3dis-ACL-pass:#!";
const DEFAULT_PASSWORD: &str = "default-requirepass-42";

/// Runs the agent with secrets from files only (no password in its environment).
fn run(secrets: &Path, term: &Path, verb: &str, args: &[&std::ffi::OsStr]) -> Output {
    let mut c = agent_command();
    c.env_remove("LIFEBOAT_JOB")
        .env_remove("PGPASSWORD")
        .env_remove("REDISCLI_AUTH")
        .env("LIFEBOAT_TERMINATION_LOG", term)
        .arg(verb)
        .arg("--secrets-dir")
        .arg(secrets)
        .args(args);
    c.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Puts a scram-sha-256 rule for `role` in front of the server's trust rules and reloads.
fn require_scram(pg: &LocalPostgres, role: &str) {
    let conn = pg.conn();
    let hba = postgres::query(&conn, "postgres", "SHOW hba_file").unwrap();
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all {role} 127.0.0.1/32 scram-sha-256\n{rules}"),
    )
    .unwrap();
    postgres::query(&conn, "postgres", "SELECT pg_reload_conf()").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
}

fn write_secret(secrets: &Path, name: &str, key: &str, value: &str) {
    let dir = secrets.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    // Secrets edited by hand often end in a newline; it is not part of the password.
    std::fs::write(dir.join(key), format!("{value}\n")).unwrap();
}

fn write_policy(dir: &Path, pg_port: u16, redis_port: u16) -> PathBuf {
    let path = dir.join("policy.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: lifeboat.dev/v1alpha1
kind: BackupPolicy
metadata: {{name: secure}}
spec:
  schedule: '@hourly'
  assets:
    - name: orders-db
      postgres:
        host: 127.0.0.1
        port: {pg_port}
        user: backup
        sslMode: disable
        passwordSecret: {{name: pg-creds, key: password}}
        databases: [shop]
    - name: sessions
      redis:
        host: 127.0.0.1
        port: {redis_port}
        username: backup
        passwordSecret: {{name: redis-creds, key: password}}
  retention: {{maxAge: 7d}}
  destination: {{volume: {{claimName: local}}}}
"
        ),
    )
    .unwrap();
    path
}

fn listed(secrets: &Path, term: &Path, backups: &Path) -> Vec<serde_json::Value> {
    let out = run(
        secrets,
        term,
        "list",
        &[
            "--policy".as_ref(),
            "secure".as_ref(),
            "--json".as_ref(),
            "--dir".as_ref(),
            backups.as_os_str(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Every regular file under `dir` that is not a compressed artifact (metadata, leftovers).
fn readable_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().ends_with(".zst") {
                out.push(p);
            }
        }
    }
    out
}

fn assert_no_secret(what: &str, haystack: &str) {
    for secret in [
        PG_PASSWORD,
        REDIS_PASSWORD,
        DEFAULT_PASSWORD,
        "wrong-password",
    ] {
        assert!(
            !haystack.contains(secret),
            "{what} leaks a password: {haystack}"
        );
    }
}

#[test]
fn passwords_come_from_secret_files_work_and_never_leak() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let secrets = dir.path().join("secrets");
    let term = dir.path().join("termination-log");

    // PostgreSQL: a role that must authenticate with scram-sha-256.
    let pg = LocalPostgres::start().unwrap();
    let conn = pg.conn();
    postgres::query(
        &conn,
        "postgres",
        &format!(
            "CREATE ROLE backup LOGIN SUPERUSER PASSWORD '{}'",
            PG_PASSWORD.replace('\'', "''")
        ),
    )
    .unwrap();
    postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
    postgres::query(
        &conn,
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 1000) i",
    )
    .unwrap();
    require_scram(&pg, "backup");
    let as_backup = |password: Option<&str>| postgres::Conn {
        user: "backup".into(),
        password: password.map(str::to_owned),
        ..pg.conn()
    };
    assert_eq!(
        postgres::query(&as_backup(None), "shop", "SELECT 1")
            .unwrap_err()
            .class,
        ErrorClass::Auth,
        "the server enforces the password"
    );
    let fingerprint = "SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY id)) FROM t";
    let expected = postgres::query(&as_backup(Some(PG_PASSWORD)), "shop", fingerprint).unwrap();

    // Redis: an ACL user, and the default user locked behind requirepass.
    let redis = LocalRedis::start().unwrap();
    let r = redis.conn();
    r.run(0, &["SET", "k", "v"]).unwrap();
    r.run(0, &["HSET", "h", "f", "v"]).unwrap();
    r.run(
        0,
        &[
            "ACL",
            "SETUSER",
            "backup",
            "on",
            &format!(">{REDIS_PASSWORD}"),
            "~*",
            "&*",
            "+@all",
        ],
    )
    .unwrap();
    r.run(0, &["CONFIG", "SET", "requirepass", DEFAULT_PASSWORD])
        .unwrap();
    assert_eq!(
        r.run(0, &["PING"]).unwrap_err().class,
        ErrorClass::Auth,
        "the server enforces the password"
    );

    write_secret(&secrets, "pg-creds", "password", PG_PASSWORD);
    write_secret(&secrets, "redis-creds", "password", REDIS_PASSWORD);
    let policy = write_policy(dir.path(), pg.port, redis.port);
    let backup = |asset: &str| {
        run(
            &secrets,
            &term,
            "backup",
            &[
                "--asset".as_ref(),
                asset.as_ref(),
                "--policy-file".as_ref(),
                policy.as_os_str(),
                "--dir".as_ref(),
                backups.as_os_str(),
            ],
        )
    };

    // The right passwords: both assets back up.
    for asset in ["orders-db", "sessions"] {
        let out = backup(asset);
        assert!(out.status.success(), "{asset}: {}", text(&out));
        assert_no_secret("backup output", &text(&out));
        let summary =
            AgentSummary::from_termination_message(&std::fs::read_to_string(&term).unwrap())
                .unwrap();
        assert!(summary.ok && summary.sha256.is_some(), "{summary:?}");
        assert_no_secret("summary", &std::fs::read_to_string(&term).unwrap());
    }
    assert_eq!(listed(&secrets, &term, &backups).len(), 2);

    // Restore into another database as the same password-protected role.
    let target = dir.path().join("target.yaml");
    std::fs::write(
        &target,
        format!(
            "asset: orders-db\npostgres: {{host: 127.0.0.1, port: {}, user: backup, sslMode: disable, passwordSecret: {{name: pg-creds, key: password}}, database: shop_copy, createDatabase: true}}\n",
            pg.port
        ),
    )
    .unwrap();
    let out = run(
        &secrets,
        &term,
        "restore",
        &[
            "--execute".as_ref(),
            "--asset".as_ref(),
            "orders-db".as_ref(),
            "--policy-file".as_ref(),
            policy.as_os_str(),
            "--target-file".as_ref(),
            target.as_os_str(),
            "--dir".as_ref(),
            backups.as_os_str(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_no_secret("restore output", &text(&out));
    assert_eq!(
        postgres::query(&as_backup(Some(PG_PASSWORD)), "shop_copy", fingerprint).unwrap(),
        expected
    );

    // Wrong passwords: Auth, exit 5, nothing committed, nothing leaked.
    write_secret(&secrets, "pg-creds", "password", "wrong-password");
    write_secret(&secrets, "redis-creds", "password", "wrong-password");
    for asset in ["orders-db", "sessions"] {
        let out = backup(asset);
        assert_eq!(
            out.status.code(),
            Some(ErrorClass::Auth.exit_code()),
            "{asset}: {}",
            text(&out)
        );
        assert_no_secret("failed backup output", &text(&out));
        let summary_text = std::fs::read_to_string(&term).unwrap();
        assert_no_secret("failed summary", &summary_text);
        let summary = AgentSummary::from_termination_message(&summary_text).unwrap();
        assert_eq!(summary.error_class, Some(ErrorClass::Auth), "{asset}");
        assert!(!summary.ok);
    }
    assert_eq!(
        listed(&secrets, &term, &backups).len(),
        2,
        "failed backups are not listed"
    );

    // A Secret that is not mounted (optional Secret volumes: it does not exist in the
    // namespace) is SecretNotFound, named without its content.
    std::fs::remove_file(secrets.join("pg-creds/password")).unwrap();
    let out = backup("orders-db");
    assert_eq!(
        out.status.code(),
        Some(ErrorClass::SecretNotFound.exit_code()),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains(r#"Secret "pg-creds" with key "password" not found"#),
        "{}",
        text(&out)
    );
    let summary =
        AgentSummary::from_termination_message(&std::fs::read_to_string(&term).unwrap()).unwrap();
    assert_eq!(summary.error_class, Some(ErrorClass::SecretNotFound));
    assert!(
        summary
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("pg-creds"),
        "{summary:?}"
    );

    for f in readable_files(&backups) {
        assert_no_secret(
            &f.display().to_string(),
            &String::from_utf8_lossy(&std::fs::read(&f).unwrap()),
        );
    }
}

/// The agent, signing with the tests' key (a fixture: any 32 bytes), in namespace `n` (a Job's
/// document names its own).
fn agent_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat-agent"));
    c.env(
        "LIFEBOAT_SIGNING_KEY_FILE",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/signing.key"),
    )
    .env("LIFEBOAT_NAMESPACE", "n");
    c
}
