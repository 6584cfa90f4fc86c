//! Redis: `redis-cli --rdb` takes a point-in-time RDB over the replication protocol; the RDB is
//! checked with `redis-check-rdb` before it is committed (corrupt RDBs went unnoticed for months
//! in the field), then compressed and hashed. A restore places `dump.rdb` in the data directory
//! for Redis to load at its next start. The password goes through `REDISCLI_AUTH`, never `-a`.

use std::path::Path;
use std::process::{Command, Stdio};

use jiff::Timestamp;
use lifeboat_api::agent_result::ErrorClass;

use crate::error::{AgentError, Result};
use crate::stream::{self, Decoding, Stored};
use crate::tools;

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

    /// Runs one command and returns its output (validation checks).
    pub fn run(&self, db: u8, args: &[&str]) -> Result<String> {
        let out = self
            .command()?
            .arg("-n")
            .arg(db.to_string())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| AgentError::config(format!("redis-cli: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success()
            || stdout.starts_with("NOAUTH")
            || stdout.starts_with("WRONGPASS")
            || stdout.starts_with("ERR")
        {
            let text = format!("{stdout} {stderr}");
            return Err(AgentError::new(
                tools::classify(&text),
                format!("redis-cli {}: {}", args.join(" "), tools::tail(&text)),
            ));
        }
        Ok(stdout)
    }
}

/// Takes an RDB snapshot and stores it in `out`.
pub fn backup(
    conn: &Conn,
    sink: &mut dyn FnMut(&mut dyn std::io::Read) -> Result<Stored>,
) -> Result<(Stored, Timestamp)> {
    let scratch = tempfile::tempdir().map_err(|e| AgentError::storage("temporary directory", e))?;
    let rdb = scratch.path().join("dump.rdb");
    let snapshot = Timestamp::now();
    let result = conn
        .command()?
        .arg("--rdb")
        .arg(&rdb)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| AgentError::config(format!("redis-cli: {e}")))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    if !result.status.success() || !rdb.is_file() {
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

/// `redis-check-rdb` must accept the file.
pub fn check_rdb(rdb: &Path) -> Result<()> {
    let out = Command::new(tools::find("redis-check-rdb")?)
        .arg(rdb)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| AgentError::config(format!("redis-check-rdb: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&out.stdout);
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
        check_rdb(&tmp)
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
    #[test]
    fn the_rdb_error_is_the_reason_not_the_key_counts() {
        let report = "[offset 0] Checking RDB file x.rdb\n--- RDB ERROR DETECTED ---\n[offset 9] Can't handle RDB format version 99\n[additional info] While doing: start\n[info] 0 keys read\n[info] 0 expires\n";
        assert_eq!(
            super::rdb_error(report),
            "[offset 9] Can't handle RDB format version 99 | [additional info] While doing: start"
        );
    }
}
