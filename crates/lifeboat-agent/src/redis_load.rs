//! A Redis restore over the replication protocol, for a Redis the agent cannot reach on disk (a
//! StatefulSet with its own PVC): the agent serves one full resynchronisation as a master and
//! the target loads the RDB as a replica does, then is made a master again. Nothing restarts,
//! no volume is shared, appendonly targets rewrite their AOF from the loaded data, and the keys
//! are served again the moment the load ends.
//!
//! The listener would hand the whole dataset to whoever asks, so the target is given a
//! one-time random `masterauth` first (its own is put back in every outcome) and only a
//! connection that authenticates with it receives the RDB; strangers get nothing, each
//! connection and the whole load are time-bound. Targets this cannot serve are refused before
//! anything is changed, with [`ErrorClass::TargetUnsupported`].

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lifeboat_api::agent_result::ErrorClass;
use sha2::{Digest as _, Sha256};

use crate::error::{AgentError, Result};
use crate::redis::Conn;
use crate::resp;

/// How long the target may take to connect and authenticate after `REPLICAOF`.
const CONNECT_WINDOW: Duration = Duration::from_secs(60);
/// The bound of each connection's handshake, and of each write of the RDB.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the target may take to receive and load the RDB and to persist it.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How often the target's INFO is read while waiting.
const POLL: Duration = Duration::from_millis(100);

/// The socket the agent serves the sync on and the address it tells the target to connect to.
#[derive(Debug)]
pub struct Listener {
    socket: TcpListener,
    port: u16,
    /// The address given to `REPLICAOF`: the pod's IP from the downward API; never user text.
    advertise: IpAddr,
}

impl Listener {
    /// Binds `bind` (all of the pod's addresses in a Job) before the target is touched.
    pub fn bind(bind: SocketAddr, advertise: IpAddr) -> Result<Self> {
        let fail = |e: std::io::Error| AgentError::config(format!("listening on {bind}: {e}"));
        let socket = TcpListener::bind(bind).map_err(fail)?;
        let port = socket.local_addr().map_err(fail)?.port();
        Ok(Self {
            socket,
            port,
            advertise,
        })
    }

    /// The bound port (the one asked for, or the one the system chose for port 0).
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// What a load did, for the restore's report.
#[derive(Debug, PartialEq, Eq)]
pub struct Loaded {
    pub keys: u64,
    pub durable: Durable,
    /// Connections to the listener turned away because they did not authenticate.
    pub strangers: u32,
}

/// How the loaded data was made to survive a restart.
#[derive(Debug, PartialEq, Eq)]
pub enum Durable {
    /// `save` points: a BGSAVE finished after the load.
    Saved,
    /// appendonly yes: Redis rewrote its AOF from the loaded data (then saved too, when it
    /// also has save points).
    AofRewritten,
    /// Neither: the target keeps its data in memory only, as configured.
    MemoryOnly,
}

impl Durable {
    /// For the restore's report.
    pub fn describe(&self) -> &'static str {
        match self {
            Durable::Saved => "saved to its RDB file",
            Durable::AofRewritten => "its append-only file rewritten",
            Durable::MemoryOnly => "in memory only (the target has no save points and no AOF)",
        }
    }
}

/// The RDB format version in the header (`REDIS0011`) of `rdb`.
pub fn rdb_version(rdb: &Path) -> Result<u32> {
    let mut head = [0u8; 9];
    std::fs::File::open(rdb)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| AgentError::integrity(format!("the RDB has no header: {e}")))?;
    let digits = head
        .strip_prefix(b"REDIS")
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse::<u32>().ok())
        .ok_or_else(|| AgentError::integrity("the RDB's header is not REDISnnnn"))?;
    Ok(digits)
}

/// The newest RDB format a Redis of `version` (`7.2.4`) reads. Versions newer than the table
/// are assumed to read what the newest listed one does (Redis reads every older format).
pub fn newest_rdb_read_by(version: &str) -> Option<u32> {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next().flatten()?;
    let minor = parts.next().flatten().unwrap_or(0);
    Some(match (major, minor) {
        (0..=2, _) => 6,
        (3, 0) => 6,
        (3, _) => 7,
        (4, _) => 8,
        (5 | 6, _) => 9,
        (7, 0) => 10,
        (7, 1..=2) => 11,
        _ => 12,
    })
}

