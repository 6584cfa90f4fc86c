//! Validation checks as the validation Job runs them (the agent binary with a LIFEBOAT_JOB
//! document), against real PostgreSQL and Redis servers and real HTTP(S) servers on loopback:
//! a check can only read, runs one statement, is bounded in time, never reports the data it
//! read, and an HTTP check is a real client's GET (TLS, IPv6, no redirects, no injected lines).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lifeboat_agent::local::{LocalPostgres, LocalRedis};
use lifeboat_agent::postgres;
use lifeboat_api::agent_result::{AgentSummary, ErrorClass};
use lifeboat_api::restore_request::CheckResult;
use serde_json::{Value, json};

/// Runs the agent with `document`, stopping it (and failing) after `limit`; returns whether it
/// succeeded, its summary and how long it took.
fn agent(
    verb: &[&str],
    document: &Value,
    secrets: Option<&std::path::Path>,
    limit: Duration,
) -> (bool, AgentSummary, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let term = dir.path().join("term");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lifeboat-agent"));
    cmd.env("LIFEBOAT_JOB", document.to_string())
        .env(
            "LIFEBOAT_SIGNING_KEY_FILE",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/signing.key"),
        )
        .env("LIFEBOAT_NAMESPACE", "n")
        .env("LIFEBOAT_BACKUP_DIR", dir.path().join("backups"))
        .env("LIFEBOAT_TERMINATION_LOG", &term)
        .args(verb)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(s) = secrets {
        cmd.env("LIFEBOAT_SECRETS_DIR", s);
    }
    let t0 = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if t0.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the agent was still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = t0.elapsed();
    let summary =
        AgentSummary::from_termination_message(&std::fs::read_to_string(&term).unwrap()).unwrap();
    (status.success(), summary, took)
}

fn pg_asset(port: u16) -> Value {
    json!({"name": "orders-db", "postgres": {"host": "127.0.0.1", "port": port, "user": "lifeboat",
        "sslMode": "disable", "databases": ["shop"]}})
}

fn redis_asset(port: u16) -> Value {
    json!({"name": "sessions", "redis": {"host": "127.0.0.1", "port": port}})
}

/// A validation Job document: `checks` against `assets` restored in place.
fn validation(checks: Value, assets: &[Value], timeout: &str) -> Value {
    let assets: Vec<Value> = assets
        .iter()
        .map(|a| {
            json!({"namespace": "n", "policy": "p", "backupId": "20261124T100000Z", "asset": a,
                "location": {"volume": {"claimName": "backups"}}, "options": {}})
        })
        .collect();
    json!({"namespace": "n", "checks": checks, "timeout": timeout, "assets": assets})
}

fn result<'a>(s: &'a AgentSummary, name: &str) -> &'a CheckResult {
    s.checks.iter().find(|c| c.name == name).unwrap()
}

#[test]
fn sql_checks_read_one_statement_and_report_no_data() {
    let pg = LocalPostgres::start().unwrap();
    let conn = pg.conn();
    postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
    postgres::query(
        &conn,
        "shop",
        "CREATE TABLE orders (id int); INSERT INTO orders VALUES (1), (2), (3); \
         CREATE TABLE vault (v text); INSERT INTO vault VALUES ('hunter2-secret')",
    )
    .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let touched = scratch.path().join("touched");
    let sql = |name: &str, query: &str, expect: &str| json!({"name": name, "sql": {"asset": "orders-db", "query": query, "expect": expect}});
    let checks = json!([
        sql("counts", "SELECT count(*) = 3 FROM orders", "t"),
        sql("number", "SELECT count(*) FROM orders", "3"),
        sql("shell", &format!("\\! touch {}", touched.display()), ""),
        sql("writes", "DELETE FROM orders RETURNING true", "t"),
        sql("two", "SELECT true; DELETE FROM orders", "t"),
        sql("read-write", "SET TRANSACTION READ WRITE", ""),
        sql("mismatch", "SELECT v FROM vault", "something else"),
        sql("echo", "SELECT v::int FROM vault", "1"),
    ]);
    let (ok, s, _) = agent(
        &["validate", "--execute"],
        &validation(checks, &[pg_asset(pg.port)], "3s"),
        None,
        Duration::from_secs(60),
    );
    assert!(!ok);
    assert_eq!(s.error_class, Some(ErrorClass::Validation));
    assert!(result(&s, "counts").passed, "{s:?}");
    assert!(result(&s, "number").passed, "{s:?}");
    for failed in ["shell", "writes", "two", "read-write", "mismatch", "echo"] {
        let c = result(&s, failed);
        assert!(!c.passed, "{c:?}");
        assert!(c.attempts >= 1, "{c:?}");
        assert!(!c.message.contains("hunter2"), "{c:?}");
    }
    // psql's meta-command is not SQL: nothing ran in the agent's pod.
    assert!(!touched.exists(), "the \\! command ran");
    assert!(result(&s, "shell").message.contains("42601"), "{s:?}");
    // A writing statement fails in the read-only transaction; the second statement is refused
    // with the first by the extended protocol's Parse.
    assert!(result(&s, "writes").message.contains("25006"), "{s:?}");
    assert!(result(&s, "two").message.contains("42601"), "{s:?}");
    // Nor can the statement switch the transaction back to read-write.
    assert!(result(&s, "read-write").message.contains("25001"), "{s:?}");
    assert_eq!(
        postgres::query(&conn, "shop", "SELECT count(*) FROM orders").unwrap(),
        "3"
    );
    // Neither the value read nor the server's message (which quotes it) reaches status.
    assert_eq!(
        result(&s, "mismatch").message,
        "the first column of the first row is not the expected value"
    );
    assert!(
        result(&s, "echo")
            .message
            .contains("SQLSTATE 22P02 (invalid_text_representation)"),
        "{s:?}"
    );
}

