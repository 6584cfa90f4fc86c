//! Identifiers a namespace user writes (database, role, host, dump pattern, Redis user, S3
//! prefix, namespace names) are data, never syntax: each kind has one rule, checked twice with
//! the same regular expression. At admission as a CEL rule (RE2 `matches`, whose syntax the
//! `regex` crate shares), and again in the agent when it reads its job document, so a document
//! that skipped admission fails before any tool runs or connection opens.
//!
//! The rules are narrower than what PostgreSQL or Redis accept: a name that needs quoting,
//! starts with `-` (an option to a tool), holds `=` or a space (a libpq connection string), `/`
//! (a socket directory to libpq, a path in the backup layout) or a control character is refused
//! with a message saying what to write instead.

use std::sync::LazyLock;

use regex::Regex;

use crate::agent_job::{
    AgentCatalogJob, AgentEvidenceJob, AgentJob, AgentRestoreJob, AgentValidateJob,
};
use crate::backup_policy::{Asset, PgDumpOptions};
use crate::common::{
    Destination, PostgresConnection, RedisConnection, RestoreTarget, S3Location, ValidationCheck,
};

// One macro per pattern, so that the literal is written once and reaches both the CEL rule
// (through `concat!`) and the Rust check. Patterns use `[.]`, never `\.`: a backslash is an
// escape in a CEL string literal.
macro_rules! database_pattern {
    () => {
        "^[A-Za-z0-9_][A-Za-z0-9_$-]{0,62}$"
    };
}
macro_rules! role_pattern {
    () => {
        "^[A-Za-z0-9_][A-Za-z0-9_$.@-]{0,62}$"
    };
}
macro_rules! dump_pattern {
    () => {
        "^[A-Za-z0-9_*?][A-Za-z0-9_$*?.-]{0,254}$"
    };
}
macro_rules! dns_pattern {
    () => {
        "^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?([.][A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*[.]?$"
    };
}
macro_rules! redis_user_pattern {
    () => {
        "^[A-Za-z0-9_][A-Za-z0-9_$.@-]{0,127}$"
    };
}
macro_rules! prefix_pattern {
    () => {
        "^([A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?(/[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?)*/?)?$"
    };
}
macro_rules! namespace_pattern {
    () => {
        "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
    };
}

/// A PostgreSQL database name.
pub const DATABASE_RULE: &str = concat!("self.matches('", database_pattern!(), "')");
/// Every database name of a list.
pub const DATABASES_RULE: &str = concat!("self.all(d, d.matches('", database_pattern!(), "'))");
pub const DATABASE_MESSAGE: &str = "database names are 1-63 ASCII letters, digits, '_', '$' or '-', not starting with '-' (no spaces, '=', '/', quotes: a name is never a connection string or an option)";
/// A PostgreSQL role.
pub const ROLE_RULE: &str = concat!("self.matches('", role_pattern!(), "')");
pub const ROLE_MESSAGE: &str =
    "user must be 1-63 ASCII letters, digits, '_', '$', '.', '@' or '-', not starting with '-'";
/// Every pattern of a `pg_dump` schema or table list.
pub const DUMP_PATTERNS_RULE: &str = concat!("self.all(p, p.matches('", dump_pattern!(), "'))");
pub const DUMP_PATTERNS_MESSAGE: &str = "schema and table patterns are ASCII letters, digits, '_', '$', '.', '-' and the wildcards '*' and '?', not starting with '-' or '.' (names that need quotes are not supported)";
/// A host: an IP address literal (IPv6 without brackets) or a DNS name.
pub const HOST_RULE: &str = concat!("isIP(self) || self.matches('", dns_pattern!(), "')");
pub const HOST_MESSAGE: &str = "host must be a DNS name (e.g. db.prod.svc) or an IP address (e.g. 10.0.0.5 or fd00::5, without brackets); not a path, a list or a connection string";
/// A Redis ACL user.
pub const REDIS_USER_RULE: &str = concat!("self.matches('", redis_user_pattern!(), "')");
pub const REDIS_USER_MESSAGE: &str = "username must be 1-128 ASCII letters, digits, '_', '$', '.', '@' or '-', not starting with '-'";
/// An S3 key prefix.
pub const PREFIX_RULE: &str = concat!(
    "size(self) <= 512 && self.matches('",
    prefix_pattern!(),
    "')"
);
pub const PREFIX_MESSAGE: &str = "prefix must be relative segments of ASCII letters, digits, '_', '.' or '-' separated by single '/' (e.g. team-a/backups), each starting and ending with a letter, digit or '_': no leading '/', no '.' or '..' segments, at most 512 characters";
/// Every key and value of a namespace mapping.
pub const NAMESPACE_MAPPING_RULE: &str = concat!(
    "self.all(k, k.matches('",
    namespace_pattern!(),
    "') && self[k].matches('",
    namespace_pattern!(),
    "'))"
);
/// Every namespace name of a list.
pub const NAMESPACES_RULE: &str = concat!("self.all(n, n.matches('", namespace_pattern!(), "'))");
pub const NAMESPACE_MESSAGE: &str = "namespace names are DNS labels: 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit";