/// The refusal of a target this mechanism cannot serve.
fn unsupported(conn: &Conn, why: impl std::fmt::Display) -> AgentError {
    AgentError::new(
        ErrorClass::TargetUnsupported,
        format!("Redis at {}:{} {why}", conn.host, conn.port),
    )
}

/// Runs an administrative command; a renamed command or one the ACL user may not run is a
/// refusal naming the command, not a generic failure.
fn admin(conn: &Conn, args: &[&str]) -> Result<String> {
    conn.run(0, args).map_err(|e| {
        if e.message.contains("answered NOPERM") {
            unsupported(
                conn,
                format!(
                    "does not let its user run {} (ACL): a restore over replication needs CONFIG and REPLICAOF",
                    args[0]
                ),
            )
        } else if e.message.contains("answered ERR") {
            unsupported(
                conn,
                format!(
                    "refused {} (renamed or disabled?): a restore over replication needs CONFIG and REPLICAOF",
                    args[0]
                ),
            )
        } else {
            e
        }
    })
}

/// One field of an INFO section (`role:master`).
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

fn config_get(conn: &Conn, name: &str) -> Result<String> {
    let out = admin(conn, &["CONFIG", "GET", name])?;
    let mut lines = out.lines();
    match lines.next() {
        Some(n) if n == name => Ok(lines.next().unwrap_or_default().to_owned()),
        _ => Err(unsupported(
            conn,
            format!("did not answer CONFIG GET {name} (renamed or disabled?)"),
        )),
    }
}

/// The sum of `keys=` over every database in INFO keyspace.
fn keys(conn: &Conn) -> Result<u64> {
    let keyspace = conn.run(0, &["INFO", "keyspace"])?;
    Ok(keyspace
        .lines()
        .filter_map(|l| l.split_once(":keys="))
        .filter_map(|(_, rest)| rest.split(',').next()?.trim().parse::<u64>().ok())
        .sum())
}

/// Checks everything that would make the load fail or be unsafe, before anything is changed:
/// the target must be a master, accept CONFIG and REPLICAOF, replicate in clear text, and read
/// the RDB's format.
fn preflight(conn: &Conn, rdb_version: u32) -> Result<()> {
    let replication = conn.run(0, &["INFO", "replication"])?;
    if field(&replication, "role") != Some("master") {
        return Err(unsupported(
            conn,
            "is a replica: restore into its master (a replica's data is replaced by its master's)",
        ));
    }
    for command in ["CONFIG", "REPLICAOF"] {
        if admin(conn, &["COMMAND", "INFO", command])?.is_empty() {
            return Err(unsupported(
                conn,
                format!(
                    "has no {command} command (renamed or disabled): a restore over replication needs it"
                ),
            ));
        }
    }
    if config_get(conn, "tls-replication")? == "yes" {
        return Err(unsupported(
            conn,
            "has tls-replication yes: the restore listener speaks clear text only",
        ));
    }
    let server = conn.run(0, &["INFO", "server"])?;
    let version = field(&server, "redis_version").unwrap_or_default();
    let newest = newest_rdb_read_by(version)
        .ok_or_else(|| unsupported(conn, format!("reports an unreadable version {version:?}")))?;
    if rdb_version > newest {
        return Err(unsupported(
            conn,
            format!(
                "runs Redis {version}, which reads RDB format {newest} at most; the backup is format {rdb_version} (restore into a Redis at least as new as the source)"
            ),
        ));
    }
    Ok(())
}

