//! A Redis restore over the replication protocol against real redis-server processes: the agent
//! serves one full resynchronisation and the target loads the backup as a replica, with no file
//! written into its directory and no restart. Every key type and TTL comes back, AOF targets
//! keep the data across a hard kill, strangers on the listener get nothing, the target's own
//! masterauth comes back in every outcome, and targets that cannot be served are refused before
//! they are changed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lifeboat_agent::local::free_port;
use lifeboat_agent::redis::{Conn, check_rdb};
use lifeboat_agent::redis_load::{Durable, Listener, load};
use lifeboat_api::agent_result::ErrorClass;

struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        let port = free_port().unwrap();
        Server::start_on(dir, port, extra.iter().map(|s| (*s).to_owned()).collect())
    }

    fn start_on(dir: &Path, port: u16, args: Vec<String>) -> Server {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--dir")
            .arg(dir)
            .args([
                "--dbfilename",
                "dump.rdb",
                "--repl-diskless-sync-delay",
                "0",
            ])
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = Server {
            child,
            port,
            dir: dir.to_path_buf(),
            args,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while s.admin().run(0, &["PING"]).ok().as_deref() != Some("PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    /// The default user (full rights).
    fn admin(&self) -> Conn {
        Conn {
            host: "127.0.0.1".into(),
            port: self.port,
            username: None,
            password: None,
            tls: false,
        }
    }

    /// SIGKILL (nothing saved on the way out) and start again on the same directory and port.
    fn kill_and_restart(mut self) -> Server {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let (dir, port, args) = (self.dir.clone(), self.port, std::mem::take(&mut self.args));
        Server::start_on(&dir, port, args)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(s: &Server) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{}/", s.port))
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Keys of every type, some with TTLs, in two databases.
fn write_every_type(s: &Server) {
    let mut c = client(s);
    let q = |c: &mut redis::Connection, args: &[&str]| {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query::<redis::Value>(c).unwrap();
    };
    q(&mut c, &["SET", "s", "string \u{e9}\0bytes"]);
    q(&mut c, &["SET", "s:ttl", "short-lived", "EX", "3000"]);
    q(&mut c, &["SET", "n", "12345"]);
    q(&mut c, &["RPUSH", "l", "a", "b", "c", "a"]);
    q(&mut c, &["SADD", "set", "x", "y", "z"]);
    q(
        &mut c,
        &["ZADD", "z", "1.5", "one", "-2", "two", "3e10", "three"],
    );
    q(&mut c, &["HSET", "h", "f1", "v1", "f2", "v2"]);
    q(&mut c, &["EXPIRE", "h", "5000"]);
    q(&mut c, &["XADD", "stream", "1-1", "k", "v"]);
    q(&mut c, &["XADD", "stream", "2-1", "k2", "v2"]);
    q(&mut c, &["XGROUP", "CREATE", "stream", "g", "0"]);
    q(&mut c, &["PFADD", "hll", "a", "b", "c"]);
    q(&mut c, &["SELECT", "3"]);
    q(&mut c, &["SET", "db3", "other db"]);
    q(&mut c, &["LPUSH", "db3:l", "1"]);
    q(&mut c, &["PEXPIRE", "db3:l", "7000000"]);
}

/// (database, key) to (type, value, TTL).
type Digest = BTreeMap<(u8, Vec<u8>), (String, String, i64)>;

/// Every key of every database: type, a canonical rendering of its value, and its TTL in ms
/// (-1 without one).
fn digest(s: &Server) -> Digest {
    let mut out = BTreeMap::new();
    for db in 0..16u8 {
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{}/{db}", s.port))
            .unwrap()
            .get_connection()
            .unwrap();
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
        for k in keys {
            let t: String = redis::cmd("TYPE").arg(&k).query(&mut c).unwrap();
            let v: redis::Value = match t.as_str() {
                "string" => redis::cmd("GET").arg(&k).query(&mut c).unwrap(),
                "list" => redis::cmd("LRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .query(&mut c)
                    .unwrap(),
                "set" => {
                    let mut m: Vec<Vec<u8>> = redis::cmd("SMEMBERS").arg(&k).query(&mut c).unwrap();
                    m.sort();
                    redis::Value::Array(m.into_iter().map(redis::Value::BulkString).collect())
                }
                "zset" => redis::cmd("ZRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query(&mut c)
                    .unwrap(),
                "hash" => {
                    let mut m: Vec<(Vec<u8>, Vec<u8>)> =
                        redis::cmd("HGETALL").arg(&k).query(&mut c).unwrap();
                    m.sort();
                    redis::Value::Array(
                        m.into_iter()
                            .flat_map(|(a, b)| {
                                [redis::Value::BulkString(a), redis::Value::BulkString(b)]
                            })
                            .collect(),
                    )
                }
                "stream" => {
                    let entries: redis::Value = redis::cmd("XRANGE")
                        .arg(&k)
                        .arg("-")
                        .arg("+")
                        .query(&mut c)
                        .unwrap();
                    let groups: redis::Value = redis::cmd("XINFO")
                        .arg("GROUPS")
                        .arg(&k)
                        .query(&mut c)
                        .unwrap();
                    redis::Value::Array(vec![entries, groups])
                }
                other => panic!("unexpected type {other}"),
            };
            let ttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut c).unwrap();
            out.insert((db, k), (t, format!("{v:?}"), ttl));
        }
    }
    out
}

/// Equal keys, types and values, and TTLs within 10 s of each other.
fn assert_same(before: &Digest, after: &Digest) {
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (k, (t, v, ttl)) in before {
        let (t2, v2, ttl2) = &after[k];
        assert_eq!((t, v), (t2, v2), "{k:?}");
        assert_eq!(*ttl == -1, *ttl2 == -1, "{k:?}: TTL {ttl} vs {ttl2}");
        assert!((ttl - ttl2).abs() < 10_000, "{k:?}: TTL {ttl} vs {ttl2}");
    }
}

/// A source with every type, saved; its RDB copied out and checked (the keys it holds).
fn backup_rdb(scratch: &Path) -> (PathBuf, u64, Digest) {
    let dir = scratch.join("source");
    std::fs::create_dir_all(&dir).unwrap();
    let source = Server::start(&dir, &["--save", ""]);
    write_every_type(&source);
    source.admin().run(0, &["SAVE"]).unwrap();
    let rdb = scratch.join("backup.rdb");
    std::fs::copy(dir.join("dump.rdb"), &rdb).unwrap();
    let keys = check_rdb(&rdb).unwrap();
    (rdb, keys, digest(&source))
}

fn loopback() -> Listener {
    Listener::bind(
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    )
    .unwrap()
}

fn masterauth(s: &Server) -> String {
    s.admin()
        .run(0, &["CONFIG", "GET", "masterauth"])
        .unwrap()
        .lines()
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

fn role(s: &Server) -> String {
    s.admin()
        .run(0, &["ROLE"])
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned()
}

/// A target with other data (a key the backup does not have) and its own masterauth.
fn target(dir: &Path, extra: &[&str]) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    let t = Server::start(dir, extra);
    t.admin().run(0, &["SET", "only-on-target", "x"]).unwrap();
    t.admin()
        .run(0, &["CONFIG", "SET", "masterauth", "the-targets-own"])
        .unwrap();
    t
}

#[test]
fn every_key_type_and_ttl_comes_back_and_survives_a_hard_kill_with_save_points() {
    let scratch = tempfile::tempdir().unwrap();
    let (rdb, keys, before) = backup_rdb(scratch.path());
    assert_eq!(keys as usize, before.len());
    let t = target(&scratch.path().join("target"), &["--save", "3600 1"]);

    let loaded = load(&t.admin(), &rdb, keys, loopback()).unwrap();
    assert_eq!(loaded.keys, keys);
    assert_eq!(loaded.durable, Durable::Saved);
    assert_eq!(loaded.strangers, 0);
    assert_same(&before, &digest(&t));
    assert_eq!(role(&t), "master");
    assert_eq!(masterauth(&t), "the-targets-own");

    let t = t.kill_and_restart();
    assert_same(&before, &digest(&t));
}

#[test]
fn an_appendonly_target_rewrites_its_aof_and_keeps_the_data_across_a_hard_kill() {
    let scratch = tempfile::tempdir().unwrap();
    let (rdb, keys, before) = backup_rdb(scratch.path());
    let t = target(
        &scratch.path().join("target"),
        &["--save", "", "--appendonly", "yes"],
    );

    let loaded = load(&t.admin(), &rdb, keys, loopback()).unwrap();
    assert_eq!(loaded.durable, Durable::AofRewritten);
    assert_same(&before, &digest(&t));

    let t = t.kill_and_restart();
    assert_same(&before, &digest(&t));
    assert_eq!(masterauth(&t), "");
}

/// Reads everything the listener sends a client until it closes the connection.
fn stranger(addr: SocketAddr, send: &'static [u8]) -> std::thread::JoinHandle<Vec<u8>> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(send).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    })
}

#[test]
fn strangers_on_the_listener_get_nothing_and_the_target_still_loads() {
    let scratch = tempfile::tempdir().unwrap();
    let (rdb, keys, before) = backup_rdb(scratch.path());
    let t = target(&scratch.path().join("target"), &["--save", ""]);
    let listener = loopback();
    let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listener.port());
    // Connected before the target is told where to go: the listener takes them first.
    let strangers = [
        stranger(
            addr,
            b"*1\r\n$4\r\nPING\r\n*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n",
        ),
        stranger(
            addr,
            b"*2\r\n$4\r\nAUTH\r\n$5\r\nguess\r\n*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n",
        ),
        stranger(addr, b"SYNC\r\n"),
        stranger(addr, b"*99999\r\n"),
    ];

    let loaded = load(&t.admin(), &rdb, keys, listener).unwrap();
    assert_eq!(loaded.strangers, 4);
    assert_same(&before, &digest(&t));
    let rdb_bytes = std::fs::read(&rdb).unwrap();
    for s in strangers {
        let got = s.join().unwrap();
        let text = String::from_utf8_lossy(&got);
        assert!(
            !text.contains("FULLRESYNC") && !text.contains("REDIS0"),
            "{text}"
        );
        assert!(got.len() < 100 && got.len() < rdb_bytes.len(), "{text}");
    }
}

#[test]
fn a_key_count_that_does_not_match_the_backup_fails_and_the_target_is_itself_again() {
    let scratch = tempfile::tempdir().unwrap();
    let (rdb, keys, _) = backup_rdb(scratch.path());
    let t = target(&scratch.path().join("target"), &["--save", ""]);

    let e = load(&t.admin(), &rdb, keys + 1, loopback()).unwrap_err();
    assert_eq!(e.class, ErrorClass::Integrity, "{e}");
    assert!(
        e.message.contains(&format!("backup has {}", keys + 1)),
        "{e}"
    );
    assert!(!e.message.contains("the-targets-own"), "{e}");
    assert_eq!(role(&t), "master");
    assert_eq!(masterauth(&t), "the-targets-own");
}

/// The target is unchanged: its own key, no backup key, its masterauth, a master.
fn assert_untouched(t: &Server) {
    let d = digest(t);
    assert_eq!(
        d.keys().map(|(_, k)| k.as_slice()).collect::<Vec<_>>(),
        vec![b"only-on-target".as_slice()]
    );
    assert_eq!(masterauth(t), "the-targets-own");
}

#[test]
fn a_target_that_is_itself_a_replica_is_refused_untouched() {
    let scratch = tempfile::tempdir().unwrap();
    let (rdb, keys, _) = backup_rdb(scratch.path());
    let master_dir = scratch.path().join("master");
    std::fs::create_dir_all(&master_dir).unwrap();
    // The target's masterauth is the master's password, as in a real pair.
    let master = Server::start(&master_dir, &["--save", ""]);
    master
        .admin()
        .run(0, &["CONFIG", "SET", "requirepass", "the-targets-own"])
        .unwrap();
    let master_admin = Conn {
        password: Some("the-targets-own".into()),
        ..master.admin()
    };
    master_admin
        .run(0, &["SET", "only-on-target", "x"])
        .unwrap();
    let t = target(&scratch.path().join("target"), &["--save", ""]);
    t.admin()
        .run(0, &["REPLICAOF", "127.0.0.1", &master.port.to_string()])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !t
        .admin()
        .run(0, &["INFO", "replication"])
        .unwrap()
        .contains("master_link_status:up")
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }

    let e = load(&t.admin(), &rdb, keys, loopback()).unwrap_err();
    assert_eq!(e.class, ErrorClass::TargetUnsupported, "{e}");
    assert!(e.message.contains("is a replica"), "{e}");
    assert_untouched(&t);
    assert_eq!(role(&t), "slave");
}

#[test]
fn renamed_config_or_replicaof_is_refused_untouched() {
    let scratch = tempfile::tempdir().unwrap();
    let (rdb, keys, _) = backup_rdb(scratch.path());
    let dir = scratch.path().join("target");
    std::fs::create_dir_all(&dir).unwrap();
    let t = Server::start(
        &dir,
        &[
            "--save",
            "",
            "--rename-command",
            "REPLICAOF",
            "hidden-replicaof",
            "--rename-command",
            "SLAVEOF",
            "",
        ],
    );
    t.admin().run(0, &["SET", "only-on-target", "x"]).unwrap();
    t.admin()
        .run(0, &["CONFIG", "SET", "masterauth", "the-targets-own"])
        .unwrap();

    let e = load(&t.admin(), &rdb, keys, loopback()).unwrap_err();
    assert_eq!(e.class, ErrorClass::TargetUnsupported, "{e}");
    assert!(e.message.contains("REPLICAOF"), "{e}");
    assert_untouched(&t);
}

#[test]
fn an_acl_user_denied_replicaof_is_refused_and_the_masterauth_put_back() {
    let scratch = tempfile::tempdir().unwrap();
    let (rdb, keys, _) = backup_rdb(scratch.path());
    let t = target(&scratch.path().join("target"), &["--save", ""]);
    t.admin()
        .run(
            0,
            &[
                "ACL",
                "SETUSER",
                "restorer",
                "on",
                ">pw",
                "~*",
                "&*",
                "+@all",
                "-replicaof",
                "-slaveof",
            ],
        )
        .unwrap();
    let restorer = Conn {
        username: Some("restorer".into()),
        password: Some("pw".into()),
        ..t.admin()
    };

    let e = load(&restorer, &rdb, keys, loopback()).unwrap_err();
    assert_eq!(e.class, ErrorClass::TargetUnsupported, "{e}");
    assert!(
        e.message.contains("REPLICAOF") && e.message.contains("ACL"),
        "{e}"
    );
    assert_untouched(&t);
    assert_eq!(role(&t), "master");
}

#[test]
fn tls_replication_is_refused_untouched() {
    use rcgen::{CertificateParams, KeyPair};
    let scratch = tempfile::tempdir().unwrap();
    let (rdb, keys, _) = backup_rdb(scratch.path());
    // redis-server takes tls-replication only with a certificate configured.
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_file, key_file) = (
        scratch.path().join("tls.crt"),
        scratch.path().join("tls.key"),
    );
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let t = target(
        &scratch.path().join("target"),
        &[
            "--save",
            "",
            "--tls-cert-file",
            cert_file.to_str().unwrap(),
            "--tls-key-file",
            key_file.to_str().unwrap(),
            "--tls-ca-cert-file",
            cert_file.to_str().unwrap(),
            "--tls-replication",
            "yes",
        ],
    );

    let e = load(&t.admin(), &rdb, keys, loopback()).unwrap_err();
    assert_eq!(e.class, ErrorClass::TargetUnsupported, "{e}");
    assert!(e.message.contains("tls-replication"), "{e}");
    assert_untouched(&t);
}

#[test]
fn an_rdb_newer_than_the_target_reads_is_refused_untouched() {
    let scratch = tempfile::tempdir().unwrap();
    let (rdb, keys, _) = backup_rdb(scratch.path());
    let t = target(&scratch.path().join("target"), &["--save", ""]);
    let version = t.admin().run(0, &["INFO", "server"]).unwrap();
    let version = version
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap()
        .trim()
        .to_owned();
    let newest = lifeboat_agent::redis_load::newest_rdb_read_by(&version).unwrap();
    let mut bytes = std::fs::read(&rdb).unwrap();
    bytes[5..9].copy_from_slice(format!("{:04}", newest + 1).as_bytes());
    std::fs::write(&rdb, bytes).unwrap();

    let e = load(&t.admin(), &rdb, keys, loopback()).unwrap_err();
    assert_eq!(e.class, ErrorClass::TargetUnsupported, "{e}");
    assert!(e.message.contains(&format!("format {}", newest + 1)), "{e}");
    assert_untouched(&t);
}

/// The agent, signing with the tests' key, in namespace `n`.
fn agent() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat-agent"));
    c.env(
        "LIFEBOAT_SIGNING_KEY_FILE",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/signing.key"),
    )
    .env("LIFEBOAT_NAMESPACE", "n")
    .env_remove("LIFEBOAT_JOB")
    .env_remove("LIFEBOAT_TERMINATION_LOG");
    c
}

/// Through the agent's command line, as a restore Job runs it: a signed, checked backup of a
/// source whose asset names a host's `dataDir` restored into a target without one (a Redis in a
/// pod) is loaded over replication from the pod's IP, and that directory is never written.
#[test]
fn a_restore_into_a_target_without_data_dir_loads_over_replication_through_the_cli() {
    let scratch = tempfile::tempdir().unwrap();
    let source_dir = scratch.path().join("source");
    std::fs::create_dir_all(&source_dir).unwrap();
    let source = Server::start(&source_dir, &["--save", ""]);
    write_every_type(&source);
    let before = digest(&source);
    let host_dir = scratch.path().join("host-data-dir");
    let policy = scratch.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: cache}}\nspec:\n  schedule: '@hourly'\n  assets:\n    - name: sessions\n      redis: {{host: 127.0.0.1, port: {}, dataDir: {}}}\n  retention: {{maxAge: 7d}}\n  destination: {{volume: {{claimName: local}}}}\n",
            source.port,
            host_dir.display()
        ),
    )
    .unwrap();
    let backups = scratch.path().join("backups");
    let out = agent()
        .args(["backup", "--policy-file"])
        .arg(&policy)
        .arg("--dir")
        .arg(&backups)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let t = target(&scratch.path().join("target"), &["--save", "3600 1"]);
    let rtarget = scratch.path().join("target.yaml");
    std::fs::write(
        &rtarget,
        format!(
            "asset: sessions\nredis: {{host: 127.0.0.1, port: {}}}\n",
            t.port
        ),
    )
    .unwrap();
    let restore = || {
        let mut c = agent();
        c.args([
            "restore",
            "--execute",
            "--asset",
            "sessions",
            "--policy-file",
        ])
        .arg(&policy)
        .arg("--target-file")
        .arg(&rtarget)
        .arg("--dir")
        .arg(&backups);
        c
    };
    let out = restore().env_remove("LIFEBOAT_POD_IP").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(ErrorClass::Config.exit_code()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("LIFEBOAT_POD_IP"));
    assert_untouched(&t);

    let out = restore()
        .env("LIFEBOAT_POD_IP", "127.0.0.1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("loaded over replication"), "{text}");
    assert!(!text.contains("the-targets-own"), "{text}");
    assert_same(&before, &digest(&t));
    assert_eq!(masterauth(&t), "the-targets-own");
    assert!(
        !host_dir.exists(),
        "the host's data directory was not written"
    );
}