#[test]
fn a_statement_past_its_timeout_is_stopped_and_so_is_the_validation() {
    let pg = LocalPostgres::start().unwrap();
    let conn = pg.conn();
    postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
    let sleep = |timeout: &str| {
        json!([{"name": "slow", "sql": {"asset": "orders-db", "query": "SELECT pg_sleep(30) IS NULL",
            "expect": "t", "timeout": timeout}}])
    };
    // The check's own timeout: the server cancels the statement.
    let (ok, s, took) = agent(
        &["validate", "--execute"],
        &validation(sleep("2s"), &[pg_asset(pg.port)], "3s"),
        None,
        Duration::from_secs(25),
    );
    assert!(!ok);
    let c = result(&s, "slow");
    assert_eq!(c.attempts, 1, "{c:?}");
    assert!(c.message.contains("57014"), "{c:?}");
    assert!(
        (1.5..4.0).contains(&c.duration_seconds),
        "the attempt took {}s",
        c.duration_seconds
    );
    assert!(took < Duration::from_secs(8), "{took:?}");
    // The validation's timeout stops a check in progress (its own allows a minute).
    let (ok, s, took) = agent(
        &["validate", "--execute"],
        &validation(sleep("60s"), &[pg_asset(pg.port)], "2s"),
        None,
        Duration::from_secs(25),
    );
    assert!(!ok);
    assert!(!result(&s, "slow").passed);
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[test]
fn redis_checks_read_a_key_and_report_no_value() {
    let redis = LocalRedis::start().unwrap();
    redis
        .conn()
        .run(0, &["SET", "session:1", "hunter2-secret"])
        .unwrap();
    redis.conn().run(2, &["SET", "in db 2", "x"]).unwrap();
    let check = |name: &str, key: &str, db: u8, expect: Option<&str>| {
        let mut r = json!({"asset": "sessions", "key": key, "db": db});
        if let Some(e) = expect {
            r["expect"] = json!(e);
        }
        json!({"name": name, "redis": r})
    };
    let checks = json!([
        check("exists", "session:1", 0, None),
        check("value", "session:1", 0, Some("hunter2-secret")),
        check("spaces-are-one-argument", "in db 2", 2, Some("x")),
        check("mismatch", "session:1", 0, Some("other")),
        check("missing", "session:2", 0, None),
    ]);
    let (ok, s, _) = agent(
        &["validate", "--execute"],
        &validation(checks, &[redis_asset(redis.port)], "3s"),
        None,
        Duration::from_secs(60),
    );
    assert!(!ok);
    for passed in ["exists", "value", "spaces-are-one-argument"] {
        assert!(result(&s, passed).passed, "{s:?}");
    }
    let mismatch = result(&s, "mismatch");
    assert!(!mismatch.passed);
    assert!(!mismatch.message.contains("hunter2"), "{mismatch:?}");
    assert!(!result(&s, "missing").passed);
}

/// A loopback server that accepts connections and never answers; counts them.
fn silent_server() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    (port, accepted)
}

