//! Redis: `redis-cli --rdb` takes a point-in-time RDB over the replication protocol; the RDB is
//! checked with `redis-check-rdb` before it is committed (corrupt RDBs went unnoticed for months
//! in the field), then compressed and hashed. A restore places `dump.rdb` in the data directory
//! for Redis to load at its next start. The password goes through `REDISCLI_AUTH`, never `-a`.
//! Every other command (checks, canaries, restore preparation) goes through the `redis` crate,
//! each argument one protocol argument, with connect and response timeouts.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ::redis::{
    ConnectionAddr, ConnectionInfo, IntoConnectionInfo as _, RedisConnectionInfo, Value,
};
use jiff::Timestamp;
use lifeboat_api::agent_result::ErrorClass;

use crate::error::{AgentError, Result};
use crate::stream::{self, Decoding, Stored};
use crate::tools;

/// How long a connection may take to open, the handshake (AUTH, SELECT) included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The bound of each of the agent's own commands (canaries, the empty-source test, restore
/// preparation).
const OWN_TIMEOUT: Duration = Duration::from_secs(60);
/// `redis-cli --rdb` is stopped when its file has not grown for this long: a transfer takes as
/// long as the dataset needs, but a server that stops sending is not waited for.
const RDB_STALL: Duration = Duration::from_secs(600);

#[derive(Clone, Debug)]
pub struct Conn {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: bool,
}

impl Conn {
    fn command(&self) -> Result<Command> {
        let mut cmd = Command::new(tools::find("redis-cli")?);
        cmd.arg("-h")
            .arg(&self.host)
            .arg("-p")
            .arg(self.port.to_string())
            .env_remove("REDISCLI_AUTH");
        if let Some(user) = &self.username {
            cmd.arg("--user").arg(user);
        }
        if let Some(password) = &self.password {
            cmd.env("REDISCLI_AUTH", password);
        }
        if self.tls {
            cmd.arg("--tls");
        }
        Ok(cmd)
    }

    fn info(&self, db: u8) -> Result<ConnectionInfo> {
        let addr = if self.tls {
            // The server's certificate is checked against the system's trust store, as
            // redis-cli --tls does.
            ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(self.host.clone(), self.port)
        };
        let mut settings = RedisConnectionInfo::default()
            .set_db(i64::from(db))
            .set_skip_set_lib_name();
        if let Some(user) = &self.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        Ok(addr
            .into_connection_info()
            .map_err(|e| AgentError::config(format!("Redis connection settings: {e}")))?
            .set_redis_settings(settings))
    }

    /// A connection to `db` whose every read and write gives up after `timeout`.
    fn connect(&self, db: u8, timeout: Duration) -> Result<::redis::Connection> {
        // redis' rustls needs a process-wide provider; installing it twice is harmless.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let client =
            ::redis::Client::open(self.info(db)?).map_err(|e| self.error("connecting", &e))?;
        let con = client
            .get_connection_with_timeout(timeout.min(CONNECT_TIMEOUT))
            .map_err(|e| self.error("connecting", &e))?;
        con.set_read_timeout(Some(timeout))
            .and_then(|()| con.set_write_timeout(Some(timeout)))
            .map_err(|e| self.error("connecting", &e))?;
        Ok(con)
    }

