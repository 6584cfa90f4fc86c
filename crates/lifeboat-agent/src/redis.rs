//! Redis: `redis-cli --rdb` takes a point-in-time RDB over the replication protocol; the RDB is
//! checked with `redis-check-rdb` before it is committed (corrupt RDBs went unnoticed for months
//! in the field), then compressed and hashed. A restore places `dump.rdb` in the data directory
//! for Redis to load at its next start. The password goes through `REDISCLI_AUTH`, never `-a`.

use std::path::Path;
use std::process::{Command, Stdio};

use jiff::Timestamp;

use crate::error::{AgentError, Result};
use crate::stream::{self, Stored};
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
            tools::tail(&text)
        )))
    }
}

/// Places the RDB at `artifact` (verified by the caller) as `<data_dir>/<file_name>`, atomically.
pub fn restore(artifact: &Path, compressed: bool, data_dir: &Path, file_name: &str) -> Result<()> {
    std::fs::create_dir_all(data_dir).map_err(|e| AgentError::storage(data_dir.display(), e))?;
    let tmp = data_dir.join(format!(".{file_name}.lifeboat-tmp"));
    let file = std::fs::File::create(&tmp).map_err(|e| AgentError::storage(tmp.display(), e))?;
    stream::unpack(artifact, compressed, std::io::BufWriter::new(&file))?;
    file.sync_all()
        .map_err(|e| AgentError::storage(tmp.display(), e))?;
    if let Err(e) = check_rdb(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let dest = data_dir.join(file_name);
    std::fs::rename(&tmp, &dest).map_err(|e| AgentError::storage(dest.display(), e))
}
