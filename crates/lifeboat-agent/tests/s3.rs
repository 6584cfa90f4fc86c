//! Backups to S3-compatible storage, as the operator runs them (a LIFEBOAT_JOB document and
//! Secret keys as files), against a real S3 server on loopback (`rclone serve s3`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lifeboat_agent::local::{LocalPostgres, free_port};
use lifeboat_agent::postgres;
use lifeboat_api::agent_result::{AgentSummary, ErrorClass};
use serde_json::json;

struct S3Server {
    child: Child,
    port: u16,
    root: tempfile::TempDir,
}

impl S3Server {
    fn start() -> S3Server {
        Self::start_with(&[])
    }

    /// Served over TLS with the certificate and key in these PEM files.
    fn start_tls(cert: &Path, key: &Path) -> S3Server {
        Self::start_with(&[
            "--cert".as_ref(),
            cert.as_os_str(),
            "--key".as_ref(),
            key.as_os_str(),
        ])
    }

    fn start_with(extra: &[&std::ffi::OsStr]) -> S3Server {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("backups")).unwrap();
        let port = free_port().unwrap();
        let child = Command::new("rclone")
            .args(["serve", "s3", "--addr"])
            .arg(format!("127.0.0.1:{port}"))
            .args([
                "--auth-key",
                "lifeboat-ak,lifeboat-sk-0123456789",
                "--config",
                "/dev/null",
            ])
            .args(extra)
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rclone (installed by hack/install-deps.sh)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "rclone serve s3 did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        S3Server { child, port, root }
    }

    fn bucket(&self) -> PathBuf {
        self.root.path().join("backups")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn secrets(dir: &Path, secret_key: &str) -> PathBuf {
    let s = dir.join("secrets/s3-creds");
    std::fs::create_dir_all(&s).unwrap();
    std::fs::write(s.join("AWS_ACCESS_KEY_ID"), "lifeboat-ak\n").unwrap();
    std::fs::write(s.join("AWS_SECRET_ACCESS_KEY"), secret_key).unwrap();
    dir.join("secrets")
}

fn destination(s3: &S3Server) -> serde_json::Value {
    json!({"s3": {"endpoint": format!("http://127.0.0.1:{}", s3.port), "bucket": "backups", "prefix": "lifeboat",
                  "forcePathStyle": true, "credentialsSecret": {"name": "s3-creds"}}})
}

fn run(
    doc: serde_json::Value,
    verb: &[&str],
    secrets: &Path,
    term: &Path,
) -> (std::process::Output, Option<AgentSummary>) {
    let out = agent_command()
        .env("LIFEBOAT_JOB", doc.to_string())
        .env("LIFEBOAT_SECRETS_DIR", secrets)
        .env("LIFEBOAT_TERMINATION_LOG", term)
        .args(verb)
        .output()
        .unwrap();
    let summary = std::fs::read_to_string(term)
        .ok()
        .and_then(|t| AgentSummary::from_termination_message(&t));
    (out, summary)
}

const FINGERPRINT: &str =
    "SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY id)) FROM t";

#[test]
fn backup_to_s3_then_restore_from_it_and_refuse_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start();
    let pg = LocalPostgres::start().unwrap();
    let conn = pg.conn();
    postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
    // Several MB of poorly compressible rows, so the upload is multipart.
    postgres::query(&conn, "shop", "CREATE TABLE t (id serial PRIMARY KEY, v text); INSERT INTO t (v) SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 200) g, generate_series(1, 3000) i GROUP BY i").unwrap();
    let expected = postgres::query(&conn, "shop", FINGERPRINT).unwrap();
    let secrets_dir = secrets(dir.path(), "lifeboat-sk-0123456789\n");
    let term = dir.path().join("term");
    let asset = json!({"name": "orders-db", "postgres": {"host": "127.0.0.1", "port": pg.port, "user": "lifeboat", "sslMode": "disable", "databases": ["shop"]}});
    let job = json!({"namespace": "n", "policy": "shop", "asset": asset, "destination": destination(&s3),
                     "compression": {"algorithm": "zstd", "level": 3}, "retention": {"keepLast": 5, "minKeep": 1}});

    let (out, summary) = run(job.clone(), &["backup"], &secrets_dir, &term);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = summary.unwrap();
    assert!(summary.ok);
    let id = summary.backup_id.clone().unwrap();
    let object_dir = s3.bucket().join("lifeboat/n/shop").join(&id);
    assert!(
        object_dir.join("orders-db.metadata.json").is_file(),
        "metadata committed in the bucket"
    );
    let artifact = object_dir.join("orders-db.shop.pgdump.zst");
    assert!(
        std::fs::metadata(&artifact).unwrap().len() > 5 * 1024 * 1024,
        "a multipart-sized upload"
    );
    assert_eq!(
        summary.stored_bytes,
        Some(std::fs::metadata(&artifact).unwrap().len())
    );

    // Restore from the bucket into another database.
    let restore = json!({"namespace": "n", "policy": "shop", "backupId": "latest", "asset": asset,
        "target": {"asset": "orders-db", "postgres": {"host": "127.0.0.1", "port": pg.port, "user": "lifeboat", "sslMode": "disable", "database": "shop_copy", "createDatabase": true}},
        "location": destination(&s3), "options": {}});
    let (out, _) = run(
        restore.clone(),
        &["restore", "--execute"],
        &secrets_dir,
        &term,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        postgres::query(&conn, "shop_copy", FINGERPRINT).unwrap(),
        expected
    );

    // A flipped byte in the bucket: refused before the target is touched.
    let mut bytes = std::fs::read(&artifact).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&artifact, bytes).unwrap();
    let mut into_new = restore.clone();
    into_new["target"]["postgres"]["database"] = json!("shop_never");
    let (out, summary) = run(into_new, &["restore", "--execute"], &secrets_dir, &term);
    assert_eq!(
        out.status.code(),
        Some(ErrorClass::Integrity.exit_code()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(summary.unwrap().error_class, Some(ErrorClass::Integrity));
    assert!(
        postgres::query(&conn, "shop_never", "SELECT 1").is_err(),
        "the target was never created"
    );

    // Wrong credentials: an auth failure, and nothing new in the bucket.
    let bad = secrets(&dir.path().join("bad"), "not-the-key");
    let (out, summary) = run(job, &["backup"], &bad, &term);
    assert_eq!(
        out.status.code(),
        Some(ErrorClass::Auth.exit_code()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(summary.unwrap().error_class, Some(ErrorClass::Auth));
    assert_eq!(
        std::fs::read_dir(s3.bucket().join("lifeboat/n/shop"))
            .unwrap()
            .count(),
        1
    );
}

/// A CA made for the test and a certificate it issued for 127.0.0.1: (CA PEM, cert file, key
/// file).
fn private_ca(dir: &Path) -> (String, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (ca.pem(), cert_file, key_file)
}

#[test]
fn a_bucket_behind_a_private_ca_is_reached_with_its_bundle_and_refused_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(dir.path());
    let s3 = S3Server::start_tls(&cert, &key);
    let secrets_dir = secrets(dir.path(), "lifeboat-sk-0123456789\n");
    let ca_dir = secrets_dir.join("store-ca");
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::write(ca_dir.join("ca.crt"), &ca).unwrap();
    let pg = LocalPostgres::start().unwrap();
    let conn = pg.conn();
    postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
    postgres::query(&conn, "shop", "CREATE TABLE t (id serial PRIMARY KEY, v text); INSERT INTO t (v) SELECT md5(i::text) FROM generate_series(1, 500) i").unwrap();
    let expected = postgres::query(&conn, "shop", FINGERPRINT).unwrap();
    let term = dir.path().join("term");
    let mut destination = destination(&s3);
    destination["s3"]["endpoint"] = json!(format!("https://127.0.0.1:{}", s3.port));
    let mut trusted = destination.clone();
    trusted["s3"]["caBundleSecret"] = json!({"name": "store-ca", "key": "ca.crt"});
    let asset = json!({"name": "orders-db", "postgres": {"host": "127.0.0.1", "port": pg.port, "user": "lifeboat", "sslMode": "disable", "databases": ["shop"]}});
    let job = |destination: &serde_json::Value| {
        json!({"namespace": "n", "policy": "shop", "asset": asset, "destination": destination,
               "compression": {"algorithm": "zstd", "level": 3}, "retention": {"keepLast": 5, "minKeep": 1}})
    };

    // Without the bundle: the certificate is not trusted, nothing is stored. (object_store
    // retries a failed handshake as any transport error: bounded here to keep the test short.)
    let out = agent_command()
        .env("LIFEBOAT_JOB", job(&destination).to_string())
        .env("LIFEBOAT_SECRETS_DIR", &secrets_dir)
        .env("LIFEBOAT_TERMINATION_LOG", &term)
        .env("LIFEBOAT_S3_RETRY_TIMEOUT", "3s")
        .arg("backup")
        .output()
        .unwrap();
    let summary = std::fs::read_to_string(&term)
        .ok()
        .and_then(|t| AgentSummary::from_termination_message(&t));
    assert_eq!(
        out.status.code(),
        Some(ErrorClass::TlsUntrusted.exit_code()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = summary.unwrap();
    assert_eq!(summary.error_class, Some(ErrorClass::TlsUntrusted));
    let message = summary.message.clone().unwrap_or_default();
    assert!(
        message.contains("certificate is not trusted") && message.contains("caBundleSecret"),
        "{message}"
    );
    eprintln!("without the bundle: {message}");
    assert!(!s3.bucket().join("lifeboat").exists(), "nothing stored");

    // With it: backed up over TLS and restored from there.
    let (out, summary) = run(job(&trusted), &["backup"], &secrets_dir, &term);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = summary.unwrap().backup_id.unwrap();
    assert!(
        s3.bucket()
            .join("lifeboat/n/shop")
            .join(&id)
            .join("orders-db.metadata.json")
            .is_file()
    );
    let restore = json!({"namespace": "n", "policy": "shop", "backupId": "latest", "asset": asset,
        "target": {"asset": "orders-db", "postgres": {"host": "127.0.0.1", "port": pg.port, "user": "lifeboat", "sslMode": "disable", "database": "shop_copy", "createDatabase": true}},
        "location": trusted, "options": {}});
    let (out, _) = run(restore, &["restore", "--execute"], &secrets_dir, &term);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        postgres::query(&conn, "shop_copy", FINGERPRINT).unwrap(),
        expected
    );
}

/// A loopback listener that counts the connections it is offered: a stand-in address for the
/// instance metadata service or a container credential endpoint, to see whether anything asks.
struct Knocks {
    port: u16,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Knocks {
    fn listen() -> Knocks {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(conn);
            }
        });
        Knocks { port, count }
    }

    fn count(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Without `credentialsSecret` the agent never borrows an identity from where it runs: under
/// the default mode it refuses, under `webIdentity` it takes only a web identity token. The
/// instance metadata service and the EKS container endpoint are pointed (through the variables
/// object_store's `from_env` honours) at loopback listeners that count connections: the agent
/// before this change contacted the metadata one on the first case. Keys for the real server in
/// the pod's environment are never used either.
#[test]
fn without_a_credentials_secret_no_ambient_identity_is_borrowed() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start();
    let pg = LocalPostgres::start().unwrap();
    let conn = pg.conn();
    postgres::query(&conn, "postgres", "CREATE DATABASE shop").unwrap();
    postgres::query(&conn, "shop", "CREATE TABLE t (id int)").unwrap();
    let mut destination = destination(&s3);
    destination["s3"]
        .as_object_mut()
        .unwrap()
        .remove("credentialsSecret");
    let job = json!({"namespace": "n", "policy": "shop", "destination": destination,
        "asset": {"name": "orders-db", "postgres": {"host": "127.0.0.1", "port": pg.port, "user": "lifeboat", "sslMode": "disable", "databases": ["shop"]}},
        "compression": {"algorithm": "zstd", "level": 3}, "retention": {"keepLast": 5, "minKeep": 1}});
    let no_secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&no_secrets).unwrap();
    let term = dir.path().join("term");
    let imds = Knocks::listen();
    let container = Knocks::listen();
    let pod_token = dir.path().join("pod-token");
    std::fs::write(&pod_token, "a-pod-token").unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "a-web-identity-token").unwrap();
    let run = |env: &[(&str, &std::ffi::OsStr)]| {
        let _ = std::fs::remove_file(&term);
        let out = agent_command()
            .env("LIFEBOAT_JOB", job.to_string())
            .env("LIFEBOAT_SECRETS_DIR", &no_secrets)
            .env("LIFEBOAT_TERMINATION_LOG", &term)
            .env("LIFEBOAT_S3_RETRY_TIMEOUT", "2s")
            .env(
                "AWS_METADATA_ENDPOINT",
                format!("http://127.0.0.1:{}", imds.port),
            )
            .envs(env.iter().copied())
            .arg("backup")
            .output()
            .unwrap();
        let summary = std::fs::read_to_string(&term)
            .ok()
            .and_then(|t| AgentSummary::from_termination_message(&t));
        (out, summary)
    };
    let refused = |(out, summary): (std::process::Output, Option<AgentSummary>),
                   class: ErrorClass| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(class.exit_code()), "{stderr}");
        assert_eq!(summary.unwrap().error_class, Some(class), "{stderr}");
    };
    let keys: [(&str, &std::ffi::OsStr); 2] = [
        ("AWS_ACCESS_KEY_ID", "lifeboat-ak".as_ref()),
        ("AWS_SECRET_ACCESS_KEY", "lifeboat-sk-0123456789".as_ref()),
    ];
    let eks = format!("http://127.0.0.1:{}/creds", container.port);
    let eks: [(&str, &std::ffi::OsStr); 2] = [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", eks.as_ref()),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            pod_token.as_os_str(),
        ),
    ];
    let mode = |m: &'static str| ("LIFEBOAT_S3_AMBIENT_IDENTITY", std::ffi::OsStr::new(m));

    // No mode (a Job not made by the operator) and `none`: refused, whatever the environment.
    refused(run(&[]), ErrorClass::AmbientIdentityDisabled);
    refused(run(&[mode("none")]), ErrorClass::AmbientIdentityDisabled);
    refused(run(&keys), ErrorClass::AmbientIdentityDisabled);
    refused(run(&eks), ErrorClass::AmbientIdentityDisabled);
    // `webIdentity` without a token: refused, no other source tried.
    refused(run(&[mode("webIdentity")]), ErrorClass::WebIdentityMissing);
    let with = |extra: &[(&'static str, &'static std::ffi::OsStr)]| {
        let mut env = vec![mode("webIdentity")];
        env.extend_from_slice(extra);
        env
    };
    let mut keys_too = with(&[]);
    keys_too.extend_from_slice(&keys);
    refused(run(&keys_too), ErrorClass::WebIdentityMissing);
    let mut eks_too = with(&[("AWS_ROLE_ARN", "arn:aws:iam::1:role/r".as_ref())]);
    eks_too.extend_from_slice(&eks);
    refused(run(&eks_too), ErrorClass::WebIdentityMissing);
    // A token file named but absent.
    refused(
        run(&with(&[
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r".as_ref()),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent/token".as_ref()),
        ])),
        ErrorClass::WebIdentityMissing,
    );
    // With a token and a role the agent asks STS (unreachable here) and fails, still without
    // the metadata service, the container endpoint or the environment's keys.
    let mut web = vec![
        mode("webIdentity"),
        ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r".as_ref()),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token.as_os_str()),
    ];
    web.extend_from_slice(&keys);
    web.extend_from_slice(&eks);
    let (out, _) = run(&web);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // STS's AssumeRoleWithWebIdentity is a POST (its address is redacted in the message).
    assert!(stderr.contains("Error performing POST"), "{stderr}");

    assert_eq!(imds.count(), 0, "the instance metadata service was asked");
    assert_eq!(container.count(), 0, "the container endpoint was asked");
    // Nothing was written with any identity.
    assert_eq!(std::fs::read_dir(s3.bucket()).unwrap().count(), 0);
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