/// Loads the RDB at `rdb` (decoded and checked by the caller, holding `expected_keys` keys)
/// into the running server behind `conn`, replacing its data. See the module documentation.
pub fn load(conn: &Conn, rdb: &Path, expected_keys: u64, listener: Listener) -> Result<Loaded> {
    let version = rdb_version(rdb)?;
    preflight(conn, version)?;
    let Listener {
        socket,
        port,
        advertise,
    } = listener;
    let old_masterauth = config_get(conn, "masterauth")?;
    let persistence = conn.run(0, &["INFO", "persistence"])?;
    let aof_rewrites_before = field(&persistence, "aof_rewrites").map(str::to_owned);

    let password = one_time_password()?;
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let digest = Sha256::digest(password.as_bytes());
        let stop = stop.clone();
        let rdb = rdb.to_path_buf();
        std::thread::spawn(move || serve(&socket, &digest, &rdb, &stop))
    };
    let mut guard = Guard {
        conn,
        old_masterauth: &old_masterauth,
        replica: false,
        done: false,
    };
    let outcome = (|| {
        admin(conn, &["CONFIG", "SET", "masterauth", &password])?;
        guard.replica = true;
        admin(
            conn,
            &["REPLICAOF", &advertise.to_string(), &port.to_string()],
        )?;
        if !wait_synced(conn, &server, advertise, port)? {
            return Ok(None);
        }
        // Counted while still a replica: replicas do not expire keys, so the count is the
        // RDB's, keys whose TTL passed since the backup included.
        let loaded = keys(conn)?;
        guard.finish()?;
        if loaded != expected_keys {
            return Err(AgentError::integrity(format!(
                "Redis at {}:{} holds {loaded} keys after the load; the backup has {expected_keys}",
                conn.host, conn.port
            )));
        }
        let durable = persist(conn, aof_rewrites_before.as_deref())?;
        Ok(Some((loaded, durable)))
    })();
    stop.store(true, Ordering::Relaxed);
    let served = server
        .join()
        .unwrap_or_else(|_| Err(AgentError::config("the restore listener panicked")));
    drop(guard);
    match (outcome?, served?) {
        (Some((keys, durable)), served) => Ok(Loaded {
            keys,
            durable,
            strangers: served.strangers,
        }),
        // The listener ended with a sync served but the target never reported it loaded.
        (None, _) => Err(AgentError::new(
            ErrorClass::SourceUnreachable,
            format!(
                "Redis at {}:{} took the RDB but did not report the sync finished",
                conn.host, conn.port
            ),
        )),
    }
}

/// Puts the target back to itself: a master with its own masterauth, whatever happened. The
/// success path calls [`Guard::finish`] to see errors; dropping it undoes quietly.
struct Guard<'a> {
    conn: &'a Conn,
    old_masterauth: &'a str,
    replica: bool,
    done: bool,
}

impl Guard<'_> {
    /// Both steps are tried whatever the first one answers; the first error is returned.
    fn finish(&mut self) -> Result<()> {
        self.done = true;
        let master = if self.replica {
            admin(self.conn, &["REPLICAOF", "NO", "ONE"]).map(drop)
        } else {
            Ok(())
        };
        let auth = admin(
            self.conn,
            &["CONFIG", "SET", "masterauth", self.old_masterauth],
        );
        master.and(auth.map(drop))
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.finish();
        }
    }
}

