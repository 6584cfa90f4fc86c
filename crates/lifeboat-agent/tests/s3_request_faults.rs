//! The backup store failing at a chosen request, not only at the first one: an HTTP-aware fault
//! proxy in front of a real `rclone serve s3` fails or stalls the request it is told to (by
//! method and by what its path and query contain, the first time or every time, after some bytes
//! of its body or of its answer). The backup is large enough (about 30 MiB of incompressible
//! data, four 8 MiB parts) that every stage of a multipart upload runs under each fault: a part,
//! `CompleteMultipartUpload`, the metadata PUT; then a bucket that refuses writes but allows
//! reads, a part never answered, a restore's download cut off, and a listing that fails under
//! `prune`. Each time: a clear class, nothing listed that fails `verify`, and nothing left that
//! `prune` does not clear. Every case asserts that its fault fired.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lifeboat_agent::local::{LocalRedis, LocalS3};
use lifeboat_api::agent_result::ErrorClass;
use serde_json::{Value, json};

const AK: &str = LocalS3::ACCESS_KEY;
const SK: &str = LocalS3::SECRET_KEY;

/// What the proxy does to a request its rule matches.
#[derive(Clone, Copy, Debug)]
enum Action {
    /// Answer with this status and S3 error code, the request body read and dropped.
    Fail(u16, &'static str),
    /// Never answer: hold the connection open until the proxy goes.
    Stall,
    /// Read this many bytes of the request body, then drop the connection.
    CutRequestAfter(usize),
    /// Forward, then relay this many bytes of the answer's body and drop the connection.
    CutResponseAfter(usize),
}

/// Which requests a fault hits: one of `methods`, with every one of `target_has` in its path and
/// query, the first `times` of them (every one when `None`).
#[derive(Clone, Debug)]
struct Rule {
    methods: &'static [&'static str],
    target_has: &'static [&'static str],
    times: Option<u32>,
    action: Action,
}

#[derive(Default)]
struct State {
    rule: Mutex<Option<Rule>>,
    matched: AtomicU32,
    fired: AtomicU32,
    stop: AtomicBool,
}

struct FaultProxy {
    port: u16,
    state: Arc<State>,
}

impl FaultProxy {
    fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let s = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(client, upstream, &s));
            }
        });
        FaultProxy { port, state }
    }

    /// Injects `rule` from now on (the counters start again).
    fn set(&self, rule: Option<Rule>) {
        *self.state.rule.lock().unwrap() = rule;
        self.state.matched.store(0, Ordering::SeqCst);
        self.state.fired.store(0, Ordering::SeqCst);
    }

    fn fired(&self) -> u32 {
        self.state.fired.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
    }
}

