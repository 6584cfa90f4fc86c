//! The object-storage asset end to end, as the operator runs the agent (a LIFEBOAT_JOB document
//! and Secret keys as files), against a real S3 server on loopback (`rclone serve s3`, whose
//! buckets are directories: the test writes the source objects and reads the restored ones on
//! disk, byte for byte).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lifeboat_agent::local::free_port;
use lifeboat_api::agent_result::{AgentSummary, BackupMetadata, ErrorClass};
use serde_json::{Value, json};

const AK: &str = "lifeboat-ak";
const SK: &str = "lifeboat-sk-0123456789";

struct S3Server {
    child: Child,
    port: u16,
    root: tempfile::TempDir,
}

impl S3Server {
    /// Starts rclone on a root whose buckets (directories) `fill` has already populated: its
    /// directory cache would hide files written behind its back later.
    fn start(fill: impl FnOnce(&Path)) -> S3Server {
        let root = tempfile::tempdir().unwrap();
        fill(root.path());
        let port = free_port().unwrap();
        let child = Command::new("rclone")
            .args(["serve", "s3", "--addr"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--auth-key", &format!("{AK},{SK}"), "--config", "/dev/null"])
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

    fn bucket(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn location(&self, bucket: &str, prefix: &str, secret: &str) -> Value {
        json!({"endpoint": format!("http://127.0.0.1:{}", self.port), "bucket": bucket,
               "prefix": prefix, "forcePathStyle": true, "credentialsSecret": {"name": secret}})
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two Secrets: `src-creds` for the data bucket (with `source_sk`), `s3-creds` for backups.
fn secrets(dir: &Path, source_sk: &str) -> PathBuf {
    for (name, sk) in [("src-creds", source_sk), ("s3-creds", SK)] {
        let s = dir.join("secrets").join(name);
        std::fs::create_dir_all(&s).unwrap();
        std::fs::write(s.join("AWS_ACCESS_KEY_ID"), format!("{AK}\n")).unwrap();
        std::fs::write(s.join("AWS_SECRET_ACCESS_KEY"), format!("{sk}\n")).unwrap();
    }
    dir.join("secrets")
}

fn run(doc: &Value, verb: &[&str], secrets: &Path, dir: &Path) -> (Output, Option<AgentSummary>) {
    let term = dir.join("term");
    let _ = std::fs::remove_file(&term);
    let out = agent_command()
        .env("LIFEBOAT_JOB", doc.to_string())
        .env("LIFEBOAT_SECRETS_DIR", secrets)
        .env("LIFEBOAT_TERMINATION_LOG", &term)
        .args(verb)
        .arg("--dir")
        .arg(dir.join("backups"))
        .output()
        .unwrap();
    let summary = std::fs::read_to_string(&term)
        .ok()
        .and_then(|t| AgentSummary::from_termination_message(&t));
    (out, summary)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every file under `dir`, by path relative to it.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// A source with nested keys, an empty object, 12 MiB of incompressible bytes (a multipart
/// upload on restore), a unicode key, a long key and characters (`#`, space) object_store would
/// percent-encode if the keys went through `Path::from`.
fn fill_source(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut objects = BTreeMap::new();
    let mut noise = Vec::with_capacity(12 << 20);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while noise.len() < 12 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    let long = format!("deep/{}/leaf.txt", "segment".repeat(20));
    for (key, body) in [
        ("index.html", b"<html>shop</html>".to_vec()),
        ("a/b/c/nested.json", br#"{"nested": true}"#.to_vec()),
        ("empty.txt", Vec::new()),
        ("blobs/random.bin", noise),
        ("ünïcødé/ファイル #1.txt", "héllo wörld".as_bytes().to_vec()),
        (long.as_str(), b"long key".to_vec()),
    ] {
        let path = root.join("source/data").join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &body).unwrap();
        objects.insert(key.to_owned(), body);
    }
    // Outside the prefix: never backed up.
    std::fs::write(root.join("source/outside.txt"), b"not in the prefix").unwrap();
    std::fs::create_dir_all(root.join("source/data-sibling")).unwrap();
    std::fs::write(root.join("source/data-sibling/x.txt"), b"a sibling prefix").unwrap();
    std::fs::create_dir_all(root.join("source/nothing-here")).unwrap();
    // The restore targets, one with an object the restore must leave alone.
    std::fs::create_dir_all(root.join("restored/copy/keep")).unwrap();
    std::fs::write(root.join("restored/copy/keep/me.txt"), b"extra").unwrap();
    std::fs::create_dir_all(root.join("untouched")).unwrap();
    std::fs::create_dir_all(root.join("backups")).unwrap();
    objects
}

fn backup_job(s3: &S3Server, prefix: &str, destination: Value, allow_empty: bool) -> Value {
    json!({"namespace": "n", "policy": "media", "destination": destination,
           "asset": {"name": "assets", "objectStorage": {
               "endpoint": format!("http://127.0.0.1:{}", s3.port), "bucket": "source", "prefix": prefix,
               "forcePathStyle": true, "credentialsSecret": {"name": "src-creds"}, "allowEmpty": allow_empty}},
           "compression": {"algorithm": "zstd", "level": 3}, "retention": {"keepLast": 5, "minKeep": 1}})
}

fn restore_job(backup: &Value, target: Option<Value>) -> Value {
    let mut doc = json!({"namespace": "n", "policy": "media", "backupId": "latest",
        "asset": backup["asset"], "location": backup["destination"], "options": {}});
    if let Some(t) = target {
        doc["target"] = json!({"asset": "assets", "objectStorage": t});
    }
    doc
}

fn metadata(dir: &Path) -> BackupMetadata {
    let shop = dir.join("backups/n/media");
    let id = std::fs::read_dir(&shop)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    serde_json::from_slice(&std::fs::read(id.join("assets.metadata.json")).unwrap()).unwrap()
}

#[test]
fn a_bucket_round_trips_through_s3_and_a_directory_and_corruption_never_reaches_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = BTreeMap::new();
    let s3 = S3Server::start(|root| expected = fill_source(root));
    let secrets = secrets(dir.path(), SK);

    // To the S3 destination.
    let to_s3 = backup_job(
        &s3,
        "data",
        json!({"s3": s3.location("backups", "lifeboat", "s3-creds")}),
        false,
    );
    let started = jiff::Timestamp::now();
    let (out, summary) = run(&to_s3, &["backup"], &secrets, dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let summary = summary.unwrap();
    assert!(summary.ok);
    assert!(summary.snapshot_time.unwrap() >= started);
    let id = summary.backup_id.unwrap();
    let stored = s3.bucket("backups/lifeboat/n/media").join(&id);
    let meta: BackupMetadata =
        serde_json::from_slice(&std::fs::read(stored.join("assets.metadata.json")).unwrap())
            .unwrap();
    let names: Vec<&str> = meta.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        ["assets.objects.tar.zst", "assets.manifest.jsonl.zst"]
    );
    assert_eq!(meta.kind.as_str(), "objectStorage");
    assert!(
        meta.source
            .starts_with("s3://source/data at http://127.0.0.1:")
    );
    assert!(meta.snapshot_time <= meta.finished_at);
    for a in &meta.artifacts {
        assert_eq!(
            std::fs::metadata(stored.join(&a.name)).unwrap().len(),
            a.stored_bytes
        );
    }
    let text_all = format!("{}{}", text(&out), serde_json::to_string(&meta).unwrap());
    assert!(
        !text_all.contains(SK),
        "no secret key in output or metadata"
    );
    // The manifest names every object with its content's sha256.
    let manifest =
        zstd::decode_all(&std::fs::read(stored.join("assets.manifest.jsonl.zst")).unwrap()[..])
            .unwrap();
    let lines: Vec<Value> = String::from_utf8(manifest)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["manifest"], 1);
    let keys: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys.iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        expected.keys().map(String::as_str).collect()
    );
    let empty = lines.iter().find(|l| l["key"] == "empty.txt").unwrap();
    assert_eq!(empty["size"], 0);
    assert_eq!(
        empty["sha256"],
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );

    // Restore from S3 into another bucket and prefix: every object byte-equal, nothing deleted.
    let target = s3.location("restored", "copy", "src-creds");
    let (out, _) = run(
        &restore_job(&to_s3, Some(target)),
        &["restore", "--execute"],
        &secrets,
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("6 objects"), "{}", text(&out));
    let mut restored = files(&s3.bucket("restored/copy"));
    assert_eq!(
        restored.remove("keep/me.txt").as_deref(),
        Some(&b"extra"[..])
    );
    assert_eq!(restored, expected);

    // To a directory: verify passes; a flipped byte fails verify and the restore (Integrity),
    // and the target bucket is never written.
    let to_dir = backup_job(
        &s3,
        "data",
        json!({"volume": {"claimName": "backups"}}),
        false,
    );
    let (out, _) = run(&to_dir, &["backup"], &secrets, dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let verify = |dir: &Path| {
        agent_command()
            .env_remove("LIFEBOAT_JOB")
            .args(["verify", "--policy", "media", "--dir"])
            .arg(dir.join("backups"))
            .output()
            .unwrap()
    };
    let ok = verify(dir.path());
    assert!(ok.status.success(), "{}", text(&ok));
    let meta = metadata(dir.path());
    let backup_dir = dir.path().join("backups/n/media").join(&meta.backup_id);
    let tar = backup_dir.join("assets.objects.tar.zst");
    let pristine = std::fs::read(&tar).unwrap();
    let mut flipped = pristine.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x20;
    std::fs::write(&tar, &flipped).unwrap();
    let bad = verify(dir.path());
    assert_eq!(
        bad.status.code(),
        Some(ErrorClass::Integrity.exit_code()),
        "{}",
        text(&bad)
    );
    let into_untouched = restore_job(&to_dir, Some(s3.location("untouched", "x", "src-creds")));
    let (out, summary) = run(
        &into_untouched,
        &["restore", "--execute"],
        &secrets,
        dir.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(ErrorClass::Integrity.exit_code()),
        "{}",
        text(&out)
    );
    assert_eq!(summary.unwrap().error_class, Some(ErrorClass::Integrity));
    assert!(files(&s3.bucket("untouched")).is_empty(), "target touched");
    // Restored pristine, the same backup restores into that bucket.
    std::fs::write(&tar, &pristine).unwrap();
    let (out, _) = run(
        &into_untouched,
        &["restore", "--execute"],
        &secrets,
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(files(&s3.bucket("untouched/x")), expected);
}

#[test]
fn an_empty_source_is_refused_unless_allowed_and_a_wrong_key_is_auth() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(|root| {
        fill_source(root);
    });
    let secrets_ok = secrets(dir.path(), SK);
    let volume = json!({"volume": {"claimName": "backups"}});
    let listed = |dir: &Path| {
        let out = agent_command()
            .env_remove("LIFEBOAT_JOB")
            .args(["list", "--policy", "media", "--json", "--dir"])
            .arg(dir.join("backups"))
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };

    let empty = backup_job(&s3, "nothing-here", volume.clone(), false);
    let (out, summary) = run(&empty, &["backup"], &secrets_ok, dir.path());
    assert_eq!(
        out.status.code(),
        Some(ErrorClass::NotFound.exit_code()),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("allowEmpty"), "{}", text(&out));
    assert_eq!(summary.unwrap().error_class, Some(ErrorClass::NotFound));
    assert_eq!(listed(dir.path()), 0);
    let leftovers = files(&dir.path().join("backups/n/media"));
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A bucket that does not exist: NotFound too, never an empty backup.
    let mut missing = empty.clone();
    missing["asset"]["objectStorage"]["bucket"] = json!("no-such-bucket");
    missing["asset"]["objectStorage"]["allowEmpty"] = json!(true);
    let (out, summary) = run(&missing, &["backup"], &secrets_ok, dir.path());
    assert_eq!(
        summary.map(|s| s.error_class),
        Some(Some(ErrorClass::NotFound)),
        "{}",
        text(&out)
    );
    assert_eq!(listed(dir.path()), 0);

    let allowed = backup_job(&s3, "nothing-here", volume.clone(), true);
    let (out, _) = run(&allowed, &["backup"], &secrets_ok, dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(listed(dir.path()), 1);
    let (out, _) = run(
        &restore_job(&allowed, Some(s3.location("untouched", "", "src-creds"))),
        &["restore", "--execute"],
        &secrets_ok,
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("0 objects"), "{}", text(&out));

    // A wrong secret key for the source bucket: Auth, nothing committed, the key never shown.
    let secrets_bad = secrets(&dir.path().join("bad"), "not-the-secret-key");
    let job = backup_job(&s3, "data", volume, false);
    let (out, summary) = run(&job, &["backup"], &secrets_bad, dir.path());
    assert_eq!(
        out.status.code(),
        Some(ErrorClass::Auth.exit_code()),
        "{}",
        text(&out)
    );
    let summary = summary.unwrap();
    assert_eq!(summary.error_class, Some(ErrorClass::Auth));
    assert!(!text(&out).contains("not-the-secret-key"));
    assert!(
        !summary
            .message
            .unwrap_or_default()
            .contains("not-the-secret-key")
    );
    assert_eq!(listed(dir.path()), 1);
    // A wrong key for the restore target: Auth, and nothing lands there.
    let (out, _) = run(&job, &["backup"], &secrets_ok, dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let (out, _) = run(
        &restore_job(&job, Some(s3.location("untouched", "y", "src-creds"))),
        &["restore", "--execute"],
        &secrets_bad,
        dir.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(ErrorClass::Auth.exit_code()),
        "{}",
        text(&out)
    );
    assert!(files(&s3.bucket("untouched")).is_empty());
}

/// Another backup's artifacts, each valid in itself (a real tar and its own manifest), put in
/// place of one backup's: the tar alone, the manifest alone, or both together (consistent with
/// each other, not with the signed metadata). `verify` and `restore --execute` refuse each with
/// the integrity exit code, and the target bucket gets nothing.
#[test]
fn a_swapped_bucket_artifact_is_refused_before_the_target_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = BTreeMap::new();
    let s3 = S3Server::start(|root| {
        expected = fill_source(root);
        let other = root.join("source/other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("index.html"), b"<html>another shop</html>").unwrap();
    });
    let secrets = secrets(dir.path(), SK);
    let volume = json!({"volume": {"claimName": "backups"}});
    let backup = |prefix: &str| {
        let (out, summary) = run(
            &backup_job(&s3, prefix, volume.clone(), false),
            &["backup"],
            &secrets,
            dir.path(),
        );
        assert!(out.status.success(), "{}", text(&out));
        summary.unwrap().backup_id.unwrap()
    };
    let a = backup("data");
    let b = backup("other");
    assert_ne!(a, b);
    let slot = |id: &str| dir.path().join("backups/n/media").join(id);
    let verify = || {
        agent_command()
            .env_remove("LIFEBOAT_JOB")
            .args(["verify", "--policy", "media", "--backup", &a, "--dir"])
            .arg(dir.path().join("backups"))
            .output()
            .unwrap()
    };
    let mut restore = restore_job(
        &backup_job(&s3, "data", volume.clone(), false),
        Some(s3.location("untouched", "x", "src-creds")),
    );
    restore["backupId"] = json!(a);
    let tar = "assets.objects.tar.zst";
    let manifest = "assets.manifest.jsonl.zst";
    for swapped in [&[tar][..], &[manifest], &[tar, manifest]] {
        let pristine: Vec<Vec<u8>> = swapped
            .iter()
            .map(|n| std::fs::read(slot(&a).join(n)).unwrap())
            .collect();
        for n in swapped {
            let other = std::fs::read(slot(&b).join(n)).unwrap();
            assert_ne!(std::fs::read(slot(&a).join(n)).unwrap(), other);
            std::fs::write(slot(&a).join(n), other).unwrap();
        }
        let out = verify();
        assert_eq!(
            out.status.code(),
            Some(ErrorClass::Integrity.exit_code()),
            "{swapped:?}: {}",
            text(&out)
        );
        let (out, summary) = run(&restore, &["restore", "--execute"], &secrets, dir.path());
        assert_eq!(
            out.status.code(),
            Some(ErrorClass::Integrity.exit_code()),
            "{swapped:?}: {}",
            text(&out)
        );
        assert_eq!(summary.unwrap().error_class, Some(ErrorClass::Integrity));
        assert!(
            files(&s3.bucket("untouched")).is_empty(),
            "{swapped:?}: target touched"
        );
        for (n, bytes) in swapped.iter().zip(pristine) {
            std::fs::write(slot(&a).join(n), bytes).unwrap();
        }
    }
    // Put back, the same backup verifies and restores: the refusals were the swaps.
    let out = verify();
    assert!(out.status.success(), "{}", text(&out));
    let (out, _) = run(&restore, &["restore", "--execute"], &secrets, dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(files(&s3.bucket("untouched/x")), expected);
}

#[test]
fn an_encrypted_bucket_backup_is_ciphertext_and_restores_only_with_the_identity() {
    use age::secrecy::ExposeSecret;
    let dir = tempfile::tempdir().unwrap();
    let mut expected = BTreeMap::new();
    let s3 = S3Server::start(|root| expected = fill_source(root));
    let secrets = secrets(dir.path(), SK);
    let mut private = Vec::new();
    let mut public = String::new();
    for name in ["age-key", "other-key"] {
        let key = age::x25519::Identity::generate();
        let text = key.to_string().expose_secret().to_owned();
        std::fs::create_dir_all(secrets.join(name)).unwrap();
        std::fs::write(secrets.join(name).join("identity"), format!("{text}\n")).unwrap();
        if public.is_empty() {
            public = key.to_public().to_string();
        }
        private.push(text);
    }
    let mut job = backup_job(
        &s3,
        "data",
        json!({"volume": {"claimName": "backups"}}),
        false,
    );
    job["encryption"] = json!({"recipients": [public]});
    let (out, _) = run(&job, &["backup"], &secrets, dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let meta = metadata(dir.path());
    let names: Vec<&str> = meta.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "assets.objects.tar.zst.age",
            "assets.manifest.jsonl.zst.age"
        ]
    );
    assert_eq!(
        meta.encryption.as_ref().unwrap().recipients,
        [public.clone()]
    );
    let backup_dir = dir.path().join("backups/n/media").join(&meta.backup_id);
    for a in &meta.artifacts {
        let bytes = std::fs::read(backup_dir.join(&a.name)).unwrap();
        assert!(bytes.starts_with(b"age-encryption.org/v1\n"), "{}", a.name);
        for plain in ["<html>shop</html>", "empty.txt", "index.html"] {
            assert!(
                !bytes.windows(plain.len()).any(|w| w == plain.as_bytes()),
                "{} holds {plain:?} in the clear",
                a.name
            );
        }
    }
    let everything = format!(
        "{}{}",
        text(&out),
        std::fs::read_to_string(backup_dir.join("assets.metadata.json")).unwrap()
    );
    assert!(!everything.contains("AGE-SECRET-KEY"), "{everything}");
    let verified = agent_command()
        .env_remove("LIFEBOAT_JOB")
        .env("LIFEBOAT_SECRETS_DIR", "/nonexistent")
        .args(["verify", "--policy", "media", "--dir"])
        .arg(dir.path().join("backups"))
        .output()
        .unwrap();
    assert!(verified.status.success(), "{}", text(&verified));

    let restore = |identity: &str| {
        let mut doc = restore_job(&job, Some(s3.location("untouched", "enc", "src-creds")));
        doc["identitySecret"] = json!({"name": identity, "key": "identity"});
        doc
    };
    let (out, summary) = run(
        &restore("other-key"),
        &["restore", "--execute"],
        &secrets,
        dir.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(ErrorClass::Auth.exit_code()),
        "{}",
        text(&out)
    );
    assert_eq!(summary.unwrap().error_class, Some(ErrorClass::Auth));
    assert!(files(&s3.bucket("untouched")).is_empty(), "target touched");
    for p in &private {
        assert!(!text(&out).contains(&p[15..]));
    }
    let (out, _) = run(
        &restore("age-key"),
        &["restore", "--execute"],
        &secrets,
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(files(&s3.bucket("untouched/enc")), expected);
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