/// 32 random bytes as hex: the target's masterauth for this one load.
fn one_time_password() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| AgentError::config(format!("no randomness for a one-time password: {e}")))?;
    Ok(hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Waits until the target reports the sync from `ip:port` finished and its link up (true), or
/// the listener ended (false: its own result says why).
fn wait_synced(
    conn: &Conn,
    server: &std::thread::JoinHandle<Result<Served>>,
    ip: IpAddr,
    port: u16,
) -> Result<bool> {
    let started = Instant::now();
    let port = port.to_string();
    let ip = ip.to_string();
    loop {
        let info = conn.run(0, &["INFO", "replication"])?;
        let ours = field(&info, "master_host") == Some(ip.as_str())
            && field(&info, "master_port") == Some(port.as_str());
        if ours
            && field(&info, "master_link_status") == Some("up")
            && field(&info, "master_sync_in_progress") == Some("0")
        {
            return Ok(true);
        }
        if server.is_finished() {
            return Ok(false);
        }
        if started.elapsed() > LOAD_TIMEOUT {
            return Err(AgentError::new(
                ErrorClass::Timeout,
                format!(
                    "Redis at {}:{} had not loaded the RDB after {LOAD_TIMEOUT:?}",
                    conn.host, conn.port
                ),
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// Makes the loaded data survive a restart the way the target is configured to: with
/// appendonly on, Redis rewrites its AOF after a full sync (waited for, and checked to have
/// happened); with save points, a BGSAVE is run and waited for.
fn persist(conn: &Conn, aof_rewrites_before: Option<&str>) -> Result<Durable> {
    let aof = config_get(conn, "appendonly")? == "yes";
    let save = !config_get(conn, "save")?.trim().is_empty();
    let started = Instant::now();
    let timeout = |what: &str| {
        AgentError::new(
            ErrorClass::Timeout,
            format!(
                "Redis at {}:{}: {what} not finished after {LOAD_TIMEOUT:?}",
                conn.host, conn.port
            ),
        )
    };
    if aof {
        loop {
            let info = conn.run(0, &["INFO", "persistence"])?;
            let idle = field(&info, "aof_rewrite_in_progress") == Some("0")
                && field(&info, "aof_rewrite_scheduled") == Some("0");
            // Redis before 7.0 does not count rewrites; idle after the load is all it shows.
            let rewrote = aof_rewrites_before.is_none()
                || field(&info, "aof_rewrites") != aof_rewrites_before;
            if idle && rewrote {
                if field(&info, "aof_last_bgrewrite_status") != Some("ok") {
                    return Err(AgentError::new(
                        ErrorClass::Storage,
                        format!(
                            "Redis at {}:{} failed to rewrite its AOF after the load (its log says why)",
                            conn.host, conn.port
                        ),
                    ));
                }
                break;
            }
            if started.elapsed() > LOAD_TIMEOUT {
                return Err(timeout("the AOF rewrite"));
            }
            std::thread::sleep(POLL);
        }
    }
    if save {
        let before = field(&conn.run(0, &["INFO", "persistence"])?, "rdb_saves").map(str::to_owned);
        admin(conn, &["BGSAVE", "SCHEDULE"])?;
        loop {
            let info = conn.run(0, &["INFO", "persistence"])?;
            if field(&info, "rdb_bgsave_in_progress") == Some("0")
                && field(&info, "rdb_saves").map(str::to_owned) != before
            {
                if field(&info, "rdb_last_bgsave_status") != Some("ok") {
                    return Err(AgentError::new(
                        ErrorClass::Storage,
                        format!(
                            "Redis at {}:{} failed to save after the load (its log says why)",
                            conn.host, conn.port
                        ),
                    ));
                }
                break;
            }
            if started.elapsed() > LOAD_TIMEOUT {
                return Err(timeout("the BGSAVE"));
            }
            std::thread::sleep(POLL);
        }
    }
    Ok(match (aof, save) {
        (true, _) => Durable::AofRewritten,
        (false, true) => Durable::Saved,
        (false, false) => Durable::MemoryOnly,
    })
}

/// What the listener did.
struct Served {
    strangers: u32,
}

/// Accepts connections one at a time until one authenticates with the one-time password
/// (whose sha256 is `digest`) and asks for a sync: that one gets the RDB, and is then held
/// (the target reads its link as up) until `stop`. Every other connection gets nothing and
/// is closed.
fn serve(listener: &TcpListener, digest: &[u8], rdb: &Path, stop: &AtomicBool) -> Result<Served> {
    listener
        .set_nonblocking(true)
        .map_err(|e| AgentError::config(format!("restore listener: {e}")))?;
    let opened = Instant::now();
    let mut strangers = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(AgentError::config("the restore was ended before a sync"));
        }
        if opened.elapsed() > CONNECT_WINDOW {
            return Err(AgentError::new(
                ErrorClass::SourceUnreachable,
                format!(
                    "the target did not connect and authenticate within {CONNECT_WINDOW:?} ({strangers} other connections turned away): it must reach the restore pod's port (NetworkPolicy)"
                ),
            ));
        }
        let mut stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => return Err(AgentError::config(format!("restore listener: {e}"))),
        };
        match handshake(&mut stream, digest) {
            Ok(()) => {
                send(&mut stream, rdb)?;
                hold(&mut stream, stop);
                return Ok(Served { strangers });
            }
            Err(_) => {
                strangers += 1;
            }
        }
    }
}

/// Why a connection was turned away (never reported beyond a count: it is a stranger's).
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("the connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Protocol(#[from] resp::ProtocolError),
    #[error("it did not authenticate with the one-time password")]
    NotAuthenticated,
    #[error("it sent a command a replica does not send")]
    Unexpected,
}

/// Answers a replica's handshake up to its PSYNC. Before AUTH with the one-time password every
/// command is answered NOAUTH (what a master with a password answers; the replica's PING
/// accepts it) and anything but PING or AUTH closes the connection; one wrong password closes
/// it too.
fn handshake(stream: &mut TcpStream, digest: &[u8]) -> std::result::Result<(), Refused> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let mut authenticated = false;
    while Instant::now() < deadline {
        let Some((args, used)) = resp::parse(&buf)? else {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(Refused::NotAuthenticated);
            }
            buf.extend_from_slice(&chunk[..n]);
            continue;
        };
        buf.drain(..used);
        let name = args[0].to_ascii_uppercase();
        match (authenticated, name.as_slice()) {
            (false, b"PING") => stream.write_all(b"-NOAUTH Authentication required.\r\n")?,
            (false, b"AUTH") => {
                // AUTH <password> or AUTH <masteruser> <password>.
                let given = args.last().filter(|_| args.len() <= 3);
                let ok = given.is_some_and(|p| Sha256::digest(p).as_slice() == digest);
                if !ok {
                    let _ = stream.write_all(b"-WRONGPASS invalid password\r\n");
                    return Err(Refused::NotAuthenticated);
                }
                authenticated = true;
                stream.write_all(b"+OK\r\n")?;
            }
            (false, _) => {
                let _ = stream.write_all(b"-NOAUTH Authentication required.\r\n");
                return Err(Refused::NotAuthenticated);
            }
            (true, b"PING") => stream.write_all(b"+PONG\r\n")?,
            (true, b"REPLCONF") => stream.write_all(b"+OK\r\n")?,
            (true, b"PSYNC" | b"SYNC") => return Ok(()),
            (true, _) => return Err(Refused::Unexpected),
        }
    }
    Err(Refused::NotAuthenticated)
}

/// `+FULLRESYNC <replid> 0` and the RDB as one `$<len>` payload.
fn send(stream: &mut TcpStream, rdb: &Path) -> Result<()> {
    let io = |e: std::io::Error| {
        AgentError::new(
            ErrorClass::SourceUnreachable,
            format!("sending the RDB to the target: {e}"),
        )
    };
    let mut replid = [0u8; 20];
    getrandom::fill(&mut replid)
        .map_err(|e| AgentError::config(format!("no randomness for a replication id: {e}")))?;
    let mut file = std::fs::File::open(rdb).map_err(|e| AgentError::storage(rdb.display(), e))?;
    let len = file
        .metadata()
        .map_err(|e| AgentError::storage(rdb.display(), e))?
        .len();
    stream
        .write_all(format!("+FULLRESYNC {} 0\r\n${len}\r\n", hex(&replid)).as_bytes())
        .map_err(io)?;
    std::io::copy(&mut file, stream).map_err(io)?;
    stream.flush().map_err(io)
}

/// Keeps the link open, reading (and dropping) the replica's acknowledgements, until `stop`.
fn hold(stream: &mut TcpStream, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdb_formats_follow_the_server_versions() {
        assert_eq!(newest_rdb_read_by("7.0.15"), Some(10));
        assert_eq!(newest_rdb_read_by("7.2.4"), Some(11));
        assert_eq!(newest_rdb_read_by("7.4.1"), Some(12));
        assert_eq!(newest_rdb_read_by("6.2.14"), Some(9));
        assert_eq!(newest_rdb_read_by("8.0.0"), Some(12));
        assert_eq!(newest_rdb_read_by("garbage"), None);
    }
}