    /// The class of a client error and a message without data: the server's error code
    /// (`WRONGPASS`, `WRONGTYPE`), never its text, which may repeat arguments.
    fn error(&self, what: &str, e: &::redis::RedisError) -> AgentError {
        let class = if e.kind() == ::redis::ErrorKind::AuthenticationFailed
            || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
        {
            ErrorClass::Auth
        } else if e.is_timeout() {
            ErrorClass::Timeout
        } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
            ErrorClass::SourceUnreachable
        } else {
            ErrorClass::ToolFailed
        };
        let why = match e.code() {
            Some(code) => format!("the server answered {code}"),
            None if e.is_timeout() => "no answer in time".to_owned(),
            None => format!("{:?}", e.kind()),
        };
        AgentError::new(
            class,
            format!("Redis at {}:{}: {what}: {why}", self.host, self.port),
        )
    }

    /// Runs one of the agent's own commands and returns its answer as redis-cli prints it
    /// (an array one element a line, nil as nothing).
    pub fn run(&self, db: u8, args: &[&str]) -> Result<String> {
        self.run_within(db, args, OWN_TIMEOUT)
    }

    /// [`Conn::run`] with each step given up after `timeout`.
    pub fn run_within(&self, db: u8, args: &[&str], timeout: Duration) -> Result<String> {
        let (name, rest) = args
            .split_first()
            .ok_or_else(|| AgentError::config("an empty Redis command"))?;
        let mut con = self.connect(db, timeout)?;
        let mut cmd = ::redis::cmd(name);
        for a in rest {
            cmd.arg(*a);
        }
        let value: Value = cmd.query(&mut con).map_err(|e| self.error(name, &e))?;
        Ok(text(&value))
    }

    /// A validation check: `key` exists in `db`, and holds `expect` when given; read with
    /// EXISTS or GET only (the key one protocol argument), within `timeout` for the connection
    /// and each answer. The error never carries the value read.
    pub fn check(&self, db: u8, key: &str, expect: Option<&str>, timeout: Duration) -> Result<()> {
        let fail = |m: String| AgentError::new(ErrorClass::Validation, m);
        let mut con = self.connect(db, timeout).map_err(|e| fail(e.message))?;
        match expect {
            None => {
                let n: i64 = ::redis::cmd("EXISTS")
                    .arg(key)
                    .query(&mut con)
                    .map_err(|e| fail(self.error("EXISTS", &e).message))?;
                if n == 1 {
                    Ok(())
                } else {
                    Err(fail(format!("key {key:?} does not exist in db {db}")))
                }
            }
            Some(expect) => {
                let got: Option<Vec<u8>> = ::redis::cmd("GET")
                    .arg(key)
                    .query(&mut con)
                    .map_err(|e| fail(self.error("GET", &e).message))?;
                match got {
                    None => Err(fail(format!("key {key:?} does not exist in db {db}"))),
                    Some(v) if v == expect.as_bytes() => Ok(()),
                    Some(_) => Err(fail(format!(
                        "key {key:?} does not hold the expected value"
                    ))),
                }
            }
        }
    }
}

/// A reply as text, the way redis-cli prints it outside a terminal.
fn text(value: &Value) -> String {
    match value {
        Value::Nil => String::new(),
        Value::Int(i) => i.to_string(),
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".into(),
        Value::Array(items) | Value::Set(items) => {
            items.iter().map(text).collect::<Vec<_>>().join("\n")
        }
        Value::Map(pairs) => pairs
            .iter()
            .flat_map(|(k, v)| [text(k), text(v)])
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Attribute { data, .. } => text(data),
        Value::Double(d) => d.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::VerbatimString { text, .. } => text.clone(),
        other => format!("{other:?}"),
    }
}

/// Refuses a server without keys in any database (the canary set `lifeboat:canary` aside): an
/// empty source is far more often a restarted cache or a wrong host than the truth.
pub fn ensure_not_empty(conn: &Conn) -> Result<()> {
    let keyspace = conn.run(0, &["INFO", "keyspace"])?;
    // Lines `db0:keys=3,expires=0,avg_ttl=0`.
    let keys: u64 = keyspace
        .lines()
        .filter_map(|l| l.split_once(":keys="))
        .filter_map(|(_, rest)| rest.split(',').next()?.trim().parse::<u64>().ok())
        .sum();
    let only_canary = keys == 1 && conn.run(0, &["EXISTS", crate::canary::REDIS_KEY])? == "1";
    if keys == 0 || only_canary {
        return Err(AgentError::not_found(format!(
            "Redis at {}:{} holds no keys (Lifeboat's lifeboat:canary aside): an empty source is refused; set allowEmpty: true if it is meant to be empty",
            conn.host, conn.port
        )));
    }
    Ok(())
}

/// Takes an RDB snapshot and stores it in `out`. The server must answer a PING first (within
/// the connect timeout, so a host that accepts and never answers fails at once); the transfer
/// then runs while it makes progress (see [`RDB_STALL`]).
pub fn backup(
    conn: &Conn,
    sink: &mut dyn FnMut(&mut dyn std::io::Read) -> Result<Stored>,
) -> Result<(Stored, Timestamp)> {
    backup_with_stall(conn, sink, RDB_STALL)
}