/// The kinds of identifier, each with its rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ident {
    Database,
    Role,
    DumpPattern,
    Host,
    RedisUser,
    S3Prefix,
    Namespace,
}

/// Why an identifier was refused: the kind, the value (quoted, cut to 80 characters) and what
/// to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {value}: {message}")]
pub struct IdentError {
    pub kind: &'static str,
    pub value: String,
    pub message: &'static str,
}

type Compiled = LazyLock<Result<Regex, regex::Error>>;

static DATABASE: Compiled = LazyLock::new(|| Regex::new(database_pattern!()));
static ROLE: Compiled = LazyLock::new(|| Regex::new(role_pattern!()));
static DUMP: Compiled = LazyLock::new(|| Regex::new(dump_pattern!()));
static DNS: Compiled = LazyLock::new(|| Regex::new(dns_pattern!()));
static REDIS_USER: Compiled = LazyLock::new(|| Regex::new(redis_user_pattern!()));
static PREFIX: Compiled = LazyLock::new(|| Regex::new(prefix_pattern!()));
static NAMESPACE: Compiled = LazyLock::new(|| Regex::new(namespace_pattern!()));

impl Ident {
    fn name(self) -> &'static str {
        match self {
            Ident::Database => "database",
            Ident::Role => "user",
            Ident::DumpPattern => "dump pattern",
            Ident::Host => "host",
            Ident::RedisUser => "Redis user",
            Ident::S3Prefix => "S3 prefix",
            Ident::Namespace => "namespace",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Ident::Database => DATABASE_MESSAGE,
            Ident::Role => ROLE_MESSAGE,
            Ident::DumpPattern => DUMP_PATTERNS_MESSAGE,
            Ident::Host => HOST_MESSAGE,
            Ident::RedisUser => REDIS_USER_MESSAGE,
            Ident::S3Prefix => PREFIX_MESSAGE,
            Ident::Namespace => NAMESPACE_MESSAGE,
        }
    }

    fn regex(self) -> &'static Compiled {
        match self {
            Ident::Database => &DATABASE,
            Ident::Role => &ROLE,
            Ident::DumpPattern => &DUMP,
            Ident::Host => &DNS,
            Ident::RedisUser => &REDIS_USER,
            Ident::S3Prefix => &PREFIX,
            Ident::Namespace => &NAMESPACE,
        }
    }

    /// Whether `value` is a valid identifier of this kind (the CEL rule's verdict).
    pub fn is_valid(self, value: &str) -> bool {
        let matches = self.regex().as_ref().is_ok_and(|r| r.is_match(value));
        match self {
            Ident::Host => matches || value.parse::<std::net::IpAddr>().is_ok(),
            Ident::S3Prefix => matches && value.len() <= 512,
            _ => matches,
        }
    }

    /// `value`, or why it is refused.
    pub fn check(self, value: &str) -> Result<(), IdentError> {
        if self.is_valid(value) {
            return Ok(());
        }
        let mut shown: String = value.chars().take(80).collect();
        if shown.len() < value.len() {
            shown.push('…');
        }
        Err(IdentError {
            kind: self.name(),
            value: format!("{shown:?}"),
            message: self.message(),
        })
    }
}

/// Every identifier a document carries, checked before the agent acts on it.
pub trait Identifiers {
    fn check_identifiers(&self) -> Result<(), IdentError>;
}

impl Identifiers for PostgresConnection {
    fn check_identifiers(&self) -> Result<(), IdentError> {
        Ident::Host.check(&self.host)?;
        Ident::Role.check(&self.user)
    }
}

impl Identifiers for RedisConnection {
    fn check_identifiers(&self) -> Result<(), IdentError> {
        Ident::Host.check(&self.host)?;
        self.username
            .iter()
            .try_for_each(|u| Ident::RedisUser.check(u))
    }
}

impl Identifiers for S3Location {
    fn check_identifiers(&self) -> Result<(), IdentError> {
        Ident::S3Prefix.check(&self.prefix)
    }
}

impl Identifiers for Destination {
    fn check_identifiers(&self) -> Result<(), IdentError> {
        self.s3.iter().try_for_each(Identifiers::check_identifiers)
    }
}

impl Identifiers for PgDumpOptions {
    fn check_identifiers(&self) -> Result<(), IdentError> {
        self.schemas
            .iter()
            .chain(&self.exclude_schemas)
            .chain(&self.exclude_tables)
            .try_for_each(|p| Ident::DumpPattern.check(p))
    }
}