#[test]
fn a_host_that_never_answers_fails_every_check_kind_within_its_timeout() {
    let (port, accepted) = silent_server();
    let checks = json!([
        {"name": "sql", "sql": {"asset": "orders-db", "query": "SELECT true", "expect": "t", "timeout": "2s"}},
        {"name": "redis", "redis": {"asset": "sessions", "key": "k", "timeout": "2s"}},
        {"name": "http", "http": {"url": format!("http://127.0.0.1:{port}/health"), "timeout": "2s"}},
    ]);
    let (ok, s, took) = agent(
        &["validate", "--execute"],
        &validation(checks, &[pg_asset(port), redis_asset(port)], "10s"),
        None,
        Duration::from_secs(40),
    );
    assert!(!ok);
    for name in ["sql", "redis", "http"] {
        let c = result(&s, name);
        assert!(!c.passed && c.attempts >= 1, "{c:?}");
        assert!(
            c.duration_seconds / f64::from(c.attempts) < 3.0,
            "{name}: {} attempts took {}s",
            c.attempts,
            c.duration_seconds
        );
    }
    assert!(accepted.load(Ordering::SeqCst) >= 3, "the checks connected");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[test]
fn a_redis_backup_from_a_host_that_never_answers_fails_within_its_bound() {
    let (port, accepted) = silent_server();
    let mut asset = redis_asset(port);
    asset["redis"]["allowEmpty"] = json!(true);
    let job = json!({"namespace": "n", "policy": "p", "asset": asset,
        "destination": {"volume": {"claimName": "backups"}},
        "compression": {"algorithm": "zstd", "level": 3}, "retention": {"keepLast": 5}});
    let (ok, s, took) = agent(&["backup"], &job, None, Duration::from_secs(60));
    assert!(!ok);
    assert_eq!(s.error_class, Some(ErrorClass::Timeout), "{s:?}");
    assert!(accepted.load(Ordering::SeqCst) >= 1);
    assert!(took < Duration::from_secs(20), "{took:?}");
}

/// A one-request HTTP server on `addr` answering `response`; counts connections.
fn http_server(addr: &str, response: &'static str) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind(addr).unwrap();
    let local = l.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let count = hits.clone();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            read_head(&mut s);
            let _ = s.write_all(response.as_bytes());
        }
    });
    (local.to_string(), hits)
}

fn read_head(s: &mut impl Read) -> Vec<u8> {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    req
}

fn http(name: &str, url: &str, expected: u16) -> Value {
    json!({"name": name, "http": {"url": url, "expectedStatus": expected, "timeout": "3s"}})
}

#[test]
fn http_checks_are_one_get_of_a_real_client() {
    let (ok_addr, _) = http_server(
        "127.0.0.1:0",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    );
    let (v6_addr, v6_hits) = http_server(
        "[::1]:0",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    );
    let (target_addr, target_hits) = http_server(
        "127.0.0.1:0",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    );
    let redirect: &'static str = Box::leak(
        format!("HTTP/1.1 302 Found\r\nLocation: http://{target_addr}/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .into_boxed_str(),
    );
    let (redirect_addr, _) = http_server("127.0.0.1:0", redirect);
    let (injected_addr, injected_hits) = http_server(
        "127.0.0.1:0",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    );
    let checks = json!([
        http("plain", &format!("http://{ok_addr}/health"), 200),
        http("ipv6", &format!("http://{v6_addr}/health"), 200),
        http(
            "redirect-is-a-status",
            &format!("http://{redirect_addr}/"),
            302
        ),
        http(
            "redirect-not-followed",
            &format!("http://{redirect_addr}/"),
            200
        ),
        http(
            "injected",
            &format!("http://{injected_addr}/health HTTP/1.1\r\nX-Injected: 1\r\n\r\nGET /admin"),
            200
        ),
    ]);
    let (ok, s, _) = agent(
        &["validate", "--execute"],
        &validation(checks, &[], "3s"),
        None,
        Duration::from_secs(60),
    );
    assert!(!ok);
    for passed in ["plain", "ipv6", "redirect-is-a-status"] {
        assert!(result(&s, passed).passed, "{s:?}");
    }
    assert!(v6_hits.load(Ordering::SeqCst) >= 1);
    let not_followed = result(&s, "redirect-not-followed");
    assert!(!not_followed.passed);
    assert_eq!(not_followed.message, "status 302, expected 200");
    assert_eq!(
        target_hits.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    let injected = result(&s, "injected");
    assert!(!injected.passed);
    assert!(injected.message.contains("line break"), "{injected:?}");
    assert_eq!(
        injected_hits.load(Ordering::SeqCst),
        0,
        "a request was sent"
    );
}

/// A TLS server on 127.0.0.1 with a certificate for `localhost` and 127.0.0.1 issued by a
/// throw-away CA; returns its port and the CA's PEM.
fn tls_server() -> (u16, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap();
    let config = Arc::new(config);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, s);
                read_head(&mut tls);
                let _ = tls.write_all(
                    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                let _ = tls.flush();
            });
        }
    });
    (port, ca.pem())
}

