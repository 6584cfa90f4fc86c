//! PostgreSQL: `pg_dump` in the custom archive format, streamed through zstd and sha256 to the
//! destination (never staged whole on disk); restored with `pg_restore` in parallel after the
//! checksum is verified. The password reaches the tools through a private PGPASSFILE, never argv.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use jiff::Timestamp;
use lifeboat_api::agent_result::ErrorClass;

use crate::error::{AgentError, Result};
use crate::stream::Stored;
use crate::tools;

/// A connection, with the password already read from its file.
#[derive(Clone, Debug)]
pub struct Conn {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub sslmode: String,
}

impl Conn {
    /// Environment for libpq tools: host, port, user, TLS mode and a PGPASSFILE written to a
    /// private temporary directory (kept alive by the returned guard).
    fn env(&self, cmd: &mut Command) -> Result<Option<tempfile::TempDir>> {
        cmd.env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGSSLMODE", &self.sslmode)
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGPASSWORD");
        let Some(password) = &self.password else {
            cmd.env("PGPASSFILE", "/dev/null");
            return Ok(None);
        };
        let dir = tempfile::tempdir().map_err(|e| AgentError::storage("temporary directory", e))?;
        let path = dir.path().join("pgpass");
        let escape = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
        let line = format!("*:*:*:{}:{}\n", escape(&self.user), escape(password));
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| AgentError::storage(path.display(), e))?;
        f.write_all(line.as_bytes())
            .map_err(|e| AgentError::storage(path.display(), e))?;
        cmd.env("PGPASSFILE", &path);
        Ok(Some(dir))
    }
}

/// Dumps `database` into `out`. Returns what was stored and the snapshot time (pg_dump takes
/// one consistent snapshot when it starts).
pub fn backup(
    conn: &Conn,
    database: &str,
    extra: &[String],
    sink: &mut dyn FnMut(&mut dyn Read) -> Result<Stored>,
) -> Result<(Stored, Timestamp)> {
    let mut cmd = Command::new(tools::find("pg_dump")?);
    let _pass = conn.env(&mut cmd)?;
    cmd.args([
        "--format=custom",
        "--compress=0",
        "--no-password",
        "--dbname",
    ])
    .arg(database)
    .args(extra)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let snapshot = Timestamp::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| AgentError::config(format!("pg_dump: {e}")))?;
    let stderr = child.stderr.take();
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| AgentError::config("pg_dump: no stdout"))?;
    let mut magic = MagicCheck::new(stdout, b"PGDMP");
    let stored = sink(&mut magic);
    let matched = magic.matched();
    // Close our end of the pipe before waiting: when the store failed (a full destination),
    // pg_dump is still writing and would block on the full pipe forever.
    drop(magic);
    if stored.is_err() {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| AgentError::config(format!("pg_dump: {e}")))?;
    let stderr = errors.join().unwrap_or_default();
    if !status.success() {
        let class = tools::classify(&stderr);
        // A failed store makes pg_dump fail too (killed, or a broken pipe): then the store's
        // error is the cause, unless pg_dump names one of its own (auth, a missing database).
        if let Err(e) = stored
            && class == ErrorClass::ToolFailed
        {
            return Err(e);
        }
        return Err(AgentError::new(
            class,
            format!("pg_dump of {database} failed: {}", tools::tail(&stderr)),
        ));
    }
    let stored = stored?;
    if !matched {
        return Err(AgentError::integrity(format!(
            "pg_dump of {database} produced no custom-format archive"
        )));
    }
    Ok((stored, snapshot))
}

/// Restores the archive at `artifact` (verified by the caller) into `database`.
/// Restores the custom-format dump at `dump` (decompressed and verified by the caller) into
/// `database`, in parallel.
pub fn restore(
    conn: &Conn,
    dump: &Path,
    database: &str,
    create: bool,
    jobs: u8,
    clean: bool,
) -> Result<()> {
    if create {
        create_database(conn, database)?;
    }
    let mut cmd = Command::new(tools::find("pg_restore")?);
    let _pass = conn.env(&mut cmd)?;
    cmd.args(["--no-password", "--no-owner", "--exit-on-error"])
        .arg(format!("--jobs={}", jobs.max(1)))
        .arg("--dbname")
        .arg(database);
    if clean {
        cmd.args(["--clean", "--if-exists"]);
    }
    let out = cmd
        .arg(dump)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| AgentError::config(format!("pg_restore: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(AgentError::new(
            tools::classify(&stderr),
            format!(
                "pg_restore into {database} failed: {}",
                tools::tail(&stderr)
            ),
        ));
    }
    Ok(())
}

/// `CREATE DATABASE` unless it exists.
fn create_database(conn: &Conn, database: &str) -> Result<()> {
    let mut cmd = Command::new(tools::find("createdb")?);
    let _pass = conn.env(&mut cmd)?;
    let out = cmd
        .args(["--no-password", "--maintenance-db=postgres"])
        .arg(database)
        .output()
        .map_err(|e| AgentError::config(format!("createdb: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || stderr.contains("already exists") {
        Ok(())
    } else {
        Err(AgentError::new(
            tools::classify(&stderr),
            format!("creating database {database}: {}", tools::tail(&stderr)),
        ))
    }
}

/// Runs `sql` in `database` and returns the first column of the first row (validation checks).
pub fn query(conn: &Conn, database: &str, sql: &str) -> Result<String> {
    let mut cmd = Command::new(tools::find("psql")?);
    let _pass = conn.env(&mut cmd)?;
    let out = cmd
        .args([
            "--no-password",
            "--no-psqlrc",
            "--tuples-only",
            "--no-align",
            "--set=ON_ERROR_STOP=1",
            "--dbname",
        ])
        .arg(database)
        .arg("--command")
        .arg(sql)
        .output()
        .map_err(|e| AgentError::config(format!("psql: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(AgentError::new(
            tools::classify(&stderr),
            format!("query failed: {}", tools::tail(&stderr)),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned())
}

/// Passes bytes through and remembers whether they started with `magic`.
struct MagicCheck<R> {
    inner: R,
    magic: &'static [u8],
    seen: Vec<u8>,
}

impl<R: Read> MagicCheck<R> {
    fn new(inner: R, magic: &'static [u8]) -> Self {
        Self {
            inner,
            magic,
            seen: Vec::new(),
        }
    }

    fn matched(&self) -> bool {
        self.seen.starts_with(self.magic)
    }
}

impl<R: Read> Read for MagicCheck<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.seen.len() < self.magic.len() {
            let take = (self.magic.len() - self.seen.len()).min(n);
            self.seen.extend_from_slice(&buf[..take]);
        }
        Ok(n)
    }
}