fn backup_with_stall(
    conn: &Conn,
    sink: &mut dyn FnMut(&mut dyn std::io::Read) -> Result<Stored>,
    stall: Duration,
) -> Result<(Stored, Timestamp)> {
    {
        let mut con = conn.connect(0, CONNECT_TIMEOUT)?;
        ::redis::cmd("PING")
            .query::<String>(&mut con)
            .map_err(|e| conn.error("PING", &e))?;
    }
    let scratch = tempfile::tempdir().map_err(|e| AgentError::storage("temporary directory", e))?;
    let rdb = scratch.path().join("dump.rdb");
    let snapshot = Timestamp::now();
    let mut child = conn
        .command()?
        .arg("--rdb")
        .arg(&rdb)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| AgentError::config(format!("redis-cli: {e}")))?;
    let output = [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut pipe| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    })
    .collect::<Vec<_>>();
    let mut size = 0;
    let mut progress = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => return Err(AgentError::config(format!("redis-cli: {e}"))),
        }
        let now = std::fs::metadata(&rdb).map_or(0, |m| m.len());
        if now > size {
            size = now;
            progress = Instant::now();
        } else if progress.elapsed() > stall {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text: String = output
        .into_iter()
        .map(|t| t.join().unwrap_or_default())
        .collect();
    let Some(status) = status else {
        return Err(AgentError::new(
            ErrorClass::Timeout,
            format!(
                "redis-cli --rdb from {}:{} stopped: no data for {stall:?}",
                conn.host, conn.port
            ),
        ));
    };
    if !status.success() || !rdb.is_file() {
        return Err(AgentError::new(
            tools::classify(&text),
            format!("redis-cli --rdb failed: {}", tools::tail(&text)),
        ));
    }
    crate::fault::point("redis.rdb-fetched");
    check_rdb(&rdb)?;
    let mut file = std::fs::File::open(&rdb).map_err(|e| AgentError::storage(rdb.display(), e))?;
    let stored = sink(&mut file)?;
    Ok((stored, snapshot))
}

/// `redis-check-rdb` must accept the file; returns the number of keys it read.
pub fn check_rdb(rdb: &Path) -> Result<u64> {
    let out = Command::new(tools::find("redis-check-rdb")?)
        .arg(rdb)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| AgentError::config(format!("redis-check-rdb: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if out.status.success() {
        // `[info] 12 keys read`
        text.lines()
            .find_map(|l| l.strip_prefix("[info] ")?.strip_suffix(" keys read"))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| AgentError::integrity("redis-check-rdb did not report the keys it read"))
    } else {
        Err(AgentError::integrity(format!(
            "redis-check-rdb refused the snapshot: {}",
            rdb_error(&text)
        )))
    }
}

/// What went wrong, from redis-check-rdb's report: the lines after `RDB ERROR DETECTED` (the
/// offset and the reason) rather than its closing key counts.
fn rdb_error(report: &str) -> String {
    let found: Vec<&str> = report
        .lines()
        .skip_while(|l| !l.contains("RDB ERROR DETECTED"))
        .skip(1)
        .take_while(|l| !l.starts_with("[info]"))
        .map(str::trim)
        .collect();
    if found.is_empty() {
        tools::tail(report)
    } else {
        found.join(" | ")
    }
}

/// Places the RDB at `artifact` (verified by the caller) as `<data_dir>/<file_name>`, atomically,
/// for the server behind `conn` to load at its next start. The server is made ready first (see
/// [`prepare_restart`]); on failure its settings are put back and no partial file is left.
pub fn restore(
    conn: &Conn,
    artifact: &Path,
    decoding: &Decoding,
    data_dir: &Path,
    file_name: &str,
) -> Result<()> {
    let prepared = prepare_restart(conn, data_dir)?;
    let placed = place(artifact, decoding, data_dir, file_name);
    if placed.is_err()
        && let Some(p) = prepared
    {
        p.undo();
    }
    placed
}

fn place(artifact: &Path, decoding: &Decoding, data_dir: &Path, file_name: &str) -> Result<()> {
    std::fs::create_dir_all(data_dir).map_err(|e| AgentError::storage(data_dir.display(), e))?;
    let tmp = data_dir.join(format!(".{file_name}.lifeboat-tmp"));
    let write = || -> Result<()> {
        let file =
            std::fs::File::create(&tmp).map_err(|e| AgentError::storage(tmp.display(), e))?;
        stream::unpack(artifact, decoding, std::io::BufWriter::new(&file))?;
        file.sync_all()
            .map_err(|e| AgentError::storage(tmp.display(), e))?;
        check_rdb(&tmp).map(drop)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let dest = data_dir.join(file_name);
    std::fs::rename(&tmp, &dest).map_err(|e| AgentError::storage(dest.display(), e))?;
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AgentError::storage(data_dir.display(), e))
}

/// A running target whose saving was switched off for a restore.
pub struct Prepared {
    conn: Conn,
    save: String,
}

impl Prepared {
    /// Puts the save points back (the restore did not happen).
    fn undo(&self) {
        let _ = self.conn.run(0, &["CONFIG", "SET", "save", &self.save]);
    }
}

