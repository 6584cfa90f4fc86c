//! The external tools the agent drives (pg_dump, pg_restore, redis-cli, redis-check-rdb): where
//! they are, which version, and what their failures mean.

use std::path::{Path, PathBuf};
use std::process::Command;

use lifeboat_api::agent_result::{ErrorClass, ToolInfo};

use crate::error::{AgentError, Result};

/// Where Debian puts the PostgreSQL binaries that are not on PATH.
const PG_BIN_DIRS: [&str; 3] = [
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
];

/// The path of `name`: `$LIFEBOAT_PG_BIN/name` for PostgreSQL tools, else PATH, else Debian's
/// versioned directories.
pub fn find(name: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("LIFEBOAT_PG_BIN") {
        let p = PathBuf::from(dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    for dir in PG_BIN_DIRS {
        let p = PathBuf::from(dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(AgentError::config(format!(
        "{name} not found on PATH (nor in /usr/lib/postgresql/*/bin)"
    )))
}

/// `name --version`, first line, for the audit trail.
pub fn version(name: &str) -> Result<ToolInfo> {
    version_of(name, &find(name)?)
}

/// `path --version`, first line, recorded as tool `name`.
pub fn version_of(name: &str, path: &Path) -> Result<ToolInfo> {
    let out = Command::new(path)
        .arg("--version")
        .output()
        .map_err(|e| AgentError::config(format!("{}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(ToolInfo {
        name: name.to_owned(),
        version: text.lines().next().unwrap_or_default().trim().to_owned(),
    })
}

/// Where each major's PostgreSQL programs are, as `<root>/<major>/bin` (Debian's and the
/// PostgreSQL project's packages both): `$LIFEBOAT_PG_ROOT`, else this.
const PG_ROOT: &str = "/usr/lib/postgresql";

/// The client major for a server of major `server`, among the `installed` ones: the server's
/// own, else the oldest newer one, never an older one. pg_dump refuses a server newer than
/// itself; pg_restore of a newer major sends settings an older server rejects (17's
/// `SET transaction_timeout` fails on 15, images/README.md), so the closest major is the one
/// that both dumps and restores.
pub fn choose_major(installed: &[u32], server: u32) -> Option<u32> {
    installed.iter().copied().filter(|&m| m >= server).min()
}

/// The majors under `root` that have program `name`.
fn installed_majors(root: &Path, name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            e.path().join("bin").join(name).is_file().then_some(major)
        })
        .collect()
}

/// The path of PostgreSQL program `name` for a server of major `server`: `$LIFEBOAT_PG_BIN/name`
/// when that is set (one client, chosen by whoever runs the agent), else the major
/// [`choose_major`] picks among those installed (the agent image carries several), else PATH.
/// A server newer than every installed client is refused here, before the program runs.
pub fn find_pg(name: &str, server: u32) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("LIFEBOAT_PG_BIN") {
        let p = PathBuf::from(dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    let root =
        std::env::var_os("LIFEBOAT_PG_ROOT").map_or_else(|| PathBuf::from(PG_ROOT), PathBuf::from);
    let mut installed = installed_majors(&root, name);
    if installed.is_empty() {
        return find(name);
    }
    match choose_major(&installed, server) {
        Some(major) => Ok(root.join(major.to_string()).join("bin").join(name)),
        None => {
            installed.sort_unstable();
            let have: Vec<String> = installed.iter().map(u32::to_string).collect();
            Err(AgentError::config(format!(
                "the server is PostgreSQL {server}, newer than every {name} here ({}): run an agent image with PostgreSQL {server}'s client",
                have.join(", ")
            )))
        }
    }
}

/// The failure class of a database tool from what it printed on stderr.
pub fn classify(stderr: &str) -> ErrorClass {
    let s = stderr.to_ascii_lowercase();
    if s.contains("password authentication failed")
        || s.contains("no password supplied")
        || s.contains("noauth")
        || s.contains("wrongpass")
        || s.contains("invalid password")
        || s.contains("authentication required")
    {
        ErrorClass::Auth
    } else if s.contains("could not connect")
        || s.contains("connection refused")
        || s.contains("could not translate host name")
        || s.contains("timeout expired")
        || s.contains("no route to host")
        // The source went away mid-run (a restart, a failover): retry later, nothing is wrong
        // with the backup itself. Found by tests/source_faults.rs, which restarts PostgreSQL
        // while pg_dump streams.
        || s.contains("terminating connection due to administrator command")
        || s.contains("server closed the connection unexpectedly")
        || s.contains("connection reset by peer")
    {
        ErrorClass::SourceUnreachable
    } else if s.contains("does not exist") {
        ErrorClass::NotFound
    } else if s.contains("no space left on device") || s.contains("read-only file system") {
        ErrorClass::Storage
    } else {
        ErrorClass::ToolFailed
    }
}

/// The last lines of a tool's stderr, for an error message.
pub fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_server_s_major_or_the_closest_newer_one() {
        assert_eq!(choose_major(&[15, 16, 17], 16), Some(16));
        assert_eq!(choose_major(&[17, 15], 14), Some(15));
        assert_eq!(choose_major(&[15, 17], 16), Some(17));
        assert_eq!(choose_major(&[15, 16], 17), None);
        assert_eq!(choose_major(&[], 15), None);
    }

    #[test]
    fn tool_errors_are_classified() {
        let c = |s| classify(s);
        assert_eq!(
            c(
                "pg_dump: error: connection to server at \"db\" failed: FATAL:  password authentication failed for user \"x\""
            ),
            ErrorClass::Auth
        );
        assert_eq!(
            c(
                "pg_dump: error: connection to server at \"127.0.0.1\", port 1 failed: Connection refused"
            ),
            ErrorClass::SourceUnreachable
        );
        assert_eq!(
            c(
                "pg_dump: error: connection to server failed: FATAL:  database \"nope\" does not exist"
            ),
            ErrorClass::NotFound
        );
        assert_eq!(
            c("AUTH failed: WRONGPASS invalid username-password pair"),
            ErrorClass::Auth
        );
        assert_eq!(
            c("Could not connect to Redis at 127.0.0.1:1: Connection refused"),
            ErrorClass::SourceUnreachable
        );
        assert_eq!(
            c(
                "pg_dump: detail: Error message from server: FATAL:  terminating connection due to administrator command"
            ),
            ErrorClass::SourceUnreachable
        );
        assert_eq!(c("something else"), ErrorClass::ToolFailed);
    }
}