#[test]
fn https_checks_trust_the_ca_bundle_they_are_given() {
    let (port, ca) = tls_server();
    let secrets = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(secrets.path().join("internal-ca")).unwrap();
    std::fs::write(secrets.path().join("internal-ca/ca.crt"), ca).unwrap();
    let check = |name: &str, host: &str, ca: bool| {
        let mut c = json!({"url": format!("https://{host}:{port}/health"), "expectedStatus": 204, "timeout": "3s"});
        if ca {
            c["caSecret"] = json!({"name": "internal-ca", "key": "ca.crt"});
        }
        json!({"name": name, "http": c})
    };
    let checks = json!([
        check("with-ca", "localhost", true),
        check("with-ca-by-address", "127.0.0.1", true),
        check("without-ca", "localhost", false),
    ]);
    let (ok, s, _) = agent(
        &["validate", "--execute"],
        &validation(checks, &[], "3s"),
        Some(secrets.path()),
        Duration::from_secs(60),
    );
    assert!(!ok);
    assert!(result(&s, "with-ca").passed, "{s:?}");
    assert!(result(&s, "with-ca-by-address").passed, "{s:?}");
    let without = result(&s, "without-ca");
    assert!(!without.passed);
    assert!(
        without.message.to_lowercase().contains("certificate"),
        "{without:?}"
    );
}

/// A throw-away CA's certificate and key for `localhost`/127.0.0.1, as PEM: (cert, key).
fn server_certificate() -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn sql_checks_use_tls_as_ssl_mode_says() {
    let pg = LocalPostgres::start().unwrap();
    let conn = pg.conn();
    postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
    // TLS switched on in the running server, with a certificate no system trusts.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = server_certificate();
    let (cert_path, key_path) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    std::fs::set_permissions(
        &key_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    if root {
        // The server runs as `postgres` (it refuses root), which must own its key.
        for p in [dir.path(), &cert_path, &key_path] {
            assert!(
                Command::new("chown")
                    .arg("postgres")
                    .arg(p)
                    .status()
                    .unwrap()
                    .success()
            );
        }
    }
    for setting in [
        format!("ALTER SYSTEM SET ssl_cert_file = '{}'", cert_path.display()),
        format!("ALTER SYSTEM SET ssl_key_file = '{}'", key_path.display()),
        "ALTER SYSTEM SET ssl = on".to_owned(),
        "SELECT pg_reload_conf()".to_owned(),
    ] {
        postgres::query(&conn, "postgres", &setting).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let asset = |mode: &str| {
        json!({"name": mode, "postgres": {"host": "127.0.0.1", "port": pg.port, "user": "lifeboat",
            "sslMode": mode, "databases": ["shop"]}})
    };
    let modes = [
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ];
    // Passes only on an encrypted connection.
    let checks: Vec<Value> = modes
        .iter()
        .map(|m| {
            json!({"name": m, "sql": {"asset": m, "expect": "t",
                "query": "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"}})
        })
        .collect();
    let assets: Vec<Value> = modes.iter().map(|m| asset(m)).collect();
    let (ok, s, _) = agent(
        &["validate", "--execute"],
        &validation(json!(checks), &assets, "3s"),
        None,
        Duration::from_secs(60),
    );
    assert!(!ok);
    // disable and allow connect in plain text (allow tries that first); prefer and require
    // encrypt without checking the certificate; verify-ca and verify-full refuse a certificate
    // of a CA the system does not trust.
    assert_eq!(
        result(&s, "disable").message,
        "the first column of the first row is not the expected value"
    );
    assert!(!result(&s, "allow").passed, "{s:?}");
    assert!(result(&s, "prefer").passed, "{s:?}");
    assert!(result(&s, "require").passed, "{s:?}");
    for verified in ["verify-ca", "verify-full"] {
        let c = result(&s, verified);
        assert!(!c.passed, "{c:?}");
        assert!(c.message.contains("certificate"), "{c:?}");
    }
}