/// One request per connection (the proxy closes after each answer and says so, so the client's
/// pool opens a new one): read its head, decide, act.
fn serve(client: TcpStream, upstream: u16, state: &State) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let end = line == b"\r\n";
        head.extend_from_slice(&line);
        if end {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut first = text.lines().next().unwrap_or_default().split(' ');
    let (method, target) = (
        first.next().unwrap_or_default().to_owned(),
        first.next().unwrap_or_default().to_owned(),
    );
    let header = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    assert!(
        header("transfer-encoding").is_none(),
        "the proxy reads Content-Length bodies only: {method} {target}"
    );
    let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
    let action = {
        let rule = state.rule.lock().unwrap().clone();
        rule.filter(|r| {
            r.methods.contains(&method.as_str()) && r.target_has.iter().all(|t| target.contains(t))
        })
        .and_then(|r| {
            let n = state.matched.fetch_add(1, Ordering::SeqCst) + 1;
            r.times.is_none_or(|t| n <= t).then_some(r.action)
        })
    };
    if action.is_some() {
        state.fired.fetch_add(1, Ordering::SeqCst);
    }
    let mut client_w = client;
    match action {
        Some(Action::Fail(status, code)) => {
            let _ = std::io::copy(&mut (&mut reader).take(length as u64), &mut std::io::sink());
            let body = format!("<Error><Code>{code}</Code><Message>injected</Message></Error>");
            let _ = write!(
                client_w,
                "HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        Some(Action::Stall) => {
            while !state.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Some(Action::CutRequestAfter(n)) => {
            let _ = std::io::copy(
                &mut (&mut reader).take(n.min(length) as u64),
                &mut std::io::sink(),
            );
        }
        None | Some(Action::CutResponseAfter(_)) => {
            let cut = match action {
                Some(Action::CutResponseAfter(n)) => Some(n),
                _ => None,
            };
            let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            // Ask the server to close after its answer: the end of the answer is then the end of
            // the stream, whatever framing it uses.
            let forwarded: String = text
                .split("\r\n")
                .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                .map(|l| format!("{l}\r\n"))
                .collect::<String>()
                .trim_end()
                .to_owned()
                + "\r\nConnection: close\r\n\r\n";
            if server.write_all(forwarded.as_bytes()).is_err()
                || std::io::copy(&mut (&mut reader).take(length as u64), &mut server).is_err()
            {
                return;
            }
            let mut answer = Vec::new();
            let _ = server.read_to_end(&mut answer);
            let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            let (response_head, body) = answer.split_at(split + 4);
            let response_head = String::from_utf8_lossy(response_head);
            let mut out: String = response_head
                .split("\r\n")
                .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("connection:"))
                .map(|l| format!("{l}\r\n"))
                .collect();
            out.push_str("Connection: close\r\n\r\n");
            let _ = client_w.write_all(out.as_bytes());
            let body = cut.map_or(body, |n| &body[..n.min(body.len())]);
            let _ = client_w.write_all(body);
        }
    }
    let _ = client_w.shutdown(Shutdown::Both);
}

struct World {
    dir: tempfile::TempDir,
    redis: LocalRedis,
    s3: LocalS3,
    proxy: FaultProxy,
}

/// About 30 MiB of incompressible values in Redis: the stored RDB needs four 8 MiB parts.
fn fill(redis: &LocalRedis) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..3 {
        let mut value = vec![0u8; 10 << 20];
        for chunk in value.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let mut child = Command::new("redis-cli")
            .args([
                "-p",
                &redis.port.to_string(),
                "-x",
                "SET",
                &format!("blob:{i}"),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&value).unwrap();
        assert!(child.wait().unwrap().success());
    }
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("secrets/s3-creds");
        std::fs::create_dir_all(&s).unwrap();
        std::fs::write(s.join("AWS_ACCESS_KEY_ID"), AK).unwrap();
        std::fs::write(s.join("AWS_SECRET_ACCESS_KEY"), SK).unwrap();
        let redis = LocalRedis::start().unwrap();
        fill(&redis);
        let s3 = LocalS3::start_with(|root| std::fs::create_dir_all(root.join("backups")).unwrap())
            .unwrap();
        let proxy = FaultProxy::start(s3.port);
        World {
            dir,
            redis,
            s3,
            proxy,
        }
    }

    fn destination(&self) -> Value {
        json!({"s3": {"endpoint": format!("http://127.0.0.1:{}", self.proxy.port), "bucket": "backups",
            "prefix": "lifeboat", "forcePathStyle": true, "credentialsSecret": {"name": "s3-creds"}}})
    }

    fn asset(&self) -> Value {
        json!({"name": "cache", "redis": {"host": "127.0.0.1", "port": self.redis.port}})
    }

    fn policy_file(&self) -> PathBuf {
        let doc = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "shop", "namespace": "team"},
            "spec": {"schedule": "@hourly", "assets": [self.asset()],
                     "retention": {"keepLast": 50}, "destination": self.destination()}});
        let path = self.dir.path().join("policy.yaml");
        std::fs::write(&path, serde_norway::to_string(&doc).unwrap()).unwrap();
        path
    }

    fn agent(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lifeboat-agent"));
        cmd.env_remove("LIFEBOAT_JOB")
            .env(
                "LIFEBOAT_SIGNING_KEY_FILE",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/signing.key"),
            )
            .env("LIFEBOAT_SECRETS_DIR", self.dir.path().join("secrets"))
            .env("LIFEBOAT_TERMINATION_LOG", self.dir.path().join("term"))
            // Short enough for a test to wait out a request that is never answered.
            .env("LIFEBOAT_S3_REQUEST_TIMEOUT", "3s")
            .env("LIFEBOAT_S3_RETRY_TIMEOUT", "8s");
        cmd
    }

    fn backup(&self) -> (Output, Duration) {
        let job = json!({"namespace": "team", "policy": "shop", "asset": self.asset(),
            "destination": self.destination(),
            "compression": {"algorithm": "zstd", "level": 1}, "retention": {"keepLast": 50}});
        let t0 = Instant::now();
        let out = self
            .agent()
            .env("LIFEBOAT_JOB", job.to_string())
            .arg("backup")
            .output()
            .unwrap();
        (out, t0.elapsed())
    }

    fn run(&self, args: &[&str]) -> Output {
        self.agent()
            .args(args)
            .arg("--policy-file")
            .arg(self.policy_file())
            .output()
            .unwrap()
    }

    /// Committed backup ids.
    fn listed(&self) -> BTreeSet<String> {
        let out = self.run(&["list", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<Vec<Value>>(&out.stdout)
            .unwrap()
            .iter()
            .map(|m| m["backupId"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Every file under the bucket, relative to it.
    fn files(&self) -> BTreeSet<String> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    out.insert(p.strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
        let mut out = BTreeSet::new();
        let root = self.s3.root().join("backups");
        walk(&root, &root, &mut out);
        out
    }

    /// After a fault: nothing new listed, everything listed verifies, and prune (idle leftovers
    /// treated as abandoned at once) leaves exactly the files of the listed backups.
    fn nothing_bad_left(&self, case: &str, listed_before: &BTreeSet<String>) {
        assert_eq!(&self.listed(), listed_before, "{case}: the listing changed");
        let out = self.run(&["verify"]);
        assert!(out.status.success(), "{case}: verify: {}", stderr(&out));
        let out = self.run(&["prune", "--execute", "--stale-after", "1s"]);
        assert!(out.status.success(), "{case}: prune: {}", stderr(&out));
        let files = self.files();
        let unlisted: Vec<&String> = files
            .iter()
            .filter(|f| {
                !listed_before
                    .iter()
                    .any(|id| f.contains(&format!("/{id}/")))
            })
            .collect();
        assert!(
            unlisted.is_empty(),
            "{case}: left in the bucket after prune: {unlisted:?}"
        );
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn class(out: &Output) -> Option<ErrorClass> {
    [
        ErrorClass::Storage,
        ErrorClass::Auth,
        ErrorClass::Timeout,
        ErrorClass::NotFound,
        ErrorClass::Integrity,
        ErrorClass::Config,
    ]
    .into_iter()
    .find(|c| out.status.code() == Some(c.exit_code()))
}

#[test]
fn every_stage_of_a_multipart_backup_failing_commits_nothing_and_leaves_nothing_prune_keeps() {
    let w = World::new();
    let (out, took) = w.backup();
    assert!(out.status.success(), "{}", stderr(&out));
    let good = w.listed();
    assert_eq!(good.len(), 1);
    let parts = w
        .files()
        .iter()
        .map(|f| {
            std::fs::metadata(w.s3.root().join("backups").join(f))
                .unwrap()
                .len()
        })
        .max()
        .unwrap()
        .div_ceil(8 << 20);
    assert!(
        parts >= 4,
        "the artifact needs {parts} parts: not a multipart upload worth the name"
    );
    let mut report = vec![format!(
        "undisturbed: committed in {took:.1?}, {parts} parts"
    )];

    let cases: Vec<(&str, Rule, ErrorClass)> = vec![
        (
            "part 2 answers 500 every time",
            Rule {
                methods: &["PUT"],
                target_has: &["partNumber=2&"],
                times: None,
                action: Action::Fail(500, "InternalError"),
            },
            ErrorClass::Storage,
        ),
        (
            "part 3 cut after 1 MiB every time",
            Rule {
                methods: &["PUT"],
                target_has: &["partNumber=3&"],
                times: None,
                action: Action::CutRequestAfter(1 << 20),
            },
            ErrorClass::Storage,
        ),
        (
            "CompleteMultipartUpload answers 500 every time",
            Rule {
                methods: &["POST"],
                target_has: &["uploadId="],
                times: None,
                action: Action::Fail(500, "InternalError"),
            },
            ErrorClass::Storage,
        ),
        (
            "the metadata PUT answers 503 every time",
            Rule {
                methods: &["PUT"],
                target_has: &[".metadata.json"],
                times: None,
                action: Action::Fail(503, "SlowDown"),
            },
            ErrorClass::Storage,
        ),
        (
            "writes refused with 403, reads allowed",
            Rule {
                methods: &["PUT", "POST"],
                target_has: &["/backups/"],
                times: None,
                action: Action::Fail(403, "AccessDenied"),
            },
            ErrorClass::Auth,
        ),
        (
            "part 2 never answered",
            Rule {
                methods: &["PUT"],
                target_has: &["partNumber=2&"],
                times: None,
                action: Action::Stall,
            },
            ErrorClass::Storage,
        ),
    ];
    for (case, rule, expected) in cases {
        w.proxy.set(Some(rule));
        let (out, took) = w.backup();
        let fired = w.proxy.fired();
        w.proxy.set(None);
        assert!(
            fired > 0,
            "{case}: the fault never fired ({})",
            stderr(&out)
        );
        assert_eq!(
            class(&out),
            Some(expected),
            "{case}: exit {:?}: {}",
            out.status.code(),
            stderr(&out)
        );
        assert!(took < Duration::from_secs(60), "{case}: took {took:?}");
        report.push(format!(
            "{case}: {expected:?} after {took:.1?} ({fired} injected)"
        ));
        w.nothing_bad_left(case, &good);
    }

    // Transient: one failed part is retried, and the backup is good.
    w.proxy.set(Some(Rule {
        methods: &["PUT"],
        target_has: &["partNumber=2&"],
        times: Some(1),
        action: Action::Fail(503, "SlowDown"),
    }));
    let (out, took) = w.backup();
    assert_eq!(w.proxy.fired(), 1, "the transient fault did not fire");
    w.proxy.set(None);
    assert!(out.status.success(), "one 503 on part 2: {}", stderr(&out));
    report.push(format!(
        "part 2 answers 503 once: committed after {took:.1?}"
    ));
    let listed = w.listed();
    assert_eq!(listed.len(), 2);
    let out = w.run(&["verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    eprintln!("{}", report.join("\n"));
}

#[test]
fn a_restore_whose_download_is_cut_fails_before_the_target_is_touched() {
    let w = World::new();
    let (out, _) = w.backup();
    assert!(out.status.success(), "{}", stderr(&out));
    let id = w.listed().into_iter().next().unwrap();
    let target = tempfile::tempdir().unwrap();
    std::fs::write(target.path().join("dump.rdb"), b"the target's own data").unwrap();
    let restore = |w: &World| {
        let job = json!({"namespace": "team", "policy": "shop", "backupId": id, "asset": w.asset(),
            "target": {"asset": "cache", "redis": {"host": "127.0.0.1", "port": w.redis.port,
                "dataDir": target.path()}},
            "location": w.destination(), "options": {}});
        w.agent()
            .env("LIFEBOAT_JOB", job.to_string())
            .args(["restore", "--execute"])
            .output()
            .unwrap()
    };
    w.proxy.set(Some(Rule {
        methods: &["GET"],
        target_has: &[".rdb"],
        times: None,
        action: Action::CutResponseAfter(2 << 20),
    }));
    let out = restore(&w);
    let fired = w.proxy.fired();
    w.proxy.set(None);
    assert!(fired > 0, "the download was never cut: {}", stderr(&out));
    assert!(
        !out.status.success(),
        "a cut download restored: {}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(target.path().join("dump.rdb")).unwrap(),
        b"the target's own data",
        "the target was touched"
    );
    assert_eq!(
        std::fs::read_dir(target.path()).unwrap().count(),
        1,
        "a file was left in the target"
    );
    eprintln!(
        "download cut after 2 MiB ({fired} times): exit {:?}: {}",
        out.status.code(),
        stderr(&out)
    );
}

#[test]
fn a_listing_that_fails_deletes_nothing() {
    let w = World::new();
    for _ in 0..3 {
        let (out, _) = w.backup();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let before = w.files();
    let doc = json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
        "metadata": {"name": "shop", "namespace": "team"},
        "spec": {"schedule": "@hourly", "assets": [w.asset()],
                 "retention": {"keepLast": 1, "maxDeletePercent": 100}, "destination": w.destination()}});
    let strict = w.dir.path().join("strict.yaml");
    std::fs::write(&strict, serde_norway::to_string(&doc).unwrap()).unwrap();
    w.proxy.set(Some(Rule {
        methods: &["GET"],
        target_has: &["list-type=2"],
        times: None,
        action: Action::Fail(500, "InternalError"),
    }));
    let out = w
        .agent()
        .args(["prune", "--execute", "--policy-file"])
        .arg(&strict)
        .output()
        .unwrap();
    let fired = w.proxy.fired();
    w.proxy.set(None);
    assert!(fired > 0, "the listing never failed");
    assert!(
        !out.status.success(),
        "prune went on without a listing: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(w.files(), before, "a failed listing deleted something");
    // The same prune with a working listing does delete: the rule was able to.
    let out = w
        .agent()
        .args(["prune", "--execute", "--policy-file"])
        .arg(&strict)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(w.listed().len(), 1);
}

/// A tmpfs of `size` mounted on a new directory, unmounted on drop. Mounting needs root, which
/// `make test` has (the node needs it too): without it this test fails rather than pass untried.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size}"))
            .arg("lifeboat-test")
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot mount a tmpfs at {} (run as root)", at.display());
        SmallDisk(at.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_tmpdir_fails_verify_and_restore_cleanly_and_leaves_nothing() {
    let w = World::new();
    let (out, _) = w.backup();
    assert!(out.status.success(), "{}", stderr(&out));
    let id = w.listed().into_iter().next().unwrap();
    // 4 MiB of scratch for a 30 MiB backup: what an emptyDir with a sizeLimit, or a node's full
    // disk, gives a restore that stages its download.
    let tmp = SmallDisk::mount(&w.dir.path().join("tmp"), "4m");

    let out = w
        .agent()
        .env("TMPDIR", &tmp.0)
        .arg("verify")
        .arg("--policy-file")
        .arg(w.policy_file())
        .output()
        .unwrap();
    assert_eq!(
        class(&out),
        Some(ErrorClass::Storage),
        "verify: exit {:?}: {}",
        out.status.code(),
        stderr(&out)
    );
    assert!(
        stderr(&out).to_lowercase().contains("no space left"),
        "verify: {}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_dir(&tmp.0).unwrap().count(),
        0,
        "verify left scratch files behind"
    );

    let target = tempfile::tempdir().unwrap();
    std::fs::write(target.path().join("dump.rdb"), b"the target's own data").unwrap();
    let job = json!({"namespace": "team", "policy": "shop", "backupId": id, "asset": w.asset(),
        "target": {"asset": "cache", "redis": {"host": "127.0.0.1", "port": w.redis.port,
            "dataDir": target.path()}},
        "location": w.destination(), "options": {}});
    let out = w
        .agent()
        .env("TMPDIR", &tmp.0)
        .env("LIFEBOAT_JOB", job.to_string())
        .args(["restore", "--execute"])
        .output()
        .unwrap();
    assert_eq!(
        class(&out),
        Some(ErrorClass::Storage),
        "restore: exit {:?}: {}",
        out.status.code(),
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(target.path().join("dump.rdb")).unwrap(),
        b"the target's own data",
        "the target was touched"
    );
    assert_eq!(
        std::fs::read_dir(&tmp.0).unwrap().count(),
        0,
        "restore left scratch files behind"
    );
    // With room, the same backup verifies: the failure was the full scratch space.
    drop(tmp);
    let out = w.run(&["verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
