//! The external tools the agent drives (pg_dump, pg_restore, redis-cli, redis-check-rdb): where
//! they are, which version, and what their failures mean.

use std::path::PathBuf;
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
    let path = find(name)?;
    let out = Command::new(&path)
        .arg("--version")
        .output()
        .map_err(|e| AgentError::config(format!("{}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(ToolInfo {
        name: name.to_owned(),
        version: text.lines().next().unwrap_or_default().trim().to_owned(),
    })
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
