//! Throw-away PostgreSQL, Redis and S3 servers on loopback, for the local drill (the README's main
//! job) and the tests. PostgreSQL refuses to run as root, so as root the server runs as the
//! `postgres` user through `setpriv`, which execs (no intermediate process to orphan it).

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{AgentError, Result};
use crate::{postgres, redis, tools};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| AgentError::config(format!("no free port: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| AgentError::config(format!("no free port: {e}")))
}

fn is_root() -> bool {
    // The real uid, without libc: /proc/self/status has "Uid: real effective ...".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A command run as the `postgres` user when we are root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--",
        ])
        .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() > deadline {
            return Err(AgentError::new(
                lifeboat_api::agent_result::ErrorClass::SourceUnreachable,
                format!("{what} did not become ready within {timeout:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The addresses a server listens on: loopback, and the local node's bridge gateway when given
/// (where the node's pods reach the host without its network; see
/// `lifeboat_testenv::Node::gateway`).
fn listen_addresses(gateway: Option<Ipv4Addr>) -> Vec<String> {
    std::iter::once("127.0.0.1".to_owned())
        .chain(gateway.map(|g| g.to_string()))
        .collect()
}

/// A PostgreSQL server in a temporary directory, trust authentication on 127.0.0.1.
pub struct LocalPostgres {
    pub port: u16,
    /// Set once [`LocalPostgres::require_password`] made TCP connections need it.
    password: Option<String>,
    child: Child,
    listen: String,
    _dir: tempfile::TempDir,
}

impl LocalPostgres {
    pub fn start() -> Result<Self> {
        Self::start_on(None)
    }

    /// Also on `gateway`, trusting the clients of the /24 around it (the node's pods).
    pub fn start_on(gateway: Option<Ipv4Addr>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-pg-")
            .tempdir()
            .map_err(|e| AgentError::storage("temporary directory", e))?;
        let data = dir.path().join("data");
        if is_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .map_err(|e| AgentError::config(format!("chown: {e}")))?;
            if !status.success() {
                return Err(AgentError::config(
                    "cannot hand the PostgreSQL directory to the postgres user",
                ));
            }
        }
        let out = as_postgres(&tools::find("initdb")?)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "lifeboat",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
                "--locale=C",
            ])
            .output()
            .map_err(|e| AgentError::config(format!("initdb: {e}")))?;
        if !out.status.success() {
            return Err(AgentError::config(format!(
                "initdb failed: {}",
                tools::tail(&String::from_utf8_lossy(&out.stderr))
            )));
        }
        if let Some(g) = gateway {
            let [a, b, c, _] = g.octets();
            let hba = data.join("pg_hba.conf");
            let mut rules =
                std::fs::read_to_string(&hba).map_err(|e| AgentError::storage("pg_hba.conf", e))?;
            rules.push_str(&format!("host all all {a}.{b}.{c}.0/24 trust\n"));
            // Pods archive WAL over the replication protocol (point in time).
            rules.push_str(&format!("host replication all {a}.{b}.{c}.0/24 trust\n"));
            std::fs::write(&hba, rules).map_err(|e| AgentError::storage("pg_hba.conf", e))?;
        }
        let port = free_port()?;
        let listen = listen_addresses(gateway).join(",");
        let child = spawn_postgres(dir.path(), port, &listen)?;
        let mut pg = Self {
            port,
            password: None,
            child,
            listen,
            _dir: dir,
        };
        pg.wait_ready()?;
        Ok(pg)
    }

    /// A server on the data directory `dir/data` as it is (a restored one: its own
    /// configuration, recovery settings included), on a free loopback port; `password` when its
    /// pg_hba.conf asks for one.
    pub fn start_existing(dir: tempfile::TempDir, password: Option<&str>) -> Result<Self> {
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .map_err(|e| AgentError::config(format!("chown: {e}")))?;
            if !status.success() {
                return Err(AgentError::config(
                    "cannot hand the PostgreSQL directory to the postgres user",
                ));
            }
        }
        let port = free_port()?;
        let listen = listen_addresses(None).join(",");
        let child = spawn_postgres(dir.path(), port, &listen)?;
        let mut pg = Self {
            port,
            password: password.map(str::to_owned),
            child,
            listen,
            _dir: dir,
        };
        pg.wait_ready()?;
        Ok(pg)
    }

    /// From now on TCP connections (replication included) need `password`: the role gets it
    /// and every `host` line of pg_hba.conf asks for scram-sha-256 instead of trust.
    pub fn require_password(&mut self, password: &str) -> Result<()> {
        let quoted = password.replace('\'', "''");
        postgres::query(
            &self.conn(),
            "postgres",
            &format!("ALTER ROLE lifeboat PASSWORD '{quoted}'"),
        )?;
        let hba = self._dir.path().join("data").join("pg_hba.conf");
        let rules =
            std::fs::read_to_string(&hba).map_err(|e| AgentError::storage("pg_hba.conf", e))?;
        let rules: String = rules
            .lines()
            .map(|l| {
                if l.starts_with("host") {
                    l.replace("trust", "scram-sha-256")
                } else {
                    l.to_owned()
                }
            })
            .map(|l| l + "\n")
            .collect();
        std::fs::write(&hba, rules).map_err(|e| AgentError::storage("pg_hba.conf", e))?;
        postgres::query(&self.conn(), "postgres", "SELECT pg_reload_conf()")?;
        self.password = Some(password.to_owned());
        Ok(())
    }

    /// The server's log so far (for a test's failure message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("postgres.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let conn = self.conn();
        wait_until("PostgreSQL", Duration::from_secs(30), || {
            postgres::query(&conn, "postgres", "SELECT 1").is_ok()
        })?;
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(AgentError::config(format!("postgres exited: {status}")));
        }
        Ok(())
    }

    /// Restarts the server as an operator would (`pg_ctl restart -m fast`): every session is cut,
    /// then it serves again on the same port and data (fault tests).
    pub fn restart(&mut self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .map_err(|e| AgentError::config(format!("kill: {e}")))?;
        if !status.success() {
            return Err(AgentError::config("cannot signal PostgreSQL"));
        }
        let _ = self.child.wait();
        self.child = spawn_postgres(self._dir.path(), self.port, &self.listen)?;
        self.wait_ready()
    }

    pub fn conn(&self) -> postgres::Conn {
        postgres::Conn {
            host: "127.0.0.1".into(),
            port: self.port,
            user: "lifeboat".into(),
            password: self.password.clone(),
            ssl_mode: lifeboat_api::common::SslMode::Disable,
        }
    }
}