impl Identifiers for Asset {
    fn check_identifiers(&self) -> Result<(), IdentError> {
        self.source.settings().check_identifiers()
    }
}

impl Identifiers for RestoreTarget {
    fn check_identifiers(&self) -> Result<(), IdentError> {
        self.to.settings().check_identifiers()
    }
}

impl Identifiers for ValidationCheck {
    fn check_identifiers(&self) -> Result<(), IdentError> {
        self.sql
            .iter()
            .filter_map(|s| s.database.as_deref())
            .try_for_each(|d| Ident::Database.check(d))
    }
}

impl Identifiers for AgentJob {
    fn check_identifiers(&self) -> Result<(), IdentError> {
        self.asset.check_identifiers()?;
        self.destination.check_identifiers()?;
        self.copies
            .iter()
            .try_for_each(|c| c.s3.check_identifiers())
    }
}

impl Identifiers for AgentRestoreJob {
    fn check_identifiers(&self) -> Result<(), IdentError> {
        self.asset.check_identifiers()?;
        self.target
            .iter()
            .try_for_each(Identifiers::check_identifiers)?;
        self.location.check_identifiers()
    }
}

impl Identifiers for AgentCatalogJob {
    fn check_identifiers(&self) -> Result<(), IdentError> {
        self.location.check_identifiers()
    }
}

impl Identifiers for AgentValidateJob {
    fn check_identifiers(&self) -> Result<(), IdentError> {
        self.checks
            .iter()
            .try_for_each(Identifiers::check_identifiers)?;
        self.assets
            .iter()
            .try_for_each(Identifiers::check_identifiers)
    }
}

/// The webhook URL is in a Secret the agent reads; only the namespace is checked here.
impl Identifiers for crate::agent_job::AgentNotifyJob {
    fn check_identifiers(&self) -> Result<(), IdentError> {
        Ident::Namespace.check(&self.namespace)
    }
}

impl Identifiers for AgentEvidenceJob {
    fn check_identifiers(&self) -> Result<(), IdentError> {
        self.location.check_identifiers()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names that must never reach a tool or a connection as anything but data.
    const HOSTILE: [&str; 13] = [
        "host=other dbname=payroll",
        "postgresql://x/y",
        "-c",
        "--help",
        "a/b",
        "..",
        "a\nb",
        "a'b",
        "a\"b",
        "a=b",
        "",
        "/var/run/postgresql",
        "a b",
    ];

    #[test]
    fn every_pattern_compiles() {
        for kind in [
            Ident::Database,
            Ident::Role,
            Ident::DumpPattern,
            Ident::Host,
            Ident::RedisUser,
            Ident::S3Prefix,
            Ident::Namespace,
        ] {
            assert!(kind.regex().as_ref().is_ok(), "{kind:?}");
        }
    }

    #[test]
    fn hostile_names_are_refused_for_every_kind() {
        for kind in [
            Ident::Database,
            Ident::Role,
            Ident::DumpPattern,
            Ident::Host,
            Ident::RedisUser,
            Ident::Namespace,
        ] {
            for name in HOSTILE {
                assert!(kind.check(name).is_err(), "{kind:?} accepted {name:?}");
            }
            assert!(kind.check(&"a".repeat(600)).is_err(), "{kind:?}: too long");
        }
        // A prefix may be empty (the bucket's root) and has '/' between segments.
        for name in HOSTILE.iter().filter(|n| !["", "a/b"].contains(n)) {
            assert!(Ident::S3Prefix.check(name).is_err(), "prefix {name:?}");
        }
        for bad in ["a//b", "a/./b", "a/../b", "/a", "a/..", &"a".repeat(600)] {
            assert!(Ident::S3Prefix.check(bad).is_err(), "prefix {bad:?}");
        }
    }

    #[test]
    fn ordinary_names_pass() {
        for (kind, good) in [
            (Ident::Database, "shop"),
            (Ident::Database, "shop_2024-eu"),
            (Ident::Role, "app.user@server"),
            (Ident::DumpPattern, "public.orders_*"),
            (Ident::Host, "db.prod.svc.cluster.local"),
            (Ident::Host, "10.0.0.5"),
            (Ident::Host, "::1"),
            (Ident::Host, "fd00::5"),
            (Ident::RedisUser, "backup"),
            (Ident::S3Prefix, ""),
            (Ident::S3Prefix, "team-a/backups/"),
            (Ident::S3Prefix, "uploads/"),
            (Ident::Namespace, "prod-drill"),
        ] {
            assert_eq!(kind.check(good), Ok(()), "{kind:?} {good:?}");
        }
    }

    #[test]
    fn the_refusal_says_what_to_write() {
        let e = Ident::Database
            .check("host=other dbname=payroll")
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("database \"host=other dbname=payroll\": ")
        );
        assert!(e.to_string().contains("never a connection string"));
    }
}