/// The playbook's "copy dump.rdb, restart Redis" loses the restore on a real server in two ways,
/// both silent: a running Redis with save points writes its own dataset over `dump.rdb` when it
/// is stopped (SIGTERM, what a pod restart sends), or a background save finishing later renames
/// its file over it; and a Redis with AOF on loads its append-only file at start, not `dump.rdb`.
/// So: AOF on is refused before anything is touched; a running server gets `save ""` (in memory
/// only: the restart brings back its configured save points) and any background save is waited
/// out. A server that is not running cannot save; an AOF in its directory is refused then too.
pub fn prepare_restart(conn: &Conn, data_dir: &Path) -> Result<Option<Prepared>> {
    let where_ = format!("Redis at {}:{}", conn.host, conn.port);
    let appendonly = match config_get(conn, "appendonly") {
        Ok(v) => v,
        Err(e) if e.class == ErrorClass::SourceUnreachable => {
            if let Some(aof) = ["appendonlydir", "appendonly.aof"]
                .iter()
                .map(|n| data_dir.join(n))
                .find(|p| p.exists())
            {
                return Err(AgentError::config(format!(
                    "{where_} is not running and {} exists: with appendonly on, Redis loads it instead of dump.rdb; move it away (or start Redis with appendonly no) and restore again",
                    aof.display()
                )));
            }
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    if appendonly == "yes" {
        return Err(AgentError::config(format!(
            "{where_} has appendonly yes: at its restart it loads its append-only file and ignores dump.rdb; turn AOF off (appendonly no) for the restore, restart, then turn it back on"
        )));
    }
    let save = config_get(conn, "save")?;
    conn.run(0, &["CONFIG", "SET", "save", ""])?;
    let prepared = Prepared {
        conn: conn.clone(),
        save,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let info = conn.run(0, &["INFO", "persistence"]);
        match info {
            Ok(text) if !text.contains("rdb_bgsave_in_progress:1") => return Ok(Some(prepared)),
            Ok(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Ok(_) => {
                prepared.undo();
                return Err(AgentError::new(
                    ErrorClass::Timeout,
                    format!("{where_}: a background save is still running after 120s"),
                ));
            }
            Err(e) => {
                prepared.undo();
                return Err(e);
            }
        }
    }
}

/// One configuration value (`CONFIG GET` answers the name, then the value).
fn config_get(conn: &Conn, name: &str) -> Result<String> {
    let out = conn.run(0, &["CONFIG", "GET", name])?;
    let mut lines = out.lines();
    if lines.next() != Some(name) {
        return Err(AgentError::config(format!(
            "Redis at {}:{} did not answer CONFIG GET {name} (renamed or disabled?): {out}",
            conn.host, conn.port
        )));
    }
    Ok(lines.next().unwrap_or_default().trim().to_owned())
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    /// A source that answers the PING and redis-cli's handshake, then never sends the RDB.
    fn stalling_master() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for mut c in l.incoming().flatten() {
                let mut seen = String::new();
                let mut answered = 0;
                let mut buf = [0u8; 4096];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if seen.ends_with("PING\r\n") {
                        c.write_all(b"+PONG\r\n").unwrap();
                    }
                    let replconfs = seen.matches("REPLCONF").count();
                    for _ in answered..replconfs {
                        c.write_all(b"+OK\r\n").unwrap();
                    }
                    answered = replconfs;
                    if seen.contains("SYNC\r\n") {
                        break;
                    }
                }
                held.push(c);
            }
        });
        port
    }

    #[test]
    fn a_transfer_that_stops_sending_is_stopped() {
        let conn = super::Conn {
            host: "127.0.0.1".into(),
            port: stalling_master(),
            username: None,
            password: None,
            tls: false,
        };
        let t0 = std::time::Instant::now();
        let e = super::backup_with_stall(
            &conn,
            &mut |_| unreachable!("nothing was received"),
            std::time::Duration::from_secs(2),
        )
        .unwrap_err();
        assert_eq!(e.class, super::ErrorClass::Timeout, "{e}");
        assert!(e.message.contains("no data for 2s"), "{e}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn the_rdb_error_is_the_reason_not_the_key_counts() {
        let report = "[offset 0] Checking RDB file x.rdb\n--- RDB ERROR DETECTED ---\n[offset 9] Can't handle RDB format version 99\n[additional info] While doing: start\n[info] 0 keys read\n[info] 0 expires\n";
        assert_eq!(
            super::rdb_error(report),
            "[offset 9] Can't handle RDB format version 99 | [additional info] While doing: start"
        );
    }
}