/// `postgres` on `dir/data`, its log appended to `dir/postgres.log`.
fn spawn_postgres(dir: &Path, port: u16, listen: &str) -> Result<Child> {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join("postgres.log"))
        .map_err(|e| AgentError::storage("postgres log", e))?;
    as_postgres(&tools::find("postgres")?)
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(dir)
        .arg("-c")
        .arg(format!("listen_addresses={listen}"))
        .args([
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=30",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| AgentError::config(format!("postgres: {e}")))
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis server on 127.0.0.1 with its data directory (no automatic saves).
pub struct LocalRedis {
    pub port: u16,
    pub data_dir: PathBuf,
    child: Child,
    _dir: Option<tempfile::TempDir>,
}

impl LocalRedis {
    /// A server with an empty, temporary data directory.
    pub fn start() -> Result<Self> {
        Self::start_on(None)
    }

    /// Also on `gateway` (the node's pods reach it there). Protected mode, which refuses every
    /// client but loopback's on a server without a password, is off then.
    pub fn start_on(gateway: Option<Ipv4Addr>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-redis-")
            .tempdir()
            .map_err(|e| AgentError::storage("temporary directory", e))?;
        let path = dir.path().to_path_buf();
        Self::spawn(&path, Some(dir), gateway)
    }

    /// A server on `data_dir`, loading `dump.rdb` from it if present (what a restart after a
    /// restore does).
    pub fn start_in(data_dir: &Path, owned: Option<tempfile::TempDir>) -> Result<Self> {
        Self::spawn(data_dir, owned, None)
    }

    fn spawn(
        data_dir: &Path,
        owned: Option<tempfile::TempDir>,
        gateway: Option<Ipv4Addr>,
    ) -> Result<Self> {
        let port = free_port()?;
        let child = Command::new(tools::find("redis-server")?)
            .arg("--bind")
            .args(listen_addresses(gateway))
            .args([
                "--protected-mode",
                if gateway.is_some() { "no" } else { "yes" },
            ])
            .arg("--port")
            .arg(port.to_string())
            .arg("--dir")
            .arg(data_dir)
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dbfilename",
                "dump.rdb",
            ])
            // Diskless replication waits 5 s by default before a transfer: `--rdb` would too.
            .args(["--repl-diskless-sync-delay", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| AgentError::config(format!("redis-server: {e}")))?;
        let r = Self {
            port,
            data_dir: data_dir.to_path_buf(),
            child,
            _dir: owned,
        };
        let conn = r.conn();
        wait_until("Redis", Duration::from_secs(20), || {
            conn.run(0, &["PING"]).is_ok_and(|s| s == "PONG")
        })?;
        Ok(r)
    }

    pub fn conn(&self) -> redis::Conn {
        redis::Conn {
            host: "127.0.0.1".into(),
            port: self.port,
            username: None,
            password: None,
            tls: false,
        }
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An S3-compatible server on 127.0.0.1: `rclone serve s3` over a temporary directory whose
/// subdirectories are the buckets. Keys [`LocalS3::ACCESS_KEY`] / [`LocalS3::SECRET_KEY`].
pub struct LocalS3 {
    pub port: u16,
    child: Child,
    root: tempfile::TempDir,
}

impl LocalS3 {
    pub const ACCESS_KEY: &str = "lifeboat-ak";
    pub const SECRET_KEY: &str = "lifeboat-sk-0123456789";

    /// Serves a root that `fill` has populated first (rclone's directory cache would hide files
    /// written behind its back later); `fill` creates at least the buckets.
    pub fn start_with(fill: impl FnOnce(&Path)) -> Result<Self> {
        let root = tempfile::Builder::new()
            .prefix("lifeboat-s3-")
            .tempdir()
            .map_err(|e| AgentError::storage("temporary directory", e))?;
        fill(root.path());
        let port = free_port()?;
        let child = Command::new(tools::find("rclone")?)
            .args(["serve", "s3", "--addr"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--auth-key")
            .arg(format!("{},{}", Self::ACCESS_KEY, Self::SECRET_KEY))
            .args(["--config", "/dev/null"])
            .arg(root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| AgentError::config(format!("rclone serve s3: {e}")))?;
        let s3 = Self { port, child, root };
        wait_until("rclone serve s3", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        Ok(s3)
    }

    /// The directory behind the buckets.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for LocalS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
